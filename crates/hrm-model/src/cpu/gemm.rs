//! Matrix products of the CPU kernels, selected at build time: the `gemm` crate (pure Rust,
//! AVX-512 kernels with its `x86-v4` feature; the default) or, with the `blas` feature, a system
//! CBLAS (`cblas_sgemm` from OpenBLAS, MKL's `mkl_rt`, ...; see build.rs for how it is found).
//!
//! Row-major convention throughout: a matrix is (pointer, row stride, column stride) in elements.
//! Large products run multi-threaded (the `gemm` crate on rayon's pool, a BLAS on its own
//! threads); the small per-head products of attention run single-threaded inside rayon tasks.

use std::mem::MaybeUninit;

use gemm::Parallelism;

/// A strided matrix view: element (i, j) is at `ptr + i*rs + j*cs`.
#[derive(Clone, Copy, Debug)]
pub struct Mat<T> {
    /// First element.
    pub ptr: *const T,
    /// Row stride.
    pub rs: isize,
    /// Column stride.
    pub cs: isize,
}

impl<T> Mat<T> {
    /// A row-major contiguous matrix with `cols` columns.
    pub fn rows(data: &[T], cols: usize) -> Self {
        Mat {
            ptr: data.as_ptr(),
            rs: cols as isize,
            cs: 1,
        }
    }

    /// The transpose (a view: strides swapped).
    pub fn t(self) -> Self {
        Mat {
            ptr: self.ptr,
            rs: self.cs,
            cs: self.rs,
        }
    }
}

/// Products below this many multiply-adds run on one thread.
const PARALLEL_MIN_FMAS: usize = 1 << 20;

fn parallelism(m: usize, n: usize, k: usize, threads: usize) -> Parallelism {
    if threads > 1 && m * n * k >= PARALLEL_MIN_FMAS {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    }
}

/// Threads for the large products: those of rayon's pool (`RAYON_NUM_THREADS`, `--threads`, or
/// all cores). Asked of the pool, which is free, not of candle's helper, which reads the
/// environment (and without `RAYON_NUM_THREADS`, /proc/cpuinfo) at every call.
pub fn threads() -> usize {
    rayon::current_num_threads()
}

/// A pointer that rayon tasks may share; each task writes a disjoint part of the buffer.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr<T>(pub(crate) *mut T);
// SAFETY: only used for writes to disjoint regions from parallel tasks (see the callers).
unsafe impl<T> Send for SendPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for SendPtr<T> {}

/// Split `blocks` column blocks of a product of `fmas` multiply-adds over the threads:
/// `run(first, end)` once per thread with its contiguous range, in parallel unless the product
/// is too small to be worth it (the threshold of the `gemm` crate calls here).
pub(crate) fn split_blocks(blocks: usize, fmas: usize, run: impl Fn(usize, usize) + Sync) {
    let t = threads().clamp(1, blocks.max(1));
    let range = |i: usize| (blocks * i / t, blocks * (i + 1) / t);
    if t == 1 || fmas < PARALLEL_MIN_FMAS {
        (0..t).for_each(|i| {
            let (a, b) = range(i);
            run(a, b)
        });
    } else {
        use rayon::prelude::*;
        (0..t).into_par_iter().for_each(|i| {
            let (a, b) = range(i);
            run(a, b)
        });
    }
}

/// `dst[m x n] (+)= a[m x k] · b[k x n]` with the `gemm` crate, `threads` = 1 for no parallelism.
///
/// # Safety
/// Every pointer and stride must address valid memory for the given shapes; `dst` must not
/// overlap `a` or `b`, and must be initialised when `accumulate`.
pub unsafe fn gemm_generic<T: Copy + 'static + num_traits::Zero + num_traits::One>(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut T,
    dst_rs: isize,
    dst_cs: isize,
    accumulate: bool,
    a: Mat<T>,
    b: Mat<T>,
    threads: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_cs,
            dst_rs,
            accumulate,
            a.ptr,
            a.cs,
            a.rs,
            b.ptr,
            b.cs,
            b.rs,
            T::one(),
            T::one(),
            false,
            false,
            false,
            parallelism(m, n, k, threads),
        )
    }
}

#[cfg(feature = "blas")]
mod cblas {
    pub const ROW_MAJOR: i32 = 101;
    pub const NO_TRANS: i32 = 111;
    pub const TRANS: i32 = 112;
    extern "C" {
        #[allow(clippy::too_many_arguments)]
        pub fn cblas_sgemm(
            order: i32,
            transa: i32,
            transb: i32,
            m: i32,
            n: i32,
            k: i32,
            alpha: f32,
            a: *const f32,
            lda: i32,
            b: *const f32,
            ldb: i32,
            beta: f32,
            c: *mut f32,
            ldc: i32,
        );
    }
}

/// How a contiguous row-major operand of a large product is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// As stored.
    N,
    /// Transposed.
    T,
}

/// `c[m x n] = op(a) · op(b)` for contiguous row-major f32 operands (`a` is `[m, k]` or, with
/// `Op::T`, `[k, m]`; likewise `b` is `[k, n]` or `[n, k]`), on all threads. Returns `c`.
pub fn sgemm(m: usize, n: usize, k: usize, a: &[f32], ta: Op, b: &[f32], tb: Op) -> Vec<f32> {
    let mut c: Vec<MaybeUninit<f32>> = Vec::with_capacity(m * n);
    // SAFETY: MaybeUninit needs no initialisation; sgemm_raw writes every element.
    unsafe { c.set_len(m * n) };
    // SAFETY: c holds m*n slots.
    unsafe { sgemm_raw(m, n, k, a, ta, b, tb, c.as_mut_ptr() as *mut f32) };
    // SAFETY: every element was written; MaybeUninit<f32> and f32 have the same layout.
    let mut c = std::mem::ManuallyDrop::new(c);
    unsafe { Vec::from_raw_parts(c.as_mut_ptr() as *mut f32, c.len(), c.capacity()) }
}

/// [`sgemm`] into an existing buffer of `m * n` elements (overwritten).
#[allow(clippy::too_many_arguments)]
pub fn sgemm_into(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    ta: Op,
    b: &[f32],
    tb: Op,
    c: &mut [f32],
) {
    assert_eq!(
        c.len(),
        m * n,
        "sgemm: c has {} elements, not {m}x{n}",
        c.len()
    );
    // SAFETY: c holds m*n elements.
    unsafe { sgemm_raw(m, n, k, a, ta, b, tb, c.as_mut_ptr()) }
}

/// [`sgemm`] into `cp`.
///
/// # Safety
/// `cp` must point to `m * n` writable f32 slots (they need not be initialised).
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn sgemm_raw(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    ta: Op,
    b: &[f32],
    tb: Op,
    cp: *mut f32,
) {
    assert_eq!(
        a.len(),
        m * k,
        "sgemm: a has {} elements, not {m}x{k}",
        a.len()
    );
    assert_eq!(
        b.len(),
        k * n,
        "sgemm: b has {} elements, not {k}x{n}",
        b.len()
    );
    #[cfg(feature = "blas")]
    {
        use cblas::*;
        let t = |o: Op| if o == Op::N { NO_TRANS } else { TRANS };
        let lda = if ta == Op::N { k } else { m };
        let ldb = if tb == Op::N { n } else { k };
        if m > 0 && n > 0 {
            // SAFETY: the shapes were checked above; beta = 0 means c is only written.
            unsafe {
                cblas_sgemm(
                    ROW_MAJOR,
                    t(ta),
                    t(tb),
                    m as i32,
                    n as i32,
                    k as i32,
                    1.0,
                    a.as_ptr(),
                    lda as i32,
                    b.as_ptr(),
                    ldb as i32,
                    0.0,
                    cp,
                    n as i32,
                )
            };
        }
    }
    #[cfg(not(feature = "blas"))]
    {
        let am = if ta == Op::N {
            Mat::rows(a, k)
        } else {
            Mat::rows(a, m).t()
        };
        let bm = if tb == Op::N {
            Mat::rows(b, n)
        } else {
            Mat::rows(b, k).t()
        };
        if k == 0 {
            // the gemm crate writes nothing for an empty sum
            for i in 0..m * n {
                // SAFETY: cp has m*n slots.
                unsafe { cp.add(i).write(0.0) };
            }
        } else {
            // SAFETY: shapes checked above; c is written, not read (accumulate = false).
            unsafe { gemm_generic(m, n, k, cp, n as isize, 1, false, am, bm, threads()) };
        }
    }
}

/// [`sgemm`] for f64 (the `gemm` crate; used by the f64 finite-difference tests).
pub fn dgemm(m: usize, n: usize, k: usize, a: &[f64], ta: Op, b: &[f64], tb: Op) -> Vec<f64> {
    assert_eq!(a.len(), m * k);
    assert_eq!(b.len(), k * n);
    let mut c = vec![0f64; m * n];
    let am = if ta == Op::N {
        Mat::rows(a, k)
    } else {
        Mat::rows(a, m).t()
    };
    let bm = if tb == Op::N {
        Mat::rows(b, n)
    } else {
        Mat::rows(b, k).t()
    };
    if k > 0 {
        // SAFETY: shapes checked above.
        unsafe {
            gemm_generic(
                m,
                n,
                k,
                c.as_mut_ptr(),
                n as isize,
                1,
                false,
                am,
                bm,
                threads(),
            )
        };
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, n: usize, k: usize, a: &[f32], ta: Op, b: &[f32], tb: Op) -> Vec<f64> {
        let mut c = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                for l in 0..k {
                    let x = if ta == Op::N {
                        a[i * k + l]
                    } else {
                        a[l * m + i]
                    };
                    let y = if tb == Op::N {
                        b[l * n + j]
                    } else {
                        b[j * k + l]
                    };
                    c[i * n + j] += x as f64 * y as f64;
                }
            }
        }
        c
    }

    #[test]
    fn sgemm_matches_naive_in_every_layout() {
        let (m, n, k) = (37, 29, 53);
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 7.0)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 5.0)
            .collect();
        for ta in [Op::N, Op::T] {
            for tb in [Op::N, Op::T] {
                let c = sgemm(m, n, k, &a, ta, &b, tb);
                let r = naive(m, n, k, &a, ta, &b, tb);
                for (x, y) in c.iter().zip(&r) {
                    assert!((*x as f64 - y).abs() < 1e-4, "{ta:?}{tb:?}: {x} vs {y}");
                }
            }
        }
        assert_eq!(sgemm(2, 3, 0, &[], Op::N, &[], Op::N), vec![0.0; 6]);
    }
}

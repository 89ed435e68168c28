//! Participation ratio and PCA of hidden states: PR = (sum l_i)^2 / sum l_i^2 of the covariance
//! eigenvalues, computed exactly from the trace and the Frobenius norm of the covariance (or of
//! the centred Gram matrix, whose non-zero eigenvalues are the same), and the top principal
//! components by power iteration.

use hrm_model::cpu::gemm;

/// Samples as rows of a `[n, dim]` matrix, centred in place (the mean of every column removed).
fn centre(x: &mut [f32], dim: usize) {
    let n = x.len() / dim;
    if n == 0 {
        return;
    }
    let mut mean = vec![0f64; dim];
    for row in x.chunks(dim) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += v as f64;
        }
    }
    for m in &mut mean {
        *m /= n as f64;
    }
    for row in x.chunks_mut(dim) {
        for (v, &m) in row.iter_mut().zip(&mean) {
            *v -= m as f32;
        }
    }
}

/// PR of a symmetric positive semi-definite `[k, k]` matrix: tr(M)^2 / ||M||_F^2 (0 for M = 0).
fn pr_of(m: &[f64], k: usize) -> f64 {
    let trace: f64 = (0..k).map(|i| m[i * k + i]).sum();
    let frob: f64 = m.iter().map(|v| v * v).sum();
    if frob > 0.0 {
        trace * trace / frob
    } else {
        0.0
    }
}

/// PR of samples `x` `[n, dim]` (rows): the covariance is `dim x dim` when `dim <= n`, else the
/// centred Gram matrix `n x n` stands in for it (same non-zero spectrum).
pub fn participation_ratio(x: &[f32], dim: usize) -> f64 {
    let n = x.len() / dim.max(1);
    if n < 2 || dim == 0 {
        return 0.0;
    }
    let mut x = x[..n * dim].to_vec();
    centre(&mut x, dim);
    let m = if dim <= n {
        gemm::sgemm(dim, dim, n, &x, gemm::Op::T, &x, gemm::Op::N)
    } else {
        gemm::sgemm(n, n, dim, &x, gemm::Op::N, &x, gemm::Op::T)
    };
    let k = dim.min(n);
    pr_of(&m.iter().map(|&v| v as f64).collect::<Vec<_>>(), k)
}

/// PR of the first `n` samples, for every `n` of `counts`, from one Gram matrix of all samples
/// (each leading block re-centred: the PR of a growing set of trajectories, the saturation curve).
pub fn pr_curve(x: &[f32], dim: usize, counts: &[usize]) -> Vec<f64> {
    let total = x.len() / dim.max(1);
    let mut xc = x[..total * dim].to_vec();
    centre(&mut xc, dim);
    let g = gemm::sgemm(total, total, dim, &xc, gemm::Op::N, &xc, gemm::Op::T);
    counts
        .iter()
        .map(|&n| {
            let n = n.min(total);
            if n < 2 {
                return 0.0;
            }
            // H G_n H with H the centring matrix of n samples
            let block = |i: usize, j: usize| g[i * total + j] as f64;
            let row_mean: Vec<f64> = (0..n)
                .map(|i| (0..n).map(|j| block(i, j)).sum::<f64>() / n as f64)
                .collect();
            let all = row_mean.iter().sum::<f64>() / n as f64;
            let mut c = vec![0f64; n * n];
            for i in 0..n {
                for j in 0..n {
                    c[i * n + j] = block(i, j) - row_mean[i] - row_mean[j] + all;
                }
            }
            pr_of(&c, n)
        })
        .collect()
}

/// The sample counts of a saturation curve up to `n`: 2, 4, 8, ... and `n` itself.
pub fn curve_counts(n: usize) -> Vec<usize> {
    let mut c: Vec<usize> = std::iter::successors(Some(2usize), |&k| Some(k * 2))
        .take_while(|&k| k < n)
        .collect();
    if n >= 2 {
        c.push(n);
    }
    c
}

/// The top `k` principal components of samples `x` `[n, dim]`: (the samples projected on them
/// `[n][k]`, the fraction of the variance each explains).
pub fn pca(x: &[f32], dim: usize, k: usize) -> (Vec<Vec<f64>>, Vec<f64>) {
    let n = x.len() / dim.max(1);
    let mut xc = x[..n * dim].to_vec();
    centre(&mut xc, dim);
    let c: Vec<f64> = gemm::sgemm(dim, dim, n, &xc, gemm::Op::T, &xc, gemm::Op::N)
        .iter()
        .map(|&v| v as f64)
        .collect();
    let trace: f64 = (0..dim).map(|i| c[i * dim + i]).sum();
    let mut comps: Vec<(Vec<f64>, f64)> = Vec::new();
    for j in 0..k.min(dim) {
        // power iteration on C with the components found so far projected out
        let mut v: Vec<f64> = (0..dim)
            .map(|i| 1.0 + ((i * 7 + j * 3) % 11) as f64)
            .collect();
        let mut lambda = 0.0;
        for _ in 0..300 {
            for (u, _) in &comps {
                let dot: f64 = u.iter().zip(&v).map(|(a, b)| a * b).sum();
                v.iter_mut().zip(u).for_each(|(x, a)| *x -= dot * a);
            }
            let w: Vec<f64> = (0..dim)
                .map(|i| (0..dim).map(|q| c[i * dim + q] * v[q]).sum())
                .collect();
            let norm = w.iter().map(|a| a * a).sum::<f64>().sqrt();
            if norm == 0.0 {
                break;
            }
            lambda = norm;
            v = w.into_iter().map(|a| a / norm).collect();
        }
        comps.push((v, lambda));
    }
    let proj = xc
        .chunks(dim)
        .map(|row| {
            comps
                .iter()
                .map(|(u, _)| u.iter().zip(row).map(|(a, &b)| a * b as f64).sum())
                .collect()
        })
        .collect();
    let explained = comps
        .iter()
        .map(|(_, l)| if trace > 0.0 { l / trace } else { 0.0 })
        .collect();
    (proj, explained)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// `n` samples of dimension `dim` whose covariance has eigenvalues `spectrum` (then zeros):
    /// Gaussian coordinates scaled per axis, rotated by a fixed orthogonal mix (a Householder
    /// reflection) so the axes are not the coordinate axes.
    fn samples(n: usize, dim: usize, spectrum: &[f64], seed: u64) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let h: Vec<f64> = (0..dim).map(|i| ((i + 1) as f64).sin()).collect();
        let hn: f64 = h.iter().map(|a| a * a).sum();
        let mut out = Vec::with_capacity(n * dim);
        for _ in 0..n {
            let z: Vec<f64> = (0..dim)
                .map(|i| {
                    let s = spectrum.get(i).copied().unwrap_or(0.0).sqrt();
                    // Box-Muller
                    let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-12), rng.random());
                    s * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
                })
                .collect();
            let dot: f64 = h.iter().zip(&z).map(|(a, b)| a * b).sum();
            out.extend(
                z.iter()
                    .zip(&h)
                    .map(|(zi, hi)| (zi - 2.0 * dot / hn * hi) as f32),
            );
        }
        out
    }

    #[test]
    fn isotropic_data_has_pr_near_its_dimension_and_rank_k_data_pr_k() {
        let d = 16;
        let iso = participation_ratio(&samples(4000, d, &[1.0; 16], 1), d);
        assert!((iso - 16.0).abs() < 0.6, "isotropic PR {iso}");
        let rank3 = participation_ratio(&samples(4000, d, &[1.0, 1.0, 1.0], 2), d);
        assert!((rank3 - 3.0).abs() < 0.1, "rank-3 PR {rank3}");
        // two equal directions and a weaker third: (1+1+0.25)^2 / (1+1+1/16) = 2.45
        let mixed = participation_ratio(&samples(8000, d, &[1.0, 1.0, 0.25], 3), d);
        assert!((mixed - 2.4545).abs() < 0.1, "mixed PR {mixed}");
        // more dimensions than samples: the Gram path; rank-k data stays at k
        let wide = participation_ratio(&samples(40, 64, &[2.0, 2.0, 2.0, 2.0, 2.0], 4), 64);
        assert!((wide - 5.0).abs() < 1.0, "wide rank-5 PR {wide}");
        assert_eq!(participation_ratio(&[1.0; 32], 16), 0.0);
    }

    #[test]
    fn the_curve_of_growing_sets_matches_the_pr_of_each_set() {
        let d = 24;
        let x = samples(64, d, &[1.0; 24], 5);
        let counts = curve_counts(64);
        assert_eq!(counts, [2, 4, 8, 16, 32, 64]);
        let curve = pr_curve(&x, d, &counts);
        for (&n, &c) in counts.iter().zip(&curve) {
            let direct = participation_ratio(&x[..n * d], d);
            assert!(
                (c - direct).abs() < 1e-3 * direct.max(1.0),
                "{n}: {c} vs {direct}"
            );
        }
        // n samples span at most n - 1 directions: the curve grows then saturates near d
        assert!(curve[0] <= 1.0 + 1e-6 && curve[5] > curve[2]);
    }

    #[test]
    fn pca_finds_the_dominant_directions() {
        let d = 8;
        let x = samples(3000, d, &[9.0, 1.0], 6);
        let (proj, explained) = pca(&x, d, 2);
        assert_eq!(proj.len(), 3000);
        assert!((explained[0] - 0.9).abs() < 0.03, "{explained:?}");
        assert!((explained[1] - 0.1).abs() < 0.03, "{explained:?}");
        let var0: f64 = proj.iter().map(|p| p[0] * p[0]).sum::<f64>() / 3000.0;
        assert!((var0 - 9.0).abs() < 0.8, "{var0}");
    }
}

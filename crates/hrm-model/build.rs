//! Build script of hrm-model:
//! - under the `blas` feature, links a system CBLAS for `cblas_sgemm` ([`link_blas`]);
//! - under the `cuda` feature, compiles the CUDA kernels in `kernels/` to PTX (loaded at run time
//!   by `src/cuda.rs`).
//!
//! Without either feature it does nothing.
//!
//! nvcc is taken from `NVCC`, else `$CUDA_ROOT/bin` / `$CUDA_HOME/bin`, else `PATH`
//! (scripts/install-cuda-build-deps.sh provides one from PyPI). The PTX targets
//! `compute_$CUDA_COMPUTE_CAP` (default 70: the driver compiles PTX for any newer GPU at load).

use std::path::PathBuf;
use std::process::Command;

const KERNELS: [&str; 1] = ["optim"];

fn nvcc() -> PathBuf {
    if let Some(p) = std::env::var_os("NVCC") {
        return PathBuf::from(p);
    }
    for root in ["CUDA_ROOT", "CUDA_HOME", "CUDA_PATH"] {
        if let Some(r) = std::env::var_os(root) {
            let p = PathBuf::from(r).join("bin").join("nvcc");
            if p.exists() {
                return p;
            }
        }
    }
    PathBuf::from("nvcc")
}

/// `HRM_BLAS_LIB` names the library (default `openblas`; e.g. `mkl_rt`), `HRM_BLAS_LIB_DIR` adds
/// a search path. Debian/Ubuntu: `apt-get install libopenblas-dev`.
fn link_blas() {
    println!("cargo:rerun-if-env-changed=HRM_BLAS_LIB");
    println!("cargo:rerun-if-env-changed=HRM_BLAS_LIB_DIR");
    if std::env::var_os("CARGO_FEATURE_BLAS").is_none() {
        return;
    }
    if let Some(dir) = std::env::var_os("HRM_BLAS_LIB_DIR") {
        println!("cargo:rustc-link-search=native={}", dir.to_string_lossy());
    }
    let lib = std::env::var("HRM_BLAS_LIB").unwrap_or_else(|_| "openblas".into());
    println!("cargo:rustc-link-lib=dylib={lib}");
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    link_blas();
    for var in [
        "NVCC",
        "CUDA_ROOT",
        "CUDA_HOME",
        "CUDA_PATH",
        "CUDA_COMPUTE_CAP",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let cap = std::env::var("CUDA_COMPUTE_CAP")
        .ok()
        .map(|c| c.trim().replace('.', ""))
        .unwrap_or_else(|| "70".into());
    let nvcc = nvcc();
    for k in KERNELS {
        let src = format!("kernels/{k}.cu");
        println!("cargo:rerun-if-changed={src}");
        let ptx = out.join(format!("{k}.ptx"));
        let status = Command::new(&nvcc)
            .args([
                "--ptx",
                "-O3",
                "--fmad=false",
                "-prec-div=true",
                "-prec-sqrt=true",
            ])
            .arg(format!("-arch=compute_{cap}"))
            .arg("-o")
            .arg(&ptx)
            .arg(&src)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => panic!("{} failed on {src} ({s})", nvcc.display()),
            Err(e) => panic!(
                "cannot run nvcc ({}): {e}. Install the CUDA build dependencies \
                 (scripts/install-cuda-build-deps.sh, then `source .cuda-deps/env.sh`) or set NVCC",
                nvcc.display()
            ),
        }
    }
}

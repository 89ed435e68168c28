//! A bf16 forward on the CPU (`arch.forward_dtype = "bfloat16"`: f32 activations, bf16 matrix
//! products on AMX or AVX512-BF16) through the commands: training resumes bit for bit, the
//! checkpoint evaluates and solves, `hrm bench train|eval --dtype bfloat16` run. On a CPU without
//! a bf16 unit (or with `HRM_NO_SIMD`, as CI's second pass) training is a one-line error naming
//! the key, and inference still runs (the same numbers through f32 products of rounded operands).

mod common;

use common::{
    evaluates_and_solves, final_tensors, json, ok, one_line_error, tiny_sudoku_dataset,
    trains_and_resumes_exactly,
};

const BF16: &str = "arch.forward_dtype=bfloat16";

#[test]
fn a_bf16_forward_trains_resumes_exactly_and_runs_on_the_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_sudoku_dataset(dir.path());
    let d = data.to_str().unwrap();
    let a = dir.path().join("a");
    let args = |run: &std::path::Path, extra: &[&str]| {
        let mut e = vec![BF16];
        e.extend_from_slice(extra);
        common::tiny_train_args(d, run.to_str().unwrap(), &e)
    };
    // inference runs everywhere
    for mode in ["eval", "train"] {
        let bench = [
            "bench", mode, "--dtype", "bfloat16", "--preset", "tiny", "--batch", "2", "--steps",
            "1", "--warmup", "0",
        ];
        if mode == "train" && !hrm_model::cpu::bf16::available() {
            continue; // refused below, with the trainer
        }
        let line = ok(&bench);
        let v = json(line.lines().last().unwrap());
        assert_eq!(v["dtype"], "bfloat16", "{line}");
        let kernel = hrm_model::cpu::bf16::kernel().name();
        assert_eq!(v["matmul"], format!("bf16-{kernel}"), "{line}");
    }
    if !hrm_model::cpu::bf16::available() {
        eprintln!("no bf16 unit here (or HRM_NO_SIMD): checking the refusal");
        let e = one_line_error(&args(&a, &[]), "arch.forward_dtype");
        assert!(e.contains("AVX512-BF16") && e.contains("float32"), "{e}");
        return;
    }
    let b = dir.path().join("b");
    let ta = trains_and_resumes_exactly(&args, &a, &b, "bf16");
    // the products were bf16: an f32 run from the same seed ends elsewhere
    let c = dir.path().join("c");
    ok(&common::tiny_train_args(d, c.to_str().unwrap(), &[]));
    assert_ne!(
        final_tensors(&c).1,
        ta,
        "bf16 and f32 runs are bit-identical"
    );
    evaluates_and_solves(&a, d, 12.0, "bf16");
}

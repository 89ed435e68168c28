//! Peak memory of a training step must not grow with the reasoning depth (H_cycles x L_cycles):
//! only the last L and H calls carry a graph (the one-step gradient), every other call's
//! temporaries are freed as soon as the call returns. Measured with a counting allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::Device;
use hrm_model::config::ForwardDtype;
use hrm_model::loss::LossType;
use hrm_model::train::forward_backward;
use hrm_model::{Batch, Hrm, ModelConfig};
use rand::SeedableRng;

struct Counting;
static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        CURRENT.fetch_sub(l.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static A: Counting = Counting;

/// The counter sees every thread: the tests of this file take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The configuration of these tests at `h` x `l` cycles with a forward in `dtype`.
fn config(h: usize, l: usize, dtype: ForwardDtype) -> ModelConfig {
    ModelConfig {
        h_cycles: h,
        l_cycles: l,
        hidden_size: 64,
        num_heads: 4,
        puzzle_emb_ndim: 64,
        halt_max_steps: 4,
        forward_dtype: dtype,
        ..ModelConfig::tiny(8)
    }
}

/// Peak bytes allocated during one training step above what was live before it.
fn step_peak(h: usize, l: usize) -> usize {
    peak_of(&config(h, l, ForwardDtype::F32))
}

/// Peak bytes allocated during one training step of a model of `cfg` (see [`step_peak`]).
fn peak_of(cfg: &ModelConfig) -> usize {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let model = Hrm::new(cfg, &Device::Cpu, &mut rng).unwrap();
    let batch = Batch::random(cfg.batch_size, cfg.seq_len, 11, 0.5, None, &mut rng);
    let carry = model.initial_carry(&batch).unwrap();
    // warm-up step (thread pools, lazily built tables)
    drop(forward_backward(&model, &carry, &batch, LossType::Stablemax, 8, &mut rng).unwrap());
    let base = CURRENT.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    let step = forward_backward(&model, &carry, &batch, LossType::Stablemax, 8, &mut rng).unwrap();
    let peak = PEAK.load(Ordering::SeqCst) - base;
    drop(step);
    peak
}

#[test]
fn training_step_memory_is_flat_in_reasoning_depth() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let p11 = step_peak(1, 1);
    let p22 = step_peak(2, 2);
    let p44 = step_peak(4, 4);
    let p88 = step_peak(8, 8);
    eprintln!("peak bytes per training step: 1x1 {p11}, 2x2 {p22}, 4x4 {p44}, 8x8 {p88}");
    for (name, p) in [("2x2", p22), ("4x4", p44), ("8x8", p88)] {
        assert!(
            (p as f64) <= 1.10 * p11 as f64,
            "{name} cycles peak {p} bytes vs 1x1 {p11}: memory grows with reasoning depth"
        );
    }
}

/// With bf16 products on the CPU the gradient layers recompute their qkv and gate-up products in
/// the backward instead of holding them (`ops::LinearThenLinear`): the step's peak is lower than
/// the f32 step's by at least what all but one layer held (the layer being differentiated
/// recomputes its own at the peak).
#[test]
fn bf16_step_does_not_hold_the_first_projections() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let f32_cfg = config(2, 2, ForwardDtype::F32);
    let (p32, p16) = (
        peak_of(&f32_cfg),
        peak_of(&config(2, 2, ForwardDtype::BF16)),
    );
    let rows = f32_cfg.batch_size * f32_cfg.full_seq_len();
    let per_layer = rows * (3 * f32_cfg.hidden_size + 2 * f32_cfg.mlp_inner()) * 4;
    let layers = f32_cfg.h_layers + f32_cfg.l_layers; // one gradient call of each module
    let held = (layers - 1) * per_layer;
    eprintln!("peak bytes: f32 {p32}, bf16 {p16}; held per layer {per_layer}");
    assert!(
        p16 + held <= p32,
        "bf16 peak {p16} bytes is not {held} below the f32 peak {p32}"
    );
}

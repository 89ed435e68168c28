//! Training-step properties: every trainable parameter gets a gradient, a bf16 forward stays close
//! to f32, and a tiny model overfits a handful of puzzles.

use candle_core::{DType, Device};
use common::{batch, host, max_abs};
use hrm_model::config::ForwardDtype;
use hrm_model::loss::argmax;
use hrm_model::loss::LossType;
use hrm_model::train::{forward_backward, Optimizers};
use hrm_model::{Hrm, Mode, ModelConfig};
use rand::SeedableRng;

mod common;

#[test]
fn every_parameter_receives_a_nonzero_gradient() {
    for pos in ["rope", "learned"] {
        let mut cfg = ModelConfig {
            num_puzzle_identifiers: 3,
            ..ModelConfig::tiny(4)
        };
        cfg.pos_encodings = serde_json::from_str(&format!("\"{pos}\"")).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let model = Hrm::new(&cfg, &Device::Cpu, &mut rng).unwrap();
        let b = batch(&cfg, &mut rng);
        let carry = model.initial_carry(&b).unwrap();
        let step = forward_backward(&model, &carry, &b, LossType::Stablemax, 4, &mut rng).unwrap();
        let params = model.parameters();
        assert_eq!(params.len(), step.grads.params.len());
        for ((name, var), g) in params.iter().zip(&step.grads.params) {
            let g = g.as_ref().unwrap_or_else(|| panic!("{name}: no gradient"));
            assert_eq!(g.dims(), var.dims(), "{name}");
            let max = max_abs(g);
            assert!(
                max > 0.0 && max.is_finite(),
                "{name}: gradient max |g| = {max}"
            );
        }
        let (ids, g) = step.grads.puzzle.expect("puzzle rows get a gradient");
        assert_eq!(ids, step.carry.data.puzzle_identifiers);
        let max = max_abs(&g);
        assert!(max > 0.0, "puzzle rows: zero gradient");
    }
}

#[test]
fn bf16_forward_stays_close_to_f32() {
    let cfg = ModelConfig {
        halt_max_steps: 2,
        ..ModelConfig::tiny(4)
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
    let m32 = Hrm::new(&cfg, &Device::Cpu, &mut rng).unwrap();
    let sd = m32.state_dict().into_iter().collect();
    let cfg16 = ModelConfig {
        forward_dtype: ForwardDtype::BF16,
        ..cfg.clone()
    };
    // the GPU's bf16 numerics (bf16 activations), checked here on the CPU
    let m16 = Hrm::from_state_dict(&cfg16, &Device::Cpu, &sd)
        .unwrap()
        .with_bf16_activations();
    let b = batch(&cfg, &mut rng);
    let (mut c32, mut c16) = (
        m32.initial_carry(&b).unwrap(),
        m16.initial_carry(&b).unwrap(),
    );
    for _ in 0..cfg.halt_max_steps {
        let (n32, o32) = m32.act_step(&c32, &b, Mode::Eval, &mut rng).unwrap();
        let (n16, o16) = m16.act_step(&c16, &b, Mode::Eval, &mut rng).unwrap();
        assert_eq!(o16.logits.dtype(), DType::BF16);
        let (l32, l16) = (host(&o32.logits), host(&o16.logits));
        let scale = l32.iter().fold(0f32, |m, x| m.max(x.abs()));
        let err = l32
            .iter()
            .zip(&l16)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        eprintln!("bf16 vs f32 logits: max abs err {err:.4} of max |logit| {scale:.3}");
        assert!(
            err < 0.05 * scale,
            "bf16 logits drift: {err} vs scale {scale}"
        );
        // predictions agree almost everywhere
        let v = cfg.vocab_size;
        let argmax = |x: &[f32]| -> Vec<usize> { x.chunks(v).map(argmax).collect() };
        let (a32, a16) = (argmax(&l32), argmax(&l16));
        let same = a32.iter().zip(&a16).filter(|(a, b)| a == b).count();
        assert!(
            same as f64 >= 0.97 * a32.len() as f64,
            "{same}/{} argmax agree",
            a32.len()
        );
        (c32, c16) = (n32, n16);
    }
}

#[test]
fn tiny_model_overfits_four_puzzles() {
    let cfg = ModelConfig {
        seq_len: 16,
        vocab_size: 6,
        halt_max_steps: 2,
        h_cycles: 1,
        l_cycles: 2,
        h_layers: 1,
        l_layers: 1,
        ..ModelConfig::tiny(4)
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let model = Hrm::new(&cfg, &Device::Cpu, &mut rng).unwrap();
    let b = batch(&cfg, &mut rng);
    let mut opt = Optimizers::new(&model, (0.9, 0.95), 0.0, 0.0);
    let mut carry = model.initial_carry(&b).unwrap();
    let mut first = None;
    let mut last = 0.0;
    for _ in 0..150 {
        let step = forward_backward(&model, &carry, &b, LossType::Stablemax, 4, &mut rng).unwrap();
        let lm = step.loss.metrics.lm_loss / 4.0;
        first.get_or_insert(lm);
        last = lm;
        opt.step(&model, &step.grads, 3e-3, 1e-2).unwrap();
        carry = step.carry;
    }
    let first = first.unwrap();
    eprintln!("lm_loss per row: {first:.3} -> {last:.3}");
    assert!(
        last < 0.1 * first && last < 0.2,
        "did not overfit: {first} -> {last}"
    );
}

//! `eval_save_outputs`: after each evaluation a tiny training run writes the chosen tensors of
//! every evaluated test example to `<run>/step_<N>_eval_outputs.safetensors` (the reference's
//! `step_<N>_all_preds.<rank>`), and nothing without the key.

mod common;

use std::sync::Arc;

use candle_core::{DType, Device};
use hrm_data::format::load_split;
use hrm_data::sampler::TestIterator;
use hrm_train::rundir::{eval_outputs_file_name, RunDir};
use hrm_train::trainer::train;

use common::{dataset, files, quiet, tiny_run_config};

#[test]
fn evaluations_save_the_chosen_outputs_of_the_evaluated_examples() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path());
    let keys = "eval_save_outputs=[\"inputs\",\"logits\",\"q_halt_logits\"]";
    let cfg = tiny_run_config(&data, &[keys]);
    let (n, batch) = (cfg.eval_max_examples.unwrap(), cfg.global_batch_size);
    let run_dir = tmp.path().join("run");
    let summary = train(cfg.clone(), &quiet(&run_dir, None)).unwrap();

    // the test split's first examples, as evaluation reads them (padding rows left out)
    let test = Arc::new(load_split(&data, "test").unwrap());
    let (l, vocab) = (test.metadata.seq_len, test.metadata.vocab_size);
    let mut first: Vec<i32> = Vec::new();
    for b in TestIterator::new(test, batch).unwrap() {
        first.extend_from_slice(&b.inputs[..b.effective_size.min(b.batch_size) * l]);
    }
    let n = n.min(first.len() / l);
    first.truncate(n * l);
    assert!(n > 0);

    // one file per evaluation (every eval_interval = 2 of 4 epochs), at the step it ran
    let outputs: Vec<String> = files(&run_dir)
        .into_iter()
        .filter(|f| f.ends_with("_eval_outputs.safetensors"))
        .collect();
    assert_eq!(outputs.len(), 2, "{outputs:?}");
    assert!(outputs.contains(&eval_outputs_file_name(summary.step)));
    for name in &outputs {
        let f = hrm_model::checkpoint::read_safetensors(&run_dir.join(name), &Device::Cpu).unwrap();
        let mut saved: Vec<&str> = f.tensors.keys().map(String::as_str).collect();
        saved.sort();
        assert_eq!(saved, ["inputs", "logits", "q_halt_logits"], "{name}");
        let inputs = &f.tensors["inputs"];
        assert_eq!((inputs.dims(), inputs.dtype()), (&[n, l][..], DType::I32));
        assert_eq!(
            inputs.flatten_all().unwrap().to_vec1::<i32>().unwrap(),
            first
        );
        let (logits, q_halt) = (&f.tensors["logits"], &f.tensors["q_halt_logits"]);
        assert_eq!(
            (logits.dims(), logits.dtype()),
            (&[n, l, vocab][..], DType::F32)
        );
        assert_eq!((q_halt.dims(), q_halt.dtype()), (&[n][..], DType::F32));
    }
    // they are not checkpoints: the run resumes from, and prunes, step_<N>.safetensors only
    let dir = RunDir::open(&run_dir).unwrap();
    let latest = dir.latest_checkpoint().unwrap().unwrap();
    assert_eq!(latest.step, summary.step);
    assert_eq!(
        latest.path.file_name().unwrap().to_string_lossy(),
        format!("step_{}.safetensors", summary.step)
    );

    // the default (no eval_save_outputs) writes none
    let plain_dir = tmp.path().join("plain");
    train(tiny_run_config(&data, &[]), &quiet(&plain_dir, None)).unwrap();
    assert!(
        files(&plain_dir)
            .iter()
            .all(|f| !f.contains("eval_outputs")),
        "{:?}",
        files(&plain_dir)
    );
}

/// A batch far larger than the test split is capped at the split (no rows of padding are
/// allocated): the same metrics as a batch of the split's size.
#[test]
fn a_huge_eval_batch_is_capped_at_the_data() {
    use hrm_model::{Engine, Hrm};
    use hrm_train::eval::{evaluate, EvalOptions};
    use rand::SeedableRng;
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path());
    let test = Arc::new(load_split(&data, "test").unwrap());
    let n = test.sets.iter().map(|s| s.num_examples()).max().unwrap();
    let cfg = tiny_run_config(&data, &[]);
    let facts = hrm_train::config::DatasetFacts {
        vocab_size: test.metadata.vocab_size,
        seq_len: test.metadata.seq_len,
        num_puzzle_identifiers: test.metadata.num_puzzle_identifiers,
    };
    let mc = cfg.model_config(&facts).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let model = Hrm::new(&mc, &Device::Cpu, &mut rng).unwrap();
    let engine = Engine::plain(&model);
    let loss = cfg.arch.loss.loss_type;
    let opts = EvalOptions::default();
    let huge = evaluate(&engine, test.clone(), 100_000_000, loss, &opts).unwrap();
    let exact = evaluate(&engine, test, n, loss, &opts).unwrap();
    assert_eq!(huge.metrics, exact.metrics);
}

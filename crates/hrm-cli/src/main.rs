//! `hrm`: build datasets, train, evaluate and run the Hierarchical Reasoning Model.
//!
//! One binary with one subcommand per job, each a module that parses its flags, calls the
//! library crates (`hrm-data`, `hrm-model`, `hrm-train`) and prints: `hrm data ...` (datasets),
//! `hrm parity` (check against the PyTorch reference's golden tensors), `hrm convert` (reference
//! checkpoint -> safetensors), `hrm train`, `hrm eval`, `hrm solve`, `hrm serve` (a local web
//! app), `hrm bench` (speed, side by side with the PyTorch peer), `hrm device-check` (a GPU
//! against the CPU).

use clap::{Parser, Subcommand};

mod analyze_cmd;
mod bench_cmd;
mod check_cmd;
mod data_cmd;
mod device;
mod eval;
mod interrupt;
mod model_cmd;
mod serve_cmd;
mod solve;
mod train;

/// The Hierarchical Reasoning Model in Rust.
#[derive(Parser)]
#[command(name = "hrm", version, about, long_about = None)]
struct Cli {
    /// CPU threads for tensor work (default: RAYON_NUM_THREADS or all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build a puzzle dataset in the reference's on-disk layout (.npy + dataset.json).
    Data {
        #[command(subcommand)]
        cmd: data_cmd::DataCommand,
    },
    /// Replay hrm-parity-v1 golden fixtures of the PyTorch reference and compare every tensor.
    Parity(model_cmd::ParityArgs),
    /// Convert a reference PyTorch checkpoint (pickled state dict) into an hrm safetensors file.
    Convert(model_cmd::ConvertArgs),
    /// Train with a config file plus `key=value` overrides (the reference's pretrain.py).
    Train(train::TrainArgs),
    /// Evaluate a checkpoint on a dataset's test split (metrics as JSON).
    Eval(eval::EvalArgs),
    /// Solve one puzzle with a trained model.
    Solve(solve::SolveArgs),
    /// A local web app: solve Sudokus, mazes and ARC tasks and watch every segment's answer.
    Serve(serve_cmd::ServeArgs),
    /// Time training steps, eval segments or solves (same JSON fields as the PyTorch peer).
    Bench(bench_cmd::BenchArgs),
    /// Check a GPU against the CPU: optimizer kernels, an f32 training step, bf16 vs f32.
    DeviceCheck(check_cmd::CheckArgs),
    /// How a checkpoint computes: dimensionality, convergence, adaptive compute, per-segment
    /// answers (analysis.json, figures, report.html).
    Analyze(analyze_cmd::AnalyzeArgs),
}

/// Keep freed memory in the heap for the next step instead of unmapping it: a training step
/// allocates and frees the same activation buffers (up to 32 MiB each for the Sudoku preset)
/// every time, and glibc's defaults would return them to the kernel and take page faults on
/// every fresh page (~7% of a step on 2 cores; peak RSS +2%, scripts/bench-vs-torch.sh).
/// `MALLOC_MMAP_THRESHOLD_` / `MALLOC_TRIM_THRESHOLD_` in the environment still take precedence.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_malloc() {
    extern "C" {
        fn mallopt(param: i32, value: i32) -> i32;
    }
    const M_TRIM_THRESHOLD: i32 = -1;
    const M_MMAP_THRESHOLD: i32 = -3;
    for (param, env, value) in [
        (M_MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_", 32 << 20), // glibc's largest
        (M_TRIM_THRESHOLD, "MALLOC_TRIM_THRESHOLD_", i32::MAX),
    ] {
        if std::env::var_os(env).is_none() {
            // SAFETY: mallopt only sets allocator parameters; called before any thread starts.
            unsafe { mallopt(param, value) };
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() {}

/// For the dataset builders: on SIGINT / SIGTERM / SIGHUP, delete the unfinished staging folder
/// (`<out>.tmp-<pid>`) and exit with 128 + the signal, as the default action would have, minus
/// the litter.
fn remove_staging_on_interrupt() -> anyhow::Result<()> {
    interrupt::watch(|sig| {
        for p in hrm_data::format::remove_live_staging_dirs() {
            eprintln!("interrupted: removed the unfinished {}", p.display());
        }
        std::process::exit(interrupt::exit_code(sig));
    })?;
    Ok(())
}

fn main() {
    tune_malloc();
    let cli = Cli::parse();
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // candle's element-wise ops have their own spinning worker pool next to rayon's; on a few
        // cores the two fight (rayon and the matrix products do the parallel work here), so it
        // runs those small ops on the calling thread unless asked otherwise
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    if let Some(n) = cli.threads {
        // read by rayon's global pool (created lazily, after this) and by candle's matmul
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    let result = match cli.command {
        Command::Data { cmd } => remove_staging_on_interrupt().and_then(|()| data_cmd::run(cmd)),
        Command::Parity(args) => model_cmd::parity(&args),
        Command::Convert(args) => model_cmd::convert(&args),
        Command::Train(args) => train::train_cmd(&args),
        Command::Eval(args) => eval::eval_cmd(&args),
        Command::Solve(args) => solve::solve_cmd(&args),
        Command::Serve(args) => serve_cmd::serve_cmd(&args),
        Command::Bench(args) => bench_cmd::bench_cmd(&args),
        Command::DeviceCheck(args) => check_cmd::check_cmd(&args),
        Command::Analyze(args) => analyze_cmd::analyze_cmd(&args),
    };
    if let Err(e) = result {
        // One clear line (plus the cause chain) instead of a panic or a debug dump.
        eprintln!("error: {}", one_line(&e));
        std::process::exit(1);
    }
}

/// An error and its causes on one line, `outer: cause: ...`, each cause written once: an error
/// whose message already quotes its source (`cannot read X: No such file ...`) is not followed by
/// that source again.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::one_line;
    use anyhow::Context;

    #[test]
    fn causes_are_written_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone (os error 2)");
        // a message that quotes its source, then a context above it
        #[derive(Debug)]
        struct Read {
            source: std::io::Error,
        }
        impl std::fmt::Display for Read {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "cannot read f.toml: {}", self.source)
            }
        }
        impl std::error::Error for Read {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.source)
            }
        }
        let e = anyhow::Error::new(Read { source: io }).context("loading the run");
        assert_eq!(
            one_line(&e),
            "loading the run: cannot read f.toml: gone (os error 2)"
        );
        let plain: anyhow::Result<()> = Err(anyhow::anyhow!("disk full")).context("writing x");
        assert_eq!(one_line(&plain.unwrap_err()), "writing x: disk full");
    }
}

//! `hrm device-check --device cuda:N`: does this device compute what the CPU computes?
//!
//! A user's first command on a new GPU (and part of scripts/gpu-check.sh). The four checks
//! (optimizers, an f32 training step, a bf16 forward, a bf16 step; see `hrm_train::device_check`)
//! are printed as one line each with its measure, criterion and verdict, then a JSON summary.

use anyhow::{bail, Result};
use clap::Args;
use hrm_train::device_check::run_checks;
use serde_json::json;

/// Flags of `hrm device-check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The device to check against the CPU: `cuda` or `cuda:N`.
    #[arg(long, default_value = "cuda:0")]
    pub device: String,
    /// Rows of the synthetic Sudoku batch (the CPU runs the same step, so keep it modest).
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
}

/// `hrm device-check`.
pub fn check_cmd(a: &CheckArgs) -> Result<()> {
    let dev = crate::device::open_device(&a.device)?;
    if dev.is_cpu() {
        bail!("--device cpu: the check compares a device with the CPU; name a GPU (cuda:N)");
    }
    let name = crate::device::describe(&dev);
    let lines = run_checks(&dev, a.batch)?;
    println!("device check: {name} against the CPU");
    for l in &lines {
        println!(
            "{:14} {:72} [{}] {}",
            l.name,
            l.measure,
            l.criterion,
            if l.ok { "ok" } else { "FAIL" }
        );
    }
    let failed: Vec<&str> = lines.iter().filter(|l| !l.ok).map(|l| l.name).collect();
    println!(
        "{}",
        json!({
            "device": name,
            "checks": lines.iter().map(|l| json!({"name": l.name, "measure": l.measure, "ok": l.ok})).collect::<Vec<_>>(),
            "ok": failed.is_empty(),
        })
    );
    if !failed.is_empty() {
        bail!("device check failed: {}", failed.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_is_not_a_device_to_check() {
        let e = check_cmd(&CheckArgs {
            device: "cpu".into(),
            batch: 2,
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("name a GPU"), "{e}");
    }
}

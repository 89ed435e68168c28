//! `--device` for `hrm parity`, `eval`, `solve` and `bench`: `cpu`, `cuda` (= `cuda:0`) or
//! `cuda:N`, the same spellings as the training config's `device` key (the reference runs on the
//! GPU its rank is given by torchrun).

use anyhow::{bail, Context, Result};
use candle_core::Device;

/// Parse a device name and open the device. Errors say how to get a CUDA build.
pub fn open_device(name: &str) -> Result<Device> {
    let n = name.trim();
    let ordinal = match n {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => 0,
        _ => match n.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => i,
            _ => bail!("--device `{n}` is not a device (use `cpu`, `cuda` or `cuda:N`)"),
        },
    };
    if !cfg!(feature = "cuda") {
        bail!(
            "--device {n}: this `hrm` was built without CUDA support (build with \
             `--features cuda` after scripts/install-cuda-build-deps.sh, see the README)"
        );
    }
    let dev = Device::new_cuda(ordinal)
        .with_context(|| format!("--device {n}: cannot open CUDA device {ordinal}"))?;
    #[cfg(feature = "cuda")]
    hrm_model::cuda::exact_f32_matmuls();
    Ok(dev)
}

/// A short description for reports: `cpu` or `cuda:N`.
pub fn describe(d: &Device) -> String {
    match d.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_are_parsed_with_clear_errors() {
        assert!(open_device("cpu").unwrap().is_cpu());
        assert_eq!(describe(&open_device(" cpu ").unwrap()), "cpu");
        let e = open_device("gpu0").unwrap_err().to_string();
        assert!(e.contains("cuda:N"), "{e}");
        let e = open_device("cuda:x").unwrap_err().to_string();
        assert!(e.contains("not a device"), "{e}");
        if !cfg!(feature = "cuda") {
            let e = open_device("cuda:0").unwrap_err().to_string();
            assert!(e.contains("without CUDA support"), "{e}");
        }
    }
}

//! `--device` for `hrm parity`, `eval`, `solve` and `bench`: `cpu`, `cuda` (= `cuda:0`) or
//! `cuda:N`, the same spellings as the training config's `device` key (the reference runs on the
//! GPU its rank is given by torchrun).

use anyhow::{Context, Result};
use candle_core::Device;
pub use hrm_model::device::describe;
use hrm_model::device::DeviceSpec;

/// Parse a device name and open the device. Errors say how to get a CUDA build.
pub fn open_device(name: &str) -> Result<Device> {
    let n = name.trim();
    let spec = DeviceSpec::parse(n).with_context(|| {
        format!("--device `{n}` is not a device (use `cpu`, `cuda` or `cuda:N`)")
    })?;
    // the model crate's message starts with the device name
    spec.open().map_err(|e| anyhow::anyhow!("--device {e}"))
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

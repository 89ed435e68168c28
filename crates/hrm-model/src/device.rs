//! Device names (`cpu`, `cuda`, `cuda:N`): the one parser for the config's `device` key and the
//! `--device` flags, and opening the device.

use candle_core::Device;

use crate::{Error, Result};

/// A device by name, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The CPU.
    Cpu,
    /// CUDA device with this ordinal (`cuda` = `cuda:0`).
    Cuda(usize),
}

impl DeviceSpec {
    /// `cpu`, `cuda` (= `cuda:0`) or `cuda:N`, surrounding white space ignored; `None` for
    /// anything else.
    pub fn parse(name: &str) -> Option<Self> {
        match name.trim() {
            "cpu" => Some(Self::Cpu),
            "cuda" => Some(Self::Cuda(0)),
            n => n
                .strip_prefix("cuda:")
                .and_then(|i| i.parse().ok())
                .map(Self::Cuda),
        }
    }

    /// Open the device. Without CUDA support compiled in, a CUDA device is an error that says
    /// how to get a CUDA build; a CUDA device also gets exact (non-TF32) f32 matrix products.
    pub fn open(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(i) => {
                if !cfg!(feature = "cuda") {
                    return Err(Error::msg(format!(
                        "cuda:{i}: this `hrm` was built without CUDA support (build with \
                         `--features cuda` after scripts/install-cuda-build-deps.sh, see the \
                         README)"
                    )));
                }
                let dev = Device::new_cuda(i).map_err(|e| {
                    Error::msg(format!("cuda:{i}: cannot open CUDA device {i}: {e}"))
                })?;
                #[cfg(feature = "cuda")]
                crate::cuda::exact_f32_matmuls();
                Ok(dev)
            }
        }
    }
}

/// A short description of an open device for reports: `cpu` or `cuda:N`.
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
    fn names_parse_and_cuda_needs_a_cuda_build() {
        assert_eq!(DeviceSpec::parse(" cpu "), Some(DeviceSpec::Cpu));
        assert_eq!(DeviceSpec::parse("cuda"), Some(DeviceSpec::Cuda(0)));
        assert_eq!(DeviceSpec::parse("cuda:3"), Some(DeviceSpec::Cuda(3)));
        for bad in ["gpu0", "cuda:x", "cuda:", ""] {
            assert_eq!(DeviceSpec::parse(bad), None, "{bad}");
        }
        assert_eq!(describe(&DeviceSpec::Cpu.open().unwrap()), "cpu");
        if !cfg!(feature = "cuda") {
            let e = DeviceSpec::Cuda(0).open().unwrap_err().to_string();
            assert!(e.contains("without CUDA support"), "{e}");
        }
    }
}

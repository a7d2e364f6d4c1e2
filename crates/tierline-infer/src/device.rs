//! `--device auto|cpu|cuda[:N]|metal` to a candle device.

use candle_core::Device;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRequest {
    Auto,
    Cpu,
    Cuda(usize),
    Metal,
}

impl DeviceRequest {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            "metal" => Ok(Self::Metal),
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(ordinal)) => Ok(Self::Cuda(ordinal)),
                _ => Err(format!("unknown device `{text}` (expected auto, cpu, cuda, cuda:N or metal)")),
            },
        }
    }

    /// Opens the device. `auto` prefers CUDA, then Metal, when tierline was built with them and
    /// the hardware answers; otherwise the CPU.
    pub fn open(self) -> anyhow::Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(ordinal) => open_cuda(ordinal),
            Self::Metal => open_metal(),
            Self::Auto => Ok(open_cuda(0).or_else(|_| open_metal()).unwrap_or(Device::Cpu)),
        }
    }
}

#[cfg(feature = "cuda")]
fn open_cuda(ordinal: usize) -> anyhow::Result<Device> {
    Device::new_cuda(ordinal).map_err(|err| anyhow::anyhow!("cannot open cuda:{ordinal}: {err}"))
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(_ordinal: usize) -> anyhow::Result<Device> {
    anyhow::bail!("this build of tierline has no CUDA support (rebuild with `--features cuda`)")
}

#[cfg(feature = "metal")]
fn open_metal() -> anyhow::Result<Device> {
    Device::new_metal(0).map_err(|err| anyhow::anyhow!("cannot open metal: {err}"))
}

#[cfg(not(feature = "metal"))]
fn open_metal() -> anyhow::Result<Device> {
    anyhow::bail!("this build of tierline has no Metal support (rebuild with `--features metal`)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices() {
        assert_eq!(DeviceRequest::parse("auto"), Ok(DeviceRequest::Auto));
        assert_eq!(DeviceRequest::parse("CUDA:1"), Ok(DeviceRequest::Cuda(1)));
        assert_eq!(DeviceRequest::parse("cuda"), Ok(DeviceRequest::Cuda(0)));
        assert!(DeviceRequest::parse("cuda:x").is_err());
        assert!(DeviceRequest::parse("tpu").is_err());
        assert!(
            matches!(DeviceRequest::Auto.open().unwrap(), Device::Cpu)
                || cfg!(any(feature = "cuda", feature = "metal"))
        );
    }
}

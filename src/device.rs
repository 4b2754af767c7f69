//! Device strings (`"cpu"`, `"cuda"`, `"cuda:N"`, `"mps"`) and the seed's default device.
use crate::error::{err, ErrorKind, Result};

/// Where a tensor lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda(usize),
    Mps,
}

impl Device {
    /// Parses a device string without checking that the device exists.
    pub fn parse(s: &str) -> Result<Device> {
        let bad = || {
            err(
                ErrorKind::InvalidArgument,
                format!("unknown device string {s:?} (expected \"cpu\", \"cuda\", \"cuda:N\" or \"mps\")"),
            )
        };
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            "mps" | "mps:0" => Ok(Device::Mps),
            _ => {
                let n = s.strip_prefix("cuda:").ok_or_else(bad)?;
                if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                n.parse().map(Device::Cuda).map_err(|_| bad())
            }
        }
    }

    /// Parses and checks that this process can use the device.
    pub fn parse_available(s: &str) -> Result<Device> {
        let d = Device::parse(s)?;
        d.check_available()?;
        Ok(d)
    }

    /// Fails with a Device error when the device is absent.
    pub fn check_available(self) -> Result<()> {
        match self {
            Device::Cpu => Ok(()),
            Device::Cuda(n) => {
                let count = if tch::Cuda::is_available() {
                    tch::Cuda::device_count().max(0) as usize
                } else {
                    0
                };
                if n < count {
                    Ok(())
                } else {
                    Err(err(
                        ErrorKind::Device,
                        format!("device cuda:{n} requested but this process sees {count} CUDA device(s)"),
                    ))
                }
            }
            Device::Mps if tch::utils::has_mps() => Ok(()),
            Device::Mps => Err(err(
                ErrorKind::Device,
                "device mps requested but Apple MPS is not available in this libtorch",
            )),
        }
    }

    /// The seed's default: CUDA device 0, else MPS, else CPU.
    pub fn default_device() -> Device {
        if tch::Cuda::is_available() {
            Device::Cuda(0)
        } else if tch::utils::has_mps() {
            Device::Mps
        } else {
            Device::Cpu
        }
    }

    pub fn to_tch(self) -> tch::Device {
        match self {
            Device::Cpu => tch::Device::Cpu,
            Device::Cuda(n) => tch::Device::Cuda(n),
            Device::Mps => tch::Device::Mps,
        }
    }

    pub fn from_tch(d: tch::Device) -> Device {
        match d {
            tch::Device::Cuda(n) => Device::Cuda(n),
            tch::Device::Mps => Device::Mps,
            _ => Device::Cpu,
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
            Device::Mps => write!(f, "mps"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_strings_and_rejects_others() {
        assert_eq!(Device::parse("cpu").unwrap(), Device::Cpu);
        assert_eq!(Device::parse("cuda").unwrap(), Device::Cuda(0));
        assert_eq!(Device::parse("cuda:3").unwrap(), Device::Cuda(3));
        assert_eq!(Device::parse("mps").unwrap(), Device::Mps);
        for bad in [
            "",
            "CPU",
            "cuda:",
            "cuda:-1",
            "cuda:x",
            "gpu",
            "cuda:99999999999999999999",
        ] {
            let e = Device::parse(bad).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn absent_devices_are_device_errors() {
        if !tch::Cuda::is_available() {
            assert_eq!(
                Device::parse_available("cuda:0").unwrap_err().kind,
                ErrorKind::Device
            );
        }
        assert_eq!(
            Device::parse_available("cuda:4096").unwrap_err().kind,
            ErrorKind::Device
        );
        assert!(Device::parse_available("cpu").is_ok());
    }
}

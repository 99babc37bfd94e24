//! The guest kernel command line the VMM builds.

use crate::layout::CMDLINE_MAX_SIZE;

/// The VMM's fixed kernel arguments: serial console, keyboard-controller reset (which the VMM
/// turns into its own exit), reset one second after a panic, no PCI/ACPI probing, a single
/// 8250 port, and no i8042 probing beyond what `reboot=k` needs.
pub const BASE_CMDLINE: &str = "console=ttyS0 8250.nr_uarts=1 reboot=k panic=1 pci=off \
nomodules i8042.noaux i8042.nomux i8042.dumbkbd quiet";

/// A virtio-mmio device as the guest kernel learns it from the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioDeviceArg {
    /// Guest physical base address.
    pub base: u64,
    /// Window size in bytes.
    pub size: u64,
    /// Legacy IRQ (GSI).
    pub irq: u32,
}

/// The command line does not fit the guest kernel's `COMMAND_LINE_SIZE`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("kernel command line is {len} bytes, the guest accepts at most {max}")]
pub struct CmdlineTooLong {
    /// Length of the built command line.
    pub len: usize,
    /// Maximum length (without the NUL).
    pub max: usize,
}

/// Builds `BASE_CMDLINE` + one `virtio_mmio.device=` per device + the user's extra arguments.
pub fn build(devices: &[MmioDeviceArg], extra: &str) -> Result<String, CmdlineTooLong> {
    let mut s = String::from(BASE_CMDLINE);
    for d in devices {
        let size = if d.size % 1024 == 0 {
            format!("{}K", d.size / 1024)
        } else {
            d.size.to_string()
        };
        s.push_str(&format!(
            " virtio_mmio.device={size}@{:#x}:{}",
            d.base, d.irq
        ));
    }
    let extra = extra.trim();
    if !extra.is_empty() {
        s.push(' ');
        s.push_str(extra);
    }
    let max = CMDLINE_MAX_SIZE - 1;
    if s.len() > max {
        return Err(CmdlineTooLong { len: s.len(), max });
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_only() {
        assert_eq!(build(&[], "").unwrap(), BASE_CMDLINE);
        assert_eq!(build(&[], "   ").unwrap(), BASE_CMDLINE);
    }

    #[test]
    fn devices_and_extra() {
        let devs = [
            MmioDeviceArg {
                base: 0xd000_0000,
                size: 0x1000,
                irq: 5,
            },
            MmioDeviceArg {
                base: 0xd000_1000,
                size: 0x1000,
                irq: 6,
            },
        ];
        let s = build(&devs, " init=/bin/sh ").unwrap();
        assert_eq!(
            s,
            format!(
                "{BASE_CMDLINE} virtio_mmio.device=4K@0xd0000000:5 \
                 virtio_mmio.device=4K@0xd0001000:6 init=/bin/sh"
            )
        );
        assert!(s.starts_with("console=ttyS0 "));
        assert!(s.contains("reboot=k") && s.contains("panic=1"));
    }

    #[test]
    fn odd_size_is_written_in_bytes() {
        let d = [MmioDeviceArg {
            base: 0x1000,
            size: 512,
            irq: 9,
        }];
        assert!(build(&d, "")
            .unwrap()
            .ends_with("virtio_mmio.device=512@0x1000:9"));
    }

    #[test]
    fn too_long() {
        let extra = "x".repeat(CMDLINE_MAX_SIZE);
        let e = build(&[], &extra).unwrap_err();
        assert_eq!(e.max, CMDLINE_MAX_SIZE - 1);
        // Exactly at the limit is fine.
        let room = CMDLINE_MAX_SIZE - 1 - BASE_CMDLINE.len() - 1;
        assert!(build(&[], &"y".repeat(room)).is_ok());
        assert!(build(&[], &"y".repeat(room + 1)).is_err());
    }
}

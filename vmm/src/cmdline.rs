//! The guest kernel command line the VMM builds.

use linux_loader::cmdline::Cmdline;
use vm_memory::GuestAddress;

use crate::layout::CMDLINE_MAX_SIZE;

/// The VMM's fixed kernel arguments: serial console, keyboard-controller reset (which the VMM
/// turns into its own exit), a kernel oops made a panic and a reset one second after a panic
/// (an oopsed guest kernel may hold locks forever, e.g. a dead virtio-fs completion worker
/// stops every file request: ending the VM at once beats a guest that hangs), no PCI/ACPI
/// probing, a single 8250 port, and no i8042 probing beyond what `reboot=k` needs.
pub const BASE_CMDLINE: &str = "console=ttyS0 8250.nr_uarts=1 reboot=k panic=1 oops=panic \
pci=off nomodules i8042.noaux i8042.nomux i8042.dumbkbd quiet";

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

/// Why the command line cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CmdlineError {
    /// The command line does not fit the guest kernel's `COMMAND_LINE_SIZE`.
    #[error("kernel command line is {len} bytes, the guest accepts at most {max}")]
    TooLong {
        /// Length of the built command line.
        len: usize,
        /// Maximum length (without the NUL).
        max: usize,
    },
    /// linux-loader refused a `virtio_mmio.device=` entry (a zero-sized window).
    #[error("virtio-mmio device at {base:#x}: {reason}")]
    Device {
        /// The device's base address.
        base: u64,
        /// linux-loader's error.
        reason: String,
    },
}

/// Builds `BASE_CMDLINE` + one `virtio_mmio.device=` per device (rendered by linux-loader's
/// `Cmdline::add_virtio_mmio_device`: `4K@0xd0000000:5`) + the user's extra arguments.
pub fn build(devices: &[MmioDeviceArg], extra: &str) -> Result<String, CmdlineError> {
    let mut s = String::from(BASE_CMDLINE);
    if !devices.is_empty() {
        // No capacity limit here: the whole line is checked below.
        let mut entries = Cmdline::new(usize::MAX).map_err(|e| CmdlineError::Device {
            base: devices[0].base,
            reason: e.to_string(),
        })?;
        for d in devices {
            entries
                .add_virtio_mmio_device(d.size, GuestAddress(d.base), d.irq, None)
                .map_err(|e| CmdlineError::Device {
                    base: d.base,
                    reason: e.to_string(),
                })?;
        }
        let entries = entries.as_cstring().map_err(|e| CmdlineError::Device {
            base: devices[0].base,
            reason: e.to_string(),
        })?;
        s.push(' ');
        s.push_str(&entries.to_string_lossy());
    }
    let extra = extra.trim();
    if !extra.is_empty() {
        s.push(' ');
        s.push_str(extra);
    }
    let max = CMDLINE_MAX_SIZE - 1;
    if s.len() > max {
        return Err(CmdlineError::TooLong { len: s.len(), max });
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
        assert!(s.contains("reboot=k") && s.contains("panic=1") && s.contains("oops=panic"));
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
    fn zero_sized_window_is_refused() {
        let d = [MmioDeviceArg {
            base: 0x1000,
            size: 0,
            irq: 9,
        }];
        assert!(matches!(
            build(&d, ""),
            Err(CmdlineError::Device { base: 0x1000, .. })
        ));
    }

    #[test]
    fn too_long() {
        let extra = "x".repeat(CMDLINE_MAX_SIZE);
        let e = build(&[], &extra).unwrap_err();
        assert!(matches!(e, CmdlineError::TooLong { max, .. } if max == CMDLINE_MAX_SIZE - 1));
        // Exactly at the limit is fine.
        let room = CMDLINE_MAX_SIZE - 1 - BASE_CMDLINE.len() - 1;
        assert!(build(&[], &"y".repeat(room)).is_ok());
        assert!(build(&[], &"y".repeat(room + 1)).is_err());
    }
}

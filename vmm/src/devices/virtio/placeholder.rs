//! A placeholder virtio-mmio slot (`--placeholder-slots`, issue 14): a register window whose
//! `MagicValue` and `Version` read as for any device and whose `DeviceID` reads 0. Linux's
//! `virtio_mmio_probe` then returns `-ENODEV` without a message and leaves the platform device
//! (`virtio-mmio.N`) unbound. A VM restored from a snapshot gets its per-sandbox devices
//! (`--fs`, `--net`, `--disk`) in these slots, freshly reset; the guest probes them when the
//! slot is bound again (`/sys/bus/platform/drivers/virtio-mmio/bind`).

use super::{QueueConfig, VirtioDevice, VIRTIO_F_VERSION_1};

/// The device type a placeholder reports (`DeviceID` 0: "no device").
pub const PLACEHOLDER_DEVICE_ID: u32 = 0;

/// An empty slot: no queues, no configuration space, never activated.
#[derive(Debug, Default)]
pub struct PlaceholderDevice;

impl VirtioDevice for PlaceholderDevice {
    fn device_type(&self) -> u32 {
        PLACEHOLDER_DEVICE_ID
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[]
    }

    fn features(&self) -> u64 {
        1 << VIRTIO_F_VERSION_1
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    fn activate(&mut self, _features: u64, _queues: &[QueueConfig]) -> Result<(), String> {
        Err("a placeholder slot has no device".into())
    }

    fn reset(&mut self) {}

    fn snapshot_supported(&self) -> Result<(), String> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use vm_memory::{GuestAddress, GuestMemoryMmap};

    use super::*;
    use crate::devices::virtio::transport::{reg, MAGIC, VERSION};
    use crate::devices::virtio::MmioTransport;

    fn read(t: &mut MmioTransport<PlaceholderDevice>, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        t.read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    fn transport() -> MmioTransport<PlaceholderDevice> {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        MmioTransport::new(PlaceholderDevice, Arc::new(mem))
    }

    /// What Linux's virtio_mmio_probe reads: the magic and version of a modern device, then
    /// DeviceID 0, which makes it return -ENODEV silently.
    #[test]
    fn reads_as_an_absent_device() {
        let mut t = transport();
        assert_eq!(read(&mut t, reg::MAGIC), MAGIC);
        assert_eq!(read(&mut t, reg::MAGIC), 0x7472_6976, "\"virt\"");
        assert_eq!(read(&mut t, reg::VERSION), VERSION);
        assert_eq!(read(&mut t, reg::DEVICE_ID), 0);
        assert_eq!(read(&mut t, reg::QUEUE_NUM_MAX), 0, "no queues");
    }

    /// A guest that drives the empty slot anyway gets no device started, and its state is
    /// saved like any slot's (type 0, nothing active).
    #[test]
    fn never_starts_and_saves_as_type_0() {
        let mut t = transport();
        for s in [1u32, 3, 11, 15] {
            t.write(reg::STATUS, &s.to_le_bytes());
        }
        assert!(!t.is_active());
        let s = t.save_state().unwrap();
        assert_eq!(s.device_type, PLACEHOLDER_DEVICE_ID);
        assert!(!s.active && s.queues.is_empty());
        let mut fresh = transport();
        fresh.restore_state(&s).unwrap();
        assert_eq!(read(&mut fresh, reg::DEVICE_ID), 0);
    }
}

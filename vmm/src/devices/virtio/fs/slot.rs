//! A virtio-fs device without a backend yet (`--fs-slot`, for a VM that is to be saved as a
//! template). The guest's driver binds it at boot like any virtio-fs device (it reads the tag
//! and sets up both queues), but nothing is mounted on it and it serves nothing: chains the
//! guest might publish stay in its rings. A snapshot saves it with the transport's state and
//! its queues at `(0, 0)` (nothing taken, nothing returned); a restore with `--fs` (same tag)
//! puts a real [`super::FsDevice`] there, which takes over the driver's queues as they are.
//!
//! What that saves: without it, a template has an empty placeholder slot for virtio-fs and every
//! restored guest probes the device after the restore, about 90 register accesses, each a VM
//! exit (tens of milliseconds on a nested host; the template test's restore path).

use super::{
    both_queues_ready, read_fs_config, FsSlotConfig, NUM_QUEUES, SLOT_FEATURES, VIRTIO_ID_FS,
};
use crate::devices::virtio::{QueueConfig, VirtioDevice};

/// The virtio-fs device of a template VM, before its backend exists.
#[derive(Debug)]
pub struct FsSlotDevice {
    tag: String,
    queue_sizes: [u16; NUM_QUEUES],
    /// The guest's driver set DRIVER_OK (and has not reset the device since).
    bound: bool,
}

impl FsSlotDevice {
    /// The device `cfg` describes.
    pub fn new(cfg: &FsSlotConfig) -> Self {
        FsSlotDevice {
            tag: cfg.tag.clone(),
            queue_sizes: [cfg.queue_size; NUM_QUEUES],
            bound: false,
        }
    }
}

impl VirtioDevice for FsSlotDevice {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_FS
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn features(&self) -> u64 {
        SLOT_FEATURES
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_fs_config(&self.tag, offset, data);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    fn activate(&mut self, _features: u64, queues: &[QueueConfig]) -> Result<(), String> {
        both_queues_ready(queues)?;
        self.bound = true;
        Ok(())
    }

    fn reset(&mut self) {
        self.bound = false;
    }

    fn snapshot_supported(&self) -> Result<(), String> {
        // A template whose guest never bound the slot would give every restored guest a
        // share it cannot mount (and no probe after the restore): refused, named.
        if self.bound {
            Ok(())
        } else {
            Err(format!(
                "the guest has not bound the virtio-fs slot (tag {:?}): a restored guest could \
                 not mount it",
                self.tag
            ))
        }
    }

    fn queue_positions(&self) -> Vec<Option<(u16, u16)>> {
        // Nothing was ever taken from the rings nor returned.
        vec![Some((0, 0)); NUM_QUEUES]
    }

    fn identity(&self) -> Option<String> {
        Some(self.tag.clone())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use vm_memory::{GuestAddress, GuestMemoryMmap};

    use super::*;
    use crate::devices::virtio::transport::{reg, status};
    use crate::devices::virtio::MmioTransport;

    /// Binds `t` as Linux's virtio-fs driver does: VERSION_1, two queues of 256 at
    /// 0x10000 and 0x20000, DRIVER_OK.
    pub(crate) fn bind_like_a_driver<D: VirtioDevice>(t: &mut MmioTransport<D>) {
        let mut w = |offset, v: u32| t.write(offset, &v.to_le_bytes());
        let s = status::ACKNOWLEDGE | status::DRIVER;
        w(reg::STATUS, s);
        w(reg::DRIVER_FEATURES_SEL, 1);
        w(reg::DRIVER_FEATURES, 1); // VIRTIO_F_VERSION_1 (bit 32)
        w(reg::STATUS, s | status::FEATURES_OK);
        for (q, base) in [(0u32, 0x10000u32), (1, 0x20000)] {
            w(reg::QUEUE_SEL, q);
            w(reg::QUEUE_NUM, 256);
            w(reg::QUEUE_DESC_LOW, base);
            w(reg::QUEUE_AVAIL_LOW, base + 0x1000);
            w(reg::QUEUE_USED_LOW, base + 0x2000);
            w(reg::QUEUE_READY, 1);
        }
        w(reg::STATUS, s | status::FEATURES_OK | status::DRIVER_OK);
    }

    /// A driver binds the slot as it binds virtio-fs (tag, two queues, DRIVER_OK), and the
    /// saved state says where a backend takes over: both queues at (0, 0), the tag.
    #[test]
    fn a_driver_binds_it_and_a_snapshot_saves_it() {
        let mem = Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap());
        let cfg = FsSlotConfig {
            tag: "kata-rs".into(),
            queue_size: 256,
        };
        let mut t = MmioTransport::new(FsSlotDevice::new(&cfg), mem);
        assert!(t
            .save_state()
            .unwrap_err()
            .contains("not bound the virtio-fs slot"));
        let mut b = [0u8; 7];
        t.read(reg::DEVICE_ID, &mut b[..4]);
        assert_eq!(u32::from_le_bytes(b[..4].try_into().unwrap()), VIRTIO_ID_FS);
        t.read(reg::CONFIG, &mut b);
        assert_eq!(&b, b"kata-rs");
        bind_like_a_driver(&mut t);
        let s = t.save_state().unwrap();
        assert!(s.active && s.status & status::DRIVER_OK != 0, "{s:?}");
        assert_eq!(s.identity.as_deref(), Some("kata-rs"));
        assert!(s
            .queues
            .iter()
            .all(|q| q.ready && q.position == Some((0, 0))));
    }
}

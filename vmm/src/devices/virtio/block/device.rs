//! The virtio-blk device: features, config space, activation and queue events.

use super::*;

/// The virtio-blk device.
pub struct BlkDevice {
    mem: Arc<GuestMemoryMmap>,
    disk: Disk,
    queue: Option<Queue>,
    rekick: u32,
}

impl BlkDevice {
    /// A device for `disk` whose buffers live in `mem`.
    pub fn new(disk: Disk, mem: Arc<GuestMemoryMmap>) -> Self {
        BlkDevice {
            mem,
            disk,
            queue: None,
            rekick: 0,
        }
    }

    fn config(&self) -> [u8; 16] {
        let mut c = [0u8; 16];
        c[..8].copy_from_slice(&self.disk.sectors.to_le_bytes());
        // size_max (8..12) stays 0: not offered.
        c[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        c
    }
}

impl VirtioDevice for BlkDevice {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        let ro = if self.disk.read_only {
            1 << VIRTIO_BLK_F_RO
        } else {
            0
        };
        (1 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_RING_F_INDIRECT_DESC)
            | (1 << VIRTIO_BLK_F_SEG_MAX)
            | (1 << VIRTIO_BLK_F_FLUSH)
            | (1 << VIRTIO_RING_F_EVENT_IDX)
            | ro
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let cfg = self.config();
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(i))
                .and_then(|o| cfg.get(o).copied())
                .unwrap_or(0);
        }
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {
        // Nothing writable (no VIRTIO_BLK_F_CONFIG_WCE).
    }

    fn activate(&mut self, features: u64, queues: &[QueueConfig]) -> Result<(), String> {
        self.queue = Some(QueueConfig::build_single_queue(
            queues, &*self.mem, features,
        )?);
        Ok(())
    }

    fn reset(&mut self) {
        self.queue = None;
    }

    /// The disk file itself is not in a snapshot: a restore opens the `--disk` path given to
    /// it, whose content is the caller's business (a read-only disk, or a copy taken with the
    /// snapshot). In-flight requests cannot be: the `blkN` thread serves a kick under the
    /// transport's lock, which a snapshot holds until guest RAM is saved.
    fn snapshot_supported(&self) -> Result<(), String> {
        Ok(())
    }

    fn queue_positions(&self) -> Vec<Option<(u16, u16)>> {
        vec![crate::devices::virtio::device::position(
            self.queue.as_ref(),
        )]
    }

    fn set_queue_positions(&mut self, positions: &[Option<(u16, u16)>]) {
        crate::devices::virtio::device::set_position(self.queue.as_mut(), positions.first());
    }

    fn process_queue(&mut self, index: usize) -> bool {
        match (&mut self.queue, index) {
            (Some(q), 0) => {
                let pass = process_requests(&mut self.disk, q, &*self.mem);
                if pass.more {
                    self.rekick |= 1;
                }
                pass.interrupt
            }
            _ => false,
        }
    }

    fn rekick_queues(&mut self) -> u32 {
        std::mem::take(&mut self.rekick)
    }

    fn exit_report(&self) -> Option<String> {
        let s = &self.disk.stats;
        Some(format!(
            "virtio-blk: requests={} read_bytes={} write_bytes={} errors={}",
            s.requests, s.read_bytes, s.write_bytes, s.errors
        ))
    }
}

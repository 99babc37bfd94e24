//! The virtio-net device: features, config space (MAC), activation, queue and tap events.

use super::*;

/// The virtio-net device.
pub struct NetDevice<T: TapIo> {
    mem: Arc<GuestMemoryMmap>,
    mac: [u8; 6],
    tap: T,
    /// The tap failed (e.g. deleted on the host): no more polling.
    tap_failed: bool,
    queues: Option<NetQueues>,
    /// Counters since the VMM started.
    pub stats: NetStats,
}

impl<T: TapIo> NetDevice<T> {
    /// A device on `tap` with guest MAC `mac`, buffers in `mem`.
    pub fn new(tap: T, mac: [u8; 6], mem: Arc<GuestMemoryMmap>) -> Self {
        NetDevice {
            mem,
            mac,
            tap,
            tap_failed: false,
            queues: None,
            stats: NetStats::default(),
        }
    }

    fn tap_failure(&mut self, failed: bool) {
        if failed && !self.tap_failed {
            self.tap_failed = true;
            tracing::warn!("virtio-net: the tap device failed; the guest's network is down");
        }
    }

    /// The running queues (tests).
    pub fn queues(&self) -> Option<&NetQueues> {
        self.queues.as_ref()
    }
}

impl<T: TapIo> VirtioDevice for NetDevice<T> {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        FEATURES
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // Config space: mac[6]; status, max_virtqueue_pairs and mtu are not offered.
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(i))
                .and_then(|o| self.mac.get(o).copied())
                .unwrap_or(0);
        }
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {
        // The MAC is read-only without VIRTIO_NET_F_CTRL_MAC_ADDR (virtio 1.x).
    }

    fn activate(&mut self, features: u64, queues: &[QueueConfig]) -> Result<(), String> {
        let build = |i: usize| QueueConfig::build_ready_queue(queues, i, &*self.mem, features);
        self.queues = Some(NetQueues::new(build(RX_QUEUE)?, build(TX_QUEUE)?));
        Ok(())
    }

    fn reset(&mut self) {
        self.queues = None;
    }

    fn process_queue(&mut self, index: usize) -> bool {
        let Some(q) = &mut self.queues else {
            return false;
        };
        let (used, failed) = match index {
            RX_QUEUE if !self.tap_failed => q.rx_kick(&*self.mem, &mut self.tap, &mut self.stats),
            TX_QUEUE => q.process_tx(&*self.mem, &mut self.tap, &mut self.stats),
            _ => (false, false),
        };
        let notify = used && q.needs_notification(&*self.mem, index);
        self.tap_failure(failed);
        notify
    }

    fn exit_report(&self) -> Option<String> {
        let s = &self.stats;
        Some(format!(
            "virtio-net: rx_frames={} rx_dropped={} tx_frames={} tx_dropped={} bad_chains={} \
             rx_bytes={} tx_bytes={}",
            s.rx_frames,
            s.rx_dropped,
            s.tx_frames,
            s.tx_dropped,
            s.bad_chains,
            s.rx_bytes,
            s.tx_bytes
        ))
    }

    fn rekick_queues(&mut self) -> u32 {
        self.queues.as_mut().map_or(0, NetQueues::take_rekick)
    }

    /// The tap is the `--net` one given to the restored VMM (opened, or created, by name);
    /// the guest keeps the MAC its driver read at boot. A frame held for a missing RX buffer
    /// is not saved (lost, as on a wire).
    fn snapshot_supported(&self) -> Result<(), String> {
        Ok(())
    }

    fn queue_positions(&self) -> Vec<Option<(u16, u16)>> {
        self.queues
            .as_ref()
            .map_or(Vec::new(), |q| q.positions().to_vec())
    }

    fn set_queue_positions(&mut self, positions: &[Option<(u16, u16)>]) {
        if let Some(q) = &mut self.queues {
            q.set_positions(positions);
        }
    }

    fn backend_poll(&self) -> Option<(RawFd, i16)> {
        let q = self.queues.as_ref()?;
        let ev = if self.tap_failed { 0 } else { q.poll_events() };
        Some((self.tap.raw_fd(), ev))
    }

    fn process_backend(&mut self, revents: i16) -> bool {
        let Some(q) = &mut self.queues else {
            return false;
        };
        if self.tap_failed {
            return false;
        }
        // POLLERR/POLLHUP/POLLNVAL on a tap mean it is gone (unregistered): serve what can
        // still be served, then stop polling it (it would report the error forever).
        let err = revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0;
        let mut notify = false;
        let mut failed = err;
        if (revents & libc::POLLOUT != 0 || err) && q.tx_blocked {
            q.tx_unblocked();
            let (used, f) = q.process_tx(&*self.mem, &mut self.tap, &mut self.stats);
            notify |= used && q.needs_notification(&*self.mem, TX_QUEUE);
            failed |= f;
        }
        if (revents & libc::POLLIN != 0 || err) && !q.rx_stalled {
            let (used, f) = q.process_rx(&*self.mem, &mut self.tap, &mut self.stats);
            notify |= used && q.needs_notification(&*self.mem, RX_QUEUE);
            failed |= f;
        }
        self.tap_failure(failed);
        notify
    }
}

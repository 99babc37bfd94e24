//! virtio-net queue event handling: RX (tap -> guest) and TX (guest -> tap) with their
//! bounce buffers, back-pressure and counters.

use super::*;

/// Counters (for tests and debugging).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NetStats {
    /// Frames delivered to the guest.
    pub rx_frames: u64,
    /// Bytes of the frames delivered to the guest (without the virtio header).
    pub rx_bytes: u64,
    /// Frames read from the tap and dropped (larger than the guest's buffer).
    pub rx_dropped: u64,
    /// Frames written to the tap.
    pub tx_frames: u64,
    /// Bytes of the frames written to the tap.
    pub tx_bytes: u64,
    /// TX chains not sent (malformed, header only, too long, tap error).
    pub tx_dropped: u64,
    /// Chains refused as malformed (both queues).
    pub bad_chains: u64,
}

/// The running state: both queues and the RX/TX bookkeeping (dropped on reset).
pub struct NetQueues {
    rx: Queue,
    tx: Queue,
    /// A frame read from the tap that waits for an RX chain (`rx_buf[..len]`).
    rx_pending: Option<usize>,
    /// No RX chain was available: the tap is not polled until the guest kicks queue 0.
    pub(super) rx_stalled: bool,
    /// The tap refused a TX frame with EAGAIN: wait for POLLOUT before the next one.
    pub(super) tx_blocked: bool,
    /// Queues (bit i = queue i) left with chains when their budget ran out (see
    /// [`VirtioDevice::rekick_queues`]).
    rekick: u32,
    rx_buf: Vec<u8>,
    tx_buf: Vec<u8>,
}

impl NetQueues {
    /// Running state for the two configured queues.
    pub fn new(rx: Queue, tx: Queue) -> Self {
        NetQueues {
            rx,
            tx,
            rx_pending: None,
            rx_stalled: false,
            tx_blocked: false,
            rekick: 0,
            rx_buf: vec![0; MAX_FRAME_LEN],
            tx_buf: vec![0; MAX_FRAME_LEN],
        }
    }

    /// poll(2) events wanted on the tap now: POLLIN while the guest has RX buffers, POLLOUT
    /// while a TX frame waits for the tap.
    pub fn poll_events(&self) -> i16 {
        let mut ev = 0;
        if !self.rx_stalled {
            ev |= libc::POLLIN;
        }
        if self.tx_blocked {
            ev |= libc::POLLOUT;
        }
        ev
    }

    /// The queues' `(next_avail, next_used)`, RX then TX (for a snapshot; a frame waiting
    /// for an RX buffer is not saved: the restored VM has lost it, as a wire loses one).
    pub fn positions(&self) -> [Option<(u16, u16)>; 2] {
        use crate::devices::virtio::device::position;
        [position(Some(&self.rx)), position(Some(&self.tx))]
    }

    /// Puts the queues where a snapshot left them (RX, TX).
    pub fn set_positions(&mut self, p: &[Option<(u16, u16)>]) {
        use crate::devices::virtio::device::set_position;
        set_position(Some(&mut self.rx), p.get(RX_QUEUE));
        set_position(Some(&mut self.tx), p.get(TX_QUEUE));
    }

    /// Whether a frame read from the tap waits for an RX buffer.
    pub fn rx_pending(&self) -> bool {
        self.rx_pending.is_some()
    }

    /// Moves frames tap -> guest: the pending one first, then new ones from the tap, at most a
    /// queue's worth. Returns (used any RX chain, tap failed).
    pub fn process_rx<M: GuestMemory, T: TapIo>(
        &mut self,
        mem: &M,
        tap: &mut T,
        stats: &mut NetStats,
    ) -> (bool, bool) {
        let mut used = false;
        for _ in 0..self.rx.size() {
            let len = match self.rx_pending {
                Some(len) => len,
                None => match tap.read_frame(&mut self.rx_buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => return (used, true),
                },
            };
            self.rx_pending = Some(len);
            let (u, placed) = self.deliver(mem, len, stats);
            used |= u;
            if !placed {
                // No buffer: keep the frame, stop reading the tap until the guest kicks.
                self.rx_stalled = true;
                break;
            }
        }
        (used, false)
    }

    /// Places the pending frame (`rx_buf[..len]`) into the next good RX chain. Returns (used a
    /// chain, frame gone: delivered or dropped).
    ///
    /// With `EVENT_IDX` the driver kicks the receive queue only when we ask for it: out of
    /// buffers, `enable_notification` asks for a kick at the next one (our `avail_event`) and
    /// looks once more, since the driver may have posted buffers before it saw the request.
    /// While buffers last we never ask, so refills cost the guest no kicks.
    fn deliver<M: GuestMemory>(
        &mut self,
        mem: &M,
        len: usize,
        stats: &mut NetStats,
    ) -> (bool, bool) {
        let mut used = false;
        let mut looked_again = false;
        for _ in 0..self.rx.size() {
            let before = self.rx.next_avail();
            let Some(chain) = self.rx.pop_descriptor_chain(mem) else {
                if self.rx.event_idx_enabled()
                    && !looked_again
                    && self.rx.enable_notification(mem).unwrap_or(false)
                {
                    looked_again = true;
                    continue;
                }
                return (used, false);
            };
            let head = chain.head_index();
            let Some((descs, cap)) = checked_chain(mem, chain, true) else {
                stats.bad_chains += 1;
                if self.rx.add_used(mem, head, 0).is_err() {
                    return (used, false);
                }
                used = true;
                continue;
            };
            if cap < NET_HDR_LEN + len {
                // The guest's buffers are too small for this frame: drop the frame, keep the
                // chain for the next one.
                self.rx.set_next_avail(before);
                self.rx_pending = None;
                stats.rx_dropped += 1;
                return (used, true);
            }
            let mut hdr = [0u8; NET_HDR_LEN];
            hdr[10..12].copy_from_slice(&1u16.to_le_bytes()); // num_buffers
            let ok = scatter(mem, &descs, &[&hdr, &self.rx_buf[..len]]);
            let used_len = if ok { (NET_HDR_LEN + len) as u32 } else { 0 };
            if self.rx.add_used(mem, head, used_len).is_err() {
                return (used, false);
            }
            self.rx_pending = None;
            if ok {
                stats.rx_frames += 1;
                stats.rx_bytes += len as u64;
            } else {
                stats.rx_dropped += 1;
            }
            return (true, true);
        }
        (used, false)
    }

    /// The guest posted RX buffers (kick on queue 0): deliver what waits, read the tap again.
    pub fn rx_kick<M: GuestMemory, T: TapIo>(
        &mut self,
        mem: &M,
        tap: &mut T,
        stats: &mut NetStats,
    ) -> (bool, bool) {
        self.rx_stalled = false;
        self.process_rx(mem, tap, stats)
    }

    /// Sends the guest's TX chains to the tap, at most a queue's worth. Returns (used any TX
    /// chain, tap failed).
    ///
    /// With `EVENT_IDX`, the same loop as [`crate::devices::virtio::serve_available`]: serve,
    /// `enable_notification` (a kick for the next chain), look again; the budget spent with
    /// chains left marks the queue for a re-kick. A tap that is full (`EAGAIN`) ends the loop
    /// without asking for kicks: `POLLOUT` resumes it.
    pub fn process_tx<M: GuestMemory, T: TapIo>(
        &mut self,
        mem: &M,
        tap: &mut T,
        stats: &mut NetStats,
    ) -> (bool, bool) {
        if self.tx_blocked {
            return (false, false);
        }
        let budget = self.tx.size();
        let event_idx = self.tx.event_idx_enabled();
        let mut done: u16 = 0;
        let mut idle_looks = 0;
        let mut used = false;
        let mut failed = false;
        loop {
            let start = done;
            if event_idx {
                // A no-op in event-idx mode: the stale avail_event suppresses kicks.
                let _ = self.tx.disable_notification(mem);
            }
            let stop = self.tx_pass(mem, tap, stats, budget, &mut done, &mut used, &mut failed);
            if stop || !event_idx {
                break;
            }
            if !self.tx.enable_notification(mem).unwrap_or(false) {
                break;
            }
            if done >= budget {
                self.rekick |= 1 << TX_QUEUE;
                break;
            }
            if done == start {
                idle_looks += 1;
                if idle_looks > 1 {
                    // An avail index that nothing pops: the driver's next kick tries again.
                    break;
                }
            }
        }
        (used, failed)
    }

    /// One pass over the available TX chains until `*done` reaches `budget`; true when the
    /// caller must stop (the tap is full, or the used ring is not writable).
    #[allow(clippy::too_many_arguments)]
    fn tx_pass<M: GuestMemory, T: TapIo>(
        &mut self,
        mem: &M,
        tap: &mut T,
        stats: &mut NetStats,
        budget: u16,
        done: &mut u16,
        used: &mut bool,
        failed: &mut bool,
    ) -> bool {
        while *done < budget {
            *done += 1;
            let before = self.tx.next_avail();
            let Some(chain) = self.tx.pop_descriptor_chain(mem) else {
                *done -= 1;
                return false;
            };
            let head = chain.head_index();
            match checked_chain(mem, chain, false) {
                Some((descs, total)) if (NET_HDR_LEN..=MAX_CHAIN_LEN).contains(&total) => {
                    let len = total - NET_HDR_LEN;
                    // A header-only chain carries no frame; a failed tap takes none.
                    if len == 0
                        || *failed
                        || !gather(mem, &descs, NET_HDR_LEN, &mut self.tx_buf[..len])
                    {
                        stats.tx_dropped += 1;
                    } else {
                        match tap.write_frame(&self.tx_buf[..len]) {
                            Ok(_) => {
                                stats.tx_frames += 1;
                                stats.tx_bytes += len as u64;
                            }
                            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                                // The tap is full: put the chain back, wait for POLLOUT.
                                self.tx.set_next_avail(before);
                                self.tx_blocked = true;
                                return true;
                            }
                            Err(e) if e.kind() == ErrorKind::Interrupted => {
                                self.tx.set_next_avail(before);
                                continue;
                            }
                            // EIO (interface down) and the like: the frame is lost, as on a
                            // cable nobody listens to. EBADFD: the tap is gone.
                            Err(e) => {
                                stats.tx_dropped += 1;
                                *failed = e.raw_os_error() == Some(libc::EBADFD);
                            }
                        }
                    }
                }
                _ => {
                    stats.bad_chains += 1;
                    stats.tx_dropped += 1;
                }
            }
            // The device writes nothing into TX buffers: used length 0.
            if self.tx.add_used(mem, head, 0).is_err() {
                return true;
            }
            *used = true;
        }
        false
    }

    /// The tap is writable again after EAGAIN.
    pub fn tx_unblocked(&mut self) {
        self.tx_blocked = false;
    }

    /// Whether the driver wants an interrupt for used buffers on `queue`.
    pub(super) fn needs_notification<M: GuestMemory>(&mut self, mem: &M, queue: usize) -> bool {
        let q = if queue == RX_QUEUE {
            &mut self.rx
        } else {
            &mut self.tx
        };
        q.needs_notification(mem).unwrap_or(true)
    }

    /// Queues marked for a re-kick since the last call (cleared).
    pub fn take_rekick(&mut self) -> u32 {
        std::mem::take(&mut self.rekick)
    }
}

//! virtio-vsock (device id 19) served by the VMM itself: Firecracker-style "hybrid vsock".
//!
//! The guest sees an ordinary virtio-vsock device with CID `--vsock-cid`; the host side is
//! not AF_VSOCK but a Unix stream socket (`--vsock-uds PATH`, mode 0600, created before the
//! jail). A host client connects to PATH, writes `CONNECT <port>\n`; the VMM sends the guest a
//! connection request to that port and answers `OK <host port>\n` when the guest accepts (or
//! closes the Unix connection when the guest refuses or does not answer in time). Then bytes
//! flow both ways. No `/dev/vhost-vsock`: the host kernel's vsock knows nothing of this guest,
//! so no other host process (any user, any container) can reach it with AF_VSOCK; only who can
//! open PATH (its owner, root) can.
//!
//! Queues: 0 rx (host -> guest packets), 1 tx (guest -> host), 2 event (used once, after a
//! snapshot restore: `VIRTIO_VSOCK_EVENT_TRANSPORT_RESET`, see [`HvsockDevice::after_restore`],
//! unless the snapshot was idle). Served on the main thread like virtio-net: the tx and rx
//! kicks (ioeventfds), and the [`Muxer`]'s epoll fd, which the event loop polls as this
//! device's backend fd. The protocol (handshake, connection states, credit) is [`muxer`]; the
//! header is [`packet`].
//! Guest-initiated connections are refused with RST.

pub mod muxer;
pub mod packet;

use std::os::fd::RawFd;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

use crate::devices::virtio::device::DeviceNote;
use crate::devices::virtio::queue::{checked_chain, gather, scatter};
use crate::devices::virtio::{QueueConfig, VirtioDevice, VIRTIO_F_VERSION_1};
pub use muxer::Muxer;
use packet::{Header, HDR_LEN, MAX_PAYLOAD};

pub use virtio_bindings::virtio_ids::VIRTIO_ID_VSOCK;
/// Size of each queue we offer.
pub const QUEUE_SIZE: u16 = 256;
/// Queue indexes.
pub const RX_QUEUE: usize = 0;
/// Transmit queue index.
pub const TX_QUEUE: usize = 1;
/// Event queue index.
pub const EVENT_QUEUE: usize = 2;
/// `struct virtio_vsock_event` id: the transport was reset (every connection is gone; the
/// guest also reads the CID again).
pub const VIRTIO_VSOCK_EVENT_TRANSPORT_RESET: u32 = 0;
/// Longest wait, after a restore's transport reset, for the guest to show it has handled it
/// (it posts its event buffer again) before packets for it flow anyway.
pub const RESET_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
/// Feature bits offered: virtio 1.x only (no seqpacket, no event-idx for now).
pub const FEATURES: u64 = 1 << VIRTIO_F_VERSION_1;

/// Encodes the vsock config space (le64 guest_cid) and copies the requested slice of it.
pub fn read_cid_config(cid: u64, offset: u64, data: &mut [u8]) {
    let cfg = cid.to_le_bytes();
    for (i, b) in data.iter_mut().enumerate() {
        *b = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(i))
            .and_then(|o| cfg.get(o).copied())
            .unwrap_or(0);
    }
}

/// Binds the host side at `path` (a stale socket there is replaced; any other file is an
/// error), mode 0600, non-blocking. Before the jail: the path is on the host.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    crate::unix_socket::bind_private(path, "--vsock-uds")
}

/// Counters of the device side (chains).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VsockStats {
    /// Packets delivered to the guest.
    pub rx_pkts: u64,
    /// Packets taken from the guest.
    pub tx_pkts: u64,
    /// Chains refused as malformed (direction, outside RAM, too short).
    pub bad_chains: u64,
}

/// The running queues (dropped on reset).
struct Queues {
    rx: Queue,
    tx: Queue,
    /// The event queue, when the driver made it ready (Linux does).
    event: Option<Queue>,
}

/// The virtio-vsock device.
pub struct HvsockDevice {
    cid: u64,
    mem: Arc<GuestMemoryMmap>,
    muxer: Muxer,
    queues: Option<Queues>,
    buf: Vec<u8>,
    rekick: u32,
    /// The event queue's avail index when a restore's transport reset was sent, until the
    /// guest has handled it (see `check_reset_handled`).
    reset_sent_at: Option<u16>,
    /// Counters since the VMM started.
    pub stats: VsockStats,
}

impl HvsockDevice {
    /// The device for guest CID `cid`, its host side `listener` (None: nothing on the host can
    /// connect; the guest just has a vsock device).
    pub fn new(
        cid: u64,
        listener: Option<UnixListener>,
        mem: Arc<GuestMemoryMmap>,
    ) -> std::io::Result<Self> {
        Ok(HvsockDevice {
            cid,
            mem,
            muxer: Muxer::new(cid, listener)?,
            queues: None,
            buf: vec![0; MAX_PAYLOAD],
            rekick: 0,
            reset_sent_at: None,
            stats: VsockStats::default(),
        })
    }

    /// The protocol side (tests).
    pub fn muxer(&self) -> &Muxer {
        &self.muxer
    }

    /// After a restore's transport reset: once the guest has posted an event buffer again
    /// (its driver does that after handling the event, connections reset), packets for it
    /// flow.
    fn check_reset_handled(&mut self) {
        let (Some(idx0), Some(q)) = (self.reset_sent_at, &self.queues) else {
            return;
        };
        let now = q.event.as_ref().and_then(|e| {
            e.avail_idx(&*self.mem, std::sync::atomic::Ordering::Acquire)
                .ok()
        });
        if now.is_none_or(|i| i.0 != idx0) || !self.muxer.rx_held() {
            self.reset_sent_at = None;
            self.muxer.release_rx();
        }
    }

    /// Packets waiting for the guest go into its rx buffers, at most a queue's worth.
    fn fill_rx(&mut self) -> bool {
        self.check_reset_handled();
        let Some(q) = &mut self.queues else {
            return false;
        };
        let mem = &*self.mem;
        let mut used = false;
        let budget = q.rx.size();
        let mut done = 0;
        while self.muxer.has_rx() {
            if done == budget {
                self.rekick |= 1 << RX_QUEUE;
                break;
            }
            done += 1;
            let before = q.rx.next_avail();
            let Some(chain) = q.rx.pop_descriptor_chain(mem) else {
                break; // the guest's next rx kick resumes
            };
            let head = chain.head_index();
            let len = match checked_chain(mem, chain, true) {
                Some((descs, cap)) if cap >= HDR_LEN => {
                    let room = (cap - HDR_LEN).min(MAX_PAYLOAD);
                    let Some((h, n)) = self.muxer.next_rx(&mut self.buf[..room]) else {
                        q.rx.set_next_avail(before);
                        break;
                    };
                    if scatter(mem, &descs, &[&h.encode(), &self.buf[..n]]) {
                        self.stats.rx_pkts += 1;
                        (HDR_LEN + n) as u32
                    } else {
                        0
                    }
                }
                _ => {
                    self.stats.bad_chains += 1;
                    0
                }
            };
            if q.rx.add_used(mem, head, len).is_err() {
                break;
            }
            used = true;
        }
        used && q.rx.needs_notification(mem).unwrap_or(true)
    }

    /// The guest's packets, at most a queue's worth.
    fn process_tx(&mut self) -> bool {
        let Some(q) = &mut self.queues else {
            return false;
        };
        let mem = &*self.mem;
        let mut used = false;
        let budget = q.tx.size();
        for done in 1..=budget {
            let Some(chain) = q.tx.pop_descriptor_chain(mem) else {
                break;
            };
            let head = chain.head_index();
            match checked_chain(mem, chain, false) {
                Some((descs, total)) if total >= HDR_LEN => {
                    let mut hb = [0u8; HDR_LEN];
                    let room = (total - HDR_LEN).min(MAX_PAYLOAD);
                    let ok = gather(mem, &descs, 0, &mut hb) && {
                        let h = Header::parse(&hb);
                        // The header's length, as far as the chain holds it; the muxer
                        // refuses a length the chain does not have.
                        let n = (h.len as usize).min(room);
                        let got = gather(mem, &descs, HDR_LEN, &mut self.buf[..n]);
                        if got {
                            self.stats.tx_pkts += 1;
                            self.muxer.recv_pkt(&h, &self.buf[..n]);
                        }
                        got
                    };
                    if !ok {
                        self.stats.bad_chains += 1;
                    }
                }
                _ => self.stats.bad_chains += 1,
            }
            if q.tx.add_used(mem, head, 0).is_err() {
                return used;
            }
            used = true;
            if done == budget {
                // Budget spent, chains may be left: come back after the other fds.
                self.rekick |= 1 << TX_QUEUE;
            }
        }
        used && q.tx.needs_notification(mem).unwrap_or(true)
    }
}

impl VirtioDevice for HvsockDevice {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        FEATURES
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_cid_config(self.cid, offset, data);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {
        // The vsock config space is read-only.
    }

    fn activate(&mut self, features: u64, queues: &[QueueConfig]) -> Result<(), String> {
        let build = |i: usize| QueueConfig::build_ready_queue(queues, i, &*self.mem, features);
        self.queues = Some(Queues {
            rx: build(RX_QUEUE)?,
            tx: build(TX_QUEUE)?,
            event: match queues.get(EVENT_QUEUE) {
                Some(q) if q.ready => Some(q.build_queue(&*self.mem, features)?),
                _ => None,
            },
        });
        Ok(())
    }

    fn reset(&mut self) {
        self.queues = None;
        self.reset_sent_at = None;
        self.muxer.release_rx();
        self.muxer.reset();
    }

    fn process_queue(&mut self, index: usize) -> bool {
        match index {
            RX_QUEUE => self.fill_rx(),
            TX_QUEUE => {
                let tx = self.process_tx();
                // Replies (responses, credit, resets) and data the new credit allows.
                self.fill_rx() | tx
            }
            // The guest posted an event buffer: after a transport reset, that means handled.
            EVENT_QUEUE => self.fill_rx(),
            _ => false,
        }
    }

    fn backend_poll(&self) -> Option<(RawFd, i16)> {
        self.queues.as_ref()?;
        Some((self.muxer.epoll_fd(), libc::POLLIN))
    }

    fn process_backend(&mut self, _revents: i16) -> bool {
        self.muxer.poll_host(Instant::now());
        self.fill_rx()
    }

    fn rekick_queues(&mut self) -> u32 {
        std::mem::take(&mut self.rekick)
    }

    fn snapshot_supported(&self) -> Result<(), String> {
        Ok(())
    }

    fn queue_positions(&self) -> Vec<Option<(u16, u16)>> {
        use crate::devices::virtio::device::position;
        match &self.queues {
            Some(q) => vec![
                position(Some(&q.rx)),
                position(Some(&q.tx)),
                position(q.event.as_ref()),
            ],
            None => Vec::new(),
        }
    }

    fn set_queue_positions(&mut self, positions: &[Option<(u16, u16)>]) {
        use crate::devices::virtio::device::set_position;
        if let Some(q) = &mut self.queues {
            set_position(Some(&mut q.rx), positions.get(RX_QUEUE));
            set_position(Some(&mut q.tx), positions.get(TX_QUEUE));
            set_position(q.event.as_mut(), positions.get(EVENT_QUEUE));
        }
    }

    /// Where the host ports stand, and whether the host side is idle (no connection, no RST
    /// owed, no earlier restore's reset unhandled): see [`DeviceNote::Vsock`].
    fn save_note(&self) -> Option<DeviceNote> {
        self.queues.as_ref()?;
        Some(DeviceNote::Vsock {
            cid: self.cid,
            next_port: self.muxer.next_port(),
            idle: self.muxer.idle() && self.reset_sent_at.is_none(),
        })
    }

    /// The host side of every connection the snapshot had is gone (a restored VMM starts with
    /// a fresh muxer), so the guest is told as Firecracker tells it: one
    /// `VIRTIO_VSOCK_EVENT_TRANSPORT_RESET` in its event queue. Linux then resets every
    /// connected socket (listeners stay) and reads the CID again. Host ports continue from
    /// the saved ones when the CID is the same. No reset when the save was idle with this CID
    /// ([`DeviceNote::Vsock`]): the guest has no connection to reset and its CID stands, so
    /// host connections need not wait for it (15-35 ms of a template start on the emulated
    /// node).
    fn after_restore(&mut self, note: Option<&DeviceNote>) -> bool {
        if let Some(DeviceNote::Vsock {
            cid,
            next_port,
            idle,
        }) = note
        {
            if *cid == self.cid && self.muxer.continue_ports_at(*next_port) && *idle {
                tracing::debug!("virtio-vsock: idle at the save, no transport reset");
                return false;
            }
        }
        let Some(q) = self.queues.as_mut().and_then(|q| q.event.as_mut()) else {
            tracing::warn!("virtio-vsock: no event queue for the transport reset");
            return false;
        };
        let mem = &*self.mem;
        let Some(chain) = q.pop_descriptor_chain(mem) else {
            tracing::warn!("virtio-vsock: no event buffer for the transport reset");
            return false;
        };
        let head = chain.head_index();
        let event = VIRTIO_VSOCK_EVENT_TRANSPORT_RESET.to_le_bytes();
        let len = match checked_chain(mem, chain, true) {
            Some((descs, cap)) if cap >= event.len() && scatter(mem, &descs, &[&event]) => {
                event.len() as u32
            }
            _ => {
                self.stats.bad_chains += 1;
                0
            }
        };
        if q.add_used(mem, head, len).is_err() {
            return false;
        }
        // Host connections made from now on wait until the guest has handled the reset (a
        // request it saw first would be reset with the old connections): the guest's driver
        // posts the event buffer again when done, moving the avail index on from here.
        if let Ok(idx) = q.avail_idx(mem, std::sync::atomic::Ordering::Acquire) {
            self.reset_sent_at = Some(idx.0);
            let now = Instant::now();
            self.muxer.hold_rx(now + RESET_WAIT, now);
        }
        q.needs_notification(mem).unwrap_or(true)
    }

    fn exit_report(&self) -> Option<String> {
        let s = &self.stats;
        let m = &self.muxer.stats;
        Some(
            format!(
                "virtio-vsock: accepted={} established={} refused={} timeouts={} over_limit={} \
             bad_handshakes={} guest_requests={} bad_packets={} violations={} \
             resets_dropped={} to_guest={} to_host={} holds_expired={} rx_pkts={} tx_pkts={} \
             bad_chains={}",
                m.accepted,
                m.established,
                m.refused,
                m.timeouts,
                m.over_limit,
                m.bad_handshakes,
                m.guest_requests,
                m.bad_packets,
                m.violations,
                m.resets_dropped,
                m.to_guest,
                m.to_host,
                m.holds_expired,
                s.rx_pkts,
                s.tx_pkts,
                s.bad_chains
            ) + "\nkata-vmm: "
                + &self.muxer.conn_report()
                + &self.queues.as_ref().map_or(String::new(), |q| {
                    let avail = |q: &virtio_queue::Queue| {
                        q.avail_idx(&*self.mem, std::sync::atomic::Ordering::Acquire)
                            .map_or("?".to_string(), |i| i.0.to_string())
                    };
                    // The guest's avail index ahead of next_avail: buffers it published that
                    // were never taken.
                    format!(
                    " | rx_queue next_avail={} avail_idx={} tx_queue next_avail={} avail_idx={}",
                    q.rx.next_avail(),
                    avail(&q.rx),
                    q.tx.next_avail(),
                    avail(&q.tx)
                )
                }),
        )
    }
}

#[cfg(test)]
mod tests;

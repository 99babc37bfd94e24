//! virtio-net (network device, id 1) on a host tap device, served by the VMM's main thread.
//!
//! `--net tap=NAME[,mac=MAC]`: at startup (before the jail) the VMM opens `/dev/net/tun` and
//! attaches to the tap `NAME` with `TUNSETIFF` (`IFF_TAP | IFF_NO_PI`, no `IFF_VNET_HDR`, no
//! offloads). A tap that does not exist yet is created by that call and is not persistent: it
//! vanishes with the VMM's fd. A tap made beforehand (`ip tuntap add`, by the shim or CNI) is
//! attached and left as it was. The tap stays in the host's network namespace (the jail's new
//! namespace does not affect an open fd), where the host configures its address and routes.
//!
//! Two queues: 0 = receiveq (host -> guest), 1 = transmitq (guest -> host). Every frame carries
//! the 12-byte `virtio_net_hdr` of virtio 1.x in front; without offloads the device ignores
//! the guest's header on TX and writes a zero header (`num_buffers` 1) on RX.
//!
//! - **TX** (kick on queue 1): each chain is checked before anything is sent: every descriptor
//!   device-readable and inside guest RAM, the chain not cut short (a loop or a link out of the
//!   table), at least the header and at most [`MAX_CHAIN_LEN`] bytes. The frame is gathered
//!   into a bounce buffer and written to the tap with one `write(2)`. A bad chain or a
//!   header-only chain is returned unsent. If the tap says `EAGAIN`, the chain is put back and
//!   the event loop waits for `POLLOUT` on the tap (no busy loop).
//! - **RX**: the tap is polled for `POLLIN` only while the guest has posted buffers. A frame is
//!   read with one `read(2)` into a bounce buffer, then copied into the next chain (every
//!   descriptor device-writable and inside guest RAM; a bad chain is returned with used length
//!   0 and the frame waits for the next chain). When no chain is available the frame is kept,
//!   the device stops polling the tap, and the guest's next kick on queue 0 delivers it
//!   (back-pressure: the tap's own queue holds the rest; no frame read from the tap is lost
//!   while the guest has buffers). A frame larger than the chain it gets is dropped and the
//!   chain is kept for the next frame.
//! - One pass handles at most one queue's worth of chains or frames; poll is level-triggered,
//!   so the rest comes in the next round of the event loop after the other fds were served.
//! - A tap that fails (deleted on the host: `POLLERR`, `EBADFD`) is no longer polled; TX
//!   frames are then dropped. Nothing the guest does can make the VMM panic or spin.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;

use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryMmap, Permissions};

use crate::devices::virtio::{
    QueueConfig, VirtioDevice, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX,
    VIRTIO_RING_F_INDIRECT_DESC,
};

pub use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
/// Size of each queue we offer.
pub const QUEUE_SIZE: u16 = 256;
/// Queue indexes.
pub const RX_QUEUE: usize = 0;
/// Transmit queue index.
pub const TX_QUEUE: usize = 1;
/// Length of `virtio_net_hdr` with `num_buffers` (virtio 1.x, `VIRTIO_F_VERSION_1`).
pub const NET_HDR_LEN: usize = 12;
/// Largest Ethernet frame moved either way (a 64 KiB IP packet, Ethernet and VLAN headers).
pub const MAX_FRAME_LEN: usize = 65_550;
/// Largest TX chain accepted: header + frame.
pub const MAX_CHAIN_LEN: usize = NET_HDR_LEN + MAX_FRAME_LEN;
/// Most `--net` devices on one VM (virtio-mmio slots and IRQs are limited).
pub const MAX_NETS: usize = 4;
/// Longest interface name (`IFNAMSIZ` - 1).
pub const MAX_IFNAME_LEN: usize = 15;

use virtio_bindings::virtio_net::VIRTIO_NET_F_MAC;
/// Feature bits offered: virtio 1.x, a MAC in config space, indirect descriptors, event-idx
/// notification suppression. No checksum/segmentation offloads, no mergeable RX buffers, no
/// control queue.
pub const FEATURES: u64 = (1 << VIRTIO_F_VERSION_1)
    | (1 << VIRTIO_NET_F_MAC)
    | (1 << VIRTIO_RING_F_INDIRECT_DESC)
    | (1 << VIRTIO_RING_F_EVENT_IDX);

/// One `--net tap=NAME[,mac=MAC]` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// Host tap interface name.
    pub tap: String,
    /// Guest MAC address; a locally administered one is made up when not given.
    pub mac: Option<[u8; 6]>,
}

/// Parses `tap=NAME[,mac=MAC]` (clap value parser of `--net`).
pub fn parse_net(s: &str) -> Result<NetConfig, String> {
    let mut tap = None;
    let mut mac = None;
    for kv in s.split(',') {
        match kv.split_once('=') {
            Some(("tap", v)) if tap.is_none() => tap = Some(check_ifname(v)?),
            Some(("mac", v)) if mac.is_none() => mac = Some(parse_mac(v)?),
            Some(("tap" | "mac", _)) => return Err(format!("{kv:?} given twice")),
            _ => {
                return Err(format!(
                    "unknown net option {kv:?} (expected tap=NAME or mac=MAC)"
                ))
            }
        }
    }
    let tap = tap.ok_or("tap=NAME is required")?;
    Ok(NetConfig { tap, mac })
}

/// An interface name the kernel accepts: 1..=15 bytes of `[A-Za-z0-9_.-]`, not `.`/`..`.
fn check_ifname(v: &str) -> Result<String, String> {
    let ok = !v.is_empty()
        && v.len() <= MAX_IFNAME_LEN
        && v != "."
        && v != ".."
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok {
        Ok(v.to_string())
    } else {
        Err(format!(
            "invalid tap name {v:?} (1-{MAX_IFNAME_LEN} characters of A-Z a-z 0-9 _ . -)"
        ))
    }
}

/// `aa:bb:cc:dd:ee:ff`, unicast and not all zeros.
pub fn parse_mac(v: &str) -> Result<[u8; 6], String> {
    let bad = || format!("invalid MAC {v:?} (expected a unicast aa:bb:cc:dd:ee:ff)");
    let parts: Vec<&str> = v.split(':').collect();
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (m, p) in mac.iter_mut().zip(parts) {
        if p.len() != 2 {
            return Err(bad());
        }
        *m = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if mac[0] & 1 != 0 || mac == [0; 6] {
        return Err(bad());
    }
    Ok(mac)
}

/// A locally administered unicast MAC `02:6b:72:xx:xx:xx` ("kr") with random low bytes.
pub fn random_mac() -> [u8; 6] {
    let mut mac = [0x02, 0x6b, 0x72, 0, 0, 0];
    if !crate::devices::virtio::rng::host_random(&mut mac[3..]) {
        mac[3..].copy_from_slice(&std::process::id().to_le_bytes()[..3]);
    }
    mac
}

/// The host side of the device: where frames go and come from.
pub trait TapIo: Send {
    /// Reads one frame (non-blocking: `WouldBlock` when there is none).
    fn read_frame(&mut self, buf: &mut [u8]) -> std::io::Result<usize>;
    /// Writes one frame (non-blocking: `WouldBlock` when the tap cannot take it now).
    fn write_frame(&mut self, frame: &[u8]) -> std::io::Result<usize>;
    /// The fd the event loop polls.
    fn raw_fd(&self) -> RawFd;
}

/// An open tap device (`/dev/net/tun` attached with `TUNSETIFF`).
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

const TUNSETIFF: libc::c_ulong = 0x4004_54ca; // _IOW('T', 202, int)
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;

/// `struct ifreq` as TUNSETIFF reads it: the name and the flags, padded to 40 bytes.
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

impl Tap {
    /// Opens `/dev/net/tun` and attaches to (or creates) tap `name`, non-blocking.
    pub fn open(name: &str) -> Result<Self, String> {
        let name = check_ifname(name)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|e| format!("cannot open /dev/net/tun (modprobe tun): {e}"))?;
        let mut req = IfReq {
            name: [0; 16],
            flags: IFF_TAP | IFF_NO_PI,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq` (40 bytes on x86_64); `req` is a
        // live, properly sized repr(C) struct for the whole call, and the fd is ours.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req) };
        if rc < 0 {
            return Err(format!(
                "tap {name}: TUNSETIFF: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(Tap { file, name })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl TapIo for Tap {
    fn read_frame(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.file.read(buf)
    }
    fn write_frame(&mut self, frame: &[u8]) -> std::io::Result<usize> {
        self.file.write(frame)
    }
    fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

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
    rx_stalled: bool,
    /// The tap refused a TX frame with EAGAIN: wait for POLLOUT before the next one.
    tx_blocked: bool,
    /// Queues (bit i = queue i) left with chains when their budget ran out (see
    /// [`VirtioDevice::rekick_queues`]).
    rekick: u32,
    rx_buf: Vec<u8>,
    tx_buf: Vec<u8>,
}

/// Reads (device-readable) or writes (device-writable) chain descriptors, checked: direction,
/// every buffer inside guest memory, not cut short. None when the chain is malformed.
pub(crate) fn checked_chain<M: GuestMemory>(
    mem: &M,
    chain: virtio_queue::DescriptorChain<&M>,
    writable: bool,
) -> Option<(Vec<Descriptor>, usize)> {
    let perm = if writable {
        Permissions::Write
    } else {
        Permissions::Read
    };
    let mut descs = Vec::new();
    let mut total: usize = 0;
    let mut cut = true;
    for d in chain {
        if d.is_write_only() != writable {
            return None;
        }
        if d.len() > 0 && !mem.check_range(d.addr(), d.len() as usize, perm) {
            return None;
        }
        total = total.saturating_add(d.len() as usize);
        cut = d.has_next();
        descs.push(d);
    }
    // Empty, or the walk stopped on a descriptor that still links on (a loop, a link outside
    // the table, more descriptors than the queue has): malformed.
    if descs.is_empty() || cut {
        return None;
    }
    Some((descs, total))
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
    fn needs_notification<M: GuestMemory>(&mut self, mem: &M, queue: usize) -> bool {
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

/// Copies `parts` one after the other into the (checked, writable) descriptors.
pub(crate) fn scatter<M: GuestMemory>(mem: &M, descs: &[Descriptor], parts: &[&[u8]]) -> bool {
    let mut di = 0;
    let mut doff: usize = 0;
    for part in parts {
        let mut p: &[u8] = part;
        while !p.is_empty() {
            let Some(d) = descs.get(di) else {
                return false;
            };
            let room = d.len() as usize - doff;
            if room == 0 {
                di += 1;
                doff = 0;
                continue;
            }
            let n = room.min(p.len());
            let Some(at) = d.addr().0.checked_add(doff as u64) else {
                return false;
            };
            if mem.write_slice(&p[..n], GuestAddress(at)).is_err() {
                return false;
            }
            p = &p[n..];
            doff += n;
        }
    }
    true
}

/// Copies the chain's bytes from offset `skip` into `out` (exactly `out.len()` bytes).
pub(crate) fn gather<M: GuestMemory>(
    mem: &M,
    descs: &[Descriptor],
    mut skip: usize,
    out: &mut [u8],
) -> bool {
    let mut o = 0;
    for d in descs {
        let len = d.len() as usize;
        if skip >= len {
            skip -= len;
            continue;
        }
        let n = (len - skip).min(out.len() - o);
        let Some(at) = d.addr().0.checked_add(skip as u64) else {
            return false;
        };
        if mem
            .read_slice(&mut out[o..o + n], GuestAddress(at))
            .is_err()
        {
            return false;
        }
        o += n;
        skip = 0;
        if o == out.len() {
            break;
        }
    }
    o == out.len()
}

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
            eprintln!(
                "kata-vmm: warning: virtio-net: the tap device failed; the guest's network is down"
            );
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

#[cfg(test)]
mod tests;

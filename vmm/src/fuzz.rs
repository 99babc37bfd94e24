//! Fuzz targets for everything the guest (and a host client of the vsock socket) can feed
//! the VMM, run by `cargo test` through the `kata-rs-fuzz` driver (see docs/security.md,
//! "Fuzzing"): each for `KATA_RS_FUZZ_SECS` seconds (1 by default).
//!
//! - `mmio_registers`: arbitrary MMIO reads and writes (any offset, any size) against an
//!   [`MmioTransport`] with a real device behind it (rng, blk, net, console or vsock), mixed
//!   with kicks, backend events and guest memory scribbles. Invariants after every access:
//!   DRIVER_OK is set exactly when the device is active, an active device's ready queues are
//!   valid, FEATURES_OK means the driver's features are offered ones with VERSION_1.
//! - `chains_<device>`: a correctly activated device whose descriptor tables, avail rings,
//!   indexes and buffers are arbitrary (loops, links out of the table, indirect tables,
//!   huge lengths, addresses outside RAM), kicked repeatedly while the "guest" keeps
//!   publishing and rewriting.
//! - `vsock_host_and_guest`: the hybrid vsock muxer with a real Unix listener: host
//!   clients connecting and sending `CONNECT` lines, garbage and data, closing; guest packets
//!   (well-formed and not), a cooperative or hostile guest answering requests, time moving
//!   past the handshake and connect deadlines.
//! - `api_requests` (in `api.rs`, beside the private connection type): arbitrary bytes from
//!   a control socket client, in arbitrary pieces.
//!
//! Property everywhere: no panic, bounded work per input (the driver's watchdog), and after
//! every call into a device, guest memory outside the used rings and the device-writable
//! buffers of the descriptor tables (indirect tables included) is unchanged.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use kata_rs_fuzz::{arbitrary, fuzz, Result, Unstructured};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::devices::virtio::block::{BlkDevice, Disk};
use crate::devices::virtio::console::ConsoleDevice;
use crate::devices::virtio::net::{NetDevice, TapIo};
use crate::devices::virtio::rng::RngDevice;
use crate::devices::virtio::transport::{reg, status};
use crate::devices::virtio::vsock::HvsockDevice;
use crate::devices::virtio::{MmioTransport, QueueConfig, VirtioDevice};

/// Guest RAM: two regions with a hole between them (buffers may cross or miss RAM).
const REGIONS: [(u64, usize); 2] = [(0, 0x1_0000), (0x2_0000, 0x1_0000)];
/// Where the chain targets put queue q: descriptor table at q * QUEUE_STRIDE, avail ring
/// 0x1000 above it, used ring 0x1400 above it (room for 256 entries each).
const QUEUE_STRIDE: u64 = 0x2000;
/// Buffer slots the generated descriptors mostly point at.
const SLOTS: u64 = 0x8000;
const SLOT_SIZE: u64 = 0x400;
/// Where indirect descriptor tables mostly go: 64 tables of up to 16 descriptors.
const INDIRECT: u64 = 0xc000;
const GUEST_CID: u64 = 3;

const F_WRITE: u16 = 2;
const F_INDIRECT: u16 = 4;

fn ram_ranges() -> Vec<(GuestAddress, usize)> {
    REGIONS.iter().map(|&(a, l)| (GuestAddress(a), l)).collect()
}

fn guest_mem() -> Arc<GuestMemoryMmap> {
    Arc::new(GuestMemoryMmap::from_ranges(&ram_ranges()).unwrap())
}

fn snapshot(mem: &GuestMemoryMmap) -> Vec<Vec<u8>> {
    REGIONS
        .iter()
        .map(|&(a, l)| {
            let mut v = vec![0u8; l];
            // A plain memcpy: read_slice's volatile copy is slow in debug builds, and the
            // targets snapshot guest RAM twice per device call.
            let host = mem.get_host_address(GuestAddress(a)).unwrap();
            // SAFETY: `host` is the start of the mapping of the region at `a`, `l` bytes long
            // (REGIONS made it), alive as long as `mem`; `v` has `l` bytes; nothing writes guest
            // memory meanwhile (the target is single-threaded, no vCPU exists).
            unsafe { std::ptr::copy_nonoverlapping(host, v.as_mut_ptr(), l) };
            v
        })
        .collect()
}

type Range = (u64, u64);

/// Device calls whose memory writes were checked, and those that could not be (see
/// [`allowed_writes`]); printed by the chain targets.
static CHECKED: AtomicU64 = AtomicU64::new(0);
static UNCHECKED: AtomicU64 = AtomicU64::new(0);
/// Chains the devices returned (used ring entries), over all targets.
static USED: AtomicU64 = AtomicU64::new(0);
/// `mmio_registers` inputs that ended with the device running.
static ACTIVE_AT_END: AtomicU64 = AtomicU64::new(0);

fn overlaps(a: Range, b: Range) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// The (addr, len, flags) of each descriptor of the `n`-entry table at `at`, as far as
/// it lies in RAM.
fn table(snap: &[Vec<u8>], at: u64, n: u64) -> Vec<(u64, u32, u16)> {
    // The longest prefix of the table inside one region.
    let Some((&(base, size), v)) = REGIONS
        .iter()
        .zip(snap)
        .find(|(&(b, l), _)| b <= at && at < b + l as u64)
    else {
        return Vec::new();
    };
    let off = (at - base) as usize;
    let fits = ((size - off) / 16).min(n as usize);
    let bytes = &v[off..off + 16 * fits];
    bytes
        .chunks_exact(16)
        .map(|d| {
            (
                u64::from_le_bytes(d[..8].try_into().unwrap()),
                u32::from_le_bytes(d[8..12].try_into().unwrap()),
                u16::from_le_bytes(d[12..14].try_into().unwrap()),
            )
        })
        .collect()
}

/// Where a device may write while serving `queues` (guest memory as in `snap`): the used
/// rings and every device-writable descriptor of the tables (indirect ones included), a
/// superset of the writable buffers of any chain. None when that set is not a sound bound:
/// a writable range overlaps ring metadata, so the device may legitimately rewrite the
/// chains it reads.
fn allowed_writes(snap: &[Vec<u8>], queues: &[QueueConfig]) -> Option<Vec<Range>> {
    let mut writable = Vec::new();
    let mut meta = Vec::new();
    let mut indirect = std::collections::HashSet::new();
    let range = |a: u64, l: u32| (a, a.saturating_add(u64::from(l)));
    // A buffer not entirely inside one RAM region is refused by every device: never written.
    let in_ram = |&(s, e): &Range| REGIONS.iter().any(|&(b, l)| b <= s && e <= b + l as u64);
    for q in queues.iter().filter(|q| q.ready && q.size > 0) {
        let n = u64::from(q.size);
        writable.push((q.used, q.used.saturating_add(6 + 8 * n)));
        meta.push((q.desc, q.desc.saturating_add(16 * n)));
        meta.push((q.avail, q.avail.saturating_add(6 + 2 * n)));
        for (addr, len, flags) in table(snap, q.desc, n) {
            // An indirect descriptor is never a buffer (virtio-queue switches tables).
            if flags & (F_WRITE | F_INDIRECT) == F_WRITE {
                writable.push(range(addr, len));
            }
            // What virtio-queue accepts as an indirect table (16-byte entries, < 64 Ki).
            if flags & F_INDIRECT != 0 && len % 16 == 0 && len / 16 <= u32::from(u16::MAX) {
                meta.push(range(addr, len));
                indirect.insert((addr, len));
            }
        }
    }
    for (addr, len) in indirect {
        for (a, l, f) in table(snap, addr, u64::from(len / 16)) {
            if f & (F_WRITE | F_INDIRECT) == F_WRITE {
                writable.push(range(a, l));
            }
        }
    }
    writable.retain(in_ram);
    let sound = !writable
        .iter()
        .any(|w| meta.iter().any(|m| overlaps(*w, *m)));
    sound.then_some(writable)
}

/// Runs `call` (one call into the device) and checks that it wrote guest memory only
/// where `queues` allow.
fn checked<T>(mem: &GuestMemoryMmap, queues: &[QueueConfig], call: impl FnOnce() -> T) -> T {
    let before = snapshot(mem);
    let Some(allowed) = allowed_writes(&before, queues) else {
        UNCHECKED.fetch_add(1, Relaxed);
        return call();
    };
    CHECKED.fetch_add(1, Relaxed);
    let r = call();
    let after = snapshot(mem);
    for ((base, _), (b, a)) in REGIONS.iter().zip(before.iter().zip(&after)) {
        // Compare 256-byte chunks (fast in debug builds), bytes only in differing ones.
        for (c, (bc, ac)) in b.chunks(256).zip(a.chunks(256)).enumerate() {
            if bc == ac {
                continue;
            }
            for (i, (x, y)) in bc.iter().zip(ac).enumerate() {
                let addr = base + (c * 256 + i) as u64;
                if x != y && !allowed.iter().any(|&(s, e)| s <= addr && addr < e) {
                    panic!("guest memory written at {addr:#x} ({x:#04x} -> {y:#04x}), outside the used rings and writable buffers {allowed:x?}");
                }
            }
        }
    }
    r
}

/// The host side of a fuzzed virtio-net: frames and errors from the input.
struct FuzzTap {
    reads: VecDeque<std::result::Result<Vec<u8>, i32>>,
    writes: VecDeque<Option<i32>>,
}

fn errno(e: i32) -> std::io::Error {
    match e {
        0 => ErrorKind::WouldBlock.into(),
        1 => ErrorKind::Interrupted.into(),
        _ => std::io::Error::from_raw_os_error(e),
    }
}

impl TapIo for FuzzTap {
    fn read_frame(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.reads.pop_front() {
            Some(Ok(f)) => {
                let n = f.len().min(buf.len());
                buf[..n].copy_from_slice(&f[..n]);
                Ok(n)
            }
            Some(Err(e)) => Err(errno(e)),
            None => Err(ErrorKind::WouldBlock.into()),
        }
    }
    fn write_frame(&mut self, frame: &[u8]) -> std::io::Result<usize> {
        match self.writes.pop_front() {
            Some(Some(e)) => Err(errno(e)),
            _ => Ok(frame.len()),
        }
    }
    fn raw_fd(&self) -> RawFd {
        -1
    }
}

fn fuzz_tap(u: &mut Unstructured) -> Result<FuzzTap> {
    let errs = [0, 1, libc::EIO, libc::EBADFD, libc::EAGAIN];
    let mut reads = VecDeque::new();
    for _ in 0..u.int_in_range(0..=8)? {
        if u.ratio(1, 6)? {
            reads.push_back(Err(*u.choose(&errs)?));
        } else {
            let len = *u.choose(&[0usize, 1, 14, 60, 1514, 1515, 65_550, 70_000])?;
            let mut f = vec![0u8; len];
            u.fill_buffer(&mut f[..len.min(32)])?;
            reads.push_back(Ok(f));
        }
    }
    let mut writes = VecDeque::new();
    for _ in 0..u.int_in_range(0..=8)? {
        writes.push_back(if u.ratio(1, 3)? {
            Some(*u.choose(&errs)?)
        } else {
            None
        });
    }
    Ok(FuzzTap { reads, writes })
}

/// The device under test.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Rng,
    Blk,
    Net,
    Console,
    Vsock,
    /// virtio-fs, a vhost-user frontend: its rings are the backend's (a scripted one here,
    /// which may hang up after any request), so it is in the MMIO target only.
    Fs,
}

/// Builds device `kind` on `mem` (host sides from `u`) and runs `body` on its transport.
fn with_device<R>(
    kind: Kind,
    u: &mut Unstructured,
    mem: &Arc<GuestMemoryMmap>,
    body: impl Fns<R>,
) -> Result<R> {
    let m = mem.clone();
    match kind {
        Kind::Rng => body.run(u, MmioTransport::new(RngDevice::new(m.clone()), m)),
        Kind::Blk => {
            let file = crate::devices::virtio::fs::ram_memfd(c"kata-fuzz-disk", 8 * 512).unwrap();
            let disk = Disk::from_file(file, u.arbitrary()?, "kata-fuzz-serial").unwrap();
            body.run(u, MmioTransport::new(BlkDevice::new(disk, m.clone()), m))
        }
        Kind::Net => {
            let tap = fuzz_tap(u)?;
            let dev = NetDevice::new(tap, [2, 0, 0, 0, 0, 1], m.clone());
            body.run(u, MmioTransport::new(dev, m))
        }
        Kind::Console => body.run(
            u,
            MmioTransport::new(ConsoleDevice::new(std::io::sink(), m.clone()), m),
        ),
        Kind::Vsock => {
            let dev = HvsockDevice::new(GUEST_CID, None, m.clone()).unwrap();
            body.run(u, MmioTransport::new(dev, m))
        }
        Kind::Fs => {
            use vhost::vhost_user::message::VhostUserProtocolFeatures as P;
            use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
            let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
            let proto = (P::MQ | P::REPLY_ACK).bits() & u.arbitrary::<u64>()?;
            let stop_after = match u.ratio(1, 4)? {
                true => u.int_in_range(0..=24)?,
                false => usize::MAX,
            };
            let (_, backend_thread) = crate::devices::virtio::fs::tests::fake_backend(
                theirs,
                crate::devices::virtio::fs::tests::FS_FEATURES,
                proto,
                stop_after,
            );
            let r =
                match crate::devices::virtio::fs::from_stream(ours, std::path::Path::new("fuzz")) {
                    Ok(backend) => {
                        let cfg = crate::devices::virtio::fs::parse_fs(
                            "socket=/fuzz,tag=kataShared,queue-size=256",
                        )
                        .unwrap();
                        let kicks = (0..2)
                            .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
                            .collect();
                        let call = EventFd::new(EFD_NONBLOCK).unwrap();
                        let dev = crate::devices::virtio::fs::FsDevice::new(
                            &cfg,
                            backend,
                            m.clone(),
                            kicks,
                            call,
                        );
                        body.run(u, MmioTransport::new(dev, m))
                    }
                    // The backend hung up during the handshake: no device (an error at startup).
                    Err(_) => Err(arbitrary::Error::IncorrectFormat),
                };
            // The frontend's socket is closed with the device: the backend thread ends.
            backend_thread.join().unwrap();
            r
        }
    }
}

/// A body generic over the device type (closures cannot be).
trait Fns<R> {
    fn run<D: VirtioDevice>(self, u: &mut Unstructured, t: MmioTransport<D>) -> Result<R>;
}

fn kind(u: &mut Unstructured) -> Result<Kind> {
    use Kind::*;
    Ok(*u.choose(&[Rng, Blk, Net, Console, Vsock, Fs])?)
}

fn w32<D: VirtioDevice>(t: &mut MmioTransport<D>, off: u64, v: u32) {
    t.write(off, &v.to_le_bytes());
}

const REGS: [u64; 23] = [
    reg::MAGIC,
    reg::VERSION,
    reg::DEVICE_ID,
    reg::VENDOR_ID,
    reg::DEVICE_FEATURES,
    reg::DEVICE_FEATURES_SEL,
    reg::DRIVER_FEATURES,
    reg::DRIVER_FEATURES_SEL,
    reg::QUEUE_SEL,
    reg::QUEUE_NUM_MAX,
    reg::QUEUE_NUM,
    reg::QUEUE_READY,
    reg::QUEUE_NOTIFY,
    reg::INTERRUPT_STATUS,
    reg::INTERRUPT_ACK,
    reg::STATUS,
    reg::QUEUE_DESC_LOW,
    reg::QUEUE_DESC_HIGH,
    reg::QUEUE_AVAIL_LOW,
    reg::QUEUE_AVAIL_HIGH,
    reg::QUEUE_USED_LOW,
    reg::QUEUE_USED_HIGH,
    reg::CONFIG,
];

/// A register value a driver might write (or garbage).
fn reg_value(u: &mut Unstructured, off: u64) -> Result<u32> {
    use status::*;
    Ok(match (off, u.int_in_range(0..=3)?) {
        (_, 0) => u.arbitrary()?,
        (reg::STATUS, _) => {
            let bits = [ACKNOWLEDGE, DRIVER, FEATURES_OK, DRIVER_OK, FAILED, 0x40];
            bits.iter()
                .try_fold(0, |v, b| Ok(if u.arbitrary()? { v | b } else { v }))?
        }
        (reg::QUEUE_NUM, _) => 1 << u.int_in_range(0..=9)?,
        (reg::QUEUE_DESC_LOW | reg::QUEUE_AVAIL_LOW | reg::QUEUE_USED_LOW, _) => {
            u.int_in_range(0..=0x3_0000u32)? & !0xf
        }
        (reg::DRIVER_FEATURES, _) => *u.choose(&[1, 1 << 29, 1 << 28, (1 << 29) | (1 << 28)])?,
        (reg::DEVICE_FEATURES_SEL | reg::DRIVER_FEATURES_SEL | reg::QUEUE_SEL, _) => {
            u.int_in_range(0..=3)?
        }
        _ => u.int_in_range(0..=1)?,
    })
}

/// After every access: the transport's state is consistent.
fn check_invariants<D: VirtioDevice>(t: &MmioTransport<D>, mem: &GuestMemoryMmap) {
    let st = t.status();
    assert_eq!(t.is_active(), st & status::DRIVER_OK != 0, "status {st:#x}");
    if t.is_active() {
        for (i, q) in t.queues().iter().enumerate().filter(|(_, q)| q.ready) {
            assert!(q.validate(mem).is_ok(), "active with bad queue {i}: {q:?}");
        }
    }
    if st & status::FEATURES_OK != 0 {
        let f = t.driver_features();
        assert_eq!(f & !t.offered_features(), 0, "features {f:#x}");
        assert_ne!(f & (1 << crate::devices::virtio::VIRTIO_F_VERSION_1), 0);
    }
}

/// One step of a hostile guest (or host event) against the transport.
fn step<D: VirtioDevice>(
    u: &mut Unstructured,
    t: &mut MmioTransport<D>,
    mem: &GuestMemoryMmap,
    kicks_only: bool,
) -> Result {
    let nq = t.queues().len();
    match u.int_in_range(0..=if kicks_only { 3 } else { 8 })? {
        0 | 1 => {
            let q = u.int_in_range(0..=nq)?;
            let count = u.int_in_range(0..=3)?;
            let queues = t.queues().to_vec();
            checked(mem, &queues, || t.notify_queue(q, count));
        }
        2 => {
            if t.backend_poll().is_some() {
                let revents: i16 = u.arbitrary()?;
                let queues = t.queues().to_vec();
                checked(mem, &queues, || t.backend_ready(revents));
            }
        }
        3 => scribble(u, mem, t.queues())?,
        4 | 5 => {
            let off = *u.choose(&REGS)?;
            let v = reg_value(u, off)?;
            w32(t, off, v);
        }
        6 => {
            let off = if u.arbitrary()? {
                *u.choose(&REGS)? + u.int_in_range(0..=7)?
            } else {
                u.arbitrary::<u16>()?.into()
            };
            let len = u.int_in_range(0..=9)?;
            let mut b = vec![0u8; len];
            u.fill_buffer(&mut b)?;
            t.write(off, &b);
        }
        8 => {
            // A well-behaved driver (re)starts the device: reach the running states too.
            driver_init(u, t, mem)?;
        }
        _ => {
            let off = if u.arbitrary()? {
                *u.choose(&REGS)?
            } else {
                u.arbitrary::<u64>()?
            };
            let mut b = vec![0u8; u.int_in_range(0..=9)?];
            t.read(off, &mut b);
            if off == reg::MAGIC && b.len() == 4 {
                assert_eq!(b, crate::devices::virtio::transport::MAGIC.to_le_bytes());
            }
        }
    }
    check_invariants(t, mem);
    Ok(())
}

/// The guest rewrites part of its memory: a descriptor, the avail ring (publishing a
/// chain), a buffer.
fn scribble(u: &mut Unstructured, mem: &GuestMemoryMmap, queues: &[QueueConfig]) -> Result {
    let ready: Vec<&QueueConfig> = queues.iter().filter(|q| q.ready && q.size > 0).collect();
    match (u.int_in_range(0..=3)?, ready.is_empty()) {
        (0, false) => {
            let q = *u.choose(&ready)?;
            let i = u.int_in_range(0..=u64::from(q.size) - 1)?;
            let _ = mem.write_slice(&descriptor(u, q.size)?, GuestAddress(q.desc + 16 * i));
        }
        (1, false) => {
            let q = *u.choose(&ready)?;
            publish(u, mem, q)?;
        }
        (2, _) => {
            let at = fill_addr(u)?;
            let _ = mem.write_slice(&slot_bytes(u)?, GuestAddress(at));
        }
        _ => {
            let at = u.int_in_range(0..=0x3_0000u64)?;
            let v: u16 = u.arbitrary()?;
            let _ = mem.write_obj(v, GuestAddress(at));
        }
    }
    Ok(())
}

/// The driver makes chain `head` available (or moves the index anywhere).
fn publish(u: &mut Unstructured, mem: &GuestMemoryMmap, q: &QueueConfig) -> Result {
    let idx_at = GuestAddress(q.avail + 2);
    let idx: u16 = mem.read_obj(idx_at).unwrap_or(0);
    let head = u.int_in_range(0..=q.size)?;
    let slot = q.avail + 4 + 2 * u64::from(idx % q.size);
    let _ = mem.write_obj(head, GuestAddress(slot));
    let next = if u.ratio(1, 8)? {
        u.arbitrary()?
    } else {
        idx.wrapping_add(u.int_in_range(1..=3)?)
    };
    let _ = mem.write_obj(next, idx_at);
    Ok(())
}

/// Where the guest writes buffer contents (or an indirect table).
fn fill_addr(u: &mut Unstructured) -> Result<u64> {
    match u.ratio(1, 3)? {
        true => Ok(INDIRECT + 0x100 * u.int_in_range(0..=63)?),
        false => buffer_addr(u),
    }
}

/// A buffer address: mostly a slot, sometimes anywhere (edges of RAM, the hole, past it).
fn buffer_addr(u: &mut Unstructured) -> Result<u64> {
    Ok(match u.int_in_range(0..=5)? {
        0 => u.arbitrary()?,
        1 => *u.choose(&[
            0xfff0,
            0xfffc,
            0x1_0000,
            0x1_fff8,
            0x2_fff0,
            0x3_0000,
            u64::MAX - 7,
        ])?,
        2 => 0x2_0000 + SLOT_SIZE * u.int_in_range(0..=15)?,
        _ => SLOTS + SLOT_SIZE * u.int_in_range(0..=15)?,
    })
}

fn descriptor(u: &mut Unstructured, qsize: u16) -> Result<[u8; 16]> {
    let flags: u16 = if u.ratio(1, 16)? {
        u.arbitrary()?
    } else {
        u.int_in_range(0..=7)?
    };
    // Indirect tables live in their own area (so that buffers the device may write do not
    // overlap the chains it reads, which would make the memory check unsound), mostly.
    let (addr, len) = if flags & F_INDIRECT != 0 && u.ratio(7, 8)? {
        let at = INDIRECT + 0x100 * u.int_in_range(0..=63)?;
        (at, 16 * u.int_in_range(1..=8)?)
    } else {
        let len: u32 = match u.int_in_range(0..=7)? {
            0 => u.arbitrary()?,
            1 => *u.choose(&[0, 1, 12, 16, 44, 512, 1024, 0x1_0000, u32::MAX])?,
            _ => u.int_in_range(1..=SLOT_SIZE as u32)?,
        };
        (buffer_addr(u)?, len)
    };
    let next: u16 = if u.ratio(1, 16)? {
        u.arbitrary()?
    } else {
        u.int_in_range(0..=qsize)?
    };
    let mut d = [0u8; 16];
    d[..8].copy_from_slice(&addr.to_le_bytes());
    d[8..12].copy_from_slice(&len.to_le_bytes());
    d[12..14].copy_from_slice(&flags.to_le_bytes());
    d[14..].copy_from_slice(&next.to_le_bytes());
    Ok(d)
}

/// Buffer contents: a virtio-blk request header, a vsock packet header, descriptors (for
/// indirect tables) or random bytes.
fn slot_bytes(u: &mut Unstructured) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    match u.int_in_range(0..=3)? {
        0 => {
            let kind: u32 = *u.choose(&[0, 1, 4, 8, 2, u32::MAX])?;
            let sector: u64 = *u.choose(&[0, 1, 7, 8, u64::MAX / 512, u64::MAX])?;
            v.extend(kind.to_le_bytes());
            v.extend([0; 4]);
            v.extend(sector.to_le_bytes());
        }
        1 => {
            let h = crate::devices::virtio::vsock::packet::Header {
                src_cid: if u.ratio(7, 8)? {
                    GUEST_CID
                } else {
                    u.arbitrary()?
                },
                dst_cid: if u.ratio(7, 8)? { 2 } else { u.arbitrary()? },
                src_port: u.int_in_range(1000..=1003)?,
                dst_port: *u.choose(&[1024, 1 << 30, (1 << 30) + 1, u32::MAX])?,
                len: *u.choose(&[0, 1, 16, 100, 0x1_0000, 0x1_0001, u32::MAX])?,
                type_: if u.ratio(7, 8)? { 1 } else { u.arbitrary()? },
                op: u.int_in_range(0..=8)?,
                flags: u.int_in_range(0..=3)?,
                buf_alloc: u.arbitrary()?,
                fwd_cnt: u.arbitrary()?,
            };
            v.extend(h.encode());
        }
        2 => {
            // An indirect table in its area (written at the area's slots by the callers).
            for _ in 0..u.int_in_range(1..=8)? {
                v.extend(descriptor(u, 8)?);
            }
        }
        _ => {
            let n = u.int_in_range(1..=64)?;
            v.resize(n, 0);
            u.fill_buffer(&mut v)?;
        }
    }
    Ok(v)
}

/// Target (a): the register state machine, from reset, driven by arbitrary accesses.
struct MmioBody<'a>(&'a GuestMemoryMmap);

impl Fns<()> for MmioBody<'_> {
    fn run<D: VirtioDevice>(self, u: &mut Unstructured, mut t: MmioTransport<D>) -> Result {
        for _ in 0..256 {
            if u.is_empty() {
                break;
            }
            step(u, &mut t, self.0, false)?;
        }
        if t.is_active() {
            ACTIVE_AT_END.fetch_add(1, Relaxed);
        }
        Ok(())
    }
}

#[test]
fn mmio_registers() {
    let stats = fuzz("mmio_registers", &[], |u| {
        let k = kind(u)?;
        let mem = match k {
            // virtio-fs hands guest RAM to its backend: memfd-backed regions.
            Kind::Fs => {
                Arc::new(crate::devices::virtio::fs::shared_guest_memory(&ram_ranges()).unwrap())
            }
            _ => guest_mem(),
        };
        with_device(k, u, &mem, MmioBody(&mem))
    });
    eprintln!(
        "fuzz mmio_registers: {} of {} inputs ended with the device running",
        ACTIVE_AT_END.load(Relaxed),
        stats.inputs
    );
}

/// What a driver does from reset to DRIVER_OK: negotiate (some optional features dropped),
/// fill the rings at the fixed layout with arbitrary descriptors and avail entries, write
/// buffers, set the queues up and start the device. Returns the queue sizes.
fn driver_init<D: VirtioDevice>(
    u: &mut Unstructured,
    t: &mut MmioTransport<D>,
    mem: &GuestMemoryMmap,
) -> Result<Vec<u16>> {
    w32(t, reg::STATUS, 0);
    // Negotiate what the device offers, some optional bits dropped.
    let features = t.offered_features() & (u.arbitrary::<u64>()? | (1 << 32));
    // Small rings mostly (the input lasts), the device's maximum sometimes.
    let sizes: Vec<u16> = t
        .queues()
        .iter()
        .map(|q| {
            Ok(match u.ratio(1, 8)? {
                true => q.max_size,
                false => (1u16 << u.int_in_range(0..=4)?).min(q.max_size),
            })
        })
        .collect::<Result<_>>()?;
    use status::*;
    w32(t, reg::STATUS, ACKNOWLEDGE | DRIVER);
    for sel in 0..2 {
        w32(t, reg::DRIVER_FEATURES_SEL, sel);
        w32(t, reg::DRIVER_FEATURES, (features >> (32 * sel)) as u32);
    }
    w32(t, reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
    for (q, &size) in sizes.iter().enumerate() {
        let base = QUEUE_STRIDE * q as u64;
        // The rings' contents: descriptors, avail flags/idx/ring/used_event, buffers.
        for i in 0..u64::from(size) {
            mem.write_slice(&descriptor(u, size)?, GuestAddress(base + 16 * i))
                .unwrap();
        }
        let mut avail = vec![0u8; 6 + 2 * usize::from(size)];
        u.fill_buffer(&mut avail)?;
        if u.ratio(3, 4)? {
            let idx = u.int_in_range(0..=size)?;
            avail[2..4].copy_from_slice(&idx.to_le_bytes());
            for slot in avail[4..4 + 2 * usize::from(size)].chunks_mut(2) {
                let head = u.int_in_range(0..=size)?;
                slot.copy_from_slice(&head.to_le_bytes());
            }
        }
        mem.write_slice(&avail, GuestAddress(base + 0x1000))
            .unwrap();
        w32(t, reg::QUEUE_SEL, q as u32);
        w32(t, reg::QUEUE_NUM, size.into());
        w32(t, reg::QUEUE_DESC_LOW, base as u32);
        w32(t, reg::QUEUE_AVAIL_LOW, (base + 0x1000) as u32);
        w32(t, reg::QUEUE_USED_LOW, (base + 0x1400) as u32);
        w32(t, reg::QUEUE_READY, 1);
    }
    for _ in 0..u.int_in_range(0..=24)? {
        let at = fill_addr(u)?;
        let _ = mem.write_slice(&slot_bytes(u)?, GuestAddress(at));
    }
    w32(
        t,
        reg::STATUS,
        ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK,
    );
    Ok(sizes)
}

/// Target (b): a device activated properly on queues whose contents are arbitrary.
struct ChainsBody<'a>(&'a GuestMemoryMmap);

impl Fns<()> for ChainsBody<'_> {
    fn run<D: VirtioDevice>(self, u: &mut Unstructured, mut t: MmioTransport<D>) -> Result {
        let mem = self.0;
        let sizes = driver_init(u, &mut t, mem)?;
        assert!(t.is_active(), "a valid setup activates");
        for _ in 0..64 {
            if u.is_empty() {
                break;
            }
            step(u, &mut t, mem, true)?;
        }
        // Whatever the input left: every queue is served once more.
        for q in 0..sizes.len() {
            let queues = t.queues().to_vec();
            checked(mem, &queues, || t.notify_queue(q, 1));
        }
        for q in 0..sizes.len() as u64 {
            let idx: u16 = mem
                .read_obj(GuestAddress(QUEUE_STRIDE * q + 0x1402))
                .unwrap();
            USED.fetch_add(idx.into(), Relaxed);
        }
        Ok(())
    }
}

fn chains(name: &str, k: Kind) {
    fuzz(name, &[], |u| {
        let mem = guest_mem();
        with_device(k, u, &mem, ChainsBody(&mem))
    });
    eprintln!(
        "fuzz {name}: so far (all targets) {} device calls checked, {} not checkable, {} chains used",
        CHECKED.load(Relaxed),
        UNCHECKED.load(Relaxed),
        USED.load(Relaxed)
    );
}

#[test]
fn chains_rng() {
    chains("chains_rng", Kind::Rng);
}

#[test]
fn chains_blk() {
    chains("chains_blk", Kind::Blk);
}

#[test]
fn chains_net() {
    chains("chains_net", Kind::Net);
}

#[test]
fn chains_console() {
    chains("chains_console", Kind::Console);
}

#[test]
fn chains_vsock() {
    chains("chains_vsock", Kind::Vsock);
}

/// Target (c): the hybrid vsock muxer between host clients on its Unix socket and guest
/// packets, with deadlines passing.
#[test]
fn vsock_host_and_guest() {
    use crate::devices::virtio::vsock::muxer::{Muxer, MAX_CONNS};
    use crate::devices::virtio::vsock::packet::{op, Header};
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::time::{Duration, Instant};

    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let (mut established, mut to_host, mut to_guest) = (0, 0, 0);
    fuzz("vsock_host_and_guest", &[], |u| {
        let path = std::env::temp_dir().join(format!(
            "kata-fuzz-vsock-{}-{}.sock",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let listener = crate::devices::virtio::vsock::bind(&path).unwrap();
        let mut m = Muxer::new(GUEST_CID, Some(listener)).unwrap();
        let r = (|| -> Result {
            let mut clients: Vec<UnixStream> = Vec::new();
            // (host port, guest port) of the connection requests the guest has seen.
            let mut conns: Vec<(u32, u32)> = Vec::new();
            let cooperative: bool = u.arbitrary()?;
            let mut now = Instant::now();
            for _ in 0..64 {
                if u.is_empty() {
                    break;
                }
                match u.int_in_range(0..=8)? {
                    0 if clients.len() < 8 => {
                        let Ok(c) = UnixStream::connect(&path) else {
                            continue;
                        };
                        c.set_nonblocking(true).unwrap();
                        clients.push(c);
                    }
                    1 if !clients.is_empty() => {
                        let i = u.choose_index(clients.len())?;
                        let bytes: Vec<u8> = match u.int_in_range(0..=3)? {
                            0 => format!("CONNECT {}\n", u.int_in_range(1023..=1025u32)?).into(),
                            1 => format!("CONNECT {}\n", u.arbitrary::<u64>()?).into(),
                            _ => {
                                let mut b = vec![0u8; u.int_in_range(0..=48)?];
                                u.fill_buffer(&mut b)?;
                                b
                            }
                        };
                        let _ = clients[i].write(&bytes);
                    }
                    2 if !clients.is_empty() => {
                        let i = u.choose_index(clients.len())?;
                        if u.arbitrary()? {
                            clients.remove(i);
                        } else {
                            let _ = clients[i].shutdown(std::net::Shutdown::Write);
                        }
                    }
                    3 if !clients.is_empty() => {
                        let i = u.choose_index(clients.len())?;
                        let mut b = [0u8; 4096];
                        let _ = clients[i].read(&mut b);
                    }
                    4 => {
                        now += Duration::from_secs(*u.choose(&[0, 1, 5, 6, 11])?);
                        m.expire(now);
                        m.poll_host(now);
                    }
                    5 => m.poll_host(now),
                    6 | 7 => {
                        let (local, peer) = match conns.is_empty() || u.ratio(1, 4)? {
                            true => (u.arbitrary()?, u.arbitrary()?),
                            false => *u.choose(&conns)?,
                        };
                        let mut h =
                            Header::to_guest(GUEST_CID, peer, local, u.int_in_range(0..=8)?);
                        (h.src_cid, h.dst_cid) = (GUEST_CID, 2);
                        if u.ratio(1, 8)? {
                            h.src_cid = u.arbitrary()?;
                        }
                        h.flags = u.int_in_range(0..=3)?;
                        h.buf_alloc = *u.choose(&[0, 1, 4096, 256 << 10, u32::MAX])?;
                        h.fwd_cnt = u.arbitrary()?;
                        let mut payload = vec![0u8; *u.choose(&[0usize, 1, 100, 4096])?];
                        let head = payload.len().min(16);
                        u.fill_buffer(&mut payload[..head])?;
                        h.len = if u.ratio(7, 8)? {
                            payload.len() as u32
                        } else {
                            u.arbitrary()?
                        };
                        m.recv_pkt(&h, &payload);
                    }
                    _ => {
                        let mut buf = vec![0u8; *u.choose(&[0usize, 1, 16, 4096])?];
                        let mut drained = false;
                        for _ in 0..10_000 {
                            let Some((h, n)) = m.next_rx(&mut buf) else {
                                drained = true;
                                break;
                            };
                            assert!(n <= buf.len() && h.len as usize == n, "{h:?} {n}");
                            assert_eq!((h.src_cid, h.dst_cid), (2, GUEST_CID), "{h:?}");
                            if h.op == op::REQUEST {
                                conns.push((h.src_port, h.dst_port));
                                if cooperative {
                                    let mut r = Header::to_guest(
                                        GUEST_CID,
                                        h.dst_port,
                                        h.src_port,
                                        op::RESPONSE,
                                    );
                                    (r.src_cid, r.dst_cid, r.buf_alloc) = (GUEST_CID, 2, 64 << 10);
                                    m.recv_pkt(&r, &[]);
                                }
                            }
                        }
                        assert!(drained, "the muxer keeps producing packets");
                    }
                }
                assert!(m.connections() <= MAX_CONNS);
            }
            Ok(())
        })();
        let _ = std::fs::remove_file(&path);
        established += m.stats.established;
        to_host += m.stats.to_host;
        to_guest += m.stats.to_guest;
        r
    });
    eprintln!(
        "fuzz vsock_host_and_guest: {established} connections established, {to_host} bytes to \
         the host, {to_guest} to the guest"
    );
}

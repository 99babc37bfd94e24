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
//! - `chains_fs_bounce`: the chains target on virtio-fs in bounce mode (the VMM serves the
//!   guest's rings and forwards the chains into its shadow rings).
//! - `fs_bounce_backend`: the shadow rings against a hostile backend writing anything into
//!   the shared bounce area (used entries and index, our descriptors): every finished guest
//!   chain was in flight, finishes once, within its room, and guest RAM changes only in its
//!   writable buffers.
//! - `api_requests` (in `api.rs`, beside the private connection type): arbitrary bytes from
//!   a control socket client, in arbitrary pieces.
//!
//! Property everywhere: no panic, bounded work per input (the driver's watchdog), and after
//! every call into a device, guest memory outside the used rings and the device-writable
//! buffers of the descriptor tables (indirect tables included) is unchanged.
//!
//! Layout: this file holds guest RAM and the check that a device wrote only where it may;
//! `devices` builds each device with a fuzzed host side, `guest` generates what a hostile
//! guest writes (descriptors, rings, buffers), and one file per target: `mmio`, `chains`,
//! `vsock`, `bounce`.

mod bounce;
mod chains;
mod devices;
mod guest;
mod mmio;
mod vsock;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::devices::virtio::QueueConfig;

/// Guest RAM: two regions with a hole between them (buffers may cross or miss RAM).
pub(super) const REGIONS: [(u64, usize); 2] = [(0, 0x1_0000), (0x2_0000, 0x1_0000)];
/// Where the chain targets put queue q: descriptor table at q * QUEUE_STRIDE, avail ring
/// 0x1000 above it, used ring 0x1400 above it (room for 256 entries each).
pub(super) const QUEUE_STRIDE: u64 = 0x2000;
/// Buffer slots the generated descriptors mostly point at.
pub(super) const SLOTS: u64 = 0x8000;
pub(super) const SLOT_SIZE: u64 = 0x400;
/// Where indirect descriptor tables mostly go: 64 tables of up to 16 descriptors.
pub(super) const INDIRECT: u64 = 0xc000;
pub(super) const GUEST_CID: u64 = 3;

pub(super) const F_WRITE: u16 = 2;
pub(super) const F_INDIRECT: u16 = 4;

pub(super) fn ram_ranges() -> Vec<(GuestAddress, usize)> {
    REGIONS.iter().map(|&(a, l)| (GuestAddress(a), l)).collect()
}

pub(super) fn guest_mem() -> Arc<GuestMemoryMmap> {
    Arc::new(GuestMemoryMmap::from_ranges(&ram_ranges()).unwrap())
}

pub(super) fn snapshot(mem: &GuestMemoryMmap) -> Vec<Vec<u8>> {
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

pub(super) type Range = (u64, u64);

/// Device calls whose memory writes were checked, and those that could not be (see
/// [`allowed_writes`]); printed by the chain targets.
pub(super) static CHECKED: AtomicU64 = AtomicU64::new(0);
pub(super) static UNCHECKED: AtomicU64 = AtomicU64::new(0);
/// Chains the devices returned (used ring entries), over all targets.
pub(super) static USED: AtomicU64 = AtomicU64::new(0);
/// `mmio_registers` inputs that ended with the device running.
pub(super) static ACTIVE_AT_END: AtomicU64 = AtomicU64::new(0);

pub(super) fn overlaps(a: Range, b: Range) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// The (addr, len, flags) of each descriptor of the `n`-entry table at `at`, as far as
/// it lies in RAM.
pub(super) fn table(snap: &[Vec<u8>], at: u64, n: u64) -> Vec<(u64, u32, u16)> {
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
pub(super) fn allowed_writes(snap: &[Vec<u8>], queues: &[QueueConfig]) -> Option<Vec<Range>> {
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
pub(super) fn checked<T>(
    mem: &GuestMemoryMmap,
    queues: &[QueueConfig],
    call: impl FnOnce() -> T,
) -> T {
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

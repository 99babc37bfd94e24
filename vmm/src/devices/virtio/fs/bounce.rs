//! Bounce mode of virtio-fs: the backend never maps guest RAM.
//!
//! A vhost-user backend normally maps all of guest RAM (`SET_MEM_TABLE`) and reads the guest's
//! rings itself. That needs guest RAM to be a shared mapping of a file the backend can map,
//! which a VM restored from a template with its RAM mapped copy-on-write (`MAP_PRIVATE` of the
//! snapshot's memory file) does not have: the backend would see the snapshot file, not the
//! VM's pages. In bounce mode the VMM serves the guest's queues itself and forwards each
//! request through *shadow rings* in a small shared area (a sealed memfd, [`BounceArea`]),
//! which is the only memory the backend is given:
//!
//! - guest kick: each available chain is checked (readable descriptors first, then writable,
//!   every buffer in guest RAM), its readable bytes are copied into the area, and a shadow
//!   chain of at most two descriptors (the readable bytes, room for the reply) is published
//!   on the shadow ring; the backend is kicked through its kick eventfd;
//! - backend call: each used shadow chain's reply (as many bytes as the backend says it wrote,
//!   never more than the room) is copied into the guest's writable buffers and the guest chain
//!   is returned with that length.
//!
//! The backend is untrusted here too: a used id that is not in flight, a length beyond the
//! room, or a used index that runs more than a ring ahead are refused and counted, never
//! trusted. Requests wait (in order) when the area or the shadow ring is full; a request larger
//! than the whole area is returned to the guest with length 0. The copies cost a `memcpy` per
//! request, and the backend sees only the requests, not the rest of guest RAM.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use vm_memory::{
    Bytes, GuestAddress, GuestMemory, GuestMemoryBackend, GuestMemoryMmap, Permissions,
};

/// Bytes of one page of the area's data allocator.
const PAGE: u64 = 4096;
/// `VRING_DESC_F_NEXT`.
const DESC_NEXT: u16 = 1;
/// `VRING_DESC_F_WRITE`.
const DESC_WRITE: u16 = 2;

fn round_up(n: u64) -> u64 {
    n.div_ceil(PAGE) * PAGE
}

/// One guest buffer: address and length.
pub type Buf = (GuestAddress, u32);

/// A guest request, checked: its readable buffers (in order), then its writable ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The guest chain's head index.
    pub head: u16,
    /// Device-readable buffers.
    pub readable: Vec<Buf>,
    /// Device-writable buffers.
    pub writable: Vec<Buf>,
}

impl Request {
    fn read_len(&self) -> u64 {
        self.readable.iter().map(|b| u64::from(b.1)).sum()
    }
    fn write_len(&self) -> u64 {
        self.writable.iter().map(|b| u64::from(b.1)).sum()
    }
}

/// Reads a guest chain into a [`Request`]; None when malformed (a readable buffer after a
/// writable one, a buffer outside guest RAM, a chain that does not end, nothing in it).
pub fn parse_chain(
    mem: &GuestMemoryMmap,
    chain: virtio_queue::DescriptorChain<&GuestMemoryMmap>,
) -> Option<Request> {
    let head = chain.head_index();
    let mut req = Request {
        head,
        readable: Vec::new(),
        writable: Vec::new(),
    };
    let mut cut = true;
    for d in chain {
        let len = d.len();
        let perm = if d.is_write_only() {
            Permissions::Write
        } else {
            Permissions::Read
        };
        if len > 0 && !GuestMemory::check_range(mem, d.addr(), len as usize, perm) {
            return None;
        }
        if d.is_write_only() {
            req.writable.push((d.addr(), len));
        } else if req.writable.is_empty() {
            req.readable.push((d.addr(), len));
        } else {
            return None;
        }
        cut = d.has_next();
    }
    if cut || (req.readable.is_empty() && req.writable.is_empty()) {
        return None;
    }
    Some(req)
}

/// The shared area the backend maps: one region at backend address 0, a sealed memfd.
pub struct BounceArea {
    mem: GuestMemoryMmap,
}

impl BounceArea {
    /// A zeroed area of `size` bytes (page aligned).
    pub fn new(size: u64) -> std::io::Result<BounceArea> {
        let size = usize::try_from(round_up(size)).map_err(std::io::Error::other)?;
        let f = super::ram_memfd(c"kata-vmm-fs-bounce", size)?;
        let mem = GuestMemoryMmap::from_ranges_with_files([(
            GuestAddress(0),
            size,
            Some(vm_memory::FileOffset::new(f, 0)),
        )])
        .map_err(std::io::Error::other)?;
        Ok(BounceArea { mem })
    }

    /// The area as memory (what `SET_MEM_TABLE` describes to the backend).
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// Our address of backend address `at` (ring addresses are given to a vhost-user
    /// backend in the frontend's address space).
    pub fn host_addr(&self, at: u64) -> Option<u64> {
        self.mem
            .get_host_address(GuestAddress(at))
            .ok()
            .map(|p| p as u64)
    }
}

/// Where one shadow ring and its data pages sit in the area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingLayout {
    /// Shadow ring size (a power of two; two descriptors per request).
    pub size: u16,
    /// Descriptor table.
    pub desc: u64,
    /// Available ring.
    pub avail: u64,
    /// Used ring.
    pub used: u64,
    /// First data byte.
    pub data: u64,
    /// Data bytes.
    pub data_len: u64,
}

impl RingLayout {
    /// The layout at `base` of a ring for a guest queue of up to `guest_size` chains, with
    /// `data_len` bytes of data pages; also returns the first byte after it.
    pub fn at(base: u64, guest_size: u16, data_len: u64) -> (RingLayout, u64) {
        let size = guest_size.saturating_mul(2).clamp(2, super::MAX_QUEUE_SIZE);
        let n = u64::from(size);
        let desc = base;
        let avail = desc + round_up(16 * n);
        let used = avail + round_up(6 + 2 * n);
        let data = used + round_up(6 + 8 * n);
        let data_len = round_up(data_len);
        let l = RingLayout {
            size,
            desc,
            avail,
            used,
            data,
            data_len,
        };
        (l, data + data_len)
    }
}

/// A request the backend holds.
#[derive(Debug)]
struct InFlight {
    guest_head: u16,
    writable: Vec<Buf>,
    room: u32,
    reply_at: u64,
    first_page: usize,
    pages: usize,
}

/// What a [`ShadowRing`] counted of the backend's misbehaviour.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BackendFaults {
    /// Used entries naming a chain that is not in flight.
    pub bad_ids: u64,
    /// Used lengths beyond the room given (cut to the room).
    pub long_replies: u64,
    /// The used index ran more than a ring ahead (the ring is then left alone).
    pub broken: bool,
}

/// The driver side of one backend ring, in the [`BounceArea`].
pub struct ShadowRing {
    layout: RingLayout,
    /// Data pages in use.
    pages: Vec<bool>,
    /// In-flight requests by slot (slot k uses descriptors 2k and 2k+1).
    slots: Vec<Option<InFlight>>,
    free_slots: Vec<u16>,
    next_avail: u16,
    last_used: u16,
    pending: VecDeque<Request>,
    faults: BackendFaults,
}

impl ShadowRing {
    /// An empty ring at `layout` (the area's ring memory must be zero).
    pub fn new(layout: RingLayout) -> ShadowRing {
        let slots = usize::from(layout.size / 2);
        ShadowRing {
            layout,
            pages: vec![false; (layout.data_len / PAGE) as usize],
            slots: (0..slots).map(|_| None).collect(),
            free_slots: (0..slots as u16).rev().collect(),
            next_avail: 0,
            last_used: 0,
            pending: VecDeque::new(),
            faults: BackendFaults::default(),
        }
    }

    /// The ring's place in the area.
    pub fn layout(&self) -> RingLayout {
        self.layout
    }

    /// What the backend did wrong so far.
    pub fn faults(&self) -> BackendFaults {
        self.faults
    }

    /// Requests in flight at the backend.
    pub fn in_flight(&self) -> usize {
        self.slots.len() - self.free_slots.len()
    }

    /// Whether a request can never fit (larger than all data pages): the caller returns it.
    pub fn too_large(&self, req: &Request) -> bool {
        round_up(req.read_len()) + round_up(req.write_len()) > self.layout.data_len
    }

    /// Queues `req` (checked by [`ShadowRing::too_large`] first) behind the waiting ones.
    pub fn push(&mut self, req: Request) {
        self.pending.push_back(req);
    }

    fn alloc_pages(&mut self, n: usize) -> Option<usize> {
        if n == 0 {
            return Some(0);
        }
        let mut run = 0;
        for i in 0..self.pages.len() {
            run = if self.pages[i] { 0 } else { run + 1 };
            if run == n {
                let first = i + 1 - n;
                self.pages[first..=i].iter_mut().for_each(|p| *p = true);
                return Some(first);
            }
        }
        None
    }

    fn free_pages(&mut self, first: usize, n: usize) {
        if let Some(p) = self.pages.get_mut(first..first + n) {
            p.iter_mut().for_each(|p| *p = false);
        }
    }

    /// Publishes the waiting requests that fit now, in order: copies their readable bytes
    /// into the area and adds their shadow chains. Returns how many were published (kick the
    /// backend when > 0) and the guest heads of requests whose guest buffers could not be
    /// read (return them with length 0).
    pub fn submit(&mut self, guest: &GuestMemoryMmap, area: &BounceArea) -> (usize, Vec<u16>) {
        let mut published = 0;
        let mut failed = Vec::new();
        while let Some(req) = self.pending.front() {
            let rbytes = round_up(req.read_len());
            let wbytes = round_up(req.write_len());
            let pages = ((rbytes + wbytes) / PAGE) as usize;
            if self.free_slots.is_empty() {
                break;
            }
            let Some(first_page) = self.alloc_pages(pages) else {
                break;
            };
            let Some(req) = self.pending.pop_front() else {
                break;
            };
            let slot = self.free_slots.pop().unwrap_or_default();
            let at = self.layout.data + first_page as u64 * PAGE;
            let reply_at = at + rbytes;
            if copy_in(guest, &req.readable, area.memory(), at).is_err() {
                self.free_pages(first_page, pages);
                self.free_slots.push(slot);
                failed.push(req.head);
                continue;
            }
            let (rlen, wlen) = (req.read_len() as u32, req.write_len() as u32);
            if self
                .publish(area, slot, (at, rlen), (reply_at, wlen))
                .is_err()
            {
                self.free_pages(first_page, pages);
                self.free_slots.push(slot);
                failed.push(req.head);
                continue;
            }
            self.slots[usize::from(slot)] = Some(InFlight {
                guest_head: req.head,
                writable: req.writable,
                room: wlen,
                reply_at,
                first_page,
                pages,
            });
            published += 1;
        }
        (published, failed)
    }

    /// Writes slot `slot`'s descriptors (readable part, then writable; an empty part is
    /// left out) and puts its head on the available ring.
    fn publish(
        &mut self,
        area: &BounceArea,
        slot: u16,
        (r_at, r_len): (u64, u32),
        (w_at, w_len): (u64, u32),
    ) -> Result<(), vm_memory::GuestMemoryError> {
        let mem = area.memory();
        let d0 = 2 * slot;
        let d1 = d0 + 1;
        let desc = |i: u16, addr: u64, len: u32, flags: u16, next: u16| {
            let mut b = [0u8; 16];
            b[0..8].copy_from_slice(&addr.to_le_bytes());
            b[8..12].copy_from_slice(&len.to_le_bytes());
            b[12..14].copy_from_slice(&flags.to_le_bytes());
            b[14..16].copy_from_slice(&next.to_le_bytes());
            mem.write_slice(&b, GuestAddress(self.layout.desc + 16 * u64::from(i)))
        };
        match (r_len > 0, w_len > 0) {
            (true, true) => {
                desc(d0, r_at, r_len, DESC_NEXT, d1)?;
                desc(d1, w_at, w_len, DESC_WRITE, 0)?;
            }
            (true, false) => desc(d0, r_at, r_len, 0, 0)?,
            (false, _) => desc(d0, w_at, w_len, DESC_WRITE, 0)?,
        }
        let n = self.layout.size;
        let entry = self.layout.avail + 4 + 2 * u64::from(self.next_avail % n);
        mem.write_obj(d0.to_le(), GuestAddress(entry))?;
        self.next_avail = self.next_avail.wrapping_add(1);
        // The descriptors and the ring entry are visible before the index that publishes them.
        mem.store(
            self.next_avail.to_le(),
            GuestAddress(self.layout.avail + 2),
            Ordering::Release,
        )
    }

    /// Takes what the backend has used: copies each reply into the guest's writable buffers
    /// and returns `(guest head, length)` of each finished guest chain.
    pub fn complete(&mut self, guest: &GuestMemoryMmap, area: &BounceArea) -> Vec<(u16, u32)> {
        let mut done = Vec::new();
        if self.faults.broken {
            return done;
        }
        let mem = area.memory();
        let Ok(used_idx) = mem.load::<u16>(GuestAddress(self.layout.used + 2), Ordering::Acquire)
        else {
            return done;
        };
        let used_idx = u16::from_le(used_idx);
        let ahead = used_idx.wrapping_sub(self.last_used);
        if ahead > self.layout.size {
            self.faults.broken = true;
            tracing::warn!(
                "virtio-fs bounce: the backend's used index {used_idx} is {ahead} entries ahead \
                 of {} (ring of {}): the ring is left alone",
                self.last_used,
                self.layout.size
            );
            return done;
        }
        while self.last_used != used_idx {
            let n = self.layout.size;
            let at = self.layout.used + 4 + 8 * u64::from(self.last_used % n);
            self.last_used = self.last_used.wrapping_add(1);
            let mut e = [0u8; 8];
            if mem.read_slice(&mut e, GuestAddress(at)).is_err() {
                continue;
            }
            let id = u32::from_le_bytes([e[0], e[1], e[2], e[3]]);
            let len = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
            // Slot k's head is descriptor 2k: an odd id or one past the ring is no slot's.
            let slot = (id % 2 == 0)
                .then(|| u16::try_from(id / 2).ok())
                .flatten()
                .filter(|&s| usize::from(s) < self.slots.len());
            let Some((slot, f)) =
                slot.and_then(|s| self.slots[usize::from(s)].take().map(|f| (s, f)))
            else {
                self.faults.bad_ids += 1;
                continue;
            };
            self.free_slots.push(slot);
            self.free_pages(f.first_page, f.pages);
            let len = if len > f.room {
                self.faults.long_replies += 1;
                f.room
            } else {
                len
            };
            let copied = copy_out(area.memory(), f.reply_at, guest, &f.writable, len);
            done.push((f.guest_head, if copied.is_ok() { len } else { 0 }));
        }
        done
    }

    /// Forgets every request (device reset); the area's rings are zeroed for the next start.
    pub fn reset(&mut self, area: &BounceArea) {
        let l = self.layout;
        let zero = vec![0u8; (l.data - l.desc) as usize];
        let _ = area.memory().write_slice(&zero, GuestAddress(l.desc));
        *self = ShadowRing::new(l);
    }
}

/// Copies the guest buffers `bufs` into the area from `at` on.
fn copy_in(
    guest: &GuestMemoryMmap,
    bufs: &[Buf],
    area: &GuestMemoryMmap,
    mut at: u64,
) -> Result<(), vm_memory::GuestMemoryError> {
    for &(addr, len) in bufs {
        let dst = area.get_slice(GuestAddress(at), len as usize)?;
        let mut off = 0;
        for src in GuestMemoryBackend::get_slices(guest, addr, len as usize) {
            let src = src?;
            src.copy_to_volatile_slice(dst.subslice(off, src.len())?);
            off += src.len();
        }
        at += u64::from(len);
    }
    Ok(())
}

/// Copies `len` bytes from the area at `at` into the guest buffers `bufs` (in order).
fn copy_out(
    area: &GuestMemoryMmap,
    mut at: u64,
    guest: &GuestMemoryMmap,
    bufs: &[Buf],
    len: u32,
) -> Result<(), vm_memory::GuestMemoryError> {
    let mut left = len as usize;
    for &(addr, blen) in bufs {
        if left == 0 {
            break;
        }
        let n = left.min(blen as usize);
        let src = area.get_slice(GuestAddress(at), n)?;
        let mut off = 0;
        for dst in GuestMemoryBackend::get_slices(guest, addr, n) {
            let dst = dst?;
            src.subslice(off, dst.len())?.copy_to_volatile_slice(dst);
            off += dst.len();
        }
        at += n as u64;
        left -= n;
    }
    Ok(())
}

#[cfg(test)]
mod tests;

use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};

use super::*;

const W: u16 = DESC_WRITE;
const N: u16 = DESC_NEXT;
const BUF: u64 = 0x10_0000;

fn guest() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap()
}

fn d(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
    RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
}

fn ring(data: u64) -> (BounceArea, ShadowRing) {
    let (l, end) = RingLayout::at(0, 8, data);
    (BounceArea::new(end).unwrap(), ShadowRing::new(l))
}

/// Pops every chain of the guest queue into the shadow ring (as the device does).
fn take(q: &mut Queue, m: &GuestMemoryMmap, r: &mut ShadowRing) -> Vec<u16> {
    let mut refused = Vec::new();
    while let Some(c) = q.pop_descriptor_chain(m) {
        let head = c.head_index();
        match parse_chain(m, c) {
            Some(req) if !r.too_large(&req) => r.push(req),
            _ => refused.push(head),
        }
    }
    refused
}

/// A backend: serves every published shadow chain by writing the readable bytes reversed
/// into the writable descriptor; the used length is `len(id, natural)`.
fn backend(area: &BounceArea, l: RingLayout, seen: &mut u16, len: impl Fn(u32, u32) -> u32) {
    let m = area.memory();
    let avail: u16 = m.read_obj(GuestAddress(l.avail + 2)).unwrap();
    let mut used: u16 = m.read_obj(GuestAddress(l.used + 2)).unwrap();
    while *seen != avail {
        let head: u16 = m
            .read_obj(GuestAddress(l.avail + 4 + 2 * u64::from(*seen % l.size)))
            .unwrap();
        *seen = seen.wrapping_add(1);
        let mut input = Vec::new();
        let mut i = head;
        let mut written = 0;
        loop {
            let at = l.desc + 16 * u64::from(i);
            let addr: u64 = m.read_obj(GuestAddress(at)).unwrap();
            let n: u32 = m.read_obj(GuestAddress(at + 8)).unwrap();
            let flags: u16 = m.read_obj(GuestAddress(at + 12)).unwrap();
            let next: u16 = m.read_obj(GuestAddress(at + 14)).unwrap();
            if flags & W == 0 {
                let mut b = vec![0u8; n as usize];
                m.read_slice(&mut b, GuestAddress(addr)).unwrap();
                input.extend(b);
            } else {
                let out: Vec<u8> = input.iter().rev().copied().take(n as usize).collect();
                m.write_slice(&out, GuestAddress(addr)).unwrap();
                written = out.len() as u32;
            }
            if flags & N == 0 {
                break;
            }
            i = next;
        }
        let e = l.used + 4 + 8 * u64::from(used % l.size);
        m.write_obj(u32::from(head), GuestAddress(e)).unwrap();
        m.write_obj(len(u32::from(head), written), GuestAddress(e + 4))
            .unwrap();
        used = used.wrapping_add(1);
        m.write_obj(used, GuestAddress(l.used + 2)).unwrap();
    }
}

#[test]
fn a_request_goes_through_the_shadow_ring_and_its_reply_comes_back() {
    let m = guest();
    let mq = MockSplitQueue::create(&m, GuestAddress(0), 8);
    // Request: 3 readable bytes in two buffers, reply room in two writable buffers.
    m.write_slice(b"ab", GuestAddress(BUF)).unwrap();
    m.write_slice(b"c", GuestAddress(BUF + 0x100)).unwrap();
    mq.add_desc_chains(
        &[
            d(BUF, 2, N, 1),
            d(BUF + 0x100, 1, N, 2),
            d(BUF + 0x1000, 2, W | N, 3),
            d(BUF + 0x2000, 8, W, 0),
        ],
        0,
    )
    .unwrap();
    let mut q: Queue = mq.create_queue().unwrap();
    let (area, mut r) = ring(64 << 10);
    assert!(take(&mut q, &m, &mut r).is_empty());
    let (published, failed) = r.submit(&m, &area);
    assert_eq!((published, failed.len()), (1, 0));
    assert_eq!(r.in_flight(), 1);
    assert!(r.complete(&m, &area).is_empty(), "nothing used yet");
    let mut seen = 0;
    backend(&area, r.layout(), &mut seen, |_, n| n);
    assert_eq!(r.complete(&m, &area), vec![(0, 3)]);
    assert_eq!(r.in_flight(), 0);
    let mut a = [0u8; 2];
    m.read_slice(&mut a, GuestAddress(BUF + 0x1000)).unwrap();
    let mut b = [0u8; 2];
    m.read_slice(&mut b, GuestAddress(BUF + 0x2000)).unwrap();
    assert_eq!(
        (&a, &b),
        (b"cb", &[b'a', 0]),
        "reply scattered over both buffers"
    );
    assert_eq!(r.faults(), BackendFaults::default());
}

#[test]
fn malformed_guest_chains_are_refused() {
    let m = guest();
    let mq = MockSplitQueue::create(&m, GuestAddress(0), 8);
    // A readable buffer after a writable one; a buffer outside guest RAM.
    mq.add_desc_chains(&[d(BUF, 4, W | N, 1), d(BUF + 64, 4, 0, 0)], 0)
        .unwrap();
    mq.add_desc_chains(&[d(8 << 30, 4, 0, 0)], 2).unwrap();
    let mut q: Queue = mq.create_queue().unwrap();
    let (_area, mut r) = ring(64 << 10);
    assert_eq!(take(&mut q, &m, &mut r), vec![0, 2]);
}

#[test]
fn requests_wait_for_room_and_one_too_large_is_refused() {
    let m = guest();
    let mq = MockSplitQueue::create(&m, GuestAddress(0), 8);
    // Data area: 4 pages. Each request takes 1 page in + 2 pages of room: one at a time.
    for (i, at) in [(0u16, BUF), (2, BUF + 0x10000)] {
        mq.add_desc_chains(&[d(at, 16, N, i + 1), d(at + 0x1000, 0x2000, W, 0)], i)
            .unwrap();
    }
    // Larger than the whole area.
    mq.add_desc_chains(&[d(BUF + 0x20000, 0x5000, W, 0)], 4)
        .unwrap();
    let mut q: Queue = mq.create_queue().unwrap();
    let (area, mut r) = ring(4 * PAGE);
    assert_eq!(take(&mut q, &m, &mut r), vec![4]);
    assert_eq!(r.submit(&m, &area).0, 1, "the second waits for room");
    let mut seen = 0;
    backend(&area, r.layout(), &mut seen, |_, n| n);
    assert_eq!(r.complete(&m, &area), vec![(0, 16)]);
    assert_eq!(r.submit(&m, &area).0, 1, "room again: the second goes");
    backend(&area, r.layout(), &mut seen, |_, n| n);
    assert_eq!(r.complete(&m, &area), vec![(2, 16)]);
}

#[test]
fn a_lying_backend_is_bounded() {
    let m = guest();
    let mq = MockSplitQueue::create(&m, GuestAddress(0), 8);
    mq.add_desc_chains(&[d(BUF, 16, N, 1), d(BUF + 0x1000, 32, W, 0)], 0)
        .unwrap();
    let mut q: Queue = mq.create_queue().unwrap();
    let (area, mut r) = ring(64 << 10);
    take(&mut q, &m, &mut r);
    r.submit(&m, &area);
    let l = r.layout();
    // A reply longer than the room is cut to the room.
    let mut seen = 0;
    backend(&area, l, &mut seen, |_, _| u32::MAX);
    assert_eq!(r.complete(&m, &area), vec![(0, 32)]);
    assert_eq!(r.faults().long_replies, 1);
    // A used entry for a chain not in flight (odd id, id past the ring, a finished one).
    let mem = area.memory();
    for (k, id) in [1u32, 9999, 0].into_iter().enumerate() {
        let e = l.used + 4 + 8 * (1 + k as u64);
        mem.write_obj(id, GuestAddress(e)).unwrap();
    }
    mem.write_obj(4u16, GuestAddress(l.used + 2)).unwrap();
    assert!(r.complete(&m, &area).is_empty());
    assert_eq!(r.faults().bad_ids, 3);
    // A used index far ahead: the ring is left alone from then on.
    mem.write_obj(4u16 + 100, GuestAddress(l.used + 2)).unwrap();
    assert!(r.complete(&m, &area).is_empty());
    assert!(r.faults().broken);
}

#[test]
fn reset_forgets_requests_and_clears_the_rings() {
    let m = guest();
    let mq = MockSplitQueue::create(&m, GuestAddress(0), 8);
    mq.add_desc_chains(&[d(BUF, 16, 0, 0)], 0).unwrap();
    let mut q: Queue = mq.create_queue().unwrap();
    let (area, mut r) = ring(64 << 10);
    take(&mut q, &m, &mut r);
    assert_eq!(r.submit(&m, &area).0, 1);
    r.reset(&area);
    assert_eq!(r.in_flight(), 0);
    let avail: u16 = area
        .memory()
        .read_obj(GuestAddress(r.layout().avail + 2))
        .unwrap();
    assert_eq!(avail, 0);
}

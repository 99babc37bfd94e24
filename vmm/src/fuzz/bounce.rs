//! Target (d), `fs_bounce_backend`: virtio-fs bounce mode's shadow rings against a hostile
//! backend, which writes anything into the shared area (used ring entries and index, our
//! descriptors and available ring) while guest requests come and go.

use std::collections::HashMap;

use kata_rs_fuzz::{fuzz, Result, Unstructured};
use vm_memory::{Bytes, GuestAddress};

use crate::devices::virtio::fs::bounce::{BounceArea, Request, RingLayout, ShadowRing};

use super::*;

/// A request of 1-3 readable and 0-3 writable buffers in the buffer slots.
fn request(u: &mut Unstructured, head: u16) -> Result<Request> {
    let buf = |u: &mut Unstructured| -> Result<(GuestAddress, u32)> {
        let slot = u.int_in_range(0..=(SLOTS / SLOT_SIZE - 1))?;
        Ok((
            GuestAddress(SLOTS + slot * SLOT_SIZE),
            u.int_in_range(0..=SLOT_SIZE as u32)?,
        ))
    };
    let readable = (0..u.int_in_range(1..=3)?)
        .map(|_| buf(u))
        .collect::<Result<_>>()?;
    let writable = (0..u.int_in_range(0..=3)?)
        .map(|_| buf(u))
        .collect::<Result<_>>()?;
    Ok(Request {
        head,
        readable,
        writable,
    })
}

/// Target (d): no panic; every finished guest chain is one that is in flight, finished
/// once, with at most its room; guest RAM changes only inside the finished chains' writable
/// buffers.
#[test]
pub(super) fn fs_bounce_backend() {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    static FINISHED: AtomicU64 = AtomicU64::new(0);
    fuzz("fs_bounce_backend", &[], |u| {
        let mem = guest_mem();
        let (layout, end) = RingLayout::at(0, 8, u.int_in_range(1..=8)? * 4096);
        let area = BounceArea::new(end).unwrap();
        let mut ring = ShadowRing::new(layout);
        // head -> writable buffers of the requests handed to the ring.
        let mut open: HashMap<u16, Vec<(GuestAddress, u32)>> = HashMap::new();
        let mut next_head = 0u16;
        for _ in 0..64 {
            if u.is_empty() {
                break;
            }
            match u.int_in_range(0..=4)? {
                0 if open.len() < 16 => {
                    let r = request(u, next_head)?;
                    next_head = next_head.wrapping_add(1);
                    if !ring.too_large(&r) {
                        open.insert(r.head, r.writable.clone());
                        ring.push(r);
                    }
                }
                1 => {
                    for head in ring.submit(&mem, &area).1 {
                        assert!(open.remove(&head).is_some(), "a failed head was open");
                    }
                }
                2 => {
                    // The backend uses entries: arbitrary ids and lengths, an index moved.
                    let m = area.memory();
                    for _ in 0..u.int_in_range(0..=4)? {
                        let slot = u.int_in_range(0..=layout.size - 1)?;
                        let e = layout.used + 4 + 8 * u64::from(slot);
                        let id: u32 = match u.ratio(3, 4)? {
                            true => u.int_in_range(0..=u32::from(layout.size))?,
                            false => u.arbitrary()?,
                        };
                        m.write_obj(id, GuestAddress(e)).unwrap();
                        m.write_obj(u.arbitrary::<u32>()?, GuestAddress(e + 4))
                            .unwrap();
                    }
                    let idx: u16 = match u.ratio(3, 4)? {
                        true => u.int_in_range(0..=layout.size)?,
                        false => u.arbitrary()?,
                    };
                    m.write_obj(idx, GuestAddress(layout.used + 2)).unwrap();
                }
                3 => {
                    // Scribbles over our own descriptors and available ring.
                    let at = u.int_in_range(layout.desc..=layout.used - 8)?;
                    let _ = area
                        .memory()
                        .write_slice(&u.arbitrary::<[u8; 8]>()?, GuestAddress(at));
                }
                _ => {
                    let before = snapshot(&mem);
                    let done = ring.complete(&mem, &area);
                    let after = snapshot(&mem);
                    FINISHED.fetch_add(done.len() as u64, Relaxed);
                    let mut allowed: Vec<(u64, u64)> = Vec::new();
                    for (head, len) in &done {
                        let bufs = open.remove(head).expect("a finished head was open");
                        let room: u32 = bufs.iter().map(|b| b.1).sum();
                        assert!(*len <= room, "length {len} within the room {room}");
                        allowed.extend(bufs.iter().map(|&(a, l)| (a.0, a.0 + u64::from(l))));
                    }
                    for (i, &(start, _)) in REGIONS.iter().enumerate() {
                        for (j, (a, b)) in before[i].iter().zip(&after[i]).enumerate() {
                            let at = start + j as u64;
                            if a != b {
                                assert!(
                                    allowed.iter().any(|&(lo, hi)| (lo..hi).contains(&at)),
                                    "guest RAM at {at:#x} changed outside the reply buffers"
                                );
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    });
    eprintln!(
        "fuzz fs_bounce_backend: {} guest chains finished by the backend",
        FINISHED.load(Relaxed)
    );
}

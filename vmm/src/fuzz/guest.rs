//! What a hostile guest writes: descriptors, avail entries, buffers, rewrites of its memory.

use kata_rs_fuzz::{Result, Unstructured};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::devices::virtio::QueueConfig;

use super::*;

/// The guest rewrites part of its memory: a descriptor, the avail ring (publishing a
/// chain), a buffer.
pub(super) fn scribble(
    u: &mut Unstructured,
    mem: &GuestMemoryMmap,
    queues: &[QueueConfig],
) -> Result {
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
pub(super) fn publish(u: &mut Unstructured, mem: &GuestMemoryMmap, q: &QueueConfig) -> Result {
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
pub(super) fn fill_addr(u: &mut Unstructured) -> Result<u64> {
    match u.ratio(1, 3)? {
        true => Ok(INDIRECT + 0x100 * u.int_in_range(0..=63)?),
        false => buffer_addr(u),
    }
}

/// A buffer address: mostly a slot, sometimes anywhere (edges of RAM, the hole, past it).
pub(super) fn buffer_addr(u: &mut Unstructured) -> Result<u64> {
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

pub(super) fn descriptor(u: &mut Unstructured, qsize: u16) -> Result<[u8; 16]> {
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
pub(super) fn slot_bytes(u: &mut Unstructured) -> Result<Vec<u8>> {
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

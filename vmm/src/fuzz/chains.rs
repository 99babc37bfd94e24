//! Target (b), `chains_<device>`: activated devices kicked with arbitrary descriptor chains.

use std::sync::atomic::Ordering::Relaxed;

use kata_rs_fuzz::{fuzz, Result, Unstructured};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::devices::virtio::transport::{reg, status};
use crate::devices::virtio::{MmioTransport, VirtioDevice};

use super::{devices::*, guest::*, mmio::*, *};

/// What a driver does from reset to DRIVER_OK: negotiate (some optional features dropped),
/// fill the rings at the fixed layout with arbitrary descriptors and avail entries, write
/// buffers, set the queues up and start the device. Returns the queue sizes.
pub(super) fn driver_init<D: VirtioDevice>(
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
pub(super) struct ChainsBody<'a>(&'a GuestMemoryMmap);

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

pub(super) fn chains(name: &str, k: Kind) {
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
pub(super) fn chains_rng() {
    chains("chains_rng", Kind::Rng);
}

#[test]
pub(super) fn chains_blk() {
    chains("chains_blk", Kind::Blk);
}

#[test]
pub(super) fn chains_net() {
    chains("chains_net", Kind::Net);
}

#[test]
pub(super) fn chains_console() {
    chains("chains_console", Kind::Console);
}

#[test]
pub(super) fn chains_vsock() {
    chains("chains_vsock", Kind::Vsock);
}

#[test]
pub(super) fn chains_fs_bounce() {
    chains("chains_fs_bounce", Kind::FsBounce);
}

//! Target (a), `mmio_registers`: the virtio-mmio register state machine under arbitrary
//! accesses, with its invariants checked after each.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use kata_rs_fuzz::{fuzz, Result, Unstructured};
use vm_memory::GuestMemoryMmap;

use crate::devices::virtio::transport::{reg, status};
use crate::devices::virtio::{MmioTransport, VirtioDevice};

use super::{chains::*, devices::*, guest::*, *};

pub(super) fn w32<D: VirtioDevice>(t: &mut MmioTransport<D>, off: u64, v: u32) {
    t.write(off, &v.to_le_bytes());
}

pub(super) const REGS: [u64; 23] = [
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
pub(super) fn reg_value(u: &mut Unstructured, off: u64) -> Result<u32> {
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
pub(super) fn check_invariants<D: VirtioDevice>(t: &MmioTransport<D>, mem: &GuestMemoryMmap) {
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
pub(super) fn step<D: VirtioDevice>(
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

/// Target (a): the register state machine, from reset, driven by arbitrary accesses.
pub(super) struct MmioBody<'a>(&'a GuestMemoryMmap);

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
pub(super) fn mmio_registers() {
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

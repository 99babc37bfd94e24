//! Unit tests of `devices/virtio/transport.rs`.

use super::*;
use crate::devices::virtio::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use std::sync::Mutex;
use vm_memory::GuestAddress;

#[derive(Default)]
struct Log {
    activated: Vec<(u64, Vec<QueueConfig>)>,
    resets: usize,
    config_writes: usize,
    notified: Vec<usize>,
    /// What the next `rekick_queues` reports.
    rekick: u32,
}

struct Dummy {
    log: Arc<Mutex<Log>>,
    fail: bool,
    /// A VMM-served device (not vhost).
    own: bool,
}

impl VirtioDevice for Dummy {
    fn device_type(&self) -> u32 {
        19
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[256, 256, 128]
    }
    fn features(&self) -> u64 {
        (1 << 32) | (1 << 29) | 1
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let cfg = 42u64.to_le_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            *b = cfg.get(offset as usize + i).copied().unwrap_or(0);
        }
    }
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {
        self.log.lock().unwrap().config_writes += 1;
    }
    fn activate(&mut self, f: u64, q: &[QueueConfig]) -> Result<(), String> {
        if self.fail {
            return Err("backend says no".into());
        }
        self.log.lock().unwrap().activated.push((f, q.to_vec()));
        Ok(())
    }
    fn reset(&mut self) {
        self.log.lock().unwrap().resets += 1;
    }
    fn vhost_interrupts(&self) -> bool {
        !self.own
    }
    fn process_queue(&mut self, index: usize) -> bool {
        self.log.lock().unwrap().notified.push(index);
        index == 0
    }
    fn rekick_queues(&mut self) -> u32 {
        std::mem::take(&mut self.log.lock().unwrap().rekick)
    }
    fn exit_report(&self) -> Option<String> {
        Some("dummy:".into())
    }
    fn snapshot_supported(&self) -> Result<(), String> {
        if self.own {
            Ok(())
        } else {
            Err("vhost".into())
        }
    }
}

type T = MmioTransport<Dummy>;

fn transport(fail: bool) -> (T, Arc<Mutex<Log>>) {
    make(fail, false)
}

fn make(fail: bool, own: bool) -> (T, Arc<Mutex<Log>>) {
    let log = Arc::new(Mutex::new(Log::default()));
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    (
        MmioTransport::new(
            Dummy {
                log: log.clone(),
                fail,
                own,
            },
            Arc::new(mem),
        ),
        log,
    )
}

#[test]
fn own_device_interrupt_status_and_irq() {
    use vmm_sys_util::eventfd::EFD_NONBLOCK;
    let (mut t, log) = make(false, true);
    let irq = EventFd::new(EFD_NONBLOCK).unwrap();
    t.set_irq(irq.try_clone().unwrap());
    t.notify_queue(0, 1);
    assert!(log.lock().unwrap().notified.is_empty(), "not active yet");
    negotiate(&mut t);
    setup_queue(&mut t, 0, 0x10000, 16);
    setup_queue(&mut t, 1, 0x20000, 16);
    w(&mut t, reg::STATUS, ALL_OK);
    assert!(t.is_active());
    // No vhost trick: nothing pending until the device returns buffers.
    assert_eq!(r(&mut t, reg::INTERRUPT_STATUS), 0);
    t.notify_queue(1, 1); // served, nothing used
    assert_eq!(r(&mut t, reg::INTERRUPT_STATUS), 0);
    assert!(irq.read().is_err(), "no interrupt");
    t.notify_queue(2, 1); // not ready: never reaches the device
    t.notify_queue(usize::MAX, 1);
    t.notify_queue(0, 1);
    assert_eq!(log.lock().unwrap().notified, vec![1, 0]);
    assert_eq!(r(&mut t, reg::INTERRUPT_STATUS), INT_VRING);
    assert_eq!(irq.read().unwrap(), 1);
    w(&mut t, reg::INTERRUPT_ACK, INT_VRING);
    assert_eq!(r(&mut t, reg::INTERRUPT_STATUS), 0);
}

fn r(t: &mut T, off: u64) -> u32 {
    let mut b = [0u8; 4];
    t.read(off, &mut b);
    u32::from_le_bytes(b)
}

fn w(t: &mut T, off: u64, v: u32) {
    t.write(off, &v.to_le_bytes());
}

fn negotiate(t: &mut T) {
    w(t, reg::STATUS, status::ACKNOWLEDGE);
    w(t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    w(t, reg::DRIVER_FEATURES_SEL, 0);
    w(t, reg::DRIVER_FEATURES, 1);
    w(t, reg::DRIVER_FEATURES_SEL, 1);
    w(t, reg::DRIVER_FEATURES, 1);
    w(
        t,
        reg::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    );
}

fn setup_queue(t: &mut T, idx: u32, base: u64, size: u32) {
    w(t, reg::QUEUE_SEL, idx);
    w(t, reg::QUEUE_NUM, size);
    w(t, reg::QUEUE_DESC_LOW, base as u32);
    w(t, reg::QUEUE_DESC_HIGH, (base >> 32) as u32);
    w(t, reg::QUEUE_AVAIL_LOW, (base + 0x1000) as u32);
    w(t, reg::QUEUE_AVAIL_HIGH, 0);
    w(t, reg::QUEUE_USED_LOW, (base + 0x2000) as u32);
    w(t, reg::QUEUE_USED_HIGH, 0);
    w(t, reg::QUEUE_READY, 1);
}

const ALL_OK: u32 = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK;

#[test]
fn constants_are_the_spec_values() {
    // virtio 1.x, 4.2.2 (MMIO register layout) and 2.1 (status bits): pinned so that a
    // virtio-bindings update cannot move them silently.
    let regs = [
        (reg::MAGIC, 0x000),
        (reg::VERSION, 0x004),
        (reg::DEVICE_ID, 0x008),
        (reg::VENDOR_ID, 0x00c),
        (reg::DEVICE_FEATURES, 0x010),
        (reg::DEVICE_FEATURES_SEL, 0x014),
        (reg::DRIVER_FEATURES, 0x020),
        (reg::DRIVER_FEATURES_SEL, 0x024),
        (reg::QUEUE_SEL, 0x030),
        (reg::QUEUE_NUM_MAX, 0x034),
        (reg::QUEUE_NUM, 0x038),
        (reg::QUEUE_READY, 0x044),
        (reg::QUEUE_NOTIFY, 0x050),
        (reg::INTERRUPT_STATUS, 0x060),
        (reg::INTERRUPT_ACK, 0x064),
        (reg::STATUS, 0x070),
        (reg::QUEUE_DESC_LOW, 0x080),
        (reg::QUEUE_DESC_HIGH, 0x084),
        (reg::QUEUE_AVAIL_LOW, 0x090),
        (reg::QUEUE_AVAIL_HIGH, 0x094),
        (reg::QUEUE_USED_LOW, 0x0a0),
        (reg::QUEUE_USED_HIGH, 0x0a4),
        (reg::CONFIG_GENERATION, 0x0fc),
        (reg::CONFIG, 0x100),
    ];
    for (got, want) in regs {
        assert_eq!(got, want);
    }
    use status::*;
    assert_eq!(
        [
            ACKNOWLEDGE,
            DRIVER,
            DRIVER_OK,
            FEATURES_OK,
            DEVICE_NEEDS_RESET,
            FAILED
        ],
        [1, 2, 4, 8, 0x40, 0x80]
    );
    assert_eq!((INT_VRING, INT_CONFIG), (1, 2));
    assert_eq!(
        (
            VIRTIO_F_VERSION_1,
            VIRTIO_RING_F_EVENT_IDX,
            VIRTIO_RING_F_INDIRECT_DESC
        ),
        (32, 29, 28)
    );
}

#[test]
fn identification_registers() {
    let (mut t, _) = transport(false);
    assert_eq!(r(&mut t, reg::MAGIC), 0x7472_6976);
    assert_eq!(r(&mut t, reg::VERSION), 2);
    assert_eq!(r(&mut t, reg::DEVICE_ID), 19);
    w(&mut t, reg::DEVICE_FEATURES_SEL, 0);
    assert_eq!(r(&mut t, reg::DEVICE_FEATURES), (1 << 29) | 1);
    w(&mut t, reg::DEVICE_FEATURES_SEL, 1);
    assert_eq!(r(&mut t, reg::DEVICE_FEATURES), 1);
    w(&mut t, reg::DEVICE_FEATURES_SEL, 7);
    assert_eq!(r(&mut t, reg::DEVICE_FEATURES), 0);
    w(&mut t, reg::QUEUE_SEL, 2);
    assert_eq!(r(&mut t, reg::QUEUE_NUM_MAX), 128);
    w(&mut t, reg::QUEUE_SEL, 3);
    assert_eq!(r(&mut t, reg::QUEUE_NUM_MAX), 0);
    let mut b = [0u8; 8];
    t.read(reg::CONFIG, &mut b);
    assert_eq!(u64::from_le_bytes(b), 42);
}

#[test]
fn full_activation_and_reset() {
    let (mut t, log) = transport(false);
    negotiate(&mut t);
    assert_eq!(
        r(&mut t, reg::STATUS) & status::FEATURES_OK,
        status::FEATURES_OK
    );
    setup_queue(&mut t, 0, 0x10000, 256);
    setup_queue(&mut t, 1, 0x20000, 128);
    assert_eq!(r(&mut t, reg::INTERRUPT_STATUS), 0);
    w(&mut t, reg::STATUS, ALL_OK);
    assert_eq!(r(&mut t, reg::STATUS), ALL_OK);
    assert!(t.is_active());
    {
        let l = log.lock().unwrap();
        assert_eq!(l.activated.len(), 1);
        let (f, q) = &l.activated[0];
        assert_eq!(*f, (1 << 32) | 1);
        assert_eq!(q[0].size, 256);
        assert_eq!(q[0].desc, 0x10000);
        assert_eq!(q[0].avail, 0x11000);
        assert_eq!(q[0].used, 0x12000);
        assert!(q[1].ready && !q[2].ready);
    }
    // irqfd path: the VRING bit is always reported while running; ACK does not clear it.
    assert_eq!(r(&mut t, reg::INTERRUPT_STATUS) & INT_VRING, INT_VRING);
    w(&mut t, reg::INTERRUPT_ACK, INT_VRING);
    assert_eq!(r(&mut t, reg::INTERRUPT_STATUS) & INT_VRING, INT_VRING);
    // Queue setup after DRIVER_OK is ignored.
    w(&mut t, reg::QUEUE_SEL, 0);
    w(&mut t, reg::QUEUE_NUM, 2);
    assert_eq!(t.queues()[0].size, 256);
    // Reset.
    w(&mut t, reg::STATUS, 0);
    assert_eq!(r(&mut t, reg::STATUS), 0);
    assert!(!t.is_active());
    assert_eq!(log.lock().unwrap().resets, 1);
    assert_eq!(
        t.queues()[0],
        QueueConfig {
            max_size: 256,
            ..Default::default()
        }
    );
    assert_eq!(r(&mut t, reg::INTERRUPT_STATUS), 0);
    // And it can come up again.
    negotiate(&mut t);
    setup_queue(&mut t, 0, 0x10000, 64);
    w(&mut t, reg::STATUS, ALL_OK);
    assert!(t.is_active());
    assert_eq!(log.lock().unwrap().activated.len(), 2);
}

#[test]
fn rejects_unknown_features_and_legacy_drivers() {
    let (mut t, _) = transport(false);
    w(&mut t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    w(&mut t, reg::DRIVER_FEATURES_SEL, 0);
    w(&mut t, reg::DRIVER_FEATURES, 1 | 2); // bit 1 not offered
    w(&mut t, reg::DRIVER_FEATURES_SEL, 1);
    w(&mut t, reg::DRIVER_FEATURES, 1);
    w(
        &mut t,
        reg::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    );
    assert_eq!(r(&mut t, reg::STATUS) & status::FEATURES_OK, 0);

    let (mut t, _) = transport(false);
    w(&mut t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    w(&mut t, reg::DRIVER_FEATURES, 1); // no VERSION_1
    w(
        &mut t,
        reg::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    );
    assert_eq!(r(&mut t, reg::STATUS) & status::FEATURES_OK, 0);
    // DRIVER_OK without FEATURES_OK does nothing.
    w(&mut t, reg::STATUS, ALL_OK);
    assert!(!t.is_active());
}

#[test]
fn hostile_status_sequences() {
    let (mut t, log) = transport(false);
    // Jumping straight to DRIVER_OK: features were never negotiated, so neither
    // FEATURES_OK nor DRIVER_OK sticks.
    w(&mut t, reg::STATUS, ALL_OK);
    assert_eq!(r(&mut t, reg::STATUS), status::ACKNOWLEDGE | status::DRIVER);
    assert!(!t.is_active());
    w(&mut t, reg::STATUS, 0);
    // Unknown status bits.
    w(&mut t, reg::STATUS, 0x100 | status::ACKNOWLEDGE);
    assert_eq!(r(&mut t, reg::STATUS), 0);
    // DRIVER before ACKNOWLEDGE.
    w(&mut t, reg::STATUS, status::DRIVER);
    assert_eq!(r(&mut t, reg::STATUS), 0);
    // Clearing bits other than by reset.
    w(&mut t, reg::STATUS, status::ACKNOWLEDGE);
    w(&mut t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    w(&mut t, reg::STATUS, status::ACKNOWLEDGE);
    assert_eq!(r(&mut t, reg::STATUS), status::ACKNOWLEDGE | status::DRIVER);
    // Features cannot be written before DRIVER or after FEATURES_OK.
    let (mut t2, _) = transport(false);
    w(&mut t2, reg::DRIVER_FEATURES, 1);
    assert_eq!(t2.driver_features(), 0);
    negotiate(&mut t2);
    w(&mut t2, reg::DRIVER_FEATURES_SEL, 0);
    w(&mut t2, reg::DRIVER_FEATURES, 0);
    assert_eq!(t2.driver_features(), (1 << 32) | 1);
    // FAILED sticks and blocks activation.
    w(
        &mut t,
        reg::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FAILED,
    );
    w(&mut t, reg::STATUS, ALL_OK | status::FAILED);
    assert!(!t.is_active());
    assert!(log.lock().unwrap().activated.is_empty());
}

#[test]
fn malformed_accesses_never_panic() {
    let (mut t, _) = transport(false);
    negotiate(&mut t);
    // Odd widths and unaligned offsets.
    for len in [0usize, 1, 2, 3, 5, 8, 16] {
        let mut buf = vec![0u8; len];
        for off in [0u64, 1, 2, 0x10, 0x33, 0x50, 0x70, 0xfc, 0xfd, 0xfff] {
            t.read(off, &mut buf);
            if off < reg::CONFIG && len != 4 {
                assert!(buf.iter().all(|b| *b == 0xff));
            }
            t.write(off, &buf);
        }
    }
    // Config space past its end and near u64::MAX.
    let mut b = [0u8; 8];
    t.read(0xff8, &mut b);
    t.read(u64::MAX - 3, &mut b);
    t.write(u64::MAX - 3, &b);
    // Unknown register reads are all ones; writes to read-only registers do nothing.
    assert_eq!(r(&mut t, 0x0f0), 0xffff_ffff);
    w(&mut t, reg::MAGIC, 0);
    assert_eq!(r(&mut t, reg::MAGIC), MAGIC);
    // Out of range queue select.
    w(&mut t, reg::QUEUE_SEL, u32::MAX);
    w(&mut t, reg::QUEUE_NUM, 8);
    w(&mut t, reg::QUEUE_DESC_LOW, 8);
    w(&mut t, reg::QUEUE_READY, 1);
    assert_eq!(r(&mut t, reg::QUEUE_READY), 0);
    assert_eq!(r(&mut t, reg::QUEUE_NUM_MAX), 0);
    // Queue notify for any value is a no-op here.
    for q in [0u32, 2, 3, u32::MAX] {
        w(&mut t, reg::QUEUE_NOTIFY, q);
    }
}

#[test]
fn bad_queues_do_not_activate() {
    let cases: [(u32, u64); 6] = [
        (0, 0x10000),        // size 0
        (100, 0x10000),      // not a power of two
        (512, 0x10000),      // above max
        (0x1_0000, 0x10000), // does not fit in 16 bits
        (256, 0xf_f000),     // rings run past the end of guest memory
        (256, 0x10008),      // descriptor table misaligned
    ];
    for (size, base) in cases {
        let (mut t, log) = transport(false);
        negotiate(&mut t);
        setup_queue(&mut t, 0, base, size);
        w(&mut t, reg::STATUS, ALL_OK);
        assert!(!t.is_active(), "size {size} base {base:#x}");
        assert_eq!(t.status() & status::DRIVER_OK, 0);
        assert_ne!(t.status() & status::DEVICE_NEEDS_RESET, 0);
        assert_ne!(r(&mut t, reg::INTERRUPT_STATUS) & INT_CONFIG, 0);
        assert!(log.lock().unwrap().activated.is_empty());
    }
    // Ring addresses far outside memory / overflowing.
    let (mut t, _) = transport(false);
    negotiate(&mut t);
    setup_queue(&mut t, 0, 0x10000, 16);
    w(&mut t, reg::QUEUE_USED_HIGH, 0xffff_ffff);
    w(&mut t, reg::QUEUE_USED_LOW, 0xffff_fff0);
    w(&mut t, reg::STATUS, ALL_OK);
    assert!(!t.is_active());
}

#[test]
fn backend_failure_marks_needs_reset() {
    let (mut t, _) = transport(true);
    negotiate(&mut t);
    setup_queue(&mut t, 0, 0x10000, 16);
    w(&mut t, reg::STATUS, ALL_OK);
    assert!(!t.is_active());
    assert_ne!(t.status() & status::DEVICE_NEEDS_RESET, 0);
}

#[test]
fn kicks_interrupts_and_rekicks_are_counted() {
    use vmm_sys_util::eventfd::EFD_NONBLOCK;
    let (mut t, log) = make(false, true);
    let evts: Vec<EventFd> = (0..3)
        .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
        .collect();
    t.set_queue_events(evts.iter().map(|e| e.try_clone().unwrap()).collect());
    t.set_irq(EventFd::new(EFD_NONBLOCK).unwrap());
    t.notify_queue(0, 2); // before DRIVER_OK: counted, not served
    negotiate(&mut t);
    setup_queue(&mut t, 0, 0x10000, 16);
    setup_queue(&mut t, 1, 0x20000, 16);
    w(&mut t, reg::STATUS, ALL_OK);
    // The device left chains on queue 1 (and names a queue that does not exist).
    log.lock().unwrap().rekick = 0b10 | (1 << 31);
    t.notify_queue(1, 3);
    assert_eq!(evts[1].read().unwrap(), 1, "queue 1 re-signalled");
    assert!(evts[0].read().is_err() && evts[2].read().is_err());
    // The next read of queue 1's counter holds our re-kick plus 4 guest kicks.
    t.notify_queue(1, 5);
    t.notify_queue(0, 1);
    t.notify_queue(0, 1);
    let s = t.notify_stats().clone();
    assert_eq!(s.kicks, vec![4, 7, 0]);
    assert_eq!(s.interrupts, 2, "queue 0 used buffers twice");
    assert_eq!(s.rekicks, 1);
    // A re-kick that the read did not see (counter 0) is not taken from later kicks.
    log.lock().unwrap().rekick = 0b100;
    t.notify_queue(2, 0);
    t.notify_queue(2, 0);
    t.notify_queue(2, 2);
    assert_eq!(t.notify_stats().kicks[2], 2);
    assert_eq!(
        t.exit_report().as_deref(),
        Some("dummy: event_idx=0 kicks=13 queue_kicks=4,7,2 interrupts=2 rekicks=2")
    );
    // vhost devices report without transport counters.
    let (v, _) = make(false, false);
    assert_eq!(v.exit_report().as_deref(), Some("dummy:"));
}

#[test]
fn negotiated_event_idx_is_reported_after_the_reset() {
    let (mut t, _) = make(false, true);
    w(&mut t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    w(&mut t, reg::DRIVER_FEATURES_SEL, 0);
    w(&mut t, reg::DRIVER_FEATURES, 1 << VIRTIO_RING_F_EVENT_IDX);
    w(&mut t, reg::DRIVER_FEATURES_SEL, 1);
    w(&mut t, reg::DRIVER_FEATURES, 1);
    w(
        &mut t,
        reg::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    );
    setup_queue(&mut t, 0, 0x10000, 16);
    w(&mut t, reg::STATUS, ALL_OK);
    assert!(t.is_active() && t.notify_stats().event_idx);
    // The guest's shutdown resets the device; the summary still says what ran.
    w(&mut t, reg::STATUS, 0);
    assert!(t.exit_report().unwrap().contains(" event_idx=1 "));
    // A driver that does not take it, next time.
    negotiate(&mut t);
    setup_queue(&mut t, 0, 0x10000, 16);
    w(&mut t, reg::STATUS, ALL_OK);
    assert!(t.exit_report().unwrap().contains(" event_idx=0 "));
}

#[test]
fn withheld_features_are_neither_offered_nor_accepted() {
    let (mut t, _) = transport(false);
    t.withhold_features(1 << VIRTIO_RING_F_EVENT_IDX);
    assert_eq!(t.offered_features(), (1 << 32) | 1);
    w(&mut t, reg::DEVICE_FEATURES_SEL, 0);
    assert_eq!(r(&mut t, reg::DEVICE_FEATURES), 1);
    w(&mut t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    w(&mut t, reg::DRIVER_FEATURES_SEL, 0);
    w(
        &mut t,
        reg::DRIVER_FEATURES,
        1 | (1 << VIRTIO_RING_F_EVENT_IDX),
    );
    w(&mut t, reg::DRIVER_FEATURES_SEL, 1);
    w(&mut t, reg::DRIVER_FEATURES, 1);
    w(
        &mut t,
        reg::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    );
    assert_eq!(r(&mut t, reg::STATUS) & status::FEATURES_OK, 0);
}

#[test]
fn config_writes_need_driver() {
    let (mut t, log) = transport(false);
    t.write(reg::CONFIG, &[1]);
    assert_eq!(log.lock().unwrap().config_writes, 0);
    negotiate(&mut t);
    t.write(reg::CONFIG, &[1]);
    assert_eq!(log.lock().unwrap().config_writes, 1);
}

mod snapshot_state;

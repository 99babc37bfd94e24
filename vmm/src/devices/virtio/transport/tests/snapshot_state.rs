//! A transport's snapshot state: saved, restored, and refused when it does not fit.

use super::*;
use crate::devices::virtio::device::DeviceNote;

/// A running device's transport state survives a snapshot: restored into a fresh transport it
/// activates the device with the same features and queues and saves back the same; what does
/// not fit this device (type, features, status bits, rings outside RAM) is refused by name.
#[test]
fn transport_state_round_trip_and_refusals() {
    let (mut t, _) = make(false, true);
    negotiate(&mut t);
    setup_queue(&mut t, 0, 0x1_0000, 256);
    setup_queue(&mut t, 1, 0x2_0000, 256);
    setup_queue(&mut t, 2, 0x3_0000, 128);
    w(&mut t, reg::STATUS, ALL_OK);
    assert!(t.is_active());
    let saved = t.save_state().unwrap();
    assert!(saved.active);
    assert_eq!(saved.status, ALL_OK);
    assert_eq!(
        (saved.queues[2].size, saved.queues[2].desc),
        (128, 0x3_0000)
    );

    let (mut fresh, log) = make(false, true);
    fresh.restore_state(&saved).unwrap();
    assert!(fresh.is_active());
    assert_eq!(log.lock().unwrap().activated.len(), 1);
    // The restore served queue 0 once (what the guest may have published unkicked), which
    // returned a buffer here: the only difference is the interrupt that raised.
    let again = fresh.save_state().unwrap();
    assert_eq!(again.interrupt_status, INT_VRING);
    assert_eq!(
        persist::TransportState {
            interrupt_status: 0,
            ..again
        },
        saved
    );
    assert_eq!(log.lock().unwrap().notified, vec![0, 1, 2]);
    assert_eq!(r(&mut fresh, reg::STATUS), ALL_OK);

    let refused = |s: &persist::TransportState| make(false, true).0.restore_state(s).unwrap_err();
    let mut bad = saved.clone();
    bad.device_type = 1;
    assert!(refused(&bad).contains("virtio device type 1"));
    let mut bad = saved.clone();
    bad.driver_features |= 1 << 40;
    assert!(refused(&bad).contains("does not offer"));
    let mut bad = saved.clone();
    bad.status |= 0x1000;
    assert!(refused(&bad).contains("unknown device status"));
    let mut bad = saved.clone();
    bad.queues[1].desc = 0xfff_0000;
    assert!(refused(&bad).starts_with("queue 1:"));
    let mut bad = saved.clone();
    bad.queues.pop();
    assert!(refused(&bad).contains("2 queues in the snapshot"));
    // A vhost device cannot be saved.
    assert_eq!(make(false, false).0.save_state().unwrap_err(), "vhost");
}

/// Whatever a snapshot file says about a transport, restoring it is an Ok or an Err, never a
/// panic (values from a simple xorshift; rings land inside and outside guest RAM).
#[test]
fn hostile_transport_states_never_panic() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let garbage = Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap());
    {
        use vm_memory::Bytes;
        let mut junk = vec![0u8; 2 << 20];
        for b in junk.chunks_mut(8) {
            b.copy_from_slice(&next().to_le_bytes());
        }
        garbage.write_slice(&junk, GuestAddress(0)).unwrap();
    }
    let mut vsock_restored = 0;
    for _ in 0..2000 {
        let q = |n: &mut dyn FnMut() -> u64| persist::QueueState {
            size: if !n().is_multiple_of(4) {
                1 << (n() % 9)
            } else {
                n() as u16
            },
            ready: !n().is_multiple_of(8),
            desc: (n() % (2 << 20)) & !0xf,
            avail: (n() % (2 << 20)) & !0x1,
            used: if n().is_multiple_of(8) {
                n()
            } else {
                (n() % (2 << 20)) & !0x3
            },
            position: (n().is_multiple_of(2)).then(|| (n() as u16, n() as u16)),
        };
        let s = persist::TransportState {
            device_type: if next().is_multiple_of(8) {
                next() as u32
            } else {
                19
            },
            status: if next().is_multiple_of(2) {
                ALL_OK
            } else {
                next() as u32
            },
            device_features_sel: next() as u32,
            driver_features_sel: next() as u32,
            driver_features: match next() % 3 {
                0 => 1 << 32,
                1 => (1 << 32) | (1 << 29) | 1,
                _ => next(),
            },
            queue_sel: next() as u32,
            interrupt_status: next() as u32 & 3,
            config_generation: next() as u32,
            active: !next().is_multiple_of(4),
            queues: (0..(if next().is_multiple_of(8) {
                next() % 5
            } else {
                3
            }))
                .map(|_| q(&mut next))
                .collect(),
            identity: next()
                .is_multiple_of(16)
                .then(|| "x".repeat(next() as usize % 300)),
            note: next().is_multiple_of(2).then(|| DeviceNote::Vsock {
                cid: if next().is_multiple_of(2) { 3 } else { next() },
                next_port: next() as u32,
                idle: next().is_multiple_of(2),
            }),
        };
        let (mut t, _) = make(false, true);
        let _ = t.restore_state(&s);
        let _ = t.save_state();
        // The restored transport still serves register accesses and kicks.
        let _ = r(&mut t, reg::STATUS);
        t.notify_queue(0, 1);
        // The same state into the real vsock device, over guest RAM full of garbage: its
        // queues are built, positioned anywhere, served, and get the reset event.
        let mut v = MmioTransport::new(
            crate::devices::virtio::vsock::HvsockDevice::new(3, None, garbage.clone()).unwrap(),
            garbage.clone(),
        );
        if v.restore_state(&s).is_ok() && s.active {
            vsock_restored += 1;
        }
        for i in 0..3 {
            v.notify_queue(i, 1);
        }
        let _ = v.save_state();
    }
    assert!(
        vsock_restored > 10,
        "only {vsock_restored} running vsock states restored"
    );
}

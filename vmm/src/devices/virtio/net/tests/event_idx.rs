//! virtio-net in event-idx mode: when the device asks for kicks and serves what arrives.

use super::*;

/// Event-idx mode: queues built from the negotiated features, with the used rings away from
/// the mock's (whose used ring overlaps the end of its available ring, `used_event` included).
fn event_idx_queues(r: &Rig) -> NetQueues {
    let qc = |q: &MockSplitQueue<GuestMemoryMmap>| QueueConfig {
        max_size: QUEUE_SIZE,
        size: QSIZE,
        ready: true,
        desc: q.desc_table_addr().0,
        avail: q.avail_addr().0,
        used: q.desc_table_addr().0 + 0x1000,
    };
    let rx = qc(&r.rx).build_queue(&r.m, FEATURES).unwrap();
    let tx = qc(&r.tx).build_queue(&r.m, FEATURES).unwrap();
    assert!(rx.event_idx_enabled() && tx.event_idx_enabled());
    NetQueues::new(rx, tx)
}

/// `avail_event` of a queue laid out by `event_idx_queues`.
fn avail_event(m: &GuestMemoryMmap, q: &MockSplitQueue<GuestMemoryMmap>) -> u16 {
    let used = q.desc_table_addr().0 + 0x1000;
    m.read_obj(GuestAddress(used + 4 + 8 * u64::from(QSIZE)))
        .unwrap()
}

fn set_avail_idx(m: &GuestMemoryMmap, q: &MockSplitQueue<GuestMemoryMmap>, idx: u16) {
    m.write_obj(idx, GuestAddress(q.avail_addr().0 + 2))
        .unwrap();
}

/// Linux's `vring_need_event`: does a driver moving its avail index `old` -> `new` kick?
fn driver_kicks(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

#[test]
fn event_idx_rx_asks_for_a_kick_only_when_out_of_buffers() {
    let (m, r) = rig();
    let mut q = event_idx_queues(&r);
    let frames: Vec<Vec<u8>> = (0..3).map(|i| frame(80 + i, i as u8)).collect();
    let mut tap = FakeTap::with_frames(&frames[..1]);
    let mut st = NetStats::default();
    add_chain(&r.rx, 0, &[(BUF, 2048, W)]);
    add_chain(&r.rx, 1, &[(BUF + 0x1000, 2048, W)]);
    assert!(q.process_rx(m, &mut tap, &mut st).0);
    // Buffers left: the device does not ask for kicks, refills cost the guest none.
    assert_eq!(avail_event(m, &r.rx), 0);
    assert!(!driver_kicks(avail_event(m, &r.rx), 3, 2));
    tap.st().inbox.extend(frames[1..].iter().cloned());
    assert!(q.process_rx(m, &mut tap, &mut st).0);
    // Out of buffers with a frame in hand: a kick is asked for at the next buffer.
    assert!(q.rx_pending());
    assert_eq!(q.poll_events(), 0);
    assert_eq!(avail_event(m, &r.rx), 2);
    add_chain(&r.rx, 2, &[(BUF + 0x2000, 2048, W)]);
    assert!(
        driver_kicks(avail_event(m, &r.rx), 3, 2),
        "the refill kicks"
    );
    assert!(q.rx_kick(m, &mut tap, &mut st).0);
    assert_eq!(st.rx_frames, 3);
    assert_eq!(read(m, BUF + 0x2000 + 12, frames[2].len()), frames[2]);
    assert_eq!(q.take_rekick(), 0);
}

#[test]
fn event_idx_tx_serves_what_arrives_meanwhile_and_bounds_a_flood() {
    let (m, r) = rig();
    let mut q = event_idx_queues(&r);
    let mut tap = FakeTap::default();
    let mut st = NetStats::default();
    put_tx(m, BUF, &frame(64, 9));
    add_chain(&r.tx, 0, &[(BUF, (NET_HDR_LEN + 64) as u32, 0)]);
    // While the first frame goes out, the driver publishes two more (no kick: avail_event
    // still says 0); they go out in the same call.
    let (mm, txq_avail) = (r.m.clone(), r.tx.avail_addr().0);
    let mut extra = 2u16;
    tap.st().on_write = Some(Box::new(move || {
        if extra > 0 {
            extra -= 1;
            let idx: u16 = mm.read_obj(GuestAddress(txq_avail + 2)).unwrap();
            mm.write_obj(
                0u16,
                GuestAddress(txq_avail + 4 + 2 * u64::from(idx % QSIZE)),
            )
            .unwrap();
            mm.write_obj(idx + 1, GuestAddress(txq_avail + 2)).unwrap();
        }
    }));
    assert_eq!(q.process_tx(m, &mut tap, &mut st), (true, false));
    assert_eq!(tap.st().sent.len(), 3);
    assert_eq!(avail_event(m, &r.tx), 3, "the next chain kicks");
    assert_eq!(q.take_rekick(), 0);
    // A driver that republishes every chain at once: one ring's worth, then a re-kick.
    let (mm, txq_avail) = (r.m.clone(), r.tx.avail_addr().0);
    tap.st().on_write = Some(Box::new(move || {
        let idx: u16 = mm.read_obj(GuestAddress(txq_avail + 2)).unwrap();
        mm.write_obj(
            0u16,
            GuestAddress(txq_avail + 4 + 2 * u64::from(idx % QSIZE)),
        )
        .unwrap();
        mm.write_obj(idx.wrapping_add(1), GuestAddress(txq_avail + 2))
            .unwrap();
    }));
    let idx: u16 = m.read_obj(GuestAddress(txq_avail + 2)).unwrap();
    m.write_obj(
        0u16,
        GuestAddress(txq_avail + 4 + 2 * u64::from(idx % QSIZE)),
    )
    .unwrap();
    set_avail_idx(m, &r.tx, idx + 1);
    assert_eq!(q.process_tx(m, &mut tap, &mut st), (true, false));
    assert_eq!(tap.st().sent.len(), 3 + usize::from(QSIZE));
    assert_eq!(q.take_rekick(), 1 << TX_QUEUE);
    // A garbage avail index: nothing to pop, the loop ends at once, no re-kick.
    tap.st().on_write = None;
    set_avail_idx(m, &r.tx, idx.wrapping_add(0x8000));
    assert_eq!(q.process_tx(m, &mut tap, &mut st), (false, false));
    assert_eq!(q.take_rekick(), 0);
}

#[test]
fn event_idx_tx_on_a_full_tap_waits_for_pollout_not_kicks() {
    let (m, r) = rig();
    let mut q = event_idx_queues(&r);
    let mut tap = FakeTap::default();
    let mut st = NetStats::default();
    tap.st().full = true;
    put_tx(m, BUF, &frame(64, 1));
    add_chain(&r.tx, 0, &[(BUF, (NET_HDR_LEN + 64) as u32, 0)]);
    assert_eq!(q.process_tx(m, &mut tap, &mut st), (false, false));
    assert_eq!(q.poll_events() & libc::POLLOUT, libc::POLLOUT);
    assert_eq!(q.take_rekick(), 0, "POLLOUT resumes it, not a re-kick");
    tap.st().full = false;
    q.tx_unblocked();
    assert_eq!(q.process_tx(m, &mut tap, &mut st), (true, false));
    assert_eq!(tap.st().sent.len(), 1);
    assert_eq!(avail_event(m, &r.tx), 1);
}

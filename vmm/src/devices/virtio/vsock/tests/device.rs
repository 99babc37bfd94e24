//! The device: its queues against hostile chains.

use super::*;
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;

const RXQ: u64 = 0;
const TXQ: u64 = 0x8000;
const BUF: u64 = 0x10_0000;
const QSIZE: u16 = 16;

fn add_chain(mq: &MockSplitQueue<GuestMemoryMmap>, at: u16, descs: &[(u64, u32, u16)]) {
    let raw: Vec<RawDescriptor> = descs
        .iter()
        .enumerate()
        .map(|(i, &(a, l, f))| {
            let last = i + 1 == descs.len();
            let flags = if last { f } else { f | 1 };
            RawDescriptor::from(SplitDescriptor::new(a, l, flags, at + i as u16 + 1))
        })
        .collect();
    mq.add_desc_chains(&raw, at).unwrap();
}

type Mq = MockSplitQueue<'static, GuestMemoryMmap>;

/// An active device with rx, tx and event queues (host side `listener`): guest memory, the
/// three queues as the guest sees them, the device.
fn with_event_queue(
    listener: Option<std::os::unix::net::UnixListener>,
) -> (&'static GuestMemoryMmap, Mq, Mq, Mq, HvsockDevice) {
    const EVQ: u64 = 0x4000;
    let m: &'static GuestMemoryMmap = Box::leak(Box::new(
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap(),
    ));
    let rx = MockSplitQueue::create(m, GuestAddress(RXQ), QSIZE);
    let tx = MockSplitQueue::create(m, GuestAddress(TXQ), QSIZE);
    let ev = MockSplitQueue::create(m, GuestAddress(EVQ), QSIZE);
    let mut d = HvsockDevice::new(CID, listener, Arc::new(m.clone())).unwrap();
    assert!(d.queue_positions().is_empty(), "not active");
    d.queues = Some(Queues {
        rx: rx.create_queue().unwrap(),
        tx: tx.create_queue().unwrap(),
        event: Some(ev.create_queue().unwrap()),
    });
    (m, rx, tx, ev, d)
}

/// A host client of `path` that has asked for guest port 1024.
fn connect_1024(path: &std::path::Path) -> UnixStream {
    let mut c = UnixStream::connect(path).unwrap();
    c.write_all(b"CONNECT 1024\n").unwrap();
    c
}

/// Serves the device's host side until `done` holds (at most 5 s).
fn serve_host_until(d: &mut HvsockDevice, done: impl Fn(&HvsockDevice) -> bool) {
    let t0 = Instant::now();
    while !done(d) && t0.elapsed() < Duration::from_secs(5) {
        d.process_backend(libc::POLLIN);
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn config_space_is_le64_cid() {
    let mut b = [0u8; 8];
    read_cid_config(0x1_0000_0003, 0, &mut b);
    assert_eq!(u64::from_le_bytes(b), 0x1_0000_0003);
    let mut past = [0xaau8; 4];
    read_cid_config(3, 6, &mut past);
    assert_eq!(past, [0, 0, 0, 0]);
    read_cid_config(3, u64::MAX, &mut past);
    assert_eq!(past, [0, 0, 0, 0]);
}

#[test]
fn guest_request_through_the_queues_gets_rst() {
    let m: &'static GuestMemoryMmap = Box::leak(Box::new(
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap(),
    ));
    let rx = MockSplitQueue::create(m, GuestAddress(RXQ), QSIZE);
    let tx = MockSplitQueue::create(m, GuestAddress(TXQ), QSIZE);
    let mut d = HvsockDevice::new(CID, None, Arc::new(m.clone())).unwrap();
    d.queues = Some(Queues {
        rx: rx.create_queue().unwrap(),
        tx: tx.create_queue().unwrap(),
        event: None,
    });
    let h = guest_hdr(1024, 3000, op::REQUEST, 0, 4096, 0);
    m.write_slice(&h.encode(), GuestAddress(BUF)).unwrap();
    add_chain(&tx, 0, &[(BUF, HDR_LEN as u32, 0)]);
    add_chain(&rx, 0, &[(BUF + 0x1000, 4096, 2)]);
    assert!(d.process_queue(TX_QUEUE), "interrupt for used buffers");
    let mut b = [0u8; HDR_LEN];
    m.read_slice(&mut b, GuestAddress(BUF + 0x1000)).unwrap();
    let r = Header::parse(&b);
    assert_eq!(
        (r.op, r.dst_port, r.src_port, r.dst_cid),
        (op::RST, 3000, 1024, CID)
    );
    assert_eq!(d.stats.rx_pkts, 1);
    assert_eq!(d.muxer().stats.guest_requests, 1);
}

/// After a restore the guest gets one TRANSPORT_RESET event (id 0, 4 bytes) in its event
/// queue, and the saved queue positions are where the restored queues continue.
#[test]
fn restore_sends_transport_reset_and_keeps_positions() {
    let (m, _rx, _tx, ev, mut d) = with_event_queue(None);
    assert_eq!(d.queue_positions().len(), 3, "active");
    m.write_slice(&[0xffu8; 8], GuestAddress(BUF)).unwrap();
    add_chain(&ev, 0, &[(BUF, 8, 2)]);
    assert!(d.after_restore(None), "interrupt for the event");
    let mut b = [0u8; 8];
    m.read_slice(&mut b, GuestAddress(BUF)).unwrap();
    assert_eq!(b, [0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
    assert_eq!(ev.used().idx().load(), 1);
    assert_eq!(
        d.queue_positions(),
        vec![Some((0, 0)), Some((0, 0)), Some((1, 1))]
    );
    d.set_queue_positions(&[Some((7, 5)), None, Some((2, 2))]);
    assert_eq!(
        d.queue_positions(),
        vec![Some((7, 5)), Some((0, 0)), Some((2, 2))]
    );
    // No buffer left: a warning, no interrupt, no panic.
    assert!(!d.after_restore(None));
}

#[test]
fn random_chains_never_panic() {
    let m: &'static GuestMemoryMmap = Box::leak(Box::new(
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap(),
    ));
    let mut rng = Rng(42);
    for _ in 0..40 {
        let rx = MockSplitQueue::create(m, GuestAddress(RXQ), QSIZE);
        let tx = MockSplitQueue::create(m, GuestAddress(TXQ), QSIZE);
        let mut d = HvsockDevice::new(CID, None, Arc::new(m.clone())).unwrap();
        d.queues = Some(Queues {
            rx: rx.create_queue().unwrap(),
            tx: tx.create_queue().unwrap(),
            event: None,
        });
        let mut at = 0u16;
        while at + 3 < QSIZE {
            let n = 1 + (rng.next() % 3) as usize;
            let descs: Vec<(u64, u32, u16)> = (0..n)
                .map(|_| {
                    let addr = rng.pick(&[BUF, BUF + 40, (2 << 20) - 8, u64::MAX - 4]);
                    let len = rng.pick(&[0, 1, 43, 44, 45, 4096, 70_000, u32::MAX]);
                    (addr, len, rng.pick(&[0, 2, 4]))
                })
                .collect();
            // Plausible headers at BUF now and then.
            let mut h = guest_hdr(
                rng.next() as u32,
                rng.next() as u32,
                rng.pick(&[1, 3, 5, 7, 9]),
                rng.pick(&[0, 1, 4096]),
                4096,
                0,
            );
            if rng.next().is_multiple_of(4) {
                h.src_cid = rng.next();
            }
            m.write_slice(&h.encode(), GuestAddress(BUF)).unwrap();
            add_chain(&tx, at, &descs);
            add_chain(&rx, at, &descs);
            at += n as u16;
        }
        for q in [TX_QUEUE, RX_QUEUE, 2, usize::MAX] {
            let _ = d.process_queue(q);
        }
        let _ = d.process_backend(libc::POLLIN);
        let _ = d.rekick_queues();
        d.reset();
        assert!(d.exit_report().unwrap().starts_with("virtio-vsock: "));
    }
}

/// After a restore's transport reset, a host client's connection request waits until the
/// guest has posted its event buffer again (it has handled the reset, its old connections
/// are gone): a request it saw before would be reset with them.
#[test]
fn requests_wait_until_the_guest_has_handled_the_transport_reset() {
    let path = super::sock_path();
    let (m, rx, _tx, ev, mut d) = with_event_queue(Some(bind(&path).unwrap()));
    add_chain(&ev, 0, &[(BUF, 8, 2)]);
    add_chain(&rx, 0, &[(BUF + 0x1000, 4096, 2)]);
    assert!(d.after_restore(None));
    let _c = connect_1024(&path);
    // The request is read from the client but held: nothing for the guest.
    serve_host_until(&mut d, |d| d.muxer().stats.accepted > 0);
    for _ in 0..5 {
        assert!(!d.process_backend(libc::POLLIN));
        assert!(!d.process_queue(RX_QUEUE));
    }
    assert_eq!(d.stats.rx_pkts, 0, "held until the reset is handled");
    // The guest handled the event and posted its buffer again: the request goes.
    add_chain(&ev, 1, &[(BUF + 0x100, 8, 2)]);
    assert!(d.process_queue(EVENT_QUEUE), "interrupt for the request");
    assert_eq!(d.stats.rx_pkts, 1);
    let mut b = [0u8; HDR_LEN];
    m.read_slice(&mut b, GuestAddress(BUF + 0x1000)).unwrap();
    let h = Header::parse(&b);
    assert_eq!((h.op, h.dst_port, h.dst_cid), (op::REQUEST, 1024, CID));
    assert_eq!(d.muxer().stats.holds_expired, 0);
    let _ = std::fs::remove_file(&path);
}

/// A guest that never posts its event buffer again holds nothing for longer than
/// [`RESET_WAIT`]: the muxer's timer ends the hold.
#[test]
fn the_reset_hold_ends_after_its_bound() {
    let path = super::sock_path();
    let l = bind(&path).unwrap();
    let mut m = Muxer::new(CID, Some(l)).unwrap();
    let now = Instant::now();
    m.hold_rx(now + Duration::from_millis(50), now);
    assert!(m.rx_held());
    let _c = connect_1024(&path);
    let t0 = Instant::now();
    while !m.has_rx() && t0.elapsed() < Duration::from_secs(5) {
        let mut p = libc::pollfd {
            fd: m.epoll_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, a bounded timeout.
        unsafe { libc::poll(&mut p, 1, 1000) };
        m.poll_host(Instant::now());
    }
    assert!(!m.rx_held(), "the timer ended the hold");
    assert!(m.has_rx(), "the request is for the guest now");
    assert_eq!(m.stats.holds_expired, 1);
    let _ = std::fs::remove_file(&path);
}

/// A save notes the CID and the next host port, and whether the host side was idle: no
/// connection, no RST owed, no restore's reset the guest has not handled yet.
#[test]
fn a_save_notes_whether_the_host_side_was_idle() {
    let path = super::sock_path();
    let (_m, rx, _tx, ev, mut d) = with_event_queue(Some(bind(&path).unwrap()));
    let note = |idle| {
        Some(DeviceNote::Vsock {
            cid: CID,
            next_port: muxer::FIRST_LOCAL_PORT,
            idle,
        })
    };
    assert_eq!(d.save_note(), note(true));
    // A restore's reset not yet handled by the guest: not idle.
    add_chain(&ev, 0, &[(BUF, 8, 2)]);
    assert!(d.after_restore(None));
    assert_eq!(d.save_note(), note(false));
    add_chain(&ev, 1, &[(BUF + 0x100, 8, 2)]);
    let _ = d.process_queue(EVENT_QUEUE);
    assert_eq!(d.save_note(), note(true), "handled");
    // A live host connection: not idle, and the next port moved on.
    add_chain(&rx, 0, &[(BUF + 0x1000, 4096, 2)]);
    let _c = connect_1024(&path);
    serve_host_until(&mut d, |d| d.muxer().connections() > 0);
    assert_eq!(d.muxer().connections(), 1);
    assert_eq!(
        d.save_note(),
        Some(DeviceNote::Vsock {
            cid: CID,
            next_port: muxer::FIRST_LOCAL_PORT + 1,
            idle: false
        })
    );
    let _ = std::fs::remove_file(&path);
}

/// Restores the note's device with a host listener; the first request the guest is sent
/// (its source port) once a client connects, or None when held.
fn first_request_port(note: &DeviceNote) -> (bool, u64, Option<u32>) {
    let path = super::sock_path();
    let (m, rx, _tx, ev, mut d) = with_event_queue(Some(bind(&path).unwrap()));
    add_chain(&ev, 0, &[(BUF, 8, 2)]);
    let interrupt = d.after_restore(Some(note));
    add_chain(&rx, 0, &[(BUF + 0x1000, 4096, 2)]);
    let _c = connect_1024(&path);
    serve_host_until(&mut d, |d| d.muxer().stats.accepted > 0);
    let _ = d.process_backend(libc::POLLIN);
    let _ = std::fs::remove_file(&path);
    let events = u64::from(ev.used().idx().load());
    if d.stats.rx_pkts == 0 {
        return (interrupt, events, None);
    }
    let mut b = [0u8; HDR_LEN];
    m.read_slice(&mut b, GuestAddress(BUF + 0x1000)).unwrap();
    let h = Header::parse(&b);
    assert_eq!((h.op, h.dst_port), (op::REQUEST, 1024));
    (interrupt, events, Some(h.src_port))
}

/// Restored from an idle save with the same CID: no transport reset (the event buffer is
/// left, nothing is held), and host ports continue from the saved one. A busy save, another
/// CID, or a port below the host range: the reset, and requests held until it is handled.
#[test]
fn an_idle_save_is_restored_without_a_transport_reset() {
    let port = muxer::FIRST_LOCAL_PORT + 7;
    let note = |cid, next_port, idle| DeviceNote::Vsock {
        cid,
        next_port,
        idle,
    };
    assert_eq!(
        first_request_port(&note(CID, port, true)),
        (false, 0, Some(port))
    );
    for busy in [
        note(CID, port, false),
        note(CID + 1, port, true),
        note(CID, 5, true),
    ] {
        assert_eq!(first_request_port(&busy), (true, 1, None), "{busy:?}");
    }
}

/// A busy save with the same CID still continues the host ports (a connection the guest
/// holds from the template never meets a new one on its port).
#[test]
fn a_busy_save_continues_the_host_ports() {
    let path = super::sock_path();
    let (m, rx, _tx, ev, mut d) = with_event_queue(Some(bind(&path).unwrap()));
    add_chain(&ev, 0, &[(BUF, 8, 2)]);
    let port = muxer::FIRST_LOCAL_PORT + 3;
    assert!(d.after_restore(Some(&DeviceNote::Vsock {
        cid: CID,
        next_port: port,
        idle: false
    })));
    add_chain(&ev, 1, &[(BUF + 0x100, 8, 2)]);
    let _ = d.process_queue(EVENT_QUEUE);
    add_chain(&rx, 0, &[(BUF + 0x1000, 4096, 2)]);
    let _c = connect_1024(&path);
    serve_host_until(&mut d, |d| d.stats.rx_pkts > 0);
    let mut b = [0u8; HDR_LEN];
    m.read_slice(&mut b, GuestAddress(BUF + 0x1000)).unwrap();
    assert_eq!(Header::parse(&b).src_port, port);
    let _ = std::fs::remove_file(&path);
}

//! virtio-net tests against a fake guest memory and a fake tap.

use super::*;
use std::collections::VecDeque;
use std::sync::Mutex;
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress};

/// VRING_DESC_F_NEXT and VRING_DESC_F_WRITE.
const N: u16 = 1;
const W: u16 = 2;
const RXQ: u64 = 0;
const TXQ: u64 = 0x8000;
const BUF: u64 = 0x10_0000;
const MEM: u64 = 2 << 20;
const QSIZE: u16 = 16;

fn mem() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM as usize)]).unwrap()
}

/// What the fake tap saw and will deliver; shared so that a device can own the tap.
#[derive(Default)]
struct TapState {
    inbox: VecDeque<Vec<u8>>,
    sent: Vec<Vec<u8>>,
    reads: usize,
    /// Writes fail with EAGAIN.
    full: bool,
    /// Reads and writes fail with this errno.
    fail: Option<i32>,
    /// Runs on every successful write (a driver publishing more TX chains meanwhile).
    on_write: Option<Box<dyn FnMut() + Send>>,
}

#[derive(Clone, Default)]
struct FakeTap(Arc<Mutex<TapState>>);

impl FakeTap {
    fn with_frames(frames: &[Vec<u8>]) -> Self {
        let t = FakeTap::default();
        t.0.lock().unwrap().inbox.extend(frames.iter().cloned());
        t
    }
    fn st(&self) -> std::sync::MutexGuard<'_, TapState> {
        self.0.lock().unwrap()
    }
}

impl TapIo for FakeTap {
    fn read_frame(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut s = self.st();
        s.reads += 1;
        if let Some(e) = s.fail {
            return Err(std::io::Error::from_raw_os_error(e));
        }
        match s.inbox.pop_front() {
            Some(f) => {
                let n = f.len().min(buf.len());
                buf[..n].copy_from_slice(&f[..n]);
                Ok(n)
            }
            None => Err(ErrorKind::WouldBlock.into()),
        }
    }
    fn write_frame(&mut self, frame: &[u8]) -> std::io::Result<usize> {
        let mut s = self.st();
        if let Some(e) = s.fail {
            return Err(std::io::Error::from_raw_os_error(e));
        }
        if s.full {
            return Err(ErrorKind::WouldBlock.into());
        }
        s.sent.push(frame.to_vec());
        if let Some(f) = &mut s.on_write {
            f();
        }
        Ok(frame.len())
    }
    fn raw_fd(&self) -> RawFd {
        99
    }
}

fn frame(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect()
}

/// Stores one chain of (addr, len, flags) at table index `at`, links it, and makes it
/// available.
fn add_chain(mq: &MockSplitQueue<GuestMemoryMmap>, at: u16, descs: &[(u64, u32, u16)]) {
    let raw: Vec<RawDescriptor> = descs
        .iter()
        .enumerate()
        .map(|(i, &(a, l, f))| {
            let last = i + 1 == descs.len();
            let flags = if last { f } else { f | N };
            RawDescriptor::from(SplitDescriptor::new(a, l, flags, at + i as u16 + 1))
        })
        .collect();
    mq.add_desc_chains(&raw, at).unwrap();
}

struct Rig {
    m: GuestMemoryMmap,
    rx: MockSplitQueue<'static, GuestMemoryMmap>,
    tx: MockSplitQueue<'static, GuestMemoryMmap>,
}

/// Leaks the memory so that the mock queues can borrow it for the whole test.
fn rig() -> (&'static GuestMemoryMmap, Rig) {
    let m: &'static GuestMemoryMmap = Box::leak(Box::new(mem()));
    let rx = MockSplitQueue::create(m, GuestAddress(RXQ), QSIZE);
    let tx = MockSplitQueue::create(m, GuestAddress(TXQ), QSIZE);
    (
        m,
        Rig {
            m: m.clone(),
            rx,
            tx,
        },
    )
}

impl Rig {
    fn queues(&self) -> NetQueues {
        NetQueues::new(
            self.rx.create_queue().unwrap(),
            self.tx.create_queue().unwrap(),
        )
    }
}

fn used_idx(m: &GuestMemoryMmap, q: &MockSplitQueue<GuestMemoryMmap>) -> u16 {
    m.read_obj(GuestAddress(q.used_addr().0 + 2)).unwrap()
}

/// (head id, len) of used ring entry `i`.
fn used(m: &GuestMemoryMmap, q: &MockSplitQueue<GuestMemoryMmap>, i: u64) -> (u32, u32) {
    let e = q.used_addr().0 + 4 + 8 * i;
    (
        m.read_obj(GuestAddress(e)).unwrap(),
        m.read_obj(GuestAddress(e + 4)).unwrap(),
    )
}

fn read(m: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    m.read_slice(&mut v, GuestAddress(addr)).unwrap();
    v
}

/// A TX chain's bytes: a header (arbitrary: the device ignores it) then `f`.
fn put_tx(m: &GuestMemoryMmap, addr: u64, f: &[u8]) {
    m.write_slice(&[0xaa; NET_HDR_LEN], GuestAddress(addr))
        .unwrap();
    m.write_slice(f, GuestAddress(addr + NET_HDR_LEN as u64))
        .unwrap();
}

fn rx_header() -> Vec<u8> {
    let mut h = vec![0u8; NET_HDR_LEN];
    h[10] = 1; // num_buffers = 1, le16
    h
}

#[test]
fn parse_options() {
    assert_eq!(
        parse_net("tap=tap0").unwrap(),
        NetConfig {
            tap: "tap0".into(),
            mac: None
        }
    );
    assert_eq!(
        parse_net("mac=52:54:00:12:34:56,tap=a.b-c_d").unwrap(),
        NetConfig {
            tap: "a.b-c_d".into(),
            mac: Some([0x52, 0x54, 0, 0x12, 0x34, 0x56])
        }
    );
    for bad in [
        "",
        "tap=..",
        "tap=a b",
        "tap=x,mac=ff:ff:ff:ff:ff:ff",
        "tap=x,",
    ] {
        assert!(parse_net(bad).is_err(), "{bad}");
    }
    let mac = random_mac();
    assert_eq!(mac[0] & 3, 2, "locally administered unicast: {mac:?}");
}

#[test]
fn tap_open_errors_name_the_tap() {
    // Unprivileged or without the tun module this fails; as root with /dev/net/tun it may
    // work, so only the invalid name is certain.
    let e = Tap::open("bad/name").unwrap_err();
    assert!(e.contains("bad/name"), "{e}");
}

#[test]
#[ignore = "needs CAP_NET_ADMIN and /dev/net/tun: `make unit` runs it (scripts/unit-privileged.sh)"]
fn tap_created_by_the_vmm_vanishes_with_its_fd() {
    let name = format!("kvt{}", std::process::id() % 100_000);
    let sys = std::path::PathBuf::from(format!("/sys/class/net/{name}"));
    let mut tap =
        Tap::open(&name).unwrap_or_else(|e| panic!("a tap needs root and /dev/net/tun: {e}"));
    assert_eq!(tap.name(), name);
    assert!(sys.exists(), "tap {name} exists while open");
    // Down interface, nothing queued: a read would block.
    let mut buf = [0u8; 64];
    assert_eq!(
        tap.read_frame(&mut buf).unwrap_err().kind(),
        ErrorKind::WouldBlock
    );
    drop(tap);
    assert!(!sys.exists(), "a tap the VMM created goes with its fd");
}

#[test]
fn tx_frames_reach_the_tap() {
    let (m, r) = rig();
    let mut q = r.queues();
    let mut tap = FakeTap::default();
    let mut st = NetStats::default();
    let f1 = frame(64, 1);
    let f2 = frame(1514, 2);
    // Chain 0: header and frame in one descriptor.
    put_tx(m, BUF, &f1);
    add_chain(&r.tx, 0, &[(BUF, (NET_HDR_LEN + 64) as u32, 0)]);
    // Chain 1: header split over two descriptors, the frame over three more.
    let b = BUF + 0x1000;
    put_tx(m, b, &f2);
    let parts = [5u32, 7, 100, 1000, 414];
    let mut descs = Vec::new();
    let mut off = 0u64;
    for p in parts {
        descs.push((b + off, p, 0));
        off += u64::from(p);
    }
    add_chain(&r.tx, 1, &descs);
    let (usedq, failed) = q.process_tx(m, &mut tap, &mut st);
    assert!(usedq && !failed);
    assert_eq!(tap.st().sent, vec![f1, f2]);
    assert_eq!(used_idx(&r.m, &r.tx), 2);
    assert_eq!(used(&r.m, &r.tx, 0), (0, 0), "TX used length is 0");
    assert_eq!(used(&r.m, &r.tx, 1), (1, 0));
    assert_eq!(st.tx_frames, 2);
    // Nothing new: nothing used.
    assert_eq!(q.process_tx(m, &mut tap, &mut st), (false, false));
}

#[test]
fn rx_frames_reach_the_guest() {
    let (m, r) = rig();
    let mut q = r.queues();
    let f1 = frame(60, 3);
    let f2 = frame(1514, 4);
    let mut tap = FakeTap::with_frames(&[f1.clone(), f2.clone()]);
    let mut st = NetStats::default();
    add_chain(&r.rx, 0, &[(BUF, 1526, W)]);
    add_chain(&r.rx, 1, &[(BUF + 0x1000, 100, W), (BUF + 0x2000, 1426, W)]);
    let (usedq, failed) = q.process_rx(m, &mut tap, &mut st);
    assert!(usedq && !failed);
    assert_eq!(used_idx(&r.m, &r.rx), 2);
    assert_eq!(used(&r.m, &r.rx, 0), (0, 72));
    assert_eq!(used(&r.m, &r.rx, 1), (1, 1526));
    assert_eq!(read(m, BUF, 12), rx_header());
    assert_eq!(read(m, BUF + 12, 60), f1);
    let mut got = read(m, BUF + 0x1000, 100);
    got.extend(read(m, BUF + 0x2000, 1426));
    assert_eq!(&got[..12], &rx_header()[..]);
    assert_eq!(&got[12..], &f2[..]);
    assert_eq!(st.rx_frames, 2);
    assert!(!q.rx_pending());
    // The tap is empty: it stays polled until a frame finds no buffer.
    assert_eq!(q.poll_events() & libc::POLLIN, libc::POLLIN);
}

#[test]
fn rx_without_buffers_keeps_the_frame_and_stops_polling() {
    let (m, r) = rig();
    let mut q = r.queues();
    let frames: Vec<Vec<u8>> = (0..3).map(|i| frame(100 + i, i as u8)).collect();
    let mut tap = FakeTap::with_frames(&frames);
    let mut st = NetStats::default();
    let (usedq, failed) = q.process_rx(m, &mut tap, &mut st);
    assert!(!usedq && !failed);
    assert!(q.rx_pending(), "the frame read is kept");
    assert_eq!(tap.st().reads, 1, "one frame read, then no more");
    assert_eq!(tap.st().inbox.len(), 2, "the rest stays in the tap");
    assert_eq!(q.poll_events(), 0, "the tap is not polled without buffers");
    // The guest posts three buffers and kicks: all three frames arrive, in order.
    for i in 0..3u16 {
        add_chain(&r.rx, i, &[(BUF + u64::from(i) * 0x1000, 2048, W)]);
    }
    let (usedq, _) = q.rx_kick(m, &mut tap, &mut st);
    assert!(usedq);
    assert_eq!(used_idx(&r.m, &r.rx), 3);
    for (i, f) in frames.iter().enumerate() {
        let a = BUF + i as u64 * 0x1000;
        assert_eq!(used(&r.m, &r.rx, i as u64), (i as u32, 12 + f.len() as u32));
        assert_eq!(&read(m, a + 12, f.len()), f);
    }
    assert_eq!(st.rx_frames, 3);
    assert_eq!(st.rx_dropped, 0);
    assert!(!q.rx_pending());
    // Buffers used up but the tap is empty: polling goes on until a frame finds no buffer.
    assert_eq!(q.poll_events(), libc::POLLIN);
}

#[test]
fn rx_refuses_bad_chains_and_keeps_the_frame() {
    let (m, r) = rig();
    let mut q = r.queues();
    let f = frame(200, 9);
    let mut tap = FakeTap::with_frames(std::slice::from_ref(&f));
    let mut st = NetStats::default();
    add_chain(&r.rx, 0, &[(MEM - 100, 1526, W)]); // past the end of RAM
    add_chain(&r.rx, 1, &[(BUF, 1526, 0)]); // device-readable
    add_chain(&r.rx, 2, &[(u64::MAX - 10, 1526, W)]); // wraps
    add_chain(&r.rx, 3, &[(BUF + 0x4000, 1526, W)]); // good
    let (usedq, failed) = q.process_rx(m, &mut tap, &mut st);
    assert!(usedq && !failed);
    assert_eq!(used_idx(&r.m, &r.rx), 4);
    for i in 0..3 {
        assert_eq!(used(&r.m, &r.rx, i), (i as u32, 0), "bad chain {i}");
    }
    assert_eq!(used(&r.m, &r.rx, 3), (3, 212));
    assert_eq!(read(m, BUF + 0x4000 + 12, 200), f);
    assert_eq!(read(m, BUF, 16), vec![0; 16], "readable chain untouched");
    assert_eq!(st.bad_chains, 3);
    assert_eq!(st.rx_frames, 1);
}

#[test]
fn rx_too_small_or_header_only_chain_drops_the_frame_not_the_chain() {
    let (m, r) = rig();
    let mut q = r.queues();
    let big = frame(1514, 1);
    let small = frame(40, 2);
    let mut tap = FakeTap::with_frames(&[big, small.clone()]);
    let mut st = NetStats::default();
    add_chain(&r.rx, 0, &[(BUF, 64, W)]);
    let _ = q.process_rx(m, &mut tap, &mut st);
    assert_eq!(st.rx_dropped, 1, "the big frame does not fit");
    assert_eq!(
        used(&r.m, &r.rx, 0),
        (0, 52),
        "the chain took the small one"
    );
    assert_eq!(read(m, BUF + 12, 40), small);

    // A header-only chain and a zero-length one: no frame fits, none is delivered, the VMM
    // does not spin (one pass reads at most a queue's worth of frames).
    let (m2, r2) = rig();
    let mut q2 = r2.queues();
    let frames: Vec<Vec<u8>> = (0..40).map(|i| frame(60, i)).collect();
    let mut tap2 = FakeTap::with_frames(&frames);
    let mut st2 = NetStats::default();
    add_chain(&r2.rx, 0, &[(BUF, NET_HDR_LEN as u32, W)]);
    let (usedq, failed) = q2.process_rx(m2, &mut tap2, &mut st2);
    assert!(!usedq && !failed);
    assert_eq!(used_idx(&r2.m, &r2.rx), 0, "the chain stays available");
    assert_eq!(st2.rx_dropped, u64::from(QSIZE), "a bounded pass");
    assert_eq!(tap2.st().reads, usize::from(QSIZE));
    let (m3, r3) = rig();
    let mut q3 = r3.queues();
    let mut tap3 = FakeTap::with_frames(&frames[..1]);
    add_chain(&r3.rx, 0, &[(BUF, 0, W)]);
    let _ = q3.process_rx(m3, &mut tap3, &mut NetStats::default());
    assert_eq!(used_idx(&r3.m, &r3.rx), 0);
}

#[test]
fn tx_refuses_malformed_chains() {
    let (m, r) = rig();
    let mut q = r.queues();
    let mut tap = FakeTap::default();
    let mut st = NetStats::default();
    let good = frame(100, 5);
    put_tx(m, BUF + 0x8000, &good);
    // 0: longer than allowed (two 40000-byte descriptors).
    add_chain(&r.tx, 0, &[(BUF, 40_000, 0), (BUF + 40_000, 40_000, 0)]);
    // 2: outside guest memory.
    add_chain(&r.tx, 2, &[(MEM - 8, 64, 0)]);
    // 3: header only; 4: zero length; 5: shorter than the header.
    add_chain(&r.tx, 3, &[(BUF, NET_HDR_LEN as u32, 0)]);
    add_chain(&r.tx, 4, &[(BUF, 0, 0)]);
    add_chain(&r.tx, 5, &[(BUF, 11, 0)]);
    // 6: a device-writable descriptor in a TX chain.
    add_chain(&r.tx, 6, &[(BUF, 12, 0), (BUF + 12, 64, W)]);
    // 8: a good one after them.
    add_chain(&r.tx, 8, &[(BUF + 0x8000, 112, 0)]);
    let (usedq, failed) = q.process_tx(m, &mut tap, &mut st);
    assert!(usedq && !failed);
    assert_eq!(tap.st().sent, vec![good], "only the good frame is sent");
    assert_eq!(used_idx(&r.m, &r.tx), 7, "every chain is returned");
    assert_eq!(st.tx_dropped, 6);
    assert_eq!(st.tx_frames, 1);
}

#[test]
fn looping_and_dangling_chains_are_bounded() {
    let (m, r) = rig();
    let mut q = r.queues();
    let mut tap = FakeTap::default();
    let mut st = NetStats::default();
    // TX: a descriptor linking to itself; one linking outside the table.
    r.tx.desc_table()
        .store(0, RawDescriptor::from(SplitDescriptor::new(BUF, 64, N, 0)))
        .unwrap();
    r.tx.desc_table()
        .store(
            1,
            RawDescriptor::from(SplitDescriptor::new(BUF, 64, N, 999)),
        )
        .unwrap();
    for (slot, head) in [0u16, 1].iter().enumerate() {
        m.write_obj(
            *head,
            GuestAddress(r.tx.avail_addr().0 + 4 + 2 * slot as u64),
        )
        .unwrap();
    }
    m.write_obj(2u16, GuestAddress(r.tx.avail_addr().0 + 2))
        .unwrap();
    let _ = q.process_tx(m, &mut tap, &mut st);
    assert!(tap.st().sent.is_empty(), "cut chains are not sent");
    assert_eq!(used_idx(&r.m, &r.tx), 2);
    // RX: the same loop, writable.
    r.rx.desc_table()
        .store(
            0,
            RawDescriptor::from(SplitDescriptor::new(BUF, 4096, N | W, 0)),
        )
        .unwrap();
    m.write_obj(0u16, GuestAddress(r.rx.avail_addr().0 + 4))
        .unwrap();
    m.write_obj(1u16, GuestAddress(r.rx.avail_addr().0 + 2))
        .unwrap();
    let mut tap = FakeTap::with_frames(&[frame(60, 0)]);
    let _ = q.process_rx(m, &mut tap, &mut st);
    assert_eq!(used(&r.m, &r.rx, 0), (0, 0));
    assert!(q.rx_pending(), "the frame waits for a good chain");
}

#[test]
fn garbage_rings_do_not_panic() {
    let (m, r) = rig();
    let mut q = r.queues();
    // Random descriptor tables, avail rings and indexes.
    let mut junk = vec![0u8; 0x8000];
    for round in 0..20u8 {
        assert!(crate::devices::virtio::rng::host_random(&mut junk));
        m.write_slice(&junk[..0x1000], GuestAddress(RXQ)).unwrap();
        m.write_slice(&junk[0x1000..0x2000], GuestAddress(TXQ))
            .unwrap();
        let mut tap = FakeTap::with_frames(&[frame(60, round), frame(1514, round)]);
        let mut st = NetStats::default();
        let _ = q.process_tx(m, &mut tap, &mut st);
        let _ = q.rx_kick(m, &mut tap, &mut st);
    }
}

#[test]
fn tx_waits_for_a_full_tap() {
    let (m, r) = rig();
    let mut q = r.queues();
    let mut tap = FakeTap::default();
    let mut st = NetStats::default();
    let f = frame(80, 7);
    put_tx(m, BUF, &f);
    add_chain(&r.tx, 0, &[(BUF, 92, 0)]);
    tap.st().full = true;
    let (usedq, _) = q.process_tx(m, &mut tap, &mut st);
    assert!(!usedq, "the chain is put back");
    assert_eq!(used_idx(&r.m, &r.tx), 0);
    assert_eq!(q.poll_events() & libc::POLLOUT, libc::POLLOUT);
    // A kick meanwhile does nothing (no busy retry).
    assert_eq!(q.process_tx(m, &mut tap, &mut st), (false, false));
    tap.st().full = false;
    q.tx_unblocked();
    let (usedq, _) = q.process_tx(m, &mut tap, &mut st);
    assert!(usedq);
    assert_eq!(tap.st().sent, vec![f]);
    assert_eq!(q.poll_events() & libc::POLLOUT, 0);
}

#[test]
fn device_through_its_trait() {
    let m = Arc::new(mem());
    let rxq = MockSplitQueue::create(&*m, GuestAddress(RXQ), QSIZE);
    let txq = MockSplitQueue::create(&*m, GuestAddress(TXQ), QSIZE);
    let tap = FakeTap::with_frames(&[frame(60, 1)]);
    let mac = [0x02, 1, 2, 3, 4, 5];
    let mut dev = NetDevice::new(tap.clone(), mac, m.clone());
    assert_eq!(dev.device_type(), VIRTIO_ID_NET);
    assert_eq!(dev.queue_max_sizes(), &[QUEUE_SIZE, QUEUE_SIZE]);
    let mut cfg = [0xffu8; 8];
    dev.read_config(0, &mut cfg);
    assert_eq!(cfg, [2, 1, 2, 3, 4, 5, 0, 0]);
    let mut c = [0u8; 2];
    dev.read_config(u64::MAX, &mut c);
    assert_eq!(c, [0, 0]);
    assert_eq!(dev.backend_poll(), None, "not active");
    assert!(!dev.process_backend(libc::POLLIN));
    let qc = |q: &MockSplitQueue<GuestMemoryMmap>| QueueConfig {
        max_size: QUEUE_SIZE,
        size: QSIZE,
        ready: true,
        desc: q.desc_table_addr().0,
        avail: q.avail_addr().0,
        used: q.used_addr().0,
    };
    assert!(dev
        .activate(FEATURES, &[qc(&rxq), QueueConfig::default()])
        .is_err());
    dev.activate(FEATURES, &[qc(&rxq), qc(&txq)]).unwrap();
    assert_eq!(dev.backend_poll(), Some((99, libc::POLLIN)));
    // The tap has a frame, the guest no buffer: kept, polling stops.
    assert!(!dev.process_backend(libc::POLLIN));
    assert_eq!(dev.backend_poll(), Some((99, 0)));
    // The guest posts a buffer and kicks: delivered, interrupt.
    let raw = RawDescriptor::from(SplitDescriptor::new(BUF, 2048, W, 0));
    rxq.add_desc_chains(&[raw], 0).unwrap();
    assert!(dev.process_queue(RX_QUEUE));
    assert_eq!(dev.stats.rx_frames, 1);
    // TX kick.
    put_tx(&m, BUF + 0x1000, &frame(70, 2));
    let raw = RawDescriptor::from(SplitDescriptor::new(BUF + 0x1000, 82, 0, 0));
    txq.add_desc_chains(&[raw], 0).unwrap();
    assert!(dev.process_queue(TX_QUEUE));
    assert_eq!(tap.st().sent.len(), 1);
    // Snapshot state: where each queue stands, and a restore putting them back.
    assert!(dev.snapshot_supported().is_ok());
    assert_eq!(dev.queue_positions(), vec![Some((1, 1)), Some((1, 1))]);
    dev.set_queue_positions(&[Some((5, 4)), None]);
    assert_eq!(dev.queue_positions(), vec![Some((5, 4)), Some((1, 1))]);
    dev.set_queue_positions(&[Some((1, 1))]);
    assert!(!dev.process_queue(7), "no such queue");
    // The exit summary, also through the boxed trait object the VMM holds.
    let boxed: &dyn VirtioDevice = &dev;
    assert_eq!(
        boxed.exit_report().as_deref(),
        Some(
            "virtio-net: rx_frames=1 rx_dropped=0 tx_frames=1 tx_dropped=0 bad_chains=0 \
             rx_bytes=60 tx_bytes=70"
        )
    );
    // The tap goes away: POLLERR stops the polling for good.
    tap.st().fail = Some(libc::EBADFD);
    let _ = dev.process_backend(libc::POLLERR);
    assert_eq!(dev.backend_poll(), Some((99, 0)));
    assert!(!dev.process_queue(RX_QUEUE));
    dev.reset();
    assert_eq!(dev.backend_poll(), None);
    assert!(!dev.process_queue(TX_QUEUE));
}

#[test]
fn rx_read_error_reports_a_failed_tap() {
    let (m, r) = rig();
    let mut q = r.queues();
    let mut tap = FakeTap::default();
    tap.st().fail = Some(libc::EBADFD);
    add_chain(&r.rx, 0, &[(BUF, 2048, W)]);
    let (usedq, failed) = q.process_rx(m, &mut tap, &mut NetStats::default());
    assert!(!usedq && failed);
}

mod event_idx;

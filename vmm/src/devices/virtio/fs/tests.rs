use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::sync::Mutex;
use std::thread::JoinHandle;

use vm_memory::Bytes;
use vmm_sys_util::eventfd::EFD_NONBLOCK;

use super::*;
use crate::test_util::scratch;

const GET_FEATURES: u32 = 1;
const SET_FEATURES: u32 = 2;
const SET_OWNER: u32 = 3;
const SET_MEM_TABLE: u32 = 5;
const SET_VRING_NUM: u32 = 8;
const SET_VRING_ADDR: u32 = 9;
const SET_VRING_BASE: u32 = 10;
const GET_VRING_BASE: u32 = 11;
const SET_VRING_KICK: u32 = 12;
const SET_VRING_CALL: u32 = 13;
const GET_PROTOCOL_FEATURES: u32 = 15;
const SET_PROTOCOL_FEATURES: u32 = 16;
const GET_QUEUE_NUM: u32 = 17;
const SET_VRING_ENABLE: u32 = 18;
const NEED_REPLY: u32 = 0x8;

type Log = Arc<Mutex<Vec<(u32, Vec<u8>)>>>;

/// A scripted vhost-user backend: answers the GET requests, acks what asks for an ack, logs
/// every request (code, body); `stop_after` requests, it hangs up. (The fuzz targets use it
/// too.)
pub(crate) fn fake_backend(
    mut s: UnixStream,
    features: u64,
    protocol: u64,
    stop_after: usize,
) -> (Log, JoinHandle<()>) {
    let log: Log = Arc::default();
    let l = log.clone();
    let t = std::thread::spawn(move || {
        let mut n = 0;
        loop {
            if n == stop_after {
                return;
            }
            let mut hdr = [0u8; 12];
            if s.read_exact(&mut hdr).is_err() {
                return;
            }
            let code = u32::from_le_bytes(hdr[0..4].try_into().unwrap());
            let flags = u32::from_le_bytes(hdr[4..8].try_into().unwrap());
            let size = u32::from_le_bytes(hdr[8..12].try_into().unwrap());
            let mut body = vec![0u8; size as usize];
            if s.read_exact(&mut body).is_err() {
                return;
            }
            l.lock().unwrap().push((code, body.clone()));
            n += 1;
            let reply = |v: &[u8]| {
                let mut m = Vec::new();
                m.extend_from_slice(&code.to_le_bytes());
                m.extend_from_slice(&0x5u32.to_le_bytes());
                m.extend_from_slice(&(v.len() as u32).to_le_bytes());
                m.extend_from_slice(v);
                m
            };
            let msg = match code {
                GET_FEATURES => reply(&features.to_le_bytes()),
                GET_PROTOCOL_FEATURES => reply(&protocol.to_le_bytes()),
                GET_QUEUE_NUM => reply(&2u64.to_le_bytes()),
                GET_VRING_BASE => reply(&[body[0], body[1], body[2], body[3], 0, 0, 0, 0]),
                _ if flags & NEED_REPLY != 0 => reply(&0u64.to_le_bytes()),
                _ => continue,
            };
            if s.write_all(&msg).is_err() {
                return;
            }
        }
    });
    (log, t)
}

pub(crate) const FS_FEATURES: u64 = (1 << 32) | (1 << 29) | (1 << 28) | (1 << 30) | (1 << 26);

fn codes(log: &Log) -> Vec<u32> {
    log.lock().unwrap().iter().map(|(c, _)| *c).collect()
}

fn mem() -> Arc<GuestMemoryMmap> {
    Arc::new(shared_guest_memory(&[(GuestAddress(0), 1 << 20)]).unwrap())
}

fn cfg() -> FsConfig {
    parse_fs("socket=/run/fs.sock,tag=kataShared").unwrap()
}

fn queues() -> Vec<QueueConfig> {
    (0..NUM_QUEUES as u64)
        .map(|i| QueueConfig {
            max_size: 16,
            size: 16,
            ready: true,
            desc: 0x1000 + i * 0x1000,
            avail: 0x4000 + i * 0x1000,
            used: 0x8000 + i * 0x1000,
        })
        .collect()
}

fn device(backend: FsBackend, mem: &Arc<GuestMemoryMmap>) -> FsDevice {
    let kicks = (0..NUM_QUEUES)
        .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
        .collect();
    let call = EventFd::new(EFD_NONBLOCK).unwrap();
    FsDevice::new(&cfg(), backend, mem.clone(), kicks, call)
}

#[test]
fn parses_and_validates_fs_options() {
    let c = parse_fs("socket=/run/kata/vfs.sock,tag=kataShared,queue-size=256").unwrap();
    assert_eq!(c.socket, PathBuf::from("/run/kata/vfs.sock"));
    assert_eq!(c.tag, "kataShared");
    assert_eq!(c.queue_size, 256);
    let c = parse_fs("tag=x,socket=s").unwrap();
    assert_eq!(c.queue_size, DEFAULT_QUEUE_SIZE);
    let tag36 = "t".repeat(36);
    assert!(parse_fs(&format!("socket=s,tag={tag36}")).is_ok());
    for bad in [
        "",
        "socket=s",
        "tag=t",
        "socket=,tag=t",
        "socket=s,tag=",
        &format!("socket=s,tag={tag36}x"),
        "socket=s,tag=a b",
        "socket=s,tag=a\u{e9}",
        "socket=s,tag=a\tb",
        "socket=s,tag=t,tag=u",
        "socket=s,socket=s2,tag=t",
        "socket=s,tag=t,queue-size=0",
        "socket=s,tag=t,queue-size=1",
        "socket=s,tag=t,queue-size=100",
        "socket=s,tag=t,queue-size=65536",
        "socket=s,tag=t,queue-size=x",
        "socket=s,tag=t,cache=auto",
        "socket=/a,b,tag=t",
    ] {
        assert!(parse_fs(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn config_space_is_tag_and_one_request_queue() {
    let mut all = [0xaau8; 40];
    read_fs_config("kataShared", 0, &mut all);
    assert_eq!(&all[..10], b"kataShared");
    assert!(all[10..36].iter().all(|b| *b == 0));
    assert_eq!(u32::from_le_bytes(all[36..40].try_into().unwrap()), 1);
    let mut w = [0u8; 4];
    read_fs_config("kataShared", 36, &mut w);
    assert_eq!(u32::from_le_bytes(w), NUM_REQUEST_QUEUES);
    let tag36 = "x".repeat(36);
    read_fs_config(&tag36, 32, &mut w);
    assert_eq!(&w, b"xxxx");
    let mut past = [0xaau8; 4];
    read_fs_config("t", 40, &mut past);
    assert_eq!(past, [0; 4]);
    read_fs_config("t", u64::MAX, &mut past);
    assert_eq!(past, [0; 4]);
}

#[test]
fn feature_negotiation() {
    // The guest never sees PROTOCOL_FEATURES, LOG_ALL or anything we do not support.
    assert_eq!(
        offered_features(FS_FEATURES),
        (1 << 32) | (1 << 29) | (1 << 28)
    );
    assert_eq!(offered_features(0), 0);
    // The driver's ack, clipped to what was offered, plus PROTOCOL_FEATURES for the backend.
    let driver = (1 << 32) | (1 << 29) | (1 << 5);
    assert_eq!(
        backend_features_to_set(driver, FS_FEATURES),
        (1 << 32) | (1 << 29) | (1 << 30)
    );
    assert_eq!(
        backend_features_to_set(driver, 1 << 32),
        1 << 32,
        "no PROTOCOL_FEATURES when the backend lacks it"
    );
    let wanted = wanted_protocol_features();
    assert!(wanted.contains(VhostUserProtocolFeatures::REPLY_ACK));
    assert!(!wanted.contains(VhostUserProtocolFeatures::BACKEND_REQ));
}

#[test]
fn memfd_guest_ram_is_shared_sealed_and_fd_backed() {
    let m = shared_guest_memory(&[(GuestAddress(0), 1 << 20), (GuestAddress(1 << 32), 2 << 20)])
        .unwrap();
    let regions = memory_regions(&m).unwrap();
    assert_eq!(regions.len(), 2);
    assert_eq!(regions[1].guest_phys_addr, 1 << 32);
    assert_eq!(regions[1].memory_size, 2 << 20);
    assert!(regions
        .iter()
        .all(|r| r.mmap_handle >= 0 && r.mmap_offset == 0));
    // A write through the guest mapping is visible through the fd (MAP_SHARED), which is
    // what the backend maps.
    m.write_slice(b"shared", GuestAddress((1 << 32) + 4096))
        .unwrap();
    let r = m.iter().nth(1).unwrap();
    let mut b = [0u8; 6];
    r.file_offset()
        .unwrap()
        .file()
        .read_exact_at(&mut b, 4096)
        .unwrap();
    assert_eq!(&b, b"shared");
    // Sealed: nobody can shrink or grow guest RAM under us.
    let f = m.iter().next().unwrap().file_offset().unwrap().file();
    assert!(f.set_len(4096).is_err());
    assert!(f.set_len(4 << 20).is_err());
    // Anonymous memory has no fds to pass: refused, not sent half.
    let anon = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    assert!(matches!(memory_regions(&anon), Err(FsError::NoFile(0))));
}

#[test]
fn connect_failure_names_the_socket() {
    let dir = std::env::temp_dir().join(format!("kata-vmm-fs-test-{}", std::process::id()));
    let path = dir.join("missing.sock");
    let e = connect(&path, HANDSHAKE_TIMEOUT, None)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.starts_with(&format!(
            "virtio-fs: cannot connect to vhost-user socket {}: ",
            path.display()
        )),
        "{e}"
    );
    assert!(!e.contains('\n'));
}

#[test]
fn handshake_and_activation_send_the_vhost_user_setup() {
    let (a, b) = UnixStream::pair().unwrap();
    let proto = (VhostUserProtocolFeatures::MQ
        | VhostUserProtocolFeatures::REPLY_ACK
        | VhostUserProtocolFeatures::BACKEND_REQ)
        .bits();
    let (log, t) = fake_backend(b, FS_FEATURES, proto, usize::MAX);
    let backend = from_stream(a, Path::new("fake")).unwrap();
    assert_eq!(backend.features(), FS_FEATURES);
    assert_eq!(
        codes(&log),
        [
            SET_OWNER,
            GET_FEATURES,
            GET_PROTOCOL_FEATURES,
            SET_PROTOCOL_FEATURES,
            GET_QUEUE_NUM
        ]
    );
    let acked = log.lock().unwrap()[3].1.clone();
    assert_eq!(
        u64::from_le_bytes(acked[..8].try_into().unwrap()),
        (VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK).bits()
    );
    let m = mem();
    let mut dev = device(backend, &m);
    assert_eq!(dev.device_type(), 26);
    assert_eq!(dev.queue_max_sizes(), &[DEFAULT_QUEUE_SIZE; 2]);
    assert!(dev.vhost_interrupts());
    log.lock().unwrap().clear();
    dev.activate((1 << 32) | (1 << 29), &queues()).unwrap();
    let mut want = vec![SET_FEATURES, SET_MEM_TABLE];
    for _ in 0..NUM_QUEUES {
        want.extend([
            SET_VRING_NUM,
            SET_VRING_ADDR,
            SET_VRING_BASE,
            SET_VRING_CALL,
            SET_VRING_KICK,
            SET_VRING_ENABLE,
        ]);
    }
    assert_eq!(codes(&log), want);
    {
        let l = log.lock().unwrap();
        let f = u64::from_le_bytes(l[0].1[..8].try_into().unwrap());
        assert_eq!(f, (1 << 32) | (1 << 29) | (1 << 30));
        // SET_MEM_TABLE: one region, guest address 0, 1 MiB, at our mapping.
        let body = &l[1].1;
        assert_eq!(u32::from_le_bytes(body[0..4].try_into().unwrap()), 1);
        let u = |o: usize| u64::from_le_bytes(body[o..o + 8].try_into().unwrap());
        assert_eq!((u(8), u(16)), (0, 1 << 20));
        let host0 = m.get_host_address(GuestAddress(0)).unwrap() as u64;
        assert_eq!(u(24), host0);
        // SET_VRING_ADDR of queue 1: index, flags, then host addresses of desc/used/avail.
        let addr = &l[9].1;
        let u = |o: usize| u64::from_le_bytes(addr[o..o + 8].try_into().unwrap());
        assert_eq!(u32::from_le_bytes(addr[0..4].try_into().unwrap()), 1);
        assert_eq!(u(8), host0 + 0x2000, "descriptor table");
        assert_eq!(u(16), host0 + 0x9000, "used ring");
        assert_eq!(u(24), host0 + 0x5000, "available ring");
    }
    log.lock().unwrap().clear();
    dev.reset();
    assert_eq!(
        codes(&log),
        [
            SET_VRING_ENABLE,
            GET_VRING_BASE,
            SET_VRING_ENABLE,
            GET_VRING_BASE
        ]
    );
    drop(dev);
    t.join().unwrap();
}

#[test]
fn a_backend_that_accepts_and_never_answers_is_an_error_after_the_bound() {
    // A listener that accepts (the kernel does, from its backlog) and never reads: the
    // handshake ends with a timeout error naming the request, not a VMM stuck in setup.
    let dir = scratch("fs-silent");
    let path = dir.join("silent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let sock = UnixStream::connect(&path).unwrap();
    let t0 = std::time::Instant::now();
    let e = within(
        std::time::Duration::from_millis(300),
        sock,
        &path,
        from_stream,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains("did not finish the vhost-user handshake within 0.3s"),
        "{e}"
    );
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        t0.elapsed()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_backend_started_after_the_connect_serves_the_queued_connection() {
    // The launcher binds the socket and hands it to a backend still starting: the VMM's
    // connection waits in the listen queue, its handshake runs while the caller goes on.
    let dir = scratch("fs-late");
    let path = dir.join("late.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let pending = connect(&path, std::time::Duration::from_secs(20), None).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let (s, _) = listener.accept().unwrap();
    let proto = (VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK).bits();
    let (log, _t) = fake_backend(s, FS_FEATURES, proto, usize::MAX);
    let backend = pending.finish().unwrap();
    assert_eq!(backend.features(), FS_FEATURES);
    assert_eq!(codes(&log)[..2], [SET_OWNER, GET_FEATURES]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_backend_that_dies_before_it_accepts_is_an_error_at_once() {
    // The backend (the listening socket's last holder) exits before it serves the queued
    // connection: the handshake fails when the listener closes, not at the bound.
    let dir = scratch("fs-dead");
    let path = dir.join("dead.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let t0 = std::time::Instant::now();
    let pending = connect(&path, std::time::Duration::from_secs(20), None).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    drop(listener);
    let e = pending.finish().err().unwrap().to_string();
    assert!(e.contains("SET_OWNER") || e.contains("GET_FEATURES"), "{e}");
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        t0.elapsed()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn handshake_timeout_is_an_fs_option() {
    let c = parse_fs("socket=/s,tag=t,handshake-timeout=5").unwrap();
    assert_eq!(c.handshake_timeout, std::time::Duration::from_secs(5));
    assert_eq!(cfg().handshake_timeout, HANDSHAKE_TIMEOUT);
    for bad in ["0", "3601", "x", ""] {
        let e = parse_fs(&format!("socket=/s,tag=t,handshake-timeout={bad}"))
            .err()
            .unwrap();
        assert!(e.contains("invalid handshake-timeout"), "{bad}: {e}");
    }
    assert!(
        parse_fs("socket=/s,tag=t,handshake-timeout=5,handshake-timeout=6")
            .err()
            .unwrap()
            .contains("given twice")
    );
}

#[test]
fn a_backend_that_hangs_up_is_an_error_not_a_hang() {
    // Closed before the handshake.
    let (a, b) = UnixStream::pair().unwrap();
    drop(b);
    assert!(from_stream(a, Path::new("gone")).is_err());
    // Hangs up in the middle of a reply: an error, not a hang.
    let (a, mut b) = UnixStream::pair().unwrap();
    let t = std::thread::spawn(move || {
        let mut hdr = [0u8; 24];
        let _ = b.read_exact(&mut hdr); // SET_OWNER + GET_FEATURES headers
        let _ = b.write_all(&[1, 0, 0, 0, 5, 0, 0, 0, 8, 0]); // cut short
    });
    let e = from_stream(a, Path::new("cut")).err().unwrap();
    assert!(e.to_string().contains("GET_FEATURES"), "{e}");
    t.join().unwrap();
    // No VERSION_1: refused at startup.
    let (a, b) = UnixStream::pair().unwrap();
    let (_log, t) = fake_backend(b, 1 << 29, 0, usize::MAX);
    let e = from_stream(a, Path::new("old")).err().unwrap();
    assert!(e.to_string().contains("VIRTIO_F_VERSION_1"), "{e}");
    t.join().unwrap();
    // Gone after the handshake (virtiofsd died): DRIVER_OK fails with an error, a reset
    // only warns, nothing panics.
    let (a, b) = UnixStream::pair().unwrap();
    let (_log, t) = fake_backend(b, 1 << 32, 0, 2);
    let backend = from_stream(a, Path::new("dies")).unwrap();
    t.join().unwrap();
    let m = mem();
    let mut dev = device(backend, &m);
    let e = dev.activate(1 << 32, &queues()).unwrap_err();
    assert!(e.contains("virtio-fs: vhost-user"), "{e}");
    dev.reset();
    // Not all queues ready: refused before talking to the backend.
    let mut q = queues();
    q[1].ready = false;
    assert!(dev.activate(1 << 32, &q).is_err());
}

/// A template's backend-less slot (`--fs-slot`), bound by its guest and saved, is taken over
/// at a restore by a device with a backend, in both data paths: the vhost-user setup is sent
/// then (not when a guest probes), and a slot saved with another tag is refused, naming both.
#[test]
fn a_restored_device_takes_over_a_template_slot() {
    use crate::devices::virtio::MmioTransport;
    let slot_cfg = parse_fs_slot("tag=kataShared,queue-size=256").unwrap();
    let m = mem();
    let mut slot = MmioTransport::new(slot::FsSlotDevice::new(&slot_cfg), m.clone());
    slot::tests::bind_like_a_driver(&mut slot);
    let saved = slot.save_state().unwrap();
    for bounce in [false, true] {
        let (a, b) = UnixStream::pair().unwrap();
        let proto = (VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK).bits();
        let (log, t) = fake_backend(b, FS_FEATURES, proto, usize::MAX);
        let backend = from_stream(a, Path::new("fake")).unwrap();
        log.lock().unwrap().clear();
        let dev = if bounce {
            FsDevice::new_bounce(&cfg(), backend, m.clone()).unwrap()
        } else {
            device(backend, &m)
        };
        let mut restored = MmioTransport::new(dev, m.clone());
        restored.restore_state(&saved).unwrap();
        let sent = codes(&log);
        assert_eq!(sent[..2], [SET_FEATURES, SET_MEM_TABLE], "bounce {bounce}");
        assert_eq!(sent.iter().filter(|c| **c == SET_VRING_ENABLE).count(), 2);
        drop(restored);
        t.join().unwrap();
    }
    let (a, b) = UnixStream::pair().unwrap();
    let (_log, t) = fake_backend(b, FS_FEATURES, 0, usize::MAX);
    let other = parse_fs("socket=/run/fs.sock,tag=other").unwrap();
    let dev = FsDevice::new_bounce(
        &other,
        from_stream(a, Path::new("fake")).unwrap(),
        m.clone(),
    );
    let mut restored = MmioTransport::new(dev.unwrap(), m);
    assert_eq!(
        restored.restore_state(&saved).unwrap_err(),
        "the snapshot's device here is \"kataShared\", this one is \"other\""
    );
    drop(restored);
    t.join().unwrap();
}

#[test]
fn parses_and_validates_fs_slot_options() {
    let c = parse_fs_slot("tag=kata-rs").unwrap();
    assert_eq!(
        (c.tag.as_str(), c.queue_size),
        ("kata-rs", DEFAULT_QUEUE_SIZE)
    );
    assert_eq!(parse_fs_slot("queue-size=64,tag=t").unwrap().queue_size, 64);
    for (bad, why) in [
        ("", "unknown fs-slot option"),
        ("queue-size=64", "tag=TAG is required"),
        ("tag=a,tag=b", "given twice"),
        ("tag=a b", "invalid fs tag"),
        ("tag=t,queue-size=3", "invalid queue-size"),
        ("tag=t,socket=/x", "unknown fs-slot option"),
    ] {
        let e = parse_fs_slot(bad).unwrap_err();
        assert!(e.contains(why), "{bad}: {e}");
    }
}

/// In bounce mode the connect thread sends the backend its whole ring setup (no guest is
/// needed for the shadow rings): the device's activation at a restore then sends nothing, a
/// reset stops the rings, and the next activation sets them up again.
#[test]
fn bounce_mode_sets_the_backend_up_on_the_connect_thread() {
    let dir = scratch("fs-bounce-ready");
    let path = dir.join("b.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let pending = connect(
        &path,
        std::time::Duration::from_secs(20),
        Some(DEFAULT_QUEUE_SIZE),
    )
    .unwrap();
    let (s, _) = listener.accept().unwrap();
    let proto = (VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK).bits();
    let (log, t) = fake_backend(s, FS_FEATURES, proto, usize::MAX);
    let backend = pending.finish().unwrap();
    let handshake = 5;
    let setup = codes(&log)[handshake..].to_vec();
    assert_eq!(setup[..2], [SET_FEATURES, SET_MEM_TABLE]);
    assert_eq!(setup.len(), 2 + 6 * NUM_QUEUES, "{setup:?}");
    let m = mem();
    let mut dev = FsDevice::new_bounce(&cfg(), backend, m.clone()).unwrap();
    let n = codes(&log).len();
    let guest_queues: Vec<QueueConfig> = queues()
        .into_iter()
        .map(|q| QueueConfig {
            max_size: DEFAULT_QUEUE_SIZE,
            ..q
        })
        .collect();
    dev.activate(1 << 32, &guest_queues).unwrap();
    assert_eq!(codes(&log).len(), n, "activation sent nothing");
    dev.reset();
    dev.activate(1 << 32, &guest_queues).unwrap();
    let again = codes(&log)[n..].to_vec();
    assert_eq!(again[..2], [SET_VRING_ENABLE, GET_VRING_BASE]);
    assert_eq!(again[4..6], [SET_FEATURES, SET_MEM_TABLE], "{again:?}");
    drop(dev);
    t.join().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

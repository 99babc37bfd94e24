//! virtio-blk tests against a fake guest memory and a temp file.

use super::*;
use std::io::Write;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;

/// VRING_DESC_F_WRITE and VRING_DESC_F_NEXT.
const W: u16 = 2;
const N: u16 = 1;
const HDR: u64 = 0x10_0000;
const DATA: u64 = 0x11_0000;
const STATUS: u64 = 0x12_0000;
const DISK_SECTORS: u64 = 8;

fn mem() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap()
}

struct TempFile(PathBuf);
impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A disk of 8 sectors, sector i filled with byte i.
fn temp_disk(name: &str) -> TempFile {
    let path = std::env::temp_dir().join(format!("kata-vmm-blk-{}-{name}", std::process::id()));
    let mut f = File::create(&path).unwrap();
    for i in 0..DISK_SECTORS {
        f.write_all(&[i as u8; SECTOR_SIZE as usize]).unwrap();
    }
    TempFile(path)
}

fn open(t: &TempFile, read_only: bool) -> Disk {
    Disk::open(
        &DiskConfig {
            path: t.0.clone(),
            read_only,
        },
        "kata-rs-test-serial-too-long",
    )
    .unwrap()
}

fn d(addr: u64, len: u32, flags: u16) -> RawDescriptor {
    RawDescriptor::from(Descriptor::new(addr, len, flags, 0))
}

fn header(m: &GuestMemoryMmap, kind: u32, sector: u64) {
    m.write_obj(kind.to_le(), GuestAddress(HDR)).unwrap();
    m.write_obj(0u32, GuestAddress(HDR + 4)).unwrap();
    m.write_obj(sector.to_le(), GuestAddress(HDR + 8)).unwrap();
}

/// Runs one chain (`descs`, linked in order) through `disk`: (used len, status byte).
fn run(m: &GuestMemoryMmap, disk: &mut Disk, descs: &[RawDescriptor]) -> (u32, u8) {
    let mq = MockSplitQueue::create(m, GuestAddress(0), 16);
    m.write_obj(0xeeu8, GuestAddress(STATUS)).unwrap();
    let chain = mq.build_desc_chain(descs).unwrap();
    let used = disk.handle(m, chain);
    (used, m.read_obj(GuestAddress(STATUS)).unwrap())
}

fn rw_chain(data_flags: u16, len: u32) -> Vec<RawDescriptor> {
    vec![d(HDR, 16, 0), d(DATA, len, data_flags), d(STATUS, 1, W)]
}

#[test]
fn parse_disk_options() {
    assert_eq!(
        parse_disk("/a/b.img").unwrap(),
        DiskConfig {
            path: "/a/b.img".into(),
            read_only: false
        }
    );
    assert!(parse_disk("/a/b.img,ro").unwrap().read_only);
    assert!(!parse_disk("x,rw").unwrap().read_only);
    assert!(parse_disk("x,sync").is_err());
    assert!(parse_disk(",ro").is_err());
    assert!(parse_disk("").is_err());
}

#[test]
fn open_errors_name_the_path() {
    let e = Disk::open(
        &DiskConfig {
            path: "/nonexistent/disk.img".into(),
            read_only: true,
        },
        "x",
    )
    .err()
    .unwrap();
    assert!(e.contains("/nonexistent/disk.img"), "{e}");
}

#[test]
fn read_write_flush_get_id() {
    let t = temp_disk("rw");
    let m = mem();
    let mut disk = open(&t, false);
    assert_eq!(disk.sectors(), DISK_SECTORS);

    // Read sectors 2..4.
    header(&m, req::IN, 2);
    assert_eq!(run(&m, &mut disk, &rw_chain(W, 1024)), (1025, status::OK));
    let mut b = [0u8; 1024];
    m.read_slice(&mut b, GuestAddress(DATA)).unwrap();
    assert!(b[..512].iter().all(|&x| x == 2) && b[512..].iter().all(|&x| x == 3));

    // Write sector 7 (the last one), from two data descriptors.
    m.write_slice(&[0xab; 256], GuestAddress(DATA)).unwrap();
    m.write_slice(&[0xcd; 256], GuestAddress(DATA + 0x1000))
        .unwrap();
    header(&m, req::OUT, 7);
    let chain = [
        d(HDR, 16, 0),
        d(DATA, 256, 0),
        d(DATA + 0x1000, 256, 0),
        d(STATUS, 1, W),
    ];
    assert_eq!(run(&m, &mut disk, &chain), (1, status::OK));
    let f = std::fs::read(&t.0).unwrap();
    assert!(f[7 * 512..7 * 512 + 256].iter().all(|&x| x == 0xab));
    assert!(f[7 * 512 + 256..].iter().all(|&x| x == 0xcd));
    assert!(
        f[6 * 512..7 * 512].iter().all(|&x| x == 6),
        "neighbour intact"
    );

    // Flush: header and status only.
    header(&m, req::FLUSH, 0);
    assert_eq!(
        run(&m, &mut disk, &[d(HDR, 16, 0), d(STATUS, 1, W)]),
        (1, status::OK)
    );

    // GET_ID: 20 bytes, the serial truncated.
    header(&m, req::GET_ID, 0);
    assert_eq!(run(&m, &mut disk, &rw_chain(W, 64)), (21, status::OK));
    let mut id = [0u8; ID_LEN];
    m.read_slice(&mut id, GuestAddress(DATA)).unwrap();
    assert_eq!(&id, b"kata-rs-test-serial-");
}

#[test]
fn read_only_refuses_writes() {
    let t = temp_disk("ro");
    let m = mem();
    let mut disk = open(&t, true);
    let dev = BlkDevice::new(open(&t, true), Arc::new(mem()));
    assert_ne!(dev.features() & (1 << VIRTIO_BLK_F_RO), 0);
    m.write_slice(&[0xff; 512], GuestAddress(DATA)).unwrap();
    header(&m, req::OUT, 0);
    assert_eq!(run(&m, &mut disk, &rw_chain(0, 512)), (1, status::IOERR));
    assert!(std::fs::read(&t.0).unwrap()[..512].iter().all(|&x| x == 0));
    // Reads and flushes still work.
    header(&m, req::IN, 1);
    assert_eq!(run(&m, &mut disk, &rw_chain(W, 512)), (513, status::OK));
    header(&m, req::FLUSH, 0);
    assert_eq!(
        run(&m, &mut disk, &[d(HDR, 16, 0), d(STATUS, 1, W)]),
        (1, status::OK)
    );
}

/// Found by the `chains_blk` fuzz target: a status descriptor starting in RAM but running
/// past its end got the request served (here a disk write) and its status byte written,
/// where every other buffer outside guest RAM makes a chain malformed.
#[test]
fn status_buffer_outside_ram_is_refused_without_io() {
    let t = temp_disk("status-oob");
    let m = mem();
    let mut disk = open(&t, false);
    let end = 2 << 20;
    m.write_slice(&[0xab; 512], GuestAddress(DATA)).unwrap();
    m.write_obj(0xeeu8, GuestAddress(end - 1)).unwrap();
    header(&m, req::OUT, 0);
    let chain = [d(HDR, 16, 0), d(DATA, 512, 0), d(end - 1, 16, W)];
    assert_eq!(run(&m, &mut disk, &chain).0, 0, "used length 0");
    assert_eq!(
        m.read_obj::<u8>(GuestAddress(end - 1)).unwrap(),
        0xee,
        "no status"
    );
    assert!(
        std::fs::read(&t.0).unwrap()[..512].iter().all(|&x| x == 0),
        "no I/O"
    );
}

#[test]
fn sector_bounds_are_checked() {
    let t = temp_disk("bounds");
    let m = mem();
    let mut disk = open(&t, false);
    for (kind, sector, len) in [
        (req::IN, 7, 1024),             // runs past the end
        (req::IN, 8, 512),              // starts at the end
        (req::OUT, 7, 1024),            // write past the end
        (req::IN, u64::MAX, 512),       // sector * 512 overflows
        (req::IN, u64::MAX / 512, 512), // start + len overflows
    ] {
        let flags = if kind == req::IN { W } else { 0 };
        header(&m, kind, sector);
        assert_eq!(
            run(&m, &mut disk, &rw_chain(flags, len)),
            (1, status::IOERR),
            "type {kind} sector {sector} len {len}"
        );
    }
    let f = std::fs::read(&t.0).unwrap();
    assert_eq!(f.len() as u64, DISK_SECTORS * SECTOR_SIZE, "file not grown");
}

#[test]
fn malformed_requests() {
    let t = temp_disk("bad");
    let m = mem();
    let mut disk = open(&t, false);
    // Unknown type.
    header(&m, 99, 0);
    assert_eq!(run(&m, &mut disk, &rw_chain(W, 512)), (1, status::UNSUPP));
    // Partial sector.
    header(&m, req::IN, 0);
    assert_eq!(run(&m, &mut disk, &rw_chain(W, 100)), (1, status::IOERR));
    // Read into a device-readable buffer / write from a device-writable one.
    assert_eq!(run(&m, &mut disk, &rw_chain(0, 512)), (1, status::IOERR));
    header(&m, req::OUT, 0);
    assert_eq!(run(&m, &mut disk, &rw_chain(W, 512)), (1, status::IOERR));
    // Header device-writable or too short.
    let bad_hdr = [d(HDR, 16, W), d(DATA, 512, W), d(STATUS, 1, W)];
    assert_eq!(run(&m, &mut disk, &bad_hdr), (1, status::IOERR));
    let short_hdr = [d(HDR, 8, 0), d(DATA, 512, W), d(STATUS, 1, W)];
    assert_eq!(run(&m, &mut disk, &short_hdr), (1, status::IOERR));
    // Data outside guest RAM.
    header(&m, req::IN, 0);
    let oob = [d(HDR, 16, 0), d((2 << 20) - 256, 512, W), d(STATUS, 1, W)];
    assert_eq!(run(&m, &mut disk, &oob), (1, status::IOERR));
    // Status byte not writable, outside RAM, or the chain too short: nothing happens.
    assert_eq!(
        run(
            &m,
            &mut disk,
            &[d(HDR, 16, 0), d(DATA, 512, W), d(STATUS, 1, 0)]
        ),
        (0, 0xee)
    );
    assert_eq!(run(&m, &mut disk, &[d(HDR, 16, 0), d(u64::MAX, 1, W)]).0, 0);
    assert_eq!(run(&m, &mut disk, &[d(HDR, 16, 0)]), (0, 0xee));
    assert!(std::fs::read(&t.0).unwrap()[..512].iter().all(|&x| x == 0));
}

#[test]
fn device_queue_and_config() {
    let t = temp_disk("dev");
    let m = Arc::new(mem());
    let mq = MockSplitQueue::create(&*m, GuestAddress(0), 16);
    header(&m, req::IN, 5);
    let descs = [
        RawDescriptor::from(Descriptor::new(HDR, 16, N, 1)),
        RawDescriptor::from(Descriptor::new(DATA, 512, W | N, 2)),
        RawDescriptor::from(Descriptor::new(STATUS, 1, W, 0)),
    ];
    mq.add_desc_chains(&descs, 0).unwrap();
    let mut dev = BlkDevice::new(open(&t, false), m.clone());
    let mut cap = [0u8; 8];
    dev.read_config(0, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), DISK_SECTORS);
    let mut seg = [0u8; 4];
    dev.read_config(12, &mut seg);
    assert_eq!(u32::from_le_bytes(seg), SEG_MAX);
    dev.read_config(u64::MAX, &mut seg);
    assert_eq!(seg, [0; 4]);
    assert_eq!(dev.features() & (1 << VIRTIO_BLK_F_RO), 0);
    let cfg = QueueConfig {
        max_size: QUEUE_SIZE,
        size: 16,
        ready: true,
        desc: mq.desc_table_addr().0,
        avail: mq.avail_addr().0,
        used: mq.used_addr().0,
    };
    dev.activate(dev.features(), &[cfg]).unwrap();
    assert!(dev.process_queue(0));
    let used_len: u32 = m.read_obj(GuestAddress(mq.used_addr().0 + 8)).unwrap();
    assert_eq!(used_len, 513);
    let mut b = [0u8; 512];
    m.read_slice(&mut b, GuestAddress(DATA)).unwrap();
    assert!(b.iter().all(|&x| x == 5));
}

/// Every request type, and what a `blkN` queue worker does around them (wait on its epoll
/// and read its queue eventfd, signal the irqfd and re-kick eventfds), under the worker's seccomp filter.
#[test]
fn requests_run_under_the_block_io_seccomp_filter() {
    use crate::seccomp::{filter, ThreadClass};
    use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
    let prog = filter(ThreadClass::BlockIo).unwrap();
    let t = temp_disk("seccomp");
    let m = mem();
    let mut disk = open(&t, false);
    let evt = EventFd::new(EFD_NONBLOCK).unwrap();
    evt.write(1).unwrap();
    // The worker's event manager registers its eventfds before the filter goes in.
    let epoll = Epoll::new().unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&evt);
    epoll
        .ctl(ControlOperation::Add, fd, EpollEvent::new(EventSet::IN, 0))
        .unwrap();
    // SAFETY: the child serves requests (glibc's malloc is fork-safe) and ends with _exit;
    // the parent only waits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let code = (|| {
            if prog.apply().is_err() {
                return 3;
            }
            let mut ready = [EpollEvent::default()];
            if epoll.wait(0, &mut ready).ok() != Some(1) || evt.read().ok() != Some(1) {
                return 4;
            }
            header(&m, req::IN, 2);
            if run(&m, &mut disk, &rw_chain(W, 1024)) != (1025, status::OK) {
                return 5;
            }
            header(&m, req::OUT, 7);
            if run(&m, &mut disk, &rw_chain(0, 512)) != (1, status::OK) {
                return 6;
            }
            header(&m, req::FLUSH, 0);
            if run(&m, &mut disk, &[d(HDR, 16, 0), d(STATUS, 1, W)]) != (1, status::OK) {
                return 7;
            }
            header(&m, req::GET_ID, 0);
            if run(&m, &mut disk, &rw_chain(W, 64)) != (21, status::OK) {
                return 8;
            }
            if evt.write(1).is_err() {
                return 9;
            }
            0
        })();
        // SAFETY: ends the forked child without running the test harness's exit path.
        unsafe { libc::_exit(code) };
    }
    let mut st = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut st, 0) }, pid);
    assert!(
        libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
        "child status {st:#x} (SIGSYS: {})",
        libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGSYS
    );
}

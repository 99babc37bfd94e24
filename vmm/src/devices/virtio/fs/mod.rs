//! virtio-fs device (id 26) as a vhost-user frontend: the file system is served by a
//! vhost-user-fs backend (`virtiofsd`) on a Unix socket. Two data paths:
//!
//! - **direct** (a cold boot, a `--restore-memory copy` restore): the backend maps guest RAM
//!   and serves the guest's rings itself; the VMM only does the control path (below);
//! - **bounce** (a `--restore-memory map` restore, the default: guest RAM is the snapshot's
//!   memory file mapped copy-on-write, which the backend cannot share): the VMM serves the
//!   guest's rings and forwards each request through shadow rings in a small shared area, the
//!   only memory the backend maps ([`bounce`]).
//!
//! The direct path in detail:
//! At startup, before the jail (a path is needed), [`connect`] opens the backend's socket and
//! starts, on a thread of its own, the handshake that needs no guest (it overlaps the making
//! of guest RAM; [`PendingBackend::finish`] joins it before the device is created): `SET_OWNER`, `GET_FEATURES` (what we can offer the
//! guest), and, when the backend has `VHOST_USER_F_PROTOCOL_FEATURES`, the protocol features
//! (`MQ` to check the queue count, `REPLY_ACK` so that every setup message is acknowledged and
//! a backend failure is seen at once). When the guest's driver sets DRIVER_OK, the vCPU thread
//! that wrote the status sends the rest over the same socket: `SET_FEATURES` (what the driver
//! acked, plus `VHOST_USER_F_PROTOCOL_FEATURES`), `SET_MEM_TABLE` (every guest RAM region with
//! its memfd: guest RAM is a shared memfd mapping whenever `--fs` is given), and per queue
//! `SET_VRING_NUM/ADDR/BASE/CALL/KICK` and `SET_VRING_ENABLE`. Kick = the KVM ioeventfd on
//! QueueNotify (datamatch = queue index), call = the KVM irqfd of the device's IRQ, as for
//! any vhost backend: the data path goes guest -> KVM -> backend -> KVM -> guest and never
//! through a VMM thread.
//!
//! The backend is untrusted: every reply is checked by the `vhost` crate, writes never raise
//! SIGPIPE (`MSG_NOSIGNAL`), a closed socket is an error, and the memfds are sealed against
//! shrinking (a backend cannot truncate guest RAM under the VMM). No socket timeout: the
//! crate retries `EAGAIN` in a loop, so a timeout would turn a silent backend into a busy
//! loop; a backend that keeps the socket open and never answers blocks the vCPU thread that
//! wrote DRIVER_OK (SIGTERM still ends the VMM: the main thread serves it). If the backend goes away while the
//! guest runs, the main thread sees the socket hang up and logs one warning; the VM carries on
//! (the guest's FUSE requests then wait forever, other devices are unaffected). A failed setup
//! at DRIVER_OK puts the device in DEVICE_NEEDS_RESET (the guest's mount fails) and is logged.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use vhost::vhost_user::message::{
    VhostUserHeaderFlag, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use crate::devices::virtio::{
    QueueConfig, VirtioDevice, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX,
    VIRTIO_RING_F_INDIRECT_DESC,
};

pub use virtio_bindings::virtio_ids::VIRTIO_ID_FS;
/// Bytes of the tag field in the config space (NUL padded, not necessarily terminated).
pub const TAG_LEN: usize = 36;
/// Queues: hiprio (0) and one request queue (1).
pub const NUM_QUEUES: usize = 2;
/// Request queues advertised in the config space.
pub const NUM_REQUEST_QUEUES: u32 = 1;
/// Default queue size (`queue-size=` changes it).
pub const DEFAULT_QUEUE_SIZE: u16 = 1024;
/// Largest `queue-size=` (virtio split rings allow 32768; virtiofsd takes up to that).
pub const MAX_QUEUE_SIZE: u16 = 32768;

/// `VHOST_USER_F_PROTOCOL_FEATURES`: a vhost-user bit, never offered to the guest.
pub const VHOST_USER_F_PROTOCOL_FEATURES: u64 = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();

/// Guest features we offer when the backend has them too.
pub const OFFERABLE_FEATURES: u64 =
    (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_RING_F_INDIRECT_DESC) | (1 << VIRTIO_RING_F_EVENT_IDX);

/// Guest features of bounce mode and of a backend-less slot ([`slot`]): what the VMM's own
/// ring handling implements, without event indexes (kicks and interrupts per batch keep the
/// forwarding simple). A template's slot offers these so that both data paths of a restore
/// accept what its driver acked.
pub const SLOT_FEATURES: u64 = (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_RING_F_INDIRECT_DESC);

/// Protocol features we ack when the backend offers them.
pub fn wanted_protocol_features() -> VhostUserProtocolFeatures {
    VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK
}

/// `--fs socket=PATH,tag=TAG[,queue-size=N][,handshake-timeout=SECS]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsConfig {
    /// The backend's vhost-user socket.
    pub socket: PathBuf,
    /// The tag the guest mounts (`mount -t virtiofs TAG DIR`).
    pub tag: String,
    /// Size of each queue.
    pub queue_size: u16,
    /// How long the backend may take to answer the startup handshake (a backend handed a
    /// socket its launcher bound may still be starting when the VMM connects).
    pub handshake_timeout: std::time::Duration,
}

/// `--fs-slot tag=TAG[,queue-size=N]`: a virtio-fs device whose backend comes at a restore
/// (see [`slot`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsSlotConfig {
    /// The tag the guest's driver reads (a restore's `--fs` must have the same).
    pub tag: String,
    /// Size of each queue (a restore's `--fs` must have the same).
    pub queue_size: u16,
}

/// Parses the value of `--fs-slot` (clap value parser).
pub fn parse_fs_slot(s: &str) -> Result<FsSlotConfig, String> {
    let mut tag = None;
    let mut queue_size = None;
    for kv in s.split(',') {
        match kv.split_once('=') {
            Some(("tag", v)) if tag.is_none() => tag = Some(check_tag(v)?),
            Some(("queue-size", v)) if queue_size.is_none() => {
                queue_size = Some(parse_queue_size(v)?)
            }
            Some(("tag" | "queue-size", _)) => return Err(format!("{kv:?} given twice")),
            _ => {
                return Err(format!(
                    "unknown fs-slot option {kv:?} (expected tag=TAG or queue-size=N)"
                ))
            }
        }
    }
    Ok(FsSlotConfig {
        tag: tag.ok_or("tag=TAG is required")?,
        queue_size: queue_size.unwrap_or(DEFAULT_QUEUE_SIZE),
    })
}

/// Largest `handshake-timeout=` in seconds.
pub const MAX_HANDSHAKE_TIMEOUT_SECS: u64 = 3600;

/// Parses the value of `--fs` (clap value parser). A socket path cannot contain a comma.
pub fn parse_fs(s: &str) -> Result<FsConfig, String> {
    let mut socket = None;
    let mut tag = None;
    let mut queue_size = None;
    let mut handshake_timeout = None;
    for kv in s.split(',') {
        match kv.split_once('=') {
            Some(("socket", v)) if socket.is_none() => {
                if v.is_empty() || v.contains('\0') {
                    return Err("socket= needs a path".into());
                }
                socket = Some(PathBuf::from(v));
            }
            Some(("tag", v)) if tag.is_none() => tag = Some(check_tag(v)?),
            Some(("queue-size", v)) if queue_size.is_none() => {
                queue_size = Some(parse_queue_size(v)?)
            }
            Some(("handshake-timeout", v)) if handshake_timeout.is_none() => {
                handshake_timeout = Some(parse_handshake_timeout(v)?)
            }
            Some(("socket" | "tag" | "queue-size" | "handshake-timeout", _)) => {
                return Err(format!("{kv:?} given twice"))
            }
            _ => {
                return Err(format!(
                    "unknown fs option {kv:?} (expected socket=PATH, tag=TAG, queue-size=N or \
                     handshake-timeout=SECS)"
                ))
            }
        }
    }
    Ok(FsConfig {
        socket: socket.ok_or("socket=PATH is required")?,
        tag: tag.ok_or("tag=TAG is required")?,
        queue_size: queue_size.unwrap_or(DEFAULT_QUEUE_SIZE),
        handshake_timeout: handshake_timeout.unwrap_or(HANDSHAKE_TIMEOUT),
    })
}

/// A tag: 1..=36 bytes of printable ASCII other than space and comma.
fn check_tag(v: &str) -> Result<String, String> {
    let ok =
        !v.is_empty() && v.len() <= TAG_LEN && v.bytes().all(|b| b.is_ascii_graphic() && b != b',');
    if ok {
        Ok(v.to_string())
    } else {
        Err(format!(
            "invalid fs tag {v:?} (1-{TAG_LEN} printable ASCII characters, no space or comma)"
        ))
    }
}

fn parse_handshake_timeout(v: &str) -> Result<std::time::Duration, String> {
    match v.parse::<u64>() {
        Ok(n) if (1..=MAX_HANDSHAKE_TIMEOUT_SECS).contains(&n) => {
            Ok(std::time::Duration::from_secs(n))
        }
        _ => Err(format!(
            "invalid handshake-timeout {v:?} (seconds, 1..={MAX_HANDSHAKE_TIMEOUT_SECS})"
        )),
    }
}

fn parse_queue_size(v: &str) -> Result<u16, String> {
    match v.parse::<u16>() {
        Ok(n) if (2..=MAX_QUEUE_SIZE).contains(&n) && n.is_power_of_two() => Ok(n),
        _ => Err(format!(
            "invalid queue-size {v:?} (a power of two, 2..={MAX_QUEUE_SIZE})"
        )),
    }
}

/// Setting up or running the vhost-user connection failed.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The socket cannot be connected.
    #[error("virtio-fs: cannot connect to vhost-user socket {0}: {1}")]
    Connect(PathBuf, std::io::Error),
    /// A vhost-user request failed (the backend refused, closed, timed out or lied).
    #[error("virtio-fs: vhost-user {0}: {1}")]
    Request(&'static str, vhost::Error),
    /// The backend lacks something we need.
    #[error("virtio-fs: the vhost-user backend {0}")]
    Backend(String),
    /// Guest RAM has a region without a file (guest RAM must be memfd backed with --fs).
    #[error("virtio-fs: guest RAM region at {0:#x} is not backed by a file")]
    NoFile(u64),
    /// A queue address is not in guest RAM (the transport validated it; defensive).
    #[error("virtio-fs: queue {0} ring address is outside guest RAM")]
    Ring(usize),
}

fn req(what: &'static str) -> impl FnOnce(vhost::Error) -> FsError {
    move |e| FsError::Request(what, e)
}

/// The guest features to offer, given the backend's.
pub fn offered_features(backend: u64) -> u64 {
    backend & OFFERABLE_FEATURES
}

/// The features to `SET_FEATURES` at activation: what the driver acked (never more than the
/// backend has), plus `VHOST_USER_F_PROTOCOL_FEATURES` when the backend has it (then the rings
/// start disabled and need `SET_VRING_ENABLE`).
pub fn backend_features_to_set(driver: u64, backend: u64) -> u64 {
    (driver & offered_features(backend)) | (backend & VHOST_USER_F_PROTOCOL_FEATURES)
}

/// Encodes the config space (`tag[36]`, le32 `num_request_queues`) and copies the requested
/// slice of it; bytes past the end read as 0.
pub fn read_fs_config(tag: &str, offset: u64, data: &mut [u8]) {
    let mut cfg = [0u8; TAG_LEN + 4];
    let t = tag.as_bytes();
    let n = t.len().min(TAG_LEN);
    cfg[..n].copy_from_slice(&t[..n]);
    cfg[TAG_LEN..].copy_from_slice(&NUM_REQUEST_QUEUES.to_le_bytes());
    for (i, b) in data.iter_mut().enumerate() {
        *b = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(i))
            .and_then(|o| cfg.get(o).copied())
            .unwrap_or(0);
    }
}

/// A connected backend after the guest-independent handshake.
pub struct FsBackend {
    vu: Frontend,
    features: u64,
    socket: PathBuf,
    /// Bounce mode's area and shadow rings, their vhost-user setup sent already ([`connect`]
    /// with a bounce queue size): the guest-independent part of a bounce-mode activation.
    bounce_ready: Option<Box<BounceState>>,
}

impl FsBackend {
    /// The backend's virtio features.
    pub fn features(&self) -> u64 {
        self.features
    }

    /// The socket fd, for the main thread to notice a hang-up (poll with no events).
    pub fn raw_fd(&self) -> RawFd {
        self.vu.as_raw_fd()
    }
}

/// How long the handshake with the backend may take by default (`handshake-timeout=`): a
/// virtiofsd that accepted but never answers must not hold the VMM in its setup (before its
/// vsock socket exists) until the shim gives up on the agent.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A backend connected, its handshake running on a thread of its own.
pub struct PendingBackend {
    handshake: std::thread::JoinHandle<Result<FsBackend, FsError>>,
    socket: PathBuf,
}

impl PendingBackend {
    /// Waits for the handshake (bounded by the timeout [`connect`] was given).
    pub fn finish(self) -> Result<FsBackend, FsError> {
        self.handshake.join().unwrap_or_else(|_| {
            Err(FsError::Backend(format!(
                "at {}: the handshake thread panicked",
                self.socket.display()
            )))
        })
    }
}

/// Connects to the backend at `path` (before the jail; no socket there fails at once) and
/// starts the handshake on a thread, bounded by `limit`: the caller makes guest RAM
/// meanwhile and joins it with [`PendingBackend::finish`]. A launcher that binds the socket
/// and hands it to the backend (virtiofsd `--fd`) can start both at once: the connection
/// waits in the listen queue until the backend serves it. With `bounce_queue_size` (bounce
/// mode, queues of that size) the thread also makes the bounce area and sends the backend
/// its whole ring setup, which needs no guest: a restore then activates the device without
/// a vhost-user round trip.
pub fn connect(
    path: &Path,
    limit: std::time::Duration,
    bounce_queue_size: Option<u16>,
) -> Result<PendingBackend, FsError> {
    let sock = UnixStream::connect(path).map_err(|e| FsError::Connect(path.to_path_buf(), e))?;
    let socket = path.to_path_buf();
    let for_thread = socket.clone();
    let handshake = std::thread::Builder::new()
        .name("vhost-connect".into())
        .spawn(move || {
            within(limit, sock, &for_thread, |sock, path| {
                let mut backend = from_stream(sock, path)?;
                if let Some(size) = bounce_queue_size {
                    let state = BounceState::new(size)
                        .map_err(|e| FsError::Backend(format!("bounce area: {e}")))?;
                    state.set_up_backend(&mut backend)?;
                    backend.bounce_ready = Some(Box::new(state));
                }
                Ok(backend)
            })
        })
        .map_err(|e| FsError::Connect(path.to_path_buf(), e))?;
    Ok(PendingBackend { handshake, socket })
}

/// The exchange `talk` (the handshake of [`from_stream`], and more), ended after `limit`: a
/// socket timeout cannot bound it (the vhost crate retries a read that timed out), so a
/// watchdog thread shuts the socket down at the deadline, and the blocked read sees the end
/// of the stream.
fn within(
    limit: std::time::Duration,
    sock: UnixStream,
    path: &Path,
    talk: impl FnOnce(UnixStream, &Path) -> Result<FsBackend, FsError>,
) -> Result<FsBackend, FsError> {
    let guard = sock
        .try_clone()
        .map_err(|e| FsError::Connect(path.to_path_buf(), e))?;
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::Builder::new()
        .name("vhost-handshake".into())
        .spawn(move || {
            let expired = matches!(
                finished.recv_timeout(limit),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout)
            );
            if expired {
                let _ = guard.shutdown(std::net::Shutdown::Both);
            }
            expired
        })
        .map_err(|e| FsError::Connect(path.to_path_buf(), e))?;
    let r = talk(sock, path);
    let _ = done.send(());
    let expired = watchdog.join().unwrap_or(false);
    match r {
        Err(e) if expired => Err(FsError::Backend(format!(
            "at {} did not finish the vhost-user handshake within {}s ({e})",
            path.display(),
            limit.as_secs_f64()
        ))),
        r => r,
    }
}

/// The handshake of [`connect`] on an already connected socket (`path` names it in errors).
pub fn from_stream(sock: UnixStream, path: &Path) -> Result<FsBackend, FsError> {
    let mut vu = Frontend::from_stream(sock, NUM_QUEUES as u64);
    vu.set_owner().map_err(req("SET_OWNER"))?;
    let features = vu.get_features().map_err(req("GET_FEATURES"))?;
    if features & (1 << VIRTIO_F_VERSION_1) == 0 {
        return Err(FsError::Backend(format!(
            "does not offer VIRTIO_F_VERSION_1 (features {features:#x})"
        )));
    }
    if features & VHOST_USER_F_PROTOCOL_FEATURES != 0 {
        let offered = vu
            .get_protocol_features()
            .map_err(req("GET_PROTOCOL_FEATURES"))?;
        let acked = offered & wanted_protocol_features();
        vu.set_protocol_features(acked)
            .map_err(req("SET_PROTOCOL_FEATURES"))?;
        if acked.contains(VhostUserProtocolFeatures::MQ) {
            let n = vu.get_queue_num().map_err(req("GET_QUEUE_NUM"))?;
            if n < NUM_QUEUES as u64 {
                return Err(FsError::Backend(format!(
                    "has {n} queues, virtio-fs needs {NUM_QUEUES}"
                )));
            }
        }
        if acked.contains(VhostUserProtocolFeatures::REPLY_ACK) {
            vu.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
        }
    }
    Ok(FsBackend {
        vu,
        features,
        socket: path.to_path_buf(),
        bounce_ready: None,
    })
}

/// The vhost-user memory table: every guest RAM region with its file, offset and our mapping.
pub fn memory_regions(mem: &GuestMemoryMmap) -> Result<Vec<VhostUserMemoryRegionInfo>, FsError> {
    mem.iter()
        .map(|r| {
            let fo = r.file_offset().ok_or(FsError::NoFile(r.start_addr().0))?;
            Ok(VhostUserMemoryRegionInfo {
                guest_phys_addr: r.start_addr().0,
                memory_size: r.len(),
                userspace_addr: r.as_ptr() as u64,
                mmap_offset: fo.start(),
                mmap_handle: fo.file().as_raw_fd(),
            })
        })
        .collect()
}

/// Data bytes of the bounce area for the hiprio queue (FORGET requests: small).
pub const BOUNCE_HIPRIO_DATA: u64 = 64 << 10;
/// Data bytes of the bounce area for the request queue: room for several of the largest
/// FUSE requests (1 MiB of data plus headers) at once; pages are allocated when first used.
pub const BOUNCE_REQUEST_DATA: u64 = 8 << 20;

/// How requests reach the backend.
enum DataPath {
    /// The backend maps guest RAM (shared memfds) and serves the guest's rings itself: kick
    /// and call are KVM's ioeventfds and irqfd.
    Direct { kicks: Vec<EventFd>, call: EventFd },
    /// The VMM serves the guest's rings and forwards through shadow rings (see [`bounce`]).
    Bounce(Box<BounceState>),
}

/// Bounce mode's state.
struct BounceState {
    /// The guest queues' size the shadow rings were made for.
    queue_size: u16,
    area: bounce::BounceArea,
    rings: [bounce::ShadowRing; NUM_QUEUES],
    /// The guest's queues while active.
    guest: Vec<virtio_queue::Queue>,
    /// Our kicks to the backend, one per queue.
    kicks: Vec<EventFd>,
    /// The backend's call (both queues), polled by the event loop.
    call: EventFd,
    /// Guest chains returned with length 0 (malformed, too large, unreadable).
    refused: u64,
}

/// The virtio-fs device.
pub struct FsDevice {
    tag: String,
    queue_sizes: [u16; NUM_QUEUES],
    mem: Arc<GuestMemoryMmap>,
    backend: FsBackend,
    path: DataPath,
    started: bool,
    /// Bounce mode: the backend's ring setup was sent before the device existed; the first
    /// activation skips it (a reset stops the rings, and the next activation sends it).
    backend_ready: bool,
}

impl FsDevice {
    /// The device for `backend` in direct mode: `kicks[i]` must be the ioeventfd of queue i,
    /// `call` the irqfd of the device's IRQ; guest RAM must be shared memfds.
    pub fn new(
        cfg: &FsConfig,
        backend: FsBackend,
        mem: Arc<GuestMemoryMmap>,
        kicks: Vec<EventFd>,
        call: EventFd,
    ) -> Self {
        FsDevice {
            tag: cfg.tag.clone(),
            queue_sizes: [cfg.queue_size; NUM_QUEUES],
            mem,
            backend,
            path: DataPath::Direct { kicks, call },
            started: false,
            backend_ready: false,
        }
    }

    /// The device for `backend` in bounce mode (guest RAM of any kind; the backend maps only
    /// the bounce area, made here unless [`connect`] made it and set the backend up already:
    /// call before the jail). The transport serves its queues.
    pub fn new_bounce(
        cfg: &FsConfig,
        mut backend: FsBackend,
        mem: Arc<GuestMemoryMmap>,
    ) -> std::io::Result<Self> {
        let (state, backend_ready) = match backend.bounce_ready.take() {
            Some(s) if s.queue_size == cfg.queue_size => (s, true),
            _ => (Box::new(BounceState::new(cfg.queue_size)?), false),
        };
        Ok(FsDevice {
            tag: cfg.tag.clone(),
            queue_sizes: [cfg.queue_size; NUM_QUEUES],
            mem,
            backend,
            path: DataPath::Bounce(state),
            started: false,
            backend_ready,
        })
    }

    fn start(&mut self, features: u64, queues: &[QueueConfig]) -> Result<(), FsError> {
        let protocol = self.backend.features & VHOST_USER_F_PROTOCOL_FEATURES != 0;
        match &mut self.path {
            DataPath::Direct { kicks, call } => {
                let vu = &mut self.backend.vu;
                vu.set_features(backend_features_to_set(features, self.backend.features))
                    .map_err(req("SET_FEATURES"))?;
                let regions = memory_regions(&self.mem)?;
                vu.set_mem_table(&regions).map_err(req("SET_MEM_TABLE"))?;
                for (i, q) in queues.iter().take(NUM_QUEUES).enumerate() {
                    // vhost-user ring addresses are in the frontend's address space (the
                    // backend translates them through the memory table's userspace addresses).
                    let host = |gpa: u64| {
                        self.mem
                            .get_host_address(GuestAddress(gpa))
                            .map(|p| p as u64)
                            .map_err(|_| FsError::Ring(i))
                    };
                    let cfg = ring_config(q.max_size, q.size, [q.desc, q.used, q.avail], host)?;
                    setup_vring(vu, i, &cfg, call, &kicks[i], protocol)?;
                }
            }
            DataPath::Bounce(b) => {
                let mut guest = Vec::with_capacity(NUM_QUEUES);
                for i in 0..NUM_QUEUES {
                    let q = QueueConfig::build_ready_queue(queues, i, &*self.mem, features)
                        .map_err(|e| FsError::Backend(format!("queue {i}: {e}")))?;
                    guest.push(q);
                }
                if !std::mem::take(&mut self.backend_ready) {
                    b.set_up_backend(&mut self.backend)?;
                }
                b.guest = guest;
            }
        }
        self.started = true;
        Ok(())
    }

    fn stop(&mut self) -> Result<(), FsError> {
        let protocol = self.backend.features & VHOST_USER_F_PROTOCOL_FEATURES != 0;
        let vu = &mut self.backend.vu;
        for i in 0..NUM_QUEUES {
            if protocol {
                vu.set_vring_enable(i, false)
                    .map_err(req("SET_VRING_ENABLE"))?;
            }
            // GET_VRING_BASE stops the ring in the backend.
            vu.get_vring_base(i).map_err(req("GET_VRING_BASE"))?;
        }
        Ok(())
    }
}

/// A ring's `SET_VRING_ADDR` data: its `[descriptor table, used, available]` addresses
/// translated by `host` into the frontend's address space (as vhost-user wants).
fn ring_config(
    max_size: u16,
    size: u16,
    [desc, used, avail]: [u64; 3],
    host: impl Fn(u64) -> Result<u64, FsError>,
) -> Result<VringConfigData, FsError> {
    Ok(VringConfigData {
        queue_max_size: max_size,
        queue_size: size,
        flags: 0,
        desc_table_addr: host(desc)?,
        used_ring_addr: host(used)?,
        avail_ring_addr: host(avail)?,
        log_addr: None,
    })
}

/// `SET_VRING_NUM/ADDR/BASE/CALL/KICK` (and `SET_VRING_ENABLE` with protocol features) of
/// ring `i`.
fn setup_vring(
    vu: &mut Frontend,
    i: usize,
    cfg: &VringConfigData,
    call: &EventFd,
    kick: &EventFd,
    protocol: bool,
) -> Result<(), FsError> {
    vu.set_vring_num(i, cfg.queue_size)
        .map_err(req("SET_VRING_NUM"))?;
    vu.set_vring_addr(i, cfg).map_err(req("SET_VRING_ADDR"))?;
    vu.set_vring_base(i, 0).map_err(req("SET_VRING_BASE"))?;
    vu.set_vring_call(i, call).map_err(req("SET_VRING_CALL"))?;
    vu.set_vring_kick(i, kick).map_err(req("SET_VRING_KICK"))?;
    if protocol {
        vu.set_vring_enable(i, true)
            .map_err(req("SET_VRING_ENABLE"))?;
    }
    Ok(())
}

impl BounceState {
    /// The bounce area and shadow rings for guest queues of `queue_size`, and the eventfds.
    fn new(queue_size: u16) -> std::io::Result<Self> {
        let (hiprio, next) = bounce::RingLayout::at(0, queue_size, BOUNCE_HIPRIO_DATA);
        let (request, end) = bounce::RingLayout::at(next, queue_size, BOUNCE_REQUEST_DATA);
        let area = bounce::BounceArea::new(end)?;
        let nb = || EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK);
        Ok(BounceState {
            queue_size,
            area,
            rings: [
                bounce::ShadowRing::new(hiprio),
                bounce::ShadowRing::new(request),
            ],
            guest: Vec::new(),
            kicks: vec![nb()?, nb()?],
            call: nb()?,
            refused: 0,
        })
    }

    /// Sends `backend` the shadow rings' setup: `SET_FEATURES` (no guest feature beyond
    /// VERSION_1: the shadow rings use neither indirect descriptors nor event indexes),
    /// `SET_MEM_TABLE` (the bounce area only), each ring. Needs no guest.
    fn set_up_backend(&self, backend: &mut FsBackend) -> Result<(), FsError> {
        let protocol_bit = backend.features & VHOST_USER_F_PROTOCOL_FEATURES;
        let protocol = protocol_bit != 0;
        let vu = &mut backend.vu;
        let set = (1 << VIRTIO_F_VERSION_1) | protocol_bit;
        vu.set_features(set).map_err(req("SET_FEATURES"))?;
        let regions = memory_regions(self.area.memory())?;
        vu.set_mem_table(&regions).map_err(req("SET_MEM_TABLE"))?;
        for (i, ring) in self.rings.iter().enumerate() {
            let l = ring.layout();
            let host = |at: u64| self.area.host_addr(at).ok_or(FsError::Ring(i));
            let cfg = ring_config(l.size, l.size, [l.desc, l.used, l.avail], host)?;
            setup_vring(vu, i, &cfg, &self.call, &self.kicks[i], protocol)?;
        }
        Ok(())
    }

    /// Takes the guest's new chains on queue `i` and publishes what fits; true: interrupt.
    fn serve_guest(&mut self, mem: &GuestMemoryMmap, i: usize) -> bool {
        use virtio_queue::QueueT;
        let Some(q) = self.guest.get_mut(i) else {
            return false;
        };
        let ring = &mut self.rings[i];
        let mut refused = Vec::new();
        // At most a ring's worth per kick (a driver that keeps adding gets served again at
        // its next kick).
        for _ in 0..q.size() {
            let Some(chain) = q.pop_descriptor_chain(mem) else {
                break;
            };
            let head = chain.head_index();
            match bounce::parse_chain(mem, chain) {
                Some(r) if !ring.too_large(&r) => ring.push(r),
                _ => refused.push(head),
            }
        }
        self.refused += refused.len() as u64;
        let mut done: Vec<(u16, u32)> = refused.into_iter().map(|h| (h, 0)).collect();
        done.extend(self.publish(mem, i));
        self.return_used(mem, i, &done)
    }

    /// The backend called: takes its replies on both rings; true: interrupt.
    fn serve_backend(&mut self, mem: &GuestMemoryMmap) -> bool {
        let _ = self.call.read();
        let mut interrupt = false;
        for i in 0..NUM_QUEUES {
            let mut done = self.rings[i].complete(mem, &self.area);
            // Freed room: waiting requests go now.
            done.extend(self.publish(mem, i));
            interrupt |= self.return_used(mem, i, &done);
        }
        interrupt
    }

    /// Publishes ring `i`'s waiting requests, kicks the backend; the guest chains that
    /// failed (returned with length 0).
    fn publish(&mut self, mem: &GuestMemoryMmap, i: usize) -> Vec<(u16, u32)> {
        let (published, failed) = self.rings[i].submit(mem, &self.area);
        if published > 0 {
            let _ = self.kicks[i].write(1);
        }
        self.refused += failed.len() as u64;
        failed.into_iter().map(|h| (h, 0)).collect()
    }

    fn return_used(&mut self, mem: &GuestMemoryMmap, i: usize, done: &[(u16, u32)]) -> bool {
        use virtio_queue::QueueT;
        let Some(q) = self.guest.get_mut(i) else {
            return false;
        };
        let mut any = false;
        for &(head, len) in done {
            any |= q.add_used(mem, head, len).is_ok();
        }
        any && q.needs_notification(mem).unwrap_or(true)
    }

    fn reset(&mut self) {
        self.guest.clear();
        for r in &mut self.rings {
            r.reset(&self.area);
        }
    }
}

impl VirtioDevice for FsDevice {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_FS
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn features(&self) -> u64 {
        match self.path {
            DataPath::Direct { .. } => offered_features(self.backend.features),
            DataPath::Bounce(_) => SLOT_FEATURES,
        }
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_fs_config(&self.tag, offset, data);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {
        // The virtio-fs config space is read-only.
    }

    fn activate(&mut self, features: u64, queues: &[QueueConfig]) -> Result<(), String> {
        both_queues_ready(queues)?;
        let t0 = std::time::Instant::now();
        self.start(features, queues).map_err(|e| {
            let msg = format!("{e} (backend {})", self.backend.socket.display());
            tracing::warn!("{msg}");
            msg
        })?;
        tracing::debug!("virtio-fs: activated in {:?}", t0.elapsed());
        Ok(())
    }

    fn vhost_interrupts(&self) -> bool {
        matches!(self.path, DataPath::Direct { .. })
    }

    fn process_queue(&mut self, index: usize) -> bool {
        match &mut self.path {
            DataPath::Bounce(b) if self.started => b.serve_guest(&self.mem, index),
            _ => false,
        }
    }

    fn backend_poll(&self) -> Option<(RawFd, i16)> {
        match &self.path {
            DataPath::Bounce(b) if self.started => Some((b.call.as_raw_fd(), libc::POLLIN)),
            _ => None,
        }
    }

    fn process_backend(&mut self, _revents: i16) -> bool {
        match &mut self.path {
            DataPath::Bounce(b) if self.started => b.serve_backend(&self.mem),
            _ => false,
        }
    }

    fn restore_supported(&self) -> Result<(), String> {
        // A restore hands it a template's backend-less slot ([`slot`]); it is never saved.
        Ok(())
    }

    fn identity(&self) -> Option<String> {
        Some(self.tag.clone())
    }

    fn set_queue_positions(&mut self, positions: &[Option<(u16, u16)>]) {
        match &mut self.path {
            DataPath::Bounce(b) => {
                for (i, q) in b.guest.iter_mut().enumerate() {
                    crate::devices::virtio::device::set_position(Some(q), positions.get(i));
                }
            }
            // The backend was told base 0 at activation: right for a slot, which took nothing.
            DataPath::Direct { .. } => {
                if positions.iter().flatten().any(|p| *p != (0, 0)) {
                    tracing::warn!(
                        "virtio-fs: restored queue positions {positions:?} ignored (the backend \
                         starts at 0)"
                    );
                }
            }
        }
    }

    fn exit_report(&self) -> Option<String> {
        let DataPath::Bounce(b) = &self.path else {
            return None;
        };
        let f: Vec<_> = b.rings.iter().map(|r| r.faults()).collect();
        Some(format!(
            "virtio-fs bounce: refused={} backend_bad_ids={} backend_long_replies={} \
             backend_broken_rings={}",
            b.refused,
            f.iter().map(|f| f.bad_ids).sum::<u64>(),
            f.iter().map(|f| f.long_replies).sum::<u64>(),
            f.iter().filter(|f| f.broken).count()
        ))
    }

    fn reset(&mut self) {
        if self.started {
            self.started = false;
            if let Err(e) = self.stop() {
                tracing::warn!("stopping the virtio-fs backend: {e}");
            }
            if let DataPath::Bounce(b) = &mut self.path {
                b.reset();
            }
        }
    }
}

/// The activation check of both virtio-fs devices ([`FsDevice`], [`slot::FsSlotDevice`]):
/// the hiprio and the request queue are ready.
pub(crate) fn both_queues_ready(queues: &[QueueConfig]) -> Result<(), String> {
    if queues.len() < NUM_QUEUES || !queues[..NUM_QUEUES].iter().all(|q| q.ready) {
        return Err("virtio-fs: the hiprio and request queues must both be ready".into());
    }
    Ok(())
}

/// Creates a memfd of `size` bytes for guest RAM, sealed against shrinking and growing (a
/// backend holding it cannot truncate RAM under the VMM and the guest).
pub fn ram_memfd(name: &std::ffi::CStr, size: usize) -> std::io::Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    // SAFETY: memfd_create with a valid NUL-terminated name; the fd is owned by the File below.
    let fd =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid fd nobody else owns.
    let f = unsafe { std::fs::File::from_raw_fd(fd) };
    f.set_len(size as u64)?;
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    // SAFETY: F_ADD_SEALS on our own memfd, integer argument.
    if unsafe { libc::fcntl(f.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(f)
}

/// Guest RAM for `ranges`, each region a shared mapping of its own sealed memfd (pages are
/// allocated when first touched, as with anonymous memory).
pub fn shared_guest_memory(ranges: &[crate::layout::RamRange]) -> anyhow::Result<GuestMemoryMmap> {
    use anyhow::Context;
    let mut with_files = Vec::new();
    for (i, (start, size)) in ranges.iter().enumerate() {
        let f = ram_memfd(c"kata-vmm-ram", *size)
            .with_context(|| format!("memfd for guest RAM region {i}"))?;
        with_files.push((*start, *size, Some(vm_memory::FileOffset::new(f, 0))));
    }
    GuestMemoryMmap::from_ranges_with_files(with_files).map_err(anyhow::Error::from)
}

pub mod bounce;
pub mod slot;

#[cfg(test)]
pub(crate) mod tests;

//! The host side of the hybrid vsock device: the Unix listener, the `CONNECT <port>`
//! handshake, and one connection state machine per host <-> guest stream with credit-based
//! flow control both ways. No virtqueues here: the device feeds guest packets in
//! ([`Muxer::recv_pkt`]) and takes packets for the guest out ([`Muxer::next_rx`]), so the
//! whole protocol is testable with plain socket pairs.
//!
//! Every fd (listener, connections, a timerfd for deadlines) sits in one edge-triggered
//! epoll instance whose fd the VMM's main loop polls (see [`Muxer::epoll_fd`]); the muxer keeps
//! its own "readable" flags, so a connection the guest has no credit or buffers for costs
//! nothing until that changes.
//!
//! Bounds: at most [`MAX_CONNS`] connections (more are accepted and closed at once), at most
//! [`BUF_ALLOC`] bytes buffered per connection guest -> host (the credit we advertise; a guest
//! that sends beyond it is reset), nothing buffered host -> guest (we read from the Unix side
//! only what the guest's credit and its posted buffer allow), at most [`MAX_RESETS`] queued
//! resets, a [`MAX_LINE`]-byte handshake line within [`HANDSHAKE_TIMEOUT`], and a guest answer to
//! our connection request within [`CONNECT_TIMEOUT`].

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, ErrorKind, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use super::packet::{op, Header, SHUTDOWN_RCV};

mod guest;

/// Most connections at once (including those still in the handshake).
pub const MAX_CONNS: usize = 128;
/// Receive buffer we advertise per connection (guest -> host bytes we may hold).
pub const BUF_ALLOC: u32 = 256 << 10;
/// Longest handshake line, newline included (`CONNECT 4294967294\n` is 19).
pub const MAX_LINE: usize = 32;
/// How long a Unix client may take to send its `CONNECT` line.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the guest may take to answer our connection request.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most RST packets waiting for guest buffers; more are dropped (the guest's own timeouts
/// then end those connections).
pub const MAX_RESETS: usize = 2 * MAX_CONNS;
/// First host port handed out for a host-initiated connection (as Firecracker: 2^30 up).
pub const FIRST_LOCAL_PORT: u32 = 1 << 30;
/// Most connections [`Muxer::conn_report`] describes.
pub const REPORT_CONNS: usize = 16;

const TOKEN_LISTENER: u64 = u64::MAX;
const TOKEN_TIMER: u64 = u64::MAX - 1;
/// Pending control packets of a connection.
const P_REQUEST: u8 = 1;
const P_CREDIT_UPDATE: u8 = 2;

/// Parses a handshake line (without its newline): `CONNECT <port>` (the contract's).
pub use kata_rs_protocol::hybrid_vsock::parse_connect;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Accepted, reading the `CONNECT` line.
    Handshake,
    /// REQUEST sent (or queued) to the guest, waiting for RESPONSE or RST.
    Connecting,
    /// Data flows.
    Established,
}

struct Conn {
    /// The Unix connection, held as a File so its I/O is read(2)/write(2).
    stream: File,
    state: State,
    /// The guest's port.
    peer_port: u32,
    line: Vec<u8>,
    deadline: Option<Instant>,
    /// Host -> guest: bytes sent in RW packets (wrapping), the guest's credit.
    rx_cnt: u32,
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    /// A CREDIT_REQUEST went out and the guest's credit has not changed since.
    credit_requested: bool,
    /// The Unix side may have data (edge seen, no EAGAIN since).
    readable: bool,
    /// The Unix side sent EOF; a SHUTDOWN(SEND) goes to the guest once.
    host_eof: bool,
    eof_sent: bool,
    /// Guest -> host bytes not yet written to the Unix side.
    buf: VecDeque<u8>,
    /// Guest bytes written to the Unix side (wrapping), and what the guest last heard of it.
    fwd_cnt: u32,
    fwd_reported: u32,
    /// SHUTDOWN flags the guest sent.
    guest_shut: u32,
    /// The Unix side's write half is shut (the guest will send nothing more).
    host_write_shut: bool,
    pending: u8,
    queued: bool,
}

impl Conn {
    fn peer_credit(&self) -> u32 {
        let in_flight = self.rx_cnt.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    fn wants_data(&self) -> bool {
        self.state == State::Established
            && self.readable
            && !self.host_eof
            && self.guest_shut & SHUTDOWN_RCV == 0
    }

    fn has_rx_work(&self) -> bool {
        if self.pending != 0 {
            return true;
        }
        if self.state != State::Established {
            return false;
        }
        (self.wants_data() && (self.peer_credit() > 0 || !self.credit_requested))
            || (self.host_eof && !self.eof_sent)
    }
}

/// Counters for the exit summary and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MuxStats {
    /// Unix connections accepted (handshake started).
    pub accepted: u64,
    /// Connections the guest accepted (`OK` sent).
    pub established: u64,
    /// Unix connections closed at once: the connection limit was reached.
    pub over_limit: u64,
    /// Bad handshake lines (closed).
    pub bad_handshakes: u64,
    /// Connections the guest refused (RST to our request).
    pub refused: u64,
    /// Handshakes or connection requests that timed out.
    pub timeouts: u64,
    /// Guest-initiated connection requests (refused with RST).
    pub guest_requests: u64,
    /// Guest packets refused as malformed (bad address, type, op or length).
    pub bad_packets: u64,
    /// Guest packets that broke the protocol of their connection (data beyond credit, ...).
    pub violations: u64,
    /// RSTs dropped because [`MAX_RESETS`] were waiting.
    pub resets_dropped: u64,
    /// Payload bytes host -> guest.
    pub to_guest: u64,
    /// Payload bytes guest -> host.
    pub to_host: u64,
    /// Holds of the packets for the guest ([`Muxer::hold_rx`]) that ran out before release.
    pub holds_expired: u64,
}

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// The muxer: listener, connections, queued packets for the guest.
pub struct Muxer {
    guest_cid: u64,
    listener: Option<UnixListener>,
    epoll: OwnedFd,
    timer: OwnedFd,
    timer_armed: Option<Instant>,
    conns: HashMap<u32, Conn>,
    /// Connections that may have a packet for the guest (each at most once).
    rx_ready: VecDeque<u32>,
    /// RSTs not tied to a live connection.
    resets: VecDeque<Header>,
    next_port: u32,
    /// Until when packets for the guest wait (after a restore, until the guest has handled
    /// the transport reset; see [`Muxer::hold_rx`]).
    hold: Option<Instant>,
    /// Counters.
    pub stats: MuxStats,
}

impl Muxer {
    /// A muxer for the guest `guest_cid`, serving `listener` (non-blocking) if any. Creates
    /// its epoll instance and timerfd (before the jail and the seccomp filter).
    pub fn new(guest_cid: u64, listener: Option<UnixListener>) -> io::Result<Muxer> {
        // SAFETY: plain syscalls creating new fds, owned right away.
        let epoll = unsafe { OwnedFd::from_raw_fd(cvt(libc::epoll_create1(libc::EPOLL_CLOEXEC))?) };
        // SAFETY: as above.
        let timer = unsafe {
            OwnedFd::from_raw_fd(cvt(libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            ))?)
        };
        let m = Muxer {
            guest_cid,
            listener,
            epoll,
            timer,
            timer_armed: None,
            conns: HashMap::new(),
            rx_ready: VecDeque::new(),
            resets: VecDeque::new(),
            next_port: FIRST_LOCAL_PORT,
            hold: None,
            stats: MuxStats::default(),
        };
        if let Some(l) = &m.listener {
            l.set_nonblocking(true)?;
            m.epoll_add(l.as_raw_fd(), TOKEN_LISTENER)?;
        }
        m.epoll_add(m.timer.as_raw_fd(), TOKEN_TIMER)?;
        Ok(m)
    }

    /// The fd the event loop polls for `POLLIN`: readable when a listener, connection or the
    /// deadline timer has news.
    pub fn epoll_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    /// Live connections (any state).
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// No connection, and no RST owed to the guest: what the guest holds of the host side is
    /// at most sockets the host has already reset (in its rx queue or handled).
    pub fn idle(&self) -> bool {
        self.conns.is_empty() && self.resets.is_empty()
    }

    /// The host port the next accepted connection gets (or the first free one after it).
    pub fn next_port(&self) -> u32 {
        self.next_port
    }

    /// Host ports are given from `port` on (a restore without a transport reset continues
    /// its template's numbering); a port below [`FIRST_LOCAL_PORT`] is refused (false).
    pub fn continue_ports_at(&mut self, port: u32) -> bool {
        if port < FIRST_LOCAL_PORT {
            return false;
        }
        self.next_port = port;
        true
    }

    /// The state of the live connections (at most [`REPORT_CONNS`], lowest ports first) and
    /// of the queues toward the guest, one line, for the exit report: what a stalled
    /// connection was waiting for (guest credit, guest rx buffers, the Unix side).
    pub fn conn_report(&self) -> String {
        let mut keys: Vec<&u32> = self.conns.keys().collect();
        keys.sort();
        let mut out = format!(
            "vsock-conns: live={} rx_ready={} resets_waiting={}",
            self.conns.len(),
            self.rx_ready.len(),
            self.resets.len()
        );
        for k in keys.into_iter().take(REPORT_CONNS) {
            let c = &self.conns[k];
            out.push_str(&format!(
                " | port={k} peer={} {:?} to_guest={} peer_fwd={} peer_alloc={} credit={} \
                 credit_req={} readable={} host_eof={} buffered={} fwd={} fwd_reported={} \
                 guest_shut={} pending={} queued={}",
                c.peer_port,
                c.state,
                c.rx_cnt,
                c.peer_fwd_cnt,
                c.peer_buf_alloc,
                c.peer_credit(),
                c.credit_requested,
                c.readable,
                c.host_eof,
                c.buf.len(),
                c.fwd_cnt,
                c.fwd_reported,
                c.guest_shut,
                c.pending,
                c.queued
            ));
        }
        out
    }

    fn epoll_add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: token,
        };
        // SAFETY: `ev` is a valid epoll_event for the call; both fds are open.
        cvt(unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) })
            .map(drop)
    }

    /// Ends every connection (device reset): the Unix clients see their connection close.
    pub fn reset(&mut self) {
        self.conns.clear();
        self.rx_ready.clear();
        self.resets.clear();
    }

    /// Whether a packet for the guest may be waiting (then [`Muxer::next_rx`] says which);
    /// never while held.
    pub fn has_rx(&self) -> bool {
        self.hold.is_none() && (!self.resets.is_empty() || !self.rx_ready.is_empty())
    }

    /// Packets for the guest wait until [`Muxer::release_rx`] or `until`, whichever comes
    /// first (host clients are still accepted and their handshakes read): after a restore,
    /// a connection request the guest sees before it has handled the transport reset is
    /// reset with everything else, and its host client would wait for nothing.
    pub fn hold_rx(&mut self, until: Instant, now: Instant) {
        self.hold = Some(until);
        self.rearm(now);
    }

    /// Packets for the guest flow again; true when it was held.
    pub fn release_rx(&mut self) -> bool {
        self.hold.take().is_some()
    }

    /// Whether packets for the guest are held.
    pub fn rx_held(&self) -> bool {
        self.hold.is_some()
    }

    fn push_reset(&mut self, h: Header) {
        if self.resets.len() < MAX_RESETS {
            self.resets.push_back(h);
        } else {
            self.stats.resets_dropped += 1;
        }
    }

    fn requeue(&mut self, key: u32) {
        if let Some(c) = self.conns.get_mut(&key) {
            if !c.queued && c.has_rx_work() {
                c.queued = true;
                self.rx_ready.push_back(key);
            }
        }
    }

    /// Ends connection `key`; with `rst` the guest is told (a connection it knows of).
    fn kill(&mut self, key: u32, rst: bool) {
        if let Some(c) = self.conns.remove(&key) {
            if rst && c.state != State::Handshake {
                self.push_reset(Header::to_guest(self.guest_cid, key, c.peer_port, op::RST));
            }
        }
    }

    /// Serves the host side: accepts, handshake lines, writes that were waiting for room,
    /// deadlines. Never blocks.
    pub fn poll_host(&mut self, now: Instant) {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
        let mut accept = false;
        let mut timer = false;
        for _ in 0..8 {
            // SAFETY: `events` is a writable array of 64 epoll_event; timeout 0.
            let n = unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), events.as_mut_ptr(), 64, 0) };
            let Ok(n) = usize::try_from(n) else {
                break; // EINTR or the like: the level-triggered poll of the epoll fd retries
            };
            for ev in &events[..n] {
                let (bits, token) = (ev.events, ev.u64);
                match token {
                    TOKEN_LISTENER => accept = true,
                    TOKEN_TIMER => timer = true,
                    _ => self.conn_event(token as u32, bits, now),
                }
            }
            if n < events.len() {
                break;
            }
        }
        if accept {
            self.accept(now);
        }
        if timer {
            let mut b = [0u8; 8];
            // SAFETY: reading the timerfd's 8-byte counter into a local buffer.
            let _ = unsafe { libc::read(self.timer.as_raw_fd(), b.as_mut_ptr().cast(), 8) };
            self.timer_armed = None;
            self.expire(now);
        }
        if self.hold.is_some_and(|h| h <= now) {
            self.hold = None;
            self.stats.holds_expired += 1;
        }
        self.rearm(now);
    }

    fn conn_event(&mut self, key: u32, bits: u32, now: Instant) {
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        let input =
            bits & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0;
        match c.state {
            State::Handshake if input => self.read_line(key, now),
            State::Handshake => {}
            State::Connecting => {
                if bits & libc::EPOLLHUP as u32 != 0 {
                    // The client is gone before the guest answered.
                    self.kill(key, true);
                    return;
                }
                c.readable |= input;
            }
            State::Established => {
                c.readable |= input;
                if bits & libc::EPOLLOUT as u32 != 0 && !c.buf.is_empty() {
                    self.flush(key);
                }
                self.requeue(key);
            }
        }
    }

    fn accept(&mut self, now: Instant) {
        let Some(l) = &self.listener else {
            return;
        };
        let lfd = l.as_raw_fd();
        loop {
            // SAFETY: accept4 on our listening fd with null address pointers; a returned fd
            // is new and owned by the File built from it.
            let fd = unsafe {
                libc::accept4(
                    lfd,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                return; // EAGAIN: none left (or transient: the next edge retries)
            }
            // SAFETY: `fd` is a fresh connected socket nobody else owns.
            let stream = unsafe { File::from_raw_fd(fd) };
            if self.conns.len() >= MAX_CONNS {
                self.stats.over_limit += 1;
                continue; // closed
            }
            let mut key = self.next_port;
            while self.conns.contains_key(&key) {
                key = key.checked_add(1).unwrap_or(FIRST_LOCAL_PORT);
            }
            self.next_port = key.checked_add(1).unwrap_or(FIRST_LOCAL_PORT);
            if self.epoll_add(stream.as_raw_fd(), u64::from(key)).is_err() {
                continue;
            }
            self.stats.accepted += 1;
            self.conns.insert(
                key,
                Conn {
                    stream,
                    state: State::Handshake,
                    peer_port: 0,
                    line: Vec::new(),
                    deadline: Some(now + HANDSHAKE_TIMEOUT),
                    rx_cnt: 0,
                    peer_buf_alloc: 0,
                    peer_fwd_cnt: 0,
                    credit_requested: false,
                    readable: false,
                    host_eof: false,
                    eof_sent: false,
                    buf: VecDeque::new(),
                    fwd_cnt: 0,
                    fwd_reported: 0,
                    guest_shut: 0,
                    host_write_shut: false,
                    pending: 0,
                    queued: false,
                },
            );
            // Data may already be there (the edge came before the registration).
            self.read_line(key, now);
        }
    }

    /// Reads the handshake byte by byte (nothing after the newline is consumed: the client
    /// may send data right behind it).
    fn read_line(&mut self, key: u32, now: Instant) {
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        let mut b = [0u8; 1];
        loop {
            match c.stream.read(&mut b) {
                Ok(1) if b[0] == b'\n' => break,
                Ok(1) if c.line.len() + 1 < MAX_LINE => c.line.push(b[0]),
                Ok(_) => {
                    // EOF or too long.
                    self.stats.bad_handshakes += 1;
                    self.kill(key, false);
                    return;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.kill(key, false);
                    return;
                }
            }
        }
        let Some(port) = parse_connect(&c.line) else {
            self.stats.bad_handshakes += 1;
            self.kill(key, false);
            return;
        };
        c.line = Vec::new();
        c.peer_port = port;
        c.state = State::Connecting;
        c.deadline = Some(now + CONNECT_TIMEOUT);
        c.pending |= P_REQUEST;
        self.requeue(key);
    }

    pub(crate) fn expire(&mut self, now: Instant) {
        let late: Vec<u32> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline.is_some_and(|d| d <= now))
            .map(|(k, _)| *k)
            .collect();
        for key in late {
            self.stats.timeouts += 1;
            self.kill(key, true);
        }
    }

    fn rearm(&mut self, now: Instant) {
        let Some(next) = self
            .conns
            .values()
            .filter_map(|c| c.deadline)
            .chain(self.hold)
            .min()
        else {
            return;
        };
        if self.timer_armed.is_some_and(|a| a <= next && a > now) {
            return;
        }
        let wait = next
            .saturating_duration_since(now)
            .max(Duration::from_millis(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                // (time_t is 64-bit on both libcs; a wait never comes near its range)
                tv_sec: wait.as_secs().try_into().unwrap_or(i64::MAX),
                tv_nsec: wait.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: `spec` is a valid itimerspec; the old value is not asked for.
        let rc = unsafe {
            libc::timerfd_settime(self.timer.as_raw_fd(), 0, &spec, std::ptr::null_mut())
        };
        if rc == 0 {
            self.timer_armed = Some(next);
        }
    }
}

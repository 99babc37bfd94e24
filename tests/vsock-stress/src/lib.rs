//! kata-vsock-stress: the parts of the vsock stress tool that do not depend on the command
//! line — wire format, the deterministic byte streams, their verification, and the
//! per-connection client/server logic over any connected stream socket (AF_VSOCK in use,
//! AF_UNIX socket pairs in the unit tests).
//!
//! One connection, both directions at once:
//!
//! ```text
//! client                                   server
//!   header (40 B: magic, up, down, seed, slow_ms) ->
//!   up stream (`up` bytes, pattern(seed, UP))     ->   verified byte by byte (slowly if slow_ms)
//!   shutdown(SHUT_WR)                             ->   EOF expected right after `up` bytes
//!                                  <- down stream (`down` bytes, pattern(seed, DOWN)), verified
//!                                  <- trailer (88 B: status, received, sha256s, write_blocked)
//!                                  <- EOF
//! ```
//!
//! The client then compares the server's count and sha256 of what it received with its own
//! sha256 of what it sent, and the server's sha256 of what it sent with its own of what it
//! received. Every socket operation is non-blocking (`MSG_DONTWAIT`) followed by a `poll` with a
//! timeout when it would block: a send that would block is counted as *write blocked* (the
//! peer's receive credit ran out: back-pressure) together with the time spent waiting.

pub mod vsock;

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recv, send, shutdown, MsgFlags, Shutdown};
use sha2::{Digest, Sha256};

/// Magic of a connection header.
pub const HEADER_MAGIC: [u8; 4] = *b"KVS1";
/// Magic of the server's trailer.
pub const TRAILER_MAGIC: [u8; 4] = *b"KVST";
/// Protocol version in the header.
pub const VERSION: u16 = 1;
/// Size of an encoded [`Header`].
pub const HEADER_LEN: usize = 40;
/// Size of an encoded [`Trailer`].
pub const TRAILER_LEN: usize = 88;
/// Largest stream length a header may ask for (1 TiB): anything above is a bad header.
pub const MAX_STREAM_BYTES: u64 = 1 << 40;
/// Largest per-read delay a header may ask for.
pub const MAX_SLOW_MS: u32 = 1000;
/// I/O chunk: bytes generated, sent or read at a time.
pub const CHUNK: usize = 64 * 1024;
/// Read size of a slow reader (it sleeps `slow_ms` after each read).
pub const SLOW_CHUNK: usize = 16 * 1024;

/// A tool error: one line of text for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// Result with the tool's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Shorthand for an [`Error`] made with `format!`.
#[macro_export]
macro_rules! err {
    ($($t:tt)*) => { $crate::Error(format!($($t)*)) };
}

fn le_u16(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// What the client asks of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Bytes the client sends (client -> server).
    pub up: u64,
    /// Bytes the server sends back (server -> client).
    pub down: u64,
    /// Seed of both streams.
    pub seed: u64,
    /// The server sleeps this long after each read of at most [`SLOW_CHUNK`] bytes (0: reads
    /// at full speed); forces the client's writes to block.
    pub slow_ms: u32,
}

impl Header {
    /// Wire form: magic, version (le16), reserved 0 (le16), slow_ms (le32), reserved 0
    /// (le32), up, down, seed (le64 each).
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&HEADER_MAGIC);
        b[4..6].copy_from_slice(&VERSION.to_le_bytes());
        b[8..12].copy_from_slice(&self.slow_ms.to_le_bytes());
        b[16..24].copy_from_slice(&self.up.to_le_bytes());
        b[24..32].copy_from_slice(&self.down.to_le_bytes());
        b[32..40].copy_from_slice(&self.seed.to_le_bytes());
        b
    }

    /// Parses and checks a header; anything unexpected is an error naming the field.
    pub fn decode(b: &[u8]) -> Result<Header> {
        if b.len() != HEADER_LEN {
            return Err(err!("bad header: {} bytes, want {HEADER_LEN}", b.len()));
        }
        if b[0..4] != HEADER_MAGIC {
            return Err(err!("bad header: magic {:02x?}, want \"KVS1\"", &b[0..4]));
        }
        let version = le_u16(&b[4..6]);
        if version != VERSION {
            return Err(err!("bad header: version {version}, want {VERSION}"));
        }
        if le_u16(&b[6..8]) != 0 || le_u32(&b[12..16]) != 0 {
            return Err(err!("bad header: reserved fields are not zero"));
        }
        let h = Header {
            slow_ms: le_u32(&b[8..12]),
            up: le_u64(&b[16..24]),
            down: le_u64(&b[24..32]),
            seed: le_u64(&b[32..40]),
        };
        if h.slow_ms > MAX_SLOW_MS {
            return Err(err!(
                "bad header: slow_ms {} above {MAX_SLOW_MS}",
                h.slow_ms
            ));
        }
        for (what, v) in [("up", h.up), ("down", h.down)] {
            if v > MAX_STREAM_BYTES {
                return Err(err!(
                    "bad header: {what} {v} bytes above {MAX_STREAM_BYTES}"
                ));
            }
        }
        Ok(h)
    }
}

/// The server's account of one connection, sent after its down stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    /// True when the server received exactly `up` bytes, all as expected, then EOF.
    pub ok: bool,
    /// Bytes the server received (up stream).
    pub received: u64,
    /// How often the server's own sends would have blocked.
    pub write_blocked: u64,
    /// sha256 of what the server received.
    pub sha_received: [u8; 32],
    /// sha256 of what the server sent.
    pub sha_sent: [u8; 32],
}

impl Trailer {
    /// Wire form: magic, status (le32: 0 ok, 1 failed), received, write_blocked (le64),
    /// sha_received, sha_sent.
    pub fn encode(&self) -> [u8; TRAILER_LEN] {
        let mut b = [0u8; TRAILER_LEN];
        b[0..4].copy_from_slice(&TRAILER_MAGIC);
        b[4..8].copy_from_slice(&u32::from(!self.ok).to_le_bytes());
        b[8..16].copy_from_slice(&self.received.to_le_bytes());
        b[16..24].copy_from_slice(&self.write_blocked.to_le_bytes());
        b[24..56].copy_from_slice(&self.sha_received);
        b[56..88].copy_from_slice(&self.sha_sent);
        b
    }

    /// Parses a trailer.
    pub fn decode(b: &[u8]) -> Result<Trailer> {
        if b.len() != TRAILER_LEN || b[0..4] != TRAILER_MAGIC {
            return Err(err!("bad trailer from the server ({} bytes)", b.len()));
        }
        let status = le_u32(&b[4..8]);
        if status > 1 {
            return Err(err!("bad trailer: status {status}"));
        }
        let mut t = Trailer {
            ok: status == 0,
            received: le_u64(&b[8..16]),
            write_blocked: le_u64(&b[16..24]),
            sha_received: [0; 32],
            sha_sent: [0; 32],
        };
        t.sha_received.copy_from_slice(&b[24..56]);
        t.sha_sent.copy_from_slice(&b[56..88]);
        Ok(t)
    }
}

/// Which stream of a connection a [`Pattern`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// client -> server
    Up,
    /// server -> client
    Down,
}

/// The deterministic pseudo-random byte stream of one direction of a connection: splitmix64
/// words, little-endian. The bytes depend only on seed, direction and offset, never on how the
/// stream is cut into reads and writes.
#[derive(Debug, Clone)]
pub struct Pattern {
    state: u64,
    word: [u8; 8],
    used: usize,
}

impl Pattern {
    /// The stream for `seed` in direction `dir`.
    pub fn new(seed: u64, dir: Dir) -> Pattern {
        let d = match dir {
            Dir::Up => 0x5555_0000_0000_0001,
            Dir::Down => 0xaaaa_0000_0000_0002,
        };
        Pattern {
            state: seed ^ d,
            word: [0; 8],
            used: 8,
        }
    }

    fn next_word(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Writes the next `buf.len()` bytes of the stream into `buf`.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut i = 0;
        while i < buf.len() && self.used < 8 {
            buf[i] = self.word[self.used];
            self.used += 1;
            i += 1;
        }
        let mut words = buf[i..].chunks_exact_mut(8);
        for w in &mut words {
            w.copy_from_slice(&self.next_word().to_le_bytes());
        }
        let rest = words.into_remainder();
        if !rest.is_empty() {
            self.word = self.next_word().to_le_bytes();
            self.used = 0;
            for b in rest {
                *b = self.word[self.used];
                self.used += 1;
            }
        }
    }
}

/// Checks received bytes against a [`Pattern`] and hashes them.
pub struct Verifier {
    pattern: Pattern,
    scratch: Vec<u8>,
    offset: u64,
    sha: Sha256,
}

impl Verifier {
    /// A verifier for the stream `seed`/`dir`, starting at offset 0.
    pub fn new(seed: u64, dir: Dir) -> Verifier {
        Verifier {
            pattern: Pattern::new(seed, dir),
            scratch: vec![0; CHUNK],
            offset: 0,
            sha: Sha256::new(),
        }
    }

    /// Checks the next `data.len()` bytes of the stream; the first wrong byte is an error with
    /// its offset, what came and what was expected (the bytes before it count as checked).
    pub fn check(&mut self, data: &[u8]) -> Result<()> {
        for part in data.chunks(CHUNK) {
            let want = &mut self.scratch[..part.len()];
            self.pattern.fill(want);
            if part != &want[..] {
                let i = part
                    .iter()
                    .zip(want.iter())
                    .position(|(a, b)| a != b)
                    .unwrap_or(0);
                let e = err!(
                    "byte {} differs: got {:#04x}, want {:#04x}",
                    self.offset + i as u64,
                    part[i],
                    want[i]
                );
                // What came before it was good: it counts as received.
                self.sha.update(&part[..i]);
                self.offset += i as u64;
                return Err(e);
            }
            self.sha.update(part);
            self.offset += part.len() as u64;
        }
        Ok(())
    }

    /// Bytes checked so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// sha256 of everything checked.
    pub fn finish(self) -> [u8; 32] {
        self.sha.finalize().into()
    }
}

/// How the sending side of a stream fared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendStats {
    /// Bytes sent.
    pub bytes: u64,
    /// Sends that would have blocked (the socket had no room: back-pressure).
    pub blocked: u64,
    /// Time spent waiting for room.
    pub blocked_time: Duration,
}

impl SendStats {
    /// Adds `o` to `self`.
    pub fn add(&mut self, o: &SendStats) {
        self.bytes += o.bytes;
        self.blocked += o.blocked;
        self.blocked_time += o.blocked_time;
    }
}

/// Waits until `fd` is ready for `ev` or `timeout` passed (an error saying what it waited for).
fn wait_ready(fd: BorrowedFd<'_>, ev: PollFlags, timeout: Duration, what: &str) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(err!("{what}: no progress for {} s", timeout.as_secs()));
        }
        let ms = PollTimeout::try_from(left.as_millis().clamp(1, i32::MAX as u128))
            .unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(fd, ev)];
        match poll(&mut fds, ms) {
            Ok(0) => continue,
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(err!("{what}: poll: {e}")),
        }
    }
}

/// Sends all of `buf`; counts sends that would block in `st`. `timeout`: longest wait without
/// any progress.
pub fn send_all(
    fd: BorrowedFd<'_>,
    buf: &[u8],
    timeout: Duration,
    st: &mut SendStats,
) -> Result<()> {
    let mut off = 0;
    while off < buf.len() {
        match send(
            fd.as_raw_fd(),
            &buf[off..],
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        ) {
            Ok(n) => {
                off += n;
                st.bytes += n as u64;
            }
            Err(Errno::EAGAIN) => {
                st.blocked += 1;
                let t0 = Instant::now();
                let r = wait_ready(fd, PollFlags::POLLOUT, timeout, "send");
                st.blocked_time += t0.elapsed();
                r?;
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(err!("send after {} bytes: {e}", st.bytes)),
        }
    }
    Ok(())
}

/// Receives at least one byte into `buf` (0: end of stream).
pub fn recv_some(fd: BorrowedFd<'_>, buf: &mut [u8], timeout: Duration) -> Result<usize> {
    loop {
        match recv(fd.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
            Ok(n) => return Ok(n),
            Err(Errno::EAGAIN) => wait_ready(fd, PollFlags::POLLIN, timeout, "recv")?,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(err!("recv: {e}")),
        }
    }
}

/// Receives exactly `buf.len()` bytes; `what` names them in the error if the stream ends first.
pub fn recv_exact(fd: BorrowedFd<'_>, buf: &mut [u8], timeout: Duration, what: &str) -> Result<()> {
    let mut off = 0;
    while off < buf.len() {
        let n = recv_some(fd, &mut buf[off..], timeout).map_err(|e| err!("{what}: {e}"))?;
        if n == 0 {
            return Err(err!(
                "{what}: connection closed after {off} of {} bytes",
                buf.len()
            ));
        }
        off += n;
    }
    Ok(())
}

/// Expects the end of the stream (the peer's shutdown); extra bytes are an error.
pub fn expect_eof(fd: BorrowedFd<'_>, timeout: Duration, what: &str) -> Result<()> {
    let mut b = [0u8; 64];
    match recv_some(fd, &mut b, timeout) {
        Ok(0) => Ok(()),
        Ok(n) => Err(err!(
            "{what}: {n} unexpected bytes instead of the end of the stream"
        )),
        Err(e) => Err(err!("{what}: {e}")),
    }
}

/// Sends `len` bytes of the pattern `seed`/`dir`; returns the stats and the sha256 of what was
/// sent.
pub fn send_stream(
    fd: BorrowedFd<'_>,
    len: u64,
    seed: u64,
    dir: Dir,
    timeout: Duration,
) -> (SendStats, Result<[u8; 32]>) {
    let mut st = SendStats::default();
    let mut pat = Pattern::new(seed, dir);
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut left = len;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        pat.fill(&mut buf[..n]);
        sha.update(&buf[..n]);
        if let Err(e) = send_all(fd, &buf[..n], timeout, &mut st) {
            return (st, Err(e));
        }
        left -= n as u64;
    }
    (st, Ok(sha.finalize().into()))
}

/// Receives and verifies `len` bytes of the pattern `seed`/`dir`; with `slow`, sleeps that long
/// after each read of at most [`SLOW_CHUNK`] bytes. Returns the bytes received (also on error)
/// and the sha256.
pub fn recv_stream(
    fd: BorrowedFd<'_>,
    len: u64,
    seed: u64,
    dir: Dir,
    timeout: Duration,
    slow: Option<Duration>,
) -> (u64, Result<[u8; 32]>) {
    let mut v = Verifier::new(seed, dir);
    let chunk = if slow.is_some() { SLOW_CHUNK } else { CHUNK };
    let mut buf = vec![0u8; chunk];
    while v.offset() < len {
        let n = (len - v.offset()).min(chunk as u64) as usize;
        let got = match recv_some(fd, &mut buf[..n], timeout) {
            Ok(0) => {
                return (
                    v.offset(),
                    Err(err!("stream ended after {} of {len} bytes", v.offset())),
                )
            }
            Ok(k) => k,
            Err(e) => {
                return (
                    v.offset(),
                    Err(err!("after {} of {len} bytes: {e}", v.offset())),
                )
            }
        };
        if let Err(e) = v.check(&buf[..got]) {
            return (v.offset(), Err(e));
        }
        if let Some(d) = slow {
            std::thread::sleep(d);
        }
    }
    (v.offset(), Ok(v.finish()))
}

/// What the client saw on one connection.
#[derive(Debug, Clone, Default)]
pub struct ClientConn {
    /// The first error, if any.
    pub error: Option<String>,
    /// Up stream as the client sent it.
    pub sent: SendStats,
    /// sha256 of the up stream.
    pub sha_sent: [u8; 32],
    /// Down stream bytes received and verified.
    pub received: u64,
    /// sha256 of the down stream.
    pub sha_received: [u8; 32],
    /// The server's trailer.
    pub trailer: Option<Trailer>,
}

/// The client's part of one connection after the connect: header, up and down streams at the
/// same time, trailer, end of stream, and the cross-checks of the trailer.
pub fn client_conn<F: AsFd + Sync>(fd: &F, h: &Header, timeout: Duration) -> ClientConn {
    let mut c = ClientConn::default();
    let b = fd.as_fd();
    let mut hst = SendStats::default();
    if let Err(e) = send_all(b, &h.encode(), timeout, &mut hst) {
        c.error = Some(format!("header: {e}"));
        return c;
    }
    let (wst, wres, rres) = std::thread::scope(|s| {
        let w = s.spawn(move || {
            let (st, r) = send_stream(b, h.up, h.seed, Dir::Up, timeout);
            let r = r.and_then(|sha| {
                shutdown(b.as_raw_fd(), Shutdown::Write)
                    .map_err(|e| err!("shutdown: {e}"))
                    .map(|()| sha)
            });
            (st, r)
        });
        let r = (|| -> Result<(u64, [u8; 32], Trailer)> {
            let (n, sha) = recv_stream(b, h.down, h.seed, Dir::Down, timeout, None);
            let sha = sha.map_err(|e| err!("down stream: {e}"))?;
            let mut tb = [0u8; TRAILER_LEN];
            recv_exact(b, &mut tb, timeout, "trailer")?;
            let t = Trailer::decode(&tb)?;
            expect_eof(b, timeout, "after the trailer")?;
            Ok((n, sha, t))
        })();
        let (st, wr) = w
            .join()
            .unwrap_or_else(|_| (SendStats::default(), Err(err!("writer thread panicked"))));
        (st, wr, r)
    });
    c.sent = wst;
    match wres {
        Ok(sha) => c.sha_sent = sha,
        Err(e) => c.error = Some(format!("up stream: {e}")),
    }
    match rres {
        Ok((n, sha, t)) => {
            c.received = n;
            c.sha_received = sha;
            c.trailer = Some(t);
            if c.error.is_none() {
                c.error = check_trailer(&t, h, &c.sha_sent, &sha).err().map(|e| e.0);
            }
        }
        Err(e) => {
            if c.error.is_none() {
                c.error = Some(e.0);
            }
        }
    }
    c
}

/// Compares the server's trailer with what the client sent and received.
pub fn check_trailer(
    t: &Trailer,
    h: &Header,
    sha_sent: &[u8; 32],
    sha_received: &[u8; 32],
) -> Result<()> {
    if !t.ok {
        return Err(err!(
            "the server reports a failed up stream ({} of {} bytes)",
            t.received,
            h.up
        ));
    }
    if t.received != h.up {
        return Err(err!(
            "the server received {} bytes, {} were sent",
            t.received,
            h.up
        ));
    }
    if &t.sha_received != sha_sent {
        return Err(err!(
            "the server's sha256 of the up stream differs from the client's"
        ));
    }
    if &t.sha_sent != sha_received {
        return Err(err!(
            "the server's sha256 of the down stream differs from the client's"
        ));
    }
    Ok(())
}

/// What the server saw on one connection.
#[derive(Debug, Clone, Default)]
pub struct ServerConn {
    /// The header was bad (the connection was closed without a trailer).
    pub rejected: bool,
    /// The first error, if any (also set when rejected).
    pub error: Option<String>,
    /// The header, once read.
    pub header: Option<Header>,
    /// Up stream bytes received and verified.
    pub received: u64,
    /// Down stream as the server sent it.
    pub sent: SendStats,
}

/// The server's part of one accepted connection: header, up stream verified (slowly if asked)
/// while the down stream goes out, end of stream, trailer, shutdown.
pub fn server_conn<F: AsFd + Sync>(fd: &F, timeout: Duration) -> ServerConn {
    let mut c = ServerConn::default();
    let b = fd.as_fd();
    let mut hb = [0u8; HEADER_LEN];
    let h = match recv_exact(b, &mut hb, timeout, "header").and_then(|()| Header::decode(&hb)) {
        Ok(h) => h,
        Err(e) => {
            c.rejected = true;
            c.error = Some(e.0);
            return c;
        }
    };
    c.header = Some(h);
    let slow = (h.slow_ms > 0).then(|| Duration::from_millis(h.slow_ms.into()));
    let ((wst, wres), (n, rres)) = std::thread::scope(|s| {
        let w = s.spawn(move || send_stream(b, h.down, h.seed, Dir::Down, timeout));
        let (n, r) = recv_stream(b, h.up, h.seed, Dir::Up, timeout, slow);
        let r = r.and_then(|sha| expect_eof(b, timeout, "after the up stream").map(|()| sha));
        let wr = w
            .join()
            .unwrap_or_else(|_| (SendStats::default(), Err(err!("writer thread panicked"))));
        (wr, (n, r))
    });
    c.received = n;
    c.sent = wst;
    let sha_sent = match wres {
        Ok(s) => s,
        Err(e) => {
            c.error = Some(format!("down stream: {e}"));
            return c;
        }
    };
    let (ok, sha_received) = match rres {
        Ok(s) => (true, s),
        Err(e) => {
            c.error = Some(format!("up stream: {e}"));
            (false, [0; 32])
        }
    };
    let t = Trailer {
        ok,
        received: n,
        write_blocked: wst.blocked,
        sha_received,
        sha_sent,
    };
    let mut tst = SendStats::default();
    let r = send_all(b, &t.encode(), timeout, &mut tst)
        .and_then(|()| shutdown(b.as_raw_fd(), Shutdown::Write).map_err(|e| err!("shutdown: {e}")));
    if let Err(e) = r {
        if c.error.is_none() {
            c.error = Some(format!("trailer: {e}"));
        }
    }
    c
}

/// Parses a byte count: digits with an optional `K`, `M` or `G` (binary multiples).
pub fn parse_size(s: &str) -> Result<u64> {
    let (num, mul) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .filter(|&n| n <= MAX_STREAM_BYTES)
        .ok_or_else(|| err!("bad size {s:?} (digits with K, M or G, at most 1 TiB)"))
}

/// Hex form of a digest.
pub fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;

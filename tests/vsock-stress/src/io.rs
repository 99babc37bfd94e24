//! Non-blocking send and receive with poll timeouts: whole buffers, exact reads, the end of
//! the stream, and whole pattern streams sent or received and verified.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recv, send, MsgFlags};
use sha2::{Digest, Sha256};

use crate::{err, Dir, Pattern, Result, Verifier};

/// I/O chunk: bytes generated, sent or read at a time.
pub const CHUNK: usize = 64 * 1024;
/// Read size of a slow reader (it sleeps `slow_ms` after each read).
pub const SLOW_CHUNK: usize = 16 * 1024;

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

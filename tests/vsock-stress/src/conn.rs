//! One connection, the client's part and the server's part over any connected stream socket,
//! and the cross-checks of the trailer.

use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use nix::sys::socket::{shutdown, Shutdown};

use crate::{
    err, expect_eof, recv_exact, recv_stream, send_all, send_stream, Dir, Header, Result,
    SendStats, Trailer, HEADER_LEN, TRAILER_LEN,
};

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

//! Unit tests: wire format, streams, verification, and whole connections over AF_UNIX socket
//! pairs (the same code runs over AF_VSOCK in the tool).

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use nix::sys::socket::{setsockopt, socketpair, sockopt, AddressFamily, SockFlag, SockType};
use sha2::{Digest, Sha256};

use super::*;

const T: Duration = Duration::from_secs(20);

fn pair() -> (OwnedFd, OwnedFd) {
    socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .expect("socketpair")
}

fn header() -> Header {
    Header {
        up: 300_001,
        down: 200_003,
        seed: 42,
        slow_ms: 0,
    }
}

#[test]
fn header_round_trips() {
    let h = Header {
        up: 1 << 30,
        down: 7,
        seed: u64::MAX,
        slow_ms: 25,
    };
    assert_eq!(Header::decode(&h.encode()), Ok(h));
}

#[test]
fn bad_headers_are_rejected_naming_the_field() {
    let good = header().encode();
    let mut cases: Vec<(Vec<u8>, &str)> = Vec::new();
    cases.push((good[..HEADER_LEN - 1].to_vec(), "39 bytes"));
    let mut b = good;
    b[0] = b'X';
    cases.push((b.to_vec(), "magic"));
    let mut b = good;
    b[4] = 2;
    cases.push((b.to_vec(), "version 2"));
    let mut b = good;
    b[13] = 1;
    cases.push((b.to_vec(), "reserved"));
    let mut b = good;
    b[8..12].copy_from_slice(&(MAX_SLOW_MS + 1).to_le_bytes());
    cases.push((b.to_vec(), "slow_ms"));
    let mut b = good;
    b[16..24].copy_from_slice(&(MAX_STREAM_BYTES + 1).to_le_bytes());
    cases.push((b.to_vec(), "up"));
    let mut b = good;
    b[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
    cases.push((b.to_vec(), "down"));
    for (bytes, want) in cases {
        let e = Header::decode(&bytes).expect_err(want);
        assert!(e.0.contains(want), "{e} should name {want}");
    }
}

#[test]
fn trailer_round_trips_and_rejects_junk() {
    let t = Trailer {
        ok: false,
        received: 12345,
        write_blocked: 9,
        sha_received: [1; 32],
        sha_sent: [2; 32],
    };
    assert_eq!(Trailer::decode(&t.encode()), Ok(t));
    let mut b = t.encode();
    b[0] = 0;
    assert!(Trailer::decode(&b).is_err());
    let mut b = t.encode();
    b[4] = 7;
    assert!(Trailer::decode(&b).is_err());
    assert!(Trailer::decode(&b[..10]).is_err());
}

#[test]
fn pattern_does_not_depend_on_how_it_is_cut() {
    let mut whole = vec![0u8; 10_000];
    Pattern::new(7, Dir::Up).fill(&mut whole);
    let mut p = Pattern::new(7, Dir::Up);
    let mut pieces = Vec::new();
    let mut n = 1;
    while pieces.len() < whole.len() {
        let k = n.min(whole.len() - pieces.len());
        let mut b = vec![0u8; k];
        p.fill(&mut b);
        pieces.extend_from_slice(&b);
        n = n * 3 % 17 + 1;
    }
    assert_eq!(pieces, whole);
    let mut down = vec![0u8; 10_000];
    Pattern::new(7, Dir::Down).fill(&mut down);
    assert_ne!(down, whole, "the two directions differ");
    let mut other = vec![0u8; 10_000];
    Pattern::new(8, Dir::Up).fill(&mut other);
    assert_ne!(other, whole, "seeds differ");
}

#[test]
fn verifier_finds_the_first_wrong_byte() {
    let mut data = vec![0u8; 200_000];
    Pattern::new(3, Dir::Down).fill(&mut data);
    let mut v = Verifier::new(3, Dir::Down);
    v.check(&data[..77_777]).expect("good bytes");
    let mut bad = data[77_777..].to_vec();
    bad[100_000] ^= 0x40;
    let e = v.check(&bad).expect_err("a flipped bit");
    assert!(e.0.starts_with("byte 177777 differs"), "{e}");

    let mut v = Verifier::new(3, Dir::Down);
    for c in data.chunks(4093) {
        v.check(c).expect("good bytes");
    }
    assert_eq!(v.offset(), 200_000);
    let mut h = Sha256::new();
    h.update(&data);
    let want: [u8; 32] = h.finalize().into();
    assert_eq!(v.finish(), want);
}

#[test]
fn sizes_parse() {
    assert_eq!(parse_size("0"), Ok(0));
    assert_eq!(parse_size("17"), Ok(17));
    assert_eq!(parse_size("4K"), Ok(4096));
    assert_eq!(parse_size("64M"), Ok(64 << 20));
    assert_eq!(parse_size("1g"), Ok(1 << 30));
    for bad in ["", "M", "1.5M", "-1", "2T", "99999999999999999999", "1025G"] {
        assert!(parse_size(bad).is_err(), "{bad:?}");
    }
}

/// Client and server over a socket pair: every byte arrives, both sha256s match the other
/// side's, the trailer is checked.
#[test]
fn a_connection_transfers_and_cross_checks_both_streams() {
    let (a, b) = pair();
    let h = header();
    let (c, s) = std::thread::scope(|sc| {
        let s = sc.spawn(|| server_conn(&b, T));
        let c = client_conn(&a, &h, T);
        (c, s.join().expect("server thread"))
    });
    assert_eq!(c.error, None);
    assert_eq!(s.error, None);
    assert!(!s.rejected);
    assert_eq!(c.sent.bytes, h.up);
    assert_eq!(c.received, h.down);
    assert_eq!(s.received, h.up);
    assert_eq!(s.sent.bytes, h.down);
    let t = c.trailer.expect("trailer");
    assert!(t.ok);
    assert_eq!(t.sha_received, c.sha_sent);
    assert_eq!(t.sha_sent, c.sha_received);
}

#[test]
fn empty_streams_are_fine() {
    let (a, b) = pair();
    let h = Header {
        up: 0,
        down: 0,
        seed: 0,
        slow_ms: 0,
    };
    let (c, s) = std::thread::scope(|sc| {
        let s = sc.spawn(|| server_conn(&b, T));
        (client_conn(&a, &h, T), s.join().expect("server thread"))
    });
    assert_eq!((c.error, s.error), (None, None));
}

/// A slow reader with small socket buffers: the writer's sends would block (counted, with the
/// time waited), and still every byte arrives.
#[test]
fn a_slow_reader_blocks_the_writer_without_losing_bytes() {
    let (a, b) = pair();
    for fd in [&a, &b] {
        setsockopt(fd, sockopt::SndBuf, &8192).expect("SO_SNDBUF");
        setsockopt(fd, sockopt::RcvBuf, &8192).expect("SO_RCVBUF");
    }
    let h = Header {
        up: 256 * 1024,
        down: 1000,
        seed: 9,
        slow_ms: 5,
    };
    let (c, s) = std::thread::scope(|sc| {
        let s = sc.spawn(|| server_conn(&b, T));
        (client_conn(&a, &h, T), s.join().expect("server thread"))
    });
    assert_eq!((c.error.clone(), s.error.clone()), (None, None));
    assert_eq!(s.received, h.up);
    assert!(c.sent.blocked > 0, "the writer never had to wait: {c:?}");
    // 16 reads of 16 KiB with 5 ms after each: the writer waited most of that time.
    assert!(
        c.sent.blocked_time >= Duration::from_millis(40),
        "{:?}",
        c.sent
    );
}

/// A bad header: the server rejects it and closes without a trailer.
#[test]
fn a_bad_header_is_rejected_and_the_connection_closed() {
    let (a, b) = pair();
    let mut junk = header().encode();
    junk[..4].copy_from_slice(b"JUNK");
    send_all(a.as_fd(), &junk, T, &mut SendStats::default()).expect("send");
    let s = server_conn(&b, T);
    assert!(s.rejected);
    assert!(s.error.as_deref().unwrap_or("").contains("magic"), "{s:?}");
    drop(b);
    let mut buf = [0u8; 16];
    assert_eq!(
        recv_some(a.as_fd(), &mut buf, T),
        Ok(0),
        "no trailer, just EOF"
    );
}

/// A header cut short by the peer closing is a rejected connection, not a hang.
#[test]
fn a_short_header_is_rejected() {
    let (a, b) = pair();
    send_all(a.as_fd(), b"KVS1", T, &mut SendStats::default()).expect("send");
    drop(a);
    let s = server_conn(&b, T);
    assert!(s.rejected);
    assert!(
        s.error
            .as_deref()
            .unwrap_or("")
            .contains("closed after 4 of 40"),
        "{s:?}"
    );
}

/// A corrupted up stream: the server names the offset and its trailer says failed; the client
/// then reports the failure.
#[test]
fn a_corrupted_stream_is_reported_by_offset() {
    let (a, b) = pair();
    let h = Header {
        up: 5000,
        down: 10,
        seed: 5,
        slow_ms: 0,
    };
    let server = std::thread::spawn(move || server_conn(&b, T));
    let mut st = SendStats::default();
    send_all(a.as_fd(), &h.encode(), T, &mut st).expect("header");
    let mut data = vec![0u8; 5000];
    Pattern::new(5, Dir::Up).fill(&mut data);
    data[4321] = data[4321].wrapping_add(1);
    send_all(a.as_fd(), &data, T, &mut st).expect("data");
    nix::sys::socket::shutdown(
        std::os::fd::AsRawFd::as_raw_fd(&a),
        nix::sys::socket::Shutdown::Write,
    )
    .expect("shutdown");
    let s = server.join().expect("server thread");
    let e = s.error.expect("an error");
    assert!(e.contains("byte 4321 differs"), "{e}");
    let mut rest = vec![0u8; 10 + TRAILER_LEN];
    recv_exact(a.as_fd(), &mut rest, T, "down + trailer").expect("down + trailer");
    let t = Trailer::decode(&rest[10..]).expect("trailer");
    assert!(!t.ok);
    assert_eq!(t.received, 4321);
    let err = check_trailer(&t, &h, &[0; 32], &t.sha_sent).expect_err("failed");
    assert!(err.0.contains("failed up stream"), "{err}");
}

#[test]
fn trailer_mismatches_are_errors() {
    let h = header();
    let good = Trailer {
        ok: true,
        received: h.up,
        write_blocked: 0,
        sha_received: [1; 32],
        sha_sent: [2; 32],
    };
    assert_eq!(check_trailer(&good, &h, &[1; 32], &[2; 32]), Ok(()));
    let short = Trailer {
        received: h.up - 1,
        ..good
    };
    assert!(check_trailer(&short, &h, &[1; 32], &[2; 32]).is_err());
    assert!(check_trailer(&good, &h, &[9; 32], &[2; 32]).is_err());
    assert!(check_trailer(&good, &h, &[1; 32], &[9; 32]).is_err());
}

/// A peer that stops reading and writing makes the other side fail with a timeout, not hang.
#[test]
fn a_silent_peer_times_out() {
    let (a, _b) = pair();
    let mut buf = [0u8; 4];
    let e = recv_exact(a.as_fd(), &mut buf, Duration::from_millis(200), "x").expect_err("timeout");
    assert!(e.0.contains("no progress"), "{e}");
}

//! Hybrid vsock tests: the header, the handshake, the connection state machine over real
//! Unix sockets with made-up guest packets, and the device's queues against hostile chains.

use super::muxer::*;
use super::packet::*;
use super::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use vm_memory::{Bytes, GuestAddress};

const CID: u64 = 77;

fn sock_path() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let p = std::env::temp_dir().join(format!(
        "kata-hvsock-{}-{}.sock",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_file(&p);
    p
}

struct Rig {
    m: Muxer,
    path: PathBuf,
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn rig() -> Rig {
    let path = sock_path();
    let l = bind(&path).unwrap();
    Rig {
        m: Muxer::new(CID, Some(l)).unwrap(),
        path,
    }
}

impl Rig {
    fn client(&self) -> UnixStream {
        let s = UnixStream::connect(&self.path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }
    fn poll(&mut self) {
        self.m.poll_host(Instant::now());
    }
    /// Every packet for the guest now, payloads up to `room` bytes.
    fn drain(&mut self, room: usize) -> Vec<(Header, Vec<u8>)> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; room];
        for _ in 0..10_000 {
            match self.m.next_rx(&mut buf) {
                Some((h, n)) => out.push((h, buf[..n].to_vec())),
                None => break,
            }
        }
        out
    }
    /// A guest packet on the connection (host port `local`, guest port `peer`).
    fn guest(&mut self, local: u32, peer: u32, op: u16, data: &[u8], buf_alloc: u32, fwd: u32) {
        let h = guest_hdr(local, peer, op, data.len() as u32, buf_alloc, fwd);
        self.m.recv_pkt(&h, data);
    }
    /// Connects a client to guest port `port` and completes the handshake: (client, host
    /// port). The guest advertises `buf_alloc`.
    fn established(&mut self, port: u32, buf_alloc: u32) -> (UnixStream, u32) {
        let mut c = self.client();
        c.write_all(format!("CONNECT {port}\n").as_bytes()).unwrap();
        self.poll();
        let pkts = self.drain(4096);
        assert_eq!(pkts.len(), 1, "{pkts:?}");
        let (h, _) = pkts[0];
        assert_eq!(h.op, op::REQUEST);
        assert_eq!((h.src_cid, h.dst_cid, h.dst_port), (HOST_CID, CID, port));
        assert_eq!(h.buf_alloc, BUF_ALLOC);
        self.guest(h.src_port, port, op::RESPONSE, &[], buf_alloc, 0);
        let mut line = [0u8; 64];
        let n = c.read(&mut line).unwrap();
        assert_eq!(
            std::str::from_utf8(&line[..n]).unwrap(),
            format!("OK {}\n", h.src_port)
        );
        (c, h.src_port)
    }
}

fn guest_hdr(local: u32, peer: u32, op: u16, len: u32, buf_alloc: u32, fwd: u32) -> Header {
    Header {
        src_cid: CID,
        dst_cid: HOST_CID,
        src_port: peer,
        dst_port: local,
        len,
        type_: TYPE_STREAM,
        op,
        flags: 0,
        buf_alloc,
        fwd_cnt: fwd,
    }
}

fn closed(c: &mut UnixStream) -> bool {
    let mut b = [0u8; 1];
    match c.read(&mut b) {
        Ok(0) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(_) => false,
    }
}

#[test]
fn header_round_trip_and_checks() {
    let h = guest_hdr(5, 1024, op::RW, 3, 4096, 9);
    let b = h.encode();
    assert_eq!(b.len(), HDR_LEN);
    assert_eq!(Header::parse(&b), h);
    assert_eq!(&b[0..8], &CID.to_le_bytes());
    assert_eq!(&b[30..32], &op::RW.to_le_bytes());
    assert!(h.check(CID, 3).is_ok());
    assert_eq!(h.check(CID, 2), Err(BadPacket::Len(3)));
    assert_eq!(h.check(CID + 1, 3), Err(BadPacket::Address(CID, HOST_CID)));
    let mut x = h;
    x.dst_cid = 3;
    assert!(matches!(x.check(CID, 3), Err(BadPacket::Address(..))));
    x = h;
    x.type_ = 2;
    assert_eq!(x.check(CID, 3), Err(BadPacket::Type(2)));
    for bad_op in [0, 8, 0xffff] {
        x = h;
        x.op = bad_op;
        assert_eq!(x.check(CID, 3), Err(BadPacket::Op(bad_op)));
    }
    x = h;
    x.len = 0;
    assert_eq!(x.check(CID, 3), Err(BadPacket::Len(0)), "empty RW");
    x = guest_hdr(5, 1024, op::SHUTDOWN, 1, 0, 0);
    assert_eq!(
        x.check(CID, 1),
        Err(BadPacket::Len(1)),
        "payload on a control op"
    );
    x = guest_hdr(5, 1024, op::RW, (MAX_PAYLOAD + 1) as u32, 0, 0);
    assert!(x.check(CID, MAX_PAYLOAD + 1).is_err());
    let r = h.reset_reply(CID);
    assert_eq!(
        (r.src_cid, r.dst_cid, r.src_port, r.dst_port, r.op),
        (HOST_CID, CID, 5, 1024, op::RST)
    );
}

/// Found by the `vsock_host_and_guest` fuzz target: host data waiting on an established
/// connection and a guest rx buffer with room for the header only (44 bytes) made `next_rx`
/// requeue and pop the same connection forever (the VMM's main thread spun).
#[test]
fn header_only_rx_buffer_with_host_data_pending_does_not_spin() {
    let mut r = rig();
    let (mut c, local) = r.established(1024, 4096);
    c.write_all(b"data").unwrap();
    r.poll();
    assert!(r.m.has_rx());
    assert_eq!(
        r.m.next_rx(&mut []),
        None,
        "no room: nothing now, and no endless loop"
    );
    let pkts = r.drain(16);
    assert_eq!(pkts.len(), 1, "{pkts:?}");
    assert_eq!((pkts[0].0.op, pkts[0].0.src_port), (op::RW, local));
    assert_eq!(pkts[0].1, b"data");
}

#[test]
fn handshake_lines() {
    assert_eq!(parse_connect(b"CONNECT 1024"), Some(1024));
    assert_eq!(parse_connect(b"CONNECT 0"), Some(0));
    assert_eq!(parse_connect(b"CONNECT 4294967294"), Some(u32::MAX - 1));
    for bad in [
        &b"CONNECT 4294967295"[..],
        b"CONNECT 4294967296",
        b"CONNECT 99999999999",
        b"CONNECT ",
        b"CONNECT -1",
        b"CONNECT +1",
        b"CONNECT 1 ",
        b"CONNECT  1",
        b"connect 1",
        b"CONNECT 1\r",
        b"CONNECT 0x10",
        b"",
        b"\xff\xfe",
    ] {
        assert_eq!(parse_connect(bad), None, "{bad:?}");
    }
}

#[test]
fn socket_is_0600_and_replaces_only_sockets() {
    use std::os::unix::fs::PermissionsExt;
    let r = rig();
    let mode = std::fs::metadata(&r.path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // A stale socket is replaced.
    let again = bind(&r.path);
    assert!(again.is_ok());
    let file = sock_path();
    std::fs::write(&file, b"x").unwrap();
    let e = bind(&file).unwrap_err().to_string();
    assert!(e.contains("not a socket"), "{e}");
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn data_both_ways_and_close() {
    let mut r = rig();
    let (mut c, local) = r.established(1024, 64 << 10);
    c.write_all(b"hello guest").unwrap();
    r.poll();
    let p = r.drain(4096);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].0.op, op::RW);
    assert_eq!(p[0].0.dst_port, 1024);
    assert_eq!(p[0].1, b"hello guest");
    // Guest -> host.
    r.guest(local, 1024, op::RW, b"hello host", 64 << 10, 11);
    let mut b = [0u8; 10];
    c.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"hello host");
    // Data the client sent right behind its handshake line reaches the guest too.
    let mut c2 = r.client();
    c2.write_all(b"CONNECT 7\nearly").unwrap();
    r.poll();
    let p = r.drain(4096);
    let req = p.iter().find(|(h, _)| h.op == op::REQUEST).unwrap().0;
    r.guest(req.src_port, 7, op::RESPONSE, &[], 4096, 0);
    let mut ok = [0u8; 32];
    let n = c2.read(&mut ok).unwrap();
    assert!(ok[..n].starts_with(b"OK "));
    let p = r.drain(4096);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].1, b"early");
    // The host client half-closes: the guest gets SHUTDOWN(SEND) once.
    c.shutdown(std::net::Shutdown::Write).unwrap();
    r.poll();
    let p = r.drain(4096);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!((p[0].0.op, p[0].0.flags), (op::SHUTDOWN, SHUTDOWN_SEND));
    // The guest still sends, then closes: the client reads it all, then EOF; the guest
    // gets its RST.
    r.guest(local, 1024, op::RW, b"last", 64 << 10, 11);
    let mut s = guest_hdr(local, 1024, op::SHUTDOWN, 0, 64 << 10, 11);
    s.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
    r.m.recv_pkt(&s, &[]);
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"last");
    let p = r.drain(4096);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!((p[0].0.op, p[0].0.dst_port), (op::RST, 1024));
    assert_eq!(r.m.connections(), 1);
    assert_eq!(r.m.stats.established, 2);
}

#[test]
fn guest_shutdown_both_ways_closes_the_client() {
    let mut r = rig();
    let (mut c, local) = r.established(1024, 4096);
    r.guest(local, 1024, op::RW, b"bye", 4096, 0);
    let mut s = guest_hdr(local, 1024, op::SHUTDOWN, 0, 4096, 0);
    s.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
    r.m.recv_pkt(&s, &[]);
    let mut all = Vec::new();
    c.read_to_end(&mut all).unwrap();
    assert_eq!(all, b"bye");
    assert_eq!(r.drain(4096)[0].0.op, op::RST);
    assert_eq!(r.m.connections(), 0);
}

#[test]
fn credit_is_honoured_host_to_guest() {
    let mut r = rig();
    let (mut c, local) = r.established(1024, 4);
    c.write_all(b"0123456789").unwrap();
    r.poll();
    let p = r.drain(4096);
    // 4 bytes (all the guest's credit), then one credit request, nothing more.
    assert_eq!(p.len(), 2, "{p:?}");
    assert_eq!((p[0].0.op, &p[0].1[..]), (op::RW, &b"0123"[..]));
    assert_eq!(p[1].0.op, op::CREDIT_REQUEST);
    assert!(
        r.drain(4096).is_empty(),
        "no second request while nothing changed"
    );
    // An unchanged credit update does not free anything either.
    r.guest(local, 1024, op::CREDIT_UPDATE, &[], 4, 0);
    assert!(r.drain(4096).is_empty());
    // The guest consumed 4 bytes.
    r.guest(local, 1024, op::CREDIT_UPDATE, &[], 4, 4);
    let p = r.drain(4096);
    assert_eq!(p[0].1, b"4567");
    // A small guest buffer limits the packet too.
    r.guest(local, 1024, op::CREDIT_UPDATE, &[], 100, 8);
    let p = r.drain(1);
    assert_eq!(p.iter().map(|x| x.1.len()).sum::<usize>(), 2);
    assert!(p.iter().all(|x| x.1.len() <= 1));
}

#[test]
fn credit_is_enforced_guest_to_host() {
    let mut r = rig();
    let (c, local) = r.established(1024, 4096);
    // The client never reads: the socket buffer fills, then our BUF_ALLOC; one more byte
    // beyond the credit resets the connection.
    let chunk = vec![0x5a; MAX_PAYLOAD];
    let mut sent = 0usize;
    let mut reset = false;
    for _ in 0..1024 {
        r.guest(local, 1024, op::RW, &chunk, 4096, 0);
        sent += chunk.len();
        if r.m.connections() == 0 {
            reset = true;
            break;
        }
    }
    assert!(reset, "sent {sent} bytes without a reset");
    assert_eq!(r.m.stats.violations, 1);
    let p = r.drain(4096);
    assert!(p.iter().any(|(h, _)| h.op == op::RST), "{p:?}");
    // Credit updates were offered along the way (a quarter of BUF_ALLOC written out).
    drop(c);
}

#[test]
fn credit_updates_follow_progress() {
    let mut r = rig();
    let (mut c, local) = r.established(1024, 4096);
    let chunk = vec![1u8; 32 << 10];
    for _ in 0..2 {
        r.guest(local, 1024, op::RW, &chunk, 4096, 0);
    }
    let mut got = vec![0u8; 64 << 10];
    c.read_exact(&mut got).unwrap();
    let p = r.drain(4096);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].0.op, op::CREDIT_UPDATE);
    assert_eq!(p[0].0.fwd_cnt, 64 << 10);
    // A credit request is answered.
    r.guest(local, 1024, op::CREDIT_REQUEST, &[], 4096, 0);
    let p = r.drain(4096);
    assert_eq!(p[0].0.op, op::CREDIT_UPDATE);
    assert_eq!(p[0].0.buf_alloc, BUF_ALLOC);
}

#[test]
fn refused_and_timed_out_connections_close_the_client() {
    let mut r = rig();
    let mut c = r.client();
    c.write_all(b"CONNECT 1024\n").unwrap();
    r.poll();
    let req = r.drain(4096)[0].0;
    r.guest(req.src_port, 1024, op::RST, &[], 0, 0);
    assert!(closed(&mut c));
    assert_eq!(r.m.stats.refused, 1);
    assert!(r.drain(4096).is_empty(), "no RST for an RST");
    // No answer at all.
    let mut c = r.client();
    c.write_all(b"CONNECT 1024\n").unwrap();
    r.poll();
    assert_eq!(r.drain(4096).len(), 1);
    r.m.expire(Instant::now() + CONNECT_TIMEOUT + Duration::from_secs(1));
    assert!(closed(&mut c));
    assert_eq!(r.m.stats.timeouts, 1);
    assert_eq!(r.drain(4096)[0].0.op, op::RST, "the guest hears of it");
    // A client that never sends its line.
    let mut c = r.client();
    r.poll();
    assert_eq!(r.m.connections(), 1);
    r.m.expire(Instant::now() + HANDSHAKE_TIMEOUT + Duration::from_secs(1));
    assert!(closed(&mut c));
    assert_eq!(r.m.connections(), 0);
    assert!(r.drain(4096).is_empty(), "the guest never knew of it");
}

#[test]
fn bad_handshakes_are_closed() {
    let mut r = rig();
    for line in [
        &b"HELLO\n"[..],
        b"CONNECT abc\n",
        b"CONNECT 4294967295\n",
        &[b'C'; MAX_LINE + 5],
        b"CONNECT 1\r\n",
    ] {
        let mut c = r.client();
        c.write_all(line).unwrap();
        r.poll();
        assert!(closed(&mut c), "{line:?}");
    }
    // EOF before a newline.
    let c = r.client();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    r.poll();
    assert_eq!(r.m.connections(), 0);
    assert_eq!(r.m.stats.bad_handshakes, 6);
    assert!(r.drain(4096).is_empty());
}

#[test]
fn connection_limit() {
    let mut r = rig();
    let mut clients = Vec::new();
    for _ in 0..MAX_CONNS + 3 {
        clients.push(r.client());
        r.poll();
    }
    assert_eq!(r.m.connections(), MAX_CONNS);
    assert_eq!(r.m.stats.over_limit, 3);
    let mut last = clients.pop().unwrap();
    assert!(closed(&mut last));
}

#[test]
fn guest_garbage_gets_rst_or_is_dropped() {
    let mut r = rig();
    let (mut c, local) = r.established(1024, 4096);
    // A guest-initiated connection: refused.
    r.guest(5000, 99, op::REQUEST, &[], 4096, 0);
    let p = r.drain(4096);
    assert_eq!(p.len(), 1);
    assert_eq!(
        (p[0].0.op, p[0].0.src_port, p[0].0.dst_port),
        (op::RST, 5000, 99)
    );
    assert_eq!(r.m.stats.guest_requests, 1);
    // Data to a port nobody uses: RST; an RST to it: nothing.
    r.guest(5001, 99, op::RW, b"x", 4096, 0);
    assert_eq!(r.drain(4096)[0].0.op, op::RST);
    r.guest(5001, 99, op::RST, &[], 4096, 0);
    assert!(r.drain(4096).is_empty());
    // A packet from a foreign CID is dropped without a word.
    let mut h = guest_hdr(local, 1024, op::RW, 1, 4096, 0);
    h.src_cid = 3;
    r.m.recv_pkt(&h, b"x");
    assert!(r.drain(4096).is_empty());
    assert_eq!(r.m.connections(), 1);
    // The right ports but the wrong guest port: not this connection.
    r.guest(local, 1025, op::RW, b"x", 4096, 0);
    assert_eq!(r.drain(4096)[0].0.dst_port, 1025);
    assert_eq!(r.m.connections(), 1);
    // A seqpacket packet on the connection: reset.
    let mut h = guest_hdr(local, 1024, op::RW, 1, 4096, 0);
    h.type_ = 2;
    r.m.recv_pkt(&h, b"x");
    assert_eq!(r.drain(4096)[0].0.op, op::RST);
    assert_eq!(r.m.connections(), 0);
    assert!(closed(&mut c));
    // A RESPONSE on an established connection is a violation.
    let (mut c, local) = r.established(1024, 4096);
    r.guest(local, 1024, op::RESPONSE, &[], 4096, 0);
    assert_eq!(r.drain(4096)[0].0.op, op::RST);
    assert!(closed(&mut c));
    // Data after the guest said it would send no more.
    let (mut c, local) = r.established(1024, 4096);
    let mut s = guest_hdr(local, 1024, op::SHUTDOWN, 0, 4096, 0);
    s.flags = SHUTDOWN_SEND;
    r.m.recv_pkt(&s, &[]);
    let mut all = Vec::new();
    c.read_to_end(&mut all).unwrap();
    assert!(all.is_empty(), "EOF for the client");
    r.guest(local, 1024, op::RW, b"x", 4096, 0);
    assert_eq!(r.drain(4096)[0].0.op, op::RST);
    assert_eq!(r.m.connections(), 0);
}

#[test]
fn reset_drops_every_connection() {
    let mut r = rig();
    let (mut c, _) = r.established(1024, 4096);
    let mut pending = r.client();
    r.poll();
    r.m.reset();
    assert_eq!(r.m.connections(), 0);
    assert!(closed(&mut c));
    assert!(closed(&mut pending));
    assert!(!r.m.has_rx());
}

/// xorshift64*: deterministic garbage.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[(self.next() % v.len() as u64) as usize]
    }
}

#[test]
fn random_guest_packets_never_panic_and_stay_bounded() {
    let mut r = rig();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut clients = Vec::new();
    let mut locals = vec![0u32, 1, FIRST_LOCAL_PORT];
    for i in 0..4 {
        let (c, l) = r.established(1000 + i, rng.next() as u32);
        clients.push(c);
        locals.push(l);
    }
    let data = vec![0xabu8; MAX_PAYLOAD];
    for round in 0..20_000 {
        let mut h = Header::parse(&{
            let mut b = [0u8; HDR_LEN];
            for x in b.chunks_mut(8) {
                let v = rng.next().to_le_bytes();
                x.copy_from_slice(&v[..x.len()]);
            }
            b
        });
        // Mostly plausible fields, so the state machine is reached, not just the checks.
        if !rng.next().is_multiple_of(8) {
            h.src_cid = CID;
            h.dst_cid = HOST_CID;
            h.type_ = TYPE_STREAM;
            h.op = rng.pick(&[0, 1, 2, 3, 4, 5, 5, 5, 6, 7, 8]);
            h.dst_port = rng.pick(&locals);
            h.src_port = rng.pick(&[1000, 1001, 1002, 1003, 5, u32::MAX]);
            h.len = rng.pick(&[0, 1, 100, 4096, MAX_PAYLOAD as u32, u32::MAX]);
            h.flags = rng.pick(&[0, 1, 2, 3, u32::MAX]);
        }
        let avail = (rng.next() as usize) % (MAX_PAYLOAD + 1);
        r.m.recv_pkt(&h, &data[..avail.min(h.len as usize)]);
        if round % 64 == 0 {
            let room = (rng.next() as usize) % 5000;
            let _ = r.drain(room);
            r.poll();
        }
        assert!(r.m.connections() <= 4);
    }
    let _ = r.drain(4096);
    assert!(!r.m.has_rx());
}

mod device;
mod seccomp;

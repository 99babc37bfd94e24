//! The guest side of the [`Muxer`]: packets from the guest (`recv_pkt`, the bytes they carry
//! written to the Unix side by `flush`) and packets for it (`next_rx`), with the credit rules
//! that bound what either side can make the other buffer.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;

use super::super::packet::{op, BadPacket, Header, SHUTDOWN_RCV, SHUTDOWN_SEND};
use super::{Muxer, State, BUF_ALLOC, P_CREDIT_UPDATE, P_REQUEST};

impl Muxer {
    /// A packet from the guest: `payload` is what its chain holds after the header (at most
    /// the maximum payload). Malformed packets are dropped or answered with RST; nothing the
    /// guest sends can make the muxer buffer more than its advertised credit.
    pub fn recv_pkt(&mut self, h: &Header, payload: &[u8]) {
        if let Err(e) = h.check(self.guest_cid, payload.len()) {
            self.stats.bad_packets += 1;
            if !matches!(e, BadPacket::Address(..)) {
                if let Some(key) = self.matching(h) {
                    self.kill(key, false);
                }
                if h.op != op::RST {
                    self.push_reset(h.reset_reply(self.guest_cid));
                }
            }
            return;
        }
        let Some(key) = self.matching(h) else {
            if h.op == op::REQUEST {
                self.stats.guest_requests += 1;
            }
            if h.op != op::RST {
                self.push_reset(h.reset_reply(self.guest_cid));
            }
            return;
        };
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        if c.peer_buf_alloc != h.buf_alloc || c.peer_fwd_cnt != h.fwd_cnt {
            c.credit_requested = false;
        }
        c.peer_buf_alloc = h.buf_alloc;
        c.peer_fwd_cnt = h.fwd_cnt;
        match (c.state, h.op) {
            (State::Connecting, op::RESPONSE) => {
                c.state = State::Established;
                c.deadline = None;
                // Whatever the client sent behind its handshake line is read now.
                c.readable = true;
                let line = kata_rs_protocol::hybrid_vsock::ok_line(key);
                if !matches!(c.stream.write(line.as_bytes()), Ok(n) if n == line.len()) {
                    self.kill(key, true);
                    return;
                }
                self.stats.established += 1;
            }
            (State::Connecting, op::RST) => {
                self.stats.refused += 1;
                self.kill(key, false);
                return;
            }
            (State::Established, op::RW) => {
                let len = h.len as usize;
                if c.guest_shut & SHUTDOWN_SEND != 0 || c.buf.len() + len > BUF_ALLOC as usize {
                    self.stats.violations += 1;
                    self.kill(key, true);
                    return;
                }
                c.buf.extend(&payload[..len]);
                self.stats.to_host += len as u64;
                self.flush(key);
            }
            (State::Established, op::CREDIT_UPDATE) => {}
            (State::Established, op::CREDIT_REQUEST) => c.pending |= P_CREDIT_UPDATE,
            (State::Established, op::SHUTDOWN) => {
                c.guest_shut |= h.flags & (SHUTDOWN_RCV | SHUTDOWN_SEND);
                self.flush(key);
            }
            (State::Established, op::RST) => {
                self.kill(key, false);
                return;
            }
            _ => {
                // A REQUEST or RESPONSE on a live connection, data before it is up, ...
                self.stats.violations += 1;
                self.kill(key, true);
                return;
            }
        }
        self.requeue(key);
    }

    /// The connection a guest packet belongs to: our port, its port, past the handshake.
    fn matching(&self, h: &Header) -> Option<u32> {
        let c = self.conns.get(&h.dst_port)?;
        (c.state != State::Handshake && c.peer_port == h.src_port).then_some(h.dst_port)
    }

    /// Writes buffered guest bytes to the Unix side; then, if the guest shut its sending
    /// side and everything is out, passes that on (or ends the connection when both sides
    /// are done).
    pub(super) fn flush(&mut self, key: u32) {
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        while !c.buf.is_empty() {
            let (a, _) = c.buf.as_slices();
            match c.stream.write(a) {
                Ok(n) => {
                    c.buf.drain(..n);
                    c.fwd_cnt = c.fwd_cnt.wrapping_add(n as u32);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    // EPIPE, ECONNRESET: the client is gone.
                    self.kill(key, true);
                    return;
                }
            }
        }
        if c.fwd_cnt.wrapping_sub(c.fwd_reported) >= BUF_ALLOC / 4 {
            c.pending |= P_CREDIT_UPDATE;
        }
        if c.buf.is_empty() && c.guest_shut & SHUTDOWN_SEND != 0 {
            if c.guest_shut & SHUTDOWN_RCV != 0 || c.host_eof {
                // Both directions are over: the guest gets its RST (the end of a close).
                self.kill(key, true);
                return;
            }
            if !c.host_write_shut {
                c.host_write_shut = true;
                // SAFETY: shutdown(2) of our own connected socket's write half.
                unsafe { libc::shutdown(c.stream.as_raw_fd(), libc::SHUT_WR) };
            }
        }
        self.requeue(key);
    }

    /// The next packet for the guest, its payload (if any) in `buf[..n]`; `buf` is the room
    /// the guest's buffer has after the header. None: nothing to send now.
    pub fn next_rx(&mut self, buf: &mut [u8]) -> Option<(Header, usize)> {
        if let Some(h) = self.resets.pop_front() {
            return Some((h, 0));
        }
        // Each queued connection is looked at once per call: one that has work but no packet
        // now (no room for data in a header-only buffer) goes back to the queue, and must not
        // be popped again in this call (that was an endless loop of the main thread).
        for _ in 0..self.rx_ready.len() {
            let Some(key) = self.rx_ready.pop_front() else {
                break;
            };
            let Some(c) = self.conns.get_mut(&key) else {
                continue;
            };
            c.queued = false;
            let pkt = self.conn_pkt(key, buf);
            self.requeue(key);
            if pkt.is_some() {
                return pkt;
            }
            if let Some(h) = self.resets.pop_front() {
                return Some((h, 0));
            }
        }
        None
    }

    fn conn_pkt(&mut self, key: u32, buf: &mut [u8]) -> Option<(Header, usize)> {
        let cid = self.guest_cid;
        let c = self.conns.get_mut(&key)?;
        let mut h = Header::to_guest(cid, key, c.peer_port, 0);
        let mut n = 0;
        if c.pending & P_REQUEST != 0 {
            c.pending &= !P_REQUEST;
            h.op = op::REQUEST;
        } else if c.state != State::Established {
            return None;
        } else if c.pending & P_CREDIT_UPDATE != 0 {
            c.pending &= !P_CREDIT_UPDATE;
            h.op = op::CREDIT_UPDATE;
        } else if c.wants_data() && !buf.is_empty() {
            let credit = c.peer_credit() as usize;
            if credit == 0 {
                if c.credit_requested {
                    return None;
                }
                c.credit_requested = true;
                h.op = op::CREDIT_REQUEST;
            } else {
                let want = credit.min(buf.len());
                match c.stream.read(&mut buf[..want]) {
                    Ok(0) => {
                        c.host_eof = true;
                        return self.conn_pkt(key, buf);
                    }
                    Ok(got) => {
                        n = got;
                        c.rx_cnt = c.rx_cnt.wrapping_add(got as u32);
                        h.op = op::RW;
                        h.len = got as u32;
                        self.stats.to_guest += got as u64;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        c.readable = false;
                        return None;
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => return None,
                    Err(_) => {
                        self.kill(key, true);
                        return None;
                    }
                }
            }
        } else if c.host_eof && !c.eof_sent {
            c.eof_sent = true;
            h.op = op::SHUTDOWN;
            h.flags = SHUTDOWN_SEND;
            if c.guest_shut & SHUTDOWN_SEND != 0 && c.buf.is_empty() {
                // The guest was done sending too: this ends it.
                self.kill(key, true);
                return None;
            }
        } else {
            return None;
        }
        h.buf_alloc = BUF_ALLOC;
        h.fwd_cnt = c.fwd_cnt;
        c.fwd_reported = c.fwd_cnt;
        Some((h, n))
    }
}

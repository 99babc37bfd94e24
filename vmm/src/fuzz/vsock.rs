//! Target (c), `vsock_host_and_guest`: the hybrid vsock muxer between host clients and guest
//! packets.

use kata_rs_fuzz::{fuzz, Result};

use super::*;

/// Target (c): the hybrid vsock muxer between host clients on its Unix socket and guest
/// packets, with deadlines passing.
#[test]
pub(super) fn vsock_host_and_guest() {
    use crate::devices::virtio::vsock::muxer::{Muxer, MAX_CONNS};
    use crate::devices::virtio::vsock::packet::{op, Header};
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::time::{Duration, Instant};

    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let (mut established, mut to_host, mut to_guest) = (0, 0, 0);
    fuzz("vsock_host_and_guest", &[], |u| {
        let path = std::env::temp_dir().join(format!(
            "kata-fuzz-vsock-{}-{}.sock",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let listener = crate::devices::virtio::vsock::bind(&path).unwrap();
        let mut m = Muxer::new(GUEST_CID, Some(listener)).unwrap();
        let r = (|| -> Result {
            let mut clients: Vec<UnixStream> = Vec::new();
            // (host port, guest port) of the connection requests the guest has seen.
            let mut conns: Vec<(u32, u32)> = Vec::new();
            let cooperative: bool = u.arbitrary()?;
            let mut now = Instant::now();
            for _ in 0..64 {
                if u.is_empty() {
                    break;
                }
                match u.int_in_range(0..=8)? {
                    0 if clients.len() < 8 => {
                        let Ok(c) = UnixStream::connect(&path) else {
                            continue;
                        };
                        c.set_nonblocking(true).unwrap();
                        clients.push(c);
                    }
                    1 if !clients.is_empty() => {
                        let i = u.choose_index(clients.len())?;
                        let bytes: Vec<u8> = match u.int_in_range(0..=3)? {
                            0 => format!("CONNECT {}\n", u.int_in_range(1023..=1025u32)?).into(),
                            1 => format!("CONNECT {}\n", u.arbitrary::<u64>()?).into(),
                            _ => {
                                let mut b = vec![0u8; u.int_in_range(0..=48)?];
                                u.fill_buffer(&mut b)?;
                                b
                            }
                        };
                        let _ = clients[i].write(&bytes);
                    }
                    2 if !clients.is_empty() => {
                        let i = u.choose_index(clients.len())?;
                        if u.arbitrary()? {
                            clients.remove(i);
                        } else {
                            let _ = clients[i].shutdown(std::net::Shutdown::Write);
                        }
                    }
                    3 if !clients.is_empty() => {
                        let i = u.choose_index(clients.len())?;
                        let mut b = [0u8; 4096];
                        let _ = clients[i].read(&mut b);
                    }
                    4 => {
                        now += Duration::from_secs(*u.choose(&[0, 1, 5, 6, 11])?);
                        m.expire(now);
                        m.poll_host(now);
                    }
                    5 => m.poll_host(now),
                    6 | 7 => {
                        let (local, peer) = match conns.is_empty() || u.ratio(1, 4)? {
                            true => (u.arbitrary()?, u.arbitrary()?),
                            false => *u.choose(&conns)?,
                        };
                        let mut h =
                            Header::to_guest(GUEST_CID, peer, local, u.int_in_range(0..=8)?);
                        (h.src_cid, h.dst_cid) = (GUEST_CID, 2);
                        if u.ratio(1, 8)? {
                            h.src_cid = u.arbitrary()?;
                        }
                        h.flags = u.int_in_range(0..=3)?;
                        h.buf_alloc = *u.choose(&[0, 1, 4096, 256 << 10, u32::MAX])?;
                        h.fwd_cnt = u.arbitrary()?;
                        let mut payload = vec![0u8; *u.choose(&[0usize, 1, 100, 4096])?];
                        let head = payload.len().min(16);
                        u.fill_buffer(&mut payload[..head])?;
                        h.len = if u.ratio(7, 8)? {
                            payload.len() as u32
                        } else {
                            u.arbitrary()?
                        };
                        m.recv_pkt(&h, &payload);
                    }
                    _ => {
                        let mut buf = vec![0u8; *u.choose(&[0usize, 1, 16, 4096])?];
                        let mut drained = false;
                        for _ in 0..10_000 {
                            let Some((h, n)) = m.next_rx(&mut buf) else {
                                drained = true;
                                break;
                            };
                            assert!(n <= buf.len() && h.len as usize == n, "{h:?} {n}");
                            assert_eq!((h.src_cid, h.dst_cid), (2, GUEST_CID), "{h:?}");
                            if h.op == op::REQUEST {
                                conns.push((h.src_port, h.dst_port));
                                if cooperative {
                                    let mut r = Header::to_guest(
                                        GUEST_CID,
                                        h.dst_port,
                                        h.src_port,
                                        op::RESPONSE,
                                    );
                                    (r.src_cid, r.dst_cid, r.buf_alloc) = (GUEST_CID, 2, 64 << 10);
                                    m.recv_pkt(&r, &[]);
                                }
                            }
                        }
                        assert!(drained, "the muxer keeps producing packets");
                    }
                }
                assert!(m.connections() <= MAX_CONNS);
            }
            Ok(())
        })();
        let _ = std::fs::remove_file(&path);
        established += m.stats.established;
        to_host += m.stats.to_host;
        to_guest += m.stats.to_guest;
        r
    });
    eprintln!(
        "fuzz vsock_host_and_guest: {established} connections established, {to_host} bytes to \
         the host, {to_guest} to the guest"
    );
}

//! Port forwarding into the guest (docs/port-forward.md): the guest end of the shim's
//! forwarder, on vsock port [`PORT`].
//!
//! A connection starts with one request line:
//! - `WATCH\n`: the agent answers `PORTS p1,p2,...\n` (the TCP ports listened on in the
//!   guest's network namespace, the pod's, on an address a loopback connection reaches:
//!   `0.0.0.0`, `127.0.0.0/8`, `::`, `::1`) at once, whenever the set changes and at least
//!   every [`REPEAT`], until the shim hangs up. The shim listens on the same ports on
//!   127.0.0.1 in the pod's network namespace on the node.
//! - `TCP <port>\n`: the agent dials `127.0.0.1:<port>` (then `[::1]:<port>`) in the guest,
//!   answers `OK\n` or `ERR <why>\n`, and then copies bytes both ways, passing each
//!   direction's end on as a half close.
//!
//! Only root on the node reaches this port (the VMM's hybrid vsock socket, docs/security.md
//! "The agent channel"); what it can reach is what a container of the pod reaches anyway.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, VsockAddr};

/// The guest vsock port of the forwarder (the agent's API is on 1024).
pub const PORT: u32 = 1025;
/// How often the listening ports are read for `WATCH`.
const POLL: Duration = Duration::from_millis(300);
/// A `WATCH` answer is repeated at least this often (so a gone shim is noticed).
const REPEAT: Duration = Duration::from_secs(5);
/// Longest request line.
const MAX_LINE: usize = 64;
/// How long a `TCP` dial may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// Listens on vsock port [`PORT`] and serves each connection on a thread of its own.
pub fn spawn() -> std::io::Result<()> {
    let fd = socket::socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    socket::bind(fd.as_raw_fd(), &VsockAddr::new(libc::VMADDR_CID_ANY, PORT))?;
    socket::listen(&fd, Backlog::new(64).unwrap_or(Backlog::MAXCONN))?;
    std::thread::Builder::new()
        .name("forward".into())
        .spawn(move || loop {
            match socket::accept4(fd.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
                Ok(c) => {
                    // SAFETY: accept4 returned a new descriptor that nothing else owns.
                    let c = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(c) };
                    let _ = std::thread::Builder::new()
                        .name("forward-conn".into())
                        .spawn(move || {
                            if let Err(e) = serve(c) {
                                tracing::debug!("forward: {e}");
                            }
                        });
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    tracing::warn!("forward: accept: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        })?;
    Ok(())
}

/// Reads the request line, byte by byte (nothing after it is consumed).
fn read_line(f: &mut File) -> Result<String, String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match f.read(&mut b) {
            Ok(0) => return Err("connection closed before the request".into()),
            Ok(_) if b[0] == b'\n' => break,
            Ok(_) if line.len() < MAX_LINE => line.push(b[0]),
            Ok(_) => return Err("request line too long".into()),
            Err(e) => return Err(format!("reading the request: {e}")),
        }
    }
    String::from_utf8(line).map_err(|_| "request is not UTF-8".into())
}

fn serve(conn: OwnedFd) -> Result<(), String> {
    let mut f = File::from(conn);
    let line = read_line(&mut f)?;
    match line.split_once(' ').unwrap_or((line.as_str(), "")) {
        ("WATCH", "") => watch(f),
        ("TCP", p) => match p.parse::<u16>() {
            Ok(port) if port != 0 => forward(f, port),
            _ => {
                let _ = f.write_all(format!("ERR bad port {p:?}\n").as_bytes());
                Err(format!("bad port {p:?}"))
            }
        },
        _ => {
            let _ = f.write_all(b"ERR unknown request\n");
            Err(format!("unknown request {line:?}"))
        }
    }
}

fn watch(mut f: File) -> Result<(), String> {
    let mut last: Option<BTreeSet<u16>> = None;
    let mut sent = Instant::now();
    loop {
        let ports = listening();
        if last.as_ref() != Some(&ports) || sent.elapsed() >= REPEAT {
            let list: Vec<String> = ports.iter().map(u16::to_string).collect();
            f.write_all(format!("PORTS {}\n", list.join(",")).as_bytes())
                .map_err(|e| format!("watch: {e}"))?;
            sent = Instant::now();
            last = Some(ports);
        }
        std::thread::sleep(POLL);
    }
}

fn forward(mut f: File, port: u16) -> Result<(), String> {
    let addrs: [SocketAddr; 2] = [
        ([127, 0, 0, 1], port).into(),
        (std::net::Ipv6Addr::LOCALHOST, port).into(),
    ];
    let mut last = None;
    let tcp = addrs.iter().find_map(|a| {
        TcpStream::connect_timeout(a, DIAL_TIMEOUT)
            .map_err(|e| last = Some(e))
            .ok()
    });
    let Some(tcp) = tcp else {
        let e = last.map(|e| e.to_string()).unwrap_or_default();
        let _ = f.write_all(format!("ERR localhost:{port}: {e}\n").as_bytes());
        return Err(format!("localhost:{port}: {e}"));
    };
    f.write_all(b"OK\n").map_err(|e| e.to_string())?;
    let (mut tcp_r, mut f_r) = (
        tcp.try_clone().map_err(|e| e.to_string())?,
        f.try_clone().map_err(|e| e.to_string())?,
    );
    let (mut tcp_w, mut f_w) = (tcp, f);
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut f_r, &mut tcp_w);
        let _ = tcp_w.shutdown(Shutdown::Write);
    });
    let _ = std::io::copy(&mut tcp_r, &mut f_w);
    let _ = socket::shutdown(f_w.as_raw_fd(), socket::Shutdown::Write);
    let _ = up.join();
    Ok(())
}

/// The TCP ports listened on in this network namespace on an address loopback reaches.
fn listening() -> BTreeSet<u16> {
    let mut ports = BTreeSet::new();
    for p in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(c) = std::fs::read_to_string(p) {
            ports.extend(parse_listening(&c));
        }
    }
    ports
}

/// The LISTEN sockets of a `/proc/net/tcp{,6}` table whose local address a loopback
/// connection reaches.
fn parse_listening(table: &str) -> BTreeSet<u16> {
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.get(3) != Some(&"0A") {
                return None;
            }
            let (addr, port) = f.get(1)?.split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            let reachable = match addr.len() {
                // IPv4, the bytes in memory order: 127.x.y.z ends in 7F.
                8 => addr == "00000000" || addr.ends_with("7F"),
                // IPv6 in four 32-bit words: :: or ::1.
                32 => {
                    addr == "00000000000000000000000000000000"
                        || addr == "00000000000000000000000001000000"
                }
                _ => false,
            };
            reachable.then_some(port)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_ports_reachable_on_loopback() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:46A0 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: 0500580A:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0
   3: 0100007F:46A0 0100007F:D2A4 01 00000000:00000000 00:00000000 00000000     0        0 4 1 0 100 0 0 10 0
";
        // 127.0.0.1:18080 and 0.0.0.0:80; not 10.88.0.5:8080 nor the established one.
        assert_eq!(
            parse_listening(v4).into_iter().collect::<Vec<_>>(),
            [80, 18080]
        );
        let v6 =
            "  sl  local_address                         remote_address                        st
   0: 00000000000000000000000001000000:0016 00000000000000000000000000000000:0000 0A
   1: 00000000000000000000000000000000:0017 00000000000000000000000000000000:0000 0A
   2: 0000B80D000000000000000001000000:0018 00000000000000000000000000000000:0000 0A
";
        assert_eq!(
            parse_listening(v6).into_iter().collect::<Vec<_>>(),
            [22, 23]
        );
        assert!(parse_listening("").is_empty());
    }
}

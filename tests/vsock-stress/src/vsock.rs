//! AF_VSOCK sockets: listen, accept, connect (with retries while nobody listens yet), and the
//! socket timeouts every socket of the tool gets.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{
    accept4, bind, connect, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag,
    SockType, VsockAddr,
};
use nix::sys::time::{TimeVal, TimeValLike};

use crate::{err, Result};

/// `SO_VM_SOCKETS_CONNECT_TIMEOUT` (linux/vm_sockets.h; the `_OLD` value, a `struct timeval`,
/// the same layout as the new one on 64-bit), at socket level `AF_VSOCK`. Not in `libc`.
const SO_VM_SOCKETS_CONNECT_TIMEOUT: libc::c_int = 6;

/// Sets `SO_RCVTIMEO` and `SO_SNDTIMEO` to `t` (the tool's I/O polls with its own timeout too;
/// these bound any call that still blocks).
pub fn set_timeouts<F: AsFd>(fd: &F, t: Duration) -> crate::Result<()> {
    let tv = TimeVal::milliseconds(t.as_millis().min(i64::MAX as u128) as i64);
    setsockopt(fd, sockopt::ReceiveTimeout, &tv).map_err(|e| err!("SO_RCVTIMEO: {e}"))?;
    setsockopt(fd, sockopt::SendTimeout, &tv).map_err(|e| err!("SO_SNDTIMEO: {e}"))?;
    Ok(())
}

fn vsock_socket() -> Result<OwnedFd> {
    socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| err!("socket(AF_VSOCK): {e} (no vsock transport: vhost_vsock/virtio_vsock?)"))
}

/// A listening socket on `port`, any CID.
pub fn listen_on(port: u32) -> Result<OwnedFd> {
    let fd = vsock_socket()?;
    bind(fd.as_raw_fd(), &VsockAddr::new(libc::VMADDR_CID_ANY, port))
        .map_err(|e| err!("bind vsock port {port}: {e}"))?;
    listen(&fd, Backlog::new(256).unwrap_or(Backlog::MAXCONN))
        .map_err(|e| err!("listen on vsock port {port}: {e}"))?;
    Ok(fd)
}

/// Accepts one connection.
pub fn accept_on(l: &OwnedFd) -> Result<OwnedFd> {
    loop {
        match accept4(l.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
            // SAFETY: accept4 returned a new file descriptor that nothing else owns.
            Ok(fd) => return Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
            Err(Errno::EINTR | Errno::ECONNABORTED) => continue,
            Err(e) => return Err(err!("accept: {e}")),
        }
    }
}

fn set_connect_timeout(fd: &OwnedFd, t: Duration) -> Result<()> {
    let tv = TimeVal::milliseconds(t.as_millis().min(i64::MAX as u128) as i64);
    let tv: &libc::timeval = tv.as_ref();
    // SAFETY: `fd` is an open socket we own; the option value is a valid `struct timeval` of
    // the length given, which the kernel only reads during the call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::AF_VSOCK,
            SO_VM_SOCKETS_CONNECT_TIMEOUT,
            (tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(err!(
            "SO_VM_SOCKETS_CONNECT_TIMEOUT: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Connects to `cid:port`. Each attempt may take `attempt` (the vsock handshake under a busy
/// emulated node can be slow); a refused or reset attempt (nobody listens yet) is repeated
/// every 200 ms until `patience` has passed.
pub fn connect_to(cid: u32, port: u32, attempt: Duration, patience: Duration) -> Result<OwnedFd> {
    let deadline = Instant::now() + patience;
    let mut tries = 0u32;
    loop {
        tries += 1;
        let fd = vsock_socket()?;
        set_connect_timeout(&fd, attempt)?;
        match connect(fd.as_raw_fd(), &VsockAddr::new(cid, port)) {
            Ok(()) => return Ok(fd),
            Err(Errno::EINTR) => continue,
            // Not ETIMEDOUT: the listener may have seen that attempt, a retry would be a
            // second connection.
            Err(Errno::ECONNRESET | Errno::ECONNREFUSED) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => {
                return Err(err!(
                    "connect to vsock {cid}:{port}: {e} ({tries} attempts)"
                ))
            }
        }
    }
}

/// Connects to guest port `port` through kata-vmm's hybrid vsock socket `path`: Unix connect,
/// `CONNECT <port>\n`, reply `OK <hostport>\n` (read byte by byte: nothing behind it is
/// consumed). The VMM closes the connection when nothing listens on the guest port yet: that
/// and a socket not there yet are retried every 200 ms until `patience` has passed.
pub fn connect_uds(path: &std::path::Path, port: u32, patience: Duration) -> Result<OwnedFd> {
    use std::io::{Read, Write};
    let deadline = Instant::now() + patience;
    let mut tries = 0u32;
    loop {
        tries += 1;
        let r = (|| -> std::io::Result<Option<std::os::unix::net::UnixStream>> {
            let mut s = std::os::unix::net::UnixStream::connect(path)?;
            s.set_read_timeout(Some(patience.max(Duration::from_secs(1))))?;
            s.write_all(format!("CONNECT {port}\n").as_bytes())?;
            let mut line = Vec::new();
            let mut b = [0u8; 1];
            loop {
                if s.read(&mut b)? == 0 {
                    return Ok(None);
                }
                if b[0] == b'\n' {
                    break;
                }
                if line.len() > 32 {
                    return Err(std::io::Error::other("reply too long"));
                }
                line.push(b[0]);
            }
            if !line.starts_with(b"OK ") {
                return Err(std::io::Error::other(format!(
                    "bad reply {:?}",
                    String::from_utf8_lossy(&line)
                )));
            }
            s.set_read_timeout(None)?;
            Ok(Some(s))
        })();
        match r {
            Ok(Some(s)) => return Ok(s.into()),
            Ok(None) if Instant::now() < deadline => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) && Instant::now() < deadline => {}
            Ok(None) => {
                return Err(err!(
                    "{} port {port}: refused ({tries} attempts)",
                    path.display()
                ))
            }
            Err(e) => {
                return Err(err!(
                    "{} port {port}: {e} ({tries} attempts)",
                    path.display()
                ))
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

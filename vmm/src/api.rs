//! The control socket (`--api-sock PATH`): a Unix stream socket with a line protocol, served
//! by the main thread's event loop (see "Control socket" in `vmm/README.md`).
//!
//! One command per line (`\n`-terminated ASCII, at most [`MAX_LINE`] bytes), one reply line
//! each: `ok ...` or `error ...`. Commands: `ping` (`ok pong`), `pause` (`ok paused` once
//! every vCPU is out of `KVM_RUN`), `resume` (`ok running`), `state` (`ok running` or
//! `ok paused`). The socket is created before the jail (mode 0600, owned by the user that
//! started the VMM, normally root), so only that user can connect; the VMM cannot remove it
//! afterwards (no path is reachable in the jail): whoever chose the path removes it.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::Path;

/// Longest accepted command line, newline included.
pub const MAX_LINE: usize = 256;
/// Most connections served at once; more are accepted and closed at once.
pub const MAX_CLIENTS: usize = 8;

/// A control command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Liveness check.
    Ping,
    /// Stop all vCPUs.
    Pause,
    /// Let the vCPUs run again.
    Resume,
    /// Report running or paused.
    State,
}

/// Parses one line (without its newline); surrounding whitespace is ignored.
pub fn parse(line: &[u8]) -> Option<Command> {
    match line.trim_ascii() {
        b"ping" => Some(Command::Ping),
        b"pause" => Some(Command::Pause),
        b"resume" => Some(Command::Resume),
        b"state" => Some(Command::State),
        _ => None,
    }
}

/// A connection. Held as a `File` so that its I/O is plain read(2)/write(2), which the main
/// thread's seccomp filter allows (std's socket reads would be recvfrom(2)).
struct Client {
    stream: File,
    buf: Vec<u8>,
}

/// The listening socket and its connections.
pub struct ApiServer {
    listener: UnixListener,
    clients: Vec<Client>,
}

impl ApiServer {
    /// Binds `path` (a stale socket there is replaced; any other file is an error), mode 0600.
    pub fn bind(path: &Path) -> io::Result<ApiServer> {
        let ctx = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        if let Ok(md) = std::fs::symlink_metadata(path) {
            if !md.file_type().is_socket() {
                return Err(ctx(io::Error::other("exists and is not a socket")));
            }
            std::fs::remove_file(path).map_err(ctx)?;
        }
        // Created 0600 (umask 0177 around bind: no window in which others may connect); the
        // VMM is single-threaded here, so the process-wide umask change races with nothing.
        // SAFETY: umask only swaps the process's file mode mask.
        let old = unsafe { libc::umask(0o177) };
        let bound = UnixListener::bind(path);
        // SAFETY: as above, restoring the previous mask.
        unsafe { libc::umask(old) };
        let listener = bound.map_err(ctx)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(ctx)?;
        listener.set_nonblocking(true).map_err(ctx)?;
        Ok(ApiServer {
            listener,
            clients: Vec::new(),
        })
    }

    /// The fds to poll for input: the listener, then each connection.
    pub fn fds(&self) -> Vec<RawFd> {
        std::iter::once(self.listener.as_raw_fd())
            .chain(self.clients.iter().map(|c| c.stream.as_raw_fd()))
            .collect()
    }

    /// Serves the fds [`ApiServer::fds`] returned whose `ready` flag is set (same order):
    /// accepts connections, reads lines, answers each with `run(command)` (an unknown command
    /// gets an error line), drops connections that closed, misbehaved or cannot take the
    /// reply. Never blocks.
    pub fn serve(&mut self, ready: &[bool], run: &mut dyn FnMut(Command) -> String) {
        let mut drop = vec![false; self.clients.len()];
        for (i, c) in self.clients.iter_mut().enumerate() {
            if ready.get(i + 1).copied().unwrap_or(false) {
                drop[i] = !serve_client(c, run);
            }
        }
        let mut i = 0;
        self.clients.retain(|_| {
            i += 1;
            !drop[i - 1]
        });
        if ready.first().copied().unwrap_or(false) {
            self.accept();
        }
    }

    fn accept(&mut self) {
        loop {
            // SAFETY: accept4 on our listening fd with null address pointers; a returned fd
            // is new and owned by the UnixStream built from it.
            let fd = unsafe {
                libc::accept4(
                    self.listener.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                return; // EAGAIN: none left (or a transient error: the next poll retries)
            }
            // SAFETY: `fd` is a fresh connected socket nobody else owns.
            let stream = unsafe { File::from_raw_fd(fd) };
            if self.clients.len() < MAX_CLIENTS {
                self.clients.push(Client {
                    stream,
                    buf: Vec::new(),
                });
            } // else: dropped, i.e. closed
        }
    }
}

/// Reads what is there, answers every complete line; false: close the connection.
fn serve_client(c: &mut Client, run: &mut dyn FnMut(Command) -> String) -> bool {
    let mut chunk = [0u8; MAX_LINE];
    let n = match c.stream.read(&mut chunk) {
        Ok(0) => return false,
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
        Err(e) if e.kind() == io::ErrorKind::Interrupted => return true,
        Err(_) => return false,
    };
    c.buf.extend_from_slice(&chunk[..n]);
    while let Some(pos) = c.buf.iter().position(|b| *b == b'\n') {
        let line: Vec<u8> = c.buf.drain(..=pos).collect();
        let reply = match parse(&line) {
            Some(cmd) => run(cmd),
            None if line.trim_ascii().is_empty() => continue,
            None => "error unknown command (ping, pause, resume, state)".to_owned(),
        };
        // A short line into a fresh socket buffer: a client that does not read its replies
        // fills it eventually and is dropped.
        if c.stream.write_all(format!("{reply}\n").as_bytes()).is_err() {
            return false;
        }
    }
    if c.buf.len() >= MAX_LINE {
        let _ = c.stream.write_all(b"error line too long\n");
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::os::unix::net::UnixStream;

    #[test]
    fn parses_commands() {
        assert_eq!(parse(b"ping"), Some(Command::Ping));
        assert_eq!(parse(b" pause \r"), Some(Command::Pause));
        assert_eq!(parse(b"resume"), Some(Command::Resume));
        assert_eq!(parse(b"state"), Some(Command::State));
        assert_eq!(parse(b"PAUSE"), None);
        assert_eq!(parse(b"pause now"), None);
        assert_eq!(parse(&[0xff, 0x00]), None);
    }

    fn poll_serve(api: &mut ApiServer, run: &mut dyn FnMut(Command) -> String) {
        let mut fds: Vec<libc::pollfd> = api
            .fds()
            .into_iter()
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` is a valid pollfd array for the call.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 1000) };
        let ready: Vec<bool> = fds.iter().map(|f| f.revents != 0).collect();
        api.serve(&ready, run);
    }

    #[test]
    fn serves_lines_over_the_socket() {
        let dir = std::env::temp_dir().join(format!("kata-vmm-api-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("api.sock");
        std::fs::write(&path, b"not a socket").unwrap();
        assert!(
            ApiServer::bind(&path).is_err(),
            "a regular file is not replaced"
        );
        std::fs::remove_file(&path).unwrap();
        let _stale = ApiServer::bind(&path).unwrap();
        let mut api = ApiServer::bind(&path).unwrap(); // replaces the stale socket
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let mut seen = Vec::new();
        let mut run = |c: Command| {
            seen.push(c);
            format!("ok {c:?}")
        };
        let mut client = UnixStream::connect(&path).unwrap();
        poll_serve(&mut api, &mut run); // accept
        client.write_all(b"ping\n\nstate\nbogus\n").unwrap();
        poll_serve(&mut api, &mut run);
        let mut r = BufReader::new(client.try_clone().unwrap());
        let mut lines = Vec::new();
        for _ in 0..3 {
            let mut l = String::new();
            r.read_line(&mut l).unwrap();
            lines.push(l);
        }
        assert_eq!(lines[0], "ok Ping\n");
        assert_eq!(lines[1], "ok State\n");
        assert!(
            lines[2].starts_with("error unknown command"),
            "{}",
            lines[2]
        );

        client.write_all(&[b'x'; MAX_LINE]).unwrap();
        poll_serve(&mut api, &mut run);
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        assert_eq!(l, "error line too long\n");
        assert_eq!(api.clients.len(), 0, "dropped after a too long line");
        assert_eq!(seen, [Command::Ping, Command::State]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

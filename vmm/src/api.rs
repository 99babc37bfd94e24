//! The control socket (`--api-sock PATH`): a Unix stream socket served by the main thread's
//! event loop (an `event-manager` subscriber, [`ApiSubscriber`]), speaking the typed control API of [`kata_rs_protocol::control`]
//! (newline-delimited JSON, see "Control socket" in `vmm/README.md`).
//!
//! One request per line (at most [`MAX_MESSAGE`] bytes, newline included), one response line
//! each, in order: `{"ok":...}` or `{"error":"..."}`. A malformed or unknown request gets an
//! error response naming what is wrong; a too long message gets one and the connection is
//! closed; nothing a client sends or fails to read blocks the loop. The socket is created
//! before the jail (mode 0600, owned by the user that started the VMM, normally root), so
//! only that user can connect; the VMM cannot remove it afterwards (no path is reachable in
//! the jail): whoever chose the path removes it.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::Path;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use kata_rs_protocol::control::{encode, parse_request};
pub use kata_rs_protocol::control::{Request, Response, MAX_MESSAGE};

/// Most connections served at once; more are accepted and closed at once.
pub const MAX_CLIENTS: usize = 8;

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
        let listener = crate::unix_socket::bind_private(path, "--api-sock")?;
        Ok(ApiServer {
            listener,
            clients: Vec::new(),
        })
    }

    /// Accepts the pending connections; the new ones (at most [`MAX_CLIENTS`] at once; more
    /// are closed at once), by fd.
    fn accept(&mut self) -> Vec<RawFd> {
        let mut new = Vec::new();
        loop {
            // SAFETY: accept4 on our listening fd with null address pointers; a returned fd
            // is new and owned by the File built from it.
            let fd = unsafe {
                libc::accept4(
                    self.listener.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                return new; // EAGAIN: none left (or a transient error: the next wake-up retries)
            }
            // SAFETY: `fd` is a fresh connected socket nobody else owns.
            let stream = unsafe { File::from_raw_fd(fd) };
            if self.clients.len() < MAX_CLIENTS {
                self.clients.push(Client {
                    stream,
                    buf: Vec::new(),
                });
                new.push(fd);
            } // else: dropped, i.e. closed
        }
    }
}

/// The control socket as an `event-manager` subscriber: the listener and every connection
/// are watched for input; requests are answered by `handler`. A connection is unwatched
/// before it is closed (its fd number may come back with the next accept).
pub struct ApiSubscriber<H> {
    server: ApiServer,
    handler: H,
}

impl<H: FnMut(Request) -> Response> ApiSubscriber<H> {
    /// Serves `server`, answering each request with `handler(request)`.
    pub fn new(server: ApiServer, handler: H) -> Self {
        ApiSubscriber { server, handler }
    }

    /// Closes connection `fd` (unwatched first).
    fn drop_client(&mut self, fd: RawFd, ops: &mut EventOps) {
        let _ = ops.remove(Events::empty_raw(fd));
        self.server.clients.retain(|c| c.stream.as_raw_fd() != fd);
    }
}

impl<H: FnMut(Request) -> Response> MutEventSubscriber for ApiSubscriber<H> {
    fn init(&mut self, ops: &mut EventOps) {
        // Failing this (ENOMEM) leaves a socket that nobody answers: connecting clients
        // time out, the VM runs on.
        if let Err(e) = ops.add(Events::new(&self.server.listener, EventSet::IN)) {
            tracing::warn!("control socket: cannot watch the listener: {e}");
        }
    }

    /// Accepts on the listener; on a connection (input, hang-up or error: the read then sees
    /// the end) reads and answers requests, and drops connections that closed, misbehaved
    /// or cannot take the reply. Never blocks.
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.server.listener.as_raw_fd() {
            for new in self.server.accept() {
                if ops.add(Events::new_raw(new, EventSet::IN)).is_err() {
                    self.server.clients.retain(|c| c.stream.as_raw_fd() != new);
                }
            }
            return;
        }
        let handler = &mut self.handler;
        let keep = match self
            .server
            .clients
            .iter_mut()
            .find(|c| c.stream.as_raw_fd() == fd)
        {
            Some(c) => serve_client(c, handler),
            None => false, // not ours (cannot happen): unwatch it
        };
        if !keep {
            self.drop_client(fd, ops);
        }
    }
}

/// Reads what is there, answers every complete line; false: close the connection.
fn serve_client(c: &mut Client, run: &mut impl FnMut(Request) -> Response) -> bool {
    let mut chunk = [0u8; MAX_MESSAGE];
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
        if line.trim_ascii().is_empty() {
            continue;
        }
        let reply = match parse_request(&line) {
            Ok(req) => run(req),
            Err(e) => Response::Error(e),
        };
        // A short line into a non-blocking socket: a client that does not read its replies
        // fills its buffer eventually (WouldBlock) and is dropped.
        if c.stream.write_all(encode(&reply).as_bytes()).is_err() {
            return false;
        }
    }
    if c.buf.len() >= MAX_MESSAGE {
        let why = format!("message too long (at most {MAX_MESSAGE} bytes, newline included)");
        let _ = c.stream.write_all(encode(&Response::Error(why)).as_bytes());
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use event_manager::{EventManager, SubscriberId, SubscriberOps};
    use std::cell::RefCell;
    use std::io::{BufRead, BufReader};
    use std::os::unix::net::UnixStream;
    use std::rc::Rc;

    type Handler = Box<dyn FnMut(Request) -> Response>;
    type Manager = EventManager<ApiSubscriber<Handler>>;

    /// The server in an event manager of its own, answering with `h`.
    fn manager(server: ApiServer, h: Handler) -> (Manager, SubscriberId) {
        let mut em = Manager::new().unwrap();
        let id = em.add_subscriber(ApiSubscriber::new(server, h));
        (em, id)
    }

    /// One wake-up of the loop (at most 1 s).
    fn serve_once(em: &mut Manager) {
        em.run_with_timeout(1000).unwrap();
    }

    fn clients(em: &mut Manager, id: SubscriberId) -> usize {
        em.subscriber_mut(id).unwrap().server.clients.len()
    }

    /// A handler recording the requests it ran and answering `error ran <request>`.
    fn recorder() -> (Handler, Rc<RefCell<Vec<Request>>>) {
        let seen = Rc::new(RefCell::new(Vec::new()));
        let s = seen.clone();
        let h: Handler = Box::new(move |r: Request| {
            s.borrow_mut().push(r.clone());
            Response::Error(format!("ran {r:?}"))
        });
        (h, seen)
    }

    fn temp_socket(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("kata-vmm-api-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("api.sock");
        (dir, path)
    }

    fn read_line(r: &mut BufReader<UnixStream>) -> String {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        l
    }

    #[test]
    fn serves_requests_over_the_socket() {
        let (dir, path) = temp_socket("serve");
        std::fs::write(&path, b"not a socket").unwrap();
        assert!(
            ApiServer::bind(&path).is_err(),
            "a regular file is not replaced"
        );
        std::fs::remove_file(&path).unwrap();
        let _stale = ApiServer::bind(&path).unwrap();
        let api = ApiServer::bind(&path).unwrap(); // replaces the stale socket
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let (run, seen) = recorder();
        let (mut em, id) = manager(api, run);
        let mut client = UnixStream::connect(&path).unwrap();
        serve_once(&mut em); // accept
        client
            .write_all(b"{\"ping\":{}}\n\n {\"state\":{}}\r\n{\"bogus\":{}}\nstate\n")
            .unwrap();
        serve_once(&mut em);
        let mut r = BufReader::new(client.try_clone().unwrap());
        assert_eq!(read_line(&mut r), "{\"error\":\"ran Ping\"}\n");
        assert_eq!(read_line(&mut r), "{\"error\":\"ran State\"}\n");
        let l = read_line(&mut r);
        assert!(
            l.starts_with("{\"error\":\"unknown command \\\"bogus\\\""),
            "{l}"
        );
        let l = read_line(&mut r);
        assert!(
            l.starts_with("{\"error\":\"malformed request: not JSON"),
            "{l}"
        );
        assert_eq!(clients(&mut em, id), 1, "errors keep the connection");

        // No newline within MAX_MESSAGE bytes: an error, then the connection is closed.
        client.write_all(&[b'x'; MAX_MESSAGE]).unwrap();
        serve_once(&mut em);
        let l = read_line(&mut r);
        assert!(l.starts_with("{\"error\":\"message too long"), "{l}");
        assert_eq!(read_line(&mut r), "", "closed after a too long message");
        assert_eq!(clients(&mut em, id), 0);
        assert_eq!(*seen.borrow(), [Request::Ping {}, Request::State {}]);

        // The limit on connections: the ninth is closed at once.
        let conns: Vec<UnixStream> = (0..=MAX_CLIENTS)
            .map(|_| UnixStream::connect(&path).unwrap())
            .collect();
        serve_once(&mut em);
        assert_eq!(clients(&mut em, id), MAX_CLIENTS);
        drop(conns);
        for _ in 0..MAX_CLIENTS {
            serve_once(&mut em); // each hang-up unwatches and closes its connection
        }
        assert_eq!(clients(&mut em, id), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn typed_client_round_trip() {
        use kata_rs_protocol::control::{Client, Reply, VmState};
        let (dir, path) = temp_socket("client");
        let api = ApiServer::bind(&path).unwrap();
        let p = path.clone();
        let caller = std::thread::spawn(move || {
            let mut c = Client::connect(&p, std::time::Duration::from_secs(10)).unwrap();
            let replies = [
                c.call(&Request::Ping {}).unwrap(),
                c.call(&Request::Pause {}).unwrap(),
                c.call_raw("{\"resume\":{\"now\":1}}").unwrap(),
            ];
            // A server that never answers: the client gives up after its timeout.
            let mut slow = Client::connect(&p, std::time::Duration::from_millis(200)).unwrap();
            let timed_out = slow.call_raw("").is_err();
            (replies, timed_out)
        });
        let run: Handler = Box::new(|r: Request| match r {
            Request::Ping {} => Response::Ok(Reply::Pong),
            _ => Response::Ok(Reply::State(VmState::Paused)),
        });
        let (mut em, _) = manager(api, run);
        while !caller.is_finished() {
            serve_once(&mut em);
        }
        let (replies, timed_out) = caller.join().unwrap();
        assert_eq!(replies[0], Response::Ok(Reply::Pong));
        assert_eq!(replies[1].to_string(), "ok paused");
        assert!(
            replies[2]
                .to_string()
                .starts_with("error bad arguments to \"resume\""),
            "{}",
            replies[2]
        );
        assert!(timed_out, "a blank line gets no reply: the call times out");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_client_that_does_not_read_is_dropped() {
        let (dir, path) = temp_socket("noread");
        let api = ApiServer::bind(&path).unwrap();
        let client = UnixStream::connect(&path).unwrap();
        client.set_nonblocking(true).unwrap();
        let run: Handler = Box::new(|_: Request| Response::Error("a reply nobody reads".into()));
        let (mut em, id) = manager(api, run);
        serve_once(&mut em); // accept
        let burst = "{\"ping\":{}}\n".repeat(100);
        let mut rounds = 0;
        while clients(&mut em, id) > 0 {
            rounds += 1;
            assert!(rounds < 100_000, "never dropped");
            let _ = (&client).write(burst.as_bytes());
            serve_once(&mut em); // must return: replies never block the loop
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Fuzz (see `src/fuzz/`): arbitrary bytes in arbitrary pieces from a client, some of
    /// them valid requests. Never a panic; every response is one well-formed line; each
    /// request run has its response.
    #[test]
    fn fuzz_requests() {
        use kata_rs_fuzz::fuzz;
        use std::os::fd::OwnedFd;
        let seeds: &[&[u8]] = &[
            b"{\"ping\":{}}\n{\"pause\":{}}\n",
            b"{\"state\":{\"x\":[[[1]]]}}\n\n",
        ];
        fuzz("api_requests", seeds, |u| {
            let (mine, theirs) = UnixStream::pair().unwrap();
            theirs.set_nonblocking(true).unwrap();
            mine.set_nonblocking(true).unwrap();
            let mut c = Client {
                stream: File::from(OwnedFd::from(theirs)),
                buf: Vec::new(),
            };
            let mut runs = 0usize;
            let mut run = |_: Request| {
                runs += 1;
                Response::Error("ran".into())
            };
            let mut out = Vec::new();
            let mut open = true;
            while open && !u.is_empty() {
                let piece: Vec<u8> = match u.int_in_range(0..=3)? {
                    0 => b"{\"ping\":{}}\n".to_vec(),
                    1 => vec![b'x'; u.int_in_range(0..=MAX_MESSAGE)?],
                    _ => u.arbitrary()?,
                };
                let _ = (&mine).write(&piece);
                open = serve_client(&mut c, &mut run);
                let _ = (&mine).read_to_end(&mut out); // WouldBlock once drained
            }
            let mut ran = 0;
            for line in out.split_inclusive(|b| *b == b'\n') {
                assert_eq!(line.last(), Some(&b'\n'), "a response is one whole line");
                let r = kata_rs_protocol::control::parse_response(line).unwrap();
                match r {
                    Response::Error(e) if e == "ran" => ran += 1,
                    Response::Error(e) => assert!(
                        e.starts_with("malformed request")
                            || e.starts_with("unknown command")
                            || e.starts_with("bad arguments")
                            || e.starts_with("message too long"),
                        "{e}"
                    ),
                    Response::Ok(_) => panic!("no request here answers ok"),
                }
            }
            assert_eq!(ran, runs, "each request run has its response");
            Ok(())
        });
    }
}

//! The VMM's control API (`kata-vmm --api-sock PATH`): typed requests and responses, their
//! wire format, and a blocking client with a timeout on every reply. The VMM serves it
//! (`vmm/src/api.rs`); callers (the `vmm_api` example, the shim when it needs the VMM) use
//! [`Client`].
//!
//! Wire format: newline-delimited JSON over a Unix stream socket. Each message is one line
//! of UTF-8 JSON ending in `\n`, at most [`MAX_MESSAGE`] bytes with the newline; blank lines
//! are ignored. A request is an object with exactly one key, the command, whose value is an
//! object of arguments: `{"pause":{}}`, `{"snapshot":{"dir":"/x"}}`. Every request gets
//! exactly one response line, in order: `{"ok":REPLY}` or `{"error":"MESSAGE"}`.
//!
//! | request | reply |
//! | --- | --- |
//! | `{"ping":{}}` | `{"ok":"pong"}` |
//! | `{"pause":{}}` | `{"ok":{"state":"paused"}}` once every vCPU is out of `KVM_RUN` |
//! | `{"resume":{}}` | `{"ok":{"state":"running"}}` |
//! | `{"state":{}}` | `{"ok":{"state":"running"}}` or `{"ok":{"state":"paused"}}` |
//! | `{"snapshot":{"dir":"DIR"}}` | `{"ok":{"snapshot":"DIR (...)"}}` once the paused VM's memory and state files are in DIR (under the VMM's `--snapshot-root`) |

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Longest message either side accepts, newline included.
pub const MAX_MESSAGE: usize = 4096;

/// The commands, as spelled on the wire.
pub const COMMANDS: [&str; 5] = ["ping", "pause", "resume", "state", "snapshot"];

/// A control request. Each variant is a struct variant (no arguments yet) so that its wire
/// form is `{"name":{}}` and arguments can be added later without a new syntax.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Liveness check.
    Ping {},
    /// Stop every vCPU (answered once all of them left `KVM_RUN`).
    Pause {},
    /// Let the vCPUs run again.
    Resume {},
    /// Report whether the vCPUs run or are paused.
    State {},
    /// Save the paused VM into `dir` (guest memory and the state file); refused unless the VM
    /// is paused, `dir` is under the VMM's `--snapshot-root`, and every device can be saved.
    Snapshot {
        /// Absolute path of the snapshot directory (created if missing).
        dir: std::path::PathBuf,
    },
}

/// Whether the guest's vCPUs run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    /// The vCPUs run.
    Running,
    /// Every vCPU is parked outside `KVM_RUN`.
    Paused,
}

/// What a successful request returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// The answer to `ping`.
    Pong,
    /// The VM's state after the request (`pause`, `resume`, `state`).
    State(VmState),
    /// A snapshot was written: where, and what it took; for a VM with vsock it says
    /// `; vsock idle` or `; vsock busy` (busy: a host connection was open, so a restore resets
    /// vsock's transport and its first connection waits for the guest to handle it).
    Snapshot(String),
}

/// One response line: `{"ok":REPLY}` or `{"error":"MESSAGE"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// The request succeeded.
    Ok(Reply),
    /// The request was malformed, unknown or failed; the message says why.
    Error(String),
}

impl Response {
    /// Whether this is an `ok` response.
    pub fn is_ok(&self) -> bool {
        matches!(self, Response::Ok(_))
    }
}

/// Human form, one line: `ok pong`, `ok running`, `ok paused`, `ok snapshot DIR ...`,
/// `error MESSAGE`.
impl std::fmt::Display for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Response::Ok(Reply::Pong) => f.write_str("ok pong"),
            Response::Ok(Reply::State(VmState::Running)) => f.write_str("ok running"),
            Response::Ok(Reply::State(VmState::Paused)) => f.write_str("ok paused"),
            Response::Ok(Reply::Snapshot(s)) => write!(f, "ok snapshot {s}"),
            Response::Error(e) => write!(f, "error {e}"),
        }
    }
}

/// `msg` as one wire line, newline included.
pub fn encode<T: Serialize>(msg: &T) -> String {
    // These types always serialize (no maps with non-string keys, no failing Serialize
    // impls); the fallback only keeps this free of panics.
    let mut s = serde_json::to_string(msg)
        .unwrap_or_else(|e| format!("{{\"error\":\"cannot encode the message: {e}\"}}"));
    s.push('\n');
    s
}

/// Parses one request line (without its newline; surrounding whitespace is ignored). The
/// error is the message for the client: what is wrong, and what is expected.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    let line = line.trim_ascii();
    if line.len() >= MAX_MESSAGE {
        return Err(format!("message too long (at most {MAX_MESSAGE} bytes)"));
    }
    let value: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| format!("malformed request: not JSON: {e}"))?;
    let name = match value.as_object() {
        Some(o) if o.len() == 1 => o.keys().next().cloned().unwrap_or_default(),
        _ => {
            return Err(
                "malformed request: expected a JSON object with one key, the command \
                 (e.g. {\"ping\":{}})"
                    .into(),
            )
        }
    };
    if !COMMANDS.contains(&name.as_str()) {
        let shown: String = name.chars().take(64).collect();
        return Err(format!(
            "unknown command {shown:?} (expected one of {})",
            COMMANDS.join(", ")
        ));
    }
    serde_json::from_value(value).map_err(|e| format!("bad arguments to {name:?}: {e}"))
}

/// Parses one response line (without its newline).
pub fn parse_response(line: &[u8]) -> Result<Response, String> {
    serde_json::from_slice(line.trim_ascii()).map_err(|e| format!("malformed response: {e}"))
}

/// A connection to the VMM's control socket. Every call waits at most the timeout given to
/// [`Client::connect`] for its write and for its reply.
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    /// Connects to the control socket at `path`; `timeout` bounds each later write and read.
    pub fn connect(path: &Path, timeout: Duration) -> io::Result<Client> {
        let ctx = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        let stream = UnixStream::connect(path).map_err(ctx)?;
        stream.set_read_timeout(Some(timeout)).map_err(ctx)?;
        stream.set_write_timeout(Some(timeout)).map_err(ctx)?;
        let reader = BufReader::new(stream.try_clone().map_err(ctx)?);
        Ok(Client {
            reader,
            writer: stream,
        })
    }

    /// Sends `req` and returns the VMM's response (an `error` response is an `Ok` here: it
    /// came from the VMM). An `Err` is a transport failure: timeout, closed, malformed reply.
    pub fn call(&mut self, req: &Request) -> io::Result<Response> {
        self.call_raw(encode(req).trim_end())
    }

    /// Sends `line` as it is (a newline is added) and returns the response. For requests the
    /// typed API cannot express: tests of the server's error replies.
    pub fn call_raw(&mut self, line: &str) -> io::Result<Response> {
        let mut msg = line.as_bytes().to_vec();
        msg.push(b'\n');
        self.writer.write_all(&msg)?;
        let mut buf = Vec::new();
        (&mut self.reader)
            .take(MAX_MESSAGE as u64)
            .read_until(b'\n', &mut buf)?;
        if buf.last() != Some(&b'\n') {
            let why = if buf.is_empty() {
                "the VMM closed the control socket without a reply"
            } else {
                "the VMM's reply is cut short or longer than allowed"
            };
            return Err(io::Error::new(io::ErrorKind::InvalidData, why));
        }
        parse_response(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_forms() {
        assert_eq!(encode(&Request::Pause {}), "{\"pause\":{}}\n");
        assert_eq!(
            encode(&Response::Ok(Reply::State(VmState::Paused))),
            "{\"ok\":{\"state\":\"paused\"}}\n"
        );
        assert_eq!(encode(&Response::Ok(Reply::Pong)), "{\"ok\":\"pong\"}\n");
        assert_eq!(
            encode(&Response::Error("x \"y\"".into())),
            "{\"error\":\"x \\\"y\\\"\"}\n"
        );
        for (req, name) in [
            (Request::Ping {}, "ping"),
            (Request::Pause {}, "pause"),
            (Request::Resume {}, "resume"),
            (Request::State {}, "state"),
            (
                Request::Snapshot {
                    dir: "/run/s".into(),
                },
                "snapshot",
            ),
        ] {
            let line = encode(&req);
            assert!(line.contains(name) && COMMANDS.contains(&name), "{line}");
            assert_eq!(parse_request(line.as_bytes()), Ok(req));
        }
        let r = Response::Ok(Reply::State(VmState::Running));
        assert_eq!(parse_response(encode(&r).as_bytes()), Ok(r.clone()));
        assert_eq!(r.to_string(), "ok running");
        assert_eq!(Response::Error("boom".into()).to_string(), "error boom");
        assert_eq!(
            encode(&Request::Snapshot { dir: "/s".into() }),
            "{\"snapshot\":{\"dir\":\"/s\"}}\n"
        );
        let r = Response::Ok(Reply::Snapshot("/s (1 ms)".into()));
        assert_eq!(encode(&r), "{\"ok\":{\"snapshot\":\"/s (1 ms)\"}}\n");
        assert_eq!(r.to_string(), "ok snapshot /s (1 ms)");
    }

    #[test]
    fn bad_requests_are_named() {
        let err = |l: &[u8]| parse_request(l).unwrap_err();
        assert!(err(b"ping").starts_with("malformed request: not JSON"));
        assert!(err(&[0xff, 0x00]).starts_with("malformed request: not JSON"));
        assert!(err(b"[1]").contains("one key"));
        assert!(err(b"{\"ping\":{},\"state\":{}}").contains("one key"));
        assert!(err(b"{}").contains("one key"));
        let e = err(b"{\"PAUSE\":{}}");
        assert!(e.starts_with("unknown command \"PAUSE\""), "{e}");
        assert!(e.contains("ping, pause, resume, state, snapshot"), "{e}");
        let e = err(b"{\"snapshot\":{}}");
        assert!(e.starts_with("bad arguments to \"snapshot\""), "{e}");
        let e = err(format!("{{\"{}\":{{}}}}", "x".repeat(1000)).as_bytes());
        assert!(e.len() < 200, "the echoed name is cut: {e}");
        let e = err(b"{\"pause\":{\"now\":true}}");
        assert!(e.starts_with("bad arguments to \"pause\""), "{e}");
        assert!(err(b"{\"pause\":1}").starts_with("bad arguments"));
        assert!(err(&[b' '; MAX_MESSAGE]).starts_with("malformed"));
        assert!(err(&vec![b'['; MAX_MESSAGE]).starts_with("message too long"));
        // Deep nesting within the size limit is an error, not a stack overflow.
        let deep = format!("{{\"ping\":{}{}}}", "[".repeat(2000), "]".repeat(2000));
        assert!(parse_request(deep.as_bytes()).is_err());
        assert_eq!(parse_request(b"  {\"state\":{}}\r"), Ok(Request::State {}));
    }
}

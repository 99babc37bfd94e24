//! The HTTP side of `kata-rs metrics --listen`: a minimal HTTP/1.0-style responder on std's
//! TCP listener, one connection at a time, for Prometheus' scrapes of `GET /metrics`. Each
//! connection gets 5 s to send its request head (at most 8 KiB) and is closed after the
//! answer, so a slow or hostile client holds the server for 5 s at most.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    time::Duration,
};

/// Longest request head read.
const MAX_HEAD: u64 = 8 * 1024;
/// Time a client has to send its request and take the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// A response: status line, content type, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// e.g. `200 OK`.
    pub status: &'static str,
    /// The `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
}

/// The answer to a request line (`METHOD PATH VERSION`): `GET /metrics` (a query string is
/// ignored) calls `metrics`; `GET /` names the endpoint; other paths are 404, other methods
/// 405 (`HEAD` is answered like `GET`, without the body being sent by [`serve`]).
pub fn route(request_line: &str, metrics: impl FnOnce() -> String) -> Response {
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let text = "text/plain; charset=utf-8";
    if method != "GET" && method != "HEAD" {
        return Response {
            status: "405 Method Not Allowed",
            content_type: text,
            body: "only GET\n".into(),
        };
    }
    match path {
        "/metrics" => Response {
            status: "200 OK",
            content_type: crate::prom::CONTENT_TYPE,
            body: metrics(),
        },
        "/" => Response {
            status: "200 OK",
            content_type: text,
            body: "kata-rs metrics: GET /metrics\n".into(),
        },
        _ => Response {
            status: "404 Not Found",
            content_type: text,
            body: "not found; GET /metrics\n".into(),
        },
    }
}

/// Reads one request from `stream` and answers it.
fn handle(stream: TcpStream, metrics: &dyn Fn() -> String) -> std::io::Result<()> {
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut reader = BufReader::new((&stream).take(MAX_HEAD));
    let mut line = String::new();
    reader.read_line(&mut line)?;
    // The rest of the head up to the empty line (headers are not used).
    let mut h = String::new();
    while reader.read_line(&mut h)? > 0 && !h.trim().is_empty() {
        h.clear();
    }
    let r = route(line.trim_end(), metrics);
    let head_only = line.starts_with("HEAD ");
    drop(reader);
    let mut out = &stream;
    write!(
        out,
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        r.status,
        r.content_type,
        r.body.len()
    )?;
    if !head_only {
        out.write_all(r.body.as_bytes())?;
    }
    out.flush()
}

/// Serves `listener` until the process ends; a failed connection is logged and the next
/// one accepted.
pub fn serve(listener: TcpListener, metrics: &dyn Fn() -> String) -> ! {
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                if let Err(e) = handle(stream, metrics) {
                    eprintln!("kata-rs metrics: {peer}: {e}");
                }
            }
            Err(e) => {
                eprintln!("kata-rs metrics: accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let r = route("GET /metrics HTTP/1.1", || "m 1\n".into());
        assert_eq!(r.status, "200 OK");
        assert_eq!(r.body, "m 1\n");
        assert!(r.content_type.contains("version=0.0.4"));
        assert_eq!(route("GET /metrics?x=1 HTTP/1.1", || "m".into()).body, "m");
        assert_eq!(route("GET / HTTP/1.1", || unreachable!()).status, "200 OK");
        assert_eq!(
            route("GET /x HTTP/1.1", || unreachable!()).status,
            "404 Not Found"
        );
        assert_eq!(
            route("POST /metrics HTTP/1.1", || unreachable!()).status,
            "405 Method Not Allowed"
        );
        assert_eq!(
            route("", || unreachable!()).status,
            "405 Method Not Allowed"
        );
    }

    #[test]
    fn answers_over_tcp_and_survives_a_silent_client() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || serve(l, &|| "kata_rs_x 1\n".to_string()));
        let get = |req: &str| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(req.as_bytes()).unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
        let out = get("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.contains("Content-Length: 12\r\n"), "{out}");
        assert!(out.ends_with("\r\n\r\nkata_rs_x 1\n"), "{out}");
        let out = get("HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(out.ends_with("Connection: close\r\n\r\n"), "{out}");
        // A client that connects and sends nothing is dropped after the timeout; the next
        // one is served.
        let _silent = TcpStream::connect(addr).unwrap();
        let out = get("GET /nope HTTP/1.1\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 404"), "{out}");
    }
}

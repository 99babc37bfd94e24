//! PortForward as `kubectl port-forward` does it (`--pod-net` only): the CRI call gives a URL
//! of containerd's streaming server; a WebSocket there (protocol `v4.channel.k8s.io`,
//! `?port=P`: channel 0 data, channel 1 errors, each opening with the port as two bytes)
//! carries one connection to `localhost:P` in the pod. Three servers in the `server`
//! container: the pod's own (all addresses), one on 127.0.0.1, one on the pod IP only.
//! Markers `pf-all`, `pf-loopback`, `pf-podip`: `ok` (the page came back), `refused` (the
//! error channel spoke, nothing came back), or what else happened.

use std::time::{Duration, Instant};

use k8s_cri::v1::PortForwardRequest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::args::Args;
use crate::calls::{call, exec};
use crate::markers::marker;
use crate::Runtime;

/// How long each target is tried: the kata forwarder follows the guest's ports in about a
/// second.
const TRY_FOR: Duration = Duration::from_secs(12);

/// The three servers and their port-forward results.
pub async fn run(rt: &mut Runtime, a: &Args, pod: &str, server: &str, ip: &str) {
    let (lo, pip) = (a.port + 100, a.port + 200);
    let page = format!("hello from the server of pod {}", a.handler);
    // busybox httpd daemonizes without -f: ExecSync returns, the server stays.
    let start = format!(
        "httpd -p 127.0.0.1:{lo} -h /tmp/www && httpd -p {ip}:{pip} -h /tmp/www && echo started"
    );
    match exec(rt, "pf-servers", server, &["sh", "-c", &start], 60).await {
        Ok((out, err, code)) => {
            marker("pf-servers", if out == "started" { "ok" } else { "failed" });
            if code != 0 {
                println!("error| pf-servers: exit {code}: {err}");
            }
        }
        Err(e) => {
            marker("pf-servers", "failed");
            println!("error| pf-servers: {e}");
        }
    }
    for (name, port) in [("all", a.port), ("loopback", lo), ("podip", pip)] {
        let key = format!("pf-{name}");
        let deadline = Instant::now() + TRY_FOR;
        let mut tries = 0;
        let result = loop {
            tries += 1;
            let r = once(rt, a, pod, port).await;
            let done = matches!(&r, Ok((body, _)) if body.contains(&page));
            if done || Instant::now() > deadline {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        match result {
            Ok((body, _)) if body.contains(&page) => marker(&key, "ok"),
            Ok((body, err)) if body.is_empty() && !err.is_empty() => {
                marker(&key, "refused");
                println!("pf-{name}-error| {}", err.trim());
            }
            Ok((body, err)) => {
                marker(&key, "no-page");
                println!("error| {key}: body {body:?} error {err:?}");
            }
            Err(e) => {
                marker(&key, "failed");
                println!("error| {key}: {e}");
            }
        }
        marker(&format!("{key}-tries"), tries);
    }
}

/// One PortForward: an HTTP GET through it; (data received, error channel text).
async fn once(
    rt: &mut Runtime,
    a: &Args,
    pod: &str,
    port: u16,
) -> Result<(String, String), String> {
    let r = call(
        "pf-call",
        a.timeout,
        rt.port_forward(PortForwardRequest {
            pod_sandbox_id: pod.into(),
            port: vec![port.into()],
        }),
    )
    .await?;
    let fut = websocket_get(&r.url, port);
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .map_err(|_| format!("{}: no end within 20 s", r.url))?
}

/// A client frame: FIN + binary, masked (RFC 6455 5.3).
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x82];
    let n = payload.len();
    if n < 126 {
        f.push(0x80 | n as u8);
    } else {
        f.push(0x80 | 126);
        f.extend_from_slice(&(n as u16).to_be_bytes());
    }
    let mask = [0x6b, 0x61, 0x74, 0x61];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

async fn websocket_get(url: &str, port: u16) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or(format!("unexpected URL {url}"))?;
    let (host, path) = rest.split_once('/').ok_or(format!("no path in {url}"))?;
    let mut s = TcpStream::connect(host)
        .await
        .map_err(|e| format!("{host}: {e}"))?;
    let req = format!(
        "GET /{path}?port={port} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: a2F0YS1ycy1wb3J0Zndk\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v4.channel.k8s.io\r\n\
         Origin: http://{host}\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    // The response head.
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await.map_err(|e| e.to_string())? == 0 || head.len() > 8192 {
            return Err(format!(
                "upgrade: {}",
                String::from_utf8_lossy(&head).lines().next().unwrap_or("")
            ));
        }
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head);
    if !head.starts_with("HTTP/1.1 101") {
        return Err(format!("upgrade: {}", head.lines().next().unwrap_or("")));
    }
    let mut get = vec![0u8];
    get.extend_from_slice(b"GET / HTTP/1.0\r\n\r\n");
    s.write_all(&frame(&get)).await.map_err(|e| e.to_string())?;
    let (mut data, mut err) = (Vec::new(), Vec::new());
    let mut seen = [false; 2];
    loop {
        let mut h = [0u8; 2];
        if s.read_exact(&mut h).await.is_err() {
            break;
        }
        let opcode = h[0] & 0x0f;
        let mut len = (h[1] & 0x7f) as usize;
        if len == 126 {
            let mut l = [0u8; 2];
            s.read_exact(&mut l).await.map_err(|e| e.to_string())?;
            len = u16::from_be_bytes(l) as usize;
        } else if len == 127 {
            let mut l = [0u8; 8];
            s.read_exact(&mut l).await.map_err(|e| e.to_string())?;
            len = u64::from_be_bytes(l) as usize;
        }
        let mut p = vec![0u8; len];
        s.read_exact(&mut p).await.map_err(|e| e.to_string())?;
        if opcode == 0x8 {
            break;
        }
        if opcode != 0x2 || p.is_empty() {
            continue;
        }
        let ch = p[0] as usize;
        if ch > 1 {
            continue;
        }
        // Each channel's first message is the port.
        if !seen[ch] {
            seen[ch] = true;
            continue;
        }
        if ch == 0 {
            data.extend_from_slice(&p[1..]);
        } else {
            err.extend_from_slice(&p[1..]);
        }
    }
    Ok((
        String::from_utf8_lossy(&data).to_string(),
        String::from_utf8_lossy(&err).to_string(),
    ))
}

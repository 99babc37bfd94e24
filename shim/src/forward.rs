//! Port forwarding for a pod with its own network namespace (docs/port-forward.md).
//!
//! containerd's CRI answers PortForward by dialing `localhost:PORT` inside the pod's
//! network namespace on the node, where under a VM nothing listens: the containers' sockets
//! are in the guest. The shim closes that gap: it keeps a `WATCH` stream to the agent's
//! forwarder (guest vsock port [`GUEST_PORT`], agent/src/forward.rs), which names the TCP
//! ports listened on in the guest on an address loopback reaches, and listens on each of
//! them on `127.0.0.1` in the pod's namespace. Every connection accepted there gets a stream
//! of its own to the guest (`TCP <port>`), where the agent dials the container's localhost,
//! and bytes are copied both ways.
//!
//! The listeners follow the guest's ports within about a second; they are closed when the
//! guest stops listening and all of them when the pod network is torn down.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// The agent forwarder's guest vsock port (agent/src/forward.rs).
pub const GUEST_PORT: u32 = 1025;
/// Wait before dialing the guest again after the watch stream failed.
const RETRY: Duration = Duration::from_secs(1);
/// Longest reply line of the guest.
const MAX_LINE: usize = 256;

/// The forwarder of one pod: aborted (listeners closed) when dropped.
#[derive(Debug)]
pub struct Forwarder(JoinHandle<()>);

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts forwarding for the pod whose VM's hybrid vsock socket is `uds` and whose network
/// namespace is `netns`.
pub fn start(uds: PathBuf, netns: PathBuf) -> Forwarder {
    Forwarder(tokio::spawn(watch(uds, netns)))
}

/// `PORTS a,b,c` → the set; None for another line.
fn parse_ports(line: &str) -> Option<BTreeSet<u16>> {
    let list = line.strip_prefix("PORTS")?.trim();
    if list.is_empty() {
        return Some(BTreeSet::new());
    }
    list.split(',').map(|p| p.parse().ok()).collect()
}

/// Open listeners per port; dropping one aborts its accept loop (closing the socket).
struct Listeners(HashMap<u16, JoinHandle<()>>);

impl Drop for Listeners {
    fn drop(&mut self) {
        for (_, h) in self.0.drain() {
            h.abort();
        }
    }
}

async fn watch(uds: PathBuf, netns: PathBuf) {
    let mut open = Listeners(HashMap::new());
    // Ports that could not be bound (logged once).
    let mut failed: BTreeSet<u16> = BTreeSet::new();
    loop {
        match crate::agent::dial(&uds, GUEST_PORT).await {
            Ok(mut s) => {
                if s.write_all(b"WATCH\n").await.is_ok() {
                    let mut lines = BufReader::new(s).lines();
                    while let Ok(Some(l)) = lines.next_line().await {
                        let Some(ports) = parse_ports(&l) else {
                            warn!("port forwarding: unexpected line from the guest: {l:?}");
                            continue;
                        };
                        update(&mut open, &mut failed, &ports, &uds, &netns).await;
                    }
                }
                debug!("port forwarding: the guest's watch stream ended");
            }
            Err(e) => debug!("port forwarding: {e}"),
        }
        tokio::time::sleep(RETRY).await;
    }
}

async fn update(
    open: &mut Listeners,
    failed: &mut BTreeSet<u16>,
    ports: &BTreeSet<u16>,
    uds: &Path,
    netns: &Path,
) {
    open.0.retain(|p, h| {
        let keep = ports.contains(p);
        if !keep {
            h.abort();
            info!(port = p, "port forwarding: the guest stopped listening");
        }
        keep
    });
    failed.retain(|p| ports.contains(p));
    for &port in ports {
        if open.0.contains_key(&port) || failed.contains(&port) {
            continue;
        }
        match bind(netns, port).await {
            Ok(l) => {
                info!(
                    port,
                    netns = %netns.display(),
                    "port forwarding: listening on 127.0.0.1:{port} for the guest"
                );
                open.0
                    .insert(port, tokio::spawn(accept(l, port, uds.to_path_buf())));
            }
            Err(e) => {
                warn!(port, "port forwarding: {e}");
                failed.insert(port);
            }
        }
    }
}

/// A listener on 127.0.0.1:`port` in the network namespace `netns`.
async fn bind(netns: &Path, port: u16) -> Result<tokio::net::TcpListener, String> {
    let l = crate::network::in_netns(netns, move || async move {
        let l = std::net::TcpListener::bind(("127.0.0.1", port))
            .map_err(|e| format!("127.0.0.1:{port} in the pod's network namespace: {e}"))?;
        l.set_nonblocking(true).map_err(|e| e.to_string())?;
        Ok(l)
    })
    .await?;
    tokio::net::TcpListener::from_std(l).map_err(|e| e.to_string())
}

async fn accept(l: tokio::net::TcpListener, port: u16, uds: PathBuf) {
    loop {
        match l.accept().await {
            Ok((c, _)) => {
                let uds = uds.clone();
                tokio::spawn(async move {
                    if let Err(e) = connect(c, port, &uds).await {
                        info!(port, "port forwarding: connection not forwarded: {e}");
                    }
                });
            }
            Err(e) => {
                warn!(port, "port forwarding: accept: {e}");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// One forwarded connection: a stream to the guest, `TCP <port>`, `OK`, then both ways.
async fn connect(mut c: tokio::net::TcpStream, port: u16, uds: &Path) -> Result<(), String> {
    let mut g = crate::agent::dial(uds, GUEST_PORT).await?;
    g.write_all(format!("TCP {port}\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    // The reply line, byte by byte: what follows it is the container's.
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.len() < MAX_LINE {
        if g.read(&mut b).await.map_err(|e| e.to_string())? == 0 {
            return Err("the guest closed the stream".into());
        }
        if b[0] == b'\n' {
            break;
        }
        line.push(b[0]);
    }
    let line = String::from_utf8_lossy(&line);
    if line != "OK" {
        return Err(format!("the guest: {line}"));
    }
    tokio::io::copy_bidirectional(&mut c, &mut g)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_lines() {
        assert_eq!(
            parse_ports("PORTS 80,18080"),
            Some(BTreeSet::from([80, 18080]))
        );
        assert_eq!(parse_ports("PORTS "), Some(BTreeSet::new()));
        assert_eq!(parse_ports("PORTS"), Some(BTreeSet::new()));
        assert_eq!(parse_ports("PORTS 80,x"), None);
        assert_eq!(parse_ports("ERR no"), None);
    }

    /// A listener bound in another network namespace than the shim's own is reachable
    /// only there; here (no privileges for a new namespace) the own namespace stands in.
    #[tokio::test]
    async fn bind_in_a_namespace() {
        let own = PathBuf::from("/proc/self/ns/net");
        match bind(&own, 0).await {
            Ok(l) => assert!(l.local_addr().unwrap().ip().is_loopback()),
            // setns needs CAP_SYS_ADMIN, even into one's own namespace.
            Err(e) => assert!(e.contains("network namespace"), "{e}"),
        }
    }
}

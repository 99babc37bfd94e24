//! Development client for AfterRestore: calls it on an agent through kata-vmm's hybrid vsock
//! socket (`--vsock-uds`) and prints the answer. `kata-agent-ctl` only knows Check and
//! Shutdown; this is what a manual (or node) check of AfterRestore uses.
//!
//! ```text
//! after-restore UDS [--entropy-bytes N] [--hostname H] [--share-tag T] [--no-probe]
//! ```
//! N random bytes from /dev/urandom (default 64; other sizes show the agent's check).
//! Prints `probed=<devices, comma-separated>` and exits 0, or prints the agent's error
//! (`code=<ttrpc code> message=<text>`) and exits 1.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use kata_rs_protocol::agent::AfterRestoreRequest;
use kata_rs_protocol::agent_ttrpc::AgentServiceClient;
use kata_rs_protocol::{hybrid_vsock, AGENT_VSOCK_PORT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const USAGE: &str =
    "usage: after-restore UDS [--entropy-bytes N] [--hostname H] [--share-tag T] [--no-probe]";

/// The stream to the agent's port: `CONNECT <port>\n`, then the `OK <hostport>\n` line.
async fn dial(uds: &PathBuf) -> anyhow::Result<tokio::net::UnixStream> {
    let mut s = tokio::net::UnixStream::connect(uds).await?;
    s.write_all(hybrid_vsock::connect_line(AGENT_VSOCK_PORT).as_bytes())
        .await?;
    let mut line = Vec::new();
    loop {
        let mut b = [0u8; 1];
        anyhow::ensure!(s.read(&mut b).await? == 1, "closed without a reply");
        if b[0] == b'\n' {
            break;
        }
        anyhow::ensure!(line.len() < hybrid_vsock::MAX_LINE, "reply too long");
        line.push(b[0]);
    }
    anyhow::ensure!(
        hybrid_vsock::parse_ok(&line).is_some(),
        "bad reply {:?}",
        String::from_utf8_lossy(&line)
    );
    Ok(s)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let uds = PathBuf::from(args.next().ok_or_else(|| anyhow::anyhow!(USAGE))?);
    let mut req = AfterRestoreRequest {
        probe_devices: true,
        ..Default::default()
    };
    let mut n = 64usize;
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{a} needs a value"))
        };
        match a.as_str() {
            "--entropy-bytes" => n = value()?.parse()?,
            "--hostname" => req.hostname = value()?,
            "--share-tag" => req.share_tag = value()?,
            "--no-probe" => req.probe_devices = false,
            _ => anyhow::bail!("unexpected argument {a:?}\n{USAGE}"),
        }
    }
    req.entropy = vec![0; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut req.entropy)?;
    let socket = ttrpc::asynchronous::transport::Socket::new(dial(&uds).await?);
    let client = AgentServiceClient::new(ttrpc::asynchronous::Client::new(socket));
    let ctx = ttrpc::context::with_timeout(Duration::from_secs(30).as_nanos() as i64);
    match client.after_restore(ctx, &req).await {
        Ok(r) => {
            println!("probed={}", r.probed.join(","));
            Ok(())
        }
        Err(ttrpc::Error::RpcStatus(s)) => {
            println!("code={:?} message={}", s.code(), s.message());
            std::process::exit(1)
        }
        Err(e) => anyhow::bail!("AfterRestore: {e}"),
    }
}

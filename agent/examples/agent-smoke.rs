//! Development smoke client: drives a running agent through one container's life.
//!
//! ```text
//! agent-smoke ADDR ID ROOTFS_PATH [ARG...]     (ADDR: vsock://CID:1024 or unix:///path)
//! ```
//! Retries the connection for 60 s, prints Check, creates ID from ROOTFS_PATH (a guest
//! path) running ARG... (default `sh -c 'echo hello; exit 3'`), prints its stdout/stderr
//! and exit status, removes it, then asks the agent to shut down.

use std::time::{Duration, Instant};

use kata_rs_protocol::agent::*;
use kata_rs_protocol::agent_ttrpc::AgentServiceClient;
use ttrpc::context;

fn ctx() -> context::Context {
    context::with_timeout(120_000_000_000)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(
        a.len() >= 3,
        "usage: agent-smoke ADDR ID ROOTFS_PATH [ARG...]"
    );
    let (addr, id, rootfs) = (&a[0], &a[1], &a[2]);
    let args: Vec<String> = if a.len() > 3 {
        a[3..].to_vec()
    } else {
        vec!["sh".into(), "-c".into(), "echo hello; exit 3".into()]
    };
    let t0 = Instant::now();
    let c = loop {
        match ttrpc::r#async::Client::connect(addr).await {
            Ok(c) => {
                let c = AgentServiceClient::new(c);
                if let Ok(r) = c.check(ctx(), &CheckRequest::new()).await {
                    println!(
                        "check: version {} kernel {} after {:?}",
                        r.version,
                        r.kernel_release,
                        t0.elapsed()
                    );
                    break c;
                }
            }
            Err(e) if t0.elapsed() > Duration::from_secs(60) => anyhow::bail!("connect: {e}"),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {"args": args, "cwd": "/", "env": ["PATH=/bin:/usr/bin"],
                    "user": {"uid": 0, "gid": 0}},
        "root": {"path": "rootfs"},
        "hostname": id,
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "uts"},
                                 {"type": "ipc"}, {"type": "network"}, {"type": "cgroup"}]}
    });
    let mut req = CreateContainerRequest::new();
    req.container_id = id.clone();
    req.oci_spec = spec.to_string().into_bytes();
    req.rootfs_path = rootfs.clone();
    let r = c.create_container(ctx(), &req).await;
    println!("create: {r:?}");
    r?;
    let mut cr = ContainerRequest::new();
    cr.container_id = id.clone();
    println!("start: pid {}", c.start_container(ctx(), &cr).await?.pid);
    for stderr in [false, true] {
        let mut out = Vec::new();
        loop {
            let mut r = ReadStreamRequest::new();
            r.container_id = id.clone();
            r.len = 65536;
            let d = if stderr {
                c.read_stderr(ctx(), &r).await?
            } else {
                c.read_stdout(ctx(), &r).await?
            };
            if d.data.is_empty() {
                break;
            }
            out.extend_from_slice(&d.data);
        }
        let name = if stderr { "stderr" } else { "stdout" };
        println!("{name}: {:?}", String::from_utf8_lossy(&out));
    }
    let mut w = WaitProcessRequest::new();
    w.container_id = id.clone();
    println!("wait: status {}", c.wait_process(ctx(), &w).await?.status);
    let mut rm = RemoveContainerRequest::new();
    rm.container_id = id.clone();
    println!("remove: {:?}", c.remove_container(ctx(), &rm).await);
    println!("shutdown: {:?}", c.shutdown(ctx(), &Empty::new()).await);
    Ok(())
}

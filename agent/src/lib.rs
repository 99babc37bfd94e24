//! kata-rs agent: PID 1 of the guest initramfs. Serves the agent ttrpc API
//! (`kata_rs_protocol`) on vsock port 1024 and runs containers inside the microVM.
//!
//! Modules: [`boot`] (PID 1 setup), [`service`] (the API), [`plan`] (OCI spec → plan),
//! [`container`] (the container model and CreateContainer), [`spawn`] (starting the helper
//! process), [`init`] (the single-threaded container init and exec helper), [`share`] (the
//! sandbox's virtio-fs share), [`restore`] (AfterRestore: a VM restored from a template becomes
//! the sandbox's), [`rootpath`] (paths resolved inside a root), [`cgroup`],
//! [`netstats`], [`reaper`] (the one SIGCHLD reaper), [`error`]; agent/README.md lists all.
#![warn(missing_docs)]

pub mod boot;
pub mod caps;
pub mod cgroup;
pub mod container;
pub mod devices;
pub mod error;
pub mod forward;
#[cfg(test)]
mod fuzz;
pub mod init;
pub mod netstats;
pub mod network;
pub mod plan;
pub mod pty;
pub mod reaper;
pub mod restore;
pub mod rootpath;
pub mod seccomp;
pub mod service;
pub mod share;
pub mod spawn;
pub mod syscalls_x86_64;
pub mod sysctl;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use service::{Agent, Service, ShutdownAction};

/// Default listen address inside the guest: any CID, the agent's vsock port.
pub fn default_listen() -> String {
    format!("vsock://-1:{}", kata_rs_protocol::AGENT_VSOCK_PORT)
}

/// The console line printed once the API is served (the guest contract's).
pub use kata_rs_protocol::guest::READY_LINE;

/// Daemon options.
#[derive(Debug, Clone)]
pub struct Options {
    /// ttrpc address (`vsock://CID:PORT` or `unix:///path`).
    pub listen: String,
    /// cgroup v2 root; `None` = detect.
    pub cgroup_root: Option<PathBuf>,
    /// What Shutdown does.
    pub shutdown: ShutdownAction,
    /// The sandbox share: mounted at boot in the guest, a given directory in development.
    pub share: share::Share,
}

/// Serves the API until Shutdown; then syncs and reboots (PID 1) or returns (dev mode).
pub async fn serve(opts: Options) -> anyhow::Result<()> {
    let reaper = reaper::Reaper::new();
    reaper.spawn()?;
    let cgroup_root = opts.cgroup_root.clone().or_else(cgroup::detect_root);
    match &cgroup_root {
        Some(r) => tracing::debug!("cgroup v2 root {r:?}"),
        None => tracing::warn!("no cgroup v2 hierarchy: containers get no cgroup"),
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let agent = Arc::new(Agent::new(reaper, cgroup_root, opts.share.clone(), tx));
    let svc = kata_rs_protocol::agent_ttrpc::create_agent_service(Arc::new(Service(agent)));
    if let Some(path) = opts.listen.strip_prefix("unix://") {
        let _ = std::fs::remove_file(path);
    }
    let mut server = ttrpc::r#async::Server::new()
        .bind(&opts.listen)
        .map_err(|e| anyhow::anyhow!("listen on {}: {e}", opts.listen))?
        .register_service(svc);
    server
        .start()
        .await
        .map_err(|e| anyhow::anyhow!("start ttrpc server on {}: {e}", opts.listen))?;
    // Port forwarding (docs/port-forward.md): only in the VM, where the shim reaches vsock.
    if opts.listen.starts_with("vsock://") {
        if let Err(e) = forward::spawn() {
            tracing::warn!("port forwarding: vsock port {}: {e}", forward::PORT);
        }
    }
    println!("{READY_LINE}");
    rx.recv().await;
    // Let the Shutdown reply reach the shim before the VM goes away.
    tokio::time::sleep(Duration::from_millis(100)).await;
    nix::unistd::sync();
    if opts.shutdown == ShutdownAction::Reboot {
        let Err(e) = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
        anyhow::bail!("reboot: {}", e.desc());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn listens_on_the_contract_port() {
        assert_eq!(super::default_listen(), "vsock://-1:1024");
    }
}

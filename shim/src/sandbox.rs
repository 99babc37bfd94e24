//! A sandbox: one microVM (a kata-vmm process) with its agent, its state directory and its
//! console log, its share (`crate::share`) and the virtiofsd that serves the share to the
//! VM. Containers live in a sandbox: a single container is its own sandbox (sandbox id =
//! container id), a pod's containers share the pod sandbox's.

use std::{path::PathBuf, time::Duration};

use tracing::{info, warn};

use std::sync::Arc;

use crate::{
    agent::{self, Agent, NotReady},
    config::Config,
    host_cgroup::SandboxCgroup,
    network::PodNetwork,
    share::Share,
    virtiofsd::{self, Virtiofsd},
    vmm::{self, Vmm, VmmExit, VmmSpec},
};

mod launch;
use launch::console_tail;
pub use launch::{
    create_console_dir, create_console_log, launch, start_virtiofsd, vmm_exit_message,
};

/// How long a stopped sandbox waits for its virtiofsd to leave by itself (it does when the
/// VMM's vhost-user connection closes) before killing it.
const VIRTIOFSD_STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// How long the end of a sandbox waits for its host cgroup to empty after `cgroup.kill`.
const CGROUP_LEAVE_TIMEOUT: Duration = Duration::from_secs(5);

/// How many times a new VM is tried with a fresh random CID when the VMM reports that its
/// CID is taken.
const CID_TRIES: usize = 3;

/// Files of one sandbox on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxPaths {
    /// `<runtime.state_dir>/<sandbox-id>`: the share, virtiofsd's socket, pid files.
    pub state_dir: PathBuf,
    /// `<runtime.console_log_dir>/<sandbox-id>.log`.
    pub console_log: PathBuf,
}

impl SandboxPaths {
    /// The paths of sandbox `id` under `config`.
    pub fn new(config: &Config, id: &str) -> Self {
        let r = &config.file.runtime;
        Self {
            state_dir: r.state_dir.join(id),
            console_log: r.console_log_dir.join(format!("{id}.log")),
        }
    }

    /// The VMM's hybrid vsock socket, through which the shim reaches the agent.
    pub fn agent_socket(&self) -> PathBuf {
        self.state_dir.join(vmm::VSOCK_SOCKET_FILE)
    }

    /// The sandbox's share (see `crate::share`; made by [`Share::create`]).
    pub fn share(&self) -> Share {
        Share::at(&self.state_dir)
    }

    /// Unmounts the share and removes the state directory, and the console log unless
    /// `keep_console`. Nothing is removed under a mount that could not be unmounted.
    pub fn remove(&self, keep_console: bool) -> Result<(), String> {
        let mut errs = Vec::new();
        match self.share().destroy() {
            Ok(()) => {
                let left = crate::share::mounts_under(&self.state_dir);
                if left.is_empty() {
                    if let Err(e) = std::fs::remove_dir_all(&self.state_dir) {
                        if e.kind() != std::io::ErrorKind::NotFound {
                            errs.push(format!("remove {}: {e}", self.state_dir.display()));
                        }
                    }
                } else {
                    errs.push(format!(
                        "{} is left in place: still mounted under it: {}",
                        self.state_dir.display(),
                        left.iter()
                            .map(|p| p.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
            Err(e) => errs.push(format!("the sandbox's share: {e}")),
        }
        if !keep_console {
            if let Err(e) = std::fs::remove_file(&self.console_log) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    errs.push(format!("remove {}: {e}", self.console_log.display()));
                }
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs.join("; "))
        }
    }
}

/// A running VM with a connected agent.
pub struct Sandbox {
    /// Sandbox id.
    pub id: String,
    /// Its files.
    pub paths: SandboxPaths,
    /// The guest's vsock CID.
    pub cid: u32,
    /// The VMM process.
    pub vmm: Vmm,
    /// The agent connection.
    pub agent: Agent,
    /// Whether this VM belongs to a pod sandbox (CRI annotations), which later containers
    /// may join.
    pub is_pod: bool,
    /// The virtio-fs server of the share.
    fs: Virtiofsd,
    /// Pod networking (tap + tc redirects in the pod's network namespace), removed when the
    /// VMM has stopped.
    network: std::sync::Mutex<Option<PodNetwork>>,
    /// Port forwarding into the guest for the pod's network namespace
    /// (`crate::forward`), stopped with the pod network.
    forward: std::sync::Mutex<Option<crate::forward::Forwarder>>,
    /// The host cgroup the shim, the VMM and virtiofsd run in (`[cgroup]`), left when the
    /// VM has stopped.
    cgroup: Option<Arc<SandboxCgroup>>,
    config: Config,
}

/// Why a VM could not be started; the message is what ctr shows.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

impl Sandbox {
    /// Starts virtiofsd on the sandbox's share (made beforehand by [`Share::create`]), boots
    /// a VM with the guest image and the share as its virtio-fs device, and waits until its
    /// agent answers `Check`. The state and console directories must exist. On failure the
    /// VMM and virtiofsd are killed and reaped and their pid files removed; the message says
    /// what went wrong (the VMM's error line, or the timeout and the tail of the console
    /// log). The share itself is the caller's to remove.
    ///
    /// With `net` (set up by [`PodNetwork::setup`]) the VMM runs in the pod's network
    /// namespace on its tap, and the guest gets the pod's interface, routes and neighbours
    /// once the agent answers; on any failure `net` is torn down too.
    pub async fn start(
        config: &Config,
        id: &str,
        paths: SandboxPaths,
        is_pod: bool,
        net: Option<PodNetwork>,
        cgroup: Option<Arc<SandboxCgroup>>,
    ) -> Result<Sandbox, StartError> {
        let r = Self::boot(config, id, paths, is_pod, net.as_ref(), cgroup).await;
        let (sandbox, net_done) = match r {
            Ok(s) => s,
            Err(e) => {
                if let Some(n) = &net {
                    if let Err(t) = n.teardown().await {
                        warn!(sandbox = id, "pod network teardown: {t}");
                        return Err(StartError(format!(
                            "{e}; removing the pod network also failed: {t}"
                        )));
                    }
                }
                return Err(e);
            }
        };
        if let Some(n) = net.as_ref().filter(|_| !net_done) {
            if let Err(e) = n.configure_guest(&sandbox.agent).await {
                let exit = sandbox.kill().await;
                info!(
                    sandbox = id,
                    "VMM killed after the guest network failed ({exit})"
                );
                let mut msg = e;
                if let Err(t) = n.teardown().await {
                    msg.push_str(&format!("; removing the pod network also failed: {t}"));
                }
                return Err(StartError(msg));
            }
        }
        if let Some(n) = &net {
            let uds = sandbox.paths.agent_socket();
            *sandbox.forward.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(crate::forward::start(uds, n.netns.clone()));
        }
        *sandbox.network.lock().unwrap_or_else(|e| e.into_inner()) = net;
        Ok(sandbox)
    }

    /// The VM and its virtiofsd: restored from a template when `[factory]` has one for this
    /// configuration (the guest's network is then configured already: `true`), else booted
    /// (`crate::factory::start_sandbox` decides and falls back).
    async fn boot(
        config: &Config,
        id: &str,
        paths: SandboxPaths,
        is_pod: bool,
        net: Option<&PodNetwork>,
        cgroup: Option<Arc<SandboxCgroup>>,
    ) -> Result<(Sandbox, bool), StartError> {
        let origin = cgroup.as_ref().map(|c| c.shim_origin.clone());
        let (fs, v, net_done) = crate::factory::start_sandbox(
            config,
            id,
            |dir| Self::boot_restored(config, id, &paths, is_pod, net, dir),
            || Self::boot_cold(config, id, &paths, is_pod, net),
            |config, key| crate::factory::make_in_background(config, key, origin),
        )
        .await?;
        let sandbox = Sandbox {
            id: v.id,
            paths: v.paths,
            cid: v.cid,
            vmm: v.vmm,
            agent: v.agent,
            is_pod: v.is_pod,
            fs,
            network: v.network,
            forward: std::sync::Mutex::new(None),
            cgroup,
            config: v.config,
        };
        Ok((sandbox, net_done))
    }

    async fn boot_cold(
        config: &Config,
        id: &str,
        paths: &SandboxPaths,
        is_pod: bool,
        net: Option<&PodNetwork>,
    ) -> Result<(Virtiofsd, SandboxVm, bool), StartError> {
        let fs = start_virtiofsd(config, paths).await?;
        match Self::boot_vm(config, id, paths.clone(), is_pod, net, &fs).await {
            Ok(v) => Ok((fs, v, false)),
            Err(e) => {
                stop_virtiofsd(&fs, paths, id).await;
                Err(e)
            }
        }
    }

    async fn boot_restored(
        config: &Config,
        id: &str,
        paths: &SandboxPaths,
        is_pod: bool,
        net: Option<&PodNetwork>,
        template: std::path::PathBuf,
    ) -> Result<(Virtiofsd, SandboxVm, bool), String> {
        let fs = start_virtiofsd(config, paths).await.map_err(|e| e.0)?;
        match crate::factory::restore(config, paths, net, &fs, &template).await {
            Ok(r) => {
                info!(
                    sandbox = id,
                    cid = r.cid,
                    pid = r.vmm.pid(),
                    "VM restored from {}",
                    template.display()
                );
                let vm = SandboxVm {
                    id: id.to_string(),
                    paths: paths.clone(),
                    cid: r.cid,
                    vmm: r.vmm,
                    agent: r.agent,
                    is_pod,
                    network: std::sync::Mutex::new(None),
                    config: config.clone(),
                };
                Ok((fs, vm, true))
            }
            Err(e) => {
                stop_virtiofsd(&fs, paths, id).await;
                Err(e)
            }
        }
    }

    async fn boot_vm(
        config: &Config,
        id: &str,
        paths: SandboxPaths,
        is_pod: bool,
        net: Option<&PodNetwork>,
        fs: &Virtiofsd,
    ) -> Result<SandboxVm, StartError> {
        let h = &config.file.hypervisor;
        let cmdline = format!(
            "{} {}={}",
            h.kernel_params,
            kata_rs_protocol::guest::SHARE_CMDLINE_PARAM,
            kata_rs_protocol::guest::SHARE_TAG
        )
        .trim()
        .to_string();
        let mut tries = 0;
        loop {
            tries += 1;
            let cid = vmm::random_cid();
            let spec = VmmSpec {
                jail_id: h.jail_id(cid),
                fs: Some(fs.socket.clone()),
                net: net.map(|n| (n.vmm_net_arg(), n.netns.clone())),
                ..VmmSpec::for_config(
                    config,
                    cid,
                    paths.agent_socket(),
                    paths.console_log.clone(),
                    cmdline.clone(),
                )
            };
            let vmm = launch(&spec, &paths).await?;
            let uds = paths.agent_socket();
            let ready = agent::wait_ready(
                &uds,
                kata_rs_protocol::AGENT_VSOCK_PORT,
                agent::Tries::new(config.dial_timeout(), Duration::from_secs(2)),
                config.request_timeout(),
                vmm.wait(),
            )
            .await;
            match ready {
                Ok((agent, check)) => {
                    info!(
                        sandbox = id,
                        cid = spec.cid,
                        pid = vmm.pid(),
                        "agent {} ready (guest kernel {})",
                        check.version,
                        check.kernel_release
                    );
                    agent.sync_guest_clock(id, "after boot").await;
                    return Ok(SandboxVm {
                        id: id.to_string(),
                        paths,
                        cid: spec.cid,
                        vmm,
                        agent,
                        is_pod,
                        network: std::sync::Mutex::new(None),
                        config: config.clone(),
                    });
                }
                Err(NotReady::VmmExited(exit)) => {
                    let line = vmm.error_line().await;
                    let _ = std::fs::remove_file(paths.state_dir.join(vmm::PID_FILE));
                    let cid_taken = line.as_deref().is_some_and(|l| {
                        l.contains("in use") || l.to_ascii_lowercase().contains("eaddrinuse")
                    });
                    if cid_taken && tries < CID_TRIES {
                        warn!(cid = spec.cid, "vsock CID taken, retrying with another");
                        continue;
                    }
                    let mut msg =
                        vmm_exit_message(&h.path, exit, line.as_deref(), &paths.console_log);
                    msg.push_str(&fs.why_not_serving().await.unwrap_or_default());
                    return Err(StartError(msg));
                }
                Err(NotReady::Timeout(last)) => {
                    // Where the VMM is stuck, read before it is killed (a VMM that never bound
                    // its vsock socket is still in its setup).
                    let threads = vmm.thread_states();
                    let watch = vmm.vcpu_state().await;
                    let exit = vmm.kill_and_wait().await;
                    let _ = std::fs::remove_file(paths.state_dir.join(vmm::PID_FILE));
                    info!(sandbox = id, "VMM killed after the agent timeout ({exit})");
                    let mut msg = format!(
                        "agent in the VM did not answer within {}s (vsock CID {}, port {})",
                        config.file.agent.dial_timeout_secs,
                        spec.cid,
                        kata_rs_protocol::AGENT_VSOCK_PORT
                    );
                    if let Some(e) = last {
                        msg.push_str(&format!("; last error: {e}"));
                    }
                    msg.push_str(if uds.exists() {
                        "; kata-vmm's vsock socket exists (its setup was done; the guest never \
                         accepted the connection)"
                    } else {
                        "; kata-vmm never created its vsock socket (still in its setup)"
                    });
                    if !threads.is_empty() {
                        msg.push_str(&format!(
                            "; kata-vmm was still running (threads: {threads})"
                        ));
                    }
                    if let Some(w) = watch {
                        msg.push_str(&format!("; {w}"));
                    }
                    msg.push_str(&console_tail(&paths.console_log));
                    return Err(StartError(msg));
                }
            }
        }
    }

    /// Stops the VM: the agent's `Shutdown` (the guest reboots, which ends the VMM), a
    /// wait for the VMM up to `hypervisor.shutdown_timeout_secs`, then SIGKILL. Removes the
    /// pid file. Returns how the VMM ended.
    pub async fn stop(&self) -> VmmExit {
        if self.vmm.exited().is_none() {
            if let Err(e) = self.agent.shutdown().await {
                // A guest that reboots may close the connection before it answers.
                info!(sandbox = %self.id, "agent Shutdown: {e}");
            }
        }
        let exit = self.vmm.stop(self.config.shutdown_timeout()).await;
        let _ = std::fs::remove_file(self.paths.state_dir.join(vmm::PID_FILE));
        let fs = self.fs.stop(VIRTIOFSD_STOP_TIMEOUT).await;
        let _ = std::fs::remove_file(self.paths.state_dir.join(virtiofsd::PID_FILE));
        info!(sandbox = %self.id, "virtiofsd {fs}");
        self.remove_network().await;
        self.leave_cgroup().await;
        exit
    }

    /// Kills the VMM (and virtiofsd) at once (no graceful shutdown) and waits until they
    /// are reaped.
    pub async fn kill(&self) -> VmmExit {
        let exit = self.vmm.kill_and_wait().await;
        let _ = std::fs::remove_file(self.paths.state_dir.join(vmm::PID_FILE));
        self.fs.kill().await;
        let _ = std::fs::remove_file(self.paths.state_dir.join(virtiofsd::PID_FILE));
        self.remove_network().await;
        self.leave_cgroup().await;
        exit
    }

    /// The shim leaves the sandbox's host cgroup, which is emptied and removed; a failure
    /// is logged (the lost-shim cleanup retries from the record).
    async fn leave_cgroup(&self) {
        let Some(cg) = self.cgroup.clone() else {
            return;
        };
        let r = tokio::task::spawn_blocking(move || cg.leave(CGROUP_LEAVE_TIMEOUT)).await;
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(sandbox = %self.id, "host cgroup: {e}"),
            Err(e) => warn!(sandbox = %self.id, "host cgroup: {e}"),
        }
    }

    /// Why the agent connection broke, for an error message: how the VMM ended (waiting up
    /// to 2 s for it to) or that it still runs, and the tail of the guest console.
    pub async fn why_lost(&self) -> String {
        let mut msg = match tokio::time::timeout(Duration::from_secs(2), self.vmm.wait()).await {
            Ok(exit) => match self.vmm.error_line().await {
                Some(l) => format!("; the VM ended: VMM {exit}: {l}"),
                None => format!("; the VM ended: VMM {exit}"),
            },
            Err(_) => "; the VMM still runs".to_string(),
        };
        msg.push_str(&console_tail(&self.paths.console_log));
        msg
    }

    /// A second, short-lived connection to the agent (beside the one every request of the
    /// sandbox uses): `connect` bounds the dial, `request` each request.
    pub async fn fresh_agent(
        &self,
        connect: Duration,
        request: Duration,
    ) -> Result<agent::Agent, agent::AgentError> {
        agent::Agent::connect(
            &self.paths.agent_socket(),
            kata_rs_protocol::AGENT_VSOCK_PORT,
            connect,
            request,
        )
        .await
    }

    /// The virtiofsd process of the share.
    pub fn virtiofsd(&self) -> &Vmm {
        &self.fs.process
    }

    /// Removes the pod network (tap, tc redirects), once; a failure is logged.
    async fn remove_network(&self) {
        drop(
            self.forward
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
        let net = self
            .network
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(n) = net {
            if let Err(e) = n.teardown().await {
                warn!(sandbox = %self.id, "pod network teardown: {e}");
            }
        }
    }

    /// The configuration the sandbox was started with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether console logs are kept after the sandbox is gone.
    pub fn keep_console(&self) -> bool {
        self.config.file.runtime.debug
    }
}

/// Kills a virtiofsd whose VM did not start and removes its pid file.
async fn stop_virtiofsd(fs: &Virtiofsd, paths: &SandboxPaths, id: &str) {
    let exit = fs.kill().await;
    let _ = std::fs::remove_file(paths.state_dir.join(virtiofsd::PID_FILE));
    info!(
        sandbox = id,
        "virtiofsd {exit} after the VM failed to start"
    );
}

/// A booted VM: the fields of a [`Sandbox`] but its virtiofsd.
struct SandboxVm {
    id: String,
    paths: SandboxPaths,
    cid: u32,
    vmm: Vmm,
    agent: Agent,
    is_pod: bool,
    network: std::sync::Mutex<Option<PodNetwork>>,
    config: Config,
}

#[cfg(test)]
mod tests;

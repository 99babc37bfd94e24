//! Starting a sandbox's VM from a template: `kata-vmm --restore DIR` with the sandbox's own
//! devices (its share's virtiofsd, its tap) in the template's placeholder slots, launched as
//! a cold boot is (`crate::sandbox::launch`: state directory, console log, jail, pid file,
//! the pod's network namespace); then, once the agent answers, `AfterRestore` (the guest
//! clock, fresh entropy, the filled slots probed, the share mounted) and the pod network's
//! RPCs.

use std::path::Path;
use std::time::Duration;

use crate::agent::{self, Agent, NotReady};
use crate::config::Config;
use crate::network::PodNetwork;
use crate::sandbox::SandboxPaths;
use crate::util::random_bytes;
use crate::virtiofsd::Virtiofsd;
use crate::vmm::{self, Vmm, VmmSpec};

/// The restored VM's control socket in the sandbox's state directory.
pub const API_SOCKET_FILE: &str = "kata-vmm-api.sock";
/// Bytes of the host's randomness given to each restored guest.
pub const ENTROPY_BYTES: usize = 64;

/// A VM restored from a template, its agent ready and told it is this sandbox's.
pub struct Restored {
    /// The VMM.
    pub vmm: Vmm,
    /// The agent connection.
    pub agent: Agent,
    /// The guest's vsock CID.
    pub cid: u32,
}

/// Restores `template` as sandbox `id`'s VM (see the module). On failure the VMM is killed
/// and reaped and its pid file removed; the error names the step (and quotes the VMM's
/// error line when it ended).
pub async fn restore(
    config: &Config,
    paths: &SandboxPaths,
    net: Option<&PodNetwork>,
    fs: &Virtiofsd,
    template: &Path,
) -> Result<Restored, String> {
    let h = &config.file.hypervisor;
    // The guest keeps the template's CID (see `store::CID_FILE`); the jailed VMM still gets
    // an id of its own, from a random draw as a cold boot's CID is.
    let cid = super::store::read_cid(template)?;
    let spec = VmmSpec {
        jail_id: h.jail_id(vmm::random_cid()),
        fs: Some(fs.socket.clone()),
        net: net.map(|n| (n.vmm_net_arg(), n.netns.clone())),
        // The snapshot's placeholder slots come with it (kata-vmm refuses the flag here).
        api_sock: Some(paths.state_dir.join(API_SOCKET_FILE)),
        restore: Some(template.to_path_buf()),
        ..VmmSpec::for_config(
            config,
            cid,
            paths.agent_socket(),
            paths.console_log.clone(),
            h.kernel_params.trim().to_string(),
        )
    };
    let vm = crate::sandbox::launch(&spec, paths)
        .await
        .map_err(|e| e.0)?;
    // The share's device was bound in the template (`--fs-slot`): only the tap is probed.
    let devices = usize::from(net.is_some());
    match after_restore(config, &vm, paths, net, devices).await {
        Ok(agent) => Ok(Restored {
            vmm: vm,
            agent,
            cid,
        }),
        Err(e) => {
            let ended = vm.exited().is_some();
            vm.kill_and_wait().await;
            let _ = std::fs::remove_file(paths.state_dir.join(vmm::PID_FILE));
            let _ = std::fs::remove_file(paths.state_dir.join(API_SOCKET_FILE));
            // A VMM that ended by itself said why on stderr (e.g. a refused snapshot), and
            // a virtiofsd that ended before it served is the cause of a failed handshake.
            let mut msg = match vm.error_line().await.filter(|_| ended) {
                Some(l) => format!("{e}: {l}"),
                None => e,
            };
            if ended {
                msg.push_str(&fs.why_not_serving().await.unwrap_or_default());
            }
            Err(msg)
        }
    }
}

/// The agent of the restored VM, once it answers and has done `AfterRestore` (expecting
/// `devices` slots probed, the clock set) and the network.
async fn after_restore(
    config: &Config,
    vm: &Vmm,
    paths: &SandboxPaths,
    net: Option<&PodNetwork>,
    devices: usize,
) -> Result<Agent, String> {
    let t0 = std::time::Instant::now();
    let agent = wait_restored(config, vm, paths).await?;
    let t_agent = t0.elapsed();
    let entropy = random_bytes(ENTROPY_BYTES)?;
    // The VM's own hostname stays the kernel's default, as after a cold boot (containers get
    // theirs from their spec).
    // Probing runs only when a placeholder slot was filled (the pod's tap): a bind of each
    // empty slot costs the guest a few VM exits for nothing.
    let probed = agent
        .after_restore(entropy, "", kata_rs_protocol::guest::SHARE_TAG, devices > 0)
        .await
        .map_err(|e| e.to_string())?;
    let t_after = t0.elapsed();
    if probed.len() < devices {
        return Err(format!(
            "AfterRestore bound {} device(s) ({}), the sandbox has {devices}",
            probed.len(),
            probed.join(", ")
        ));
    }
    if let Some(n) = net {
        n.configure_guest(&agent).await?;
    }
    tracing::info!(
        "restored VM: agent answered after {} ms, AfterRestore (clock too) done at {} ms \
         (bound {}), network at {} ms",
        t_agent.as_millis(),
        t_after.as_millis(),
        probed.join(" "),
        t0.elapsed().as_millis()
    );
    Ok(agent)
}

/// How long [`wait_restored`] tries with short (300 ms) connection tries before 2 s ones.
const SHORT_PHASE: Duration = Duration::from_secs(3);

/// Waits for the restored VM's agent with [`agent::wait_ready`] in two phases: short tries
/// of 300 ms for [`SHORT_PHASE`], then 2 s ones until the dial timeout: the first connections
/// after a restore can be lost in the guest (seen on the emulated node: such a connection
/// hangs until its try ends), and a running agent answers within tens of ms.
async fn wait_restored(config: &Config, vm: &Vmm, paths: &SandboxPaths) -> Result<Agent, String> {
    let deadline = tokio::time::Instant::now() + config.dial_timeout();
    let mut last = None;
    // (per try, phase length; None: until the deadline)
    for (per_try, length) in [
        (Duration::from_millis(300), Some(SHORT_PHASE)),
        (Duration::from_secs(2), None),
    ] {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let phase = length.map_or(left, |l| l.min(left));
        let ready = agent::wait_ready(
            &paths.agent_socket(),
            kata_rs_protocol::AGENT_VSOCK_PORT,
            agent::Tries::new(phase, per_try),
            config.request_timeout(),
            vm.wait(),
        )
        .await;
        match ready {
            Ok((a, _)) => return Ok(a),
            Err(NotReady::VmmExited(e)) => {
                return Err(format!("the restored VMM {e} before its agent answered"))
            }
            Err(NotReady::Timeout(e)) => last = e.or(last),
        }
    }
    // Where the restored guest is (kata-vmm logs its vCPUs' state on SIGUSR1).
    let vcpus = vm.vcpu_state().await;
    Err(format!(
        "the restored VM's agent did not answer within {:?}{}{}",
        config.dial_timeout(),
        last.map(|e: agent::AgentError| format!(" (last error: {e})"))
            .unwrap_or_default(),
        vcpus.map(|l| format!("; {l}")).unwrap_or_default()
    ))
}

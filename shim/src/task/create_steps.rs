//! The steps of a Create, in order, each followed by the rollback entry that undoes it:
//! for a container that is its own sandbox (rootfs, state directory, share, pod network,
//! host cgroup, VM, CreateContainer) and for a container joining its pod's running VM
//! (rootfs, its entry in the pod's share, CreateContainer). The steps themselves are a
//! [`CreateHost`]'s, a [`Vm`]'s and an [`AgentClient`]'s, so that the order and the
//! rollback are unit-tested here with fakes.

use std::{path::PathBuf, sync::Arc};

use tracing::{debug, warn};

use super::resources::{AgentClient, CreateHost, Rootfs, Undo, Vm};
use crate::{
    error::{ShimError, ShimResult},
    pod::PodRole,
    util::Rollback,
};

/// The container Create asks the guest for.
pub(super) struct GuestContainer {
    /// Container id.
    pub id: String,
    /// The OCI spec (JSON, bind sources already rewritten to their guest paths).
    pub spec: Vec<u8>,
    /// Whether containerd gave a stdin.
    pub stdin: bool,
    /// Whether the container gets a terminal.
    pub terminal: bool,
    /// Its pod role.
    pub role: PodRole,
}

/// A container created in the guest: the VM it runs in, and the host mount point of its
/// rootfs to unmount at Delete (none when the spec's directory was used).
pub(super) struct Created<V> {
    /// The VM.
    pub vm: Arc<V>,
    /// `<bundle>/rootfs` when containerd's mounts are on it.
    pub mounted: Option<PathBuf>,
}

fn push(rb: &mut Rollback, undo: Undo) {
    rb.push(undo.name, undo.step);
}

/// Creates container `c` in a new VM of its own (a single container, or a pod's sandbox
/// container). What was done is in `rb` (newest last), for the caller to undo on failure.
pub(super) async fn create_with_new_vm<H: CreateHost>(
    host: &H,
    c: GuestContainer,
    rb: &mut Rollback,
) -> ShimResult<Created<H::Vm>> {
    let (rootfs, mounted) = prepare_rootfs(host, rb).await?;
    host.make_state_dirs()?;
    push(rb, host.remove_state_dirs());
    host.share_in_new_sandbox(&rootfs)?;
    let net = host.setup_network().await?;
    let cgroup = match host.enter_cgroup() {
        Ok(cg) => cg,
        Err(e) => {
            // No VM has taken the pod network over yet: remove it here.
            if let Some(n) = net {
                if let Err(t) = host.teardown_network(n).await {
                    warn!(id = %c.id, "pod network teardown: {t}");
                }
            }
            return Err(e);
        }
    };
    if let Some(cg) = &cgroup {
        push(rb, host.leave_cgroup(cg));
    }
    let vm = host.boot(net, cgroup).await?;
    let v = vm.clone();
    push(
        rb,
        Undo::new(format!("kill VMM {}", vm.pid()), async move {
            let e = v.kill().await;
            debug!("VMM {e}");
            Ok(())
        }),
    );
    let sandbox_field = c.role.request_sandbox_id(&c.id).to_string();
    create_in_guest(&*vm, c, &sandbox_field).await?;
    Ok(Created { vm, mounted })
}

/// Creates container `c` in the running VM `vm` of its pod (sandbox container
/// `sandbox_id`): its rootfs and bind mounts appear in the pod's share (live), then
/// CreateContainer joins the sandbox container's namespaces.
pub(super) async fn create_in_pod<H: CreateHost>(
    host: &H,
    vm: Arc<H::Vm>,
    sandbox_id: &str,
    c: GuestContainer,
    rb: &mut Rollback,
) -> ShimResult<Created<H::Vm>> {
    let (rootfs, mounted) = prepare_rootfs(host, rb).await?;
    host.share_in_pod(&rootfs)?;
    push(rb, host.unshare_from_pod());
    let v = vm.clone();
    let cid = c.id.clone();
    push(
        rb,
        Undo::new(format!("remove container {cid} in the guest"), async move {
            v.agent()
                .remove_container(&cid)
                .await
                .map_err(|e| e.to_string())
        }),
    );
    create_in_guest(&*vm, c, sandbox_id).await?;
    Ok(Created { vm, mounted })
}

/// The root file system: containerd's mounts on `<bundle>/rootfs` (unmounted again by
/// `rb`, also after a partial mount), or the directory the spec names when containerd
/// passed none. Returns the directory and the mount point to unmount at Delete.
async fn prepare_rootfs<H: CreateHost>(
    host: &H,
    rb: &mut Rollback,
) -> ShimResult<(PathBuf, Option<PathBuf>)> {
    match host.rootfs()? {
        Rootfs::Spec(dir) => Ok((dir, None)),
        Rootfs::MountPoint(target) => {
            push(rb, host.unmount_rootfs(&target));
            host.mount_rootfs(&target).await?;
            Ok((target.clone(), Some(target)))
        }
    }
}

/// CreateContainer in the guest: the spec with the node's hostname as its default, the
/// root file system where the share puts it in the guest; `sandbox_id` names the pod's
/// sandbox container, empty for a container that is its own sandbox.
async fn create_in_guest<V: Vm>(vm: &V, c: GuestContainer, sandbox_id: &str) -> ShimResult<()> {
    let member = matches!(c.role, PodRole::Container { .. });
    let spec = crate::spec::with_default_hostname(
        crate::spec::with_node_uts(c.spec, member),
        &crate::spec::node_hostname(),
    );
    let created = vm
        .agent()
        .create_container(
            &c.id,
            spec,
            &kata_rs_protocol::guest::guest_rootfs(&c.id),
            c.stdin,
            c.terminal,
            sandbox_id,
        )
        .await;
    if let Err(e) = created {
        // A guest that went silent or away: say what became of the VM.
        let why = if e.guest_lost() {
            vm.why_lost().await
        } else {
            String::new()
        };
        return Err(ShimError::Failed(format!(
            "the agent could not create the container: {e}{why}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;

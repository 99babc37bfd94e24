//! CreateContainer's sequence: the pod's namespaces to join, the root file system checked,
//! the cgroup, the init spawned and set up, the device program attached; undone on failure.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::sys::ContainerSys;
use super::{Container, Process};
use crate::error::{AgentError, Result};
use crate::init::INIT_ARG;
use crate::plan::Plan;
use crate::spawn::SpawnArgs;

/// Options for [`create`].
pub struct CreateOptions<'a> {
    /// Container id (validated).
    pub id: &'a str,
    /// The validated plan.
    pub plan: Plan,
    /// Give the process a stdin pipe (else /dev/null).
    pub stdin: bool,
    /// cgroup v2 root, if any.
    pub cgroup_root: Option<&'a Path>,
    /// A pod container: the pid (root PID namespace) of its sandbox container's init,
    /// whose namespaces the plan's `join_*` name.
    pub sandbox_pid: Option<i32>,
}

/// Creates a container: cgroup, stdio pipes (or a pty), the init cloned into new
/// namespaces, and the setup handshake. On failure nothing is left behind (process killed
/// and reaped, cgroup removed; the mounts lived only in the init's mount namespace). Every
/// system call goes through `sys`, which the container keeps.
pub async fn create(sys: &Arc<dyn ContainerSys>, mut opts: CreateOptions<'_>) -> Result<Container> {
    let id = opts.id.to_string();
    let ns = opts.plan.namespaces;
    let sandbox_ns = |name: &str| -> Result<PathBuf> {
        let pid = opts.sandbox_pid.ok_or_else(|| {
            AgentError::precondition(format!(
                "container {id}: the spec joins the pod's {name} namespace but the pod has no sandbox container"
            ))
        })?;
        Ok(PathBuf::from(format!("/proc/{pid}/ns/{name}")))
    };
    let pidns = if ns.join_pid {
        let p = sandbox_ns("pid")?;
        Some(sys.open_ns(&p).map_err(|e| {
            AgentError::precondition(format!(
                "container {id}: open {} (the pod's sandbox container is gone?): {e}",
                p.display()
            ))
        })?)
    } else {
        None
    };
    for (join, name) in [(ns.join_uts, "uts"), (ns.join_ipc, "ipc")] {
        if join {
            let p = sandbox_ns(name)?;
            opts.plan.init.join.push((name.to_string(), p));
        }
    }
    let rootfs = opts.plan.init.rootfs.clone();
    match sys.is_dir(&rootfs) {
        Ok(true) => {}
        Ok(_) => {
            return Err(AgentError::invalid(format!(
                "rootfs_path {rootfs:?} is not a directory"
            )))
        }
        Err(e) => {
            return Err(AgentError::invalid(format!("rootfs_path {rootfs:?}: {e}")));
        }
    }
    let cgroup = match opts.cgroup_root {
        Some(root) => Some(sys.create_cgroup(root, &id, &opts.plan.cgroup_writes)?),
        None => {
            if !opts.plan.cgroup_writes.is_empty() {
                return Err(AgentError::internal(
                    "the spec sets resource limits but the guest has no cgroup v2 hierarchy",
                ));
            }
            None
        }
    };
    let res = async {
        let config = serde_json::to_vec(&opts.plan.init)
            .map_err(|e| AgentError::internal(format!("encode init config: {e}")))?;
        sys.spawn(SpawnArgs {
            id: &id,
            exec_id: "",
            mode: INIT_ARG,
            clone_flags: opts.plan.namespaces.clone_flags(),
            config,
            stdin: opts.stdin,
            terminal: opts.plan.init.process.terminal,
            cgroup: cgroup.as_ref(),
            pidns,
        })
        .await
    }
    .await;
    // The device program goes on the cgroup once the init has built the root (its /dev
    // nodes are made, as runc makes them before it applies the device rules) and before
    // the workload or any exec can run.
    let res = match (res, &cgroup) {
        (Ok(parts), Some(cg)) => {
            let prog = &opts.plan.device_program;
            match sys.attach_devices(prog, cg) {
                Ok(()) => Ok(parts),
                Err(e) => {
                    sys.abort(parts.0.pid, &parts.0.exit).await;
                    Err(AgentError::internal(format!(
                        "container {id}: linux.resources.devices: {e}"
                    )))
                }
            }
        }
        (res, _) => res,
    };
    match res {
        Ok((started, sync)) => {
            let init = Process::new(&id, "", started, Arc::clone(sys));
            let seccomp = opts.plan.init.process.seccomp.clone();
            Ok(Container::new(
                &id,
                init,
                cgroup,
                sync,
                seccomp,
                Arc::clone(sys),
            ))
        }
        Err(e) => {
            if let Some(cg) = &cgroup {
                if let Err(e2) = sys.remove_cgroup(cg).await {
                    tracing::warn!("cleanup after failed create: {e2}");
                }
            }
            Err(e)
        }
    }
}

//! The steps of a container's teardown (containerd's Delete, or a Create containerd gave up
//! on), in order: out of the service's state, its execs ended, out of the guest, its stdio
//! closed, out of the pod's share, the VM stopped (for the VM's owner), its rootfs unmounted,
//! the sandbox's files removed, and `/tasks/delete` last. The steps themselves are a
//! [`Teardown`]'s, so that the order, and going on past a failed step, are unit-tested here
//! with a fake.

use async_trait::async_trait;
use tracing::{info, warn};

use crate::container::ExitInfo;

/// A container being torn down: each method is one step; which step comes when is
/// [`teardown_steps`]'s.
#[async_trait]
pub(super) trait Teardown: Send + Sync {
    /// The container's id (for the log).
    fn id(&self) -> &str;
    /// Whether the container owns its VM (a single container, or a pod's sandbox
    /// container): then the VM and the sandbox's files go with it.
    fn owns_vm(&self) -> bool;
    /// Whether the VM still runs (a guest that is gone is not asked anything).
    fn vm_running(&self) -> bool;
    /// Marks the init process exited (128+9 if its exit is not known yet) and takes the
    /// container (with the VM's owner, the sandbox) out of the service's state; returns the
    /// exit that counts.
    async fn forget(&self) -> ExitInfo;
    /// Marks every exec process exited and closes its stdio copies.
    async fn end_execs(&self);
    /// `RemoveContainer` in the guest.
    async fn remove_from_guest(&self) -> Result<(), String>;
    /// Closes the init process's stdio copies.
    async fn close_init_io(&self);
    /// Takes a pod container's rootfs and binds out of the pod's share.
    fn unshare_from_pod(&self) -> Result<(), String>;
    /// Stops the VM and what it holds (virtiofsd, pod network, host cgroup); says how the
    /// VMM ended.
    async fn stop_vm(&self) -> String;
    /// Unmounts containerd's rootfs mounts, when Create mounted them.
    fn unmount_rootfs(&self) -> Result<(), String>;
    /// Removes the sandbox's state directory (and its console log unless kept).
    fn remove_sandbox_files(&self) -> Result<(), String>;
    /// Publishes `/tasks/delete` with `exit`.
    async fn publish_delete(&self, exit: ExitInfo);
}

/// What a teardown did: the exit reported, and the cleanup steps that failed (the others
/// still ran).
#[derive(Debug)]
pub(super) struct TornDown {
    /// The init process's exit.
    pub exit: ExitInfo,
    /// Each failed cleanup step's error.
    pub errors: Vec<String>,
}

/// Tears `t` down, every step in order; a failed cleanup step is recorded and the next one
/// still runs, so a half-failed Delete leaves as little as it can. With `publish`, the last
/// step is `/tasks/delete` (containerd's Delete; an abandoned Create was never announced).
pub(super) async fn teardown_steps<T: Teardown>(t: &T, publish: bool) -> TornDown {
    let exit = t.forget().await;
    t.end_execs().await;
    if t.vm_running() {
        if let Err(e) = t.remove_from_guest().await {
            warn!(id = %t.id(), "RemoveContainer: {e}");
        }
    }
    t.close_init_io().await;
    let mut errors = Vec::new();
    if t.owns_vm() {
        // The VM goes with its owner (a pod's containers still in it are then reported
        // exited); its rootfs mounts and files only after, when nothing uses them.
        let vm_exit = t.stop_vm().await;
        info!(id = %t.id(), "VMM {vm_exit}");
    } else if let Err(e) = t.unshare_from_pod() {
        // A pod container: out of the pod's share (the sandbox's share goes whole with
        // its state directory).
        errors.push(e);
    }
    if let Err(e) = t.unmount_rootfs() {
        errors.push(e);
    }
    if t.owns_vm() {
        if let Err(e) = t.remove_sandbox_files() {
            errors.push(e);
        }
    }
    if publish {
        t.publish_delete(exit).await;
    }
    TornDown { exit, errors }
}

#[cfg(test)]
mod tests;

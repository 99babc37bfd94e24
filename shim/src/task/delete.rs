//! Delete: an exec's record, or a container's teardown (out of the guest and the share;
//! for the VM's owner the VM, its files and host cgroup), then `/tasks/delete`.

use std::sync::{atomic::Ordering, Arc};

use containerd_shim_protos::{api, events::task::TaskDelete, protobuf::MessageField};
use tracing::{error, info, warn};

use super::{
    detached::{detached, Abandoned},
    TaskService,
};
use crate::{
    bundle::unmount,
    container::{Container, Status},
    error::{ShimError, ShimResult},
    util::timestamp,
};

/// Who tears a container down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TeardownBy {
    /// containerd's Delete: takes the create lock, publishes TaskDelete.
    Delete,
    /// A Create containerd gave up on: the create lock is held already, and containerd
    /// never heard of the container (no event).
    AbandonedCreate,
}

impl TaskService {
    /// Delete, on its own task (see [`detached`]); when containerd gave up on it, the shim
    /// exits afterwards if no container is left (no Shutdown will come).
    pub(super) async fn delete_process(
        &self,
        req: api::DeleteRequest,
    ) -> ShimResult<api::DeleteResponse> {
        let this = self.clone();
        let abandoned = Abandoned::default();
        let flag = abandoned.flag();
        detached("Delete", abandoned, async move {
            let r = this.delete_task(req).await;
            // containerd went away (or gave up) while the Delete ran: it never learns that
            // the last container is gone, so no Shutdown comes; exit as Shutdown would.
            // (containerd, back, finds the shim gone and cleans up its bundle.)
            if flag.load(Ordering::SeqCst) {
                // (A Create in flight may still add a container: wait for it, as Shutdown.)
                let _creating = this.inner.create_lock.lock().await;
                this.exit_if_no_containers("an abandoned Delete").await;
            }
            r
        })
        .await
    }

    /// Delete, on its own task (see [`detached`]): it finishes even when containerd gives up.
    async fn delete_task(&self, req: api::DeleteRequest) -> ShimResult<api::DeleteResponse> {
        info!(id = %req.id, exec = %req.exec_id, "Delete");
        let (c, p) = self.process(&req.id, &req.exec_id).await?;
        if !p.exec_id.is_empty() {
            if p.status() == Status::Running && c.sandbox.vmm.exited().is_none() {
                return Err(ShimError::Precondition(format!(
                    "exec {} is running; kill it first",
                    p.exec_id
                )));
            }
            let exit = p.set_exited(128 + 9);
            c.execs_lock().remove(&p.exec_id);
            p.shutdown_io().await;
            return Ok(api::DeleteResponse {
                pid: p.guest_pid.load(std::sync::atomic::Ordering::SeqCst),
                exit_status: exit.status,
                exited_at: MessageField::some(timestamp(exit.at)),
                ..Default::default()
            });
        }
        if c.init.status() == Status::Running && c.sandbox.vmm.exited().is_none() {
            return Err(ShimError::Precondition(format!(
                "container {} is running; kill it first",
                c.id
            )));
        }
        self.teardown(c, TeardownBy::Delete).await
    }

    /// Removes a created or exited container: from the state, from the guest, its share
    /// entry, and with the VM's owner the VM, its files and host cgroup.
    pub(super) async fn teardown(
        &self,
        c: Arc<Container>,
        by: TeardownBy,
    ) -> ShimResult<api::DeleteResponse> {
        // A VM's owner is not deleted while a pod container is being created in it.
        let _creating = if by == TeardownBy::Delete && c.owns_vm() {
            Some(self.inner.create_lock.lock().await)
        } else {
            None
        };
        let exit = c.init.set_exited(128 + 9);
        {
            let mut state = self.inner.state.lock().await;
            state.containers.remove(&c.id);
            if c.owns_vm() {
                state.sandboxes.remove(&c.sandbox.id);
            }
        }
        let execs: Vec<_> = c.execs_lock().drain().map(|(_, e)| e).collect();
        for e in execs {
            e.set_exited(128 + 9);
            e.shutdown_io().await;
        }

        if c.sandbox.vmm.exited().is_none() {
            if let Err(e) = c.sandbox.agent.remove_container(&c.id).await {
                warn!(id = %c.id, "RemoveContainer: {e}");
            }
        }
        c.init.shutdown_io().await;
        let mut errors = Vec::new();
        if !c.owns_vm() {
            // A pod container: out of the pod's share (the sandbox's share goes whole with
            // its state directory).
            if let Err(e) = c.sandbox.paths.share().remove_container(&c.id) {
                errors.push(e);
            }
        }
        if c.owns_vm() {
            // A single container's or a pod's sandbox container: the VM goes with it
            // (a pod's containers still in it are then reported exited).
            let vm_exit = c.sandbox.stop().await;
            info!(id = %c.id, "VMM {vm_exit}");
        }
        if let Some(m) = &c.mounted_rootfs {
            if let Err(e) = unmount(m) {
                errors.push(format!("unmount {}: {e}", m.display()));
            }
        }
        if c.owns_vm() {
            if let Err(e) = c.sandbox.paths.remove(c.sandbox.keep_console()) {
                errors.push(e);
            }
        }
        let pid = c.sandbox.vmm.pid();
        if by == TeardownBy::Delete {
            self.inner
                .publish(Box::new(TaskDelete {
                    container_id: c.id.clone(),
                    pid,
                    exit_status: exit.status,
                    exited_at: MessageField::some(timestamp(exit.at)),
                    ..Default::default()
                }))
                .await;
        }
        if !errors.is_empty() {
            let msg = errors.join("; ");
            error!(id = %c.id, "Delete: {msg}");
            return Err(ShimError::Failed(format!(
                "container deleted, but cleanup failed: {msg}"
            )));
        }
        Ok(api::DeleteResponse {
            pid,
            exit_status: exit.status,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        })
    }
}

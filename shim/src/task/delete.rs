//! Delete: an exec's record, or a container's teardown (out of the guest and the share;
//! for the VM's owner the VM, its files and host cgroup), then `/tasks/delete`.

use std::sync::{atomic::Ordering, Arc};

use async_trait::async_trait;
use containerd_shim_protos::{api, events::task::TaskDelete, protobuf::MessageField};
use tracing::{error, info};

use super::{
    delete_steps::{teardown_steps, Teardown},
    detached::{detached, Abandoned},
    TaskService,
};
use crate::{
    bundle::unmount,
    container::{Container, ExitInfo, Status},
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
    /// entry, and with the VM's owner the VM, its files and host cgroup (the order is
    /// [`teardown_steps`]'s).
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
        let pid = c.sandbox.vmm.pid();
        let id = c.id.clone();
        let done = teardown_steps(
            &ContainerTeardown { svc: self, c },
            by == TeardownBy::Delete,
        )
        .await;
        if !done.errors.is_empty() {
            let msg = done.errors.join("; ");
            error!(id = %id, "Delete: {msg}");
            return Err(ShimError::Failed(format!(
                "container deleted, but cleanup failed: {msg}"
            )));
        }
        Ok(api::DeleteResponse {
            pid,
            exit_status: done.exit.status,
            exited_at: MessageField::some(timestamp(done.exit.at)),
            ..Default::default()
        })
    }
}

/// The real container's teardown steps.
struct ContainerTeardown<'a> {
    svc: &'a TaskService,
    c: Arc<Container>,
}

#[async_trait]
impl Teardown for ContainerTeardown<'_> {
    fn id(&self) -> &str {
        &self.c.id
    }

    fn owns_vm(&self) -> bool {
        self.c.owns_vm()
    }

    fn vm_running(&self) -> bool {
        self.c.sandbox.vmm.exited().is_none()
    }

    async fn forget(&self) -> ExitInfo {
        let exit = self.c.init.set_exited(128 + 9);
        let mut state = self.svc.inner.state.lock().await;
        state.containers.remove(&self.c.id);
        if self.c.owns_vm() {
            state.sandboxes.remove(&self.c.sandbox.id);
        }
        exit
    }

    async fn end_execs(&self) {
        let execs: Vec<_> = self.c.execs_lock().drain().map(|(_, e)| e).collect();
        for e in execs {
            e.set_exited(128 + 9);
            e.shutdown_io().await;
        }
    }

    async fn remove_from_guest(&self) -> Result<(), String> {
        self.c
            .sandbox
            .agent
            .remove_container(&self.c.id)
            .await
            .map_err(|e| e.to_string())
    }

    async fn close_init_io(&self) {
        self.c.init.shutdown_io().await;
    }

    fn unshare_from_pod(&self) -> Result<(), String> {
        self.c.sandbox.paths.share().remove_container(&self.c.id)
    }

    async fn stop_vm(&self) -> String {
        self.c.sandbox.stop().await.to_string()
    }

    fn unmount_rootfs(&self) -> Result<(), String> {
        match &self.c.mounted_rootfs {
            Some(m) => unmount(m).map_err(|e| format!("unmount {}: {e}", m.display())),
            None => Ok(()),
        }
    }

    fn remove_sandbox_files(&self) -> Result<(), String> {
        self.c.sandbox.paths.remove(self.c.sandbox.keep_console())
    }

    async fn publish_delete(&self, exit: ExitInfo) {
        self.svc
            .inner
            .publish(Box::new(TaskDelete {
                container_id: self.c.id.clone(),
                pid: self.c.sandbox.vmm.pid(),
                exit_status: exit.status,
                exited_at: MessageField::some(timestamp(exit.at)),
                ..Default::default()
            }))
            .await;
    }
}

//! Container-wide requests: Pause, Resume, Update, Pids, Stats, Checkpoint.

use containerd_shim_protos::{
    api,
    events::task::{TaskPaused, TaskResumed},
    protobuf::MessageField,
};
use tracing::info;

use super::{events::EventMsg, process::any_json, TaskService};
use crate::{
    container::Status,
    error::{ShimError, ShimResult},
    metrics,
};

impl TaskService {
    /// Freezes (`pause`) or thaws a running container's processes and publishes
    /// TaskPaused / TaskResumed.
    async fn set_paused(&self, id: &str, pause: bool) -> ShimResult<api::Empty> {
        let c = self.container(id).await?;
        let (allowed, needed, action) = if pause {
            (
                c.init.status() == Status::Running,
                "running",
                "pause the container",
            )
        } else {
            (c.is_paused(), "paused", "resume the container")
        };
        if !allowed {
            return Err(ShimError::Precondition(format!(
                "container {} is not {needed}",
                c.id
            )));
        }
        c.sandbox
            .agent
            .pause_resume(&c.id, pause)
            .await
            .map_err(ShimError::agent(action))?;
        c.paused.store(pause, std::sync::atomic::Ordering::SeqCst);
        if !pause {
            c.sandbox
                .agent
                .sync_guest_clock(&c.sandbox.id, "after resume")
                .await;
        }
        let container_id = c.id.clone();
        let event: Box<dyn EventMsg> = if pause {
            Box::new(TaskPaused {
                container_id,
                ..Default::default()
            })
        } else {
            Box::new(TaskResumed {
                container_id,
                ..Default::default()
            })
        };
        self.inner.publish(event).await;
        Ok(api::Empty::new())
    }

    /// Pause: freezes the container.
    pub(super) async fn pause_container(&self, req: api::PauseRequest) -> ShimResult<api::Empty> {
        info!(id = %req.id, "Pause");
        self.set_paused(&req.id, true).await
    }

    /// Resume: thaws the container.
    pub(super) async fn resume_container(&self, req: api::ResumeRequest) -> ShimResult<api::Empty> {
        info!(id = %req.id, "Resume");
        self.set_paused(&req.id, false).await
    }

    /// Pids: the container's processes (guest pids).
    pub(super) async fn list_pids(&self, req: api::PidsRequest) -> ShimResult<api::PidsResponse> {
        let c = self.container(&req.id).await?;
        let pids = c
            .sandbox
            .agent
            .list_processes(&c.id)
            .await
            .map_err(ShimError::agent("list the container's processes"))?;
        Ok(api::PidsResponse {
            processes: pids
                .into_iter()
                .map(|pid| api::ProcessInfo {
                    pid,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    /// Update: the container's resources.
    pub(super) async fn update_resources(
        &self,
        req: api::UpdateTaskRequest,
    ) -> ShimResult<api::Empty> {
        info!(id = %req.id, "Update");
        let c = self.container(&req.id).await?;
        let (_, json): (oci_spec::runtime::LinuxResources, Vec<u8>) =
            any_json(req.resources.as_ref(), "the resources")?;
        c.sandbox
            .agent
            .update_container(&c.id, json)
            .await
            .map_err(ShimError::agent("update the container's resources"))?;
        Ok(api::Empty::new())
    }

    /// Stats: the container's statistics as cgroups v2 metrics.
    pub(super) async fn container_stats(
        &self,
        req: api::StatsRequest,
    ) -> ShimResult<api::StatsResponse> {
        let c = self.container(&req.id).await?;
        let s = c
            .sandbox
            .agent
            .stats_container(&c.id)
            .await
            .map_err(ShimError::agent("read the container's statistics"))?;
        let any = metrics::pack(&metrics::to_metrics(&s)).map_err(ShimError::Internal)?;
        Ok(api::StatsResponse {
            stats: MessageField::some(any),
            ..Default::default()
        })
    }

    /// Checkpoint: not supported.
    pub(super) async fn checkpoint_unsupported(
        &self,
        _req: api::CheckpointTaskRequest,
    ) -> ShimResult<api::Empty> {
        Err(ShimError::Unsupported(
            "checkpoint is not supported by the kata-rs runtime (the container runs in a VM; \
             there is no CRIU in the guest)"
                .into(),
        ))
    }
}

//! The ttrpc face of the agent: [`Service`] implements the generated `AgentService` trait,
//! each request one call on [`Agent`], its answer built from the result.

use std::sync::Arc;

use async_trait::async_trait;
use kata_rs_protocol::agent::*;
use kata_rs_protocol::agent_ttrpc::AgentService;
use ttrpc::r#async::TtrpcContext;

use super::{Agent, Stream};

/// The ttrpc service wrapper around [`Agent`].
#[derive(Clone)]
pub struct Service(pub Arc<Agent>);

fn empty() -> Empty {
    Empty::new()
}

#[async_trait]
impl AgentService for Service {
    async fn check(&self, _ctx: &TtrpcContext, _: CheckRequest) -> ttrpc::Result<CheckResponse> {
        let mut r = CheckResponse::new();
        r.version = env!("CARGO_PKG_VERSION").to_string();
        r.kernel_release = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(r)
    }

    async fn create_container(
        &self,
        _ctx: &TtrpcContext,
        req: CreateContainerRequest,
    ) -> ttrpc::Result<Empty> {
        let id = req.container_id.clone();
        self.0.create_container(req).await.map_err(|e| {
            tracing::warn!(id, "CreateContainer: {e}");
            e
        })?;
        Ok(empty())
    }

    async fn start_container(
        &self,
        _ctx: &TtrpcContext,
        req: ContainerRequest,
    ) -> ttrpc::Result<StartContainerResponse> {
        let pid = self.0.start_container(&req.container_id).await?;
        let mut r = StartContainerResponse::new();
        r.pid = pid;
        Ok(r)
    }

    async fn signal_process(
        &self,
        _ctx: &TtrpcContext,
        req: SignalProcessRequest,
    ) -> ttrpc::Result<Empty> {
        self.0
            .signal_process(&req.container_id, &req.exec_id, req.signal)?;
        Ok(empty())
    }

    async fn wait_process(
        &self,
        _ctx: &TtrpcContext,
        req: WaitProcessRequest,
    ) -> ttrpc::Result<WaitProcessResponse> {
        Ok(self.0.wait_process(&req.container_id, &req.exec_id).await?)
    }

    async fn read_stdout(
        &self,
        _ctx: &TtrpcContext,
        req: ReadStreamRequest,
    ) -> ttrpc::Result<ReadStreamResponse> {
        let data = self
            .0
            .read(&req.container_id, &req.exec_id, req.len, Stream::Stdout)
            .await?;
        let mut r = ReadStreamResponse::new();
        r.data = data;
        Ok(r)
    }

    async fn read_stderr(
        &self,
        _ctx: &TtrpcContext,
        req: ReadStreamRequest,
    ) -> ttrpc::Result<ReadStreamResponse> {
        let data = self
            .0
            .read(&req.container_id, &req.exec_id, req.len, Stream::Stderr)
            .await?;
        let mut r = ReadStreamResponse::new();
        r.data = data;
        Ok(r)
    }

    async fn write_stdin(
        &self,
        _ctx: &TtrpcContext,
        req: WriteStreamRequest,
    ) -> ttrpc::Result<WriteStreamResponse> {
        let len = self
            .0
            .write_stdin(&req.container_id, &req.exec_id, &req.data)
            .await?;
        let mut r = WriteStreamResponse::new();
        r.len = len;
        Ok(r)
    }

    async fn close_stdin(
        &self,
        _ctx: &TtrpcContext,
        req: CloseStdinRequest,
    ) -> ttrpc::Result<Empty> {
        self.0.close_stdin(&req.container_id, &req.exec_id).await?;
        Ok(empty())
    }

    async fn remove_container(
        &self,
        _ctx: &TtrpcContext,
        req: RemoveContainerRequest,
    ) -> ttrpc::Result<Empty> {
        self.0.remove_container(&req.container_id).await?;
        Ok(empty())
    }

    async fn exec_process(
        &self,
        _ctx: &TtrpcContext,
        req: ExecProcessRequest,
    ) -> ttrpc::Result<ExecProcessResponse> {
        let pid = self.0.exec_process(&req).await.map_err(|e| {
            tracing::warn!(
                id = req.container_id,
                exec_id = req.exec_id,
                "ExecProcess: {e}"
            );
            e
        })?;
        let mut r = ExecProcessResponse::new();
        r.pid = pid;
        Ok(r)
    }

    async fn tty_win_resize(
        &self,
        _ctx: &TtrpcContext,
        req: TtyWinResizeRequest,
    ) -> ttrpc::Result<Empty> {
        self.0
            .process(&req.container_id, &req.exec_id)?
            .resize(req.rows, req.columns)?;
        Ok(empty())
    }

    async fn pause_container(
        &self,
        _ctx: &TtrpcContext,
        req: ContainerRequest,
    ) -> ttrpc::Result<Empty> {
        self.0.get(&req.container_id)?.set_frozen(true).await?;
        Ok(empty())
    }

    async fn resume_container(
        &self,
        _ctx: &TtrpcContext,
        req: ContainerRequest,
    ) -> ttrpc::Result<Empty> {
        self.0.get(&req.container_id)?.set_frozen(false).await?;
        Ok(empty())
    }

    async fn update_container(
        &self,
        _ctx: &TtrpcContext,
        req: UpdateContainerRequest,
    ) -> ttrpc::Result<Empty> {
        self.0
            .update_container(&req.container_id, &req.linux_resources)?;
        Ok(empty())
    }

    async fn stats_container(
        &self,
        _ctx: &TtrpcContext,
        req: ContainerRequest,
    ) -> ttrpc::Result<StatsContainerResponse> {
        let c = self.0.get(&req.container_id)?;
        let s = c.cgroup()?.stats();
        let mut r = StatsContainerResponse::new();
        // A stopped container's PID may already belong to someone else: count nothing.
        if c.state() != crate::container::State::Stopped {
            r.network = crate::netstats::of_process(c.pid());
        }
        r.cpu_usage_usec = s.cpu_usage_usec;
        r.cpu_user_usec = s.cpu_user_usec;
        r.cpu_system_usec = s.cpu_system_usec;
        r.cpu_nr_periods = s.cpu_nr_periods;
        r.cpu_nr_throttled = s.cpu_nr_throttled;
        r.cpu_throttled_usec = s.cpu_throttled_usec;
        r.memory_usage_bytes = s.memory_usage_bytes;
        r.memory_limit_bytes = s.memory_limit_bytes;
        r.memory_swap_usage_bytes = s.memory_swap_usage_bytes;
        r.memory_oom_kill_count = s.memory_oom_kill_count;
        r.pids_current = s.pids_current;
        r.pids_limit = s.pids_limit;
        r.io_read_bytes = s.io_read_bytes;
        r.io_write_bytes = s.io_write_bytes;
        r.memory_stat = s.memory_stat;
        Ok(r)
    }

    async fn list_processes(
        &self,
        _ctx: &TtrpcContext,
        req: ContainerRequest,
    ) -> ttrpc::Result<ListProcessesResponse> {
        let mut r = ListProcessesResponse::new();
        r.pids = self.0.get(&req.container_id)?.cgroup()?.pids()?;
        Ok(r)
    }

    async fn get_oom_event(
        &self,
        _ctx: &TtrpcContext,
        _: Empty,
    ) -> ttrpc::Result<OomEventResponse> {
        let mut r = OomEventResponse::new();
        r.container_id = self.0.oom_event().await;
        Ok(r)
    }

    async fn set_guest_date_time(
        &self,
        _ctx: &TtrpcContext,
        req: SetGuestDateTimeRequest,
    ) -> ttrpc::Result<Empty> {
        self.0.set_guest_time(req.sec, req.usec)?;
        tracing::debug!(sec = req.sec, "guest clock set");
        Ok(empty())
    }

    async fn update_interface(
        &self,
        _ctx: &TtrpcContext,
        req: UpdateInterfaceRequest,
    ) -> ttrpc::Result<Interface> {
        Ok(crate::network::update_interface(&req).await?)
    }

    async fn update_routes(
        &self,
        _ctx: &TtrpcContext,
        req: UpdateRoutesRequest,
    ) -> ttrpc::Result<Routes> {
        let routes = req.routes.into_option().unwrap_or_default();
        Ok(crate::network::update_routes(&routes).await?)
    }

    async fn add_arp_neighbors(
        &self,
        _ctx: &TtrpcContext,
        req: AddARPNeighborsRequest,
    ) -> ttrpc::Result<Empty> {
        let n = req.neighbors.into_option().unwrap_or_default();
        crate::network::add_neighbors(&n.neighbors).await?;
        Ok(empty())
    }

    async fn after_restore(
        &self,
        _ctx: &TtrpcContext,
        req: AfterRestoreRequest,
    ) -> ttrpc::Result<AfterRestoreResponse> {
        let probed = self.0.after_restore(req).await.map_err(|e| {
            tracing::warn!("{e}");
            e
        })?;
        tracing::debug!(?probed, "AfterRestore done");
        let mut r = AfterRestoreResponse::new();
        r.probed = probed;
        Ok(r)
    }

    async fn shutdown(&self, _ctx: &TtrpcContext, _: Empty) -> ttrpc::Result<Empty> {
        self.0.kill_all().await;
        let _ = self.0.shutdown.try_send(());
        Ok(empty())
    }
}

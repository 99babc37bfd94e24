//! The ttrpc `AgentService` implementation: request validation and the container table.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use kata_rs_protocol::agent::*;
use kata_rs_protocol::agent_ttrpc::AgentService;
use nix::sys::signal::Signal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use ttrpc::r#async::TtrpcContext;

use crate::container::{self, Container, CreateOptions};
use crate::error::{AgentError, Result};
use crate::reaper::Reaper;
use crate::spec;

/// Largest chunk one ReadStdout/ReadStderr returns.
pub const MAX_READ: usize = 64 * 1024;

/// What Shutdown does once it has replied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownAction {
    /// PID 1 in the guest: sync and reboot(RB_AUTOBOOT), which ends the VM.
    Reboot,
    /// Development mode: exit the process.
    Exit,
}

/// The agent's state, shared by all connections.
pub struct Agent {
    reaper: Arc<Reaper>,
    cgroup_root: Option<PathBuf>,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    creating: Mutex<HashSet<String>>,
    shutdown: tokio::sync::mpsc::Sender<()>,
}

/// Which stream a read is for.
#[derive(Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

impl Agent {
    /// Creates the agent. `shutdown` receives one message when Shutdown was requested.
    pub fn new(
        reaper: Arc<Reaper>,
        cgroup_root: Option<PathBuf>,
        shutdown: tokio::sync::mpsc::Sender<()>,
    ) -> Self {
        Agent {
            reaper,
            cgroup_root,
            containers: Mutex::new(HashMap::new()),
            creating: Mutex::new(HashSet::new()),
            shutdown,
        }
    }

    fn get(&self, id: &str, exec_id: &str) -> Result<Arc<Container>> {
        if !exec_id.is_empty() {
            return Err(AgentError::unimplemented(format!(
                "exec processes are not supported yet (exec_id {exec_id:?}): only the container's init process (empty exec_id) is"
            )));
        }
        spec::validate_id(id)?;
        self.containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| AgentError::not_found(format!("container {id:?} not found")))
    }

    /// CreateContainer.
    pub async fn create_container(&self, req: CreateContainerRequest) -> Result<()> {
        let id = req.container_id.as_str();
        spec::validate_id(id)?;
        let spec = spec::parse_spec(&req.oci_spec)?;
        if req.rootfs_path.is_empty() {
            return Err(AgentError::invalid("rootfs_path is empty"));
        }
        let plan = spec::plan(&spec, Path::new(&req.rootfs_path))?;
        {
            let exists = self
                .containers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(id);
            let mut creating = self.creating.lock().unwrap_or_else(|e| e.into_inner());
            if exists || !creating.insert(id.to_string()) {
                return Err(AgentError::already_exists(format!(
                    "container {id:?} already exists"
                )));
            }
        }
        let res = container::create(
            &self.reaper,
            CreateOptions {
                id,
                plan,
                stdin: req.stdin,
                cgroup_root: self.cgroup_root.as_deref(),
            },
        )
        .await;
        let mut creating = self.creating.lock().unwrap_or_else(|e| e.into_inner());
        creating.remove(id);
        let c = res?;
        tracing::info!(id, pid = c.pid, "container created");
        self.containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), Arc::new(c));
        Ok(())
    }

    /// StartContainer.
    pub async fn start_container(&self, id: &str) -> Result<u32> {
        let c = self.get(id, "")?;
        let pid = c.start().await?;
        tracing::info!(id, pid, "container started");
        Ok(pid as u32)
    }

    /// SignalProcess.
    pub fn signal_process(&self, id: &str, exec_id: &str, signal: u32) -> Result<()> {
        let c = self.get(id, exec_id)?;
        let sig = i32::try_from(signal)
            .ok()
            .and_then(|s| Signal::try_from(s).ok())
            .ok_or_else(|| AgentError::invalid(format!("signal {signal} is not a valid signal")))?;
        c.signal(sig)
    }

    /// WaitProcess.
    pub async fn wait_process(&self, id: &str, exec_id: &str) -> Result<WaitProcessResponse> {
        let c = self.get(id, exec_id)?;
        let e = c.wait().await;
        let mut r = WaitProcessResponse::new();
        r.status = e.status;
        r.exited_at_unix_nanos = e.exited_at_unix_nanos;
        Ok(r)
    }

    async fn read(&self, id: &str, exec_id: &str, len: u32, which: Stream) -> Result<Vec<u8>> {
        let c = self.get(id, exec_id)?;
        let len = match len as usize {
            0 => MAX_READ,
            n => n.min(MAX_READ),
        };
        let mut guard = match which {
            Stream::Stdout => c.stdout.lock().await,
            Stream::Stderr => c.stderr.lock().await,
        };
        let Some(rx) = guard.as_mut() else {
            return Ok(Vec::new());
        };
        let mut buf = vec![0u8; len];
        let n = rx
            .read(&mut buf)
            .await
            .map_err(|e| AgentError::internal(format!("container {id}: read stream: {e}")))?;
        if n == 0 {
            guard.take(); // EOF: close our end, later reads return EOF at once
        }
        buf.truncate(n);
        Ok(buf)
    }

    async fn write_stdin(&self, id: &str, exec_id: &str, data: &[u8]) -> Result<u32> {
        let c = self.get(id, exec_id)?;
        let mut guard = c.stdin.lock().await;
        let tx = guard.as_mut().ok_or_else(|| {
            AgentError::precondition(format!(
                "container {id}: stdin is closed or was not requested (CreateContainerRequest.stdin)"
            ))
        })?;
        tx.write_all(data)
            .await
            .map_err(|e| AgentError::internal(format!("container {id}: write stdin: {e}")))?;
        Ok(data.len() as u32)
    }

    async fn close_stdin(&self, id: &str, exec_id: &str) -> Result<()> {
        let c = self.get(id, exec_id)?;
        c.stdin.lock().await.take();
        Ok(())
    }

    /// RemoveContainer.
    pub async fn remove_container(&self, id: &str) -> Result<()> {
        let c = self.get(id, "")?;
        c.destroy().await?;
        self.containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        tracing::info!(id, "container removed");
        Ok(())
    }

    /// Kills every container process (used by Shutdown).
    pub async fn kill_all(&self) {
        let all: Vec<Arc<Container>> = self
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for c in &all {
            let _ = c.signal(Signal::SIGKILL);
        }
        for c in &all {
            let _ = c.wait_timeout(std::time::Duration::from_secs(5)).await;
        }
    }
}

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

    async fn shutdown(&self, _ctx: &TtrpcContext, _: Empty) -> ttrpc::Result<Empty> {
        self.0.kill_all().await;
        let _ = self.0.shutdown.try_send(());
        Ok(empty())
    }
}

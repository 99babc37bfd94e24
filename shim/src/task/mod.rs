//! The containerd Task service: the `Task` trait adapter (each RPC is one call on
//! [`TaskService`], listed in the table at the end of this file) and the service's state
//! (containers and the sandbox of this shim).
//!
//! What each RPC does lives by concern: [`create`] (checks, configuration, rollback),
//! [`create_steps`] (the order of the steps for a new VM or a pod container, and what undoes
//! each), [`resources`] (the traits those steps use: host, VM, agent) and [`create_host`]
//! (the steps on the real host), [`delete`] (Delete) and [`delete_steps`] (the order of a teardown),
//! [`process`] (start, state, wait, kill, exec, stdin, terminal), [`control`] (pause,
//! resume, update, pids, stats, checkpoint), [`events`] (publishing to containerd), [`exit_report`] (the order of a process's end),
//! [`oom`] (the guest's OOM events), [`detached`] (Create and Delete outlive a dropped
//! request).

mod control;
mod create;
mod create_host;
mod create_steps;
mod delete;
mod delete_steps;
mod detached;
mod events;
mod exit_report;
mod oom;
mod process;
mod resources;

use std::{collections::HashMap, sync::Arc};

use async_trait::async_trait;
use containerd_shim::{
    asynchronous::ExitSignal, publisher::RemotePublisher, TtrpcContext, TtrpcResult,
};
use containerd_shim_protos::{api, shim_async::Task};
use tokio::sync::Mutex;
use tracing::{debug, info};

use crate::{
    container::{Container, Process},
    error::{ShimError, ShimResult},
    sandbox::Sandbox,
};

#[derive(Default)]
struct State {
    containers: HashMap<String, Arc<Container>>,
    /// Running sandboxes (VMs) by sandbox id: at most one per shim (a pod's, or a single
    /// container's).
    sandboxes: HashMap<String, Arc<Sandbox>>,
}

struct Inner {
    namespace: String,
    exit: Arc<ExitSignal>,
    publisher: RemotePublisher,
    state: Mutex<State>,
    /// Held for a whole Create (and a sandbox's Delete): one at a time, while other
    /// requests go on (the state lock is only held briefly).
    create_lock: Mutex<()>,
}

/// The Task service containerd talks to.
#[derive(Clone)]
pub struct TaskService {
    inner: Arc<Inner>,
}

impl TaskService {
    /// A service with no container yet, publishing events for containerd `namespace`
    /// through `publisher`; `exit` ends the shim when its last container is gone.
    pub fn new(namespace: String, exit: Arc<ExitSignal>, publisher: RemotePublisher) -> Self {
        TaskService {
            inner: Arc::new(Inner {
                namespace,
                exit,
                publisher,
                state: Mutex::new(State::default()),
                create_lock: Mutex::new(()),
            }),
        }
    }

    /// Container `id` and its process `exec_id` (`""` = init).
    async fn process(&self, id: &str, exec_id: &str) -> ShimResult<(Arc<Container>, Arc<Process>)> {
        let c = self.container(id).await?;
        let p = c.process(exec_id).ok_or_else(|| {
            ShimError::NotFound(format!("exec {exec_id} of container {id} not found"))
        })?;
        Ok((c, p))
    }

    async fn container(&self, id: &str) -> ShimResult<Arc<Container>> {
        self.inner
            .state
            .lock()
            .await
            .containers
            .get(id)
            .cloned()
            .ok_or_else(|| ShimError::NotFound(format!("container {id} not found")))
    }

    /// Ends the shim when it holds no container any more (after `what`: Shutdown, or a
    /// Create or Delete containerd gave up on, after which no Shutdown comes); otherwise
    /// keeps it running. The caller holds `create_lock`, so no Create can add one meanwhile.
    async fn exit_if_no_containers(&self, what: &str) {
        let left = self.inner.state.lock().await.containers.len();
        if left > 0 {
            debug!("{what}: {left} container(s) left, the shim keeps running");
            return;
        }
        info!("{what}: no containers left, exiting");
        self.inner.exit.signal();
    }

    /// Connect: the shim's pid, the task's (the VMM's) and the shim's version.
    async fn connect_info(&self, req: api::ConnectRequest) -> ShimResult<api::ConnectResponse> {
        let task_pid = match self.inner.state.lock().await.containers.get(&req.id) {
            Some(c) => c.sandbox.vmm.pid(),
            None => 0,
        };
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    /// Shutdown: the shim exits once it holds no container.
    async fn shutdown_if_empty(&self, _req: api::ShutdownRequest) -> ShimResult<api::Empty> {
        // A Create still running (one containerd gave up on finishes or undoes itself first):
        // exiting under it would leave its VM's files behind.
        let _creating = self.inner.create_lock.lock().await;
        self.exit_if_no_containers("Shutdown").await;
        Ok(api::Empty::new())
    }
}

/// Implements `Task` for [`TaskService`] from a table `rpc(Request) -> Response => method;`:
/// each RPC is one call of the method of that name, which gets the request; its
/// [`ShimError`] becomes the ttrpc status containerd sees.
macro_rules! task_rpcs {
    ($($rpc:ident($req:ty) -> $resp:ty => $method:ident;)*) => {
        #[async_trait]
        impl Task for TaskService {
            $(
                async fn $rpc(&self, _ctx: &TtrpcContext, req: $req) -> TtrpcResult<$resp> {
                    self.$method(req).await.map_err(Into::into)
                }
            )*
        }
    };
}

task_rpcs! {
    create(api::CreateTaskRequest) -> api::CreateTaskResponse => create_container;
    start(api::StartRequest) -> api::StartResponse => start_process;
    state(api::StateRequest) -> api::StateResponse => process_state;
    wait(api::WaitRequest) -> api::WaitResponse => wait_process;
    kill(api::KillRequest) -> api::Empty => kill_process;
    delete(api::DeleteRequest) -> api::DeleteResponse => delete_process;
    exec(api::ExecProcessRequest) -> api::Empty => add_exec;
    close_io(api::CloseIORequest) -> api::Empty => close_stdin;
    resize_pty(api::ResizePtyRequest) -> api::Empty => resize_terminal;
    pids(api::PidsRequest) -> api::PidsResponse => list_pids;
    pause(api::PauseRequest) -> api::Empty => pause_container;
    resume(api::ResumeRequest) -> api::Empty => resume_container;
    update(api::UpdateTaskRequest) -> api::Empty => update_resources;
    stats(api::StatsRequest) -> api::StatsResponse => container_stats;
    checkpoint(api::CheckpointTaskRequest) -> api::Empty => checkpoint_unsupported;
    connect(api::ConnectRequest) -> api::ConnectResponse => connect_info;
    shutdown(api::ShutdownRequest) -> api::Empty => shutdown_if_empty;
}

//! A container's processes (init and execs): Start, State, Wait, Kill, Exec, CloseIO,
//! ResizePty; the task that reports a process's exit, and the end of a guest that stopped
//! answering.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use containerd_shim::asynchronous::io::Stdio;
use containerd_shim_protos::{
    api,
    events::task::{TaskExecAdded, TaskExecStarted, TaskStart},
    protobuf::{EnumOrUnknown, MessageField},
};
use tracing::{debug, info, warn};

use super::{
    exit_report::{report_exit, ExitSink, ExitWaiter},
    Inner, TaskService,
};
use crate::{
    container::{Container, Process, Status, MAX_EXECS},
    error::{ShimError, ShimResult},
    sandbox::Sandbox,
    util::{timestamp, validate_id},
};

/// Largest OCI process (Exec) or resources (Update) JSON accepted.
const MAX_ANY_SIZE: usize = 1024 * 1024;

impl TaskService {
    /// Start: the process (init or exec) starts in the guest.
    pub(super) async fn start_process(
        &self,
        req: api::StartRequest,
    ) -> ShimResult<api::StartResponse> {
        info!(id = %req.id, exec = %req.exec_id, "Start");
        let (c, p) = self.process(&req.id, &req.exec_id).await?;
        let pid = self.do_start(c, p).await?;
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    /// State: a process's status, pid, stdio and exit.
    pub(super) async fn process_state(
        &self,
        req: api::StateRequest,
    ) -> ShimResult<api::StateResponse> {
        let (c, p) = self.process(&req.id, &req.exec_id).await?;
        let status = match p.status() {
            Status::Created => api::Status::CREATED,
            Status::Running if c.is_paused() => api::Status::PAUSED,
            Status::Running => api::Status::RUNNING,
            Status::Stopped => api::Status::STOPPED,
        };
        let exit = p.exit();
        let pid = if p.exec_id.is_empty() {
            c.sandbox.vmm.pid()
        } else {
            p.guest_pid.load(std::sync::atomic::Ordering::SeqCst)
        };
        Ok(api::StateResponse {
            id: p.task_id().to_string(),
            bundle: c.bundle.clone(),
            pid,
            status: EnumOrUnknown::new(status),
            stdin: p.stdio.stdin.clone(),
            stdout: p.stdio.stdout.clone(),
            stderr: p.stdio.stderr.clone(),
            terminal: p.stdio.terminal,
            exec_id: p.exec_id.clone(),
            exit_status: exit.map(|e| e.status).unwrap_or(0),
            exited_at: exit.map(|e| timestamp(e.at)).into(),
            ..Default::default()
        })
    }

    /// Wait: until the process has exited.
    pub(super) async fn wait_process(
        &self,
        req: api::WaitRequest,
    ) -> ShimResult<api::WaitResponse> {
        debug!(id = %req.id, exec = %req.exec_id, "Wait");
        let (_, p) = self.process(&req.id, &req.exec_id).await?;
        let e = p.wait().await;
        Ok(api::WaitResponse {
            exit_status: e.status,
            exited_at: MessageField::some(timestamp(e.at)),
            ..Default::default()
        })
    }

    /// Kill: signals a process, or with `all` every process of the container.
    pub(super) async fn kill_process(&self, req: api::KillRequest) -> ShimResult<api::Empty> {
        info!(id = %req.id, exec = %req.exec_id, signal = req.signal, all = req.all, "Kill");
        let (c, p) = self.process(&req.id, &req.exec_id).await?;
        if req.all && p.exec_id.is_empty() {
            // Every process of the container: its exec'd processes, then init (whose end
            // takes the rest of the container's PID namespace with it).
            for e in c.running_execs() {
                if let Err(err) = self.signal(&c, &e, req.signal).await {
                    debug!(id = %c.id, exec = %e.exec_id, "kill --all: {}", err);
                }
            }
        }
        self.signal(&c, &p, req.signal).await?;
        Ok(api::Empty::new())
    }

    /// Exec: records an exec process (it runs at its Start).
    pub(super) async fn add_exec(&self, req: api::ExecProcessRequest) -> ShimResult<api::Empty> {
        info!(id = %req.id, exec = %req.exec_id, "Exec");
        validate_id(&req.exec_id).map_err(|e| ShimError::Invalid(format!("exec id: {e}")))?;
        let c = self.container(&req.id).await?;
        if c.init.status() != Status::Running || c.sandbox.vmm.exited().is_some() {
            return Err(ShimError::Precondition(format!(
                "container {} is not running",
                c.id
            )));
        }
        let (process, json): (oci_spec::runtime::Process, Vec<u8>) =
            any_json(req.spec.as_ref(), "the exec process spec")?;
        if process.args().as_ref().is_none_or(|a| a.is_empty()) {
            return Err(ShimError::Invalid(
                "the exec process spec has no args".into(),
            ));
        }
        let terminal = req.terminal || process.terminal().unwrap_or(false);
        let p = Arc::new(Process::new(
            c.id.clone(),
            req.exec_id.clone(),
            Stdio::new(&req.stdin, &req.stdout, &req.stderr, terminal),
            json,
            c.sandbox.clone(),
        ));
        {
            let mut execs = c.execs_lock();
            if execs.contains_key(&req.exec_id) {
                return Err(ShimError::Exists(format!(
                    "exec {} already exists",
                    req.exec_id
                )));
            }
            if execs.len() >= MAX_EXECS {
                return Err(ShimError::Limit(format!(
                    "container {} has {MAX_EXECS} exec processes",
                    c.id
                )));
            }
            execs.insert(req.exec_id.clone(), p);
        }
        self.inner
            .publish(Box::new(TaskExecAdded {
                container_id: c.id.clone(),
                exec_id: req.exec_id.clone(),
                ..Default::default()
            }))
            .await;
        Ok(api::Empty::new())
    }

    /// CloseIO: closes the process's stdin.
    pub(super) async fn close_stdin(&self, req: api::CloseIORequest) -> ShimResult<api::Empty> {
        let (_, p) = self.process(&req.id, &req.exec_id).await?;
        if req.stdin {
            p.close_stdin();
        }
        Ok(api::Empty::new())
    }

    /// ResizePty: the process's terminal size.
    pub(super) async fn resize_terminal(
        &self,
        req: api::ResizePtyRequest,
    ) -> ShimResult<api::Empty> {
        debug!(id = %req.id, exec = %req.exec_id, req.width, req.height, "ResizePty");
        let (c, p) = self.process(&req.id, &req.exec_id).await?;
        if !p.stdio.terminal {
            return Err(ShimError::Precondition(format!(
                "process {} has no terminal",
                p.task_id()
            )));
        }
        if p.status() != Status::Running {
            // containerd resizes right after Start; before it, there is no tty yet.
            return Ok(api::Empty::new());
        }
        c.sandbox
            .agent
            .tty_win_resize(&c.id, &p.exec_id, req.height, req.width)
            .await
            .map_err(ShimError::agent("resize the terminal"))?;
        Ok(api::Empty::new())
    }

    /// Starts process `p` of container `c` (init: StartContainer; exec: ExecProcess) and
    /// the task that reports its exit. Returns the pid containerd gets: the VMM's for the
    /// init process (the host process that holds the container), the guest pid for an exec.
    async fn do_start(&self, c: Arc<Container>, p: Arc<Process>) -> ShimResult<u32> {
        match p.status() {
            Status::Created => {}
            s => {
                return Err(ShimError::Precondition(format!(
                    "process {} of container {} is {s:?}, not created",
                    p.task_id(),
                    c.id
                )))
            }
        }
        let is_init = p.exec_id.is_empty();
        if !is_init && c.init.status() != Status::Running {
            return Err(ShimError::Precondition(format!(
                "container {} is not running",
                c.id
            )));
        }
        let guest_pid = if is_init {
            c.sandbox
                .agent
                .start_container(&c.id)
                .await
                .map_err(ShimError::agent("start the container"))?
        } else {
            c.sandbox
                .agent
                .exec_process(
                    &c.id,
                    &p.exec_id,
                    p.spec.clone(),
                    !p.stdio.stdin.is_empty(),
                    p.stdio.terminal,
                )
                .await
                .map_err(ShimError::agent("exec the process"))?
        };
        p.guest_pid
            .store(guest_pid, std::sync::atomic::Ordering::SeqCst);
        p.set_status(Status::Running);
        let pid = if is_init {
            c.sandbox.vmm.pid()
        } else {
            guest_pid
        };
        if is_init {
            self.inner
                .publish(Box::new(TaskStart {
                    container_id: c.id.clone(),
                    pid,
                    ..Default::default()
                }))
                .await;
        } else {
            self.inner
                .publish(Box::new(TaskExecStarted {
                    container_id: c.id.clone(),
                    exec_id: p.exec_id.clone(),
                    pid,
                    ..Default::default()
                }))
                .await;
        }
        let pumps = p.start_io();
        let inner = self.inner.clone();
        let drain = c.sandbox.config().io_drain_timeout();
        tokio::spawn(async move {
            let (status, oom_killed) = p.wait_process(pumps, drain).await;
            if oom_killed {
                info!(id = %c.id, "OOM kill in the container (reported with its exit)");
            }
            let sink = ProcessExit {
                inner: &inner,
                c: &c,
                p: &p,
                pid,
            };
            report_exit(&sink, status, oom_killed, is_init, drain).await;
            info!(id = %c.id, exec = %p.exec_id, "process exited with status {}", p.exit().map_or(status, |e| e.status));
        });
        Ok(pid)
    }

    /// Signals one process; a process never started is reported exited with 128+signal.
    async fn signal(&self, c: &Arc<Container>, p: &Arc<Process>, signal: u32) -> ShimResult<()> {
        if p.status() == Status::Stopped || c.sandbox.vmm.exited().is_some() {
            return Err(ShimError::NotFound("process already finished".into()));
        }
        if p.status() == Status::Created {
            // Never started: there is no WaitProcess to report the end; report it here.
            if p.exec_id.is_empty() {
                if let Err(e) = c.sandbox.agent.signal_process(&c.id, "", signal).await {
                    debug!(id = %c.id, "SignalProcess on a created container: {e}");
                }
            }
            let status = 128 + signal.min(127);
            let pid = if p.exec_id.is_empty() {
                c.sandbox.vmm.pid()
            } else {
                0
            };
            self.inner.publish_exit(&c.id, p, pid, status).await;
            p.set_exited(status);
            return Ok(());
        }
        match c
            .sandbox
            .agent
            .signal_process(&c.id, &p.exec_id, signal)
            .await
        {
            Ok(()) => {
                p.note_signalled();
                Ok(())
            }
            Err(e) if e.is_not_found() => {
                Err(ShimError::NotFound("process already finished".into()))
            }
            Err(e) if p.exec_id.is_empty() && signal == libc::SIGKILL as u32 && e.guest_lost() => {
                // SIGKILL must end the container even when its guest no longer answers
                // (`ctr task rm -f`, the kubelet killing a hung pod): the guest is lost, so
                // its VM goes, and every container in it is reported exited (137) as when
                // the VMM dies. Delete then works as after any VMM exit.
                warn!(id = %c.id, "SIGKILL: {e}; the guest does not answer: killing its VM");
                tokio::spawn(end_lost_guest(c.sandbox.clone()));
                Ok(())
            }
            Err(e) => Err(ShimError::agent("signal the process")(e)),
        }
    }
}

/// Ends the VM of a guest that stopped answering, first finding out what part stopped: a
/// fresh connection's Check tells an agent that still serves (then the old connection's
/// path was stuck) from one that does not, and SIGTERM lets kata-vmm report its vsock
/// connections (to the shim's log) before SIGKILL follows.
async fn end_lost_guest(sandbox: Arc<Sandbox>) {
    const PROBE: Duration = Duration::from_secs(3);
    let probe = async { sandbox.fresh_agent(PROBE, PROBE).await?.check().await };
    match probe.await {
        Ok(_) => warn!(
            sandbox = %sandbox.id,
            "lost guest: a new connection's Check is answered (the agent serves; the old connection was stuck)"
        ),
        Err(e) => warn!(sandbox = %sandbox.id, "lost guest: a new connection fails too: {e}"),
    }
    let exit = sandbox.vmm.terminate(Duration::from_secs(2)).await;
    let tail = crate::util::file_tail(&sandbox.paths.console_log, 15);
    warn!(sandbox = %sandbox.id, "lost guest: VMM {exit}; last lines of the guest console:\n{tail}");
}

/// The JSON value of a protobuf `Any` (containerd packs Go structs such as the OCI
/// `Process` and `LinuxResources` as JSON), bounded and checked to parse as `T`.
pub(super) fn any_json<T: serde::de::DeserializeOwned>(
    any: Option<&containerd_shim_protos::protobuf::well_known_types::any::Any>,
    what: &str,
) -> ShimResult<(T, Vec<u8>)> {
    let any = any.ok_or_else(|| ShimError::Invalid(format!("{what} is missing")))?;
    if any.value.len() > MAX_ANY_SIZE {
        return Err(ShimError::Invalid(format!(
            "{what} is larger than {MAX_ANY_SIZE} bytes"
        )));
    }
    let v = serde_json::from_slice(&any.value).map_err(|e| {
        ShimError::Invalid(format!(
            "{what} ({}) is not valid JSON of the expected type: {e}",
            any.type_url
        ))
    })?;
    Ok((v, any.value.clone()))
}

/// The real sink of a process's exit report: containerd's events and the process's state.
struct ProcessExit<'a> {
    inner: &'a Inner,
    c: &'a Arc<Container>,
    p: &'a Arc<Process>,
    pid: u32,
}

#[async_trait]
impl ExitSink for ProcessExit<'_> {
    fn container_id(&self) -> &str {
        &self.c.id
    }

    async fn publish_oom(&self) {
        self.inner.publish_oom(&self.c.id).await;
    }

    fn running_execs(&self) -> Vec<(String, ExitWaiter)> {
        self.c
            .running_execs()
            .into_iter()
            .map(|e| {
                let id = e.exec_id.clone();
                let waiter: ExitWaiter = Box::pin(async move {
                    e.wait().await;
                });
                (id, waiter)
            })
            .collect()
    }

    async fn publish_exit(&self, status: u32) {
        self.inner
            .publish_exit(&self.c.id, self.p, self.pid, status)
            .await;
    }

    fn set_exited(&self, status: u32) {
        self.p.set_exited(status);
    }
}

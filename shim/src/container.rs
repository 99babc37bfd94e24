//! A container in a sandbox and its processes (init and exec'd): status, exit, and the
//! copies of their stdio between containerd's FIFOs and the agent.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU32, Ordering},
        Arc, Mutex,
    },
    time::{Duration, SystemTime},
};

use containerd_shim::asynchronous::io::{IoTasks, Stdio};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, DuplexStream},
    sync::watch,
    task::JoinHandle,
};
use tracing::{debug, info, warn};

use crate::{agent::Agent, exit_watch, sandbox::Sandbox};

/// Buffer between an agent stream and a FIFO copy.
const PIPE_BUF: usize = 64 * 1024;

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// CreateContainer done, not started.
    Created,
    /// Started, not yet exited.
    Running,
    /// Exited (or killed/deleted before it started).
    Stopped,
}

/// How and when the container's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    /// Exit status (128+signal for a signalled process).
    pub status: u32,
    /// When the shim learned of it (host clock).
    pub at: SystemTime,
}

/// One container: its init process, its exec'd processes, whether it is paused.
pub struct Container {
    /// Container id (also the task id).
    pub id: String,
    /// Its bundle directory.
    pub bundle: String,
    /// `<bundle>/rootfs` when the shim mounted containerd's rootfs mounts there (to unmount
    /// at Delete).
    pub mounted_rootfs: Option<PathBuf>,
    /// The sandbox it runs in.
    pub sandbox: Arc<Sandbox>,
    /// The init process.
    pub init: Arc<Process>,
    /// Exec'd processes by exec id.
    pub execs: Mutex<HashMap<String, Arc<Process>>>,
    /// Paused (PauseContainer done, no ResumeContainer since).
    pub paused: AtomicBool,
    /// Its place in a pod: a single container or a pod's sandbox container own the VM
    /// (their Delete stops it); a pod's other containers only live in it.
    pub role: crate::pod::PodRole,
}

/// Most exec processes a container may have at once.
pub const MAX_EXECS: usize = 1024;

impl Container {
    /// A created container.
    pub fn new(
        id: String,
        bundle: String,
        stdio: Stdio,
        mounted_rootfs: Option<PathBuf>,
        sandbox: Arc<Sandbox>,
        role: crate::pod::PodRole,
    ) -> Self {
        let init = Arc::new(Process::new(
            id.clone(),
            String::new(),
            stdio,
            Vec::new(),
            sandbox.clone(),
        ));
        Self {
            id,
            bundle,
            mounted_rootfs,
            sandbox,
            init,
            execs: Mutex::new(HashMap::new()),
            paused: AtomicBool::new(false),
            role,
        }
    }

    /// The process `exec_id` (`""` = init).
    pub fn process(&self, exec_id: &str) -> Option<Arc<Process>> {
        if exec_id.is_empty() {
            return Some(self.init.clone());
        }
        self.execs_lock().get(exec_id).cloned()
    }

    /// The exec map, locked.
    pub fn execs_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Process>>> {
        self.execs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Exec processes that are started and not yet exited.
    pub fn running_execs(&self) -> Vec<Arc<Process>> {
        self.execs_lock()
            .values()
            .filter(|p| p.status() == Status::Running)
            .cloned()
            .collect()
    }

    /// Whether this container owns its VM (a single container, or a pod's sandbox
    /// container): its Delete stops the VM.
    pub fn owns_vm(&self) -> bool {
        !matches!(self.role, crate::pod::PodRole::Container { .. })
    }

    /// Whether paused.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }
}

/// A process of a container: its init process (exec id `""`) or an exec'd one.
pub struct Process {
    /// Container id.
    pub id: String,
    /// Exec id; empty for the container's init process.
    pub exec_id: String,
    /// containerd's FIFOs.
    pub stdio: Stdio,
    /// The OCI `process` object as JSON (exec processes; empty for init).
    pub spec: Vec<u8>,
    /// The sandbox it runs in.
    pub sandbox: Arc<Sandbox>,
    /// Its pid in the guest (0 until started).
    pub guest_pid: AtomicU32,
    status: Mutex<Status>,
    exit_tx: watch::Sender<Option<ExitInfo>>,
    /// Notified after each signal sent to the process (see [`crate::exit_watch`]).
    signalled: tokio::sync::Notify,
    io: IoTasks,
}

impl Process {
    /// A created (not started) process.
    pub fn new(
        id: String,
        exec_id: String,
        stdio: Stdio,
        spec: Vec<u8>,
        sandbox: Arc<Sandbox>,
    ) -> Self {
        Self {
            id,
            exec_id,
            stdio,
            spec,
            sandbox,
            guest_pid: AtomicU32::new(0),
            status: Mutex::new(Status::Created),
            exit_tx: watch::channel(None).0,
            signalled: tokio::sync::Notify::new(),
            io: IoTasks::default(),
        }
    }

    /// The task id containerd knows it by: the exec id, or the container id for init.
    pub fn task_id(&self) -> &str {
        if self.exec_id.is_empty() {
            &self.id
        } else {
            &self.exec_id
        }
    }

    /// Current status.
    pub fn status(&self) -> Status {
        *self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the status; returns the old one.
    pub fn set_status(&self, s: Status) -> Status {
        std::mem::replace(
            &mut *self.status.lock().unwrap_or_else(|p| p.into_inner()),
            s,
        )
    }

    /// The exit, once known.
    pub fn exit(&self) -> Option<ExitInfo> {
        *self.exit_tx.borrow()
    }

    /// Records the exit (only the first one counts), marks the container stopped and wakes
    /// every [`Process::wait`]. Returns the exit that counts.
    pub fn set_exited(&self, status: u32) -> ExitInfo {
        self.set_status(Status::Stopped);
        let mut out = None;
        self.exit_tx.send_if_modified(|e| match e {
            Some(old) => {
                out = Some(*old);
                false
            }
            None => {
                let info = ExitInfo {
                    status,
                    at: SystemTime::now(),
                };
                *e = Some(info);
                out = Some(info);
                true
            }
        });
        out.unwrap_or(ExitInfo {
            status,
            at: SystemTime::now(),
        })
    }

    /// Waits for the exit.
    pub async fn wait(&self) -> ExitInfo {
        let mut rx = self.exit_tx.subscribe();
        loop {
            if let Some(e) = *rx.borrow_and_update() {
                return e;
            }
            if rx.changed().await.is_err() {
                // Unreachable while self holds the sender.
                return ExitInfo {
                    status: 255,
                    at: SystemTime::now(),
                };
            }
        }
    }

    /// Starts copying stdio: stdout/stderr from the agent to the FIFOs (always read, even
    /// without a FIFO, so the process never blocks on a full pipe), stdin from its FIFO to
    /// the agent. Returns the output pumps, which end at end of stream or when the VM dies.
    pub fn start_io(self: &Arc<Self>) -> Vec<JoinHandle<()>> {
        let mut pumps = Vec::new();
        let mut streams = vec![(self.stdio.stdout.clone(), false)];
        // On a terminal, stdout carries everything.
        if !self.stdio.terminal {
            streams.push((self.stdio.stderr.clone(), true));
        }
        for (path, stderr) in streams {
            let sink = if path.is_empty() {
                None
            } else {
                let (w, r) = tokio::io::duplex(PIPE_BUF);
                match self.io.copy_to_fifo(r, &path) {
                    Ok(()) => Some(w),
                    Err(e) => {
                        warn!(id = %self.id, "cannot open {path}: {e}; discarding output");
                        None
                    }
                }
            };
            let c = self.clone();
            pumps.push(tokio::spawn(
                async move { c.pump_output(stderr, sink).await },
            ));
        }
        if !self.stdio.stdin.is_empty() {
            let (w, r) = tokio::io::duplex(PIPE_BUF);
            match self.io.copy_from_fifo(&self.stdio.stdin, w) {
                Ok(()) => {
                    let c = self.clone();
                    tokio::spawn(async move { c.pump_input(r).await });
                }
                Err(e) => warn!(id = %self.id, "cannot open stdin {}: {e}", self.stdio.stdin),
            }
        }
        pumps
    }

    async fn pump_output(&self, stderr: bool, mut sink: Option<DuplexStream>) {
        let agent: &Agent = &self.sandbox.agent;
        let name = if stderr { "stderr" } else { "stdout" };
        loop {
            let r = tokio::select! {
                r = agent.read_stream(&self.id, &self.exec_id, stderr) => r,
                e = self.sandbox.vmm.wait() => {
                    debug!(id = %self.id, "{name} copy ends: VMM {e}");
                    break;
                }
            };
            match r {
                Ok(d) if d.is_empty() => break,
                Ok(d) => {
                    if let Some(s) = sink.as_mut() {
                        if s.write_all(&d).await.is_err() {
                            debug!(id = %self.id, "{name} FIFO copy is gone; discarding output");
                            sink = None;
                        }
                    }
                }
                Err(e) => {
                    info!(id = %self.id, "{name} copy ends: {e}");
                    break;
                }
            }
        }
        if let Some(mut s) = sink {
            let _ = s.shutdown().await;
        }
    }

    async fn pump_input(&self, mut from: DuplexStream) {
        let agent: &Agent = &self.sandbox.agent;
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = tokio::select! {
                r = from.read(&mut buf) => r.unwrap_or(0),
                _ = self.sandbox.vmm.wait() => return,
            };
            if self.status() == Status::Stopped {
                return;
            }
            if n == 0 {
                if let Err(e) = agent.close_stdin(&self.id, &self.exec_id).await {
                    debug!(id = %self.id, "CloseStdin: {e}");
                }
                return;
            }
            if let Err(e) = agent.write_stdin(&self.id, &self.exec_id, &buf[..n]).await {
                info!(id = %self.id, "stdin copy ends: {e}");
                return;
            }
        }
    }

    /// Records that a signal was sent to the process: its exit is looked for again on a
    /// fresh connection should the wait's reply not come ([`crate::exit_watch`]).
    pub fn note_signalled(&self) {
        self.signalled.notify_one();
    }

    /// A bounded `WaitProcess` on a new agent connection: the exit if the agent has it.
    async fn wait_on_fresh_connection(&self) -> Option<(u32, bool)> {
        const T: Duration = Duration::from_secs(2);
        let r = async {
            self.sandbox
                .fresh_agent(T, T)
                .await?
                .wait_process_bounded(&self.id, &self.exec_id)
                .await
        };
        match r.await {
            Ok(found) => found,
            Err(e) => {
                debug!(id = %self.id, exec = %self.exec_id, "second look for the exit: {e}");
                None
            }
        }
    }

    /// Lets go of the shim's hold on the stdin FIFO (CloseIO).
    pub fn close_stdin(&self) {
        self.io.close_input();
    }

    /// Waits for the process to end (WaitProcess, or the VM dying), then for
    /// the output pumps (at most `drain`). Returns the exit status and whether an OOM kill
    /// the agent had not reported yet goes with it.
    pub async fn wait_process(&self, pumps: Vec<JoinHandle<()>>, drain: Duration) -> (u32, bool) {
        let agent = &self.sandbox.agent;
        let first = exit_watch::wait_with_recheck(
            agent.wait_process(&self.id, &self.exec_id),
            &self.signalled,
            &exit_watch::RECHECK_DELAYS,
            || async { self.wait_on_fresh_connection().await.map(Ok) },
        );
        let (status, oom_killed) = tokio::select! {
            r = first => match r {
                exit_watch::Found::Reply(Ok(s)) => s,
                exit_watch::Found::Recheck(Ok(s)) => {
                    warn!(
                        id = %self.id, exec = %self.exec_id,
                        "the exit (status {}) came through a second look after a signal: the WaitProcess reply on the sandbox's agent connection never arrived",
                        s.0
                    );
                    s
                }
                exit_watch::Found::Reply(Err(e)) | exit_watch::Found::Recheck(Err(e)) => {
                    warn!(id = %self.id, "WaitProcess failed: {e}");
                    // A broken connection usually means the VM is going away.
                    match tokio::time::timeout(Duration::from_secs(2), self.sandbox.vmm.wait()).await {
                        Ok(exit) => (exit.container_exit_status(), false),
                        Err(_) => (255, false),
                    }
                }
            },
            e = self.sandbox.vmm.wait() => {
                warn!(id = %self.id, "VMM {e} while the container was running");
                (e.container_exit_status(), false)
            }
        };
        let aborts: Vec<_> = pumps.iter().map(|p| p.abort_handle()).collect();
        if tokio::time::timeout(drain, futures_join_all(pumps))
            .await
            .is_err()
        {
            warn!(id = %self.id, "output not at its end {drain:?} after the exit; cutting it off");
            for a in aborts {
                a.abort();
            }
        }
        (status, oom_killed)
    }

    /// Cancels the stdio copies (after letting output drain briefly).
    pub async fn shutdown_io(&self) {
        self.io.shutdown().await;
    }
}

async fn futures_join_all(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}

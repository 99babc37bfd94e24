//! A container in a sandbox: its status, its exit, and the copies of its stdio between
//! containerd's FIFOs and the agent.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use containerd_shim::asynchronous::io::{IoTasks, Stdio};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, DuplexStream},
    sync::watch,
    task::JoinHandle,
};
use tracing::{debug, info, warn};

use crate::{agent::Agent, sandbox::Sandbox};

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

/// One container.
pub struct Container {
    /// Container id (also the task id).
    pub id: String,
    /// Its bundle directory.
    pub bundle: String,
    /// containerd's FIFOs.
    pub stdio: Stdio,
    /// `<bundle>/rootfs` when the shim mounted containerd's rootfs mounts there (to unmount
    /// at Delete).
    pub mounted_rootfs: Option<PathBuf>,
    /// The sandbox it runs in.
    pub sandbox: Arc<Sandbox>,
    status: Mutex<Status>,
    exit_tx: watch::Sender<Option<ExitInfo>>,
    io: IoTasks,
}

impl Container {
    /// A created container.
    pub fn new(
        id: String,
        bundle: String,
        stdio: Stdio,
        mounted_rootfs: Option<PathBuf>,
        sandbox: Arc<Sandbox>,
    ) -> Self {
        Self {
            id,
            bundle,
            stdio,
            mounted_rootfs,
            sandbox,
            status: Mutex::new(Status::Created),
            exit_tx: watch::channel(None).0,
            io: IoTasks::default(),
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
    /// every [`Container::wait`]. Returns the exit that counts.
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
        for (path, stderr) in [
            (self.stdio.stdout.clone(), false),
            (self.stdio.stderr.clone(), true),
        ] {
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
                r = agent.read_stream(&self.id, stderr) => r,
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
                if let Err(e) = agent.close_stdin(&self.id).await {
                    debug!(id = %self.id, "CloseStdin: {e}");
                }
                return;
            }
            if let Err(e) = agent.write_stdin(&self.id, &buf[..n]).await {
                info!(id = %self.id, "stdin copy ends: {e}");
                return;
            }
        }
    }

    /// Lets go of the shim's hold on the stdin FIFO (CloseIO).
    pub fn close_stdin(&self) {
        self.io.close_input();
    }

    /// Waits for the container's process to end (WaitProcess, or the VM dying), then for
    /// the output pumps (at most `drain`). Returns the exit status.
    pub async fn wait_process(&self, pumps: Vec<JoinHandle<()>>, drain: Duration) -> u32 {
        let agent = &self.sandbox.agent;
        let status = tokio::select! {
            r = agent.wait_process(&self.id, "") => match r {
                Ok(s) => s,
                Err(e) => {
                    warn!(id = %self.id, "WaitProcess failed: {e}");
                    // A broken connection usually means the VM is going away.
                    match tokio::time::timeout(Duration::from_secs(2), self.sandbox.vmm.wait()).await {
                        Ok(exit) => exit.container_exit_status(),
                        Err(_) => 255,
                    }
                }
            },
            e = self.sandbox.vmm.wait() => {
                warn!(id = %self.id, "VMM {e} while the container was running");
                e.container_exit_status()
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
        status
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

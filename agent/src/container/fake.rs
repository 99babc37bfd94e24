//! A fake [`ContainerSys`] for the model's tests: it records every call, hands out pids,
//! plays the reaper (a SIGKILL'ed process exits with 137) and fails on request.

use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use nix::sys::signal::Signal;
use tokio::sync::{watch, Semaphore};

use super::sys::{ContainerSys, ExecRequest};
use crate::cgroup::Cgroup;
use crate::error::{AgentError, Result};
use crate::plan::ProcessConfig;
use crate::reaper::ExitInfo;
use crate::spawn::{Started, Stdio};

/// What the fake saw and what it is told to do.
#[derive(Default)]
pub(crate) struct State {
    /// Every call, in order, as text.
    pub calls: Vec<String>,
    /// The processes the model asked to exec, in order.
    pub execs: Vec<(String, ProcessConfig)>,
    /// The next kill fails with this.
    pub fail_kill: Option<nix::Error>,
    /// The next release fails with this.
    pub fail_release: Option<AgentError>,
    /// The next exec fails with this.
    pub fail_exec: Option<AgentError>,
    /// The next cgroup removal fails with this.
    pub fail_remove: Option<AgentError>,
    /// When set, exec waits for a permit (to hold one exec in flight).
    pub exec_gate: Option<Arc<Semaphore>>,
    exits: HashMap<i32, watch::Sender<Option<ExitInfo>>>,
    next_pid: i32,
}

/// The fake; clones share their state.
#[derive(Clone, Default)]
pub(crate) struct FakeSys(pub Arc<Mutex<State>>);

impl FakeSys {
    /// Its state, locked.
    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }

    /// The calls so far.
    pub fn calls(&self) -> Vec<String> {
        self.state().calls.clone()
    }

    /// A new process (pid 100, 101, ...) with a stdin pipe, running.
    pub fn started(&self) -> Started {
        let mut s = self.state();
        let pid = 100 + s.next_pid;
        s.next_pid += 1;
        let (tx, exit) = watch::channel(None);
        s.exits.insert(pid, tx);
        Started {
            pid,
            stdio: Stdio {
                stdin: Some(Box::new(tokio::io::sink())),
                stdout: None,
                stderr: None,
            },
            pty: None,
            exit,
        }
    }

    /// The reaper saw `pid` exit with `status`.
    pub fn exit(&self, pid: i32, status: i32) {
        if let Some(tx) = self.state().exits.get(&pid) {
            tx.send_replace(Some(ExitInfo {
                status,
                exited_at_unix_nanos: 1,
            }));
        }
    }

    fn record(&self, call: String) {
        self.state().calls.push(call);
    }
}

#[async_trait]
impl ContainerSys for FakeSys {
    fn kill(&self, pid: i32, sig: Signal) -> nix::Result<()> {
        self.record(format!("kill {pid} {sig}"));
        if let Some(e) = self.state().fail_kill.take() {
            return Err(e);
        }
        if sig == Signal::SIGKILL {
            self.exit(pid, 128 + libc::SIGKILL);
        }
        Ok(())
    }

    async fn release(&self, id: &str, sync: UnixStream) -> Result<()> {
        self.record(format!("release {id}"));
        drop(sync);
        self.state().fail_release.take().map_or(Ok(()), Err)
    }

    async fn exec(&self, req: ExecRequest<'_>) -> Result<Started> {
        self.record(format!(
            "exec {} {} in {} cgroup {}",
            req.id,
            req.exec_id,
            req.target_pid,
            req.cgroup.is_some()
        ));
        self.state()
            .execs
            .push((req.exec_id.to_string(), req.process.clone()));
        let gate = self.state().exec_gate.clone();
        if let Some(gate) = gate {
            let _permit = gate.acquire().await.expect("gate open");
        }
        if let Some(e) = self.state().fail_exec.take() {
            return Err(e);
        }
        Ok(self.started())
    }

    async fn freeze(&self, cgroup: &Cgroup, frozen: bool) -> Result<()> {
        self.record(format!("freeze {} {frozen}", cgroup.path().display()));
        Ok(())
    }

    async fn remove_cgroup(&self, cgroup: &Cgroup) -> Result<()> {
        self.record(format!("remove {}", cgroup.path().display()));
        self.state().fail_remove.take().map_or(Ok(()), Err)
    }
}

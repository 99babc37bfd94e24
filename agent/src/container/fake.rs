//! A fake [`ContainerSys`] for the model's tests: it records every call, hands out pids,
//! plays the reaper (a SIGKILL'ed or aborted process exits with 137), keeps the cgroups it
//! "created" (so a test sees what is left) and fails on request.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use nix::sys::signal::Signal;
use tokio::sync::{watch, Semaphore};

use super::sys::{ContainerSys, ExecRequest};
use crate::cgroup::Cgroup;
use crate::devices::BpfInsn;
use crate::error::{AgentError, Result};
use crate::plan::ProcessConfig;
use crate::reaper::ExitInfo;
use crate::spawn::{SpawnArgs, Started, Stdio};

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
    /// The next namespace open fails with this.
    pub fail_open_ns: Option<io::Error>,
    /// What `is_dir` answers for the root file system (default: a directory).
    pub rootfs: Option<io::Result<bool>>,
    /// The next cgroup creation fails with this.
    pub fail_create_cgroup: Option<AgentError>,
    /// The next spawn fails with this (the real spawn has killed and reaped its helper).
    pub fail_spawn: Option<AgentError>,
    /// The next device program attach fails with this.
    pub fail_attach: Option<String>,
    /// The cgroups created and not removed.
    pub cgroups: BTreeSet<PathBuf>,
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

    /// Whether `pid` exited (as the reaper saw it).
    pub fn exited(&self, pid: i32) -> bool {
        self.state()
            .exits
            .get(&pid)
            .is_some_and(|tx| tx.borrow().is_some())
    }

    fn record(&self, call: String) {
        self.state().calls.push(call);
    }
}

#[async_trait]
impl ContainerSys for FakeSys {
    fn open_ns(&self, path: &Path) -> io::Result<fs::File> {
        self.record(format!("open {}", path.display()));
        match self.state().fail_open_ns.take() {
            Some(e) => Err(e),
            None => fs::File::open("/dev/null"),
        }
    }

    fn is_dir(&self, path: &Path) -> io::Result<bool> {
        self.record(format!("is_dir {}", path.display()));
        self.state().rootfs.take().unwrap_or(Ok(true))
    }

    fn create_cgroup(&self, root: &Path, id: &str, writes: &[(String, String)]) -> Result<Cgroup> {
        let path = root.join("kata-rs").join(id);
        self.record(format!("create {} {writes:?}", path.display()));
        if let Some(e) = self.state().fail_create_cgroup.take() {
            return Err(e);
        }
        self.state().cgroups.insert(path.clone());
        Ok(Cgroup::at(path))
    }

    async fn spawn(&self, a: SpawnArgs<'_>) -> Result<(Started, UnixStream)> {
        self.record(format!(
            "spawn {} {:?} {} flags {:#x} pidns {} cgroup {}",
            a.id,
            a.exec_id,
            a.mode,
            a.clone_flags,
            a.pidns.is_some(),
            a.cgroup
                .map_or("-".into(), |c| c.path().display().to_string()),
        ));
        if let Some(e) = self.state().fail_spawn.take() {
            return Err(e);
        }
        let (ours, _theirs) = UnixStream::pair().expect("socketpair");
        Ok((self.started(), ours))
    }

    fn attach_devices(&self, prog: &[BpfInsn], cgroup: &Cgroup) -> std::result::Result<(), String> {
        self.record(format!(
            "attach {} insns to {}",
            prog.len(),
            cgroup.path().display()
        ));
        self.state().fail_attach.take().map_or(Ok(()), Err)
    }

    async fn abort(&self, pid: i32, _exit: &watch::Receiver<Option<ExitInfo>>) {
        self.record(format!("abort {pid}"));
        self.exit(pid, 128 + libc::SIGKILL);
    }

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
        if let Some(e) = self.state().fail_remove.take() {
            return Err(e);
        }
        self.state().cgroups.remove(cgroup.path());
        Ok(())
    }
}

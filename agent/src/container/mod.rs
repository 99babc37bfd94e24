//! The container model on the agent side: a container's state (created, running, stopped,
//! paused), its init and exec'd processes, start, exec, pause and teardown. Creating one is
//! [`create()`]; the system calls the model makes go through [`ContainerSys`] ([`sys`]), so
//! the rules here are unit-tested with a fake; starting processes is [`crate::spawn`]'s.

pub mod create;
pub mod process;
pub mod sys;

use std::collections::{HashMap, HashSet};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use nix::sys::signal::Signal;

use crate::cgroup::Cgroup;
use crate::error::{AgentError, Result};
use crate::plan::ProcessConfig;
use crate::spawn::KILL_TIMEOUT;

pub use create::{create, CreateOptions};
pub use process::Process;
pub use sys::{ContainerSys, ExecRequest, RealSys};

/// Lifecycle state of a container's init process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Set up, waiting for StartContainer.
    Created,
    /// The workload was exec'ed.
    Running,
    /// The process exited.
    Stopped,
}

/// A container in the guest.
pub struct Container {
    /// Container id.
    pub id: String,
    /// The init process (the workload once started).
    pub init: Arc<Process>,
    cgroup: Option<Cgroup>,
    /// The sync socket while the container is created but not started.
    sync: Mutex<Option<UnixStream>>,
    started: Mutex<bool>,
    /// Exec'd processes by exec id (kept until the container is removed).
    execs: Mutex<HashMap<String, Arc<Process>>>,
    /// Exec ids being set up.
    exec_pending: Mutex<HashSet<String>>,
    /// The container's seccomp program, which exec'd processes get too.
    seccomp: Option<Vec<crate::seccomp::Insn>>,
    /// Frozen by PauseContainer.
    paused: Mutex<bool>,
    sys: Arc<dyn ContainerSys>,
}

impl Container {
    /// A created container: its init is set up and waits for `start` on `sync`.
    pub fn new(
        id: &str,
        init: Process,
        cgroup: Option<Cgroup>,
        sync: UnixStream,
        seccomp: Option<Vec<crate::seccomp::Insn>>,
        sys: Arc<dyn ContainerSys>,
    ) -> Self {
        Container {
            id: id.to_string(),
            init: Arc::new(init),
            cgroup,
            sync: Mutex::new(Some(sync)),
            started: Mutex::new(false),
            execs: Mutex::new(HashMap::new()),
            exec_pending: Mutex::new(HashSet::new()),
            seccomp,
            paused: Mutex::new(false),
            sys,
        }
    }

    /// PID of the init/workload in the guest's root PID namespace.
    pub fn pid(&self) -> i32 {
        self.init.pid
    }

    /// Current state.
    pub fn state(&self) -> State {
        if self.init.exit_info().is_some() {
            State::Stopped
        } else if *self.started.lock().unwrap_or_else(|e| e.into_inner()) {
            State::Running
        } else {
            State::Created
        }
    }

    /// The container's cgroup, or an error naming the container.
    pub fn cgroup(&self) -> Result<&Cgroup> {
        self.cgroup.as_ref().ok_or_else(|| {
            AgentError::precondition(format!(
                "container {}: the guest has no cgroup v2 hierarchy",
                self.id
            ))
        })
    }

    /// The init (empty `exec_id`) or an exec'd process.
    pub fn process(&self, exec_id: &str) -> Result<Arc<Process>> {
        if exec_id.is_empty() {
            return Ok(Arc::clone(&self.init));
        }
        self.execs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(exec_id)
            .cloned()
            .ok_or_else(|| {
                AgentError::not_found(format!(
                    "container {}: exec process {exec_id:?} not found",
                    self.id
                ))
            })
    }

    /// Whether PauseContainer froze it.
    pub fn paused(&self) -> bool {
        *self.paused.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// PauseContainer / ResumeContainer.
    pub async fn set_frozen(&self, frozen: bool) -> Result<()> {
        if self.state() != State::Running {
            return Err(AgentError::precondition(format!(
                "container {} is not running ({:?})",
                self.id,
                self.state()
            )));
        }
        self.sys.freeze(self.cgroup()?, frozen).await?;
        *self.paused.lock().unwrap_or_else(|e| e.into_inner()) = frozen;
        Ok(())
    }

    /// Starts an additional process in the running container: it joins the init's
    /// namespaces (pid at clone time, the others in the helper) and its cgroup.
    pub async fn exec(
        &self,
        exec_id: &str,
        mut process: ProcessConfig,
        stdin: bool,
    ) -> Result<i32> {
        if self.state() != State::Running {
            return Err(AgentError::precondition(format!(
                "container {} is not running ({:?}): cannot exec",
                self.id,
                self.state()
            )));
        }
        if self.paused() {
            return Err(AgentError::precondition(format!(
                "container {} is paused: cannot exec in a paused container",
                self.id
            )));
        }
        {
            let execs = self.execs.lock().unwrap_or_else(|e| e.into_inner());
            let mut pending = self.exec_pending.lock().unwrap_or_else(|e| e.into_inner());
            let running = execs.get(exec_id).is_some_and(|p| p.exit_info().is_none());
            if running || !pending.insert(exec_id.to_string()) {
                return Err(AgentError::already_exists(format!(
                    "container {}: exec id {exec_id:?} is already in use",
                    self.id
                )));
            }
        }
        process.seccomp = self.seccomp.clone();
        let res = self
            .sys
            .exec(ExecRequest {
                id: &self.id,
                exec_id,
                target_pid: self.init.pid,
                process,
                stdin,
                cgroup: self.cgroup.as_ref(),
            })
            .await;
        self.exec_pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(exec_id);
        let p = Arc::new(Process::new(&self.id, exec_id, res?, Arc::clone(&self.sys)));
        let pid = p.pid;
        self.execs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(exec_id.to_string(), p);
        Ok(pid)
    }

    /// Releases the init: it execve's the workload. Returns the pid.
    pub async fn start(&self) -> Result<i32> {
        let sync = self
            .sync
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| {
                AgentError::precondition(format!(
                    "container {} is not in created state ({:?})",
                    self.id,
                    self.state()
                ))
            })?;
        if self.init.exit_info().is_some() {
            return Err(AgentError::precondition(format!(
                "container {}: init process exited before start",
                self.id
            )));
        }
        self.sys.release(&self.id, sync).await?;
        *self.started.lock().unwrap_or_else(|e| e.into_inner()) = true;
        Ok(self.init.pid)
    }

    /// Kills the process if it still runs, waits for it, removes the cgroup. The root
    /// file system is the host's (through the share) and is never touched; the container's
    /// mounts lived only in its own mount namespace, gone with its last process.
    pub async fn destroy(&self) -> Result<()> {
        // Dropping the sync socket makes a created-but-not-started init exit by itself.
        self.sync.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let (Some(cg), true) = (&self.cgroup, self.paused()) {
            // A frozen task cannot die: thaw first.
            let _ = self.sys.freeze(cg, false).await;
        }
        if self.init.exit_info().is_none() {
            let _ = self.sys.kill(self.init.pid, Signal::SIGKILL);
            if self.init.wait_timeout(KILL_TIMEOUT).await.is_none() {
                return Err(AgentError::internal(format!(
                    "container {}: pid {} did not exit {}s after SIGKILL",
                    self.id,
                    self.init.pid,
                    KILL_TIMEOUT.as_secs()
                )));
            }
        }
        let execs: Vec<Arc<Process>> = self
            .execs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for p in execs {
            let _ = p.signal(Signal::SIGKILL);
            let _ = p.wait_timeout(KILL_TIMEOUT).await;
            p.stdin.lock().await.take();
        }
        self.init.stdin.lock().await.take();
        if let Some(cg) = &self.cgroup {
            self.sys.remove_cgroup(cg).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod fake;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod create_tests;

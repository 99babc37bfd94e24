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
mod fake;

#[cfg(test)]
mod tests {
    use super::fake::FakeSys;
    use super::*;
    use std::io::Read;
    use ttrpc::Code;

    fn seccomp() -> Option<Vec<crate::seccomp::Insn>> {
        let ret_allow = crate::seccomp::Insn {
            code: 6,
            jt: 0,
            jf: 0,
            k: 0x7fff_0000,
        };
        Some(vec![ret_allow])
    }

    /// A created container c1 on the fake (its cgroup at /cg/c1 when `cgroup`), and the
    /// init's end of the sync socket.
    fn created(fake: &FakeSys, cgroup: bool) -> (Container, UnixStream) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let sys: Arc<dyn ContainerSys> = Arc::new(fake.clone());
        let init = Process::new("c1", "", fake.started(), Arc::clone(&sys));
        let cg = cgroup.then(|| Cgroup::at("/cg/c1"));
        (Container::new("c1", init, cg, ours, seccomp(), sys), theirs)
    }

    async fn running(fake: &FakeSys, cgroup: bool) -> Container {
        let (c, _) = created(fake, cgroup);
        c.start().await.unwrap();
        c
    }

    fn process() -> ProcessConfig {
        serde_json::from_str(
            r#"{"args": ["sh"], "env": [], "cwd": "/", "uid": 0, "gid": 0,
                "additional_gids": [], "rlimits": [], "terminal": false,
                "no_new_privileges": false}"#,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn created_running_stopped() {
        let fake = FakeSys::default();
        let (c, _init) = created(&fake, false);
        assert_eq!(c.state(), State::Created);
        assert_eq!(c.pid(), 100);
        assert_eq!(c.start().await.unwrap(), 100);
        assert_eq!(fake.calls(), ["release c1"]);
        assert_eq!(c.state(), State::Running);
        let e = c.start().await.unwrap_err();
        assert_eq!(e.code, Code::FAILED_PRECONDITION);
        assert_eq!(e.message, "container c1 is not in created state (Running)");
        fake.exit(100, 0);
        assert_eq!(c.state(), State::Stopped);
        assert_eq!(c.init.exit_info().unwrap().status, 0);
    }

    #[tokio::test]
    async fn start_fails_when_the_init_is_gone_or_its_exec_fails() {
        let fake = FakeSys::default();
        let (c, _init) = created(&fake, false);
        fake.exit(100, 1);
        let e = c.start().await.unwrap_err();
        assert_eq!(e.code, Code::FAILED_PRECONDITION);
        assert_eq!(e.message, "container c1: init process exited before start");
        assert!(
            fake.calls().is_empty(),
            "never released: {:?}",
            fake.calls()
        );
        assert_eq!(c.state(), State::Stopped);

        let fake = FakeSys::default();
        let (c, _init) = created(&fake, false);
        fake.state().fail_release = Some(AgentError::invalid("container c1: exec failed"));
        let e = c.start().await.unwrap_err();
        assert_eq!(e.code, Code::INVALID_ARGUMENT);
        assert_eq!(e.message, "container c1: exec failed");
        // Not running, and the init was released once: it cannot be started again.
        assert_eq!(c.state(), State::Created);
        let e = c.start().await.unwrap_err();
        assert_eq!(e.message, "container c1 is not in created state (Created)");
        assert_eq!(fake.calls(), ["release c1"]);
    }

    #[tokio::test]
    async fn processes_by_exec_id() {
        let fake = FakeSys::default();
        let c = running(&fake, false).await;
        assert!(Arc::ptr_eq(&c.process("").unwrap(), &c.init));
        let e = c.process("e1").err().unwrap();
        assert_eq!(e.code, Code::NOT_FOUND);
        assert_eq!(e.message, r#"container c1: exec process "e1" not found"#);
        assert_eq!(c.exec("e1", process(), true).await.unwrap(), 101);
        let p = c.process("e1").unwrap();
        assert_eq!((p.pid, p.exec_id.as_str()), (101, "e1"));
        assert_eq!(p.container_id, "c1");
    }

    #[tokio::test]
    async fn exec_ids_are_unique_while_their_process_runs() {
        let fake = FakeSys::default();
        let (c, _init) = created(&fake, true);
        let e = c.exec("e1", process(), false).await.unwrap_err();
        assert_eq!(e.code, Code::FAILED_PRECONDITION);
        assert_eq!(
            e.message,
            "container c1 is not running (Created): cannot exec"
        );
        c.start().await.unwrap();
        assert_eq!(c.exec("e1", process(), false).await.unwrap(), 101);
        // The helper joins the init (pid 100) and the cgroup, with the container's seccomp.
        assert_eq!(fake.calls()[1], "exec c1 e1 in 100 cgroup true");
        assert_eq!(fake.state().execs[0].1.seccomp, seccomp());
        let e = c.exec("e1", process(), false).await.unwrap_err();
        assert_eq!(e.code, Code::ALREADY_EXISTS);
        assert_eq!(e.message, r#"container c1: exec id "e1" is already in use"#);
        // Reusable once that process exited: the id names the new one.
        fake.exit(101, 0);
        assert_eq!(c.exec("e1", process(), false).await.unwrap(), 102);
        assert_eq!(c.process("e1").unwrap().pid, 102);
        // A failed exec leaves nothing registered and the id free.
        fake.state().fail_exec = Some(AgentError::invalid("exec: \"x\": not found"));
        let e = c.exec("e2", process(), false).await.unwrap_err();
        assert_eq!(e.message, "exec: \"x\": not found");
        assert_eq!(c.process("e2").err().unwrap().code, Code::NOT_FOUND);
        assert_eq!(c.exec("e2", process(), false).await.unwrap(), 103);
        fake.exit(100, 0);
        let e = c.exec("e3", process(), false).await.unwrap_err();
        assert_eq!(
            e.message,
            "container c1 is not running (Stopped): cannot exec"
        );
    }

    #[tokio::test]
    async fn an_exec_id_being_set_up_is_taken() {
        let fake = FakeSys::default();
        let c = Arc::new(running(&fake, false).await);
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        fake.state().exec_gate = Some(Arc::clone(&gate));
        let first = tokio::spawn({
            let c = Arc::clone(&c);
            async move { c.exec("e1", process(), false).await }
        });
        while fake.state().execs.is_empty() {
            tokio::task::yield_now().await;
        }
        let e = c.exec("e1", process(), false).await.unwrap_err();
        assert_eq!(e.code, Code::ALREADY_EXISTS);
        gate.add_permits(1);
        assert_eq!(first.await.unwrap().unwrap(), 101);
        assert_eq!(
            fake.state().execs.len(),
            1,
            "the second never reached the system"
        );
    }

    #[tokio::test]
    async fn pause_and_resume() {
        let fake = FakeSys::default();
        let (c, _init) = created(&fake, true);
        let e = c.set_frozen(true).await.unwrap_err();
        assert_eq!(e.code, Code::FAILED_PRECONDITION);
        assert_eq!(e.message, "container c1 is not running (Created)");
        c.start().await.unwrap();
        c.set_frozen(true).await.unwrap();
        assert!(c.paused());
        let e = c.exec("e1", process(), false).await.unwrap_err();
        assert_eq!(e.code, Code::FAILED_PRECONDITION);
        assert_eq!(
            e.message,
            "container c1 is paused: cannot exec in a paused container"
        );
        c.set_frozen(false).await.unwrap();
        assert!(!c.paused());
        assert_eq!(
            fake.calls(),
            ["release c1", "freeze /cg/c1 true", "freeze /cg/c1 false"]
        );
        c.exec("e1", process(), false).await.unwrap();
        // Without a cgroup v2 hierarchy there is nothing to freeze.
        let fake = FakeSys::default();
        let c = running(&fake, false).await;
        let e = c.set_frozen(true).await.unwrap_err();
        assert_eq!(e.code, Code::FAILED_PRECONDITION);
        assert_eq!(
            e.message,
            "container c1: the guest has no cgroup v2 hierarchy"
        );
        assert!(!c.paused());
    }

    #[tokio::test]
    async fn destroy_thaws_kills_everything_and_removes_the_cgroup() {
        let fake = FakeSys::default();
        let c = running(&fake, true).await;
        c.exec("e1", process(), true).await.unwrap();
        c.exec("e2", process(), true).await.unwrap();
        fake.exit(102, 0);
        c.set_frozen(true).await.unwrap();
        c.destroy().await.unwrap();
        let calls = fake.calls();
        assert_eq!(
            calls[4..],
            [
                "freeze /cg/c1 false",
                "kill 100 SIGKILL",
                "kill 101 SIGKILL",
                "remove /cg/c1",
            ]
        );
        assert_eq!(c.state(), State::Stopped);
        assert_eq!(c.init.exit_info().unwrap().status, 137);
        assert!(c.init.stdin.lock().await.is_none(), "stdin closed");
        assert!(c.process("e1").unwrap().stdin.lock().await.is_none());
        // A failed removal is reported.
        let fake = FakeSys::default();
        let c = running(&fake, true).await;
        fake.exit(100, 0);
        fake.state().fail_remove = Some(AgentError::internal("remove cgroup: busy"));
        assert_eq!(
            c.destroy().await.unwrap_err().message,
            "remove cgroup: busy"
        );
        assert_eq!(
            fake.calls(),
            ["release c1", "remove /cg/c1"],
            "no kill after exit"
        );
    }

    #[tokio::test]
    async fn destroying_a_created_container_lets_its_init_go() {
        let fake = FakeSys::default();
        let (c, mut init) = created(&fake, false);
        c.destroy().await.unwrap();
        // The init waiting for `start` reads EOF, so it exits by itself.
        let mut rest = Vec::new();
        assert_eq!(init.read_to_end(&mut rest).unwrap(), 0);
        assert_eq!(fake.calls(), ["kill 100 SIGKILL"]);
        let e = c.start().await.unwrap_err();
        assert_eq!(e.code, Code::FAILED_PRECONDITION);
    }
}

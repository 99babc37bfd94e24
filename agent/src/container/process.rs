//! One process of a container (its init or an exec'd process): pid, stdio, terminal and
//! exit status.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::watch;

use super::sys::ContainerSys;
use crate::error::{AgentError, Result};
use crate::reaper::ExitInfo;
use crate::spawn::{Reader, Started, Writer};

/// One process of a container (its init or an exec'd process) and its stdio.
pub struct Process {
    /// Container id (for messages).
    pub container_id: String,
    /// Exec id; empty for the init.
    pub exec_id: String,
    /// PID in the guest's root PID namespace.
    pub pid: i32,
    /// Write end of stdin (None: /dev/null or closed).
    pub stdin: tokio::sync::Mutex<Option<Writer>>,
    /// stdout (the pty master for terminal processes).
    pub stdout: tokio::sync::Mutex<Option<Reader>>,
    /// stderr (None for terminal processes: everything comes through stdout).
    pub stderr: tokio::sync::Mutex<Option<Reader>>,
    pty: Option<OwnedFd>,
    exit: watch::Receiver<Option<ExitInfo>>,
    sys: Arc<dyn ContainerSys>,
}

impl Process {
    /// The model of a started process of container `container_id` (`exec_id` empty for
    /// the init); signals go through `sys`.
    pub fn new(
        container_id: &str,
        exec_id: &str,
        started: Started,
        sys: Arc<dyn ContainerSys>,
    ) -> Self {
        let Started {
            pid,
            stdio,
            pty,
            exit,
        } = started;
        Process {
            container_id: container_id.to_string(),
            exec_id: exec_id.to_string(),
            pid,
            stdin: tokio::sync::Mutex::new(stdio.stdin),
            stdout: tokio::sync::Mutex::new(stdio.stdout),
            stderr: tokio::sync::Mutex::new(stdio.stderr),
            pty,
            exit,
            sys,
        }
    }

    fn name(&self) -> String {
        if self.exec_id.is_empty() {
            format!("container {}", self.container_id)
        } else {
            format!("container {} exec {}", self.container_id, self.exec_id)
        }
    }

    /// Exit information, once the process has been reaped.
    pub fn exit_info(&self) -> Option<ExitInfo> {
        *self.exit.borrow()
    }

    /// Waits until the process exits.
    pub async fn wait(&self) -> ExitInfo {
        let mut rx = self.exit.clone();
        let res = rx.wait_for(|e| e.is_some()).await.map(|v| *v);
        match res {
            Ok(Some(v)) => v,
            // The reaper never drops a sender without sending; be safe anyway.
            _ => ExitInfo {
                status: 255,
                exited_at_unix_nanos: 0,
            },
        }
    }

    /// Waits for exit with a timeout.
    pub async fn wait_timeout(&self, t: Duration) -> Option<ExitInfo> {
        tokio::time::timeout(t, self.wait()).await.ok()
    }

    /// Sends `sig` to the process unless it already exited.
    pub fn signal(&self, sig: Signal) -> Result<()> {
        if self.exit_info().is_some() {
            return Err(AgentError::not_found(format!(
                "{}: process already finished",
                self.name()
            )));
        }
        self.sys.kill(self.pid, sig).map_err(|e| {
            AgentError::internal(format!(
                "{}: kill({}, {sig}): {}",
                self.name(),
                self.pid,
                e.desc()
            ))
        })
    }

    /// TIOCSWINSZ on the process's terminal.
    pub fn resize(&self, rows: u32, cols: u32) -> Result<()> {
        let pty = self.pty.as_ref().ok_or_else(|| {
            AgentError::precondition(format!("{}: the process has no terminal", self.name()))
        })?;
        let clamp = |v: u32| v.min(u16::MAX as u32) as u16;
        crate::pty::resize(pty, clamp(rows), clamp(cols))
    }
}

#[cfg(test)]
mod tests {
    use super::super::fake::FakeSys;
    use super::*;
    use ttrpc::Code;

    fn exec(fake: &FakeSys) -> Process {
        Process::new("c1", "e1", fake.started(), Arc::new(fake.clone()))
    }

    #[test]
    fn signals_reach_only_a_live_process() {
        let fake = FakeSys::default();
        let p = exec(&fake);
        p.signal(Signal::SIGTERM).unwrap();
        assert_eq!(fake.calls(), ["kill 100 SIGTERM"]);
        fake.state().fail_kill = Some(nix::Error::EPERM);
        let e = p.signal(Signal::SIGUSR1).unwrap_err();
        assert_eq!(e.code, Code::INTERNAL);
        assert_eq!(
            e.message,
            "container c1 exec e1: kill(100, SIGUSR1): Operation not permitted"
        );
        fake.exit(100, 0);
        let e = p.signal(Signal::SIGTERM).unwrap_err();
        assert_eq!(e.code, Code::NOT_FOUND);
        assert_eq!(e.message, "container c1 exec e1: process already finished");
        assert_eq!(fake.calls().len(), 2, "no kill after the exit");
        // The init is named by its container alone.
        let init = Process::new("c1", "", fake.started(), Arc::new(fake.clone()));
        fake.exit(101, 0);
        let e = init.signal(Signal::SIGKILL).unwrap_err();
        assert_eq!(e.message, "container c1: process already finished");
    }

    #[tokio::test]
    async fn wait_returns_the_reaped_status() {
        let fake = FakeSys::default();
        let p = exec(&fake);
        assert_eq!(p.exit_info(), None);
        assert_eq!(p.wait_timeout(Duration::from_millis(10)).await, None);
        fake.exit(100, 3);
        let e = p.wait().await;
        assert_eq!((e.status, e.exited_at_unix_nanos), (3, 1));
        assert_eq!(p.exit_info(), Some(e));
        // A reaper that dropped its sender without a word: 255, not a hang.
        let (tx, exit) = watch::channel(None);
        drop(tx);
        let started = Started {
            pid: 7,
            stdio: Default::default(),
            pty: None,
            exit,
        };
        let p = Process::new("c1", "e2", started, Arc::new(fake.clone()));
        assert_eq!(p.wait().await.status, 255);
    }

    #[test]
    fn resize_needs_a_terminal() {
        let fake = FakeSys::default();
        let e = exec(&fake).resize(24, 80).unwrap_err();
        assert_eq!(e.code, Code::FAILED_PRECONDITION);
        assert_eq!(
            e.message,
            "container c1 exec e1: the process has no terminal"
        );
    }
}

//! The one and only child reaper: a SIGCHLD-driven loop calling `waitpid(-1, WNOHANG)` that
//! hands each exit status to whoever registered the pid. Nothing else in the agent waits
//! for children, so no status is ever lost to a second waiter.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::sync::watch;

/// How and when a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    /// Exit code, or 128 + signal number when killed by a signal.
    pub status: i32,
    /// Nanoseconds since the Unix epoch when the agent reaped it.
    pub exited_at_unix_nanos: u64,
}

/// Maps a wait status to the runc-style exit status, `None` if the process did not end.
pub fn exit_status(ws: &WaitStatus) -> Option<(Pid, i32)> {
    match *ws {
        WaitStatus::Exited(pid, code) => Some((pid, code)),
        WaitStatus::Signaled(pid, sig, _) => Some((pid, 128 + sig as i32)),
        _ => None,
    }
}

/// Exit statuses of pids nobody registered (yet) are kept, up to this many.
const MAX_UNCLAIMED: usize = 1024;

#[derive(Default)]
struct Inner {
    watchers: HashMap<i32, watch::Sender<Option<ExitInfo>>>,
    unclaimed: HashMap<i32, ExitInfo>,
}

/// Dispatches exit statuses of reaped children to their owners.
#[derive(Default)]
pub struct Reaper {
    inner: Mutex<Inner>,
}

impl Reaper {
    /// Creates a reaper; call [`Reaper::spawn`] inside the runtime to start it.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Registers interest in `pid`'s exit. Safe to call after the child already exited
    /// (the status is kept until claimed).
    pub fn register(&self, pid: i32) -> watch::Receiver<Option<ExitInfo>> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let initial = inner.unclaimed.remove(&pid);
        let (tx, rx) = watch::channel(initial);
        if initial.is_none() {
            inner.watchers.insert(pid, tx);
        }
        rx
    }

    /// Reaps every exited child now and dispatches the statuses.
    pub fn reap_all(&self) {
        loop {
            let ws = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!("waitpid: {e}");
                    return;
                }
                Ok(ws) => ws,
            };
            let Some((pid, status)) = exit_status(&ws) else {
                continue;
            };
            let info = ExitInfo {
                status,
                exited_at_unix_nanos: now_nanos(),
            };
            tracing::debug!(pid = pid.as_raw(), status, "reaped");
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            match inner.watchers.remove(&pid.as_raw()) {
                Some(tx) => {
                    let _ = tx.send(Some(info));
                }
                None => {
                    if inner.unclaimed.len() >= MAX_UNCLAIMED {
                        inner.unclaimed.clear();
                    }
                    inner.unclaimed.insert(pid.as_raw(), info);
                }
            }
        }
    }

    /// Forgets an unclaimed status (for pids that are reparented orphans, nobody claims).
    pub fn forget(&self, pid: i32) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.unclaimed.remove(&pid);
        inner.watchers.remove(&pid);
    }

    /// Installs the SIGCHLD handler and starts the reaping task. Must run inside a tokio
    /// runtime, before the first child is created.
    pub fn spawn(self: &Arc<Self>) -> std::io::Result<()> {
        let mut sig = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
        let me = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                me.reap_all();
                if sig.recv().await.is_none() {
                    return;
                }
            }
        });
        Ok(())
    }
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;

    #[test]
    fn status_mapping() {
        let p = Pid::from_raw(42);
        assert_eq!(exit_status(&WaitStatus::Exited(p, 3)), Some((p, 3)));
        assert_eq!(exit_status(&WaitStatus::Exited(p, 0)), Some((p, 0)));
        assert_eq!(
            exit_status(&WaitStatus::Signaled(p, Signal::SIGKILL, false)),
            Some((p, 137))
        );
        assert_eq!(
            exit_status(&WaitStatus::Signaled(p, Signal::SIGTERM, true)),
            Some((p, 143))
        );
        assert_eq!(exit_status(&WaitStatus::StillAlive), None);
    }

    #[test]
    fn unclaimed_then_registered() {
        let r = Reaper::new();
        r.inner.lock().unwrap().unclaimed.insert(
            7,
            ExitInfo {
                status: 1,
                exited_at_unix_nanos: 5,
            },
        );
        let rx = r.register(7);
        assert_eq!(rx.borrow().unwrap().status, 1);
        let rx = r.register(8);
        assert!(rx.borrow().is_none());
    }
}

//! Starting a container's helper process (`/proc/self/exe __container-init` or
//! `__container-exec`): its stdio ([`stdio`]), the `clone(2)` into new or joined
//! namespaces (`clone`), registration with the reaper, the move into the cgroup, and the
//! setup handshake on the sync socket ([`handshake`]). The container model
//! ([`crate::container`]) owns what comes out.

mod clone;
pub mod handshake;
pub mod stdio;

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::sync::watch;

use crate::cgroup::Cgroup;
use crate::error::{AgentError, Result};
use crate::init::SYNC_FD;
use crate::reaper::{ExitInfo, Reaper};

pub use handshake::release;
pub use stdio::{Reader, Stdio, Writer};

/// How long a killed process may take to be reaped (RemoveContainer, failed creates).
pub const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// What to start.
pub struct SpawnArgs<'a> {
    /// Container id.
    pub id: &'a str,
    /// Exec id; empty for the init.
    pub exec_id: &'a str,
    /// `argv[1]` of the helper: [`crate::init::INIT_ARG`] or [`crate::init::EXEC_ARG`].
    pub mode: &'static str,
    /// Namespaces created at clone time (`CLONE_NEW*`).
    pub clone_flags: libc::c_int,
    /// JSON config line for the helper.
    pub config: Vec<u8>,
    /// Give the process a stdin pipe (else /dev/null).
    pub stdin: bool,
    /// The process runs on a pty it opens in the container.
    pub terminal: bool,
    /// The cgroup the helper is moved into right after the clone.
    pub cgroup: Option<&'a Cgroup>,
    /// PID namespace the child is created in (exec); None = per `clone_flags`.
    pub pidns: Option<fs::File>,
}

/// A started process: what the container model keeps of it.
pub struct Started {
    /// PID in the guest's root PID namespace.
    pub pid: i32,
    /// The agent's ends of its stdio.
    pub stdio: Stdio,
    /// The pty master of a terminal process.
    pub pty: Option<OwnedFd>,
    /// Its exit status, from the reaper.
    pub exit: watch::Receiver<Option<ExitInfo>>,
}

/// Starts the helper and runs the setup handshake. Returns the process, set up and
/// waiting for `start` on the returned sync socket. On failure the helper is killed and
/// reaped.
pub async fn spawn(reaper: &Arc<Reaper>, a: SpawnArgs<'_>) -> Result<(Started, UnixStream)> {
    let id = a.id;
    let what = if a.exec_id.is_empty() {
        format!("container {id}")
    } else {
        format!("container {id} exec {}", a.exec_id)
    };
    let (sync_parent, sync_child) =
        UnixStream::pair().map_err(|e| AgentError::internal(format!("socketpair: {e}")))?;
    // Child ends (dropped after clone) and our ends.
    let stdio::Pending { child, ours } = stdio::prepare(a.terminal, a.stdin)?;
    let fds = [
        (child[0].as_raw_fd(), 0),
        (child[1].as_raw_fd(), 1),
        (child[2].as_raw_fd(), 2),
        (sync_child.as_raw_fd(), SYNC_FD),
    ];
    let flags = a.clone_flags;
    let mode = a.mode;
    let pid = clone::clone_in(a.pidns.as_ref(), mode, fds, flags).map_err(|e| {
        AgentError::internal(format!(
            "clone the {mode} helper for {what} (flags {flags:#x}): {}",
            e.desc()
        ))
    })?;
    let exit = reaper.register(pid);
    drop((child, sync_child));
    tracing::debug!(pid, what, "helper cloned");

    if let Some(cg) = a.cgroup {
        if let Err(e) = cg.add_pid(pid) {
            abort_init(pid, &exit).await;
            return Err(e);
        }
    }
    let config = a.config;
    let idc = what.clone();
    let terminal = a.terminal;
    let handshake =
        tokio::task::spawn_blocking(move || handshake::setup(sync_parent, &config, terminal, &idc))
            .await
            .map_err(|e| AgentError::internal(format!("handshake task: {e}")))
            .and_then(|r| r);
    let (sync, pty) = match handshake {
        Ok(s) => s,
        Err(e) => {
            abort_init(pid, &exit).await;
            return Err(e);
        }
    };
    let stdio = match &pty {
        Some(master) => match stdio::on_pty(master, a.stdin) {
            Ok(v) => v,
            Err(e) => {
                abort_init(pid, &exit).await;
                return Err(e);
            }
        },
        None => ours,
    };
    Ok((
        Started {
            pid,
            stdio,
            pty,
            exit,
        },
        sync,
    ))
}

/// Kills a half-created process and waits until the reaper saw it go.
pub async fn abort_init(pid: i32, exit: &watch::Receiver<Option<ExitInfo>>) {
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    let mut rx = exit.clone();
    if tokio::time::timeout(KILL_TIMEOUT, rx.wait_for(|e| e.is_some()))
        .await
        .is_err()
    {
        tracing::warn!(pid, "half-created process did not exit after SIGKILL");
    }
}

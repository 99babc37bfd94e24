//! A process's stdio: pipes (stdin only when asked for, else /dev/null), or, for a terminal
//! process, /dev/null until the pty master it opens in the container comes back.

use std::fs;
use std::os::fd::OwnedFd;

use nix::fcntl::OFlag;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::unix::pipe;

use crate::error::{AgentError, Result};
use crate::pty::PtyMaster;

/// Boxed async stream types for process stdio (pipes or a pty master).
pub type Reader = Box<dyn AsyncRead + Send + Unpin>;
/// See [`Reader`].
pub type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// The agent's ends of a process's stdio.
#[derive(Default)]
pub struct Stdio {
    /// Write end of stdin (None: /dev/null).
    pub stdin: Option<Writer>,
    /// stdout (the pty master for terminal processes).
    pub stdout: Option<Reader>,
    /// stderr (None for terminal processes: everything comes through stdout).
    pub stderr: Option<Reader>,
}

/// Both sides before the clone: the child's fds 0-2 and the agent's ends.
pub(super) struct Pending {
    /// What becomes the child's fds 0, 1 and 2 (closed here once it is cloned).
    pub child: [OwnedFd; 3],
    /// The agent's ends (all None for a terminal process).
    pub ours: Stdio,
}

fn pipe_pair() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC)
        .map_err(|e| AgentError::internal(format!("pipe2: {}", e.desc())))
}

fn devnull() -> Result<OwnedFd> {
    fs::File::open("/dev/null")
        .map(OwnedFd::from)
        .map_err(|e| AgentError::internal(format!("open /dev/null: {e}")))
}

/// The stdio of a new process. Terminal processes open their pty in the container (its
/// devpts, as runc) and send the master back with the ready reply; until then their stdio
/// is /dev/null.
pub(super) fn prepare(terminal: bool, stdin: bool) -> Result<Pending> {
    if terminal {
        return Ok(Pending {
            child: [devnull()?, devnull()?, devnull()?],
            ours: Stdio::default(),
        });
    }
    let (stdin_r, stdin_w) = if stdin {
        let (r, w) = pipe_pair()?;
        let w: Writer = Box::new(
            pipe::Sender::from_owned_fd(w)
                .map_err(|e| AgentError::internal(format!("stdin pipe: {e}")))?,
        );
        (r, Some(w))
    } else {
        (devnull()?, None)
    };
    let (stdout_r, stdout_w) = pipe_pair()?;
    let (stderr_r, stderr_w) = pipe_pair()?;
    let rx = |fd: OwnedFd| -> Result<Reader> {
        Ok(Box::new(pipe::Receiver::from_owned_fd(fd).map_err(
            |e| AgentError::internal(format!("stdio pipe: {e}")),
        )?))
    };
    Ok(Pending {
        child: [stdin_r, stdout_w, stderr_w],
        ours: Stdio {
            stdin: stdin_w,
            stdout: Some(rx(stdout_r)?),
            stderr: Some(rx(stderr_r)?),
        },
    })
}

/// A terminal process's stdio on its pty master: stdout reads it, stdin (when asked for)
/// writes it, stderr is EOF at once.
pub(super) fn on_pty(master: &OwnedFd, stdin: bool) -> Result<Stdio> {
    let w: Option<Writer> = if stdin {
        Some(Box::new(PtyMaster::new(master)?))
    } else {
        None
    };
    Ok(Stdio {
        stdin: w,
        stdout: Some(Box::new(PtyMaster::new(master)?)),
        stderr: None,
    })
}

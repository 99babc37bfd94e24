//! Container init mode (`kata-agent __container-init`): the single-threaded process the
//! agent clones into the container's new namespaces. It reads its [`InitConfig`] from the
//! sync socket (fd 3), builds the container's mounts, pivot_roots, sets hostname, cwd and
//! credentials, resolves the executable, reports `ready` (or an error), waits for `start`
//! and execve's the workload, which thereby stays the agent's direct child.
//!
//! Sync protocol (JSON lines on fd 3): agent → init: `InitConfig`; init → agent:
//! `{"ready":true}` or `{"error":"..."}`; agent → init: `start`; then the init execve's
//! (fd 3 is close-on-exec, so the agent reads EOF) or writes `{"error":"..."}`.
//!
//! This module runs the protocol; the steps are `setup` (namespaces, root, paths,
//! hostname), `rootfs` (the root's mounts and pivot_root, behind [`MountSys`]), `dev`
//! (device nodes) and `process` (terminal, limits, lookup, credentials, seccomp).

mod dev;
mod process;
mod rootfs;
mod setup;

use std::ffi::CString;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;

use nix::fcntl::{FcntlArg, FdFlag};
use serde::{Deserialize, Serialize};

use crate::plan::{InitConfig, ProcessConfig};

pub use process::lookup_executable;
pub use rootfs::{build_root, MountSys, RealMounts};

/// `argv[1]` that selects container init mode.
pub const INIT_ARG: &str = "__container-init";

/// `argv[1]` that selects exec mode: join a running container's namespaces, then run an
/// additional process (ExecProcess).
pub const EXEC_ARG: &str = "__container-exec";

/// What the exec helper gets over the sync socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecConfig {
    /// The container init's pid (root pid namespace); its namespaces are joined.
    pub target_pid: i32,
    /// Namespaces to join (`/proc/<pid>/ns/<name>`), the mount namespace last; the pid
    /// namespace was already joined by the agent at clone time.
    pub join: Vec<String>,
    /// The process.
    pub process: ProcessConfig,
}

/// The fd number the sync socket has in the init.
pub const SYNC_FD: i32 = 3;

/// A message from the init to the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InitReply {
    /// Set up, waiting for `start`.
    Ready(bool),
    /// Setup or exec failed; the init exits.
    Error(String),
}

pub(crate) type InitResult<T> = std::result::Result<T, String>;

/// Runs container init mode; never returns.
pub fn run() -> ! {
    run_mode(false)
}

/// Runs exec mode (see [`EXEC_ARG`]); never returns.
pub fn run_exec() -> ! {
    run_mode(true)
}

fn run_mode(exec: bool) -> ! {
    // SAFETY: fd 3 is the sync socket the agent dup2'ed there before exec'ing us; nothing
    // else in this fresh process owns it.
    let sync = unsafe { UnixStream::from_raw_fd(SYNC_FD) };
    close_fds_from(SYNC_FD + 1);
    let code = match main_loop(&sync, exec) {
        Ok(()) => 0,
        Err(msg) => {
            reply(&sync, &InitReply::Error(msg));
            1
        }
    };
    std::process::exit(code);
}

/// The ready reply with the pty master attached (SCM_RIGHTS), like runc's console socket.
fn send_ready_with_fd(sync: &UnixStream, master: std::os::fd::OwnedFd) -> InitResult<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    use std::os::fd::AsRawFd;
    let mut line = serde_json::to_vec(&InitReply::Ready(true)).unwrap_or_default();
    line.push(b'\n');
    let fds = [master.as_raw_fd()];
    let iov = [std::io::IoSlice::new(&line)];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let n = sendmsg::<()>(sync.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
        .map_err(|e| format!("send the pty master to the agent: {}", e.desc()))?;
    if n != line.len() {
        return Err("send the pty master to the agent: short write".into());
    }
    Ok(())
}

fn reply(mut sync: &UnixStream, r: &InitReply) {
    let mut line = serde_json::to_vec(r).unwrap_or_default();
    line.push(b'\n');
    let _ = sync.write_all(&line);
}

fn main_loop(sync: &UnixStream, exec: bool) -> InitResult<()> {
    let mut reader = BufReader::new(sync.try_clone().map_err(|e| format!("sync fd: {e}"))?);
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|e| format!("read config: {e}"))?;
    let (exe, argv, envp, master) = if exec {
        let cfg: ExecConfig =
            serde_json::from_str(&line).map_err(|e| format!("bad exec config: {e}"))?;
        setup::prepare_exec(&cfg)?
    } else {
        let cfg: InitConfig =
            serde_json::from_str(&line).map_err(|e| format!("bad init config: {e}"))?;
        setup::prepare(&cfg)?
    };
    match master {
        Some(m) => send_ready_with_fd(sync, m)?,
        None => reply(sync, &InitReply::Ready(true)),
    }
    line.clear();
    reader
        .read_line(&mut line)
        .map_err(|e| format!("wait for start: {e}"))?;
    if line.trim() != "start" {
        // The agent went away or removed the container before starting it.
        std::process::exit(1);
    }
    drop(reader);
    reset_signals();
    // The sync socket close-on-exec: a successful execve shows up as EOF on the agent's
    // side.
    nix::fcntl::fcntl(sync, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
        .map_err(|e| format!("mark the sync socket close-on-exec: {}", e.desc()))?;
    let err = nix::unistd::execve(&exe, &argv, &envp).unwrap_err();
    Err(format!("exec {:?}: {}", argv[0], err.desc()))
}

/// The agent (Rust's runtime) ignores SIGPIPE and tokio may leave signals blocked: give
/// the workload default dispositions and an empty signal mask, as a shell would.
fn reset_signals() {
    use nix::sys::signal::{signal, sigprocmask, SigHandler, SigSet, SigmaskHow, Signal};
    // SAFETY: installs the default disposition, no handler: nothing runs in signal context.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// Closes every fd >= `from` (leaked agent fds must not reach the workload).
fn close_fds_from(from: i32) {
    // SAFETY: close_range only closes descriptors; none above `from` is in use here.
    let r = unsafe { libc::syscall(libc::SYS_close_range, from as u32, u32::MAX, 0u32) };
    if r != 0 {
        if let Ok(rd) = fs::read_dir("/proc/self/fd") {
            let fds: Vec<i32> = rd
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .filter(|fd| *fd >= from)
                .collect();
            for fd in fds {
                // SAFETY: closing a descriptor this process owns and no longer uses.
                unsafe { libc::close(fd) };
            }
        }
    }
}

/// executable, argv, envp, and the pty master for terminal processes (sent to the agent
/// with the ready reply).
pub(crate) type Prepared = (
    CString,
    Vec<CString>,
    Vec<CString>,
    Option<std::os::fd::OwnedFd>,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_format() {
        assert_eq!(
            serde_json::to_string(&InitReply::Ready(true)).unwrap(),
            r#"{"ready":true}"#
        );
        assert_eq!(
            serde_json::to_string(&InitReply::Error("x".into())).unwrap(),
            r#"{"error":"x"}"#
        );
    }
}

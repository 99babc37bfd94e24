//! Container lifecycle on the agent side: clone the init into new namespaces, put it in its
//! cgroup, hand it its config, start it, signal it, tear everything down.

use std::ffi::CString;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::net::unix::pipe;
use tokio::sync::watch;

use crate::cgroup::Cgroup;
use crate::error::{AgentError, Result};
use crate::init::{InitReply, INIT_ARG, SYNC_FD};
use crate::reaper::{ExitInfo, Reaper};
use crate::spec::Plan;

/// How long the init may take to set a container up, or to exec it.
const SYNC_TIMEOUT: Duration = Duration::from_secs(60);
/// How long RemoveContainer waits for a killed container to be reaped.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// Stack for the cloned child, which only dup2()s and execve()s.
const CHILD_STACK: usize = 64 * 1024;

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
    /// PID of its init/workload in the guest's root PID namespace.
    pub pid: i32,
    rootfs: PathBuf,
    cgroup: Option<Cgroup>,
    /// The sync socket while the container is created but not started.
    sync: Mutex<Option<UnixStream>>,
    started: Mutex<bool>,
    /// Write end of the workload's stdin (None: /dev/null or closed).
    pub stdin: tokio::sync::Mutex<Option<pipe::Sender>>,
    /// Read end of the workload's stdout.
    pub stdout: tokio::sync::Mutex<Option<pipe::Receiver>>,
    /// Read end of the workload's stderr.
    pub stderr: tokio::sync::Mutex<Option<pipe::Receiver>>,
    exit: watch::Receiver<Option<ExitInfo>>,
}

impl Container {
    /// Current state.
    pub fn state(&self) -> State {
        if self.exit.borrow().is_some() {
            State::Stopped
        } else if *self.started.lock().unwrap_or_else(|e| e.into_inner()) {
            State::Running
        } else {
            State::Created
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
            Ok(v) => v.expect("checked by wait_for"),
            // The reaper never drops a sender without sending; be safe anyway.
            Err(_) => ExitInfo {
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
                "container {}: process already finished",
                self.id
            )));
        }
        kill(Pid::from_raw(self.pid), sig).map_err(|e| {
            AgentError::internal(format!(
                "container {}: kill({}, {sig}): {}",
                self.id,
                self.pid,
                e.desc()
            ))
        })
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
        if self.exit_info().is_some() {
            return Err(AgentError::precondition(format!(
                "container {}: init process exited before start",
                self.id
            )));
        }
        let id = self.id.clone();
        let res = tokio::task::spawn_blocking(move || -> Result<()> {
            let mut sync = sync;
            sync.write_all(b"start\n")
                .map_err(|e| AgentError::internal(format!("container {id}: release init: {e}")))?;
            let mut buf = Vec::new();
            sync.read_to_end(&mut buf)
                .map_err(|e| AgentError::internal(format!("container {id}: start: {e}")))?;
            if buf.is_empty() {
                return Ok(()); // close-on-exec fired: execve succeeded
            }
            Err(reply_error(&id, &buf))
        })
        .await
        .map_err(|e| AgentError::internal(format!("start task: {e}")))?;
        res?;
        *self.started.lock().unwrap_or_else(|e| e.into_inner()) = true;
        Ok(self.pid)
    }

    /// Kills the process if it still runs, waits for it, removes the cgroup and the
    /// container's root file system directory.
    pub async fn destroy(&self) -> Result<()> {
        // Dropping the sync socket makes a created-but-not-started init exit by itself.
        self.sync.lock().unwrap_or_else(|e| e.into_inner()).take();
        if self.exit_info().is_none() {
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
            if self.wait_timeout(KILL_TIMEOUT).await.is_none() {
                return Err(AgentError::internal(format!(
                    "container {}: pid {} did not exit {}s after SIGKILL",
                    self.id,
                    self.pid,
                    KILL_TIMEOUT.as_secs()
                )));
            }
        }
        self.stdin.lock().await.take();
        if let Some(cg) = &self.cgroup {
            cg.remove().await?;
        }
        remove_rootfs(&self.rootfs, &self.id)
    }
}

/// Deletes the rootfs directory, and its parent when that is the per-container directory
/// `.../<id>` the shim created (and is now empty).
fn remove_rootfs(rootfs: &Path, id: &str) -> Result<()> {
    match fs::remove_dir_all(rootfs) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(AgentError::internal(format!(
                "remove rootfs {rootfs:?}: {e}"
            )))
        }
    }
    if let Some(parent) = rootfs.parent() {
        if parent.file_name().and_then(|n| n.to_str()) == Some(id) {
            let _ = fs::remove_dir(parent);
        }
    }
    Ok(())
}

fn reply_error(id: &str, buf: &[u8]) -> AgentError {
    let line = buf.split(|b| *b == b'\n').next().unwrap_or_default();
    match serde_json::from_slice::<InitReply>(line) {
        Ok(InitReply::Error(msg)) => AgentError::invalid(format!("container {id}: {msg}")),
        _ => AgentError::internal(format!(
            "container {id}: unexpected reply from init: {:?}",
            String::from_utf8_lossy(buf)
        )),
    }
}

fn pipe_pair() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC)
        .map_err(|e| AgentError::internal(format!("pipe2: {}", e.desc())))
}

/// Options for [`create`].
pub struct CreateOptions<'a> {
    /// Container id (validated).
    pub id: &'a str,
    /// The validated plan.
    pub plan: Plan,
    /// Give the process a stdin pipe (else /dev/null).
    pub stdin: bool,
    /// cgroup v2 root, if any.
    pub cgroup_root: Option<&'a Path>,
}

/// Creates a container: cgroup, stdio pipes, the init cloned into new namespaces, and the
/// setup handshake. On failure nothing is left behind (process killed and reaped, cgroup
/// removed; the mounts lived only in the init's mount namespace).
pub async fn create(reaper: &Arc<Reaper>, opts: CreateOptions<'_>) -> Result<Container> {
    let id = opts.id.to_string();
    let rootfs = opts.plan.init.rootfs.clone();
    match fs::metadata(&rootfs) {
        Ok(md) if md.is_dir() => {}
        Ok(_) => {
            return Err(AgentError::invalid(format!(
                "rootfs_path {rootfs:?} is not a directory"
            )))
        }
        Err(e) => {
            return Err(AgentError::invalid(format!("rootfs_path {rootfs:?}: {e}")));
        }
    }
    let cgroup = match opts.cgroup_root {
        Some(root) => Some(Cgroup::create(root, &id, &opts.plan.cgroup_writes)?),
        None => {
            if !opts.plan.cgroup_writes.is_empty() {
                return Err(AgentError::internal(
                    "the spec sets resource limits but the guest has no cgroup v2 hierarchy",
                ));
            }
            None
        }
    };
    let res = spawn_init(reaper, &id, &opts.plan, opts.stdin, cgroup.as_ref()).await;
    match res {
        Ok(parts) => Ok(Container {
            id,
            pid: parts.pid,
            rootfs,
            cgroup,
            sync: Mutex::new(Some(parts.sync)),
            started: Mutex::new(false),
            stdin: tokio::sync::Mutex::new(parts.stdin),
            stdout: tokio::sync::Mutex::new(Some(parts.stdout)),
            stderr: tokio::sync::Mutex::new(Some(parts.stderr)),
            exit: parts.exit,
        }),
        Err(e) => {
            if let Some(cg) = &cgroup {
                if let Err(e2) = cg.remove().await {
                    tracing::warn!("cleanup after failed create: {e2}");
                }
            }
            Err(e)
        }
    }
}

struct Spawned {
    pid: i32,
    sync: UnixStream,
    stdin: Option<pipe::Sender>,
    stdout: pipe::Receiver,
    stderr: pipe::Receiver,
    exit: watch::Receiver<Option<ExitInfo>>,
}

/// Kills a half-created init and waits until the reaper saw it go.
async fn abort_init(pid: i32, exit: &watch::Receiver<Option<ExitInfo>>) {
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    let mut rx = exit.clone();
    if tokio::time::timeout(KILL_TIMEOUT, rx.wait_for(|e| e.is_some()))
        .await
        .is_err()
    {
        tracing::warn!(pid, "half-created init did not exit after SIGKILL");
    }
}

async fn spawn_init(
    reaper: &Arc<Reaper>,
    id: &str,
    plan: &Plan,
    want_stdin: bool,
    cgroup: Option<&Cgroup>,
) -> Result<Spawned> {
    let (stdin_r, stdin_w): (OwnedFd, Option<OwnedFd>) = if want_stdin {
        let (r, w) = pipe_pair()?;
        (r, Some(w))
    } else {
        let f = fs::File::open("/dev/null")
            .map_err(|e| AgentError::internal(format!("open /dev/null: {e}")))?;
        (OwnedFd::from(f), None)
    };
    let (stdout_r, stdout_w) = pipe_pair()?;
    let (stderr_r, stderr_w) = pipe_pair()?;
    let (sync_parent, sync_child) =
        UnixStream::pair().map_err(|e| AgentError::internal(format!("socketpair: {e}")))?;

    // Everything the child touches is prepared here: after clone it may only make
    // async-signal-safe calls (this process is multi-threaded).
    let exe = CString::new("/proc/self/exe").expect("no NUL");
    let argv_c = [
        CString::new("kata-agent").expect("no NUL"),
        CString::new(INIT_ARG).expect("no NUL"),
    ];
    let argv: Vec<*const libc::c_char> = argv_c
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    let fds = [
        (stdin_r.as_raw_fd(), 0),
        (stdout_w.as_raw_fd(), 1),
        (stderr_w.as_raw_fd(), 2),
        (sync_child.as_raw_fd(), SYNC_FD),
    ];
    let child = move || -> isize {
        // Order matters: sources are >= 3 (fds 0-2 are always open in the agent), so only
        // fd 3 can be both a source and a target, and it is the last target written.
        for (src, dst) in fds {
            // SAFETY: dup2/fcntl are async-signal-safe and only touch fd numbers.
            let ok = unsafe {
                if src == dst {
                    libc::fcntl(dst, libc::F_SETFD, 0) >= 0
                } else {
                    libc::dup2(src, dst) >= 0
                }
            };
            if !ok {
                // SAFETY: _exit is async-signal-safe.
                unsafe { libc::_exit(120) };
            }
        }
        // SAFETY: execve with NUL-terminated arrays of valid C strings prepared before
        // clone; on failure _exit without running any destructor.
        unsafe {
            libc::execve(exe.as_ptr(), argv.as_ptr(), envp.as_ptr());
            libc::_exit(121)
        }
    };
    let mut stack = vec![0u8; CHILD_STACK];
    let flags = CloneFlags::from_bits_truncate(plan.namespaces.clone_flags());
    // SAFETY: the child runs a copy of this address space (no CLONE_VM) and only calls
    // dup2/fcntl/execve/_exit, all async-signal-safe, on data prepared before clone.
    let pid = unsafe { nix::sched::clone(Box::new(child), &mut stack, flags, Some(libc::SIGCHLD)) }
        .map_err(|e| {
            AgentError::internal(format!(
                "clone container init for {id} (flags {:#x}): {}",
                flags.bits(),
                e.desc()
            ))
        })?
        .as_raw();
    let exit = reaper.register(pid);
    drop((stdin_r, stdout_w, stderr_w, sync_child));
    tracing::debug!(pid, id, "container init cloned");

    if let Some(cg) = cgroup {
        if let Err(e) = cg.add_pid(pid) {
            abort_init(pid, &exit).await;
            return Err(e);
        }
    }
    let config = serde_json::to_vec(&plan.init)
        .map_err(|e| AgentError::internal(format!("encode init config: {e}")))?;
    let idc = id.to_string();
    let handshake = tokio::task::spawn_blocking(move || -> Result<UnixStream> {
        let mut sync = sync_parent;
        let io =
            |e: std::io::Error| AgentError::internal(format!("container {idc}: talk to init: {e}"));
        sync.set_read_timeout(Some(SYNC_TIMEOUT)).map_err(io)?;
        sync.write_all(&config).map_err(io)?;
        sync.write_all(b"\n").map_err(io)?;
        let mut line = Vec::new();
        BufReader::new(&sync)
            .read_until(b'\n', &mut line)
            .map_err(io)?;
        if line.is_empty() {
            return Err(AgentError::internal(format!(
                "container {idc}: init exited during setup without a word"
            )));
        }
        match serde_json::from_slice::<InitReply>(line.trim_ascii_end()) {
            Ok(InitReply::Ready(true)) => {
                sync.set_read_timeout(Some(SYNC_TIMEOUT)).map_err(io)?;
                Ok(sync)
            }
            _ => Err(reply_error(&idc, &line)),
        }
    })
    .await
    .map_err(|e| AgentError::internal(format!("handshake task: {e}")))
    .and_then(|r| r);
    let sync = match handshake {
        Ok(s) => s,
        Err(e) => {
            abort_init(pid, &exit).await;
            return Err(e);
        }
    };
    let rx = |fd: OwnedFd| {
        pipe::Receiver::from_owned_fd(fd)
            .map_err(|e| AgentError::internal(format!("stdio pipe: {e}")))
    };
    let stdout = rx(stdout_r)?;
    let stderr = rx(stderr_r)?;
    let stdin = match stdin_w {
        Some(w) => Some(
            pipe::Sender::from_owned_fd(w)
                .map_err(|e| AgentError::internal(format!("stdin pipe: {e}")))?,
        ),
        None => None,
    };
    Ok(Spawned {
        pid,
        sync,
        stdin,
        stdout,
        stderr,
        exit,
    })
}

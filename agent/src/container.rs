//! Container lifecycle on the agent side: clone the init into new namespaces, put it in its
//! cgroup, hand it its config, start it, signal it, tear everything down.

use std::collections::{HashMap, HashSet};
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
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::unix::pipe;
use tokio::sync::watch;

use crate::cgroup::Cgroup;
use crate::error::{AgentError, Result};
use crate::init::{ExecConfig, InitReply, EXEC_ARG, INIT_ARG, SYNC_FD};
use crate::plan::{Plan, ProcessConfig};
use crate::pty::PtyMaster;
use crate::reaper::{ExitInfo, Reaper};

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

/// Boxed async stream types for process stdio (pipes or a pty master).
pub type Reader = Box<dyn AsyncRead + Send + Unpin>;
/// See [`Reader`].
pub type Writer = Box<dyn AsyncWrite + Send + Unpin>;

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
}

impl Process {
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
        kill(Pid::from_raw(self.pid), sig).map_err(|e| {
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
}

impl Container {
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
        self.cgroup()?.freeze(frozen).await?;
        *self.paused.lock().unwrap_or_else(|e| e.into_inner()) = frozen;
        Ok(())
    }

    /// Starts an additional process in the running container: it joins the init's
    /// namespaces (pid at clone time, the others in the helper) and its cgroup.
    pub async fn exec(
        &self,
        reaper: &Arc<Reaper>,
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
        let res = self.exec_inner(reaper, exec_id, process, stdin).await;
        self.exec_pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(exec_id);
        let p = res?;
        let pid = p.pid;
        self.execs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(exec_id.to_string(), p);
        Ok(pid)
    }

    async fn exec_inner(
        &self,
        reaper: &Arc<Reaper>,
        exec_id: &str,
        process: ProcessConfig,
        stdin: bool,
    ) -> Result<Arc<Process>> {
        let target = self.init.pid;
        let ns_differs = |ns: &str| -> Result<bool> {
            let theirs = fs::read_link(format!("/proc/{target}/ns/{ns}")).map_err(|e| {
                AgentError::precondition(format!(
                    "container {}: read /proc/{target}/ns/{ns}: {e}",
                    self.id
                ))
            })?;
            Ok(fs::read_link(format!("/proc/self/ns/{ns}")).ok() != Some(theirs))
        };
        let mut join = Vec::new();
        for ns in ["cgroup", "ipc", "uts", "mnt"] {
            if ns_differs(ns)? {
                join.push(ns.to_string());
            }
        }
        let pidns = if ns_differs("pid")? {
            Some(
                fs::File::open(format!("/proc/{target}/ns/pid")).map_err(|e| {
                    AgentError::precondition(format!(
                        "container {}: open /proc/{target}/ns/pid: {e}",
                        self.id
                    ))
                })?,
            )
        } else {
            None
        };
        let terminal = process.terminal;
        let cfg = ExecConfig {
            target_pid: target,
            join,
            process,
        };
        let config = serde_json::to_vec(&cfg)
            .map_err(|e| AgentError::internal(format!("encode exec config: {e}")))?;
        let spawned = spawn(
            reaper,
            SpawnArgs {
                id: &self.id,
                exec_id,
                mode: EXEC_ARG,
                clone_flags: 0,
                config,
                stdin,
                terminal,
                cgroup: self.cgroup.as_ref(),
                pidns,
            },
        )
        .await?;
        let Spawned {
            process: p, sync, ..
        } = spawned;
        if let Err(e) = release(&self.id, sync).await {
            abort_init(p.pid, &p.exit).await;
            return Err(e);
        }
        Ok(Arc::new(p))
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
        release(&self.id, sync).await?;
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
            let _ = cg.freeze(false).await;
        }
        if self.init.exit_info().is_none() {
            let _ = kill(Pid::from_raw(self.init.pid), Signal::SIGKILL);
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
            cg.remove().await?;
        }
        Ok(())
    }
}

/// Reads one reply line and the fd passed with it (SCM_RIGHTS). The line is sent with a
/// single sendmsg and is short, so one recvmsg carries all of it.
fn recv_line_with_fd(sync: &UnixStream) -> std::io::Result<(Vec<u8>, Option<OwnedFd>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::FromRawFd;
    let mut buf = vec![0u8; 4096];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(
        sync.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(std::io::Error::from)?;
    let mut fd = None;
    for c in msg.cmsgs().map_err(std::io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for raw in fds {
                // SAFETY: the kernel just installed this descriptor in our table for us.
                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                if fd.is_none() {
                    fd = Some(owned);
                }
            }
        }
    }
    let n = msg.bytes;
    buf.truncate(n);
    Ok((buf, fd))
}

/// Writes `start` on the sync socket and waits for the exec: EOF = success.
async fn release(id: &str, sync: UnixStream) -> Result<()> {
    let id = id.to_string();
    tokio::task::spawn_blocking(move || -> Result<()> {
        let mut sync = sync;
        sync.write_all(b"start\n")
            .map_err(|e| AgentError::internal(format!("container {id}: release init: {e}")))?;
        let mut buf = Vec::new();
        sync.read_to_end(&mut buf)
            .map_err(|e| AgentError::internal(format!("container {id}: start: {e}")))?;
        if buf.is_empty() {
            return Ok(()); // close-on-exec fired: execve succeeded
        }
        Err(reply_error(&format!("container {id}"), &buf))
    })
    .await
    .map_err(|e| AgentError::internal(format!("start task: {e}")))?
}

fn reply_error(id: &str, buf: &[u8]) -> AgentError {
    let line = buf.split(|b| *b == b'\n').next().unwrap_or_default();
    match serde_json::from_slice::<InitReply>(line) {
        Ok(InitReply::Error(msg)) => AgentError::invalid(format!("{id}: {msg}")),
        _ => AgentError::internal(format!(
            "{id}: unexpected reply from init: {:?}",
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
    /// A pod container: the pid (root PID namespace) of its sandbox container's init,
    /// whose namespaces the plan's `join_*` name.
    pub sandbox_pid: Option<i32>,
}

/// Creates a container: cgroup, stdio pipes (or a pty), the init cloned into new
/// namespaces, and the setup handshake. On failure nothing is left behind (process killed
/// and reaped, cgroup removed; the mounts lived only in the init's mount namespace).
pub async fn create(reaper: &Arc<Reaper>, mut opts: CreateOptions<'_>) -> Result<Container> {
    let id = opts.id.to_string();
    let ns = opts.plan.namespaces;
    let sandbox_ns = |name: &str| -> Result<PathBuf> {
        let pid = opts.sandbox_pid.ok_or_else(|| {
            AgentError::precondition(format!(
                "container {id}: the spec joins the pod's {name} namespace but the pod has no sandbox container"
            ))
        })?;
        Ok(PathBuf::from(format!("/proc/{pid}/ns/{name}")))
    };
    let pidns = if ns.join_pid {
        let p = sandbox_ns("pid")?;
        Some(fs::File::open(&p).map_err(|e| {
            AgentError::precondition(format!(
                "container {id}: open {} (the pod's sandbox container is gone?): {e}",
                p.display()
            ))
        })?)
    } else {
        None
    };
    for (join, name) in [(ns.join_uts, "uts"), (ns.join_ipc, "ipc")] {
        if join {
            let p = sandbox_ns(name)?;
            opts.plan.init.join.push((name.to_string(), p));
        }
    }
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
    let res = async {
        let config = serde_json::to_vec(&opts.plan.init)
            .map_err(|e| AgentError::internal(format!("encode init config: {e}")))?;
        spawn(
            reaper,
            SpawnArgs {
                id: &id,
                exec_id: "",
                mode: INIT_ARG,
                clone_flags: opts.plan.namespaces.clone_flags(),
                config,
                stdin: opts.stdin,
                terminal: opts.plan.init.process.terminal,
                cgroup: cgroup.as_ref(),
                pidns,
            },
        )
        .await
    }
    .await;
    // The device program goes on the cgroup once the init has built the root (its /dev
    // nodes are made, as runc makes them before it applies the device rules) and before
    // the workload or any exec can run.
    let res = match (res, &cgroup) {
        (Ok(parts), Some(cg)) => {
            let prog = &opts.plan.device_program;
            match crate::devices::attach(prog, cg.path()) {
                Ok(()) => Ok(parts),
                Err(e) => {
                    abort_init(parts.process.pid, &parts.process.exit).await;
                    Err(AgentError::internal(format!(
                        "container {id}: linux.resources.devices: {e}"
                    )))
                }
            }
        }
        (res, _) => res,
    };
    match res {
        Ok(parts) => Ok(Container {
            id,
            init: Arc::new(parts.process),
            cgroup,
            sync: Mutex::new(Some(parts.sync)),
            started: Mutex::new(false),
            execs: Mutex::new(HashMap::new()),
            exec_pending: Mutex::new(HashSet::new()),
            seccomp: opts.plan.init.process.seccomp.clone(),
            paused: Mutex::new(false),
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
    process: Process,
    sync: UnixStream,
}

/// Kills a half-created process and waits until the reaper saw it go.
async fn abort_init(pid: i32, exit: &watch::Receiver<Option<ExitInfo>>) {
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    let mut rx = exit.clone();
    if tokio::time::timeout(KILL_TIMEOUT, rx.wait_for(|e| e.is_some()))
        .await
        .is_err()
    {
        tracing::warn!(pid, "half-created process did not exit after SIGKILL");
    }
}

struct SpawnArgs<'a> {
    id: &'a str,
    exec_id: &'a str,
    /// argv[1] of the helper: [`INIT_ARG`] or [`EXEC_ARG`].
    mode: &'static str,
    clone_flags: libc::c_int,
    /// JSON config line for the helper.
    config: Vec<u8>,
    stdin: bool,
    terminal: bool,
    cgroup: Option<&'a Cgroup>,
    /// PID namespace the child is created in (exec); None = per `clone_flags`.
    pidns: Option<fs::File>,
}

/// Clones `/proc/self/exe <mode>` with the stdio and sync fds in place. Only
/// async-signal-safe calls happen in the child (this process is multi-threaded).
fn clone_helper(mode: &str, fds: [(i32, i32); 4], flags: libc::c_int) -> nix::Result<i32> {
    let exe = CString::new("/proc/self/exe").expect("no NUL");
    let argv_c = [
        CString::new("kata-agent").expect("no NUL"),
        CString::new(mode).expect("no NUL"),
    ];
    let argv: Vec<*const libc::c_char> = argv_c
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    let child = move || -> isize {
        // Order matters: sources are >= 3 (fds 0-2 are always open in the agent), so only
        // fd 3 can be both a source and a target, and it is the last target written.
        // A source used twice (the pty slave) is never a target.
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
    let flags = CloneFlags::from_bits_truncate(flags);
    // SAFETY: the child runs a copy of this address space (no CLONE_VM) and only calls
    // dup2/fcntl/execve/_exit, all async-signal-safe, on data prepared before clone.
    unsafe { nix::sched::clone(Box::new(child), &mut stack, flags, Some(libc::SIGCHLD)) }
        .map(|p| p.as_raw())
}

async fn spawn(reaper: &Arc<Reaper>, a: SpawnArgs<'_>) -> Result<Spawned> {
    let id = a.id;
    let what = if a.exec_id.is_empty() {
        format!("container {id}")
    } else {
        format!("container {id} exec {}", a.exec_id)
    };
    let devnull = || -> Result<OwnedFd> {
        fs::File::open("/dev/null")
            .map(OwnedFd::from)
            .map_err(|e| AgentError::internal(format!("open /dev/null: {e}")))
    };
    let (sync_parent, sync_child) =
        UnixStream::pair().map_err(|e| AgentError::internal(format!("socketpair: {e}")))?;
    // Child ends (dropped after clone) and our ends.
    // Terminal processes open their pty in the container (its devpts, as runc) and send
    // the master back with the ready reply; until then their stdio is /dev/null.
    let (child_fds, stdin_w, stdout, stderr): (
        Vec<OwnedFd>,
        Option<Writer>,
        Option<Reader>,
        Option<Reader>,
    ) = if a.terminal {
        (vec![devnull()?, devnull()?, devnull()?], None, None, None)
    } else {
        let (stdin_r, stdin_w) = if a.stdin {
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
        (
            vec![stdin_r, stdout_w, stderr_w],
            stdin_w,
            Some(rx(stdout_r)?),
            Some(rx(stderr_r)?),
        )
    };
    let fds = [
        (child_fds[0].as_raw_fd(), 0),
        (child_fds[1].as_raw_fd(), 1),
        (child_fds[2].as_raw_fd(), 2),
        (sync_child.as_raw_fd(), SYNC_FD),
    ];
    let flags = a.clone_flags;
    let mode = a.mode;
    let cloned = match &a.pidns {
        None => clone_helper(mode, fds, flags),
        // setns(CLONE_NEWPID) only changes where the calling thread's children go: do it
        // on a short-lived thread of its own so no other thread is affected.
        Some(ns) => std::thread::scope(|s| {
            s.spawn(|| {
                let own = fs::File::open("/proc/self/ns/pid").map_err(|_| nix::Error::EIO)?;
                nix::sched::setns(ns, CloneFlags::CLONE_NEWPID)?;
                let r = clone_helper(mode, fds, flags);
                let _ = nix::sched::setns(&own, CloneFlags::CLONE_NEWPID);
                r
            })
            .join()
            .unwrap_or(Err(nix::Error::EIO))
        }),
    };
    let pid = cloned.map_err(|e| {
        AgentError::internal(format!(
            "clone the {mode} helper for {what} (flags {flags:#x}): {}",
            e.desc()
        ))
    })?;
    let exit = reaper.register(pid);
    drop((child_fds, sync_child));
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
        tokio::task::spawn_blocking(move || -> Result<(UnixStream, Option<OwnedFd>)> {
            let mut sync = sync_parent;
            let io = |e: std::io::Error| AgentError::internal(format!("{idc}: talk to init: {e}"));
            sync.set_read_timeout(Some(SYNC_TIMEOUT)).map_err(io)?;
            sync.write_all(&config).map_err(io)?;
            sync.write_all(b"\n").map_err(io)?;
            let (line, master) = if terminal {
                recv_line_with_fd(&sync).map_err(io)?
            } else {
                let mut line = Vec::new();
                BufReader::new(&sync)
                    .read_until(b'\n', &mut line)
                    .map_err(io)?;
                (line, None)
            };
            if line.is_empty() {
                return Err(AgentError::internal(format!(
                    "{idc}: init exited during setup without a word"
                )));
            }
            match serde_json::from_slice::<InitReply>(line.trim_ascii_end()) {
                Ok(InitReply::Ready(true)) if terminal && master.is_none() => {
                    Err(AgentError::internal(format!(
                        "{idc}: init said ready without sending the pty master"
                    )))
                }
                Ok(InitReply::Ready(true)) => {
                    sync.set_read_timeout(Some(SYNC_TIMEOUT)).map_err(io)?;
                    Ok((sync, master))
                }
                _ => Err(reply_error(&idc, &line)),
            }
        })
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
    let (stdin_w, stdout) = match &pty {
        Some(master) => {
            let io = (|| -> Result<(Option<Writer>, Reader)> {
                let w: Option<Writer> = if a.stdin {
                    Some(Box::new(PtyMaster::new(master)?))
                } else {
                    None
                };
                Ok((w, Box::new(PtyMaster::new(master)?)))
            })();
            match io {
                Ok(v) => v,
                Err(e) => {
                    abort_init(pid, &exit).await;
                    return Err(e);
                }
            }
        }
        None => (stdin_w, stdout.expect("pipes when there is no terminal")),
    };
    Ok(Spawned {
        process: Process {
            container_id: id.to_string(),
            exec_id: a.exec_id.to_string(),
            pid,
            stdin: tokio::sync::Mutex::new(stdin_w),
            stdout: tokio::sync::Mutex::new(Some(stdout)),
            stderr: tokio::sync::Mutex::new(stderr),
            pty,
            exit,
        },
        sync,
    })
}

//! The system calls the container model makes, from CreateContainer's steps to teardown,
//! behind [`ContainerSys`] so that the lifecycle (create and its rollback, states, exec ids,
//! pause, teardown) is unit-tested with a fake; [`RealSys`] makes them.

use std::fs;
use std::io;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::sync::watch;

use crate::cgroup::Cgroup;
use crate::error::{AgentError, Result};
use crate::init::{ExecConfig, EXEC_ARG};
use crate::plan::ProcessConfig;
use crate::reaper::{ExitInfo, Reaper};
use crate::spawn::{self, SpawnArgs, Started};

/// An exec'd process to start in a running container.
pub struct ExecRequest<'a> {
    /// Container id.
    pub id: &'a str,
    /// Exec id (checked by the model).
    pub exec_id: &'a str,
    /// The container init's pid (root PID namespace): its namespaces are joined.
    pub target_pid: i32,
    /// The process, with the container's seccomp program.
    pub process: ProcessConfig,
    /// Give the process a stdin pipe.
    pub stdin: bool,
    /// The container's cgroup, which the process joins.
    pub cgroup: Option<&'a Cgroup>,
}

/// What the container model asks of the system.
#[async_trait]
pub trait ContainerSys: Send + Sync {
    /// Opens a namespace file (`/proc/<pid>/ns/<name>`) to clone into.
    fn open_ns(&self, path: &Path) -> io::Result<fs::File>;
    /// Whether `path` is a directory (following symlinks).
    fn is_dir(&self, path: &Path) -> io::Result<bool>;
    /// Creates the container's cgroup `<root>/kata-rs/<id>` with its limits (nothing is
    /// left on failure).
    fn create_cgroup(&self, root: &Path, id: &str, writes: &[(String, String)]) -> Result<Cgroup>;
    /// Starts a helper, set up and waiting for `start` on the returned sync socket (killed
    /// and reaped on failure).
    async fn spawn(&self, args: SpawnArgs<'_>) -> Result<(Started, UnixStream)>;
    /// Attaches the device program to the cgroup.
    fn attach_devices(
        &self,
        prog: &[crate::devices::BpfInsn],
        cgroup: &Cgroup,
    ) -> std::result::Result<(), String>;
    /// Kills a half-created process and waits until the reaper saw it go.
    async fn abort(&self, pid: i32, exit: &watch::Receiver<Option<ExitInfo>>);
    /// kill(2).
    fn kill(&self, pid: i32, sig: Signal) -> nix::Result<()>;
    /// Releases a created helper (`start` on its sync socket) and waits for its execve.
    async fn release(&self, id: &str, sync: UnixStream) -> Result<()>;
    /// Starts an exec'd process: set up, released, running.
    async fn exec(&self, req: ExecRequest<'_>) -> Result<Started>;
    /// Freezes or thaws the cgroup.
    async fn freeze(&self, cgroup: &Cgroup, frozen: bool) -> Result<()>;
    /// Kills what is left in the cgroup and removes it.
    async fn remove_cgroup(&self, cgroup: &Cgroup) -> Result<()>;
}

/// The real system calls.
#[derive(Clone)]
pub struct RealSys {
    reaper: Arc<Reaper>,
}

impl RealSys {
    /// Processes started through it are reaped by `reaper`.
    pub fn new(reaper: Arc<Reaper>) -> Self {
        RealSys { reaper }
    }
}

#[async_trait]
impl ContainerSys for RealSys {
    fn open_ns(&self, path: &Path) -> io::Result<fs::File> {
        fs::File::open(path)
    }

    fn is_dir(&self, path: &Path) -> io::Result<bool> {
        fs::metadata(path).map(|m| m.is_dir())
    }

    fn create_cgroup(&self, root: &Path, id: &str, writes: &[(String, String)]) -> Result<Cgroup> {
        Cgroup::create(root, id, writes)
    }

    async fn spawn(&self, args: SpawnArgs<'_>) -> Result<(Started, UnixStream)> {
        spawn::spawn(&self.reaper, args).await
    }

    fn attach_devices(
        &self,
        prog: &[crate::devices::BpfInsn],
        cgroup: &Cgroup,
    ) -> std::result::Result<(), String> {
        crate::devices::attach(prog, cgroup.path())
    }

    async fn abort(&self, pid: i32, exit: &watch::Receiver<Option<ExitInfo>>) {
        spawn::abort_init(pid, exit).await;
    }

    fn kill(&self, pid: i32, sig: Signal) -> nix::Result<()> {
        kill(Pid::from_raw(pid), sig)
    }

    async fn release(&self, id: &str, sync: UnixStream) -> Result<()> {
        spawn::release(id, sync).await
    }

    /// The helper is cloned in the init's pid namespace, moved into the container's
    /// cgroup, and joins the init's other namespaces (those that differ from the agent's).
    async fn exec(&self, req: ExecRequest<'_>) -> Result<Started> {
        let target = req.target_pid;
        let id = req.id;
        let ns_differs = |ns: &str| -> Result<bool> {
            let theirs = fs::read_link(format!("/proc/{target}/ns/{ns}")).map_err(|e| {
                AgentError::precondition(format!(
                    "container {id}: read /proc/{target}/ns/{ns}: {e}"
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
                        "container {id}: open /proc/{target}/ns/pid: {e}"
                    ))
                })?,
            )
        } else {
            None
        };
        let terminal = req.process.terminal;
        let cfg = ExecConfig {
            target_pid: target,
            join,
            process: req.process,
        };
        let config = serde_json::to_vec(&cfg)
            .map_err(|e| AgentError::internal(format!("encode exec config: {e}")))?;
        let (started, sync) = self
            .spawn(SpawnArgs {
                id,
                exec_id: req.exec_id,
                mode: EXEC_ARG,
                clone_flags: 0,
                config,
                stdin: req.stdin,
                terminal,
                cgroup: req.cgroup,
                pidns,
            })
            .await?;
        if let Err(e) = spawn::release(id, sync).await {
            self.abort(started.pid, &started.exit).await;
            return Err(e);
        }
        Ok(started)
    }

    async fn freeze(&self, cgroup: &Cgroup, frozen: bool) -> Result<()> {
        cgroup.freeze(frozen).await
    }

    async fn remove_cgroup(&self, cgroup: &Cgroup) -> Result<()> {
        cgroup.remove().await
    }
}

//! The ttrpc `AgentService` implementation: request validation and the container table.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use kata_rs_protocol::agent::*;
use nix::sys::signal::Signal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::container::{self, Container, ContainerSys, CreateOptions, Process, RealSys};
use crate::error::{AgentError, Result};
use crate::plan;
use crate::reaper::Reaper;
use crate::restore::{self, RealRestoreSys, RestoreSys};
use crate::share::Share;

mod rpc;
pub use rpc::Service;

/// Largest chunk one ReadStdout/ReadStderr returns.
pub const MAX_READ: usize = 64 * 1024;

/// What Shutdown does once it has replied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownAction {
    /// PID 1 in the guest: sync and reboot(RB_AUTOBOOT), which ends the VM.
    Reboot,
    /// Development mode: exit the process.
    Exit,
}

/// The agent's state, shared by all connections.
pub struct Agent {
    /// The system calls of the container model (the real ones, or a test's fake).
    sys: Arc<dyn ContainerSys>,
    cgroup_root: Option<PathBuf>,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    creating: Mutex<HashSet<String>>,
    /// The sandbox share (containers' root file systems and bind-mount sources): as found
    /// at boot, then as AfterRestore mounted it.
    share: Arc<RwLock<Share>>,
    /// Where AfterRestore mounts the share.
    share_dir: PathBuf,
    /// AfterRestore's system calls (the real ones, or a test's fake).
    restore_sys: Arc<dyn RestoreSys + Send + Sync>,
    /// Whether AfterRestore may act: only as the guest's init (PID 1).
    guest_init: bool,
    /// One AfterRestore at a time (held by its blocking task, which outlives a cancelled
    /// request).
    restoring: Arc<tokio::sync::Mutex<()>>,
    /// oom_kill counts already reported by GetOomEvent.
    oom_seen: Mutex<HashMap<String, u64>>,
    shutdown: tokio::sync::mpsc::Sender<()>,
}

/// Which stream a read is for.
#[derive(Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

impl Agent {
    /// Creates the agent. `shutdown` receives one message when Shutdown was requested.
    pub fn new(
        reaper: Arc<Reaper>,
        cgroup_root: Option<PathBuf>,
        share: Share,
        shutdown: tokio::sync::mpsc::Sender<()>,
    ) -> Self {
        Self::with_sys(Arc::new(RealSys::new(reaper)), cgroup_root, share, shutdown)
    }

    /// The agent on the given system calls (tests pass a fake).
    pub(crate) fn with_sys(
        sys: Arc<dyn ContainerSys>,
        cgroup_root: Option<PathBuf>,
        share: Share,
        shutdown: tokio::sync::mpsc::Sender<()>,
    ) -> Self {
        let share_dir = match &share {
            Share::Ready { dir } | Share::Failed { dir, .. } => dir.clone(),
            Share::Absent => PathBuf::from(crate::share::GUEST_SHARE_DIR),
        };
        Agent {
            sys,
            cgroup_root,
            containers: Mutex::new(HashMap::new()),
            creating: Mutex::new(HashSet::new()),
            share: Arc::new(RwLock::new(share)),
            share_dir,
            restore_sys: Arc::new(RealRestoreSys::default()),
            guest_init: std::process::id() == 1,
            restoring: Arc::new(tokio::sync::Mutex::new(())),
            oom_seen: Mutex::new(HashMap::new()),
            shutdown,
        }
    }

    /// SetGuestDateTime: sets CLOCK_REALTIME, only as the guest's init (PID 1), so that
    /// development mode on a host never touches the host's clock.
    pub fn set_guest_time(&self, sec: i64, usec: i64) -> Result<()> {
        validate_time(sec, usec)?;
        if std::process::id() != 1 {
            return Err(AgentError::precondition(
                "SetGuestDateTime: the agent is not the guest's init (PID 1); the clock is left alone",
            ));
        }
        set_realtime(sec, usec)
    }

    /// AfterRestore (`crate::restore`): validates the request, then, only as the guest's
    /// init (PID 1; development mode never touches the host's entropy, hostname, sysfs or
    /// mounts), runs its steps, one call at a time, off the async workers. Returns the devices
    /// probe_devices bound.
    pub async fn after_restore(&self, req: AfterRestoreRequest) -> Result<Vec<String>> {
        restore::validate(&req)?;
        if !self.guest_init {
            return Err(AgentError::precondition(
                "AfterRestore: the agent is not the guest's init (PID 1); nothing is changed",
            ));
        }
        let one = self.restoring.clone().lock_owned().await;
        let sys = self.restore_sys.clone();
        let share = self.share.clone();
        let dir = self.share_dir.clone();
        tokio::task::spawn_blocking(move || {
            let _one = one;
            restore::run(&*sys, &req, &share, &dir, restore::PROBE_TIMEOUT)
        })
        .await
        .map_err(|e| AgentError::internal(format!("AfterRestore: {e}")))?
    }

    /// The agent with AfterRestore on `sys`, acting as if it were the guest's init.
    #[cfg(test)]
    pub(crate) fn with_restore_sys(mut self, sys: Arc<dyn RestoreSys + Send + Sync>) -> Self {
        self.restore_sys = sys;
        self.guest_init = true;
        self
    }

    fn get(&self, id: &str) -> Result<Arc<Container>> {
        plan::validate_id(id)?;
        self.containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| AgentError::not_found(format!("container {id:?} not found")))
    }

    fn process(&self, id: &str, exec_id: &str) -> Result<Arc<Process>> {
        self.get(id)?.process(exec_id)
    }

    /// CreateContainer's checks, without side effects: the id, the spec and its plan, the
    /// root file system and bind sources in the share, a pod member's sandbox container.
    /// Returns the plan and, for a pod member, the sandbox container's pid.
    pub(crate) fn plan_create(
        &self,
        req: &CreateContainerRequest,
    ) -> Result<(plan::Plan, Option<i32>)> {
        let id = req.container_id.as_str();
        plan::validate_id(id)?;
        let spec = plan::parse_spec(&req.oci_spec)?;
        // The root file system and the bind sources come only through the sandbox share:
        // `<share>/<id>/rootfs` exactly, sources under `<share>/<id>/`.
        let dir = self
            .share
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .container_dir(id)?;
        let rootfs = dir.join(kata_rs_protocol::guest::ROOTFS_DIR);
        if req.rootfs_path.as_bytes() != rootfs.as_os_str().as_encoded_bytes() {
            return Err(AgentError::invalid(format!(
                "container {id}: rootfs_path {:?} must be {rootfs:?} (the container's root file system in the sandbox share)",
                req.rootfs_path
            )));
        }
        let role = plan::PodRole::of(id, &req.sandbox_id);
        if role == plan::PodRole::Member {
            plan::validate_id(&req.sandbox_id)?;
        }
        let mut plan = plan::plan(&spec, &rootfs, role)?;
        plan::check_bind_sources(&plan.init.mounts, &dir)
            .map_err(|e| AgentError::invalid(format!("container {id}: {}", e.message)))?;
        plan.init.sources_dir = dir;
        let sandbox_pid = if role == plan::PodRole::Member {
            let sb = self.get(&req.sandbox_id).map_err(|_| {
                AgentError::precondition(format!(
                    "container {id}: the pod's sandbox container {:?} is not in this guest",
                    req.sandbox_id
                ))
            })?;
            if sb.init.exit_info().is_some() {
                return Err(AgentError::precondition(format!(
                    "container {id}: the pod's sandbox container {:?} has exited; its namespaces are gone",
                    req.sandbox_id
                )));
            }
            Some(sb.pid())
        } else {
            None
        };
        plan.init.process.terminal |= req.terminal;
        Ok((plan, sandbox_pid))
    }

    /// CreateContainer.
    pub async fn create_container(&self, req: CreateContainerRequest) -> Result<()> {
        let id = req.container_id.as_str();
        let (plan, sandbox_pid) = self.plan_create(&req)?;
        {
            let exists = self
                .containers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(id);
            let mut creating = self.creating.lock().unwrap_or_else(|e| e.into_inner());
            if exists || !creating.insert(id.to_string()) {
                return Err(AgentError::already_exists(format!(
                    "container {id:?} already exists"
                )));
            }
        }
        let res = container::create(
            &self.sys,
            CreateOptions {
                id,
                plan,
                stdin: req.stdin,
                cgroup_root: self.cgroup_root.as_deref(),
                sandbox_pid,
            },
        )
        .await;
        let mut creating = self.creating.lock().unwrap_or_else(|e| e.into_inner());
        creating.remove(id);
        let c = res?;
        tracing::info!(id, pid = c.pid(), "container created");
        self.containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), Arc::new(c));
        Ok(())
    }

    /// StartContainer.
    pub async fn start_container(&self, id: &str) -> Result<u32> {
        let c = self.get(id)?;
        let pid = c.start().await?;
        tracing::info!(id, pid, "container started");
        Ok(pid as u32)
    }

    /// SignalProcess.
    pub fn signal_process(&self, id: &str, exec_id: &str, signal: u32) -> Result<()> {
        let c = self.process(id, exec_id)?;
        let sig = i32::try_from(signal)
            .ok()
            .and_then(|s| Signal::try_from(s).ok())
            .ok_or_else(|| AgentError::invalid(format!("signal {signal} is not a valid signal")))?;
        c.signal(sig)
    }

    /// WaitProcess.
    pub async fn wait_process(&self, id: &str, exec_id: &str) -> Result<WaitProcessResponse> {
        let c = self.process(id, exec_id)?;
        let e = c.wait().await;
        let mut r = WaitProcessResponse::new();
        r.status = e.status;
        r.exited_at_unix_nanos = e.exited_at_unix_nanos;
        // The init's end: an OOM kill the poller has not reported yet goes with the exit,
        // or a removal right after it (ctr run --rm) would lose it.
        if exec_id.is_empty() {
            if let Ok(container) = self.get(id) {
                r.oom_killed = self.take_new_oom_kill(&container);
            }
        }
        Ok(r)
    }

    /// Whether `c`'s cgroup counted an OOM kill since the last report; marks it reported.
    fn take_new_oom_kill(&self, c: &Container) -> bool {
        let Ok(cg) = c.cgroup() else { return false };
        let n = cg.oom_kills();
        let mut seen = self.oom_seen.lock().unwrap_or_else(|e| e.into_inner());
        let last = seen.entry(c.id.clone()).or_insert(0);
        if n > *last {
            *last = n;
            return true;
        }
        false
    }

    async fn read(&self, id: &str, exec_id: &str, len: u32, which: Stream) -> Result<Vec<u8>> {
        let c = self.process(id, exec_id)?;
        let len = match len as usize {
            0 => MAX_READ,
            n => n.min(MAX_READ),
        };
        let mut guard = match which {
            Stream::Stdout => c.stdout.lock().await,
            Stream::Stderr => c.stderr.lock().await,
        };
        let Some(rx) = guard.as_mut() else {
            return Ok(Vec::new());
        };
        let mut buf = vec![0u8; len];
        let n = rx
            .read(&mut buf)
            .await
            .map_err(|e| AgentError::internal(format!("container {id}: read stream: {e}")))?;
        if n == 0 {
            guard.take(); // EOF: close our end, later reads return EOF at once
        }
        buf.truncate(n);
        Ok(buf)
    }

    async fn write_stdin(&self, id: &str, exec_id: &str, data: &[u8]) -> Result<u32> {
        let c = self.process(id, exec_id)?;
        let mut guard = c.stdin.lock().await;
        let tx = guard.as_mut().ok_or_else(|| {
            AgentError::precondition(format!(
                "container {id} exec {exec_id:?}: stdin is closed or was not requested (the request's stdin flag)"
            ))
        })?;
        tx.write_all(data)
            .await
            .map_err(|e| AgentError::internal(format!("container {id}: write stdin: {e}")))?;
        Ok(data.len() as u32)
    }

    async fn close_stdin(&self, id: &str, exec_id: &str) -> Result<()> {
        let c = self.process(id, exec_id)?;
        c.stdin.lock().await.take();
        Ok(())
    }

    /// RemoveContainer.
    pub async fn remove_container(&self, id: &str) -> Result<()> {
        let c = self.get(id)?;
        c.destroy().await?;
        self.containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        self.oom_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        tracing::info!(id, "container removed");
        Ok(())
    }

    /// Kills every container process (used by Shutdown).
    pub async fn kill_all(&self) {
        let all: Vec<Arc<Container>> = self
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for c in &all {
            if c.paused() {
                let _ = c.set_frozen(false).await;
            }
            let _ = c.init.signal(Signal::SIGKILL);
        }
        for c in &all {
            let _ = c.init.wait_timeout(std::time::Duration::from_secs(5)).await;
        }
    }

    /// ExecProcess.
    pub async fn exec_process(&self, req: &ExecProcessRequest) -> Result<u32> {
        let id = req.container_id.as_str();
        let c = self.get(id)?;
        let exec_id = req.exec_id.as_str();
        if exec_id.is_empty() {
            return Err(AgentError::invalid(format!(
                "container {id}: ExecProcess needs a non-empty exec_id"
            )));
        }
        plan::validate_id(exec_id)
            .map_err(|e| AgentError::invalid(format!("container {id}: exec_id: {}", e.message)))?;
        if req.oci_process.is_empty() {
            return Err(AgentError::invalid(format!(
                "container {id} exec {exec_id}: oci_process is empty"
            )));
        }
        let process: oci_spec::runtime::Process = serde_json::from_slice(&req.oci_process)
            .map_err(|e| {
                AgentError::invalid(format!(
                    "container {id} exec {exec_id}: invalid OCI process: {e}"
                ))
            })?;
        let mut cfg = plan::plan_process(&process, None).map_err(|e| {
            AgentError::new(
                e.code,
                format!("container {id} exec {exec_id}: {}", e.message),
            )
        })?;
        cfg.terminal = req.terminal || cfg.terminal;
        let pid = c.exec(exec_id, cfg, req.stdin).await?;
        tracing::info!(id, exec_id, pid, "exec process started");
        Ok(pid as u32)
    }

    /// UpdateContainer.
    pub fn update_container(&self, id: &str, resources: &[u8]) -> Result<()> {
        let c = self.get(id)?;
        let res: oci_spec::runtime::LinuxResources =
            serde_json::from_slice(resources).map_err(|e| {
                AgentError::invalid(format!("container {id}: invalid linux_resources: {e}"))
            })?;
        let writes = plan::plan_cgroup(Some(&res))?;
        c.cgroup()?.write_all(&writes)
    }

    /// GetOomEvent: polls memory.events of every container every 200 ms until one's
    /// oom_kill counter grew since the last report.
    pub async fn oom_event(&self) -> String {
        loop {
            let all: Vec<Arc<Container>> = self
                .containers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .cloned()
                .collect();
            for c in all {
                if self.take_new_oom_kill(&c) {
                    return c.id.clone();
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
}

/// Latest time SetGuestDateTime accepts: 9999-12-31T23:59:59Z.
const MAX_TIME_SEC: i64 = 253_402_300_799;

/// Checks a SetGuestDateTime value: 0..=[`MAX_TIME_SEC`] seconds, 0..=999999 µs.
pub fn validate_time(sec: i64, usec: i64) -> Result<()> {
    check_time(sec, usec).map_err(|e| AgentError::invalid(format!("SetGuestDateTime: {e}")))
}

/// A guest time's ranges (SetGuestDateTime, AfterRestore's clock): what is wrong, if any.
pub fn check_time(sec: i64, usec: i64) -> std::result::Result<(), String> {
    if !(0..=MAX_TIME_SEC).contains(&sec) || !(0..1_000_000).contains(&usec) {
        return Err(format!(
            "{sec} s {usec} µs is out of range (0..={MAX_TIME_SEC} s, 0..=999999 µs)"
        ));
    }
    Ok(())
}

fn set_realtime(sec: i64, usec: i64) -> Result<()> {
    clock_settime_realtime(sec, usec)
        .map_err(|e| AgentError::internal(format!("SetGuestDateTime: clock_settime: {e}")))
}

/// `clock_settime(CLOCK_REALTIME)`, the ranges checked by [`check_time`] before.
pub fn clock_settime_realtime(sec: i64, usec: i64) -> std::io::Result<()> {
    // x86_64 (the only guest): time_t and tv_nsec are i64 with glibc and musl alike.
    let ts = nix::sys::time::TimeSpec::new(sec, usec * 1000);
    nix::time::clock_settime(nix::time::ClockId::CLOCK_REALTIME, ts).map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::fake::FakeSys;

    /// An agent on the fake, its share at /share, its cgroup root at /cg.
    fn agent(fake: &FakeSys) -> Agent {
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        let share = Share::Ready {
            dir: PathBuf::from("/share"),
        };
        Agent::with_sys(Arc::new(fake.clone()), Some("/cg".into()), share, tx)
    }

    fn request(id: &str, sandbox_id: &str) -> CreateContainerRequest {
        CreateContainerRequest {
            container_id: id.into(),
            sandbox_id: sandbox_id.into(),
            rootfs_path: format!("/share/{id}/rootfs"),
            oci_spec: crate::plan::test_spec::BASIC.into(),
            ..Default::default()
        }
    }

    /// A failed CreateContainer leaves neither the container nor its id taken, so the
    /// same id can be created again; a second create of a live id is refused before any
    /// system call.
    #[tokio::test]
    async fn a_failed_create_leaves_no_container_and_frees_its_id() {
        let fake = FakeSys::default();
        let agent = agent(&fake);
        fake.state().fail_spawn = Some(AgentError::internal("handshake: early EOF"));
        let e = agent.create_container(request("c1", "")).await.unwrap_err();
        assert_eq!(e.message, "handshake: early EOF");
        assert_eq!(agent.get("c1").err().unwrap().code, ttrpc::Code::NOT_FOUND);
        assert!(agent.creating.lock().unwrap().is_empty());
        assert!(fake.state().cgroups.is_empty(), "{:?}", fake.calls());

        agent.create_container(request("c1", "")).await.unwrap();
        assert_eq!(agent.get("c1").unwrap().pid(), 100);
        let before = fake.calls().len();
        let e = agent.create_container(request("c1", "")).await.unwrap_err();
        assert_eq!(e.code, ttrpc::Code::ALREADY_EXISTS);
        assert_eq!(fake.calls().len(), before, "{:?}", fake.calls());

        agent.remove_container("c1").await.unwrap();
        assert!(fake.state().cgroups.is_empty(), "{:?}", fake.calls());
        assert_eq!(agent.get("c1").err().unwrap().code, ttrpc::Code::NOT_FOUND);
    }

    /// A pod member whose sandbox container is not in the guest, or has exited, is refused
    /// before any system call.
    #[tokio::test]
    async fn a_member_of_a_missing_or_dead_sandbox_is_refused_first() {
        let fake = FakeSys::default();
        let agent = agent(&fake);
        let e = agent
            .create_container(request("c2", "sb"))
            .await
            .unwrap_err();
        assert_eq!(e.code, ttrpc::Code::FAILED_PRECONDITION);
        assert!(e.message.contains("\"sb\" is not in this guest"), "{e}");
        assert!(fake.calls().is_empty(), "{:?}", fake.calls());

        agent.create_container(request("sb", "sb")).await.unwrap();
        fake.exit(100, 0);
        let before = fake.calls().len();
        let e = agent
            .create_container(request("c2", "sb"))
            .await
            .unwrap_err();
        assert_eq!(e.code, ttrpc::Code::FAILED_PRECONDITION);
        assert!(e.message.contains("has exited"), "{e}");
        assert_eq!(fake.calls().len(), before, "{:?}", fake.calls());
        assert!(agent.creating.lock().unwrap().is_empty());
    }

    #[test]
    fn guest_time_is_validated() {
        for (s, u) in [(0, 0), (1_795_000_000, 999_999), (MAX_TIME_SEC, 0)] {
            assert!(validate_time(s, u).is_ok(), "{s} {u}");
        }
        for (s, u) in [(-1, 0), (MAX_TIME_SEC + 1, 0), (0, -1), (0, 1_000_000)] {
            let e = validate_time(s, u).unwrap_err();
            assert_eq!(e.code, ttrpc::Code::INVALID_ARGUMENT);
            assert!(e.message.contains("out of range"), "{e}");
        }
    }
}

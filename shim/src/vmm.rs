//! Running kata-vmm: its command line (docs/design.md), a child process that dies with the
//! shim (PR_SET_PDEATHSIG), its stderr kept for error reports, and its exit observed.

use std::os::fd::AsRawFd;
use std::{
    collections::VecDeque,
    ffi::OsString,
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::config::RestoreMemory;
use tokio::{
    io::AsyncReadExt,
    process::Command,
    sync::{mpsc, watch},
};
use tracing::{debug, info, warn};

/// Lowest vsock CID handed to a VM (well above the reserved 0..=2 and small numbers other
/// VMMs on a host tend to use).
pub const CID_MIN: u32 = 1000;
/// Highest vsock CID handed to a VM.
pub const CID_MAX: u32 = 0x7fff_ffff;

/// Most stderr lines of the VMM kept for error messages.
const STDERR_LINES: usize = 20;
/// Longest stderr line kept (longer ones are cut).
const STDERR_LINE_MAX: usize = 1024;

/// What the shim asks kata-vmm to run.
#[derive(Debug, Clone, PartialEq)]
pub struct VmmSpec {
    /// kata-vmm binary.
    pub path: PathBuf,
    /// Guest kernel.
    pub kernel: PathBuf,
    /// Initrds in order: the guest image (the only one the shim passes).
    pub initrds: Vec<PathBuf>,
    /// Memory in MiB.
    pub mem_mib: u32,
    /// vCPUs.
    pub vcpus: u32,
    /// The guest's vsock CID (seen by the guest only; the host reaches it through
    /// `vsock_uds`).
    pub cid: u32,
    /// The host side of the guest's vsock (`--vsock-uds`): a Unix socket kata-vmm creates,
    /// `<state_dir>/kata-vmm.vsock` (see [`VSOCK_SOCKET_FILE`]).
    pub vsock_uds: Option<PathBuf>,
    /// Where the guest console goes.
    pub console_log: PathBuf,
    /// Console log cap and rate limit in KiB and KiB/s (`--console-log-max-kib`,
    /// `--console-log-rate-kib`); None: kata-vmm's defaults.
    pub console_limits: Option<(u64, u64)>,
    /// Extra kernel command line (omitted when empty).
    pub cmdline: String,
    /// Read-only virtio-blk disks (`--disk PATH,ro`), in guest order. Unused today: the
    /// seam for root file systems that containerd hands over as block devices.
    pub disks: Vec<PathBuf>,
    /// virtiofsd's vhost-user socket for the share (`--fs socket=PATH,tag=kata-rs,...`).
    pub fs: Option<PathBuf>,
    /// A template VM (`crate::factory::make`): the share's virtio-fs device without a backend
    /// (`--fs-slot tag=kata-rs`). Its guest binds the device at boot; a restore gives it the
    /// sandbox's virtiofsd, and the restored guest mounts the share without probing a device.
    pub fs_slot: bool,
    /// How long virtiofsd may take to answer kata-vmm's handshake (`handshake-timeout=`;
    /// `shared_fs.start_timeout_secs`): it is started at the same time as the VMM.
    pub fs_handshake_secs: u64,
    /// uid = gid of the jailed VMM (`--jail-uid`/`--jail-gid`); None: kata-vmm's default.
    pub jail_id: Option<u32>,
    /// Pod networking: the `--net` value (`tap=NAME,mac=MAC`) and the network namespace the
    /// VMM is started in (where that tap lives).
    pub net: Option<(String, PathBuf)>,
    /// VM templates (`crate::factory`): empty virtio-mmio slots after the other devices
    /// (`--placeholder-slots`), which a restore fills with the sandbox's devices; 0: none.
    pub placeholder_slots: u8,
    /// The control socket (`--api-sock`): pause and snapshot of a template VM.
    pub api_sock: Option<PathBuf>,
    /// Where the control request `snapshot` may write (`--snapshot-root`).
    pub snapshot_root: Option<PathBuf>,
    /// Start from this template instead of booting (`--restore`); the other fields describe
    /// the VM as for a boot, with the sandbox's own devices.
    pub restore: Option<PathBuf>,
    /// How that restore gets guest RAM (`--restore-memory`, `factory.restore_memory`).
    pub restore_memory: RestoreMemory,
}

impl VmmSpec {
    /// The VM the configuration describes (kata-vmm, kernel, guest image, memory, vCPUs,
    /// console limits) with guest CID `cid`, vsock socket `vsock_uds`, console log `console_log`
    /// and kernel command line `cmdline`; no devices beyond vsock, rng and the console, and no
    /// jail id, control socket, snapshot or restore: each caller adds what it needs.
    pub fn for_config(
        config: &crate::config::Config,
        cid: u32,
        vsock_uds: PathBuf,
        console_log: PathBuf,
        cmdline: String,
    ) -> Self {
        let h = &config.file.hypervisor;
        VmmSpec {
            path: h.path.clone(),
            kernel: h.kernel.clone(),
            initrds: vec![h.initrd.clone()],
            mem_mib: h.memory_mib,
            vcpus: h.vcpus,
            cid,
            vsock_uds: Some(vsock_uds),
            console_log,
            console_limits: Some((
                config.file.runtime.console_log_max_kib,
                config.file.runtime.console_log_rate_kib,
            )),
            cmdline,
            disks: Vec::new(),
            fs: None,
            fs_slot: false,
            fs_handshake_secs: config.file.shared_fs.start_timeout_secs,
            jail_id: None,
            net: None,
            placeholder_slots: 0,
            api_sock: None,
            snapshot_root: None,
            restore: None,
            restore_memory: config.file.factory.restore_memory,
        }
    }

    /// The arguments after the program name, as docs/design.md specifies them.
    pub fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec!["--kernel".into(), self.kernel.clone().into()];
        for i in &self.initrds {
            a.push("--initrd".into());
            a.push(i.clone().into());
        }
        a.extend([
            "--mem-mib".into(),
            self.mem_mib.to_string().into(),
            "--vcpus".into(),
            self.vcpus.to_string().into(),
            "--vsock-cid".into(),
            self.cid.to_string().into(),
            "--console-log".into(),
            self.console_log.clone().into(),
        ]);
        if let Some((max_kib, rate_kib)) = self.console_limits {
            a.extend([
                "--console-log-max-kib".into(),
                max_kib.to_string().into(),
                "--console-log-rate-kib".into(),
                rate_kib.to_string().into(),
            ]);
        }
        if let Some(uds) = &self.vsock_uds {
            a.push("--vsock-uds".into());
            a.push(uds.clone().into());
        }
        if !self.cmdline.trim().is_empty() {
            a.push("--cmdline".into());
            a.push(self.cmdline.clone().into());
        }
        for d in &self.disks {
            let mut v = OsString::from(d.as_os_str());
            v.push(",ro");
            a.push("--disk".into());
            a.push(v);
        }
        if let Some(id) = self.jail_id {
            a.extend([
                "--jail-uid".into(),
                id.to_string().into(),
                "--jail-gid".into(),
                id.to_string().into(),
            ]);
        }
        if let Some((net, _)) = &self.net {
            a.push("--net".into());
            a.push(net.into());
        }
        if let Some(socket) = &self.fs {
            a.push("--fs".into());
            a.push(crate::virtiofsd::vmm_fs_arg(socket, self.fs_handshake_secs));
        }
        if self.fs_slot {
            a.push("--fs-slot".into());
            a.push(format!("tag={}", kata_rs_protocol::guest::SHARE_TAG).into());
        }
        if self.placeholder_slots > 0 {
            a.push("--placeholder-slots".into());
            a.push(self.placeholder_slots.to_string().into());
        }
        for (flag, v) in [
            ("--api-sock", &self.api_sock),
            ("--snapshot-root", &self.snapshot_root),
            ("--restore", &self.restore),
        ] {
            if let Some(p) = v {
                a.push(flag.into());
                a.push(p.clone().into());
            }
        }
        if self.restore.is_some() {
            a.push("--restore-memory".into());
            a.push(self.restore_memory.as_arg().into());
        }
        a
    }
}

/// A random CID in `CID_MIN..=CID_MAX`, from the kernel's random source.
pub fn random_cid() -> u32 {
    let v = match crate::util::random_bytes(4) {
        Ok(b) => u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
        Err(_) => {
            // Fall back to the std hasher's random keys mixed with the time.
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0),
            );
            h.finish() as u32
        }
    };
    CID_MIN + v % (CID_MAX - CID_MIN + 1)
}

/// How the VMM process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmmExit {
    /// Exited with this status (0: guest shut down; 1: error; 2: the guest stopped itself
    /// right after printing a kernel panic message, see kata-vmm's README).
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
    /// Ended by [`Vmm::terminate`]: SIGTERM from the shim, then status 0 (or SIGKILL after
    /// the grace time, which is `Signal(9)`).
    Terminated,
}

impl VmmExit {
    /// The exit status to report for a container whose VM ended this way without the
    /// container's own exit being known: 128+signal when the VMM was killed by a signal
    /// (137 for SIGKILL), else 255.
    pub fn container_exit_status(self) -> u32 {
        match self {
            VmmExit::Signal(s) if (1..=64).contains(&s) => 128 + s as u32,
            // The shim ended the VM to kill a container whose guest did not answer.
            VmmExit::Terminated => 128 + libc::SIGKILL as u32,
            _ => 255,
        }
    }
}

impl std::fmt::Display for VmmExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VmmExit::Code(0) => write!(f, "exited with status 0"),
            // Status 2 rests on guest console text (any guest process with the console device
            // can print it): a label for a guest that stopped by itself, not a verdict.
            VmmExit::Code(2) => write!(
                f,
                "exited with status 2 (the guest stopped itself right after \"Kernel panic\" \
                 on its console: probably a guest kernel panic)"
            ),
            VmmExit::Code(c) => write!(f, "exited with status {c}"),
            VmmExit::Signal(s) => write!(f, "was killed by signal {s}"),
            VmmExit::Terminated => write!(f, "was ended by the shim (SIGTERM)"),
        }
    }
}

/// A running (or ended) supervised child process: kata-vmm, or a sandbox's virtiofsd.
pub struct Vmm {
    what: &'static str,
    pid: u32,
    exit: watch::Receiver<Option<VmmExit>>,
    kill_tx: mpsc::UnboundedSender<i32>,
    stderr: Arc<Mutex<StderrTail>>,
    stderr_done: watch::Receiver<bool>,
}

/// The last [`STDERR_LINES`] lines a child wrote to stderr, and how many it wrote in all (so
/// a reader can tell lines that came after a point from older ones).
#[derive(Default)]
struct StderrTail {
    lines: VecDeque<String>,
    pushed: u64,
}

impl Vmm {
    /// Starts the VMM. It gets SIGKILL when the shim dies (PR_SET_PDEATHSIG), its stdin and
    /// stdout are /dev/null and its stderr is logged and kept for [`Vmm::error_line`].
    ///
    /// PR_SET_PDEATHSIG fires when the *thread* that forked exits; the shim runs a
    /// current-thread tokio runtime, so async code (where this is called) runs on the main
    /// thread, which lives as long as the shim.
    pub fn spawn(spec: &VmmSpec) -> std::io::Result<Vmm> {
        let netns = spec.net.as_ref().map(|(_, p)| p.as_path());
        let vmm = Self::spawn_program("VMM", &spec.path, spec.args(), netns, None)?;
        info!(
            pid = vmm.pid,
            cid = spec.cid,
            "started VMM {}",
            spec.path.display()
        );
        Ok(vmm)
    }

    /// Starts `program` with `args` as a supervised child the same way (PDEATHSIG, stderr
    /// kept, exit observed), in network namespace `netns` if given; `what` names it in
    /// messages ("VMM", "virtiofsd"). Used for the VMM and for the sandbox's virtiofsd.
    /// `inherit`: the one fd of the shim the child keeps, at its number (virtiofsd's
    /// listening socket); every other is closed at exec.
    pub fn spawn_program(
        what: &'static str,
        program: &Path,
        args: Vec<OsString>,
        netns: Option<&Path>,
        inherit: Option<std::os::fd::BorrowedFd<'_>>,
    ) -> std::io::Result<Vmm> {
        let inherit_fd = inherit.map(|f| f.as_raw_fd()).unwrap_or(-1);
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(false);
        let parent = std::process::id() as libc::pid_t;
        // The pod's network namespace, opened here (close-on-exec) and joined by the child.
        let netns = match netns {
            Some(path) => Some(std::fs::File::open(path).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("pod network namespace {}: {e}", path.display()),
                )
            })?),
            None => None,
        };
        let netns_fd = netns.as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1);
        // SAFETY: the closure runs in the forked child before exec and only calls
        // async-signal-safe functions (prctl, getppid, setns, close_range, fcntl, _exit); it
        // touches no locks or allocations. `netns_fd` stays open until spawn returns (`netns`
        // lives until then), and `inherit_fd` too (borrowed for this call).
        unsafe {
            cmd.pre_exec(move || {
                if netns_fd >= 0 && libc::setns(netns_fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                // The shim may have died between fork and prctl.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                // No fd of the shim reaches the child but stdin/stdout/stderr: whatever the
                // shim inherited from containerd or opened without O_CLOEXEC is closed at
                // exec (marked close-on-exec rather than closed, so that std's own exec
                // error pipe keeps working). Kernels before 5.11 lack the flag (EINVAL);
                // kata-vmm closes what it inherited itself at startup.
                libc::syscall(
                    libc::SYS_close_range,
                    3u32,
                    u32::MAX,
                    libc::CLOSE_RANGE_CLOEXEC,
                );
                if inherit_fd >= 0 && libc::fcntl(inherit_fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot start {what} {}: {e}", program.display()),
            )
        })?;
        drop(netns);
        let pid = child.id().unwrap_or(0);

        let stderr = Arc::new(Mutex::new(StderrTail::default()));
        let (done_tx, stderr_done) = watch::channel(false);
        if let Some(mut err) = child.stderr.take() {
            let lines = stderr.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut line = Vec::new();
                loop {
                    let n = match err.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    for &b in &buf[..n] {
                        if b == b'\n' {
                            push_line(&lines, &line, pid, what);
                            line.clear();
                        } else if line.len() < STDERR_LINE_MAX {
                            line.push(b);
                        }
                    }
                }
                if !line.is_empty() {
                    push_line(&lines, &line, pid, what);
                }
                let _ = done_tx.send(true);
            });
        } else {
            let _ = done_tx.send(true);
        }

        let (exit_tx, exit) = watch::channel(None);
        let (kill_tx, mut kill_rx) = mpsc::unbounded_channel::<i32>();
        tokio::spawn(async move {
            let mut terminating = false;
            let status = loop {
                tokio::select! {
                    st = child.wait() => break st,
                    k = kill_rx.recv() => {
                        if let Some(sig) = k {
                            // This task owns the child and reaps it: while `child.id()` is
                            // Some, the pid is still ours (tokio never signals a child it
                            // has already reaped).
                            if sig == libc::SIGKILL {
                                if let Err(e) = child.start_kill() {
                                    debug!(pid, "kill {what}: {e}");
                                }
                            } else if let Some(id) = child.id() {
                                terminating |= sig == libc::SIGTERM;
                                // SAFETY: kill(2) on our own unreaped child; no memory involved.
                                unsafe { libc::kill(id as libc::pid_t, sig) };
                            }
                        } else {
                            // All handles dropped: keep waiting so the child is reaped.
                            break child.wait().await;
                        }
                    }
                }
            };
            let exit = match status {
                Ok(st) => match (st.code(), st.signal()) {
                    (Some(0), _) if terminating => VmmExit::Terminated,
                    (Some(c), _) => VmmExit::Code(c),
                    (None, Some(s)) => VmmExit::Signal(s),
                    _ => VmmExit::Code(255),
                },
                Err(e) => {
                    warn!(pid, "waiting for the {what} failed: {e}");
                    VmmExit::Code(255)
                }
            };
            info!(pid, "{what} {exit}");
            let _ = exit_tx.send(Some(exit));
        });
        Ok(Vmm {
            what,
            pid,
            exit,
            kill_tx,
            stderr,
            stderr_done,
        })
    }

    /// The VMM's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// What each of the running VMM's threads is doing, for an error about a VMM that never
    /// got ready: see [`thread_states`].
    pub fn thread_states(&self) -> String {
        thread_states(self.pid)
    }

    /// How the VMM ended, if it has (and has been reaped).
    pub fn exited(&self) -> Option<VmmExit> {
        *self.exit.borrow()
    }

    /// Waits until the VMM has exited and been reaped.
    pub async fn wait(&self) -> VmmExit {
        let mut rx = self.exit.clone();
        loop {
            if let Some(e) = *rx.borrow_and_update() {
                return e;
            }
            if rx.changed().await.is_err() {
                return rx.borrow().unwrap_or(VmmExit::Code(255));
            }
        }
    }

    /// Sends SIGKILL (only while the process has not been reaped).
    pub fn kill(&self) {
        let _ = self.kill_tx.send(libc::SIGKILL);
    }

    /// Ends the process with SIGTERM, which lets kata-vmm print its devices' reports (the
    /// vsock connections' state among them) to stderr, and SIGKILL after `grace`.
    pub async fn terminate(&self, grace: Duration) -> VmmExit {
        let _ = self.kill_tx.send(libc::SIGTERM);
        match tokio::time::timeout(grace, self.wait()).await {
            Ok(e) => e,
            Err(_) => self.kill_and_wait().await,
        }
    }

    /// Kills the VMM and waits until it is reaped.
    pub async fn kill_and_wait(&self) -> VmmExit {
        self.kill();
        self.wait().await
    }

    /// Waits up to `timeout` for the VMM to exit by itself, then kills it; returns how it
    /// ended.
    pub async fn stop(&self, timeout: Duration) -> VmmExit {
        match tokio::time::timeout(timeout, self.wait()).await {
            Ok(e) => e,
            Err(_) => {
                warn!(
                    pid = self.pid,
                    "{} did not exit within {timeout:?}; killing it", self.what
                );
                self.kill_and_wait().await
            }
        }
    }

    /// Where the guest's vCPUs are: the line the VMM logs on SIGUSR1 (registers, mode, run
    /// state: boot_watch.rs in kata-vmm), waited for at most [`VCPU_STATE_WAIT`]; if none
    /// comes, the boot watch's latest "guest not up" line; None if there is neither.
    pub async fn vcpu_state(&self) -> Option<String> {
        const LINE: &str = "vCPU state (SIGUSR1)";
        let seen = self.stderr_pushed();
        let asked = i32::try_from(self.pid).ok().is_some_and(|pid| {
            let pid = nix::unistd::Pid::from_raw(pid);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGUSR1).is_ok()
        });
        let end = tokio::time::Instant::now() + VCPU_STATE_WAIT;
        while asked && tokio::time::Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Some(l) = self.stderr_line_with(LINE, seen) {
                return Some(l);
            }
        }
        self.stderr_line_with("guest not up", 0)
    }

    /// How many lines the VMM has written to stderr so far.
    fn stderr_pushed(&self) -> u64 {
        self.stderr.lock().unwrap_or_else(|p| p.into_inner()).pushed
    }

    /// The latest stderr line of the VMM that contains `needle`, among those written after
    /// the first `after` (still in the kept tail).
    fn stderr_line_with(&self, needle: &str, after: u64) -> Option<String> {
        let t = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        let new = usize::try_from(t.pushed.saturating_sub(after)).unwrap_or(usize::MAX);
        t.lines
            .iter()
            .rev()
            .take(new)
            .find(|l| l.contains(needle))
            .cloned()
    }

    /// After the VMM exited: the line that says why (waits briefly for stderr to be read
    /// to its end); see [`why_line`].
    pub async fn error_line(&self) -> Option<String> {
        let mut done = self.stderr_done.clone();
        let _ = tokio::time::timeout(Duration::from_secs(1), done.wait_for(|d| *d)).await;
        let t = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        why_line(t.lines.iter().map(String::as_str)).map(str::to_string)
    }
}

fn push_line(tail: &Mutex<StderrTail>, raw: &[u8], pid: u32, what: &str) {
    let text = crate::util::sanitize(&String::from_utf8_lossy(raw), STDERR_LINE_MAX);
    if text.trim().is_empty() {
        return;
    }
    warn!(pid, "{what} stderr: {text}");
    let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
    if t.lines.len() == STDERR_LINES {
        t.lines.pop_front();
    }
    t.lines.push_back(text);
    t.pushed += 1;
}

/// How long [`Vmm::vcpu_state`] waits for the VMM's answer to SIGUSR1.
pub const VCPU_STATE_WAIT: Duration = Duration::from_secs(3);

/// Name of the pid file in a sandbox's state directory.
pub const PID_FILE: &str = "kata-vmm.pid";
/// The VMM's hybrid vsock socket in the sandbox's state directory (0700): the only way to
/// the agent.
pub const VSOCK_SOCKET_FILE: &str = "kata-vmm.vsock";

/// Writes the VMM's pid file.
pub fn write_pid_file(state_dir: &Path, pid: u32) -> std::io::Result<()> {
    let f = state_dir.join(PID_FILE);
    let _ = std::fs::remove_file(&f);
    crate::util::write_private(&f, format!("{pid}\n").as_bytes())
}

/// Kills a VMM left over by a lost shim: the pid in `<state_dir>/kata-vmm.pid`, if that
/// process is still a VMM of this sandbox (its command line mentions `state_dir`, where
/// its sockets live). Waits up to `timeout` for it to disappear. Returns its pid if
/// one was killed. [`kill_leftover_named`] does the same for another pid file (virtiofsd's).
pub fn kill_leftover(state_dir: &Path, timeout: Duration) -> Option<u32> {
    kill_leftover_named(state_dir, PID_FILE, timeout)
}

/// [`kill_leftover`] for the process named by `<state_dir>/<pid_file>`.
pub fn kill_leftover_named(state_dir: &Path, pid_file: &str, timeout: Duration) -> Option<u32> {
    let text = std::fs::read_to_string(state_dir.join(pid_file)).ok()?;
    let pid: i32 = text.trim().parse().ok().filter(|p| *p > 1)?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let marker = state_dir.as_os_str().as_encoded_bytes();
    if !cmdline.windows(marker.len().max(1)).any(|w| w == marker) {
        debug!(
            pid,
            "pid file names a process that is not this sandbox's VMM"
        );
        return None;
    }
    let p = nix::unistd::Pid::from_raw(pid);
    if nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGKILL).is_err() {
        return None;
    }
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        // Not our child (the shim that started it is gone): wait for /proc to forget it.
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => break,
            Ok(s)
                if s.rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z')) =>
            {
                break
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    Some(pid as u32)
}

/// Of a VMM's stderr lines, the one that says why it ended: its last `error:` line, else
/// its last `guest stopped:` line, else its last line that is not a device's exit
/// statistics (`kata-vmm: virtio-…: counters`), which say nothing about the cause.
pub fn why_line<'a>(lines: impl DoubleEndedIterator<Item = &'a str> + Clone) -> Option<&'a str> {
    let last = |pat: &str| lines.clone().rev().find(|l| l.contains(pat));
    last("error:")
        .or_else(|| last("guest stopped:"))
        .or_else(|| {
            lines
                .clone()
                .rev()
                .find(|l| !l.starts_with("kata-vmm: virtio-"))
        })
}

#[cfg(test)]
mod tests;

/// Most threads [`thread_states`] names.
const MAX_THREADS_SHOWN: usize = 16;

/// `name state wait-channel` of each thread of process `pid`, from `/proc/PID/task` (e.g.
/// `kata-vmm S unix_stream_read_generic, fc_vcpu0 R 0`): where a VMM that never got ready
/// is stuck. At most [`MAX_THREADS_SHOWN`] threads; empty when the process is gone.
pub fn thread_states(pid: u32) -> String {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return String::new();
    };
    let mut out: Vec<String> = Vec::new();
    for t in tasks.flatten().take(MAX_THREADS_SHOWN) {
        let read = |f: &str| {
            std::fs::read_to_string(t.path().join(f))
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        // /proc/PID/task/TID/stat: "TID (COMM) STATE ..."; COMM may hold spaces or ')'.
        let stat = read("stat");
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .unwrap_or("?")
            .to_string();
        let line = format!("{} {state} {}", read("comm"), read("wchan"));
        out.push(crate::util::sanitize(&line, 80));
    }
    out.join(", ")
}

//! Container init mode (`kata-agent __container-init`): the single-threaded process the
//! agent clones into the container's new namespaces. It reads its [`InitConfig`] from the
//! sync socket (fd 3), builds the container's mounts, pivot_roots, sets hostname, cwd and
//! credentials, resolves the executable, reports `ready` (or an error), waits for `start`
//! and execve's the workload, which thereby stays the agent's direct child.
//!
//! Sync protocol (JSON lines on fd 3): agent → init: `InitConfig`; init → agent:
//! `{"ready":true}` or `{"error":"..."}`; agent → init: `start`; then the init execve's
//! (fd 3 is close-on-exec, so the agent reads EOF) or writes `{"error":"..."}`.

use std::ffi::CString;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::unistd::{chdir, pivot_root, sethostname, Gid, Uid};
use serde::{Deserialize, Serialize};

use crate::devices::DeviceNode;
use crate::plan::{InitConfig, MountKind, MountPlan, ProcessConfig};
use crate::rootpath::{self, Create};

/// argv[1] that selects container init mode.
pub const INIT_ARG: &str = "__container-init";

/// argv[1] that selects exec mode: join a running container's namespaces, then run an
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

type InitResult<T> = std::result::Result<T, String>;

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

/// Opens a pty in the container's own devpts (`/dev/ptmx`, after pivot_root or the mount
/// namespace switch), makes the slave fds 0-2 and the controlling terminal of a new
/// session, and returns the master for the agent.
fn container_pty() -> InitResult<std::os::fd::OwnedFd> {
    use nix::fcntl::OFlag;
    use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(|e| format!("open /dev/ptmx in the container: {}", e.desc()))?;
    nix::pty::grantpt(&master).map_err(|e| format!("grantpt: {}", e.desc()))?;
    nix::pty::unlockpt(&master).map_err(|e| format!("unlockpt: {}", e.desc()))?;
    let name = nix::pty::ptsname_r(&master).map_err(|e| format!("ptsname: {}", e.desc()))?;
    let slave = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&name)
        .map_err(|e| format!("open pty slave {name}: {e}"))?;
    nix::unistd::setsid().map_err(|e| format!("setsid: {}", e.desc()))?;
    for fd in 0..3 {
        // SAFETY: dup2 onto our own stdio numbers.
        if unsafe { libc::dup2(slave.as_raw_fd(), fd) } < 0 {
            return Err(format!(
                "dup2 pty slave to fd {fd}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    drop(slave);
    // SAFETY: ioctl on our stdin (the pty slave) with an integer argument.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY as _, 0) } != 0 {
        return Err(format!(
            "make the pty the controlling terminal: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: the PtyMaster's fd is ours; ownership moves into the OwnedFd.
    Ok(unsafe { OwnedFd::from_raw_fd(master.into_raw_fd()) })
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
        prepare_exec(&cfg)?
    } else {
        let cfg: InitConfig =
            serde_json::from_str(&line).map_err(|e| format!("bad init config: {e}"))?;
        prepare(&cfg)?
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
    // SAFETY: plain fcntl on our own fd; marks the sync socket close-on-exec so a
    // successful execve shows up as EOF on the agent's side.
    unsafe { libc::fcntl(SYNC_FD, libc::F_SETFD, libc::FD_CLOEXEC) };
    let err = nix::unistd::execve(&exe, &argv, &envp).unwrap_err();
    Err(format!("exec {:?}: {}", argv[0], err.desc()))
}

/// The agent (Rust's runtime) ignores SIGPIPE and tokio may leave signals blocked: give
/// the workload default dispositions and an empty signal mask, as a shell would.
fn reset_signals() {
    // SAFETY: signal(2) and sigprocmask(2) with valid arguments; single-threaded process.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
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

fn cstr(s: &str) -> InitResult<CString> {
    CString::new(s).map_err(|_| format!("{s:?} contains a NUL byte"))
}

/// executable, argv, envp, and the pty master for terminal processes (sent to the agent
/// with the ready reply).
type Prepared = (
    CString,
    Vec<CString>,
    Vec<CString>,
    Option<std::os::fd::OwnedFd>,
);

/// Everything before exec: mounts, pivot_root, hostname, cwd, lookup, credentials.
fn prepare(cfg: &InitConfig) -> InitResult<Prepared> {
    let errno = |what: String| move |e: nix::Error| format!("{what}: {}", e.desc());
    // A pod container joins its sandbox container's UTS/IPC namespaces before anything
    // else (its hostname is then set in the shared UTS namespace, as runc does).
    for (ns, path) in &cfg.join {
        let f = fs::File::open(path).map_err(|e| {
            format!(
                "open {} to join the pod's {ns} namespace: {e}",
                path.display()
            )
        })?;
        nix::sched::setns(&f, nix::sched::CloneFlags::empty())
            .map_err(|e| format!("join the pod's {ns} namespace: {}", e.desc()))?;
    }
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(errno("make mounts private".into()))?;
    if cfg.cgroup_ns {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
            .map_err(errno("unshare cgroup namespace".into()))?;
    }
    build_root(&mut RealMounts, cfg)?;
    // As runc: a missing cwd is created (0755, as root), before / may become read-only.
    if !cfg.process.cwd.is_dir() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&cfg.process.cwd)
            .map_err(|e| format!("create cwd {:?}: {e}", cfg.process.cwd))?;
    }
    // runc's order: sysctls before the read-only paths (CRI's include /proc/sys).
    for (k, v) in &cfg.sysctls {
        crate::sysctl::write(k, v)?;
    }
    for p in &cfg.masked_paths {
        mask_path(p)?;
    }
    for p in &cfg.readonly_paths {
        readonly_path(p)?;
    }
    if cfg.readonly_root {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(errno("remount / read-only".into()))?;
    }
    if let Some(h) = &cfg.hostname {
        sethostname(h).map_err(errno(format!("sethostname {h:?}")))?;
    }
    prepare_process(&cfg.process)
}

/// Exec mode: join the container's namespaces (mount last: it also moves root and cwd
/// into the container), then set the process up like the init's.
fn prepare_exec(cfg: &ExecConfig) -> InitResult<Prepared> {
    let mut fds = Vec::new();
    for ns in &cfg.join {
        let p = format!("/proc/{}/ns/{ns}", cfg.target_pid);
        let f = fs::File::open(&p).map_err(|e| format!("open {p}: {e} (container gone?)"))?;
        fds.push((ns, f));
    }
    for (ns, f) in &fds {
        nix::sched::setns(f, nix::sched::CloneFlags::empty())
            .map_err(|e| format!("join the container's {ns} namespace: {}", e.desc()))?;
    }
    drop(fds);
    prepare_process(&cfg.process)
}

/// The process part, shared by init and exec: terminal, oom_score_adj, rlimits, cwd,
/// executable lookup, seccomp, credentials and capabilities, umask, no_new_privs.
fn prepare_process(cfg: &ProcessConfig) -> InitResult<Prepared> {
    let errno = |what: String| move |e: nix::Error| format!("{what}: {}", e.desc());
    let master = if cfg.terminal {
        Some(container_pty()?)
    } else {
        None
    };
    if let Some(adj) = cfg.oom_score_adj {
        fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(|e| format!("set oom_score_adj {adj}: {e}"))?;
    }
    for &(res, soft, hard) in &cfg.rlimits {
        let lim = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: setrlimit reads a valid rlimit struct.
        if unsafe { libc::setrlimit(res as _, &lim) } != 0 {
            return Err(format!(
                "setrlimit {res}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    chdir(cfg.cwd.as_path()).map_err(|e| {
        format!(
            "chdir to cwd ({:?}) set in config.json failed: {}",
            cfg.cwd,
            e.desc()
        )
    })?;
    // No PATH in the process environment: nothing to search, as under runc (whose Go
    // LookPath reads the PATH it set from the spec's env).
    let path_env = cfg
        .env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("");
    let exe = lookup_executable(&cfg.args[0], path_env)?;
    let exe = CString::new(exe.as_os_str().as_bytes()).map_err(|_| "NUL in path".to_string())?;
    let argv = cfg
        .args
        .iter()
        .map(|a| cstr(a))
        .collect::<InitResult<Vec<_>>>()?;
    let envp = cfg
        .env
        .iter()
        .map(|a| cstr(a))
        .collect::<InitResult<Vec<_>>>()?;
    // As runc: without no_new_privs the filter needs CAP_SYS_ADMIN, so it goes in before
    // the capabilities are dropped; with it, as late as possible.
    if let (Some(prog), false) = (&cfg.seccomp, cfg.no_new_privileges) {
        crate::seccomp::install(prog)?;
    }
    if let Some(c) = &cfg.caps {
        crate::caps::drop_bounding(c.bounding)?;
        crate::caps::keep_caps(true)?;
    }
    let groups: Vec<Gid> = cfg
        .additional_gids
        .iter()
        .map(|g| Gid::from_raw(*g))
        .collect();
    nix::unistd::setgroups(&groups).map_err(errno("setgroups".into()))?;
    nix::unistd::setgid(Gid::from_raw(cfg.gid)).map_err(errno(format!("setgid {}", cfg.gid)))?;
    nix::unistd::setuid(Uid::from_raw(cfg.uid)).map_err(errno(format!("setuid {}", cfg.uid)))?;
    if let Some(c) = &cfg.caps {
        crate::caps::keep_caps(false)?;
        crate::caps::apply(c)?;
    }
    if let Some(mask) = cfg.umask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    if cfg.no_new_privileges {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(format!(
                "set no_new_privs: {}",
                std::io::Error::last_os_error()
            ));
        }
        if let Some(prog) = &cfg.seccomp {
            crate::seccomp::install(prog)?;
        }
    }
    Ok((exe, argv, envp, master))
}

/// Resolves the executable as runc (Go's exec.LookPath) does: a name with a slash is used
/// as is, otherwise each PATH entry is tried (an empty entry is the cwd; an empty PATH has
/// no entries). Error texts match runc's.
pub fn lookup_executable(name: &str, path_env: &str) -> InitResult<PathBuf> {
    let check = |p: &Path| -> std::result::Result<(), std::io::Error> {
        let md = fs::metadata(p)?;
        if !md.is_dir() && md.permissions().mode() & 0o111 != 0 {
            Ok(())
        } else {
            Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied))
        }
    };
    if name.contains('/') {
        return match check(Path::new(name)) {
            Ok(()) => Ok(PathBuf::from(name)),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                Err(format!("exec: {name:?}: permission denied"))
            }
            Err(_) => Err(format!(
                "exec: {name:?}: stat {name}: no such file or directory"
            )),
        };
    }
    let mut denied = false;
    for dir in path_env.split(':').filter(|_| !path_env.is_empty()) {
        let dir = if dir.is_empty() { "." } else { dir };
        let cand = Path::new(dir).join(name);
        match check(&cand) {
            Ok(()) => return Ok(cand),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => denied = true,
            Err(_) => {}
        }
    }
    if denied {
        Err(format!("exec: {name:?}: permission denied"))
    } else {
        Err(format!(
            "exec: {name:?}: executable file not found in $PATH"
        ))
    }
}

/// The mount calls that build a container's root, behind a seam so that the whole plan
/// (what is mounted where, in which order) is unit-testable without root.
pub trait MountSys {
    /// mount(2).
    fn mount(
        &mut self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()>;
    /// Makes `root` the root: chdir there, `pivot_root(".", ".")`, lazy unmount of the old
    /// root stacked on top (runc's trick: no put_old directory needed), chdir `/`.
    fn pivot_root(&mut self, root: &Path) -> InitResult<()>;
}

/// The real system calls.
pub struct RealMounts;

impl MountSys for RealMounts {
    fn mount(
        &mut self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()> {
        mount(source, target, fstype, flags, data)
    }

    fn pivot_root(&mut self, root: &Path) -> InitResult<()> {
        let errno = |what: String| move |e: nix::Error| format!("{what}: {}", e.desc());
        chdir(root).map_err(errno(format!("chdir {root:?}")))?;
        pivot_root(".", ".").map_err(errno(format!("pivot_root to {root:?}")))?;
        umount2(".", MntFlags::MNT_DETACH).map_err(errno("detach old root".into()))?;
        chdir("/").map_err(errno("chdir /".into()))
    }
}

/// Builds the container's root in the init's own (private) mount namespace: binds the
/// rootfs (the container's directory in the sandbox share) onto itself, so it is a mount
/// point pivot_root accepts and nothing is mounted in the agent's namespace; makes the
/// plan's mounts inside it; pivot_roots into it.
pub fn build_root(sys: &mut impl MountSys, cfg: &InitConfig) -> InitResult<()> {
    let root = &cfg.rootfs;
    if !root.is_dir() {
        return Err(format!("rootfs {root:?} is not a directory"));
    }
    sys.mount(
        Some(root.as_path()),
        root.as_path(),
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("bind mount rootfs {root:?}: {}", e.desc()))?;
    // Opened after the bind: lookups below see the bound tree and the mounts made on it.
    let root_fd = rootpath::open_root(root).map_err(|e| format!("open rootfs {root:?}: {e}"))?;
    let binds = cfg
        .mounts
        .iter()
        .any(|m| matches!(m.kind, MountKind::Bind { .. }));
    let sources = if binds {
        let d = &cfg.sources_dir;
        Some(
            rootpath::open_root(d)
                .map_err(|e| format!("open the bind-mount sources' directory {d:?}: {e}"))?,
        )
    } else {
        None
    };
    let ctx = MountCtx {
        root: root_fd.as_fd(),
        sources: sources
            .as_ref()
            .map(|f| (f.as_fd(), cfg.sources_dir.as_path())),
        devices: &cfg.devices,
    };
    for m in &cfg.mounts {
        do_mount(sys, &ctx, m)?;
    }
    make_device_nodes(ctx.root, &cfg.devices)?;
    drop(sources);
    drop(root_fd);
    sys.pivot_root(root)
}

/// Each host mount in the share (a container's rootfs, each bind source) is a virtio-fs
/// submount the guest kernel mounts on first use (virtiofsd `--announce-submounts`). An
/// `O_PATH` lookup does not trigger that, so a bind of the source would take the parent's
/// directory with the submount stacked on it (two mounts at the destination, not runc's
/// one). A plain open (non-blocking, no symlink followed) triggers it; errors are left to
/// the lookup that follows.
fn trigger_automount(path: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path);
}

/// Where mounts are made and sources found.
struct MountCtx<'a> {
    /// The container's root.
    root: BorrowedFd<'a>,
    /// The directory bind sources lie in (fd, path).
    sources: Option<(BorrowedFd<'a>, &'a Path)>,
    /// spec.linux.devices: a standard /dev node at one of their paths is not made.
    devices: &'a [DeviceNode],
}

/// Makes one mount of the plan. The destination is resolved inside the container's root
/// (symlinks relative to the root, `..` clamped at it; missing parts created inside it, a
/// file for a file bind, else directories) and the mount goes onto the `O_PATH` fd of
/// what was resolved (`/proc/self/fd/N`), so an image's `/var/run -> /run` puts the mount
/// at the container's `/run/...`, never at the guest's. A bind's source is likewise
/// resolved inside the container's directory in the share.
fn do_mount(sys: &mut impl MountSys, ctx: &MountCtx<'_>, m: &MountPlan) -> InitResult<()> {
    let dest = &m.destination;
    let flags = MsFlags::from_bits_truncate(m.flags as _);
    let data = (!m.data.is_empty()).then_some(m.data.as_str());
    let source = match &m.kind {
        MountKind::Bind { .. } => {
            let bad = |why: String| format!("bind mount source {:?} for {dest:?}: {why}", m.source);
            let (dir_fd, dir) = ctx
                .sources
                .ok_or_else(|| bad("no directory for bind sources".into()))?;
            let rel = Path::new(&m.source)
                .strip_prefix(dir)
                .map_err(|_| bad(format!("not in {dir:?}")))?;
            trigger_automount(Path::new(&m.source));
            Some(rootpath::resolve(dir_fd, rel, None).map_err(|e| bad(e.to_string()))?)
        }
        MountKind::Fs(_) => None,
    };
    let create = match &source {
        Some(src) => match src.is_dir() {
            Ok(true) => Create::Dir,
            Ok(false) => Create::File,
            Err(e) => return Err(format!("bind mount source {:?}: {e}", m.source)),
        },
        None => Create::Dir,
    };
    let target = rootpath::resolve(ctx.root, dest, Some(create))
        .map_err(|e| format!("mount point {dest:?} in the container: {e}"))?;
    let at = target.proc_path();
    match (&m.kind, source) {
        (MountKind::Bind { recursive }, Some(src)) => {
            let mut bf = MsFlags::MS_BIND;
            if *recursive {
                bf |= MsFlags::MS_REC;
            }
            sys.mount(Some(&src.proc_path()), &at, None::<&str>, bf, None::<&str>)
                .map_err(|e| format!("bind mount {:?} on {dest:?}: {}", m.source, e.desc()))?;
            if !flags.is_empty() {
                // The held fd is the mount point below the new mount: look the path up
                // again to get the mount's root, which is what a remount must name.
                let mounted = reopen(ctx.root, &target.rel, dest)?;
                sys.mount(
                    None::<&Path>,
                    &mounted.proc_path(),
                    None::<&str>,
                    MsFlags::MS_REMOUNT | MsFlags::MS_BIND | flags,
                    None::<&str>,
                )
                .map_err(|e| format!("remount {dest:?}: {}", e.desc()))?;
            }
        }
        (MountKind::Fs(fstype), _) => {
            sys.mount(
                Some(Path::new(&m.source)),
                &at,
                Some(fstype.as_str()),
                flags,
                data,
            )
            .map_err(|e| format!("mount {fstype} on {dest:?}: {}", e.desc()))?;
            if fstype == "tmpfs" && dest == Path::new("/dev") {
                let dev = reopen(ctx.root, &target.rel, dest)?;
                populate_dev(sys, &dev.proc_path(), ctx.devices)?;
            }
        }
        // Not reachable (a bind's source was resolved above), but an error, not a panic.
        (MountKind::Bind { .. }, None) => return Err(format!("bind mount on {dest:?}: no source")),
    }
    Ok(())
}

/// The mount just made at `rel` (a resolved path: no symlinks), looked up again.
fn reopen(root: BorrowedFd<'_>, rel: &Path, dest: &Path) -> InitResult<rootpath::InRoot> {
    rootpath::resolve(root, rel, None)
        .map_err(|e| format!("look up the new mount at {dest:?}: {e}"))
}

/// Standard device nodes: name, major, minor.
const DEVICES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Creates the standard device nodes (mknod, or a bind mount of the agent's node where
/// mknod is refused) and the /dev symlinks in a fresh /dev tmpfs.
fn populate_dev(sys: &mut impl MountSys, dev: &Path, spec: &[DeviceNode]) -> InitResult<()> {
    use nix::sys::stat::{mknod, Mode, SFlag};
    for (name, major, minor) in DEVICES {
        if spec.iter().any(|d| d.path == Path::new("/dev").join(name)) {
            continue; // the spec's node takes its place, as with runc
        }
        let p = dev.join(name);
        let made = mknod(
            &p,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(major, minor),
        );
        match made {
            Ok(()) => {
                fs::set_permissions(&p, fs::Permissions::from_mode(0o666))
                    .map_err(|e| format!("chmod /dev/{name}: {e}"))?;
            }
            Err(_) => {
                fs::File::create(&p).map_err(|e| format!("create /dev/{name}: {e}"))?;
                let host = Path::new("/dev").join(name);
                sys.mount(
                    Some(&host),
                    &p,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|e| format!("bind mount {host:?} on /dev/{name}: {}", e.desc()))?;
            }
        }
    }
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
        ("core", "/proc/kcore"),
    ] {
        std::os::unix::fs::symlink(to, dev.join(link))
            .map_err(|e| format!("symlink /dev/{link}: {e}"))?;
    }
    Ok(())
}

/// Creates spec.linux.devices inside the container's root as runc does: missing parent
/// directories (0755) resolved and made inside the root, `mknod` with the given type,
/// numbers and mode (umask 0), then `chown`; a path that already exists is left alone.
fn make_device_nodes(root: BorrowedFd<'_>, nodes: &[DeviceNode]) -> InitResult<()> {
    use std::os::fd::AsRawFd;
    for n in nodes {
        let shown = n.path.display();
        let (Some(parent), Some(name)) = (n.path.parent(), n.path.file_name()) else {
            return Err(format!("device node {shown}: not a file path"));
        };
        let dir = rootpath::resolve(root, parent, Some(Create::Dir))
            .map_err(|e| format!("device node {shown}: parent directory: {e}"))?;
        let cname = CString::new(name.as_bytes())
            .map_err(|_| format!("device node {shown}: NUL in the name"))?;
        let dev = nix::sys::stat::makedev(n.major, n.minor);
        // SAFETY: umask only changes this (single-threaded) process's file creation mask;
        // the old one is put back right after.
        let old = unsafe { libc::umask(0) };
        // SAFETY: mknodat on a directory fd we hold and a NUL-terminated name.
        let r = unsafe {
            libc::mknodat(
                dir.fd.as_raw_fd(),
                cname.as_ptr(),
                (n.file_type | n.mode) as libc::mode_t,
                dev,
            )
        };
        let err = std::io::Error::last_os_error();
        // SAFETY: as above.
        unsafe { libc::umask(old) };
        if r != 0 {
            if err.raw_os_error() == Some(libc::EEXIST) {
                continue;
            }
            return Err(format!(
                "mknod device node {shown} ({}:{}): {err}",
                n.major, n.minor
            ));
        }
        // SAFETY: fchownat on the node just made, not following a symlink.
        let r = unsafe {
            libc::fchownat(
                dir.fd.as_raw_fd(),
                cname.as_ptr(),
                n.uid,
                n.gid,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if r != 0 {
            return Err(format!(
                "chown device node {shown} to {}:{}: {}",
                n.uid,
                n.gid,
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// maskedPaths: /dev/null over files, an empty read-only tmpfs over directories.
fn mask_path(p: &Path) -> InitResult<()> {
    let md = match fs::metadata(p) {
        Ok(md) => md,
        Err(_) => return Ok(()), // absent: nothing to hide
    };
    let r = if md.is_dir() {
        mount(
            Some("tmpfs"),
            p,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None::<&str>,
        )
    } else {
        mount(
            Some("/dev/null"),
            p,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    };
    r.map_err(|e| format!("mask {p:?}: {}", e.desc()))
}

/// readonlyPaths: bind the path on itself and remount it read-only.
fn readonly_path(p: &Path) -> InitResult<()> {
    if fs::symlink_metadata(p).is_err() {
        return Ok(());
    }
    mount(
        Some(p),
        p,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .and_then(|_| {
        mount(
            Some(p),
            p,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | MsFlags::MS_REC,
            None::<&str>,
        )
    })
    .map_err(|e| format!("make {p:?} read-only: {}", e.desc()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        fs::create_dir(&bin).unwrap();
        let exe = bin.join("tool");
        fs::write(&exe, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
        let noexec = bin.join("data");
        fs::write(&noexec, "x").unwrap();
        let path = format!("/nonexistent:{}", bin.display());

        assert_eq!(lookup_executable("tool", &path).unwrap(), exe);
        assert_eq!(
            lookup_executable("nosuchcmd", &path).unwrap_err(),
            r#"exec: "nosuchcmd": executable file not found in $PATH"#
        );
        assert_eq!(
            lookup_executable("data", &path).unwrap_err(),
            r#"exec: "data": permission denied"#
        );
        let abs = exe.to_str().unwrap();
        assert_eq!(lookup_executable(abs, "").unwrap(), exe);
        let e = lookup_executable("/no/such", &path).unwrap_err();
        assert_eq!(
            e,
            r#"exec: "/no/such": stat /no/such: no such file or directory"#
        );
        // No PATH: not searched at all, not even the cwd.
        assert_eq!(
            lookup_executable("tool", "").unwrap_err(),
            r#"exec: "tool": executable file not found in $PATH"#
        );
        // A directory is never executable.
        assert!(lookup_executable("bin", dir.path().to_str().unwrap()).is_err());
    }

    /// Records mount calls, with `/proc/self/fd/N[/...]` shown as the path it names
    /// (relative to `base`); mounts nothing.
    struct Recorder {
        base: PathBuf,
        ops: Vec<String>,
    }

    impl Recorder {
        fn show(&self, p: &Path) -> String {
            let s = p.to_string_lossy();
            let real = match s.strip_prefix("/proc/self/fd/") {
                Some(rest) => {
                    let (n, tail) = rest.split_once('/').unwrap_or((rest, ""));
                    let mut r = fs::read_link(format!("/proc/self/fd/{n}")).unwrap();
                    if !tail.is_empty() {
                        r.push(tail);
                    }
                    r
                }
                None => p.to_path_buf(),
            };
            match real.strip_prefix(&self.base) {
                Ok(r) => format!("@/{}", r.display()),
                Err(_) => real.display().to_string(),
            }
        }
    }

    impl MountSys for Recorder {
        fn mount(
            &mut self,
            source: Option<&Path>,
            target: &Path,
            fstype: Option<&str>,
            flags: MsFlags,
            _data: Option<&str>,
        ) -> nix::Result<()> {
            let op = format!(
                "mount {} {} {} {:#x}",
                source.map(|s| self.show(s)).unwrap_or_else(|| "-".into()),
                self.show(target),
                fstype.unwrap_or("-"),
                flags.bits()
            );
            self.ops.push(op);
            Ok(())
        }

        fn pivot_root(&mut self, root: &Path) -> InitResult<()> {
            let op = format!("pivot_root {}", self.show(root));
            self.ops.push(op);
            Ok(())
        }
    }

    fn bind(src: &str, dest: &str, flags: u64) -> MountPlan {
        MountPlan {
            kind: MountKind::Bind { recursive: true },
            source: src.into(),
            destination: dest.into(),
            flags,
            data: String::new(),
        }
    }

    /// A share `<tmp>/share/c1/{rootfs,mounts/0,mounts/1}` with Debian's /var/run -> /run
    /// in the image, and the config the agent would send for it.
    fn share_tree() -> (tempfile::TempDir, InitConfig) {
        let dir = tempfile::tempdir().unwrap();
        let c1 = dir.path().join("share/c1");
        let root = c1.join("rootfs");
        for d in [
            "rootfs/etc",
            "rootfs/var",
            "rootfs/run",
            "rootfs/proc",
            "mounts/0",
        ] {
            fs::create_dir_all(c1.join(d)).unwrap();
        }
        fs::write(c1.join("mounts/0/token"), "t").unwrap();
        fs::write(c1.join("mounts/1"), "hosts").unwrap();
        std::os::unix::fs::symlink("/run", root.join("var/run")).unwrap();
        let src = |n: u32| format!("{}/mounts/{n}", c1.display());
        let cfg = InitConfig {
            sysctls: Vec::new(),
            rootfs: root,
            readonly_root: true,
            mounts: vec![
                MountPlan {
                    kind: MountKind::Fs("proc".into()),
                    source: "proc".into(),
                    destination: "/proc".into(),
                    flags: libc::MS_NOSUID,
                    data: String::new(),
                },
                bind(&src(0), "/var/run/secrets/sa", libc::MS_RDONLY),
                bind(&src(1), "/etc/hosts", 0),
            ],
            hostname: None,
            cgroup_ns: false,
            masked_paths: vec![],
            readonly_paths: vec![],
            join: vec![],
            sources_dir: c1,
            devices: vec![],
            process: serde_json::from_str(
                r#"{"args": ["sh"], "env": [], "cwd": "/", "uid": 0, "gid": 0,
                    "additional_gids": [], "rlimits": [], "terminal": false,
                    "no_new_privileges": false}"#,
            )
            .unwrap(),
        };
        (dir, cfg)
    }

    #[test]
    fn root_plan_binds_the_share_and_resolves_in_the_root() {
        let (dir, cfg) = share_tree();
        let mut rec = Recorder {
            base: dir.path().canonicalize().unwrap(),
            ops: vec![],
        };
        build_root(&mut rec, &cfg).unwrap();
        let rbind = (MsFlags::MS_BIND | MsFlags::MS_REC).bits();
        let ro = (MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY).bits();
        assert_eq!(
            rec.ops,
            vec![
                format!("mount @/share/c1/rootfs @/share/c1/rootfs - {rbind:#x}"),
                format!(
                    "mount proc @/share/c1/rootfs/proc proc {:#x}",
                    libc::MS_NOSUID
                ),
                // Under the image's /var/run -> /run: the container's /run, created there.
                format!("mount @/share/c1/mounts/0 @/share/c1/rootfs/run/secrets/sa - {rbind:#x}"),
                format!("mount - @/share/c1/rootfs/run/secrets/sa - {ro:#x}"),
                // A file source gets a file mount point.
                format!("mount @/share/c1/mounts/1 @/share/c1/rootfs/etc/hosts - {rbind:#x}"),
                "pivot_root @/share/c1/rootfs".to_string(),
            ]
        );
        assert!(cfg.rootfs.join("run/secrets/sa").is_dir());
        assert!(cfg.rootfs.join("etc/hosts").is_file());
    }

    #[test]
    fn root_plan_refuses_sources_outside_the_container_dir() {
        let (dir, mut cfg) = share_tree();
        let c1 = cfg.sources_dir.clone();
        let mut rec = Recorder {
            base: dir.path().to_path_buf(),
            ops: vec![],
        };
        // A symlink in the share is resolved inside the container's directory: no guest path.
        std::os::unix::fs::symlink("/etc", c1.join("mounts/2")).unwrap();
        cfg.mounts = vec![bind(&format!("{}/mounts/2", c1.display()), "/x", 0)];
        let e = build_root(&mut rec, &cfg).unwrap_err();
        assert!(
            e.contains("bind mount source") && e.contains("mounts/2"),
            "{e}"
        );
        // Outside the directory altogether.
        cfg.mounts = vec![bind("/etc", "/x", 0)];
        let e = build_root(&mut rec, &cfg).unwrap_err();
        assert!(e.contains("not in"), "{e}");
        // A missing source.
        cfg.mounts = vec![bind(&format!("{}/mounts/9", c1.display()), "/x", 0)];
        assert!(build_root(&mut rec, &cfg).is_err());
        assert!(!rec.ops.iter().any(|o| o.contains("/x")), "{:?}", rec.ops);
        assert!(
            !cfg.rootfs.join("x").exists(),
            "no mount point made for a bad source"
        );
        // A missing rootfs.
        cfg.rootfs = dir.path().join("nope");
        assert!(build_root(&mut rec, &cfg)
            .unwrap_err()
            .contains("not a directory"));
    }

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

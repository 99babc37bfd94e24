//! Turns an OCI runtime spec into a validated, serialisable plan for the container init
//! ([`InitConfig`]), the namespaces to create and the cgroup settings. Pure code: no system
//! calls, so every rule here is unit-tested.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, LinuxResources, PosixRlimitType, Spec};
use serde::{Deserialize, Serialize};

use crate::caps::CapSets;
use crate::error::{AgentError, Result};
use crate::seccomp::Insn;

/// Checks a container, sandbox or exec id under the rule the shim checks too
/// ([`kata_rs_protocol::id`], containerd's): it names a cgroup directory and share paths,
/// so it must be a single safe path component.
pub fn validate_id(id: &str) -> Result<()> {
    kata_rs_protocol::id::validate_id(id).map_err(AgentError::invalid)
}

/// Namespaces the container gets, beyond the mount namespace it always gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Namespaces {
    /// New PID namespace (the workload is its PID 1).
    pub pid: bool,
    /// New UTS namespace (own hostname).
    pub uts: bool,
    /// New IPC namespace.
    pub ipc: bool,
    /// New cgroup namespace (created by the init once it sits in its cgroup).
    pub cgroup: bool,
    /// Join the pod sandbox container's PID namespace (at clone time).
    pub join_pid: bool,
    /// Join the pod sandbox container's UTS namespace (the init does, first thing).
    pub join_uts: bool,
    /// Join the pod sandbox container's IPC namespace (the init does, first thing).
    pub join_ipc: bool,
}

/// How a container relates to a pod: the rule travels in CreateContainerRequest.sandbox_id
/// and is the shim's too.
pub use kata_rs_protocol::guest::PodRole;

impl Namespaces {
    /// clone(2) flags for the namespaces created at clone time (mount always; cgroup is
    /// unshared later by the init, after the agent moved it into its cgroup).
    pub fn clone_flags(&self) -> libc::c_int {
        let mut f = libc::CLONE_NEWNS;
        if self.pid {
            f |= libc::CLONE_NEWPID;
        }
        if self.uts {
            f |= libc::CLONE_NEWUTS;
        }
        if self.ipc {
            f |= libc::CLONE_NEWIPC;
        }
        f
    }
}

/// How one mount is made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountKind {
    /// A new file system instance of the given type (proc, tmpfs, sysfs...).
    Fs(String),
    /// A bind mount of a guest path (recursive when `rbind`).
    Bind {
        /// MS_REC: also bind the mounts below the source.
        recursive: bool,
    },
}

/// One planned mount, destination relative to the container root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountPlan {
    /// File system type or bind.
    pub kind: MountKind,
    /// Source: device name for file systems, guest path for binds.
    pub source: String,
    /// Absolute path inside the container.
    pub destination: PathBuf,
    /// MS_* flags (without MS_BIND/MS_REC, which `kind` carries).
    pub flags: u64,
    /// File-system-specific options (`mode=755,size=65536k`).
    pub data: String,
}

impl MountPlan {
    fn fs(fstype: &str, source: &str, dest: &str, options: &[&str]) -> Self {
        let opts: Vec<String> = options.iter().map(|s| s.to_string()).collect();
        let parsed = parse_options(&opts);
        MountPlan {
            kind: MountKind::Fs(fstype.to_string()),
            source: source.to_string(),
            destination: PathBuf::from(dest),
            flags: parsed.flags,
            data: parsed.data,
        }
    }
}

/// Result of parsing OCI mount options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedOptions {
    /// MS_* flags.
    pub flags: u64,
    /// `Some(recursive)` when `bind` / `rbind` was given.
    pub bind: Option<bool>,
    /// Remaining comma-joined file system data.
    pub data: String,
}

/// Parses OCI mount options into MS_* flags, bind mode and file system data. Propagation
/// options are ignored here: every container mount is private; what reaches a bind from the
/// host is decided by the shim's copy in the share and arrives as virtio-fs submounts the
/// guest mounts on lookup (docs/mount-propagation.md).
pub fn parse_options(options: &[String]) -> ParsedOptions {
    let mut p = ParsedOptions::default();
    let mut data = Vec::new();
    for o in options {
        let (set, clear): (u64, u64) = match o.as_str() {
            "ro" => (libc::MS_RDONLY, 0),
            "rw" => (0, libc::MS_RDONLY),
            "nosuid" => (libc::MS_NOSUID, 0),
            "suid" => (0, libc::MS_NOSUID),
            "nodev" => (libc::MS_NODEV, 0),
            "dev" => (0, libc::MS_NODEV),
            "noexec" => (libc::MS_NOEXEC, 0),
            "exec" => (0, libc::MS_NOEXEC),
            "sync" => (libc::MS_SYNCHRONOUS, 0),
            "async" => (0, libc::MS_SYNCHRONOUS),
            "dirsync" => (libc::MS_DIRSYNC, 0),
            "noatime" => (libc::MS_NOATIME, 0),
            "atime" => (0, libc::MS_NOATIME),
            "nodiratime" => (libc::MS_NODIRATIME, 0),
            "diratime" => (0, libc::MS_NODIRATIME),
            "relatime" => (libc::MS_RELATIME, 0),
            "norelatime" => (0, libc::MS_RELATIME),
            "strictatime" => (libc::MS_STRICTATIME, 0),
            "nostrictatime" => (0, libc::MS_STRICTATIME),
            "bind" => {
                p.bind = Some(p.bind.unwrap_or(false));
                continue;
            }
            "rbind" => {
                p.bind = Some(true);
                continue;
            }
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" | "remount" | "defaults" => continue,
            s if s.starts_with("x-") => continue,
            other => {
                data.push(other.to_string());
                continue;
            }
        };
        p.flags = (p.flags | set) & !clear;
    }
    p.data = data.join(",");
    p
}

/// Everything the container init needs, sent to it as JSON over the sync socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitConfig {
    /// Guest path of the container root file system.
    pub rootfs: PathBuf,
    /// Remount the root read-only after pivot_root (spec.root.readonly).
    pub readonly_root: bool,
    /// Mounts in order; a tmpfs on /dev gets the standard device nodes.
    pub mounts: Vec<MountPlan>,
    /// Hostname to set (needs a UTS namespace).
    pub hostname: Option<String>,
    /// Unshare a cgroup namespace once in the container cgroup.
    pub cgroup_ns: bool,
    /// Paths made inaccessible (spec.linux.maskedPaths).
    pub masked_paths: Vec<PathBuf>,
    /// Paths made read-only (spec.linux.readonlyPaths).
    pub readonly_paths: Vec<PathBuf>,
    /// Namespaces to join first thing, as (type name, `/proc/<pid>/ns/<type>`): a pod
    /// container's UTS/IPC namespaces of its sandbox container (filled in by the agent at
    /// create time; the plan leaves it empty).
    #[serde(default)]
    pub join: Vec<(String, PathBuf)>,
    /// The container's directory in the sandbox share (`<share>/<id>`): every bind-mount
    /// source lies in it (see [`check_bind_sources`]) and is resolved inside it, so a
    /// symlink there cannot name a guest path (filled in by the agent at create time).
    #[serde(default)]
    pub sources_dir: PathBuf,
    /// Device nodes to create (spec.linux.devices), after the mounts, as runc does.
    #[serde(default)]
    pub devices: Vec<crate::devices::DeviceNode>,
    /// linux.sysctl as checked by [`crate::sysctl::plan`]: written after pivot_root, before
    /// the read-only paths.
    #[serde(default)]
    pub sysctls: Vec<(String, String)>,
    /// The process to run.
    #[serde(flatten)]
    pub process: ProcessConfig,
}

/// The process part of the plan (container init or exec), from an OCI `process` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessConfig {
    /// Command line; args[0] is resolved in PATH.
    pub args: Vec<String>,
    /// Environment (`KEY=VALUE`).
    pub env: Vec<String>,
    /// Working directory inside the container.
    pub cwd: PathBuf,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
    /// umask, if set.
    pub umask: Option<u32>,
    /// PR_SET_NO_NEW_PRIVS.
    pub no_new_privileges: bool,
    /// (resource, soft, hard) for setrlimit.
    pub rlimits: Vec<(u32, u64, u64)>,
    /// Capability sets; None = the kernel's rules for the uid (root keeps all).
    pub caps: Option<CapSets>,
    /// /proc/self/oom_score_adj.
    pub oom_score_adj: Option<i32>,
    /// The process runs on a pseudo terminal (stdio = the pty slave, made the controlling
    /// terminal after setsid).
    pub terminal: bool,
    /// Seccomp program (from linux.seccomp), installed last before exec.
    pub seccomp: Option<Vec<Insn>>,
}

/// The validated plan for a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// What the init does.
    pub init: InitConfig,
    /// Namespaces to create.
    pub namespaces: Namespaces,
    /// cgroup v2 interface files to write: (file name, value).
    pub cgroup_writes: Vec<(String, String)>,
    /// The cgroup device program (spec.linux.resources.devices + runc's defaults),
    /// attached to the container's cgroup before the workload runs.
    pub device_program: Vec<crate::devices::BpfInsn>,
}

/// Refuses OCI fields the agent does not implement, naming the field: silently ignoring
/// them would run the container differently from what its spec says. Empty objects and
/// empty arrays (what containerd and CRI normally send) pass.
pub fn check_unsupported(spec: &Spec) -> Result<()> {
    if let Some(h) = spec.hooks() {
        #[allow(deprecated)] // prestart: deprecated in the spec, still refused by name
        let lists = [
            ("prestart", h.prestart()),
            ("createRuntime", h.create_runtime()),
            ("createContainer", h.create_container()),
            ("startContainer", h.start_container()),
            ("poststart", h.poststart()),
            ("poststop", h.poststop()),
        ];
        for (name, list) in lists {
            if list.as_ref().is_some_and(|l| !l.is_empty()) {
                return Err(AgentError::unimplemented(format!(
                    "hooks.{name} is not supported by kata-rs (hooks would run inside the VM, \
                     not on the host where their binaries are)"
                )));
            }
        }
    }
    let refuse = |field: &str| {
        Err(AgentError::unimplemented(format!(
            "{field} is not supported by kata-rs (the guest agent does not implement it)"
        )))
    };
    if spec.domainname().as_deref().is_some_and(|d| !d.is_empty()) {
        return refuse("domainname");
    }
    if let Some(l) = spec.linux() {
        if l.intel_rdt().is_some() {
            return refuse("linux.intelRdt");
        }
        if l.personality().is_some() {
            return refuse("linux.personality");
        }
    }
    if let Some(p) = spec.process() {
        if p.scheduler().is_some() {
            return refuse("process.scheduler");
        }
        if p.io_priority().is_some() {
            return refuse("process.ioPriority");
        }
        if p.exec_cpu_affinity().is_some() {
            return refuse("process.execCPUAffinity");
        }
    }
    Ok(())
}

/// Parses the OCI spec JSON.
pub fn parse_spec(json: &[u8]) -> Result<Spec> {
    if json.is_empty() {
        return Err(AgentError::invalid("oci_spec is empty"));
    }
    serde_json::from_slice(json).map_err(|e| AgentError::invalid(format!("invalid OCI spec: {e}")))
}

/// Checks that `p` is absolute and has no `..`; returns it normalised.
fn clean_abs(what: &str, p: &Path) -> Result<PathBuf> {
    if !p.is_absolute() {
        return Err(AgentError::invalid(format!(
            "{what} {p:?} must be an absolute path"
        )));
    }
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(AgentError::invalid(format!(
                    "{what} {p:?} must not contain '..'"
                )))
            }
        }
    }
    Ok(out)
}

/// Checks that every bind mount's source lies in `dir` (the container's directory in the
/// sandbox share, `<share>/<id>/`): the files reach the guest only through the share.
/// Sources are clean absolute paths (the plan refuses `..`), so this is a component-wise
/// prefix test; the init then resolves each source inside `dir`.
pub fn check_bind_sources(mounts: &[MountPlan], dir: &Path) -> Result<()> {
    for m in mounts {
        if let MountKind::Bind { .. } = m.kind {
            let src = Path::new(&m.source);
            if src == dir || !src.starts_with(dir) {
                return Err(AgentError::invalid(format!(
                    "bind mount at {:?}: source {:?} is not in the sandbox share ({}/)",
                    m.destination,
                    m.source,
                    dir.display()
                )));
            }
        }
    }
    Ok(())
}

/// The mounts every container gets unless the spec mounts something at the same place.
pub fn default_mounts() -> Vec<MountPlan> {
    vec![
        MountPlan::fs("proc", "proc", "/proc", &["nosuid", "noexec", "nodev"]),
        MountPlan::fs(
            "tmpfs",
            "tmpfs",
            "/dev",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        MountPlan::fs(
            "devpts",
            "devpts",
            "/dev/pts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
            ],
        ),
        MountPlan::fs(
            "tmpfs",
            "shm",
            "/dev/shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        MountPlan::fs(
            "mqueue",
            "mqueue",
            "/dev/mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        MountPlan::fs(
            "sysfs",
            "sysfs",
            "/sys",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
    ]
}

/// Merges the spec's mounts over the defaults: a spec mount at a default's destination
/// replaces it in place, others are appended in spec order.
pub fn plan_mounts(spec_mounts: &[oci_spec::runtime::Mount]) -> Result<Vec<MountPlan>> {
    let mut plan = default_mounts();
    for m in spec_mounts {
        let dest = clean_abs("mount destination", m.destination())?;
        if dest == Path::new("/") {
            return Err(AgentError::invalid("a mount on \"/\" is not supported"));
        }
        let opts = m.options().clone().unwrap_or_default();
        let parsed = parse_options(&opts);
        let typ = m.typ().clone().unwrap_or_default();
        let mut source = m
            .source()
            .as_ref()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let kind = if parsed.bind.is_some() || typ == "bind" {
            if source.is_empty() {
                return Err(AgentError::invalid(format!(
                    "bind mount at {dest:?} has no source"
                )));
            }
            source = clean_abs("bind mount source", Path::new(&source))?
                .to_string_lossy()
                .into_owned();
            MountKind::Bind {
                recursive: parsed.bind.unwrap_or(false),
            }
        } else {
            match typ.as_str() {
                "" | "none" => {
                    return Err(AgentError::invalid(format!(
                        "mount at {dest:?} has no type and is not a bind mount"
                    )))
                }
                // Only cgroup v2 exists in the guest.
                "cgroup" | "cgroup2" => MountKind::Fs("cgroup2".into()),
                t => MountKind::Fs(t.to_string()),
            }
        };
        let source = if source.is_empty() {
            typ.clone()
        } else {
            source
        };
        let mp = MountPlan {
            kind,
            source,
            destination: dest,
            flags: parsed.flags,
            data: parsed.data,
        };
        if let Some(slot) = plan.iter_mut().find(|p| p.destination == mp.destination) {
            *slot = mp;
        } else {
            plan.push(mp);
        }
    }
    Ok(plan)
}

/// Reads spec.linux.namespaces; rejects what the agent does not support. A namespace with
/// a `path` (a host path, e.g. CRI's `/proc/<pause pid>/ns/ipc`, meaningless in the guest)
/// means, in a pod, the pod sandbox container's namespace of that type ([`PodRole`]).
pub fn plan_namespaces(spec: &Spec, role: PodRole) -> Result<Namespaces> {
    let mut ns = Namespaces::default();
    let mut seen = HashSet::new();
    let list = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    for n in &list {
        let typ = n.typ();
        if !seen.insert(typ) {
            return Err(AgentError::invalid(format!(
                "namespace {typ} is listed twice in spec.linux.namespaces"
            )));
        }
        if let Some(path) = n.path() {
            match (role, typ) {
                (PodRole::Single, _) => {
                    return Err(AgentError::unimplemented(format!(
                        "joining an existing {typ} namespace ({path:?}) is not supported yet \
                         outside a pod (the CRI annotations io.kubernetes.cri.container-type \
                         and io.kubernetes.cri.sandbox-id make a container part of one)"
                    )))
                }
                // The VM is the pod's network sandbox: the guest's network namespace.
                (_, LinuxNamespaceType::Network) => {}
                (PodRole::Member, LinuxNamespaceType::Pid) => ns.join_pid = true,
                (PodRole::Member, LinuxNamespaceType::Uts) => ns.join_uts = true,
                (PodRole::Member, LinuxNamespaceType::Ipc) => ns.join_ipc = true,
                (
                    PodRole::Sandbox,
                    LinuxNamespaceType::Pid | LinuxNamespaceType::Uts | LinuxNamespaceType::Ipc,
                ) => {
                    return Err(AgentError::invalid(format!(
                        "the pod's sandbox container cannot join a {typ} namespace ({path:?}): \
                         its namespaces are the ones the pod's containers join"
                    )))
                }
                _ => {
                    return Err(AgentError::unimplemented(format!(
                        "joining an existing {typ} namespace ({path:?}) is not supported yet \
                         (a pod's containers share its network, ipc, uts and pid namespaces)"
                    )))
                }
            }
            continue;
        }
        match typ {
            LinuxNamespaceType::Mount => {}
            LinuxNamespaceType::Pid => ns.pid = true,
            LinuxNamespaceType::Uts => ns.uts = true,
            LinuxNamespaceType::Ipc => ns.ipc = true,
            LinuxNamespaceType::Cgroup => ns.cgroup = true,
            // The VM is the pod's network namespace: containers share the guest's.
            LinuxNamespaceType::Network => {}
            LinuxNamespaceType::User => {
                return Err(AgentError::unimplemented(
                    "user namespaces are not supported yet (spec.linux.namespaces has \"user\")",
                ))
            }
            LinuxNamespaceType::Time => {
                return Err(AgentError::unimplemented(
                    "time namespaces are not supported yet (spec.linux.namespaces has \"time\")",
                ))
            }
        }
    }
    Ok(ns)
}

/// Converts spec.linux.resources into cgroup v2 interface file writes.
pub fn plan_cgroup(res: Option<&LinuxResources>) -> Result<Vec<(String, String)>> {
    let mut w = Vec::new();
    let Some(res) = res else { return Ok(w) };
    if let Some(mem) = res.memory() {
        if let Some(limit) = mem.limit() {
            w.push(("memory.max".into(), limit_value(limit)));
        }
        if let (Some(swap), Some(limit)) = (mem.swap(), mem.limit()) {
            // OCI swap is memory+swap; v2 memory.swap.max is swap alone.
            let v = if swap < 0 || limit < 0 {
                "max".to_string()
            } else if swap < limit {
                return Err(AgentError::invalid(format!(
                    "memory.swap ({swap}) must not be below memory.limit ({limit})"
                )));
            } else {
                (swap - limit).to_string()
            };
            w.push(("memory.swap.max".into(), v));
        }
    }
    if let Some(cpu) = res.cpu() {
        if let Some(shares) = cpu.shares() {
            if shares > 0 {
                w.push(("cpu.weight".into(), shares_to_weight(shares).to_string()));
            }
        }
        let period = cpu.period().unwrap_or(100_000);
        match cpu.quota() {
            Some(q) if q > 0 => w.push(("cpu.max".into(), format!("{q} {period}"))),
            Some(_) => w.push(("cpu.max".into(), format!("max {period}"))),
            None if cpu.period().is_some() => w.push(("cpu.max".into(), format!("max {period}"))),
            None => {}
        }
    }
    if let Some(pids) = res.pids() {
        w.push(("pids.max".into(), limit_value(pids.limit())));
    }
    Ok(w)
}

fn limit_value(v: i64) -> String {
    if v <= 0 {
        "max".into()
    } else {
        v.to_string()
    }
}

/// cgroup v1 cpu.shares → v2 cpu.weight, the formula runc and crun use.
pub fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

// RLIMIT_* are u32 on glibc and i32 on musl: the cast is needed on one of them.
#[allow(clippy::unnecessary_cast)]
fn rlimit_resource(t: PosixRlimitType) -> u32 {
    use PosixRlimitType as R;
    (match t {
        R::RlimitCpu => libc::RLIMIT_CPU,
        R::RlimitFsize => libc::RLIMIT_FSIZE,
        R::RlimitData => libc::RLIMIT_DATA,
        R::RlimitStack => libc::RLIMIT_STACK,
        R::RlimitCore => libc::RLIMIT_CORE,
        R::RlimitRss => libc::RLIMIT_RSS,
        R::RlimitNproc => libc::RLIMIT_NPROC,
        R::RlimitNofile => libc::RLIMIT_NOFILE,
        R::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        R::RlimitAs => libc::RLIMIT_AS,
        R::RlimitLocks => libc::RLIMIT_LOCKS,
        R::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        R::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        R::RlimitNice => libc::RLIMIT_NICE,
        R::RlimitRtprio => libc::RLIMIT_RTPRIO,
        R::RlimitRttime => libc::RLIMIT_RTTIME,
    }) as u32
}

/// Compiles `linux.seccomp`, if any.
pub fn plan_seccomp(spec: &Spec) -> Result<Option<Vec<Insn>>> {
    spec.linux()
        .as_ref()
        .and_then(|l| l.seccomp().as_ref())
        .map(crate::seccomp::compile)
        .transpose()
}

/// Validates an OCI `process` object (container init or exec) and plans it; `seccomp` is
/// the container's compiled profile, which exec processes get too (as with runc).
pub fn plan_process(
    process: &oci_spec::runtime::Process,
    seccomp: Option<Vec<Insn>>,
) -> Result<ProcessConfig> {
    let args = process.args().clone().unwrap_or_default();
    if args.is_empty() || args[0].is_empty() {
        return Err(AgentError::invalid("process.args is empty: nothing to run"));
    }
    let cwd = clean_abs("process.cwd", process.cwd())?;
    let user = process.user();
    let rlimits = process
        .rlimits()
        .as_ref()
        .map(|v| {
            v.iter()
                .map(|r| (rlimit_resource(r.typ()), r.soft(), r.hard()))
                .collect()
        })
        .unwrap_or_default();
    let caps = process
        .capabilities()
        .as_ref()
        .map(crate::caps::plan)
        .transpose()?;
    if let Some(adj) = process.oom_score_adj() {
        if !(-1000..=1000).contains(&adj) {
            return Err(AgentError::invalid(format!(
                "process.oomScoreAdj {adj} is out of range (-1000..1000)"
            )));
        }
    }
    Ok(ProcessConfig {
        args,
        env: process.env().clone().unwrap_or_default(),
        cwd,
        uid: user.uid(),
        gid: user.gid(),
        additional_gids: user.additional_gids().clone().unwrap_or_default(),
        umask: user.umask(),
        no_new_privileges: process.no_new_privileges().unwrap_or(false),
        rlimits,
        caps,
        oom_score_adj: process.oom_score_adj(),
        terminal: process.terminal().unwrap_or(false),
        seccomp,
    })
}

/// Validates the spec and builds the plan for a container whose root is `rootfs`.
pub fn plan(spec: &Spec, rootfs: &Path, role: PodRole) -> Result<Plan> {
    check_unsupported(spec)?;
    let rootfs = clean_abs("rootfs_path", rootfs)?;
    if rootfs == Path::new("/") {
        return Err(AgentError::invalid("rootfs_path must not be \"/\""));
    }
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| AgentError::invalid("spec has no process"))?;
    let seccomp = plan_seccomp(spec)?;
    let process = plan_process(process, seccomp)?;
    let namespaces = plan_namespaces(spec, role)?;
    let hostname = spec.hostname().clone().filter(|h| !h.is_empty());
    if hostname.is_some() && !namespaces.uts && !namespaces.join_uts {
        return Err(AgentError::invalid(
            "spec sets a hostname but has no uts namespace in spec.linux.namespaces",
        ));
    }
    let mounts = plan_mounts(spec.mounts().as_deref().unwrap_or(&[]))?;
    let linux = spec.linux().as_ref();
    let paths = |v: Option<&Vec<String>>, what: &str| -> Result<Vec<PathBuf>> {
        v.map(|v| v.as_slice())
            .unwrap_or(&[])
            .iter()
            .map(|p| clean_abs(what, Path::new(p)))
            .collect()
    };
    let masked_paths = paths(linux.and_then(|l| l.masked_paths().as_ref()), "masked path")?;
    let readonly_paths = paths(
        linux.and_then(|l| l.readonly_paths().as_ref()),
        "readonly path",
    )?;
    let cgroup_writes = plan_cgroup(linux.and_then(|l| l.resources().as_ref()))?;
    let device_program = crate::devices::plan(
        linux
            .and_then(|l| l.resources().as_ref())
            .and_then(|r| r.devices().as_deref()),
    )?;
    let devices =
        crate::devices::plan_nodes(linux.and_then(|l| l.devices().as_deref()).unwrap_or(&[]))?;
    let sysctls = crate::sysctl::plan(spec, &namespaces)?;
    let init = InitConfig {
        sysctls,
        rootfs,
        readonly_root: spec
            .root()
            .as_ref()
            .and_then(|r| r.readonly())
            .unwrap_or(false),
        mounts,
        hostname,
        cgroup_ns: namespaces.cgroup,
        masked_paths,
        readonly_paths,
        join: Vec::new(),
        sources_dir: PathBuf::new(),
        devices,
        process,
    };
    Ok(Plan {
        init,
        namespaces,
        cgroup_writes,
        device_program,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Spec {
        parse_spec(json.as_bytes()).expect("valid spec")
    }

    const BASIC: &str = r#"{
        "ociVersion": "1.0.2",
        "process": {"args": ["sh", "-c", "echo hi"], "cwd": "/", "env": ["PATH=/bin"],
                    "user": {"uid": 0, "gid": 0}},
        "root": {"path": "rootfs"},
        "hostname": "box",
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "uts"},
                                 {"type": "ipc"}, {"type": "network"}]}
    }"#;

    #[test]
    fn ids() {
        assert!(validate_id("abc-1_2.3").is_ok());
        assert!(validate_id("").is_err());
        assert!(validate_id("..").is_err());
        assert!(validate_id("a/b").is_err());
        assert!(validate_id(".hidden").is_err());
        assert!(validate_id(&"x".repeat(129)).is_err());
        // The rule is the shim's (containerd's): no `+`, at most 76, alphanumeric ends.
        assert!(validate_id(&"x".repeat(76)).is_ok());
        assert!(validate_id(&"x".repeat(77)).is_err());
        assert!(validate_id("a+b").is_err());
        assert!(validate_id("a-").is_err());
    }

    #[test]
    fn basic_plan() {
        let p = plan(
            &spec(BASIC),
            Path::new("/run/kata-rs/containers/c1/rootfs"),
            PodRole::Single,
        )
        .unwrap();
        assert_eq!(
            p.namespaces,
            Namespaces {
                pid: true,
                uts: true,
                ipc: true,
                cgroup: false,
                ..Default::default()
            }
        );
        assert_eq!(
            p.namespaces.clone_flags(),
            libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC
        );
        assert_eq!(p.init.process.args, ["sh", "-c", "echo hi"]);
        assert_eq!(p.init.hostname.as_deref(), Some("box"));
        assert_eq!(p.init.mounts, default_mounts());
        assert!(p.cgroup_writes.is_empty());
        // The init config survives the trip over the sync socket.
        let json = serde_json::to_string(&p.init).unwrap();
        assert_eq!(serde_json::from_str::<InitConfig>(&json).unwrap(), p.init);
    }

    #[test]
    fn rejects_unsupported_namespaces() {
        let s = BASIC.replace(r#"{"type": "network"}"#, r#"{"type": "user"}"#);
        let e = plan(&spec(&s), Path::new("/r"), PodRole::Single).unwrap_err();
        assert_eq!(e.code, ttrpc::Code::UNIMPLEMENTED);
        assert!(e.message.contains("user namespaces"), "{}", e.message);

        let s = BASIC.replace(r#"{"type": "network"}"#, r#"{"type": "bogus"}"#);
        let e = parse_spec(s.as_bytes()).unwrap_err();
        assert!(e.message.contains("invalid OCI spec"), "{}", e.message);
        assert!(e.message.contains("bogus"), "{}", e.message);

        let s = BASIC.replace(
            r#"{"type": "network"}"#,
            r#"{"type": "network", "path": "/proc/1/ns/net"}"#,
        );
        let e = plan(&spec(&s), Path::new("/r"), PodRole::Single).unwrap_err();
        assert!(e.message.contains("not supported yet"), "{}", e.message);

        let s = BASIC.replace(r#"{"type": "network"}"#, r#"{"type": "pid"}"#);
        assert!(plan(&spec(&s), Path::new("/r"), PodRole::Single).is_err());
    }

    #[test]
    fn pod_namespaces_map_onto_the_sandbox_container() {
        // A CRI pod container: host paths of the pause container's namespaces.
        let member = BASIC
            .replace(
                r#"{"type": "network"}"#,
                r#"{"type": "network", "path": "/proc/42/ns/net"}"#,
            )
            .replace(
                r#"{"type": "uts"}"#,
                r#"{"type": "uts", "path": "/proc/42/ns/uts"}"#,
            )
            .replace(
                r#"{"type": "ipc"}"#,
                r#"{"type": "ipc", "path": "/proc/42/ns/ipc"}"#,
            );
        let p = plan(&spec(&member), Path::new("/r"), PodRole::Member).unwrap();
        assert_eq!(
            p.namespaces,
            Namespaces {
                pid: true,
                join_uts: true,
                join_ipc: true,
                ..Default::default()
            }
        );
        // Only a new pid (and always mount) namespace at clone time; the hostname may be
        // set in the joined UTS namespace, as runc does.
        assert_eq!(
            p.namespaces.clone_flags(),
            libc::CLONE_NEWNS | libc::CLONE_NEWPID
        );
        assert_eq!(p.init.hostname.as_deref(), Some("box"));
        // Sharing the pod's PID namespace (shareProcessNamespace).
        let shared = member.replace(
            r#"{"type": "pid"}"#,
            r#"{"type": "pid", "path": "/proc/42/ns/pid"}"#,
        );
        let n = plan(&spec(&shared), Path::new("/r"), PodRole::Member)
            .unwrap()
            .namespaces;
        assert!(n.join_pid && !n.pid);
        assert_eq!(n.clone_flags(), libc::CLONE_NEWNS);
        // The same spec outside a pod is refused, as before.
        let e = plan(&spec(&member), Path::new("/r"), PodRole::Single).unwrap_err();
        assert_eq!(e.code, ttrpc::Code::UNIMPLEMENTED);
        // The sandbox container: its network path is the guest's; it cannot join itself.
        let sandbox = BASIC.replace(
            r#"{"type": "network"}"#,
            r#"{"type": "network", "path": "/var/run/netns/cni-1"}"#,
        );
        let n = plan(&spec(&sandbox), Path::new("/r"), PodRole::Sandbox)
            .unwrap()
            .namespaces;
        assert!(n.pid && n.uts && n.ipc && !n.join_uts);
        let e = plan(&spec(&member), Path::new("/r"), PodRole::Sandbox).unwrap_err();
        assert_eq!(e.code, ttrpc::Code::INVALID_ARGUMENT);
        assert!(e.message.contains("sandbox container cannot join"), "{e}");
        // Joining a mount namespace stays unsupported.
        let mnt = BASIC.replace(
            r#"{"type": "mount"}"#,
            r#"{"type": "mount", "path": "/proc/42/ns/mnt"}"#,
        );
        let e = plan(&spec(&mnt), Path::new("/r"), PodRole::Member).unwrap_err();
        assert_eq!(e.code, ttrpc::Code::UNIMPLEMENTED);
        assert_eq!(PodRole::of("c1", ""), PodRole::Single);
        assert_eq!(PodRole::of("c1", "c1"), PodRole::Sandbox);
        assert_eq!(PodRole::of("c1", "pod"), PodRole::Member);
    }

    #[test]
    fn rejects_bad_process() {
        let s = BASIC.replace(r#"["sh", "-c", "echo hi"]"#, "[]");
        let e = plan(&spec(&s), Path::new("/r"), PodRole::Single).unwrap_err();
        assert!(e.message.contains("process.args is empty"));
        let s = BASIC.replace(r#""cwd": "/""#, r#""cwd": "rel""#);
        assert!(plan(&spec(&s), Path::new("/r"), PodRole::Single).is_err());
        let s = BASIC.replace(r#""cwd": "/""#, r#""cwd": "/", "terminal": true"#);
        assert!(
            plan(&spec(&s), Path::new("/r"), PodRole::Single)
                .unwrap()
                .init
                .process
                .terminal
        );
        let s = BASIC.replace(r#""cwd": "/""#, r#""cwd": "/", "oomScoreAdj": 1001"#);
        assert!(plan(&spec(&s), Path::new("/r"), PodRole::Single)
            .unwrap_err()
            .message
            .contains("oomScoreAdj"));
        let s = BASIC.replace(r#"{"type": "uts"},"#, "");
        assert!(plan(&spec(&s), Path::new("/r"), PodRole::Single)
            .unwrap_err()
            .message
            .contains("hostname"));
        assert!(plan(&spec(BASIC), Path::new("/"), PodRole::Single).is_err());
        assert!(plan(&spec(BASIC), Path::new("/a/../b"), PodRole::Single).is_err());
        assert!(parse_spec(b"").is_err());
        assert!(parse_spec(b"{").is_err());
    }

    #[test]
    fn process_semantics() {
        let s = BASIC
            .replace(
                r#""user": {"uid": 0, "gid": 0}"#,
                r#""user": {"uid": 1000, "gid": 1000, "additionalGids": [10, 20], "umask": 63},
               "noNewPrivileges": true, "oomScoreAdj": 500,
               "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 100, "hard": 200}],
               "capabilities": {"bounding": ["CAP_KILL", "CAP_CHOWN"], "effective": ["CAP_KILL"]}"#,
            )
            .replace(
                r#""namespaces""#,
                r#""seccomp": {"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]}, "namespaces""#,
            );
        let p = plan(&spec(&s), Path::new("/r"), PodRole::Single)
            .unwrap()
            .init
            .process;
        assert_eq!((p.uid, p.gid), (1000, 1000));
        assert_eq!(p.additional_gids, [10, 20]);
        assert_eq!(p.umask, Some(63));
        assert!(p.no_new_privileges);
        assert_eq!(p.oom_score_adj, Some(500));
        assert_eq!(
            p.rlimits,
            [(rlimit_resource(PosixRlimitType::RlimitNofile), 100, 200)]
        );
        let caps = p.caps.unwrap();
        assert_eq!(caps.bounding, 1 | (1 << 5));
        assert_eq!(caps.effective, 1 << 5);
        assert_eq!(caps.permitted, 0);
        assert!(p.seccomp.is_some_and(|prog| prog.len() > 4));
    }

    #[test]
    fn options() {
        let o = |v: &[&str]| parse_options(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let p = o(&["nosuid", "nodev", "ro", "mode=755", "size=1k", "rprivate"]);
        assert_eq!(p.flags, libc::MS_NOSUID | libc::MS_NODEV | libc::MS_RDONLY);
        assert_eq!(p.data, "mode=755,size=1k");
        assert_eq!(p.bind, None);
        let p = o(&["ro", "rw", "rbind"]);
        assert_eq!(p.flags, 0);
        assert_eq!(p.bind, Some(true));
        assert_eq!(o(&["bind"]).bind, Some(false));
    }

    #[test]
    fn mounts_merge_over_defaults() {
        let s = BASIC.replace(
            r#""hostname""#,
            r#""mounts": [
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["mode=700"]},
                {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["ro"]},
                {"destination": "/data", "type": "bind", "source": "/run/data", "options": ["rbind", "ro"]},
                {"destination": "/etc/hosts", "source": "/run/hosts", "options": ["bind"]}
            ], "hostname""#,
        );
        let p = plan(&spec(&s), Path::new("/r"), PodRole::Single).unwrap();
        let m = &p.init.mounts;
        assert_eq!(m.len(), default_mounts().len() + 3);
        assert_eq!(m[1].destination, Path::new("/dev"));
        assert_eq!(m[1].data, "mode=700");
        let cg = m
            .iter()
            .find(|m| m.destination == Path::new("/sys/fs/cgroup"))
            .unwrap();
        assert_eq!(cg.kind, MountKind::Fs("cgroup2".into()));
        assert_eq!(cg.flags, libc::MS_RDONLY);
        let data = m
            .iter()
            .find(|m| m.destination == Path::new("/data"))
            .unwrap();
        assert_eq!(data.kind, MountKind::Bind { recursive: true });
        assert_eq!(data.source, "/run/data");
        let hosts = m.last().unwrap();
        assert_eq!(hosts.kind, MountKind::Bind { recursive: false });

        let bad = BASIC.replace(
            r#""hostname""#,
            r#""mounts": [{"destination": "/x/../../etc", "type": "tmpfs"}], "hostname""#,
        );
        assert!(plan(&spec(&bad), Path::new("/r"), PodRole::Single).is_err());
        let bad = BASIC.replace(
            r#""hostname""#,
            r#""mounts": [{"destination": "/x", "options": ["bind"]}], "hostname""#,
        );
        assert!(plan(&spec(&bad), Path::new("/r"), PodRole::Single)
            .unwrap_err()
            .message
            .contains("no source"));
    }

    #[test]
    fn bind_sources_must_lie_in_the_share() {
        let s = BASIC.replace(
            r#""hostname""#,
            r#""mounts": [
                {"destination": "/dev/shm", "type": "tmpfs", "source": "shm"},
                {"destination": "/data", "type": "bind", "source": "/run/kata-rs/shared/c1/mounts/1"},
                {"destination": "/etc/hosts", "source": "//run/kata-rs/shared/c1/./mounts/2", "options": ["rbind"]}
            ], "hostname""#,
        );
        let p = plan(&spec(&s), Path::new("/r"), PodRole::Single).unwrap();
        let dir = Path::new("/run/kata-rs/shared/c1");
        check_bind_sources(&p.init.mounts, dir).unwrap();
        assert_eq!(
            p.init.mounts.last().unwrap().source,
            "/run/kata-rs/shared/c1/mounts/2"
        );
        for src in [
            "/run/kata-rs/shared/c2/mounts/1",
            "/run/kata-rs/shared/c1",
            "/run/kata-rs/shared/c10/mounts/1",
            "/etc",
            "/run/kata-rs/containers/c1/mounts/1",
        ] {
            let s = BASIC.replace(
                r#""hostname""#,
                &format!(
                    r#""mounts": [{{"destination": "/x", "type": "bind", "source": "{src}"}}], "hostname""#
                ),
            );
            let p = plan(&spec(&s), Path::new("/r"), PodRole::Single).unwrap();
            let e = check_bind_sources(&p.init.mounts, dir).unwrap_err();
            assert_eq!(e.code, ttrpc::Code::INVALID_ARGUMENT);
            assert!(
                e.message
                    .contains("not in the sandbox share (/run/kata-rs/shared/c1/)"),
                "{e}"
            );
        }
        // `..` never gets that far.
        let s = BASIC.replace(
            r#""hostname""#,
            r#""mounts": [{"destination": "/x", "type": "bind", "source": "/run/kata-rs/shared/c1/../c2"}], "hostname""#,
        );
        assert!(plan(&spec(&s), Path::new("/r"), PodRole::Single).is_err());
    }

    #[test]
    fn unimplemented_fields_are_refused_by_name_empty_ones_pass() {
        for name in [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststart",
            "poststop",
        ] {
            let s = BASIC.replace(
                r#""hostname""#,
                &format!(r#""hooks": {{"{name}": [{{"path": "/bin/true"}}]}}, "hostname""#),
            );
            let e = plan(&spec(&s), Path::new("/r"), PodRole::Single).unwrap_err();
            assert_eq!(e.code, ttrpc::Code::UNIMPLEMENTED);
            assert!(
                e.message.starts_with(&format!(
                    "hooks.{name} is not supported by kata-rs (hooks would run inside the VM"
                )),
                "{e}"
            );
        }
        for (field, json) in [
            ("domainname", r#""domainname": "example.org""#),
            (
                "process.scheduler",
                r#""process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}, "scheduler": {"policy": "SCHED_BATCH"}}"#,
            ),
            (
                "process.ioPriority",
                r#""process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}, "ioPriority": {"class": "IOPRIO_CLASS_IDLE", "priority": 0}}"#,
            ),
        ] {
            let mut v: serde_json::Value = serde_json::from_str(BASIC).unwrap();
            let extra: serde_json::Value = serde_json::from_str(&format!("{{{json}}}")).unwrap();
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            let e = plan(&spec(&v.to_string()), Path::new("/r"), PodRole::Single).unwrap_err();
            assert_eq!(e.code, ttrpc::Code::UNIMPLEMENTED);
            assert!(
                e.message
                    .starts_with(&format!("{field} is not supported by kata-rs")),
                "{e}"
            );
        }
        let mut v: serde_json::Value = serde_json::from_str(BASIC).unwrap();
        v["linux"]["personality"] = serde_json::json!({"domain": "LINUX32"});
        let e = plan(&spec(&v.to_string()), Path::new("/r"), PodRole::Single).unwrap_err();
        assert!(
            e.message.starts_with("linux.personality is not supported"),
            "{e}"
        );
        let mut v: serde_json::Value = serde_json::from_str(BASIC).unwrap();
        v["linux"]["intelRdt"] = serde_json::json!({"closID": "x"});
        let e = plan(&spec(&v.to_string()), Path::new("/r"), PodRole::Single).unwrap_err();
        assert!(
            e.message.starts_with("linux.intelRdt is not supported"),
            "{e}"
        );
        // An empty domainname is what `ctr oci spec` does not even write: it passes.
        let mut v: serde_json::Value = serde_json::from_str(BASIC).unwrap();
        v["domainname"] = "".into();
        plan(&spec(&v.to_string()), Path::new("/r"), PodRole::Single).unwrap();
        // What containerd and CRI send without hooks: nothing, {}, or empty lists.
        for hooks in [r#"{}"#, r#"{"prestart": [], "poststop": []}"#] {
            let s = BASIC.replace(r#""hostname""#, &format!(r#""hooks": {hooks}, "hostname""#));
            plan(&spec(&s), Path::new("/r"), PodRole::Single).unwrap();
        }
    }

    #[test]
    fn devices_are_planned_or_refused() {
        // containerd's default: deny all, then runc's defaults; nodes to create.
        let s = BASIC.replace(
            r#""namespaces""#,
            r#""resources": {"devices": [{"allow": false, "access": "rwm"}]},
               "devices": [{"path": "/dev/ttyS0", "type": "c", "major": 4, "minor": 64}],
               "namespaces""#,
        );
        let p = plan(&spec(&s), Path::new("/r"), PodRole::Single).unwrap();
        assert_eq!(p.device_program, crate::devices::plan(None).unwrap());
        assert_eq!(p.init.devices.len(), 1);
        assert_eq!(p.init.devices[0].path, Path::new("/dev/ttyS0"));
        let json = serde_json::to_string(&p.init).unwrap();
        assert_eq!(serde_json::from_str::<InitConfig>(&json).unwrap(), p.init);
        // No rules at all: the same program (runc starts from deny-all too).
        let p = plan(&spec(BASIC), Path::new("/r"), PodRole::Single).unwrap();
        assert_eq!(p.device_program, crate::devices::plan(None).unwrap());
        // Entries the agent cannot honour are refused, never skipped.
        for (bad, msg) in [
            (
                r#""resources": {"devices": [{"allow": true, "type": "p", "access": "r"}]}"#,
                "linux.resources.devices[0]: device type \"p\"",
            ),
            (
                r#""resources": {"devices": [{"allow": true, "type": "c"}]}"#,
                "linux.resources.devices[0]: access \"\" is invalid",
            ),
            (
                r#""devices": [{"path": "/dev/x", "type": "a", "major": 1, "minor": 1}]"#,
                "linux.devices[0] (\"/dev/x\"): type \"a\"",
            ),
        ] {
            let s = BASIC.replace(r#""namespaces""#, &format!(r#"{bad}, "namespaces""#));
            let e = plan(&spec(&s), Path::new("/r"), PodRole::Single).unwrap_err();
            assert_eq!(e.code, ttrpc::Code::INVALID_ARGUMENT);
            assert!(e.message.starts_with(msg), "{e}");
        }
        let s = BASIC.replace(
            r#""namespaces""#,
            r#""devices": [{"path": "/dev/x", "type": "z", "major": 1, "minor": 1}], "namespaces""#,
        );
        assert!(parse_spec(s.as_bytes())
            .unwrap_err()
            .message
            .contains("invalid OCI spec"));
    }

    #[test]
    fn cgroup_resources() {
        let s = BASIC.replace(
            r#""namespaces""#,
            r#""resources": {"memory": {"limit": 268435456, "swap": 536870912},
                             "cpu": {"shares": 1024, "quota": 50000, "period": 100000},
                             "pids": {"limit": 100}}, "namespaces""#,
        );
        let p = plan(&spec(&s), Path::new("/r"), PodRole::Single).unwrap();
        let get = |k: &str| {
            p.cgroup_writes
                .iter()
                .find(|(f, _)| f == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("memory.max").as_deref(), Some("268435456"));
        assert_eq!(get("memory.swap.max").as_deref(), Some("268435456"));
        assert_eq!(get("cpu.max").as_deref(), Some("50000 100000"));
        assert_eq!(get("cpu.weight").as_deref(), Some("39"));
        assert_eq!(get("pids.max").as_deref(), Some("100"));
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }
}

//! The sandbox's host cgroup (v2): the shim, the VMM and virtiofsd of a sandbox run in one
//! cgroup on the host, like Kata's `sandbox_cgroup_only`, so that what a guest makes the
//! host spend (guest RAM, vCPU time, file-server memory) is accounted to the pod and bounded
//! by the pod's limits (the kubelet sets them on the pod cgroup: containers' limits plus
//! the RuntimeClass's PodOverhead).
//!
//! Which cgroup: the sandbox container's `linux.cgroupsPath`, exactly where runc would have
//! put the pause container (under CRI: `<pod cgroup>/<sandbox id>`; under plain `ctr`:
//! `/<namespace>/<id>`); a systemd-style path (`slice:prefix:name`) is expanded the way
//! runc expands it into cgroupfs directories (no systemd unit is made); no path at all gives
//! `<cgroup.parent>/<sandbox id>`. The shim creates the leaf (and any missing parent),
//! enables the memory/cpu/pids/io controllers on the way down, and moves itself in before it
//! starts virtiofsd and the VMM, which inherit it. When the sandbox ends, the shim moves
//! back to the cgroup it came from, kills whatever is left in the leaf (`cgroup.kill`) and
//! removes the leaf; a lost shim's cleanup (`containerd-shim-kata-v2 delete`) does the same
//! from the path recorded in the state directory.

use std::{
    io::ErrorKind,
    path::{Component, Path, PathBuf},
    time::{Duration, Instant},
};

/// Where the cgroup v2 hierarchy is mounted on the host.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The file in the sandbox's state directory that records its host cgroup (relative to
/// the hierarchy's root), for the cleanup of a lost shim.
pub const RECORD_FILE: &str = "host-cgroup";

/// Controllers enabled on the way down to the sandbox's cgroup (those the parent has).
const CONTROLLERS: [&str; 4] = ["memory", "cpu", "pids", "io"];

/// One cgroup of the v2 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCgroup {
    root: PathBuf,
    rel: PathBuf,
}

/// The sandbox's cgroup, relative to the hierarchy root, from the sandbox container's
/// `linux.cgroupsPath` (`None` or empty: `<parent>/<sandbox_id>`). Refuses `..`, `.` and
/// paths that name the root itself, with the reason.
pub fn sandbox_cgroup_path(
    cgroups_path: Option<&str>,
    parent: &str,
    sandbox_id: &str,
) -> Result<PathBuf, String> {
    match cgroups_path.map(str::trim).filter(|p| !p.is_empty()) {
        None => clean(&format!("{}/{sandbox_id}", parent.trim_end_matches('/')))
            .map_err(|e| format!("cgroup.parent {parent:?}: {e}")),
        Some(p) if !p.starts_with('/') && p.split(':').count() == 3 => systemd_path(p),
        Some(p) => clean(p).map_err(|e| format!("linux.cgroupsPath {p:?}: {e}")),
    }
}

/// The cgroup the sandbox gets for `rel`: `rel` itself when it does not exist yet (the
/// sandbox owns it and removes it at the end), else a child `kata-rs-<sandbox_id>` of it: a
/// cgroup that is already there (a hand-written spec's `/<namespace>`, a shared parent) may
/// hold other processes or cgroups (the no-internal-process rule would refuse the shim),
/// and is never the sandbox's to kill or remove. Accounting and limits are the same under a
/// child.
pub fn own_leaf(root: &Path, rel: PathBuf, sandbox_id: &str) -> PathBuf {
    if root.join(&rel).exists() {
        rel.join(format!("kata-rs-{sandbox_id}"))
    } else {
        rel
    }
}

/// A clean relative path of normal components.
fn clean(p: &str) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for c in Path::new(p).components() {
        match c {
            Component::RootDir => {}
            Component::Normal(n) => out.push(n),
            _ => return Err("has a `..` component".into()),
        }
    }
    if out.as_os_str().is_empty() {
        return Err("names the root cgroup".into());
    }
    Ok(out)
}

/// `slice:prefix:name` (the systemd cgroup driver's form) as cgroupfs directories:
/// `a-b.slice:cri-containerd:ID` -> `a.slice/a-b.slice/cri-containerd-ID.scope`.
fn systemd_path(p: &str) -> Result<PathBuf, String> {
    let bad =
        |why: &str| format!("linux.cgroupsPath {p:?} (systemd form slice:prefix:name): {why}");
    let mut parts = p.split(':');
    let (slice, prefix, name) = match (parts.next(), parts.next(), parts.next()) {
        (Some(s), Some(pr), Some(n)) => (s, pr, n),
        _ => return Err(bad("not three parts")),
    };
    if name.is_empty() || [slice, prefix, name].iter().any(|s| s.contains('/')) {
        return Err(bad("empty name or a `/` in a part"));
    }
    let mut out = PathBuf::new();
    let slice = if slice.is_empty() {
        "system.slice"
    } else {
        slice
    };
    if slice != "-.slice" {
        let stem = slice
            .strip_suffix(".slice")
            .filter(|s| !s.is_empty() && !s.starts_with('-') && !s.ends_with('-'))
            .ok_or_else(|| bad("the slice must be NAME.slice"))?;
        let mut acc = String::new();
        for part in stem.split('-') {
            if part.is_empty() {
                return Err(bad("the slice has an empty `-` part"));
            }
            if !acc.is_empty() {
                acc.push('-');
            }
            acc.push_str(part);
            out.push(format!("{acc}.slice"));
        }
    }
    let leaf = if name.ends_with(".slice") {
        name.to_string()
    } else if prefix.is_empty() {
        format!("{name}.scope")
    } else {
        format!("{prefix}-{name}.scope")
    };
    if leaf == "." || leaf == ".." {
        return Err(bad("bad name"));
    }
    out.push(leaf);
    Ok(out)
}

/// Whether `root` is a cgroup v2 mount.
pub fn is_cgroup2(root: &Path) -> bool {
    nix::sys::statfs::statfs(root)
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// The cgroup (relative to the hierarchy root) of process `pid` (`self` for this one), from
/// its `0::` line in `/proc/PID/cgroup`.
pub fn cgroup_of(pid: &str) -> Result<PathBuf, String> {
    let f = format!("/proc/{pid}/cgroup");
    let text = std::fs::read_to_string(&f).map_err(|e| format!("read {f}: {e}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| PathBuf::from(p.trim_start_matches('/')))
        .ok_or_else(|| format!("{f} has no cgroup v2 (0::) line"))
}

impl HostCgroup {
    /// The cgroup `rel` (relative, as [`sandbox_cgroup_path`] gives it) under `root`.
    pub fn new(root: impl Into<PathBuf>, rel: impl Into<PathBuf>) -> Self {
        HostCgroup {
            root: root.into(),
            rel: rel.into(),
        }
    }

    /// Its path relative to the hierarchy root.
    pub fn rel(&self) -> &Path {
        &self.rel
    }

    /// Its directory.
    pub fn dir(&self) -> PathBuf {
        self.root.join(&self.rel)
    }

    /// Creates the cgroup and any missing parent, enabling [`CONTROLLERS`] (those each
    /// level has) in the `cgroup.subtree_control` of every level above it. A level that
    /// holds processes refuses (the cgroup v2 no-internal-process rule): its controllers stay
    /// as they are, which is not an error; the list of what could not be enabled is
    /// returned for the log. Fails if the leaf already exists (another sandbox's).
    pub fn create(&self) -> Result<Vec<String>, String> {
        let mut not_enabled = Vec::new();
        let mut at = self.root.clone();
        let n = self.rel.components().count();
        for (i, c) in self.rel.components().enumerate() {
            enable_controllers(&at, &mut not_enabled);
            at.push(c);
            match std::fs::create_dir(&at) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists && i + 1 < n => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    return Err(format!(
                        "host cgroup {} already exists (another sandbox's?)",
                        at.display()
                    ))
                }
                Err(e) => return Err(format!("create host cgroup {}: {e}", at.display())),
            }
        }
        Ok(not_enabled)
    }

    /// Moves process `pid` (all its threads) into this cgroup.
    pub fn enter(&self, pid: u32) -> Result<(), String> {
        let procs = self.dir().join("cgroup.procs");
        std::fs::write(&procs, pid.to_string())
            .map_err(|e| format!("move process {pid} into {}: {e}", procs.display()))
    }

    /// The processes in this cgroup (none if it is gone).
    pub fn pids(&self) -> Vec<u32> {
        std::fs::read_to_string(self.dir().join("cgroup.procs"))
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Kills every process left in the cgroup (`cgroup.kill`, or SIGKILL to each listed
    /// process where the kernel predates it) and waits up to `timeout` until it is empty.
    pub fn kill_all(&self, timeout: Duration) -> Result<(), String> {
        if !self.dir().is_dir() {
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        let has_kill = std::fs::write(self.dir().join("cgroup.kill"), "1").is_ok();
        loop {
            let pids = self.pids();
            if pids.is_empty() {
                return Ok(());
            }
            if !has_kill {
                for p in &pids {
                    if let Ok(p) = i32::try_from(*p) {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(p),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "host cgroup {} still holds processes {pids:?} after {timeout:?}",
                    self.dir().display()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Removes the (empty) cgroup; gone already is fine. Processes that were just killed
    /// keep it busy until their parent has reaped them: `EBUSY` is retried until `timeout`.
    pub fn remove(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            match std::fs::remove_dir(self.dir()) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    let events = std::fs::read_to_string(self.dir().join("cgroup.events"))
                        .unwrap_or_default()
                        .replace('\n', " ");
                    return Err(format!(
                        "remove host cgroup {}: {e} (processes {:?}, events: {})",
                        self.dir().display(),
                        self.pids(),
                        events.trim()
                    ));
                }
            }
        }
    }

    /// [`HostCgroup::kill_all`], then [`HostCgroup::remove`], each within `timeout`.
    pub fn destroy(&self, timeout: Duration) -> Result<(), String> {
        self.kill_all(timeout)?;
        self.remove(timeout)
    }

    /// Writes the record for a lost shim's cleanup into `state_dir` (0600).
    pub fn record(&self, state_dir: &Path) -> Result<(), String> {
        let f = state_dir.join(RECORD_FILE);
        crate::util::write_private(&f, self.rel.to_string_lossy().as_bytes())
            .map_err(|e| format!("write {}: {e}", f.display()))
    }

    /// The cgroup recorded in `state_dir` (under `root`), if there is a valid record.
    pub fn recorded(root: &Path, state_dir: &Path) -> Option<HostCgroup> {
        let text = std::fs::read_to_string(state_dir.join(RECORD_FILE)).ok()?;
        let rel = clean(text.trim()).ok()?;
        Some(HostCgroup::new(root, rel))
    }
}

/// Enables what it can of [`CONTROLLERS`] below `dir`, noting what it could not.
fn enable_controllers(dir: &Path, not_enabled: &mut Vec<String>) {
    let have = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let on = std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
    for c in CONTROLLERS {
        if !have.split_whitespace().any(|h| h == c) || on.split_whitespace().any(|o| o == c) {
            continue;
        }
        if let Err(e) = std::fs::write(dir.join("cgroup.subtree_control"), format!("+{c}")) {
            not_enabled.push(format!("{c} in {}: {e}", dir.display()));
        }
    }
}

/// A sandbox's place in the host cgroup tree while it runs: the cgroup it has and the one
/// the shim came from.
#[derive(Debug)]
pub struct SandboxCgroup {
    /// The sandbox's cgroup.
    pub cgroup: HostCgroup,
    /// Where the shim was before it moved in (it goes back there at the end).
    pub shim_origin: HostCgroup,
}

impl SandboxCgroup {
    /// Creates `cgroup`, records it in `state_dir` and moves the shim in. On failure
    /// nothing is left: the shim is where it was and the leaf is removed.
    pub fn enter(cgroup: HostCgroup, state_dir: &Path) -> Result<SandboxCgroup, String> {
        let origin = HostCgroup::new(cgroup.root.clone(), cgroup_of("self")?);
        let not_enabled = cgroup.create()?;
        if !not_enabled.is_empty() {
            tracing::info!(
                cgroup = %cgroup.dir().display(),
                "host cgroup controllers not enabled: {}",
                not_enabled.join("; ")
            );
        }
        let sc = SandboxCgroup {
            cgroup,
            shim_origin: origin,
        };
        if let Err(e) = sc
            .cgroup
            .record(state_dir)
            .and_then(|()| sc.cgroup.enter(std::process::id()))
        {
            let _ = sc.leave(Duration::from_secs(5));
            return Err(e);
        }
        Ok(sc)
    }

    /// The shim moves back to where it came from; whatever is left in the sandbox's cgroup
    /// is killed, and the cgroup removed.
    pub fn leave(&self, timeout: Duration) -> Result<(), String> {
        let me = std::process::id();
        if self.cgroup.pids().contains(&me) {
            self.shim_origin.enter(me)?;
        }
        self.cgroup.destroy(timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroupfs_paths_are_taken_as_runc_takes_them() {
        let p = |s: &str| sandbox_cgroup_path(Some(s), "/kata-rs", "sb1");
        assert_eq!(
            p("/kubepods/besteffort/pod123/sb1").unwrap(),
            PathBuf::from("kubepods/besteffort/pod123/sb1")
        );
        assert_eq!(p("/default/c1").unwrap(), PathBuf::from("default/c1"));
        assert_eq!(p("rel/x").unwrap(), PathBuf::from("rel/x"));
        assert!(p("/a/../etc").unwrap_err().contains(".."));
        assert!(p("/").unwrap_err().contains("root"));
        // `.` components vanish when a path is split (as in the kernel's walk).
        assert_eq!(p("/a/./b").unwrap(), PathBuf::from("a/b"));
    }

    #[test]
    fn no_path_gives_the_configured_parent() {
        assert_eq!(
            sandbox_cgroup_path(None, "/kata-rs", "sb1").unwrap(),
            PathBuf::from("kata-rs/sb1")
        );
        assert_eq!(
            sandbox_cgroup_path(Some("  "), "/a/b/", "sb1").unwrap(),
            PathBuf::from("a/b/sb1")
        );
        assert!(sandbox_cgroup_path(None, "/", "..").is_err());
    }

    #[test]
    fn systemd_paths_expand_like_runc() {
        let p = |s: &str| sandbox_cgroup_path(Some(s), "/kata-rs", "sb1");
        assert_eq!(
            p("kubepods-besteffort-pod12.slice:cri-containerd:abc").unwrap(),
            PathBuf::from(
                "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12.slice/cri-containerd-abc.scope"
            )
        );
        assert_eq!(
            p("system.slice:docker:x").unwrap(),
            PathBuf::from("system.slice/docker-x.scope")
        );
        assert_eq!(p("-.slice::x").unwrap(), PathBuf::from("x.scope"));
        assert!(p("bad:cri:x").is_err(), "a slice must end in .slice");
        assert!(p("a--b.slice:cri:x").is_err());
        assert!(p("a.slice:cri:").is_err());
        assert!(p("a.slice:cri:../x").is_err());
    }

    /// A fake hierarchy in a temporary directory: creation, the record, removal.
    #[test]
    fn create_record_and_remove_on_a_plain_directory() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), "cpu memory pids").unwrap();
        let cg = HostCgroup::new(root.path(), "pod1/sb1");
        let not_enabled = cg.create().unwrap();
        assert!(cg.dir().is_dir());
        // A plain directory accepts the write: what the root had is enabled below it.
        assert!(not_enabled.is_empty(), "{not_enabled:?}");
        assert!(
            cg.create().unwrap_err().contains("already exists"),
            "a second sandbox on the same leaf is refused"
        );
        let state = tempfile::tempdir().unwrap();
        cg.record(state.path()).unwrap();
        assert_eq!(
            HostCgroup::recorded(root.path(), state.path()),
            Some(cg.clone())
        );
        std::fs::write(state.path().join(RECORD_FILE), "../../etc").unwrap();
        assert_eq!(HostCgroup::recorded(root.path(), state.path()), None);
        assert!(cg.pids().is_empty());
        cg.kill_all(Duration::from_millis(10)).unwrap();
        std::fs::remove_file(cg.dir().join("cgroup.kill")).unwrap();
        cg.remove(Duration::from_millis(10)).unwrap();
        assert!(!cg.dir().exists());
        cg.destroy(Duration::from_millis(10)).unwrap();
    }

    #[test]
    fn an_existing_cgroup_gets_a_child_of_the_sandbox() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("ns")).unwrap();
        assert_eq!(
            own_leaf(root.path(), PathBuf::from("ns"), "sb1"),
            PathBuf::from("ns/kata-rs-sb1"),
            "a spec naming an existing cgroup (ctr oci spec's /<namespace>) is not taken over"
        );
        assert_eq!(
            own_leaf(root.path(), PathBuf::from("ns/sb1"), "sb1"),
            PathBuf::from("ns/sb1")
        );
    }

    #[test]
    fn own_cgroup_is_readable() {
        // Every Linux process with a v2 (or hybrid) hierarchy has a 0:: line.
        if let Ok(p) = cgroup_of("self") {
            assert!(!p.is_absolute());
        }
    }
}

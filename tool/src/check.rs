//! `kata-rs check`: one line per check, exit status 0 only when every required check
//! passes. Host checks (KVM, cgroup v2, tun, vhost-vsock) look at the running kernel's
//! `/dev`, `/sys` and `/proc`; file checks (artifacts, configurations) look under `--root`.

use std::{os::unix::fs::PermissionsExt, path::Path};

use serde::Serialize;

use crate::{containerd, crio, install, kvm, layout, layout::rooted, probe};

/// Result of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Passed.
    Ok,
    /// Failed (counts only when the check is required).
    Fail,
    /// Informational: not needed, or not applicable.
    Info,
}

/// One check's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Short name, e.g. `kvm`.
    pub name: String,
    /// The outcome.
    pub status: Status,
    /// Whether a failure makes `check` fail.
    pub required: bool,
    /// Why, in one line.
    pub reason: String,
}

impl Check {
    fn new(name: &str, required: bool, r: Result<String, String>) -> Self {
        let (status, reason) = match r {
            Ok(s) => (Status::Ok, s),
            Err(e) if required => (Status::Fail, e),
            Err(e) => (Status::Info, e),
        };
        Check {
            name: name.into(),
            status,
            required,
            reason,
        }
    }

    fn info(name: &str, reason: String) -> Self {
        Check {
            name: name.into(),
            status: Status::Info,
            required: false,
            reason,
        }
    }

    /// Whether this check makes the whole run fail.
    pub fn failed(&self) -> bool {
        self.required && self.status == Status::Fail
    }
}

/// Everything `check` looked at.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// True when no required check failed.
    pub ok: bool,
    /// The tree checked.
    pub root: String,
    /// The checks, in order.
    pub checks: Vec<Check>,
}

/// Runs every check against the running kernel and the tree at `root`.
pub fn run(root: &Path) -> Report {
    let mut checks = Vec::new();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let host = kvm::Host {
        sys_module: Path::new("/sys/module"),
        cpuinfo: &cpuinfo,
    };
    checks.push(Check::new(
        "kvm",
        true,
        kvm::check(Path::new(kvm::DEV_KVM), &host),
    ));
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    checks.push(Check::new(
        "cgroup2",
        true,
        match probe::cgroup2_mount(&mounts) {
            Some(p) if p == "/sys/fs/cgroup" => Ok("cgroup v2 (unified) at /sys/fs/cgroup".into()),
            Some(p) => Ok(format!(
                "cgroup v2 at {p} (hybrid: /sys/fs/cgroup is cgroup v1; containerd and the \
                 kubelet may use either)"
            )),
            None => {
                Err("no cgroup2 file system mounted (mount -t cgroup2 none /sys/fs/cgroup)".into())
            }
        },
    ));
    checks.push(Check::new(
        "tun",
        true,
        open_rw(
            "/dev/net/tun",
            "module tun, for pod networking (tap devices)",
        ),
    ));
    checks.push(Check::new(
        "vhost-vsock",
        false,
        open_rw("/dev/vhost-vsock", "module vhost_vsock").map_err(|e| {
            format!("{e}; only needed while kata-vmm uses the kernel's vhost-vsock (not required)")
        }),
    ));

    // Configuration, then the files it names.
    let cfg = probe::load_config(root);
    match &cfg {
        Ok(c) => {
            let rebased = probe::rebase(c, root);
            checks.push(Check::new(
                "configuration",
                true,
                rebased
                    .validate()
                    .map(|_| format!("{}: valid", probe::source_text(c)))
                    .map_err(|e| e.to_string()),
            ));
        }
        Err(e) => checks.push(Check::new("configuration", true, Err(e.to_string()))),
    }
    let dflt = kata_rs_shim::config::Config {
        file: Default::default(),
        source: kata_rs_shim::config::ConfigSource::Defaults,
    };
    let c = cfg.as_ref().unwrap_or(&dflt);
    let h = &c.file.hypervisor;
    let files: [(&str, &str, &Path, bool); 5] = [
        ("shim", "shim", Path::new(layout::SHIM), true),
        ("vmm", "VMM", &h.path, true),
        ("kernel", "guest kernel", &h.kernel, false),
        ("initrd", "guest image", &h.initrd, false),
        (
            "virtiofsd",
            "virtio-fs server",
            &c.file.shared_fs.virtiofsd,
            true,
        ),
    ];
    for (name, what, p, exec) in files {
        checks.push(Check::new(name, true, artifact(root, what, p, exec)));
    }
    checks.push(Check::new("versions", true, versions(root, c)));

    // Runtime managers.
    checks.push(containerd_check(root));
    checks.push(crio_check(root));
    checks.push(manifest_check(root));
    Report {
        ok: !checks.iter().any(Check::failed),
        root: root.display().to_string(),
        checks,
    }
}

fn open_rw(dev: &str, module: &str) -> Result<String, String> {
    match std::fs::OpenOptions::new().read(true).write(true).open(dev) {
        Ok(_) => Ok(format!("{dev} opens")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(format!("no {dev} ({module} not loaded?)"))
        }
        Err(e) => Err(format!("cannot open {dev}: {e}")),
    }
}

fn artifact(root: &Path, what: &str, p: &Path, exec: bool) -> Result<String, String> {
    let rp = rooted(root, p);
    let m = std::fs::metadata(&rp).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!("{what} {} not found (kata-rs install)", rp.display())
        } else {
            format!("{what} {}: {e}", rp.display())
        }
    })?;
    if !m.is_file() {
        return Err(format!("{what} {} is not a regular file", rp.display()));
    }
    if exec && m.permissions().mode() & 0o111 == 0 {
        return Err(format!("{what} {} is not executable", rp.display()));
    }
    if m.len() == 0 {
        return Err(format!("{what} {} is empty", rp.display()));
    }
    Ok(format!("{} ({} bytes)", rp.display(), m.len()))
}

/// The VMM's and the shim's versions must match (one build); virtiofsd must answer.
fn versions(root: &Path, c: &kata_rs_shim::config::Config) -> Result<String, String> {
    let vmm = probe::version_line(&rooted(root, &c.file.hypervisor.path), &["--version"])?;
    let shim = probe::version_line(&rooted(root, Path::new(layout::SHIM)), &["-v"])?;
    let fsd = probe::version_line(&rooted(root, &c.file.shared_fs.virtiofsd), &["--version"])?;
    let (v1, v2) = (probe::version_number(&vmm), probe::version_number(&shim));
    if v1.is_none() || v1 != v2 {
        return Err(format!(
            "the VMM and the shim are not from one build: `{vmm}` vs `{shim}`"
        ));
    }
    Ok(format!("{vmm}; {shim}; {fsd}"))
}

fn containerd_check(root: &Path) -> Check {
    let path = rooted(root, Path::new(layout::CONTAINERD_CONFIG));
    if !install::containerd_present(root) {
        return Check::info(
            "containerd",
            "containerd not found (no config, no binary)".into(),
        );
    }
    let r = (|| {
        let text = match std::fs::read_to_string(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(format!(
                    "{} does not exist: containerd runs on its defaults, without handler `{}` \
                     (kata-rs install)",
                    path.display(),
                    containerd::HANDLER
                ))
            }
            r => r.map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        };
        let h = containerd::find_handler(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        match h.runtime_type.as_deref() {
            None => Err(format!(
                "{}: config version {}, no handler {} (kata-rs install)",
                path.display(),
                h.version,
                containerd::handler_table(h.version)
            )),
            Some(t) if t != containerd::RUNTIME_TYPE => Err(format!(
                "{}: handler `{}` has runtime_type {t:?}, not {:?}",
                path.display(),
                containerd::HANDLER,
                containerd::RUNTIME_TYPE
            )),
            Some(_) => {
                let bin = containerd_version(root);
                if let Some(major) = bin.as_deref().and_then(probe::version_number) {
                    if h.version == 3 && major.starts_with("1.") {
                        return Err(format!(
                            "{}: config version 3 needs containerd 2.x, this is {major}",
                            path.display()
                        ));
                    }
                }
                Ok(format!(
                    "{}: config version {}, handler `{}` runtime_type {}{}{}",
                    path.display(),
                    h.version,
                    containerd::HANDLER,
                    containerd::RUNTIME_TYPE,
                    h.config_path
                        .map(|p| format!(", ConfigPath {p}"))
                        .unwrap_or_default(),
                    bin.map(|b| format!(" ({b})")).unwrap_or_default()
                ))
            }
        }
    })();
    Check::new("containerd", true, r)
}

/// `containerd --version` of the tree's containerd, if it has one that runs.
pub fn containerd_version(root: &Path) -> Option<String> {
    [
        "/usr/bin/containerd",
        "/usr/local/bin/containerd",
        "/bin/containerd",
    ]
    .iter()
    .map(|p| rooted(root, Path::new(p)))
    .find(|p| p.is_file())
    .and_then(|p| probe::version_line(&p, &["--version"]).ok())
}

fn crio_check(root: &Path) -> Check {
    if !install::crio_present(root) {
        return Check::info("crio", "CRI-O not found".into());
    }
    let p = rooted(root, Path::new(layout::CRIO_DROPIN));
    let r = match std::fs::read_to_string(&p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
            "CRI-O is installed but {} does not exist (kata-rs install --crio)",
            p.display()
        )),
        Err(e) => Err(format!("cannot read {}: {e}", p.display())),
        Ok(t) => crio::check_dropin(&t)
            .map(|s| format!("{}: {s}", p.display()))
            .map_err(|e| format!("{}: {e}", p.display())),
    };
    Check::new("crio", true, r)
}

/// Informational: whether the files `kata-rs install` wrote are still as it wrote them.
fn manifest_check(root: &Path) -> Check {
    let p = rooted(root, Path::new(layout::MANIFEST));
    let Ok(text) = std::fs::read_to_string(&p) else {
        return Check::info(
            "install",
            format!(
                "no install manifest ({} absent): not installed by kata-rs install",
                p.display()
            ),
        );
    };
    let Ok(m) = serde_json::from_str::<install::Manifest>(&text) else {
        return Check::info("install", format!("{} is damaged", p.display()));
    };
    let changed: Vec<&str> = m
        .files
        .iter()
        .filter(|e| {
            std::fs::read(rooted(root, Path::new(&e.path)))
                .map(|d| crate::fsutil::sha256_hex(&d) != e.after.sha256)
                .unwrap_or(true)
        })
        .map(|e| e.path.as_str())
        .collect();
    if changed.is_empty() {
        Check::new(
            "install",
            false,
            Ok(format!(
                "{} files as kata-rs install wrote them",
                m.files.len()
            )),
        )
    } else {
        Check::info(
            "install",
            format!(
                "changed or removed since kata-rs install: {}",
                changed.join(", ")
            ),
        )
    }
}

/// The report as text: one line per check and a summary.
pub fn render_text(r: &Report) -> String {
    let mut s = String::new();
    for c in &r.checks {
        let st = match c.status {
            Status::Ok => "ok",
            Status::Fail => "FAIL",
            Status::Info => "info",
        };
        s += &format!("{st:<4} {:<13} {}\n", c.name, c.reason);
    }
    let failed: Vec<&str> = r
        .checks
        .iter()
        .filter(|c| c.failed())
        .map(|c| c.name.as_str())
        .collect();
    if failed.is_empty() {
        s += "kata-rs check: all required checks passed\n";
    } else {
        s += &format!(
            "kata-rs check: {} required check(s) failed: {}\n",
            failed.len(),
            failed.join(", ")
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_required_failures_count() {
        let r = Report {
            ok: true,
            root: "/".into(),
            checks: vec![
                Check::new("a", true, Ok("fine".into())),
                Check::new("b", false, Err("absent".into())),
            ],
        };
        assert!(!r.checks.iter().any(Check::failed));
        assert_eq!(r.checks[1].status, Status::Info);
        let t = render_text(&r);
        assert!(t.contains("ok   a             fine\n"), "{t}");
        assert!(t.contains("info b             absent\n"), "{t}");
        assert!(t.ends_with("all required checks passed\n"));
        let f = Check::new("c", true, Err("broken".into()));
        assert!(f.failed());
    }

    #[test]
    fn artifact_reasons() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        let e = artifact(r, "VMM", Path::new("/usr/local/bin/kata-vmm"), true).unwrap_err();
        assert!(e.contains("not found"), "{e}");
        std::fs::create_dir_all(r.join("usr/local/bin")).unwrap();
        std::fs::write(r.join("usr/local/bin/kata-vmm"), b"x").unwrap();
        let e = artifact(r, "VMM", Path::new("/usr/local/bin/kata-vmm"), true).unwrap_err();
        assert!(e.contains("not executable"), "{e}");
        assert!(artifact(r, "VMM", Path::new("/usr/local/bin/kata-vmm"), false).is_ok());
    }
}

//! The setup before the process part: for the init, the pod's namespaces joined, mounts
//! made private, the cgroup namespace, the root built and entered, cwd, sysctls, masked and
//! read-only paths, hostname; for an exec, the container's namespaces joined.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use nix::mount::{mount, MsFlags};
use nix::unistd::sethostname;

use super::process::prepare_process;
use super::rootfs::{build_root, RealMounts};
use super::{ExecConfig, InitResult, Prepared};
use crate::plan::InitConfig;

/// Everything before exec: mounts, pivot_root, hostname, cwd, lookup, credentials.
pub(super) fn prepare(cfg: &InitConfig) -> InitResult<Prepared> {
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
pub(super) fn prepare_exec(cfg: &ExecConfig) -> InitResult<Prepared> {
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

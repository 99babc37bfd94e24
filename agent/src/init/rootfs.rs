//! The container's root: the rootfs in the share bound onto itself, the plan's mounts made
//! with destinations resolved inside it, then pivot_root. The mount calls go through
//! [`MountSys`], so the whole plan is unit-tested without root.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::unistd::{chdir, pivot_root};

use super::dev::{make_device_nodes, populate_dev};
use super::InitResult;
use crate::devices::DeviceNode;
use crate::plan::{InitConfig, MountKind, MountPlan};
use crate::rootpath::{self, Create};

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::PathBuf;

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
}

//! Unit tests of `share.rs`.

use super::*;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn mountinfo_escapes_are_undone() {
    assert_eq!(unescape_mountinfo(r"/a\040b"), "/a b");
    assert_eq!(unescape_mountinfo(r"/tab\011x\134y"), "/tab\tx\\y");
    assert_eq!(unescape_mountinfo(r"/plain"), "/plain");
    assert_eq!(unescape_mountinfo(r"/trail\04"), r"/trail\04");
}

#[test]
fn skeleton_removal_never_removes_data() {
    let d = tempfile::tempdir().unwrap();
    let s = d.path().join("s");
    std::fs::create_dir_all(s.join("c1/mounts")).unwrap();
    std::fs::File::create(s.join("c1/mounts/0")).unwrap();
    std::fs::write(s.join("c1/data"), "keep").unwrap();
    let e = remove_skeleton(&s).unwrap_err();
    assert!(e.contains("not a placeholder"), "{e}");
    assert_eq!(std::fs::read_to_string(s.join("c1/data")).unwrap(), "keep");
    std::fs::remove_file(s.join("c1/data")).unwrap();
    std::os::unix::fs::symlink("/etc", s.join("c1/link")).unwrap();
    assert!(
        remove_skeleton(&s).is_err(),
        "a symlink is not followed or removed"
    );
    std::fs::remove_file(s.join("c1/link")).unwrap();
    remove_skeleton(&s).unwrap();
    assert!(!s.exists());
    remove_skeleton(&s).unwrap();
}

/// Runs `scenario` as root in a private mount namespace of a forked child, so its mounts
/// never leak. The tests that use it are `#[ignore]`d (`make unit` runs them as root): run
/// on purpose without root, they fail.
fn in_private_ns(name: &str, scenario: fn(&Path) -> Result<(), String>) {
    assert!(is_root(), "{name} needs root (run by `make unit` as root)");
    let d = tempfile::tempdir().unwrap();
    let base = d.path().to_path_buf();
    // SAFETY: fork in a test: the child only makes syscalls and exits with _exit.
    match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            let r = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
                .map_err(|e| e.to_string())
                .and_then(|()| {
                    set_propagation(Path::new("/"), MsFlags::MS_REC | MsFlags::MS_PRIVATE)
                })
                .and_then(|()| scenario(&base));
            let code = match r {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("{name}: {e}");
                    1
                }
            };
            // SAFETY: _exit ends the forked child without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            let st = nix::sys::wait::waitpid(child, None).unwrap();
            assert_eq!(st, nix::sys::wait::WaitStatus::Exited(child, 0), "{name}");
        }
    }
}

/// Needs root (mounts).
#[test]
#[ignore = "needs root (mounts): `make unit` runs it (scripts/unit-privileged.sh)"]
fn share_binds_live_read_only_and_cleans_up() {
    in_private_ns("share_binds_live_read_only_and_cleans_up", share_scenario);
}

/// Host mounts made under shared sources after the container was added: a slave bind's
/// view gets them, a private one's does not; removing the container leaves the host's
/// mounts mounted (a peer copy would have unmounted them). Needs root.
#[test]
#[ignore = "needs root (mounts): `make unit` runs it (scripts/unit-privileged.sh)"]
fn host_mounts_propagate_as_the_spec_says() {
    in_private_ns(
        "host_mounts_propagate_as_the_spec_says",
        propagation_scenario,
    );
}

fn propagation_scenario(base: &Path) -> Result<(), String> {
    let err = |e: nix::Error| e.to_string();
    let (state, rootfs) = (base.join("state"), base.join("rootfs"));
    let vols = [
        ("private", Propagation::Private),
        ("slave", Propagation::Slave),
    ];
    for p in [&state, &rootfs] {
        std::fs::create_dir_all(p).map_err(|e| e.to_string())?;
    }
    let mut binds = Vec::new();
    for (i, (name, propagation)) in vols.iter().enumerate() {
        // Each source a shared mount of its own, as a systemd host's directories are.
        let v = base.join(name);
        std::fs::create_dir_all(v.join("sub")).map_err(|e| e.to_string())?;
        let me = open_path(&v, libc::O_DIRECTORY)?;
        bind(&me, &v)?;
        set_propagation(&v, MsFlags::MS_SHARED)?;
        binds.push(SharedBind {
            index: i,
            source: v,
            destination: format!("/{name}"),
            readonly: false,
            propagation: *propagation,
        });
    }
    let share = Share::create(&state)?;
    share.add_container("c1", &rootfs, &binds)?;
    for (name, _) in &vols {
        let sub = base.join(name).join("sub");
        mount(
            Some("tmpfs"),
            &sub,
            Some("tmpfs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .map_err(err)?;
        std::fs::write(sub.join("marker"), name).map_err(|e| e.to_string())?;
    }
    let seen = |i: usize| share.exported().join(format!("c1/mounts/{i}/sub/marker"));
    if seen(0).exists() {
        return Err("a host mount under the private source reached the view".into());
    }
    if std::fs::read_to_string(seen(1)).ok().as_deref() != Some("slave") {
        return Err("a host mount under the slave source did not reach the view".into());
    }
    // Nothing flows back: a mount in the share stays out of the host source.
    let back = share.mounts().join("c1/mounts/1/sub");
    mount(
        Some("tmpfs"),
        &back,
        Some("tmpfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .map_err(err)?;
    if !base.join("slave/sub/marker").exists() {
        return Err("a mount in the share covered the host's".into());
    }
    share.remove_container("c1")?;
    for (name, _) in &vols {
        let marker = base.join(name).join("sub/marker");
        if std::fs::read_to_string(&marker).ok().as_deref() != Some(*name) {
            return Err(format!(
                "removing the container unmounted the host's {}",
                marker.display()
            ));
        }
    }
    share.destroy()
}

fn share_scenario(base: &Path) -> Result<(), String> {
    let state = base.join("state");
    let (rootfs, vol, file) = (base.join("rootfs"), base.join("vol"), base.join("f"));
    for p in [&state, &rootfs, &vol] {
        std::fs::create_dir_all(p).map_err(|e| e.to_string())?;
    }
    std::fs::write(rootfs.join("etc-file"), "root").map_err(|e| e.to_string())?;
    std::fs::write(&file, "ro-file").map_err(|e| e.to_string())?;
    let share = Share::create(&state)?;
    let binds = [
        SharedBind {
            index: 1,
            source: vol.clone(),
            destination: "/data".into(),
            readonly: false,
            propagation: Propagation::Slave,
        },
        SharedBind {
            index: 2,
            source: file.clone(),
            destination: "/etc/x".into(),
            readonly: true,
            propagation: Propagation::Slave,
        },
        SharedBind {
            index: 3,
            source: vol.clone(),
            destination: "/ro-data".into(),
            readonly: true,
            propagation: Propagation::Slave,
        },
    ];
    share.add_container("c1", &rootfs, &binds)?;
    let view = share.exported();
    let check = |c: bool, what: &str| if c { Ok(()) } else { Err(what.to_string()) };
    check(
        std::fs::read_to_string(view.join("c1/rootfs/etc-file"))
            .ok()
            .as_deref()
            == Some("root"),
        "rootfs visible in the exported view",
    )?;
    // Live both ways through the view.
    std::fs::write(view.join("c1/mounts/1/new"), "w").map_err(|e| e.to_string())?;
    check(
        vol.join("new").exists(),
        "write in the view lands on the host",
    )?;
    std::fs::write(vol.join("host"), "h").map_err(|e| e.to_string())?;
    check(view.join("c1/mounts/1/host").exists(), "host write visible")?;
    // Read-only bind and read-only top.
    let e = std::fs::write(view.join("c1/mounts/2"), "x").unwrap_err();
    check(
        e.raw_os_error() == Some(libc::EROFS),
        "ro bind refuses writes",
    )?;
    let e = std::fs::create_dir(view.join("evil")).unwrap_err();
    check(
        e.raw_os_error() == Some(libc::EROFS),
        "share top is read-only",
    )?;
    // A second container, then removal of the first leaves the second.
    share.add_container("c2", &rootfs, &[])?;
    check(
        share.add_container("c2", &rootfs, &[]).is_err(),
        "same id twice refused",
    )?;
    check(
        view.join("c2/rootfs/etc-file").exists(),
        "second container kept after a refused duplicate",
    )?;
    share.remove_container("c1")?;
    check(!view.join("c1").exists(), "c1 gone")?;
    check(
        std::fs::read_to_string(&file).ok().as_deref() == Some("ro-file"),
        "source kept",
    )?;
    check(vol.join("new").exists(), "volume data kept")?;
    check(view.join("c2/rootfs/etc-file").exists(), "c2 kept")?;
    // A failing bind (missing source) undoes the container's mounts.
    let bad = [SharedBind {
        index: 0,
        source: base.join("missing"),
        destination: "/m".into(),
        readonly: false,
        propagation: Propagation::Slave,
    }];
    let e = share.add_container("c3", &rootfs, &bad).unwrap_err();
    check(e.contains("bind mount /m"), "error names the mount")?;
    check(!share.mounts().join("c3").exists(), "c3 rolled back")?;
    share.destroy()?;
    check(mounts_under(&state).is_empty(), "no mounts left")?;
    check(!state.join("share").exists(), "share removed")?;
    check(rootfs.join("etc-file").exists(), "rootfs data kept")?;
    // The skeleton removal never crosses into a mount (here an empty tmpfs, which it
    // would otherwise empty and try to remove) and leaves it where it is.
    let skel = base.join("skel");
    std::fs::create_dir_all(skel.join("a/m")).map_err(|e| e.to_string())?;
    mount(
        Some("tmpfs"),
        &skel.join("a/m"),
        Some("tmpfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| e.to_string())?;
    let e = remove_skeleton(&skel).unwrap_err();
    check(e.contains("another file system"), "a mount is not entered")?;
    check(skel.join("a/m").exists(), "the mount point stays")?;
    nix::mount::umount(&skel.join("a/m")).map_err(|e| e.to_string())?;
    remove_skeleton(&skel)?;
    check(!skel.exists(), "skeleton removed once the mount is gone")?;
    Ok(())
}

//! Storage shared live with the VM (issue 10), runc beside kata in each node run.
//!
//! `host_bind_mounts_are_live_in_the_vm` (tests/scripts/volumes.sh, one node boot): a file and
//! a directory tree bound read-only and a directory bound writable look the same in a runc
//! container, a kata container and a kata pod container (contents, modes, owners, mtimes,
//! symlinks kept); a write in the container is on the host at once (even while the file is
//! still open), a host write (new file, rewrite of a file already read) is seen in the
//! container within 2 s; the read-only binds refuse writes with runc's messages and statuses
//! and are read-only bind mounts on the host; a ConfigMap-style `..data` swap is seen within
//! 2 s with no read failing on the way; a big file (256 MiB, 1 GiB with KATA_RS_VOL_BIG_MIB=1024) reads back with the host's md5; two
//! containers of a pod share an emptyDir-style host directory; a missing or device source
//! fails clearly and leaves nothing; CRI's /dev/shm bind becomes a tmpfs in the guest; a pod
//! sandbox with CRI's sizing annotations gets more vCPUs and memory (garbage is refused);
//! nothing is left at the end (mounts, share, virtiofsd, kata-vmm, state).
//!
//! `guest_cannot_escape_through_the_share` (tests/scripts/share-escape.sh, own node boot): a
//! privileged kata container mounts the sandbox's share itself and tries symlinks to host
//! paths, `..`, hard links out of the share and out of a read-only bind, renames over and
//! removals of the share root and its mount points, new files at the share root and writes
//! into a read-only bind through the raw share path; the host's secret never shows up, the
//! host is unchanged outside the writable bind, nothing is left afterwards.
use kata_rs_tests::{node_run, require_kata_artifacts, Checks};

#[test]
fn host_bind_mounts_are_live_in_the_vm() {
    require_kata_artifacts();
    // The big file: 256 MiB by default (more than the old copy path's 128 MiB cap), 1 GiB
    // with KATA_RS_VOL_BIG_MIB=1024 (~270 s of reading on the emulated node).
    let big_mib = std::env::var("KATA_RS_VOL_BIG_MIB").unwrap_or_else(|_| "256".into());
    let run = node_run("volumes.sh", &[&big_mib]);
    run.assert_success();
    let out = &run.stdout;
    let mut c = Checks::new(&run);

    // The host side of the big file.
    let want = (big_mib
        .parse::<u64>()
        .expect("KATA_RS_VOL_BIG_MIB is a number")
        << 20)
        .to_string();
    c.eq(
        "host-big-want-size",
        &want,
        "the big test file's size asked for",
    );
    c.eq("host-big-size", &want, "the big test file");
    let host_md5 = c.m("host-big-md5");
    let ro_initial = c.m("host-ro-initial");

    // runc is the reference: if it fails, the node or the script is broken.
    assert_eq!(run.expect_marker("runc-run-rc"), "0", "{out}");
    assert_eq!(run.expect_marker("runc-rc"), "0", "{out}");
    let runc = run.prefixed("runc");
    for want in [
        "host-file-content",
        "tree-file",
        "/x/file 640 1234 5678 18 ",
        "/x/dir/sub 750 0 0",
        "link=/etc/passwd",
        "script-ran",
        "file-write=refused",
        "dir-write=EROFS",
        "rw",
        "file-mount=ro",
    ] {
        assert!(
            runc.iter().any(|l| l.starts_with(want)),
            "runc's probe shows {want:?} (the reference):\n{out}"
        );
    }
    let runc_ro = run.prefixed("runc-ro");
    let refusals = runc_ro.iter().filter(|l| l.contains(" rc=1 ")).count();
    assert!(
        refusals >= 14 && runc_ro.iter().any(|l| l.starts_with("still-there rc=0")),
        "runc refuses every write to the read-only binds (the reference):\n{out}"
    );

    for rt in ["runc", "kata"] {
        let k = |s: &str| format!("{rt}-{s}");
        if rt == "kata" {
            c.check(
                c.m("kata-run-rc") == "0" && c.m("kata-status") == "RUNNING",
                format!(
                    "ctr run -d --runtime io.containerd.kata.v2 with the binds: exit {}, task {}; \
                     nothing else could be checked in it. The shim's warnings:\n{}",
                    c.m("kata-run-rc"),
                    c.m("kata-status"),
                    run.prefixed("kata-why").join("\n")
                ),
            );
            if run.marker("kata-skipped").is_some() {
                continue;
            }
        }
        c.within(
            &k("watcher-ms"),
            30_000,
            &format!("{rt}: the container's watcher reads the writable bind"),
        );
        c.eq(
            &k("rc"),
            "0",
            &format!("{rt}: the probe in the container exits 0"),
        );
        // A write in the container, read on the host right after.
        c.eq(
            &k("ctr-write-on-host"),
            &format!("written-in-{rt}"),
            &format!(
                "{rt}: a file written in the container, read on the host right after the exec"
            ),
        );
        c.eq(
            &k("open-write-on-host"),
            "line1,",
            &format!(
                "{rt}: a line written in the container while the file is still open is on the host"
            ),
        );
        c.eq(
            &k("open-exec-rc"),
            "0",
            &format!("{rt}: the writer holding the file open exits 0"),
        );
        c.eq(
            &k("open-write-after-close"),
            "line1,line2,",
            &format!("{rt}: both lines are on the host after the writer closed the file"),
        );
        // Host writes seen in the container.
        c.within(
            &k("host-new-seen-ms"),
            2000,
            &format!("{rt}: a file created on the host is seen in the container"),
        );
        c.within(
            &k("host-rewrite-seen-ms"),
            2000,
            &format!("{rt}: a host rewrite of a file the container has read is seen in the container (no stale cache)"),
        );
        // Read-only binds: refused on the host too, nothing changed.
        c.eq(
            &k("ro-host-intact"),
            &ro_initial,
            &format!("{rt}: the read-only sources are unchanged on the host"),
        );
        // ConfigMap-style update.
        c.within(
            &k("configmap-initial-ms"),
            10_000,
            &format!("{rt}: the container reads the ConfigMap key"),
        );
        c.within(
            &k("configmap-update-ms"),
            2000,
            &format!("{rt}: a ConfigMap update (new data dir + atomic ..data symlink swap) is seen in the container"),
        );
        c.eq(
            &k("configmap-history"),
            "cm-v1,cm-v2",
            &format!("{rt}: the values the container read during the update (never missing, as with kubelet's atomic writer)"),
        );
        // The big file.
        if run.marker(&k("big-exec-rc")).is_some() {
            c.eq(
                &k("big-exec-rc"),
                "0",
                &format!("{rt}: md5sum of the big file in the container exits 0"),
            );
            c.eq(
                &k("big-size"),
                &want,
                &format!("{rt}: the big file's size in the container"),
            );
            c.eq(
                &k("big-md5"),
                &host_md5,
                &format!("{rt}: the big file read in the container has the host's md5"),
            );
        }
        c.eq(
            &k("status-after"),
            "RUNNING",
            &format!("{rt}: the container still runs after the checks"),
        );
        c.eq(&k("delete-rc"), "0", &format!("{rt}: ctr task delete"));
    }

    // kata as runc: the probe and the read-only refusals, line by line.
    if run.marker("kata-skipped").is_none() {
        let kata = run.prefixed("kata");
        c.check(
            kata == runc,
            format!(
                "kata shows the binds as runc does; runc:\n    {}\n  kata:\n    {}",
                runc.join("\n    "),
                kata.join("\n    ")
            ),
        );
        let kata_ro = run.prefixed("kata-ro");
        c.check(
            kata_ro == runc_ro,
            format!(
                "writes to the read-only binds fail under kata exactly as under runc (same messages \
                 and statuses); runc:\n    {}\n  kata:\n    {}",
                runc_ro.join("\n    "),
                kata_ro.join("\n    ")
            ),
        );
        // The host side of the share while the container runs.
        c.check(
            !c.m("kata-share-dir").starts_with("not-found"),
            "the sandbox's share directory (virtiofsd --shared-dir, or the rootfs bind in it) was not found on the host",
        );
        c.eq(
            "kata-host-share-root",
            "ro",
            "the share root is a read-only mount on the host",
        );
        c.eq(
            "kata-host-binds",
            "file:ro,dir:ro,rw:rw,cm:ro,big:ro",
            "each bind's source is bind-mounted into the share, read-only on the host where the spec says ro",
        );
        c.eq(
            "kata-after-delete-mounts",
            "0",
            "no kata-rs mount under /run/kata-rs after Delete",
        );
        c.eq(
            "kata-after-delete-share",
            "gone",
            "the share directory is removed after Delete",
        );
        c.eq(
            "kata-after-delete-virtiofsd",
            "0",
            "no virtiofsd after Delete",
        );
    }
    c.eq(
        "host-file-after",
        "host-file-content",
        "the read-only file is unchanged on the host",
    );

    // A missing source: the error names it; no VM, no state, no mount.
    c.check(
        c.m("missing-rc") != "0",
        "a bind of a missing source is refused",
    );
    let missing = run.section("missing-source").join("\n");
    c.check(
        missing.contains("/nonexistent/kata-rs-vol"),
        format!("the error names the missing source:\n{missing}"),
    );
    for k in [
        "missing-vmms",
        "missing-virtiofsd",
        "missing-state",
        "missing-mounts",
    ] {
        c.eq(
            k,
            "0",
            "nothing is left after a failed Create (missing source)",
        );
    }
    // A device node as source: not supported, said clearly.
    c.check(
        c.m("device-rc") != "0",
        "a bind of a device node is refused",
    );
    let device = run.section("device-source").join("\n");
    c.check(
        device.contains("device node"),
        format!("the error says the source is a device node:\n{device}"),
    );
    for k in [
        "device-vmms",
        "device-virtiofsd",
        "device-state",
        "device-mounts",
    ] {
        c.eq(
            k,
            "0",
            "nothing is left after a failed Create (device source)",
        );
    }

    // A pod: both containers' binds through the one share, /dev/shm a guest tmpfs.
    c.eq("pod-sandbox-rc", "0", "the pod's sandbox container starts");
    if run.marker("pod-skipped").is_none() {
        c.eq("pod-c1-rc", "0", "pod container vpc1 starts");
        c.eq("pod-c2-rc", "0", "pod container vpc2 starts");
        c.eq("pod-c1-status", "RUNNING", "pod container vpc1");
        c.eq("pod-c2-status", "RUNNING", "pod container vpc2");
        c.eq("pod-vmms", "1", "one VM for the pod");
        c.eq(
            "pod-virtiofsd-shares",
            "1",
            "one virtiofsd share for the pod",
        );
        c.eq("pod-probe-rc", "0", "the probe in a pod container exits 0");
        let pod = run.prefixed("pod");
        c.check(
            pod == runc,
            format!(
                "a pod container shows the binds as runc does; runc:\n    {}\n  pod:\n    {}",
                runc.join("\n    "),
                pod.join("\n    ")
            ),
        );
        c.eq(
            "pod-c1-write-rc",
            "0",
            "vpc1 writes into the shared directory",
        );
        c.eq(
            "pod-c2-read",
            "from-vpc1",
            "vpc2 reads what vpc1 wrote in the shared directory (within 2 s)",
        );
        c.eq(
            "pod-c2-write-rc",
            "0",
            "vpc2 writes into the shared directory",
        );
        c.eq(
            "pod-c1-read",
            "from-vpc2",
            "vpc1 reads what vpc2 wrote in the shared directory (within 2 s)",
        );
        c.eq(
            "pod-emptydir-host",
            "from-vpc1,from-vpc2",
            "the host sees both pod containers' files",
        );
        c.eq("shm-fs", "tmpfs", "a pod container's /dev/shm");
        c.eq("shm-write", "ok", "a pod container writes /dev/shm");
        c.eq("sandbox-shm-fs", "tmpfs", "the sandbox's /dev/shm");
    }
    for k in ["delete-vpc1-rc", "delete-vpc2-rc", "delete-vpod-rc"] {
        c.eq(k, "0", "ctr task delete of the pod's containers");
    }

    // Pod VM sizing from CRI's sandbox annotations: 1 + ceil(150000/100000) = 3 vCPUs,
    // capped at the node's 2 online CPUs; 256 + 128 MiB.
    c.eq(
        "sized-rc",
        "0",
        "a pod sandbox with CRI's sizing annotations starts",
    );
    c.eq("base-nproc", "1", "the unsized pod VM's vCPUs");
    c.eq("sized-nproc", "2", "the sized pod VM's vCPUs");
    c.eq(
        "sized-vmm-args",
        "--mem-mib,384,--vcpus,2",
        "the sized pod's kata-vmm arguments",
    );
    let kb = |k: &str| run.marker(k).and_then(|v| v.parse::<i64>().ok());
    match (kb("sized-memtotal-kb"), kb("base-memtotal-kb")) {
        (Some(s), Some(b)) => c.check(
            (110 * 1024..=130 * 1024).contains(&(s - b)),
            format!("MemTotal grew by {} kB, expected about 128 MiB", s - b),
        ),
        _ => c.check(false, "the pod VMs' MemTotal was not printed"),
    }
    c.eq("delete-spod-rc", "0", "ctr task delete of the sized pod");
    c.check(
        c.m("garbage-rc") != "0",
        "a garbage sizing annotation is refused",
    );
    let size = run.section("pod-size").join("\n");
    c.check(
        size.contains("annotation io.kubernetes.cri.sandbox-memory: \"lots\" is not a byte count"),
        format!("the error names the annotation:\n{size}"),
    );
    c.eq("garbage-vmms", "0", "no VM after the garbage annotation");

    // Nothing left.
    c.eq("tasks", "0", "no task at the end");
    c.eq("state", "0", "no sandbox state directory at the end");
    c.eq(
        "after-mounts",
        "0",
        "no mount under /run/kata-rs at the end",
    );
    c.eq("after-virtiofsd", "0", "no virtiofsd at the end");
    c.eq("after-vmms", "0", "no kata-vmm at the end");
    c.eq("after-share", "gone", "no share directory at the end");
    c.eq("leftovers-rc", "0", "kata_rs_leftovers at the end");
    c.finish("volumes");
}

#[test]
fn guest_cannot_escape_through_the_share() {
    require_kata_artifacts();
    let run = node_run("share-escape.sh", &[]);
    run.assert_success();
    let mut c = Checks::new(&run);

    c.eq("esc-run-rc", "0", "a privileged kata container starts");
    if run.marker("esc-skipped").is_none() {
        c.eq(
            "esc-mount",
            "ok",
            "guest root mounts the share (mount -t virtiofs kata-rs /mnt)",
        );
        // Where the tag leads (the share root, or with virtiofsd --announce-submounts the
        // newest submount, e.g. the container's rootfs): printed with the failures.
        let view = c.m("esc-share-view");
        c.eq(
            "esc-ro-guest-rw-bind",
            "rw",
            &format!(
                "a bind of the read-only volume remounted rw in the guest, so that only the host \
                 can refuse its writes (the tag gave: {view})"
            ),
        );
        // Symlinks and `..` resolve in the guest: the guest's decoy or ENOENT, never the host.
        for k in [
            "symlink-abs",
            "symlink-rel",
            "symlink-bind",
            "dotdot-share",
            "dotdot-deep",
        ] {
            let got = c.m(&format!("esc-{k}"));
            c.check(
                got == "guest-decoy" || got == "ENOENT",
                format!(
                    "{k}: reading through it shows the guest's file or ENOENT, it showed {got}"
                ),
            );
        }
        // Every attempt to change something outside the writable bind fails.
        let attempts = run.prefixed("esc-attempt");
        c.check(
            attempts.len() >= 18,
            format!("the escape attempts ran ({} printed)", attempts.len()),
        );
        for a in &attempts {
            c.check(
                a.contains(" refused "),
                format!("escape attempt succeeded (it must fail): {a}"),
            );
        }
    }
    // The host afterwards.
    c.eq(
        "marker-printed",
        "0",
        "the host's secret never reached the container",
    );
    c.eq(
        "secret-intact",
        "yes",
        "the host's secret file is unchanged (content, links, mtime)",
    );
    c.eq(
        "ro-intact",
        "yes",
        "the read-only bind's source is unchanged on the host",
    );
    c.eq(
        "share-root-unchanged",
        "yes",
        "nothing was added to or removed from the share root",
    );
    c.eq(
        "share-parent-unchanged",
        "yes",
        "nothing was added to or removed from the share's parent directory",
    );
    c.eq("etc-unchanged", "yes", "the node's /etc is unchanged");
    c.eq(
        "rw-device-node",
        "no",
        "guest root cannot leave a device node in a host volume (virtiofsd has no CAP_MKNOD)",
    );
    c.eq(
        "esc-delete-rc",
        "0",
        "ctr task delete of the privileged container",
    );
    c.eq(
        "after-mounts",
        "0",
        "no mount under /run/kata-rs at the end",
    );
    c.eq("after-virtiofsd", "0", "no virtiofsd at the end");
    c.eq("after-share", "gone", "no share directory at the end");
    c.eq("state", "0", "no sandbox state directory at the end");
    c.eq("leftovers-rc", "0", "kata_rs_leftovers at the end");
    c.finish("share-escape");
}

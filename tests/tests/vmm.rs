//! The VMM alone (no containerd, no shim).
use std::process::Command;

use kata_rs_tests::{
    node_run, node_run_with_extra, repo_relative, repo_root, require_kata_artifacts, vmm_binary,
    NodeRun,
};

/// kata-vmm's contract with a test guest (no agent needed): a missing or corrupt kernel is
/// exit 1 with one `kata-vmm: error:` line naming it; a forbidden syscall after the seccomp
/// filter is in kills the VMM with SIGSYS; the guest kernel boots to /init; SIGTERM gives
/// exit 0. The same node boot checks virtio-fs ([`assert_virtio_fs`]).
#[test]
fn vmm_boots_kernel_and_stops_on_sigterm() {
    for p in [vmm_binary(), repo_root().join("target/guest/vmlinux")] {
        assert!(
            p.is_file(),
            "prerequisite missing: {} (make binaries kernel)",
            repo_relative(&p)
        );
    }
    // virtio-fs rides on this node boot (CI time): virtiofsd, the fs test guest and the
    // script vmm-boot.sh sources go to the node as extras.
    let root = repo_root();
    let vfsd = root.join("target/release/virtiofsd");
    assert!(
        vfsd.is_file(),
        "prerequisite missing: target/release/virtiofsd (scripts/build-virtiofsd.sh)"
    );
    let built = Command::new(root.join("tests/image/fs-initrd.sh"))
        .status()
        .expect("tests/image/fs-initrd.sh");
    assert!(built.success(), "tests/image/fs-initrd.sh failed");
    let paths = [
        vfsd,
        root.join("target/tests/fs-initrd.img"),
        root.join("tests/scripts/vmm-fs.sh"),
    ];
    let paths: Vec<&str> = paths
        .iter()
        .map(|p| p.to_str().expect("UTF-8 path"))
        .collect();
    let run = node_run_with_extra("vmm-boot.sh", &paths, &paths);
    run.assert_success();

    assert_eq!(run.expect_marker("missing-kernel-rc"), "1");
    let err = one_error_line(&run, "missing-kernel");
    assert!(
        err.contains("/nonexistent/kata-rs/vmlinux-missing"),
        "the error must name the kernel path: {err}"
    );

    for k in ["vmlinux-cut", "not-a-kernel"] {
        let prefix = format!("corrupt-{k}");
        assert_eq!(run.expect_marker(&format!("{prefix}-rc")), "1", "{k}");
        let err = one_error_line(&run, &prefix);
        assert!(
            err.contains(k),
            "the error must name the kernel file: {err}"
        );
    }

    // 159 = 128 + SIGSYS (31): seccomp's KILL_PROCESS, as the shell reports it.
    assert_eq!(
        run.expect_marker("sigsys-rc"),
        "159",
        "KATA_VMM_TEST_FORBIDDEN_SYSCALL=1 must make the VMM die of SIGSYS"
    );

    assert_eq!(
        run.expect_marker("guest-init"),
        "yes",
        "the guest kernel did not reach /init (see the console lines)"
    );
    assert_eq!(
        run.expect_marker("sigterm-rc"),
        "0",
        "kata-vmm must exit 0 on SIGTERM"
    );
    assert_boot_watch(&run);
    assert_eq!(run.expect_marker("leftovers-rc"), "0");
    println!(
        "guest kernel to /init on a {} node: {} s",
        run.node_kind(),
        run.expect_marker("guest-init-seconds")
    );
    assert_virtio_fs(&run);
}

/// The end of x86-64's canonical lower half (user space).
const USER_HALF_END: u64 = 0x0000_8000_0000_0000;

/// `--boot-watch-secs 2` with the virtio-mmio driver kept from loading: two warnings (at 2 s
/// and 4 s) with vCPU 0's state, its instruction pointer in the guest kernel's text (or, once
/// the guest is in /init, in user space) when in 64-bit mode, and one more on SIGUSR1; the
/// guest runs on to /init and SIGTERM ends the VMM with 0.
fn assert_boot_watch(run: &NodeRun) {
    assert_eq!(
        run.expect_marker("watch-guest-init"),
        "yes",
        "{}",
        run.stdout
    );
    assert_eq!(run.expect_marker("watch-sigterm-rc"), "0");
    let lines: Vec<&str> = run
        .prefixed("watch")
        .into_iter()
        .filter(|l| l.contains("guest not up") || l.contains("vCPU state (SIGUSR1)"))
        .collect();
    assert!(
        lines.len() == 3,
        "two samples and one on SIGUSR1: {lines:#?}\n{}",
        run.stdout
    );
    assert!(
        lines[0].contains("guest not up 2 s after start"),
        "{lines:#?}"
    );
    assert!(
        lines[1].contains("guest not up 4 s after start"),
        "{lines:#?}"
    );
    assert!(
        lines[2].contains("vCPU state (SIGUSR1): vCPU0 rip=0x"),
        "{lines:#?}"
    );
    let vmlinux = repo_root().join("target/guest/vmlinux");
    for l in &lines {
        let rip = l
            .split_whitespace()
            .find_map(|w| w.strip_prefix("rip=0x"))
            .and_then(|h| u64::from_str_radix(h, 16).ok())
            .unwrap_or_else(|| panic!("no rip in {l:?}"));
        assert!(l.contains("mp_state="), "{l}");
        if l.contains("mode=long64") {
            // The kernel's text, or the hang guest's /init (user space, which a guest that
            // boots in under 2 s has reached by the first sample): user code runs on a user
            // stack, both in the lower half.
            let rsp = l
                .split_whitespace()
                .find_map(|w| w.strip_prefix("rsp=0x"))
                .and_then(|h| u64::from_str_radix(h, 16).ok())
                .unwrap_or_else(|| panic!("no rsp in {l:?}"));
            let user = (0x1000..USER_HALF_END).contains(&rip) && rsp < USER_HALF_END;
            assert!(
                rip >= 0xffff_ffff_8100_0000 || user,
                "a 64-bit guest runs in its kernel's text or in user space: {l}"
            );
        }
        println!(
            "boot watch: {l} [{}]",
            kata_rs_tests::symbolize(&vmlinux, rip)
        );
    }
}

/// `--fs` (tests/scripts/vmm-fs.sh): no backend is exit 1 with one line naming the socket;
/// with virtiofsd the jailed, seccomp-filtered VMM gives the guest a virtio-fs device it
/// mounts, reads the host's files through and writes files the host sees; virtiofsd killed
/// under the running VM is one warning, the VMM keeps running and exits 0 on SIGTERM.
fn assert_virtio_fs(run: &NodeRun) {
    assert_eq!(run.expect_marker("fs-no-backend-rc"), "1");
    let err = one_error_line(run, "fs-no-backend");
    assert!(
        err.contains("virtio-fs: cannot connect to vhost-user socket ")
            && err.contains("/nobody.sock: "),
        "{err}"
    );
    assert_eq!(run.expect_marker("fs-virtiofsd-listening"), "yes");
    assert_eq!(
        run.expect_marker("fs-guest-done"),
        "yes",
        "the fs test guest did not finish (see fs-console and fs-vmm lines)"
    );
    assert_eq!(run.expect_marker("fs-guest-mount"), "ok");
    assert_eq!(run.expect_marker("fs-guest-fstype"), "virtiofs");
    assert_eq!(run.expect_marker("fs-guest-read"), "written-by-the-host");
    assert_eq!(
        run.expect_marker("fs-guest-blob-sha256"),
        run.expect_marker("fs-host-blob-sha256"),
        "the guest read other bytes than the host wrote"
    );
    assert_eq!(run.expect_marker("fs-guest-write"), "ok");
    assert_eq!(run.expect_marker("fs-guest-write-blob"), "ok");
    assert_eq!(run.expect_marker("fs-guest-remount"), "ok");
    assert_eq!(run.expect_marker("fs-host-sees"), "written-by-the-guest");
    assert_eq!(run.expect_marker("fs-host-guest-blob-size"), "2097152");
    // Jailed (uid 65534) and under seccomp on every thread while the guest used the share.
    assert_eq!(run.expect_marker("fs-vmm-jailed"), "65534/2");
    let tasks = run.prefixed("fs-vmm-task");
    assert!(
        tasks.len() >= 3 && tasks.iter().all(|t| t.ends_with(" 2")),
        "every thread under seccomp: {tasks:?}"
    );
    assert_eq!(
        run.expect_marker("fs-backend-gone-warned"),
        "yes",
        "no warning after virtiofsd died"
    );
    assert_eq!(run.expect_marker("fs-vmm-alive-after-backend"), "yes");
    assert_eq!(run.expect_marker("fs-vmm-rc"), "0");
}

/// The single `kata-vmm: error: ` line among the `PREFIX| ` lines.
fn one_error_line<'a>(run: &'a NodeRun, prefix: &str) -> &'a str {
    let err: Vec<&str> = run
        .prefixed(prefix)
        .into_iter()
        .filter(|l| l.starts_with("kata-vmm: error: "))
        .collect();
    assert_eq!(
        err.len(),
        1,
        "{prefix}: want one `kata-vmm: error:` line: {:?}",
        run.prefixed(prefix)
    );
    err[0]
}

/// The value of the `jail-status| KEY: VALUE` line.
fn status_field<'a>(run: &'a NodeRun, key: &str) -> &'a str {
    run.prefixed("jail-status")
        .into_iter()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {key}: in the VMM's /proc status:\n{}", run.stdout))
}

/// The installed guest kernel + image boot, the agent says ready on the console, answers
/// `kata-agent-ctl check` over vsock, powers the guest off on `kata-agent-ctl shutdown`, and
/// kata-vmm then exits 0. While the guest runs, /proc shows the VMM jailed: uid/gid 65534, no
/// groups, no capabilities, no_new_privs, seccomp filter mode on every thread, an empty root,
/// one mount, its own mount/net/ipc/uts/cgroup namespaces; the agent is reached through the
/// hybrid vsock socket (`srw-------`, root's), and the VMM holds no vhost-vsock fd. The same
/// guest then boots from the bzImage (`target/guest/bzImage`) to the agent.
#[test]
fn vmm_boots_guest_and_agent_answers() {
    require_kata_artifacts();
    let bz = repo_root().join("target/guest/bzImage");
    assert!(
        bz.is_file(),
        "prerequisite missing: target/guest/bzImage (make kernel)"
    );
    let bz = bz.to_str().expect("UTF-8 path").to_owned();
    let run = node_run_with_extra("vmm.sh", &["42", &bz], &[&bz]);
    run.assert_success();
    for p in ["vmm", "bz"] {
        assert_eq!(
            run.expect_marker(&format!("{p}-agent-ready")),
            "yes",
            "{p}: no `kata-rs-agent: ready` on the guest console"
        );
        assert_eq!(
            run.expect_marker(&format!("{p}-check-rc")),
            "0",
            "{p}: kata-agent-ctl check failed"
        );
        assert_eq!(
            run.expect_marker(&format!("{p}-shutdown-rc")),
            "0",
            "{p}: kata-agent-ctl shutdown failed"
        );
        assert_eq!(
            run.expect_marker(&format!("{p}-rc")),
            "0",
            "{p}: kata-vmm must exit 0 after the guest powers off"
        );
    }

    // The jail, as the host sees it while the guest works.
    let ids = |v: &str| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(ids(status_field(&run, "Uid")), ["65534"; 4], "Uid");
    assert_eq!(ids(status_field(&run, "Gid")), ["65534"; 4], "Gid");
    assert_eq!(status_field(&run, "Groups"), "", "supplementary groups");
    assert_eq!(status_field(&run, "NoNewPrivs"), "1");
    assert_eq!(
        status_field(&run, "Seccomp"),
        "2",
        "main thread: filter mode"
    );
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(status_field(&run, cap), "0000000000000000", "{cap}");
    }
    let tasks = run.prefixed("jail-task");
    let vcpus: Vec<&&str> = tasks.iter().filter(|t| t.starts_with("vcpu")).collect();
    assert_eq!(vcpus.len(), 2, "two vCPU threads: {tasks:?}");
    for t in &tasks {
        let f: Vec<&str> = t.split_whitespace().collect();
        for want in [
            ["Uid:", "65534"],
            ["Gid:", "65534"],
            ["NoNewPrivs:", "1"],
            ["Seccomp:", "2"],
            ["CapEff:", "0000000000000000"],
        ] {
            assert!(
                f.windows(2).any(|w| w == want),
                "thread not jailed ({want:?}): {t}"
            );
        }
    }
    assert_eq!(
        run.expect_marker("jail-root-entries"),
        "0",
        "the VMM's root must be empty"
    );
    assert_eq!(
        run.expect_marker("jail-mounts"),
        "1",
        "one mount (the empty tmpfs) in the VMM's namespace"
    );
    let mi = run.prefixed("jail-mountinfo");
    assert!(
        mi.len() == 1 && mi[0].contains(" / / ro,") && mi[0].contains(" tmpfs "),
        "mountinfo: {mi:?}"
    );
    // Hybrid vsock: the agent is reached through a root-only Unix socket (kata-agent-ctl
    // --uds above); the host kernel's vhost-vsock is not used at all.
    assert_eq!(run.expect_marker("vsock-sock-mode"), "srw-------");
    assert_eq!(run.expect_marker("vsock-sock-owner"), "0");
    assert_eq!(run.expect_marker("vhost-vsock-fds"), "0");
    // pid and user namespaces stay the host's: the shim signals and waits for its child.
    assert_eq!(run.expect_marker("jail-shared-ns"), "pid,user");
    assert_eq!(run.expect_marker("leftovers-rc"), "0");
}

/// The control socket (`--api-sock`): mode 0600; `ping` answers; `pause` parks both vCPU
/// threads (they wait on a futex instead of in KVM_RUN) and the agent stops answering;
/// `resume` brings it back; an unknown command is an error line; the guest still shuts down
/// normally and the jailed VMM leaves its socket file for the caller to remove.
#[test]
fn vmm_control_socket_pauses_and_resumes() {
    require_kata_artifacts();
    // `make binaries` builds no examples: build the client here (quick when up to date).
    let built = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "-p",
            "kata-rs-vmm",
            "--example",
            "vmm_api",
        ])
        .current_dir(repo_root())
        .status()
        .expect("cannot run cargo");
    assert!(built.success(), "building the vmm_api example failed");
    let client = repo_root().join("target/release/examples/vmm_api");
    assert!(client.is_file(), "no {}", client.display());
    let client = client.to_str().expect("UTF-8 path").to_owned();
    // The restore with --fs (memory copied) needs a vhost-user backend.
    let vfsd = repo_root().join("target/release/virtiofsd");
    assert!(
        vfsd.is_file(),
        "prerequisite missing: target/release/virtiofsd (scripts/build-virtiofsd.sh)"
    );
    let vfsd = vfsd.to_str().expect("UTF-8 path").to_owned();
    // The agent's AfterRestore client, to bind a filled placeholder slot again.
    let built = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "-p",
            "kata-rs-agent",
            "--example",
            "after-restore",
        ])
        .current_dir(repo_root())
        .status()
        .expect("cannot run cargo");
    assert!(built.success(), "building the after-restore example failed");
    let after = repo_root().join("target/release/examples/after-restore");
    let after = after.to_str().expect("UTF-8 path").to_owned();
    let extra = [client.as_str(), vfsd.as_str(), after.as_str()];
    let run = node_run_with_extra("vmm-api.sh", &extra, &extra);
    run.assert_success();
    assert_eq!(run.expect_marker("agent-ready"), "yes");
    assert_eq!(run.expect_marker("sock-mode"), "srw-------");
    assert_eq!(run.expect_marker("api-ping"), "ok_pong");
    assert_eq!(run.expect_marker("api-pause"), "ok_paused_ok_paused");
    assert_eq!(
        run.expect_marker("paused-futex"),
        "2",
        "both vCPU threads parked: {:?}",
        run.prefixed("paused-vcpu")
    );
    assert_ne!(
        run.expect_marker("paused-check-rc"),
        "0",
        "the agent answered while its VM was paused"
    );
    assert_eq!(run.expect_marker("api-resume"), "ok_running_ok_running");
    assert_eq!(
        run.expect_marker("resumed-check-rc"),
        "0",
        "the agent must answer after resume"
    );
    assert!(run
        .expect_marker("api-bad")
        .starts_with("error_unknown_command"));
    assert_eq!(run.expect_marker("api-bad-rc"), "1");
    assert_eq!(run.expect_marker("cold-check-rc"), "0");

    // Snapshot and restore (issue 14).
    assert!(
        run.expect_marker("api-snap-running")
            .contains("must_be_paused"),
        "a running VM must not be saved"
    );
    assert_eq!(run.expect_marker("api-snap-pause"), "ok_paused");
    assert!(
        run.expect_marker("api-snap").starts_with("ok_snapshot"),
        "snapshot: {}",
        run.expect_marker("api-snap")
    );
    assert!(run
        .expect_marker("api-snap-outside")
        .contains("not_under_the_snapshot_root"));
    let mem: u64 = run.expect_marker("snap-memory-bytes").parse().unwrap();
    assert_eq!(mem, 256 << 20, "the memory file is as large as guest RAM");
    let on_disk: u64 = run.expect_marker("snap-memory-disk-kib").parse().unwrap();
    assert!(
        on_disk < 256 << 10,
        "zero pages are holes: {on_disk} KiB on disk"
    );
    assert_eq!(run.expect_marker("snap-vmm-rc"), "0");
    for (name, names) in [
        ("restore-mem", "memory: snapshot 256 MiB, now 320 MiB"),
        ("restore-cut", "memory file is 1048576 bytes"),
        ("restore-version", "format version 9"),
        ("restore-truncated", "truncated"),
    ] {
        assert_eq!(run.expect_marker(&format!("{name}-rc")), "1", "{name}");
        let err = run.expect_marker(&format!("{name}-error"));
        assert!(err.contains(&names.replace(' ', "_")), "{name}: {err}");
    }
    assert_eq!(
        run.expect_marker("restored-check-rc"),
        "0",
        "the restored guest's agent must answer"
    );
    assert_eq!(run.expect_marker("api-restored"), "ok_running");
    assert_eq!(run.expect_marker("restored-check2-rc"), "0");
    assert!(
        run.expect_marker("api-resnap").contains("ok_snapshot"),
        "a restored VM can be saved again: {}",
        run.expect_marker("api-resnap")
    );
    // The restored VM had the virtio-blk and virtio-net devices of the saved one, active (their
    // drivers had negotiated; the restore re-activated them from the snapshot, no new probe).
    for dev in ["virtio-blk", "virtio-net"] {
        let summary = run
            .prefixed("restored-stderr")
            .into_iter()
            .find(|l| l.starts_with(&format!("kata-vmm: {dev}")))
            .unwrap_or_else(|| panic!("no {dev} summary of the restored VMM:\n{}", run.stdout));
        assert!(summary.contains("event_idx=1"), "{summary}");
    }
    // s1 was saved with a host connection open (the reply says "vsock busy"): the restored
    // guest took the vsock TRANSPORT_RESET event and gave the buffer back, a kick of the event
    // queue (queue 2) in the restored VMM's counters.
    assert!(
        run.expect_marker("api-snap").contains("vsock_busy"),
        "{}",
        run.expect_marker("api-snap")
    );
    assert!(
        event_queue_kicks(&run, "restored-stderr") >= 1,
        "the restore from a busy save resets vsock"
    );
    assert!(!run
        .prefixed("restored-stderr")
        .iter()
        .any(|l| l.contains("no transport reset")));
    assert_placeholder_slots(&run);
    assert_eq!(run.expect_marker("second-check-rc"), "0");
    assert_eq!(run.expect_marker("second-shutdown-rc"), "0");
    assert_eq!(run.expect_marker("second-vmm-rc"), "0");
    let kib = |k: &str| -> f64 { run.expect_marker(k).parse().unwrap() };
    for vm in ["restored1", "restored2"] {
        let (rss, pss) = (kib(&format!("{vm}-rss-kib")), kib(&format!("{vm}-pss-kib")));
        println!("{vm}: rss {rss} KiB, pss {pss} KiB");
        assert!(
            pss < rss,
            "{vm}: guest RAM from one snapshot must be shared (pss {pss} of rss {rss} KiB)"
        );
    }
    assert_eq!(run.expect_marker("shutdown-rc"), "0");
    assert_eq!(run.expect_marker("vmm-rc"), "0");
    assert_eq!(run.expect_marker("sock-left"), "yes");
    assert_eq!(run.expect_marker("leftovers-rc"), "0");
    let cold: f64 = run.expect_marker("cold-boot-ms").parse().unwrap();
    let restore: f64 = run.expect_marker("restore-ms").parse().unwrap();
    println!(
        "agent answering on a {} node: cold boot {cold} ms, restore from a snapshot {restore} ms \
         (kata-vmm's part {}, one check of a running agent {} ms), ratio_restore_boot {:.3}",
        run.node_kind(),
        run.expect_marker("restore-vmm"),
        run.expect_marker("warm-check-ms"),
        restore / cold
    );
    assert!(restore < cold, "a restore must beat a cold boot");
}

/// Templates (issue 14): the cold boot had two placeholder slots (4 and 5, DeviceID 0; the
/// guest's agent came up as without them); the restore with a second `--net` put that card
/// into slot 4, reset (DeviceID 1, Status 0), slot 5 stays a placeholder; the agent's
/// AfterRestore binds slot 4 again (`probed=virtio-mmio.4`) and the guest's virtio-net driver
/// negotiates with the card (its exit summary: `event_idx=1`). A third VMM restored with
/// `--fs` from the snapshot of the restored VM (its second card now its own and active, in
/// slot 4): guest RAM copied into memfds (only
/// the memory file's data extents), no mapping of the memory file, virtio-fs in slot 5 after
/// the vhost-user handshake with virtiofsd, the agent answers; its AfterRestore binds slot 5
/// and mounts the share (virtiofsd maps the memfds).
fn assert_placeholder_slots(run: &NodeRun) {
    // vsock, rng, the snapshot's disk and card (active), the filled slot, the empty one.
    assert_eq!(
        run.expect_marker("restored-slots"),
        "0:19/15,1:4/15,2:2/15,3:1/15,4:1/0,5:0/0"
    );
    let nets: Vec<&str> = run
        .prefixed("restored-stderr")
        .into_iter()
        .filter(|l| l.starts_with("kata-vmm: virtio-net"))
        .collect();
    assert_eq!(nets.len(), 2, "both cards' summaries: {nets:?}");
    assert_eq!(run.expect_marker("after-restore"), "probed=virtio-mmio.4");
    assert!(
        nets[1].contains(" event_idx=1 "),
        "the guest's driver negotiated with the card in slot 4: {}",
        nets[1]
    );
    assert_eq!(run.expect_marker("copy-check-rc"), "0");
    // s2 was saved idle (no host connection open): its restore sent no transport reset (no
    // event-queue kick), and the agent answered all the same.
    assert!(
        run.expect_marker("api-resnap").contains("vsock_idle"),
        "{}",
        run.expect_marker("api-resnap")
    );
    assert!(
        run.prefixed("copy-stderr")
            .iter()
            .any(|l| l.contains("virtio-vsock: idle at the save, no transport reset")),
        "{}",
        run.stdout
    );
    assert_eq!(event_queue_kicks(run, "copy-stderr"), 0);
    assert_eq!(
        run.expect_marker("copy-slots"),
        "0:19/15,1:4/15,2:2/15,3:1/15,4:1/15,5:26/0"
    );
    assert_eq!(run.expect_marker("copy-fs-handshake"), "1");
    // The guest's virtio-fs driver started the device in slot 5 (guest RAM went to virtiofsd
    // as the memfds) and the agent mounted the share through it.
    assert_eq!(
        run.expect_marker("copy-after-restore"),
        "probed=virtio-mmio.5"
    );
    assert_eq!(run.expect_marker("copy-memfd-maps"), "1");
    assert_eq!(run.expect_marker("copy-file-maps"), "0");
    let copied: u64 = run.expect_marker("copy-bytes").parse().unwrap();
    let on_disk: u64 = run.expect_marker("s2-memory-disk-kib").parse().unwrap();
    assert!(
        copied > 0 && copied <= (on_disk << 10) + (1 << 20),
        "only the data extents are copied: {copied} bytes, {on_disk} KiB on disk"
    );
    assert_eq!(run.expect_marker("copy-shutdown-rc"), "0");
    assert_eq!(run.expect_marker("copy-vmm-rc"), "0");
    println!(
        "restore map {} ms (kata-vmm {}), restore copy with --fs {} ms (kata-vmm {}), {} bytes \
         copied, rss {} KiB",
        run.expect_marker("restore-ms"),
        run.expect_marker("restore-vmm"),
        run.expect_marker("restore-copy-ms"),
        run.expect_marker("restore-copy-vmm"),
        copied,
        run.expect_marker("copied-rss-kib")
    );
}

/// `--net tap=NAME,mac=MAC` (virtio-net on a tap): kata-vmm creates the tap before its jail
/// (the jailed VMM has its own network namespace, the tap stays in the node's); the node
/// configures it, the guest (agent image + an overlay whose rdinit sets eth0 and starts
/// busybox httpd, then execs the agent) sees the MAC, answers ping, 200 back-to-back
/// 1400-byte and 20 fragmented 8000-byte pings, and serves a 1.9 MB file whose sha256
/// matches; kata-vmm's exit summary and the tap's counters show no frame dropped. After the agent's shutdown kata-vmm exits 0 and the tap it created is gone.
/// The same VM has `--virtio-console` with `console=hvc0`: the guest's console (init's lines,
/// the agent's ready line) is hvc0 and reaches the console log.
/// And a 16 MiB read-only `--disk` that the guest reads with dd. Notification suppression:
/// the guest negotiated `VIRTIO_RING_F_EVENT_IDX` on kata-vmm's own devices (net, blk,
/// console, rng) and kata-vmm's exit summary says so; the receive queue was kicked less than
/// once per 100 frames (the guest refills without kicking until the device runs dry) and
/// virtio-net sent fewer interrupts than it moved frames.
#[test]
fn vmm_net_tap_ping_and_bulk() {
    require_kata_artifacts();
    let run = node_run("vmm-net.sh", &[]);
    run.assert_success();
    assert_eq!(run.expect_marker("tap-before"), "no");
    assert_eq!(
        run.expect_marker("tap-created"),
        "yes",
        "kata-vmm creates the tap"
    );
    assert_eq!(run.expect_marker("tap-config-rc"), "0");
    assert_eq!(run.expect_marker("agent-ready"), "yes");
    assert_eq!(
        run.expect_marker("guest-eth0"),
        "up",
        "guest eth0 configuration"
    );
    assert_eq!(run.expect_marker("guest-mac"), "02:00:0a:d5:00:02");
    let active = run.expect_marker("guest-console");
    assert!(
        active.split(',').next_back() == Some("hvc0"),
        "the guest console must be hvc0 (virtio-console), /sys says {active:?}"
    );
    assert_eq!(
        run.expect_marker("vmm-own-netns"),
        "yes",
        "the jailed VMM is in its own network namespace; the tap fd works from there"
    );
    assert_eq!(run.expect_marker("vmm-seccomp"), "2");
    // busybox ping with -w, like iputils, goes on sending until -c replies came in (rc 0:
    // they did, before the deadline). A lost request or reply (a loss figure above 0) can happen outside the VMM
    // in the emulated node under load (seen once in CI: 1 of 21 8000-byte pings); what the
    // VMM itself must never lose is asserted from its own counters and the tap's below.
    for (p, max_loss) in [("ping", 0), ("ping1400", 5), ("ping8000", 5)] {
        assert_eq!(run.expect_marker(&format!("{p}-rc")), "0", "{p}");
        let loss: u32 = run
            .expect_marker(&format!("{p}-loss"))
            .parse()
            .expect("ping loss figure");
        assert!(loss <= max_loss, "{p}: {loss}% packet loss");
    }
    assert_eq!(run.expect_marker("http-rc"), "0");
    assert_eq!(
        run.expect_marker("http-sha"),
        "match",
        "the guest's file arrived changed: {}",
        run.expect_marker("http-bytes")
    );
    assert_eq!(run.expect_marker("shutdown-rc"), "0");
    assert_eq!(run.expect_marker("vmm-rc"), "0");
    for c in ["rx_dropped", "tx_dropped", "bad_chains"] {
        assert_eq!(
            run.expect_marker(&format!("vmm-{c}")),
            "0",
            "kata-vmm's {c}"
        );
    }
    // The tap's counters were read before the shutdown, kata-vmm's at its exit: every frame
    // the host queued on the tap reached the guest, every guest frame reached the host.
    let count = |c: &str| -> u64 { run.expect_marker(c).parse().expect(c) };
    // Host -> guest: at least the 200 + 20 * 6 echo-request frames (the HTTP download adds
    // ACKs, fewer when the guest stretches them). Guest -> host: at least the whole file.
    assert!(
        count("tap-tx_packets") >= 200 + 20 * 6,
        "the pings went over the tap: {} frames",
        count("tap-tx_packets")
    );
    assert!(
        count("tap-rx_bytes") > 300_000 * 6,
        "the HTTP download went over the tap: {} bytes",
        count("tap-rx_bytes")
    );
    assert!(
        count("vmm-rx_frames") >= count("tap-tx_packets"),
        "host -> guest frames lost in kata-vmm"
    );
    assert!(
        count("vmm-tx_frames") >= count("tap-rx_packets"),
        "guest -> host frames lost in kata-vmm"
    );
    assert_eq!(
        run.expect_marker("tap-tx_dropped"),
        "0",
        "the host dropped no frame on its way to kata-vmm"
    );
    assert_eq!(
        run.expect_marker("tap-left"),
        "no",
        "a tap kata-vmm created goes with it"
    );
    assert_eq!(run.expect_marker("leftovers-rc"), "0");
    // Notification suppression (VIRTIO_RING_F_EVENT_IDX), as the guest's sysfs and kata-vmm's
    // exit summary see it: net 0x0001, blk 0x0002, console 0x0003, rng 0x0004.
    let negotiated = run.expect_marker("guest-event-idx");
    for id in ["0x0001", "0x0002", "0x0003", "0x0004"] {
        assert!(
            negotiated.split(',').any(|e| e == format!("{id}:1")),
            "device {id} without EVENT_IDX in the guest: {negotiated}"
        );
    }
    for d in ["net", "blk", "console", "rng"] {
        assert_eq!(
            run.expect_marker(&format!("vmm-{d}-event_idx")),
            "1",
            "kata-vmm's virtio-{d} ran without EVENT_IDX"
        );
    }
    assert!(
        count("vmm-blk-read_bytes") >= 16 << 20,
        "the guest's dd read the whole disk"
    );
    let rx_kicks: u64 = run
        .expect_marker("vmm-net-queue_kicks")
        .split(',')
        .next()
        .and_then(|k| k.parse().ok())
        .expect("receive queue kicks");
    // Without EVENT_IDX every refill kicks (36 kicks for 1210 frames when measured); with it
    // the guest kicks once at boot and then only if the ring ran dry.
    assert!(
        rx_kicks * 100 < count("vmm-rx_frames"),
        "{rx_kicks} receive queue kicks for {} frames",
        count("vmm-rx_frames")
    );
    assert!(
        count("vmm-net-interrupts") < count("vmm-rx_frames") + count("vmm-tx_frames"),
        "virtio-net interrupts"
    );
    println!(
        "net on a {} node: 1.9 MB over TCP in {} s, ping bulk {} s; {}",
        run.node_kind(),
        run.expect_marker("http-seconds"),
        run.expect_marker("ping-bulk-seconds"),
        run.stdout
            .lines()
            .find(|l| l.starts_with("per-mb: "))
            .unwrap_or("per-mb: ?")
    );
}

/// Kicks of the vsock event queue (queue 2) in the exit summary of the VMM whose stderr is
/// under `prefix`.
fn event_queue_kicks(run: &NodeRun, prefix: &str) -> u64 {
    let conns = run
        .prefixed(prefix)
        .into_iter()
        .find(|l| l.starts_with("kata-vmm: vsock-conns:"))
        .unwrap_or_else(|| panic!("no vsock summary under {prefix}:\n{}", run.stdout));
    let kicks = conns
        .split_whitespace()
        .find_map(|w| w.strip_prefix("queue_kicks="))
        .unwrap_or_else(|| panic!("no queue_kicks in {conns}"));
    kicks
        .split(',')
        .nth(2)
        .and_then(|k| k.parse().ok())
        .unwrap_or_else(|| panic!("no event-queue kicks in {conns}"))
}

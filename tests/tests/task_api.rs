//! The Task API beyond run/kill/delete, through `ctr` on one kata container (one node boot,
//! tests/scripts/task-api.sh): exec with its own output, stderr and exit status, exec with
//! stdin, ps, pause/resume, metrics, checkpoint refused clearly, kill --all, events in
//! containerd's order, nothing left behind; tty (exec and container) where the node has a
//! pseudo-terminal tool; ConfigPath + annotations where the node's ctr can send them. Each
//! case's markers are printed whatever happens, so a failure names the case.
//!
//! While the container runs, the agent channel (issue 11, docs/security.md): nobody but the
//! shim reaches the agent. An unprivileged node user tries AF_VSOCK to the VM's CID:1024 and
//! the VMM's Unix socket, root tries AF_VSOCK, a runc container tries AF_VSOCK (probe
//! `kata-vsock-stress probe`, tests/vsock-stress); all fail, while root's connect through the
//! socket (what the shim does) works and the same user and container reach an AF_VSOCK
//! listener on the node itself (vsock loopback), so each refusal is the design's.
use std::path::{Path, PathBuf};

use kata_rs_tests::{
    build_release, node_run_with_extra, require_kata_artifacts, NodeRun, STATIC_TARGET,
};

/// util-linux `script`: a pseudo-terminal for ctr's -t.
const SCRIPT: &str = "/usr/bin/script";

/// Where the shim puts the VMM's hybrid vsock socket for sandbox t1.
const T1_UDS: &str = "/run/kata-rs/sandboxes/t1/kata-vmm.vsock";

/// The connection probe (static, so it runs on the node and in a busybox runc container).
fn probe_tool() -> PathBuf {
    build_release(
        "kata-rs-vsock-stress",
        Some(STATIC_TARGET),
        &["kata-vsock-stress"],
    )
    .remove(0)
}

/// The agent-channel markers: every failed check, each saying what a user would see.
fn agent_channel(run: &NodeRun) -> Vec<String> {
    let mut errs = Vec::new();
    let mut want = |key: &str, value: &str, what: &str| {
        let got = run.marker(key).unwrap_or("(missing)");
        if got != value {
            errs.push(format!("{key}={got}, want {value}: {what}"));
        }
    };
    want(
        "probe-tool",
        "ok",
        "the probe (kata-vsock-stress) did not reach the node",
    );
    let cid = run.marker("vmm-cid").unwrap_or("none");
    want(
        "vmm-uds",
        T1_UDS,
        "the VMM's agent socket is not in the sandbox's private state directory",
    );
    want("unpriv-uid", "65534", "the probes did not run as nobody");
    want("unpriv-gid", "65534", "the probes did not run as nogroup");
    want("unpriv-groups", "0", "the unprivileged probes kept groups");
    want(
        "unpriv-capeff",
        "0000000000000000",
        "the unprivileged probes kept capabilities",
    );
    want(
        "root-uds",
        "yes",
        "root (the shim's user) cannot connect to the agent through the VMM's socket, so the \
         refusals below prove nothing (and the shim could not reach its agent either)",
    );
    want(
        "user-vsock",
        "no",
        &format!(
            "an unprivileged user on the node connected to the kata VM's agent with AF_VSOCK \
             (CID {cid}, port 1024, the CID is on the VMM's command line): any local user can \
             run commands as root in the tenant's VM"
        ),
    );
    want(
        "user-uds",
        "no",
        &format!(
            "an unprivileged user on the node connected to the kata VM's agent through the \
             VMM's socket {T1_UDS}: any local user can run commands as root in the tenant's VM"
        ),
    );
    want(
        "root-vsock",
        "no",
        &format!(
            "AF_VSOCK from the node reaches the kata VM's agent (CID {cid}, port 1024): the \
             host kernel's vsock knows the guest, so any process that may open AF_VSOCK can try"
        ),
    );
    want(
        "runc-vsock",
        "no",
        &format!(
            "a runc container on the node connected to the kata VM's agent with AF_VSOCK \
             (CID {cid}, port 1024): a runc tenant can run commands as root in a kata tenant's VM"
        ),
    );
    // The control listener on the node (vsock loopback, CID 1): the same user and container
    // reach it, so their refusals above come from the design, not from a probe that cannot
    // use AF_VSOCK there.
    if run.marker("vsock-loopback") == Some("yes") {
        want(
            "user-vsock-control",
            "yes",
            "an unprivileged user on the node cannot reach an AF_VSOCK listener on the node \
             either, so `user-vsock=no` proves nothing about the kata VM",
        );
        want(
            "runc-vsock-control",
            "yes",
            "a runc container cannot reach an AF_VSOCK listener on the node either, so \
             `runc-vsock=no` proves nothing about the kata VM",
        );
    } else {
        println!(
            "agent channel: no AF_VSOCK control listener on this node (vsock-loopback={})",
            run.marker("vsock-loopback").unwrap_or("(missing)")
        );
    }
    want(
        "after-probes-status",
        "RUNNING",
        "the kata container did not survive the connection attempts",
    );
    errs
}

#[test]
fn task_api_through_ctr() {
    require_kata_artifacts();
    let probe = probe_tool();
    let probe = probe.to_str().expect("UTF-8 path");
    // ctr needs a terminal on its stdin for -t: the host's util-linux `script` provides one
    // on the node (node-run copies it and the libraries it needs).
    let mut extra: Vec<String> = match std::env::var("KATA_RS_NODE_EXTRA") {
        Ok(x) if !x.is_empty() => x.split(':').map(str::to_owned).collect(),
        _ if Path::new(SCRIPT).is_file() => vec![SCRIPT.to_owned()],
        _ => Vec::new(),
    };
    extra.push(probe.to_owned());
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let run = node_run_with_extra("task-api.sh", &[probe], &extra);
    run.assert_success();
    assert_eq!(run.expect_marker("run-rc"), "0");
    assert_eq!(run.expect_marker("run-status"), "RUNNING");

    let errs = agent_channel(&run);
    assert!(
        errs.is_empty(),
        "the agent channel (issue 11, docs/security.md):\n  {}\nwhat the node saw:\n{}",
        errs.join("\n  "),
        run.section("agent-channel").join("\n")
    );

    let exec = run.section("exec");
    assert!(exec.contains(&"exec-out"), "exec output:\n{}", run.stdout);
    assert_eq!(
        run.expect_marker("exec-rc"),
        "5",
        "ctr task exec must exit with the exec'd process's status"
    );
    assert!(
        run.section("exec-stdin").contains(&"from-stdin"),
        "exec stdin:\n{}",
        run.stdout
    );
    assert_eq!(run.expect_marker("exec-stdin-rc"), "0");

    assert!(
        run.stderr.contains("exec-err"),
        "exec stderr must reach ctr's stderr:\n{}",
        run.stderr
    );

    // `script` turns the EOF of its stdin into a VEOF byte, which is NUL on ctr's raw
    // console; the guest's tty echoes it as `^@` before the output. Hence ends_with.
    let tty = run.expect_marker("exec-tty-rc");
    not_skipped("exec tty", tty);
    assert!(
        run.section("exec-tty")
            .iter()
            .any(|l| l.ends_with("/dev/pts/0")),
        "`tty` in an exec with -t must name a pty:\n{}",
        run.stdout
    );
    assert_eq!(tty, "6");
    let tty = run.expect_marker("run-tty-rc");
    not_skipped("container tty", tty);
    assert!(
        run.section("run-tty")
            .iter()
            .any(|l| l.ends_with("/dev/pts/0")),
        "`tty` in a container run with -t must name a pty:\n{}",
        run.stdout
    );
    assert_eq!(tty, "4");

    assert_eq!(run.expect_marker("ps-rc"), "0");
    let ps = run.section("ps");
    assert!(
        ps.len() >= 2,
        "ctr task ps lists the container's processes:\n{ps:#?}"
    );

    assert_eq!(run.expect_marker("pause-rc"), "0");
    assert_eq!(run.expect_marker("paused-status"), "PAUSED");
    assert_eq!(run.expect_marker("resume-rc"), "0");
    assert_eq!(run.expect_marker("resumed-status"), "RUNNING");

    assert_eq!(run.expect_marker("metrics-rc"), "0");
    let metrics = run.section("metrics").join("\n");
    for key in ["pids.current", "memory.usage", "cpu.usage_usec"] {
        assert!(
            metrics.contains(key),
            "ctr task metrics must print {key}:\n{metrics}"
        );
    }

    let update = run.expect_marker("update-rc");
    // Debian 12's ctr (containerd 1.6) has no `task update`: the only case the node may skip.
    if !update.starts_with("skipped") {
        assert_eq!(update, "0", "ctr task update");
    }

    let checkpoint = run.section("checkpoint").join("\n");
    assert!(
        checkpoint.contains("checkpoint is not supported by the kata-rs runtime"),
        "checkpoint error:\n{checkpoint}"
    );
    assert_ne!(run.expect_marker("checkpoint-rc"), "0");

    assert_eq!(run.expect_marker("kill-all-rc"), "0");
    assert_eq!(run.expect_marker("killed-status"), "STOPPED");
    assert_eq!(run.expect_marker("delete-rc"), "0");

    let events = run.section("events");
    // A subsequence of what the script causes (ctr task checkpoint pauses and resumes too).
    let order = [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exec-added",
        "/tasks/exec-started",
        "/tasks/exit",
        "/tasks/paused",
        "/tasks/resumed",
        "/tasks/exec-added",
        "/tasks/exec-started",
        "/tasks/exit",
        "/tasks/exit",
        "/tasks/delete",
    ];
    let mut at = 0;
    for topic in order {
        match events[at..].iter().position(|e| *e == topic) {
            Some(i) => at += i + 1,
            None => panic!("event {topic} missing or out of order in:\n{events:#?}"),
        }
    }

    assert_eq!(run.expect_marker("tasks"), "0");
    assert_eq!(run.expect_marker("leftovers-rc"), "0");

    let config = run.expect_marker("config-path-rc");
    not_skipped("configuration", config);
    assert_eq!(
        config, "0",
        "ctr run with ConfigPath and an allowed annotation"
    );
    let kib: u64 = run
        .expect_marker("mem-kib")
        .parse()
        .expect("MemTotal in KiB");
    assert!(
        (200 * 1024..=320 * 1024).contains(&kib),
        "default_memory=320 must size the VM to 320 MiB; guest MemTotal is {kib} KiB"
    );
    let refused = run.section("refused-annotation").join("\n");
    assert!(
        refused.contains("io.katacontainers.config.hypervisor.default_vcpus is not allowed"),
        "an annotation not on the allow list must be refused clearly:\n{refused}"
    );
    assert_ne!(run.expect_marker("refused-rc"), "0");
    assert_eq!(run.expect_marker("refused-tasks"), "0");
    assert_eq!(run.expect_marker("refused-leftovers-rc"), "0");
}

/// A case the node script could not run (it printed `skipped (why)`) fails: the node image
/// has every tool the cases need, so a skip means the rig changed, not a pass.
fn not_skipped(case: &str, marker: &str) {
    assert!(
        !marker.starts_with("skipped"),
        "{case} case did not run on the node: {marker}"
    );
}

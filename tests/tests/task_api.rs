//! The Task API beyond run/kill/delete, through `ctr` on one kata container (one node boot,
//! tests/scripts/task-api.sh): exec with its own output, stderr and exit status, exec with
//! stdin, ps, pause/resume, metrics, checkpoint refused clearly, kill --all, events in
//! containerd's order, nothing left behind; tty (exec and container) where the node has a
//! pseudo-terminal tool; ConfigPath + annotations where the node's ctr can send them. Each
//! case's markers are printed whatever happens, so a failure names the case.
use std::path::Path;

use kata_rs_tests::{node_run, require_kata_artifacts};

/// util-linux `script`: a pseudo-terminal for ctr's -t.
const SCRIPT: &str = "/usr/bin/script";

#[test]
fn task_api_through_ctr() {
    require_kata_artifacts();
    // ctr needs a terminal on its stdin for -t: the host's util-linux `script` provides one
    // on the node (node-run copies it and the libraries it needs).
    if std::env::var_os("KATA_RS_NODE_EXTRA").is_none() && Path::new(SCRIPT).is_file() {
        std::env::set_var("KATA_RS_NODE_EXTRA", SCRIPT);
    }
    let run = node_run("task-api.sh", &[]);
    run.assert_success();
    assert_eq!(run.expect_marker("run-rc"), "0");
    assert_eq!(run.expect_marker("run-status"), "RUNNING");

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
    if tty.starts_with("skipped") {
        println!("exec tty case: {tty}");
    } else {
        assert!(
            run.section("exec-tty")
                .iter()
                .any(|l| l.ends_with("/dev/pts/0")),
            "`tty` in an exec with -t must name a pty:\n{}",
            run.stdout
        );
        assert_eq!(tty, "6");
    }
    let tty = run.expect_marker("run-tty-rc");
    if tty.starts_with("skipped") {
        println!("container tty case: {tty}");
    } else {
        assert!(
            run.section("run-tty")
                .iter()
                .any(|l| l.ends_with("/dev/pts/0")),
            "`tty` in a container run with -t must name a pty:\n{}",
            run.stdout
        );
        assert_eq!(tty, "4");
    }

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
    if update.starts_with("skipped") {
        println!("update case: {update}");
    } else {
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
    if config.starts_with("skipped") {
        println!("configuration cases: {config}");
        return;
    }
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

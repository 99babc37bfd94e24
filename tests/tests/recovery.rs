//! Recovery (tests/scripts/recovery.sh, one node boot): a kata container whose VMM is killed
//! is seen by containerd as exited with 137 (`ctr run` returns it) and leaves nothing behind;
//! containerd restarted while a kata container runs reconnects to its shim: the task is still
//! RUNNING, exec and kill work and report the right statuses, and delete leaves nothing.
use kata_rs_tests::{node_run, require_kata_artifacts};

#[test]
fn vmm_killed_and_containerd_restarted() {
    require_kata_artifacts();
    let run = node_run("recovery.sh", &[]);
    run.assert_success();
    let m = |k: &str| run.expect_marker(k).to_string();

    assert_eq!(
        m("task-pid-comm"),
        "kata-vmm",
        "the task pid must be the VMM's"
    );
    assert_eq!(
        m("killed-run-rc"),
        "137",
        "ctr run must end with 137 when the VMM is killed:\n{}",
        run.stdout
    );
    assert!(
        run.prefixed("vmm-killed").contains(&"started"),
        "the container ran before its VMM was killed:\n{}",
        run.stdout
    );
    assert_eq!(m("vmm-killed-containers"), "0", "ctr run --rm removed it");
    assert_eq!(
        m("vmm-killed-leftovers-rc"),
        "0",
        "leftovers after the VMM was killed"
    );

    assert_eq!(m("r2-run-rc"), "0");
    assert_eq!(m("containerd-stopped"), "yes");
    assert_eq!(m("shims-while-down"), "1", "the shim outlives containerd");
    assert_eq!(m("containerd-restarted"), "yes");
    assert_eq!(
        m("restart-status"),
        "RUNNING",
        "the task survives containerd's restart"
    );
    assert!(
        run.stdout.lines().any(|l| l == "exec-after-restart"),
        "exec after the restart:\n{}",
        run.stdout
    );
    assert_eq!(m("restart-exec-rc"), "4");
    assert_eq!(m("restart-kill-status"), "STOPPED");
    assert_eq!(m("restart-rm-rc"), "0");
    assert!(
        run.prefixed("restart-rm")
            .iter()
            .any(|l| l.contains("exit code 9")),
        "ctr task rm reports the trapped exit status 9:\n{}",
        run.stdout
    );
    assert_eq!(m("restart-containers"), "0");
    assert_eq!(
        m("restart-leftovers-rc"),
        "0",
        "leftovers after the restart case"
    );
}

//! Recovery (tests/scripts/recovery.sh, one node boot): a kata container whose VMM is killed
//! is seen by containerd as exited with 137 (`ctr run` returns it) and leaves nothing behind;
//! the same for a pod's VMM (every task of the pod exits); a killed shim is cleaned up
//! through its `delete` subcommand (VMM gone, nothing left); containerd restarted while a kata
//! container runs reconnects to its shim: the task is still RUNNING, exec and kill work and
//! report the right statuses, and delete leaves nothing; with `runtime.debug` the guest
//! console is kept per sandbox and the shim logs at debug level into containerd's log.
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

    assert_eq!(m("pod-vmms"), "1", "one VM for the pod");
    assert_eq!(
        m("pod-killed-status"),
        "STOPPED,STOPPED",
        "every task of a pod whose VMM was killed exits:\n{}",
        run.stdout
    );
    assert_eq!(m("pod-rm-rp-rc"), "0");
    assert_eq!(m("pod-rm-rpc-rc"), "0");
    assert_eq!(m("pod-killed-containers"), "0");
    assert_eq!(
        m("pod-killed-leftovers-rc"),
        "0",
        "leftovers after the pod's VMM was killed"
    );

    assert_eq!(m("shims"), "1");
    assert!(
        ["gone", "STOPPED"].contains(&m("shim-killed-status").as_str()),
        "containerd sees the task of a killed shim end:\n{}",
        run.stdout
    );
    assert_eq!(m("shim-killed-containers"), "0");
    assert_eq!(
        m("shim-killed-leftovers-rc"),
        "0",
        "leftovers after the shim was killed"
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
    assert_eq!(
        m("restart-kill-status"),
        "STOPPED",
        "SIGTERM after containerd's restart ends the task (trap: exit 9):\n{}",
        run.stdout
    );
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

    assert_eq!(m("debug-run-rc"), "0");
    assert_eq!(
        m("debug-console-kept"),
        "yes",
        "runtime.debug keeps the guest console log"
    );
    assert_ne!(
        m("debug-console-agent-ready"),
        "0",
        "the kept console log is the guest's"
    );
    assert_ne!(
        m("debug-shim-lines"),
        "0",
        "runtime.debug: the shim's debug lines reach containerd's log"
    );
}

//! A pod in one microVM through ctr (tests/scripts/pod.sh, one node boot): a sandbox
//! container and two containers grouped by the CRI annotations share one VMM and the pod's
//! network, IPC and UTS namespaces, keep their own mount namespaces and their own PID
//! namespace unless the spec names the sandbox's, take exec,
//! talk over the pod's localhost; deleting a pod container keeps the VM, deleting the
//! sandbox stops it; a container naming no running sandbox, or with a missing command,
//! fails clearly and leaves nothing; the guest clock is the node's after boot and after
//! pause/resume; nothing is left at the end.
use kata_rs_tests::{node_run, require_kata_artifacts};

#[test]
fn pod_shares_one_vm_through_ctr() {
    require_kata_artifacts();
    let run = node_run("pod.sh", &[]);
    run.assert_success();
    let out = &run.stdout;

    // The sandbox boots the VM with the pod's share as its virtio-fs device.
    assert_eq!(run.expect_marker("sandbox-rc"), "0", "{out}");
    assert_eq!(run.expect_marker("sandbox-status"), "RUNNING", "{out}");
    assert_eq!(run.expect_marker("sandbox-vmm-fs"), "1", "{out}");
    // The pod's VMM runs jailed under an id of its own (real, effective, saved, fs):
    // 2^31 + its vsock CID - 1000.
    let cid: u64 = run.expect_marker("sandbox-vmm-cid").parse().expect("cid");
    let id = (1u64 << 31) + cid - 1000;
    let ids = format!("{id},{id},{id},{id}");
    assert_eq!(run.expect_marker("sandbox-vmm-uids"), ids, "{out}");
    assert_eq!(run.expect_marker("sandbox-vmm-gids"), ids, "{out}");

    // Both containers join it: one VMM, one shim for the whole pod.
    assert_eq!(run.expect_marker("c1-rc"), "0", "{out}\n{}", run.stderr);
    assert_eq!(run.expect_marker("c2-rc"), "0", "{out}\n{}", run.stderr);
    assert_eq!(run.expect_marker("c1-status"), "RUNNING", "{out}");
    assert_eq!(run.expect_marker("c2-status"), "RUNNING", "{out}");
    assert_eq!(run.expect_marker("pod-vmms"), "1", "{out}");
    assert_eq!(run.expect_marker("pod-shims"), "1", "{out}");
    assert_eq!(
        run.expect_marker("pod-virtiofsd-sockets"),
        "1",
        "one virtio-fs server for the whole pod:\n{out}"
    );
    assert_eq!(
        run.expect_marker("c1-task-pid"),
        run.expect_marker("sandbox-task-pid"),
        "a pod's tasks report the pod VMM's pid:\n{out}"
    );

    // Namespaces, seen by an exec in each container (which also shows exec works).
    for c in ["pod1", "c1", "c2"] {
        assert_eq!(run.expect_marker(&format!("exec-{c}-rc")), "0", "{out}");
    }
    let ns = |c: &str, n: &str| run.expect_marker(&format!("{c}-{n}")).to_string();
    for shared in ["net", "uts", "ipc", "hostname"] {
        let v = ns("pod1", shared);
        assert!(!v.is_empty(), "{shared} of pod1 empty:\n{out}");
        assert_eq!(ns("c1", shared), v, "c1 shares the pod's {shared}:\n{out}");
        assert_eq!(ns("c2", shared), v, "c2 shares the pod's {shared}:\n{out}");
    }
    let (a, b, c) = (ns("pod1", "mnt"), ns("c1", "mnt"), ns("c2", "mnt"));
    assert!(
        a != b && b != c && a != c,
        "each container has its own mount namespace:\n{out}"
    );
    // c1 has its own PID namespace; c2's spec names the sandbox's (shareProcessNamespace).
    assert_ne!(ns("c1", "pid"), ns("pod1", "pid"), "{out}");
    assert_eq!(
        ns("c2", "pid"),
        ns("pod1", "pid"),
        "c2 shares the pod's PID namespace:\n{out}"
    );
    // c2's file is in c2's root file system only.
    assert_eq!(run.marker("c2-sees"), Some("/c2-file"), "{out}");
    assert_eq!(run.marker("c1-sees"), None, "{out}");
    assert_eq!(run.marker("pod1-sees"), None, "{out}");

    // c2 reaches c1's listener over the pod's localhost.
    assert!(
        run.section("localhost").contains(&"pod-net-ok"),
        "nc over localhost between pod containers:\n{out}"
    );
    assert_eq!(run.expect_marker("nc-rc"), "0", "{out}");

    // The guest clock is the node's (SetGuestDateTime after boot and after Resume).
    for k in ["clock-skew", "resume-clock-skew"] {
        let skew: i64 = run
            .expect_marker(k)
            .parse()
            .unwrap_or_else(|_| panic!("{k} is not a number:\n{out}"));
        assert!(skew.abs() <= 10, "{k}={skew} s:\n{out}");
    }
    assert_eq!(run.expect_marker("resume-rc"), "0", "{out}");
    assert_ne!(run.expect_marker("clock-syncs-boot"), "0", "{out}");
    assert_ne!(run.expect_marker("clock-syncs-resume"), "0", "{out}");

    // Deleting a pod container leaves the VM and the other containers running.
    assert_eq!(run.expect_marker("delete-c2-rc"), "0", "{out}");
    assert_eq!(run.expect_marker("after-c2-vmms"), "1", "{out}");
    assert_eq!(
        run.expect_marker("after-c2-sandbox-status"),
        "RUNNING",
        "{out}"
    );
    assert_eq!(run.expect_marker("after-c2-c1-status"), "RUNNING", "{out}");
    assert!(
        run.section("delete-container").contains(&"c1-still-alive"),
        "{out}"
    );
    assert_eq!(run.expect_marker("after-c2-exec-rc"), "0", "{out}");

    // A container whose sandbox is not running: clear error, nothing left (its shim
    // exits; the pod's VM is untouched).
    assert_ne!(run.expect_marker("bad-rc"), "0", "{out}");
    let bad = run.section("bad-sandbox").join("\n");
    assert!(
        bad.contains("sandbox nosuchpod is not running"),
        "the error names the missing sandbox:\n{bad}"
    );
    assert_eq!(run.expect_marker("bad-task"), "0", "{out}");
    assert_eq!(run.expect_marker("bad-shims"), "1", "{out}");
    assert_eq!(run.expect_marker("bad-vmms"), "1", "{out}");

    // A pod container whose command is missing: runc's message, the pod goes on, and the
    // same id can be created again (its entry in the pod's share was removed).
    assert_ne!(run.expect_marker("badcmd-rc"), "0", "{out}");
    let badcmd = run.section("bad-command").join("\n");
    assert!(
        badcmd.contains("executable file not found"),
        "missing command in a pod container:\n{badcmd}"
    );
    assert_eq!(
        run.expect_marker("badcmd-sandbox-status"),
        "RUNNING",
        "{out}"
    );
    assert_eq!(run.expect_marker("badcmd-vmms"), "1", "{out}");
    assert_eq!(run.expect_marker("retry-rc"), "0", "{out}");
    assert_eq!(run.expect_marker("retry-status"), "RUNNING", "{out}");

    // The sandbox's init ending does not stop the VM; deleting the sandbox does, and the
    // container still in it is then reported stopped and can be deleted.
    assert_eq!(
        run.expect_marker("sandbox-killed-status"),
        "STOPPED",
        "{out}"
    );
    assert_eq!(run.expect_marker("sandbox-killed-vmms"), "1", "{out}");
    assert_eq!(run.expect_marker("delete-sandbox-rc"), "0", "{out}");
    assert_eq!(run.expect_marker("after-sandbox-vmms"), "0", "{out}");
    assert_eq!(
        run.expect_marker("after-sandbox-c1-status"),
        "STOPPED",
        "{out}"
    );
    assert_eq!(run.expect_marker("delete-c1-rc"), "0", "{out}");

    assert_eq!(run.expect_marker("tasks"), "0", "{out}");
    assert_eq!(run.expect_marker("leftovers-rc"), "0", "{out}");
}

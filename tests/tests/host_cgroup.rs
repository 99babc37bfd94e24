//! The sandbox's host cgroup (tests/scripts/host-cgroup.sh, one node boot): the shim, kata-vmm
//! and virtiofsd of a kata sandbox run in the cgroup the sandbox's spec names (containerd's
//! `/<namespace>/<id>` for plain `ctr`, `<pod cgroup>/<sandbox id>` as CRI gives it), which
//! is gone after delete; a pod cgroup with a memory limit (as the kubelet makes it) accounts
//! the VMM's memory, and when the guest fills memory beyond that limit the host OOM-kills
//! inside the pod cgroup and the task ends; a killed shim's cleanup empties and removes the
//! cgroup; a Create that containerd gives up on (its deadline passes while the VM boots) is
//! finished and undone by the shim, which then exits; nothing is left (processes, mounts,
//! sockets, cgroups).
use kata_rs_tests::{node_run, require_kata_artifacts};

/// The processes a sandbox has on the host, as the script lists them (their `comm`, sorted,
/// each once: the shim's is cut to 15 characters; virtiofsd runs as two processes).
const SANDBOX_PROCS: &str = "containerd-shim,kata-vmm,virtiofsd";

/// How far the VMM's RSS may be above the pod cgroup's count (see the assertion).
const RSS_SLACK_KIB: u64 = 1024;

#[test]
fn sandbox_host_processes_live_in_the_pod_cgroup() {
    require_kata_artifacts();
    let run = node_run("host-cgroup.sh", &[]);
    run.assert_success();
    let m = |k: &str| run.expect_marker(k).to_string();
    // The sandbox's processes; KVM's per-VM kernel threads (kvm-nx-lpage-recovery-PID on
    // CPUs with the NX huge page mitigation) join the VMM's cgroup too, and are left out.
    let procs = |k: &str| -> String {
        m(k).split(',')
            .filter(|n| !n.starts_with("kvm-"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let num = |k: &str| -> u64 {
        m(k).parse()
            .unwrap_or_else(|_| panic!("{k} is not a number:\n{}", run.stdout))
    };

    // Plain ctr: containerd's cgroupsPath for the container, like runc.
    assert_eq!(m("plain-status"), "RUNNING", "{}", run.stdout);
    assert_eq!(m("plain-vmm-cgroup"), "/kata-rs-test/cg1", "{}", run.stdout);
    assert_eq!(procs("plain-procs"), SANDBOX_PROCS, "{}", run.stdout);
    assert_eq!(m("shim-cgroup"), "/kata-rs-test/cg1");
    assert_eq!(m("virtiofsd-cgroup"), "/kata-rs-test/cg1");
    assert_eq!(
        m("shim-socket-mode"),
        "600",
        "only root (containerd) may connect to the shim's socket"
    );
    assert_eq!(
        m("plain-after"),
        "gone",
        "the sandbox's cgroup is removed at delete"
    );

    // A pod cgroup with a limit.
    assert_eq!(m("pod-status"), "RUNNING", "{}", run.stdout);
    assert_eq!(m("pod-vmm-cgroup"), "/kata-rs-test/podcg/sb2");
    assert_eq!(procs("pod-procs"), SANDBOX_PROCS, "{}", run.stdout);
    let pod = num("pod-memory-kib");
    let vmm = num("vmm-rss-kib");
    let fsd = num("virtiofsd-rss-kib");
    // The RSS figures are anonymous + shared memory (not file-backed pages, which may be
    // charged to another cgroup); they count the shared guest RAM in both processes, the
    // cgroup counts each page once, so the pod holds at least the larger of the two, and the
    // VMM's is no small figure (guest RAM the host backs). The two counts are kept apart
    // (/proc/PID/status's RSS counters are batched; pages a process faulted before it joined
    // the cgroup stay charged where they were) and CI and the node saw the cgroup 24 to 92 KiB below the
    // VMM's: RSS_SLACK_KIB allows for that, far below what a VMM outside the pod cgroup would
    // leave out (its whole guest RAM).
    assert!(
        vmm > 16 * 1024 && pod + RSS_SLACK_KIB >= vmm.max(fsd),
        "the pod cgroup must account the VMM's memory: pod {pod} KiB, VMM RSS {vmm} KiB, \
         virtiofsd RSS {fsd} KiB:\n{}",
        run.stdout
    );
    assert_eq!(m("pod-oom-kill-before"), "0", "{}", run.stdout);
    // The guest used more than the pod may: the host's OOM killer acts in the pod cgroup.
    assert!(
        num("pod-oom-kill") >= 1,
        "the pod's memory limit was not enforced on the VMM:\n{}",
        run.stdout
    );
    assert_eq!(m("vmm-alive"), "no", "{}", run.stdout);
    assert_eq!(
        m("pod-status-after-fill"),
        "STOPPED",
        "the task ends with its VM:\n{}",
        run.stdout
    );
    assert!(
        num("pod-memory-peak-kib") <= num("pod-memory-max-mib") * 1024,
        "the pod never held more than its limit:\n{}",
        run.stdout
    );
    assert_eq!(m("pod-delete-rc"), "0", "{}", run.stdout);
    assert_eq!(m("pod-sandbox-after"), "gone");
    assert_eq!(
        m("pod-parent-after"),
        "present",
        "the pod cgroup is the kubelet's: kata-rs leaves it"
    );

    // A lost shim.
    assert_eq!(m("lost-cgroup"), "/kata-rs-test/cg3");
    assert_eq!(procs("lost-procs"), SANDBOX_PROCS);
    assert_eq!(m("lost-after"), "gone", "{}", run.stdout);

    // containerd gave up on a Create while the VM booted.
    assert_ne!(
        m("cancelled-run-rc"),
        "0",
        "ctr's deadline must fail the run"
    );
    assert_eq!(m("cancelled-shims"), "0", "the shim exits:\n{}", run.stdout);
    assert_eq!(m("cancelled-vmms"), "0", "{}", run.stdout);
    assert_eq!(
        run.marker("cancelled-state").unwrap_or(""),
        "",
        "no sandbox state left:\n{}",
        run.stdout
    );
    assert_eq!(m("cancelled-cgroup"), "gone");

    assert_eq!(m("leftovers-rc"), "0", "leftovers:\n{}", run.stdout);
}

//! The CRI churn (issue 11; tests/scripts/cri-churn.sh, one node boot): 50 kata pods, two at a
//! time, each created and removed through containerd's CRI the way the kubelet does it
//! (RunPodSandbox, a container, ExecSync, StopPodSandbox, RemovePodSandbox). Every pod must
//! work and go, and afterwards the node must hold nothing of them: no pod, container or task
//! that CRI lists, no task bundle, no kata-rs process, mount, socket, sandbox state, console
//! log, host cgroup, tap or qdisc.
use kata_rs_tests::{build_cri_tools, node_run_with_extra, require_kata_artifacts, Checks};

/// Pods created and removed, and how many at a time.
const PODS: u32 = 50;
const PARALLEL: u32 = 2;

#[test]
fn fifty_cri_pods_created_and_removed_leave_nothing() {
    require_kata_artifacts();
    let client = build_cri_tools().client;
    let path = client.to_str().expect("UTF-8 path");
    let run = node_run_with_extra(
        "cri-churn.sh",
        &[path, &PODS.to_string(), &PARALLEL.to_string()],
        &[path],
    );
    run.assert_success();
    let mut c = Checks::new(&run);
    c.eq("cri-containerd", "ok", "containerd with the CRI plugin");
    c.eq("churn-ok", &PODS.to_string(), "pods that went through");
    c.eq(
        "churn-failed",
        "0",
        "pods that failed a step (see the churn| lines)",
    );
    c.eq("churn-rc", "0", "the CRI client");
    if let Some(ready) = c.num("cri-kata-agent-ready") {
        c.check(
            ready >= u64::from(PODS),
            format!("every pod had its own VM whose agent answered: {ready} of {PODS}"),
        );
    }
    c.eq("churn-pods-left", "0", "pods CRI still lists");
    c.eq("churn-containers-left", "0", "containers CRI still lists");
    c.eq("cri-tasks", "0", "tasks containerd still lists");
    c.eq(
        "cri-bundles",
        "0",
        "task bundles in the CRI containerd's state",
    );
    c.eq(
        "cri-mounts",
        "0",
        "mounts under the CRI containerd's directories",
    );
    c.eq("leftovers-rc", "0", "kata-rs leftovers on the node");
    c.finish("fifty_cri_pods_created_and_removed_leave_nothing");
}

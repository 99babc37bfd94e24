//! The fault matrix (issue 11; tests/scripts/faults.sh, one node boot): SIGKILL of the VMM,
//! the shim and containerd while a kata container is being created, while an exec'd process
//! runs and while a delete waits for the guest; a guest that stops answering; a full file
//! system under the shim's state directory and under the console logs; a killed shim of a
//! container with a pod network. After each fault, as a user sees it: the command in flight
//! fails with an error (or, for a full console disk, works), containerd shows the right state,
//! a later delete works, and the node holds nothing of the container: no process, mount,
//! socket, sandbox state, console log, task bundle, host cgroup, tap or ingress qdisc.
use kata_rs_tests::{node_run_with_extra, require_kata_artifacts, Checks};

/// iproute2's tc: it shows ingress qdiscs in a namespace (busybox's cannot).
const TC: &str = "/usr/sbin/tc";

/// Every case ends with a delete that works and nothing left on the node.
fn clean_end(c: &mut Checks, case: &str) {
    let rm = c.m(&format!("{case}-rm-rc"));
    c.check(
        rm == "0" || rm == "none",
        format!("{case}: a later `ctr task rm -f` failed ({case}-rm-rc={rm})"),
    );
    let rm = c.m(&format!("{case}-container-rm-rc"));
    c.check(
        rm == "0" || rm == "none",
        format!("{case}: ctr container rm failed ({case}-container-rm-rc={rm})"),
    );
    c.eq(
        &format!("{case}-procs-gone"),
        "yes",
        &format!("{case}: kata-vmm, shim and virtiofsd processes end"),
    );
    c.eq(
        &format!("{case}-leftovers-rc"),
        "0",
        &format!("{case}: leftovers on the node (see the `{case}| ` lines)"),
    );
}

/// The marker is anything but `0` (a command that had to fail).
fn failed(c: &mut Checks, key: &str, what: &str) {
    let v = c.m(key);
    c.check(
        v != "0" && !v.starts_with("<no") && v != "still-running",
        format!("{what}: {key}={v}, expected a failure"),
    );
}

/// The case's lines with `PREFIX| ` joined (what ctr printed).
fn said(c: &Checks, prefix: &str) -> String {
    c.run.prefixed(prefix).join("\n")
}

#[test]
fn faults_leave_the_host_clean() {
    require_kata_artifacts();
    let run = node_run_with_extra("faults.sh", &[TC], &[TC]);
    run.assert_success();
    let mut c = Checks::new(&run);

    // During Create.
    for who in ["vmm", "shim", "containerd"] {
        let n = format!("create-{who}");
        c.eq(
            &format!("{n}-task-at-kill"),
            "gone",
            &format!("{n}: the kill came while Create was booting the VM"),
        );
        failed(&mut c, &format!("{n}-run-rc"), &format!("{n}: ctr run"));
        c.eq(
            &format!("{n}-status"),
            "gone",
            &format!("{n}: containerd has no task"),
        );
        clean_end(&mut c, &n);
    }
    let out = said(&c, "create-vmm-run");
    c.check(
        out.contains("kata-vmm") && out.contains("killed by signal 9"),
        format!("create-vmm: ctr run's error names the killed VMM:\n{out}"),
    );
    c.eq(
        "create-containerd-shim-exited",
        "yes",
        "create-containerd: the shim undoes the Create nobody waits for and exits",
    );
    c.eq("create-containerd-restarted", "yes", "containerd restarts");

    // During Exec.
    for who in ["vmm", "shim", "containerd"] {
        let n = format!("exec-{who}");
        c.eq(
            &format!("{n}-status-before"),
            "RUNNING",
            &format!("{n}: the container ran"),
        );
        c.eq(
            &format!("{n}-exec-started"),
            "yes",
            &format!("{n}: the exec'd process ran when the kill came"),
        );
        failed(
            &mut c,
            &format!("{n}-exec-rc"),
            &format!("{n}: ctr task exec"),
        );
        clean_end(&mut c, &n);
    }
    c.eq(
        "exec-vmm-exec-rc",
        "137",
        "exec-vmm: the exec'd process is reported killed",
    );
    c.eq("exec-vmm-status", "STOPPED", "exec-vmm: the task ended");
    let st = c.m("exec-shim-status");
    c.check(
        st == "gone" || st == "STOPPED",
        format!("exec-shim: the task no longer runs (exec-shim-status={st})"),
    );
    c.eq("exec-containerd-restarted", "yes", "containerd restarts");
    c.eq(
        "exec-containerd-status-restarted",
        "RUNNING",
        "exec-containerd: the container outlives containerd",
    );
    c.eq(
        "exec-containerd-exec2-rc",
        "0",
        "exec-containerd: exec works after the restart",
    );
    let out = c.m("exec-containerd-exec2-out");
    c.check(
        out.starts_with("after"),
        format!("exec-containerd: the new exec's output: {out}"),
    );

    // During Delete (the guest stopped answering, Delete is in its agent timeout).
    for who in ["vmm", "shim", "containerd"] {
        let n = format!("delete-{who}");
        c.eq(
            &format!("{n}-status-before"),
            "STOPPED",
            &format!("{n}: the container had exited"),
        );
        c.eq(
            &format!("{n}-rm-running"),
            "yes",
            &format!("{n}: ctr task rm was still waiting when the kill came"),
        );
        c.eq(
            &format!("{n}-status"),
            "gone",
            &format!("{n}: containerd has no task"),
        );
        clean_end(&mut c, &n);
    }
    c.eq(
        "delete-vmm-first-rm-rc",
        "0",
        "delete-vmm: the delete in flight completes when the VMM dies",
    );
    c.eq(
        "delete-containerd-shim-exited",
        "yes",
        "delete-containerd: the shim finishes the Delete nobody waits for and exits",
    );

    // A guest that stops answering.
    failed(&mut c, "frozen-exec-rc", "frozen: ctr task exec");
    let out = said(&c, "frozen-exec");
    c.check(
        out.contains("agent") && out.contains("did not answer within 15"),
        format!("frozen: the exec's error names the agent's timeout (15 s):\n{out}"),
    );
    if let Some(s) = c.num("frozen-exec-seconds") {
        c.check(
            s < 120,
            format!("frozen: exec gave up after {s} s, not at the 15 s agent timeout"),
        );
    }
    c.eq("frozen-rm-rc", "0", "frozen: ctr task rm -f");
    clean_end(&mut c, "frozen");

    // Full file systems.
    failed(&mut c, "enospc-state-run-rc", "enospc-state: ctr run");
    let out = said(&c, "enospc-state-run");
    c.check(
        out.contains("No space left on device") && out.contains("/full/state"),
        format!("enospc-state: the error names the full directory:\n{out}"),
    );
    c.eq(
        "enospc-state-state-entries",
        "0",
        "enospc-state: nothing left in the state directory",
    );
    clean_end(&mut c, "enospc-state");
    c.eq(
        "enospc-console-run-rc",
        "0",
        "enospc-console: a full console log disk does not stop containers",
    );
    let out = said(&c, "enospc-console-run");
    c.check(
        out.contains("hello-from-guest"),
        format!("enospc-console: the container's output:\n{out}"),
    );
    clean_end(&mut c, "enospc-console");

    // A killed shim of a container with a pod network.
    c.eq(
        "netns-shim-netns",
        "ok",
        "netns-shim: the namespace was made",
    );
    c.eq("netns-shim-run-rc", "0", "netns-shim: ctr run --with-ns");
    c.eq(
        "netns-shim-tap-before",
        "yes",
        "netns-shim: the shim made its tap",
    );
    c.eq(
        "netns-shim-ingress-before",
        "2",
        "netns-shim: ingress qdiscs on eth0 and the tap",
    );
    clean_end(&mut c, "netns-shim");
    c.eq(
        "netns-shim-tap-after",
        "no",
        "netns-shim: the lost shim's cleanup removes the tap",
    );
    c.eq(
        "netns-shim-ingress-after",
        "0",
        "netns-shim: and the ingress qdiscs",
    );

    c.finish("faults_leave_the_host_clean");
}

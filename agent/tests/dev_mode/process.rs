//! The process a spec asks for (user, capabilities, seccomp, rlimits) and the devices it may use.

use super::*;

#[tokio::test]
async fn process_semantics_caps_seccomp() {
    require_host!();
    let a = start_agent().await;
    let c = &a.client;
    let id = unique("sem");
    let mut spec = base_spec(&[
        "sh",
        "-c",
        "grep -E '^(Cap|NoNewPrivs)' /proc/self/status; id; mkdir /tmp/x; echo mkdir=$?; \
         touch /f; echo touch=$?; ulimit -n; cat /proc/self/oom_score_adj; umask; pwd",
    ]);
    spec["process"]["user"] = serde_json::json!({"uid": 1000, "gid": 1000,
        "additionalGids": [10, 20], "umask": 63});
    spec["process"]["cwd"] = "/tmp".into();
    spec["process"]["noNewPrivileges"] = true.into();
    spec["process"]["oomScoreAdj"] = 300.into();
    spec["process"]["rlimits"] =
        serde_json::json!([{"type": "RLIMIT_NOFILE", "soft": 123, "hard": 456}]);
    spec["process"]["capabilities"] = serde_json::json!({
        "bounding": ["CAP_KILL", "CAP_CHOWN"], "effective": ["CAP_KILL"],
        "permitted": ["CAP_KILL"], "inheritable": ["CAP_KILL"], "ambient": ["CAP_KILL"]});
    spec["root"]["readonly"] = true.into();
    spec["mounts"] = serde_json::json!([{"destination": "/tmp", "type": "tmpfs",
        "source": "tmpfs", "options": ["mode=1777"]}]);
    spec["linux"]["seccomp"] = serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]});
    run_spec(&a, &id, spec, false).await;
    let out = String::from_utf8(read_all(c, &id, false).await).unwrap();
    let err = String::from_utf8(read_all(c, &id, true).await).unwrap();
    assert_eq!(wait(c, &id).await, 0, "stdout {out} stderr {err}");
    for want in [
        "CapInh:\t0000000000000020",
        "CapPrm:\t0000000000000020",
        "CapEff:\t0000000000000020",
        "CapBnd:\t0000000000000021",
        "CapAmb:\t0000000000000020",
        "NoNewPrivs:\t1",
        "uid=1000 gid=1000 groups=10,20",
        "mkdir=1",
        "touch=1",
        "\n123\n",
        "\n300\n",
        "0077",
        "/tmp\n",
    ] {
        assert!(
            out.contains(want),
            "{want:?} missing in:\n{out}\nstderr: {err}"
        );
    }
    assert!(err.contains("Operation not permitted"), "{err}");
    assert!(err.contains("Read-only file system"), "{err}");
    let mut rm = RemoveContainerRequest::new();
    rm.container_id = id.clone();
    c.remove_container(ctx(), &rm).await.unwrap();
}

/// linux.resources.devices is enforced by the cgroup eBPF device program (deny all, allow
/// c 1:11 read, then runc's defaults: mknod of anything, /dev/null...), linux.devices nodes
/// are made with their numbers, mode and owner, and hooks are refused by name.
#[tokio::test]
async fn devices_cgroup_nodes_and_hooks() {
    require_host!();
    let a = start_agent().await;
    let c = &a.client;
    let id = unique("dev");
    let mut spec = base_spec(&[
        "sh",
        "-c",
        "stat -c '%t:%T %a %u:%g %F' /dev/ttyS0; true > /dev/ttyS0; echo open-ttyS0=$?; \
         mknod /tmp/sda b 8 0; echo mknod=$?; head -c 1 /tmp/sda; echo read-sda=$?; \
         mknod /tmp/kmsg c 1 11; true < /tmp/kmsg; echo kmsg-r=$?; true > /tmp/kmsg; \
         echo kmsg-w=$?; echo > /dev/null; echo null=$?",
    ]);
    spec["linux"]["resources"] = serde_json::json!({"devices": [
        {"allow": false, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 11, "access": "r"}]});
    spec["linux"]["devices"] = serde_json::json!([{"path": "/dev/ttyS0", "type": "c",
        "major": 4, "minor": 64, "fileMode": 416, "uid": 5, "gid": 6}]);
    run_spec(&a, &id, spec, false).await;
    let out = String::from_utf8(read_all(c, &id, false).await).unwrap();
    let err = String::from_utf8(read_all(c, &id, true).await).unwrap();
    assert_eq!(wait(c, &id).await, 0, "stdout {out} stderr {err}");
    assert_eq!(
        out,
        "4:40 640 5:6 character special file\nopen-ttyS0=1\nmknod=0\nread-sda=1\n\
         kmsg-r=0\nkmsg-w=1\nnull=0\n",
        "stderr: {err}"
    );
    for want in [
        "/dev/ttyS0: Operation not permitted",
        "/tmp/sda: Operation not permitted",
    ] {
        assert!(err.contains(want), "{want:?} missing in {err}");
    }
    let mut rm = RemoveContainerRequest::new();
    rm.container_id = id.clone();
    c.remove_container(ctx(), &rm).await.unwrap();

    // Hooks would run in the VM: refused, naming the field; nothing is left behind.
    let id = unique("hooks");
    let rootfs = busybox_rootfs(a.dir.path(), &id);
    let mut spec = base_spec(&["true"]);
    spec["hooks"] = serde_json::json!({"createRuntime": [], "poststart": [{"path": "/bin/true"}]});
    let mut r = create_req(&id, &rootfs, &["true"], false);
    r.oci_spec = spec.to_string().into_bytes();
    let e = err_msg(c.create_container(ctx(), &r).await.unwrap_err());
    assert!(
        e.contains("hooks.poststart is not supported by kata-rs (hooks would run inside the VM"),
        "{e}"
    );
    assert!(!cgroup_dir(&id).exists());
}

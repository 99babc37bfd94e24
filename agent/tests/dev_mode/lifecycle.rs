//! A container's life: output and exit status, a missing command, stdin, signals, bad requests.

use super::*;

#[tokio::test]
async fn echo_hello_exit_3() {
    require_host!();
    let a = start_agent().await;
    let c = &a.client;
    let check = c.check(ctx(), &CheckRequest::new()).await.unwrap();
    assert_eq!(check.version, env!("CARGO_PKG_VERSION"));
    assert!(!check.kernel_release.is_empty());

    let id = unique("hello");
    let rootfs = busybox_rootfs(a.dir.path(), &id);
    let req = create_req(
        &id,
        &rootfs,
        &["sh", "-c", "echo hello; hostname >&2; echo $$ >&2; exit 3"],
        false,
    );
    c.create_container(ctx(), &req).await.expect("create");
    assert!(cgroup_dir(&id).is_dir(), "cgroup created");
    let pid = c.start_container(ctx(), &creq(&id)).await.unwrap().pid;
    assert!(pid > 1);
    let out = read_all(c, &id, false).await;
    assert_eq!(String::from_utf8_lossy(&out), "hello\n");
    let err = read_all(c, &id, true).await;
    // Own UTS namespace (hostname) and own PID namespace (the shell is PID 1).
    assert_eq!(String::from_utf8_lossy(&err), "kata-test\n1\n");
    assert_eq!(wait(c, &id).await, 3);
    // Starting twice is refused.
    let e = c.start_container(ctx(), &creq(&id)).await.unwrap_err();
    assert!(err_msg(e).contains("not in created state"));

    let mut rm = RemoveContainerRequest::new();
    rm.container_id = id.clone();
    c.remove_container(ctx(), &rm).await.expect("remove");
    assert!(!cgroup_dir(&id).exists(), "cgroup removed");
    // The rootfs is the host's (through the share): never deleted by the agent, and no
    // mount of it is left in the agent's namespace.
    assert!(rootfs.join("bin/busybox").is_file(), "rootfs kept");
    let agent_mounts =
        std::fs::read_to_string(format!("/proc/{}/mountinfo", a.child.id())).unwrap();
    assert!(
        !agent_mounts.contains(rootfs.to_str().unwrap()),
        "no mount left"
    );
    assert!(children_of(a.child.id()).is_empty());
}

#[tokio::test]
async fn missing_command_leaves_nothing_behind() {
    require_host!();
    let a = start_agent().await;
    let c = &a.client;
    let id = unique("nocmd");
    let rootfs = busybox_rootfs(a.dir.path(), &id);
    let req = create_req(&id, &rootfs, &["nosuchcmd", "arg"], false);
    let e = c.create_container(ctx(), &req).await.unwrap_err();
    let msg = err_msg(e);
    eprintln!("CreateContainer error: {msg}");
    assert!(
        msg.contains(r#"exec: "nosuchcmd": executable file not found in $PATH"#),
        "{msg}"
    );
    assert!(!cgroup_dir(&id).exists(), "no cgroup left behind");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !children_of(a.child.id()).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(children_of(a.child.id()).is_empty(), "no process left");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(rootfs.to_str().unwrap()), "no mount left");
    let agent_mounts =
        std::fs::read_to_string(format!("/proc/{}/mountinfo", a.child.id())).unwrap();
    assert!(!agent_mounts.contains(rootfs.to_str().unwrap()));
    // The id is free again and the container was never registered.
    let e = c.start_container(ctx(), &creq(&id)).await.unwrap_err();
    assert!(err_msg(e).contains("not found"));
    let ok = create_req(&id, &rootfs, &["true"], false);
    let e = c.create_container(ctx(), &ok).await.unwrap_err();
    assert!(
        err_msg(e).contains("executable file not found"),
        "true is no applet here"
    );
}

#[tokio::test]
async fn stdin_signal_and_bad_requests() {
    require_host!();
    let a = start_agent().await;
    let c = &a.client;

    // stdin → cat → stdout
    let id = unique("cat");
    let rootfs = busybox_rootfs(a.dir.path(), &id);
    c.create_container(ctx(), &create_req(&id, &rootfs, &["cat"], true))
        .await
        .unwrap();
    c.start_container(ctx(), &creq(&id)).await.unwrap();
    let mut w = WriteStreamRequest::new();
    w.container_id = id.clone();
    w.data = b"ping\n".to_vec();
    assert_eq!(c.write_stdin(ctx(), &w).await.unwrap().len, 5);
    let mut cl = CloseStdinRequest::new();
    cl.container_id = id.clone();
    c.close_stdin(ctx(), &cl).await.unwrap();
    assert_eq!(read_all(c, &id, false).await, b"ping\n");
    assert_eq!(wait(c, &id).await, 0);

    // A long sleep killed by SIGKILL: 128 + 9.
    let id2 = unique("sleep");
    let rootfs2 = busybox_rootfs(a.dir.path(), &id2);
    c.create_container(
        ctx(),
        &create_req(&id2, &rootfs2, &["sleep", "1000"], false),
    )
    .await
    .unwrap();
    c.start_container(ctx(), &creq(&id2)).await.unwrap();
    let mut s = SignalProcessRequest::new();
    s.container_id = id2.clone();
    s.signal = 9;
    c.signal_process(ctx(), &s).await.unwrap();
    assert_eq!(wait(c, &id2).await, 137);

    // Unknown exec ids, bad signals, ids and specs are refused clearly.
    let mut s = SignalProcessRequest::new();
    s.container_id = id2.clone();
    s.exec_id = "e1".into();
    s.signal = 15;
    let e = err_msg(c.signal_process(ctx(), &s).await.unwrap_err());
    assert!(e.contains("exec process \"e1\" not found"), "{e}");
    s.exec_id.clear();
    s.signal = 999;
    let e = err_msg(c.signal_process(ctx(), &s).await.unwrap_err());
    assert!(e.contains("not a valid signal"), "{e}");
    let e = err_msg(c.start_container(ctx(), &creq("../x")).await.unwrap_err());
    assert!(e.contains("invalid"), "{e}");
    let mut bad = create_req(&unique("bad"), &rootfs2, &["sh"], false);
    bad.oci_spec =
        br#"{"ociVersion":"1.0.2","process":{"args":["sh"],"cwd":"/","user":{"uid":0,"gid":0}},
        "linux":{"namespaces":[{"type":"mount"},{"type":"wormhole"}]}}"#
            .to_vec();
    let e = err_msg(c.create_container(ctx(), &bad).await.unwrap_err());
    assert!(
        e.contains("invalid OCI spec") && e.contains("wormhole"),
        "{e}"
    );
    let dup = create_req(&id2, &rootfs2, &["sh"], false);
    let e = err_msg(c.create_container(ctx(), &dup).await.unwrap_err());
    assert!(e.contains("already exists"), "{e}");

    // A created-but-never-started container is removed cleanly too.
    let id3 = unique("never");
    let rootfs3 = busybox_rootfs(a.dir.path(), &id3);
    c.create_container(ctx(), &create_req(&id3, &rootfs3, &["sleep", "1"], false))
        .await
        .unwrap();
    for id in [&id, &id2, &id3] {
        let mut rm = RemoveContainerRequest::new();
        rm.container_id = id.to_string();
        c.remove_container(ctx(), &rm).await.expect("remove");
        assert!(!cgroup_dir(id).exists());
    }
    assert!(children_of(a.child.id()).is_empty());

    // Shutdown in dev mode: the agent exits 0.
    c.shutdown(ctx(), &Empty::new()).await.unwrap();
    let mut a = a;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(st) = a.child.try_wait().unwrap() {
            assert!(st.success());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "agent did not exit after Shutdown"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

//! Exec'd processes, terminals, pause and resume, statistics.

use super::*;

#[tokio::test]
async fn exec_tty_pause_stats() {
    require_host!();
    let a = start_agent().await;
    let c = &a.client;
    let id = unique("exec");
    let mut spec = base_spec(&["sleep", "1000"]);
    spec["mounts"] = serde_json::json!([{"destination": "/tmp", "type": "tmpfs",
        "source": "tmpfs", "options": ["mode=1777"]}]);
    run_spec(&a, &id, spec, false).await;

    // A plain exec joins the container: its hostname, its pid namespace, its cwd, our user.
    let r = exec_req(
        &id,
        "e1",
        &[
            "sh",
            "-c",
            "hostname; echo pid1=$(cat /proc/1/cmdline); pwd; id; echo $FOO",
        ],
        false,
    );
    let pid = c.exec_process(ctx(), &r).await.expect("exec").pid;
    assert!(pid > 1);
    let out = read_exec(c, &id, "e1").await;
    assert_eq!(wait_exec(c, &id, "e1").await, 0);
    assert_eq!(
        out,
        "kata-test\npid1=sleep1000\n/tmp\nuid=1000 gid=1000 groups=10\nbar\n"
    );
    // The same exec id may be reused once the first one exited; a missing command fails.
    let r = exec_req(&id, "e1", &["nosuchcmd"], false);
    let e = err_msg(c.exec_process(ctx(), &r).await.unwrap_err());
    assert!(e.contains("executable file not found"), "{e}");

    // A terminal exec: stdin and stdout through the pty, the window size from TtyWinResize.
    let mut r = exec_req(
        &id,
        "t1",
        &["sh", "-c", "read x; stty size; tty; echo got=$x"],
        true,
    );
    r.stdin = true;
    c.exec_process(ctx(), &r).await.expect("tty exec");
    let mut rs = TtyWinResizeRequest::new();
    rs.container_id = id.clone();
    rs.exec_id = "t1".into();
    rs.rows = 40;
    rs.columns = 100;
    c.tty_win_resize(ctx(), &rs).await.expect("resize");
    let mut w = WriteStreamRequest::new();
    w.container_id = id.clone();
    w.exec_id = "t1".into();
    w.data = b"hello\n".to_vec();
    c.write_stdin(ctx(), &w).await.expect("write tty");
    let out = read_exec(c, &id, "t1").await;
    assert_eq!(wait_exec(c, &id, "t1").await, 0);
    assert!(out.contains("40 100"), "{out}");
    // The pty lives in the container's devpts, as with runc.
    assert!(out.contains("/dev/pts/0"), "{out}");
    assert!(out.contains("got=hello"), "{out}");

    // A terminal container init: resized before start, its own devpts.
    let tid = unique("tty");
    let rootfs = busybox_rootfs(a.dir.path(), &tid);
    let mut r = create_req(&tid, &rootfs, &["sh", "-c", "tty; stty size"], false);
    r.terminal = true;
    c.create_container(ctx(), &r).await.expect("create tty");
    let mut rs = TtyWinResizeRequest::new();
    rs.container_id = tid.clone();
    rs.rows = 24;
    rs.columns = 80;
    c.tty_win_resize(ctx(), &rs).await.expect("resize init");
    c.start_container(ctx(), &creq(&tid)).await.unwrap();
    let out = String::from_utf8(read_all(c, &tid, false).await).unwrap();
    assert_eq!(wait(c, &tid).await, 0);
    assert_eq!(out, "/dev/pts/0\r\n24 80\r\n");
    assert!(
        read_all(c, &tid, true).await.is_empty(),
        "no stderr with a tty"
    );
    let mut rm = RemoveContainerRequest::new();
    rm.container_id = tid.clone();
    c.remove_container(ctx(), &rm).await.unwrap();

    // ListProcesses, Pause/Resume, Stats.
    let procs = c.list_processes(ctx(), &creq(&id)).await.unwrap().pids;
    assert_eq!(procs.len(), 1, "{procs:?}");
    c.pause_container(ctx(), &creq(&id)).await.expect("pause");
    let ev = std::fs::read_to_string(cgroup_dir(&id).join("cgroup.events")).unwrap();
    assert!(ev.contains("frozen 1"), "{ev}");
    let r = exec_req(&id, "frozen", &["true"], false);
    let e = err_msg(c.exec_process(ctx(), &r).await.unwrap_err());
    assert!(e.contains("paused"), "{e}");
    c.resume_container(ctx(), &creq(&id)).await.expect("resume");
    let ev = std::fs::read_to_string(cgroup_dir(&id).join("cgroup.events")).unwrap();
    assert!(ev.contains("frozen 0"), "{ev}");
    c.stats_container(ctx(), &creq(&id)).await.expect("stats");
    let mut up = UpdateContainerRequest::new();
    up.container_id = id.clone();
    up.linux_resources = b"{\"memory\": \"x\"}".to_vec();
    let e = err_msg(c.update_container(ctx(), &up).await.unwrap_err());
    assert!(e.contains("invalid linux_resources"), "{e}");

    // Remove kills the container and everything exec'd in it.
    let r = exec_req(&id, "bg", &["sleep", "1000"], false);
    c.exec_process(ctx(), &r).await.expect("exec sleep");
    let mut rm = RemoveContainerRequest::new();
    rm.container_id = id.clone();
    c.remove_container(ctx(), &rm).await.unwrap();
    assert!(!cgroup_dir(&id).exists());
    assert!(children_of(a.child.id()).is_empty());
}

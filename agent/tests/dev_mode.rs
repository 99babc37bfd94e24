//! Integration test: runs the real `kata-agent` binary in development mode
//! (`--listen unix://...`) as root and drives it through the ttrpc API with a busybox
//! container. Needs root, mount/pid/uts/ipc namespaces, a cgroup v2 hierarchy and
//! /bin/busybox; when the host lacks one of them the test fails and says which (never a silent skip).

use std::io::{BufRead, BufReader};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kata_rs_protocol::agent::*;
use kata_rs_protocol::agent_ttrpc::AgentServiceClient;
use ttrpc::context;

fn missing_prerequisite() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    if !Path::new("/bin/busybox").exists() {
        return Some("/bin/busybox missing (apt-get install busybox-static)".into());
    }
    let ok = Command::new("unshare")
        .args(["-mpuif", "--mount-proc", "true"])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        return Some("host refuses `unshare -mpuif --mount-proc true` (namespaces)".into());
    }
    if kata_rs_agent::cgroup::detect_root().is_none() {
        return Some("no cgroup v2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified".into());
    }
    None
}

macro_rules! require_host {
    () => {
        if let Some(why) = missing_prerequisite() {
            panic!("prerequisite for the agent dev-mode tests is missing: {why}");
        }
    };
}

struct AgentProc {
    child: Child,
    client: AgentServiceClient,
    dir: tempfile::TempDir,
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_agent() -> AgentProc {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let addr = format!("unix://{}", sock.display());
    let mut child = Command::new(env!("CARGO_BIN_EXE_kata-agent"))
        .args(["--listen", &addr, "--log", "info", "--share-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn kata-agent");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), kata_rs_protocol::guest::READY_LINE);
    let c = ttrpc::r#async::Client::connect(&addr)
        .await
        .expect("connect");
    AgentProc {
        child,
        client: AgentServiceClient::new(c),
        dir,
    }
}

fn ctx() -> context::Context {
    context::with_timeout(60_000_000_000)
}

/// A busybox root file system under `dir/<id>/rootfs` (`dir` is the agent's
/// `--share-dir`, the guest's virtio-fs share).
fn busybox_rootfs(dir: &Path, id: &str) -> PathBuf {
    let root = dir.join(id).join("rootfs");
    for d in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for applet in [
        "sh", "cat", "sleep", "hostname", "ls", "id", "grep", "mkdir", "touch", "stty", "tty",
        "echo", "stat", "mknod", "head",
    ] {
        symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    root
}

fn spec_json(args: &[&str]) -> Vec<u8> {
    serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {"args": args, "cwd": "/", "env": ["PATH=/bin", "HOME=/"],
                    "user": {"uid": 0, "gid": 0}},
        "root": {"path": "rootfs"},
        "hostname": "kata-test",
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "uts"},
                           {"type": "ipc"}, {"type": "network"}],
            "maskedPaths": ["/proc/kcore"],
            "readonlyPaths": ["/proc/sys"]
        }
    })
    .to_string()
    .into_bytes()
}

fn unique(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

fn create_req(id: &str, rootfs: &Path, args: &[&str], stdin: bool) -> CreateContainerRequest {
    let mut r = CreateContainerRequest::new();
    r.container_id = id.into();
    r.oci_spec = spec_json(args);
    r.rootfs_path = rootfs.to_string_lossy().into_owned();
    r.stdin = stdin;
    r
}

fn creq(id: &str) -> ContainerRequest {
    let mut r = ContainerRequest::new();
    r.container_id = id.into();
    r
}

fn err_msg(e: ttrpc::Error) -> String {
    match e {
        ttrpc::Error::RpcStatus(s) => s.message().to_string(),
        other => format!("{other:?}"),
    }
}

async fn read_all(c: &AgentServiceClient, id: &str, stderr: bool) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut r = ReadStreamRequest::new();
        r.container_id = id.into();
        r.len = 1 << 20; // capped by the agent
        let resp = if stderr {
            c.read_stderr(ctx(), &r).await
        } else {
            c.read_stdout(ctx(), &r).await
        }
        .expect("read stream");
        if resp.data.is_empty() {
            return out;
        }
        out.extend_from_slice(&resp.data);
    }
}

async fn wait(c: &AgentServiceClient, id: &str) -> i32 {
    let mut r = WaitProcessRequest::new();
    r.container_id = id.into();
    c.wait_process(ctx(), &r).await.expect("wait").status
}

fn cgroup_dir(id: &str) -> PathBuf {
    kata_rs_agent::cgroup::detect_root()
        .unwrap()
        .join("kata-rs")
        .join(id)
}

/// Pids whose parent is `ppid`.
fn children_of(ppid: u32) -> Vec<u32> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the parenthesised comm: state ppid ...
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let parent: u32 = rest.split(' ').nth(1).unwrap().parse().unwrap();
        if parent == ppid {
            v.push(pid);
        }
    }
    v
}

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

/// Creates and starts a container from a custom spec.
async fn run_spec(a: &AgentProc, id: &str, spec: serde_json::Value, stdin: bool) {
    let rootfs = busybox_rootfs(a.dir.path(), id);
    let mut r = create_req(id, &rootfs, &["true"], stdin);
    r.oci_spec = spec.to_string().into_bytes();
    a.client.create_container(ctx(), &r).await.expect("create");
    a.client
        .start_container(ctx(), &creq(id))
        .await
        .expect("start");
}

fn base_spec(args: &[&str]) -> serde_json::Value {
    serde_json::from_slice(&spec_json(args)).unwrap()
}

async fn read_exec(c: &AgentServiceClient, id: &str, exec_id: &str) -> String {
    let mut out = Vec::new();
    loop {
        let mut r = ReadStreamRequest::new();
        r.container_id = id.into();
        r.exec_id = exec_id.into();
        let resp = c.read_stdout(ctx(), &r).await.expect("read exec stdout");
        if resp.data.is_empty() {
            return String::from_utf8_lossy(&out).into_owned();
        }
        out.extend_from_slice(&resp.data);
    }
}

async fn wait_exec(c: &AgentServiceClient, id: &str, exec_id: &str) -> i32 {
    let mut r = WaitProcessRequest::new();
    r.container_id = id.into();
    r.exec_id = exec_id.into();
    c.wait_process(ctx(), &r).await.expect("wait exec").status
}

fn exec_req(id: &str, exec_id: &str, args: &[&str], terminal: bool) -> ExecProcessRequest {
    let mut r = ExecProcessRequest::new();
    r.container_id = id.into();
    r.exec_id = exec_id.into();
    r.oci_process = serde_json::json!({
        "args": args, "cwd": "/tmp", "env": ["PATH=/bin", "FOO=bar"], "terminal": terminal,
        "user": {"uid": 1000, "gid": 1000, "additionalGids": [10]}
    })
    .to_string()
    .into_bytes();
    r.terminal = terminal;
    r
}

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

/// Mount destinations resolve inside the container's root, as runc does: an image's
/// `/var/run -> /run` (absolute, as Debian has it) takes a bind at
/// `/var/run/<x>/serviceaccount` to the container's `/run/<x>/...`, and a symlink climbing
/// out with `../../..` is clamped at the container's root. The host's /run and / stay
/// untouched.
#[tokio::test]
async fn mount_destinations_resolve_in_the_root() {
    require_host!();
    let a = start_agent().await;
    let c = &a.client;
    let id = unique("links");
    let rootfs = busybox_rootfs(a.dir.path(), &id);
    std::fs::create_dir_all(rootfs.join("var/lib")).unwrap();
    std::fs::create_dir_all(rootfs.join("run")).unwrap();
    symlink("/run", rootfs.join("var/run")).unwrap();
    let escape = format!("kata-rs-escape-{}", std::process::id());
    symlink(
        format!("../../../../../../../../../../../{escape}"),
        rootfs.join("var/lib/up"),
    )
    .unwrap();
    let src = a.dir.path().join(&id).join("mounts/0");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("token"), "tok\n").unwrap();
    let file = a.dir.path().join(&id).join("mounts/1");
    std::fs::write(&file, "sec\n").unwrap();
    let sub = format!("kata-rs-test-{}", std::process::id());
    let mut spec = base_spec(&[
        "sh",
        "-c",
        &format!(
            "cat /var/run/{sub}/sa/token /run/{sub}/sa/token /var/lib/up/secret /{escape}/secret; \
             touch /run/{sub}/sa/new; echo touch=$?"
        ),
    ]);
    spec["mounts"] = serde_json::json!([
        {"destination": format!("/var/run/{sub}/sa"), "type": "bind",
         "source": src, "options": ["rbind", "ro"]},
        {"destination": "/var/lib/up/secret", "type": "bind", "source": file,
         "options": ["bind"]}]);
    let mut r = create_req(&id, &rootfs, &["true"], false);
    r.oci_spec = spec.to_string().into_bytes();
    c.create_container(ctx(), &r).await.expect("create");
    c.start_container(ctx(), &creq(&id)).await.expect("start");
    let out = String::from_utf8(read_all(c, &id, false).await).unwrap();
    let err = String::from_utf8(read_all(c, &id, true).await).unwrap();
    assert_eq!(wait(c, &id).await, 0, "stdout {out} stderr {err}");
    assert_eq!(out, "tok\ntok\nsec\nsec\ntouch=1\n", "stderr {err}");
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(
        !Path::new("/run").join(&sub).exists(),
        "the host's /run was written"
    );
    assert!(!Path::new("/").join(&escape).exists(), "escaped the root");
    // The mount points were made inside the root; the symlinks are untouched.
    assert!(rootfs.join("run").join(&sub).join("sa").is_dir());
    assert!(rootfs.join(&escape).join("secret").is_file());
    assert_eq!(
        std::fs::read_link(rootfs.join("var/run")).unwrap(),
        Path::new("/run")
    );
    let mut rm = RemoveContainerRequest::new();
    rm.container_id = id.clone();
    c.remove_container(ctx(), &rm).await.unwrap();
}

/// The root file system and bind sources come only through the share: `rootfs_path` must
/// be `<share>/<id>/rootfs` exactly, bind sources must lie under `<share>/<id>/`; the
/// errors say so and nothing is left.
#[tokio::test]
async fn rootfs_and_sources_only_from_the_share() {
    require_host!();
    let a = start_agent().await;
    let c = &a.client;
    let id = unique("share");
    let rootfs = busybox_rootfs(a.dir.path(), &id);
    let other = busybox_rootfs(a.dir.path(), &unique("other"));
    for bad in [
        other.clone(),
        a.dir.path().join(&id),
        rootfs.join("."),
        PathBuf::from("/"),
    ] {
        let req = create_req(&id, &bad, &["true"], false);
        let msg = err_msg(c.create_container(ctx(), &req).await.unwrap_err());
        assert!(
            msg.contains("must be") && msg.contains(rootfs.to_str().unwrap()),
            "{bad:?}: {msg}"
        );
    }
    std::fs::create_dir_all(a.dir.path().join(&id).join("mounts")).unwrap();
    let outside = a.dir.path().to_str().unwrap().to_string();
    for src in [
        "/etc".to_string(),
        format!("{}/bin", other.display()),
        a.dir.path().join(&id).to_string_lossy().into_owned(),
        outside,
    ] {
        let mut spec = base_spec(&["sh", "-c", "true"]);
        spec["mounts"] = serde_json::json!([{"destination": "/x", "type": "bind", "source": src}]);
        let mut r = create_req(&id, &rootfs, &["true"], false);
        r.oci_spec = spec.to_string().into_bytes();
        let msg = err_msg(c.create_container(ctx(), &r).await.unwrap_err());
        assert!(msg.contains("not in the sandbox share"), "{src}: {msg}");
    }
    // A symlink in the container's share directory cannot name a guest path.
    symlink("/etc", a.dir.path().join(&id).join("mounts/0")).unwrap();
    let mut spec = base_spec(&["sh", "-c", "true"]);
    spec["mounts"] = serde_json::json!([{"destination": "/x", "type": "bind",
        "source": a.dir.path().join(&id).join("mounts/0")}]);
    let mut r = create_req(&id, &rootfs, &["true"], false);
    r.oci_spec = spec.to_string().into_bytes();
    let msg = err_msg(c.create_container(ctx(), &r).await.unwrap_err());
    assert!(msg.contains("bind mount source"), "{msg}");
    assert!(!rootfs.join("x").exists());
    assert!(!cgroup_dir(&id).exists(), "no cgroup left behind");
    assert!(children_of(a.child.id()).is_empty(), "no process left");
}

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

mod exec;
mod lifecycle;
mod mounts;
mod process;

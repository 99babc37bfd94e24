//! kata-rs-cri: drives one pod through containerd's CRI (runtime.v1) the way the kubelet
//! would, and prints what it saw as `key=value` markers (checked by tests/tests/cri.rs).
//!
//!     kata-rs-cri --socket SOCK --handler HANDLER --image IMAGE --log-dir DIR \
//!                 --port PORT [--cgroup-parent CG] [--timeout SECONDS]
//!
//! The pod (host network, PID namespace per container, IPC namespace per pod: a
//! `hostNetwork: true` pod as the kubelet sends it) gets two containers from IMAGE (busybox):
//! `server` serves a page with `httpd` on 127.0.0.1:PORT, `client` sleeps. Then: ExecSync in
//! `client` (stdout, stderr, exit code), `wget` from `client` to the server on localhost,
//! the boot id of each container's kernel (same VM or not), ContainerStats,
//! UpdateContainerResources (limits read back from the cgroup), the log files CRI
//! wrote, StopPodSandbox, RemovePodSandbox, and that nothing of the pod is listed afterwards.
//! Every step prints its markers whatever happens; the pod is always stopped and removed.
//!
//! `--pod-net DIR` (tests/scripts/cri-net.sh): the pod gets its own network from CNI
//! (NamespaceMode POD) and `server` listens on all addresses. Before the common steps it
//! prints the pod's IP and what the server container sees of `eth0` (MAC, IPv4 address,
//! MTU, default route), writes `DIR/HANDLER.ip` (`IP PORT`), fetches the page of every other
//! pod that wrote such a file (from `client`, over the pod network), and waits (at most
//! `--timeout` s) for `DIR/release` before it goes on: the node fetches the pods' pages and
//! looks at their network namespaces meanwhile.
//! `--propagation-dir DIR` (tests/scripts/cri.sh): `client` also gets three host-path mounts
//! from DIR, one per CRI mount propagation mode, and the node mounts a tmpfs under each once
//! the pod runs (tests/cri/src/propagation.rs).
//! Exit status 0 when every CRI call was answered without error (the test judges the rest).

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerFilter, ContainerMetadata, ContainerState, ContainerStatsRequest,
    ContainerStatusRequest, CreateContainerRequest, DnsConfig, ExecSyncRequest, ImageSpec,
    ImageStatusRequest, LinuxContainerConfig, LinuxContainerResources,
    LinuxContainerSecurityContext, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
    ListContainersRequest, ListPodSandboxRequest, NamespaceMode, NamespaceOption, PodSandboxConfig,
    PodSandboxFilter, PodSandboxMetadata, PodSandboxState, PodSandboxStatusRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StopPodSandboxRequest,
    UpdateContainerResourcesRequest, VersionRequest,
};
use tonic::transport::Channel;

mod churn;
mod conformance;
mod portforward;
mod propagation;

type Runtime = RuntimeServiceClient<Channel>;
use kata_rs_cri::{call_quiet, connect, Res};

#[derive(Clone)]
struct Args {
    socket: String,
    handler: String,
    image: String,
    log_dir: String,
    port: u16,
    cgroup_parent: String,
    timeout: u64,
    pod_net: Option<String>,
    /// `--image2 IMAGE`: the `client` container's image (a second image in the pod).
    image2: Option<String>,
    /// `--churn N`: N pods created and removed instead of the one-pod walk-through.
    churn: Option<u32>,
    /// `--parallel P`: with `--churn`, P pods at a time.
    parallel: u32,
    /// `--propagation-dir DIR`: the mount propagation steps (tests/cri/src/propagation.rs).
    propagation_dir: Option<String>,
}

fn usage() -> ! {
    eprintln!(
        "usage: kata-rs-cri --socket SOCK --handler HANDLER --image IMAGE --log-dir DIR \
         --port PORT [--cgroup-parent CG] [--timeout SECONDS] [--pod-net DIR] [--image2 IMAGE] \
         [--propagation-dir DIR]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut kv: HashMap<String, String> = HashMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let Some(k) = k.strip_prefix("--") else {
            usage()
        };
        let Some(v) = it.next() else { usage() };
        kv.insert(k.to_string(), v);
    }
    let churn: Option<u32> = kv
        .remove("churn")
        .map(|n| n.parse().unwrap_or_else(|_| usage()));
    let mut take = |k: &str| kv.remove(k);
    let args = Args {
        socket: take("socket").unwrap_or_else(|| usage()),
        handler: take("handler").unwrap_or_else(|| usage()),
        image: take("image").unwrap_or_else(|| usage()),
        log_dir: take("log-dir").unwrap_or_else(|| usage()),
        churn,
        parallel: take("parallel")
            .map(|n| n.parse().unwrap_or_else(|_| usage()))
            .unwrap_or(1),
        port: take("port")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| if churn.is_some() { 0 } else { usage() }),
        cgroup_parent: take("cgroup-parent").unwrap_or_default(),
        timeout: take("timeout")
            .map(|t| t.parse().unwrap_or_else(|_| usage()))
            .unwrap_or(300),
        pod_net: take("pod-net"),
        image2: take("image2"),
        propagation_dir: take("propagation-dir"),
    };
    if !kv.is_empty() {
        usage()
    }
    args
}

/// Prints `key=value`; values are one word (the test reads up to the first space).
/// The memory limit UpdateContainerResources gives the server (100 MiB).
const UPDATE_MEMORY: i64 = 100 << 20;

fn marker(key: &str, value: impl std::fmt::Display) {
    println!("{key}={value}");
}

/// Prints `key=ok`, or `key=failed` and the error on an `error| ` line.
fn outcome<T>(key: &str, r: &Res<T>) {
    match r {
        Ok(_) => marker(key, "ok"),
        Err(e) => {
            marker(key, "failed");
            println!("error| {key}: {e}");
        }
    }
}

/// One CRI call with a time limit; its duration goes to a `time-KEY=SECONDS` marker.
async fn call<T>(
    key: &str,
    secs: u64,
    f: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Res<T> {
    let t0 = Instant::now();
    let r = call_quiet(secs, f).await;
    marker(
        &format!("time-{key}"),
        format!("{:.1}", t0.elapsed().as_secs_f64()),
    );
    r
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim().to_string()
}

/// One word for a marker: spaces would cut the value.
fn word(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.split_whitespace().collect::<Vec<_>>().join("_")
    }
}

/// The namespaces of a `hostNetwork: true` pod, as the kubelet sends them for the pod and
/// again for each of its containers: the node's network, a PID namespace per container
/// (no shareProcessNamespace), the pod's IPC namespace.
/// With `--pod-net` the pod has its own network namespace (CNI) instead.
fn namespaces(a: &Args) -> NamespaceOption {
    NamespaceOption {
        network: if a.pod_net.is_some() {
            NamespaceMode::Pod as i32
        } else {
            NamespaceMode::Node as i32
        },
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// Whether the walk-through runs the conformance steps (tests/cri/src/conformance.rs): the
/// host-network pod of tests/scripts/cri.sh, not the pod-network one nor the churn.
fn conformance(a: &Args) -> bool {
    a.pod_net.is_none() && a.churn.is_none()
}

/// The pod-network pods' sysctl (a network one: they have a network namespace of their own).
const POD_NET_SYSCTL: (&str, &str) = ("net.ipv4.ip_local_port_range", "20000 40000");

fn pod_config(a: &Args) -> PodSandboxConfig {
    let mut labels = HashMap::new();
    labels.insert("kata-rs-test".to_string(), "cri".to_string());
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: format!("cri-{}", a.handler),
            uid: format!("kata-rs-cri-{}-{}", a.handler, std::process::id()),
            namespace: "kata-rs-test".into(),
            attempt: 0,
        }),
        log_directory: a.log_dir.clone(),
        // No resolv.conf needed from the node (the emulated node has none).
        dns_config: Some(DnsConfig {
            servers: vec!["127.0.0.1".into()],
            ..Default::default()
        }),
        labels,
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: a.cgroup_parent.clone(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(namespaces(a)),
                ..Default::default()
            }),
            sysctls: if conformance(a) {
                conformance::sysctls()
            } else if a.pod_net.is_some() {
                HashMap::from([(POD_NET_SYSCTL.0.into(), POD_NET_SYSCTL.1.into())])
            } else {
                HashMap::new()
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container_config(a: &Args, name: &str, script: String) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: match (&a.image2, name) {
                (Some(i), "client") => i.clone(),
                _ => a.image.clone(),
            },
            ..Default::default()
        }),
        command: vec!["sh".into(), "-c".into(), script],
        log_path: format!("{name}/0.log"),
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(namespaces(a)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn exec(
    rt: &mut Runtime,
    key: &str,
    id: &str,
    cmd: &[&str],
    secs: u64,
) -> Res<(String, String, i32)> {
    let r = call(
        key,
        secs + 30,
        rt.exec_sync(ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: secs as i64,
        }),
    )
    .await?;
    Ok((text(&r.stdout), text(&r.stderr), r.exit_code))
}

async fn container_state(rt: &mut Runtime, key: &str, id: &str, secs: u64) -> Res<String> {
    let r = call(
        key,
        secs,
        rt.container_status(ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        }),
    )
    .await?;
    let s = r.status.ok_or("no status in the answer")?;
    let state = ContainerState::try_from(s.state)
        .map(|s| s.as_str_name().to_string())
        .unwrap_or_else(|_| format!("unknown-{}", s.state));
    Ok(state)
}

/// The log file CRI writes for a container: lines `TIMESTAMP STREAM TAG MESSAGE`. Waits up to
/// `secs` for a line with `want` on `stream`; prints the file and `log-NAME-STREAM=ok|...`.
async fn check_log(path: &str, name: &str, stream: &str, want: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let key = format!("log-{name}-{stream}");
    loop {
        let content = std::fs::read_to_string(path);
        let found = content.as_ref().ok().and_then(|c| {
            c.lines().find(|l| {
                let f: Vec<&str> = l.splitn(4, ' ').collect();
                f.len() == 4 && f[1] == stream && f[2] == "F" && f[3] == want
            })
        });
        if let Some(line) = found {
            let ts = line.split(' ').next().unwrap_or("");
            // RFC 3339 with nanoseconds, as CRI writes it: 2026-01-02T03:04:05.123456789Z
            let ts_ok = ts.len() >= 20 && ts.as_bytes()[4] == b'-' && ts.contains('T');
            marker(&key, if ts_ok { "ok" } else { "bad-timestamp" });
            println!("log-{name}| {line}");
            return;
        }
        if Instant::now() > deadline {
            match content {
                Ok(c) => {
                    marker(&key, "missing");
                    for l in c.lines() {
                        println!("log-{name}| {l}");
                    }
                }
                Err(e) => {
                    marker(&key, "no-file");
                    println!("error| {key}: {path}: {e}");
                }
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Everything between RunPodSandbox and StopPodSandbox.
async fn in_pod(rt: &mut Runtime, a: &Args, pod: &str, cfg: &PodSandboxConfig) -> Res<()> {
    let t = a.timeout;
    let st = call(
        "pod-status",
        t,
        rt.pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.into(),
            verbose: false,
        }),
    )
    .await;
    outcome("pod-status", &st);
    if let Ok(s) = &st {
        let s = s.status.clone().unwrap_or_default();
        let state = PodSandboxState::try_from(s.state)
            .map(|s| s.as_str_name().to_string())
            .unwrap_or_else(|_| s.state.to_string());
        marker("pod-state", state);
        marker("pod-runtime-handler", word(&s.runtime_handler));
        let net = s
            .linux
            .and_then(|l| l.namespaces)
            .and_then(|n| n.options)
            .map(|o| o.network);
        let net = net
            .and_then(|n| NamespaceMode::try_from(n).ok())
            .map(|n| n.as_str_name().to_string())
            .unwrap_or_else(|| "-".into());
        marker("pod-network", net);
        let ip = s.network.map(|n| n.ip).unwrap_or_default();
        marker("pod-ip", word(&ip));
    }

    let server_script = format!(
        "mkdir -p /tmp/www && echo 'hello from the server of pod {}' > /tmp/www/index.html && \
         echo server-started && echo server-stderr >&2 && exec httpd -f -p {}:{} -h /tmp/www",
        a.handler,
        if a.pod_net.is_some() {
            "0.0.0.0"
        } else {
            "127.0.0.1"
        },
        a.port
    );
    let client_script = "echo client-started; exec sleep 1000000".to_string();
    let mut containers = vec![("server", server_script), ("client", client_script)];
    if conformance(a) {
        containers.push(("logger", conformance::logger_script()));
    }
    let mut ids: Vec<(&str, String)> = Vec::new();
    for (name, script) in containers {
        let key = format!("create-{name}");
        let mut config = container_config(a, name, script);
        if name == "logger" {
            config = conformance::with_capabilities(config);
        }
        if let (Some(d), "client", true) = (&a.propagation_dir, name, conformance(a)) {
            config.mounts = propagation::mounts(d);
        }
        let r = call(
            &key,
            t,
            rt.create_container(CreateContainerRequest {
                pod_sandbox_id: pod.into(),
                config: Some(config),
                sandbox_config: Some(cfg.clone()),
            }),
        )
        .await;
        outcome(&key, &r);
        let id = r?.container_id;
        marker(&format!("{name}-id"), &id);
        ids.push((name, id));
    }
    if conformance(a) {
        let all: Vec<String> = ids.iter().map(|(_, id)| id.clone()).collect();
        conformance::created_stats(rt, t, pod, &all).await;
    }
    for (name, id) in &ids {
        let key = format!("start-{name}");
        let r = call(
            &key,
            t,
            rt.start_container(StartContainerRequest {
                container_id: id.clone(),
            }),
        )
        .await;
        outcome(&key, &r);
        r?;
        let s = container_state(rt, &format!("status-{name}"), id, t).await;
        marker(
            &format!("{name}-state"),
            s.unwrap_or_else(|e| format!("error:{}", word(&e))),
        );
    }
    let (server, client) = (ids[0].1.clone(), ids[1].1.clone());
    if let Some(dir) = &a.pod_net {
        let ip = st
            .as_ref()
            .ok()
            .and_then(|s| s.status.as_ref())
            .and_then(|s| s.network.as_ref())
            .map(|n| n.ip.clone())
            .unwrap_or_default();
        pod_net_steps(rt, a, dir, &ip, pod, &server, &client).await;
    }

    // ExecSync: its own stdout, stderr and exit code.
    let r = exec(
        rt,
        "exec",
        &client,
        &["sh", "-c", "echo exec-out; echo exec-err >&2; exit 3"],
        60,
    )
    .await;
    outcome("exec", &r);
    if let Ok((out, err, code)) = &r {
        marker("exec-stdout", word(out));
        marker("exec-stderr", word(err));
        marker("exec-exit", code);
    }

    // Which kernel each container runs on: the node's, one VM per pod, or one per container.
    let node_boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("error:{}", word(&e.to_string())));
    marker("node-boot-id", &node_boot);
    for (name, id) in [("server", &server), ("client", &client)] {
        let key = format!("boot-id-{name}");
        let r = exec(
            rt,
            &key,
            id,
            &["cat", "/proc/sys/kernel/random/boot_id"],
            60,
        )
        .await;
        outcome(&key, &r);
        if let Ok((out, _, _)) = r {
            marker(&format!("{name}-boot-id"), word(&out));
        }
    }
    if let Ok((out, _, _)) = exec(rt, "uname", &client, &["uname", "-r"], 60).await {
        marker("client-kernel", word(&out));
    }

    // The server from the client, on localhost: pod containers share the network namespace.
    // (busybox nc: Debian's static busybox wget crashes in its libc's service lookup.)
    let get = format!(
        "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 127.0.0.1 {}",
        a.port
    );
    let page = format!("hello from the server of pod {}", a.handler);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut tries = 0;
    loop {
        tries += 1;
        let r = exec(rt, "localhost-try", &client, &["sh", "-c", &get], 30).await;
        match r {
            Ok((ref body, _, 0)) if body.contains("200 OK") && body.contains(&page) => {
                marker("localhost", "ok");
                println!("localhost-body| {}", body.lines().last().unwrap_or(""));
                break;
            }
            r if Instant::now() > deadline => {
                marker("localhost", "failed");
                println!("error| localhost: {tries} tries of `{get}` in client; last: {r:?}");
                break;
            }
            _ => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
    marker("localhost-tries", tries);

    // ContainerStats of the server.
    let r = call(
        "stats",
        t,
        rt.container_stats(ContainerStatsRequest {
            container_id: server.clone(),
        }),
    )
    .await;
    outcome("stats", &r);
    if let Ok(r) = r {
        let s = r.stats.unwrap_or_default();
        let cpu = s
            .cpu
            .and_then(|c| c.usage_core_nano_seconds)
            .map(|v| v.value);
        let mem = s.memory.and_then(|m| m.working_set_bytes).map(|v| v.value);
        marker(
            "stats-id",
            word(&s.attributes.map(|a| a.id).unwrap_or_default()),
        );
        marker(
            "stats-cpu-ns",
            cpu.map(|v| v.to_string()).unwrap_or("-".into()),
        );
        marker(
            "stats-memory-bytes",
            mem.map(|v| v.to_string()).unwrap_or("-".into()),
        );
    }

    // UpdateContainerResources (the Task API's Update underneath): new memory and CPU limits
    // for the server, then read back from its own cgroup.
    let r = call(
        "update",
        t,
        rt.update_container_resources(UpdateContainerResourcesRequest {
            container_id: server.clone(),
            linux: Some(LinuxContainerResources {
                memory_limit_in_bytes: UPDATE_MEMORY,
                cpu_period: 100_000,
                cpu_quota: 50_000,
                ..Default::default()
            }),
            ..Default::default()
        }),
    )
    .await;
    outcome("update", &r);
    if r.is_ok() {
        let read = "p=$(sed -n 's/^0:://p' /proc/self/cgroup); \
                    echo $(cat /sys/fs/cgroup$p/memory.max) $(cat /sys/fs/cgroup$p/cpu.max)";
        match exec(rt, "update-read", &server, &["sh", "-c", read], t).await {
            Ok((out, _, _)) => marker("update-cgroup", out.replace(' ', "/")),
            Err(e) => println!("error| update-read: {e}"),
        }
    }

    // The log files CRI writes from the containers' stdout and stderr.
    let server_log = format!("{}/server/0.log", a.log_dir);
    let client_log = format!("{}/client/0.log", a.log_dir);
    check_log(&server_log, "server", "stdout", "server-started", 30).await;
    check_log(&server_log, "server", "stderr", "server-stderr", 30).await;
    check_log(&client_log, "client", "stdout", "client-started", 30).await;

    if conformance(a) {
        let logger = ids[2].1.clone();
        conformance::images(rt, &server, &client).await;
        conformance::host_network(rt, &server).await;
        conformance::capabilities(rt, &server, &logger).await;
        conformance::sysctls_read(rt, &server).await;
        conformance::logs(rt, a, &logger).await;
        if let Some(d) = &a.propagation_dir {
            propagation::check(rt, d, &client).await;
        }
    }
    Ok(())
}

/// The pod-network steps (`--pod-net DIR`), see the crate doc.
async fn pod_net_steps(
    rt: &mut Runtime,
    a: &Args,
    dir: &str,
    ip: &str,
    pod: &str,
    server: &str,
    client: &str,
) {
    // The pod's network sysctl, in its namespace.
    let path = format!("/proc/sys/{}", POD_NET_SYSCTL.0.replace('.', "/"));
    match exec(rt, "net-sysctl", server, &["cat", &path], 60).await {
        Ok((out, _, _)) => marker("net-sysctl", word(&out)),
        Err(e) => println!("error| net-sysctl: {e}"),
    }
    portforward::run(rt, a, pod, server, ip).await;
    // What the container sees of eth0.
    let show = "echo mac=$(cat /sys/class/net/eth0/address) mtu=$(cat /sys/class/net/eth0/mtu) \
                addr=$(ip -o -4 addr show dev eth0 | awk '{print $4}' | head -n 1) \
                gw=$(ip route | awk '$1 == \"default\" {print $3}' | head -n 1) \
                route=$(awk '$1 == \"eth0\" && $2 == \"00000000\" {print \"default\"}' /proc/net/route | head -n 1)";
    match exec(rt, "eth0-show", server, &["sh", "-c", show], 60).await {
        Ok((out, err, code)) => {
            println!("eth0| {out}");
            if code != 0 || !err.is_empty() {
                println!("error| eth0-show: exit {code}: {err}");
            }
            for kv in out.split_whitespace() {
                if let Some((k, v)) = kv.split_once('=') {
                    marker(&format!("eth0-{k}"), word(v));
                }
            }
        }
        Err(e) => println!("error| eth0-show: {e}"),
    }
    if let Ok((out, _, _)) = exec(rt, "ip-addr", server, &["ip", "addr"], 60).await {
        for l in out.lines() {
            println!("ip-addr| {l}");
        }
    }
    let me = format!("{dir}/{}.ip", a.handler);
    let tmp = format!("{me}.tmp");
    if let Err(e) =
        std::fs::write(&tmp, format!("{ip} {}\n", a.port)).and_then(|()| std::fs::rename(&tmp, &me))
    {
        println!("error| write {me}: {e}");
    }
    // Every other pod's page, from our client container over the pod network.
    let deadline = Instant::now() + Duration::from_secs(a.timeout);
    let mut peers: Vec<(String, String, String)> = Vec::new();
    while Instant::now() < deadline {
        peers.clear();
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let Some(h) = name.strip_suffix(".ip") else {
                continue;
            };
            if h == a.handler {
                continue;
            }
            if let Ok(c) = std::fs::read_to_string(e.path()) {
                let f: Vec<&str> = c.split_whitespace().collect();
                if f.len() == 2 {
                    peers.push((h.to_string(), f[0].to_string(), f[1].to_string()));
                }
            }
        }
        if !peers.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if peers.is_empty() {
        marker("peer-fetch", "no-peer");
    }
    for (h, pip, port) in &peers {
        let get = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {pip} {port}");
        let page = format!("hello from the server of pod {h}");
        let mut ok = false;
        for _ in 0..30 {
            match exec(rt, "peer-try", client, &["sh", "-c", &get], 30).await {
                Ok((ref body, _, 0)) if body.contains(&page) => {
                    println!("peer-body| {}", body.lines().last().unwrap_or(""));
                    ok = true;
                    break;
                }
                r => println!("peer-try| {h} {pip}:{port}: {r:?}"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        marker(&format!("peer-fetch-{h}"), if ok { "ok" } else { "failed" });
    }
    // Wait for the node's checks.
    let release = format!("{dir}/release");
    let t0 = Instant::now();
    while !std::path::Path::new(&release).exists() {
        if t0.elapsed() > Duration::from_secs(a.timeout) {
            marker("released", "timeout");
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    marker("released", "ok");
}

async fn run(a: &Args) -> Res<()> {
    let ch = connect(&a.socket).await?;
    let mut rt = RuntimeServiceClient::new(ch.clone());
    let mut img = ImageServiceClient::new(ch);
    let t = a.timeout;

    let v = call(
        "version",
        60,
        rt.version(VersionRequest {
            version: "v1".into(),
        }),
    )
    .await;
    outcome("version", &v);
    let v = v?;
    marker(
        "runtime",
        format!("{}/{}", word(&v.runtime_name), word(&v.runtime_version)),
    );
    marker("runtime-api", word(&v.runtime_api_version));

    let r = call(
        "image-status",
        60,
        img.image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: a.image.clone(),
                ..Default::default()
            }),
            verbose: false,
        }),
    )
    .await;
    marker("image-known", r.map(|r| r.image.is_some()).unwrap_or(false));

    let cfg = pod_config(a);
    let t0 = Instant::now();
    let r = call(
        "run-pod",
        t,
        rt.run_pod_sandbox(RunPodSandboxRequest {
            config: Some(cfg.clone()),
            runtime_handler: a.handler.clone(),
        }),
    )
    .await;
    outcome("run-pod", &r);
    let pod = r?.pod_sandbox_id;
    marker("pod-id", &pod);

    let body = in_pod(&mut rt, a, &pod, &cfg).await;
    outcome("pod-steps", &body);

    // Always stopped and removed, whatever happened inside.
    let r = call(
        "stop-pod",
        t,
        rt.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        }),
    )
    .await;
    outcome("stop-pod", &r);
    let stopped = r.is_ok();
    if let Ok(s) = call(
        "pod-status-stopped",
        t,
        rt.pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: false,
        }),
    )
    .await
    {
        let state = s.status.map(|s| s.state).unwrap_or(-1);
        let state = PodSandboxState::try_from(state)
            .map(|s| s.as_str_name().to_string())
            .unwrap_or_else(|_| state.to_string());
        marker("stopped-pod-state", state);
    }
    if let Ok(l) = call(
        "list-containers-stopped",
        t,
        rt.list_containers(ListContainersRequest {
            filter: Some(ContainerFilter {
                pod_sandbox_id: pod.clone(),
                ..Default::default()
            }),
        }),
    )
    .await
    {
        let states: Vec<String> = l
            .containers
            .iter()
            .map(|c| {
                let name = c.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or("?");
                let s = ContainerState::try_from(c.state)
                    .map(|s| s.as_str_name().to_string())
                    .unwrap_or_else(|_| c.state.to_string());
                format!("{name}:{s}")
            })
            .collect();
        marker("stopped-containers", word(&states.join(",")));
    }

    let r = call(
        "remove-pod",
        t,
        rt.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        }),
    )
    .await;
    outcome("remove-pod", &r);
    let removed = r.is_ok();

    let pods = call(
        "list-pods",
        t,
        rt.list_pod_sandbox(ListPodSandboxRequest {
            filter: Some(PodSandboxFilter {
                id: pod.clone(),
                ..Default::default()
            }),
        }),
    )
    .await
    .map(|l| l.items.len().to_string());
    marker(
        "pods-left",
        pods.clone()
            .unwrap_or_else(|e| format!("error:{}", word(&e))),
    );
    let ctrs = call(
        "list-containers",
        t,
        rt.list_containers(ListContainersRequest {
            filter: Some(ContainerFilter {
                pod_sandbox_id: pod.clone(),
                ..Default::default()
            }),
        }),
    )
    .await
    .map(|l| l.containers.len().to_string());
    marker(
        "containers-left",
        ctrs.clone()
            .unwrap_or_else(|e| format!("error:{}", word(&e))),
    );
    marker("total", format!("{:.1}", t0.elapsed().as_secs_f64()));
    if conformance(a) {
        if let Some(d) = &a.propagation_dir {
            propagation::after_pod(d);
        }
        conformance::host_namespaces(&mut rt, a, &cfg).await;
    }
    body?;
    if !(stopped && removed) {
        return Err("the pod was not stopped and removed".into());
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a = parse_args();
    marker("handler", &a.handler);
    let r = match a.churn {
        Some(n) => churn::run(&a, n).await,
        None => run(&a).await,
    };
    outcome("result", &r);
    std::process::exit(if r.is_ok() { 0 } else { 1 });
}

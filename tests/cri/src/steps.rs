//! The walk-through's steps inside the running pod (between RunPodSandbox and
//! StopPodSandbox): containers created and started, ExecSync, boot ids, localhost, stats,
//! resource update, CRI log files, then the conformance and propagation steps.

use std::time::{Duration, Instant};

use k8s_cri::v1::{
    ContainerStatsRequest, CreateContainerRequest, LinuxContainerResources, NamespaceMode,
    PodSandboxConfig, PodSandboxState, PodSandboxStatusRequest, StartContainerRequest,
    UpdateContainerResourcesRequest,
};

use crate::args::Args;
use crate::calls::{call, container_state, exec};
use crate::config::container_config;
use crate::markers::{marker, outcome, word};
use crate::pod_net::pod_net_steps;
use crate::{conformance, propagation, Runtime};
use kata_rs_cri::Res;

/// The memory limit UpdateContainerResources gives the server (100 MiB).
pub const UPDATE_MEMORY: i64 = 100 << 20;

/// The log file CRI writes for a container: lines `TIMESTAMP STREAM TAG MESSAGE`. Waits up to
/// `secs` for a line with `want` on `stream`; prints the file and `log-NAME-STREAM=ok|...`.
pub async fn check_log(path: &str, name: &str, stream: &str, want: &str, secs: u64) {
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
pub async fn in_pod(rt: &mut Runtime, a: &Args, pod: &str, cfg: &PodSandboxConfig) -> Res<()> {
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

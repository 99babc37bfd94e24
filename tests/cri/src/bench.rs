//! kata-rs-cri-bench: `make bench`'s CRI section (benches/node-bench.sh, issue 15). Pod start
//! and pod churn through containerd's CRI plugin, kata against runc in the same run:
//!
//!     kata-rs-cri-bench --socket SOCK --image IMAGE --log-dir DIR --pods N \
//!                       [--handlers kata,runc] [--cgroup-parent CG] [--timeout SECONDS] \
//!                       [--containerd-log FILE] [--density CAP] [--iperf3 DIR]
//!
//! A warm-up round, then N rounds; each round runs one pod per handler, one after another
//! (the order alternating per round), each pod as the kubelet does it: RunPodSandbox,
//! CreateContainer + StartContainer (a sleeping busybox container, host network), then
//! StopPodSandbox + RemovePodSandbox. **start** = RunPodSandbox sent → StartContainer
//! answered (the container runs); **cycle** = the whole pod, created to removed (the pod
//! churn: N pods of each handler created, started, stopped and removed one after another).
//!
//! With `--containerd-log` (the CRI containerd's log, where the kata shim's log lines land
//! too), the kata pods' start is split into phases from the timestamps the components log:
//! containerd + shim start (to the shim's `serving on`), virtiofsd (to `virtiofsd serves`),
//! VM boot to agent ready (to the shim's `agent … ready`), the rest of RunPodSandbox,
//! CreateContainer, StartContainer. The client's clock is the node's, as containerd's.
//!
//! With `--density CAP` (after the rounds), per handler: idle busybox pods (the default VM
//! size) started one after another and left running, until the first failure or CAP; the
//! node's `MemAvailable` before the first and 2 s after the last gives the memory per pod,
//! and 1 GiB ÷ that the pods per GiB. Then they are all removed.
//!
//! With `--iperf3 DIR` (a node directory with `iperf3`, its libraries and
//! `ld-linux-x86-64.so.2`, run through that loader: the busybox image has no libc), per handler:
//! two pods on the CNI network (their own network namespaces), `iperf3 -s` in one, `iperf3 -c
//! IP -t 5` from the other (ExecSync), the receiver's Mbit/s: kata↔kata and runc↔runc.
//!
//! Prints `bench-cri| ` lines per pod and one `BENCH-JSON cri {…}` line (medians in ms,
//! samples, the profile). Exit status 1 only when no pod of some handler went through.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, DnsConfig, ExecSyncRequest,
    ImageSpec, LinuxContainerConfig, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, Mount, NamespaceMode, NamespaceOption, PodSandboxConfig,
    PodSandboxMetadata, PodSandboxStatusRequest, RemovePodSandboxRequest, RunPodSandboxRequest,
    StartContainerRequest, StopPodSandboxRequest,
};
use tonic::transport::Channel;

use kata_rs_cri::{call_quiet, connect, Res};
type Runtime = RuntimeServiceClient<Channel>;

struct Args {
    socket: String,
    image: String,
    log_dir: String,
    pods: u32,
    handlers: Vec<String>,
    cgroup_parent: String,
    timeout: u64,
    containerd_log: Option<String>,
    density: u32,
    iperf3: Option<String>,
}

fn usage() -> ! {
    eprintln!(
        "usage: kata-rs-cri-bench --socket SOCK --image IMAGE --log-dir DIR --pods N \
         [--handlers kata,runc] [--cgroup-parent CG] [--timeout SECONDS] [--containerd-log FILE] [--density CAP] [--iperf3 DIR]"
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
    let mut take = |k: &str| kv.remove(k);
    let a = Args {
        socket: take("socket").unwrap_or_else(|| usage()),
        image: take("image").unwrap_or_else(|| usage()),
        log_dir: take("log-dir").unwrap_or_else(|| usage()),
        pods: take("pods")
            .map(|n| n.parse().unwrap_or_else(|_| usage()))
            .unwrap_or_else(|| usage()),
        handlers: take("handlers")
            .unwrap_or_else(|| "kata,runc".into())
            .split(',')
            .map(String::from)
            .collect(),
        cgroup_parent: take("cgroup-parent").unwrap_or_default(),
        timeout: take("timeout")
            .map(|t| t.parse().unwrap_or_else(|_| usage()))
            .unwrap_or(300),
        containerd_log: take("containerd-log"),
        iperf3: take("iperf3"),
        density: take("density")
            .map(|n| n.parse().unwrap_or_else(|_| usage()))
            .unwrap_or(0),
    };
    if !kv.is_empty() {
        usage()
    }
    a
}

/// A `hostNetwork: true` pod's namespaces, as the kubelet sends them.
fn namespaces() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Node as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

fn pod_config(a: &Args, handler: &str, round: u32) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: format!("bench-{handler}-{round}"),
            uid: format!("kata-rs-bench-{handler}-{}-{round}", std::process::id()),
            namespace: "kata-rs-bench".into(),
            attempt: 0,
        }),
        log_directory: a.log_dir.clone(),
        dns_config: Some(DnsConfig {
            servers: vec!["127.0.0.1".into()],
            ..Default::default()
        }),
        labels: [("kata-rs-bench".to_string(), "cri".to_string())].into(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: a.cgroup_parent.clone(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container_config(a: &Args) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "sleeper".into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: a.image.clone(),
            ..Default::default()
        }),
        command: vec!["sleep".into(), "1000000".into()],
        log_path: "sleeper/0.log".into(),
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The node's wall clock, Unix seconds (to compare with containerd's log timestamps).
fn wall() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// One pod's timestamps (wall clock, s) and durations (ms).
#[derive(Debug, Clone, Default)]
struct Pod {
    sent: f64,
    sandbox_done: f64,
    created: f64,
    started: f64,
    start_ms: f64,
    cycle_ms: f64,
}

/// One pod through CRI; stop and remove always run once it exists.
async fn one_pod(rt: &mut Runtime, a: &Args, handler: &str, round: u32) -> Res<Pod> {
    let t = a.timeout;
    let cfg = pod_config(a, handler, round);
    let t0 = Instant::now();
    let mut p = Pod {
        sent: wall(),
        ..Default::default()
    };
    let pod = call_quiet(
        t,
        rt.run_pod_sandbox(RunPodSandboxRequest {
            config: Some(cfg.clone()),
            runtime_handler: handler.into(),
        }),
    )
    .await
    .map_err(|e| format!("RunPodSandbox: {e}"))?
    .pod_sandbox_id;
    p.sandbox_done = wall();
    let body = async {
        let id = call_quiet(
            t,
            rt.create_container(CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(container_config(a)),
                sandbox_config: Some(cfg.clone()),
            }),
        )
        .await
        .map_err(|e| format!("CreateContainer: {e}"))?
        .container_id;
        p.created = wall();
        call_quiet(
            t,
            rt.start_container(StartContainerRequest { container_id: id }),
        )
        .await
        .map_err(|e| format!("StartContainer: {e}"))?;
        p.started = wall();
        p.start_ms = t0.elapsed().as_secs_f64() * 1000.0;
        Ok::<(), String>(())
    }
    .await;
    let stop = call_quiet(
        t,
        rt.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        }),
    )
    .await
    .map_err(|e| format!("StopPodSandbox: {e}"));
    let remove = call_quiet(
        t,
        rt.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        }),
    )
    .await
    .map_err(|e| format!("RemovePodSandbox: {e}"));
    p.cycle_ms = t0.elapsed().as_secs_f64() * 1000.0;
    body.and(stop)
        .and(remove)
        .map(|_| p)
        .map_err(|e| format!("sandbox {pod}: {e}"))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// The Unix time of a log line's `time="2026-12-04T08:30:00.123456789Z"` (or `+hh:mm`).
fn log_time(line: &str) -> Option<f64> {
    let s = line.split("time=\"").nth(1)?.split('"').next()?;
    let (date, rest) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, mo, da) = (d.next()??, d.next()??, d.next()??);
    let tz_at = rest.find(['Z', '+', '-']).unwrap_or(rest.len());
    let (clock, tz) = rest.split_at(tz_at);
    let mut c = clock.split(':');
    let (h, mi) = (
        c.next()?.parse::<f64>().ok()?,
        c.next()?.parse::<f64>().ok()?,
    );
    let sec = c.next()?.parse::<f64>().ok()?;
    let off = match tz.as_bytes().first() {
        Some(b'+') | Some(b'-') => {
            let sign = if tz.starts_with('-') { -1.0 } else { 1.0 };
            let (oh, om) = tz[1..].split_once(':')?;
            sign * (oh.parse::<f64>().ok()? * 3600.0 + om.parse::<f64>().ok()? * 60.0)
        }
        _ => 0.0,
    };
    Some(days_from_civil(y, mo, da) as f64 * 86400.0 + h * 3600.0 + mi * 60.0 + sec - off)
}

/// The start phases: name, and the log line that ends it (`None`: a client timestamp).
const PHASES: [&str; 6] = [
    "containerd + shim start",
    "virtiofsd start",
    "VM boot to agent ready",
    "rest of RunPodSandbox",
    "CreateContainer",
    "StartContainer",
];

/// A kata pod's phases in ms from the log lines (time, text) between its RunPodSandbox and
/// its StartContainer answer; `None` when a marker is missing.
fn phases(p: &Pod, log: &[(f64, String)]) -> Option<[f64; 6]> {
    let first = |pat: &[&str], after: f64| {
        log.iter()
            .find(|(t, l)| {
                *t >= after - 0.001
                    && *t <= p.sandbox_done + 0.001
                    && pat.iter().all(|x| l.contains(x))
            })
            .map(|x| x.0)
    };
    let shim = first(&["serving on"], p.sent)?;
    let fs = first(&["virtiofsd serves"], shim)?;
    let ready = first(&["agent ", "ready (guest kernel"], fs)?;
    let ms = |a: f64, b: f64| ((b - a) * 1000.0).max(0.0).round();
    Some([
        ms(p.sent, shim),
        ms(shim, fs),
        ms(fs, ready),
        ms(ready, p.sandbox_done),
        ms(p.sandbox_done, p.created),
        ms(p.created, p.started),
    ])
}

/// The median (the mean of the middle two for an even count); `None` when empty.
fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn num(x: Option<f64>) -> String {
    x.map_or("null".into(), |v| format!("{}", v.round() as i64))
}

fn list(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{}", x.round() as i64))
        .collect::<Vec<_>>()
        .join(",")
}

/// The receiver's Mbit/s in `iperf3 -f m` text output (the summary line ending `receiver`).
fn iperf3_mbits(out: &str) -> Option<f64> {
    let l = out
        .lines()
        .rev()
        .find(|l| l.trim_end().ends_with("receiver"))?;
    let w: Vec<&str> = l.split_whitespace().collect();
    let i = w.iter().position(|x| *x == "Mbits/sec")?;
    w.get(i.checked_sub(1)?)?.parse().ok()
}

/// A pod on the CNI network with one container running `cmd`, DIR mounted at /iperf; its
/// sandbox id and IP (the sandbox is removed again on failure).
async fn iperf3_pod(
    rt: &mut Runtime,
    a: &Args,
    dir: &str,
    handler: &str,
    role: &str,
    cmd: Vec<String>,
) -> Res<(String, String, String)> {
    let t = a.timeout;
    let ns = NamespaceOption {
        network: NamespaceMode::Pod as i32,
        ..namespaces()
    };
    let mut cfg = pod_config(a, handler, 0);
    if let Some(m) = cfg.metadata.as_mut() {
        m.name = format!("iperf3-{role}-{handler}");
        m.uid = format!("kata-rs-iperf3-{role}-{handler}-{}", std::process::id());
    }
    if let Some(l) = cfg.linux.as_mut() {
        if let Some(sc) = l.security_context.as_mut() {
            sc.namespace_options = Some(ns.clone());
        }
    }
    let pod = call_quiet(
        t,
        rt.run_pod_sandbox(RunPodSandboxRequest {
            config: Some(cfg.clone()),
            runtime_handler: handler.into(),
        }),
    )
    .await
    .map_err(|e| format!("RunPodSandbox: {e}"))?
    .pod_sandbox_id;
    let r = async {
        let mut c = container_config(a);
        c.command = cmd;
        c.mounts = vec![Mount {
            container_path: "/iperf".into(),
            host_path: dir.into(),
            readonly: true,
            ..Default::default()
        }];
        if let Some(l) = c.linux.as_mut() {
            if let Some(sc) = l.security_context.as_mut() {
                sc.namespace_options = Some(ns);
            }
        }
        let id = call_quiet(
            t,
            rt.create_container(CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(c),
                sandbox_config: Some(cfg.clone()),
            }),
        )
        .await
        .map_err(|e| format!("CreateContainer: {e}"))?
        .container_id;
        call_quiet(
            t,
            rt.start_container(StartContainerRequest {
                container_id: id.clone(),
            }),
        )
        .await
        .map_err(|e| format!("StartContainer: {e}"))?;
        let st = call_quiet(
            t,
            rt.pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: pod.clone(),
                verbose: false,
            }),
        )
        .await
        .map_err(|e| format!("PodSandboxStatus: {e}"))?;
        let ip = st
            .status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .filter(|ip| !ip.is_empty())
            .ok_or("the pod has no IP (no CNI network?)")?;
        Ok::<_, String>((id, ip))
    }
    .await;
    match r {
        Ok((id, ip)) => Ok((pod, id, ip)),
        Err(e) => {
            remove_pod(rt, a, &pod).await;
            Err(e)
        }
    }
}

/// `--iperf3`: TCP throughput between two pods of `handler`, Mbit/s.
async fn iperf3(rt: &mut Runtime, a: &Args, dir: &str, handler: &str) -> Res<f64> {
    let run = |args: &[&str]| -> Vec<String> {
        [
            "/iperf/ld-linux-x86-64.so.2",
            "--library-path",
            "/iperf",
            "/iperf/iperf3",
        ]
        .iter()
        .chain(args)
        .map(|s| s.to_string())
        .collect()
    };
    let (spod, _, ip) = iperf3_pod(rt, a, dir, handler, "server", run(&["-s"])).await?;
    let client = iperf3_pod(
        rt,
        a,
        dir,
        handler,
        "client",
        vec!["sleep".into(), "1000000".into()],
    )
    .await;
    let r = match &client {
        Ok((_, cid, _)) => {
            // The server may need a moment to listen: a few tries.
            let mut last = String::new();
            let mut got = None;
            for _ in 0..3 {
                let cmd = run(&["-c", &ip, "-t", "5", "-f", "m"]);
                match call_quiet(
                    150,
                    rt.exec_sync(ExecSyncRequest {
                        container_id: cid.clone(),
                        cmd,
                        timeout: 120,
                    }),
                )
                .await
                {
                    Ok(r) => {
                        let out = String::from_utf8_lossy(&r.stdout).to_string();
                        if let Some(m) = iperf3_mbits(&out).filter(|_| r.exit_code == 0) {
                            got = Some(m);
                            break;
                        }
                        last = format!(
                            "exit {}: {} {}",
                            r.exit_code,
                            out.trim(),
                            String::from_utf8_lossy(&r.stderr).trim()
                        );
                    }
                    Err(e) => last = e,
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            got.ok_or(format!("iperf3 -c {ip}: {last}"))
        }
        Err(e) => Err(format!("client pod: {e}")),
    };
    if let Ok((cpod, _, _)) = &client {
        remove_pod(rt, a, cpod).await;
    }
    remove_pod(rt, a, &spod).await;
    r
}

/// `/proc/meminfo`'s `key` in KiB.
fn meminfo(key: &str) -> Option<f64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    s.lines()
        .find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A pod with a sleeping container, left running; its sandbox id.
async fn start_pod(rt: &mut Runtime, a: &Args, handler: &str, i: u32) -> Res<String> {
    let t = a.timeout;
    let mut cfg = pod_config(a, handler, i);
    if let Some(m) = cfg.metadata.as_mut() {
        m.name = format!("density-{handler}-{i}");
        m.uid = format!("kata-rs-density-{handler}-{}-{i}", std::process::id());
    }
    let pod = call_quiet(
        t,
        rt.run_pod_sandbox(RunPodSandboxRequest {
            config: Some(cfg.clone()),
            runtime_handler: handler.into(),
        }),
    )
    .await
    .map_err(|e| format!("RunPodSandbox: {e}"))?
    .pod_sandbox_id;
    let r = async {
        let id = call_quiet(
            t,
            rt.create_container(CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(container_config(a)),
                sandbox_config: Some(cfg.clone()),
            }),
        )
        .await
        .map_err(|e| format!("CreateContainer: {e}"))?
        .container_id;
        call_quiet(
            t,
            rt.start_container(StartContainerRequest { container_id: id }),
        )
        .await
        .map_err(|e| format!("StartContainer: {e}"))
    }
    .await;
    match r {
        Ok(_) => Ok(pod),
        Err(e) => {
            remove_pod(rt, a, &pod).await;
            Err(e)
        }
    }
}

/// StopPodSandbox + RemovePodSandbox, errors printed.
async fn remove_pod(rt: &mut Runtime, a: &Args, pod: &str) {
    let stop = call_quiet(
        a.timeout,
        rt.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.into(),
        }),
    )
    .await;
    let remove = call_quiet(
        a.timeout,
        rt.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod.into(),
        }),
    )
    .await;
    if let Err(e) = stop.map(|_| ()).and(remove.map(|_| ())) {
        println!("bench-cri| density: removing {pod}: {e}");
    }
}

/// `--density`: the JSON fields for `handler` (`,"density_…":…`).
async fn density(rt: &mut Runtime, a: &Args, handler: &str) -> String {
    let before = meminfo("MemAvailable");
    let t0 = Instant::now();
    let mut pods = Vec::new();
    let mut stop = String::from("cap");
    for i in 0..a.density {
        match start_pod(rt, a, handler, i).await {
            Ok(p) => pods.push(p),
            Err(e) => {
                println!("bench-cri| density {handler}: pod {i} failed: {e}");
                stop = "failure".into();
                break;
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = meminfo("MemAvailable");
    let n = pods.len() as f64;
    let per_pod = match (before, after) {
        (Some(b), Some(f)) if n > 0.0 && b > f => Some((b - f) / n),
        _ => None,
    };
    let per_gib = per_pod.map(|k| (1048576.0 / k * 100.0).round() / 100.0);
    println!(
        "bench-cri| density {handler}: {} pods up in {:.0} ms (stopped by {stop}); MemAvailable {} -> {} KiB: {} KiB per pod, {} pods per GiB",
        pods.len(),
        t0.elapsed().as_secs_f64() * 1000.0,
        num(before),
        num(after),
        num(per_pod),
        per_gib.map_or("null".into(), |x| x.to_string())
    );
    for p in &pods {
        remove_pod(rt, a, p).await;
    }
    format!(
        ",\"density_pods_{handler}\":{},\"density_stopped_by_{handler}\":\"{stop}\",\"density_kib_per_pod_{handler}\":{},\"density_pods_per_gib_{handler}\":{}",
        pods.len(),
        num(per_pod),
        per_gib.map_or("null".into(), |x| x.to_string())
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a = parse_args();
    let ch = match connect(&a.socket).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kata-rs-cri-bench: {e}");
            std::process::exit(1)
        }
    };
    let mut rt = RuntimeServiceClient::new(ch);
    let mut done: HashMap<String, Vec<Pod>> = HashMap::new();
    let mut failed = 0;
    for round in 0..=a.pods {
        let mut order = a.handlers.clone();
        if round % 2 == 1 {
            order.reverse();
        }
        let tag = if round == 0 {
            "warm-up".to_string()
        } else {
            format!("run{round}")
        };
        for h in &order {
            match one_pod(&mut rt, &a, h, round).await {
                Ok(p) => {
                    println!(
                        "bench-cri| {tag} {h}: start {:.0} ms (RunPodSandbox {:.0}, CreateContainer {:.0}, StartContainer {:.0}), create to removed {:.0} ms",
                        p.start_ms,
                        (p.sandbox_done - p.sent) * 1000.0,
                        (p.created - p.sandbox_done) * 1000.0,
                        (p.started - p.created) * 1000.0,
                        p.cycle_ms
                    );
                    if round > 0 {
                        done.entry(h.clone()).or_default().push(p);
                    }
                }
                Err(e) => {
                    failed += 1;
                    println!("bench-cri| {tag} {h}: FAILED: {e}");
                }
            }
        }
    }
    let log: Vec<(f64, String)> = a
        .containerd_log
        .as_deref()
        .and_then(|f| std::fs::read_to_string(f).ok())
        .map(|s| {
            s.lines()
                .filter_map(|l| Some((log_time(l)?, l.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let kata = done.get("kata").cloned().unwrap_or_default();
    let profiles: Vec<[f64; 6]> = kata.iter().filter_map(|p| phases(p, &log)).collect();
    println!(
        "bench-cri| profile from {} of {} kata pods ({} timestamped log lines)",
        profiles.len(),
        kata.len(),
        log.len()
    );
    let profile: Vec<String> = if profiles.is_empty() {
        Vec::new()
    } else {
        PHASES
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let m = median(profiles.iter().map(|p| p[i]).collect());
                format!("{{\"phase\":\"{name}\",\"ms\":{}}}", num(m))
            })
            .collect()
    };
    let mut j = format!(
        "{{\"n\":{},\"handlers\":\"{}\",\"failed_pods\":{failed},\"profile_pods\":{}",
        a.pods,
        a.handlers.join(","),
        profiles.len()
    );
    for h in &a.handlers {
        let v = done.get(h).cloned().unwrap_or_default();
        let s: Vec<f64> = v.iter().map(|p| p.start_ms).collect();
        let c: Vec<f64> = v.iter().map(|p| p.cycle_ms).collect();
        j.push_str(&format!(
            ",\"pod_start_ms_{h}\":{},\"pod_cycle_ms_{h}\":{},\"samples_pod_start_ms_{h}\":[{}],\"samples_pod_cycle_ms_{h}\":[{}]",
            num(median(s.clone())),
            num(median(c.clone())),
            list(&s),
            list(&c)
        ));
    }
    if a.density > 0 {
        j.push_str(&format!(
            ",\"density_cap\":{},\"node_mem_total_kib\":{}",
            a.density,
            num(meminfo("MemTotal"))
        ));
        for h in &a.handlers {
            j.push_str(&density(&mut rt, &a, h).await);
        }
    }
    if let Some(dir) = a.iperf3.as_deref() {
        for h in &a.handlers {
            let r = iperf3(&mut rt, &a, dir, h).await;
            match &r {
                Ok(m) => println!("bench-cri| iperf3 {h} <-> {h}: {m} Mbit/s"),
                Err(e) => println!("bench-cri| iperf3 {h}: FAILED: {e}"),
            }
            j.push_str(&format!(
                ",\"iperf3_mbit_s_{h}\":{}",
                r.map_or("null".into(), |m| m.to_string())
            ));
        }
    }
    j.push_str(&format!(",\"profile\":[{}]}}", profile.join(",")));
    println!("BENCH-JSON cri {j}");
    let all_ran = a
        .handlers
        .iter()
        .all(|h| done.get(h).is_some_and(|v| !v.is_empty()));
    std::process::exit(if all_ran { 0 } else { 1 });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_times() {
        let t = log_time(r#"time="2026-12-04T08:30:00.5Z" level=info msg="x""#).unwrap();
        assert_eq!(t, 1796373000.5);
        let u = log_time(r#"time="2026-12-04T09:30:00.5+01:00" level=info"#).unwrap();
        assert_eq!(t, u);
        assert_eq!(log_time("no time"), None);
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11017);
    }

    #[test]
    fn iperf3_receiver_line() {
        let out = "[ ID] Interval           Transfer     Bitrate         Retr\n\
            [  5]   0.00-5.00   sec   120 MBytes   201 Mbits/sec    0             sender\n\
            [  5]   0.00-5.04   sec   119 MBytes   198.5 Mbits/sec                  receiver\n\
            \niperf Done.\n";
        assert_eq!(iperf3_mbits(out), Some(198.5));
        assert_eq!(iperf3_mbits("nothing"), None);
    }

    #[test]
    fn phases_from_log_lines() {
        let p = Pod {
            sent: 100.0,
            sandbox_done: 110.0,
            created: 112.0,
            started: 113.5,
            ..Default::default()
        };
        let log: Vec<(f64, String)> = [
            (99.0, "shim 0.1.0 serving on /old"),
            (100.5, "shim 0.1.0 serving on /run/x"),
            (100.8, "virtiofsd serves /a on /b"),
            (108.0, "agent 0.1.0 ready (guest kernel 6.1)"),
        ]
        .iter()
        .map(|(t, l)| (*t, l.to_string()))
        .collect();
        assert_eq!(
            phases(&p, &log),
            Some([500.0, 300.0, 7200.0, 2000.0, 2000.0, 1500.0])
        );
        assert_eq!(phases(&p, &log[..2]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0, 4.0]), Some(2.5));
        assert_eq!(median(Vec::new()), None);
    }
}

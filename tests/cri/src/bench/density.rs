//! `--density`: idle pods left running per handler, the node's memory per pod.

use std::time::{Duration, Instant};

use k8s_cri::v1::{CreateContainerRequest, RunPodSandboxRequest, StartContainerRequest};

use crate::args::Args;
use crate::config::{container_config, pod_config};
use crate::pod::remove_pod;
use crate::stats::num;
use crate::Runtime;
use kata_rs_cri::{call_quiet, Res};

/// `/proc/meminfo`'s `key` in KiB.
pub fn meminfo(key: &str) -> Option<f64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    s.lines()
        .find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A pod with a sleeping container, left running; its sandbox id.
pub async fn start_pod(rt: &mut Runtime, a: &Args, handler: &str, i: u32) -> Res<String> {
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

/// `--density`: the JSON fields for `handler` (`,"density_…":…`).
pub async fn density(rt: &mut Runtime, a: &Args, handler: &str) -> String {
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

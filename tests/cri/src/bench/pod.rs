//! One measured pod through CRI (start and whole cycle, with the timestamps the profile
//! needs), and a pod's stop and removal.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use k8s_cri::v1::{
    CreateContainerRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopPodSandboxRequest,
};

use crate::args::Args;
use crate::config::{container_config, pod_config};
use crate::Runtime;
use kata_rs_cri::{call_quiet, Res};

/// The node's wall clock, Unix seconds (to compare with containerd's log timestamps).
pub fn wall() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// One pod's timestamps (wall clock, s) and durations (ms).
#[derive(Debug, Clone, Default)]
pub struct Pod {
    pub sent: f64,
    pub sandbox_done: f64,
    pub created: f64,
    pub started: f64,
    pub start_ms: f64,
    pub cycle_ms: f64,
}

/// One pod through CRI; stop and remove always run once it exists.
pub async fn one_pod(rt: &mut Runtime, a: &Args, handler: &str, round: u32) -> Res<Pod> {
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

/// StopPodSandbox + RemovePodSandbox, errors printed.
pub async fn remove_pod(rt: &mut Runtime, a: &Args, pod: &str) {
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

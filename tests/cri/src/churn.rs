//! `--churn N [--parallel P]`: N pods, P at a time, each created and removed the way the
//! kubelet does it: RunPodSandbox, CreateContainer + StartContainer (a sleeping container),
//! ExecSync `echo` in it (the pod really works), StopPodSandbox, RemovePodSandbox. Prints a
//! `churn| ` line per pod, then `churn-ok`, `churn-failed`, `churn-median-seconds`,
//! `churn-max-seconds` (a pod slower than a minute also gets a `SLOW` line with each step's time)
//! and what CRI still lists of these pods and their containers
//! (`churn-pods-left`; `churn-containers-left` counts every container CRI lists). A failed step still stops and removes the
//! pod. The node's leftovers are the script's to count.

use std::collections::HashMap;
use std::time::Instant;

use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerFilter, CreateContainerRequest, ExecSyncRequest, ListContainersRequest,
    ListPodSandboxRequest, PodSandboxFilter, RemovePodSandboxRequest, RunPodSandboxRequest,
    StartContainerRequest, StopPodSandboxRequest,
};

use crate::args::Args;
use crate::config::{container_config, pod_config};
use crate::markers::{marker, word};
use crate::Runtime;
use kata_rs_cri::{call_quiet, connect, Res};

/// The label every churn pod carries (to list what is left of them).
const LABEL: (&str, &str) = ("kata-rs-churn", "yes");

/// A pod slower than this prints how long each of its steps took, with its sandbox id (the
/// script then prints what containerd and the shim logged about it): a pod that succeeds
/// only after a long wait is a bug in hiding.
const SLOW_POD_SECS: f64 = 60.0;

/// How long each step of a pod took, in order, and the pod's sandbox id once it has one.
#[derive(Default)]
struct Steps {
    sandbox: String,
    took: Vec<(&'static str, f64)>,
}

impl Steps {
    /// Runs step `name`, noting how long it took.
    async fn time<T>(&mut self, name: &'static str, f: impl std::future::Future<Output = T>) -> T {
        let t0 = Instant::now();
        let r = f.await;
        self.took.push((name, t0.elapsed().as_secs_f64()));
        r
    }

    /// `RunPodSandbox 3.1 s, CreateContainer 0.4 s, ...`.
    fn summary(&self) -> String {
        self.took
            .iter()
            .map(|(n, s)| format!("{n} {s:.1} s"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// One pod's life; the error names the step that failed. Stop and remove always run once
/// the pod exists.
async fn one_pod(rt: &mut Runtime, a: &Args, i: u32, steps: &mut Steps) -> Res<()> {
    let t = a.timeout;
    let mut cfg = pod_config(a);
    if let Some(m) = cfg.metadata.as_mut() {
        m.name = format!("churn-{i}");
        m.uid = format!("kata-rs-churn-{}-{i}", std::process::id());
    }
    cfg.labels.insert(LABEL.0.into(), LABEL.1.into());
    let pod = steps
        .time(
            "RunPodSandbox",
            call_quiet(
                t,
                rt.run_pod_sandbox(RunPodSandboxRequest {
                    config: Some(cfg.clone()),
                    runtime_handler: a.handler.clone(),
                }),
            ),
        )
        .await
        .map_err(|e| format!("RunPodSandbox: {e}"))?
        .pod_sandbox_id;
    steps.sandbox = pod.clone();

    let body = async {
        let script = "echo started; exec sleep 1000000".to_string();
        let id = steps
            .time(
                "CreateContainer",
                call_quiet(
                    t,
                    rt.create_container(CreateContainerRequest {
                        pod_sandbox_id: pod.clone(),
                        config: Some(container_config(a, "sleeper", script)),
                        sandbox_config: Some(cfg.clone()),
                    }),
                ),
            )
            .await
            .map_err(|e| format!("CreateContainer: {e}"))?
            .container_id;
        steps
            .time(
                "StartContainer",
                call_quiet(
                    t,
                    rt.start_container(StartContainerRequest {
                        container_id: id.clone(),
                    }),
                ),
            )
            .await
            .map_err(|e| format!("StartContainer: {e}"))?;
        let r = steps
            .time(
                "ExecSync",
                call_quiet(
                    t,
                    rt.exec_sync(ExecSyncRequest {
                        container_id: id,
                        cmd: vec!["echo".into(), format!("pod-{i}")],
                        timeout: t as i64,
                    }),
                ),
            )
            .await
            .map_err(|e| format!("ExecSync: {e}"))?;
        let out = String::from_utf8_lossy(&r.stdout).trim().to_string();
        if r.exit_code != 0 || out != format!("pod-{i}") {
            return Err(format!(
                "ExecSync: exit code {}, stdout {out:?}",
                r.exit_code
            ));
        }
        Ok(())
    }
    .await;

    let stop = steps
        .time(
            "StopPodSandbox",
            call_quiet(
                t,
                rt.stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: pod.clone(),
                }),
            ),
        )
        .await
        .map_err(|e| format!("StopPodSandbox: {e}"));
    let remove = steps
        .time(
            "RemovePodSandbox",
            call_quiet(
                t,
                rt.remove_pod_sandbox(RemovePodSandboxRequest {
                    pod_sandbox_id: pod.clone(),
                }),
            ),
        )
        .await
        .map_err(|e| format!("RemovePodSandbox: {e}"));
    // The sandbox id leads the error: the script looks the pod up in containerd's log.
    body.and(stop)
        .and(remove)
        .map(|_| ())
        .map_err(|e| format!("sandbox {pod}: {e}"))
}

/// Worker `w` of `p`: pods w, w+p, w+2p, ... below `n`; their (index, seconds, result).
async fn worker(rt: &mut Runtime, a: &Args, w: u32, p: u32, n: u32) -> Vec<(u32, f64, Res<()>)> {
    let mut done = Vec::new();
    let mut i = w;
    while i < n {
        let t0 = Instant::now();
        let mut steps = Steps::default();
        let r = one_pod(rt, a, i, &mut steps).await;
        let secs = t0.elapsed().as_secs_f64();
        match &r {
            Ok(()) => println!("churn| pod {i}: ok in {secs:.1} s"),
            Err(e) => println!("churn| pod {i}: FAILED after {secs:.1} s: {e}"),
        }
        if secs > SLOW_POD_SECS && !steps.sandbox.is_empty() {
            println!(
                "churn| pod {i}: SLOW, sandbox {}: {}",
                steps.sandbox,
                steps.summary()
            );
        }
        done.push((i, secs, r));
        i += p;
    }
    done
}

/// The median of `v` (0 when empty).
fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs the churn; Ok when every pod went through and CRI lists none of them afterwards.
pub async fn run(a: &Args, n: u32) -> Res<()> {
    let ch = connect(&a.socket).await?;
    let p = a.parallel.clamp(1, n.max(1));
    let t0 = Instant::now();
    let mut jobs = Vec::new();
    for w in 0..p {
        let mut rt = RuntimeServiceClient::new(ch.clone());
        let a = a.clone();
        jobs.push(tokio::spawn(
            async move { worker(&mut rt, &a, w, p, n).await },
        ));
    }
    let mut results = Vec::new();
    for j in jobs {
        results.extend(j.await.map_err(|e| format!("a churn worker failed: {e}"))?);
    }
    let ok = results.iter().filter(|r| r.2.is_ok()).count();
    marker("churn-ok", ok);
    marker("churn-failed", results.len() - ok);
    marker(
        "churn-median-seconds",
        format!("{:.1}", median(results.iter().map(|r| r.1).collect())),
    );
    marker(
        "churn-max-seconds",
        format!("{:.1}", results.iter().map(|r| r.1).fold(0.0, f64::max)),
    );
    marker(
        "churn-total-seconds",
        format!("{:.1}", t0.elapsed().as_secs_f64()),
    );

    let mut rt = RuntimeServiceClient::new(ch);
    let labels: HashMap<String, String> = [(LABEL.0.to_string(), LABEL.1.to_string())].into();
    let pods = call_quiet(
        60,
        rt.list_pod_sandbox(ListPodSandboxRequest {
            filter: Some(PodSandboxFilter {
                label_selector: labels.clone(),
                ..Default::default()
            }),
        }),
    )
    .await
    .map(|l| l.items.len().to_string());
    marker(
        "churn-pods-left",
        pods.clone()
            .unwrap_or_else(|e| format!("error:{}", word(&e))),
    );
    let ctrs = call_quiet(
        60,
        rt.list_containers(ListContainersRequest {
            filter: Some(ContainerFilter::default()),
        }),
    )
    .await
    .map(|l| l.containers.len().to_string());
    marker(
        "churn-containers-left",
        ctrs.clone()
            .unwrap_or_else(|e| format!("error:{}", word(&e))),
    );
    if ok != n as usize {
        return Err(format!("{} of {n} pods failed", n as usize - ok));
    }
    if pods.as_deref() != Ok("0") || ctrs.as_deref() != Ok("0") {
        return Err("CRI still lists churn pods or containers".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 3.0);
        assert_eq!(median(Vec::new()), 0.0);
    }
}

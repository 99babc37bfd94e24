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

use std::time::Instant;

use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerFilter, ContainerState, ImageSpec, ImageStatusRequest, ListContainersRequest,
    ListPodSandboxRequest, PodSandboxFilter, PodSandboxState, PodSandboxStatusRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, StopPodSandboxRequest, VersionRequest,
};
use tonic::transport::Channel;

mod args;
mod calls;
mod churn;
mod config;
mod conformance;
mod markers;
mod pod_net;
mod portforward;
mod propagation;
mod steps;

use args::{parse_args, Args};
use calls::call;
use config::{conformance, pod_config};
use kata_rs_cri::{connect, Res};
use markers::{marker, outcome, word};

type Runtime = RuntimeServiceClient<Channel>;

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

    let body = steps::in_pod(&mut rt, a, &pod, &cfg).await;
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

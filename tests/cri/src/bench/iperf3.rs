//! `--iperf3`: TCP throughput between two pods of a handler on the CNI network.

use std::time::Duration;

use k8s_cri::v1::{
    CreateContainerRequest, ExecSyncRequest, Mount, NamespaceMode, NamespaceOption,
    PodSandboxStatusRequest, RunPodSandboxRequest, StartContainerRequest,
};

use crate::args::Args;
use crate::config::{container_config, namespaces, pod_config};
use crate::pod::remove_pod;
use crate::Runtime;
use kata_rs_cri::{call_quiet, Res};

/// The receiver's Mbit/s in `iperf3 -f m` text output (the summary line ending `receiver`).
pub fn iperf3_mbits(out: &str) -> Option<f64> {
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
pub async fn iperf3_pod(
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
pub async fn iperf3(rt: &mut Runtime, a: &Args, dir: &str, handler: &str) -> Res<f64> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iperf3_receiver_line() {
        let out = "[ ID] Interval           Transfer     Bitrate         Retr\n\
            [  5]   0.00-5.00   sec   120 MBytes   201 Mbits/sec    0             sender\n\
            [  5]   0.00-5.04   sec   119 MBytes   198.5 Mbits/sec                  receiver\n\
            \niperf Done.\n";
        assert_eq!(iperf3_mbits(out), Some(198.5));
        assert_eq!(iperf3_mbits("nothing"), None);
    }
}

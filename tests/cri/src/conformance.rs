//! The CRI conformance steps of the one-pod walk-through (issue 16), each printing markers
//! that tests/tests/cri.rs asserts for runc and kata alike:
//! - ListContainerStats of the pod while its three containers are created, not started;
//! - a second image (`--image2`, the `client` container's) beside the first (`server`);
//! - capabilities: `logger` adds CAP_SYS_NICE and drops CAP_CHOWN (CapEff of its process and
//!   of an exec, and each used or refused), `server` keeps the default set;
//! - the pod's sysctls read back inside a container;
//! - CRI log lines longer than containerd's limit (16 KiB): `P` parts then `F`, stdout and
//!   stderr; ReopenContainerLog after the file was renamed;
//! - pods asking for the node's PID or IPC namespace (refused under kata).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_cri::v1::{
    Capability, ContainerConfig, ContainerStatsFilter, ListContainerStatsRequest,
    ListPodSandboxRequest, NamespaceMode, PodSandboxConfig, PodSandboxFilter, PodSandboxMetadata,
    RemovePodSandboxRequest, ReopenContainerLogRequest, RunPodSandboxRequest,
    StopPodSandboxRequest,
};

use crate::args::Args;
use crate::calls::{call, exec};
use crate::markers::{marker, outcome, word};
use crate::Runtime;

/// The length of the long line `logger` writes on stdout (`a`s) and stderr (`b`s).
pub const LONG_LINE: usize = 40_000;
/// The pod's sysctls: namespaced in the IPC namespace (the pod has its own even with the host
/// network); `kernel.shm_rmid_forced` is one of Kubernetes' safe set, `kernel.msgmax` is
/// unsafe but allowed when a cluster admits it.
pub const SYSCTLS: &[(&str, &str)] = &[("kernel.shm_rmid_forced", "1"), ("kernel.msgmax", "16384")];

/// The third container's script: the long lines, a start line, then one line after the node
/// created /tmp/go (after ReopenContainerLog).
pub fn logger_script() -> String {
    format!(
        "head -c {LONG_LINE} /dev/zero | tr '\\000' a; echo; \
         (head -c {LONG_LINE} /dev/zero | tr '\\000' b; echo) >&2; echo logger-started; \
         while [ ! -e /tmp/go ]; do sleep 0.2; done; echo reopened-line; exec sleep 1000000"
    )
}

/// `logger`'s security context: CAP_SYS_NICE added, CAP_CHOWN dropped.
pub fn with_capabilities(mut c: ContainerConfig) -> ContainerConfig {
    if let Some(sc) = c.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
        sc.capabilities = Some(Capability {
            add_capabilities: vec!["SYS_NICE".into()],
            drop_capabilities: vec!["CHOWN".into()],
            ..Default::default()
        });
    }
    c
}

/// The pod's sysctls, as the kubelet passes `securityContext.sysctls`.
pub fn sysctls() -> HashMap<String, String> {
    SYSCTLS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// ListContainerStats of the pod while `ids` are created and none started:
/// `created-stats=ok`, `created-stats-count=N`, `created-stats-ids=match|...`.
pub async fn created_stats(rt: &mut Runtime, t: u64, pod: &str, ids: &[String]) {
    let r = call(
        "created-stats",
        t,
        rt.list_container_stats(ListContainerStatsRequest {
            filter: Some(ContainerStatsFilter {
                pod_sandbox_id: pod.into(),
                ..Default::default()
            }),
        }),
    )
    .await;
    outcome("created-stats", &r);
    let Ok(r) = r else { return };
    let mut got: Vec<String> = r
        .stats
        .iter()
        .map(|s| {
            s.attributes
                .as_ref()
                .map(|a| a.id.clone())
                .unwrap_or_default()
        })
        .collect();
    got.sort();
    let mut want = ids.to_vec();
    want.sort();
    marker("created-stats-count", got.len());
    marker(
        "created-stats-ids",
        if got == want {
            "match".to_string()
        } else {
            word(&got.join(","))
        },
    );
}

/// Which image each container runs: `/etc/kata-rs-image` exists only in the second image.
pub async fn images(rt: &mut Runtime, server: &str, client: &str) {
    for (name, id) in [("server", server), ("client", client)] {
        let key = format!("image-file-{name}");
        let r = exec(
            rt,
            &key,
            id,
            &[
                "sh",
                "-c",
                "cat /etc/kata-rs-image 2>/dev/null || echo none",
            ],
            60,
        )
        .await;
        match r {
            Ok((out, _, _)) => marker(&key, word(&out)),
            Err(e) => {
                marker(&key, "failed");
                println!("error| {key}: {e}");
            }
        }
    }
}

/// What a host-network pod's container sees of the network and its name:
/// `netdevs=lo,...` (its network devices), `pod-hostname=`, and the node's `node-hostname=`.
pub async fn host_network(rt: &mut Runtime, id: &str) {
    let probe = "echo $(ls /sys/class/net | sort | tr '\\n' ',') $(hostname)";
    match exec(rt, "host-network", id, &["sh", "-c", probe], 60).await {
        Ok((out, _, _)) => {
            let f: Vec<&str> = out.split_whitespace().collect();
            marker(
                "netdevs",
                f.first().map(|s| s.trim_end_matches(',')).unwrap_or("-"),
            );
            marker("pod-hostname", f.get(1).copied().unwrap_or("-"));
        }
        Err(e) => {
            marker("netdevs", "failed");
            println!("error| netdevs: {e}");
        }
    }
    let node = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    marker("node-hostname", word(node.trim()));
}

/// Capabilities: CapEff of each container's process 1 and of an exec in it, and whether
/// `renice -n -5` (CAP_SYS_NICE) and `chown` (CAP_CHOWN) work there.
pub async fn capabilities(rt: &mut Runtime, server: &str, logger: &str) {
    let probe = "echo $(sed -n 's/^CapEff:[[:space:]]*//p' /proc/1/status) \
                 $(sed -n 's/^CapEff:[[:space:]]*//p' /proc/self/status) \
                 $(busybox renice -n -5 $$ >/dev/null 2>&1 && echo nice-ok || echo nice-refused) \
                 $(touch /tmp/c && chown 1 /tmp/c 2>/dev/null && echo chown-ok || echo chown-refused)";
    for (name, id) in [("server", server), ("logger", logger)] {
        let key = format!("caps-{name}");
        match exec(rt, &key, id, &["sh", "-c", probe], 60).await {
            Ok((out, err, _)) => {
                println!("caps-{name}| {out} {err}");
                let f: Vec<&str> = out.split_whitespace().collect();
                let g = |i: usize| f.get(i).copied().unwrap_or("-");
                marker(&format!("{key}-init"), g(0));
                marker(&format!("{key}-exec"), g(1));
                marker(&format!("{key}-nice"), g(2));
                marker(&format!("{key}-chown"), g(3));
            }
            Err(e) => {
                marker(&format!("{key}-init"), "failed");
                println!("error| {key}-init: {e}");
            }
        }
    }
}

/// The pod's sysctls read back in `id`: `sysctl-NAME=VALUE`.
pub async fn sysctls_read(rt: &mut Runtime, id: &str) {
    for (k, _) in SYSCTLS {
        let path = format!("/proc/sys/{}", k.replace('.', "/"));
        let key = format!("sysctl-{k}");
        match exec(rt, &key, id, &["cat", &path], 60).await {
            Ok((out, err, code)) => {
                marker(&key, word(&out));
                if code != 0 {
                    println!("error| {key}: exit {code}: {err}");
                }
            }
            Err(e) => {
                marker(&key, "failed");
                println!("error| {key}: {e}");
            }
        }
    }
}

/// One CRI log line: (stream, tag, message).
fn parse(line: &str) -> Option<(&str, &str, &str)> {
    let f: Vec<&str> = line.splitn(4, ' ').collect();
    (f.len() == 4).then(|| (f[1], f[2], f[3]))
}

/// The entries of `stream` in `content` that hold only `ch`, up to and with the first `F`:
/// `TAGLEN,...` (e.g. `P16384,P16384,F7232` under containerd's default
/// `max_container_log_line_size`, 16 KiB), or None before the `F` arrived.
pub fn long_line_parts(content: &str, stream: &str, ch: char) -> Option<String> {
    let mut parts = Vec::new();
    for (s, tag, msg) in content.lines().filter_map(parse) {
        if s != stream || msg.is_empty() || !msg.chars().all(|c| c == ch) {
            continue;
        }
        parts.push(format!("{tag}{}", msg.len()));
        if tag == "F" {
            return Some(parts.join(","));
        }
    }
    None
}

/// Whether `content` has an `F` line `msg` on stdout.
fn has_full(content: &str, msg: &str) -> bool {
    content
        .lines()
        .filter_map(parse)
        .any(|(s, tag, m)| s == "stdout" && tag == "F" && m == msg)
}

/// Reads `path` until `ready` says yes or `secs` pass; the last content.
async fn wait_file(path: &str, secs: u64, ready: impl Fn(&str) -> bool) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let c = std::fs::read_to_string(path).ok();
        if c.as_deref().is_some_and(&ready) || Instant::now() > deadline {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The long lines in `logger`'s log (`longline-STREAM=P16384,P16384,F7232`), then
/// ReopenContainerLog after renaming the file: `reopen=ok`, `reopen-new=ok` when the line
/// written afterwards is in a new file, `reopen-old=clean` when the renamed file lacks it.
pub async fn logs(rt: &mut Runtime, a: &Args, logger: &str) {
    let path = format!("{}/logger/0.log", a.log_dir);
    let c = wait_file(&path, 60, |c| {
        has_full(c, "logger-started") && long_line_parts(c, "stderr", 'b').is_some()
    })
    .await
    .unwrap_or_default();
    for (stream, ch) in [("stdout", 'a'), ("stderr", 'b')] {
        marker(
            &format!("longline-{stream}"),
            long_line_parts(&c, stream, ch).unwrap_or_else(|| "missing".into()),
        );
    }
    if long_line_parts(&c, "stdout", 'a').is_none() {
        for l in c.lines() {
            println!("log-logger| {}", l.chars().take(120).collect::<String>());
        }
    }

    // Log rotation as the kubelet does it: rename, then ReopenContainerLog.
    let old = format!("{path}.1");
    if let Err(e) = std::fs::rename(&path, &old) {
        marker("reopen", "failed");
        println!("error| reopen: rename {path}: {e}");
        return;
    }
    let r = call(
        "reopen",
        a.timeout,
        rt.reopen_container_log(ReopenContainerLogRequest {
            container_id: logger.into(),
        }),
    )
    .await;
    outcome("reopen", &r);
    if r.is_err() {
        return;
    }
    if let Err(e) = exec(rt, "reopen-go", logger, &["touch", "/tmp/go"], 60).await {
        println!("error| reopen-go: {e}");
    }
    let new = wait_file(&path, 30, |c| has_full(c, "reopened-line")).await;
    marker(
        "reopen-new",
        match &new {
            Some(c) if has_full(c, "reopened-line") => "ok",
            Some(_) => "missing",
            None => "no-file",
        },
    );
    let old_c = std::fs::read_to_string(&old).unwrap_or_default();
    marker(
        "reopen-old",
        if has_full(&old_c, "reopened-line") {
            "has-the-new-line"
        } else if has_full(&old_c, "logger-started") {
            "clean"
        } else {
            "lost-its-lines"
        },
    );
}

/// Pods asking for the node's PID or IPC namespace: `hostpid-run=ok|failed` (the error on an
/// `error| ` line), the pod stopped and removed when it ran, `hostpid-left=N` pods with its
/// label afterwards; the same for `hostipc`.
pub async fn host_namespaces(rt: &mut Runtime, a: &Args, base: &PodSandboxConfig) {
    let t = a.timeout;
    for kind in ["hostpid", "hostipc"] {
        let mut cfg = base.clone();
        let label = format!("{}-{kind}", a.handler);
        cfg.metadata = Some(PodSandboxMetadata {
            name: format!("cri-{label}"),
            uid: format!("kata-rs-cri-{label}-{}", std::process::id()),
            namespace: "kata-rs-test".into(),
            attempt: 0,
        });
        cfg.labels = HashMap::from([("kata-rs-hostns".to_string(), label.clone())]);
        cfg.log_directory = String::new();
        // runc refuses IPC sysctls in the node's IPC namespace.
        if let Some(l) = cfg.linux.as_mut() {
            l.sysctls.clear();
        }
        if let Some(ns) = cfg
            .linux
            .as_mut()
            .and_then(|l| l.security_context.as_mut())
            .and_then(|s| s.namespace_options.as_mut())
        {
            if kind == "hostpid" {
                ns.pid = NamespaceMode::Node as i32;
            } else {
                ns.ipc = NamespaceMode::Node as i32;
            }
        }
        let key = format!("{kind}-run");
        let r = call(
            &key,
            t,
            rt.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(cfg),
                runtime_handler: a.handler.clone(),
            }),
        )
        .await;
        outcome(&key, &r);
        if let Ok(r) = r {
            let id = r.pod_sandbox_id;
            let s = call(
                &format!("{kind}-stop"),
                t,
                rt.stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                }),
            )
            .await;
            outcome(&format!("{kind}-stop"), &s);
            let s = call(
                &format!("{kind}-remove"),
                t,
                rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id }),
            )
            .await;
            outcome(&format!("{kind}-remove"), &s);
        }
        let left = call(
            &format!("{kind}-list"),
            t,
            rt.list_pod_sandbox(ListPodSandboxRequest {
                filter: Some(PodSandboxFilter {
                    label_selector: HashMap::from([("kata-rs-hostns".to_string(), label)]),
                    ..Default::default()
                }),
            }),
        )
        .await
        .map(|l| l.items.len().to_string());
        marker(
            &format!("{kind}-left"),
            left.unwrap_or_else(|e| format!("error:{}", word(&e))),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_line_parts_reads_p_then_f() {
        let a = |n| "a".repeat(n);
        let log = format!(
            "T stdout F logger-started\nT stdout P {}\nT stderr P {}\nT stdout P {}\nT stdout F {}\nT stdout F {}\n",
            a(16384),
            "b".repeat(16384),
            a(16384),
            a(7232),
            a(3)
        );
        assert_eq!(
            long_line_parts(&log, "stdout", 'a').as_deref(),
            Some("P16384,P16384,F7232")
        );
        assert_eq!(long_line_parts(&log, "stderr", 'b'), None);
        assert!(has_full(&log, "logger-started"));
        assert!(!has_full(&log, "reopened-line"));
    }
}

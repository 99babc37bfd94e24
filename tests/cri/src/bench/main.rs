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

use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

mod args;
mod config;
mod density;
mod iperf3;
mod pod;
mod profile;
mod stats;

use args::parse_args;
use density::{density, meminfo};
use iperf3::iperf3;
use kata_rs_cri::connect;
use pod::{one_pod, Pod};
use profile::{log_time, phases, PHASES};
use stats::{list, median, num};

type Runtime = RuntimeServiceClient<Channel>;

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

//! The pod-network steps (`--pod-net DIR`, tests/scripts/cri-net.sh): the pod's sysctl, port
//! forwarding, what the container sees of eth0, the other pods' pages, waiting for the node.

use std::time::{Duration, Instant};

use crate::args::Args;
use crate::calls::exec;
use crate::config::POD_NET_SYSCTL;
use crate::markers::{marker, word};
use crate::{portforward, Runtime};

/// The pod-network steps (`--pod-net DIR`), see the crate doc.
pub async fn pod_net_steps(
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

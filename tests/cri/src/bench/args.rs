//! kata-rs-cri-bench's command line (see the crate doc in main.rs).

use std::collections::HashMap;

pub struct Args {
    pub socket: String,
    pub image: String,
    pub log_dir: String,
    pub pods: u32,
    pub handlers: Vec<String>,
    pub cgroup_parent: String,
    pub timeout: u64,
    pub containerd_log: Option<String>,
    pub density: u32,
    pub iperf3: Option<String>,
}

pub fn usage() -> ! {
    eprintln!(
        "usage: kata-rs-cri-bench --socket SOCK --image IMAGE --log-dir DIR --pods N \
         [--handlers kata,runc] [--cgroup-parent CG] [--timeout SECONDS] [--containerd-log FILE] [--density CAP] [--iperf3 DIR]"
    );
    std::process::exit(2)
}

pub fn parse_args() -> Args {
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

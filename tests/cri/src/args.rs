//! kata-rs-cri's command line (see the crate doc in main.rs).

use std::collections::HashMap;

#[derive(Clone)]
pub struct Args {
    pub socket: String,
    pub handler: String,
    pub image: String,
    pub log_dir: String,
    pub port: u16,
    pub cgroup_parent: String,
    pub timeout: u64,
    pub pod_net: Option<String>,
    /// `--image2 IMAGE`: the `client` container's image (a second image in the pod).
    pub image2: Option<String>,
    /// `--churn N`: N pods created and removed instead of the one-pod walk-through.
    pub churn: Option<u32>,
    /// `--parallel P`: with `--churn`, P pods at a time.
    pub parallel: u32,
    /// `--propagation-dir DIR`: the mount propagation steps (tests/cri/src/propagation.rs).
    pub propagation_dir: Option<String>,
}

pub fn usage() -> ! {
    eprintln!(
        "usage: kata-rs-cri --socket SOCK --handler HANDLER --image IMAGE --log-dir DIR \
         --port PORT [--cgroup-parent CG] [--timeout SECONDS] [--pod-net DIR] [--image2 IMAGE] \
         [--propagation-dir DIR]"
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
    let churn: Option<u32> = kv
        .remove("churn")
        .map(|n| n.parse().unwrap_or_else(|_| usage()));
    let mut take = |k: &str| kv.remove(k);
    let args = Args {
        socket: take("socket").unwrap_or_else(|| usage()),
        handler: take("handler").unwrap_or_else(|| usage()),
        image: take("image").unwrap_or_else(|| usage()),
        log_dir: take("log-dir").unwrap_or_else(|| usage()),
        churn,
        parallel: take("parallel")
            .map(|n| n.parse().unwrap_or_else(|_| usage()))
            .unwrap_or(1),
        port: take("port")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| if churn.is_some() { 0 } else { usage() }),
        cgroup_parent: take("cgroup-parent").unwrap_or_default(),
        timeout: take("timeout")
            .map(|t| t.parse().unwrap_or_else(|_| usage()))
            .unwrap_or(300),
        pod_net: take("pod-net"),
        image2: take("image2"),
        propagation_dir: take("propagation-dir"),
    };
    if !kv.is_empty() {
        usage()
    }
    args
}

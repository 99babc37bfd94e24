//! kata-rs-task-stats: asks a containerd shim for one task's statistics over the shim's own
//! ttrpc socket (Task.Stats, the call behind `ctr task metrics`) and prints the cgroups v2
//! metrics' network counters, one `net| NAME rx_bytes=… …` line per interface.
//!
//! The integration tests use it because Debian 12's containerd 1.6 predates the `network`
//! field of the cgroup2 Metrics type: it passes the shim's bytes through unchanged but `ctr`
//! cannot print the field. Usage: `kata-rs-task-stats ADDRESS TASK_ID` where ADDRESS is the
//! content of the task bundle's `address` file (`unix:///…`).
use std::process::ExitCode;

use containerd_shim_protos::{
    cgroups_v2::metrics::Metrics, protobuf::Message, shim::shim::StatsRequest,
    shim_async::TaskClient,
};

/// How long the shim gets to answer.
const TIMEOUT_NS: i64 = 30_000_000_000;

async fn stats(address: &str, id: &str) -> Result<Metrics, String> {
    let client = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        ttrpc::asynchronous::Client::connect(address),
    )
    .await
    .map_err(|_| format!("connect {address}: no answer within 10 s"))?
    .map_err(|e| format!("connect {address}: {e}"))?;
    let task = TaskClient::new(client);
    let req = StatsRequest {
        id: id.to_string(),
        ..Default::default()
    };
    let resp = task
        .stats(ttrpc::context::with_timeout(TIMEOUT_NS), &req)
        .await
        .map_err(|e| format!("Task.Stats {id}: {e}"))?;
    let any = resp
        .stats
        .into_option()
        .ok_or("Task.Stats: no stats in the reply")?;
    if !any.type_url.ends_with("io.containerd.cgroups.v2.Metrics") {
        return Err(format!(
            "Task.Stats: type {} is not cgroups v2 Metrics",
            any.type_url
        ));
    }
    Metrics::parse_from_bytes(&any.value).map_err(|e| format!("decode Metrics: {e}"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [address, id] = args.as_slice() else {
        eprintln!("usage: kata-rs-task-stats ADDRESS TASK_ID");
        return ExitCode::from(2);
    };
    match stats(address, id).await {
        Ok(m) => {
            println!("pids| {}", m.pids.current);
            for n in &m.network {
                println!(
                    "net| {} rx_bytes={} rx_packets={} rx_errors={} rx_dropped={} tx_bytes={} tx_packets={} tx_errors={} tx_dropped={}",
                    n.name, n.rx_bytes, n.rx_packets, n.rx_errors, n.rx_dropped,
                    n.tx_bytes, n.tx_packets, n.tx_errors, n.tx_dropped
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kata-rs-task-stats: {e}");
            ExitCode::FAILURE
        }
    }
}

//! Guest-side figures for `kata-rs metrics`: each container's cgroup inside its sandbox's
//! VM, asked of the container's shim over its ttrpc socket (Task.Stats, what `ctr task
//! metrics` shows; the shim gets them from the agent).
//!
//! The containers are found in containerd's task state directory
//! (`/run/containerd/io.containerd.runtime.v2.task/<namespace>/<id>/`, the bundle: its
//! `config.json` has the pod annotations, `address` the shim's socket, which the shim
//! writes there). A container belongs to a kata-rs sandbox when its sandbox id (its own id,
//! or the pod's sandbox from the annotations, `kata_rs_shim::pod`) has a state directory;
//! other runtimes' tasks are left alone. CRI-O keeps its bundles elsewhere: under CRI-O
//! there are host figures only.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    time::Duration,
};

use containerd_shim_protos::{
    cgroups_v2::metrics::Metrics, protobuf::Message, shim::shim::StatsRequest,
    shim_sync::TaskClient,
};

/// containerd's task state directory (containerd 1.6 to 2.x).
pub const CONTAINERD_TASKS: &str = "/run/containerd/io.containerd.runtime.v2.task";
/// The type of the figures the shim answers with.
const METRICS_TYPE: &str = "io.containerd.cgroups.v2.Metrics";

/// One container's figures inside the VM.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GuestStats {
    /// The container's id.
    pub container_id: String,
    /// CPU time, seconds.
    pub cpu_seconds: f64,
    /// Memory in use, bytes.
    pub memory_bytes: u64,
    /// Processes and threads.
    pub pids: u64,
    /// Bytes read from block devices.
    pub read_bytes: u64,
    /// Bytes written to block devices.
    pub write_bytes: u64,
    /// (interface, received bytes, transmitted bytes) in the container's network namespace
    /// (the VM's, for a pod).
    pub network: Vec<(String, u64, u64)>,
}

/// A container of a kata-rs sandbox and where its shim listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// The container's id.
    pub id: String,
    /// Its sandbox's id.
    pub sandbox_id: String,
    /// The shim's ttrpc address (`unix:///...`).
    pub address: String,
}

/// The containers under `task_dir` whose sandbox is one of `sandboxes`, sorted by sandbox
/// then id. A bundle without `address` (a shim still starting) or with bad annotations is
/// skipped.
pub fn tasks(task_dir: &Path, sandboxes: &HashSet<String>) -> Vec<Task> {
    let mut out = Vec::new();
    let dirs = |p: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(p)
            .map(|r| {
                r.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default()
    };
    for ns in dirs(task_dir) {
        for bundle in dirs(&ns) {
            let Some(id) = bundle.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if kata_rs_shim::util::validate_id(id).is_err() {
                continue;
            }
            let Ok(address) = std::fs::read_to_string(bundle.join("address")) else {
                continue;
            };
            let annotations = kata_rs_shim::pod::bundle_annotations(&bundle);
            let Ok(role) = kata_rs_shim::pod::pod_role(id, annotations.as_ref()) else {
                continue;
            };
            let sandbox_id = role.sandbox_id(id).to_string();
            if sandboxes.contains(&sandbox_id) {
                out.push(Task {
                    id: id.to_string(),
                    sandbox_id,
                    address: address.trim().to_string(),
                });
            }
        }
    }
    out.sort_by(|a, b| (&a.sandbox_id, &a.id).cmp(&(&b.sandbox_id, &b.id)));
    out
}

/// The figures of `m`, cgroups v2 metrics as the shim packs them.
pub fn from_metrics(container_id: &str, m: &Metrics) -> GuestStats {
    GuestStats {
        container_id: container_id.to_string(),
        cpu_seconds: m.cpu.usage_usec as f64 / 1e6,
        memory_bytes: m.memory.usage,
        pids: m.pids.current,
        read_bytes: m.io.usage.iter().map(|e| e.rbytes).sum(),
        write_bytes: m.io.usage.iter().map(|e| e.wbytes).sum(),
        network: m
            .network
            .iter()
            .map(|n| (n.name.clone(), n.rx_bytes, n.tx_bytes))
            .collect(),
    }
}

/// Task.Stats of `task` from its shim, within `timeout`.
pub fn task_stats(task: &Task, timeout: Duration) -> Result<GuestStats, String> {
    let client = ttrpc::Client::connect(&task.address)
        .map_err(|e| format!("connect {}: {e}", task.address))?;
    let req = StatsRequest {
        id: task.id.clone(),
        ..Default::default()
    };
    let resp = TaskClient::new(client)
        .stats(
            ttrpc::context::with_timeout(timeout.as_nanos() as i64),
            &req,
        )
        .map_err(|e| format!("Task.Stats {}: {e}", task.id))?;
    let any = resp
        .stats
        .into_option()
        .ok_or_else(|| format!("Task.Stats {}: no figures in the reply", task.id))?;
    if !any.type_url.ends_with(METRICS_TYPE) {
        return Err(format!(
            "Task.Stats {}: type {} is not {METRICS_TYPE}",
            task.id, any.type_url
        ));
    }
    let m = Metrics::parse_from_bytes(&any.value)
        .map_err(|e| format!("Task.Stats {}: {e}", task.id))?;
    Ok(from_metrics(&task.id, &m))
}

//! `make bench`'s summary (issue 15): reads the section results `benches/run.sh` wrote to
//! `target/bench/` (`vmm.json`, `containers.json`, `cri.json`, `io.json`, `template.json`), flattens them into
//! the keys users compare runtimes on (`summary.json`), prints them as a table and draws
//! `summary.png` ([`chart`]). A key whose section did not run (or did not measure it) is
//! `null` and listed in `missing`: nothing here is estimated or made up.

pub mod chart;

use serde_json::{json, Map, Value};
use std::path::Path;

/// The section results, each `Value::Null` when its file is absent or unreadable.
#[derive(Debug, Default, Clone)]
pub struct Sections {
    /// `vmm.json`: section 1, kata-vmm against QEMU microvm.
    pub vmm: Value,
    /// `containers.json`: section 2, `ctr run` and the sleeping containers' memory.
    pub containers: Value,
    /// `cri.json`: pod start, pod churn and the start profile through CRI.
    pub cri: Value,
    /// `io.json`: sections 3 and 4, read/untar in the container, image size.
    pub io: Value,
    /// `template.json`: VM templates, kata-vmm cold boot against `--restore` (and `ctr`: the
    /// shim's template factory through containerd).
    pub template: Value,
}

impl Sections {
    /// Reads `DIR/{vmm,containers,cri,io,template}.json`; a missing or broken file is `Null`
    /// (a warning on stderr for a broken one).
    pub fn load(dir: &Path) -> Sections {
        let read = |name: &str| -> Value {
            let p = dir.join(format!("{name}.json"));
            match std::fs::read_to_string(&p) {
                Ok(s) => serde_json::from_str(&s).unwrap_or_else(|e| {
                    eprintln!("bench-report: {}: {e}", p.display());
                    Value::Null
                }),
                Err(_) => Value::Null,
            }
        };
        Sections {
            vmm: read("vmm"),
            containers: read("containers"),
            cri: read("cri"),
            io: read("io"),
            template: read("template"),
        }
    }
}

/// A number at `path` (keys separated by `.`), if there is one.
fn num(v: &Value, path: &str) -> Option<f64> {
    path.split('.')
        .try_fold(v, |v, k| v.get(k))
        .and_then(Value::as_f64)
}

/// `a / b` rounded to 3 decimals; `None` when either is missing or `b` is 0.
fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => Some((a / b * 1000.0).round() / 1000.0),
        _ => None,
    }
}

fn opt(v: Option<f64>) -> Value {
    v.map_or(Value::Null, |x| {
        if x.fract() == 0.0 && x.abs() < 1e15 {
            json!(x as i64)
        } else {
            json!(x)
        }
    })
}

/// The keys of `summary.json` in table order, with what they mean (the table's rows).
pub const KEYS: &[(&str, &str)] = &[
    ("ratio_ctr_run", "ctr run --rm true, kata / runc (time)"),
    ("ctr_run_ms_kata", "ctr run --rm true, kata, ms"),
    ("ctr_run_ms_runc", "ctr run --rm true, runc, ms"),
    ("ratio_pod_start", "CRI pod start, kata / runc (time)"),
    (
        "pod_start_ms_kata",
        "CRI pod start to container started, kata, ms",
    ),
    (
        "pod_start_ms_runc",
        "CRI pod start to container started, runc, ms",
    ),
    (
        "ratio_pod_churn",
        "CRI pod churn, kata / runc (time per pod)",
    ),
    (
        "pod_churn_ms_kata",
        "CRI pod create+start+stop+remove, kata, ms",
    ),
    (
        "pod_churn_ms_runc",
        "CRI pod create+start+stop+remove, runc, ms",
    ),
    ("ratio_boot", "VMM boot to agent ready, kata-vmm / qemu"),
    ("boot_ms_kata_vmm", "VMM boot to agent ready, kata-vmm, ms"),
    ("boot_ms_qemu", "VMM boot to agent ready, qemu microvm, ms"),
    ("ratio_vmm_cpu", "VMM's own CPU to ready, kata-vmm / qemu"),
    (
        "vmm_cpu_ms_kata_vmm",
        "VMM's own CPU (excl. guest) to ready, kata-vmm, ms",
    ),
    (
        "vmm_cpu_ms_qemu",
        "VMM's own CPU (excl. guest) to ready, qemu, ms",
    ),
    (
        "vmm_user_cpu_ms_kata_vmm",
        "  of which user space, kata-vmm, ms",
    ),
    ("vmm_user_cpu_ms_qemu", "  of which user space, qemu, ms"),
    (
        "host_overhead_kib",
        "idle pod host PSS excl. guest RAM, kata, KiB",
    ),
    (
        "host_overhead_runc_kib",
        "idle pod host PSS (shim), runc, KiB",
    ),
    (
        "guest_used_kib",
        "guest RAM backed by the host (RSS), idle pod, KiB",
    ),
    ("density_pods_per_gib_kata", "idle pods per GiB, kata"),
    ("density_pods_per_gib_runc", "idle pods per GiB, runc"),
    ("ratio_io_read", "read 256 MiB, kata / runc (throughput)"),
    ("io_read_mib_s_kata", "read 256 MiB, kata, MiB/s"),
    ("io_read_mib_s_runc", "read 256 MiB, runc, MiB/s"),
    (
        "ratio_io_untar",
        "untar 10k files, kata / runc (throughput)",
    ),
    ("io_untar_files_s_kata", "untar 10k files, kata, files/s"),
    ("io_untar_files_s_runc", "untar 10k files, runc, files/s"),
    (
        "ratio_iperf3",
        "iperf3 pod to pod, kata / runc (throughput)",
    ),
    ("iperf3_mbit_s_kata", "iperf3 kata pod to kata pod, Mbit/s"),
    ("iperf3_mbit_s_runc", "iperf3 runc pod to runc pod, Mbit/s"),
    (
        "ratio_template_start",
        "kata-vmm to agent answer, restored (map) / cold boot",
    ),
    (
        "template_start_ms_cold",
        "kata-vmm cold boot to agent answer, ms",
    ),
    (
        "template_start_ms_map",
        "kata-vmm --restore (map) to agent answer, ms",
    ),
    (
        "ratio_template_start_copy",
        "kata-vmm to agent answer, restored (copy) / cold",
    ),
    (
        "template_start_ms_copy",
        "kata-vmm --restore (copy) to agent answer, ms",
    ),
    (
        "ratio_template_memory",
        "kata-vmm PSS per idle VM, restored (map) / cold",
    ),
    (
        "template_pss_kib_cold",
        "kata-vmm PSS per idle VM, cold boot, KiB",
    ),
    (
        "template_pss_kib_map",
        "kata-vmm PSS per idle VM, restored (map), KiB",
    ),
    (
        "ratio_template_memory_copy",
        "kata-vmm PSS per idle VM, restored (copy) / cold",
    ),
    (
        "template_pss_kib_copy",
        "kata-vmm PSS per idle VM, restored (copy), KiB",
    ),
    (
        "ratio_template_sandbox_start",
        "shim's sandbox start (VM, agent, share, network), template / cold",
    ),
    (
        "template_sandbox_start_ms",
        "shim's sandbox start from a template, ms",
    ),
    (
        "template_sandbox_cold_ms",
        "shim's sandbox start by a cold boot, ms",
    ),
    (
        "ratio_template_sandbox_memory",
        "PSS per idle sandbox (shim + kata-vmm + virtiofsd), template / cold",
    ),
    (
        "template_sandbox_pss_kib",
        "PSS per idle sandbox from a template, KiB",
    ),
    (
        "template_sandbox_pss_kib_cold",
        "PSS per idle sandbox booted cold, KiB",
    ),
    (
        "ratio_template_ctr_run",
        "ctr run --rm true, [factory] template / cold",
    ),
    (
        "template_ctr_run_ms",
        "ctr run --rm true, [factory] template, ms",
    ),
    ("template_ctr_run_cold_ms", "ctr run --rm true, cold, ms"),
];

/// The template section's keys of `summary.json` (a subset of [`KEYS`]): `template.json`'s
/// medians and means, the ratios recomputed from them. The shim factory's ratio is there only
/// when every timed `ctr run` of the template configuration started from the template
/// (`ctr.from_template` = `ctr.n`): a run that fell back to a cold boot is no template start.
pub fn template_keys(t: &Value) -> Vec<(&'static str, Option<f64>)> {
    let (cold, map, copy) = (
        num(t, "start_ms_cold"),
        num(t, "start_ms_map"),
        num(t, "start_ms_copy"),
    );
    let (pcold, pmap, pcopy) = (
        num(t, "pss_kib_cold"),
        num(t, "pss_kib_map"),
        num(t, "pss_kib_copy"),
    );
    let all_from_template = matches!(
        (num(t, "ctr.from_template"), num(t, "ctr.n")),
        (Some(f), Some(n)) if n > 0.0 && f == n
    );
    let (sandbox, ctr_run) = if all_from_template {
        (
            ratio(
                num(t, "ctr.sandbox_start_ms_template"),
                num(t, "ctr.sandbox_start_ms_cold"),
            ),
            ratio(num(t, "ctr.start_ms_template"), num(t, "ctr.start_ms_cold")),
        )
    } else {
        (None, None)
    };
    let (smem, smem_cold) = (
        num(t, "ctr.sandbox_pss_kib_template"),
        num(t, "ctr.sandbox_pss_kib_cold"),
    );
    vec![
        ("ratio_template_start", ratio(map, cold)),
        ("template_start_ms_cold", cold),
        ("template_start_ms_map", map),
        ("ratio_template_start_copy", ratio(copy, cold)),
        ("template_start_ms_copy", copy),
        ("ratio_template_memory", ratio(pmap, pcold)),
        ("template_pss_kib_cold", pcold),
        ("template_pss_kib_map", pmap),
        ("ratio_template_memory_copy", ratio(pcopy, pcold)),
        ("template_pss_kib_copy", pcopy),
        ("ratio_template_sandbox_start", sandbox),
        (
            "template_sandbox_start_ms",
            num(t, "ctr.sandbox_start_ms_template"),
        ),
        (
            "template_sandbox_cold_ms",
            num(t, "ctr.sandbox_start_ms_cold"),
        ),
        ("ratio_template_sandbox_memory", ratio(smem, smem_cold)),
        ("template_sandbox_pss_kib", smem),
        ("template_sandbox_pss_kib_cold", smem_cold),
        ("ratio_template_ctr_run", ctr_run),
        ("template_ctr_run_ms", num(t, "ctr.start_ms_template")),
        ("template_ctr_run_cold_ms", num(t, "ctr.start_ms_cold")),
    ]
}

/// Flattens the sections into `summary.json`'s object: every key of [`KEYS`] (a number or
/// `null`), the host-overhead parts, `profile` (the start-time phases, `[{phase, ms}]`),
/// `node`, `date`, `git`, and `missing` (the keys of [`KEYS`] that are `null`).
pub fn summarize(s: &Sections) -> Value {
    let (v, c, r, io) = (&s.vmm, &s.containers, &s.cri, &s.io);
    let mut m = Map::new();
    let mut put = |k: &str, x: Option<f64>| {
        m.insert(k.to_string(), opt(x));
    };

    let (ck, cr) = (num(c, "start_ms_kata"), num(c, "start_ms_runc"));
    put("ratio_ctr_run", ratio(ck, cr));
    put("ctr_run_ms_kata", ck);
    put("ctr_run_ms_runc", cr);

    let (sk, sr) = (num(r, "pod_start_ms_kata"), num(r, "pod_start_ms_runc"));
    put("ratio_pod_start", ratio(sk, sr));
    put("pod_start_ms_kata", sk);
    put("pod_start_ms_runc", sr);
    let (pk, pr) = (num(r, "pod_cycle_ms_kata"), num(r, "pod_cycle_ms_runc"));
    put("ratio_pod_churn", ratio(pk, pr));
    put("pod_churn_ms_kata", pk);
    put("pod_churn_ms_runc", pr);
    put("pod_churn_pods", num(r, "n"));

    let (bo, bq) = (num(v, "boot_ms_ours"), num(v, "boot_ms_qemu"));
    put("ratio_boot", ratio(bo, bq));
    put("boot_ms_kata_vmm", bo);
    put("boot_ms_qemu", bq);
    let (uo, uq) = (num(v, "vmm_cpu_ms_ours"), num(v, "vmm_cpu_ms_qemu"));
    put("ratio_vmm_cpu", ratio(uo, uq));
    put("vmm_cpu_ms_kata_vmm", uo);
    put("vmm_cpu_ms_qemu", uq);
    put("vmm_user_cpu_ms_kata_vmm", num(v, "vmm_user_cpu_ms_ours"));
    put("vmm_user_cpu_ms_qemu", num(v, "vmm_user_cpu_ms_qemu"));

    // Idle pod: the sleeping kata container of section 2 (shim + kata-vmm + virtiofsd, each
    // without the guest RAM mapping); else section 3's idle io pod.
    let (host, shim, vmm, vfsd, runc) = if num(c, "kata_host_overhead_kib").is_some() {
        (
            num(c, "kata_host_overhead_kib"),
            num(c, "kata_shim_pss_kib"),
            num(c, "kata_vmm_pss_kib"),
            num(c, "kata_virtiofsd_pss_kib"),
            num(c, "runc_shim_pss_kib"),
        )
    } else {
        (
            num(io, "kata_pod_pss_kib"),
            num(io, "kata_shim_pss_kib"),
            num(io, "kata_vmm_pss_kib"),
            num(io, "virtiofsd_pss_kib"),
            num(io, "runc_pod_pss_kib"),
        )
    };
    put("host_overhead_kib", host);
    put("host_overhead_shim_kib", shim);
    put("host_overhead_vmm_kib", vmm);
    put("host_overhead_virtiofsd_kib", vfsd);
    put("host_overhead_runc_kib", runc);
    put("guest_used_kib", num(c, "kata_guest_used_kib"));
    put("guest_mem_mib", num(c, "kata_guest_mem_mib"));

    // Idle pods left running until a failure or the cap; pods per GiB of node memory from
    // the node's MemAvailable drop.
    for h in ["kata", "runc"] {
        put(
            &format!("density_pods_per_gib_{h}"),
            num(r, &format!("density_pods_per_gib_{h}")),
        );
        put(
            &format!("density_pods_{h}"),
            num(r, &format!("density_pods_{h}")),
        );
        put(
            &format!("density_kib_per_pod_{h}"),
            num(r, &format!("density_kib_per_pod_{h}")),
        );
    }
    put("node_mem_total_kib", num(r, "node_mem_total_kib"));

    let (rk, rr) = (num(io, "read_mib_s_kata"), num(io, "read_mib_s_runc"));
    put("ratio_io_read", ratio(rk, rr));
    put("io_read_mib_s_kata", rk);
    put("io_read_mib_s_runc", rr);
    let (tk, tr) = (num(io, "untar_files_s_kata"), num(io, "untar_files_s_runc"));
    put("ratio_io_untar", ratio(tk, tr));
    put("io_untar_files_s_kata", tk);
    put("io_untar_files_s_runc", tr);
    let (ik, ir) = (num(r, "iperf3_mbit_s_kata"), num(r, "iperf3_mbit_s_runc"));
    put("ratio_iperf3", ratio(ik, ir));
    put("iperf3_mbit_s_kata", ik);
    put("iperf3_mbit_s_runc", ir);

    for (k, x) in template_keys(&s.template) {
        put(k, x);
    }

    let profile = r
        .get("profile")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter(|p| p.get("phase").is_some() && num(p, "ms").is_some())
                .cloned()
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let total: f64 = profile.iter().filter_map(|p| num(p, "ms")).sum();
    m.insert(
        "profile_total_ms".into(),
        opt((!profile.is_empty()).then_some(total)),
    );
    m.insert("profile".into(), Value::Array(profile));

    let missing: Vec<Value> = KEYS
        .iter()
        .filter(|(k, _)| m.get(*k).is_none_or(Value::is_null))
        .map(|(k, _)| json!(k))
        .collect();
    m.insert("missing".into(), Value::Array(missing));
    let meta = [v, c, r, io, &s.template];
    for k in ["node", "date", "git"] {
        let x = meta.iter().find_map(|s| s.get(k).filter(|x| x.is_string()));
        m.insert(k.into(), x.cloned().unwrap_or(Value::Null));
    }
    let n = meta.iter().find_map(|s| num(s, "n"));
    m.insert("n".into(), opt(n));
    Value::Object(m)
}

/// The table `make bench` prints: one row per key of [`KEYS`] (`-` where null), then the
/// start-time profile.
pub fn table(sum: &Value) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "kata-rs bench summary (node {}, N={}, {}, git {})\n",
        sum["node"].as_str().unwrap_or("?"),
        sum["n"],
        sum["date"].as_str().unwrap_or("?"),
        sum["git"].as_str().unwrap_or("?")
    ));
    out.push_str(&format!(
        "| {:<52} | {:<28} | {:>10} |\n",
        "", "key", "value"
    ));
    out.push_str(&format!("| {:-<52} | {:-<28} | {:->10} |\n", "", "", ""));
    for (k, what) in KEYS {
        let v = match &sum[*k] {
            Value::Null => "-".to_string(),
            x => x.to_string(),
        };
        out.push_str(&format!("| {what:<52} | {k:<28} | {v:>10} |\n"));
    }
    if let Some(p) = sum["profile"].as_array().filter(|p| !p.is_empty()) {
        out.push_str(&format!(
            "kata pod start profile (ms, median over the pods): {}; total {}\n",
            p.iter()
                .map(|x| format!("{} {}", x["phase"].as_str().unwrap_or("?"), x["ms"]))
                .collect::<Vec<_>>()
                .join(", "),
            sum["profile_total_ms"]
        ));
    }
    if let Some(m) = sum["missing"].as_array().filter(|m| !m.is_empty()) {
        let names: Vec<&str> = m.iter().filter_map(Value::as_str).collect();
        out.push_str(&format!("not measured in this run: {}\n", names.join(", ")));
    }
    out
}

/// The command that regenerates `deploy/runtimeclass.yaml` after `make bench` (named in the
/// file beside the values).
pub const RUNTIMECLASS_COMMAND: &str =
    "cargo run -q --release -p kata-rs-bench-report -- --runtimeclass target/bench > deploy/runtimeclass.yaml";
/// The margin on the measured memory, percent (as `kata-rs overhead`'s default).
pub const RUNTIMECLASS_MARGIN_PERCENT: u32 = 25;
/// `overhead.podFixed.cpu`, millicores: an estimate, `make bench` does not measure idle CPU
/// (`kata-rs overhead` does, on a node).
pub const RUNTIMECLASS_CPU_MILLIS: u32 = 250;

/// `deploy/runtimeclass.yaml` from a summary: `overhead.podFixed.memory` = `host_overhead_kib`
/// (shim + kata-vmm + virtiofsd PSS, excl. guest RAM) + `guest_used_kib` (the guest RAM the host
/// backs for an idle pod: the guest's fixed cost, kernel + agent + an idle container), plus
/// [`RUNTIMECLASS_MARGIN_PERCENT`], rounded up to MiB; the figures, their run and the command
/// in the comments. `None` when either figure is missing (nothing is estimated).
pub fn runtimeclass(sum: &Value) -> Option<String> {
    let host = num(sum, "host_overhead_kib")?;
    let guest = num(sum, "guest_used_kib")?;
    let kib = |k: &str| num(sum, k).map_or("?".to_string(), |x| format!("{x:.0}"));
    let s = |k: &str| sum[k].as_str().unwrap_or("?").to_string();
    let total_mib = (host + guest) / 1024.0;
    let factor = 1.0 + f64::from(RUNTIMECLASS_MARGIN_PERCENT) / 100.0;
    let mem_mib = (total_mib * factor).ceil().max(1.0) as u64;
    let vm = num(sum, "guest_mem_mib").map_or("?".to_string(), |x| format!("{x:.0}"));
    Some(format!(
        "# Kubernetes RuntimeClass for kata-rs: pods with `runtimeClassName: kata` run in a microVM\n\
         # through containerd's `kata` runtime handler (deploy/containerd-config.toml).\n\
         #\n\
         # overhead.podFixed is what a pod's VM costs beyond its containers' requests (the scheduler\n\
         # adds it to the pod's requests, the kubelet to its cgroup limits). Generated, after\n\
         # `make bench`, by\n\
         #   {cmd}\n\
         # from target/bench/summary.json (node {node}, {date}, git {git}; docs/performance.md):\n\
         # an idle busybox pod in a {vm} MiB, 1 vCPU VM (the bench node's configuration; the guest\n\
         # kernel's page array, ~1.6 % of guest memory, grows with the VM size: the shim's default\n\
         # 512 MiB VM touches ~4 MiB more, within the margin)\n\
         #   memory = host_overhead_kib {host:.0} (PSS excl. guest RAM: shim {shim} + kata-vmm {vmm}\n\
         #            + virtiofsd {vfsd} KiB)\n\
         #          + guest_used_kib {guest:.0} (guest RAM the host backs: guest kernel, agent, idle\n\
         #            container, i.e. the guest's fixed cost)\n\
         #          = {total_mib:.1} MiB, + {margin} % margin, rounded up: {mem_mib}Mi\n\
         #   cpu    = {cpu}m, an estimate: make bench does not measure idle CPU; `kata-rs overhead`\n\
         #            measures both on a node with a running sandbox (deploy/README.md)\n\
         # A larger VM costs more: re-measure after changing hypervisor.memory_mib / vcpus, and\n\
         # mind pods that resize their VM with the io.katacontainers.config.hypervisor.\n\
         # default_memory / default_vcpus annotations (hypervisor.enable_annotations).\n\
         apiVersion: node.k8s.io/v1\n\
         kind: RuntimeClass\n\
         metadata:\n  name: kata\n\
         handler: kata\n\
         overhead:\n  podFixed:\n    memory: \"{mem_mib}Mi\"\n    cpu: \"{cpu}m\"\n\
         scheduling:\n  nodeSelector:\n    katacontainers.io/kata-runtime: \"true\"\n",
        cmd = RUNTIMECLASS_COMMAND,
        node = s("node"),
        date = s("date"),
        git = s("git"),
        shim = kib("host_overhead_shim_kib"),
        vmm = kib("host_overhead_vmm_kib"),
        vfsd = kib("host_overhead_virtiofsd_kib"),
        margin = RUNTIMECLASS_MARGIN_PERCENT,
        cpu = RUNTIMECLASS_CPU_MILLIS,
    ))
}

#[cfg(test)]
mod tests;

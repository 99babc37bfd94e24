//! `kata-rs metrics`: per-sandbox figures of the host side in Prometheus text format, like
//! kata-monitor.
//!
//! Every sandbox the shim runs has a state directory `<runtime.state_dir>/<sandbox id>/`
//! (shim/src/sandbox.rs) holding `kata-vmm.pid`, `virtiofsd.pid` and, when the sandbox has a
//! host cgroup, `host-cgroup` (its path under the cgroup v2 root, shim/src/host_cgroup.rs).
//! From those:
//!
//! - per process (`process` = `vmm`, `virtiofsd`, `shim`): CPU seconds (`/proc/PID/stat`),
//!   RSS (`status`), PSS (`smaps_rollup`), threads, bytes read and written at the storage
//!   layer (`io`). A pid file whose process is gone, or whose pid now belongs to another
//!   program (`comm` differs), gives no figures. The shim is the sandbox cgroup's
//!   `containerd-shim` process, else the VMM's parent if that is one.
//! - per sandbox cgroup: CPU seconds (`cpu.stat` `usage_usec`), memory (`memory.current`,
//!   guest RAM the VMM touched included), pids.
//!
//! - per container, inside the VM (`crate::guest`, containerd only): CPU seconds, memory,
//!   pids, block bytes and interface bytes, from the container's shim (Task.Stats).

use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use crate::prom::{Family, Kind};

/// The VMM's pid file in a sandbox's state directory.
pub const VMM_PID_FILE: &str = kata_rs_shim::vmm::PID_FILE;
/// virtiofsd's pid file.
pub const VIRTIOFSD_PID_FILE: &str = kata_rs_shim::virtiofsd::PID_FILE;
/// The sandbox's host cgroup record (shim/src/host_cgroup.rs).
pub const CGROUP_RECORD: &str = kata_rs_shim::host_cgroup::RECORD_FILE;

/// Where the figures come from (the node's, or a test's fake trees).
#[derive(Debug, Clone)]
pub struct Sources {
    /// The shim's `runtime.state_dir`: one directory per sandbox.
    pub state_dir: PathBuf,
    /// procfs.
    pub proc: PathBuf,
    /// The cgroup v2 root.
    pub cgroup_root: PathBuf,
    /// containerd's task state directory, for the guest-side figures (`None`: none).
    pub containerd_tasks: Option<PathBuf>,
}

/// One host process's figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcStats {
    /// Its pid.
    pub pid: u32,
    /// User + system CPU time, seconds.
    pub cpu_seconds: f64,
    /// Resident set size, bytes.
    pub rss_bytes: u64,
    /// Proportional set size, bytes (`None`: smaps_rollup not readable).
    pub pss_bytes: Option<u64>,
    /// Threads.
    pub threads: u64,
    /// Bytes read from storage (`None`: `io` not readable).
    pub read_bytes: Option<u64>,
    /// Bytes written to storage.
    pub write_bytes: Option<u64>,
}

/// A sandbox's host cgroup figures (each `None` when its file is missing).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CgroupStats {
    /// CPU time of everything in it, seconds.
    pub cpu_seconds: Option<f64>,
    /// Memory charged to it, bytes.
    pub memory_bytes: Option<u64>,
    /// Processes and threads in it.
    pub pids: Option<u64>,
}

/// One sandbox's figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SandboxStats {
    /// Its id (the state directory's name).
    pub id: String,
    /// (`vmm` / `virtiofsd` / `shim`, figures) of the processes found.
    pub processes: Vec<(&'static str, ProcStats)>,
    /// Its host cgroup's figures, if it has one.
    pub cgroup: Option<CgroupStats>,
    /// Its containers' figures inside the VM.
    pub guest: Vec<crate::guest::GuestStats>,
}

/// What one scrape found.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// The sandboxes, sorted by id.
    pub sandboxes: Vec<SandboxStats>,
    /// What could not be read (also counted in `kata_rs_metrics_scrape_errors`).
    pub errors: Vec<String>,
}

/// The first number on the line of `text` that starts with `key` (e.g. `VmRSS:`).
fn field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// utime + stime (clock ticks) and num_threads from `/proc/PID/stat`; the fields after
/// `comm`, which may itself hold spaces and parentheses, are found after the last `)`.
pub fn parse_stat(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // rest: " state ppid ..." -> field 3 of stat(5) is index 0 here.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let threads: u64 = f.get(17)?.parse().ok()?;
    Some((utime + stime, threads))
}

/// The parent pid from `/proc/PID/stat`.
fn parse_ppid(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, 100 when it fails).
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf only reads a constant of the C library; no memory is passed.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// A process's `comm` (without the line feed).
fn comm(proc: &Path, pid: u32) -> Option<String> {
    std::fs::read_to_string(proc.join(pid.to_string()).join("comm"))
        .ok()
        .map(|s| s.trim_end_matches('\n').to_string())
}

/// The figures of process `pid` if its `comm` starts with `comm_prefix`.
pub fn process_stats(
    proc: &Path,
    pid: u32,
    comm_prefix: &str,
    ticks: u64,
) -> Result<ProcStats, String> {
    let dir = proc.join(pid.to_string());
    match comm(proc, pid) {
        None => return Err(format!("process {pid} is gone")),
        Some(c) if !c.starts_with(comm_prefix) => {
            return Err(format!(
                "process {pid} is {c:?}, not {comm_prefix:?} (a stale pid file)"
            ))
        }
        Some(_) => {}
    }
    let stat = std::fs::read_to_string(dir.join("stat"))
        .map_err(|e| format!("{}: {e}", dir.join("stat").display()))?;
    let (ticks_used, threads) = parse_stat(&stat)
        .ok_or_else(|| format!("{}: unexpected format", dir.join("stat").display()))?;
    let status = std::fs::read_to_string(dir.join("status"))
        .map_err(|e| format!("{}: {e}", dir.join("status").display()))?;
    // Kernel threads and zombies have no VmRSS: 0.
    let rss_kib = field(&status, "VmRSS:").unwrap_or(0);
    let pss_kib = std::fs::read_to_string(dir.join("smaps_rollup"))
        .ok()
        .and_then(|t| field(&t, "Pss:"));
    let io = std::fs::read_to_string(dir.join("io")).ok();
    Ok(ProcStats {
        pid,
        cpu_seconds: ticks_used as f64 / ticks as f64,
        rss_bytes: rss_kib * 1024,
        pss_bytes: pss_kib.map(|k| k * 1024),
        threads,
        read_bytes: io.as_deref().and_then(|t| field(t, "read_bytes:")),
        write_bytes: io.as_deref().and_then(|t| field(t, "write_bytes:")),
    })
}

/// The pid in a pid file (`None` when there is none).
fn read_pid(path: &Path) -> Option<Result<u32, String>> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(
        text.trim()
            .parse::<u32>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{}: not a pid", path.display())),
    )
}

/// The sandbox's host cgroup directory from its record, if the record is sound (relative,
/// no `..`).
fn cgroup_dir(src: &Sources, sandbox_dir: &Path) -> Option<Result<PathBuf, String>> {
    let rec = sandbox_dir.join(CGROUP_RECORD);
    let text = std::fs::read_to_string(&rec).ok()?;
    let rel = Path::new(text.trim());
    let sound = !text.trim().is_empty()
        && rel.components().all(|c| {
            matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::RootDir
            )
        });
    Some(if sound {
        Ok(src.cgroup_root.join(rel.strip_prefix("/").unwrap_or(rel)))
    } else {
        Err(format!("{}: not a cgroup path", rec.display()))
    })
}

/// The figures of cgroup `dir`.
pub fn cgroup_stats(dir: &Path) -> Result<CgroupStats, String> {
    if !dir.is_dir() {
        return Err(format!("{} is gone", dir.display()));
    }
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
    Ok(CgroupStats {
        cpu_seconds: read("cpu.stat")
            .and_then(|t| field(&t, "usage_usec"))
            .map(|us| us as f64 / 1e6),
        memory_bytes: read("memory.current").and_then(|t| t.trim().parse().ok()),
        pids: read("pids.current").and_then(|t| t.trim().parse().ok()),
    })
}

/// Collects the figures of every sandbox under `src.state_dir`. A missing state directory
/// is no sandbox, not an error.
pub fn collect(src: &Sources) -> Scrape {
    let ticks = clock_ticks();
    let mut scrape = Scrape::default();
    let Ok(entries) = std::fs::read_dir(&src.state_dir) else {
        return scrape;
    };
    let mut dirs: Vec<(String, PathBuf)> = entries
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            kata_rs_shim::util::validate_id(&name).ok()?;
            Some((name, e.path()))
        })
        .collect();
    dirs.sort();
    for (id, dir) in dirs {
        let mut s = SandboxStats {
            id: id.clone(),
            ..Default::default()
        };
        let mut vmm_pid = None;
        for (role, file, comm) in [
            ("vmm", VMM_PID_FILE, "kata-vmm"),
            ("virtiofsd", VIRTIOFSD_PID_FILE, "virtiofsd"),
        ] {
            match read_pid(&dir.join(file)) {
                None => {}
                Some(Err(e)) => scrape.errors.push(format!("sandbox {id}: {e}")),
                Some(Ok(pid)) => match process_stats(&src.proc, pid, comm, ticks) {
                    Ok(p) => {
                        if role == "vmm" {
                            vmm_pid = Some(pid);
                        }
                        s.processes.push((role, p));
                    }
                    Err(e) => scrape.errors.push(format!("sandbox {id}: {role}: {e}")),
                },
            }
        }
        let cg = match cgroup_dir(src, &dir) {
            None => None,
            Some(Err(e)) => {
                scrape.errors.push(format!("sandbox {id}: {e}"));
                None
            }
            Some(Ok(d)) => Some(d),
        };
        // The shim: a containerd-shim process in the sandbox's cgroup, else the VMM's
        // parent.
        let mut candidates: Vec<u32> = cg
            .as_ref()
            .and_then(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default();
        if let Some(v) = vmm_pid {
            let ppid = std::fs::read_to_string(src.proc.join(v.to_string()).join("stat"))
                .ok()
                .and_then(|t| parse_ppid(&t));
            candidates.extend(ppid);
        }
        if let Some(pid) = candidates
            .into_iter()
            .find(|p| comm(&src.proc, *p).is_some_and(|c| c.starts_with("containerd-shim")))
        {
            match process_stats(&src.proc, pid, "containerd-shim", ticks) {
                Ok(p) => s.processes.push(("shim", p)),
                Err(e) => scrape.errors.push(format!("sandbox {id}: shim: {e}")),
            }
        }
        if let Some(d) = cg {
            match cgroup_stats(&d) {
                Ok(c) => s.cgroup = Some(c),
                Err(e) => scrape
                    .errors
                    .push(format!("sandbox {id}: host cgroup: {e}")),
            }
        }
        scrape.sandboxes.push(s);
    }
    if let Some(dir) = &src.containerd_tasks {
        let ids = scrape.sandboxes.iter().map(|s| s.id.clone()).collect();
        for t in crate::guest::tasks(dir, &ids) {
            match crate::guest::task_stats(&t, GUEST_TIMEOUT) {
                Ok(g) => {
                    if let Some(s) = scrape.sandboxes.iter_mut().find(|s| s.id == t.sandbox_id) {
                        s.guest.push(g);
                    }
                }
                Err(e) => scrape
                    .errors
                    .push(format!("sandbox {}: container {}: {e}", t.sandbox_id, t.id)),
            }
        }
    }
    scrape
}

/// How long one shim gets to answer Task.Stats.
const GUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The metric families of a scrape (names `kata_rs_...`) that took `seconds`.
pub fn families(scrape: &Scrape, seconds: f64) -> Vec<Family> {
    let mut sandboxes = Family::new(
        "kata_rs_sandboxes",
        "Sandboxes with a state directory on this node.",
        Kind::Gauge,
    );
    sandboxes.push(&[], scrape.sandboxes.len() as f64);
    let mut cpu = Family::new(
        "kata_rs_process_cpu_seconds_total",
        "User and system CPU time of a sandbox's host process (process: vmm, virtiofsd, shim).",
        Kind::Counter,
    );
    let mut rss = Family::new(
        "kata_rs_process_resident_memory_bytes",
        "Resident set size of a sandbox's host process.",
        Kind::Gauge,
    );
    let mut pss = Family::new(
        "kata_rs_process_proportional_memory_bytes",
        "Proportional set size (PSS) of a sandbox's host process: shared pages divided among their users.",
        Kind::Gauge,
    );
    let mut threads = Family::new(
        "kata_rs_process_threads",
        "Threads of a sandbox's host process.",
        Kind::Gauge,
    );
    let mut read = Family::new(
        "kata_rs_process_storage_read_bytes_total",
        "Bytes a sandbox's host process made the kernel read from storage.",
        Kind::Counter,
    );
    let mut written = Family::new(
        "kata_rs_process_storage_written_bytes_total",
        "Bytes a sandbox's host process made the kernel write to storage.",
        Kind::Counter,
    );
    let mut cg_cpu = Family::new(
        "kata_rs_sandbox_cgroup_cpu_seconds_total",
        "CPU time of everything in the sandbox's host cgroup (cpu.stat usage_usec).",
        Kind::Counter,
    );
    let mut cg_mem = Family::new(
        "kata_rs_sandbox_cgroup_memory_bytes",
        "Memory charged to the sandbox's host cgroup (memory.current), guest RAM the VMM touched included.",
        Kind::Gauge,
    );
    let mut cg_pids = Family::new(
        "kata_rs_sandbox_cgroup_pids",
        "Processes and threads in the sandbox's host cgroup (pids.current).",
        Kind::Gauge,
    );
    let mut g_cpu = Family::new(
        "kata_rs_guest_cpu_seconds_total",
        "CPU time of a container's cgroup inside the sandbox's VM.",
        Kind::Counter,
    );
    let mut g_mem = Family::new(
        "kata_rs_guest_memory_bytes",
        "Memory in use by a container's cgroup inside the VM.",
        Kind::Gauge,
    );
    let mut g_pids = Family::new(
        "kata_rs_guest_pids",
        "Processes and threads of a container inside the VM.",
        Kind::Gauge,
    );
    let mut g_read = Family::new(
        "kata_rs_guest_storage_read_bytes_total",
        "Bytes a container read from block devices inside the VM.",
        Kind::Counter,
    );
    let mut g_written = Family::new(
        "kata_rs_guest_storage_written_bytes_total",
        "Bytes a container wrote to block devices inside the VM.",
        Kind::Counter,
    );
    let mut g_rx = Family::new(
        "kata_rs_guest_network_receive_bytes_total",
        "Bytes received on an interface of a container's network namespace inside the VM.",
        Kind::Counter,
    );
    let mut g_tx = Family::new(
        "kata_rs_guest_network_transmit_bytes_total",
        "Bytes sent on an interface of a container's network namespace inside the VM.",
        Kind::Counter,
    );
    for s in &scrape.sandboxes {
        for g in &s.guest {
            let l = [
                ("sandbox_id", s.id.as_str()),
                ("container_id", g.container_id.as_str()),
            ];
            g_cpu.push(&l, g.cpu_seconds);
            g_mem.push(&l, g.memory_bytes as f64);
            g_pids.push(&l, g.pids as f64);
            g_read.push(&l, g.read_bytes as f64);
            g_written.push(&l, g.write_bytes as f64);
            for (name, rx, tx) in &g.network {
                let l = [
                    ("sandbox_id", s.id.as_str()),
                    ("container_id", g.container_id.as_str()),
                    ("interface", name.as_str()),
                ];
                g_rx.push(&l, *rx as f64);
                g_tx.push(&l, *tx as f64);
            }
        }
        for (role, p) in &s.processes {
            let l = [("sandbox_id", s.id.as_str()), ("process", *role)];
            cpu.push(&l, p.cpu_seconds);
            rss.push(&l, p.rss_bytes as f64);
            threads.push(&l, p.threads as f64);
            if let Some(v) = p.pss_bytes {
                pss.push(&l, v as f64);
            }
            if let Some(v) = p.read_bytes {
                read.push(&l, v as f64);
            }
            if let Some(v) = p.write_bytes {
                written.push(&l, v as f64);
            }
        }
        if let Some(c) = &s.cgroup {
            let l = [("sandbox_id", s.id.as_str())];
            if let Some(v) = c.cpu_seconds {
                cg_cpu.push(&l, v);
            }
            if let Some(v) = c.memory_bytes {
                cg_mem.push(&l, v as f64);
            }
            if let Some(v) = c.pids {
                cg_pids.push(&l, v as f64);
            }
        }
    }
    let mut errors = Family::new(
        "kata_rs_metrics_scrape_errors",
        "Figures that could not be read in this scrape (kata-rs metrics logs each).",
        Kind::Gauge,
    );
    errors.push(&[], scrape.errors.len() as f64);
    let mut duration = Family::new(
        "kata_rs_metrics_scrape_duration_seconds",
        "How long this scrape took.",
        Kind::Gauge,
    );
    duration.push(&[], seconds);
    vec![
        sandboxes, cpu, rss, pss, threads, read, written, cg_cpu, cg_mem, cg_pids, g_cpu, g_mem,
        g_pids, g_read, g_written, g_rx, g_tx, errors, duration,
    ]
}

/// One scrape in the text format; what could not be read is returned beside it.
pub fn scrape_text(src: &Sources) -> (String, Vec<String>) {
    let t0 = Instant::now();
    let s = collect(src);
    let text = crate::prom::render(&families(&s, t0.elapsed().as_secs_f64()));
    (text, s.errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `/proc/PID/stat` line with `comm`, ppid, utime, stime and num_threads set.
    pub(crate) fn stat_line(
        pid: u32,
        comm: &str,
        ppid: u32,
        utime: u64,
        stime: u64,
        threads: u64,
    ) -> String {
        format!(
            "{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 4194560 100 0 0 0 {utime} {stime} 0 0 20 0 {threads} 0 12345 1000000 200 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
        )
    }

    #[test]
    fn stat_fields_survive_odd_comm() {
        let s = stat_line(42, "a) b (c", 7, 250, 50, 9);
        assert_eq!(parse_stat(&s), Some((300, 9)));
        assert_eq!(parse_ppid(&s), Some(7));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1 2"), None);
    }

    #[test]
    fn this_process_has_figures() {
        let pid = std::process::id();
        let me = comm(Path::new("/proc"), pid).unwrap();
        let p = process_stats(Path::new("/proc"), pid, &me, clock_ticks()).unwrap();
        assert_eq!(p.pid, pid);
        assert!(p.rss_bytes > 0 && p.threads >= 1, "{p:?}");
        let e = process_stats(Path::new("/proc"), pid, "kata-vmm", 100).unwrap_err();
        assert!(e.contains("not \"kata-vmm\" (a stale pid file)"), "{e}");
    }
}

//! `kata-rs overhead`: a RuntimeClass whose `overhead.podFixed` is measured on a running,
//! idle sandbox instead of guessed: memory = the PSS of every host process of the sandbox
//! (VMM — guest RAM the guest touched included, i.e. the guest kernel's, agent's and idle
//! container's cost as the host sees it —, virtiofsd, shim), CPU = what they used while
//! idle over the sampling time; both plus a stated margin, rounded up. The figures, the
//! margin and the date go into the YAML's comments.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::metrics::{ProcStats, SandboxStats};

/// One measurement of a sandbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// The sandbox measured.
    pub sandbox_id: String,
    /// (process, PSS bytes; RSS where PSS was unreadable, `true` then).
    pub memory: Vec<(&'static str, u64, bool)>,
    /// CPU used while idle, millicores, over `seconds`.
    pub cpu_millis: f64,
    /// The sampling time.
    pub seconds: f64,
}

/// The measurement from two scrapes of the same sandbox `secs` apart: memory from the
/// later, CPU from the difference. Processes must be the same (same pids) in both.
pub fn measure(before: &SandboxStats, after: &SandboxStats, secs: f64) -> Result<Measured, String> {
    if after.processes.is_empty() {
        return Err(format!(
            "sandbox {}: no host process found (is it running? see kata-rs metrics --once)",
            after.id
        ));
    }
    let find = |role: &str, s: &SandboxStats| -> Option<ProcStats> {
        s.processes
            .iter()
            .find(|(r, _)| *r == role)
            .map(|(_, p)| p.clone())
    };
    let mut cpu = 0.0;
    let mut memory = Vec::new();
    for (role, p) in &after.processes {
        let b = find(role, before)
            .filter(|b| b.pid == p.pid)
            .ok_or_else(|| format!("sandbox {}: the {role} changed while measuring", after.id))?;
        cpu += p.cpu_seconds - b.cpu_seconds;
        memory.push(match p.pss_bytes {
            Some(v) => (*role, v, false),
            None => (*role, p.rss_bytes, true),
        });
    }
    Ok(Measured {
        sandbox_id: after.id.clone(),
        memory,
        cpu_millis: (cpu.max(0.0) / secs) * 1000.0,
        seconds: secs,
    })
}

/// `t` as `YYYY-MM-DDTHH:MM:SSZ` (UTC).
pub fn utc(t: SystemTime) -> String {
    let s = t
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let (days, rem) = ((s / 86400) as i64, s % 86400);
    // Days to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The RuntimeClass for handler `kata` with `m` plus `margin_percent`, scheduled onto nodes
/// with `label=true`, measured at `when`.
pub fn runtimeclass(m: &Measured, margin_percent: u32, label: &str, when: &str) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let total: u64 = m.memory.iter().map(|(_, b, _)| b).sum();
    let factor = 1.0 + f64::from(margin_percent) / 100.0;
    let mem_mib = ((total as f64 * factor) / MIB).ceil().max(1.0) as u64;
    let cpu_m = (m.cpu_millis * factor).ceil().max(1.0) as u64;
    let parts: Vec<String> = m
        .memory
        .iter()
        .map(|(r, b, rss)| {
            format!(
                "{r} {:.1} MiB{}",
                *b as f64 / MIB,
                if *rss { " (RSS: PSS unreadable)" } else { "" }
            )
        })
        .collect();
    format!(
        "# Kubernetes RuntimeClass for kata-rs, its overhead measured by `kata-rs overhead` on\n\
         # {when}: sandbox {id}, idle, sampled {secs:.0} s.\n\
         #   host memory (PSS): {parts} = {total:.1} MiB\n\
         #   CPU while idle (VMM, virtiofsd, shim): {cpu:.1} millicores\n\
         #   margin: {margin_percent} %, rounded up\n\
         apiVersion: node.k8s.io/v1\n\
         kind: RuntimeClass\n\
         metadata:\n  name: kata\n\
         handler: kata\n\
         overhead:\n  podFixed:\n    memory: \"{mem_mib}Mi\"\n    cpu: \"{cpu_m}m\"\n\
         scheduling:\n  nodeSelector:\n    {label}: \"true\"\n",
        id = m.sandbox_id,
        secs = m.seconds,
        parts = parts.join(" + "),
        total = total as f64 / MIB,
        cpu = m.cpu_millis,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(pid: u32, cpu: f64, pss: Option<u64>, rss: u64) -> ProcStats {
        ProcStats {
            pid,
            cpu_seconds: cpu,
            rss_bytes: rss,
            pss_bytes: pss,
            ..Default::default()
        }
    }

    fn sandbox(procs: Vec<(&'static str, ProcStats)>) -> SandboxStats {
        SandboxStats {
            id: "sb1".into(),
            processes: procs,
            ..Default::default()
        }
    }

    #[test]
    fn measured_overhead_with_margin() {
        const MIB: u64 = 1024 * 1024;
        let before = sandbox(vec![
            ("vmm", proc(10, 5.0, Some(100 * MIB), 0)),
            ("virtiofsd", proc(11, 1.0, Some(4 * MIB), 0)),
            ("shim", proc(9, 2.0, None, 12 * MIB)),
        ]);
        let after = sandbox(vec![
            ("vmm", proc(10, 5.05, Some(120 * MIB), 0)),
            ("virtiofsd", proc(11, 1.0, Some(4 * MIB), 0)),
            ("shim", proc(9, 2.01, None, 12 * MIB)),
        ]);
        let m = measure(&before, &after, 10.0).unwrap();
        assert!((m.cpu_millis - 6.0).abs() < 1e-6, "{m:?}");
        assert_eq!(m.memory[2], ("shim", 12 * MIB, true));
        let y = runtimeclass(
            &m,
            25,
            "katacontainers.io/kata-runtime",
            "2026-12-04T04:40:00Z",
        );
        // (120 + 4 + 12) MiB * 1.25 = 170 MiB; 6 m * 1.25 = 7.5 -> 8 m.
        assert!(
            y.contains("    memory: \"170Mi\"\n    cpu: \"8m\"\n"),
            "{y}"
        );
        assert!(
            y.contains("on\n# 2026-12-04T04:40:00Z: sandbox sb1, idle, sampled 10 s."),
            "{y}"
        );
        assert!(
            y.contains("vmm 120.0 MiB + virtiofsd 4.0 MiB + shim 12.0 MiB (RSS: PSS unreadable) = 136.0 MiB"),
            "{y}"
        );
        assert!(y.contains("margin: 25 %"));
        assert!(
            y.ends_with("    katacontainers.io/kata-runtime: \"true\"\n"),
            "{y}"
        );
        // The install's RuntimeClass has the same shape (only the figures and comments differ).
        let shape = |s: &str| -> Vec<String> {
            s.lines()
                .filter(|l| !l.starts_with('#') && !l.contains("memory:") && !l.contains("cpu:"))
                .map(String::from)
                .collect()
        };
        assert_eq!(shape(&y), shape(crate::install::RUNTIMECLASS));
    }

    #[test]
    fn a_changed_or_missing_process_is_refused() {
        let before = sandbox(vec![("vmm", proc(10, 1.0, Some(1), 1))]);
        let after = sandbox(vec![("vmm", proc(12, 1.0, Some(1), 1))]);
        let e = measure(&before, &after, 1.0).unwrap_err();
        assert!(e.contains("the vmm changed while measuring"), "{e}");
        let e = measure(&before, &sandbox(vec![]), 1.0).unwrap_err();
        assert!(e.contains("no host process found"), "{e}");
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            utc(UNIX_EPOCH + Duration::from_secs(1_764_806_400 + 3 * 3600 + 62)),
            "2025-12-04T03:01:02Z"
        );
        assert_eq!(
            utc(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }
}

//! `spec.linux.resources` as cgroup v2 interface file writes (at create and for
//! UpdateContainer).

use oci_spec::runtime::LinuxResources;

use crate::error::{AgentError, Result};

/// Converts spec.linux.resources into cgroup v2 interface file writes.
pub fn plan_cgroup(res: Option<&LinuxResources>) -> Result<Vec<(String, String)>> {
    let mut w = Vec::new();
    let Some(res) = res else { return Ok(w) };
    if let Some(mem) = res.memory() {
        if let Some(limit) = mem.limit() {
            w.push(("memory.max".into(), limit_value(limit)));
        }
        if let (Some(swap), Some(limit)) = (mem.swap(), mem.limit()) {
            // OCI swap is memory+swap; v2 memory.swap.max is swap alone.
            let v = if swap < 0 || limit < 0 {
                "max".to_string()
            } else if swap < limit {
                return Err(AgentError::invalid(format!(
                    "memory.swap ({swap}) must not be below memory.limit ({limit})"
                )));
            } else {
                (swap - limit).to_string()
            };
            w.push(("memory.swap.max".into(), v));
        }
    }
    if let Some(cpu) = res.cpu() {
        if let Some(shares) = cpu.shares() {
            if shares > 0 {
                w.push(("cpu.weight".into(), shares_to_weight(shares).to_string()));
            }
        }
        let period = cpu.period().unwrap_or(100_000);
        match cpu.quota() {
            Some(q) if q > 0 => w.push(("cpu.max".into(), format!("{q} {period}"))),
            Some(_) => w.push(("cpu.max".into(), format!("max {period}"))),
            None if cpu.period().is_some() => w.push(("cpu.max".into(), format!("max {period}"))),
            None => {}
        }
    }
    if let Some(pids) = res.pids() {
        w.push(("pids.max".into(), limit_value(pids.limit())));
    }
    Ok(w)
}

fn limit_value(v: i64) -> String {
    if v <= 0 {
        "max".into()
    } else {
        v.to_string()
    }
}

/// cgroup v1 cpu.shares → v2 cpu.weight, the formula runc and crun use.
pub fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::test_spec::{spec, BASIC};
    use crate::plan::{plan, PodRole};
    use std::path::Path;

    #[test]
    fn cgroup_resources() {
        let s = BASIC.replace(
            r#""namespaces""#,
            r#""resources": {"memory": {"limit": 268435456, "swap": 536870912},
                             "cpu": {"shares": 1024, "quota": 50000, "period": 100000},
                             "pids": {"limit": 100}}, "namespaces""#,
        );
        let p = plan(&spec(&s), Path::new("/r"), PodRole::Single).unwrap();
        let get = |k: &str| {
            p.cgroup_writes
                .iter()
                .find(|(f, _)| f == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("memory.max").as_deref(), Some("268435456"));
        assert_eq!(get("memory.swap.max").as_deref(), Some("268435456"));
        assert_eq!(get("cpu.max").as_deref(), Some("50000 100000"));
        assert_eq!(get("cpu.weight").as_deref(), Some("39"));
        assert_eq!(get("pids.max").as_deref(), Some("100"));
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }

    fn resources(json: &str) -> LinuxResources {
        serde_json::from_str(json).expect("valid resources")
    }

    fn writes(json: &str) -> Vec<(String, String)> {
        plan_cgroup(Some(&resources(json))).unwrap()
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn limits_and_their_unlimited_forms() {
        assert!(plan_cgroup(None).unwrap().is_empty());
        assert!(writes("{}").is_empty());
        assert_eq!(
            writes(r#"{"memory": {"limit": -1, "swap": -1}, "pids": {"limit": 0}}"#),
            pairs(&[
                ("memory.max", "max"),
                ("memory.swap.max", "max"),
                ("pids.max", "max")
            ])
        );
        // Swap without a memory limit has nothing to subtract from: not written.
        assert!(writes(r#"{"memory": {"swap": 100}}"#).is_empty());
        let e = plan_cgroup(Some(&resources(
            r#"{"memory": {"limit": 200, "swap": 100}}"#,
        )))
        .unwrap_err();
        assert_eq!(e.code, ttrpc::Code::INVALID_ARGUMENT);
        assert!(e.message.contains("must not be below memory.limit"), "{e}");
    }

    #[test]
    fn cpu_quota_period_and_shares() {
        assert_eq!(
            writes(r#"{"cpu": {"quota": -1, "period": 50000}}"#),
            pairs(&[("cpu.max", "max 50000")])
        );
        assert_eq!(
            writes(r#"{"cpu": {"period": 200000}}"#),
            pairs(&[("cpu.max", "max 200000")])
        );
        assert_eq!(
            writes(r#"{"cpu": {"quota": 20000}}"#),
            pairs(&[("cpu.max", "20000 100000")])
        );
        // shares 0 = unset; nothing at all when neither quota nor period is given.
        assert!(writes(r#"{"cpu": {"shares": 0}}"#).is_empty());
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(0), 1, "clamped to the v1 minimum of 2");
        assert_eq!(
            shares_to_weight(1 << 30),
            10_000,
            "clamped to the v1 maximum"
        );
    }
}

//! `linux.sysctl`: checked as runc checks it (only sysctls of a namespace the container has
//! of its own), then written by the container's init inside the container's namespaces,
//! after pivot_root and before `readonlyPaths` make `/proc/sys` read-only (runc's order).
//! In the guest the pod's network namespace is the VM's, so `net.*` sysctls act on the
//! pod's network as under runc.

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::error::{AgentError, Result};
use crate::plan::Namespaces;

/// Longest sysctl name accepted.
const MAX_KEY: usize = 256;
/// Longest sysctl value accepted.
const MAX_VALUE: usize = 4096;
/// Most sysctls in one spec.
const MAX_SYSCTLS: usize = 256;

/// The IPC namespace's sysctls (besides `fs.mqueue.*`), as runc lists them.
const IPC_SYSCTLS: &[&str] = &[
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// A name runc would write to `/proc/sys`: dot-separated words of letters, digits, `_` and
/// `-` (a `/` is accepted as separator, as runc does), never `..` or an empty word.
fn check_key(key: &str) -> Result<String> {
    let bad = |why: &str| AgentError::invalid(format!("linux.sysctl: {key:?}: {why}"));
    if key.is_empty() || key.len() > MAX_KEY {
        return Err(bad("bad length"));
    }
    let key = key.replace('/', ".");
    let words_ok = key.split('.').all(|w| {
        !w.is_empty()
            && w.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    });
    if !words_ok {
        return Err(bad("not a sysctl name"));
    }
    Ok(key)
}

/// The spec's sysctls, each allowed only in a namespace the container does not share with
/// the guest (runc's rules and messages), as (name, value) pairs in name order.
pub fn plan(spec: &Spec, ns: &Namespaces) -> Result<Vec<(String, String)>> {
    let Some(map) = spec.linux().as_ref().and_then(|l| l.sysctl().as_ref()) else {
        return Ok(Vec::new());
    };
    if map.len() > MAX_SYSCTLS {
        return Err(AgentError::invalid(format!(
            "linux.sysctl: more than {MAX_SYSCTLS} entries"
        )));
    }
    let has_netns = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|n| n.iter().any(|n| n.typ() == LinuxNamespaceType::Network));
    let mut out = Vec::with_capacity(map.len());
    for (k, v) in map {
        let key = check_key(k)?;
        if v.len() > MAX_VALUE || v.contains('\0') {
            return Err(AgentError::invalid(format!(
                "linux.sysctl: {key}: bad value"
            )));
        }
        let refuse = |why: String| Err(AgentError::invalid(format!("sysctl {key:?} {why}")));
        if IPC_SYSCTLS.contains(&key.as_str()) || key.starts_with("fs.mqueue.") {
            if !(ns.ipc || ns.join_ipc) {
                return refuse("is not allowed in the hosts ipc namespace".into());
            }
        } else if key.starts_with("net.") {
            if !has_netns {
                return refuse("is not allowed in the hosts network namespace".into());
            }
        } else if (ns.uts || ns.join_uts) && key == "kernel.domainname" {
            // The UTS namespace's own (the spec has no domainname field it could contradict).
        } else if (ns.uts || ns.join_uts) && key == "kernel.hostname" {
            return refuse("is not allowed as it conflicts with the OCI \"hostname\" field".into());
        } else {
            return refuse("is not in a separate kernel namespace".into());
        }
        out.push((key, v.clone()));
    }
    out.sort();
    Ok(out)
}

/// Writes one planned sysctl through the calling process's `/proc/sys` (the container's
/// namespaces and mounts).
pub fn write(key: &str, value: &str) -> std::result::Result<(), String> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::write(&path, value).map_err(|e| format!("sysctl {key}={value:?}: write {path}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxBuilder, LinuxNamespaceBuilder, SpecBuilder};
    use std::collections::HashMap;

    fn spec(sysctls: &[(&str, &str)], netns: bool) -> Spec {
        let map: HashMap<String, String> = sysctls
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut nss = vec![LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::Ipc)
            .build()
            .unwrap()];
        if netns {
            nss.push(
                LinuxNamespaceBuilder::default()
                    .typ(LinuxNamespaceType::Network)
                    .build()
                    .unwrap(),
            );
        }
        SpecBuilder::default()
            .linux(
                LinuxBuilder::default()
                    .sysctl(map)
                    .namespaces(nss)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap()
    }

    fn ns(ipc: bool, uts: bool) -> Namespaces {
        Namespaces {
            ipc,
            uts,
            ..Default::default()
        }
    }

    #[test]
    fn namespaced_sysctls_are_planned_in_order() {
        let s = spec(
            &[
                ("net.ipv4.ip_local_port_range", "30000 40000"),
                ("kernel.shm_rmid_forced", "1"),
                ("fs.mqueue.msg_max", "20"),
                ("net/ipv4/ping_group_range", "0 1"),
            ],
            true,
        );
        assert_eq!(
            plan(&s, &ns(true, true)).unwrap(),
            vec![
                ("fs.mqueue.msg_max".to_string(), "20".to_string()),
                ("kernel.shm_rmid_forced".into(), "1".into()),
                ("net.ipv4.ip_local_port_range".into(), "30000 40000".into()),
                ("net.ipv4.ping_group_range".into(), "0 1".into()),
            ]
        );
        let none = SpecBuilder::default().build().unwrap();
        assert!(plan(&none, &ns(true, true)).unwrap().is_empty());
    }

    #[test]
    fn sysctls_outside_the_containers_namespaces_are_refused_as_runc_does() {
        let err = |s: &[(&str, &str)], netns: bool, n: Namespaces| {
            plan(&spec(s, netns), &n).unwrap_err().to_string()
        };
        assert!(err(&[("kernel.panic", "1")], true, ns(true, true))
            .contains("\"kernel.panic\" is not in a separate kernel namespace"));
        assert!(err(&[("kernel.sem", "1 2 3 4")], true, ns(false, true))
            .contains("not allowed in the hosts ipc namespace"));
        assert!(
            err(&[("net.core.somaxconn", "1024")], false, ns(true, true))
                .contains("not allowed in the hosts network namespace")
        );
        assert!(err(&[("kernel.hostname", "x")], true, ns(true, true))
            .contains("conflicts with the OCI \"hostname\" field"));
        assert!(plan(&spec(&[("kernel.domainname", "x")], true), &ns(true, true)).is_ok());
    }

    #[test]
    fn names_that_could_leave_proc_sys_are_refused() {
        for k in [
            "../../etc/passwd",
            "net..x",
            ".net.x",
            "net.x.",
            "net/x y",
            "",
            "net.\0",
        ] {
            assert!(
                plan(&spec(&[(k, "1")], true), &ns(true, true)).is_err(),
                "{k:?} was accepted"
            );
        }
        assert!(plan(
            &spec(&[("net.core.somaxconn", "1\0")], true),
            &ns(true, true)
        )
        .is_err());
    }
}

//! Linux capabilities for the container process: OCI names → bit masks (pure, tested) and
//! the syscalls that apply the five sets (bounding, effective, permitted, inheritable,
//! ambient) in runc's order around the switch to the process's uid.

use serde::{Deserialize, Serialize};

use crate::error::{AgentError, Result};

/// Capability names (without `CAP_`) in bit order: index = capability number.
pub const NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// The capability number of `name` (`CAP_CHOWN`, `chown` and `CHOWN` are accepted).
pub fn number(name: &str) -> Option<u32> {
    let n = name.to_ascii_uppercase();
    let n = n.strip_prefix("CAP_").unwrap_or(&n);
    NAMES.iter().position(|c| *c == n).map(|i| i as u32)
}

/// The five capability sets as bit masks (bit N = capability N).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapSets {
    /// Bounding set.
    pub bounding: u64,
    /// Effective set.
    pub effective: u64,
    /// Permitted set.
    pub permitted: u64,
    /// Inheritable set.
    pub inheritable: u64,
    /// Ambient set.
    pub ambient: u64,
}

/// Turns a list of names into a mask; an unknown name is an error naming the set.
pub fn mask<'a>(set: &str, names: impl IntoIterator<Item = &'a str>) -> Result<u64> {
    let mut m = 0u64;
    for name in names {
        let n = number(name).ok_or_else(|| {
            AgentError::invalid(format!(
                "process.capabilities.{set}: unknown capability {name:?}"
            ))
        })?;
        m |= 1 << n;
    }
    Ok(m)
}

/// Plans the sets from the spec's `process.capabilities` (None = leave the process's
/// capabilities as the kernel's uid rules make them, like runc).
pub fn plan(c: &oci_spec::runtime::LinuxCapabilities) -> Result<CapSets> {
    let names = |v: &Option<oci_spec::runtime::Capabilities>| -> Vec<String> {
        v.as_ref()
            .map(|s| s.iter().map(|c| c.to_string()).collect())
            .unwrap_or_default()
    };
    let m = |set: &str, v: &Option<oci_spec::runtime::Capabilities>| {
        let n = names(v);
        mask(set, n.iter().map(String::as_str))
    };
    Ok(CapSets {
        bounding: m("bounding", c.bounding())?,
        effective: m("effective", c.effective())?,
        permitted: m("permitted", c.permitted())?,
        inheritable: m("inheritable", c.inheritable())?,
        ambient: m("ambient", c.ambient())?,
    })
}

/// The highest capability the running kernel knows.
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_V3: u32 = 0x2008_0522;

fn os_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// Drops every capability not in `bounding` from the bounding set (needs CAP_SETPCAP:
/// call while still root with full capabilities).
pub fn drop_bounding(bounding: u64) -> std::result::Result<(), String> {
    for cap in 0..=last_cap().min(63) {
        if bounding & (1 << cap) == 0 {
            // SAFETY: prctl with integer arguments only.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } != 0 {
                return Err(os_err(&format!(
                    "drop {} from the bounding set",
                    cap_name(cap)
                )));
            }
        }
    }
    Ok(())
}

fn cap_name(cap: u32) -> String {
    NAMES
        .get(cap as usize)
        .map(|n| format!("CAP_{n}"))
        .unwrap_or_else(|| format!("capability {cap}"))
}

/// PR_SET_KEEPCAPS: keep the permitted set across the switch to a non-zero uid.
pub fn keep_caps(on: bool) -> std::result::Result<(), String> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, on as libc::c_ulong, 0, 0, 0) } != 0 {
        return Err(os_err("prctl(PR_SET_KEEPCAPS)"));
    }
    Ok(())
}

/// Sets effective, permitted and inheritable (capset), then the ambient set. Bits above
/// the kernel's last capability are ignored.
pub fn apply(s: &CapSets) -> std::result::Result<(), String> {
    let known = if last_cap() >= 63 {
        u64::MAX
    } else {
        (1u64 << (last_cap() + 1)) - 1
    };
    let (e, p, i) = (
        s.effective & known,
        s.permitted & known,
        s.inheritable & known,
    );
    let mut hdr = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: e as u32,
            permitted: p as u32,
            inheritable: i as u32,
        },
        CapData {
            effective: (e >> 32) as u32,
            permitted: (p >> 32) as u32,
            inheritable: (i >> 32) as u32,
        },
    ];
    // SAFETY: capset reads a v3 header and two data structs, both valid for the call.
    if unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) } != 0 {
        return Err(os_err("capset"));
    }
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    for cap in 0..=last_cap().min(63) {
        if s.ambient & known & (1 << cap) != 0 {
            // SAFETY: prctl with integer arguments only.
            let r = unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    cap as libc::c_ulong,
                    0,
                    0,
                )
            };
            if r != 0 {
                return Err(os_err(&format!(
                    "raise ambient {} (it must be permitted and inheritable)",
                    cap_name(cap)
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_masks() {
        assert_eq!(number("CAP_CHOWN"), Some(0));
        assert_eq!(number("cap_sys_admin"), Some(21));
        assert_eq!(number("CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(number("CAP_WORMHOLE"), None);
        assert_eq!(
            mask("bounding", ["CAP_KILL", "CAP_NET_BIND_SERVICE"]).unwrap(),
            (1 << 5) | (1 << 10)
        );
        let e = mask("effective", ["CAP_NOPE"]).unwrap_err();
        assert!(e.message.contains("effective") && e.message.contains("CAP_NOPE"));
    }

    #[test]
    fn plan_from_spec() {
        let c: oci_spec::runtime::LinuxCapabilities = serde_json::from_str(
            r#"{"bounding": ["CAP_CHOWN", "CAP_KILL"], "effective": ["CAP_KILL"],
                "permitted": ["CAP_KILL"]}"#,
        )
        .unwrap();
        let s = plan(&c).unwrap();
        assert_eq!(s.bounding, 1 | (1 << 5));
        assert_eq!(s.effective, 1 << 5);
        assert_eq!(s.permitted, 1 << 5);
        assert_eq!(s.inheritable, 0);
        assert_eq!(s.ambient, 0);
    }
}

//! Linux capabilities for the container process: OCI names → bit masks (pure, tested) and
//! the calls that apply the five sets (bounding, effective, permitted, inheritable,
//! ambient) in runc's order around the switch to the process's uid. Names, numbers and
//! the prctl/capset calls are the `caps` crate's.

use std::str::FromStr;

use caps::{CapSet, Capability, CapsHashSet};
use serde::{Deserialize, Serialize};

use crate::error::{AgentError, Result};

/// The capability named `name` (`CAP_CHOWN`, `chown` and `CHOWN` are accepted; ASCII
/// case only), as the `caps` crate knows it.
fn by_name(name: &str) -> Option<Capability> {
    let n = name.to_ascii_uppercase();
    let n = n.strip_prefix("CAP_").unwrap_or(&n);
    Capability::from_str(&format!("CAP_{n}")).ok()
}

/// The capability number of `name` (`CAP_CHOWN`, `chown` and `CHOWN` are accepted).
pub fn number(name: &str) -> Option<u32> {
    by_name(name).map(|c| u32::from(c.index()))
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

/// The capabilities the crate knows and the running kernel has (up to [`last_cap`]).
fn known() -> impl Iterator<Item = Capability> {
    let last = last_cap();
    let mut all: Vec<Capability> = caps::all()
        .into_iter()
        .filter(|c| u32::from(c.index()) <= last)
        .collect();
    all.sort_by_key(|c| c.index());
    all.into_iter()
}

/// The known capabilities whose bits are set in `mask`.
fn set_of(mask: u64) -> CapsHashSet {
    known().filter(|c| mask & c.bitmask() != 0).collect()
}

/// Drops every capability not in `bounding` from the bounding set (needs CAP_SETPCAP:
/// call while still root with full capabilities).
pub fn drop_bounding(bounding: u64) -> std::result::Result<(), String> {
    for cap in known().filter(|c| bounding & c.bitmask() == 0) {
        caps::drop(None, CapSet::Bounding, cap)
            .map_err(|e| format!("drop {cap} from the bounding set: {e}"))?;
    }
    Ok(())
}

/// PR_SET_KEEPCAPS: keep the permitted set across the switch to a non-zero uid.
pub fn keep_caps(on: bool) -> std::result::Result<(), String> {
    caps::securebits::set_keepcaps(on).map_err(|e| format!("prctl(PR_SET_KEEPCAPS): {e}"))
}

/// Sets inheritable, effective and permitted (in that order, so that each capset keeps
/// effective within permitted and the permitted set shrinks last, which makes the same
/// requests succeed or fail as one capset of all three would), then the ambient set.
/// Capabilities the kernel does not know are ignored.
pub fn apply(s: &CapSets) -> std::result::Result<(), String> {
    for (set, name, mask) in [
        (CapSet::Inheritable, "inheritable", s.inheritable),
        (CapSet::Effective, "effective", s.effective),
        (CapSet::Permitted, "permitted", s.permitted),
    ] {
        caps::set(None, set, &set_of(mask))
            .map_err(|e| format!("set the {name} capabilities: {e}"))?;
    }
    // Kernels without ambient capabilities refuse the clear; nothing to clear there.
    let _ = caps::clear(None, CapSet::Ambient);
    for cap in known().filter(|c| s.ambient & c.bitmask() != 0) {
        caps::raise(None, CapSet::Ambient, cap).map_err(|e| {
            format!("raise ambient {cap} (it must be permitted and inheritable): {e}")
        })?;
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
        assert_eq!(
            e.message,
            "process.capabilities.effective: unknown capability \"CAP_NOPE\""
        );
        // ASCII case only, one CAP_ prefix.
        assert_eq!(number("chown"), Some(0));
        assert_eq!(number("Cap_Kill"), Some(5));
        assert_eq!(number("CAP_SYS_ADM\u{131}N"), None);
        assert_eq!(number("CAP_CAP_CHOWN"), None);
        assert_eq!(number(""), None);
    }

    /// The numbers are the kernel's (linux/capability.h), 0..=40 with no gap.
    #[test]
    fn numbers_are_the_kernels() {
        for (name, n) in [
            ("CAP_CHOWN", 0),
            ("CAP_SETPCAP", 8),
            ("CAP_NET_RAW", 13),
            ("CAP_SYS_ADMIN", 21),
            ("CAP_MKNOD", 27),
            ("CAP_SETFCAP", 31),
            ("CAP_MAC_OVERRIDE", 32),
            ("CAP_AUDIT_READ", 37),
            ("CAP_PERFMON", 38),
            ("CAP_BPF", 39),
            ("CAP_CHECKPOINT_RESTORE", 40),
        ] {
            assert_eq!(number(name), Some(n), "{name}");
        }
        let mut all: Vec<u32> = caps::all().iter().map(|c| u32::from(c.index())).collect();
        all.sort();
        assert_eq!(all, (0..=40).collect::<Vec<_>>());
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

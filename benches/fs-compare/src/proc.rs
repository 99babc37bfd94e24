//! What /proc says about a process: memory (smaps_rollup), credentials, namespaces.

use std::{fs, io, path::Path};

/// Memory of one process, in KiB, from `/proc/PID/smaps_rollup`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mem {
    pub rss: u64,
    pub pss: u64,
    /// Private_Dirty: anonymous memory and written pages no other process can share.
    pub private_dirty: u64,
}

impl Mem {
    pub fn add(self, o: Mem) -> Mem {
        Mem {
            rss: self.rss + o.rss,
            pss: self.pss + o.pss,
            private_dirty: self.private_dirty + o.private_dirty,
        }
    }

    pub fn sub(self, o: Mem) -> Mem {
        Mem {
            rss: self.rss.saturating_sub(o.rss),
            pss: self.pss.saturating_sub(o.pss),
            private_dirty: self.private_dirty.saturating_sub(o.private_dirty),
        }
    }
}

/// Parses an smaps_rollup text.
pub fn parse_rollup(text: &str) -> Mem {
    let mut m = Mem::default();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let (Some(key), Some(val)) = (it.next(), it.next()) else {
            continue;
        };
        let Ok(kib) = val.parse::<u64>() else {
            continue;
        };
        match key {
            "Rss:" => m.rss = kib,
            "Pss:" => m.pss = kib,
            "Private_Dirty:" => m.private_dirty = kib,
            _ => {}
        }
    }
    m
}

/// `/proc/<pid>/smaps_rollup` (pid "self" for this process).
pub fn rollup(pid: &str) -> io::Result<Mem> {
    Ok(parse_rollup(&fs::read_to_string(format!(
        "/proc/{pid}/smaps_rollup"
    ))?))
}

/// The direct children of `pid` (from every process's `stat`, so it works without
/// CONFIG_PROC_CHILDREN).
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(child) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        if rest.split_whitespace().nth(1) == Some(&pid.to_string()) {
            out.push(child);
        }
    }
    out.sort_unstable();
    out
}

/// Capability names by bit number (linux/capability.h).
const CAP_NAMES: [&str; 41] = [
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

/// A capability mask as names ("none", or "all 41" when every known bit is set).
pub fn cap_names(mask: u64) -> String {
    let names: Vec<&str> = (0..CAP_NAMES.len())
        .filter(|b| mask & (1u64 << b) != 0)
        .map(|b| CAP_NAMES[b])
        .collect();
    match names.len() {
        0 => "none".into(),
        n if n == CAP_NAMES.len() => format!("all {n}"),
        n if n > 20 => {
            let missing: Vec<&str> = (0..CAP_NAMES.len())
                .filter(|b| mask & (1u64 << b) == 0)
                .map(|b| CAP_NAMES[b])
                .collect();
            format!("{n} (all but {})", missing.join(","))
        }
        _ => names.join(","),
    }
}

/// The isolation-relevant facts of a process, as printable lines.
pub fn isolation(pid: u32) -> Vec<String> {
    let mut out = Vec::new();
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    for line in status.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k {
            "Uid" | "Gid" | "NoNewPrivs" | "Seccomp" | "Seccomp_filters" => out.push(format!(
                "{k}: {}",
                v.split_whitespace().collect::<Vec<_>>().join(" ")
            )),
            "CapInh" | "CapPrm" | "CapEff" | "CapBnd" | "CapAmb" => {
                let mask = u64::from_str_radix(v, 16).unwrap_or(0);
                out.push(format!("{k}: {v} = {}", cap_names(mask)));
            }
            _ => {}
        }
    }
    let mut own = Vec::new();
    let mut shared = Vec::new();
    for ns in ["mnt", "pid", "net", "ipc", "uts", "user", "cgroup"] {
        let theirs = fs::read_link(format!("/proc/{pid}/ns/{ns}")).ok();
        let ours = fs::read_link(format!("/proc/self/ns/{ns}")).ok();
        if theirs.is_some() && theirs != ours {
            own.push(ns);
        } else {
            shared.push(ns);
        }
    }
    out.push(format!(
        "namespaces: own {}; host's {}",
        if own.is_empty() {
            "none".into()
        } else {
            own.join(",")
        },
        shared.join(",")
    ));
    let root = Path::new("/proc").join(pid.to_string()).join("root");
    let mut entries: Vec<String> = fs::read_dir(&root)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    entries.sort();
    let n = entries.len();
    entries.truncate(12);
    out.push(format!(
        "root (ls /proc/{pid}/root): {} entries: {}{}",
        n,
        entries.join(" "),
        if n > 12 { " ..." } else { "" }
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollup_parses() {
        let m = parse_rollup(
            "55d0-7ffd ---p 00000000 00:00 0 [rollup]\nRss: 2048 kB\nPss: 1024 kB\n\
             Pss_Anon: 10 kB\nPrivate_Dirty: 300 kB\n",
        );
        assert_eq!(
            m,
            Mem {
                rss: 2048,
                pss: 1024,
                private_dirty: 300
            }
        );
    }

    #[test]
    fn caps_decode() {
        assert_eq!(cap_names(0), "none");
        assert_eq!(cap_names(0b1001), "CHOWN,FOWNER");
        assert_eq!(cap_names((1u64 << 41) - 1), "all 41");
    }
}

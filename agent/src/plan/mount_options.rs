//! OCI mount options (`nosuid`, `ro`, `rbind`, `mode=755`, ...) as MS_* flags, bind mode
//! and file system data.

/// Result of parsing OCI mount options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedOptions {
    /// MS_* flags.
    pub flags: u64,
    /// `Some(recursive)` when `bind` / `rbind` was given.
    pub bind: Option<bool>,
    /// Remaining comma-joined file system data.
    pub data: String,
}

/// Parses OCI mount options into MS_* flags, bind mode and file system data. Propagation
/// options are ignored here: every container mount is private; what reaches a bind from the
/// host is decided by the shim's copy in the share and arrives as virtio-fs submounts the
/// guest mounts on lookup (docs/mount-propagation.md).
pub fn parse_options(options: &[String]) -> ParsedOptions {
    let mut p = ParsedOptions::default();
    let mut data = Vec::new();
    for o in options {
        let (set, clear): (u64, u64) = match o.as_str() {
            "ro" => (libc::MS_RDONLY, 0),
            "rw" => (0, libc::MS_RDONLY),
            "nosuid" => (libc::MS_NOSUID, 0),
            "suid" => (0, libc::MS_NOSUID),
            "nodev" => (libc::MS_NODEV, 0),
            "dev" => (0, libc::MS_NODEV),
            "noexec" => (libc::MS_NOEXEC, 0),
            "exec" => (0, libc::MS_NOEXEC),
            "sync" => (libc::MS_SYNCHRONOUS, 0),
            "async" => (0, libc::MS_SYNCHRONOUS),
            "dirsync" => (libc::MS_DIRSYNC, 0),
            "noatime" => (libc::MS_NOATIME, 0),
            "atime" => (0, libc::MS_NOATIME),
            "nodiratime" => (libc::MS_NODIRATIME, 0),
            "diratime" => (0, libc::MS_NODIRATIME),
            "relatime" => (libc::MS_RELATIME, 0),
            "norelatime" => (0, libc::MS_RELATIME),
            "strictatime" => (libc::MS_STRICTATIME, 0),
            "nostrictatime" => (0, libc::MS_STRICTATIME),
            "bind" => {
                p.bind = Some(p.bind.unwrap_or(false));
                continue;
            }
            "rbind" => {
                p.bind = Some(true);
                continue;
            }
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" | "remount" | "defaults" => continue,
            s if s.starts_with("x-") => continue,
            other => {
                data.push(other.to_string());
                continue;
            }
        };
        p.flags = (p.flags | set) & !clear;
    }
    p.data = data.join(",");
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        let o = |v: &[&str]| parse_options(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let p = o(&["nosuid", "nodev", "ro", "mode=755", "size=1k", "rprivate"]);
        assert_eq!(p.flags, libc::MS_NOSUID | libc::MS_NODEV | libc::MS_RDONLY);
        assert_eq!(p.data, "mode=755,size=1k");
        assert_eq!(p.bind, None);
        let p = o(&["ro", "rw", "rbind"]);
        assert_eq!(p.flags, 0);
        assert_eq!(p.bind, Some(true));
        assert_eq!(o(&["bind"]).bind, Some(false));
    }
}

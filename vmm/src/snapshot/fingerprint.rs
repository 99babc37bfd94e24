//! The configuration a snapshot belongs to: kernel and initrds (size and modification time),
//! guest memory size and vCPU count. A snapshot restores only into the same configuration;
//! [`ConfigFingerprint::differences`] says what differs.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

/// One input file as the snapshot saw it. Size and modification time (nanoseconds) identify
/// its content without reading it (hashing a 30 MB kernel would cost more than a restore);
/// a rewrite that keeps both exactly is not noticed. The path is recorded for messages only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileId {
    /// The path as configured.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Modification time: seconds since the epoch.
    pub mtime_secs: i64,
    /// Modification time: nanoseconds within the second.
    pub mtime_nanos: u32,
}

impl FileId {
    /// Reads size and modification time of `path` (following symlinks).
    pub fn of(path: &Path) -> std::io::Result<Self> {
        let md = std::fs::metadata(path)?;
        let (mtime_secs, mtime_nanos) = match md.modified()?.duration_since(UNIX_EPOCH) {
            Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
            Err(before) => before_epoch(before.duration()),
        };
        Ok(FileId {
            path: path.to_path_buf(),
            size: md.len(),
            mtime_secs,
            mtime_nanos,
        })
    }

    /// Same content as far as size and modification time tell.
    pub fn same_content(&self, other: &FileId) -> bool {
        (self.size, self.mtime_secs, self.mtime_nanos)
            == (other.size, other.mtime_secs, other.mtime_nanos)
    }
}

/// A time `d` before the epoch as (seconds, nanoseconds) with the nanoseconds counted forward,
/// as `struct timespec` does: 1.5 s before is (-2, 500_000_000).
fn before_epoch(d: std::time::Duration) -> (i64, u32) {
    let secs = -(d.as_secs() as i64);
    match d.subsec_nanos() {
        0 => (secs, 0),
        n => (secs - 1, 1_000_000_000 - n),
    }
}

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({} bytes, mtime {}.{:09})",
            self.path.display(),
            self.size,
            self.mtime_secs,
            self.mtime_nanos
        )
    }
}

/// The configuration a snapshot was taken with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigFingerprint {
    /// `--kernel`.
    pub kernel: FileId,
    /// `--initrd`, in order.
    pub initrds: Vec<FileId>,
    /// `--mem-mib`.
    pub mem_mib: u64,
    /// `--vcpus`.
    pub vcpus: u8,
}

/// One difference between a snapshot's configuration and the current one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    /// What differs ("kernel", "initrd 2", "memory", "vCPUs").
    pub what: String,
    /// The snapshot's value.
    pub snapshot: String,
    /// The current value.
    pub current: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: snapshot {}, now {}",
            self.what, self.snapshot, self.current
        )
    }
}

impl ConfigFingerprint {
    /// The fingerprint of a configuration (reads the files' metadata).
    pub fn of(
        kernel: &Path,
        initrds: &[PathBuf],
        mem_mib: u64,
        vcpus: u8,
    ) -> std::io::Result<Self> {
        Ok(ConfigFingerprint {
            kernel: FileId::of(kernel)?,
            initrds: initrds
                .iter()
                .map(|p| FileId::of(p))
                .collect::<Result<_, _>>()?,
            mem_mib,
            vcpus,
        })
    }

    /// What differs between `self` (the snapshot's) and `current`; empty when a restore may
    /// go ahead.
    pub fn differences(&self, current: &ConfigFingerprint) -> Vec<Difference> {
        let mut d = Vec::new();
        let mut diff = |what: String, snapshot: String, current: String| {
            d.push(Difference {
                what,
                snapshot,
                current,
            })
        };
        if !self.kernel.same_content(&current.kernel) {
            diff(
                "kernel".into(),
                self.kernel.to_string(),
                current.kernel.to_string(),
            );
        }
        if self.initrds.len() != current.initrds.len() {
            diff(
                "initrd count".into(),
                self.initrds.len().to_string(),
                current.initrds.len().to_string(),
            );
        }
        for (i, (s, c)) in self.initrds.iter().zip(&current.initrds).enumerate() {
            if !s.same_content(c) {
                diff(format!("initrd {}", i + 1), s.to_string(), c.to_string());
            }
        }
        if self.mem_mib != current.mem_mib {
            diff(
                "memory".into(),
                format!("{} MiB", self.mem_mib),
                format!("{} MiB", current.mem_mib),
            );
        }
        if self.vcpus != current.vcpus {
            diff(
                "vCPUs".into(),
                self.vcpus.to_string(),
                current.vcpus.to_string(),
            );
        }
        d
    }
}

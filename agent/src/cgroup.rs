//! cgroup v2 handling: the agent's hierarchy root, one group per container
//! (`<root>/kata-rs/<id>`), resource limits, and clean removal.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{AgentError, Result};

/// Controllers the agent turns on for containers.
pub const CONTROLLERS: [&str; 4] = ["cpu", "memory", "pids", "io"];

/// Whether `path` is the root of a mounted cgroup2 file system.
pub fn is_cgroup2(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// Finds the cgroup v2 hierarchy: `/sys/fs/cgroup` (the guest, unified hosts) or
/// `/sys/fs/cgroup/unified` (hybrid hosts, for development mode).
pub fn detect_root() -> Option<PathBuf> {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .iter()
        .map(PathBuf::from)
        .find(|p| is_cgroup2(p))
}

/// Enables as many of [`CONTROLLERS`] as `dir` offers in its `cgroup.subtree_control`.
/// Returns the controllers that could not be enabled.
pub fn enable_controllers(dir: &Path) -> Vec<String> {
    let available = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let mut missing = Vec::new();
    for c in CONTROLLERS {
        if !available.split_whitespace().any(|a| a == c) {
            missing.push(c.to_string());
            continue;
        }
        if let Err(e) = fs::write(dir.join("cgroup.subtree_control"), format!("+{c}")) {
            tracing::debug!("enable {c} in {dir:?}: {e}");
            missing.push(c.to_string());
        }
    }
    missing
}

/// The value of `key` in a flat-keyed cgroup file (`key value` lines).
pub fn keyed(content: &str, key: &str) -> Option<u64> {
    content.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

/// A container's cgroup statistics (see StatsContainerResponse).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Stats {
    pub cpu_usage_usec: u64,
    pub cpu_user_usec: u64,
    pub cpu_system_usec: u64,
    pub cpu_nr_periods: u64,
    pub cpu_nr_throttled: u64,
    pub cpu_throttled_usec: u64,
    pub memory_usage_bytes: u64,
    pub memory_limit_bytes: u64,
    pub memory_swap_usage_bytes: u64,
    pub memory_oom_kill_count: u64,
    pub pids_current: u64,
    pub pids_limit: u64,
    pub io_read_bytes: u64,
    pub io_write_bytes: u64,
    pub memory_stat: std::collections::HashMap<String, u64>,
}

/// A container's cgroup directory.
#[derive(Debug, Clone)]
pub struct Cgroup {
    path: PathBuf,
}

impl Cgroup {
    /// Creates `<root>/kata-rs/<id>` and applies `writes` (interface file, value). Fails if
    /// the group already exists or a requested limit cannot be set; nothing is left behind
    /// on failure.
    pub fn create(root: &Path, id: &str, writes: &[(String, String)]) -> Result<Self> {
        let parent = root.join("kata-rs");
        if !parent.exists() {
            fs::create_dir(&parent)
                .or_else(|e| {
                    if e.kind() == ErrorKind::AlreadyExists {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
                .map_err(|e| AgentError::internal(format!("create cgroup {parent:?}: {e}")))?;
        }
        enable_controllers(&parent);
        let path = parent.join(id);
        fs::create_dir(&path).map_err(|e| {
            if e.kind() == ErrorKind::AlreadyExists {
                AgentError::already_exists(format!("cgroup {path:?} already exists"))
            } else {
                AgentError::internal(format!("create cgroup {path:?}: {e}"))
            }
        })?;
        let cg = Cgroup { path };
        for (file, value) in writes {
            if let Err(e) = fs::write(cg.path.join(file), value) {
                let _ = fs::remove_dir(&cg.path);
                let ctl = file.split('.').next().unwrap_or(file);
                return Err(AgentError::internal(format!(
                    "set {file}={value} in {:?}: {e} (is the {ctl} controller enabled?)",
                    cg.path
                )));
            }
        }
        Ok(cg)
    }

    /// A group at `path`, as if created (tests of code that only passes it on).
    #[cfg(test)]
    pub(crate) fn at(path: impl Into<PathBuf>) -> Self {
        Cgroup { path: path.into() }
    }

    /// The group's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves `pid` into the group.
    pub fn add_pid(&self, pid: i32) -> Result<()> {
        fs::write(self.path.join("cgroup.procs"), pid.to_string()).map_err(|e| {
            AgentError::internal(format!("move pid {pid} into cgroup {:?}: {e}", self.path))
        })
    }

    /// Writes interface files (UpdateContainer); stops at the first failure, naming it.
    pub fn write_all(&self, writes: &[(String, String)]) -> Result<()> {
        for (file, value) in writes {
            fs::write(self.path.join(file), value).map_err(|e| {
                AgentError::internal(format!("set {file}={value} in {:?}: {e}", self.path))
            })?;
        }
        Ok(())
    }

    fn read(&self, file: &str) -> Option<String> {
        fs::read_to_string(self.path.join(file)).ok()
    }

    /// Freezes (cgroup.freeze 1) or thaws the group and waits until cgroup.events says
    /// `frozen` accordingly.
    pub async fn freeze(&self, frozen: bool) -> Result<()> {
        let want = if frozen { "1" } else { "0" };
        fs::write(self.path.join("cgroup.freeze"), want).map_err(|e| {
            AgentError::internal(format!(
                "write cgroup.freeze={want} in {:?}: {e}",
                self.path
            ))
        })?;
        for _ in 0..500 {
            let events = self.read("cgroup.events").unwrap_or_default();
            if keyed(&events, "frozen") == Some(want.parse().unwrap_or(0)) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(AgentError::internal(format!(
            "cgroup {:?} did not reach frozen={want} within 5s",
            self.path
        )))
    }

    /// PIDs in the group (cgroup.procs).
    pub fn pids(&self) -> Result<Vec<u32>> {
        let s = fs::read_to_string(self.path.join("cgroup.procs")).map_err(|e| {
            AgentError::internal(format!("read cgroup.procs of {:?}: {e}", self.path))
        })?;
        Ok(s.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    /// memory.events oom_kill (0 without the memory controller).
    pub fn oom_kills(&self) -> u64 {
        self.read("memory.events")
            .and_then(|s| keyed(&s, "oom_kill"))
            .unwrap_or(0)
    }

    /// Statistics from the interface files; missing files count as 0.
    pub fn stats(&self) -> Stats {
        let cpu = self.read("cpu.stat").unwrap_or_default();
        let single = |f: &str| -> Option<u64> {
            self.read(f).map(|s| {
                let s = s.trim();
                if s == "max" {
                    u64::MAX
                } else {
                    s.parse().unwrap_or(0)
                }
            })
        };
        let (mut rbytes, mut wbytes) = (0, 0);
        for line in self.read("io.stat").unwrap_or_default().lines() {
            for kv in line.split_whitespace().skip(1) {
                if let Some(v) = kv.strip_prefix("rbytes=") {
                    rbytes += v.parse::<u64>().unwrap_or(0);
                } else if let Some(v) = kv.strip_prefix("wbytes=") {
                    wbytes += v.parse::<u64>().unwrap_or(0);
                }
            }
        }
        let memory_stat = self
            .read("memory.stat")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(' ')?;
                Some((k.to_string(), v.trim().parse().ok()?))
            })
            .collect();
        let k = |key| keyed(&cpu, key).unwrap_or(0);
        Stats {
            cpu_usage_usec: k("usage_usec"),
            cpu_user_usec: k("user_usec"),
            cpu_system_usec: k("system_usec"),
            cpu_nr_periods: k("nr_periods"),
            cpu_nr_throttled: k("nr_throttled"),
            cpu_throttled_usec: k("throttled_usec"),
            memory_usage_bytes: single("memory.current").unwrap_or(0),
            memory_limit_bytes: single("memory.max").unwrap_or(u64::MAX),
            memory_swap_usage_bytes: single("memory.swap.current").unwrap_or(0),
            memory_oom_kill_count: self.oom_kills(),
            pids_current: single("pids.current").unwrap_or(0),
            pids_limit: single("pids.max").unwrap_or(u64::MAX),
            io_read_bytes: rbytes,
            io_write_bytes: wbytes,
            memory_stat,
        }
    }

    /// Kills whatever is left in the group (cgroup.kill) and removes it, retrying while
    /// the kernel finishes tearing down dying tasks.
    pub async fn remove(&self) -> Result<()> {
        let kill = self.path.join("cgroup.kill");
        if kill.exists() {
            let _ = fs::write(&kill, "1");
        }
        let mut last = None;
        for _ in 0..100 {
            match fs::remove_dir(&self.path) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(AgentError::internal(format!(
            "remove cgroup {:?}: {}",
            self.path,
            last.map(|e| e.to_string()).unwrap_or_default()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let w = |f: &str, c: &str| fs::write(dir.path().join(f), c).unwrap();
        w("cpu.stat", "usage_usec 100\nuser_usec 60\nsystem_usec 40\nnr_periods 5\nnr_throttled 2\nthrottled_usec 7\n");
        w("memory.current", "4096\n");
        w("memory.max", "max\n");
        w("memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n");
        w("memory.stat", "anon 1024\nfile 2048\n");
        w("pids.current", "3\n");
        w("pids.max", "100\n");
        w(
            "io.stat",
            "8:0 rbytes=10 wbytes=20 rios=1 wios=2\n8:16 rbytes=1 wbytes=2\n",
        );
        w("cgroup.procs", "12\n34\n");
        let cg = Cgroup {
            path: dir.path().to_path_buf(),
        };
        let s = cg.stats();
        assert_eq!(s.cpu_usage_usec, 100);
        assert_eq!(s.cpu_throttled_usec, 7);
        assert_eq!(s.memory_usage_bytes, 4096);
        assert_eq!(s.memory_limit_bytes, u64::MAX);
        assert_eq!(s.memory_swap_usage_bytes, 0);
        assert_eq!(s.memory_oom_kill_count, 1);
        assert_eq!(s.memory_stat.get("file"), Some(&2048));
        assert_eq!((s.pids_current, s.pids_limit), (3, 100));
        assert_eq!((s.io_read_bytes, s.io_write_bytes), (11, 22));
        assert_eq!(cg.pids().unwrap(), [12, 34]);
        assert_eq!(keyed("oom 1\noom_kill 2\n", "oom_kill"), Some(2));
        assert_eq!(keyed("oom 1\n", "oom_kill"), None);
    }
}

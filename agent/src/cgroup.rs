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

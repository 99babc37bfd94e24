//! Snapshot state files (groundwork for snapshot/restore, issue 14 part 2; not wired into the
//! control API yet): the KVM state of the VM and of every vCPU, tagged with the configuration
//! it belongs to, in a versioned file that `load` refuses when it is truncated, corrupt, of
//! another version or of another configuration. Guest memory and device state are not in it
//! yet. Layout: `format.rs` (header), `fingerprint.rs` (configuration), vmm/README.md
//! ("Snapshot format").

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::vstate::vcpu_state::VcpuState;
use crate::vstate::vm_state::VmState;

pub mod fingerprint;
pub mod format;
#[cfg(test)]
mod tests;

pub use fingerprint::{ConfigFingerprint, Difference, FileId};
pub use format::{FormatError, FORMAT_VERSION};

/// The state a snapshot restores: the VM's, then each vCPU's in id order.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SnapshotState {
    /// kvmclock, irqchip, PIT.
    pub vm: VmState,
    /// One entry per vCPU, index = vCPU id.
    pub vcpus: Vec<VcpuState>,
}

/// The JSON payload: the configuration first, then the state.
#[derive(Serialize, Deserialize)]
struct Payload<T> {
    fingerprint: ConfigFingerprint,
    state: T,
}

/// A snapshot state file that cannot be written or is refused.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Reading or writing the file failed.
    #[error("snapshot {0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// The file is not one this build reads (truncated, corrupt, other version).
    #[error("snapshot {path}: {source}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: FormatError,
    },
    /// The snapshot was taken with another configuration.
    #[error("snapshot {path} was taken with another configuration: {}", join(.differences))]
    Config {
        /// The file.
        path: PathBuf,
        /// Everything that differs.
        differences: Vec<Difference>,
    },
}

fn join(d: &[Difference]) -> String {
    d.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Writes `state` of a VM configured as `fingerprint` to `path`: into a temporary file next
/// to it, synced, then renamed over `path` (a crash leaves the old file or the new one, never
/// half of one).
pub fn save(
    path: &Path,
    fingerprint: &ConfigFingerprint,
    state: &SnapshotState,
) -> Result<(), SnapshotError> {
    let io = |e| SnapshotError::Io(path.to_path_buf(), e);
    let payload = serde_json::to_vec(&Payload {
        fingerprint: fingerprint.clone(),
        state,
    })
    .map_err(|e| io(e.into()))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&format::encode(&payload))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}

/// Reads the snapshot state at `path` for a VM configured as `current`. Refuses, naming the
/// reason, a file that is not a snapshot, truncated, corrupt, of another format version, or
/// taken with another configuration (every difference listed).
pub fn load(path: &Path, current: &ConfigFingerprint) -> Result<SnapshotState, SnapshotError> {
    let bytes = std::fs::read(path).map_err(|e| SnapshotError::Io(path.to_path_buf(), e))?;
    let format = |source| SnapshotError::Format {
        path: path.to_path_buf(),
        source,
    };
    let payload = format::decode(&bytes).map_err(format)?;
    let p: Payload<SnapshotState> =
        serde_json::from_slice(payload).map_err(|e| format(FormatError::Payload(e.to_string())))?;
    let differences = p.fingerprint.differences(current);
    if !differences.is_empty() {
        return Err(SnapshotError::Config {
            path: path.to_path_buf(),
            differences,
        });
    }
    if p.state.vcpus.len() != usize::from(p.fingerprint.vcpus) {
        return Err(format(FormatError::Payload(format!(
            "{} vCPU states for {} vCPUs",
            p.state.vcpus.len(),
            p.fingerprint.vcpus
        ))));
    }
    Ok(p.state)
}

//! Snapshots (issue 14 part 2): a directory with the state file [`STATE_FILE`] (the KVM state
//! of the VM and of every vCPU, each virtio-mmio transport and its device, COM1, where guest
//! RAM lies in the memory file; tagged with the configuration it belongs to, versioned, refused
//! by `load` when truncated, corrupt, of another version or of another configuration) and the
//! memory file [`MEMORY_FILE`] (guest RAM, sparse). Layout: `format.rs` (header),
//! `fingerprint.rs` (configuration), `memory.rs` (guest RAM), `take.rs` (taking one from a
//! paused VM), vmm/README.md ("Snapshots").

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::devices::serial::SerialSnapshot;
use crate::devices::virtio::transport::persist::TransportState;
use crate::vstate::vcpu_state::VcpuState;
use crate::vstate::vm_state::VmState;

pub mod fingerprint;
pub mod format;
pub mod memory;
pub mod take;
#[cfg(test)]
mod tests;

pub use fingerprint::{ConfigFingerprint, Difference, FileId};
pub use format::{FormatError, FORMAT_VERSION};

/// The state file in a snapshot directory.
pub const STATE_FILE: &str = "state";
/// The memory file in a snapshot directory.
pub const MEMORY_FILE: &str = "memory";
/// Largest state file `load` reads (a real one is a few hundred KiB of JSON).
pub const MAX_STATE_FILE: u64 = 16 << 20;

/// The state a snapshot restores: the VM's, each vCPU's in id order, the devices', and where
/// guest RAM is in the memory file.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SnapshotState {
    /// kvmclock, irqchip, PIT.
    pub vm: VmState,
    /// One entry per vCPU, index = vCPU id.
    pub vcpus: Vec<VcpuState>,
    /// Guest RAM regions in the memory file.
    pub memory: Vec<memory::MemoryRegionState>,
    /// Every virtio-mmio slot, in slot order.
    pub devices: Vec<TransportState>,
    /// COM1.
    pub serial: SerialSnapshot,
}

/// The payload (postcard: the fields in order, no names; see `format`): the configuration
/// first, then the state.
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
    #[error("snapshot {path}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it (not a `source`: the message already says it, and anyhow's
        /// chain would say it twice).
        reason: FormatError,
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
    let bytes = encode(fingerprint, state).map_err(io)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}

/// The whole state file (header and payload) of `state` of a VM configured as `fingerprint`.
pub fn encode(fingerprint: &ConfigFingerprint, state: &SnapshotState) -> std::io::Result<Vec<u8>> {
    let payload = postcard::to_stdvec(&Payload {
        fingerprint: fingerprint.clone(),
        state,
    })
    .map_err(std::io::Error::other)?;
    Ok(format::encode(&payload))
}

/// Reads the snapshot state at `path` for a VM configured as `current`. Refuses, naming the
/// reason, a file that is not a snapshot, too large, truncated, corrupt, of another format
/// version, or taken with another configuration (every difference listed).
pub fn load(path: &Path, current: &ConfigFingerprint) -> Result<SnapshotState, SnapshotError> {
    let io = |e| SnapshotError::Io(path.to_path_buf(), e);
    let f = std::fs::File::open(path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    if len > MAX_STATE_FILE {
        return Err(io(std::io::Error::other(format!(
            "{len} bytes, more than a state file has (at most {MAX_STATE_FILE})"
        ))));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    std::io::Read::read_to_end(&mut std::io::Read::take(f, MAX_STATE_FILE + 1), &mut bytes)
        .map_err(io)?;
    let format = |reason| SnapshotError::Format {
        path: path.to_path_buf(),
        reason,
    };
    let payload = format::decode(&bytes).map_err(format)?;
    let p: Payload<SnapshotState> =
        postcard::from_bytes(payload).map_err(|e| format(FormatError::Payload(e.to_string())))?;
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

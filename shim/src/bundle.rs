//! The container's bundle on the host: its `config.json` (read bounded), the file that
//! records the configuration Create used, and unmounting its root file system.

use std::path::Path;

/// Largest config.json accepted.
pub const MAX_SPEC_SIZE: u64 = 4 * 1024 * 1024;
/// File in the bundle naming the configuration file Create used when the runtime options
/// named one (ConfigPath), for the `delete` subcommand.
pub const CONFIG_PATH_FILE: &str = "kata-rs-config-path";

/// Unmounts everything at and below `path`.
pub fn unmount(path: &Path) -> Result<(), String> {
    let p = path.to_string_lossy().to_string();
    containerd_shim::mount::umount_recursive(Some(&p), 0)
        .or_else(|_| containerd_shim::mount::umount_recursive(Some(&p), libc::MNT_DETACH))
        .map_err(|e| e.to_string())
}

/// Reads an OCI spec (`config.json`), at most [`MAX_SPEC_SIZE`] bytes.
pub fn read_spec(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let f = std::fs::File::open(path)
        .map_err(|e| format!("cannot read OCI spec {}: {e}", path.display()))?;
    let mut buf = Vec::new();
    f.take(MAX_SPEC_SIZE + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot read OCI spec {}: {e}", path.display()))?;
    if buf.len() as u64 > MAX_SPEC_SIZE {
        return Err(format!(
            "OCI spec {} is larger than {MAX_SPEC_SIZE} bytes",
            path.display()
        ));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_size_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        std::fs::write(&p, vec![b' '; (MAX_SPEC_SIZE + 1) as usize]).unwrap();
        assert!(read_spec(&p).unwrap_err().contains("larger than"));
        std::fs::write(&p, b"{}").unwrap();
        assert_eq!(read_spec(&p).unwrap(), b"{}");
        assert!(read_spec(&dir.path().join("none"))
            .unwrap_err()
            .contains("cannot read OCI spec"));
    }
}

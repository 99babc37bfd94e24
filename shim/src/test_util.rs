//! Helpers shared by the crate's unit tests.

use std::path::{Path, PathBuf};

/// Writes an executable `/bin/sh` script `dir/name` running `body` (a fake VMM, virtiofsd,
/// ...) and returns its path.
pub fn fake_program(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

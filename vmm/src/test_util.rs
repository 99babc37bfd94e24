//! Helpers shared by the crate's unit tests.

use std::path::PathBuf;

/// A fresh directory for test `name` under the temporary directory (this process's own:
/// its pid is in the name); the test removes it when it is done.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kata-vmm-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

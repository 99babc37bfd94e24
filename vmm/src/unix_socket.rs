//! A private Unix listening socket: the one way kata-vmm binds its host-side sockets (the
//! control API, the hybrid vsock's host side).

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::Mutex;

/// Serialises the umask swap: two binds at once (threads of a test process) would otherwise
/// restore each other's mask and leave the strict one in place for good.
static UMASK: Mutex<()> = Mutex::new(());

/// Binds `path` mode 0600 and non-blocking; a stale socket there is replaced, any other file
/// is an error. Errors name `what` and the path.
pub fn bind_private(path: &Path, what: &str) -> io::Result<UnixListener> {
    let ctx = |e: io::Error| io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()));
    if let Ok(md) = std::fs::symlink_metadata(path) {
        if !md.file_type().is_socket() {
            return Err(ctx(io::Error::other("exists and is not a socket")));
        }
        std::fs::remove_file(path).map_err(ctx)?;
    }
    // Created 0600 (umask 0177 around bind: no window in which others may connect). The VMM
    // binds before it starts threads; anything else in the process that creates files sets
    // their mode explicitly (as snapshot::take does for its directories).
    let bound = {
        let _serial = UMASK.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: umask only swaps the process's file mode mask.
        let old = unsafe { libc::umask(0o177) };
        let bound = UnixListener::bind(path);
        // SAFETY: as above, restoring the previous mask.
        unsafe { libc::umask(old) };
        bound
    };
    let listener = bound.map_err(ctx)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(ctx)?;
    listener.set_nonblocking(true).map_err(ctx)?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_0600_replaces_a_stale_socket_and_refuses_other_files() {
        let dir = std::env::temp_dir().join(format!("kata-vmm-uds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("s");
        let first = bind_private(&sock, "--test").unwrap();
        drop(first);
        let _again = bind_private(&sock, "--test").unwrap();
        let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let file = dir.join("f");
        std::fs::write(&file, b"x").unwrap();
        let e = bind_private(&file, "--test").unwrap_err().to_string();
        assert!(e.contains("--test") && e.contains("not a socket"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

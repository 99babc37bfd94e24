//! The sandbox's virtio-fs file server: one `virtiofsd` (the Rust daemon of the virtio-fs
//! project, the one Kata ships) per sandbox, exporting the share's `shared/` directory
//! (`crate::share`) to kata-vmm's vhost-user-fs device over a unix socket in the sandbox's
//! state directory. The shim binds that socket itself and hands it to virtiofsd (`--fd`), so
//! the VMM is started at once, beside it: its connection waits in the socket's listen queue
//! until virtiofsd serves it (kata-vmm bounds that wait, `handshake-timeout=`).
//!
//! Why a separate process and not a file server inside kata-vmm: a passthrough server needs
//! file capabilities (chown, DAC override, setting ids, mknod) to act for the guest's users,
//! and the VMM, which runs the guest and parses its device requests, has dropped all of
//! them in its jail. virtiofsd keeps only those and confines itself (`--sandbox namespace`:
//! its own mount, PID and network namespaces, `pivot_root` into the shared directory, so it
//! sees nothing else of the host; `--seccomp kill`: its own syscall allow-list; every path
//! opened relative to the root with O_PATH/O_NOFOLLOW, never through a guest symlink).
//! docs/storage-choice.md has the comparison with an in-process server, measured.

use std::{
    ffi::OsString,
    os::fd::{AsFd, AsRawFd, RawFd},
    os::unix::net::UnixListener,
    path::{Path, PathBuf},
    time::Duration,
};

use tracing::info;

use crate::vmm::{Vmm, VmmExit};

/// Name of virtiofsd's vhost-user socket in the sandbox's state directory.
pub const SOCKET_FILE: &str = "virtiofsd.sock";
/// Name of virtiofsd's pid file in the sandbox's state directory.
pub const PID_FILE: &str = "virtiofsd.pid";

/// What the shim asks virtiofsd to serve.
#[derive(Debug, Clone, PartialEq)]
pub struct VirtiofsdSpec {
    /// The virtiofsd binary.
    pub path: PathBuf,
    /// The directory exported (the share's `shared/`).
    pub shared_dir: PathBuf,
    /// The vhost-user socket it listens on (bound by the shim, passed as `--fd`).
    pub socket: PathBuf,
    /// `--cache` mode (`auto`, `never`, `always`).
    pub cache: String,
}

impl VirtiofsdSpec {
    /// virtiofsd's command line, serving the listening socket inherited as `fd`.
    pub fn args(&self, fd: RawFd) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![format!("--fd={fd}").into()];
        a.extend([
            "--shared-dir".into(),
            self.shared_dir.clone().into(),
            "--cache".into(),
            self.cache.clone().into(),
            // Its own namespaces, pivot_root into the shared dir; seccomp kills on a
            // syscall outside its list.
            "--sandbox".into(),
            "namespace".into(),
            "--seccomp".into(),
            "kill".into(),
            // Each container's rootfs and volume is its own host mount: the guest sees
            // each as a submount with its own st_dev, so inode numbers never collide.
            // (Extended attributes and POSIX ACLs stay off, virtiofsd's default: the
            // guest's security.* labels never land on host files.)
            "--announce-submounts".into(),
            // No CAP_MKNOD: a guest must not leave host device nodes in a volume (a
            // `c 1 1` node in a hostPath would be /dev/mem for any host user who can reach
            // it). FIFOs and sockets need no capability and still work.
            "--modcaps=-mknod".into(),
            "--log-level".into(),
            "error".into(),
        ]);
        a
    }
}

/// A running virtiofsd.
pub struct Virtiofsd {
    /// The process (supervised like the VMM).
    pub process: Vmm,
    /// Its vhost-user socket.
    pub socket: PathBuf,
}

impl Virtiofsd {
    /// Binds the vhost-user socket (0600; a stale one is replaced) and starts virtiofsd on
    /// it (`--fd`); it does not wait for virtiofsd: the socket accepts connections from
    /// now on, and the VMM's waits in its queue until virtiofsd serves it. The shim keeps no
    /// copy of the listening socket, so a virtiofsd that exits before it serves makes the
    /// VMM's connection fail at once ([`Virtiofsd::why_not_serving`] then says why).
    pub fn start(spec: &VirtiofsdSpec) -> Result<Self, String> {
        let listener = listen(&spec.socket)?;
        let process = Vmm::spawn_program(
            "virtiofsd",
            &spec.path,
            spec.args(listener.as_raw_fd()),
            None,
            Some(listener.as_fd()),
        )
        .map_err(|e| {
            let _ = std::fs::remove_file(&spec.socket);
            e.to_string()
        })?;
        drop(listener);
        info!(
            pid = process.pid(),
            "virtiofsd started for {} on {}",
            spec.shared_dir.display(),
            spec.socket.display()
        );
        Ok(Self {
            process,
            socket: spec.socket.clone(),
        })
    }

    /// When virtiofsd has exited: what to add to the message of a VM that did not start
    /// (its exit and its own error line), so that the cause is named, not only the VMM's
    /// failed handshake.
    /// (Its exit may be seen a moment after the VMM's: waits up to half a second for it.)
    pub async fn why_not_serving(&self) -> Option<String> {
        let exit = tokio::time::timeout(Duration::from_millis(500), self.process.wait())
            .await
            .ok()?;
        let why = self.process.error_line().await;
        Some(format!(
            "; the virtio-fs server {exit}{}",
            why.map(|l| format!(": {l}")).unwrap_or_default()
        ))
    }

    /// After the VMM has gone: virtiofsd exits by itself when its vhost-user peer closes;
    /// waits up to `timeout` for that, then kills it. Removes the socket.
    pub async fn stop(&self, timeout: Duration) -> VmmExit {
        let exit = self.process.stop(timeout).await;
        let _ = std::fs::remove_file(&self.socket);
        exit
    }

    /// Kills it at once and waits until it is reaped; removes the socket.
    pub async fn kill(&self) -> VmmExit {
        let exit = self.process.kill_and_wait().await;
        let _ = std::fs::remove_file(&self.socket);
        exit
    }
}

/// Binds `socket` for virtiofsd: a stale file there is removed, the new one is 0600.
fn listen(socket: &Path) -> Result<UnixListener, String> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_file(socket);
    let named = |e: std::io::Error| {
        format!(
            "cannot create the virtio-fs socket {}: {e}",
            socket.display()
        )
    };
    let listener = UnixListener::bind(socket).map_err(named)?;
    if let Err(e) = std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600)) {
        let _ = std::fs::remove_file(socket);
        return Err(named(e));
    }
    Ok(listener)
}

/// The `--fs` argument of kata-vmm for virtiofsd's `socket`: the share's tag, and how long
/// virtiofsd may take to answer the handshake (it starts beside the VMM).
pub fn vmm_fs_arg(socket: &Path, handshake_secs: u64) -> OsString {
    let mut v = OsString::from("socket=");
    v.push(socket.as_os_str());
    v.push(format!(
        ",tag={},handshake-timeout={handshake_secs}",
        kata_rs_protocol::guest::SHARE_TAG
    ));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path, body: &str) -> VirtiofsdSpec {
        VirtiofsdSpec {
            path: crate::test_util::fake_program(dir, "fake-virtiofsd", body),
            shared_dir: dir.join("shared"),
            socket: dir.join(SOCKET_FILE),
            cache: "auto".into(),
        }
    }

    #[test]
    fn command_line_confines_the_server() {
        let s = VirtiofsdSpec {
            path: "/v".into(),
            shared_dir: "/s/share/shared".into(),
            socket: "/s/virtiofsd.sock".into(),
            cache: "auto".into(),
        };
        let a: Vec<String> = s
            .args(7)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let line = a.join(" ");
        assert!(
            line.starts_with("--fd=7 --shared-dir /s/share/shared --cache auto"),
            "{line}"
        );
        assert!(
            line.contains("--sandbox namespace --seccomp kill"),
            "{line}"
        );
        assert!(line.contains("--announce-submounts"), "{line}");
        assert!(line.contains("--modcaps=-mknod"), "{line}");
        assert_eq!(
            vmm_fs_arg(Path::new("/s/virtiofsd.sock"), 30),
            OsString::from("socket=/s/virtiofsd.sock,tag=kata-rs,handshake-timeout=30")
        );
    }

    /// The fake's body: finds `--fd=N`, records what N is, then runs `rest`.
    fn record_fd(rest: &str) -> String {
        format!(
            "d=$(dirname \"$0\"); for a; do case $a in --fd=*) fd=${{a#--fd=}};; esac; done; \
             readlink /proc/$$/fd/$fd > \"$d/fd-target\"; \
             for f in /proc/$$/fd/*; do echo \"${{f##*/}} $(readlink $f)\"; done > \"$d/fds.tmp\"; \
             mv \"$d/fds.tmp\" \"$d/fds\"; {rest}"
        )
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_server_gets_the_bound_socket_and_the_vmm_can_connect_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(dir.path(), &record_fd("exec sleep 30"));
        let v = Virtiofsd::start(&s).unwrap();
        // The socket accepts connections before the server does anything (they queue).
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&s.socket).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        let _queued = std::os::unix::net::UnixStream::connect(&s.socket).unwrap();
        // The fake saw a socket at the fd it was told, and no other fd of the shim.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !dir.path().join("fds").exists() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let target = std::fs::read_to_string(dir.path().join("fd-target")).unwrap();
        assert!(target.starts_with("socket:["), "{target}");
        // Of the shim's sockets, only that one reached it.
        let fds = std::fs::read_to_string(dir.path().join("fds")).unwrap();
        let sockets: Vec<&str> = fds.lines().filter(|l| l.contains(" socket:")).collect();
        assert_eq!(sockets.len(), 1, "{fds}");
        assert!(v.process.exited().is_none());
        assert!(v.why_not_serving().await.is_none(), "still running");
        let exit = v.stop(Duration::from_millis(100)).await;
        assert_eq!(exit, VmmExit::Signal(9), "killed after the grace time");
        assert!(!s.socket.exists(), "socket removed");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_server_that_exits_leaves_no_listener_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(
            dir.path(),
            "echo '[ERROR virtiofsd] Error entering sandbox: no permission' >&2; exit 1",
        );
        let v = Virtiofsd::start(&s).unwrap();
        v.process.wait().await;
        let why = v.why_not_serving().await.unwrap();
        assert!(why.contains("exited with status 1"), "{why}");
        assert!(why.contains("Error entering sandbox"), "{why}");
        // The shim kept no copy of the listening socket: nobody accepts any more, so a
        // VMM connecting now fails at once instead of waiting out its handshake bound.
        let e = std::os::unix::net::UnixStream::connect(&s.socket).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
        v.kill().await;
        assert!(!s.socket.exists());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_missing_server_is_an_error_naming_it_and_leaves_no_socket() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(dir.path(), "exit 0");
        s.path = dir.path().join("no-such-virtiofsd");
        let e = Virtiofsd::start(&s).err().unwrap();
        assert!(e.contains("no-such-virtiofsd"), "{e}");
        assert!(!s.socket.exists());
    }
}

//! The sandbox's virtio-fs file server: one `virtiofsd` (the Rust daemon of the virtio-fs
//! project, the one Kata ships) per sandbox, exporting the share's `shared/` directory
//! (`crate::share`) to kata-vmm's vhost-user-fs device over a unix socket in the sandbox's
//! state directory.
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
    /// The vhost-user socket it listens on.
    pub socket: PathBuf,
    /// `--cache` mode (`auto`, `never`, `always`).
    pub cache: String,
}

impl VirtiofsdSpec {
    /// virtiofsd's command line.
    pub fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec!["--socket-path".into(), self.socket.clone().into()];
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
    /// Starts virtiofsd and waits (up to `timeout`) until its socket exists, racing its
    /// exit. On failure it is killed and reaped, its socket removed, and the message says
    /// what went wrong (its own error line when it printed one).
    pub async fn start(spec: &VirtiofsdSpec, timeout: Duration) -> Result<Self, String> {
        let _ = std::fs::remove_file(&spec.socket);
        let process = Vmm::spawn_program("virtiofsd", &spec.path, spec.args(), None)
            .map_err(|e| e.to_string())?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if spec.socket.exists() {
                info!(
                    pid = process.pid(),
                    "virtiofsd serves {} on {}",
                    spec.shared_dir.display(),
                    spec.socket.display()
                );
                return Ok(Self {
                    process,
                    socket: spec.socket.clone(),
                });
            }
            if let Some(exit) = process.exited() {
                let why = process.error_line().await;
                let _ = std::fs::remove_file(&spec.socket);
                return Err(format!(
                    "virtio-fs server {} {exit} before it served the sandbox's share{}",
                    spec.path.display(),
                    why.map(|l| format!(": {l}")).unwrap_or_default()
                ));
            }
            if tokio::time::Instant::now() >= deadline {
                let exit = process.kill_and_wait().await;
                let _ = std::fs::remove_file(&spec.socket);
                return Err(format!(
                    "virtio-fs server {} did not create its socket {} within {}s (it {exit})",
                    spec.path.display(),
                    spec.socket.display(),
                    timeout.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
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

/// The `--fs` argument of kata-vmm for virtiofsd's `socket`.
pub fn vmm_fs_arg(socket: &Path) -> OsString {
    let mut v = OsString::from("socket=");
    v.push(socket.as_os_str());
    v.push(format!(",tag={}", kata_rs_protocol::guest::SHARE_TAG));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path, body: &str) -> VirtiofsdSpec {
        let p = dir.join("fake-virtiofsd");
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        VirtiofsdSpec {
            path: p,
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
            .args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let line = a.join(" ");
        assert!(
            line.starts_with(
                "--socket-path /s/virtiofsd.sock --shared-dir /s/share/shared --cache auto"
            ),
            "{line}"
        );
        assert!(
            line.contains("--sandbox namespace --seccomp kill"),
            "{line}"
        );
        assert!(line.contains("--announce-submounts"), "{line}");
        assert!(line.contains("--modcaps=-mknod"), "{line}");
        assert_eq!(
            vmm_fs_arg(Path::new("/s/virtiofsd.sock")),
            OsString::from("socket=/s/virtiofsd.sock,tag=kata-rs")
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn ready_when_the_socket_appears() {
        let dir = tempfile::tempdir().unwrap();
        // The fake makes its socket file (an ordinary file is enough for the wait) and
        // stays until it is told to go.
        let s = spec(
            dir.path(),
            "while [ \"$1\" != --socket-path ]; do shift; done; : > \"$2\"; exec sleep 30",
        );
        let v = Virtiofsd::start(&s, Duration::from_secs(10)).await.unwrap();
        assert!(v.process.exited().is_none());
        let exit = v.stop(Duration::from_millis(100)).await;
        assert_eq!(exit, VmmExit::Signal(9), "killed after the grace time");
        assert!(!s.socket.exists(), "socket removed");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn early_exit_is_reported_with_its_error() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(
            dir.path(),
            "echo '[ERROR virtiofsd] Error entering sandbox: no permission' >&2; exit 1",
        );
        let e = Virtiofsd::start(&s, Duration::from_secs(10))
            .await
            .err()
            .unwrap();
        assert!(e.contains("exited with status 1 before it served"), "{e}");
        assert!(e.contains("Error entering sandbox"), "{e}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_server_that_never_listens_times_out_and_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(
            dir.path(),
            "echo $$ > \"$(dirname \"$0\")/pid\"; exec sleep 30",
        );
        let t0 = std::time::Instant::now();
        let e = Virtiofsd::start(&s, Duration::from_secs(1))
            .await
            .err()
            .unwrap();
        assert!(t0.elapsed() < Duration::from_secs(10));
        assert!(e.contains("did not create its socket"), "{e}");
        let pid = std::fs::read_to_string(dir.path().join("pid")).unwrap();
        assert!(!Path::new(&format!("/proc/{}", pid.trim())).exists());
    }
}

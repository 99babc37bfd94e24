//! The sandbox's shared file system (virtio-fs; contract in `kata_rs_protocol::guest`):
//! the kernel command line names its tag (`kata_rs.share=<tag>`), the agent mounts it at
//! [`GUEST_SHARE_DIR`] at boot, and container `<id>` finds its root file system at
//! `<share>/<id>/rootfs` and its bind-mount sources at `<share>/<id>/mounts/<n>`.
//!
//! The share is mounted once, in the agent's mount namespace; each container's init binds
//! its rootfs and sources in its own (private) mount namespace, so nothing per container
//! is ever mounted in the agent's namespace. The agent never deletes anything in the share:
//! it is the host's container root file system.

use std::path::{Path, PathBuf};

pub use kata_rs_protocol::guest::{GUEST_SHARE_DIR, SHARE_CMDLINE_PARAM};

use crate::error::{AgentError, Result};

/// The share as the agent found it at boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Share {
    /// Mounted at `dir` (in the guest), or a directory given in development mode.
    Ready {
        /// Where the share is.
        dir: PathBuf,
    },
    /// The kernel command line asked for tag `tag`, but mounting it failed.
    Failed {
        /// virtio-fs tag.
        tag: String,
        /// Where it was to be mounted.
        dir: PathBuf,
        /// Why it failed.
        error: String,
    },
    /// The kernel command line has no `kata_rs.share=`: no share.
    Absent,
}

impl Share {
    /// Container `id`'s directory in the share (`<share>/<id>`), or a FAILED_PRECONDITION
    /// naming the share when there is none.
    pub fn container_dir(&self, id: &str) -> Result<PathBuf> {
        match self {
            Share::Ready { dir } => Ok(dir.join(kata_rs_protocol::guest::container_rel(id))),
            Share::Failed { tag, dir, error } => Err(AgentError::precondition(format!(
                "container {id}: the sandbox share (virtio-fs tag {tag:?}) is not mounted at {}: {error}",
                dir.display()
            ))),
            Share::Absent => Err(AgentError::precondition(format!(
                "container {id}: no sandbox share: the kernel command line has no \
                 {SHARE_CMDLINE_PARAM}=<tag>, so nothing is mounted at {GUEST_SHARE_DIR} \
                 (the container's root file system comes only through it)"
            ))),
        }
    }
}

/// The share's tag from a kernel command line (`kata_rs.share=<tag>`; the last one wins).
/// An empty value is `Some("")` (the caller reports it).
pub fn tag_from_cmdline(cmdline: &str) -> Option<&str> {
    cmdline.split_ascii_whitespace().rev().find_map(|w| {
        let (k, v) = w.split_once('=')?;
        (k == SHARE_CMDLINE_PARAM).then_some(v)
    })
}

/// At boot (PID 1): reads `/proc/cmdline` and, when it names a share, mounts it
/// (`mount -t virtiofs <tag> dir`). A failure is printed on the console here; the agent
/// still becomes ready and CreateContainer reports it.
pub fn mount_at_boot(dir: &Path) -> Share {
    let cmdline = match std::fs::read_to_string("/proc/cmdline") {
        Ok(c) => c,
        Err(e) => {
            let s = Share::Failed {
                tag: "?".into(),
                dir: dir.to_path_buf(),
                error: format!("read /proc/cmdline: {e}"),
            };
            report(&s);
            return s;
        }
    };
    let Some(tag) = tag_from_cmdline(&cmdline) else {
        return Share::Absent;
    };
    let s = match mount_virtiofs(tag, dir) {
        Ok(()) => Share::Ready {
            dir: dir.to_path_buf(),
        },
        Err(error) => Share::Failed {
            tag: tag.to_string(),
            dir: dir.to_path_buf(),
            error,
        },
    };
    report(&s);
    s
}

fn report(s: &Share) {
    if let Share::Failed { tag, dir, error } = s {
        // Always on the console, whatever the log level.
        eprintln!(
            "kata-rs-agent: error: mount virtio-fs share {tag:?} at {}: {error}",
            dir.display()
        );
    }
}

/// `mount -t virtiofs <tag> <dir>` (nosuid, nodev), creating `dir`: the boot-time mount, and
/// AfterRestore's (`crate::restore`). The error is the failed step and its errno text.
pub fn mount_virtiofs(tag: &str, dir: &Path) -> std::result::Result<(), String> {
    use nix::mount::{mount, MsFlags};
    if tag.is_empty() {
        return Err(format!("{SHARE_CMDLINE_PARAM}= names no tag"));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("mkdir: {e}"))?;
    mount(
        Some(tag),
        dir,
        Some("virtiofs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(|e| format!("mount: {}", e.desc()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ttrpc::Code;

    #[test]
    fn tag_on_the_command_line() {
        assert_eq!(
            tag_from_cmdline("console=ttyS0 reboot=k kata_rs.share=kata-rs quiet\n"),
            Some("kata-rs")
        );
        assert_eq!(
            tag_from_cmdline("a kata_rs.share=x kata_rs.share=y"),
            Some("y")
        );
        assert_eq!(tag_from_cmdline("kata_rs.share="), Some(""));
        assert_eq!(
            tag_from_cmdline("console=ttyS0 kata_rs.sharex=1 kata_rs.share"),
            None
        );
        assert_eq!(tag_from_cmdline(""), None);
    }

    #[test]
    fn container_dirs_and_errors_name_the_share() {
        let s = Share::Ready {
            dir: PathBuf::from(GUEST_SHARE_DIR),
        };
        assert_eq!(
            s.container_dir("c1").unwrap(),
            Path::new("/run/kata-rs/shared/c1")
        );
        let f = Share::Failed {
            tag: "kata-rs".into(),
            dir: PathBuf::from(GUEST_SHARE_DIR),
            error: "mount: No such device".into(),
        };
        let e = f.container_dir("c1").unwrap_err();
        assert_eq!(e.code, Code::FAILED_PRECONDITION);
        let m = e.to_string();
        assert!(
            m.contains("\"kata-rs\"") && m.contains("/run/kata-rs/shared"),
            "{m}"
        );
        assert!(m.contains("No such device"), "{m}");
        let m = Share::Absent.container_dir("c1").unwrap_err().to_string();
        assert!(m.contains("kata_rs.share=<tag>"), "{m}");
    }
}

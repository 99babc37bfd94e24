//! The install layout (docs/design.md) as paths under a root directory that stands for the
//! node's `/`, and where each artifact is found in a build output directory.

use std::path::{Component, Path, PathBuf};

/// The shim, on containerd's PATH.
pub const SHIM: &str = "/usr/local/bin/containerd-shim-kata-v2";
/// The VMM.
pub const VMM: &str = "/usr/local/bin/kata-vmm";
/// The virtio-fs server (the shim's `[shared_fs] virtiofsd` default).
pub const VIRTIOFSD: &str = "/usr/local/libexec/kata-rs/virtiofsd";
/// The guest kernel (ELF vmlinux, PVH entry).
pub const KERNEL: &str = "/usr/local/share/kata-rs/vmlinux";
/// The guest image (newc cpio initramfs, agent as /init).
pub const INITRD: &str = "/usr/local/share/kata-rs/kata-rs-initrd.img";
/// This tool, so that `kata-rs check` can be run on the node.
pub const TOOL: &str = "/usr/local/bin/kata-rs";
/// The shim's configuration.
pub const CONFIG: &str = kata_rs_shim::config::DEFAULT_CONFIG_PATH;
/// containerd's configuration (the default of `--containerd-config`).
pub const CONTAINERD_CONFIG: &str = "/etc/containerd/config.toml";
/// The CRI-O drop-in `kata-rs install --crio` writes.
pub const CRIO_DROPIN: &str = "/etc/crio/crio.conf.d/50-kata-rs.conf";
/// What `kata-rs install` recorded: the manifest and the backups of replaced files.
pub const STATE_DIR: &str = "/var/lib/kata-rs/install";
/// The manifest in [`STATE_DIR`].
pub const MANIFEST: &str = "/var/lib/kata-rs/install/manifest.json";
/// Backups of replaced files, under their node path, in [`STATE_DIR`].
pub const BACKUP_DIR: &str = "/var/lib/kata-rs/install/backup";

/// kata-vmm's static (musl) build, where `make binaries` leaves it, as a path from
/// `target/release` (a `--from` of a build directory); the shell scripts' spelling is
/// `KATA_RS_VMM_IN_TARGET` in scripts/paths.sh.
pub const STATIC_VMM: &str = "../x86_64-unknown-linux-musl/release/kata-vmm";

/// An artifact `kata-rs install` copies: its install path and the names it may have in the
/// `--from` directory (relative; the first one that exists wins).
#[derive(Debug, Clone, Copy)]
pub struct Artifact {
    /// Short name for messages ("VMM", "guest kernel", ...).
    pub what: &'static str,
    /// Install path (absolute, node view).
    pub dest: &'static str,
    /// Names in `--from`: `target/release` holds the binaries, `target/guest` (= `../guest`
    /// from there) the kernel and image; a flat directory (the DaemonSet image) all of them.
    pub sources: &'static [&'static str],
    /// Installed mode.
    pub mode: u32,
}

/// This tool, installed when `--from` holds it (`target/release` after
/// `cargo build --release -p kata-rs-tool`, the DaemonSet image); optional.
pub const TOOL_ARTIFACT: Artifact = Artifact {
    what: "kata-rs tool",
    dest: TOOL,
    sources: &["kata-rs", "bin/kata-rs"],
    mode: 0o755,
};

/// The artifacts install needs (the tool is [`TOOL_ARTIFACT`], optional).
pub const ARTIFACTS: [Artifact; 5] = [
    Artifact {
        what: "shim",
        dest: SHIM,
        sources: &["containerd-shim-kata-v2", "bin/containerd-shim-kata-v2"],
        mode: 0o755,
    },
    Artifact {
        what: "VMM",
        dest: VMM,
        // The static build beside target/release (`make binaries`) first.
        sources: &[STATIC_VMM, "kata-vmm", "bin/kata-vmm"],
        mode: 0o755,
    },
    Artifact {
        what: "virtio-fs server",
        dest: VIRTIOFSD,
        sources: &["virtiofsd", "bin/virtiofsd", "libexec/virtiofsd"],
        mode: 0o755,
    },
    Artifact {
        what: "guest kernel",
        dest: KERNEL,
        sources: &["vmlinux", "guest/vmlinux", "../guest/vmlinux"],
        mode: 0o644,
    },
    Artifact {
        what: "guest image",
        dest: INITRD,
        sources: &[
            "kata-rs-initrd.img",
            "initrd.img",
            "guest/initrd.img",
            "../guest/initrd.img",
        ],
        mode: 0o644,
    },
];

/// `path` (absolute, node view) under `root`: `rooted("/x", "/etc/a")` = `/x/etc/a`.
/// `..` components are dropped, so the result never leaves `root`.
pub fn rooted(root: &Path, path: &Path) -> PathBuf {
    let mut out = root.to_path_buf();
    for c in path.components() {
        if let Component::Normal(n) = c {
            out.push(n);
        }
    }
    out
}

/// True when `root` is the real `/` (the tool acts on the running node itself).
pub fn is_real_root(root: &Path) -> bool {
    root.canonicalize()
        .map(|p| p == Path::new("/"))
        .unwrap_or(false)
}

/// The first of `artifact.sources` that exists in `from`.
pub fn find_source(from: &Path, artifact: &Artifact) -> Option<PathBuf> {
    artifact
        .sources
        .iter()
        .map(|s| from.join(s))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooted_stays_under_root() {
        let r = Path::new("/scratch");
        assert_eq!(
            rooted(r, Path::new("/etc/containerd/config.toml")),
            Path::new("/scratch/etc/containerd/config.toml")
        );
        assert_eq!(
            rooted(r, Path::new("/../etc/x")),
            Path::new("/scratch/etc/x")
        );
        assert_eq!(
            rooted(Path::new("/"), Path::new("/etc/x")),
            Path::new("/etc/x")
        );
    }

    #[test]
    fn layout_matches_the_shim_defaults() {
        let d = kata_rs_shim::config::ConfigFile::default();
        assert_eq!(d.hypervisor.path, Path::new(VMM));
        assert_eq!(d.hypervisor.kernel, Path::new(KERNEL));
        assert_eq!(d.hypervisor.initrd, Path::new(INITRD));
        assert_eq!(d.shared_fs.virtiofsd, Path::new(VIRTIOFSD));
    }

    /// The shell scripts' spelling (scripts/paths.sh, sourced by sh) is the same path.
    #[test]
    fn static_vmm_is_the_shell_scripts_one() {
        let top = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let out = std::process::Command::new("sh")
            .args([
                "-c",
                ". scripts/paths.sh && echo \"$KATA_RS_VMM_IN_TARGET\"",
            ])
            .current_dir(top)
            .output()
            .expect("sh");
        assert!(out.status.success(), "{out:?}");
        let sh = String::from_utf8(out.stdout).unwrap();
        assert_eq!(STATIC_VMM, format!("../{}", sh.trim()));
    }

    #[test]
    fn sources_found_in_target_release_and_flat_dirs() {
        let t = tempfile::tempdir().unwrap();
        let release = t.path().join("release");
        std::fs::create_dir_all(&release).unwrap();
        std::fs::create_dir_all(t.path().join("guest")).unwrap();
        std::fs::write(t.path().join("guest/vmlinux"), b"k").unwrap();
        std::fs::write(release.join("kata-vmm"), b"v").unwrap();
        let kernel = ARTIFACTS.iter().find(|a| a.dest == KERNEL).unwrap();
        let vmm = ARTIFACTS.iter().find(|a| a.dest == VMM).unwrap();
        assert_eq!(
            find_source(&release, kernel).unwrap(),
            release.join("../guest/vmlinux")
        );
        assert_eq!(
            find_source(&release, vmm).unwrap(),
            release.join("kata-vmm")
        );
        let shim = ARTIFACTS.iter().find(|a| a.dest == SHIM).unwrap();
        assert!(find_source(&release, shim).is_none());
        let static_vmm = release.join(STATIC_VMM);
        std::fs::create_dir_all(static_vmm.parent().unwrap()).unwrap();
        std::fs::write(&static_vmm, b"static").unwrap();
        assert_eq!(
            find_source(&release, vmm).unwrap(),
            static_vmm,
            "the static build is preferred"
        );
    }
}

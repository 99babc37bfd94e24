//! Device nodes: the standard ones in a fresh /dev tmpfs, and spec.linux.devices.

use std::ffi::CString;
use std::fs;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::mount::MsFlags;
use nix::sys::stat::{mknodat, umask, Mode, SFlag};
use nix::unistd::{fchownat, Gid, Uid};

use super::rootfs::MountSys;
use super::InitResult;
use crate::devices::DeviceNode;
use crate::rootpath::{self, Create};

/// Standard device nodes: name, major, minor.
const DEVICES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Creates the standard device nodes (mknod, or a bind mount of the agent's node where
/// mknod is refused) and the /dev symlinks in a fresh /dev tmpfs.
pub(super) fn populate_dev(
    sys: &mut impl MountSys,
    dev: &Path,
    spec: &[DeviceNode],
) -> InitResult<()> {
    use nix::sys::stat::{mknod, Mode, SFlag};
    for (name, major, minor) in DEVICES {
        if spec.iter().any(|d| d.path == Path::new("/dev").join(name)) {
            continue; // the spec's node takes its place, as with runc
        }
        let p = dev.join(name);
        let made = mknod(
            &p,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(major, minor),
        );
        match made {
            Ok(()) => {
                fs::set_permissions(&p, fs::Permissions::from_mode(0o666))
                    .map_err(|e| format!("chmod /dev/{name}: {e}"))?;
            }
            Err(_) => {
                fs::File::create(&p).map_err(|e| format!("create /dev/{name}: {e}"))?;
                let host = Path::new("/dev").join(name);
                sys.mount(
                    Some(&host),
                    &p,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|e| format!("bind mount {host:?} on /dev/{name}: {}", e.desc()))?;
            }
        }
    }
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
        ("core", "/proc/kcore"),
    ] {
        std::os::unix::fs::symlink(to, dev.join(link))
            .map_err(|e| format!("symlink /dev/{link}: {e}"))?;
    }
    Ok(())
}

/// Creates spec.linux.devices inside the container's root as runc does: missing parent
/// directories (0755) resolved and made inside the root, `mknod` with the given type,
/// numbers and mode (umask 0), then `chown`; a path that already exists is left alone.
pub(super) fn make_device_nodes(root: BorrowedFd<'_>, nodes: &[DeviceNode]) -> InitResult<()> {
    for n in nodes {
        let shown = n.path.display();
        let (Some(parent), Some(name)) = (n.path.parent(), n.path.file_name()) else {
            return Err(format!("device node {shown}: not a file path"));
        };
        let dir = rootpath::resolve(root, parent, Some(Create::Dir))
            .map_err(|e| format!("device node {shown}: parent directory: {e}"))?;
        let cname = CString::new(name.as_bytes())
            .map_err(|_| format!("device node {shown}: NUL in the name"))?;
        let dev = nix::sys::stat::makedev(n.major, n.minor);
        // The exact mode (the node list's, as runc makes it): umask 0 around the mknod
        // (this process is single-threaded), the old one put back right after.
        let old = umask(Mode::empty());
        let r = mknodat(
            &dir.fd,
            cname.as_c_str(),
            SFlag::from_bits_truncate(n.file_type as libc::mode_t),
            Mode::from_bits_truncate(n.mode as libc::mode_t),
            dev,
        );
        umask(old);
        if let Err(err) = r {
            if err == Errno::EEXIST {
                continue;
            }
            return Err(format!(
                "mknod device node {shown} ({}:{}): {}",
                n.major,
                n.minor,
                std::io::Error::from(err)
            ));
        }
        let r = fchownat(
            &dir.fd,
            cname.as_c_str(),
            Some(Uid::from_raw(n.uid)),
            Some(Gid::from_raw(n.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        );
        if let Err(err) = r {
            return Err(format!(
                "chown device node {shown} to {}:{}: {}",
                n.uid,
                n.gid,
                std::io::Error::from(err)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::stat::makedev;
    use std::os::fd::AsFd;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    use std::path::PathBuf;

    /// Records the bind mounts `populate_dev` falls back to; mounts nothing.
    #[derive(Default)]
    struct Binds(Vec<(PathBuf, PathBuf)>);

    impl MountSys for Binds {
        fn mount(
            &mut self,
            source: Option<&Path>,
            target: &Path,
            _fstype: Option<&str>,
            flags: MsFlags,
            _data: Option<&str>,
        ) -> nix::Result<()> {
            assert_eq!(flags, MsFlags::MS_BIND);
            let source = source.expect("a bind has a source").to_path_buf();
            self.0.push((source, target.to_path_buf()));
            Ok(())
        }

        fn pivot_root(&mut self, _root: &Path) -> InitResult<()> {
            Err("populate_dev never pivots".into())
        }
    }

    #[test]
    fn standard_nodes_and_links_in_a_fresh_dev() {
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path();
        let spec = [DeviceNode {
            path: "/dev/zero".into(),
            file_type: libc::S_IFCHR,
            major: 1,
            minor: 5,
            mode: 0o600,
            uid: 0,
            gid: 0,
        }];
        let mut sys = Binds::default();
        populate_dev(&mut sys, dev, &spec).unwrap();
        for (name, major, minor) in DEVICES {
            let p = dev.join(name);
            if name == "zero" {
                assert!(
                    !p.exists(),
                    "the spec's node takes the standard one's place"
                );
                continue;
            }
            let md = fs::symlink_metadata(&p).unwrap();
            if md.file_type().is_char_device() {
                assert_eq!(md.rdev(), makedev(major, minor), "{name}");
                assert_eq!(md.mode() & 0o777, 0o666, "{name}");
                assert!(!sys.0.iter().any(|(_, t)| t == &p), "{name}");
            } else {
                // mknod refused (no CAP_MKNOD): a file with the agent's node bound on it.
                assert!(md.is_file(), "{name}");
                assert!(sys.0.contains(&(Path::new("/dev").join(name), p)), "{name}");
            }
        }
        for (link, to) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
            ("ptmx", "pts/ptmx"),
            ("core", "/proc/kcore"),
        ] {
            assert_eq!(fs::read_link(dev.join(link)).unwrap(), Path::new(to));
        }
    }

    #[test]
    fn spec_nodes_are_made_inside_the_root_with_their_mode() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(root.join("dev")).unwrap();
        fs::write(root.join("dev/existing"), "keep").unwrap();
        // An image's absolute symlink resolves inside the root, never to the guest's /run.
        std::os::unix::fs::symlink("/run", root.join("dev/run")).unwrap();
        let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
        // FIFOs need no CAP_MKNOD: the same code path as device nodes, numbers aside.
        let node = |path: &str| DeviceNode {
            path: path.into(),
            file_type: libc::S_IFIFO,
            major: 0,
            minor: 0,
            mode: 0o666,
            uid: uid.as_raw(),
            gid: gid.as_raw(),
        };
        let root_fd = rootpath::open_root(&root).unwrap();
        let nodes = [
            node("/dev/sub/fifo"),
            node("/dev/existing"),
            node("/dev/run/f"),
        ];
        make_device_nodes(root_fd.as_fd(), &nodes).unwrap();
        let md = fs::symlink_metadata(root.join("dev/sub/fifo")).unwrap();
        assert!(md.file_type().is_fifo());
        assert_eq!(md.mode() & 0o777, 0o666, "made with umask 0");
        assert_eq!((md.uid(), md.gid()), (uid.as_raw(), gid.as_raw()));
        assert!(root.join("dev/sub").is_dir());
        assert_eq!(
            fs::read_to_string(root.join("dev/existing")).unwrap(),
            "keep"
        );
        assert!(fs::symlink_metadata(root.join("run/f"))
            .unwrap()
            .file_type()
            .is_fifo());
        assert!(!Path::new("/run/f").exists());
        let e = make_device_nodes(root_fd.as_fd(), &[node("/")]).unwrap_err();
        assert!(e.contains("not a file path"), "{e}");
    }
}

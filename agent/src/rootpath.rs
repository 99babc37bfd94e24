//! Scoped path resolution inside a container's root (runc's securejoin/`MkdirAllInRoot`
//! semantics): a mount destination such as `/var/run/secrets/...` is looked up component by
//! component below the root, every symlink is read and followed *relative to the root*
//! (an absolute target restarts at the root, `..` never climbs above it), missing
//! components are created inside the root, and the result is an `O_PATH` fd of the target.
//! The caller mounts onto `/proc/self/fd/N` of that fd, so nothing can swap a component
//! between the lookup and the mount.
//!
//! Each component is opened with `openat(parent, name, O_PATH|O_NOFOLLOW)` relative to the
//! fd of its parent, so what is inspected (`fstat`, `readlinkat`) is exactly what is held.
//! Mount points are crossed as usual (a lookup after a mount sees the mounted tree).

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, OFlag};
use nix::sys::stat::{fstat, mkdirat, Mode, SFlag};

/// Symlinks followed in one resolution before giving up with ELOOP (Linux's MAXSYMLINKS).
pub const MAX_SYMLINKS: usize = 40;

/// What to create when the target (last component) does not exist. Missing intermediate
/// components are always created as directories (0755) when a target kind is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    /// A directory, 0755 (the mount point of a directory or a file system).
    Dir,
    /// An empty regular file, 0755 as runc makes it (the mount point of a file bind).
    File,
}

/// A path resolved inside a root.
#[derive(Debug)]
pub struct InRoot {
    /// `O_PATH` fd of the target.
    pub fd: OwnedFd,
    /// The resolved path relative to the root, without symlinks, `.` or `..`
    /// (empty for the root itself).
    pub rel: PathBuf,
}

impl InRoot {
    /// `/proc/self/fd/N`: a path naming exactly the held target (for mount(2)).
    pub fn proc_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    /// Whether the target is a directory.
    pub fn is_dir(&self) -> io::Result<bool> {
        let st = fstat(&self.fd).map_err(io::Error::from)?;
        Ok(SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFDIR)
    }
}

fn o_path() -> OFlag {
    OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

/// Opens `root` itself (`O_PATH|O_DIRECTORY`); the starting point of [`resolve`].
pub fn open_root(root: &Path) -> io::Result<OwnedFd> {
    nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

/// The normal components of a path: `/`, `.` and empty ones dropped, `..` kept as `..`.
fn components(p: &Path) -> Vec<OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

fn err(errno: Errno, msg: String) -> io::Error {
    io::Error::new(
        io::Error::from(errno).kind(),
        format!("{msg}: {}", errno.desc()),
    )
}

/// Resolves `path` (absolute or relative: both are taken relative to the root) inside the
/// directory `root`, following symlinks scoped to the root and clamping `..` at it. With
/// `create`, missing components are made inside the root (directories 0755, the last one
/// as asked); without it a missing component is ENOENT. A not yet existing part of the
/// path that contains `..` is refused (ENOENT), as securejoin does: what `..` would mean
/// there cannot be checked. A non-directory in the middle is ENOTDIR, more than
/// [`MAX_SYMLINKS`] symlinks ELOOP.
pub fn resolve(root: BorrowedFd<'_>, path: &Path, create: Option<Create>) -> io::Result<InRoot> {
    // Directories walked so far (fds), with their names; empty = at the root.
    let mut stack: Vec<(OwnedFd, OsString)> = Vec::new();
    // Components still to walk, in reverse (pop from the end).
    let mut todo: Vec<OsString> = components(path).into_iter().rev().collect();
    let mut links = 0usize;
    let rel = |stack: &[(OwnedFd, OsString)]| -> PathBuf { stack.iter().map(|(_, n)| n).collect() };
    while let Some(name) = todo.pop() {
        if name == ".." {
            stack.pop(); // clamped: popping at the root does nothing
            continue;
        }
        let parent = stack.last().map(|(fd, _)| fd.as_fd()).unwrap_or(root);
        let last = todo.is_empty();
        let fd = match openat(parent, name.as_os_str(), o_path(), Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => {
                let Some(kind) = create else {
                    return Err(err(Errno::ENOENT, format!("{:?}", rel(&stack).join(&name))));
                };
                if todo.iter().any(|c| c == "..") {
                    return Err(err(
                        Errno::ENOENT,
                        format!(
                            "{:?}: the part still to create contains \"..\"",
                            rel(&stack).join(&name)
                        ),
                    ));
                }
                make(parent, &name, if last { kind } else { Create::Dir })
                    .map_err(|e| err(e, format!("create {:?}", rel(&stack).join(&name))))?;
                openat(parent, name.as_os_str(), o_path(), Mode::empty())
                    .map_err(|e| err(e, format!("open {:?}", rel(&stack).join(&name))))?
            }
            Err(e) => return Err(err(e, format!("open {:?}", rel(&stack).join(&name)))),
        };
        let st = fstat(&fd).map_err(|e| err(e, format!("stat {:?}", rel(&stack).join(&name))))?;
        let fmt = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
        if fmt == SFlag::S_IFLNK {
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(err(
                    Errno::ELOOP,
                    format!("{:?}: too many symlinks", rel(&stack).join(&name)),
                ));
            }
            let target = readlinkat(&fd, "")
                .map_err(|e| err(e, format!("readlink {:?}", rel(&stack).join(&name))))?;
            let target = PathBuf::from(target);
            if target.is_absolute() {
                stack.clear();
            }
            todo.extend(components(&target).into_iter().rev());
            continue;
        }
        if last {
            let mut r = rel(&stack);
            r.push(&name);
            return Ok(InRoot { fd, rel: r });
        }
        if fmt != SFlag::S_IFDIR {
            return Err(err(
                Errno::ENOTDIR,
                format!("{:?}", rel(&stack).join(&name)),
            ));
        }
        stack.push((fd, name));
    }
    // Nothing left: the path named the root itself, or a directory reached through `..`
    // or a symlink as its last step.
    let r = rel(&stack);
    let fd = match stack.pop() {
        Some((fd, _)) => fd,
        None => root
            .try_clone_to_owned()
            .map_err(|e| io::Error::new(e.kind(), format!("dup root fd: {e}")))?,
    };
    Ok(InRoot { fd, rel: r })
}

/// mkdirat / create-exclusive of `name` in `parent`; EEXIST (a race with another creator)
/// is fine: the caller opens whatever is there without following it.
fn make(parent: BorrowedFd<'_>, name: &OsStr, kind: Create) -> Result<(), Errno> {
    let r = match kind {
        Create::Dir => mkdirat(parent, name, Mode::from_bits_truncate(0o755)),
        Create::File => openat(
            parent,
            name,
            OFlag::O_CREAT
                | OFlag::O_EXCL
                | OFlag::O_WRONLY
                | OFlag::O_NOFOLLOW
                | OFlag::O_CLOEXEC
                | OFlag::O_NOCTTY,
            Mode::from_bits_truncate(0o755),
        )
        .map(drop),
    };
    match r {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether `p` names the same file as the held `fd` (device and inode).
pub fn same_file(fd: BorrowedFd<'_>, p: &Path) -> bool {
    let (Ok(a), Ok(b)) = (fstat(fd), nix::sys::stat::stat(p)) else {
        return false;
    };
    a.st_dev == b.st_dev && a.st_ino == b.st_ino
}

/// Lossy display of a relative path as the container sees it (`/` + rel).
pub fn in_container(rel: &Path) -> String {
    let mut s = String::from("/");
    s.push_str(&String::from_utf8_lossy(rel.as_os_str().as_bytes()));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    struct Tree {
        dir: tempfile::TempDir,
        root: PathBuf,
        fd: OwnedFd,
    }

    /// `<tmp>/outside/` (must never be touched) and `<tmp>/root/` with an image-like tree.
    fn tree() -> Tree {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        for d in ["run", "etc", "var/lib", "a/b"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::create_dir_all(dir.path().join("outside")).unwrap();
        fs::write(root.join("etc/hostname"), "x").unwrap();
        symlink("/run", root.join("var/run")).unwrap(); // absolute (Debian)
        symlink("../run", root.join("var/run-rel")).unwrap(); // relative
        symlink("../../../../../../../../outside", root.join("var/lib/up")).unwrap();
        symlink("../../outside", root.join("var/up2")).unwrap();
        symlink("loop2", root.join("loop1")).unwrap();
        symlink("loop1", root.join("loop2")).unwrap();
        symlink("/etc/hostname", root.join("hn")).unwrap();
        symlink(
            "../run/systemd/resolve/stub.conf",
            root.join("etc/resolv.conf"),
        )
        .unwrap();
        let fd = open_root(&root).unwrap();
        Tree { dir, root, fd }
    }

    fn res(t: &Tree, p: &str, c: Option<Create>) -> io::Result<InRoot> {
        resolve(t.fd.as_fd(), Path::new(p), c)
    }

    fn rel(t: &Tree, p: &str, c: Option<Create>) -> String {
        res(t, p, c).unwrap().rel.to_string_lossy().into_owned()
    }

    fn nothing_outside(t: &Tree) {
        let outside = t.dir.path().join("outside");
        assert_eq!(
            fs::read_dir(&outside).unwrap().count(),
            0,
            "escaped the root"
        );
        let names: Vec<_> = fs::read_dir(t.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "created next to the root: {names:?}");
    }

    #[test]
    fn plain_and_existing_paths() {
        let t = tree();
        assert_eq!(rel(&t, "/etc/hostname", None), "etc/hostname");
        assert_eq!(rel(&t, "etc//./hostname", None), "etc/hostname");
        assert_eq!(rel(&t, "/", None), "");
        assert_eq!(rel(&t, "", None), "");
        let r = res(&t, "/etc/hostname", None).unwrap();
        assert!(same_file(r.fd.as_fd(), &t.root.join("etc/hostname")));
        let r = res(&t, "/", None).unwrap();
        assert!(same_file(r.fd.as_fd(), &t.root));
    }

    #[test]
    fn absolute_and_relative_symlinks_stay_in_the_root() {
        let t = tree();
        assert_eq!(rel(&t, "/var/run", None), "run");
        assert_eq!(rel(&t, "/var/run-rel", None), "run");
        assert_eq!(rel(&t, "/hn", None), "etc/hostname");
        // Debian's /var/run -> /run with the Kubernetes token under it.
        let r = res(
            &t,
            "/var/run/secrets/kubernetes.io/serviceaccount",
            Some(Create::Dir),
        )
        .unwrap();
        assert_eq!(r.rel, Path::new("run/secrets/kubernetes.io/serviceaccount"));
        assert!(t
            .root
            .join("run/secrets/kubernetes.io/serviceaccount")
            .is_dir());
        assert!(same_file(
            r.fd.as_fd(),
            &t.root.join("run/secrets/kubernetes.io/serviceaccount")
        ));
        // The symlink itself is untouched.
        assert_eq!(
            fs::read_link(t.root.join("var/run")).unwrap(),
            Path::new("/run")
        );
        nothing_outside(&t);
    }

    #[test]
    fn dotdot_escapes_are_clamped_at_the_root() {
        let t = tree();
        assert_eq!(rel(&t, "/../../etc", None), "etc");
        assert_eq!(
            rel(&t, "/a/b/../../../../etc/hostname", None),
            "etc/hostname"
        );
        // A symlink climbing out with ../../.. lands at the root.
        let r = res(&t, "/var/lib/up/secret", Some(Create::File)).unwrap();
        assert_eq!(r.rel, Path::new("outside/secret"));
        assert!(t.root.join("outside/secret").is_file());
        let r = res(&t, "/var/up2/d/e", Some(Create::Dir)).unwrap();
        assert_eq!(r.rel, Path::new("outside/d/e"));
        nothing_outside(&t);
    }

    #[test]
    fn missing_components_are_created_as_asked() {
        let t = tree();
        assert_eq!(
            res(&t, "/new/dir", None).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert!(!t.root.join("new").exists());
        let r = res(&t, "/new/dir/file", Some(Create::File)).unwrap();
        assert_eq!(r.rel, Path::new("new/dir/file"));
        assert!(t.root.join("new/dir").is_dir());
        assert!(t.root.join("new/dir/file").is_file());
        // Existing targets are reused, not replaced.
        fs::write(t.root.join("new/dir/file"), "keep").unwrap();
        res(&t, "/new/dir/file", Some(Create::File)).unwrap();
        assert_eq!(fs::read(t.root.join("new/dir/file")).unwrap(), b"keep");
        // A dangling symlink's target is created inside the root (Ubuntu's resolv.conf).
        let r = res(&t, "/etc/resolv.conf", Some(Create::File)).unwrap();
        assert_eq!(r.rel, Path::new("run/systemd/resolve/stub.conf"));
        assert!(t.root.join("run/systemd/resolve/stub.conf").is_file());
        nothing_outside(&t);
    }

    #[test]
    fn refusals() {
        let t = tree();
        let e = res(&t, "/loop1/x", Some(Create::Dir)).unwrap_err();
        assert!(e.to_string().contains("too many symlinks"), "{e}");
        let e = res(&t, "/loop1", None).unwrap_err();
        assert!(e.to_string().contains("too many symlinks"), "{e}");
        let e = res(&t, "/etc/hostname/x", Some(Create::Dir)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotADirectory, "{e}");
        let e = res(&t, "/missing/../etc", Some(Create::Dir)).unwrap_err();
        assert!(e.to_string().contains("\"..\""), "{e}");
        assert!(!t.root.join("missing").exists());
        nothing_outside(&t);
    }

    #[test]
    fn components_of_paths() {
        assert_eq!(
            components(Path::new("/a/./b/../c//")),
            vec![OsString::from("a"), "b".into(), "..".into(), "c".into()]
        );
        assert_eq!(in_container(Path::new("run/x")), "/run/x");
    }
}

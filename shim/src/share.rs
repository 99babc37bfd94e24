//! The sandbox's share: the one host directory the guest sees, through virtio-fs.
//!
//! Layout under `<state_dir>/<sandbox-id>/share/` (the way Kata lays out its
//! `shared/sandboxes/<id>/{mounts,shared}`):
//!
//! - `mounts/` is a bind mount of itself, made a shared mount of its own peer group. The shim
//!   mounts every container's root file system at `mounts/<id>/rootfs` and every bind-mount
//!   source at `mounts/<id>/mounts/<n>`, by bind mount: nothing is copied.
//! - `shared/` is a recursive bind of `mounts/`, read-only and a *slave* of it: everything the
//!   shim mounts under `mounts/` later appears under `shared/` (and in virtiofsd's own mount
//!   namespace, which copies `shared/` as a slave too), while the guest cannot create or
//!   rename anything at the top of the share. virtiofsd exports `shared/`.
//!
//! A read-only bind (option `ro`) is read-only on the host, recursively (`mount_setattr`),
//! not only in the guest. Every copy of a host mount in the share is a slave of it (or
//! private, for a bind with `rprivate`), never its peer: host mounts made later under a
//! source reach the guest as the spec's propagation says ([`Propagation`]), and nothing
//! mounted or unmounted in the share reaches the host. Nothing under the share is ever deleted while something is mounted
//! under it: removal unmounts first and then removes only the directories and placeholder
//! files this module made, one by one.

use std::{
    os::fd::{AsFd, AsRawFd},
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

use nix::mount::{mount, MsFlags};
use tracing::debug;

/// One host bind mount of a container, to appear in the share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedBind {
    /// Index of the mount in the OCI spec; the source appears at `mounts/<id>/mounts/<index>`.
    pub index: usize,
    /// The host source as the spec names it (absolute; for messages and the mount).
    pub source: PathBuf,
    /// The mount's destination in the container (for messages).
    pub destination: String,
    /// Whether the spec mounts it read-only (`ro`): enforced on the host too.
    pub readonly: bool,
    /// Whether mounts made on the host under the source later reach the container.
    pub propagation: Propagation,
}

/// How a mount made on the host under a bind's source after the container started reaches
/// the container (docs/mount-propagation.md). The share's copy of the source decides it:
/// virtiofsd serves what its mount namespace holds, and the guest mounts every host mount
/// it meets as a virtio-fs submount (`--announce-submounts`), so a host mount that reaches
/// virtiofsd is what the container sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Propagation {
    /// OCI `private`/`rprivate` (CRI PROPAGATION_PRIVATE): the share's copy is private,
    /// later host mounts never reach the guest (those there at create time do).
    Private,
    /// OCI `slave`/`rslave` (CRI HOST_TO_CONTAINER), `shared`/`rshared` (BIDIRECTIONAL,
    /// host to container only under kata-rs), or no option (runc's default root propagation
    /// is `rslave`): the share's copy is a slave of the source's peer group, later host
    /// mounts reach the guest and nothing flows back to the host.
    #[default]
    Slave,
}

impl Propagation {
    /// The MS_* propagation flag the share's copy gets.
    fn flag(self) -> u64 {
        match self {
            Propagation::Private => libc::MS_PRIVATE,
            Propagation::Slave => libc::MS_SLAVE,
        }
    }
}

impl SharedBind {
    /// How errors name this mount.
    pub fn label(&self) -> String {
        format!(
            "bind mount {} (host source {})",
            self.destination,
            self.source.display()
        )
    }
}

/// The share of one sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    root: PathBuf,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const OPEN_TREE_CLONE: libc::c_uint = 0x1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Sets the attributes of every mount in the tree of `fd` (an attached mount or a detached
/// `open_tree` clone): `attr_set` (MOUNT_ATTR_*) and, when not 0, the propagation
/// `propagation` (one MS_* propagation flag).
fn set_tree_attr(
    fd: &std::os::fd::OwnedFd,
    attr_set: u64,
    propagation: u64,
    what: &Path,
) -> Result<(), String> {
    let attr = MountAttr {
        attr_set,
        attr_clr: 0,
        propagation,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr reads `attr` (a valid, initialised struct of the size passed)
    // and the empty path string; `fd` is an open fd that outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint | AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        let how = match (attr_set & MOUNT_ATTR_RDONLY != 0, propagation) {
            (true, 0) => "make read-only",
            (false, _) => "set the propagation of",
            (true, _) => "make read-only and set the propagation of",
        };
        Err(format!(
            "{how} {}: {}",
            what.display(),
            std::io::Error::last_os_error()
        ))
    }
}

/// Attaches a recursive bind of `source` at `target`: the tree is cloned detached
/// (`open_tree`), made read-only there when `readonly` (so every propagated copy, the one
/// virtiofsd serves included, is born read-only: a remount after attaching would change
/// only this namespace's copy) and given `propagation` (a clone of a shared source would
/// otherwise be its peer: a mount under it would flow back to the host, and unmounting the
/// share would unmount the host's own mounts under the source), then moved into place
/// (`move_mount`).
fn attach_bind(
    source: &std::fs::File,
    target: &Path,
    readonly: bool,
    propagation: Propagation,
) -> Result<(), String> {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: open_tree reads the empty path string; `source` is an open fd for the call.
    let tree = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            source.as_raw_fd(),
            c"".as_ptr(),
            OPEN_TREE_CLONE
                | libc::O_CLOEXEC as libc::c_uint
                | AT_RECURSIVE
                | libc::AT_EMPTY_PATH as libc::c_uint,
        )
    };
    if tree < 0 {
        return Err(format!(
            "clone the mount for {}: {}",
            target.display(),
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: open_tree returned a new fd that nothing else owns.
    let tree = unsafe { OwnedFd::from_raw_fd(tree as libc::c_int) };
    let ro = if readonly { MOUNT_ATTR_RDONLY } else { 0 };
    set_tree_attr(&tree, ro, propagation.flag(), target)?;
    let t = std::ffi::CString::new(target.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("{}: NUL in path", target.display()))?;
    // SAFETY: move_mount reads the two path strings, both valid NUL-terminated strings that
    // outlive the call; `tree` is the detached mount's open fd.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(format!(
            "bind mount on {}: {}",
            target.display(),
            std::io::Error::last_os_error()
        ))
    }
}

/// The per-mount flags (nosuid, nodev, noexec, noatime...) a bind remount must keep.
fn statvfs_flags(path: &Path) -> MsFlags {
    use nix::sys::statvfs::{statvfs, FsFlags};
    let Ok(s) = statvfs(path) else {
        return MsFlags::empty();
    };
    let f = s.flags();
    let mut m = MsFlags::empty();
    for (fs, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(fs) {
            m |= ms;
        }
    }
    m
}

/// Opens `path` with O_PATH (following symlinks, as mount(2) does for a bind source).
fn open_path(path: &Path, extra: libc::c_int) -> Result<std::fs::File, String> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC | extra)
        .open(path)
        .map_err(|e| format!("open {}: {e}", path.display()))
}

/// Bind-mounts `source` (recursively) on `target` with mount(2), through an O_PATH fd of
/// the source so that what is checked is what is mounted. For the share's own two mounts.
fn bind(source: &std::fs::File, target: &Path) -> Result<(), String> {
    let src = format!("/proc/self/fd/{}", source.as_raw_fd());
    mount(
        Some(src.as_str()),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("bind mount on {}: {e}", target.display()))
}

fn set_propagation(target: &Path, flags: MsFlags) -> Result<(), String> {
    mount(None::<&str>, target, None::<&str>, flags, None::<&str>)
        .map_err(|e| format!("set propagation of {}: {e}", target.display()))
}

/// Unmounts everything at and below `path` (lazily if busy). Returns how many mount
/// points are still there afterwards (0 = clean).
pub fn unmount_all_under(path: &Path) -> usize {
    let p = path.to_string_lossy().to_string();
    if let Err(e) = containerd_shim::mount::umount_recursive(Some(&p), 0) {
        debug!("unmount under {p}: {e}; detaching");
        let _ = containerd_shim::mount::umount_recursive(Some(&p), libc::MNT_DETACH);
    }
    mounts_under(path).len()
}

/// Mount points at or below `path`, from /proc/self/mountinfo.
pub fn mounts_under(path: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mountinfo(m)))
        .filter(|m| m.starts_with(path))
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Share {
    /// The share of the sandbox whose state directory is `state_dir` (nothing is made).
    pub fn at(state_dir: &Path) -> Self {
        Self {
            root: state_dir.join("share"),
        }
    }

    /// `share/mounts`: where the shim mounts.
    fn mounts(&self) -> PathBuf {
        self.root.join("mounts")
    }

    /// `share/shared`: what virtiofsd exports (read-only at the top, slave of `mounts`).
    pub fn exported(&self) -> PathBuf {
        self.root.join("shared")
    }

    /// Makes the share's two mounts. On failure nothing is left mounted.
    pub fn create(state_dir: &Path) -> Result<Self, String> {
        let s = Self::at(state_dir);
        let r = s.create_mounts();
        if r.is_err() {
            let _ = s.destroy();
        }
        r.map(|()| s)
    }

    fn create_mounts(&self) -> Result<(), String> {
        let (mounts, shared) = (self.mounts(), self.exported());
        for d in [&mounts, &shared] {
            std::fs::create_dir_all(d).map_err(|e| format!("create {}: {e}", d.display()))?;
        }
        let me = open_path(&mounts, libc::O_DIRECTORY)?;
        bind(&me, &mounts)?;
        // Its own peer group, not the parent's (e.g. a shared /run): what is mounted here
        // propagates to `shared` and virtiofsd, and nowhere else.
        set_propagation(&mounts, MsFlags::MS_PRIVATE)?;
        set_propagation(&mounts, MsFlags::MS_SHARED)?;
        let m = open_path(&mounts, libc::O_DIRECTORY)?;
        bind(&m, &shared)?;
        set_propagation(&shared, MsFlags::MS_SLAVE)?;
        mount(
            None::<&str>,
            &shared,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | statvfs_flags(&shared),
            None::<&str>,
        )
        .map_err(|e| format!("remount {} read-only: {e}", shared.display()))
    }

    /// Mounts container `id`'s root file system (`rootfs`, a host directory) and its bind
    /// sources into the share. On failure, what this call mounted is undone.
    pub fn add_container(
        &self,
        id: &str,
        rootfs: &Path,
        binds: &[SharedBind],
    ) -> Result<(), String> {
        let dir = self
            .mounts()
            .join(kata_rs_protocol::guest::container_rel(id));
        if std::fs::symlink_metadata(&dir).is_ok() {
            // Another container's (or a leftover's): neither used nor undone.
            return Err(format!("{} exists already", dir.display()));
        }
        let r = self.add_mounts(id, rootfs, binds);
        if r.is_err() {
            let _ = self.remove_container(id);
        }
        r
    }

    fn add_mounts(&self, id: &str, rootfs: &Path, binds: &[SharedBind]) -> Result<(), String> {
        use kata_rs_protocol::guest;
        let m = self.mounts();
        let root_t = m.join(guest::rootfs_rel(id));
        std::fs::create_dir_all(&root_t)
            .map_err(|e| format!("create {}: {e}", root_t.display()))?;
        let src =
            open_path(rootfs, libc::O_DIRECTORY).map_err(|e| format!("root file system: {e}"))?;
        attach_bind(&src, &root_t, false, Propagation::Slave)
            .map_err(|e| format!("root file system: {e}"))?;
        if !binds.is_empty() {
            let d = m.join(guest::mounts_rel(id));
            std::fs::create_dir(&d).map_err(|e| format!("create {}: {e}", d.display()))?;
        }
        for b in binds {
            let t = m.join(guest::mount_rel(id, b.index));
            let label = b.label();
            let src = open_path(&b.source, 0).map_err(|e| format!("{label}: {e}"))?;
            let md = src.metadata().map_err(|e| format!("{label}: {e}"))?;
            let made = if md.is_dir() {
                std::fs::create_dir(&t)
            } else {
                std::fs::File::create(&t).map(drop)
            };
            made.map_err(|e| format!("{label}: create {}: {e}", t.display()))?;
            attach_bind(&src, &t, b.readonly, b.propagation)
                .map_err(|e| format!("{label}: {e}"))?;
        }
        Ok(())
    }

    /// Unmounts container `id`'s mounts from the share and removes its directories. Fails,
    /// removing nothing, if something stays mounted.
    pub fn remove_container(&self, id: &str) -> Result<(), String> {
        use kata_rs_protocol::guest;
        let rel = guest::container_rel(id);
        let (dir, view) = (self.mounts().join(&rel), self.exported().join(&rel));
        // The view first: propagation normally removes it with the source already.
        let left = unmount_all_under(&view) + unmount_all_under(&dir);
        if left > 0 {
            return Err(format!(
                "{} mount(s) under {} could not be unmounted; left in place",
                left,
                dir.display()
            ));
        }
        remove_skeleton(&dir)
    }

    /// Unmounts everything in the share and removes it. Fails, removing nothing, if
    /// something stays mounted.
    pub fn destroy(&self) -> Result<(), String> {
        if !self.root.exists() {
            return Ok(());
        }
        let left = unmount_all_under(&self.exported()) + unmount_all_under(&self.mounts());
        if left > 0 {
            return Err(format!(
                "{left} mount(s) under {} could not be unmounted; left in place",
                self.root.display()
            ));
        }
        remove_skeleton(&self.root)
    }
}

/// Removes a tree of directories and empty placeholder files made by this module, without
/// following symlinks and without removing anything else (a non-empty regular file, a
/// device, ... is an error and stays). Every step is relative to the directory already
/// opened (`openat` with `O_NOFOLLOW|O_DIRECTORY`, `fstatat` without following, `unlinkat`),
/// each opened directory is checked to be the one that was looked at (device and inode), and
/// the walk never crosses into another file system (a mount that is still there): nothing
/// can redirect it outside the tree by swapping a component for a symlink.
fn remove_skeleton(dir: &Path) -> Result<(), String> {
    use nix::fcntl::open;
    use nix::sys::stat::Mode;
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return Err(format!("{}: not a removable directory", dir.display()));
    };
    let pfd = match open(parent, dir_flags(), Mode::empty()) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(format!("{}: {e}", parent.display())),
    };
    let dev = nix::sys::stat::fstat(&pfd)
        .map_err(|e| format!("{}: {e}", parent.display()))?
        .st_dev;
    remove_in(pfd.as_fd(), name, dev, dir)
}

/// Flags of every directory the skeleton removal opens.
fn dir_flags() -> nix::fcntl::OFlag {
    use nix::fcntl::OFlag;
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC
}

/// [`remove_skeleton`] of entry `name` of the open directory `parent` (`shown` is its path,
/// for messages); `dev` is the file system the tree must stay on.
fn remove_in(
    parent: std::os::fd::BorrowedFd<'_>,
    name: &std::ffi::OsStr,
    dev: u64,
    shown: &Path,
) -> Result<(), String> {
    use nix::errno::Errno;
    use nix::fcntl::{openat, AtFlags};
    use nix::sys::stat::{fstat, fstatat, Mode, SFlag};
    use nix::unistd::{unlinkat, UnlinkatFlags};
    let err = |e: Errno| format!("{}: {e}", shown.display());
    let st = match fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(err(e)),
    };
    let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    if kind == SFlag::S_IFREG && st.st_size == 0 {
        return unlinkat(parent, name, UnlinkatFlags::NoRemoveDir)
            .map_err(|e| format!("remove {}: {e}", shown.display()));
    }
    if kind != SFlag::S_IFDIR {
        return Err(format!(
            "{} is not a placeholder of the share; left in place",
            shown.display()
        ));
    }
    if st.st_dev != dev {
        return Err(format!(
            "{} is another file system (a mount left there); left in place",
            shown.display()
        ));
    }
    let fd = openat(parent, name, dir_flags(), Mode::empty()).map_err(err)?;
    let opened = fstat(&fd).map_err(err)?;
    if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino) {
        return Err(format!(
            "{} changed while it was being removed; left in place",
            shown.display()
        ));
    }
    let mut entries = Vec::new();
    let mut d = nix::dir::Dir::from_fd(fd).map_err(err)?;
    for e in d.iter() {
        let e = e.map_err(err)?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            entries.push(std::ffi::OsStr::from_bytes(n).to_os_string());
        }
    }
    for n in &entries {
        remove_in(d.as_fd(), n, dev, &shown.join(n))?;
    }
    drop(d);
    unlinkat(parent, name, UnlinkatFlags::RemoveDir)
        .map_err(|e| format!("remove {}: {e}", shown.display()))
}

#[cfg(test)]
mod tests;

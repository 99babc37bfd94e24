//! AddStorage: a pod container's root file system, brought in after boot on a spare
//! virtio-blk disk as a newc cpio archive, unpacked into the guest's RAM.
//!
//! The VM of a pod boots with spare disks (kata-vmm `--disk`, read-only); for a container
//! created later the shim writes the container's rootfs cpio (the same archive it appends
//! to the initramfs for the first container) into the next spare disk file, and this module
//! finds the disk by its virtio serial, drops whatever the guest cached of it (the kernel
//! read its first blocks when it probed the disk at boot), and unpacks the archive into
//! `/run/kata-rs/containers/<id>/rootfs`. Once unpacked the disk is not used any more, so
//! the shim can reuse it for the next container.
//!
//! The archive comes from the host, but it is parsed as carefully as untrusted input:
//! every entry must lie under `run/kata-rs/containers/<id>/rootfs`, names have only normal
//! components, an entry's parent must be a directory this unpack created (so a symlink in
//! the archive can never redirect a later entry outside the root), nothing that exists is
//! overwritten, and sizes are bounded by the data the shim announced.

use std::{
    collections::HashSet,
    ffi::CString,
    fs,
    io::{self, Read},
    os::unix::{
        ffi::OsStrExt,
        fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    },
    path::{Component, Path, PathBuf},
};

use crate::error::{AgentError, Result};

/// The only format AddStorage knows.
pub const FORMAT_NEWC_CPIO: &str = "newc-cpio";
/// Longest entry name (PATH_MAX with the NUL, as the kernel's initramfs unpacker).
const MAX_NAME: usize = 4096;
/// Most entries one archive may have.
const MAX_ENTRIES: u64 = 1_000_000;
/// Longest virtio-blk serial (VIRTIO_BLK_ID_BYTES).
const MAX_SERIAL: usize = 20;

const S_IFMT: u32 = 0o170000;
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;
const S_IFBLK: u32 = 0o060000;
const S_IFIFO: u32 = 0o010000;
const S_IFSOCK: u32 = 0o140000;

/// Guest directory of a container's rootfs.
pub fn rootfs_dir(id: &str) -> PathBuf {
    container_dir(id).join("rootfs")
}

/// Guest directory of everything the shim sends for a container: `rootfs` and `mounts`
/// (the copies of its host bind-mount sources).
pub fn container_dir(id: &str) -> PathBuf {
    PathBuf::from(format!("/run/kata-rs/containers/{id}"))
}

/// The only names an AddStorage archive may have directly below the container directory.
pub const CONTAINER_ENTRIES: &[&str] = &["rootfs", "mounts"];

/// Checks a disk serial: 1..=20 characters, letters, digits, `-` and `_`.
pub fn validate_serial(serial: &str) -> Result<()> {
    let ok = !serial.is_empty()
        && serial.len() <= MAX_SERIAL
        && serial
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(AgentError::invalid(format!(
            "invalid disk serial {serial:?}: 1..={MAX_SERIAL} letters, digits, '-' or '_'"
        )))
    }
}

/// The block device (`/dev/<name>`) whose virtio serial is `serial`, and its size in
/// bytes, found under `sys_block` (`/sys/block`).
pub fn find_disk(sys_block: &Path, serial: &str) -> Result<(PathBuf, u64)> {
    let rd = fs::read_dir(sys_block)
        .map_err(|e| AgentError::internal(format!("read {}: {e}", sys_block.display())))?;
    for e in rd.flatten() {
        let dir = e.path();
        let mut buf = Vec::new();
        let Ok(f) = fs::File::open(dir.join("serial")) else {
            continue;
        };
        if f.take(64).read_to_end(&mut buf).is_err() {
            continue;
        }
        if buf.trim_ascii() != serial.as_bytes() {
            continue;
        }
        let sectors: u64 = fs::read_to_string(dir.join("size"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| {
                AgentError::internal(format!("disk {serial}: cannot read {}/size", dir.display()))
            })?;
        return Ok((
            Path::new("/dev").join(e.file_name()),
            sectors.saturating_mul(512),
        ));
    }
    Err(AgentError::not_found(format!(
        "no disk with serial {serial:?} in the guest (was the VM booted with the pod's spare disks?)"
    )))
}

/// Opens the disk read-only and drops the guest's cached blocks of it (BLKFLSBUF), so the
/// reads see what the host wrote into the file after boot.
fn open_uncached(dev: &Path) -> Result<fs::File> {
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(dev)
        .map_err(|e| AgentError::internal(format!("open {}: {e}", dev.display())))?;
    // BLKFLSBUF = _IO(0x12, 97).
    const BLKFLSBUF: libc::c_ulong = 0x1261;
    // SAFETY: BLKFLSBUF takes no argument and only acts on the device behind the fd we own.
    let r = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&f), BLKFLSBUF as _, 0) };
    if r != 0 {
        return Err(AgentError::internal(format!(
            "drop the cached blocks of {} (BLKFLSBUF): {}",
            dev.display(),
            io::Error::last_os_error()
        )));
    }
    Ok(f)
}

/// AddStorage for one container: finds the disk, unpacks `size` bytes of cpio into
/// `dir` = [`container_dir`] (which must not exist yet; its parents are created): the
/// container's `rootfs` and its copied bind-mount sources `mounts`, nothing else. On
/// failure `dir` is removed again. Returns the number of entries.
pub fn add_rootfs_from_disk(
    sys_block: &Path,
    id: &str,
    serial: &str,
    format: &str,
    size: u64,
    dir: &Path,
) -> Result<u64> {
    validate_serial(serial)?;
    if format != FORMAT_NEWC_CPIO {
        return Err(AgentError::invalid(format!(
            "container {id}: storage format {format:?} is not supported (only {FORMAT_NEWC_CPIO:?})"
        )));
    }
    let (dev, capacity) = find_disk(sys_block, serial)?;
    if size == 0 || size > capacity {
        return Err(AgentError::invalid(format!(
            "container {id}: {size} bytes of data announced on disk {serial} ({}), which holds {capacity}",
            dev.display()
        )));
    }
    let f = open_uncached(&dev)?;
    let prefix = format!("run/kata-rs/containers/{id}");
    unpack_limited(
        io::BufReader::with_capacity(256 * 1024, f.take(size)),
        &prefix,
        dir,
        CONTAINER_ENTRIES,
    )
    .map_err(|e| {
        AgentError::new(
            e.code,
            format!(
                "container {id}: unpack the rootfs from disk {serial} ({}): {}",
                dev.display(),
                e.message
            ),
        )
    })
}

/// Unpacks a newc archive read from `r` into `root` (created here; must not exist). Only
/// entries named `prefix` (the root itself), a parent directory of `prefix` (skipped), or
/// `prefix/...` are accepted. On error `root` is removed.
pub fn unpack(r: impl Read, prefix: &str, root: &Path) -> Result<u64> {
    unpack_limited(r, prefix, root, &[])
}

/// [`unpack`], with the names directly below the root limited to `tops` (any when empty).
pub fn unpack_limited(r: impl Read, prefix: &str, root: &Path, tops: &[&str]) -> Result<u64> {
    if let Some(parent) = root.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(|e| AgentError::internal(format!("create {}: {e}", parent.display())))?;
    }
    fs::DirBuilder::new()
        .mode(0o755)
        .create(root)
        .map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                AgentError::already_exists(format!("{} already exists", root.display()))
            } else {
                AgentError::internal(format!("create {}: {e}", root.display()))
            }
        })?;
    let mut unpacker = Unpacker::new(root);
    unpacker.tops = tops;
    let res = unpacker.run(r, prefix);
    if res.is_err() {
        if let Err(e) = fs::remove_dir_all(root) {
            tracing::warn!("remove {} after a failed unpack: {e}", root.display());
        }
    }
    res
}

struct Header {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: u32,
    filesize: u32,
    rdevmajor: u32,
    rdevminor: u32,
    namesize: u32,
}

fn bad(msg: impl Into<String>) -> AgentError {
    AgentError::invalid(format!("bad cpio archive: {}", msg.into()))
}

fn read_exact(r: &mut impl Read, buf: &mut [u8], what: &str) -> Result<()> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            bad(format!("truncated in {what}"))
        } else {
            AgentError::internal(format!("read the archive: {e}"))
        }
    })
}

fn skip(r: &mut impl Read, n: u64, what: &str) -> Result<()> {
    let got = io::copy(&mut r.take(n), &mut io::sink())
        .map_err(|e| AgentError::internal(format!("read the archive: {e}")))?;
    if got != n {
        return Err(bad(format!("truncated in {what}")));
    }
    Ok(())
}

fn pad4(n: u64) -> u64 {
    (4 - n % 4) % 4
}

fn parse_header(h: &[u8; 110]) -> Result<Header> {
    if &h[..6] != b"070701" && &h[..6] != b"070702" {
        return Err(bad(format!(
            "bad magic {:?} (no archive on the disk?)",
            String::from_utf8_lossy(&h[..6])
        )));
    }
    let field = |i: usize| -> Result<u32> {
        let s = &h[6 + i * 8..6 + (i + 1) * 8];
        std::str::from_utf8(s)
            .ok()
            .and_then(|s| u32::from_str_radix(s, 16).ok())
            .ok_or_else(|| bad("header field is not hexadecimal"))
    };
    Ok(Header {
        mode: field(1)?,
        uid: field(2)?,
        gid: field(3)?,
        mtime: field(5)?,
        filesize: field(6)?,
        rdevmajor: field(9)?,
        rdevminor: field(10)?,
        namesize: field(11)?,
    })
}

/// Where an archive entry goes, relative to the root: `None` to skip it (a parent of the
/// prefix), `Some("")` for the root itself.
pub fn relative_name(name: &str, prefix: &str) -> Result<Option<PathBuf>> {
    let name = name.trim_start_matches("./");
    if name == prefix {
        return Ok(Some(PathBuf::new()));
    }
    if prefix.starts_with(name) && prefix.as_bytes().get(name.len()) == Some(&b'/') {
        return Ok(None);
    }
    let rest = name
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('/'))
        .ok_or_else(|| bad(format!("entry {name:?} is outside {prefix}")))?;
    let p = Path::new(rest);
    if rest.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(bad(format!(
            "entry name {name:?} is not a clean relative path"
        )));
    }
    Ok(Some(p.to_path_buf()))
}

struct Unpacker<'a> {
    root: &'a Path,
    /// Directories created by this unpack (relative); parents must be among them.
    dirs: HashSet<PathBuf>,
    /// Directory mtimes, set at the end (creating entries changes them).
    dir_times: Vec<(PathBuf, u32)>,
    /// Names allowed directly below the root (any when empty).
    tops: &'a [&'a str],
}

impl<'a> Unpacker<'a> {
    fn new(root: &'a Path) -> Self {
        let mut dirs = HashSet::new();
        dirs.insert(PathBuf::new());
        Self {
            root,
            dirs,
            dir_times: Vec::new(),
            tops: &[],
        }
    }

    fn run(mut self, r: impl Read, prefix: &str) -> Result<u64> {
        let n = self.entries(r, prefix)?;
        for (rel, mtime) in self.dir_times.iter().rev() {
            set_mtime(&self.root.join(rel), *mtime)?;
        }
        Ok(n)
    }

    fn entries(&mut self, mut r: impl Read, prefix: &str) -> Result<u64> {
        let mut count = 0u64;
        loop {
            let mut hb = [0u8; 110];
            read_exact(&mut r, &mut hb, "a header")?;
            let h = parse_header(&hb)?;
            let namesize = h.namesize as usize;
            if namesize == 0 || namesize > MAX_NAME {
                return Err(bad(format!("name size {namesize}")));
            }
            let mut name = vec![0u8; namesize];
            read_exact(&mut r, &mut name, "a name")?;
            if name.pop() != Some(0) || name.contains(&0) {
                return Err(bad("entry name is not NUL-terminated"));
            }
            skip(&mut r, pad4(110 + namesize as u64), "padding")?;
            let name = String::from_utf8(name).map_err(|_| bad("entry name is not UTF-8"))?;
            let size = u64::from(h.filesize);
            if name == "TRAILER!!!" {
                return Ok(count);
            }
            count += 1;
            if count > MAX_ENTRIES {
                return Err(bad(format!("more than {MAX_ENTRIES} entries")));
            }
            match relative_name(&name, prefix)? {
                None => skip(&mut r, size, "data")?,
                Some(rel) => {
                    if let Some(top) = rel.components().next() {
                        if !self.tops.is_empty() && !self.tops.iter().any(|t| top.as_os_str() == *t)
                        {
                            return Err(bad(format!(
                                "entry {name:?} is not under {prefix}/{{{}}}",
                                self.tops.join(",")
                            )));
                        }
                    }
                    self.entry(&mut r, &rel, &h, &name)?
                }
            }
            skip(&mut r, pad4(size), "padding")?;
        }
    }

    fn entry(&mut self, r: &mut impl Read, rel: &Path, h: &Header, name: &str) -> Result<()> {
        let parent = rel.parent().unwrap_or(Path::new(""));
        if !rel.as_os_str().is_empty() && !self.dirs.contains(parent) {
            return Err(bad(format!(
                "entry {name:?} comes before its directory (or its parent is not a directory)"
            )));
        }
        let path = self.root.join(rel);
        let io_err = |what: &str| {
            let p = path.display().to_string();
            let what = what.to_string();
            let name = name.to_string();
            move |e: io::Error| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    bad(format!("entry {name:?} is in the archive twice"))
                } else {
                    AgentError::internal(format!("{what} {p}: {e}"))
                }
            }
        };
        let perm = h.mode & 0o7777;
        let size = u64::from(h.filesize);
        match h.mode & S_IFMT {
            S_IFDIR => {
                if size != 0 {
                    return Err(bad(format!("directory {name:?} has data")));
                }
                if !rel.as_os_str().is_empty() {
                    fs::DirBuilder::new()
                        .mode(0o700)
                        .create(&path)
                        .map_err(io_err("create directory"))?;
                    self.dirs.insert(rel.to_path_buf());
                }
                own(&path, h)?;
                fs::set_permissions(&path, fs::Permissions::from_mode(perm))
                    .map_err(io_err("chmod"))?;
                self.dir_times.push((rel.to_path_buf(), h.mtime));
                return Ok(());
            }
            _ if rel.as_os_str().is_empty() => {
                return Err(bad(format!("the root {name:?} is not a directory")));
            }
            S_IFREG => {
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                    .open(&path)
                    .map_err(io_err("create"))?;
                let n = io::copy(&mut r.take(size), &mut f).map_err(io_err("write"))?;
                if n != size {
                    return Err(bad(format!("truncated in the data of {name:?}")));
                }
                drop(f);
                own(&path, h)?;
                fs::set_permissions(&path, fs::Permissions::from_mode(perm))
                    .map_err(io_err("chmod"))?;
            }
            S_IFLNK => {
                if size == 0 || size > MAX_NAME as u64 {
                    return Err(bad(format!("symlink {name:?} target size {size}")));
                }
                let mut target = vec![0u8; size as usize];
                read_exact(r, &mut target, "a symlink target")?;
                if target.contains(&0) {
                    return Err(bad(format!("symlink {name:?} target has a NUL byte")));
                }
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&target), &path)
                    .map_err(io_err("create symlink"))?;
                own(&path, h)?;
                return set_mtime(&path, h.mtime);
            }
            t @ (S_IFCHR | S_IFBLK | S_IFIFO | S_IFSOCK) => {
                if size != 0 {
                    return Err(bad(format!("special file {name:?} has data")));
                }
                let c = cpath(&path)?;
                let dev = libc::makedev(h.rdevmajor, h.rdevminor);
                // SAFETY: mknod with a valid NUL-terminated path; creates a new node and
                // fails if anything exists there.
                if unsafe { libc::mknod(c.as_ptr(), t | 0o600, dev) } != 0 {
                    return Err(io_err("mknod")(io::Error::last_os_error()));
                }
                own(&path, h)?;
                fs::set_permissions(&path, fs::Permissions::from_mode(perm))
                    .map_err(io_err("chmod"))?;
            }
            t => return Err(bad(format!("entry {name:?} has unknown file type {t:o}"))),
        }
        set_mtime(&path, h.mtime)
    }
}

fn cpath(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| AgentError::invalid(format!("{} has a NUL byte", p.display())))
}

/// lchown to the entry's owner (chown clears set-id bits: the mode is set afterwards).
/// Without CAP_CHOWN (tests as a normal user) an owner equal to ours is all that works.
fn own(path: &Path, h: &Header) -> Result<()> {
    std::os::unix::fs::lchown(path, Some(h.uid), Some(h.gid))
        .map_err(|e| AgentError::internal(format!("chown {}: {e}", path.display())))
}

fn set_mtime(path: &Path, mtime: u32) -> Result<()> {
    let c = cpath(path)?;
    let t = libc::timespec {
        tv_sec: mtime.into(),
        tv_nsec: 0,
    };
    let times = [t, t];
    // SAFETY: valid NUL-terminated path and a two-element timespec array; AT_SYMLINK_NOFOLLOW
    // sets a symlink's own time.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r != 0 {
        return Err(AgentError::internal(format!(
            "set the time of {}: {}",
            path.display(),
            io::Error::last_os_error()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny newc writer (the shim has the real one; the agent must not depend on it).
    struct W {
        out: Vec<u8>,
        ino: u32,
        uid: u32,
        gid: u32,
    }

    impl W {
        fn new() -> Self {
            // SAFETY: getuid/getgid cannot fail.
            let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
            W {
                out: Vec::new(),
                ino: 1,
                uid,
                gid,
            }
        }
        fn entry(&mut self, name: &str, mode: u32, data: &[u8]) -> &mut Self {
            self.ino += 1;
            let fields = [
                self.ino,
                mode,
                self.uid,
                self.gid,
                1,
                1_600_000_000,
                data.len() as u32,
                0,
                0,
                0,
                0,
                name.len() as u32 + 1,
                0,
            ];
            self.out.extend_from_slice(b"070701");
            for f in fields {
                self.out.extend_from_slice(format!("{f:08x}").as_bytes());
            }
            self.out.extend_from_slice(name.as_bytes());
            self.out.push(0);
            while !self.out.len().is_multiple_of(4) {
                self.out.push(0);
            }
            self.out.extend_from_slice(data);
            while !self.out.len().is_multiple_of(4) {
                self.out.push(0);
            }
            self
        }
        fn finish(&mut self) -> Vec<u8> {
            self.entry("TRAILER!!!", 0, b"");
            std::mem::take(&mut self.out)
        }
    }

    const P: &str = "run/kata-rs/containers/c1/rootfs";

    fn base() -> W {
        let mut w = W::new();
        w.entry("run", S_IFDIR | 0o755, b"")
            .entry("run/kata-rs", S_IFDIR | 0o755, b"")
            .entry("run/kata-rs/containers", S_IFDIR | 0o755, b"")
            .entry("run/kata-rs/containers/c1", S_IFDIR | 0o755, b"")
            .entry(P, S_IFDIR | 0o755, b"");
        w
    }

    #[test]
    fn unpacks_files_dirs_symlinks_fifos() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("c1/rootfs");
        let mut w = base();
        w.entry(&format!("{P}/bin"), S_IFDIR | 0o755, b"")
            .entry(
                &format!("{P}/bin/tool"),
                S_IFREG | 0o4755,
                b"#!/bin/sh\necho hi\n",
            )
            .entry(&format!("{P}/bin/sh"), S_IFLNK | 0o777, b"tool")
            .entry(&format!("{P}/fifo"), S_IFIFO | 0o640, b"")
            .entry(&format!("{P}/empty"), S_IFREG | 0o600, b"");
        let ar = w.finish();
        let n = unpack(&ar[..], P, &root).unwrap();
        assert_eq!(n, 10);
        assert_eq!(
            fs::read(root.join("bin/tool")).unwrap(),
            b"#!/bin/sh\necho hi\n"
        );
        let md = fs::metadata(root.join("bin/tool")).unwrap();
        assert_eq!(md.permissions().mode() & 0o7777, 0o4755);
        assert_eq!(
            fs::read_link(root.join("bin/sh")).unwrap(),
            Path::new("tool")
        );
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let fifo = fs::symlink_metadata(root.join("fifo")).unwrap();
        assert!(fifo.file_type().is_fifo());
        assert_eq!(fifo.permissions().mode() & 0o777, 0o640);
        assert_eq!(fs::metadata(root.join("empty")).unwrap().len(), 0);
        assert_eq!(
            fs::metadata(root.join("bin")).unwrap().mtime(),
            1_600_000_000
        );
    }

    #[test]
    fn refuses_escapes_and_leaves_nothing() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("outside", {
                let mut w = base();
                w.entry("etc/passwd", S_IFREG | 0o644, b"x").finish()
            }),
            ("dotdot", {
                let mut w = base();
                w.entry(&format!("{P}/../../x"), S_IFREG | 0o644, b"x")
                    .finish()
            }),
            ("other container", {
                let mut w = base();
                w.entry("run/kata-rs/containers/c2/rootfs/x", S_IFREG | 0o644, b"x")
                    .finish()
            }),
            ("through a symlink", {
                let mut w = base();
                w.entry(&format!("{P}/l"), S_IFLNK | 0o777, b"/")
                    .entry(&format!("{P}/l/evil"), S_IFREG | 0o644, b"x")
                    .finish()
            }),
            ("replace", {
                let mut w = base();
                w.entry(&format!("{P}/f"), S_IFREG | 0o644, b"x")
                    .entry(&format!("{P}/f"), S_IFLNK | 0o777, b"/etc")
                    .finish()
            }),
            ("truncated", {
                let mut w = base();
                let mut a = w.entry(&format!("{P}/f"), S_IFREG | 0o644, b"xyz").finish();
                a.truncate(a.len() - 130);
                a
            }),
            ("no archive", vec![0u8; 4096]),
            ("no trailer", base().out),
        ];
        for (what, ar) in cases {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("c1/rootfs");
            let e = unpack(&ar[..], P, &root).unwrap_err();
            assert_eq!(e.code, ttrpc::Code::INVALID_ARGUMENT, "{what}: {e}");
            assert!(e.message.contains("bad cpio archive"), "{what}: {e}");
            assert!(!root.exists(), "{what}: root left behind");
            assert!(!dir.path().join("etc").exists());
        }
    }

    #[test]
    fn container_dir_takes_rootfs_and_mounts_only() {
        let c = "run/kata-rs/containers/c1";
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("c1");
        let mut w = base();
        w.entry(&format!("{P}/f"), S_IFREG | 0o644, b"r")
            .entry(&format!("{c}/mounts"), S_IFDIR | 0o700, b"")
            .entry(&format!("{c}/mounts/1"), S_IFREG | 0o640, b"hosts\n")
            .entry(&format!("{c}/mounts/2"), S_IFDIR | 0o750, b"")
            .entry(&format!("{c}/mounts/2/x"), S_IFREG | 0o600, b"x");
        let n = unpack_limited(&w.finish()[..], c, &root, CONTAINER_ENTRIES).unwrap();
        assert_eq!(n, 10);
        assert_eq!(fs::read(root.join("rootfs/f")).unwrap(), b"r");
        assert_eq!(fs::read(root.join("mounts/1")).unwrap(), b"hosts\n");
        let md = fs::metadata(root.join("mounts/2")).unwrap();
        assert_eq!(md.permissions().mode() & 0o7777, 0o750);
        assert_eq!(fs::read(root.join("mounts/2/x")).unwrap(), b"x");
        // Anything else below the container directory is refused, nothing is left.
        let root = dir.path().join("c2");
        let mut w = base();
        w.entry(&format!("{c}/etc"), S_IFDIR | 0o755, b"");
        let e = unpack_limited(&w.finish()[..], c, &root, CONTAINER_ENTRIES).unwrap_err();
        assert!(e.message.contains("is not under"), "{e}");
        assert!(!root.exists());
    }

    #[test]
    fn existing_root_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        fs::create_dir(&root).unwrap();
        fs::write(root.join("keep"), b"k").unwrap();
        let e = unpack(&base().finish()[..], P, &root).unwrap_err();
        assert_eq!(e.code, ttrpc::Code::ALREADY_EXISTS);
        assert!(root.join("keep").exists(), "an existing root is left alone");
    }

    #[test]
    fn names_map_under_the_prefix() {
        assert_eq!(relative_name(P, P).unwrap(), Some(PathBuf::new()));
        assert_eq!(relative_name("run/kata-rs", P).unwrap(), None);
        assert_eq!(relative_name("./run", P).unwrap(), None);
        assert_eq!(
            relative_name(&format!("{P}/a/b"), P).unwrap(),
            Some(PathBuf::from("a/b"))
        );
        assert!(relative_name("run/kata", P).is_err());
        assert!(relative_name(&format!("{P}x/a"), P).is_err());
        assert!(relative_name(&format!("{P}/a/./b"), P).is_ok()); // Path drops inner "."
        assert!(relative_name(&format!("{P}//"), P).is_err());
        assert!(relative_name(&format!("{P}/a/../b"), P).is_err());
    }

    #[test]
    fn finds_disks_by_serial() {
        let dir = tempfile::tempdir().unwrap();
        for (name, serial, size) in [
            ("vda", "kata-rs-disk0", "2048"),
            ("vdb", "kata-rs-disk1\n", "4096"),
        ] {
            let d = dir.path().join(name);
            fs::create_dir(&d).unwrap();
            fs::write(d.join("serial"), serial).unwrap();
            fs::write(d.join("size"), size).unwrap();
        }
        fs::create_dir(dir.path().join("loop0")).unwrap();
        let (dev, cap) = find_disk(dir.path(), "kata-rs-disk1").unwrap();
        assert_eq!(dev, Path::new("/dev/vdb"));
        assert_eq!(cap, 4096 * 512);
        let e = find_disk(dir.path(), "kata-rs-disk7").unwrap_err();
        assert_eq!(e.code, ttrpc::Code::NOT_FOUND);
        assert!(validate_serial("kata-rs-disk0").is_ok());
        for s in ["", "../vda", "a b", "012345678901234567890"] {
            assert!(validate_serial(s).is_err(), "{s:?}");
        }
        let e = add_rootfs_from_disk(
            dir.path(),
            "c1",
            "kata-rs-disk0",
            "ext4",
            1,
            Path::new("/x"),
        )
        .unwrap_err();
        assert!(e.message.contains("not supported"), "{e}");
        let e = add_rootfs_from_disk(
            dir.path(),
            "c1",
            "kata-rs-disk0",
            FORMAT_NEWC_CPIO,
            2048 * 512 + 1,
            Path::new("/x"),
        )
        .unwrap_err();
        assert!(e.message.contains("which holds"), "{e}");
    }
}

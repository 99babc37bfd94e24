//! A small writer for the newc ("070701") cpio format, which the Linux kernel unpacks as
//! an initramfs, and [`pack_rootfs`], which packs a container's root file system so that
//! it appears at `/run/kata-rs/containers/<id>/rootfs` in the guest.
//!
//! Hard links are written as independent copies (every entry gets its own inode number
//! and `nlink` 1), so the kernel never links entries together.

use std::{
    fs::{self, File},
    io::{self, BufWriter, Read, Write},
    os::unix::fs::{FileTypeExt, MetadataExt},
    path::{Path, PathBuf},
};

use crate::mounts::{Limits, MountCopy};

/// newc magic.
const MAGIC: &[u8; 6] = b"070701";
/// Name of the entry that ends an archive.
const TRAILER: &str = "TRAILER!!!";
/// Longest entry name the kernel's initramfs unpacker accepts (PATH_MAX, with the NUL).
pub const MAX_NAME: usize = 4096;

/// File type bits of `st_mode`.
const S_IFMT: u32 = 0o170000;
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

/// What an entry's header carries besides its name and data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EntryMeta {
    /// Full `st_mode`: file type and permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds since the epoch (clamped into 32 bits).
    pub mtime: u32,
    /// For device nodes: major and minor of the device.
    pub rdev: (u32, u32),
}

impl EntryMeta {
    /// A directory owned by root with the given permission bits.
    pub fn root_dir(perm: u32, mtime: u32) -> Self {
        Self {
            mode: S_IFDIR | (perm & 0o7777),
            mtime,
            ..Default::default()
        }
    }
}

/// Errors writing an archive; each names the file it is about.
#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    /// Reading the source or writing the archive failed.
    #[error("{path}: {err}")]
    Io {
        /// The file being packed (or the archive).
        path: PathBuf,
        /// The error.
        err: io::Error,
    },
    /// A bind mount's source cannot be copied (too big, a socket, ...); the message
    /// names the mount.
    #[error("{0}")]
    Limit(String),
    /// The entry cannot be represented in newc or unpacked by the kernel.
    #[error("{path}: {what}")]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// Why.
        what: String,
    },
}

/// Streams newc entries into a writer. Call [`CpioWriter::finish`] to write the trailer.
pub struct CpioWriter<W: Write> {
    out: W,
    written: u64,
    next_ino: u32,
}

impl<W: Write> CpioWriter<W> {
    /// Starts an archive on `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            written: 0,
            next_ino: 1,
        }
    }

    fn write_raw(&mut self, b: &[u8]) -> io::Result<()> {
        self.out.write_all(b)?;
        self.written += b.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - (self.written % 4) as usize) % 4;
        self.write_raw(&[0u8; 3][..n])
    }

    fn header(&mut self, name: &str, meta: &EntryMeta, nlink: u32, size: u32) -> io::Result<()> {
        if name.len() + 1 > MAX_NAME || name.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "entry name of {} bytes is too long or has a NUL",
                    name.len()
                ),
            ));
        }
        let ino = if name == TRAILER { 0 } else { self.next_ino };
        self.next_ino = self.next_ino.wrapping_add(1);
        let fields = [
            ino,
            meta.mode,
            meta.uid,
            meta.gid,
            nlink,
            meta.mtime,
            size,
            0, // devmajor
            0, // devminor
            meta.rdev.0,
            meta.rdev.1,
            (name.len() + 1) as u32,
            0, // check
        ];
        let mut hdr = Vec::with_capacity(110 + name.len() + 4);
        hdr.extend_from_slice(MAGIC);
        for f in fields {
            hdr.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        hdr.extend_from_slice(name.as_bytes());
        hdr.push(0);
        self.write_raw(&hdr)?;
        self.pad()
    }

    /// Writes a directory entry.
    pub fn dir(&mut self, name: &str, meta: &EntryMeta) -> io::Result<()> {
        let meta = EntryMeta {
            mode: S_IFDIR | (meta.mode & 0o7777),
            ..*meta
        };
        self.header(name, &meta, 2, 0)
    }

    /// Writes a symbolic link pointing at `target`.
    pub fn symlink(&mut self, name: &str, target: &[u8], meta: &EntryMeta) -> io::Result<()> {
        let size = u32::try_from(target.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "symlink target too long"))?;
        let meta = EntryMeta {
            mode: S_IFLNK | (meta.mode & 0o7777),
            ..*meta
        };
        self.header(name, &meta, 1, size)?;
        self.write_raw(target)?;
        self.pad()
    }

    /// Writes a regular file of exactly `size` bytes read from `data`. Fails (leaving a
    /// broken archive) if `data` ends early.
    pub fn file(
        &mut self,
        name: &str,
        meta: &EntryMeta,
        size: u64,
        data: &mut dyn Read,
    ) -> io::Result<()> {
        let size32 = u32::try_from(size).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "file is 4 GiB or larger (newc limit)",
            )
        })?;
        let meta = EntryMeta {
            mode: S_IFREG | (meta.mode & 0o7777),
            ..*meta
        };
        self.header(name, &meta, 1, size32)?;
        let copied = io::copy(&mut data.take(size), &mut self.out)?;
        self.written += copied;
        if copied != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("file shrank while being packed ({copied} of {size} bytes)"),
            ));
        }
        self.pad()
    }

    /// Writes an entry without data: a device node, FIFO or socket (`meta.mode` carries the
    /// type).
    pub fn special(&mut self, name: &str, meta: &EntryMeta) -> io::Result<()> {
        self.header(name, meta, 1, 0)
    }

    /// Writes the trailer and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.header(TRAILER, &EntryMeta::default(), 1, 0)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Guest directory of a container's root file system: `/run/kata-rs/containers/<id>/rootfs`.
pub fn guest_rootfs_path(container_id: &str) -> String {
    format!("/run/kata-rs/containers/{container_id}/rootfs")
}

fn meta_of(m: &fs::Metadata) -> EntryMeta {
    EntryMeta {
        mode: m.mode(),
        uid: m.uid(),
        gid: m.gid(),
        mtime: m.mtime().clamp(0, u32::MAX as i64) as u32,
        rdev: (
            nix::sys::stat::major(m.rdev()) as u32,
            nix::sys::stat::minor(m.rdev()) as u32,
        ),
    }
}

/// Packs the directory tree `rootfs` into a new newc archive at `out`, with its entries
/// under `run/kata-rs/containers/<container_id>/rootfs/` (the parent directories are
/// written first, owned by root, mode 0755). Symlinks are not followed. Returns the number
/// of entries written. On error the partly written `out` is left for the caller to
/// remove.
pub fn pack_rootfs(rootfs: &Path, container_id: &str, out: &Path) -> Result<u64, CpioError> {
    let unlimited = Limits {
        max_file: u64::MAX,
        max_total: u64::MAX,
        max_entries: u64::MAX,
    };
    pack_container(rootfs, container_id, out, &[], &unlimited)
}

/// What a tree walk may pack.
struct Walk<'a> {
    /// Set for a bind mount's copy: which mount (for errors); only files, directories and
    /// symlinks, within the limits.
    mount: Option<String>,
    limits: &'a Limits,
    /// Data and entries of all bind-mount copies so far.
    total: u64,
    entries: u64,
}

impl Walk<'_> {
    /// Checks the limits for one more entry of `size` data bytes.
    fn account(&mut self, path: &Path, size: u64) -> Result<(), CpioError> {
        let Some(label) = &self.mount else {
            return Ok(());
        };
        let over = |what: String| CpioError::Limit(format!("{label}: {what}"));
        let mib = |b: u64| b >> 20;
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(over(format!(
                "the container's bind mounts hold more than {} entries (runtime.bind_copy_max_entries)",
                self.limits.max_entries
            )));
        }
        if size > self.limits.max_file {
            return Err(over(format!(
                "{} is {size} bytes, more than one copied file may be ({} MiB, runtime.bind_copy_max_file_mib)",
                path.display(),
                mib(self.limits.max_file)
            )));
        }
        self.total += size;
        if self.total > self.limits.max_total {
            return Err(over(format!(
                "the container's bind mounts hold more than {} MiB (runtime.bind_copy_max_total_mib), reached at {}",
                mib(self.limits.max_total),
                path.display()
            )));
        }
        Ok(())
    }

    /// Writes one entry for `path` (already `lstat`ed as `m`) named `entry_name`; a
    /// directory's name is pushed onto `subdirs`.
    fn entry<W: Write>(
        &mut self,
        w: &mut CpioWriter<W>,
        path: &Path,
        m: &fs::Metadata,
        entry_name: String,
        subdirs: &mut Vec<(PathBuf, String)>,
    ) -> Result<(), CpioError> {
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |err| CpioError::Io { path, err }
        };
        let meta = meta_of(m);
        let ft = m.file_type();
        let special = ft.is_block_device() || ft.is_char_device() || ft.is_fifo() || ft.is_socket();
        if special {
            if let Some(label) = &self.mount {
                return Err(CpioError::Limit(format!(
                    "{label}: {} is a socket, FIFO or device node, which kata-rs does not copy into the VM",
                    path.display()
                )));
            }
        }
        self.account(path, if ft.is_file() { m.len() } else { 0 })?;
        let res = if ft.is_dir() {
            let r = w.dir(&entry_name, &meta);
            subdirs.push((path.to_path_buf(), entry_name));
            r
        } else if ft.is_symlink() {
            let target = fs::read_link(path).map_err(io_err(path))?;
            use std::os::unix::ffi::OsStrExt;
            w.symlink(&entry_name, target.as_os_str().as_bytes(), &meta)
        } else if ft.is_file() {
            let mut f = File::open(path).map_err(io_err(path))?;
            w.file(&entry_name, &meta, m.len(), &mut f)
        } else if special {
            w.special(&entry_name, &meta)
        } else {
            return Err(CpioError::Unsupported {
                path: path.to_path_buf(),
                what: format!("unknown file type (mode {:o})", m.mode() & S_IFMT),
            });
        };
        res.map_err(io_err(path))
    }

    /// Packs the contents of directory `root` (not `root` itself) under `name`, depth
    /// first, names sorted for a reproducible archive; symlinks are not followed.
    fn tree<W: Write>(
        &mut self,
        w: &mut CpioWriter<W>,
        root: &Path,
        name: &str,
    ) -> Result<u64, CpioError> {
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |err| CpioError::Io { path, err }
        };
        let mut count = 0;
        let mut stack = vec![(root.to_path_buf(), name.to_string())];
        while let Some((dir, name)) = stack.pop() {
            let mut entries = fs::read_dir(&dir)
                .map_err(io_err(&dir))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(io_err(&dir))?;
            entries.sort_by_key(|e| e.file_name());
            let mut subdirs = Vec::new();
            for e in entries {
                let path = e.path();
                let fname = e.file_name();
                let Some(fname) = fname.to_str() else {
                    return Err(CpioError::Unsupported {
                        path,
                        what: "file name is not UTF-8".into(),
                    });
                };
                let entry_name = format!("{name}/{fname}");
                if entry_name.len() + 1 > MAX_NAME {
                    return Err(CpioError::Unsupported {
                        path,
                        what: "path is too long for the guest (PATH_MAX)".into(),
                    });
                }
                let m = fs::symlink_metadata(&path).map_err(io_err(&path))?;
                self.entry(w, &path, &m, entry_name, &mut subdirs)?;
                count += 1;
            }
            // Reverse so that the stack pops them in sorted order.
            stack.extend(subdirs.into_iter().rev());
        }
        Ok(count)
    }
}

/// [`pack_rootfs`] plus the container's copied bind-mount sources: each [`MountCopy`]
/// (a regular file, or a directory tree packed without following symlinks) goes under
/// `run/kata-rs/containers/<container_id>/mounts/<index>` (the `mounts` directory is
/// root's, mode 0700), within `limits` (errors name the mount).
pub fn pack_container(
    rootfs: &Path,
    container_id: &str,
    out: &Path,
    copies: &[MountCopy],
    limits: &Limits,
) -> Result<u64, CpioError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |err| CpioError::Io { path, err }
    };
    let file = File::create(out).map_err(io_err(out))?;
    let mut w = CpioWriter::new(BufWriter::with_capacity(256 * 1024, file));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs().min(u32::MAX as u64) as u32)
        .unwrap_or(0);
    let prefix = guest_rootfs_path(container_id);
    let prefix = prefix.trim_start_matches('/');
    let mut parent = String::new();
    for part in prefix.split('/').take(prefix.split('/').count() - 1) {
        if !parent.is_empty() {
            parent.push('/');
        }
        parent.push_str(part);
        w.dir(&parent, &EntryMeta::root_dir(0o755, now))
            .map_err(io_err(out))?;
    }
    let root_meta = fs::symlink_metadata(rootfs).map_err(io_err(rootfs))?;
    if !root_meta.is_dir() {
        return Err(CpioError::Unsupported {
            path: rootfs.to_path_buf(),
            what: "container root file system is not a directory".into(),
        });
    }
    w.dir(prefix, &meta_of(&root_meta)).map_err(io_err(out))?;
    let mut count = 1 + parent.split('/').count() as u64;
    let mut walk = Walk {
        mount: None,
        limits,
        total: 0,
        entries: 0,
    };
    count += walk.tree(&mut w, rootfs, prefix)?;

    if !copies.is_empty() {
        let mounts = crate::mounts::guest_mounts_dir(container_id);
        let mounts = mounts.trim_start_matches('/');
        w.dir(mounts, &EntryMeta::root_dir(0o700, now))
            .map_err(io_err(out))?;
        count += 1;
        for c in copies {
            walk.mount = Some(c.label());
            let name = format!("{mounts}/{}", c.index);
            // The source itself: resolved by the shim already (as mount(2) would);
            // nothing below it is followed.
            let m = fs::metadata(&c.source).map_err(|e| {
                CpioError::Limit(format!("{}: {}: {e}", c.label(), c.source.display()))
            })?;
            let mut subdirs = Vec::new();
            walk.entry(&mut w, &c.source, &m, name.clone(), &mut subdirs)?;
            count += 1;
            if m.is_dir() {
                count += walk.tree(&mut w, &c.source, &name)?;
            }
        }
    }

    let mut buf = w.finish().map_err(io_err(out))?;
    buf.flush().map_err(io_err(out))?;
    let file = buf.into_inner().map_err(|e| CpioError::Io {
        path: out.to_path_buf(),
        err: e.into_error(),
    })?;
    file.sync_all().map_err(io_err(out))?;
    Ok(count)
}

/// A parsed entry, for tests and debugging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedEntry {
    /// Entry name.
    pub name: String,
    /// Header fields.
    pub meta: EntryMeta,
    /// Inode number.
    pub ino: u32,
    /// Link count.
    pub nlink: u32,
    /// File data (symlink target for links).
    pub data: Vec<u8>,
}

/// Parses a newc archive up to its trailer (strictly: bad magic, bad hex, or truncation
/// are errors).
pub fn parse(mut buf: &[u8]) -> io::Result<Vec<ParsedEntry>> {
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
    let total = buf.len();
    let mut out = Vec::new();
    loop {
        if buf.len() < 110 || &buf[..6] != MAGIC {
            return Err(bad("bad or missing newc header"));
        }
        let mut f = [0u32; 13];
        for (i, v) in f.iter_mut().enumerate() {
            let s = std::str::from_utf8(&buf[6 + i * 8..14 + i * 8])
                .map_err(|_| bad("header not ASCII"))?;
            *v = u32::from_str_radix(s, 16).map_err(|_| bad("header not hex"))?;
        }
        let namesize = f[11] as usize;
        let filesize = f[6] as usize;
        let pos = |b: &[u8]| total - b.len();
        let name_end = 110 + namesize;
        if namesize == 0 || buf.len() < name_end || buf[name_end - 1] != 0 {
            return Err(bad("bad name"));
        }
        let name = String::from_utf8(buf[110..name_end - 1].to_vec())
            .map_err(|_| bad("name not UTF-8"))?;
        let mut off = name_end;
        off += (4 - (pos(buf) + off) % 4) % 4;
        if buf.len() < off + filesize {
            return Err(bad("truncated data"));
        }
        let data = buf[off..off + filesize].to_vec();
        off += filesize;
        off += (4 - (pos(buf) + off) % 4) % 4;
        buf = &buf[off.min(buf.len())..];
        if name == TRAILER {
            return Ok(out);
        }
        out.push(ParsedEntry {
            name,
            meta: EntryMeta {
                mode: f[1],
                uid: f[2],
                gid: f[3],
                mtime: f[5],
                rdev: (f[9], f[10]),
            },
            ino: f[0],
            nlink: f[4],
            data,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn header_layout_and_padding() {
        let mut w = CpioWriter::new(Vec::new());
        let meta = EntryMeta {
            mode: 0o644,
            uid: 1,
            gid: 2,
            mtime: 0x1234,
            rdev: (0, 0),
        };
        w.file("a", &meta, 3, &mut &b"xyz"[..]).unwrap();
        let buf = w.finish().unwrap();
        assert_eq!(&buf[..6], b"070701");
        // ino=1, mode=0100644, uid=1, gid=2, nlink=1, mtime=0x1234, size=3
        assert_eq!(
            std::str::from_utf8(&buf[6..62]).unwrap(),
            "00000001000081a40000000100000002000000010000123400000003"
        );
        // name "a\0" ends at 112, padded to 112; data 3 bytes padded to 116
        assert_eq!(&buf[110..112], b"a\0");
        assert_eq!(&buf[112..115], b"xyz");
        assert_eq!(buf[115], 0);
        assert_eq!(&buf[116..122], b"070701");
        assert_eq!(buf.len() % 4, 0);
        let entries = parse(&buf).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].data, b"xyz");
        assert_eq!(
            entries[0].meta,
            EntryMeta {
                mode: 0o100644,
                ..meta
            }
        );
    }

    #[test]
    fn short_file_is_an_error() {
        let mut w = CpioWriter::new(Vec::new());
        let e = w
            .file("a", &EntryMeta::default(), 10, &mut &b"xyz"[..])
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn long_name_is_an_error() {
        let mut w = CpioWriter::new(Vec::new());
        let name = "x".repeat(MAX_NAME);
        assert!(w.dir(&name, &EntryMeta::default()).is_err());
    }

    fn make_tree(root: &Path) {
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::create_dir_all(root.join("etc/empty")).unwrap();
        fs::write(root.join("bin/busybox"), b"#!binary\x00\x01\x02").unwrap();
        fs::set_permissions(root.join("bin/busybox"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
        fs::hard_link(root.join("bin/busybox"), root.join("bin/ls")).unwrap();
        fs::write(root.join("etc/hostname"), b"guest\n").unwrap();
        fs::write(root.join("etc/empty-file"), b"").unwrap();
        nix::unistd::mkfifo(
            &root.join("etc/fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        fs::set_permissions(root.join("etc"), fs::Permissions::from_mode(0o750)).unwrap();
    }

    #[test]
    fn bind_mount_copies_go_under_mounts_within_limits() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        fs::create_dir_all(root.join("etc")).unwrap();
        let file = dir.path().join("hosts");
        fs::write(&file, b"127.0.0.1 localhost\n").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
        let tree = dir.path().join("data");
        fs::create_dir_all(tree.join("sub")).unwrap();
        fs::write(tree.join("sub/f"), b"abc").unwrap();
        // A symlink out of the tree stays a symlink (never followed).
        std::os::unix::fs::symlink("/etc/shadow", tree.join("out")).unwrap();
        let copy = |index, source: &Path| MountCopy {
            index,
            source: source.to_path_buf(),
            spec_source: source.display().to_string(),
            destination: format!("/m{index}"),
        };
        let copies = vec![copy(3, &file), copy(5, &tree)];
        let big = Limits {
            max_file: 1 << 20,
            max_total: 1 << 20,
            max_entries: 100,
        };
        let out = dir.path().join("out.cpio");
        let n = pack_container(&root, "c1", &out, &copies, &big).unwrap();
        let entries = parse(&fs::read(&out).unwrap()).unwrap();
        assert_eq!(n as usize, entries.len());
        let m = "run/kata-rs/containers/c1/mounts";
        let get = |name: &str| entries.iter().find(|e| e.name == name).unwrap();
        assert_eq!(get(m).meta.mode, S_IFDIR | 0o700);
        let f = get(&format!("{m}/3"));
        assert_eq!(f.meta.mode, S_IFREG | 0o640);
        assert_eq!(f.data, b"127.0.0.1 localhost\n");
        assert_eq!(get(&format!("{m}/5")).meta.mode & S_IFMT, S_IFDIR);
        assert_eq!(get(&format!("{m}/5/sub/f")).data, b"abc");
        let l = get(&format!("{m}/5/out"));
        assert_eq!(l.meta.mode & S_IFMT, S_IFLNK);
        assert_eq!(l.data, b"/etc/shadow");

        // Each limit fails naming the mount.
        for (limits, what) in [
            (Limits { max_file: 2, ..big }, "bind_copy_max_file_mib"),
            (
                Limits {
                    max_total: 21,
                    ..big
                },
                "bind_copy_max_total_mib",
            ),
            (
                Limits {
                    max_entries: 3,
                    ..big
                },
                "bind_copy_max_entries",
            ),
        ] {
            let e = pack_container(&root, "c1", &out, &copies, &limits).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, CpioError::Limit(_)), "{msg}");
            assert!(msg.contains(what), "{msg}");
            assert!(msg.contains("bind mount /m"), "{msg}");
        }
        // A FIFO inside a copied tree is refused, naming the mount.
        nix::unistd::mkfifo(
            &tree.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let e = pack_container(&root, "c1", &out, &copies, &big).unwrap_err();
        assert!(e.to_string().contains("bind mount /m5"), "{e}");
    }

    #[test]
    fn pack_rootfs_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        make_tree(&root);
        let out = dir.path().join("out.cpio");
        let n = pack_rootfs(&root, "c1", &out).unwrap();
        let buf = fs::read(&out).unwrap();
        let entries = parse(&buf).unwrap();
        assert_eq!(n as usize, entries.len());
        let names: Vec<_> = entries.iter().map(|e| e.name.as_str()).collect();
        let p = "run/kata-rs/containers/c1/rootfs";
        assert_eq!(
            names,
            vec![
                "run".to_string(),
                "run/kata-rs".into(),
                "run/kata-rs/containers".into(),
                "run/kata-rs/containers/c1".into(),
                p.into(),
                format!("{p}/bin"),
                format!("{p}/etc"),
                format!("{p}/bin/busybox"),
                format!("{p}/bin/ls"),
                format!("{p}/bin/sh"),
                format!("{p}/etc/empty"),
                format!("{p}/etc/empty-file"),
                format!("{p}/etc/fifo"),
                format!("{p}/etc/hostname"),
            ]
        );
        let get = |n: &str| {
            entries
                .iter()
                .find(|e| e.name == format!("{p}/{n}"))
                .unwrap()
        };
        assert_eq!(get("bin/busybox").data, b"#!binary\x00\x01\x02");
        assert_eq!(get("bin/busybox").meta.mode, 0o100755);
        assert_eq!(get("bin/ls").data, get("bin/busybox").data);
        assert_ne!(get("bin/ls").ino, get("bin/busybox").ino);
        assert_eq!(get("bin/ls").nlink, 1);
        assert_eq!(get("bin/sh").data, b"busybox");
        assert_eq!(get("bin/sh").meta.mode & S_IFMT, S_IFLNK);
        assert_eq!(get("etc").meta.mode, 0o040750);
        assert_eq!(get("etc/fifo").meta.mode & S_IFMT, 0o010000);
        let m = fs::metadata(root.join("etc/hostname")).unwrap();
        assert_eq!(get("etc/hostname").meta.mtime as i64, m.mtime());
        assert_eq!(get("etc/hostname").meta.uid, m.uid());
        assert_eq!(entries[0].meta.mode, 0o040755);
        // Unique inode numbers.
        let mut inos: Vec<_> = entries.iter().map(|e| e.ino).collect();
        inos.sort();
        inos.dedup();
        assert_eq!(inos.len(), entries.len());
    }

    /// The system `cpio` tool (GNU cpio) must read what we write: names and contents.
    #[test]
    fn gnu_cpio_reads_the_archive() {
        if std::process::Command::new("cpio")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("cpio not installed; skipping");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        make_tree(&root);
        let out = dir.path().join("out.cpio");
        pack_rootfs(&root, "abc", &out).unwrap();
        let list = std::process::Command::new("cpio")
            .args(["-it", "--quiet", "-F"])
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            list.status.success(),
            "{}",
            String::from_utf8_lossy(&list.stderr)
        );
        let list = String::from_utf8(list.stdout).unwrap();
        assert!(
            list.contains("run/kata-rs/containers/abc/rootfs/bin/busybox\n"),
            "{list}"
        );
        assert!(
            list.contains("run/kata-rs/containers/abc/rootfs/etc/hostname\n"),
            "{list}"
        );
        let x = dir.path().join("x");
        fs::create_dir(&x).unwrap();
        let st = std::process::Command::new("cpio")
            .args(["-id", "--quiet", "--no-absolute-filenames", "-F"])
            .arg(&out)
            .current_dir(&x)
            .status()
            .unwrap();
        assert!(st.success());
        let r = x.join("run/kata-rs/containers/abc/rootfs");
        assert_eq!(fs::read(r.join("bin/ls")).unwrap(), b"#!binary\x00\x01\x02");
        assert_eq!(
            fs::read_link(r.join("bin/sh")).unwrap(),
            PathBuf::from("busybox")
        );
        assert_eq!(fs::read(r.join("etc/hostname")).unwrap(), b"guest\n");
    }

    #[test]
    fn parse_rejects_garbage_and_truncation() {
        assert!(parse(b"hello").is_err());
        let mut w = CpioWriter::new(Vec::new());
        w.file("a", &EntryMeta::default(), 3, &mut &b"xyz"[..])
            .unwrap();
        let buf = w.finish().unwrap();
        assert!(parse(&buf[..buf.len() - 8]).is_err());
    }

    #[test]
    fn rootfs_must_be_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("f"), b"").unwrap();
        let e = pack_rootfs(&dir.path().join("f"), "c", &dir.path().join("o")).unwrap_err();
        assert!(e.to_string().contains("not a directory"));
    }
}

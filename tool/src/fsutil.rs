//! File states (hash, mode, owner), atomic writes, and the directories a write needs.

use std::{
    fs,
    io::Write,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A regular file's content hash, permission bits and owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileState {
    /// SHA-256 of the content, hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits (`mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// SHA-256 of `data`, lower-case hex.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// This process's effective uid and gid (the owner of the files it creates).
pub fn own_ids() -> (u32, u32) {
    // SAFETY: geteuid and getegid take no arguments, cannot fail and touch no memory.
    unsafe { (libc::geteuid(), libc::getegid()) }
}

/// What is at a path.
#[derive(Debug)]
pub enum Current {
    /// Nothing.
    Absent,
    /// A regular file, its state and content.
    File(FileState, Vec<u8>),
    /// Something else (directory, symlink, device...), described.
    Other(String),
}

/// Reads what is at `path` (symlinks are not followed).
pub fn current(path: &Path) -> Result<Current> {
    let m = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Current::Absent),
        Err(e) => return Err(e).with_context(|| format!("cannot stat {}", path.display())),
        Ok(m) => m,
    };
    let ft = m.file_type();
    if ft.is_symlink() {
        let to = fs::read_link(path).unwrap_or_default();
        return Ok(Current::Other(format!(
            "a symbolic link to {}",
            to.display()
        )));
    }
    if ft.is_dir() {
        return Ok(Current::Other("a directory".into()));
    }
    if !ft.is_file() {
        return Ok(Current::Other("not a regular file".into()));
    }
    let data = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Current::File(
        FileState {
            sha256: sha256_hex(&data),
            size: data.len() as u64,
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
        },
        data,
    ))
}

/// Writes `data` to `path` atomically (a temporary file beside it, renamed over it) with
/// `mode`, and owner `uid:gid` when given.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32, owner: Option<(u32, u32)>) -> Result<()> {
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let tmp = path.with_file_name(format!(".{}.kata-rs-tmp", name.to_string_lossy()));
    let res = (|| -> Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
        }
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        Ok(())
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res.with_context(|| format!("cannot write {}", path.display()))
}

/// The directories between `root` (exclusive) and `dir` (inclusive) that do not exist yet,
/// top-down. Fails when one of them exists but is not a directory.
pub fn missing_dirs(root: &Path, dir: &Path) -> Result<Vec<PathBuf>> {
    let rel = dir.strip_prefix(root).unwrap_or(dir);
    let mut p = root.to_path_buf();
    let mut out = Vec::new();
    for c in rel.components() {
        p.push(c);
        match fs::symlink_metadata(&p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => out.push(p.clone()),
            Err(e) => return Err(e).with_context(|| format!("cannot stat {}", p.display())),
            Ok(m) if m.is_dir() => {}
            // A symlinked directory (e.g. /usr/local/bin -> ...) is used as it is.
            Ok(m) if m.file_type().is_symlink() && p.is_dir() => {}
            Ok(_) => bail!("{} is in the way: it is not a directory", p.display()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha_and_state() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("a");
        write_atomic(&f, b"hi", 0o640, None).unwrap();
        match current(&f).unwrap() {
            Current::File(s, d) => {
                assert_eq!(d, b"hi");
                assert_eq!(s.mode, 0o640);
                assert_eq!(s.size, 2);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            current(&t.path().join("b")).unwrap(),
            Current::Absent
        ));
        assert!(matches!(current(t.path()).unwrap(), Current::Other(_)));
        // No temporary file left.
        assert_eq!(fs::read_dir(t.path()).unwrap().count(), 1);
    }

    #[test]
    fn missing_dirs_top_down_and_blocked() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        fs::create_dir(r.join("usr")).unwrap();
        assert_eq!(
            missing_dirs(r, &r.join("usr/local/bin")).unwrap(),
            vec![r.join("usr/local"), r.join("usr/local/bin")]
        );
        fs::write(r.join("usr/local"), b"").unwrap();
        let e = missing_dirs(r, &r.join("usr/local/bin")).unwrap_err();
        assert!(e.to_string().contains("is in the way"), "{e}");
    }
}

//! The template directory (`factory.template_dir`, 0700, root's): one directory per key
//! holding the snapshot (`state`, `memory`), published by one `rename(2)` of a finished
//! snapshot; beside them `.lock-<key>` (who makes that key's template: `flock`),
//! `.work-<key>` (the template VM's files while it is made) and `.dead-*` (a template being
//! removed). Nothing here follows a symlink.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::key::TemplateKey;

/// The snapshot's state file in a template directory.
pub const STATE_FILE: &str = "state";
/// The snapshot's guest memory file in a template directory.
pub const MEMORY_FILE: &str = "memory";
/// The template VM's vsock CID (decimal), which its restores keep: a guest restored with
/// another CID drops the host's packets until it has handled the CID change (~2 s on the
/// emulated node), so its agent answers late.
pub const CID_FILE: &str = "cid";
/// Most templates kept for one boot identity (sandboxes of different sizes); the oldest
/// goes when a new one is made.
pub const MAX_TEMPLATES: usize = 4;

const WORK_PREFIX: &str = ".work-";
const LOCK_PREFIX: &str = ".lock-";
const DEAD_PREFIX: &str = ".dead-";

fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Makes `root` (and its parents) if missing; it must be a directory of this user (not a
/// symlink), and is set to 0700.
pub fn ensure_root(root: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)?;
    let m = std::fs::symlink_metadata(root)?;
    if !m.is_dir() {
        return Err(io::Error::other(format!(
            "{} is not a directory",
            root.display()
        )));
    }
    if m.uid() != euid() {
        return Err(io::Error::other(format!(
            "{} is owned by uid {}, not by the shim's user",
            root.display(),
            m.uid()
        )));
    }
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
}

/// The template of `key` under `root`: `Ok(None)` when there is none, `Err(why)` when
/// something is there that is not a usable template (a symlink, another owner, a group or
/// world access bit, a missing or non-regular `state`/`memory`, an empty `state`).
pub fn find(root: &Path, key: &TemplateKey) -> Result<Option<PathBuf>, String> {
    let dir = root.join(&key.name);
    let m = match std::fs::symlink_metadata(&dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
        Ok(m) => m,
    };
    if !m.is_dir() || m.uid() != euid() || m.mode() & 0o077 != 0 {
        return Err(format!(
            "{} is not a private directory of the shim's user",
            dir.display()
        ));
    }
    for f in [STATE_FILE, MEMORY_FILE, CID_FILE] {
        let p = dir.join(f);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_file() && m.uid() == euid() && m.len() > 0 => {}
            Ok(_) => {
                return Err(format!(
                    "{} is not a regular non-empty file of the shim's user",
                    p.display()
                ))
            }
            Err(e) => return Err(format!("{}: {e}", p.display())),
        }
    }
    Ok(Some(dir))
}

/// The exclusive right to make (or remove) one key's template, across shims: `flock` on
/// `.lock-<key>`, released when dropped.
pub struct KeyLock {
    _file: File,
}

/// Takes `key_name`'s lock without waiting: `None` when another holds it.
pub fn try_lock(root: &Path, key_name: &str) -> io::Result<Option<KeyLock>> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(root.join(format!("{LOCK_PREFIX}{key_name}")))?;
    // SAFETY: flock on an fd we own; no memory involved.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Ok(Some(KeyLock { _file: file }));
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(None)
    } else {
        Err(e)
    }
}

/// Where `key`'s template VM keeps its files while it is made (under its lock).
pub fn work_dir(root: &Path, key: &TemplateKey) -> PathBuf {
    root.join(format!("{WORK_PREFIX}{}", key.name))
}

/// Removes the entry `name` under `root` (a template, a work directory): renamed out of the
/// way first (a later `find` never sees half of it), then removed without following links.
pub fn remove_entry(root: &Path, name: &str) -> io::Result<()> {
    let from = root.join(name);
    let dead = root.join(format!(
        "{DEAD_PREFIX}{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    match std::fs::rename(&from, &dead) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
        Ok(()) => {}
    }
    remove_path(&dead)
}

/// Removes `p` whatever it is (a directory tree, a file, a symlink itself).
fn remove_path(p: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(p) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
    }
}

/// The template VM's CID recorded in template `dir` ([`CID_FILE`]), checked to be in the
/// shim's CID range.
pub fn read_cid(dir: &Path) -> Result<u32, String> {
    use std::io::Read;
    let p = dir.join(CID_FILE);
    let mut text = String::new();
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&p)
        .and_then(|f| f.take(32).read_to_string(&mut text))
        .map_err(|e| format!("{}: {e}", p.display()))?;
    text.trim()
        .parse::<u32>()
        .ok()
        .filter(|c| (crate::vmm::CID_MIN..=crate::vmm::CID_MAX).contains(c))
        .ok_or_else(|| format!("{}: not a vsock CID: {:?}", p.display(), text.trim()))
}

/// Publishes the finished snapshot in `snap` (written by the jailed template VMM, which
/// has ended) as `key`'s template: every file must be a regular file; they become the
/// shim's (0600), the directory 0700, then one `rename` to `<root>/<key>`.
pub fn publish(root: &Path, key: &TemplateKey, snap: &Path) -> io::Result<PathBuf> {
    let (uid, gid) = (euid(), nix::unistd::getegid().as_raw());
    let mut names = Vec::new();
    for e in std::fs::read_dir(snap)? {
        let e = e?;
        let m = std::fs::symlink_metadata(e.path())?;
        if !m.is_file() {
            return Err(io::Error::other(format!(
                "{} is not a regular file",
                e.path().display()
            )));
        }
        names.push(e.file_name());
        std::os::unix::fs::lchown(e.path(), Some(uid), Some(gid))?;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(e.path())?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    for f in [STATE_FILE, MEMORY_FILE, CID_FILE] {
        if !names.iter().any(|n| n == f) {
            return Err(io::Error::other(format!(
                "the snapshot in {} has no {f} file",
                snap.display()
            )));
        }
    }
    std::os::unix::fs::lchown(snap, Some(uid), Some(gid))?;
    std::fs::set_permissions(snap, std::fs::Permissions::from_mode(0o700))?;
    let dest = root.join(&key.name);
    std::fs::rename(snap, &dest)?;
    if let Ok(d) = File::open(root) {
        let _ = d.sync_all();
    }
    Ok(dest)
}

/// After `current`'s template was made: removes the templates (and work directories and
/// locks) of other boot identities, whose kernel, guest image, kata-vmm or parameters
/// changed, each under its key's lock (one being made by another shim is left); leftover
/// `.dead-*` entries; and the oldest templates of `current`'s boot identity beyond
/// [`MAX_TEMPLATES`]. Returns what was removed.
pub fn remove_stale(root: &Path, current: &TemplateKey) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let names: Vec<String> = rd
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    let mut removed = Vec::new();
    let mut same_boot: Vec<(std::time::SystemTime, String)> = Vec::new();
    let key_of = |n: &str| -> Option<String> {
        let k = n
            .strip_prefix(WORK_PREFIX)
            .or_else(|| n.strip_prefix(LOCK_PREFIX))
            .unwrap_or(n);
        TemplateKey::boot_of(k).map(|_| k.to_string())
    };
    let mut stale_keys: Vec<String> = Vec::new();
    for n in &names {
        if n.starts_with(DEAD_PREFIX) {
            if remove_path(&root.join(n)).is_ok() {
                removed.push(n.clone());
            }
            continue;
        }
        let Some(k) = key_of(n) else { continue };
        if TemplateKey::boot_of(&k) != Some(current.boot.as_str()) {
            if !stale_keys.contains(&k) {
                stale_keys.push(k);
            }
        } else if *n == k && k != current.name {
            let t = std::fs::symlink_metadata(root.join(n))
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            same_boot.push((t, k));
        }
    }
    same_boot.sort();
    let excess = (same_boot.len() + 1).saturating_sub(MAX_TEMPLATES);
    stale_keys.extend(same_boot.into_iter().take(excess).map(|(_, k)| k));
    for k in stale_keys {
        let Ok(Some(lock)) = try_lock(root, &k) else {
            continue;
        };
        for n in [k.clone(), format!("{WORK_PREFIX}{k}")] {
            if names.contains(&n) && remove_entry(root, &n).is_ok() {
                removed.push(n);
            }
        }
        if TemplateKey::boot_of(&k) != Some(current.boot.as_str()) {
            let _ = std::fs::remove_file(root.join(format!("{LOCK_PREFIX}{k}")));
        }
        drop(lock);
    }
    removed
}

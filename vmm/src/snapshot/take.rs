//! Taking a snapshot of the running VM (control request `snapshot`): with every vCPU parked,
//! the KVM state of the VM and of each vCPU, every virtio-mmio transport and its device, COM1
//! and guest RAM go into a directory under `--snapshot-root`.
//!
//! The jail leaves the VMM no path on the host, so the root is opened before it and kept as a
//! directory fd; a snapshot directory is reached from it one component at a time (`openat`
//! with `O_NOFOLLOW`, `..` refused), created 0700 when missing. Files are written under a
//! temporary name, synced, then renamed: the memory file first, the state file last, so a
//! directory with a state file holds a complete snapshot.

use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kvm_ioctls::VcpuFd;
use vm_memory::GuestMemoryMmap;

use super::{ConfigFingerprint, SnapshotState, MEMORY_FILE, STATE_FILE};
use crate::device_manager::lock_transport;
use crate::devices::serial::ConsoleSerial;
use crate::devices::virtio::device::DeviceNote;
use crate::devices::SharedTransport;
use crate::vstate::vm::Vm;
use crate::vstate::{vcpu_state, vm_state};

/// The directory snapshots may be written under (`--snapshot-root`), opened before the jail.
pub struct SnapshotRoot {
    path: PathBuf,
    fd: OwnedFd,
}

impl SnapshotRoot {
    /// Opens `path` (an existing directory, absolute).
    pub fn open(path: &Path) -> std::io::Result<SnapshotRoot> {
        if !path.is_absolute() {
            return Err(std::io::Error::other("must be an absolute path"));
        }
        let fd = open_dir(libc::AT_FDCWD, path.as_os_str().as_bytes(), false)?;
        Ok(SnapshotRoot {
            path: path.to_path_buf(),
            fd,
        })
    }

    /// The directory `dir` (absolute, under the root, or the root itself), created if missing.
    fn dir(&self, dir: &Path) -> Result<OwnedFd, String> {
        let rel = dir.strip_prefix(&self.path).map_err(|_| {
            format!(
                "{} is not under the snapshot root {}",
                dir.display(),
                self.path.display()
            )
        })?;
        let mut fd = open_dir(self.fd.as_raw_fd(), b".", false)
            .map_err(|e| format!("snapshot root: {e}"))?;
        for c in rel.components() {
            let Component::Normal(name) = c else {
                return Err(format!(
                    "{}: only plain names below the snapshot root (no \"..\" or \".\")",
                    dir.display()
                ));
            };
            fd = open_dir(fd.as_raw_fd(), name.as_bytes(), true)
                .map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        Ok(fd)
    }
}

fn cstr(name: &[u8]) -> std::io::Result<CString> {
    CString::new(name).map_err(|_| std::io::Error::other("NUL in a path"))
}

/// Opens directory `name` relative to `at` without following a symlink; `create`: mkdir it
/// (0700, whatever the process's umask) first when missing.
fn open_dir(at: RawFd, name: &[u8], create: bool) -> std::io::Result<OwnedFd> {
    let c = cstr(name)?;
    let mut created = false;
    if create {
        // SAFETY: mkdirat with a valid dir fd and a NUL-terminated name.
        if unsafe { libc::mkdirat(at, c.as_ptr(), 0o700) } == 0 {
            created = true;
        } else {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(e);
            }
        }
    }
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_NOFOLLOW;
    // SAFETY: openat with a valid dir fd and a NUL-terminated name; the result is checked.
    let fd = unsafe { libc::openat(at, c.as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh fd owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // mkdirat's mode is cut by the umask (another thread may hold a stricter one for a
    // moment, as the API socket's bind does), so the mode is set on what was opened.
    // SAFETY: fchmod on a valid fd owned here.
    if created && unsafe { libc::fchmod(fd.as_raw_fd(), 0o700) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// Creates (or truncates) regular file `name` in `dir`, 0600, without following a symlink.
fn create_file(dir: &OwnedFd, name: &str) -> std::io::Result<File> {
    let c = cstr(name.as_bytes())?;
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC | libc::O_NOFOLLOW;
    // SAFETY: openat with a valid dir fd and a NUL-terminated name; the result is checked.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags, 0o600) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh fd owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

fn rename(dir: &OwnedFd, from: &str, to: &str) -> std::io::Result<()> {
    let (f, t) = (cstr(from.as_bytes())?, cstr(to.as_bytes())?);
    let d = dir.as_raw_fd();
    // SAFETY: renameat within one valid dir fd, NUL-terminated names.
    if unsafe { libc::renameat(d, f.as_ptr(), d, t.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn unlink(dir: &OwnedFd, name: &str) {
    if let Ok(c) = cstr(name.as_bytes()) {
        // SAFETY: unlinkat with a valid dir fd and a NUL-terminated name.
        unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) };
    }
}

/// What a snapshot reads from the running VM; built by the builder, used by the main thread.
pub struct Snapshotter {
    /// The VM (its fd for the VM-wide state).
    pub vm: Arc<Vm>,
    /// The vCPUs, shared with their threads (which hold the lock only inside `KVM_RUN` and
    /// their exit handling: a parked vCPU's is free).
    pub vcpus: Vec<Arc<Mutex<VcpuFd>>>,
    /// MSRs to save (`KVM_GET_MSR_INDEX_LIST`, read before the seccomp filter).
    pub msr_indices: Vec<u32>,
    /// Guest RAM.
    pub mem: Arc<GuestMemoryMmap>,
    /// Every virtio-mmio slot, in order.
    pub devices: Vec<SharedTransport>,
    /// COM1.
    pub serial: Arc<Mutex<ConsoleSerial>>,
    /// The configuration, for the state file.
    pub fingerprint: ConfigFingerprint,
    /// Where snapshots may go.
    pub root: SnapshotRoot,
}

impl Snapshotter {
    /// Saves the paused VM into `dir`; the message of an error names the step.
    pub fn take(&self, dir: &Path) -> Result<String, String> {
        let t0 = Instant::now();
        let d = self.root.dir(dir)?;
        let k = |e: crate::vstate::StateError| e.to_string();
        let vm = vm_state::capture(&self.vm.fd).map_err(k)?;
        let mut vcpus = Vec::new();
        for (i, v) in self.vcpus.iter().enumerate() {
            let v = v.lock().unwrap_or_else(|p| p.into_inner());
            vcpus.push(
                vcpu_state::capture(&self.vm.fd, &v, &self.msr_indices)
                    .map_err(|e| format!("vCPU {i}: {e}"))?,
            );
        }
        // Every transport stays locked until guest RAM is saved: a queue worker thread
        // (virtio-blk's `blkN`, which serves kicks and its own re-kicks under this lock) then
        // cannot complete a request between the device state and the memory it refers to.
        let locked: Vec<_> = self.devices.iter().map(lock_transport).collect();
        let mut devices = Vec::new();
        for (i, t) in locked.iter().enumerate() {
            devices.push(
                t.save_state()
                    .map_err(|e| format!("virtio-mmio slot {i}: {e}"))?,
            );
        }
        // Whether a restore must reset vsock's transport (said in the reply: the caller may
        // wait for its connections to close and save again).
        let vsock = devices.iter().find_map(|d| match d.note {
            Some(DeviceNote::Vsock { idle: true, .. }) => Some("; vsock idle"),
            Some(DeviceNote::Vsock { idle: false, .. }) => Some("; vsock busy"),
            None => None,
        });
        let serial = self.serial.lock().unwrap_or_else(|p| p.into_inner()).save();
        let tmp_mem = format!("{MEMORY_FILE}.tmp");
        let tmp_state = format!("{STATE_FILE}.tmp");
        let write = || -> std::io::Result<usize> {
            // A state file of an earlier snapshot must not outlive its memory file.
            unlink(&d, STATE_FILE);
            let f = create_file(&d, &tmp_mem)?;
            let memory = super::memory::save(&self.mem, &f)?;
            rename(&d, &tmp_mem, MEMORY_FILE)?;
            let state = SnapshotState {
                vm,
                vcpus,
                memory,
                devices,
                serial,
            };
            let bytes = super::encode(&self.fingerprint, &state)?;
            let mut f = create_file(&d, &tmp_state)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            rename(&d, &tmp_state, STATE_FILE)?;
            Ok(bytes.len())
        };
        let written = write();
        drop(locked);
        match written {
            Ok(n) => Ok(format!(
                "{} (state {n} bytes, {} ms{})",
                dir.display(),
                t0.elapsed().as_millis(),
                vsock.unwrap_or_default()
            )),
            Err(e) => {
                unlink(&d, &tmp_mem);
                unlink(&d, &tmp_state);
                Err(format!("writing {}: {e}", dir.display()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Snapshot directories are reached from the root's fd only: below it (created 0700),
    /// never outside it, never through `..` or a symlink.
    #[test]
    fn snapshot_dirs_stay_below_the_root() {
        let base = std::env::temp_dir().join(format!("kata-vmm-snaproot-{}", std::process::id()));
        let root_path = base.join("root");
        std::fs::create_dir_all(&root_path).unwrap();
        assert!(SnapshotRoot::open(Path::new("relative")).is_err());
        let root = SnapshotRoot::open(&root_path).unwrap();

        let fd = root.dir(&root_path.join("a/b")).unwrap();
        let f = create_file(&fd, "x").unwrap();
        drop(f);
        assert!(root_path.join("a/b/x").is_file());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(root_path.join("a"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        root.dir(&root_path).unwrap();

        let e = root.dir(&base.join("elsewhere")).unwrap_err();
        assert!(e.contains("is not under the snapshot root"), "{e}");
        let e = root.dir(&root_path.join("a/../../escape")).unwrap_err();
        assert!(e.contains("only plain names"), "{e}");
        assert!(!base.join("escape").exists());
        std::os::unix::fs::symlink(&base, root_path.join("link")).unwrap();
        let e = root.dir(&root_path.join("link/inside")).unwrap_err();
        assert!(e.contains("link/inside"), "{e}");
        assert!(
            !base.join("inside").exists(),
            "no directory made through the link"
        );
        std::fs::remove_dir_all(&base).unwrap();
    }
}

//! The real system calls of AfterRestore: the random device's ioctls, `sethostname`, sysfs
//! (under a root that tests replace with a temporary tree) and the share's mount.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::{BindOutcome, Binding, RestoreSys, ENTROPY_MAX};

/// `RNDADDENTROPY`: `_IOW('R', 0x03, int[2])` (linux/random.h).
pub const RNDADDENTROPY: u32 = 0x4008_5203;
/// `RNDRESEEDCRNG`: `_IO('R', 0x07)` (linux/random.h).
pub const RNDRESEEDCRNG: u32 = 0x5207;

/// `struct rand_pool_info` with room for [`ENTROPY_MAX`] bytes: `entropy_count` (bits to
/// credit), `buf_size` (bytes), then the bytes.
#[repr(C)]
#[derive(Debug)]
pub struct RandPoolInfo {
    /// Bits credited to the input pool.
    pub entropy_count: libc::c_int,
    /// Bytes in `buf` that count.
    pub buf_size: libc::c_int,
    /// The bytes (the kernel's `__u32 buf[]`; it reads `buf_size` bytes).
    pub buf: [u32; ENTROPY_MAX / 4],
}

impl RandPoolInfo {
    /// `bytes` (at most [`ENTROPY_MAX`], else `None`), every bit credited.
    pub fn new(bytes: &[u8]) -> Option<Self> {
        if bytes.len() > ENTROPY_MAX {
            return None;
        }
        let mut buf = [0u32; ENTROPY_MAX / 4];
        for (i, chunk) in bytes.chunks(4).enumerate() {
            let mut w = [0u8; 4];
            w[..chunk.len()].copy_from_slice(chunk);
            buf[i] = u32::from_ne_bytes(w);
        }
        // ≤ 512 bytes: both fit an int.
        Some(Self {
            entropy_count: (bytes.len() * 8) as libc::c_int,
            buf_size: bytes.len() as libc::c_int,
            buf,
        })
    }
}

mod ioctl {
    use super::{RandPoolInfo, RNDADDENTROPY, RNDRESEEDCRNG};

    nix::ioctl_write_ptr_bad!(
        /// `ioctl(fd, RNDADDENTROPY, info)`.
        ///
        /// # Safety
        /// `fd` is open and `info` points to a live [`RandPoolInfo`].
        rnd_add_entropy,
        RNDADDENTROPY,
        RandPoolInfo
    );
    nix::ioctl_none_bad!(
        /// `ioctl(fd, RNDRESEEDCRNG)`.
        ///
        /// # Safety
        /// `fd` is open.
        rnd_reseed_crng,
        RNDRESEEDCRNG
    );
}
use ioctl::{rnd_add_entropy, rnd_reseed_crng};

/// The real calls; sysfs under `sys` (`/sys` in the guest).
#[derive(Debug, Clone)]
pub struct RealRestoreSys {
    /// Where sysfs is mounted.
    pub sys: PathBuf,
}

impl Default for RealRestoreSys {
    fn default() -> Self {
        Self {
            sys: PathBuf::from("/sys"),
        }
    }
}

impl RealRestoreSys {
    fn platform_devices(&self) -> PathBuf {
        self.sys.join("bus/platform/devices")
    }

    fn urandom() -> Result<std::fs::File, String> {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/urandom")
            .map_err(|e| format!("open /dev/urandom: {e}"))
    }
}

/// Whether `dir/name` exists as a link or file (a `driver` link), without following it.
fn has(dir: &Path, name: &str) -> bool {
    std::fs::symlink_metadata(dir.join(name)).is_ok()
}

/// A virtio device's directory name under its platform device: `virtio<N>`.
fn is_virtio_child(name: &str) -> bool {
    name.strip_prefix("virtio")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

impl RestoreSys for RealRestoreSys {
    fn set_clock(&self, sec: i64, usec: i64) -> Result<(), String> {
        crate::service::clock_settime_realtime(sec, usec).map_err(|e| e.to_string())
    }

    fn add_entropy(&self, bytes: &[u8]) -> Result<(), String> {
        let info = RandPoolInfo::new(bytes)
            .ok_or_else(|| format!("{} bytes, at most {ENTROPY_MAX}", bytes.len()))?;
        let f = Self::urandom()?;
        // SAFETY: `f` is an open descriptor of the random device for the whole call; `info`
        // is a live `struct rand_pool_info` whose `buf` holds `buf_size` (≤ its length)
        // bytes, which is all the kernel reads; it writes nothing back.
        unsafe { rnd_add_entropy(f.as_raw_fd(), &info) }
            .map(drop)
            .map_err(|e| e.desc().to_string())
    }

    fn reseed_crng(&self) -> Result<(), String> {
        let f = Self::urandom()?;
        // SAFETY: `f` is an open descriptor of the random device; RNDRESEEDCRNG takes no
        // argument and touches no user memory.
        unsafe { rnd_reseed_crng(f.as_raw_fd()) }
            .map(drop)
            .map_err(|e| e.desc().to_string())
    }

    fn set_hostname(&self, name: &str) -> Result<(), String> {
        nix::unistd::sethostname(name).map_err(|e| e.desc().to_string())
    }

    fn unbound_devices(&self) -> Result<Vec<String>, String> {
        let dir = self.platform_devices();
        let entries =
            std::fs::read_dir(&dir).map_err(|e| format!("read {}: {e}", dir.display()))?;
        let mut out = Vec::new();
        for e in entries {
            let e = e.map_err(|e| format!("read {}: {e}", dir.display()))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("virtio-mmio.") && !has(&e.path(), "driver") {
                out.push(name);
            }
        }
        Ok(out)
    }

    fn bind(&self, device: &str) -> Result<BindOutcome, String> {
        let bind = self.sys.join("bus/platform/drivers/virtio-mmio/bind");
        // One write(2) of the name: sysfs takes a store per write.
        match std::fs::write(&bind, device) {
            Ok(()) => Ok(BindOutcome::Attached),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(BindOutcome::Empty),
            // It got a driver since the scan: the wait checks it.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(BindOutcome::Attached),
            Err(e) => Err(format!("write {}: {e}", bind.display())),
        }
    }

    fn binding(&self, device: &str) -> Result<Binding, String> {
        let dev = self.platform_devices().join(device);
        if !has(&dev, "driver") {
            return Ok(Binding::Waiting("no driver bound".into()));
        }
        let entries =
            std::fs::read_dir(&dev).map_err(|e| format!("read {}: {e}", dev.display()))?;
        let mut children = 0;
        for e in entries {
            let e = e.map_err(|e| format!("read {}: {e}", dev.display()))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !is_virtio_child(&name) {
                continue;
            }
            children += 1;
            if !has(&e.path(), "driver") {
                let id = std::fs::read_to_string(e.path().join("device")).unwrap_or_default();
                return Ok(Binding::Waiting(format!(
                    "its virtio device {name} (device id {}) has no driver",
                    id.trim()
                )));
            }
        }
        if children == 0 {
            return Ok(Binding::Waiting("no virtio device registered".into()));
        }
        Ok(Binding::Ready)
    }

    fn mount_share(&self, tag: &str, dir: &Path) -> Result<(), String> {
        crate::share::mount_virtiofs(tag, dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::unnecessary_cast)] // nix's request-code macros cast what they build
    fn ioctl_numbers_are_the_kernels() {
        let int2 = std::mem::size_of::<[libc::c_int; 2]>();
        assert_eq!(
            nix::request_code_write!(b'R', 0x03, int2) as u64,
            RNDADDENTROPY as u64
        );
        assert_eq!(
            nix::request_code_none!(b'R', 0x07) as u64,
            RNDRESEEDCRNG as u64
        );
    }

    #[test]
    fn pool_info_credits_every_bit() {
        let bytes: Vec<u8> = (1..=37).collect();
        let p = RandPoolInfo::new(&bytes).unwrap();
        assert_eq!(p.entropy_count, 37 * 8);
        assert_eq!(p.buf_size, 37);
        // The bytes in order from the start of `buf` (the kernel reads them as bytes).
        let raw: Vec<u8> = p.buf.iter().flat_map(|w| w.to_ne_bytes()).collect();
        assert_eq!(&raw[..37], &bytes[..]);
        assert!(raw[37..].iter().all(|&b| b == 0));
        assert_eq!(RandPoolInfo::new(&[0; ENTROPY_MAX]).unwrap().buf_size, 512);
        assert!(RandPoolInfo::new(&[0; ENTROPY_MAX + 1]).is_none());
        // The header is the kernel's two ints, then the buffer.
        assert_eq!(std::mem::offset_of!(RandPoolInfo, buf), 8);
    }

    /// A sysfs tree: `virtio-mmio.N` devices, some with a driver, one with a virtio child.
    fn tree() -> (tempfile::TempDir, RealRestoreSys) {
        let t = tempfile::tempdir().unwrap();
        let devs = t.path().join("bus/platform/devices");
        let drv = t.path().join("bus/platform/drivers/virtio-mmio");
        std::fs::create_dir_all(&drv).unwrap();
        for d in [
            "virtio-mmio.0",
            "virtio-mmio.1",
            "virtio-mmio.2",
            "serial8250",
        ] {
            std::fs::create_dir_all(devs.join(d)).unwrap();
        }
        std::os::unix::fs::symlink(&drv, devs.join("virtio-mmio.0/driver")).unwrap();
        std::fs::write(drv.join("bind"), "").unwrap();
        let sys = RealRestoreSys {
            sys: t.path().to_path_buf(),
        };
        (t, sys)
    }

    #[test]
    fn unbound_devices_are_virtio_mmio_without_a_driver() {
        let (_t, sys) = tree();
        let mut d = sys.unbound_devices().unwrap();
        d.sort();
        assert_eq!(d, ["virtio-mmio.1", "virtio-mmio.2"]);
        let missing = RealRestoreSys {
            sys: PathBuf::from("/nonexistent-sysfs"),
        };
        let e = missing.unbound_devices().unwrap_err();
        assert!(e.contains("/nonexistent-sysfs/bus/platform/devices"), "{e}");
    }

    #[test]
    fn bind_writes_the_name_to_the_drivers_bind() {
        let (t, sys) = tree();
        assert_eq!(sys.bind("virtio-mmio.1").unwrap(), BindOutcome::Attached);
        let bind = t.path().join("bus/platform/drivers/virtio-mmio/bind");
        assert_eq!(std::fs::read_to_string(bind).unwrap(), "virtio-mmio.1");
        let no_driver = RealRestoreSys {
            sys: t.path().join("nothing"),
        };
        let e = no_driver.bind("virtio-mmio.1").unwrap_err();
        assert!(e.contains("virtio-mmio/bind"), "{e}");
    }

    #[test]
    fn binding_waits_for_the_platform_and_the_virtio_driver() {
        let (t, sys) = tree();
        let devs = t.path().join("bus/platform/devices");
        let w = |d| match sys.binding(d).unwrap() {
            Binding::Waiting(why) => why,
            Binding::Ready => "ready".into(),
        };
        assert_eq!(w("virtio-mmio.1"), "no driver bound");
        let dev = devs.join("virtio-mmio.1");
        std::os::unix::fs::symlink("/x", dev.join("driver")).unwrap();
        assert_eq!(w("virtio-mmio.1"), "no virtio device registered");
        std::fs::create_dir(dev.join("virtio3")).unwrap();
        std::fs::write(dev.join("virtio3/device"), "0x001a\n").unwrap();
        std::fs::create_dir(dev.join("virtio-other")).unwrap();
        assert_eq!(
            w("virtio-mmio.1"),
            "its virtio device virtio3 (device id 0x001a) has no driver"
        );
        std::os::unix::fs::symlink("/y", dev.join("virtio3/driver")).unwrap();
        assert_eq!(w("virtio-mmio.1"), "ready");
    }

    /// Needs root (CAP_SYS_ADMIN): the two ioctls on this host's random device. Adding 64
    /// bytes of getrandom output to the pool and reseeding changes nothing a user could see.
    #[test]
    #[ignore = "needs root: RNDADDENTROPY and RNDRESEEDCRNG need CAP_SYS_ADMIN"]
    fn entropy_ioctls_as_root() {
        let mut bytes = [0u8; 64];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
            .unwrap();
        let sys = RealRestoreSys::default();
        sys.add_entropy(&bytes).unwrap();
        sys.reseed_crng().unwrap();
    }

    /// Needs root: sethostname in a new UTS namespace of one thread (the host's is untouched).
    #[test]
    #[ignore = "needs root: a new UTS namespace"]
    fn hostname_in_a_new_uts_namespace() {
        let host = nix::unistd::gethostname().unwrap();
        let inside = std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUTS).unwrap();
            RealRestoreSys::default()
                .set_hostname("restored-pod.example")
                .unwrap();
            nix::unistd::gethostname().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(inside, "restored-pod.example");
        assert_eq!(nix::unistd::gethostname().unwrap(), host);
    }
}

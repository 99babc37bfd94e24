//! The tap device: the shim creates the pod's persistent tap, the VMM attaches to it. Both
//! open `/dev/net/tun` and issue TUNSETIFF with the same `struct ifreq`, here.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;

/// Longest interface name the kernel takes (`IFNAMSIZ` - 1).
pub const MAX_IFNAME_LEN: usize = 15;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca; // _IOW('T', 202, int)
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb; // _IOW('T', 203, int)
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;

/// `struct ifreq` as TUNSETIFF reads it: the name and the flags, padded to 40 bytes.
#[repr(C)]
struct IfReq {
    name: [u8; MAX_IFNAME_LEN + 1],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Opens `/dev/net/tun` (close-on-exec, non-blocking if asked) and attaches it to tap
/// `name` (no packet information header), creating the tap when it does not exist.
pub fn open_tap(name: &str, nonblocking: bool) -> Result<File, String> {
    if name.is_empty() || name.len() > MAX_IFNAME_LEN || name.contains('\0') {
        return Err(format!(
            "invalid tap name {name:?} (1-{MAX_IFNAME_LEN} bytes)"
        ));
    }
    let mut opts = OpenOptions::new();
    opts.read(true).write(true);
    if nonblocking {
        opts.custom_flags(libc::O_NONBLOCK);
    }
    let file = opts
        .open("/dev/net/tun")
        .map_err(|e| format!("cannot open /dev/net/tun (modprobe tun): {e}"))?;
    let mut req = IfReq {
        name: [0; MAX_IFNAME_LEN + 1],
        flags: IFF_TAP | IFF_NO_PI,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads and writes a `struct ifreq` (40 bytes on x86_64); `req` is a
    // live, properly sized, initialized repr(C) struct for the whole call, and the fd is ours.
    if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req) } < 0 {
        return Err(format!(
            "tap {name}: TUNSETIFF: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(file)
}

/// Makes the tap `file` is attached to (named `name`, for the error) outlive `file`.
pub fn set_persist(file: &File, name: &str) -> Result<(), String> {
    // SAFETY: TUNSETPERSIST takes its argument by value; no memory is passed.
    if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETPERSIST as _, 1 as libc::c_ulong) } != 0 {
        return Err(format!(
            "tap {name}: TUNSETPERSIST: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifreq_is_the_kernels_size() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
    }

    #[test]
    fn bad_names_are_refused_before_any_syscall() {
        for bad in ["", "0123456789abcdef", "a\0b"] {
            let e = open_tap(bad, false).unwrap_err();
            assert!(e.starts_with("invalid tap name"), "{bad:?}: {e}");
        }
    }
}

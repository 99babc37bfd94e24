//! The host side of virtio-net: the tap device and the `TapIo` trait tests fake.

use super::*;

/// The host side of the device: where frames go and come from.
pub trait TapIo: Send {
    /// Reads one frame (non-blocking: `WouldBlock` when there is none).
    fn read_frame(&mut self, buf: &mut [u8]) -> std::io::Result<usize>;
    /// Writes one frame (non-blocking: `WouldBlock` when the tap cannot take it now).
    fn write_frame(&mut self, frame: &[u8]) -> std::io::Result<usize>;
    /// The fd the event loop polls.
    fn raw_fd(&self) -> RawFd;
}

/// An open tap device (`/dev/net/tun` attached with `TUNSETIFF`).
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

const TUNSETIFF: libc::c_ulong = 0x4004_54ca; // _IOW('T', 202, int)
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;

/// `struct ifreq` as TUNSETIFF reads it: the name and the flags, padded to 40 bytes.
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

impl Tap {
    /// Opens `/dev/net/tun` and attaches to (or creates) tap `name`, non-blocking.
    pub fn open(name: &str) -> Result<Self, String> {
        let name = check_ifname(name)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|e| format!("cannot open /dev/net/tun (modprobe tun): {e}"))?;
        let mut req = IfReq {
            name: [0; 16],
            flags: IFF_TAP | IFF_NO_PI,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq` (40 bytes on x86_64); `req` is a
        // live, properly sized repr(C) struct for the whole call, and the fd is ours.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req) };
        if rc < 0 {
            return Err(format!(
                "tap {name}: TUNSETIFF: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(Tap { file, name })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl TapIo for Tap {
    fn read_frame(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.file.read(buf)
    }
    fn write_frame(&mut self, frame: &[u8]) -> std::io::Result<usize> {
        self.file.write(frame)
    }
    fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

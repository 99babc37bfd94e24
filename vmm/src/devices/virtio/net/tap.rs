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

/// An open tap device (`/dev/net/tun` attached with `TUNSETIFF`, [`kata_rs_netlink::tap`]).
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Opens `/dev/net/tun` and attaches to (or creates) tap `name`, non-blocking.
    pub fn open(name: &str) -> Result<Self, String> {
        let name = check_ifname(name)?;
        let file = kata_rs_netlink::tap::open_tap(&name, true)?;
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

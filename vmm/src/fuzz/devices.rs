//! The devices under test, each with a fuzzed host side (tap frames and errors, disk, sockets).

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::os::fd::RawFd;
use std::sync::Arc;

use kata_rs_fuzz::{arbitrary, Result, Unstructured};
use vm_memory::GuestMemoryMmap;

use crate::devices::virtio::block::{BlkDevice, Disk};
use crate::devices::virtio::console::ConsoleDevice;
use crate::devices::virtio::net::{NetDevice, TapIo};
use crate::devices::virtio::rng::RngDevice;
use crate::devices::virtio::vsock::HvsockDevice;
use crate::devices::virtio::{MmioTransport, VirtioDevice};

use super::*;

/// The host side of a fuzzed virtio-net: frames and errors from the input.
pub(super) struct FuzzTap {
    reads: VecDeque<std::result::Result<Vec<u8>, i32>>,
    writes: VecDeque<Option<i32>>,
}

pub(super) fn errno(e: i32) -> std::io::Error {
    match e {
        0 => ErrorKind::WouldBlock.into(),
        1 => ErrorKind::Interrupted.into(),
        _ => std::io::Error::from_raw_os_error(e),
    }
}

impl TapIo for FuzzTap {
    fn read_frame(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.reads.pop_front() {
            Some(Ok(f)) => {
                let n = f.len().min(buf.len());
                buf[..n].copy_from_slice(&f[..n]);
                Ok(n)
            }
            Some(Err(e)) => Err(errno(e)),
            None => Err(ErrorKind::WouldBlock.into()),
        }
    }
    fn write_frame(&mut self, frame: &[u8]) -> std::io::Result<usize> {
        match self.writes.pop_front() {
            Some(Some(e)) => Err(errno(e)),
            _ => Ok(frame.len()),
        }
    }
    fn raw_fd(&self) -> RawFd {
        -1
    }
}

pub(super) fn fuzz_tap(u: &mut Unstructured) -> Result<FuzzTap> {
    let errs = [0, 1, libc::EIO, libc::EBADFD, libc::EAGAIN];
    let mut reads = VecDeque::new();
    for _ in 0..u.int_in_range(0..=8)? {
        if u.ratio(1, 6)? {
            reads.push_back(Err(*u.choose(&errs)?));
        } else {
            let len = *u.choose(&[0usize, 1, 14, 60, 1514, 1515, 65_550, 70_000])?;
            let mut f = vec![0u8; len];
            u.fill_buffer(&mut f[..len.min(32)])?;
            reads.push_back(Ok(f));
        }
    }
    let mut writes = VecDeque::new();
    for _ in 0..u.int_in_range(0..=8)? {
        writes.push_back(if u.ratio(1, 3)? {
            Some(*u.choose(&errs)?)
        } else {
            None
        });
    }
    Ok(FuzzTap { reads, writes })
}

/// The device under test.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    Rng,
    Blk,
    Net,
    Console,
    Vsock,
    /// virtio-fs, a vhost-user frontend: its rings are the backend's (a scripted one here,
    /// which may hang up after any request), so it is in the MMIO target only.
    Fs,
    /// virtio-fs in bounce mode: the VMM serves the guest's rings and forwards the chains
    /// into its shadow rings (a backend that never uses them: requests wait in flight).
    FsBounce,
}

/// Builds device `kind` on `mem` (host sides from `u`) and runs `body` on its transport.
pub(super) fn with_device<R>(
    kind: Kind,
    u: &mut Unstructured,
    mem: &Arc<GuestMemoryMmap>,
    body: impl Fns<R>,
) -> Result<R> {
    let m = mem.clone();
    match kind {
        Kind::Rng => body.run(u, MmioTransport::new(RngDevice::new(m.clone()), m)),
        Kind::Blk => {
            let file = crate::devices::virtio::fs::ram_memfd(c"kata-fuzz-disk", 8 * 512).unwrap();
            let disk = Disk::from_file(file, u.arbitrary()?, "kata-fuzz-serial").unwrap();
            body.run(u, MmioTransport::new(BlkDevice::new(disk, m.clone()), m))
        }
        Kind::Net => {
            let tap = fuzz_tap(u)?;
            let dev = NetDevice::new(tap, [2, 0, 0, 0, 0, 1], m.clone());
            body.run(u, MmioTransport::new(dev, m))
        }
        Kind::Console => body.run(
            u,
            MmioTransport::new(ConsoleDevice::new(std::io::sink(), m.clone()), m),
        ),
        Kind::Vsock => {
            let dev = HvsockDevice::new(GUEST_CID, None, m.clone()).unwrap();
            body.run(u, MmioTransport::new(dev, m))
        }
        Kind::Fs | Kind::FsBounce => {
            use vhost::vhost_user::message::VhostUserProtocolFeatures as P;
            use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
            let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
            let proto = (P::MQ | P::REPLY_ACK).bits() & u.arbitrary::<u64>()?;
            // The chains target needs an activated device: the bounce mode's backend stays.
            let stop_after = match matches!(kind, Kind::Fs) && u.ratio(1, 4)? {
                true => u.int_in_range(0..=24)?,
                false => usize::MAX,
            };
            let (_, backend_thread) = crate::devices::virtio::fs::tests::fake_backend(
                theirs,
                crate::devices::virtio::fs::tests::FS_FEATURES,
                proto,
                stop_after,
            );
            let r =
                match crate::devices::virtio::fs::from_stream(ours, std::path::Path::new("fuzz")) {
                    Ok(backend) => {
                        let cfg = crate::devices::virtio::fs::parse_fs(
                            "socket=/fuzz,tag=kataShared,queue-size=256",
                        )
                        .unwrap();
                        let dev = if matches!(kind, Kind::FsBounce) {
                            crate::devices::virtio::fs::FsDevice::new_bounce(
                                &cfg,
                                backend,
                                m.clone(),
                            )
                            .unwrap()
                        } else {
                            let kicks = (0..2)
                                .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
                                .collect();
                            let call = EventFd::new(EFD_NONBLOCK).unwrap();
                            crate::devices::virtio::fs::FsDevice::new(
                                &cfg,
                                backend,
                                m.clone(),
                                kicks,
                                call,
                            )
                        };
                        body.run(u, MmioTransport::new(dev, m))
                    }
                    // The backend hung up during the handshake: no device (an error at startup).
                    Err(_) => Err(arbitrary::Error::IncorrectFormat),
                };
            // The frontend's socket is closed with the device: the backend thread ends.
            backend_thread.join().unwrap();
            r
        }
    }
}

/// A body generic over the device type (closures cannot be).
pub(super) trait Fns<R> {
    fn run<D: VirtioDevice>(self, u: &mut Unstructured, t: MmioTransport<D>) -> Result<R>;
}

pub(super) fn kind(u: &mut Unstructured) -> Result<Kind> {
    use Kind::*;
    Ok(*u.choose(&[Rng, Blk, Net, Console, Vsock, Fs, FsBounce])?)
}

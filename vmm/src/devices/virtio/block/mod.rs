//! virtio-blk (block device, id 2) backed by a host file, served by the VMM's main thread.
//!
//! One request queue. Each request is a descriptor chain: a device-readable 16-byte header
//! (`type`, reserved, `sector`), data descriptors, and a device-writable status byte last.
//! Supported: `IN` (read), `OUT` (write), `FLUSH` (`fdatasync`), `GET_ID` (20-byte serial);
//! anything else gets `UNSUPP`. Every request is checked before any I/O: data descriptors must
//! have the direction the type needs and lie inside guest RAM, the data length must be a
//! multiple of 512 and `sector * 512 + length` must fit the disk (checked arithmetic); writes
//! to a read-only disk fail with `IOERR`. A chain without a usable status byte is returned
//! with used length 0 and no I/O. Data moves through a 64 KiB bounce buffer with
//! `pread`/`pwrite`, so a request never makes the VMM allocate guest-sized buffers.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use virtio_queue::desc::split::Descriptor;
use virtio_queue::{DescriptorChain, Queue};
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryMmap, Permissions};

use crate::devices::virtio::{
    Pass, QueueConfig, VirtioDevice, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX,
    VIRTIO_RING_F_INDIRECT_DESC,
};

pub use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
/// Size of the request queue we offer.
pub const QUEUE_SIZE: u16 = 128;
/// Sector size of the virtio-blk protocol.
pub const SECTOR_SIZE: u64 = 512;
/// Most data segments per request we announce (`seg_max`): the ring minus header and status.
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Length of the `GET_ID` serial.
pub const ID_LEN: usize = virtio_bindings::virtio_blk::VIRTIO_BLK_ID_BYTES as usize;
/// Most disks on one VM (virtio-mmio slots and IRQs are limited).
pub const MAX_DISKS: usize = 8;
const CHUNK: usize = 64 * 1024;

use virtio_bindings::virtio_blk::{VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX};

/// Request types.
pub mod req {
    use virtio_bindings::virtio_blk as b;

    /// Read sectors into the guest.
    pub const IN: u32 = b::VIRTIO_BLK_T_IN;
    /// Write sectors from the guest.
    pub const OUT: u32 = b::VIRTIO_BLK_T_OUT;
    /// Flush the host file to stable storage.
    pub const FLUSH: u32 = b::VIRTIO_BLK_T_FLUSH;
    /// Return the device serial.
    pub const GET_ID: u32 = b::VIRTIO_BLK_T_GET_ID;
}

/// Request status bytes.
pub mod status {
    use virtio_bindings::virtio_blk as b;

    /// Success.
    pub const OK: u8 = b::VIRTIO_BLK_S_OK as u8;
    /// I/O error (also: bad request, out of range, write to a read-only disk).
    pub const IOERR: u8 = b::VIRTIO_BLK_S_IOERR as u8;
    /// Unsupported request type.
    pub const UNSUPP: u8 = b::VIRTIO_BLK_S_UNSUPP as u8;
}

/// One `--disk PATH[,ro]` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    /// Host file (or block device) backing the disk.
    pub path: PathBuf,
    /// The guest may not write (`VIRTIO_BLK_F_RO`, and writes fail with `IOERR`).
    pub read_only: bool,
}

/// Parses `PATH`, `PATH,ro` or `PATH,rw` (clap value parser of `--disk`).
pub fn parse_disk(s: &str) -> Result<DiskConfig, String> {
    let (path, read_only) = match s.rsplit_once(',') {
        Some((p, "ro")) => (p, true),
        Some((p, "rw")) => (p, false),
        Some((_, opt)) => return Err(format!("unknown disk option {opt:?} (expected ro or rw)")),
        None => (s, false),
    };
    if path.is_empty() {
        return Err("empty disk path".into());
    }
    Ok(DiskConfig {
        path: PathBuf::from(path),
        read_only,
    })
}

mod device;
mod request;

pub use device::*;
pub use request::*;

#[cfg(test)]
mod tests;

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

/// Counters of one disk (exit summary).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BlkStats {
    /// Requests (chains) served, bad ones included.
    pub requests: u64,
    /// Bytes read from the disk into the guest (`IN`).
    pub read_bytes: u64,
    /// Bytes written from the guest to the disk (`OUT`).
    pub write_bytes: u64,
    /// Requests that ended with a status other than `OK`, or without a usable status byte.
    pub errors: u64,
}

/// The host side of one disk.
pub struct Disk {
    file: File,
    sectors: u64,
    read_only: bool,
    id: [u8; ID_LEN],
    buf: Vec<u8>,
    /// Counters since the VMM started.
    pub stats: BlkStats,
}

impl Disk {
    /// Opens `cfg.path` (read-only when `cfg.read_only`); `serial` becomes the `GET_ID` answer.
    pub fn open(cfg: &DiskConfig, serial: &str) -> Result<Self, String> {
        let file = OpenOptions::new()
            .read(true)
            .write(!cfg.read_only)
            .open(&cfg.path)
            .map_err(|e| format!("cannot open disk {}: {e}", cfg.path.display()))?;
        Disk::from_file(file, cfg.read_only, serial)
            .map_err(|e| format!("disk {}: {e}", cfg.path.display()))
    }

    /// Wraps an open file; its size (rounded down to whole sectors) is the capacity.
    pub fn from_file(mut file: File, read_only: bool, serial: &str) -> std::io::Result<Self> {
        let size = file.seek(SeekFrom::End(0))?;
        let mut id = [0u8; ID_LEN];
        let n = serial.len().min(ID_LEN);
        id[..n].copy_from_slice(&serial.as_bytes()[..n]);
        Ok(Disk {
            file,
            sectors: size / SECTOR_SIZE,
            read_only,
            id,
            buf: vec![0; CHUNK],
            stats: BlkStats::default(),
        })
    }

    /// Capacity in 512-byte sectors.
    pub fn sectors(&self) -> u64 {
        self.sectors
    }

    /// Serves one chain; returns the used length (0 when the status byte is unusable).
    pub fn handle<M: GuestMemory>(&mut self, mem: &M, chain: DescriptorChain<&M>) -> u32 {
        self.stats.requests += 1;
        let descs: Vec<Descriptor> = chain.collect();
        let Some((last, rest)) = descs.split_last() else {
            self.stats.errors += 1;
            return 0;
        };
        // The status buffer, like every other buffer, must lie inside guest RAM.
        let status_in_ram = last.len() >= 1
            && mem.check_range(last.addr(), last.len() as usize, Permissions::Write);
        if rest.is_empty() || !last.is_write_only() || !status_in_ram {
            self.stats.errors += 1;
            return 0;
        }
        let (st, data_written) = match self.request(mem, &rest[0], &rest[1..]) {
            Ok(n) => (status::OK, n),
            Err(st) => (st, 0),
        };
        if st != status::OK {
            self.stats.errors += 1;
        }
        if mem.write_obj(st, last.addr()).is_err() {
            return 0;
        }
        data_written.saturating_add(1)
    }

    /// Runs one request; Ok(bytes written into guest memory) or Err(status).
    fn request<M: GuestMemory>(
        &mut self,
        mem: &M,
        header: &Descriptor,
        data: &[Descriptor],
    ) -> Result<u32, u8> {
        if header.is_write_only() || header.len() < 16 {
            return Err(status::IOERR);
        }
        let kind: u32 = mem.read_obj(header.addr()).map_err(|_| status::IOERR)?;
        let sector: u64 = header
            .addr()
            .0
            .checked_add(8)
            .and_then(|a| mem.read_obj(GuestAddress(a)).ok())
            .ok_or(status::IOERR)?;
        let kind = u32::from_le(kind);
        let sector = u64::from_le(sector);
        match kind {
            req::IN | req::OUT => {
                let write_guest = kind == req::IN;
                let len = check_data(mem, data, write_guest)?;
                if len % SECTOR_SIZE != 0 || !self.in_bounds(sector, len) {
                    return Err(status::IOERR);
                }
                if kind == req::OUT && self.read_only {
                    return Err(status::IOERR);
                }
                self.transfer(mem, data, sector * SECTOR_SIZE, write_guest)?;
                if write_guest {
                    self.stats.read_bytes += len;
                } else {
                    self.stats.write_bytes += len;
                }
                Ok(if write_guest { len as u32 } else { 0 })
            }
            req::FLUSH => {
                if !self.read_only {
                    self.file.sync_data().map_err(|_| status::IOERR)?;
                }
                Ok(0)
            }
            req::GET_ID => {
                check_data(mem, data, true)?;
                let mut id: &[u8] = &self.id;
                let mut written = 0;
                for d in data {
                    let n = id.len().min(d.len() as usize);
                    mem.write_slice(&id[..n], d.addr())
                        .map_err(|_| status::IOERR)?;
                    id = &id[n..];
                    written += n as u32;
                }
                Ok(written)
            }
            _ => Err(status::UNSUPP),
        }
    }

    fn in_bounds(&self, sector: u64, len: u64) -> bool {
        sector
            .checked_mul(SECTOR_SIZE)
            .and_then(|start| start.checked_add(len))
            .is_some_and(|end| end <= self.sectors * SECTOR_SIZE)
    }

    /// Copies between the file (from byte `pos`) and the data buffers, through the bounce
    /// buffer. `to_guest`: file -> guest (IN), else guest -> file (OUT).
    fn transfer<M: GuestMemory>(
        &mut self,
        mem: &M,
        data: &[Descriptor],
        mut pos: u64,
        to_guest: bool,
    ) -> Result<(), u8> {
        for d in data {
            let mut off: u64 = 0;
            while off < u64::from(d.len()) {
                let n = (u64::from(d.len()) - off).min(CHUNK as u64) as usize;
                let buf = &mut self.buf[..n];
                // check_data proved addr + len is inside guest memory.
                let at = GuestAddress(d.addr().0 + off);
                if to_guest {
                    self.file
                        .read_exact_at(buf, pos)
                        .map_err(|_| status::IOERR)?;
                    mem.write_slice(buf, at).map_err(|_| status::IOERR)?;
                } else {
                    mem.read_slice(buf, at).map_err(|_| status::IOERR)?;
                    self.file
                        .write_all_at(buf, pos)
                        .map_err(|_| status::IOERR)?;
                }
                off += n as u64;
                pos += n as u64;
            }
        }
        Ok(())
    }
}

/// Checks the data descriptors' direction and placement; returns their total length.
fn check_data<M: GuestMemory>(mem: &M, data: &[Descriptor], writable: bool) -> Result<u64, u8> {
    let mut total: u64 = 0;
    for d in data {
        if d.is_write_only() != writable {
            return Err(status::IOERR);
        }
        let perm = if writable {
            Permissions::Write
        } else {
            Permissions::Read
        };
        if d.len() > 0 && !mem.check_range(d.addr(), d.len() as usize, perm) {
            return Err(status::IOERR);
        }
        total += u64::from(d.len());
    }
    // The used length is a u32: keep every request below 4 GiB.
    if total > u64::from(u32::MAX - 1) {
        return Err(status::IOERR);
    }
    Ok(total)
}

/// Serves the available chains of `queue` (see [`crate::devices::virtio::serve_available`]).
pub fn process_requests<M: GuestMemory>(disk: &mut Disk, queue: &mut Queue, mem: &M) -> Pass {
    crate::devices::virtio::serve_available(queue, mem, |chain| disk.handle(mem, chain))
}

/// The virtio-blk device.
pub struct BlkDevice {
    mem: Arc<GuestMemoryMmap>,
    disk: Disk,
    queue: Option<Queue>,
    rekick: u32,
}

impl BlkDevice {
    /// A device for `disk` whose buffers live in `mem`.
    pub fn new(disk: Disk, mem: Arc<GuestMemoryMmap>) -> Self {
        BlkDevice {
            mem,
            disk,
            queue: None,
            rekick: 0,
        }
    }

    fn config(&self) -> [u8; 16] {
        let mut c = [0u8; 16];
        c[..8].copy_from_slice(&self.disk.sectors.to_le_bytes());
        // size_max (8..12) stays 0: not offered.
        c[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        c
    }
}

impl VirtioDevice for BlkDevice {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        let ro = if self.disk.read_only {
            1 << VIRTIO_BLK_F_RO
        } else {
            0
        };
        (1 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_RING_F_INDIRECT_DESC)
            | (1 << VIRTIO_BLK_F_SEG_MAX)
            | (1 << VIRTIO_BLK_F_FLUSH)
            | (1 << VIRTIO_RING_F_EVENT_IDX)
            | ro
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let cfg = self.config();
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(i))
                .and_then(|o| cfg.get(o).copied())
                .unwrap_or(0);
        }
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {
        // Nothing writable (no VIRTIO_BLK_F_CONFIG_WCE).
    }

    fn activate(&mut self, features: u64, queues: &[QueueConfig]) -> Result<(), String> {
        self.queue = Some(QueueConfig::build_single_queue(
            queues, &*self.mem, features,
        )?);
        Ok(())
    }

    fn reset(&mut self) {
        self.queue = None;
    }

    fn process_queue(&mut self, index: usize) -> bool {
        match (&mut self.queue, index) {
            (Some(q), 0) => {
                let pass = process_requests(&mut self.disk, q, &*self.mem);
                if pass.more {
                    self.rekick |= 1;
                }
                pass.interrupt
            }
            _ => false,
        }
    }

    fn rekick_queues(&mut self) -> u32 {
        std::mem::take(&mut self.rekick)
    }

    fn exit_report(&self) -> Option<String> {
        let s = &self.disk.stats;
        Some(format!(
            "virtio-blk: requests={} read_bytes={} write_bytes={} errors={}",
            s.requests, s.read_bytes, s.write_bytes, s.errors
        ))
    }
}

#[cfg(test)]
mod tests;

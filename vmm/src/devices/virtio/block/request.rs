//! virtio-blk request parsing and I/O: one chain (header, data, status) checked and served
//! against the host file.

use super::*;

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
    pub(super) sectors: u64,
    pub(super) read_only: bool,
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

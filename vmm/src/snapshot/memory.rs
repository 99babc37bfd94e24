//! Guest RAM in a snapshot: written to the snapshot's memory file region after region (each
//! at the file offset the state file records), pages of zeros left as holes (a sparse file);
//! on restore each region is mapped from that file copy-on-write (`MAP_PRIVATE`), so every VM
//! restored from one snapshot shares the page cache's copy of each page it has not written
//! ([`restore`]), or copied into memfds, data extents only ([`restore_copy`]: guest RAM a
//! vhost-user backend can map shared).

use std::fs::File;
use std::io::{self, Seek};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vm_memory::mmap::MmapRegion;
use vm_memory::{
    Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap,
};

use crate::layout;

/// The page size holes are made of.
pub const PAGE: usize = 4096;
/// How much guest RAM is copied out per step.
const CHUNK: usize = 1 << 20;

/// One guest RAM region in the memory file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryRegionState {
    /// Guest physical start.
    pub guest_addr: u64,
    /// Size in bytes.
    pub size: u64,
    /// Where it starts in the memory file.
    pub file_offset: u64,
    /// The region's data extents in the memory file as `(start, end)` file offsets (page
    /// aligned, in order, apart by at least [`MERGE_GAP`]), as [`save`] wrote them: a `map`
    /// restore maps these without looking for them (`SEEK_HOLE` on tmpfs walks every data
    /// page: 476 µs natively for 48 MiB of data, ~20 ms on the emulated node).
    pub data: Vec<(u64, u64)>,
}

/// Writes guest RAM into `file` (emptied first) and returns where each region went. Every
/// vCPU must be paused and no device thread may write guest RAM meanwhile.
pub fn save(mem: &GuestMemoryMmap, file: &File) -> io::Result<Vec<MemoryRegionState>> {
    file.set_len(0)?;
    let mut regions = Vec::new();
    let mut file_offset = 0u64;
    let mut buf = vec![0u8; CHUNK];
    for r in mem.iter() {
        let size = r.len();
        let mut done = 0u64;
        let mut data = Extents::default();
        while done < size {
            let n = (size - done).min(CHUNK as u64) as usize;
            mem.read_slice(&mut buf[..n], r.start_addr().unchecked_add(done))
                .map_err(|e| io::Error::other(format!("reading guest RAM: {e}")))?;
            for (i, page) in buf[..n].chunks(PAGE).enumerate() {
                if page.iter().any(|b| *b != 0) {
                    let at = file_offset + done + (i * PAGE) as u64;
                    file.write_all_at(page, at)?;
                    data.add(at, page.len() as u64);
                }
            }
            done += n as u64;
        }
        regions.push(MemoryRegionState {
            guest_addr: r.start_addr().0,
            size,
            file_offset,
            data: data.0,
        });
        file_offset += size;
    }
    // The holes at the end count too: the file is as long as guest RAM.
    file.set_len(file_offset)?;
    file.sync_all()?;
    Ok(regions)
}

/// Holes in the memory file shorter than this between two data extents are mapped from the
/// file with them (one mapping instead of two: fewer VMAs and `mmap` calls).
pub const MERGE_GAP: u64 = 256 << 10;

/// Data extents as [`save`] writes them: pages appended in file order, a hole shorter than
/// [`MERGE_GAP`] joined into the extents around it.
#[derive(Default)]
struct Extents(Vec<(u64, u64)>);

impl Extents {
    fn add(&mut self, at: u64, len: u64) {
        match self.0.last_mut() {
            Some(last) if at <= last.1 + MERGE_GAP => last.1 = last.1.max(at + len),
            _ => self.0.push((at, at + len)),
        }
    }
}

/// Checks a region's recorded data extents (from the state file: untrusted): each page
/// aligned, non-empty, inside the region, after the one before.
fn check_extents(r: &MemoryRegionState) -> Result<(), String> {
    let page = PAGE as u64;
    let end = r.file_offset + r.size;
    let mut prev = r.file_offset;
    for &(d, h) in &r.data {
        if d % page != 0 || h % page != 0 || d >= h || d < prev || h > end {
            return Err(format!(
                "memory region at {:#x}: data extent {d:#x}..{h:#x} is not a page-aligned \
                 range inside {:#x}..{end:#x} after the one before",
                r.guest_addr, r.file_offset
            ));
        }
        prev = h;
    }
    Ok(())
}

/// Guest RAM of a VM with `mem_bytes` of memory, mapped copy-on-write from `file` as
/// `regions` (from the state file: untrusted) says. Refused unless the regions are exactly
/// this configuration's RAM layout, laid out back to back from offset 0, and the file holds
/// all of them (a shorter file would make the guest's access past its end a SIGBUS).
///
/// Each region is anonymous private memory with the file's data extents (recorded in the
/// state file by [`save`], checked here) mapped over it `MAP_PRIVATE|MAP_FIXED`: the data
/// pages are the file's page cache, shared by every VM restored from it until one writes; the
/// holes (most of guest RAM) are anonymous. Mapping the holes from the file too would make each page a guest touches
/// there a page of the file first: on tmpfs an unreclaimable one, so the template's file
/// would grow towards all of guest RAM with every VM restored from it. Returns the memory and
/// the data extents mapped.
pub fn restore(
    file: &File,
    regions: &[MemoryRegionState],
    mem_bytes: u64,
) -> Result<(Arc<GuestMemoryMmap>, usize), String> {
    use std::os::fd::AsRawFd;
    check(file, regions, mem_bytes)?;
    for r in regions {
        check_extents(r)?;
    }
    let mut mapped = Vec::new();
    let mut extents = 0;
    for r in regions {
        let size = usize::try_from(r.size).map_err(|_| "memory region too large")?;
        let region = MmapRegion::<()>::build(
            None,
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_NORESERVE | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        )
        .map_err(|e| format!("mapping guest RAM at {:#x}: {e}", r.guest_addr))?;
        let start = r.file_offset;
        for &(data, hole) in &r.data {
            let at = (data - start) as usize;
            // SAFETY: [at, at + len) lies inside `region`'s own mapping (check_extents keeps
            // extents within [start, start + size), page aligned), which MAP_FIXED replaces
            // with a private mapping of the file; `region` owns and later unmaps the whole
            // range.
            let p = unsafe {
                libc::mmap(
                    region.as_ptr().add(at).cast(),
                    (hole - data) as usize,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_FIXED | libc::MAP_NORESERVE,
                    file.as_raw_fd(),
                    libc::off_t::try_from(data).map_err(|_| "memory file offset too large")?,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(format!(
                    "mapping the memory file at {data:#x} into guest RAM: {}",
                    io::Error::last_os_error()
                ));
            }
            extents += 1;
        }
        mapped.push(
            GuestRegionMmap::new(region, GuestAddress(r.guest_addr))
                .ok_or_else(|| format!("memory region at {:#x} overflows", r.guest_addr))?,
        );
    }
    GuestMemoryMmap::from_regions(mapped)
        .map(|m| (Arc::new(m), extents))
        .map_err(|e| format!("guest RAM: {e}"))
}

/// The data extents of `file` in `[start, end)` (page aligned; `start` and `end` are) as
/// `(data, hole)` offsets, holes shorter than `merge` joined into their neighbours.
fn data_extents(file: &File, start: u64, end: u64, merge: u64) -> Result<Vec<(u64, u64)>, String> {
    let page = PAGE as u64;
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut pos = start;
    while pos < end {
        let Some(data) = seek(file, pos, libc::SEEK_DATA)? else {
            break;
        };
        if data >= end {
            break;
        }
        let hole = seek(file, data, libc::SEEK_HOLE)?.unwrap_or(end).min(end);
        let (d, h) = (data / page * page, hole.div_ceil(page) * page);
        let h = h.min(end);
        match out.last_mut() {
            Some(last) if d <= last.1 + merge => last.1 = last.1.max(h),
            _ => out.push((d, h)),
        }
        pos = hole.max(data + 1);
    }
    Ok(out)
}

/// Guest RAM of a VM with `mem_bytes` of memory in new memfds (shared mappings, as at a cold
/// boot with virtio-fs), into which the data extents of `file` (`SEEK_DATA`/`SEEK_HOLE`) are
/// copied; holes stay unallocated zero pages. The same checks as [`restore`]. Returns the
/// memory and the bytes copied.
///
/// The copy goes file to memfd in the kernel (`sendfile`), not through the mapping: a read
/// into mapped guest RAM takes a page fault per 4 KiB page, which is most of the time of a
/// restore on a slow (emulated) host, and about half of it on a fast one.
pub fn restore_copy(
    file: &File,
    regions: &[MemoryRegionState],
    mem_bytes: u64,
) -> Result<(Arc<GuestMemoryMmap>, u64), String> {
    check(file, regions, mem_bytes)?;
    let mem = crate::devices::virtio::fs::shared_guest_memory(&layout::ram_ranges(mem_bytes))
        .map_err(|e| format!("{e:#}"))?;
    let mut copied = 0u64;
    for r in regions {
        let target = mem
            .find_region(GuestAddress(r.guest_addr))
            .and_then(|g| g.file_offset())
            .ok_or_else(|| format!("no memfd for guest RAM at {:#x}", r.guest_addr))?;
        let start = r.file_offset;
        for (data, hole) in data_extents(file, start, start + r.size, 0)? {
            let to = target.start() + (data - start);
            copy_extent(file, data, target.file(), to, hole - data)
                .map_err(|e| format!("copying the memory file at {data:#x} into guest RAM: {e}"))?;
            copied += hole - data;
        }
    }
    Ok((Arc::new(mem), copied))
}

/// Copies `len` bytes of `src` at `from` into `dst` at `to`, in the kernel (`sendfile`, which
/// writes at `dst`'s file position: the memfds are this process's own until the restore is
/// done). A source that ends early is an error, not a short copy.
fn copy_extent(src: &File, from: u64, dst: &File, to: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut dst_pos = dst;
    dst_pos.seek(io::SeekFrom::Start(to))?;
    let mut off = libc::off_t::try_from(from).map_err(io::Error::other)?;
    let mut left = len;
    while left > 0 {
        let n = usize::try_from(left.min(1 << 30)).map_err(io::Error::other)?;
        // SAFETY: both fds are open files owned by the caller; `off` is a valid off_t the
        // kernel reads and advances, nothing else is written.
        let r = unsafe { libc::sendfile(dst.as_raw_fd(), src.as_raw_fd(), &mut off, n) };
        match r {
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the file ends {left} bytes early"),
                ))
            }
            r if r > 0 => left -= r as u64,
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

/// `lseek(fd, pos, whence)` for `SEEK_DATA`/`SEEK_HOLE`; None at `ENXIO` (no data after `pos`).
fn seek(file: &File, pos: u64, whence: libc::c_int) -> Result<Option<u64>, String> {
    use std::os::fd::AsRawFd;
    let off = libc::off_t::try_from(pos).map_err(|_| "memory file offset too large")?;
    // SAFETY: lseek on a valid fd has no memory effects.
    let r = unsafe { libc::lseek(file.as_raw_fd(), off, whence) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENXIO) {
            return Ok(None);
        }
        return Err(format!("memory file: lseek: {e}"));
    }
    Ok(Some(r as u64))
}

/// The checks [`restore`] and [`restore_copy`] make: the regions are this configuration's RAM
/// layout, back to back from offset 0, and the file holds all of them.
fn check(file: &File, regions: &[MemoryRegionState], mem_bytes: u64) -> Result<(), String> {
    let expected = layout::ram_ranges(mem_bytes);
    let shown = |v: &[(u64, u64)]| {
        v.iter()
            .map(|(a, s)| format!("{s:#x}@{a:#x}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let want: Vec<(u64, u64)> = expected.iter().map(|(a, s)| (a.0, *s as u64)).collect();
    let have: Vec<(u64, u64)> = regions.iter().map(|r| (r.guest_addr, r.size)).collect();
    if want != have {
        return Err(format!(
            "the snapshot's guest RAM regions are {}, this configuration's {}",
            shown(&have),
            shown(&want)
        ));
    }
    let mut next = 0u64;
    for r in regions {
        if r.file_offset != next {
            return Err(format!(
                "memory region at {:#x}: file offset {:#x}, expected {next:#x}",
                r.guest_addr, r.file_offset
            ));
        }
        next = next
            .checked_add(r.size)
            .ok_or("memory file offsets overflow")?;
    }
    let len = file
        .metadata()
        .map_err(|e| format!("memory file: {e}"))?
        .len();
    if len != next {
        return Err(format!(
            "memory file is {len} bytes, the snapshot's guest RAM {next}: truncated or not \
             this snapshot's"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod copy_tests {
    use super::*;
    use std::io::Read;

    fn temp() -> File {
        vmm_sys_util::tempfile::TempFile::new().unwrap().into_file()
    }

    fn file_with(bytes: &[u8]) -> File {
        let mut f = temp();
        std::io::Write::write_all(&mut f, bytes).unwrap();
        f
    }

    #[test]
    fn an_extent_lands_at_its_offset_in_the_target() {
        let src = file_with(b"0123456789abcdef");
        let dst = temp();
        dst.set_len(32).unwrap();
        copy_extent(&src, 4, &dst, 20, 8).unwrap();
        let mut got = Vec::new();
        (&dst).seek(io::SeekFrom::Start(0)).unwrap();
        (&dst).read_to_end(&mut got).unwrap();
        let mut want = vec![0u8; 32];
        want[20..28].copy_from_slice(b"456789ab");
        assert_eq!(got, want);
    }

    #[test]
    fn a_source_that_ends_early_is_an_error() {
        let src = file_with(b"short");
        let dst = temp();
        let e = copy_extent(&src, 2, &dst, 0, 100).unwrap_err();
        assert!(e.to_string().contains("97 bytes early"), "{e}");
    }
}

#[cfg(test)]
mod extent_tests {
    use super::*;

    /// Pages closer than MERGE_GAP join one extent; farther ones start a new one.
    #[test]
    fn extents_merge_short_holes() {
        let mut e = Extents::default();
        let p = PAGE as u64;
        e.add(p, p);
        e.add(3 * p, p);
        // A hole of exactly MERGE_GAP still joins; one page more does not.
        e.add(4 * p + MERGE_GAP, p);
        e.add(6 * p + 2 * MERGE_GAP, p);
        assert_eq!(
            e.0,
            [
                (p, 5 * p + MERGE_GAP),
                (6 * p + 2 * MERGE_GAP, 7 * p + 2 * MERGE_GAP)
            ]
        );
    }
}

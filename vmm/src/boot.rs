//! Direct kernel boot: kernel and initrd loading, `hvm_start_info` or `boot_params`, command
//! line and GDT.
//!
//! The kernel's format is told by its first bytes: an ELF `vmlinux` boots through PVH, a
//! bzImage through the Linux 32-bit boot protocol. Both enter the kernel in 32-bit protected
//! mode with paging off and flat segments:
//! - PVH (<https://xenbits.xen.org/docs/unstable/misc/pvh.html>): `eip` = the ELF note's entry,
//!   `ebx` = an `hvm_start_info` carrying the command line, the memory map and the modules
//!   (the first module is the initramfs);
//! - Linux 32-bit (`Documentation/arch/x86/boot.rst`): the protected-mode part of the bzImage
//!   is loaded at its `code32_start` (1 MiB), `eip` = that address, `esi` = `boot_params` (the
//!   image's setup header + command line pointer, initramfs, e820 map); the decompressor in
//!   it unpacks the kernel.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::bzimage::BzImage;
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::KernelLoader;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::layout::{
    self, MemmapEntry, CMDLINE_ADDR, CMDLINE_MAX_SIZE, GDT_ADDR, HIMEM_START, IDT_ADDR,
    PVH_INFO_ADDR, ZERO_PAGE_ADDR,
};

pub mod pvh;

/// The bzImage setup header magic "HdrS" at file offset 0x202.
pub const BZIMAGE_MAGIC: &[u8; 4] = b"HdrS";
/// Oldest Linux boot protocol we load: 2.10 has `init_size` and `pref_address`, which the
/// initrd placement needs (Linux 2.6.31 and later).
pub const MIN_BOOT_PROTOCOL: u16 = 0x020a;
/// `loadflags` bit KEEP_SEGMENTS: the 32-bit entry must not reload the segment registers
/// with `__BOOT_DS` (kernels before 5.x do so unless this is set; our GDT has the flat data
/// segment at 0x10, not 0x18).
const KEEP_SEGMENTS: u8 = 0x40;
/// `type_of_loader` "undefined" (no assigned boot loader id).
const LOADER_UNDEFINED: u8 = 0xff;

/// What the kernel file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// ELF `vmlinux`, booted through its PVH entry note.
    Elf,
    /// bzImage (`HdrS` setup header), booted through the Linux 32-bit boot protocol.
    BzImage,
}

/// How the boot vCPU enters the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// PVH: `ebx` = `hvm_start_info`.
    Pvh,
    /// Linux 32-bit boot protocol: `esi` = `boot_params`.
    Linux32,
}

/// Tells the kernel format from the file's first bytes.
pub fn kernel_format(head: &[u8]) -> Option<KernelFormat> {
    if head.starts_with(b"\x7fELF") {
        Some(KernelFormat::Elf)
    } else if head.get(0x202..0x206) == Some(BZIMAGE_MAGIC.as_slice()) {
        Some(KernelFormat::BzImage)
    } else {
        None
    }
}

/// Boot failures; each names the file or the limit that is the problem.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The kernel file cannot be opened.
    #[error("cannot open kernel {0}: {1}")]
    KernelOpen(PathBuf, std::io::Error),
    /// The kernel is not a loadable ELF image.
    #[error("kernel {0} is not a valid ELF vmlinux ({1}); an uncompressed vmlinux built with CONFIG_PVH is needed")]
    KernelElf(PathBuf, linux_loader::loader::Error),
    /// The kernel is neither an ELF nor a bzImage.
    #[error("kernel {0} is neither an ELF vmlinux nor a bzImage (no ELF magic, no \"HdrS\" setup header)")]
    KernelFormat(PathBuf),
    /// The kernel file cannot be read.
    #[error("cannot read kernel {0}: {1}")]
    KernelRead(PathBuf, std::io::Error),
    /// The bzImage cannot be loaded.
    #[error("kernel {0} is not a valid bzImage ({1})")]
    BzImage(PathBuf, String),
    /// The kernel has no PVH entry note.
    #[error(
        "kernel {0} has no PVH entry point (XEN_ELFNOTE_PHYS32_ENTRY); build it with CONFIG_PVH=y"
    )]
    NoPvh(PathBuf),
    /// An initrd cannot be opened or read.
    #[error("cannot read initrd {0}: {1}")]
    Initrd(PathBuf, std::io::Error),
    /// The initrds do not fit in guest memory.
    #[error("initrds ({size} bytes) do not fit in guest memory between the kernel end {kernel_end:#x} and {low_end:#x}; raise --mem-mib")]
    InitrdTooBig {
        /// Padded total size.
        size: u64,
        /// End of the loaded kernel.
        kernel_end: u64,
        /// End of low RAM.
        low_end: u64,
    },
    /// The command line is too long.
    #[error("kernel command line too long ({0} bytes)")]
    CmdlineTooLong(usize),
    /// Too many memory map entries.
    #[error("too many memory map entries ({0})")]
    Memmap(usize),
    /// linux-loader's PVH boot configurator refused or failed to write the boot configuration.
    #[error("writing the PVH boot configuration into guest memory: {}", configurator_detail(.0))]
    Pvh(linux_loader::configurator::Error),
    /// A guest memory write failed.
    #[error("writing {0} into guest memory: {1}")]
    Memory(&'static str, vm_memory::GuestMemoryError),
}

/// The configurator error with the detail its `source` has (its own text says only which
/// protocol failed).
fn configurator_detail(e: &linux_loader::configurator::Error) -> String {
    match std::error::Error::source(e) {
        Some(detail) => detail.to_string(),
        None => e.to_string(),
    }
}

/// Where the loaded pieces ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootInfo {
    /// How the boot vCPU enters the kernel.
    pub protocol: Protocol,
    /// 32-bit entry point (PVH note, or the bzImage's `code32_start`).
    pub entry: GuestAddress,
    /// Guest physical address of `hvm_start_info` (PVH, goes into `rbx`) or of `boot_params`
    /// (Linux 32-bit, goes into `rsi`).
    pub start_info: GuestAddress,
    /// Where the concatenated initrds start.
    pub initrd_addr: GuestAddress,
    /// Their total (padded) size.
    pub initrd_size: u64,
}

/// Rounds `v` up to a multiple of 4 (each initrd is padded to 4 bytes).
pub fn pad4(v: u64) -> u64 {
    (v + 3) & !3
}

/// Encodes a GDT descriptor from (flags, base, limit) the way the x86 manual lays it out.
pub fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let base = u64::from(base);
    let limit = u64::from(limit);
    let flags = u64::from(flags);
    ((base & 0xff00_0000) << (56 - 24))
        | ((flags & 0x0000_f0ff) << 40)
        | ((limit & 0x000f_0000) << (48 - 16))
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0x0000_ffff)
}

/// The boot GDT: null, flat 32-bit code (selector 0x08), flat data (0x10), TSS (0x18).
pub const fn gdt_flags() -> [(u16, u32, u32); 4] {
    [
        (0, 0, 0),
        (0xc09b, 0, 0xfffff),
        (0xc093, 0, 0xfffff),
        (0x808b, 0, 0xfffff),
    ]
}

/// The GDT as written into guest memory.
pub fn gdt_table() -> [u64; 4] {
    let f = gdt_flags();
    [
        gdt_entry(f[0].0, f[0].1, f[0].2),
        gdt_entry(f[1].0, f[1].1, f[1].2),
        gdt_entry(f[2].0, f[2].1, f[2].2),
        gdt_entry(f[3].0, f[3].1, f[3].2),
    ]
}

/// Where the initrds go: page aligned, as high as possible below `low_end`, above the kernel.
pub fn place_initrd(kernel_end: u64, low_end: u64, size: u64) -> Result<u64, BootError> {
    let too_big = || BootError::InitrdTooBig {
        size,
        kernel_end,
        low_end,
    };
    let addr = low_end.checked_sub(size).ok_or_else(too_big)? & !0xfff;
    if addr < kernel_end || addr < HIMEM_START {
        return Err(too_big());
    }
    Ok(addr)
}

/// A kernel in guest memory.
struct LoadedKernel {
    protocol: Protocol,
    entry: GuestAddress,
    /// First byte above everything the kernel occupies while booting (for a bzImage: the
    /// buffer its decompressor unpacks into).
    end: u64,
    /// The bzImage's setup header, already patched with where it was loaded.
    hdr: Option<setup_header>,
}

/// Loads the kernel (ELF with a PVH entry, or bzImage) into guest memory.
fn load_kernel(mem: &GuestMemoryMmap, path: &Path) -> Result<LoadedKernel, BootError> {
    let mut f = File::open(path).map_err(|e| BootError::KernelOpen(path.into(), e))?;
    let mut head = Vec::with_capacity(0x210);
    (&mut f)
        .take(0x210)
        .read_to_end(&mut head)
        .and_then(|_| f.seek(SeekFrom::Start(0)))
        .map_err(|e| BootError::KernelRead(path.into(), e))?;
    match kernel_format(&head).ok_or_else(|| BootError::KernelFormat(path.into()))? {
        KernelFormat::Elf => {
            let res = Elf::load(mem, None, &mut f, Some(GuestAddress(HIMEM_START)))
                .map_err(|e| BootError::KernelElf(path.into(), e))?;
            match res.pvh_boot_cap {
                PvhBootCapability::PvhEntryPresent(entry) => Ok(LoadedKernel {
                    protocol: Protocol::Pvh,
                    entry,
                    end: res.kernel_end,
                    hdr: None,
                }),
                _ => Err(BootError::NoPvh(path.into())),
            }
        }
        KernelFormat::BzImage => load_bzimage(mem, path, &mut f),
    }
}

/// Loads a bzImage's protected-mode code at its `code32_start` and works out how much memory
/// its decompressor uses.
fn load_bzimage(
    mem: &GuestMemoryMmap,
    path: &Path,
    f: &mut File,
) -> Result<LoadedKernel, BootError> {
    let bad = |why: String| BootError::BzImage(path.into(), why);
    let res = BzImage::load(mem, None, f, Some(GuestAddress(HIMEM_START)))
        .map_err(|e| bad(e.to_string()))?;
    let hdr = res
        .setup_header
        .ok_or_else(|| bad("no setup header".into()))?;
    let version = hdr.version;
    if version < MIN_BOOT_PROTOCOL {
        return Err(bad(format!(
            "boot protocol {}.{:02} is too old, 2.10 or newer is needed",
            version >> 8,
            version & 0xff
        )));
    }
    let end = bzimage_end(&hdr, res.kernel_load.0, res.kernel_end)
        .ok_or_else(|| bad("setup header sizes overflow".into()))?;
    Ok(LoadedKernel {
        protocol: Protocol::Linux32,
        entry: res.kernel_load,
        end,
        hdr: Some(hdr),
    })
}

/// The end of a bzImage's boot footprint: the decompressor unpacks into `init_size` bytes
/// from the load address rounded up to `kernel_alignment`, but not below `pref_address`
/// (`LOAD_PHYSICAL_ADDR`), and keeps the compressed image inside that buffer.
pub fn bzimage_end(hdr: &setup_header, load: u64, loaded_end: u64) -> Option<u64> {
    let align = u64::from(hdr.kernel_alignment).max(1);
    let init_size = u64::from(hdr.init_size);
    let pref = hdr.pref_address;
    let start = load.checked_next_multiple_of(align)?.max(pref);
    Some(start.checked_add(init_size)?.max(loaded_end))
}

/// The Linux `boot_params` of a bzImage boot: its setup header with our loader id, the command
/// line, the initramfs and the e820 map.
pub fn boot_params_for(
    hdr: &setup_header,
    initrd: (u64, u64),
    map: &[MemmapEntry],
) -> Result<boot_params, BootError> {
    let mut p = boot_params {
        hdr: *hdr,
        ..Default::default()
    };
    p.hdr.type_of_loader = LOADER_UNDEFINED;
    p.hdr.loadflags |= KEEP_SEGMENTS;
    p.hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
    // The initrds sit below 3 GiB (and below initrd_addr_max, see `load`).
    p.hdr.ramdisk_image = initrd.0 as u32;
    p.hdr.ramdisk_size = initrd.1 as u32;
    if map.len() > p.e820_table.len() {
        return Err(BootError::Memmap(map.len()));
    }
    for (slot, e) in p.e820_table.iter_mut().zip(map) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.kind,
        };
    }
    p.e820_entries = map.len() as u8;
    Ok(p)
}

/// Loads everything the guest needs to boot into `mem` and returns where the pieces are.
pub fn load(
    mem: &GuestMemoryMmap,
    kernel: &Path,
    initrds: &[PathBuf],
    cmdline: &str,
) -> Result<BootInfo, BootError> {
    // Check the initrds before the (big) kernel load so a missing file fails fast.
    let mut sizes = Vec::with_capacity(initrds.len());
    for p in initrds {
        let md = std::fs::metadata(p).map_err(|e| BootError::Initrd(p.clone(), e))?;
        if !md.is_file() {
            return Err(BootError::Initrd(
                p.clone(),
                std::io::Error::other("not a regular file"),
            ));
        }
        sizes.push(md.len());
    }
    let k = load_kernel(mem, kernel)?;

    // Initrds: concatenated at the top of low RAM, each padded to 4 bytes (for a bzImage
    // also below the header's initrd_addr_max).
    let total: u64 = sizes.iter().map(|s| pad4(*s)).sum();
    let mut low_end = mem
        .iter()
        .map(|r| vm_memory::GuestMemoryRegion::last_addr(r).raw_value() + 1)
        .filter(|end| *end <= layout::MMIO_HOLE_START)
        .max()
        .unwrap_or(0);
    if let Some(h) = &k.hdr {
        low_end = low_end.min(u64::from(h.initrd_addr_max) + 1);
    }
    let initrd_addr = place_initrd(k.end, low_end, total)?;
    let mut at = initrd_addr;
    for (p, size) in initrds.iter().zip(&sizes) {
        let mut f = File::open(p).map_err(|e| BootError::Initrd(p.clone(), e))?;
        let mut buf = Vec::with_capacity(*size as usize);
        f.read_to_end(&mut buf)
            .map_err(|e| BootError::Initrd(p.clone(), e))?;
        if buf.len() as u64 != *size {
            return Err(BootError::Initrd(
                p.clone(),
                std::io::Error::other("file size changed while reading"),
            ));
        }
        buf.resize(pad4(*size) as usize, 0);
        mem.write_slice(&buf, GuestAddress(at))
            .map_err(|e| BootError::Memory("initrd", e))?;
        at += buf.len() as u64;
    }

    // Command line.
    let max = match &k.hdr {
        Some(h) => (h.cmdline_size as usize).min(CMDLINE_MAX_SIZE - 1),
        None => CMDLINE_MAX_SIZE - 1,
    };
    if cmdline.len() > max {
        return Err(BootError::CmdlineTooLong(cmdline.len()));
    }
    let mut c = cmdline.as_bytes().to_vec();
    c.push(0);
    mem.write_slice(&c, GuestAddress(CMDLINE_ADDR))
        .map_err(|e| BootError::Memory("command line", e))?;

    // hvm_start_info, module list, memory map (written for a bzImage boot too: unused there),
    // and a bzImage's boot_params.
    let ranges: Vec<_> = mem
        .iter()
        .map(|r| {
            (
                vm_memory::GuestMemoryRegion::start_addr(r),
                vm_memory::GuestMemoryRegion::len(r) as usize,
            )
        })
        .collect();
    let map = layout::memmap(&ranges);
    pvh::write(mem, (initrd_addr, total), &map)?;
    if let Some(h) = &k.hdr {
        let p = boot_params_for(h, (initrd_addr, total), &map)?;
        mem.write_obj(p, GuestAddress(ZERO_PAGE_ADDR))
            .map_err(|e| BootError::Memory("boot_params", e))?;
    }

    // GDT and an empty IDT.
    for (i, e) in gdt_table().iter().enumerate() {
        mem.write_obj(*e, GuestAddress(GDT_ADDR + 8 * i as u64))
            .map_err(|e| BootError::Memory("GDT", e))?;
    }
    mem.write_obj(0u64, GuestAddress(IDT_ADDR))
        .map_err(|e| BootError::Memory("IDT", e))?;

    Ok(BootInfo {
        protocol: k.protocol,
        entry: k.entry,
        start_info: GuestAddress(match k.protocol {
            Protocol::Pvh => PVH_INFO_ADDR,
            Protocol::Linux32 => ZERO_PAGE_ADDR,
        }),
        initrd_addr: GuestAddress(initrd_addr),
        initrd_size: total,
    })
}

#[cfg(test)]
mod tests;

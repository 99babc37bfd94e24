//! PVH direct boot: kernel and initrd loading, `hvm_start_info`, command line and GDT.
//!
//! The PVH boot protocol (<https://xenbits.xen.org/docs/unstable/misc/pvh.html>) enters the
//! kernel in 32-bit protected mode with paging off, flat segments and `ebx` pointing at an
//! `hvm_start_info` structure that carries the command line, the memory map and the modules
//! (the first module is the initramfs).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::KernelLoader;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::layout::{
    self, MemmapEntry, CMDLINE_ADDR, CMDLINE_MAX_SIZE, GDT_ADDR, HIMEM_START, IDT_ADDR,
    PVH_INFO_ADDR, PVH_MEMMAP_ADDR, PVH_MEMMAP_MAX_ENTRIES, PVH_MODLIST_ADDR,
};

/// `XEN_HVM_START_MAGIC_VALUE`.
pub const PVH_MAGIC: u32 = 0x336e_c578;
/// Size of `hvm_start_info` (version 1).
pub const START_INFO_SIZE: usize = 56;
/// Size of one `hvm_modlist_entry`.
pub const MODLIST_ENTRY_SIZE: usize = 32;
/// Size of one `hvm_memmap_table_entry`.
pub const MEMMAP_ENTRY_SIZE: usize = 24;

/// Boot failures; each names the file or the limit that is the problem.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The kernel file cannot be opened.
    #[error("cannot open kernel {0}: {1}")]
    KernelOpen(PathBuf, std::io::Error),
    /// The kernel is not a loadable ELF image.
    #[error("kernel {0} is not a valid ELF vmlinux ({1}); an uncompressed vmlinux built with CONFIG_PVH is needed")]
    KernelElf(PathBuf, linux_loader::loader::Error),
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
    /// A guest memory write failed.
    #[error("writing {0} into guest memory: {1}")]
    Memory(&'static str, vm_memory::GuestMemoryError),
}

/// Where the loaded pieces ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootInfo {
    /// PVH 32-bit entry point.
    pub entry: GuestAddress,
    /// Guest physical address of `hvm_start_info` (goes into `rbx`).
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

/// Serializes `hvm_start_info` (version 1).
pub fn start_info_bytes(
    cmdline_addr: u64,
    modlist_addr: u64,
    nr_modules: u32,
    memmap_addr: u64,
    memmap_entries: u32,
) -> [u8; START_INFO_SIZE] {
    let mut b = [0u8; START_INFO_SIZE];
    b[0..4].copy_from_slice(&PVH_MAGIC.to_le_bytes());
    b[4..8].copy_from_slice(&1u32.to_le_bytes()); // version 1: has the memmap fields
                                                  // 8..12 flags = 0
    b[12..16].copy_from_slice(&nr_modules.to_le_bytes());
    b[16..24].copy_from_slice(&modlist_addr.to_le_bytes());
    b[24..32].copy_from_slice(&cmdline_addr.to_le_bytes());
    // 32..40 rsdp_paddr = 0: no ACPI
    b[40..48].copy_from_slice(&memmap_addr.to_le_bytes());
    b[48..52].copy_from_slice(&memmap_entries.to_le_bytes());
    // 52..56 reserved
    b
}

/// Serializes one `hvm_modlist_entry` (no per-module command line).
pub fn modlist_entry_bytes(paddr: u64, size: u64) -> [u8; MODLIST_ENTRY_SIZE] {
    let mut b = [0u8; MODLIST_ENTRY_SIZE];
    b[0..8].copy_from_slice(&paddr.to_le_bytes());
    b[8..16].copy_from_slice(&size.to_le_bytes());
    b
}

/// Serializes the memory map table.
pub fn memmap_bytes(map: &[MemmapEntry]) -> Vec<u8> {
    let mut v = Vec::with_capacity(map.len() * MEMMAP_ENTRY_SIZE);
    for e in map {
        v.extend_from_slice(&e.addr.to_le_bytes());
        v.extend_from_slice(&e.size.to_le_bytes());
        v.extend_from_slice(&e.kind.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
    }
    v
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

/// Loads the ELF kernel and checks that it has a PVH entry.
fn load_kernel(mem: &GuestMemoryMmap, path: &Path) -> Result<(GuestAddress, u64), BootError> {
    let mut f = File::open(path).map_err(|e| BootError::KernelOpen(path.into(), e))?;
    let res = Elf::load(mem, None, &mut f, Some(GuestAddress(HIMEM_START)))
        .map_err(|e| BootError::KernelElf(path.into(), e))?;
    match res.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(entry) => Ok((entry, res.kernel_end)),
        _ => Err(BootError::NoPvh(path.into())),
    }
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
    let (entry, kernel_end) = load_kernel(mem, kernel)?;

    // Initrds: concatenated at the top of low RAM, each padded to 4 bytes.
    let total: u64 = sizes.iter().map(|s| pad4(*s)).sum();
    let low_end = mem
        .iter()
        .map(|r| vm_memory::GuestMemoryRegion::last_addr(r).raw_value() + 1)
        .filter(|end| *end <= layout::MMIO_HOLE_START)
        .max()
        .unwrap_or(0);
    let initrd_addr = place_initrd(kernel_end, low_end, total)?;
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
    if cmdline.len() >= CMDLINE_MAX_SIZE {
        return Err(BootError::CmdlineTooLong(cmdline.len()));
    }
    let mut c = cmdline.as_bytes().to_vec();
    c.push(0);
    mem.write_slice(&c, GuestAddress(CMDLINE_ADDR))
        .map_err(|e| BootError::Memory("command line", e))?;

    // hvm_start_info, module list, memory map.
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
    if map.len() > PVH_MEMMAP_MAX_ENTRIES {
        return Err(BootError::Memmap(map.len()));
    }
    let nr_modules = u32::from(total > 0);
    mem.write_slice(
        &modlist_entry_bytes(initrd_addr, total),
        GuestAddress(PVH_MODLIST_ADDR),
    )
    .map_err(|e| BootError::Memory("PVH module list", e))?;
    mem.write_slice(&memmap_bytes(&map), GuestAddress(PVH_MEMMAP_ADDR))
        .map_err(|e| BootError::Memory("PVH memory map", e))?;
    let info = start_info_bytes(
        CMDLINE_ADDR,
        PVH_MODLIST_ADDR,
        nr_modules,
        PVH_MEMMAP_ADDR,
        map.len() as u32,
    );
    mem.write_slice(&info, GuestAddress(PVH_INFO_ADDR))
        .map_err(|e| BootError::Memory("PVH start info", e))?;

    // GDT and an empty IDT.
    for (i, e) in gdt_table().iter().enumerate() {
        mem.write_obj(*e, GuestAddress(GDT_ADDR + 8 * i as u64))
            .map_err(|e| BootError::Memory("GDT", e))?;
    }
    mem.write_obj(0u64, GuestAddress(IDT_ADDR))
        .map_err(|e| BootError::Memory("IDT", e))?;

    Ok(BootInfo {
        entry,
        start_info: GuestAddress(PVH_INFO_ADDR),
        initrd_addr: GuestAddress(initrd_addr),
        initrd_size: total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::ram_ranges;

    fn u32_at(b: &[u8], o: usize) -> u32 {
        u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], o: usize) -> u64 {
        u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
    }

    #[test]
    fn start_info_layout_matches_the_abi() {
        let b = start_info_bytes(0x20000, 0x6040, 1, 0x6080, 3);
        assert_eq!(u32_at(&b, 0), 0x336e_c578);
        assert_eq!(u32_at(&b, 4), 1);
        assert_eq!(u32_at(&b, 8), 0);
        assert_eq!(u32_at(&b, 12), 1);
        assert_eq!(u64_at(&b, 16), 0x6040);
        assert_eq!(u64_at(&b, 24), 0x20000);
        assert_eq!(u64_at(&b, 32), 0);
        assert_eq!(u64_at(&b, 40), 0x6080);
        assert_eq!(u32_at(&b, 48), 3);
        // Same size as linux-loader's bindgen'd struct.
        assert_eq!(
            START_INFO_SIZE,
            std::mem::size_of::<linux_loader::loader::elf::start_info::hvm_start_info>()
        );
        assert_eq!(
            MEMMAP_ENTRY_SIZE,
            std::mem::size_of::<linux_loader::loader::elf::start_info::hvm_memmap_table_entry>()
        );
        assert_eq!(
            MODLIST_ENTRY_SIZE,
            std::mem::size_of::<linux_loader::loader::elf::start_info::hvm_modlist_entry>()
        );
    }

    #[test]
    fn modlist_and_memmap_layout() {
        let m = modlist_entry_bytes(0x7f0_0000, 0x1234);
        assert_eq!(u64_at(&m, 0), 0x7f0_0000);
        assert_eq!(u64_at(&m, 8), 0x1234);
        assert_eq!(u64_at(&m, 16), 0);
        let map = layout::memmap(&ram_ranges(256 << 20));
        let b = memmap_bytes(&map);
        assert_eq!(b.len(), 3 * 24);
        assert_eq!(u64_at(&b, 24), 0x9fc00);
        assert_eq!(u32_at(&b, 24 + 16), layout::E820_RESERVED);
        assert_eq!(u64_at(&b, 48), 0x100000);
        assert_eq!(u64_at(&b, 56), (256 << 20) - 0x100000);
        assert_eq!(u32_at(&b, 48 + 16), layout::E820_RAM);
    }

    #[test]
    fn gdt_entries() {
        let g = gdt_table();
        assert_eq!(g[0], 0);
        assert_eq!(g[1], 0x00cf_9b00_0000_ffff);
        assert_eq!(g[2], 0x00cf_9300_0000_ffff);
        assert_eq!(g[3], 0x008f_8b00_0000_ffff);
    }

    #[test]
    fn padding() {
        assert_eq!(pad4(0), 0);
        assert_eq!(pad4(1), 4);
        assert_eq!(pad4(4), 4);
        assert_eq!(pad4(5), 8);
    }

    #[test]
    fn initrd_placement() {
        let a = place_initrd(0x200_0000, 0x1000_0000, 0x10_0001).unwrap();
        assert_eq!(a % 4096, 0);
        assert!(a + 0x10_0001 <= 0x1000_0000);
        assert!(a >= 0x200_0000);
        assert!(matches!(
            place_initrd(0x200_0000, 0x1000_0000, 0x0f00_0000),
            Err(BootError::InitrdTooBig { .. })
        ));
        assert!(place_initrd(0, 0x1000, 0x2000).is_err());
    }

    #[test]
    fn rejects_non_elf_kernel() {
        let dir = std::env::temp_dir().join(format!("kata-vmm-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let k = dir.join("notelf");
        std::fs::write(
            &k,
            b"this is not an ELF file at all, just text padding......",
        )
        .unwrap();
        let i = dir.join("initrd");
        std::fs::write(&i, b"0707").unwrap();
        let mem = GuestMemoryMmap::<()>::from_ranges(&ram_ranges(64 << 20)).unwrap();
        let e = load(&mem, &k, std::slice::from_ref(&i), "x").unwrap_err();
        assert!(matches!(e, BootError::KernelElf(..)), "{e}");
        let e = load(&mem, &dir.join("missing"), std::slice::from_ref(&i), "x").unwrap_err();
        assert!(matches!(e, BootError::KernelOpen(..)), "{e}");
        let e = load(&mem, &k, &[dir.join("missing-initrd")], "x").unwrap_err();
        assert!(e.to_string().contains("missing-initrd"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

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
mod tests {
    use super::*;
    use crate::layout::ram_ranges;

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

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kata-vmm-test-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn rejects_non_kernels() {
        let dir = scratch("nonkernel");
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
        assert!(matches!(e, BootError::KernelFormat(..)), "{e}");
        assert!(e.to_string().contains("notelf"), "{e}");
        let cut = dir.join("cut-elf");
        std::fs::write(&cut, b"\x7fELF\x02\x01\x01").unwrap();
        let e = load(&mem, &cut, std::slice::from_ref(&i), "x").unwrap_err();
        assert!(matches!(e, BootError::KernelElf(..)), "{e}");
        let empty = dir.join("empty");
        std::fs::write(&empty, b"").unwrap();
        let e = load(&mem, &empty, std::slice::from_ref(&i), "x").unwrap_err();
        assert!(matches!(e, BootError::KernelFormat(..)), "{e}");
        let e = load(&mem, &dir.join("missing"), std::slice::from_ref(&i), "x").unwrap_err();
        assert!(matches!(e, BootError::KernelOpen(..)), "{e}");
        let e = load(&mem, &k, &[dir.join("missing-initrd")], "x").unwrap_err();
        assert!(e.to_string().contains("missing-initrd"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn kernel_formats() {
        assert_eq!(kernel_format(b"\x7fELF\x02"), Some(KernelFormat::Elf));
        let mut bz = vec![0u8; 0x210];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(kernel_format(&bz), Some(KernelFormat::BzImage));
        assert_eq!(kernel_format(&bz[..0x204]), None);
        assert_eq!(kernel_format(b""), None);
        assert_eq!(kernel_format(&[0u8; 0x210]), None);
    }

    /// A minimal ELF `vmlinux`: one PT_LOAD of 256 bytes at 16 MiB (memsz 32 MiB) and, with
    /// `pvh`, a PT_NOTE holding the `XEN_ELFNOTE_PHYS32_ENTRY` note (entry 16 MiB + 0x40).
    fn fake_vmlinux(pvh: bool) -> Vec<u8> {
        let mut v = vec![0u8; 0x1100];
        v[..8].copy_from_slice(b"\x7fELF\x02\x01\x01\x00");
        let put16 =
            |v: &mut Vec<u8>, o: usize, x: u16| v[o..o + 2].copy_from_slice(&x.to_le_bytes());
        let put32 =
            |v: &mut Vec<u8>, o: usize, x: u32| v[o..o + 4].copy_from_slice(&x.to_le_bytes());
        let put64 =
            |v: &mut Vec<u8>, o: usize, x: u64| v[o..o + 8].copy_from_slice(&x.to_le_bytes());
        put16(&mut v, 16, 2); // ET_EXEC
        put16(&mut v, 18, 62); // EM_X86_64
        put32(&mut v, 20, 1);
        put64(&mut v, 24, 0x100_0000); // e_entry
        put64(&mut v, 32, 64); // e_phoff
        put16(&mut v, 52, 64); // e_ehsize
        put16(&mut v, 54, 56); // e_phentsize
        put16(&mut v, 56, 2); // e_phnum
                              // PT_LOAD
        put32(&mut v, 64, 1);
        put64(&mut v, 64 + 8, 0x1000);
        put64(&mut v, 64 + 24, 0x100_0000);
        put64(&mut v, 64 + 32, 0x100);
        put64(&mut v, 64 + 40, 0x200_0000);
        // PT_NOTE (or PT_NULL without PVH)
        put32(&mut v, 120, if pvh { 4 } else { 0 });
        put64(&mut v, 120 + 8, 0x200);
        put64(&mut v, 120 + 32, 20);
        put32(&mut v, 0x200, 4); // n_namesz
        put32(&mut v, 0x204, 4); // n_descsz
        put32(&mut v, 0x208, 18); // XEN_ELFNOTE_PHYS32_ENTRY
        v[0x20c..0x210].copy_from_slice(b"Xen\0");
        put32(&mut v, 0x210, 0x100_0040);
        for (i, b) in v[0x1000..].iter_mut().enumerate() {
            *b = i as u8;
        }
        v
    }

    #[test]
    fn loads_an_elf_with_the_pvh_boot_configuration() {
        use linux_loader::loader::elf::start_info::{
            hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
        };
        let dir = scratch("pvh");
        let k = dir.join("vmlinux");
        std::fs::write(&k, fake_vmlinux(true)).unwrap();
        let (i1, i2) = (dir.join("initrd1"), dir.join("initrd2"));
        std::fs::write(&i1, vec![1u8; 5001]).unwrap();
        std::fs::write(&i2, vec![2u8; 3]).unwrap();
        let mem = GuestMemoryMmap::<()>::from_ranges(&ram_ranges(128 << 20)).unwrap();
        let bi = load(&mem, &k, &[i1, i2], "console=ttyS0 quiet").unwrap();
        std::fs::remove_dir_all(&dir).unwrap();

        assert_eq!(bi.protocol, Protocol::Pvh);
        assert_eq!(bi.entry, GuestAddress(0x100_0040));
        assert_eq!(bi.start_info, GuestAddress(PVH_INFO_ADDR));
        assert_eq!(bi.initrd_size, pad4(5001) + pad4(3));
        // Page aligned at the top of low RAM, above the kernel (16 MiB + 32 MiB).
        assert_eq!(bi.initrd_addr.0, ((128 << 20) - bi.initrd_size) & !0xfff);
        assert!(bi.initrd_addr.0 >= 0x300_0000);

        let si: hvm_start_info = mem.read_obj(bi.start_info).unwrap();
        assert_eq!(si.magic, pvh::PVH_MAGIC);
        assert_eq!(si.version, 1);
        assert_eq!(si.nr_modules, 1);
        assert_eq!(si.rsdp_paddr, 0);
        let mut c = [0u8; 20];
        mem.read_slice(&mut c, GuestAddress(si.cmdline_paddr))
            .unwrap();
        assert_eq!(si.cmdline_paddr, CMDLINE_ADDR);
        assert_eq!(&c, b"console=ttyS0 quiet\0");
        let md: hvm_modlist_entry = mem.read_obj(GuestAddress(si.modlist_paddr)).unwrap();
        assert_eq!((md.paddr, md.size), (bi.initrd_addr.0, bi.initrd_size));
        let mut head = [0u8; 4];
        mem.read_slice(&mut head, GuestAddress(md.paddr + 5000))
            .unwrap();
        assert_eq!(head, [1, 0, 0, 0]); // the first initrd's last byte, then its padding
        mem.read_slice(&mut head, GuestAddress(md.paddr + pad4(5001)))
            .unwrap();
        assert_eq!(head, [2, 2, 2, 0]);

        let want = layout::memmap(&ram_ranges(128 << 20));
        assert_eq!(si.memmap_entries as usize, want.len());
        for (n, e) in want.iter().enumerate() {
            let got: hvm_memmap_table_entry = mem
                .read_obj(GuestAddress(si.memmap_paddr + 24 * n as u64))
                .unwrap();
            assert_eq!((got.addr, got.size, got.type_), (e.addr, e.size, e.kind));
        }
        // The kernel segment is in place.
        let mut code = [0u8; 4];
        mem.read_slice(&mut code, GuestAddress(0x100_0000)).unwrap();
        assert_eq!(code, [0, 1, 2, 3]);
    }

    #[test]
    fn refuses_an_elf_without_pvh_note() {
        let dir = scratch("nopvh");
        let k = dir.join("vmlinux");
        std::fs::write(&k, fake_vmlinux(false)).unwrap();
        let i = dir.join("initrd");
        std::fs::write(&i, b"0707").unwrap();
        let mem = GuestMemoryMmap::<()>::from_ranges(&ram_ranges(64 << 20)).unwrap();
        let e = load(&mem, &k, std::slice::from_ref(&i), "x").unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(e, BootError::NoPvh(..)), "{e}");
    }

    /// A bzImage as the kernel build lays it out: boot sector + setup (setup_sects + 1
    /// sectors, header at 0x1f1), then `payload` bytes of protected-mode code.
    fn fake_bzimage(edit: impl FnOnce(&mut setup_header), payload: usize) -> Vec<u8> {
        use vm_memory::ByteValued;
        let mut h = setup_header {
            setup_sects: 3,
            boot_flag: 0xaa55,
            header: u32::from_le_bytes(*BZIMAGE_MAGIC),
            version: 0x020f,
            loadflags: 0x01,
            code32_start: 0x10_0000,
            initrd_addr_max: 0x7fff_ffff,
            kernel_alignment: 0x20_0000,
            relocatable_kernel: 1,
            cmdline_size: 2047,
            pref_address: 0x100_0000,
            init_size: 0x200_0000,
            ..Default::default()
        };
        edit(&mut h);
        let mut v = vec![0u8; 4 * 512];
        v[0x1f1..0x1f1 + std::mem::size_of::<setup_header>()].copy_from_slice(h.as_slice());
        v.extend((0..payload).map(|i| i as u8));
        v
    }

    fn load_bz(
        image: &[u8],
        mem_mib: u64,
        cmdline: &str,
    ) -> (Result<BootInfo, BootError>, GuestMemoryMmap) {
        let dir = scratch(&format!("bz-{}", image.len()));
        let k = dir.join("bzImage");
        std::fs::write(&k, image).unwrap();
        let i = dir.join("initrd");
        std::fs::write(&i, vec![7u8; 5000]).unwrap();
        let mem = GuestMemoryMmap::<()>::from_ranges(&ram_ranges(mem_mib << 20)).unwrap();
        let r = load(&mem, &k, std::slice::from_ref(&i), cmdline);
        std::fs::remove_dir_all(&dir).unwrap();
        (r, mem)
    }

    #[test]
    fn loads_a_bzimage_with_boot_params() {
        let (r, mem) = load_bz(&fake_bzimage(|_| {}, 8192), 256, "console=ttyS0");
        let bi = r.unwrap();
        assert_eq!(bi.protocol, Protocol::Linux32);
        assert_eq!(bi.entry, GuestAddress(0x10_0000));
        assert_eq!(bi.start_info, GuestAddress(ZERO_PAGE_ADDR));
        // The protected-mode code is at code32_start.
        let mut code = [0u8; 4];
        mem.read_slice(&mut code, GuestAddress(0x10_0000)).unwrap();
        assert_eq!(code, [0, 1, 2, 3]);
        // The initrd stays above the decompressor's buffer (pref_address + init_size).
        assert!(bi.initrd_addr.0 >= 0x100_0000 + 0x200_0000);
        let p: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_ADDR)).unwrap();
        let h = p.hdr;
        assert_eq!({ h.header }, u32::from_le_bytes(*BZIMAGE_MAGIC));
        assert_eq!({ h.type_of_loader }, 0xff);
        assert_eq!({ h.loadflags }, 0x01 | KEEP_SEGMENTS);
        assert_eq!({ h.cmd_line_ptr }, CMDLINE_ADDR as u32);
        assert_eq!({ h.code32_start }, 0x10_0000);
        assert_eq!(u64::from(h.ramdisk_image), bi.initrd_addr.0);
        assert_eq!(u64::from(h.ramdisk_size), pad4(5000));
        assert_eq!(p.e820_entries, 3);
        let e = p.e820_table[2];
        assert_eq!(
            ({ e.addr }, { e.size }, { e.r#type }),
            (0x10_0000, (256 << 20) - 0x10_0000, layout::E820_RAM)
        );
        let mut c = [0u8; 14];
        mem.read_slice(&mut c, GuestAddress(CMDLINE_ADDR)).unwrap();
        assert_eq!(&c, b"console=ttyS0\0");
    }

    #[test]
    fn bzimage_limits() {
        // initrd_addr_max below the top of RAM: the initrd ends below it.
        let (r, _) = load_bz(
            &fake_bzimage(|h| h.initrd_addr_max = 0x3ff_ffff, 512),
            256,
            "",
        );
        let bi = r.unwrap();
        assert!(bi.initrd_addr.0 + bi.initrd_size <= 0x400_0000);
        // The header's cmdline_size is the longest command line it takes.
        let (r, _) = load_bz(&fake_bzimage(|h| h.cmdline_size = 8, 512), 256, "123456789");
        assert!(matches!(r, Err(BootError::CmdlineTooLong(9))), "{r:?}");
        // Too old a boot protocol.
        let (r, _) = load_bz(&fake_bzimage(|h| h.version = 0x0204, 512), 256, "");
        let e = r.unwrap_err().to_string();
        assert!(e.contains("2.04 is too old"), "{e}");
        // Not loadable high (zImage).
        let (r, _) = load_bz(&fake_bzimage(|h| h.loadflags = 0, 512), 256, "");
        assert!(matches!(r, Err(BootError::BzImage(..))), "{r:?}");
        // Cut short: the setup sectors are longer than the file.
        let (r, _) = load_bz(&fake_bzimage(|h| h.setup_sects = 200, 0), 256, "");
        let e = r.unwrap_err().to_string();
        assert!(e.contains("is not a valid bzImage"), "{e}");
        // A decompressor buffer that leaves no room for the initrd.
        let (r, _) = load_bz(&fake_bzimage(|h| h.init_size = 0xfff_0000, 512), 256, "");
        assert!(matches!(r, Err(BootError::InitrdTooBig { .. })), "{r:?}");
        // Absurd sizes do not overflow.
        let h = setup_header {
            kernel_alignment: 0x20_0000,
            init_size: u32::MAX,
            pref_address: u64::MAX,
            ..Default::default()
        };
        assert_eq!(bzimage_end(&h, 0x10_0000, 0x20_0000), None);
    }

    /// The real guest bzImage when it has been built (`make kernel`); skipped otherwise.
    #[test]
    fn loads_the_guest_bzimage() {
        let k = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/guest/bzImage");
        if !k.is_file() {
            eprintln!("loads_the_guest_bzimage: skipped ({} missing)", k.display());
            return;
        }
        let dir = scratch("realbz");
        let i = dir.join("initrd");
        std::fs::write(&i, b"07070").unwrap();
        let mem = GuestMemoryMmap::<()>::from_ranges(&ram_ranges(256 << 20)).unwrap();
        let bi = load(&mem, &k, std::slice::from_ref(&i), "quiet").unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(bi.protocol, Protocol::Linux32);
        assert_eq!(bi.entry, GuestAddress(0x10_0000));
    }
}

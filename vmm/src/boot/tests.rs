//! Unit tests of `boot.rs`.

use super::*;
use crate::layout::ram_ranges;
use crate::test_util::scratch;

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
    let put16 = |v: &mut Vec<u8>, o: usize, x: u16| v[o..o + 2].copy_from_slice(&x.to_le_bytes());
    let put32 = |v: &mut Vec<u8>, o: usize, x: u32| v[o..o + 4].copy_from_slice(&x.to_le_bytes());
    let put64 = |v: &mut Vec<u8>, o: usize, x: u64| v[o..o + 8].copy_from_slice(&x.to_le_bytes());
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

/// The real guest bzImage.
#[test]
#[ignore = "needs target/guest/bzImage (`make kernel`): `make unit` runs it (scripts/unit-privileged.sh)"]
fn loads_the_guest_bzimage() {
    let k = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/guest/bzImage");
    assert!(k.is_file(), "{} missing: `make kernel` first", k.display());
    let dir = scratch("realbz");
    let i = dir.join("initrd");
    std::fs::write(&i, b"07070").unwrap();
    let mem = GuestMemoryMmap::<()>::from_ranges(&ram_ranges(256 << 20)).unwrap();
    let bi = load(&mem, &k, std::slice::from_ref(&i), "quiet").unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(bi.protocol, Protocol::Linux32);
    assert_eq!(bi.entry, GuestAddress(0x10_0000));
}

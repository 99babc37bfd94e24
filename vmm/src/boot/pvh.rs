//! The PVH boot configuration: `hvm_start_info` (version 1), the module list (one module: the
//! concatenated initrds) and the memory map table, built as linux-loader's `start_info` types
//! and written by its `PvhBootConfigurator`.
//!
//! Layout (see `layout.rs`): `hvm_start_info` at [`PVH_INFO_ADDR`], the module list at
//! [`PVH_MODLIST_ADDR`], the memory map at [`PVH_MEMMAP_ADDR`], the command line at
//! [`CMDLINE_ADDR`] (written by the caller). No RSDP (no ACPI).

use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::BootError;
use crate::layout::{
    MemmapEntry, CMDLINE_ADDR, PVH_INFO_ADDR, PVH_MEMMAP_ADDR, PVH_MEMMAP_MAX_ENTRIES,
    PVH_MODLIST_ADDR,
};

/// `XEN_HVM_START_MAGIC_VALUE`.
pub const PVH_MAGIC: u32 = 0x336e_c578;
/// `hvm_start_info` version 1: it has the memory map fields.
pub const START_INFO_VERSION: u32 = 1;

/// The `hvm_start_info` for a command line at [`CMDLINE_ADDR`], the module list at
/// [`PVH_MODLIST_ADDR`] (`nr_modules` entries) and `memmap_entries` entries at
/// [`PVH_MEMMAP_ADDR`].
pub fn start_info(nr_modules: u32, memmap_entries: u32) -> hvm_start_info {
    hvm_start_info {
        magic: PVH_MAGIC,
        version: START_INFO_VERSION,
        flags: 0,
        nr_modules,
        modlist_paddr: PVH_MODLIST_ADDR,
        cmdline_paddr: CMDLINE_ADDR,
        rsdp_paddr: 0,
        memmap_paddr: PVH_MEMMAP_ADDR,
        memmap_entries,
        reserved: 0,
    }
}

/// Our memory map in the PVH table's entry type.
pub fn memmap_table(map: &[MemmapEntry]) -> Vec<hvm_memmap_table_entry> {
    map.iter()
        .map(|e| hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind,
            reserved: 0,
        })
        .collect()
}

/// The boot parameters of a PVH boot: `hvm_start_info`, the memory map table and the module
/// list (the initrds at `initrd.0`, `initrd.1` bytes; a size of 0 means no module, the entry is
/// written anyway and `nr_modules` is 0).
pub fn boot_params(initrd: (u64, u64), map: &[MemmapEntry]) -> Result<BootParams, BootError> {
    if map.len() > PVH_MEMMAP_MAX_ENTRIES {
        return Err(BootError::Memmap(map.len()));
    }
    let info = start_info(u32::from(initrd.1 > 0), map.len() as u32);
    let module = hvm_modlist_entry {
        paddr: initrd.0,
        size: initrd.1,
        cmdline_paddr: 0,
        reserved: 0,
    };
    let mut params = BootParams::new(&info, GuestAddress(PVH_INFO_ADDR));
    // The configurator writes the table at `sections_start`; `memmap_paddr` above says where
    // the guest looks for it: both are PVH_MEMMAP_ADDR.
    params.set_sections(&memmap_table(map), GuestAddress(PVH_MEMMAP_ADDR));
    params.set_modules(&[module], GuestAddress(PVH_MODLIST_ADDR));
    Ok(params)
}

/// Writes the PVH boot configuration into guest memory (the command line is not part of it).
pub fn write(
    mem: &GuestMemoryMmap,
    initrd: (u64, u64),
    map: &[MemmapEntry],
) -> Result<(), BootError> {
    let params = boot_params(initrd, map)?;
    PvhBootConfigurator::write_bootparams(&params, mem).map_err(BootError::Pvh)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{self, ram_ranges, E820_RAM, E820_RESERVED};
    use vm_memory::Bytes;

    fn mem(bytes: u64) -> GuestMemoryMmap {
        GuestMemoryMmap::<()>::from_ranges(&ram_ranges(bytes)).unwrap()
    }

    fn entries(mem: &GuestMemoryMmap, n: u32) -> Vec<hvm_memmap_table_entry> {
        let size = std::mem::size_of::<hvm_memmap_table_entry>() as u64;
        (0..u64::from(n))
            .map(|i| {
                mem.read_obj(GuestAddress(PVH_MEMMAP_ADDR + i * size))
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn abi_sizes() {
        // The sizes layout.rs reserves room for (checked there at compile time).
        assert_eq!(std::mem::size_of::<hvm_start_info>(), 56);
        assert_eq!(std::mem::size_of::<hvm_modlist_entry>(), 32);
        assert_eq!(std::mem::size_of::<hvm_memmap_table_entry>(), 24);
    }

    #[test]
    fn writes_start_info_module_and_memmap() {
        let m = mem(256 << 20);
        let map = layout::memmap(&ram_ranges(256 << 20));
        write(&m, (0x0f00_0000, 0x1234), &map).unwrap();

        let si: hvm_start_info = m.read_obj(GuestAddress(PVH_INFO_ADDR)).unwrap();
        assert_eq!(si.magic, 0x336e_c578);
        assert_eq!(si.version, 1);
        assert_eq!(si.flags, 0);
        assert_eq!(si.nr_modules, 1);
        assert_eq!(si.modlist_paddr, 0x6040);
        assert_eq!(si.cmdline_paddr, 0x20000);
        assert_eq!(si.rsdp_paddr, 0);
        assert_eq!(si.memmap_paddr, 0x6080);
        assert_eq!(si.memmap_entries, 3);

        let md: hvm_modlist_entry = m.read_obj(GuestAddress(PVH_MODLIST_ADDR)).unwrap();
        assert_eq!(
            (md.paddr, md.size, md.cmdline_paddr),
            (0x0f00_0000, 0x1234, 0)
        );

        let e = entries(&m, 3);
        let got: Vec<_> = e.iter().map(|e| (e.addr, e.size, e.type_)).collect();
        assert_eq!(
            got,
            vec![
                (0, 0x9fc00, E820_RAM),
                (0x9fc00, 0x400, E820_RESERVED),
                (0x10_0000, (256 << 20) - 0x10_0000, E820_RAM),
            ]
        );
        assert!(e.iter().all(|e| e.reserved == 0));
    }

    #[test]
    fn high_memory_gets_its_entry() {
        let m = mem(4 << 30);
        let map = layout::memmap(&ram_ranges(4 << 30));
        write(&m, (0x1000_0000, 4), &map).unwrap();
        let si: hvm_start_info = m.read_obj(GuestAddress(PVH_INFO_ADDR)).unwrap();
        assert_eq!(si.memmap_entries, 4);
        let e = entries(&m, 4);
        assert_eq!(
            (e[2].addr, e[2].size),
            (0x10_0000, layout::MMIO_HOLE_START - 0x10_0000)
        );
        assert_eq!(
            (e[3].addr, e[3].size, e[3].type_),
            (1 << 32, 1 << 30, E820_RAM)
        );
    }

    #[test]
    fn no_initrd_means_no_module() {
        let m = mem(64 << 20);
        write(&m, (0x3f0_0000, 0), &layout::memmap(&ram_ranges(64 << 20))).unwrap();
        let si: hvm_start_info = m.read_obj(GuestAddress(PVH_INFO_ADDR)).unwrap();
        assert_eq!(si.nr_modules, 0);
    }

    #[test]
    fn too_many_memmap_entries() {
        let m = mem(64 << 20);
        let map = vec![
            MemmapEntry {
                addr: 0,
                size: 1,
                kind: E820_RAM,
            };
            PVH_MEMMAP_MAX_ENTRIES + 1
        ];
        assert!(matches!(
            write(&m, (0, 0), &map),
            Err(BootError::Memmap(n)) if n == PVH_MEMMAP_MAX_ENTRIES + 1
        ));
    }

    #[test]
    fn memory_too_small_is_an_error() {
        // Guest RAM that ends before the start info: the configurator refuses.
        let m = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
        let e = write(&m, (0, 0), &layout::memmap(&ram_ranges(64 << 20))).unwrap_err();
        assert!(matches!(e, BootError::Pvh(_)), "{e}");
        assert!(
            e.to_string()
                .contains("memory map table extends past the end of guest memory"),
            "{e}"
        );
    }
}

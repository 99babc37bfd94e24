//! Guest physical memory map.
//!
//! ```text
//! 0x0000_0500  GDT (4 entries), IDT (empty) at 0x520
//! 0x0000_6000  PVH hvm_start_info, then the module list and the memory map table
//! 0x0000_7000  Linux boot_params ("zero page") when the kernel is a bzImage
//! 0x0002_0000  kernel command line (NUL terminated, at most CMDLINE_MAX_SIZE bytes)
//! 0x0009_fc00  MP table (floating pointer + configuration table), reserved in the memmap
//! 0x000a_0000  ISA hole (the PVH kernel reserves it itself)
//! 0x0010_0000  RAM: kernel at its ELF load address (16 MiB), initrds at the top of low RAM
//! 0xc000_0000  MMIO hole (1 GiB): virtio-mmio devices from 0xd000_0000, IOAPIC, LAPIC
//! 0x1_0000_0000  RAM above 4 GiB when --mem-mib exceeds 3 GiB
//! ```

use vm_memory::GuestAddress;

/// Where the GDT is written.
pub const GDT_ADDR: u64 = 0x500;
/// Where the (empty) IDT is written.
pub const IDT_ADDR: u64 = 0x520;
/// Where the PVH `hvm_start_info` lives; the vCPU gets it in `rbx`.
pub const PVH_INFO_ADDR: u64 = 0x6000;
/// Where the PVH module list (one entry: the concatenated initrds) lives.
pub const PVH_MODLIST_ADDR: u64 = 0x6040;
/// Where the PVH memory map table lives.
pub const PVH_MEMMAP_ADDR: u64 = 0x6080;
/// Maximum number of memory map entries that fit before `CMDLINE_ADDR`.
pub const PVH_MEMMAP_MAX_ENTRIES: usize = 64;
/// Where the Linux `boot_params` ("zero page", 4 KiB) of a bzImage boot live; the vCPU gets
/// it in `rsi`.
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// Where the kernel command line is written.
pub const CMDLINE_ADDR: u64 = 0x20000;
/// x86 `COMMAND_LINE_SIZE` of Linux, including the terminating NUL.
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// Start of the extended BIOS data area: the MP table goes here (the kernel scans it).
pub const EBDA_START: u64 = 0x9fc00;
/// Start of the legacy ISA hole.
pub const ISA_START: u64 = 0xa0000;
/// First byte of "high" memory: the ELF kernel must load above it.
pub const HIMEM_START: u64 = 0x100000;
/// Start of the MMIO hole below 4 GiB.
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
/// End of the MMIO hole (4 GiB).
pub const MMIO_HOLE_END: u64 = 0x1_0000_0000;
/// Base address of the first virtio-mmio device.
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;
/// Size of one virtio-mmio device window.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// First legacy IRQ (GSI) handed to virtio-mmio devices (4 is the serial port).
pub const VIRTIO_IRQ_BASE: u32 = 5;
/// IRQ of the serial port ttyS0.
pub const SERIAL_IRQ: u32 = 4;
/// IOAPIC MMIO base.
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
/// Local APIC MMIO base.
pub const LAPIC_ADDR: u32 = 0xfee0_0000;
/// Where KVM's (Intel only) TSS pages go: three pages just below the IOAPIC window's end region.
pub const KVM_TSS_ADDR: usize = 0xfffb_d000;
/// Smallest accepted guest memory size in MiB.
pub const MIN_MEM_MIB: u64 = 64;
/// Largest accepted guest memory size in MiB.
pub const MAX_MEM_MIB: u64 = 65536;

/// e820 / PVH memory type: usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 / PVH memory type: reserved.
pub const E820_RESERVED: u32 = 2;

// The fixed boot areas must not overlap each other (checked at compile time, with the sizes
// of linux-loader's PVH structures).
const _: () = {
    use linux_loader::loader::elf::start_info::{
        hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
    };
    use std::mem::size_of;
    assert!(PVH_MODLIST_ADDR >= PVH_INFO_ADDR + size_of::<hvm_start_info>() as u64);
    assert!(PVH_MEMMAP_ADDR >= PVH_MODLIST_ADDR + size_of::<hvm_modlist_entry>() as u64);
    assert!(
        PVH_MEMMAP_ADDR + (size_of::<hvm_memmap_table_entry>() * PVH_MEMMAP_MAX_ENTRIES) as u64
            <= CMDLINE_ADDR
    );
    assert!(CMDLINE_ADDR + CMDLINE_MAX_SIZE as u64 <= EBDA_START);
    assert!(IDT_ADDR >= GDT_ADDR + 4 * 8);
    assert!(VIRTIO_MMIO_BASE >= MMIO_HOLE_START);
};

/// One guest RAM region: (guest physical start, size in bytes).
pub type RamRange = (GuestAddress, usize);

/// Splits `mem_bytes` of guest RAM around the MMIO hole: everything below 3 GiB first, the rest
/// at 4 GiB.
pub fn ram_ranges(mem_bytes: u64) -> Vec<RamRange> {
    let low = mem_bytes.min(MMIO_HOLE_START);
    let mut ranges = vec![(GuestAddress(0), low as usize)];
    if mem_bytes > low {
        ranges.push((GuestAddress(MMIO_HOLE_END), (mem_bytes - low) as usize));
    }
    ranges
}

/// One entry of the PVH memory map (`hvm_memmap_table_entry`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemmapEntry {
    /// Guest physical start.
    pub addr: u64,
    /// Size in bytes.
    pub size: u64,
    /// `E820_RAM` or `E820_RESERVED`.
    pub kind: u32,
}

/// The memory map the guest sees: low RAM up to the EBDA, the MP table area reserved, RAM from
/// 1 MiB to the end of the low region, and the region above 4 GiB if any.
pub fn memmap(ranges: &[RamRange]) -> Vec<MemmapEntry> {
    let mut map = vec![
        MemmapEntry {
            addr: 0,
            size: EBDA_START,
            kind: E820_RAM,
        },
        MemmapEntry {
            addr: EBDA_START,
            size: ISA_START - EBDA_START,
            kind: E820_RESERVED,
        },
    ];
    for (start, size) in ranges {
        let start = start.0;
        let end = start + *size as u64;
        let start = start.max(HIMEM_START);
        if end > start {
            map.push(MemmapEntry {
                addr: start,
                size: end - start,
                kind: E820_RAM,
            });
        }
    }
    map
}

/// Guest physical base address of virtio-mmio device number `index`.
pub fn virtio_mmio_addr(index: usize) -> u64 {
    VIRTIO_MMIO_BASE + index as u64 * VIRTIO_MMIO_SIZE
}

/// Highest IRQ a virtio-mmio slot may have: the IOAPIC's last pin (24 pins, see mptable.rs).
pub const MAX_VIRTIO_IRQ: u32 = 23;

/// Most virtio-mmio slots a VM can have (IRQs [`VIRTIO_IRQ_BASE`]..=[`MAX_VIRTIO_IRQ`]).
pub const MAX_VIRTIO_SLOTS: usize = (MAX_VIRTIO_IRQ - VIRTIO_IRQ_BASE + 1) as usize;

/// IRQ (GSI) of virtio-mmio device number `index`.
pub fn virtio_irq(index: usize) -> u32 {
    VIRTIO_IRQ_BASE + index as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_memory_is_one_region() {
        let r = ram_ranges(256 << 20);
        assert_eq!(r, vec![(GuestAddress(0), 256 << 20)]);
    }

    #[test]
    fn large_memory_skips_the_mmio_hole() {
        let r = ram_ranges(4 << 30);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0], (GuestAddress(0), MMIO_HOLE_START as usize));
        assert_eq!(r[1], (GuestAddress(MMIO_HOLE_END), (1 << 30) as usize));
    }

    #[test]
    fn memmap_layout() {
        let m = memmap(&ram_ranges(128 << 20));
        assert_eq!(
            m,
            vec![
                MemmapEntry {
                    addr: 0,
                    size: 0x9fc00,
                    kind: E820_RAM
                },
                MemmapEntry {
                    addr: 0x9fc00,
                    size: 0x400,
                    kind: E820_RESERVED
                },
                MemmapEntry {
                    addr: 0x100000,
                    size: (128 << 20) - 0x100000,
                    kind: E820_RAM
                },
            ]
        );
        let m = memmap(&ram_ranges(5 << 30));
        assert_eq!(m.len(), 4);
        assert_eq!(
            m[3],
            MemmapEntry {
                addr: 1 << 32,
                size: 2 << 30,
                kind: E820_RAM
            }
        );
        // Nothing may overlap the MMIO hole.
        for e in &m {
            assert!(e.addr + e.size <= MMIO_HOLE_START || e.addr >= MMIO_HOLE_END);
        }
    }

    #[test]
    fn virtio_slots() {
        assert_eq!(virtio_mmio_addr(0), 0xd000_0000);
        assert_eq!(virtio_mmio_addr(1), 0xd000_1000);
        assert_eq!(virtio_irq(0), 5);
        assert_eq!(virtio_irq(2), 7);
    }
}

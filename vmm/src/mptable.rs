//! Intel MultiProcessor Specification 1.4 table, so that a kernel without ACPI finds every vCPU,
//! the IOAPIC and the ISA interrupt routing.
//!
//! Layout at [`EBDA_START`](crate::layout::EBDA_START): the 16-byte floating pointer structure,
//! immediately followed by the configuration table (header, one processor entry per vCPU, one
//! ISA bus, one IOAPIC, 24 I/O interrupt entries mapping ISA IRQ n to IOAPIC pin n, and the
//! two local interrupt entries: LINT0 = ExtINT, LINT1 = NMI).

use crate::layout::{IOAPIC_ADDR, LAPIC_ADDR};

/// Number of IOAPIC pins KVM's in-kernel IOAPIC has.
pub const IOAPIC_PINS: u8 = 24;
const MPC_SPEC: u8 = 4;
const LAPIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const CPU_ENABLED: u8 = 1;
const CPU_BSP: u8 = 2;
const MP_INT: u8 = 0;
const MP_NMI: u8 = 1;
const MP_EXTINT: u8 = 3;

/// Size of the table for `vcpus` processors.
pub fn size(vcpus: u8) -> usize {
    16 + 44 + 20 * vcpus as usize + 8 + 8 + 8 * IOAPIC_PINS as usize + 8 * 2
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |a, b| a.wrapping_add(*b))
        .wrapping_neg()
}

/// Builds the MP table that will be placed at guest physical `base`.
pub fn build(base: u32, vcpus: u8) -> Vec<u8> {
    let ioapic_id = vcpus; // first APIC id after the CPUs
    let mut t: Vec<u8> = Vec::with_capacity(size(vcpus));

    // Configuration table header (filled after the entries are known).
    let table_start = 16usize;
    let mut entries: Vec<u8> = Vec::new();
    let mut count: u16 = 0;
    for id in 0..vcpus {
        let mut e = [0u8; 20];
        e[0] = 0; // processor
        e[1] = id;
        e[2] = LAPIC_VERSION;
        e[3] = CPU_ENABLED | if id == 0 { CPU_BSP } else { 0 };
        e[4..8].copy_from_slice(&0x600u32.to_le_bytes()); // family 6
        e[8..12].copy_from_slice(&0x201u32.to_le_bytes()); // FPU | APIC
        entries.extend_from_slice(&e);
        count += 1;
    }
    entries.extend_from_slice(&[1, 0, b'I', b'S', b'A', b' ', b' ', b' ']); // bus 0 = ISA
    count += 1;
    let mut io = [0u8; 8];
    io[0] = 2;
    io[1] = ioapic_id;
    io[2] = IOAPIC_VERSION;
    io[3] = 1; // enabled
    io[4..8].copy_from_slice(&IOAPIC_ADDR.to_le_bytes());
    entries.extend_from_slice(&io);
    count += 1;
    for pin in 0..IOAPIC_PINS {
        // type 3 (I/O interrupt), INT, flags 0 (conforms to bus), bus 0, irq = pin.
        entries.extend_from_slice(&[3, MP_INT, 0, 0, 0, pin, ioapic_id, pin]);
        count += 1;
    }
    // type 4 (local interrupt): ExtINT on LINT0 of the BSP, NMI on LINT1 of all CPUs.
    entries.extend_from_slice(&[4, MP_EXTINT, 0, 0, 0, 0, 0, 0]);
    entries.extend_from_slice(&[4, MP_NMI, 0, 0, 0, 0, 0xff, 1]);
    count += 2;

    let table_len = 44 + entries.len();
    let mut hdr = [0u8; 44];
    hdr[0..4].copy_from_slice(b"PCMP");
    hdr[4..6].copy_from_slice(&(table_len as u16).to_le_bytes());
    hdr[6] = MPC_SPEC;
    // hdr[7] checksum
    hdr[8..16].copy_from_slice(b"KATA-RS ");
    hdr[16..28].copy_from_slice(b"kata-vmm    ");
    // 28..32 OEM table pointer, 32..34 OEM table size = 0
    hdr[34..36].copy_from_slice(&count.to_le_bytes());
    hdr[36..40].copy_from_slice(&LAPIC_ADDR.to_le_bytes());
    // 40..42 extended table length, 42 its checksum, 43 reserved = 0
    let mut table = hdr.to_vec();
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    // Floating pointer structure.
    let mut mpf = [0u8; 16];
    mpf[0..4].copy_from_slice(b"_MP_");
    mpf[4..8].copy_from_slice(&(base + table_start as u32).to_le_bytes());
    mpf[8] = 1; // length in 16-byte paragraphs
    mpf[9] = MPC_SPEC;
    // mpf[10] checksum, 11..16 feature bytes = 0 (configuration table present, no IMCR)
    mpf[10] = checksum(&mpf);

    t.extend_from_slice(&mpf);
    t.extend_from_slice(&table);
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    #[test]
    fn checksums_and_sizes() {
        for n in [1u8, 2, 4, 64] {
            let t = build(0x9fc00, n);
            assert_eq!(t.len(), size(n));
            assert_eq!(&t[0..4], b"_MP_");
            assert_eq!(sum(&t[0..16]), 0);
            let ptr = u32::from_le_bytes(t[4..8].try_into().unwrap());
            assert_eq!(ptr, 0x9fc00 + 16);
            let tbl = &t[16..];
            assert_eq!(&tbl[0..4], b"PCMP");
            let len = u16::from_le_bytes(tbl[4..6].try_into().unwrap()) as usize;
            assert_eq!(len, tbl.len());
            assert_eq!(sum(tbl), 0);
            let count = u16::from_le_bytes(tbl[34..36].try_into().unwrap());
            assert_eq!(count as usize, n as usize + 1 + 1 + 24 + 2);
        }
    }

    #[test]
    fn processors_have_apic_ids_and_one_bsp() {
        let t = build(0x9fc00, 3);
        let procs = &t[16 + 44..16 + 44 + 60];
        for i in 0..3 {
            let e = &procs[i * 20..i * 20 + 20];
            assert_eq!(e[0], 0);
            assert_eq!(e[1], i as u8);
            assert_eq!(e[3] & CPU_BSP != 0, i == 0);
            assert_eq!(e[3] & CPU_ENABLED, CPU_ENABLED);
        }
        // IOAPIC takes the id after the CPUs.
        let io = &t[16 + 44 + 60 + 8..16 + 44 + 60 + 16];
        assert_eq!(io[0], 2);
        assert_eq!(io[1], 3);
        assert_eq!(
            u32::from_le_bytes(io[4..8].try_into().unwrap()),
            0xfec0_0000
        );
    }
}

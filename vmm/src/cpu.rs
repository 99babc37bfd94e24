//! vCPU setup for the PVH entry: CPUID, LAPIC, MSRs, and the 32-bit protected mode register
//! state the PVH ABI requires on the boot vCPU.

use kvm_bindings::{kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, CpuId, Msrs};
use kvm_ioctls::VcpuFd;

use crate::boot::{gdt_flags, BootInfo, Protocol};
use crate::layout::{GDT_ADDR, IDT_ADDR};

/// Setting up a vCPU failed.
#[derive(Debug, thiserror::Error)]
#[error("vCPU {id}: {what}: {err}")]
pub struct CpuError {
    /// vCPU index.
    pub id: u8,
    /// Which step.
    pub what: &'static str,
    /// KVM's error.
    pub err: kvm_ioctls::Error,
}

const X86_CR0_PE: u64 = 0x1;
const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_IA32_MISC_ENABLE_FAST_STRING: u64 = 1;
const CPUID_ECX_HYPERVISOR: u32 = 1 << 31;
const CPUID_ECX_TSC_DEADLINE: u32 = 1 << 24;

/// Turns one GDT descriptor (as [`gdt_flags`] describes it) into KVM's segment form.
pub fn segment(selector_index: u16, flags: u16, base: u32, limit: u32) -> kvm_segment {
    let g = (flags >> 15) & 1;
    kvm_segment {
        base: u64::from(base),
        limit: if g == 1 { (limit << 12) | 0xfff } else { limit },
        selector: selector_index * 8,
        type_: (flags & 0xf) as u8,
        present: ((flags >> 7) & 1) as u8,
        dpl: ((flags >> 5) & 3) as u8,
        db: ((flags >> 14) & 1) as u8,
        s: ((flags >> 4) & 1) as u8,
        l: ((flags >> 13) & 1) as u8,
        g: g as u8,
        avl: ((flags >> 12) & 1) as u8,
        unusable: if (flags >> 7) & 1 == 1 { 0 } else { 1 },
        padding: 0,
    }
}

/// Adjusts the host-supported CPUID for vCPU `id` of `count`: APIC ids in leaves 1, 0xB and
/// 0x1F, the logical processor count, the hypervisor bit, and the TSC-deadline timer when KVM's
/// in-kernel LAPIC emulates it (`tsc_deadline`). KVM_GET_SUPPORTED_CPUID never reports that bit
/// itself; with it the guest skips its ~100 ms LAPIC timer calibration against the PIT.
pub fn patch_cpuid(cpuid: &mut CpuId, id: u8, count: u8, tsc_deadline: bool) {
    for e in cpuid.as_mut_slice() {
        match e.function {
            1 => {
                e.ebx = (e.ebx & 0x0000_ffff) | (u32::from(id) << 24) | (u32::from(count) << 16);
                e.ecx |= CPUID_ECX_HYPERVISOR;
                if tsc_deadline {
                    e.ecx |= CPUID_ECX_TSC_DEADLINE;
                }
                if count > 1 {
                    e.edx |= 1 << 28; // HTT: the count field is valid
                }
            }
            0xb | 0x1f => e.edx = u32::from(id),
            _ => {}
        }
    }
}

fn set_lvt_mode(regs: &mut [std::os::raw::c_char; 1024], offset: usize, mode: u32) {
    let mut b = [0u8; 4];
    for (i, x) in b.iter_mut().enumerate() {
        *x = regs[offset + i] as u8;
    }
    let v = (u32::from_le_bytes(b) & !0x700) | (mode << 8);
    for (i, x) in v.to_le_bytes().iter().enumerate() {
        regs[offset + i] = *x as std::os::raw::c_char;
    }
}

/// Configures vCPU `id`: CPUID, LAPIC LINT0/LINT1, MSRs, and on the boot vCPU the registers
/// for the 32-bit entry of `boot` (`eip` = entry; PVH: `ebx` = `hvm_start_info`, Linux
/// 32-bit boot protocol: `esi` = `boot_params`, `ebx`/`ebp`/`edi` = 0). Other vCPUs wait for
/// INIT/SIPI from the guest, which KVM handles.
pub fn configure(
    vcpu: &VcpuFd,
    id: u8,
    count: u8,
    base_cpuid: &CpuId,
    tsc_deadline: bool,
    boot: &BootInfo,
) -> Result<(), CpuError> {
    let err = |what| move |err| CpuError { id, what, err };
    let mut cpuid = base_cpuid.clone();
    patch_cpuid(&mut cpuid, id, count, tsc_deadline);
    vcpu.set_cpuid2(&cpuid).map_err(err("KVM_SET_CPUID2"))?;

    let mut lapic = vcpu.get_lapic().map_err(err("KVM_GET_LAPIC"))?;
    set_lvt_mode(&mut lapic.regs, APIC_LVT0, APIC_MODE_EXTINT);
    set_lvt_mode(&mut lapic.regs, APIC_LVT1, APIC_MODE_NMI);
    vcpu.set_lapic(&lapic).map_err(err("KVM_SET_LAPIC"))?;

    let msrs = Msrs::from_entries(&[kvm_msr_entry {
        index: MSR_IA32_MISC_ENABLE,
        data: MSR_IA32_MISC_ENABLE_FAST_STRING,
        ..Default::default()
    }])
    .expect("one MSR entry always fits");
    // Not fatal if KVM refuses: it only enables fast string operations.
    let _ = vcpu.set_msrs(&msrs);

    if id != 0 {
        return Ok(());
    }

    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(err("KVM_SET_FPU"))?;

    let mut sregs = vcpu.get_sregs().map_err(err("KVM_GET_SREGS"))?;
    let g = gdt_flags();
    let code = segment(1, g[1].0, g[1].1, g[1].2);
    let data = segment(2, g[2].0, g[2].1, g[2].2);
    let tss = segment(3, g[3].0, g[3].1, g[3].2);
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (g.len() * 8 - 1) as u16;
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    sregs.cr0 = X86_CR0_PE;
    sregs.cr3 = 0;
    sregs.cr4 = 0;
    sregs.efer = 0;
    vcpu.set_sregs(&sregs).map_err(err("KVM_SET_SREGS"))?;

    let mut regs = kvm_regs {
        rflags: 0x2,
        rip: boot.entry.0,
        ..Default::default()
    };
    match boot.protocol {
        Protocol::Pvh => regs.rbx = boot.start_info.0,
        Protocol::Linux32 => regs.rsi = boot.start_info.0,
    }
    vcpu.set_regs(&regs).map_err(err("KVM_SET_REGS"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    #[test]
    fn flat_segments() {
        let g = gdt_flags();
        let cs = segment(1, g[1].0, g[1].1, g[1].2);
        assert_eq!(
            (cs.selector, cs.type_, cs.present, cs.db, cs.s, cs.g),
            (8, 0xb, 1, 1, 1, 1)
        );
        assert_eq!(
            (cs.base, cs.limit, cs.l, cs.unusable),
            (0, 0xffff_ffff, 0, 0)
        );
        let ds = segment(2, g[2].0, g[2].1, g[2].2);
        assert_eq!((ds.selector, ds.type_, ds.limit), (0x10, 0x3, 0xffff_ffff));
        let tr = segment(3, g[3].0, g[3].1, g[3].2);
        assert_eq!((tr.selector, tr.type_, tr.s, tr.present), (0x18, 0xb, 0, 1));
    }

    #[test]
    fn cpuid_gets_apic_ids() {
        let entries = [
            kvm_cpuid_entry2 {
                function: 1,
                ebx: 0xffff_0800,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xb,
                index: 0,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xb,
                index: 1,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 7,
                ebx: 0x1234,
                ..Default::default()
            },
        ];
        let mut c = CpuId::from_entries(&entries).unwrap();
        patch_cpuid(&mut c, 5, 8, true);
        let s = c.as_slice();
        assert_ne!(s[0].ecx & CPUID_ECX_TSC_DEADLINE, 0);
        assert_eq!(s[0].ebx >> 24, 5);
        assert_eq!((s[0].ebx >> 16) & 0xff, 8);
        assert_eq!(s[0].ebx & 0xffff, 0x0800);
        assert_ne!(s[0].ecx & CPUID_ECX_HYPERVISOR, 0);
        assert_eq!(s[1].edx, 5);
        assert_eq!(s[2].edx, 5);
        assert_eq!(s[3].ebx, 0x1234);
        let mut c = CpuId::from_entries(&entries).unwrap();
        patch_cpuid(&mut c, 0, 1, false);
        assert_eq!(c.as_slice()[0].ecx & CPUID_ECX_TSC_DEADLINE, 0);
    }

    #[test]
    fn lvt_modes() {
        let mut regs = [0 as std::os::raw::c_char; 1024];
        regs[APIC_LVT0 + 1] = 0x07; // some other mode bits set
        regs[APIC_LVT0] = 0x30;
        set_lvt_mode(&mut regs, APIC_LVT0, APIC_MODE_EXTINT);
        set_lvt_mode(&mut regs, APIC_LVT1, APIC_MODE_NMI);
        assert_eq!(regs[APIC_LVT0] as u8, 0x30);
        assert_eq!(regs[APIC_LVT0 + 1] as u8, 0x07);
        assert_eq!(regs[APIC_LVT1 + 1] as u8, 0x04);
    }
}

//! The state of one vCPU for a snapshot: what KVM keeps of it (registers, special registers,
//! XSAVE area with the FPU/SSE/AVX state, XCRs, debug registers, MSRs, LAPIC, MP state, pending
//! events, CPUID, TSC frequency), captured from a paused vCPU and restored into a fresh one.
//!
//! The KVM structures are serialized by kvm-bindings' `serde` feature (their bytes, as the KVM
//! ABI lays them out). Restore order follows the KVM API's dependencies: CPUID first (it
//! decides which MSRs and XSAVE components exist), MP state, registers, special registers,
//! XSAVE, XCRs, debug registers, LAPIC, MSRs, then the pending events last (they refer to the
//! state set before).

use kvm_bindings::{
    kvm_cpuid_entry2, kvm_debugregs, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_regs,
    kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave, CpuId, Msrs, KVM_MAX_CPUID_ENTRIES,
    KVM_MAX_MSR_ENTRIES,
};
use kvm_ioctls::{Cap, Kvm, VcpuFd, VmFd};
use serde::{Deserialize, Serialize};

use super::StateError;

/// `IA32_TSC`.
pub const MSR_IA32_TSC: u32 = 0x10;
/// `IA32_TSC_DEADLINE`: restored after `IA32_TSC`, which it is compared against.
pub const MSR_IA32_TSC_DEADLINE: u32 = 0x6e0;

/// Everything KVM holds of one vCPU.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct VcpuState {
    /// CPUID as set on the vCPU (`KVM_GET_CPUID2`).
    pub cpuid: Vec<kvm_cpuid_entry2>,
    /// General purpose registers, `rip`, `rflags`.
    pub regs: kvm_regs,
    /// Segment, control and descriptor table registers, EFER, APIC base.
    pub sregs: kvm_sregs,
    /// The XSAVE area (legacy FPU/SSE region included, so no separate `KVM_GET_FPU`).
    pub xsave: kvm_xsave,
    /// Extended control registers (XCR0).
    pub xcrs: kvm_xcrs,
    /// DR0-DR3, DR6, DR7.
    pub debug_regs: kvm_debugregs,
    /// The MSRs of [`msrs_to_save`] that KVM could read, in restore order.
    pub msrs: Vec<kvm_msr_entry>,
    /// The in-kernel local APIC's registers.
    pub lapic: kvm_lapic_state,
    /// Runnable, halted, waiting for SIPI...
    pub mp_state: kvm_mp_state,
    /// Pending exceptions, interrupts, NMIs, SMM state.
    pub vcpu_events: kvm_vcpu_events,
    /// The guest TSC frequency, when KVM reports it (`KVM_GET_TSC_KHZ`).
    pub tsc_khz: Option<u32>,
}

/// The MSRs a snapshot saves: KVM's `KVM_GET_MSR_INDEX_LIST` (the MSRs it saves for migration
/// and the ones it emulates), `IA32_TSC_DEADLINE` moved last.
pub fn msrs_to_save(kvm: &Kvm) -> Result<Vec<u32>, StateError> {
    let list = kvm
        .get_msr_index_list()
        .map_err(StateError::kvm("KVM_GET_MSR_INDEX_LIST"))?;
    Ok(restore_order(list.as_slice()))
}

/// `indices` with `IA32_TSC_DEADLINE` after everything else (a stable sort: the rest keeps
/// KVM's order, `IA32_TSC` first among them as KVM lists it).
pub fn restore_order(indices: &[u32]) -> Vec<u32> {
    let mut v = indices.to_vec();
    v.sort_by_key(|i| *i == MSR_IA32_TSC_DEADLINE);
    v
}

/// The size of KVM's XSAVE buffer must fit `kvm_xsave` (4 KiB): true unless the VMM enabled
/// dynamic XSAVE features (AMX) with `arch_prctl`, which it never does.
fn check_xsave_size(vm: &VmFd) -> Result<(), StateError> {
    if !vm.check_extension(Cap::Xsave) {
        return Err(StateError::Unsupported("KVM_CAP_XSAVE"));
    }
    // 0 before Linux 5.17: no dynamic features, the 4 KiB struct is the whole area.
    let size = vm.check_extension_int(Cap::Xsave2);
    if usize::try_from(size).unwrap_or(usize::MAX) > std::mem::size_of::<kvm_xsave>() {
        return Err(StateError::XsaveTooBig(size));
    }
    Ok(())
}

/// Reads `indices` from the vCPU, at most `KVM_MAX_MSR_ENTRIES` per call. KVM stops at the
/// first MSR it cannot read; that one is left out (debug line) and reading goes on after it.
pub fn get_msrs(vcpu: &VcpuFd, indices: &[u32]) -> Result<Vec<kvm_msr_entry>, StateError> {
    let mut out = Vec::with_capacity(indices.len());
    let mut rest = indices;
    while !rest.is_empty() {
        let chunk = &rest[..rest.len().min(KVM_MAX_MSR_ENTRIES)];
        let mut msrs = msrs_for(chunk.iter().map(|&index| kvm_msr_entry {
            index,
            ..Default::default()
        }))?;
        let n = vcpu
            .get_msrs(&mut msrs)
            .map_err(StateError::kvm("KVM_GET_MSRS"))?;
        out.extend_from_slice(&msrs.as_slice()[..n.min(chunk.len())]);
        let consumed = if n < chunk.len() {
            tracing::debug!("snapshot: MSR {:#x} is not readable, left out", chunk[n]);
            n + 1
        } else {
            n
        };
        rest = &rest[consumed..];
    }
    Ok(out)
}

/// Writes `entries` into the vCPU, at most `KVM_MAX_MSR_ENTRIES` per call; an MSR KVM refuses is
/// an error naming it.
pub fn set_msrs(vcpu: &VcpuFd, entries: &[kvm_msr_entry]) -> Result<(), StateError> {
    for chunk in entries.chunks(KVM_MAX_MSR_ENTRIES) {
        let msrs = msrs_for(chunk.iter().copied())?;
        let n = vcpu
            .set_msrs(&msrs)
            .map_err(StateError::kvm("KVM_SET_MSRS"))?;
        if n < chunk.len() {
            return Err(StateError::MsrRefused(chunk[n].index));
        }
    }
    Ok(())
}

fn msrs_for(entries: impl Iterator<Item = kvm_msr_entry>) -> Result<Msrs, StateError> {
    let v: Vec<_> = entries.collect();
    Msrs::from_entries(&v).map_err(|e| StateError::Fam(format!("{e:?}")))
}

/// Captures the state of a vCPU that is not running (paused, or not started yet).
/// `msr_indices` comes from [`msrs_to_save`].
pub fn capture(vm: &VmFd, vcpu: &VcpuFd, msr_indices: &[u32]) -> Result<VcpuState, StateError> {
    check_xsave_size(vm)?;
    let k = StateError::kvm;
    // MP state first: KVM_GET_MP_STATE processes pending LAPIC events (INIT, SIPI), which can
    // change the registers, the LAPIC and the events read after it.
    let mp_state = vcpu.get_mp_state().map_err(k("KVM_GET_MP_STATE"))?;
    let vcpu_events = vcpu.get_vcpu_events().map_err(k("KVM_GET_VCPU_EVENTS"))?;
    Ok(VcpuState {
        cpuid: vcpu
            .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
            .map_err(k("KVM_GET_CPUID2"))?
            .as_slice()
            .to_vec(),
        regs: vcpu.get_regs().map_err(k("KVM_GET_REGS"))?,
        sregs: vcpu.get_sregs().map_err(k("KVM_GET_SREGS"))?,
        xsave: vcpu.get_xsave().map_err(k("KVM_GET_XSAVE"))?,
        xcrs: vcpu.get_xcrs().map_err(k("KVM_GET_XCRS"))?,
        debug_regs: vcpu.get_debug_regs().map_err(k("KVM_GET_DEBUGREGS"))?,
        msrs: get_msrs(vcpu, msr_indices)?,
        lapic: vcpu.get_lapic().map_err(k("KVM_GET_LAPIC"))?,
        mp_state,
        vcpu_events,
        tsc_khz: vcpu.get_tsc_khz().ok(),
    })
}

/// Restores `state` into a freshly created vCPU of a VM with the in-kernel irqchip (before its
/// first `KVM_RUN`).
pub fn restore(vm: &VmFd, vcpu: &VcpuFd, state: &VcpuState) -> Result<(), StateError> {
    check_xsave_size(vm)?;
    let k = StateError::kvm;
    let cpuid = CpuId::from_entries(&state.cpuid).map_err(|e| StateError::Fam(format!("{e:?}")))?;
    vcpu.set_cpuid2(&cpuid).map_err(k("KVM_SET_CPUID2"))?;
    if let Some(khz) = state.tsc_khz {
        if vcpu.get_tsc_khz().ok() != Some(khz) {
            if !vm.check_extension(Cap::TscControl) {
                return Err(StateError::Unsupported(
                    "KVM_CAP_TSC_CONTROL (the snapshot's TSC frequency differs from this host's)",
                ));
            }
            vcpu.set_tsc_khz(khz).map_err(k("KVM_SET_TSC_KHZ"))?;
        }
    }
    vcpu.set_mp_state(state.mp_state)
        .map_err(k("KVM_SET_MP_STATE"))?;
    vcpu.set_regs(&state.regs).map_err(k("KVM_SET_REGS"))?;
    vcpu.set_sregs(&state.sregs).map_err(k("KVM_SET_SREGS"))?;
    // SAFETY: KVM_SET_XSAVE copies KVM's XSAVE buffer size from our pointer; check_xsave_size
    // above made sure that size is at most size_of::<kvm_xsave>() (no dynamically enabled
    // XSAVE features), so the kernel reads only inside `state.xsave`.
    unsafe { vcpu.set_xsave(&state.xsave) }.map_err(k("KVM_SET_XSAVE"))?;
    vcpu.set_xcrs(&state.xcrs).map_err(k("KVM_SET_XCRS"))?;
    vcpu.set_debug_regs(&state.debug_regs)
        .map_err(k("KVM_SET_DEBUGREGS"))?;
    vcpu.set_lapic(&state.lapic).map_err(k("KVM_SET_LAPIC"))?;
    set_msrs(vcpu, &state.msrs)?;
    vcpu.set_vcpu_events(&state.vcpu_events)
        .map_err(k("KVM_SET_VCPU_EVENTS"))?;
    Ok(())
}

//! Capture and restore of the KVM state on real KVM: a vCPU and a VM with state set by hand
//! are captured, go through a snapshot state file, are restored into a new VM, and read back
//! the same. Needs `/dev/kvm`, hence ignored by default:
//! `cargo test -p kata-rs-vmm -- --ignored kvm_state`.

use kvm_bindings::{kvm_msr_entry, Msrs, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::VcpuFd;

use super::vm::Vm;
use super::{vcpu_state, vm_state};
use crate::snapshot::{self, ConfigFingerprint, SnapshotState};

/// `IA32_SYSENTER_CS`: an MSR every KVM saves and lets the host write.
const MSR_SYSENTER_CS: u32 = 0x174;

fn vm_with_vcpu() -> (Vm, VcpuFd) {
    let vm = Vm::new().expect("/dev/kvm");
    vm.setup_platform().unwrap();
    let cpuid = vm.kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).unwrap();
    let vcpu = vm.fd.create_vcpu(0).unwrap();
    vcpu.set_cpuid2(&cpuid).unwrap();
    (vm, vcpu)
}

#[test]
#[ignore = "needs /dev/kvm"]
fn kvm_state_survives_a_state_file() {
    let (a, vcpu_a) = vm_with_vcpu();
    let mut regs = vcpu_a.get_regs().unwrap();
    regs.rip = 0x100_0040;
    regs.rbx = 0x6000;
    regs.rflags = 0x2;
    vcpu_a.set_regs(&regs).unwrap();
    let mut sregs = vcpu_a.get_sregs().unwrap();
    sregs.cr0 |= 1; // PE
    vcpu_a.set_sregs(&sregs).unwrap();
    let msr = kvm_msr_entry {
        index: MSR_SYSENTER_CS,
        data: 0x10,
        ..Default::default()
    };
    assert_eq!(
        vcpu_a
            .set_msrs(&Msrs::from_entries(&[msr]).unwrap())
            .unwrap(),
        1
    );

    let indices = vcpu_state::msrs_to_save(&a.kvm).unwrap();
    assert!(indices.contains(&MSR_SYSENTER_CS));
    let saved = SnapshotState {
        vm: vm_state::capture(&a.fd).unwrap(),
        vcpus: vec![vcpu_state::capture(&a.fd, &vcpu_a, &indices).unwrap()],
        ..Default::default()
    };
    assert!(!saved.vcpus[0].msrs.is_empty());

    let dir = std::env::temp_dir().join(format!("kata-vmm-kvm-state-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kernel = dir.join("vmlinux");
    std::fs::write(&kernel, b"k").unwrap();
    let fp = ConfigFingerprint::of(&kernel, &[], 64, 1).unwrap();
    let file = dir.join("state");
    snapshot::save(&file, &fp, &saved).unwrap();
    let loaded = snapshot::load(&file, &fp).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();

    let (b, vcpu_b) = vm_with_vcpu();
    vm_state::restore(&b.fd, &loaded.vm).unwrap();
    vcpu_state::restore(&b.fd, &vcpu_b, &loaded.vcpus[0]).unwrap();

    let again = vcpu_state::capture(&b.fd, &vcpu_b, &indices).unwrap();
    let v = &saved.vcpus[0];
    assert_eq!(again.regs, v.regs);
    assert_eq!(again.sregs, v.sregs);
    assert_eq!(again.xcrs, v.xcrs);
    assert_eq!(again.debug_regs, v.debug_regs);
    assert_eq!(again.mp_state, v.mp_state);
    assert_eq!(again.cpuid, v.cpuid);
    assert_eq!(again.lapic.regs, v.lapic.regs);
    assert_eq!(again.xsave.region, v.xsave.region);
    let sysenter = |s: &vcpu_state::VcpuState| {
        s.msrs
            .iter()
            .find(|m| m.index == MSR_SYSENTER_CS)
            .map(|m| m.data)
    };
    assert_eq!(sysenter(&again), Some(0x10));
    // The restored VM's clock continues from the saved one (not from its own start).
    let vm_b = vm_state::capture(&b.fd).unwrap();
    let delta = vm_b.clock.clock.wrapping_sub(saved.vm.clock.clock);
    assert!(delta < 5_000_000_000, "clock moved by {delta} ns");
    assert_eq!(vm_b.pit.channels[0].count, saved.vm.pit.channels[0].count);
}

#[test]
fn tsc_deadline_is_restored_last() {
    let order = vcpu_state::restore_order(&[0x6e0, 0x10, 0x174, 0x6e0 + 1]);
    assert_eq!(order, vec![0x10, 0x174, 0x6e1, 0x6e0]);
}

/// A snapshot whose irqchip entries name the wrong chips is refused before KVM sees them.
#[test]
#[ignore = "needs /dev/kvm"]
fn kvm_state_refuses_swapped_irqchips() {
    let (a, _v) = vm_with_vcpu();
    let mut st = vm_state::capture(&a.fd).unwrap();
    std::mem::swap(&mut st.pic_master, &mut st.ioapic);
    let (b, _w) = vm_with_vcpu();
    let e = vm_state::restore(&b.fd, &st).unwrap_err().to_string();
    assert_eq!(e, "irqchip state for chip 2 where chip 0 belongs");
}

#[test]
fn clock_is_set_without_flags() {
    let saved = kvm_bindings::kvm_clock_data {
        clock: 42,
        flags: 0x7,
        realtime: 9,
        host_tsc: 8,
        ..Default::default()
    };
    let c = vm_state::clock_to_set(&saved);
    assert_eq!((c.clock, c.flags, c.realtime, c.host_tsc), (42, 0, 0, 0));
}

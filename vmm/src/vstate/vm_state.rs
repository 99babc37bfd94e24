//! The VM-wide KVM state for a snapshot: kvmclock, the in-kernel irqchip (both PICs and the
//! IOAPIC) and the PIT. Captured while every vCPU is paused; restored after the irqchip and the
//! PIT were created and before any vCPU runs.

use kvm_bindings::{
    kvm_clock_data, kvm_irqchip, kvm_pit_state2, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE,
};
use kvm_ioctls::VmFd;
use serde::{Deserialize, Serialize};

use super::StateError;

/// What KVM holds of the VM outside the vCPUs.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct VmState {
    /// kvmclock: the guest's clock in nanoseconds (`KVM_GET_CLOCK`).
    pub clock: kvm_clock_data,
    /// The master 8259 PIC.
    pub pic_master: kvm_irqchip,
    /// The slave 8259 PIC.
    pub pic_slave: kvm_irqchip,
    /// The IOAPIC (redirection table, id).
    pub ioapic: kvm_irqchip,
    /// The 8254 PIT (`KVM_GET_PIT2`).
    pub pit: kvm_pit_state2,
}

fn get_chip(vm: &VmFd, chip_id: u32) -> Result<kvm_irqchip, StateError> {
    let mut chip = kvm_irqchip {
        chip_id,
        ..Default::default()
    };
    vm.get_irqchip(&mut chip)
        .map_err(StateError::kvm("KVM_GET_IRQCHIP"))?;
    Ok(chip)
}

/// Captures the VM's state (every vCPU paused).
pub fn capture(vm: &VmFd) -> Result<VmState, StateError> {
    Ok(VmState {
        clock: vm.get_clock().map_err(StateError::kvm("KVM_GET_CLOCK"))?,
        pic_master: get_chip(vm, KVM_IRQCHIP_PIC_MASTER)?,
        pic_slave: get_chip(vm, KVM_IRQCHIP_PIC_SLAVE)?,
        ioapic: get_chip(vm, KVM_IRQCHIP_IOAPIC)?,
        pit: vm.get_pit2().map_err(StateError::kvm("KVM_GET_PIT2"))?,
    })
}

/// The clock as `KVM_SET_CLOCK` takes it: only the time. The flags `KVM_GET_CLOCK` reports
/// (`KVM_CLOCK_TSC_STABLE`, ...) are outputs; `KVM_SET_CLOCK` refuses most of them, and
/// `KVM_CLOCK_REALTIME` would make KVM advance the clock by the wall time since the capture
/// (a template restored hours later must not see its timers jump).
pub fn clock_to_set(saved: &kvm_clock_data) -> kvm_clock_data {
    kvm_clock_data {
        clock: saved.clock,
        ..Default::default()
    }
}

/// Restores `state` into a VM whose irqchip and PIT exist (`Vm::setup_platform`).
pub fn restore(vm: &VmFd, state: &VmState) -> Result<(), StateError> {
    let k = StateError::kvm;
    vm.set_pit2(&state.pit).map_err(k("KVM_SET_PIT2"))?;
    // The chip ids come from the snapshot too: each entry must be the chip it names, or a
    // file could load, say, PIC state into the IOAPIC.
    for (chip, id) in [
        (&state.pic_master, KVM_IRQCHIP_PIC_MASTER),
        (&state.pic_slave, KVM_IRQCHIP_PIC_SLAVE),
        (&state.ioapic, KVM_IRQCHIP_IOAPIC),
    ] {
        if chip.chip_id != id {
            return Err(StateError::ChipId {
                expected: id,
                found: chip.chip_id,
            });
        }
        vm.set_irqchip(chip).map_err(k("KVM_SET_IRQCHIP"))?;
    }
    vm.set_clock(&clock_to_set(&state.clock))
        .map_err(k("KVM_SET_CLOCK"))?;
    Ok(())
}

//! The KVM VM: `/dev/kvm`, the VM fd, and the platform KVM emulates in the kernel (TSS
//! address, irqchip: PIC + IOAPIC + LAPICs, PIT).

use anyhow::{anyhow, Result};
use kvm_bindings::{kvm_pit_config, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VmFd};

use crate::layout::KVM_TSS_ADDR;

/// `/dev/kvm` and the VM created on it.
pub struct Vm {
    /// The KVM system fd (supported CPUID, capabilities).
    pub kvm: Kvm,
    /// The VM fd (memory slots, irqfds, ioeventfds, vCPUs).
    pub fd: VmFd,
}

impl Vm {
    /// Opens `/dev/kvm` and creates an empty VM.
    pub fn new() -> Result<Self> {
        let kvm = Kvm::new().map_err(|e| anyhow!("cannot open /dev/kvm: {e}"))?;
        let fd = kvm.create_vm().map_err(|e| anyhow!("KVM_CREATE_VM: {e}"))?;
        Ok(Vm { kvm, fd })
    }

    /// The in-kernel platform: the TSS address (Intel), the irqchip and the PIT (speaker
    /// dummy). After guest memory is registered, before any irqfd or vCPU.
    pub fn setup_platform(&self) -> Result<()> {
        self.fd
            .set_tss_address(KVM_TSS_ADDR)
            .map_err(|e| anyhow!("KVM_SET_TSS_ADDR: {e}"))?;
        self.fd
            .create_irq_chip()
            .map_err(|e| anyhow!("KVM_CREATE_IRQCHIP: {e}"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        self.fd
            .create_pit2(pit)
            .map_err(|e| anyhow!("KVM_CREATE_PIT2: {e}"))?;
        Ok(())
    }
}

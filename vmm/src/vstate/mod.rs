//! KVM state of the VM: the VM itself with its in-kernel irqchip and PIT (`vm`), guest RAM
//! and its KVM memory slots (`memory`), the vCPUs and their run loop (`vcpu`).

pub mod memory;
pub mod vcpu;
pub mod vm;

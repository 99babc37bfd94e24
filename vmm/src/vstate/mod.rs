//! KVM state of the VM: the VM itself with its in-kernel irqchip and PIT (`vm`), guest RAM
//! and its KVM memory slots (`memory`), the vCPUs and their run loop (`vcpu`), and the
//! capture/restore of the KVM state a snapshot holds (`vm_state`, `vcpu_state`).

pub mod memory;
#[cfg(test)]
mod state_tests;
pub mod vcpu;
pub mod vcpu_state;
pub mod vm;
pub mod vm_state;

/// A KVM state capture or restore that failed; names the ioctl or the missing capability.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// An ioctl failed.
    #[error("{0}: {1}")]
    Kvm(&'static str, kvm_ioctls::Error),
    /// The host's KVM lacks a capability the state needs.
    #[error("KVM on this host lacks {0}")]
    Unsupported(&'static str),
    /// KVM's XSAVE area is larger than `kvm_xsave` (dynamically enabled XSAVE features).
    #[error("KVM's XSAVE area is {0} bytes, more than the 4096 of kvm_xsave")]
    XsaveTooBig(i32),
    /// KVM did not take one of the saved MSRs.
    #[error("KVM_SET_MSRS refused MSR {0:#x}")]
    MsrRefused(u32),
    /// A saved irqchip state is not for the chip it is restored into.
    #[error("irqchip state for chip {found} where chip {expected} belongs")]
    ChipId {
        /// The chip id the entry is restored as.
        expected: u32,
        /// The chip id the state carries.
        found: u32,
    },
    /// A KVM list (MSRs, CPUID entries) has more entries than KVM takes.
    #[error("too many entries for a KVM list: {0}")]
    Fam(String),
}

impl StateError {
    /// Wraps the error of the ioctl `what` (for `map_err`).
    pub fn kvm(what: &'static str) -> impl Fn(kvm_ioctls::Error) -> StateError {
        move |e| StateError::Kvm(what, e)
    }
}

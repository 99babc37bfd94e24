//! vCPUs: creation and register/CPUID setup (see `cpu.rs`) on the VM's thread, and the run
//! loop of each vCPU thread.

use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Result};
use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::{Cap, VcpuExit, VcpuFd};

use super::vm::Vm;
use crate::boot::BootInfo;
use crate::cpu;
use crate::devices::{Action, Devices};
use crate::pause::Pauser;
use crate::seccomp::{self, ThreadClass};
use crate::vmm::{Exit, ExitState};
use tracing::debug;

/// Creates `count` vCPUs and sets each up for the boot described by `bi` (CPUID from
/// `KVM_GET_SUPPORTED_CPUID`, LAPIC, the boot vCPU's registers).
pub fn create(vm: &Vm, count: u8, bi: &BootInfo) -> Result<Vec<VcpuFd>> {
    let base_cpuid = vm
        .kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| anyhow!("KVM_GET_SUPPORTED_CPUID: {e}"))?;
    let tsc_deadline = vm.kvm.check_extension(Cap::TscDeadlineTimer);
    let mut vcpus = Vec::new();
    for id in 0..count {
        let vcpu = vm
            .fd
            .create_vcpu(u64::from(id))
            .map_err(|e| anyhow!("KVM_CREATE_VCPU {id}: {e}"))?;
        cpu::configure(&vcpu, id, count, &base_cpuid, tsc_deadline, bi)?;
        vcpus.push(vcpu);
    }
    Ok(vcpus)
}

/// Creates one vCPU per saved state and restores it (CPUID, registers, LAPIC, MSRs, ...: see
/// [`super::vcpu_state::restore`]); the VM's own state must be restored already or next.
pub fn create_restored(vm: &Vm, states: &[super::vcpu_state::VcpuState]) -> Result<Vec<VcpuFd>> {
    let mut vcpus = Vec::new();
    for (id, st) in states.iter().enumerate() {
        let vcpu = vm
            .fd
            .create_vcpu(id as u64)
            .map_err(|e| anyhow!("KVM_CREATE_VCPU {id}: {e}"))?;
        super::vcpu_state::restore(&vm.fd, &vcpu, st)
            .map_err(|e| anyhow!("restoring vCPU {id}: {e}"))?;
        vcpus.push(vcpu);
    }
    Ok(vcpus)
}

/// The body of vCPU thread `id`: installs the thread's seccomp filter, then runs the vCPU,
/// dispatching port and MMIO exits to `devices`, until the guest stops or an error; the
/// reason goes to `exit`.
pub fn vcpu_loop(
    id: u8,
    vcpu: Arc<Mutex<VcpuFd>>,
    devices: Devices,
    exit: Arc<ExitState>,
    filter: Option<(ThreadClass, seccomp::ThreadFilter)>,
    pauser: Arc<Pauser>,
) {
    pauser.register();
    // The vCPU is fully set up; jail the thread before the guest runs on it.
    if let Some((class, f)) = filter {
        if let Err(e) = seccomp::install(class, &f) {
            exit.set(Exit::Error(format!("vCPU {id}: {e}")));
            return;
        }
    }
    loop {
        pauser.park_while_paused();
        // Held while the vCPU runs and its exit is handled; free while the thread is parked,
        // when the main thread may read the vCPU's state for a snapshot.
        let mut vcpu = vcpu.lock().unwrap_or_else(|p| p.into_inner());
        let stop = match vcpu.run() {
            Ok(VcpuExit::IoIn(port, data)) => {
                devices.pio_read(port, data);
                None
            }
            Ok(VcpuExit::IoOut(port, data)) => match devices.pio_write(port, data) {
                Action::Reset => {
                    debug!("vCPU {id}: i8042 reset");
                    Some(Exit::GuestStopped)
                }
                Action::Continue => None,
            },
            Ok(VcpuExit::MmioRead(addr, data)) => {
                devices.mmio_read(addr, data);
                None
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                devices.mmio_write(addr, data);
                None
            }
            // Not the guest's orderly reset (that is the i8042 write above): say which, so
            // a guest that dies before its agent answers is not a mystery.
            Ok(VcpuExit::Shutdown) => {
                tracing::info!("vCPU {id}: guest stopped: triple fault (KVM_EXIT_SHUTDOWN)");
                Some(Exit::GuestStopped)
            }
            Ok(VcpuExit::Hlt) => {
                tracing::info!("vCPU {id}: guest stopped: halted (KVM_EXIT_HLT)");
                Some(Exit::GuestStopped)
            }
            Ok(VcpuExit::SystemEvent(kind, _)) => {
                tracing::info!("vCPU {id}: guest stopped: KVM system event {kind}");
                Some(Exit::GuestStopped)
            }
            Ok(VcpuExit::FailEntry(reason, cpu)) => Some(Exit::Error(format!(
                "vCPU {id}: KVM entry failed (hardware reason {reason:#x}, cpu {cpu})"
            ))),
            Ok(VcpuExit::InternalError) => {
                Some(Exit::Error(format!("vCPU {id}: KVM internal error")))
            }
            Ok(other) => {
                debug!("vCPU {id}: ignored exit {other:?}");
                None
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => None,
            Err(e) => Some(Exit::Error(format!("vCPU {id}: KVM_RUN: {e}"))),
        };
        if let Some(s) = stop {
            exit.set(s);
            return;
        }
    }
}

//! Where a guest that never comes up is stuck. A cold-booted guest activates its virtio
//! devices (DRIVER_OK) early in its boot, long before its agent answers; if none is active
//! `--boot-watch-secs` (default [`DEFAULT_SECS`]) after the VMM started, and again twice that
//! long after, the vCPUs are paused for a moment, each one's
//! instruction pointer, mode and run state are logged as a warning (stderr, which the shim
//! relays to its log), and they run on. Without this, a guest that hangs before its first
//! console line (`quiet`) shows nothing but a running vCPU thread. A restored VM's devices
//! are active from its start, so it is never sampled. The same sample is logged whenever the
//! VMM gets SIGUSR1 ([`VcpuProbe`]): the shim sends it when a guest's agent never answers.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvm_ioctls::VcpuFd;

use crate::device_manager::lock_transport;
use crate::devices::SharedTransport;
use crate::pause::Pauser;

/// When, after the VMM's start, a guest with no active virtio device is first sampled
/// (seconds; again at twice that). A guest on real KVM activates them in well under a
/// second; an emulated node takes up to ~30 s.
pub const DEFAULT_SECS: u64 = 45;
/// How long the sampling waits for the vCPUs to stop.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Reads where each vCPU is, pausing the VM for a moment.
#[derive(Clone)]
pub struct VcpuProbe {
    vcpus: Vec<Arc<Mutex<VcpuFd>>>,
    pauser: Arc<Pauser>,
}

/// The watch: the VM's vCPUs and virtio transports, and which mark comes next.
pub struct BootWatch {
    start: Instant,
    marks: Vec<Duration>,
    next: usize,
    probe: VcpuProbe,
    transports: Vec<SharedTransport>,
}

impl BootWatch {
    /// Watches a VM started at `start`, first sampled `first` after it (None: never; the
    /// probe still serves SIGUSR1).
    pub fn new(
        start: Instant,
        first: Option<Duration>,
        probe: VcpuProbe,
        transports: Vec<SharedTransport>,
    ) -> BootWatch {
        BootWatch {
            start,
            marks: first.map(|f| vec![f, f * 2]).unwrap_or_default(),
            next: 0,
            probe,
            transports,
        }
    }

    /// The probe (for SIGUSR1).
    pub fn probe(&self) -> &VcpuProbe {
        &self.probe
    }

    /// How long until the next mark (zero if it passed); None once the watch is done.
    pub fn due_in(&self, now: Instant) -> Option<Duration> {
        let at = self.start + *self.marks.get(self.next)?;
        Some(at.saturating_duration_since(now))
    }

    /// At a passed mark: done if a virtio device is active, else samples the vCPUs and logs
    /// where they are.
    pub fn tick(&mut self, now: Instant) {
        let Some(d) = self.due_in(now) else { return };
        if !d.is_zero() {
            return;
        }
        if self
            .transports
            .iter()
            .any(|t| lock_transport(t).is_active())
        {
            self.next = self.marks.len();
            return;
        }
        let mark = self.marks[self.next];
        self.next += 1;
        tracing::warn!(
            "guest not up {} s after start (no virtio device activated): {}",
            mark.as_secs(),
            self.probe.sample()
        );
    }
}

impl VcpuProbe {
    /// Probes `vcpus`, which `pauser` stops.
    pub fn new(vcpus: Vec<Arc<Mutex<VcpuFd>>>, pauser: Arc<Pauser>) -> VcpuProbe {
        VcpuProbe { vcpus, pauser }
    }

    /// Each vCPU's state, read while the VM is paused a moment (a VM the control socket
    /// paused is read as it is and left paused).
    pub fn sample(&self) -> String {
        let was_paused = self.pauser.is_paused();
        let paused = if was_paused {
            Ok(())
        } else {
            self.pauser.pause(PAUSE_TIMEOUT)
        };
        let mut parts: Vec<String> = Vec::new();
        if let Err(e) = &paused {
            parts.push(format!("pause: {e}"));
        }
        for (i, v) in self.vcpus.iter().enumerate() {
            // A vCPU that did not stop holds its lock (in KVM_RUN): not waited for.
            let s = match v.try_lock() {
                Ok(fd) => describe(&fd),
                Err(std::sync::TryLockError::Poisoned(p)) => describe(&p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => "did not stop".into(),
            };
            parts.push(format!("vCPU{i} {s}"));
        }
        if !was_paused {
            self.pauser.resume();
        }
        parts.join("; ")
    }
}

/// `rip=… rsp=… rflags=… cr0=… cr3=… mode=… mp_state=…` of a stopped vCPU.
fn describe(fd: &VcpuFd) -> String {
    let regs = match fd.get_regs() {
        Ok(r) => r,
        Err(e) => return format!("registers: {e}"),
    };
    let (cr0, cr3, mode) = match fd.get_sregs() {
        Ok(s) => (s.cr0, s.cr3, mode(s.cr0, s.efer, s.cs.l)),
        Err(_) => (0, 0, "?"),
    };
    let mp = fd
        .get_mp_state()
        .map(|m| mp_state_name(m.mp_state))
        .unwrap_or("?");
    format!(
        "rip={:#x} rsp={:#x} rflags={:#x} (IF={}) cr0={cr0:#x} cr3={cr3:#x} mode={mode} \
         mp_state={mp}",
        regs.rip,
        regs.rsp,
        regs.rflags,
        (regs.rflags >> 9) & 1
    )
}

/// The CPU mode from CR0.PE, EFER.LMA and CS.L.
fn mode(cr0: u64, efer: u64, cs_l: u8) -> &'static str {
    const PE: u64 = 1;
    const LMA: u64 = 1 << 10;
    match (cr0 & PE != 0, efer & LMA != 0, cs_l != 0) {
        (false, _, _) => "real",
        (true, true, true) => "long64",
        (true, true, false) => "compat32",
        (true, false, _) => "prot32",
    }
}

/// KVM's `mp_state` by name (`KVM_MP_STATE_*`).
fn mp_state_name(s: u32) -> &'static str {
    match s {
        kvm_bindings::KVM_MP_STATE_RUNNABLE => "runnable",
        kvm_bindings::KVM_MP_STATE_UNINITIALIZED => "uninitialized",
        kvm_bindings::KVM_MP_STATE_INIT_RECEIVED => "init-received",
        kvm_bindings::KVM_MP_STATE_HALTED => "halted",
        kvm_bindings::KVM_MP_STATE_SIPI_RECEIVED => "sipi-received",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_by_control_bits() {
        assert_eq!(mode(0, 0, 0), "real");
        assert_eq!(mode(1, 0, 0), "prot32");
        assert_eq!(mode(0x8000_0011, 1 << 10, 1), "long64");
        assert_eq!(mode(0x8000_0011, 1 << 10, 0), "compat32");
    }

    #[test]
    fn the_marks_come_due_in_order_and_end() {
        let t0 = Instant::now();
        const MARKS: [Duration; 2] = [Duration::from_secs(45), Duration::from_secs(90)];
        let pauser = Arc::new(Pauser::new(0));
        let probe = VcpuProbe::new(Vec::new(), pauser.clone());
        let mut w = BootWatch::new(t0, Some(MARKS[0]), probe.clone(), Vec::new());
        assert_eq!(w.due_in(t0), Some(MARKS[0]));
        // Before a mark: nothing happens.
        w.tick(t0 + MARKS[0] / 2);
        assert_eq!(w.due_in(t0), Some(MARKS[0]));
        // At each mark with no active device: sampled (no vCPUs here), the next one comes.
        w.tick(t0 + MARKS[0]);
        assert_eq!(w.due_in(t0 + MARKS[0]), Some(MARKS[1] - MARKS[0]));
        w.tick(t0 + MARKS[1] + Duration::from_secs(1));
        assert_eq!(w.due_in(t0 + MARKS[1]), None);
        assert!(!pauser.is_paused(), "the VM runs on after a sample");
        // Off: no mark ever comes.
        assert_eq!(BootWatch::new(t0, None, probe, Vec::new()).due_in(t0), None);
    }

    #[test]
    fn mp_states_by_name() {
        assert_eq!(mp_state_name(kvm_bindings::KVM_MP_STATE_HALTED), "halted");
        assert_eq!(
            mp_state_name(kvm_bindings::KVM_MP_STATE_RUNNABLE),
            "runnable"
        );
        assert_eq!(mp_state_name(999), "other");
    }
}

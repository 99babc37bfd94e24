//! The running VM: how it ends ([`Exit`], [`ExitState`]), the control requests, and the exit
//! summaries; its main thread's event loop is [`crate::event_loop`]. [`crate::builder`]
//! builds it from a [`VmConfig`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use kata_rs_protocol::control::{Reply, VmState};

use crate::api::{Request, Response};
use crate::args::VmConfig;
use crate::device_manager::lock_transport;
use crate::devices::console_log::SharedLog;
use crate::devices::SharedTransport;
use crate::event_loop::EventLoop;
use crate::pause::Pauser;
use crate::vstate::vm::Vm;
use tracing::debug;

/// How the VM ended; [`Exit::code`] maps it to the process exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// The guest reset, rebooted, powered off or triple faulted.
    GuestStopped,
    /// SIGTERM or SIGINT.
    Signal(i32),
    /// The guest stopped by itself (reset, triple fault, system event) within
    /// [`PANIC_WINDOW`] of a `Kernel panic` line on its console: most likely a kernel panic
    /// (`panic=1` resets one second after it). Only a hint: the text is guest output, which
    /// any guest process that can open the console device can print, so it never ends a VM
    /// that keeps running.
    Panic,
    /// A VMM error.
    Error(String),
}

impl Exit {
    /// Process exit status per `docs/design.md`.
    pub fn code(&self) -> i32 {
        match self {
            Exit::GuestStopped | Exit::Signal(_) => 0,
            Exit::Error(_) => 1,
            Exit::Panic => 2,
        }
    }
}

/// Shared between the vCPU threads, the console and the main thread: the first final exit
/// reason wins; the main thread is woken through `evt`.
pub struct ExitState {
    evt: EventFd,
    reason: Mutex<Option<Exit>>,
    /// When the console last showed the panic marker.
    panic_seen: Mutex<Option<Instant>>,
    /// The marker was reported on stderr (once).
    panic_told: AtomicBool,
}

impl ExitState {
    pub(crate) fn new() -> Result<Arc<Self>> {
        Ok(Arc::new(ExitState {
            evt: EventFd::new(EFD_NONBLOCK).context("eventfd")?,
            reason: Mutex::new(None),
            panic_seen: Mutex::new(None),
            panic_told: AtomicBool::new(false),
        }))
    }

    /// The console printed the panic marker (called on every sighting).
    pub(crate) fn console_panic_marker(&self) {
        *self.panic_seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        if !self.panic_told.swap(true, Ordering::SeqCst) {
            tracing::info!(
                "the guest console printed \"Kernel panic\" (guest output, not \
                 trusted: it only labels a guest stop that follows within {}s)",
                PANIC_WINDOW.as_secs()
            );
        }
    }

    /// A guest stop right after the marker is reported as a panic.
    fn recent_panic_marker(&self) -> bool {
        self.panic_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| t.elapsed() <= PANIC_WINDOW)
    }

    /// Records `exit` unless another reason came first, and wakes the main thread.
    pub fn set(&self, exit: Exit) {
        let exit = if exit == Exit::GuestStopped && self.recent_panic_marker() {
            Exit::Panic
        } else {
            exit
        };
        let mut r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_none() {
            *r = Some(exit);
        }
        let _ = self.evt.write(1);
    }

    /// The eventfd [`ExitState::set`] writes (the event loop watches it).
    pub(crate) fn event(&self) -> &EventFd {
        &self.evt
    }

    pub(crate) fn get(&self) -> Option<Exit> {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A guest stop this soon after the console's last `Kernel panic` line is exit status 2. The
/// guest kernel (`panic=1`) resets one second after its panic message ends; the window is
/// generous for slow (emulated) hosts. The text alone never ends the VM: a container that
/// can open ttyS0/hvc0 can print it.
const PANIC_WINDOW: Duration = Duration::from_secs(10);

/// Blocks SIGTERM and SIGINT in the calling thread (and so in every thread it spawns after)
/// and returns a signalfd that reads them.
pub(crate) fn block_signals() -> Result<libc::c_int> {
    // SAFETY: plain libc calls on a stack sigset; the mask is set before any thread is spawned
    // so every vCPU thread inherits it, and the signals are then only read via signalfd.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        // Not an exit: "log where the vCPUs are" (boot_watch::VcpuProbe).
        libc::sigaddset(&mut set, libc::SIGUSR1);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            bail!("pthread_sigmask: {}", std::io::Error::from_raw_os_error(rc));
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
        if fd < 0 {
            bail!("signalfd: {}", std::io::Error::last_os_error());
        }
        Ok(fd)
    }
}

/// A running VM, as [`crate::builder::build`] leaves it: the guest runs on its vCPU threads,
/// the main thread (already under its seccomp filter) has only its event loop left.
pub struct Vmm {
    pub(crate) events: EventLoop,
    pub(crate) console_log: SharedLog,
    /// The VMM's own devices, in slot order (for their exit summaries).
    pub(crate) own: Vec<SharedTransport>,
    /// Kept open to the end: closing the VM fd would release its irqfds.
    pub(crate) _vm: Arc<Vm>,
    /// Guest RAM (the devices hold it too).
    pub(crate) _mem: Arc<GuestMemoryMmap>,
    /// The vCPU and queue worker threads (never joined: the process exits with the VM).
    pub(crate) _threads: Vec<std::thread::JoinHandle<()>>,
}

impl Vmm {
    /// Serves the VM until the first exit reason, then writes the console log's tail and
    /// the exit summaries (console log, every device of the VMM's own) on stderr.
    pub fn run(mut self) -> Result<Exit> {
        let ended = self.events.run();
        {
            let mut log = self.console_log.lock().unwrap_or_else(|p| p.into_inner());
            log.flush_tail();
            tracing::info!("{}", log.report());
        }
        for d in &self.own {
            if let Some(report) = lock_transport(d).exit_report() {
                tracing::info!("{report}");
            }
        }
        ended
    }
}

/// Boots the VM described by `cfg` and runs it to the end.
pub fn run(cfg: &VmConfig) -> Result<Exit> {
    crate::builder::build(cfg)?.run()
}

/// How long a `pause` command waits for every vCPU to leave `KVM_RUN`.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs one control request; its response. `snap`: what a `snapshot` needs (None without
/// `--snapshot-root`).
pub(crate) fn api_command(
    req: Request,
    pauser: &Pauser,
    snap: Option<&crate::snapshot::take::Snapshotter>,
) -> Response {
    let state = |p: &Pauser| {
        Reply::State(if p.is_paused() {
            VmState::Paused
        } else {
            VmState::Running
        })
    };
    match req {
        Request::Ping {} => Response::Ok(Reply::Pong),
        Request::Pause {} => match pauser.pause(PAUSE_TIMEOUT) {
            Ok(()) => {
                debug!("paused");
                Response::Ok(Reply::State(VmState::Paused))
            }
            Err(e) => Response::Error(format!("pause: {e}")),
        },
        Request::Resume {} => {
            pauser.resume();
            debug!("resumed");
            Response::Ok(Reply::State(VmState::Running))
        }
        Request::State {} => Response::Ok(state(pauser)),
        Request::Snapshot { dir } => {
            let Some(snap) = snap else {
                return Response::Error(
                    "snapshot: this VMM was started without --snapshot-root".into(),
                );
            };
            if !pauser.all_parked() {
                return Response::Error("snapshot: the VM must be paused first (pause)".into());
            }
            match snap.take(&dir) {
                Ok(what) => {
                    debug!("snapshot: {what}");
                    Response::Ok(Reply::Snapshot(what))
                }
                Err(e) => Response::Error(format!("snapshot: {e}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_panic_text_is_only_a_label_for_a_guest_stop() {
        // The text alone ends nothing: no exit reason is recorded.
        let e = ExitState::new().unwrap();
        e.console_panic_marker();
        e.console_panic_marker();
        assert_eq!(e.get(), None);
        // A guest stop right after it is labelled a panic (status 2) ...
        e.set(Exit::GuestStopped);
        assert_eq!(e.get(), Some(Exit::Panic));
        assert_eq!(Exit::Panic.code(), 2);
        // ... a signal (the shim's SIGTERM) stays a signal, status 0 ...
        let e = ExitState::new().unwrap();
        e.console_panic_marker();
        e.set(Exit::Signal(libc::SIGTERM));
        assert_eq!(e.get().map(|x| x.code()), Some(0));
        // ... and a stop long after the last marker is a plain stop.
        let e = ExitState::new().unwrap();
        *e.panic_seen.lock().unwrap() = Instant::now().checked_sub(PANIC_WINDOW * 2);
        e.set(Exit::GuestStopped);
        assert_eq!(e.get(), Some(Exit::GuestStopped));
        // Without any marker: a plain stop.
        let e = ExitState::new().unwrap();
        e.set(Exit::GuestStopped);
        assert_eq!(e.get(), Some(Exit::GuestStopped));
    }
}

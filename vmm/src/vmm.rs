//! The running VM: how it ends ([`Exit`], [`ExitState`]), the main thread's event loop
//! (queue notifications, device backends, signals, the control socket) and the exit
//! summaries. [`crate::builder`] builds it from a [`VmConfig`].

use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::api::{ApiServer, Request, Response};
use crate::args::VmConfig;
use crate::debug;
use crate::device_manager::{lock_transport, EventSources};
use crate::devices::console_log::{SharedLog, FLUSH_INTERVAL};
use crate::devices::virtio::worker::QueueEvent;
use crate::devices::SharedTransport;
use crate::pause::Pauser;
use crate::vstate::vm::Vm;
use kata_rs_protocol::control::{Reply, VmState};

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
            eprintln!(
                "kata-vmm: the guest console printed \"Kernel panic\" (guest output, not \
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

    fn get(&self) -> Option<Exit> {
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

fn read_signal(fd: libc::c_int) -> Option<i32> {
    // SAFETY: signalfd_siginfo is plain old data; read() writes at most its size into it.
    unsafe {
        let mut info: libc::signalfd_siginfo = std::mem::zeroed();
        let n = libc::read(
            fd,
            &mut info as *mut _ as *mut libc::c_void,
            std::mem::size_of::<libc::signalfd_siginfo>(),
        );
        (n == std::mem::size_of::<libc::signalfd_siginfo>() as isize)
            .then_some(info.ssi_signo as i32)
    }
}

/// A running VM, as [`crate::builder::build`] leaves it: the guest runs on its vCPU threads,
/// the main thread (already under its seccomp filter) has only its event loop left.
pub struct Vmm {
    pub(crate) exit: Arc<ExitState>,
    pub(crate) sigfd: libc::c_int,
    pub(crate) sources: EventSources,
    pub(crate) api: Option<ApiServer>,
    pub(crate) pauser: Arc<Pauser>,
    pub(crate) console_log: SharedLog,
    /// Kept open to the end: closing the VM fd would release its irqfds.
    pub(crate) _vm: Vm,
    /// Guest RAM (the devices hold it too).
    pub(crate) _mem: Arc<GuestMemoryMmap>,
    /// The vCPU and queue worker threads (never joined: the process exits with the VM).
    pub(crate) _threads: Vec<std::thread::JoinHandle<()>>,
}

impl Vmm {
    /// Serves the VM until the first exit reason, then writes the console log's tail and
    /// the exit summaries (console log, every device of the VMM's own) on stderr.
    pub fn run(self) -> Result<Exit> {
        let ended = event_loop(
            &self.exit,
            self.sigfd,
            &self.sources.queue_events,
            self.sources.vhost_user_watch,
            &self.sources.backends,
            self.api,
            &self.pauser,
            &self.console_log,
        );
        {
            let mut log = self.console_log.lock().unwrap_or_else(|p| p.into_inner());
            log.flush_tail();
            eprintln!("kata-vmm: {}", log.report());
        }
        for d in &self.sources.own {
            if let Some(report) = lock_transport(d).exit_report() {
                eprintln!("kata-vmm: {report}");
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

/// Runs one control request; its response.
fn api_command(req: Request, pauser: &Pauser) -> Response {
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
    }
}

/// The main thread's loop (under its seccomp filter): serves queue notifications of the VMM's
/// own devices and waits for the first exit reason or a signal; writes the console log's
/// tail once the guest has been quiet for a second.
#[allow(clippy::too_many_arguments)]
fn event_loop(
    exit: &ExitState,
    sigfd: libc::c_int,
    queues: &[QueueEvent],
    fs_watch: Option<RawFd>,
    backends: &[SharedTransport],
    mut api: Option<ApiServer>,
    pauser: &Pauser,
    console_log: &SharedLog,
) -> Result<Exit> {
    let pollin = |fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let mut fds = vec![pollin(exit.evt.as_raw_fd()), pollin(sigfd)];
    fds.extend(queues.iter().map(|q| pollin(q.evt.as_raw_fd())));
    // The vhost-user socket, watched for a hang-up only (no events asked: the vCPU thread
    // doing a DRIVER_OK owns its traffic; POLLHUP/POLLERR are always reported).
    let fs_at = fds.len();
    fds.push(libc::pollfd {
        fd: fs_watch.unwrap_or(-1),
        events: 0,
        revents: 0,
    });
    let fixed = fds.len();
    let lock_log = || console_log.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        if let Some(r) = exit.get() {
            return Ok(r);
        }
        // A console log tail not yet in the file: wake up once the guest is quiet.
        let timeout = if lock_log().dirty() {
            FLUSH_INTERVAL.as_millis() as i32
        } else {
            -1
        };
        // Device backends (taps) are polled only for what the device can take now (fd -1:
        // not at all, so a tap without RX buffers cannot wake the loop); the control socket's
        // fds change as connections come and go.
        fds.truncate(fixed);
        for b in backends {
            let want = lock_transport(b).backend_poll();
            fds.push(match want {
                Some((fd, ev)) if ev != 0 => libc::pollfd {
                    fd,
                    events: ev,
                    revents: 0,
                },
                _ => pollin(-1),
            });
        }
        let api_at = fds.len();
        if let Some(a) = &api {
            fds.extend(a.fds().into_iter().map(pollin));
        }
        for f in &mut fds {
            f.revents = 0;
        }
        // SAFETY: `fds` is a valid array of pollfd for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                bail!("poll: {e}");
            }
            continue;
        }
        if n == 0 {
            lock_log().flush_tail();
        }
        if fds[0].revents & libc::POLLIN != 0 {
            let _ = exit.evt.read();
        }
        if fds[1].revents & libc::POLLIN != 0 {
            if let Some(sig) = read_signal(sigfd) {
                debug!("signal {sig}");
                exit.set(Exit::Signal(sig));
            }
        }
        for (f, q) in fds[2..fs_at].iter().zip(queues) {
            if f.revents & libc::POLLIN != 0 {
                q.serve();
            }
        }
        if fds[fs_at].fd >= 0 && fds[fs_at].revents != 0 {
            eprintln!(
                "kata-vmm: warning: virtio-fs: the vhost-user backend closed its socket \
                 (virtiofsd gone?); the guest's virtio-fs requests are no longer served"
            );
            // Once: a hung-up socket stays readable-for-HUP forever.
            fds[fs_at].fd = -1;
        }
        for (f, b) in fds[fixed..api_at].iter().zip(backends) {
            if f.fd >= 0 && f.revents != 0 {
                lock_transport(b).backend_ready(f.revents);
            }
        }
        if let Some(a) = &mut api {
            // POLLHUP/POLLERR count too: the read then sees the end and drops the connection.
            let ready: Vec<bool> = fds[api_at..].iter().map(|f| f.revents != 0).collect();
            a.serve(&ready, &mut |req| api_command(req, pauser));
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

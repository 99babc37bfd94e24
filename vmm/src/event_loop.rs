//! The main thread's event loop: an `event-manager` [`EventManager`] (one epoll) with one
//! subscriber per event source: the exit eventfd and the signalfd ([`ExitSubscriber`]), each
//! device the main thread serves (its queue eventfds and host backend fd:
//! [`DeviceSubscriber`]), the vhost-user socket's hang-up ([`VhostUserWatch`]) and the
//! control socket ([`ApiSubscriber`]). Built before the jail's fd limit (the epoll fd and
//! every registration exist then), run under the main thread's seccomp filter.

use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{anyhow, bail, Result};
use event_manager::{
    EventManager, EventOps, EventSet, Events, MutEventSubscriber, SubscriberId, SubscriberOps,
};

use crate::api::{ApiServer, ApiSubscriber};
use crate::boot_watch::{BootWatch, VcpuProbe};
use crate::devices::console_log::{SharedLog, FLUSH_INTERVAL};
use crate::devices::virtio::worker::{DeviceSubscriber, ServedDevice};
use crate::pause::Pauser;
use crate::vmm::{api_command, Exit, ExitState};
use tracing::debug;

/// What the event manager holds: any subscriber, shared with the loop where it needs to
/// reach one (the devices, for [`DeviceSubscriber::refresh_backend`]).
type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// The exit eventfd (read to clear it; the reason is in [`ExitState`]) and the signalfd
/// (SIGTERM/SIGINT become [`Exit::Signal`]; SIGUSR1 logs where the vCPUs are).
struct ExitSubscriber {
    exit: Arc<ExitState>,
    sigfd: RawFd,
    probe: VcpuProbe,
}

impl MutEventSubscriber for ExitSubscriber {
    fn init(&mut self, ops: &mut EventOps) {
        for fd in [self.exit.event().as_raw_fd(), self.sigfd] {
            if let Err(e) = ops.add(Events::new_raw(fd, EventSet::IN)) {
                self.exit.set(Exit::Error(format!(
                    "event loop: watching the exit fds: {e}"
                )));
            }
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if !events.event_set().contains(EventSet::IN) {
            return;
        }
        if events.fd() == self.sigfd {
            match read_signal(self.sigfd) {
                Some(libc::SIGUSR1) => {
                    tracing::warn!("vCPU state (SIGUSR1): {}", self.probe.sample());
                }
                Some(sig) => {
                    debug!("signal {sig}");
                    self.exit.set(Exit::Signal(sig));
                }
                None => {}
            }
        } else {
            let _ = self.exit.event().read();
        }
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

/// The vhost-user backend's socket, watched for a hang-up only (no events asked: the vCPU
/// thread doing a DRIVER_OK owns its traffic; epoll always reports hang-up and error).
struct VhostUserWatch {
    fd: RawFd,
}

impl MutEventSubscriber for VhostUserWatch {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::empty_raw(self.fd)) {
            tracing::warn!("virtio-fs: cannot watch the vhost-user socket: {e}");
        }
    }

    fn process(&mut self, _events: Events, ops: &mut EventOps) {
        tracing::warn!(
            "virtio-fs: the vhost-user backend closed its socket \
             (virtiofsd gone?); the guest's virtio-fs requests are no longer served"
        );
        // Once: a hung-up socket stays ready forever.
        let _ = ops.remove(Events::empty_raw(self.fd));
    }
}

/// What the control socket's requests act on.
pub struct Control {
    /// The listening socket.
    pub server: ApiServer,
    /// Pause and resume of the vCPUs.
    pub pauser: Arc<Pauser>,
    /// What `snapshot` needs (with `--snapshot-root`).
    pub snapshotter: Option<crate::snapshot::take::Snapshotter>,
}

/// The main thread's event manager and the subscribers it must reach between wake-ups.
pub struct EventLoop {
    manager: EventManager<Subscriber>,
    /// The devices the main thread serves: their backend fds' registrations follow what the
    /// device can take (refreshed after every wake-up).
    devices: Vec<(SubscriberId, Arc<Mutex<DeviceSubscriber>>)>,
    exit: Arc<ExitState>,
    console_log: SharedLog,
    /// Samples a cold-booted guest that activates no virtio device (boot_watch.rs).
    boot_watch: BootWatch,
}

impl EventLoop {
    /// Creates the epoll and registers every source: `exit` and `sigfd`, `devices`, the
    /// vhost-user socket `fs_watch`, the control socket `api`; `boot_watch` runs on its
    /// timer, its probe on SIGUSR1.
    pub fn new(
        exit: Arc<ExitState>,
        sigfd: RawFd,
        devices: Vec<ServedDevice>,
        fs_watch: Option<RawFd>,
        api: Option<Control>,
        console_log: SharedLog,
        boot_watch: BootWatch,
    ) -> Result<EventLoop> {
        let mut manager: EventManager<Subscriber> =
            EventManager::new().map_err(|e| anyhow!("creating the event loop's epoll: {e}"))?;
        let e = exit.clone();
        manager.add_subscriber(Arc::new(Mutex::new(ExitSubscriber {
            exit: e,
            sigfd,
            probe: boot_watch.probe().clone(),
        })));
        let devices = devices
            .into_iter()
            .map(|d| {
                let sub = Arc::new(Mutex::new(DeviceSubscriber::new(d, exit.clone())));
                (manager.add_subscriber(sub.clone()), sub)
            })
            .collect();
        if let Some(fd) = fs_watch {
            manager.add_subscriber(Arc::new(Mutex::new(VhostUserWatch { fd })));
        }
        if let Some(Control {
            server,
            pauser,
            snapshotter,
        }) = api
        {
            let handler = move |req| api_command(req, &pauser, snapshotter.as_ref());
            manager.add_subscriber(Arc::new(Mutex::new(ApiSubscriber::new(server, handler))));
        }
        Ok(EventLoop {
            manager,
            devices,
            exit,
            console_log,
            boot_watch,
        })
    }

    /// Serves events until the first exit reason; writes the console log's tail once the
    /// guest has been quiet for [`FLUSH_INTERVAL`].
    pub fn run(&mut self) -> Result<Exit> {
        let log = self.console_log.clone();
        let lock_log = || log.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(r) = self.exit.get() {
                return Ok(r);
            }
            // A vCPU thread may have activated or reset a device since the last wake-up:
            // bring every backend fd's registration up to date (a tap is watched only for
            // what its device can take now).
            for (id, sub) in &self.devices {
                let mut sub = sub.lock().unwrap_or_else(|p| p.into_inner());
                if let Ok(mut ops) = self.manager.event_ops(*id) {
                    sub.refresh_backend(&mut ops);
                }
            }
            // A console log tail not yet in the file: wake up once the guest is quiet.
            let flush = lock_log().dirty();
            let watch = self.boot_watch.due_in(Instant::now());
            let timeout = [flush.then_some(FLUSH_INTERVAL), watch]
                .into_iter()
                .flatten()
                .min()
                .map_or(-1, |d| d.as_millis().min(i32::MAX as u128) as i32);
            // Ok(0): the timeout passed (or a signal interrupted the wait).
            match self.manager.run_with_timeout(timeout) {
                Ok(0) if flush => lock_log().flush_tail(),
                Ok(_) => {}
                Err(e) => bail!("epoll: {e}"),
            }
            self.boot_watch.tick(Instant::now());
        }
    }
}

//! Queue notifications, the event-manager subscriber of each device the VMM serves itself,
//! and the threads that serve them.
//!
//! Each queue of a device the VMM serves itself has a KVM ioeventfd on its QueueNotify
//! register ([`QueueEvent`]). A [`DeviceSubscriber`] watches a device's queue eventfds and
//! its host backend fd (tap, the vsock device's epoll), if any, in an `event-manager`
//! [`EventManager`]. Most devices' subscribers live in the main thread's event manager; a
//! device whose requests block (virtio-blk: `pread`/`pwrite`/`fdatasync` on the host file)
//! gets a [`QueueWorker`] thread with an event manager of its own, so a slow disk never
//! delays the other devices, the signals or the control socket.

use std::os::unix::io::RawFd;
use std::sync::Arc;

use event_manager::{EventManager, EventOps, EventSet, Events, MutEventSubscriber};
use vmm_sys_util::eventfd::EventFd;

use crate::device_manager::lock_transport;
use crate::devices::SharedTransport;
use crate::seccomp::{self, ThreadClass};
use crate::vmm::{Exit, ExitState};

/// A queue of one of the VMM's own virtio devices: its QueueNotify ioeventfd.
pub struct QueueEvent {
    /// The ioeventfd (KVM signals it on the guest's QueueNotify write for this queue).
    pub evt: EventFd,
    /// The device's transport.
    pub transport: SharedTransport,
    /// Queue index.
    pub queue: usize,
}

impl QueueEvent {
    /// The eventfd fired: hand the device the kicks counted since the last read (plus the
    /// transport's own re-kicks, which it subtracts).
    pub fn serve(&self) {
        let kicks = self.evt.read().unwrap_or(0);
        lock_transport(&self.transport).notify_queue(self.queue, kicks);
    }
}

/// A device the VMM serves itself, as the device manager hands it to its event loop.
pub struct ServedDevice {
    /// The device's transport.
    pub transport: SharedTransport,
    /// Its queue notifications, in queue order.
    pub queues: Vec<QueueEvent>,
}

/// The `data` of the backend fd's registration (queue eventfds carry their queue index).
const BACKEND: u32 = u32::MAX;

/// `poll(2)` events (what [`VirtioDevice::backend_poll`] asks for) as an epoll event set.
///
/// [`VirtioDevice::backend_poll`]: crate::devices::virtio::VirtioDevice::backend_poll
fn event_set(poll_events: i16) -> EventSet {
    let mut s = EventSet::empty();
    if poll_events & libc::POLLIN != 0 {
        s |= EventSet::IN;
    }
    if poll_events & libc::POLLOUT != 0 {
        s |= EventSet::OUT;
    }
    s
}

/// An epoll event set as the `poll(2)` revents a device's `process_backend` takes.
fn revents(set: EventSet) -> i16 {
    let mut r = 0;
    for (e, p) in [
        (EventSet::IN, libc::POLLIN),
        (EventSet::OUT, libc::POLLOUT),
        (EventSet::ERROR, libc::POLLERR),
        (EventSet::HANG_UP, libc::POLLHUP),
        (EventSet::READ_HANG_UP, libc::POLLRDHUP),
        (EventSet::PRIORITY, libc::POLLPRI),
    ] {
        if set.contains(e) {
            r |= p;
        }
    }
    r
}

/// The subscriber of one device: its queue eventfds (always watched for input) and its
/// backend fd, watched only for what the device can take now (a tap without RX buffers
/// must not wake the loop): see [`DeviceSubscriber::refresh_backend`].
pub struct DeviceSubscriber {
    device: ServedDevice,
    /// The backend fd and events registered now.
    backend: Option<(RawFd, EventSet)>,
    /// Told when the event manager refuses a registration (the VM ends with an error).
    exit: Arc<ExitState>,
}

impl DeviceSubscriber {
    /// The subscriber of `device`; a failed registration ends the VM through `exit`.
    pub fn new(device: ServedDevice, exit: Arc<ExitState>) -> Self {
        DeviceSubscriber {
            device,
            backend: None,
            exit,
        }
    }

    fn fail(&self, what: &str, e: event_manager::Error) {
        self.exit
            .set(Exit::Error(format!("event loop: {what}: {e}")));
    }

    /// Brings the backend fd's registration in line with what the device wants now
    /// ([`crate::devices::virtio::MmioTransport::backend_poll`]: nothing while inactive, and
    /// no events at all means not watched). Called after each of the subscriber's own events
    /// and, for the main thread, after every wake-up of the loop (a vCPU thread may have
    /// activated or reset the device meanwhile).
    pub fn refresh_backend(&mut self, ops: &mut EventOps) {
        let want = lock_transport(&self.device.transport)
            .backend_poll()
            .map(|(fd, ev)| (fd, event_set(ev)))
            .filter(|(_, set)| !set.is_empty());
        if want == self.backend {
            return;
        }
        if let Some((fd, _)) = self.backend.take() {
            if let Err(e) = ops.remove(Events::empty_raw(fd)) {
                return self.fail("unwatching a device backend", e);
            }
        }
        if let Some((fd, set)) = want {
            if let Err(e) = ops.add(Events::with_data_raw(fd, BACKEND, set)) {
                return self.fail("watching a device backend", e);
            }
            self.backend = want;
        }
    }
}

impl MutEventSubscriber for DeviceSubscriber {
    fn init(&mut self, ops: &mut EventOps) {
        for (i, q) in self.device.queues.iter().enumerate() {
            let data = u32::try_from(i).unwrap_or(BACKEND - 1);
            if let Err(e) = ops.add(Events::with_data(&q.evt, data, EventSet::IN)) {
                return self.fail("watching a queue eventfd", e);
            }
        }
        self.refresh_backend(ops);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match events.data() {
            BACKEND => {
                if self.backend.is_some_and(|(fd, _)| fd == events.fd()) {
                    lock_transport(&self.device.transport)
                        .backend_ready(revents(events.event_set()));
                }
            }
            i => {
                if let Some(q) = self.device.queues.get(i as usize) {
                    if events.event_set().contains(EventSet::IN) {
                        q.serve();
                    }
                }
            }
        }
        self.refresh_backend(ops);
    }
}

/// The queues of one device, served on a thread of their own by an event manager of its
/// own (created before the jail's fd limit, see [`QueueWorker::new`]).
pub struct QueueWorker {
    /// Thread name (`blk0`, ...).
    pub name: String,
    events: EventManager<DeviceSubscriber>,
}

impl QueueWorker {
    /// The worker named `name` serving `device`: its event manager (an epoll fd) and the
    /// device's subscriber, registered now.
    pub fn new(name: String, device: ServedDevice, exit: Arc<ExitState>) -> anyhow::Result<Self> {
        use event_manager::SubscriberOps;
        let mut events = EventManager::new()
            .map_err(|e| anyhow::anyhow!("{name}: creating its event manager: {e:?}"))?;
        events.add_subscriber(DeviceSubscriber::new(device, exit));
        Ok(QueueWorker { name, events })
    }

    /// The thread's body: installs `filter`, then serves the queues forever (the process
    /// ends with the VM). A failure ends the VM with an error through `exit`.
    pub fn run(
        mut self,
        filter: Option<(ThreadClass, seccomp::ThreadFilter)>,
        exit: Arc<ExitState>,
    ) {
        if let Some((class, f)) = filter {
            if let Err(e) = seccomp::install(class, &f) {
                exit.set(Exit::Error(format!("{}: {e}", self.name)));
                return;
            }
        }
        loop {
            // EINTR is Ok(0).
            if let Err(e) = self.events.run() {
                exit.set(Exit::Error(format!("{}: epoll: {e}", self.name)));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_sets_map_both_ways() {
        assert_eq!(event_set(libc::POLLIN), EventSet::IN);
        assert_eq!(
            event_set(libc::POLLIN | libc::POLLOUT),
            EventSet::IN | EventSet::OUT
        );
        assert!(event_set(0).is_empty());
        assert_eq!(
            revents(EventSet::IN | EventSet::HANG_UP | EventSet::ERROR),
            libc::POLLIN | libc::POLLHUP | libc::POLLERR
        );
        assert_eq!(revents(EventSet::OUT), libc::POLLOUT);
    }

    use crate::devices::virtio::transport::{reg, status};
    use crate::devices::virtio::{MmioTransport, QueueConfig, VirtioDevice};
    use event_manager::SubscriberOps;
    use std::os::unix::io::AsRawFd;
    use std::sync::atomic::{AtomicI16, AtomicUsize, Ordering::SeqCst};
    use std::sync::Mutex;
    use vm_memory::{GuestAddress, GuestMemoryMmap};
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    /// What the probe device saw, and the backend events it asks for.
    #[derive(Default)]
    struct Seen {
        kicks: AtomicUsize,
        backend_ready: AtomicUsize,
        want: AtomicI16,
    }

    /// One queue; its backend is `fd`, watched for `want`.
    struct Probe {
        seen: Arc<Seen>,
        fd: RawFd,
    }

    impl VirtioDevice for Probe {
        fn device_type(&self) -> u32 {
            4
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[16]
        }
        fn features(&self) -> u64 {
            1 << 32
        }
        fn read_config(&self, _offset: u64, _data: &mut [u8]) {}
        fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
        fn activate(&mut self, _f: u64, _q: &[QueueConfig]) -> Result<(), String> {
            Ok(())
        }
        fn reset(&mut self) {}
        fn process_queue(&mut self, _index: usize) -> bool {
            self.seen.kicks.fetch_add(1, SeqCst);
            false
        }
        fn backend_poll(&self) -> Option<(RawFd, i16)> {
            Some((self.fd, self.seen.want.load(SeqCst)))
        }
        fn process_backend(&mut self, revents: i16) -> bool {
            assert_ne!(revents & libc::POLLIN, 0);
            self.seen.backend_ready.fetch_add(1, SeqCst);
            false
        }
    }

    fn w(t: &SharedTransport, off: u64, v: u32) {
        lock_transport(t).write(off, &v.to_le_bytes());
    }

    /// The driver's side of activation: features, one queue, DRIVER_OK.
    fn activate(t: &SharedTransport) {
        use status::{ACKNOWLEDGE as A, DRIVER as D, DRIVER_OK as OK, FEATURES_OK as F};
        w(t, reg::STATUS, A);
        w(t, reg::STATUS, A | D);
        w(t, reg::DRIVER_FEATURES_SEL, 1);
        w(t, reg::DRIVER_FEATURES, 1);
        w(t, reg::STATUS, A | D | F);
        for (off, v) in [
            (reg::QUEUE_SEL, 0),
            (reg::QUEUE_NUM, 16),
            (reg::QUEUE_DESC_LOW, 0x1_0000),
            (reg::QUEUE_AVAIL_LOW, 0x1_1000),
            (reg::QUEUE_USED_LOW, 0x1_2000),
            (reg::QUEUE_READY, 1),
        ] {
            w(t, off, v);
        }
        w(t, reg::STATUS, A | D | F | OK);
        assert!(lock_transport(t).is_active());
    }

    /// Kicks reach the device; the backend fd is watched only while the device is active and
    /// wants events, and is dropped from the epoll when it wants none.
    #[test]
    fn device_subscriber_serves_kicks_and_follows_backend_interest() {
        let seen = Arc::new(Seen::default());
        let backend = EventFd::new(EFD_NONBLOCK).unwrap();
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let dev: Box<dyn VirtioDevice> = Box::new(Probe {
            seen: seen.clone(),
            fd: backend.as_raw_fd(),
        });
        let t: SharedTransport = Arc::new(Mutex::new(MmioTransport::new(dev, Arc::new(mem))));
        let kick = EventFd::new(EFD_NONBLOCK).unwrap();
        lock_transport(&t).set_queue_events(vec![kick.try_clone().unwrap()]);
        let device = ServedDevice {
            transport: t.clone(),
            queues: vec![QueueEvent {
                evt: kick.try_clone().unwrap(),
                transport: t.clone(),
                queue: 0,
            }],
        };
        let exit = ExitState::new().unwrap();
        type Sub = Arc<Mutex<DeviceSubscriber>>;
        let mut em = EventManager::<Sub>::new().unwrap();
        let sub: Sub = Arc::new(Mutex::new(DeviceSubscriber::new(device, exit.clone())));
        let id = em.add_subscriber(sub.clone());
        let registered = || sub.lock().unwrap().backend;

        // Inactive: the backend is ready but not watched, a kick is read but not served.
        backend.write(1).unwrap();
        seen.want.store(libc::POLLIN, SeqCst);
        kick.write(1).unwrap();
        assert_eq!(em.run_with_timeout(1000).unwrap(), 1);
        assert_eq!(seen.kicks.load(SeqCst), 0);
        assert_eq!(registered(), None);

        // Activated (by a "vCPU"): the main loop's refresh watches the backend.
        activate(&t);
        sub.lock()
            .unwrap()
            .refresh_backend(&mut em.event_ops(id).unwrap());
        assert_eq!(registered(), Some((backend.as_raw_fd(), EventSet::IN)));
        // Another subscriber cannot take the same fd: the VM ends with an error, no panic.
        let other_exit = ExitState::new().unwrap();
        let mut other = DeviceSubscriber::new(
            ServedDevice {
                transport: t.clone(),
                queues: Vec::new(),
            },
            other_exit.clone(),
        );
        other.refresh_backend(&mut em.event_ops(id).unwrap());
        assert!(
            matches!(other_exit.get(), Some(Exit::Error(e)) if e.contains("watching a device backend"))
        );
        kick.write(1).unwrap();
        em.run_with_timeout(1000).unwrap();
        em.run_with_timeout(0).unwrap();
        assert_eq!(seen.kicks.load(SeqCst), 1, "one kick served");
        assert!(seen.backend_ready.load(SeqCst) >= 1, "backend served");

        // No events wanted: unwatched after the device's next event.
        seen.want.store(0, SeqCst);
        kick.write(1).unwrap();
        em.run_with_timeout(1000).unwrap();
        assert_eq!(registered(), None);
        let served = seen.backend_ready.load(SeqCst);
        assert_eq!(
            em.run_with_timeout(50).unwrap(),
            0,
            "a ready backend no longer wakes"
        );
        assert_eq!(seen.backend_ready.load(SeqCst), served);
        assert!(exit.get().is_none());
    }
}

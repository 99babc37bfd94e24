//! Queue notifications and the threads that serve them.
//!
//! Each queue of a device the VMM serves itself has a KVM ioeventfd on its QueueNotify
//! register ([`QueueEvent`]). Most devices' queues are served by the main thread's event
//! loop; a device whose requests block (virtio-blk: `pread`/`pwrite`/`fdatasync` on the host
//! file) gets a [`QueueWorker`] thread of its own, so a slow disk never delays the other
//! devices, the signals or the control socket.

use std::os::unix::io::AsRawFd;
use std::sync::Arc;

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

/// The queues of one device, served on a thread of their own.
pub struct QueueWorker {
    /// Thread name (`blk0`, ...).
    pub name: String,
    /// The device's queue notifications.
    pub events: Vec<QueueEvent>,
}

impl QueueWorker {
    /// The thread's body: installs `filter`, then serves the queues forever (the process
    /// ends with the VM). A failure ends the VM with an error through `exit`.
    pub fn run(self, filter: Option<(ThreadClass, seccompiler::BpfProgram)>, exit: Arc<ExitState>) {
        if let Some((class, f)) = filter {
            if let Err(e) = seccomp::install(class, &f) {
                exit.set(Exit::Error(format!("{}: {e}", self.name)));
                return;
            }
        }
        let mut fds: Vec<libc::pollfd> = self
            .events
            .iter()
            .map(|q| libc::pollfd {
                fd: q.evt.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        loop {
            for f in &mut fds {
                f.revents = 0;
            }
            // SAFETY: `fds` is a valid array of pollfd for the duration of the call.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                exit.set(Exit::Error(format!("{}: poll: {e}", self.name)));
                return;
            }
            for (f, q) in fds.iter().zip(&self.events) {
                if f.revents & libc::POLLIN != 0 {
                    q.serve();
                }
            }
        }
    }
}

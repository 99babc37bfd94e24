//! The device manager: owns the guest-visible resources of every device (virtio-mmio slots,
//! IRQs, irqfds, the per-queue ioeventfds, the `virtio_mmio.device=` kernel command line
//! entries) and the devices themselves once attached; hands the vCPU threads their exit
//! dispatch ([`Devices`]) and the event loops what they serve ([`EventSources`], the
//! [`ServedDevice`]s of the queue worker threads).
//!
//! Slots are allocated first (their number and order are known from the configuration, so
//! the kernel command line exists before the kernel is loaded), devices are attached to them
//! later, in the same order: slot `i` is at [`layout::virtio_mmio_addr`]`(i)` with IRQ
//! [`layout::virtio_irq`]`(i)`.

use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use kvm_ioctls::{IoEventAddress, VmFd};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::cmdline::{self, CmdlineError, MmioDeviceArg};
use crate::devices::serial::{ConsoleOut, ConsoleSerial, SerialSnapshot};
use crate::devices::virtio::transport::reg;
use crate::devices::virtio::worker::{QueueEvent, ServedDevice};
use crate::devices::virtio::{MmioTransport, VirtioDevice, VIRTIO_RING_F_EVENT_IDX};
use crate::devices::{Devices, SharedTransport};
use crate::layout::{self, SERIAL_IRQ, VIRTIO_MMIO_SIZE};

/// `KATA_VMM_NO_EVENT_IDX=1`: the VMM's own devices do not offer `VIRTIO_RING_F_EVENT_IDX`
/// (to measure or debug notification suppression; the driver then kicks and is interrupted
/// for every buffer).
pub const NO_EVENT_IDX_ENV: &str = "KATA_VMM_NO_EVENT_IDX";

/// One virtio-mmio slot: the device's register window and its IRQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioSlot {
    /// Guest physical base address of the 4 KiB window.
    pub base: u64,
    /// Legacy IRQ (GSI).
    pub irq: u32,
}

/// Which thread serves the queue notifications (and the host backend fd, if the device has
/// one: see `VirtioDevice::backend_poll`) of a device the VMM serves itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServedBy {
    /// The main thread's event loop.
    MainLoop,
    /// A queue worker thread of its own, with this name (virtio-blk: its I/O blocks).
    OwnThread(String),
}

/// Every device of the VM and the resources they use.
#[derive(Default)]
pub struct DeviceManager {
    /// Allocated virtio-mmio slots, in slot order.
    slots: Vec<MmioSlot>,
    /// Attached virtio devices, slot `i` at index `i`.
    virtio: Vec<SharedTransport>,
    /// The VMM's own devices served by the main thread's event loop.
    main_loop: Vec<ServedDevice>,
    /// Devices whose queues a thread of their own serves (virtio-blk), with its name.
    workers: Vec<(String, ServedDevice)>,
    /// The VMM's own virtio devices (all but vhost-user ones), for their exit summaries.
    own: Vec<SharedTransport>,
    /// COM1.
    serial: Option<Arc<Mutex<ConsoleSerial>>>,
    /// The vhost-user backend's socket, watched by the event loop for a hang-up.
    vhost_user_watch: Option<RawFd>,
}

/// Locks a transport; a poisoned lock (a vCPU thread panicked mid-access) is still usable.
pub fn lock_transport(
    t: &SharedTransport,
) -> std::sync::MutexGuard<'_, MmioTransport<Box<dyn VirtioDevice>>> {
    t.lock().unwrap_or_else(|p| p.into_inner())
}

impl DeviceManager {
    /// No devices yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reserves the next `count` virtio-mmio slots (window and IRQ each).
    pub fn allocate_mmio_slots(&mut self, count: usize) {
        for _ in 0..count {
            let i = self.slots.len();
            self.slots.push(MmioSlot {
                base: layout::virtio_mmio_addr(i),
                irq: layout::virtio_irq(i),
            });
        }
    }

    /// The allocated slots, in order.
    pub fn mmio_slots(&self) -> &[MmioSlot] {
        &self.slots
    }

    /// The guest kernel command line: the VMM's fixed arguments, one `virtio_mmio.device=`
    /// entry per allocated slot, then `extra` (see [`cmdline::build`]).
    pub fn kernel_cmdline(&self, extra: &str) -> Result<String, CmdlineError> {
        let args: Vec<MmioDeviceArg> = self
            .slots
            .iter()
            .map(|s| MmioDeviceArg {
                base: s.base,
                size: VIRTIO_MMIO_SIZE,
                irq: s.irq,
            })
            .collect();
        cmdline::build(&args, extra)
    }

    /// COM1 on IRQ 4 through a KVM irqfd, its output to `out`; in the state a snapshot saved
    /// when `restore` is given.
    pub fn attach_serial(
        &mut self,
        vm: &VmFd,
        out: ConsoleOut,
        restore: Option<&SerialSnapshot>,
    ) -> Result<()> {
        let irq = EventFd::new(EFD_NONBLOCK).context("eventfd")?;
        vm.register_irqfd(&irq, SERIAL_IRQ)
            .map_err(|e| anyhow!("KVM_IRQFD (serial): {e}"))?;
        let serial = match restore {
            Some(s) => ConsoleSerial::restore(irq, out, s).map_err(|e| anyhow!(e))?,
            None => ConsoleSerial::new(irq, out),
        };
        self.serial = Some(Arc::new(Mutex::new(serial)));
        Ok(())
    }

    /// COM1, once attached.
    pub fn serial(&self) -> Option<Arc<Mutex<ConsoleSerial>>> {
        self.serial.clone()
    }

    /// Every attached virtio-mmio transport, in slot order.
    pub fn transports(&self) -> &[SharedTransport] {
        &self.virtio
    }

    /// The next allocated slot without a device.
    fn next_slot(&self) -> Result<MmioSlot> {
        match self.slots.get(self.virtio.len()) {
            Some(s) => Ok(*s),
            None => bail!("no virtio-mmio slot left"),
        }
    }

    /// Puts `dev` (served by the VMM, not vhost) in the next slot: an irqfd on its IRQ for
    /// the transport, one ioeventfd per queue on QueueNotify (datamatch = queue index), served
    /// by `served_by`.
    pub fn attach_virtio(
        &mut self,
        vm: &VmFd,
        dev: Box<dyn VirtioDevice>,
        mem: &Arc<GuestMemoryMmap>,
        served_by: ServedBy,
    ) -> Result<SharedTransport> {
        let slot = self.next_slot()?;
        let irq = EventFd::new(EFD_NONBLOCK).context("eventfd")?;
        vm.register_irqfd(&irq, slot.irq)
            .map_err(|e| anyhow!("KVM_IRQFD: {e}"))?;
        let queues = dev.queue_max_sizes().len();
        let mut t = MmioTransport::new(dev, mem.clone());
        t.set_irq(irq);
        if std::env::var_os(NO_EVENT_IDX_ENV).is_some_and(|v| v == "1") {
            t.withhold_features(1 << VIRTIO_RING_F_EVENT_IDX);
        }
        let evts = self.queue_eventfds(vm, slot, queues, "")?;
        // The transport re-signals a queue through the same eventfd (see rekick_queues).
        let clones = evts
            .iter()
            .map(|e| e.try_clone().context("eventfd dup"))
            .collect::<Result<Vec<_>>>()?;
        t.set_queue_events(clones);
        let t: SharedTransport = Arc::new(Mutex::new(t));
        let served = ServedDevice {
            transport: t.clone(),
            queues: evts
                .into_iter()
                .enumerate()
                .map(|(queue, evt)| QueueEvent {
                    evt,
                    transport: t.clone(),
                    queue,
                })
                .collect(),
        };
        match served_by {
            ServedBy::MainLoop => self.main_loop.push(served),
            ServedBy::OwnThread(name) => self.workers.push((name, served)),
        }
        self.own.push(t.clone());
        self.virtio.push(t.clone());
        Ok(t)
    }

    /// The fds of a vhost-user device for the next slot, which its backend serves directly:
    /// one kick ioeventfd per queue (`queues`) and the call irqfd on the slot's IRQ. Then
    /// [`DeviceManager::attach_vhost_user`] the device built with them.
    pub fn vhost_user_eventfds(
        &self,
        vm: &VmFd,
        queues: usize,
        what: &str,
    ) -> Result<(Vec<EventFd>, EventFd)> {
        let slot = self.next_slot()?;
        let call = EventFd::new(EFD_NONBLOCK).context("eventfd")?;
        vm.register_irqfd(&call, slot.irq)
            .map_err(|e| anyhow!("KVM_IRQFD ({what}): {e}"))?;
        let kicks = self.queue_eventfds(vm, slot, queues, what)?;
        Ok((kicks, call))
    }

    /// Puts a vhost-user device (its fds from [`DeviceManager::vhost_user_eventfds`]) in the
    /// next slot; `watch` is the backend socket the event loop watches for a hang-up.
    pub fn attach_vhost_user(
        &mut self,
        dev: Box<dyn VirtioDevice>,
        mem: &Arc<GuestMemoryMmap>,
        watch: RawFd,
    ) -> Result<()> {
        self.next_slot()?;
        self.watch_vhost_user(watch);
        self.virtio
            .push(Arc::new(Mutex::new(MmioTransport::new(dev, mem.clone()))));
        Ok(())
    }

    /// The event loop watches `fd` (a vhost-user backend's socket) for a hang-up.
    pub fn watch_vhost_user(&mut self, fd: RawFd) {
        self.vhost_user_watch = Some(fd);
    }

    /// One ioeventfd per queue on the slot's QueueNotify register, datamatch = queue index.
    fn queue_eventfds(
        &self,
        vm: &VmFd,
        slot: MmioSlot,
        queues: usize,
        what: &str,
    ) -> Result<Vec<EventFd>> {
        let mut evts = Vec::new();
        for q in 0..queues {
            let evt = EventFd::new(EFD_NONBLOCK).context("eventfd")?;
            vm.register_ioevent(
                &evt,
                &IoEventAddress::Mmio(slot.base + reg::QUEUE_NOTIFY),
                q as u32,
            )
            .map_err(|e| {
                if what.is_empty() {
                    anyhow!("KVM_IOEVENTFD (queue {q}): {e}")
                } else {
                    anyhow!("KVM_IOEVENTFD ({what} queue {q}): {e}")
                }
            })?;
            evts.push(evt);
        }
        Ok(evts)
    }

    /// Whether every allocated slot has its device.
    pub fn all_slots_attached(&self) -> bool {
        self.virtio.len() == self.slots.len()
    }

    /// The vCPU exit dispatch: COM1, i8042 and the virtio-mmio windows (cloned into every
    /// vCPU thread).
    pub fn bus(&self) -> Result<Devices> {
        let serial = self.serial.clone().context("no serial console attached")?;
        Ok(Devices {
            serial,
            virtio: self.virtio.clone(),
        })
    }

    /// The devices to serve on queue worker threads of their own, with the thread names
    /// (see [`ServedBy::OwnThread`]); taken once.
    pub fn take_workers(&mut self) -> Vec<(String, ServedDevice)> {
        std::mem::take(&mut self.workers)
    }

    /// The main thread's share: the devices its event loop serves, the vhost-user socket
    /// to watch and the VMM's own devices (for exit summaries).
    pub fn into_event_sources(self) -> EventSources {
        EventSources {
            devices: self.main_loop,
            vhost_user_watch: self.vhost_user_watch,
            own: self.own,
        }
    }
}

/// What the main thread's event loop serves (see [`DeviceManager::into_event_sources`]).
pub struct EventSources {
    /// The VMM's own devices served by the main thread (queue notifications, backend fds).
    pub devices: Vec<ServedDevice>,
    /// The vhost-user backend socket (hang-up only).
    pub vhost_user_watch: Option<RawFd>,
    /// The VMM's own devices, in slot order.
    pub own: Vec<SharedTransport>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_and_cmdline_entries() {
        let mut dm = DeviceManager::new();
        dm.allocate_mmio_slots(2);
        dm.allocate_mmio_slots(1);
        assert_eq!(
            dm.mmio_slots(),
            &[
                MmioSlot {
                    base: 0xd000_0000,
                    irq: 5
                },
                MmioSlot {
                    base: 0xd000_1000,
                    irq: 6
                },
                MmioSlot {
                    base: 0xd000_2000,
                    irq: 7
                },
            ]
        );
        let c = dm.kernel_cmdline("x=1").unwrap();
        assert_eq!(
            c,
            format!(
                "{} virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6 \
                 virtio_mmio.device=4K@0xd0002000:7 x=1",
                cmdline::BASE_CMDLINE
            )
        );
        assert!(!dm.all_slots_attached());
        assert!(dm.bus().is_err(), "no serial yet");
    }

    #[test]
    fn no_device_without_a_slot() {
        let dm = DeviceManager::new();
        assert!(dm.next_slot().is_err());
    }
}

//! virtio-mmio transport, version 2 ("modern", virtio 1.x, `VIRTIO_F_VERSION_1`).
//!
//! The transport owns the register file and the device status state machine; the device
//! behind it implements [`VirtioDevice`]. Everything the guest writes is hostile input: a write
//! at a wrong width, to a read-only register, in the wrong device state or with an out of range
//! value is ignored (and, for status transitions the spec forbids, the device is marked
//! `DEVICE_NEEDS_RESET`/`FAILED` rather than acted upon). Queue sizes and ring addresses are
//! validated against the device maximum and guest memory before activation.
//!
//! Notifications never go through the vCPU exit path: the VMM registers a KVM ioeventfd on
//! `QueueNotify` per queue and a KVM irqfd for the device's IRQ.
//!
//! - vhost devices ([`VirtioDevice::vhost_interrupts`]): both fds go to the host kernel's
//!   backend. Because its irqfd bypasses the VMM, the transport cannot set `InterruptStatus`
//!   when the backend signals; instead, once the device is running, `InterruptStatus` always
//!   reports `VIRTIO_MMIO_INT_VRING` (bit 0). The guest driver then scans its used rings on
//!   every interrupt, which is what it would do anyway; when nothing is used the check is
//!   cheap and harmless.
//! - the VMM's own devices: the main thread polls the ioeventfds and calls
//!   [`MmioTransport::notify_queue`]; when the device returned used buffers the transport sets
//!   `InterruptStatus` bit 0 and signals the irqfd given by [`MmioTransport::set_irq`].
//!
//! Notification suppression (the VMM's own devices offer `VIRTIO_RING_F_EVENT_IDX`): when the
//! driver negotiates it, each `virtio_queue::Queue` runs in event-idx mode. "Interrupt the
//! driver?" is always `Queue::needs_notification` (the driver's `used_event`), and a kick is
//! served by [`super::queue::serve_available`]'s loop: serve, `enable_notification` (our `avail_event` =
//! the next chain we will read), look again for chains the driver published while we were not
//! asking for kicks, so no chain waits for a kick that never comes. Every pass is bounded (a
//! ring's worth of chains); a device that stops with chains left reports the queue in
//! [`VirtioDevice::rekick_queues`] and the transport signals that queue's own notify eventfd,
//! so the event loop comes back to it after serving everything else. Nothing the driver
//! writes into `used_event`/`avail` indices can make the VMM loop, spin or panic. Without
//! `EVENT_IDX` negotiated the device never suppresses kicks and interrupts after every pass
//! that returned buffers, as before.

use std::sync::Arc;

use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::queue::{event_idx, QueueConfig};
use super::{VirtioDevice, VIRTIO_F_VERSION_1};

/// "virt" in little endian.
pub const MAGIC: u32 = 0x7472_6976;
/// Transport version 2 (modern).
pub const VERSION: u32 = 2;
/// Vendor id we report ("KRS\0" would do; any value is fine).
pub const VENDOR_ID: u32 = 0x0053_524b;

/// Register offsets.
pub mod reg {
    use virtio_bindings::virtio_mmio as m;

    /// Magic value (R).
    pub const MAGIC: u64 = m::VIRTIO_MMIO_MAGIC_VALUE as u64;
    /// Version (R).
    pub const VERSION: u64 = m::VIRTIO_MMIO_VERSION as u64;
    /// Device id (R).
    pub const DEVICE_ID: u64 = m::VIRTIO_MMIO_DEVICE_ID as u64;
    /// Vendor id (R).
    pub const VENDOR_ID: u64 = m::VIRTIO_MMIO_VENDOR_ID as u64;
    /// Device features word selected by `DEVICE_FEATURES_SEL` (R).
    pub const DEVICE_FEATURES: u64 = m::VIRTIO_MMIO_DEVICE_FEATURES as u64;
    /// Device features word select (W).
    pub const DEVICE_FEATURES_SEL: u64 = m::VIRTIO_MMIO_DEVICE_FEATURES_SEL as u64;
    /// Driver features word (W).
    pub const DRIVER_FEATURES: u64 = m::VIRTIO_MMIO_DRIVER_FEATURES as u64;
    /// Driver features word select (W).
    pub const DRIVER_FEATURES_SEL: u64 = m::VIRTIO_MMIO_DRIVER_FEATURES_SEL as u64;
    /// Queue select (W).
    pub const QUEUE_SEL: u64 = m::VIRTIO_MMIO_QUEUE_SEL as u64;
    /// Maximum queue size (R).
    pub const QUEUE_NUM_MAX: u64 = m::VIRTIO_MMIO_QUEUE_NUM_MAX as u64;
    /// Queue size (W).
    pub const QUEUE_NUM: u64 = m::VIRTIO_MMIO_QUEUE_NUM as u64;
    /// Queue ready (RW).
    pub const QUEUE_READY: u64 = m::VIRTIO_MMIO_QUEUE_READY as u64;
    /// Queue notify (W).
    pub const QUEUE_NOTIFY: u64 = m::VIRTIO_MMIO_QUEUE_NOTIFY as u64;
    /// Interrupt status (R).
    pub const INTERRUPT_STATUS: u64 = m::VIRTIO_MMIO_INTERRUPT_STATUS as u64;
    /// Interrupt acknowledge (W).
    pub const INTERRUPT_ACK: u64 = m::VIRTIO_MMIO_INTERRUPT_ACK as u64;
    /// Device status (RW).
    pub const STATUS: u64 = m::VIRTIO_MMIO_STATUS as u64;
    /// Descriptor table address, low 32 bits (W).
    pub const QUEUE_DESC_LOW: u64 = m::VIRTIO_MMIO_QUEUE_DESC_LOW as u64;
    /// Descriptor table address, high 32 bits (W).
    pub const QUEUE_DESC_HIGH: u64 = m::VIRTIO_MMIO_QUEUE_DESC_HIGH as u64;
    /// Available ring address, low (W).
    pub const QUEUE_AVAIL_LOW: u64 = m::VIRTIO_MMIO_QUEUE_AVAIL_LOW as u64;
    /// Available ring address, high (W).
    pub const QUEUE_AVAIL_HIGH: u64 = m::VIRTIO_MMIO_QUEUE_AVAIL_HIGH as u64;
    /// Used ring address, low (W).
    pub const QUEUE_USED_LOW: u64 = m::VIRTIO_MMIO_QUEUE_USED_LOW as u64;
    /// Used ring address, high (W).
    pub const QUEUE_USED_HIGH: u64 = m::VIRTIO_MMIO_QUEUE_USED_HIGH as u64;
    /// Configuration generation (R).
    pub const CONFIG_GENERATION: u64 = m::VIRTIO_MMIO_CONFIG_GENERATION as u64;
    /// Start of the device specific configuration space.
    pub const CONFIG: u64 = m::VIRTIO_MMIO_CONFIG as u64;
}

/// Device status bits.
pub mod status {
    use virtio_bindings::virtio_config as c;

    /// Guest noticed the device.
    pub const ACKNOWLEDGE: u32 = c::VIRTIO_CONFIG_S_ACKNOWLEDGE;
    /// Guest has a driver.
    pub const DRIVER: u32 = c::VIRTIO_CONFIG_S_DRIVER;
    /// Driver is ready; the device may run.
    pub const DRIVER_OK: u32 = c::VIRTIO_CONFIG_S_DRIVER_OK;
    /// Feature negotiation done.
    pub const FEATURES_OK: u32 = c::VIRTIO_CONFIG_S_FEATURES_OK;
    /// Device hit an error and needs a reset.
    pub const DEVICE_NEEDS_RESET: u32 = c::VIRTIO_CONFIG_S_NEEDS_RESET;
    /// Driver gave up.
    pub const FAILED: u32 = c::VIRTIO_CONFIG_S_FAILED;
}

/// `InterruptStatus` bit: a used buffer was returned.
pub const INT_VRING: u32 = virtio_bindings::virtio_mmio::VIRTIO_MMIO_INT_VRING;
/// `InterruptStatus` bit: configuration changed.
pub const INT_CONFIG: u32 = virtio_bindings::virtio_mmio::VIRTIO_MMIO_INT_CONFIG;

/// Notification counters of one transport, for the exit summary.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NotifyStats {
    /// The driver negotiated `VIRTIO_RING_F_EVENT_IDX` at the last activation (kept across
    /// the reset of a guest's shutdown, so the exit summary still tells).
    pub event_idx: bool,
    /// Guest kicks (QueueNotify writes, from the ioeventfd counters) per queue.
    pub kicks: Vec<u64>,
    /// Used-buffer interrupts sent (irqfd writes).
    pub interrupts: u64,
    /// Times the transport re-signalled a queue itself (see [`VirtioDevice::rekick_queues`]).
    pub rekicks: u64,
}

/// The virtio-mmio register file in front of one device.
pub struct MmioTransport<D: VirtioDevice> {
    device: D,
    mem: Arc<GuestMemoryMmap>,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    queues: Vec<QueueConfig>,
    interrupt_status: u32,
    config_generation: u32,
    active: bool,
    irq: Option<EventFd>,
    /// Feature bits offered: the device's, minus any withheld.
    offered: u64,
    /// Each queue's notify eventfd (a clone of its ioeventfd), for re-kicks.
    queue_evts: Vec<EventFd>,
    /// Re-kicks written to each queue's eventfd and not yet read back with the guest's kicks.
    rekicks_unread: Vec<u64>,
    stats: NotifyStats,
}

impl<D: VirtioDevice> MmioTransport<D> {
    /// Wraps `device`; `mem` is what queue addresses are validated against.
    pub fn new(device: D, mem: Arc<GuestMemoryMmap>) -> Self {
        let queues: Vec<QueueConfig> = device
            .queue_max_sizes()
            .iter()
            .map(|m| QueueConfig {
                max_size: *m,
                ..Default::default()
            })
            .collect();
        let n = queues.len();
        let offered = device.features();
        MmioTransport {
            device,
            mem,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            queues,
            interrupt_status: 0,
            config_generation: 0,
            active: false,
            irq: None,
            offered,
            queue_evts: Vec::new(),
            rekicks_unread: vec![0; n],
            stats: NotifyStats {
                kicks: vec![0; n],
                ..Default::default()
            },
        }
    }

    /// Stops offering feature `bits` the device has (e.g. `VIRTIO_RING_F_EVENT_IDX`, to
    /// measure without it). Only before the driver negotiates.
    pub fn withhold_features(&mut self, bits: u64) {
        self.offered &= !bits;
    }

    /// The feature bits offered to the driver.
    pub fn offered_features(&self) -> u64 {
        self.offered
    }

    /// The queues' notify eventfds (clones of the KVM ioeventfds, queue i at index i) that
    /// the transport signals to have a queue served again (see
    /// [`VirtioDevice::rekick_queues`]).
    pub fn set_queue_events(&mut self, evts: Vec<EventFd>) {
        self.queue_evts = evts;
    }

    /// Notification counters so far.
    pub fn notify_stats(&self) -> &NotifyStats {
        &self.stats
    }

    /// The irqfd (a KVM irqfd on the device's IRQ) this transport signals for the VMM's own
    /// devices. vhost devices get theirs from the backend instead.
    pub fn set_irq(&mut self, irq: EventFd) {
        self.irq = Some(irq);
    }

    /// Queue `index`'s notify eventfd fired with counter `count` (the guest's kicks since the
    /// last read, plus our own re-kicks): let the device serve it, interrupt the driver if it
    /// returned buffers and asks for it.
    pub fn notify_queue(&mut self, index: usize, count: u64) {
        if let Some(unread) = self.rekicks_unread.get_mut(index) {
            let ours = (*unread).min(count);
            *unread = 0;
            self.stats.kicks[index] += count - ours;
        }
        if !self.active || self.device.vhost_interrupts() {
            return;
        }
        if self.queues.get(index).is_some_and(|q| q.ready) && self.device.process_queue(index) {
            self.raise(INT_VRING);
        }
        self.rekick();
    }

    /// Signals the notify eventfd of each queue the device left chains on.
    fn rekick(&mut self) {
        let pending = self.device.rekick_queues();
        if pending == 0 {
            return;
        }
        for (i, evt) in self.queue_evts.iter().enumerate().take(32) {
            if pending & (1 << i) != 0 && evt.write(1).is_ok() {
                self.rekicks_unread[i] += 1;
                self.stats.rekicks += 1;
            }
        }
    }

    /// The backend fd to poll and the events wanted (see [`VirtioDevice::backend_poll`]);
    /// None while the device is not running.
    pub fn backend_poll(&self) -> Option<(std::os::fd::RawFd, i16)> {
        if !self.active || self.device.vhost_interrupts() {
            return None;
        }
        self.device.backend_poll()
    }

    /// The backend fd is ready: let the device serve it and interrupt the driver if it
    /// returned buffers.
    pub fn backend_ready(&mut self, revents: i16) {
        if !self.active || self.device.vhost_interrupts() {
            return;
        }
        if self.device.process_backend(revents) {
            self.raise(INT_VRING);
        }
        self.rekick();
    }

    /// The device's exit summary (see [`VirtioDevice::exit_report`]); for the VMM's own
    /// devices followed by the notification counters: whether the driver negotiated
    /// `EVENT_IDX` (at its last activation), guest kicks (total and per queue), interrupts
    /// sent and re-kicks.
    pub fn exit_report(&self) -> Option<String> {
        let report = self.device.exit_report()?;
        if self.device.vhost_interrupts() {
            return Some(report);
        }
        let s = &self.stats;
        let per_queue: Vec<String> = s.kicks.iter().map(u64::to_string).collect();
        Some(format!(
            "{report} event_idx={} kicks={} queue_kicks={} interrupts={} rekicks={}",
            u8::from(s.event_idx),
            s.kicks.iter().sum::<u64>(),
            per_queue.join(","),
            s.interrupts,
            s.rekicks
        ))
    }

    fn raise(&mut self, bit: u32) {
        self.interrupt_status |= bit;
        if bit & INT_VRING != 0 {
            self.stats.interrupts += 1;
        }
        if let Some(irq) = &self.irq {
            // A full eventfd counter still means "pending"; nothing to do on error.
            let _ = irq.write(1);
        }
    }

    /// Current device status.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// Whether the device was activated (DRIVER_OK accepted).
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// The queues as configured by the driver.
    pub fn queues(&self) -> &[QueueConfig] {
        &self.queues
    }

    /// Features the driver acknowledged.
    pub fn driver_features(&self) -> u64 {
        self.driver_features
    }

    /// The device behind the transport.
    pub fn device(&self) -> &D {
        &self.device
    }

    fn has(&self, set: u32, clear: u32) -> bool {
        self.status & set == set && self.status & clear == 0
    }

    fn selected_queue(&mut self) -> Option<&mut QueueConfig> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// Handles a guest read at `offset` within the device window. Never fails: unknown or
    /// malformed reads return all ones.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= reg::CONFIG {
            data.fill(0);
            self.device.read_config(offset - reg::CONFIG, data);
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            data.fill(0xff);
            return;
        }
        let v: u32 = match offset {
            reg::MAGIC => MAGIC,
            reg::VERSION => VERSION,
            reg::DEVICE_ID => self.device.device_type(),
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => match self.device_features_sel {
                0 => self.offered as u32,
                1 => (self.offered >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => self.selected_queue().map_or(0, |q| u32::from(q.max_size)),
            reg::QUEUE_READY => self.selected_queue().map_or(0, |q| u32::from(q.ready)),
            reg::INTERRUPT_STATUS => {
                // See the module documentation: the irqfd path bypasses us, so a running
                // device always claims a used buffer.
                let vring = if self.active && self.device.vhost_interrupts() {
                    INT_VRING
                } else {
                    0
                };
                self.interrupt_status | vring
            }
            reg::STATUS => self.status,
            reg::CONFIG_GENERATION => self.config_generation,
            _ => 0xffff_ffff,
        };
        data.copy_from_slice(&v.to_le_bytes());
    }

    /// Handles a guest write at `offset`. Never fails: anything invalid is ignored.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= reg::CONFIG {
            if self.has(status::DRIVER, status::FAILED) {
                self.device.write_config(offset - reg::CONFIG, data);
            }
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            return;
        }
        let v = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        let can_negotiate = self.has(status::DRIVER, status::FEATURES_OK | status::FAILED);
        let can_setup_queue = self.has(status::FEATURES_OK, status::DRIVER_OK | status::FAILED);
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = v,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            reg::DRIVER_FEATURES if can_negotiate => match self.driver_features_sel {
                0 => self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(v),
                1 => {
                    self.driver_features =
                        (self.driver_features & 0xffff_ffff) | (u64::from(v) << 32)
                }
                _ => {}
            },
            reg::QUEUE_SEL => self.queue_sel = v,
            reg::QUEUE_NUM if can_setup_queue => {
                if let Some(q) = self.selected_queue() {
                    // Stored as written (truncated to 16 bits only if it fits); checked at
                    // DRIVER_OK.
                    q.size = u16::try_from(v).unwrap_or(0);
                }
            }
            reg::QUEUE_READY if can_setup_queue => {
                if let Some(q) = self.selected_queue() {
                    q.ready = v == 1;
                }
            }
            reg::QUEUE_DESC_LOW if can_setup_queue => self.set_addr(|q| &mut q.desc, v, false),
            reg::QUEUE_DESC_HIGH if can_setup_queue => self.set_addr(|q| &mut q.desc, v, true),
            reg::QUEUE_AVAIL_LOW if can_setup_queue => self.set_addr(|q| &mut q.avail, v, false),
            reg::QUEUE_AVAIL_HIGH if can_setup_queue => self.set_addr(|q| &mut q.avail, v, true),
            reg::QUEUE_USED_LOW if can_setup_queue => self.set_addr(|q| &mut q.used, v, false),
            reg::QUEUE_USED_HIGH if can_setup_queue => self.set_addr(|q| &mut q.used, v, true),
            reg::INTERRUPT_ACK => self.interrupt_status &= !v,
            reg::STATUS => self.write_status(v),
            // QueueNotify for queues the backend does not own (vsock's event queue) lands here:
            // there is nothing to do. All other offsets are read-only or reserved.
            _ => {}
        }
    }

    fn set_addr(&mut self, field: fn(&mut QueueConfig) -> &mut u64, v: u32, high: bool) {
        if let Some(q) = self.selected_queue() {
            let a = field(q);
            *a = if high {
                (*a & 0xffff_ffff) | (u64::from(v) << 32)
            } else {
                (*a & !0xffff_ffff) | u64::from(v)
            };
        }
    }

    fn write_status(&mut self, v: u32) {
        use status::*;
        if v == 0 {
            self.reset();
            return;
        }
        // The driver only ever adds bits. Anything else is a protocol violation: ignore it.
        if v & self.status != self.status
            || v & !(ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK | FAILED) != 0
        {
            return;
        }
        let new = v & !self.status;
        if new & FAILED != 0 {
            self.status |= FAILED;
            return;
        }
        // Enforce the order ACKNOWLEDGE -> DRIVER -> FEATURES_OK -> DRIVER_OK.
        let next_ok =
            |have: u32, bit: u32, needs: u32| new & bit == 0 || (have | new) & needs == needs;
        if !(next_ok(self.status, DRIVER, ACKNOWLEDGE)
            && next_ok(self.status, FEATURES_OK, ACKNOWLEDGE | DRIVER)
            && next_ok(self.status, DRIVER_OK, ACKNOWLEDGE | DRIVER | FEATURES_OK))
        {
            return;
        }
        if new & FEATURES_OK != 0 {
            let offered = self.offered;
            let acked = self.driver_features;
            // Reject (leave FEATURES_OK clear) unknown bits and legacy drivers.
            if acked & !offered != 0 || acked & (1u64 << VIRTIO_F_VERSION_1) == 0 {
                self.status |= v & !(FEATURES_OK | DRIVER_OK);
                return;
            }
        }
        self.status |= new & !DRIVER_OK;
        if new & DRIVER_OK != 0 {
            self.activate();
        }
    }

    fn activate(&mut self) {
        let mut result = Ok(());
        for (i, q) in self.queues.iter().enumerate() {
            if !q.ready {
                continue;
            }
            if let Err(e) = q.validate(&*self.mem) {
                result = Err(format!("queue {i}: {e}"));
                break;
            }
        }
        let result = result.and_then(|_| self.device.activate(self.driver_features, &self.queues));
        match result {
            Ok(()) => {
                self.status |= status::DRIVER_OK;
                self.active = true;
                self.stats.event_idx = event_idx(self.driver_features);
            }
            Err(e) => {
                tracing::warn!(
                    "virtio device {} not started: {e}",
                    self.device.device_type()
                );
                self.status |= status::DEVICE_NEEDS_RESET;
                self.raise(INT_CONFIG);
            }
        }
    }

    fn reset(&mut self) {
        if self.active || self.status != 0 {
            self.device.reset();
        }
        self.active = false;
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        self.interrupt_status = 0;
        for q in &mut self.queues {
            *q = QueueConfig {
                max_size: q.max_size,
                ..Default::default()
            };
        }
    }
}

pub mod persist;
#[cfg(test)]
mod tests;

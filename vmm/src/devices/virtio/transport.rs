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
                eprintln!(
                    "kata-vmm: warning: virtio device {} not started: {e}",
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
    use std::sync::Mutex;
    use vm_memory::GuestAddress;

    #[derive(Default)]
    struct Log {
        activated: Vec<(u64, Vec<QueueConfig>)>,
        resets: usize,
        config_writes: usize,
        notified: Vec<usize>,
        /// What the next `rekick_queues` reports.
        rekick: u32,
    }

    struct Dummy {
        log: Arc<Mutex<Log>>,
        fail: bool,
        /// A VMM-served device (not vhost).
        own: bool,
    }

    impl VirtioDevice for Dummy {
        fn device_type(&self) -> u32 {
            19
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[256, 256, 128]
        }
        fn features(&self) -> u64 {
            (1 << 32) | (1 << 29) | 1
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            let cfg = 42u64.to_le_bytes();
            for (i, b) in data.iter_mut().enumerate() {
                *b = cfg.get(offset as usize + i).copied().unwrap_or(0);
            }
        }
        fn write_config(&mut self, _offset: u64, _data: &[u8]) {
            self.log.lock().unwrap().config_writes += 1;
        }
        fn activate(&mut self, f: u64, q: &[QueueConfig]) -> Result<(), String> {
            if self.fail {
                return Err("backend says no".into());
            }
            self.log.lock().unwrap().activated.push((f, q.to_vec()));
            Ok(())
        }
        fn reset(&mut self) {
            self.log.lock().unwrap().resets += 1;
        }
        fn vhost_interrupts(&self) -> bool {
            !self.own
        }
        fn process_queue(&mut self, index: usize) -> bool {
            self.log.lock().unwrap().notified.push(index);
            index == 0
        }
        fn rekick_queues(&mut self) -> u32 {
            std::mem::take(&mut self.log.lock().unwrap().rekick)
        }
        fn exit_report(&self) -> Option<String> {
            Some("dummy:".into())
        }
    }

    type T = MmioTransport<Dummy>;

    fn transport(fail: bool) -> (T, Arc<Mutex<Log>>) {
        make(fail, false)
    }

    fn make(fail: bool, own: bool) -> (T, Arc<Mutex<Log>>) {
        let log = Arc::new(Mutex::new(Log::default()));
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        (
            MmioTransport::new(
                Dummy {
                    log: log.clone(),
                    fail,
                    own,
                },
                Arc::new(mem),
            ),
            log,
        )
    }

    #[test]
    fn own_device_interrupt_status_and_irq() {
        use vmm_sys_util::eventfd::EFD_NONBLOCK;
        let (mut t, log) = make(false, true);
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        t.set_irq(irq.try_clone().unwrap());
        t.notify_queue(0, 1);
        assert!(log.lock().unwrap().notified.is_empty(), "not active yet");
        negotiate(&mut t);
        setup_queue(&mut t, 0, 0x10000, 16);
        setup_queue(&mut t, 1, 0x20000, 16);
        w(&mut t, reg::STATUS, ALL_OK);
        assert!(t.is_active());
        // No vhost trick: nothing pending until the device returns buffers.
        assert_eq!(r(&mut t, reg::INTERRUPT_STATUS), 0);
        t.notify_queue(1, 1); // served, nothing used
        assert_eq!(r(&mut t, reg::INTERRUPT_STATUS), 0);
        assert!(irq.read().is_err(), "no interrupt");
        t.notify_queue(2, 1); // not ready: never reaches the device
        t.notify_queue(usize::MAX, 1);
        t.notify_queue(0, 1);
        assert_eq!(log.lock().unwrap().notified, vec![1, 0]);
        assert_eq!(r(&mut t, reg::INTERRUPT_STATUS), INT_VRING);
        assert_eq!(irq.read().unwrap(), 1);
        w(&mut t, reg::INTERRUPT_ACK, INT_VRING);
        assert_eq!(r(&mut t, reg::INTERRUPT_STATUS), 0);
    }

    fn r(t: &mut T, off: u64) -> u32 {
        let mut b = [0u8; 4];
        t.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    fn w(t: &mut T, off: u64, v: u32) {
        t.write(off, &v.to_le_bytes());
    }

    fn negotiate(t: &mut T) {
        w(t, reg::STATUS, status::ACKNOWLEDGE);
        w(t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        w(t, reg::DRIVER_FEATURES_SEL, 0);
        w(t, reg::DRIVER_FEATURES, 1);
        w(t, reg::DRIVER_FEATURES_SEL, 1);
        w(t, reg::DRIVER_FEATURES, 1);
        w(
            t,
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
    }

    fn setup_queue(t: &mut T, idx: u32, base: u64, size: u32) {
        w(t, reg::QUEUE_SEL, idx);
        w(t, reg::QUEUE_NUM, size);
        w(t, reg::QUEUE_DESC_LOW, base as u32);
        w(t, reg::QUEUE_DESC_HIGH, (base >> 32) as u32);
        w(t, reg::QUEUE_AVAIL_LOW, (base + 0x1000) as u32);
        w(t, reg::QUEUE_AVAIL_HIGH, 0);
        w(t, reg::QUEUE_USED_LOW, (base + 0x2000) as u32);
        w(t, reg::QUEUE_USED_HIGH, 0);
        w(t, reg::QUEUE_READY, 1);
    }

    const ALL_OK: u32 =
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK;

    #[test]
    fn constants_are_the_spec_values() {
        // virtio 1.x, 4.2.2 (MMIO register layout) and 2.1 (status bits): pinned so that a
        // virtio-bindings update cannot move them silently.
        let regs = [
            (reg::MAGIC, 0x000),
            (reg::VERSION, 0x004),
            (reg::DEVICE_ID, 0x008),
            (reg::VENDOR_ID, 0x00c),
            (reg::DEVICE_FEATURES, 0x010),
            (reg::DEVICE_FEATURES_SEL, 0x014),
            (reg::DRIVER_FEATURES, 0x020),
            (reg::DRIVER_FEATURES_SEL, 0x024),
            (reg::QUEUE_SEL, 0x030),
            (reg::QUEUE_NUM_MAX, 0x034),
            (reg::QUEUE_NUM, 0x038),
            (reg::QUEUE_READY, 0x044),
            (reg::QUEUE_NOTIFY, 0x050),
            (reg::INTERRUPT_STATUS, 0x060),
            (reg::INTERRUPT_ACK, 0x064),
            (reg::STATUS, 0x070),
            (reg::QUEUE_DESC_LOW, 0x080),
            (reg::QUEUE_DESC_HIGH, 0x084),
            (reg::QUEUE_AVAIL_LOW, 0x090),
            (reg::QUEUE_AVAIL_HIGH, 0x094),
            (reg::QUEUE_USED_LOW, 0x0a0),
            (reg::QUEUE_USED_HIGH, 0x0a4),
            (reg::CONFIG_GENERATION, 0x0fc),
            (reg::CONFIG, 0x100),
        ];
        for (got, want) in regs {
            assert_eq!(got, want);
        }
        use status::*;
        assert_eq!(
            [
                ACKNOWLEDGE,
                DRIVER,
                DRIVER_OK,
                FEATURES_OK,
                DEVICE_NEEDS_RESET,
                FAILED
            ],
            [1, 2, 4, 8, 0x40, 0x80]
        );
        assert_eq!((INT_VRING, INT_CONFIG), (1, 2));
        assert_eq!(
            (
                VIRTIO_F_VERSION_1,
                VIRTIO_RING_F_EVENT_IDX,
                VIRTIO_RING_F_INDIRECT_DESC
            ),
            (32, 29, 28)
        );
    }

    #[test]
    fn identification_registers() {
        let (mut t, _) = transport(false);
        assert_eq!(r(&mut t, reg::MAGIC), 0x7472_6976);
        assert_eq!(r(&mut t, reg::VERSION), 2);
        assert_eq!(r(&mut t, reg::DEVICE_ID), 19);
        w(&mut t, reg::DEVICE_FEATURES_SEL, 0);
        assert_eq!(r(&mut t, reg::DEVICE_FEATURES), (1 << 29) | 1);
        w(&mut t, reg::DEVICE_FEATURES_SEL, 1);
        assert_eq!(r(&mut t, reg::DEVICE_FEATURES), 1);
        w(&mut t, reg::DEVICE_FEATURES_SEL, 7);
        assert_eq!(r(&mut t, reg::DEVICE_FEATURES), 0);
        w(&mut t, reg::QUEUE_SEL, 2);
        assert_eq!(r(&mut t, reg::QUEUE_NUM_MAX), 128);
        w(&mut t, reg::QUEUE_SEL, 3);
        assert_eq!(r(&mut t, reg::QUEUE_NUM_MAX), 0);
        let mut b = [0u8; 8];
        t.read(reg::CONFIG, &mut b);
        assert_eq!(u64::from_le_bytes(b), 42);
    }

    #[test]
    fn full_activation_and_reset() {
        let (mut t, log) = transport(false);
        negotiate(&mut t);
        assert_eq!(
            r(&mut t, reg::STATUS) & status::FEATURES_OK,
            status::FEATURES_OK
        );
        setup_queue(&mut t, 0, 0x10000, 256);
        setup_queue(&mut t, 1, 0x20000, 128);
        assert_eq!(r(&mut t, reg::INTERRUPT_STATUS), 0);
        w(&mut t, reg::STATUS, ALL_OK);
        assert_eq!(r(&mut t, reg::STATUS), ALL_OK);
        assert!(t.is_active());
        {
            let l = log.lock().unwrap();
            assert_eq!(l.activated.len(), 1);
            let (f, q) = &l.activated[0];
            assert_eq!(*f, (1 << 32) | 1);
            assert_eq!(q[0].size, 256);
            assert_eq!(q[0].desc, 0x10000);
            assert_eq!(q[0].avail, 0x11000);
            assert_eq!(q[0].used, 0x12000);
            assert!(q[1].ready && !q[2].ready);
        }
        // irqfd path: the VRING bit is always reported while running; ACK does not clear it.
        assert_eq!(r(&mut t, reg::INTERRUPT_STATUS) & INT_VRING, INT_VRING);
        w(&mut t, reg::INTERRUPT_ACK, INT_VRING);
        assert_eq!(r(&mut t, reg::INTERRUPT_STATUS) & INT_VRING, INT_VRING);
        // Queue setup after DRIVER_OK is ignored.
        w(&mut t, reg::QUEUE_SEL, 0);
        w(&mut t, reg::QUEUE_NUM, 2);
        assert_eq!(t.queues()[0].size, 256);
        // Reset.
        w(&mut t, reg::STATUS, 0);
        assert_eq!(r(&mut t, reg::STATUS), 0);
        assert!(!t.is_active());
        assert_eq!(log.lock().unwrap().resets, 1);
        assert_eq!(
            t.queues()[0],
            QueueConfig {
                max_size: 256,
                ..Default::default()
            }
        );
        assert_eq!(r(&mut t, reg::INTERRUPT_STATUS), 0);
        // And it can come up again.
        negotiate(&mut t);
        setup_queue(&mut t, 0, 0x10000, 64);
        w(&mut t, reg::STATUS, ALL_OK);
        assert!(t.is_active());
        assert_eq!(log.lock().unwrap().activated.len(), 2);
    }

    #[test]
    fn rejects_unknown_features_and_legacy_drivers() {
        let (mut t, _) = transport(false);
        w(&mut t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        w(&mut t, reg::DRIVER_FEATURES_SEL, 0);
        w(&mut t, reg::DRIVER_FEATURES, 1 | 2); // bit 1 not offered
        w(&mut t, reg::DRIVER_FEATURES_SEL, 1);
        w(&mut t, reg::DRIVER_FEATURES, 1);
        w(
            &mut t,
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
        assert_eq!(r(&mut t, reg::STATUS) & status::FEATURES_OK, 0);

        let (mut t, _) = transport(false);
        w(&mut t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        w(&mut t, reg::DRIVER_FEATURES, 1); // no VERSION_1
        w(
            &mut t,
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
        assert_eq!(r(&mut t, reg::STATUS) & status::FEATURES_OK, 0);
        // DRIVER_OK without FEATURES_OK does nothing.
        w(&mut t, reg::STATUS, ALL_OK);
        assert!(!t.is_active());
    }

    #[test]
    fn hostile_status_sequences() {
        let (mut t, log) = transport(false);
        // Jumping straight to DRIVER_OK: features were never negotiated, so neither
        // FEATURES_OK nor DRIVER_OK sticks.
        w(&mut t, reg::STATUS, ALL_OK);
        assert_eq!(r(&mut t, reg::STATUS), status::ACKNOWLEDGE | status::DRIVER);
        assert!(!t.is_active());
        w(&mut t, reg::STATUS, 0);
        // Unknown status bits.
        w(&mut t, reg::STATUS, 0x100 | status::ACKNOWLEDGE);
        assert_eq!(r(&mut t, reg::STATUS), 0);
        // DRIVER before ACKNOWLEDGE.
        w(&mut t, reg::STATUS, status::DRIVER);
        assert_eq!(r(&mut t, reg::STATUS), 0);
        // Clearing bits other than by reset.
        w(&mut t, reg::STATUS, status::ACKNOWLEDGE);
        w(&mut t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        w(&mut t, reg::STATUS, status::ACKNOWLEDGE);
        assert_eq!(r(&mut t, reg::STATUS), status::ACKNOWLEDGE | status::DRIVER);
        // Features cannot be written before DRIVER or after FEATURES_OK.
        let (mut t2, _) = transport(false);
        w(&mut t2, reg::DRIVER_FEATURES, 1);
        assert_eq!(t2.driver_features(), 0);
        negotiate(&mut t2);
        w(&mut t2, reg::DRIVER_FEATURES_SEL, 0);
        w(&mut t2, reg::DRIVER_FEATURES, 0);
        assert_eq!(t2.driver_features(), (1 << 32) | 1);
        // FAILED sticks and blocks activation.
        w(
            &mut t,
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FAILED,
        );
        w(&mut t, reg::STATUS, ALL_OK | status::FAILED);
        assert!(!t.is_active());
        assert!(log.lock().unwrap().activated.is_empty());
    }

    #[test]
    fn malformed_accesses_never_panic() {
        let (mut t, _) = transport(false);
        negotiate(&mut t);
        // Odd widths and unaligned offsets.
        for len in [0usize, 1, 2, 3, 5, 8, 16] {
            let mut buf = vec![0u8; len];
            for off in [0u64, 1, 2, 0x10, 0x33, 0x50, 0x70, 0xfc, 0xfd, 0xfff] {
                t.read(off, &mut buf);
                if off < reg::CONFIG && len != 4 {
                    assert!(buf.iter().all(|b| *b == 0xff));
                }
                t.write(off, &buf);
            }
        }
        // Config space past its end and near u64::MAX.
        let mut b = [0u8; 8];
        t.read(0xff8, &mut b);
        t.read(u64::MAX - 3, &mut b);
        t.write(u64::MAX - 3, &b);
        // Unknown register reads are all ones; writes to read-only registers do nothing.
        assert_eq!(r(&mut t, 0x0f0), 0xffff_ffff);
        w(&mut t, reg::MAGIC, 0);
        assert_eq!(r(&mut t, reg::MAGIC), MAGIC);
        // Out of range queue select.
        w(&mut t, reg::QUEUE_SEL, u32::MAX);
        w(&mut t, reg::QUEUE_NUM, 8);
        w(&mut t, reg::QUEUE_DESC_LOW, 8);
        w(&mut t, reg::QUEUE_READY, 1);
        assert_eq!(r(&mut t, reg::QUEUE_READY), 0);
        assert_eq!(r(&mut t, reg::QUEUE_NUM_MAX), 0);
        // Queue notify for any value is a no-op here.
        for q in [0u32, 2, 3, u32::MAX] {
            w(&mut t, reg::QUEUE_NOTIFY, q);
        }
    }

    #[test]
    fn bad_queues_do_not_activate() {
        let cases: [(u32, u64); 6] = [
            (0, 0x10000),        // size 0
            (100, 0x10000),      // not a power of two
            (512, 0x10000),      // above max
            (0x1_0000, 0x10000), // does not fit in 16 bits
            (256, 0xf_f000),     // rings run past the end of guest memory
            (256, 0x10008),      // descriptor table misaligned
        ];
        for (size, base) in cases {
            let (mut t, log) = transport(false);
            negotiate(&mut t);
            setup_queue(&mut t, 0, base, size);
            w(&mut t, reg::STATUS, ALL_OK);
            assert!(!t.is_active(), "size {size} base {base:#x}");
            assert_eq!(t.status() & status::DRIVER_OK, 0);
            assert_ne!(t.status() & status::DEVICE_NEEDS_RESET, 0);
            assert_ne!(r(&mut t, reg::INTERRUPT_STATUS) & INT_CONFIG, 0);
            assert!(log.lock().unwrap().activated.is_empty());
        }
        // Ring addresses far outside memory / overflowing.
        let (mut t, _) = transport(false);
        negotiate(&mut t);
        setup_queue(&mut t, 0, 0x10000, 16);
        w(&mut t, reg::QUEUE_USED_HIGH, 0xffff_ffff);
        w(&mut t, reg::QUEUE_USED_LOW, 0xffff_fff0);
        w(&mut t, reg::STATUS, ALL_OK);
        assert!(!t.is_active());
    }

    #[test]
    fn backend_failure_marks_needs_reset() {
        let (mut t, _) = transport(true);
        negotiate(&mut t);
        setup_queue(&mut t, 0, 0x10000, 16);
        w(&mut t, reg::STATUS, ALL_OK);
        assert!(!t.is_active());
        assert_ne!(t.status() & status::DEVICE_NEEDS_RESET, 0);
    }

    #[test]
    fn kicks_interrupts_and_rekicks_are_counted() {
        use vmm_sys_util::eventfd::EFD_NONBLOCK;
        let (mut t, log) = make(false, true);
        let evts: Vec<EventFd> = (0..3)
            .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
            .collect();
        t.set_queue_events(evts.iter().map(|e| e.try_clone().unwrap()).collect());
        t.set_irq(EventFd::new(EFD_NONBLOCK).unwrap());
        t.notify_queue(0, 2); // before DRIVER_OK: counted, not served
        negotiate(&mut t);
        setup_queue(&mut t, 0, 0x10000, 16);
        setup_queue(&mut t, 1, 0x20000, 16);
        w(&mut t, reg::STATUS, ALL_OK);
        // The device left chains on queue 1 (and names a queue that does not exist).
        log.lock().unwrap().rekick = 0b10 | (1 << 31);
        t.notify_queue(1, 3);
        assert_eq!(evts[1].read().unwrap(), 1, "queue 1 re-signalled");
        assert!(evts[0].read().is_err() && evts[2].read().is_err());
        // The next read of queue 1's counter holds our re-kick plus 4 guest kicks.
        t.notify_queue(1, 5);
        t.notify_queue(0, 1);
        t.notify_queue(0, 1);
        let s = t.notify_stats().clone();
        assert_eq!(s.kicks, vec![4, 7, 0]);
        assert_eq!(s.interrupts, 2, "queue 0 used buffers twice");
        assert_eq!(s.rekicks, 1);
        // A re-kick that the read did not see (counter 0) is not taken from later kicks.
        log.lock().unwrap().rekick = 0b100;
        t.notify_queue(2, 0);
        t.notify_queue(2, 0);
        t.notify_queue(2, 2);
        assert_eq!(t.notify_stats().kicks[2], 2);
        assert_eq!(
            t.exit_report().as_deref(),
            Some("dummy: event_idx=0 kicks=13 queue_kicks=4,7,2 interrupts=2 rekicks=2")
        );
        // vhost devices report without transport counters.
        let (v, _) = make(false, false);
        assert_eq!(v.exit_report().as_deref(), Some("dummy:"));
    }

    #[test]
    fn negotiated_event_idx_is_reported_after_the_reset() {
        let (mut t, _) = make(false, true);
        w(&mut t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        w(&mut t, reg::DRIVER_FEATURES_SEL, 0);
        w(&mut t, reg::DRIVER_FEATURES, 1 << VIRTIO_RING_F_EVENT_IDX);
        w(&mut t, reg::DRIVER_FEATURES_SEL, 1);
        w(&mut t, reg::DRIVER_FEATURES, 1);
        w(
            &mut t,
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
        setup_queue(&mut t, 0, 0x10000, 16);
        w(&mut t, reg::STATUS, ALL_OK);
        assert!(t.is_active() && t.notify_stats().event_idx);
        // The guest's shutdown resets the device; the summary still says what ran.
        w(&mut t, reg::STATUS, 0);
        assert!(t.exit_report().unwrap().contains(" event_idx=1 "));
        // A driver that does not take it, next time.
        negotiate(&mut t);
        setup_queue(&mut t, 0, 0x10000, 16);
        w(&mut t, reg::STATUS, ALL_OK);
        assert!(t.exit_report().unwrap().contains(" event_idx=0 "));
    }

    #[test]
    fn withheld_features_are_neither_offered_nor_accepted() {
        let (mut t, _) = transport(false);
        t.withhold_features(1 << VIRTIO_RING_F_EVENT_IDX);
        assert_eq!(t.offered_features(), (1 << 32) | 1);
        w(&mut t, reg::DEVICE_FEATURES_SEL, 0);
        assert_eq!(r(&mut t, reg::DEVICE_FEATURES), 1);
        w(&mut t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        w(&mut t, reg::DRIVER_FEATURES_SEL, 0);
        w(
            &mut t,
            reg::DRIVER_FEATURES,
            1 | (1 << VIRTIO_RING_F_EVENT_IDX),
        );
        w(&mut t, reg::DRIVER_FEATURES_SEL, 1);
        w(&mut t, reg::DRIVER_FEATURES, 1);
        w(
            &mut t,
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
        assert_eq!(r(&mut t, reg::STATUS) & status::FEATURES_OK, 0);
    }

    #[test]
    fn config_writes_need_driver() {
        let (mut t, log) = transport(false);
        t.write(reg::CONFIG, &[1]);
        assert_eq!(log.lock().unwrap().config_writes, 0);
        negotiate(&mut t);
        t.write(reg::CONFIG, &[1]);
        assert_eq!(log.lock().unwrap().config_writes, 1);
    }
}

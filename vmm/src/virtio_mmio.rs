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

use std::sync::Arc;

use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

/// "virt" in little endian.
pub const MAGIC: u32 = 0x7472_6976;
/// Transport version 2 (modern).
pub const VERSION: u32 = 2;
/// Vendor id we report ("KRS\0" would do; any value is fine).
pub const VENDOR_ID: u32 = 0x0053_524b;
/// `VIRTIO_F_VERSION_1` feature bit.
pub const VIRTIO_F_VERSION_1: u32 = 32;

/// Register offsets.
pub mod reg {
    /// Magic value (R).
    pub const MAGIC: u64 = 0x000;
    /// Version (R).
    pub const VERSION: u64 = 0x004;
    /// Device id (R).
    pub const DEVICE_ID: u64 = 0x008;
    /// Vendor id (R).
    pub const VENDOR_ID: u64 = 0x00c;
    /// Device features word selected by `DEVICE_FEATURES_SEL` (R).
    pub const DEVICE_FEATURES: u64 = 0x010;
    /// Device features word select (W).
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    /// Driver features word (W).
    pub const DRIVER_FEATURES: u64 = 0x020;
    /// Driver features word select (W).
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    /// Queue select (W).
    pub const QUEUE_SEL: u64 = 0x030;
    /// Maximum queue size (R).
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    /// Queue size (W).
    pub const QUEUE_NUM: u64 = 0x038;
    /// Queue ready (RW).
    pub const QUEUE_READY: u64 = 0x044;
    /// Queue notify (W).
    pub const QUEUE_NOTIFY: u64 = 0x050;
    /// Interrupt status (R).
    pub const INTERRUPT_STATUS: u64 = 0x060;
    /// Interrupt acknowledge (W).
    pub const INTERRUPT_ACK: u64 = 0x064;
    /// Device status (RW).
    pub const STATUS: u64 = 0x070;
    /// Descriptor table address, low 32 bits (W).
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    /// Descriptor table address, high 32 bits (W).
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    /// Available ring address, low (W).
    pub const QUEUE_AVAIL_LOW: u64 = 0x090;
    /// Available ring address, high (W).
    pub const QUEUE_AVAIL_HIGH: u64 = 0x094;
    /// Used ring address, low (W).
    pub const QUEUE_USED_LOW: u64 = 0x0a0;
    /// Used ring address, high (W).
    pub const QUEUE_USED_HIGH: u64 = 0x0a4;
    /// Configuration generation (R).
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    /// Start of the device specific configuration space.
    pub const CONFIG: u64 = 0x100;
}

/// Device status bits.
pub mod status {
    /// Guest noticed the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// Guest has a driver.
    pub const DRIVER: u32 = 2;
    /// Driver is ready; the device may run.
    pub const DRIVER_OK: u32 = 4;
    /// Feature negotiation done.
    pub const FEATURES_OK: u32 = 8;
    /// Device hit an error and needs a reset.
    pub const DEVICE_NEEDS_RESET: u32 = 0x40;
    /// Driver gave up.
    pub const FAILED: u32 = 0x80;
}

/// `InterruptStatus` bit: a used buffer was returned.
pub const INT_VRING: u32 = 1;
/// `InterruptStatus` bit: configuration changed.
pub const INT_CONFIG: u32 = 2;

/// One virtqueue as the driver configured it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueConfig {
    /// Largest size the device accepts.
    pub max_size: u16,
    /// Size the driver chose.
    pub size: u16,
    /// Whether the driver set `QueueReady`.
    pub ready: bool,
    /// Descriptor table guest address.
    pub desc: u64,
    /// Available ("driver") ring guest address.
    pub avail: u64,
    /// Used ("device") ring guest address.
    pub used: u64,
}

/// Why a queue configuration is unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueueError {
    /// Size is 0, not a power of two or above the maximum.
    #[error("queue size {size} is invalid (max {max}, must be a power of two)")]
    Size {
        /// Requested size.
        size: u16,
        /// Device maximum.
        max: u16,
    },
    /// A ring is misaligned or not entirely inside guest RAM.
    #[error("{0} ring at {1:#x} is misaligned or outside guest memory")]
    Ring(&'static str, u64),
}

impl QueueConfig {
    /// Checks size and ring placement against guest memory (virtio 1.x split ring sizes).
    pub fn validate<M: GuestMemoryBackend>(&self, mem: &M) -> Result<(), QueueError> {
        let n = self.size;
        if n == 0 || n > self.max_size || !n.is_power_of_two() {
            return Err(QueueError::Size {
                size: n,
                max: self.max_size,
            });
        }
        let n = u64::from(n);
        // (name, address, length, alignment); the event idx fields are included.
        let rings = [
            ("descriptor", self.desc, 16 * n, 16),
            ("available", self.avail, 6 + 2 * n, 2),
            ("used", self.used, 6 + 8 * n, 4),
        ];
        for (name, addr, len, align) in rings {
            let ok = addr % align == 0
                && addr
                    .checked_add(len - 1)
                    .is_some_and(|last| in_one_region(mem, addr, last));
            if !ok {
                return Err(QueueError::Ring(name, addr));
            }
        }
        Ok(())
    }
}

impl QueueConfig {
    /// A `virtio_queue::Queue` for a device the VMM serves itself, from what the driver
    /// configured; refused unless the queue crate finds the rings valid too.
    pub fn build_queue<M: vm_memory::GuestMemory>(
        &self,
        mem: &M,
    ) -> Result<virtio_queue::Queue, String> {
        use virtio_queue::QueueT;
        let e = |e: virtio_queue::Error| e.to_string();
        let mut q = virtio_queue::Queue::new(self.max_size).map_err(e)?;
        q.try_set_size(self.size).map_err(e)?;
        q.try_set_desc_table_address(GuestAddress(self.desc))
            .map_err(e)?;
        q.try_set_avail_ring_address(GuestAddress(self.avail))
            .map_err(e)?;
        q.try_set_used_ring_address(GuestAddress(self.used))
            .map_err(e)?;
        q.set_ready(true);
        if !q.is_valid(mem) {
            return Err("queue rings are not valid".into());
        }
        Ok(q)
    }

    /// The `virtio_queue::Queue` of a single-queue device: queue 0, which the driver must
    /// have made ready.
    pub fn build_single_queue<M: vm_memory::GuestMemory>(
        queues: &[QueueConfig],
        mem: &M,
    ) -> Result<virtio_queue::Queue, String> {
        queues
            .first()
            .filter(|q| q.ready)
            .ok_or("the request queue is not ready")?
            .build_queue(mem)
    }
}

/// Serves every available chain of a device's own queue with `serve` (which returns the
/// used length) and says whether the driver should be interrupted. A malicious driver could
/// keep the ring full forever: one pass serves at most one ring's worth of chains, the next
/// kick serves the rest.
pub fn serve_available<M, F>(queue: &mut virtio_queue::Queue, mem: &M, mut serve: F) -> bool
where
    M: vm_memory::GuestMemory,
    F: FnMut(virtio_queue::DescriptorChain<&M>) -> u32,
{
    use virtio_queue::QueueT;
    let mut used_any = false;
    for _ in 0..queue.size() {
        let Some(chain) = queue.pop_descriptor_chain(mem) else {
            break;
        };
        let head = chain.head_index();
        let len = serve(chain);
        if queue.add_used(mem, head, len).is_err() {
            // The used ring is not writable: nothing sensible left to do on this queue.
            break;
        }
        used_any = true;
    }
    used_any && queue.needs_notification(mem).unwrap_or(true)
}

fn in_one_region<M: GuestMemoryBackend>(mem: &M, first: u64, last: u64) -> bool {
    use vm_memory::GuestMemoryRegion;
    match mem.find_region(GuestAddress(first)) {
        Some(r) => last <= r.last_addr().0,
        None => false,
    }
}

/// A device behind the transport.
pub trait VirtioDevice: Send {
    /// Virtio device id (19 = vsock).
    fn device_type(&self) -> u32;
    /// Maximum size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Feature bits offered to the driver (must include `VIRTIO_F_VERSION_1`).
    fn features(&self) -> u64;
    /// Reads device configuration space at `offset` (relative to 0x100).
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes device configuration space.
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// Starts the device with the negotiated features and validated queues.
    fn activate(&mut self, features: u64, queues: &[QueueConfig]) -> Result<(), String>;
    /// Stops the device (driver wrote 0 to `Status`).
    fn reset(&mut self);
    /// True when a host kernel backend (vhost) signals the irqfd itself, so the transport
    /// never learns about used buffers (see the module documentation).
    fn vhost_interrupts(&self) -> bool {
        false
    }
    /// The driver notified queue `index` (only called while the device is active); returns
    /// true when used buffers were returned and the driver should be interrupted.
    fn process_queue(&mut self, index: usize) -> bool {
        let _ = index;
        false
    }
    /// A host fd the main thread's event loop polls for this device while it is active, with
    /// the `poll(2)` events wanted now (0: not now). Only devices with a host backend (the tap
    /// of virtio-net) have one.
    fn backend_poll(&self) -> Option<(std::os::fd::RawFd, i16)> {
        None
    }
    /// The backend fd reported `revents`; returns true when used buffers were returned and the
    /// driver should be interrupted.
    fn process_backend(&mut self, revents: i16) -> bool {
        let _ = revents;
        false
    }
    /// A one-line summary printed when the VMM exits (counters that tests and operators
    /// read, e.g. frames a network device dropped); None for devices without one.
    fn exit_report(&self) -> Option<String> {
        None
    }
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
}

impl<D: VirtioDevice> MmioTransport<D> {
    /// Wraps `device`; `mem` is what queue addresses are validated against.
    pub fn new(device: D, mem: Arc<GuestMemoryMmap>) -> Self {
        let queues = device
            .queue_max_sizes()
            .iter()
            .map(|m| QueueConfig {
                max_size: *m,
                ..Default::default()
            })
            .collect();
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
        }
    }

    /// The irqfd (a KVM irqfd on the device's IRQ) this transport signals for the VMM's own
    /// devices. vhost devices get theirs from the backend instead.
    pub fn set_irq(&mut self, irq: EventFd) {
        self.irq = Some(irq);
    }

    /// The driver kicked queue `index` (its ioeventfd fired): let the device serve it and
    /// interrupt the driver if it returned buffers.
    pub fn notify_queue(&mut self, index: usize) {
        if !self.active || self.device.vhost_interrupts() {
            return;
        }
        if self.queues.get(index).is_some_and(|q| q.ready) && self.device.process_queue(index) {
            self.raise(INT_VRING);
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
    }

    /// The device's exit summary (see [`VirtioDevice::exit_report`]).
    pub fn exit_report(&self) -> Option<String> {
        self.device.exit_report()
    }

    fn raise(&mut self, bit: u32) {
        self.interrupt_status |= bit;
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
                0 => self.device.features() as u32,
                1 => (self.device.features() >> 32) as u32,
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
            let offered = self.device.features();
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
    use std::sync::Mutex;

    #[derive(Default)]
    struct Log {
        activated: Vec<(u64, Vec<QueueConfig>)>,
        resets: usize,
        config_writes: usize,
        notified: Vec<usize>,
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
        t.notify_queue(0);
        assert!(log.lock().unwrap().notified.is_empty(), "not active yet");
        negotiate(&mut t);
        setup_queue(&mut t, 0, 0x10000, 16);
        setup_queue(&mut t, 1, 0x20000, 16);
        w(&mut t, reg::STATUS, ALL_OK);
        assert!(t.is_active());
        // No vhost trick: nothing pending until the device returns buffers.
        assert_eq!(r(&mut t, reg::INTERRUPT_STATUS), 0);
        t.notify_queue(1); // served, nothing used
        assert_eq!(r(&mut t, reg::INTERRUPT_STATUS), 0);
        assert!(irq.read().is_err(), "no interrupt");
        t.notify_queue(2); // not ready: never reaches the device
        t.notify_queue(usize::MAX);
        t.notify_queue(0);
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
    fn config_writes_need_driver() {
        let (mut t, log) = transport(false);
        t.write(reg::CONFIG, &[1]);
        assert_eq!(log.lock().unwrap().config_writes, 0);
        negotiate(&mut t);
        t.write(reg::CONFIG, &[1]);
        assert_eq!(log.lock().unwrap().config_writes, 1);
    }
}

//! The device side of the virtio-mmio transport: what every virtio device implements.

#[cfg(doc)]
use super::queue::Pass;
use super::queue::QueueConfig;

/// What a device records at a snapshot for its own restore, beyond its transport and queues
/// ([`VirtioDevice::save_note`]; saved in the slot's state, untrusted when read back).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DeviceNote {
    /// virtio-vsock's host side at the save. The restored device numbers its host ports from
    /// `next_port` on, so no port of a connection the guest may still hold is used again.
    /// `idle`: no host connection open and no packet owed to the guest, so the guest has no
    /// connection the restored VMM does not know of, and a restore with the same CID needs
    /// no transport reset.
    Vsock {
        /// The guest's CID at the save.
        cid: u64,
        /// The next host port the device would have given a connection.
        next_port: u32,
        /// Nothing open, nothing owed (see above).
        idle: bool,
    },
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
    /// Queues (bit i = queue i) that the calls since the last time left chains on because
    /// their budget ran out (see [`Pass::more`]); reading clears the set. The transport then
    /// signals those queues' notify eventfds so the event loop serves them again after the
    /// other fds: with `EVENT_IDX` the driver does not kick for chains it already published.
    fn rekick_queues(&mut self) -> u32 {
        0
    }
    /// Whether a snapshot may save this device: Ok for the devices whose whole state is the
    /// transport's plus [`VirtioDevice::queue_positions`]; the message says why not.
    fn snapshot_supported(&self) -> Result<(), String> {
        Err(format!(
            "snapshots of virtio device type {} are not supported yet",
            self.device_type()
        ))
    }
    /// Where each running queue stands, `(next_avail, next_used)` by queue index (None: the
    /// device does not run that queue). Saved in a snapshot; empty while not active.
    fn queue_positions(&self) -> Vec<Option<(u16, u16)>> {
        Vec::new()
    }
    /// After a restore's [`VirtioDevice::activate`]: puts the running queues where the
    /// snapshot left them (entries for queues the device does not run are ignored).
    fn set_queue_positions(&mut self, positions: &[Option<(u16, u16)>]) {
        let _ = positions;
    }
    /// What the device records for its restore when a snapshot saves it now (see
    /// [`DeviceNote`]); None by default.
    fn save_note(&self) -> Option<DeviceNote> {
        None
    }
    /// Once the device is restored and active: what it tells the guest about the restore
    /// (vsock: the transport reset event, unless `note` shows it is not needed). True: used
    /// buffers were returned, interrupt.
    fn after_restore(&mut self, note: Option<&DeviceNote>) -> bool {
        let _ = note;
        false
    }
    /// Whether a restore may put a saved slot's state on this device (by default: whether a
    /// snapshot may save it; a virtio-fs device takes over a template's backend-less slot).
    fn restore_supported(&self) -> Result<(), String> {
        self.snapshot_supported()
    }
    /// What the guest's driver read of this device that a restored one must have too (saved
    /// with the slot, compared at a restore): virtio-fs, its tag; None for the others.
    fn identity(&self) -> Option<String> {
        None
    }
}

impl VirtioDevice for Box<dyn VirtioDevice> {
    fn device_type(&self) -> u32 {
        (**self).device_type()
    }
    fn queue_max_sizes(&self) -> &[u16] {
        (**self).queue_max_sizes()
    }
    fn features(&self) -> u64 {
        (**self).features()
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        (**self).read_config(offset, data)
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        (**self).write_config(offset, data)
    }
    fn activate(&mut self, features: u64, queues: &[QueueConfig]) -> Result<(), String> {
        (**self).activate(features, queues)
    }
    fn reset(&mut self) {
        (**self).reset()
    }
    fn vhost_interrupts(&self) -> bool {
        (**self).vhost_interrupts()
    }
    fn process_queue(&mut self, index: usize) -> bool {
        (**self).process_queue(index)
    }
    fn backend_poll(&self) -> Option<(std::os::fd::RawFd, i16)> {
        (**self).backend_poll()
    }
    fn process_backend(&mut self, revents: i16) -> bool {
        (**self).process_backend(revents)
    }
    fn exit_report(&self) -> Option<String> {
        (**self).exit_report()
    }
    fn rekick_queues(&mut self) -> u32 {
        (**self).rekick_queues()
    }
    fn snapshot_supported(&self) -> Result<(), String> {
        (**self).snapshot_supported()
    }
    fn queue_positions(&self) -> Vec<Option<(u16, u16)>> {
        (**self).queue_positions()
    }
    fn set_queue_positions(&mut self, positions: &[Option<(u16, u16)>]) {
        (**self).set_queue_positions(positions)
    }
    fn save_note(&self) -> Option<DeviceNote> {
        (**self).save_note()
    }
    fn after_restore(&mut self, note: Option<&DeviceNote>) -> bool {
        (**self).after_restore(note)
    }
    fn restore_supported(&self) -> Result<(), String> {
        (**self).restore_supported()
    }
    fn identity(&self) -> Option<String> {
        (**self).identity()
    }
}

/// `(next_avail, next_used)` of a running queue (see [`VirtioDevice::queue_positions`]).
pub fn position(q: Option<&virtio_queue::Queue>) -> Option<(u16, u16)> {
    use virtio_queue::QueueT;
    q.map(|q| (q.next_avail(), q.next_used()))
}

/// Puts a running queue at `p` (see [`VirtioDevice::set_queue_positions`]).
pub fn set_position(q: Option<&mut virtio_queue::Queue>, p: Option<&Option<(u16, u16)>>) {
    use virtio_queue::QueueT;
    if let (Some(q), Some(Some((avail, used)))) = (q, p) {
        q.set_next_avail(*avail);
        q.set_next_used(*used);
    }
}

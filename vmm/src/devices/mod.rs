//! Legacy devices and the port/MMIO dispatch of vCPU exits.

pub mod i8042;
pub mod serial;

use std::sync::{Arc, Mutex};

use crate::layout::{virtio_mmio_addr, VIRTIO_MMIO_SIZE};
use crate::virtio_mmio::{MmioTransport, VirtioDevice};

/// First port of the COM1 16550.
pub const SERIAL_PORT_BASE: u16 = 0x3f8;
/// Number of COM1 registers.
pub const SERIAL_PORT_LEN: u16 = 8;

/// What a device access asks the VMM to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Keep running.
    Continue,
    /// The guest asked for a reset.
    Reset,
}

/// A virtio-mmio transport behind a lock, shared by all vCPU threads.
pub type SharedTransport = Arc<Mutex<MmioTransport<Box<dyn VirtioDevice>>>>;

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
    fn activate(
        &mut self,
        features: u64,
        queues: &[crate::virtio_mmio::QueueConfig],
    ) -> Result<(), String> {
        (**self).activate(features, queues)
    }
    fn reset(&mut self) {
        (**self).reset()
    }
}

/// All emulated devices; cloned into every vCPU thread.
#[derive(Clone)]
pub struct Devices {
    /// COM1.
    pub serial: Arc<Mutex<serial::ConsoleSerial>>,
    /// virtio-mmio devices, device i at `virtio_mmio_addr(i)`.
    pub virtio: Vec<SharedTransport>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock means a vCPU thread panicked mid-access; the state is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Devices {
    /// Port read. Unknown ports read as all ones.
    pub fn pio_read(&self, port: u16, data: &mut [u8]) {
        if (SERIAL_PORT_BASE..SERIAL_PORT_BASE + SERIAL_PORT_LEN).contains(&port) && data.len() == 1
        {
            data[0] = lock(&self.serial).read((port - SERIAL_PORT_BASE) as u8);
        } else if let Some(v) = i8042::read(port) {
            data.fill(v);
        } else {
            data.fill(0xff);
        }
    }

    /// Port write. Unknown ports are ignored.
    pub fn pio_write(&self, port: u16, data: &[u8]) -> Action {
        if (SERIAL_PORT_BASE..SERIAL_PORT_BASE + SERIAL_PORT_LEN).contains(&port) && data.len() == 1
        {
            lock(&self.serial).write((port - SERIAL_PORT_BASE) as u8, data[0]);
            Action::Continue
        } else {
            i8042::write(port, data)
        }
    }

    fn virtio_at(&self, addr: u64) -> Option<(&SharedTransport, u64)> {
        let base = virtio_mmio_addr(0);
        let idx = addr.checked_sub(base)? / VIRTIO_MMIO_SIZE;
        let dev = self.virtio.get(usize::try_from(idx).ok()?)?;
        Some((dev, addr - virtio_mmio_addr(idx as usize)))
    }

    /// MMIO read. Unknown addresses read as all ones.
    pub fn mmio_read(&self, addr: u64, data: &mut [u8]) {
        match self.virtio_at(addr) {
            Some((dev, off)) => lock(dev).read(off, data),
            None => data.fill(0xff),
        }
    }

    /// MMIO write. Unknown addresses are ignored.
    pub fn mmio_write(&self, addr: u64, data: &[u8]) {
        if let Some((dev, off)) = self.virtio_at(addr) {
            lock(dev).write(off, data);
        }
    }
}

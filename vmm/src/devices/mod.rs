//! Devices: the legacy ones (COM1, i8042, the console log), the virtio devices and their
//! virtio-mmio transport (`virtio/`), and the port/MMIO dispatch of vCPU exits.

pub mod console_log;
pub mod i8042;
pub mod serial;
pub mod virtio;

use std::sync::{Arc, Mutex};

use crate::layout::{virtio_mmio_addr, VIRTIO_MMIO_SIZE};
use virtio::{MmioTransport, VirtioDevice};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::transport::reg;
    use crate::devices::virtio::QueueConfig;
    use crate::layout::VIRTIO_MMIO_BASE;
    use vm_memory::{GuestAddress, GuestMemoryMmap};
    use vmm_sys_util::eventfd::EventFd;

    struct Null;
    impl VirtioDevice for Null {
        fn device_type(&self) -> u32 {
            19
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[8]
        }
        fn features(&self) -> u64 {
            1 << 32
        }
        fn read_config(&self, _: u64, data: &mut [u8]) {
            data.fill(0x5a);
        }
        fn write_config(&mut self, _: u64, _: &[u8]) {}
        fn activate(&mut self, _: u64, _: &[QueueConfig]) -> Result<(), String> {
            Ok(())
        }
        fn reset(&mut self) {}
        fn exit_report(&self) -> Option<String> {
            Some("null: fine".into())
        }
        fn rekick_queues(&mut self) -> u32 {
            0b10
        }
    }

    /// The boxed device forwards every method, the defaulted ones too (a default method left
    /// out of the forwarding impl would silently answer with the trait's default).
    #[test]
    fn boxed_device_forwards_defaulted_methods() {
        let mut dev: Box<dyn VirtioDevice> = Box::new(Null);
        assert_eq!(dev.exit_report().as_deref(), Some("null: fine"));
        assert_eq!(dev.rekick_queues(), 0b10);
        let t = MmioTransport::new(
            dev,
            Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()),
        );
        // Not vhost: the transport adds its notification counters.
        assert_eq!(
            t.exit_report().as_deref(),
            Some("null: fine event_idx=0 kicks=0 queue_kicks=0 interrupts=0 rekicks=0")
        );
    }

    fn devices() -> (Devices, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!("kata-vmm-devs-{}", std::process::id()));
        let log = console_log::ConsoleLog::new(
            std::fs::File::create(&path).unwrap(),
            console_log::LogLimits::default(),
        );
        let out = serial::ConsoleOut::new(log.shared(), Box::new(|| {}));
        let serial = serial::ConsoleSerial::new(EventFd::new(0).unwrap(), out);
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let dev: Box<dyn VirtioDevice> = Box::new(Null);
        let t = MmioTransport::new(dev, Arc::new(mem));
        (
            Devices {
                serial: Arc::new(Mutex::new(serial)),
                virtio: vec![Arc::new(Mutex::new(t))],
            },
            path,
        )
    }

    #[test]
    fn dispatch_and_unknown_accesses() {
        let (d, path) = devices();
        let mut b4 = [0u8; 4];
        // Unknown port and MMIO: all ones, writes ignored.
        d.pio_read(0x80, &mut b4);
        assert_eq!(b4, [0xff; 4]);
        assert_eq!(d.pio_write(0x80, &[1]), Action::Continue);
        d.mmio_read(0x1234_5678, &mut b4);
        assert_eq!(b4, [0xff; 4]);
        d.mmio_write(0x1234_5678, &b4);
        d.mmio_read(VIRTIO_MMIO_BASE - 4, &mut b4);
        assert_eq!(b4, [0xff; 4]);
        d.mmio_read(VIRTIO_MMIO_BASE + VIRTIO_MMIO_SIZE, &mut b4); // no second device
        assert_eq!(b4, [0xff; 4]);
        d.mmio_read(u64::MAX - 3, &mut b4);
        // virtio device 0.
        d.mmio_read(VIRTIO_MMIO_BASE + reg::MAGIC, &mut b4);
        assert_eq!(&b4, b"virt");
        let mut c = [0u8; 2];
        d.mmio_read(VIRTIO_MMIO_BASE + reg::CONFIG + 2, &mut c);
        assert_eq!(c, [0x5a, 0x5a]);
        // Serial: a byte written to THR lands in the log; wide accesses are not the UART's.
        assert_eq!(d.pio_write(SERIAL_PORT_BASE, b"K"), Action::Continue);
        d.pio_read(SERIAL_PORT_BASE + 5, &mut b4);
        assert_eq!(b4, [0xff; 4]);
        let mut lsr = [0u8; 1];
        d.pio_read(SERIAL_PORT_BASE + 5, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0, "THR empty");
        assert_eq!(std::fs::read(&path).unwrap(), b"K");
        // i8042 reset.
        assert_eq!(d.pio_write(0x64, &[0xfe]), Action::Reset);
        std::fs::remove_file(&path).unwrap();
    }
}

//! COM1: a vm-superio 16550 whose interrupt is an irqfd and whose output is appended to the
//! console log, scanned for "Kernel panic".

use std::fs::File;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

/// The marker the guest kernel prints when it panics.
pub const PANIC_MARKER: &[u8] = b"Kernel panic";

/// An [`EventFd`] registered as a KVM irqfd, usable as the serial interrupt.
pub struct IrqTrigger(pub EventFd);

impl Trigger for IrqTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// Finds a byte pattern in a stream that arrives in arbitrary pieces.
#[derive(Debug, Default)]
pub struct StreamMatcher {
    tail: Vec<u8>,
}

impl StreamMatcher {
    /// Feeds `bytes`; true when [`PANIC_MARKER`] ends in (or spans into) them.
    pub fn feed(&mut self, bytes: &[u8]) -> bool {
        self.tail.extend_from_slice(bytes);
        let found = self
            .tail
            .windows(PANIC_MARKER.len())
            .any(|w| w == PANIC_MARKER);
        let keep = PANIC_MARKER.len() - 1;
        if self.tail.len() > keep {
            self.tail.drain(..self.tail.len() - keep);
        }
        found
    }
}

/// The serial output sink: the console log file plus the panic detector.
pub struct ConsoleOut {
    file: File,
    matcher: StreamMatcher,
    panicked: Arc<AtomicBool>,
    on_panic: Box<dyn Fn() + Send>,
}

impl ConsoleOut {
    /// `on_panic` runs once, when the marker is first seen; `panicked` is set at that time.
    pub fn new(file: File, panicked: Arc<AtomicBool>, on_panic: Box<dyn Fn() + Send>) -> Self {
        ConsoleOut {
            file,
            matcher: StreamMatcher::default(),
            panicked,
            on_panic,
        }
    }
}

impl Write for ConsoleOut {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.matcher.feed(buf) && !self.panicked.swap(true, Ordering::SeqCst) {
            (self.on_panic)();
        }
        // A full disk must not stop the guest: drop console bytes instead.
        let _ = self.file.write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// COM1 as the vCPU threads see it.
pub struct ConsoleSerial {
    inner: Serial<IrqTrigger, vm_superio::serial::NoEvents, ConsoleOut>,
}

impl ConsoleSerial {
    /// A 16550 raising `irq` and writing to `out`.
    pub fn new(irq: EventFd, out: ConsoleOut) -> Self {
        ConsoleSerial {
            inner: Serial::new(IrqTrigger(irq), out),
        }
    }

    /// Register read at `offset` (0..8).
    pub fn read(&mut self, offset: u8) -> u8 {
        self.inner.read(offset)
    }

    /// Register write at `offset` (0..8).
    pub fn write(&mut self, offset: u8, value: u8) {
        // Errors are only irqfd write failures; the guest will poll LSR anyway.
        let _ = self.inner.write(offset, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matcher_finds_split_marker() {
        let mut m = StreamMatcher::default();
        assert!(!m.feed(b"booting... Kernel pa"));
        assert!(m.feed(b"nic - not syncing: VFS"));
        let mut m = StreamMatcher::default();
        let s = b"xx Kernel panic - not syncing";
        let mut hit = false;
        for b in s {
            hit |= m.feed(std::slice::from_ref(b));
        }
        assert!(hit);
        let mut m = StreamMatcher::default();
        assert!(!m.feed(b"Kernel pani"));
        assert!(!m.feed(b"c"[..0].as_ref()));
        assert!(!m.feed(b"kernel panic lower case is not it"));
    }

    #[test]
    fn console_out_writes_and_flags_panic() {
        let path = std::env::temp_dir().join(format!("kata-vmm-console-{}", std::process::id()));
        let f = File::create(&path).unwrap();
        let flag = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c2 = calls.clone();
        let mut out = ConsoleOut::new(
            f,
            flag.clone(),
            Box::new(move || {
                c2.fetch_add(1, Ordering::SeqCst);
            }),
        );
        out.write_all(b"hello\n").unwrap();
        assert!(!flag.load(Ordering::SeqCst));
        out.write_all(b"Kernel panic - not syncing\n").unwrap();
        out.write_all(b"Kernel panic again\n").unwrap();
        assert!(flag.load(Ordering::SeqCst));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let s = std::fs::read_to_string(&path).unwrap();
        assert!(s.starts_with("hello\nKernel panic"));
        std::fs::remove_file(&path).unwrap();
    }
}

//! COM1: a vm-superio 16550 whose interrupt is an irqfd and whose output goes to the
//! bounded console log, scanned for "Kernel panic" (a hint only: any guest process that can
//! open the console device can print it).

use std::io::{self, Write};

use super::console_log::SharedLog;

use serde::{Deserialize, Serialize};
use vm_superio::serial::SerialState;
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

/// A console's output sink: the shared bounded log plus a panic-marker scan of its own
/// stream.
pub struct ConsoleOut {
    log: SharedLog,
    matcher: StreamMatcher,
    on_panic: Box<dyn Fn() + Send>,
}

impl ConsoleOut {
    /// `on_panic` runs each time the marker is seen (every byte is scanned, also the ones the
    /// log's limits drop); what it means is the caller's business (see `ExitState`).
    pub fn new(log: SharedLog, on_panic: Box<dyn Fn() + Send>) -> Self {
        ConsoleOut {
            log,
            matcher: StreamMatcher::default(),
            on_panic,
        }
    }
}

impl Write for ConsoleOut {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.matcher.feed(buf) {
            (self.on_panic)();
        }
        // The log drops what is over its limits and never fails: the guest never waits.
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write(buf);
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

    /// A 16550 in the state a snapshot saved (`state` is untrusted: vm-superio refuses an
    /// input FIFO longer than the chip's).
    pub fn restore(irq: EventFd, out: ConsoleOut, state: &SerialSnapshot) -> Result<Self, String> {
        let inner = Serial::from_state(
            &state.clone().into(),
            IrqTrigger(irq),
            vm_superio::serial::NoEvents,
            out,
        )
        .map_err(|e| format!("serial: {e:?}"))?;
        Ok(ConsoleSerial { inner })
    }

    /// The registers and the input FIFO, for a snapshot.
    pub fn save(&self) -> SerialSnapshot {
        self.inner.state().into()
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

/// COM1's registers in a snapshot (vm-superio's `SerialState`, which has no serde).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerialSnapshot {
    /// Divisor latch, low and high byte.
    pub baud_divisor: [u8; 2],
    /// Interrupt enable, interrupt identification, line control, line status, modem control,
    /// modem status, scratch.
    pub regs: [u8; 7],
    /// Bytes in the receive FIFO.
    pub in_buffer: Vec<u8>,
}

impl Default for SerialSnapshot {
    fn default() -> Self {
        SerialState::default().into()
    }
}

impl From<SerialState> for SerialSnapshot {
    fn from(s: SerialState) -> Self {
        SerialSnapshot {
            baud_divisor: [s.baud_divisor_low, s.baud_divisor_high],
            regs: [
                s.interrupt_enable,
                s.interrupt_identification,
                s.line_control,
                s.line_status,
                s.modem_control,
                s.modem_status,
                s.scratch,
            ],
            in_buffer: s.in_buffer,
        }
    }
}

impl From<SerialSnapshot> for SerialState {
    fn from(s: SerialSnapshot) -> Self {
        let [ie, iid, lc, ls, mc, ms, scratch] = s.regs;
        SerialState {
            baud_divisor_low: s.baud_divisor[0],
            baud_divisor_high: s.baud_divisor[1],
            interrupt_enable: ie,
            interrupt_identification: iid,
            line_control: lc,
            line_status: ls,
            modem_control: mc,
            modem_status: ms,
            scratch,
            in_buffer: s.in_buffer,
        }
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
    fn console_out_writes_and_reports_each_panic_marker() {
        use super::super::console_log::{ConsoleLog, LogLimits};
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let path = std::env::temp_dir().join(format!("kata-vmm-console-{}", std::process::id()));
        let f = std::fs::File::create(&path).unwrap();
        let log = ConsoleLog::new(f, LogLimits::default()).shared();
        let calls = Arc::new(AtomicUsize::new(0));
        let c2 = calls.clone();
        let mut out = ConsoleOut::new(
            log,
            Box::new(move || {
                c2.fetch_add(1, Ordering::SeqCst);
            }),
        );
        out.write_all(b"hello\n").unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        out.write_all(b"Kernel panic - not syncing\n").unwrap();
        out.write_all(b"Kernel panic again\n").unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        let s = std::fs::read_to_string(&path).unwrap();
        assert!(s.starts_with("hello\nKernel panic"));
        std::fs::remove_file(&path).unwrap();
    }
}

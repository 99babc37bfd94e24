//! virtio-console (device id 3), output only, served by the VMM's main thread.
//!
//! `--virtio-console` adds the device; the guest sees `hvc0` (`console=hvc0` on `--cmdline`
//! sends kernel messages and init's console there). One port, no `MULTIPORT`, `SIZE` or
//! `EMERG_WRITE`, so no config space. Queue 0 (receiveq, host -> guest) is accepted and never
//! filled: there is no console input, as for COM1. Queue 1 (transmitq): each chain is checked
//! (every descriptor device-readable and inside guest RAM, the walk not cut short) and its bytes,
//! at most [`MAX_BYTES_PER_CHAIN`], are appended to the console log through the same writer
//! type as COM1 (so `Kernel panic` on hvc0 is seen too). A bad chain is returned unwritten.
//! `VIRTIO_RING_F_EVENT_IDX` is offered: a chatty guest then kicks and is interrupted only
//! when the rings say so (see [`crate::devices::virtio::serve_available`]).

use std::io::Write;
use std::sync::Arc;

use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryMmap, Permissions};

use crate::devices::virtio::{
    QueueConfig, VirtioDevice, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX,
};

pub use virtio_bindings::virtio_ids::VIRTIO_ID_CONSOLE;
/// Size of each queue we offer.
pub const QUEUE_SIZE: u16 = 64;
/// Receive queue (host -> guest, unused).
pub const RX_QUEUE: usize = 0;
/// Transmit queue (guest -> host).
pub const TX_QUEUE: usize = 1;
/// Most bytes taken from one chain (Linux's hvc writes at most a page at a time).
pub const MAX_BYTES_PER_CHAIN: usize = 64 * 1024;
/// Feature bits offered: virtio 1.x and event-idx notification suppression.
pub const FEATURES: u64 = (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_RING_F_EVENT_IDX);

/// Checks a TX chain and appends its bytes (at most [`MAX_BYTES_PER_CHAIN`]) to `out`;
/// None when the chain is malformed (nothing written), else the bytes taken.
fn write_chain<M: GuestMemory, W: Write>(
    mem: &M,
    chain: virtio_queue::DescriptorChain<&M>,
    out: &mut W,
    buf: &mut [u8],
) -> Option<usize> {
    let mut descs = Vec::new();
    let mut cut = true;
    for d in chain {
        if d.is_write_only() {
            return None;
        }
        if d.len() > 0 && !mem.check_range(d.addr(), d.len() as usize, Permissions::Read) {
            return None;
        }
        cut = d.has_next();
        descs.push(d);
    }
    if descs.is_empty() || cut {
        return None;
    }
    let mut left = MAX_BYTES_PER_CHAIN;
    for d in descs {
        let mut off: u64 = 0;
        while off < u64::from(d.len()) && left > 0 {
            let n = (u64::from(d.len()) - off)
                .min(buf.len() as u64)
                .min(left as u64) as usize;
            let Some(at) = d.addr().0.checked_add(off) else {
                return Some(MAX_BYTES_PER_CHAIN - left);
            };
            if mem.read_slice(&mut buf[..n], GuestAddress(at)).is_err() {
                return Some(MAX_BYTES_PER_CHAIN - left);
            }
            // A failing log (disk full) loses console output, never the guest's progress.
            let _ = out.write_all(&buf[..n]);
            off += n as u64;
            left -= n;
        }
    }
    Some(MAX_BYTES_PER_CHAIN - left)
}

/// The virtio-console device; `W` is where the guest's output goes (the console log).
pub struct ConsoleDevice<W: Write + Send> {
    mem: Arc<GuestMemoryMmap>,
    out: W,
    tx: Option<Queue>,
    buf: Vec<u8>,
    rekick: u32,
    /// Malformed TX chains seen (tests, debugging).
    pub bad_chains: u64,
    /// Bytes of guest output written to the log.
    pub tx_bytes: u64,
}

impl<W: Write + Send> ConsoleDevice<W> {
    /// A console writing to `out`, buffers in `mem`.
    pub fn new(out: W, mem: Arc<GuestMemoryMmap>) -> Self {
        ConsoleDevice {
            mem,
            out,
            tx: None,
            buf: vec![0; 4096],
            rekick: 0,
            bad_chains: 0,
            tx_bytes: 0,
        }
    }

    /// The output writer (tests).
    pub fn out(&self) -> &W {
        &self.out
    }

    fn process_tx(&mut self) -> bool {
        let Some(q) = &mut self.tx else {
            return false;
        };
        let mem = &*self.mem;
        let (out, buf) = (&mut self.out, &mut self.buf);
        let (bad, bytes) = (&mut self.bad_chains, &mut self.tx_bytes);
        // Used length: bytes written into the buffers by the device, none for TX.
        let pass = crate::devices::virtio::serve_available(q, mem, |chain| {
            match write_chain(mem, chain, out, buf) {
                Some(n) => *bytes += n as u64,
                None => *bad += 1,
            }
            0
        });
        let _ = self.out.flush();
        if pass.more {
            self.rekick |= 1 << TX_QUEUE;
        }
        pass.interrupt
    }
}

impl<W: Write + Send> VirtioDevice for ConsoleDevice<W> {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_CONSOLE
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        FEATURES
    }

    fn read_config(&self, _offset: u64, _data: &mut [u8]) {
        // No config space without SIZE/MULTIPORT/EMERG_WRITE: the transport zero-filled it.
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    fn activate(&mut self, features: u64, queues: &[QueueConfig]) -> Result<(), String> {
        let tx = queues
            .get(TX_QUEUE)
            .filter(|q| q.ready)
            .ok_or("the transmit queue is not ready")?
            .build_queue(&*self.mem, features)?;
        self.tx = Some(tx);
        Ok(())
    }

    fn reset(&mut self) {
        self.tx = None;
    }

    fn process_queue(&mut self, index: usize) -> bool {
        match index {
            TX_QUEUE => self.process_tx(),
            // Receive buffers stay with the device: there is no input to put in them.
            _ => false,
        }
    }

    fn rekick_queues(&mut self) -> u32 {
        std::mem::take(&mut self.rekick)
    }

    fn snapshot_supported(&self) -> Result<(), String> {
        Ok(())
    }

    fn queue_positions(&self) -> Vec<Option<(u16, u16)>> {
        vec![
            None,
            crate::devices::virtio::device::position(self.tx.as_ref()),
        ]
    }

    fn set_queue_positions(&mut self, positions: &[Option<(u16, u16)>]) {
        crate::devices::virtio::device::set_position(self.tx.as_mut(), positions.get(TX_QUEUE));
    }

    fn exit_report(&self) -> Option<String> {
        Some(format!(
            "virtio-console: tx_bytes={} bad_chains={}",
            self.tx_bytes, self.bad_chains
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;

    const N: u16 = 1;
    const W: u16 = 2;
    const BUF: u64 = 0x10_0000;
    const MEM: u64 = 2 << 20;

    fn d(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
        RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
    }

    fn cfg(q: &MockSplitQueue<GuestMemoryMmap>) -> QueueConfig {
        QueueConfig {
            max_size: QUEUE_SIZE,
            size: 16,
            ready: true,
            desc: q.desc_table_addr().0,
            avail: q.avail_addr().0,
            used: q.used_addr().0,
        }
    }

    #[test]
    fn output_reaches_the_log_and_bad_chains_do_not() {
        let m = Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM as usize)]).unwrap());
        let rxq = MockSplitQueue::create(&*m, GuestAddress(0), 16);
        let txq = MockSplitQueue::create(&*m, GuestAddress(0x8000), 16);
        let mut dev = ConsoleDevice::new(Vec::new(), m.clone());
        assert_eq!(dev.device_type(), 3);
        assert!(!dev.process_queue(TX_QUEUE), "not active");
        assert!(dev
            .activate(FEATURES, &[cfg(&rxq), QueueConfig::default()])
            .is_err());
        dev.activate(FEATURES, &[cfg(&rxq), cfg(&txq)]).unwrap();
        m.write_slice(b"hello ", GuestAddress(BUF)).unwrap();
        m.write_slice(b"hvc0\n", GuestAddress(BUF + 0x100)).unwrap();
        m.write_slice(b"SECRET", GuestAddress(BUF + 0x200)).unwrap();
        txq.add_desc_chains(
            &[
                // 0-1: a good two-part chain.
                d(BUF, 6, N, 1),
                d(BUF + 0x100, 5, 0, 0),
                // 2: outside guest memory.
                d(MEM - 2, 16, 0, 0),
                // 3-4: a device-writable descriptor after readable bytes.
                d(BUF + 0x200, 6, N, 4),
                d(BUF, 6, W, 0),
                // 5: a zero-length chain.
                d(BUF, 0, 0, 0),
            ],
            0,
        )
        .unwrap();
        // 6: a loop (links to itself), 7: a link outside the table.
        txq.desc_table().store(6, d(BUF + 0x200, 6, N, 6)).unwrap();
        txq.desc_table()
            .store(7, d(BUF + 0x200, 6, N, 999))
            .unwrap();
        for (slot, head) in [(4u64, 6u16), (5, 7)] {
            m.write_obj(head, GuestAddress(txq.avail_addr().0 + 4 + 2 * slot))
                .unwrap();
        }
        m.write_obj(6u16, GuestAddress(txq.avail_addr().0 + 2))
            .unwrap();
        assert!(dev.process_queue(TX_QUEUE));
        assert_eq!(dev.out(), b"hello hvc0\n");
        assert_eq!(dev.bad_chains, 4);
        let used_idx: u16 = m.read_obj(GuestAddress(txq.used_addr().0 + 2)).unwrap();
        assert_eq!(used_idx, 6, "every chain is returned");
        // RX kicks do nothing; reset stops the device.
        assert!(!dev.process_queue(RX_QUEUE));
        dev.reset();
        assert!(!dev.process_queue(TX_QUEUE));
    }

    #[test]
    fn a_huge_chain_is_capped() {
        let m = Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM as usize)]).unwrap());
        let rxq = MockSplitQueue::create(&*m, GuestAddress(0), 16);
        let txq = MockSplitQueue::create(&*m, GuestAddress(0x8000), 16);
        let mut dev = ConsoleDevice::new(Vec::new(), m.clone());
        dev.activate(FEATURES, &[cfg(&rxq), cfg(&txq)]).unwrap();
        txq.add_desc_chains(&[d(BUF, 1 << 20, 0, 0)], 0).unwrap();
        assert!(dev.process_queue(TX_QUEUE));
        assert_eq!(dev.out().len(), MAX_BYTES_PER_CHAIN);
    }
}

//! virtio-rng (entropy device, id 4), served by the VMM's main thread.
//!
//! One request queue. The guest posts device-writable buffers and kicks QueueNotify, which is a
//! KVM ioeventfd the main thread polls; the main thread then calls
//! [`crate::devices::virtio::MmioTransport::notify_queue`], which runs [`RngDevice`]'s
//! [`VirtioDevice::process_queue`]: each descriptor chain is checked (every descriptor
//! device-writable and entirely inside guest RAM) and filled from the host's `getrandom(2)`,
//! at most [`MAX_BYTES_PER_CHAIN`] bytes per chain. A malformed chain is returned with used
//! length 0 and nothing written. The transport then sets `InterruptStatus` and signals the
//! device's irqfd, unless the driver negotiated `VIRTIO_RING_F_EVENT_IDX` and its `used_event`
//! says it does not want this interrupt (see [`crate::devices::virtio::serve_available`]).

use std::sync::Arc;

use virtio_queue::{DescriptorChain, Queue};
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryMmap, Permissions};

use crate::devices::virtio::{
    Pass, QueueConfig, VirtioDevice, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX,
    VIRTIO_RING_F_INDIRECT_DESC,
};

pub use virtio_bindings::virtio_ids::VIRTIO_ID_RNG;
/// Size of the request queue we offer.
pub const QUEUE_SIZE: u16 = 256;
/// Most random bytes handed out for one descriptor chain (Linux asks for at most 64 bytes at a
/// time from `hwrng`, user space reads of `/dev/hwrng` are split by the driver).
pub const MAX_BYTES_PER_CHAIN: u32 = 64 * 1024;
/// Feature bits offered: virtio 1.x, indirect descriptors (the queue crate walks them) and
/// event-idx notification suppression.
pub const FEATURES: u64 =
    (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_RING_F_INDIRECT_DESC) | (1 << VIRTIO_RING_F_EVENT_IDX);

/// Fills `buf` from the host's getrandom(2); false if the kernel refuses.
pub fn host_random(buf: &mut [u8]) -> bool {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: `rest` is a valid, writable buffer of `rest.len()` bytes.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return false;
        }
        done += n as usize;
    }
    true
}

/// Validates one chain and fills it with random bytes; returns the used length. A chain with a
/// device-readable descriptor, a buffer outside guest memory or a broken link gets 0.
fn fill_chain<M: GuestMemory>(mem: &M, chain: DescriptorChain<&M>) -> u32 {
    let mut bufs: Vec<(GuestAddress, u32)> = Vec::new();
    for desc in chain {
        if !desc.is_write_only() {
            return 0;
        }
        if desc.len() > 0 && !mem.check_range(desc.addr(), desc.len() as usize, Permissions::Write)
        {
            return 0;
        }
        bufs.push((desc.addr(), desc.len()));
    }
    let mut chunk = [0u8; 4096];
    let mut written: u32 = 0;
    for (addr, len) in bufs {
        let mut off: u32 = 0;
        while off < len && written < MAX_BYTES_PER_CHAIN {
            let n = (len - off)
                .min(MAX_BYTES_PER_CHAIN - written)
                .min(chunk.len() as u32);
            let buf = &mut chunk[..n as usize];
            if !host_random(buf) {
                return written;
            }
            let Some(at) = addr.0.checked_add(u64::from(off)) else {
                return written;
            };
            if mem.write_slice(buf, GuestAddress(at)).is_err() {
                return written;
            }
            off += n;
            written += n;
        }
    }
    written
}

/// Serves the available chains of `queue` (see [`crate::devices::virtio::serve_available`]),
/// counting them in `stats`.
pub fn process_requests<M: GuestMemory>(queue: &mut Queue, mem: &M, stats: &mut RngStats) -> Pass {
    crate::devices::virtio::serve_available(queue, mem, |chain| {
        let n = fill_chain(mem, chain);
        stats.requests += 1;
        stats.bytes += u64::from(n);
        n
    })
}

/// Counters of the virtio-rng device (exit summary).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RngStats {
    /// Chains served (bad ones included).
    pub requests: u64,
    /// Random bytes handed to the guest.
    pub bytes: u64,
}

/// The virtio-rng device.
pub struct RngDevice {
    mem: Arc<GuestMemoryMmap>,
    queue: Option<Queue>,
    rekick: u32,
    /// Counters since the VMM started.
    pub stats: RngStats,
}

impl RngDevice {
    /// A device whose buffers live in `mem`.
    pub fn new(mem: Arc<GuestMemoryMmap>) -> Self {
        RngDevice {
            mem,
            queue: None,
            rekick: 0,
            stats: RngStats::default(),
        }
    }
}

impl VirtioDevice for RngDevice {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_RNG
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        FEATURES
    }

    fn read_config(&self, _offset: u64, _data: &mut [u8]) {
        // No configuration space: the transport already zero-filled `data`.
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    fn activate(&mut self, features: u64, queues: &[QueueConfig]) -> Result<(), String> {
        self.queue = Some(QueueConfig::build_single_queue(
            queues, &*self.mem, features,
        )?);
        Ok(())
    }

    fn reset(&mut self) {
        self.queue = None;
    }

    fn process_queue(&mut self, index: usize) -> bool {
        match (&mut self.queue, index) {
            (Some(q), 0) => {
                let pass = process_requests(q, &*self.mem, &mut self.stats);
                if pass.more {
                    self.rekick |= 1;
                }
                pass.interrupt
            }
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
        vec![crate::devices::virtio::device::position(
            self.queue.as_ref(),
        )]
    }

    fn set_queue_positions(&mut self, positions: &[Option<(u16, u16)>]) {
        crate::devices::virtio::device::set_position(self.queue.as_mut(), positions.first());
    }

    fn exit_report(&self) -> Option<String> {
        Some(format!(
            "virtio-rng: requests={} bytes={}",
            self.stats.requests, self.stats.bytes
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;

    /// VRING_DESC_F_WRITE and VRING_DESC_F_NEXT.
    const W: u16 = 2;
    const N: u16 = 1;
    const BUF: u64 = 0x10_0000;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap()
    }

    fn d(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
        RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
    }

    /// (head id, len) of used ring entry `i`.
    fn used(m: &GuestMemoryMmap, q: &MockSplitQueue<GuestMemoryMmap>, i: u64) -> (u32, u32) {
        let e = q.used_addr().0 + 4 + 8 * i;
        (
            m.read_obj(GuestAddress(e)).unwrap(),
            m.read_obj(GuestAddress(e + 4)).unwrap(),
        )
    }

    fn used_idx(m: &GuestMemoryMmap, q: &MockSplitQueue<GuestMemoryMmap>) -> u16 {
        m.read_obj(GuestAddress(q.used_addr().0 + 2)).unwrap()
    }

    #[test]
    fn good_chain_is_filled() {
        let m = mem();
        let mq = MockSplitQueue::create(&m, GuestAddress(0), 16);
        // Two writable buffers in one chain, 64 + 4000 bytes.
        mq.add_desc_chains(&[d(BUF, 64, W | N, 1), d(BUF + 0x1000, 4000, W, 0)], 0)
            .unwrap();
        let mut q: Queue = mq.create_queue().unwrap();
        assert!(process_requests(&mut q, &m, &mut RngStats::default()).interrupt);
        assert_eq!(used_idx(&m, &mq), 1);
        assert_eq!(used(&m, &mq, 0), (0, 4064));
        let mut a = [0u8; 64];
        m.read_slice(&mut a, GuestAddress(BUF)).unwrap();
        assert_ne!(a, [0u8; 64], "buffer was filled");
        let mut tail = [0u8; 96];
        m.read_slice(&mut tail, GuestAddress(BUF + 4000 + 0x1000 - 64))
            .unwrap();
        assert_ne!(&tail[..64], &[0u8; 64]);
        assert_eq!(&tail[64..], &[0u8; 32], "nothing past the buffer");
        // Nothing new: no interrupt.
        assert!(!process_requests(&mut q, &m, &mut RngStats::default()).interrupt);
    }

    #[test]
    fn readable_descriptor_is_refused_without_writes() {
        let m = mem();
        let mq = MockSplitQueue::create(&m, GuestAddress(0), 16);
        mq.add_desc_chains(&[d(BUF, 64, W | N, 1), d(BUF + 64, 64, 0, 0)], 0)
            .unwrap();
        let mut q: Queue = mq.create_queue().unwrap();
        assert!(process_requests(&mut q, &m, &mut RngStats::default()).interrupt);
        assert_eq!(used(&m, &mq, 0), (0, 0));
        let mut a = [0u8; 128];
        m.read_slice(&mut a, GuestAddress(BUF)).unwrap();
        assert_eq!(a, [0u8; 128], "device-readable chain untouched");
    }

    #[test]
    fn out_of_bounds_buffers_are_refused() {
        let m = mem();
        let mq = MockSplitQueue::create(&m, GuestAddress(0), 16);
        mq.add_desc_chains(
            &[
                d((2 << 20) - 8, 64, W, 0), // crosses the end of RAM
                d(u64::MAX - 3, 16, W, 0),  // wraps the address space
                d(BUF, 32, W, 0),           // a good one after them
            ],
            0,
        )
        .unwrap();
        let mut q: Queue = mq.create_queue().unwrap();
        assert!(process_requests(&mut q, &m, &mut RngStats::default()).interrupt);
        assert_eq!(used_idx(&m, &mq), 3);
        assert_eq!(used(&m, &mq, 0), (0, 0));
        assert_eq!(used(&m, &mq, 1), (1, 0));
        assert_eq!(used(&m, &mq, 2), (2, 32));
    }

    #[test]
    fn looping_and_huge_chains_are_bounded() {
        let m = mem();
        let mq = MockSplitQueue::create(&m, GuestAddress(0), 16);
        // A descriptor that links to itself: the chain walk stops after the queue size.
        mq.desc_table().store(0, d(BUF, 16, W | N, 0)).unwrap();
        // A link to an index beyond the table.
        mq.desc_table().store(1, d(BUF, 16, W | N, 999)).unwrap();
        // A 1 MiB buffer: capped.
        mq.desc_table().store(2, d(BUF, 1 << 20, W, 0)).unwrap();
        for (slot, head) in [0u16, 1, 2].iter().enumerate() {
            let a = mq.avail_addr().0 + 4 + 2 * slot as u64;
            m.write_obj(*head, GuestAddress(a)).unwrap();
        }
        m.write_obj(3u16, GuestAddress(mq.avail_addr().0 + 2))
            .unwrap();
        let mut q: Queue = mq.create_queue().unwrap();
        assert!(process_requests(&mut q, &m, &mut RngStats::default()).interrupt);
        assert_eq!(used_idx(&m, &mq), 3);
        let (_, l0) = used(&m, &mq, 0);
        assert!(l0 <= 16 * 16, "bounded by the ttl: {l0}");
        assert_eq!(used(&m, &mq, 2), (2, MAX_BYTES_PER_CHAIN));
    }

    #[test]
    fn bad_avail_index_and_rings_do_not_panic() {
        let m = mem();
        let mq = MockSplitQueue::create(&m, GuestAddress(0), 16);
        // avail.idx far ahead, ring entries pointing past the table.
        for slot in 0..16u64 {
            m.write_obj(0xffffu16, GuestAddress(mq.avail_addr().0 + 4 + 2 * slot))
                .unwrap();
        }
        m.write_obj(0x8000u16, GuestAddress(mq.avail_addr().0 + 2))
            .unwrap();
        let mut q: Queue = mq.create_queue().unwrap();
        let _ = process_requests(&mut q, &m, &mut RngStats::default());
    }

    #[test]
    fn device_through_its_trait() {
        let m = Arc::new(mem());
        let mq = MockSplitQueue::create(&*m, GuestAddress(0), 16);
        mq.add_desc_chains(&[d(BUF, 16, W, 0)], 0).unwrap();
        let mut dev = RngDevice::new(m.clone());
        assert_eq!(dev.device_type(), 4);
        assert!(!dev.process_queue(0), "not active yet");
        let cfg = QueueConfig {
            max_size: QUEUE_SIZE,
            size: 16,
            ready: true,
            desc: mq.desc_table_addr().0,
            avail: mq.avail_addr().0,
            used: mq.used_addr().0,
        };
        assert!(dev.activate(FEATURES, &[QueueConfig::default()]).is_err());
        dev.activate(FEATURES, &[cfg]).unwrap();
        assert!(!dev.process_queue(1), "no such queue");
        assert!(dev.process_queue(0));
        assert_eq!(used(&m, &mq, 0), (0, 16));
        dev.reset();
        assert!(!dev.process_queue(0));
    }
}

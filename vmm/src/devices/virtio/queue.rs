//! Virtqueue helpers shared by the transport and the devices: the queue configuration the
//! driver writes (and its validation against guest memory), building a `virtio_queue::Queue`
//! from it, and the event-idx serving loop ([`serve_available`]) of the VMM's own devices.
//! See [`super::transport`] for how notifications reach them.

use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryBackend, Permissions};

use super::VIRTIO_RING_F_EVENT_IDX;

/// Whether `features` (as the driver acknowledged them) include `VIRTIO_RING_F_EVENT_IDX`.
pub fn event_idx(features: u64) -> bool {
    features & (1 << VIRTIO_RING_F_EVENT_IDX) != 0
}

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
    /// configured, in event-idx mode when the negotiated `features` include
    /// `VIRTIO_RING_F_EVENT_IDX`; refused unless the queue crate finds the rings valid too.
    pub fn build_queue<M: vm_memory::GuestMemory>(
        &self,
        mem: &M,
        features: u64,
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
        q.set_event_idx(event_idx(features));
        if !q.is_valid(mem) {
            return Err("queue rings are not valid".into());
        }
        Ok(q)
    }

    /// The `virtio_queue::Queue` of queue `index` of a multi-queue device, which the driver
    /// must have made ready ("queue N is not ready" otherwise).
    pub fn build_ready_queue<M: vm_memory::GuestMemory>(
        queues: &[QueueConfig],
        index: usize,
        mem: &M,
        features: u64,
    ) -> Result<virtio_queue::Queue, String> {
        queues
            .get(index)
            .filter(|q| q.ready)
            .ok_or(format!("queue {index} is not ready"))?
            .build_queue(mem, features)
    }

    /// The `virtio_queue::Queue` of a single-queue device: queue 0, which the driver must
    /// have made ready.
    pub fn build_single_queue<M: vm_memory::GuestMemory>(
        queues: &[QueueConfig],
        mem: &M,
        features: u64,
    ) -> Result<virtio_queue::Queue, String> {
        queues
            .first()
            .filter(|q| q.ready)
            .ok_or("the request queue is not ready")?
            .build_queue(mem, features)
    }
}

/// What serving one kick of a queue did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Buffers were returned and the driver wants an interrupt for them
    /// (`Queue::needs_notification`: always without `EVENT_IDX`, else per `used_event`).
    pub interrupt: bool,
    /// The budget (a ring's worth of chains) ran out with chains still available; the
    /// driver will not kick for them (`EVENT_IDX`), so the queue must be served again soon.
    pub more: bool,
}

/// Serves the available chains of a device's own queue with `serve` (which returns the used
/// length) after a kick, and says whether to interrupt the driver and whether chains are left.
///
/// Without `EVENT_IDX` this is one pass over what is available: the driver kicks for every
/// chain it adds (we never set `VRING_USED_F_NO_NOTIFY`). With `EVENT_IDX` the driver kicks
/// only when its avail index crosses our `avail_event`; while we serve, that index stays behind
/// (no kicks: they would only wake us for chains we are about to read anyway), and when the
/// ring looks empty `enable_notification` moves it to the next chain and looks once more, so a
/// chain published in between is served now instead of waiting for a kick that will not come.
/// Bounded against a hostile driver: at most one ring's worth of chains per call (then
/// [`Pass::more`]), and an avail index that claims chains no pass can pop (garbage) ends the
/// loop after one extra look.
pub fn serve_available<M, F>(queue: &mut virtio_queue::Queue, mem: &M, mut serve: F) -> Pass
where
    M: vm_memory::GuestMemory,
    F: FnMut(virtio_queue::DescriptorChain<&M>) -> u32,
{
    use virtio_queue::QueueT;
    let budget = queue.size();
    let event_idx = queue.event_idx_enabled();
    let mut served: u16 = 0;
    let mut idle_looks = 0;
    let mut used_any = false;
    let mut more = false;
    loop {
        let start = served;
        let mut ring_broken = false;
        if event_idx {
            // A no-op in event-idx mode (the stale avail_event already suppresses kicks);
            // kept so the loop reads as the standard disable / process / enable.
            let _ = queue.disable_notification(mem);
        }
        while served < budget {
            let Some(chain) = queue.pop_descriptor_chain(mem) else {
                break;
            };
            served += 1;
            let head = chain.head_index();
            let len = serve(chain);
            if queue.add_used(mem, head, len).is_err() {
                // The used ring is not writable: nothing sensible left to do on this queue.
                ring_broken = true;
                break;
            }
            used_any = true;
        }
        if ring_broken || !event_idx {
            break;
        }
        if !queue.enable_notification(mem).unwrap_or(false) {
            break;
        }
        // Chains are (still, or again) available.
        if served == budget {
            more = true;
            break;
        }
        if served == start {
            idle_looks += 1;
            if idle_looks > 1 {
                // The avail index says "more" but nothing pops (an index beyond the ring):
                // a broken driver; its next kick tries again.
                break;
            }
        }
    }
    Pass {
        interrupt: used_any && queue.needs_notification(mem).unwrap_or(true),
        more,
    }
}

fn in_one_region<M: GuestMemoryBackend>(mem: &M, first: u64, last: u64) -> bool {
    use vm_memory::GuestMemoryRegion;
    match mem.find_region(GuestAddress(first)) {
        Some(r) => last <= r.last_addr().0,
        None => false,
    }
}

/// Reads (device-readable) or writes (device-writable) chain descriptors, checked: direction,
/// every buffer inside guest memory, not cut short. None when the chain is malformed.
pub(crate) fn checked_chain<M: GuestMemory>(
    mem: &M,
    chain: virtio_queue::DescriptorChain<&M>,
    writable: bool,
) -> Option<(Vec<Descriptor>, usize)> {
    let perm = if writable {
        Permissions::Write
    } else {
        Permissions::Read
    };
    let mut descs = Vec::new();
    let mut total: usize = 0;
    let mut cut = true;
    for d in chain {
        if d.is_write_only() != writable {
            return None;
        }
        if d.len() > 0 && !mem.check_range(d.addr(), d.len() as usize, perm) {
            return None;
        }
        total = total.saturating_add(d.len() as usize);
        cut = d.has_next();
        descs.push(d);
    }
    // Empty, or the walk stopped on a descriptor that still links on (a loop, a link outside
    // the table, more descriptors than the queue has): malformed.
    if descs.is_empty() || cut {
        return None;
    }
    Some((descs, total))
}

/// Copies `parts` one after the other into the (checked, writable) descriptors.
pub(crate) fn scatter<M: GuestMemory>(mem: &M, descs: &[Descriptor], parts: &[&[u8]]) -> bool {
    let mut di = 0;
    let mut doff: usize = 0;
    for part in parts {
        let mut p: &[u8] = part;
        while !p.is_empty() {
            let Some(d) = descs.get(di) else {
                return false;
            };
            let room = d.len() as usize - doff;
            if room == 0 {
                di += 1;
                doff = 0;
                continue;
            }
            let n = room.min(p.len());
            let Some(at) = d.addr().0.checked_add(doff as u64) else {
                return false;
            };
            if mem.write_slice(&p[..n], GuestAddress(at)).is_err() {
                return false;
            }
            p = &p[n..];
            doff += n;
        }
    }
    true
}

/// Copies the chain's bytes from offset `skip` into `out` (exactly `out.len()` bytes).
pub(crate) fn gather<M: GuestMemory>(
    mem: &M,
    descs: &[Descriptor],
    mut skip: usize,
    out: &mut [u8],
) -> bool {
    let mut o = 0;
    for d in descs {
        let len = d.len() as usize;
        if skip >= len {
            skip -= len;
            continue;
        }
        let n = (len - skip).min(out.len() - o);
        let Some(at) = d.addr().0.checked_add(skip as u64) else {
            return false;
        };
        if mem
            .read_slice(&mut out[o..o + n], GuestAddress(at))
            .is_err()
        {
            return false;
        }
        o += n;
        skip = 0;
        if o == out.len() {
            break;
        }
    }
    o == out.len()
}

#[cfg(test)]
/// `serve_available` against a mock driver: single-descriptor chains, head i = descriptor i.
/// The rings are laid out here (not with `MockSplitQueue::create`, whose used ring overlaps
/// the end of its available ring, `used_event` included).
mod tests {
    use super::*;
    use virtio_queue::desc::split::Descriptor;
    use virtio_queue::{Queue, QueueT};
    use vm_memory::Bytes;
    use vm_memory::GuestMemoryMmap;

    const SIZE: u16 = 16;

    /// Where the driver put the rings.
    struct Mq {
        avail: u64,
        used: u64,
    }

    impl Mq {
        fn avail_addr(&self) -> GuestAddress {
            GuestAddress(self.avail)
        }
        fn used_addr(&self) -> GuestAddress {
            GuestAddress(self.used)
        }
    }

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap()
    }

    fn setup(m: &GuestMemoryMmap, event_idx: bool) -> (Mq, Queue) {
        let cfg = QueueConfig {
            max_size: 256,
            size: SIZE,
            ready: true,
            desc: 0,
            avail: 0x1000,
            used: 0x2000,
        };
        m.write_slice(&[0u8; 0x3000], GuestAddress(0)).unwrap();
        for i in 0..SIZE {
            let d = Descriptor::new(0x10_0000 + u64::from(i) * 0x100, 0x100, 2, 0);
            m.write_obj(d, GuestAddress(16 * u64::from(i))).unwrap();
        }
        let features = if event_idx {
            1 << VIRTIO_RING_F_EVENT_IDX
        } else {
            0
        };
        let q = cfg.build_queue(m, features).unwrap();
        assert_eq!(q.event_idx_enabled(), event_idx);
        (
            Mq {
                avail: cfg.avail,
                used: cfg.used,
            },
            q,
        )
    }

    fn u16_at(m: &GuestMemoryMmap, a: u64) -> u16 {
        m.read_obj(GuestAddress(a)).unwrap()
    }

    fn avail_idx(m: &GuestMemoryMmap, mq: &Mq) -> u16 {
        u16_at(m, mq.avail_addr().0 + 2)
    }

    /// The driver publishes chain `head` (the ring index modulo its size, as Linux does).
    fn publish(m: &GuestMemoryMmap, mq: &Mq, head: u16) {
        let idx = avail_idx(m, mq);
        let slot = mq.avail_addr().0 + 4 + 2 * u64::from(idx % SIZE);
        m.write_obj(head, GuestAddress(slot)).unwrap();
        m.write_obj(idx.wrapping_add(1), GuestAddress(mq.avail_addr().0 + 2))
            .unwrap();
    }

    fn set_used_event(m: &GuestMemoryMmap, mq: &Mq, v: u16) {
        let a = mq.avail_addr().0 + 4 + 2 * u64::from(SIZE);
        m.write_obj(v, GuestAddress(a)).unwrap();
    }

    fn avail_event(m: &GuestMemoryMmap, mq: &Mq) -> u16 {
        u16_at(m, mq.used_addr().0 + 4 + 8 * u64::from(SIZE))
    }

    fn used_flags(m: &GuestMemoryMmap, mq: &Mq) -> u16 {
        u16_at(m, mq.used_addr().0)
    }

    /// Linux's `vring_need_event`: does a driver moving its avail index `old` -> `new` kick
    /// the device whose `avail_event` is `event`?
    fn driver_kicks(event: u16, new: u16, old: u16) -> bool {
        new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
    }

    fn serve(q: &mut Queue, m: &GuestMemoryMmap) -> Pass {
        serve_available(q, m, |_| 1)
    }

    #[test]
    fn without_event_idx_every_pass_interrupts_and_flags_stay_clear() {
        let m = mem();
        let (mq, mut q) = setup(&m, false);
        set_used_event(&m, &mq, 100); // meaningless without EVENT_IDX
        for round in 0..3u16 {
            publish(&m, &mq, round);
            let p = serve(&mut q, &m);
            assert_eq!(
                p,
                Pass {
                    interrupt: true,
                    more: false
                }
            );
            assert_eq!(used_flags(&m, &mq), 0, "never VRING_USED_F_NO_NOTIFY");
            assert_eq!(avail_event(&m, &mq), 0, "avail_event untouched");
        }
        assert_eq!(
            serve(&mut q, &m),
            Pass::default(),
            "nothing new: no interrupt"
        );
    }

    #[test]
    fn interrupts_follow_used_event() {
        let m = mem();
        let (mq, mut q) = setup(&m, true);
        // The driver wants an interrupt once used idx passes 3 (used_event = 3).
        set_used_event(&m, &mq, 3);
        let mut irqs = Vec::new();
        for head in 0..6u16 {
            publish(&m, &mq, head);
            irqs.push(serve(&mut q, &m).interrupt);
        }
        // used idx goes 1, 2, 3, 4, 5, 6: only the step 3 -> 4 crosses used_event.
        assert_eq!(irqs, [false, false, false, true, false, false]);
        // A batch that jumps over used_event still interrupts once.
        set_used_event(&m, &mq, 7);
        for head in 6..10u16 {
            publish(&m, &mq, head);
        }
        assert!(serve(&mut q, &m).interrupt, "6 -> 10 crosses 7");
        // used_event far behind or far ahead (garbage): no interrupt, no panic.
        for ev in [0u16, 0x8000, 0xffff, 9] {
            set_used_event(&m, &mq, ev);
            publish(&m, &mq, 10);
            assert!(!serve(&mut q, &m).interrupt, "used_event {ev}");
        }
    }

    #[test]
    fn after_a_kick_the_next_chain_kicks_again() {
        let m = mem();
        let (mq, mut q) = setup(&m, true);
        for head in 0..3u16 {
            publish(&m, &mq, head);
        }
        serve(&mut q, &m);
        // avail_event = the next chain we will read: the driver's next publish kicks.
        assert_eq!(avail_event(&m, &mq), 3);
        assert!(driver_kicks(avail_event(&m, &mq), 4, 3));
        assert_eq!(used_flags(&m, &mq), 0);
    }

    #[test]
    fn a_chain_published_while_serving_is_served_without_a_kick() {
        let m = mem();
        let (mq, mut q) = setup(&m, true);
        publish(&m, &mq, 0);
        let mut heads = Vec::new();
        let p = serve_available(&mut q, &m, |chain| {
            let head = chain.head_index();
            heads.push(head);
            if head < 4 {
                // The driver (another vCPU) publishes while we serve. avail_event still
                // says 0: it would not kick for this one.
                let idx = avail_idx(&m, &mq);
                assert!(!driver_kicks(avail_event(&m, &mq), idx + 1, idx));
                publish(&m, &mq, head + 1);
            }
            1
        });
        assert_eq!(heads, [0, 1, 2, 3, 4], "all served in the same call");
        assert_eq!(
            p,
            Pass {
                interrupt: true,
                more: false
            }
        );
        assert_eq!(avail_event(&m, &mq), 5);
    }

    #[test]
    fn a_driver_that_never_stops_is_bounded_and_rekicked() {
        let m = mem();
        let (mq, mut q) = setup(&m, true);
        publish(&m, &mq, 0);
        let mut served = 0;
        let p = serve_available(&mut q, &m, |chain| {
            served += 1;
            publish(&m, &mq, chain.head_index()); // reuses the buffer at once
            1
        });
        assert_eq!(served, usize::from(SIZE), "one ring's worth per call");
        assert!(p.more, "chains are left: the transport re-kicks");
        // Without EVENT_IDX the driver kicks for each chain: no re-kick needed.
        let (mq2, mut q2) = setup(&m, false);
        publish(&m, &mq2, 0);
        let p = serve_available(&mut q2, &m, |chain| {
            publish(&m, &mq2, chain.head_index());
            1
        });
        assert!(!p.more);
    }

    #[test]
    fn garbage_avail_index_ends_the_loop() {
        let m = mem();
        for (event_idx, idx) in [(true, 0x8000u16), (true, SIZE + 1), (false, 0xffff)] {
            let (mq, mut q) = setup(&m, event_idx);
            m.write_obj(idx, GuestAddress(mq.avail_addr().0 + 2))
                .unwrap();
            let mut served = 0;
            let p = serve_available(&mut q, &m, |_| {
                served += 1;
                1
            });
            assert_eq!((served, p), (0, Pass::default()), "avail idx {idx:#x}");
        }
        // Ring entries naming descriptors past the table: returned, bounded.
        let (mq, mut q) = setup(&m, true);
        for _ in 0..SIZE {
            publish(&m, &mq, 0xffff);
        }
        let p = serve(&mut q, &m);
        assert!(!p.more);
    }
}

//! virtio-vsock device (id 19) whose data path is the host kernel's vhost-vsock.
//!
//! The VMM only does the control path: at startup it opens `/dev/vhost-vsock` ([`open`], a
//! path: before the jail), then, after the jail and before any vCPU runs, becomes its owner
//! and claims the guest CID ([`VhostVsockDevice::new`]; a CID clash fails before the guest
//! boots). Taking ownership inside the jail matters on kernels (6.4+) whose vhost worker is a
//! `vhost_task`: a thread of the owner's process, created by `SET_OWNER`, which then shares
//! the jail's namespaces, root and credentials (and does not exist yet when the jail checks
//! that the process is single-threaded). On older kernels the worker is a kthread. When the
//! driver sets DRIVER_OK it hands the rx (0) and tx (1) queues to vhost: negotiated features,
//! the guest memory table, each ring's size/addresses/base, the kick EventFd (a KVM ioeventfd
//! on QueueNotify with the queue index as datamatch) and the call EventFd (a KVM irqfd on the
//! device's IRQ), then starts it. The event queue (2) stays with the VMM: there are no events to
//! send (no live migration), so its buffers are simply never used.

use std::sync::Arc;

use vhost::vhost_kern::vsock::Vsock;
use vhost::vsock::VhostVsock;
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use crate::virtio_mmio::{QueueConfig, VirtioDevice, VIRTIO_F_VERSION_1};

/// Virtio device id of vsock.
pub const VIRTIO_ID_VSOCK: u32 = 19;
/// Queue size we offer for each queue.
pub const QUEUE_SIZE: u16 = 256;
/// Queues handled by vhost: rx and tx.
pub const VHOST_QUEUES: usize = 2;
const VIRTIO_RING_F_INDIRECT_DESC: u64 = 1 << 28;
const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;
const VIRTIO_VSOCK_F_SEQPACKET: u64 = 1 << 1;

/// Features we are willing to offer if vhost supports them too.
pub const OFFERABLE_FEATURES: u64 = (1 << VIRTIO_F_VERSION_1)
    | VIRTIO_RING_F_INDIRECT_DESC
    | VIRTIO_RING_F_EVENT_IDX
    | VIRTIO_VSOCK_F_SEQPACKET;

/// Setting up vhost-vsock failed.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// `/dev/vhost-vsock` cannot be opened.
    #[error("cannot open /dev/vhost-vsock: {0} (is the vhost_vsock module loaded?)")]
    Open(std::io::Error),
    /// The CID is taken by another VM (or another transport) on this host.
    #[error("vsock CID {0} is already in use")]
    CidInUse(u64),
    /// Any other vhost ioctl failure.
    #[error("vhost-vsock {0}: {1}")]
    Ioctl(&'static str, vhost::Error),
    /// vhost lacks VIRTIO_F_VERSION_1.
    #[error("vhost-vsock does not support VIRTIO_F_VERSION_1 (features {0:#x})")]
    NoVersion1(u64),
}

/// The features to offer the guest, given what vhost supports.
pub fn offered_features(backend: u64) -> u64 {
    backend & OFFERABLE_FEATURES
}

/// Encodes the vsock config space (le64 guest_cid) and copies the requested slice of it.
pub fn read_cid_config(cid: u64, offset: u64, data: &mut [u8]) {
    let cfg = cid.to_le_bytes();
    for (i, b) in data.iter_mut().enumerate() {
        *b = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(i))
            .and_then(|o| cfg.get(o).copied())
            .unwrap_or(0);
    }
}

/// The vsock device: vhost handle plus the event fds wired into KVM.
pub struct VhostVsockDevice {
    cid: u64,
    mem: Arc<GuestMemoryMmap>,
    backend: Vsock<Arc<GuestMemoryMmap>>,
    backend_features: u64,
    kicks: Vec<EventFd>,
    call: EventFd,
    running: bool,
}

fn ioctl(what: &'static str) -> impl FnOnce(vhost::Error) -> VsockError {
    move |e| VsockError::Ioctl(what, e)
}

/// `/dev/vhost-vsock`, open but not owned yet.
pub struct VhostVsockFd(Vsock<Arc<GuestMemoryMmap>>);

/// Opens `/dev/vhost-vsock` (nothing else: ownership comes with [`VhostVsockDevice::new`]).
pub fn open(mem: Arc<GuestMemoryMmap>) -> Result<VhostVsockFd, VsockError> {
    Vsock::new(mem).map(VhostVsockFd).map_err(|e| match e {
        vhost::Error::VhostOpen(io) => VsockError::Open(io),
        other => VsockError::Open(std::io::Error::other(other.to_string())),
    })
}

impl VhostVsockDevice {
    /// Takes ownership of the opened vhost-vsock and claims `cid`. `kicks[i]` must be the
    /// ioeventfd of queue i, `call` the irqfd of the device's IRQ.
    pub fn new(
        fd: VhostVsockFd,
        cid: u64,
        mem: Arc<GuestMemoryMmap>,
        kicks: Vec<EventFd>,
        call: EventFd,
    ) -> Result<Self, VsockError> {
        let backend = fd.0;
        backend.set_owner().map_err(ioctl("SET_OWNER"))?;
        let backend_features = backend.get_features().map_err(ioctl("GET_FEATURES"))?;
        if backend_features & (1 << VIRTIO_F_VERSION_1) == 0 {
            return Err(VsockError::NoVersion1(backend_features));
        }
        backend.set_guest_cid(cid).map_err(|e| match &e {
            vhost::Error::IoctlError(io) if io.raw_os_error() == Some(libc::EADDRINUSE) => {
                VsockError::CidInUse(cid)
            }
            _ => VsockError::Ioctl("SET_GUEST_CID", e),
        })?;
        Ok(VhostVsockDevice {
            cid,
            mem,
            backend,
            backend_features,
            kicks,
            call,
            running: false,
        })
    }

    fn start(&mut self, features: u64, queues: &[QueueConfig]) -> Result<(), VsockError> {
        let b = &self.backend;
        b.set_features(features & self.backend_features)
            .map_err(ioctl("SET_FEATURES"))?;
        let regions: Vec<VhostUserMemoryRegionInfo> = self
            .mem
            .iter()
            .map(|r| VhostUserMemoryRegionInfo {
                guest_phys_addr: r.start_addr().0,
                memory_size: r.len(),
                userspace_addr: r.as_ptr() as u64,
                mmap_offset: 0,
                mmap_handle: -1,
            })
            .collect();
        b.set_mem_table(&regions).map_err(ioctl("SET_MEM_TABLE"))?;
        for (i, q) in queues.iter().take(VHOST_QUEUES).enumerate() {
            b.set_vring_num(i, q.size).map_err(ioctl("SET_VRING_NUM"))?;
            let cfg = VringConfigData {
                queue_max_size: q.max_size,
                queue_size: q.size,
                flags: 0,
                desc_table_addr: q.desc,
                used_ring_addr: q.used,
                avail_ring_addr: q.avail,
                log_addr: None,
            };
            b.set_vring_addr(i, &cfg).map_err(ioctl("SET_VRING_ADDR"))?;
            b.set_vring_base(i, 0).map_err(ioctl("SET_VRING_BASE"))?;
            b.set_vring_call(i, &self.call)
                .map_err(ioctl("SET_VRING_CALL"))?;
            b.set_vring_kick(i, &self.kicks[i])
                .map_err(ioctl("SET_VRING_KICK"))?;
        }
        b.start().map_err(ioctl("SET_RUNNING"))?;
        self.running = true;
        Ok(())
    }
}

impl VirtioDevice for VhostVsockDevice {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        offered_features(self.backend_features)
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_cid_config(self.cid, offset, data);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {
        // The vsock config space is read-only.
    }

    fn activate(&mut self, features: u64, queues: &[QueueConfig]) -> Result<(), String> {
        if queues.len() < VHOST_QUEUES || !queues[..VHOST_QUEUES].iter().all(|q| q.ready) {
            return Err("the rx and tx queues must both be ready".into());
        }
        self.start(features, queues).map_err(|e| e.to_string())
    }

    fn vhost_interrupts(&self) -> bool {
        true
    }

    fn reset(&mut self) {
        if self.running {
            if let Err(e) = self.backend.stop() {
                eprintln!("kata-vmm: warning: stopping vhost-vsock: {e}");
            }
            self.running = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_space_is_le64_cid() {
        let mut b = [0u8; 8];
        read_cid_config(0x1_0000_0003, 0, &mut b);
        assert_eq!(u64::from_le_bytes(b), 0x1_0000_0003);
        let mut w = [0u8; 4];
        read_cid_config(0x1_0000_0003, 4, &mut w);
        assert_eq!(u32::from_le_bytes(w), 1);
        let mut past = [0xaau8; 4];
        read_cid_config(3, 6, &mut past);
        assert_eq!(past, [0, 0, 0, 0]);
        read_cid_config(3, u64::MAX, &mut past);
        assert_eq!(past, [0, 0, 0, 0]);
    }

    #[test]
    fn offered_features_are_the_intersection() {
        let backend = (1 << 32) | (1 << 29) | (1 << 30) | (1 << 26) | 2;
        let f = offered_features(backend);
        assert_eq!(f, (1 << 32) | (1 << 29) | 2);
        assert_eq!(offered_features(0), 0);
    }
}

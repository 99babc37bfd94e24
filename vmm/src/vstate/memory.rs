//! Guest RAM (see "Memory map" in vmm/README.md) and its KVM memory slots.

use std::sync::Arc;

use anyhow::{Context, Result};
use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::devices::virtio::fs as vfs;
use crate::layout;

/// Allocates `mem_bytes` of guest RAM laid out by [`layout::ram_ranges`]: anonymous private
/// memory, or with `shared` (virtio-fs: the backend maps guest RAM too) a `MAP_SHARED`
/// mapping of one sealed memfd per region.
pub fn create(mem_bytes: u64, shared: bool) -> Result<Arc<GuestMemoryMmap>> {
    let ranges = layout::ram_ranges(mem_bytes);
    let mem = if shared {
        vfs::shared_guest_memory(&ranges)
    } else {
        GuestMemoryMmap::<()>::from_ranges(&ranges).map_err(anyhow::Error::from)
    };
    Ok(Arc::new(mem.with_context(|| {
        format!("cannot allocate {} MiB of guest memory", mem_bytes >> 20)
    })?))
}

/// Gives each region of `mem` to the VM, one KVM memory slot per region.
pub fn register(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<()> {
    for (slot, r) in mem.iter().enumerate() {
        let region = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: r.start_addr().0,
            memory_size: r.len(),
            userspace_addr: r.as_ptr() as u64,
        };
        // SAFETY: the region is a live mmap owned by `mem`, which outlives the VM (it is kept
        // in an Arc until the process exits), and slots do not overlap.
        unsafe { vm.set_user_memory_region(region) }
            .with_context(|| format!("KVM_SET_USER_MEMORY_REGION slot {slot}"))?;
    }
    Ok(())
}

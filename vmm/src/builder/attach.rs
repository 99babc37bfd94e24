//! Attaching one planned device (`slots.rs`) to the next virtio-mmio slot: the same wiring
//! (irqfd on the slot's IRQ, ioeventfds on its QueueNotify, the thread that serves it) at a
//! cold boot and for a device a restore puts into a placeholder slot.

use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use kvm_ioctls::VmFd;
use tracing::debug;
use vm_memory::GuestMemoryMmap;

use crate::args::VmConfig;
use crate::device_manager::{DeviceManager, ServedBy};
use crate::devices::serial::ConsoleOut;
use crate::devices::virtio::block::{BlkDevice, Disk};
use crate::devices::virtio::console::ConsoleDevice;
use crate::devices::virtio::fs::slot::FsSlotDevice;
use crate::devices::virtio::fs::{self as vfs, FsBackend, FsDevice};
use crate::devices::virtio::net::{NetDevice, Tap};
use crate::devices::virtio::placeholder::PlaceholderDevice;
use crate::devices::virtio::rng::RngDevice;
use crate::devices::virtio::vsock::HvsockDevice;
use crate::devices::virtio::VirtioDevice;
use crate::slots::SlotDevice;

/// What the devices are made of, prepared before the slots are filled; each taken once.
pub struct Devices {
    /// The hybrid vsock's listening socket.
    pub vsock_uds: Option<std::os::unix::net::UnixListener>,
    /// The virtio-fs backend, its handshake done.
    pub fs_backend: Option<FsBackend>,
    /// Whether virtio-fs forwards through a bounce area (guest RAM not shareable).
    pub fs_bounce: bool,
    /// virtio-console's output.
    pub hvc_out: Option<ConsoleOut>,
    /// The largest disk's size in bytes (for the file size limit).
    pub largest_disk: u64,
}

/// Puts `device` into the next slot of `dm`.
pub fn slot(
    dm: &mut DeviceManager,
    vm: &VmFd,
    cfg: &VmConfig,
    mem: &Arc<GuestMemoryMmap>,
    device: SlotDevice,
    devs: &mut Devices,
) -> Result<()> {
    match device {
        SlotDevice::Vsock => {
            let vsock: Box<dyn VirtioDevice> = Box::new(
                HvsockDevice::new(cfg.vsock_cid, devs.vsock_uds.take(), mem.clone())
                    .context("virtio-vsock")?,
            );
            dm.attach_virtio(vm, vsock, mem, ServedBy::MainLoop)
                .context("virtio-vsock")?;
        }
        SlotDevice::Rng => {
            let rng: Box<dyn VirtioDevice> = Box::new(RngDevice::new(mem.clone()));
            dm.attach_virtio(vm, rng, mem, ServedBy::MainLoop)
                .context("virtio-rng")?;
        }
        SlotDevice::Disk(i) => {
            let d = cfg.disks.get(i).context("no such --disk")?;
            let disk = Disk::open(d, &format!("kata-rs-disk{i}")).map_err(|e| anyhow!(e))?;
            devs.largest_disk = devs.largest_disk.max(disk.sectors().saturating_mul(512));
            debug!(
                "disk {i}: {} ({} sectors{})",
                d.path.display(),
                disk.sectors(),
                if d.read_only { ", read-only" } else { "" }
            );
            let blk: Box<dyn VirtioDevice> = Box::new(BlkDevice::new(disk, mem.clone()));
            dm.attach_virtio(vm, blk, mem, ServedBy::OwnThread(format!("blk{i}")))
                .with_context(|| format!("virtio-blk {}", d.path.display()))?;
        }
        SlotDevice::Net(i) => {
            // Taps are opened (or created) here, in the host's network namespace, before the
            // jail moves the process into a new one; the fd keeps working there.
            let n = cfg.nets.get(i).context("no such --net")?;
            let tap = Tap::open(&n.tap).map_err(|e| anyhow!(e))?;
            let mac = n
                .mac
                .unwrap_or_else(crate::devices::virtio::net::random_mac);
            debug!(
                "net {i}: tap {} mac {}",
                tap.name(),
                mac.map(|b| format!("{b:02x}")).join(":")
            );
            let net: Box<dyn VirtioDevice> = Box::new(NetDevice::new(tap, mac, mem.clone()));
            dm.attach_virtio(vm, net, mem, ServedBy::MainLoop)
                .with_context(|| format!("virtio-net {}", n.tap))?;
        }
        SlotDevice::Console => {
            let out = devs.hvc_out.take().context("virtio-console output")?;
            let hvc: Box<dyn VirtioDevice> = Box::new(ConsoleDevice::new(out, mem.clone()));
            dm.attach_virtio(vm, hvc, mem, ServedBy::MainLoop)
                .context("virtio-console")?;
        }
        SlotDevice::Fs => {
            // vhost-style wiring (kicks and call go to the backend, not through the VMM).
            let f = cfg.fs.as_ref().context("no --fs")?;
            let backend = devs.fs_backend.take().context("no virtio-fs backend")?;
            debug!(
                "fs: tag {} socket {} backend features {:#x}{}",
                f.tag,
                f.socket.display(),
                backend.features(),
                if devs.fs_bounce { ", bounce mode" } else { "" }
            );
            let watch = backend.raw_fd();
            if devs.fs_bounce {
                // The VMM serves the guest's queues and forwards through the bounce area.
                let dev: Box<dyn VirtioDevice> = Box::new(
                    FsDevice::new_bounce(f, backend, mem.clone())
                        .context("virtio-fs bounce area")?,
                );
                dm.attach_virtio(vm, dev, mem, ServedBy::MainLoop)
                    .context("virtio-fs")?;
                dm.watch_vhost_user(watch);
                return Ok(());
            }
            let (kicks, call) = dm.vhost_user_eventfds(vm, vfs::NUM_QUEUES, "virtio-fs")?;
            let dev: Box<dyn VirtioDevice> =
                Box::new(FsDevice::new(f, backend, mem.clone(), kicks, call));
            dm.attach_vhost_user(dev, mem, watch)?;
        }
        SlotDevice::FsSlot => {
            let f = cfg.fs_slot.as_ref().context("no --fs-slot")?;
            debug!("fs: tag {} without a backend (--fs-slot)", f.tag);
            let dev: Box<dyn VirtioDevice> = Box::new(FsSlotDevice::new(f));
            dm.attach_virtio(vm, dev, mem, ServedBy::MainLoop)
                .context("virtio-fs slot")?;
        }
        SlotDevice::Placeholder => {
            let p: Box<dyn VirtioDevice> = Box::new(PlaceholderDevice);
            dm.attach_virtio(vm, p, mem, ServedBy::MainLoop)
                .context("placeholder")?;
        }
    }
    Ok(())
}

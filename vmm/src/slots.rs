//! Which device goes into which virtio-mmio slot: at a cold boot in the fixed order (vsock,
//! rng, disks, nets, virtio-console, virtio-fs, then `--placeholder-slots` empty slots), at a
//! restore in the snapshot's order, with the per-sandbox devices the snapshot does not have
//! (`--fs`, then the extra `--net`s, then the extra `--disk`s, in argument order) put into its
//! placeholder slots (issue 14, see "Snapshots" in vmm/README.md). A snapshot of a VM booted
//! with `--fs-slot` has a virtio-fs slot of its own, which `--fs` takes over instead.

use virtio_bindings::virtio_ids::{
    VIRTIO_ID_BLOCK, VIRTIO_ID_CONSOLE, VIRTIO_ID_FS, VIRTIO_ID_NET, VIRTIO_ID_RNG, VIRTIO_ID_VSOCK,
};

use crate::args::VmConfig;
use crate::devices::virtio::placeholder::PLACEHOLDER_DEVICE_ID;
use crate::layout::MAX_VIRTIO_SLOTS;

/// The device of one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotDevice {
    /// virtio-vsock.
    Vsock,
    /// virtio-rng.
    Rng,
    /// virtio-blk: `--disk` number i.
    Disk(usize),
    /// virtio-net: `--net` number i.
    Net(usize),
    /// virtio-console.
    Console,
    /// virtio-fs (`--fs`).
    Fs,
    /// virtio-fs without a backend (`--fs-slot`, a template VM's cold boot).
    FsSlot,
    /// An empty slot, `DeviceID` 0.
    Placeholder,
}

/// One slot of the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// What goes there.
    pub device: SlotDevice,
    /// Restore only: the snapshot has a placeholder here, which this device fills; its
    /// transport starts reset (the snapshot's state of the slot is not applied).
    pub fills_placeholder: bool,
}

fn slot(device: SlotDevice) -> Slot {
    Slot {
        device,
        fills_placeholder: false,
    }
}

/// The slots of a cold boot of `cfg`.
pub fn cold_boot(cfg: &VmConfig) -> Vec<Slot> {
    let mut v = vec![slot(SlotDevice::Vsock)];
    if cfg.rng {
        v.push(slot(SlotDevice::Rng));
    }
    v.extend((0..cfg.disks.len()).map(|i| slot(SlotDevice::Disk(i))));
    v.extend((0..cfg.nets.len()).map(|i| slot(SlotDevice::Net(i))));
    if cfg.virtio_console {
        v.push(slot(SlotDevice::Console));
    }
    if cfg.fs.is_some() {
        v.push(slot(SlotDevice::Fs));
    } else if cfg.fs_slot.is_some() {
        v.push(slot(SlotDevice::FsSlot));
    }
    v.extend((0..cfg.placeholder_slots).map(|_| slot(SlotDevice::Placeholder)));
    v
}

fn count(saved: &[u32], ty: u32) -> usize {
    saved.iter().filter(|t| **t == ty).count()
}

/// The slots of a restore of `cfg` from a snapshot whose slots have the device types `saved`
/// (from the state file: untrusted). The snapshot's own disks and nets take the first
/// `--disk`s and `--net`s; what is left, with `--fs`, fills its placeholder slots in order.
/// The error names what does not fit.
pub fn restore(cfg: &VmConfig, saved: &[u32]) -> Result<Vec<Slot>, String> {
    if saved.len() > MAX_VIRTIO_SLOTS {
        return Err(format!(
            "{} virtio-mmio slots in the snapshot, at most {MAX_VIRTIO_SLOTS}",
            saved.len()
        ));
    }
    let own_disks = count(saved, VIRTIO_ID_BLOCK);
    let own_nets = count(saved, VIRTIO_ID_NET);
    if cfg.disks.len() < own_disks {
        return Err(format!(
            "the snapshot has {own_disks} virtio-blk disks, {} --disk given",
            cfg.disks.len()
        ));
    }
    if cfg.nets.len() < own_nets {
        return Err(format!(
            "the snapshot has {own_nets} virtio-net cards, {} --net given",
            cfg.nets.len()
        ));
    }
    // A template saved with --fs-slot has its virtio-fs slot already: --fs goes there.
    let own_fs = count(saved, VIRTIO_ID_FS);
    if own_fs > 1 {
        return Err(format!("the snapshot has {own_fs} virtio-fs devices"));
    }
    if own_fs == 1 && cfg.fs.is_none() {
        return Err(
            "the snapshot has a virtio-fs slot (saved with --fs-slot), --fs not given".into(),
        );
    }
    let fs_fills_placeholder = cfg.fs.is_some() && own_fs == 0;
    let mut fillers: Vec<SlotDevice> = Vec::new();
    if fs_fills_placeholder {
        fillers.push(SlotDevice::Fs);
    }
    fillers.extend((own_nets..cfg.nets.len()).map(SlotDevice::Net));
    fillers.extend((own_disks..cfg.disks.len()).map(SlotDevice::Disk));
    let placeholders = count(saved, PLACEHOLDER_DEVICE_ID);
    if fillers.len() > placeholders {
        return Err(format!(
            "{} devices to place beyond the snapshot's own (--fs: {}, --net: {}, --disk: {}), \
             the snapshot has {placeholders} placeholder slots",
            fillers.len(),
            usize::from(fs_fills_placeholder),
            cfg.nets.len() - own_nets,
            cfg.disks.len() - own_disks
        ));
    }
    let (mut disks, mut nets, mut fillers) = (0..own_disks, 0..own_nets, fillers.into_iter());
    let (mut vsock, mut rng, mut console) = (false, false, false);
    let once = |seen: &mut bool, what: &str, i: usize| {
        if std::mem::replace(seen, true) {
            return Err(format!(
                "virtio-mmio slot {i}: a second {what} in the snapshot"
            ));
        }
        Ok(())
    };
    let mut plan = Vec::with_capacity(saved.len());
    for (i, ty) in saved.iter().enumerate() {
        let device = match *ty {
            PLACEHOLDER_DEVICE_ID => match fillers.next() {
                Some(d) => {
                    plan.push(Slot {
                        device: d,
                        fills_placeholder: true,
                    });
                    continue;
                }
                None => SlotDevice::Placeholder,
            },
            VIRTIO_ID_VSOCK => {
                once(&mut vsock, "virtio-vsock", i)?;
                SlotDevice::Vsock
            }
            VIRTIO_ID_RNG if cfg.rng => {
                once(&mut rng, "virtio-rng", i)?;
                SlotDevice::Rng
            }
            VIRTIO_ID_RNG => {
                return Err(format!(
                    "virtio-mmio slot {i}: the snapshot has virtio-rng, --no-rng given"
                ))
            }
            VIRTIO_ID_CONSOLE if cfg.virtio_console => {
                once(&mut console, "virtio-console", i)?;
                SlotDevice::Console
            }
            VIRTIO_ID_CONSOLE => {
                return Err(format!(
                    "virtio-mmio slot {i}: the snapshot has virtio-console, --virtio-console \
                     not given"
                ))
            }
            VIRTIO_ID_BLOCK => SlotDevice::Disk(disks.next().expect("counted")),
            VIRTIO_ID_NET => SlotDevice::Net(nets.next().expect("counted")),
            VIRTIO_ID_FS => SlotDevice::Fs,
            other => {
                return Err(format!(
                    "virtio-mmio slot {i}: virtio device type {other} in the snapshot, not one \
                     kata-vmm has"
                ))
            }
        };
        plan.push(slot(device));
    }
    if !vsock {
        return Err("the snapshot has no virtio-vsock device".into());
    }
    if cfg.rng && !rng {
        return Err("the snapshot has no virtio-rng device (restore with --no-rng)".into());
    }
    if cfg.virtio_console && !console {
        return Err("the snapshot has no virtio-console (restore without --virtio-console)".into());
    }
    Ok(plan)
}

#[cfg(test)]
mod tests;

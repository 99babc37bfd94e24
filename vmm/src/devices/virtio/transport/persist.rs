//! Snapshot state of a virtio-mmio transport and its device: the register file (status,
//! feature selection and negotiation, queue selection, interrupt status, configuration
//! generation), each queue as the driver configured it, and where each running queue stands
//! (`next_avail`, `next_used`, from the device). Restoring it re-activates a device that was
//! running, through the same validation as a guest's DRIVER_OK: everything read from a
//! snapshot file is untrusted.

use serde::{Deserialize, Serialize};

use super::{status, MmioTransport, INT_CONFIG, INT_VRING};
use crate::devices::virtio::device::DeviceNote;
use crate::devices::virtio::queue::{event_idx, QueueConfig};
use crate::devices::virtio::VirtioDevice;

/// One queue in a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueState {
    /// Size the driver chose.
    pub size: u16,
    /// `QueueReady`.
    pub ready: bool,
    /// Descriptor table guest address.
    pub desc: u64,
    /// Available ring guest address.
    pub avail: u64,
    /// Used ring guest address.
    pub used: u64,
    /// `(next_avail, next_used)` of the running queue; None when the device does not run it.
    pub position: Option<(u16, u16)>,
}

/// One virtio-mmio slot in a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportState {
    /// The device behind it (virtio device id); a restore refuses another.
    pub device_type: u32,
    /// Device status.
    pub status: u32,
    /// `DeviceFeaturesSel`.
    pub device_features_sel: u32,
    /// `DriverFeaturesSel`.
    pub driver_features_sel: u32,
    /// The features the driver acknowledged.
    pub driver_features: u64,
    /// `QueueSel`.
    pub queue_sel: u32,
    /// `InterruptStatus`.
    pub interrupt_status: u32,
    /// `ConfigGeneration`.
    pub config_generation: u32,
    /// The device was activated (DRIVER_OK accepted).
    pub active: bool,
    /// Every queue of the device, in index order.
    pub queues: Vec<QueueState>,
    /// What the driver read of the device that must not change ([`VirtioDevice::identity`]:
    /// virtio-fs, its tag).
    pub identity: Option<String>,
    /// The device's own note for its restore ([`VirtioDevice::save_note`]).
    pub note: Option<DeviceNote>,
}

/// Status bits a driver can have set.
const KNOWN_STATUS: u32 = status::ACKNOWLEDGE
    | status::DRIVER
    | status::FEATURES_OK
    | status::DRIVER_OK
    | status::DEVICE_NEEDS_RESET
    | status::FAILED;

impl<D: VirtioDevice> MmioTransport<D> {
    /// The transport's and the device's state (every vCPU paused, so the guest changes
    /// nothing meanwhile); an error when the device cannot be saved.
    pub fn save_state(&self) -> Result<TransportState, String> {
        self.device.snapshot_supported()?;
        let positions = if self.active {
            self.device.queue_positions()
        } else {
            Vec::new()
        };
        Ok(TransportState {
            device_type: self.device.device_type(),
            status: self.status,
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            driver_features: self.driver_features,
            queue_sel: self.queue_sel,
            interrupt_status: self.interrupt_status,
            config_generation: self.config_generation,
            active: self.active,
            queues: self
                .queues
                .iter()
                .enumerate()
                .map(|(i, q)| QueueState {
                    size: q.size,
                    ready: q.ready,
                    desc: q.desc,
                    avail: q.avail,
                    used: q.used,
                    position: positions.get(i).copied().flatten(),
                })
                .collect(),
            identity: self.device.identity(),
            note: self.device.save_note(),
        })
    }

    /// Puts a freshly attached transport (nothing negotiated yet) in the state `s`: checked
    /// against this device (type, queue count, features offered, known status bits, queue
    /// sizes and rings inside guest RAM), then the device is activated as at DRIVER_OK, its
    /// queues set where they stood, and told it was restored. Anything that does not fit is an
    /// error naming it; the transport is then unusable (the restore fails).
    pub fn restore_state(&mut self, s: &TransportState) -> Result<(), String> {
        let ty = self.device.device_type();
        if s.device_type != ty {
            return Err(format!(
                "the snapshot has virtio device type {} here, the configuration type {ty}",
                s.device_type
            ));
        }
        self.device.restore_supported()?;
        let identity = self.device.identity();
        if s.identity != identity {
            // (The saved one is untrusted: shown cut to 64 characters.)
            let show = |i: &Option<String>| {
                i.as_deref().map_or("none".into(), |t| {
                    format!("{:?}", t.chars().take(64).collect::<String>())
                })
            };
            return Err(format!(
                "the snapshot's device here is {}, this one is {}",
                show(&s.identity),
                show(&identity)
            ));
        }
        if s.queues.len() != self.queues.len() {
            return Err(format!(
                "{} queues in the snapshot, the device has {}",
                s.queues.len(),
                self.queues.len()
            ));
        }
        if s.driver_features & !self.offered != 0 {
            return Err(format!(
                "driver features {:#x} include bits this device does not offer ({:#x})",
                s.driver_features, self.offered
            ));
        }
        if s.status & !KNOWN_STATUS != 0 {
            return Err(format!("unknown device status bits {:#x}", s.status));
        }
        if s.interrupt_status & !(INT_VRING | INT_CONFIG) != 0 {
            return Err(format!(
                "unknown interrupt status bits {:#x}",
                s.interrupt_status
            ));
        }
        if s.active && s.status & status::DRIVER_OK == 0 {
            return Err("active without DRIVER_OK".into());
        }
        for (q, saved) in self.queues.iter_mut().zip(&s.queues) {
            *q = QueueConfig {
                max_size: q.max_size,
                size: saved.size,
                ready: saved.ready,
                desc: saved.desc,
                avail: saved.avail,
                used: saved.used,
            };
        }
        self.status = s.status;
        self.device_features_sel = s.device_features_sel;
        self.driver_features_sel = s.driver_features_sel;
        self.driver_features = s.driver_features;
        self.queue_sel = s.queue_sel;
        self.interrupt_status = s.interrupt_status;
        self.config_generation = s.config_generation;
        if !s.active {
            return Ok(());
        }
        for (i, q) in self.queues.iter().enumerate() {
            if q.ready {
                q.validate(&*self.mem)
                    .map_err(|e| format!("queue {i}: {e}"))?;
            }
        }
        self.device.activate(self.driver_features, &self.queues)?;
        self.active = true;
        self.stats.event_idx = event_idx(self.driver_features);
        let positions: Vec<_> = s.queues.iter().map(|q| q.position).collect();
        self.device.set_queue_positions(&positions);
        // Serve what the guest published and never kicked for, then let the device tell the
        // guest it was restored; a spurious interrupt is harmless, a lost one is not.
        let mut used = self.device.after_restore(s.note.as_ref());
        for i in 0..self.queues.len() {
            if self.queues[i].ready {
                used |= self.device.process_queue(i);
            }
        }
        if used {
            self.raise(INT_VRING);
        } else if self.interrupt_status != 0 {
            if let Some(irq) = &self.irq {
                let _ = irq.write(1);
            }
        }
        self.rekick();
        Ok(())
    }
}

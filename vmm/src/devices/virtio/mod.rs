//! Virtio over MMIO: the transport (`transport`: register file, status state machine), the
//! queue helpers (`queue`: queue validation, the event-idx serving loop, descriptor chain
//! checks), the device trait (`device`) and one module per device: `block`, `net`, `rng`,
//! `console`, `vsock` (hybrid vsock served by the VMM), `fs` (vhost-user frontend) and
//! `placeholder` (an empty slot, `DeviceID` 0);
//! `worker`: queue notifications and the threads that serve a device's queues on their own.

pub mod block;
pub mod console;
pub mod device;
pub mod fs;
pub mod net;
pub mod placeholder;
pub mod queue;
pub mod rng;
pub mod transport;
pub mod vsock;
pub mod worker;

pub use device::VirtioDevice;
pub use queue::{serve_available, Pass, QueueConfig};
pub use transport::MmioTransport;
pub use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
pub use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};

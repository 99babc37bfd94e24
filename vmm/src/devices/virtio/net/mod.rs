//! virtio-net (network device, id 1) on a host tap device, served by the VMM's main thread.
//!
//! `--net tap=NAME[,mac=MAC]`: at startup (before the jail) the VMM opens `/dev/net/tun` and
//! attaches to the tap `NAME` with `TUNSETIFF` (`IFF_TAP | IFF_NO_PI`, no `IFF_VNET_HDR`, no
//! offloads). A tap that does not exist yet is created by that call and is not persistent: it
//! vanishes with the VMM's fd. A tap made beforehand (`ip tuntap add`, by the shim or CNI) is
//! attached and left as it was. The tap stays in the host's network namespace (the jail's new
//! namespace does not affect an open fd), where the host configures its address and routes.
//!
//! Two queues: 0 = receiveq (host -> guest), 1 = transmitq (guest -> host). Every frame carries
//! the 12-byte `virtio_net_hdr` of virtio 1.x in front; without offloads the device ignores
//! the guest's header on TX and writes a zero header (`num_buffers` 1) on RX.
//!
//! - **TX** (kick on queue 1): each chain is checked before anything is sent: every descriptor
//!   device-readable and inside guest RAM, the chain not cut short (a loop or a link out of the
//!   table), at least the header and at most [`MAX_CHAIN_LEN`] bytes. The frame is gathered
//!   into a bounce buffer and written to the tap with one `write(2)`. A bad chain or a
//!   header-only chain is returned unsent. If the tap says `EAGAIN`, the chain is put back and
//!   the event loop waits for `POLLOUT` on the tap (no busy loop).
//! - **RX**: the tap is polled for `POLLIN` only while the guest has posted buffers. A frame is
//!   read with one `read(2)` into a bounce buffer, then copied into the next chain (every
//!   descriptor device-writable and inside guest RAM; a bad chain is returned with used length
//!   0 and the frame waits for the next chain). When no chain is available the frame is kept,
//!   the device stops polling the tap, and the guest's next kick on queue 0 delivers it
//!   (back-pressure: the tap's own queue holds the rest; no frame read from the tap is lost
//!   while the guest has buffers). A frame larger than the chain it gets is dropped and the
//!   chain is kept for the next frame.
//! - One pass handles at most one queue's worth of chains or frames; poll is level-triggered,
//!   so the rest comes in the next round of the event loop after the other fds were served.
//! - A tap that fails (deleted on the host: `POLLERR`, `EBADFD`) is no longer polled; TX
//!   frames are then dropped. Nothing the guest does can make the VMM panic or spin.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestMemory, GuestMemoryMmap};

use crate::devices::virtio::queue::{checked_chain, gather, scatter};
use crate::devices::virtio::{
    QueueConfig, VirtioDevice, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX,
    VIRTIO_RING_F_INDIRECT_DESC,
};

pub use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
/// Size of each queue we offer.
pub const QUEUE_SIZE: u16 = 256;
/// Queue indexes.
pub const RX_QUEUE: usize = 0;
/// Transmit queue index.
pub const TX_QUEUE: usize = 1;
/// Length of `virtio_net_hdr` with `num_buffers` (virtio 1.x, `VIRTIO_F_VERSION_1`).
pub const NET_HDR_LEN: usize = 12;
/// Largest Ethernet frame moved either way (a 64 KiB IP packet, Ethernet and VLAN headers).
pub const MAX_FRAME_LEN: usize = 65_550;
/// Largest TX chain accepted: header + frame.
pub const MAX_CHAIN_LEN: usize = NET_HDR_LEN + MAX_FRAME_LEN;
/// Most `--net` devices on one VM (virtio-mmio slots and IRQs are limited).
pub const MAX_NETS: usize = 4;
/// Longest interface name (`IFNAMSIZ` - 1).
pub use kata_rs_netlink::tap::MAX_IFNAME_LEN;

use virtio_bindings::virtio_net::VIRTIO_NET_F_MAC;
/// Feature bits offered: virtio 1.x, a MAC in config space, indirect descriptors, event-idx
/// notification suppression. No checksum/segmentation offloads, no mergeable RX buffers, no
/// control queue.
pub const FEATURES: u64 = (1 << VIRTIO_F_VERSION_1)
    | (1 << VIRTIO_NET_F_MAC)
    | (1 << VIRTIO_RING_F_INDIRECT_DESC)
    | (1 << VIRTIO_RING_F_EVENT_IDX);

/// One `--net tap=NAME[,mac=MAC]` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// Host tap interface name.
    pub tap: String,
    /// Guest MAC address; a locally administered one is made up when not given.
    pub mac: Option<[u8; 6]>,
}

/// Parses `tap=NAME[,mac=MAC]` (clap value parser of `--net`).
pub fn parse_net(s: &str) -> Result<NetConfig, String> {
    let mut tap = None;
    let mut mac = None;
    for kv in s.split(',') {
        match kv.split_once('=') {
            Some(("tap", v)) if tap.is_none() => tap = Some(check_ifname(v)?),
            Some(("mac", v)) if mac.is_none() => mac = Some(parse_mac(v)?),
            Some(("tap" | "mac", _)) => return Err(format!("{kv:?} given twice")),
            _ => {
                return Err(format!(
                    "unknown net option {kv:?} (expected tap=NAME or mac=MAC)"
                ))
            }
        }
    }
    let tap = tap.ok_or("tap=NAME is required")?;
    Ok(NetConfig { tap, mac })
}

/// An interface name the kernel accepts: 1..=15 bytes of `[A-Za-z0-9_.-]`, not `.`/`..`.
fn check_ifname(v: &str) -> Result<String, String> {
    let ok = !v.is_empty()
        && v.len() <= MAX_IFNAME_LEN
        && v != "."
        && v != ".."
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok {
        Ok(v.to_string())
    } else {
        Err(format!(
            "invalid tap name {v:?} (1-{MAX_IFNAME_LEN} characters of A-Z a-z 0-9 _ . -)"
        ))
    }
}

/// `aa:bb:cc:dd:ee:ff`, unicast and not all zeros.
pub fn parse_mac(v: &str) -> Result<[u8; 6], String> {
    kata_rs_netlink::parse_mac(v)
        .filter(kata_rs_netlink::is_unicast)
        .ok_or_else(|| format!("invalid MAC {v:?} (expected a unicast aa:bb:cc:dd:ee:ff)"))
}

/// A locally administered unicast MAC `02:6b:72:xx:xx:xx` ("kr") with random low bytes.
pub fn random_mac() -> [u8; 6] {
    let mut mac = [0x02, 0x6b, 0x72, 0, 0, 0];
    if !crate::devices::virtio::rng::host_random(&mut mac[3..]) {
        mac[3..].copy_from_slice(&std::process::id().to_le_bytes()[..3]);
    }
    mac
}

mod device;
mod rxtx;
mod tap;

pub use device::*;
pub use rxtx::*;
pub use tap::*;

#[cfg(test)]
mod tests;

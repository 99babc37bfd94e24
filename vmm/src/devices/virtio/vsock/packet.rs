//! The virtio-vsock packet header (`struct virtio_vsock_hdr`, virtio 1.x §5.10.6): 44 bytes,
//! little endian, in front of every packet on the rx and tx queues.

/// Length of the header.
pub const HDR_LEN: usize = 44;
/// The host's CID (`VMADDR_CID_HOST`): the only peer the guest may address.
pub const HOST_CID: u64 = 2;
/// `VIRTIO_VSOCK_TYPE_STREAM`, the only socket type the device speaks.
pub const TYPE_STREAM: u16 = 1;
/// Largest payload of one packet either way (`VIRTIO_VSOCK_MAX_PKT_BUF_SIZE`).
pub const MAX_PAYLOAD: usize = 64 << 10;

/// Operations (`VIRTIO_VSOCK_OP_*`).
pub mod op {
    /// Connection request.
    pub const REQUEST: u16 = 1;
    /// Connection accepted.
    pub const RESPONSE: u16 = 2;
    /// Connection reset / refused.
    pub const RST: u16 = 3;
    /// No more data in the direction(s) of `flags`.
    pub const SHUTDOWN: u16 = 4;
    /// Data.
    pub const RW: u16 = 5;
    /// Here is my credit (`buf_alloc`, `fwd_cnt`).
    pub const CREDIT_UPDATE: u16 = 6;
    /// Tell me your credit.
    pub const CREDIT_REQUEST: u16 = 7;
}

/// `SHUTDOWN` flag: the sender will receive no more data.
pub const SHUTDOWN_RCV: u32 = 1;
/// `SHUTDOWN` flag: the sender will send no more data.
pub const SHUTDOWN_SEND: u32 = 2;

/// A decoded header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    /// Source context id.
    pub src_cid: u64,
    /// Destination context id.
    pub dst_cid: u64,
    /// Source port.
    pub src_port: u32,
    /// Destination port.
    pub dst_port: u32,
    /// Payload length.
    pub len: u32,
    /// Socket type (1 = stream).
    pub type_: u16,
    /// Operation, see [`op`].
    pub op: u16,
    /// Operation flags (`SHUTDOWN`).
    pub flags: u32,
    /// The sender's receive buffer size.
    pub buf_alloc: u32,
    /// Bytes the sender has consumed from its receive buffer, ever (wrapping).
    pub fwd_cnt: u32,
}

fn u32_at(b: &[u8; HDR_LEN], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8; HDR_LEN], at: usize) -> u64 {
    u64::from(u32_at(b, at)) | (u64::from(u32_at(b, at + 4)) << 32)
}

fn u16_at(b: &[u8; HDR_LEN], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// Why a packet from the guest is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadPacket {
    /// Not from the guest's own CID or not to the host: cannot be answered, dropped.
    #[error("bad address (src cid {0}, dst cid {1})")]
    Address(u64, u64),
    /// Not a stream packet (seqpacket, dgram, garbage): answered with RST.
    #[error("socket type {0} is not stream")]
    Type(u16),
    /// Unknown operation: answered with RST.
    #[error("unknown op {0}")]
    Op(u16),
    /// A payload on a packet that carries none, or longer than the chain or the maximum.
    #[error("bad length {0}")]
    Len(u32),
}

impl Header {
    /// Decodes 44 bytes (never fails: every bit pattern is a header; see [`Header::check`]).
    pub fn parse(b: &[u8; HDR_LEN]) -> Header {
        Header {
            src_cid: u64_at(b, 0),
            dst_cid: u64_at(b, 8),
            src_port: u32_at(b, 16),
            dst_port: u32_at(b, 20),
            len: u32_at(b, 24),
            type_: u16_at(b, 28),
            op: u16_at(b, 30),
            flags: u32_at(b, 32),
            buf_alloc: u32_at(b, 36),
            fwd_cnt: u32_at(b, 40),
        }
    }

    /// Encodes the header.
    pub fn encode(&self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    /// Checks a packet the guest (CID `guest_cid`) sent with `payload` bytes after the header
    /// in its chain.
    pub fn check(&self, guest_cid: u64, payload: usize) -> Result<(), BadPacket> {
        if self.src_cid != guest_cid || self.dst_cid != HOST_CID {
            return Err(BadPacket::Address(self.src_cid, self.dst_cid));
        }
        if self.type_ != TYPE_STREAM {
            return Err(BadPacket::Type(self.type_));
        }
        if !(op::REQUEST..=op::CREDIT_REQUEST).contains(&self.op) {
            return Err(BadPacket::Op(self.op));
        }
        let len = self.len as usize;
        let ok = if self.op == op::RW {
            len > 0 && len <= payload && len <= MAX_PAYLOAD
        } else {
            len == 0
        };
        if !ok {
            return Err(BadPacket::Len(self.len));
        }
        Ok(())
    }

    /// A host -> guest packet of `op` on the connection host `local` port <-> guest
    /// `peer` port.
    pub fn to_guest(guest_cid: u64, local: u32, peer: u32, op: u16) -> Header {
        Header {
            src_cid: HOST_CID,
            dst_cid: guest_cid,
            src_port: local,
            dst_port: peer,
            type_: TYPE_STREAM,
            op,
            ..Default::default()
        }
    }

    /// The RST answering this guest packet (ports swapped).
    pub fn reset_reply(&self, guest_cid: u64) -> Header {
        Header::to_guest(guest_cid, self.dst_port, self.src_port, op::RST)
    }
}

//! The wire format: the connection header the client sends and the trailer the server
//! answers with, their sizes, magics and limits.

use crate::{err, Result};

/// Magic of a connection header.
pub const HEADER_MAGIC: [u8; 4] = *b"KVS1";
/// Magic of the server's trailer.
pub const TRAILER_MAGIC: [u8; 4] = *b"KVST";
/// Protocol version in the header.
pub const VERSION: u16 = 1;
/// Size of an encoded [`Header`].
pub const HEADER_LEN: usize = 40;
/// Size of an encoded [`Trailer`].
pub const TRAILER_LEN: usize = 88;
/// Largest stream length a header may ask for (1 TiB): anything above is a bad header.
pub const MAX_STREAM_BYTES: u64 = 1 << 40;
/// Largest per-read delay a header may ask for.
pub const MAX_SLOW_MS: u32 = 1000;

fn le_u16(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// What the client asks of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Bytes the client sends (client -> server).
    pub up: u64,
    /// Bytes the server sends back (server -> client).
    pub down: u64,
    /// Seed of both streams.
    pub seed: u64,
    /// The server sleeps this long after each read of at most [`SLOW_CHUNK`](crate::SLOW_CHUNK) bytes (0: reads
    /// at full speed); forces the client's writes to block.
    pub slow_ms: u32,
}

impl Header {
    /// Wire form: magic, version (le16), reserved 0 (le16), slow_ms (le32), reserved 0
    /// (le32), up, down, seed (le64 each).
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&HEADER_MAGIC);
        b[4..6].copy_from_slice(&VERSION.to_le_bytes());
        b[8..12].copy_from_slice(&self.slow_ms.to_le_bytes());
        b[16..24].copy_from_slice(&self.up.to_le_bytes());
        b[24..32].copy_from_slice(&self.down.to_le_bytes());
        b[32..40].copy_from_slice(&self.seed.to_le_bytes());
        b
    }

    /// Parses and checks a header; anything unexpected is an error naming the field.
    pub fn decode(b: &[u8]) -> Result<Header> {
        if b.len() != HEADER_LEN {
            return Err(err!("bad header: {} bytes, want {HEADER_LEN}", b.len()));
        }
        if b[0..4] != HEADER_MAGIC {
            return Err(err!("bad header: magic {:02x?}, want \"KVS1\"", &b[0..4]));
        }
        let version = le_u16(&b[4..6]);
        if version != VERSION {
            return Err(err!("bad header: version {version}, want {VERSION}"));
        }
        if le_u16(&b[6..8]) != 0 || le_u32(&b[12..16]) != 0 {
            return Err(err!("bad header: reserved fields are not zero"));
        }
        let h = Header {
            slow_ms: le_u32(&b[8..12]),
            up: le_u64(&b[16..24]),
            down: le_u64(&b[24..32]),
            seed: le_u64(&b[32..40]),
        };
        if h.slow_ms > MAX_SLOW_MS {
            return Err(err!(
                "bad header: slow_ms {} above {MAX_SLOW_MS}",
                h.slow_ms
            ));
        }
        for (what, v) in [("up", h.up), ("down", h.down)] {
            if v > MAX_STREAM_BYTES {
                return Err(err!(
                    "bad header: {what} {v} bytes above {MAX_STREAM_BYTES}"
                ));
            }
        }
        Ok(h)
    }
}

/// The server's account of one connection, sent after its down stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    /// True when the server received exactly `up` bytes, all as expected, then EOF.
    pub ok: bool,
    /// Bytes the server received (up stream).
    pub received: u64,
    /// How often the server's own sends would have blocked.
    pub write_blocked: u64,
    /// sha256 of what the server received.
    pub sha_received: [u8; 32],
    /// sha256 of what the server sent.
    pub sha_sent: [u8; 32],
}

impl Trailer {
    /// Wire form: magic, status (le32: 0 ok, 1 failed), received, write_blocked (le64),
    /// sha_received, sha_sent.
    pub fn encode(&self) -> [u8; TRAILER_LEN] {
        let mut b = [0u8; TRAILER_LEN];
        b[0..4].copy_from_slice(&TRAILER_MAGIC);
        b[4..8].copy_from_slice(&u32::from(!self.ok).to_le_bytes());
        b[8..16].copy_from_slice(&self.received.to_le_bytes());
        b[16..24].copy_from_slice(&self.write_blocked.to_le_bytes());
        b[24..56].copy_from_slice(&self.sha_received);
        b[56..88].copy_from_slice(&self.sha_sent);
        b
    }

    /// Parses a trailer.
    pub fn decode(b: &[u8]) -> Result<Trailer> {
        if b.len() != TRAILER_LEN || b[0..4] != TRAILER_MAGIC {
            return Err(err!("bad trailer from the server ({} bytes)", b.len()));
        }
        let status = le_u32(&b[4..8]);
        if status > 1 {
            return Err(err!("bad trailer: status {status}"));
        }
        let mut t = Trailer {
            ok: status == 0,
            received: le_u64(&b[8..16]),
            write_blocked: le_u64(&b[16..24]),
            sha_received: [0; 32],
            sha_sent: [0; 32],
        };
        t.sha_received.copy_from_slice(&b[24..56]);
        t.sha_sent.copy_from_slice(&b[56..88]);
        Ok(t)
    }
}

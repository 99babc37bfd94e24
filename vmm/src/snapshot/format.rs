//! The snapshot state file's fixed header, and the checks `load` makes on it.
//!
//! ```text
//! offset size
//!      0    8  magic "KATAVMSS"
//!      8    4  format version, little endian (FORMAT_VERSION)
//!     12    4  flags, 0 (a set bit is refused: meaning unknown to this reader)
//!     16    8  payload length in bytes, little endian
//!     24   32  SHA-256 of the payload
//!     56    -  payload: postcard (serde, binary), exactly `payload length` bytes, nothing
//!                after it
//! ```
//!
//! The payload was JSON up to version 3; version 4 is postcard: the KVM structures' bytes go
//! in as they are (a 4 KiB XSAVE area was 4096 JSON numbers), and a load that took ~20 ms of
//! a template start on the emulated node is a copy.

use sha2::{Digest, Sha256};

/// The first 8 bytes of every snapshot state file.
pub const MAGIC: [u8; 8] = *b"KATAVMSS";
/// The version this build writes and the only one it reads. Bumped on any change of the
/// header or of the payload's meaning (see "Snapshot format" in vmm/README.md).
pub const FORMAT_VERSION: u32 = 5;
/// Size of the fixed header.
pub const HEADER_LEN: usize = 56;

/// Why bytes are not a snapshot state file this build can read.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The magic is wrong.
    #[error("not a kata-vmm snapshot state file (no \"KATAVMSS\" magic)")]
    NotASnapshot,
    /// The file ends before the header or the payload does.
    #[error("truncated: {have} bytes, {needed} expected")]
    Truncated {
        /// Bytes needed (the header, or the header plus the payload length it gives).
        needed: u64,
        /// Bytes in the file.
        have: u64,
    },
    /// Another format version.
    #[error("format version {found}, this kata-vmm reads version {supported} only")]
    Version {
        /// The file's version.
        found: u32,
        /// [`FORMAT_VERSION`].
        supported: u32,
    },
    /// Unknown flags.
    #[error("unknown header flags {0:#x}")]
    Flags(u32),
    /// Bytes after the payload.
    #[error("{have} bytes, the header says {expected}: data after the payload")]
    TrailingData {
        /// Header plus payload length.
        expected: u64,
        /// Bytes in the file.
        have: u64,
    },
    /// The payload does not match its checksum.
    #[error("payload checksum mismatch: the file is corrupt")]
    Checksum,
    /// The payload is not the state this version describes.
    #[error("payload: {0}")]
    Payload(String),
}

/// The header followed by `payload`.
pub fn encode(payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER_LEN + payload.len());
    v.extend_from_slice(&MAGIC);
    v.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    v.extend_from_slice(&Sha256::digest(payload));
    v.extend_from_slice(payload);
    v
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// Checks the header of `file` (magic, version, flags, length, checksum, in that order) and
/// returns the payload.
pub fn decode(file: &[u8]) -> Result<&[u8], FormatError> {
    let have = file.len() as u64;
    let truncated = |needed: u64| FormatError::Truncated { needed, have };
    let magic_len = file.len().min(MAGIC.len());
    if file[..magic_len] != MAGIC[..magic_len] {
        return Err(FormatError::NotASnapshot);
    }
    // The version before anything else it governs.
    if file.len() < 12 {
        return Err(truncated(HEADER_LEN as u64));
    }
    let version = u32_at(file, 8);
    if version != FORMAT_VERSION {
        return Err(FormatError::Version {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    if file.len() < HEADER_LEN {
        return Err(truncated(HEADER_LEN as u64));
    }
    let flags = u32_at(file, 12);
    if flags != 0 {
        return Err(FormatError::Flags(flags));
    }
    let len = u64::from_le_bytes(file[16..24].try_into().expect("8 bytes"));
    let expected = (HEADER_LEN as u64).saturating_add(len);
    if have < expected {
        return Err(truncated(expected));
    }
    if have > expected {
        return Err(FormatError::TrailingData { expected, have });
    }
    let payload = &file[HEADER_LEN..];
    if Sha256::digest(payload).as_slice() != &file[24..56] {
        return Err(FormatError::Checksum);
    }
    Ok(payload)
}

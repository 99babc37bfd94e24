//! kata-vsock-stress: the parts of the vsock stress tool that do not depend on the command
//! line — wire format, the deterministic byte streams, their verification, and the
//! per-connection client/server logic over any connected stream socket (AF_VSOCK in use,
//! AF_UNIX socket pairs in the unit tests).
//!
//! One connection, both directions at once:
//!
//! ```text
//! client                                   server
//!   header (40 B: magic, up, down, seed, slow_ms) ->
//!   up stream (`up` bytes, pattern(seed, UP))     ->   verified byte by byte (slowly if slow_ms)
//!   shutdown(SHUT_WR)                             ->   EOF expected right after `up` bytes
//!                                  <- down stream (`down` bytes, pattern(seed, DOWN)), verified
//!                                  <- trailer (88 B: status, received, sha256s, write_blocked)
//!                                  <- EOF
//! ```
//!
//! The client then compares the server's count and sha256 of what it received with its own
//! sha256 of what it sent, and the server's sha256 of what it sent with its own of what it
//! received. Every socket operation is non-blocking (`MSG_DONTWAIT`) followed by a `poll` with a
//! timeout when it would block: a send that would block is counted as *write blocked* (the
//! peer's receive credit ran out: back-pressure) together with the time spent waiting.

mod conn;
mod io;
mod stream;
pub mod vsock;
mod wire;

use std::fmt;

pub use conn::*;
pub use io::*;
pub use stream::*;
pub use wire::*;

/// A tool error: one line of text for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// Result with the tool's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Shorthand for an [`Error`] made with `format!`.
#[macro_export]
macro_rules! err {
    ($($t:tt)*) => { $crate::Error(format!($($t)*)) };
}

/// Parses a byte count: digits with an optional `K`, `M` or `G` (binary multiples).
pub fn parse_size(s: &str) -> Result<u64> {
    let (num, mul) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .filter(|&n| n <= MAX_STREAM_BYTES)
        .ok_or_else(|| err!("bad size {s:?} (digits with K, M or G, at most 1 TiB)"))
}

/// Hex form of a digest.
pub fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;

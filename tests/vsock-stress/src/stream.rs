//! The deterministic byte streams of a connection (`Pattern`) and their verification
//! (`Verifier`): every byte checked by offset, everything hashed.

use sha2::{Digest, Sha256};

use crate::{err, Result, CHUNK};

/// Which stream of a connection a [`Pattern`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// client -> server
    Up,
    /// server -> client
    Down,
}

/// The deterministic pseudo-random byte stream of one direction of a connection: splitmix64
/// words, little-endian. The bytes depend only on seed, direction and offset, never on how the
/// stream is cut into reads and writes.
#[derive(Debug, Clone)]
pub struct Pattern {
    state: u64,
    word: [u8; 8],
    used: usize,
}

impl Pattern {
    /// The stream for `seed` in direction `dir`.
    pub fn new(seed: u64, dir: Dir) -> Pattern {
        let d = match dir {
            Dir::Up => 0x5555_0000_0000_0001,
            Dir::Down => 0xaaaa_0000_0000_0002,
        };
        Pattern {
            state: seed ^ d,
            word: [0; 8],
            used: 8,
        }
    }

    fn next_word(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Writes the next `buf.len()` bytes of the stream into `buf`.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut i = 0;
        while i < buf.len() && self.used < 8 {
            buf[i] = self.word[self.used];
            self.used += 1;
            i += 1;
        }
        let mut words = buf[i..].chunks_exact_mut(8);
        for w in &mut words {
            w.copy_from_slice(&self.next_word().to_le_bytes());
        }
        let rest = words.into_remainder();
        if !rest.is_empty() {
            self.word = self.next_word().to_le_bytes();
            self.used = 0;
            for b in rest {
                *b = self.word[self.used];
                self.used += 1;
            }
        }
    }
}

/// Checks received bytes against a [`Pattern`] and hashes them.
pub struct Verifier {
    pattern: Pattern,
    scratch: Vec<u8>,
    offset: u64,
    sha: Sha256,
}

impl Verifier {
    /// A verifier for the stream `seed`/`dir`, starting at offset 0.
    pub fn new(seed: u64, dir: Dir) -> Verifier {
        Verifier {
            pattern: Pattern::new(seed, dir),
            scratch: vec![0; CHUNK],
            offset: 0,
            sha: Sha256::new(),
        }
    }

    /// Checks the next `data.len()` bytes of the stream; the first wrong byte is an error with
    /// its offset, what came and what was expected (the bytes before it count as checked).
    pub fn check(&mut self, data: &[u8]) -> Result<()> {
        for part in data.chunks(CHUNK) {
            let want = &mut self.scratch[..part.len()];
            self.pattern.fill(want);
            if part != &want[..] {
                let i = part
                    .iter()
                    .zip(want.iter())
                    .position(|(a, b)| a != b)
                    .unwrap_or(0);
                let e = err!(
                    "byte {} differs: got {:#04x}, want {:#04x}",
                    self.offset + i as u64,
                    part[i],
                    want[i]
                );
                // What came before it was good: it counts as received.
                self.sha.update(&part[..i]);
                self.offset += i as u64;
                return Err(e);
            }
            self.sha.update(part);
            self.offset += part.len() as u64;
        }
        Ok(())
    }

    /// Bytes checked so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// sha256 of everything checked.
    pub fn finish(self) -> [u8; 32] {
        self.sha.finalize().into()
    }
}

//! A deterministic, documented RNG for tests, known-answer vectors and
//! fuzzing. NOT for production: its output is a public function of its label.
//!
//! The byte stream is `SHA-256(label || u64_be(0)) || SHA-256(label ||
//! u64_be(1)) || ...`, consumed in order. Every draw kith-crypto makes is 32
//! bytes, so draw number `i` is exactly block `i`; another implementation can
//! reproduce the known-answer vectors with nothing but SHA-256.

use core::convert::Infallible;

use rand_core::{TryCryptoRng, TryRng};
use sha2::{Digest, Sha256};

/// SHA-256 in counter mode over a label.
pub struct TestRng {
    label: Vec<u8>,
    counter: u64,
    block: [u8; 32],
    used: usize,
}

impl TestRng {
    /// A stream determined by `label`.
    pub fn new(label: &[u8]) -> Self {
        Self { label: label.to_vec(), counter: 0, block: [0; 32], used: 32 }
    }

    /// A stream determined by a number (label `"kith-test-rng"` followed by
    /// the number as 8 big-endian bytes).
    pub fn from_seed(seed: u64) -> Self {
        let mut label = b"kith-test-rng".to_vec();
        label.extend_from_slice(&seed.to_be_bytes());
        Self::new(&label)
    }

    /// Block `i` of the stream for `label`.
    pub fn block(label: &[u8], i: u64) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(label);
        h.update(i.to_be_bytes());
        h.finalize().into()
    }

    fn fill(&mut self, dst: &mut [u8]) {
        for byte in dst {
            if self.used == 32 {
                self.block = Self::block(&self.label, self.counter);
                self.counter += 1;
                self.used = 0;
            }
            *byte = self.block[self.used];
            self.used += 1;
        }
    }
}

impl TryRng for TestRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.fill(&mut b);
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.fill(&mut b);
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.fill(dst);
        Ok(())
    }
}

/// Deterministic by design; the marker lets it drive kith-crypto in tests.
impl TryCryptoRng for TestRng {}

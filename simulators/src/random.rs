//! The simulators' one random generator: SplitMix64, small, fast, seedable,
//! and the same on every platform and version, so that a seed replays a run
//! exactly (fault draws, generated card numbers, the simulation's schedules).
//! Not for anything secret.

/// SplitMix64 (Steele, Lea and Flood, 2014).
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The generator of one connection: the seed and the index each mixed, so
    /// that neighbouring seeds or connections get unrelated streams.
    pub fn for_connection(seed: u64, connection: u64) -> SplitMix64 {
        SplitMix64(SplitMix64(seed).next_u64() ^ SplitMix64(!connection).next_u64())
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A draw in `0..n` (`0` when `n` is 0). The modulo's bias is below
    /// 2^-40 for the small `n` simulations use.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True `per_mille` times in a thousand.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    /// A draw in [0, 1), with 53 bits.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_sequence_and_ranges() {
        // The reference outputs of SplitMix64 seeded with 0.
        let mut g = SplitMix64::new(0);
        assert_eq!(g.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(g.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        let mut g = SplitMix64::new(7);
        for _ in 0..1000 {
            assert!(g.below(10) < 10);
            let u = g.unit();
            assert!((0.0..1.0).contains(&u));
        }
        assert_eq!(SplitMix64::new(3).below(0), 0);
    }
}

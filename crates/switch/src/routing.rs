//! Routing: which bank owns a card. Banks are configured with BIN ranges;
//! the switch routes a card number to the bank of the longest range that
//! contains it (`Switch::route`).

/// A range of card BINs owned by a bank: PANs whose first `len` digits, read as a
/// number, lie in `low..=high`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinRange {
    pub len: usize,
    pub low: u64,
    pub high: u64,
}

impl BinRange {
    /// `622202` (one prefix) or `621700-621799` (a range of equal-length prefixes).
    pub fn parse(s: &str) -> Option<BinRange> {
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let (a, b) = (a.trim(), b.trim());
        if a.is_empty()
            || a.len() != b.len()
            || a.len() > 11
            || !a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit())
        {
            return None;
        }
        let (low, high) = (a.parse().ok()?, b.parse().ok()?);
        (low <= high).then_some(BinRange {
            len: a.len(),
            low,
            high,
        })
    }

    pub fn contains(&self, pan: &[u8]) -> bool {
        if pan.len() < self.len || !pan[..self.len].iter().all(u8::is_ascii_digit) {
            return false;
        }
        let prefix = pan[..self.len]
            .iter()
            .fold(0u64, |acc, &d| acc * 10 + (d - b'0') as u64);
        (self.low..=self.high).contains(&prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_and_ranges() {
        let one = BinRange::parse("622202").unwrap();
        assert!(one.contains(b"6222020000000001"));
        assert!(!one.contains(b"6222030000000001"));
        let range = BinRange::parse("621700-621799").unwrap();
        assert!(range.contains(b"6217991234567890"));
        assert!(!range.contains(b"6218001234567890"));
        assert!(!range.contains(b"62179"));
        for bad in ["", "6217-621799", "621799-621700", "62a700", "123456789012"] {
            assert_eq!(BinRange::parse(bad), None, "{bad}");
        }
    }
}

//! Looking for card numbers in files: every form a card number could take
//! on disk, searched byte for byte.

use std::path::{Path, PathBuf};

/// Every form a card number could take in a file.
pub fn needles(pan: &str) -> Vec<Vec<u8>> {
    let digits = pan.as_bytes();
    let bcd = |padded: &[u8]| -> Vec<u8> {
        padded
            .chunks(2)
            .map(|pair| {
                let nibble = |b: u8| if b.is_ascii_digit() { b - b'0' } else { 0xF };
                (nibble(pair[0]) << 4) | nibble(*pair.get(1).unwrap_or(&b'F'))
            })
            .collect()
    };
    let mut left_padded = digits.to_vec();
    if left_padded.len() % 2 == 1 {
        left_padded.insert(0, b'0');
    }
    vec![
        digits.to_vec(),
        hex::encode(digits).into_bytes(),
        hex::encode_upper(digits).into_bytes(),
        bcd(digits),
        bcd(&left_padded),
    ]
}

/// (file, card) for every card found in any file under `dir`.
pub fn search(dir: &Path, cards: &[String]) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            for card in cards {
                if needles(card)
                    .iter()
                    .any(|n| bytes.windows(n.len()).any(|w| w == &n[..]))
                {
                    found.push((path.clone(), card.clone()));
                }
            }
        }
    }
    found
}

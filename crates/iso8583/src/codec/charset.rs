//! Character and digit encodings used on the wire: packed BCD, EBCDIC (code page 037)
//! and hexadecimal. Pure functions over byte slices; no allocation beyond the output
//! buffer the caller passes in.

use bytes::BufMut;

/// EBCDIC (code page 037) of the printable ASCII characters 0x20..=0x7E, in order.
const ASCII_TO_EBCDIC: [u8; 95] = [
    0x40, 0x5A, 0x7F, 0x7B, 0x5B, 0x6C, 0x50, 0x7D, 0x4D, 0x5D, 0x5C, 0x4E, 0x6B, 0x60, 0x4B, 0x61,
    0xF0, 0xF1, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8, 0xF9, 0x7A, 0x5E, 0x4C, 0x7E, 0x6E, 0x6F,
    0x7C, 0xC1, 0xC2, 0xC3, 0xC4, 0xC5, 0xC6, 0xC7, 0xC8, 0xC9, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6,
    0xD7, 0xD8, 0xD9, 0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xBA, 0xE0, 0xBB, 0xB0, 0x6D,
    0x79, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x91, 0x92, 0x93, 0x94, 0x95, 0x96,
    0x97, 0x98, 0x99, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7, 0xA8, 0xA9, 0xC0, 0x4F, 0xD0, 0xA1,
];

/// The inverse of [`ASCII_TO_EBCDIC`], built at compile time; 0 marks a byte that is not
/// a printable character.
const EBCDIC_TO_ASCII: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < ASCII_TO_EBCDIC.len() {
        table[ASCII_TO_EBCDIC[i] as usize] = 0x20 + i as u8;
        i += 1;
    }
    table
};

/// EBCDIC byte of a printable ASCII character; `None` for anything else.
#[inline]
pub fn ascii_to_ebcdic(c: u8) -> Option<u8> {
    if (0x20..=0x7e).contains(&c) {
        Some(ASCII_TO_EBCDIC[(c - 0x20) as usize])
    } else {
        None
    }
}

/// Printable ASCII character of an EBCDIC byte; `None` when it has none.
#[inline]
pub fn ebcdic_to_ascii(b: u8) -> Option<u8> {
    match EBCDIC_TO_ASCII[b as usize] {
        0 => None,
        c => Some(c),
    }
}

/// Value of one BCD nibble as a character: digits, and `=` for the track-2
/// separator nibble 0xD when `allow_separator`.
#[inline]
pub fn nibble_to_char(n: u8, allow_separator: bool) -> Option<u8> {
    match n {
        0..=9 => Some(b'0' + n),
        0xD if allow_separator => Some(b'='),
        _ => None,
    }
}

/// The BCD nibble of a character; `=` and `D` both map to the separator 0xD.
#[inline]
pub fn char_to_nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'=' | b'D' => Some(0xD),
        _ => None,
    }
}

/// Upper-case hexadecimal digit of a nibble.
#[inline]
pub fn hex_digit(n: u8) -> u8 {
    b"0123456789ABCDEF"[(n & 0xF) as usize]
}

/// Value of one hexadecimal character, either case.
#[inline]
pub fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'F' => Some(c - b'A' + 10),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Writes bytes as upper-case hexadecimal.
pub fn put_hex(out: &mut impl BufMut, bytes: &[u8]) {
    for &b in bytes {
        out.put_u8(hex_digit(b >> 4));
        out.put_u8(hex_digit(b));
    }
}

/// Upper-case hexadecimal string of some bytes.
pub fn to_hex(bytes: &[u8]) -> String {
    let mut s = Vec::with_capacity(bytes.len() * 2);
    put_hex(&mut s, bytes);
    // Only ASCII hex digits were written.
    String::from_utf8(s).expect("hex digits are ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ebcdic_round_trips_every_printable_character() {
        for c in 0x20..=0x7e {
            let e = ascii_to_ebcdic(c).unwrap();
            assert_eq!(ebcdic_to_ascii(e), Some(c), "char {c:#x}");
        }
        assert_eq!(ascii_to_ebcdic(b'0'), Some(0xF0));
        assert_eq!(ascii_to_ebcdic(b'A'), Some(0xC1));
        assert_eq!(ascii_to_ebcdic(b' '), Some(0x40));
        assert_eq!(ebcdic_to_ascii(0x00), None);
    }

    #[test]
    fn hex_helpers() {
        assert_eq!(to_hex(&[0x00, 0xAB, 0x7f]), "00AB7F");
        assert_eq!(hex_value(b'f'), Some(15));
        assert_eq!(hex_value(b'g'), None);
    }
}

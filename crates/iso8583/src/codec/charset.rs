//! Character and digit encodings used on the wire: packed BCD, EBCDIC (code pages 037
//! and 1047), Latin-1, GBK / GB 18030 (through `encoding_rs`) and hexadecimal. Pure
//! functions over byte slices; no allocation beyond the output buffer the caller passes
//! in.

use bytes::BufMut;
use encoding_rs::{DecoderResult, EncoderResult};

use crate::spec::Encoding;

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

/// Code page 1047 is 037 with `[`, `]` and `^` (and the non-ASCII `¬`, `Ý`, `¨`) moved.
const ASCII_TO_EBCDIC_1047: [u8; 95] = {
    let mut table = ASCII_TO_EBCDIC;
    table[(b'[' - 0x20) as usize] = 0xAD;
    table[(b']' - 0x20) as usize] = 0xBD;
    table[(b'^' - 0x20) as usize] = 0x5F;
    table
};

const EBCDIC_1047_TO_ASCII: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < ASCII_TO_EBCDIC_1047.len() {
        table[ASCII_TO_EBCDIC_1047[i] as usize] = 0x20 + i as u8;
        i += 1;
    }
    table
};

/// EBCDIC (code page 1047) byte of a printable ASCII character; `None` for anything else.
#[inline]
pub fn ascii_to_ebcdic_1047(c: u8) -> Option<u8> {
    if (0x20..=0x7e).contains(&c) {
        Some(ASCII_TO_EBCDIC_1047[(c - 0x20) as usize])
    } else {
        None
    }
}

/// Printable ASCII character of an EBCDIC (code page 1047) byte; `None` when it has none.
#[inline]
pub fn ebcdic_1047_to_ascii(b: u8) -> Option<u8> {
    match EBCDIC_1047_TO_ASCII[b as usize] {
        0 => None,
        c => Some(c),
    }
}

/// Where a text value cannot be converted: the byte offset in the input and that byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalid {
    pub index: usize,
    pub byte: u8,
}

/// The name of a charset in errors.
pub fn charset_name(encoding: Encoding) -> &'static str {
    match encoding {
        Encoding::Ascii => "ASCII",
        Encoding::Ebcdic => "EBCDIC",
        Encoding::Ebcdic1047 => "EBCDIC 1047",
        Encoding::Latin1 => "Latin-1",
        Encoding::Gbk => "GBK",
        Encoding::Gb18030 => "GB 18030",
        Encoding::Bcd => "BCD",
        Encoding::Binary => "binary",
        Encoding::Hex => "hex",
    }
}

/// The `encoding_rs` codec of a Chinese charset.
fn gb_codec(encoding: Encoding) -> &'static encoding_rs::Encoding {
    if encoding == Encoding::Gbk {
        encoding_rs::GBK
    } else {
        encoding_rs::GB18030
    }
}

/// GBK has no four-byte characters; the `encoding_rs` GBK decoder (the WHATWG one)
/// reads GB 18030's, which GBK could not write back.
fn reject_four_byte_sequences(raw: &[u8]) -> Result<(), Invalid> {
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            0x81..=0xFE if raw.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                return Err(Invalid {
                    index: i,
                    byte: raw[i],
                })
            }
            0x81..=0xFE => i += 2,
            _ => i += 1,
        }
    }
    Ok(())
}

/// Checks that `raw`, which decoded to `text`, is how the charset writes `text`.
/// The WHATWG decoders `encoding_rs` implements read two spellings of `€`: the
/// byte 80 and the pair A2 E3; the GBK encoder writes 80, the GB 18030 one A2 E3.
/// Taking the other spelling would change the field's bytes on the way back
/// (and a fixed-length field's length), so it is refused at its offset like any
/// byte not of the charset.
fn check_canonical(encoding: Encoding, raw: &[u8], text: &str) -> Result<(), Invalid> {
    let mut encoder = gb_codec(encoding).new_encoder();
    let mut at = 0;
    let mut one = [0u8; 4];
    for c in text.chars() {
        let spelled: &[u8] = if c.is_ascii() {
            one[0] = c as u8;
            &one[..1]
        } else {
            let mut utf8 = [0u8; 4];
            let (result, _, written) = encoder.encode_from_utf8_without_replacement(
                c.encode_utf8(&mut utf8),
                &mut one,
                false,
            );
            // A decoded character always has a spelling of at most 4 bytes.
            if result != EncoderResult::InputEmpty {
                return Err(Invalid {
                    index: at.min(raw.len().saturating_sub(1)),
                    byte: raw.get(at).copied().unwrap_or(0),
                });
            }
            &one[..written]
        };
        if raw.get(at..at + spelled.len()) != Some(spelled) {
            return Err(Invalid {
                index: at.min(raw.len().saturating_sub(1)),
                byte: raw.get(at).copied().unwrap_or(0),
            });
        }
        at += spelled.len();
    }
    Ok(())
}

/// Decodes wire text in a multi-byte or non-ASCII charset (Latin-1, GBK, GB 18030)
/// to UTF-8, appended to `out`. Bytes that are not valid in the charset are an error.
pub fn decode_wide(encoding: Encoding, raw: &[u8], out: &mut Vec<u8>) -> Result<(), Invalid> {
    match encoding {
        Encoding::Latin1 => {
            // Every byte is a character: U+0000..=U+00FF.
            for &b in raw {
                let mut buf = [0u8; 2];
                out.extend_from_slice(char::from(b).encode_utf8(&mut buf).as_bytes());
            }
            Ok(())
        }
        _ => {
            if encoding == Encoding::Gbk {
                reject_four_byte_sequences(raw)?;
            }
            let mut decoder = gb_codec(encoding).new_decoder_without_bom_handling();
            let start = out.len();
            let capacity = decoder
                .max_utf8_buffer_length_without_replacement(raw.len())
                .unwrap_or(raw.len() * 3);
            out.resize(start + capacity, 0);
            let (result, read, written) =
                decoder.decode_to_utf8_without_replacement(raw, &mut out[start..], true);
            match result {
                DecoderResult::InputEmpty => {
                    out.truncate(start + written);
                    // `out[start..]` is UTF-8: the decoder wrote it.
                    let text = std::str::from_utf8(&out[start..]).unwrap_or_default();
                    if let Err(e) = check_canonical(encoding, raw, text) {
                        out.truncate(start);
                        return Err(e);
                    }
                    Ok(())
                }
                DecoderResult::Malformed(bad, after) => {
                    out.truncate(start);
                    // What was read ends with the `bad` bytes, then `after` more.
                    let index = read
                        .saturating_sub(bad as usize + after as usize)
                        .min(raw.len().saturating_sub(1));
                    Err(Invalid {
                        index,
                        byte: raw[index],
                    })
                }
                DecoderResult::OutputFull => {
                    // Cannot happen: the buffer is sized for the worst case.
                    out.truncate(start);
                    Err(Invalid {
                        index: 0,
                        byte: raw.first().copied().unwrap_or(0),
                    })
                }
            }
        }
    }
}

/// Encodes a UTF-8 value into a multi-byte or non-ASCII charset (Latin-1, GBK,
/// GB 18030), appended to `out`. A value that is not UTF-8, or a character the charset
/// lacks, is an error at its byte offset in `value`.
pub fn encode_wide(encoding: Encoding, value: &[u8], out: &mut Vec<u8>) -> Result<(), Invalid> {
    let text = std::str::from_utf8(value).map_err(|e| Invalid {
        index: e.valid_up_to(),
        byte: value[e.valid_up_to()],
    })?;
    match encoding {
        Encoding::Latin1 => {
            for (index, c) in text.char_indices() {
                let byte = u8::try_from(u32::from(c)).map_err(|_| Invalid {
                    index,
                    byte: value[index],
                })?;
                out.push(byte);
            }
            Ok(())
        }
        _ => {
            let mut encoder = gb_codec(encoding).new_encoder();
            let start = out.len();
            let capacity = encoder
                .max_buffer_length_from_utf8_without_replacement(text.len())
                .unwrap_or(text.len() * 4);
            out.resize(start + capacity, 0);
            let (result, read, written) =
                encoder.encode_from_utf8_without_replacement(text, &mut out[start..], true);
            match result {
                EncoderResult::InputEmpty => {
                    out.truncate(start + written);
                    Ok(())
                }
                EncoderResult::Unmappable(c) => {
                    out.truncate(start);
                    let index = read - c.len_utf8();
                    Err(Invalid {
                        index,
                        byte: value[index],
                    })
                }
                EncoderResult::OutputFull => {
                    out.truncate(start);
                    Err(Invalid {
                        index: 0,
                        byte: value.first().copied().unwrap_or(0),
                    })
                }
            }
        }
    }
}

/// Wire bytes taken by the first `chars` characters of GBK / GB 18030 text (lead
/// byte 0x81..=0xFE starts a two-byte character, or in GB 18030 a four-byte one when
/// the next byte is a digit); `None` when `raw` holds fewer characters.
pub fn wide_prefix_len(encoding: Encoding, raw: &[u8], chars: usize) -> Option<usize> {
    if encoding == Encoding::Latin1 {
        return (chars <= raw.len()).then_some(chars);
    }
    let mut at = 0;
    for _ in 0..chars {
        let lead = *raw.get(at)?;
        at += match lead {
            0x81..=0xFE
                if encoding == Encoding::Gb18030
                    && raw.get(at + 1).is_some_and(u8::is_ascii_digit) =>
            {
                4
            }
            0x81..=0xFE => 2,
            _ => 1,
        };
    }
    (at <= raw.len()).then_some(at)
}

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

/// Value of one BCD nibble as a character: digits, and `separator` (`=` or `D`)
/// for the track-2 separator nibble 0xD; `separator` 0 allows none.
#[inline]
pub fn nibble_to_char(n: u8, separator: u8) -> Option<u8> {
    match n {
        0..=9 => Some(b'0' + n),
        0xD if separator != 0 => Some(separator),
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

    /// Every byte sequence a Chinese charset decodes is written back the same by
    /// its encoder: all one- and two-byte sequences, and for GB 18030 every
    /// four-byte one. A field's bytes never change in a round trip.
    #[test]
    fn gb_charsets_decode_only_what_they_write_back() {
        let round_trip = |encoding, raw: &[u8]| {
            let mut text = Vec::new();
            if decode_wide(encoding, raw, &mut text).is_ok() {
                let mut back = Vec::new();
                encode_wide(encoding, &text, &mut back).unwrap();
                assert_eq!(back, raw, "{encoding:?} {raw:02X?}");
            }
        };
        for encoding in [Encoding::Gbk, Encoding::Gb18030] {
            for a in 0..=0xFFu8 {
                round_trip(encoding, &[a]);
                for b in 0..=0xFFu8 {
                    round_trip(encoding, &[a, b]);
                }
            }
        }
        for a in 0x81..=0xFEu8 {
            for b in b'0'..=b'9' {
                for c in 0x81..=0xFEu8 {
                    for d in b'0'..=b'9' {
                        round_trip(Encoding::Gb18030, &[a, b, c, d]);
                    }
                }
            }
        }
    }

    /// The euro sign's other spelling is refused at its offset: A2 E3 in GBK
    /// (which writes 80), 80 in GB 18030 (which writes A2 E3).
    #[test]
    fn the_other_spelling_of_the_euro_sign_is_refused() {
        let mut out = Vec::new();
        let e = decode_wide(Encoding::Gbk, b"A\xA2\xE3", &mut out).unwrap_err();
        assert_eq!((e.index, e.byte), (1, 0xA2));
        let e = decode_wide(Encoding::Gb18030, b"AB\x80", &mut out).unwrap_err();
        assert_eq!((e.index, e.byte), (2, 0x80));
        assert!(out.is_empty());
        decode_wide(Encoding::Gbk, b"\x80", &mut out).unwrap();
        decode_wide(Encoding::Gb18030, b"\xA2\xE3", &mut out).unwrap();
        assert_eq!(out, "\u{20AC}\u{20AC}".as_bytes());
    }

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
        for c in 0x20..=0x7e {
            let e = ascii_to_ebcdic_1047(c).unwrap();
            assert_eq!(ebcdic_1047_to_ascii(e), Some(c), "char {c:#x}");
        }
        // The three printable characters where 1047 differs from 037.
        assert_eq!(ascii_to_ebcdic(b'['), Some(0xBA));
        assert_eq!(ascii_to_ebcdic_1047(b'['), Some(0xAD));
        assert_eq!(ascii_to_ebcdic_1047(b']'), Some(0xBD));
        assert_eq!(ascii_to_ebcdic_1047(b'^'), Some(0x5F));
    }

    #[test]
    fn wide_charsets_round_trip_and_name_the_bad_byte() {
        // 中国 in GBK is D6D0 B9FA.
        let mut out = Vec::new();
        encode_wide(Encoding::Gbk, "A中国".as_bytes(), &mut out).unwrap();
        assert_eq!(out, [0x41, 0xD6, 0xD0, 0xB9, 0xFA]);
        let mut back = Vec::new();
        decode_wide(Encoding::Gbk, &out, &mut back).unwrap();
        assert_eq!(back, "A中国".as_bytes());
        assert_eq!(wide_prefix_len(Encoding::Gbk, &out, 2), Some(3));
        // A lead byte followed by a byte no GBK character has.
        let err = decode_wide(Encoding::Gbk, &[0x41, 0x42, 0xD6, 0x7F], &mut back).unwrap_err();
        assert_eq!(err.index, 2);
        // GB 18030 carries what GBK cannot, in four bytes (U+1F600 is 9439FC36); GBK
        // refuses it.
        let mut g = Vec::new();
        encode_wide(Encoding::Gb18030, "\u{1F600}".as_bytes(), &mut g).unwrap();
        assert_eq!(g, [0x94, 0x39, 0xFC, 0x36]);
        assert_eq!(wide_prefix_len(Encoding::Gb18030, &g, 1), Some(4));
        let err = encode_wide(Encoding::Gbk, "x\u{1F600}".as_bytes(), &mut Vec::new());
        assert_eq!(err.unwrap_err().index, 1);
        let mut latin = Vec::new();
        encode_wide(Encoding::Latin1, "café".as_bytes(), &mut latin).unwrap();
        assert_eq!(latin, b"caf\xE9");
        assert_eq!(
            encode_wide(Encoding::Latin1, "中".as_bytes(), &mut latin)
                .unwrap_err()
                .index,
            0
        );
    }

    #[test]
    fn hex_helpers() {
        assert_eq!(to_hex(&[0x00, 0xAB, 0x7f]), "00AB7F");
        assert_eq!(hex_value(b'f'), Some(15));
        assert_eq!(hex_value(b'g'), None);
    }
}

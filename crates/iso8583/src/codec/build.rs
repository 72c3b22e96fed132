//! Spec-driven building of one message into a `BytesMut` (no framing, no I/O).
//! The bitmaps are computed from the fields present; on error nothing is left
//! half-written in the output buffer.

use bytes::{BufMut, Bytes, BytesMut};

use super::charset::{
    ascii_to_ebcdic, ascii_to_ebcdic_1047, char_to_nibble, charset_name, encode_wide, hex_digit,
    put_hex,
};
use super::error::EncodeError;
use super::message::Message;
use crate::spec::{
    digits_to_bytes, BitmapEncoding, ContentClass, Encoding, FieldSpec, LengthCount, LengthKind,
    Pad, SecondaryBitmap, Spec, MAX_FIELD, MAX_LENGTH_DIGITS,
};

fn put_bitmap(encoding: BitmapEncoding, out: &mut BytesMut, word: u64) {
    match encoding {
        BitmapEncoding::Binary => out.put_u64(word),
        BitmapEncoding::Hex => put_hex(out, &word.to_be_bytes()),
        BitmapEncoding::EbcdicHex => {
            for i in (0..16).rev() {
                let digit = hex_digit((word >> (4 * i)) as u8);
                // Hex digits are printable ASCII, which EBCDIC always has.
                out.put_u8(ascii_to_ebcdic(digit).unwrap_or(0));
            }
        }
    }
}

fn put_mti(spec: &Spec, msg: &Message, out: &mut BytesMut) -> Result<(), EncodeError> {
    let mti = msg.mti();
    if let Some(position) = mti.iter().position(|b| !b.is_ascii_digit()) {
        return Err(EncodeError::Unencodable {
            field: None,
            position,
            byte: mti[position],
            encoding: "MTI digits",
        });
    }
    match spec.mti_encoding {
        Encoding::Bcd => {
            out.put_u8(((mti[0] - b'0') << 4) | (mti[1] - b'0'));
            out.put_u8(((mti[2] - b'0') << 4) | (mti[3] - b'0'));
        }
        Encoding::Ebcdic => {
            for &c in mti {
                out.put_u8(0xF0 + (c - b'0'));
            }
        }
        _ => out.put_slice(mti),
    }
    Ok(())
}

fn put_length(field: &FieldSpec, digits: u8, count: usize, out: &mut BytesMut) {
    let bytes = digits_to_bytes(digits, field.length_encoding);
    let width = MAX_LENGTH_DIGITS as usize;
    match field.length_encoding {
        Encoding::Binary => {
            for i in (0..bytes).rev() {
                out.put_u8((count >> (8 * i)) as u8);
            }
        }
        Encoding::Bcd => {
            // An odd digit count is padded to whole bytes with a 0 nibble on the
            // `length_pad` side.
            let mut nibbles = [0u8; MAX_LENGTH_DIGITS as usize + 1];
            let n = bytes * 2;
            let (first, last) = match (digits % 2 == 1, field.length_pad) {
                (true, Pad::Right) => (0, n - 1),
                _ => (n - digits as usize, n),
            };
            let mut v = count;
            for d in nibbles[first..last].iter_mut().rev() {
                *d = (v % 10) as u8;
                v /= 10;
            }
            for pair in nibbles[..n].chunks_exact(2) {
                out.put_u8((pair[0] << 4) | pair[1]);
            }
        }
        encoding => {
            let radix = if encoding == Encoding::Hex { 16 } else { 10 };
            let mut v = count;
            let mut text = [0u8; MAX_LENGTH_DIGITS as usize];
            for d in text[..(digits as usize).min(width)].iter_mut().rev() {
                *d = hex_digit((v % radix) as u8);
                v /= radix;
            }
            for &c in &text[..(digits as usize).min(width)] {
                out.put_u8(match encoding {
                    // Digits are printable ASCII, the same in both code pages.
                    Encoding::Ebcdic | Encoding::Ebcdic1047 => ascii_to_ebcdic(c).unwrap_or(0),
                    _ => c,
                });
            }
        }
    }
}

fn unencodable(
    field: &FieldSpec,
    position: usize,
    byte: u8,
    encoding: &'static str,
) -> EncodeError {
    EncodeError::Unencodable {
        field: Some(field.number),
        position,
        byte,
        encoding,
    }
}

/// Packs the digits of `value` (starting at `offset` of the logical value) as BCD
/// with the field's pad nibble on its pad side.
fn pack_bcd(
    field: &FieldSpec,
    value: &[u8],
    offset: usize,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let separator = field.class == ContentClass::Z;
    let digits = &value[offset..];
    let nibble = |i: usize| -> Result<u8, EncodeError> {
        let c = digits[i];
        match char_to_nibble(c) {
            Some(0xD) if !separator => Err(unencodable(field, offset + i, c, "BCD digits")),
            Some(n) => Ok(n),
            None => Err(unencodable(field, offset + i, c, "BCD")),
        }
    };
    let units = digits.len();
    let odd = units % 2 == 1;
    let mut i = 0;
    if odd && field.pad == Pad::Left {
        out.put_u8((field.pad_nibble << 4) | nibble(0)?);
        i = 1;
    }
    while i + 1 < units {
        out.put_u8((nibble(i)? << 4) | nibble(i + 1)?);
        i += 2;
    }
    if odd && field.pad == Pad::Right {
        out.put_u8((nibble(units - 1)? << 4) | field.pad_nibble);
    }
    Ok(())
}

/// The value's length in the field's own units (wire bytes for Latin-1, GBK and
/// GB 18030 text, whose values are UTF-8), with the value encoded when that needs it.
fn wide_wire(field: &FieldSpec, value: &[u8]) -> Result<Vec<u8>, EncodeError> {
    let mut wire = Vec::with_capacity(value.len());
    encode_wide(field.encoding, value, &mut wire)
        .map_err(|e| unencodable(field, e.index, e.byte, charset_name(field.encoding)))?;
    Ok(wire)
}

fn put_field(field: &FieldSpec, value: &[u8], out: &mut BytesMut) -> Result<(), EncodeError> {
    let wide = if field.encoding.is_wide() {
        Some(wide_wire(field, value)?)
    } else {
        None
    };
    let units = match &wide {
        Some(wire) => wire.len(),
        None => field.units_of(value.len()),
    };
    match field.length {
        LengthKind::Fixed(n) if field.value_len_of(n) != value.len() && wide.is_none() => {
            return Err(EncodeError::WrongLength {
                field: field.number,
                expected: field.value_len_of(n),
                actual: value.len(),
            })
        }
        LengthKind::Fixed(n) if wide.is_some() && n != units => {
            return Err(EncodeError::WrongLength {
                field: field.number,
                expected: n,
                actual: units,
            })
        }
        LengthKind::Fixed(_) => {}
        LengthKind::Variable { max, .. }
            if units > max || value.is_empty() && field.class == ContentClass::XN =>
        {
            return Err(EncodeError::TooLong {
                field: field.number,
                max,
                actual: units,
            })
        }
        LengthKind::Variable { digits, .. } => {
            let count = match (field.length_counts, &wide) {
                (LengthCount::Characters, Some(_)) => {
                    // UTF-8 was checked by the encoding above.
                    std::str::from_utf8(value).map_or(units, |t| t.chars().count())
                }
                _ => field.count_of_units(units),
            };
            put_length(field, digits, count, out)
        }
    }
    if let Some(wire) = wide {
        out.put_slice(&wire);
        return Ok(());
    }
    match field.encoding {
        Encoding::Binary => out.put_slice(value),
        Encoding::Hex => put_hex(out, value),
        Encoding::Ascii => {
            if !value.is_ascii() {
                let i = value.iter().position(|&b| b >= 0x80).unwrap_or(0);
                return Err(unencodable(field, i, value[i], "ASCII"));
            }
            out.put_slice(value);
        }
        Encoding::Ebcdic | Encoding::Ebcdic1047 => {
            let table = if field.encoding == Encoding::Ebcdic {
                ascii_to_ebcdic
            } else {
                ascii_to_ebcdic_1047
            };
            for (i, &c) in value.iter().enumerate() {
                out.put_u8(
                    table(c)
                        .ok_or_else(|| unencodable(field, i, c, charset_name(field.encoding)))?,
                );
            }
        }
        Encoding::Bcd if field.class == ContentClass::XN => {
            // Checked above: an x+n value is never empty.
            let sign = value[0];
            if sign != b'C' && sign != b'D' {
                return Err(unencodable(field, 0, sign, "sign (C or D)"));
            }
            out.put_u8(sign);
            pack_bcd(field, value, 1, out)?;
        }
        Encoding::Bcd => pack_bcd(field, value, 0, out)?,
        // Handled above.
        Encoding::Latin1 | Encoding::Gbk | Encoding::Gb18030 => {}
    }
    Ok(())
}

/// Appends field `number` holding `value` to `out` as it is on the wire,
/// length prefix included.
pub(crate) fn build_field(
    spec: &Spec,
    number: u16,
    value: &[u8],
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let field = spec
        .field(number)
        .ok_or(EncodeError::UndefinedField { field: number })?;
    put_field(field, value, out)
}

/// Appends the wire form of `msg` to `out`. On error `out` is left as it was.
pub fn build(spec: &Spec, msg: &Message, out: &mut BytesMut) -> Result<(), EncodeError> {
    let mark = out.len();
    let result = build_inner(spec, msg, out);
    if result.is_err() {
        out.truncate(mark);
    }
    result
}

/// Builds `msg` into a new buffer.
pub fn build_bytes(spec: &Spec, msg: &Message) -> Result<Bytes, EncodeError> {
    let mut out = BytesMut::with_capacity(estimate(msg));
    build(spec, msg, &mut out)?;
    Ok(out.freeze())
}

/// A size that fits almost every message without reallocation.
fn estimate(msg: &Message) -> usize {
    4 + 24 + msg.fields().map(|(_, v)| v.len() * 2 + 4).sum::<usize>()
}

fn build_inner(spec: &Spec, msg: &Message, out: &mut BytesMut) -> Result<(), EncodeError> {
    let mut bitmaps = [0u64; 3];
    for (number, _) in msg.fields() {
        let n = number as usize;
        if n == 1 || (n == 65 && spec.tertiary_bitmap) {
            return Err(EncodeError::BitmapField { field: number });
        }
        if n == 0 || n > MAX_FIELD || (n > 128 && !spec.tertiary_bitmap) {
            return Err(EncodeError::OutOfRange { field: number });
        }
        if spec.field(number).is_none() {
            return Err(EncodeError::UndefinedField { field: number });
        }
        bitmaps[(n - 1) / 64] |= 1u64 << (63 - (n - 1) % 64);
    }
    if bitmaps[2] != 0 {
        bitmaps[1] |= 1 << 63;
    }
    if bitmaps[1] != 0 {
        bitmaps[0] |= 1 << 63;
    }
    if spec.secondary_bitmap == SecondaryBitmap::Always {
        bitmaps[0] |= 1 << 63;
    }
    out.reserve(estimate(msg) + spec.header_length);
    if spec.header_length > 0 {
        let header = match msg.header() {
            h if h.is_empty() => &spec.default_header,
            h => h,
        };
        if header.len() != spec.header_length {
            return Err(EncodeError::WrongHeader {
                expected: spec.header_length,
                actual: header.len(),
            });
        }
        out.put_slice(header);
    } else if !msg.header().is_empty() {
        return Err(EncodeError::WrongHeader {
            expected: 0,
            actual: msg.header().len(),
        });
    }
    put_mti(spec, msg, out)?;
    put_bitmap(spec.bitmap_encoding, out, bitmaps[0]);
    if bitmaps[0] & (1 << 63) != 0 {
        put_bitmap(spec.secondary_bitmap_encoding, out, bitmaps[1]);
    }
    if bitmaps[2] != 0 {
        put_bitmap(spec.secondary_bitmap_encoding, out, bitmaps[2]);
    }
    for (number, value) in msg.fields() {
        // Checked above: every present field is defined.
        let field = spec.field(number).expect("field checked above");
        put_field(field, value, out)?;
    }
    Ok(())
}

/// Appends one element laid out like a field (length prefix, then value): the
/// building block of composite values (`crate::composite`).
pub(crate) fn build_element(
    field: &FieldSpec,
    value: &[u8],
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    put_field(field, value, out)
}

/// Appends bitmap `which` (1 primary, 2 secondary) in `spec`'s encoding for
/// it, for bitmaps inside a field.
pub(crate) fn build_bitmap_word(spec: &Spec, which: u8, word: u64, out: &mut BytesMut) {
    let encoding = if which == 1 {
        spec.bitmap_encoding
    } else {
        spec.secondary_bitmap_encoding
    };
    put_bitmap(encoding, out, word)
}

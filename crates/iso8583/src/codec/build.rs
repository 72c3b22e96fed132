//! Spec-driven building of one message into a `BytesMut` (no framing, no I/O).
//! The bitmaps are computed from the fields present; on error nothing is left
//! half-written in the output buffer.

use bytes::{BufMut, Bytes, BytesMut};

use super::charset::{ascii_to_ebcdic, char_to_nibble, put_hex};
use super::error::EncodeError;
use super::message::Message;
use crate::spec::{
    digits_to_bytes, BitmapEncoding, ContentClass, Encoding, FieldSpec, LengthKind, Pad, Spec,
    MAX_FIELD,
};

fn put_bitmap(spec: &Spec, out: &mut BytesMut, word: u64) {
    match spec.bitmap_encoding {
        BitmapEncoding::Binary => out.put_u64(word),
        BitmapEncoding::Hex => put_hex(out, &word.to_be_bytes()),
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

fn put_length(field: &FieldSpec, digits: u8, units: usize, out: &mut BytesMut) {
    let bytes = digits_to_bytes(digits, field.length_encoding);
    match field.length_encoding {
        Encoding::Binary => {
            for i in (0..bytes).rev() {
                out.put_u8((units >> (8 * i)) as u8);
            }
        }
        Encoding::Bcd => {
            // Left-padded to a whole number of bytes.
            let mut digits_buf = [0u8; 4];
            let mut v = units;
            for d in digits_buf[..bytes * 2].iter_mut().rev() {
                *d = (v % 10) as u8;
                v /= 10;
            }
            for pair in digits_buf[..bytes * 2].chunks_exact(2) {
                out.put_u8((pair[0] << 4) | pair[1]);
            }
        }
        encoding => {
            let mut v = units;
            let mut text = [0u8; 4];
            for d in text[..digits as usize].iter_mut().rev() {
                *d = b'0' + (v % 10) as u8;
                v /= 10;
            }
            for &c in &text[..digits as usize] {
                out.put_u8(if encoding == Encoding::Ebcdic {
                    0xF0 + (c - b'0')
                } else {
                    c
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

fn put_field(field: &FieldSpec, value: &[u8], out: &mut BytesMut) -> Result<(), EncodeError> {
    let units = field.units_of(value.len());
    match field.length {
        LengthKind::Fixed(n) if field.value_len_of(n) != value.len() => {
            return Err(EncodeError::WrongLength {
                field: field.number,
                expected: field.value_len_of(n),
                actual: value.len(),
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
        LengthKind::Variable { digits, .. } => put_length(field, digits, units, out),
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
        Encoding::Ebcdic => {
            for (i, &c) in value.iter().enumerate() {
                out.put_u8(ascii_to_ebcdic(c).ok_or_else(|| unencodable(field, i, c, "EBCDIC"))?);
            }
        }
        Encoding::Bcd => {
            let separator = field.class == ContentClass::Z;
            let nibble = |i: usize| -> Result<u8, EncodeError> {
                let c = value[i];
                match char_to_nibble(c) {
                    Some(0xD) if !separator => Err(unencodable(field, i, c, "BCD digits")),
                    Some(n) => Ok(n),
                    None => Err(unencodable(field, i, c, "BCD")),
                }
            };
            let odd = units % 2 == 1;
            let mut i = 0;
            if odd && field.pad == Pad::Left {
                out.put_u8(nibble(0)?);
                i = 1;
            }
            while i + 1 < units {
                out.put_u8((nibble(i)? << 4) | nibble(i + 1)?);
                i += 2;
            }
            if odd && field.pad == Pad::Right {
                out.put_u8((nibble(units - 1)? << 4) | 0xF);
            }
        }
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
    out.reserve(estimate(msg));
    put_mti(spec, msg, out)?;
    put_bitmap(spec, out, bitmaps[0]);
    if bitmaps[1] != 0 {
        put_bitmap(spec, out, bitmaps[1]);
    }
    if bitmaps[2] != 0 {
        put_bitmap(spec, out, bitmaps[2]);
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

/// Appends one bitmap in `spec`'s bitmap encoding, for bitmaps inside a field.
pub(crate) fn build_bitmap_word(spec: &Spec, word: u64, out: &mut BytesMut) {
    put_bitmap(spec, out, word)
}

//! Spec-driven parsing of one message (no framing, no I/O).
//!
//! Invariants: parsing never panics, never loops more than once per bit of the
//! bitmaps, and never allocates more than a small multiple of the input's size (one
//! vector of field slots and, for non-ASCII specs, one decode buffer). ASCII and
//! binary field values are slices of the input `Bytes`.

use bytes::{Bytes, BytesMut};
use nom::bytes::complete::take;
use nom::IResult;

use super::charset::{
    charset_name, decode_wide, ebcdic_1047_to_ascii, ebcdic_to_ascii, hex_value, nibble_to_char,
    wide_prefix_len,
};
use super::error::{DecodeError, DecodeErrorKind, Location};
use super::message::{Message, Mti, MAX_PARSED_INPUT};
use crate::spec::{
    digits_to_bytes, BitmapEncoding, ContentClass, Encoding, FieldSpec, LengthCount, LengthKind,
    Pad, Spec,
};

/// What remains and what was taken.
type Taken<'a> = (&'a [u8], &'a [u8]);

/// Takes `n` bytes with nom, or reports (needed, available).
fn take_n(input: &[u8], n: usize) -> Result<Taken<'_>, (usize, usize)> {
    let r: IResult<&[u8], &[u8]> = take(n)(input);
    r.map_err(|_| (n, input.len()))
}

struct Cursor<'a> {
    /// The whole message, for offsets and the values' ranges.
    whole: &'a [u8],
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn offset(&self) -> usize {
        self.whole.len() - self.rest.len()
    }

    fn take(&mut self, n: usize, location: Location) -> Result<&'a [u8], DecodeError> {
        let offset = self.offset();
        let (rest, taken) = take_n(self.rest, n).map_err(|(needed, available)| DecodeError {
            location,
            offset,
            kind: DecodeErrorKind::Truncated { needed, available },
        })?;
        self.rest = rest;
        Ok(taken)
    }
}

fn bad_byte(location: Location, offset: usize, byte: u8, encoding: &'static str) -> DecodeError {
    DecodeError {
        location,
        offset,
        kind: DecodeErrorKind::BadByte { byte, encoding },
    }
}

fn parse_mti(spec: &Spec, cur: &mut Cursor<'_>) -> Result<Mti, DecodeError> {
    let start = cur.offset();
    let mut mti = [0u8; 4];
    match spec.mti_encoding {
        Encoding::Bcd => {
            let raw = cur.take(2, Location::Mti)?;
            for (i, &b) in raw.iter().enumerate() {
                for (j, nib) in [b >> 4, b & 0xF].into_iter().enumerate() {
                    mti[i * 2 + j] = nibble_to_char(nib, 0)
                        .ok_or_else(|| bad_byte(Location::Mti, start + i, b, "BCD digits"))?;
                }
            }
        }
        Encoding::Ebcdic => {
            let raw = cur.take(4, Location::Mti)?;
            for (i, &b) in raw.iter().enumerate() {
                mti[i] = ebcdic_to_ascii(b)
                    .filter(u8::is_ascii_digit)
                    .ok_or_else(|| bad_byte(Location::Mti, start + i, b, "EBCDIC digit"))?;
            }
        }
        _ => {
            let raw = cur.take(4, Location::Mti)?;
            for (i, &b) in raw.iter().enumerate() {
                if !b.is_ascii_digit() {
                    return Err(bad_byte(Location::Mti, start + i, b, "ASCII digit"));
                }
                mti[i] = b;
            }
        }
    }
    Ok(mti)
}

fn parse_bitmap(spec: &Spec, cur: &mut Cursor<'_>, which: u8) -> Result<u64, DecodeError> {
    let location = Location::Bitmap(which);
    let start = cur.offset();
    let encoding = if which == 1 {
        spec.bitmap_encoding
    } else {
        spec.secondary_bitmap_encoding
    };
    match encoding {
        BitmapEncoding::Binary => {
            let raw = cur.take(8, location)?;
            let mut word = [0u8; 8];
            word.copy_from_slice(raw);
            Ok(u64::from_be_bytes(word))
        }
        BitmapEncoding::Hex | BitmapEncoding::EbcdicHex => {
            let ebcdic = encoding == BitmapEncoding::EbcdicHex;
            let raw = cur.take(16, location)?;
            let mut word = 0u64;
            for (i, &c) in raw.iter().enumerate() {
                let v = if ebcdic {
                    ebcdic_to_ascii(c).and_then(hex_value)
                } else {
                    hex_value(c)
                };
                let v = v.ok_or_else(|| {
                    bad_byte(
                        location,
                        start + i,
                        c,
                        if ebcdic { "EBCDIC hex" } else { "hex" },
                    )
                })?;
                word = (word << 4) | v as u64;
            }
            Ok(word)
        }
    }
}

/// Reads a variable-length prefix and returns the count it announces (in what the
/// field's `length_counts` says).
#[inline(always)]
fn parse_length(
    field: &FieldSpec,
    digits: u8,
    max: usize,
    cur: &mut Cursor<'_>,
) -> Result<usize, DecodeError> {
    let location = Location::Field(field.number);
    let start = cur.offset();
    let prefix = field.prefix_name();
    let raw = cur.take(digits_to_bytes(digits, field.length_encoding), location)?;
    let bad = || DecodeError {
        location,
        offset: start,
        kind: DecodeErrorKind::BadLengthPrefix {
            prefix,
            raw: super::charset::to_hex(raw),
        },
    };
    let mut length = 0usize;
    match field.length_encoding {
        Encoding::Binary => {
            for &b in raw {
                length = (length << 8) | b as usize;
            }
        }
        Encoding::Bcd => {
            // An odd digit count leaves one pad nibble, 0, on the `length_pad` side.
            let nibbles = raw.len() * 2;
            let pad_at = match (digits % 2 == 1, field.length_pad) {
                (false, _) => usize::MAX,
                (true, Pad::Left) => 0,
                (true, Pad::Right) => nibbles - 1,
            };
            for i in 0..nibbles {
                let b = raw[i / 2];
                let nib = if i.is_multiple_of(2) { b >> 4 } else { b & 0xF };
                if i == pad_at {
                    if nib != 0 {
                        return Err(bad());
                    }
                    continue;
                }
                if nib > 9 {
                    return Err(bad());
                }
                length = length * 10 + nib as usize;
            }
        }
        Encoding::Hex => {
            for &b in raw {
                length = length * 16 + hex_value(b).ok_or_else(bad)? as usize;
            }
        }
        Encoding::Ebcdic | Encoding::Ebcdic1047 => {
            for &b in raw {
                let c = ebcdic_to_ascii(b)
                    .filter(u8::is_ascii_digit)
                    .ok_or_else(bad)?;
                length = length * 10 + (c - b'0') as usize;
            }
        }
        _ => {
            for &b in raw {
                if !b.is_ascii_digit() {
                    return Err(bad());
                }
                length = length * 10 + (b - b'0') as usize;
            }
        }
    }
    let max = field.count_of_units(max);
    if length > max {
        return Err(DecodeError {
            location,
            offset: start,
            kind: DecodeErrorKind::LengthExceedsMax {
                prefix,
                length,
                max,
            },
        });
    }
    Ok(length)
}

/// Where a parsed value lives until the message is assembled.
#[derive(Clone, Copy)]
enum Value {
    /// A range of the input.
    Input(usize, usize),
    /// A range of the decode buffer.
    Decoded(usize, usize),
}

/// How much of the wire a field's value takes, and for BCD how many digits it holds
/// (`None`: every nibble but a recognisable pad, when the prefix counts bytes).
struct Extent {
    wire_len: usize,
    digits: Option<usize>,
}

/// The extent of a value of `units` in the field's own units.
fn extent_of_units(field: &FieldSpec, units: usize) -> Extent {
    let wire_len = match field.encoding {
        Encoding::Bcd => units.div_ceil(2) + usize::from(field.class == ContentClass::XN),
        Encoding::Hex => units * 2,
        _ => field.value_len_of(units),
    };
    Extent {
        wire_len,
        digits: Some(units),
    }
}

/// The extent announced by a length prefix of `count`.
fn extent_of_count(
    field: &FieldSpec,
    count: usize,
    cur: &Cursor<'_>,
    prefix_offset: usize,
) -> Result<Extent, DecodeError> {
    let odd = || DecodeError {
        location: Location::Field(field.number),
        offset: prefix_offset,
        kind: DecodeErrorKind::OddLength {
            prefix: field.prefix_name(),
            length: count,
        },
    };
    match (field.length_counts, field.encoding) {
        (LengthCount::Units, _) => Ok(extent_of_units(field, count)),
        (LengthCount::Bytes, Encoding::Bcd) => Ok(Extent {
            wire_len: count,
            digits: None,
        }),
        (LengthCount::Nibbles, Encoding::Bcd) => Ok(extent_of_units(field, count)),
        (LengthCount::Bytes | LengthCount::Characters | LengthCount::Nibbles, Encoding::Hex) => {
            if count % 2 == 1 {
                return Err(odd());
            }
            Ok(Extent {
                wire_len: count,
                digits: None,
            })
        }
        (LengthCount::Characters, Encoding::Binary) | (LengthCount::Nibbles, _) => {
            if count % 2 == 1 {
                return Err(odd());
            }
            Ok(Extent {
                wire_len: count / 2,
                digits: None,
            })
        }
        (LengthCount::Characters, Encoding::Gbk | Encoding::Gb18030) => {
            // The wire length follows from the characters themselves; too few is truncation.
            let wire_len =
                wide_prefix_len(field.encoding, cur.rest, count).unwrap_or(cur.rest.len() + 1);
            Ok(Extent {
                wire_len,
                digits: None,
            })
        }
        // Bytes of binary or text, characters of single-byte text, digits of BCD.
        (LengthCount::Characters, Encoding::Bcd) => Ok(extent_of_units(field, count)),
        _ => Ok(Extent {
            wire_len: count,
            digits: None,
        }),
    }
}

/// Unpacks BCD digits into `out`, checking the pad nibble. `digits` is the number of
/// digits, or `None` for every nibble but a pad nibble `F` where the pad goes.
fn unpack_bcd(
    field: &FieldSpec,
    raw: &[u8],
    raw_start: usize,
    digits: Option<usize>,
    out: &mut BytesMut,
) -> Result<(), DecodeError> {
    let location = Location::Field(field.number);
    let nibbles = raw.len() * 2;
    let nibble = |i: usize| {
        let b = raw[i / 2];
        if i.is_multiple_of(2) {
            b >> 4
        } else {
            b & 0xF
        }
    };
    let pad_index = match field.pad {
        Pad::Left => 0,
        Pad::Right => nibbles.saturating_sub(1),
    };
    let padded = match digits {
        Some(d) => d % 2 == 1,
        // A pad nibble 0 cannot be told from a digit; F can.
        None => nibbles > 0 && field.pad_nibble > 9 && nibble(pad_index) == field.pad_nibble,
    };
    if padded && nibble(pad_index) != field.pad_nibble {
        return Err(DecodeError {
            location,
            offset: raw_start + pad_index / 2,
            kind: DecodeErrorKind::BadPadding {
                nibble: nibble(pad_index),
                expected: field.pad_nibble,
            },
        });
    }
    let separator = if field.class == ContentClass::Z {
        field.separator
    } else {
        0
    };
    let bad = |i: usize| {
        bad_byte(
            location,
            raw_start + i,
            raw[i],
            if separator != 0 {
                "BCD track-2"
            } else {
                "BCD digits"
            },
        )
    };
    // Whole bytes of two decimal digits are the common case; the pad nibble and a
    // separator only occur in the first or last byte, or in track data.
    let skip_first = padded && field.pad == Pad::Left;
    let skip_last = padded && field.pad == Pad::Right;
    let last = raw.len().wrapping_sub(1);
    for (i, &b) in raw.iter().enumerate() {
        let (hi, lo) = (b >> 4, b & 0xF);
        if hi <= 9 && lo <= 9 && !(i == 0 && skip_first) && !(i == last && skip_last) {
            out.extend_from_slice(&[b'0' + hi, b'0' + lo]);
            continue;
        }
        if !(i == 0 && skip_first) {
            out.extend_from_slice(&[nibble_to_char(hi, separator).ok_or_else(|| bad(i))?]);
        }
        if !(i == last && skip_last) {
            out.extend_from_slice(&[nibble_to_char(lo, separator).ok_or_else(|| bad(i))?]);
        }
    }
    Ok(())
}

// Inlined (as `parse_length`) into `parse` as when it was their only caller:
// `parse_element` must not cost the message parser its hot loop.
#[inline(always)]
fn parse_field(
    field: &FieldSpec,
    cur: &mut Cursor<'_>,
    arena: &mut BytesMut,
) -> Result<Value, DecodeError> {
    let location = Location::Field(field.number);
    let extent = match field.length {
        LengthKind::Fixed(n) => extent_of_units(field, n),
        LengthKind::Variable { digits, max } => {
            let prefix_offset = cur.offset();
            let count = parse_length(field, digits, max, cur)?;
            extent_of_count(field, count, cur, prefix_offset)?
        }
    };
    let wire_len = extent.wire_len;
    let start = cur.offset();
    let raw = cur.take(wire_len, location)?;
    match field.encoding {
        Encoding::Binary => Ok(Value::Input(start, start + wire_len)),
        Encoding::Ascii => {
            // The whole-slice check is vectorised; find the culprit only on failure.
            if !raw.is_ascii() {
                let i = raw.iter().position(|&b| b >= 0x80).unwrap_or(0);
                return Err(bad_byte(location, start + i, raw[i], "ASCII"));
            }
            Ok(Value::Input(start, start + wire_len))
        }
        Encoding::Ebcdic | Encoding::Ebcdic1047 => {
            let from = arena.len();
            let table = if field.encoding == Encoding::Ebcdic {
                ebcdic_to_ascii
            } else {
                ebcdic_1047_to_ascii
            };
            for (i, &b) in raw.iter().enumerate() {
                let c = table(b).ok_or_else(|| {
                    bad_byte(location, start + i, b, charset_name(field.encoding))
                })?;
                arena.extend_from_slice(&[c]);
            }
            Ok(Value::Decoded(from, arena.len()))
        }
        Encoding::Latin1 | Encoding::Gbk | Encoding::Gb18030 => {
            let from = arena.len();
            let mut text = Vec::with_capacity(raw.len() * 2);
            decode_wide(field.encoding, raw, &mut text).map_err(|e| {
                bad_byte(
                    location,
                    start + e.index,
                    e.byte,
                    charset_name(field.encoding),
                )
            })?;
            arena.extend_from_slice(&text);
            Ok(Value::Decoded(from, arena.len()))
        }
        Encoding::Hex => {
            let from = arena.len();
            for (i, pair) in raw.chunks_exact(2).enumerate() {
                let hi = hex_value(pair[0])
                    .ok_or_else(|| bad_byte(location, start + 2 * i, pair[0], "hex"))?;
                let lo = hex_value(pair[1])
                    .ok_or_else(|| bad_byte(location, start + 2 * i + 1, pair[1], "hex"))?;
                arena.extend_from_slice(&[(hi << 4) | lo]);
            }
            Ok(Value::Decoded(from, arena.len()))
        }
        Encoding::Bcd => {
            let from = arena.len();
            let (digits_raw, digits_start) = if field.class == ContentClass::XN {
                // The sign is one ASCII character before the packed digits.
                let sign = raw[0];
                if sign != b'C' && sign != b'D' {
                    return Err(bad_byte(location, start, sign, "sign (C or D)"));
                }
                arena.extend_from_slice(&[sign]);
                (&raw[1..], start + 1)
            } else {
                (raw, start)
            };
            unpack_bcd(field, digits_raw, digits_start, extent.digits, arena)?;
            Ok(Value::Decoded(from, arena.len()))
        }
    }
}

/// A message's start: its MTI and bitmaps (bitmap bits cleared).
struct Head {
    mti: Mti,
    bitmaps: [u64; 3],
    /// How many of `bitmaps` the message has.
    count: usize,
}

/// Reads the header (skipped), the MTI and the bitmaps.
#[inline(always)]
fn parse_head(spec: &Spec, cur: &mut Cursor<'_>) -> Result<Head, DecodeError> {
    if spec.header_length > 0 {
        cur.take(spec.header_length, Location::Header)?;
    }
    let mti = parse_mti(spec, cur)?;
    let mut bitmaps = [0u64; 3];
    bitmaps[0] = parse_bitmap(spec, cur, 1)?;
    let mut count = 1;
    if bitmaps[0] & (1 << 63) != 0 {
        bitmaps[1] = parse_bitmap(spec, cur, 2)?;
        count = 2;
        if spec.tertiary_bitmap && bitmaps[1] & (1 << 63) != 0 {
            bitmaps[2] = parse_bitmap(spec, cur, 3)?;
            count = 3;
        }
    }
    // Bitmap bits are not fields.
    bitmaps[0] &= !(1 << 63);
    if spec.tertiary_bitmap {
        bitmaps[1] &= !(1 << 63);
    }
    Ok(Head {
        mti,
        bitmaps,
        count,
    })
}

/// Parses every field `head`'s bitmaps name, in order, handing each to
/// `visit`; every byte of the input must be used. The one walk over the
/// fields of [`parse`] and [`parse_fields`], so that both accept the same
/// messages.
#[inline(always)]
fn parse_body(
    spec: &Spec,
    head: &Head,
    cur: &mut Cursor<'_>,
    arena: &mut BytesMut,
    mut visit: impl FnMut(u16, Value),
) -> Result<(), DecodeError> {
    for (word_index, &word) in head.bitmaps.iter().enumerate().take(head.count) {
        let mut bits = word;
        while bits != 0 {
            let lz = bits.leading_zeros();
            bits &= !(1u64 << (63 - lz));
            let number = (word_index as u32 * 64 + lz + 1) as u16;
            let field = spec.field(number).ok_or(DecodeError {
                location: Location::Field(number),
                offset: cur.offset(),
                kind: DecodeErrorKind::UndefinedField,
            })?;
            visit(number, parse_field(field, cur, arena)?);
        }
    }
    if !cur.rest.is_empty() {
        return Err(DecodeError {
            location: Location::Message,
            offset: cur.offset(),
            kind: DecodeErrorKind::TrailingBytes {
                count: cur.rest.len(),
            },
        });
    }
    Ok(())
}

/// The buffer the values of a message in `spec` are decoded into: none
/// for specs whose values are the input's bytes.
fn arena_for(spec: &Spec, input: &[u8]) -> BytesMut {
    if spec.needs_decoding() {
        BytesMut::with_capacity(input.len() * 2)
    } else {
        BytesMut::new()
    }
}

/// Parses one whole message (header, MTI, bitmaps, fields). Every byte must be used.
pub fn parse(spec: &Spec, input: Bytes) -> Result<Message, DecodeError> {
    if input.len() > MAX_PARSED_INPUT {
        return Err(DecodeError {
            location: Location::Message,
            offset: 0,
            kind: DecodeErrorKind::LengthExceedsMax {
                prefix: "message",
                length: input.len(),
                max: MAX_PARSED_INPUT,
            },
        });
    }
    let mut cur = Cursor {
        whole: &input,
        rest: &input[..],
    };
    let head = parse_head(spec, &mut cur)?;
    let present: u32 = head.bitmaps.iter().map(|w| w.count_ones()).sum();
    let mut message = Message::with_capacity(head.mti, present as usize);
    if spec.header_length > 0 {
        message.set_header(input.slice(..spec.header_length));
    }
    let mut arena = arena_for(spec, &input);
    parse_body(
        spec,
        &head,
        &mut cur,
        &mut arena,
        |number, value| match value {
            Value::Input(from, to) => message.push_parsed(number, false, from..to),
            Value::Decoded(from, to) => message.push_parsed(number, true, from..to),
        },
    )?;
    message.set_buffers(input, arena.freeze());
    Ok(message)
}

/// A few fields of one message, read by [`parse_fields`].
pub struct Fields<'a, const N: usize> {
    input: &'a [u8],
    arena: BytesMut,
    mti: Mti,
    numbers: [u16; N],
    values: [Option<Value>; N],
}

impl<const N: usize> Fields<'_, N> {
    pub fn mti(&self) -> &Mti {
        &self.mti
    }

    /// The value of field `number` (one of those asked for), as [`parse`]
    /// would give it; `None` when the message does not have it.
    pub fn get(&self, number: u16) -> Option<&[u8]> {
        let at = self.numbers.iter().position(|n| *n == number)?;
        match self.values[at]? {
            Value::Input(from, to) => self.input.get(from..to),
            Value::Decoded(from, to) => self.arena.get(from..to),
        }
    }
}

/// The fields `numbers` of the message `input`, without making a
/// [`Message`] of all of them: for reading a field or two of many messages.
/// The whole message is checked as [`parse`] checks it (every field, every
/// byte used): it refuses exactly the messages `parse` refuses, and a field's
/// value is the one `parse` gives.
pub fn parse_fields<'a, const N: usize>(
    spec: &Spec,
    input: &'a [u8],
    numbers: [u16; N],
) -> Result<Fields<'a, N>, DecodeError> {
    let mut cur = Cursor {
        whole: input,
        rest: input,
    };
    let head = parse_head(spec, &mut cur)?;
    let mut arena = arena_for(spec, input);
    let mut values = [None; N];
    parse_body(spec, &head, &mut cur, &mut arena, |number, value| {
        if let Some(at) = numbers.iter().position(|n| *n == number) {
            values[at] = Some(value);
        }
    })?;
    Ok(Fields {
        input,
        arena,
        mti: head.mti,
        numbers,
        values,
    })
}

/// Parses one element laid out like a field (length prefix, then value) at the
/// start of `input`: the building block of composite values (`crate::composite`).
/// Returns the logical value and how many bytes of `input` it used; error offsets
/// count from the start of `input`.
pub(crate) fn parse_element(
    field: &FieldSpec,
    input: &Bytes,
) -> Result<(Bytes, usize), DecodeError> {
    let mut cur = Cursor {
        whole: input,
        rest: &input[..],
    };
    let mut arena = BytesMut::new();
    let value = match parse_field(field, &mut cur, &mut arena)? {
        Value::Input(from, to) => input.slice(from..to),
        Value::Decoded(from, to) => arena.freeze().slice(from..to),
    };
    Ok((value, cur.offset()))
}

/// Parses bitmap `which` (1 primary, 2 secondary) in `spec`'s bitmap encoding at
/// the start of `input`: for bitmaps inside a field (`crate::composite`).
/// Returns the bitmap and how many bytes it used.
pub(crate) fn parse_bitmap_word(
    spec: &Spec,
    input: &Bytes,
    which: u8,
) -> Result<(u64, usize), DecodeError> {
    let mut cur = Cursor {
        whole: input,
        rest: &input[..],
    };
    let word = parse_bitmap(spec, &mut cur, which)?;
    Ok((word, cur.offset()))
}

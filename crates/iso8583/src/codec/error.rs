//! Codec errors. Every one names where (MTI, which bitmap, which field), at which byte
//! offset of the message, and why, e.g.
//! `field 35: LL length 41 exceeds maximum 37 at offset 58`.

use std::fmt;

/// The part of a message an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// The spec's header before the MTI.
    Header,
    Mti,
    /// Bitmap 1 (primary), 2 (secondary) or 3 (tertiary).
    Bitmap(u8),
    Field(u16),
    /// The message as a whole (e.g. bytes left over after the last field).
    Message,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Header => f.write_str("header"),
            Location::Mti => f.write_str("MTI"),
            Location::Bitmap(1) => f.write_str("primary bitmap"),
            Location::Bitmap(2) => f.write_str("secondary bitmap"),
            Location::Bitmap(_) => f.write_str("tertiary bitmap"),
            Location::Field(n) => write!(f, "field {n}"),
            Location::Message => f.write_str("message"),
        }
    }
}

/// Why a message could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeErrorKind {
    /// The input ends before the element does.
    Truncated { needed: usize, available: usize },
    /// A variable-length prefix announces more than the field's maximum.
    LengthExceedsMax {
        prefix: &'static str,
        length: usize,
        max: usize,
    },
    /// A length prefix that is not a number in its encoding (raw bytes in hex).
    BadLengthPrefix { prefix: &'static str, raw: String },
    /// A byte that is not valid in the element's encoding.
    BadByte { byte: u8, encoding: &'static str },
    /// The padding nibble of an odd-length BCD value is not the one the spec declares.
    BadPadding { nibble: u8, expected: u8 },
    /// A length prefix announcing half a byte (an odd count of hex characters or nibbles).
    OddLength { prefix: &'static str, length: usize },
    /// The bitmap announces a field the spec does not define.
    UndefinedField,
    /// Bytes left after the last field announced by the bitmaps.
    TrailingBytes { count: usize },
}

/// A parse failure: where, at which byte offset, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub location: Location,
    pub offset: usize,
    pub kind: DecodeErrorKind,
}

impl DecodeError {
    /// The field number, when the error is about a field.
    pub fn field(&self) -> Option<u16> {
        match self.location {
            Location::Field(n) => Some(n),
            _ => None,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.location)?;
        match &self.kind {
            DecodeErrorKind::Truncated { needed, available } => write!(
                f,
                "needs {needed} bytes but only {available} remain at offset {}",
                self.offset
            ),
            DecodeErrorKind::LengthExceedsMax {
                prefix,
                length,
                max,
            } => write!(
                f,
                "{prefix} length {length} exceeds maximum {max} at offset {}",
                self.offset
            ),
            DecodeErrorKind::BadLengthPrefix { prefix, raw } => write!(
                f,
                "{prefix} length prefix {raw} is not a valid length at offset {}",
                self.offset
            ),
            DecodeErrorKind::BadByte { byte, encoding } => write!(
                f,
                "byte {byte:02X} is not valid {encoding} at offset {}",
                self.offset
            ),
            DecodeErrorKind::BadPadding { nibble, expected } => write!(
                f,
                "BCD pad nibble {nibble:X} is not the declared {expected:X} at offset {}",
                self.offset
            ),
            DecodeErrorKind::OddLength { prefix, length } => write!(
                f,
                "{prefix} length {length} counts half a byte at offset {}",
                self.offset
            ),
            DecodeErrorKind::UndefinedField => write!(
                f,
                "present in the bitmap but not defined by the spec (data at offset {})",
                self.offset
            ),
            DecodeErrorKind::TrailingBytes { count } => write!(
                f,
                "{count} bytes left after the last field at offset {}",
                self.offset
            ),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Why a message could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncodeError {
    /// The spec does not define this field.
    UndefinedField { field: u16 },
    /// A fixed-length field whose value has the wrong length.
    WrongLength {
        field: u16,
        expected: usize,
        actual: usize,
    },
    /// A variable-length field whose value is longer than its maximum.
    TooLong {
        field: u16,
        max: usize,
        actual: usize,
    },
    /// A character that the field's encoding cannot represent.
    Unencodable {
        field: Option<u16>,
        position: usize,
        byte: u8,
        encoding: &'static str,
    },
    /// A header whose length is not the spec's `header_length`.
    WrongHeader { expected: usize, actual: usize },
    /// Field 1 or 65/129 bitmaps are computed, not set.
    BitmapField { field: u16 },
    /// A field number outside 2..=192, or above 128 without a tertiary bitmap.
    OutOfRange { field: u16 },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::UndefinedField { field } => {
                write!(f, "field {field}: not defined by the spec")
            }
            EncodeError::WrongLength {
                field,
                expected,
                actual,
            } => write!(
                f,
                "field {field}: fixed length {expected}, value has {actual}"
            ),
            EncodeError::TooLong { field, max, actual } => {
                write!(f, "field {field}: length {actual} exceeds maximum {max}")
            }
            EncodeError::Unencodable {
                field,
                position,
                byte,
                encoding,
            } => {
                match field {
                    Some(n) => write!(f, "field {n}: ")?,
                    None => write!(f, "MTI: ")?,
                }
                write!(
                    f,
                    "character {byte:#04x} at position {position} cannot be encoded as {encoding}"
                )
            }
            EncodeError::WrongHeader { expected, actual } => write!(
                f,
                "header: the spec's header is {expected} bytes, the message's {actual}"
            ),
            EncodeError::BitmapField { field } => write!(
                f,
                "field {field}: is a bitmap, computed when the message is built"
            ),
            EncodeError::OutOfRange { field } => {
                write!(f, "field {field}: outside the fields this spec can carry")
            }
        }
    }
}

impl std::error::Error for EncodeError {}

//! Errors inside a field's value: which field, which subfield (a path such as
//! `70.5A` when subfields nest), at which offset of the field's value, and why.

use std::fmt;

use crate::codec::{DecodeError, DecodeErrorKind, EncodeError, Location};

/// Why the subfields of a value could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubfieldErrorKind {
    /// The subfield's own length prefix or characters are wrong, as they would be
    /// for a field.
    Element(DecodeErrorKind),
    /// The value ends inside a tag, a length or a value.
    Truncated { needed: usize, available: usize },
    /// A tag that is not well formed (raw bytes in hex).
    BadTag { raw: String, reason: &'static str },
    /// A BER-TLV length that is not one of the accepted forms (raw bytes in hex).
    BadLength { raw: String, reason: &'static str },
    /// A tag or subfield number the spec does not define.
    Undefined,
    /// A tag given twice at the same level.
    Duplicate,
    /// A tag whose format is fixed, with a value of another length.
    WrongLength { expected: usize, actual: usize },
    /// Constructed BER-TLV tags nested deeper than the spec allows.
    TooDeep { limit: usize },
    /// Bytes left after the last subfield.
    TrailingBytes { count: usize },
    /// Bit 1 announces a second bitmap that has no bit set.
    EmptySecondaryBitmap,
}

/// A value whose subfields cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubfieldError {
    pub field: u16,
    /// Keys from the outermost subfield inward; empty when the error is about
    /// the value as a whole.
    pub path: Vec<String>,
    /// Byte offset in the field's logical value.
    pub offset: usize,
    pub kind: SubfieldErrorKind,
}

impl SubfieldError {
    pub(crate) fn new(key: Option<&str>, offset: usize, kind: SubfieldErrorKind) -> Self {
        SubfieldError {
            field: 0,
            path: key.map(|k| vec![k.to_string()]).unwrap_or_default(),
            offset,
            kind,
        }
    }

    /// An error of the codec on one element that starts at `base`.
    pub(crate) fn element(key: &str, base: usize, e: DecodeError) -> Self {
        Self::new(
            Some(key),
            base + e.offset,
            SubfieldErrorKind::Element(e.kind),
        )
    }

    /// The same error seen from the enclosing subfield `key`, whose value starts
    /// at `base`.
    pub(crate) fn within(mut self, key: &str, base: usize) -> Self {
        self.path.insert(0, key.to_string());
        self.offset += base;
        self
    }

    /// The path as written in messages: `9F26`, `70.5A`, `3`.
    pub fn path_str(&self) -> String {
        self.path.join(".")
    }
}

impl fmt::Display for SubfieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "field {}", self.field)?;
        if !self.path.is_empty() {
            write!(f, ", subfield {}", self.path_str())?;
        }
        f.write_str(": ")?;
        match &self.kind {
            SubfieldErrorKind::Element(kind) => {
                // The codec words it; its offset is rewritten below as ours.
                let text = DecodeError {
                    location: Location::Message,
                    offset: self.offset,
                    kind: kind.clone(),
                }
                .to_string();
                let text = text.strip_prefix("message: ").unwrap_or(&text);
                let suffix = format!(" at offset {}", self.offset);
                f.write_str(text.strip_suffix(&suffix).unwrap_or(text))?;
            }
            SubfieldErrorKind::Truncated { needed, available } => {
                write!(f, "needs {needed} bytes but only {available} remain")?
            }
            SubfieldErrorKind::BadTag { raw, reason } => write!(f, "tag {raw}: {reason}")?,
            SubfieldErrorKind::BadLength { raw, reason } => write!(f, "length {raw}: {reason}")?,
            SubfieldErrorKind::Undefined => f.write_str("not defined by the spec")?,
            SubfieldErrorKind::Duplicate => f.write_str("present twice")?,
            SubfieldErrorKind::WrongLength { expected, actual } => {
                write!(f, "fixed length {expected}, value has {actual}")?
            }
            SubfieldErrorKind::TooDeep { limit } => {
                write!(f, "constructed tags nest deeper than {limit} levels")?
            }
            SubfieldErrorKind::TrailingBytes { count } => {
                write!(f, "{count} bytes left after the last subfield")?
            }
            SubfieldErrorKind::EmptySecondaryBitmap => {
                f.write_str("a second bitmap is announced but has no bit set")?
            }
        }
        write!(f, " at offset {} of the field's value", self.offset)
    }
}

impl std::error::Error for SubfieldError {}

/// Subfields that cannot be encoded into a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubfieldEncodeError {
    pub field: u16,
    /// Keys from the outermost subfield inward.
    pub path: Vec<String>,
    pub reason: String,
}

impl SubfieldEncodeError {
    pub(crate) fn new(key: &str, reason: impl Into<String>) -> Self {
        SubfieldEncodeError {
            field: 0,
            path: vec![key.to_string()],
            reason: reason.into(),
        }
    }

    /// An error of the codec on one element (its text without the codec's
    /// internal field number).
    pub(crate) fn element(key: &str, e: EncodeError) -> Self {
        let text = e.to_string();
        let reason = text.split_once(": ").map_or(text.as_str(), |(_, r)| r);
        Self::new(key, reason)
    }

    /// The same error seen from the enclosing subfield `key`.
    pub(crate) fn within(mut self, key: &str) -> Self {
        self.path.insert(0, key.to_string());
        self
    }
}

impl fmt::Display for SubfieldEncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "field {}", self.field)?;
        if !self.path.is_empty() {
            write!(f, ", subfield {}", self.path.join("."))?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for SubfieldEncodeError {}

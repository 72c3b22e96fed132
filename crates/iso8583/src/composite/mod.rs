//! Composite values: subfields inside one field's value.
//!
//! A spec can say that a field's value is made of subfields (the `subfields` key of
//! a field, specs/README.md), in one of four layouts:
//!
//! - `fixed` ([`fixed`]): subfields one after another in a set order, each laid
//!   out like a field (fixed length, or a length prefix); trailing subfields may
//!   be absent (the CUP field 60 style);
//! - `tlv` ([`tlv`]): tag, length, value, with the tag's size and encoding and the
//!   length's digits and encoding configurable (the CUP field 59 style);
//! - `ber-tlv` ([`ber`]): BER-TLV as EMV uses it in field 55, named from the EMV
//!   tag dictionary ([`emv_tags`]), constructed tags nesting;
//! - `bitmap` ([`nested`]): a message of its own inside the field, a bitmap then
//!   the subfields it announces (Postilion's field 127).
//!
//! The codec never looks inside a field: a message keeps every field's flat
//! logical value, so parsing and building cost the same with or without
//! subfields. [`Composite::decode`] is a view computed on demand from that value,
//! and [`Composite::encode`] turns subfields back into the flat value to set on a
//! message. Encoding what was decoded gives back the same value byte for byte.
//!
//! Decoding never panics, recurses only as deep as the spec nests subfields (and
//! BER-TLV constructed tags at most `max_depth` levels), and allocates at most a
//! small multiple of the value's size.

pub mod ber;
mod compile;
mod elements;
pub mod emv_tags;
mod error;
pub mod fixed;
pub mod nested;
pub mod tlv;

use bytes::Bytes;

pub(crate) use compile::compile;
pub use error::{SubfieldEncodeError, SubfieldError, SubfieldErrorKind};

/// The subfields of one value, in the order they are on the wire. Keys are how
/// subfields are named in JSON: the position from 1 (`fixed`), the subfield
/// number (`bitmap`), the tag as text (`tlv`; hex when the tag is binary) or the
/// tag in upper-case hex (`ber-tlv`).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Subfields {
    entries: Vec<(String, SubValue)>,
}

/// One subfield's value: its logical bytes (digits and text as ASCII, binary as
/// is), or subfields of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubValue {
    Value(Bytes),
    Subfields(Subfields),
}

impl SubValue {
    /// A flat value.
    pub fn value(bytes: impl Into<Bytes>) -> Self {
        SubValue::Value(bytes.into())
    }
}

impl std::fmt::Debug for Subfields {
    /// Keys and lengths only, never values: a stray `{:?}` must not leak card
    /// data (EMV tags 57 and 5A carry the card number).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut map = f.debug_map();
        for (key, value) in &self.entries {
            match value {
                SubValue::Value(v) => map.entry(key, &v.len()),
                SubValue::Subfields(s) => map.entry(key, s),
            };
        }
        map.finish()
    }
}

impl Subfields {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a subfield after those already present.
    pub fn push(&mut self, key: impl Into<String>, value: SubValue) -> &mut Self {
        self.entries.push((key.into(), value));
        self
    }

    /// The subfield named `key`, if present.
    pub fn get(&self, key: &str) -> Option<&SubValue> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Subfields in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &SubValue)> + '_ {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// What a spec says about one subfield: for display, and for reading JSON back.
#[derive(Debug, Clone, Copy)]
pub struct Element<'a> {
    /// Its name (empty for a BER-TLV tag the EMV dictionary does not know).
    pub name: &'a str,
    /// Binary data: shown and read as hex.
    pub binary: bool,
    /// Card data: masked in human-readable output.
    pub sensitive: bool,
    /// Its own subfields, when it has any.
    pub subfields: Option<&'a Composite>,
}

/// A field's subfield layout, compiled from the spec.
#[derive(Debug, Clone)]
pub struct Composite {
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Fixed(fixed::Fixed),
    Tlv(tlv::Tlv),
    Ber(ber::Ber),
    Bitmap(nested::Bitmap),
}

impl Composite {
    /// The layout's name as written in specs: `fixed`, `tlv`, `ber-tlv`, `bitmap`.
    pub fn kind(&self) -> &'static str {
        match self.kind {
            Kind::Fixed(_) => "fixed",
            Kind::Tlv(_) => "tlv",
            Kind::Ber(_) => "ber-tlv",
            Kind::Bitmap(_) => "bitmap",
        }
    }

    /// The subfields of `value`, the logical value of field `field` (which the
    /// errors name).
    pub fn decode(&self, field: u16, value: &Bytes) -> Result<Subfields, SubfieldError> {
        self.decode_value(value).map_err(|mut e| {
            e.field = field;
            e
        })
    }

    /// The flat logical value of field `field` holding `subfields`.
    pub fn encode(&self, field: u16, subfields: &Subfields) -> Result<Bytes, SubfieldEncodeError> {
        self.encode_value(subfields).map_err(|mut e| {
            e.field = field;
            e
        })
    }

    /// What the spec says about the subfield named `key`; `None` when this layout
    /// has no such subfield.
    pub fn element(&self, key: &str) -> Option<Element<'_>> {
        match &self.kind {
            Kind::Fixed(k) => k.element(key),
            Kind::Tlv(k) => k.element(key),
            Kind::Ber(k) => k.element(self, key),
            Kind::Bitmap(k) => k.element(key),
        }
    }

    pub(crate) fn decode_value(&self, value: &Bytes) -> Result<Subfields, SubfieldError> {
        match &self.kind {
            Kind::Fixed(k) => k.decode(value),
            Kind::Tlv(k) => k.decode(value),
            Kind::Ber(k) => k.decode(value),
            Kind::Bitmap(k) => k.decode(value),
        }
    }

    pub(crate) fn encode_value(&self, subfields: &Subfields) -> Result<Bytes, SubfieldEncodeError> {
        match &self.kind {
            Kind::Fixed(k) => k.encode(subfields),
            Kind::Tlv(k) => k.encode(subfields),
            Kind::Ber(k) => k.encode(subfields),
            Kind::Bitmap(k) => k.encode(subfields),
        }
    }
}

/// Rejects a key given twice: JSON cannot say it, and a value holding it could
/// not be shown as subfields without losing one.
fn check_unique(subfields: &Subfields) -> Result<(), SubfieldEncodeError> {
    let mut seen = std::collections::HashSet::with_capacity(subfields.len());
    for (key, _) in subfields.iter() {
        if !seen.insert(key) {
            return Err(SubfieldEncodeError::new(key, "given twice"));
        }
    }
    Ok(())
}

/// Rejects bytes after the last subfield a layout reads up to `pos`.
fn all_used(value: &Bytes, pos: usize) -> Result<(), SubfieldError> {
    if pos < value.len() {
        return Err(SubfieldError::new(
            None,
            pos,
            SubfieldErrorKind::TrailingBytes {
                count: value.len() - pos,
            },
        ));
    }
    Ok(())
}

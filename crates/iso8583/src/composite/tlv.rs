//! `tlv`: tag, length, value, repeated to the end of the field (the private
//! fields of the CUP networks, e.g. field 59's `A2` + `LLL` + value). The tag
//! is a set number of characters or bytes; the length is a prefix of a set
//! number of digits in the usual length encodings, counting the value's units;
//! the value is laid out as its tag's definition says. Tags may come in any
//! order; each at most once.

use std::collections::HashSet;

use bytes::{BufMut, Bytes, BytesMut};

use super::elements::Elements;
use super::{
    check_unique, Element, SubfieldEncodeError, SubfieldError, SubfieldErrorKind, Subfields,
};
use crate::codec::charset::{ascii_to_ebcdic, ebcdic_to_ascii, hex_value, to_hex};

/// How a tag is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagEncoding {
    /// Printable ASCII characters; the key is the text.
    Ascii,
    /// EBCDIC characters; the key is the text.
    Ebcdic,
    /// Raw bytes; the key is their upper-case hex.
    Binary,
}

/// One defined tag: its key, element number, and the length its format fixes.
#[derive(Debug, Clone)]
pub(crate) struct TagDef {
    pub(crate) key: String,
    pub(crate) number: u16,
    pub(crate) exact: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct Tlv {
    /// Characters (or bytes, for binary tags) per tag.
    pub(crate) tag_len: usize,
    pub(crate) tag_encoding: TagEncoding,
    pub(crate) tags: Vec<TagDef>,
    /// The definition used for tags not listed, if undefined tags are allowed.
    pub(crate) other: Option<TagDef>,
    pub(crate) elements: Elements,
}

impl Tlv {
    /// The key of a tag as written on the wire.
    fn key_of(&self, raw: &[u8]) -> Option<String> {
        match self.tag_encoding {
            TagEncoding::Ascii => raw
                .iter()
                .all(u8::is_ascii_graphic)
                .then(|| raw.iter().map(|&b| b as char).collect()),
            TagEncoding::Ebcdic => raw
                .iter()
                .map(|&b| {
                    ebcdic_to_ascii(b)
                        .filter(u8::is_ascii_graphic)
                        .map(char::from)
                })
                .collect(),
            TagEncoding::Binary => Some(to_hex(raw)),
        }
    }

    /// The wire form of a key, if it is a well-formed tag.
    fn wire_of(&self, key: &str) -> Option<Vec<u8>> {
        let k = key.as_bytes();
        let raw: Vec<u8> = match self.tag_encoding {
            TagEncoding::Ascii => k.iter().all(u8::is_ascii_graphic).then(|| k.to_vec())?,
            TagEncoding::Ebcdic => k
                .iter()
                .map(|&c| ascii_to_ebcdic(c).filter(|_| c.is_ascii_graphic()))
                .collect::<Option<_>>()?,
            TagEncoding::Binary => k
                .chunks(2)
                .map(|p| match p {
                    [hi, lo] => Some((hex_value(*hi)? << 4) | hex_value(*lo)?),
                    _ => None,
                })
                .collect::<Option<_>>()?,
        };
        (raw.len() == self.tag_len).then_some(raw)
    }

    fn lookup(&self, key: &str) -> Option<&TagDef> {
        let canonical = match self.tag_encoding {
            TagEncoding::Binary => key.to_ascii_uppercase(),
            _ => key.to_string(),
        };
        self.tags
            .iter()
            .find(|t| t.key == canonical)
            .or(self.other.as_ref())
    }

    pub(crate) fn decode(&self, value: &Bytes) -> Result<Subfields, SubfieldError> {
        let mut out = Subfields::new();
        let mut seen = HashSet::new();
        let mut pos = 0;
        while pos < value.len() {
            let available = value.len() - pos;
            if available < self.tag_len {
                return Err(SubfieldError::new(
                    None,
                    pos,
                    SubfieldErrorKind::Truncated {
                        needed: self.tag_len,
                        available,
                    },
                ));
            }
            let raw = &value[pos..pos + self.tag_len];
            let key = self.key_of(raw).ok_or_else(|| {
                SubfieldError::new(
                    None,
                    pos,
                    SubfieldErrorKind::BadTag {
                        raw: to_hex(raw),
                        reason: "not printable text in the tag encoding",
                    },
                )
            })?;
            let def = self
                .lookup(&key)
                .ok_or_else(|| SubfieldError::new(Some(&key), pos, SubfieldErrorKind::Undefined))?;
            if !seen.insert(key.clone()) {
                return Err(SubfieldError::new(
                    Some(&key),
                    pos,
                    SubfieldErrorKind::Duplicate,
                ));
            }
            let at_length = pos + self.tag_len;
            pos = at_length
                + self
                    .elements
                    .decode(def.number, key, value, at_length, def.exact, &mut out)?;
        }
        Ok(out)
    }

    pub(crate) fn encode(&self, subfields: &Subfields) -> Result<Bytes, SubfieldEncodeError> {
        check_unique(subfields)?;
        let mut out = BytesMut::new();
        for (key, value) in subfields.iter() {
            let wire = self.wire_of(key).ok_or_else(|| {
                SubfieldEncodeError::new(
                    key,
                    match self.tag_encoding {
                        TagEncoding::Binary => {
                            format!("not a tag: tags are {} bytes, in hex", self.tag_len)
                        }
                        _ => format!("not a tag: tags are {} printable characters", self.tag_len),
                    },
                )
            })?;
            let def = self
                .lookup(key)
                .ok_or_else(|| SubfieldEncodeError::new(key, "not defined by the spec"))?;
            out.put_slice(&wire);
            self.elements
                .encode(def.number, key, value, def.exact, &mut out)?;
        }
        Ok(out.freeze())
    }

    pub(crate) fn element(&self, key: &str) -> Option<Element<'_>> {
        self.wire_of(key)?;
        self.elements.element(self.lookup(key)?.number)
    }
}

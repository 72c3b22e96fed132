//! `ber-tlv`: BER-TLV data objects as EMV puts them in field 55 (EMV Book 3,
//! Annex B). A tag is one byte, or more when its low five bits are all set
//! (then every following byte with its high bit set announces one more; at most
//! three in all). A length is one byte below 0x80, or 0x81 plus one byte, or
//! 0x82 plus two: always in its shortest form, so that a value decodes to
//! exactly one set of subfields and encodes back to the same bytes. A tag with
//! bit 6 of its first byte set is constructed: its value is more data objects,
//! nested at most `max_depth` levels. Tags are kept as they came, in upper-case
//! hex; the value of a primitive tag is its bytes.
//!
//! Not accepted: the indefinite length form (0x80), lengths of more than three
//! bytes, the `00` padding bytes EMV allows between objects, and a tag twice at
//! the same level.

use std::collections::HashSet;

use bytes::{BufMut, Bytes, BytesMut};

use super::emv_tags;
use super::{
    check_unique, Composite, Element, SubValue, SubfieldEncodeError, SubfieldError,
    SubfieldErrorKind, Subfields,
};
use crate::codec::charset::{hex_value, to_hex};

/// The most bytes a tag may take.
pub const MAX_TAG_BYTES: usize = 3;
/// The longest value the three-byte length form can announce.
pub const MAX_VALUE_LEN: usize = 0xFFFF;
/// Nesting of constructed tags allowed when the spec does not say.
pub const DEFAULT_MAX_DEPTH: usize = 8;

#[derive(Debug, Clone)]
pub struct Ber {
    pub(crate) max_depth: usize,
}

/// Whether a tag (its first byte) is constructed.
fn constructed(tag: &[u8]) -> bool {
    tag.first().is_some_and(|b| b & 0x20 != 0)
}

/// The length of the tag at the start of `input`.
fn read_tag(input: &[u8]) -> Result<usize, SubfieldErrorKind> {
    let Some(&first) = input.first() else {
        return Err(SubfieldErrorKind::Truncated {
            needed: 1,
            available: 0,
        });
    };
    if first == 0x00 {
        return Err(SubfieldErrorKind::BadTag {
            raw: "00".into(),
            reason: "padding between data objects is not accepted",
        });
    }
    if first & 0x1F != 0x1F {
        return Ok(1);
    }
    let mut len = 1;
    loop {
        let Some(&b) = input.get(len) else {
            return Err(SubfieldErrorKind::Truncated {
                needed: len + 1,
                available: input.len(),
            });
        };
        len += 1;
        if b & 0x80 == 0 {
            return Ok(len);
        }
        if len == MAX_TAG_BYTES {
            return Err(SubfieldErrorKind::BadTag {
                raw: to_hex(&input[..len]),
                reason: "longer than 3 bytes",
            });
        }
    }
}

/// The length at the start of `input` and how many bytes it takes.
fn read_length(input: &[u8]) -> Result<(usize, usize), SubfieldErrorKind> {
    let truncated = |needed| SubfieldErrorKind::Truncated {
        needed,
        available: input.len(),
    };
    let bad = |n: usize, reason| SubfieldErrorKind::BadLength {
        raw: to_hex(&input[..n.min(input.len())]),
        reason,
    };
    let first = *input.first().ok_or(truncated(1))?;
    match first {
        0..=0x7F => Ok((first as usize, 1)),
        0x81 => {
            let v = *input.get(1).ok_or(truncated(2))? as usize;
            if v < 0x80 {
                return Err(bad(2, "not in its shortest form"));
            }
            Ok((v, 2))
        }
        0x82 => {
            let raw = input.get(1..3).ok_or(truncated(3))?;
            let v = (raw[0] as usize) << 8 | raw[1] as usize;
            if v < 0x100 {
                return Err(bad(3, "not in its shortest form"));
            }
            Ok((v, 3))
        }
        0x80 => Err(bad(1, "the indefinite form is not accepted")),
        _ => Err(bad(1, "lengths of more than 3 bytes are not accepted")),
    }
}

/// The wire bytes of a tag key (hex), if it is one well-formed tag.
fn tag_of(key: &str) -> Option<Vec<u8>> {
    let k = key.as_bytes();
    if k.is_empty() || !k.len().is_multiple_of(2) || k.len() > 2 * MAX_TAG_BYTES {
        return None;
    }
    let raw: Vec<u8> = k
        .chunks_exact(2)
        .map(|p| Some((hex_value(p[0])? << 4) | hex_value(p[1])?))
        .collect::<Option<_>>()?;
    (read_tag(&raw).ok()? == raw.len()).then_some(raw)
}

fn put_length(len: usize, out: &mut BytesMut) {
    if len < 0x80 {
        out.put_u8(len as u8);
    } else if len <= 0xFF {
        out.put_u8(0x81);
        out.put_u8(len as u8);
    } else {
        out.put_u8(0x82);
        out.put_u16(len as u16);
    }
}

impl Ber {
    pub(crate) fn decode(&self, value: &Bytes) -> Result<Subfields, SubfieldError> {
        self.decode_level(value, 1)
    }

    fn decode_level(&self, value: &Bytes, depth: usize) -> Result<Subfields, SubfieldError> {
        let mut out = Subfields::new();
        let mut seen = HashSet::new();
        let mut pos = 0;
        while pos < value.len() {
            let tag_len = read_tag(&value[pos..]).map_err(|k| SubfieldError::new(None, pos, k))?;
            let tag = &value[pos..pos + tag_len];
            let key = to_hex(tag);
            let at_length = pos + tag_len;
            let (len, len_len) = read_length(&value[at_length..])
                .map_err(|k| SubfieldError::new(Some(&key), at_length, k))?;
            let start = at_length + len_len;
            let available = value.len() - start;
            if len > available {
                return Err(SubfieldError::new(
                    Some(&key),
                    start,
                    SubfieldErrorKind::Truncated {
                        needed: len,
                        available,
                    },
                ));
            }
            if !seen.insert(tag) {
                return Err(SubfieldError::new(
                    Some(&key),
                    pos,
                    SubfieldErrorKind::Duplicate,
                ));
            }
            let content = value.slice(start..start + len);
            let sub = if constructed(tag) {
                if depth >= self.max_depth {
                    return Err(SubfieldError::new(
                        Some(&key),
                        pos,
                        SubfieldErrorKind::TooDeep {
                            limit: self.max_depth,
                        },
                    ));
                }
                SubValue::Subfields(
                    self.decode_level(&content, depth + 1)
                        .map_err(|e| e.within(&key, start))?,
                )
            } else {
                SubValue::Value(content)
            };
            out.push(key, sub);
            pos = start + len;
        }
        Ok(out)
    }

    pub(crate) fn encode(&self, subfields: &Subfields) -> Result<Bytes, SubfieldEncodeError> {
        let mut out = BytesMut::new();
        self.encode_level(subfields, 1, &mut out)?;
        Ok(out.freeze())
    }

    fn encode_level(
        &self,
        subfields: &Subfields,
        depth: usize,
        out: &mut BytesMut,
    ) -> Result<(), SubfieldEncodeError> {
        check_unique(subfields)?;
        for (key, value) in subfields.iter() {
            let tag = tag_of(key).ok_or_else(|| {
                SubfieldEncodeError::new(key, "not a BER-TLV tag (1 to 3 bytes in hex)")
            })?;
            let content = match value {
                SubValue::Value(v) => v.clone(),
                SubValue::Subfields(_) if !constructed(&tag) => {
                    return Err(SubfieldEncodeError::new(
                        key,
                        "a primitive tag: its value is hex, not subfields",
                    ))
                }
                SubValue::Subfields(_) if depth >= self.max_depth => {
                    return Err(SubfieldEncodeError::new(
                        key,
                        format!(
                            "constructed tags nest deeper than {} levels",
                            self.max_depth
                        ),
                    ))
                }
                SubValue::Subfields(inner) => {
                    let mut nested = BytesMut::new();
                    self.encode_level(inner, depth + 1, &mut nested)
                        .map_err(|e| e.within(key))?;
                    nested.freeze()
                }
            };
            if content.len() > MAX_VALUE_LEN {
                return Err(SubfieldEncodeError::new(
                    key,
                    format!(
                        "value of {} bytes is longer than a 3-byte length allows ({MAX_VALUE_LEN})",
                        content.len()
                    ),
                ));
            }
            out.put_slice(&tag);
            put_length(content.len(), out);
            out.put_slice(&content);
        }
        Ok(())
    }

    /// Any well-formed tag is an element: named from the EMV dictionary when
    /// it knows the tag, binary, and nesting this same layout when constructed.
    pub(crate) fn element<'a>(&self, layout: &'a Composite, key: &str) -> Option<Element<'a>> {
        let tag = tag_of(key)?;
        let known = emv_tags::lookup(&tag);
        Some(Element {
            name: known.map_or("", |t| t.name),
            binary: true,
            sensitive: known.is_some_and(|t| t.sensitive),
            subfields: constructed(&tag).then_some(layout),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_of_one_to_three_bytes() {
        assert_eq!(read_tag(&[0x82, 0x02]), Ok(1));
        assert_eq!(read_tag(&[0x9F, 0x26, 0x08]), Ok(2));
        assert_eq!(read_tag(&[0xDF, 0x81, 0x01]), Ok(3));
        assert!(matches!(
            read_tag(&[0xDF, 0x81, 0x81, 0x01]),
            Err(SubfieldErrorKind::BadTag { .. })
        ));
        assert!(matches!(
            read_tag(&[0x9F]),
            Err(SubfieldErrorKind::Truncated {
                needed: 2,
                available: 1
            })
        ));
    }

    #[test]
    fn lengths_in_their_shortest_form_only() {
        assert_eq!(read_length(&[0x7F]), Ok((127, 1)));
        assert_eq!(read_length(&[0x81, 0x80]), Ok((128, 2)));
        assert_eq!(read_length(&[0x82, 0x01, 0x00]), Ok((256, 3)));
        for bad in [
            &[0x81, 0x05][..],
            &[0x82, 0x00, 0xFF],
            &[0x80],
            &[0x83, 0, 1, 0],
        ] {
            assert!(
                matches!(read_length(bad), Err(SubfieldErrorKind::BadLength { .. })),
                "{bad:02X?}"
            );
        }
    }
}

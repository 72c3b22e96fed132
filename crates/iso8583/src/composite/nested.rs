//! `bitmap`: a message of its own inside a field (Postilion's field 127): a
//! bitmap, then the subfields it announces in number order, each laid out like a
//! field. Bit 1 announces a second bitmap (subfields 65–128), as in a message.
//! The bitmaps are read and written by the codec's own bitmap routines, in the
//! encoding the subfields' `bitmap_encoding` names.

use bytes::{Bytes, BytesMut};

use super::elements::Elements;
use super::{
    all_used, check_unique, Element, SubfieldEncodeError, SubfieldError, SubfieldErrorKind,
    Subfields,
};
use crate::codec::{build_bitmap_word, parse_bitmap_word};

/// Subfield `n` is element number `n` of `elements`.
#[derive(Debug, Clone)]
pub struct Bitmap {
    pub(crate) elements: Elements,
}

const SECONDARY: u64 = 1 << 63;

impl Bitmap {
    fn number(&self, key: &str) -> Option<u16> {
        key.parse::<u16>()
            .ok()
            .filter(|&n| self.elements.field(n).is_some())
    }

    pub(crate) fn decode(&self, value: &Bytes) -> Result<Subfields, SubfieldError> {
        let spec = &self.elements.spec;
        let bitmap_error = |base: usize| move |e| SubfieldError::element("bitmap", base, e);
        let (primary, mut pos) = parse_bitmap_word(spec, value, 1).map_err(bitmap_error(0))?;
        let mut words = [primary & !SECONDARY, 0];
        if primary & SECONDARY != 0 {
            let (secondary, used) =
                parse_bitmap_word(spec, &value.slice(pos..), 2).map_err(bitmap_error(pos))?;
            // An empty second bitmap would not be written back: refuse it
            // rather than decode a value that encodes differently.
            if secondary == 0 {
                return Err(SubfieldError::new(
                    Some("bitmap"),
                    pos,
                    SubfieldErrorKind::EmptySecondaryBitmap,
                ));
            }
            words[1] = secondary;
            pos += used;
        }
        let mut out = Subfields::new();
        for (index, word) in words.into_iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let lz = bits.leading_zeros();
                bits &= !(1u64 << (63 - lz));
                let number = (index as u32 * 64 + lz + 1) as u16;
                pos +=
                    self.elements
                        .decode(number, number.to_string(), value, pos, None, &mut out)?;
            }
        }
        all_used(value, pos)?;
        Ok(out)
    }

    pub(crate) fn encode(&self, subfields: &Subfields) -> Result<Bytes, SubfieldEncodeError> {
        check_unique(subfields)?;
        let mut present = Vec::with_capacity(subfields.len());
        let mut words = [0u64; 2];
        for (key, value) in subfields.iter() {
            let number = self
                .number(key)
                .ok_or_else(|| SubfieldEncodeError::new(key, "not defined by the spec"))?;
            let bit = number as usize - 1;
            words[bit / 64] |= 1 << (63 - bit % 64);
            present.push((number, key, value));
        }
        present.sort_by_key(|(number, _, _)| *number);
        if words[1] != 0 {
            words[0] |= SECONDARY;
        }
        let mut out = BytesMut::new();
        build_bitmap_word(&self.elements.spec, 1, words[0], &mut out);
        if words[1] != 0 {
            build_bitmap_word(&self.elements.spec, 2, words[1], &mut out);
        }
        for (number, key, value) in present {
            self.elements.encode(number, key, value, None, &mut out)?;
        }
        Ok(out.freeze())
    }

    pub(crate) fn element(&self, key: &str) -> Option<Element<'_>> {
        self.elements.element(self.number(key)?)
    }
}

//! `fixed`: subfields one after another in the order the spec lists them, each
//! laid out like a field. Subfields at the end may be absent (the value simply
//! ends at a subfield boundary), as in the CUP field 60; one in the middle may not.

use bytes::{Bytes, BytesMut};

use super::elements::Elements;
use super::{all_used, check_unique, Element, SubfieldEncodeError, SubfieldError, Subfields};

/// Subfield `i` (from 1) is element number `i + 1` of `elements`.
#[derive(Debug, Clone)]
pub struct Fixed {
    pub(crate) count: usize,
    pub(crate) elements: Elements,
}

fn number_of(position: usize) -> u16 {
    (position + 1) as u16
}

impl Fixed {
    fn position(&self, key: &str) -> Option<usize> {
        key.parse::<usize>()
            .ok()
            .filter(|p| (1..=self.count).contains(p))
    }

    pub(crate) fn decode(&self, value: &Bytes) -> Result<Subfields, SubfieldError> {
        let mut out = Subfields::new();
        let mut pos = 0;
        for position in 1..=self.count {
            if pos == value.len() {
                break;
            }
            pos += self.elements.decode(
                number_of(position),
                position.to_string(),
                value,
                pos,
                None,
                &mut out,
            )?;
        }
        all_used(value, pos)?;
        Ok(out)
    }

    pub(crate) fn encode(&self, subfields: &Subfields) -> Result<Bytes, SubfieldEncodeError> {
        check_unique(subfields)?;
        let mut slots = vec![None; self.count];
        for (key, value) in subfields.iter() {
            let position = self.position(key).ok_or_else(|| {
                SubfieldEncodeError::new(
                    key,
                    format!("not a subfield position (1 to {})", self.count),
                )
            })?;
            slots[position - 1] = Some(value);
        }
        let present = slots.iter().take_while(|s| s.is_some()).count();
        if let Some(later) = slots[present..].iter().position(Option::is_some) {
            return Err(SubfieldEncodeError::new(
                &(present + 1).to_string(),
                format!(
                    "absent, but subfield {} after it is present (only trailing subfields may be left out)",
                    present + later + 1
                ),
            ));
        }
        let mut out = BytesMut::new();
        for (index, value) in slots[..present].iter().flatten().enumerate() {
            let position = index + 1;
            self.elements.encode(
                number_of(position),
                &position.to_string(),
                value,
                None,
                &mut out,
            )?;
        }
        Ok(out.freeze())
    }

    pub(crate) fn element(&self, key: &str) -> Option<Element<'_>> {
        self.elements.element(number_of(self.position(key)?))
    }
}

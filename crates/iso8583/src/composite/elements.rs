//! The subfields of `fixed`, `tlv` and `bitmap` layouts are laid out like fields:
//! a format in ISO notation, encodings, maybe a length prefix, maybe subfields of
//! their own. They are compiled into a spec of their own ([`Elements`]) and read
//! and written by the codec's own field routines, so every option a field has,
//! a subfield has too.

use bytes::{Bytes, BytesMut};

use super::{Element, SubValue, SubfieldEncodeError, SubfieldError, SubfieldErrorKind, Subfields};
use crate::codec::{build_element, parse_element};
use crate::spec::{ContentClass, FieldSpec, Spec};

/// Subfield definitions by internal number (see `compile`).
#[derive(Debug, Clone)]
pub(crate) struct Elements {
    pub(crate) spec: Box<Spec>,
}

impl Elements {
    pub(crate) fn field(&self, number: u16) -> Option<&FieldSpec> {
        self.spec.field(number)
    }

    /// Reads element `number`, named `key`, at `pos` of `value` and appends its
    /// (possibly composite) value to `out`; returns the bytes it used. `exact` is
    /// a length in the element's units the value must have.
    pub(crate) fn decode(
        &self,
        number: u16,
        key: String,
        value: &Bytes,
        pos: usize,
        exact: Option<usize>,
        out: &mut Subfields,
    ) -> Result<usize, SubfieldError> {
        let key = key.as_str();
        let Some(field) = self.field(number) else {
            return Err(SubfieldError::new(
                Some(key),
                pos,
                SubfieldErrorKind::Undefined,
            ));
        };
        let input = value.slice(pos..);
        let (flat, used) =
            parse_element(field, &input).map_err(|e| SubfieldError::element(key, pos, e))?;
        if let Some(expected) = exact {
            let actual = field.units_of(flat.len());
            if actual != expected {
                return Err(SubfieldError::new(
                    Some(key),
                    pos,
                    SubfieldErrorKind::WrongLength { expected, actual },
                ));
            }
        }
        let sub = match self.spec.subfields(number) {
            Some(inner) => SubValue::Subfields(
                inner
                    .decode_value(&flat)
                    // The value is the element's last bytes (exactly so when its
                    // encoding keeps one byte per character).
                    .map_err(|e| e.within(key, pos + used - flat.len().min(used)))?,
            ),
            None => SubValue::Value(flat),
        };
        out.push(key, sub);
        Ok(used)
    }

    /// Writes element `number`, named `key`, holding `value`.
    pub(crate) fn encode(
        &self,
        number: u16,
        key: &str,
        value: &SubValue,
        exact: Option<usize>,
        out: &mut BytesMut,
    ) -> Result<(), SubfieldEncodeError> {
        let Some(field) = self.field(number) else {
            return Err(SubfieldEncodeError::new(key, "not defined by the spec"));
        };
        let flat = match (value, self.spec.subfields(number)) {
            (SubValue::Value(v), _) => v.clone(),
            (SubValue::Subfields(s), Some(inner)) => {
                inner.encode_value(s).map_err(|e| e.within(key))?
            }
            (SubValue::Subfields(_), None) => {
                return Err(SubfieldEncodeError::new(
                    key,
                    "has no subfields in the spec: give its value as a string",
                ))
            }
        };
        if let Some(expected) = exact {
            let actual = field.units_of(flat.len());
            if actual != expected {
                return Err(SubfieldEncodeError::new(
                    key,
                    format!("fixed length {expected}, value has {actual}"),
                ));
            }
        }
        build_element(field, &flat, out).map_err(|e| SubfieldEncodeError::element(key, e))
    }

    /// What the spec says about element `number`.
    pub(crate) fn element(&self, number: u16) -> Option<Element<'_>> {
        let field = self.field(number)?;
        Some(Element {
            name: &field.name,
            binary: field.class == ContentClass::B,
            sensitive: field.sensitive,
            subfields: self.spec.subfields(number),
        })
    }
}

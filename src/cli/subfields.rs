//! Subfields in the command's JSON and text: a field whose spec defines
//! subfields is an object of them (`"55": {"9F26": "…", "82": "…"}`, nested
//! for subfields of subfields) in `decode --json`, and `encode` reads the same
//! shape back. Values are text, or upper-case hex for binary subfields (every
//! BER-TLV value); sensitive subfields are masked unless asked otherwise.

use std::fmt::Write as _;

use bytes::Bytes;
use serde_json::{Map, Value};

use iso8583::codec::charset::to_hex;
use iso8583::composite::{Composite, Element, SubValue, SubfieldError, Subfields};
use iso8583::mask::mask_pan;

use super::decode::parse_hex;

/// A subfield's value as shown: text, or hex when binary or not text; masked
/// when sensitive unless `unmask`.
fn value_text(element: Option<&Element<'_>>, value: &[u8], unmask: bool) -> String {
    let binary = element.is_some_and(|e| e.binary);
    let text = match std::str::from_utf8(value) {
        Ok(s) if !binary => s.to_string(),
        _ => to_hex(value),
    };
    if !unmask && element.is_some_and(|e| e.sensitive) {
        mask_pan(&text)
    } else {
        text
    }
}

/// The JSON object of a field's subfields.
pub fn to_json(layout: &Composite, subfields: &Subfields, unmask: bool) -> Value {
    let mut object = Map::new();
    for (key, value) in subfields.iter() {
        let element = layout.element(key);
        let json = match value {
            SubValue::Value(v) => Value::String(value_text(element.as_ref(), v, unmask)),
            SubValue::Subfields(inner) => match element.and_then(|e| e.subfields) {
                Some(inner_layout) => to_json(inner_layout, inner, unmask),
                // Decoded subfields always have a layout; nothing else to show.
                None => Value::Object(Map::new()),
            },
        };
        object.insert(key.to_string(), json);
    }
    Value::Object(object)
}

/// Decodes field `number`'s value into its JSON object.
pub fn field_json(
    layout: &Composite,
    number: u16,
    value: &Bytes,
    unmask: bool,
) -> Result<Value, SubfieldError> {
    Ok(to_json(layout, &layout.decode(number, value)?, unmask))
}

/// Reads a JSON object of subfields of field `number` into its flat value.
pub fn from_json(
    layout: &Composite,
    number: u16,
    object: &Map<String, Value>,
) -> Result<Bytes, String> {
    let subfields = read_object(layout, object, &format!("field {number}"))?;
    layout.encode(number, &subfields).map_err(|e| e.to_string())
}

fn read_object(
    layout: &Composite,
    object: &Map<String, Value>,
    path: &str,
) -> Result<Subfields, String> {
    let mut subfields = Subfields::new();
    for (key, value) in object {
        let here = format!("{path}, subfield {key}");
        let element = layout.element(key).ok_or_else(|| {
            format!(
                "{here}: not a subfield of this field ({} layout)",
                layout.kind()
            )
        })?;
        let value = match value {
            Value::String(text) if element.binary => {
                SubValue::value(parse_hex(text).map_err(|e| format!("{here}: {e}"))?)
            }
            Value::String(text) => SubValue::value(text.clone().into_bytes()),
            Value::Object(inner) => match element.subfields {
                Some(inner_layout) => SubValue::Subfields(read_object(inner_layout, inner, &here)?),
                None => {
                    return Err(format!(
                        "{here}: has no subfields; give its value as a string"
                    ))
                }
            },
            _ => {
                return Err(format!(
                    "{here}: value must be a string or an object of subfields"
                ))
            }
        };
        subfields.push(key.clone(), value);
    }
    Ok(subfields)
}

/// Indented lines under a field in the human output: key, name, value.
pub fn human(
    out: &mut String,
    layout: &Composite,
    subfields: &Subfields,
    unmask: bool,
    depth: usize,
) {
    for (key, value) in subfields.iter() {
        let element = layout.element(key);
        let name = element.as_ref().map_or("", |e| e.name);
        let indent = 6 + 2 * depth;
        match value {
            SubValue::Value(v) => {
                let text = value_text(element.as_ref(), v, unmask);
                let _ = writeln!(out, "{:indent$}{key:<6} {name:<44} {text}", "");
            }
            SubValue::Subfields(inner) => {
                let _ = writeln!(out, "{:indent$}{key:<6} {name}", "");
                if let Some(inner_layout) = element.and_then(|e| e.subfields) {
                    human(out, inner_layout, inner, unmask, depth + 1);
                }
            }
        }
    }
}

/// Whether a composite value holds card data (a sensitive subfield, at any
/// depth), or cannot be read to tell: its flat form is then masked whole.
pub fn holds_card_data(layout: &Composite, number: u16, value: &Bytes) -> bool {
    fn any_sensitive(layout: &Composite, subfields: &Subfields) -> bool {
        subfields.iter().any(|(key, value)| {
            let element = layout.element(key);
            element.is_some_and(|e| e.sensitive)
                || match (value, element.and_then(|e| e.subfields)) {
                    (SubValue::Subfields(inner), Some(inner_layout)) => {
                        any_sensitive(inner_layout, inner)
                    }
                    _ => false,
                }
        })
    }
    layout
        .decode(number, value)
        .map_or(true, |subfields| any_sensitive(layout, &subfields))
}

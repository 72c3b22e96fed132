//! How a decoded message is shown: one line per field for people, one JSON
//! object per message for machines. Sensitive fields are masked unless asked.

use std::fmt::Write as _;

use bytes::Bytes;
use iso8583::codec::charset::to_hex;
use iso8583::codec::Message;
use iso8583::composite::SubfieldError;
use iso8583::mask::mask_pan;
use iso8583::spec::{ContentClass, Spec};
use iso8583::validate::validate;

use super::subfields;

/// A field's value as it appears in the message: text, or upper-case hex for
/// binary fields (and for text fields holding bytes that are not text).
pub fn field_text(spec: &Spec, number: u16, value: &[u8], unmask: bool) -> String {
    let field = spec.field(number);
    let binary = field.is_some_and(|f| f.class == ContentClass::B);
    let text = match std::str::from_utf8(value) {
        Ok(s) if !binary => s.to_string(),
        _ => to_hex(value),
    };
    if unmask {
        return text;
    }
    // A composite value is masked whole when some subfield is card data (EMV
    // tag 5A in field 55): its flat form cannot be masked piece by piece.
    let card_data = field.is_some_and(|f| f.sensitive)
        || spec.subfields(number).is_some_and(|layout| {
            subfields::holds_card_data(layout, number, &Bytes::copy_from_slice(value))
        });
    if card_data {
        mask_pan(&text)
    } else {
        text
    }
}

/// `{"2":"...","3":"400000","55":{"9F26":"...",...},...}`: every field by number,
/// as [`field_text`], or as an object of its subfields when the spec defines
/// them (see `subfields`). Fails on the first field whose subfields do not decode.
pub fn json_fields_checked(
    spec: &Spec,
    msg: &Message,
    unmask: bool,
) -> Result<serde_json::Value, SubfieldError> {
    let mut fields = serde_json::Map::new();
    for (number, value) in msg.fields() {
        let json = match spec.subfields(number) {
            Some(layout) => subfields::field_json(layout, number, value, unmask)?,
            None => serde_json::Value::String(field_text(spec, number, value, unmask)),
        };
        fields.insert(number.to_string(), json);
    }
    Ok(serde_json::Value::Object(fields))
}

/// As [`json_fields_checked`], but a field whose subfields do not decode is
/// shown flat, as [`field_text`]: for logs and reports that must show every
/// message.
pub fn json_fields(spec: &Spec, msg: &Message, unmask: bool) -> serde_json::Value {
    let mut fields = serde_json::Map::new();
    for (number, value) in msg.fields() {
        fields.insert(number.to_string(), field_json(spec, number, value, unmask));
    }
    serde_json::Value::Object(fields)
}

/// One field as [`json_fields`] shows it: an object of its subfields when the
/// spec defines them and they decode, else [`field_text`].
pub fn field_json(spec: &Spec, number: u16, value: &Bytes, unmask: bool) -> serde_json::Value {
    spec.subfields(number)
        .and_then(|layout| subfields::field_json(layout, number, value, unmask).ok())
        .unwrap_or_else(|| serde_json::Value::String(field_text(spec, number, value, unmask)))
}

/// `{"mti":"0200","fields":{"2":"...","3":"400000",...}}`; fails when some
/// field's subfields do not decode.
pub fn json(spec: &Spec, msg: &Message, unmask: bool) -> Result<String, SubfieldError> {
    let mut object = serde_json::Map::new();
    object.insert(
        "mti".into(),
        serde_json::Value::String(msg.mti_str().into()),
    );
    object.insert("fields".into(), json_fields_checked(spec, msg, unmask)?);
    Ok(serde_json::Value::Object(object).to_string())
}

/// One line per field: number, name, value; then what the dialect says about it.
pub fn human(spec: &Spec, msg: &Message, unmask: bool) -> String {
    let validation = validate(spec, msg);
    let mut out = String::new();
    let kind = match validation.message {
        Some(m) if validation.is_response => format!("{} response", m.name),
        Some(m) => format!("{} request", m.name),
        None => "not a message of this dialect".to_string(),
    };
    let _ = writeln!(out, "MTI  {}  ({kind})", msg.mti_str());
    for (number, value) in msg.fields() {
        let name = spec.field(number).map_or("?", |f| f.name.as_str());
        let mut text = field_text(spec, number, value, unmask);
        if number == 39 {
            if let Some(meaning) = spec.response_code(&text) {
                text = format!("{text}  ({meaning})");
            }
        }
        let _ = writeln!(out, "{number:>4}  {name:<44} {text}");
        if let Some(layout) = spec.subfields(number) {
            match layout.decode(number, value) {
                Ok(subs) => subfields::human(&mut out, layout, &subs, unmask, 0),
                Err(e) => {
                    let _ = writeln!(out, "  ! {e}");
                }
            }
        }
    }
    for violation in &validation.violations {
        let _ = writeln!(out, "  ! {violation}");
    }
    out
}

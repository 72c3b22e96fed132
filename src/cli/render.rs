//! How a decoded message is shown: one line per field for people, one JSON
//! object per message for machines. Sensitive fields are masked unless asked.

use std::fmt::Write as _;
use std::io::{self, Write};

use bytes::Bytes;
use iso8583::codec::charset::{hex_digit, to_hex};
use iso8583::codec::Message;
use iso8583::mask::{kept_ends, mask_pan};
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

/// `{"2":"...","3":"400000","55":{"9F26":"...",...},...}`: every field by
/// number, as [`field_text`], or as an object of its subfields when the spec
/// defines them (see `subfields`) and they decode; a field whose subfields do
/// not decode is shown flat, as logs and reports must show every message.
pub fn json_fields(spec: &Spec, msg: &Message, unmask: bool) -> serde_json::Value {
    let mut fields = serde_json::Map::new();
    for (number, value) in msg.fields() {
        fields.insert(number.to_string(), field_json(spec, number, value, unmask));
    }
    serde_json::Value::Object(fields)
}

/// One field as [`json_fields`] shows it: an object of its subfields when the
/// spec defines them and they decode, else [`field_text`].
pub fn field_json(spec: &Spec, number: u16, value: &[u8], unmask: bool) -> serde_json::Value {
    spec.subfields(number)
        .and_then(|layout| {
            subfields::field_json(layout, number, &Bytes::copy_from_slice(value), unmask).ok()
        })
        .unwrap_or_else(|| serde_json::Value::String(field_text(spec, number, value, unmask)))
}

/// `{"mti":"0200","fields":{"2":"...","3":"400000",...}}`, written straight to
/// `out`: the bytes serde_json would print for the same object, without a
/// `Value` and a string per field built first (see [`write_fields_json`]).
pub fn write_json<W: Write + ?Sized>(
    out: &mut W,
    spec: &Spec,
    msg: &Message,
    unmask: bool,
) -> io::Result<()> {
    out.write_all(b"{\"mti\":\"")?;
    write_escaped(out, msg.mti_str())?;
    // A spec with a header before the MTI (`header_length`): its bytes in hex.
    if !msg.header().is_empty() {
        out.write_all(b"\",\"header\":\"")?;
        write_hex(out, msg.header(), false)?;
    }
    out.write_all(b"\",\"fields\":")?;
    write_fields_json(out, spec, msg, unmask)?;
    out.write_all(b"}")
}

/// `{"2":"...","3":"400000",...}`: every field by number, valued as
/// [`field_text`] values it, written without allocating: text is escaped as it
/// is copied, binary values turned to hex and sensitive values masked on the
/// way out.
pub fn write_fields_json<W: Write + ?Sized>(
    out: &mut W,
    spec: &Spec,
    msg: &Message,
    unmask: bool,
) -> io::Result<()> {
    let mut key = [0u8; 10];
    for (i, (number, value)) in msg.fields().enumerate() {
        // `{"2":"` or `,"35":"`, in one write.
        key[0] = if i == 0 { b'{' } else { b',' };
        key[1] = b'"';
        let mut digits = [0u8; 5];
        let digits = decimal(number, &mut digits);
        let end = 2 + digits.len();
        key[2..end].copy_from_slice(digits);
        key[end..end + 3].copy_from_slice(b"\":\"");
        if spec.subfields(number).is_some() {
            // A field made of subfields is an object of them, as
            // `field_json` shows it (built as a `Value`: such fields are few).
            out.write_all(&key[..end + 2])?;
            serde_json::to_writer(&mut *out, &field_json(spec, number, value, unmask))?;
            continue;
        }
        out.write_all(&key[..end + 3])?;
        write_field_value(out, spec, number, value, unmask)?;
        out.write_all(b"\"")?;
    }
    out.write_all(if msg.is_empty() { &b"{}"[..] } else { b"}" })
}

/// [`field_text`] of one value, escaped for inside a JSON string.
fn write_field_value<W: Write + ?Sized>(
    out: &mut W,
    spec: &Spec,
    number: u16,
    value: &[u8],
    unmask: bool,
) -> io::Result<()> {
    let field = spec.field(number);
    let binary = field.is_some_and(|f| f.class == ContentClass::B);
    let masked = !unmask && field.is_some_and(|f| f.sensitive);
    // Printable ASCII, the usual value, is written as it is.
    if !binary && !masked && !needs_escaping(value) {
        return out.write_all(value);
    }
    match std::str::from_utf8(value) {
        Ok(text) if !binary && masked => write_masked(out, text),
        Ok(text) if !binary => write_escaped(out, text),
        _ => write_hex(out, value, masked),
    }
}

/// A number's decimal digits, in `buf`.
fn decimal(mut n: u16, buf: &mut [u8; 5]) -> &[u8] {
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[start..];
        }
    }
}

/// `text` with the characters [`mask_pan`] hides written as `*`.
fn write_masked<W: Write + ?Sized>(out: &mut W, text: &str) -> io::Result<()> {
    let len = text.chars().count();
    let (head, tail) = kept_ends(len);
    let byte_at = |char_index: usize| {
        text.char_indices()
            .nth(char_index)
            .map_or(text.len(), |(i, _)| i)
    };
    let (start, end) = if text.is_ascii() {
        (head, len - tail)
    } else {
        (byte_at(head), byte_at(len - tail))
    };
    write_escaped(out, &text[..start])?;
    let mut hidden = len - head - tail;
    while hidden > 0 {
        let n = hidden.min(STARS.len());
        out.write_all(&STARS[..n])?;
        hidden -= n;
    }
    write_escaped(out, &text[end..])
}

const STARS: [u8; 32] = [b'*'; 32];

/// Upper-case hex of `value`, the digits [`mask_pan`] hides as `*` when masked.
fn write_hex<W: Write + ?Sized>(out: &mut W, value: &[u8], masked: bool) -> io::Result<()> {
    let len = value.len() * 2;
    let (head, tail) = if masked { kept_ends(len) } else { (len, 0) };
    let mut chunk = [0u8; 64];
    for (i, part) in value.chunks(chunk.len() / 2).enumerate() {
        let first = i * chunk.len();
        for (j, &b) in part.iter().enumerate() {
            for (k, digit) in [hex_digit(b >> 4), hex_digit(b)].into_iter().enumerate() {
                let at = first + 2 * j + k;
                let hidden = at >= head && at < len - tail;
                chunk[2 * j + k] = if hidden { b'*' } else { digit };
            }
        }
        out.write_all(&chunk[..2 * part.len()])?;
    }
    Ok(())
}

/// Whether `bytes` has anything but printable ASCII other than `"` and `\\`:
/// a byte JSON escapes, or one that may not be UTF-8. One pass without a
/// branch per byte.
fn needs_escaping(bytes: &[u8]) -> bool {
    bytes.iter().fold(false, |any, &b| {
        any | !(0x20..0x80).contains(&b) | (b == b'"') | (b == b'\\')
    })
}

/// `text` escaped as serde_json escapes strings: quote, backslash and control
/// characters; everything else, UTF-8 included, as it is.
fn write_escaped<W: Write + ?Sized>(out: &mut W, text: &str) -> io::Result<()> {
    let bytes = text.as_bytes();
    if !needs_escaping(bytes) {
        return out.write_all(bytes);
    }
    let mut clean_from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.write_all(&bytes[clean_from..i])?;
        if short.is_empty() {
            let lower = |n: u8| b"0123456789abcdef"[n as usize];
            out.write_all(&[b'\\', b'u', b'0', b'0', lower(b >> 4), lower(b & 0xf)])?;
        } else {
            out.write_all(short)?;
        }
        clean_from = i + 1;
    }
    out.write_all(&bytes[clean_from..])
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
            match layout.decode(number, &Bytes::copy_from_slice(value)) {
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

/// [`human`] indented under a one-line summary of the message, as `journal
/// --fields` and `capture decode --fields` print it: every field, and under a
/// composite field its subfields (EMV tags with their names).
pub fn write_fields_under<W: Write + ?Sized>(
    out: &mut W,
    spec: &Spec,
    msg: &Message,
    unmask: bool,
) -> io::Result<()> {
    for line in human(spec, msg, unmask).lines() {
        writeln!(out, "    {line}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        Spec::load("switchboard").unwrap()
    }

    fn written(msg: &Message, unmask: bool) -> String {
        let mut out = Vec::new();
        write_json(&mut out, &spec(), msg, unmask).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// What the writer must print: the object built as a `Value` and formatted by serde_json.
    fn expected(msg: &Message, unmask: bool) -> String {
        serde_json::json!({"mti": msg.mti_str(), "fields": json_fields(&spec(), msg, unmask)})
            .to_string()
    }

    #[test]
    fn writes_what_serde_json_prints() {
        let mut msg = Message::new(*b"0200");
        msg.set(2, "6222020200112233446")
            .set(3, "400000")
            .set(37, "ab\"c\\d\n\u{1}\u{1f}\u{7f}é中")
            .set(102, "é12345678901234中")
            .set(103, "1234")
            .set(128, vec![0x01, 0x23, 0xab, 0xff, 0, 0, 0, 0]);
        for unmask in [false, true] {
            assert_eq!(written(&msg, unmask), expected(&msg, unmask));
        }
        let empty = Message::new(*b"0800");
        assert_eq!(written(&empty, false), expected(&empty, false));
        assert!(written(&msg, false).contains(r#""2":"622202*********3446""#));
    }

    /// The lines under a message's summary (`journal --fields`, `capture decode
    /// --fields`): every field, and a composite field's subfields under it, EMV
    /// tags by name, card data masked unless asked.
    #[test]
    fn fields_under_a_summary_list_subfields_by_name() {
        let spec = Spec::load("iso8583-1987-bcd").unwrap();
        let mut msg = Message::new(*b"0200");
        msg.set(3, "000000").set(
            55,
            hex::decode("9F26082E078F5CEA112DAA82021C005A086222020200112233").unwrap(),
        );
        let lines = |unmask| {
            let mut out = Vec::new();
            write_fields_under(&mut out, &spec, &msg, unmask).unwrap();
            String::from_utf8(out).unwrap()
        };
        let masked = lines(false);
        let rows: Vec<&str> = masked.lines().collect();
        assert!(rows[1].starts_with("       3  Processing code"), "{masked}");
        assert!(
            rows[2].starts_with("      55  ICC system related data"),
            "{masked}"
        );
        assert!(
            rows[3].starts_with("          9F26   Application Cryptogram")
                && rows[3].ends_with(" 2E078F5CEA112DAA"),
            "{masked}"
        );
        assert!(rows[4].starts_with("          82     Application Interchange Profile"));
        assert!(
            rows[5].contains("Application Primary Account Number"),
            "{masked}"
        );
        assert!(rows[5].ends_with(" 622202******2233"), "{masked}");
        assert!(!masked.contains("6222020200112233"), "{masked}");
        assert!(lines(true).contains(" 6222020200112233\n"));
    }

    #[test]
    fn masks_binary_and_invalid_text_as_hex() {
        let mut msg = Message::new(*b"0100");
        // Not UTF-8 in a text field: shown as hex, and masked as hex when sensitive.
        msg.set(102, vec![0xff; 40])
            .set(103, vec![0xfe, 0x41])
            .set(128, vec![0xab; 20]);
        for unmask in [false, true] {
            assert_eq!(written(&msg, unmask), expected(&msg, unmask));
        }
    }

    #[test]
    fn numbers_have_their_digits() {
        let mut buf = [0u8; 5];
        for n in [0u16, 7, 10, 128, 999, 65535] {
            assert_eq!(decimal(n, &mut buf), n.to_string().as_bytes());
        }
    }
}

//! From the `subfields` table of a field in a spec file to a [`Composite`].
//!
//! The subfields of `fixed`, `tlv` and `bitmap` layouts are written exactly like
//! fields (`name`, `format`, `encoding`, ..., even `subfields`), and the keys of
//! the `subfields` table other than the layout's own (`encoding`,
//! `length_encoding`, `pad`, `bitmap_encoding`, ...) are the defaults a spec's
//! `[spec]` header gives its fields. So they are compiled by the spec compiler
//! itself, as a spec of their own whose fields are the subfields under internal
//! numbers; its errors are renamed to the keys the user wrote.

use toml::{Table, Value};

use super::ber::{Ber, DEFAULT_MAX_DEPTH};
use super::elements::Elements;
use super::fixed::Fixed;
use super::nested::Bitmap;
use super::tlv::{TagDef, TagEncoding, Tlv};
use super::{Composite, Kind};
use crate::spec::{Spec, SpecError};

/// The most subfields a `fixed` or `tlv` layout may define: they are numbered
/// 2..=128 inside.
const MAX_ELEMENTS: usize = 127;

fn err(key: impl Into<String>, reason: impl Into<String>) -> SpecError {
    SpecError {
        key: key.into(),
        reason: reason.into(),
    }
}

/// Compiles the `subfields` table of the field whose spec key is `field_key`
/// (`fields.55`).
pub(crate) fn compile(field_key: &str, table: &Table) -> Result<Composite, SpecError> {
    let key = format!("{field_key}.subfields");
    let mut header = table.clone();
    let kind = match header.remove("kind") {
        Some(Value::String(s)) => s,
        _ => {
            return Err(err(
                format!("{key}.kind"),
                "must be one of fixed, tlv, ber-tlv, bitmap",
            ))
        }
    };
    let kind = match kind.as_str() {
        "ber-tlv" => Kind::Ber(compile_ber(&key, header)?),
        "fixed" => Kind::Fixed(compile_fixed(&key, header)?),
        "bitmap" => Kind::Bitmap(compile_bitmap(&key, header)?),
        "tlv" => Kind::Tlv(compile_tlv(&key, header)?),
        other => {
            return Err(err(
                format!("{key}.kind"),
                format!("{other:?} is not one of fixed, tlv, ber-tlv, bitmap"),
            ))
        }
    };
    Ok(Composite { kind })
}

fn compile_ber(key: &str, mut header: Table) -> Result<Ber, SpecError> {
    let max_depth = match header.remove("max_depth") {
        None => DEFAULT_MAX_DEPTH,
        Some(Value::Integer(n)) if (1..=32).contains(&n) => n as usize,
        Some(_) => return Err(err(format!("{key}.max_depth"), "must be 1 to 32")),
    };
    if let Some(unknown) = header.keys().next() {
        return Err(err(
            format!("{key}.{unknown}"),
            "not a key of ber-tlv subfields (kind, max_depth)",
        ));
    }
    Ok(Ber { max_depth })
}

fn compile_fixed(key: &str, mut header: Table) -> Result<Fixed, SpecError> {
    let fields_key = format!("{key}.fields");
    let Some(Value::Array(list)) = header.remove("fields") else {
        return Err(err(
            fields_key,
            "fixed subfields are listed in order: [[...subfields.fields]] or fields = [{...}, ...]",
        ));
    };
    if list.is_empty() || list.len() > MAX_ELEMENTS {
        return Err(err(
            fields_key,
            format!("must list 1 to {MAX_ELEMENTS} subfields"),
        ));
    }
    let defs = list
        .into_iter()
        .enumerate()
        .map(|(i, def)| ((i + 2) as u16, format!("{fields_key}[{i}]"), def))
        .collect::<Vec<_>>();
    let count = defs.len();
    Ok(Fixed {
        count,
        elements: elements(key, header, defs)?,
    })
}

fn compile_bitmap(key: &str, mut header: Table) -> Result<Bitmap, SpecError> {
    let fields_key = format!("{key}.fields");
    let Some(Value::Table(table)) = header.remove("fields") else {
        return Err(err(
            fields_key,
            "bitmap subfields are a table by number: [...subfields.fields] 2 = {...}",
        ));
    };
    let mut defs = Vec::with_capacity(table.len());
    for (number, def) in table {
        let n: u16 = number
            .parse()
            .ok()
            .filter(|n| (2..=128).contains(n))
            .ok_or_else(|| {
                err(
                    format!("{fields_key}.{number}"),
                    "subfield number must be 2..=128",
                )
            })?;
        defs.push((n, format!("{fields_key}.{number}"), def));
    }
    Ok(Bitmap {
        elements: elements(key, header, defs)?,
    })
}

fn compile_tlv(key: &str, mut header: Table) -> Result<Tlv, SpecError> {
    let tag_key = format!("{key}.tag");
    let Some(Value::Table(mut tag)) = header.remove("tag") else {
        return Err(err(
            tag_key,
            "required: tag = { length = 2, encoding = \"ascii\" }",
        ));
    };
    let tag_len = match tag.remove("length") {
        Some(Value::Integer(n)) if (1..=8).contains(&n) => n as usize,
        _ => return Err(err(format!("{tag_key}.length"), "must be 1 to 8")),
    };
    let tag_encoding = match tag.remove("encoding") {
        None => TagEncoding::Ascii,
        Some(Value::String(s)) if s == "ascii" => TagEncoding::Ascii,
        Some(Value::String(s)) if s == "ebcdic" => TagEncoding::Ebcdic,
        Some(Value::String(s)) if s == "binary" => TagEncoding::Binary,
        Some(_) => {
            return Err(err(
                format!("{tag_key}.encoding"),
                "must be ascii, ebcdic or binary",
            ))
        }
    };
    if let Some(unknown) = tag.keys().next() {
        return Err(err(
            format!("{tag_key}.{unknown}"),
            "not a key of tag (length, encoding)",
        ));
    }

    let length_key = format!("{key}.length");
    let Some(Value::Table(mut length)) = header.remove("length") else {
        return Err(err(
            length_key,
            "required: length = { digits = 3, encoding = \"ascii\" }",
        ));
    };
    let digits = match length.remove("digits") {
        Some(Value::Integer(n)) if (1..=6).contains(&n) => n as usize,
        _ => return Err(err(format!("{length_key}.digits"), "must be 1 to 6")),
    };
    // The length prefix is each value's own, in the encoding given here.
    if let Some(encoding) = length.remove("encoding") {
        if header.contains_key("length_encoding") {
            return Err(err(
                format!("{length_key}.encoding"),
                "give the length's encoding here or as length_encoding, not both",
            ));
        }
        header.insert("length_encoding".into(), encoding);
    }
    if let Some(unknown) = length.keys().next() {
        return Err(err(
            format!("{length_key}.{unknown}"),
            "not a key of length (digits, encoding)",
        ));
    }

    let tags_key = format!("{key}.tags");
    let tags = match header.remove("tags") {
        Some(Value::Table(t)) => t,
        None => Table::new(),
        Some(_) => return Err(err(tags_key, "must be a table of tag = { name, format }")),
    };
    let other = header.remove("other");
    if tags.len() + usize::from(other.is_some()) > MAX_ELEMENTS {
        return Err(err(tags_key, format!("at most {MAX_ELEMENTS} tags")));
    }
    if tags.is_empty() && other.is_none() {
        return Err(err(
            tags_key,
            "define at least one tag, or `other` for any tag",
        ));
    }

    let mut defs = Vec::new();
    let mut tag_defs = Vec::new();
    for (i, (tag, def)) in tags.into_iter().enumerate() {
        let def_key = format!("{tags_key}.{tag}");
        let tag = match tag_encoding {
            TagEncoding::Binary => tag.to_ascii_uppercase(),
            _ => tag,
        };
        let wire_len = match tag_encoding {
            TagEncoding::Binary if tag.bytes().all(|c| c.is_ascii_hexdigit()) => tag.len() / 2,
            TagEncoding::Binary => 0,
            _ if tag.bytes().all(|c| c.is_ascii_graphic()) => tag.len(),
            _ => 0,
        };
        if wire_len != tag_len
            || (tag_encoding == TagEncoding::Binary && !tag.len().is_multiple_of(2))
        {
            return Err(err(
                def_key,
                format!(
                    "a tag here is {tag_len} {}",
                    match tag_encoding {
                        TagEncoding::Binary => "bytes in hex",
                        _ => "printable characters",
                    }
                ),
            ));
        }
        let number = (i + 2) as u16;
        let (def, exact) = with_prefix(&def_key, def, digits)?;
        defs.push((number, def_key, def));
        tag_defs.push(TagDef {
            key: tag,
            number,
            exact,
        });
    }
    let other = match other {
        None => None,
        Some(def) => {
            let number = (defs.len() + 2) as u16;
            let def_key = format!("{key}.other");
            let (def, exact) = with_prefix(&def_key, def, digits)?;
            defs.push((number, def_key, def));
            Some(TagDef {
                key: String::new(),
                number,
                exact,
            })
        }
    };
    Ok(Tlv {
        tag_len,
        tag_encoding,
        tags: tag_defs,
        other,
        elements: elements(key, header, defs)?,
    })
}

/// A tag's definition with its format rewritten to carry the layout's length
/// prefix (`n6` with 3 digits becomes `n...6`, and must then be exactly 6), and
/// the fixed length it had, if any.
fn with_prefix(key: &str, def: Value, digits: usize) -> Result<(Value, Option<usize>), SpecError> {
    let Value::Table(mut def) = def else {
        return Err(err(
            key,
            "must be a table: { name = \"...\", format = \"...\" }",
        ));
    };
    let Some(Value::String(format)) = def.get("format") else {
        return Err(err(
            format!("{key}.format"),
            "required: the value's format, e.g. ans..99",
        ));
    };
    let split = format
        .find(|c: char| c == '.' || c.is_ascii_digit())
        .unwrap_or(format.len());
    let (class, rest) = format.split_at(split);
    let dots = rest.bytes().take_while(|&b| b == b'.').count();
    let max = &rest[dots..];
    let exact = if dots == 0 { max.parse().ok() } else { None };
    let rewritten = format!("{class}{}{max}", ".".repeat(digits));
    def.insert("format".into(), Value::String(rewritten));
    Ok((Value::Table(def), exact))
}

/// Compiles subfield definitions `(internal number, key for errors, definition)`
/// with `header` as their defaults.
fn elements(
    key: &str,
    mut header: Table,
    defs: Vec<(u16, String, Value)>,
) -> Result<Elements, SpecError> {
    if header.contains_key("name") {
        return Err(err(format!("{key}.name"), "not a key of subfields"));
    }
    header.insert("name".into(), Value::String(key.to_string()));
    let mut fields = Table::new();
    for (number, _, def) in &defs {
        fields.insert(number.to_string(), def.clone());
    }
    let mut root = Table::new();
    root.insert("spec".into(), Value::Table(header));
    root.insert("fields".into(), Value::Table(fields));
    let text = toml::to_string(&root).map_err(|e| err(key, e.to_string()))?;
    let spec = Spec::from_toml(&text).map_err(|e| rename(key, &defs, e))?;
    Ok(Elements {
        spec: Box::new(spec),
    })
}

/// Names an error of the inner spec by the keys the user wrote.
fn rename(key: &str, defs: &[(u16, String, Value)], e: SpecError) -> SpecError {
    let renamed = if let Some(rest) = e.key.strip_prefix("spec.") {
        format!("{key}.{rest}")
    } else if let Some(rest) = e.key.strip_prefix("fields.") {
        let (number, tail) = rest.split_once('.').unwrap_or((rest, ""));
        match defs.iter().find(|(n, _, _)| n.to_string() == number) {
            Some((_, def_key, _)) if tail.is_empty() => def_key.clone(),
            Some((_, def_key, _)) => format!("{def_key}.{tail}"),
            None => key.to_string(),
        }
    } else {
        // A TOML shape error ("unknown field ...") located in the generated text.
        key.to_string()
    };
    err(renamed, e.reason)
}

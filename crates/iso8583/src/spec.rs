//! Dialect specifications as data.
//!
//! A spec is a TOML file under `specs/` (format described in `specs/README.md`):
//! how the MTI and bitmaps are encoded, every field's format in ISO notation
//! (`n..19`, `an12`, `b8`, ...) with its data and length encodings, the messages
//! of the dialect with their mandatory / conditional / optional fields, and the
//! response codes. Loading compiles it into a [`Spec`]: a table indexed by field
//! number, so the codec never looks anything up by name on the hot path.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;

/// The highest field number: three bitmaps of 64 bits each.
pub const MAX_FIELD: usize = 192;

/// Specs shipped with the crate, addressable by name from the CLI and config.
pub const BUILTIN_SPECS: &[(&str, &str)] = &[
    ("switchboard", include_str!("../specs/switchboard.toml")),
    (
        "iso8583-1987-ascii",
        include_str!("../specs/iso8583-1987-ascii.toml"),
    ),
    (
        "iso8583-1987-bcd",
        include_str!("../specs/iso8583-1987-bcd.toml"),
    ),
];

/// Content class of a field, as ISO 8583 names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentClass {
    /// `n`: digits.
    N,
    /// `a`: letters.
    A,
    /// `an`: letters and digits (space allowed as padding).
    An,
    /// `as`: letters and special characters.
    As,
    /// `ns`: digits and special characters.
    Ns,
    /// `anp`: letters, digits and space.
    Anp,
    /// `ans`: any printable character.
    Ans,
    /// `x+n`: `C` (credit) or `D` (debit) followed by digits.
    XN,
    /// `z`: track-2 code set (digits, `=` separator, `D`).
    Z,
    /// `b`: binary data; lengths count bytes.
    B,
}

impl ContentClass {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "n" => Self::N,
            "a" => Self::A,
            "an" => Self::An,
            "as" => Self::As,
            "ns" => Self::Ns,
            "anp" => Self::Anp,
            "ans" => Self::Ans,
            "x+n" => Self::XN,
            "z" => Self::Z,
            "b" => Self::B,
            _ => return None,
        })
    }

    /// The notation used in specs and error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::N => "n",
            Self::A => "a",
            Self::An => "an",
            Self::As => "as",
            Self::Ns => "ns",
            Self::Anp => "anp",
            Self::Ans => "ans",
            Self::XN => "x+n",
            Self::Z => "z",
            Self::B => "b",
        }
    }

    /// Whether one byte of this class's value is allowed.
    pub fn allows(self, c: u8) -> bool {
        match self {
            Self::N => c.is_ascii_digit(),
            Self::A => c.is_ascii_alphabetic(),
            Self::An => c.is_ascii_alphanumeric() || c == b' ',
            Self::As => c.is_ascii_graphic() && !c.is_ascii_digit() || c == b' ',
            Self::Ns => c.is_ascii_graphic() && !c.is_ascii_alphabetic() || c == b' ',
            Self::Anp => c.is_ascii_alphanumeric() || c == b' ',
            Self::Ans => (0x20..=0x7e).contains(&c),
            Self::XN => c.is_ascii_digit() || c == b'C' || c == b'D',
            Self::Z => c.is_ascii_digit() || c == b'=' || c == b'D',
            Self::B => true,
        }
    }
}

/// How a field's length is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LengthKind {
    /// Always exactly this many units.
    Fixed(usize),
    /// A length prefix of this many digits (2 = LLVAR, 3 = LLLVAR, 4 = LLLLVAR),
    /// then at most `max` units.
    Variable { digits: u8, max: usize },
}

/// How characters (or a length prefix) are represented on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// One ASCII byte per character.
    Ascii,
    /// One EBCDIC (code page 037) byte per character.
    Ebcdic,
    /// Packed BCD: two digits per byte.
    Bcd,
    /// Raw bytes (for `b` data), or a big-endian unsigned integer (for lengths).
    Binary,
    /// Binary data written as upper-case hexadecimal ASCII, two characters per byte.
    Hex,
}

impl Encoding {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ascii" => Self::Ascii,
            "ebcdic" => Self::Ebcdic,
            "bcd" => Self::Bcd,
            "binary" => Self::Binary,
            "hex" => Self::Hex,
            _ => return None,
        })
    }
}

/// Which side of an odd-length BCD value gets the padding nibble.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pad {
    Left,
    Right,
}

/// One field, compiled.
#[derive(Debug, Clone)]
pub struct FieldSpec {
    pub number: u16,
    pub name: String,
    pub class: ContentClass,
    pub length: LengthKind,
    pub encoding: Encoding,
    pub length_encoding: Encoding,
    pub pad: Pad,
    /// Card data: masked in every human-readable output unless asked otherwise.
    pub sensitive: bool,
    /// The format as written in the spec, e.g. `n..19`.
    pub format: String,
}

impl FieldSpec {
    /// Maximum length in the field's own units (characters, digits or bytes).
    pub fn max_len(&self) -> usize {
        match self.length {
            LengthKind::Fixed(n) => n,
            LengthKind::Variable { max, .. } => max,
        }
    }

    /// The field's length in its own units for a logical value of `value_len`
    /// bytes: `x+n` counts only the digits after its `C`/`D` sign, as ISO does.
    pub fn units_of(&self, value_len: usize) -> usize {
        if self.class == ContentClass::XN {
            value_len.saturating_sub(1)
        } else {
            value_len
        }
    }

    /// Bytes of logical value for a length of `units`: the inverse of [`Self::units_of`].
    pub fn value_len_of(&self, units: usize) -> usize {
        if self.class == ContentClass::XN {
            units + 1
        } else {
            units
        }
    }

    /// The prefix name used in error messages: `L`, `LL`, `LLL`, `LLLL`.
    pub fn prefix_name(&self) -> &'static str {
        match self.length {
            LengthKind::Fixed(_) => "fixed",
            LengthKind::Variable { digits: 1, .. } => "L",
            LengthKind::Variable { digits: 2, .. } => "LL",
            LengthKind::Variable { digits: 3, .. } => "LLL",
            LengthKind::Variable { .. } => "LLLL",
        }
    }
}

/// How bitmaps are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BitmapEncoding {
    /// 8 raw bytes per bitmap.
    Binary,
    /// 16 upper-case hexadecimal ASCII characters per bitmap.
    Hex,
}

/// Which fields a message (request or response) carries.
#[derive(Debug, Clone, Default)]
pub struct FieldRule {
    pub mandatory: Vec<u16>,
    pub conditional: Vec<u16>,
    pub optional: Vec<u16>,
}

impl FieldRule {
    /// Whether the field may appear at all.
    pub fn allows(&self, field: u16) -> bool {
        self.mandatory.contains(&field)
            || self.conditional.contains(&field)
            || self.optional.contains(&field)
    }
}

/// One message type of the dialect.
#[derive(Debug, Clone)]
pub struct MessageSpec {
    pub name: String,
    pub mti: [u8; 4],
    pub repeat_mti: Option<[u8; 4]>,
    pub response_mti: Option<[u8; 4]>,
    /// Field 3, when the message is told apart from others of its MTI by it.
    pub processing_code: Option<String>,
    pub description: String,
    pub request: FieldRule,
    pub response: FieldRule,
}

/// A compiled dialect.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub description: String,
    pub mti_encoding: Encoding,
    pub bitmap_encoding: BitmapEncoding,
    /// Bit 65 announces a third bitmap (fields 129–192).
    pub tertiary_bitmap: bool,
    fields: Vec<Option<FieldSpec>>,
    /// Some field is BCD, EBCDIC or hex: parsing needs a decode buffer.
    needs_decoding: bool,
    pub messages: Vec<MessageSpec>,
    pub response_codes: BTreeMap<String, String>,
    /// Minor-unit exponent per ISO 4217 numeric currency code.
    pub currency_exponents: BTreeMap<u16, u32>,
    /// Fields whose values hold subfields, by number (see [`crate::composite`]).
    composites: BTreeMap<u16, crate::composite::Composite>,
}

/// A spec file that cannot be used; names the key and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub key: String,
    pub reason: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spec key `{}`: {}", self.key, self.reason)
    }
}

impl std::error::Error for SpecError {}

fn spec_err(key: impl Into<String>, reason: impl Into<String>) -> SpecError {
    SpecError {
        key: key.into(),
        reason: reason.into(),
    }
}

// ---- the TOML shape -------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    spec: RawHeader,
    fields: BTreeMap<String, RawField>,
    #[serde(default)]
    messages: Vec<RawMessage>,
    #[serde(default)]
    response_codes: BTreeMap<String, String>,
    #[serde(default)]
    currencies: BTreeMap<String, u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeader {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default = "ascii")]
    mti_encoding: String,
    #[serde(default = "binary")]
    bitmap_encoding: String,
    #[serde(default)]
    tertiary_bitmap: bool,
    #[serde(default = "ascii")]
    encoding: String,
    #[serde(default = "ascii")]
    length_encoding: String,
    #[serde(default = "left")]
    pad: String,
}

fn ascii() -> String {
    "ascii".into()
}
fn binary() -> String {
    "binary".into()
}
fn left() -> String {
    "left".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    name: String,
    format: String,
    encoding: Option<String>,
    length_encoding: Option<String>,
    pad: Option<String>,
    #[serde(default)]
    sensitive: bool,
    /// Subfields inside the value (`crate::composite`), kept as TOML until compiled.
    subfields: Option<toml::Table>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMessage {
    name: String,
    mti: String,
    repeat_mti: Option<String>,
    response_mti: Option<String>,
    processing_code: Option<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    request: RawRule,
    #[serde(default)]
    response: RawRule,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    mandatory: Vec<u16>,
    #[serde(default)]
    conditional: Vec<u16>,
    #[serde(default)]
    optional: Vec<u16>,
}

/// Parses an ISO-notation format such as `n6`, `n..19`, `ans...999`, `x+n8`, `b8`.
fn parse_format(format: &str) -> Option<(ContentClass, LengthKind)> {
    let split = format.find(|c: char| c == '.' || c.is_ascii_digit())?;
    let (class, rest) = format.split_at(split);
    let class = ContentClass::parse(class)?;
    let dots = rest.bytes().take_while(|&b| b == b'.').count();
    let n: usize = rest[dots..].parse().ok()?;
    if n == 0 {
        return None;
    }
    // ISO writes LLVAR as `..` and LLLVAR as `...`: one dot per length digit.
    let length = match dots {
        0 => LengthKind::Fixed(n),
        1..=4 => LengthKind::Variable {
            digits: dots as u8,
            max: n,
        },
        _ => return None,
    };
    Some((class, length))
}

fn parse_mti(key: &str, s: &str) -> Result<[u8; 4], SpecError> {
    let b = s.as_bytes();
    if b.len() != 4 || !b.iter().all(u8::is_ascii_digit) {
        return Err(spec_err(key, format!("MTI must be 4 digits, got {s:?}")));
    }
    Ok([b[0], b[1], b[2], b[3]])
}

impl Spec {
    /// Loads a built-in spec by name, or a spec file by path.
    pub fn load(name_or_path: &str) -> Result<Spec, SpecError> {
        if let Some((_, text)) = BUILTIN_SPECS.iter().find(|(n, _)| *n == name_or_path) {
            return Spec::from_toml(text);
        }
        let path = Path::new(name_or_path);
        let text = std::fs::read_to_string(path).map_err(|e| {
            let builtin: Vec<&str> = BUILTIN_SPECS.iter().map(|(n, _)| *n).collect();
            spec_err(
                "spec",
                format!(
                    "{name_or_path:?} is neither a built-in spec ({}) nor a readable file: {e}",
                    builtin.join(", ")
                ),
            )
        })?;
        Spec::from_toml(&text)
    }

    /// The switchboard dialect (specs/README.md), which every switch component uses.
    pub fn switchboard() -> Spec {
        Spec::from_toml(BUILTIN_SPECS[0].1).expect("the built-in switchboard spec is valid")
    }

    /// Compiles a spec from TOML text.
    pub fn from_toml(text: &str) -> Result<Spec, SpecError> {
        let raw: RawSpec = toml::from_str(text).map_err(|e| {
            let key = e
                .span()
                .map(|s| format!("at byte {}", s.start))
                .unwrap_or_default();
            spec_err(key, e.message().to_string())
        })?;
        let h = &raw.spec;
        let enc = |key: &str, v: &str| {
            Encoding::parse(v).ok_or_else(|| {
                spec_err(
                    key,
                    format!("unknown encoding {v:?} (ascii, ebcdic, bcd, binary, hex)"),
                )
            })
        };
        let pad = |key: &str, v: &str| match v {
            "left" => Ok(Pad::Left),
            "right" => Ok(Pad::Right),
            _ => Err(spec_err(
                key,
                format!("pad must be left or right, got {v:?}"),
            )),
        };
        let mti_encoding = enc("spec.mti_encoding", &h.mti_encoding)?;
        if !matches!(
            mti_encoding,
            Encoding::Ascii | Encoding::Bcd | Encoding::Ebcdic
        ) {
            return Err(spec_err(
                "spec.mti_encoding",
                "must be ascii, bcd or ebcdic",
            ));
        }
        let bitmap_encoding = match h.bitmap_encoding.as_str() {
            "binary" => BitmapEncoding::Binary,
            "hex" => BitmapEncoding::Hex,
            v => {
                return Err(spec_err(
                    "spec.bitmap_encoding",
                    format!("must be binary or hex, got {v:?}"),
                ))
            }
        };
        let default_enc = enc("spec.encoding", &h.encoding)?;
        let default_len_enc = enc("spec.length_encoding", &h.length_encoding)?;
        let default_pad = pad("spec.pad", &h.pad)?;

        let mut fields: Vec<Option<FieldSpec>> = vec![None; MAX_FIELD + 1];
        let mut composites = BTreeMap::new();
        for (key, f) in &raw.fields {
            let k = format!("fields.{key}");
            let number: u16 = key
                .parse()
                .ok()
                .filter(|n| (2..=MAX_FIELD as u16).contains(n))
                .ok_or_else(|| spec_err(&k, "field number must be 2..=192"))?;
            if number == 65 && h.tertiary_bitmap {
                return Err(spec_err(
                    &k,
                    "field 65 is the tertiary bitmap in this spec (tertiary_bitmap = true)",
                ));
            }
            if number > 128 && !h.tertiary_bitmap {
                return Err(spec_err(&k, "fields above 128 need tertiary_bitmap = true"));
            }
            let (class, length) = parse_format(&f.format).ok_or_else(|| {
                spec_err(
                    format!("{k}.format"),
                    format!(
                        "{:?} is not an ISO format such as n6, n..19, ans...999, b8",
                        f.format
                    ),
                )
            })?;
            let default_for_class = if class == ContentClass::B
                && matches!(
                    default_enc,
                    Encoding::Ascii | Encoding::Ebcdic | Encoding::Bcd
                ) {
                Encoding::Binary
            } else if class != ContentClass::N
                && class != ContentClass::Z
                && default_enc == Encoding::Bcd
            {
                Encoding::Ascii
            } else {
                default_enc
            };
            let encoding = match &f.encoding {
                Some(e) => enc(&format!("{k}.encoding"), e)?,
                None => default_for_class,
            };
            match (class, encoding) {
                (ContentClass::B, Encoding::Binary | Encoding::Hex) => {}
                (ContentClass::B, _) => {
                    return Err(spec_err(
                        format!("{k}.encoding"),
                        "binary (b) fields are encoded as binary or hex",
                    ))
                }
                (_, Encoding::Binary | Encoding::Hex) => {
                    return Err(spec_err(
                        format!("{k}.encoding"),
                        "only b fields can be binary or hex",
                    ))
                }
                (ContentClass::N | ContentClass::Z, Encoding::Bcd) => {}
                (_, Encoding::Bcd) => {
                    return Err(spec_err(
                        format!("{k}.encoding"),
                        "only n and z fields can be packed BCD",
                    ))
                }
                _ => {}
            }
            let length_encoding = match &f.length_encoding {
                Some(e) => enc(&format!("{k}.length_encoding"), e)?,
                None => default_len_enc,
            };
            if length_encoding == Encoding::Hex {
                return Err(spec_err(
                    format!("{k}.length_encoding"),
                    "lengths are ascii, ebcdic, bcd or binary",
                ));
            }
            if let LengthKind::Variable { digits, max } = length {
                let limit = match length_encoding {
                    Encoding::Binary => {
                        (1usize << (8 * digits_to_bytes(digits, length_encoding))) - 1
                    }
                    _ => 10usize.pow(digits as u32) - 1,
                };
                if max > limit {
                    return Err(spec_err(
                        format!("{k}.format"),
                        format!("maximum {max} does not fit a {digits}-digit length prefix"),
                    ));
                }
            }
            let pad = match &f.pad {
                Some(p) => pad(&format!("{k}.pad"), p)?,
                None => default_pad,
            };
            fields[number as usize] = Some(FieldSpec {
                number,
                name: f.name.clone(),
                class,
                length,
                encoding,
                length_encoding,
                pad,
                sensitive: f.sensitive,
                format: f.format.clone(),
            });
            if let Some(table) = &f.subfields {
                composites.insert(number, crate::composite::compile(&k, table)?);
            }
        }

        let mut messages = Vec::with_capacity(raw.messages.len());
        for (i, m) in raw.messages.iter().enumerate() {
            let k = format!("messages[{i}]");
            let mti = parse_mti(&format!("{k}.mti"), &m.mti)?;
            let repeat_mti = m
                .repeat_mti
                .as_deref()
                .map(|s| parse_mti(&format!("{k}.repeat_mti"), s))
                .transpose()?;
            let response_mti = m
                .response_mti
                .as_deref()
                .map(|s| parse_mti(&format!("{k}.response_mti"), s))
                .transpose()?;
            for (side, rule) in [("request", &m.request), ("response", &m.response)] {
                for &n in rule
                    .mandatory
                    .iter()
                    .chain(&rule.conditional)
                    .chain(&rule.optional)
                {
                    if fields.get(n as usize).and_then(Option::as_ref).is_none() {
                        return Err(spec_err(
                            format!("{k}.{side}"),
                            format!("field {n} is not defined in [fields]"),
                        ));
                    }
                }
            }
            let rule = |r: &RawRule| FieldRule {
                mandatory: r.mandatory.clone(),
                conditional: r.conditional.clone(),
                optional: r.optional.clone(),
            };
            messages.push(MessageSpec {
                name: m.name.clone(),
                mti,
                repeat_mti,
                response_mti,
                processing_code: m.processing_code.clone(),
                description: m.description.clone(),
                request: rule(&m.request),
                response: rule(&m.response),
            });
        }

        let mut currency_exponents = BTreeMap::new();
        for (code, &exponent) in &raw.currencies {
            let number: u16 = code.parse().ok().filter(|n| *n < 1000).ok_or_else(|| {
                spec_err(
                    format!("currencies.{code}"),
                    "must be an ISO 4217 numeric code",
                )
            })?;
            if exponent > 4 {
                return Err(spec_err(
                    format!("currencies.{code}"),
                    "exponent must be 0..=4",
                ));
            }
            currency_exponents.insert(number, exponent);
        }

        let needs_decoding = fields
            .iter()
            .flatten()
            .any(|f| matches!(f.encoding, Encoding::Bcd | Encoding::Ebcdic | Encoding::Hex));
        Ok(Spec {
            needs_decoding,
            name: h.name.clone(),
            description: h.description.clone(),
            mti_encoding,
            bitmap_encoding,
            tertiary_bitmap: h.tertiary_bitmap,
            fields,
            messages,
            response_codes: raw.response_codes,
            currency_exponents,
            composites,
        })
    }

    /// Whether some field's wire form differs from its value (BCD, EBCDIC, hex).
    #[inline]
    pub fn needs_decoding(&self) -> bool {
        self.needs_decoding
    }

    /// The definition of a field, if the spec has one.
    #[inline]
    pub fn field(&self, number: u16) -> Option<&FieldSpec> {
        self.fields.get(number as usize).and_then(Option::as_ref)
    }

    /// The subfields of a field, when the spec defines its value as composite.
    #[inline]
    pub fn subfields(&self, number: u16) -> Option<&crate::composite::Composite> {
        self.composites.get(&number)
    }

    /// Every defined field, in number order.
    pub fn fields(&self) -> impl Iterator<Item = &FieldSpec> {
        self.fields.iter().flatten()
    }

    /// Finds the message spec for an MTI (request, repeat or response) and processing code.
    /// Returns the message and whether the MTI is its response.
    pub fn message_for(
        &self,
        mti: &[u8; 4],
        processing_code: Option<&[u8]>,
    ) -> Option<(&MessageSpec, bool)> {
        let mut fallback = None;
        for m in &self.messages {
            let is_request = m.mti == *mti || m.repeat_mti.as_ref() == Some(mti);
            let is_response = m.response_mti.as_ref() == Some(mti);
            if !is_request && !is_response {
                continue;
            }
            match (&m.processing_code, processing_code) {
                (Some(pc), Some(got)) if pc.as_bytes() == got => return Some((m, is_response)),
                (Some(_), _) => {}
                (None, _) => fallback = fallback.or(Some((m, is_response))),
            }
        }
        fallback
    }

    /// Human description of a response code, if the dialect defines it.
    pub fn response_code(&self, code: &str) -> Option<&str> {
        self.response_codes.get(code).map(String::as_str)
    }
}

/// Bytes taken on the wire by a length prefix of `digits` digits in an encoding.
pub fn digits_to_bytes(digits: u8, encoding: Encoding) -> usize {
    match encoding {
        Encoding::Bcd | Encoding::Binary => (digits as usize).div_ceil(2),
        _ => digits as usize,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse() {
        assert_eq!(
            parse_format("n..19"),
            Some((ContentClass::N, LengthKind::Variable { digits: 2, max: 19 }))
        );
        assert_eq!(
            parse_format("ans...999"),
            Some((
                ContentClass::Ans,
                LengthKind::Variable {
                    digits: 3,
                    max: 999
                }
            ))
        );
        assert_eq!(
            parse_format("x+n8"),
            Some((ContentClass::XN, LengthKind::Fixed(8)))
        );
        assert_eq!(
            parse_format("b8"),
            Some((ContentClass::B, LengthKind::Fixed(8)))
        );
        assert_eq!(parse_format("q8"), None);
        assert_eq!(parse_format("n0"), None);
        assert_eq!(parse_format("n.....9"), None);
    }

    #[test]
    fn builtin_specs_load() {
        for (name, _) in BUILTIN_SPECS {
            Spec::load(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn bad_spec_names_the_key() {
        let text = "[spec]\nname='x'\n[fields]\n2 = { name = 'PAN', format = 'n..zz' }\n";
        let err = Spec::from_toml(text).unwrap_err();
        assert_eq!(err.key, "fields.2.format");
    }
}

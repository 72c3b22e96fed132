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
    ("jpos-iso87a", include_str!("../specs/jpos-iso87a.toml")),
    ("jpos-iso87b", include_str!("../specs/jpos-iso87b.toml")),
    ("cup-pos", include_str!("../specs/cup-pos.toml")),
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
    pub const fn allows(self, c: u8) -> bool {
        match self {
            Self::N => c.is_ascii_digit(),
            Self::A => c.is_ascii_alphabetic(),
            Self::An => c.is_ascii_alphanumeric() || c == b' ',
            Self::As => c.is_ascii_graphic() && !c.is_ascii_digit() || c == b' ',
            Self::Ns => c.is_ascii_graphic() && !c.is_ascii_alphabetic() || c == b' ',
            Self::Anp => c.is_ascii_alphanumeric() || c == b' ',
            Self::Ans => c >= 0x20 && c <= 0x7e,
            Self::XN => c.is_ascii_digit() || c == b'C' || c == b'D',
            Self::Z => c.is_ascii_digit() || c == b'=' || c == b'D',
            Self::B => true,
        }
    }

    /// [`Self::allows`] for every byte value, as a table: checking a value
    /// is then one load per byte rather than the class's tests (validation
    /// checks every byte of every field).
    pub fn byte_table(self) -> &'static [bool; 256] {
        const fn table_of(class: ContentClass) -> [bool; 256] {
            let mut table = [false; 256];
            let mut c = 0usize;
            while c < 256 {
                table[c] = class.allows(c as u8);
                c += 1;
            }
            table
        }
        static TABLES: [[bool; 256]; 10] = [
            table_of(ContentClass::N),
            table_of(ContentClass::A),
            table_of(ContentClass::An),
            table_of(ContentClass::As),
            table_of(ContentClass::Ns),
            table_of(ContentClass::Anp),
            table_of(ContentClass::Ans),
            table_of(ContentClass::XN),
            table_of(ContentClass::Z),
            table_of(ContentClass::B),
        ];
        &TABLES[match self {
            Self::N => 0,
            Self::A => 1,
            Self::An => 2,
            Self::As => 3,
            Self::Ns => 4,
            Self::Anp => 5,
            Self::Ans => 6,
            Self::XN => 7,
            Self::Z => 8,
            Self::B => 9,
        }]
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
    /// One EBCDIC (code page 1047) byte per character: 037 but for `[`, `]` and `^`.
    Ebcdic1047,
    /// One ISO 8859-1 byte per character; values are UTF-8.
    Latin1,
    /// GBK: ASCII as one byte, Chinese as two; values are UTF-8.
    Gbk,
    /// GB 18030: GBK plus four-byte sequences for the rest of Unicode; values are UTF-8.
    Gb18030,
    /// Packed BCD: two digits per byte.
    Bcd,
    /// Raw bytes (for `b` data), or a big-endian unsigned integer (for lengths).
    Binary,
    /// Binary data written as upper-case hexadecimal ASCII, two characters per byte.
    Hex,
}

impl Encoding {
    /// Whether values in this encoding are text in a character set (not BCD, binary or hex).
    pub fn is_charset(self) -> bool {
        matches!(
            self,
            Self::Ascii
                | Self::Ebcdic
                | Self::Ebcdic1047
                | Self::Latin1
                | Self::Gbk
                | Self::Gb18030
        )
    }

    /// Whether the logical value may hold bytes above 0x7F (UTF-8 text).
    pub fn is_wide(self) -> bool {
        matches!(self, Self::Latin1 | Self::Gbk | Self::Gb18030)
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ascii" => Self::Ascii,
            "ebcdic" | "ebcdic-037" => Self::Ebcdic,
            "ebcdic-1047" => Self::Ebcdic1047,
            "latin-1" => Self::Latin1,
            "gbk" => Self::Gbk,
            "gb18030" => Self::Gb18030,
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

/// What a length prefix counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LengthCount {
    /// The field's own units: digits (`n`, `z`), characters (text), bytes (`b`).
    Units,
    /// Bytes on the wire after the prefix.
    Bytes,
    /// Characters of text; hex digits of `b` values; digits of BCD values.
    Characters,
    /// Half bytes: of the wire for text and binary (2 per byte), digits for BCD.
    Nibbles,
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
    /// The padding nibble of an odd-length BCD value: 0x0 or 0xF. Checked when reading.
    pub pad_nibble: u8,
    /// What the length prefix counts.
    pub length_counts: LengthCount,
    /// Side of the padding nibble of an odd-digit BCD length prefix (left:
    /// right-justified `01 04`; right: left-justified `10 40`).
    pub length_pad: Pad,
    /// The character the BCD nibble `D` of a `z` field reads as: `=` or `D`.
    pub separator: u8,
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

    /// What a length prefix announces for a value of `units` in the field's own
    /// units, by the field's `length_counts`.
    pub fn count_of_units(&self, units: usize) -> usize {
        match (self.length_counts, self.encoding) {
            (LengthCount::Units, _) => units,
            (LengthCount::Bytes, Encoding::Bcd) => units.div_ceil(2),
            (LengthCount::Bytes, Encoding::Hex) => units * 2,
            (LengthCount::Characters, _) if self.class == ContentClass::B => units * 2,
            (LengthCount::Nibbles, Encoding::Bcd) => units,
            (LengthCount::Nibbles, _) => units * 2,
            _ => units,
        }
    }

    /// The prefix name used in error messages: `L` to `LLLLLL`.
    pub fn prefix_name(&self) -> &'static str {
        match self.length {
            LengthKind::Fixed(_) => "fixed",
            LengthKind::Variable { digits, .. } => {
                &"LLLLLL"[..(digits as usize).clamp(1, MAX_LENGTH_DIGITS as usize)]
            }
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
    /// 16 upper-case hexadecimal EBCDIC characters per bitmap (`F0`-`F9`, `C1`-`C6`).
    EbcdicHex,
}

/// When the secondary bitmap is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecondaryBitmap {
    /// Only when a field 65–128 (or the tertiary bitmap) is present.
    WhenNeeded,
    /// In every message, all zeros when no field 65–128 is present.
    Always,
}

/// The most length-prefix digits a variable field may have (LLLLLLVAR).
pub const MAX_LENGTH_DIGITS: u8 = 6;

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
    /// Encoding of the primary bitmap.
    pub bitmap_encoding: BitmapEncoding,
    /// Encoding of the secondary and tertiary bitmaps.
    pub secondary_bitmap_encoding: BitmapEncoding,
    pub secondary_bitmap: SecondaryBitmap,
    /// Bytes before the MTI that belong to the message (not to a framing).
    pub header_length: usize,
    /// The header written when a message to build has none.
    pub default_header: bytes::Bytes,
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
    secondary_bitmap_encoding: Option<String>,
    secondary_bitmap: Option<String>,
    #[serde(default)]
    header_length: usize,
    header: Option<String>,
    #[serde(default)]
    tertiary_bitmap: bool,
    #[serde(default = "ascii")]
    encoding: String,
    #[serde(default = "ascii")]
    length_encoding: String,
    #[serde(default = "left")]
    pad: String,
    pad_nibble: Option<String>,
    length_counts: Option<String>,
    length_pad: Option<String>,
    separator: Option<String>,
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
    pad_nibble: Option<String>,
    length_counts: Option<String>,
    length_pad: Option<String>,
    separator: Option<String>,
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
        1..=6 => LengthKind::Variable {
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
        let bitmap_enc = |key: &str, v: &str| match v {
            "binary" => Ok(BitmapEncoding::Binary),
            "hex" => Ok(BitmapEncoding::Hex),
            "ebcdic-hex" => Ok(BitmapEncoding::EbcdicHex),
            v => Err(spec_err(
                key,
                format!("must be binary, hex or ebcdic-hex, got {v:?}"),
            )),
        };
        let bitmap_encoding = bitmap_enc("spec.bitmap_encoding", &h.bitmap_encoding)?;
        let secondary_bitmap_encoding = match &h.secondary_bitmap_encoding {
            Some(v) => bitmap_enc("spec.secondary_bitmap_encoding", v)?,
            None => bitmap_encoding,
        };
        let secondary_bitmap = match h.secondary_bitmap.as_deref() {
            None | Some("when-needed") => SecondaryBitmap::WhenNeeded,
            Some("always") => SecondaryBitmap::Always,
            Some(v) => {
                return Err(spec_err(
                    "spec.secondary_bitmap",
                    format!("must be when-needed or always, got {v:?}"),
                ))
            }
        };
        let default_header = match &h.header {
            None => bytes::Bytes::from(vec![0u8; h.header_length]),
            Some(hex) => {
                let bytes = decode_hex(hex).ok_or_else(|| {
                    spec_err("spec.header", format!("{hex:?} is not hexadecimal"))
                })?;
                if bytes.len() != h.header_length {
                    return Err(spec_err(
                        "spec.header",
                        format!(
                            "{} bytes, but header_length is {}",
                            bytes.len(),
                            h.header_length
                        ),
                    ));
                }
                bytes::Bytes::from(bytes)
            }
        };
        let field_opts = FieldOptions::parse(
            "spec",
            &RawFieldOptions {
                pad_nibble: h.pad_nibble.as_deref(),
                length_counts: h.length_counts.as_deref(),
                length_pad: h.length_pad.as_deref(),
                separator: h.separator.as_deref(),
            },
            &FieldOptions::default(),
        )?;
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
                (ContentClass::N | ContentClass::Z | ContentClass::XN, Encoding::Bcd) => {}
                (_, Encoding::Bcd) => {
                    return Err(spec_err(
                        format!("{k}.encoding"),
                        "only n, z and x+n fields can be packed BCD",
                    ))
                }
                _ => {}
            }
            let length_encoding = match &f.length_encoding {
                Some(e) => enc(&format!("{k}.length_encoding"), e)?,
                None => default_len_enc,
            };
            if !matches!(
                length_encoding,
                Encoding::Ascii
                    | Encoding::Ebcdic
                    | Encoding::Bcd
                    | Encoding::Binary
                    | Encoding::Hex
            ) {
                return Err(spec_err(
                    format!("{k}.length_encoding"),
                    "lengths are ascii, ebcdic, bcd, binary or hex",
                ));
            }
            let pad = match &f.pad {
                Some(p) => pad(&format!("{k}.pad"), p)?,
                None => default_pad,
            };
            let opts = FieldOptions::parse(
                &k,
                &RawFieldOptions {
                    pad_nibble: f.pad_nibble.as_deref(),
                    length_counts: f.length_counts.as_deref(),
                    length_pad: f.length_pad.as_deref(),
                    separator: f.separator.as_deref(),
                },
                &field_opts,
            )?;
            let counts_key = || {
                if f.length_counts.is_some() {
                    format!("{k}.length_counts")
                } else {
                    "spec.length_counts".to_string()
                }
            };
            if opts.length_counts == LengthCount::Characters
                && !(class == ContentClass::B || encoding.is_charset() || encoding == Encoding::Bcd)
            {
                return Err(spec_err(
                    counts_key(),
                    "characters are counted in text, b and BCD values",
                ));
            }
            if opts.length_counts != LengthCount::Units && class == ContentClass::XN {
                return Err(spec_err(counts_key(), "x+n lengths count digits (units)"));
            }
            let compiled = FieldSpec {
                number,
                name: f.name.clone(),
                class,
                length,
                encoding,
                length_encoding,
                pad,
                pad_nibble: opts.pad_nibble.unwrap_or(match pad {
                    Pad::Left => 0x0,
                    Pad::Right => 0xF,
                }),
                length_counts: opts.length_counts,
                length_pad: opts.length_pad,
                separator: opts.separator,
                sensitive: f.sensitive,
                format: f.format.clone(),
            };
            if let LengthKind::Variable { digits, max } = length {
                let limit = match length_encoding {
                    Encoding::Binary => {
                        (1u64 << (8 * digits_to_bytes(digits, length_encoding))) - 1
                    }
                    Encoding::Hex => 16u64.pow(digits as u32) - 1,
                    _ => 10u64.pow(digits as u32) - 1,
                };
                let counted = compiled.count_of_units(max) as u64;
                if counted > limit {
                    return Err(spec_err(
                        format!("{k}.format"),
                        format!(
                            "maximum {max} ({counted} counted) does not fit a {digits}-digit length prefix"
                        ),
                    ));
                }
            }
            fields[number as usize] = Some(compiled);
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
            .any(|f| !matches!(f.encoding, Encoding::Ascii | Encoding::Binary));
        Ok(Spec {
            needs_decoding,
            secondary_bitmap_encoding,
            secondary_bitmap,
            header_length: h.header_length,
            default_header,
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

/// Hexadecimal text (either case, spaces allowed) as bytes.
fn decode_hex(text: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = text.bytes().filter(|b| *b != b' ').collect();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks_exact(2)
        .map(|p| {
            let v = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
            Some((v(p[0])? << 4) | v(p[1])?)
        })
        .collect()
}

/// The field keys that `[spec]` may set for every field.
struct RawFieldOptions<'a> {
    pad_nibble: Option<&'a str>,
    length_counts: Option<&'a str>,
    length_pad: Option<&'a str>,
    separator: Option<&'a str>,
}

/// Compiled [`RawFieldOptions`]; the defaults are the codec's historical behaviour.
#[derive(Clone, Copy)]
struct FieldOptions {
    /// `None`: the side decides (0 on the left, F on the right).
    pad_nibble: Option<u8>,
    length_counts: LengthCount,
    length_pad: Pad,
    separator: u8,
}

impl Default for FieldOptions {
    fn default() -> Self {
        FieldOptions {
            pad_nibble: None,
            length_counts: LengthCount::Units,
            length_pad: Pad::Left,
            separator: b'=',
        }
    }
}

impl FieldOptions {
    /// Reads the keys under `prefix` (`spec` or `fields.N`), falling back to `inherited`.
    fn parse(
        prefix: &str,
        raw: &RawFieldOptions<'_>,
        inherited: &FieldOptions,
    ) -> Result<FieldOptions, SpecError> {
        let mut o = *inherited;
        if let Some(v) = raw.pad_nibble {
            o.pad_nibble = Some(match v {
                "0" => 0x0,
                "F" | "f" => 0xF,
                _ => {
                    return Err(spec_err(
                        format!("{prefix}.pad_nibble"),
                        format!("must be \"0\" or \"F\", got {v:?}"),
                    ))
                }
            });
        }
        if let Some(v) = raw.length_counts {
            o.length_counts = match v {
                "units" => LengthCount::Units,
                "bytes" => LengthCount::Bytes,
                "characters" => LengthCount::Characters,
                "nibbles" => LengthCount::Nibbles,
                _ => {
                    return Err(spec_err(
                        format!("{prefix}.length_counts"),
                        format!("must be units, bytes, characters or nibbles, got {v:?}"),
                    ))
                }
            };
        }
        if let Some(v) = raw.length_pad {
            o.length_pad = match v {
                "left" => Pad::Left,
                "right" => Pad::Right,
                _ => {
                    return Err(spec_err(
                        format!("{prefix}.length_pad"),
                        format!("must be left or right, got {v:?}"),
                    ))
                }
            };
        }
        if let Some(v) = raw.separator {
            o.separator = match v {
                "=" => b'=',
                "D" => b'D',
                _ => {
                    return Err(spec_err(
                        format!("{prefix}.separator"),
                        format!("must be \"=\" or \"D\", got {v:?}"),
                    ))
                }
            };
        }
        Ok(o)
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
    fn a_class_table_holds_the_bytes_the_class_allows() {
        for class in [
            ContentClass::N,
            ContentClass::A,
            ContentClass::An,
            ContentClass::As,
            ContentClass::Ns,
            ContentClass::Anp,
            ContentClass::Ans,
            ContentClass::XN,
            ContentClass::Z,
            ContentClass::B,
        ] {
            let table = class.byte_table();
            for c in 0..=u8::MAX {
                assert_eq!(table[c as usize], class.allows(c), "{class:?} {c:#04x}");
                if c >= 0x80 {
                    assert_eq!(
                        class.allows(c),
                        class == ContentClass::B,
                        "{class:?} {c:#04x}"
                    );
                }
            }
        }
        let count = |class: ContentClass| class.byte_table().iter().filter(|&&b| b).count();
        assert_eq!(count(ContentClass::N), 10);
        assert_eq!(count(ContentClass::Ans), 95);
        assert_eq!(count(ContentClass::B), 256);
    }

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
        assert_eq!(
            parse_format("ans......999999"),
            Some((
                ContentClass::Ans,
                LengthKind::Variable {
                    digits: 6,
                    max: 999999
                }
            ))
        );
        assert_eq!(parse_format("n.......9"), None);
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

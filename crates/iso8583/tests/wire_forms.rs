//! The wire forms a spec can declare beyond the defaults, each as a golden byte
//! vector that parses to the expected value and builds back byte for byte: the BCD
//! pad nibble and its strict check, secondary-bitmap presence and bitmap encodings,
//! length prefixes (1–6 digits, hex, counting bytes or characters, left-justified
//! BCD), signed amounts in BCD, charsets per field, the track-2 separator, and a
//! header before the MTI. Then a round-trip property over generated specs.
//!
//! Where a vector follows another library's packager, the comment names it; the
//! bytes were written out by hand from that packager's definition.

use bytes::Bytes;
use iso8583::codec::{build_bytes, parse, DecodeErrorKind, EncodeError, Location, Message};
use iso8583::Spec;
use proptest::prelude::*;

/// A spec with `header` lines in `[spec]` and `fields` lines in `[fields]`.
fn spec(header: &str, fields: &str) -> Spec {
    try_spec(header, fields).unwrap_or_else(|e| panic!("{e}"))
}

fn try_spec(header: &str, fields: &str) -> Result<Spec, iso8583::spec::SpecError> {
    Spec::from_toml(&format!(
        "[spec]\nname = 'test'\n{header}\n[fields]\n{fields}\n"
    ))
}

fn unhex(s: &str) -> Bytes {
    let digits: Vec<u8> = s
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b'|')
        .collect();
    Bytes::from(hex::decode(digits).expect("test hex"))
}

fn msg(mti: &[u8; 4], fields: &[(u16, &str)]) -> Message {
    let mut m = Message::new(*mti);
    for &(n, v) in fields {
        m.set(n, Bytes::copy_from_slice(v.as_bytes()));
    }
    m
}

/// `wire` parses to `expected` and `expected` builds to `wire`.
fn golden(spec: &Spec, wire: &str, expected: &Message) {
    let wire = unhex(wire);
    let parsed = parse(spec, wire.clone()).unwrap_or_else(|e| panic!("parse: {e}"));
    assert_eq!(&parsed, expected, "parsed");
    let built = build_bytes(spec, expected).unwrap_or_else(|e| panic!("build: {e}"));
    assert_eq!(hex::encode_upper(&built), hex::encode_upper(&wire), "built");
}

fn decode_err(spec: &Spec, wire: &str) -> iso8583::codec::DecodeError {
    parse(spec, unhex(wire)).expect_err("must not parse")
}

// ---- 1. BCD padding ---------------------------------------------------------

const BCD_HEADER: &str = "mti_encoding = 'bcd'\nencoding = 'bcd'\nlength_encoding = 'bcd'";

/// An even-length PAN packed with no pad, read by a spec that expects 19 digits and
/// a left pad: the first nibble is a digit, not the declared pad `0`. (The message of
/// the issue that found the bug: `0800 4000000000000000 19 12345678901234567890`,
/// which had decoded silently as F2 = 2345678901234567890.)
#[test]
fn a_digit_where_the_pad_nibble_belongs_is_an_error() {
    let bcd = Spec::load("iso8583-1987-bcd").unwrap();
    let err = decode_err(&bcd, "0800 4000000000000000 19 12345678901234567890");
    assert_eq!(err.location, Location::Field(2));
    assert_eq!(err.offset, 11);
    assert_eq!(
        err.kind,
        DecodeErrorKind::BadPadding {
            nibble: 1,
            expected: 0
        }
    );
    assert_eq!(
        err.to_string(),
        "field 2: BCD pad nibble 1 is not the declared 0 at offset 11"
    );
    // A pad nibble of 7 is no better.
    let err = decode_err(&bcd, "0800 4000000000000000 19 72345678901234567890");
    assert_eq!(
        err.kind,
        DecodeErrorKind::BadPadding {
            nibble: 7,
            expected: 0
        }
    );
    // The right pad is checked too: 0 where F is declared.
    let right = spec(
        BCD_HEADER,
        "2 = { name = 'PAN', format = 'n..19', pad = 'right' }",
    );
    let err = decode_err(&right, "0800 4000000000000000 19 12345678901234567890");
    assert_eq!((err.offset, err.field()), (20, Some(2)));
    assert_eq!(
        err.kind,
        DecodeErrorKind::BadPadding {
            nibble: 0,
            expected: 0xF
        }
    );
}

/// The pad value is chosen per field: jPOS `BCDInterpreter.RIGHT_PADDED` (as in
/// `IFB_LLBCD` and `IFB_LLLHNUM` without `pad`) pads on the right with `0`, its
/// `RIGHT_PADDED_F` with `F`; `LEFT_PADDED` with `0` on the left.
#[test]
fn pad_nibble_per_field_and_side() {
    let s = spec(
        BCD_HEADER,
        "2 = { name = 'PAN', format = 'n..19', pad = 'right', pad_nibble = '0' }\n\
         3 = { name = 'x', format = 'n3', pad = 'right' }\n\
         4 = { name = 'y', format = 'n3', pad = 'left', pad_nibble = 'F' }",
    );
    golden(
        &s,
        "0200 7000000000000000 16 4761739001010119 | 123F | F123",
        &msg(b"0200", &[(2, "4761739001010119"), (3, "123"), (4, "123")]),
    );
    let golden_odd = "0200 4000000000000000 03 1230";
    golden(&s, golden_odd, &msg(b"0200", &[(2, "123")]));
    let err = decode_err(&s, "0200 4000000000000000 03 123F");
    assert_eq!(
        (err.offset, err.kind),
        (
            12,
            DecodeErrorKind::BadPadding {
                nibble: 0xF,
                expected: 0
            }
        )
    );
}

// ---- 2. Bitmaps ---------------------------------------------------------------

/// A sender that always transmits the secondary bitmap, all zeros when no field
/// 65–128 is present (jPOS `IFB_BITMAP(16)` packagers): kept on encode.
#[test]
fn secondary_bitmap_always() {
    let s = spec(
        "secondary_bitmap = 'always'",
        "3 = { name = 'Processing code', format = 'n6' }\n\
         70 = { name = 'Network management code', format = 'n3' }",
    );
    let wire = "30383030 A000000000000000 0000000000000000 303030303030";
    golden(&s, wire, &msg(b"0800", &[(3, "000000")]));
    // Built with a field 65-128 it is the ordinary form.
    golden(
        &s,
        "30383030 A000000000000000 0400000000000000 303030303030 303031",
        &msg(b"0800", &[(3, "000000"), (70, "001")]),
    );
    // The default drops an all-zero secondary bitmap.
    let default = spec("", "3 = { name = 'Processing code', format = 'n6' }");
    let built = build_bytes(&default, &msg(b"0800", &[(3, "000000")])).unwrap();
    assert_eq!(built.len(), 4 + 8 + 6);
}

/// Bitmaps as EBCDIC hexadecimal characters (jPOS `IFE_BITMAP`), and a different
/// encoding for the secondary bitmap than for the primary.
#[test]
fn ebcdic_hex_bitmaps_and_per_bitmap_encodings() {
    let s = spec(
        "mti_encoding = 'ebcdic'\nencoding = 'ebcdic'\nbitmap_encoding = 'ebcdic-hex'\n\
         secondary_bitmap_encoding = 'binary'",
        "3 = { name = 'Processing code', format = 'n6' }\n\
         70 = { name = 'Network management code', format = 'n3' }",
    );
    golden(
        &s,
        "F0F8F0F0 C1F0F0F0F0F0F0F0F0F0F0F0F0F0F0F0 0400000000000000 F0F0F0F0F0F0 F0F0F1",
        &msg(b"0800", &[(3, "000000"), (70, "001")]),
    );
    let err = decode_err(&s, "F0F8F0F0 C1F0F0F0F0F0F0F0F0F0F0F0F0F0F0C7");
    assert_eq!((err.location, err.offset), (Location::Bitmap(1), 19));
    assert_eq!(
        err.kind,
        DecodeErrorKind::BadByte {
            byte: 0xC7,
            encoding: "EBCDIC hex"
        }
    );
}

// ---- 3. Lengths ---------------------------------------------------------------

/// Six length digits in every length encoding (LLLLLLVAR).
#[test]
fn six_digit_lengths_in_every_encoding() {
    for (length_encoding, prefix) in [
        ("ascii", "303030303035"),
        ("ebcdic", "F0F0F0F0F0F5"),
        ("bcd", "000005"),
        ("binary", "000005"),
        ("hex", "303030303035"),
    ] {
        let s = spec(
            &format!("length_encoding = '{length_encoding}'"),
            "48 = { name = 'Additional data', format = 'ans......99999' }",
        );
        golden(
            &s,
            &format!("30323030 0000000000010000 {prefix} 48454C4C4F"),
            &msg(b"0200", &[(48, "HELLO")]),
        );
    }
}

/// Lengths as hexadecimal text, and length prefixes of 1 digit.
#[test]
fn hex_text_and_one_digit_lengths() {
    let s = spec(
        "length_encoding = 'hex'",
        "48 = { name = 'Additional data', format = 'ans..255' }\n\
         49 = { name = 'Short', format = 'ans.15' }",
    );
    // 26 characters: `1A`; 12 characters in one hex digit: `C`.
    golden(
        &s,
        "30323030 0000000000018000 3141 6162636465666768696A6B6C6D6E6F707172737475767778797A \
         43 414243444546474849404A4B",
        &msg(
            b"0200",
            &[(48, "abcdefghijklmnopqrstuvwxyz"), (49, "ABCDEFGHI@JK")],
        ),
    );
    let err = decode_err(&s, "30323030 0000000000010000 3147 41");
    assert_eq!(
        err.to_string(),
        "field 48: LL length prefix 3147 is not a valid length at offset 12"
    );
}

/// j8583 counts the hex characters of a binary field written as hex; some BCD
/// dialects count the bytes of a packed value rather than its digits.
#[test]
fn lengths_counting_characters_or_bytes() {
    let s = spec(
        BCD_HEADER,
        "52 = { name = 'PIN data', format = 'b..32', encoding = 'hex', length_encoding = 'ascii', length_counts = 'characters' }\n\
         55 = { name = 'ICC data', format = 'b...255', length_counts = 'nibbles' }\n\
         2 = { name = 'PAN', format = 'n..19', pad = 'right', length_counts = 'bytes' }",
    );
    golden(
        &s,
        "0200 4000000000001200 | 10 6222020200112233446F | 3036 414243444546 | 0006 010203",
        &{
            let mut m = msg(b"0200", &[(2, "6222020200112233446")]);
            m.set(52, Bytes::from_static(&[0xAB, 0xCD, 0xEF]));
            m.set(55, Bytes::from_static(&[1, 2, 3]));
            m
        },
    );
    // Half a byte announced.
    let err = decode_err(&s, "0200 0000000000000200 0005 0102030405");
    assert_eq!(
        err.kind,
        DecodeErrorKind::OddLength {
            prefix: "LLL",
            length: 5
        }
    );
}

/// A 3-digit BCD length in two bytes, left-justified (`10 40` for 104) or
/// right-justified (the default, `01 04`).
#[test]
fn left_and_right_justified_bcd_lengths() {
    let value = "x".repeat(104);
    let body = "78".repeat(104);
    for (length_pad, prefix) in [("left", "0104"), ("right", "1040")] {
        let s = spec(
            BCD_HEADER,
            &format!(
                "48 = {{ name = 'Additional data', format = 'ans...999', length_pad = '{length_pad}' }}"
            ),
        );
        golden(
            &s,
            &format!("0200 0000000000010000 {prefix} {body}"),
            &msg(b"0200", &[(48, &value)]),
        );
    }
    let left = spec(
        BCD_HEADER,
        "48 = { name = 'Additional data', format = 'ans...999', length_pad = 'right' }",
    );
    // The pad nibble of a length is 0.
    let err = decode_err(&left, "0200 0000000000010000 104F");
    assert_eq!((err.field(), err.offset), (Some(48), 10));
}

/// A signed amount: `C` or `D` then digits, in BCD (the sign as one ASCII byte, as
/// jPOS `IFB_AMOUNT` packs it) and in EBCDIC (jPOS `IFE_AMOUNT`).
#[test]
fn signed_amounts_in_bcd_and_ebcdic() {
    let s = spec(
        BCD_HEADER,
        "28 = { name = 'Amount, transaction fee', format = 'x+n8', encoding = 'bcd' }\n\
         29 = { name = 'Amount, settlement fee', format = 'x+n8', encoding = 'ebcdic' }",
    );
    golden(
        &s,
        "0200 0000001800000000 43 00001250 | C4 F0F0F0F0F0F1F0F0",
        &msg(b"0200", &[(28, "C00001250"), (29, "D00000100")]),
    );
    let err = decode_err(&s, "0200 0000001000000000 58 00001250");
    assert_eq!(
        (err.offset, err.kind),
        (
            10,
            DecodeErrorKind::BadByte {
                byte: 0x58,
                encoding: "sign (C or D)"
            }
        )
    );
}

// ---- 5. Charsets ----------------------------------------------------------------

/// Found by the parse_wire_forms fuzz target: a GBK merchant name ending in A2 E3,
/// which the WHATWG decoder reads as `€` and the GBK encoder writes as the one
/// byte 80, so the 40-byte field parsed and then could not be built (39 bytes).
/// The other spelling is refused where it starts, naming the field.
#[test]
fn gbk_euro_sign_in_its_gb18030_spelling_is_refused() {
    let s = Spec::from_toml(include_str!("specs/wire_forms_terminal.toml")).unwrap();
    let crash = "0001004030 0100 0000000000200000 \
                 48A848484848A8A8A8E1A8A8A8A8A8A8E1A8A8880054545460000100200000000027F85DA2E39060";
    let err = decode_err(&s, crash);
    assert_eq!((err.field(), err.offset), (Some(43), 51));
    assert_eq!(
        err.kind,
        DecodeErrorKind::BadByte {
            byte: 0xA2,
            encoding: "GBK"
        }
    );
    // Its GBK spelling, 80, parses and builds back to the same 40 bytes (this
    // spec always writes a secondary bitmap).
    golden(
        &s,
        &format!(
            "0001004030 0100 8000000000200000 0000000000000000 4180{}",
            "20".repeat(38)
        ),
        &{
            let mut m = msg(b"0100", &[(43, &format!("A\u{20AC}{}", " ".repeat(38)))]);
            m.set_header(unhex("0001004030"));
            m
        },
    );
}

/// The merchant name of a Chinese domestic dialect: `ans40`, GBK, 40 bytes on the
/// wire, space-filled. 中国银联 is D6D0 B9FA D2F8 C1AA in GBK.
#[test]
fn gbk_merchant_name() {
    let s = spec(
        "",
        "43 = { name = 'Card acceptor name/location', format = 'ans40', encoding = 'gbk' }\n\
         48 = { name = 'Additional data', format = 'ans...999', encoding = 'gb18030', length_counts = 'characters' }",
    );
    let name = format!("中国银联{}", " ".repeat(32));
    golden(
        &s,
        &format!(
            "30323030 0000000000210000 D6D0B9FAD2F8C1AA{} 303033 41D6D0B9FA",
            "20".repeat(32)
        ),
        &msg(b"0200", &[(43, &name), (48, "A中国")]),
    );
    // D6 7F is no GBK character: the error names the field and the byte's offset.
    let bad = format!("30323030 0000000000200000 41D67F{}", "20".repeat(37));
    let err = decode_err(&s, &bad);
    assert_eq!((err.field(), err.offset), (Some(43), 13));
    assert_eq!(
        err.kind,
        DecodeErrorKind::BadByte {
            byte: 0xD6,
            encoding: "GBK"
        }
    );
    // A character GBK cannot write is an encode error at its position.
    let wide = msg(b"0200", &[(43, &format!("ab\u{1F600}{}", " ".repeat(34)))]);
    assert_eq!(
        build_bytes(&s, &wide).unwrap_err(),
        EncodeError::Unencodable {
            field: Some(43),
            position: 2,
            byte: 0xF0,
            encoding: "GBK"
        }
    );
    // A 40-byte field holds 40 bytes of GBK, not 40 characters.
    let long = msg(b"0200", &[(43, &"中".repeat(40))]);
    assert_eq!(
        build_bytes(&s, &long).unwrap_err(),
        EncodeError::WrongLength {
            field: 43,
            expected: 40,
            actual: 80
        }
    );
}

#[test]
fn ebcdic_1047_and_latin_1() {
    let s = spec(
        "",
        "44 = { name = 'e', format = 'ans..10', encoding = 'ebcdic-1047', length_encoding = 'ebcdic' }\n\
         45 = { name = 'l', format = 'ans..10', encoding = 'latin-1' }\n\
         46 = { name = 'e037', format = 'ans..10', encoding = 'ebcdic' }",
    );
    golden(
        &s,
        "30323030 00000000001C0000 F0F3 AD5FBD | 3035 636166E921 | 3033 BAB0BB",
        &msg(b"0200", &[(44, "[^]"), (45, "café!"), (46, "[^]")]),
    );
    // 0x41 has no character in EBCDIC 1047.
    let err = decode_err(&s, "30323030 0000000000100000 F0F1 41");
    assert_eq!((err.field(), err.offset), (Some(44), 14));
}

/// The track-2 separator nibble `D` reads back as `=` by default, or as `D` when the
/// spec says so, and builds from either.
#[test]
fn track_2_separator() {
    let fields =
        |sep: &str| format!("35 = {{ name = 'Track 2', format = 'z..37', pad = 'right' {sep} }}");
    let wire = "0200 0000000020000000 31 4761739001010119D22122011758928F";
    let equals = spec(BCD_HEADER, &fields(""));
    golden(
        &equals,
        wire,
        &msg(b"0200", &[(35, "4761739001010119=22122011758928")]),
    );
    let d = spec(BCD_HEADER, &fields(", separator = 'D'"));
    golden(
        &d,
        wire,
        &msg(b"0200", &[(35, "4761739001010119D22122011758928")]),
    );
    // `=` is still accepted when building.
    let built = build_bytes(
        &d,
        &msg(b"0200", &[(35, "4761739001010119=22122011758928")]),
    );
    assert_eq!(built.unwrap(), unhex(wire));
}

// ---- 6. Header ---------------------------------------------------------------------

/// Terminal links put a 5-byte TPDU (`60` + destination + origin) before the MTI.
#[test]
fn header_before_the_mti() {
    let s = spec(
        &format!("{BCD_HEADER}\nheader_length = 5\nheader = '6000010000'"),
        "3 = { name = 'Processing code', format = 'n6' }",
    );
    let wire = unhex("6000030000 0800 2000000000000000 990000");
    let parsed = parse(&s, wire.clone()).unwrap();
    assert_eq!(parsed.header().as_ref(), [0x60, 0, 3, 0, 0]);
    assert_eq!(parsed.get(3), Some(&b"990000"[..]));
    assert_eq!(build_bytes(&s, &parsed).unwrap(), wire);
    // A message without a header gets the spec's.
    let built = build_bytes(&s, &msg(b"0800", &[(3, "990000")])).unwrap();
    assert_eq!(&built[..5], [0x60, 0, 1, 0, 0]);
    let err = decode_err(&s, "600003");
    assert_eq!((err.location, err.offset), (Location::Header, 0));
    let mut wrong = msg(b"0800", &[(3, "990000")]);
    wrong.set_header(Bytes::from_static(b"xy"));
    assert_eq!(
        build_bytes(&s, &wrong).unwrap_err(),
        EncodeError::WrongHeader {
            expected: 5,
            actual: 2
        }
    );
}

// ---- Spec errors name the key -----------------------------------------------------

#[test]
fn new_keys_are_checked_and_named() {
    for (header, fields, key) in [
        (
            "",
            "2 = { name = 'a', format = 'n..19', pad_nibble = '7' }",
            "fields.2.pad_nibble",
        ),
        ("pad_nibble = 'x'", "", "spec.pad_nibble"),
        (
            "secondary_bitmap = 'sometimes'",
            "",
            "spec.secondary_bitmap",
        ),
        (
            "secondary_bitmap_encoding = 'octal'",
            "",
            "spec.secondary_bitmap_encoding",
        ),
        ("header_length = 2\nheader = '600001'", "", "spec.header"),
        (
            "",
            "2 = { name = 'a', format = 'n..19', length_counts = 'words' }",
            "fields.2.length_counts",
        ),
        (
            "",
            "28 = { name = 'a', format = 'x+n8', length_counts = 'bytes' }",
            "fields.28.length_counts",
        ),
        (
            "",
            "2 = { name = 'a', format = 'n..19', length_pad = 'middle' }",
            "fields.2.length_pad",
        ),
        (
            "",
            "35 = { name = 'a', format = 'z..37', separator = '^' }",
            "fields.35.separator",
        ),
        (
            "",
            "43 = { name = 'a', format = 'ans40', encoding = 'big5' }",
            "fields.43.encoding",
        ),
        (
            "",
            "48 = { name = 'a', format = 'b..99', length_encoding = 'gbk' }",
            "fields.48.length_encoding",
        ),
        (
            "length_encoding = 'hex'",
            "48 = { name = 'a', format = 'ans..999' }",
            "fields.48.format",
        ),
        (
            "",
            "48 = { name = 'a', format = 'b..60', length_counts = 'nibbles' }",
            "fields.48.format",
        ),
    ] {
        let err = try_spec(header, fields).expect_err(key);
        assert_eq!(err.key, key, "{header} {fields}: {err}");
    }
}

// ---- Round trips over generated specs ------------------------------------------------

/// One generated field: its TOML and a generator of valid values.
#[derive(Debug, Clone)]
struct GenField {
    toml: String,
    alphabet: &'static [&'static str],
    fixed: Option<usize>,
    max: usize,
    /// Values must have an even length (bytes-counted BCD with a pad the reader cannot see).
    even: bool,
}

fn gen_field() -> impl Strategy<Value = GenField> {
    let kind = prop_oneof![
        Just(("n", "bcd")),
        Just(("n", "ascii")),
        Just(("n", "ebcdic")),
        Just(("z", "bcd")),
        Just(("x+n", "bcd")),
        Just(("ans", "ebcdic-1047")),
        Just(("ans", "latin-1")),
        Just(("ans", "gbk")),
        Just(("ans", "gb18030")),
        Just(("b", "hex")),
        Just(("b", "binary")),
    ];
    (
        kind,
        prop::option::of(1usize..6),
        1u8..=6,
        prop_oneof![Just("ascii"), Just("ebcdic"), Just("bcd"), Just("binary"), Just("hex")],
        prop_oneof![Just("units"), Just("bytes"), Just("characters"), Just("nibbles")],
        prop_oneof![Just("left"), Just("right")],
        prop_oneof![Just("0"), Just("F")],
        prop_oneof![Just("left"), Just("right")],
        prop_oneof![Just("="), Just("D")],
    )
        .prop_map(
            |((class, encoding), fixed, digits, length_encoding, counts, pad, nibble, lpad, sep)| {
                let max = 9;
                let format = match fixed {
                    Some(n) => format!("{class}{n}"),
                    None => format!("{class}{}{max}", ".".repeat(digits as usize)),
                };
                let counts = if class == "x+n" { "units" } else { counts };
                let toml = format!(
                    "{{ name = 'f', format = '{format}', encoding = '{encoding}', \
                     length_encoding = '{length_encoding}', length_counts = '{counts}', pad = '{pad}', \
                     pad_nibble = '{nibble}', length_pad = '{lpad}', separator = '{sep}' }}"
                );
                let alphabet: &'static [&'static str] = match (class, encoding) {
                    ("n", _) | ("x+n", _) => &["0", "1", "5", "9"],
                    ("z", _) if sep == "D" => &["0", "7", "9", "D"],
                    ("z", _) => &["0", "7", "9", "="],
                    ("ans", "gbk") | ("ans", "gb18030") => &["a", " ", "中", "银"],
                    ("ans", "latin-1") => &["a", "é", "ÿ", "~"],
                    ("ans", _) => &["a", "[", "^", "}"],
                    _ => &["\u{0}", "\u{7f}", "A"],
                };
                let even = class != "b" && encoding == "bcd" && counts == "bytes" && nibble == "0";
                GenField {
                    toml,
                    alphabet,
                    fixed,
                    max,
                    even,
                }
            },
        )
}

/// A value of `units` units from the field's alphabet; wide charsets count wire
/// bytes, so a two-byte character takes two units.
fn value_for(field: &GenField, encoding_wide: bool, units: usize, pick: &[usize]) -> Vec<u8> {
    let mut v = String::new();
    let mut used = 0;
    let mut i = 0;
    while used < units {
        let s = field.alphabet[pick[i % pick.len()] % field.alphabet.len()];
        i += 1;
        let cost = if encoding_wide && !s.is_ascii() {
            if field.toml.contains("latin-1") {
                1
            } else {
                2
            }
        } else {
            1
        };
        if used + cost > units {
            v.push_str(field.alphabet[0]);
            used += 1;
            continue;
        }
        v.push_str(s);
        used += cost;
    }
    v.into_bytes()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn build_parse_build_over_generated_specs(
        field in gen_field(),
        always in any::<bool>(),
        header_length in 0usize..4,
        len in 1usize..10,
        pick in prop::collection::vec(0usize..4, 1..12),
    ) {
        let header = format!(
            "secondary_bitmap = '{}'\nheader_length = {header_length}",
            if always { "always" } else { "when-needed" },
        );
        // Specs whose maximum does not fit the prefix are refused at load; skip those.
        let Ok(s) = try_spec(&header, &format!("48 = {}\n70 = {{ name = 'n', format = 'n3' }}", field.toml)) else {
            return Ok(());
        };
        let f = s.field(48).unwrap();
        let wide = f.encoding.is_wide();
        let mut units = field.fixed.unwrap_or(len.min(field.max));
        if field.even && field.fixed.is_none() && units % 2 == 1 {
            units -= 1;
        }
        if units == 0 {
            return Ok(());
        }
        let mut value = value_for(&field, wide, units, &pick);
        if field.toml.contains("x+n") {
            value.insert(0, b'D');
        }
        let mut m = Message::new(*b"0200");
        m.set(48, Bytes::from(value));
        if pick[0] == 0 {
            m.set(70, Bytes::from_static(b"301"));
        }
        let wire = build_bytes(&s, &m).unwrap_or_else(|e| panic!("{}: {e}", field.toml));
        let parsed = parse(&s, wire.clone()).unwrap_or_else(|e| panic!("{}: {e}", field.toml));
        let again = build_bytes(&s, &parsed).unwrap();
        prop_assert_eq!(&again, &wire, "{}", field.toml);
        if header_length == 0 {
            prop_assert_eq!(&parsed, &m, "{}", field.toml);
        } else {
            prop_assert_eq!(parsed.fields().collect::<Vec<_>>(), m.fields().collect::<Vec<_>>());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_with_new_forms(
        field in gen_field(),
        data in prop::collection::vec(any::<u8>(), 0..80),
    ) {
        let Ok(s) = try_spec("bitmap_encoding = 'ebcdic-hex'\nheader_length = 1", &format!("48 = {}", field.toml)) else {
            return Ok(());
        };
        if let Ok(m) = parse(&s, Bytes::from(data)) {
            let rebuilt = build_bytes(&s, &m).unwrap();
            prop_assert_eq!(parse(&s, rebuilt).unwrap(), m);
        }
    }
}

/// Validation measures wide-charset values in wire bytes and lets their non-ASCII
/// characters through the text classes.
#[test]
fn validation_of_gbk_text() {
    use iso8583::validate::{validate, Violation};
    let s = spec(
        "",
        "43 = { name = 'Card acceptor name/location', format = 'ans40', encoding = 'gbk' }",
    );
    let ok = msg(b"0200", &[(43, &format!("中国银联{}", " ".repeat(32)))]);
    let v = validate(&s, &ok);
    assert!(
        !v.violations.iter().any(|v| matches!(
            v,
            Violation::BadLength { .. } | Violation::BadContent { .. }
        )),
        "{:?}",
        v.violations
    );
    let long = msg(b"0200", &[(43, &format!("中国银联{}", " ".repeat(36)))]);
    assert!(validate(&s, &long)
        .violations
        .iter()
        .any(|v| matches!(v, Violation::BadLength { field: 43, .. })));
}

/// pyiso8583's `len_count = "nibbles"` vectors (knovichikhin/pyiso8583,
/// tests/test_nibbles.py): MTI and bitmap as ASCII text, field 2 `1234` as text or
/// as two bytes, odd `123` packed with each pad; the prefix counts half bytes.
#[test]
fn pyiso8583_nibble_vectors() {
    let head = "bitmap_encoding = 'hex'";
    let mti_bitmap = "30323030 34303030303030303030303030303030";
    for (field, prefix_and_data, value) in [
        // data ascii, len ascii / binary (2 bytes): `08` / `00 08`, then "1234"
        ("format = 'ans..4'", "3038 31323334", &b"1234"[..]),
        (
            "format = 'ans...4', length_encoding = 'binary'",
            "0008 31323334",
            b"1234",
        ),
        // data binary, len ascii / binary: `04` / `00 04`, then 12 34
        ("format = 'b..2'", "3034 1234", &[0x12, 0x34]),
        (
            "format = 'b...2', length_encoding = 'binary'",
            "0004 1234",
            &[0x12, 0x34],
        ),
        // odd digits packed: left pad 0 / F, right pad 0 / F
        ("format = 'n..4', encoding = 'bcd'", "3033 0123", b"123"),
        (
            "format = 'n..4', encoding = 'bcd', pad_nibble = 'F'",
            "3033 F123",
            b"123",
        ),
        (
            "format = 'n..4', encoding = 'bcd', pad = 'right', pad_nibble = '0'",
            "3033 1230",
            b"123",
        ),
        (
            "format = 'n..4', encoding = 'bcd', pad = 'right'",
            "3033 123F",
            b"123",
        ),
        (
            "format = 'n...4', encoding = 'bcd', length_encoding = 'binary'",
            "0003 0123",
            b"123",
        ),
    ] {
        let s = spec(
            head,
            &format!("2 = {{ name = 'PAN', {field}, length_counts = 'nibbles' }}"),
        );
        let mut m = Message::new(*b"0200");
        m.set(2, Bytes::copy_from_slice(value));
        golden(&s, &format!("{mti_bitmap} {prefix_and_data}"), &m);
    }
    // "Field data is 8 nibbles, larger than maximum 4: field 2 pos 20"
    let s = spec(
        head,
        "2 = { name = 'PAN', format = 'ans..2', length_counts = 'nibbles' }",
    );
    let err = decode_err(&s, &format!("{mti_bitmap} 3038 31323334"));
    assert_eq!(
        (err.offset, err.kind),
        (
            20,
            DecodeErrorKind::LengthExceedsMax {
                prefix: "LL",
                length: 8,
                max: 4
            }
        )
    );
}

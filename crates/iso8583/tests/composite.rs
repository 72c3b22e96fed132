//! Subfields: EMV field 55 from published messages, the fixed, tag-length-value
//! and bitmap layouts of tests/specs/composite.toml, errors inside subfields,
//! spec errors, and build → parse → build over generated layouts and values.

use bytes::Bytes;
use iso8583::codec::{build_bytes, parse, Message};
use iso8583::composite::{SubValue, SubfieldErrorKind, Subfields};
use iso8583::Spec;

fn spec() -> Spec {
    Spec::from_toml(include_str!("specs/composite.toml")).expect("the test spec compiles")
}

fn unhex(s: &str) -> Bytes {
    Bytes::from(hex::decode(s).unwrap())
}

fn keys(subfields: &Subfields) -> Vec<&str> {
    subfields.iter().map(|(k, _)| k).collect()
}

fn value(subfields: &Subfields, key: &str) -> Bytes {
    match subfields.get(key) {
        Some(SubValue::Value(v)) => v.clone(),
        other => panic!("{key}: {other:?}"),
    }
}

fn nested<'a>(subfields: &'a Subfields, key: &str) -> &'a Subfields {
    match subfields.get(key) {
        Some(SubValue::Subfields(s)) => s,
        other => panic!("{key}: {other:?}"),
    }
}

/// Field 55 of an EMV purchase from a public test suite: `DEFAULT_ISO_FIELD_55`
/// in github.com/Chuckks/Iso8583Lib,
/// Iso8583Lib/src/test/java/com/bbva/iso8583lib/IsoFileTest.kt.
const PUBLISHED_F55: &str = "5F2A02048482021C008407A0000000032010950580800080009A032401089C01009F02060000000900009F03060000000000009F090200839F100706010A03A4A8109F1A0204849F1E0836523635333530349F26082E078F5CEA112DAA9F2701809F3303E0B0C89F34030103029F3501229F4104000000019F530100";

#[test]
fn emv_field_55_from_a_published_message() {
    let spec = Spec::load("iso8583-1987-bcd").unwrap();
    let layout = spec.subfields(55).expect("field 55 is BER-TLV");
    assert_eq!(layout.kind(), "ber-tlv");
    let flat = unhex(PUBLISHED_F55);
    let tags = layout.decode(55, &flat).unwrap();
    assert_eq!(
        keys(&tags),
        [
            "5F2A", "82", "84", "95", "9A", "9C", "9F02", "9F03", "9F09", "9F10", "9F1A", "9F1E",
            "9F26", "9F27", "9F33", "9F34", "9F35", "9F41", "9F53"
        ]
    );
    assert_eq!(value(&tags, "9F26"), unhex("2E078F5CEA112DAA"));
    assert_eq!(value(&tags, "82"), unhex("1C00"));
    assert_eq!(value(&tags, "84"), unhex("A0000000032010"));
    assert_eq!(value(&tags, "9F02"), unhex("000000090000"));
    assert_eq!(value(&tags, "5F2A"), unhex("0484"));
    let names: Vec<&str> = ["9F26", "82", "95", "9F27", "9F10", "5F2A"]
        .iter()
        .map(|k| layout.element(k).unwrap().name)
        .collect();
    assert_eq!(
        names,
        [
            "Application Cryptogram",
            "Application Interchange Profile",
            "Terminal Verification Results",
            "Cryptogram Information Data",
            "Issuer Application Data",
            "Transaction Currency Code"
        ]
    );
    assert_eq!(layout.encode(55, &tags).unwrap(), flat);

    // Inside a whole message the field is still the flat bytes, untouched.
    let mut msg = Message::new(*b"0200");
    msg.set(3, "000000").set(11, "000001").set(55, flat.clone());
    let wire = build_bytes(&spec, &msg).unwrap();
    let back = parse(&spec, wire).unwrap();
    assert_eq!(back.get(55), Some(&flat[..]));
}

/// The hand-assembled BCD purchase vector carries F55 with 9F36 and 9F37: it
/// decodes as BER-TLV and encodes back byte for byte.
#[test]
fn the_bcd_golden_vector_field_55_decodes() {
    let spec = Spec::load("iso8583-1987-bcd").unwrap();
    let text = include_str!("vectors/bcd/0200-purchase-request.hex");
    let json = text
        .lines()
        .find_map(|l| l.strip_prefix("# json: "))
        .unwrap();
    let json: serde_json::Value = serde_json::from_str(json).unwrap();
    let flat = unhex(json["fields"]["55"].as_str().unwrap());
    let layout = spec.subfields(55).unwrap();
    let tags = layout.decode(55, &flat).unwrap();
    assert_eq!(value(&tags, "9F36"), unhex("0021"));
    assert_eq!(value(&tags, "9F37"), unhex("5D2E81C4"));
    assert_eq!(
        layout.element("9F36").unwrap().name,
        "Application Transaction Counter (ATC)"
    );
    assert_eq!(layout.encode(55, &tags).unwrap(), flat);
}

#[test]
fn constructed_tags_nest_and_card_data_is_marked_sensitive() {
    let spec = spec();
    let layout = spec.subfields(55).unwrap();
    // 70 { 5A PAN, 5F20 name }, 9F36 ATC, 71 { 86 script command }
    let flat = unhex(
        "701C5A0847617390010101195F200F46554C4C2F46554E4354494F4E414C9F360200017106860400A0B0C0",
    );
    let tags = layout.decode(55, &flat).unwrap();
    assert_eq!(keys(&tags), ["70", "9F36", "71"]);
    let record = nested(&tags, "70");
    assert_eq!(keys(record), ["5A", "5F20"]);
    assert_eq!(
        value(record, "5F20"),
        Bytes::from_static(b"FULL/FUNCTIONAL")
    );
    assert!(layout.element("5A").unwrap().sensitive);
    assert!(layout.element("57").unwrap().sensitive);
    assert!(!layout.element("9F26").unwrap().sensitive);
    assert!(layout.element("70").unwrap().subfields.is_some());
    assert!(layout.element("9F26").unwrap().subfields.is_none());
    assert_eq!(layout.encode(55, &tags).unwrap(), flat);
    // Debug output shows lengths, never the card number.
    assert!(!format!("{tags:?}").contains("4761"), "{tags:?}");
}

#[test]
fn ber_tlv_length_forms_and_multi_byte_tags() {
    let layout = spec();
    let layout = layout.subfields(55).unwrap();
    let mut tags = Subfields::new();
    tags.push("DF8101", SubValue::value(vec![0x11; 200]))
        .push("9F10", SubValue::value(vec![0x22; 300]))
        .push("82", SubValue::value(vec![0x33; 2]));
    let flat = layout.encode(55, &tags).unwrap();
    assert_eq!(&flat[..5], &[0xDF, 0x81, 0x01, 0x81, 200]);
    assert_eq!(&flat[205..210], &[0x9F, 0x10, 0x82, 0x01, 0x2C]);
    assert_eq!(layout.decode(55, &flat).unwrap(), tags);
}

fn ber_error(hex: &str) -> iso8583::composite::SubfieldError {
    spec()
        .subfields(55)
        .unwrap()
        .decode(55, &unhex(hex))
        .unwrap_err()
}

#[test]
fn ber_tlv_errors_name_the_tag_the_offset_and_why() {
    let e = ber_error("82021C009F2608AABBCC");
    assert_eq!(
        e.to_string(),
        "field 55, subfield 9F26: needs 8 bytes but only 3 remain at offset 7 of the field's value"
    );
    // A hostile length is refused before anything is allocated for it.
    let e = ber_error("9F2682FFFF00");
    assert_eq!(
        e.kind,
        SubfieldErrorKind::Truncated {
            needed: 0xFFFF,
            available: 1
        }
    );
    let e = ber_error("9F268105AABBCCDDEE");
    assert_eq!(
        e.to_string(),
        "field 55, subfield 9F26: length 8105: not in its shortest form at offset 2 of the field's value"
    );
    assert!(matches!(
        ber_error("9F2680").kind,
        SubfieldErrorKind::BadLength { .. }
    ));
    assert!(matches!(
        ber_error("9F26830000010000").kind,
        SubfieldErrorKind::BadLength { .. }
    ));
    assert!(matches!(
        ber_error("DF818101").kind,
        SubfieldErrorKind::BadTag { .. }
    ));
    assert!(matches!(
        ber_error("0000").kind,
        SubfieldErrorKind::BadTag { .. }
    ));
    assert!(matches!(
        ber_error("9F").kind,
        SubfieldErrorKind::Truncated { .. }
    ));
    assert_eq!(ber_error("8201AA8201BB").kind, SubfieldErrorKind::Duplicate);
    // Inside a constructed tag the path and offset are the inner tag's.
    let e = ber_error("70055A08123456");
    assert_eq!(e.path, ["70", "5A"]);
    assert_eq!(e.offset, 4);
    // Nine levels of constructed tags against the default limit of eight.
    let mut deep = unhex("8200");
    for _ in 0..9 {
        let mut outer = vec![0xE1, deep.len() as u8];
        outer.extend_from_slice(&deep);
        deep = Bytes::from(outer);
    }
    let e = ber_error(&hex::encode(&deep));
    assert_eq!(e.kind, SubfieldErrorKind::TooDeep { limit: 8 });
    assert_eq!(e.path.len(), 8);
}

#[test]
fn fixed_subfields_with_trailing_ones_absent() {
    let spec = spec();
    let layout = spec.subfields(60).unwrap();
    let flat = Bytes::from_static(b"22000001003");
    let subs = layout.decode(60, &flat).unwrap();
    assert_eq!(keys(&subs), ["1", "2", "3"]);
    assert_eq!(value(&subs, "2"), Bytes::from_static(b"000001"));
    assert_eq!(layout.element("2").unwrap().name, "Batch number");
    assert_eq!(layout.encode(60, &subs).unwrap(), flat);

    // The field itself is packed BCD with an LLL length; the subfields are its digits.
    let mut msg = Message::new(*b"0800");
    msg.set(60, flat.clone());
    let wire = build_bytes(&spec, &msg).unwrap();
    assert!(
        wire.ends_with(&[0x00, 0x11, 0x02, 0x20, 0x00, 0x00, 0x10, 0x03]),
        "{wire:02X?}"
    );
    assert_eq!(parse(&spec, wire).unwrap().get(60), Some(&flat[..]));

    let e = layout
        .decode(60, &Bytes::from_static(b"2200000"))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "field 60, subfield 2: needs 6 bytes but only 5 remain at offset 2 of the field's value"
    );
    let mut gap = Subfields::new();
    gap.push("1", SubValue::value("22"))
        .push("3", SubValue::value("003"));
    let e = layout.encode(60, &gap).unwrap_err();
    assert_eq!(e.path, ["2"]);
    assert!(
        e.to_string().starts_with("field 60, subfield 2: absent"),
        "{e}"
    );
    let mut short = Subfields::new();
    short.push("1", SubValue::value("2"));
    assert_eq!(
        layout.encode(60, &short).unwrap_err().to_string(),
        "field 60, subfield 1: fixed length 2, value has 1"
    );
}

#[test]
fn tag_length_value_subfields() {
    let spec = spec();
    let layout = spec.subfields(48).unwrap();
    let flat = Bytes::from_static(b"A2011TERMINAL 01PN0166222020200112233010060001230");
    let e = layout.decode(48, &flat).unwrap_err();
    // One character too many at the end: not a whole tag.
    assert_eq!(
        e.kind,
        SubfieldErrorKind::Truncated {
            needed: 2,
            available: 1
        }
    );
    let flat = flat.slice(..flat.len() - 1);
    let subs = layout.decode(48, &flat).unwrap();
    assert_eq!(keys(&subs), ["A2", "PN", "01"]);
    assert_eq!(value(&subs, "A2"), Bytes::from_static(b"TERMINAL 01"));
    assert_eq!(value(&subs, "01"), Bytes::from_static(b"000123"));
    assert!(layout.element("PN").unwrap().sensitive);
    assert_eq!(layout.encode(48, &subs).unwrap(), flat);

    let undefined = layout
        .decode(48, &Bytes::from_static(b"ZZ003abc"))
        .unwrap_err();
    assert_eq!(
        undefined.to_string(),
        "field 48, subfield ZZ: not defined by the spec at offset 0 of the field's value"
    );
    let twice = layout
        .decode(48, &Bytes::from_static(b"0100600000101006000002"))
        .unwrap_err();
    assert_eq!(
        (twice.kind, twice.offset),
        (SubfieldErrorKind::Duplicate, 11)
    );
    let short = layout
        .decode(48, &Bytes::from_static(b"0100500001"))
        .unwrap_err();
    assert_eq!(
        short.kind,
        SubfieldErrorKind::WrongLength {
            expected: 6,
            actual: 5
        }
    );
    let bad_length = layout
        .decode(48, &Bytes::from_static(b"A20x1abc"))
        .unwrap_err();
    assert_eq!(bad_length.path, ["A2"]);
    assert_eq!(bad_length.offset, 2);
    assert!(matches!(bad_length.kind, SubfieldErrorKind::Element(_)));
}

#[test]
fn subfields_nest_inside_subfields() {
    let spec = spec();
    let layout = spec.subfields(62).unwrap();
    let flat = unhex(&format!(
        "{}{}{}{}",
        hex::encode("AB05REF01"),
        hex::encode("007"),
        "0102AABB",
        "0201CC"
    ));
    let subs = layout.decode(62, &flat).unwrap();
    assert_eq!(keys(&subs), ["1", "2", "3"]);
    let details = nested(&subs, "3");
    assert_eq!(keys(details), ["01", "02"]);
    assert_eq!(value(details, "01"), unhex("AABB"));
    assert_eq!(layout.encode(62, &subs).unwrap(), flat);
    let inner = layout.element("3").unwrap().subfields.unwrap();
    assert_eq!(inner.kind(), "tlv");
    assert_eq!(inner.element("7F").unwrap().name, "Detail");

    let broken = unhex(&format!("{}{}", hex::encode("AB05REF01004"), "0105AABB"));
    let e = layout.decode(62, &broken).unwrap_err();
    assert_eq!(e.path, ["3", "01"]);
    assert_eq!(e.offset, 14);
}

#[test]
fn a_message_inside_a_field_driven_by_its_own_bitmap() {
    let spec = spec();
    let layout = spec.subfields(127).unwrap();
    let routing = "R".repeat(48);
    let mut subs = Subfields::new();
    subs.push("2", SubValue::value("SWITCHKEY1"))
        .push("3", SubValue::value(routing.clone()))
        .push("13", SubValue::value("ZA  GAUTENG  2196"))
        .push("70", SubValue::value("EXT"));
    let flat = layout.encode(127, &subs).unwrap();
    // Bit 1 (secondary bitmap), 2, 3, 13; then bit 70 - 64 = 6 of the secondary.
    assert_eq!(
        &flat[..16],
        &unhex(
            "E008000000000000 0400000000000000"
                .replace(' ', "")
                .as_str()
        )[..]
    );
    let back = layout.decode(127, &flat).unwrap();
    assert_eq!(back, subs);
    assert_eq!(layout.element("13").unwrap().name, "POS geographic data");

    let mut msg = Message::new(*b"0200");
    msg.set(127, flat.clone());
    let reparsed = parse(&spec, build_bytes(&spec, &msg).unwrap()).unwrap();
    assert_eq!(reparsed.get(127), Some(&flat[..]));

    // Bit 4 is not defined.
    let mut undefined = unhex("5000000000000000");
    undefined = Bytes::from([&undefined[..], b"10SWITCHKEY1"].concat());
    let e = layout.decode(127, &undefined).unwrap_err();
    assert_eq!(
        e.to_string(),
        "field 127, subfield 4: not defined by the spec at offset 20 of the field's value"
    );
    // A second bitmap with no bit set would be dropped when encoding.
    let e = layout
        .decode(127, &unhex("C0000000000000000000000000000000"))
        .unwrap_err();
    assert_eq!(e.kind, SubfieldErrorKind::EmptySecondaryBitmap);
    assert_eq!(e.offset, 8);
    let e = layout.decode(127, &unhex("40000000")).unwrap_err();
    assert_eq!(e.path, ["bitmap"]);
    assert!(matches!(e.kind, SubfieldErrorKind::Element(_)));
}

#[test]
fn spec_errors_name_the_subfield_keys() {
    let base = "[spec]\nname='x'\n[fields]\n";
    let cases = [
        (
            "60 = { name = 'P', format = 'n...17', subfields = { kind = 'fixed', fields = [{ name = 'a', format = 'n2' }, { name = 'b', format = 'n0' }] } }",
            "fields.60.subfields.fields[1].format",
        ),
        (
            "55 = { name = 'ICC', format = 'b...255', subfields = { kind = 'emv' } }",
            "fields.55.subfields.kind",
        ),
        (
            "55 = { name = 'ICC', format = 'b...255', subfields = { kind = 'ber-tlv', depth = 3 } }",
            "fields.55.subfields.depth",
        ),
        (
            "48 = { name = 'P', format = 'ans...999', subfields = { kind = 'tlv', tag = { length = 2 }, length = { digits = 3 }, tags = { ABC = { name = 'a', format = 'ans..9' } } } }",
            "fields.48.subfields.tags.ABC",
        ),
        (
            "48 = { name = 'P', format = 'ans...999', subfields = { kind = 'tlv', tag = { length = 2 }, length = { digits = 2 }, tags = { AB = { name = 'a', format = 'ans..999' } } } }",
            "fields.48.subfields.tags.AB.format",
        ),
        (
            "127 = { name = 'P', format = 'b...999', subfields = { kind = 'bitmap', bitmap_encoding = 'octal', fields = { 2 = { name = 'a', format = 'n2' } } } }",
            "fields.127.subfields.bitmap_encoding",
        ),
        (
            "127 = { name = 'P', format = 'b...999', subfields = { kind = 'bitmap', fields = { 1 = { name = 'a', format = 'n2' } } } }",
            "fields.127.subfields.fields.1",
        ),
    ];
    for (field, key) in cases {
        let err = Spec::from_toml(&format!("{base}{field}\n")).unwrap_err();
        assert_eq!(err.key, key, "{field}: {err}");
    }
}

mod generated {
    //! Build → parse → build over generated layouts: a spec with one composite
    //! field 48 is written as TOML, values for it are generated from the same
    //! description, and the value must survive encode, a whole message round
    //! trip, decode and encode again unchanged.

    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    struct ElementDef {
        class: &'static str,
        fixed: bool,
        len: usize,
        encoding: &'static str,
        length_encoding: &'static str,
    }

    impl ElementDef {
        fn toml(&self, name: &str) -> String {
            let format = if self.fixed {
                format!("{}{}", self.class, self.len)
            } else {
                format!("{}..{}", self.class, self.len)
            };
            format!(
                "{{ name = '{name}', format = '{format}', encoding = '{}', length_encoding = '{}' }}",
                self.encoding, self.length_encoding
            )
        }

        fn value(&self) -> BoxedStrategy<Bytes> {
            let lens = if self.fixed {
                (self.len..=self.len).boxed()
            } else {
                (0..=self.len).boxed()
            };
            match self.class {
                "n" => lens
                    .prop_flat_map(|n| proptest::collection::vec(b'0'..=b'9', n))
                    .prop_map(Bytes::from)
                    .boxed(),
                "ans" => lens
                    .prop_flat_map(|n| proptest::collection::vec(0x20u8..=0x7e, n))
                    .prop_map(Bytes::from)
                    .boxed(),
                _ => lens
                    .prop_flat_map(|n| proptest::collection::vec(any::<u8>(), n))
                    .prop_map(Bytes::from)
                    .boxed(),
            }
        }
    }

    fn element_def() -> impl Strategy<Value = ElementDef> {
        (
            prop_oneof![Just("n"), Just("ans"), Just("b")],
            any::<bool>(),
            1usize..=12,
            any::<bool>(),
            prop_oneof![Just("ascii"), Just("ebcdic"), Just("bcd"), Just("binary")],
        )
            .prop_map(|(class, fixed, len, alt, length_encoding)| ElementDef {
                class,
                fixed,
                len,
                encoding: match (class, alt) {
                    ("n", false) => "ascii",
                    ("n", true) => "bcd",
                    ("ans", false) => "ascii",
                    ("ans", true) => "ebcdic",
                    (_, false) => "binary",
                    (_, true) => "hex",
                },
                length_encoding,
            })
    }

    fn spec_with(subfields: &str) -> Spec {
        let text = format!(
            "[spec]\nname = 'generated'\n[fields]\n48 = {{ name = 'Composite', format = 'b....9999', length_encoding = 'ascii', subfields = {subfields} }}\n"
        );
        Spec::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    /// Encode, carry in a message through build and parse, decode, encode again.
    fn round_trip(spec: &Spec, subs: &Subfields) {
        let layout = spec.subfields(48).unwrap();
        let flat = layout.encode(48, subs).unwrap_or_else(|e| panic!("{e}"));
        let mut msg = Message::new(*b"0100");
        msg.set(48, flat.clone());
        let wire = build_bytes(spec, &msg).unwrap();
        let back = parse(spec, wire.clone()).unwrap();
        let carried = back.get_bytes(48).unwrap();
        assert_eq!(carried, flat);
        let decoded = layout
            .decode(48, &carried)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&decoded, subs);
        assert_eq!(layout.encode(48, &decoded).unwrap(), flat);
        assert_eq!(build_bytes(spec, &back).unwrap(), wire);
    }

    fn values_for(defs: &[ElementDef]) -> BoxedStrategy<Vec<Bytes>> {
        defs.iter()
            .map(ElementDef::value)
            .collect::<Vec<_>>()
            .boxed()
    }

    fn fixed_case() -> impl Strategy<Value = (Spec, Subfields)> {
        proptest::collection::vec(element_def(), 1..6).prop_flat_map(|defs| {
            let list: Vec<String> = defs
                .iter()
                .enumerate()
                .map(|(i, d)| d.toml(&format!("s{i}")))
                .collect();
            let spec = spec_with(&format!(
                "{{ kind = 'fixed', fields = [{}] }}",
                list.join(", ")
            ));
            let count = defs.len();
            (Just(spec), values_for(&defs), 1..=count).prop_map(|(spec, values, present)| {
                let mut subs = Subfields::new();
                for (i, v) in values.into_iter().take(present).enumerate() {
                    subs.push((i + 1).to_string(), SubValue::Value(v));
                }
                (spec, subs)
            })
        })
    }

    fn tlv_case() -> impl Strategy<Value = (Spec, Subfields)> {
        (
            proptest::collection::vec(element_def(), 1..6),
            1usize..=3,
            any::<bool>(),
            2usize..=3,
            prop_oneof![Just("ascii"), Just("ebcdic"), Just("bcd"), Just("binary")],
        )
            .prop_flat_map(|(defs, tag_len, binary, digits, length_encoding)| {
                let tags: Vec<String> = (0..defs.len())
                    .map(|i| {
                        if binary {
                            format!("{:0>width$X}", 0xA0 + i, width = 2 * tag_len)
                        } else {
                            format!("{:0>width$}", i, width = tag_len)
                        }
                    })
                    .collect();
                let table: Vec<String> = defs
                    .iter()
                    .zip(&tags)
                    .map(|(d, t)| format!("'{t}' = {}", d.toml(t)))
                    .collect();
                let spec = spec_with(&format!(
                    "{{ kind = 'tlv', tag = {{ length = {tag_len}, encoding = '{}' }}, length = {{ digits = {digits}, encoding = '{length_encoding}' }}, tags = {{ {} }} }}",
                    if binary { "binary" } else { "ascii" },
                    table.join(", ")
                ));
                let order = Just((0..defs.len()).collect::<Vec<_>>()).prop_shuffle();
                let chosen = proptest::collection::vec(any::<bool>(), defs.len());
                (Just(spec), values_for(&defs), order, chosen, Just(tags)).prop_map(
                    |(spec, values, order, chosen, tags)| {
                        let mut subs = Subfields::new();
                        for i in order.into_iter().filter(|&i| chosen[i]) {
                            subs.push(tags[i].clone(), SubValue::Value(values[i].clone()));
                        }
                        (spec, subs)
                    },
                )
            })
    }

    fn bitmap_case() -> impl Strategy<Value = (Spec, Subfields)> {
        (
            proptest::collection::btree_map(2u16..=128, element_def(), 1..6),
            any::<bool>(),
        )
            .prop_flat_map(|(defs, hex)| {
                let numbers: Vec<u16> = defs.keys().copied().collect();
                let defs: Vec<ElementDef> = defs.into_values().collect();
                let table: Vec<String> = numbers
                    .iter()
                    .zip(&defs)
                    .map(|(n, d)| format!("{n} = {}", d.toml(&n.to_string())))
                    .collect();
                let spec = spec_with(&format!(
                    "{{ kind = 'bitmap', bitmap_encoding = '{}', fields = {{ {} }} }}",
                    if hex { "hex" } else { "binary" },
                    table.join(", ")
                ));
                let chosen = proptest::collection::vec(any::<bool>(), defs.len());
                (Just(spec), values_for(&defs), chosen, Just(numbers)).prop_map(
                    |(spec, values, chosen, numbers)| {
                        let mut subs = Subfields::new();
                        for (i, v) in values.into_iter().enumerate().filter(|(i, _)| chosen[*i]) {
                            subs.push(numbers[i].to_string(), SubValue::Value(v));
                        }
                        (spec, subs)
                    },
                )
            })
    }

    /// BER-TLV trees: distinct tags per level from a pool of one- to three-byte
    /// tags, values long enough to need every length form.
    fn ber_tree(depth: u32) -> BoxedStrategy<Subfields> {
        const PRIMITIVE: &[&str] = &["82", "95", "9F26", "9F10", "5F2A", "DF8101", "1F8102"];
        const CONSTRUCTED: &[&str] = &["70", "71", "BF0C", "FF8101"];
        let primitive = proptest::sample::select(PRIMITIVE).prop_flat_map(|tag| {
            (
                Just(tag.to_string()),
                prop_oneof![
                    proptest::collection::vec(any::<u8>(), 0..10),
                    proptest::collection::vec(any::<u8>(), 120..300),
                ]
                .prop_map(|v| SubValue::Value(Bytes::from(v))),
            )
        });
        let entry = if depth == 0 {
            primitive.boxed()
        } else {
            let constructed = proptest::sample::select(CONSTRUCTED).prop_flat_map(move |tag| {
                (
                    Just(tag.to_string()),
                    ber_tree(depth - 1).prop_map(SubValue::Subfields),
                )
            });
            prop_oneof![3 => primitive, 1 => constructed].boxed()
        };
        proptest::collection::vec(entry, 0..5)
            .prop_map(|entries| {
                let mut subs = Subfields::new();
                for (key, value) in entries {
                    if subs.get(&key).is_none() {
                        subs.push(key, value);
                    }
                }
                subs
            })
            .boxed()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn fixed_layouts((spec, subs) in fixed_case()) {
            round_trip(&spec, &subs);
        }

        #[test]
        fn tlv_layouts((spec, subs) in tlv_case()) {
            round_trip(&spec, &subs);
        }

        #[test]
        fn bitmap_layouts((spec, subs) in bitmap_case()) {
            round_trip(&spec, &subs);
        }

        #[test]
        fn ber_tlv_trees(subs in ber_tree(3)) {
            let spec = spec_with("{ kind = 'ber-tlv' }");
            let flat = spec.subfields(48).unwrap().encode(48, &subs).unwrap();
            prop_assume!(flat.len() <= 9999);
            round_trip(&spec, &subs);
        }

        /// Valid values with one byte changed or cut short: decoding never
        /// panics, and whatever still decodes encodes back to the same bytes.
        #[test]
        fn damaged_values_fail_cleanly_or_round_trip(
            seed in 0usize..4,
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            cut in any::<bool>(),
        ) {
            let spec = super::spec();
            let seeds: [(u16, Bytes); 4] = [
                (55, unhex(PUBLISHED_F55)),
                (48, Bytes::from_static(b"A2011TERMINAL 01PN016622202020011223301006000123")),
                (62, unhex(&format!("{}0102AABB0201CC", hex::encode("AB05REF01007")))),
                (127, Bytes::from([&unhex("6000000000000000")[..], b"10SWITCHKEY1", &[b'R'; 48]].concat())),
            ];
            let (number, valid) = &seeds[seed];
            let mut damaged = valid.to_vec();
            let i = at.index(damaged.len());
            if cut {
                damaged.truncate(i);
            } else {
                damaged[i] = byte;
            }
            let damaged = Bytes::from(damaged);
            let layout = spec.subfields(*number).unwrap();
            if let Ok(subs) = layout.decode(*number, &damaged) {
                prop_assert_eq!(layout.encode(*number, &subs).unwrap(), damaged);
            }
        }

        /// Whatever bytes decode, encode back to the same bytes.
        #[test]
        fn any_bytes_that_decode_encode_back(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let spec = super::spec();
            let flat = Bytes::from(bytes);
            for number in [48, 55, 60, 62, 127] {
                let layout = spec.subfields(number).unwrap();
                if let Ok(subs) = layout.decode(number, &flat) {
                    prop_assert_eq!(layout.encode(number, &subs).unwrap(), flat.clone());
                }
            }
        }
    }
}

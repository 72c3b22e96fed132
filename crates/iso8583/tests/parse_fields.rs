//! `parse_fields` reads a few fields of a message as `parse` reads them, and
//! refuses exactly the messages `parse` refuses, with the same error.

use bytes::Bytes;
use iso8583::codec::{build_bytes, parse, parse_fields, Message};
use iso8583::Spec;

fn receive() -> Message {
    let mut m = Message::new(*b"0200");
    m.set(2, "6222020200112233446")
        .set(3, "400000")
        .set(4, "000000001000")
        .set(7, "1123112233")
        .set(11, "000124")
        .set(32, "01020000")
        .set(37, "000000000124")
        .set(49, "156")
        .set(90, "010000012311231122330000102000000000000000");
    m
}

/// `parse_fields` of `input` says what `parse` says: the same values of
/// the fields asked for, or the same error.
fn agrees(spec: &Spec, input: &[u8], numbers: [u16; 3]) {
    let whole = parse(spec, Bytes::copy_from_slice(input));
    let some = parse_fields(spec, input, numbers);
    match (whole, some) {
        (Ok(msg), Ok(fields)) => {
            assert_eq!(fields.mti(), msg.mti());
            for n in numbers {
                assert_eq!(fields.get(n), msg.get(n), "field {n}");
            }
        }
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        (whole, some) => panic!(
            "parse: {:?}, parse_fields: {:?}",
            whole.map(|_| ()),
            some.map(|_| ())
        ),
    }
}

#[test]
fn reads_the_fields_asked_for_as_parse_does() {
    let spec = Spec::switchboard();
    let raw = build_bytes(&spec, &receive()).unwrap();
    let fields = parse_fields(&spec, &raw, [49, 90, 39]).unwrap();
    assert_eq!(fields.mti(), b"0200");
    assert_eq!(fields.get(49), Some(&b"156"[..]));
    assert_eq!(
        fields.get(90),
        Some(&b"010000012311231122330000102000000000000000"[..])
    );
    // Asked for, not in the message.
    assert_eq!(fields.get(39), None);
    // In the message, not asked for.
    assert_eq!(fields.get(2), None);
    agrees(&spec, &raw, [49, 90, 39]);
}

#[test]
fn refuses_what_parse_refuses_without_panicking() {
    let spec = Spec::switchboard();
    let raw = build_bytes(&spec, &receive()).unwrap();
    // Every truncation, and every byte changed to a few others.
    for len in 0..raw.len() {
        agrees(&spec, &raw[..len], [49, 90, 2]);
    }
    let mut longer = raw.to_vec();
    longer.push(b'0');
    agrees(&spec, &longer, [49, 90, 2]);
    for at in 0..raw.len() {
        for byte in [0x00, b'9', b'A', 0xff] {
            let mut bad = raw.to_vec();
            bad[at] = byte;
            agrees(&spec, &bad, [49, 90, 2]);
        }
    }
    assert!(parse_fields(&spec, b"", [49]).is_err());
    assert!(parse_fields(&spec, b"0200\xff\xff\xff\xff\xff\xff\xff\xff", [49]).is_err());
}

#[test]
fn decoded_values_are_read_as_parse_reads_them() {
    // EBCDIC: each value is decoded, not a slice of the input.
    let spec = Spec::from_toml(include_str!("specs/wire_forms_mainframe.toml")).unwrap();
    let mut m = Message::new(*b"0200");
    m.set(2, "6222020200112233446")
        .set(44, "some text")
        .set(102, "ACCOUNT 1");
    let raw = build_bytes(&spec, &m).unwrap();
    let fields = parse_fields(&spec, &raw, [2, 102, 45]).unwrap();
    assert_eq!(fields.get(2), Some(&b"6222020200112233446"[..]));
    assert_eq!(fields.get(102), Some(&b"ACCOUNT 1"[..]));
    assert_eq!(fields.get(45), None);
    for len in 0..=raw.len() {
        agrees(&spec, &raw[..len], [2, 44, 102]);
    }
}

//! Every class of codec and validation error, with its exact message: where
//! (MTI, bitmap, field), at which byte offset, and why.

use bytes::Bytes;
use iso8583::codec::{build_bytes, parse, EncodeError, Message};
use iso8583::validate::{validate, Violation};
use iso8583::{ResponseCode, Spec};

fn sb() -> Spec {
    Spec::switchboard()
}

/// MTI + one binary primary bitmap with the given fields, then `rest`.
fn msg_bytes(mti: &[u8], fields: &[u16], rest: &[u8]) -> Bytes {
    let mut bitmap = 0u64;
    for &f in fields {
        bitmap |= 1 << (64 - f);
    }
    let mut v = mti.to_vec();
    v.extend_from_slice(&bitmap.to_be_bytes());
    v.extend_from_slice(rest);
    Bytes::from(v)
}

fn err(spec: &Spec, input: Bytes) -> String {
    parse(spec, input).unwrap_err().to_string()
}

#[test]
fn truncated_mti() {
    assert_eq!(
        err(&sb(), Bytes::from_static(b"02")),
        "MTI: needs 4 bytes but only 2 remain at offset 0"
    );
}

#[test]
fn mti_with_a_letter() {
    assert_eq!(
        err(&sb(), Bytes::from_static(b"02X0\0\0\0\0\0\0\0\0")),
        "MTI: byte 58 is not valid ASCII digit at offset 2"
    );
}

#[test]
fn truncated_primary_bitmap() {
    assert_eq!(
        err(&sb(), Bytes::from_static(b"0200\x70\x00")),
        "primary bitmap: needs 8 bytes but only 2 remain at offset 4"
    );
}

#[test]
fn truncated_secondary_bitmap() {
    let input = msg_bytes(b"0800", &[1], b"\x00\x00\x00");
    assert_eq!(
        err(&sb(), input),
        "secondary bitmap: needs 8 bytes but only 3 remain at offset 12"
    );
}

#[test]
fn ll_length_exceeds_maximum() {
    let input = msg_bytes(b"0200", &[2], b"2062220202001122334462");
    assert_eq!(
        err(&sb(), input),
        "field 2: LL length 20 exceeds maximum 19 at offset 12"
    );
}

#[test]
fn ll_prefix_not_digits() {
    let input = msg_bytes(b"0200", &[2], b"1A6222020200112233446");
    assert_eq!(
        err(&sb(), input),
        "field 2: LL length prefix 3141 is not a valid length at offset 12"
    );
}

#[test]
fn field_data_truncated() {
    let input = msg_bytes(b"0200", &[3, 4], b"400000000000");
    assert_eq!(
        err(&sb(), input),
        "field 4: needs 12 bytes but only 6 remain at offset 18"
    );
}

#[test]
fn bitmap_names_an_undefined_field() {
    let input = msg_bytes(b"0200", &[3, 5], b"400000123");
    assert_eq!(
        err(&sb(), input),
        "field 5: present in the bitmap but not defined by the spec (data at offset 18)"
    );
}

#[test]
fn bytes_after_the_last_field() {
    let input = msg_bytes(b"0200", &[3], b"400000XY");
    assert_eq!(
        err(&sb(), input),
        "message: 2 bytes left after the last field at offset 18"
    );
}

#[test]
fn non_ascii_byte_in_an_ascii_field() {
    let input = msg_bytes(b"0200", &[37], b"12345\xff789012");
    assert_eq!(
        err(&sb(), input),
        "field 37: byte FF is not valid ASCII at offset 17"
    );
}

#[test]
fn bad_bcd_nibble() {
    let spec = Spec::load("iso8583-1987-bcd").unwrap();
    // BCD MTI 0200, bitmap with field 3 (n6 packed: 3 bytes), 0xA is not a digit.
    let mut v = vec![0x02, 0x00];
    v.extend_from_slice(&(1u64 << 61).to_be_bytes());
    v.extend_from_slice(&[0x40, 0x0A, 0x00]);
    assert_eq!(
        err(&spec, Bytes::from(v)),
        "field 3: byte 0A is not valid BCD digits at offset 11"
    );
}

#[test]
fn error_reports_field_number() {
    let input = msg_bytes(b"0200", &[2], b"99");
    let e = parse(&sb(), input).unwrap_err();
    assert_eq!(e.field(), Some(2));
    assert_eq!(e.offset, 12);
}

#[test]
fn encode_errors() {
    let spec = sb();
    let mut m = Message::new(*b"0200");
    m.set(4, "100");
    assert_eq!(
        build_bytes(&spec, &m).unwrap_err(),
        EncodeError::WrongLength {
            field: 4,
            expected: 12,
            actual: 3
        }
    );
    assert_eq!(
        build_bytes(&spec, &m).unwrap_err().to_string(),
        "field 4: fixed length 12, value has 3"
    );
    let mut m = Message::new(*b"0200");
    m.set(2, "62220202001122334462");
    assert_eq!(
        build_bytes(&spec, &m).unwrap_err().to_string(),
        "field 2: length 20 exceeds maximum 19"
    );
    let mut m = Message::new(*b"0200");
    m.set(5, "1");
    assert_eq!(
        build_bytes(&spec, &m).unwrap_err().to_string(),
        "field 5: not defined by the spec"
    );
    let mut m = Message::new(*b"0200");
    m.set(1, "1");
    assert_eq!(
        build_bytes(&spec, &m).unwrap_err().to_string(),
        "field 1: is a bitmap, computed when the message is built"
    );
    let mut m = Message::new(*b"0200");
    m.set(37, "12345\u{e9}78901".as_bytes().to_vec());
    assert!(build_bytes(&spec, &m)
        .unwrap_err()
        .to_string()
        .starts_with("field 37: character 0xc3 at position 5 cannot be encoded as ASCII"));
    let m = Message::new(*b"02A0");
    assert_eq!(
        build_bytes(&spec, &m).unwrap_err().to_string(),
        "MTI: character 0x41 at position 2 cannot be encoded as MTI digits"
    );
}

fn receive() -> Message {
    let mut m = Message::new(*b"0200");
    m.set(2, "6222020200112233446")
        .set(3, "400000")
        .set(4, "000000001000")
        .set(7, "1123112233")
        .set(11, "000124")
        .set(12, "192233")
        .set(13, "1123")
        .set(25, "00")
        .set(32, "01020000")
        .set(37, "000000000124")
        .set(49, "156")
        .set(90, "010000012311231122330000102000000000000000");
    m
}

#[test]
fn a_valid_receive_validates() {
    let spec = sb();
    let v = validate(&spec, &receive());
    assert!(v.is_valid(), "{:?}", v.violations);
    assert_eq!(v.message.unwrap().name, "receive");
    assert!(!v.is_response);
}

#[test]
fn validation_violations_and_their_codes() {
    let spec = sb();
    let mut m = receive();
    m.remove(90);
    let v = validate(&spec, &m);
    assert_eq!(
        v.violations,
        vec![Violation::MissingMandatory { field: 90 }]
    );
    assert_eq!(
        v.violations[0].to_string(),
        "field 90: mandatory but missing"
    );
    assert_eq!(v.response_code(), Some(ResponseCode::FORMAT_ERROR));

    let mut m = receive();
    m.set(4, "00000000100A");
    let v = validate(&spec, &m);
    assert_eq!(
        v.violations[0].to_string(),
        "field 4: byte 0x41 at position 11 is not allowed in class n"
    );
    assert_eq!(v.response_code(), Some(ResponseCode::FORMAT_ERROR));

    let mut m = receive();
    m.set(2, "6222020200112233440");
    let v = validate(&spec, &m);
    assert_eq!(v.violations, vec![Violation::Luhn { field: 2 }]);
    assert_eq!(v.response_code(), Some(ResponseCode::INVALID_CARD_NUMBER));

    let mut m = receive();
    m.set(3, "990000");
    let v = validate(&spec, &m);
    assert_eq!(
        v.violations[0].to_string(),
        "no message 0200 with processing code 990000 in this dialect"
    );

    let mut m = receive();
    m.set(102, "6222020200112233446");
    let v = validate(&spec, &m);
    assert_eq!(v.violations, vec![Violation::NotAllowed { field: 102 }]);
}

#[test]
fn responses_are_recognised() {
    let spec = sb();
    let mut m = receive();
    m.set_mti(*b"0210");
    m.set(15, "1123").set(39, "00");
    for echoed_only_by_requests in [12, 13, 25] {
        m.remove(echoed_only_by_requests);
    }
    let v = validate(&spec, &m);
    assert!(v.is_response);
    assert!(v.is_valid(), "{:?}", v.violations);
}

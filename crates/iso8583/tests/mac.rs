//! Field 128 on whole messages: which bytes are covered, signing and
//! verifying across the built-in dialects, and the properties
//! verify(sign(m)) = ok and "changing any covered byte fails verification".

use std::sync::LazyLock;

use bytes::Bytes;
use iso8583::mac::{self, MacAlgorithm, MacError, MacKey};
use iso8583::{build_bytes, parse, Message, Spec};
use proptest::prelude::*;

const X919_KEY: &str = "0123456789ABCDEFFEDCBA9876543210";
const AES_KEY: &str = "2B7E151628AED2A6ABF7158809CF4F3C";

fn x919() -> MacKey {
    MacKey::from_hex(MacAlgorithm::X919, X919_KEY).unwrap()
}

fn debit() -> Message {
    let mut msg = Message::new(*b"0200");
    msg.set(2, "6222020200112233446")
        .set(3, "000000")
        .set(4, "000000012345")
        .set(7, "1201120000")
        .set(11, "000042")
        .set(37, "RRN000000042")
        .set(49, "156");
    msg
}

/// The built-in dialects, loaded once.
fn specs() -> &'static [Spec] {
    static SPECS: LazyLock<Vec<Spec>> = LazyLock::new(|| {
        ["switchboard", "iso8583-1987-ascii", "iso8583-1987-bcd"]
            .iter()
            .map(|name| Spec::load(name).unwrap())
            .collect()
    });
    &SPECS
}

#[test]
fn covered_bytes_are_the_message_without_field_128() {
    for spec in specs() {
        let mut msg = debit();
        let input = mac::mac_input(spec, &msg).unwrap();
        let wire = mac::sign_bytes(spec, &mut msg, &x919()).unwrap();
        assert_eq!(input[..], wire[..wire.len() - 8], "{}", spec.name);
        // Bit 128 is set in the covered secondary bitmap, as sent.
        let without_mac = build_bytes(spec, &debit()).unwrap();
        assert_ne!(input[..], without_mac[..], "{}", spec.name);
        assert_eq!(&wire[wire.len() - 8..], msg.get(128).unwrap());
        assert_eq!(
            msg.get(128).unwrap()[..],
            x919().mac(&input).as_bytes()[..8]
        );
        // The rule gives the same bytes whatever field 128 holds.
        assert_eq!(mac::mac_input(spec, &msg).unwrap(), input);
    }
}

#[test]
fn the_switchboard_bitmap_as_covered() {
    let spec = Spec::switchboard();
    let input = mac::mac_input(&spec, &debit()).unwrap();
    assert_eq!(&input[..4], b"0200");
    // Primary bitmap: bit 1 (a secondary follows), 2, 3, 4, 7, 11, 37, 49.
    assert_eq!(input[4..12], [0xF2, 0x20, 0, 0, 0x08, 0, 0x80, 0]);
    // Secondary bitmap: bit 128 only.
    assert_eq!(input[12..20], [0, 0, 0, 0, 0, 0, 0, 0x01]);
}

#[test]
fn signed_messages_verify_in_every_builtin_dialect() {
    let aes = MacKey::from_hex(MacAlgorithm::AesCmac, AES_KEY).unwrap();
    for spec in specs() {
        for key in [x919(), aes.clone()] {
            let mut msg = debit();
            let wire = mac::sign_bytes(spec, &mut msg, &key).unwrap();
            let back = parse(spec, wire.clone()).unwrap();
            assert_eq!(back, msg);
            assert_eq!(mac::verify_received(spec, &wire, &back, &key), Ok(()));
            assert_eq!(mac::verify(spec, &back, &key), Ok(()));
            // sign and sign_bytes agree.
            let mut again = debit();
            mac::sign(spec, &mut again, &key).unwrap();
            assert_eq!(again, msg);
        }
    }
}

#[test]
fn missing_and_wrong_macs_are_told_apart() {
    let spec = Spec::switchboard();
    let key = x919();
    let plain = debit();
    let wire = build_bytes(&spec, &plain).unwrap();
    assert_eq!(
        mac::verify_received(&spec, &wire, &plain, &key),
        Err(MacError::Missing)
    );
    assert_eq!(mac::verify(&spec, &plain, &key), Err(MacError::Missing));

    let mut signed = debit();
    let wire = mac::sign_bytes(&spec, &mut signed, &key).unwrap();
    let other = MacKey::from_hex(MacAlgorithm::X919, "FEDCBA98765432100123456789ABCDEF").unwrap();
    assert_eq!(
        mac::verify_received(&spec, &wire, &signed, &other),
        Err(MacError::Wrong)
    );
    let aes = MacKey::from_hex(MacAlgorithm::AesCmac, AES_KEY).unwrap();
    assert_eq!(mac::verify(&spec, &signed, &aes), Err(MacError::Wrong));

    // A changed field after signing.
    let mut changed = signed.clone();
    changed.set(4, "000000099999");
    assert_eq!(mac::verify(&spec, &changed, &key), Err(MacError::Wrong));
    assert_eq!(
        MacError::Wrong.to_string(),
        "field 128 (MAC) does not verify: a wrong key, or the message was changed"
    );
    assert_eq!(MacError::Missing.to_string(), "field 128 (MAC) is missing");
}

#[test]
fn a_dialect_without_field_128_cannot_carry_a_mac() {
    let spec = Spec::from_toml(
        r#"
        [spec]
        name = "no-mac"
        [fields]
        3 = { name = "Processing code", format = "n6" }
        11 = { name = "STAN", format = "n6" }
        "#,
    )
    .unwrap();
    let mut msg = Message::new(*b"0800");
    msg.set(11, "000001");
    assert_eq!(
        mac::sign(&spec, &mut msg, &x919()),
        Err(MacError::NoMacField)
    );
    assert!(!msg.has(128));
}

#[test]
fn hex_bitmaps_and_a_hex_field_128() {
    // Field 128 written as 16 hex characters: the covered bytes end before them.
    let spec = Spec::from_toml(
        r#"
        [spec]
        name = "hex-mac"
        bitmap_encoding = "hex"
        [fields]
        3 = { name = "Processing code", format = "n6" }
        11 = { name = "STAN", format = "n6" }
        128 = { name = "MAC", format = "b8", encoding = "hex" }
        "#,
    )
    .unwrap();
    let mut msg = Message::new(*b"0200");
    msg.set(3, "000000").set(11, "000001");
    let key = x919();
    let wire = mac::sign_bytes(&spec, &mut msg, &key).unwrap();
    let input = mac::mac_input(&spec, &msg).unwrap();
    assert_eq!(input[..], wire[..wire.len() - 16]);
    assert!(wire[wire.len() - 16..].iter().all(u8::is_ascii_hexdigit));
    let back = parse(&spec, wire.clone()).unwrap();
    assert_eq!(mac::verify_received(&spec, &wire, &back, &key), Ok(()));
}

fn any_key() -> impl Strategy<Value = MacKey> {
    prop_oneof![
        prop::array::uniform16(any::<u8>())
            .prop_filter("two different halves", |k| k[..8] != k[8..])
            .prop_map(|k| MacKey::from_bytes(MacAlgorithm::X919, &k).unwrap()),
        prop::sample::select(vec![16usize, 24, 32])
            .prop_flat_map(|len| prop::collection::vec(any::<u8>(), len))
            .prop_map(|k| MacKey::from_bytes(MacAlgorithm::AesCmac, &k).unwrap()),
    ]
}

prop_compose! {
    fn any_message()(
        pan in "[0-9]{12,19}",
        code in "[0-9]{6}",
        amount in "[0-9]{12}",
        stan in "[0-9]{6}",
        rrn in "[A-Z0-9]{12}",
        sent_at in prop::option::of("[0-9]{10}"),
    ) -> Message {
        let mut msg = Message::new(*b"0200");
        msg.set(2, pan).set(3, code).set(4, amount).set(11, stan).set(37, rrn);
        if let Some(sent_at) = sent_at {
            msg.set(7, sent_at);
        }
        msg
    }
}

proptest! {
    #[test]
    fn verify_of_sign_is_ok(msg in any_message(), key in any_key(), which in 0usize..3) {
        let spec = &specs()[which];
        let mut msg = msg;
        let wire = mac::sign_bytes(spec, &mut msg, &key).unwrap();
        let back = parse(spec, wire.clone()).unwrap();
        prop_assert_eq!(mac::verify_received(spec, &wire, &back, &key), Ok(()));
        prop_assert_eq!(mac::verify(spec, &back, &key), Ok(()));
    }

    #[test]
    fn changing_any_covered_byte_fails(
        msg in any_message(),
        key in any_key(),
        which in 0usize..3,
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let spec = &specs()[which];
        let mut msg = msg;
        let wire = mac::sign_bytes(spec, &mut msg, &key).unwrap();
        let covered = mac::mac_input(spec, &msg).unwrap().len();
        let mut changed = wire.to_vec();
        changed[at.index(covered)] ^= flip;
        let changed = Bytes::from(changed);
        // Either the change breaks the message, or its MAC no longer verifies.
        if let Ok(back) = parse(spec, changed.clone()) {
            prop_assert!(mac::verify_received(spec, &changed, &back, &key).is_err());
        }
    }
}

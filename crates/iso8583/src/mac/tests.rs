//! Known-answer tests from published vectors, keys, errors.

use super::*;

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn key(algorithm: MacAlgorithm, hex: &str) -> MacKey {
    MacKey::from_hex(algorithm, &hex.split_whitespace().collect::<String>()).unwrap()
}

/// The key of ISO/IEC 9797-1:2011 Annex B.4: K = 0123456789ABCDEF,
/// K' = FEDCBA9876543210.
const ISO_9797_KEY: &str = "0123456789ABCDEF FEDCBA9876543210";

/// ISO/IEC 9797-1:2011 Annex B.4, MAC algorithm 3 (the X9.19 retail MAC)
/// with padding method 1. The 8-byte values are also those of the examples
/// in the RustCrypto `retail-mac` crate's documentation; the standard prints
/// their leftmost 4 bytes as its 32-bit MACs.
#[test]
fn x919_iso_9797_1_annex_b4() {
    let key = key(MacAlgorithm::X919, ISO_9797_KEY);
    let all = key.mac(b"Now is the time for all ");
    assert_eq!(all.as_bytes(), unhex("A1C72E74EA3FA9B6"));
    assert_eq!(all.leftmost(4), unhex("A1C72E74"));
    // 22 bytes: the last block is padded with two zero bytes.
    let it = key.mac(b"Now is the time for it");
    assert_eq!(it.as_bytes(), unhex("2E2B1428CC78254F"));
    assert_eq!(it.leftmost(4), unhex("2E2B1428"));
    assert!(key.verify(b"Now is the time for all ", &unhex("A1C72E74")));
    assert!(key.verify(b"Now is the time for all ", &unhex("A1C72E74EA3FA9B6")));
    assert!(!key.verify(b"Now is the time for all!", &unhex("A1C72E74EA3FA9B6")));
}

#[test]
fn x919_zero_padding_is_explicit_zeros() {
    let key = key(MacAlgorithm::X919, ISO_9797_KEY);
    let mut padded = b"Now is the time for it".to_vec();
    padded.extend([0, 0]);
    assert_eq!(key.mac(b"Now is the time for it"), key.mac(&padded));
    // An empty message is one zero block.
    assert_eq!(key.mac(b""), key.mac(&[0; 8]));
}

/// NIST SP 800-38B Appendix D.1 (AES-128), the examples of RFC 4493
/// section 4: the empty message and messages of 16, 40 and 64 bytes.
const NIST_MESSAGE: &str = "6bc1bee2 2e409f96 e93d7e11 7393172a ae2d8a57 1e03ac9c 9eb76fac 45af8e51
     30c81c46 a35ce411 e5fbc119 1a0a52ef f69f2445 df4f9b17 ad2b417b e66c3710";

#[test]
fn aes128_cmac_nist_sp800_38b_d1() {
    let key = key(MacAlgorithm::AesCmac, "2b7e1516 28aed2a6 abf71588 09cf4f3c");
    let message = unhex(NIST_MESSAGE);
    for (len, expected) in [
        (0, "bb1d6929 e9593728 7fa37d12 9b756746"),
        (16, "070a16b4 6b4d4144 f79bdd9d d04a287c"),
        (40, "dfa66747 de9ae630 30ca3261 1497c827"),
        (64, "51f0bebf 7e3b9d92 fc497417 79363cfe"),
    ] {
        let tag = key.mac(&message[..len]);
        assert_eq!(tag.as_bytes(), unhex(expected), "{len} bytes");
        assert_eq!(tag.field_128()[..], unhex(expected)[..8], "{len} bytes");
        assert!(key.verify(&message[..len], &unhex(expected)[..8]));
    }
}

/// NIST SP 800-38B Appendix D.2 (AES-192) and D.3 (AES-256), examples 1
/// and 2 (the empty message and 16 bytes).
#[test]
fn aes192_and_aes256_cmac_nist_sp800_38b_d2_d3() {
    let message = unhex(NIST_MESSAGE);
    for (key_hex, empty, sixteen) in [
        (
            "8e73b0f7 da0e6452 c810f32b 809079e5 62f8ead2 522c6b7b",
            "d17ddf46 adaacde5 31cac483 de7a9367",
            "9e99a7bf 31e71090 0662f65e 617c5184",
        ),
        (
            "603deb10 15ca71be 2b73aef0 857d7781 1f352c07 3b6108d7 2d9810a3 0914dff4",
            "028962f6 1b7bf89e fc6b551f 4667d983",
            "28a7023f 452e8f82 bd4bf28d 8c37c35c",
        ),
    ] {
        let key = key(MacAlgorithm::AesCmac, key_hex);
        assert_eq!(key.mac(b"").as_bytes(), unhex(empty), "{key_hex}");
        assert_eq!(
            key.mac(&message[..16]).as_bytes(),
            unhex(sixteen),
            "{key_hex}"
        );
    }
}

/// Key check values. The expected values were cross-checked with an
/// independent implementation (Python `cryptography`): two-key triple DES
/// of a zero block under the ISO 9797-1 key is 08D7B4FB629D0885; the
/// AES-CMAC of 16 zero bytes under the SP 800-38B keys begins 7AD386,
/// 3A072A and 1A0B2D.
#[test]
fn key_check_values() {
    let tdes = key(MacAlgorithm::X919, ISO_9797_KEY);
    assert_eq!(tdes.kcv(), [0x08, 0xD7, 0xB4]);
    assert_eq!(tdes.kcv_hex(), "08D7B4");
    for (hex, kcv) in [
        ("2b7e151628aed2a6abf7158809cf4f3c", "7AD386"),
        ("8e73b0f7da0e6452c810f32b809079e562f8ead2522c6b7b", "3A072A"),
        (
            "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4",
            "1A0B2D",
        ),
    ] {
        let aes = key(MacAlgorithm::AesCmac, hex);
        assert_eq!(aes.kcv_hex(), kcv);
        assert_eq!(aes.kcv()[..], aes.mac(&[0; 16]).leftmost(3)[..]);
    }
}

#[test]
fn keys_never_print_their_bytes() {
    let hex = "0123456789abcdeffedcba9876543210";
    let tdes = MacKey::from_hex(MacAlgorithm::X919, hex).unwrap();
    let shown = format!("{tdes:?} {tdes:#?}");
    assert!(shown.contains("08D7B4"), "{shown}");
    for part in ["0123", "89ab", "89AB", "fedc", "FEDC", "7654"] {
        assert!(!shown.contains(part), "{shown}");
    }
    let aes = MacKey::from_hex(MacAlgorithm::AesCmac, "2b7e151628aed2a6abf7158809cf4f3c").unwrap();
    assert_eq!(
        format!("{aes:?}"),
        r#"MacKey { algorithm: "aes-cmac", kcv: "7AD386" }"#
    );
}

#[test]
fn key_errors_are_worded_without_key_material() {
    let err = MacKey::from_hex(MacAlgorithm::X919, "0123456789ABCDEFFEDCBA987654321G").unwrap_err();
    assert_eq!(err, KeyError::NotHex { position: 31 });
    assert_eq!(
        err.to_string(),
        "MAC key is not hexadecimal: character 31 is not a hex digit"
    );
    assert_eq!(
        MacKey::from_hex(MacAlgorithm::X919, "0123456789ABCDEFFEDCBA987654321").unwrap_err(),
        KeyError::OddLength { digits: 31 }
    );
    let short = MacKey::from_hex(MacAlgorithm::X919, "0123456789ABCDEF").unwrap_err();
    assert_eq!(
        short.to_string(),
        "a MAC key for x9.19 is 16 bytes (32 hex digits), this one is 8 bytes"
    );
    let aes = MacKey::from_bytes(MacAlgorithm::AesCmac, &[7; 20]).unwrap_err();
    assert_eq!(
        aes.to_string(),
        "a MAC key for aes-cmac is 16, 24 or 32 bytes (32, 48 or 64 hex digits), this one is 20 bytes"
    );
    assert_eq!(
        MacKey::from_hex(MacAlgorithm::X919, "0123456789ABCDEF0123456789ABCDEF").unwrap_err(),
        KeyError::EqualHalves
    );
}

#[test]
fn algorithms_by_name() {
    assert_eq!("x9.19".parse(), Ok(MacAlgorithm::X919));
    assert_eq!("AES-CMAC".parse(), Ok(MacAlgorithm::AesCmac));
    assert_eq!(MacAlgorithm::X919.to_string(), "x9.19");
    assert_eq!(MacAlgorithm::AesCmac.tag_len(), 16);
    let err = "x9.9".parse::<MacAlgorithm>().unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"unknown MAC algorithm "x9.9": expected x9.19 or aes-cmac"#
    );
}

#[test]
fn verify_refuses_short_or_overlong_tags() {
    let key = key(MacAlgorithm::X919, ISO_9797_KEY);
    let data = b"Now is the time for all ";
    assert!(!key.verify(data, &unhex("A1C72E")));
    assert!(!key.verify(data, &[]));
    assert!(!key.verify(data, &unhex("A1C72E74EA3FA9B600")));
}

fn freeze_like() -> Message {
    let mut msg = Message::new(*b"0100");
    msg.set(2, "6222020000000008")
        .set(3, "030000")
        .set(4, "000000010000")
        .set(7, "1201083000")
        .set(11, "000123")
        .set(12, "083000")
        .set(13, "1201")
        .set(25, "00")
        .set(32, "10000001")
        .set(37, "000000000123")
        .set(49, "156");
    msg
}

#[test]
fn a_field_list_covers_exactly_its_fields() {
    let spec = Spec::switchboard();
    let key = key(MacAlgorithm::X919, ISO_9797_KEY);
    let coverage: Coverage = "0, 2, 4, 11".parse().unwrap();
    assert_eq!(coverage, Coverage::Fields(vec![0, 2, 4, 11]));
    let mut msg = freeze_like();
    let wire = sign_bytes_with(&spec, &mut msg, &key, &coverage).unwrap();
    // The MAC is that of the listed elements' wire forms, in order.
    let block = b"0100166222020000000008000000010000000123";
    assert_eq!(msg.get(MAC_FIELD).unwrap()[..], key.mac(block).field_128());
    let back = crate::parse(&spec, wire.clone()).unwrap();
    assert_eq!(
        verify_received_with(&spec, &wire, &back, &key, &coverage),
        Ok(())
    );
    // A field outside the list may change; one inside may not.
    let mut outside = back.clone();
    outside.set(37, "999999999999");
    assert_eq!(
        verify_received_with(&spec, &wire, &outside, &key, &coverage),
        Ok(())
    );
    let mut inside = back.clone();
    inside.set(4, "000000099999");
    assert_eq!(
        verify_received_with(&spec, &wire, &inside, &key, &coverage),
        Err(MacError::Wrong)
    );
    // Under the default rule, the same signature does not verify.
    assert_eq!(
        verify_received_with(&spec, &wire, &back, &key, &Coverage::Message),
        Err(MacError::Wrong)
    );
}

#[test]
fn the_default_coverage_is_the_message_rule() {
    let spec = Spec::switchboard();
    let key = key(MacAlgorithm::AesCmac, "2B7E151628AED2A6ABF7158809CF4F3C");
    let mut a = freeze_like();
    let mut b = freeze_like();
    let signed = sign_bytes_with(&spec, &mut a, &key, &Coverage::Message).unwrap();
    assert_eq!(signed, sign_bytes(&spec, &mut b, &key).unwrap());
    let back = crate::parse(&spec, signed.clone()).unwrap();
    assert_eq!(
        verify_received_with(&spec, &signed, &back, &key, &"message".parse().unwrap()),
        Ok(())
    );
}

#[test]
fn coverage_lists_are_checked() {
    assert_eq!(
        "2,x".parse::<Coverage>(),
        Err(CoverageError::NotAField("x".into()))
    );
    assert_eq!(
        "2,128".parse::<Coverage>(),
        Err(CoverageError::OutOfRange(128))
    );
    assert_eq!("2,3,2".parse::<Coverage>(), Err(CoverageError::Repeated(2)));
    assert_eq!(Coverage::fields(&[]), Err(CoverageError::Empty));
    assert_eq!(Coverage::fields(&[0, 11]).unwrap().to_string(), "0,11");
}

/// RFC 3394 section 4.1: 128 bits of key data wrapped with a 128-bit KEK.
#[test]
fn aes_key_wrap_rfc_3394_4_1() {
    let kek = KeyEncryptingKey::from_hex(MacAlgorithm::AesCmac, "000102030405060708090A0B0C0D0E0F")
        .unwrap();
    let data = unhex("00112233445566778899AABBCCDDEEFF");
    let change = KeyChange::new(&kek, &data).unwrap();
    let text = change.to_text();
    assert_eq!(
        &text[..48],
        "1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5"
    );
    assert_eq!(&text[48..], change.key.kcv_hex());
    let received = KeyChange::receive(&kek, text).unwrap();
    assert_eq!(received.kcv(), change.key.kcv());
}

/// Triple-DES key transport is ECB under the KEK: with the ISO 9797-1 key as
/// KEK, a zero half encrypts to the well-known check block 08D7B4FB629D0885.
#[test]
fn tdes_key_transport_under_a_known_kek() {
    let kek =
        KeyEncryptingKey::from_hex(MacAlgorithm::X919, "0123456789ABCDEFFEDCBA9876543210").unwrap();
    assert_eq!(kek.kcv_hex(), "08D7B4");
    let new_key = unhex("0000000000000000 1111111111111111");
    let change = KeyChange::new(&kek, &new_key).unwrap();
    assert!(
        change.to_text().starts_with("08D7B4FB629D0885"),
        "{}",
        change.to_text()
    );
    assert_eq!(change.to_text().len(), 32 + 6);
    let received = KeyChange::receive(&kek, change.to_text()).unwrap();
    assert_eq!(received.kcv_hex(), change.key.kcv_hex());
    let data = b"any message at all";
    assert_eq!(received.mac(data), change.key.mac(data));
}

#[test]
fn key_changes_are_refused_with_the_reason() {
    let kek =
        KeyEncryptingKey::from_hex(MacAlgorithm::X919, "0123456789ABCDEFFEDCBA9876543210").unwrap();
    let other = KeyEncryptingKey::from_hex(
        MacAlgorithm::X919,
        "1111111111111111 2222222222222222"
            .replace(' ', "")
            .as_str(),
    )
    .unwrap();
    let change = KeyChange::new(&kek, &unhex("0123456789ABCDEF 0011223344556677")).unwrap();
    // Under another KEK the key decrypts to something else: its KCV differs.
    assert!(matches!(
        KeyChange::receive(&other, change.to_text()),
        Err(TransportError::KcvMismatch { .. } | TransportError::BadKey { .. })
    ));
    // A KCV altered in transit.
    let mut text = change.to_text().to_string();
    let last = text.pop().unwrap();
    text.push(if last == '0' { '1' } else { '0' });
    assert!(matches!(
        KeyChange::receive(&kek, &text),
        Err(TransportError::KcvMismatch { .. })
    ));
    assert_eq!(
        KeyChange::receive(&kek, "12AB").unwrap_err(),
        TransportError::Malformed
    );
    assert_eq!(
        KeyChange::receive(&kek, "XYZXYZXYZXYZXYZXYZXYZX").unwrap_err(),
        TransportError::Malformed
    );
    // AES key wrap detects a wrong KEK itself.
    let aes = KeyEncryptingKey::from_hex(MacAlgorithm::AesCmac, "000102030405060708090A0B0C0D0E0F")
        .unwrap();
    let aes_other =
        KeyEncryptingKey::from_hex(MacAlgorithm::AesCmac, "0F0E0D0C0B0A09080706050403020100")
            .unwrap();
    let change = KeyChange::new(&aes, &[7u8; 32]).unwrap();
    assert_eq!(
        KeyChange::receive(&aes_other, change.to_text()).unwrap_err(),
        TransportError::Unwrap
    );
    // Wrong KEK lengths name the expectation.
    let e = KeyEncryptingKey::from_hex(MacAlgorithm::X919, "0011").unwrap_err();
    assert!(e.to_string().contains("16 or 24 bytes"), "{e}");
    assert!(!format!("{kek:?}").contains("0123456789"));
}

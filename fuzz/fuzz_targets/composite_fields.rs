//! Decodes the input as the value of every composite field of the test spec
//! `crates/iso8583/tests/specs/composite.toml` (tag-length-value, BER-TLV,
//! fixed positions with subfields nested inside, a bitmap-driven message).
//! Decoding must never panic; whatever decodes must encode back to exactly the
//! input and decode again to the same subfields.

#![no_main]

use std::sync::OnceLock;

use bytes::Bytes;
use iso8583::Spec;
use libfuzzer_sys::fuzz_target;

const FIELDS: [u16; 5] = [48, 55, 60, 62, 127];

fn spec() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| {
        Spec::from_toml(include_str!("../../crates/iso8583/tests/specs/composite.toml"))
            .unwrap_or_else(|e| panic!("the composite test spec: {e}"))
    })
}

fuzz_target!(|data: &[u8]| {
    let value = Bytes::copy_from_slice(data);
    let spec = spec();
    for number in FIELDS {
        let layout = spec.subfields(number).expect("a composite field");
        let Ok(subfields) = layout.decode(number, &value) else {
            continue;
        };
        let encoded = layout
            .encode(number, &subfields)
            .unwrap_or_else(|e| panic!("field {number}: decoded but does not encode: {e}"));
        assert_eq!(encoded, value, "field {number}: the value changed in a round trip");
        let again = layout
            .decode(number, &encoded)
            .unwrap_or_else(|e| panic!("field {number}: encoded value does not decode: {e}"));
        assert_eq!(again, subfields, "field {number}: the subfields changed");
    }
});

//! The shared body of the message-parsing targets: parsing must never panic;
//! whatever parses must build, and the built bytes must parse back to the same
//! message and build to the same bytes again (the wire form is a fixed point
//! after one round: the input itself may differ, e.g. in lower-case hex).
//! Every field of a parsed message that the spec makes of subfields (EMV field
//! 55, field 60 by position, ...) is decoded too: that must not panic either,
//! and subfields that decode must encode back to the field's value.

use bytes::Bytes;
use iso8583::{Message, Spec};

pub fn run(specs: &[Spec], data: &[u8]) {
    let input = Bytes::copy_from_slice(data);
    for spec in specs {
        let Ok(message) = iso8583::parse(spec, input.clone()) else {
            continue;
        };
        subfields_round_trip(spec, &message);
        let built = iso8583::build_bytes(spec, &message)
            .unwrap_or_else(|e| panic!("parsed but does not build: {e}"));
        let again = iso8583::parse(spec, built.clone())
            .unwrap_or_else(|e| panic!("built bytes do not parse: {e}"));
        assert_eq!(again, message, "the message changed in a round trip");
        let rebuilt = iso8583::build_bytes(spec, &again)
            .unwrap_or_else(|e| panic!("reparsed message does not build: {e}"));
        assert_eq!(rebuilt, built, "the bytes changed in a round trip");
    }
}

fn subfields_round_trip(spec: &Spec, message: &Message) {
    for (number, value) in message.fields() {
        let Some(layout) = spec.subfields(number) else {
            continue;
        };
        let Ok(subfields) = layout.decode(number, &bytes::Bytes::copy_from_slice(value)) else {
            continue;
        };
        let encoded = layout
            .encode(number, &subfields)
            .unwrap_or_else(|e| panic!("field {number}: subfields decode but do not encode: {e}"));
        assert_eq!(
            &encoded, value,
            "field {number}: the value changed through its subfields"
        );
    }
}

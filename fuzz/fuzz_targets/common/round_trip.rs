//! The shared body of the message-parsing targets: parsing must never panic;
//! whatever parses must build, and the built bytes must parse back to the same
//! message and build to the same bytes again (the wire form is a fixed point
//! after one round: the input itself may differ, e.g. in lower-case hex).

use bytes::Bytes;
use iso8583::Spec;

pub fn run(specs: &[Spec], data: &[u8]) {
    let input = Bytes::copy_from_slice(data);
    for spec in specs {
        let Ok(message) = iso8583::parse(spec, input.clone()) else {
            continue;
        };
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

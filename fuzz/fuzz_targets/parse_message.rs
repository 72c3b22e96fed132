//! Parses arbitrary bytes with every built-in spec. Parsing must never panic;
//! whatever parses must build, and the built bytes must parse back to the same
//! message and build to the same bytes again (the wire form is a fixed point
//! after one round: the input itself may differ, e.g. in a BCD padding nibble).

#![no_main]

use std::sync::OnceLock;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use iso8583::spec::BUILTIN_SPECS;
use iso8583::Spec;

fn specs() -> &'static [Spec] {
    static SPECS: OnceLock<Vec<Spec>> = OnceLock::new();
    SPECS.get_or_init(|| {
        BUILTIN_SPECS
            .iter()
            .map(|(name, _)| {
                Spec::load(name).unwrap_or_else(|e| panic!("built-in spec {name}: {e}"))
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let input = Bytes::copy_from_slice(data);
    for spec in specs() {
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
});

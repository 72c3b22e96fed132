//! Parses arbitrary bytes with specs that use the wire forms beyond the built-in
//! dialects: a header before the MTI, EBCDIC-hex and mixed bitmap encodings, an
//! always-present secondary bitmap, strict BCD pad nibbles (0 and F, either side),
//! 1- to 6-digit, hex and left-justified BCD length prefixes, lengths counting bytes
//! or characters or nibbles, signed BCD amounts, the track-2 separator kept as `D`, and
//! EBCDIC 1047, Latin-1, GBK and GB 18030 text (see common/round_trip.rs for what
//! is checked).

#![no_main]

use std::sync::OnceLock;

use iso8583::Spec;
use libfuzzer_sys::fuzz_target;

#[path = "common/round_trip.rs"]
mod round_trip;

const SPECS: &[&str] = &[
    include_str!("../../crates/iso8583/tests/specs/wire_forms_terminal.toml"),
    include_str!("../../crates/iso8583/tests/specs/wire_forms_mainframe.toml"),
];

fn specs() -> &'static [Spec] {
    static COMPILED: OnceLock<Vec<Spec>> = OnceLock::new();
    COMPILED.get_or_init(|| {
        SPECS
            .iter()
            .map(|text| Spec::from_toml(text).unwrap_or_else(|e| panic!("fuzz spec: {e}")))
            .collect()
    })
}

fuzz_target!(|data: &[u8]| round_trip::run(specs(), data));

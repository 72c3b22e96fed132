//! Parses arbitrary bytes with every built-in spec (see common/round_trip.rs for
//! what is checked).

#![no_main]

use std::sync::OnceLock;

use iso8583::spec::BUILTIN_SPECS;
use iso8583::Spec;
use libfuzzer_sys::fuzz_target;

#[path = "common/round_trip.rs"]
mod round_trip;

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

fuzz_target!(|data: &[u8]| round_trip::run(specs(), data));

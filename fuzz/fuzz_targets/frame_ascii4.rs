//! Fuzzes the `ascii4` framing decoder (see common/framing.rs for what is checked).

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common/framing.rs"]
mod framing;

fuzz_target!(|data: &[u8]| framing::run("ascii4", data));

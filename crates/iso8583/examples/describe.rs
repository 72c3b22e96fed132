//! The codec on its own: decodes one message of the switchboard dialect given
//! as hex, validates it and prints each field (card numbers masked), then
//! builds it back and checks the bytes are the same.
//!
//!     cargo run -p switchboard-iso8583 --example describe -- 08002220000000000000...
//!
//! Without an argument it describes a sign-on (0800) it builds itself.

use std::process::ExitCode;

use bytes::Bytes;
use iso8583::{codec, mask, mti, validate, Message, Spec};

fn main() -> ExitCode {
    let spec = Spec::switchboard();
    let wire = match std::env::args().nth(1) {
        Some(hex) => match decode_hex(hex.trim()) {
            Some(bytes) => bytes,
            None => {
                eprintln!("describe: the argument is not hex");
                return ExitCode::from(2);
            }
        },
        None => {
            let mut sign_on = Message::new(*b"0800");
            sign_on
                .set(7, "1201120000")
                .set(11, "000001")
                .set(33, "00010000")
                .set(70, "001");
            codec::build_bytes(&spec, &sign_on)
                .expect("a sign-on builds")
                .to_vec()
        }
    };
    let msg = match codec::parse(&spec, Bytes::from(wire.clone())) {
        Ok(msg) => msg,
        Err(e) => {
            eprintln!("describe: {e}");
            return ExitCode::FAILURE;
        }
    };
    let kind = if mti::is_response(msg.mti()) {
        "response"
    } else {
        "request"
    };
    println!("MTI {} ({kind})", String::from_utf8_lossy(msg.mti()));
    for (number, value) in msg.fields() {
        let text = String::from_utf8_lossy(value);
        let shown = if number == 2 {
            mask::mask_pan(&text)
        } else {
            text.into_owned()
        };
        println!("  F{number:<3} {shown}");
    }
    let report = validate::validate(&spec, &msg);
    for violation in &report.violations {
        println!("  invalid: {violation}");
    }
    let rebuilt = codec::build_bytes(&spec, &msg).expect("a parsed message builds");
    println!(
        "{}; rebuilt to {} bytes, {}",
        if report.is_valid() {
            "valid"
        } else {
            "not valid"
        },
        rebuilt.len(),
        if rebuilt[..] == wire[..] {
            "identical"
        } else {
            "different"
        }
    );
    ExitCode::SUCCESS
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

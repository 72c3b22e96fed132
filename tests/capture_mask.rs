//! Captures written with card data masked: frames of ASCII and packed-BCD
//! dialects, with and without a header, recorded by a masking recorder; the
//! file holds no card number in any form (ASCII, hex, packed BCD), and the
//! real `switchboard capture decode` still reads every message, the masked
//! card numbers keeping their first 6 and last 4 digits.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;

use capture::mask::CardMask;
use capture::record::Recorder;
use iso8583::framing::{frame_bytes, CupsHeader, FramingConfig, HeaderKind};
use iso8583::{Message, Spec};

use common::card_scan::search;

const CARDS: [&str; 3] = [
    "6222020200112233446",
    "4761739001010119",
    "6235010099887766554",
];

/// A request carrying `card` in field 2 and, where the spec has it, in track 2.
fn request(spec: &Spec, card: &str, stan: u32) -> Message {
    let mut msg = Message::new(*b"0200");
    msg.set(2, card.to_string())
        .set(3, "000000")
        .set(4, "000000001000")
        .set(11, format!("{stan:06}"));
    if spec.field(35).is_some() {
        msg.set(35, format!("{card}=22122011758928889"));
    }
    if spec.field(103).is_some() {
        msg.set(103, CARDS[(stan as usize + 1) % CARDS.len()].to_string());
    }
    msg
}

/// `body` framed, its header (if any) blank.
fn framed(framing: &FramingConfig, body: &[u8]) -> Vec<u8> {
    let header = match framing.header {
        HeaderKind::Cups => CupsHeader::new("1", "2").unwrap().build().to_vec(),
        HeaderKind::Fixed(n) => vec![0; n],
        HeaderKind::None => Vec::new(),
    };
    frame_bytes(framing, &header, body).unwrap().to_vec()
}

#[test]
fn a_masked_capture_holds_no_card_number_and_still_decodes() {
    for spec_name in ["switchboard", "iso8583-1987-ascii", "iso8583-1987-bcd"] {
        for framing_name in ["ascii4", "binary2+cups"] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("link.pcapng");
            let spec = Arc::new(Spec::load(spec_name).unwrap());
            let framing: FramingConfig = framing_name.parse().unwrap();
            let recorder = Recorder::create(&path)
                .unwrap()
                .masking_card_data(CardMask::new(spec.clone()));
            let client: SocketAddr = "10.0.0.1:40000".parse().unwrap();
            let server: SocketAddr = "10.0.0.2:5000".parse().unwrap();
            let tap = recorder.tap(client, server, &framing);
            let build = |card: &str, stan: u32| {
                iso8583::build_bytes(&spec, &request(&spec, card, stan)).unwrap()
            };
            for (i, card) in CARDS.iter().enumerate() {
                tap.from_client(&framed(&framing, &build(card, i as u32 + 1)));
            }
            // A frame that does not parse (its body one byte short): where
            // its card digits are is unknown, so none of its body is kept.
            let whole = build(CARDS[0], 9);
            tap.from_client(&framed(&framing, &whole[..whole.len() - 1]));
            drop(tap);
            recorder.finish().unwrap();

            let cards: Vec<String> = CARDS.iter().map(|c| c.to_string()).collect();
            let found = search(dir.path(), &cards);
            assert!(found.is_empty(), "{spec_name} {framing_name}: {found:?}");

            let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
                .args(["capture", "decode", "--json", "--unmask"])
                .args(["--spec", spec_name, "--framing", framing_name])
                .arg(&path)
                .output()
                .unwrap();
            let text = String::from_utf8(out.stdout).unwrap();
            let lines: Vec<serde_json::Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            let messages: Vec<&serde_json::Value> =
                lines.iter().filter(|l| l.get("mti").is_some()).collect();
            assert_eq!(
                messages.len(),
                CARDS.len(),
                "{spec_name} {framing_name}: {text}"
            );
            for (message, card) in messages.iter().zip(CARDS) {
                let f = &message["fields"];
                let masked = format!(
                    "{}{}{}",
                    &card[..6],
                    "0".repeat(card.len() - 10),
                    &card[card.len() - 4..]
                );
                assert_eq!(
                    f["2"],
                    masked.as_str(),
                    "{spec_name} {framing_name}: {message}"
                );
                if spec.field(35).is_some() {
                    assert_eq!(
                        f["35"],
                        format!("{masked}=00000000000000000").as_str(),
                        "{spec_name} {framing_name}: {message}"
                    );
                }
                assert_eq!(f["4"], "000000001000");
            }
            // The broken frame is there, as a frame that does not parse.
            let errors = lines.iter().filter(|l| l.get("error").is_some()).count();
            assert_eq!(errors, 1, "{spec_name} {framing_name}: {text}");
        }
    }
}

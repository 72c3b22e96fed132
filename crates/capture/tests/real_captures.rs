//! Captures made for real with tcpdump on loopback (see `captures/README.md`).

use std::fs::File;
use std::io::BufReader;

use capture::summary::Tracker;
use capture::{CaptureDecoder, CaptureReader, DecoderOptions, EventKind};
use iso8583::Spec;

fn decode(name: &str) -> (Vec<String>, Tracker) {
    let spec = Spec::load("switchboard").unwrap();
    let path = format!("{}/tests/captures/{name}", env!("CARGO_MANIFEST_DIR"));
    let mut reader = CaptureReader::new(BufReader::new(File::open(path).unwrap())).unwrap();
    let mut decoder = CaptureDecoder::new(&spec, DecoderOptions::default());
    let mut events = Vec::new();
    while let Some(packet) = reader.next_packet().unwrap() {
        decoder.packet(&packet, &mut events).unwrap();
    }
    decoder.finish(&mut events);
    let mut tracker = Tracker::default();
    let lines = events
        .iter()
        .map(|e| {
            let latency = tracker.event(e);
            match &e.kind {
                EventKind::Message { message, .. } => format!(
                    "{} {} {} {}",
                    e.dst.port(),
                    message.mti_str(),
                    message.get_str(11).unwrap_or("-"),
                    if latency.is_some() { "matched" } else { "-" }
                ),
                other => format!("{other:?}"),
            }
        })
        .collect();
    (lines, tracker)
}

#[test]
fn every_real_capture_decodes_to_the_exchange_that_was_made() {
    for (name, port) in [
        ("lo-ethernet-ascii4.pcap", 47011),
        ("lo-ethernet-nanos-ascii4.pcap", 47012),
        ("any-cooked2-binary2.pcap", 47013),
        ("any-cooked1-ascii4.pcap", 47014),
    ] {
        let (lines, tracker) = decode(name);
        let to_server = |mti: &str, stan: &str| format!("{port} {mti} {stan} -");
        assert_eq!(lines.len(), 6, "{name}: {lines:?}");
        for (i, (req, resp, stan)) in [
            ("0800", "0810", "000001"),
            ("0100", "0110", "000002"),
            ("0200", "0210", "000003"),
        ]
        .into_iter()
        .enumerate()
        {
            assert_eq!(lines[2 * i], to_server(req, stan), "{name}");
            assert!(
                lines[2 * i + 1].ends_with(&format!("{resp} {stan} matched")),
                "{name}: {lines:?}"
            );
        }
        let summary = tracker.summary();
        assert_eq!(
            (
                summary.unanswered_requests,
                summary.responses_without_request
            ),
            (0, 0)
        );
        assert_eq!(summary.latency.unwrap().count, 3);
    }
}

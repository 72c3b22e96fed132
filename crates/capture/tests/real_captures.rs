//! Captures made for real with tcpdump and dumpcap on loopback (see
//! `captures/README.md`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;

use capture::summary::Tracker;
use capture::write::{LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL};
use capture::{CaptureDecoder, CaptureReader, DecoderOptions, EventKind};
use iso8583::Spec;

fn open(name: &str) -> CaptureReader<BufReader<File>> {
    let path = format!("{}/tests/captures/{name}", env!("CARGO_MANIFEST_DIR"));
    CaptureReader::new(BufReader::new(File::open(path).unwrap())).unwrap()
}

fn decode(name: &str) -> (Vec<String>, Tracker) {
    let spec = Spec::load("switchboard").unwrap();
    let mut reader = open(name);
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
        // Every segment twice, on lo and on any; each message once.
        ("lo-any-dumpcap-binary2.pcapng", 47015),
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

#[test]
fn dumpcap_on_two_interfaces_describes_both_and_sees_every_packet_twice() {
    // The messages are each decoded once: see the test above.
    let mut reader = open("lo-any-dumpcap-binary2.pcapng");
    // (interface, link type) -> packets
    let mut seen = BTreeMap::new();
    while let Some(packet) = reader.next_packet().unwrap() {
        *seen
            .entry((packet.interface, packet.link_type))
            .or_insert(0) += 1;
    }
    // lo is Ethernet (1), any Linux cooked v1 (113): dumpcap, unlike
    // tcpdump 4.99, does not ask for cooked v2. 14 packets on each.
    assert_eq!(
        seen,
        BTreeMap::from([((0, LINKTYPE_ETHERNET), 14), ((1, LINKTYPE_LINUX_SLL), 14)])
    );
}

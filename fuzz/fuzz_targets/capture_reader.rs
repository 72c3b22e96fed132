//! Reads arbitrary bytes as a capture file (pcap or pcapng) and decodes every
//! packet it yields through TCP reassembly, frame cutting and parsing, then
//! flushes the connections. Nothing may panic, and the reader must stop:
//! each packet consumes input, so at most one packet per 16 bytes.

#![no_main]

use std::sync::OnceLock;

use capture::summary::Tracker;
use capture::{CaptureDecoder, CaptureReader, DecoderOptions};
use iso8583::Spec;
use libfuzzer_sys::fuzz_target;

fn spec() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| Spec::load("switchboard").expect("the built-in spec loads"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(mut reader) = CaptureReader::new(data) else {
        return;
    };
    let mut decoder = CaptureDecoder::new(spec(), DecoderOptions::default());
    let mut tracker = Tracker::default();
    let mut events = Vec::new();
    let mut packets = 0usize;
    while let Ok(Some(packet)) = reader.next_packet() {
        packets += 1;
        assert!(packets <= data.len() / 12 + 1, "more packets than the input can hold");
        let _ = decoder.packet(&packet, &mut events);
    }
    decoder.finish(&mut events);
    for event in &events {
        tracker.event(event);
    }
    let _ = tracker.summary();
});

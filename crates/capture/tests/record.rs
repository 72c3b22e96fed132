//! The recorder: what a tap records decodes back to the same messages, in
//! order, between the tap's own addresses (IPv6 too); and a writer that falls
//! behind costs dropped, counted packets, never a blocked caller.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};

use capture::record::{Recorder, Rotation};
use capture::{CaptureDecoder, CaptureReader, DecoderOptions, Event, EventKind};
use iso8583::framing::{frame_bytes, FramingConfig};
use iso8583::{Message, Spec};

/// A file in memory whose writes wait while the gate is closed.
#[derive(Clone, Default)]
struct Gated {
    bytes: Arc<Mutex<Vec<u8>>>,
    gate: Arc<(Mutex<bool>, Condvar)>,
}

impl Gated {
    fn open() -> Gated {
        let gated = Gated::default();
        gated.set(true);
        gated
    }

    fn set(&self, open: bool) {
        let (lock, cond) = &*self.gate;
        *lock.lock().unwrap() = open;
        cond.notify_all();
    }

    fn contents(&self) -> Vec<u8> {
        self.bytes.lock().unwrap().clone()
    }
}

impl Write for Gated {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (lock, cond) = &*self.gate;
        let mut open = lock.lock().unwrap();
        while !*open {
            open = cond.wait(open).unwrap();
        }
        self.bytes.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn spec() -> Spec {
    Spec::load("switchboard").unwrap()
}

fn framed(spec: &Spec, mti: &str, stan: u32) -> Vec<u8> {
    let mut msg = Message::new(mti.as_bytes().try_into().unwrap());
    msg.set(7, "1202093000");
    msg.set(11, format!("{stan:06}"));
    msg.set(32, "01020000");
    msg.set(70, "001");
    if mti.ends_with("10") {
        msg.set(39, "00");
    }
    let body = iso8583::build_bytes(spec, &msg).unwrap();
    frame_bytes(&FramingConfig::default(), &[], &body)
        .unwrap()
        .to_vec()
}

fn decode(spec: &Spec, file: &[u8]) -> Vec<Event> {
    let mut reader = CaptureReader::new(file).unwrap();
    let mut decoder = CaptureDecoder::new(spec, DecoderOptions::default());
    let mut events = Vec::new();
    while let Some(p) = reader.next_packet().unwrap() {
        decoder.packet(&p, &mut events).unwrap();
    }
    decoder.finish(&mut events);
    events
}

/// (src, dst, "MTI STAN") of each message.
fn messages(events: &[Event]) -> Vec<(SocketAddr, SocketAddr, String)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Message { message, .. } => Some((
                e.src,
                e.dst,
                format!("{} {}", message.mti_str(), message.get_str(11).unwrap()),
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn a_tapped_ipv6_exchange_decodes_in_order_between_its_addresses() {
    let spec = spec();
    let out = Gated::open();
    let recorder = Recorder::with_queue(out.clone(), 64).unwrap();
    let client: SocketAddr = "[2001:db8::1]:40000".parse().unwrap();
    let server: SocketAddr = "[2001:db8::2]:5000".parse().unwrap();
    let tap = recorder.tap(client, server, &FramingConfig::default());
    for stan in 1..=3 {
        tap.from_client(&framed(&spec, "0800", stan));
    }
    for stan in 1..=3 {
        tap.from_server(&framed(&spec, "0810", stan));
    }
    drop(tap);
    let stats = recorder.finish().unwrap();
    assert_eq!((stats.written, stats.dropped), (9, 0));
    let events = decode(&spec, &out.contents());
    let expected: Vec<_> = (1..=3)
        .map(|s| (client, server, format!("0800 {s:06}")))
        .chain((1..=3).map(|s| (server, client, format!("0810 {s:06}"))))
        .collect();
    assert_eq!(messages(&events), expected);
    assert!(events
        .iter()
        .all(|e| matches!(e.kind, EventKind::Message { .. })));
}

#[test]
fn a_writer_that_falls_behind_drops_and_counts_but_never_blocks() {
    let spec = spec();
    let out = Gated::default(); // closed: the writer thread blocks on its first write
    let recorder = Recorder::with_queue(out.clone(), 4).unwrap();
    let client: SocketAddr = "10.0.0.1:40000".parse().unwrap();
    let server: SocketAddr = "10.0.0.2:5000".parse().unwrap();
    let tap = recorder.tap(client, server, &FramingConfig::default());
    const SENT: u32 = 5_000;
    for stan in 1..=SENT {
        tap.from_client(&framed(&spec, "0800", stan)); // returns at once
    }
    assert!(recorder.dropped() > 0);
    out.set(true);
    drop(tap);
    let stats = recorder.finish().unwrap();
    // SYN, SYN-ACK, the requests, the FIN: each written or dropped.
    assert_eq!(stats.written + stats.dropped, u64::from(SENT) + 3);
    assert!(stats.dropped > 0 && stats.written > 0, "{stats:?}");
    // What was written decodes in order; the holes are lost bytes, not garbage.
    let events = decode(&spec, &out.contents());
    let stans: Vec<u32> = messages(&events)
        .iter()
        .map(|(src, _, m)| {
            assert_eq!(*src, client);
            m[5..].parse().unwrap()
        })
        .collect();
    assert!(stans.windows(2).all(|w| w[0] < w[1]), "{stans:?}");
    assert!(stans.len() < SENT as usize);
    assert!(events
        .iter()
        .all(|e| !matches!(e.kind, EventKind::Unparsable { .. })));
}

#[test]
fn a_rotating_recorder_keeps_its_last_files_each_whole() {
    let spec = spec();
    let dir = std::env::temp_dir().join(format!("capture-rotate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("link.pcapng");
    let rotation = Rotation {
        max_bytes: 2_000,
        max_files: 3,
    };
    let recorder = Recorder::create_rotating(&path, rotation).unwrap();
    let client: SocketAddr = "10.0.0.1:40000".parse().unwrap();
    let server: SocketAddr = "10.0.0.2:5000".parse().unwrap();
    let tap = recorder.tap(client, server, &FramingConfig::default());
    const SENT: u32 = 200;
    for stan in 1..=SENT {
        tap.from_client(&framed(&spec, "0800", stan));
        // Slow enough for the writer to keep up: nothing dropped.
        if stan % 16 == 0 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    drop(tap);
    let stats = recorder.finish().unwrap();
    assert_eq!(stats.dropped, 0);
    let numbered = |n: u32| dir.join(format!("link.pcapng.{n}"));
    assert!(path.exists() && numbered(1).exists() && numbered(2).exists());
    assert!(!numbered(3).exists(), "only 3 files are kept");
    // Oldest first: every file decodes on its own (each a whole pcapng file,
    // the later ones starting mid-connection), and together they end with the
    // last request, in order.
    let mut stans = Vec::new();
    for file in [numbered(2), numbered(1), path.clone()] {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            bytes.len() < 4_000,
            "{}: {} bytes",
            file.display(),
            bytes.len()
        );
        for (src, dst, m) in messages(&decode(&spec, &bytes)) {
            assert_eq!((src, dst), (client, server));
            stans.push(m[5..].parse::<u32>().unwrap());
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(stans.last(), Some(&SENT));
    assert!(stans.windows(2).all(|w| w[0] + 1 == w[1]), "{stans:?}");
    assert!(stans.len() < SENT as usize);
}

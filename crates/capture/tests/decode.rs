//! Synthetic captures for the hard cases: each is built in memory with the
//! crate's own writers, then read back through the whole pipeline.

use std::net::SocketAddr;

use capture::file::TsResolution;
use capture::packet::{ACK, FIN, RST, SYN};
use capture::summary::Tracker;
use capture::write::{
    bsd_null, ethernet, ip_tcp, linux_sll, linux_sll2, PcapWriter, PcapngWriter, LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPE_NULL, LINKTYPE_RAW,
};
use capture::{CaptureDecoder, CaptureError, CaptureReader, DecoderOptions, Event, EventKind};
use iso8583::framing::{frame_bytes, CupsHeader, FramingConfig};
use iso8583::{Message, Spec};
use proptest::prelude::*;

const BASE_NS: i64 = 1_764_633_600_000_000_000; // 2025-12-02T00:00:00Z

fn spec() -> Spec {
    Spec::load("switchboard").unwrap()
}

fn client() -> SocketAddr {
    "10.0.0.1:40000".parse().unwrap()
}

fn server() -> SocketAddr {
    "10.0.0.2:5000".parse().unwrap()
}

/// A message of the dialect, framed: `mti` with STAN `stan`.
fn framed(framing: &str, mti: &str, stan: u32) -> Vec<u8> {
    let spec = spec();
    let mut msg = Message::new(mti.as_bytes().try_into().unwrap());
    msg.set(2, "6222020200112233446");
    msg.set(3, "030000");
    msg.set(4, "000000010000");
    msg.set(7, "1202093000");
    msg.set(11, format!("{stan:06}"));
    msg.set(32, "01020000");
    if mti.as_bytes()[2] % 2 == 1 {
        msg.set(39, "00");
    }
    let body = iso8583::build_bytes(&spec, &msg).unwrap();
    let config: FramingConfig = framing.parse().unwrap();
    frame_bytes(&config, &[], &body).unwrap().to_vec()
}

/// `count` requests 0100 with STANs 1.. back to back, ascii4.
fn requests(count: u32) -> Vec<u8> {
    (1..=count)
        .flat_map(|stan| framed("ascii4", "0100", stan))
        .collect()
}

/// One IP packet: (timestamp, bytes).
type Ip = (i64, Vec<u8>);

fn seg(at_us: i64, src: SocketAddr, dst: SocketAddr, seq: u32, flags: u8, payload: &[u8]) -> Ip {
    (
        BASE_NS + at_us * 1000,
        ip_tcp(src, dst, seq, flags, payload),
    )
}

/// The packets of `stream` sent by the client in pieces of the given sizes,
/// after a SYN with sequence number `isn`.
fn pieces(isn: u32, stream: &[u8], sizes: &[usize]) -> Vec<Ip> {
    let mut out = vec![seg(0, client(), server(), isn, SYN, b"")];
    let mut at = 0;
    for (i, &size) in sizes.iter().chain(std::iter::once(&usize::MAX)).enumerate() {
        if at >= stream.len() {
            break;
        }
        let end = stream.len().min(at.saturating_add(size));
        let seq = isn.wrapping_add(1).wrapping_add(at as u32);
        out.push(seg(
            i as i64 + 1,
            client(),
            server(),
            seq,
            ACK,
            &stream[at..end],
        ));
        at = end;
    }
    out
}

fn pcap(link_type: u32, wrap: fn(&[u8]) -> Vec<u8>, packets: &[Ip]) -> Vec<u8> {
    let mut w = PcapWriter::new(Vec::new(), link_type, false, false).unwrap();
    for (ts, p) in packets {
        w.packet(*ts, &wrap(p)).unwrap();
    }
    w.into_inner()
}

fn eth(p: &[u8]) -> Vec<u8> {
    ethernet(p, None)
}

fn decode_with(file: &[u8], options: DecoderOptions) -> (Vec<Event>, Option<CaptureError>) {
    let spec = spec();
    let mut reader = CaptureReader::new(file).unwrap();
    let mut decoder = CaptureDecoder::new(&spec, options);
    let mut events = Vec::new();
    let mut error = None;
    loop {
        match reader.next_packet() {
            Ok(Some(p)) => decoder.packet(&p, &mut events).unwrap(),
            Ok(None) => break,
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    decoder.finish(&mut events);
    (events, error)
}

fn decode(file: &[u8]) -> Vec<Event> {
    let (events, error) = decode_with(file, DecoderOptions::default());
    assert!(error.is_none(), "{error:?}");
    events
}

/// "0100 000001" for each message, "skipped N" / "error" for the rest.
fn brief(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| match &e.kind {
            EventKind::Message { message, .. } => {
                format!(
                    "{} {}",
                    message.mti_str(),
                    message.get_str(11).unwrap_or("-")
                )
            }
            EventKind::KeepAlive { .. } => "keep-alive".into(),
            EventKind::Skipped { len, .. } => format!("skipped {len}"),
            EventKind::Unparsable { reason, .. } => format!("error {reason}"),
        })
        .collect()
}

fn expect(count: u32) -> Vec<String> {
    (1..=count).map(|s| format!("0100 {s:06}")).collect()
}

#[test]
fn a_frame_split_2_7_rest_and_two_frames_in_one_segment() {
    let stream = requests(3);
    let first = framed("ascii4", "0100", 1).len();
    // 2 + 7 + rest of the first frame, then the other two frames in one segment.
    let packets = pieces(1000, &stream, &[2, 7, first - 9]);
    assert_eq!(packets.len(), 5);
    let events = decode(&pcap(LINKTYPE_ETHERNET, eth, &packets));
    assert_eq!(brief(&events), expect(3));
    // The first message is dated by the packet that completed it.
    assert_eq!(events[0].ts_ns, BASE_NS + 3000);
    assert_eq!((events[0].src, events[0].dst), (client(), server()));
}

#[test]
fn out_of_order_retransmitted_and_overlapping_segments() {
    let stream = requests(4);
    let mut packets = pieces(7, &stream, &[10, 50, 30, 90, 40, 60]);
    packets.swap(2, 4);
    packets.swap(3, 6);
    // A retransmission of a segment already delivered, and an overlapping
    // segment with other bytes where it overlaps: the first data wins.
    let again = packets[1].clone();
    packets.push(again);
    let mut garbage = vec![b'X'; 40];
    garbage[..5].copy_from_slice(&stream[55..60]);
    packets.insert(3, seg(9, client(), server(), 7 + 1 + 20, ACK, &garbage));
    let events = decode(&pcap(LINKTYPE_ETHERNET, eth, &packets));
    assert_eq!(brief(&events), expect(4));
}

#[test]
fn sequence_numbers_wrap() {
    let stream = requests(3);
    let packets = pieces(u32::MAX - 50, &stream, &[30, 30, 30, 30]);
    let events = decode(&pcap(LINKTYPE_ETHERNET, eth, &packets));
    assert_eq!(brief(&events), expect(3));
}

#[test]
fn a_capture_that_starts_mid_stream_resynchronises() {
    let stream = requests(3);
    let mut packets = pieces(500, &stream, &[25, 40, 400]);
    packets.remove(0); // no SYN
    packets.remove(0); // and not the first 25 bytes
    let events = decode(&pcap(LINKTYPE_ETHERNET, eth, &packets));
    let first = framed("ascii4", "0100", 1).len();
    assert_eq!(
        brief(&events),
        [
            format!("skipped {}", first - 25),
            "0100 000002".into(),
            "0100 000003".into()
        ]
    );
}

#[test]
fn framing_is_detected_per_connection_or_taken_as_given() {
    for framing in ["binary2", "bcd2", "binary4", "ascii4"] {
        let stream: Vec<u8> = (1..=2).flat_map(|s| framed(framing, "0100", s)).collect();
        let file = pcap(LINKTYPE_ETHERNET, eth, &pieces(1, &stream, &[17]));
        assert_eq!(brief(&decode(&file)), expect(2), "{framing} detected");
        let given = DecoderOptions {
            framing: Some(framing.parse().unwrap()),
            ..DecoderOptions::default()
        };
        let (events, _) = decode_with(&file, given);
        assert_eq!(brief(&events), expect(2), "{framing} given");
    }
}

#[test]
fn a_cups_header_is_detected_and_kept() {
    let spec = spec();
    let config: FramingConfig = "binary2+cups".parse().unwrap();
    let header = CupsHeader::new("00010000", "01020000").unwrap().build();
    let stream: Vec<u8> = (1..=2)
        .flat_map(|stan| {
            let mut msg = Message::new(*b"0800");
            msg.set(7, "1202093000");
            msg.set(11, format!("{stan:06}"));
            msg.set(70, "301");
            let body = iso8583::build_bytes(&spec, &msg).unwrap();
            frame_bytes(&config, &header, &body).unwrap().to_vec()
        })
        .collect();
    let events = decode(&pcap(LINKTYPE_ETHERNET, eth, &pieces(1, &stream, &[60])));
    assert_eq!(brief(&events), ["0800 000001", "0800 000002"]);
    let EventKind::Message { header: kept, .. } = &events[0].kind else {
        panic!("{:?}", brief(&events));
    };
    assert_eq!(kept.len(), CupsHeader::LEN);
    assert_eq!(&kept[6..17], b"00010000   ");
}

#[test]
fn a_frame_that_does_not_parse_is_reported_and_the_stream_goes_on() {
    let mut stream = framed("ascii4", "0100", 1);
    let bad_at = stream.len() as u64;
    stream.extend_from_slice(b"00080100\x00\x00\x00\x00");
    stream.extend(framed("ascii4", "0100", 2));
    let options = DecoderOptions {
        framing: Some("ascii4".parse().unwrap()),
        ..DecoderOptions::default()
    };
    let (events, _) = decode_with(
        &pcap(LINKTYPE_ETHERNET, eth, &pieces(1, &stream, &[])),
        options,
    );
    assert_eq!(events.len(), 3, "{:?}", brief(&events));
    let EventKind::Unparsable {
        offset,
        error_offset,
        ..
    } = &events[1].kind
    else {
        panic!("{:?}", brief(&events));
    };
    assert_eq!(*offset, bad_at);
    assert!(error_offset.is_some());
    assert_eq!(brief(&events[2..]), ["0100 000002"]);
}

#[test]
fn requests_and_responses_are_matched_with_their_latency() {
    let req = framed("ascii4", "0100", 42);
    let resp = framed("ascii4", "0110", 42);
    let orphan = framed("ascii4", "0110", 43);
    let packets = vec![
        seg(0, client(), server(), 100, SYN, b""),
        seg(1, server(), client(), 900, SYN | ACK, b""),
        seg(10, client(), server(), 101, ACK, &req),
        seg(1510, server(), client(), 901, ACK, &resp),
        seg(
            1600,
            server(),
            client(),
            901 + resp.len() as u32,
            ACK,
            &orphan,
        ),
        seg(
            2000,
            client(),
            server(),
            101 + req.len() as u32,
            ACK,
            &framed("ascii4", "0100", 44),
        ),
        seg(3000, client(), server(), 0, FIN | ACK, b""),
    ];
    let events = decode(&pcap(LINKTYPE_ETHERNET, eth, &packets));
    let mut tracker = Tracker::default();
    let latencies: Vec<Option<u64>> = events.iter().map(|e| tracker.event(e)).collect();
    assert_eq!(latencies, [None, Some(1500), None, None]);
    let summary = tracker.summary();
    assert_eq!(summary.messages, 4);
    assert_eq!(summary.unanswered_requests, 1);
    assert_eq!(summary.responses_without_request, 1);
    let named = |u: &capture::summary::Unmatched| format!("{} {} {}", u.packet, u.mti, u.stan);
    assert_eq!(
        summary.unanswered.iter().map(named).collect::<Vec<_>>(),
        ["6 0100 000044"]
    );
    assert_eq!(
        summary
            .without_request
            .iter()
            .map(named)
            .collect::<Vec<_>>(),
        ["5 0110 000043"]
    );
    assert_eq!(summary.latency.unwrap().max_us, 1500);
    assert_eq!(summary.connections.len(), 1);
    assert_eq!(
        summary.by_type,
        [
            ("0100".to_string(), String::new(), 2),
            ("0110".to_string(), "00".to_string(), 2)
        ]
    );
}

#[test]
fn every_link_type_and_ipv6_and_vlan() {
    let stream = requests(2);
    let packets = pieces(1, &stream, &[33]);
    let v6c: SocketAddr = "[fd00::1]:40000".parse().unwrap();
    let v6s: SocketAddr = "[fd00::2]:5000".parse().unwrap();
    let v6: Vec<Ip> = vec![
        (BASE_NS, ip_tcp(v6c, v6s, 1, SYN, b"")),
        (BASE_NS + 1, ip_tcp(v6c, v6s, 2, ACK, &stream[..33])),
        (BASE_NS + 2, ip_tcp(v6c, v6s, 35, ACK, &stream[33..])),
    ];
    let vlan = |p: &[u8]| ethernet(p, Some(42));
    let raw = |p: &[u8]| p.to_vec();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("ethernet", pcap(LINKTYPE_ETHERNET, eth, &packets)),
        ("vlan", pcap(LINKTYPE_ETHERNET, vlan, &packets)),
        ("cooked v1", pcap(LINKTYPE_LINUX_SLL, linux_sll, &packets)),
        ("cooked v2", pcap(LINKTYPE_LINUX_SLL2, linux_sll2, &packets)),
        ("bsd null", pcap(LINKTYPE_NULL, bsd_null, &packets)),
        ("raw", pcap(LINKTYPE_RAW, raw, &packets)),
        ("ipv6 ethernet", pcap(LINKTYPE_ETHERNET, eth, &v6)),
        ("ipv6 cooked v2", pcap(LINKTYPE_LINUX_SLL2, linux_sll2, &v6)),
        ("ipv6 bsd null", pcap(LINKTYPE_NULL, bsd_null, &v6)),
    ];
    for (name, file) in cases {
        let events = decode(&file);
        assert_eq!(brief(&events), expect(2), "{name}");
    }
}

#[test]
fn nanosecond_and_big_endian_pcap() {
    let packets = pieces(1, &requests(1), &[]);
    for (nanos, big_endian) in [(true, false), (false, true), (true, true)] {
        let mut w = PcapWriter::new(Vec::new(), LINKTYPE_ETHERNET, nanos, big_endian).unwrap();
        for (i, (_, p)) in packets.iter().enumerate() {
            w.packet(BASE_NS + 123_456_789 + i as i64, &eth(p)).unwrap();
        }
        let events = decode(&w.into_inner());
        assert_eq!(brief(&events), expect(1));
        let expected = if nanos {
            BASE_NS + 123_456_790
        } else {
            BASE_NS + 123_456_000
        };
        assert_eq!(
            events[0].ts_ns, expected,
            "nanos {nanos} big-endian {big_endian}"
        );
    }
}

/// A pcapng writer with two interfaces, as `dumpcap -i lo -i any` makes:
/// lo (Ethernet, ns) and any with the given link type and resolution.
fn lo_and_any(
    big_endian: bool,
    any_link_type: u32,
    any_resolution: TsResolution,
) -> (PcapngWriter<Vec<u8>>, u32, u32) {
    let mut w = PcapngWriter::new(Vec::new(), big_endian).unwrap();
    let lo = w
        .interface(LINKTYPE_ETHERNET as u16, TsResolution::Decimal(9))
        .unwrap();
    let any = w.interface(any_link_type as u16, any_resolution).unwrap();
    (w, lo, any)
}

#[test]
fn pcapng_with_two_interfaces_each_segment_seen_twice() {
    let stream = requests(3);
    let packets = pieces(77, &stream, &[20, 50, 20]);
    for big_endian in [false, true] {
        let (mut w, lo, any) =
            lo_and_any(big_endian, LINKTYPE_LINUX_SLL2, TsResolution::Binary(20));
        for (ts, p) in &packets {
            w.packet(any, *ts, &linux_sll2(p)).unwrap();
            w.packet(lo, *ts + 7, &eth(p)).unwrap();
        }
        let events = decode(&w.into_inner());
        assert_eq!(brief(&events), expect(3), "big-endian {big_endian}");
        // Completed by the `any` copy (2^-20 s units: within a microsecond).
        let last = packets.last().unwrap().0;
        assert!(
            (events[2].ts_ns - last).abs() < 1000,
            "{} vs {last}",
            events[2].ts_ns
        );
    }
}

#[test]
fn two_interfaces_one_written_after_the_other_each_message_once() {
    // dumpcap with two interfaces may write all of one interface's packets,
    // the connection closed, before the other's copies of them.
    let req = framed("binary2", "0100", 1);
    let resp = framed("binary2", "0110", 1);
    let (c, s) = (client(), server());
    let end_c = 101 + req.len() as u32;
    let end_s = 901 + resp.len() as u32;
    let packets = [
        seg(0, c, s, 100, SYN, b""),
        seg(1, s, c, 900, SYN | ACK, b""),
        seg(2, c, s, 101, ACK, &req),
        seg(3, s, c, 901, ACK, &resp),
        seg(4, c, s, end_c, FIN | ACK, b""),
        seg(5, s, c, end_s, FIN | ACK, b""),
        seg(6, c, s, end_c + 1, ACK, b""),
    ];
    let (mut w, lo, any) = lo_and_any(false, LINKTYPE_LINUX_SLL, TsResolution::Decimal(9));
    for (ts, p) in &packets {
        w.packet(lo, *ts, &eth(p)).unwrap();
    }
    for (ts, p) in &packets {
        w.packet(any, *ts, &linux_sll(p)).unwrap();
    }
    // The same ends again later, with a new SYN: a new connection.
    let again = pieces(5000, &framed("binary2", "0100", 2), &[]);
    for (ts, p) in &again {
        w.packet(any, *ts + 1_000_000, &linux_sll(p)).unwrap();
    }
    let events = decode(&w.into_inner());
    assert_eq!(
        brief(&events),
        ["0100 000001", "0110 000001", "0100 000002"]
    );
    let conns: Vec<u64> = events.iter().map(|e| e.conn).collect();
    assert_eq!(conns, [1, 1, 2]);
}

#[test]
fn filters_pick_connections() {
    let other_client: SocketAddr = "10.0.0.3:41000".parse().unwrap();
    let other_server: SocketAddr = "10.0.0.4:6000".parse().unwrap();
    let mut packets = pieces(1, &requests(1), &[]);
    packets.push(seg(
        9,
        other_client,
        other_server,
        5,
        ACK,
        &framed("ascii4", "0100", 9),
    ));
    let file = pcap(LINKTYPE_ETHERNET, eth, &packets);
    assert_eq!(brief(&decode(&file)), ["0100 000001", "0100 000009"]);
    let by_port = DecoderOptions {
        ports: vec![6000],
        ..DecoderOptions::default()
    };
    assert_eq!(brief(&decode_with(&file, by_port).0), ["0100 000009"]);
    let by_host = DecoderOptions {
        filters: vec!["10.0.0.2:5000".parse().unwrap()],
        ..DecoderOptions::default()
    };
    assert_eq!(brief(&decode_with(&file, by_host).0), expect(1));
}

#[test]
fn a_truncated_capture_names_the_packet_and_keeps_what_came_before() {
    let file = pcap(
        LINKTYPE_ETHERNET,
        eth,
        &pieces(1, &requests(3), &[60, 60, 60]),
    );
    let cut = &file[..file.len() - 30];
    let (events, error) = decode_with(cut, DecoderOptions::default());
    assert!(
        matches!(error, Some(CaptureError::Truncated { packet: 5 })),
        "{error:?}"
    );
    assert_eq!(brief(&events)[..2], expect(2)[..]);
}

#[test]
fn garbage_is_never_a_panic() {
    let packets = pieces(1, &requests(2), &[30]);
    let mut pcapng = PcapngWriter::new(Vec::new(), false).unwrap();
    let any = pcapng
        .interface(LINKTYPE_LINUX_SLL2 as u16, TsResolution::Binary(20))
        .unwrap();
    for (ts, p) in &packets {
        pcapng.packet(any, *ts, &linux_sll2(p)).unwrap();
    }
    let files = [pcap(LINKTYPE_ETHERNET, eth, &packets), pcapng.into_inner()];
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for round in 0..600 {
        let mut bad = files[round % 2].clone();
        for _ in 0..4 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let at = (state as usize) % bad.len();
            bad[at] = (state >> 32) as u8;
        }
        if let Ok(mut reader) = CaptureReader::new(&bad[..]) {
            let spec = spec();
            let mut decoder = CaptureDecoder::new(&spec, DecoderOptions::default());
            let mut events = Vec::new();
            while let Ok(Some(p)) = reader.next_packet() {
                let _ = decoder.packet(&p, &mut events);
            }
            decoder.finish(&mut events);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any split of a stream into segments, delivered in any order, with
    /// some segments twice, decodes to the same messages.
    #[test]
    fn any_split_and_reorder_decodes_the_same(
        cuts in proptest::collection::vec(1usize..120, 1..30),
        order in proptest::collection::vec(any::<u32>(), 30),
        dups in proptest::collection::vec(any::<bool>(), 30),
        isn in any::<u32>(),
    ) {
        let stream = requests(5);
        let mut packets = pieces(isn, &stream, &cuts);
        let syn = packets.remove(0);
        let mut data: Vec<(u32, Ip)> = packets
            .into_iter()
            .enumerate()
            .map(|(i, p)| (order[i % order.len()], p))
            .collect();
        data.sort_by_key(|(k, _)| *k);
        let mut shuffled = vec![syn];
        for (i, (_, p)) in data.into_iter().enumerate() {
            if dups[i % dups.len()] {
                shuffled.push(p.clone());
            }
            shuffled.push(p);
        }
        let events = decode(&pcap(LINKTYPE_ETHERNET, eth, &shuffled));
        prop_assert_eq!(brief(&events), expect(5));
    }
}

#[test]
fn a_hole_in_the_stream_is_skipped_and_the_stream_resynchronises() {
    let stream = requests(4);
    let frame = framed("ascii4", "0100", 1).len();
    // A segment never captured: 30 bytes of the second frame.
    let mut lost = pieces(3, &stream, &[frame + 10, 30, 400]);
    lost.remove(2);
    // A packet cut by the snapshot length: 10 bytes of the second frame.
    let mut cut = pieces(3, &stream, &[frame + 20, 400]);
    let keep = cut[1].1.len() - 10;
    cut[1].1.truncate(keep);
    for (name, packets) in [("lost", lost), ("cut", cut)] {
        let events = decode(&pcap(LINKTYPE_ETHERNET, eth, &packets));
        // The bytes before the hole, the hole and the rest of the second
        // frame, passed over until the third frame starts, are one run.
        assert_eq!(
            brief(&events),
            [
                "0100 000001".to_string(),
                format!("skipped {frame}"),
                "0100 000003".into(),
                "0100 000004".into(),
            ],
            "{name}"
        );
    }
}

#[test]
fn keep_alives_rst_and_a_new_connection_on_the_same_ports() {
    let first = framed("ascii4", "0100", 1);
    let mut stream = b"0000".to_vec();
    stream.extend_from_slice(&first);
    stream.extend_from_slice(&framed("ascii4", "0100", 2)[..20]);
    let mut packets = pieces(10, &stream, &[]);
    let end = 11 + stream.len() as u32;
    packets.push(seg(50, client(), server(), end, RST, b""));
    // The same ports again: a new connection, numbered 2.
    packets.extend(
        pieces(90_000, &framed("ascii4", "0100", 3), &[])
            .into_iter()
            .map(|(ts, p)| (ts + 100_000, p)),
    );
    let events = decode(&pcap(LINKTYPE_ETHERNET, eth, &packets));
    assert_eq!(
        brief(&events),
        ["keep-alive", "0100 000001", "skipped 20", "0100 000003"]
    );
    let conns: Vec<u64> = events.iter().map(|e| e.conn).collect();
    assert_eq!(conns, [1, 1, 1, 2]);
}

#[test]
fn pcapng_sections_of_both_byte_orders_offsets_and_simple_packet_blocks() {
    let stream = requests(2);
    let packets = pieces(5, &stream, &[50, 50]);
    let (head, tail) = packets.split_at(2);
    // Section 1, little-endian: an interface with if_tsoffset.
    let mut w = PcapngWriter::new(Vec::new(), false).unwrap();
    let lo = w
        .interface_with_offset(
            LINKTYPE_ETHERNET as u16,
            TsResolution::Decimal(6),
            1_700_000_000,
        )
        .unwrap();
    for (ts, p) in head {
        w.packet(lo, *ts, &eth(p)).unwrap();
    }
    let mut file = w.into_inner();
    // Section 2, big-endian, its own interface: a simple packet block (no
    // timestamp) then an enhanced one.
    let mut w = PcapngWriter::new(Vec::new(), true).unwrap();
    let raw = w
        .interface(LINKTYPE_RAW as u16, TsResolution::Decimal(9))
        .unwrap();
    let first = &tail[0].1;
    let mut spb = Vec::new();
    let total = (12 + 4 + first.len().div_ceil(4) * 4) as u32;
    spb.extend_from_slice(&3u32.to_be_bytes());
    spb.extend_from_slice(&total.to_be_bytes());
    spb.extend_from_slice(&(first.len() as u32).to_be_bytes());
    spb.extend_from_slice(first);
    spb.resize(total as usize - 4, 0);
    spb.extend_from_slice(&total.to_be_bytes());
    let mut second = w.into_inner();
    second.extend_from_slice(&spb);
    let mut w = PcapngWriter::new(second, true).unwrap();
    let raw_again = w
        .interface(LINKTYPE_RAW as u16, TsResolution::Decimal(9))
        .unwrap();
    assert_eq!((raw, raw_again), (0, 0));
    for (ts, p) in &tail[1..] {
        w.packet(raw_again, *ts, p).unwrap();
    }
    file.extend_from_slice(&w.into_inner());
    let events = decode(&file);
    assert_eq!(brief(&events), expect(2));
    assert_eq!(events[1].ts_ns, tail.last().unwrap().0);
    // The simple packet block completed the first message: the timestamp of
    // the packet before it stands in, read back through if_tsoffset.
    assert_eq!(events[0].ts_ns, head.last().unwrap().0);
}

#[test]
fn a_corrupt_block_length_names_its_packet() {
    let mut w = PcapngWriter::new(Vec::new(), false).unwrap();
    let lo = w
        .interface(LINKTYPE_ETHERNET as u16, TsResolution::Decimal(6))
        .unwrap();
    let packets = pieces(1, &requests(1), &[30]);
    let mut ends = Vec::new();
    for (ts, p) in &packets {
        w.packet(lo, *ts, &eth(p)).unwrap();
        ends.push(w.get_ref().len());
    }
    let mut file = w.into_inner();
    // The third packet's block claims 1 GiB.
    file[ends[1] + 4..ends[1] + 8].copy_from_slice(&(1u32 << 30).to_le_bytes());
    let (events, error) = decode_with(&file, DecoderOptions::default());
    assert!(
        matches!(&error, Some(CaptureError::Corrupt { packet: 3, .. })),
        "{error:?}"
    );
    // What came before is kept: the first 30 bytes of a frame never completed.
    assert_eq!(brief(&events), ["skipped 30"]);
}

#[test]
fn what_a_connection_holds_stays_bounded() {
    // A hole at the start that is never filled, then 4 MiB of frames behind it.
    let frame = framed("ascii4", "0100", 1);
    let per_segment = 1400;
    let stream: Vec<u8> = frame.iter().copied().cycle().take(4 << 20).collect();
    let spec = spec();
    let options = DecoderOptions {
        max_pending_per_direction: 256 << 10,
        ..DecoderOptions::default()
    };
    let mut decoder = CaptureDecoder::new(&spec, options);
    let mut file = PcapWriter::new(Vec::new(), LINKTYPE_ETHERNET, false, false).unwrap();
    file.packet(BASE_NS, &eth(&ip_tcp(client(), server(), 0, SYN, b"")))
        .unwrap();
    for (i, chunk) in stream.chunks(per_segment).enumerate().skip(1) {
        let seq = 1 + (i * per_segment) as u32;
        file.packet(
            BASE_NS + i as i64,
            &eth(&ip_tcp(client(), server(), seq, ACK, chunk)),
        )
        .unwrap();
    }
    let file = file.into_inner();
    let mut reader = CaptureReader::new(&file[..]).unwrap();
    let mut events = Vec::new();
    let mut messages = 0;
    let mut most = 0;
    while let Some(p) = reader.next_packet().unwrap() {
        decoder.packet(&p, &mut events).unwrap();
        most = most.max(decoder.buffered_bytes());
        messages += events
            .drain(..)
            .filter(|e| matches!(e.kind, EventKind::Message { .. }))
            .count();
    }
    assert!(
        most <= (256 << 10) + per_segment + 8192,
        "held {most} bytes"
    );
    // Everything after the first hole given up is decoded.
    let total = (4 << 20) / frame.len();
    assert!(
        messages + (256 << 10) / frame.len() + 2 >= total,
        "{messages} of {total}"
    );
}

#[test]
fn a_closed_connection_leaves_no_state_behind() {
    let req = framed("ascii4", "0100", 1);
    let packets = [
        seg(0, client(), server(), 100, SYN, b""),
        seg(1, server(), client(), 900, SYN | ACK, b""),
        seg(2, client(), server(), 101, ACK, &req),
        seg(
            3,
            client(),
            server(),
            101 + req.len() as u32,
            FIN | ACK,
            b"",
        ),
        seg(4, server(), client(), 901, FIN | ACK, b""),
        seg(5, client(), server(), 102 + req.len() as u32, ACK, b""),
        seg(6, client(), server(), 102 + req.len() as u32, RST, b""),
    ];
    let file = pcap(LINKTYPE_ETHERNET, eth, &packets);
    let spec = spec();
    let mut reader = CaptureReader::new(&file[..]).unwrap();
    let mut decoder = CaptureDecoder::new(&spec, DecoderOptions::default());
    let mut events = Vec::new();
    while let Some(p) = reader.next_packet().unwrap() {
        decoder.packet(&p, &mut events).unwrap();
    }
    assert_eq!(brief(&events), expect(1));
    assert_eq!(decoder.open_connections(), 0);
    assert_eq!(decoder.buffered_bytes(), 0);
}

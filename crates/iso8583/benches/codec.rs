//! Codec micro-benchmarks: parse, build and parse+build of the two busiest
//! switchboard messages, with the switchboard dialect (ASCII numerics, ASCII LL
//! prefixes, binary bitmaps).
//!
//! - `0100_freeze`: fields 2,3,4,7,11,12,13,25,32,37,49 (primary bitmap only)
//! - `0200_receive`: the same plus F90, which adds a secondary bitmap
//!
//! - `0200_receive_bcd`: the 0200 with the `iso8583-1987-bcd` dialect (packed
//!   numerics and lengths, decoded into the per-message buffer)
//!
//! The switchboard ones also time `validate`, the dialect's rules on the
//! parsed message.
//!
//! Run all with `cargo bench --bench codec`, or one message with
//! `cargo bench --bench codec -- 0200`. Results: benches/RESULTS.md.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use iso8583::codec::{build, parse, Message};
use iso8583::validate::validate;
use iso8583::Spec;

const FREEZE_0100: &[(u16, &str)] = &[
    (2, "6222020200112233446"),
    (3, "030000"),
    (4, "000000010000"),
    (7, "1123112233"),
    (11, "000123"),
    (12, "192233"),
    (13, "1123"),
    (25, "06"),
    (32, "01020000"),
    (37, "000000000123"),
    (49, "156"),
];

const RECEIVE_0200: &[(u16, &str)] = &[
    (2, "6222020200112233446"),
    (3, "400000"),
    (4, "000000010000"),
    (7, "1123112233"),
    (11, "000123"),
    (12, "192233"),
    (13, "1123"),
    (25, "00"),
    (32, "01020000"),
    (37, "000000000123"),
    (49, "156"),
    (90, "010000012311231122330000102000000000000000"),
];

fn message(mti: &[u8; 4], fields: &[(u16, &'static str)]) -> Message {
    let mut msg = Message::new(*mti);
    for &(n, v) in fields {
        msg.set(n, Bytes::from_static(v.as_bytes()));
    }
    msg
}

fn bench_message(
    c: &mut Criterion,
    spec: &Spec,
    name: &str,
    mti: &[u8; 4],
    fields: &[(u16, &'static str)],
    validated: bool,
) {
    let msg = message(mti, fields);
    let mut wire = BytesMut::new();
    build(spec, &msg, &mut wire).expect("build");
    // As the framing layer hands it over: an owned, shared `Bytes`.
    let wire: Bytes = wire.freeze();
    let parsed = parse(spec, wire.clone()).expect("parse");
    assert_eq!(parsed, msg, "{name}: round trip");

    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(1));

    group.bench_function("parse", |b| {
        b.iter(|| parse(spec, black_box(wire.clone())).expect("parse"))
    });

    let mut out = BytesMut::with_capacity(256);
    group.bench_function("build", |b| {
        b.iter(|| {
            out.clear();
            build(spec, black_box(&msg), &mut out).expect("build");
            black_box(out.len())
        })
    });

    // What a host checks of every request it parses (the dialect's rules),
    // for a message the dialect takes as it is.
    if validated {
        assert!(validate(spec, &parsed).is_valid(), "{name}: valid");
        group.bench_function("validate", |b| {
            b.iter(|| validate(spec, black_box(&parsed)).is_valid())
        });
    }

    let mut out = BytesMut::with_capacity(256);
    group.bench_function("parse+build", |b| {
        b.iter(|| {
            let msg = parse(spec, black_box(wire.clone())).expect("parse");
            out.clear();
            build(spec, &msg, &mut out).expect("build");
            black_box(out.len())
        })
    });
    group.finish();
}

fn codec(c: &mut Criterion) {
    let spec = Spec::switchboard();
    bench_message(c, &spec, "0100_freeze", b"0100", FREEZE_0100, true);
    bench_message(c, &spec, "0200_receive", b"0200", RECEIVE_0200, true);
    // The same fields packed: BCD MTI, numerics and lengths (the decode-buffer
    // path). Not validated: that dialect's 0200 asks for fields 22, 41 and 42
    // and has no field 90, so these fields are a codec bench only there.
    let bcd = Spec::load("iso8583-1987-bcd").expect("built-in spec");
    bench_message(c, &bcd, "0200_receive_bcd", b"0200", RECEIVE_0200, false);
}

/// Signing and checking field 128 of the receive with each algorithm: what a
/// link with MACs adds per message.
fn macs(c: &mut Criterion) {
    use iso8583::mac::{self, MacAlgorithm, MacKey};
    let spec = Spec::switchboard();
    let msg = message(b"0200", RECEIVE_0200);
    for (name, algorithm, key) in [
        (
            "x9.19",
            MacAlgorithm::X919,
            "0123456789ABCDEFFEDCBA9876543210",
        ),
        (
            "aes-cmac",
            MacAlgorithm::AesCmac,
            "2B7E151628AED2A6ABF7158809CF4F3C",
        ),
    ] {
        let key = MacKey::from_hex(algorithm, key).unwrap();
        let mut group = c.benchmark_group(format!("mac_0200_{name}"));
        group.bench_function("sign_bytes", |b| {
            b.iter(|| black_box(mac::sign_bytes(&spec, &mut msg.clone(), &key).unwrap()))
        });
        let wire = mac::sign_bytes(&spec, &mut msg.clone(), &key).unwrap();
        let parsed = parse(&spec, wire.clone()).unwrap();
        group.bench_function("verify_received", |b| {
            b.iter(|| black_box(mac::verify_received(&spec, &wire, &parsed, &key).is_ok()))
        });
        let covered = mac::covered(&spec, &wire, &parsed).unwrap().to_vec();
        group.throughput(Throughput::Bytes(covered.len() as u64));
        group.bench_function("mac_only", |b| b.iter(|| black_box(key.mac(&covered))));
        group.finish();
    }
}

criterion_group!(benches, codec, macs);
criterion_main!(benches);

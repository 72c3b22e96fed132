//! A tight parse+build loop over the 0200 receive, for profilers
//! (`perf record`, `valgrind --tool=callgrind`), without criterion's machinery.
//!
//!     cargo build --release -p switchboard-iso8583 --example parse_loop
//!     valgrind --tool=callgrind target/release/examples/parse_loop 100000
//!     perf record -g target/release/examples/parse_loop 10000000
//!
//! Argument: iterations (default 1,000,000). Prints ns per parse+build.

use std::hint::black_box;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use iso8583::codec::{build, parse, Message};
use iso8583::Spec;

fn main() {
    let iterations: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("iterations"))
        .unwrap_or(1_000_000);
    let spec = Spec::switchboard();
    let mut msg = Message::new(*b"0200");
    for (n, v) in [
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
    ] {
        msg.set(n, Bytes::from_static(v.as_bytes()));
    }
    let mut wire = BytesMut::new();
    build(&spec, &msg, &mut wire).expect("build");
    let wire = wire.freeze();
    let _promote = wire.clone();

    let mut out = BytesMut::with_capacity(256);
    let start = Instant::now();
    for _ in 0..iterations {
        let msg = parse(&spec, black_box(wire.clone())).expect("parse");
        out.clear();
        build(&spec, &msg, &mut out).expect("build");
        black_box(out.len());
    }
    let elapsed = start.elapsed();
    println!(
        "{iterations} parse+build of a 0200 receive: {:.1} ns each",
        elapsed.as_nanos() as f64 / iterations as f64
    );
}

//! Allocation budget of the codec on the hot path, measured with a counting
//! global allocator.
//!
//! - parsing a 0200 receive with the switchboard spec: at most two heap
//!   allocations (the message's boxed parts and its field vector), i.e. no
//!   allocation per field;
//! - building it into a `BytesMut` with enough capacity: none at all.
//!
//! Only allocations made by the measuring thread while its flag is set are
//! counted, so the test harness's other threads cannot disturb the numbers.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::{Bytes, BytesMut};
use iso8583::codec::{build, parse, Message};
use iso8583::Spec;

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn note_allocation() {
    // `try_with`: the allocator may run while thread-locals are torn down.
    let _ = COUNTING.try_with(|counting| {
        if counting.get() {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        }
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and returns its result with the number of heap allocations
/// (alloc, alloc_zeroed and realloc) this thread made meanwhile.
fn count_allocations<T>(f: impl FnOnce() -> T) -> (T, usize) {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    let result = f();
    COUNTING.with(|c| c.set(false));
    (result, ALLOCATIONS.with(Cell::get))
}

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

fn receive_0200() -> Message {
    let mut msg = Message::new(*b"0200");
    for &(n, v) in RECEIVE_0200 {
        msg.set(n, Bytes::from_static(v.as_bytes()));
    }
    msg
}

/// The wire bytes as the framing layer hands them over: a frame split off a
/// receive buffer and frozen (shared storage, so cloning it is a refcount).
fn framed_wire(spec: &Spec) -> Bytes {
    let mut buf = BytesMut::with_capacity(4096);
    build(spec, &receive_0200(), &mut buf).expect("build");
    let len = buf.len();
    buf.extend_from_slice(b"next frame");
    buf.split_to(len).freeze()
}

#[test]
fn the_counter_counts() {
    let (v, n) = count_allocations(|| vec![1u8; 10]);
    assert_eq!(v.len(), 10);
    assert_eq!(n, 1);
}

#[test]
fn parse_0200_allocates_at_most_the_message_and_its_field_vector() {
    let spec = Spec::switchboard();
    let wire = framed_wire(&spec);
    let expected = receive_0200();

    let (msg, allocations) = count_allocations(|| parse(&spec, wire.clone()));
    let msg = msg.expect("parse");
    assert_eq!(msg, expected);
    assert!(
        allocations <= 2,
        "parsing a 0200 receive made {allocations} heap allocations, expected at most 2"
    );

    // The same from static bytes.
    let static_wire: &'static [u8] = Box::leak(wire.to_vec().into_boxed_slice());
    let (msg, allocations) = count_allocations(|| parse(&spec, Bytes::from_static(static_wire)));
    assert_eq!(msg.expect("parse"), expected);
    assert!(
        allocations <= 2,
        "parsing a static 0200 receive made {allocations} heap allocations, expected at most 2"
    );
}

#[test]
fn build_0200_into_a_large_enough_buffer_allocates_nothing() {
    let spec = Spec::switchboard();
    let msg = receive_0200();
    let mut out = BytesMut::with_capacity(1024);

    let (result, allocations) = count_allocations(|| build(&spec, &msg, &mut out));
    result.expect("build");
    assert_eq!(out.len(), framed_wire(&spec).len());
    assert_eq!(
        allocations, 0,
        "building a 0200 receive into a buffer with capacity made {allocations} heap allocations"
    );

    // A reused, cleared buffer (as the switch's writer does) stays allocation-free.
    let (result, allocations) = count_allocations(|| {
        out.clear();
        build(&spec, &msg, &mut out)
    });
    result.expect("build");
    assert_eq!(
        allocations, 0,
        "rebuilding into a cleared buffer made {allocations} allocations"
    );
}

//! Packet captures of ISO 8583 links, from the file to the messages.
//!
//! The layers, each knowing only the one below it:
//!
//! - [`file`](mod@file) reads pcap (both byte orders, µs and ns) and pcapng (sections,
//!   several interfaces, `if_tsresol`, `if_tsoffset`) one packet at a time,
//!   never holding more than one packet in memory; [`write`](mod@write) writes both.
//! - [`packet`] reads the link layer (Ethernet with 802.1Q tags, Linux cooked
//!   v1 and v2, BSD loopback, raw IP), IPv4 and IPv6, and TCP.
//! - [`reassembly`] puts one direction of a TCP connection back in order:
//!   out-of-order segments, retransmissions and overlaps (first data wins),
//!   sequence wrap, with a bound on the bytes held back.
//! - [`frames`] cuts a direction's bytes into frames with the project's
//!   framings, detects the framing when it is not given, and resynchronises
//!   after a gap or when the capture starts in the middle of a connection.
//! - [`decoder`] ties them together per connection and yields [`decoder::Event`]s:
//!   parsed messages, frames that do not parse, bytes skipped.
//! - [`summary`] matches responses to requests and counts what was seen.
//!
//! Invariants: reading never panics whatever the file holds; memory is bounded
//! by one packet plus, per open connection, the bytes held back for
//! reassembly and one frame; TCP checksums are not checked (loopback captures
//! carry wrong ones because of checksum offload).

pub mod decoder;
pub mod file;
pub mod frames;
pub mod mask;
pub mod packet;
pub mod reassembly;
pub mod record;
pub mod replay;
pub mod summary;
pub mod write;

pub use decoder::{CaptureDecoder, DecoderOptions, Endpoint, Event, EventKind};
pub use file::{CaptureError, CaptureReader, Packet};

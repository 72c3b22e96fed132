//! `iso8583`: a spec-driven ISO 8583 codec.
//!
//! Layers, each knowing only the one below it: [`spec`] (dialects as TOML
//! data, compiled into a [`Spec`]) → [`codec`] (bytes ⇄ [`Message`]) →
//! [`validate`] (a dialect's rules on a parsed message) and [`fields`] (typed
//! values: amounts, currency, field 7, Luhn) → [`framing`] (length prefixes
//! and headers on a stream). [`mti`] says which MTIs are responses and
//! repeats; [`response`] names the field 39 response codes; [`mask`] keeps
//! card numbers out of human-readable output; [`mac`] signs and verifies
//! field 128 (ANSI X9.19 retail MAC, AES-CMAC).
//!
//! No I/O, no switch: this crate is usable on its own by a capture tool, a
//! fuzzer or another service.
//!
//! ```
//! use bytes::{Bytes, BytesMut};
//! use iso8583::{codec, fields, validate, Message, Spec};
//!
//! let spec = Spec::switchboard();
//! let mut msg = Message::new(*b"0800");
//! msg.set(7, "1201120000").set(11, "000001").set(33, "00010000").set(70, "301");
//! let wire = codec::build_bytes(&spec, &msg).unwrap();
//! let back = codec::parse(&spec, Bytes::from(wire.to_vec())).unwrap();
//! assert_eq!(back.get(70).map(|v| &v[..]), Some(&b"301"[..]));
//! assert!(validate::validate(&spec, &back).is_valid());
//! assert!(fields::luhn_valid(b"4111111111111111"));
//! # let mut out = BytesMut::new(); codec::build(&spec, &back, &mut out).unwrap();
//! ```

pub mod codec;
pub mod composite;
pub mod diff;
pub mod fields;
pub mod framing;
pub mod mac;
pub mod mask;
pub mod mti;
pub mod response;
pub mod spec;
pub mod validate;

pub use codec::{build, build_bytes, parse, DecodeError, EncodeError, Message, Mti};
pub use response::ResponseCode;
pub use spec::Spec;

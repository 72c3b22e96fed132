//! The ISO 8583 codec: spec-driven parse (nom) and build (bytes).
//!
//! Knows bytes and specs only: no I/O, no framing, no switch logic.

mod build;
pub mod charset;
mod error;
mod message;
mod parse;

pub(crate) use build::build_field;
pub use build::{build, build_bytes};
pub(crate) use build::{build_bitmap_word, build_element};
pub use error::{DecodeError, DecodeErrorKind, EncodeError, Location};
pub use message::{Message, Mti, SpanError};
pub use parse::{parse, parse_fields, Fields};
pub(crate) use parse::{parse_bitmap_word, parse_element};

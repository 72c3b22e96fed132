//! switchboard: an ISO 8583 switch for red packets.
//!
//! Layers, each knowing only the one below it: [`spec`] (dialects as data) →
//! [`codec`] (bytes ⇄ [`codec::Message`]) → [`framing`] (length prefixes and
//! headers on a stream) → the tools and the switch. See ARCHITECTURE.md.

pub mod clearing;
pub mod cli;
pub mod clock;
pub mod codec;
pub mod config;
pub mod fields;
pub mod framing;
pub mod link;
pub mod mask;
pub mod server;
pub mod service;
pub mod sim;
pub mod spec;
pub mod stan;
pub mod store;
pub mod switch;
pub mod validate;

pub use codec::{build, build_bytes, parse, DecodeError, EncodeError, Message};
pub use spec::Spec;

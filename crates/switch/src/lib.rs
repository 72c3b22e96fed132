//! switchboard: the red-packet switch over ISO 8583.
//!
//! Built on the codec crate (`iso8583`). Layers, each knowing only those
//! below it (ARCHITECTURE.md draws them): [`dialect`] (the red-packet typed
//! views) and [`clock`] → [`store`] (durable decisions) → [`link`] (bank
//! hosts) → [`switch`] (the flows, recovery, store-and-forward) → [`server`]
//! (wallet listeners) → [`service`] and [`config`] (the composition root).
//! [`clearing`] reads what the store recorded at the end of the day; [`tls`]
//! is what wallet listeners and bank links use when they are configured for TLS.

pub mod admin;
pub mod alerts;
pub mod clearing;
pub mod clock;
pub mod config;
pub mod dialect;
pub mod huge_pages;
pub mod link;
pub mod logging;
pub mod mac;
pub mod metrics;
pub mod recent_errors;
pub mod risk;
pub mod routing;
pub mod secret_file;
pub mod server;
pub mod service;
pub mod socket;
pub mod stan;
pub mod store;
pub mod switch;
pub mod tls;
pub mod vault;

//! Simulators of the hosts around the switch, built on the same codec and
//! framing: a bank host ([`bank`], served by [`bank_server`]). They live in the
//! library so that `switchboard demo` and the tests can embed them; the
//! `simulators` crate holds their binaries.

pub mod bank;
pub mod bank_server;
pub mod faults;

pub use bank::{Bank, Hold, HoldState, Ledger, Movement, MovementKind};
pub use bank_server::{serve_admin, serve_bank, spawn_bank, BankHandle};
pub mod load;
pub mod scenarios;
pub mod wallet;
pub mod wallet_records;

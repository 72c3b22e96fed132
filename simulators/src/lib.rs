//! Simulators of the hosts around the switch, built on the same codec and
//! framing: a bank host ([`bank`]: its books, idempotency and reversals;
//! served over TCP with an admin port by [`bank_server`], with seeded
//! [`faults`]) and its own clearing export ([`bank_clearing`]); a wallet
//! ([`wallet`]: a client of the switch; [`resending`]: one that reconnects
//! and resends what a lost connection left unanswered) with its own records
//! ([`wallet_records`]) and clearing file ([`wallet_clearing`]); the
//! red-packet [`scenarios`] with their invariant checks, and open-loop
//! [`load`] with its picture ([`load_chart`]). `switchboard demo`, the `banksim` and `walletsim` binaries and
//! the tests embed them; the switch knows nothing of them.

pub mod bank;
pub mod bank_clearing;
pub mod bank_server;
pub mod faults;
pub mod load;
pub mod load_chart;
pub mod random;
pub mod resending;
pub mod scenarios;
pub mod wallet;
pub mod wallet_clearing;
pub mod wallet_records;

pub use bank::{Bank, Hold, HoldState, Ledger, Movement, MovementKind};
pub use bank_server::{
    serve_admin, serve_bank, serve_bank_with, spawn_bank, spawn_bank_recorded, spawn_bank_with,
    BankHandle, LinkOptions,
};

//! End of day: settlement dates ([`settlement`]), the clearing file format
//! ([`file`](mod@file)), clearing a day from the switch's store ([`clear`]) into small
//! records that write the files as they go ([`day`]),
//! reconciling a participant's records with the switch's ([`reconcile`]).
//! specs/clearing.md describes the files; the simulators write their own
//! (a bank's from its journal, a wallet's from its records) in this format.

pub mod clear;
pub mod day;
pub mod file;
pub mod reconcile;
pub mod settlement;

pub use file::{Header, Kind, Line, ParticipantFile, Role, Status};
pub use settlement::Settlement;

use rust_decimal::Decimal;

use crate::dialect::InstitutionId;

/// An institution id as the files write it: 11 digits, zero-filled; `None`
/// when it is not 1 to 11 digits.
pub fn institution11(id: &str) -> Option<String> {
    InstitutionId::from_field(32, id.as_bytes())
        .ok()
        .map(|i| i.to_string())
}

/// An amount in minor units as a decimal with the currency's exponent.
pub fn decimal(amount_minor: u64, exponent: u32) -> Decimal {
    Decimal::from_i128_with_scale(i128::from(amount_minor), exponent)
}

/// A settlement date written `YYYY-MM-DD`.
pub fn parse_date(s: &str) -> Option<chrono::NaiveDate> {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

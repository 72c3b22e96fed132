//! Message-level conformance: suites of scripted cases that certify an ISO
//! 8583 host (a bank host, a switch) speaks the dialect as its peers expect,
//! and the runner that plays them over TCP.
//!
//! - [`suite`] reads a suite (TOML; the shipped ones are built in) and checks
//!   what TOML cannot: references to earlier steps, field numbers, patterns.
//! - [`template`] renders a step's field values: variables, generated values
//!   (now, STAN, RRN, Luhn cards), values of earlier steps, field 90.
//! - [`expect`] judges an answer against a step's expectations, in words,
//!   masked.
//! - [`runner`] plays cases on connections of their own, with timeouts, and
//!   reads the participant's books through its state hook where one exists.
//! - [`junit`] writes the results as JUnit XML.
//!
//! The format is documented in `specs/conformance/README.md`.

pub mod expect;
pub mod junit;
pub mod runner;
pub mod suite;
pub mod template;

pub use runner::{CaseResult, RunOptions, Runner, Status};
pub use suite::{Case, CaseKind, Suite, SuiteError};

//! Command-line interface. Only this module knows about clap: arguments are
//! parsed into plain structs here, then turned into library calls.

mod audit;
mod capture;
mod clear;
mod conform;
mod decode;
mod demo;
mod encode;
mod journal;
mod keys;
mod migrate;
mod open_files;
mod progress;
mod reconcile;
mod recover;
mod rekey;
mod render;
mod replay;
mod risk;
mod saf;
mod serve;
mod subfields;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// switchboard: an ISO 8583 switch for red packets, and the tools around it.
#[derive(Parser, Debug)]
#[command(name = "switchboard", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Decode ISO 8583 messages given as hex (argument, or one per line on stdin).
    Decode(decode::DecodeArgs),
    /// Packet captures (pcap, pcapng) of ISO 8583 links: `capture decode FILE`,
    /// `capture replay FILE --target HOST:PORT`.
    Capture(capture::CaptureArgs),
    /// Encode messages given as JSON (one object per line on stdin) into hex.
    Encode(encode::EncodeArgs),
    /// Run a conformance suite (bank-host, wallet, or a suite file) against
    /// a host: a line per case, JSON and JUnit reports, exit 1 on a failure.
    Conform(Box<conform::ConformArgs>),
    /// Run the switch: bank links, wallet listeners, the embedded store.
    Serve(serve::ServeArgs),
    /// Write a new key file for sealing card data at rest (`[security] data_key_file`),
    /// or add a new current key to one (--add).
    Keygen(keys::KeygenArgs),
    /// Seal every stored card value anew under the key file's current key.
    Rekey(rekey::RekeyArgs),
    /// The messages the switch journaled, decoded and masked.
    Journal(journal::JournalArgs),
    /// Run the switch with two simulated banks in this process, play every
    /// red-packet scenario against it and check the money invariants.
    Demo(demo::DemoArgs),
    /// Inspect the store-and-forward queue (reversals and unfreeze notices).
    Saf(saf::SafArgs),
    /// The operator actions asked of the admin listener, newest first.
    Audit(audit::AuditArgs),
    /// Settle what crashed instances left in flight, then exit.
    Recover(recover::RecoverArgs),
    /// End-of-day clearing: one file per bank and per wallet, and a summary.
    Clear(clear::ClearArgs),
    /// Compare a participant's own records with the switch's clearing file.
    Reconcile(reconcile::ReconcileArgs),
    /// Bring a store's schema (PostgreSQL URL or embedded file) to this build's version.
    Migrate(migrate::MigrateArgs),
    /// The risk rules' hits: `risk report --date D`.
    Risk(risk::RiskArgs),
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_) | Command::Demo(_)) {
        end_quietly_on_closed_pipe();
    }
    // `serve` installs its logger once its configuration (`[log] format`)
    // is read; the other commands log warnings as text.
    if !matches!(cli.command, Command::Serve(_)) {
        switchboard::logging::init(switchboard::logging::LogFormat::Text, "warn");
    }
    let result = match cli.command {
        Command::Decode(args) => decode::run(args),
        Command::Encode(args) => encode::run(args),
        Command::Conform(args) => conform::run(*args),
        Command::Capture(args) => capture::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Keygen(args) => keys::keygen(args),
        Command::Rekey(args) => rekey::run(args),
        Command::Journal(args) => journal::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Saf(args) => saf::run(args),
        Command::Audit(args) => audit::run(args),
        Command::Recover(args) => recover::run(args),
        Command::Clear(args) => clear::run(args),
        Command::Reconcile(args) => reconcile::run(args),
        Command::Migrate(args) => migrate::run(args),
        Command::Risk(args) => risk::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("switchboard: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Commands that print for a pipeline (`decode | head`, `saf list | head`)
/// end quietly when the reader goes away, as Unix tools do, rather than
/// panicking on the failed print: the default action of SIGPIPE, which Rust
/// programs otherwise ignore. Not for `serve` and `demo`, whose sockets must
/// see a closed peer as an error to handle, never as a signal.
fn end_quietly_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: called once at start, before any thread is spawned; SIG_DFL is
    // a valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

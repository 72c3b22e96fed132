//! Command-line interface. Only this module knows about clap: arguments are
//! parsed into plain structs here, then turned into library calls.

mod decode;
mod encode;
mod render;

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
    /// Encode messages given as JSON (one object per line on stdin) into hex.
    Encode(encode::EncodeArgs),
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Decode(args) => decode::run(args),
        Command::Encode(args) => encode::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("switchboard: {e:#}");
            ExitCode::from(2)
        }
    }
}

//! `switchboard decode`: hex in, fields out.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use anyhow::Context;
use bytes::Bytes;
use clap::Args;

use iso8583::codec::charset::to_hex;
use iso8583::framing::{split_frame, Frame, FramingConfig};
use iso8583::spec::Spec;

use super::render;

#[derive(Args, Debug)]
pub struct DecodeArgs {
    /// One message in hex; without it, one hex message per line is read from stdin.
    hex: Option<String>,
    /// Strip this framing first (ascii4, binary2, bcd2, binary4, optionally +cups or +header:N).
    #[arg(long)]
    framing: Option<FramingConfig>,
    /// A built-in spec name or the path of a spec file.
    #[arg(long, default_value = "switchboard")]
    spec: String,
    /// One JSON object per message: {"mti":"0200","fields":{"2":"...",...}}.
    #[arg(long)]
    json: bool,
    /// Show card numbers and other sensitive fields in full.
    #[arg(long)]
    unmask: bool,
}

/// Reads hex allowing spaces, tabs and a leading `0x`.
pub fn parse_hex(line: &str) -> Result<Vec<u8>, String> {
    let compact: String = line.split_whitespace().collect();
    let compact = compact
        .strip_prefix("0x")
        .or_else(|| compact.strip_prefix("0X"))
        .unwrap_or(&compact);
    hex::decode(compact).map_err(|e| format!("not hex: {e}"))
}

fn decode_one(args: &DecodeArgs, spec: &Spec, line: &str) -> Result<String, String> {
    let raw = parse_hex(line)?;
    let (header, body) = match &args.framing {
        Some(config) => match split_frame(config, &raw).map_err(|e| e.to_string())? {
            Frame::KeepAlive => {
                return Ok(if args.json {
                    "{\"keepalive\":true}\n".into()
                } else {
                    "keep-alive (zero-length frame)\n".into()
                })
            }
            Frame::Message { header, body } => (header, body),
        },
        None => (Bytes::new(), Bytes::from(raw)),
    };
    let msg = iso8583::codec::parse(spec, body).map_err(|e| e.to_string())?;
    if args.json {
        let json = render::json(spec, &msg, args.unmask).map_err(|e| e.to_string())?;
        Ok(format!("{json}\n"))
    } else {
        let mut out = String::new();
        if !header.is_empty() {
            out.push_str(&format!("header  {}\n", to_hex(&header)));
        }
        out.push_str(&render::human(spec, &msg, args.unmask));
        Ok(out)
    }
}

pub fn run(args: DecodeArgs) -> anyhow::Result<ExitCode> {
    let spec = Spec::load(&args.spec)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if let Some(hex) = &args.hex {
        return match decode_one(&args, &spec, hex) {
            Ok(text) => {
                out.write_all(text.as_bytes())?;
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("error: {e}");
                Ok(ExitCode::FAILURE)
            }
        };
    }
    let mut failed = false;
    let stdin = std::io::stdin();
    for (index, line) in stdin.lock().lines().enumerate() {
        let line = line.context("reading stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        match decode_one(&args, &spec, &line) {
            Ok(text) => {
                if !args.json && index > 0 {
                    writeln!(out)?;
                }
                out.write_all(text.as_bytes())?;
            }
            Err(e) => {
                failed = true;
                eprintln!("line {}: {e}", index + 1);
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

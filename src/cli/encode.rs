//! `switchboard encode`: JSON in (the shape `decode --json` prints), hex or bytes out.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use iso8583::codec::charset::to_hex;
use iso8583::codec::{build_bytes, Message};
use iso8583::framing::{frame_bytes, CupsHeader, FramingConfig, HeaderKind};
use iso8583::spec::{ContentClass, Spec};
use iso8583::validate::{validate, Violation};

use super::decode::parse_hex;
use super::subfields;

#[derive(Args, Debug)]
pub struct EncodeArgs {
    /// Write raw bytes instead of one hex line per message.
    #[arg(long)]
    raw: bool,
    /// Add this framing (ascii4, binary2, bcd2, binary4, optionally +cups or +header:N).
    #[arg(long)]
    framing: Option<FramingConfig>,
    /// Header bytes in hex for framings with a header (default: zeros, or a blank CUPS header).
    #[arg(long)]
    header: Option<String>,
    /// A built-in spec name or the path of a spec file.
    #[arg(long, default_value = "switchboard")]
    spec: String,
    /// Encode values even when they break their field's content class, e.g. to
    /// craft malformed messages for conformance tests.
    #[arg(long)]
    no_validate: bool,
}

/// Reads `{"mti":"0200","fields":{"2":"...",...}}` into a message.
pub fn message_from_json(spec: &Spec, line: &str) -> Result<Message, String> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let mti = value
        .get("mti")
        .and_then(|m| m.as_str())
        .ok_or("missing \"mti\" string")?;
    let mti: [u8; 4] = mti
        .as_bytes()
        .try_into()
        .ok()
        .filter(|m: &[u8; 4]| m.iter().all(u8::is_ascii_digit))
        .ok_or_else(|| format!("mti {mti:?} is not 4 digits"))?;
    let fields = value
        .get("fields")
        .and_then(|f| f.as_object())
        .ok_or("missing \"fields\" object")?;
    let mut msg = Message::new(mti);
    for (key, value) in fields {
        let number: u16 = key
            .parse()
            .map_err(|_| format!("field key {key:?} is not a field number"))?;
        let field = spec
            .field(number)
            .ok_or_else(|| format!("field {number}: not defined by spec {}", spec.name))?;
        if let Some(object) = value.as_object() {
            let layout = spec.subfields(number).ok_or_else(|| {
                format!(
                    "field {number}: has no subfields in spec {}; give its value as a string",
                    spec.name
                )
            })?;
            msg.set(number, subfields::from_json(layout, number, object)?);
            continue;
        }
        let text = value.as_str().ok_or_else(|| {
            format!("field {number}: value must be a string (or an object of subfields)")
        })?;
        if field.class == ContentClass::B {
            let bytes = parse_hex(text).map_err(|e| format!("field {number}: {e}"))?;
            msg.set(number, bytes);
        } else {
            msg.set(number, text.to_owned());
        }
    }
    Ok(msg)
}

/// The header written when none is given: zeros, or a CUPS header with blank ids.
fn default_header(config: &FramingConfig) -> Vec<u8> {
    match config.header {
        HeaderKind::None => Vec::new(),
        HeaderKind::Fixed(n) => vec![0; n],
        HeaderKind::Cups => CupsHeader::new("", "")
            .map(|h| h.build().to_vec())
            .unwrap_or_default(),
    }
}

fn encode_one(args: &EncodeArgs, spec: &Spec, line: &str) -> Result<Vec<u8>, String> {
    let msg = message_from_json(spec, line)?;
    if !args.no_validate {
        let validation = validate(spec, &msg);
        let content: Vec<String> = validation
            .violations
            .iter()
            .filter(|v| {
                matches!(
                    v,
                    Violation::BadContent { .. } | Violation::BadLength { .. }
                )
            })
            .map(ToString::to_string)
            .collect();
        if !content.is_empty() {
            return Err(content.join("; "));
        }
    }
    let body = build_bytes(spec, &msg).map_err(|e| e.to_string())?;
    match &args.framing {
        None => Ok(body.to_vec()),
        Some(config) => {
            let header = match &args.header {
                Some(h) => parse_hex(h).map_err(|e| format!("--header: {e}"))?,
                None => default_header(config),
            };
            frame_bytes(config, &header, &body)
                .map(|b| b.to_vec())
                .map_err(|e| e.to_string())
        }
    }
}

pub fn run(args: EncodeArgs) -> anyhow::Result<ExitCode> {
    let spec = Spec::load(&args.spec)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut failed = false;
    let stdin = std::io::stdin();
    for (index, line) in stdin.lock().lines().enumerate() {
        let line = line.context("reading stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        match encode_one(&args, &spec, &line) {
            Ok(bytes) if args.raw => out.write_all(&bytes)?,
            Ok(bytes) => writeln!(out, "{}", to_hex(&bytes))?,
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

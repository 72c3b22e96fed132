//! `switchboard encode`: JSON in (the shape `decode --json` prints), hex or bytes out.
//!
//! A streaming pipeline like `decode`: lines read in blocks, the message's
//! bytes, its frame and its hex built in buffers reused from line to line,
//! output through one buffer over the locked stdout.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::process::ExitCode;

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use clap::Args;
use tokio_util::codec::Encoder as _;

use iso8583::codec::charset::put_hex;
use iso8583::codec::{build, Message};
use iso8583::framing::{CupsHeader, Frame, FrameCodec, FramingConfig, HeaderKind};
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
    /// Stop at the first line that does not encode; by default it is reported
    /// and the rest are encoded.
    #[arg(long)]
    fail_fast: bool,
}

/// Reads `{"mti":"0200","fields":{"2":"...",...}}` into a message, with
/// `"header":"HEX"` for a spec whose messages start with a header.
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
    if let Some(header) = value.get("header") {
        let hex = header.as_str().ok_or("\"header\" must be a hex string")?;
        msg.set_header(parse_hex(hex).map_err(|e| format!("header: {e}"))?.into());
    }
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

/// Checks what `--no-validate` lets through: every value fits its field's
/// content class and length.
fn check_content(spec: &Spec, msg: &Message) -> Result<(), String> {
    let validation = validate(spec, msg);
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
    if content.is_empty() {
        Ok(())
    } else {
        Err(content.join("; "))
    }
}

/// The buffers every line reuses: the message's bytes, and its frame.
struct Encoder {
    framing: Option<(FrameCodec, Bytes)>,
    body: BytesMut,
    framed: BytesMut,
}

impl Encoder {
    fn new(args: &EncodeArgs) -> Result<Self, String> {
        let framing = match &args.framing {
            None => None,
            Some(config) => {
                let header = match &args.header {
                    Some(h) => parse_hex(h).map_err(|e| format!("--header: {e}"))?,
                    None => default_header(config),
                };
                Some((FrameCodec::new(config.clone()), Bytes::from(header)))
            }
        };
        Ok(Encoder {
            framing,
            body: BytesMut::with_capacity(4096),
            framed: BytesMut::with_capacity(4096),
        })
    }

    /// One JSON line's message, as it goes out (framed when asked).
    fn encode(&mut self, args: &EncodeArgs, spec: &Spec, line: &[u8]) -> Result<&[u8], String> {
        let line = std::str::from_utf8(line).map_err(|e| format!("not UTF-8: {e}"))?;
        let msg = message_from_json(spec, line)?;
        if !args.no_validate {
            check_content(spec, &msg)?;
        }
        self.body.clear();
        build(spec, &msg, &mut self.body).map_err(|e| e.to_string())?;
        let Some((codec, header)) = &mut self.framing else {
            return Ok(&self.body);
        };
        self.framed.clear();
        let frame = Frame::Message {
            header: header.clone(),
            body: self.body.split().freeze(),
        };
        codec
            .encode(frame, &mut self.framed)
            .map_err(|e| e.to_string())?;
        Ok(&self.framed)
    }
}

pub fn run(args: EncodeArgs) -> anyhow::Result<ExitCode> {
    let spec = Spec::load(&args.spec)?;
    let mut encoder = Encoder::new(&args).map_err(anyhow::Error::msg)?;
    let mut out = BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    let mut input = BufReader::with_capacity(64 * 1024, std::io::stdin().lock());
    let (mut line, mut hex) = (Vec::with_capacity(1024), Vec::with_capacity(1024));
    let mut failed = false;
    let mut number = 0u64;
    loop {
        line.clear();
        if input
            .read_until(b'\n', &mut line)
            .context("reading stdin")?
            == 0
        {
            break;
        }
        number += 1;
        if line.trim_ascii().is_empty() {
            continue;
        }
        match encoder.encode(&args, &spec, &line) {
            Ok(bytes) if args.raw => out.write_all(bytes)?,
            Ok(bytes) => {
                hex.clear();
                put_hex(&mut hex, bytes);
                hex.push(b'\n');
                out.write_all(&hex)?;
            }
            Err(e) => {
                failed = true;
                // What was encoded before the bad line is out before the report.
                out.flush()?;
                eprintln!("line {number}: {e}");
                if args.fail_fast {
                    break;
                }
            }
        }
    }
    out.flush()?;
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

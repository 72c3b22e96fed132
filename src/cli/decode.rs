//! `switchboard decode`: hex lines (or a file of length-prefixed frames) in,
//! fields out.
//!
//! A streaming pipeline: input is read in large blocks, every buffer (the
//! line, its bytes, the output) is reused from one message to the next, and
//! output goes through one buffer over the locked stdout, flushed at the end
//! and before an error is reported on stderr (so the two stay in order on a
//! terminal). What a message costs is its parse (one allocation, the field
//! list) and, for `--json`, writing its fields.

use std::fmt::Display;
use std::io::{self, BufRead, BufReader, BufWriter, Read, StdoutLock, Write};
use std::process::ExitCode;

use bytes::{Bytes, BytesMut};
use clap::Args;
use tokio_util::codec::Decoder;

use iso8583::codec::charset::to_hex;
use iso8583::codec::Message;
use iso8583::framing::{Frame, FrameCodec, FramingConfig, FramingError};
use iso8583::spec::Spec;

use super::render;

#[derive(Args, Debug)]
pub struct DecodeArgs {
    /// One message in hex; without it, one hex message per line is read from stdin.
    hex: Option<String>,
    /// Strip this framing first (ascii4, binary2, bcd2, binary4, optionally +cups or +header:N).
    #[arg(long)]
    framing: Option<FramingConfig>,
    /// Read stdin as bytes, not hex: frames back to back as `--framing` delimits
    /// them, as a host log or `encode --raw --framing` writes them.
    #[arg(long, requires = "framing", conflicts_with = "hex")]
    raw: bool,
    /// A built-in spec name or the path of a spec file.
    #[arg(long, default_value = "switchboard")]
    spec: String,
    /// One JSON object per message: {"mti":"0200","fields":{"2":"...",...}}.
    #[arg(long)]
    json: bool,
    /// Show card numbers and other sensitive fields in full.
    #[arg(long)]
    unmask: bool,
    /// Stop at the first message that does not decode; by default it is
    /// reported and the rest are decoded.
    #[arg(long)]
    fail_fast: bool,
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

/// The value of each hex digit; `NOT_HEX` for every other byte.
const HEX_VALUES: [u16; 256] = {
    let mut table = [NOT_HEX; 256];
    let mut c = 0;
    while c < 256 {
        table[c] = match c as u8 {
            b'0'..=b'9' => c as u16 - b'0' as u16,
            b'a'..=b'f' => c as u16 - b'a' as u16 + 10,
            b'A'..=b'F' => c as u16 - b'A' as u16 + 10,
            _ => NOT_HEX,
        };
        c += 1;
    }
    table
};
const NOT_HEX: u16 = 0x100;

/// Appends the bytes a hex line stands for to `out`, as [`parse_hex`] reads
/// it. The usual line (hex digits only, maybe a `0x` and surrounding blanks)
/// is read in place; any other goes through [`parse_hex`], which also words
/// the error.
fn hex_into(line: &[u8], out: &mut BytesMut) -> Result<(), String> {
    let digits = line.trim_ascii();
    let digits = digits
        .strip_prefix(b"0x")
        .or_else(|| digits.strip_prefix(b"0X"))
        .unwrap_or(digits);
    if digits.len().is_multiple_of(2) {
        let start = out.len();
        out.resize(start + digits.len() / 2, 0);
        // Every pair decoded, and whether any digit was not one checked once
        // at the end: no branch per byte.
        let mut seen = 0u16;
        for (byte, pair) in out[start..].iter_mut().zip(digits.chunks_exact(2)) {
            let (hi, lo) = (HEX_VALUES[pair[0] as usize], HEX_VALUES[pair[1] as usize]);
            seen |= hi | lo;
            *byte = ((hi << 4) | lo) as u8;
        }
        if seen & NOT_HEX == 0 {
            return Ok(());
        }
        out.truncate(start);
    }
    let bytes = parse_hex(&String::from_utf8_lossy(line))?;
    out.extend_from_slice(&bytes);
    Ok(())
}

/// What one input unit (a line, a frame) holds.
enum Decoded {
    KeepAlive,
    Message { header: Bytes, message: Message },
}

/// Parses one message, after splitting its framing off when given.
fn decode_frame(spec: &Spec, frame: Frame) -> Result<Decoded, String> {
    match frame {
        Frame::KeepAlive => Ok(Decoded::KeepAlive),
        Frame::Message { header, body } => {
            let message = iso8583::codec::parse(spec, body).map_err(|e| e.to_string())?;
            check_subfields(spec, &message)?;
            Ok(Decoded::Message { header, message })
        }
    }
}

/// Fails a message one of whose fields does not decode into the subfields
/// the spec gives it (the output would show it flat).
fn check_subfields(spec: &Spec, message: &Message) -> Result<(), String> {
    for (number, value) in message.fields() {
        if let Some(layout) = spec.subfields(number) {
            layout
                .decode(number, &Bytes::copy_from_slice(value))
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// One hex line's bytes (in `raw`, which it leaves empty) as a message: a
/// whole frame when `framing` is given, exactly one.
fn decode_bytes(
    spec: &Spec,
    framing: Option<&mut FrameCodec>,
    raw: &mut BytesMut,
) -> Result<Decoded, String> {
    let Some(codec) = framing else {
        return decode_frame(spec, Frame::message(raw.split().freeze()));
    };
    let frame = match codec.decode(raw) {
        Ok(Some(_)) if !raw.is_empty() => Err(FramingError::TrailingBytes { count: raw.len() }),
        Ok(Some(frame)) => Ok(frame),
        Ok(None) => Err(match codec.decode_eof(raw) {
            Err(e) => e,
            Ok(_) => FramingError::TruncatedPrefix {
                received: 0,
                width: codec.config().prefix.width(),
            },
        }),
        Err(e) => Err(e),
    };
    raw.clear();
    decode_frame(spec, frame.map_err(|e| e.to_string())?)
}

/// Where in the input an error is, as the report on stderr starts.
enum Place {
    /// The line number, from 1.
    Line(u64),
    /// The frame number, from 1, and the offset of its length prefix in the input.
    Frame(u64, u64),
}

impl Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Line(number) => write!(f, "line {number}: "),
            Place::Frame(number, offset) => write!(f, "frame {number} at byte {offset}: "),
        }
    }
}

/// Where decoded messages go: the locked stdout behind one buffer.
struct Output<'a> {
    spec: &'a Spec,
    json: bool,
    unmask: bool,
    out: BufWriter<StdoutLock<'static>>,
    fail_fast: bool,
    printed: u64,
    failed: bool,
}

impl<'a> Output<'a> {
    fn new(spec: &'a Spec, args: &DecodeArgs) -> Self {
        Output {
            spec,
            json: args.json,
            unmask: args.unmask,
            out: BufWriter::with_capacity(64 * 1024, io::stdout().lock()),
            fail_fast: args.fail_fast,
            printed: 0,
            failed: false,
        }
    }

    /// Prints what one unit of input held, or reports on stderr why it
    /// does not decode, after `place` ("line 3: "). Says whether to go on.
    fn unit(&mut self, place: impl Display, unit: Result<Decoded, String>) -> io::Result<bool> {
        match unit {
            Ok(decoded) => {
                self.decoded(&decoded)?;
                Ok(true)
            }
            Err(e) => {
                self.error(place, e)?;
                Ok(!self.fail_fast)
            }
        }
    }

    fn decoded(&mut self, decoded: &Decoded) -> io::Result<()> {
        if !self.json && self.printed > 0 {
            self.out.write_all(b"\n")?;
        }
        self.printed += 1;
        let out = &mut self.out;
        match decoded {
            Decoded::KeepAlive if self.json => out.write_all(b"{\"keepalive\":true}\n"),
            Decoded::KeepAlive => out.write_all(b"keep-alive (zero-length frame)\n"),
            Decoded::Message { message, .. } if self.json => {
                render::write_json(out, self.spec, message, self.unmask)?;
                out.write_all(b"\n")
            }
            Decoded::Message { header, message } => {
                if !header.is_empty() {
                    writeln!(out, "header  {}", to_hex(header))?;
                }
                out.write_all(render::human(self.spec, message, self.unmask).as_bytes())
            }
        }
    }

    /// Reports a unit that did not decode, after what was decoded before it.
    fn error(&mut self, place: impl Display, error: impl Display) -> io::Result<()> {
        self.failed = true;
        self.out.flush()?;
        eprintln!("{place}{error}");
        Ok(())
    }

    fn finish(mut self) -> io::Result<ExitCode> {
        self.out.flush()?;
        Ok(if self.failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    }
}

/// One message per line of hex on stdin.
fn hex_lines(framing: Option<FramingConfig>, out: &mut Output) -> io::Result<()> {
    let mut framing = framing.map(FrameCodec::new);
    let mut input = BufReader::with_capacity(64 * 1024, io::stdin().lock());
    let mut line = Vec::with_capacity(1024);
    let mut raw = BytesMut::with_capacity(4096);
    let mut number = 0u64;
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        number += 1;
        if line.trim_ascii().is_empty() {
            continue;
        }
        raw.clear();
        let unit = hex_into(&line, &mut raw)
            .and_then(|()| decode_bytes(out.spec, framing.as_mut(), &mut raw));
        if !out.unit(Place::Line(number), unit)? {
            return Ok(());
        }
    }
}

/// Frames back to back on stdin, as bytes. A frame that does not parse is
/// reported and passed over; a length prefix that cannot be read ends the
/// stream, since where the next frame starts is then unknown.
fn raw_frames(config: FramingConfig, out: &mut Output) -> io::Result<()> {
    const BLOCK: usize = 256 * 1024;
    let mut codec = FrameCodec::new(config);
    let mut input = io::stdin().lock();
    let mut buffer = BytesMut::with_capacity(BLOCK);
    let (mut number, mut offset) = (0u64, 0u64);
    loop {
        loop {
            let before = buffer.len();
            let result = codec.decode(&mut buffer);
            let used = (before - buffer.len()) as u64;
            let place = Place::Frame(number + 1, offset);
            let unit = match result {
                Ok(None) => break,
                Ok(Some(frame)) => decode_frame(out.spec, frame),
                // A frame read whole whose header is wrong: the stream is still in step.
                Err(e) if used > 0 => Err(e.to_string()),
                Err(e) => {
                    out.error(
                        place,
                        format_args!("{e}; the frames after it cannot be found"),
                    )?;
                    return Ok(());
                }
            };
            if !out.unit(place, unit)? {
                return Ok(());
            }
            number += 1;
            offset += used;
        }
        // Frames decoded and dropped give their space back: the buffer stays
        // about a block, whatever the size of the input.
        buffer.reserve(BLOCK);
        let filled = buffer.len();
        buffer.resize(filled + BLOCK, 0);
        let read = loop {
            match input.read(&mut buffer[filled..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                read => break read?,
            }
        };
        buffer.truncate(filled + read);
        if read == 0 {
            if let Err(e) = codec.decode_eof(&mut buffer) {
                out.error(
                    Place::Frame(number + 1, offset),
                    format_args!("{e} at the end of the input"),
                )?;
            }
            return Ok(());
        }
    }
}

pub fn run(args: DecodeArgs) -> anyhow::Result<ExitCode> {
    let spec = Spec::load(&args.spec)?;
    let mut out = Output::new(&spec, &args);
    if let Some(hex) = &args.hex {
        let mut raw = BytesMut::new();
        let mut framing = args.framing.clone().map(FrameCodec::new);
        match hex_into(hex.as_bytes(), &mut raw)
            .and_then(|()| decode_bytes(&spec, framing.as_mut(), &mut raw))
        {
            Ok(decoded) => out.decoded(&decoded)?,
            Err(e) => out.error("error: ", e)?,
        }
    } else if let (true, Some(config)) = (args.raw, args.framing.clone()) {
        raw_frames(config, &mut out)?;
    } else {
        hex_lines(args.framing.clone(), &mut out)?;
    }
    Ok(out.finish()?)
}

//! `switchboard capture decode FILE`: the ISO 8583 messages of a pcap or
//! pcapng capture, one line (or JSON object) each, then a summary.

use std::fs::File;
use std::io::{BufReader, BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, SecondsFormat};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use capture::summary::{Summary, Tracker, Unmatched, DEFAULT_KEY_FIELDS, DEFAULT_MAX_OUTSTANDING};
use capture::{CaptureDecoder, CaptureReader, DecoderOptions, Endpoint, Event, EventKind};
use iso8583::codec::charset::to_hex;
use iso8583::framing::FramingConfig;
use iso8583::spec::Spec;

use super::render;

#[derive(Args, Debug)]
pub struct CaptureArgs {
    #[command(subcommand)]
    command: CaptureCommand,
}

#[derive(Subcommand, Debug)]
enum CaptureCommand {
    /// Decode the ISO 8583 messages of a pcap or pcapng capture.
    Decode(DecodeArgs),
    /// Send a capture's requests again to a live host and compare its
    /// answers with the captured ones.
    Replay(Box<super::replay::ReplayArgs>),
}

/// The spec and the connections of a capture to read, as `decode` and
/// `replay` take them.
#[derive(Args, Debug)]
pub struct Selection {
    /// A built-in spec name or the path of a spec file.
    #[arg(long, default_value = "switchboard")]
    spec: String,
    /// Only connections with one end on this port (repeatable).
    #[arg(long)]
    port: Vec<u16>,
    /// Only connections with one end at HOST:PORT, HOST or :PORT (repeatable).
    #[arg(long)]
    filter: Vec<Endpoint>,
}

impl Selection {
    pub fn spec(&self) -> anyhow::Result<Spec> {
        Ok(Spec::load(&self.spec)?)
    }

    /// What the decoder reads, cutting frames with `framing` when given.
    pub fn decoder_options(&self, framing: Option<FramingConfig>) -> DecoderOptions {
        DecoderOptions {
            framing,
            ports: self.port.clone(),
            filters: self.filter.clone(),
            ..DecoderOptions::default()
        }
    }
}

#[derive(Args, Debug)]
pub struct DecodeArgs {
    /// The capture: pcap or pcapng, as tcpdump, dumpcap or Wireshark write it.
    file: PathBuf,
    /// The framing of every connection (ascii4, binary2, bcd2, binary4,
    /// optionally +cups or +header:N); detected per connection when not given.
    #[arg(long)]
    framing: Option<FramingConfig>,
    #[command(flatten)]
    selection: Selection,
    /// One JSON object per message, then one with the summary.
    #[arg(long)]
    json: bool,
    /// Show card numbers and other sensitive fields in full.
    #[arg(long)]
    unmask: bool,
    /// Under each message's line, every field, one per line, and the
    /// subfields of composite fields (EMV tags by name) under their field.
    #[arg(long)]
    fields: bool,
    /// The fields that, with the response MTI and the connection, match a
    /// response to its request.
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_KEY_FIELDS)]
    match_fields: Vec<u16>,
}

pub fn run(args: CaptureArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        CaptureCommand::Decode(args) => decode(args),
        CaptureCommand::Replay(args) => super::replay::run(*args),
    }
}

fn decode(args: DecodeArgs) -> anyhow::Result<ExitCode> {
    let spec = args.selection.spec()?;
    let file =
        File::open(&args.file).with_context(|| format!("opening {}", args.file.display()))?;
    let size = file.metadata().map_or(0, |m| m.len());
    // Shown while the lines go to a file or a pipe: on a terminal they
    // scroll past and are their own progress, and would tear the bar.
    let progress = super::progress::bar(
        size,
        "{bar:30} {bytes}/{total_bytes} of the capture  {elapsed}",
        !std::io::stdout().is_terminal(),
    );
    let mut reader =
        CaptureReader::new(BufReader::with_capacity(1 << 16, progress.wrap_read(file)))
            .with_context(|| format!("reading {}", args.file.display()))?;
    let options = args.selection.decoder_options(args.framing.clone());
    let mut decoder = CaptureDecoder::new(&spec, options);
    let mut tracker = Tracker::new(args.match_fields.clone(), DEFAULT_MAX_OUTSTANDING);
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut events = Vec::new();
    let mut failed = false;
    loop {
        match reader.next_packet() {
            Ok(Some(packet)) => {
                if let Err(reason) = decoder.packet(&packet, &mut events) {
                    failed = true;
                    out.flush()?;
                    progress.suspend(|| eprintln!("packet {}: {reason}", packet.number));
                }
            }
            Ok(None) => break,
            Err(e) => {
                failed = true;
                out.flush()?;
                progress.suspend(|| eprintln!("{}: {e}", args.file.display()));
                break;
            }
        }
        failed |= print(&args, &spec, &mut tracker, &events, &mut out)?;
        events.clear();
    }
    progress.finish_and_clear();
    decoder.finish(&mut events);
    failed |= print(&args, &spec, &mut tracker, &events, &mut out)?;
    let summary = tracker.summary();
    if args.json {
        writeln!(out, "{}", json!({ "summary": summary_json(&summary) }))?;
    } else {
        out.write_all(summary_text(&summary).as_bytes())?;
    }
    out.flush()?;
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Prints events; true if one of them is a frame that does not parse.
fn print(
    args: &DecodeArgs,
    spec: &Spec,
    tracker: &mut Tracker,
    events: &[Event],
    out: &mut impl Write,
) -> std::io::Result<bool> {
    let mut failed = false;
    for event in events {
        let latency_us = tracker.event(event);
        failed |= matches!(event.kind, EventKind::Unparsable { .. });
        if args.json {
            write_event_json(out, spec, event, latency_us, args.unmask)?;
            out.write_all(b"\n")?;
        } else {
            writeln!(out, "{}", event_text(spec, event, latency_us, args.unmask))?;
            if let (true, EventKind::Message { message, .. }) = (args.fields, &event.kind) {
                render::write_fields_under(out, spec, message, args.unmask)?;
            }
        }
    }
    Ok(failed)
}

/// RFC 3339 with microseconds, in UTC.
pub fn timestamp(ts_ns: i64) -> String {
    DateTime::from_timestamp(
        ts_ns.div_euclid(1_000_000_000),
        ts_ns.rem_euclid(1_000_000_000) as u32,
    )
    .map_or_else(
        || ts_ns.to_string(),
        |t| t.to_rfc3339_opts(SecondsFormat::Micros, true),
    )
}

/// The fields a line shows, in this order.
const LINE_FIELDS: [u16; 5] = [3, 11, 2, 4, 39];

fn event_text(spec: &Spec, event: &Event, latency_us: Option<u64>, unmask: bool) -> String {
    let what = match &event.kind {
        EventKind::Message { message, .. } => {
            let mut text = message.mti_str().to_string();
            for number in LINE_FIELDS {
                if let Some(value) = message.get(number) {
                    let value = render::field_text(spec, number, value, unmask);
                    text.push_str(&format!(" {number}={value}"));
                }
            }
            if let Some(us) = latency_us {
                text.push_str(&format!("  latency {}.{:03} ms", us / 1000, us % 1000));
            }
            text
        }
        EventKind::KeepAlive { .. } => "keep-alive".to_string(),
        EventKind::Unparsable { offset, reason, .. } => {
            format!("error: frame at stream offset {offset} does not parse: {reason}")
        }
        EventKind::Skipped { offset, len } => format!(
            "skipped {len} bytes at stream offset {offset} (not captured, or before the first whole frame)"
        ),
    };
    format!(
        "{} #{} {} > {}  {what}",
        timestamp(event.ts_ns),
        event.conn,
        event.src,
        event.dst
    )
}

/// One event as its JSON object, written straight to `out`: the bytes
/// serde_json prints for the object, without building a `Value` (a map and a
/// string per field) for every message first.
fn write_event_json(
    out: &mut impl Write,
    spec: &Spec,
    event: &Event,
    latency_us: Option<u64>,
    unmask: bool,
) -> std::io::Result<()> {
    out.write_all(b"{\"ts\":")?;
    serde_json::to_writer(&mut *out, &timestamp(event.ts_ns))?;
    write!(out, ",\"packet\":{},\"conn\":{}", event.packet, event.conn)?;
    out.write_all(b",\"src\":")?;
    serde_json::to_writer(&mut *out, &format_args!("{}", event.src))?;
    out.write_all(b",\"dst\":")?;
    serde_json::to_writer(&mut *out, &format_args!("{}", event.dst))?;
    match &event.kind {
        EventKind::Message {
            offset,
            header,
            message,
            ..
        } => {
            write!(out, ",\"offset\":{offset}")?;
            if !header.is_empty() {
                out.write_all(b",\"header\":")?;
                serde_json::to_writer(&mut *out, &to_hex(header))?;
            }
            out.write_all(b",\"mti\":")?;
            serde_json::to_writer(&mut *out, message.mti_str())?;
            out.write_all(b",\"fields\":")?;
            render::write_fields_json(out, spec, message, unmask)?;
            if let Some(us) = latency_us {
                write!(out, ",\"latency_us\":{us}")?;
            }
        }
        EventKind::KeepAlive { offset } => {
            write!(out, ",\"offset\":{offset},\"keepalive\":true")?;
        }
        EventKind::Unparsable {
            offset,
            reason,
            error_offset,
        } => {
            write!(out, ",\"offset\":{offset},\"error\":")?;
            serde_json::to_writer(
                &mut *out,
                &json!({ "reason": reason, "offset": error_offset }),
            )?;
        }
        EventKind::Skipped { offset, len } => {
            write!(out, ",\"offset\":{offset},\"skipped\":{len}")?;
        }
    }
    out.write_all(b"}")
}

fn summary_json(summary: &Summary) -> Value {
    json!({
        "messages": summary.messages,
        "errors": summary.errors,
        "skipped_bytes": summary.skipped_bytes,
        "connections": summary.connections.iter().map(|(id, c)| json!({
            "conn": id,
            "src": c.src.to_string(),
            "dst": c.dst.to_string(),
            "messages": c.messages,
            "errors": c.errors,
            "skipped_bytes": c.skipped_bytes,
        })).collect::<Vec<_>>(),
        "by_type": summary.by_type.iter().map(|(mti, code, n)| json!({
            "mti": mti,
            "response_code": if code.is_empty() { Value::Null } else { code.as_str().into() },
            "count": n,
        })).collect::<Vec<_>>(),
        "unanswered_requests": summary.unanswered_requests,
        "responses_without_request": summary.responses_without_request,
        "unanswered": summary.unanswered.iter().map(unmatched_json).collect::<Vec<_>>(),
        "without_request": summary.without_request.iter().map(unmatched_json).collect::<Vec<_>>(),
        "latency_us": summary.latency.map(|l| json!({
            "count": l.count, "p50": l.p50_us, "p99": l.p99_us, "max": l.max_us,
        })),
    })
}

fn unmatched_json(u: &Unmatched) -> Value {
    json!({
        "ts": timestamp(u.ts_ns),
        "packet": u.packet,
        "conn": u.conn,
        "src": u.src.to_string(),
        "dst": u.dst.to_string(),
        "mti": u.mti,
        "stan": u.stan,
    })
}

fn unmatched_text(u: &Unmatched) -> String {
    format!(
        "  {} #{} {} > {}  {} 11={} (packet {})\n",
        timestamp(u.ts_ns),
        u.conn,
        u.src,
        u.dst,
        u.mti,
        u.stan,
        u.packet
    )
}

fn summary_text(summary: &Summary) -> String {
    let mut text = format!(
        "\nmessages {}, errors {}, bytes skipped {}, connections {}\n",
        summary.messages,
        summary.errors,
        summary.skipped_bytes,
        summary.connections.len()
    );
    for (id, c) in &summary.connections {
        text.push_str(&format!(
            "  #{id} {} > {}: {} messages, {} errors, {} bytes skipped\n",
            c.src, c.dst, c.messages, c.errors, c.skipped_bytes
        ));
    }
    for (mti, code, n) in &summary.by_type {
        let code = if code.is_empty() { "  " } else { code };
        text.push_str(&format!("  {mti} {code} {n:>8}\n"));
    }
    text.push_str(&format!(
        "unanswered requests: {}, responses without request: {}\n",
        summary.unanswered_requests, summary.responses_without_request
    ));
    for (title, listed, count) in [
        (
            "unanswered",
            &summary.unanswered,
            summary.unanswered_requests,
        ),
        (
            "without request",
            &summary.without_request,
            summary.responses_without_request,
        ),
    ] {
        if listed.is_empty() {
            continue;
        }
        let more = count.saturating_sub(listed.len() as u64);
        let first = if more > 0 { " (the first)" } else { "" };
        text.push_str(&format!("{title}{first}:\n"));
        for u in listed {
            text.push_str(&unmatched_text(u));
        }
    }
    match summary.latency {
        Some(l) => text.push_str(&format!(
            "latency ({} matched): p50 {} us, p99 {} us, max {} us\n",
            l.count, l.p50_us, l.p99_us, l.max_us
        )),
        None => text.push_str("latency: no response matched to a request\n"),
    }
    text
}

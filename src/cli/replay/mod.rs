//! `switchboard capture replay FILE --target HOST:PORT`: the client side of a
//! capture's connections sent again to a live host, each answer compared
//! field by field with the captured one.

mod engine;
mod report;
mod script;

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use capture::replay::{Renewer, ScriptOptions, DEFAULT_RENEW};
use capture::summary::DEFAULT_KEY_FIELDS;
use clap::Args;
use iso8583::framing::FramingConfig;

use super::capture::Selection;
use engine::{Engine, EngineOptions, Pace};
use report::{Junit, Tally};

/// The fields that legitimately differ from one run to the next: the
/// transmission date-time, STAN, settlement date, RRN and approval code.
const DEFAULT_IGNORE: [u16; 5] = [7, 11, 15, 37, 38];

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// The capture: pcap or pcapng.
    file: PathBuf,
    /// The host to send the requests to.
    #[arg(long)]
    target: String,
    /// The framing to the target; by default each connection's, as captured
    /// (given to the decoder with --capture-framing, or detected).
    #[arg(long)]
    framing: Option<FramingConfig>,
    /// The framing of the capture's connections; detected when not given.
    #[arg(long)]
    capture_framing: Option<FramingConfig>,
    #[command(flatten)]
    selection: Selection,
    /// Send at this many requests per second instead of the captured pacing.
    #[arg(long, conflicts_with = "fast")]
    rate: Option<f64>,
    /// Send each request as soon as fewer than --window wait for an answer.
    #[arg(long)]
    fast: bool,
    /// Requests waiting for their answer at most, whatever the pacing.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    window: u32,
    /// Fields given new values (consistently: field 90 of a later message
    /// names the renewed original).
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_RENEW)]
    renew: Vec<u16>,
    /// Send the requests exactly as captured.
    #[arg(long, conflicts_with = "renew")]
    no_renew: bool,
    /// Fields not compared.
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_IGNORE)]
    ignore: Vec<u16>,
    /// The fields that, with the response MTI and the connection, pair an
    /// answer with its request.
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_KEY_FIELDS)]
    match_fields: Vec<u16>,
    /// How long to wait for each answer.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// How long an answer may take in the capture to be taken as the
    /// request's answer.
    #[arg(long, default_value_t = 60_000)]
    capture_answer_window_ms: u64,
    /// One JSON object per request, then one with the summary.
    #[arg(long)]
    json: bool,
    /// Also write a JUnit XML report here (one test case per request).
    #[arg(long)]
    junit: Option<PathBuf>,
    /// Show card numbers and other sensitive fields in full.
    #[arg(long)]
    unmask: bool,
}

pub fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let spec = Arc::new(args.selection.spec()?);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let target = runtime
        .block_on(tokio::net::lookup_host(&args.target))
        .with_context(|| format!("--target {}: not a HOST:PORT", args.target))?
        .next()
        .with_context(|| format!("--target {}: no address", args.target))?;
    let renew = if args.no_renew {
        Vec::new()
    } else {
        args.renew.clone()
    };
    // Two replays in the same second must not renew to the same STANs and
    // RRNs: the seed mixes the clock's nanoseconds with the process id.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        .wrapping_mul(6_364_136_223_846_793_005)
        ^ u64::from(std::process::id()).rotate_left(32);
    let renewer = Renewer::new(&renew, seed).map_err(|e| anyhow::anyhow!("--renew: {e}"))?;
    let pace = match (args.rate, args.fast) {
        (Some(rate), _) if !(rate > 0.0 && rate.is_finite()) => {
            anyhow::bail!("--rate {rate}: must be a positive number of requests per second")
        }
        (Some(rate), _) => Pace::Rate(rate),
        (None, true) => Pace::Fast,
        (None, false) => Pace::Original,
    };

    let progress = super::progress::bar(
        0,
        "{bar:30} {bytes}/{total_bytes} of the capture  {msg}  {elapsed}",
        !args.json,
    );
    let decoder = args.selection.decoder_options(args.capture_framing.clone());
    let script_options = ScriptOptions {
        key_fields: args.match_fields.clone(),
        answer_window_ns: (args.capture_answer_window_ms as i64).saturating_mul(1_000_000),
        ..ScriptOptions::default()
    };
    let (script, reader) = script::spawn(
        args.file.clone(),
        spec.clone(),
        decoder,
        script_options,
        progress.clone(),
    )?;
    let options = EngineOptions {
        target,
        framing: args.framing.clone(),
        pace,
        window: args.window as usize,
        timeout: Duration::from_millis(args.timeout_ms),
        connect_timeout: Duration::from_millis(args.timeout_ms),
        key_fields: args.match_fields.clone(),
        ignore: args.ignore.clone(),
    };
    let mut junit = match &args.junit {
        Some(path) => Some(Junit::create(
            path,
            format!("capture replay {} to {}", args.file.display(), args.target),
        )?),
        None => None,
    };

    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut tally = Tally::default();
    let mut write_error: Option<std::io::Error> = None;
    let started = Instant::now();
    let mut print = |outcome: engine::Outcome| {
        tally.add(&outcome);
        progress.set_message(format!(
            "same {}, differs {}, missing {}, extra {}, errors {}",
            tally.same, tally.differs, tally.missing, tally.extra, tally.errors
        ));
        let line = if args.json {
            report::json(&spec, &outcome, args.unmask).to_string()
        } else {
            report::text(&spec, &outcome, args.unmask)
        };
        let written = progress.suspend(|| writeln!(out, "{line}"));
        let junit_written = junit
            .as_mut()
            .map_or(Ok(()), |j| j.add(&spec, &outcome, args.unmask));
        if let Err(e) = written.and(junit_written) {
            write_error.get_or_insert(e);
        }
    };
    let totals =
        runtime.block_on(Engine::new(spec.clone(), options, renewer, &mut print).run(script));
    let _ = reader.join();
    progress.finish_and_clear();
    if let Some(e) = write_error {
        return Err(e).context("writing the report");
    }
    let seconds = started.elapsed().as_secs_f64();
    if args.json {
        writeln!(out, "{}", report::summary_json(&tally, &totals, seconds))?;
    } else {
        out.write_all(report::summary_text(&tally, &totals, &args.target, seconds).as_bytes())?;
    }
    out.flush()?;
    if let Some(junit) = junit {
        junit.finish(&tally, seconds)?;
    }
    Ok(if report::failed(&tally, &totals) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

//! `switchboard journal`: the messages the switch journaled, decoded and
//! masked for an operator; in full only with `--unmask`, which needs the
//! data key (sealed messages cannot be read without it anyway).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use clap::Args;
use iso8583::spec::Spec;
use serde_json::json;
use switchboard::config::Config;
use switchboard::store::Direction;

use super::render;

#[derive(Args, Debug)]
pub struct JournalArgs {
    /// The switch's configuration file (its store and keys).
    #[arg(long)]
    config: PathBuf,
    /// From this moment: RFC 3339 (2026-12-02T04:00:00Z) or a date (UTC
    /// midnight); the last hour when not given.
    #[arg(long)]
    from: Option<String>,
    /// Up to this moment (same forms); now when not given.
    #[arg(long)]
    to: Option<String>,
    /// Only messages with this STAN (F11).
    #[arg(long)]
    stan: Option<String>,
    /// Every field of each message, one per line, and the subfields of
    /// composite fields (EMV tags by name) under their field.
    #[arg(long)]
    fields: bool,
    /// Show card numbers in full (needs the data key to be configured).
    #[arg(long)]
    unmask: bool,
    /// One JSON object per message.
    #[arg(long)]
    json: bool,
}

fn moment(what: &str, text: &str) -> anyhow::Result<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_millis());
    }
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(d
            .and_time(chrono::NaiveTime::MIN)
            .and_utc()
            .timestamp_millis());
    }
    bail!("--{what} {text:?}: give RFC 3339 (2026-12-02T04:00:00Z) or a date (2026-12-02)")
}

pub fn run(args: JournalArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    super::keys::install(&config)?;
    if args.unmask && switchboard::vault::vault().is_none() {
        bail!("--unmask shows card numbers in full, which needs the data key ([security] data_key_file)");
    }
    let now = Utc::now().timestamp_millis();
    let to = args
        .to
        .as_deref()
        .map(|t| moment("to", t))
        .transpose()?
        .unwrap_or(now);
    let from = args
        .from
        .as_deref()
        .map(|t| moment("from", t))
        .transpose()?
        .unwrap_or(to - 3_600_000);
    let spec = Spec::load(&config.spec)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let (entries, cleared) = runtime
        .block_on(async {
            let store = switchboard::service::open_store(&config.store).await?;
            let entries = store.journal_between(from, to).await?;
            let cleared = match store.maintenance() {
                Some(m) => m.cleared_days().await?,
                None => Vec::new(),
            };
            Ok::<_, switchboard::store::StoreError>((entries, cleared))
        })
        .context("reading the journal")?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    // Days in the range whose messages retention purged: said first, and
    // each of their rows shows its summary columns only.
    let (first_day, last_day) = (
        config.clearing.date_of_ms(from),
        config.clearing.date_of_ms(to),
    );
    for day in &cleared {
        if let (Some(began), true) = (
            day.purge_began_ms,
            (first_day..=last_day).contains(&day.date),
        ) {
            let line = format!(
                "settlement date {}: messages purged from {} ([store] journal_retention_days); \
                 its rows keep their summary columns only",
                day.date,
                utc_text(began)
            );
            if args.json {
                writeln!(
                    out,
                    "{}",
                    json!({ "purged_day": day.date.to_string(), "purged_at": utc_text(began) })
                )?;
            } else {
                writeln!(out, "{line}")?;
            }
        }
    }
    let mut shown = 0;
    for entry in entries.iter().filter(|e| {
        args.stan
            .as_deref()
            .is_none_or(|s| e.stan.as_deref() == Some(s))
    }) {
        shown += 1;
        let at = utc_text(entry.at_ms);
        let direction = match entry.direction {
            Direction::In => "in",
            Direction::Out => "out",
        };
        if entry.raw.is_empty() {
            purged_row(&mut out, entry, &at, direction, args.json)?;
            continue;
        }
        let message = iso8583::parse(&spec, entry.raw.clone());
        if args.json {
            let mut object =
                json!({ "at": at, "direction": direction, "peer": entry.peer, "note": entry.note });
            match &message {
                Ok(msg) => {
                    object["mti"] = msg.mti_str().into();
                    object["fields"] = render::json_fields(&spec, msg, args.unmask);
                }
                Err(e) => object["error"] = e.to_string().into(),
            }
            writeln!(out, "{object}")?;
            continue;
        }
        let what = match &message {
            Ok(msg) => {
                let mut text = msg.mti_str().to_string();
                for number in [3, 11, 2, 4, 39] {
                    if let Some(value) = msg.get(number) {
                        text.push_str(&format!(
                            " {number}={}",
                            render::field_text(&spec, number, value, args.unmask)
                        ));
                    }
                }
                text
            }
            Err(e) => format!("does not parse: {e}"),
        };
        let note = entry
            .note
            .as_deref()
            .map(|n| format!("  ({n})"))
            .unwrap_or_default();
        writeln!(out, "{at} {direction:<3} {}  {what}{note}", entry.peer)?;
        if args.fields {
            if let Ok(msg) = &message {
                render::write_fields_under(&mut out, &spec, msg, args.unmask)?;
            }
        }
    }
    if !args.json {
        writeln!(out, "{shown} messages")?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// A moment in Unix milliseconds as RFC 3339 UTC.
pub fn utc_text(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.to_rfc3339_opts(SecondsFormat::Millis, true),
    )
}

/// A row whose message retention purged: its summary columns (the card
/// number masked when it was written).
fn purged_row(
    out: &mut impl Write,
    entry: &switchboard::store::JournalEntry,
    at: &str,
    direction: &str,
    json: bool,
) -> anyhow::Result<()> {
    let mti = String::from_utf8_lossy(&entry.mti);
    if json {
        let object = json!({
            "at": at, "direction": direction, "peer": entry.peer, "note": entry.note,
            "mti": mti, "purged": true,
            "summary": {
                "3": entry.processing_code, "11": entry.stan, "7": entry.transmission,
                "32": entry.acquirer, "2": entry.pan_masked, "4": entry.amount_minor,
                "39": entry.response_code,
            },
        });
        writeln!(out, "{object}")?;
        return Ok(());
    }
    let mut text = mti.into_owned();
    for (number, value) in [
        (3, entry.processing_code.clone()),
        (11, entry.stan.clone()),
        (2, entry.pan_masked.clone()),
        (4, entry.amount_minor.map(|a| a.to_string())),
        (39, entry.response_code.clone()),
    ] {
        if let Some(value) = value {
            text.push_str(&format!(" {number}={value}"));
        }
    }
    writeln!(
        out,
        "{at} {direction:<3} {}  {text}  (message purged by retention)",
        entry.peer
    )?;
    Ok(())
}

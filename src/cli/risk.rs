//! `switchboard risk report --config FILE --date YYYY-MM-DD`: the risk rules'
//! hits on a settlement day, by rule, card (masked) and wallet institution,
//! most first; `--json` for one object per line.

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::NaiveDate;
use clap::{Args, Subcommand};

use switchboard::config::Config;

#[derive(Args, Debug)]
pub struct RiskArgs {
    #[command(subcommand)]
    command: RiskCommand,
}

#[derive(Subcommand, Debug)]
enum RiskCommand {
    /// The day's rule hits: declines (enforce) and would-be declines (observe).
    Report(ReportArgs),
}

#[derive(Args, Debug)]
struct ReportArgs {
    /// The switch's configuration file (its store).
    #[arg(long)]
    config: PathBuf,
    /// The settlement date, YYYY-MM-DD.
    #[arg(long)]
    date: String,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: RiskArgs) -> anyhow::Result<ExitCode> {
    let RiskCommand::Report(args) = args.command;
    let config = Config::load(&args.config)?;
    let date = NaiveDate::parse_from_str(&args.date, "%Y-%m-%d")
        .map_err(|_| anyhow::anyhow!("--date {:?} is not YYYY-MM-DD", args.date))?;
    let day = date.format("%Y-%m-%d").to_string();
    let runtime = tokio::runtime::Runtime::new()?;
    let lines = runtime.block_on(async {
        let store = switchboard::service::open_store(&config.store).await?;
        anyhow::Ok(store.hits_of_day(&day).await?)
    })?;
    if args.json {
        for l in &lines {
            println!(
                "{}",
                serde_json::json!({
                    "date": day, "rule": l.rule, "mode": l.mode, "code": l.code,
                    "card": l.card, "institution": l.institution, "hits": l.hits,
                })
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let total: u64 = lines.iter().map(|l| l.hits).sum();
    println!(
        "settlement date {day}: {total} risk rule hit(s) ({} enforced, {} observed)",
        lines
            .iter()
            .filter(|l| l.mode == "enforce")
            .map(|l| l.hits)
            .sum::<u64>(),
        lines
            .iter()
            .filter(|l| l.mode == "observe")
            .map(|l| l.hits)
            .sum::<u64>(),
    );
    for line in table(&lines) {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The hits as the report's table: a heading, then a line per rule, card
/// and institution (nothing when there are none). The demo prints it too.
pub fn table(lines: &[switchboard::store::HitCount]) -> Vec<String> {
    let row = |cells: [&str; 6]| {
        format!(
            "{:<24} {:<8} {:<4} {:<20} {:<12} {:>6}",
            cells[0], cells[1], cells[2], cells[3], cells[4], cells[5]
        )
    };
    if lines.is_empty() {
        return Vec::new();
    }
    let mut out = vec![row(["rule", "mode", "code", "card", "institution", "hits"])];
    for l in lines {
        let hits = l.hits.to_string();
        out.push(row([
            &l.rule,
            &l.mode,
            &l.code,
            &l.card,
            &l.institution,
            &hits,
        ]));
    }
    out
}

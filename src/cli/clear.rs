//! `switchboard clear --config FILE --date YYYY-MM-DD [--out DIR] [--allow-pending]`:
//! end-of-day clearing files for every participant (specs/clearing.md).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use chrono::NaiveDate;
use clap::Args;

use iso8583::spec::Spec;
use switchboard::clearing::clear::{clear_day_reporting, ClearProgress, ClearRequest};
use switchboard::config::Config;
use switchboard::store::Store;

#[derive(Args, Debug)]
pub struct ClearArgs {
    /// The switch's configuration file (store, banks, wallets, `[clearing]`).
    #[arg(long)]
    config: PathBuf,
    /// The settlement date to clear, YYYY-MM-DD.
    #[arg(long)]
    date: String,
    /// Where to write the files (default: clearing-YYYY-MM-DD).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Clear what is final and list what is still in flight, instead of refusing.
    #[arg(long)]
    allow_pending: bool,
}

pub fn run(args: ClearArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    super::keys::install(&config)?;
    let date = NaiveDate::parse_from_str(&args.date, "%Y-%m-%d")
        .map_err(|_| anyhow::anyhow!("--date {:?} is not YYYY-MM-DD", args.date))?;
    let spec = Spec::load(&config.spec)?;
    let request = ClearRequest {
        date,
        settlement: config.clearing,
        switch_id: config.institution_id.clone(),
        banks: config
            .banks
            .iter()
            .map(|b| b.institution_id.clone())
            .collect(),
        wallets: config
            .wallets
            .iter()
            .flat_map(|w| w.institutions.iter().map(|i| i.to_string()))
            .collect(),
        allow_pending: args.allow_pending,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let bar = super::progress::bar(
        0,
        "{bar:30} {percent:>3}% of the day's journal  {msg}  {elapsed}",
        true,
    );
    let show = |step: ClearProgress| match step {
        ClearProgress::Journal {
            read_ms,
            window_ms,
            entries,
        } => {
            bar.set_length(window_ms);
            bar.set_position(read_ms);
            bar.set_message(format!("{entries} entries"));
        }
        ClearProgress::JournalRead => {
            bar.set_message("sagas, store-and-forward, files");
        }
    };
    let cleared = runtime.block_on(async {
        let store = switchboard::service::open_store_locked(&config.store, "clear").await?;
        refuse_purged(store.clone(), date).await?;
        anyhow::Ok((
            clear_day_reporting(store.as_ref(), &spec, &request, &show).await?,
            store,
        ))
    });
    bar.finish_and_clear();
    let (cleared, store) = cleared?;
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from(format!("clearing-{}", date.format("%Y-%m-%d"))));
    let paths = cleared.write(&out)?;
    println!(
        "settlement date {} ({}): {} bank(s), {} wallet(s)",
        date,
        config.clearing,
        cleared.banks().count(),
        cleared.wallets().count()
    );
    for p in &cleared.positions {
        let side = if p.net.is_zero() {
            "even".to_string()
        } else if p.net.is_sign_negative() {
            format!("pays {}", -p.net)
        } else {
            format!("receives {}", p.net)
        };
        println!(
            "  bank {} {:03}: debits {} for {}, credits {} for {}, net {}: {side}",
            p.bank, p.currency, p.debits.0, p.debits.1, p.credits.0, p.credits.1, p.net
        );
    }
    for o in &cleared.obligations {
        println!(
            "  bank {} pays bank {} {} ({:03})",
            o.payer, o.receiver, o.amount, o.currency
        );
    }
    for path in &paths {
        println!("wrote {}", path.display());
    }
    if !cleared.pending.is_empty() {
        println!(
            "{} transaction(s) not final, left out (listed in summary.csv):",
            cleared.pending.len()
        );
        for p in &cleared.pending {
            println!(
                "  {} {} {} {}: {}",
                p.role, p.participant, p.kind, p.key, p.reason
            );
        }
    }
    if !cleared.balanced() {
        for (currency, net) in cleared.net_by_currency() {
            if !net.is_zero() {
                eprintln!("switchboard: net positions in {currency:03} sum to {net}, not zero");
            }
        }
        return Ok(ExitCode::FAILURE);
    }
    println!("net positions sum to zero");
    if cleared.pending.is_empty() {
        if let Some(maintenance) = store.maintenance() {
            let now = chrono::Utc::now().timestamp_millis();
            runtime.block_on(maintenance.record_cleared(date, now))?;
            println!("settlement date {date} recorded as cleared");
        }
    } else {
        println!(
            "settlement date {date} not recorded as cleared while transactions are in flight: \
             journal retention keeps its messages until it is"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Refuses to clear a day whose journal messages retention has begun to
/// purge, or whose neighbour's (clearing reads an hour into each): the files
/// it wrote when it was cleared are the day's clearing.
async fn refuse_purged(store: Arc<dyn Store>, date: NaiveDate) -> anyhow::Result<()> {
    let Some(maintenance) = store.maintenance() else {
        return Ok(());
    };
    let near = [date.pred_opt(), Some(date), date.succ_opt()];
    for day in maintenance.cleared_days().await? {
        if let (Some(began), true) = (day.purge_began_ms, near.contains(&Some(day.date))) {
            anyhow::bail!(
                "the journal messages of settlement date {} were purged (journal_retention_days, \
                 from {}): {date} cannot be cleared again; its clearing files are the ones \
                 written when it was cleared",
                day.date,
                super::journal::utc_text(began)
            );
        }
    }
    Ok(())
}

//! `switchboard audit --config FILE`: the operator actions the admin
//! listener was asked for, newest first, from the store's audit log.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use switchboard::admin::actions::row_json;
use switchboard::config::Config;
use switchboard::store::audit::MAX_READ;

#[derive(Args, Debug)]
pub struct AuditArgs {
    /// The switch's configuration file (for the store's location).
    #[arg(long)]
    config: PathBuf,
    /// How many of the latest rows (at most 1000).
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// One JSON object per row.
    #[arg(long)]
    json: bool,
}

pub fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    if !(1..=MAX_READ).contains(&args.limit) {
        anyhow::bail!("--limit must be 1 to {MAX_READ}");
    }
    let config = Config::load(&args.config)?;
    super::keys::install(&config)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let rows = runtime.block_on(async {
        let store = switchboard::service::open_store(&config.store).await?;
        store.audit_latest(args.limit).await
    })?;
    for r in &rows {
        let row = row_json(r);
        if args.json {
            println!("{row}");
        } else {
            let text = |k: &str| row[k].as_str().unwrap_or("").to_string();
            println!(
                "{:>6}  {}  {:<13} {:<10} {:<12} {}  {}",
                r.id,
                text("at"),
                r.entry.action,
                r.entry.target,
                r.entry.result,
                r.entry.who,
                r.entry.reason
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

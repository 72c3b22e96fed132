//! `switchboard recover --config FILE [--all]`: settle what crashed instances
//! left in flight (fail unfinished sagas, queue their reversals; decline
//! freezes left unanswered and queue their reversals), then exit. Running
//! instances do this by themselves (the embedded store at start; on
//! PostgreSQL for every instance whose lease expired); this command does it
//! without starting a switch. On PostgreSQL it settles the work of expired
//! leases only, unless `--all` says no instance is running. A running
//! instance's store-and-forward worker then delivers the queued reversals.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;

use iso8583::spec::Spec;
use switchboard::clock::SystemClock;
use switchboard::config::{Config, StoreConfig};
use switchboard::stan::StanSource;
use switchboard::store::postgres::PostgresStore;
use switchboard::store::sqlite::SqliteStore;
use switchboard::store::Store;
use switchboard::switch::{recovery, Switch};

#[derive(Args, Debug)]
pub struct RecoverArgs {
    /// The switch's configuration file.
    #[arg(long)]
    config: PathBuf,
    /// On PostgreSQL: settle every unfinished freeze and saga, whoever owns
    /// it. Only when no switch instance is running on the database.
    #[arg(long)]
    all: bool,
}

pub fn run(args: RecoverArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    super::keys::install(&config)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let store: Arc<dyn Store> = match &config.store {
            StoreConfig::Embedded(path) => Arc::new(SqliteStore::open_locked(path, "recover")?),
            StoreConfig::Postgres(url) => Arc::new(PostgresStore::connect(url).await?),
        };
        // Recovery builds reversals but sends nothing itself: no bank links.
        let switch = Switch::new(
            Arc::new(Spec::load(&config.spec)?),
            config.institution_id.clone(),
            store.clone(),
            Vec::new(),
            Arc::new(SystemClock),
            Arc::new(StanSource::new(store)),
        );
        let shared = matches!(config.store, StoreConfig::Postgres(_));
        let done = if shared && !args.all {
            recovery::take_over_expired(&switch, config.lease_policy().grace).await?
        } else {
            recovery::recover(&switch).await?
        };
        println!(
            "recovered: {} freezes declined, {} sagas failed; their reversals are queued",
            done.freezes_declined, done.sagas_failed
        );
        Ok(ExitCode::SUCCESS)
    })
}

//! `switchboard migrate --store URL|PATH`: bring a store's schema to this
//! build's version without starting the switch (the switch also does it at start).

use std::process::ExitCode;

use clap::Args;

use switchboard::config::StoreConfig;
use switchboard::store::postgres::{self, MIGRATIONS};
use switchboard::store::sqlite::SqliteStore;

#[derive(Args, Debug)]
pub struct MigrateArgs {
    /// `postgres://user:password@host:port/database`, or the path of an embedded store file.
    #[arg(long)]
    store: String,
}

pub fn run(args: MigrateArgs) -> anyhow::Result<ExitCode> {
    match StoreConfig::parse(&args.store) {
        StoreConfig::Postgres(url) => {
            let runtime = tokio::runtime::Runtime::new()?;
            let applied = runtime.block_on(postgres::migrate(&url))?;
            let current = MIGRATIONS.last().map_or(0, |m| m.0);
            if applied.is_empty() {
                println!("schema up to date (version {current})");
            }
            for version in applied {
                let description = MIGRATIONS
                    .iter()
                    .find(|m| m.0 == version)
                    .map_or("", |m| m.1);
                println!("applied {version}: {description}");
            }
        }
        StoreConfig::Embedded(path) => {
            drop(SqliteStore::open_locked(&path, "migrate")?);
            println!("schema up to date ({})", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

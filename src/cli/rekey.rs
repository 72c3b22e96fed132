//! `switchboard rekey --config FILE`: every sealed value of the store sealed
//! anew under the key file's current data key, in batches of their own
//! transaction, so that the older keys can then be removed from the file.
//!
//! On PostgreSQL it runs beside the switch's instances (a value an instance
//! writes meanwhile is left as written: under the current key once the
//! instances were restarted with the new file). The embedded store is one
//! process's at a time: rekey takes its lock, so the switch is stopped for it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use switchboard::config::Config;

#[derive(Args, Debug)]
pub struct RekeyArgs {
    /// The switch's configuration file (its store and key file).
    #[arg(long)]
    config: PathBuf,
    /// Rows read and resealed per transaction.
    #[arg(long, default_value_t = 500)]
    batch: usize,
}

pub fn run(args: RekeyArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    super::keys::install(&config)?;
    let Some(vault) = switchboard::vault::vault() else {
        anyhow::bail!(
            "no data key is configured ([security] data_key_file or {}): nothing to seal under",
            switchboard::vault::KEYS_ENV
        );
    };
    let (ids, current) = vault.key_ids();
    let batch = args.batch.clamp(1, 10_000);
    let runtime = tokio::runtime::Runtime::new()?;
    let (read, resealed) = runtime.block_on(async {
        // The embedded store's lock: refused, naming the switch, while it runs.
        let store = switchboard::service::open_store_locked(&config.store, "rekey").await?;
        let maintenance = store
            .maintenance()
            .context("this store keeps no sealed data")?;
        let (mut all_read, mut all_resealed) = (0, 0);
        for column in maintenance.sealed_columns() {
            let (mut read, mut resealed, mut after) = (0, 0, None);
            loop {
                let done = maintenance
                    .reseal(column, after.take(), batch)
                    .await
                    .with_context(|| format!("resealing {}", column.name()))?;
                read += done.read;
                resealed += done.resealed;
                // The store says when the column is done: it may read
                // fewer rows than asked (a column of large values).
                if done.exhausted {
                    break;
                }
                after = done.last;
            }
            println!(
                "{}: {read} values read, {resealed} sealed anew under key {current}",
                column.name()
            );
            all_read += read;
            all_resealed += resealed;
        }
        anyhow::Ok((all_read, all_resealed))
    })?;
    let older: Vec<String> = ids
        .iter()
        .filter(|&&id| id != current)
        .map(u8::to_string)
        .collect();
    println!(
        "{read} values read, {resealed} sealed anew: everything stored is sealed under key {current}"
    );
    if !older.is_empty() {
        println!(
            "keys {} may now be removed from [data] (kept apart while backups taken before \
             this rekey are kept: they need them)",
            older.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

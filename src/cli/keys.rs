//! The keys that seal card data at rest: `switchboard keygen` writes a key
//! file, and the commands that open a store install the configured keys
//! first (`switchboard::vault`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use switchboard::config::Config;
use switchboard::vault::{self, KeySource, Vault};
use tracing::{info, warn};

#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct KeygenArgs {
    /// The key file to write (mode 0600); an existing file is never replaced.
    #[arg(long)]
    out: Option<PathBuf>,
    /// An existing key file to add a new data key to, which becomes current
    /// (the old keys stay, to read what they sealed until `switchboard rekey`).
    #[arg(long)]
    add: Option<PathBuf>,
}

pub fn keygen(args: KeygenArgs) -> anyhow::Result<ExitCode> {
    let out = match (args.out, args.add) {
        (Some(out), _) => out,
        (None, Some(file)) => return add_key(&file),
        (None, None) => anyhow::bail!("give --out FILE or --add FILE"),
    };
    vault::create_key_file(&out, &Vault::generate()).with_context(|| {
        format!(
            "creating {} (an existing key file is never replaced: keys lost are data lost)",
            out.display()
        )
    })?;
    println!(
        "wrote {}: one data key (id 1) and an HMAC key. Name it in the config as\n\
         [security]\ndata_key_file = \"{}\"\nand keep it out of the store's backups.",
        out.display(),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Adds a data key to the key file `path`, making it current.
fn add_key(path: &Path) -> anyhow::Result<ExitCode> {
    let id = vault::add_key_to_file(path)?;
    println!(
        "{}: data key {id} added and made current; the older keys stay to read what they \
         sealed. Restart the switch (every instance) to seal under key {id}, then run \
         `switchboard rekey --config FILE` to seal everything stored under it; after that \
         the older keys can be removed from [data].",
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Installs the keys `[security]` names before a store is opened; without
/// any, says loudly that card data will be stored in clear.
pub fn install(config: &Config) -> anyhow::Result<()> {
    match vault::install_configured(&config.security)? {
        KeySource::File(path) => {
            info!(file = %path.display(), "card data sealed at rest (AES-256-GCM)")
        }
        KeySource::Environment => info!(
            from = vault::KEYS_ENV,
            "card data sealed at rest (AES-256-GCM)"
        ),
        KeySource::None => {
            warn!(
                "NO DATA KEY: card numbers and messages are stored IN CLEAR; development only. \
                 Run `switchboard keygen --out keys.toml` and set [security] data_key_file \
                 (or require_encryption = true to refuse this)"
            );
        }
    }
    Ok(())
}

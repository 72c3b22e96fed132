//! The keys that seal card data at rest: `switchboard keygen` writes a key
//! file, and the commands that open a store install the configured keys
//! first (`switchboard::vault`).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use switchboard::config::Config;
use switchboard::vault::{self, KeySource, Vault};
use tracing::{info, warn};

#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// The key file to write (mode 0600); an existing file is never replaced.
    #[arg(long)]
    out: PathBuf,
}

pub fn keygen(args: KeygenArgs) -> anyhow::Result<ExitCode> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&args.out).with_context(|| {
        format!(
            "creating {} (an existing key file is never replaced: keys lost are data lost)",
            args.out.display()
        )
    })?;
    file.write_all(Vault::generate().as_bytes())?;
    file.sync_all()?;
    println!(
        "wrote {}: one data key (id 1) and an HMAC key. Name it in the config as\n\
         [security]\ndata_key_file = \"{}\"\nand keep it out of the store's backups.",
        args.out.display(),
        args.out.display()
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

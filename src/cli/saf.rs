//! `switchboard saf list --config FILE`: the store-and-forward queue, for
//! operators: what is pending, what was delivered, and what was given up on.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use iso8583::codec::parse;
use iso8583::fields::num;
use iso8583::mask::mask_pan;
use iso8583::spec::Spec;
use switchboard::config::Config;
use switchboard::store::SafState;

#[derive(Args, Debug)]
pub struct SafArgs {
    #[command(subcommand)]
    command: SafCommand,
}

#[derive(Subcommand, Debug)]
enum SafCommand {
    /// List the queue's entries (all, or only pending / dead ones).
    List {
        /// The switch's configuration file (for the store's location).
        #[arg(long)]
        config: PathBuf,
        /// Only entries in this state: pending, done or dead.
        #[arg(long)]
        state: Option<String>,
        /// One JSON object per entry.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: SafArgs) -> anyhow::Result<ExitCode> {
    let SafCommand::List {
        config,
        state,
        json,
    } = args.command;
    let config = Config::load(&config)?;
    super::keys::install(&config)?;
    let wanted = match state.as_deref() {
        None => None,
        Some(s) => Some(
            SafState::parse(s)
                .ok_or_else(|| anyhow::anyhow!("--state must be pending, done or dead"))?,
        ),
    };
    let spec = Spec::load(&config.spec)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let entries = runtime.block_on(async {
        let store = switchboard::service::open_store(&config.store).await?;
        store.saf_entries().await
    })?;
    let mut dead = 0;
    for e in entries
        .iter()
        .filter(|e| wanted.is_none_or(|w| e.state == w))
    {
        if e.state == SafState::Dead {
            dead += 1;
        }
        let msg = parse(&spec, e.entry.message.clone()).ok();
        let field = |n| {
            msg.as_ref()
                .and_then(|m| m.get_str(n))
                .unwrap_or("-")
                .to_string()
        };
        let pan = mask_pan(&field(num::PAN));
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "id": e.id, "state": e.state.as_str(), "kind": e.entry.kind.as_str(),
                    "bank": e.entry.bank, "freeze": e.entry.order_key, "attempts": e.attempts,
                    "mti": msg.as_ref().map(|m| m.mti_str().to_string()), "stan": field(num::STAN),
                    "pan": pan, "amount_minor": field(num::AMOUNT),
                    "last_result": e.last_result, "created_at_ms": e.entry.created_at_ms,
                })
            );
        } else {
            println!(
                "{:>6}  {:<8} {:<9} bank {:<11} freeze {}  STAN {}  card {}  amount {}  attempts {}  {}",
                e.id,
                e.state.as_str(),
                e.entry.kind.as_str(),
                e.entry.bank,
                e.entry.order_key,
                field(num::STAN),
                pan,
                field(num::AMOUNT),
                e.attempts,
                e.last_result.as_deref().unwrap_or("")
            );
        }
    }
    // Dead entries need a person: say so in the exit status too.
    Ok(if dead > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

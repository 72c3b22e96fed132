//! `banksim`: a bank host simulator speaking the switchboard dialect.
//!
//! ```text
//! banksim --listen 127.0.0.1:9101 --institution 01020000 \
//!         [--framing ascii4] [--bin 622202 --accounts 1000 --balance 100000 --seed 1 \
//!          | --accounts-file FILE] [--admin 127.0.0.1:9102] [--print-accounts] \
//!         [--faults "latency=uniform:1:20,drop=0.01,late=0.01:6000,seed=7"] \
//!         [--capture FILE] [--mac-key HEX [--mac x9.19|aes-cmac] [--mac-covers LIST]
//!          [--mac-kek HEX --key-change-every SECS]]
//! ```
//!
//! `--mac-key` makes the link require MACs (field 128): a request whose
//! message may carry one must carry a valid one, or it is answered with A0
//! and changes nothing; every answer that may carry one is signed. The key
//! is shown only by its check value; `BANKSIM_MAC_KEY` in the environment
//! keeps it off the command line. `--mac-covers` gives the fields covered
//! instead of the whole message (`0,2,3,4,7,11`, 0 for the MTI), as the
//! switch's `covered`. With `--mac-kek` (or `BANKSIM_MAC_KEK`) and
//! `--key-change-every`, the bank sends the switch a new working key under
//! that key-encrypting key every so many seconds.
//!
//! `--capture FILE` records every frame of the ISO 8583 port, read and sent,
//! as a pcapng file (`switchboard capture decode FILE` reads it back); see
//! `capture::record`. Card numbers are masked in it unless `--capture-mask
//! false` is given.
//!
//! `--faults` makes the bank slow, silent or broken on purpose (see
//! `simulators::faults` for the compact form); the admin port's
//! `faults SPEC` command changes them while it runs.
//!
//! The bank logic and the servers are `switchboard::sim`; this is only the
//! command line around them. Logs go to stderr with card numbers masked;
//! `--print-accounts` writes the accounts (full card numbers: they are the test
//! data a wallet simulator needs) to stdout as `pan,balance_minor` lines.

// Many small short-lived allocations per message: mimalloc beats glibc's malloc here.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use clap::Parser;
use iso8583::fields::{luhn_valid, num};
use iso8583::framing::FramingConfig;
use iso8583::mac::{Coverage, KeyEncryptingKey, MacAlgorithm, MacKey};
use iso8583::mask::Masked;
use simulators::faults::{FaultControl, Faults};
use simulators::{serve_admin, serve_bank_with, Bank, LinkOptions};
use switchboard::dialect::InstitutionId;
use switchboard::mac::LinkMac;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The command line as typed.
#[derive(Debug, Parser)]
#[command(
    name = "banksim",
    version,
    about = "A bank host simulator: holds, debits, credits, unfreezes and reversals over ISO 8583"
)]
struct Args {
    /// Address of the ISO 8583 port, e.g. 127.0.0.1:9101.
    #[arg(long)]
    listen: String,
    /// The bank's institution id (1 to 11 digits), e.g. 01020000.
    #[arg(long)]
    institution: String,
    /// Framing: ascii4, binary2, bcd2 or binary4, optionally +cups or +header:N.
    #[arg(long, default_value = "ascii4")]
    framing: String,
    /// BIN the generated card numbers start with.
    #[arg(long, default_value = "622202")]
    bin: String,
    /// How many accounts to generate.
    #[arg(long, default_value_t = 1000)]
    accounts: usize,
    /// Opening balance of every generated account, in minor units.
    #[arg(long, default_value_t = 100_000)]
    balance: i64,
    /// Seed of the generated card numbers: the same seed gives the same cards.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Accounts from a CSV file of `pan,balance_minor` lines instead of generated
    /// ones (a header line, blank lines and `#` comments are skipped).
    #[arg(long, conflicts_with_all = ["bin", "accounts", "balance", "seed"])]
    accounts_file: Option<PathBuf>,
    /// Address of the admin port: send `snapshot`, `journal`, `faults [SPEC]`
    /// or `injected` lines, get JSON.
    #[arg(long)]
    admin: Option<String>,
    /// Faults to inject, e.g. "latency=uniform:1:20,silent=0.01,drop=0.01,
    /// late=0.01:6000,dup=0.02,garbage=0.005,decline=0.01:96,seed=7". Keys:
    /// latency (fixed:MS, uniform:MIN:MAX, exp:MEAN), silent, lost, late (P:MS),
    /// drop (= drop_after), drop_before, drop_after, dup, garbage,
    /// decline (P, or P:CODE), network (true: 0800 too), seed.
    #[arg(long, default_value = "none")]
    faults: String,
    /// Print the accounts to stdout (`pan,balance_minor`) before serving.
    #[arg(long)]
    print_accounts: bool,
    /// Record every frame read and sent on the ISO 8583 port to this pcapng
    /// file (created or truncated; flushed on shutdown). Frames that find the
    /// writer's queue full are dropped from the file and counted, never waited for.
    #[arg(long)]
    capture: Option<PathBuf>,
    /// Mask card numbers in the --capture file (first 6 and last 4 digits
    /// kept, the rest written 0, lengths kept so it decodes as before);
    /// `--capture-mask false` records them in full, for debugging.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, requires = "capture")]
    capture_mask: bool,
    /// Require and sign MACs (field 128) on the ISO 8583 port with this key,
    /// in hex: 32 digits for x9.19, 32, 48 or 64 for aes-cmac. Read from
    /// BANKSIM_MAC_KEY when that is set instead.
    #[arg(long, hide_env_values = true, env = "BANKSIM_MAC_KEY")]
    mac_key: Option<String>,
    /// The MAC algorithm of --mac-key: x9.19 (ANSI X9.19 retail MAC) or aes-cmac.
    #[arg(long, default_value = "x9.19", requires = "mac_key")]
    mac: String,
    /// The bytes MACs cover: `message` (MTI through the last field before
    /// 128) or field numbers, `0,2,3,4,7,11` (0 = the MTI).
    #[arg(long, default_value = "message", requires = "mac_key")]
    mac_covers: String,
    /// The key-encrypting key new working keys are sent under, in hex (a
    /// triple-DES key for x9.19, an AES key for aes-cmac). Read from
    /// BANKSIM_MAC_KEK when that is set instead.
    #[arg(
        long,
        hide_env_values = true,
        env = "BANKSIM_MAC_KEK",
        requires = "mac_key"
    )]
    mac_kek: Option<String>,
    /// Send the switch a new working key every so many seconds (needs --mac-kek).
    #[arg(long, requires = "mac_kek")]
    key_change_every: Option<u64>,
}

/// Where the accounts come from.
enum Accounts {
    Generated {
        bin: String,
        count: usize,
        balance_minor: i64,
        seed: u64,
    },
    File(Vec<(String, i64)>),
}

/// The command line checked and turned into what the simulator runs with.
struct Config {
    listen: String,
    institution: InstitutionId,
    framing: FramingConfig,
    accounts: Accounts,
    admin: Option<String>,
    print_accounts: bool,
    faults: Faults,
    capture: Option<PathBuf>,
    capture_mask: bool,
    mac: Option<Arc<LinkMac>>,
    key_change_every: Option<std::time::Duration>,
}

impl Config {
    fn from_args(args: Args) -> anyhow::Result<Config> {
        let institution = InstitutionId::from_field(num::RECEIVER, args.institution.as_bytes())
            .map_err(|e| anyhow::anyhow!("--institution {:?}: {}", args.institution, e.reason))?;
        let framing: FramingConfig = args
            .framing
            .parse()
            .with_context(|| format!("--framing {:?}", args.framing))?;
        let faults: Faults = args
            .faults
            .parse()
            .with_context(|| format!("--faults {:?}", args.faults))?;
        let accounts = match &args.accounts_file {
            Some(path) => Accounts::File(read_accounts(path)?),
            None => {
                if args.bin.is_empty()
                    || args.bin.len() > 12
                    || !args.bin.bytes().all(|b| b.is_ascii_digit())
                {
                    bail!("--bin {:?}: a BIN is 1 to 12 digits", args.bin);
                }
                Accounts::Generated {
                    bin: args.bin,
                    count: args.accounts,
                    balance_minor: args.balance,
                    seed: args.seed,
                }
            }
        };
        let mac = match &args.mac_key {
            Some(hex) => {
                let algorithm: MacAlgorithm = args
                    .mac
                    .parse()
                    .with_context(|| format!("--mac {:?}", args.mac))?;
                let key = MacKey::from_hex(algorithm, hex.trim()).context("--mac-key")?;
                let covered: Coverage = args
                    .mac_covers
                    .parse()
                    .with_context(|| format!("--mac-covers {:?}", args.mac_covers))?;
                let kek = args
                    .mac_kek
                    .as_deref()
                    .map(|hex| KeyEncryptingKey::from_hex(algorithm, hex.trim()))
                    .transpose()
                    .context("--mac-kek")?;
                Some(Arc::new(LinkMac::new(key, covered, kek)))
            }
            None => None,
        };
        Ok(Config {
            listen: args.listen,
            institution,
            framing,
            accounts,
            admin: args.admin,
            print_accounts: args.print_accounts,
            faults,
            capture: args.capture,
            capture_mask: args.capture_mask,
            mac,
            key_change_every: args
                .key_change_every
                .map(|s| std::time::Duration::from_secs(s.max(1))),
        })
    }

    fn bank(&self) -> Bank {
        let id = self.institution.as_str();
        match &self.accounts {
            Accounts::Generated {
                bin,
                count,
                balance_minor,
                seed,
            } => Bank::generate(id, bin, *count, *balance_minor, *seed),
            Accounts::File(accounts) => {
                let mut bank = Bank::new(id);
                for (pan, balance) in accounts {
                    bank.add_account(pan, *balance);
                }
                bank
            }
        }
    }
}

/// Reads `pan,balance_minor` lines; every card must pass Luhn (the dialect
/// rejects any other before the bank sees it).
fn read_accounts(path: &Path) -> anyhow::Result<Vec<(String, i64)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--accounts-file {}", path.display()))?;
    let mut accounts = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let at = || format!("{} line {}", path.display(), i + 1);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((pan, balance)) = line.split_once(',') else {
            bail!("{}: expected pan,balance_minor", at());
        };
        let (pan, balance) = (pan.trim(), balance.trim());
        if i == 0 && !pan.bytes().all(|b| b.is_ascii_digit()) {
            continue; // a header line
        }
        if !(2..=19).contains(&pan.len()) || !luhn_valid(pan.as_bytes()) {
            bail!(
                "{}: card {} is not 2 to 19 digits passing the Luhn check",
                at(),
                Masked(pan)
            );
        }
        let balance: i64 = balance
            .parse()
            .with_context(|| format!("{}: balance {balance:?} is not an integer", at()))?;
        accounts.push((pan.to_string(), balance));
    }
    Ok(accounts)
}

/// `banksim export --admin ADDR --date YYYY-MM-DD`: a running banksim's
/// clearing file for a settlement date (specs/clearing.md), on stdout.
#[derive(Debug, Parser)]
#[command(name = "banksim export")]
struct ExportArgs {
    /// The admin port of the running banksim.
    #[arg(long)]
    admin: String,
    /// The settlement date, YYYY-MM-DD.
    #[arg(long)]
    date: String,
    /// The scheme's cutoff, HH:MM local time.
    #[arg(long, default_value = "23:00")]
    cutoff: String,
    /// The cutoff's time zone.
    #[arg(long, default_value = "Asia/Shanghai")]
    time_zone: String,
}

async fn export(args: ExportArgs) -> anyhow::Result<()> {
    let date = switchboard::clearing::parse_date(&args.date)
        .with_context(|| format!("--date {:?} is not YYYY-MM-DD", args.date))?;
    let settlement = switchboard::clearing::Settlement::parse(&args.cutoff, &args.time_zone)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let text = simulators::bank_clearing::fetch_export(&args.admin, date, &settlement).await?;
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // As the switch: a bank that stalls on huge pages stalls the switch's
    // requests to it.
    let _ = switchboard::huge_pages::disable_transparent_huge_pages();
    switchboard::logging::init(switchboard::logging::LogFormat::Text, "info");
    if std::env::args().nth(1).as_deref() == Some("export") {
        return export(ExportArgs::parse_from(std::env::args().skip(1))).await;
    }
    let config = Config::from_args(Args::parse())?;
    let bank = config.bank();
    let accounts = bank.accounts();
    if config.print_accounts {
        let mut out = std::io::stdout().lock();
        for (pan, balance) in &accounts {
            writeln!(out, "{pan},{balance}")?;
        }
        out.flush()?;
    }

    let listener = TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("--listen {}", config.listen))?;
    let admin = match &config.admin {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("--admin {addr}"))?,
        ),
        None => None,
    };
    info!(
        listen = %listener.local_addr()?,
        admin = %admin
            .as_ref()
            .and_then(|a| a.local_addr().ok())
            .map_or_else(|| "none".to_string(), |a| a.to_string()),
        institution = %config.institution,
        framing = %config.framing,
        accounts = accounts.len(),
        total_balance_minor = bank.total_balance_minor(),
        faults = %config.faults,
        mac = %config.mac.as_ref().map_or_else(
            || "none".to_string(),
            |mac| format!(
                "{} kcv {} covering {}{}",
                mac.algorithm(),
                mac.kcv(),
                mac.coverage(),
                if mac.has_kek() { ", key changes under a KEK" } else { "" }
            )
        ),
        "banksim: serving"
    );

    let recorder = match &config.capture {
        Some(path) => {
            let recorder = capture::record::Recorder::create(path)
                .with_context(|| format!("--capture {}", path.display()))?;
            Some(if config.capture_mask {
                let spec = bank.spec().clone();
                recorder.masking_card_data(capture::mask::CardMask::new(spec))
            } else {
                warn!("--capture-mask false: the capture holds card numbers in full");
                recorder
            })
        }
        None => None,
    };
    // The handler is in place before anything serves: a Ctrl-C as soon as
    // the ports answer must stop the bank cleanly (capture flushed), not
    // kill it with the signal's default action.
    #[cfg(unix)]
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("installing the Ctrl-C handler")?;
    let bank = Arc::new(Mutex::new(bank));
    let faults = Arc::new(FaultControl::new(config.faults.clone()));
    let shutdown = CancellationToken::new();
    let admin_task = admin.map(|listener| {
        tokio::spawn(serve_admin(
            listener,
            bank.clone(),
            faults.clone(),
            shutdown.clone(),
        ))
    });
    let options = LinkOptions {
        capture: recorder.clone(),
        mac: config.mac.clone(),
        key_change_every: config.key_change_every,
    };
    let server = tokio::spawn(serve_bank_with(
        listener,
        config.framing.clone(),
        bank.clone(),
        faults.clone(),
        options,
        shutdown.clone(),
    ));
    #[cfg(unix)]
    interrupt.recv().await;
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    info!("banksim: shutting down");
    shutdown.cancel();
    let _ = server.await;
    if let Some(task) = admin_task {
        let _ = task.await;
    }
    if let (Some(recorder), Some(path)) = (recorder, &config.capture) {
        // Every connection has ended: this writes what is queued and flushes.
        match recorder.finish() {
            Ok(stats) if stats.dropped > 0 => warn!(
                file = %path.display(),
                packets = stats.written,
                dropped = stats.dropped,
                "banksim: capture written, with packets dropped (the writer fell behind)"
            ),
            Ok(stats) => info!(
                file = %path.display(),
                packets = stats.written,
                dropped = 0,
                "banksim: capture written"
            ),
            Err(e) => warn!(file = %path.display(), error = %e, "banksim: capture not completed"),
        }
    }
    let ledger = bank.lock().unwrap_or_else(|p| p.into_inner()).snapshot();
    info!(
        total_balance_minor = ledger.total_balance_minor,
        total_held_minor = ledger.total_held_minor,
        injected = %serde_json::to_string(&faults.injected())?,
        "banksim: stopped"
    );
    Ok(())
}

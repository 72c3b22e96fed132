//! `switchboard serve --config FILE`: run the switch until SIGINT or SIGTERM;
//! SIGHUP reloads the risk rules file.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tracing::info;

use switchboard::clock::SystemClock;
use switchboard::config::{Config, StoreConfig};
use switchboard::logging::{self, LogFormat};
use switchboard::service;
use switchboard::store::postgres::PostgresStore;
use switchboard::store::sqlite::{SqliteOptions, SqliteStore};
use switchboard::store::Store;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The configuration file (see examples/switchboard.toml).
    #[arg(long)]
    config: PathBuf,
    /// Log lines as `text` (coloured only on a terminal) or `json` (one
    /// object a line, with span fields); overrides `[log] format`.
    #[arg(long, value_name = "text|json")]
    log_format: Option<LogFormat>,
}

/// The signals that stop the switch (SIGTERM, Ctrl-C), listened for from
/// the moment this is made: made before "listening" is printed, so that a
/// signal sent as soon as the switch says it listens stops it cleanly
/// instead of killing it with the signal's default action.
struct StopSignals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn listen() -> anyhow::Result<StopSignals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(StopSignals {
                term: signal(SignalKind::terminate())?,
                interrupt: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(StopSignals {})
    }

    async fn received(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.interrupt.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Reloads the risk rules on every SIGHUP for as long as the switch runs:
/// listened for before "listening" is printed, so a SIGHUP sent then
/// reloads instead of killing the switch. A bad file is refused with the
/// reason in the log, and the rules in force stay.
#[cfg(unix)]
fn reload_rules_on_hangup(
    risk: Arc<switchboard::risk::Risk>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup = signal(SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            match risk.reload() {
                Ok(rules) => info!(rules, "risk rules reloaded"),
                Err(e) => tracing::error!(
                    file = ?risk.path(),
                    at = %e.at,
                    reason = %e.reason,
                    "risk rules file refused; the rules in force stay"
                ),
            }
        }
    }))
}

/// The async runtime `serve` runs on, with as many worker threads as
/// [`Config::worker_threads`] says for this host.
fn runtime_for(config: &Config) -> std::io::Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let tokio_env_set = std::env::var_os("TOKIO_WORKER_THREADS").is_some();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(workers) = config.worker_threads(cores, tokio_env_set) {
        builder.worker_threads(workers);
    }
    let runtime = builder.build()?;
    info!(
        workers = runtime.metrics().num_workers(),
        cores, "runtime worker threads"
    );
    Ok(runtime)
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    logging::init(args.log_format.unwrap_or(config.log_format), "info");
    super::keys::install(&config)?;
    let limit = super::open_files::raise_to_hard_limit()?;
    super::open_files::check(config.descriptors(), limit)?;
    info!(
        limit,
        needed = config.descriptors().total(),
        "open-file limit"
    );
    let runtime = runtime_for(&config)?;
    runtime.block_on(async move {
        let stop = StopSignals::listen()?;
        // The concrete store is kept at hand to report its counters at
        // shutdown (and, for PostgreSQL, to write its journal).
        let opened = match &config.store {
            StoreConfig::Embedded(path) => {
                let options = SqliteOptions {
                    commit_interval: config.commit_interval,
                    commit_interval_above: config.commit_interval_above,
                    commit_delay: config.commit_delay,
                    decision_log: config.decision_log,
                    ..SqliteOptions::default()
                };
                OpenedStore::Embedded(Arc::new(SqliteStore::open_locked_with(
                    path, "serve", options,
                )?))
            }
            StoreConfig::Postgres(url) => {
                OpenedStore::Postgres(Arc::new(PostgresStore::connect(url).await?))
            }
        };
        let store: Arc<dyn Store> = match &opened {
            OpenedStore::Embedded(embedded) => embedded.clone(),
            OpenedStore::Postgres(pg) => pg.clone(),
        };
        info!(store = %config.store, "store opened");
        let banks: Vec<String> = config.banks.iter().map(|b| b.name.clone()).collect();
        let running = service::start(config, store, Arc::new(SystemClock)).await?;
        #[cfg(unix)]
        let reloading = reload_rules_on_hangup(running.switch.risk().clone())?;
        // The line scripts wait for comes once the banks are signed on (or
        // after 5 s without them), so the first requests do not meet a link
        // still signing on; connections are accepted from the start.
        if !running.wait_banks_ready(Duration::from_secs(5)).await {
            tracing::warn!(banks = ?banks, "not every bank is signed on yet; retrying in the background");
        }
        if let Some(addr) = running.admin_addr {
            info!(%addr, "admin listener: /metrics, /health, /ready");
            println!("switchboard admin listening on {addr}");
        }
        for addr in &running.wallet_addrs {
            info!(%addr, "listening for wallets");
            println!("switchboard listening for wallets on {addr}");
        }
        stop.received().await;
        info!("shutting down: finishing requests in flight");
        #[cfg(unix)]
        reloading.abort();
        running.shutdown().await;
        match opened {
            OpenedStore::Postgres(pg) => {
                if let Err(e) = pg.flush().await {
                    tracing::error!(error = %e, "journal not fully written");
                }
                info!(stats = ?pg.stats(), "PostgreSQL store");
            }
            OpenedStore::Embedded(embedded) => info!(stats = ?embedded.stats(), "embedded store"),
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// The store `serve` opened, as itself rather than as `dyn Store`.
enum OpenedStore {
    Embedded(Arc<SqliteStore>),
    Postgres(Arc<PostgresStore>),
}

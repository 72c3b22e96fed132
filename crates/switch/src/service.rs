//! Assembling a running switch from a [`Config`], a store and a clock: bank
//! links, the switch, wallet listeners, and orderly shutdown. Used by
//! `switchboard serve`, `switchboard demo` and the integration tests.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use iso8583::spec::Spec;

use crate::clock::Clock;
use crate::config::{Config, StoreConfig};
use crate::link::{BankLink, LinkContext};
use crate::server::serve_wallets;
use crate::stan::StanSource;
use crate::store::Store;
use crate::switch::{Route, Switch};

/// A switch that is running.
pub struct Running {
    /// Where each wallet listener accepts connections (ports resolved).
    pub wallet_addrs: Vec<SocketAddr>,
    /// Where the admin listener accepts connections, when there is one.
    pub admin_addr: Option<SocketAddr>,
    /// Stops the wallet listeners at shutdown, or earlier when an operator
    /// drains the switch (`POST /api/drain`).
    drain: Drain,
    /// What recovery settled at start.
    pub recovered: crate::switch::recovery::Recovered,
    pub switch: Arc<Switch>,
    pub links: Vec<Arc<BankLink>>,
    wallets: TaskTracker,
    /// Stops the bank links, after the requests that need them are done.
    links_shutdown: CancellationToken,
    link_tasks: TaskTracker,
    /// The `[capture]` file's writer, finished on shutdown.
    recorder: Option<capture::record::Recorder>,
}

/// The switch's drain: stops every wallet listener, so new connections are
/// refused, and closes the connections once the answers to the requests
/// already read are written; `/ready` answers 503 from then on. Used at
/// shutdown and by the admin listener's drain action; there is no undrain
/// (a drained switch is restarted).
#[derive(Clone, Debug)]
pub struct Drain {
    /// Cleared when the drain begins.
    accepting: Arc<AtomicBool>,
    /// Stops the listeners; requests already read still run to their answer.
    wallets_shutdown: CancellationToken,
}

impl Drain {
    fn new() -> Drain {
        Drain {
            accepting: Arc::new(AtomicBool::new(true)),
            wallets_shutdown: CancellationToken::new(),
        }
    }

    /// Begins the drain; false when it had already begun.
    pub fn begin(&self) -> bool {
        let was = self.accepting.swap(false, Ordering::AcqRel);
        self.wallets_shutdown.cancel();
        was
    }

    /// Whether the wallet listeners still accept (no drain has begun).
    pub fn accepting(&self) -> bool {
        self.accepting.load(Ordering::Acquire)
    }
}

/// Starts the bank links and the wallet listeners.
pub async fn start(
    config: Config,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Running> {
    // Read first: a token named but missing stops the start before anything runs.
    let tokens = match &config.admin {
        Some(admin) => crate::admin::auth::Tokens::from_env(
            admin.operator_token_env.as_deref(),
            admin.read_token_env.as_deref(),
        )
        .map_err(|e| anyhow::anyhow!(e))?,
        None => Default::default(),
    };
    let spec = Arc::new(Spec::load(&config.spec)?);
    let recorder = match &config.capture {
        Some(c) => Some(
            capture::record::Recorder::create_rotating(
                &c.path,
                capture::record::Rotation {
                    max_bytes: c.max_bytes,
                    max_files: c.max_files,
                },
            )
            .map_err(|e| anyhow::anyhow!("[capture] path {}: {e}", c.path.display()))
            .map(|recorder| {
                if c.mask_card_data {
                    recorder.masking_card_data(capture::mask::CardMask::new(spec.clone()))
                } else {
                    tracing::warn!(
                        path = %c.path.display(),
                        "[capture] mask_card_data = false: the capture holds card numbers in full"
                    );
                    recorder
                }
            })?,
        ),
        None => None,
    };
    let stans = Arc::new(StanSource::new(store.clone()));
    let links_shutdown = CancellationToken::new();
    let link_tasks = TaskTracker::new();
    let drain = Drain::new();
    let wallets = TaskTracker::new();
    let context = Arc::new(LinkContext {
        spec: spec.clone(),
        switch_id: config.institution_id.clone(),
        clock: clock.clone(),
        stans: stans.clone(),
        store: store.clone(),
        capture: recorder.clone(),
    });
    let mut routes = Vec::new();
    let mut links = Vec::new();
    for bank in &config.banks {
        let link = BankLink::start(
            bank.clone(),
            context.clone(),
            &link_tasks,
            links_shutdown.clone(),
        );
        routes.push(Route {
            bins: bank.bins.clone(),
            link: link.clone() as Arc<dyn crate::link::BankPort>,
        });
        links.push(link);
    }
    let risk = match &config.risk_rules {
        Some(path) => {
            let risk = crate::risk::Risk::load(path)
                .map_err(|e| anyhow::anyhow!("[risk] rules_file {}: {e}", path.display()))?;
            tracing::info!(rules = risk.rules().rules.len(), file = %path.display(), "risk rules in force");
            risk
        }
        None => crate::risk::Risk::none(),
    };
    let maintenance = store.clone().maintenance();
    let retention_clock = clock.clone();
    let alerts = Arc::new(crate::alerts::Alerts::new(
        config.alerts.clone(),
        clock.clone(),
    ));
    for bank in &config.banks {
        alerts.expect(crate::metrics::Side::Bank, bank.institution_id.as_bytes());
    }
    for institution in config.wallets.iter().flat_map(|w| &w.institutions) {
        alerts.expect(crate::metrics::Side::Wallet, &institution.0);
    }
    let switch = Arc::new(
        Switch::new(
            spec,
            config.institution_id.clone(),
            store,
            routes,
            clock,
            stans,
        )
        .with_settlement(config.clearing)
        .with_risk(Arc::new(risk))
        .with_alerts(alerts.clone()),
    );
    // Settle what a crash left in flight before serving anything new. The
    // embedded store has one instance: everything unfinished is a crash's.
    // A shared store may hold live peers' work: this instance takes its lease
    // first, then recovers only instances whose lease has expired (its own
    // earlier life included, once that lease runs out).
    let lease = config.lease_policy();
    let recovered = if lease.shared {
        crate::switch::lease::renew(&switch, config.lease)
            .await
            .map_err(|e| anyhow::anyhow!("cannot take a lease in the store: {e}"))?;
        crate::switch::recovery::take_over_expired(&switch, lease.grace)
            .await
            .map_err(|e| anyhow::anyhow!("recovery failed: {e}"))?
    } else {
        crate::switch::recovery::recover(&switch)
            .await
            .map_err(|e| anyhow::anyhow!("recovery failed: {e}"))?
    };
    link_tasks.spawn(crate::switch::lease::run(
        switch.clone(),
        lease,
        links_shutdown.clone(),
    ));
    link_tasks.spawn(crate::switch::saf::run(
        switch.clone(),
        config.saf.clone(),
        links_shutdown.clone(),
    ));
    link_tasks.spawn(crate::switch::expiry::run(
        switch.clone(),
        config.max_freeze_age,
        Duration::from_secs(60),
        links_shutdown.clone(),
    ));
    link_tasks.spawn(crate::alerts::run(alerts, links_shutdown.clone()));
    match (config.journal_retention_days, maintenance) {
        (Some(days), Some(maintenance)) => {
            link_tasks.spawn(crate::switch::retention::run(
                maintenance,
                config.clearing,
                retention_clock,
                days,
                links_shutdown.clone(),
            ));
        }
        (Some(_), None) => {
            tracing::warn!("[store] journal_retention_days: this store keeps no journal for long")
        }
        (None, _) => {}
    }
    let mut wallet_addrs = Vec::new();
    for wallet in &config.wallets {
        let listener = TcpListener::bind(wallet.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", wallet.listen))?;
        wallet_addrs.push(listener.local_addr()?);
        wallets.spawn(serve_wallets(
            listener,
            wallet.clone(),
            switch.clone(),
            recorder.clone(),
            wallets.clone(),
            drain.wallets_shutdown.clone(),
        ));
    }
    // Started last, so that it never reports a switch not yet listening as
    // ready; it stops with the links, so it reports the drain as not ready.
    let admin_addr = match &config.admin {
        None => None,
        Some(admin) => {
            let listener = TcpListener::bind(admin.listen).await.map_err(|e| {
                anyhow::anyhow!("cannot listen on {} ([admin] listen): {e}", admin.listen)
            })?;
            let addr = listener.local_addr()?;
            let state = Arc::new(crate::admin::Admin {
                switch: switch.clone(),
                links: links.clone(),
                drain: drain.clone(),
                tokens,
                failures: Default::default(),
            });
            link_tasks.spawn(crate::admin::serve(listener, state, links_shutdown.clone()));
            Some(addr)
        }
    };
    Ok(Running {
        wallet_addrs,
        admin_addr,
        drain,
        recovered,
        switch,
        links,
        wallets,
        links_shutdown,
        link_tasks,
        recorder,
    })
}

impl Running {
    /// Waits until every bank has a signed-on connection; false on timeout.
    pub async fn wait_banks_ready(&self, deadline: Duration) -> bool {
        for link in &self.links {
            if !link.wait_ready(deadline).await {
                return false;
            }
        }
        true
    }

    /// Stops accepting, lets in-flight requests finish (bounded by the links'
    /// timeouts), and closes the links.
    pub async fn shutdown(self) {
        self.drain.begin();
        self.wallets.close();
        let _ = tokio::time::timeout(Duration::from_secs(30), self.wallets.wait()).await;
        self.links_shutdown.cancel();
        self.link_tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.link_tasks.wait()).await;
        if let Some(recorder) = self.recorder {
            // Every connection has ended: this writes what is queued and flushes.
            match tokio::task::spawn_blocking(move || recorder.finish()).await {
                Ok(Ok(stats)) if stats.dropped > 0 => tracing::warn!(
                    packets = stats.written,
                    dropped = stats.dropped,
                    "capture written, with packets dropped (the writer fell behind)"
                ),
                Ok(Ok(stats)) => tracing::info!(packets = stats.written, "capture written"),
                Ok(Err(e)) => tracing::warn!(error = %e, "capture not completed"),
                Err(e) => tracing::warn!(error = %e, "capture writer lost"),
            }
        }
    }
}

/// Opens the configured store (migrating its schema) inside the current tokio
/// runtime.
pub async fn open_store(config: &StoreConfig) -> crate::store::StoreResult<Arc<dyn Store>> {
    Ok(match config {
        StoreConfig::Embedded(path) => Arc::new(crate::store::sqlite::SqliteStore::open(path)?),
        StoreConfig::Postgres(url) => {
            Arc::new(crate::store::postgres::PostgresStore::connect(url).await?)
        }
    })
}

/// Opens the configured store for a process that must not share an
/// embedded store with another (`serve`, `recover`, `migrate`, `clear`,
/// `rekey`): the
/// file's lock is taken for `purpose` or [`crate::store::StoreError::InUse`]
/// says who holds it. PostgreSQL is opened as by [`open_store`]: there
/// instances share the database and leases say who does what.
pub async fn open_store_locked(
    config: &StoreConfig,
    purpose: &str,
) -> crate::store::StoreResult<Arc<dyn Store>> {
    Ok(match config {
        StoreConfig::Embedded(path) => Arc::new(crate::store::sqlite::SqliteStore::open_locked(
            path, purpose,
        )?),
        StoreConfig::Postgres(url) => {
            Arc::new(crate::store::postgres::PostgresStore::connect(url).await?)
        }
    })
}

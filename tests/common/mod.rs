//! A switch with two simulated banks on loopback, as the end-to-end tests use it.

#![allow(dead_code)]

pub mod ca;
pub mod card_scan;
pub mod haproxy;
pub mod http;
pub mod pg;
pub mod process;
pub mod stored;

use std::sync::Arc;
use std::time::Duration;

use iso8583::framing::FramingConfig;
use simulators::bank::Bank;
use simulators::bank_server::{spawn_bank, BankHandle};
use simulators::scenarios::{BankView, World};
use switchboard::clock::{Clock, ShiftedClock};
use switchboard::config::{BankConfig, BinRange, Config, StoreConfig, WalletListener};
use switchboard::dialect::InstitutionId;
use switchboard::service::{self, Running};
use switchboard::store::Store;

pub const SWITCH_ID: &str = "00010000";
pub const WALLET_ID: &str = "01020000";
pub const BANK_A: &str = "48020000";
pub const BANK_B: &str = "01050000";

pub struct Harness {
    pub running: Running,
    pub bank_a: BankHandle,
    pub bank_b: BankHandle,
    pub world: World,
    pub store: Arc<dyn Store>,
    pub clock: Arc<ShiftedClock>,
    pub dir: tempfile::TempDir,
    /// The store's database, on PostgreSQL.
    pub postgres_url: Option<String>,
}

pub fn bank_config(
    id: &str,
    bin: &str,
    addr: std::net::SocketAddr,
    timeout: Duration,
) -> BankConfig {
    BankConfig {
        institution_id: id.into(),
        name: format!("bank {id}"),
        bins: vec![BinRange::parse(bin).unwrap()],
        hosts: vec![addr],
        framing: FramingConfig::default(),
        connections: 2,
        timeout,
        echo_interval: Duration::from_secs(30),
        max_in_flight: 4096,
        tls: None,
        mac: None,
    }
}

pub fn config(dir: &std::path::Path, banks: Vec<BankConfig>) -> Config {
    Config {
        institution_id: SWITCH_ID.into(),
        spec: "switchboard".into(),
        store: StoreConfig::Embedded(dir.join("switchboard.db")),
        wallets: vec![WalletListener {
            listen: "127.0.0.1:0".parse().unwrap(),
            framing: FramingConfig::default(),
            institutions: vec![InstitutionId::from_field(32, WALLET_ID.as_bytes()).unwrap()],
            partners: Vec::new(),
            max_connections: 1024,
            frame_timeout: WalletListener::DEFAULT_FRAME_TIMEOUT,
            idle_timeout: Some(WalletListener::DEFAULT_IDLE_TIMEOUT),
            max_in_flight: WalletListener::DEFAULT_MAX_IN_FLIGHT,
            max_per_address: None,
            tls: None,
            mac: None,
        }],
        banks,
        saf: Default::default(),
        lease: Duration::from_secs(10),
        journal_retention_days: None,
        commit_interval: switchboard::store::sqlite::DEFAULT_COMMIT_INTERVAL,
        commit_interval_above: switchboard::store::sqlite::DEFAULT_COMMIT_INTERVAL_ABOVE,
        commit_delay: switchboard::store::sqlite::DEFAULT_COMMIT_DELAY,
        decision_log: true,
        max_freeze_age: Duration::from_secs(7 * 24 * 3600),
        configured_worker_threads: None,
        clearing: Default::default(),
        capture: None,
        security: Default::default(),
        admin: None,
        log_format: Default::default(),
        risk_rules: None,
        alerts: Default::default(),
    }
}

/// The store a test switch runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The embedded store, in the harness's temporary directory.
    Embedded,
    /// A fresh database of the tests' PostgreSQL (see `pg.rs`).
    Postgres,
}

/// Starts two banks (A: BIN 622202, B: BIN 621700) and a switch on a fresh
/// embedded store.
pub async fn start() -> Harness {
    start_with(Backend::Embedded).await
}

/// Like [`start`], on the given store.
pub async fn start_with(backend: Backend) -> Harness {
    start_recording(backend, None).await
}

/// Bank A's books at the start of every test: the same cards and balances
/// each time.
pub fn books_a() -> Bank {
    Bank::generate(BANK_A, "622202", 12, 1_000_000, 1)
}

/// Bank B's, as [`books_a`].
pub fn books_b() -> Bank {
    Bank::generate(BANK_B, "621700", 12, 1_000_000, 2)
}

/// Like [`start_with`], the switch recording its links as `[capture]` says.
pub async fn start_recording(
    backend: Backend,
    capture: Option<switchboard::config::CaptureConfig>,
) -> Harness {
    start_configured(backend, |config| config.capture = capture).await
}

/// Like [`start_with`], with the switch's configuration changed by `edit`
/// before it starts (TLS on its listener or links, say); the banks already
/// listen at the addresses `config.banks` name.
pub async fn start_configured(backend: Backend, edit: impl FnOnce(&mut Config)) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (books_a(), books_b());
    let cards_a: Vec<String> = a.accounts().into_iter().map(|(p, _)| p).collect();
    let cards_b: Vec<String> = b.accounts().into_iter().map(|(p, _)| p).collect();
    let bank_a = spawn_bank(a, FramingConfig::default()).await.unwrap();
    let bank_b = spawn_bank(b, FramingConfig::default()).await.unwrap();
    let mut config = config(
        dir.path(),
        vec![
            bank_config(BANK_A, "622202", bank_a.addr, Duration::from_secs(5)),
            bank_config(BANK_B, "621700", bank_b.addr, Duration::from_secs(5)),
        ],
    );
    if backend == Backend::Postgres {
        config.store = StoreConfig::Postgres(pg::database().await);
    }
    edit(&mut config);
    let postgres_url = match &config.store {
        StoreConfig::Postgres(url) => Some(url.clone()),
        StoreConfig::Embedded(_) => None,
    };
    let clock = Arc::new(ShiftedClock::new());
    let store: Arc<dyn Store> = switchboard::service::open_store(&config.store)
        .await
        .unwrap();
    let running = service::start(config, store.clone(), clock.clone())
        .await
        .unwrap();
    assert!(
        running.wait_banks_ready(Duration::from_secs(5)).await,
        "banks signed on"
    );
    let world = World {
        switch_addr: running.wallet_addrs[0],
        framing: FramingConfig::default(),
        institution: WALLET_ID.into(),
        bank_a: BankView::Local(bank_a.bank.clone()),
        bank_b: BankView::Local(bank_b.bank.clone()),
        cards_a,
        cards_b,
        clock: clock.clone() as Arc<dyn Clock>,
        movable_clock: Some(clock.clone()),
        store: Some(store.clone()),
        records: None,
        mac: None,
    };
    Harness {
        running,
        bank_a,
        bank_b,
        world,
        store,
        clock,
        dir,
        postgres_url,
    }
}

/// Fails the test with the scenario's story when an invariant did not hold.
pub fn assert_passed(report: &simulators::scenarios::Report) {
    assert!(!report.skipped, "{} skipped", report.name);
    assert!(
        report.passed(),
        "{}\n{}\nfailures:\n{}",
        report.name,
        report.lines.join("\n"),
        report.failures.join("\n")
    );
}

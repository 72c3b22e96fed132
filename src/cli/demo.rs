//! `switchboard demo`: the switch on an embedded store in a temporary
//! directory, two bank simulators, every red-packet scenario, and the money
//! invariants checked against the banks' ledgers. Exit status 1 if any fails.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use iso8583::framing::FramingConfig;
use iso8583::mask::mask_pan;
use simulators::bank::{Bank, Ledger};
use simulators::bank_server::spawn_bank;
use simulators::scenarios::{self, BankView, World};
use switchboard::clock::{Clock, ShiftedClock};
use switchboard::config::{BankConfig, BinRange, Config, StoreConfig, WalletListener};
use switchboard::dialect::InstitutionId;
use switchboard::service;
use switchboard::store::sqlite::SqliteStore;
use switchboard::store::Store;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Keep the store's directory and print its path.
    #[arg(long)]
    keep: bool,
}

const SWITCH_ID: &str = "00010000";
const WALLET_ID: &str = "01020000";
const BANK_A: (&str, &str, &str) = ("48020000", "622202", "Bank A");
const BANK_B: (&str, &str, &str) = ("01050000", "621700", "Bank B");
const OPENING_BALANCE: i64 = 1_000_000;

/// The rule of the mule scenario: a card collects from at most this many
/// distinct packets in ten minutes. Above what any other scenario gives
/// one card (bank B's first card collects from five packets).
const MULE_RULE: &str = "mule-receiver-packets";
const MULE_PACKETS: usize = 6;

/// The demo's risk rules file: the mule rule alone.
fn mule_rules() -> String {
    format!(
        "# A receiver card collects from at most {MULE_PACKETS} distinct packets in 10 minutes:\n\
         # more is a mule's pattern (many payers, one card), declined 65.\n\
         [[rules]]\n\
         id = \"{MULE_RULE}\"\n\
         kind = \"velocity\"\n\
         mode = \"enforce\"\n\
         request = \"receive\"\n\
         count = \"packets\"\n\
         max_count = {MULE_PACKETS}\n\
         window_seconds = 600\n"
    )
}

fn yuan(minor: i64) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", minor.abs() / 100, minor.abs() % 100)
}

fn print_books(title: &str, a: &Ledger, b: &Ledger) {
    println!("{title}");
    for (name, ledger) in [(BANK_A.2, a), (BANK_B.2, b)] {
        let open_holds = ledger
            .holds
            .iter()
            .filter(|h| h.hold.remaining_minor > 0)
            .count();
        println!(
            "  {name} ({}): {} accounts, balances {}, held {} in {} open holds",
            ledger.institution,
            ledger.accounts.len(),
            yuan(ledger.total_balance_minor),
            yuan(ledger.total_held_minor),
            open_holds
        );
    }
}

fn bank_config(id: &str, bin: &str, name: &str, addr: std::net::SocketAddr) -> BankConfig {
    BankConfig {
        institution_id: id.into(),
        name: name.into(),
        bins: vec![BinRange::parse(bin).expect("demo BIN")],
        hosts: vec![addr],
        framing: FramingConfig::default(),
        connections: 2,
        timeout: Duration::from_secs(5),
        echo_interval: Duration::from_secs(30),
        max_in_flight: 4096,
        tls: None,
        mac: None,
    }
}

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(demo(args))
}

async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let dir = tempfile::Builder::new()
        .prefix("switchboard-demo-")
        .tempdir()?;
    let bank_a = Bank::generate(BANK_A.0, BANK_A.1, 12, OPENING_BALANCE, 1);
    let bank_b = Bank::generate(BANK_B.0, BANK_B.1, 12, OPENING_BALANCE, 2);
    let cards_a: Vec<String> = bank_a.accounts().into_iter().map(|(p, _)| p).collect();
    let cards_b: Vec<String> = bank_b.accounts().into_iter().map(|(p, _)| p).collect();
    let a = spawn_bank(bank_a, FramingConfig::default()).await?;
    let b = spawn_bank(bank_b, FramingConfig::default()).await?;

    let store_path = dir.path().join("switchboard.db");
    let rules_path = dir.path().join("risk.toml");
    std::fs::write(&rules_path, mule_rules())?;
    let config = Config {
        institution_id: SWITCH_ID.into(),
        spec: "switchboard".into(),
        store: StoreConfig::Embedded(store_path.clone()),
        wallets: vec![WalletListener {
            listen: "127.0.0.1:0".parse()?,
            framing: FramingConfig::default(),
            institutions: vec![InstitutionId::from_field(32, WALLET_ID.as_bytes())?],
            partners: Vec::new(),
            max_connections: 256,
            frame_timeout: WalletListener::DEFAULT_FRAME_TIMEOUT,
            idle_timeout: Some(WalletListener::DEFAULT_IDLE_TIMEOUT),
            max_in_flight: WalletListener::DEFAULT_MAX_IN_FLIGHT,
            max_per_address: None,
            tls: None,
            mac: None,
        }],
        banks: vec![
            bank_config(BANK_A.0, BANK_A.1, BANK_A.2, a.addr),
            bank_config(BANK_B.0, BANK_B.1, BANK_B.2, b.addr),
        ],
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
        risk_rules: Some(rules_path.clone()),
        alerts: Default::default(),
    };
    let clock = Arc::new(ShiftedClock::new());
    // Opened as `serve` opens it: with its lock, hence its decision log.
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_locked(&store_path, "demo")?);
    let running = service::start(config, store.clone(), clock.clone()).await?;
    if !running.wait_banks_ready(Duration::from_secs(5)).await {
        anyhow::bail!("the bank simulators did not accept the switch's sign-on");
    }
    let switch_addr = running.wallet_addrs[0];
    println!("switchboard demo");
    println!(
        "  switch {SWITCH_ID} listening on {switch_addr}, store {}",
        store_path.display()
    );
    println!(
        "  {} {} at {} (cards {}…), {} {} at {} (cards {}…)",
        BANK_A.2, BANK_A.0, a.addr, BANK_A.1, BANK_B.2, BANK_B.0, b.addr, BANK_B.1
    );
    println!(
        "  wallet {WALLET_ID}; every card opens with {}",
        yuan(OPENING_BALANCE)
    );
    println!(
        "  sample cards: {} {}",
        mask_pan(&cards_a[0]),
        mask_pan(&cards_b[0])
    );
    println!(
        "  risk rules {}: {MULE_RULE} (a card collects from at most {MULE_PACKETS} packets in 10 minutes)",
        rules_path.display()
    );
    let before = (a.snapshot(), b.snapshot());
    print_books("\nbooks before", &before.0, &before.1);

    let world = World {
        switch_addr,
        framing: FramingConfig::default(),
        institution: WALLET_ID.into(),
        bank_a: BankView::Local(a.bank.clone()),
        bank_b: BankView::Local(b.bank.clone()),
        cards_a,
        cards_b,
        clock: clock.clone() as Arc<dyn Clock>,
        movable_clock: Some(clock.clone()),
        store: Some(store.clone()),
        records: None,
        mac: None,
    };
    let mut reports = scenarios::run_all(&world).await;
    // Nine payers at bank A, one receiver at bank B that no other scenario uses.
    let mule_card = world.cards_b[world.cards_b.len() - 1].clone();
    let payers = world.cards_a[3..].to_vec();
    reports.push(scenarios::mule(&world, &mule_card, &payers, MULE_PACKETS).await);
    println!();
    let mut failed = 0;
    for report in &reports {
        let mark = if report.skipped {
            "-"
        } else if report.passed() {
            "ok"
        } else {
            failed += 1;
            "FAILED"
        };
        println!("[{mark}] {}", report.name);
        for line in &report.lines {
            println!("       {line}");
        }
        for failure in &report.failures {
            println!("       !! {failure}");
        }
    }

    print_hits(&*store, &running, &*clock).await;

    // Across the whole run: money is conserved, every hold is back to zero,
    // and the switch has no saga left unfinished.
    let after = (a.snapshot(), b.snapshot());
    print_books("\nbooks after", &after.0, &after.1);
    let mut global = Vec::new();
    let total_before = before.0.total_balance_minor + before.1.total_balance_minor;
    let total_after = after.0.total_balance_minor + after.1.total_balance_minor;
    if total_before != total_after {
        global.push(format!(
            "money not conserved: {} before, {} after",
            yuan(total_before),
            yuan(total_after)
        ));
    }
    let held = after.0.total_held_minor + after.1.total_held_minor;
    if held != 0 {
        global.push(format!(
            "{} still held after every packet was unfrozen",
            yuan(held)
        ));
    }
    match store.sagas().await {
        Ok(sagas) => {
            let open = sagas.iter().filter(|s| !s.state.is_final()).count();
            let approved: u64 = sagas
                .iter()
                .filter(|s| s.state == switchboard::store::SagaState::Approved)
                .map(|s| s.amount_minor)
                .sum();
            println!(
                "  switch: {} receive sagas, {} approved for {}, {} unfinished",
                sagas.len(),
                sagas
                    .iter()
                    .filter(|s| s.state == switchboard::store::SagaState::Approved)
                    .count(),
                yuan(approved as i64),
                open
            );
            if open > 0 {
                global.push(format!("{open} sagas unfinished"));
            }
        }
        Err(e) => global.push(e.to_string()),
    }
    println!();
    for g in &global {
        println!("!! {g}");
    }
    running.shutdown().await;
    a.stop().await;
    b.stop().await;
    if args.keep {
        let kept = dir.keep();
        println!("store kept in {}", kept.display());
    }
    if failed == 0 && global.is_empty() {
        println!(
            "all {} scenarios passed; money invariants hold",
            reports.iter().filter(|r| !r.skipped).count()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{failed} scenarios failed");
        Ok(ExitCode::FAILURE)
    }
}

/// The day's risk rule hits, as `switchboard risk report` prints them.
async fn print_hits(store: &dyn Store, running: &service::Running, clock: &dyn Clock) {
    let day = running
        .switch
        .settlement()
        .date_of_ms(clock.now_ms())
        .format("%Y-%m-%d")
        .to_string();
    println!("\nrisk rule hits on settlement date {day} (switchboard risk report --date {day}):");
    match store.hits_of_day(&day).await {
        Ok(lines) if lines.is_empty() => println!("  none"),
        Ok(lines) => {
            for line in super::risk::table(&lines) {
                println!("  {line}");
            }
        }
        Err(e) => println!("  !! {e}"),
    }
}

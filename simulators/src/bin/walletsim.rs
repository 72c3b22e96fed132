//! walletsim: a wallet talking to a switch. `scenarios` plays every red-packet
//! scenario and checks the money invariants against the banks' admin ports;
//! `load` drives open-loop receive load (or credits straight to a bank, the
//! one-hop floor) and reports throughput and latency percentiles, and with
//! `--report FILE.svg` draws them second by second. With
//! `--record FILE` the wallet keeps its own records of every exchange, and
//! `export` turns them into its clearing file for a settlement day, to
//! reconcile with the switch's (`switchboard reconcile`).
//! `--mac-key` signs every request and checks every answer (field 128), for
//! a switch whose wallet listener has `mac`.

// Many small short-lived allocations per message: mimalloc beats glibc's malloc here.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use iso8583::framing::FramingConfig;
use iso8583::mac::{Coverage, MacAlgorithm, MacKey};
use iso8583::response::ResponseCode;
use simulators::load::{self, LoadConfig, LoadKind};
use simulators::resending::{Patience, ResendingWallet};
use simulators::scenarios::{self, BankView, World};
use simulators::wallet::{code, WalletRecords};
use switchboard::clock::{Clock, SystemClock};
use switchboard::dialect::FreezeKey;
use switchboard::mac::LinkMac;

#[derive(Parser)]
#[command(
    name = "walletsim",
    version,
    about = "A wallet for switchboard: scenarios and load"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Play every red-packet scenario against a switch and check the invariants.
    Scenarios(ScenarioArgs),
    /// Open-loop load: receives through the switch, or credits straight to a bank.
    Load(LoadArgs),
    /// The wallet's clearing file for a settlement day, from its records.
    Export(ExportArgs),
}

#[derive(Args)]
struct ExportArgs {
    /// The records file written with `--record`.
    #[arg(long)]
    records: PathBuf,
    /// Settlement date, YYYY-MM-DD.
    #[arg(long)]
    date: String,
    /// The wallet's institution id (F32).
    #[arg(long, default_value = "01020000")]
    institution: String,
    /// The switch's institution id.
    #[arg(long, default_value = "00010000")]
    switch_id: String,
    /// The scheme's cutoff, HH:MM, and its time zone (as the switch's `[clearing]`).
    #[arg(long, default_value = "23:00")]
    cutoff: String,
    #[arg(long, default_value = "Asia/Shanghai")]
    time_zone: String,
}

#[derive(Args)]
struct Common {
    /// The switch's wallet listener.
    #[arg(long)]
    switch: SocketAddr,
    /// Admin port of the payer bank's banksim (its cards pay).
    #[arg(long)]
    payer_admin: SocketAddr,
    /// Admin port of the other bank's banksim (its cards receive).
    #[arg(long)]
    receiver_admin: SocketAddr,
    /// The institution id (F32) to send as.
    #[arg(long, default_value = "01020000")]
    institution: String,
    #[arg(long, default_value = "ascii4")]
    framing: FramingConfig,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Keep the wallet's own records of every exchange, appended to this file.
    #[arg(long)]
    record: Option<PathBuf>,
    /// Sign requests and check answers (field 128) with this key, in hex:
    /// the key of the switch's wallet listener (`mac`), or with `load
    /// --direct` the bank's. Read from WALLETSIM_MAC_KEY when that is set instead.
    #[arg(long, hide_env_values = true, env = "WALLETSIM_MAC_KEY")]
    mac_key: Option<String>,
    /// The MAC algorithm of --mac-key: x9.19 or aes-cmac.
    #[arg(long, default_value = "x9.19", requires = "mac_key")]
    mac: String,
    /// The bytes MACs cover: `message` or field numbers (`0,2,3,4,7,11`).
    #[arg(long, default_value = "message", requires = "mac_key")]
    mac_covers: String,
}

impl Common {
    fn link_mac(&self) -> Result<Option<Arc<LinkMac>>, String> {
        let Some(hex) = &self.mac_key else {
            return Ok(None);
        };
        let algorithm: MacAlgorithm = self.mac.parse().map_err(|e| format!("--mac: {e}"))?;
        let key = MacKey::from_hex(algorithm, hex.trim()).map_err(|e| format!("--mac-key: {e}"))?;
        let covered: Coverage = self
            .mac_covers
            .parse()
            .map_err(|e| format!("--mac-covers: {e}"))?;
        Ok(Some(Arc::new(LinkMac::new(key, covered, None))))
    }

    fn records(&self) -> Result<Option<Arc<WalletRecords>>, String> {
        self.record
            .as_ref()
            .map(|path| {
                WalletRecords::appending_to(path)
                    .map(Arc::new)
                    .map_err(|e| format!("cannot write records to {}: {e}", path.display()))
            })
            .transpose()
    }
}

#[derive(Args)]
struct ScenarioArgs {
    #[command(flatten)]
    common: Common,
}

#[derive(Args)]
struct LoadArgs {
    #[command(flatten)]
    common: Common,
    /// Requests per second to send.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds to send for.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Connections to spread the load over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Freezes to spread the receives over.
    #[arg(long, default_value_t = 64)]
    freezes: usize,
    /// Amount of each freeze, in minor units (each receive takes 1).
    #[arg(long, default_value_t = 100_000)]
    freeze_amount: u64,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 20_000)]
    max_in_flight: usize,
    /// Send credits straight to this bank instead (the one-hop floor).
    #[arg(long)]
    direct: Option<SocketAddr>,
    /// Seconds a request is resent for (over lost connections and missed
    /// answers) before it is given up; the checks after the load need every
    /// answer, so a request given up fails the run.
    #[arg(long, default_value_t = 60)]
    give_up_after: u64,
    /// Draw the run here as an SVG picture: offered and answered requests
    /// per second, latency percentiles second by second, the latency distribution.
    #[arg(long, value_name = "FILE.svg")]
    report: Option<PathBuf>,
}

fn main() -> ExitCode {
    // As the switch: the load generator's own stalls would be counted as
    // the switch's latency.
    let _ = switchboard::huge_pages::disable_transparent_huge_pages();
    switchboard::logging::init(switchboard::logging::LogFormat::Text, "warn");
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("walletsim: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Scenarios(args) => scenarios_main(args).await,
            Command::Load(args) => load_main(args).await,
            Command::Export(args) => export_main(args),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("walletsim: {e}");
            ExitCode::from(2)
        }
    }
}

async fn cards(view: &BankView) -> Result<Vec<String>, String> {
    Ok(view
        .snapshot()
        .await?
        .accounts
        .into_iter()
        .map(|a| a.pan)
        .collect())
}

async fn scenarios_main(args: ScenarioArgs) -> Result<ExitCode, String> {
    let c = args.common;
    let bank_a = BankView::Admin(c.payer_admin);
    let bank_b = BankView::Admin(c.receiver_admin);
    let records = c.records()?;
    let mac = c.link_mac()?;
    let world = World {
        switch_addr: c.switch,
        framing: c.framing,
        institution: c.institution,
        cards_a: cards(&bank_a).await?,
        cards_b: cards(&bank_b).await?,
        bank_a,
        bank_b,
        clock: Arc::new(SystemClock),
        movable_clock: None,
        store: None,
        records,
        mac,
    };
    if world.cards_a.len() < 3 || world.cards_b.len() < 3 {
        return Err("each bank needs at least 3 accounts".into());
    }
    let reports = scenarios::run_all(&world).await;
    let failed = reports.iter().filter(|r| !r.passed()).count();
    if c.json {
        let value: Vec<_> = reports
            .iter()
            .map(|r| {
                serde_json::json!({
                    "name": r.name, "passed": r.passed(), "skipped": r.skipped,
                    "lines": r.lines, "failures": r.failures,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(value));
    } else {
        for r in &reports {
            let mark = if r.skipped {
                "-"
            } else if r.passed() {
                "ok"
            } else {
                "FAILED"
            };
            println!("[{mark}] {}", r.name);
            for l in r.lines.iter().chain(r.failures.iter()) {
                println!("       {l}");
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn load_main(args: LoadArgs) -> Result<ExitCode, String> {
    let c = &args.common;
    if let Some(path) = &args.report {
        // Refused before the load, not after it has run for nothing.
        if !path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("svg"))
        {
            return Err(format!(
                "--report {}: the report is drawn as SVG only; name it FILE.svg",
                path.display()
            ));
        }
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let records = c.records()?;
    let payer_view = BankView::Admin(c.payer_admin);
    let receiver_view = BankView::Admin(c.receiver_admin);
    let payers = cards(&payer_view).await?;
    let receivers = cards(&receiver_view).await?;
    if payers.is_empty() || receivers.is_empty() {
        return Err("both banks need accounts".into());
    }
    let patience = Patience {
        give_up_after: Duration::from_secs(args.give_up_after),
        ..Patience::default()
    };
    let (target, kind, wallet) = if let Some(bank) = args.direct {
        (
            bank,
            LoadKind::Credits {
                receivers,
                payer: payers[0].clone(),
            },
            None,
        )
    } else {
        // The freezes and the unfreezes after the load survive a switch
        // restart as the load does: each request is resent until answered.
        let wallet = ResendingWallet::connect(
            c.switch,
            c.framing.clone(),
            &c.institution,
            patience,
            records.clone(),
        )
        .await
        .map_err(|e| format!("connect {}: {e}", c.switch))?
        .with_mac(c.link_mac()?);
        let mut freezes = Vec::new();
        for i in 0..args.freezes.max(1) {
            let freeze = wallet.messages().freeze(
                &payers[i % payers.len()],
                args.freeze_amount,
                clock.now(),
            );
            let answer = wallet
                .send(&freeze)
                .await
                .map_err(|e| format!("freeze {i}: {e}"))?;
            if code(&answer) != ResponseCode::APPROVED {
                return Err(format!("freeze {i} answered {}", code(&answer)));
            }
            freezes.push(freeze);
        }
        (
            c.switch,
            LoadKind::Receives { freezes, receivers },
            Some(wallet),
        )
    };
    let config = LoadConfig {
        target,
        framing: c.framing.clone(),
        institution: c.institution.clone(),
        rate_per_s: args.rate,
        duration: Duration::from_secs(args.duration),
        connections: args.connections,
        max_in_flight: args.max_in_flight,
        kind: kind.clone(),
        progress: progress_bar(c.json),
        records: records.clone(),
        patience,
        // The key of the link load goes over: the switch's wallet listener,
        // or with --direct the bank's.
        mac: c.link_mac()?,
    };
    let report = load::run(config, clock.clone()).await?;
    if let Some(path) = &args.report {
        simulators::load_chart::write(&report, path)?;
    }

    // Close every packet and check what the payer bank holds for it. What
    // remains of a packet is known only when every receive of the load got
    // its answer.
    let mut problems = Vec::new();
    match (&kind, &wallet) {
        (LoadKind::Receives { .. }, _) if report.unanswered > 0 => problems.push(format!(
            "{} receives got no answer after resending for {} s: what they took is unknown, \
             so the packets are left open and not checked",
            report.unanswered, args.give_up_after
        )),
        (LoadKind::Receives { freezes, .. }, Some(wallet)) => {
            check_packets(
                wallet,
                &payer_view,
                freezes,
                &report.approved_per_freeze,
                args.freeze_amount,
                &*clock,
                &mut problems,
            )
            .await?;
        }
        _ => {}
    }
    if c.json {
        let mut value = serde_json::to_value(&report).map_err(|e| e.to_string())?;
        value["invariant_problems"] = serde_json::json!(problems);
        println!("{value}");
    } else {
        println!("{}", report.summary());
        if problems.is_empty() && matches!(kind, LoadKind::Receives { .. }) {
            println!(
                "  every packet closed; payer bank holds back to zero; no freeze over-received"
            );
        }
        for p in &problems {
            println!("  !! {p}");
        }
    }
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The load's progress on stderr when it is a terminal (and the output is
/// text); hidden otherwise, so files and pipes get no escape sequences.
fn progress_bar(json: bool) -> ProgressBar {
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) || json {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} sent  {msg}  {elapsed}")
            .expect("a valid template"),
    );
    bar
}

/// Unfreezes every packet (what remains: its amount less the receives
/// approved), then waits until the payer bank's hold of each is zero (the
/// unfreeze notice reaches the bank through the switch's store-and-forward
/// queue, behind any reversal a restart queued) and checks that no packet
/// was received beyond its amount.
async fn check_packets(
    wallet: &ResendingWallet,
    payer_view: &BankView,
    freezes: &[iso8583::codec::Message],
    approved_per_freeze: &[u64],
    freeze_amount: u64,
    clock: &dyn Clock,
    problems: &mut Vec<String>,
) -> Result<(), String> {
    for (freeze, approved) in freezes.iter().zip(approved_per_freeze) {
        let Some(remaining) = freeze_amount.checked_sub(*approved) else {
            problems.push(format!("freeze received {approved} > {freeze_amount}"));
            continue;
        };
        let unfreeze = wallet.messages().unfreeze(freeze, remaining, clock.now());
        match wallet.send(&unfreeze).await {
            Ok(a) if code(&a) == ResponseCode::APPROVED => {}
            Ok(a) => problems.push(format!("unfreeze answered {}", code(&a))),
            Err(e) => problems.push(format!("unfreeze: {e}")),
        }
    }
    let keys = freezes
        .iter()
        .map(|f| FreezeKey::of_request(f).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let deadline = tokio::time::Instant::now() + HOLDS_SETTLE;
    loop {
        let ledger = payer_view.snapshot().await?;
        let held: Vec<String> = keys
            .iter()
            .filter_map(|key| {
                let hold = ledger.hold(key)?;
                (hold.remaining_minor != 0)
                    .then(|| format!("hold {key} keeps {} after unfreeze", hold.remaining_minor))
            })
            .collect();
        if held.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            problems.extend(held);
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How long the payer bank's holds may take to reach zero after the
/// unfreezes: store-and-forward retries back off up to a few seconds.
const HOLDS_SETTLE: Duration = Duration::from_secs(15);

fn export_main(args: ExportArgs) -> Result<ExitCode, String> {
    use simulators::wallet_clearing as wallet;
    use switchboard::clearing::{parse_date, Settlement};
    let date = parse_date(&args.date)
        .ok_or_else(|| format!("--date {:?}: expected YYYY-MM-DD", args.date))?;
    let settlement = Settlement::parse(&args.cutoff, &args.time_zone).map_err(|e| e.0)?;
    let spec = iso8583::Spec::switchboard();
    let records = WalletRecords::load(&args.records, &spec).map_err(|e| e.to_string())?;
    let file = wallet::export(
        &records,
        &args.institution,
        &args.switch_id,
        date,
        &settlement,
        &spec,
    );
    println!("{}", file.render());
    Ok(ExitCode::SUCCESS)
}

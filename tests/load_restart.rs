//! `walletsim load` across switch restarts, all real processes: two
//! `banksim`s, `switchboard serve` on the embedded store, and `walletsim load`
//! for 20 s while the switch is killed with SIGKILL twice and restarted on
//! the same store. walletsim must reconnect, resend what the kills left
//! unanswered, and only then close its packets and run its checks, which
//! must pass. Then the money invariants against the banks and the switch's
//! store, and every request in the wallet's records sent once more: the
//! switch must answer each exactly as the wallet recorded. And a switch
//! that stays down: walletsim gives up, says so and fails. Bounded: about
//! 30 s.

mod common;

use common::process::{addr, banks_and_switch, serve, simulator_path, BanksAndSwitch, KillOnDrop};

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use iso8583::codec::build_bytes;
use iso8583::framing::FramingConfig;
use iso8583::Spec;
use simulators::scenarios::BankView;
use simulators::wallet::{WalletClient, WalletRecords};
use switchboard::store::sqlite::SqliteStore;
use switchboard::store::{History, SagaState};
use tokio::time::Instant;

const RATE: u64 = 200;
const SECONDS: u64 = 20;
const FREEZES: u64 = 16;

/// `walletsim load --json` with `args`; its output goes to files (a pipe
/// nobody reads could stall it).
struct Walletsim {
    child: KillOnDrop,
    out: PathBuf,
    err: PathBuf,
}

fn walletsim_load(setup: &BanksAndSwitch, args: &[&str]) -> Walletsim {
    let out = setup.dir.path().join("out.json");
    let err = setup.dir.path().join("err.txt");
    let child = Command::new(simulator_path("walletsim"))
        .arg("load")
        .args(["--switch", &addr(setup.wallet_port).to_string()])
        .args(["--payer-admin", &addr(setup.bank_a.admin).to_string()])
        .args(["--receiver-admin", &addr(setup.bank_b.admin).to_string()])
        .args(["--institution", common::WALLET_ID, "--json"])
        .args(args)
        .stdout(Stdio::from(std::fs::File::create(&out).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&err).unwrap()))
        .spawn()
        .expect("walletsim runs");
    Walletsim {
        child: KillOnDrop::new(child),
        out,
        err,
    }
}

impl Walletsim {
    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Waits (until `deadline`) for it to exit: its status, stdout and stderr.
    async fn exit(mut self, deadline: Instant) -> (std::process::ExitStatus, String, String) {
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "walletsim still runs: {}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let stdout = std::fs::read_to_string(&self.out).unwrap();
        (status, stdout, self.stderr())
    }
}

/// When bank A holds `freezes` packets, walletsim's load begins: that
/// moment (waited for at most 20 s from `started`), so that a kill meets the
/// load and not the freezes before it however slow the machine is.
async fn freezes_placed(setup: &BanksAndSwitch, freezes: u64, started: Instant) -> Instant {
    let view = BankView::Admin(addr(setup.bank_a.admin));
    loop {
        let holds = view.snapshot().await.unwrap().holds.len() as u64;
        if holds >= freezes {
            return Instant::now();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "walletsim placed {holds} of {freezes} freezes in 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walletsim_load_survives_two_switch_kills_and_its_checks_pass() {
    let setup = banks_and_switch(21, 22);
    let view_a = BankView::Admin(addr(setup.bank_a.admin));
    let view_b = BankView::Admin(addr(setup.bank_b.admin));
    let before_a = view_a.snapshot().await.unwrap().total_balance_minor;
    let before_b = view_b.snapshot().await.unwrap().total_balance_minor;
    let mut switch = serve(&setup.config);

    let records = setup.dir.path().join("wallet-records.txt");
    let started = Instant::now();
    let mut walletsim = walletsim_load(
        &setup,
        &[
            "--rate",
            &RATE.to_string(),
            "--duration",
            &SECONDS.to_string(),
            "--connections",
            "2",
            "--freezes",
            &FREEZES.to_string(),
            "--freeze-amount",
            "100000",
            "--give-up-after",
            "25",
            "--record",
            records.to_str().unwrap(),
        ],
    );

    // Two kills in the middle of the load, each restarted on the same store.
    let load_started = freezes_placed(&setup, FREEZES, started).await;
    for at in [5, 12] {
        tokio::time::sleep_until(load_started + Duration::from_secs(at)).await;
        assert!(
            walletsim.child.try_wait().unwrap().is_none(),
            "walletsim ended before the kill at {at} s: {}",
            walletsim.stderr()
        );
        switch.kill().unwrap();
        switch.wait().unwrap();
        switch = serve(&setup.config);
    }
    let (status, stdout, stderr) = walletsim.exit(started + Duration::from_secs(60)).await;
    assert!(status.success(), "walletsim: {status}\n{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let count = |key: &str| {
        report[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key}: {report}"))
    };
    assert_eq!(
        report["invariant_problems"],
        serde_json::json!([]),
        "{report}"
    );
    assert_eq!(count("sent"), RATE * SECONDS, "{report}");
    assert_eq!(count("answered"), count("sent"), "{report}");
    assert_eq!(count("unanswered"), 0, "{report}");
    // Each kill broke both connections; requests in flight or due while the
    // switch was down were sent again.
    assert!(count("reconnects") >= 2, "{report}");
    assert!(count("resends") > 0, "{report}");
    // Approved, or failed by recovery (a receive the kill interrupted) and
    // told so when resent: 91, never 94 (it is the same request).
    let codes = report["codes"].as_object().unwrap();
    let approved = codes["00"].as_u64().unwrap();
    assert!(approved > 0, "{report}");
    assert!(codes.keys().all(|c| c == "00" || c == "91"), "{report}");

    // The money: every approved receive (1 minor unit each) debited at bank A
    // and credited at bank B, nothing else left moved once what the restarts
    // queued (reversals of the receives they interrupted) is delivered; every
    // hold at bank A back to zero.
    let settled = async {
        loop {
            let a = view_a.snapshot().await.unwrap();
            let b = view_b.snapshot().await.unwrap();
            let moved = (
                before_a - a.total_balance_minor,
                b.total_balance_minor - before_b,
            );
            let held: u64 = a.holds.iter().map(|h| h.hold.remaining_minor).sum();
            if moved == (approved as i64, approved as i64) && held == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(20), settled)
        .await
        .is_err()
    {
        let a = view_a.snapshot().await.unwrap();
        let b = view_b.snapshot().await.unwrap();
        panic!(
            "after 20 s: bank A paid {}, bank B got {}, {} still held at A; the wallet was told 00 {approved} times",
            before_a - a.total_balance_minor,
            b.total_balance_minor - before_b,
            a.holds.iter().map(|h| h.hold.remaining_minor).sum::<u64>()
        );
    }

    // The wallet's records: one line per request (freezes, receives,
    // unfreezes), each with an answer.
    let spec = Spec::switchboard();
    let kept = WalletRecords::load(&records, &spec).unwrap();
    assert_eq!(kept.len() as u64, FREEZES + RATE * SECONDS + FREEZES);
    let keys: BTreeSet<(String, String, String)> = kept
        .iter()
        .map(|r| {
            let field = |n| r.request.get_str(n).unwrap().to_string();
            (r.request.mti_str().to_string(), field(7), field(11))
        })
        .collect();
    assert_eq!(keys.len(), kept.len(), "one record per request");
    assert!(
        kept.iter().all(|r| r.answer.is_some()),
        "every request answered"
    );

    // Each request once more, exactly as sent: the switch answers as it did.
    let wallet = WalletClient::connect(
        addr(setup.wallet_port),
        FramingConfig::default(),
        common::WALLET_ID,
    )
    .await
    .unwrap()
    .with_timeout(Duration::from_secs(10));
    let mut resends = tokio::task::JoinSet::new();
    for record in kept {
        let wallet = wallet.clone();
        resends.spawn(async move { (wallet.send(&record.request).await, record) });
    }
    let mut differ = Vec::new();
    while let Some(joined) = resends.join_next().await {
        let (again, record) = joined.unwrap();
        let again = build_bytes(&spec, &again.unwrap()).unwrap();
        let first = build_bytes(&spec, record.answer.as_ref().unwrap()).unwrap();
        if again != first {
            differ.push(format!(
                "{} {}: first {:?}, again {:?}",
                record.request.mti_str(),
                record.request.get_str(11).unwrap_or(""),
                record.answer.as_ref().and_then(|a| a.get_str(39)),
                iso8583::codec::parse(&spec, again.clone())
                    .ok()
                    .and_then(|m| m.get_str(39).map(str::to_string))
            ));
        }
    }
    assert!(
        differ.is_empty(),
        "resends answered differently:\n{}",
        differ.join("\n")
    );

    // The switch's own books agree: as many approved receives as the wallet
    // was told 00, none unfinished.
    switch.kill().unwrap();
    switch.wait().unwrap();
    let store = SqliteStore::open(&setup.dir.path().join("switchboard.db")).unwrap();
    let sagas = store.sagas().await.unwrap();
    assert!(sagas.iter().all(|s| s.state.is_final()), "unfinished sagas");
    let approved_sagas = sagas
        .iter()
        .filter(|s| s.state == SagaState::Approved)
        .count() as u64;
    assert_eq!(approved_sagas, approved);
    println!(
        "walletsim load at {RATE}/s for {SECONDS}s, the switch killed twice: {} reconnects, {} resends, codes {:?}; \
         checked: walletsim's own checks, bank A paid and bank B got exactly the {approved} approved, \
         every hold zero, one record per request, every request answered again as first, the switch's sagas",
        count("reconnects"),
        count("resends"),
        codes
    );
}

/// The switch killed and never restarted: walletsim resends for
/// `--give-up-after` seconds, then gives up, says so, and fails without
/// running its checks (what the lost receives took is unknown). Bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walletsim_load_gives_up_when_the_switch_stays_down() {
    let setup = banks_and_switch(21, 22);
    let mut switch = serve(&setup.config);
    let started = Instant::now();
    let walletsim = walletsim_load(
        &setup,
        &[
            "--rate",
            "100",
            "--duration",
            "4",
            "--freezes",
            "4",
            "--give-up-after",
            "2",
        ],
    );
    let load_started = freezes_placed(&setup, 4, started).await;
    tokio::time::sleep_until(load_started + Duration::from_secs(1)).await;
    switch.kill().unwrap();
    switch.wait().unwrap();
    let (status, stdout, stderr) = walletsim.exit(started + Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(1), "{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(report["unanswered"].as_u64().unwrap() > 0, "{report}");
    let problems = report["invariant_problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{report}");
    assert!(
        problems[0]
            .as_str()
            .unwrap()
            .contains("got no answer after resending for 2 s"),
        "{report}"
    );
}

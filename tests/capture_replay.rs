//! `switchboard capture replay`, the real binary over real TCP: a wallet's
//! traffic recorded by one switch (`[capture]`) is sent again to another
//! switch with its own banks. With fresh F7/F11/F37 (and field 90 naming the
//! renewed freezes) every answer is the captured one and the money moves as
//! it did; exactly as captured, the requests are resends and nothing moves.
//! Differences, silent targets and a target that is not there are reported
//! per request, in JSON and JUnit, with exit status 1.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use iso8583::framing::FramingConfig;
use serde_json::Value;
use simulators::bank::Ledger;
use simulators::bank_server::spawn_bank;
use simulators::faults::Faults;
use switchboard::config::CaptureConfig;

mod common;

use common::{assert_passed, books_a, start, start_recording, Backend, Harness};

/// A capture of one wallet connection: a packet received and unfrozen, and
/// one unfrozen whole and then received (declined with 12), recorded by a
/// switch; with both banks' books at the end.
struct Recorded {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    switch_port: u16,
    bank_a_port: u16,
    books: (Ledger, Ledger),
}

async fn record() -> Recorded {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switch.pcapng");
    // Replaying needs the card numbers as they were sent: recorded in full.
    let capture = CaptureConfig {
        mask_card_data: false,
        ..CaptureConfig::at(&path)
    };
    let h = start_recording(Backend::Embedded, Some(capture)).await;
    assert_passed(&simulators::scenarios::one_to_one(&h.world).await);
    assert_passed(&simulators::scenarios::receive_after_unfreeze(&h.world).await);
    let switch_port = h.world.switch_addr.port();
    let bank_a_port = h.bank_a.addr.port();
    let books = (h.bank_a.snapshot(), h.bank_b.snapshot());
    h.running.shutdown().await;
    Recorded {
        _dir: dir,
        path,
        switch_port,
        bank_a_port,
        books,
    }
}

impl Recorded {
    /// Replays the wallet's side of the capture to `target` with `--fast`.
    async fn replay_wallet(&self, target: SocketAddr, extra: &[&str]) -> Replayed {
        let wallet_side = format!(":{}", self.switch_port);
        let mut args = vec!["--filter", wallet_side.as_str(), "--fast"];
        args.extend_from_slice(extra);
        replay(&self.path, target, &args).await
    }
}

struct Replayed {
    code: Option<i32>,
    lines: Vec<Value>,
    stderr: String,
}

impl Replayed {
    fn summary(&self) -> &Value {
        &self.lines.last().expect("a summary line")["summary"]
    }

    fn outcomes(&self) -> &[Value] {
        &self.lines[..self.lines.len() - 1]
    }

    fn results(&self) -> Vec<&str> {
        self.outcomes()
            .iter()
            .map(|o| o["result"].as_str().unwrap())
            .collect()
    }
}

async fn replay(capture: &Path, target: SocketAddr, extra: &[&str]) -> Replayed {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["capture", "replay", "--json", "--target"])
        .arg(target.to_string())
        .arg(capture)
        .args(extra)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("replay ends")
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}\nstderr: {stderr}")))
        .collect();
    Replayed {
        code: out.status.code(),
        lines,
        stderr,
    }
}

fn balances(ledger: &Ledger) -> BTreeMap<String, i64> {
    ledger
        .accounts
        .iter()
        .map(|a| (a.pan.clone(), a.balance_minor))
        .collect()
}

/// The money invariants once every packet is closed: nothing held at
/// either bank. The switch answers an unfreeze first and tells the bank
/// after (store-and-forward), so the holds are given a few seconds to go.
async fn assert_no_holds(h: &Harness) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ledgers = [h.bank_a.snapshot(), h.bank_b.snapshot()];
        let held = ledgers
            .iter()
            .any(|l| l.total_held_minor != 0 || l.accounts.iter().any(|a| a.held_minor != 0));
        if !held {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still held: {ledgers:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn total(h: &Harness) -> i64 {
    h.bank_a.snapshot().total_balance_minor + h.bank_b.snapshot().total_balance_minor
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wallet_capture_replayed_to_another_switch_gets_the_captured_answers_and_moves_the_same_money(
) {
    let recorded = record().await;
    let h = start().await;
    let before = (h.bank_a.snapshot(), h.bank_b.snapshot());
    let total_before = total(&h);
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("replay.xml");

    let first = recorded
        .replay_wallet(h.world.switch_addr, &["--junit", junit.to_str().unwrap()])
        .await;
    assert_eq!(first.code, Some(0), "{:?}\n{}", first.lines, first.stderr);
    // Freeze, receive, unfreeze; freeze, unfreeze, receive.
    assert_eq!(first.results(), ["same"; 6], "{:?}", first.lines);
    let summary = first.summary();
    assert_eq!(summary["requests"], 6, "{summary}");
    assert_eq!(summary["same"], 6, "{summary}");
    assert_eq!(summary["result"], "same", "{summary}");
    let mtis: Vec<&str> = first
        .outcomes()
        .iter()
        .map(|o| o["request"]["mti"].as_str().unwrap())
        .collect();
    assert_eq!(mtis, ["0100", "0200", "0120", "0100", "0120", "0200"]);
    // The card number is masked; the answer's code is the captured one.
    let freeze = &first.outcomes()[0];
    assert!(freeze["request"]["fields"]["2"]
        .as_str()
        .unwrap()
        .contains('*'));
    assert_eq!(freeze["answer"]["fields"]["39"], "00");
    assert_eq!(first.outcomes()[5]["answer"]["fields"]["39"], "12");
    // The receive's field 90 names the renewed freeze: its new F11 and F7.
    let (freeze_request, receive_request) = (
        &first.outcomes()[0]["request"]["fields"],
        &first.outcomes()[1]["request"]["fields"],
    );
    let f90 = receive_request["90"].as_str().unwrap();
    assert_eq!(&f90[4..10], freeze_request["11"].as_str().unwrap());
    assert_eq!(&f90[10..20], freeze_request["7"].as_str().unwrap());

    // The same money moved as when the capture was made: every card's
    // balance is the one the recording switch's banks ended with.
    assert_eq!(balances(&h.bank_a.snapshot()), balances(&recorded.books.0));
    assert_eq!(balances(&h.bank_b.snapshot()), balances(&recorded.books.1));
    assert_ne!(balances(&h.bank_a.snapshot()), balances(&before.0));
    assert_no_holds(&h).await;
    assert_eq!(total(&h), total_before, "money is moved, never made");

    let report = std::fs::read_to_string(&junit).unwrap();
    assert!(report.starts_with("<?xml"), "{report}");
    assert!(
        report.contains("tests=\"6\" failures=\"0\" errors=\"0\""),
        "{report}"
    );
    assert_eq!(report.matches("<testcase ").count(), 6, "{report}");

    // Renewed again, the requests are new ones: the payer pays again.
    let paid_once = balances(&h.bank_a.snapshot());
    let second = recorded.replay_wallet(h.world.switch_addr, &[]).await;
    assert_eq!(second.code, Some(0), "{:?}", second.lines);
    let paid_twice = balances(&h.bank_a.snapshot());
    let spent = |b: &BTreeMap<String, i64>| {
        balances(&before.0).values().sum::<i64>() - b.values().sum::<i64>()
    };
    assert_eq!(spent(&paid_once), 8_800);
    assert_eq!(spent(&paid_twice), 2 * 8_800);
    assert_no_holds(&h).await;

    // Exactly as captured: this switch never saw the capture's own F7/F11,
    // so the first time they are new requests; the second time, resends,
    // answered as before without moving money.
    let third = recorded
        .replay_wallet(h.world.switch_addr, &["--no-renew"])
        .await;
    assert_eq!(third.code, Some(0), "{:?}", third.lines);
    let paid_thrice = balances(&h.bank_a.snapshot());
    assert_eq!(spent(&paid_thrice), 3 * 8_800);
    let fourth = recorded
        .replay_wallet(h.world.switch_addr, &["--no-renew"])
        .await;
    assert_eq!(fourth.code, Some(0), "{:?}", fourth.lines);
    assert_eq!(fourth.results(), ["same"; 6], "{:?}", fourth.lines);
    assert_eq!(
        balances(&h.bank_a.snapshot()),
        paid_thrice,
        "a resend moves no money"
    );
    assert_no_holds(&h).await;
    h.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bank_link_capture_replayed_to_a_bank_simulator_gets_the_captured_answers() {
    let recorded = record().await;
    let bank = spawn_bank(books_a(), FramingConfig::default())
        .await
        .unwrap();
    let bank_side = format!(":{}", recorded.bank_a_port);
    let out = replay(
        &recorded.path,
        bank.addr,
        &["--filter", &bank_side, "--fast"],
    )
    .await;
    assert_eq!(out.code, Some(0), "{:?}\n{}", out.lines, out.stderr);
    let mtis: Vec<&str> = out
        .outcomes()
        .iter()
        .map(|o| o["request"]["mti"].as_str().unwrap())
        .collect();
    // The switch signs on, freezes and debits at bank A, and tells it of the
    // unfreezes; here the replay is the switch.
    for mti in ["0800", "0100", "0200"] {
        assert!(mtis.contains(&mti), "{mtis:?}");
    }
    assert!(
        out.results().iter().all(|r| *r == "same"),
        "{:?}",
        out.lines
    );
    // The bank's books end as the recording bank's did.
    assert_eq!(balances(&bank.snapshot()), balances(&recorded.books.0));
    assert_eq!(bank.snapshot().total_held_minor, 0);
    bank.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_that_differ_are_named_field_by_field_and_fail_the_replay() {
    let recorded = record().await;
    let h = start().await;
    // Bank A now declines every request with 51 (insufficient funds).
    h.bank_a
        .faults
        .set("decline=1.0:51".parse::<Faults>().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("replay.xml");
    let out = recorded
        .replay_wallet(h.world.switch_addr, &["--junit", junit.to_str().unwrap()])
        .await;
    assert_eq!(out.code, Some(1), "{:?}", out.lines);
    let freeze = &out.outcomes()[0];
    assert_eq!(freeze["result"], "differs", "{freeze}");
    let differences = freeze["differences"].as_array().unwrap();
    assert!(
        differences
            .iter()
            .any(|d| d["field"] == "39" && d["captured"] == "00" && d["now"] == "51"),
        "{freeze}"
    );
    assert_eq!(out.summary()["result"], "differences");
    assert!(
        out.summary()["differs"].as_u64().unwrap() >= 2,
        "{}",
        out.summary()
    );
    // Nothing was frozen, so nothing is held and nothing moved.
    assert_no_holds(&h).await;
    let report = std::fs::read_to_string(&junit).unwrap();
    assert!(report.contains("<failure message=\"differs\""), "{report}");
    assert!(
        report.contains("field 39: captured &quot;00&quot;, now &quot;51&quot;"),
        "{report}"
    );
    h.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_target_gives_missing_answers_and_an_absent_one_errors() {
    let recorded = record().await;

    // A host that reads everything and answers nothing.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let sink = tokio::spawn(async move {
        loop {
            let (mut stream, _) = silent.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while tokio::io::AsyncReadExt::read(&mut stream, &mut buf)
                    .await
                    .is_ok_and(|n| n > 0)
                {}
            });
        }
    });
    let out = recorded
        .replay_wallet(silent_addr, &["--timeout-ms", "300"])
        .await;
    sink.abort();
    assert_eq!(out.code, Some(1), "{:?}", out.lines);
    assert_eq!(out.results(), ["missing"; 6], "{:?}", out.lines);
    assert!(out.outcomes()[0]["reason"]
        .as_str()
        .unwrap()
        .contains("no answer within 300 ms"));

    // Nobody listens there: each request is an error, named.
    let nobody = SocketAddr::from(([127, 0, 0, 1], common::process::free_port()));
    let out = recorded.replay_wallet(nobody, &[]).await;
    assert_eq!(out.code, Some(1), "{:?}", out.lines);
    assert_eq!(out.results(), ["error"; 6], "{:?}", out.lines);
    assert!(out.outcomes()[0]["reason"]
        .as_str()
        .unwrap()
        .contains("connecting to"));
}

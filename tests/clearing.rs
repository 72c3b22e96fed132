//! End of day: a full day of traffic through the real switch and two bank
//! simulators (one-to-one and one-to-many packets, a receive of a freeze made
//! the day before, declines, a declined credit reversed, a debit lost on the
//! way and a credit never answered, both reversed after their timeouts,
//! unfreezes), cleared and reconciled against both banks' own exports with
//! zero differences and net positions summing to zero; then each kind of
//! discrepancy injected into a bank's export and detected exactly. On both
//! the embedded (SQLite) store and the in-memory one.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDate, NaiveDateTime};
use futures::future::join_all;
use iso8583::codec::Message;
use iso8583::fields::num;
use iso8583::framing::FramingConfig;
use iso8583::{ResponseCode, Spec};
use rust_decimal::Decimal;
use simulators::bank::{Bank, Movement, MovementKind};
use simulators::bank_clearing as bank;
use simulators::bank_server::{spawn_bank, BankHandle};
use simulators::faults::Faults;
use simulators::wallet::{code, WalletClient, WalletRecord, WalletRecords};
use switchboard::clearing::clear::{clear, clear_day, ClearError, ClearRequest, Cleared};
use switchboard::clearing::reconcile::{reconcile, DifferenceKind, Reconciliation};
use switchboard::clearing::{ParticipantFile, Settlement, Status};
use switchboard::clock::{Clock, ShiftedClock};
use switchboard::dialect::{FreezeKey, InstitutionId};
use switchboard::service::{self, Running};
use switchboard::store::memory::MemoryStore;
use switchboard::store::sqlite::SqliteStore;
use switchboard::store::{NewReceive, RequestKey, Reserve, SafState, SentMessage, Store};

use common::{bank_config, BANK_A, BANK_B, SWITCH_ID, WALLET_ID};

const A11: &str = "00048020000";
const B11: &str = "00001050000";
const WALLET11: &str = "00001020000";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Backend {
    Sqlite,
    Memory,
    Postgres,
}

struct Day {
    running: Running,
    bank_a: BankHandle,
    bank_b: BankHandle,
    store: Arc<dyn Store>,
    clock: Arc<ShiftedClock>,
    cards_a: Vec<String>,
    cards_b: Vec<String>,
    wallet: WalletClient,
    /// The wallet's own records of every exchange.
    records: Arc<WalletRecords>,
    dir: tempfile::TempDir,
}

async fn start(backend: Backend) -> Day {
    let dir = tempfile::tempdir().unwrap();
    let a = Bank::generate(BANK_A, "622202", 12, 1_000_000, 1);
    let b = Bank::generate(BANK_B, "621700", 12, 1_000_000, 2);
    let cards_a: Vec<String> = a.accounts().into_iter().map(|(p, _)| p).collect();
    let cards_b: Vec<String> = b.accounts().into_iter().map(|(p, _)| p).collect();
    let bank_a = spawn_bank(a, FramingConfig::default()).await.unwrap();
    let bank_b = spawn_bank(b, FramingConfig::default()).await.unwrap();
    let config = common::config(
        dir.path(),
        vec![
            bank_config(BANK_A, "622202", bank_a.addr, Duration::from_secs(5)),
            bank_config(BANK_B, "621700", bank_b.addr, Duration::from_secs(5)),
        ],
    );
    let store: Arc<dyn Store> = match backend {
        Backend::Sqlite => Arc::new(SqliteStore::open(&dir.path().join("switchboard.db")).unwrap()),
        Backend::Memory => Arc::new(MemoryStore::new()),
        Backend::Postgres => switchboard::service::open_store(
            &switchboard::config::StoreConfig::Postgres(common::pg::database().await),
        )
        .await
        .unwrap(),
    };
    // The clock starts at the earliest moment any test here sets, and only
    // moves forward: the switch's first expiry sweep reads the time when it
    // starts and queries the store a moment later, so a clock set back past
    // a freeze made in between would have that freeze closed as expired.
    let clock = Arc::new(ShiftedClock::new());
    clock.set(utc("2026-11-19 03:00:00"));
    let running = service::start(config, store.clone(), clock.clone())
        .await
        .unwrap();
    assert!(running.wait_banks_ready(Duration::from_secs(5)).await);
    let records = Arc::new(WalletRecords::new());
    let wallet =
        WalletClient::connect(running.wallet_addrs[0], FramingConfig::default(), WALLET_ID)
            .await
            .unwrap()
            .with_records(Some(records.clone()));
    Day {
        running,
        bank_a,
        bank_b,
        store,
        clock,
        cards_a,
        cards_b,
        wallet,
        records,
        dir,
    }
}

/// The wallet's own file for `day`, from its records.
fn wallet_export(records: &[WalletRecord], day: NaiveDate) -> ParticipantFile {
    simulators::wallet_clearing::export(
        records,
        WALLET_ID,
        common::SWITCH_ID,
        day,
        &Settlement::default(),
        &Spec::switchboard(),
    )
}

fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn utc(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
}

/// A Luhn-valid card of bank B's BIN that bank B has no account for.
fn unknown_b_card() -> String {
    let body = b"621700999999999";
    format!(
        "{}{}",
        std::str::from_utf8(body).unwrap(),
        simulators::bank::luhn_check_digit(body) as char
    )
}

impl Day {
    fn now(&self) -> NaiveDateTime {
        self.clock.now()
    }

    async fn send(&self, msg: &Message) -> Message {
        self.wallet.send(msg).await.expect("an answer")
    }

    async fn expect(&self, what: &str, msg: &Message, want: ResponseCode) -> Message {
        let answer = self.send(msg).await;
        assert_eq!(code(&answer), want, "{what}");
        answer
    }

    async fn freeze(&self, card: &str, amount: u64) -> Message {
        let f = self.wallet.freeze(card, amount, self.now());
        self.expect("freeze", &f, ResponseCode::APPROVED).await;
        f
    }

    async fn receive(
        &self,
        freeze: &Message,
        card: &str,
        amount: u64,
        want: ResponseCode,
    ) -> Message {
        let r = self.wallet.receive(freeze, card, amount, self.now());
        self.expect("receive", &r, want).await
    }

    async fn unfreeze(&self, freeze: &Message, remaining: u64) {
        let u = self.wallet.unfreeze(freeze, remaining, self.now());
        self.expect("unfreeze", &u, ResponseCode::APPROVED).await;
    }

    /// Waits until the store-and-forward queue has nothing pending.
    async fn drain(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let entries = self.store.saf_entries().await.unwrap();
            assert!(
                entries.iter().all(|e| e.state != SafState::Dead),
                "dead entries: {entries:?}"
            );
            if entries.iter().all(|e| e.state == SafState::Done) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "store-and-forward did not drain"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn request(&self, day: NaiveDate, allow_pending: bool) -> ClearRequest {
        ClearRequest {
            date: day,
            settlement: Settlement::default(),
            switch_id: SWITCH_ID.into(),
            banks: vec![BANK_A.into(), BANK_B.into()],
            wallets: vec![WALLET_ID.into()],
            allow_pending,
        }
    }

    async fn clear(&self, day: NaiveDate, allow_pending: bool) -> Result<Cleared, ClearError> {
        clear(
            self.store.as_ref(),
            &Spec::switchboard(),
            &self.request(day, allow_pending),
        )
        .await
    }

    fn journal(&self, bank: &BankHandle) -> Vec<Movement> {
        bank.bank.lock().unwrap().journal()
    }
}

/// The files `clear_day` writes as it goes (what `switchboard clear` does) are
/// the bytes of the lines `clear` returns.
async fn streamed_files_are_the_same(d: &Day, day: NaiveDate, cleared: &Cleared) {
    let streamed = clear_day(
        d.store.as_ref(),
        &Spec::switchboard(),
        &d.request(day, false),
    )
    .await
    .unwrap();
    let out = d.dir.path().join(format!("streamed-{day}"));
    let paths = streamed.write(&out).unwrap();
    let files = cleared.files();
    assert_eq!(paths.len(), files.len());
    for ((name, text), path) in files.iter().zip(&paths) {
        assert_eq!(path, &out.join(name));
        assert_eq!(&std::fs::read_to_string(path).unwrap(), text, "{name}");
    }
    assert_eq!(streamed.summary(), cleared.summary());
}

fn export(movements: &[Movement], bank: &str, day: NaiveDate) -> ParticipantFile {
    bank::export(
        movements.iter().cloned(),
        bank,
        day,
        &Settlement::default(),
        &Spec::switchboard(),
    )
}

fn statuses(file: &ParticipantFile) -> BTreeMap<(String, String), usize> {
    let mut out = BTreeMap::new();
    for l in &file.lines {
        *out.entry((l.kind.to_string(), l.status.to_string()))
            .or_default() += 1;
    }
    out
}

fn counts(pairs: &[(&str, &str, usize)]) -> BTreeMap<(String, String), usize> {
    pairs
        .iter()
        .map(|(k, s, n)| ((k.to_string(), s.to_string()), *n))
        .collect()
}

fn one_difference(r: &Reconciliation, kind: DifferenceKind, key: &str) {
    assert_eq!(r.differences.len(), 1, "{}", r.report());
    assert_eq!(r.differences[0].difference, kind, "{}", r.report());
    assert_eq!(r.differences[0].key, key, "{}", r.report());
}

fn money(s: &str) -> Decimal {
    s.parse().unwrap()
}

/// The line of a file with this kind and amount (the first).
fn key_of(file: &ParticipantFile, kind: &str, amount: &str, status: Status) -> String {
    file.lines
        .iter()
        .find(|l| l.kind.to_string() == kind && l.amount == money(amount) && l.status == status)
        .unwrap_or_else(|| panic!("no {kind} of {amount} {status} in {}", file.render()))
        .key
        .clone()
}

async fn full_day(backend: Backend) {
    let d = start(backend).await;
    let (a, b) = (&d.cards_a, &d.cards_b);
    let day = date("2026-11-20");

    // The day before, 11:00 in Shanghai: a packet frozen, received tomorrow.
    d.clock.set(utc("2026-11-19 03:00:00"));
    let f0 = d.freeze(&a[0], 5_000).await;

    // The day, from 10:00 in Shanghai.
    d.clock.set(utc("2026-11-20 02:00:00"));
    let books_a = d.bank_a.snapshot().total_balance_minor;
    let books_b = d.bank_b.snapshot().total_balance_minor;

    // One-to-one.
    let f1 = d.freeze(&a[1], 3_000).await;
    let answer = d.receive(&f1, &b[0], 3_000, ResponseCode::APPROVED).await;
    assert_eq!(answer.get_str(num::SETTLEMENT_DATE), Some("1120"));
    d.unfreeze(&f1, 0).await;

    // One-to-many: four shares grabbed at once (one by a card of the payer's
    // own bank), a fifth receiver too late.
    let f2 = d.freeze(&a[2], 10_000).await;
    let grabs =
        [&b[1], &b[2], &b[3], &a[3]].map(|card| d.wallet.receive(&f2, card, 2_500, d.now()));
    for answer in join_all(grabs.iter().map(|r| d.send(r))).await {
        assert_eq!(code(&answer), ResponseCode::APPROVED);
    }
    d.receive(&f2, &b[4], 2_500, ResponseCode::EXCEEDS_AMOUNT_LIMIT)
        .await;
    d.unfreeze(&f2, 0).await;

    // The packet frozen yesterday, received today: it settles today.
    let answer = d.receive(&f0, &b[5], 2_000, ResponseCode::APPROVED).await;
    assert_eq!(answer.get_str(num::SETTLEMENT_DATE), Some("1120"));
    d.unfreeze(&f0, 3_000).await;

    // Declines: insufficient funds, an unknown freeze, a closed one.
    let big = d.wallet.freeze(&a[4], 2_000_000, d.now());
    d.expect(
        "freeze over the balance",
        &big,
        ResponseCode::INSUFFICIENT_FUNDS,
    )
    .await;
    let never_sent = d.wallet.freeze(&a[5], 100, d.now());
    d.receive(
        &never_sent,
        &b[0],
        100,
        ResponseCode::UNABLE_TO_LOCATE_RECORD,
    )
    .await;
    d.receive(&f1, &b[0], 100, ResponseCode::INVALID_TRANSACTION)
        .await;

    // A declined credit: the debit is reversed.
    let f3 = d.freeze(&a[6], 4_000).await;
    d.receive(
        &f3,
        &unknown_b_card(),
        1_500,
        ResponseCode::INVALID_CARD_NUMBER,
    )
    .await;
    d.drain().await;
    d.receive(&f3, &b[6], 4_000, ResponseCode::APPROVED).await;
    d.unfreeze(&f3, 0).await;

    // A debit lost on its way to bank A: no answer, reversed, and the bank
    // answers the reversal 25 (it never had the debit).
    let f4 = d.freeze(&a[7], 1_000).await;
    d.bank_a.faults.set(Faults {
        lost: 1.0,
        ..Faults::default()
    });
    d.receive(&f4, &b[7], 1_000, ResponseCode::ISSUER_UNAVAILABLE)
        .await;
    d.bank_a.faults.set(Faults::default());
    d.unfreeze(&f4, 1_000).await;

    // A credit bank B applies but never answers: both reversed.
    let f5 = d.freeze(&a[8], 2_000).await;
    d.bank_b.faults.set(Faults {
        silent: 1.0,
        ..Faults::default()
    });
    d.receive(&f5, &b[8], 2_000, ResponseCode::ISSUER_UNAVAILABLE)
        .await;

    // The reversals are still queued: the day cannot be cleared yet...
    match d.clear(day, false).await {
        Err(ClearError::NotFinal { pending, .. }) => {
            assert!(pending.iter().any(|p| p.participant == B11), "{pending:?}");
            let message = ClearError::NotFinal {
                date: day,
                pending: pending.clone(),
            }
            .to_string();
            assert!(message.contains("--allow-pending"), "{message}");
        }
        other => panic!(
            "cleared with reversals pending: {:?}",
            other.map(|c| c.files())
        ),
    }
    // ...unless what is final is cleared and the rest listed.
    let partial = d.clear(day, true).await.unwrap();
    assert!(!partial.pending.is_empty());
    assert!(partial.summary().contains("\nP,bank,00001050000,credit,"));
    d.bank_b.faults.set(Faults::default());
    d.drain().await;
    d.unfreeze(&f5, 2_000).await;
    d.drain().await;
    let moved_a = d.bank_a.snapshot().total_balance_minor - books_a;
    let moved_b = d.bank_b.snapshot().total_balance_minor - books_b;

    // After the cutoff (23:30 in Shanghai): the next settlement day.
    d.clock.set(utc("2026-11-20 15:30:00"));
    let g = d.freeze(&a[9], 500).await;
    let answer = d.receive(&g, &b[9], 500, ResponseCode::APPROVED).await;
    assert_eq!(answer.get_str(num::SETTLEMENT_DATE), Some("1121"));
    d.unfreeze(&g, 0).await;
    d.drain().await;

    // Clear the day.
    let cleared = d.clear(day, false).await.unwrap();
    assert!(cleared.pending.is_empty(), "{:?}", cleared.pending);
    let file_a = &cleared.banks[A11];
    let file_b = &cleared.banks[B11];
    assert_eq!(
        statuses(file_a),
        counts(&[
            ("debit", "approved", 7),
            ("debit", "reversed", 2),
            ("debit", "not_applied", 1),
            ("credit", "approved", 1),
        ]),
        "{}",
        file_a.render()
    );
    assert_eq!(
        statuses(file_b),
        counts(&[
            ("credit", "approved", 6),
            ("credit", "declined", 1),
            ("credit", "reversed", 1),
        ]),
        "{}",
        file_b.render()
    );
    // Net positions: A pays 165.00, B receives it; they sum to zero and are
    // what the banks' books moved by.
    let net: BTreeMap<&str, Decimal> = cleared
        .positions
        .iter()
        .map(|p| (p.bank.as_str(), p.net))
        .collect();
    assert_eq!(net[A11], money("-165.00"));
    assert_eq!(net[B11], money("165.00"));
    assert!(cleared.balanced());
    assert_eq!(Decimal::new(moved_a, 2), net[A11]);
    assert_eq!(Decimal::new(moved_b, 2), net[B11]);
    assert_eq!(cleared.obligations.len(), 1);
    assert_eq!(
        (
            cleared.obligations[0].payer.as_str(),
            cleared.obligations[0].receiver.as_str(),
            cleared.obligations[0].amount
        ),
        (A11, B11, money("165.00"))
    );
    // The wallet's file: every request of the day with its outcome; the
    // receives' total is what the banks credited.
    let wallet = &cleared.wallets[WALLET11];
    assert_eq!(
        statuses(wallet),
        counts(&[
            ("freeze", "approved", 5),
            ("freeze", "declined", 1),
            ("receive", "approved", 7),
            ("receive", "declined", 6),
            ("unfreeze", "approved", 6),
        ]),
        "{}",
        wallet.render()
    );
    let received: Decimal = wallet
        .lines
        .iter()
        .filter(|l| l.kind.to_string() == "receive")
        .map(|l| l.settled)
        .sum();
    let credited: Decimal = cleared.positions.iter().map(|p| p.credits.1).sum();
    assert_eq!(received, credited);
    assert!(!wallet.render().contains(&format!(
        "D,freeze,{}",
        switchboard::dialect::FreezeKey::of_request(&f0).unwrap()
    )));

    // Clearing again gives the same bytes.
    let again = d.clear(day, false).await.unwrap();
    assert_eq!(again.files(), cleared.files());
    streamed_files_are_the_same(&d, day, &cleared).await;

    // Both banks' own records reconcile with zero differences.
    for (handle, id) in [(&d.bank_a, A11), (&d.bank_b, B11)] {
        let theirs = export(&d.journal(handle), id, day);
        let r = reconcile(&theirs, &cleared.banks[id]).unwrap();
        assert!(r.is_clean(), "{}", r.report());
        assert_eq!(r.matched, cleared.banks[id].lines.len());
        // The admin port's `export` gives the same file.
        let text = bank::admin_export(&handle.bank.lock().unwrap(), "2026-11-20");
        assert_eq!(text, format!("{}\n", theirs.render()));
        assert_eq!(ParticipantFile::parse(&text).unwrap(), theirs);
    }

    // The wallet's own records reconcile with zero differences too; a lost
    // record and a different answer are each found exactly.
    let records = d.records.all();
    let switch_w = &cleared.wallets[WALLET11];
    let r = reconcile(&wallet_export(&records, day), switch_w).unwrap();
    assert!(r.is_clean(), "{}", r.report());
    assert_eq!(r.matched, switch_w.lines.len());
    let received = key_of(switch_w, "receive", "30.00", Status::Approved);
    let is_received = |rec: &WalletRecord| {
        switchboard::dialect::FreezeKey::of_request(&rec.request)
            .unwrap()
            .to_string()
            == received
    };
    let lost: Vec<WalletRecord> = records
        .iter()
        .filter(|r| !is_received(r))
        .cloned()
        .collect();
    let r = reconcile(&wallet_export(&lost, day), switch_w).unwrap();
    one_difference(&r, DifferenceKind::MissingAtParticipant, &received);
    let misread: Vec<WalletRecord> = records
        .iter()
        .cloned()
        .map(|mut rec| {
            if is_received(&rec) {
                if let Some(answer) = rec.answer.as_mut() {
                    answer.set(39, ResponseCode::ISSUER_UNAVAILABLE);
                }
            }
            rec
        })
        .collect();
    let r = reconcile(&wallet_export(&misread, day), switch_w).unwrap();
    one_difference(&r, DifferenceKind::StatusMismatch, &received);

    // Each kind of discrepancy, injected into bank A's records, is found exactly.
    let journal_a = d.journal(&d.bank_a);
    let switch_a = &cleared.banks[A11];
    let approved = key_of(switch_a, "debit", "30.00", Status::Approved);
    let missing: Vec<Movement> = journal_a
        .iter()
        .filter(|m| m.request != format!("0200/{approved}"))
        .cloned()
        .collect();
    let r = reconcile(&export(&missing, A11, day), switch_a).unwrap();
    one_difference(&r, DifferenceKind::MissingAtParticipant, &approved);

    let mut extra = journal_a.clone();
    let mut phantom = journal_a
        .iter()
        .find(|m| m.request == format!("0200/{approved}"))
        .unwrap()
        .clone();
    let phantom_key = format!("{}999999", &approved[..approved.len() - 6]);
    phantom.request = format!("0200/{phantom_key}");
    extra.push(phantom);
    let r = reconcile(&export(&extra, A11, day), switch_a).unwrap();
    one_difference(&r, DifferenceKind::MissingAtSwitch, &phantom_key);

    let cross_day = key_of(switch_a, "debit", "20.00", Status::Approved);
    let changed: Vec<Movement> = journal_a
        .iter()
        .cloned()
        .map(|mut m| {
            if m.request == format!("0200/{cross_day}") {
                m.amount_minor = 2_100;
                m.applied_minor = 2_100;
            }
            m
        })
        .collect();
    let r = reconcile(&export(&changed, A11, day), switch_a).unwrap();
    one_difference(&r, DifferenceKind::AmountMismatch, &cross_day);

    let reversed = key_of(switch_a, "debit", "15.00", Status::Reversed);
    let unreversed: Vec<Movement> = journal_a
        .iter()
        .filter(|m| {
            !(m.kind == MovementKind::Reversal
                && m.original.as_deref() == Some(&format!("0200/{reversed}")))
        })
        .cloned()
        .collect();
    let r = reconcile(&export(&unreversed, A11, day), switch_a).unwrap();
    one_difference(&r, DifferenceKind::StatusMismatch, &reversed);

    // The day before: only its freeze; and the next day has the late packet.
    let before = d.clear(date("2026-11-19"), false).await.unwrap();
    assert_eq!(
        statuses(&before.wallets[WALLET11]),
        counts(&[("freeze", "approved", 1)])
    );
    assert!(before.banks.values().all(|f| f.lines.is_empty()));
    let after = d.clear(date("2026-11-21"), false).await.unwrap();
    assert_eq!(
        statuses(&after.banks[A11]),
        counts(&[("debit", "approved", 1)])
    );
    assert!(after.balanced());

    if backend == Backend::Sqlite {
        command_line(
            &d,
            &cleared,
            &export(&journal_a, A11, day),
            &export(&missing, A11, day),
        );
    }
    d.running.shutdown().await;
}

/// `switchboard clear` and `switchboard reconcile` as a user runs them.
fn command_line(d: &Day, cleared: &Cleared, bank_a: &ParticipantFile, broken: &ParticipantFile) {
    let bin = env!("CARGO_BIN_EXE_switchboard");
    let dir = d.dir.path();
    let config = dir.join("switchboard.toml");
    std::fs::write(
        &config,
        format!(
            "[switch]\ninstitution_id = \"{SWITCH_ID}\"\n[store]\npath = \"switchboard.db\"\n\
             [clearing]\ncutoff = \"23:00\"\ntime_zone = \"Asia/Shanghai\"\n\
             [[wallets]]\nlisten = \"127.0.0.1:0\"\ninstitutions = [\"{WALLET_ID}\"]\n\
             [[banks]]\ninstitution_id = \"{BANK_A}\"\nbins = [\"622202\"]\nhosts = [\"{}\"]\n\
             [[banks]]\ninstitution_id = \"{BANK_B}\"\nbins = [\"621700\"]\nhosts = [\"{}\"]\n",
            d.bank_a.addr, d.bank_b.addr
        ),
    )
    .unwrap();
    let out = dir.join("clearing");
    let run = std::process::Command::new(bin)
        .args(["clear", "--config"])
        .arg(&config)
        .args(["--date", "2026-11-20", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("net positions sum to zero"), "{stdout}");
    common::process::assert_no_progress("clear", &run.stderr);
    // At a terminal: the bar while the day's journal is read, and the same files.
    let again = dir.join("clearing-again");
    let (status, screen) = common::process::on_a_terminal(
        &format!(
            "{} clear --config {} --date 2026-11-20 --out {}",
            common::process::quoted(std::path::Path::new(bin)),
            common::process::quoted(&config),
            common::process::quoted(&again)
        ),
        dir,
    );
    let screen_text = String::from_utf8_lossy(&screen);
    assert!(status.success(), "{screen_text}");
    assert!(screen.contains(&0x1b), "no bar: {screen_text:?}");
    assert!(
        screen_text.contains("of the day's journal"),
        "{screen_text:?}"
    );
    for (name, _) in cleared.files() {
        assert_eq!(
            std::fs::read(again.join(&name)).unwrap(),
            std::fs::read(out.join(&name)).unwrap(),
            "{name}"
        );
    }
    for (name, text) in cleared.files() {
        assert_eq!(
            std::fs::read_to_string(out.join(&name)).unwrap(),
            text,
            "{name}"
        );
    }
    let ours = dir.join("bank-a.csv");
    std::fs::write(&ours, bank_a.render()).unwrap();
    let theirs = out.join(format!("bank-{A11}.csv"));
    let run = std::process::Command::new(bin)
        .args(["reconcile", "--ours"])
        .arg(&ours)
        .arg("--theirs")
        .arg(&theirs)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("no differences"), "{stdout}");

    std::fs::write(&ours, broken.render()).unwrap();
    let run = std::process::Command::new(bin)
        .args(["reconcile", "--json", "--ours"])
        .arg(&ours)
        .arg("--theirs")
        .arg(&theirs)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(json["missing_at_participant"], 1, "{json}");
    assert_eq!(
        json["differences"][0]["difference"], "missing_at_participant",
        "{json}"
    );

    // A file for another participant cannot be compared: exit status 2.
    let run = std::process::Command::new(bin)
        .args(["reconcile", "--ours"])
        .arg(&ours)
        .arg("--theirs")
        .arg(out.join(format!("bank-{B11}.csv")))
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("different participants"));

    // The wallet's side as a user runs it: records as `walletsim --record`
    // writes them, `walletsim export`, `switchboard reconcile`.
    let walletsim = std::path::Path::new(bin).with_file_name("walletsim");
    assert!(
        walletsim.exists(),
        "{} is missing: run `cargo test --workspace`",
        walletsim.display()
    );
    let records_path = dir.join("wallet-records.txt");
    let file = WalletRecords::appending_to(&records_path).unwrap();
    for r in d.records.all() {
        file.record(&Spec::switchboard(), &r.request, r.answer.as_ref());
    }
    let run = std::process::Command::new(&walletsim)
        .args(["export", "--records"])
        .arg(&records_path)
        .args(["--date", "2026-11-20", "--institution", WALLET_ID])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let wallet_file = dir.join("wallet.csv");
    std::fs::write(&wallet_file, &run.stdout).unwrap();
    let run = std::process::Command::new(bin)
        .args(["reconcile", "--ours"])
        .arg(&wallet_file)
        .arg("--theirs")
        .arg(out.join(format!("wallet-{WALLET11}.csv")))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("no differences"), "{stdout}");
    // A records file that is not one: a clear error naming the line.
    std::fs::write(&records_path, "0200zz -\n").unwrap();
    let run = std::process::Command::new(&walletsim)
        .args(["export", "--records"])
        .arg(&records_path)
        .args(["--date", "2026-11-20"])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("line 1: request: not hex"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_cleared_and_reconciled_on_the_embedded_store() {
    full_day(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_cleared_and_reconciled_on_the_memory_store() {
    full_day(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_cleared_and_reconciled_on_postgres() {
    full_day(Backend::Postgres).await;
}

/// The crash the chaos run found: the switch records a receive's debit and
/// credit identities with its reservation, then dies before sending either.
/// Recovery reverses both, and each bank answers its reversal 25 (it never
/// had the original) and lists it as `not_applied`. The switch's files must
/// list both identities the same way, though its journal never saw the
/// debit or the credit go out.
async fn allocated_never_sent(backend: Backend) {
    let Day {
        running,
        bank_a,
        bank_b,
        store,
        clock,
        cards_a,
        cards_b,
        wallet,
        records,
        dir,
    } = start(backend).await;
    let day = date("2026-11-24");
    clock.set(utc("2026-11-24 02:00:00"));
    let books = (
        bank_a.snapshot().total_balance_minor,
        bank_b.snapshot().total_balance_minor,
    );
    let f = wallet.freeze(&cards_a[0], 3_000, clock.now());
    assert_eq!(
        code(&wallet.send(&f).await.unwrap()),
        ResponseCode::APPROVED
    );
    running.shutdown().await;

    // What the switch had committed when it died: the saga in state
    // debiting with both identities, nothing sent.
    let identity = |stan: &[u8; 6]| SentMessage {
        stan: *stan,
        transmission: iso8583::fields::format_transmission(clock.now())
            .as_bytes()
            .try_into()
            .unwrap(),
    };
    let (debit, credit) = (identity(b"990001"), identity(b"990002"));
    let receive = wallet.receive(&f, &cards_b[0], 1_200, clock.now());
    let request = RequestKey {
        mti: *b"0200",
        acquirer: InstitutionId::from_field(32, WALLET_ID.as_bytes()).unwrap(),
        transmission: receive.get(num::TRANSMISSION).unwrap()[..]
            .try_into()
            .unwrap(),
        stan: receive.get(num::STAN).unwrap()[..].try_into().unwrap(),
    };
    let reserved = store
        .reserve(NewReceive {
            debit,
            credit,
            owner: "crashed".into(),
            request,
            request_digest: [0; 32],
            freeze: FreezeKey::of_request(&f).unwrap(),
            amount_minor: 1_200,
            receiver_pan: cards_b[0].clone(),
            receiver_bank: BANK_B.into(),
            created_at_ms: clock.now_ms(),
        })
        .await
        .unwrap();
    assert!(matches!(reserved, Reserve::Reserved(_)), "{reserved:?}");

    // The restart: recovery fails the saga and queues both reversals.
    let config = common::config(
        dir.path(),
        vec![
            bank_config(BANK_A, "622202", bank_a.addr, Duration::from_secs(5)),
            bank_config(BANK_B, "621700", bank_b.addr, Duration::from_secs(5)),
        ],
    );
    let running = service::start(config, store.clone(), clock.clone())
        .await
        .unwrap();
    assert_eq!(running.recovered.sagas_failed, 1);
    let d = Day {
        wallet: WalletClient::connect(running.wallet_addrs[0], FramingConfig::default(), WALLET_ID)
            .await
            .unwrap()
            .with_records(Some(records.clone())),
        running,
        bank_a,
        bank_b,
        store,
        clock,
        cards_a,
        cards_b,
        records,
        dir,
    };
    d.drain().await;
    d.unfreeze(&f, 3_000).await;
    d.drain().await;

    // Both reversals were answered 25 and nothing moved.
    let reversal_codes: Vec<String> = d
        .store
        .saf_entries()
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.entry.kind == switchboard::store::SafKind::Reversal)
        .map(|e| e.last_result.unwrap_or_default())
        .collect();
    assert_eq!(reversal_codes, ["25", "25"]);
    assert_eq!(
        (
            d.bank_a.snapshot().total_balance_minor,
            d.bank_b.snapshot().total_balance_minor
        ),
        books
    );
    assert!(d
        .bank_a
        .snapshot()
        .holds
        .iter()
        .all(|h| h.hold.remaining_minor == 0));

    // Both files carry the identities as `not_applied`, and match the banks'.
    let cleared = d.clear(day, false).await.unwrap();
    let key = |sent: &SentMessage| {
        format!(
            "00000010000/{}/{}",
            std::str::from_utf8(&sent.transmission).unwrap(),
            std::str::from_utf8(&sent.stan).unwrap()
        )
    };
    for (bank, kind, sent) in [(A11, "debit", &debit), (B11, "credit", &credit)] {
        let file = &cleared.banks[bank];
        let line = file
            .lines
            .iter()
            .find(|l| l.key == key(sent))
            .unwrap_or_else(|| panic!("no line for the {kind} in {}", file.render()));
        assert_eq!(
            (line.kind.to_string(), line.status, line.reversal.as_str()),
            (kind.to_string(), Status::NotApplied, "25")
        );
        assert_eq!(line.amount, money("12.00"));
        assert_eq!(line.settled, Decimal::ZERO);
        let handle = if bank == A11 { &d.bank_a } else { &d.bank_b };
        let theirs = export(&d.journal(handle), bank, day);
        let r = reconcile(&theirs, file).unwrap();
        assert!(r.is_clean(), "{}", r.report());
        assert_eq!(r.matched, file.lines.len());
    }
    assert!(cleared.balanced());
    assert!(cleared.positions.iter().all(|p| p.net.is_zero()));
    let r = reconcile(
        &wallet_export(&d.records.all(), day),
        &cleared.wallets[WALLET11],
    )
    .unwrap();
    assert!(r.is_clean(), "{}", r.report());
    d.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocated_never_sent_is_not_applied_in_both_files_on_the_embedded_store() {
    allocated_never_sent(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocated_never_sent_is_not_applied_in_both_files_on_postgres() {
    allocated_never_sent(Backend::Postgres).await;
}

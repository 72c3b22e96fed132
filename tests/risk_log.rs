//! The risk counters' durable record on the embedded store (an append-only
//! log and a snapshot row per counter, `store/sqlite/risk_log.rs`): a
//! checkpoint cut short, log rows left after a completed one, the bound on
//! pending counters, counters forgotten by a full book and loaded back, and a process killed with
//! SIGKILL while it counts. Every check is a real count: a limit judged one
//! below, at and one past what must be stored.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard::dialect::InstitutionId;
use switchboard::store::sqlite::{CheckpointOptions, SqliteOptions, SqliteStore};
use switchboard::store::{Limit, RiskLedger};

/// A daily total, a sliding window and a distinct count of one card.
fn limits(card: &str, now_ms: i64, packet: &str) -> Vec<Limit> {
    let limit = |rule: &str, since_ms, window_ms, distinct: Option<&str>| Limit {
        rule: rule.into(),
        subject: format!("card:{card}").into(),
        since_ms,
        window_ms,
        max_count: None,
        max_sum_minor: None,
        amount_minor: 100,
        enforce: true,
        distinct: distinct.map(Into::into),
        record: true,
    };
    vec![
        limit("daily", 0, None, None),
        limit("burst", now_ms - 1_000, Some(1_000), None),
        limit("packets", now_ms - 1_000, Some(1_000), Some(packet)),
    ]
}

/// Whether each of `limits`, made read-only with at most `max` counted,
/// is exceeded at `now_ms` (nothing is recorded).
async fn exceeded_at(
    store: &SqliteStore,
    mut limits: Vec<Limit>,
    max: u64,
    now_ms: i64,
) -> Vec<usize> {
    for l in &mut limits {
        l.record = false;
        l.max_count = Some(max);
    }
    store.take(limits, now_ms).await.unwrap()
}

/// Checks that the three counters of `card` hold exactly `events` events
/// (and, the distinct count, `packets` packets) at `now_ms`.
async fn assert_counted(store: &SqliteStore, card: &str, now_ms: i64, events: u64, packets: u64) {
    let all = limits(card, now_ms, "none");
    let (total_and_window, distinct) = (all[..2].to_vec(), all[2..].to_vec());
    assert_eq!(
        exceeded_at(store, total_and_window.clone(), events, now_ms).await,
        [0, 1],
        "card {card}: fewer than {events} events"
    );
    assert!(
        exceeded_at(store, total_and_window, events + 1, now_ms)
            .await
            .is_empty(),
        "card {card}: more than {events} events"
    );
    assert_eq!(
        exceeded_at(store, distinct.clone(), packets, now_ms).await,
        [0],
        "card {card}: fewer than {packets} packets"
    );
    assert!(
        exceeded_at(store, distinct, packets + 1, now_ms)
            .await
            .is_empty(),
        "card {card}: more than {packets} packets"
    );
}

fn options(after: Duration, chunk: usize) -> SqliteOptions {
    SqliteOptions {
        risk_checkpoint: CheckpointOptions {
            after,
            chunk,
            ..CheckpointOptions::default()
        },
        ..SqliteOptions::default()
    }
}

/// (snapshot rows, log rows) in the file.
fn rows(db: &Path) -> (i64, i64) {
    let c = rusqlite::Connection::open(db).unwrap();
    let count = |table: &str| -> i64 {
        c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    };
    (count("risk_counters"), count("risk_log"))
}

/// Counts one event of each of `card`'s counters at `now_ms`.
async fn count_one(store: &SqliteStore, card: &str, now_ms: i64, packet: &str) {
    let exceeded = store
        .take(limits(card, now_ms, packet), now_ms)
        .await
        .unwrap();
    assert!(exceeded.is_empty(), "card {card} at {now_ms}: {exceeded:?}");
}

/// Runs one command through the writer: a batch, with its checkpoint step.
async fn one_batch(store: &SqliteStore) {
    store.record_hits(Vec::new()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_cut_short_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("switchboard.db");
    // One counter rewritten a batch, as soon as it is dirty.
    let store = SqliteStore::open_with(&db, options(Duration::ZERO, 1)).unwrap();
    for (now, packet) in [(10, "p1"), (20, "p2"), (30, "p1")] {
        count_one(&store, "a", now, packet).await;
    }
    // The three events of each counter are in one log row; two batches
    // rewrite two of the three counters.
    one_batch(&store).await;
    one_batch(&store).await;
    store.close().await.unwrap();
    assert_eq!(
        rows(&db),
        (2, 1),
        "two counters rewritten, the log row kept"
    );

    let store = SqliteStore::open(&db).unwrap();
    assert_counted(&store, "a", 40, 3, 2).await;
    // And counting goes on from there.
    count_one(&store, "a", 50, "p3").await;
    assert_counted(&store, "a", 60, 4, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_rows_after_a_completed_checkpoint_are_replayed_on_the_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("switchboard.db");
    let store = SqliteStore::open_with(&db, options(Duration::ZERO, 512)).unwrap();
    for (now, packet) in [(10, "p1"), (20, "p2")] {
        count_one(&store, "a", now, packet).await;
    }
    one_batch(&store).await;
    store.close().await.unwrap();
    assert_eq!(
        rows(&db),
        (3, 0),
        "every counter rewritten, the log emptied"
    );

    // No checkpoint for an hour: what follows stays in the log.
    let store = SqliteStore::open_with(&db, options(Duration::from_secs(3_600), 512)).unwrap();
    assert_counted(&store, "a", 25, 2, 2).await;
    for (now, packet) in [(30, "p2"), (40, "p3")] {
        count_one(&store, "a", now, packet).await;
    }
    one_batch(&store).await;
    store.close().await.unwrap();
    assert_eq!(rows(&db), (3, 1));

    let store = SqliteStore::open(&db).unwrap();
    assert_counted(&store, "a", 50, 4, 3).await;
    // Past the window only the daily total is left.
    let later = 2_000;
    let all = limits("a", later, "none");
    assert_eq!(exceeded_at(&store, all.clone(), 1, later).await, [0]);
    assert_eq!(
        exceeded_at(&store, all[1..].to_vec(), 0, later).await,
        [0, 1]
    );
    assert!(exceeded_at(&store, all[1..].to_vec(), 1, later)
        .await
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_pending_counters_than_allowed_are_rewritten_without_waiting() {
    // Two cards' three counters each pending; no checkpoint due for an hour.
    for (max_pending, rewritten) in [(3, 3), (CheckpointOptions::default().max_pending, 0)] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("switchboard.db");
        let mut opts = options(Duration::from_secs(3_600), 1);
        opts.risk_checkpoint.max_pending = max_pending;
        let store = SqliteStore::open_with(&db, opts).unwrap();
        count_one(&store, "a", 10, "p1").await;
        count_one(&store, "b", 20, "p2").await;
        // Over the bound, each batch rewrites one counter until it is met.
        for _ in 0..6 {
            one_batch(&store).await;
        }
        store.close().await.unwrap();
        assert_eq!(rows(&db).0, rewritten, "with at most {max_pending} pending");

        let store = SqliteStore::open(&db).unwrap();
        assert_counted(&store, "a", 30, 1, 1).await;
        assert_counted(&store, "b", 30, 1, 1).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_forgotten_by_a_full_book_are_loaded_back_exactly() {
    for after in [Duration::ZERO, Duration::from_secs(3_600)] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("switchboard.db");
        let store = SqliteStore::open_with(
            &db,
            SqliteOptions {
                // Three cards' counters at most: the book forgets all the time.
                risk_book_capacity: 9,
                ..options(after, 512)
            },
        )
        .unwrap();
        let cards: Vec<String> = (0..8).map(|n| n.to_string()).collect();
        for round in 0..3i64 {
            for (i, card) in cards.iter().enumerate() {
                let now = 100 + round * 10 + i as i64;
                let packet = format!("p{}", round.min(1));
                count_one(&store, card, now, &packet).await;
            }
            one_batch(&store).await;
        }
        for card in &cards {
            assert_counted(&store, card, 200, 3, 2).await;
        }
        let (snapshots, _) = rows(&db);
        if after.is_zero() {
            assert_eq!(snapshots, 24, "loaded from the snapshots");
        } else {
            assert_eq!(snapshots, 0, "loaded from the log alone");
        }
    }
}

// ---------------------------------------------------------------------------
// kill -9

const CHILD_ENV: &str = "SWITCHBOARD_RISK_KILL_TEST_DB";
const CHILD_CARDS: usize = 4;

/// In the child (this test run again with [`CHILD_ENV`] set): each of
/// [`CHILD_CARDS`] tasks counts events of its own card, with checkpoints
/// running all the time, and prints `ACK card n` once the n-th event is
/// committed (a command sent after it has returned), until killed. In the
/// parent: SIGKILL mid-stream, reopen, and each card holds every event
/// acknowledged and at most the one in flight besides.
#[test]
fn kill_9_while_counting_loses_nothing_acknowledged() {
    if let Ok(db) = std::env::var(CHILD_ENV) {
        count_until_killed(Path::new(&db));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("switchboard.db");
    let mut acked = [0u64; CHILD_CARDS];
    common::process::kill_9_child(
        "kill_9_while_counting_loses_nothing_acknowledged",
        (CHILD_ENV, &db),
        |ack| {
            let (card, n) = ack.split_once(' ').unwrap();
            let card: usize = card.parse().unwrap();
            acked[card] = acked[card].max(n.parse().unwrap());
            acked.iter().sum::<u64>() >= 600
        },
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = SqliteStore::open(&db).unwrap();
        for (card, &n) in acked.iter().enumerate() {
            let card = card.to_string();
            let all = limits(&card, 0, "none");
            let counted = all[..2].to_vec();
            // At least every acknowledged event...
            assert_eq!(
                exceeded_at(&store, counted.clone(), n, 0).await,
                [0, 1],
                "card {card}: fewer than the {n} acknowledged"
            );
            // ...and at most the one in flight besides.
            assert!(
                exceeded_at(&store, counted, n + 2, 0).await.is_empty(),
                "card {card}: more than {} events",
                n + 1
            );
        }
        eprintln!("kill -9: acknowledged per card {acked:?}");
    });
}

fn count_until_killed(db: &Path) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = Arc::new(SqliteStore::open_with(db, options(Duration::ZERO, 2)).unwrap());
        let deadline = Instant::now() + Duration::from_secs(60);
        let tasks: Vec<_> = (0..CHILD_CARDS)
            .map(|card| {
                let store = store.clone();
                tokio::spawn(async move {
                    for n in 1..=100_000u64 {
                        if Instant::now() > deadline {
                            return;
                        }
                        // Every event inside the window: now stays 0.
                        let counted = limits(&card.to_string(), 0, "p")[..2].to_vec();
                        assert!(store.take(counted, 0).await.unwrap().is_empty());
                        one_batch(&store).await;
                        println!("ACK {card} {n}");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
}

// ---------------------------------------------------------------------------
// kill -9 of `serve` under risk load

/// Receives the wallet may make in a settlement day, in the load below.
const WALLET_DAY_MAX: u64 = 600;
const RATE: u64 = 200;
const SECONDS: u64 = 8;
const FREEZES: u64 = 8;

/// `switchboard serve` with a daily limit on the wallet's receives, killed
/// with SIGKILL twice under `walletsim load` (more receives than the limit)
/// and restarted on the same store: no more receives are approved than the
/// limit, the limit is reached (65 for the rest), and the counter stored
/// at the end holds exactly the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_killed_under_risk_load_approves_no_more_than_the_limit() {
    use common::process::{addr, banks_and_switch, serve, simulator_path, KillOnDrop};
    use simulators::scenarios::BankView;
    use std::io::Write;
    use std::process::{Command, Stdio};

    let setup = banks_and_switch(31, 32);
    std::fs::write(
        setup.dir.path().join("risk.toml"),
        format!(
            "[[rules]]\nid = \"wallet-receives\"\nkind = \"daily\"\nmode = \"enforce\"\n\
             request = \"receive\"\nper = \"wallet\"\nmax_count = {WALLET_DAY_MAX}\n"
        ),
    )
    .unwrap();
    writeln!(
        std::fs::OpenOptions::new()
            .append(true)
            .open(&setup.config)
            .unwrap(),
        "[risk]\nrules_file = \"risk.toml\""
    )
    .unwrap();
    let mut switch = serve(&setup.config);

    let out = setup.dir.path().join("out.json");
    let err = setup.dir.path().join("err.txt");
    let started = Instant::now();
    let mut walletsim = KillOnDrop::new(
        Command::new(simulator_path("walletsim"))
            .arg("load")
            .args(["--switch", &addr(setup.wallet_port).to_string()])
            .args(["--payer-admin", &addr(setup.bank_a.admin).to_string()])
            .args(["--receiver-admin", &addr(setup.bank_b.admin).to_string()])
            .args(["--institution", common::WALLET_ID, "--json"])
            .args([
                "--rate",
                &RATE.to_string(),
                "--duration",
                &SECONDS.to_string(),
            ])
            .args(["--connections", "2", "--freezes", &FREEZES.to_string()])
            .args(["--freeze-amount", "100000", "--give-up-after", "25"])
            .stdout(Stdio::from(std::fs::File::create(&out).unwrap()))
            .stderr(Stdio::from(std::fs::File::create(&err).unwrap()))
            .spawn()
            .unwrap(),
    );
    // The load begins once bank A holds the freezes: the kills meet it.
    let bank_a = BankView::Admin(addr(setup.bank_a.admin));
    while (bank_a.snapshot().await.unwrap().holds.len() as u64) < FREEZES {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no freezes placed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let load_started = Instant::now();
    for at_ms in [1_000, 2_500] {
        tokio::time::sleep_until((load_started + Duration::from_millis(at_ms)).into()).await;
        switch.kill().unwrap(); // SIGKILL
        switch.wait().unwrap();
        switch = serve(&setup.config);
    }
    let status = loop {
        if let Some(status) = walletsim.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "walletsim still runs"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let stdout = std::fs::read_to_string(&out).unwrap();
    let stderr = std::fs::read_to_string(&err).unwrap();
    assert!(status.success(), "walletsim: {status}\n{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let code = |c: &str| report["codes"][c].as_u64().unwrap_or(0);
    let approved = code("00");
    assert!(approved <= WALLET_DAY_MAX, "{approved} approved: {report}");
    assert!(code("65") > 0, "the limit was reached: {report}");
    // Counted and not approved: only receives a kill interrupted (answered
    // 91, or sent again and counted again).
    let resends = report["resends"].as_u64().unwrap();
    assert!(
        WALLET_DAY_MAX - approved <= code("91") + resends,
        "{approved} approved: {report}"
    );
    common::process::stop(switch);

    let store = SqliteStore::open(&setup.dir.path().join("switchboard.db")).unwrap();
    let wallet = Limit {
        rule: "wallet-receives".into(),
        subject: format!(
            "wallet:{}",
            InstitutionId::from_field(32, common::WALLET_ID.as_bytes()).unwrap()
        )
        .into(),
        // Any start before the day's: the counter answers with its day's count.
        since_ms: 0,
        window_ms: None,
        max_count: None,
        max_sum_minor: None,
        amount_minor: 0,
        enforce: true,
        distinct: None,
        record: false,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert_eq!(
        exceeded_at(&store, vec![wallet.clone()], WALLET_DAY_MAX, now).await,
        [0]
    );
    assert!(exceeded_at(&store, vec![wallet], WALLET_DAY_MAX + 1, now)
        .await
        .is_empty());
}

//! Journal retention on both stores, with real processes: journal rows of
//! old and recent settlement days are written, some days are cleared by
//! `switchboard clear` (which records them), and `switchboard serve` with
//! `[store] journal_retention_days = 3` purges at start: the messages of old
//! days that are cleared with both neighbours are emptied (their summary
//! columns kept), each purged day is logged, and days not cleared, days
//! whose neighbour is not, and recent days keep their messages. A purged
//! day then reads as purged in `switchboard journal` and cannot be cleared
//! again.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use chrono::{Days, NaiveDate};
use iso8583::framing::FramingConfig;
use simulators::bank_server::spawn_bank;
use switchboard::clearing::Settlement;
use switchboard::config::StoreConfig;
use switchboard::store::{Direction, JournalEntry};

mod common;

use common::process::{free_port, serve_logged, stop};
use common::stored::Db;
use common::{books_a, books_b, pg};

const ROWS_PER_DAY: usize = 3;

fn switchboard(args: &[&str], config: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove(switchboard::vault::KEYS_ENV)
        .output()
        .unwrap()
}

/// Journal rows in the middle of each of `days`, as the switch writes them.
async fn seed(store: &StoreConfig, settlement: &Settlement, days: &[NaiveDate]) {
    let store = switchboard::service::open_store(store).await.unwrap();
    for &date in days {
        let (from, to) = settlement.window_ms(date);
        for n in 0..ROWS_PER_DAY {
            store.journal(JournalEntry {
                at_ms: from + (to - from) / 2 + n as i64,
                direction: Direction::In,
                peer: "bank 48020000".into(),
                mti: *b"0810",
                processing_code: None,
                stan: Some(format!("{n:06}")),
                transmission: None,
                acquirer: None,
                response_code: Some("00".into()),
                pan_masked: Some("622202******7890".into()),
                amount_minor: None,
                note: None,
                raw: Bytes::from(format!("0810 6222021234567890 {date} {n}")),
            });
        }
    }
    // Written before the store is let go.
    store.journal_between(0, 1).await.unwrap();
}

async fn retention_purges_old_cleared_days_only(db: Db, store: StoreConfig) {
    let dir = tempfile::tempdir().unwrap();
    let bank_a = spawn_bank(books_a(), FramingConfig::default())
        .await
        .unwrap();
    let bank_b = spawn_bank(books_b(), FramingConfig::default())
        .await
        .unwrap();
    let config = db.switch_config(dir.path(), free_port(), (bank_a.addr, bank_b.addr));
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "[store]\n",
        "[store]\njournal_retention_days = 3\n",
        1,
    );
    std::fs::write(&config, text).unwrap();

    // The configuration's settlement days: 23:00 Asia/Shanghai.
    let settlement = Settlement::default();
    let today = settlement.date_of_ms(chrono::Utc::now().timestamp_millis());
    let ago = |n: u64| today.checked_sub_days(Days::new(n)).unwrap();
    seed(
        &store,
        &settlement,
        &[ago(10), ago(9), ago(8), ago(7), ago(2)],
    )
    .await;
    for day in [ago(11), ago(10), ago(9), ago(8), ago(3), ago(2), ago(1)] {
        let out = dir.path().join(format!("clearing-{day}"));
        let cleared = switchboard(
            &[
                "clear",
                "--date",
                &day.to_string(),
                "--out",
                out.to_str().unwrap(),
            ],
            &config,
        );
        let stdout = String::from_utf8_lossy(&cleared.stdout);
        assert!(
            cleared.status.success() && stdout.contains("recorded as cleared"),
            "{stdout}{}",
            String::from_utf8_lossy(&cleared.stderr)
        );
    }
    assert_eq!(db.count("SELECT count(*) FROM cleared_days").await, 7);

    // The switch purges at start; its log says which days, and how many rows.
    let log_path = dir.path().join("serve.log");
    let switch = serve_logged(&config, &log_path, "info");
    let purged_lines = || {
        std::fs::read_to_string(&log_path)
            .unwrap()
            .lines()
            .filter(|l| l.contains("journal messages purged"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while purged_lines().len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no purge logged: {}",
            std::fs::read_to_string(&log_path).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop(switch);

    let lines = purged_lines();
    assert_eq!(lines.len(), 2, "{lines:?}");
    for (line, day) in lines.iter().zip([ago(10), ago(9)]) {
        assert!(
            line.contains(&format!("day={day}")) && line.contains(&format!("rows={ROWS_PER_DAY}")),
            "{line}"
        );
    }
    let reader = switchboard::service::open_store(&store).await.unwrap();
    for (day, purged) in [
        (ago(10), true),
        (ago(9), true),
        // Its next day is not cleared: clearing that day would read its end.
        (ago(8), false),
        // Not cleared.
        (ago(7), false),
        // Cleared, but within the three days kept.
        (ago(2), false),
    ] {
        let (from, to) = settlement.window_ms(day);
        let entries = reader.journal_between(from, to).await.unwrap();
        assert_eq!(entries.len(), ROWS_PER_DAY, "{day}: the entries stay");
        assert!(
            entries.iter().all(|e| e.raw.is_empty() == purged),
            "{day}: purged {purged}, entries {entries:?}"
        );
        // Their summary columns stay.
        assert!(
            entries
                .iter()
                .all(|e| e.pan_masked.as_deref() == Some("622202******7890")),
            "{entries:?}"
        );
    }
    // Let go before the commands below open the store.
    drop(reader);
    assert_eq!(
        db.count("SELECT count(*) FROM cleared_days WHERE purged_at_ms IS NOT NULL")
            .await,
        2
    );

    // An operator reading those days is told they were purged...
    let journal = switchboard(
        &[
            "journal",
            "--from",
            &ago(11).to_string(),
            "--to",
            &ago(8).to_string(),
        ],
        &config,
    );
    let text = String::from_utf8_lossy(&journal.stdout);
    assert!(journal.status.success(), "{text}");
    for day in [ago(10), ago(9)] {
        assert!(
            text.contains(&format!("settlement date {day}: messages purged")),
            "{text}"
        );
    }
    assert_eq!(
        text.matches("(message purged by retention)").count(),
        2 * ROWS_PER_DAY,
        "{text}"
    );
    assert!(text.contains("622202******7890"), "{text}");
    // ...and a purged day cannot be cleared again.
    let again = switchboard(&["clear", "--date", &ago(10).to_string()], &config);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success(), "{stderr}");
    assert!(stderr.contains("cannot be cleared again"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switch.db");
    retention_purges_old_cleared_days_only(Db::Sqlite(path.clone()), StoreConfig::Embedded(path))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_on_postgresql() {
    let url = pg::database().await;
    retention_purges_old_cleared_days_only(Db::Postgres(url.clone()), StoreConfig::Postgres(url))
        .await;
}

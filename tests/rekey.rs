//! Key rotation with real processes, on both stores: a switch seals card
//! data under key 1 of its key file and serves a freeze and a receive (on
//! the embedded store 3,000 more, so that its ended sagas fill more packs
//! than `rekey` opens in a transaction);
//! `switchboard keygen --add` adds key 2 and makes it current, and
//! `switchboard rekey` seals everything stored under it (on PostgreSQL while
//! the switch runs, restarted with the new file; the embedded store refuses
//! it while the switch holds the file, and takes it once stopped). Every
//! sealed value then carries key 2, and with key 1 removed from the file the
//! switch starts (recovery reads the store), answers an exact resend with
//! its stored answer (the resend digest's HMAC key is kept by rotation) and
//! `switchboard journal --unmask` reads every message.

use std::path::Path;
use std::process::Command;

use iso8583::framing::FramingConfig;
use simulators::bank_server::spawn_bank;
use simulators::wallet::{code, WalletClient};
use switchboard::vault::SEALED_MAGIC;

mod common;

use common::process::{addr, free_port, serve_logged, stop};
use common::stored::Db;
use common::{books_a, books_b, pg, WALLET_ID};

fn switchboard(args: &[&str], dir: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .current_dir(dir)
        .env_remove(switchboard::vault::KEYS_ENV)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{args:?}: {text}");
    text
}

/// Every value of every sealed column: (column, value).
async fn sealed_values(db: &Db) -> Vec<(String, Vec<u8>)> {
    let mut columns = vec![
        ("freezes", "payer_pan"),
        ("sagas", "receiver_pan"),
        ("answers", "response"),
        ("saf", "message"),
    ];
    columns.push(("sagas", "response"));
    match db {
        Db::Postgres(_) => columns.push(("journal", "raw")),
        // The embedded store journals in packs, their messages sealed together.
        Db::Sqlite(_) => columns.push(("journal_packs", "raws")),
    }
    let mut out = Vec::new();
    for (table, column) in columns {
        for value in db
            .values(&format!(
                "SELECT {column} FROM {table} WHERE {column} IS NOT NULL"
            ))
            .await
        {
            out.push((format!("{table}.{column}"), value));
        }
    }
    out
}

/// The key id a stored value is sealed under (`None`: in clear).
fn key_id(value: &[u8]) -> Option<u8> {
    if let Some(rest) = value.strip_prefix(b"enc1:") {
        let id = rest.split(|&b| b == b':').next()?;
        return std::str::from_utf8(id).ok()?.parse().ok();
    }
    match value.strip_prefix(&SEALED_MAGIC[..]) {
        Some([id, ..]) => Some(*id),
        _ => None,
    }
}

async fn rotation(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let online = matches!(db, Db::Postgres(_));
    switchboard(&["keygen", "--out", "keys.toml"], dir.path());
    let (a, b) = (books_a(), books_b());
    let (payer, receiver) = (a.accounts()[0].0.clone(), b.accounts()[0].0.clone());
    let bank_a = spawn_bank(a, FramingConfig::default()).await.unwrap();
    let bank_b = spawn_bank(b, FramingConfig::default()).await.unwrap();
    let port = free_port();
    let config = db.switch_config(dir.path(), port, (bank_a.addr, bank_b.addr));
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("[security]\ndata_key_file = \"keys.toml\"\nrequire_encryption = true\n");
    std::fs::write(&config, text).unwrap();
    let config_arg = config.to_str().unwrap();
    let log = dir.path().join("serve.log");

    // Under key 1: a freeze of 40.00 and a receive of 4.00 from it.
    let switch = serve_logged(&config, &log, "info");
    let wallet = WalletClient::connect(addr(port), FramingConfig::default(), WALLET_ID)
        .await
        .unwrap();
    let now = chrono::Utc::now().naive_utc();
    let first_day = settlement_day();
    let freeze = wallet.freeze(&payer, 4000, now);
    let frozen = wallet.send(&freeze).await.unwrap();
    assert_eq!(code(&frozen), "00");
    let receive = wallet.receive(&freeze, &receiver, 400, now);
    let received = wallet.send(&receive).await.unwrap();
    assert_eq!(code(&received), "00");
    if !online {
        // Enough receives for the embedded store to write its ended sagas
        // in more packs than `rekey` opens in a transaction (16), the card
        // data in them sealed.
        for _ in 0..3000 {
            let more = wallet
                .send(&wallet.receive(&freeze, &receiver, 1, now))
                .await
                .unwrap();
            assert_eq!(code(&more), "00");
        }
    }
    let before = sealed_values(&db).await;
    assert!(
        before.iter().all(|(_, v)| key_id(v) == Some(1)),
        "{before:?}"
    );

    let added = switchboard(&["keygen", "--add", "keys.toml"], dir.path());
    assert!(added.contains("data key 2 added"), "{added}");
    let beside = if online {
        // Instances restarted with the new file seal under key 2 and read
        // both; rekey then runs beside them.
        stop(switch);
        Some(serve_logged(&config, &log, "info"))
    } else {
        // The embedded store is the switch's while it runs.
        let refused = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["rekey", "--config", config_arg])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "{stderr}");
        assert!(stderr.contains("is held by serve"), "{stderr}");
        stop(switch);
        None
    };
    let packs_before = match &db {
        Db::Sqlite(_) => db.values("SELECT body FROM saga_packs").await,
        Db::Postgres(_) => Vec::new(),
    };
    assert_eq!(
        packs_before.is_empty(),
        online,
        "{} packs",
        packs_before.len()
    );
    if !online {
        assert!(packs_before.len() > 16, "{} packs", packs_before.len());
        // The first receive, resent below, is among them.
        let stan = receive.get(11).unwrap().to_vec();
        let packed = db.values("SELECT stan FROM saga_keys").await;
        assert!(packed.contains(&stan), "{} keys", packed.len());
    }
    let rekeyed = switchboard(
        &["rekey", "--config", config_arg, "--batch", "20"],
        dir.path(),
    );
    assert!(
        rekeyed.contains("everything stored is sealed under key 2"),
        "{rekeyed}"
    );
    assert!(rekeyed.contains("keys 1 may now be removed"), "{rekeyed}");
    let after = sealed_values(&db).await;
    assert!(after.len() >= before.len(), "{after:?}");
    for (column, value) in &after {
        assert_eq!(key_id(value), Some(2), "{column}: {rekeyed}");
    }
    let journal = match db {
        Db::Postgres(_) => "journal.raw",
        Db::Sqlite(_) => "journal_packs.raws",
    };
    for column in [
        "freezes.payer_pan",
        "sagas.receiver_pan",
        "sagas.response",
        journal,
    ] {
        assert!(after.iter().any(|(c, _)| c == column), "no {column}");
    }
    if let Some(switch) = beside {
        stop(switch);
    }
    if !online {
        let packs_after = db.values("SELECT body FROM saga_packs").await;
        assert_eq!(packs_after.len(), packs_before.len());
        assert!(
            packs_after.iter().all(|p| !packs_before.contains(p)),
            "every pack sealed anew"
        );
    }

    // Key 1 removed: everything still reads.
    let keys = dir.path().join("keys.toml");
    let only_new: String = std::fs::read_to_string(&keys)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("1 = "))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&keys, only_new).unwrap();
    let journal = switchboard(
        &["journal", "--config", config_arg, "--unmask", "--json"],
        dir.path(),
    );
    assert!(journal.contains(&payer), "{journal}");
    assert!(journal.contains(&receiver), "{journal}");
    if !online {
        // The day's clearing reads every saga, packed ones included, their
        // receivers' PANs opened under key 2 alone.
        // A run crossing the cut-off (15:00 UTC) clears both its days.
        let mut days = vec![first_day, settlement_day()];
        days.dedup();
        let mut receives = 0;
        let mut cleared = String::new();
        for day in days {
            let out = dir.path().join(format!("clearing-{day}"));
            cleared += &switchboard(
                &[
                    "clear",
                    "--config",
                    config_arg,
                    "--date",
                    &day.to_string(),
                    "--out",
                    out.to_str().unwrap(),
                ],
                dir.path(),
            );
            assert!(std::fs::read_dir(&out).unwrap().count() >= 3, "{cleared}");
            // Every receive cleared as approved: the packed sagas read.
            let wallet_file = std::fs::read_dir(&out)
                .unwrap()
                .map(|f| f.unwrap().path())
                .find(|p| {
                    p.file_name()
                        .unwrap()
                        .to_str()
                        .unwrap()
                        .starts_with("wallet-")
                })
                .unwrap();
            receives += std::fs::read_to_string(&wallet_file)
                .unwrap()
                .lines()
                .filter(|l| l.starts_with("D,receive,") && l.contains(",approved,"))
                .count();
        }
        assert_eq!(receives, 3001, "{cleared}");
    }
    let switch = serve_logged(&config, &log, "info");
    let wallet = WalletClient::connect(addr(port), FramingConfig::default(), WALLET_ID)
        .await
        .unwrap();
    let held = bank_a.snapshot().total_held_minor;
    let again = wallet.send(&freeze).await.unwrap();
    assert_eq!(code(&again), "00");
    assert_eq!(again, frozen, "the stored answer, exactly");
    // Answered from the store: the bank was not asked to freeze again.
    assert_eq!(bank_a.snapshot().total_held_minor, held);
    // The receive's answer: on the embedded store, from its pack.
    let again = wallet.send(&receive).await.unwrap();
    assert_eq!(again, received, "the stored answer, exactly");
    stop(switch);
}

/// Today's settlement day: 23:00 in Shanghai (UTC+8) starts the next.
fn settlement_day() -> chrono::NaiveDate {
    (chrono::Utc::now() + chrono::Duration::hours(9)).date_naive()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekey_rotates_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    rotation(Db::Sqlite(dir.path().join("switch.db"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekey_rotates_postgresql_while_the_switch_runs() {
    rotation(Db::Postgres(pg::database().await)).await;
}

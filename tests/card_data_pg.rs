//! Card data at rest on PostgreSQL: with the process's data keys installed,
//! every scenario runs through a switch on a real PostgreSQL store, and then
//! every row of every table, read as text (`bytea` as hex), is searched for
//! every card number of both banks, as digits and as hex: none is found,
//! while the sealed columns are there, sealed. A test binary of its own: the
//! keys are installed once per process.

use std::time::Duration;

use switchboard::vault::{self, Vault};

mod common;

use common::{assert_passed, books_a, books_b, pg, start_with, Backend};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_postgresql_table_holds_a_card_number_once_keys_are_installed() {
    vault::install(Vault::parse(&Vault::generate()).unwrap()).unwrap();
    let h = start_with(Backend::Postgres).await;
    for report in simulators::scenarios::run_all(&h.world).await {
        assert_passed(&report);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while h.bank_a.snapshot().total_held_minor != 0 {
        assert!(tokio::time::Instant::now() < deadline, "holds left");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = h.postgres_url.clone().unwrap();
    // Shutting down writes the rest of the journal.
    h.running.shutdown().await;

    let cards: Vec<String> = books_a()
        .accounts()
        .into_iter()
        .chain(books_b().accounts())
        .map(|(pan, _)| pan)
        .collect();
    let client = pg::connect(&url).await;
    let tables: Vec<String> = client
        .query(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(tables.contains(&"journal".to_string()), "{tables:?}");
    let mut rows_read = 0;
    for table in &tables {
        for row in client
            .query(&format!("SELECT t::text FROM \"{table}\" t"), &[])
            .await
            .unwrap()
        {
            let text: String = row.get(0);
            rows_read += 1;
            for card in &cards {
                assert!(
                    !text.contains(card.as_str()) && !text.contains(&hex::encode(card)),
                    "{table} holds card {card}: {text}"
                );
            }
        }
    }
    assert!(rows_read > 20, "only {rows_read} rows");
    // The columns are there, sealed.
    let sealed: i64 = client
        .query_one(
            "SELECT count(*) FROM freezes WHERE payer_pan LIKE 'enc1:%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(sealed > 0);
    let journal_sealed: i64 = client
        .query_one(
            "SELECT count(*) FROM journal WHERE substring(raw from 1 for 4) = '\\xe55b4501'::bytea",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let journal_all: i64 = client
        .query_one("SELECT count(*) FROM journal", &[])
        .await
        .unwrap()
        .get(0);
    assert!(journal_all > 0);
    assert_eq!(journal_sealed, journal_all);
}

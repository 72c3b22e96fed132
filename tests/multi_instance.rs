//! Two switch instances on one PostgreSQL database, behind haproxy (TCP,
//! round robin), as README's "Several instances on PostgreSQL" runs them:
//! 200+ concurrent receivers of one packet of 10 shares arrive at both
//! instances; exactly 10 are approved, Σ approved = frozen, the payer bank's
//! hold is zero after the unfreeze, and every request sent again to either
//! instance gets the very answer it got the first time.
//!
//! Then one instance losing its database: requests get 96 while it is gone,
//! the switch reconnects by itself, and nothing was half-written.
//!
//! Needs haproxy (Debian package `haproxy`; `.ci/run` installs it) and
//! PostgreSQL (see `common/pg.rs`); fails, saying so, when either is missing.

mod common;

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use iso8583::codec::{build_bytes, Message};
use iso8583::framing::FramingConfig;
use iso8583::{ResponseCode, Spec};
use simulators::bank::Bank;
use simulators::bank_server::spawn_bank;
use simulators::scenarios::{self, BankView, World};
use simulators::wallet::{code, WalletClient};
use switchboard::clock::{Clock, ShiftedClock};
use switchboard::config::StoreConfig;
use switchboard::dialect::FreezeKey;
use switchboard::service::{self, Running};
use switchboard::store::postgres::PostgresStore;
use switchboard::store::{Decisions, Store};

use common::haproxy::start_haproxy;
use common::{assert_passed, bank_config, BANK_A, BANK_B, WALLET_ID};

/// One switch instance: its own store (connection pool) on the shared database.
async fn start_instance(
    url: &str,
    dir: &std::path::Path,
    banks: Vec<switchboard::config::BankConfig>,
    clock: Arc<ShiftedClock>,
) -> (Running, Arc<PostgresStore>) {
    let mut config = common::config(dir, banks);
    config.store = StoreConfig::Postgres(url.to_string());
    let store = Arc::new(PostgresStore::connect(url).await.unwrap());
    let running = service::start(config, store.clone(), clock).await.unwrap();
    assert!(
        running.wait_banks_ready(Duration::from_secs(5)).await,
        "banks signed on"
    );
    (running, store)
}

fn bytes(msg: &Message) -> Vec<u8> {
    build_bytes(&Spec::switchboard(), msg).unwrap().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_behind_haproxy_share_one_database() {
    let url = common::pg::database().await;
    let dir = tempfile::tempdir().unwrap();
    let a = Bank::generate(BANK_A, "622202", 12, 1_000_000, 1);
    let b = Bank::generate(BANK_B, "621700", 12, 1_000_000, 2);
    let cards_a: Vec<String> = a.accounts().into_iter().map(|(p, _)| p).collect();
    let cards_b: Vec<String> = b.accounts().into_iter().map(|(p, _)| p).collect();
    let bank_a = spawn_bank(a, FramingConfig::default()).await.unwrap();
    let bank_b = spawn_bank(b, FramingConfig::default()).await.unwrap();
    let banks = vec![
        bank_config(BANK_A, "622202", bank_a.addr, Duration::from_secs(5)),
        bank_config(BANK_B, "621700", bank_b.addr, Duration::from_secs(5)),
    ];
    let clock = Arc::new(ShiftedClock::new());
    let (one, store_one) = start_instance(&url, dir.path(), banks.clone(), clock.clone()).await;
    let (two, store_two) = start_instance(&url, dir.path(), banks, clock.clone()).await;
    let instances = [one.wallet_addrs[0], two.wallet_addrs[0]];
    let haproxy = start_haproxy(&instances).await;

    // The scenario of README's performance section, through the balancer.
    let world = World {
        switch_addr: haproxy.addr,
        framing: FramingConfig::default(),
        institution: WALLET_ID.into(),
        bank_a: BankView::Local(bank_a.bank.clone()),
        bank_b: BankView::Local(bank_b.bank.clone()),
        cards_a: cards_a.clone(),
        cards_b: cards_b.clone(),
        clock: clock.clone() as Arc<dyn Clock>,
        movable_clock: None,
        store: Some(store_one.clone() as Arc<dyn Store>),
        records: None,
        mac: None,
    };
    assert_passed(&scenarios::one_to_many(&world, 10, 240).await);

    // Again by hand, keeping every request to send it once more to each instance.
    let connections: Vec<WalletClient> = join_all(
        (0..16).map(|_| WalletClient::connect(haproxy.addr, FramingConfig::default(), WALLET_ID)),
    )
    .await
    .into_iter()
    .map(Result::unwrap)
    .collect();
    let payer = &cards_a[3];
    let share = 700;
    let frozen = 10 * share;
    let hold_before = bank_a.snapshot().total_held_minor;
    let payer_before = bank_a.snapshot().balance(payer).unwrap();
    let freeze = connections[0].freeze(payer, frozen, clock.now());
    let freeze_answer = connections[0].send(&freeze).await.unwrap();
    assert_eq!(code(&freeze_answer), ResponseCode::APPROVED);
    let receives: Vec<(usize, Message)> = (0..220)
        .map(|i| {
            let pan = if i % 2 == 0 {
                &cards_b[i / 2 % cards_b.len()]
            } else {
                &cards_a[4 + i / 2 % (cards_a.len() - 4)]
            };
            let c = i % connections.len();
            (c, connections[c].receive(&freeze, pan, share, clock.now()))
        })
        .collect();
    let connections = &connections;
    let answers: Vec<Message> = join_all(
        receives
            .iter()
            .map(|(c, msg)| async move { connections[*c].send(msg).await.unwrap() }),
    )
    .await;
    let approved = answers
        .iter()
        .filter(|a| code(a) == ResponseCode::APPROVED)
        .count();
    let over = answers
        .iter()
        .filter(|a| code(a) == ResponseCode::EXCEEDS_AMOUNT_LIMIT)
        .count();
    assert_eq!((approved, over), (10, 210), "exactly 10 shares approved");

    // Both instances did part of the work.
    for (name, store) in [("one", &store_one), ("two", &store_two)] {
        assert!(store.stats().commands > 0, "instance {name} got no traffic");
    }

    // Σ approved = frozen, in the shared store.
    let key = FreezeKey::of_request(&freeze).unwrap();
    let record = store_two.freeze(&key).await.unwrap().unwrap();
    assert_eq!((record.received_minor, record.reserved_minor), (frozen, 0));

    // Resends (the freeze, every receive) get the same answer from either instance.
    let direct: Vec<WalletClient> = join_all(
        instances
            .iter()
            .map(|addr| WalletClient::connect(*addr, FramingConfig::default(), WALLET_ID)),
    )
    .await
    .into_iter()
    .map(Result::unwrap)
    .collect();
    for wallet in &direct {
        let again = wallet.send(&freeze).await.unwrap();
        assert_eq!(bytes(&again), bytes(&freeze_answer), "freeze resend");
        let resent = join_all(receives.iter().map(|(_, msg)| wallet.send(msg))).await;
        for ((first, again), (_, msg)) in answers.iter().zip(resent).zip(&receives) {
            let again = again.unwrap();
            assert_eq!(
                bytes(&again),
                bytes(first),
                "receive {:?} answered differently on resend",
                msg.get_str(11)
            );
        }
    }
    let record = store_one.freeze(&key).await.unwrap().unwrap();
    assert_eq!(record.received_minor, frozen, "resends moved no money");

    // Nothing remains: the unfreeze of 0 closes the packet, the hold is zero.
    let unfreeze = direct[1].unfreeze(&freeze, 0, clock.now());
    assert_eq!(
        code(&direct[1].send(&unfreeze).await.unwrap()),
        ResponseCode::APPROVED
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let hold = bank_a.snapshot().hold(&key).map(|h| h.remaining_minor);
        if hold == Some(0) || hold.is_none() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "hold left at the payer bank: {hold:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(bank_a.snapshot().total_held_minor, hold_before);
    let payer_after = bank_a.snapshot().balance(payer).unwrap();
    assert_eq!(payer_after, payer_before - frozen as i64);

    drop(haproxy);
    one.shutdown().await;
    two.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_lost_and_back() {
    if std::env::var_os(common::pg::ENV_URL).is_some() && common::pg::find_bin().is_none() {
        eprintln!("needs local server binaries to stop and start a server; skipped");
        return;
    }
    let cluster = common::pg::Cluster::start().unwrap();
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", cluster.port);
    let dir = tempfile::tempdir().unwrap();
    let a = Bank::generate(BANK_A, "622202", 4, 1_000_000, 1);
    let b = Bank::generate(BANK_B, "621700", 4, 1_000_000, 2);
    let payer = a.accounts()[0].0.clone();
    let receiver = b.accounts()[0].0.clone();
    let bank_a = spawn_bank(a, FramingConfig::default()).await.unwrap();
    let bank_b = spawn_bank(b, FramingConfig::default()).await.unwrap();
    let banks = vec![
        bank_config(BANK_A, "622202", bank_a.addr, Duration::from_secs(5)),
        bank_config(BANK_B, "621700", bank_b.addr, Duration::from_secs(5)),
    ];
    let clock = Arc::new(ShiftedClock::new());
    let (running, store) = start_instance(&url, dir.path(), banks, clock.clone()).await;
    let wallet =
        WalletClient::connect(running.wallet_addrs[0], FramingConfig::default(), WALLET_ID)
            .await
            .unwrap();
    let freeze = wallet.freeze(&payer, 5_000, clock.now());
    assert_eq!(
        code(&wallet.send(&freeze).await.unwrap()),
        ResponseCode::APPROVED
    );

    cluster.stop().unwrap();
    let receive = wallet.receive(&freeze, &receiver, 2_000, clock.now());
    let answer = tokio::time::timeout(Duration::from_secs(20), wallet.send(&receive))
        .await
        .expect("an answer while the database is gone, not a hang")
        .unwrap();
    assert_eq!(code(&answer), ResponseCode::SYSTEM_MALFUNCTION);
    let other = wallet.freeze(&payer, 1_000, clock.now());
    assert_eq!(
        code(&wallet.send(&other).await.unwrap()),
        ResponseCode::SYSTEM_MALFUNCTION
    );
    // Nothing reached the banks without being recorded first.
    assert_eq!(bank_b.snapshot().total_balance_minor, 4 * 1_000_000);

    cluster.restart().unwrap();
    // The same receive again, once the switch has its database back.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let again = loop {
        let answer = wallet.send(&receive).await.unwrap();
        if code(&answer) != ResponseCode::SYSTEM_MALFUNCTION
            || tokio::time::Instant::now() > deadline
        {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(code(&again), ResponseCode::APPROVED);
    let key = FreezeKey::of_request(&freeze).unwrap();
    let record = store.freeze(&key).await.unwrap().unwrap();
    assert_eq!((record.received_minor, record.reserved_minor), (2_000, 0));
    let unfreeze = wallet.unfreeze(&freeze, 3_000, clock.now());
    assert_eq!(
        code(&wallet.send(&unfreeze).await.unwrap()),
        ResponseCode::APPROVED
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while bank_a
        .snapshot()
        .hold(&key)
        .is_some_and(|h| h.remaining_minor != 0)
    {
        assert!(tokio::time::Instant::now() < deadline, "hold not released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(bank_b.snapshot().total_balance_minor, 4 * 1_000_000 + 2_000);
    running.shutdown().await;
    let _ = cluster.stop();
}

//! Chaos over real processes: two `banksim`s injecting seeded faults (latency,
//! silence, drops after applying, duplicate answers, garbage, declines), the
//! real `switchboard serve` killed with SIGKILL and restarted several times,
//! and wallets that keep sending receives and resend whatever got no answer.
//! Then the faults stop, every packet is closed, the store-and-forward queue
//! drains, and the money invariants are checked against the banks' ledgers and
//! the switch's store. Then the day is cleared and both banks' own exports
//! and the wallet's own records reconcile with the switch's files with zero
//! differences. Bounded: about a minute. `CHAOS_SECONDS` lengthens it.

mod common;

use common::process::{
    addr, banksim, free_port, send_admin, serve, write_config, KillOnDrop, SwitchFile,
    BANKSIM_BALANCE,
};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iso8583::codec::Message;
use iso8583::framing::FramingConfig;
use iso8583::{ResponseCode, Spec};
use rust_decimal::Decimal;
use simulators::bank::Ledger;
use simulators::bank_clearing::fetch_export;
use simulators::scenarios::BankView;
use simulators::wallet::{code, WalletClient, WalletRecords};
use switchboard::clearing::clear::{clear, ClearRequest};
use switchboard::clearing::reconcile::reconcile;
use switchboard::clearing::{institution11, ParticipantFile, Settlement, Status};
use switchboard::clock::{Clock, SystemClock};
use switchboard::dialect::FreezeKey;
use switchboard::store::sqlite::SqliteStore;
use switchboard::store::{FreezeState, SafState, SagaState, Store};

const BALANCE: i64 = BANKSIM_BALANCE;

/// A wallet that reconnects after the switch dies and resends what got no
/// answer, keeping its own records of every exchange for the end of the day.
struct ResilientWallet {
    addr: SocketAddr,
    client: tokio::sync::Mutex<Option<WalletClient>>,
    records: Arc<WalletRecords>,
}

impl ResilientWallet {
    async fn send(&self, msg: &Message) -> Option<Message> {
        for _ in 0..60 {
            let client = {
                let mut guard = self.client.lock().await;
                if guard.is_none() {
                    *guard = WalletClient::connect(
                        self.addr,
                        FramingConfig::default(),
                        common::WALLET_ID,
                    )
                    .await
                    .ok()
                    .map(|c| {
                        c.with_timeout(Duration::from_secs(5))
                            .with_records(Some(self.records.clone()))
                    });
                }
                guard.clone()
            };
            if let Some(client) = client {
                match client.send(msg).await {
                    Ok(answer) => return Some(answer),
                    Err(_) => *self.client.lock().await = None,
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_kills_and_bank_faults_keep_the_money_invariants() {
    chaos(false).await;
}

/// Two instances on one PostgreSQL database behind haproxy, one of them
/// killed at a time. Nobody runs recovery by hand: whatever a killed instance
/// left in flight is recovered by a running one once its lease (1.5 s)
/// expires, while traffic goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_on_postgres_with_two_instances_one_killed() {
    chaos(true).await;
}

async fn chaos(postgres: bool) {
    let seconds: u64 = std::env::var("CHAOS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let faults =
        "latency=uniform:0:30,silent=0.03,drop_after=0.02,dup=0.03,garbage=0.01,decline=0.03:96";
    let bank_a = banksim(common::BANK_A, "622202", 11, &format!("{faults},seed=11"));
    let bank_b = banksim(common::BANK_B, "621700", 12, &format!("{faults},seed=12"));
    let view_a = BankView::Admin(addr(bank_a.admin));
    let view_b = BankView::Admin(addr(bank_b.admin));
    let payers: Vec<String> = view_a
        .snapshot()
        .await
        .unwrap()
        .accounts
        .into_iter()
        .map(|a| a.pan)
        .collect();
    let receivers: Vec<String> = view_b
        .snapshot()
        .await
        .unwrap()
        .accounts
        .into_iter()
        .map(|a| a.pan)
        .collect();
    let before_a = view_a.snapshot().await.unwrap().total_balance_minor;
    let before_b = view_b.snapshot().await.unwrap().total_balance_minor;
    let total_before = before_a + before_b;

    let dir = tempfile::tempdir().unwrap();
    let url = if postgres {
        Some(common::pg::database().await)
    } else {
        None
    };
    let store_line = match &url {
        Some(url) => format!("url = \"{url}\"\nlease_ms = 1500"),
        None => "path = \"switchboard.db\"".to_string(),
    };
    let instances = if postgres { 2 } else { 1 };
    let ports: Vec<u16> = (0..instances).map(|_| free_port()).collect();
    let configs: Vec<PathBuf> = ports
        .iter()
        .enumerate()
        .map(|(n, port)| {
            write_config(
                dir.path(),
                SwitchFile {
                    name: &format!("switch-{n}.toml"),
                    store: &store_line,
                    wallet_port: *port,
                    bank_a: addr(bank_a.port),
                    bank_b: addr(bank_b.port),
                    timeout_ms: 800,
                    max_backoff_ms: 1000,
                },
            )
        })
        .collect();
    let switches: Vec<Arc<Mutex<KillOnDrop>>> = configs
        .iter()
        .map(|c| Arc::new(Mutex::new(serve(c))))
        .collect();
    let haproxy = if postgres {
        Some(
            common::haproxy::start_haproxy(&ports.iter().map(|p| addr(*p)).collect::<Vec<_>>())
                .await,
        )
    } else {
        None
    };
    let front = haproxy.as_ref().map_or(addr(ports[0]), |h| h.addr);
    let wallet_records = Arc::new(WalletRecords::new());
    let wallet = Arc::new(ResilientWallet {
        addr: front,
        client: tokio::sync::Mutex::new(None),
        records: wallet_records.clone(),
    });
    let open_store = || async {
        match &url {
            Some(url) => switchboard::service::open_store(
                &switchboard::config::StoreConfig::Postgres(url.clone()),
            )
            .await
            .unwrap(),
            None => Arc::new(SqliteStore::open(&dir.path().join("switchboard.db")).unwrap())
                as Arc<dyn Store>,
        }
    };
    let clock = SystemClock;
    let started_ms = clock.now_ms();

    // Packets: freezes retried until the bank approves (faults may decline).
    let mut freezes = Vec::new();
    let mut builder = WalletClient::connect(front, FramingConfig::default(), common::WALLET_ID)
        .await
        .unwrap();
    for i in 0..8 {
        for _ in 0..20 {
            let freeze = builder.freeze(&payers[i % payers.len()], 50_000, clock.now());
            if let Some(a) = wallet.send(&freeze).await {
                if code(&a) == ResponseCode::APPROVED {
                    freezes.push(freeze);
                    break;
                }
            }
        }
    }
    assert!(freezes.len() >= 6, "faults declined too many freezes");

    // The killer: SIGKILL and restart every few seconds.
    let kills = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let killer = {
        let switches = switches.clone();
        let configs = configs.clone();
        let kill_count = kills.clone();
        tokio::spawn(async move {
            let mut kills = 0;
            loop {
                tokio::time::sleep(Duration::from_millis(2500 + 700 * (kills % 3))).await;
                let victim = kills as usize % switches.len();
                {
                    let mut child = switches[victim].lock().unwrap();
                    child.kill().unwrap();
                    child.wait().unwrap();
                }
                kills += 1;
                kill_count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let restarted = serve(&configs[victim]);
                *switches[victim].lock().unwrap() = restarted;
            }
        })
    };

    // Wallets: receives at ~100/s across the packets, resending until answered.
    let seen: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    let mut i = 0usize;
    while tokio::time::Instant::now() < deadline {
        let freeze = freezes[i % freezes.len()].clone();
        let receive = builder.receive(
            &freeze,
            &receivers[i % receivers.len()],
            10 + (i as u64 % 7) * 10,
            clock.now(),
        );
        let (wallet, seen) = (wallet.clone(), seen.clone());
        tasks.spawn(async move {
            let key = format!(
                "{}/{}",
                receive.get_str(7).unwrap(),
                receive.get_str(11).unwrap()
            );
            let c = match wallet.send(&receive).await {
                Some(a) => code(&a),
                None => "none".into(),
            };
            seen.lock().unwrap().insert(key, c);
        });
        i += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    while tasks.join_next().await.is_some() {}
    killer.abort();
    let receives_sent = i;
    let kills = kills.load(std::sync::atomic::Ordering::SeqCst);

    // Calm: no more faults. The embedded store: the switch is killed once
    // more and restarted (recovery at start). PostgreSQL: both instances stay
    // up; the work of the killed ones is theirs to recover once its leases
    // expire.
    send_admin(bank_a.admin, "faults none");
    send_admin(bank_b.admin, "faults none");
    if !postgres {
        let mut child = switches[0].lock().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        *child = serve(&configs[0]);
    }
    let wallet = Arc::new(ResilientWallet {
        addr: front,
        client: tokio::sync::Mutex::new(None),
        records: wallet_records.clone(),
    });
    builder = WalletClient::connect(front, FramingConfig::default(), common::WALLET_ID)
        .await
        .unwrap();

    // Close every packet with what the switch says remains.
    for freeze in &freezes {
        let key = FreezeKey::of_request(freeze).unwrap();
        for _ in 0..20 {
            let record = {
                let store = open_store().await;
                store.freeze(&key).await.unwrap().unwrap()
            };
            if record.state != FreezeState::Open {
                break;
            }
            let unfreeze = builder.unfreeze(freeze, record.available_minor(), clock.now());
            if wallet
                .send(&unfreeze)
                .await
                .is_some_and(|a| code(&a) == ResponseCode::APPROVED)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Every saga ends (recovered, on PostgreSQL, by the instances alive) and
    // the queue drains.
    let left = Arc::new(Mutex::new(String::new()));
    let drained = async {
        loop {
            let store = open_store().await;
            let entries = store.saf_entries().await.unwrap();
            let sagas = store.sagas().await.unwrap();
            // On PostgreSQL: and every expired lease recovered and dropped.
            // (The embedded store keeps no leases: nothing can expire.)
            let expired = match store.clone().leases() {
                Some(leases) => leases.expired_leases(clock.now_ms(), 0).await.unwrap(),
                None => Vec::new(),
            };
            let pending = entries
                .iter()
                .filter(|e| e.state == SafState::Pending)
                .count();
            let unfinished = sagas.iter().filter(|s| !s.state.is_final()).count()
                + store
                    .freezes()
                    .await
                    .unwrap()
                    .iter()
                    .filter(|f| f.state == FreezeState::Pending)
                    .count();
            if pending == 0 && unfinished == 0 && expired.is_empty() {
                return entries;
            }
            *left.lock().unwrap() = format!(
                "{unfinished} unfinished sagas or freezes, {pending} pending queue entries, {} expired leases",
                expired.len()
            );
            drop(store);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let entries = tokio::time::timeout(Duration::from_secs(60), drained)
        .await
        .unwrap_or_else(|_| panic!("after 60 s: {}", left.lock().unwrap()));
    for switch in &switches {
        let mut child = switch.lock().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }
    drop(haproxy);

    // The checks.
    let store = open_store().await;
    let sagas = store.sagas().await.unwrap();
    let records = store.freezes().await.unwrap();
    let a: Ledger = view_a.snapshot().await.unwrap();
    let b: Ledger = view_b.snapshot().await.unwrap();
    let dead: Vec<_> = entries
        .iter()
        .filter(|e| e.state == SafState::Dead)
        .collect();
    assert!(dead.is_empty(), "dead queue entries: {dead:?}");
    assert!(sagas.iter().all(|s| s.state.is_final()), "unfinished sagas");
    for f in &records {
        let approved: u64 = sagas
            .iter()
            .filter(|s| s.freeze == f.key && s.state == SagaState::Approved)
            .map(|s| s.amount_minor)
            .sum();
        assert!(
            approved <= f.amount_minor,
            "invariant 1: freeze {} over-received",
            f.key
        );
        assert_eq!(
            (approved, 0),
            (f.received_minor, f.reserved_minor),
            "freeze {} counters",
            f.key
        );
    }
    for h in &a.holds {
        assert_eq!(
            h.hold.remaining_minor, 0,
            "invariant 3: hold {} not released",
            h.key
        );
    }
    let mut paid: BTreeMap<String, i64> = BTreeMap::new();
    let mut got: BTreeMap<String, i64> = BTreeMap::new();
    for s in sagas.iter().filter(|s| s.state == SagaState::Approved) {
        let payer = records
            .iter()
            .find(|f| f.key == s.freeze)
            .unwrap()
            .payer_pan
            .clone();
        *paid.entry(payer).or_default() += s.amount_minor as i64;
        *got.entry(s.receiver_pan.clone()).or_default() += s.amount_minor as i64;
    }
    for acct in &a.accounts {
        assert_eq!(
            acct.balance_minor,
            BALANCE - paid.get(&acct.pan).copied().unwrap_or(0),
            "invariants 2 and 4: a payer's balance"
        );
    }
    for acct in &b.accounts {
        assert_eq!(
            acct.balance_minor,
            BALANCE + got.get(&acct.pan).copied().unwrap_or(0),
            "invariants 2 and 4: a receiver's balance"
        );
    }
    assert_eq!(
        a.total_balance_minor + b.total_balance_minor,
        total_before,
        "money conserved"
    );
    let seen = seen.lock().unwrap().clone();
    for (key, c) in seen.iter() {
        let saga = sagas.iter().find(|s| {
            format!(
                "{}/{}",
                String::from_utf8_lossy(&s.request.transmission),
                String::from_utf8_lossy(&s.request.stan)
            ) == *key
        });
        if *c == ResponseCode::APPROVED {
            assert!(
                saga.is_some_and(|s| s.state == SagaState::Approved),
                "wallet told 00 for {key} but the saga is not approved"
            );
        }
    }

    // End of day: every settlement day the run touched, cleared from the
    // store, against each bank's own export and the wallet's own records.
    let settlement = Settlement::default();
    let spec = Spec::switchboard();
    let (first, last) = (
        settlement.date_of_ms(started_ms),
        settlement.date_of_ms(clock.now_ms()),
    );
    let (mut net_a, mut net_b) = (Decimal::ZERO, Decimal::ZERO);
    let mut statuses: BTreeMap<(String, Status), usize> = BTreeMap::new();
    let mut day = first;
    while day <= last {
        let cleared = clear(
            store.as_ref(),
            &spec,
            &ClearRequest {
                date: day,
                settlement,
                switch_id: common::SWITCH_ID.into(),
                banks: vec![common::BANK_A.into(), common::BANK_B.into()],
                wallets: vec![common::WALLET_ID.into()],
                allow_pending: false,
            },
        )
        .await
        .unwrap_or_else(|e| panic!("clearing {day}: {e}"));
        assert!(cleared.balanced(), "invariant 5: {day} does not balance");
        for (admin, id) in [
            (bank_a.admin, common::BANK_A),
            (bank_b.admin, common::BANK_B),
        ] {
            let id = institution11(id).unwrap();
            let text = fetch_export(&addr(admin).to_string(), day, &settlement)
                .await
                .unwrap();
            let theirs = ParticipantFile::parse(&text).unwrap();
            let ours = &cleared.banks[&id];
            let r = reconcile(&theirs, ours).unwrap();
            assert!(r.is_clean(), "bank {id} on {day}:\n{}", r.report());
            for line in &ours.lines {
                *statuses
                    .entry((line.kind.to_string(), line.status))
                    .or_default() += 1;
            }
        }
        for p in &cleared.positions {
            if p.bank == institution11(common::BANK_A).unwrap() {
                net_a += p.net;
            } else {
                net_b += p.net;
            }
        }
        let wallet_id = institution11(common::WALLET_ID).unwrap();
        let ours = simulators::wallet_clearing::export(
            &wallet_records.all(),
            common::WALLET_ID,
            common::SWITCH_ID,
            day,
            &settlement,
            &spec,
        );
        let r = reconcile(&ours, &cleared.wallets[&wallet_id]).unwrap();
        assert!(r.is_clean(), "wallet on {day}:\n{}", r.report());
        day = day.succ_opt().unwrap();
    }
    // What clearing says each bank pays or receives is what its books moved by.
    assert_eq!(
        (net_a, net_b),
        (
            Decimal::new(a.total_balance_minor - before_a, 2),
            Decimal::new(b.total_balance_minor - before_b, 2)
        ),
        "invariant 5: net positions against the banks' books"
    );

    let approved = sagas
        .iter()
        .filter(|s| s.state == SagaState::Approved)
        .count();
    println!(
        "chaos: {receives_sent} receives sent over {seconds}s with bank faults [{faults}] and the switch killed {kills} times; \
         {} sagas, {approved} approved; {} queue entries delivered; checked: Σ approved ≤ frozen, counters, \
         every hold zero, every payer and receiver balance equal to its approved receives, money conserved, \
         every 00 an approved saga; cleared {first}..={last} and reconciled with both banks and the wallet \
         with zero differences, bank lines {statuses:?}{}",
        sagas.len(),
        entries.len(),
        if postgres {
            "; the killed instances' work recovered by the live ones once their leases expired"
        } else {
            ""
        },
    );
    for mut bank in [bank_a, bank_b] {
        let _ = bank.child.kill();
        let _ = bank.child.wait();
    }
}

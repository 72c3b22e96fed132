//! Lease takeover racing an instance that is alive but slow: two `Switch`
//! instances share one store; instance A's credit is held at the receiver
//! bank while A's lease runs out and B recovers A's saga (failing it,
//! queueing the reversals of its debit and credit). When the credit's
//! approval finally reaches A, A finds the saga ended: the wallet is told the
//! recorded 91, never 00, and B's reversals undo both legs, so every balance
//! ends where it started. And an instance whose lease has run out sends
//! nothing more: a new receive at A is refused before any bank sees it.
//!
//! Runs on the in-memory store and on PostgreSQL.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use iso8583::codec::{build_bytes, parse, Message};
use iso8583::{ResponseCode, Spec};
use simulators::bank::Bank;
use simulators::wallet::{code, WalletClient};
use switchboard::clock::{Clock, SystemClock};
use switchboard::config::BinRange;
use switchboard::dialect::FreezeKey;
use switchboard::link::{BankPort, LinkError};
use switchboard::stan::StanSource;
use switchboard::store::memory::MemoryStore;
use switchboard::store::postgres::PostgresStore;
use switchboard::store::{SafKind, SagaState, Store};
use switchboard::switch::lease;
use switchboard::switch::{recovery, saf, Peer, Route, Switch};
use tokio::sync::Notify;

/// A bank in memory. Credits (0200, F3 26…) wait for `release` when gated;
/// every request is counted.
struct GatedBank {
    id: String,
    bank: Mutex<Bank>,
    gate_credits: bool,
    release: Notify,
    requests: AtomicUsize,
    spec: Spec,
}

#[async_trait]
impl BankPort for GatedBank {
    fn institution_id(&self) -> &str {
        &self.id
    }

    async fn request(&self, msg: &Message) -> Result<(Message, Bytes), LinkError> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let is_credit = msg.mti() == b"0200" && msg.get_str(3).is_some_and(|p| p.starts_with("26"));
        if self.gate_credits && is_credit {
            self.release.notified().await;
        }
        let answer = self
            .bank
            .lock()
            .unwrap()
            .handle(msg, SystemClock.now())
            .ok_or_else(|| LinkError::Invalid("no answer".into()))?;
        let raw =
            build_bytes(&self.spec, &answer).map_err(|e| LinkError::Invalid(e.to_string()))?;
        Ok((answer, raw))
    }
}

fn gated_bank(id: &str, bin: &str, seed: u64, gate_credits: bool) -> Arc<GatedBank> {
    Arc::new(GatedBank {
        id: id.into(),
        bank: Mutex::new(Bank::generate(id, bin, 3, 100_000, seed)),
        gate_credits,
        release: Notify::new(),
        requests: AtomicUsize::new(0),
        spec: Spec::switchboard(),
    })
}

fn instance(
    name: &str,
    store: &Arc<dyn Store>,
    payer_bank: &Arc<GatedBank>,
    receiver_bank: &Arc<GatedBank>,
) -> Arc<Switch> {
    let routes = vec![
        Route {
            bins: vec![BinRange::parse("622202").unwrap()],
            link: payer_bank.clone(),
        },
        Route {
            bins: vec![BinRange::parse("621700").unwrap()],
            link: receiver_bank.clone(),
        },
    ];
    Arc::new(
        Switch::new(
            Arc::new(Spec::switchboard()),
            common::SWITCH_ID.into(),
            store.clone(),
            routes,
            Arc::new(SystemClock),
            Arc::new(StanSource::new(store.clone())),
        )
        .with_instance(name),
    )
}

async fn handle(switch: &Switch, msg: &Message) -> Message {
    let peer = Peer {
        name: "wallet".into(),
        institutions: vec![],
        partners: vec![],
        mac: None,
    };
    let raw = build_bytes(&Spec::switchboard(), msg).unwrap();
    let answer = switch.handle(&peer, msg.clone(), raw).await.unwrap();
    parse(&Spec::switchboard(), answer).unwrap()
}

async fn a_slow_instance_loses_its_saga_to_recovery(store: Arc<dyn Store>) {
    let payer_bank = gated_bank(common::BANK_A, "622202", 1, false);
    let receiver_bank = gated_bank(common::BANK_B, "621700", 2, true);
    let a = instance("a", &store, &payer_bank, &receiver_bank);
    let b = instance("b", &store, &payer_bank, &receiver_bank);
    let lease = Duration::from_millis(300);
    lease::renew(&a, lease).await.unwrap();
    lease::renew(&b, Duration::from_secs(60)).await.unwrap();

    let payer = payer_bank.bank.lock().unwrap().accounts()[0].0.clone();
    let receiver = receiver_bank.bank.lock().unwrap().accounts()[0].0.clone();
    let payer_before = payer_bank.bank.lock().unwrap().balance(&payer).unwrap();
    let receiver_before = receiver_bank
        .bank
        .lock()
        .unwrap()
        .balance(&receiver)
        .unwrap();
    let wallet = WalletClient::offline(common::WALLET_ID);
    let clock = SystemClock;
    let freeze = wallet.freeze(&payer, 5_000, clock.now());
    assert_eq!(code(&handle(&a, &freeze).await), ResponseCode::APPROVED);
    let key = FreezeKey::of_request(&freeze).unwrap();

    // A debits, then waits on its credit past the end of its lease.
    let receive = wallet.receive(&freeze, &receiver, 2_000, clock.now());
    let pending = tokio::spawn({
        let (a, receive) = (a.clone(), receive.clone());
        async move { handle(&a, &receive).await }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        payer_bank.bank.lock().unwrap().balance(&payer),
        Some(payer_before - 2_000),
        "the debit went through"
    );

    // B sees A's lease expired (no grace here: the credit is known to be
    // held) and recovers A's saga.
    let done = recovery::take_over_expired(&b, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(done.sagas_failed, 1, "{done:?}");
    let queued: Vec<_> = store
        .saf_entries()
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.entry.kind == SafKind::Reversal)
        .map(|e| e.entry.bank)
        .collect();
    assert_eq!(
        queued,
        [common::BANK_B, common::BANK_A],
        "credit reversal, then debit reversal"
    );

    // The credit is approved at last: A must not tell the wallet 00.
    receiver_bank.release.notify_one();
    let answer = pending.await.unwrap();
    assert_eq!(
        code(&answer),
        ResponseCode::ISSUER_UNAVAILABLE,
        "the answer recorded by recovery"
    );
    let saga = store
        .sagas()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.freeze == key)
        .unwrap();
    assert_eq!(saga.state, SagaState::Failed);

    // B delivers the reversals: both legs undone, the hold whole.
    let policy = saf::SafPolicy::default();
    for _ in 0..2 {
        for entry in store.saf_due(clock.now_ms(), 10, 30_000).await.unwrap() {
            saf::deliver(&b, &policy, &entry).await;
        }
    }
    assert_eq!(
        payer_bank.bank.lock().unwrap().balance(&payer),
        Some(payer_before)
    );
    assert_eq!(
        receiver_bank.bank.lock().unwrap().balance(&receiver),
        Some(receiver_before),
        "the credit A made was reversed"
    );
    let record = store.freeze(&key).await.unwrap().unwrap();
    assert_eq!((record.received_minor, record.reserved_minor), (0, 0));

    // A, its lease gone, sends nothing more.
    let seen = payer_bank.requests.load(Ordering::SeqCst);
    let another = wallet.receive(&freeze, &receiver, 1_000, clock.now());
    assert_eq!(
        code(&handle(&a, &another).await),
        ResponseCode::ISSUER_UNAVAILABLE
    );
    assert_eq!(
        payer_bank.requests.load(Ordering::SeqCst),
        seen,
        "no debit sent without a lease"
    );
    // Renewed, it works again.
    lease::renew(&a, Duration::from_secs(60)).await.unwrap();
    let third = wallet.receive(&freeze, &receiver, 1_000, clock.now());
    let released = tokio::spawn({
        let bank = receiver_bank.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            bank.release.notify_one();
        }
    });
    assert_eq!(code(&handle(&a, &third).await), ResponseCode::APPROVED);
    released.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_a_slow_instance_loses_its_saga_to_recovery() {
    a_slow_instance_loses_its_saga_to_recovery(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_a_slow_instance_loses_its_saga_to_recovery() {
    let url = common::pg::database().await;
    let store = Arc::new(PostgresStore::connect(&url).await.unwrap());
    a_slow_instance_loses_its_saga_to_recovery(store).await;
}

//! A bank that fails under the switch: the connection closes in the middle of
//! a debit. The wallet gets a definitive 91; the saga fails with its
//! reservation released and, in the same commit, a reversal of the debit
//! queued; the link reconnects and signs on again, and store-and-forward
//! delivers the reversal (as a 0420, or a 0421 repeat).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use iso8583::codec::{build_bytes, parse, Message};
use iso8583::fields::num;
use iso8583::framing::{Frame, FrameCodec, FramingConfig};
use iso8583::{ResponseCode, Spec};
use simulators::bank::Bank;
use simulators::bank_server::spawn_bank;
use simulators::wallet::{code, WalletClient};
use switchboard::clock::{Clock, ShiftedClock};
use switchboard::dialect::FreezeKey;
use switchboard::service;
use switchboard::store::sqlite::SqliteStore;
use switchboard::store::{SafKind, SafState, SagaState, Store};
use tokio::net::TcpListener;
use tokio_util::codec::Framed;

const PAYER: &str = "6222020200112233446";

/// A payer bank that signs on, approves freezes, and drops the connection
/// when a debit arrives. Counts connections accepted.
async fn closing_bank(
    listener: TcpListener,
    connections: Arc<AtomicUsize>,
    reversals: Arc<AtomicUsize>,
) {
    let spec = Spec::switchboard();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        connections.fetch_add(1, Ordering::SeqCst);
        let mut framed = Framed::new(stream, FrameCodec::new(FramingConfig::default()));
        while let Some(Ok(Frame::Message { body, .. })) = framed.next().await {
            let request = parse(&spec, body).unwrap();
            if request.mti() == b"0200" {
                break; // mid-request: the debit is never answered
            }
            if &request.mti()[..3] == b"042" {
                reversals.fetch_add(1, Ordering::SeqCst);
            }
            let bytes = build_bytes(&spec, &approval(&request)).unwrap();
            if framed.send(Frame::message(bytes)).await.is_err() {
                break;
            }
        }
    }
}

/// The receiver bank every test here uses: bank B, four cards of 1,000.00.
async fn receiver_bank() -> simulators::bank_server::BankHandle {
    spawn_bank(
        Bank::generate(common::BANK_B, "621700", 4, 100_000, 2),
        FramingConfig::default(),
    )
    .await
    .unwrap()
}

/// A switch on an embedded store in `dir` with `payer` as bank A and the
/// receiver bank as bank B, retrying its queue quickly; its clock can be shifted.
async fn start(
    dir: &std::path::Path,
    payer: switchboard::config::BankConfig,
    receiver: &simulators::bank_server::BankHandle,
) -> (service::Running, Arc<dyn Store>, Arc<ShiftedClock>) {
    let receiver = common::bank_config(
        common::BANK_B,
        "621700",
        receiver.addr,
        Duration::from_secs(5),
    );
    let mut config = common::config(dir, vec![payer, receiver]);
    config.saf.initial_backoff = Duration::from_millis(50);
    let clock = Arc::new(ShiftedClock::new());
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("s.db")).unwrap());
    let running = service::start(config, store.clone(), clock.clone())
        .await
        .unwrap();
    (running, store, clock)
}

/// A bank's approval of `request`: its identifying fields echoed, 00, and an
/// authorisation code for a freeze.
fn approval(request: &Message) -> Message {
    let mut answer = Message::new(iso8583::mti::response_mti(request.mti()));
    for n in [2, 3, 4, 7, 11, 32, 33, 37, 49, 70, 90, 100] {
        if let Some(v) = request.get_bytes(n) {
            answer.set(n, v);
        }
    }
    answer.set(num::RESPONSE_CODE, ResponseCode::APPROVED);
    if request.mti() == b"0100" {
        answer.set(num::AUTH_CODE, "123456");
    }
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bank_closing_mid_debit_gives_91_and_queues_the_reversal() {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let payer_addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let reversals = Arc::new(AtomicUsize::new(0));
    tokio::spawn(closing_bank(
        listener,
        connections.clone(),
        reversals.clone(),
    ));
    let receiver_bank = receiver_bank().await;
    let receiver = receiver_bank.snapshot().accounts[0].pan.clone();
    let mut payer =
        common::bank_config(common::BANK_A, "622202", payer_addr, Duration::from_secs(5));
    payer.connections = 1;
    let config = common::config(
        dir.path(),
        vec![
            payer,
            common::bank_config(
                common::BANK_B,
                "621700",
                receiver_bank.addr,
                Duration::from_secs(5),
            ),
        ],
    );
    let clock = Arc::new(ShiftedClock::new());
    let store: Arc<dyn Store> = switchboard::service::open_store(&config.store)
        .await
        .unwrap();
    let running = service::start(config, store.clone(), clock.clone())
        .await
        .unwrap();
    assert!(running.wait_banks_ready(Duration::from_secs(5)).await);

    let wallet = WalletClient::connect(
        running.wallet_addrs[0],
        FramingConfig::default(),
        common::WALLET_ID,
    )
    .await
    .unwrap();
    let freeze = wallet.freeze(PAYER, 5_000, clock.now());
    assert_eq!(
        code(&wallet.send(&freeze).await.unwrap()),
        ResponseCode::APPROVED
    );
    let receive = wallet.receive(&freeze, &receiver, 2_000, clock.now());
    let answer = tokio::time::timeout(Duration::from_secs(10), wallet.send(&receive))
        .await
        .expect("a definitive answer, not a hang")
        .unwrap();
    assert_eq!(code(&answer), ResponseCode::ISSUER_UNAVAILABLE);

    // The debit may or may not have happened at the bank: the saga failed, its
    // reservation is released, and the debit's reversal is queued with it.
    let key = FreezeKey::of_request(&freeze).unwrap();
    let record = store.freeze(&key).await.unwrap().unwrap();
    assert_eq!(record.reserved_minor, 0);
    assert_eq!(record.received_minor, 0);
    let sagas = store.sagas().await.unwrap();
    assert_eq!(sagas.len(), 1);
    assert_eq!(sagas[0].state, SagaState::Failed);
    let queued = store.saf_entries().await.unwrap();
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0].entry.kind, SafKind::Reversal);
    // Nothing reached the receiver bank.
    assert_eq!(receiver_bank.snapshot().total_balance_minor, 4 * 100_000);

    // The link reconnects and signs on again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while connections.load(Ordering::SeqCst) < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        connections.load(Ordering::SeqCst) >= 2,
        "the switch reconnected"
    );
    assert!(running.wait_banks_ready(Duration::from_secs(5)).await);
    // Store-and-forward delivers the reversal once the link is back.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let entries = store.saf_entries().await.unwrap();
        if entries.iter().all(|e| e.state == SafState::Done) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "reversal not delivered: {entries:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reversals.load(Ordering::SeqCst) >= 1);
    // Over the frozen amount is still refused: 5,000 frozen, nothing received.
    let over = wallet.receive(&freeze, &receiver, 5_500, clock.now());
    assert_eq!(
        code(&wallet.send(&over).await.unwrap()),
        ResponseCode::EXCEEDS_AMOUNT_LIMIT
    );
    running.shutdown().await;
}

/// A bank that answers a credit only after the switch's deadline: the wallet
/// gets 91, both legs are reversed, and the late 0210 is journaled as late
/// (68) and ignored — it never undoes the reversals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_answer_is_journaled_and_ignored() {
    use simulators::bank_server::spawn_bank_with_faults;
    use simulators::faults::Faults;

    let dir = tempfile::tempdir().unwrap();
    let payer_bank = spawn_bank(
        Bank::generate(common::BANK_A, "622202", 4, 100_000, 1),
        FramingConfig::default(),
    )
    .await
    .unwrap();
    let late: Faults = "late=1:700".parse().unwrap();
    let receiver_bank = spawn_bank_with_faults(
        Bank::generate(common::BANK_B, "621700", 4, 100_000, 2),
        FramingConfig::default(),
        late,
    )
    .await
    .unwrap();
    let payer = payer_bank.snapshot().accounts[0].pan.clone();
    let receiver = receiver_bank.snapshot().accounts[0].pan.clone();
    let config = common::config(
        dir.path(),
        vec![
            common::bank_config(
                common::BANK_A,
                "622202",
                payer_bank.addr,
                Duration::from_secs(5),
            ),
            common::bank_config(
                common::BANK_B,
                "621700",
                receiver_bank.addr,
                Duration::from_millis(300),
            ),
        ],
    );
    let clock = Arc::new(ShiftedClock::new());
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("switchboard.db")).unwrap());
    let running = service::start(config, store.clone(), clock.clone())
        .await
        .unwrap();
    assert!(running.wait_banks_ready(Duration::from_secs(5)).await);
    let wallet = WalletClient::connect(
        running.wallet_addrs[0],
        FramingConfig::default(),
        common::WALLET_ID,
    )
    .await
    .unwrap();
    let freeze = wallet.freeze(&payer, 5_000, clock.now());
    assert_eq!(
        code(&wallet.send(&freeze).await.unwrap()),
        ResponseCode::APPROVED
    );
    let receive = wallet.receive(&freeze, &receiver, 2_000, clock.now());
    assert_eq!(
        code(&wallet.send(&receive).await.unwrap()),
        ResponseCode::ISSUER_UNAVAILABLE
    );
    // The late answer arrives; then the bank is healthy again for the reversals.
    tokio::time::sleep(Duration::from_millis(900)).await;
    receiver_bank.faults.set(Faults::default());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let entries = store.saf_entries().await.unwrap();
        if !entries.is_empty() && entries.iter().all(|e| e.state == SafState::Done) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "reversals not delivered: {entries:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let journal = store.journal_between(0, i64::MAX).await.unwrap();
    assert!(
        journal.iter().any(|e| e
            .note
            .as_deref()
            .is_some_and(|n| n.starts_with("late response (68)"))),
        "the late 0210 is journaled as late"
    );
    // Both legs undone: everyone whole.
    assert_eq!(payer_bank.snapshot().balance(&payer), Some(100_000));
    assert_eq!(receiver_bank.snapshot().balance(&receiver), Some(100_000));
    running.shutdown().await;
}

/// A payer bank that approves freezes and acknowledges reversals honestly,
/// but approves every debit with `field` changed: another card, amount,
/// currency or original than the debit it answers.
async fn lying_bank(listener: TcpListener, field: u16, reversals: Arc<AtomicUsize>) {
    let spec = Spec::switchboard();
    while let Ok((stream, _)) = listener.accept().await {
        let spec = spec.clone();
        let reversals = reversals.clone();
        tokio::spawn(async move {
            let mut framed = Framed::new(stream, FrameCodec::new(FramingConfig::default()));
            while let Some(Ok(Frame::Message { body, .. })) = framed.next().await {
                let request = parse(&spec, body).unwrap();
                if &request.mti()[..3] == b"042" {
                    reversals.fetch_add(1, Ordering::SeqCst);
                }
                let mut answer = approval(&request);
                if request.mti() == b"0200" {
                    answer.set(num::AUTH_CODE, "654321");
                    let lie = match field {
                        2 => "6222020200112233453",
                        4 => "000000999999",
                        49 => "840",
                        // Another original: STAN 000099 of another day.
                        _ => "010000009911231200000000102000000000000000",
                    };
                    answer.set(field, lie);
                }
                let bytes = build_bytes(&spec, &answer).unwrap();
                if framed.send(Frame::message(bytes)).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// For each echoed field (F2, F4, F49, F90): a debit "approved" for another
/// card, amount, currency or original is not taken as the debit's answer. It
/// is journaled as a mismatch, the debit times out, the wallet gets 91, the
/// saga fails with nothing received, and the debit's reversal is delivered;
/// the receiver bank is never credited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_for_other_values_is_not_the_answer() {
    for field in [num::PAN, num::AMOUNT, num::CURRENCY, num::ORIGINAL_DATA] {
        let dir = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let payer_addr = listener.local_addr().unwrap();
        let reversals = Arc::new(AtomicUsize::new(0));
        let liar = tokio::spawn(lying_bank(listener, field, reversals.clone()));
        let receiver_bank = receiver_bank().await;
        let receiver = receiver_bank.snapshot().accounts[0].pan.clone();
        let payer = common::bank_config(
            common::BANK_A,
            "622202",
            payer_addr,
            Duration::from_millis(500),
        );
        let (running, store, clock) = start(dir.path(), payer, &receiver_bank).await;
        assert!(running.wait_banks_ready(Duration::from_secs(5)).await);
        let wallet = WalletClient::connect(
            running.wallet_addrs[0],
            FramingConfig::default(),
            common::WALLET_ID,
        )
        .await
        .unwrap();
        let freeze = wallet.freeze(PAYER, 5_000, clock.now());
        assert_eq!(
            code(&wallet.send(&freeze).await.unwrap()),
            ResponseCode::APPROVED
        );
        let receive = wallet.receive(&freeze, &receiver, 2_000, clock.now());
        assert_eq!(
            code(&wallet.send(&receive).await.unwrap()),
            ResponseCode::ISSUER_UNAVAILABLE,
            "F{field}"
        );
        let key = FreezeKey::of_request(&freeze).unwrap();
        let record = store.freeze(&key).await.unwrap().unwrap();
        assert_eq!(
            (record.received_minor, record.reserved_minor),
            (0, 0),
            "F{field}"
        );
        let sagas = store.sagas().await.unwrap();
        assert_eq!(sagas[0].state, SagaState::Failed, "F{field}");
        let journal = store.journal_between(0, i64::MAX).await.unwrap();
        let note = format!("mismatched response: F{field} differs");
        assert!(
            journal
                .iter()
                .any(|e| e.note.as_deref().is_some_and(|n| n.starts_with(&note))),
            "F{field}: the mismatch is journaled"
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while reversals.load(Ordering::SeqCst) == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "F{field}: reversal delivered"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            receiver_bank.snapshot().total_balance_minor,
            4 * 100_000,
            "F{field}"
        );
        running.shutdown().await;
        liar.abort();
    }
}

/// A payer bank that signs on and acknowledges reversals but never answers a
/// freeze; it notes when each freeze arrived.
async fn unanswering_bank(
    listener: TcpListener,
    arrivals: Arc<std::sync::Mutex<Vec<tokio::time::Instant>>>,
    reversals: Arc<AtomicUsize>,
) {
    let spec = Spec::switchboard();
    while let Ok((stream, _)) = listener.accept().await {
        let (spec, arrivals, reversals) = (spec.clone(), arrivals.clone(), reversals.clone());
        tokio::spawn(async move {
            let mut framed = Framed::new(stream, FrameCodec::new(FramingConfig::default()));
            while let Some(Ok(Frame::Message { body, .. })) = framed.next().await {
                let request = parse(&spec, body).unwrap();
                if request.mti() == b"0100" {
                    arrivals.lock().unwrap().push(tokio::time::Instant::now());
                    continue;
                }
                if &request.mti()[..3] == b"042" {
                    reversals.fetch_add(1, Ordering::SeqCst);
                }
                let bytes = build_bytes(&spec, &approval(&request)).unwrap();
                if framed.send(Frame::message(bytes)).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// A bank link's `max_in_flight` holds: with two slots on one connection and
/// a bank that answers no freeze, six freezes at once reach the bank two at
/// a time (a slot is freed only by a timeout), and a freeze that found no
/// slot within its deadline is refused without being sent (91), so only the
/// freezes sent are reversed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bank_link_never_has_more_requests_out_than_max_in_flight() {
    const TIMEOUT: Duration = Duration::from_millis(800);
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let payer_addr = listener.local_addr().unwrap();
    let arrivals = Arc::new(std::sync::Mutex::new(Vec::new()));
    let reversals = Arc::new(AtomicUsize::new(0));
    let bank = tokio::spawn(unanswering_bank(
        listener,
        arrivals.clone(),
        reversals.clone(),
    ));
    let receiver_bank = receiver_bank().await;
    let mut payer = common::bank_config(common::BANK_A, "622202", payer_addr, TIMEOUT);
    payer.connections = 1;
    payer.max_in_flight = 2;
    let (running, store, clock) = start(dir.path(), payer, &receiver_bank).await;
    assert!(running.wait_banks_ready(Duration::from_secs(5)).await);

    let mut freezes = Vec::new();
    for n in 0..6u64 {
        let wallet = WalletClient::connect(
            running.wallet_addrs[0],
            FramingConfig::default(),
            common::WALLET_ID,
        )
        .await
        .unwrap();
        let clock = clock.clone();
        freezes.push(tokio::spawn(async move {
            let freeze = wallet.freeze(PAYER, 1_000 + n, clock.now());
            code(&wallet.send(&freeze).await.unwrap())
        }));
    }
    for f in freezes {
        assert_eq!(f.await.unwrap(), ResponseCode::ISSUER_UNAVAILABLE);
    }
    let arrivals = arrivals.lock().unwrap().clone();
    assert!(
        (2..=6).contains(&arrivals.len()),
        "{} freezes sent",
        arrivals.len()
    );
    // Two slots: any three freezes span at least one timeout.
    for three in arrivals.windows(3) {
        assert!(
            three[2] - three[0] >= TIMEOUT - Duration::from_millis(100),
            "three freezes out at once: {:?} apart",
            three[2] - three[0]
        );
    }
    // Exactly the freezes sent are reversed; the others never left.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while reversals.load(Ordering::SeqCst) < arrivals.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} reversals for {} freezes sent",
            reversals.load(Ordering::SeqCst),
            arrivals.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(reversals.load(Ordering::SeqCst), arrivals.len());
    let queue = store.saf_entries().await.unwrap();
    assert!(
        queue.iter().all(|e| e.state == SafState::Done),
        "every reversal delivered"
    );
    running.shutdown().await;
    bank.abort();
}

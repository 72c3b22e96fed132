//! The real `switchboard serve` process killed with SIGKILL in the middle of a
//! receive, then restarted: recovery fails the unfinished saga and queues the
//! reversals, store-and-forward delivers them, and the payer bank ends whole.
//! Killed while a freeze waits for the payer bank: recovery declines it, and
//! the wallet's exact resend gets the 91 recovery recorded.
//! On PostgreSQL with two instances, the killed one is not restarted: its
//! peer recovers the saga once the dead one's lease has expired.
//! And SIGTERM: requests in flight are answered, the process exits 0.

mod common;

use common::process::{free_port, serve, write_config, SwitchFile};

/// Long bank deadlines: the test kills the switch while a credit waits.
fn switch_file(
    dir: &std::path::Path,
    wallet_port: u16,
    bank_a: std::net::SocketAddr,
    bank_b: std::net::SocketAddr,
) -> std::path::PathBuf {
    write_config(
        dir,
        SwitchFile {
            name: "switch.toml",
            store: "path = \"switchboard.db\"",
            wallet_port,
            bank_a,
            bank_b,
            timeout_ms: 30_000,
            max_backoff_ms: 500,
        },
    )
}

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use iso8583::codec::{build_bytes, parse, Message};
use iso8583::fields::num;
use iso8583::framing::{Frame, FrameCodec, FramingConfig};
use iso8583::{ResponseCode, Spec};
use simulators::bank::Bank;
use simulators::bank_server::{spawn_bank, BankHandle};
use simulators::wallet::{code, WalletClient};
use switchboard::clock::{Clock, SystemClock};
use switchboard::dialect::FreezeKey;
use tokio::net::TcpListener;
use tokio_util::codec::Framed;

/// A bank that signs on and answers reversals (25: it never applied what
/// they undo) but never answers a request of the MTIs in `silent_on` (counted
/// in `ignored`); anything else it approves. Counts reversals.
async fn silent_bank(
    listener: TcpListener,
    silent_on: &'static [&'static [u8; 4]],
    ignored: Arc<AtomicUsize>,
    reversals: Arc<AtomicUsize>,
) {
    let spec = Spec::switchboard();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let (ignored, reversals) = (ignored.clone(), reversals.clone());
        let spec = spec.clone();
        tokio::spawn(async move {
            let mut framed = Framed::new(stream, FrameCodec::new(FramingConfig::default()));
            while let Some(Ok(Frame::Message { body, .. })) = framed.next().await {
                let Ok(request) = parse(&spec, body) else {
                    continue;
                };
                if silent_on.contains(&request.mti()) {
                    ignored.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
                let code = match request.mti() {
                    b"0420" | b"0421" => {
                        reversals.fetch_add(1, Ordering::SeqCst);
                        ResponseCode::UNABLE_TO_LOCATE_RECORD
                    }
                    _ => ResponseCode::APPROVED,
                };
                let mut answer = Message::new(iso8583::mti::response_mti(request.mti()));
                for n in [2, 3, 4, 7, 11, 32, 33, 37, 49, 70, 90, 100] {
                    if let Some(v) = request.get_bytes(n) {
                        answer.set(n, v);
                    }
                }
                answer.set(num::RESPONSE_CODE, code);
                let bytes = build_bytes(&spec, &answer).unwrap();
                if framed.send(Frame::message(bytes)).await.is_err() {
                    break;
                }
            }
        });
    }
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Bank A, a real ledger, and bank B, silent on credits (counting the
/// reversals it gets).
struct Banks {
    a: BankHandle,
    b_addr: std::net::SocketAddr,
    reversals_at_b: Arc<AtomicUsize>,
}

async fn banks() -> Banks {
    let a = spawn_bank(
        Bank::generate(common::BANK_A, "622202", 4, 100_000, 1),
        FramingConfig::default(),
    )
    .await
    .unwrap();
    let b_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b_addr = b_listener.local_addr().unwrap();
    let reversals_at_b = Arc::new(AtomicUsize::new(0));
    tokio::spawn(silent_bank(
        b_listener,
        &[b"0200"],
        Arc::new(AtomicUsize::new(0)),
        reversals_at_b.clone(),
    ));
    Banks {
        a,
        b_addr,
        reversals_at_b,
    }
}

/// A packet of 5,000 frozen and a receive of 2,000 sent, left when its debit
/// has landed at bank A (its credit waits at the silent bank B forever).
struct MidReceive {
    payer: String,
    /// The payer's balance before.
    before: i64,
    freeze: Message,
    receive: Message,
    /// The wallet's wait for the receive's answer.
    pending: tokio::task::JoinHandle<Result<Message, simulators::wallet::WalletError>>,
}

async fn mid_receive(banks: &Banks, wallet: &WalletClient) -> MidReceive {
    let payer = banks.a.snapshot().accounts[0].pan.clone();
    let before = banks.a.snapshot().balance(&payer).unwrap();
    let clock = SystemClock;
    let freeze = wallet.freeze(&payer, 5_000, clock.now());
    assert_eq!(
        code(&wallet.send(&freeze).await.unwrap()),
        ResponseCode::APPROVED
    );
    let body = b"621700999999999";
    let receiver = format!(
        "{}{}",
        std::str::from_utf8(body).unwrap(),
        simulators::bank::luhn_check_digit(body) as char
    );
    let receive = wallet.receive(&freeze, &receiver, 2_000, clock.now());
    let pending = tokio::spawn({
        let wallet = wallet.clone();
        let receive = receive.clone();
        async move { wallet.send(&receive).await }
    });
    wait_for("the debit", || {
        banks.a.snapshot().balance(&payer) == Some(before - 2_000)
    })
    .await;
    MidReceive {
        payer,
        before,
        freeze,
        receive,
        pending,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_receive_then_restart_reverses_and_the_payer_ends_whole() {
    let dir = tempfile::tempdir().unwrap();
    let banks = banks().await;
    let (bank_a, reversals_at_b) = (&banks.a, &banks.reversals_at_b);
    let wallet_port = free_port();
    let config = switch_file(dir.path(), wallet_port, bank_a.addr, banks.b_addr);

    let mut switch = serve(&config);
    let addr = format!("127.0.0.1:{wallet_port}").parse().unwrap();
    let wallet = WalletClient::connect(addr, FramingConfig::default(), common::WALLET_ID)
        .await
        .unwrap()
        .with_timeout(Duration::from_secs(2));
    let clock = SystemClock;
    let MidReceive {
        payer,
        before,
        freeze,
        receive,
        pending,
    } = mid_receive(&banks, &wallet).await;
    let receiver = receive.get_str(num::PAN).unwrap().to_string();
    switch.kill().unwrap();
    switch.wait().unwrap();
    assert!(
        pending.await.unwrap().is_err(),
        "no answer from a killed switch"
    );

    // Restart: recovery fails the saga and queues both reversals.
    let mut switch = serve(&config);
    let key = FreezeKey::of_request(&freeze).unwrap();
    wait_for("the debit's reversal", || {
        let a = bank_a.snapshot();
        a.balance(&payer) == Some(before) && a.hold(&key).map(|h| h.remaining_minor) == Some(5_000)
    })
    .await;
    assert!(
        reversals_at_b.load(Ordering::SeqCst) >= 1,
        "the credit's reversal reached bank B"
    );

    // The receive resent byte for byte: the 91 recovery recorded for it, not
    // 94 (it is the same request), and nothing moves again.
    let wallet = WalletClient::connect(addr, FramingConfig::default(), common::WALLET_ID)
        .await
        .unwrap();
    assert_eq!(
        code(&wallet.send(&receive).await.unwrap()),
        ResponseCode::ISSUER_UNAVAILABLE
    );

    // The packet can be closed: the hold goes to zero, the payer keeps everything.
    let unfreeze = wallet.unfreeze(&freeze, 5_000, clock.now());
    assert_eq!(
        code(&wallet.send(&unfreeze).await.unwrap()),
        ResponseCode::APPROVED
    );
    wait_for("the unfreeze", || {
        bank_a.snapshot().hold(&key).map(|h| h.remaining_minor) == Some(0)
    })
    .await;
    assert_eq!(bank_a.snapshot().balance(&payer), Some(before));

    // The queue shows everything delivered, nothing dead.
    let list = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["saf", "list", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(list.status.success(), "{text}");
    assert_eq!(text.matches(" done ").count(), 3, "{text}");
    assert!(!text.contains(&receiver), "card numbers are masked: {text}");

    switch.kill().unwrap();
    switch.wait().unwrap();
}

/// The switch killed while a freeze waits for the payer bank: restarted,
/// recovery declines the freeze and reverses it. The wallet's resend byte for
/// byte is told the 91 recovery recorded (the same request), one with other
/// content under the same key 94, and neither reaches the bank again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_freeze_then_restart_an_exact_resend_gets_the_recorded_91() {
    let dir = tempfile::tempdir().unwrap();
    let a_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (a_addr, b_addr) = (
        a_listener.local_addr().unwrap(),
        b_listener.local_addr().unwrap(),
    );
    let nothing = || Arc::new(AtomicUsize::new(0));
    tokio::spawn(silent_bank(a_listener, &[], nothing(), nothing()));
    // The payer bank: takes the freeze and never answers it.
    let (freezes_at_b, reversals_at_b) = (nothing(), nothing());
    tokio::spawn(silent_bank(
        b_listener,
        &[b"0100"],
        freezes_at_b.clone(),
        reversals_at_b.clone(),
    ));
    let wallet_port = free_port();
    let config = switch_file(dir.path(), wallet_port, a_addr, b_addr);

    let mut switch = serve(&config);
    let addr = format!("127.0.0.1:{wallet_port}").parse().unwrap();
    let wallet = WalletClient::connect(addr, FramingConfig::default(), common::WALLET_ID)
        .await
        .unwrap()
        .with_timeout(Duration::from_secs(2));
    let body = b"621700999999999";
    let payer = format!(
        "{}{}",
        std::str::from_utf8(body).unwrap(),
        simulators::bank::luhn_check_digit(body) as char
    );
    let freeze = wallet.freeze(&payer, 5_000, SystemClock.now());
    let pending = tokio::spawn({
        let (wallet, freeze) = (wallet.clone(), freeze.clone());
        async move { wallet.send(&freeze).await }
    });
    wait_for("the freeze at the payer bank", || {
        freezes_at_b.load(Ordering::SeqCst) == 1
    })
    .await;
    switch.kill().unwrap();
    switch.wait().unwrap();
    assert!(
        pending.await.unwrap().is_err(),
        "no answer from a killed switch"
    );

    // Restart: recovery declines the freeze and its reversal reaches the bank.
    let mut switch = serve(&config);
    wait_for("the freeze's reversal", || {
        reversals_at_b.load(Ordering::SeqCst) >= 1
    })
    .await;

    let wallet = WalletClient::connect(addr, FramingConfig::default(), common::WALLET_ID)
        .await
        .unwrap();
    let resent = wallet.send(&freeze).await.unwrap();
    assert_eq!(
        code(&resent),
        ResponseCode::ISSUER_UNAVAILABLE,
        "an exact resend gets the answer recovery recorded"
    );
    assert_eq!(resent.get(num::STAN), freeze.get(num::STAN));
    let mut other = freeze.clone();
    other.set(num::AMOUNT, "000000009000");
    assert_eq!(
        code(&wallet.send(&other).await.unwrap()),
        ResponseCode::DUPLICATE_TRANSMISSION,
        "the same key with other content"
    );
    assert_eq!(
        freezes_at_b.load(Ordering::SeqCst),
        1,
        "nothing forwarded again"
    );

    switch.kill().unwrap();
    switch.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_one_instance_on_postgres_its_peer_recovers_after_the_lease() {
    let url = common::pg::database().await;
    let dir = tempfile::tempdir().unwrap();
    let banks = banks().await;
    let (bank_a, reversals_at_b) = (&banks.a, &banks.reversals_at_b);
    // Lease 1 s; bank timeout 3 s, so recovery waits 1 s + 4 s of grace.
    let store = format!("url = \"{url}\"\nlease_ms = 1000");
    let ports = [free_port(), free_port()];
    let configs: Vec<_> = ports
        .iter()
        .enumerate()
        .map(|(n, port)| {
            write_config(
                dir.path(),
                SwitchFile {
                    name: &format!("switch-{n}.toml"),
                    store: &store,
                    wallet_port: *port,
                    bank_a: bank_a.addr,
                    bank_b: banks.b_addr,
                    timeout_ms: 3_000,
                    max_backoff_ms: 500,
                },
            )
        })
        .collect();
    let mut doomed = serve(&configs[0]);
    let mut survivor = serve(&configs[1]);
    let at = |port: u16| -> std::net::SocketAddr { format!("127.0.0.1:{port}").parse().unwrap() };
    let clock = SystemClock;

    let wallet = WalletClient::connect(at(ports[0]), FramingConfig::default(), common::WALLET_ID)
        .await
        .unwrap()
        .with_timeout(Duration::from_secs(10));
    let MidReceive {
        payer,
        before,
        freeze,
        receive,
        pending,
    } = mid_receive(&banks, &wallet).await;
    doomed.kill().unwrap();
    doomed.wait().unwrap();
    let killed_at = std::time::Instant::now();
    assert!(
        pending.await.unwrap().is_err(),
        "no answer from a killed switch"
    );

    // The peer, not restarted, not told: once the lease has expired and the
    // grace passed, it fails the saga and its queue delivers both reversals.
    let key = FreezeKey::of_request(&freeze).unwrap();
    wait_for("the debit's reversal, by the peer", || {
        let a = bank_a.snapshot();
        a.balance(&payer) == Some(before) && a.hold(&key).map(|h| h.remaining_minor) == Some(5_000)
    })
    .await;
    assert!(
        killed_at.elapsed() >= Duration::from_secs(4),
        "recovered {:?} after the kill: before the lease (1 s) and grace (4 s) ran out",
        killed_at.elapsed()
    );
    wait_for("the credit's reversal", || {
        reversals_at_b.load(Ordering::SeqCst) >= 1
    })
    .await;
    let store =
        switchboard::service::open_store(&switchboard::config::StoreConfig::Postgres(url.clone()))
            .await
            .unwrap();
    let saga = store
        .sagas()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.freeze == key)
        .unwrap();
    assert_eq!(saga.state, switchboard::store::SagaState::Failed);
    let freeze_record = store.freeze(&key).await.unwrap().unwrap();
    assert_eq!(
        (freeze_record.received_minor, freeze_record.reserved_minor),
        (0, 0),
        "the reservation released"
    );
    assert!(
        store
            .clone()
            .leases()
            .expect("a shared store")
            .expired_leases(clock.now_ms(), 0)
            .await
            .unwrap()
            .is_empty(),
        "the dead instance's lease dropped once its work was recovered"
    );

    // The wallet, resending to the survivor, is never told 00; the packet
    // closes there with everything still in it.
    let wallet = WalletClient::connect(at(ports[1]), FramingConfig::default(), common::WALLET_ID)
        .await
        .unwrap();
    assert_ne!(
        code(&wallet.send(&receive).await.unwrap()),
        ResponseCode::APPROVED
    );
    let unfreeze = wallet.unfreeze(&freeze, 5_000, clock.now());
    assert_eq!(
        code(&wallet.send(&unfreeze).await.unwrap()),
        ResponseCode::APPROVED
    );
    wait_for("the unfreeze", || {
        bank_a.snapshot().hold(&key).map(|h| h.remaining_minor) == Some(0)
    })
    .await;
    assert_eq!(bank_a.snapshot().balance(&payer), Some(before));
    survivor.kill().unwrap();
    survivor.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_requests_in_flight_and_exits_zero() {
    let h = common::start().await; // banks only; the switch below is a process
    let dir = tempfile::tempdir().unwrap();
    let wallet_port = free_port();
    let config = switch_file(dir.path(), wallet_port, h.bank_a.addr, h.bank_b.addr);
    let switch = serve(&config);
    let addr = format!("127.0.0.1:{wallet_port}").parse().unwrap();
    let wallet = WalletClient::connect(addr, FramingConfig::default(), common::WALLET_ID)
        .await
        .unwrap();
    let clock = SystemClock;
    let freeze = wallet.freeze(&h.world.cards_a[0], 5_000, clock.now());
    assert_eq!(
        code(&wallet.send(&freeze).await.unwrap()),
        ResponseCode::APPROVED
    );
    let sends: Vec<_> = (0..20)
        .map(|i| {
            let wallet = wallet.clone();
            let msg = wallet.receive(&freeze, &h.world.cards_b[i % 4], 100, clock.now());
            tokio::spawn(async move { wallet.send(&msg).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(5)).await;
    // The shell's own kill: no procps needed.
    let status = Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", switch.id())])
        .status()
        .unwrap();
    assert!(status.success());
    let mut answered = 0;
    for s in sends {
        if let Ok(Ok(m)) = s.await {
            assert_eq!(code(&m), ResponseCode::APPROVED);
            answered += 1;
        }
    }
    let output = switch.into_inner().wait_with_output().unwrap();
    assert!(output.status.success(), "exit status {:?}", output.status);
    // What was read before SIGTERM was answered; money matches the answers.
    let received = h.bank_a.snapshot().balance(&h.world.cards_a[0]).unwrap();
    assert_eq!(received, 1_000_000 - 100 * answered, "{answered} answered");
}

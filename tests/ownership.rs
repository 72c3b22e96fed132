//! Whose packet is it: only the institution that froze a packet may receive
//! from it or unfreeze it (or a partner named on the receiving listener);
//! a stranger gets 63 before anything that depends on the freeze, so 13, 25
//! and 61 tell it nothing; an unfreeze must name the payer's card. Over real
//! TCP, with the money checked at the banks after every step.

mod common;

use std::sync::Arc;
use std::time::Duration;

use iso8583::framing::FramingConfig;
use iso8583::ResponseCode;
use simulators::bank::Bank;
use simulators::bank_server::spawn_bank;
use simulators::wallet::{code, WalletClient};
use switchboard::clock::{Clock, SystemClock};
use switchboard::config::WalletListener;
use switchboard::dialect::{FreezeKey, InstitutionId};
use switchboard::service;
use switchboard::store::FreezeState;

use common::{bank_config, BANK_A, BANK_B, WALLET_ID};

const STRANGER: &str = "03030000";
const PARTNER: &str = "04040000";

fn id(s: &str) -> InstitutionId {
    InstitutionId::from_field(32, s.as_bytes()).unwrap()
}

fn listener(institution: &str, partners: &[&str]) -> WalletListener {
    WalletListener {
        listen: "127.0.0.1:0".parse().unwrap(),
        framing: FramingConfig::default(),
        institutions: vec![id(institution)],
        partners: partners.iter().map(|p| id(p)).collect(),
        max_connections: 16,
        frame_timeout: WalletListener::DEFAULT_FRAME_TIMEOUT,
        idle_timeout: Some(WalletListener::DEFAULT_IDLE_TIMEOUT),
        max_in_flight: WalletListener::DEFAULT_MAX_IN_FLIGHT,
        max_per_address: None,
        tls: None,
        mac: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_freezing_institution_or_a_partner_touches_a_packet() {
    let dir = tempfile::tempdir().unwrap();
    let a = Bank::generate(BANK_A, "622202", 4, 1_000_000, 1);
    let b = Bank::generate(BANK_B, "621700", 4, 1_000_000, 2);
    let payer = a.accounts()[0].0.clone();
    let other_card = a.accounts()[1].0.clone();
    let receiver = b.accounts()[0].0.clone();
    let bank_a = spawn_bank(a, FramingConfig::default()).await.unwrap();
    let bank_b = spawn_bank(b, FramingConfig::default()).await.unwrap();
    let mut config = common::config(
        dir.path(),
        vec![
            bank_config(BANK_A, "622202", bank_a.addr, Duration::from_secs(5)),
            bank_config(BANK_B, "621700", bank_b.addr, Duration::from_secs(5)),
        ],
    );
    config.wallets.push(listener(STRANGER, &[]));
    config.wallets.push(listener(PARTNER, &[WALLET_ID]));
    let store = service::open_store(&config.store).await.unwrap();
    let running = service::start(config, store.clone(), Arc::new(SystemClock))
        .await
        .unwrap();
    assert!(running.wait_banks_ready(Duration::from_secs(5)).await);
    let connect = |i: usize, institution: &'static str| {
        WalletClient::connect(
            running.wallet_addrs[i],
            FramingConfig::default(),
            institution,
        )
    };
    let owner = connect(0, WALLET_ID).await.unwrap();
    let stranger = connect(1, STRANGER).await.unwrap();
    let partner = connect(2, PARTNER).await.unwrap();
    let clock = SystemClock;
    let balance =
        |bank: &simulators::BankHandle, pan: &str| bank.bank.lock().unwrap().balance(pan).unwrap();
    let payer_before = balance(&bank_a, &payer);
    let receiver_before = balance(&bank_b, &receiver);

    let freeze = owner.freeze(&payer, 5_000, clock.now());
    assert_eq!(
        code(&owner.send(&freeze).await.unwrap()),
        ResponseCode::APPROVED
    );
    let key = FreezeKey::of_request(&freeze).unwrap();
    let held = |bank: &simulators::BankHandle| {
        bank.bank
            .lock()
            .unwrap()
            .hold(&key)
            .map(|h| h.remaining_minor)
            .unwrap_or(0)
    };
    assert_eq!(held(&bank_a), 5_000);

    // A stranger: 63 for a receive of any amount (the one over the freeze
    // would be 61 for its owner) and for an unfreeze of any remainder (13 or
    // 00 for its owner), and nothing moves.
    for amount in [100, 5_000, 9_999] {
        let receive = stranger.receive(&freeze, &receiver, amount, clock.now());
        assert_eq!(
            code(&stranger.send(&receive).await.unwrap()),
            ResponseCode::SECURITY_VIOLATION,
            "stranger's receive of {amount}"
        );
    }
    for remainder in [1, 4_999, 5_000] {
        let unfreeze = stranger.unfreeze(&freeze, remainder, clock.now());
        assert_eq!(
            code(&stranger.send(&unfreeze).await.unwrap()),
            ResponseCode::SECURITY_VIOLATION,
            "stranger's unfreeze with {remainder}"
        );
    }
    let record = store.freeze(&key).await.unwrap().unwrap();
    assert_eq!(record.state, FreezeState::Open);
    assert_eq!((record.received_minor, record.reserved_minor), (0, 0));
    assert_eq!(held(&bank_a), 5_000);
    assert_eq!(balance(&bank_a, &payer), payer_before);

    // A partner named on its listener may receive from the owner's packet.
    let receive = partner.receive(&freeze, &receiver, 1_000, clock.now());
    assert_eq!(
        code(&partner.send(&receive).await.unwrap()),
        ResponseCode::APPROVED
    );
    assert_eq!(balance(&bank_a, &payer), payer_before - 1_000);
    assert_eq!(balance(&bank_b, &receiver), receiver_before + 1_000);
    // ... but not unfreeze it: partners receive, only the owner closes.
    let unfreeze = partner.unfreeze(&freeze, 4_000, clock.now());
    assert_eq!(
        code(&partner.send(&unfreeze).await.unwrap()),
        ResponseCode::SECURITY_VIOLATION
    );

    // The owner's unfreeze must name the payer's card.
    let mut wrong_card = owner.unfreeze(&freeze, 4_000, clock.now());
    wrong_card.set(2, other_card.clone());
    assert_eq!(
        code(&owner.send(&wrong_card).await.unwrap()),
        ResponseCode::INVALID_CARD_NUMBER
    );
    assert_eq!(
        store.freeze(&key).await.unwrap().unwrap().state,
        FreezeState::Open,
        "still open"
    );
    let unfreeze = owner.unfreeze(&freeze, 4_000, clock.now());
    assert_eq!(
        code(&owner.send(&unfreeze).await.unwrap()),
        ResponseCode::APPROVED
    );

    // The money: one receive of 1,000 moved, the rest of the hold released.
    let record = store.freeze(&key).await.unwrap().unwrap();
    assert_eq!(record.state, FreezeState::Closed);
    assert_eq!(record.received_minor, 1_000);
    let released = async {
        while held(&bank_a) != 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), released)
        .await
        .expect("the unfreeze notice releases the hold");
    assert_eq!(balance(&bank_a, &payer), payer_before - 1_000);
    assert_eq!(balance(&bank_b, &receiver), receiver_before + 1_000);
    bank_a.bank.lock().unwrap().check_invariants();
    bank_b.bank.lock().unwrap().check_invariants();
    running.shutdown().await;
}

//! The switch end to end over real TCP: wallets → switch → bank simulators,
//! every scenario checked against the banks' ledgers and the switch's store.
//! Every test runs twice: on the embedded store (`embedded::`) and on a
//! PostgreSQL database (`postgres::`, see `common/pg.rs`).

mod common;

use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use iso8583::codec::{build_bytes, parse, Message};
use iso8583::fields::num;
use iso8583::framing::{Frame, FrameCodec, FramingConfig};
use iso8583::{ResponseCode, Spec};
use simulators::scenarios;
use simulators::wallet::{code, WalletClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use common::{assert_passed, start_with, Backend};

async fn one_to_one(backend: Backend) {
    let h = start_with(backend).await;
    assert_passed(&scenarios::one_to_one(&h.world).await);
}

async fn one_to_many_grabbed_by_more_receivers_than_shares(backend: Backend) {
    let h = start_with(backend).await;
    assert_passed(&scenarios::one_to_many(&h.world, 5, 12).await);
}

async fn two_hundred_receivers_on_ten_shares(backend: Backend) {
    let h = start_with(backend).await;
    assert_passed(&scenarios::one_to_many(&h.world, 10, 200).await);
}

async fn over_receive_gets_61(backend: Backend) {
    let h = start_with(backend).await;
    assert_passed(&scenarios::over_receive(&h.world).await);
}

async fn receive_after_unfreeze_gets_12(backend: Backend) {
    let h = start_with(backend).await;
    assert_passed(&scenarios::receive_after_unfreeze(&h.world).await);
}

async fn unknown_original_gets_25(backend: Backend) {
    let h = start_with(backend).await;
    assert_passed(&scenarios::unknown_original(&h.world).await);
}

async fn exact_resend_answers_again_and_moves_money_once(backend: Backend) {
    let h = start_with(backend).await;
    assert_passed(&scenarios::exact_resend(&h.world).await);
}

async fn receive_on_a_later_day(backend: Backend) {
    let h = start_with(backend).await;
    assert_passed(&scenarios::later_day(&h.world).await);
}

async fn payer_and_receiver_at_the_same_bank(backend: Backend) {
    let h = start_with(backend).await;
    assert_passed(&scenarios::same_bank(&h.world).await);
}

async fn expiry_unfreezes_the_remainder(backend: Backend) {
    let h = start_with(backend).await;
    assert_passed(&scenarios::expiry(&h.world).await);
}

async fn wallet_sending_as_another_institution_gets_63(backend: Backend) {
    let h = start_with(backend).await;
    let wallet = WalletClient::connect(h.world.switch_addr, FramingConfig::default(), "09990000")
        .await
        .unwrap();
    let freeze = wallet.freeze(&h.world.cards_a[0], 1_000, h.clock_now());
    let answer = wallet.send(&freeze).await.unwrap();
    assert_eq!(code(&answer), ResponseCode::SECURITY_VIOLATION);
    assert!(
        h.bank_a.snapshot().holds.is_empty(),
        "nothing reached the bank"
    );
}

async fn bad_cards_and_amounts(backend: Backend) {
    let h = start_with(backend).await;
    let w = &h.world;
    let wallet = WalletClient::connect(w.switch_addr, FramingConfig::default(), common::WALLET_ID)
        .await
        .unwrap();
    // Luhn failure.
    let mut bad = w.cards_a[0].clone();
    let last = bad.pop().unwrap();
    bad.push(if last == '0' { '1' } else { '0' });
    let freeze = wallet.freeze(&bad, 1_000, h.clock_now());
    assert_eq!(
        code(&wallet.send(&freeze).await.unwrap()),
        ResponseCode::INVALID_CARD_NUMBER
    );
    // A BIN no bank owns.
    let freeze = wallet.freeze("4111111111111111", 1_000, h.clock_now());
    assert_eq!(
        code(&wallet.send(&freeze).await.unwrap()),
        ResponseCode::INVALID_CARD_NUMBER
    );
    // Zero amount.
    let freeze = wallet.freeze(&w.cards_a[0], 0, h.clock_now());
    assert_eq!(
        code(&wallet.send(&freeze).await.unwrap()),
        ResponseCode::INVALID_AMOUNT
    );
    // More than the card has: the bank's 51 comes back.
    let freeze = wallet.freeze(&w.cards_a[0], 2_000_000, h.clock_now());
    assert_eq!(
        code(&wallet.send(&freeze).await.unwrap()),
        ResponseCode::INSUFFICIENT_FUNDS
    );
    // A receive on a declined freeze: 12.
    let receive = wallet.receive(&freeze, &w.cards_b[0], 1_000, h.clock_now());
    assert_eq!(
        code(&wallet.send(&receive).await.unwrap()),
        ResponseCode::INVALID_TRANSACTION
    );
    let a = h.bank_a.snapshot();
    assert_eq!(a.total_held_minor, 0);
    assert_eq!(a.total_balance_minor, 12 * 1_000_000);
}

trait Now {
    fn clock_now(&self) -> chrono::NaiveDateTime;
}

impl Now for common::Harness {
    fn clock_now(&self) -> chrono::NaiveDateTime {
        use switchboard::clock::Clock;
        self.clock.now()
    }
}

/// A valid receive request's bytes, for corrupting.
fn receive_bytes(h: &common::Harness, remove: Option<u16>, mti: &[u8; 4]) -> Bytes {
    let spec = Spec::switchboard();
    let mut m = Message::new(*mti);
    m.set(2, h.world.cards_b[0].clone())
        .set(3, "400000")
        .set(4, "000000001000")
        .set(7, "1123112233")
        .set(11, "000777")
        .set(12, "192233")
        .set(13, "1123")
        .set(25, "00")
        .set(32, common::WALLET_ID)
        .set(37, "000000000777")
        .set(49, "156")
        .set(90, "010000012311231122330000102000000000000000");
    if let Some(f) = remove {
        m.remove(f);
    }
    build_bytes(&spec, &m).unwrap()
}

async fn raw_exchange(framed: &mut Framed<TcpStream, FrameCodec>, body: Bytes) -> Message {
    framed.send(Frame::message(body)).await.unwrap();
    let frame = tokio::time::timeout(Duration::from_secs(10), framed.next())
        .await
        .expect("an answer")
        .expect("connection open")
        .unwrap();
    let Frame::Message { body, .. } = frame else {
        panic!("keep-alive instead of an answer")
    };
    parse(&Spec::switchboard(), body).unwrap()
}

async fn bad_input_gets_30_and_other_connections_keep_being_served(backend: Backend) {
    let h = start_with(backend).await;
    let addr = h.world.switch_addr;
    let codec = || FrameCodec::new(FramingConfig::default());
    let mut framed = Framed::new(TcpStream::connect(addr).await.unwrap(), codec());

    // Missing mandatory field 90 → 30, fields echoed.
    let answer = raw_exchange(&mut framed, receive_bytes(&h, Some(90), b"0200")).await;
    assert_eq!(answer.mti(), b"0210");
    assert_eq!(ResponseCode::of(&answer), Some(ResponseCode::FORMAT_ERROR));
    assert_eq!(answer.get_str(num::STAN), Some("000777"));

    // Unknown MTI (0300 is not in the dialect) → 30.
    let answer = raw_exchange(&mut framed, receive_bytes(&h, None, b"0300")).await;
    assert_eq!(answer.mti(), b"0310");
    assert_eq!(ResponseCode::of(&answer), Some(ResponseCode::FORMAT_ERROR));

    // Undecodable body with a readable MTI: F2's length says 99 → 30.
    let mut broken = receive_bytes(&h, None, b"0200").to_vec();
    broken[20] = b'9';
    broken[21] = b'9';
    let answer = raw_exchange(&mut framed, Bytes::from(broken)).await;
    assert_eq!(answer.mti(), b"0210");
    assert_eq!(ResponseCode::of(&answer), Some(ResponseCode::FORMAT_ERROR));

    // Garbage without an MTI gets no answer, but the connection stays usable.
    framed
        .send(Frame::message(Bytes::from_static(b"\xff\xfegarbage")))
        .await
        .unwrap();
    let answer = raw_exchange(&mut framed, receive_bytes(&h, Some(90), b"0200")).await;
    assert_eq!(ResponseCode::of(&answer), Some(ResponseCode::FORMAT_ERROR));

    // An oversized length prefix closes that connection only...
    let mut oversized = TcpStream::connect(addr).await.unwrap();
    oversized.write_all(b"9999").await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), oversized.read(&mut buf))
        .await
        .expect("the switch closes the connection")
        .unwrap_or(0);
    assert_eq!(n, 0, "connection closed without an answer");

    // ...while the other connections keep being served, money flows as usual.
    assert_passed(&scenarios::one_to_one(&h.world).await);
    let answer = raw_exchange(&mut framed, receive_bytes(&h, Some(90), b"0200")).await;
    assert_eq!(ResponseCode::of(&answer), Some(ResponseCode::FORMAT_ERROR));
}

async fn declined_credit_reverses_the_debit(backend: Backend) {
    let h = start_with(backend).await;
    let w = &h.world;
    let wallet = WalletClient::connect(w.switch_addr, FramingConfig::default(), common::WALLET_ID)
        .await
        .unwrap();
    // A well-formed card of bank B's BIN that bank B has no account for.
    let body = b"621700999999999";
    let unknown = format!(
        "{}{}",
        std::str::from_utf8(body).unwrap(),
        simulators::bank::luhn_check_digit(body) as char
    );
    let payer = w.cards_a[0].clone();
    let payer_before = h.bank_a.snapshot().balance(&payer).unwrap();
    let freeze = wallet.freeze(&payer, 4_000, h.clock_now());
    assert_eq!(
        code(&wallet.send(&freeze).await.unwrap()),
        ResponseCode::APPROVED
    );
    let receive = wallet.receive(&freeze, &unknown, 1_500, h.clock_now());
    assert_eq!(
        code(&wallet.send(&receive).await.unwrap()),
        ResponseCode::INVALID_CARD_NUMBER,
        "the credit's decline"
    );

    // The debit was made and its reversal queued; store-and-forward delivers
    // it: the payer is whole again, the hold is whole.
    let key = switchboard::dialect::FreezeKey::of_request(&freeze).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while h.bank_a.snapshot().hold(&key).unwrap().remaining_minor != 4_000 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "reversal not delivered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let a = h.bank_a.snapshot();
    assert_eq!(a.balance(&payer), Some(payer_before));
    assert_eq!(a.hold(&key).unwrap().remaining_minor, 4_000);
    let debits_and_reversals: Vec<_> = h
        .bank_a
        .bank
        .lock()
        .unwrap()
        .journal()
        .iter()
        .map(|m| {
            (
                format!("{:?}", m.kind),
                m.response_code.clone(),
                m.applied_minor,
            )
        })
        .collect();
    assert!(
        debits_and_reversals.contains(&("Debit".into(), ResponseCode::APPROVED.into(), 1_500)),
        "{debits_and_reversals:?}"
    );
    assert!(
        debits_and_reversals.contains(&("Reversal".into(), ResponseCode::APPROVED.into(), 1_500)),
        "{debits_and_reversals:?}"
    );
    // The switch released the reservation; the whole amount can still be received.
    let record = h.store.freeze(&key).await.unwrap().unwrap();
    assert_eq!((record.reserved_minor, record.received_minor), (0, 0));
    let again = wallet.receive(&freeze, &w.cards_b[0], 4_000, h.clock_now());
    assert_eq!(
        code(&wallet.send(&again).await.unwrap()),
        ResponseCode::APPROVED
    );
    let unfreeze = wallet.unfreeze(&freeze, 0, h.clock_now());
    assert_eq!(
        code(&wallet.send(&unfreeze).await.unwrap()),
        ResponseCode::APPROVED
    );
    assert_eq!(
        h.bank_a.snapshot().balance(&payer),
        Some(payer_before - 4_000)
    );
}

async fn freezes_past_their_maximum_age_are_unfrozen_by_the_switch(backend: Backend) {
    use switchboard::clock::Clock;
    let h = start_with(backend).await;
    let w = &h.world;
    let wallet = WalletClient::connect(w.switch_addr, FramingConfig::default(), common::WALLET_ID)
        .await
        .unwrap();
    let freeze = wallet.freeze(&w.cards_a[0], 6_000, h.clock.now());
    assert_eq!(
        code(&wallet.send(&freeze).await.unwrap()),
        ResponseCode::APPROVED
    );
    let receive = wallet.receive(&freeze, &w.cards_b[0], 1_000, h.clock.now());
    assert_eq!(
        code(&wallet.send(&receive).await.unwrap()),
        ResponseCode::APPROVED
    );
    let max_age = Duration::from_secs(7 * 24 * 3600);
    // Not old yet: nothing happens.
    assert_eq!(
        switchboard::switch::expiry::sweep(&h.running.switch, max_age)
            .await
            .unwrap(),
        0
    );
    // Eight days later the wallet still has not sent its notice.
    h.clock.advance(chrono::Duration::days(8));
    assert_eq!(
        switchboard::switch::expiry::sweep(&h.running.switch, max_age)
            .await
            .unwrap(),
        1
    );
    let key = switchboard::dialect::FreezeKey::of_request(&freeze).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while h.bank_a.snapshot().hold(&key).unwrap().remaining_minor != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "unfreeze not delivered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let late = wallet.receive(&freeze, &w.cards_b[1], 1_000, h.clock.now());
    assert_eq!(
        code(&wallet.send(&late).await.unwrap()),
        ResponseCode::INVALID_TRANSACTION
    );
    let record = h.store.freeze(&key).await.unwrap().unwrap();
    assert_eq!((record.received_minor, record.reserved_minor), (1_000, 0));
}

/// Each test above, once per store.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Embedded).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Postgres).await
                }
            )*
        }
    };
}

on_both_stores!(
    one_to_one,
    one_to_many_grabbed_by_more_receivers_than_shares,
    two_hundred_receivers_on_ten_shares,
    over_receive_gets_61,
    receive_after_unfreeze_gets_12,
    unknown_original_gets_25,
    exact_resend_answers_again_and_moves_money_once,
    receive_on_a_later_day,
    payer_and_receiver_at_the_same_bank,
    expiry_unfreezes_the_remainder,
    wallet_sending_as_another_institution_gets_63,
    bad_cards_and_amounts,
    bad_input_gets_30_and_other_connections_keep_being_served,
    declined_credit_reverses_the_debit,
    freezes_past_their_maximum_age_are_unfrozen_by_the_switch,
);

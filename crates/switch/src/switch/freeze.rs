//! Freeze: validate, route by the card's BIN to the payer bank, record the
//! freeze (state `Pending`), forward it with the wallet's F7/F11/F32 unchanged
//! and F33 = the switch, record the bank's answer (`Open` or `Declined`), and
//! answer the wallet with the bank's code.

use tracing::warn;

use iso8583::codec::Message;
use iso8583::fields::{amount_minor, currency, num};
use iso8583::mask::Masked;
use iso8583::ResponseCode;

use super::work::Task;
use super::{messages, Outcome, Switch};
use crate::dialect::FreezeKey;
use crate::risk::{RequestKind, Screened};
use crate::store::{
    FreezeRecord, FreezeState, InsertFreeze, NewFreeze, RequestKey, Settled, StoredAnswer,
};

pub(super) async fn run(
    switch: &Switch,
    request: &Message,
    key: RequestKey,
    digest: [u8; 32],
) -> Outcome {
    // Validation has checked presence and formats of these fields.
    let (Ok(freeze_key), Ok(amount), Ok(currency)) = (
        FreezeKey::of_request(request),
        amount_minor(request),
        currency(request),
    ) else {
        return Outcome::reject(switch, key, digest, request, ResponseCode::FORMAT_ERROR).await;
    };
    let pan = request.get_bytes(num::PAN).unwrap_or_default();
    let pan_text = String::from_utf8_lossy(&pan).into_owned();
    if amount == 0 {
        return Outcome::reject(switch, key, digest, request, ResponseCode::INVALID_AMOUNT).await;
    }
    let Some(bank) = switch.route(&pan).cloned() else {
        return Outcome::reject(
            switch,
            key,
            digest,
            request,
            ResponseCode::INVALID_CARD_NUMBER,
        )
        .await;
    };
    let screened = Screened {
        kind: RequestKind::Freeze,
        pan: &pan_text,
        institution: freeze_key.acquirer,
        wallet: request.get_str(num::ACQUIRER).unwrap_or_default(),
        amount_minor: amount,
        currency,
        packet: None,
    };
    if let Some(declined) = switch
        .screen(&switch.risk.rules(), key, digest, request, &screened)
        .await
    {
        return declined;
    }
    let ticket = switch.work.begin(&*switch.clock, Task::Freeze(freeze_key));
    let inserted = switch
        .store
        .insert_freeze(NewFreeze {
            key: freeze_key,
            owner: switch.instance.clone(),
            request: key,
            request_digest: digest,
            payer_pan: pan_text.clone(),
            payer_bank: bank.institution_id().to_string(),
            amount_minor: amount,
            currency,
            created_at_ms: ticket.created_at_ms(),
        })
        .await;
    match inserted {
        Ok(InsertFreeze::Inserted) => {}
        Ok(InsertFreeze::Exists {
            request_digest,
            answer,
        }) => {
            ticket.done();
            return Outcome::existing(switch, &key, request, digest, request_digest, answer).await;
        }
        Err(e) => {
            warn!(error = %e, "store unavailable");
            return Outcome::unavailable(switch, request, &e);
        }
    }

    let mut forwarded = request.clone();
    forwarded.set(num::FORWARDER, switch.id.clone());
    let mut reversal = None;
    let sent = if switch.may_send() {
        switch.ask(&bank, &forwarded).await
    } else {
        Err(crate::link::LinkError::LeaseLost)
    };
    let (code, auth) = match sent {
        Ok((answer, _)) => (
            ResponseCode::of(&answer).unwrap_or(ResponseCode::SYSTEM_MALFUNCTION),
            answer.get_bytes(num::AUTH_CODE),
        ),
        Err(e) => {
            warn!(bank = bank.institution_id(), pan = %Masked(&pan_text), error = %e, "freeze not answered");
            if e.maybe_delivered() {
                // The bank may hold the amount: queue the undoing of the freeze.
                let record = record_of(
                    freeze_key,
                    &pan_text,
                    bank.institution_id(),
                    amount,
                    currency,
                    digest,
                );
                match messages::queued_freeze_reversal(switch, &record).await {
                    Ok(entry) => reversal = Some(entry),
                    Err(e) => {
                        warn!(error = %e, "no STAN for the freeze reversal; left for recovery")
                    }
                }
            }
            (ResponseCode::ISSUER_UNAVAILABLE, None)
        }
    };
    let approved = code.is_approved();
    let mut response = switch.respond(request, code);
    if approved {
        response.set(
            num::AUTH_CODE,
            auth.unwrap_or_else(|| bytes::Bytes::from_static(b"000000")),
        );
    }
    let bytes = switch.encode(&mut response);
    let answer = StoredAnswer {
        request_digest: digest,
        response: bytes.clone(),
    };
    match switch
        .store
        .finish_freeze_queueing(&freeze_key, approved, &key, answer, reversal)
        .await
    {
        Ok(Settled::Now) => {
            ticket.done();
            Outcome {
                response: bytes,
                note: None,
            }
        }
        Ok(Settled::Before { answer }) => {
            // Recovery of this instance's expired lease declined it meanwhile.
            ticket.done();
            warn!(freeze = %freeze_key, "freeze was ended by recovery meanwhile: answering as recorded");
            Outcome::ended_before(switch, request, answer)
        }
        Err(e) => {
            // Left to the lease round (the ticket is dropped unfinished).
            warn!(error = %e, "freeze outcome not recorded");
            Outcome::unavailable(switch, request, &e)
        }
    }
}

/// The record a freeze reversal is built from.
fn record_of(
    key: FreezeKey,
    pan: &str,
    bank: &str,
    amount: u64,
    currency: u16,
    request_digest: [u8; 32],
) -> FreezeRecord {
    FreezeRecord {
        key,
        payer_pan: pan.to_string(),
        payer_bank: bank.to_string(),
        amount_minor: amount,
        currency,
        received_minor: 0,
        reserved_minor: 0,
        state: FreezeState::Declined,
        created_at_ms: 0,
        request_digest,
    }
}

#[cfg(test)]
mod tests {
    //! A crash between forwarding a freeze and its answer: recovery declines
    //! it, and the wallet's exact resend is told recovery's 91, not 94.

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use iso8583::codec::{build_bytes, parse};
    use iso8583::fields::luhn_valid;
    use iso8583::Spec;

    use super::*;
    use crate::clock::SystemClock;
    use crate::link::{BankPort, LinkError};
    use crate::routing::BinRange;
    use crate::stan::StanSource;
    use crate::store::memory::MemoryStore;
    use crate::store::Store;
    use crate::switch::{recovery, request_digest, request_key, Peer, Route};

    /// A payer bank that takes every request and never answers (counting them).
    struct Silent(AtomicUsize);

    #[async_trait::async_trait]
    impl BankPort for Silent {
        fn institution_id(&self) -> &str {
            "48020000"
        }

        async fn request(&self, _msg: &Message) -> Result<(Message, Bytes), LinkError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            std::future::pending().await
        }
    }

    fn switch(store: &Arc<dyn Store>, bank: &Arc<Silent>) -> Switch {
        let link: Arc<dyn BankPort> = bank.clone();
        Switch::new(
            Arc::new(Spec::switchboard()),
            "00010000".into(),
            store.clone(),
            vec![Route {
                bins: vec![BinRange::parse("622202").unwrap()],
                link,
            }],
            Arc::new(SystemClock),
            Arc::new(StanSource::new(store.clone())),
        )
    }

    /// A card of the payer bank: `622202000000001` and its Luhn digit.
    fn payer_pan() -> String {
        (0..10)
            .map(|d| format!("622202000000001{d}"))
            .find(|pan| luhn_valid(pan.as_bytes()))
            .unwrap()
    }

    /// The wallet's 0100 of `amount` (F4).
    fn freeze_request(amount: &str) -> Message {
        let mut m = Message::new(*b"0100");
        m.set(num::PAN, payer_pan())
            .set(num::PROCESSING_CODE, "030000")
            .set(num::AMOUNT, amount.to_string())
            .set(num::TRANSMISSION, "1202015900")
            .set(num::STAN, "004711")
            .set(num::LOCAL_TIME, "095900")
            .set(num::LOCAL_DATE, "1202")
            .set(num::POS_CONDITION, "06")
            .set(num::ACQUIRER, "01020000")
            .set(num::RRN, "120201004711")
            .set(num::CURRENCY, "156");
        m
    }

    fn code_of(spec: &Spec, response: Bytes) -> ResponseCode {
        let msg = parse(spec, response).unwrap();
        assert_eq!(msg.mti(), b"0110");
        assert_eq!(msg.get_str(num::STAN), Some("004711"));
        assert_eq!(msg.get_str(num::ACQUIRER), Some("01020000"));
        ResponseCode::of(&msg).unwrap()
    }

    #[tokio::test]
    async fn a_freeze_recovery_declined_is_answered_91_when_resent_exactly_and_94_otherwise() {
        let spec = Spec::switchboard();
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let bank = Arc::new(Silent(AtomicUsize::new(0)));
        let peer = Peer {
            name: "wallet".into(),
            institutions: Vec::new(),
            partners: Vec::new(),
            mac: None,
        };
        let freeze = freeze_request("000000005000");
        let raw = build_bytes(&spec, &freeze).unwrap();

        // Forwarded to the bank, then the switch dies before any answer.
        let first = Arc::new(switch(&store, &bank));
        let handling = tokio::spawn({
            let (first, peer, freeze, raw) =
                (first.clone(), peer.clone(), freeze.clone(), raw.clone());
            async move { first.handle(&peer, freeze, raw).await }
        });
        for _ in 0..500 {
            if bank.0.load(Ordering::SeqCst) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            bank.0.load(Ordering::SeqCst),
            1,
            "the freeze reached the bank"
        );
        handling.abort();
        assert!(handling.await.unwrap_err().is_cancelled());
        drop(first);
        let key = FreezeKey::of_request(&freeze).unwrap();
        assert_eq!(
            store.freeze(&key).await.unwrap().unwrap().state,
            FreezeState::Pending
        );

        // Restarted: recovery declines it.
        let second = switch(&store, &bank);
        let done = recovery::recover(&second).await.unwrap();
        assert_eq!(done.freezes_declined, 1);
        assert_eq!(
            store.freeze(&key).await.unwrap().unwrap().state,
            FreezeState::Declined
        );

        let request = request_key(&freeze).unwrap();
        let recorded = store.answer(&request).await.unwrap().unwrap();
        assert_eq!(recorded.request_digest, recovery::RECOVERED_DIGEST);

        // The exact resend: recovery's 91, and nothing is forwarded again.
        let resent = second
            .handle(&peer, freeze.clone(), raw.clone())
            .await
            .unwrap();
        assert_eq!(code_of(&spec, resent), ResponseCode::ISSUER_UNAVAILABLE);
        // The same key with another amount: 94.
        let other = freeze_request("000000009000");
        let raw_other = build_bytes(&spec, &other).unwrap();
        let answered = second
            .handle(&peer, other.clone(), raw_other)
            .await
            .unwrap();
        assert_eq!(
            code_of(&spec, answered),
            ResponseCode::DUPLICATE_TRANSMISSION
        );

        // The flow itself, when recovery's answer is found only on inserting
        // (recorded after `decide` looked): the same answers.
        let outcome = run(&second, &freeze, request, request_digest(&freeze)).await;
        assert_eq!(
            code_of(&spec, outcome.response),
            ResponseCode::ISSUER_UNAVAILABLE
        );
        let outcome = run(&second, &other, request, request_digest(&other)).await;
        assert_eq!(
            code_of(&spec, outcome.response),
            ResponseCode::DUPLICATE_TRANSMISSION
        );
        assert_eq!(bank.0.load(Ordering::SeqCst), 1, "forwarded once");
        assert_eq!(
            store.freeze(&key).await.unwrap().unwrap().state,
            FreezeState::Declined
        );
    }
}

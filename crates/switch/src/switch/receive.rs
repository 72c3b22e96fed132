//! Receive: the saga that moves money from a freeze to a recipient.
//!
//! ```text
//! reserve (+ Debiting) ──▶ debit ──00──▶ credit ──00──▶ Approved: answer 00
//!    │                       │               ├─declined──▶ Failed: the credit's code, debit reversal queued
//!    │                       │               ├─no answer─▶ Failed: 91, credit and debit reversals queued
//!    │                       ├─declined──▶ Failed: the bank's code, nothing to undo
//!    │                       └─no answer─▶ Failed: 91, debit reversal queued
//!    └─ 25 not found · 12 not open · 61 over the frozen amount · 94 same key other content
//! ```
//!
//! The debit's and the credit's identities (F7, STAN) are allocated before the
//! reservation and committed with it, so one commit before the debit covers
//! both sends: whatever a crash interrupts, recovery can name (and reverse)
//! either message. A failed saga releases its reservation and, in the same
//! commit, queues the reversals for store-and-forward (see `saf.rs`), which
//! retries them until the banks acknowledge; when the freeze was closed while
//! the receive was in flight, an unfreeze of its amount is queued too, so the
//! hold reaches zero. The answer to the wallet is given only after the saga's
//! end is committed: two commits per receive.

use tracing::warn;

use iso8583::codec::Message;
use iso8583::fields::{amount_minor, currency, num};
use iso8583::ResponseCode;

use super::messages::{follow_up, Undo};
use super::work::{Task, Ticket};
use super::{messages, Outcome, Peer, Switch};
use crate::dialect::OriginalData;
use crate::risk::{RequestKind, Screened};
use crate::store::{
    FollowUp, FreezeRecord, NewReceive, ReceiveOutcome, RequestKey, Reserve, SentMessage, Settled,
    StoredAnswer,
};

pub(super) async fn run(
    switch: &Switch,
    peer: &Peer,
    request: &Message,
    key: RequestKey,
    digest: [u8; 32],
) -> Outcome {
    let admitted = match admit(switch, peer, request, &key) {
        Ok(admitted) => admitted,
        Err(code) => {
            // A resend of a request answered before gets that answer, not a
            // rejection (the routes or partners may have changed since).
            if let Some(before) = switch.answered_before(&key, digest, request).await {
                return before;
            }
            return Outcome::reject(switch, key, digest, request, code).await;
        }
    };
    let Admitted {
        original,
        amount,
        currency,
        receiver_pan,
        receiver_bank,
    } = admitted;
    // Judged before the reservation: a declined receive reserves nothing,
    // so it has nothing to release. Rules that count would count a resend
    // again, so with rules a resend is found first. One snapshot of the
    // rules decides both, so a reload between them cannot count a resend.
    let rules = switch.risk.rules();
    if !rules.rules.is_empty() {
        if let Some(before) = switch.answered_before(&key, digest, request).await {
            return before;
        }
    }
    let screened = Screened {
        kind: RequestKind::Receive,
        pan: &receiver_pan,
        institution: key.acquirer,
        wallet: request.get_str(num::ACQUIRER).unwrap_or_default(),
        amount_minor: amount,
        currency,
        packet: Some(original.freeze_key()),
    };
    if let Some(declined) = switch.screen(&rules, key, digest, request, &screened).await {
        return declined;
    }
    let identities = async {
        let now = switch.clock.now();
        let debit = messages::sent_message(now, switch.stans.next().await?);
        let credit = messages::sent_message(now, switch.stans.next().await?);
        Ok::<_, crate::store::StoreError>((debit, credit))
    };
    let (debit, credit) = match identities.await {
        Ok(ids) => ids,
        Err(e) => {
            warn!(error = %e, "no STAN");
            return Outcome::unavailable(switch, request, &e);
        }
    };
    let ticket = switch.work.begin(&*switch.clock, Task::Saga(key));
    let reserved = switch
        .store
        .reserve(NewReceive {
            debit,
            credit,
            owner: switch.instance.clone(),
            request: key,
            request_digest: digest,
            freeze: original.freeze_key(),
            amount_minor: amount,
            receiver_pan: receiver_pan.clone(),
            receiver_bank: receiver_bank.institution_id().to_string(),
            created_at_ms: ticket.created_at_ms(),
        })
        .await;
    let code = match reserved {
        Ok(Reserve::Reserved(freeze)) => Ok(freeze),
        Ok(Reserve::NotFound) => Err(ResponseCode::UNABLE_TO_LOCATE_RECORD),
        Ok(Reserve::NotOpen(_)) => Err(ResponseCode::INVALID_TRANSACTION),
        Ok(Reserve::Exceeds { .. }) => Err(ResponseCode::EXCEEDS_AMOUNT_LIMIT),
        Ok(Reserve::Duplicate {
            request_digest,
            answer,
        }) => {
            ticket.done();
            return Outcome::existing(switch, &key, request, digest, request_digest, answer).await;
        }
        Err(e) => {
            // Whether the reservation landed is unknown: the dropped ticket
            // leaves it to the lease round.
            warn!(error = %e, "store unavailable");
            return Outcome::unavailable(switch, request, &e);
        }
    };
    let freeze = match code {
        Ok(freeze) => freeze,
        Err(code) => {
            // Nothing recorded for this request but the rejection.
            ticket.done();
            return Outcome::reject(switch, key, digest, request, code).await;
        }
    };
    let saga = Saga {
        switch,
        ticket,
        request,
        key,
        digest,
        freeze,
        amount,
        receiver_pan,
        receiver_bank: receiver_bank.institution_id().to_string(),
        debit,
        credit,
    };
    if freeze_currency_differs(&saga.freeze, currency) {
        return saga.fail(ResponseCode::INVALID_AMOUNT, &[]).await;
    }
    saga.run(receiver_bank).await
}

/// What a receive's request names, once it passed the checks that need
/// no store.
struct Admitted {
    original: OriginalData,
    amount: u64,
    currency: u16,
    receiver_pan: String,
    receiver_bank: std::sync::Arc<dyn crate::link::BankPort>,
}

/// The checks of a receive before anything is read or counted, or the code
/// it is rejected with.
fn admit(
    switch: &Switch,
    peer: &Peer,
    request: &Message,
    key: &RequestKey,
) -> Result<Admitted, ResponseCode> {
    let (Ok(original), Ok(amount), Ok(currency)) = (
        OriginalData::of(request),
        amount_minor(request),
        currency(request),
    ) else {
        return Err(ResponseCode::FORMAT_ERROR);
    };
    // Before anything that depends on the freeze: a stranger learns nothing
    // of it (not whether it exists, nor what is left of it).
    if original.acquirer != key.acquirer && !peer.partners.contains(&original.acquirer) {
        return Err(ResponseCode::SECURITY_VIOLATION);
    }
    if &original.mti != b"0100" {
        return Err(ResponseCode::UNABLE_TO_LOCATE_RECORD);
    }
    if amount == 0 {
        return Err(ResponseCode::INVALID_AMOUNT);
    }
    let receiver_pan = request.get_str(num::PAN).unwrap_or_default().to_string();
    let Some(receiver_bank) = switch.route(receiver_pan.as_bytes()).cloned() else {
        return Err(ResponseCode::INVALID_CARD_NUMBER);
    };
    Ok(Admitted {
        original,
        amount,
        currency,
        receiver_pan,
        receiver_bank,
    })
}

fn freeze_currency_differs(freeze: &FreezeRecord, currency: u16) -> bool {
    freeze.currency != currency
}

struct Saga<'a> {
    switch: &'a Switch,
    /// Dropped without `done` when the saga is left unfinished: the
    /// ownership round then settles it.
    ticket: Ticket<'a>,
    request: &'a Message,
    key: RequestKey,
    digest: [u8; 32],
    freeze: FreezeRecord,
    amount: u64,
    receiver_pan: String,
    receiver_bank: String,
    debit: SentMessage,
    credit: SentMessage,
}

impl Saga<'_> {
    async fn run(self, receiver_bank: std::sync::Arc<dyn crate::link::BankPort>) -> Outcome {
        let switch = self.switch;
        let Some(payer_bank) = switch.bank(&self.freeze.payer_bank).cloned() else {
            // A freeze recorded for a bank no longer configured: nothing was sent.
            return self.fail(ResponseCode::ISSUER_UNAVAILABLE, &[]).await;
        };

        // Debit the payer bank (state Debiting was recorded with the reservation).
        if !switch.may_send() {
            warn!(saga = %self.key, "lease lost: debit not sent");
            return self.fail(ResponseCode::ISSUER_UNAVAILABLE, &[]).await;
        }
        let now = switch.clock.now();
        let msg = messages::debit(
            &self.freeze,
            self.amount,
            &self.receiver_pan,
            &self.debit,
            now,
            &switch.id,
        );
        match switch.ask(&payer_bank, &msg).await {
            Ok((answer, _)) => {
                let code = ResponseCode::of(&answer).unwrap_or(ResponseCode::SYSTEM_MALFUNCTION);
                if !code.is_approved() {
                    return self.fail(code, &[]).await;
                }
            }
            Err(e) if e.maybe_delivered() => {
                warn!(bank = payer_bank.institution_id(), error = %e, "debit outcome unknown: reversing it");
                return self
                    .fail(ResponseCode::ISSUER_UNAVAILABLE, &[Undo::Debit])
                    .await;
            }
            Err(e) => {
                warn!(bank = payer_bank.institution_id(), error = %e, "debit not sent");
                return self.fail(ResponseCode::ISSUER_UNAVAILABLE, &[]).await;
            }
        }

        // Credit the receiver bank, under the identity recorded with the reservation.
        if !switch.may_send() {
            warn!(saga = %self.key, "lease lost: credit not sent, debit reversed");
            return self
                .fail(ResponseCode::ISSUER_UNAVAILABLE, &[Undo::Debit])
                .await;
        }
        let now = switch.clock.now();
        let msg = messages::credit(
            &self.freeze,
            self.amount,
            &self.receiver_pan,
            receiver_bank.institution_id(),
            &self.credit,
            now,
            &switch.id,
        );
        match switch.ask(&receiver_bank, &msg).await {
            Ok((answer, _)) => {
                let code = ResponseCode::of(&answer).unwrap_or(ResponseCode::SYSTEM_MALFUNCTION);
                if code.is_approved() {
                    let auth = answer.get_bytes(num::AUTH_CODE);
                    return self
                        .finish(
                            ReceiveOutcome::Approved,
                            ResponseCode::APPROVED,
                            auth,
                            FollowUp::default(),
                        )
                        .await;
                }
                self.fail(code, &[Undo::Debit]).await
            }
            Err(e) if e.maybe_delivered() => {
                warn!(bank = receiver_bank.institution_id(), error = %e, "credit outcome unknown: reversing both");
                self.fail(
                    ResponseCode::ISSUER_UNAVAILABLE,
                    &[Undo::Credit, Undo::Debit],
                )
                .await
            }
            Err(e) => {
                warn!(bank = receiver_bank.institution_id(), error = %e, "credit not sent: reversing the debit");
                self.fail(ResponseCode::ISSUER_UNAVAILABLE, &[Undo::Debit])
                    .await
            }
        }
    }

    /// Ends the saga as failed: the reservation is released and, in the same
    /// commit, the reversals of whatever may have moved money are queued for
    /// store-and-forward (credit first, then debit: one queue per freeze), and
    /// an unfreeze of the amount if the freeze was closed meanwhile.
    async fn fail(self, code: ResponseCode, undo: &[Undo]) -> Outcome {
        match follow_up(
            self.switch,
            &self.freeze,
            self.amount,
            &self.receiver_pan,
            &self.receiver_bank,
            &self.debit,
            &self.credit,
            undo,
        )
        .await
        {
            Ok(follow_up) => {
                self.finish(ReceiveOutcome::Failed, code, None, follow_up)
                    .await
            }
            Err(e) => {
                // Without STANs nothing can be queued: leave the saga unsettled
                // (reserved) for recovery, and say so.
                warn!(error = %e, "no STAN for the follow-up messages; saga left for recovery");
                Outcome::unavailable(self.switch, self.request, &e)
            }
        }
    }

    /// Ends the saga in the store, then answers the wallet.
    async fn finish(
        self,
        outcome: ReceiveOutcome,
        code: ResponseCode,
        auth: Option<bytes::Bytes>,
        follow_up: FollowUp,
    ) -> Outcome {
        let switch = self.switch;
        let mut response = switch.respond(self.request, code);
        // A receive settles on its debit's day (the F7 the banks date it by).
        if let Some(sent) =
            iso8583::fields::transmission_datetime(&self.debit.transmission, switch.clock.now())
        {
            response.set(num::SETTLEMENT_DATE, switch.settlement.f15(sent));
        }
        if code.is_approved() {
            response.set(
                num::AUTH_CODE,
                auth.unwrap_or_else(|| bytes::Bytes::from_static(b"000000")),
            );
        }
        let bytes = switch.encode(&mut response);
        let answer = StoredAnswer {
            request_digest: self.digest,
            response: bytes.clone(),
        };
        match switch
            .store
            .settle_receive(&self.key, outcome, answer, follow_up)
            .await
        {
            Ok(Settled::Now) => {
                self.ticket.done();
                Outcome {
                    response: bytes,
                    note: None,
                }
            }
            Ok(Settled::Before { answer }) => {
                // Recovery of this instance's expired lease failed it meanwhile
                // and queued its reversals: the wallet gets that answer, not ours.
                self.ticket.done();
                warn!(saga = %self.key, "receive was ended by recovery meanwhile: answering as recorded");
                Outcome::ended_before(switch, self.request, answer)
            }
            Err(e) => {
                warn!(error = %e, "saga end not recorded; left for recovery");
                Outcome::unavailable(switch, self.request, &e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! A receive finds a resend in its reservation, without a lookup before
    //! it; a rejection before the reservation first looks for an answer
    //! recorded earlier, so an exact resend is answered what it was even
    //! after the switch's routes changed.

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use bytes::Bytes;
    use iso8583::codec::{build_bytes, parse};
    use iso8583::fields::luhn_valid;
    use iso8583::mti::response_mti;
    use iso8583::Spec;

    use super::*;
    use crate::clock::SystemClock;
    use crate::link::{BankPort, LinkError};
    use crate::routing::BinRange;
    use crate::stan::StanSource;
    use crate::store::memory::MemoryStore;
    use crate::store::Store;
    use crate::switch::Route;

    /// A bank that approves every request, counting them.
    struct Approving(&'static str, AtomicUsize);

    #[async_trait::async_trait]
    impl BankPort for Approving {
        fn institution_id(&self) -> &str {
            self.0
        }

        async fn request(&self, msg: &Message) -> Result<(Message, Bytes), LinkError> {
            self.1.fetch_add(1, Ordering::SeqCst);
            let mut answer = msg.clone();
            answer.set_mti(response_mti(msg.mti()));
            answer.set(num::RESPONSE_CODE, "00");
            let bytes = build_bytes(&Spec::switchboard(), &answer).unwrap();
            Ok((answer, bytes))
        }
    }

    /// A switch routing the payer's BIN to `payer`, and the receiver's to
    /// `receiver` when there is one.
    fn switch(
        store: &Arc<dyn Store>,
        payer: &Arc<Approving>,
        receiver: Option<&Arc<Approving>>,
    ) -> Switch {
        let mut routes = vec![Route {
            bins: vec![BinRange::parse("622202").unwrap()],
            link: payer.clone(),
        }];
        if let Some(receiver) = receiver {
            routes.push(Route {
                bins: vec![BinRange::parse("621700").unwrap()],
                link: receiver.clone(),
            });
        }
        Switch::new(
            Arc::new(Spec::switchboard()),
            "00010000".into(),
            store.clone(),
            routes,
            Arc::new(SystemClock),
            Arc::new(StanSource::new(store.clone())),
        )
    }

    /// A card of `bin` with its Luhn digit.
    fn card(bin: &str) -> String {
        (0..10)
            .map(|d| format!("{bin}000000001{d}"))
            .find(|pan| luhn_valid(pan.as_bytes()))
            .unwrap()
    }

    fn request(mti: &[u8; 4], code: &str, pan: &str, amount: &str, stan: &str) -> Message {
        let mut m = Message::new(*mti);
        m.set(num::PAN, pan.to_string())
            .set(num::PROCESSING_CODE, code.to_string())
            .set(num::AMOUNT, amount.to_string())
            .set(num::TRANSMISSION, "1202015900")
            .set(num::STAN, stan.to_string())
            .set(num::LOCAL_TIME, "095900")
            .set(num::LOCAL_DATE, "1202")
            .set(num::POS_CONDITION, "00")
            .set(num::ACQUIRER, "01020000")
            .set(num::RRN, format!("120201{stan}"))
            .set(num::CURRENCY, "156");
        m
    }

    async fn send(switch: &Switch, peer: &Peer, msg: &Message) -> String {
        let raw = build_bytes(&Spec::switchboard(), msg).unwrap();
        let answer = switch.handle(peer, msg.clone(), raw).await.unwrap();
        let answer = parse(&Spec::switchboard(), answer).unwrap();
        answer.get_str(num::RESPONSE_CODE).unwrap().to_string()
    }

    /// A store, two approving banks, a wallet's connection, a freeze of
    /// 50.00 and a receive of 10.00 from it (neither sent yet).
    struct Scene {
        store: Arc<dyn Store>,
        payer: Arc<Approving>,
        receiver: Arc<Approving>,
        peer: Peer,
        freeze: Message,
        receive: Message,
    }

    impl Scene {
        fn new() -> Self {
            let mut freeze = request(b"0100", "030000", &card("622202"), "000000005000", "000001");
            freeze.set(num::POS_CONDITION, "06");
            let mut receive = request(b"0200", "400000", &card("621700"), "000000001000", "000002");
            receive.set(
                num::ORIGINAL_DATA,
                OriginalData::naming(&freeze).unwrap().to_bytes().to_vec(),
            );
            Scene {
                store: Arc::new(MemoryStore::new()),
                payer: Arc::new(Approving("48020000", AtomicUsize::new(0))),
                receiver: Arc::new(Approving("01050000", AtomicUsize::new(0))),
                peer: Peer {
                    name: "wallet".into(),
                    institutions: Vec::new(),
                    partners: Vec::new(),
                    mac: None,
                },
                freeze,
                receive,
            }
        }

        /// Requests each bank got: (payer, receiver).
        fn sent(&self) -> (usize, usize) {
            let sent = |bank: &Approving| bank.1.load(Ordering::SeqCst);
            (sent(&self.payer), sent(&self.receiver))
        }

        /// The receive's reservation as `owner` (another instance, or a
        /// life of this one a crash ended) made it, with its own STANs.
        fn reservation(&self, owner: &str) -> crate::store::NewReceive {
            use crate::store::SentMessage;
            use crate::switch::idempotency::{request_digest, request_key};

            let sent = |stan: &[u8; 6]| SentMessage {
                stan: *stan,
                transmission: *b"1202015900",
            };
            crate::store::NewReceive {
                debit: sent(b"900001"),
                credit: sent(b"900002"),
                owner: owner.into(),
                request: request_key(&self.receive).unwrap(),
                request_digest: request_digest(&self.receive),
                freeze: OriginalData::naming(&self.freeze).unwrap().freeze_key(),
                amount_minor: 1000,
                receiver_pan: card("621700"),
                receiver_bank: "01050000".into(),
                created_at_ms: 0,
            }
        }

        /// The freeze's (reserved, received) amounts.
        async fn totals(&self) -> (u64, u64) {
            let key = OriginalData::naming(&self.freeze).unwrap().freeze_key();
            let frozen = self.store.freeze(&key).await.unwrap().unwrap();
            (frozen.reserved_minor, frozen.received_minor)
        }
    }

    #[tokio::test]
    async fn an_exact_resend_is_answered_what_it_was_after_the_routes_changed() {
        let scene = Scene::new();
        let (peer, receive) = (&scene.peer, &scene.receive);
        let first = switch(&scene.store, &scene.payer, Some(&scene.receiver));
        assert_eq!(send(&first, peer, &scene.freeze).await, "00");
        assert_eq!(send(&first, peer, receive).await, "00");
        assert_eq!(send(&first, peer, receive).await, "00", "resent");
        let mut other = receive.clone();
        other.set(num::AMOUNT, "000000002000");
        assert_eq!(
            send(&first, peer, &other).await,
            "94",
            "the key with other content"
        );
        assert_eq!(scene.sent(), (2, 1), "moved once");

        // The receiver's bank is no longer routed: a new receive is refused
        // (14), the exact resend still gets its 00 and moves nothing.
        let second = switch(&scene.store, &scene.payer, None);
        assert_eq!(send(&second, peer, receive).await, "00", "resent");
        assert_eq!(send(&second, peer, &other).await, "94");
        let mut new = receive.clone();
        new.set(num::STAN, "000003");
        assert_eq!(send(&second, peer, &new).await, "14");
        assert_eq!(scene.sent(), (2, 1), "nothing sent again");

        assert_eq!(scene.totals().await, (0, 1000));
        let sagas = scene.store.sagas().await.unwrap();
        assert_eq!(sagas.len(), 1);
        assert_eq!(sagas[0].state, crate::store::SagaState::Approved);
    }

    /// An exact resend that waits behind other content under its key (a
    /// clash, answered 94) gets its own stored answer, not the clash's.
    #[tokio::test]
    async fn a_resend_waiting_behind_a_clash_gets_its_own_answer() {
        use crate::switch::idempotency::{request_digest, request_key, Begin};

        let scene = Scene::new();
        let switch = Arc::new(switch(&scene.store, &scene.payer, Some(&scene.receiver)));
        assert_eq!(send(&switch, &scene.peer, &scene.freeze).await, "00");
        assert_eq!(send(&switch, &scene.peer, &scene.receive).await, "00");
        let mut clash = scene.receive.clone();
        clash.set(num::AMOUNT, "000000002000");

        // The clash leads under the key; the exact resend arrives meanwhile.
        let key = request_key(&scene.receive).unwrap();
        let Begin::Leader(leader) = switch.in_flight.begin(key) else {
            panic!("nothing else is in flight");
        };
        let follower = tokio::spawn({
            let (switch, peer, receive) =
                (switch.clone(), scene.peer.clone(), scene.receive.clone());
            async move { send(&switch, &peer, &receive).await }
        });
        while !leader.has_followers() {
            tokio::task::yield_now().await;
        }
        let clash_answer = switch.reply(&clash, ResponseCode::DUPLICATE_TRANSMISSION);
        leader.finish(request_digest(&clash), &clash_answer);
        assert_eq!(follower.await.unwrap(), "00", "the resend's own answer");

        assert_eq!(scene.sent(), (2, 1), "moved once");
        assert_eq!(scene.totals().await, (0, 1000));
    }

    /// A resend rejected before its reservation (here: its receiver's bank
    /// no longer routed) while another instance still runs its saga is told
    /// 91, and records nothing: once the saga ends, resends get its 00.
    #[tokio::test]
    async fn a_resend_rejected_while_its_saga_runs_elsewhere_leaves_the_key_to_it() {
        use crate::store::{FollowUp, ReceiveOutcome, StoredAnswer};
        use crate::switch::idempotency::{request_digest, request_key};

        let scene = Scene::new();
        let first = switch(&scene.store, &scene.payer, Some(&scene.receiver));
        assert_eq!(send(&first, &scene.peer, &scene.freeze).await, "00");
        // The other instance's reservation of the receive.
        let key = request_key(&scene.receive).unwrap();
        let reserved = scene
            .store
            .reserve(scene.reservation("the other instance"))
            .await
            .unwrap();
        assert!(matches!(reserved, Reserve::Reserved(_)));

        let unrouted = switch(&scene.store, &scene.payer, None);
        assert_eq!(
            send(&unrouted, &scene.peer, &scene.receive).await,
            "91",
            "in progress elsewhere, not 14"
        );
        let mut clash = scene.receive.clone();
        clash.set(num::AMOUNT, "000000002000");
        assert_eq!(send(&unrouted, &scene.peer, &clash).await, "94");
        assert_eq!(scene.store.answer(&key).await.unwrap(), None);

        // The other instance ends it, approved.
        let approval = unrouted.reply(&scene.receive, ResponseCode::APPROVED);
        let answer = StoredAnswer {
            request_digest: request_digest(&scene.receive),
            response: approval,
        };
        scene
            .store
            .settle_receive(&key, ReceiveOutcome::Approved, answer, FollowUp::default())
            .await
            .unwrap();
        assert_eq!(send(&unrouted, &scene.peer, &scene.receive).await, "00");
        assert_eq!(scene.totals().await, (0, 1000));
        assert_eq!(
            scene.sent(),
            (1, 0),
            "the freeze alone: no debit, no credit"
        );
    }

    /// A resend of a receive recovery failed is told recovery's 91; when
    /// the store cannot say whether it is that request, 96 (which the
    /// wallet retries), never 94 (a clash of its own).
    #[tokio::test]
    async fn a_resend_of_a_recovered_receive_gets_96_while_its_saga_cannot_be_read() {
        use std::sync::atomic::Ordering::SeqCst;

        use crate::store::failing::FailingStore;
        use crate::switch::recovery;

        let scene = Scene::new();
        let failing = Arc::new(FailingStore::new(scene.store.clone()));
        let store: Arc<dyn Store> = failing.clone();
        let switch = switch(&store, &scene.payer, Some(&scene.receiver));
        assert_eq!(send(&switch, &scene.peer, &scene.freeze).await, "00");
        // A receive a crash interrupted after its reservation.
        let reserved = store
            .reserve(scene.reservation(switch.instance()))
            .await
            .unwrap();
        assert!(matches!(reserved, Reserve::Reserved(_)));
        recovery::recover(&switch).await.unwrap();
        assert_eq!(scene.totals().await, (0, 0), "recovery released it");

        failing.fail_saga_reads.store(true, SeqCst);
        assert_eq!(send(&switch, &scene.peer, &scene.receive).await, "96");
        failing.fail_saga_reads.store(false, SeqCst);
        assert_eq!(send(&switch, &scene.peer, &scene.receive).await, "91");
        assert_eq!(scene.totals().await, (0, 0));
        assert_eq!(scene.sent(), (1, 0), "the freeze alone: nothing moved");
    }
}

//! The switch's decisions: every wallet request goes through [`Switch::handle`],
//! which validates it, answers resends from what was answered before, and runs
//! the flow of its message type, each an explicit state machine in its own
//! module: `freeze`, `receive`, `unfreeze`.
//!
//! The switch is written against the [`Store`] trait, the bank links and an
//! injectable [`Clock`]; it knows nothing of sockets or framing.

pub mod expiry;
mod freeze;
mod idempotency;
pub mod lease;
mod messages;
mod receive;
pub mod recovery;
pub mod retention;
pub mod saf;
mod unfreeze;
mod work;

use std::sync::Arc;

use bytes::Bytes;
use tracing::{debug, warn};

use iso8583::codec::{build_bytes, EncodeError, Message};
use iso8583::fields::num;
use iso8583::mti::{is_response, response_mti};
use iso8583::spec::Spec;
use iso8583::validate::validate;
use iso8583::ResponseCode;

use crate::clock::Clock;
use crate::dialect::InstitutionId;
use crate::link::BankPort;
use crate::routing::BinRange;
use crate::stan::StanSource;
use crate::store::{Direction, Leases, Recorded, RequestKey, Store, StoreError, StoredAnswer};

pub use idempotency::{request_digest, request_key};
use idempotency::{Begin, InFlight};

/// Who a request came from, as the listener knows it.
#[derive(Debug, Clone)]
pub struct Peer {
    /// For logs and the journal, e.g. "wallet 127.0.0.1:50312".
    pub name: String,
    /// Institution ids (F32) this connection may send as; empty means any.
    pub institutions: Vec<InstitutionId>,
    /// Institutions whose packets this connection may receive from besides
    /// the sender's own (the listener's `partners`).
    pub partners: Vec<InstitutionId>,
    /// The listener's MACs: requests are checked, answers signed.
    pub mac: Option<Arc<crate::mac::LinkMac>>,
}

/// A bank the switch can route to.
pub struct Route {
    pub bins: Vec<BinRange>,
    pub link: Arc<dyn BankPort>,
}

pub struct Switch {
    spec: Arc<Spec>,
    id: String,
    store: Arc<dyn Store>,
    /// The store's leases, when it is shared by several instances.
    leases: Option<Arc<dyn Leases>>,
    routes: Vec<Route>,
    clock: Arc<dyn Clock>,
    stans: Arc<StanSource>,
    in_flight: InFlight,
    /// Cutoff and time zone of settlement dates (F15).
    settlement: crate::clearing::Settlement,
    /// This instance's name in the store: owner of the work it starts.
    instance: String,
    /// The work started and not ended (its watermark goes with the lease).
    work: work::Work,
    /// Until when this instance may send (see `lease.rs`).
    lease: lease::LeaseClock,
    /// The risk rules every freeze and receive must pass first.
    risk: Arc<crate::risk::Risk>,
    /// What the alerts count: answers, declines and reversals per party.
    alerts: Arc<crate::alerts::Alerts>,
}

/// A name no other instance has: host process id and start time.
fn new_instance_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}-{nanos:x}", std::process::id())
}

impl Switch {
    pub fn new(
        spec: Arc<Spec>,
        institution_id: String,
        store: Arc<dyn Store>,
        routes: Vec<Route>,
        clock: Arc<dyn Clock>,
        stans: Arc<StanSource>,
    ) -> Switch {
        Switch {
            spec,
            id: institution_id,
            leases: store.clone().leases(),
            store,
            routes,
            clock,
            stans,
            in_flight: InFlight::default(),
            settlement: crate::clearing::Settlement::default(),
            instance: new_instance_id(),
            work: work::Work::default(),
            lease: lease::LeaseClock::default(),
            risk: Arc::new(crate::risk::Risk::none()),
            alerts: Arc::new(crate::alerts::Alerts::off()),
        }
    }

    /// Counts answers, declines and reversals per party for these alerts
    /// (none by default).
    pub fn with_alerts(mut self, alerts: Arc<crate::alerts::Alerts>) -> Switch {
        self.alerts = alerts;
        self
    }

    /// A freeze, debit or credit sent to `bank`, its answer counted for the
    /// bank's alerts.
    async fn ask(
        &self,
        bank: &Arc<dyn BankPort>,
        msg: &Message,
    ) -> Result<(Message, Bytes), crate::link::LinkError> {
        let answer = bank.request(msg).await;
        let event = match &answer {
            Ok((m, _)) => crate::alerts::Event::Answered {
                approved: ResponseCode::of(m).is_some_and(|c| c.is_approved()),
            },
            Err(_) => crate::alerts::Event::Unanswered,
        };
        self.alerts.record(
            crate::metrics::Side::Bank,
            bank.institution_id().as_bytes(),
            event,
        );
        answer
    }

    /// A reversal queued toward `bank` for a packet of `wallet`.
    pub(crate) fn count_reversal(&self, bank: &str, wallet: &crate::dialect::InstitutionId) {
        let reversal = crate::alerts::Event::Reversal;
        self.alerts
            .record(crate::metrics::Side::Bank, bank.as_bytes(), reversal);
        self.alerts
            .record(crate::metrics::Side::Wallet, &wallet.0, reversal);
    }

    /// Judges freezes and receives by these risk rules (none by default).
    pub fn with_risk(mut self, risk: Arc<crate::risk::Risk>) -> Switch {
        self.risk = risk;
        self
    }

    /// The risk rules in force, to reload or read their tally.
    pub fn risk(&self) -> &Arc<crate::risk::Risk> {
        &self.risk
    }

    /// Whether the risk rules let `screened` through: `None` when they do,
    /// the outcome to answer (a decline, recorded like any rejection, or 96
    /// when the counters cannot be read) when they do not. Runs before
    /// anything of the request is recorded or sent.
    async fn screen(
        &self,
        rules: &crate::risk::Rules,
        key: RequestKey,
        digest: [u8; 32],
        request: &Message,
        screened: &crate::risk::Screened<'_>,
    ) -> Option<Outcome> {
        let now_ms = self.clock.now_ms();
        match self
            .risk
            .screen(rules, &*self.store, &self.settlement, now_ms, screened)
            .await
        {
            Ok(crate::risk::Verdict::Pass) => None,
            Ok(crate::risk::Verdict::Decline { rule, code }) => {
                let mut outcome = Outcome::reject(self, key, digest, request, code).await;
                outcome.note = Some(format!("declined {code} by risk rule {rule}"));
                Some(outcome)
            }
            Err(e) => {
                warn!(error = %e, "risk counters unavailable");
                Some(Outcome::unavailable(self, request, &e))
            }
        }
    }

    /// Whether this instance still holds its lease and so may send a debit,
    /// a credit or a freeze. Always, on a store that is not shared.
    fn may_send(&self) -> bool {
        self.lease.holds()
    }

    /// Whether this instance holds its lease, on a store shared by
    /// instances; `None` on a store that has no leases.
    pub fn lease_held(&self) -> Option<bool> {
        self.leases.as_ref().map(|_| self.lease.holds())
    }

    /// Names this instance (by default: process id and start time).
    pub fn with_instance(mut self, instance: impl Into<String>) -> Switch {
        self.instance = instance.into();
        self
    }

    /// This instance's name in the store.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Now, by the switch's clock (ms since the epoch).
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The cutoff and time zone F15 is given by (23:00 Asia/Shanghai unless set).
    pub fn with_settlement(mut self, settlement: crate::clearing::Settlement) -> Switch {
        self.settlement = settlement;
        self
    }

    pub fn settlement(&self) -> &crate::clearing::Settlement {
        &self.settlement
    }

    pub fn spec(&self) -> &Arc<Spec> {
        &self.spec
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The bank owning a card, by the longest matching BIN range.
    fn route(&self, pan: &[u8]) -> Option<&Arc<dyn BankPort>> {
        self.routes
            .iter()
            .flat_map(|r| r.bins.iter().map(move |b| (b, &r.link)))
            .filter(|(b, _)| b.contains(pan))
            .max_by_key(|(b, _)| b.len)
            .map(|(_, link)| link)
    }

    /// The bank with this institution id.
    fn bank(&self, institution_id: &str) -> Option<&Arc<dyn BankPort>> {
        self.routes
            .iter()
            .map(|r| &r.link)
            .find(|l| l.institution_id() == institution_id)
    }

    fn journal(
        &self,
        direction: Direction,
        peer: &str,
        msg: &Message,
        raw: Bytes,
        note: Option<String>,
    ) {
        let at = self.clock.now_ms();
        let counted = match direction {
            Direction::In => crate::metrics::Direction::In,
            Direction::Out => crate::metrics::Direction::Out,
        };
        let institution = msg
            .get(num::ACQUIRER)
            .map_or(crate::metrics::Label::EMPTY, |v| {
                crate::metrics::Label::new(v)
            });
        crate::metrics::metrics().message(counted, crate::metrics::Side::Wallet, msg, institution);
        self.store
            .journal_message(direction, peer, msg, raw, at, note);
    }

    /// The flow a wallet request runs, as metrics name it.
    fn flow_name(&self, request: &Message) -> &'static str {
        let processing = request.get(num::PROCESSING_CODE);
        match self.spec.message_for(request.mti(), processing) {
            Some((m, false)) => match m.name.as_str() {
                "freeze" => "freeze",
                "receive" => "receive",
                "unfreeze" => "unfreeze",
                _ => "other",
            },
            _ => "other",
        }
    }

    /// Builds a response, leaving out any echoed field that cannot be built (a
    /// malformed field of the request is not echoed back).
    fn encode(&self, msg: &mut Message) -> Bytes {
        for _ in 0..8 {
            match build_bytes(&self.spec, msg) {
                Ok(bytes) => return bytes,
                Err(
                    EncodeError::WrongLength { field, .. }
                    | EncodeError::TooLong { field, .. }
                    | EncodeError::UndefinedField { field }
                    | EncodeError::Unencodable {
                        field: Some(field), ..
                    },
                ) => {
                    msg.remove(field);
                }
                Err(e) => {
                    warn!(error = %e, "response cannot be built");
                    break;
                }
            }
        }
        let mut minimal = Message::new(*msg.mti());
        minimal.set(
            num::RESPONSE_CODE,
            msg.get_bytes(num::RESPONSE_CODE)
                .unwrap_or_else(|| ResponseCode::SYSTEM_MALFUNCTION.into()),
        );
        build_bytes(&self.spec, &minimal).unwrap_or_default()
    }

    /// The response to `request` with code `code`: echoes 2, 3, 4, 7, 11, 32,
    /// 33, 37, 49, 90 and 100 where present, carries 39, and 15 for financial
    /// responses.
    fn respond(&self, request: &Message, code: ResponseCode) -> Message {
        let mut response = Message::new(response_mti(request.mti()));
        let echoed: &[u16] = if request.mti() == b"0800" {
            &[7, 11, 32, 33, 70, 100]
        } else {
            &[2, 3, 4, 7, 11, 32, 33, 37, 49, 90, 100]
        };
        response.echo(request, echoed);
        if &request.mti()[..2] == b"02" {
            response.set(num::SETTLEMENT_DATE, self.settlement.f15(self.clock.now()));
        }
        response.set(num::RESPONSE_CODE, code);
        response
    }

    /// A store-and-forward entry for a message the switch built.
    pub(crate) fn saf_entry(
        &self,
        bank: &str,
        order_key: &str,
        kind: crate::store::SafKind,
        mut msg: Message,
    ) -> crate::store::NewSafEntry {
        crate::store::NewSafEntry {
            bank: bank.to_string(),
            order_key: order_key.to_string(),
            kind,
            message: self.encode(&mut msg),
            created_at_ms: self.clock.now_ms(),
        }
    }

    /// Whether `answer` is what recovery recorded for this very request: a
    /// freeze it declined or a receive saga it failed, whose request had
    /// `digest`. Recovery records its answer without the request's digest
    /// (it no longer has the request), so without this check an exact resend
    /// of a request a crash interrupted would be told 94. The freeze or saga
    /// kept the digest of the request that started it.
    async fn recovered_this(
        &self,
        key: &RequestKey,
        digest: [u8; 32],
        answer: &StoredAnswer,
    ) -> Result<bool, StoreError> {
        if answer.request_digest != recovery::RECOVERED_DIGEST {
            return Ok(false);
        }
        let kept = if key.mti == *b"0100" {
            self.store
                .freeze(&key.freeze_key())
                .await?
                .map(|f| f.request_digest)
        } else {
            self.store.saga(key).await?.map(|s| s.request_digest)
        };
        Ok(kept == Some(digest))
    }

    /// The response to `request` with code `code`, built.
    fn reply(&self, request: &Message, code: ResponseCode) -> Bytes {
        let mut response = self.respond(request, code);
        self.encode(&mut response)
    }

    /// Handles one request from a wallet and returns the response to send (the
    /// codec bytes, without framing), or `None` when nothing is to be answered.
    pub async fn handle(&self, peer: &Peer, request: Message, raw: Bytes) -> Option<Bytes> {
        let started = std::time::Instant::now();
        // A journal that cannot keep up holds new requests back (never drops rows).
        self.store.journal_room().await;
        let refused = match &peer.mac {
            Some(mac) if !is_response(request.mti()) => mac.check(&self.spec, &raw, &request).err(),
            _ => None,
        };
        let refusal_note = refused.as_ref().map(|e| format!("MAC refused (A0): {e}"));
        self.journal(
            Direction::In,
            &peer.name,
            &request,
            raw,
            refusal_note.clone(),
        );
        if is_response(request.mti()) {
            warn!(peer = %peer.name, mti = request.mti_str(), "response from a wallet ignored");
            return None;
        }
        let (bytes, note) = match refused {
            Some(error) => {
                warn!(peer = %peer.name, mti = request.mti_str(), error = %error, "MAC refused");
                (
                    self.reply(&request, ResponseCode::MAC_FAILURE),
                    refusal_note,
                )
            }
            None => self.decide(peer, &request).await,
        };
        let Ok(mut msg) = iso8583::codec::parse(&self.spec, bytes.clone()) else {
            return Some(bytes);
        };
        let flow = self.flow_name(&request);
        crate::metrics::metrics().flow(
            flow,
            msg.get(num::RESPONSE_CODE)
                .map_or(crate::metrics::Label::EMPTY, |v| {
                    crate::metrics::Label::new(v)
                }),
            started.elapsed().as_secs_f64(),
        );
        if let ("freeze" | "receive", Some(wallet)) = (flow, request.get(num::ACQUIRER)) {
            let approved = ResponseCode::of(&msg).is_some_and(|c| c.is_approved());
            self.alerts.record(
                crate::metrics::Side::Wallet,
                wallet,
                crate::alerts::Event::Answered { approved },
            );
        }
        // Answers are stored unsigned: each one sent (a resend's too) is
        // signed with the key in force when it goes out.
        let bytes = match &peer.mac {
            Some(mac) => match mac.sign(&self.spec, &mut msg) {
                Ok(signed) => signed,
                Err(e) => {
                    warn!(peer = %peer.name, error = %e, "cannot sign the answer; sent without a MAC");
                    bytes
                }
            },
            None => bytes,
        };
        self.journal(Direction::Out, &peer.name, &msg, bytes.clone(), note);
        Some(bytes)
    }

    async fn decide(&self, peer: &Peer, request: &Message) -> (Bytes, Option<String>) {
        let validation = validate(&self.spec, request);
        if !validation.is_valid() {
            let code = validation
                .response_code()
                .unwrap_or(ResponseCode::FORMAT_ERROR);
            debug!(
                peer = %peer.name,
                violations = %validation.violations.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
                "invalid request"
            );
            let note = validation.violations.first().map(ToString::to_string);
            return (self.reply(request, code), note);
        }
        if request.mti() == b"0800" {
            return (self.reply(request, ResponseCode::APPROVED), None);
        }
        let acquirer = request
            .get(num::ACQUIRER)
            .and_then(|v| InstitutionId::from_field(num::ACQUIRER, v).ok());
        let allowed = peer.institutions.is_empty()
            || acquirer.is_some_and(|a| peer.institutions.contains(&a));
        if !allowed {
            return (
                self.reply(request, ResponseCode::SECURITY_VIOLATION),
                Some("institution not allowed on this connection".into()),
            );
        }
        let name = validation.message.map(|m| m.name.as_str()).unwrap_or("");
        let Some(key) = request_key(request) else {
            return (self.reply(request, ResponseCode::FORMAT_ERROR), None);
        };
        let digest = request_digest(request);

        // A resend while the original is still being decided waits for its answer.
        let guard = match self.in_flight.begin(key) {
            Begin::Leader(guard) => guard,
            Begin::Follower(waiter) => {
                return match waiter.wait().await {
                    Some((d, bytes)) if d == digest => (bytes, Some("resend".into())),
                    // The leader was other content under this key, which
                    // may itself have been a clash with an earlier answer
                    // this request is the exact resend of: the store says.
                    Some(_) => match self.answered_before(&key, digest, request).await {
                        Some(before) => (before.response, before.note),
                        None => (self.reply(request, ResponseCode::SYSTEM_MALFUNCTION), None),
                    },
                    None => (self.reply(request, ResponseCode::SYSTEM_MALFUNCTION), None),
                };
            }
        };
        // A receive looks for an earlier answer only where it must
        // (`receive::run`): its reservation finds a resend by itself, so
        // only a rejection before it, or a screening that counts, looks
        // first. That saves every receive a store round trip.
        if name != "receive" {
            if let Some(before) = self.answered_before(&key, digest, request).await {
                guard.finish(digest, &before.response);
                return (before.response, before.note);
            }
        }
        let outcome = match name {
            "freeze" => freeze::run(self, request, key, digest).await,
            "receive" => receive::run(self, peer, request, key, digest).await,
            "unfreeze" => unfreeze::run(self, request, key, digest).await,
            _ => {
                Outcome::reject(
                    self,
                    key,
                    digest,
                    request,
                    ResponseCode::INVALID_TRANSACTION,
                )
                .await
            }
        };
        guard.finish(digest, &outcome.response);
        (outcome.response, outcome.note)
    }

    /// The answer to a request whose key the store already holds, if it
    /// does: the stored answer for an exact resend; for a request recovery
    /// settled, the code it recorded; 94 for other content under the key;
    /// 96 when the store cannot be read. `None`: the key is new.
    pub(crate) async fn answered_before(
        &self,
        key: &RequestKey,
        digest: [u8; 32],
        request: &Message,
    ) -> Option<Outcome> {
        let answer = match self.store.answer(key).await {
            Ok(Some(answer)) => answer,
            Ok(None) => return None,
            Err(e) => {
                warn!(error = %e, "store unavailable");
                return Some(Outcome::unavailable(self, request, &e));
            }
        };
        if answer.request_digest == digest {
            return Some(Outcome {
                response: answer.response,
                note: Some("resend".into()),
            });
        }
        Some(match self.recovered_this(key, digest, &answer).await {
            Ok(true) => {
                let mut outcome = Outcome::ended_before(self, request, Some(answer));
                outcome.note = Some("resend of a request recovery settled".into());
                outcome
            }
            Ok(false) => Outcome {
                response: self.reply(request, ResponseCode::DUPLICATE_TRANSMISSION),
                note: Some("same key, different content".into()),
            },
            Err(e) => {
                warn!(error = %e, "store unavailable");
                Outcome::unavailable(self, request, &e)
            }
        })
    }
}

/// What a flow answered, already stored.
pub(crate) struct Outcome {
    pub response: Bytes,
    pub note: Option<String>,
}

impl Outcome {
    /// The answer to a request whose key the store already holds (found by
    /// another instance, or an earlier life of this one): the stored answer
    /// for an exact resend (recovery's code, when recovery ended it), 91
    /// while the first one is still being decided, 94 for the same key with
    /// other content.
    async fn existing(
        switch: &Switch,
        key: &RequestKey,
        request: &Message,
        digest: [u8; 32],
        stored_digest: [u8; 32],
        answer: Option<StoredAnswer>,
    ) -> Outcome {
        let by_recovery = |a: &&StoredAnswer| a.request_digest == recovery::RECOVERED_DIGEST;
        if let Some(a) = answer
            .as_ref()
            .filter(|a| stored_digest != digest || by_recovery(a))
        {
            // Recorded by recovery, before this request came or while it
            // ran: the code recovery recorded, in a reply to this request
            // (recovery no longer had the request to answer).
            match switch.recovered_this(key, digest, a).await {
                Ok(true) => {
                    let mut outcome = Outcome::ended_before(switch, request, answer);
                    if stored_digest == digest {
                        outcome.note = Some("resend of a request recovery settled".into());
                    }
                    return outcome;
                }
                Ok(false) => {}
                // Unknown whether this is the request recovery settled:
                // 96, which a wallet retries, rather than 94, which it
                // would take for a clash of its own.
                Err(e) => {
                    warn!(error = %e, "store unavailable");
                    return Outcome::unavailable(switch, request, &e);
                }
            }
        }
        let (code, note) = match answer {
            Some(a) if stored_digest == digest => {
                return Outcome {
                    response: a.response,
                    note: Some("resend".into()),
                }
            }
            _ if stored_digest == digest => (
                ResponseCode::ISSUER_UNAVAILABLE,
                "resend of a request still in progress",
            ),
            _ => (
                ResponseCode::DUPLICATE_TRANSMISSION,
                "same key, different content",
            ),
        };
        Outcome {
            response: switch.reply(request, code),
            note: Some(note.into()),
        }
    }

    /// 96 to `request`, the error kept as the journal's note: the store (or
    /// a counter it keeps) could not be read or written, and the wallet
    /// retries.
    fn unavailable(switch: &Switch, request: &Message, e: &dyn std::fmt::Display) -> Outcome {
        Outcome {
            response: switch.reply(request, ResponseCode::SYSTEM_MALFUNCTION),
            note: Some(e.to_string()),
        }
    }

    /// The answer to a request whose freeze or saga someone else ended while
    /// it ran (recovery, after this instance's lease expired): a reply to the
    /// request with the code recorded then — 91 when it was undone — never
    /// the outcome this instance saw.
    fn ended_before(switch: &Switch, request: &Message, answer: Option<StoredAnswer>) -> Outcome {
        let code = answer
            .and_then(|a| iso8583::codec::parse(&switch.spec, a.response).ok())
            .and_then(|m| ResponseCode::of(&m))
            .unwrap_or(ResponseCode::ISSUER_UNAVAILABLE);
        Outcome {
            response: switch.reply(request, code),
            note: Some("ended by recovery meanwhile".into()),
        }
    }

    /// A rejection that changed nothing: recorded so an exact resend gets it again.
    async fn reject(
        switch: &Switch,
        key: crate::store::RequestKey,
        digest: [u8; 32],
        request: &Message,
        code: ResponseCode,
    ) -> Outcome {
        let bytes = switch.reply(request, code);
        let answer = StoredAnswer {
            request_digest: digest,
            response: bytes.clone(),
        };
        match switch.store.record_answer(&key, answer).await {
            Ok(Recorded::Kept) => {}
            // A freeze or saga holds the key (another instance decides it,
            // or decided it): this is a resend of it or a clash, answered
            // as such, and its own answer stays the key's.
            Ok(Recorded::Held { request_digest }) => {
                let answer = switch.store.answer(&key).await.ok().flatten();
                return Outcome::existing(switch, &key, request, digest, request_digest, answer)
                    .await;
            }
            Err(e) => warn!(error = %e, "answer not recorded"),
        }
        Outcome {
            response: bytes,
            note: Some(format!("rejected {code}")),
        }
    }
}

//! An in-memory store: the [`Store`] contract, leases included, with nothing
//! but ordered maps behind one mutex. Every call is one atomic step, as if it had committed when
//! it returned — which is what the deterministic simulation needs: a "crash"
//! drops whatever was in flight and keeps everything that returned. Not durable
//! across processes; not for production.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{
    Close, Decisions, ExpiredLease, FollowUp, FreezeRecord, FreezeState, History, InsertFreeze,
    JournalEntry, JournalSink, Lease, Leases, NewFreeze, NewReceive, NewSafEntry, ReceiveOutcome,
    Recorded, RequestKey, Reserve, SafEntry, SafOutcome, SafQueue, SafState, SagaRecord, SagaState,
    Settled, Store, StoreError, StoreResult, StoredAnswer, Unfinished,
};
use crate::dialect::FreezeKey;

#[derive(Default)]
struct State {
    freezes: BTreeMap<FreezeKey, (FreezeRecord, [u8; 32])>,
    sagas: BTreeMap<RequestKey, (SagaRecord, [u8; 32])>,
    answers: BTreeMap<RequestKey, StoredAnswer>,
    saf: BTreeMap<i64, SafEntry>,
    next_saf_id: i64,
    next_stan: u32,
    /// Every entry, in the order written (clearing reads them back).
    journal: Vec<JournalEntry>,
    /// Which instance started each freeze and saga.
    freeze_owners: BTreeMap<FreezeKey, String>,
    saga_owners: BTreeMap<RequestKey, String>,
    /// Instance → (lease end, unfinished since), by the callers' clock.
    leases: BTreeMap<String, (i64, i64)>,
    /// (rule, subject) → the events the risk rules count.
    risk_events: BTreeMap<(String, String), Vec<RiskEvent>>,
    risk_hits: Vec<super::Hit>,
    /// The last [`super::audit::MEMORY_ROWS`] audit rows, oldest first.
    audit: std::collections::VecDeque<super::AuditRecord>,
    next_audit_id: i64,
}

/// One event a risk rule counts: (at_ms, amount, distinct value).
type RiskEvent = (i64, u64, String);

/// See the module documentation.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    pub fn new() -> Self {
        MemoryStore {
            state: Mutex::new(State {
                next_stan: 1,
                next_saf_id: 1,
                ..State::default()
            }),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> StoreResult<T>) -> StoreResult<T> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| StoreError::Unavailable("memory store poisoned".into()))?;
        f(&mut state)
    }
}

fn invalid(why: impl Into<String>) -> StoreError {
    StoreError::Invalid(why.into())
}

/// Refuses what the SQL stores cannot hold (amounts are `i64` there), so the
/// model answers as they do.
fn amount_in(what: &str, amount: u64) -> StoreResult<u64> {
    match i64::try_from(amount) {
        Ok(_) => Ok(amount),
        Err(_) => Err(invalid(format!("{what} {amount} exceeds i64::MAX"))),
    }
}

impl State {
    fn enqueue(&mut self, entry: &NewSafEntry) {
        let id = self.next_saf_id;
        self.next_saf_id += 1;
        self.saf.insert(
            id,
            SafEntry {
                id,
                entry: entry.clone(),
                state: SafState::Pending,
                attempts: 0,
                next_attempt_ms: entry.created_at_ms,
                last_result: None,
            },
        );
    }

    fn finish_freeze(
        &mut self,
        key: &FreezeKey,
        approved: bool,
        request: &RequestKey,
        answer: StoredAnswer,
    ) -> StoreResult<Settled> {
        let (freeze, _) = self
            .freezes
            .get_mut(key)
            .ok_or_else(|| invalid(format!("finish_freeze: no freeze {key}")))?;
        if freeze.state != FreezeState::Pending {
            return Ok(Settled::Before {
                answer: self.answers.get(request).cloned(),
            });
        }
        freeze.state = if approved {
            FreezeState::Open
        } else {
            FreezeState::Declined
        };
        self.answers.entry(*request).or_insert(answer);
        Ok(Settled::Now)
    }

    /// Ends a saga as asked; false when it had ended before.
    fn end_saga(
        &mut self,
        request: &RequestKey,
        outcome: ReceiveOutcome,
        answer: StoredAnswer,
    ) -> StoreResult<bool> {
        let (saga, _) = self
            .sagas
            .get_mut(request)
            .ok_or_else(|| invalid(format!("settle_receive: no saga {request}")))?;
        if saga.state.is_final() {
            return Ok(false);
        }
        let amount = saga.amount_minor;
        let (freeze, _) = self
            .freezes
            .get_mut(&saga.freeze)
            .ok_or_else(|| StoreError::Corrupt(format!("saga {request} has no freeze")))?;
        if freeze.reserved_minor < amount {
            return Err(StoreError::Corrupt(format!(
                "freeze {} holds less than {amount} reserved",
                freeze.key
            )));
        }
        freeze.reserved_minor -= amount;
        if outcome == ReceiveOutcome::Approved {
            freeze.received_minor += amount;
        }
        saga.state = match outcome {
            ReceiveOutcome::Approved => SagaState::Approved,
            ReceiveOutcome::Failed => SagaState::Failed,
        };
        static SPEC: std::sync::OnceLock<iso8583::Spec> = std::sync::OnceLock::new();
        let spec = SPEC.get_or_init(iso8583::Spec::switchboard);
        saga.response_code = iso8583::codec::parse(spec, answer.response.clone())
            .ok()
            .and_then(|m| m.get_str(39).map(str::to_string));
        self.answers.entry(*request).or_insert(answer);
        Ok(true)
    }

    fn close(
        &mut self,
        key: &FreezeKey,
        amount_minor: u64,
        request: &RequestKey,
        answer: StoredAnswer,
    ) -> Close {
        let Some((freeze, _)) = self.freezes.get_mut(key) else {
            return Close::NotFound;
        };
        if freeze.state != FreezeState::Open {
            return Close::NotOpen(freeze.state);
        }
        let remaining_minor = freeze.available_minor();
        if amount_minor != remaining_minor {
            return Close::AmountMismatch { remaining_minor };
        }
        freeze.state = FreezeState::Closed;
        let record = freeze.clone();
        self.answers.entry(*request).or_insert(answer);
        Close::Closed(record)
    }
}

impl Store for MemoryStore {
    fn leases(self: Arc<Self>) -> Option<Arc<dyn Leases>> {
        Some(self)
    }
}

impl JournalSink for MemoryStore {
    fn journal(&self, entry: JournalEntry) {
        if let Ok(mut s) = self.state.lock() {
            s.journal.push(entry);
        }
    }
}

#[async_trait]
impl Decisions for MemoryStore {
    async fn answer(&self, request: &RequestKey) -> StoreResult<Option<StoredAnswer>> {
        self.with(|s| Ok(s.answers.get(request).cloned()))
    }

    async fn record_answer(
        &self,
        request: &RequestKey,
        answer: StoredAnswer,
    ) -> StoreResult<Recorded> {
        self.with(|s| {
            let freeze = (request.mti == *b"0100")
                .then(|| s.freezes.get(&request.freeze_key()).map(|(_, d)| *d))
                .flatten();
            let held = s.sagas.get(request).map(|(_, d)| *d).or(freeze);
            if let Some(request_digest) = held {
                return Ok(Recorded::Held { request_digest });
            }
            s.answers.entry(*request).or_insert(answer);
            Ok(Recorded::Kept)
        })
    }

    async fn insert_freeze(&self, freeze: NewFreeze) -> StoreResult<InsertFreeze> {
        amount_in("frozen amount", freeze.amount_minor)?;
        self.with(|s| {
            if let Some(answer) = s.answers.get(&freeze.request) {
                return Ok(InsertFreeze::Exists {
                    request_digest: answer.request_digest,
                    answer: Some(answer.clone()),
                });
            }
            if let Some((_, digest)) = s.freezes.get(&freeze.key) {
                return Ok(InsertFreeze::Exists {
                    request_digest: *digest,
                    answer: None,
                });
            }
            let record = FreezeRecord {
                key: freeze.key,
                payer_pan: freeze.payer_pan,
                payer_bank: freeze.payer_bank,
                amount_minor: freeze.amount_minor,
                currency: freeze.currency,
                received_minor: 0,
                reserved_minor: 0,
                state: FreezeState::Pending,
                created_at_ms: freeze.created_at_ms,
                request_digest: freeze.request_digest,
            };
            s.freezes
                .insert(freeze.key, (record, freeze.request_digest));
            s.freeze_owners.insert(freeze.key, freeze.owner);
            Ok(InsertFreeze::Inserted)
        })
    }

    async fn finish_freeze_queueing(
        &self,
        key: &FreezeKey,
        approved: bool,
        request: &RequestKey,
        answer: StoredAnswer,
        saf: Option<NewSafEntry>,
    ) -> StoreResult<Settled> {
        self.with(|s| {
            let settled = s.finish_freeze(key, approved, request, answer)?;
            if let (Settled::Now, Some(entry)) = (&settled, &saf) {
                s.enqueue(entry);
            }
            Ok(settled)
        })
    }

    async fn freeze(&self, key: &FreezeKey) -> StoreResult<Option<FreezeRecord>> {
        self.with(|s| Ok(s.freezes.get(key).map(|(f, _)| f.clone())))
    }

    async fn reserve(&self, receive: NewReceive) -> StoreResult<Reserve> {
        amount_in("receive amount", receive.amount_minor)?;
        self.with(|s| {
            if let Some(answer) = s.answers.get(&receive.request) {
                return Ok(Reserve::Duplicate {
                    request_digest: answer.request_digest,
                    answer: Some(answer.clone()),
                });
            }
            if let Some((_, digest)) = s.sagas.get(&receive.request) {
                return Ok(Reserve::Duplicate {
                    request_digest: *digest,
                    answer: None,
                });
            }
            let Some((freeze, _)) = s.freezes.get_mut(&receive.freeze) else {
                return Ok(Reserve::NotFound);
            };
            if let Some(refused) = freeze.reserve(receive.amount_minor) {
                return Ok(refused);
            }
            let record = freeze.clone();
            let saga = SagaRecord {
                request: receive.request,
                freeze: receive.freeze,
                amount_minor: receive.amount_minor,
                receiver_pan: receive.receiver_pan,
                receiver_bank: receive.receiver_bank,
                state: SagaState::Debiting,
                debit: Some(receive.debit),
                credit: Some(receive.credit),
                reversal: None,
                response_code: None,
                created_at_ms: receive.created_at_ms,
                request_digest: receive.request_digest,
            };
            s.sagas
                .insert(receive.request, (saga, receive.request_digest));
            s.saga_owners.insert(receive.request, receive.owner);
            Ok(Reserve::Reserved(record))
        })
    }

    async fn settle_receive(
        &self,
        request: &RequestKey,
        outcome: ReceiveOutcome,
        answer: StoredAnswer,
        follow_up: FollowUp,
    ) -> StoreResult<Settled> {
        self.with(|s| {
            if !s.end_saga(request, outcome, answer)? {
                return Ok(Settled::Before {
                    answer: s.answers.get(request).cloned(),
                });
            }
            for entry in &follow_up.saf {
                s.enqueue(entry);
            }
            if outcome == ReceiveOutcome::Failed {
                if let Some(unfreeze) = &follow_up.unfreeze_if_closed {
                    let closed = s
                        .sagas
                        .get(request)
                        .and_then(|(saga, _)| s.freezes.get(&saga.freeze))
                        .is_some_and(|(f, _)| f.state == FreezeState::Closed);
                    if closed {
                        s.enqueue(unfreeze);
                    }
                }
            }
            Ok(Settled::Now)
        })
    }

    async fn saga(&self, request: &RequestKey) -> StoreResult<Option<SagaRecord>> {
        self.with(|s| Ok(s.sagas.get(request).map(|(saga, _)| saga.clone())))
    }

    async fn close_freeze_queueing(
        &self,
        key: &FreezeKey,
        amount_minor: u64,
        request: &RequestKey,
        answer: StoredAnswer,
        notice: NewSafEntry,
    ) -> StoreResult<Close> {
        self.with(|s| {
            let result = s.close(key, amount_minor, request, answer);
            if matches!(result, Close::Closed(_)) {
                s.enqueue(&notice);
            }
            Ok(result)
        })
    }

    async fn allocate_stans(&self, count: u32) -> StoreResult<u32> {
        self.with(|s| {
            if count == 0 || count > 999_999 {
                return Err(invalid("allocate_stans: count must be 1..=999999"));
            }
            if s.next_stan + count - 1 > 999_999 {
                s.next_stan = 1;
            }
            let first = s.next_stan;
            s.next_stan += count;
            if s.next_stan > 999_999 {
                s.next_stan = 1;
            }
            Ok(first)
        })
    }
}

#[async_trait]
impl SafQueue for MemoryStore {
    async fn saf_due(&self, now_ms: i64, limit: usize, hold_ms: i64) -> StoreResult<Vec<SafEntry>> {
        self.with(|s| {
            let mut seen = std::collections::BTreeSet::new();
            let mut due = Vec::new();
            for entry in s.saf.values_mut().filter(|e| e.state == SafState::Pending) {
                // Only the oldest pending entry of each ordering key.
                if !seen.insert(entry.entry.order_key.clone()) {
                    continue;
                }
                if entry.next_attempt_ms <= now_ms && due.len() < limit {
                    due.push(entry.clone());
                    // Handed out: not due again until its attempt settles or the hold ends.
                    entry.next_attempt_ms = now_ms.saturating_add(hold_ms);
                }
            }
            Ok(due)
        })
    }

    async fn saf_settle(&self, id: i64, outcome: SafOutcome) -> StoreResult<()> {
        self.with(|s| {
            let entry = s
                .saf
                .get_mut(&id)
                .filter(|e| e.state == SafState::Pending)
                .ok_or_else(|| invalid(format!("saf entry {id} is not pending")))?;
            entry.attempts += 1;
            match outcome {
                SafOutcome::Done { result } => {
                    entry.state = SafState::Done;
                    entry.last_result = Some(result);
                }
                SafOutcome::Retry {
                    next_attempt_ms,
                    result,
                } => {
                    entry.next_attempt_ms = next_attempt_ms;
                    entry.last_result = Some(result);
                }
                SafOutcome::Dead { result } => {
                    entry.state = SafState::Dead;
                    entry.last_result = Some(result);
                }
            }
            Ok(())
        })
    }

    async fn saf_entries(&self) -> StoreResult<Vec<SafEntry>> {
        self.with(|s| Ok(s.saf.values().cloned().collect()))
    }

    async fn saf_retry(&self, id: i64, now_ms: i64) -> StoreResult<super::SafRetry> {
        self.with(|s| {
            let Some(entry) = s.saf.get_mut(&id) else {
                return Ok(super::SafRetry::NotFound);
            };
            if entry.state != SafState::Dead {
                return Ok(super::SafRetry::NotDead(entry.state));
            }
            entry.state = SafState::Pending;
            entry.next_attempt_ms = now_ms;
            entry.attempts = entry.attempts.min(1);
            Ok(super::SafRetry::Retried)
        })
    }
}

#[async_trait]
impl super::AuditLog for MemoryStore {
    async fn audit(&self, entry: super::AuditEntry) -> StoreResult<()> {
        self.with(|s| {
            s.next_audit_id += 1;
            if s.audit.len() == super::audit::MEMORY_ROWS {
                s.audit.pop_front();
            }
            s.audit.push_back(super::AuditRecord {
                id: s.next_audit_id,
                entry,
            });
            Ok(())
        })
    }

    async fn audit_latest(&self, limit: usize) -> StoreResult<Vec<super::AuditRecord>> {
        let limit = limit.min(super::audit::MAX_READ);
        self.with(|s| Ok(s.audit.iter().rev().take(limit).cloned().collect()))
    }
}

#[async_trait]
impl History for MemoryStore {
    async fn freezes(&self) -> StoreResult<Vec<FreezeRecord>> {
        self.with(|s| Ok(s.freezes.values().map(|(f, _)| f.clone()).collect()))
    }

    async fn sagas(&self) -> StoreResult<Vec<SagaRecord>> {
        self.with(|s| Ok(s.sagas.values().map(|(saga, _)| saga.clone()).collect()))
    }

    async fn journal_between(&self, from_ms: i64, to_ms: i64) -> StoreResult<Vec<JournalEntry>> {
        self.with(|s| {
            Ok(s.journal
                .iter()
                .filter(|e| (from_ms..to_ms).contains(&e.at_ms))
                .cloned()
                .collect())
        })
    }

    async fn sagas_between(&self, from_ms: i64, to_ms: i64) -> StoreResult<Vec<SagaRecord>> {
        // Clearing reads the day in slices: only the slice's sagas are copied.
        self.with(|s| {
            let mut sagas: Vec<SagaRecord> = s
                .sagas
                .values()
                .filter(|(saga, _)| (from_ms..to_ms).contains(&saga.created_at_ms))
                .map(|(saga, _)| saga.clone())
                .collect();
            sagas.sort_by_key(|saga| saga.created_at_ms);
            Ok(sagas)
        })
    }

    async fn saf_entries_since(&self, from_ms: i64) -> StoreResult<Vec<SafEntry>> {
        self.with(|s| {
            Ok(s.saf
                .values()
                .filter(|e| e.entry.created_at_ms >= from_ms)
                .cloned()
                .collect())
        })
    }
}

#[async_trait]
impl Leases for MemoryStore {
    async fn renew_lease(&self, lease: &Lease, now_ms: i64) -> StoreResult<()> {
        self.with(|s| {
            s.leases.insert(
                lease.instance.clone(),
                (
                    now_ms.saturating_add(lease.duration_ms),
                    lease.unfinished_since_ms,
                ),
            );
            Ok(())
        })
    }

    async fn expired_leases(&self, now_ms: i64, grace_ms: i64) -> StoreResult<Vec<ExpiredLease>> {
        self.with(|s| {
            Ok(s.leases
                .iter()
                .filter(|(_, (until, _))| until.saturating_add(grace_ms) < now_ms)
                .map(|(instance, (_, since))| ExpiredLease {
                    instance: instance.clone(),
                    unfinished_since_ms: *since,
                })
                .collect())
        })
    }

    async fn drop_lease(&self, instance: &str, now_ms: i64) -> StoreResult<()> {
        self.with(|s| {
            if s.leases
                .get(instance)
                .is_some_and(|(until, _)| *until < now_ms)
            {
                s.leases.remove(instance);
            }
            Ok(())
        })
    }

    async fn unfinished_of(&self, owner: &str, since_ms: i64) -> StoreResult<Unfinished> {
        self.with(|s| {
            let freezes = s
                .freezes
                .values()
                .map(|(f, _)| f)
                .filter(|f| f.state == FreezeState::Pending && f.created_at_ms >= since_ms)
                .filter(|f| s.freeze_owners.get(&f.key).is_some_and(|o| o == owner))
                .cloned()
                .collect();
            let sagas = s
                .sagas
                .values()
                .map(|(saga, _)| saga)
                .filter(|saga| !saga.state.is_final() && saga.created_at_ms >= since_ms)
                .filter(|saga| s.saga_owners.get(&saga.request).is_some_and(|o| o == owner))
                .cloned()
                .collect();
            Ok(Unfinished { freezes, sagas })
        })
    }
}

#[async_trait]
impl super::RiskLedger for MemoryStore {
    async fn take(&self, limits: Vec<super::Limit>, now_ms: i64) -> StoreResult<Vec<usize>> {
        self.with(|s| {
            let mut totals = Vec::with_capacity(limits.len());
            for l in &limits {
                let events = s
                    .risk_events
                    .entry((l.rule.to_string(), l.subject.to_string()))
                    .or_default();
                events.retain(|(at, _, _)| *at >= l.since_ms);
                let sum = events
                    .iter()
                    .fold(0u64, |a, (_, m, _)| a.saturating_add(*m));
                let count = match &l.distinct {
                    None => events.len(),
                    Some(value) => events
                        .iter()
                        .filter(|(_, _, v)| v != value)
                        .map(|(_, _, v)| v)
                        .collect::<std::collections::BTreeSet<_>>()
                        .len(),
                };
                totals.push((count as u64, sum));
            }
            let (exceeded, record) = super::risk::judge(&limits, &totals);
            if record {
                for l in limits.iter().filter(|l| l.record) {
                    s.risk_events
                        .entry((l.rule.to_string(), l.subject.to_string()))
                        .or_default()
                        .push((
                            now_ms,
                            l.amount_minor,
                            l.distinct.clone().unwrap_or_default(),
                        ));
                }
            }
            Ok(exceeded)
        })
    }

    async fn forget_before(&self, at_ms: i64) -> StoreResult<()> {
        self.with(|s| {
            s.risk_events.retain(|_, events| {
                events.retain(|(at, _, _)| *at >= at_ms);
                !events.is_empty()
            });
            Ok(())
        })
    }

    async fn forget_rule_before(&self, rule: &str, at_ms: i64) -> StoreResult<()> {
        self.with(|s| {
            s.risk_events.retain(|(r, _), events| {
                if r == rule {
                    events.retain(|(at, _, _)| *at >= at_ms);
                }
                !events.is_empty()
            });
            Ok(())
        })
    }

    async fn record_hits(&self, hits: Vec<super::Hit>) -> StoreResult<()> {
        self.with(|s| {
            s.risk_hits.extend(hits);
            Ok(())
        })
    }

    async fn hits_of_day(&self, day: &str) -> StoreResult<Vec<super::HitCount>> {
        self.with(|s| {
            let mut counts: BTreeMap<(String, String, String, String, String), u64> =
                BTreeMap::new();
            for h in s.risk_hits.iter().filter(|h| h.day == day) {
                *counts
                    .entry((
                        h.rule.clone(),
                        h.mode.clone(),
                        h.code.clone(),
                        h.card.clone(),
                        h.institution.clone(),
                    ))
                    .or_default() += 1;
            }
            let mut lines: Vec<super::HitCount> = counts
                .into_iter()
                .map(
                    |((rule, mode, code, card, institution), hits)| super::HitCount {
                        rule,
                        mode,
                        code,
                        card,
                        institution,
                        hits,
                    },
                )
                .collect();
            lines.sort_by_key(|l| std::cmp::Reverse(l.hits));
            Ok(lines)
        })
    }
}

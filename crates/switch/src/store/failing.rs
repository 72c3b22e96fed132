//! A store that fails chosen reads, around another one: unit tests of how
//! the switch answers when the store cannot be read at the wrong moment.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use super::audit::{AuditEntry, AuditLog, AuditRecord};
use super::risk::{Hit, HitCount, Limit, RiskLedger};
use super::{
    Close, Decisions, FollowUp, FreezeRecord, History, InsertFreeze, JournalEntry, JournalSink,
    Leases, NewFreeze, NewReceive, NewSafEntry, ReceiveOutcome, Recorded, RequestKey, Reserve,
    SafEntry, SafOutcome, SafQueue, SafRetry, SagaRecord, Settled, Store, StoreError, StoreResult,
    StoredAnswer,
};
use crate::dialect::FreezeKey;

/// `inner`, except that [`Decisions::saga`] fails while `fail_saga_reads`.
pub struct FailingStore {
    pub inner: Arc<dyn Store>,
    pub fail_saga_reads: AtomicBool,
}

impl FailingStore {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        FailingStore {
            inner,
            fail_saga_reads: AtomicBool::new(false),
        }
    }
}

#[async_trait]
impl Decisions for FailingStore {
    async fn answer(&self, request: &RequestKey) -> StoreResult<Option<StoredAnswer>> {
        self.inner.answer(request).await
    }
    async fn record_answer(
        &self,
        request: &RequestKey,
        answer: StoredAnswer,
    ) -> StoreResult<Recorded> {
        self.inner.record_answer(request, answer).await
    }
    async fn insert_freeze(&self, freeze: NewFreeze) -> StoreResult<InsertFreeze> {
        self.inner.insert_freeze(freeze).await
    }
    async fn finish_freeze_queueing(
        &self,
        key: &FreezeKey,
        approved: bool,
        request: &RequestKey,
        answer: StoredAnswer,
        saf: Option<NewSafEntry>,
    ) -> StoreResult<Settled> {
        self.inner
            .finish_freeze_queueing(key, approved, request, answer, saf)
            .await
    }
    async fn freeze(&self, key: &FreezeKey) -> StoreResult<Option<FreezeRecord>> {
        self.inner.freeze(key).await
    }
    async fn reserve(&self, receive: NewReceive) -> StoreResult<Reserve> {
        self.inner.reserve(receive).await
    }
    async fn settle_receive(
        &self,
        request: &RequestKey,
        outcome: ReceiveOutcome,
        answer: StoredAnswer,
        follow_up: FollowUp,
    ) -> StoreResult<Settled> {
        self.inner
            .settle_receive(request, outcome, answer, follow_up)
            .await
    }
    async fn close_freeze_queueing(
        &self,
        key: &FreezeKey,
        amount_minor: u64,
        request: &RequestKey,
        answer: StoredAnswer,
        notice: NewSafEntry,
    ) -> StoreResult<Close> {
        self.inner
            .close_freeze_queueing(key, amount_minor, request, answer, notice)
            .await
    }
    async fn saga(&self, request: &RequestKey) -> StoreResult<Option<SagaRecord>> {
        if self.fail_saga_reads.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("saga reads fail (test)".into()));
        }
        self.inner.saga(request).await
    }
    async fn allocate_stans(&self, count: u32) -> StoreResult<u32> {
        self.inner.allocate_stans(count).await
    }
}

#[async_trait]
impl SafQueue for FailingStore {
    async fn saf_due(&self, now_ms: i64, limit: usize, hold_ms: i64) -> StoreResult<Vec<SafEntry>> {
        self.inner.saf_due(now_ms, limit, hold_ms).await
    }
    async fn saf_settle(&self, id: i64, outcome: SafOutcome) -> StoreResult<()> {
        self.inner.saf_settle(id, outcome).await
    }
    async fn saf_entries(&self) -> StoreResult<Vec<SafEntry>> {
        self.inner.saf_entries().await
    }
    async fn saf_retry(&self, id: i64, now_ms: i64) -> StoreResult<SafRetry> {
        self.inner.saf_retry(id, now_ms).await
    }
}

#[async_trait]
impl JournalSink for FailingStore {
    fn journal(&self, entry: JournalEntry) {
        self.inner.journal(entry)
    }
}

#[async_trait]
impl History for FailingStore {
    async fn freezes(&self) -> StoreResult<Vec<FreezeRecord>> {
        self.inner.freezes().await
    }
    async fn sagas(&self) -> StoreResult<Vec<SagaRecord>> {
        self.inner.sagas().await
    }
    async fn journal_between(&self, from_ms: i64, to_ms: i64) -> StoreResult<Vec<JournalEntry>> {
        self.inner.journal_between(from_ms, to_ms).await
    }
    async fn saf_entries_since(&self, from_ms: i64) -> StoreResult<Vec<SafEntry>> {
        self.inner.saf_entries_since(from_ms).await
    }
}

#[async_trait]
impl RiskLedger for FailingStore {
    async fn take(&self, limits: Vec<Limit>, now_ms: i64) -> StoreResult<Vec<usize>> {
        self.inner.take(limits, now_ms).await
    }
    async fn forget_before(&self, at_ms: i64) -> StoreResult<()> {
        self.inner.forget_before(at_ms).await
    }
    async fn forget_rule_before(&self, rule: &str, at_ms: i64) -> StoreResult<()> {
        self.inner.forget_rule_before(rule, at_ms).await
    }
    async fn record_hits(&self, hits: Vec<Hit>) -> StoreResult<()> {
        self.inner.record_hits(hits).await
    }
    async fn hits_of_day(&self, day: &str) -> StoreResult<Vec<HitCount>> {
        self.inner.hits_of_day(day).await
    }
}

#[async_trait]
impl AuditLog for FailingStore {
    async fn audit(&self, entry: AuditEntry) -> StoreResult<()> {
        self.inner.audit(entry).await
    }
    async fn audit_latest(&self, limit: usize) -> StoreResult<Vec<AuditRecord>> {
        self.inner.audit_latest(limit).await
    }
}

impl Store for FailingStore {
    /// One instance: nobody else's leases.
    fn leases(self: Arc<Self>) -> Option<Arc<dyn Leases>> {
        None
    }
}

//! What was recorded, read back: end-of-day clearing (the journal, sagas and
//! store-and-forward entries of a day), recovery's read of what a store that
//! is not shared left unfinished, the expiry sweep, and inspection.

use async_trait::async_trait;

use super::journal_slice::{JournalSlice, RawMessages};
use super::{
    FreezeRecord, FreezeState, JournalEntry, SafEntry, SagaRecord, StoreResult, Unfinished,
};

/// Reads of the records, for clearing, recovery and inspection.
#[async_trait]
pub trait History: Send + Sync + 'static {
    /// Every freeze (for inspection, tests, the demo, recovery's scan).
    async fn freezes(&self) -> StoreResult<Vec<FreezeRecord>>;

    /// Every saga (for inspection, tests, the demo).
    async fn sagas(&self) -> StoreResult<Vec<SagaRecord>>;

    /// Freezes still pending and sagas not ended, whoever started them,
    /// oldest first: what recovery settles in a store no live instance works
    /// on. Read by index in the embedded store, so a start after a long day
    /// visits only what is unfinished, not every freeze and saga.
    async fn unfinished(&self) -> StoreResult<Unfinished> {
        let mut freezes: Vec<FreezeRecord> = self
            .freezes()
            .await?
            .into_iter()
            .filter(|f| f.state == FreezeState::Pending)
            .collect();
        freezes.sort_by_key(|f| f.created_at_ms);
        let mut sagas: Vec<SagaRecord> = self
            .sagas()
            .await?
            .into_iter()
            .filter(|s| !s.state.is_final())
            .collect();
        sagas.sort_by_key(|s| s.created_at_ms);
        Ok(Unfinished { freezes, sagas })
    }

    /// Open freezes with `from_ms <= created_at_ms < before_ms`, oldest first,
    /// at most `limit` (the expiry sweep pages through them). Read by index
    /// in the SQL stores: closed freezes, however many, are not visited.
    async fn open_freezes_created(
        &self,
        from_ms: i64,
        before_ms: i64,
        limit: usize,
    ) -> StoreResult<Vec<FreezeRecord>> {
        let mut open: Vec<FreezeRecord> = self
            .freezes()
            .await?
            .into_iter()
            .filter(|f| {
                f.state == FreezeState::Open && (from_ms..before_ms).contains(&f.created_at_ms)
            })
            .collect();
        open.sort_by_key(|f| f.created_at_ms);
        open.truncate(limit);
        Ok(open)
    }

    /// Journal entries with `from_ms <= at_ms < to_ms`, in the order they were
    /// written (end-of-day clearing reads the day back in slices).
    async fn journal_between(&self, from_ms: i64, to_ms: i64) -> StoreResult<Vec<JournalEntry>>;

    /// The entries of [`History::journal_between`] packed into a
    /// [`JournalSlice`], raw messages kept as `raw` says: how clearing reads
    /// the journal. The embedded store reads its rows straight into the
    /// slice; a raw message left out is not read (nor opened, when sealed).
    async fn journal_slice(
        &self,
        from_ms: i64,
        to_ms: i64,
        raw: RawMessages,
    ) -> StoreResult<JournalSlice> {
        JournalSlice::of(&self.journal_between(from_ms, to_ms).await?, raw)
    }

    /// How many journal entries have `from_ms <= at_ms < to_ms`, when the
    /// store can count them without reading them: clearing sizes its records
    /// from it. `None`: not known.
    async fn journal_len(&self, from_ms: i64, to_ms: i64) -> StoreResult<Option<u64>> {
        let _ = (from_ms, to_ms);
        Ok(None)
    }

    /// [`History::journal_slice`] read into the buffers of `reuse`, a slice
    /// done with: clearing reads a day as over a hundred slices. Stores that
    /// cannot reuse them read a new slice.
    async fn journal_slice_reusing(
        &self,
        from_ms: i64,
        to_ms: i64,
        raw: RawMessages,
        reuse: JournalSlice,
    ) -> StoreResult<JournalSlice> {
        drop(reuse);
        self.journal_slice(from_ms, to_ms, raw).await
    }

    /// Sagas with `from_ms <= created_at_ms < to_ms` (for clearing).
    async fn sagas_between(&self, from_ms: i64, to_ms: i64) -> StoreResult<Vec<SagaRecord>> {
        Ok(self
            .sagas()
            .await?
            .into_iter()
            .filter(|s| (from_ms..to_ms).contains(&s.created_at_ms))
            .collect())
    }

    /// Store-and-forward entries created at or after `from_ms`, in queue
    /// order (for clearing: the reversals that net out a day's messages).
    async fn saf_entries_since(&self, from_ms: i64) -> StoreResult<Vec<SafEntry>>;
}

//! Keeping a store within its policies while the switch runs: which
//! settlement days are cleared (retention purges only those), emptying the
//! raw messages of old journal rows, and sealing stored card data anew under
//! the current data key (`switchboard rekey`). The SQL stores have it; the
//! switch reaches it through [`super::Store::maintenance`].

use async_trait::async_trait;
use chrono::NaiveDate;

use super::StoreResult;

/// A settlement day `switchboard clear` has cleared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClearedDay {
    pub date: NaiveDate,
    /// When its clearing last finished.
    pub cleared_at_ms: i64,
    /// When retention began emptying its journal messages, if it has: from
    /// then on the day cannot be cleared again.
    pub purge_began_ms: Option<i64>,
    /// When it had emptied them all.
    pub purged_at_ms: Option<i64>,
}

/// One column that holds sealed card data, and how its rows are found: by
/// their key columns, in order. The SQL stores share the list
/// (`SEALED_COLUMNS` in `store/columns.rs`); `switchboard rekey` walks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SealedColumn {
    pub table: &'static str,
    /// The primary key's columns, all text, or one integer `id`.
    pub key: &'static [&'static str],
    pub column: &'static str,
    /// The associated data the column's values are sealed with.
    pub purpose: &'static str,
    /// Text (`enc1:...`) rather than bytes.
    pub text: bool,
}

impl SealedColumn {
    /// `table.column`, for messages.
    pub fn name(&self) -> String {
        format!("{}.{}", self.table, self.column)
    }

    /// Whether the key is the integer `id` (journal, queue) rather than text columns.
    pub fn integer_key(&self) -> bool {
        self.key == ["id"]
    }
}

/// Where a walk over a [`SealedColumn`] is: the key of the last row read.
pub type RowKey = Vec<String>;

/// What one batch of `reseal` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resealed {
    /// Rows read: at most the limit asked for, and fewer for a column of
    /// large values (the embedded store's saga packs).
    pub read: usize,
    /// Values sealed anew under the current key.
    pub resealed: usize,
    /// The last row read: the next batch starts after it; `None` when the
    /// column has no rows after the start.
    pub last: Option<RowKey>,
    /// The column had no more rows after the last one read when it was
    /// read (fewer rows than the store reads a batch): the walk is done.
    /// Rows written since (beside a running switch) are sealed under the
    /// current key already.
    pub exhausted: bool,
}

/// The maintenance a SQL store does, each call its own bounded transaction.
#[async_trait]
pub trait Maintenance: Send + Sync + 'static {
    /// Records that clearing `date` finished at `at_ms` (again, if it had).
    async fn record_cleared(&self, date: NaiveDate, at_ms: i64) -> StoreResult<()>;

    /// Every cleared day, oldest first.
    async fn cleared_days(&self) -> StoreResult<Vec<ClearedDay>>;

    /// Records that retention begins emptying `date`'s journal messages
    /// (`done = false`), or has emptied them all (`done = true`).
    async fn mark_purge(&self, date: NaiveDate, at_ms: i64, done: bool) -> StoreResult<()>;

    /// Empties the raw message of about `limit` journal entries with
    /// `from_ms <= at_ms < to_ms` whose message is not empty yet, keeping
    /// their summary columns (masked); returns how many it emptied: fewer
    /// than `limit` only when none are left. (PostgreSQL empties at most
    /// `limit` rows; the embedded store whole packs until `limit` entries.)
    async fn purge_journal(&self, from_ms: i64, to_ms: i64, limit: usize) -> StoreResult<usize>;

    /// Reads at most `limit` rows of `column` after `after` (from the first
    /// when `None`), in key order, and seals each value not under the
    /// current data key anew under it, in one transaction. A value changed
    /// meanwhile by a running switch is left as that switch wrote it.
    async fn reseal(
        &self,
        column: SealedColumn,
        after: Option<RowKey>,
        limit: usize,
    ) -> StoreResult<Resealed>;

    /// The sealed columns of this store.
    fn sealed_columns(&self) -> Vec<SealedColumn>;
}

//! The store-and-forward queue: messages that must reach a bank (reversals,
//! unfreeze notices), kept durably until acknowledged. Entries are queued by
//! the decisions that need them, in the same transaction
//! ([`super::Decisions::settle_receive`] and its kin); this trait hands them
//! to the delivery loop and records how each attempt ended.

use async_trait::async_trait;
use bytes::Bytes;

use super::StoreResult;

/// What a store-and-forward entry carries.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SafKind {
    /// A reversal (0420, repeated as 0421).
    Reversal,
    /// An unfreeze notice to the payer bank (0120, repeated as 0121).
    Unfreeze,
}

impl SafKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SafKind::Reversal => "reversal",
            SafKind::Unfreeze => "unfreeze",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "reversal" => Some(SafKind::Reversal),
            "unfreeze" => Some(SafKind::Unfreeze),
            _ => None,
        }
    }
}

/// A message that must reach a bank, queued durably until it is acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewSafEntry {
    /// Institution id of the bank to deliver to.
    pub bank: String,
    /// Entries with the same ordering key are delivered one at a time, oldest
    /// first: a reversal or unfreeze never overtakes what it follows. The
    /// switch uses the freeze key.
    pub order_key: String,
    pub kind: SafKind,
    /// The request as first sent (codec bytes, MTI 0420 or 0120); repeats
    /// change only the MTI.
    pub message: Bytes,
    pub created_at_ms: i64,
}

/// Where a store-and-forward entry stands.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SafState {
    Pending,
    /// Acknowledged with a code that ends retries.
    Done,
    /// Given up on (too many attempts, too old, no such bank): needs a person.
    Dead,
}

impl SafState {
    pub fn as_str(self) -> &'static str {
        match self {
            SafState::Pending => "pending",
            SafState::Done => "done",
            SafState::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(SafState::Pending),
            "done" => Some(SafState::Done),
            "dead" => Some(SafState::Dead),
            _ => None,
        }
    }
}

/// A queued entry as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SafEntry {
    pub id: i64,
    pub entry: NewSafEntry,
    pub state: SafState,
    pub attempts: u32,
    pub next_attempt_ms: i64,
    /// The last response code or error, for people.
    pub last_result: Option<String>,
}

/// How one delivery attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SafOutcome {
    Done {
        result: String,
    },
    Retry {
        next_attempt_ms: i64,
        result: String,
    },
    Dead {
        result: String,
    },
}

/// The queue as the delivery loop and `switchboard saf list` see it.
#[async_trait]
pub trait SafQueue: Send + Sync + 'static {
    /// Pending entries due at `now_ms`, at most one per ordering key (its
    /// oldest), oldest first. A store shared by several instances hands each
    /// entry to one caller: it is not due again for `hold_ms` unless its
    /// attempt is settled sooner (so two instances never deliver it at once,
    /// and a caller that dies mid-attempt delays it by `hold_ms` at most).
    async fn saf_due(&self, now_ms: i64, limit: usize, hold_ms: i64) -> StoreResult<Vec<SafEntry>>;

    /// Records how a delivery attempt ended. An entry that is not pending is
    /// [`super::StoreError::Invalid`].
    async fn saf_settle(&self, id: i64, outcome: SafOutcome) -> StoreResult<()>;

    /// Every entry, in queue order (for `switchboard saf list`).
    async fn saf_entries(&self) -> StoreResult<Vec<SafEntry>>;

    /// An operator's retry: puts a dead entry back to pending, due at
    /// `now_ms`, with its attempts counted again from one (from none if it
    /// was never sent), so it gets a full round of attempts and a message
    /// sent before is still repeated as a repeat (0421, 0121). Its last
    /// result stays until the next attempt. An entry that is not dead is
    /// left alone and said so.
    async fn saf_retry(&self, id: i64, now_ms: i64) -> StoreResult<SafRetry>;

    /// How many entries wait and how many were given up on (for `/metrics`
    /// and `/ready`). The SQL stores count with one indexed query.
    async fn saf_counts(&self) -> StoreResult<SafCounts> {
        let mut counts = SafCounts::default();
        for entry in self.saf_entries().await? {
            counts.add(entry.state, 1);
        }
        Ok(counts)
    }
}

/// What [`SafQueue::saf_retry`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SafRetry {
    /// Pending again: the delivery loop sends it.
    Retried,
    /// No entry has this id.
    NotFound,
    /// The entry is not dead (pending or done): nothing changed.
    NotDead(SafState),
}

/// `$1` id, `$2` now: a dead entry back to pending ([`SafQueue::saf_retry`]).
pub(crate) const SQL_SAF_RETRY: &str = "UPDATE saf SET state = 'pending', next_attempt_ms = $2, \
     attempts = CASE WHEN attempts > 0 THEN 1 ELSE 0 END \
     WHERE id = $1 AND state = 'dead' RETURNING id";

/// `$1` id: the state of an entry a retry did not change.
pub(crate) const SQL_SAF_STATE: &str = "SELECT state FROM saf WHERE id = $1";

/// What a retry did, from whether it changed a row and, if not, the state
/// of the entry (`None`: no such entry).
pub(crate) fn saf_retry_of(changed: bool, state: Option<String>) -> super::StoreResult<SafRetry> {
    if changed {
        return Ok(SafRetry::Retried);
    }
    match state {
        None => Ok(SafRetry::NotFound),
        Some(s) => SafState::parse(&s)
            .map(SafRetry::NotDead)
            .ok_or_else(|| super::StoreError::Corrupt(format!("saf state {s:?}"))),
    }
}

/// Entries by state, leaving out those done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SafCounts {
    pub pending: u64,
    pub dead: u64,
}

impl SafCounts {
    /// The SQL both SQL stores count with.
    pub(crate) const SQL: &'static str =
        "SELECT state, count(*) FROM saf WHERE state IN ('pending', 'dead') GROUP BY state";

    pub(crate) fn add(&mut self, state: SafState, n: u64) {
        match state {
            SafState::Pending => self.pending += n,
            SafState::Dead => self.dead += n,
            SafState::Done => {}
        }
    }
}

/// Counts from `(state, count)` rows of [`SafCounts::SQL`].
pub(crate) fn saf_counts_of(rows: Vec<(String, i64)>) -> SafCounts {
    let mut counts = SafCounts::default();
    for (state, n) in rows {
        if let Some(state) = SafState::parse(&state) {
            counts.add(state, n.max(0) as u64);
        }
    }
    counts
}

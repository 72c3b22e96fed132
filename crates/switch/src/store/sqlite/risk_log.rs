//! The durable record of the risk counters on SQLite, kept by the writer
//! thread: an append-only log and a snapshot row per counter.
//!
//! - `risk_log (seq, events)`: each writer batch appends ONE row holding
//!   all of that batch's counter events ([`super::risk_codec`]), in the
//!   batch's transaction, before any command of the batch: an event is
//!   committed no later than the answer that depends on it. Appending
//!   touches only the table's rightmost page.
//! - `risk_counters (rule, subject, state, last_ms, through_seq)`: a
//!   counter's state as of log row `through_seq`.
//!
//! In between, [`RiskLog`] holds in memory each counter with logged events
//! not yet in its row (`pending`): its row as read when its first such
//! event was logged, with every such event applied as it is logged, as the
//! book applied it (moved to the start of the limit that recorded it, then
//! added). The checkpoint is incremental: each batch rewrites the rows of
//! at most [`CheckpointOptions::chunk`] counters, those pending longest,
//! once they have been pending for [`CheckpointOptions::after`] (so a busy
//! counter is rewritten once for many events), or sooner when more than
//! [`CheckpointOptions::max_unflushed`] events wait or more than
//! [`CheckpointOptions::max_pending`] counters are pending. Writing a row encodes
//! the state held; nothing is replayed. A log row is deleted once no
//! pending counter needs it (the counters pending longest need the oldest).
//!
//! A counter is loaded into the book as it is pending, else as its row
//! (or, for a counter the table before the log still holds events of,
//! `risk_events`, or nothing). At open the log rows left are read back and
//! every event a counter's `through_seq` does not include is applied again:
//! a checkpoint cut short by a crash loses nothing and counts nothing
//! twice.
//!
//! The state changes only after the statements behind it succeeded; when a
//! statement or the batch's commit fails it is marked stale and read again
//! from the file before its next use.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use foldhash::{HashMap, HashMapExt};

use super::risk_codec::{decode_counter, decode_events, encode_counter, encode_events, RiskEvent};
use super::*;
use crate::store::risk::{SQL_FORGET_RULE, SQL_SWEEP};
use crate::store::risk_book::{Counter, CounterKind};
use crate::store::Limit;

/// The log's state, on the writer thread (a panic while it was held left it
/// as consistent as any failed statement does: marked stale or whole).
pub(super) fn lock(log: &std::sync::Mutex<RiskLog>) -> std::sync::MutexGuard<'_, RiskLog> {
    log.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// When counters are written to their snapshot rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointOptions {
    /// How long a counter's events may wait in the log alone.
    pub after: Duration,
    /// Most counters rewritten per batch (more when over `max_unflushed`
    /// or `max_pending`).
    pub chunk: usize,
    /// Events waiting past which counters are rewritten without waiting
    /// `after`: what bounds the replay at open.
    pub max_unflushed: usize,
    /// Pending counters past which they are rewritten without waiting
    /// `after`: what bounds the writer's memory (each holds its state, up
    /// to a sliding window's 64 steps).
    pub max_pending: usize,
}

impl Default for CheckpointOptions {
    fn default() -> Self {
        CheckpointOptions {
            after: Duration::from_secs(10),
            chunk: 512,
            max_unflushed: 200_000,
            max_pending: 25_000,
        }
    }
}

/// A counter with logged events not yet in its row: its state as the row
/// and those events make it. Each event is applied as it is logged, so a
/// checkpoint writes the state without replaying anything.
struct Pending {
    row: Stored,
    /// Its events waiting in the log (counted towards `max_unflushed`).
    events: usize,
}

impl Pending {
    /// Applies an event as the book did: the counter moved to the start of
    /// the limit that recorded it, then the event added.
    fn apply(&mut self, seq: i64, e: &RiskEvent) {
        self.row.counter.adapt(e.kind, e.since_ms);
        self.row.counter.add(e.at_ms, e.amount_minor, &e.detail);
        self.row.last_ms = self.row.last_ms.max(e.at_ms);
        self.row.through_seq = seq;
        self.events += 1;
    }
}

/// A counter's row: its state, its last event's instant and the last log
/// row it includes.
struct Stored {
    counter: Counter,
    last_ms: i64,
    through_seq: i64,
}

/// A counter that became pending, in that order: when, and the first log
/// row it needs kept.
struct Dirty {
    since: Instant,
    first_seq: i64,
    rule: Arc<str>,
    subject: Arc<str>,
}

pub(super) struct RiskLog {
    options: CheckpointOptions,
    /// By rule, then subject (lookups borrow the event's names).
    pending: HashMap<Arc<str>, HashMap<Arc<str>, Pending>>,
    /// The counters of `pending`, in the order they became pending: so
    /// also by their first log row, and the first one's is the oldest row
    /// still needed.
    dirty: VecDeque<Dirty>,
    unflushed_events: usize,
    /// The last row appended.
    last_seq: i64,
    /// Log rows below this are deleted.
    deleted_below: i64,
    /// `risk_events`, where counters were kept before the log, has rows.
    legacy: bool,
    /// Out of step with the file: read again before use.
    stale: bool,
}

const SQL_ROW: &str =
    "SELECT state, last_ms, through_seq FROM risk_counters WHERE rule = ?1 AND subject = ?2";
const SQL_UPSERT: &str = "INSERT INTO risk_counters (rule, subject, state, last_ms, through_seq) \
     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (rule, subject) DO UPDATE SET \
     state = excluded.state, last_ms = excluded.last_ms, through_seq = excluded.through_seq";
/// A total in `risk_events`, with its last event's instant.
const SQL_LEGACY_TOTAL: &str = "SELECT count(*), coalesce(sum(amount_minor), 0), \
     coalesce(max(at_ms), ?3) FROM risk_events WHERE rule = ?1 AND subject = ?2 AND at_ms >= ?3";
/// The events of a sliding window in `risk_events`, oldest first.
const SQL_LEGACY_EVENTS: &str = "SELECT at_ms, amount_minor, detail FROM risk_events \
     WHERE rule = ?1 AND subject = ?2 AND at_ms >= ?3 ORDER BY at_ms";

impl RiskLog {
    /// Reads the log back: every event its counter's row does not include
    /// is applied to its counter again.
    pub(super) fn open(c: &Connection, options: CheckpointOptions) -> StoreResult<RiskLog> {
        let legacy: bool = c
            .query_row("SELECT EXISTS (SELECT 1 FROM risk_events)", [], |r| {
                r.get(0)
            })
            .map_err(db)?;
        let mut log = RiskLog {
            options,
            pending: HashMap::new(),
            dirty: VecDeque::new(),
            unflushed_events: 0,
            last_seq: 0,
            deleted_below: 0,
            legacy,
            stale: false,
        };
        let rows = query_all(c, "SELECT seq, events FROM risk_log ORDER BY seq", |r| {
            Ok((r.bigint(0)?, r.blob(1)?))
        })?;
        // The last log row each counter's row includes, for those not pending.
        let mut through: HashMap<(Arc<str>, Arc<str>), i64> = HashMap::new();
        for (seq, bytes) in rows {
            log.last_seq = seq;
            if log.deleted_below == 0 {
                // Rows none of whose events wait are deleted with the next checkpoint.
                log.deleted_below = seq;
            }
            for e in decode_events(seq, &bytes)? {
                if log.apply_if_pending(seq, &e) {
                    continue;
                }
                // Skipped when the counter's row includes it; the row,
                // read once, becomes the pending state otherwise.
                let key = (e.rule.clone(), e.subject.clone());
                if through.get(&key).is_some_and(|&done| seq <= done) {
                    continue;
                }
                let row = log.stored(c, &e.rule, &e.subject, (e.kind, e.since_ms))?;
                if seq <= row.through_seq {
                    through.insert(key, row.through_seq);
                    continue;
                }
                log.begin_pending(seq, &e, row);
            }
        }
        Ok(log)
    }

    /// Appends one log row with `events` (in the batch's transaction).
    pub(super) fn append(&mut self, c: &Connection, events: &[RiskEvent]) -> StoreResult<()> {
        self.usable()?;
        self.stale = true;
        execute(
            c,
            "INSERT INTO risk_log (events) VALUES (?1)",
            params![encode_events(events)],
        )?;
        let seq = c.last_insert_rowid();
        self.last_seq = seq;
        for e in events {
            self.wait(c, seq, e)?;
        }
        self.stale = false;
        Ok(())
    }

    /// Applies a logged event to its pending counter; a counter not pending
    /// yet starts as its row.
    fn wait(&mut self, c: &Connection, seq: i64, e: &RiskEvent) -> StoreResult<()> {
        if !self.apply_if_pending(seq, e) {
            let row = self.stored(c, &e.rule, &e.subject, (e.kind, e.since_ms))?;
            self.begin_pending(seq, e, row);
        }
        Ok(())
    }

    /// Applies `e` to its counter if that is pending already.
    fn apply_if_pending(&mut self, seq: i64, e: &RiskEvent) -> bool {
        let Some(pending) = self
            .pending
            .get_mut(&*e.rule)
            .and_then(|subjects| subjects.get_mut(&*e.subject))
        else {
            return false;
        };
        pending.apply(seq, e);
        self.unflushed_events += 1;
        true
    }

    /// Makes `e`'s counter pending, as `row` with `e` applied (the names
    /// are copied only here, for a counter not pending yet).
    fn begin_pending(&mut self, seq: i64, e: &RiskEvent, row: Stored) {
        let mut pending = Pending { row, events: 0 };
        pending.apply(seq, e);
        self.unflushed_events += 1;
        self.pending
            .entry(e.rule.clone())
            .or_default()
            .insert(e.subject.clone(), pending);
        self.dirty.push_back(Dirty {
            since: Instant::now(),
            first_seq: seq,
            rule: e.rule.clone(),
            subject: e.subject.clone(),
        });
    }

    fn usable(&self) -> StoreResult<()> {
        if self.stale {
            return Err(StoreError::Unavailable(
                "the risk counters' log could not be read back after a failed commit".into(),
            ));
        }
        Ok(())
    }

    /// Marks the state out of step with the file (a commit failed).
    pub(super) fn set_stale(&mut self) {
        self.stale = true;
    }

    pub(super) fn is_stale(&self) -> bool {
        self.stale
    }

    pub(super) fn options(&self) -> CheckpointOptions {
        self.options
    }

    fn pending_of(&self, rule: &str, subject: &str) -> Option<&Pending> {
        self.pending
            .get(rule)
            .and_then(|subjects| subjects.get(subject))
    }

    /// The counter `limit` counts with, as everything logged makes it,
    /// moved to answer for the limit.
    pub(super) fn counter(&self, c: &Connection, limit: &Limit) -> StoreResult<Counter> {
        self.usable()?;
        let start = (CounterKind::of(limit), limit.since_ms);
        let mut counter = match self.pending_of(&limit.rule, &limit.subject) {
            Some(pending) => pending.row.counter.clone(),
            None => self.stored(c, &limit.rule, &limit.subject, start)?.counter,
        };
        counter.adapt(start.0, start.1);
        Ok(counter)
    }

    /// The row of (`rule`, `subject`). A counter without a row starts as
    /// the limit that first counts it (`start`) does. (Only this process
    /// logs events, so a row another process rewrites, `risk report`
    /// opening the file, includes no event this log does not hold.)
    fn stored(
        &self,
        c: &Connection,
        rule: &str,
        subject: &str,
        start: (CounterKind, i64),
    ) -> StoreResult<Stored> {
        let stored = query_opt(c, SQL_ROW, params![rule, subject], |r| {
            let state = r.blob(0)?;
            Ok(Stored {
                counter: decode_counter(rule, subject, &state)?,
                last_ms: r.bigint(1)?,
                through_seq: r.bigint(2)?,
            })
        })?;
        match stored {
            Some(row) => Ok(row),
            None => self.legacy_row(c, rule, subject, start.0, start.1),
        }
    }

    /// A counter from `risk_events`, where events were kept one a row before
    /// the log (empty once that table is).
    fn legacy_row(
        &self,
        c: &Connection,
        rule: &str,
        subject: &str,
        kind: CounterKind,
        since_ms: i64,
    ) -> StoreResult<Stored> {
        let mut counter = Counter::empty(kind, since_ms);
        let mut last_ms = i64::MIN;
        if !self.legacy {
            return Ok(Stored {
                counter,
                last_ms,
                through_seq: 0,
            });
        }
        match &mut counter {
            Counter::Total { count, sum, .. } => {
                let (n, s, last) =
                    query_opt(c, SQL_LEGACY_TOTAL, params![rule, subject, since_ms], |r| {
                        Ok((r.bigint(0)?, r.bigint(1)?, r.bigint(2)?))
                    })?
                    .unwrap_or((0, 0, since_ms));
                *count = n.max(0) as u64;
                *sum = s.max(0) as u64;
                if n > 0 {
                    last_ms = last;
                }
            }
            window => {
                let events = query_all_with(
                    c,
                    SQL_LEGACY_EVENTS,
                    params![rule, subject, since_ms],
                    |r| Ok((r.bigint(0)?, r.bigint(1)?, r.text(2)?)),
                )?;
                for (at, amount, detail) in events {
                    window.add(at, amount.max(0) as u64, &detail);
                    last_ms = last_ms.max(at);
                }
            }
        }
        Ok(Stored {
            counter,
            last_ms,
            through_seq: 0,
        })
    }

    /// Whether [`checkpoint`](Self::checkpoint) has anything to do: counters
    /// waiting, or log rows to delete. (Without risk rules, nothing: the
    /// batch spends no savepoint on it.)
    pub(super) fn wants_checkpoint(&self) -> bool {
        !self.dirty.is_empty() || self.oldest_waiting() > self.deleted_below
    }

    /// The first log row an event waits in (past the last one when none).
    fn oldest_waiting(&self) -> i64 {
        self.dirty
            .front()
            .map_or(self.last_seq + 1, |dirty| dirty.first_seq)
    }

    /// One step of the checkpoint, at the end of a batch: rewrites the rows
    /// of the counters dirty longest (see the module documentation) and
    /// deletes the log rows none of whose events wait any more.
    pub(super) fn checkpoint(&mut self, c: &Connection) -> StoreResult<()> {
        self.usable()?;
        let over = self.unflushed_events > self.options.max_unflushed
            || self.dirty.len() > self.options.max_pending;
        let chunk = self.options.chunk.max(1);
        let most = if over {
            chunk.max(self.dirty.len() / 8)
        } else {
            chunk
        };
        let now = Instant::now();
        let due = self
            .dirty
            .iter()
            .take(most)
            .take_while(|dirty| over || now.duration_since(dirty.since) >= self.options.after)
            .count();
        self.flush(c, due)
    }

    /// Rewrites the rows of every counter with waiting events (before a
    /// sweep, so that what it deletes cannot come back from the log).
    pub(super) fn flush_all(&mut self, c: &Connection) -> StoreResult<()> {
        self.usable()?;
        self.flush(c, self.dirty.len())
    }

    /// Rewrites the rows of the first `n` dirty counters.
    fn flush(&mut self, c: &Connection, n: usize) -> StoreResult<()> {
        self.stale = true;
        // In key order: neighbouring rows share pages.
        let mut keys: Vec<(Arc<str>, Arc<str>)> = self
            .dirty
            .drain(..n)
            .map(|dirty| (dirty.rule, dirty.subject))
            .collect();
        keys.sort_unstable();
        for (rule, subject) in &keys {
            let Some(subjects) = self.pending.get_mut(&**rule) else {
                continue;
            };
            let Some(pending) = subjects.remove(&**subject) else {
                continue;
            };
            if subjects.is_empty() {
                self.pending.remove(&**rule);
            }
            self.unflushed_events -= pending.events;
            let row = pending.row;
            execute(
                c,
                SQL_UPSERT,
                params![
                    rule,
                    subject,
                    encode_counter(&row.counter),
                    row.last_ms,
                    row.through_seq
                ],
            )?;
        }
        let oldest_waiting = self.oldest_waiting();
        if oldest_waiting > self.deleted_below {
            execute(
                c,
                "DELETE FROM risk_log WHERE seq < ?1",
                params![oldest_waiting],
            )?;
            self.deleted_below = oldest_waiting;
        }
        self.stale = false;
        Ok(())
    }

    /// Deletes the counters whose last event is before `at_ms` (of `rule`
    /// only, when given), and the events of `risk_events` before it.
    pub(super) fn forget(
        &mut self,
        c: &Connection,
        rule: Option<&str>,
        at_ms: i64,
    ) -> StoreResult<()> {
        self.flush_all(c)?;
        self.stale = true;
        match rule {
            Some(rule) => {
                execute(
                    c,
                    "DELETE FROM risk_counters WHERE rule = ?1 AND last_ms < ?2",
                    params![rule, at_ms],
                )?;
                if self.legacy {
                    execute(c, &sqlite(SQL_FORGET_RULE), params![rule, at_ms])?;
                }
            }
            None => {
                execute(
                    c,
                    "DELETE FROM risk_counters WHERE last_ms < ?1",
                    params![at_ms],
                )?;
                if self.legacy {
                    execute(c, &sqlite(SQL_SWEEP), params![at_ms])?;
                }
            }
        }
        if self.legacy {
            self.legacy = c
                .query_row("SELECT EXISTS (SELECT 1 FROM risk_events)", [], |r| {
                    r.get(0)
                })
                .map_err(db)?;
        }
        self.stale = false;
        Ok(())
    }
}

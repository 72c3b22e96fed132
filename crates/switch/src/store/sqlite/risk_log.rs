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
//! In between, [`RiskLog`] holds in memory the logged events not yet in
//! their counter's row (`unflushed`). The checkpoint is incremental: each
//! batch rewrites the rows of at most [`CheckpointOptions::chunk`] counters,
//! those dirty longest, once they have been dirty for
//! [`CheckpointOptions::after`] (so a busy counter is rewritten once for
//! many events), or sooner when more than
//! [`CheckpointOptions::max_unflushed`] events wait. A log row is deleted
//! once none of its events waits any more.
//!
//! A counter is read (loaded into the book, or rewritten) as its row (or,
//! for a counter the table before the log still holds events of,
//! `risk_events`, or nothing) followed by its unflushed events, each
//! replayed as the book did: moved to the start of the limit that recorded
//! it, then added. At open the log rows left are read back and every event
//! a counter's `through_seq` does not include is unflushed again: a
//! checkpoint cut short by a crash loses nothing and counts nothing twice.
//!
//! The state changes only after the statements behind it succeeded; when a
//! statement or the batch's commit fails it is marked stale and read again
//! from the file before its next use.

use std::collections::{BTreeMap, VecDeque};
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
    /// Most counters rewritten per batch (more when over `max_unflushed`).
    pub chunk: usize,
    /// Events waiting past which counters are rewritten without waiting
    /// `after`: what bounds the writer's memory and the replay at open.
    pub max_unflushed: usize,
}

impl Default for CheckpointOptions {
    fn default() -> Self {
        CheckpointOptions {
            after: Duration::from_secs(10),
            chunk: 512,
            max_unflushed: 200_000,
        }
    }
}

/// A logged event waiting for its counter's row, without its counter's names.
#[derive(Debug, Clone)]
struct Unflushed {
    seq: i64,
    kind: CounterKind,
    since_ms: i64,
    at_ms: i64,
    amount_minor: u64,
    detail: String,
}

impl Unflushed {
    fn replay(&self, counter: &mut Counter) {
        counter.adapt(self.kind, self.since_ms);
        counter.add(self.at_ms, self.amount_minor, &self.detail);
    }
}

/// A counter's row: its state, its last event's instant and the last log
/// row it includes.
struct Stored {
    counter: Counter,
    last_ms: i64,
    through_seq: i64,
}

pub(super) struct RiskLog {
    options: CheckpointOptions,
    /// By rule, then subject (lookups borrow the event's names).
    unflushed: HashMap<Arc<str>, HashMap<Arc<str>, Vec<Unflushed>>>,
    /// The counters of `unflushed`, in the order they became dirty.
    dirty: VecDeque<(Instant, Arc<str>, Arc<str>)>,
    unflushed_events: usize,
    /// For each log row, how many of its events wait.
    waiting: BTreeMap<i64, usize>,
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
    /// waits again.
    pub(super) fn open(c: &Connection, options: CheckpointOptions) -> StoreResult<RiskLog> {
        let legacy: bool = c
            .query_row("SELECT EXISTS (SELECT 1 FROM risk_events)", [], |r| {
                r.get(0)
            })
            .map_err(db)?;
        let mut log = RiskLog {
            options,
            unflushed: HashMap::new(),
            dirty: VecDeque::new(),
            unflushed_events: 0,
            waiting: BTreeMap::new(),
            last_seq: 0,
            deleted_below: 0,
            legacy,
            stale: false,
        };
        let rows = query_all(c, "SELECT seq, events FROM risk_log ORDER BY seq", |r| {
            Ok((r.bigint(0)?, r.blob(1)?))
        })?;
        let mut through: HashMap<(Arc<str>, Arc<str>), i64> = HashMap::new();
        for (seq, bytes) in rows {
            log.last_seq = seq;
            if log.deleted_below == 0 {
                // Rows none of whose events wait are deleted with the next checkpoint.
                log.deleted_below = seq;
            }
            for e in decode_events(seq, &bytes)? {
                let key = (e.rule.clone(), e.subject.clone());
                let done = match through.get(&key) {
                    Some(&t) => t,
                    None => {
                        let t = query_opt(c, SQL_ROW, params![e.rule, e.subject], |r| r.bigint(2))?
                            .unwrap_or(0);
                        through.insert(key, t);
                        t
                    }
                };
                if seq > done {
                    log.wait(seq, &e);
                }
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
        // Counted once for the row rather than once per event.
        *self.waiting.entry(seq).or_default() += events.len();
        for e in events {
            self.wait_uncounted(seq, e);
        }
        self.stale = false;
        Ok(())
    }

    fn wait(&mut self, seq: i64, e: &RiskEvent) {
        *self.waiting.entry(seq).or_default() += 1;
        self.wait_uncounted(seq, e);
    }

    /// [`wait`](Self::wait) but for the count of the row's waiting events.
    fn wait_uncounted(&mut self, seq: i64, e: &RiskEvent) {
        let event = Unflushed {
            seq,
            kind: e.kind,
            since_ms: e.since_ms,
            at_ms: e.at_ms,
            amount_minor: e.amount_minor,
            detail: e.detail.clone(),
        };
        self.unflushed_events += 1;
        // The names are copied only for a counter not waiting yet.
        if let Some(events) = self
            .unflushed
            .get_mut(&*e.rule)
            .and_then(|subjects| subjects.get_mut(&*e.subject))
        {
            events.push(event);
            return;
        }
        self.unflushed
            .entry(e.rule.clone())
            .or_default()
            .insert(e.subject.clone(), vec![event]);
        self.dirty
            .push_back((Instant::now(), e.rule.clone(), e.subject.clone()));
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

    fn waiting_of(&self, rule: &str, subject: &str) -> &[Unflushed] {
        self.unflushed
            .get(rule)
            .and_then(|subjects| subjects.get(subject))
            .map_or(&[], Vec::as_slice)
    }

    /// The counter `limit` counts with, as everything logged makes it,
    /// moved to answer for the limit.
    pub(super) fn counter(&self, c: &Connection, limit: &Limit) -> StoreResult<Counter> {
        self.usable()?;
        let start = (CounterKind::of(limit), limit.since_ms);
        let mut counter = self.current(c, &limit.rule, &limit.subject, start)?.counter;
        counter.adapt(start.0, start.1);
        Ok(counter)
    }

    /// The row of (`rule`, `subject`) with its waiting events replayed, but
    /// for those the row already includes (another process opening the
    /// file, `risk report`, may have rewritten the row meanwhile). A counter
    /// without a row starts as its first waiting event's limit (else
    /// `start`) counted it.
    fn current(
        &self,
        c: &Connection,
        rule: &str,
        subject: &str,
        start: (CounterKind, i64),
    ) -> StoreResult<Stored> {
        let events = self.waiting_of(rule, subject);
        let stored = query_opt(c, SQL_ROW, params![rule, subject], |r| {
            let state = r.blob(0)?;
            Ok(Stored {
                counter: decode_counter(rule, subject, &state)?,
                last_ms: r.bigint(1)?,
                through_seq: r.bigint(2)?,
            })
        })?;
        let mut row = match stored {
            Some(row) => row,
            None => {
                let (kind, since_ms) = events.first().map_or(start, |e| (e.kind, e.since_ms));
                self.legacy_row(c, rule, subject, kind, since_ms)?
            }
        };
        let included = row.through_seq;
        for e in events.iter().filter(|e| e.seq > included) {
            e.replay(&mut row.counter);
            row.last_ms = row.last_ms.max(e.at_ms);
            row.through_seq = e.seq;
        }
        Ok(row)
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
        self.waiting
            .keys()
            .next()
            .copied()
            .unwrap_or(self.last_seq + 1)
    }

    /// One step of the checkpoint, at the end of a batch: rewrites the rows
    /// of the counters dirty longest (see the module documentation) and
    /// deletes the log rows none of whose events wait any more.
    pub(super) fn checkpoint(&mut self, c: &Connection) -> StoreResult<()> {
        self.usable()?;
        let over = self.unflushed_events > self.options.max_unflushed;
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
            .take_while(|(since, _, _)| over || now.duration_since(*since) >= self.options.after)
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
            .map(|(_, rule, subject)| (rule, subject))
            .collect();
        keys.sort_unstable();
        for (rule, subject) in &keys {
            let row = self.current(c, rule, subject, (CounterKind::Total, 0))?;
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
        for (rule, subject) in keys {
            let Some(subjects) = self.unflushed.get_mut(&*rule) else {
                continue;
            };
            for e in subjects.remove(&*subject).unwrap_or_default() {
                self.unflushed_events -= 1;
                if let Some(left) = self.waiting.get_mut(&e.seq) {
                    *left -= 1;
                    if *left == 0 {
                        self.waiting.remove(&e.seq);
                    }
                }
            }
            if subjects.is_empty() {
                self.unflushed.remove(&*rule);
            }
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

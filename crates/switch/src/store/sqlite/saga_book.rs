//! Receive sagas held by the writer thread, with `saga_log` as their durable
//! record: a saga is written once, after it has ended, already in its final
//! state, together with other ended sagas: in a pack (`saga_packs.rs`); or
//! as a row of `sagas` when it was in flight too long, is written out for a
//! read, is folded from the log (at open, at close, after a failure), or
//! when another process folded the log meanwhile.
//!
//! Why: a saga's row used to be inserted at its reservation and rewritten at
//! its end (a row that grows by its answer, inside a `WITHOUT ROWID` B-tree,
//! so deleted and inserted again), and every commit wrote the pages of
//! `sagas` and of its time index for the few sagas it held. Now:
//!
//! - A reservation goes into the [`SagaBook`], and so does a saga's end (its
//!   state and answer), with its freeze's new totals (`freeze_totals.rs`).
//!   Before a batch commits, its reservations and ends are appended as ONE
//!   row of `saga_log`, in the batch's transaction: durable before the
//!   caller hears back, as the rows in `sagas` were. Appending touches only
//!   the log's rightmost page.
//! - Every [`PRUNE_EVERY`] commits, or once [`FLUSH_ENDED`] sagas have
//!   ended, the ended sagas are written in one pack, with a key each in
//!   `saga_keys` (`saga_packs.rs`; as rows of `sagas`, in key order, when
//!   another process folded the log meanwhile); a saga still in flight
//!   after [`MATERIALIZE_AFTER`] log rows has its row written as it is (its
//!   end then updates it); the log rows no saga in the book needs are
//!   deleted. So the book holds at most
//!   the sagas reserved in the last `MATERIALIZE_AFTER + PRUNE_EVERY` log
//!   rows that are still in flight (bounded by the listeners' limits on
//!   requests in flight) and fewer than `FLUSH_ENDED` plus a batch of ended
//!   ones, and the log as many rows.
//! - A saga's answer (a resend's lookup) and whether it ended are read from
//!   the book first. Reading sagas other than through the book (`saga`,
//!   `sagas`, `sagas_between`) first writes the rows of every saga in it
//!   ([`materialize_all`]).
//! - At open and close, and after any failure that may have left the book
//!   unlike the file, the log is folded into `sagas` ([`fold_log`]): every
//!   saga it holds gets its row, as reserved or as ended, unless a pack
//!   holds it already, and the log is emptied. A crash therefore loses
//!   nothing: a reservation or an end is in the log, in `sagas` or in a
//!   pack, and recovery finds the sagas not ended in `sagas`.
//! - Another process that opens the file without its lock (`switchboard
//!   journal`, `saf`, `audit`, `risk` beside a running switch) folds the log
//!   too, so a saga of the book may have its row already: a row written as
//!   reserved is updated to the end, a row already ended is left as it is.
//!
//! The book changes only after the statements behind a change succeeded,
//! as the last step of a command (a savepoint that cannot be released
//! abandons the batch); when a command, the log's append or the batch's
//! commit fails the book is emptied, marked stale and rebuilt from the file
//! (by [`fold_log`]) before its next use: until then commands that need it
//! fail and nothing is logged or pruned.

use std::collections::BTreeMap;

// foldhash rather than SipHash: the writer looks a saga up several times a
// receive. Its seed differs from process to process, though it claims
// little against a peer probing for collisions; the book stays small
// (`PRUNE_EVERY`, `FLUSH_ENDED`) and its key parts are digits.
use foldhash::HashMap;

use super::byte_reader::Reader;
use super::freeze_totals::{self, FreezeTotals, Totals};
use super::saga_packs;
use super::*;
use crate::store::columns::sealed;
use crate::vault;

/// Commits between two prunings of the log.
pub(super) const PRUNE_EVERY: u32 = 256;

/// Ended sagas held before they are written, whatever the commits.
/// Writing them holds up the batch they are written in (when they were
/// rows, about 6 µs a row): 256 rows kept that under 2 ms, where 2,048
/// made a batch of 10–20 ms five times a second at 10,000 receives/s, a
/// stall every request then queued waited out. They are now one pack of
/// up to this many (`saga_packs.rs`).
pub(super) const FLUSH_ENDED: usize = 256;

/// Log rows a saga may stay in the book for before its row is written as it
/// is (a saga waiting long for a bank, or recovery).
pub(super) const MATERIALIZE_AFTER: i64 = 1024;

/// The formats of a `saga_log` row's body (its first byte): 1, reservations
/// only; 2, records tagged [`RESERVED`], [`ENDED`] or [`FREEZE_TOTALS`].
const LOG_RESERVATIONS: u8 = 1;
const LOG_RECORDS: u8 = 2;
const RESERVED: u8 = 1;
const ENDED: u8 = 2;
/// A freeze's totals after the batch (`freeze_totals.rs`; schema step 16).
const FREEZE_TOTALS: u8 = 3;

/// The book's state, on the writer thread (a panic while it was held leaves
/// it no worse than a failed statement: the batch fails and it is marked stale).
pub(super) fn lock(book: &std::sync::Mutex<SagaBook>) -> std::sync::MutexGuard<'_, SagaBook> {
    book.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A reserved saga's columns, as its row in `sagas` holds them (the
/// receiver's PAN sealed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct FlyingSaga {
    pub(super) request: [KeyText; 4],
    pub(super) freeze: [KeyText; 3],
    pub(super) amount_minor: i64,
    pub(super) receiver_pan: String,
    pub(super) receiver_bank: String,
    pub(super) request_digest: [u8; 32],
    pub(super) created_at_ms: i64,
    /// The debit's STAN and transmission date-time.
    pub(super) debit: [KeyText; 2],
    /// The credit's STAN and transmission date-time.
    pub(super) credit: [KeyText; 2],
}

/// How a saga ended: its final state and the answer recorded (the response
/// sealed, as the column holds it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct SagaEnd {
    pub(super) state: SagaState,
    pub(super) response_code: Option<String>,
    pub(super) answer_digest: [u8; 32],
    pub(super) response: Vec<u8>,
}

/// A saga in the book.
struct Entry {
    saga: FlyingSaga,
    /// The log row that holds its reservation; `None` until it is written.
    log_id: Option<i64>,
    end: Option<SagaEnd>,
}

/// The sagas whose rows are not written yet.
#[derive(Default)]
pub(super) struct SagaBook {
    sagas: HashMap<[KeyText; 4], Entry>,
    /// Reserved in the open batch: not in the log yet.
    unlogged: Vec<[KeyText; 4]>,
    /// Ended in the open batch: not in the log yet.
    unlogged_ends: Vec<[KeyText; 4]>,
    /// Sagas in the book that have ended.
    ended: usize,
    /// The book may differ from the file: fold the log before its next use.
    stale: bool,
    /// Commits since the log was last pruned.
    since_prune: u32,
    /// The totals of the freezes changed since the log was last pruned.
    pub(super) freezes: FreezeTotals,
    /// The id of the next `saga_log` row: given here rather than by SQLite,
    /// so that a batch logged in the decision log has its row's id before
    /// the row is written. Never smaller than an id the log has held.
    next_log_id: i64,
}

impl SagaBook {
    /// Refuses use while the book may differ from the file.
    pub(super) fn usable(&self) -> StoreResult<()> {
        if self.stale {
            return Err(StoreError::Unavailable(
                "the sagas in flight cannot be read back from the store yet".into(),
            ));
        }
        Ok(())
    }

    pub(super) fn is_stale(&self) -> bool {
        self.stale
    }

    /// After a failure: rebuilt from the file before its next use. What it
    /// held is dropped at once (it may hold what was rolled back), so
    /// nothing of it can be logged or written meanwhile.
    pub(super) fn set_stale(&mut self) {
        self.clear();
        self.stale = true;
    }

    /// A saga in the book and how it ended, if it has.
    pub(super) fn get(&self, request: &[KeyText; 4]) -> Option<(&FlyingSaga, Option<&SagaEnd>)> {
        self.sagas.get(request).map(|e| (&e.saga, e.end.as_ref()))
    }

    /// The answer recorded for a saga of the book that has ended.
    pub(super) fn answer(&self, request: &[KeyText; 4]) -> StoreResult<Option<StoredAnswer>> {
        let Some(end) = self.sagas.get(request).and_then(|e| e.end.as_ref()) else {
            return Ok(None);
        };
        let response = vault::open_bytes(sealed::RESPONSE, &end.response)
            .map_err(|e| unsealed(sealed::RESPONSE, e))?;
        Ok(Some(StoredAnswer {
            request_digest: end.answer_digest,
            response: response.into(),
        }))
    }

    /// A reservation: logged with its batch.
    pub(super) fn reserve(&mut self, saga: FlyingSaga) {
        self.unlogged.push(saga.request.clone());
        self.sagas.insert(
            saga.request.clone(),
            Entry {
                saga,
                log_id: None,
                end: None,
            },
        );
    }

    /// A saga of the book has ended, its freeze's totals now `totals`:
    /// logged with its batch.
    pub(super) fn end(&mut self, request: &[KeyText; 4], end: SagaEnd, totals: Totals) {
        if let Some(entry) = self.sagas.get_mut(request) {
            if entry.end.is_none() {
                self.ended += 1;
                self.unlogged_ends.push(request.clone());
                self.freezes.set(&entry.saga.freeze, totals);
            }
            entry.end = Some(end);
        }
    }

    /// A saga whose row has been written: out of the book.
    pub(super) fn remove(&mut self, request: &[KeyText; 4]) {
        if let Some(entry) = self.sagas.remove(request) {
            self.unlogged.retain(|k| k != request);
            if entry.end.is_some() {
                self.ended -= 1;
                self.unlogged_ends.retain(|k| k != request);
            }
        }
    }

    /// The sagas whose rows have been written (those `written` says):
    /// out of the book, in one pass over it.
    fn remove_where(&mut self, written: impl Fn(&Entry) -> bool) {
        let mut ended = 0;
        self.sagas.retain(|_, e| {
            let gone = written(e);
            if gone && e.end.is_some() {
                ended += 1;
            }
            !gone
        });
        self.ended -= ended;
        // Empty after a batch's log row; kept to what is left all the same.
        let sagas = &self.sagas;
        self.unlogged.retain(|k| sagas.contains_key(k));
        self.unlogged_ends.retain(|k| sagas.contains_key(k));
    }

    /// Sagas in the book not ended yet: those in flight, most of which send
    /// their end soon (and those waiting out a bank's timeout).
    pub(super) fn in_flight(&self) -> usize {
        debug_assert!(self.ended <= self.sagas.len());
        self.sagas.len().saturating_sub(self.ended)
    }

    /// A commit succeeded.
    pub(super) fn committed(&mut self) {
        self.since_prune = self.since_prune.saturating_add(1);
    }

    fn clear(&mut self) {
        self.sagas.clear();
        self.unlogged.clear();
        self.unlogged_ends.clear();
        self.ended = 0;
        self.freezes.clear();
        self.stale = false;
    }
}

/// The statement that writes a saga's row into `sagas`, as reserved or
/// ended. A row there already is left as it is, unless it is still in
/// flight and this is its end. Another key clash or a broken CHECK is an
/// error.
const WRITE_ROW: &str = "INSERT INTO sagas (mti, acquirer, transmission, stan, freeze_acquirer, \
     freeze_transmission, freeze_stan, amount_minor, receiver_pan, receiver_bank, state, \
     request_digest, created_at_ms, debit_stan, debit_transmission, credit_stan, \
     credit_transmission, response_code, answer_digest, response) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, \
     ?18, ?19, ?20) \
     ON CONFLICT (mti, acquirer, transmission, stan) DO UPDATE SET \
     state = excluded.state, response_code = excluded.response_code, \
     answer_digest = coalesce(answer_digest, excluded.answer_digest), \
     response = coalesce(response, excluded.response) \
     WHERE ?21 AND state <> 'approved' AND state <> 'failed'";

/// Writes a saga's row into `sagas` ([`WRITE_ROW`]).
pub(super) fn write_row(
    conn: &Connection,
    saga: &FlyingSaga,
    end: Option<&SagaEnd>,
) -> StoreResult<()> {
    let mut rows = RowWriter::new(conn)?;
    rows.write(saga, end)
}

/// Writes sagas' rows through one prepared statement: a pruning writes
/// hundreds, and looking the statement up by its text for each row cost
/// about half as much as binding it.
pub(super) struct RowWriter<'c> {
    statement: rusqlite::CachedStatement<'c>,
}

impl<'c> RowWriter<'c> {
    pub(super) fn new(conn: &'c Connection) -> StoreResult<RowWriter<'c>> {
        Ok(RowWriter {
            statement: conn.prepare_cached(WRITE_ROW).map_err(db)?,
        })
    }

    /// Writes one saga's row, as reserved (`end` `None`) or ended.
    pub(super) fn write(&mut self, saga: &FlyingSaga, end: Option<&SagaEnd>) -> StoreResult<()> {
        let state = end.map_or(SagaState::Debiting, |e| e.state);
        self.statement
            .execute(params![
                saga.request[0],
                saga.request[1],
                saga.request[2],
                saga.request[3],
                saga.freeze[0],
                saga.freeze[1],
                saga.freeze[2],
                saga.amount_minor,
                saga.receiver_pan,
                saga.receiver_bank,
                state.as_str(),
                &saga.request_digest[..],
                saga.created_at_ms,
                saga.debit[0],
                saga.debit[1],
                saga.credit[0],
                saga.credit[1],
                end.and_then(|e| e.response_code.as_deref()),
                end.map(|e| &e.answer_digest[..]),
                end.map(|e| &e.response[..]),
                end.is_some(),
            ])
            .map_err(db)?;
        Ok(())
    }
}

/// Writes the rows of every saga in the book and empties it: for reads of
/// `sagas` that do not go through the book.
pub(super) fn materialize_all(conn: &Connection, book: &mut SagaBook) -> StoreResult<()> {
    book.usable()?;
    if book.sagas.is_empty() && book.freezes.is_empty() {
        return Ok(());
    }
    let mut entries: Vec<(&[KeyText; 4], &Entry)> = book.sagas.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut rows = RowWriter::new(conn)?;
    for (_, entry) in entries {
        rows.write(&entry.saga, entry.end.as_ref())?;
    }
    freeze_totals::write_all(conn, &book.freezes)?;
    // Everything the log holds is now on the rows: a log row left would
    // hold totals older than the rows' (`freeze_totals.rs`).
    exec(conn, "DELETE FROM saga_log")?;
    book.clear();
    Ok(())
}

/// Before a batch's commit: its reservations and ends appended as one log
/// row and, when due, the ended sagas written and the log pruned. An
/// error leaves the transaction to be rolled back (and the book to be
/// marked stale).
pub(super) fn log_batch(conn: &Connection, book: &mut SagaBook) -> StoreResult<()> {
    if let Some((id, body)) = take_log_row(book) {
        execute(
            conn,
            "INSERT INTO saga_log (id, body) VALUES (?1, ?2)",
            params![id, body],
        )?;
    }
    if prune_due(book) {
        prune(conn, book)?;
    }
    Ok(())
}

/// Whether the batch's commit should prune the log ([`log_batch`]).
pub(super) fn prune_due(book: &SagaBook) -> bool {
    !book.stale && (book.since_prune >= PRUNE_EVERY || book.ended >= FLUSH_ENDED)
}

/// The batch's reservations and ends as the body of a `saga_log` row, with
/// the row's id; the book then counts them as logged. `None` when the
/// batch changed nothing in the book, or the book is stale (not read back
/// from the file yet: its log rows are all still needed).
pub(super) fn take_log_row(book: &mut SagaBook) -> Option<(i64, Vec<u8>)> {
    if book.stale
        || (book.unlogged.is_empty()
            && book.unlogged_ends.is_empty()
            && !book.freezes.has_unlogged())
    {
        return None;
    }
    // Both lists hold only sagas of the book (`remove`, `remove_where` and
    // `clear` keep them so); a key that was not would simply not be logged.
    let reserved: Vec<&FlyingSaga> = book
        .unlogged
        .iter()
        .filter_map(|k| book.sagas.get(k))
        .map(|e| &e.saga)
        .collect();
    let ended: Vec<(&[KeyText; 4], &SagaEnd)> = book
        .unlogged_ends
        .iter()
        .filter_map(|k| book.sagas.get(k))
        .filter_map(|e| e.end.as_ref().map(|end| (&e.saga.request, end)))
        .collect();
    let body = encode(
        reserved.into_iter(),
        ended.into_iter(),
        book.freezes.unlogged(),
    );
    let id = book.next_log_id.max(1);
    book.next_log_id = id + 1;
    for key in std::mem::take(&mut book.unlogged) {
        if let Some(entry) = book.sagas.get_mut(&key) {
            entry.log_id = Some(id);
        }
    }
    book.unlogged_ends.clear();
    book.freezes.logged();
    Some((id, body))
}

/// Writes the ended sagas (a pack) and the rows of those in flight longest, and
/// deletes the log rows no saga left in the book needs.
fn prune(conn: &Connection, book: &mut SagaBook) -> StoreResult<()> {
    let newest: Option<i64> = query_opt(conn, "SELECT max(id) FROM saga_log", [], |row| {
        row.opt_bigint(0)
    })?
    .flatten();
    let Some(newest) = newest else {
        // Another opening of the file folded the log: the totals it held
        // are on the rows already; these are the same or newer.
        freeze_totals::write_all(conn, &book.freezes)?;
        book.freezes.clear();
        book.since_prune = 0;
        return Ok(());
    };
    // Written now: the ended, and those in flight longest.
    let due =
        |e: &Entry| e.end.is_some() || e.log_id.is_some_and(|id| id <= newest - MATERIALIZE_AFTER);
    let mut written: Vec<(&[KeyText; 4], &Entry)> =
        book.sagas.iter().filter(|(_, e)| due(e)).collect();
    written.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let pack_ended = may_pack(conn, written.iter().map(|(_, e)| *e))?;
    let mut rows = RowWriter::new(conn)?;
    let mut packed = Vec::with_capacity(if pack_ended { written.len() } else { 0 });
    for (_, entry) in written {
        match &entry.end {
            Some(end) if pack_ended => packed.push((&entry.saga, end)),
            end => rows.write(&entry.saga, end.as_ref())?,
        }
    }
    drop(rows);
    saga_packs::write(conn, &packed)?;
    // Before any log row goes: the totals they hold, onto the freezes' rows.
    freeze_totals::write_all(conn, &book.freezes)?;
    // The log rows the others still need.
    let keep_from = book
        .sagas
        .values()
        .filter(|e| !due(e))
        .filter_map(|e| e.log_id)
        .min()
        .unwrap_or(newest + 1);
    execute(
        conn,
        "DELETE FROM saga_log WHERE id < ?1",
        params![keep_from],
    )?;
    book.remove_where(due);
    book.freezes.clear();
    book.since_prune = 0;
    Ok(())
}

/// Whether the ended sagas among `written` may go into a pack
/// (`saga_packs.rs`): none has a row in `sagas`. Only another process
/// folding the log could have written them one, and a fold empties the
/// log: so the oldest log row any of them was logged in must still be
/// there. Otherwise their rows are written, as reserved rows are ended.
fn may_pack<'a>(conn: &Connection, written: impl Iterator<Item = &'a Entry>) -> StoreResult<bool> {
    let mut oldest = None;
    for entry in written.filter(|e| e.end.is_some()) {
        // Every saga of a usable book is logged by the time a pruning
        // runs; one that is not is written as a row, to be safe.
        let Some(id) = entry.log_id else {
            return Ok(false);
        };
        oldest = Some(oldest.map_or(id, |o: i64| o.min(id)));
    }
    let Some(oldest) = oldest else {
        return Ok(false);
    };
    Ok(query_opt(
        conn,
        "SELECT 1 FROM saga_log WHERE id = ?1",
        params![oldest],
        |_| Ok(()),
    )?
    .is_some())
}

/// Folds the log into `sagas` in a transaction of its own: every saga it
/// holds gets its row, as reserved or as ended; the log is emptied, and so
/// is the book. At open and close, and to rebuild a stale book.
pub(super) fn fold_log(conn: &Connection, book: &mut SagaBook) -> StoreResult<()> {
    exec(conn, "BEGIN IMMEDIATE")?;
    let folded = (|| {
        let bodies: Vec<(i64, Vec<u8>)> = query_all_with(
            conn,
            "SELECT id, body FROM saga_log ORDER BY id",
            [],
            |row| Ok((row.bigint(0)?, row.blob(1)?)),
        )?;
        let mut reserved = BTreeMap::new();
        let mut ended = BTreeMap::new();
        // The newest row's totals of each freeze (`freeze_totals.rs`).
        let mut totals = BTreeMap::new();
        for (id, body) in &bodies {
            let records = decode(body, *id)?;
            for saga in records.reserved {
                reserved.insert(saga.request.clone(), saga);
            }
            ended.extend(records.ended);
            totals.extend(records.freezes);
        }
        let mut rows = RowWriter::new(conn)?;
        for (key, saga) in &reserved {
            // A saga packed already (`saga_packs.rs`) may still be in a log
            // row that another saga of the book kept: it is written once.
            if saga_packs::holds(conn, key)? {
                continue;
            }
            rows.write(saga, ended.get(key))?;
        }
        for (key, end) in ended.iter().filter(|(k, _)| !reserved.contains_key(*k)) {
            // Its reservation's row was written before its log row was
            // deleted: the end goes onto that row.
            end_row(conn, key, end)?;
        }
        for (freeze, totals) in &totals {
            freeze_totals::write(conn, freeze, *totals)?;
        }
        if let Some((newest, _)) = bodies.last() {
            book.next_log_id = book.next_log_id.max(newest + 1);
        }
        if !bodies.is_empty() {
            exec(conn, "DELETE FROM saga_log")?;
        }
        Ok(bodies.len())
    })();
    match folded.and_then(|n| exec(conn, "COMMIT").map(|()| n)) {
        Ok(n) => {
            if n > 0 {
                tracing::info!(log_rows = n, "sagas read back from the store's log");
            }
            book.clear();
            Ok(())
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            book.set_stale();
            Err(e)
        }
    }
}

/// A saga's end onto its row, unless the row has ended already.
fn end_row(conn: &Connection, request: &[KeyText; 4], end: &SagaEnd) -> StoreResult<()> {
    execute(
        conn,
        "UPDATE sagas SET state = ?5, response_code = ?6, \
         answer_digest = coalesce(answer_digest, ?7), response = coalesce(response, ?8) \
         WHERE mti = ?1 AND acquirer = ?2 AND transmission = ?3 AND stan = ?4 \
         AND state <> 'approved' AND state <> 'failed'",
        params![
            request[0],
            request[1],
            request[2],
            request[3],
            end.state.as_str(),
            end.response_code,
            &end.answer_digest[..],
            end.response,
        ],
    )?;
    Ok(())
}

/// A text's bytes after their length. Taken as bytes: a key part as `&str`
/// would be checked for UTF-8 again each time (`KeyText::as_str`), some
/// thirty times a saga between its log row and its pack.
fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    // Every column is far below 64 KiB: key parts, a bank id, a sealed PAN,
    // a response code.
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&s[..usize::from(len)]);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// A log row's body: the format, a count, then each record: a tag and a
/// reservation's columns, a tag, a request key and an end, or a tag, a
/// freeze's key and its totals.
pub(super) fn encode<'a>(
    reserved: impl ExactSizeIterator<Item = &'a FlyingSaga>,
    ended: impl ExactSizeIterator<Item = (&'a [KeyText; 4], &'a SagaEnd)>,
    freezes: impl ExactSizeIterator<Item = (&'a [KeyText; 3], Totals)>,
) -> Vec<u8> {
    let count = reserved.len() + ended.len() + freezes.len();
    let mut out = Vec::with_capacity(5 + count * 192);
    out.push(LOG_RECORDS);
    out.extend_from_slice(&(count as u32).to_le_bytes());
    for saga in reserved {
        out.push(RESERVED);
        for s in saga.request.iter().chain(&saga.freeze) {
            put_str(&mut out, s.as_bytes());
        }
        out.extend_from_slice(&saga.amount_minor.to_le_bytes());
        put_str(&mut out, saga.receiver_pan.as_bytes());
        put_str(&mut out, saga.receiver_bank.as_bytes());
        out.extend_from_slice(&saga.request_digest);
        out.extend_from_slice(&saga.created_at_ms.to_le_bytes());
        for s in saga.debit.iter().chain(&saga.credit) {
            put_str(&mut out, s.as_bytes());
        }
    }
    for (request, end) in ended {
        out.push(ENDED);
        for s in request {
            put_str(&mut out, s.as_bytes());
        }
        put_str(&mut out, end.state.as_str().as_bytes());
        match &end.response_code {
            Some(code) => {
                out.push(1);
                put_str(&mut out, code.as_bytes());
            }
            None => out.push(0),
        }
        out.extend_from_slice(&end.answer_digest);
        put_bytes(&mut out, &end.response);
    }
    for (freeze, totals) in freezes {
        out.push(FREEZE_TOTALS);
        for s in freeze {
            put_str(&mut out, s.as_bytes());
        }
        out.extend_from_slice(&totals.received_minor.to_le_bytes());
        out.extend_from_slice(&totals.reserved_minor.to_le_bytes());
    }
    out
}

/// What a log row holds.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Records {
    pub(super) reserved: Vec<FlyingSaga>,
    pub(super) ended: Vec<([KeyText; 4], SagaEnd)>,
    pub(super) freezes: Vec<([KeyText; 3], Totals)>,
}

/// Reads a log row's body back: anything short, long or malformed is
/// [`StoreError::Corrupt`] naming the row and the offset.
pub(super) fn decode(body: &[u8], id: i64) -> StoreResult<Records> {
    decode_named(body, format!("saga log row {id}"))
}

/// [`decode`] of records kept elsewhere (a saga pack's, `saga_packs.rs`),
/// `what` naming them in an error.
pub(super) fn decode_named(body: &[u8], what: String) -> StoreResult<Records> {
    let mut r = Reader::new(body, what);
    let format = r.u8()?;
    if format != LOG_RESERVATIONS && format != LOG_RECORDS {
        return Err(r.error(0, format!("format {format} is not one this build reads")));
    }
    // The smallest record: a freeze's totals under a key of empty strings.
    let n = r.count(1 + 3 * 2 + 2 * 8)?;
    let mut records = Records::default();
    for _ in 0..n {
        let at = r.at;
        let tag = if format == LOG_RESERVATIONS {
            RESERVED
        } else {
            r.u8()?
        };
        match tag {
            RESERVED => {
                let request = [r.key()?, r.key()?, r.key()?, r.key()?];
                let freeze = [r.key()?, r.key()?, r.key()?];
                let amount_minor = r.i64()?;
                let receiver_pan = r.str()?;
                let receiver_bank = r.str()?;
                let request_digest = r.take::<32>()?;
                let created_at_ms = r.i64()?;
                let debit = [r.key()?, r.key()?];
                let credit = [r.key()?, r.key()?];
                records.reserved.push(FlyingSaga {
                    request,
                    freeze,
                    amount_minor,
                    receiver_pan,
                    receiver_bank,
                    request_digest,
                    created_at_ms,
                    debit,
                    credit,
                });
            }
            ENDED => {
                let request = [r.key()?, r.key()?, r.key()?, r.key()?];
                let state_at = r.at;
                let state = match r.str()?.as_str() {
                    "approved" => SagaState::Approved,
                    "failed" => SagaState::Failed,
                    other => return Err(r.error(state_at, format!("an end in state {other:?}"))),
                };
                let response_code = match r.u8()? {
                    0 => None,
                    _ => Some(r.str()?),
                };
                let answer_digest = r.take::<32>()?;
                let len = r.u32()? as usize;
                let response = r.slice(len)?.to_vec();
                records.ended.push((
                    request,
                    SagaEnd {
                        state,
                        response_code,
                        answer_digest,
                        response,
                    },
                ));
            }
            FREEZE_TOTALS => {
                let freeze = [r.key()?, r.key()?, r.key()?];
                let received_minor = r.u64()?;
                let reserved_minor = r.u64()?;
                records.freezes.push((
                    freeze,
                    Totals {
                        received_minor,
                        reserved_minor,
                    },
                ));
            }
            other => return Err(r.error(at, format!("a record of kind {other}"))),
        }
    }
    r.end()?;
    Ok(records)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::store::sqlite) fn saga(stan: &str) -> FlyingSaga {
        FlyingSaga {
            request: [
                "0200".into(),
                "48020000".into(),
                "1201093000".into(),
                stan.into(),
            ],
            freeze: ["48020000".into(), "1201092900".into(), "000001".into()],
            amount_minor: 1_234,
            receiver_pan: "6217001234567890123".into(),
            receiver_bank: "01050000".into(),
            request_digest: [7; 32],
            created_at_ms: 1_764_581_400_000,
            debit: ["100001".into(), "1201093000".into()],
            credit: ["100002".into(), "1201093000".into()],
        }
    }

    pub(in crate::store::sqlite) fn end(code: Option<&str>) -> SagaEnd {
        SagaEnd {
            state: SagaState::Approved,
            response_code: code.map(String::from),
            answer_digest: [9; 32],
            response: b"0210 response".to_vec(),
        }
    }

    /// A pruning takes out the sagas whose rows it wrote, and only those:
    /// the count of ended sagas and the lists of what the open batch has
    /// not logged follow.
    #[test]
    fn the_written_sagas_leave_the_book_and_the_rest_stay() {
        let totals = Totals {
            received_minor: 0,
            reserved_minor: 0,
        };
        let mut book = SagaBook::default();
        for stan in ["000001", "000002", "000003", "000004"] {
            book.reserve(saga(stan));
        }
        book.end(&saga("000001").request, end(Some("00")), totals);
        book.end(&saga("000003").request, end(None), totals);
        assert_eq!(book.ended, 2);
        // As if the batch's log row held all four but 000004, which, with
        // 000003's end, came after it.
        book.unlogged = vec![saga("000004").request];
        book.unlogged_ends = vec![saga("000003").request];
        for stan in ["000001", "000002", "000003"] {
            book.sagas.get_mut(&saga(stan).request).unwrap().log_id = Some(1);
        }
        // Written: the ended, and 000002 as if in flight for too long.
        book.remove_where(|e| e.end.is_some() || e.saga.request == saga("000002").request);
        let mut left: Vec<&str> = book.sagas.keys().map(|k| k[3].as_str()).collect();
        left.sort();
        assert_eq!(left, ["000004"]);
        assert_eq!(book.ended, 0);
        assert_eq!(book.unlogged, [saga("000004").request]);
        assert!(book.unlogged_ends.is_empty());
        assert!(book.get(&saga("000001").request).is_none());
        assert!(book.get(&saga("000004").request).is_some());
        // An end after the pruning counts again.
        book.end(&saga("000004").request, end(Some("00")), totals);
        assert_eq!(book.ended, 1);
    }

    #[test]
    fn a_log_row_reads_back_as_written() {
        let sagas = [saga("000002"), saga("000003")];
        let ends = [
            (saga("000001").request, end(Some("00"))),
            (saga("000004").request, end(None)),
        ];
        let totals = [(
            saga("000001").freeze,
            Totals {
                received_minor: 1_234,
                reserved_minor: 2_468,
            },
        )];
        let body = encode(
            sagas.iter(),
            ends.iter().map(|(k, e)| (k, e)),
            totals.iter().map(|(k, t)| (k, *t)),
        );
        let records = decode(&body, 1).unwrap();
        assert_eq!(records.reserved, sagas);
        assert_eq!(records.ended, ends);
        assert_eq!(records.freezes, totals);
        assert_eq!(
            decode(&encode([].iter(), [].into_iter(), [].into_iter()), 2).unwrap(),
            Records::default()
        );
    }

    /// Rows written before ends were logged: reservations only, untagged.
    #[test]
    fn a_log_row_of_reservations_only_reads_back() {
        let mut body = vec![LOG_RESERVATIONS];
        body.extend_from_slice(&1u32.to_le_bytes());
        let tagged = encode([saga("000002")].iter(), [].into_iter(), [].into_iter());
        body.extend_from_slice(&tagged[6..]);
        assert_eq!(decode(&body, 1).unwrap().reserved, vec![saga("000002")]);
    }

    #[test]
    fn a_damaged_log_row_is_refused_with_its_offset() {
        let ends = [(saga("000001").request, end(Some("00")))];
        let body = encode(
            [saga("000002")].iter(),
            ends.iter().map(|(k, e)| (k, e)),
            [].into_iter(),
        );
        for cut in [0, 1, 5, 20, 200, body.len() - 1] {
            let err = decode(&body[..cut], 9).unwrap_err();
            assert!(
                matches!(&err, StoreError::Corrupt(m) if m.starts_with("saga log row 9, byte ")),
                "{cut}: {err}"
            );
        }
        let mut longer = body.clone();
        longer.push(0);
        assert!(decode(&longer, 9)
            .unwrap_err()
            .to_string()
            .contains("after the end"));
        let mut other = body.clone();
        other[0] = 3;
        assert!(decode(&other, 9)
            .unwrap_err()
            .to_string()
            .contains("format 3"));
        let mut kind = body.clone();
        kind[5] = 7;
        assert!(decode(&kind, 9).unwrap_err().to_string().contains("kind 7"));
        // A count no body could hold allocates nothing.
        let mut lying = vec![LOG_RECORDS];
        lying.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&lying, 9)
            .unwrap_err()
            .to_string()
            .contains("items in 0 bytes"));
    }
}

//! Receive sagas in flight, held by the writer thread, with `saga_log` as
//! their durable record: a saga's row in `sagas` is written once, when the
//! saga ends, already in its final state.
//!
//! Why: a saga's row used to be inserted at its reservation and rewritten at
//! its end, and the rewrite (a row that grows by its answer, inside a
//! `WITHOUT ROWID` B-tree, so deleted and inserted again) was the writer's
//! costliest statement per receive. Now:
//!
//! - A reservation goes into the [`SagaBook`]; before its batch commits, the
//!   batch's reservations are appended as ONE row of `saga_log`, in the
//!   batch's transaction: durable before the reserve's caller hears back, as
//!   the row in `sagas` was. Appending touches only the log's rightmost page.
//! - A saga's end inserts its row into `sagas` in its final state and takes
//!   it out of the book.
//! - Every [`PRUNE_EVERY`] commits the log is pruned: a saga still in flight
//!   after [`MATERIALIZE_AFTER`] log rows has its row written as it is (its
//!   end then updates it, as before), and the rows no saga in the book needs
//!   are deleted. So the book holds at most the sagas reserved in the last
//!   `MATERIALIZE_AFTER + PRUNE_EVERY` log rows, each of them a receive in
//!   flight (bounded by the listeners' limits on requests in flight).
//! - Reading sagas other than through the book (`saga`, `sagas`,
//!   `sagas_between`) first writes the rows of every saga in the book, as
//!   they are ([`materialize_all`]).
//! - Another process that opens the file without its lock (`switchboard
//!   journal`, `saf`, `audit`, `risk` beside a running switch) folds the log
//!   too, so a saga of the book may have its row already: rows are written
//!   only where missing, and a saga's end that finds its row updates it.
//! - At open, and after any failure that may have left the book unlike the
//!   file, the log is folded into `sagas` ([`fold_log`]): every saga it
//!   holds whose row is missing gets its row as reserved, and the log is
//!   emptied. A crash therefore loses nothing: a reserved saga is in the
//!   log or in `sagas`, and recovery finds it in `sagas`.
//!
//! The book changes only after the statements behind a change succeeded,
//! as the last step of a command; when a command, the log's append or the
//! batch's commit fails the book is marked stale and rebuilt from the file
//! (by [`fold_log`]) before its next use; commands that need it fail until
//! then.

use std::collections::HashMap;

use super::byte_reader::Reader;
use super::*;

/// Commits between two prunings of the log.
pub(super) const PRUNE_EVERY: u32 = 256;

/// Log rows a saga may stay in the book for before its row is written as it
/// is (a saga waiting long for a bank, or recovery).
pub(super) const MATERIALIZE_AFTER: i64 = 1024;

/// The format of a `saga_log` row's body (its first byte).
const LOG_FORMAT: u8 = 1;

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
    pub(super) request: [String; 4],
    pub(super) freeze: [String; 3],
    pub(super) amount_minor: i64,
    pub(super) receiver_pan: String,
    pub(super) receiver_bank: String,
    pub(super) request_digest: [u8; 32],
    pub(super) created_at_ms: i64,
    /// The debit's STAN and transmission date-time.
    pub(super) debit: [String; 2],
    /// The credit's STAN and transmission date-time.
    pub(super) credit: [String; 2],
}

/// A saga in the book: its columns and the log row that holds them.
struct Entry {
    saga: FlyingSaga,
    /// `None` until its batch's log row is written.
    log_id: Option<i64>,
}

/// The sagas reserved and not yet written to `sagas`.
#[derive(Default)]
pub(super) struct SagaBook {
    flying: HashMap<[String; 4], Entry>,
    /// Reserved in the open batch: not in the log yet.
    unlogged: Vec<[String; 4]>,
    /// The book may differ from the file: fold the log before its next use.
    stale: bool,
    /// Commits since the log was last pruned.
    since_prune: u32,
}

/// How a saga's row is written: as reserved, or ended with its answer.
pub(super) struct RowState<'a> {
    pub(super) state: SagaState,
    pub(super) response_code: Option<&'a str>,
    pub(super) answer_digest: Option<&'a [u8]>,
    pub(super) response: Option<Vec<u8>>,
}

impl RowState<'_> {
    /// A saga in flight: no answer yet.
    pub(super) fn reserved() -> RowState<'static> {
        RowState {
            state: SagaState::Debiting,
            response_code: None,
            answer_digest: None,
            response: None,
        }
    }
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

    /// After a failure: rebuilt from the file before its next use.
    pub(super) fn set_stale(&mut self) {
        self.stale = true;
    }

    pub(super) fn get(&self, request: &[String; 4]) -> Option<&FlyingSaga> {
        self.flying.get(request).map(|e| &e.saga)
    }

    /// A reservation: logged with its batch.
    pub(super) fn reserve(&mut self, saga: FlyingSaga) {
        self.unlogged.push(saga.request.clone());
        self.flying
            .insert(saga.request.clone(), Entry { saga, log_id: None });
    }

    /// A saga whose row has been written: out of the book.
    pub(super) fn remove(&mut self, request: &[String; 4]) {
        if self.flying.remove(request).is_some() {
            self.unlogged.retain(|k| k != request);
        }
    }

    /// A commit succeeded.
    pub(super) fn committed(&mut self) {
        self.since_prune = self.since_prune.saturating_add(1);
    }

    fn clear(&mut self) {
        self.flying.clear();
        self.unlogged.clear();
        self.stale = false;
    }
}

/// Writes a saga's row into `sagas` unless it has one (another key clash
/// or a broken CHECK is still an error): whether it wrote the row.
pub(super) fn insert_row(conn: &Connection, saga: &FlyingSaga, row: RowState) -> StoreResult<bool> {
    let written = execute(
        conn,
        "INSERT INTO sagas (mti, acquirer, transmission, stan, freeze_acquirer, \
         freeze_transmission, freeze_stan, amount_minor, receiver_pan, receiver_bank, state, \
         request_digest, created_at_ms, debit_stan, debit_transmission, credit_stan, \
         credit_transmission, response_code, answer_digest, response) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, \
         ?18, ?19, ?20) \
         ON CONFLICT (mti, acquirer, transmission, stan) DO NOTHING",
        params![
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
            row.state.as_str(),
            &saga.request_digest[..],
            saga.created_at_ms,
            saga.debit[0],
            saga.debit[1],
            saga.credit[0],
            saga.credit[1],
            row.response_code,
            row.answer_digest,
            row.response,
        ],
    )?;
    Ok(written == 1)
}

/// Writes the rows of every saga in the book as they are (in flight) and
/// empties it: for reads of `sagas` that do not go through the book.
pub(super) fn materialize_all(conn: &Connection, book: &mut SagaBook) -> StoreResult<()> {
    book.usable()?;
    if book.flying.is_empty() {
        return Ok(());
    }
    let mut keys: Vec<&[String; 4]> = book.flying.keys().collect();
    keys.sort();
    for key in keys {
        insert_row(conn, &book.flying[key].saga, RowState::reserved())?;
    }
    book.flying.clear();
    book.unlogged.clear();
    Ok(())
}

/// Before a batch's commit: its reservations appended as one log row and,
/// when due, the log pruned. An error leaves the transaction to be rolled
/// back (and the book to be marked stale).
pub(super) fn log_batch(conn: &Connection, book: &mut SagaBook) -> StoreResult<()> {
    if !book.unlogged.is_empty() {
        let body = encode(book.unlogged.iter().map(|k| &book.flying[k].saga));
        execute(
            conn,
            "INSERT INTO saga_log (body) VALUES (?1)",
            params![body],
        )?;
        let id = conn.last_insert_rowid();
        for key in std::mem::take(&mut book.unlogged) {
            if let Some(entry) = book.flying.get_mut(&key) {
                entry.log_id = Some(id);
            }
        }
    }
    if book.since_prune >= PRUNE_EVERY {
        prune(conn, book)?;
    }
    Ok(())
}

/// Writes the rows of the sagas in the book longest and deletes the log rows
/// no saga in the book needs any more.
fn prune(conn: &Connection, book: &mut SagaBook) -> StoreResult<()> {
    let newest: Option<i64> = query_opt(conn, "SELECT max(id) FROM saga_log", [], |row| {
        row.opt_bigint(0)
    })?
    .flatten();
    let Some(newest) = newest else {
        book.since_prune = 0;
        return Ok(());
    };
    let mut old: Vec<[String; 4]> = book
        .flying
        .iter()
        .filter(|(_, e)| e.log_id.is_some_and(|id| id <= newest - MATERIALIZE_AFTER))
        .map(|(k, _)| k.clone())
        .collect();
    old.sort();
    for key in &old {
        insert_row(conn, &book.flying[key].saga, RowState::reserved())?;
    }
    let keep_from = book
        .flying
        .iter()
        .filter(|(k, _)| !old.contains(k))
        .filter_map(|(_, e)| e.log_id)
        .min()
        .unwrap_or(newest + 1);
    execute(
        conn,
        "DELETE FROM saga_log WHERE id < ?1",
        params![keep_from],
    )?;
    for key in &old {
        book.flying.remove(key);
    }
    book.since_prune = 0;
    Ok(())
}

/// Folds the log into `sagas` in a transaction of its own: every saga it
/// holds whose row is missing gets its row as reserved; the log is emptied,
/// and so is the book. At open, and to rebuild a stale book.
pub(super) fn fold_log(conn: &Connection, book: &mut SagaBook) -> StoreResult<()> {
    exec(conn, "BEGIN IMMEDIATE")?;
    let folded = (|| {
        let bodies: Vec<(i64, Vec<u8>)> = query_all_with(
            conn,
            "SELECT id, body FROM saga_log ORDER BY id",
            [],
            |row| Ok((row.bigint(0)?, row.blob(1)?)),
        )?;
        for (id, body) in &bodies {
            for saga in decode(body, *id)? {
                insert_row(conn, &saga, RowState::reserved())?;
            }
        }
        if !bodies.is_empty() {
            exec(conn, "DELETE FROM saga_log")?;
        }
        Ok(bodies.len())
    })();
    match folded.and_then(|n| exec(conn, "COMMIT").map(|()| n)) {
        Ok(n) => {
            if n > 0 {
                tracing::info!(
                    log_rows = n,
                    "sagas in flight read back from the store's log"
                );
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

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Every column is far below 64 KiB: key parts, a bank id, a sealed PAN.
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&s.as_bytes()[..usize::from(len)]);
}

/// A log row's body: the format, a count, then each saga's columns.
pub(super) fn encode<'a>(sagas: impl ExactSizeIterator<Item = &'a FlyingSaga>) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + sagas.len() * 192);
    out.push(LOG_FORMAT);
    out.extend_from_slice(&(sagas.len() as u32).to_le_bytes());
    for saga in sagas {
        for s in saga.request.iter().chain(&saga.freeze) {
            put_str(&mut out, s);
        }
        out.extend_from_slice(&saga.amount_minor.to_le_bytes());
        put_str(&mut out, &saga.receiver_pan);
        put_str(&mut out, &saga.receiver_bank);
        out.extend_from_slice(&saga.request_digest);
        out.extend_from_slice(&saga.created_at_ms.to_le_bytes());
        for s in saga.debit.iter().chain(&saga.credit) {
            put_str(&mut out, s);
        }
    }
    out
}

/// Reads a log row's body back: anything short, long or malformed is
/// [`StoreError::Corrupt`] naming the row and the offset.
pub(super) fn decode(body: &[u8], id: i64) -> StoreResult<Vec<FlyingSaga>> {
    let mut r = Reader::new(body, format!("saga log row {id}"));
    let format = r.u8()?;
    if format != LOG_FORMAT {
        return Err(r.error(0, format!("format {format} is not {LOG_FORMAT}")));
    }
    // The smallest saga: 13 empty strings, two integers and a digest.
    let n = r.count(13 * 2 + 16 + 32)?;
    let mut sagas = Vec::with_capacity(n);
    for _ in 0..n {
        let request = [r.str()?, r.str()?, r.str()?, r.str()?];
        let freeze = [r.str()?, r.str()?, r.str()?];
        let amount_minor = r.i64()?;
        let receiver_pan = r.str()?;
        let receiver_bank = r.str()?;
        let request_digest = r.take::<32>()?;
        let created_at_ms = r.i64()?;
        let debit = [r.str()?, r.str()?];
        let credit = [r.str()?, r.str()?];
        sagas.push(FlyingSaga {
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
    r.end()?;
    Ok(sagas)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saga(stan: &str) -> FlyingSaga {
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

    #[test]
    fn a_log_row_reads_back_as_written() {
        let sagas = [saga("000002"), saga("000003")];
        let body = encode(sagas.iter());
        assert_eq!(decode(&body, 1).unwrap(), sagas);
        assert_eq!(decode(&encode([].iter()), 2).unwrap(), vec![]);
    }

    #[test]
    fn a_damaged_log_row_is_refused_with_its_offset() {
        let body = encode([saga("000002")].iter());
        for cut in [0, 1, 5, 20, body.len() - 1] {
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
        other[0] = 2;
        assert!(decode(&other, 9)
            .unwrap_err()
            .to_string()
            .contains("format 2"));
        // A count no body could hold allocates nothing.
        let mut lying = vec![LOG_FORMAT];
        lying.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&lying, 9)
            .unwrap_err()
            .to_string()
            .contains("items in 0 bytes"));
    }
}

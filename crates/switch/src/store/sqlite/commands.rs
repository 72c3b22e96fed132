//! The statements each command runs on the writer thread, inside its own
//! savepoint: answers, freezes, receives and their sagas, STANs, the
//! store-and-forward queue.

use super::freeze_totals::{self, FreezeTotals, Totals};
use super::saga_book::{FlyingSaga, SagaBook, SagaEnd};
use super::saga_packs::{self, PackedSaga};
use super::*;
use crate::store::columns::sealed;
use crate::vault;

// ---------------------------------------------------------------------------
// Commands, as run on the writer thread

/// A freeze, its totals as `totals` holds them if it does (`freeze_totals.rs`).
pub(super) fn load_freeze(
    conn: &Connection,
    totals: &FreezeTotals,
    key: &FreezeCols,
) -> StoreResult<Option<FreezeRecord>> {
    let mut freeze = query_opt(
        conn,
        concat!(
            "SELECT ",
            freeze_columns!(),
            " FROM freezes WHERE acquirer = ?1 AND transmission = ?2 AND stan = ?3"
        ),
        params![key.0[0], key.0[1], key.0[2]],
        |row| freeze_row(row, 0),
    )?;
    if let Some(freeze) = &mut freeze {
        totals.overlay(&key.0, freeze);
    }
    Ok(freeze)
}

/// The answer recorded for a request: in `answers`, or (a receive's) on its saga.
pub(super) fn load_answer(conn: &Connection, key: &ReqCols) -> StoreResult<Option<StoredAnswer>> {
    let answer = query_opt(
        conn,
        "SELECT request_digest, response FROM answers \
         WHERE mti = ?1 AND acquirer = ?2 AND transmission = ?3 AND stan = ?4 \
         UNION ALL \
         SELECT answer_digest, response FROM sagas \
         WHERE mti = ?1 AND acquirer = ?2 AND transmission = ?3 AND stan = ?4 \
         AND response IS NOT NULL \
         LIMIT 1",
        params![key.0[0], key.0[1], key.0[2], key.0[3]],
        |row| {
            Ok(StoredAnswer {
                request_digest: row.digest(0)?,
                response: row.sealed_bytes(1, sealed::RESPONSE)?,
            })
        },
    )?;
    match answer {
        Some(answer) => Ok(Some(answer)),
        None => saga_packs::find(conn, &key.0)?
            .map(|packed| packed_answer(&packed))
            .transpose(),
    }
}

/// The answer recorded on a packed saga (`saga_packs.rs`).
fn packed_answer(packed: &PackedSaga) -> StoreResult<StoredAnswer> {
    Ok(StoredAnswer {
        request_digest: packed.end.answer_digest,
        response: vault::open_bytes(sealed::RESPONSE, &packed.end.response)
            .map(bytes::Bytes::from)
            .map_err(|e| unsealed(sealed::RESPONSE, e))?,
    })
}

/// The answer recorded for a request, a receive's held in `book` included.
pub(super) fn answer_of(
    conn: &Connection,
    book: &SagaBook,
    request: &ReqCols,
) -> StoreResult<Option<StoredAnswer>> {
    match book.answer(&request.0)? {
        Some(answer) => Ok(Some(answer)),
        None => load_answer(conn, request),
    }
}

/// Records an answer unless one is recorded for the request already.
pub(super) fn insert_answer(
    conn: &Connection,
    key: &ReqCols,
    answer: &StoredAnswer,
    response_code: Option<&str>,
) -> StoreResult<()> {
    execute(
        conn,
        "INSERT OR IGNORE INTO answers \
         (mti, acquirer, transmission, stan, request_digest, response, response_code) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            key.0[0],
            key.0[1],
            key.0[2],
            key.0[3],
            &answer.request_digest[..],
            vault::seal_bytes(sealed::RESPONSE, &answer.response),
            response_code,
        ],
    )?;
    Ok(())
}

/// The request digest of the saga written under a key: its row in `sagas`,
/// or its pack (`saga_packs.rs`).
fn saga_digest(conn: &Connection, key: &[KeyText; 4]) -> StoreResult<Option<[u8; 32]>> {
    match row_digest(conn, key)? {
        Some(digest) => Ok(Some(digest)),
        None => Ok(saga_packs::find(conn, key)?.map(|p| p.saga.request_digest)),
    }
}

/// The request digest on a saga's row in `sagas`.
pub(super) fn row_digest(conn: &Connection, key: &[KeyText; 4]) -> StoreResult<Option<[u8; 32]>> {
    query_opt(
        conn,
        "SELECT request_digest FROM sagas \
         WHERE mti = ?1 AND acquirer = ?2 AND transmission = ?3 AND stan = ?4",
        params![key[0], key[1], key[2], key[3]],
        |row| row.digest(0),
    )
}

/// A rejection's answer, unless a freeze or saga holds its key (see
/// `Decisions::record_answer`); an answer recorded before is kept.
pub(super) fn record_rejection(
    conn: &Connection,
    book: &SagaBook,
    key: &ReqCols,
    answer: &StoredAnswer,
    response_code: Option<&str>,
) -> StoreResult<Recorded> {
    let [mti, acquirer, transmission, stan] = &key.0;
    if let Some((saga, _)) = book.get(&key.0) {
        return Ok(Recorded::Held {
            request_digest: saga.request_digest,
        });
    }
    let held = if mti == "0100" {
        query_opt(
            conn,
            "SELECT request_digest FROM freezes \
             WHERE acquirer = ?1 AND transmission = ?2 AND stan = ?3",
            params![acquirer, transmission, stan],
            |row| row.digest(0),
        )?
    } else {
        saga_digest(conn, &key.0)?
    };
    if let Some(request_digest) = held {
        return Ok(Recorded::Held { request_digest });
    }
    insert_answer(conn, key, answer, response_code)?;
    Ok(Recorded::Kept)
}

pub(super) fn set_freeze_state(
    conn: &Connection,
    key: &FreezeCols,
    state: FreezeState,
) -> StoreResult<()> {
    execute(
        conn,
        "UPDATE freezes SET state = ?4 WHERE acquirer = ?1 AND transmission = ?2 AND stan = ?3",
        params![key.0[0], key.0[1], key.0[2], state.as_str()],
    )?;
    Ok(())
}

pub(super) fn insert_freeze(
    conn: &Connection,
    key: &FreezeCols,
    request: &ReqCols,
    freeze: &NewFreeze,
    amount: i64,
) -> StoreResult<InsertFreeze> {
    // A request already answered (even one rejected before any freeze was
    // recorded) is a resend or a clash, whatever the freezes table says.
    if let Some(answer) = load_answer(conn, request)? {
        return Ok(InsertFreeze::Exists {
            request_digest: answer.request_digest,
            answer: Some(answer),
        });
    }
    let existing = query_opt(
        conn,
        "SELECT request_digest FROM freezes WHERE acquirer = ?1 AND transmission = ?2 AND stan = ?3",
        params![key.0[0], key.0[1], key.0[2]],
        |row| row.digest(0),
    )?;
    if let Some(request_digest) = existing {
        return Ok(InsertFreeze::Exists {
            request_digest,
            answer: load_answer(conn, request)?,
        });
    }
    execute(
        conn,
        "INSERT INTO freezes (acquirer, transmission, stan, payer_pan, payer_bank, amount_minor, \
         currency, received_minor, reserved_minor, state, created_at_ms, request_digest) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, 0, 'pending', ?8, ?9)",
        params![
            key.0[0],
            key.0[1],
            key.0[2],
            vault::seal_text(sealed::PAYER_PAN, &freeze.payer_pan),
            freeze.payer_bank,
            amount,
            freeze.currency,
            freeze.created_at_ms,
            &freeze.request_digest[..],
        ],
    )?;
    Ok(InsertFreeze::Inserted)
}

/// Records the payer bank's answer on a pending freeze; a freeze no longer
/// pending is left as it is, reported with the answer recorded then.
pub(super) fn finish_freeze(
    conn: &Connection,
    totals: &FreezeTotals,
    key: &FreezeCols,
    approved: bool,
    request: &ReqCols,
    answer: &StoredAnswer,
    response_code: Option<&str>,
) -> StoreResult<Settled> {
    let freeze = load_freeze(conn, totals, key)?
        .ok_or_else(|| invalid(format!("finish_freeze: no freeze {}", joined(&key.0))))?;
    if freeze.state != FreezeState::Pending {
        return Ok(Settled::Before {
            answer: load_answer(conn, request)?,
        });
    }
    let target = if approved {
        FreezeState::Open
    } else {
        FreezeState::Declined
    };
    set_freeze_state(conn, key, target)?;
    insert_answer(conn, request, answer, response_code)?;
    Ok(Settled::Now)
}

/// Reserves for a receive: the freeze's reserved amount updated, the saga
/// put in `book` (it is written after it ends: `saga_book.rs`).
pub(super) fn reserve(
    conn: &Connection,
    book: &mut SagaBook,
    request: &ReqCols,
    freeze_key: &FreezeCols,
    receive: &NewReceive,
    amount: i64,
) -> StoreResult<Reserve> {
    // A request already answered (even one rejected with 25 or 61, which left
    // no saga), or with a saga, is a resend or a clash. One read looks for
    // both and reads the freeze (read, then updated: an `UPDATE … RETURNING`
    // costs SQLite a temporary table per statement, more than this read);
    // an answer's or a saga's rows are read only when there is one.
    book.usable()?;
    let (answered, has_saga, freeze) = query_opt(
        conn,
        concat!(
            "SELECT EXISTS (SELECT 1 FROM answers \
             WHERE mti = ?1 AND acquirer = ?2 AND transmission = ?3 AND stan = ?4), \
             EXISTS (SELECT 1 FROM sagas \
             WHERE mti = ?1 AND acquirer = ?2 AND transmission = ?3 AND stan = ?4) \
             OR EXISTS (SELECT 1 FROM saga_keys \
             WHERE mti = ?1 AND acquirer = ?2 AND transmission = ?3 AND stan = ?4), ",
            freeze_columns!(),
            " FROM (SELECT 1) LEFT JOIN freezes \
             ON acquirer = ?5 AND transmission = ?6 AND stan = ?7"
        ),
        params![
            request.0[0],
            request.0[1],
            request.0[2],
            request.0[3],
            freeze_key.0[0],
            freeze_key.0[1],
            freeze_key.0[2]
        ],
        |row| {
            // No freeze: its columns are all null.
            let freeze = match row.opt_text(2)? {
                Some(_) => Some(freeze_row(row, 2)?),
                None => None,
            };
            Ok((row.int(0)? != 0, row.int(1)? != 0, freeze))
        },
    )?
    .unwrap_or_default();
    if answered {
        if let Some(answer) = load_answer(conn, request)? {
            return Ok(Reserve::Duplicate {
                request_digest: answer.request_digest,
                answer: Some(answer),
            });
        }
    }
    if has_saga {
        if let Some(request_digest) = row_digest(conn, &request.0)? {
            // Its end may be in the book still (another opening of the
            // file wrote its row as reserved).
            return Ok(Reserve::Duplicate {
                request_digest,
                answer: answer_of(conn, book, request)?,
            });
        }
        // Its pack opened once for both (a resend's read of a pack costs
        // about what a receive does).
        if let Some(packed) = saga_packs::find(conn, &request.0)? {
            return Ok(Reserve::Duplicate {
                request_digest: packed.saga.request_digest,
                answer: Some(packed_answer(&packed)?),
            });
        }
    }
    if let Some((saga, _)) = book.get(&request.0) {
        // In the book: in flight, or ended with its answer there.
        return Ok(Reserve::Duplicate {
            request_digest: saga.request_digest,
            answer: book.answer(&request.0)?,
        });
    }
    let Some(mut freeze) = freeze else {
        return Ok(Reserve::NotFound);
    };
    // Its totals as the book holds them, if they changed since last written.
    book.freezes.overlay(&freeze_key.0, &mut freeze);
    if let Some(refused) = freeze.reserve(receive.amount_minor) {
        return Ok(refused);
    }
    // A total the row could not hold is refused here, by this command, not
    // later when the totals are written out (which would fail the batch).
    amount_in("reserved amount", freeze.reserved_minor)?;
    // Last, once every statement has succeeded (see `saga_book.rs`): the
    // freeze's new totals are logged with the batch, not written onto its
    // row (`freeze_totals.rs`).
    book.freezes.set(
        &freeze_key.0,
        Totals {
            received_minor: freeze.received_minor,
            reserved_minor: freeze.reserved_minor,
        },
    );
    book.reserve(FlyingSaga {
        request: request.0.clone(),
        freeze: freeze_key.0.clone(),
        amount_minor: amount,
        receiver_pan: vault::seal_text(sealed::RECEIVER_PAN, &receive.receiver_pan),
        receiver_bank: receive.receiver_bank.clone(),
        request_digest: receive.request_digest,
        created_at_ms: receive.created_at_ms,
        debit: [
            KeyText::lossy(&receive.debit.stan),
            KeyText::lossy(&receive.debit.transmission),
        ],
        credit: [
            KeyText::lossy(&receive.credit.stan),
            KeyText::lossy(&receive.credit.transmission),
        ],
    });
    Ok(Reserve::Reserved(freeze))
}

/// How [`end_saga`] ended a saga.
pub(super) enum Ending {
    /// It had ended before: nothing changed.
    Before,
    /// Its row was updated; its freeze's new totals are the caller's to
    /// put in the book once the rest of its command has succeeded.
    Written {
        freeze: [KeyText; 3],
        totals: Totals,
    },
    /// It is in the book: the caller records this end there, with its
    /// freeze's new totals, once the rest of its command has succeeded.
    Held { end: SagaEnd, totals: Totals },
    /// It had ended before and is packed (`saga_packs.rs`): nothing
    /// changed; the answer recorded then, read with it.
    Packed { answer: StoredAnswer },
}

/// Ends a saga not ended yet: settles its reservation and records the
/// answer (on its row, or, for a saga in `book`, in the book).
pub(super) fn end_saga(
    conn: &Connection,
    book: &SagaBook,
    request: &ReqCols,
    outcome: ReceiveOutcome,
    answer: &StoredAnswer,
    response_code: Option<&str>,
) -> StoreResult<Ending> {
    // Named only in an error: joined then.
    let name = || joined(&request.0);
    let new_state = match outcome {
        ReceiveOutcome::Approved => SagaState::Approved,
        ReceiveOutcome::Failed => SagaState::Failed,
    };
    if let Some((saga, ended)) = book.get(&request.0) {
        if ended.is_some() {
            return Ok(Ending::Before);
        }
        let totals = settled_totals(conn, book, &saga.freeze, saga.amount_minor, outcome, &name)?;
        return Ok(Ending::Held {
            end: SagaEnd {
                state: new_state,
                response_code: response_code.map(String::from),
                answer_digest: answer.request_digest,
                response: vault::seal_bytes(sealed::RESPONSE, &answer.response),
            },
            totals,
        });
    }
    let saga = query_opt(
        conn,
        "SELECT state, amount_minor, freeze_acquirer, freeze_transmission, freeze_stan FROM sagas \
         WHERE mti = ?1 AND acquirer = ?2 AND transmission = ?3 AND stan = ?4",
        params![request.0[0], request.0[1], request.0[2], request.0[3]],
        |row| {
            let state = row.saga_state(0)?;
            let amount = row.bigint(1)?;
            let freeze = [
                KeyText::new(&row.text(2)?),
                KeyText::new(&row.text(3)?),
                KeyText::new(&row.text(4)?),
            ];
            Ok((state, amount, freeze))
        },
    )?;
    let Some((state, amount, freeze)) = saga else {
        // Packed: it ended before its row would have been written.
        if let Some(packed) = saga_packs::find(conn, &request.0)? {
            return Ok(Ending::Packed {
                answer: packed_answer(&packed)?,
            });
        }
        return Err(invalid(format!("settle_receive: no saga {}", name())));
    };
    if state.is_final() {
        // Settled already: a second finish changes nothing.
        return Ok(Ending::Before);
    }
    let totals = settled_totals(conn, book, &freeze, amount, outcome, &name)?;
    // The answer on the saga, as `insert_answer` would record it: the first
    // one recorded stays.
    execute(
        conn,
        "UPDATE sagas SET state = ?5, response_code = ?6, \
         answer_digest = coalesce(answer_digest, ?7), response = coalesce(response, ?8) \
         WHERE mti = ?1 AND acquirer = ?2 AND transmission = ?3 AND stan = ?4",
        params![
            request.0[0],
            request.0[1],
            request.0[2],
            request.0[3],
            new_state.as_str(),
            response_code,
            &answer.request_digest[..],
            vault::seal_bytes(sealed::RESPONSE, &answer.response),
        ],
    )?;
    Ok(Ending::Written { freeze, totals })
}

/// A saga's freeze's totals once its reservation is settled: the amount
/// taken off the reserved total and, when approved, added to the received
/// one. Read from the book, or from the freeze's row when the book does not
/// hold them; the caller puts them in the book.
fn settled_totals(
    conn: &Connection,
    book: &SagaBook,
    freeze: &[KeyText; 3],
    amount: i64,
    outcome: ReceiveOutcome,
    saga_name: &dyn Fn() -> String,
) -> StoreResult<Totals> {
    let totals = match book.freezes.get(freeze) {
        Some(totals) => Some(totals),
        None => freeze_totals::read(conn, freeze)?,
    };
    let approved = matches!(outcome, ReceiveOutcome::Approved);
    totals
        .zip(u64::try_from(amount).ok())
        .and_then(|(totals, amount)| totals.settled(amount, approved))
        .ok_or_else(|| {
            corrupt(format!(
                "saga {}: its freeze {} is missing or holds less than {amount} reserved",
                saga_name(),
                joined(freeze)
            ))
        })
}

pub(super) fn close_freeze(
    conn: &Connection,
    totals: &FreezeTotals,
    key: &FreezeCols,
    amount_minor: u64,
    request: &ReqCols,
    answer: &StoredAnswer,
    response_code: Option<&str>,
) -> StoreResult<Close> {
    let Some(mut freeze) = load_freeze(conn, totals, key)? else {
        return Ok(Close::NotFound);
    };
    if freeze.state != FreezeState::Open {
        return Ok(Close::NotOpen(freeze.state));
    }
    let remaining_minor = freeze.available_minor();
    if amount_minor != remaining_minor {
        return Ok(Close::AmountMismatch { remaining_minor });
    }
    set_freeze_state(conn, key, FreezeState::Closed)?;
    insert_answer(conn, request, answer, response_code)?;
    freeze.state = FreezeState::Closed;
    Ok(Close::Closed(freeze))
}

/// Takes `count` STANs from the counter. A block never crosses 999999: when
/// it would, it starts at 1 instead (the STANs between are skipped this round).
pub(super) fn allocate_stans(conn: &Connection, count: u32) -> StoreResult<u32> {
    let next = query_opt(
        conn,
        "SELECT next_stan FROM stan_counter WHERE id = 0",
        [],
        |row| row.bigint(0),
    )?
    .ok_or_else(|| corrupt("the STAN counter row is missing"))?;
    let next = u32::try_from(next)
        .ok()
        .filter(|n| (1..=MAX_STAN).contains(n))
        .ok_or_else(|| corrupt(format!("STAN counter at {next}")))?;
    let first = if next + (count - 1) > MAX_STAN {
        1
    } else {
        next
    };
    let after = first + count;
    let after = if after > MAX_STAN { 1 } else { after };
    execute(
        conn,
        "UPDATE stan_counter SET next_stan = ?1 WHERE id = 0",
        params![after],
    )?;
    Ok(first)
}

// ---------------------------------------------------------------------------
// Store-and-forward

pub(super) fn saf_enqueue(conn: &Connection, entry: &NewSafEntry) -> StoreResult<()> {
    execute(
        conn,
        "INSERT INTO saf (bank, order_key, kind, message, created_at_ms, state, next_attempt_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?5)",
        params![
            entry.bank,
            entry.order_key,
            entry.kind.as_str(),
            vault::seal_bytes(sealed::SAF_MESSAGE, &entry.message),
            entry.created_at_ms,
        ],
    )?;
    Ok(())
}

pub(super) fn saf_due(conn: &Connection, now_ms: i64, limit: usize) -> StoreResult<Vec<SafEntry>> {
    query_all_with(
        conn,
        concat!(
            "SELECT ",
            saf_columns!(),
            " FROM saf s WHERE state = 'pending' AND next_attempt_ms <= ?1 \
             AND id = (SELECT MIN(id) FROM saf t WHERE t.order_key = s.order_key \
             AND t.state = 'pending') ORDER BY id LIMIT ?2"
        ),
        params![now_ms, limit as i64],
        |row| saf_row(row),
    )
}

pub(super) fn saf_settle(conn: &Connection, id: i64, outcome: &SafOutcome) -> StoreResult<()> {
    let (state, next, result) = match outcome {
        SafOutcome::Done { result } => ("done", None, result),
        SafOutcome::Retry {
            next_attempt_ms,
            result,
        } => ("pending", Some(*next_attempt_ms), result),
        SafOutcome::Dead { result } => ("dead", None, result),
    };
    let changed = execute(
        conn,
        "UPDATE saf SET state = ?2, attempts = attempts + 1, \
         next_attempt_ms = COALESCE(?3, next_attempt_ms), last_result = ?4 \
         WHERE id = ?1 AND state = 'pending'",
        params![id, state, next, result],
    )?;
    if changed != 1 {
        return Err(invalid(format!("saf entry {id} is not pending")));
    }
    Ok(())
}

/// A failed receive whose freeze is closed leaves its amount held at the payer
/// bank: queue the further unfreeze.
pub(super) fn queue_follow_up(
    conn: &Connection,
    book: &SagaBook,
    request: &ReqCols,
    outcome: ReceiveOutcome,
    follow_up: &FollowUp,
) -> StoreResult<()> {
    for entry in &follow_up.saf {
        saf_enqueue(conn, entry)?;
    }
    if let (ReceiveOutcome::Failed, Some(unfreeze)) = (outcome, &follow_up.unfreeze_if_closed) {
        let closed = match book.get(&request.0) {
            Some((saga, _)) => freeze_closed(conn, &saga.freeze)?,
            // A packed saga ended before: its follow-ups were queued then.
            None => query_opt(
                conn,
                "SELECT f.state FROM sagas s JOIN freezes f ON f.acquirer = s.freeze_acquirer \
                 AND f.transmission = s.freeze_transmission AND f.stan = s.freeze_stan \
                 WHERE s.mti = ?1 AND s.acquirer = ?2 AND s.transmission = ?3 AND s.stan = ?4",
                params![request.0[0], request.0[1], request.0[2], request.0[3]],
                |row| Ok(row.text(0)? == "closed"),
            )?,
        };
        if closed == Some(true) {
            saf_enqueue(conn, unfreeze)?;
        }
    }
    Ok(())
}

/// Whether a freeze is closed (`None`: no such freeze).
fn freeze_closed(conn: &Connection, freeze: &[KeyText; 3]) -> StoreResult<Option<bool>> {
    query_opt(
        conn,
        "SELECT state FROM freezes WHERE acquirer = ?1 AND transmission = ?2 AND stan = ?3",
        params![freeze[0], freeze[1], freeze[2]],
        |row| Ok(row.text(0)? == "closed"),
    )
}

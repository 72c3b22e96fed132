//! Decoding what the decision statements return into the trait's results
//! (or a rerun, when a statement's snapshot and the row it met disagree).

use super::*;
use crate::store::columns::sealed;

// ---------------------------------------------------------------------------
// Decoding what the statements return

pub(super) fn stored_answer(
    row: &Row,
    digest: usize,
    response: usize,
) -> StoreResult<StoredAnswer> {
    Ok(StoredAnswer {
        request_digest: row.digest(digest)?,
        response: row.sealed_bytes(response, sealed::RESPONSE)?,
    })
}

/// A reservation's rows of [`SQL_RESERVE_SET`], first match wins.
pub(super) fn decide_reserve(rows: &[Row], amount_minor: u64) -> Decision<Reserve> {
    // After `what` and the freeze's columns: an earlier answer's digest and response.
    const DIGEST: usize = 1 + FREEZE_COLUMNS;
    const RESPONSE: usize = DIGEST + 1;
    let decided = (|| {
        let what = |name: &str| {
            rows.iter()
                .find(|r| r.try_get::<_, &str>(0).ok() == Some(name))
        };
        if let Some(row) = what("reserved") {
            return Ok(Some(Reserve::Reserved(freeze_row(row, 1)?)));
        }
        if let Some(row) = what("answered") {
            let answer = stored_answer(row, DIGEST, RESPONSE)?;
            return Ok(Some(Reserve::Duplicate {
                request_digest: answer.request_digest,
                answer: Some(answer),
            }));
        }
        if let Some(row) = what("saga") {
            let answered = row
                .try_get::<_, Option<&[u8]>>(RESPONSE)
                .map_err(|e| corrupt(format!("saga response: {e}")))?
                .is_some();
            return Ok(Some(if answered {
                let answer = stored_answer(row, DIGEST, RESPONSE)?;
                Reserve::Duplicate {
                    request_digest: answer.request_digest,
                    answer: Some(answer),
                }
            } else {
                Reserve::Duplicate {
                    request_digest: row.digest(DIGEST)?,
                    answer: None,
                }
            }));
        }
        let Some(row) = what("freeze") else {
            return Ok(Some(Reserve::NotFound));
        };
        let freeze = freeze_row(row, 1)?;
        if freeze.state != FreezeState::Open {
            return Ok(Some(Reserve::NotOpen(freeze.state)));
        }
        let available_minor = freeze.available_minor();
        if amount_minor > available_minor {
            return Ok(Some(Reserve::Exceeds { available_minor }));
        }
        Ok(None)
    })();
    match decided {
        Ok(Some(r)) => Decision::Done(Ok(r)),
        Ok(None) => Decision::Rerun,
        Err(e) => Decision::Done(Err(e)),
    }
}

pub(super) fn decide_close(rows: &[Row], amount_minor: u64) -> Decision<Close> {
    let Some(row) = rows.first() else {
        return Decision::Done(Ok(Close::NotFound));
    };
    let decided = (|| {
        let what = row.text(0)?;
        let freeze = freeze_row(row, 1)?;
        if what == "closed" {
            return Ok(Some(Close::Closed(freeze)));
        }
        if freeze.state != FreezeState::Open {
            return Ok(Some(Close::NotOpen(freeze.state)));
        }
        let remaining_minor = freeze.available_minor();
        if remaining_minor != amount_minor {
            return Ok(Some(Close::AmountMismatch { remaining_minor }));
        }
        Ok(None)
    })();
    match decided {
        Ok(Some(c)) => Decision::Done(Ok(c)),
        Ok(None) => Decision::Rerun,
        Err(e) => Decision::Done(Err(e)),
    }
}

/// The answer recorded before, from columns 2 (digest) and 3 (response) of
/// the statements that end a freeze or a saga.
pub(super) fn answer_before(rows: &[Row]) -> StoreResult<Option<StoredAnswer>> {
    let row = rows
        .first()
        .ok_or_else(|| corrupt("a statement returned no row"))?;
    let response: Option<&[u8]> = row
        .try_get(3)
        .map_err(|e| corrupt(format!("recorded response: {e}")))?;
    match response {
        None => Ok(None),
        Some(_) => stored_answer(row, 2, 3).map(Some),
    }
}

/// `(updated count, current state)` of the statements that end `SELECT count, state`.
pub(super) fn count_and_state(rows: &[Row]) -> StoreResult<(i64, Option<String>)> {
    let row = rows
        .first()
        .ok_or_else(|| corrupt("a statement returned no row"))?;
    Ok((row.bigint(0)?, row.opt_text(1)?))
}

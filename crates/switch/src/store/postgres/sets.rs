//! Set statements: the reservations, and the ends, of the receives in one
//! batch run as one statement each over arrays of their columns (`unnest`),
//! rather than one statement per receive.
//!
//! Why: a statement's fixed cost in the server (starting the executor for a
//! plan of several data-modifying CTEs, and compiling the tables' `CHECK`
//! constraints afresh for each execution) was most of what a receive cost
//! PostgreSQL; its per-row work is a few index probes and two row versions.
//!
//! What stays true: each command's rows come back tagged with its place in
//! the batch (the last column) and are decoded exactly as a statement of its
//! own would be. Several reservations of one freeze are taken in batch order
//! while their running total fits, and the freeze is updated once by their
//! total (an `UPDATE ... FROM` updates a row once, whatever joins it); one
//! that did not fit sees the freeze as it was before the statement, and is
//! refused or runs again, as after any race. Ends of sagas of one freeze
//! likewise: their amounts are summed per freeze first.

use super::*;
use crate::store::columns::sealed;
use crate::vault;

/// The columns of one reservation (see [`SQL_RESERVE_SET`]).
pub(super) struct ReserveRow {
    pub(super) request: ReqCols,
    pub(super) freeze: FreezeCols,
    pub(super) amount_minor: i64,
    /// Sealed.
    pub(super) receiver_pan: String,
    pub(super) receiver_bank: String,
    pub(super) state: &'static str,
    pub(super) request_digest: Vec<u8>,
    pub(super) created_at_ms: i64,
    pub(super) debit_stan: KeyText,
    pub(super) debit_transmission: KeyText,
    pub(super) credit_stan: KeyText,
    pub(super) credit_transmission: KeyText,
    pub(super) owner: String,
}

/// The columns of one saga's end (see [`SQL_SETTLE_SET`]).
pub(super) struct SettleRow {
    pub(super) request: ReqCols,
    pub(super) state: &'static str,
    pub(super) response_code: Option<String>,
    /// `approved` or `failed`.
    pub(super) outcome: &'static str,
    pub(super) answer_digest: Vec<u8>,
    /// Sealed.
    pub(super) response: Vec<u8>,
    /// Queued when the saga ends now.
    pub(super) follow_up: Vec<SafRow>,
    /// Queued when a failed receive ends and its freeze is closed.
    pub(super) unfreeze_if_closed: Vec<SafRow>,
}

/// A store-and-forward entry as the set statements insert it.
pub(super) struct SafRow {
    bank: String,
    order_key: String,
    kind: &'static str,
    /// Sealed.
    message: Vec<u8>,
    created_at_ms: i64,
}

impl SafRow {
    pub(super) fn new(entry: &NewSafEntry) -> SafRow {
        SafRow {
            bank: entry.bank.clone(),
            order_key: entry.order_key.clone(),
            kind: entry.kind.as_str(),
            message: vault::seal_bytes(sealed::SAF_MESSAGE, &entry.message),
            created_at_ms: entry.created_at_ms,
        }
    }
}

/// A command's share of a set statement.
pub(super) enum SetRow {
    Reserve(Box<ReserveRow>),
    Settle(Box<SettleRow>),
}

/// What a command runs: a statement of its own, or a row of a set statement.
pub(super) enum Statement {
    Own { sql: &'static str, params: Params },
    Set(SetRow),
}

/// Parameters of one statement of a batch: a command's own, or a set
/// statement's arrays.
pub(super) enum UnitParams<'a> {
    Borrowed(&'a Params),
    Owned(Params),
}

impl UnitParams<'_> {
    pub(super) fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        let params = match self {
            UnitParams::Borrowed(p) => *p,
            UnitParams::Owned(p) => p,
        };
        params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect()
    }
}

/// One statement of a batch's transaction and the commands (places in the
/// batch) whose rows it returns.
pub(super) struct Unit<'a> {
    pub(super) sql: &'static str,
    pub(super) params: UnitParams<'a>,
    pub(super) commands: Vec<usize>,
    /// Whether each row names its command in its last column.
    pub(super) tagged: bool,
}

impl<'a> Unit<'a> {
    /// A command's statement of its own: all its rows are the command's.
    fn own(sql: &'static str, params: &'a Params, command: usize) -> Self {
        Unit {
            sql,
            params: UnitParams::Borrowed(params),
            commands: vec![command],
            tagged: false,
        }
    }

    /// A statement of no command's, run before the set statements.
    fn preparing(sql: &'static str, params: Params) -> Self {
        Unit {
            sql,
            params: UnitParams::Owned(params),
            commands: Vec::new(),
            tagged: false,
        }
    }

    /// A set statement over the rows of `commands`, each row tagged.
    fn set<R>(sql: &'static str, rows: &[(usize, &R)], params: Params) -> Self {
        Unit {
            sql,
            params: UnitParams::Owned(params),
            commands: rows.iter().map(|(i, _)| *i).collect(),
            tagged: true,
        }
    }
}

/// The statements a batch runs, in order: the commands with statements of
/// their own, then (when there are set statements) [`SQL_PLAN_BY_KEYS`],
/// [`SQL_LOCK_FREEZES`], the reservations, and the saga ends.
pub(super) fn plan(batch: &[Box<dyn Command>]) -> Vec<Unit<'_>> {
    let mut units = Vec::new();
    let mut reserves: Vec<(usize, &ReserveRow)> = Vec::new();
    let mut settles: Vec<(usize, &SettleRow)> = Vec::new();
    for (i, command) in batch.iter().enumerate() {
        match command.statement() {
            Statement::Own { sql, params } => units.push(Unit::own(sql, params, i)),
            Statement::Set(SetRow::Reserve(row)) => reserves.push((i, row)),
            Statement::Set(SetRow::Settle(row)) => settles.push((i, row)),
        }
    }
    if !reserves.is_empty() || !settles.is_empty() {
        units.push(Unit::preparing(SQL_PLAN_BY_KEYS, Vec::new()));
        units.push(Unit::preparing(
            SQL_LOCK_FREEZES,
            lock_params(&reserves, &settles),
        ));
    }
    if !reserves.is_empty() {
        let params = reserve_params(&reserves);
        units.push(Unit::set(SQL_RESERVE_SET, &reserves, params));
    }
    if !settles.is_empty() {
        let params = settle_params(&settles);
        units.push(Unit::set(SQL_SETTLE_SET, &settles, params));
    }
    units
}

/// One array parameter: a column of every row.
fn array<T>(values: impl Iterator<Item = T>) -> Box<dyn ToSql + Sync + Send>
where
    Vec<T>: ToSql + Sync + Send + 'static,
{
    Box::new(values.collect::<Vec<T>>())
}

/// A command's place in the batch, as the statements tag their rows.
fn place(i: usize) -> i32 {
    i32::try_from(i).expect("a batch holds fewer than 2^31 commands")
}

/// The first five parameters of both set statements: each command's place,
/// then its request key's four columns.
fn places_and_requests<R>(rows: &[(usize, &R)], request: impl Fn(&R) -> &ReqCols) -> Params {
    let mut params = vec![array(rows.iter().map(|(i, _)| place(*i)))];
    for column in 0..4 {
        params.push(array(
            rows.iter().map(|(_, r)| request(r).0[column].clone()),
        ));
    }
    params
}

fn lock_params(reserves: &[(usize, &ReserveRow)], settles: &[(usize, &SettleRow)]) -> Params {
    let mut params = Vec::with_capacity(7);
    for column in 0..3 {
        params.push(array(
            reserves.iter().map(|(_, r)| r.freeze.0[column].clone()),
        ));
    }
    for column in 0..4 {
        params.push(array(
            settles.iter().map(|(_, r)| r.request.0[column].clone()),
        ));
    }
    params
}

fn reserve_params(rows: &[(usize, &ReserveRow)]) -> Params {
    let each = || rows.iter().map(|(_, r)| *r);
    let mut params = places_and_requests(rows, |r| &r.request);
    params.extend([
        array(each().map(|r| r.freeze.0[0].clone())),
        array(each().map(|r| r.freeze.0[1].clone())),
        array(each().map(|r| r.freeze.0[2].clone())),
        array(each().map(|r| r.amount_minor)),
        array(each().map(|r| r.receiver_pan.clone())),
        array(each().map(|r| r.receiver_bank.clone())),
        array(each().map(|r| r.state.to_string())),
        array(each().map(|r| r.request_digest.clone())),
        array(each().map(|r| r.created_at_ms)),
        array(each().map(|r| r.debit_stan.clone())),
        array(each().map(|r| r.debit_transmission.clone())),
        array(each().map(|r| r.credit_stan.clone())),
        array(each().map(|r| r.credit_transmission.clone())),
        array(each().map(|r| r.owner.clone())),
    ]);
    params
}

fn settle_params(rows: &[(usize, &SettleRow)]) -> Params {
    let each = || rows.iter().map(|(_, r)| *r);
    // The entries to queue, flattened: each names its command and part (0 a
    // follow-up, 1 the unfreeze of a closed freeze), in the order to queue them.
    let entries: Vec<(i32, i32, &SafRow)> = rows
        .iter()
        .flat_map(|(i, r)| {
            let follow_up = r.follow_up.iter().map(|e| (0, e));
            let unfreeze = r.unfreeze_if_closed.iter().map(|e| (1, e));
            follow_up
                .chain(unfreeze)
                .map(move |(part, e)| (place(*i), part, e))
        })
        .collect();
    let queued = || entries.iter().map(|(_, _, e)| *e);
    let mut params = places_and_requests(rows, |r| &r.request);
    params.extend([
        array(each().map(|r| r.state.to_string())),
        array(each().map(|r| r.response_code.clone())),
        array(each().map(|r| r.outcome.to_string())),
        array(each().map(|r| r.answer_digest.clone())),
        array(each().map(|r| r.response.clone())),
        array(entries.iter().map(|(i, _, _)| *i)),
        array(entries.iter().map(|(_, part, _)| *part)),
        array(queued().map(|e| e.bank.clone())),
        array(queued().map(|e| e.order_key.clone())),
        array(queued().map(|e| e.kind.to_string())),
        array(queued().map(|e| e.message.clone())),
        array(queued().map(|e| e.created_at_ms)),
    ]);
    params
}

/// Hands each command of the batch the rows its statement returned: a
/// statement of its own all its rows, a set statement those tagged with the
/// command's place. `None` when a row names no command of its statement.
pub(super) fn distribute(
    units: &[Unit<'_>],
    results: Vec<Vec<Row>>,
    commands: usize,
) -> Option<Vec<Vec<Row>>> {
    let mut rows: Vec<Vec<Row>> = (0..commands).map(|_| Vec::new()).collect();
    for (unit, result) in units.iter().zip(results) {
        if !unit.tagged {
            if let Some(i) = unit.commands.first() {
                rows[*i] = result;
            }
            continue;
        }
        for row in result {
            let place = row.len().checked_sub(1)?;
            let i = usize::try_from(row.try_get::<_, i32>(place).ok()?).ok()?;
            if !unit.commands.contains(&i) {
                return None;
            }
            rows[i].push(row);
        }
    }
    Some(rows)
}

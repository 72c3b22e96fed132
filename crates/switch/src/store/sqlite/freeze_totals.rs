//! The received and reserved totals of the freezes that receives changed
//! since the sagas' log was last pruned, held by the writer thread in the
//! sagas' book, with `saga_log` as their durable record.
//!
//! Why: every receive changed its freeze's row twice, at its reservation
//! and at its end, so every commit rewrote the leaf pages of `freezes` that
//! its receives' freezes sat in (a `WITHOUT ROWID` row rewritten is deleted
//! and inserted again), and a freeze with many receives was rewritten as
//! many times. Now:
//!
//! - A reservation and a saga's end change the totals here, as the last
//!   step of their command (like the book's sagas). Before a batch commits,
//!   the totals of every freeze it changed are appended to its `saga_log`
//!   row, as absolute values (not as changes), in the batch's transaction:
//!   durable before the caller hears back.
//! - When the log is pruned, and whenever the book is written out for a
//!   read ([`super::saga_book::materialize_all`]), the totals are written
//!   onto the freezes' rows, in key order, and dropped from here.
//! - Reads of a freeze on the writer's connection take its totals from here
//!   when they are held ([`FreezeTotals::overlay`]); reads elsewhere write
//!   the book out first.
//! - Folding the log ([`super::saga_book::fold_log`]) writes, for each
//!   freeze, the totals of the NEWEST log row that holds it. That is the
//!   truth: every change of a freeze's totals is logged, a row's values are
//!   absolute (folding twice, or after another process folded, changes
//!   nothing), and the log loses rows only from its oldest end, after the
//!   totals they hold are written (pruning), or all at once after the whole
//!   book is written (folding, [`super::saga_book::materialize_all`]). So a
//!   log row's totals are never older than the row's own.

// foldhash rather than SipHash: the writer looks a freeze up for every
// reservation and end; the map holds only the freezes changed since the
// last pruning, and its key parts are digits.
use foldhash::HashMap;

use super::*;

/// A freeze's received and reserved totals, in minor units.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Totals {
    pub(super) received_minor: u64,
    pub(super) reserved_minor: u64,
}

impl Totals {
    /// A reservation of `amount` settled: taken off the reserved total and,
    /// when approved, added to the received one. `None` when less than
    /// `amount` is reserved (the book and the file disagree).
    pub(super) fn settled(self, amount: u64, approved: bool) -> Option<Totals> {
        let reserved_minor = self.reserved_minor.checked_sub(amount)?;
        let received_minor = if approved {
            self.received_minor.checked_add(amount)?
        } else {
            self.received_minor
        };
        Some(Totals {
            received_minor,
            reserved_minor,
        })
    }
}

struct Held {
    totals: Totals,
    /// Changed since the batch's log row was last written.
    unlogged: bool,
}

/// The totals of the freezes changed since they were last written.
#[derive(Default)]
pub(super) struct FreezeTotals {
    held: HashMap<[KeyText; 3], Held>,
    /// Changed in the open batch, each once: logged with it.
    unlogged: Vec<[KeyText; 3]>,
}

impl FreezeTotals {
    pub(super) fn get(&self, freeze: &[KeyText; 3]) -> Option<Totals> {
        self.held.get(freeze).map(|h| h.totals)
    }

    /// A freeze read from the file (`freeze` its key's columns), with the
    /// totals held here if it has any.
    pub(super) fn overlay(&self, freeze: &[KeyText; 3], record: &mut FreezeRecord) {
        if let Some(held) = self.held.get(freeze) {
            record.received_minor = held.totals.received_minor;
            record.reserved_minor = held.totals.reserved_minor;
        }
    }

    /// New totals for a freeze: logged with the open batch.
    pub(super) fn set(&mut self, freeze: &[KeyText; 3], totals: Totals) {
        match self.held.get_mut(freeze) {
            Some(held) => {
                held.totals = totals;
                if !held.unlogged {
                    held.unlogged = true;
                    self.unlogged.push(freeze.clone());
                }
            }
            None => {
                self.held.insert(
                    freeze.clone(),
                    Held {
                        totals,
                        unlogged: true,
                    },
                );
                self.unlogged.push(freeze.clone());
            }
        }
    }

    /// The freezes changed in the open batch with their totals, for its
    /// log row; they count as logged once [`FreezeTotals::logged`] is called.
    pub(super) fn unlogged(&self) -> impl ExactSizeIterator<Item = (&[KeyText; 3], Totals)> {
        self.unlogged.iter().map(|k| (k, self.held[k].totals))
    }

    pub(super) fn has_unlogged(&self) -> bool {
        !self.unlogged.is_empty()
    }

    /// The batch's log row holds the changes.
    pub(super) fn logged(&mut self) {
        for key in self.unlogged.drain(..) {
            if let Some(held) = self.held.get_mut(&key) {
                held.unlogged = false;
            }
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    pub(super) fn clear(&mut self) {
        self.held.clear();
        self.unlogged.clear();
    }
}

/// A freeze's totals as its row holds them, or `None` without a row.
pub(super) fn read(conn: &Connection, freeze: &[KeyText; 3]) -> StoreResult<Option<Totals>> {
    query_opt(
        conn,
        "SELECT received_minor, reserved_minor FROM freezes \
         WHERE acquirer = ?1 AND transmission = ?2 AND stan = ?3",
        params![freeze[0], freeze[1], freeze[2]],
        |row| {
            Ok(Totals {
                received_minor: row.amount(0)?,
                reserved_minor: row.amount(1)?,
            })
        },
    )
}

/// Writes totals onto a freeze's row; a freeze without one is corrupt.
pub(super) fn write(conn: &Connection, freeze: &[KeyText; 3], totals: Totals) -> StoreResult<()> {
    let changed = execute(
        conn,
        "UPDATE freezes SET received_minor = ?4, reserved_minor = ?5 \
         WHERE acquirer = ?1 AND transmission = ?2 AND stan = ?3",
        params![
            freeze[0],
            freeze[1],
            freeze[2],
            amount_in("received amount", totals.received_minor)?,
            amount_in("reserved amount", totals.reserved_minor)?,
        ],
    )?;
    if changed != 1 {
        return Err(corrupt(format!(
            "the totals of freeze {} have no row to go onto",
            joined(freeze)
        )));
    }
    Ok(())
}

/// Writes every held freeze's totals onto its row, in key order (each page
/// of `freezes` written once for the freezes it holds). The caller empties
/// the book once its transaction has them.
pub(super) fn write_all(conn: &Connection, totals: &FreezeTotals) -> StoreResult<()> {
    let mut keys: Vec<&[KeyText; 3]> = totals.held.keys().collect();
    keys.sort();
    for key in keys {
        write(conn, key, totals.held[key].totals)?;
    }
    Ok(())
}

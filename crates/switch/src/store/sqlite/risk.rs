//! [`RiskLedger`] on SQLite: the store has one owner (the process holding
//! its lock), so the counters are judged in memory, under one lock, from
//! the events stored ([`crate::store::risk_book`]); judging a limit and
//! recording its event cannot interleave with another request's.

use super::*;
use crate::store::risk::{
    amounts_of, hit_count_row, SQL_ADD, SQL_FORGET_RULE, SQL_HIT, SQL_HITS_OF_DAY, SQL_SWEEP,
    SQL_TOTALS,
};
use crate::store::risk_book::{empty_counter, Counter};
use crate::store::{Hit, HitCount, Limit, RiskLedger};

/// SQLite's spelling of the shared SQL, made once.
struct Sql {
    add: String,
    totals: String,
    sweep: String,
    forget_rule: String,
    hit: String,
    hits_of_day: String,
}

fn sql() -> &'static Sql {
    static SQL: std::sync::OnceLock<Sql> = std::sync::OnceLock::new();
    SQL.get_or_init(|| Sql {
        add: sqlite(SQL_ADD),
        totals: sqlite(SQL_TOTALS),
        sweep: sqlite(SQL_SWEEP),
        forget_rule: sqlite(SQL_FORGET_RULE),
        hit: sqlite(SQL_HIT),
        hits_of_day: sqlite(SQL_HITS_OF_DAY),
    })
}

/// The events of a sliding window, oldest first.
const SQL_EVENTS: &str = "SELECT at_ms, amount_minor, detail FROM risk_events \
     WHERE rule = ?1 AND subject = ?2 AND at_ms >= ?3 ORDER BY at_ms";

/// Loads, in the writer (behind every event queued), the counters of
/// `limits` from the events stored.
fn load_counters(c: &Connection, limits: Vec<Limit>) -> StoreResult<Vec<(Limit, Counter)>> {
    let mut loaded = Vec::with_capacity(limits.len());
    for l in limits {
        let mut counter = empty_counter(&l);
        match &mut counter {
            Counter::Total { count, sum, .. } => {
                let (n, s) = c
                    .prepare_cached(&sql().totals)
                    .and_then(|mut s| {
                        s.query_row(params![l.rule, l.subject, l.since_ms], |r| {
                            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
                        })
                    })
                    .map_err(db)?;
                *count = n.max(0) as u64;
                *sum = s.max(0) as u64;
            }
            window => {
                let mut stmt = c.prepare_cached(SQL_EVENTS).map_err(db)?;
                let mut rows = stmt
                    .query(params![l.rule, l.subject, l.since_ms])
                    .map_err(db)?;
                while let Some(r) = rows.next().map_err(db)? {
                    let at: i64 = r.get(0).map_err(db)?;
                    let amount: i64 = r.get(1).map_err(db)?;
                    let detail: String = r.get(2).map_err(db)?;
                    window.add(at, amount.max(0) as u64, &detail);
                }
            }
        }
        loaded.push((l, counter));
    }
    Ok(loaded)
}

/// A counter event on its way to the writer.
pub(super) struct RiskEvent {
    rule: String,
    subject: String,
    at_ms: i64,
    amount_minor: i64,
    detail: String,
}

/// Writes the events taken from the channel, in the writer.
pub(super) fn write_events(c: &Connection, events: &[RiskEvent]) -> StoreResult<()> {
    let mut add = c.prepare_cached(&sql().add).map_err(db)?;
    for e in events {
        add.execute(params![
            e.rule,
            e.subject,
            e.at_ms,
            e.amount_minor,
            e.detail
        ])
        .map_err(db)?;
    }
    Ok(())
}

#[async_trait]
impl RiskLedger for SqliteStore {
    /// Judged in memory ([`crate::store::risk_book`]); the events are
    /// written at the start of the writer's next batch, sent while the book
    /// is held so that a counter loaded later sees them.
    async fn take(&self, limits: Vec<Limit>, now_ms: i64) -> StoreResult<Vec<usize>> {
        let amounts = amounts_of(&limits)?;
        loop {
            let book = self.risk_book.lock().await;
            let missing = book.missing(&limits);
            if missing.is_empty() {
                let mut book = book;
                let (exceeded, record) = book.take(&limits, now_ms);
                if record {
                    for (l, amount) in limits.iter().zip(&amounts).filter(|(l, _)| l.record) {
                        let event = RiskEvent {
                            rule: l.rule.clone(),
                            subject: l.subject.clone(),
                            at_ms: now_ms,
                            amount_minor: *amount,
                            detail: l.distinct.clone().unwrap_or_default(),
                        };
                        // Sent while the book is held: a load sent later sees it.
                        self.risk_events.send(event).map_err(|_| stopped())?;
                    }
                }
                return Ok(exceeded);
            }
            let epoch = book.epoch();
            let wanted: Vec<Limit> = missing.into_iter().map(|i| limits[i].clone()).collect();
            let load = self.queue_early(move |c| load_counters(c, wanted)).await?;
            drop(book);
            let loaded = load.await.map_err(|_| stopped())??;
            // Refused when something was forgotten meanwhile: loaded again.
            self.risk_book.lock().await.insert_loaded(epoch, loaded);
        }
    }

    async fn forget_before(&self, at_ms: i64) -> StoreResult<()> {
        let mut book = self.risk_book.lock().await;
        book.forget_before(at_ms);
        let sweep = self
            .queue_early(move |c| execute(c, &sql().sweep, params![at_ms]).map(|_| ()))
            .await?;
        drop(book);
        sweep.await.map_err(|_| stopped())?
    }

    async fn forget_rule_before(&self, rule: &str, at_ms: i64) -> StoreResult<()> {
        let rule = rule.to_string();
        self.call(move |c| execute(c, &sql().forget_rule, params![rule, at_ms]).map(|_| ()))
            .await
    }

    async fn record_hits(&self, hits: Vec<Hit>) -> StoreResult<()> {
        self.call(move |c| {
            for h in &hits {
                execute(
                    c,
                    &sql().hit,
                    params![
                        h.day,
                        h.at_ms,
                        h.rule,
                        h.mode,
                        h.code,
                        h.card,
                        h.institution
                    ],
                )?;
            }
            Ok(())
        })
        .await
    }

    async fn hits_of_day(&self, day: &str) -> StoreResult<Vec<HitCount>> {
        let day = day.to_string();
        self.read(move |c| {
            query_all_with(c, &sql().hits_of_day, params![day], |r| hit_count_row(r))
        })
        .await
    }
}

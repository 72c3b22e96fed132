//! [`RiskLedger`] on SQLite: the store has one owner (the process holding
//! its lock), so the counters are judged in memory, under one lock
//! ([`crate::store::risk_book`]); judging a limit and recording its event
//! cannot interleave with another request's. Their durable record is the
//! log and snapshots of [`super::risk_log`].

use super::risk_codec::RiskEvent;
use super::risk_log::{lock, RiskLog};
use super::*;
use crate::store::risk::{check_amounts, hit_count_row, SQL_HIT, SQL_HITS_OF_DAY};
use crate::store::risk_book::{Counter, CounterKind};
use crate::store::{Hit, HitCount, Limit, RiskLedger};

/// SQLite's spelling of the shared SQL, made once.
struct Sql {
    hit: String,
    hits_of_day: String,
}

fn sql() -> &'static Sql {
    static SQL: std::sync::OnceLock<Sql> = std::sync::OnceLock::new();
    SQL.get_or_init(|| Sql {
        hit: sqlite(SQL_HIT),
        hits_of_day: sqlite(SQL_HITS_OF_DAY),
    })
}

/// Loads, in the writer (behind every event queued), the counters of
/// `limits` from the log and snapshots.
fn load_counters(
    c: &Connection,
    log: &std::sync::Mutex<RiskLog>,
    limits: Vec<Limit>,
) -> StoreResult<Vec<(Limit, Counter)>> {
    let log = lock(log);
    limits
        .into_iter()
        .map(|l| {
            let counter = log.counter(c, &l)?;
            Ok((l, counter))
        })
        .collect()
}

#[async_trait]
impl RiskLedger for SqliteStore {
    /// Judged in memory ([`crate::store::risk_book`]); the events are
    /// logged at the start of the writer's next batch, sent while the book
    /// is held so that a counter loaded later sees them.
    async fn take(&self, mut limits: Vec<Limit>, now_ms: i64) -> StoreResult<Vec<usize>> {
        // Amounts a SQL store cannot hold are refused alike on every store.
        check_amounts(&limits)?;
        loop {
            let mut book = self.risk_book.lock().await;
            let missing = match book.try_take(&mut limits, now_ms) {
                Err(missing) => missing,
                Ok((exceeded, record)) => {
                    if record {
                        let events: Vec<RiskEvent> = limits
                            .into_iter()
                            .filter(|l| l.record)
                            .map(|l| RiskEvent {
                                kind: CounterKind::of(&l),
                                since_ms: l.since_ms,
                                at_ms: now_ms,
                                amount_minor: l.amount_minor,
                                detail: l.distinct.unwrap_or_default(),
                                rule: l.rule,
                                subject: l.subject,
                            })
                            .collect();
                        // Sent while the book is held: a load sent later
                        // sees them. One send for the request's events.
                        if !events.is_empty() {
                            self.risk_events.send(events).map_err(|_| stopped())?;
                        }
                    }
                    return Ok(exceeded);
                }
            };
            let epoch = book.epoch();
            let wanted: Vec<Limit> = missing.into_iter().map(|i| limits[i].clone()).collect();
            let log = self.risk_log.clone();
            let load = self
                .queue_early(move |c| load_counters(c, &log, wanted))
                .await?;
            drop(book);
            let loaded = load.await.map_err(|_| stopped())??;
            // Refused when something was forgotten meanwhile: loaded again.
            self.risk_book.lock().await.insert_loaded(epoch, loaded);
        }
    }

    async fn forget_before(&self, at_ms: i64) -> StoreResult<()> {
        let mut book = self.risk_book.lock().await;
        book.forget_before(at_ms);
        let log = self.risk_log.clone();
        let sweep = self
            .queue_early(move |c| lock(&log).forget(c, None, at_ms))
            .await?;
        drop(book);
        sweep.await.map_err(|_| stopped())?
    }

    async fn forget_rule_before(&self, rule: &str, at_ms: i64) -> StoreResult<()> {
        let rule = rule.to_string();
        let log = self.risk_log.clone();
        // The risk log's memory changes with its rows.
        self.call_once(move |c| lock(&log).forget(c, Some(&rule), at_ms))
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

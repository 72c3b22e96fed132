//! [`RiskLedger`] on PostgreSQL, shared by every instance: `take` is one
//! transaction that first locks each (rule, subject) it judges (a
//! transaction-scoped advisory lock, taken in one order so two requests
//! never wait for each other in a cycle), then counts and records. Two
//! instances judging the same card at its limit therefore take turns, and
//! the second sees the first's event: exactly the limit passes.

use super::*;
use crate::store::risk::{
    amounts_of, hit_count_row, judge, SQL_ADD, SQL_DISTINCT, SQL_FORGET, SQL_FORGET_RULE, SQL_HIT,
    SQL_HITS_OF_DAY, SQL_SWEEP, SQL_TOTALS,
};
use crate::store::{Hit, HitCount, Limit, RiskLedger};

#[async_trait]
impl RiskLedger for PostgresStore {
    async fn take(&self, limits: Vec<Limit>, now_ms: i64) -> StoreResult<Vec<usize>> {
        let amounts = amounts_of(&limits)?;
        let mut locks: Vec<String> = limits
            .iter()
            .map(|l| format!("{}\u{1f}{}", l.rule, l.subject))
            .collect();
        locks.sort();
        locks.dedup();
        let timeout = self.inner.options.timeout;
        let mut client = self.inner.pool.get().await.map_err(pool_error)?;
        bump(&self.inner.counters.round_trips, 1);
        let work = async {
            let tx = client.transaction().await?;
            for key in &locks {
                tx.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                    &[key],
                )
                .await?;
            }
            let mut totals = Vec::with_capacity(limits.len());
            for l in &limits {
                tx.execute(SQL_FORGET, &[&&*l.rule, &&*l.subject, &l.since_ms])
                    .await?;
                let row = match &l.distinct {
                    None => {
                        tx.query_one(SQL_TOTALS, &[&&*l.rule, &&*l.subject, &l.since_ms])
                            .await?
                    }
                    Some(value) => {
                        tx.query_one(SQL_DISTINCT, &[&&*l.rule, &&*l.subject, &l.since_ms, value])
                            .await?
                    }
                };
                let count: i64 = row.try_get(0)?;
                let sum: i64 = row.try_get(1)?;
                totals.push((count.max(0) as u64, sum.max(0) as u64));
            }
            let (exceeded, record) = judge(&limits, &totals);
            if record {
                for (l, amount) in limits.iter().zip(&amounts).filter(|(l, _)| l.record) {
                    let detail = l.distinct.as_deref().unwrap_or_default();
                    tx.execute(
                        SQL_ADD,
                        &[&&*l.rule, &&*l.subject, &now_ms, amount, &detail],
                    )
                    .await?;
                }
            }
            tx.commit().await?;
            Ok::<_, tokio_postgres::Error>(exceeded)
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(Ok(exceeded)) => {
                bump(&self.inner.counters.commits, 1);
                Ok(exceeded)
            }
            Ok(Err(e)) => Err(db(e)),
            Err(_) => {
                let _ = Object::take(client);
                Err(unavailable(format!(
                    "a risk check timed out after {timeout:?}"
                )))
            }
        }
    }

    async fn forget_before(&self, at_ms: i64) -> StoreResult<()> {
        self.read(SQL_SWEEP, &[&at_ms]).await.map(|_| ())
    }

    async fn forget_rule_before(&self, rule: &str, at_ms: i64) -> StoreResult<()> {
        self.read(SQL_FORGET_RULE, &[&rule, &at_ms])
            .await
            .map(|_| ())
    }

    async fn record_hits(&self, hits: Vec<Hit>) -> StoreResult<()> {
        for h in &hits {
            self.read(
                SQL_HIT,
                &[
                    &h.day,
                    &h.at_ms,
                    &h.rule,
                    &h.mode,
                    &h.code,
                    &h.card,
                    &h.institution,
                ],
            )
            .await?;
        }
        Ok(())
    }

    async fn hits_of_day(&self, day: &str) -> StoreResult<Vec<HitCount>> {
        let rows = self.read(SQL_HITS_OF_DAY, &[&day]).await?;
        rows.iter().map(hit_count_row).collect()
    }
}

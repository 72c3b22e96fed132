//! [`RiskLedger`] on SQLite: each `take` one command of the single writer,
//! so judging a limit and recording its event cannot interleave with
//! another request's.

use super::*;
use crate::store::risk::{
    amounts_of, hit_count_row, judge, SQL_ADD, SQL_DISTINCT, SQL_FORGET, SQL_HIT, SQL_HITS_OF_DAY,
    SQL_SWEEP, SQL_TOTALS,
};
use crate::store::{Hit, HitCount, Limit, RiskLedger};

#[async_trait]
impl RiskLedger for SqliteStore {
    async fn take(&self, limits: Vec<Limit>, now_ms: i64) -> StoreResult<Vec<usize>> {
        let amounts = amounts_of(&limits)?;
        self.call(move |c| {
            let mut totals = Vec::with_capacity(limits.len());
            for l in &limits {
                execute(
                    c,
                    &sqlite(SQL_FORGET),
                    params![l.rule, l.subject, l.since_ms],
                )?;
                let totals_of = |r: &Row| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?));
                let (count, sum) = match &l.distinct {
                    None => c.prepare_cached(&sqlite(SQL_TOTALS)).and_then(|mut s| {
                        s.query_row(params![l.rule, l.subject, l.since_ms], totals_of)
                    }),
                    Some(value) => c.prepare_cached(&sqlite(SQL_DISTINCT)).and_then(|mut s| {
                        s.query_row(params![l.rule, l.subject, l.since_ms, value], totals_of)
                    }),
                }
                .map_err(db)?;
                totals.push((count.max(0) as u64, sum.max(0) as u64));
            }
            let (exceeded, record) = judge(&limits, &totals);
            if record {
                for (l, amount) in limits.iter().zip(&amounts).filter(|(l, _)| l.record) {
                    execute(
                        c,
                        &sqlite(SQL_ADD),
                        params![
                            l.rule,
                            l.subject,
                            now_ms,
                            amount,
                            l.distinct.as_deref().unwrap_or_default()
                        ],
                    )?;
                }
            }
            Ok(exceeded)
        })
        .await
    }

    async fn forget_before(&self, at_ms: i64) -> StoreResult<()> {
        self.call(move |c| execute(c, &sqlite(SQL_SWEEP), params![at_ms]).map(|_| ()))
            .await
    }

    async fn record_hits(&self, hits: Vec<Hit>) -> StoreResult<()> {
        self.call(move |c| {
            for h in &hits {
                execute(
                    c,
                    &sqlite(SQL_HIT),
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
            query_all_with(c, &sqlite(SQL_HITS_OF_DAY), params![day], |r| {
                hit_count_row(r)
            })
        })
        .await
    }
}

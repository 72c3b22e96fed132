//! [`Maintenance`] on PostgreSQL: single statements on pooled connections
//! (each its own transaction), and resealing in transactions of one batch,
//! while the instances keep running: a value is replaced only if it is
//! still the one read (`AND column = $old`), so an instance that wrote the
//! row meanwhile keeps what it wrote.

use chrono::NaiveDate;

use super::*;
use crate::store::{ClearedDay, Maintenance, Resealed, RowKey, SealedColumn};

#[async_trait]
impl Maintenance for PostgresStore {
    async fn record_cleared(&self, date: NaiveDate, at_ms: i64) -> StoreResult<()> {
        self.read(
            "INSERT INTO cleared_days (date, cleared_at_ms) VALUES ($1, $2) \
             ON CONFLICT (date) DO UPDATE SET cleared_at_ms = excluded.cleared_at_ms",
            &[&date_text(date), &at_ms],
        )
        .await
        .map(|_| ())
    }

    async fn cleared_days(&self) -> StoreResult<Vec<ClearedDay>> {
        let rows = self.read(SQL_CLEARED_DAYS, &[]).await?;
        rows.iter().map(cleared_day_row).collect()
    }

    async fn mark_purge(&self, date: NaiveDate, at_ms: i64, done: bool) -> StoreResult<()> {
        self.read(mark_purge_sql(done), &[&date_text(date), &at_ms])
            .await
            .map(|_| ())
    }

    async fn purge_journal(&self, from_ms: i64, to_ms: i64, limit: usize) -> StoreResult<usize> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .read(
                "WITH purged AS (UPDATE journal SET raw = '\\x'::bytea WHERE id IN \
                 (SELECT id FROM journal WHERE at_ms >= $1 AND at_ms < $2 \
                  AND length(raw) > 0 ORDER BY at_ms LIMIT $3) RETURNING 1) \
                 SELECT count(*) FROM purged",
                &[&from_ms, &to_ms, &limit],
            )
            .await?;
        let n = rows.first().map(|r| r.bigint(0)).transpose()?.unwrap_or(0);
        Ok(usize::try_from(n).unwrap_or(0))
    }

    async fn reseal(
        &self,
        column: SealedColumn,
        after: Option<RowKey>,
        limit: usize,
    ) -> StoreResult<Resealed> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = reseal_sql(&column, |i| format!("${i}::text"), |i| format!("${i}"));
        let n = column.key.len();
        let timeout = self.inner.options.timeout;
        let mut client = self.inner.pool.get().await.map_err(pool_error)?;
        bump(&self.inner.counters.round_trips, 1);
        let work = async {
            let tx = client.transaction().await?;
            let rows = match &after {
                None => tx.query(&sql.first, &[&limit]).await?,
                Some(key) => {
                    let mut params: Vec<&(dyn ToSql + Sync)> =
                        key.iter().map(|k| k as &(dyn ToSql + Sync)).collect();
                    params.push(&limit);
                    tx.query(&sql.after, &params).await?
                }
            };
            let mut read: Vec<(RowKey, Vec<u8>)> = Vec::with_capacity(rows.len());
            for row in &rows {
                let key = (0..n)
                    .map(|i| row.try_get::<_, String>(i))
                    .collect::<Result<_, _>>()?;
                let value = if column.text {
                    row.try_get::<_, String>(n)?.into_bytes()
                } else {
                    row.try_get::<_, Vec<u8>>(n)?
                };
                read.push((key, value));
            }
            let mut resealed = 0;
            let update = tx.prepare(&sql.update).await?;
            for (key, value) in &read {
                let new = match reseal_value(&column, value) {
                    Ok(Some(new)) => new,
                    Ok(None) => continue,
                    Err(e) => return Ok(Err(e)),
                };
                let (new_text, old_text);
                let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(n + 2);
                if column.text {
                    new_text = String::from_utf8_lossy(&new).into_owned();
                    params.push(&new_text);
                } else {
                    params.push(&new);
                }
                for k in key {
                    params.push(k);
                }
                if column.text {
                    old_text = String::from_utf8_lossy(value).into_owned();
                    params.push(&old_text);
                } else {
                    params.push(value);
                }
                resealed += tx.execute(&update, &params).await? as usize;
            }
            tx.commit().await?;
            Ok(Ok(Resealed {
                read: read.len(),
                resealed,
                exhausted: (read.len() as i64) < limit,
                last: read.last().map(|(k, _)| k.clone()),
            }))
        };
        match tokio::time::timeout(timeout * 4, work).await {
            Ok(Ok(result)) => {
                bump(&self.inner.counters.commits, 1);
                result
            }
            Ok(Err(e)) => Err(db(e)),
            Err(_) => {
                let _ = Object::take(client);
                Err(unavailable(format!(
                    "a rekey batch timed out after {:?}",
                    timeout * 4
                )))
            }
        }
    }

    fn sealed_columns(&self) -> Vec<SealedColumn> {
        let mut columns = SEALED_COLUMNS.to_vec();
        columns.push(SAGA_RESPONSE);
        columns
    }
}

//! [`Maintenance`] on SQLite: each call one command of the writer thread,
//! so a purge or a rekey batch holds the writer for one bounded statement
//! set and the switch's commands run between them.

use chrono::NaiveDate;
use rusqlite::types::{Value, ValueRef};

use super::saga_packs;
use super::*;
use crate::store::{ClearedDay, Maintenance, Resealed, RowKey, SealedColumn};

#[async_trait]
impl Maintenance for SqliteStore {
    async fn record_cleared(&self, date: NaiveDate, at_ms: i64) -> StoreResult<()> {
        let date = date_text(date);
        self.call(move |c| {
            execute(
                c,
                "INSERT INTO cleared_days (date, cleared_at_ms) VALUES (?1, ?2) \
                 ON CONFLICT (date) DO UPDATE SET cleared_at_ms = excluded.cleared_at_ms",
                params![date, at_ms],
            )
            .map(|_| ())
        })
        .await
    }

    async fn cleared_days(&self) -> StoreResult<Vec<ClearedDay>> {
        self.call(|c| query_all(c, SQL_CLEARED_DAYS, |row| cleared_day_row(row)))
            .await
    }

    async fn mark_purge(&self, date: NaiveDate, at_ms: i64, done: bool) -> StoreResult<()> {
        let date = date_text(date);
        // SQLite numbers `$N` parameters in order of appearance: `?N` it is.
        let sql = mark_purge_sql(done).replace('$', "?");
        self.call(move |c| execute(c, &sql, params![date, at_ms]).map(|_| ()))
            .await
    }

    async fn purge_journal(&self, from_ms: i64, to_ms: i64, limit: usize) -> StoreResult<usize> {
        self.call(move |c| {
            // Freed space is overwritten with zeros, not left for a file
            // reader to find: only for the purge, which is what frees it.
            c.pragma_update(None, "secure_delete", true).map_err(db)?;
            let purged = super::journal::purge(c, from_ms, to_ms, limit);
            c.pragma_update(None, "secure_delete", false).map_err(db)?;
            purged
        })
        .await
    }

    async fn reseal(
        &self,
        column: SealedColumn,
        after: Option<RowKey>,
        limit: usize,
    ) -> StoreResult<Resealed> {
        // A pack is opened whole, with up to a pruning's sagas in it: fewer
        // a batch keep the memory a batch holds to a few MB.
        let limit = if column.table == SAGA_PACKS_BODY.table {
            limit.min(PACKS_A_BATCH)
        } else {
            limit
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.call(move |c| {
            let sql = reseal_sql(&column, |i| format!("?{i}"), |i| format!("?{i}"));
            let n = column.key.len();
            let mut stmt = match &after {
                None => c.prepare(&sql.first),
                Some(_) => c.prepare(&sql.after),
            }
            .map_err(db)?;
            let mut params: Vec<Value> = after
                .iter()
                .flatten()
                .map(|k| Value::Text(k.clone()))
                .collect();
            params.push(Value::Integer(limit));
            let mut rows = stmt.query(rusqlite::params_from_iter(params)).map_err(db)?;
            let mut read: Vec<(RowKey, Vec<u8>)> = Vec::new();
            while let Some(row) = rows.next().map_err(db)? {
                let key = (0..n)
                    .map(|i| row.text(i))
                    .collect::<StoreResult<RowKey>>()?;
                let value = match row.get_ref(n).map_err(db)? {
                    ValueRef::Text(b) | ValueRef::Blob(b) => b.to_vec(),
                    other => {
                        return Err(corrupt(format!(
                            "{}: a value of type {:?}",
                            column.name(),
                            other.data_type()
                        )))
                    }
                };
                read.push((key, value));
            }
            drop(rows);
            drop(stmt);
            let mut resealed = 0;
            for (key, value) in &read {
                let fresh = if column.table == SAGA_PACKS_BODY.table {
                    let id = key[0]
                        .parse()
                        .map_err(|_| corrupt(format!("saga pack id {:?}", key[0])))?;
                    saga_packs::reseal_body(id, value)?
                } else {
                    reseal_value(&column, value)?
                };
                let Some(new) = fresh else {
                    continue;
                };
                let as_value = |bytes: &[u8]| -> Value {
                    if column.text {
                        Value::Text(String::from_utf8_lossy(bytes).into_owned())
                    } else {
                        Value::Blob(bytes.to_vec())
                    }
                };
                let mut params = vec![as_value(&new)];
                params.extend(key.iter().map(|k| Value::Text(k.clone())));
                params.push(as_value(value));
                resealed += c
                    .prepare_cached(&sql.update)
                    .and_then(|mut s| s.execute(rusqlite::params_from_iter(params)))
                    .map_err(db)?;
            }
            Ok(Resealed {
                read: read.len(),
                resealed,
                exhausted: (read.len() as i64) < limit,
                last: read.last().map(|(k, _)| k.clone()),
            })
        })
        .await
    }

    fn sealed_columns(&self) -> Vec<SealedColumn> {
        let mut columns = SEALED_COLUMNS.to_vec();
        columns.push(SAGA_RESPONSE);
        columns.push(SealedColumn {
            table: "journal_packs",
            key: &["id"],
            column: "raws",
            purpose: sealed::JOURNAL_PACK_RAWS,
            text: false,
        });
        columns.push(SAGA_PACKS_BODY);
        columns
    }
}

/// The most saga packs one batch of `rekey` reads (each some 100 KB
/// stored, the values in it sealed one by one, and opened whole).
const PACKS_A_BATCH: usize = 16;

/// The packs of ended sagas (`saga_packs.rs`): their bodies hold receivers'
/// PANs and answers sealed one by one, which [`saga_packs::reseal_body`]
/// seals anew.
const SAGA_PACKS_BODY: SealedColumn = SealedColumn {
    table: "saga_packs",
    key: &["id"],
    column: "body",
    purpose: sealed::RECEIVER_PAN,
    text: false,
};

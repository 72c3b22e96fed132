//! Reading SQLite rows: the query helpers every command uses, and
//! [`Columns`] for `rusqlite::Row`, through which the shared readers of
//! `store/columns.rs` turn rows into freezes, sagas, queue and journal entries.

use rusqlite::types::ValueRef;

use super::*;

// ---------------------------------------------------------------------------
// Rows

/// A key part bound as the text it is, borrowed (no copy for SQLite).
impl rusqlite::ToSql for KeyText {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(rusqlite::types::ToSqlOutput::Borrowed(ValueRef::Text(
            self.as_bytes(),
        )))
    }
}

impl Columns for Row<'_> {
    fn text(&self, idx: usize) -> StoreResult<String> {
        self.get(idx).map_err(db)
    }

    fn opt_text(&self, idx: usize) -> StoreResult<Option<String>> {
        self.get(idx).map_err(db)
    }

    fn bigint(&self, idx: usize) -> StoreResult<i64> {
        self.get(idx).map_err(db)
    }

    fn opt_bigint(&self, idx: usize) -> StoreResult<Option<i64>> {
        self.get(idx).map_err(db)
    }

    fn int(&self, idx: usize) -> StoreResult<i64> {
        self.get(idx).map_err(db)
    }

    fn blob(&self, idx: usize) -> StoreResult<Vec<u8>> {
        self.with_blob(idx, |blob| Ok(blob.to_vec()))
    }

    // Borrowed where the value is what is asked for; anything else goes the
    // owned way, for the same error.
    fn with_str<T>(&self, idx: usize, read: impl FnOnce(&str) -> StoreResult<T>) -> StoreResult<T> {
        if let Ok(ValueRef::Text(bytes)) = self.get_ref(idx) {
            if let Ok(text) = std::str::from_utf8(bytes) {
                return read(text);
            }
        }
        read(&self.text(idx)?)
    }

    fn with_opt_str<T>(
        &self,
        idx: usize,
        read: impl FnOnce(Option<&str>) -> StoreResult<T>,
    ) -> StoreResult<T> {
        match self.get_ref(idx) {
            Ok(ValueRef::Null) => return read(None),
            Ok(ValueRef::Text(bytes)) => {
                if let Ok(text) = std::str::from_utf8(bytes) {
                    return read(Some(text));
                }
            }
            _ => {}
        }
        read(self.opt_text(idx)?.as_deref())
    }

    fn with_blob<T>(
        &self,
        idx: usize,
        read: impl FnOnce(&[u8]) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let blob = self
            .get_ref(idx)
            .map_err(db)?
            .as_blob()
            .map_err(|e| corrupt(format!("column {idx}: {e}")))?;
        read(blob)
    }
}

// ---------------------------------------------------------------------------
// Queries

/// SQL shared with PostgreSQL (`$N` parameters) with SQLite's `?N` ones.
pub(super) fn sqlite(sql: &str) -> String {
    sql.replace('$', "?")
}

pub(super) fn query_opt<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    decode: impl FnOnce(&Row) -> StoreResult<T>,
) -> StoreResult<Option<T>> {
    let mut stmt = conn.prepare_cached(sql).map_err(db)?;
    let mut rows = stmt.query(params).map_err(db)?;
    match rows.next().map_err(db)? {
        Some(row) => decode(row).map(Some),
        None => Ok(None),
    }
}

pub(super) fn query_all<T>(
    conn: &Connection,
    sql: &str,
    decode: impl Fn(&Row) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    query_all_with(conn, sql, [], decode)
}

pub(super) fn query_all_with<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    decode: impl Fn(&Row) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql).map_err(db)?;
    let mut rows = stmt.query(params).map_err(db)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(db)? {
        out.push(decode(row)?);
    }
    Ok(out)
}

pub(super) fn execute(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> StoreResult<usize> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute(params))
        .map_err(db)
}

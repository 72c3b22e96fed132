//! Reading SQLite rows: the query helpers every command uses, and
//! [`Columns`] for `rusqlite::Row`, through which the shared readers of
//! `store/columns.rs` turn rows into freezes, sagas, queue and journal entries.

use rusqlite::types::ValueRef;

use super::*;

// ---------------------------------------------------------------------------
// Rows

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

// ---------------------------------------------------------------------------
// Clearing's journal

/// Appends a journal row, in [`journal_columns!`] order, to `slice`,
/// borrowing its columns rather than copying each into a `String`; its raw
/// message is read (and opened, when sealed) only when `raw` keeps it.
pub(super) fn journal_row_into(
    row: &Row<'_>,
    raw: RawMessages,
    slice: &mut JournalSliceBuilder,
) -> StoreResult<()> {
    // The text columns' bytes, checked to be UTF-8 once for the whole slice
    // by the builder rather than here, column by column.
    let opt_text = |idx: usize| -> StoreResult<Option<&[u8]>> {
        match row.get_ref(idx).map_err(db)? {
            ValueRef::Text(bytes) => Ok(Some(bytes)),
            ValueRef::Null => Ok(None),
            other => Err(corrupt(format!(
                "journal column {idx}: {:?} where text was expected",
                other.data_type()
            ))),
        }
    };
    let text = |idx: usize| -> StoreResult<&[u8]> {
        opt_text(idx)?.ok_or_else(|| corrupt(format!("journal column {idx} is null")))
    };
    let direction = match text(1)? {
        b"in" => Direction::In,
        b"out" => Direction::Out,
        other => {
            return Err(corrupt(format!(
                "journal direction {:?}",
                String::from_utf8_lossy(other)
            )))
        }
    };
    // As written: four characters, not necessarily digits.
    let mti = <[u8; 4]>::try_from(text(3)?).unwrap_or(*b"????");
    let amount: Option<i64> = row.get(10).map_err(db)?;
    let columns = JournalColumns {
        at_ms: row.get(0).map_err(db)?,
        direction,
        peer: text(2)?,
        mti,
        processing_code: opt_text(4)?,
        stan: opt_text(5)?,
        transmission: opt_text(6)?,
        acquirer: opt_text(7)?,
        response_code: opt_text(8)?,
        pan_masked: opt_text(9)?,
        amount_minor: amount.and_then(|a| u64::try_from(a).ok()),
        note: opt_text(11)?,
    };
    if !raw.keeps(&mti) {
        return slice.push_bytes(columns, None);
    }
    let stored = row
        .get_ref(12)
        .map_err(db)?
        .as_blob()
        .map_err(|e| corrupt(format!("journal column 12: {e}")))?;
    if stored.starts_with(&crate::vault::SEALED_MAGIC) {
        let plain = crate::vault::open_bytes(sealed::JOURNAL_RAW, stored)
            .map_err(|e| unsealed(sealed::JOURNAL_RAW, e))?;
        slice.push_bytes(columns, Some(&plain))
    } else {
        slice.push_bytes(columns, Some(stored))
    }
}

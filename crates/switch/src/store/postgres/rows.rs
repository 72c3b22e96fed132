//! The PostgreSQL side of the shared column helpers (`store/columns.rs`):
//! [`Columns`] for `tokio_postgres::Row`, key columns pushed as statement
//! parameters, and the store-and-forward arrays the statements `unnest`.

use super::*;
use crate::store::columns::sealed;
use crate::vault;

// ---------------------------------------------------------------------------
// Rows and parameters

/// Reading a column: a value of the wrong type or a NULL where none may be is
/// `Corrupt`.
fn col<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, idx: usize) -> StoreResult<T> {
    row.try_get::<_, T>(idx)
        .map_err(|e| corrupt(format!("column {idx}: {e}")))
}

/// A key part bound as text, as a `&str` is.
impl tokio_postgres::types::ToSql for KeyText {
    fn to_sql(
        &self,
        ty: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        self.as_str().to_sql(ty, out)
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        <&str as tokio_postgres::types::ToSql>::accepts(ty)
    }

    tokio_postgres::types::to_sql_checked!();
}

impl Columns for Row {
    fn text(&self, idx: usize) -> StoreResult<String> {
        col(self, idx)
    }

    fn opt_text(&self, idx: usize) -> StoreResult<Option<String>> {
        col(self, idx)
    }

    fn bigint(&self, idx: usize) -> StoreResult<i64> {
        col(self, idx)
    }

    fn opt_bigint(&self, idx: usize) -> StoreResult<Option<i64>> {
        col(self, idx)
    }

    fn int(&self, idx: usize) -> StoreResult<i64> {
        col::<i32>(self, idx).map(i64::from)
    }

    fn blob(&self, idx: usize) -> StoreResult<Vec<u8>> {
        col(self, idx)
    }
}

/// Key columns as text parameters, in column order.
fn push_texts(params: &mut Params, columns: &[KeyText]) {
    for c in columns {
        params.push(Box::new(c.clone()));
    }
}

impl ReqCols {
    pub(super) fn push(&self, params: &mut Params) {
        push_texts(params, &self.0);
    }
}

impl FreezeCols {
    pub(super) fn push(&self, params: &mut Params) {
        push_texts(params, &self.0);
    }
}

/// Store-and-forward entries as five parallel arrays, for `unnest`.
pub(super) fn push_saf(params: &mut Params, entries: &[&NewSafEntry]) {
    params.push(Box::new(
        entries.iter().map(|e| e.bank.clone()).collect::<Vec<_>>(),
    ));
    params.push(Box::new(
        entries
            .iter()
            .map(|e| e.order_key.clone())
            .collect::<Vec<_>>(),
    ));
    params.push(Box::new(
        entries
            .iter()
            .map(|e| e.kind.as_str().to_string())
            .collect::<Vec<_>>(),
    ));
    params.push(Box::new(
        entries
            .iter()
            .map(|e| vault::seal_bytes(sealed::SAF_MESSAGE, &e.message))
            .collect::<Vec<_>>(),
    ));
    params.push(Box::new(
        entries.iter().map(|e| e.created_at_ms).collect::<Vec<_>>(),
    ));
}

/// Inserts the store-and-forward entries given as parameters `$a..$a+4` (five
/// arrays, see [`push_saf`]), in their order, when `$cond` holds.
macro_rules! saf_insert {
    ($a:literal, $b:literal, $c:literal, $d:literal, $e:literal, $cond:literal) => {
        concat!(
            "INSERT INTO saf (bank, order_key, kind, message, created_at_ms, state, next_attempt_ms) \
             SELECT t.bank, t.order_key, t.kind, t.message, t.created_at_ms, 'pending', t.created_at_ms \
             FROM unnest(", $a, "::text[], ", $b, "::text[], ", $c, "::text[], ", $d, "::bytea[], ",
            $e, "::bigint[]) WITH ORDINALITY AS t(bank, order_key, kind, message, created_at_ms, n) \
             WHERE ", $cond, " ORDER BY t.n"
        )
    };
}

//! What the admin listener's operator actions need of SQLite: the audit
//! log ([`AuditLog`]) and putting a dead store-and-forward entry back
//! ([`SafQueue::saf_retry`], called from `traits.rs`). Both are commands of
//! the single writer.

use super::*;
use crate::store::audit::{audit_row, read_limit, SQL_AUDIT_INSERT, SQL_AUDIT_LATEST};
use crate::store::saf::{saf_retry_of, SQL_SAF_RETRY, SQL_SAF_STATE};
use crate::store::{AuditEntry, AuditLog, AuditRecord, SafRetry};

#[async_trait]
impl AuditLog for SqliteStore {
    async fn audit(&self, e: AuditEntry) -> StoreResult<()> {
        self.call(move |c| {
            execute(
                c,
                &sqlite(SQL_AUDIT_INSERT),
                params![e.at_ms, e.who, e.action, e.target, e.result, e.reason],
            )
            .map(|_| ())
        })
        .await
    }

    async fn audit_latest(&self, limit: usize) -> StoreResult<Vec<AuditRecord>> {
        let limit = read_limit(limit);
        self.read(move |c| {
            query_all_with(c, &sqlite(SQL_AUDIT_LATEST), params![limit], |r| {
                audit_row(r)
            })
        })
        .await
    }
}

pub(super) fn saf_retry(conn: &Connection, id: i64, now_ms: i64) -> StoreResult<SafRetry> {
    let changed = query_opt(conn, &sqlite(SQL_SAF_RETRY), params![id, now_ms], |r| {
        r.bigint(0)
    })?
    .is_some();
    let state = if changed {
        None
    } else {
        query_opt(conn, &sqlite(SQL_SAF_STATE), params![id], |r| r.text(0))?
    };
    saf_retry_of(changed, state)
}

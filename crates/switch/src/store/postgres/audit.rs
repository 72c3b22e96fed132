//! What the admin listener's operator actions need of PostgreSQL: the audit
//! log ([`AuditLog`]) and putting a dead store-and-forward entry back
//! ([`SafQueue::saf_retry`], called from `traits.rs`). Both are rare: each
//! is one statement on a pooled connection, outside the write lanes.

use super::*;
use crate::store::audit::{audit_row, read_limit, SQL_AUDIT_INSERT, SQL_AUDIT_LATEST};
use crate::store::saf::{saf_retry_of, SQL_SAF_RETRY, SQL_SAF_STATE};
use crate::store::{AuditEntry, AuditLog, AuditRecord, SafRetry};

#[async_trait]
impl AuditLog for PostgresStore {
    async fn audit(&self, e: AuditEntry) -> StoreResult<()> {
        self.read(
            SQL_AUDIT_INSERT,
            &[&e.at_ms, &e.who, &e.action, &e.target, &e.result, &e.reason],
        )
        .await
        .map(|_| ())
    }

    async fn audit_latest(&self, limit: usize) -> StoreResult<Vec<AuditRecord>> {
        let rows = self.read(SQL_AUDIT_LATEST, &[&read_limit(limit)]).await?;
        rows.iter().map(audit_row).collect()
    }
}

impl PostgresStore {
    pub(super) async fn retry_dead(&self, id: i64, now_ms: i64) -> StoreResult<SafRetry> {
        let changed = !self.read(SQL_SAF_RETRY, &[&id, &now_ms]).await?.is_empty();
        let state = if changed {
            None
        } else {
            let rows = self.read(SQL_SAF_STATE, &[&id]).await?;
            rows.first().map(|r| r.text(0)).transpose()?
        };
        saf_retry_of(changed, state)
    }
}

//! The audit log: every operator action the admin listener was asked for
//! (who, when, what, on what, how it ended and why), refused ones and failed
//! token checks included, so that what people did to a running switch can be
//! read back later (`GET /api/audit`, `switchboard audit`).
//!
//! Rows are small and bounded: every text is cut to [`MAX_TEXT`] characters
//! before it is stored, and no token is ever part of one. The SQL stores keep
//! every row (`audit_log`); the memory store keeps the last
//! [`MEMORY_ROWS`].

use async_trait::async_trait;

use super::StoreResult;

/// The longest text of a row, in characters; longer ones are cut.
pub const MAX_TEXT: usize = 256;
/// The rows the memory store keeps.
pub const MEMORY_ROWS: usize = 1000;
/// The most rows one read returns.
pub const MAX_READ: usize = 1000;

/// One action attempt, as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    pub at_ms: i64,
    /// Who asked: the token's role and the peer's address, and the name the
    /// operator gave (`X-Operator`), if any.
    pub who: String,
    /// What was asked: `saf.retry`, `bank.sign-off`, `drain`, `auth`...
    pub action: String,
    /// On what: an entry id, a bank; empty when the action has no target.
    pub target: String,
    /// `ok`, `refused`, `failed`, `unauthorized`...
    pub result: String,
    pub reason: String,
}

impl AuditEntry {
    /// An entry with every text cut to [`MAX_TEXT`] characters.
    pub fn new(
        at_ms: i64,
        who: &str,
        action: &str,
        target: &str,
        result: &str,
        reason: &str,
    ) -> Self {
        AuditEntry {
            at_ms,
            who: bounded(who),
            action: bounded(action),
            target: bounded(target),
            result: bounded(result),
            reason: bounded(reason),
        }
    }
}

/// A stored row: its id (increasing) and what was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    pub id: i64,
    pub entry: AuditEntry,
}

/// `text` cut to [`MAX_TEXT`] characters, control characters made spaces
/// (a row is printed on one line).
pub fn bounded(text: &str) -> String {
    text.chars()
        .take(MAX_TEXT)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Where operator actions are recorded.
#[async_trait]
pub trait AuditLog: Send + Sync + 'static {
    /// Writes one row; returns once it is stored.
    async fn audit(&self, entry: AuditEntry) -> StoreResult<()>;

    /// The latest `limit` rows (at most [`MAX_READ`]), newest first.
    async fn audit_latest(&self, limit: usize) -> StoreResult<Vec<AuditRecord>>;
}

/// `$1`..`$6`: the fields of an [`AuditEntry`], in order.
pub(super) const SQL_AUDIT_INSERT: &str =
    "INSERT INTO audit_log (at_ms, who, action, target, result, reason) \
     VALUES ($1, $2, $3, $4, $5, $6)";

/// `$1`: how many rows.
pub(super) const SQL_AUDIT_LATEST: &str =
    "SELECT id, at_ms, who, action, target, result, reason FROM audit_log \
     ORDER BY id DESC LIMIT $1";

/// Reads a row of [`SQL_AUDIT_LATEST`].
pub(super) fn audit_row(r: &impl super::columns::Columns) -> StoreResult<AuditRecord> {
    Ok(AuditRecord {
        id: r.bigint(0)?,
        entry: AuditEntry {
            at_ms: r.bigint(1)?,
            who: r.text(2)?,
            action: r.text(3)?,
            target: r.text(4)?,
            result: r.text(5)?,
            reason: r.text(6)?,
        },
    })
}

/// A read's row count, as the SQL stores take it.
pub(super) fn read_limit(limit: usize) -> i64 {
    limit.min(MAX_READ) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_cut_and_kept_on_one_line() {
        let long = "é".repeat(MAX_TEXT + 10);
        let e = AuditEntry::new(1, &long, "a\nb", "", "ok", "why\r");
        assert_eq!(e.who.chars().count(), MAX_TEXT);
        assert_eq!(e.action, "a b");
        assert_eq!(e.reason, "why ");
    }
}

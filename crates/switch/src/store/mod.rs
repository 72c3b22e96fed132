//! The switch's durable state: freezes, receive sagas, the answers given (for
//! idempotent resends), STAN allocation, the store-and-forward queue, a
//! journal of every message in and out, and, in a store shared by several
//! instances, their leases.
//!
//! Every method that changes money state is one atomic transaction in the
//! store, and returns only once it is durable: the switch never answers a
//! wallet before the state behind the answer is committed. Implementations
//! batch concurrent calls into shared commits (group commit).
//!
//! The store is several small traits, one per module, and [`Store`] their
//! sum, which the switch holds:
//!
//! - [`Decisions`] (`decisions.rs`): freezes and sagas, answers, STANs;
//! - [`SafQueue`] (`saf.rs`): the store-and-forward queue;
//! - [`JournalSink`] (`journal.rs`): the journal;
//! - [`History`] (`history.rs`): what clearing, recovery and inspection read
//!   (clearing's journal packed a slice at a time, `journal_slice.rs`);
//! - [`Leases`] (`leases.rs`): only in a store shared by instances, reached
//!   through [`Store::leases`];
//! - [`Maintenance`] (`maintenance.rs`): cleared days, the journal's
//!   retention and resealing card data under a new key; only in the SQL
//!   stores, reached through [`Store::maintenance`];
//! - [`RiskLedger`] (`risk.rs`): what the risk rules count, and their hits;
//! - [`AuditLog`] (`audit.rs`): the operator actions asked of the admin
//!   listener.
//!
//! The implementations: [`memory`] (the model the simulation trusts),
//! [`sqlite`] (the embedded default) and [`postgres`] (shared by instances).
//! Only `store::sqlite` knows about SQLite, only `store::postgres` about
//! PostgreSQL; what the two share about their columns (key columns, amounts,
//! the readers of stored records) is written once, in `columns.rs`.

#[macro_use]
mod columns;
pub mod audit;
pub mod decisions;
#[cfg(test)]
pub mod failing;
pub mod history;
pub mod journal;
pub mod journal_slice;
pub mod leases;
pub mod maintenance;
pub mod memory;
pub mod postgres;
pub mod risk;
pub mod risk_book;
pub mod risk_window;
pub mod saf;
pub mod sqlite;

use std::sync::Arc;

use bytes::Bytes;

use crate::dialect::InstitutionId;

pub use audit::{AuditEntry, AuditLog, AuditRecord};
pub use decisions::{
    Close, Decisions, FollowUp, FreezeRecord, FreezeState, InsertFreeze, NewFreeze, NewReceive,
    ReceiveOutcome, Recorded, Reserve, SagaRecord, SagaState, SentMessage, Settled,
};
pub use history::History;
pub use journal::{Direction, JournalEntry, JournalSink};
pub use journal_slice::{JournalColumns, JournalSlice, JournalView, RawMessages};
pub use leases::{ExpiredLease, Lease, Leases, Unfinished};
pub use maintenance::{ClearedDay, Maintenance, Resealed, RowKey, SealedColumn};
pub use risk::{Hit, HitCount, Limit, RiskLedger};
pub use saf::{NewSafEntry, SafEntry, SafKind, SafOutcome, SafQueue, SafRetry, SafState};

/// Identifies one request of a wallet for idempotency: the request MTI with the
/// repeat bit cleared (0121 → 0120), F32, F7 and F11.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct RequestKey {
    pub mti: [u8; 4],
    pub acquirer: InstitutionId,
    pub transmission: [u8; 10],
    pub stan: [u8; 6],
}

impl RequestKey {
    /// The key of the freeze a freeze request (0100) under this key makes.
    pub fn freeze_key(&self) -> crate::dialect::FreezeKey {
        crate::dialect::FreezeKey {
            acquirer: self.acquirer,
            transmission: self.transmission,
            stan: self.stan,
        }
    }
}

impl std::fmt::Display for RequestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}",
            std::str::from_utf8(&self.mti).unwrap_or("?"),
            self.acquirer,
            std::str::from_utf8(&self.transmission).unwrap_or("?"),
            std::str::from_utf8(&self.stan).unwrap_or("?")
        )
    }
}

/// The answer given to a request, kept so that an exact resend gets it again and a
/// resend with other content gets 94.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct StoredAnswer {
    /// Digest of the request's content (every field but the MTI's repeat bit).
    pub request_digest: [u8; 32],
    /// The response message exactly as sent (codec bytes, without framing).
    pub response: Bytes,
}

impl StoredAnswer {
    /// Its field 39, if the response parses in `spec`: the column the stores
    /// keep beside the response. Read without making a `Message` of the
    /// whole response (the receive's end runs this for every receive).
    pub fn response_code(&self, spec: &iso8583::spec::Spec) -> Option<String> {
        use iso8583::fields::num::RESPONSE_CODE;
        let fields = iso8583::codec::parse_fields(spec, &self.response, [RESPONSE_CODE]).ok()?;
        let code = std::str::from_utf8(fields.get(RESPONSE_CODE)?).ok()?;
        Some(code.to_owned())
    }
}

/// Store failures: the switch answers 96 and keeps state consistent.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or cannot write now; trying again later
    /// may work.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// What the store holds cannot be read back as what it should be.
    #[error("store data corrupt: {0}")]
    Corrupt(String),
    /// The caller asked for something the store cannot hold or do: a value
    /// out of range or not digits, a step the stored state does not allow.
    /// Trying again will not help.
    #[error("invalid request to the store: {0}")]
    Invalid(String),
    /// Another process works on the store and holds it exclusively (an
    /// embedded store that `serve` has open, when `recover` is run).
    #[error("store in use: {0}")]
    InUse(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Everything the switch needs from durable storage.
pub trait Store: Decisions + SafQueue + JournalSink + History + RiskLedger + AuditLog {
    /// The store's leases when it is shared by several instances (which
    /// then each hold a lease on their work); `None` for a store one
    /// instance uses alone, where everything unfinished is a crash's.
    fn leases(self: Arc<Self>) -> Option<Arc<dyn Leases>>;

    /// The store's maintenance (cleared days, retention, rekey); `None` for
    /// a store that keeps nothing for long (the in-memory model).
    fn maintenance(self: Arc<Self>) -> Option<Arc<dyn Maintenance>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use iso8583::codec::{build_bytes, Message};
    use iso8583::spec::Spec;

    use super::StoredAnswer;

    fn answer_of(response: Bytes) -> StoredAnswer {
        StoredAnswer {
            request_digest: [0; 32],
            response,
        }
    }

    #[test]
    fn a_stored_answers_response_code_is_its_field_39() {
        let spec = Spec::switchboard();
        let mut response = Message::new(*b"0210");
        response.set(11, "000001").set(39, "51");
        let with_code = answer_of(build_bytes(&spec, &response).unwrap());
        assert_eq!(with_code.response_code(&spec).as_deref(), Some("51"));
        response.remove(39);
        let without = answer_of(build_bytes(&spec, &response).unwrap());
        assert_eq!(without.response_code(&spec), None);
        let garbage = answer_of(Bytes::from_static(b"0210\xff\xff"));
        assert_eq!(garbage.response_code(&spec), None);
    }
}

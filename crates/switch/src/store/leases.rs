//! Leases: how instances sharing one store (PostgreSQL) hold their work. A
//! store used by one instance alone keeps none; the switch reaches this trait
//! through [`super::Store::leases`], which says whether the store has them.

use async_trait::async_trait;

use super::{FreezeRecord, SagaRecord, StoreResult};

/// A switch instance's claim on the work it owns in a store shared by several
/// instances. While the lease runs no other instance touches that work; once
/// it has expired (the instance died, or lost the store for longer than the
/// lease), any instance may recover it by the crash-recovery rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub instance: String,
    pub duration_ms: i64,
    /// Everything the instance has not finished was created at or after this
    /// (its own clock): recovery reads the dead instance's work from here
    /// rather than scanning every freeze and saga it ever handled.
    pub unfinished_since_ms: i64,
}

/// A lease that ran out: its instance's unfinished work is up for recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpiredLease {
    pub instance: String,
    pub unfinished_since_ms: i64,
}

/// The unfinished work of one instance: freezes still pending, sagas not
/// ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unfinished {
    pub freezes: Vec<FreezeRecord>,
    pub sagas: Vec<SagaRecord>,
}

/// The leases of a store shared by several instances.
#[async_trait]
pub trait Leases: Send + Sync + 'static {
    /// Records that `lease.instance` is alive until `duration_ms` from now,
    /// and from when its unfinished work dates. A store shared over the
    /// network measures leases by its own clock, so instances whose clocks
    /// differ still agree; a store in one process by `now_ms`.
    async fn renew_lease(&self, lease: &Lease, now_ms: i64) -> StoreResult<()>;

    /// Leases that ran out more than `grace_ms` ago and have not been
    /// dropped. The grace lets whatever the dead instance sent just before
    /// its lease ended reach the bank before any reversal of it does.
    async fn expired_leases(&self, now_ms: i64, grace_ms: i64) -> StoreResult<Vec<ExpiredLease>>;

    /// Drops an instance's lease once its work is recovered, if it is still
    /// expired (an instance that came back renewed it and keeps it).
    async fn drop_lease(&self, instance: &str, now_ms: i64) -> StoreResult<()>;

    /// Freezes still pending and sagas not ended that `owner` started at or
    /// after `since_ms`.
    async fn unfinished_of(&self, owner: &str, since_ms: i64) -> StoreResult<Unfinished>;
}

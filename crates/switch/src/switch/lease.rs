//! This instance's lease on its work, and the round that keeps it.
//!
//! Every freeze and receive saga is recorded with the instance that runs it.
//! On a store shared by several instances, each instance keeps a lease there,
//! renewed every third of its duration, together with a watermark: the
//! creation time of its oldest unfinished work. While the lease runs, nobody
//! else touches that work. When an instance dies its lease runs out, and the
//! next instance to look recovers the dead one's unfinished work by the
//! crash-recovery rules, reading only from the watermark on.
//!
//! Recovering a peer that is in fact alive but was cut off from the store for
//! longer than its lease must not move money twice:
//! - an instance sends no debit, credit or freeze once its lease has run out
//!   by its own clock (measured from before the renewal was sent, so it ends
//!   no later than the store's);
//! - recovery waits a grace longer than any bank timeout after the lease
//!   expired, so what the instance sent before reaches the bank (or times
//!   out) before a reversal of it is queued;
//! - ending a saga is one guarded statement, so whoever ends it first wins;
//!   the loser finds it ended ([`crate::store::Settled::Before`]) and answers
//!   the wallet with what was recorded (91 when recovery failed it, its
//!   reversals queued), never with its own 00.
//!
//! Work this instance abandons — a store error while ending it, a task that
//! stopped half-way — is settled here too, once its task is gone, rather than
//! waiting for the next start.
//!
//! Which work is unfinished is `work.rs`'s; what is done with a dead
//! instance's work is `recovery.rs`'s.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::work::Task;
use super::{recovery, Switch};
use crate::store::{FreezeState, Lease, StoreError};

/// How far before its oldest unfinished work an instance's watermark is put:
/// room for the wall clock stepping back a little between two readings.
const CLOCK_SLACK_MS: i64 = 60_000;

/// How this instance holds its work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeasePolicy {
    /// Whether other instances share the store (PostgreSQL). Without, there
    /// is no lease to keep and nobody to recover: only abandoned work is
    /// settled.
    pub shared: bool,
    pub duration: Duration,
    /// How long after a peer's lease expired its work is recovered: longer
    /// than the longest bank timeout.
    pub grace: Duration,
}

/// Until when this instance may send: the end of the lease it last renewed,
/// on the monotonic clock (leases are about time elapsing, which the
/// business clock — settable for tests and demos — does not measure).
/// Unbounded while the store is not shared.
#[derive(Default)]
pub struct LeaseClock(Mutex<Option<Instant>>);

impl LeaseClock {
    pub fn holds(&self) -> bool {
        let until = *self.0.lock().unwrap_or_else(|p| p.into_inner());
        match until {
            None => true,
            Some(until) => Instant::now() < until,
        }
    }

    fn set(&self, until: Instant) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(until);
    }
}

/// Keeps this instance's lease, recovers expired ones and settles abandoned
/// work, every third of the lease, until `shutdown`. The first round runs at
/// once.
pub async fn run(switch: std::sync::Arc<Switch>, policy: LeasePolicy, shutdown: CancellationToken) {
    let every = (policy.duration / 3).max(Duration::from_millis(10));
    loop {
        round(&switch, policy).await;
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => break,
        }
    }
}

/// One round of [`run`]; errors are logged and the next round tries again.
pub async fn round(switch: &Switch, policy: LeasePolicy) {
    if let Err(e) = settle_abandoned(switch).await {
        warn!(error = %e, "abandoned work not settled yet");
    }
    if !policy.shared {
        return;
    }
    if let Err(e) = renew(switch, policy.duration).await {
        warn!(error = %e, "lease not renewed");
    }
    match recovery::take_over_expired(switch, policy.grace).await {
        Ok(done) if done != recovery::Recovered::default() => {
            info!(?done, "work of instances whose lease expired recovered")
        }
        Ok(_) => {}
        Err(e) => warn!(error = %e, "expired leases not recovered yet"),
    }
}

/// Records this instance's lease and watermark; on success the instance may
/// send until `duration` after the moment before the renewal went out.
pub async fn renew(switch: &Switch, duration: Duration) -> Result<(), StoreError> {
    let sent_at = Instant::now();
    let started = switch.clock.now_ms();
    let since = switch.work.unfinished_since(&*switch.clock);
    let duration_ms = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
    let lease = Lease {
        instance: switch.instance.clone(),
        duration_ms,
        unfinished_since_ms: since.saturating_sub(CLOCK_SLACK_MS),
    };
    if let Some(leases) = &switch.leases {
        leases.renew_lease(&lease, started).await?;
    }
    switch.lease.set(sent_at + duration);
    Ok(())
}

/// Settles work whose task went away without ending it.
async fn settle_abandoned(switch: &Switch) -> Result<(), StoreError> {
    for (key, task) in switch.work.abandoned() {
        // A write that failed may still land a little later: only forget a
        // task whose record is missing once it is old.
        let old = switch.clock.now_ms() - key.0 > CLOCK_SLACK_MS;
        match task {
            Task::Saga(request) => match switch.store.saga(&request).await? {
                Some(saga) if !saga.state.is_final() => {
                    recovery::settle_saga(switch, &saga).await?;
                    switch.work.forget(key);
                }
                None if !old => {}
                _ => switch.work.forget(key),
            },
            Task::Freeze(freeze_key) => match switch.store.freeze(&freeze_key).await? {
                Some(freeze) if freeze.state == FreezeState::Pending => {
                    recovery::decline_freeze(switch, &freeze).await?;
                    switch.work.forget(key);
                }
                None if !old => {}
                _ => switch.work.forget(key),
            },
        }
    }
    Ok(())
}

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
use crate::store::{FreezeState, Lease, StoreError, Unfinished};

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

/// Whether this instance started the unfinished work created at
/// `created_at_ms` that `is_it` finds. On a store shared by instances a task
/// here may have been a resend of another instance's request (its write
/// failed, so the task could not tell): that work is its owner's to end, or
/// its lease's recovery's, never this instance's. A store of one instance
/// has no other owner.
async fn started_here(
    switch: &Switch,
    created_at_ms: i64,
    is_it: impl Fn(&Unfinished) -> bool,
) -> Result<bool, StoreError> {
    let Some(leases) = &switch.leases else {
        return Ok(true);
    };
    let mine = leases
        .unfinished_of(&switch.instance, created_at_ms)
        .await?;
    Ok(is_it(&mine))
}

/// Settles work whose task went away without ending it (only this
/// instance's: see [`started_here`]).
async fn settle_abandoned(switch: &Switch) -> Result<(), StoreError> {
    for (key, task) in switch.work.abandoned() {
        // A write that failed may still land a little later: only forget a
        // task whose record is missing once it is old.
        let old = switch.clock.now_ms() - key.0 > CLOCK_SLACK_MS;
        match task {
            Task::Saga(request) => match switch.store.saga(&request).await? {
                Some(saga) if !saga.state.is_final() => {
                    let mine = started_here(switch, saga.created_at_ms, |u| {
                        u.sagas.iter().any(|s| s.request == request)
                    });
                    if mine.await? {
                        recovery::settle_saga(switch, &saga).await?;
                    }
                    switch.work.forget(key);
                }
                None if !old => {}
                _ => switch.work.forget(key),
            },
            Task::Freeze(freeze_key) => match switch.store.freeze(&freeze_key).await? {
                Some(freeze) if freeze.state == FreezeState::Pending => {
                    let mine = started_here(switch, freeze.created_at_ms, |u| {
                        u.freezes.iter().any(|f| f.key == freeze_key)
                    });
                    if mine.await? {
                        recovery::decline_freeze(switch, &freeze).await?;
                    }
                    switch.work.forget(key);
                }
                None if !old => {}
                _ => switch.work.forget(key),
            },
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The lease round settles only this instance's abandoned work: a task
    //! whose write failed may have been a resend of another instance's
    //! request, and that instance's saga or freeze is not this one's to end.

    use std::sync::Arc;

    use bytes::Bytes;
    use iso8583::Spec;

    use super::*;
    use crate::clock::SystemClock;
    use crate::dialect::{FreezeKey, InstitutionId};
    use crate::stan::StanSource;
    use crate::store::memory::MemoryStore;
    use crate::store::{
        InsertFreeze, NewFreeze, NewReceive, RequestKey, Reserve, SagaState, SentMessage, Store,
        StoredAnswer,
    };
    use crate::switch::work::Task;

    fn acquirer() -> InstitutionId {
        InstitutionId::from_field(32, b"01020000").unwrap()
    }

    fn request(mti: &[u8; 4], stan: &[u8; 6]) -> RequestKey {
        RequestKey {
            mti: *mti,
            acquirer: acquirer(),
            transmission: *b"1202015900",
            stan: *stan,
        }
    }

    fn freeze_key(stan: &[u8; 6]) -> FreezeKey {
        request(b"0100", stan).freeze_key()
    }

    /// A freeze of `owner`'s, pending at its bank, or open when `open`.
    async fn freeze(store: &dyn Store, owner: &str, stan: &[u8; 6], open: bool) {
        let inserted = store
            .insert_freeze(NewFreeze {
                key: freeze_key(stan),
                owner: owner.into(),
                request: request(b"0100", stan),
                request_digest: [1; 32],
                payer_pan: "6222020000000001".into(),
                payer_bank: "48020000".into(),
                amount_minor: 5_000,
                currency: 156,
                created_at_ms: 1_000,
            })
            .await
            .unwrap();
        assert_eq!(inserted, InsertFreeze::Inserted);
        if open {
            let answer = StoredAnswer {
                request_digest: [1; 32],
                response: Bytes::from_static(b"0110"),
            };
            store
                .finish_freeze(&freeze_key(stan), true, &request(b"0100", stan), answer)
                .await
                .unwrap();
        }
    }

    /// A receive of 10.00 from the freeze `of`, reserved by `owner`.
    async fn reserve(store: &dyn Store, owner: &str, of: &[u8; 6], stan: &[u8; 6]) {
        let sent = |stan: &[u8; 6]| SentMessage {
            stan: *stan,
            transmission: *b"1202015900",
        };
        let reserved = store
            .reserve(NewReceive {
                debit: sent(b"900001"),
                credit: sent(b"900002"),
                owner: owner.into(),
                request: request(b"0200", stan),
                request_digest: [2; 32],
                freeze: freeze_key(of),
                amount_minor: 1_000,
                receiver_pan: "6217000000000001".into(),
                receiver_bank: "01050000".into(),
                created_at_ms: 2_000,
            })
            .await
            .unwrap();
        assert!(matches!(reserved, Reserve::Reserved(_)));
    }

    #[tokio::test]
    async fn abandoned_work_of_another_instance_is_left_to_it() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        freeze(&*store, "other", b"000001", true).await;
        reserve(&*store, "other", b"000001", b"000002").await;
        freeze(&*store, "other", b"000003", false).await;
        freeze(&*store, "this", b"000004", true).await;
        reserve(&*store, "this", b"000004", b"000005").await;
        freeze(&*store, "this", b"000006", false).await;
        let switch = Switch::new(
            Arc::new(Spec::switchboard()),
            "00010000".into(),
            store.clone(),
            Vec::new(),
            Arc::new(SystemClock),
            Arc::new(StanSource::new(store.clone())),
        )
        .with_instance("this");
        // Tasks of this instance that ended without a word: two of them
        // resends of the other instance's requests.
        for task in [
            Task::Saga(request(b"0200", b"000002")),
            Task::Freeze(freeze_key(b"000003")),
            Task::Saga(request(b"0200", b"000005")),
            Task::Freeze(freeze_key(b"000006")),
        ] {
            drop(switch.work.begin(&SystemClock, task));
        }

        settle_abandoned(&switch).await.unwrap();

        let saga = |stan| {
            let store = store.clone();
            async move { store.saga(&request(b"0200", stan)).await.unwrap().unwrap() }
        };
        let state = |stan| {
            let store = store.clone();
            async move { store.freeze(&freeze_key(stan)).await.unwrap().unwrap() }
        };
        assert_eq!(
            saga(b"000002").await.state,
            SagaState::Debiting,
            "the other's, running"
        );
        assert_eq!(state(b"000001").await.reserved_minor, 1_000);
        assert_eq!(
            state(b"000003").await.state,
            FreezeState::Pending,
            "the other's"
        );
        assert_eq!(
            saga(b"000005").await.state,
            SagaState::Failed,
            "this one's, settled"
        );
        assert_eq!(state(b"000004").await.reserved_minor, 0);
        assert_eq!(state(b"000006").await.state, FreezeState::Declined);
        assert!(switch.work.abandoned().is_empty(), "every task forgotten");
    }
}

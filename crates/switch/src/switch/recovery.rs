//! Crash recovery: settle what a crash left in flight. A freeze forwarded
//! without an answer is declined and its reversal queued (the bank may hold
//! the amount). A receive saga that did not finish is failed: its reservation
//! released, reversals of whatever it may have sent queued (credit first, then
//! debit), and an unfreeze of its amount if the freeze is closed. The wallet
//! never got 00 for it (00 is sent only after the saga's end is committed), so
//! undoing is always right.
//!
//! [`recover`] settles everything unfinished: the embedded store does it at
//! every start (one instance per file). On a shared store,
//! [`take_over_expired`] settles only the work of instances whose lease ran
//! out (see `lease.rs`). Ending a freeze or a saga is guarded in the
//! store, so two instances recovering the same work, or recovery racing the
//! instance that owns it, end it once.

use tracing::{info, warn};

use iso8583::codec::Message;
use iso8583::fields::{format_amount, num};
use iso8583::ResponseCode;

use super::messages::{follow_up, queued_freeze_reversal, Undo};
use super::Switch;
use crate::store::{
    ExpiredLease, FreezeRecord, Leases, ReceiveOutcome, RequestKey, SagaRecord, Settled,
    StoreError, StoredAnswer, Unfinished,
};

/// What recovery did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub freezes_declined: usize,
    pub sagas_failed: usize,
}

/// The digest under which recovery records its answers: no request's.
pub(crate) const RECOVERED_DIGEST: [u8; 32] = [0; 32];

/// The answer (91) recorded for a request settled by recovery, under
/// [`RECOVERED_DIGEST`] (the request itself is gone). An exact resend of the
/// request, a freeze's or a receive's, is told its code (the freeze and the
/// saga keep their request's digest: `Switch::recovered_this`); other content
/// under the same key, 94. Never 00.
fn recovered_answer(switch: &Switch, mti: [u8; 4], fields: &[(u16, Vec<u8>)]) -> StoredAnswer {
    let mut msg = Message::new(mti);
    for (n, v) in fields {
        msg.set(*n, v.clone());
    }
    msg.set(num::RESPONSE_CODE, ResponseCode::ISSUER_UNAVAILABLE);
    StoredAnswer {
        request_digest: RECOVERED_DIGEST,
        response: switch.encode(&mut msg),
    }
}

/// Settles every unfinished freeze and saga in the store, whoever started it.
/// Only for a store no live instance is working on.
pub async fn recover(switch: &Switch) -> Result<Recovered, StoreError> {
    let work = switch.store.unfinished().await?;
    let done = settle(switch, &work).await?;
    if done != Recovered::default() {
        info!(?done, "recovery finished");
    }
    Ok(done)
}

/// Declines `work`'s freezes and fails its sagas, counting what this call
/// ended (not what someone else ended meanwhile).
async fn settle(switch: &Switch, work: &Unfinished) -> Result<Recovered, StoreError> {
    let mut done = Recovered::default();
    for freeze_record in &work.freezes {
        if decline_freeze(switch, freeze_record).await? {
            done.freezes_declined += 1;
        }
    }
    for saga in &work.sagas {
        if settle_saga(switch, saga).await? {
            done.sagas_failed += 1;
        }
    }
    Ok(done)
}

/// Settles the unfinished work of every instance whose lease expired more
/// than `grace` ago (never this instance's own), then drops those leases.
/// An instance sends nothing once its own lease has run out by its clock;
/// the grace, longer than any bank timeout, lets what it sent just before
/// reach the bank (or time out) before a reversal of it is queued.
pub async fn take_over_expired(
    switch: &Switch,
    grace: std::time::Duration,
) -> Result<Recovered, StoreError> {
    let mut done = Recovered::default();
    let Some(leases) = &switch.leases else {
        return Ok(done);
    };
    let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
    let expired = leases
        .expired_leases(switch.clock.now_ms(), grace_ms)
        .await?;
    for lease in expired.iter().filter(|l| l.instance != switch.instance) {
        let more = take_over(switch, &**leases, lease).await?;
        done.freezes_declined += more.freezes_declined;
        done.sagas_failed += more.sagas_failed;
    }
    Ok(done)
}

async fn take_over(
    switch: &Switch,
    leases: &dyn Leases,
    lease: &ExpiredLease,
) -> Result<Recovered, StoreError> {
    let work = leases
        .unfinished_of(&lease.instance, lease.unfinished_since_ms)
        .await?;
    let done = settle(switch, &work).await?;
    leases
        .drop_lease(&lease.instance, switch.clock.now_ms())
        .await?;
    warn!(
        instance = %lease.instance, freezes_declined = done.freezes_declined,
        sagas_failed = done.sagas_failed,
        "lease expired: the instance's unfinished work recovered"
    );
    Ok(done)
}

/// Declines a freeze the payer bank never answered (as far as the switch
/// knows) and queues its reversal. False when it was ended meanwhile.
pub(crate) async fn decline_freeze(
    switch: &Switch,
    freeze_record: &FreezeRecord,
) -> Result<bool, StoreError> {
    let key = freeze_record.key;
    let request = RequestKey {
        mti: *b"0100",
        acquirer: key.acquirer,
        transmission: key.transmission,
        stan: key.stan,
    };
    let answer = recovered_answer(
        switch,
        *b"0110",
        &[
            (num::PAN, freeze_record.payer_pan.clone().into_bytes()),
            (num::PROCESSING_CODE, b"030000".to_vec()),
            (
                num::AMOUNT,
                format_amount(freeze_record.amount_minor)
                    .unwrap_or_default()
                    .into_bytes(),
            ),
            (num::TRANSMISSION, key.transmission.to_vec()),
            (num::STAN, key.stan.to_vec()),
        ],
    );
    let reversal = queued_freeze_reversal(switch, freeze_record).await?;
    let settled = switch
        .store
        .finish_freeze_queueing(&key, false, &request, answer, Some(reversal))
        .await?;
    if settled != Settled::Now {
        return Ok(false);
    }
    warn!(freeze = %key, "recovery: freeze left unanswered declined; reversal queued");
    Ok(true)
}

/// Fails an unfinished saga and queues its reversals. False when it was ended
/// meanwhile.
pub(crate) async fn settle_saga(switch: &Switch, saga: &SagaRecord) -> Result<bool, StoreError> {
    let Some(freeze_record) = switch.store.freeze(&saga.freeze).await? else {
        return Err(StoreError::Corrupt(format!(
            "saga {} names a freeze that does not exist",
            saga.request
        )));
    };
    let mut undo = Vec::new();
    if saga.credit.is_some() {
        undo.push(Undo::Credit);
    }
    if saga.debit.is_some() {
        undo.push(Undo::Debit);
    }
    let none = crate::store::SentMessage {
        stan: [b'0'; 6],
        transmission: [b'0'; 10],
    };
    let follow = follow_up(
        switch,
        &freeze_record,
        saga.amount_minor,
        &saga.receiver_pan,
        &saga.receiver_bank,
        saga.debit.as_ref().unwrap_or(&none),
        saga.credit.as_ref().unwrap_or(&none),
        &undo,
    )
    .await?;
    let answer = recovered_answer(
        switch,
        *b"0210",
        &[
            (num::PAN, saga.receiver_pan.clone().into_bytes()),
            (num::PROCESSING_CODE, b"400000".to_vec()),
            (
                num::AMOUNT,
                format_amount(saga.amount_minor)
                    .unwrap_or_default()
                    .into_bytes(),
            ),
            (num::TRANSMISSION, saga.request.transmission.to_vec()),
            (num::STAN, saga.request.stan.to_vec()),
        ],
    );
    let settled = switch
        .store
        .settle_receive(&saga.request, ReceiveOutcome::Failed, answer, follow)
        .await?;
    if settled != Settled::Now {
        return Ok(false);
    }
    warn!(
        saga = %saga.request, state = saga.state.as_str(), reversals = undo.len(),
        "recovery: unfinished receive failed; reversals queued"
    );
    Ok(true)
}

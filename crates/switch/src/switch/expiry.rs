//! The safety net for wallets that never send the unfreeze notice: freezes
//! older than a maximum age are closed by the switch itself, with the same
//! atomic close as a wallet's notice and the notice to the payer bank queued
//! for store-and-forward, so holds never stay at a bank forever.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{messages, Switch};
use crate::dialect::InstitutionId;
use crate::store::{Close, FreezeRecord, RequestKey, SafKind, StoreError, StoredAnswer};

/// Open freezes read per query.
const PAGE: usize = 500;

/// Closes every open freeze created more than `max_age` ago; returns how many.
/// Reads them by index, oldest first, a page at a time.
pub async fn sweep(switch: &Switch, max_age: Duration) -> Result<usize, StoreError> {
    let now_ms = switch.clock.now_ms();
    let cutoff = now_ms - max_age.as_millis() as i64;
    let mut closed = 0;
    let mut from_ms = i64::MIN;
    let mut seen = std::collections::HashSet::new();
    loop {
        let page = switch
            .store
            .open_freezes_created(from_ms, cutoff, PAGE)
            .await?;
        let full = page.len() == PAGE;
        let mut new = 0;
        for freeze in page {
            from_ms = freeze.created_at_ms;
            if seen.insert(freeze.key) {
                new += 1;
                closed += usize::from(close(switch, &freeze).await?);
            }
        }
        // A page of nothing new (freezes not closed this time, all of one
        // millisecond): the next sweep tries them again.
        if !full || new == 0 {
            return Ok(closed);
        }
    }
}

/// Closes one expired freeze; false when something else got there first.
async fn close(switch: &Switch, freeze: &FreezeRecord) -> Result<bool, StoreError> {
    let now = switch.clock.now();
    let sent = messages::sent_message(now, switch.stans.next().await?);
    let remaining = freeze.available_minor();
    let notice = messages::unfreeze_notice(freeze, remaining, &sent, now, &switch.id);
    let entry = switch.saf_entry(
        &freeze.payer_bank,
        &freeze.key.to_string(),
        SafKind::Unfreeze,
        notice,
    );
    // The switch's own unfreeze, keyed like a request of the switch's.
    let request = RequestKey {
        mti: *b"0120",
        acquirer: InstitutionId::from_field(32, switch.id.as_bytes())
            .unwrap_or(InstitutionId::ZERO),
        transmission: sent.transmission,
        stan: sent.stan,
    };
    let answer = StoredAnswer {
        request_digest: [0; 32],
        response: bytes::Bytes::new(),
    };
    match switch
        .store
        .close_freeze_queueing(&freeze.key, remaining, &request, answer, entry)
        .await?
    {
        Close::Closed(_) => {
            info!(freeze = %freeze.key, remaining, "expired freeze closed by the switch; unfreeze queued");
            Ok(true)
        }
        // A receive or the wallet's own notice got there first: next sweep.
        other => {
            warn!(freeze = %freeze.key, ?other, "expired freeze not closed this time");
            Ok(false)
        }
    }
}

/// Sweeps every `every` until `shutdown`.
pub async fn run(
    switch: Arc<Switch>,
    max_age: Duration,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        if let Err(e) = sweep(&switch, max_age).await {
            warn!(error = %e, "expiry sweep failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, SystemClock};
    use crate::dialect::FreezeKey;
    use crate::stan::StanSource;
    use crate::store::memory::MemoryStore;
    use crate::store::{FreezeState, NewFreeze, Store};

    #[tokio::test]
    async fn a_sweep_pages_through_every_expired_freeze() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let switch = Switch::new(
            Arc::new(iso8583::Spec::switchboard()),
            "00010000".into(),
            store.clone(),
            Vec::new(),
            Arc::new(SystemClock),
            Arc::new(StanSource::new(store.clone())),
        );
        let old = SystemClock.now_ms() - 3_600_000;
        let acquirer = InstitutionId::from_field(32, b"01020000").unwrap();
        let total = PAGE * 2 + 7;
        for n in 0..total {
            let stan: [u8; 6] = format!("{n:06}").into_bytes().try_into().unwrap();
            let key = FreezeKey {
                acquirer,
                transmission: *b"1123100000",
                stan,
            };
            let request = RequestKey {
                mti: *b"0100",
                acquirer,
                transmission: key.transmission,
                stan,
            };
            store
                .insert_freeze(NewFreeze {
                    key,
                    owner: "test".into(),
                    request,
                    request_digest: [1; 32],
                    payer_pan: "6222020000000001".into(),
                    payer_bank: "48020000".into(),
                    amount_minor: 100,
                    currency: 156,
                    // Some share a millisecond, as they do under load.
                    created_at_ms: old + (n / 3) as i64,
                })
                .await
                .unwrap();
            let answer = StoredAnswer {
                request_digest: [1; 32],
                response: bytes::Bytes::from_static(b"0110"),
            };
            store
                .finish_freeze(&key, true, &request, answer)
                .await
                .unwrap();
        }
        let closed = sweep(&switch, Duration::from_secs(60)).await.unwrap();
        assert_eq!(closed, total);
        let freezes = store.freezes().await.unwrap();
        assert!(freezes.iter().all(|f| f.state == FreezeState::Closed));
        assert_eq!(store.saf_entries().await.unwrap().len(), total);
        assert_eq!(sweep(&switch, Duration::from_secs(60)).await.unwrap(), 0);
    }
}

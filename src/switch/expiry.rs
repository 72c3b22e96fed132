//! The safety net for wallets that never send the unfreeze notice: freezes
//! older than a maximum age are closed by the switch itself, with the same
//! atomic close as a wallet's notice and the notice to the payer bank queued
//! for store-and-forward, so holds never stay at a bank forever.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{messages, Switch};
use crate::fields::InstitutionId;
use crate::store::{Close, FreezeState, RequestKey, SafKind, StoreError, StoredAnswer};

/// Closes every open freeze created more than `max_age` ago; returns how many.
pub async fn sweep(switch: &Switch, max_age: Duration) -> Result<usize, StoreError> {
    let now_ms = switch.clock.now_ms();
    let cutoff = now_ms - max_age.as_millis() as i64;
    let mut closed = 0;
    for freeze in switch.store.freezes().await? {
        if freeze.state != FreezeState::Open || freeze.created_at_ms > cutoff {
            continue;
        }
        let now = switch.clock.now();
        let sent = messages::sent_message(now, switch.stans.next().await?);
        let remaining = freeze.available_minor();
        let notice = messages::unfreeze_notice(&freeze, remaining, &sent, now, &switch.id);
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
                closed += 1;
            }
            // A receive or the wallet's own notice got there first: next sweep.
            other => warn!(freeze = %freeze.key, ?other, "expired freeze not closed this time"),
        }
    }
    Ok(closed)
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

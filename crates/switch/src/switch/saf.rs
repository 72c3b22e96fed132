//! Store-and-forward: delivers the messages that must get through (reversals,
//! unfreeze notices) from the durable queue in the store, retrying with backoff
//! and the repeat MTI (0421, 0121) until the bank answers with a code that ends
//! retries. Entries of one freeze go one at a time, oldest first, so a reversal
//! or unfreeze never overtakes what it follows. An entry that can never be
//! delivered is marked dead, logged, and listed by `switchboard saf list`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use iso8583::codec::parse;
use iso8583::response::ResponseCode;

use super::Switch;
use crate::store::{SafEntry, SafOutcome};

/// How store-and-forward retries.
#[derive(Debug, Clone)]
pub struct SafPolicy {
    /// Response codes that end retries: 00 done; 25 the bank has no original
    /// (nothing to undo); 12 nothing left to do. Any other code retries.
    pub final_codes: Vec<ResponseCode>,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Attempts before an entry is declared dead.
    pub max_attempts: u32,
    /// How often the queue is looked at when it is idle.
    pub poll: Duration,
    /// How long an entry handed to this instance is kept from the others
    /// (on a shared store): longer than one attempt can take.
    pub hold: Duration,
}

impl Default for SafPolicy {
    fn default() -> Self {
        SafPolicy {
            final_codes: [
                ResponseCode::APPROVED,
                ResponseCode::UNABLE_TO_LOCATE_RECORD,
                ResponseCode::INVALID_TRANSACTION,
            ]
            .to_vec(),
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_attempts: 1000,
            poll: Duration::from_millis(50),
            hold: Duration::from_secs(30),
        }
    }
}

impl SafPolicy {
    fn backoff(&self, attempts: u32) -> Duration {
        let factor = 1u32 << attempts.min(16);
        (self.initial_backoff * factor).min(self.max_backoff)
    }
}

/// Delivers due entries until `shutdown`; the queue stays in the store.
pub async fn run(switch: Arc<Switch>, policy: SafPolicy, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        let now = switch.clock.now_ms();
        let hold_ms = i64::try_from(policy.hold.as_millis()).unwrap_or(i64::MAX);
        let due = match switch.store.saf_due(now, 64, hold_ms).await {
            Ok(due) => due,
            Err(e) => {
                warn!(error = %e, "store-and-forward: queue unavailable");
                Vec::new()
            }
        };
        if due.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(policy.poll) => {}
                _ = shutdown.cancelled() => break,
            }
            continue;
        }
        join_all(due.iter().map(|entry| deliver(&switch, &policy, entry))).await;
    }
}

/// One attempt at one entry.
pub async fn deliver(switch: &Switch, policy: &SafPolicy, entry: &SafEntry) {
    let outcome = attempt(switch, policy, entry).await;
    let result = match &outcome {
        SafOutcome::Done { .. } => "done",
        SafOutcome::Retry { .. } => "retry",
        SafOutcome::Dead { .. } => "dead",
    };
    crate::metrics::metrics()
        .saf_attempts
        .get_or_create(&crate::metrics::SafAttemptLabels {
            kind: entry.entry.kind.as_str(),
            result,
        })
        .inc();
    match &outcome {
        SafOutcome::Done { result } => info!(
            id = entry.id, kind = entry.entry.kind.as_str(), bank = %entry.entry.bank,
            order = %entry.entry.order_key, result = %result, "store-and-forward delivered"
        ),
        SafOutcome::Retry { result, .. } => warn!(
            id = entry.id, kind = entry.entry.kind.as_str(), bank = %entry.entry.bank,
            attempts = entry.attempts + 1, result = %result, "store-and-forward will retry"
        ),
        SafOutcome::Dead { result } => error!(
            id = entry.id, kind = entry.entry.kind.as_str(), bank = %entry.entry.bank,
            order = %entry.entry.order_key, result = %result,
            "store-and-forward gave up: needs a person (switchboard saf list)"
        ),
    }
    if let Err(e) = switch.store.saf_settle(entry.id, outcome).await {
        warn!(id = entry.id, error = %e, "store-and-forward: attempt not recorded; it will be repeated");
    }
}

async fn attempt(switch: &Switch, policy: &SafPolicy, entry: &SafEntry) -> SafOutcome {
    let Some(link) = switch.bank(&entry.entry.bank) else {
        return SafOutcome::Dead {
            result: format!("bank {} is not configured", entry.entry.bank),
        };
    };
    let mut msg = match parse(&switch.spec, Bytes::clone(&entry.entry.message)) {
        Ok(msg) => msg,
        Err(e) => {
            return SafOutcome::Dead {
                result: format!("queued message does not parse: {e}"),
            }
        }
    };
    if entry.attempts > 0 {
        // A repeat: 0420 → 0421, 0120 → 0121, same F7 and STAN.
        let mut mti = *msg.mti();
        mti[3] = b'1';
        msg.set_mti(mti);
    }
    let result = match link.request(&msg).await {
        Ok((answer, _)) => match ResponseCode::of(&answer) {
            Some(code) if policy.final_codes.contains(&code) => {
                return SafOutcome::Done {
                    result: code.to_string(),
                };
            }
            Some(code) => format!("answered {code}"),
            None => "answered --".to_string(),
        },
        Err(e) => e.to_string(),
    };
    if entry.attempts + 1 >= policy.max_attempts {
        return SafOutcome::Dead {
            result: format!("{result} (after {} attempts)", entry.attempts + 1),
        };
    }
    SafOutcome::Retry {
        next_attempt_ms: switch.clock.now_ms() + policy.backoff(entry.attempts).as_millis() as i64,
        result,
    }
}

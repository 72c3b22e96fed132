//! Unfreeze: the wallet's notice that a packet expired. Match the freeze by
//! field 90, check F4 equals what remains (else 13), close it for new receives,
//! acknowledge with 0130, and forward the notice to the payer bank so it
//! releases what is left of the hold.

use tracing::{info, warn};

use super::{messages, Outcome, Switch};
use crate::codec::Message;
use crate::fields::{amount_minor, num, OriginalData};
use crate::store::{Close, FreezeRecord, RequestKey, StoredAnswer};

pub(super) async fn run(
    switch: &Switch,
    request: &Message,
    key: RequestKey,
    digest: [u8; 32],
) -> Outcome {
    let (Ok(original), Ok(amount)) = (OriginalData::of(request), amount_minor(request)) else {
        return Outcome::reject(switch, key, digest, request, "30").await;
    };
    if &original.mti != b"0100" {
        return Outcome::reject(switch, key, digest, request, "25").await;
    }
    let bytes = switch.reply(request, "00");
    let answer = StoredAnswer {
        request_digest: digest,
        response: bytes.clone(),
    };
    match switch
        .store
        .close_freeze(&original.freeze_key(), amount, &key, answer)
        .await
    {
        Ok(Close::Closed(freeze)) => {
            forward_in_background(switch, freeze, amount);
            Outcome {
                response: bytes,
                note: None,
            }
        }
        Ok(Close::NotFound) => Outcome::reject(switch, key, digest, request, "25").await,
        Ok(Close::NotOpen(_)) => Outcome::reject(switch, key, digest, request, "12").await,
        Ok(Close::AmountMismatch { .. }) => {
            Outcome::reject(switch, key, digest, request, "13").await
        }
        Err(e) => {
            warn!(error = %e, "store unavailable");
            Outcome {
                response: switch.reply(request, "96"),
                note: Some(e.to_string()),
            }
        }
    }
}

/// Sends the notice to the payer bank after the wallet has its answer.
fn forward_in_background(switch: &Switch, freeze: FreezeRecord, amount: u64) {
    let Some(bank) = switch.bank(&freeze.payer_bank).cloned() else {
        warn!(bank = %freeze.payer_bank, "unfreeze for a bank no longer configured");
        return;
    };
    let stans = switch.stans.clone();
    let clock = switch.clock.clone();
    let switch_id = switch.id.clone();
    tokio::spawn(async move {
        let stan = match stans.next().await {
            Ok(stan) => stan,
            Err(e) => {
                warn!(error = %e, "no STAN for the unfreeze notice");
                return;
            }
        };
        let now = clock.now();
        let sent = messages::sent_message(now, stan);
        let notice = messages::unfreeze_notice(&freeze, amount, &sent, now, &switch_id);
        match bank.request(&notice).await {
            Ok((answer, _)) => info!(
                bank = bank.institution_id(),
                freeze = %freeze.key,
                code = answer.get_str(num::RESPONSE_CODE).unwrap_or("-"),
                "unfreeze notice answered"
            ),
            Err(e) => {
                warn!(bank = bank.institution_id(), freeze = %freeze.key, error = %e, "unfreeze notice not answered")
            }
        }
    });
}

//! Unfreeze: the wallet's notice that a packet expired. Match the freeze by
//! field 90, check F4 equals what remains (else 13), close it for new receives,
//! acknowledge with 0130, and queue the notice to the payer bank (durably, in
//! the same commit) so store-and-forward delivers it and the bank releases
//! what is left of the hold.

use tracing::warn;

use iso8583::codec::Message;
use iso8583::fields::{amount_minor, num};
use iso8583::response::ResponseCode;

use super::{messages, Outcome, Switch};
use crate::dialect::OriginalData;
use crate::store::{Close, RequestKey, SafKind, StoredAnswer};

pub(super) async fn run(
    switch: &Switch,
    request: &Message,
    key: RequestKey,
    digest: [u8; 32],
) -> Outcome {
    let (Ok(original), Ok(amount)) = (OriginalData::of(request), amount_minor(request)) else {
        return Outcome::reject(switch, key, digest, request, ResponseCode::FORMAT_ERROR).await;
    };
    // Only the institution that froze a packet closes it, and it is told
    // nothing about another's (not whether it exists, nor its remainder).
    if original.acquirer != key.acquirer {
        return Outcome::reject(
            switch,
            key,
            digest,
            request,
            ResponseCode::SECURITY_VIOLATION,
        )
        .await;
    }
    if &original.mti != b"0100" {
        return Outcome::reject(
            switch,
            key,
            digest,
            request,
            ResponseCode::UNABLE_TO_LOCATE_RECORD,
        )
        .await;
    }
    let freeze_key = original.freeze_key();
    // The notice to the payer bank is queued with the closing, in one commit,
    // so it survives a crash; building it needs the freeze's card and bank.
    let freeze = match switch.store.freeze(&freeze_key).await {
        Ok(Some(freeze)) => freeze,
        Ok(None) => {
            return Outcome::reject(
                switch,
                key,
                digest,
                request,
                ResponseCode::UNABLE_TO_LOCATE_RECORD,
            )
            .await
        }
        Err(e) => {
            warn!(error = %e, "store unavailable");
            return Outcome::unavailable(switch, request, &e);
        }
    };
    // The unfreeze names the payer's card (F2): any other is refused, before
    // the remainder is compared.
    if request.get(num::PAN) != Some(freeze.payer_pan.as_bytes()) {
        return Outcome::reject(
            switch,
            key,
            digest,
            request,
            ResponseCode::INVALID_CARD_NUMBER,
        )
        .await;
    }
    let notice = match switch.stans.next().await {
        Ok(stan) => {
            let now = switch.clock.now();
            let sent = messages::sent_message(now, stan);
            let msg = messages::unfreeze_notice(&freeze, amount, &sent, now, &switch.id);
            switch.saf_entry(
                &freeze.payer_bank,
                &freeze_key.to_string(),
                SafKind::Unfreeze,
                msg,
            )
        }
        Err(e) => {
            warn!(error = %e, "no STAN for the unfreeze notice");
            return Outcome::unavailable(switch, request, &e);
        }
    };
    let bytes = switch.reply(request, ResponseCode::APPROVED);
    let answer = StoredAnswer {
        request_digest: digest,
        response: bytes.clone(),
    };
    match switch
        .store
        .close_freeze_queueing(&freeze_key, amount, &key, answer, notice)
        .await
    {
        Ok(Close::Closed(closed)) => {
            if closed.received_minor == 0 {
                // Frozen and given back untouched: what probing looks like.
                let counted = switch
                    .risk
                    .note_probe(
                        &*switch.store,
                        &switch.settlement,
                        switch.clock.now_ms(),
                        &closed.payer_pan,
                        &freeze_key.acquirer,
                    )
                    .await;
                if let Err(e) = counted {
                    warn!(error = %e, "unfreeze without receive not counted for the probing rules");
                }
            }
            Outcome {
                response: bytes,
                note: None,
            }
        }
        Ok(Close::NotFound) => {
            Outcome::reject(
                switch,
                key,
                digest,
                request,
                ResponseCode::UNABLE_TO_LOCATE_RECORD,
            )
            .await
        }
        Ok(Close::NotOpen(_)) => {
            Outcome::reject(
                switch,
                key,
                digest,
                request,
                ResponseCode::INVALID_TRANSACTION,
            )
            .await
        }
        Ok(Close::AmountMismatch { .. }) => {
            Outcome::reject(switch, key, digest, request, ResponseCode::INVALID_AMOUNT).await
        }
        Err(e) => {
            warn!(error = %e, "store unavailable");
            Outcome::unavailable(switch, request, &e)
        }
    }
}

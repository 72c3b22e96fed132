//! Freeze: validate, route by the card's BIN to the payer bank, record the
//! freeze (state `Pending`), forward it with the wallet's F7/F11/F32 unchanged
//! and F33 = the switch, record the bank's answer (`Open` or `Declined`), and
//! answer the wallet with the bank's code.

use tracing::warn;

use iso8583::codec::Message;
use iso8583::fields::{amount_minor, currency, num};
use iso8583::mask::Masked;
use iso8583::ResponseCode;

use super::work::Task;
use super::{messages, Outcome, Switch};
use crate::dialect::FreezeKey;
use crate::store::{
    FreezeRecord, FreezeState, InsertFreeze, NewFreeze, RequestKey, Settled, StoredAnswer,
};

pub(super) async fn run(
    switch: &Switch,
    request: &Message,
    key: RequestKey,
    digest: [u8; 32],
) -> Outcome {
    // Validation has checked presence and formats of these fields.
    let (Ok(freeze_key), Ok(amount), Ok(currency)) = (
        FreezeKey::of_request(request),
        amount_minor(request),
        currency(request),
    ) else {
        return Outcome::reject(switch, key, digest, request, ResponseCode::FORMAT_ERROR).await;
    };
    let pan = request.get(num::PAN).cloned().unwrap_or_default();
    let pan_text = String::from_utf8_lossy(&pan).into_owned();
    if amount == 0 {
        return Outcome::reject(switch, key, digest, request, ResponseCode::INVALID_AMOUNT).await;
    }
    let Some(bank) = switch.route(&pan).cloned() else {
        return Outcome::reject(
            switch,
            key,
            digest,
            request,
            ResponseCode::INVALID_CARD_NUMBER,
        )
        .await;
    };
    let ticket = switch.work.begin(&*switch.clock, Task::Freeze(freeze_key));
    let inserted = switch
        .store
        .insert_freeze(NewFreeze {
            key: freeze_key,
            owner: switch.instance.clone(),
            request: key,
            request_digest: digest,
            payer_pan: pan_text.clone(),
            payer_bank: bank.institution_id().to_string(),
            amount_minor: amount,
            currency,
            created_at_ms: ticket.created_at_ms(),
        })
        .await;
    match inserted {
        Ok(InsertFreeze::Inserted) => {}
        Ok(InsertFreeze::Exists {
            request_digest,
            answer,
        }) => {
            ticket.done();
            return Outcome::existing(switch, request, digest, request_digest, answer);
        }
        Err(e) => {
            warn!(error = %e, "store unavailable");
            return Outcome {
                response: switch.reply(request, ResponseCode::SYSTEM_MALFUNCTION),
                note: Some(e.to_string()),
            };
        }
    }

    let mut forwarded = request.clone();
    forwarded.set(num::FORWARDER, switch.id.clone());
    let mut reversal = None;
    let sent = if switch.may_send() {
        bank.request(&forwarded).await
    } else {
        Err(crate::link::LinkError::LeaseLost)
    };
    let (code, auth) = match sent {
        Ok((answer, _)) => (
            ResponseCode::of(&answer).unwrap_or(ResponseCode::SYSTEM_MALFUNCTION),
            answer.get(num::AUTH_CODE).cloned(),
        ),
        Err(e) => {
            warn!(bank = bank.institution_id(), pan = %Masked(&pan_text), error = %e, "freeze not answered");
            if e.maybe_delivered() {
                // The bank may hold the amount: queue the undoing of the freeze.
                let record = record_of(
                    freeze_key,
                    &pan_text,
                    bank.institution_id(),
                    amount,
                    currency,
                    digest,
                );
                match messages::queued_freeze_reversal(switch, &record).await {
                    Ok(entry) => reversal = Some(entry),
                    Err(e) => {
                        warn!(error = %e, "no STAN for the freeze reversal; left for recovery")
                    }
                }
            }
            (ResponseCode::ISSUER_UNAVAILABLE, None)
        }
    };
    let approved = code.is_approved();
    let mut response = switch.respond(request, code);
    if approved {
        response.set(
            num::AUTH_CODE,
            auth.unwrap_or_else(|| bytes::Bytes::from_static(b"000000")),
        );
    }
    let bytes = switch.encode(&mut response);
    let answer = StoredAnswer {
        request_digest: digest,
        response: bytes.clone(),
    };
    match switch
        .store
        .finish_freeze_queueing(&freeze_key, approved, &key, answer, reversal)
        .await
    {
        Ok(Settled::Now) => {
            ticket.done();
            Outcome {
                response: bytes,
                note: None,
            }
        }
        Ok(Settled::Before { answer }) => {
            // Recovery of this instance's expired lease declined it meanwhile.
            ticket.done();
            warn!(freeze = %freeze_key, "freeze was ended by recovery meanwhile: answering as recorded");
            Outcome::ended_before(switch, request, answer)
        }
        Err(e) => {
            // Left to the lease round (the ticket is dropped unfinished).
            warn!(error = %e, "freeze outcome not recorded");
            Outcome {
                response: switch.reply(request, ResponseCode::SYSTEM_MALFUNCTION),
                note: Some(e.to_string()),
            }
        }
    }
}

/// The record a freeze reversal is built from.
fn record_of(
    key: FreezeKey,
    pan: &str,
    bank: &str,
    amount: u64,
    currency: u16,
    request_digest: [u8; 32],
) -> FreezeRecord {
    FreezeRecord {
        key,
        payer_pan: pan.to_string(),
        payer_bank: bank.to_string(),
        amount_minor: amount,
        currency,
        received_minor: 0,
        reserved_minor: 0,
        state: FreezeState::Declined,
        created_at_ms: 0,
        request_digest,
    }
}

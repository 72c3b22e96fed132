//! The messages the switch originates toward banks: debit, credit, reversal
//! and the forwarded unfreeze notice. Each gets its own F7 and a fresh STAN;
//! F32 and F33 are the switch; F90 names the original. The builders at the
//! end ([`follow_up`], [`queued_freeze_reversal`]) take the STANs and put
//! what a failed saga or a declined freeze leaves to send into entries ready
//! for store-and-forward.

use chrono::{Duration, NaiveDateTime};

use iso8583::codec::Message;
use iso8583::fields::{format_amount, num, transmission_digits};

use super::Switch;
use crate::dialect::{InstitutionId, OriginalData};
use crate::store::{FollowUp, FreezeRecord, SafKind, SentMessage};

/// Local time of the switch's settlement zone (Asia/Shanghai, UTC+8, no DST).
fn local(now: NaiveDateTime) -> NaiveDateTime {
    now + Duration::hours(8)
}

/// A new message's identity: F7 from the clock and a fresh STAN.
pub fn sent_message(now: NaiveDateTime, stan: [u8; 6]) -> SentMessage {
    SentMessage {
        stan,
        transmission: transmission_digits(now),
    }
}

/// Field 90 naming a freeze: the wallet's 0100 as forwarded by the switch.
pub fn freeze_original(freeze: &FreezeRecord, switch_id: &str) -> [u8; 42] {
    OriginalData {
        mti: *b"0100",
        stan: freeze.key.stan,
        transmission: freeze.key.transmission,
        acquirer: freeze.key.acquirer,
        forwarder: InstitutionId::from_field(num::FORWARDER, switch_id.as_bytes())
            .unwrap_or(InstitutionId::ZERO),
    }
    .to_bytes()
}

/// Field 90 naming a message the switch sent.
pub fn own_original(mti: [u8; 4], sent: &SentMessage, switch_id: &str) -> [u8; 42] {
    let switch = InstitutionId::from_field(num::ACQUIRER, switch_id.as_bytes())
        .unwrap_or(InstitutionId::ZERO);
    OriginalData {
        mti,
        stan: sent.stan,
        transmission: sent.transmission,
        acquirer: switch,
        forwarder: switch,
    }
    .to_bytes()
}

/// Retrieval reference number: day, hour, minute of F7 and the STAN.
fn rrn(sent: &SentMessage) -> Vec<u8> {
    let mut v = sent.transmission[2..8].to_vec();
    v.extend_from_slice(&sent.stan);
    v
}

/// Who sends an originated message, when, under which identity.
struct Origin<'a> {
    sent: &'a SentMessage,
    now: NaiveDateTime,
    switch_id: &'a str,
}

/// The fields every originated message shares.
fn base(
    mti: [u8; 4],
    processing_code: &str,
    amount_minor: u64,
    currency: u16,
    receiving_bank: &str,
    origin: Origin<'_>,
) -> Message {
    let Origin {
        sent,
        now,
        switch_id,
    } = origin;
    let mut m = Message::new(mti);
    // Fields 13 (MMDD) and 12 (hhmmss) are the local time's F7 digits.
    let local = transmission_digits(local(now));
    m.set(num::PROCESSING_CODE, processing_code.to_string())
        .set(
            num::AMOUNT,
            format_amount(amount_minor).unwrap_or_else(|_| "999999999999".into()),
        )
        .set(num::TRANSMISSION, sent.transmission.to_vec())
        .set(num::STAN, sent.stan.to_vec())
        .set(num::LOCAL_TIME, local[4..].to_vec())
        .set(num::LOCAL_DATE, local[..4].to_vec())
        .set(num::ACQUIRER, switch_id.to_string())
        .set(num::FORWARDER, switch_id.to_string())
        .set(num::RRN, rrn(sent))
        .set(num::CURRENCY, format!("{currency:03}"))
        .set(num::RECEIVER, receiving_bank.to_string());
    m
}

/// Debit to the payer bank: the sender's card in F2, the recipient's in F103,
/// F90 naming the freeze whose hold it draws on.
pub fn debit(
    freeze: &FreezeRecord,
    amount_minor: u64,
    receiver_pan: &str,
    sent: &SentMessage,
    now: NaiveDateTime,
    switch_id: &str,
) -> Message {
    let mut m = base(
        *b"0200",
        "000000",
        amount_minor,
        freeze.currency,
        &freeze.payer_bank,
        Origin {
            sent,
            now,
            switch_id,
        },
    );
    m.set(num::PAN, freeze.payer_pan.clone())
        .set(num::POS_CONDITION, "06")
        .set(
            num::ORIGINAL_DATA,
            freeze_original(freeze, switch_id).to_vec(),
        )
        .set(num::ACCOUNT_2, receiver_pan.to_string());
    m
}

/// Credit to the receiver bank: the recipient's card in F2, the sender's in F102.
pub fn credit(
    freeze: &FreezeRecord,
    amount_minor: u64,
    receiver_pan: &str,
    receiver_bank: &str,
    sent: &SentMessage,
    now: NaiveDateTime,
    switch_id: &str,
) -> Message {
    let mut m = base(
        *b"0200",
        "260000",
        amount_minor,
        freeze.currency,
        receiver_bank,
        Origin {
            sent,
            now,
            switch_id,
        },
    );
    m.set(num::PAN, receiver_pan.to_string())
        .set(num::POS_CONDITION, "00")
        .set(
            num::ORIGINAL_DATA,
            freeze_original(freeze, switch_id).to_vec(),
        )
        .set(num::ACCOUNT_1, freeze.payer_pan.clone());
    m
}

/// Reversal (0420) of a debit the switch sent to the payer bank.
pub fn debit_reversal(
    freeze: &FreezeRecord,
    amount_minor: u64,
    receiver_pan: &str,
    debit: &SentMessage,
    sent: &SentMessage,
    now: NaiveDateTime,
    switch_id: &str,
) -> Message {
    let mut m = base(
        *b"0420",
        "000000",
        amount_minor,
        freeze.currency,
        &freeze.payer_bank,
        Origin {
            sent,
            now,
            switch_id,
        },
    );
    m.set(num::PAN, freeze.payer_pan.clone())
        .set(num::POS_CONDITION, "06")
        .set(num::RRN, rrn(debit))
        .set(
            num::ORIGINAL_DATA,
            own_original(*b"0200", debit, switch_id).to_vec(),
        )
        .set(num::ACCOUNT_2, receiver_pan.to_string());
    m
}

/// A message to the payer bank about a freeze's hold (its card in F2, the
/// freeze in F90): the freeze's reversal and the unfreeze notice differ only in
/// MTI, processing code and amount.
fn about_hold(
    mti: [u8; 4],
    processing_code: &str,
    freeze: &FreezeRecord,
    amount_minor: u64,
    origin: Origin<'_>,
) -> Message {
    let switch_id = origin.switch_id;
    let mut m = base(
        mti,
        processing_code,
        amount_minor,
        freeze.currency,
        &freeze.payer_bank,
        origin,
    );
    m.set(num::PAN, freeze.payer_pan.clone())
        .set(num::POS_CONDITION, "06")
        .set(
            num::ORIGINAL_DATA,
            freeze_original(freeze, switch_id).to_vec(),
        );
    m
}

/// Reversal (0420) of a freeze the payer bank may have placed but never
/// answered in time.
pub fn freeze_reversal(
    freeze: &FreezeRecord,
    sent: &SentMessage,
    now: NaiveDateTime,
    switch_id: &str,
) -> Message {
    let origin = Origin {
        sent,
        now,
        switch_id,
    };
    about_hold(*b"0420", "030000", freeze, freeze.amount_minor, origin)
}

/// The unfreeze notice forwarded to the payer bank: release `amount_minor` of
/// the freeze's hold.
pub fn unfreeze_notice(
    freeze: &FreezeRecord,
    amount_minor: u64,
    sent: &SentMessage,
    now: NaiveDateTime,
    switch_id: &str,
) -> Message {
    let origin = Origin {
        sent,
        now,
        switch_id,
    };
    about_hold(*b"0120", "200000", freeze, amount_minor, origin)
}

/// Reversal (0420) of a credit the switch sent to the receiver bank.
pub fn credit_reversal(
    freeze: &FreezeRecord,
    amount_minor: u64,
    (receiver_pan, receiver_bank): (&str, &str),
    credit: &SentMessage,
    sent: &SentMessage,
    now: NaiveDateTime,
    switch_id: &str,
) -> Message {
    let mut m = base(
        *b"0420",
        "260000",
        amount_minor,
        freeze.currency,
        receiver_bank,
        Origin {
            sent,
            now,
            switch_id,
        },
    );
    m.set(num::PAN, receiver_pan.to_string())
        .set(num::POS_CONDITION, "00")
        .set(num::RRN, rrn(credit))
        .set(
            num::ORIGINAL_DATA,
            own_original(*b"0200", credit, switch_id).to_vec(),
        )
        .set(num::ACCOUNT_1, freeze.payer_pan.clone());
    m
}

/// A message of a saga that may have moved money and must be reversed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Undo {
    Credit,
    Debit,
}

/// The follow-up messages of a failed saga, ready to queue: reversals in the
/// order given, and the unfreeze of the amount should the freeze be closed.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn follow_up(
    switch: &Switch,
    freeze: &FreezeRecord,
    amount: u64,
    receiver_pan: &str,
    receiver_bank: &str,
    debit: &SentMessage,
    credit: &SentMessage,
    undo: &[Undo],
) -> Result<FollowUp, crate::store::StoreError> {
    let order_key = freeze.key.to_string();
    let now = switch.clock.now();
    let mut saf = Vec::new();
    for step in undo {
        let sent = sent_message(now, switch.stans.next().await?);
        let (bank, msg) = match step {
            Undo::Credit => (
                receiver_bank.to_string(),
                credit_reversal(
                    freeze,
                    amount,
                    (receiver_pan, receiver_bank),
                    credit,
                    &sent,
                    now,
                    &switch.id,
                ),
            ),
            Undo::Debit => (
                freeze.payer_bank.clone(),
                debit_reversal(freeze, amount, receiver_pan, debit, &sent, now, &switch.id),
            ),
        };
        switch.count_reversal(&bank, &freeze.key.acquirer);
        saf.push(switch.saf_entry(&bank, &order_key, SafKind::Reversal, msg));
    }
    let sent = sent_message(now, switch.stans.next().await?);
    let notice = unfreeze_notice(freeze, amount, &sent, now, &switch.id);
    Ok(FollowUp {
        saf,
        unfreeze_if_closed: Some(switch.saf_entry(
            &freeze.payer_bank,
            &order_key,
            SafKind::Unfreeze,
            notice,
        )),
    })
}

/// The reversal (0420) of a freeze, ready for store-and-forward.
pub(crate) async fn queued_freeze_reversal(
    switch: &Switch,
    freeze: &FreezeRecord,
) -> Result<crate::store::NewSafEntry, crate::store::StoreError> {
    let now = switch.clock.now();
    let sent = sent_message(now, switch.stans.next().await?);
    let reversal = freeze_reversal(freeze, &sent, now, &switch.id);
    switch.count_reversal(&freeze.payer_bank, &freeze.key.acquirer);
    Ok(switch.saf_entry(
        &freeze.payer_bank,
        &freeze.key.to_string(),
        crate::store::SafKind::Reversal,
        reversal,
    ))
}

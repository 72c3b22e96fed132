//! The messages the switch originates toward banks: debit, credit, reversal
//! and the forwarded unfreeze notice. Each gets its own F7 and a fresh STAN;
//! F32 and F33 are the switch; F90 names the original. The builders at the
//! end ([`follow_up`], [`queued_freeze_reversal`]) take the STANs and put
//! what a failed saga or a declined freeze leaves to send into entries ready
//! for store-and-forward.

use chrono::{Duration, NaiveDateTime};

use bytes::Bytes;
use iso8583::codec::Message;

use iso8583::fields::{num, transmission_digits};

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
fn rrn(sent: &SentMessage) -> [u8; 12] {
    let mut v = [0; 12];
    v[..6].copy_from_slice(&sent.transmission[2..8]);
    v[6..].copy_from_slice(&sent.stan);
    v
}

/// An originated message's field values, written one after another into
/// one buffer and cut from it when the message is built: one allocation for
/// all its fields rather than one each (a receive originates two messages
/// of fifteen fields).
struct Fields {
    mti: [u8; 4],
    values: Vec<u8>,
    /// Field number and the value's span in `values`, in the order put.
    spans: Vec<(u16, usize, usize)>,
}

impl Fields {
    fn new(mti: [u8; 4]) -> Fields {
        Fields {
            mti,
            values: Vec::with_capacity(192),
            spans: Vec::with_capacity(16),
        }
    }

    /// Sets field `number` (a field put again takes the later value).
    fn put(&mut self, number: u16, value: impl AsRef<[u8]>) -> &mut Fields {
        let start = self.values.len();
        self.values.extend_from_slice(value.as_ref());
        self.spans.push((number, start, self.values.len()));
        self
    }

    /// The number in `digits` digits, zero-padded (an amount, a currency).
    fn put_digits(&mut self, number: u16, value: u64, digits: usize) -> &mut Fields {
        use std::io::Write;

        let start = self.values.len();
        // Writing into a `Vec` cannot fail.
        let _ = write!(self.values, "{value:0digits$}");
        self.spans.push((number, start, self.values.len()));
        self
    }

    fn build(self) -> Message {
        let values = Bytes::from(self.values);
        let spans = self
            .spans
            .into_iter()
            .map(|(number, start, end)| (number, start..end));
        // Of a field put twice, the later value is kept.
        Message::from_spans(self.mti, values, spans)
            .expect("every span was cut from the values it was written into")
    }
}

/// Who sends an originated message, when, under which identity.
struct Origin<'a> {
    sent: &'a SentMessage,
    now: NaiveDateTime,
    switch_id: &'a str,
}

/// The largest amount F4's twelve digits hold, sent for one beyond them.
const MAX_AMOUNT: u64 = 999_999_999_999;

/// The fields every originated message shares.
fn base(
    mti: [u8; 4],
    processing_code: &str,
    amount_minor: u64,
    currency: u16,
    receiving_bank: &str,
    origin: Origin<'_>,
) -> Fields {
    let Origin {
        sent,
        now,
        switch_id,
    } = origin;
    let mut m = Fields::new(mti);
    // Fields 13 (MMDD) and 12 (hhmmss) are the local time's F7 digits.
    let local = transmission_digits(local(now));
    m.put(num::PROCESSING_CODE, processing_code)
        .put_digits(num::AMOUNT, amount_minor.min(MAX_AMOUNT), 12)
        .put(num::TRANSMISSION, sent.transmission)
        .put(num::STAN, sent.stan)
        .put(num::LOCAL_TIME, &local[4..])
        .put(num::LOCAL_DATE, &local[..4])
        .put(num::ACQUIRER, switch_id)
        .put(num::FORWARDER, switch_id)
        .put(num::RRN, rrn(sent))
        .put_digits(num::CURRENCY, currency.into(), 3)
        .put(num::RECEIVER, receiving_bank);
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
    m.put(num::PAN, &freeze.payer_pan)
        .put(num::POS_CONDITION, "06")
        .put(num::ORIGINAL_DATA, freeze_original(freeze, switch_id))
        .put(num::ACCOUNT_2, receiver_pan);
    m.build()
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
    m.put(num::PAN, receiver_pan)
        .put(num::POS_CONDITION, "00")
        .put(num::ORIGINAL_DATA, freeze_original(freeze, switch_id))
        .put(num::ACCOUNT_1, &freeze.payer_pan);
    m.build()
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
    m.put(num::PAN, &freeze.payer_pan)
        .put(num::POS_CONDITION, "06")
        .put(num::RRN, rrn(debit))
        .put(num::ORIGINAL_DATA, own_original(*b"0200", debit, switch_id))
        .put(num::ACCOUNT_2, receiver_pan);
    m.build()
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
    m.put(num::PAN, &freeze.payer_pan)
        .put(num::POS_CONDITION, "06")
        .put(num::ORIGINAL_DATA, freeze_original(freeze, switch_id));
    m.build()
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
    m.put(num::PAN, receiver_pan)
        .put(num::POS_CONDITION, "00")
        .put(num::RRN, rrn(credit))
        .put(
            num::ORIGINAL_DATA,
            own_original(*b"0200", credit, switch_id),
        )
        .put(num::ACCOUNT_1, &freeze.payer_pan);
    m.build()
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

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;
    use crate::dialect::FreezeKey;
    use crate::store::FreezeState;

    fn freeze(amount_minor: u64) -> FreezeRecord {
        FreezeRecord {
            key: FreezeKey {
                acquirer: InstitutionId::from_field(num::ACQUIRER, b"01020000").unwrap(),
                transmission: *b"1205010203",
                stan: *b"000042",
            },
            payer_pan: "6222020000000000011".into(),
            payer_bank: "48020000".into(),
            amount_minor,
            currency: 156,
            received_minor: 0,
            reserved_minor: 0,
            state: FreezeState::Open,
            created_at_ms: 0,
            request_digest: [0; 32],
        }
    }

    fn fields(m: &Message) -> Vec<(u16, String)> {
        (1..=128)
            .filter_map(|n| m.get_str(n).map(|v| (n, v.to_string())))
            .collect()
    }

    /// Every field of each originated message, as a bank receives it.
    #[test]
    fn originated_messages_carry_every_field_they_should() {
        let now = NaiveDate::from_ymd_opt(2026, 12, 5)
            .unwrap()
            .and_hms_opt(1, 2, 3)
            .unwrap();
        let sent = sent_message(now, *b"000777");
        let earlier = SentMessage {
            stan: *b"000555",
            transmission: *b"1205005958",
        };
        let frozen = freeze(5_000);
        let switch = "00010000";
        let shared = |mti: &str, code: &str, amount: &str, receiver: &str| {
            vec![
                (3, code.to_string()),
                (4, amount.to_string()),
                (7, "1205010203".to_string()),
                (11, "000777".to_string()),
                (12, "090203".to_string()),
                (13, "1205".to_string()),
                (32, switch.to_string()),
                (33, switch.to_string()),
                (37, "050102000777".to_string()),
                (49, "156".to_string()),
                (100, receiver.to_string()),
            ]
            .into_iter()
            .chain(std::iter::once((0, mti.to_string())))
            .collect::<Vec<_>>()
        };
        let with = |mut want: Vec<(u16, String)>, more: &[(u16, &str)]| {
            let mti = want.pop().unwrap().1;
            for &(n, v) in more {
                want.retain(|(m, _)| *m != n);
                want.push((n, v.to_string()));
            }
            want.sort();
            (mti, want)
        };
        let freeze_f90 = "010000004212050102030000102000000000010000";
        let debit_f90 = "020000055512050059580000001000000000010000";
        let cases = [
            (
                debit(&frozen, 1_000, "6217000000000000019", &sent, now, switch),
                with(
                    shared("0200", "000000", "000000001000", "48020000"),
                    &[
                        (2, "6222020000000000011"),
                        (25, "06"),
                        (90, freeze_f90),
                        (103, "6217000000000000019"),
                    ],
                ),
            ),
            (
                credit(
                    &frozen,
                    1_000,
                    "6217000000000000019",
                    "01050000",
                    &sent,
                    now,
                    switch,
                ),
                with(
                    shared("0200", "260000", "000000001000", "01050000"),
                    &[
                        (2, "6217000000000000019"),
                        (25, "00"),
                        (90, freeze_f90),
                        (102, "6222020000000000011"),
                    ],
                ),
            ),
            (
                debit_reversal(
                    &frozen,
                    1_000,
                    "6217000000000000019",
                    &earlier,
                    &sent,
                    now,
                    switch,
                ),
                with(
                    shared("0420", "000000", "000000001000", "48020000"),
                    &[
                        (2, "6222020000000000011"),
                        (25, "06"),
                        (37, "050059000555"),
                        (90, debit_f90),
                        (103, "6217000000000000019"),
                    ],
                ),
            ),
            (
                credit_reversal(
                    &frozen,
                    1_000,
                    ("6217000000000000019", "01050000"),
                    &earlier,
                    &sent,
                    now,
                    switch,
                ),
                with(
                    shared("0420", "260000", "000000001000", "01050000"),
                    &[
                        (2, "6217000000000000019"),
                        (25, "00"),
                        (37, "050059000555"),
                        (90, debit_f90),
                        (102, "6222020000000000011"),
                    ],
                ),
            ),
            (
                freeze_reversal(&frozen, &sent, now, switch),
                with(
                    shared("0420", "030000", "000000005000", "48020000"),
                    &[(2, "6222020000000000011"), (25, "06"), (90, freeze_f90)],
                ),
            ),
            (
                // Beyond F4's twelve digits: the most it holds.
                unfreeze_notice(&freeze(u64::MAX), u64::MAX, &sent, now, switch),
                with(
                    shared("0120", "200000", "999999999999", "48020000"),
                    &[(2, "6222020000000000011"), (25, "06"), (90, freeze_f90)],
                ),
            ),
        ];
        for (built, (mti, want)) in cases {
            assert_eq!(built.mti_str(), mti);
            assert_eq!(fields(&built), want, "{mti}");
        }
    }
}

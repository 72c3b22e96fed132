//! A wallet's own clearing file, from its records of what it sent and what
//! the switch answered (`sim::wallet_records`): what a wallet's back office
//! would produce to reconcile with the switch's wallet file.
//!
//! The wallet dates its lines as the switch does: a freeze or unfreeze by
//! when it was sent (its F7, under the scheme's cutoff), a receive by the
//! settlement date the switch gave it (F15 of the 0210), or by its F7 when it
//! got no answer. A resend is the same line; the first answer received
//! stands. Requests refused with 63 are not the wallet's to send and are left
//! out, as the switch leaves them out.

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate};

use iso8583::codec::Message;
use iso8583::fields::{self, num};
use iso8583::response::ResponseCode;
use iso8583::spec::Spec;
use switchboard::clearing::file::{Header, Kind, Line, ParticipantFile, Role, Status};
use switchboard::clearing::{decimal, institution11, Settlement};
use switchboard::dialect::{FreezeKey, OriginalData};

use crate::wallet_records::WalletRecord;

/// What a wallet knows of one of its requests.
struct Seen<'a> {
    kind: Kind,
    request: &'a Message,
    answer: Option<&'a Message>,
}

fn kind_of(request: &Message) -> Option<Kind> {
    match (&request.mti()[..3], request.get_str(num::PROCESSING_CODE)) {
        (b"010", _) => Some(Kind::Freeze),
        (b"020", Some("400000")) => Some(Kind::Receive),
        (b"012", _) => Some(Kind::Unfreeze),
        _ => None,
    }
}

/// F15 (MMDD) as the date nearest to `near`.
fn date_of_f15(mmdd: &str, near: NaiveDate) -> Option<NaiveDate> {
    let month: u32 = mmdd.get(..2)?.parse().ok()?;
    let day: u32 = mmdd.get(2..4)?.parse().ok()?;
    (near.year() - 1..=near.year() + 1)
        .filter_map(|year| NaiveDate::from_ymd_opt(year, month, day))
        .min_by_key(|d| (*d - near).num_days().abs())
}

/// The clearing file of the wallet `institution` for settlement day `date`,
/// from its records. `switch` is the switch's institution id.
pub fn export(
    records: &[WalletRecord],
    institution: &str,
    switch: &str,
    date: NaiveDate,
    settlement: &Settlement,
    spec: &Spec,
) -> ParticipantFile {
    let participant = institution11(institution).unwrap_or_else(|| institution.to_string());
    let exponent = |currency: u16| spec.currency_exponents.get(&currency).copied().unwrap_or(2);
    // By (key, kind): the request, and its first answer.
    let mut seen: BTreeMap<(String, Kind), Seen> = BTreeMap::new();
    for record in records {
        let Some(kind) = kind_of(&record.request) else {
            continue;
        };
        let Ok(key) = FreezeKey::of_request(&record.request) else {
            continue;
        };
        if key.acquirer.to_string() != participant {
            continue;
        }
        let entry = seen.entry((key.to_string(), kind)).or_insert(Seen {
            kind,
            request: &record.request,
            answer: None,
        });
        if entry.answer.is_none() {
            entry.answer = record.answer.as_ref();
        }
    }
    let mut file = ParticipantFile::new(Header {
        role: Role::Wallet,
        participant,
        date,
        cutoff: settlement.cutoff_text(),
        time_zone: settlement.time_zone.to_string(),
        switch: institution11(switch).unwrap_or_else(|| switch.to_string()),
    });
    for ((key, _), s) in seen {
        let code = s
            .answer
            .and_then(|a| a.get_str(num::RESPONSE_CODE))
            .map(str::to_string);
        let sent_on = s
            .request
            .get(num::TRANSMISSION)
            .and_then(|t| settlement.date_of_transmission(t, date));
        let day = match (
            s.kind,
            s.answer.and_then(|a| a.get_str(num::SETTLEMENT_DATE)),
        ) {
            (Kind::Receive, Some(f15)) => date_of_f15(f15, date),
            _ => sent_on,
        };
        if day != Some(date)
            || code
                .as_ref()
                .is_some_and(|c| *c == ResponseCode::SECURITY_VIOLATION)
        {
            continue;
        }
        let status = match &code {
            Some(c) if *c == ResponseCode::APPROVED => Status::Approved,
            Some(_) => Status::Declined,
            None => Status::Unanswered,
        };
        let freeze = match s.kind {
            Kind::Freeze => key.clone(),
            _ => OriginalData::of(s.request)
                .map(|od| od.freeze_key().to_string())
                .unwrap_or_default(),
        };
        let currency = fields::currency(s.request).unwrap_or(0);
        let amount = decimal(
            fields::amount_minor(s.request).unwrap_or(0),
            exponent(currency),
        );
        file.lines.push(Line {
            kind: s.kind,
            key,
            freeze,
            pan: s
                .request
                .get_str(num::PAN)
                .map(iso8583::mask::mask_pan)
                .unwrap_or_default(),
            currency,
            amount,
            response_code: code.unwrap_or_default(),
            reversal: String::new(),
            status,
            settled: Line::settled_for(status, amount),
        });
    }
    file.sort();
    file
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f15_takes_the_nearest_year() {
        let near = NaiveDate::from_ymd_opt(2027, 1, 1).unwrap();
        assert_eq!(
            date_of_f15("1231", near),
            NaiveDate::from_ymd_opt(2026, 12, 31)
        );
        assert_eq!(
            date_of_f15("0102", near),
            NaiveDate::from_ymd_opt(2027, 1, 2)
        );
        assert_eq!(date_of_f15("1340", near), None);
        assert_eq!(date_of_f15("12", near), None);
    }
}

//! Typed values of common ISO 8583 fields: field numbers by name, amounts
//! (minor units, or an exact decimal with the currency's exponent), the
//! currency, the transmission date-time (field 7) and its year, and the Luhn
//! check of a card number.

use std::fmt;

use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike};
use rust_decimal::Decimal;

use crate::codec::Message;
use crate::spec::Spec;

/// Field numbers by name (ISO 8583:1987; names as the switchboard dialect uses them).
pub mod num {
    pub const PAN: u16 = 2;
    pub const PROCESSING_CODE: u16 = 3;
    pub const AMOUNT: u16 = 4;
    pub const TRANSMISSION: u16 = 7;
    pub const STAN: u16 = 11;
    pub const LOCAL_TIME: u16 = 12;
    pub const LOCAL_DATE: u16 = 13;
    pub const SETTLEMENT_DATE: u16 = 15;
    pub const POS_CONDITION: u16 = 25;
    pub const ACQUIRER: u16 = 32;
    pub const FORWARDER: u16 = 33;
    pub const RRN: u16 = 37;
    pub const AUTH_CODE: u16 = 38;
    pub const RESPONSE_CODE: u16 = 39;
    pub const CURRENCY: u16 = 49;
    pub const NETWORK_CODE: u16 = 70;
    pub const ORIGINAL_DATA: u16 = 90;
    pub const RECEIVER: u16 = 100;
    pub const ACCOUNT_1: u16 = 102;
    pub const ACCOUNT_2: u16 = 103;
    pub const MAC: u16 = 128;
}

/// A field that is missing or whose value cannot be read as the type asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: u16,
    pub reason: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "field {}: {}", self.field, self.reason)
    }
}

impl std::error::Error for FieldError {}

pub fn field_err(field: u16, reason: impl Into<String>) -> FieldError {
    FieldError {
        field,
        reason: reason.into(),
    }
}

/// The value of a field that must be present.
pub fn required(msg: &Message, field: u16) -> Result<&[u8], FieldError> {
    msg.get(field).ok_or_else(|| field_err(field, "missing"))
}

/// Exactly `N` ASCII digits.
pub fn digits<const N: usize>(field: u16, value: &[u8]) -> Result<[u8; N], FieldError> {
    if value.len() != N {
        return Err(field_err(
            field,
            format!("expected {N} digits, got {}", value.len()),
        ));
    }
    if let Some(i) = value.iter().position(|b| !b.is_ascii_digit()) {
        return Err(field_err(field, format!("byte {i} is not a digit")));
    }
    let mut out = [0u8; N];
    out.copy_from_slice(value);
    Ok(out)
}

/// A number of 1 to 19 ASCII digits.
pub fn parse_u64(field: u16, value: &[u8]) -> Result<u64, FieldError> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return Err(field_err(field, "not a number of at most 19 digits"));
    }
    Ok(value
        .iter()
        .fold(0u64, |acc, &b| acc * 10 + (b - b'0') as u64))
}

/// Field 4 in minor units (fen for CNY).
pub fn amount_minor(msg: &Message) -> Result<u64, FieldError> {
    let value = required(msg, num::AMOUNT)?;
    digits::<12>(num::AMOUNT, value)?;
    parse_u64(num::AMOUNT, value)
}

/// Field 4 as written on the wire: 12 digits, zero-filled.
pub fn format_amount(amount_minor: u64) -> Result<String, FieldError> {
    if amount_minor > 999_999_999_999 {
        return Err(field_err(num::AMOUNT, "amount does not fit 12 digits"));
    }
    Ok(format!("{amount_minor:012}"))
}

/// Field 49 as an ISO 4217 numeric code.
pub fn currency(msg: &Message) -> Result<u16, FieldError> {
    currency_of(required(msg, num::CURRENCY)?)
}

/// A field 49 value as an ISO 4217 numeric code.
pub fn currency_of(value: &[u8]) -> Result<u16, FieldError> {
    let value = digits::<3>(num::CURRENCY, value)?;
    Ok(parse_u64(num::CURRENCY, &value)? as u16)
}

/// Field 4 as an exact decimal in major units, using the currency's exponent
/// from the spec (e.g. 000000010050 CNY → 100.50).
pub fn amount_decimal(spec: &Spec, msg: &Message) -> Result<Decimal, FieldError> {
    let minor = amount_minor(msg)?;
    let code = currency(msg)?;
    let exponent = *spec.currency_exponents.get(&code).ok_or_else(|| {
        field_err(
            num::CURRENCY,
            format!("currency {code:03} has no exponent in spec {}", spec.name),
        )
    })?;
    Ok(Decimal::from_i128_with_scale(minor as i128, exponent))
}

/// Field 7 (MMDDhhmmss, UTC) as a full date-time: the year is the most recent
/// one that does not put it after `now` (specs/README.md). `None` when the value is
/// not a date-time at all.
pub fn transmission_datetime(value: &[u8; 10], now: NaiveDateTime) -> Option<NaiveDateTime> {
    let part = |i: usize| ((value[i] - b'0') as u32) * 10 + (value[i + 1] - b'0') as u32;
    if !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let (month, day, hour, minute, second) = (part(0), part(2), part(4), part(6), part(8));
    // 29 February exists only every four (at most eight) years.
    for year in (now.year() - 8..=now.year()).rev() {
        if let Some(dt) = NaiveDate::from_ymd_opt(year, month, day)
            .and_then(|d| d.and_hms_opt(hour, minute, second))
        {
            if dt <= now {
                return Some(dt);
            }
        }
    }
    None
}

/// Field 7 for a moment: MMDDhhmmss.
pub fn format_transmission(at: NaiveDateTime) -> String {
    String::from_utf8_lossy(&transmission_digits(at)).into_owned()
}

/// Field 7 for a moment as its ten digits, MMDDhhmmss, written without a
/// format string or an allocation (every message the switch originates
/// carries one, and fields 12 and 13 are slices of the same digits). A leap
/// second reads as :59.
pub fn transmission_digits(at: NaiveDateTime) -> [u8; 10] {
    let mut digits = [0u8; 10];
    let parts = [at.month(), at.day(), at.hour(), at.minute(), at.second()];
    for (pair, part) in digits.chunks_exact_mut(2).zip(parts) {
        pair[0] = b'0' + (part / 10) as u8;
        pair[1] = b'0' + (part % 10) as u8;
    }
    digits
}

/// Luhn (mod 10) check of a card number; false for anything not all digits.
pub fn luhn_valid(pan: &[u8]) -> bool {
    if pan.len() < 2 || !pan.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let sum: u32 = pan
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &b)| {
            let d = (b - b'0') as u32;
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn freeze() -> Message {
        let mut m = Message::new(*b"0100");
        m.set(4, "000000010050").set(7, "1123112233").set(49, "156");
        m
    }

    #[test]
    fn amounts_are_exact() {
        let spec = Spec::switchboard();
        let m = freeze();
        assert_eq!(amount_minor(&m).unwrap(), 10050);
        assert_eq!(amount_decimal(&spec, &m).unwrap().to_string(), "100.50");
        assert_eq!(format_amount(10050).unwrap(), "000000010050");
        assert!(format_amount(1_000_000_000_000).is_err());
        let mut bad = m.clone();
        bad.set(4, "00000001005x");
        assert_eq!(amount_minor(&bad).unwrap_err().field, 4);
    }

    #[test]
    fn transmission_year_is_most_recent_not_in_future() {
        let now = NaiveDate::from_ymd_opt(2026, 1, 2)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap();
        let dt = transmission_datetime(b"1231235959", now).unwrap();
        assert_eq!(dt.year(), 2025);
        let dt = transmission_datetime(b"0101120000", now).unwrap();
        assert_eq!(dt.year(), 2026);
        let dt = transmission_datetime(b"0229000000", now).unwrap();
        assert_eq!(dt.year(), 2024);
        assert!(transmission_datetime(b"1332000000", now).is_none());
        assert_eq!(format_transmission(dt), "0229000000");
    }

    #[test]
    fn transmission_digits_are_chronos_format() {
        let mut at = NaiveDate::from_ymd_opt(2024, 1, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap();
        // Every month, day, hour, minute and second digit pair is met.
        while at.year() == 2024 {
            let expected = at.format("%m%d%H%M%S").to_string();
            assert_eq!(&transmission_digits(at), expected.as_bytes());
            at += chrono::Duration::seconds(3_607);
        }
    }

    #[test]
    fn luhn() {
        assert!(luhn_valid(b"4111111111111111"));
        assert!(!luhn_valid(b"4111111111111112"));
        assert!(!luhn_valid(b"41111111111x1111"));
    }
}

//! Typed views of the fields the switch reasons about: amounts, field 90
//! (original data elements), institution ids, the freeze key, the transmission
//! date-time and its year, and the Luhn check of a card number.

use std::fmt;

use chrono::{Datelike, NaiveDate, NaiveDateTime};
use rust_decimal::Decimal;

use crate::codec::{Message, Mti};
use crate::spec::Spec;

/// Field numbers of the switchboard dialect, by name.
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

fn field_err(field: u16, reason: impl Into<String>) -> FieldError {
    FieldError {
        field,
        reason: reason.into(),
    }
}

/// The value of a field that must be present.
pub fn required(msg: &Message, field: u16) -> Result<&[u8], FieldError> {
    msg.get(field)
        .map(|v| &v[..])
        .ok_or_else(|| field_err(field, "missing"))
}

/// Exactly `N` ASCII digits.
fn digits<const N: usize>(field: u16, value: &[u8]) -> Result<[u8; N], FieldError> {
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

fn parse_u64(field: u16, value: &[u8]) -> Result<u64, FieldError> {
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
    let value = digits::<3>(num::CURRENCY, required(msg, num::CURRENCY)?)?;
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

/// An institution id (fields 32, 33, 100) right-justified and zero-filled to 11
/// digits, as field 90 carries it: the form keys are compared in.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstitutionId(pub [u8; 11]);

impl InstitutionId {
    /// From an LLVAR field value of 1–11 digits.
    pub fn from_field(field: u16, value: &[u8]) -> Result<Self, FieldError> {
        if value.is_empty() || value.len() > 11 {
            return Err(field_err(field, "institution id must have 1 to 11 digits"));
        }
        if !value.iter().all(u8::is_ascii_digit) {
            return Err(field_err(field, "institution id must be digits"));
        }
        let mut id = [b'0'; 11];
        id[11 - value.len()..].copy_from_slice(value);
        Ok(InstitutionId(id))
    }

    pub const ZERO: InstitutionId = InstitutionId([b'0'; 11]);

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("digits")
    }
}

impl fmt::Debug for InstitutionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for InstitutionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// "Original date and sequence number" of a freeze: the wallet's acquiring
/// institution (F32), transmission date-time (F7) and STAN (F11) of its 0100.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct FreezeKey {
    pub acquirer: InstitutionId,
    pub transmission: [u8; 10],
    pub stan: [u8; 6],
}

impl FreezeKey {
    /// The key a request names itself by (F32, F7, F11).
    pub fn of_request(msg: &Message) -> Result<Self, FieldError> {
        Ok(FreezeKey {
            acquirer: InstitutionId::from_field(num::ACQUIRER, required(msg, num::ACQUIRER)?)?,
            transmission: digits(num::TRANSMISSION, required(msg, num::TRANSMISSION)?)?,
            stan: digits(num::STAN, required(msg, num::STAN)?)?,
        })
    }
}

impl fmt::Display for FreezeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            self.acquirer,
            std::str::from_utf8(&self.transmission).unwrap_or("?"),
            std::str::from_utf8(&self.stan).unwrap_or("?")
        )
    }
}

/// Field 90, original data elements (n42): original MTI (4), STAN (6),
/// transmission date-time (10), acquirer (11) and forwarder (11), the last two
/// right-justified and zero-filled.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct OriginalData {
    pub mti: Mti,
    pub stan: [u8; 6],
    pub transmission: [u8; 10],
    pub acquirer: InstitutionId,
    pub forwarder: InstitutionId,
}

impl OriginalData {
    /// Parses the 42 digits of field 90.
    pub fn parse(value: &[u8]) -> Result<Self, FieldError> {
        let all: [u8; 42] = digits(num::ORIGINAL_DATA, value)?;
        let mut od = OriginalData {
            mti: [0; 4],
            stan: [0; 6],
            transmission: [0; 10],
            acquirer: InstitutionId::ZERO,
            forwarder: InstitutionId::ZERO,
        };
        od.mti.copy_from_slice(&all[0..4]);
        od.stan.copy_from_slice(&all[4..10]);
        od.transmission.copy_from_slice(&all[10..20]);
        od.acquirer.0.copy_from_slice(&all[20..31]);
        od.forwarder.0.copy_from_slice(&all[31..42]);
        Ok(od)
    }

    /// Field 90 of a message.
    pub fn of(msg: &Message) -> Result<Self, FieldError> {
        Self::parse(required(msg, num::ORIGINAL_DATA)?)
    }

    /// Field 90 naming `original`: its MTI, F11, F7, F32 and F33 (zeros when absent).
    pub fn naming(original: &Message) -> Result<Self, FieldError> {
        let forwarder = match original.get(num::FORWARDER) {
            Some(v) => InstitutionId::from_field(num::FORWARDER, v)?,
            None => InstitutionId::ZERO,
        };
        let key = FreezeKey::of_request(original)?;
        Ok(OriginalData {
            mti: *original.mti(),
            stan: key.stan,
            transmission: key.transmission,
            acquirer: key.acquirer,
            forwarder,
        })
    }

    /// The 42 digits of field 90.
    pub fn to_bytes(&self) -> [u8; 42] {
        let mut out = [0u8; 42];
        out[0..4].copy_from_slice(&self.mti);
        out[4..10].copy_from_slice(&self.stan);
        out[10..20].copy_from_slice(&self.transmission);
        out[20..31].copy_from_slice(&self.acquirer.0);
        out[31..42].copy_from_slice(&self.forwarder.0);
        out
    }

    /// The freeze this names (acquirer, F7, STAN).
    pub fn freeze_key(&self) -> FreezeKey {
        FreezeKey {
            acquirer: self.acquirer,
            transmission: self.transmission,
            stan: self.stan,
        }
    }
}

/// Field 7 (MMDDhhmmss, UTC) as a full date-time: the year is the most recent
/// one that does not put it after `now` (DESIGN.md). `None` when the value is
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
    at.format("%m%d%H%M%S").to_string()
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
        m.set(4, "000000010050")
            .set(7, "1123112233")
            .set(11, "000123")
            .set(32, "01020000")
            .set(49, "156");
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
    fn field_90_round_trips_and_names_the_freeze() {
        let original = freeze();
        let od = OriginalData::naming(&original).unwrap();
        let text = od.to_bytes();
        assert_eq!(
            std::str::from_utf8(&text).unwrap(),
            "010000012311231122330000102000000000000000"
        );
        let back = OriginalData::parse(&text).unwrap();
        assert_eq!(back, od);
        assert_eq!(back.freeze_key(), FreezeKey::of_request(&original).unwrap());
        assert!(OriginalData::parse(b"0100").is_err());
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
    fn luhn() {
        assert!(luhn_valid(b"4111111111111111"));
        assert!(!luhn_valid(b"4111111111111112"));
        assert!(!luhn_valid(b"41111111111x1111"));
    }
}

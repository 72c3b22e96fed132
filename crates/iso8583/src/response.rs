//! Field 39 response codes: two alphanumeric characters, with the meanings
//! ISO 8583:1987 gives them.
//!
//! [`ResponseCode`] holds one code; its associated constants name the codes
//! this project uses. A dialect may use a code more narrowly than its ISO
//! name says (the red-packet dialect's uses are in `specs/README.md` and in
//! the `[response_codes]` table of its spec); the constants' docs say so
//! where it differs.
//!
//! ```
//! use iso8583::{response::ResponseCode, Message};
//!
//! let mut msg = Message::new(*b"0110");
//! msg.set(39, ResponseCode::INSUFFICIENT_FUNDS);
//! assert_eq!(ResponseCode::of(&msg), Some(ResponseCode::INSUFFICIENT_FUNDS));
//! assert_eq!(ResponseCode::INSUFFICIENT_FUNDS, "51");
//! assert_eq!("00".parse(), Ok(ResponseCode::APPROVED));
//! ```

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;

use crate::codec::Message;
use crate::fields::num;

/// A field 39 response code: exactly two ASCII letters or digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResponseCode([u8; 2]);

impl ResponseCode {
    /// Approved.
    pub const APPROVED: ResponseCode = ResponseCode(*b"00");
    /// Do not honour; a bank's decline that is passed on unchanged.
    pub const DO_NOT_HONOUR: ResponseCode = ResponseCode(*b"05");
    /// Invalid transaction; here: the original named by F90 was declined or is already closed.
    pub const INVALID_TRANSACTION: ResponseCode = ResponseCode(*b"12");
    /// Invalid amount; here: a zero F4, or a reversal's F4 differing from its original's.
    pub const INVALID_AMOUNT: ResponseCode = ResponseCode(*b"13");
    /// Invalid card number; here also an unknown BIN or an account the bank does not hold.
    pub const INVALID_CARD_NUMBER: ResponseCode = ResponseCode(*b"14");
    /// Unable to locate record on file; here: F90 names no freeze or no original.
    pub const UNABLE_TO_LOCATE_RECORD: ResponseCode = ResponseCode(*b"25");
    /// Format error: unparsable, or breaking the dialect.
    pub const FORMAT_ERROR: ResponseCode = ResponseCode(*b"30");
    /// Insufficient funds: the sender's account cannot hold the freeze amount.
    pub const INSUFFICIENT_FUNDS: ResponseCode = ResponseCode(*b"51");
    /// Exceeds withdrawal amount limit; here: a receive would pass the frozen amount.
    pub const EXCEEDS_AMOUNT_LIMIT: ResponseCode = ResponseCode(*b"61");
    /// Security violation; here: the institution is not allowed on the link.
    pub const SECURITY_VIOLATION: ResponseCode = ResponseCode(*b"63");
    /// Response received too late: the bank did not answer within the timeout.
    pub const RESPONSE_RECEIVED_TOO_LATE: ResponseCode = ResponseCode(*b"68");
    /// Issuer or switch inoperative: the bank is unreachable or not signed on.
    pub const ISSUER_UNAVAILABLE: ResponseCode = ResponseCode(*b"91");
    /// Duplicate transmission; here: a request key reused with different content.
    pub const DUPLICATE_TRANSMISSION: ResponseCode = ResponseCode(*b"94");
    /// System malfunction: an internal failure; nothing was moved.
    pub const SYSTEM_MALFUNCTION: ResponseCode = ResponseCode(*b"96");
    /// MAC failure: field 128 missing or wrong on a link that requires MACs
    /// (see [`crate::mac`]).
    pub const MAC_FAILURE: ResponseCode = ResponseCode(*b"A0");

    /// The code in a field value: exactly two ASCII letters or digits.
    pub const fn from_bytes(value: &[u8]) -> Result<ResponseCode, InvalidResponseCode> {
        match value {
            [a, b] if a.is_ascii_alphanumeric() && b.is_ascii_alphanumeric() => {
                Ok(ResponseCode([*a, *b]))
            }
            _ => Err(InvalidResponseCode),
        }
    }

    /// Field 39 of `msg`; `None` when it is absent or not a well-formed code.
    pub fn of(msg: &Message) -> Option<ResponseCode> {
        msg.get(num::RESPONSE_CODE)
            .and_then(|v| ResponseCode::from_bytes(v).ok())
    }

    /// True for [`ResponseCode::APPROVED`].
    pub fn is_approved(self) -> bool {
        self == ResponseCode::APPROVED
    }

    /// The code as text, e.g. `"91"`.
    pub fn as_str(&self) -> &str {
        // Both bytes are ASCII alphanumerics (checked by every constructor).
        std::str::from_utf8(&self.0).expect("response codes are ASCII")
    }

    /// The code as it travels in field 39.
    pub fn as_bytes(&self) -> &[u8; 2] {
        &self.0
    }
}

/// A value that is not two ASCII letters or digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a response code is two ASCII letters or digits")]
pub struct InvalidResponseCode;

impl FromStr for ResponseCode {
    type Err = InvalidResponseCode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ResponseCode::from_bytes(s.as_bytes())
    }
}

impl TryFrom<&[u8]> for ResponseCode {
    type Error = InvalidResponseCode;

    fn try_from(value: &[u8]) -> Result<Self, Self::Error> {
        ResponseCode::from_bytes(value)
    }
}

impl TryFrom<&str> for ResponseCode {
    type Error = InvalidResponseCode;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        value.parse()
    }
}

/// As its two characters, e.g. `"91"`: how a configuration or a report
/// written as JSON or TOML holds a code.
impl serde::Serialize for ResponseCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// From its two characters; anything else is refused with the value named.
impl<'de> serde::Deserialize<'de> for ResponseCode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        ResponseCode::from_bytes(text.as_bytes()).map_err(|_| {
            serde::de::Error::custom(format!(
                "response code {text:?} is not two letters or digits"
            ))
        })
    }
}

impl fmt::Display for ResponseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl fmt::Debug for ResponseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResponseCode({:?})", self.as_str())
    }
}

impl AsRef<str> for ResponseCode {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<[u8]> for ResponseCode {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// The field value, for [`Message::set`].
impl From<ResponseCode> for Bytes {
    fn from(code: ResponseCode) -> Bytes {
        Bytes::copy_from_slice(&code.0)
    }
}

impl From<ResponseCode> for String {
    fn from(code: ResponseCode) -> String {
        code.as_str().to_string()
    }
}

impl PartialEq<str> for ResponseCode {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ResponseCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for ResponseCode {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<ResponseCode> for str {
    fn eq(&self, other: &ResponseCode) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<ResponseCode> for &str {
    fn eq(&self, other: &ResponseCode) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<ResponseCode> for String {
    fn eq(&self, other: &ResponseCode) -> bool {
        self == other.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_are_their_iso_values() {
        let all = [
            (ResponseCode::APPROVED, "00"),
            (ResponseCode::DO_NOT_HONOUR, "05"),
            (ResponseCode::INVALID_TRANSACTION, "12"),
            (ResponseCode::INVALID_AMOUNT, "13"),
            (ResponseCode::INVALID_CARD_NUMBER, "14"),
            (ResponseCode::UNABLE_TO_LOCATE_RECORD, "25"),
            (ResponseCode::FORMAT_ERROR, "30"),
            (ResponseCode::INSUFFICIENT_FUNDS, "51"),
            (ResponseCode::EXCEEDS_AMOUNT_LIMIT, "61"),
            (ResponseCode::SECURITY_VIOLATION, "63"),
            (ResponseCode::RESPONSE_RECEIVED_TOO_LATE, "68"),
            (ResponseCode::ISSUER_UNAVAILABLE, "91"),
            (ResponseCode::DUPLICATE_TRANSMISSION, "94"),
            (ResponseCode::SYSTEM_MALFUNCTION, "96"),
        ];
        for (code, text) in all {
            assert_eq!(code.as_str(), text);
            assert_eq!(code.as_bytes(), text.as_bytes());
            assert_eq!(text.parse::<ResponseCode>(), Ok(code));
        }
    }

    #[test]
    fn every_constant_is_in_the_dialect() {
        let spec = crate::Spec::switchboard();
        for code in [
            ResponseCode::APPROVED,
            ResponseCode::INVALID_TRANSACTION,
            ResponseCode::INVALID_AMOUNT,
            ResponseCode::INVALID_CARD_NUMBER,
            ResponseCode::UNABLE_TO_LOCATE_RECORD,
            ResponseCode::FORMAT_ERROR,
            ResponseCode::INSUFFICIENT_FUNDS,
            ResponseCode::EXCEEDS_AMOUNT_LIMIT,
            ResponseCode::SECURITY_VIOLATION,
            ResponseCode::RESPONSE_RECEIVED_TOO_LATE,
            ResponseCode::ISSUER_UNAVAILABLE,
            ResponseCode::DUPLICATE_TRANSMISSION,
            ResponseCode::SYSTEM_MALFUNCTION,
        ] {
            assert!(spec.response_code(code.as_str()).is_some(), "{code}");
        }
    }

    #[test]
    fn the_checked_constructor_takes_two_alphanumerics_only() {
        assert_eq!(ResponseCode::from_bytes(b"N7").unwrap().as_str(), "N7");
        assert_eq!(ResponseCode::from_bytes(b"a1").unwrap().as_str(), "a1");
        for bad in [
            &b""[..],
            b"0",
            b"000",
            b"0 ",
            b" 0",
            b"0-",
            b"\x000",
            b"\xff0",
        ] {
            assert_eq!(
                ResponseCode::from_bytes(bad),
                Err(InvalidResponseCode),
                "{bad:?}"
            );
        }
        assert!("9".parse::<ResponseCode>().is_err());
        assert!(ResponseCode::try_from("é").is_err());
        assert_eq!(
            ResponseCode::try_from(&b"91"[..]),
            Ok(ResponseCode::ISSUER_UNAVAILABLE)
        );
    }

    #[test]
    fn of_reads_field_39() {
        let mut msg = Message::new(*b"0110");
        assert_eq!(ResponseCode::of(&msg), None);
        msg.set(num::RESPONSE_CODE, ResponseCode::EXCEEDS_AMOUNT_LIMIT);
        assert_eq!(msg.get_str(num::RESPONSE_CODE), Some("61"));
        assert_eq!(
            ResponseCode::of(&msg),
            Some(ResponseCode::EXCEEDS_AMOUNT_LIMIT)
        );
        msg.set(num::RESPONSE_CODE, "6");
        assert_eq!(ResponseCode::of(&msg), None);
    }

    #[test]
    fn compares_with_text_and_prints_as_text() {
        let code = ResponseCode::APPROVED;
        assert!(code.is_approved());
        assert!(!ResponseCode::SYSTEM_MALFUNCTION.is_approved());
        assert_eq!(code, "00");
        assert_eq!("00", code);
        assert_eq!(code, *"00");
        assert_eq!(code, "00".to_string());
        assert_eq!("00".to_string(), code);
        assert_ne!(code, "0");
        assert_eq!(code.to_string(), "00");
        assert_eq!(format!("[{code:>4}]"), "[  00]");
        assert_eq!(format!("{code:?}"), "ResponseCode(\"00\")");
        assert_eq!(String::from(code), "00");
        assert_eq!(Bytes::from(code), Bytes::from_static(b"00"));
    }

    #[test]
    fn serializes_as_its_two_characters_and_refuses_anything_else() {
        #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
        struct Holder {
            code: ResponseCode,
        }
        let held = Holder {
            code: ResponseCode::MAC_FAILURE,
        };
        let json = serde_json::to_string(&held).unwrap();
        assert_eq!(json, r#"{"code":"A0"}"#);
        assert_eq!(serde_json::from_str::<Holder>(&json).unwrap(), held);
        let from_toml: Holder = toml::from_str("code = \"05\"").unwrap();
        assert_eq!(from_toml.code, ResponseCode::DO_NOT_HONOUR);
        for bad in [r#"{"code":"9"}"#, r#"{"code":"9!"}"#, r#"{"code":"051"}"#] {
            let e = serde_json::from_str::<Holder>(bad).unwrap_err().to_string();
            assert!(e.contains("is not two letters or digits"), "{bad}: {e}");
        }
        assert!(serde_json::from_str::<Holder>(r#"{"code":5}"#).is_err());
    }
}

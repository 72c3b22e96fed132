//! The red-packet dialect's typed views (specs/README.md): institution ids
//! as field 90 carries them, the freeze key ("original date and sequence
//! number": F32, F7, F11 of the wallet's 0100) and field 90 itself. The
//! generic field values (amounts, currency, field 7, Luhn) are the codec's
//! (`iso8583::fields`).

use std::fmt;

use iso8583::codec::{Message, Mti};
use iso8583::fields::{digits, field_err, num, required, FieldError};

/// The fields a network management response (0810) echoes from its 0800.
pub const NETWORK_ECHOED: [u16; 6] = [
    num::TRANSMISSION,
    num::STAN,
    num::ACQUIRER,
    num::FORWARDER,
    num::NETWORK_CODE,
    num::RECEIVER,
];

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

    /// The longest text a key is shown as (`acquirer/transmission/stan`).
    pub const TEXT_LEN: usize = 11 + 1 + 10 + 1 + 6;

    /// Appends the key's text, as `Display` shows it, without the
    /// formatting machinery: risk rules name a packet by it on every
    /// receive.
    pub fn push_text(&self, out: &mut String) {
        let [acquirer, transmission, stan] = self.text_parts();
        out.push_str(acquirer);
        out.push('/');
        out.push_str(transmission);
        out.push('/');
        out.push_str(stan);
    }

    /// The three parts of the key's text.
    fn text_parts(&self) -> [&str; 3] {
        [
            self.acquirer.as_str(),
            std::str::from_utf8(&self.transmission).unwrap_or("?"),
            std::str::from_utf8(&self.stan).unwrap_or("?"),
        ]
    }
}

impl fmt::Display for FreezeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [acquirer, transmission, stan] = self.text_parts();
        f.write_str(acquirer)?;
        f.write_str("/")?;
        f.write_str(transmission)?;
        f.write_str("/")?;
        f.write_str(stan)
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
    fn a_freeze_key_is_shown_as_acquirer_transmission_and_stan() {
        let key = FreezeKey::of_request(&freeze()).unwrap();
        assert_eq!(key.to_string(), "00001020000/1123112233/000123");
        let mut text = String::from("packet:");
        key.push_text(&mut text);
        assert_eq!(text, "packet:00001020000/1123112233/000123");
        assert!(key.to_string().len() <= FreezeKey::TEXT_LEN);
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
}

//! Dialect validation, separate from parsing: a message that parsed may still
//! break its dialect (a mandatory field missing, a letter in a numeric field, a
//! card number failing Luhn). Each violation maps to the response code the
//! dialect gives for it (30 format error, 14 invalid card number).

use std::fmt;

use crate::codec::Message;
use crate::fields::{luhn_valid, num};
use crate::response::ResponseCode;
use crate::spec::{ContentClass, LengthKind, MessageSpec, Spec};

/// One way a message breaks its dialect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// No message of the spec has this MTI (and processing code).
    UnknownMessage {
        mti: String,
        processing_code: Option<String>,
    },
    MissingMandatory {
        field: u16,
    },
    /// Present, but not listed for this message.
    NotAllowed {
        field: u16,
    },
    /// A byte outside the field's content class.
    BadContent {
        field: u16,
        position: usize,
        byte: u8,
        class: &'static str,
    },
    /// Wrong length for the field's format (for messages built in memory).
    BadLength {
        field: u16,
        length: usize,
        format: String,
    },
    /// Field 2 fails the Luhn check.
    Luhn {
        field: u16,
    },
}

impl Violation {
    /// The response code the dialect answers this violation with.
    pub fn response_code(&self) -> ResponseCode {
        match self {
            Violation::Luhn { .. } => ResponseCode::INVALID_CARD_NUMBER,
            _ => ResponseCode::FORMAT_ERROR,
        }
    }

    pub fn field(&self) -> Option<u16> {
        match self {
            Violation::UnknownMessage { .. } => None,
            Violation::MissingMandatory { field }
            | Violation::NotAllowed { field }
            | Violation::BadContent { field, .. }
            | Violation::BadLength { field, .. }
            | Violation::Luhn { field } => Some(*field),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::UnknownMessage {
                mti,
                processing_code: Some(pc),
            } => write!(f, "no message {mti} with processing code {pc} in this dialect"),
            Violation::UnknownMessage { mti, .. } => {
                write!(f, "no message {mti} in this dialect")
            }
            Violation::MissingMandatory { field } => {
                write!(f, "field {field}: mandatory but missing")
            }
            Violation::NotAllowed { field } => {
                write!(f, "field {field}: not allowed in this message")
            }
            Violation::BadContent {
                field,
                position,
                byte,
                class,
            } => write!(
                f,
                "field {field}: byte {byte:#04x} at position {position} is not allowed in class {class}"
            ),
            Violation::BadLength {
                field,
                length,
                format,
            } => write!(f, "field {field}: length {length} does not fit format {format}"),
            Violation::Luhn { field } => write!(f, "field {field}: card number fails the Luhn check"),
        }
    }
}

/// The outcome of validating one message.
#[derive(Debug, Clone)]
pub struct Validation<'s> {
    /// The message type it was recognised as.
    pub message: Option<&'s MessageSpec>,
    /// True when the MTI is the message's response.
    pub is_response: bool,
    pub violations: Vec<Violation>,
}

impl Validation<'_> {
    pub fn is_valid(&self) -> bool {
        self.violations.is_empty()
    }

    /// The response code for the first violation: 14 outranks 30 only when it is
    /// the sole problem, because a card number in a malformed message is not news.
    pub fn response_code(&self) -> Option<ResponseCode> {
        if self
            .violations
            .iter()
            .all(|v| matches!(v, Violation::Luhn { .. }))
        {
            self.violations.first().map(Violation::response_code)
        } else {
            Some(ResponseCode::FORMAT_ERROR)
        }
    }
}

/// Checks every field's content class and length, field 2's Luhn digit, and the
/// message's mandatory and allowed fields.
pub fn validate<'s>(spec: &'s Spec, msg: &Message) -> Validation<'s> {
    let mut violations = Vec::new();
    for (number, value) in msg.fields() {
        let Some(field) = spec.field(number) else {
            violations.push(Violation::NotAllowed { field: number });
            continue;
        };
        // Latin-1, GBK and GB 18030 values are UTF-8; their lengths count wire bytes.
        let wide = field.encoding.is_wide();
        let wire_len = if wide {
            let mut wire = Vec::with_capacity(value.len());
            crate::codec::charset::encode_wide(field.encoding, value, &mut wire)
                .map(|()| wire.len())
        } else {
            Ok(value.len())
        };
        let wire_len = match wire_len {
            Ok(len) => len,
            Err(invalid) => {
                violations.push(Violation::BadContent {
                    field: number,
                    position: invalid.index,
                    byte: invalid.byte,
                    class: field.class.as_str(),
                });
                continue;
            }
        };
        let length_ok = match field.length {
            LengthKind::Fixed(n) => wire_len == field.value_len_of(n),
            LengthKind::Variable { max, .. } => {
                field.units_of(wire_len) <= max && wire_len >= field.value_len_of(0)
            }
        };
        if !length_ok {
            violations.push(Violation::BadLength {
                field: number,
                length: value.len(),
                format: field.format.clone(),
            });
        }
        if field.class != ContentClass::B {
            let sign_ok =
                field.class != ContentClass::XN || matches!(value.first(), Some(b'C' | b'D'));
            let digits = if field.class == ContentClass::XN && !value.is_empty() {
                &value[1..]
            } else {
                value
            };
            let offset = value.len() - digits.len();
            if !sign_ok {
                violations.push(Violation::BadContent {
                    field: number,
                    position: 0,
                    byte: value.first().copied().unwrap_or(b' '),
                    class: field.class.as_str(),
                });
                continue;
            }
            let class = if field.class == ContentClass::XN {
                ContentClass::N
            } else {
                field.class
            };
            // Characters beyond ASCII are what a wide charset is declared for.
            let allowed = class.byte_table();
            if let Some(position) = digits
                .iter()
                .position(|&b| !(allowed[usize::from(b)] || wide && b >= 0x80))
            {
                let position = position + offset;
                violations.push(Violation::BadContent {
                    field: number,
                    position,
                    byte: value[position],
                    class: field.class.as_str(),
                });
                continue;
            }
        }
        if number == num::PAN && field.class == ContentClass::N && !luhn_valid(value) {
            violations.push(Violation::Luhn { field: number });
        }
    }

    let found = spec.message_for(msg.mti(), msg.get(num::PROCESSING_CODE));
    match found {
        None => violations.push(Violation::UnknownMessage {
            mti: msg.mti_str().to_string(),
            processing_code: msg.get_str(num::PROCESSING_CODE).map(str::to_string),
        }),
        Some((m, is_response)) => {
            let rule = if is_response { &m.response } else { &m.request };
            for &field in &rule.mandatory {
                if !msg.has(field) {
                    violations.push(Violation::MissingMandatory { field });
                }
            }
            for (number, _) in msg.fields() {
                if spec.field(number).is_some() && !rule.allows(number) {
                    violations.push(Violation::NotAllowed { field: number });
                }
            }
        }
    }
    Validation {
        message: found.map(|(m, _)| m),
        is_response: found.is_some_and(|(_, r)| r),
        violations,
    }
}

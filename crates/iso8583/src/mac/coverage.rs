//! Which bytes of a message its MAC covers, when a link's rule is not the
//! dialect's default.
//!
//! - [`Coverage::Message`] (`"message"`, the default): the message as sent,
//!   MTI through the last field before 128 (see the parent module).
//! - [`Coverage::Fields`] (a list such as `[0, 2, 3, 4, 7, 11, 39]`): the
//!   message authentication block many networks define instead, made of the
//!   listed elements in the listed order, each in its wire form (length
//!   prefix included) when the message carries it and skipped when it does
//!   not; `0` stands for the MTI as its four ASCII digits. Field 128 itself
//!   cannot be listed.

use std::fmt;
use std::str::FromStr;

use bytes::{Bytes, BytesMut};

use super::{field_bytes, MacError, MAC_FIELD};
use crate::codec::Message;
use crate::spec::Spec;

/// The most elements a field list may name (the MTI and fields 1–127).
const MAX_ELEMENTS: usize = 128;

/// A link's rule for the bytes its MACs cover.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Coverage {
    /// MTI through the last field before 128, as sent.
    #[default]
    Message,
    /// The listed elements in order (0 = the MTI), each as it is on the wire.
    Fields(Vec<u16>),
}

/// A coverage rule that names something a MAC cannot cover.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CoverageError {
    #[error("{0:?} is not a field number (0 for the MTI, 1 to 127)")]
    NotAField(String),
    #[error("field {0} cannot be covered: 128 carries the MAC and fields go up to 127")]
    OutOfRange(u16),
    #[error("field {0} is listed twice")]
    Repeated(u16),
    #[error("the list of covered fields is empty")]
    Empty,
}

impl Coverage {
    /// A field list, checked: not empty, each element once, 0 to 127.
    pub fn fields(list: &[u16]) -> Result<Coverage, CoverageError> {
        if list.is_empty() {
            return Err(CoverageError::Empty);
        }
        let mut seen = [false; MAX_ELEMENTS];
        for &n in list {
            let slot = seen
                .get_mut(usize::from(n))
                .ok_or(CoverageError::OutOfRange(n))?;
            if std::mem::replace(slot, true) {
                return Err(CoverageError::Repeated(n));
            }
        }
        Ok(Coverage::Fields(list.to_vec()))
    }

    /// The bytes covered for `msg` under a field list: `None` for
    /// [`Coverage::Message`], whose bytes come from the built message.
    pub(super) fn listed_bytes(
        &self,
        spec: &Spec,
        msg: &Message,
    ) -> Result<Option<Bytes>, MacError> {
        let Coverage::Fields(list) = self else {
            return Ok(None);
        };
        let mut out = BytesMut::new();
        for &n in list {
            if n == 0 {
                out.extend_from_slice(msg.mti());
            } else if n < MAC_FIELD {
                if let Some(value) = msg.get(n) {
                    out.extend_from_slice(&field_bytes(spec, n, value)?);
                }
            }
        }
        Ok(Some(out.freeze()))
    }
}

impl fmt::Display for Coverage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Coverage::Message => f.write_str("message"),
            Coverage::Fields(list) => {
                let names: Vec<String> = list.iter().map(u16::to_string).collect();
                write!(f, "{}", names.join(","))
            }
        }
    }
}

impl FromStr for Coverage {
    type Err = CoverageError;

    /// `message`, or field numbers separated by commas (`0,2,3,4,11`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().eq_ignore_ascii_case("message") {
            return Ok(Coverage::Message);
        }
        let list = s
            .split(',')
            .map(|part| {
                let part = part.trim();
                part.parse::<u16>()
                    .map_err(|_| CoverageError::NotAField(part.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Coverage::fields(&list)
    }
}

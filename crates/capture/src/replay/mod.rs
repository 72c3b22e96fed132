//! What a replay needs that is not a socket: the capture as a script of
//! requests with their captured answers ([`script`]), fields renewed so a
//! live host takes the requests as new ones ([`renew`]), and answers compared
//! field by field (`iso8583::diff`). The command line sends and receives.

pub mod renew;
pub mod script;

pub use iso8583::diff::{differences, Difference, Part};
pub use renew::{Renewer, DEFAULT_RENEW, RENEWABLE};
pub use script::{CapturedAnswer, Exchange, ScriptBuilder, ScriptOptions, ScriptStats};

/// A message of text fields, for the tests.
#[cfg(test)]
fn message(mti: &[u8; 4], fields: &[(u16, &str)]) -> iso8583::Message {
    let mut msg = iso8583::Message::new(*mti);
    for (number, value) in fields {
        msg.set(*number, value.as_bytes().to_vec());
    }
    msg
}

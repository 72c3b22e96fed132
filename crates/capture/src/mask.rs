//! Card numbers masked in the frames a [`Recorder`](crate::record::Recorder)
//! writes, so that a capture is not card data at rest.
//!
//! A frame keeps its length, its framing and every byte but the card digits,
//! so the capture decodes as the original did and its TCP sequence numbers
//! stay in step with the frames. The fields that carry a card number are
//! those the dialect marks sensitive (field 2, and 102/103 in ours) and the
//! track data (35, 36, 45) wherever the dialect defines them, binary fields
//! (a PIN block, a MAC) excepted: they hold no digits to mask. In each, the
//! first run of digits is the card number: its first 6 and last 4 digits are
//! kept (as [`iso8583::mask::kept_ends`] keeps them on screen), every other
//! digit of the field is written `0` (a digit, since packed BCD cannot hold
//! `*`); separators, letters and the expiry's place stay where they are.
//!
//! Where the digits sit in the frame is found without a second parser: the
//! message is parsed, built again as it is and built again masked, and the
//! bytes where those two builds differ are the card digits, in whatever
//! encoding the field has. The result is parsed once more and must hold the
//! masked values; when anything does not fit (a frame that does not parse, a
//! rebuild of another length), the frame's body is written as zeros, its
//! length kept: a capture may lose a message, never leak a card number.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use iso8583::codec::{build_bytes, parse, Message};
use iso8583::framing::{frame_len, split_frame, Frame, FramingConfig};
use iso8583::mask::kept_ends;
use iso8583::spec::{ContentClass, Spec};

/// Track 2 (35), track 3 (36) and track 1 (45) data: card numbers whether or
/// not the dialect marks them sensitive.
const TRACK_FIELDS: [u16; 3] = [35, 36, 45];

/// Masks card numbers in the frames of one dialect.
#[derive(Debug, Clone)]
pub struct CardMask {
    spec: Arc<Spec>,
    fields: Vec<u16>,
}

impl CardMask {
    /// Masking for messages of `spec`.
    pub fn new(spec: Arc<Spec>) -> CardMask {
        let fields = (1..=192u16)
            .filter(|&n| {
                spec.field(n).is_some_and(|f| {
                    f.class != ContentClass::B && (f.sensitive || TRACK_FIELDS.contains(&n))
                })
            })
            .collect();
        CardMask { spec, fields }
    }

    /// One whole frame (length prefix, header, body) as it may be recorded:
    /// borrowed when it carries no card number.
    pub fn frame<'a>(&self, framing: &FramingConfig, wire: &'a [u8]) -> Cow<'a, [u8]> {
        let body_at = match split_frame(framing, wire) {
            Ok(Frame::KeepAlive) => return Cow::Borrowed(wire),
            Ok(Frame::Message { body, .. }) => wire.len() - body.len(),
            // Not one frame of this framing: keep what says how long it is.
            Err(_) => match frame_len(framing, wire) {
                Ok(Some(_)) => framing.prefix.width().min(wire.len()),
                _ => 0,
            },
        };
        match self.body(&wire[body_at..]) {
            None => Cow::Borrowed(wire),
            Some(body) => {
                let mut masked = wire[..body_at].to_vec();
                masked.extend_from_slice(&body);
                Cow::Owned(masked)
            }
        }
    }

    /// The message `body` with its card numbers masked, or `None` when it has
    /// none.
    pub fn body(&self, body: &[u8]) -> Option<Vec<u8>> {
        let Ok(message) = parse(&self.spec, Bytes::copy_from_slice(body)) else {
            return Some(vec![0; body.len()]);
        };
        let mut masked = message.clone();
        let mut any = false;
        for &number in &self.fields {
            if let Some(value) = message.get(number) {
                masked.set(number, mask_digits(value));
                any = true;
            }
        }
        if !any {
            return None;
        }
        Some(
            self.in_place(body, &message, &masked)
                .unwrap_or_else(|| vec![0; body.len()]),
        )
    }

    /// `body` with the bytes that hold card digits taken from the masked
    /// build; `None` when the builds do not line up with it.
    fn in_place(&self, body: &[u8], message: &Message, masked: &Message) -> Option<Vec<u8>> {
        let as_is = build_bytes(&self.spec, message).ok()?;
        let hidden = build_bytes(&self.spec, masked).ok()?;
        if as_is.len() != body.len() || hidden.len() != body.len() {
            return None;
        }
        let mut out = body.to_vec();
        for (i, byte) in out.iter_mut().enumerate() {
            if as_is[i] != hidden[i] {
                *byte = hidden[i];
            }
        }
        let check = parse(&self.spec, Bytes::copy_from_slice(&out)).ok()?;
        self.fields
            .iter()
            .all(|&n| check.get(n) == masked.get(n))
            .then_some(out)
    }
}

/// A field's value with its card number masked: the first run of digits keeps
/// its first 6 and last 4, every other digit becomes `0`.
fn mask_digits(value: &[u8]) -> Vec<u8> {
    let start = value.iter().position(u8::is_ascii_digit).unwrap_or(0);
    let run = value[start..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    let (head, tail) = kept_ends(run);
    let kept = start..start + head;
    let kept_tail = start + run - tail..start + run;
    value
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if b.is_ascii_digit() && !kept.contains(&i) && !kept_tail.contains(&i) {
                b'0'
            } else {
                b
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_six_and_four_of_the_card_and_zeroes_the_rest_of_the_track() {
        assert_eq!(mask_digits(b"6222020200112233446"), b"6222020000000003446");
        assert_eq!(
            mask_digits(b"4761739001010119=22122011758928889"),
            b"4761730000000119=00000000000000000".to_vec()
        );
        assert_eq!(
            mask_digits(b"B4761739001010119^DOE/JOHN^2212201"),
            b"B4761730000000119^DOE/JOHN^0000000".to_vec()
        );
        assert_eq!(mask_digits(b"1234"), b"0000");
        assert_eq!(mask_digits(b""), b"");
    }
}

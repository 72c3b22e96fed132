//! Two messages compared field by field: an answer against the one
//! expected (a captured answer on replay, an earlier answer in a
//! conformance case).

use bytes::Bytes;

use crate::codec::Message;

/// What differs: the MTI, or a field by number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Mti,
    Field(u16),
}

/// One difference; `None` where the message has no such field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub part: Part,
    pub expected: Option<Bytes>,
    pub actual: Option<Bytes>,
}

/// The MTI and every field, in field order, that differ between the
/// expected message and the actual one, except the fields in `ignore`.
pub fn differences(expected: &Message, actual: &Message, ignore: &[u16]) -> Vec<Difference> {
    let mut found = Vec::new();
    if expected.mti() != actual.mti() {
        found.push(Difference {
            part: Part::Mti,
            expected: Some(Bytes::copy_from_slice(expected.mti())),
            actual: Some(Bytes::copy_from_slice(actual.mti())),
        });
    }
    let mut numbers: Vec<u16> = expected
        .fields()
        .chain(actual.fields())
        .map(|(number, _)| number)
        .filter(|number| !ignore.contains(number))
        .collect();
    numbers.sort_unstable();
    numbers.dedup();
    for number in numbers {
        let (e, a) = (expected.get(number), actual.get(number));
        if e != a {
            found.push(Difference {
                part: Part::Field(number),
                expected: expected.get_bytes(number),
                actual: actual.get_bytes(number),
            });
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(mti: &[u8; 4], fields: &[(u16, &str)]) -> Message {
        let mut msg = Message::new(*mti);
        for (number, value) in fields {
            msg.set(*number, value.as_bytes().to_vec());
        }
        msg
    }

    #[test]
    fn names_each_field_that_differs_and_skips_ignored_ones() {
        let expected = message(
            b"0110",
            &[(11, "000001"), (38, "AB1234"), (39, "00"), (44, "x")],
        );
        let actual = message(
            b"0110",
            &[(11, "000001"), (38, "ZZ9999"), (39, "51"), (54, "y")],
        );
        let found = differences(&expected, &actual, &[38]);
        let parts: Vec<Part> = found.iter().map(|d| d.part).collect();
        assert_eq!(parts, [Part::Field(39), Part::Field(44), Part::Field(54)]);
        assert_eq!(found[0].expected.as_deref(), Some(&b"00"[..]));
        assert_eq!(found[0].actual.as_deref(), Some(&b"51"[..]));
        assert_eq!(found[1].actual, None);
        assert_eq!(found[2].expected, None);
    }

    #[test]
    fn the_mti_comes_first_and_equal_answers_have_no_difference() {
        let a = message(b"0110", &[(39, "00")]);
        let b = message(b"0130", &[(39, "00")]);
        assert_eq!(differences(&a, &a, &[]), []);
        assert_eq!(differences(&a, &b, &[])[0].part, Part::Mti);
    }
}

//! The in-memory ISO 8583 message: an MTI and field values by number.
//!
//! Values are *logical*: digits and text as ASCII, binary fields as raw bytes,
//! whatever the wire encoding. For ASCII specs they are slices of the buffer the
//! message was parsed from (no copy); BCD or EBCDIC values are decoded once into
//! one per-message buffer.
//!
//! A field is kept as a span of one of the message's buffers rather than as
//! a `Bytes` of its own: making a `Bytes` by slicing, and dropping one, is an
//! atomic update of its buffer's count, and a parsed message would make and
//! drop one a field. A parsed message holds two buffers (the input and the
//! decoded values) whatever its fields; a value set by [`Message::set`] is a
//! buffer of its own.

use std::ops::Range;

use bytes::Bytes;

/// Message type indicator, four ASCII digits such as `b"0200"`.
pub type Mti = [u8; 4];

/// One ISO 8583 message.
///
/// Its parts are boxed: a message is moved often (into and out of the
/// futures that carry it), and a pointer moves more cheaply than the parts.
#[derive(Clone, Default)]
pub struct Message {
    p: Box<Parts>,
}

#[derive(Clone, Default)]
struct Parts {
    /// The bytes before the MTI, for specs with a `header_length`; empty otherwise.
    header: Bytes,
    mti: Mti,
    /// The buffer a parsed message was read from ([`INPUT`]).
    input: Bytes,
    /// A parsed message's decoded values, or the values given together to
    /// [`Message::from_spans`] ([`SHARED`]).
    shared: Bytes,
    /// Values set one by one: `owned[i]` is the whole value of the one
    /// field whose `store` is `OWNED + i`, and every slot has its field (a
    /// removed field's slot is filled by the last one).
    owned: Vec<Bytes>,
    /// Sorted by field number, no duplicates.
    fields: Vec<Field>,
}

/// Where a field's value is: `start..end` of [`INPUT`] or [`SHARED`], or the
/// whole of an owned slot.
#[derive(Clone, Copy, Debug)]
struct Field {
    number: u16,
    /// `u32`: a message may have a slot for each of the 65,536 field numbers.
    store: u32,
    start: u32,
    end: u32,
}

const INPUT: u32 = 0;
const SHARED: u32 = 1;
const OWNED: u32 = 2;

/// The longest input [`crate::codec::parse`] takes: its spans, and those of
/// its decoded values (at most twice as long), fit in `u32`. Far beyond any
/// frame (`framing` refuses one longer than its `max_frame_len`).
pub(crate) const MAX_PARSED_INPUT: usize = (u32::MAX / 2) as usize;

/// Up to this many fields, [`Message::position`] scans rather than bisects.
const SCANNED_FIELDS: usize = 32;

impl std::fmt::Debug for Message {
    /// Debug output masks nothing but prints only field numbers and lengths, so a
    /// stray `{:?}` in a log can never leak card data.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("mti", &self.mti_str())
            .field(
                "fields",
                &self.fields().map(|(n, v)| (n, v.len())).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Two messages are equal when their headers, MTIs and field values are,
/// however the values are held.
impl PartialEq for Message {
    fn eq(&self, other: &Message) -> bool {
        self.p.mti == other.p.mti
            && self.p.header == other.p.header
            && self.p.fields.len() == other.p.fields.len()
            && self.fields().eq(other.fields())
    }
}

impl Eq for Message {}

impl Message {
    /// An empty message of the given type.
    pub fn new(mti: Mti) -> Self {
        Message {
            p: Box::new(Parts {
                mti,
                ..Parts::default()
            }),
        }
    }

    /// An empty message with room for `capacity` fields.
    pub fn with_capacity(mti: Mti, capacity: usize) -> Self {
        Message {
            p: Box::new(Parts {
                mti,
                fields: Vec::with_capacity(capacity),
                ..Parts::default()
            }),
        }
    }

    /// A message whose values are cut from one buffer: `spans` gives each
    /// field's number and its value's range in `values`. Of a number given
    /// twice the later span is kept. A range outside `values` is an error
    /// naming the field.
    pub fn from_spans(
        mti: Mti,
        values: Bytes,
        spans: impl IntoIterator<Item = (u16, Range<usize>)>,
    ) -> Result<Message, SpanError> {
        let mut spans: Vec<(u16, Range<usize>)> = spans.into_iter().collect();
        // Stable: of a field given twice, the later span comes last.
        spans.sort_by_key(|(number, _)| *number);
        let mut fields: Vec<Field> = Vec::with_capacity(spans.len());
        for (number, range) in spans {
            let outside = range.start > range.end || range.end > values.len();
            let (Ok(start), Ok(end), false) = (
                u32::try_from(range.start),
                u32::try_from(range.end),
                outside,
            ) else {
                return Err(SpanError { number });
            };
            let field = Field {
                number,
                store: SHARED,
                start,
                end,
            };
            match fields.last_mut() {
                Some(last) if last.number == number => *last = field,
                _ => fields.push(field),
            }
        }
        Ok(Message {
            p: Box::new(Parts {
                mti,
                shared: values,
                fields,
                ..Parts::default()
            }),
        })
    }

    /// The buffers a parsed message's values are cut from: the input and
    /// the decoded values.
    pub(crate) fn set_buffers(&mut self, input: Bytes, decoded: Bytes) {
        self.p.input = input;
        self.p.shared = decoded;
    }

    /// Appends a field known to come after every field already present: its
    /// value is `range` of the input (`decoded` false) or of the decoded
    /// values ([`Message::set_buffers`]). `parse` takes no input longer than
    /// [`MAX_PARSED_INPUT`], so the range fits in `u32`.
    pub(crate) fn push_parsed(&mut self, number: u16, decoded: bool, range: Range<usize>) {
        debug_assert!(self.p.fields.last().is_none_or(|f| f.number < number));
        debug_assert!(range.end <= u32::MAX as usize);
        self.p.fields.push(Field {
            number,
            store: if decoded { SHARED } else { INPUT },
            start: range.start as u32,
            end: range.end as u32,
        });
    }

    fn buffer(&self, store: u32) -> &Bytes {
        match store {
            INPUT => &self.p.input,
            SHARED => &self.p.shared,
            slot => &self.p.owned[(slot - OWNED) as usize],
        }
    }

    fn value(&self, field: &Field) -> &[u8] {
        match field.store {
            INPUT => &self.p.input[field.start as usize..field.end as usize],
            SHARED => &self.p.shared[field.start as usize..field.end as usize],
            slot => &self.p.owned[(slot - OWNED) as usize],
        }
    }

    fn value_bytes(&self, field: &Field) -> Bytes {
        match field.store {
            INPUT | SHARED => self
                .buffer(field.store)
                .slice(field.start as usize..field.end as usize),
            slot => self.p.owned[(slot - OWNED) as usize].clone(),
        }
    }

    /// Puts `value` in a new owned slot.
    fn own(&mut self, value: Bytes) -> u32 {
        self.p.owned.push(value);
        // No more slots than fields, and at most 65,536 fields: no overflow.
        OWNED + (self.p.owned.len() - 1) as u32
    }

    /// The bytes before the MTI (a spec's `header_length`); empty when there are none.
    pub fn header(&self) -> &Bytes {
        &self.p.header
    }

    /// Sets the bytes written before the MTI; an empty header means the spec's default.
    pub fn set_header(&mut self, header: Bytes) {
        self.p.header = header;
    }

    pub fn mti(&self) -> &Mti {
        &self.p.mti
    }

    pub fn set_mti(&mut self, mti: Mti) {
        self.p.mti = mti;
    }

    /// The MTI as text.
    pub fn mti_str(&self) -> &str {
        std::str::from_utf8(&self.p.mti).unwrap_or("????")
    }

    /// Where field `number` is, or where it would go.
    fn position(&self, number: u16) -> Result<usize, usize> {
        // A message holds a few dozen fields, and most lookups are of the
        // low-numbered ones (2, 3, 4, 7, 11, 32, 39): a forward scan finds
        // them in a few predictable steps, where a binary search always takes
        // its five or six dependent loads. A message with many fields (a
        // hostile one may have 190) is searched by halves.
        if self.p.fields.len() > SCANNED_FIELDS {
            return self.p.fields.binary_search_by_key(&number, |f| f.number);
        }
        for (i, f) in self.p.fields.iter().enumerate() {
            if f.number >= number {
                return if f.number == number { Ok(i) } else { Err(i) };
            }
        }
        Err(self.p.fields.len())
    }

    /// The value of a field, if present.
    #[inline]
    pub fn get(&self, number: u16) -> Option<&[u8]> {
        self.position(number)
            .ok()
            .map(|i| self.value(&self.p.fields[i]))
    }

    /// The value of a field as a `Bytes` that shares the message's buffer:
    /// for a caller that keeps it beyond the message.
    pub fn get_bytes(&self, number: u16) -> Option<Bytes> {
        self.position(number)
            .ok()
            .map(|i| self.value_bytes(&self.p.fields[i]))
    }

    /// The value of a field as text; `None` when absent or not UTF-8 (binary).
    pub fn get_str(&self, number: u16) -> Option<&str> {
        self.get(number).and_then(|v| std::str::from_utf8(v).ok())
    }

    pub fn has(&self, number: u16) -> bool {
        self.position(number).is_ok()
    }

    /// Sets (or replaces) a field's logical value.
    pub fn set(&mut self, number: u16, value: impl Into<Bytes>) -> &mut Self {
        let value = value.into();
        // Builders set fields in increasing order: the new one goes last,
        // found without a search.
        let at = match self.p.fields.last() {
            Some(last) if last.number < number => Err(self.p.fields.len()),
            None => Err(0),
            Some(_) => self.position(number),
        };
        match at {
            Ok(i) => match self.p.fields[i].store {
                // The slot is this field's alone.
                slot if slot >= OWNED => self.p.owned[(slot - OWNED) as usize] = value,
                _ => self.p.fields[i].store = self.own(value),
            },
            Err(i) => {
                let field = Field {
                    number,
                    store: self.own(value),
                    start: 0,
                    end: 0,
                };
                self.p.fields.insert(i, field);
            }
        }
        self
    }

    /// Sets each of `numbers` that `from` holds to its value there, as a
    /// response echoes its request's fields. The values share `from`'s
    /// buffers: while this message's own input and decoded buffers are
    /// unused it takes `from`'s, one count each rather than one a field.
    pub fn echo(&mut self, from: &Message, numbers: &[u16]) -> &mut Self {
        for &number in numbers {
            let Ok(i) = from.position(number) else {
                continue;
            };
            let field = from.p.fields[i];
            if field.store < OWNED && self.adopt(field.store, from.buffer(field.store)) {
                // A value it had (an owned slot, perhaps) goes first.
                self.remove(number);
                let at = self.position(number).unwrap_or_else(|at| at);
                self.p.fields.insert(at, field);
            } else {
                self.set(number, from.value_bytes(&field));
            }
        }
        self
    }

    /// Whether this message's `store` (input or decoded) now is `buffer`:
    /// it was already, or it was empty and takes it (a field's span of an
    /// empty buffer is empty, and stays within the new one).
    fn adopt(&mut self, store: u32, buffer: &Bytes) -> bool {
        let own = if store == INPUT {
            &mut self.p.input
        } else {
            &mut self.p.shared
        };
        if own.as_ptr() == buffer.as_ptr() && own.len() == buffer.len() {
            return true;
        }
        if own.is_empty() {
            *own = buffer.clone();
            return true;
        }
        false
    }

    /// Removes a field, returning its value.
    pub fn remove(&mut self, number: u16) -> Option<Bytes> {
        let i = self.position(number).ok()?;
        let field = self.p.fields.remove(i);
        if field.store < OWNED {
            return Some(self.value_bytes(&field));
        }
        let value = self.p.owned.swap_remove((field.store - OWNED) as usize);
        // The last slot, unless it was this field's, moved into its place.
        let moved = OWNED + self.p.owned.len() as u32;
        if let Some(f) = self.p.fields.iter_mut().find(|f| f.store == moved) {
            f.store = field.store;
        }
        Some(value)
    }

    /// Fields in number order.
    pub fn fields(&self) -> impl Iterator<Item = (u16, &[u8])> + '_ {
        self.p.fields.iter().map(|f| (f.number, self.value(f)))
    }

    /// Number of fields present (bitmaps not counted).
    pub fn len(&self) -> usize {
        self.p.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.p.fields.is_empty()
    }
}

/// A span given to [`Message::from_spans`] lies outside its buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanError {
    /// The field whose span it is.
    pub number: u16,
}

impl std::fmt::Display for SpanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "field {}: value span outside its buffer", self.number)
    }
}

impl std::error::Error for SpanError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_keeps_fields_sorted_and_replaces() {
        let mut m = Message::new(*b"0200");
        m.set(11, "000001")
            .set(2, "4111111111111111")
            .set(4, "000000000100");
        m.set(11, "000002");
        let order: Vec<u16> = m.fields().map(|(n, _)| n).collect();
        assert_eq!(order, vec![2, 4, 11]);
        assert_eq!(m.get_str(11), Some("000002"));
        assert_eq!(m.remove(4).as_deref(), Some(&b"000000000100"[..]));
        assert!(!m.has(4));
    }

    /// A message of one buffer (`from_spans`) holding every even field
    /// number from 2 to 192, each value its number after `tag`.
    fn source(tag: &str) -> (Message, std::collections::BTreeMap<u16, Bytes>) {
        let mut values = Vec::new();
        let mut spans = Vec::new();
        let mut model = std::collections::BTreeMap::new();
        for number in (2u16..=192).step_by(2) {
            let value = format!("{tag}{number}");
            spans.push((number, values.len()..values.len() + value.len()));
            values.extend_from_slice(value.as_bytes());
            model.insert(number, Bytes::from(value));
        }
        let m = Message::from_spans(*b"0200", Bytes::from(values), spans).unwrap();
        (m, model)
    }

    proptest::proptest! {
        /// Fields set, replaced, removed and echoed from two messages of
        /// other buffers (the first echo takes one's buffer; the other's
        /// values become values of their own), in any order, in messages
        /// small enough to be scanned and large enough to be bisected,
        /// behave as a sorted map.
        #[test]
        fn fields_behave_as_a_sorted_map(
            steps in proptest::collection::vec((2u16..=192, 0u8..4), 0..300),
        ) {
            let sources = [source("a"), source("b")];
            let mut m = Message::new(*b"0200");
            let mut model = std::collections::BTreeMap::new();
            for (i, (number, op)) in steps.into_iter().enumerate() {
                match op {
                    0 => proptest::prop_assert_eq!(m.remove(number), model.remove(&number)),
                    1 => {
                        let value = Bytes::from(i.to_string());
                        m.set(number, value.clone());
                        model.insert(number, value);
                    }
                    _ => {
                        let (from, values) = &sources[usize::from(op - 2)];
                        m.echo(from, &[number, number + 1]);
                        for n in [number, number + 1] {
                            if let Some(v) = values.get(&n) {
                                model.insert(n, v.clone());
                            }
                        }
                    }
                }
                for probe in [1, 2, 3, number, 64, 128, 129, 192, 193] {
                    proptest::prop_assert_eq!(m.get(probe), model.get(&probe).map(|v| &v[..]));
                }
            }
            proptest::prop_assert_eq!(m.p.owned.len(), m.p.fields.iter().filter(|f| f.store >= OWNED).count());
            let fields: Vec<(u16, Bytes)> = m.fields().map(|(n, v)| (n, Bytes::copy_from_slice(v))).collect();
            let expected: Vec<(u16, Bytes)> = model.into_iter().collect();
            proptest::prop_assert_eq!(fields, expected);
        }
    }

    #[test]
    fn echo_shares_the_requests_buffers_and_replaces_what_was_set() {
        let spec = crate::Spec::load("cup-pos").unwrap();
        let mut request = Message::new(*b"0200");
        request
            .set(2, "6222020200112233441")
            .set(3, "000000")
            .set(4, "000000000100")
            .set(11, "000001");
        let parsed = crate::parse(&spec, crate::build_bytes(&spec, &request).unwrap()).unwrap();
        let mut response = Message::new(*b"0210");
        response.set(3, "999999").set(39, "00");
        response.echo(&parsed, &[2, 3, 4, 7, 11]);
        assert_eq!(response.get(3), Some(&b"000000"[..]));
        assert_eq!(response.get(39), Some(&b"00"[..]));
        assert_eq!(response.get(7), None);
        let numbers: Vec<u16> = response.fields().map(|(n, _)| n).collect();
        assert_eq!(numbers, vec![2, 3, 4, 11, 39]);
        // Every echoed value is a span of the request's one input buffer.
        assert_eq!(
            response.p.owned.len(),
            1,
            "only field 39 is a value of its own"
        );
        let shared: Vec<&Field> = response
            .p
            .fields
            .iter()
            .filter(|f| f.store < OWNED)
            .collect();
        assert_eq!(shared.len(), 4);
        for f in shared {
            assert_eq!(
                response.buffer(f.store).as_ptr(),
                parsed.buffer(f.store).as_ptr()
            );
        }
        // Echoing from a second message whose buffer differs copies nothing
        // wrongly: its values become values of their own.
        let other = crate::parse(&spec, crate::build_bytes(&spec, &request).unwrap()).unwrap();
        response.echo(&other, &[11]);
        assert_eq!(response.get(11), Some(&b"000001"[..]));
        assert_eq!(response.p.owned.len(), 2);
        assert_eq!(response.remove(3).as_deref(), Some(&b"000000"[..]));
        assert_eq!(response.get_str(39), Some("00"));
        assert_eq!(response.get_str(11), Some("000001"));
    }

    #[test]
    fn from_spans_cuts_one_buffer_and_refuses_a_span_outside_it() {
        let values = Bytes::from_static(b"000001000000999999");
        let m = Message::from_spans(
            *b"0200",
            values.clone(),
            [(11, 0..6), (3, 6..12), (3, 12..18)],
        )
        .unwrap();
        let fields: Vec<(u16, &[u8])> = m.fields().collect();
        assert_eq!(fields, vec![(3, &b"999999"[..]), (11, &b"000001"[..])]);
        assert_eq!(
            Message::from_spans(*b"0200", values.clone(), [(4, 12..19)]),
            Err(SpanError { number: 4 })
        );
        assert_eq!(
            Message::from_spans(*b"0200", values, [(4, Range { start: 7, end: 6 })])
                .unwrap_err()
                .to_string(),
            "field 4: value span outside its buffer"
        );
    }

    #[test]
    fn every_field_number_can_be_set_and_removed() {
        let mut m = Message::new(*b"0200");
        for n in 0..=u16::MAX {
            m.set(n, Bytes::from(n.to_string()));
        }
        assert_eq!(m.len(), 65_536);
        assert_eq!(m.get_str(u16::MAX), Some("65535"));
        assert_eq!(m.remove(0).as_deref(), Some(&b"0"[..]));
        assert_eq!(m.get_str(u16::MAX), Some("65535"));
        assert_eq!(m.get_str(1), Some("1"));
        m.set(0, "zero");
        assert_eq!(m.get_str(0), Some("zero"));
        assert!(m
            .fields()
            .all(|(n, v)| n == 0 || v == n.to_string().as_bytes()));
    }

    #[test]
    fn debug_never_prints_values() {
        let mut m = Message::new(*b"0100");
        m.set(2, "6222020200112233441");
        let s = format!("{m:?}");
        assert!(!s.contains("6222020200112233441"), "{s}");
    }
}

//! The in-memory ISO 8583 message: an MTI and field values by number.
//!
//! Values are *logical*: digits and text as ASCII, binary fields as raw bytes,
//! whatever the wire encoding. For ASCII specs they are slices of the buffer the
//! message was parsed from (no copy); BCD or EBCDIC values are decoded once into
//! one per-message buffer.

use bytes::Bytes;

/// Message type indicator, four ASCII digits such as `b"0200"`.
pub type Mti = [u8; 4];

/// One ISO 8583 message.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// The bytes before the MTI, for specs with a `header_length`; empty otherwise.
    header: Bytes,
    mti: Mti,
    /// Sorted by field number, no duplicates.
    fields: Vec<(u16, Bytes)>,
}

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
                &self
                    .fields
                    .iter()
                    .map(|(n, v)| (*n, v.len()))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Message {
    /// An empty message of the given type.
    pub fn new(mti: Mti) -> Self {
        Message {
            header: Bytes::new(),
            mti,
            fields: Vec::new(),
        }
    }

    /// An empty message with room for `capacity` fields.
    pub fn with_capacity(mti: Mti, capacity: usize) -> Self {
        Message {
            header: Bytes::new(),
            mti,
            fields: Vec::with_capacity(capacity),
        }
    }

    /// Appends a field known to come after every field already present.
    pub(crate) fn push_sorted(&mut self, number: u16, value: Bytes) {
        debug_assert!(self.fields.last().is_none_or(|(n, _)| *n < number));
        self.fields.push((number, value));
    }

    /// The bytes before the MTI (a spec's `header_length`); empty when there are none.
    pub fn header(&self) -> &Bytes {
        &self.header
    }

    /// Sets the bytes written before the MTI; an empty header means the spec's default.
    pub fn set_header(&mut self, header: Bytes) {
        self.header = header;
    }

    pub(crate) fn values_mut(&mut self) -> &mut [(u16, Bytes)] {
        &mut self.fields
    }

    pub fn mti(&self) -> &Mti {
        &self.mti
    }

    pub fn set_mti(&mut self, mti: Mti) {
        self.mti = mti;
    }

    /// The MTI as text.
    pub fn mti_str(&self) -> &str {
        std::str::from_utf8(&self.mti).unwrap_or("????")
    }

    /// Where field `number` is, or where it would go.
    fn position(&self, number: u16) -> Result<usize, usize> {
        // A message holds a few dozen fields, and most lookups are of the
        // low-numbered ones (2, 3, 4, 7, 11, 32, 39): a forward scan finds
        // them in a few predictable steps, where a binary search always takes
        // its five or six dependent loads. A message with many fields (a
        // hostile one may have 190) is searched by halves.
        if self.fields.len() > SCANNED_FIELDS {
            return self.fields.binary_search_by_key(&number, |(n, _)| *n);
        }
        for (i, (n, _)) in self.fields.iter().enumerate() {
            if *n >= number {
                return if *n == number { Ok(i) } else { Err(i) };
            }
        }
        Err(self.fields.len())
    }

    /// The value of a field, if present.
    #[inline]
    pub fn get(&self, number: u16) -> Option<&Bytes> {
        self.position(number).ok().map(|i| &self.fields[i].1)
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
        // Builders set fields in increasing order: the new one goes last.
        if self.fields.last().is_none_or(|(last, _)| *last < number) {
            self.fields.push((number, value));
            return self;
        }
        match self.position(number) {
            Ok(i) => self.fields[i].1 = value,
            Err(i) => self.fields.insert(i, (number, value)),
        }
        self
    }

    /// Removes a field, returning its value.
    pub fn remove(&mut self, number: u16) -> Option<Bytes> {
        self.position(number).ok().map(|i| self.fields.remove(i).1)
    }

    /// Fields in number order.
    pub fn fields(&self) -> impl Iterator<Item = (u16, &Bytes)> + '_ {
        self.fields.iter().map(|(n, v)| (*n, v))
    }

    /// Number of fields present (bitmaps not counted).
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

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

    proptest::proptest! {
        /// Fields set, replaced and removed in any order, in messages small
        /// enough to be scanned and large enough to be bisected, behave as
        /// a sorted map.
        #[test]
        fn fields_behave_as_a_sorted_map(
            steps in proptest::collection::vec((2u16..=192, proptest::bool::ANY), 0..300),
        ) {
            let mut m = Message::new(*b"0200");
            let mut model = std::collections::BTreeMap::new();
            for (i, (number, remove)) in steps.into_iter().enumerate() {
                if remove {
                    proptest::prop_assert_eq!(m.remove(number), model.remove(&number));
                } else {
                    let value = Bytes::from(i.to_string());
                    m.set(number, value.clone());
                    model.insert(number, value);
                }
                for probe in [1, 2, 3, number, 64, 128, 129, 192, 193] {
                    proptest::prop_assert_eq!(m.get(probe), model.get(&probe));
                }
            }
            let fields: Vec<(u16, Bytes)> = m.fields().map(|(n, v)| (n, v.clone())).collect();
            let expected: Vec<(u16, Bytes)> = model.into_iter().collect();
            proptest::prop_assert_eq!(fields, expected);
        }
    }

    #[test]
    fn debug_never_prints_values() {
        let mut m = Message::new(*b"0100");
        m.set(2, "6222020200112233441");
        let s = format!("{m:?}");
        assert!(!s.contains("6222020200112233441"), "{s}");
    }
}

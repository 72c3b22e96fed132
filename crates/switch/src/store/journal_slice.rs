//! The journal entries of a stretch of time packed into three buffers, for
//! end-of-day clearing ([`super::History::journal_slice`]).
//!
//! A day is millions of entries. Read one [`JournalEntry`] at a time, each
//! costs eight owned strings and a copy of its raw message, allocated and
//! freed again: that was most of what clearing spent. A [`JournalSlice`]
//! holds the text columns of all its entries in one `String`, the raw
//! messages in one buffer and a fixed-size record per entry; it lends each
//! entry out as a [`JournalView`] borrowing them. The raw messages of
//! answers can be left out ([`RawMessages::RequestsOnly`]): clearing takes
//! what it needs of an answer from its columns.

use bytes::{Bytes, BytesMut};

use super::{Direction, JournalEntry, StoreError, StoreResult};

/// Which raw messages a [`JournalSlice`] keeps.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RawMessages {
    All,
    /// Only those of requests (an MTI whose third digit is even): an
    /// answer's raw message reads as empty.
    RequestsOnly,
}

impl RawMessages {
    /// Whether the raw message of an entry with `mti` is kept.
    pub fn keeps(self, mti: &[u8; 4]) -> bool {
        self == RawMessages::All || !iso8583::mti::is_response(mti)
    }
}

/// One journal entry, borrowed from its [`JournalSlice`]: the columns of a
/// [`JournalEntry`] (through `Deref`), and its raw message.
#[derive(Clone, Copy, Debug)]
pub struct JournalView<'a> {
    pub columns: JournalColumns<'a>,
    raw: &'a Bytes,
    raw_at: Span,
}

impl<'a> std::ops::Deref for JournalView<'a> {
    type Target = JournalColumns<'a>;

    fn deref(&self) -> &JournalColumns<'a> {
        &self.columns
    }
}

impl JournalView<'_> {
    /// The message as it crossed the wire (sharing the slice's buffer, not a
    /// copy); empty when the slice was read without it.
    pub fn raw(&self) -> Bytes {
        if self.raw_at.len == 0 {
            return Bytes::new();
        }
        let start = self.raw_at.start as usize;
        self.raw.slice(start..start + self.raw_at.len as usize)
    }

    /// [`JournalView::raw`] borrowed, without counting a reference to the
    /// slice's buffer.
    pub fn raw_bytes(&self) -> &[u8] {
        let start = self.raw_at.start as usize;
        self.raw
            .get(start..start + self.raw_at.len as usize)
            .unwrap_or_default()
    }
}

/// Where a value lies in one of the slice's buffers.
#[derive(Clone, Copy, Debug)]
struct Span {
    start: u32,
    len: u32,
}

/// A text column with no value.
const NULL: Span = Span {
    start: 0,
    len: u32::MAX,
};

/// The text columns, in [`Packed::texts`] order.
const PEER: usize = 0;
const PROCESSING_CODE: usize = 1;
const STAN: usize = 2;
const TRANSMISSION: usize = 3;
const ACQUIRER: usize = 4;
const RESPONSE_CODE: usize = 5;
const PAN_MASKED: usize = 6;
const NOTE: usize = 7;
/// How many text columns an entry has ([`JournalColumns::texts`]).
pub const TEXTS: usize = 8;

/// An entry's fixed-size part.
#[derive(Clone, Copy, Debug)]
struct Packed {
    at_ms: i64,
    amount_minor: Option<u64>,
    mti: [u8; 4],
    direction: Direction,
    texts: [Span; TEXTS],
    raw: Span,
}

/// The entries of a stretch of time, in the order they were written (see
/// the module's comment).
#[derive(Debug, Default)]
pub struct JournalSlice {
    text: String,
    raw: Bytes,
    entries: Vec<Packed>,
}

impl JournalSlice {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries in order.
    pub fn iter(&self) -> impl Iterator<Item = JournalView<'_>> + '_ {
        self.entries.iter().map(|p| self.view(p))
    }

    fn view<'a>(&'a self, p: &Packed) -> JournalView<'a> {
        let text = |i: usize| {
            let span = p.texts[i];
            (span.len != u32::MAX).then(|| {
                let start = span.start as usize;
                // Each span was pushed as a whole `&str`: always on char boundaries.
                self.text
                    .get(start..start + span.len as usize)
                    .unwrap_or_default()
            })
        };
        JournalView {
            columns: JournalColumns {
                at_ms: p.at_ms,
                direction: p.direction,
                peer: text(PEER).unwrap_or_default(),
                mti: p.mti,
                processing_code: text(PROCESSING_CODE),
                stan: text(STAN),
                transmission: text(TRANSMISSION),
                acquirer: text(ACQUIRER),
                response_code: text(RESPONSE_CODE),
                pan_masked: text(PAN_MASKED),
                amount_minor: p.amount_minor,
                note: text(NOTE),
            },
            raw: &self.raw,
            raw_at: p.raw,
        }
    }

    /// An empty builder holding this slice's buffers: read the next slice
    /// into them instead of into fresh memory (a day is over a hundred
    /// slices of megabytes each, and fresh pages are cleared by the kernel).
    /// The raw messages' buffer is kept only when no message of the slice
    /// is still shared.
    pub fn recycle(self) -> JournalSliceBuilder {
        let mut text = self.text.into_bytes();
        text.clear();
        let raw = match self.raw.try_into_mut() {
            Ok(mut raw) => {
                raw.clear();
                raw
            }
            Err(_) => BytesMut::new(),
        };
        let mut entries = self.entries;
        entries.clear();
        JournalSliceBuilder { text, raw, entries }
    }

    /// The entries of `entries`, raw messages kept as `raw` says.
    pub fn of(entries: &[JournalEntry], raw: RawMessages) -> StoreResult<JournalSlice> {
        let mut builder = JournalSliceBuilder::default();
        for e in entries {
            builder.push(
                JournalColumns::of(e),
                raw.keeps(&e.mti).then_some(&e.raw[..]),
            )?;
        }
        builder.finish()
    }
}

impl JournalView<'_> {
    /// The entry as an owned [`JournalEntry`] (its raw message shared, not copied).
    pub fn to_entry(&self) -> JournalEntry {
        self.columns.to_entry(self.raw())
    }
}

/// An entry's columns but its raw message, borrowed from wherever the store
/// read them (or from a [`JournalSlice`]).
/// Its text columns are `&str`, or `&[u8]` when not yet checked to be UTF-8.
#[derive(Debug)]
pub struct JournalColumns<'a, T: ?Sized = str> {
    pub at_ms: i64,
    pub direction: Direction,
    pub peer: &'a T,
    pub mti: [u8; 4],
    pub processing_code: Option<&'a T>,
    pub stan: Option<&'a T>,
    pub transmission: Option<&'a T>,
    pub acquirer: Option<&'a T>,
    pub response_code: Option<&'a T>,
    pub pan_masked: Option<&'a T>,
    pub amount_minor: Option<u64>,
    pub note: Option<&'a T>,
}

impl<'a> JournalColumns<'a> {
    /// The columns of `e`, borrowed.
    pub fn of(e: &'a JournalEntry) -> JournalColumns<'a> {
        JournalColumns {
            at_ms: e.at_ms,
            direction: e.direction,
            peer: &e.peer,
            mti: e.mti,
            processing_code: e.processing_code.as_deref(),
            stan: e.stan.as_deref(),
            transmission: e.transmission.as_deref(),
            acquirer: e.acquirer.as_deref(),
            response_code: e.response_code.as_deref(),
            pan_masked: e.pan_masked.as_deref(),
            amount_minor: e.amount_minor,
            note: e.note.as_deref(),
        }
    }

    /// An owned entry of these columns and `raw`.
    pub fn to_entry(self, raw: Bytes) -> JournalEntry {
        let owned = |s: Option<&str>| s.map(str::to_string);
        JournalEntry {
            at_ms: self.at_ms,
            direction: self.direction,
            peer: self.peer.to_string(),
            mti: self.mti,
            processing_code: owned(self.processing_code),
            stan: owned(self.stan),
            transmission: owned(self.transmission),
            acquirer: owned(self.acquirer),
            response_code: owned(self.response_code),
            pan_masked: owned(self.pan_masked),
            amount_minor: self.amount_minor,
            note: owned(self.note),
            raw,
        }
    }

    /// The same columns with their text as bytes.
    pub fn as_bytes(self) -> JournalColumns<'a, [u8]> {
        fn bytes(value: Option<&str>) -> Option<&[u8]> {
            value.map(str::as_bytes)
        }
        JournalColumns {
            at_ms: self.at_ms,
            direction: self.direction,
            peer: self.peer.as_bytes(),
            mti: self.mti,
            processing_code: bytes(self.processing_code),
            stan: bytes(self.stan),
            transmission: bytes(self.transmission),
            acquirer: bytes(self.acquirer),
            response_code: bytes(self.response_code),
            pan_masked: bytes(self.pan_masked),
            amount_minor: self.amount_minor,
            note: bytes(self.note),
        }
    }
}

impl<'a, T: ?Sized> JournalColumns<'a, T> {
    /// The text columns: peer, processing code, STAN, transmission,
    /// acquirer, response code, masked PAN, note.
    pub fn texts(&self) -> [Option<&'a T>; TEXTS] {
        [
            Some(self.peer),
            self.processing_code,
            self.stan,
            self.transmission,
            self.acquirer,
            self.response_code,
            self.pan_masked,
            self.note,
        ]
    }
}

impl<T: ?Sized> Clone for JournalColumns<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T: ?Sized> Copy for JournalColumns<'_, T> {}

/// Builds a [`JournalSlice`] an entry at a time.
#[derive(Debug, Default)]
pub struct JournalSliceBuilder {
    /// The text columns as read, checked to be UTF-8 once for the whole
    /// slice ([`JournalSliceBuilder::finish`]) rather than column by column.
    text: Vec<u8>,
    raw: BytesMut,
    entries: Vec<Packed>,
}

/// The buffers are addressed with 32 bits: a slice holds less than 4 GiB of
/// text and as much of raw messages (a few minutes of the journal hold
/// megabytes).
fn too_large() -> StoreError {
    StoreError::Unavailable("a journal slice over 4 GiB: read a shorter stretch of time".into())
}

impl JournalSliceBuilder {
    /// Appends an entry; `raw` is its raw message when the slice keeps it.
    pub fn push(&mut self, c: JournalColumns<'_>, raw: Option<&[u8]>) -> StoreResult<()> {
        self.push_bytes(c.as_bytes(), raw)
    }

    /// Puts the entries in time order, those of the same millisecond in
    /// the order they were pushed: a store that reads entries in the order
    /// they were written, not by time, sorts them before
    /// [`JournalSliceBuilder::finish`].
    pub fn sort_by_time(&mut self) {
        if !self.entries.is_sorted_by_key(|e| e.at_ms) {
            self.entries.sort_by_key(|e| e.at_ms);
        }
    }

    /// [`JournalSliceBuilder::push`] with the text columns as bytes not yet
    /// checked to be UTF-8: [`JournalSliceBuilder::finish`] checks them all
    /// at once.
    pub fn push_bytes(
        &mut self,
        c: JournalColumns<'_, [u8]>,
        raw: Option<&[u8]>,
    ) -> StoreResult<()> {
        let mut texts = [NULL; TEXTS];
        for (span, value) in texts.iter_mut().zip(c.texts()) {
            if let Some(value) = value {
                *span = Span {
                    start: u32::try_from(self.text.len()).map_err(|_| too_large())?,
                    len: u32::try_from(value.len())
                        .ok()
                        .filter(|l| *l != u32::MAX)
                        .ok_or_else(too_large)?,
                };
                self.text.extend_from_slice(value);
            }
        }
        let raw = match raw {
            Some(bytes) => {
                let span = Span {
                    start: u32::try_from(self.raw.len()).map_err(|_| too_large())?,
                    len: u32::try_from(bytes.len()).map_err(|_| too_large())?,
                };
                self.raw.extend_from_slice(bytes);
                span
            }
            None => Span { start: 0, len: 0 },
        };
        self.entries.push(Packed {
            at_ms: c.at_ms,
            amount_minor: c.amount_minor,
            mti: c.mti,
            direction: c.direction,
            texts,
            raw,
        });
        Ok(())
    }

    /// The slice; an error when a text column is not UTF-8.
    pub fn finish(self) -> StoreResult<JournalSlice> {
        let not_text = || StoreError::Corrupt("a journal text column is not UTF-8".into());
        let text = String::from_utf8(self.text).map_err(|_| not_text())?;
        // Each column must be whole text by itself, not only all of them
        // together: a view lends each one out as a `&str`.
        let whole = |span: &Span| {
            span.len == u32::MAX
                || (text.is_char_boundary(span.start as usize)
                    && text.is_char_boundary(span.start as usize + span.len as usize))
        };
        if !self.entries.iter().all(|e| e.texts.iter().all(whole)) {
            return Err(not_text());
        }
        Ok(JournalSlice {
            text,
            raw: self.raw.freeze(),
            entries: self.entries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(mti: &[u8; 4], note: Option<&str>) -> JournalEntry {
        JournalEntry {
            at_ms: 7,
            direction: Direction::Out,
            peer: "bank 48020000".into(),
            mti: *mti,
            processing_code: Some("000000".into()),
            stan: Some("000123".into()),
            transmission: Some("1123101500".into()),
            acquirer: None,
            response_code: Some("00".into()),
            pan_masked: Some("622202******1234".into()),
            amount_minor: Some(1_500),
            note: note.map(str::to_string),
            raw: Bytes::from_static(b"raw bytes"),
        }
    }

    #[test]
    fn views_give_back_every_column() {
        let entries = [entry(b"0200", None), entry(b"0210", Some("é, late"))];
        let slice = JournalSlice::of(&entries, RawMessages::All).unwrap();
        assert_eq!(slice.len(), 2);
        for (view, e) in slice.iter().zip(&entries) {
            assert_eq!(view.at_ms, e.at_ms);
            assert_eq!(view.direction, e.direction);
            assert_eq!(view.peer, e.peer);
            assert_eq!(view.mti, e.mti);
            assert_eq!(view.processing_code, e.processing_code.as_deref());
            assert_eq!(view.stan, e.stan.as_deref());
            assert_eq!(view.transmission, e.transmission.as_deref());
            assert_eq!(view.acquirer, None);
            assert_eq!(view.response_code, e.response_code.as_deref());
            assert_eq!(view.pan_masked, e.pan_masked.as_deref());
            assert_eq!(view.amount_minor, e.amount_minor);
            assert_eq!(view.note, e.note.as_deref());
            assert_eq!(view.raw(), e.raw);
        }
    }

    #[test]
    fn answers_raw_messages_are_left_out_when_asked() {
        let entries = [entry(b"0200", None), entry(b"0210", None)];
        let slice = JournalSlice::of(&entries, RawMessages::RequestsOnly).unwrap();
        let raws: Vec<Bytes> = slice.iter().map(|v| v.raw()).collect();
        assert_eq!(raws, [Bytes::from_static(b"raw bytes"), Bytes::new()]);
    }

    #[test]
    fn a_column_that_is_not_utf8_is_refused() {
        let e = entry(b"0200", None);
        let columns = |peer: &'static [u8], note: Option<&'static [u8]>| JournalColumns {
            at_ms: e.at_ms,
            direction: e.direction,
            peer,
            mti: e.mti,
            processing_code: None,
            stan: None,
            transmission: None,
            acquirer: None,
            response_code: None,
            pan_masked: None,
            amount_minor: None,
            note,
        };
        let mut builder = JournalSliceBuilder::default();
        builder
            .push_bytes(columns(b"bank \xff", None), None)
            .unwrap();
        assert!(builder.finish().is_err());
        // Two halves of a character, each column invalid by itself though
        // the text of the slice together is UTF-8.
        let mut builder = JournalSliceBuilder::default();
        builder
            .push_bytes(columns(b"bank \xc3", Some(b"\xa9")), None)
            .unwrap();
        assert!(builder.finish().is_err());
        let mut builder = JournalSliceBuilder::default();
        builder
            .push_bytes(columns(b"bank", Some("\u{e9}".as_bytes())), None)
            .unwrap();
        let slice = builder.finish().unwrap();
        assert_eq!(slice.iter().next().unwrap().note, Some("\u{e9}"));
    }

    #[test]
    fn a_recycled_slice_reads_as_new() {
        let entries = [entry(b"0200", Some("first"))];
        let slice = JournalSlice::of(&entries, RawMessages::All).unwrap();
        let mut builder = slice.recycle();
        let second = entry(b"0210", None);
        builder
            .push(
                JournalColumns {
                    at_ms: 9,
                    direction: second.direction,
                    peer: &second.peer,
                    mti: second.mti,
                    processing_code: None,
                    stan: None,
                    transmission: None,
                    acquirer: None,
                    response_code: Some("05"),
                    pan_masked: None,
                    amount_minor: None,
                    note: None,
                },
                Some(b"other"),
            )
            .unwrap();
        let slice = builder.finish().unwrap();
        assert_eq!(slice.len(), 1);
        let view = slice.iter().next().unwrap();
        assert_eq!(
            (view.at_ms, view.response_code, view.note),
            (9, Some("05"), None)
        );
        assert_eq!(view.raw(), Bytes::from_static(b"other"));
    }

    #[test]
    fn an_empty_text_is_not_a_missing_one() {
        let mut e = entry(b"0200", Some(""));
        e.acquirer = Some(String::new());
        let slice = JournalSlice::of(&[e], RawMessages::All).unwrap();
        let view = slice.iter().next().unwrap();
        assert_eq!(view.note, Some(""));
        assert_eq!(view.acquirer, Some(""));
    }
}

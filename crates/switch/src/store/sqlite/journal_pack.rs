//! The binary form of a journal pack: the entries one commit writes, kept in
//! one row of `journal_packs` instead of a row each (a row costs the writer
//! a statement, a b-tree insert and an index insert; a pack of a hundred
//! entries costs one of each).
//!
//! A pack is two values. `body` holds each entry's columns, which carry no
//! card data (the PAN is masked): a version byte and a `u32` count, then
//! per entry its time (`i64`), a flags byte (direction out; amount
//! present), the amount (`u64`), the MTI (4 bytes), the lengths of its
//! eight text columns and of its raw message (`u32` each, `u32::MAX` for a
//! text with no value), then the text bytes. `raws` holds the raw messages
//! one after another, sealed as one value when a data key is configured.
//! Retention empties `raws`, or writes a pack again with the lengths of the
//! messages it emptied set to 0. Both are read back as untrusted input,
//! through [`Reader`].
//!
//! Since version 2 both values are stored compressed ([`Pack::stored`]):
//! the body as the byte 2, the length of the version-1 body it opens to
//! (`u32`) and that body as an LZ4 block; `raws`, when not empty, the same
//! way (byte 2, length, block), then sealed. A pack's entries repeat one
//! another (peers, keys, the fields a debit and a credit copy from the
//! receive), so LZ4 makes them 4–6 times smaller: most of what a receive
//! writes is its journal, and every byte of it is written to the WAL,
//! synced and copied again at each checkpoint. Packs of version 1 stay
//! readable as they are. A stored length is checked before anything is
//! allocated for it: at most [`MAX_OPENED`] bytes, and no more than LZ4
//! can make of the block's size.

use bytes::Bytes;
use smallvec::SmallVec;

use crate::store::journal_slice::{JournalColumns, TEXTS};
use crate::store::{Direction, JournalEntry, StoreResult};

use super::byte_reader::Reader;

const VERSION: u8 = 1;
/// The first byte of a compressed value: a version-2 body, or its `raws`.
const COMPRESSED: u8 = 2;
/// The most bytes a stored value may open to: the writer cuts a pack before
/// either of its values would pass it ([`Pack::fits`]), and [`Pack::push`]
/// cuts one entry's parts so that a pack of one entry stays within it.
pub(super) const MAX_OPENED: usize = 256 << 20;
/// The most bytes kept of one entry's raw message (a link's frames are 8 KiB
/// unless `max_frame_len` says more).
const MAX_RAW: usize = MAX_OPENED;
/// The most bytes kept of one of an entry's texts: its eight texts and fixed
/// part stay within [`MAX_OPENED`].
const MAX_TEXT: usize = MAX_OPENED / 16;
/// LZ4 makes at most about 255 bytes of one (a match's length grows by 255
/// per extra byte): a length beyond that is not a block's.
const MAX_RATIO: usize = 255;
/// The length of a text column with no value.
const NO_VALUE: u32 = u32::MAX;
const OUT: u8 = 1;
const HAS_AMOUNT: u8 = 2;
/// The fixed part of an entry: time, flags, amount, MTI, nine lengths.
const FIXED: usize = 8 + 1 + 8 + 4 + (TEXTS + 1) * 4;

/// An entry's part held inline: the fixed part and about 130 bytes of
/// texts (a peer, a masked PAN, a STAN, …), which every message of the
/// dialect stays within; a longer one goes to the heap.
const PART_INLINE: usize = 192;

/// A pack as written: its entries' time span, count, and the two values
/// (`raws` not yet sealed).
#[derive(Debug)]
pub(super) struct Pack {
    pub(super) first_ms: i64,
    pub(super) last_ms: i64,
    pub(super) entries: u32,
    pub(super) body: Vec<u8>,
    pub(super) raws: Vec<u8>,
}

impl Pack {
    /// An empty pack, with room for `entries` entries of typical size.
    pub(super) fn with_capacity(entries: usize) -> Pack {
        let mut body = Vec::with_capacity(5 + entries * (FIXED + 64));
        body.push(VERSION);
        body.extend_from_slice(&0u32.to_le_bytes());
        Pack {
            first_ms: i64::MAX,
            last_ms: i64::MIN,
            entries: 0,
            body,
            raws: Vec::with_capacity(entries * 256),
        }
    }

    /// Whether `entry` can be added with both values staying within
    /// [`MAX_OPENED`]; an empty pack takes any entry (whose parts
    /// [`PackedEntry::new`] cut).
    pub(super) fn fits(&self, entry: &PackedEntry) -> bool {
        self.entries == 0
            || (self.body.len() + entry.part.len() <= MAX_OPENED
                && self.raws.len() + entry.raw.len() <= MAX_OPENED)
    }

    /// Adds an entry.
    pub(super) fn push(&mut self, entry: &PackedEntry) {
        self.counted(entry.at_ms);
        self.body.extend_from_slice(&entry.part);
        self.raws.extend_from_slice(&entry.raw);
    }

    /// Adds an entry from its columns and raw message, cut as
    /// [`PackedEntry::new`] cuts them: for packs written again from packs
    /// read, whose raw messages are borrowed.
    pub(super) fn push_columns(&mut self, c: JournalColumns<'_, [u8]>, raw: &[u8]) {
        self.counted(c.at_ms);
        let raw = &raw[..raw.len().min(MAX_RAW)];
        encode_into(&mut self.body, c, raw.len());
        self.raws.extend_from_slice(raw);
    }

    fn counted(&mut self, at_ms: i64) {
        self.first_ms = self.first_ms.min(at_ms);
        self.last_ms = self.last_ms.max(at_ms);
        self.entries += 1;
        self.body[1..5].copy_from_slice(&self.entries.to_le_bytes());
    }

    /// The pack's two values as stored: compressed, `raws` not yet sealed
    /// (and left empty when the pack has no raw message bytes).
    pub(super) fn stored(&self) -> (Vec<u8>, Vec<u8>) {
        let raws = if self.raws.is_empty() {
            Vec::new()
        } else {
            compress(&self.raws)
        };
        (compress(&self.body), raws)
    }
}

/// An entry encoded as a pack's body holds it, with its raw message: made
/// where the entry is journaled, so that the writer thread only appends it.
#[derive(Debug)]
pub(in crate::store::sqlite) struct PackedEntry {
    pub(super) at_ms: i64,
    /// Its fixed part, the lengths of its texts and raw message, its texts:
    /// inline up to [`PART_INLINE`] bytes, so journaling a message allocates
    /// nothing on the way to the writer thread (and that thread frees
    /// nothing another thread allocated).
    part: SmallVec<[u8; PART_INLINE]>,
    /// Its raw message (at most [`MAX_RAW`] bytes).
    raw: Bytes,
}

impl PackedEntry {
    /// Encodes an entry. A raw message over [`MAX_RAW`] bytes or a text
    /// over [`MAX_TEXT`] is cut there, so that a reader can always open a
    /// pack that holds it.
    pub(super) fn new(c: JournalColumns<'_, [u8]>, mut raw: Bytes) -> PackedEntry {
        raw.truncate(MAX_RAW);
        let mut part = SmallVec::with_capacity(FIXED + text_len(&c));
        encode_into(&mut part, c, raw.len());
        PackedEntry {
            at_ms: c.at_ms,
            part,
            raw,
        }
    }

    /// An owned entry, encoded.
    pub(super) fn of(e: &JournalEntry) -> PackedEntry {
        PackedEntry::new(JournalColumns::of(e).as_bytes(), e.raw.clone())
    }
}

/// The bytes of an entry's texts as written: each cut to [`MAX_TEXT`].
fn text_len(c: &JournalColumns<'_, [u8]>) -> usize {
    c.texts()
        .iter()
        .flatten()
        .map(|t| t.len().min(MAX_TEXT))
        .sum()
}

/// Appends an entry's part of a pack's body to `out`: its fixed part, the
/// lengths of its texts (each cut to [`MAX_TEXT`]) and of its raw message,
/// then its texts. The fixed part is laid out on the stack and appended
/// whole: one copy instead of a dozen small ones, for every message
/// journaled.
fn encode_into(out: &mut impl PartOut, c: JournalColumns<'_, [u8]>, raw_len: usize) {
    let cut = |bytes: &[u8]| bytes.len().min(MAX_TEXT);
    let mut fixed = [0u8; FIXED];
    fixed[..8].copy_from_slice(&c.at_ms.to_le_bytes());
    let mut flags = 0;
    if c.direction == Direction::Out {
        flags |= OUT;
    }
    if c.amount_minor.is_some() {
        flags |= HAS_AMOUNT;
    }
    fixed[8] = flags;
    fixed[9..17].copy_from_slice(&c.amount_minor.unwrap_or(0).to_le_bytes());
    fixed[17..21].copy_from_slice(&c.mti);
    let texts = c.texts();
    let lengths = texts
        .iter()
        .map(|text| text.map_or(NO_VALUE, |t| cut(t) as u32))
        .chain([raw_len as u32]);
    for (slot, len) in fixed[21..].chunks_exact_mut(4).zip(lengths) {
        slot.copy_from_slice(&len.to_le_bytes());
    }
    out.put(&fixed);
    for text in texts.into_iter().flatten() {
        out.put(&text[..cut(text)]);
    }
}

/// Where [`encode_into`] writes: a pack's body, or an entry's own part.
trait PartOut {
    fn put(&mut self, bytes: &[u8]);
}

impl PartOut for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl PartOut for SmallVec<[u8; PART_INLINE]> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// A value as [`COMPRESSED`], its length and its LZ4 block (a journal
/// pack's values, and a saga pack's body: `saga_packs.rs`).
pub(super) fn compress(plain: &[u8]) -> Vec<u8> {
    const HEAD: usize = 5;
    let mut out = vec![0; HEAD + lz4_flex::block::get_maximum_output_size(plain.len())];
    out[0] = COMPRESSED;
    // A pack's values stay within `MAX_OPENED` (`Pack::fits`), far below 4 GiB.
    out[1..HEAD].copy_from_slice(&u32::try_from(plain.len()).unwrap_or(u32::MAX).to_le_bytes());
    match lz4_flex::block::compress_into(plain, &mut out[HEAD..]) {
        Ok(written) => out.truncate(HEAD + written),
        // Room for the worst case was made, so this is not expected: the
        // block is then made in a buffer of its own.
        Err(_) => {
            out.truncate(HEAD);
            out.extend_from_slice(&lz4_flex::block::compress(plain));
        }
    }
    out
}

/// Whether a stored body is compressed, and its pack's `raws` with it (a
/// version-1 `raws` may begin with any byte: a BCD MTI 0200 begins with 2).
pub(super) fn is_compressed(body: &[u8]) -> bool {
    body.first() == Some(&COMPRESSED)
}

/// A stored value of pack `id` opened: decompressed when its pack is
/// `compressed` (anything but a compressed value is then corrupt), else lent
/// as it is. `what` names the value in an error.
pub(super) fn open<'a>(
    id: i64,
    what: &str,
    stored: &'a [u8],
    compressed: bool,
) -> StoreResult<std::borrow::Cow<'a, [u8]>> {
    use std::borrow::Cow;

    if !compressed {
        return Ok(Cow::Borrowed(stored));
    }
    let bad = |why: String| {
        crate::store::StoreError::Corrupt(format!("journal pack {id}, {what}: {why}"))
    };
    decompress(stored, bad).map(Cow::Owned)
}

/// A value [`compress`] made, opened. Its stored length is checked before
/// anything is allocated: at most [`MAX_OPENED`] bytes, and no more than LZ4
/// can make of the block. `bad` makes the error, naming the value.
pub(super) fn decompress(
    stored: &[u8],
    bad: impl Fn(String) -> crate::store::StoreError,
) -> StoreResult<Vec<u8>> {
    let Some(rest) = stored.strip_prefix(&[COMPRESSED]) else {
        return Err(bad(format!(
            "{} bytes that are not a compressed value",
            stored.len()
        )));
    };
    let (length, block) = match rest.split_first_chunk::<4>() {
        Some((length, block)) => (u32::from_le_bytes(*length) as usize, block),
        None => {
            return Err(bad(format!(
                "{} bytes, too short for a length",
                stored.len()
            )))
        }
    };
    if length > MAX_OPENED || length > block.len().saturating_mul(MAX_RATIO) {
        return Err(bad(format!(
            "a block of {} bytes said to open to {length}",
            block.len()
        )));
    }
    let opened = lz4_flex::block::decompress(block, length).map_err(|e| bad(e.to_string()))?;
    if opened.len() != length {
        return Err(bad(format!(
            "opened to {} bytes, {length} expected",
            opened.len()
        )));
    }
    Ok(opened)
}

/// What [`Entries`] gives of the raw messages.
#[derive(Clone, Copy, Debug)]
pub(super) enum Raws<'a> {
    /// Not read: every entry's raw message is empty.
    Unread,
    /// The pack's `raws`, opened. Empty when retention emptied the pack.
    Read(&'a [u8]),
}

/// An entry as read from a pack.
#[derive(Clone, Copy, Debug)]
pub(super) struct PackEntry<'a> {
    pub(super) columns: JournalColumns<'a, [u8]>,
    /// Its raw message; empty when unread or emptied.
    pub(super) raw: &'a [u8],
    /// The length of its raw message as written, even when unread (0 once
    /// retention emptied it alone).
    pub(super) raw_len: usize,
}

/// Reads a pack's entries in the order they were written.
pub(super) struct Entries<'a> {
    body: Reader<'a>,
    left: u32,
    raws: &'a [u8],
    /// Whether the raw messages are there to be lent (not unread, not purged).
    with_raws: bool,
    raw_at: usize,
}

impl<'a> Entries<'a> {
    /// The entries of pack `id`.
    pub(super) fn new(id: i64, body: &'a [u8], raws: Raws<'a>) -> StoreResult<Entries<'a>> {
        let mut reader = Reader::new(body, format!("journal pack {id}"));
        let version = reader.u8()?;
        if version != VERSION {
            return Err(reader.error(0, format!("unknown version {version}")));
        }
        let left = reader.count(FIXED)? as u32;
        let (raws, with_raws) = match raws {
            Raws::Unread => (&[][..], false),
            Raws::Read(bytes) => (bytes, !bytes.is_empty()),
        };
        Ok(Entries {
            body: reader,
            left,
            raws,
            with_raws,
            raw_at: 0,
        })
    }

    /// The next entry; `None` after the last.
    pub(super) fn next_entry(&mut self) -> StoreResult<Option<PackEntry<'a>>> {
        if self.left == 0 {
            self.body.end()?;
            if self.with_raws && self.raw_at != self.raws.len() {
                return Err(self.body.error(
                    self.body.at,
                    format!(
                        "the raw messages' lengths add up to {}, the pack holds {}",
                        self.raw_at,
                        self.raws.len()
                    ),
                ));
            }
            return Ok(None);
        }
        self.left -= 1;
        let r = &mut self.body;
        let at_ms = r.i64()?;
        let flags_at = r.at;
        let flags = r.u8()?;
        if flags & !(OUT | HAS_AMOUNT) != 0 {
            return Err(r.error(flags_at, format!("flags {flags:#04x}")));
        }
        let amount = r.u64()?;
        let mti = r.take::<4>()?;
        let mut lengths = [0u32; TEXTS];
        for len in &mut lengths {
            *len = r.u32()?;
        }
        let raw_len = r.u32()? as usize;
        let mut texts: [Option<&'a [u8]>; TEXTS] = [None; TEXTS];
        for (text, len) in texts.iter_mut().zip(lengths) {
            if len != NO_VALUE {
                *text = Some(r.slice(len as usize)?);
            }
        }
        let raw = if self.with_raws {
            let at = self.raw_at;
            let raw = at
                .checked_add(raw_len)
                .and_then(|end| self.raws.get(at..end))
                .ok_or_else(|| {
                    self.body.error(
                        flags_at,
                        format!(
                            "a raw message of {raw_len} bytes past the pack's {}",
                            self.raws.len()
                        ),
                    )
                })?;
            self.raw_at += raw_len;
            raw
        } else {
            &[][..]
        };
        let [peer, processing_code, stan, transmission, acquirer, response_code, pan_masked, note] =
            texts;
        let Some(peer) = peer else {
            return Err(self.body.error(flags_at, "an entry with no peer".into()));
        };
        Ok(Some(PackEntry {
            columns: JournalColumns {
                at_ms,
                direction: if flags & OUT != 0 {
                    Direction::Out
                } else {
                    Direction::In
                },
                peer,
                mti,
                processing_code,
                stan,
                transmission,
                acquirer,
                response_code,
                pan_masked,
                amount_minor: (flags & HAS_AMOUNT != 0).then_some(amount),
                note,
            },
            raw,
            raw_len,
        }))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::store::{JournalEntry, StoreError};

    fn entry(at_ms: i64, stan: &str, note: Option<&str>, raw: &'static [u8]) -> JournalEntry {
        JournalEntry {
            at_ms,
            direction: if at_ms % 2 == 0 {
                Direction::In
            } else {
                Direction::Out
            },
            peer: "bank 48020000".into(),
            mti: *b"0200",
            processing_code: Some("000000".into()),
            stan: Some(stan.into()),
            transmission: Some("1123101500".into()),
            acquirer: None,
            response_code: None,
            pan_masked: Some("622202******1234".into()),
            amount_minor: (at_ms != 3).then_some(1_500),
            note: note.map(str::to_string),
            raw: Bytes::from_static(raw),
        }
    }

    fn read_back(id: i64, pack: &Pack, raws: Raws<'_>) -> StoreResult<Vec<JournalEntry>> {
        let mut entries = Entries::new(id, &pack.body, raws)?;
        let mut out = Vec::new();
        while let Some(PackEntry {
            columns: c, raw, ..
        }) = entries.next_entry()?
        {
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            let opt = |b: Option<&[u8]>| b.map(text);
            out.push(JournalEntry {
                at_ms: c.at_ms,
                direction: c.direction,
                peer: text(c.peer),
                mti: c.mti,
                processing_code: opt(c.processing_code),
                stan: opt(c.stan),
                transmission: opt(c.transmission),
                acquirer: opt(c.acquirer),
                response_code: opt(c.response_code),
                pan_masked: opt(c.pan_masked),
                amount_minor: c.amount_minor,
                note: opt(c.note),
                raw: Bytes::copy_from_slice(raw),
            });
        }
        Ok(out)
    }

    fn pack_of(entries: &[JournalEntry]) -> Pack {
        let mut pack = Pack::with_capacity(entries.len());
        for e in entries {
            pack.push(&PackedEntry::of(e));
        }
        pack
    }

    fn sample() -> Vec<JournalEntry> {
        vec![
            entry(5, "000001", None, b"first"),
            entry(3, "000002", Some("late, é"), b""),
            entry(9, "000003", Some(""), b"third message"),
        ]
    }

    /// A message of the dialect with every text journaled, from a wallet
    /// on IPv4, is encoded without a heap allocation; one longer still
    /// reads back as written.
    #[test]
    fn an_entrys_part_is_inline_for_the_dialects_messages() {
        let mut e = entry(5, "000001", None, b"raw");
        e.peer = "wallet 192.168.100.200:65535".into();
        e.acquirer = Some("00048020000".into());
        e.response_code = Some("00".into());
        e.pan_masked = Some("622202*********3441".into());
        assert!(!PackedEntry::of(&e).part.spilled());
        e.note = Some("n".repeat(200));
        let spilled = PackedEntry::of(&e);
        assert!(spilled.part.spilled());
        let mut pack = Pack::with_capacity(1);
        pack.push(&spilled);
        let back = read_back(1, &pack, Raws::Read(&pack.raws)).unwrap();
        assert_eq!(format!("{back:?}"), format!("{:?}", [e]));
    }

    #[test]
    fn a_pack_reads_back_as_written() {
        let entries = sample();
        let pack = pack_of(&entries);
        assert_eq!((pack.first_ms, pack.last_ms, pack.entries), (3, 9, 3));
        let back = read_back(1, &pack, Raws::Read(&pack.raws)).unwrap();
        assert_eq!(format!("{back:?}"), format!("{entries:?}"));
    }

    #[test]
    fn unread_or_emptied_raw_messages_read_as_empty() {
        let pack = pack_of(&sample());
        for raws in [Raws::Unread, Raws::Read(&[])] {
            let back = read_back(1, &pack, raws).unwrap();
            assert_eq!(back.len(), 3);
            assert!(back.iter().all(|e| e.raw.is_empty()));
            assert_eq!(back[2].stan.as_deref(), Some("000003"));
        }
    }

    #[test]
    fn any_byte_changed_reads_back_or_is_corrupt_never_a_panic() {
        let pack = pack_of(&sample());
        for at in 0..pack.body.len() {
            for value in [
                0x00,
                0xFF,
                pack.body[at] ^ 0x80,
                pack.body[at].wrapping_add(1),
            ] {
                let mut body = pack.body.clone();
                body[at] = value;
                let damaged = Pack {
                    body,
                    ..Pack::with_capacity(0)
                };
                for raws in [Raws::Read(&pack.raws), Raws::Unread, Raws::Read(&[])] {
                    match read_back(3, &damaged, raws) {
                        Ok(entries) => assert!(entries.len() <= 3),
                        Err(StoreError::Corrupt(why)) => {
                            assert!(why.starts_with("journal pack 3, byte"), "{why}")
                        }
                        Err(other) => panic!("byte {at} = {value}: {other:?}"),
                    }
                }
            }
        }
    }

    #[test]
    fn a_damaged_pack_is_corrupt_with_its_offset() {
        let pack = pack_of(&sample());
        let corrupt = |body: &[u8], raws: &[u8]| -> String {
            let damaged = Pack {
                body: body.to_vec(),
                ..Pack::with_capacity(0)
            };
            match read_back(7, &damaged, Raws::Read(raws)) {
                Err(StoreError::Corrupt(why)) => why,
                other => panic!("read back {other:?}"),
            }
        };
        // Every cut short.
        for len in 0..pack.body.len() {
            let why = corrupt(&pack.body[..len], &pack.raws);
            assert!(why.starts_with("journal pack 7, byte"), "{len}: {why}");
        }
        // A byte too many, raw messages that do not add up, a count that
        // the bytes cannot hold, an unknown version.
        let mut longer = pack.body.clone();
        longer.push(0);
        assert!(corrupt(&longer, &pack.raws).contains("1 bytes after the end"));
        assert!(corrupt(&pack.body, &pack.raws[1..]).contains("past the pack's"));
        let mut more = pack.raws.clone();
        more.push(b'x');
        assert!(corrupt(&pack.body, &more).contains("add up to"));
        let mut lying = pack.body.clone();
        lying[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(corrupt(&lying, &pack.raws).contains("items in"));
        let mut version = pack.body.clone();
        version[0] = 9;
        assert!(corrupt(&version, &pack.raws).contains("unknown version 9"));
    }

    /// A receive's six messages as a commit journals them, `n` times over.
    fn receives(n: usize) -> Vec<JournalEntry> {
        let mut out = Vec::new();
        for i in 0..n {
            for (leg, mti) in [b"0200", b"0210", b"0200", b"0210", b"0200", b"0210"]
                .into_iter()
                .enumerate()
            {
                let stan = format!("{:06}", 3 * i + leg / 2);
                let raw = format!(
                    "{}7238000108C18000166217000000000019400000000000001000120509{stan}\
                     0905001205060001020000480200001205090{stan}{stan}156",
                    String::from_utf8_lossy(mti)
                );
                let mut e = entry(1_000 + i as i64, &stan, None, b"");
                e.mti = *mti;
                e.raw = Bytes::from(raw);
                out.push(e);
            }
        }
        out
    }

    #[test]
    fn a_stored_pack_is_compressed_and_opens_to_what_was_written() {
        let entries = receives(12);
        let pack = pack_of(&entries);
        let (body, raws) = pack.stored();
        assert!(is_compressed(&body));
        assert_eq!(open(1, "body", &body, true).unwrap()[..], pack.body[..]);
        assert_eq!(open(1, "raws", &raws, true).unwrap()[..], pack.raws[..]);
        // Entries repeat one another: several times smaller stored.
        let (plain, stored) = (pack.body.len() + pack.raws.len(), body.len() + raws.len());
        assert!(stored * 3 < plain, "{plain} bytes stored in {stored}");
        let body = open(1, "body", &body, true).unwrap();
        let raws = open(1, "raws", &raws, true).unwrap();
        let opened = Pack {
            body: body.into_owned(),
            ..Pack::with_capacity(0)
        };
        let back = read_back(1, &opened, Raws::Read(&raws)).unwrap();
        assert_eq!(format!("{back:?}"), format!("{entries:?}"));
        // A pack with no message bytes keeps `raws` empty.
        let pack = pack_of(&[entry(1, "000001", None, b"")]);
        assert!(pack.stored().1.is_empty());
    }

    #[test]
    fn a_version_1_value_is_lent_as_it_is() {
        let pack = pack_of(&sample());
        assert!(!is_compressed(&pack.body));
        let body = open(1, "body", &pack.body, false).unwrap();
        assert!(matches!(body, std::borrow::Cow::Borrowed(_)));
        assert_eq!(body[..], pack.body[..]);
    }

    #[test]
    fn any_byte_of_a_stored_value_changed_opens_or_is_corrupt_never_a_panic() {
        let pack = pack_of(&receives(2));
        let (body, raws) = pack.stored();
        for (what, stored) in [("body", &body), ("raws", &raws)] {
            for at in 0..stored.len() {
                for value in [0x00, 0xFF, stored[at] ^ 0x80, stored[at].wrapping_add(1)] {
                    let mut damaged = stored.clone();
                    damaged[at] = value;
                    match open(4, what, &damaged, true) {
                        // What opens is read as the entries, or is corrupt.
                        Ok(opened) => {
                            let (body, raws) = match what {
                                "body" => (opened.into_owned(), pack.raws.clone()),
                                _ => (pack.body.clone(), opened.into_owned()),
                            };
                            let opened = Pack {
                                body,
                                ..Pack::with_capacity(0)
                            };
                            match read_back(4, &opened, Raws::Read(&raws)) {
                                Ok(entries) => assert!(entries.len() <= 12),
                                Err(StoreError::Corrupt(_)) => {}
                                Err(other) => panic!("{what} byte {at} = {value}: {other:?}"),
                            }
                        }
                        Err(StoreError::Corrupt(why)) => {
                            assert!(
                                why.starts_with(&format!("journal pack 4, {what}: ")),
                                "{why}"
                            )
                        }
                        Err(other) => panic!("{what} byte {at} = {value}: {other:?}"),
                    }
                }
            }
            // Cut short anywhere.
            for len in 0..stored.len() {
                assert!(
                    open(4, what, &stored[..len], true).is_err(),
                    "{what} cut to {len}"
                );
            }
        }
    }

    #[test]
    fn a_length_no_block_of_that_size_opens_to_is_refused_before_anything_is_allocated() {
        let corrupt = |stored: &[u8]| match open(5, "raws", stored, true) {
            Err(StoreError::Corrupt(why)) => why,
            other => panic!("{other:?}"),
        };
        // 4 GiB said of a block of three bytes; 300 bytes of one byte.
        let huge = [COMPRESSED, 0xFF, 0xFF, 0xFF, 0xFF, 0x10, b'a', 0];
        assert!(
            corrupt(&huge).contains("said to open to 4294967295"),
            "{}",
            corrupt(&huge)
        );
        let mut over = vec![COMPRESSED];
        over.extend_from_slice(&300u32.to_le_bytes());
        over.push(0x10);
        assert!(corrupt(&over).contains("said to open to 300"));
        // Not a compressed value where one belongs; no length.
        assert!(corrupt(b"\x01abc").contains("not a compressed value"));
        assert!(corrupt(&[COMPRESSED, 1, 0]).contains("too short for a length"));
    }

    /// The body's bytes, laid out by hand as the module's documentation
    /// says: what packs already written hold, whatever encodes them.
    #[test]
    fn an_entry_is_encoded_as_the_format_says() {
        let e = entry(7, "000042", None, b"RAW!");
        let pack = pack_of(std::slice::from_ref(&e));
        let mut want = vec![VERSION];
        want.extend_from_slice(&1u32.to_le_bytes());
        want.extend_from_slice(&7i64.to_le_bytes());
        want.push(OUT | HAS_AMOUNT);
        want.extend_from_slice(&1_500u64.to_le_bytes());
        want.extend_from_slice(b"0200");
        let texts: [Option<&str>; TEXTS] = [
            Some("bank 48020000"),
            Some("000000"),
            Some("000042"),
            Some("1123101500"),
            None,
            None,
            Some("622202******1234"),
            None,
        ];
        for text in texts {
            let len = text.map_or(u32::MAX, |t| t.len() as u32);
            want.extend_from_slice(&len.to_le_bytes());
        }
        want.extend_from_slice(&4u32.to_le_bytes());
        for text in texts.into_iter().flatten() {
            want.extend_from_slice(text.as_bytes());
        }
        assert_eq!(pack.body, want);
        assert_eq!(pack.raws, b"RAW!");
        assert_eq!((pack.first_ms, pack.last_ms, pack.entries), (7, 7, 1));
    }

    #[test]
    fn a_pack_is_cut_before_a_value_would_pass_what_a_reader_opens() {
        let e = entry(1, "000001", None, b"x");
        let with_raw =
            |raw: &Bytes| PackedEntry::new(JournalColumns::of(&e).as_bytes(), raw.clone());
        // Zeroed lazily: only its length is read.
        let huge = Bytes::from(vec![0u8; MAX_RAW + 1]);
        let mut pack = Pack::with_capacity(1);
        let alone = with_raw(&huge);
        assert!(pack.fits(&alone), "an empty pack takes any entry");
        assert_eq!(
            alone.raw.len(),
            MAX_RAW,
            "a raw message is cut to its bound"
        );
        pack.push(&with_raw(&Bytes::from_static(b"x")));
        assert!(!pack.fits(&alone));
        assert!(pack.fits(&with_raw(&huge.slice(..MAX_OPENED - 1))));
        // A text beyond its bound is cut to it, and the pack still opens.
        let long = "n".repeat(MAX_TEXT + 5);
        let pack = pack_of(&[entry(2, "000002", Some(&long), b"raw")]);
        let (body, raws) = pack.stored();
        let opened = Pack {
            body: open(6, "body", &body, true).unwrap().into_owned(),
            ..Pack::with_capacity(0)
        };
        let raws = open(6, "raws", &raws, true).unwrap();
        let back = read_back(6, &opened, Raws::Read(&raws)).unwrap();
        assert_eq!(back[0].note.as_ref().map(String::len), Some(MAX_TEXT));
        assert_eq!(back[0].raw, "raw");
    }
}

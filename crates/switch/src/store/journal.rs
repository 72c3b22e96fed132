//! The journal: every message in and out, appended without waiting and
//! written with the store's next commit. Clearing reads it back through
//! [`super::History::journal_between`].

use bytes::Bytes;

/// Direction of a journaled message.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Direction {
    In,
    Out,
}

/// One message in or out, as journaled. `raw` keeps the bytes; the summary
/// columns are masked.
#[derive(Clone, Debug)]
pub struct JournalEntry {
    pub at_ms: i64,
    pub direction: Direction,
    /// Who sent or received it: "wallet 127.0.0.1:5000", "bank 48020000".
    pub peer: String,
    pub mti: [u8; 4],
    /// F3, F11, F7, F32, F39 as text where present (none of them card data).
    pub processing_code: Option<String>,
    pub stan: Option<String>,
    pub transmission: Option<String>,
    pub acquirer: Option<String>,
    pub response_code: Option<String>,
    /// F2 masked to first 6 / last 4.
    pub pan_masked: Option<String>,
    pub amount_minor: Option<u64>,
    /// Why it is notable, e.g. "unmatched response".
    pub note: Option<String>,
    pub raw: Bytes,
}

impl JournalEntry {
    /// The journal row of a message: summary columns from its fields (PAN
    /// masked), the raw bytes as they crossed the wire.
    pub fn of(
        direction: Direction,
        peer: &str,
        msg: &iso8583::codec::Message,
        raw: Bytes,
        at_ms: i64,
        note: Option<String>,
    ) -> JournalEntry {
        use iso8583::fields::num;
        let text = |n| msg.get_str(n).map(str::to_string);
        JournalEntry {
            at_ms,
            direction,
            peer: peer.to_string(),
            mti: *msg.mti(),
            processing_code: text(num::PROCESSING_CODE),
            stan: text(num::STAN),
            transmission: text(num::TRANSMISSION),
            acquirer: text(num::ACQUIRER),
            response_code: text(num::RESPONSE_CODE),
            pan_masked: msg.get_str(num::PAN).map(iso8583::mask::mask_pan),
            amount_minor: iso8583::fields::amount_minor(msg).ok(),
            note,
            raw,
        }
    }
}

/// Where the switch and its bank links journal messages.
pub trait JournalSink: Send + Sync + 'static {
    /// Appends to the journal without waiting: entries are written with the next
    /// commit, in the order given.
    fn journal(&self, entry: JournalEntry);
}

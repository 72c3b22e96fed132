//! The journal: every message in and out, appended without waiting and
//! written with the store's next commit. Clearing reads it back through
//! [`super::History::journal_between`].
//!
//! No entry is ever dropped. Instead the entries accepted and not yet written
//! are counted ([`JournalBacklog`]), and new work (a wallet request, a frame
//! from a bank) waits in [`JournalSink::journal_room`] while they are at the
//! store's capacity: a slow or absent database slows the switch down instead
//! of growing its memory or losing audit rows.

use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Notify;

use super::journal_slice::JournalColumns;

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
        with_message_columns(direction, peer, msg, at_ms, note.as_deref(), |c| {
            c.to_entry(raw)
        })
    }
}

/// Gives `f` the journal columns of a message crossing the wire: F3, F11,
/// F7, F32 and F39 as text where present (none of them card data), F2
/// masked to first 6 / last 4, F4 as an amount. The one place that says
/// which field goes to which column, for an owned [`JournalEntry`] and for
/// a store that encodes the columns straight from the message.
pub fn with_message_columns<R>(
    direction: Direction,
    peer: &str,
    msg: &iso8583::codec::Message,
    at_ms: i64,
    note: Option<&str>,
    f: impl FnOnce(JournalColumns<'_>) -> R,
) -> R {
    use iso8583::fields::num;
    use iso8583::mask::{mask_pan, mask_pan_into, MASKED_ROOM};
    // Masked on the stack: a message is journaled on every hop, six a
    // receive, and a String each was a sixth of the receive's allocations.
    let mut room = [0; MASKED_ROOM];
    let spilled;
    let pan_masked = match msg.get_str(num::PAN) {
        None => None,
        Some(pan) => match mask_pan_into(pan, &mut room) {
            Some(masked) => Some(masked),
            None => {
                spilled = mask_pan(pan);
                Some(spilled.as_str())
            }
        },
    };
    f(JournalColumns {
        at_ms,
        direction,
        peer,
        mti: *msg.mti(),
        processing_code: msg.get_str(num::PROCESSING_CODE),
        stan: msg.get_str(num::STAN),
        transmission: msg.get_str(num::TRANSMISSION),
        acquirer: msg.get_str(num::ACQUIRER),
        response_code: msg.get_str(num::RESPONSE_CODE),
        pan_masked,
        amount_minor: iso8583::fields::amount_minor(msg).ok(),
        note,
    })
}

/// Where the switch and its bank links journal messages.
#[async_trait]
pub trait JournalSink: Send + Sync + 'static {
    /// Appends to the journal without waiting: entries are written with the next
    /// commit, in the order given.
    fn journal(&self, entry: JournalEntry);

    /// Appends a message crossing the wire, as [`JournalEntry::of`] makes
    /// its entry. A store may take the columns straight from the message
    /// instead (the embedded store encodes them as its packs hold them, in
    /// one buffer rather than an owned string per column).
    fn journal_message(
        &self,
        direction: Direction,
        peer: &str,
        msg: &iso8583::codec::Message,
        raw: Bytes,
        at_ms: i64,
        note: Option<String>,
    ) {
        self.journal(JournalEntry::of(direction, peer, msg, raw, at_ms, note));
    }

    /// Waits until the entries not yet written are below the store's
    /// capacity. Called before work that will journal is taken on, so the
    /// unwritten entries stay within the capacity plus what the work already
    /// admitted adds (a few entries per request in flight).
    async fn journal_room(&self) {}
}

/// Journal entries accepted and not yet written, against a capacity.
#[derive(Debug)]
pub struct JournalBacklog {
    unwritten: AtomicUsize,
    capacity: usize,
    written: Notify,
}

impl JournalBacklog {
    pub fn new(capacity: usize) -> JournalBacklog {
        JournalBacklog {
            unwritten: AtomicUsize::new(0),
            capacity: capacity.max(1),
            written: Notify::new(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Entries accepted and not yet written.
    pub fn unwritten(&self) -> usize {
        self.unwritten.load(Ordering::Acquire)
    }

    pub fn accepted(&self) {
        self.unwritten.fetch_add(1, Ordering::AcqRel);
        crate::metrics::metrics().journal_unwritten.inc();
    }

    /// `n` entries are written (or will never be: their store is closing).
    pub fn written(&self, n: usize) {
        if n == 0 {
            return;
        }
        crate::metrics::metrics().journal_unwritten.dec_by(n as i64);
        let before = self
            .unwritten
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_sub(n))
            })
            .unwrap_or(0);
        if before >= self.capacity {
            self.written.notify_waiters();
        }
    }

    /// Returns once fewer than `capacity` entries are unwritten.
    pub async fn room(&self) {
        loop {
            // Registered before the check, so a write in between still wakes it.
            let notified = self.written.notified();
            if self.unwritten() < self.capacity {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn room_waits_while_the_backlog_is_full_and_not_after() {
        let backlog = Arc::new(JournalBacklog::new(3));
        backlog.room().await;
        for _ in 0..4 {
            backlog.accepted();
        }
        let waiter = tokio::spawn({
            let b = backlog.clone();
            async move { b.room().await }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiter.is_finished(), "four unwritten against three");
        backlog.written(1);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(!waiter.is_finished(), "three unwritten is still full");
        backlog.written(1);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("woken once below the capacity")
            .unwrap();
        assert_eq!(backlog.unwritten(), 2);
        backlog.written(10);
        assert_eq!(backlog.unwritten(), 0, "never below zero");
    }
}

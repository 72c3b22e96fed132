//! One direction of a TCP connection, put back in order.
//!
//! Sequence numbers are compared with wrapping 32-bit arithmetic, so a stream
//! crossing 2^32 reads on. Data before the next expected byte (a
//! retransmission, the same segment seen on a second interface, an overlap) is
//! trimmed: the first data seen for a byte wins. Data after it waits in a map
//! keyed by stream offset until the hole is filled; when more than the bound
//! waits, or the direction closes with a hole, the hole is given up as a gap
//! and the stream goes on from the next data held.

use std::collections::BTreeMap;

/// What the reassembled stream produces, in order.
pub trait StreamSink {
    /// The next bytes of the stream.
    fn data(&mut self, bytes: &[u8]);
    /// `len` bytes of the stream will never be seen; 0 when the stream was
    /// joined in its middle (no SYN seen), so what follows is not aligned.
    fn gap(&mut self, len: u64);
}

/// The default bound on bytes held back per direction (1 MiB).
pub const DEFAULT_MAX_PENDING: usize = 1 << 20;

#[derive(Debug)]
pub struct Reassembler {
    /// The sequence number of the next byte expected, once known.
    next: Option<u32>,
    /// The stream offset of `next` (bytes delivered or given up).
    offset: u64,
    /// Out-of-order data by stream offset.
    pending: BTreeMap<u64, Vec<u8>>,
    pending_bytes: usize,
    max_pending: usize,
}

impl Reassembler {
    pub fn new(max_pending: usize) -> Self {
        Reassembler {
            next: None,
            offset: 0,
            pending: BTreeMap::new(),
            pending_bytes: 0,
            max_pending,
        }
    }

    /// Bytes held back, waiting for a hole to be filled.
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Whether the first byte of the stream is known (a SYN or data was seen).
    pub fn started(&self) -> bool {
        self.next.is_some()
    }

    /// The sequence numbers of the stream so far, from its first byte (at
    /// most 2 GiB back) to the next byte expected (a FIN's), once known.
    pub fn seq_range(&self) -> Option<(u32, u32)> {
        let next = self.next?;
        let len = self.offset.min(1 << 31) as u32;
        Some((next.wrapping_sub(len), next))
    }

    /// One segment: `seq` is its sequence number, `syn` whether it carries SYN,
    /// `missing` how many payload bytes after `payload` were not captured.
    pub fn segment(
        &mut self,
        seq: u32,
        syn: bool,
        payload: &[u8],
        missing: usize,
        sink: &mut impl StreamSink,
    ) {
        let seq = if syn {
            let first = seq.wrapping_add(1);
            if self.next.is_none() {
                self.next = Some(first);
            }
            first
        } else {
            seq
        };
        if payload.is_empty() && missing == 0 {
            return;
        }
        let next = match self.next {
            Some(next) => next,
            None => {
                // Joined mid-stream: start here, unaligned.
                sink.gap(0);
                self.next = Some(seq);
                seq
            }
        };
        let ahead = seq.wrapping_sub(next) as i32;
        if ahead <= 0 {
            let behind = ahead.unsigned_abs() as usize;
            if behind < payload.len() {
                self.deliver(&payload[behind..], sink);
                if missing > 0 {
                    self.skip(missing as u64, sink);
                }
                self.drain(sink);
            } else if behind < payload.len() + missing {
                self.skip((payload.len() + missing - behind) as u64, sink);
                self.drain(sink);
            }
            return;
        }
        if payload.is_empty() {
            return;
        }
        self.hold(self.offset + ahead as u64, payload);
        if self.pending_bytes > self.max_pending {
            self.skip_to_pending(sink);
        }
    }

    /// FIN or RST, or the end of the capture: what is held back is delivered
    /// after the gaps before it.
    pub fn close(&mut self, sink: &mut impl StreamSink) {
        while !self.pending.is_empty() {
            self.skip_to_pending(sink);
        }
    }

    fn hold(&mut self, mut at: u64, mut data: &[u8]) {
        // First data wins: keep what is held, hold only what is new.
        while !data.is_empty() {
            if let Some((&start, held)) = self.pending.range(..=at).next_back() {
                let end = start + held.len() as u64;
                if end > at {
                    let covered = ((end - at) as usize).min(data.len());
                    data = &data[covered..];
                    at += covered as u64;
                    continue;
                }
            }
            let room = match self.pending.range(at + 1..).next() {
                Some((&start, _)) => ((start - at) as usize).min(data.len()),
                None => data.len(),
            };
            self.pending.insert(at, data[..room].to_vec());
            self.pending_bytes += room;
            data = &data[room..];
            at += room as u64;
        }
    }

    fn deliver(&mut self, bytes: &[u8], sink: &mut impl StreamSink) {
        sink.data(bytes);
        self.advance(bytes.len() as u64);
    }

    fn skip(&mut self, len: u64, sink: &mut impl StreamSink) {
        sink.gap(len);
        self.advance(len);
    }

    fn advance(&mut self, len: u64) {
        self.offset += len;
        self.next = self.next.map(|n| n.wrapping_add(len as u32));
    }

    /// Delivers what is held from the current offset on.
    fn drain(&mut self, sink: &mut impl StreamSink) {
        while let Some(entry) = self.pending.first_entry() {
            let start = *entry.key();
            if start > self.offset {
                break;
            }
            let held = entry.remove();
            self.pending_bytes -= held.len();
            let behind = (self.offset - start) as usize;
            if behind < held.len() {
                self.deliver(&held[behind..], sink);
            }
        }
    }

    /// Gives up the hole before the first data held, then delivers from there.
    fn skip_to_pending(&mut self, sink: &mut impl StreamSink) {
        if let Some((&start, _)) = self.pending.first_key_value() {
            if start > self.offset {
                self.skip(start - self.offset, sink);
            }
        }
        self.drain(sink);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect {
        bytes: Vec<u8>,
        gaps: Vec<u64>,
    }

    impl StreamSink for Collect {
        fn data(&mut self, bytes: &[u8]) {
            self.bytes.extend_from_slice(bytes);
        }
        fn gap(&mut self, len: u64) {
            self.gaps.push(len);
        }
    }

    #[test]
    fn out_of_order_overlap_and_wrap() {
        let mut r = Reassembler::new(DEFAULT_MAX_PENDING);
        let mut out = Collect::default();
        let isn = u32::MAX - 3;
        r.segment(isn, true, b"", 0, &mut out);
        let first = isn.wrapping_add(1);
        r.segment(first.wrapping_add(4), false, b"efgh", 0, &mut out);
        r.segment(first.wrapping_add(2), false, b"XXXX", 0, &mut out); // overlaps "ef": held data wins there
        r.segment(first, false, b"ab", 0, &mut out);
        r.segment(first, false, b"abcd", 0, &mut out); // retransmission
        assert_eq!(out.bytes, b"abXXefgh");
        assert!(out.gaps.is_empty());
        assert_eq!(r.pending_bytes(), 0);
    }

    #[test]
    fn a_hole_over_the_bound_becomes_a_gap() {
        let mut r = Reassembler::new(4);
        let mut out = Collect::default();
        r.segment(100, true, b"", 0, &mut out);
        r.segment(103, false, b"cd", 0, &mut out);
        r.segment(105, false, b"efg", 0, &mut out);
        assert_eq!(out.gaps, vec![2]);
        assert_eq!(out.bytes, b"cdefg");
    }
}

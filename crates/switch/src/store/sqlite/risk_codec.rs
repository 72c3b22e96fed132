//! The binary forms of the risk counters' durable record: a `risk_log` row
//! (one writer batch's counter events) and a `risk_counters` row's state (one
//! counter). Both are read back as untrusted input, through
//! [`super::byte_reader::Reader`].
//!
//! Integers are little-endian; strings are a `u16` length and UTF-8 bytes.
//! A log row starts with a version byte, then a table of the distinct
//! strings of its events (rules, subjects, packets: each written once
//! however many events name it), then the events.

use std::sync::Arc;

use foldhash::{HashMap, HashMapExt};

use crate::store::risk_book::{Counter, CounterKind};
use crate::store::risk_window::{Step, Steps};
use crate::store::StoreResult;

use super::byte_reader::Reader;

/// The version byte of a log row.
const LOG_VERSION: u8 = 1;

/// A counter event as the writer logs it: which counter (rule, subject, and
/// the kind and start of the limit that recorded it, so that replaying it
/// builds the counter the book had) and what it adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RiskEvent {
    pub(super) rule: Arc<str>,
    pub(super) subject: Arc<str>,
    pub(super) kind: CounterKind,
    pub(super) since_ms: i64,
    pub(super) at_ms: i64,
    pub(super) amount_minor: u64,
    /// A distinct count's value (a packet); empty otherwise.
    pub(super) detail: String,
}

/// The bytes of one log row holding `events`.
pub(super) fn encode_events(events: &[RiskEvent]) -> Vec<u8> {
    // Sized for every string distinct, so the table never grows mid-row.
    let mut table = StringTable::with_capacity(events.len() * 3);
    let mut refs = Vec::with_capacity(events.len());
    for e in events {
        refs.push([
            table.id_of_shared(&e.rule),
            table.id_of_shared(&e.subject),
            table.id_of(&e.detail),
        ]);
    }
    let strings = table.strings;
    let mut out = Vec::with_capacity(16 + strings.len() * 40 + events.len() * 37);
    out.push(LOG_VERSION);
    out.extend_from_slice(&(strings.len() as u32).to_le_bytes());
    for s in &strings {
        put_str(&mut out, s);
    }
    out.extend_from_slice(&(events.len() as u32).to_le_bytes());
    for (e, [rule, subject, detail]) in events.iter().zip(refs) {
        out.extend_from_slice(&rule.to_le_bytes());
        out.extend_from_slice(&subject.to_le_bytes());
        out.extend_from_slice(&detail.to_le_bytes());
        out.push(e.kind.code());
        out.extend_from_slice(&e.since_ms.to_le_bytes());
        out.extend_from_slice(&e.at_ms.to_le_bytes());
        out.extend_from_slice(&e.amount_minor.to_le_bytes());
    }
    out
}

/// A log row's table of distinct strings, with each string's index.
///
/// The events of one counter share its subject's `Arc` (the book hands
/// each recorded event the one it holds), and every request shares the
/// rules' ids: an `Arc` seen before is found by its address (an integer
/// key) instead of by hashing and comparing its text, which on the writer's
/// hot path cost about as much as the rest of the row. The table is the
/// same either way: a string's text is still written once.
struct StringTable<'a> {
    strings: Vec<&'a str>,
    by_text: HashMap<&'a str, u32>,
    by_address: HashMap<usize, u32>,
    empty: Option<u32>,
}

impl<'a> StringTable<'a> {
    fn with_capacity(n: usize) -> Self {
        StringTable {
            strings: Vec::with_capacity(n),
            by_text: HashMap::with_capacity(n),
            by_address: HashMap::with_capacity(n),
            empty: None,
        }
    }

    fn id_of(&mut self, s: &'a str) -> u32 {
        // Most events have no detail: the empty string's id is kept aside.
        if s.is_empty() {
            if let Some(id) = self.empty {
                return id;
            }
        }
        let strings = &mut self.strings;
        let id = *self.by_text.entry(s).or_insert_with(|| {
            strings.push(s);
            (strings.len() - 1) as u32
        });
        if s.is_empty() {
            self.empty = Some(id);
        }
        id
    }

    /// [`id_of`](Self::id_of), looked up first by the `Arc`'s address: the
    /// events borrowed for the row keep every `Arc` alive, so an address
    /// names one text for as long as the table lives.
    fn id_of_shared(&mut self, s: &'a Arc<str>) -> u32 {
        let address = Arc::as_ptr(s) as *const u8 as usize;
        if let Some(&id) = self.by_address.get(&address) {
            return id;
        }
        let id = self.id_of(s);
        self.by_address.insert(address, id);
        id
    }
}

/// The events of log row `seq`.
pub(super) fn decode_events(seq: i64, bytes: &[u8]) -> StoreResult<Vec<RiskEvent>> {
    let mut r = Reader::new(bytes, format!("risk_log row {seq}"));
    let version = r.u8()?;
    if version != LOG_VERSION {
        return Err(r.error(0, format!("unknown version {version}")));
    }
    let count = r.count(2)?;
    let mut strings: Vec<Arc<str>> = Vec::with_capacity(count);
    for _ in 0..count {
        strings.push(r.str()?.into());
    }
    let events = r.count(37)?;
    let mut out = Vec::with_capacity(events);
    for _ in 0..events {
        let string = |r: &mut Reader| -> StoreResult<Arc<str>> {
            let at = r.at;
            let i = r.u32()? as usize;
            strings
                .get(i)
                .cloned()
                .ok_or_else(|| r.error(at, format!("string {i} of {}", strings.len())))
        };
        let rule = string(&mut r)?;
        let subject = string(&mut r)?;
        let detail = string(&mut r)?;
        let kind = r.kind()?;
        out.push(RiskEvent {
            rule,
            subject,
            kind,
            since_ms: r.i64()?,
            at_ms: r.i64()?,
            amount_minor: r.u64()?,
            detail: detail.to_string(),
        });
    }
    r.end()?;
    Ok(out)
}

/// A window's snapshot by steps; [`CounterKind::Window`]'s own code is
/// read as its former shape, one entry per event.
const WINDOW_STEPS: u8 = 3;

/// The bytes of a counter's snapshot (a window's count and sum are
/// recomputed from its steps when read back).
pub(super) fn encode_counter(counter: &Counter) -> Vec<u8> {
    let mut out = Vec::new();
    match counter {
        Counter::Window { .. } => out.push(WINDOW_STEPS),
        other => out.push(other.kind().code()),
    }
    out.extend_from_slice(&counter.since_ms().to_le_bytes());
    match counter {
        Counter::Total { count, sum, .. } => {
            out.extend_from_slice(&count.to_le_bytes());
            out.extend_from_slice(&sum.to_le_bytes());
        }
        Counter::Window { steps, .. } => {
            out.extend_from_slice(&steps.width_ms().to_le_bytes());
            out.extend_from_slice(&(steps.steps().count() as u32).to_le_bytes());
            for s in steps.steps() {
                out.extend_from_slice(&s.start_ms.to_le_bytes());
                out.extend_from_slice(&s.count.to_le_bytes());
                out.extend_from_slice(&s.sum.to_le_bytes());
            }
        }
        Counter::Distinct { values, .. } => {
            let values = values.values();
            out.extend_from_slice(&(values.len() as u32).to_le_bytes());
            for (at, value) in values {
                out.extend_from_slice(&at.to_le_bytes());
                put_str(&mut out, value);
            }
        }
    }
    out
}

/// The counter of snapshot row (`rule`, `subject`).
pub(super) fn decode_counter(rule: &str, subject: &str, bytes: &[u8]) -> StoreResult<Counter> {
    let mut r = Reader::new(bytes, format!("risk_counters row ({rule}, {subject})"));
    let (kind, by_steps) = r.shape()?;
    let since_ms = r.i64()?;
    let mut counter = Counter::empty(kind, since_ms);
    match &mut counter {
        Counter::Total { count, sum, .. } => {
            *count = r.u64()?;
            *sum = r.u64()?;
        }
        Counter::Window { steps, .. } if by_steps => {
            let at = r.at;
            let width_ms = r.i64()?;
            let n = r.count(24)?;
            let mut read = Vec::with_capacity(n);
            for _ in 0..n {
                read.push(Step {
                    start_ms: r.i64()?,
                    count: r.u64()?,
                    sum: r.u64()?,
                });
            }
            *steps = Steps::from_parts(width_ms, read)
                .ok_or_else(|| r.error(at, "steps out of order or off their width".into()))?;
        }
        window => {
            // One entry per event (a window's former shape) or per value.
            let distinct = kind == CounterKind::Distinct;
            let n = r.count(if distinct { 10 } else { 16 })?;
            for _ in 0..n {
                let at = r.i64()?;
                if distinct {
                    window.add(at, 0, &r.str()?);
                } else {
                    window.add(at, r.u64()?, "");
                }
            }
        }
    }
    r.end()?;
    Ok(counter)
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Rules, subjects and packet keys are short; a longer string is cut at
    // a character boundary rather than written with a wrong length.
    let mut len = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(len) {
        len -= 1;
    }
    out.extend_from_slice(&(len as u16).to_le_bytes());
    out.extend_from_slice(&s.as_bytes()[..len]);
}

/// What only the risk forms read.
impl Reader<'_> {
    fn kind(&mut self) -> StoreResult<CounterKind> {
        let at = self.at;
        let code = self.u8()?;
        CounterKind::from_code(code).ok_or_else(|| self.error(at, format!("counter kind {code}")))
    }

    /// A snapshot's kind, and whether it is a window by steps.
    fn shape(&mut self) -> StoreResult<(CounterKind, bool)> {
        if self.peek() == Some(WINDOW_STEPS) {
            self.at += 1;
            return Ok((CounterKind::Window, true));
        }
        Ok((self.kind()?, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    fn event(rule: &str, subject: &str, kind: CounterKind, at_ms: i64, detail: &str) -> RiskEvent {
        RiskEvent {
            rule: rule.into(),
            subject: subject.into(),
            kind,
            since_ms: at_ms - 100,
            at_ms,
            amount_minor: 7,
            detail: detail.into(),
        }
    }

    #[test]
    fn a_log_row_reads_back_as_written() {
        let events = vec![
            event("daily", "card:x", CounterKind::Total, 10, ""),
            event("burst", "card:x", CounterKind::Window, 11, ""),
            event("packets", "card:x", CounterKind::Distinct, 12, "p1"),
            event("daily", "card:y", CounterKind::Total, 13, ""),
        ];
        let bytes = encode_events(&events);
        assert_eq!(decode_events(1, &bytes).unwrap(), events);
    }

    #[test]
    fn a_text_is_written_once_whether_its_arcs_are_shared_or_not() {
        let card: Arc<str> = "card:x".into();
        let rule: Arc<str> = "daily".into();
        let shared = |at_ms| RiskEvent {
            rule: rule.clone(),
            subject: card.clone(),
            ..event("", "", CounterKind::Total, at_ms, "")
        };
        // Two events sharing Arcs, then two with the same texts in Arcs of their own.
        let events = vec![
            shared(10),
            shared(11),
            event("daily", "card:x", CounterKind::Total, 12, ""),
            event("daily", "card:x", CounterKind::Window, 13, "p1"),
        ];
        let bytes = encode_events(&events);
        assert_eq!(decode_events(1, &bytes).unwrap(), events);
        // "daily", "card:x", "" and "p1": four strings, each once.
        assert_eq!(bytes[1..5], 4u32.to_le_bytes());
        let text = String::from_utf8_lossy(&bytes);
        assert_eq!(text.matches("card:x").count(), 1);
        assert_eq!(text.matches("daily").count(), 1);
    }

    #[test]
    fn a_damaged_log_row_is_corrupt_with_its_offset() {
        let bytes = encode_events(&[event("daily", "card:x", CounterKind::Total, 10, "")]);
        for cut in 0..bytes.len() {
            let err = decode_events(9, &bytes[..cut]).unwrap_err();
            assert!(
                matches!(&err, StoreError::Corrupt(why) if why.starts_with("risk_log row 9, byte")),
                "{err}"
            );
        }
        let mut lying = bytes.clone();
        // The string count claims four billion strings.
        lying[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode_events(9, &lying),
            Err(StoreError::Corrupt(why)) if why.contains("byte 1:")
        ));
        let mut longer = bytes;
        longer.push(0);
        assert!(decode_events(9, &longer).is_err());
    }

    #[test]
    fn every_counter_shape_reads_back_as_written() {
        let mut total = Counter::empty(CounterKind::Total, 5);
        total.add(6, 100, "");
        let mut window = Counter::empty(CounterKind::Window, 5);
        window.add(6, 100, "");
        window.add(8, 50, "");
        let mut distinct = Counter::empty(CounterKind::Distinct, 5);
        distinct.add(6, 0, "p1");
        distinct.add(7, 0, "p1");
        distinct.add(9, 0, "p2");
        for counter in [total, window, distinct] {
            let bytes = encode_counter(&counter);
            assert_eq!(decode_counter("r", "s", &bytes).unwrap(), counter);
            assert!(decode_counter("r", "s", &bytes[..bytes.len() - 1]).is_err());
        }
    }

    #[test]
    fn a_window_stored_one_entry_per_event_reads_as_steps() {
        let mut old = vec![CounterKind::Window.code()];
        old.extend_from_slice(&5i64.to_le_bytes());
        old.extend_from_slice(&2u32.to_le_bytes());
        for (at, amount) in [(6i64, 100u64), (8, 50)] {
            old.extend_from_slice(&at.to_le_bytes());
            old.extend_from_slice(&amount.to_le_bytes());
        }
        let mut window = Counter::empty(CounterKind::Window, 5);
        window.add(6, 100, "");
        window.add(8, 50, "");
        assert_eq!(decode_counter("r", "s", &old).unwrap(), window);
        // Written again by steps, it reads back the same.
        let again = encode_counter(&window);
        assert_eq!(again[0], WINDOW_STEPS);
        assert_eq!(decode_counter("r", "s", &again).unwrap(), window);
    }

    #[test]
    fn steps_out_of_order_are_corrupt() {
        let mut bytes = vec![WINDOW_STEPS];
        bytes.extend_from_slice(&5i64.to_le_bytes());
        bytes.extend_from_slice(&1i64.to_le_bytes());
        bytes.extend_from_slice(&2u32.to_le_bytes());
        for start in [9i64, 8] {
            bytes.extend_from_slice(&start.to_le_bytes());
            bytes.extend_from_slice(&1u64.to_le_bytes());
            bytes.extend_from_slice(&1u64.to_le_bytes());
        }
        let err = decode_counter("r", "s", &bytes).unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt(why) if why.contains("byte 9") && why.contains("out of order")),
            "{err}"
        );
    }
}

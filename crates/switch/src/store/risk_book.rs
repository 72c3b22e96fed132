//! The risk counters in memory, for a store that one process owns (the
//! embedded SQLite store): a limit is judged from counters kept here, in
//! O(1) per limit, instead of counting the store's events on every request.
//!
//! The store keeps the durable record (on SQLite an append-only log of the
//! events and a snapshot row per counter, `store/sqlite/risk_log.rs`): every
//! event the book adds is sent to it before the request's decision (so it is
//! committed no later than the answer that depends on it), and a counter the
//! book does not hold is loaded from it first. The book is therefore a cache
//! that may forget: on start, when it is full ([`CAPACITY`]) or after the
//! hourly sweep.
//!
//! A counter asked from another start than it holds is moved there in place
//! ([`Counter::adapt`]): a daily total asked from the next settlement day
//! begins again at zero, a sliding window drops the events that left it.
//!
//! A load runs in the writer behind every event already queued, and is
//! kept only if nothing was forgotten meanwhile ([`CounterBook::epoch`]):
//! events judged from the book between the load and its arrival cannot be
//! missed that way.

use std::sync::Arc;

use foldhash::{HashMap, HashMapExt};

use super::risk_window::{Distinct, Steps};
use super::Limit;

/// How many counters (rule and subject) the book holds at most; past it
/// the half used longest ago is forgotten (and loaded again when needed).
/// A counter costs about 100 bytes, plus for a sliding window at most
/// [`super::risk_window::MAX_STEPS`] steps of 24 bytes, or for a distinct
/// count about 80 bytes per value it keeps (at most the limit's count plus
/// one).
pub const CAPACITY: usize = 500_000;

/// One rule's count for one subject.
#[derive(Debug, Clone, PartialEq)]
pub enum Counter {
    /// Events since a fixed start (a settlement day's).
    Total { since_ms: i64, count: u64, sum: u64 },
    /// A sliding window's events, by steps of time
    /// ([`super::risk_window::Steps`]), complete from `floor_ms` on.
    Window { floor_ms: i64, steps: Steps },
    /// The distinct values of a sliding window's events
    /// ([`super::risk_window::Distinct`]), complete from `floor_ms` on.
    Distinct { floor_ms: i64, values: Distinct },
}

/// Which of the [`Counter`] shapes a limit counts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterKind {
    Total,
    Window,
    Distinct,
}

impl CounterKind {
    pub fn of(limit: &Limit) -> CounterKind {
        match (&limit.distinct, limit.window_ms) {
            (Some(_), _) => CounterKind::Distinct,
            (None, Some(_)) => CounterKind::Window,
            (None, None) => CounterKind::Total,
        }
    }

    /// The kind's number in the store's encodings.
    pub fn code(self) -> u8 {
        match self {
            CounterKind::Total => 0,
            CounterKind::Window => 1,
            CounterKind::Distinct => 2,
        }
    }

    pub fn from_code(code: u8) -> Option<CounterKind> {
        match code {
            0 => Some(CounterKind::Total),
            1 => Some(CounterKind::Window),
            2 => Some(CounterKind::Distinct),
            _ => None,
        }
    }
}

/// What a limit needs loaded: its kind and start.
pub fn empty_counter(limit: &Limit) -> Counter {
    Counter::empty(CounterKind::of(limit), limit.since_ms)
}

impl Counter {
    /// A counter of `kind` with no events from `since_ms` on.
    pub fn empty(kind: CounterKind, since_ms: i64) -> Counter {
        match kind {
            CounterKind::Distinct => Counter::Distinct {
                floor_ms: since_ms,
                values: Distinct::default(),
            },
            CounterKind::Window => Counter::Window {
                floor_ms: since_ms,
                steps: Steps::default(),
            },
            CounterKind::Total => Counter::Total {
                since_ms,
                count: 0,
                sum: 0,
            },
        }
    }

    pub fn kind(&self) -> CounterKind {
        match self {
            Counter::Total { .. } => CounterKind::Total,
            Counter::Window { .. } => CounterKind::Window,
            Counter::Distinct { .. } => CounterKind::Distinct,
        }
    }

    /// Moves the counter to answer for a limit of `kind` starting at
    /// `since_ms`. A daily total asked from a later start (the next
    /// settlement day) begins again at zero: the events it counts were all
    /// recorded in its own day, before that start. Asked from an earlier
    /// start (a request judged just before the cutoff that reaches the
    /// book after one judged just past it) it answers with the newer day's
    /// count. A sliding window drops the events before `since_ms`; asked
    /// from before its floor (a rule reloaded with a longer window) it
    /// cannot know the events it dropped and counts from what it holds. A
    /// counter of another kind (a rule's id reused for another check)
    /// starts afresh.
    pub fn adapt(&mut self, kind: CounterKind, since_ms: i64) {
        if self.kind() != kind {
            *self = Counter::empty(kind, since_ms);
            return;
        }
        match self {
            Counter::Total {
                since_ms: start,
                count,
                sum,
            } => {
                if since_ms > *start {
                    *start = since_ms;
                    *count = 0;
                    *sum = 0;
                }
            }
            window => {
                window.trim(since_ms);
                if let Counter::Window { floor_ms, .. } | Counter::Distinct { floor_ms, .. } =
                    window
                {
                    *floor_ms = since_ms;
                }
            }
        }
    }

    /// The instant events count from: a total's start, a window's floor.
    pub fn since_ms(&self) -> i64 {
        match self {
            Counter::Total { since_ms, .. } => *since_ms,
            Counter::Window { floor_ms, .. } | Counter::Distinct { floor_ms, .. } => *floor_ms,
        }
    }

    /// Adds a stored event (loading) or a new one (recording).
    pub fn add(&mut self, at_ms: i64, amount_minor: u64, detail: &str) {
        match self {
            Counter::Total { count, sum, .. } => {
                *count += 1;
                *sum = sum.saturating_add(amount_minor);
            }
            Counter::Window { steps, .. } => steps.add(at_ms, amount_minor),
            Counter::Distinct { values, .. } => values.add(at_ms, detail),
        }
    }

    /// Drops the events before `since_ms` (sliding windows).
    fn trim(&mut self, since_ms: i64) {
        match self {
            Counter::Total { .. } => {}
            Counter::Window { floor_ms, steps } => {
                steps.trim(since_ms);
                *floor_ms = (*floor_ms).max(since_ms);
            }
            Counter::Distinct { floor_ms, values } => {
                values.trim(since_ms);
                *floor_ms = (*floor_ms).max(since_ms);
            }
        }
    }

    /// (count, sum) as the limit judges them: events, or distinct values
    /// other than the request's own.
    fn totals(&self, limit: &Limit) -> (u64, u64) {
        match self {
            Counter::Total { count, sum, .. } => (*count, *sum),
            Counter::Window { steps, .. } => steps.totals(),
            Counter::Distinct { values, .. } => {
                let own = limit.distinct.as_ref().is_some_and(|v| values.contains(v));
                (values.len() as u64 - u64::from(own), 0)
            }
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Counter::Total { count, .. } => *count == 0,
            Counter::Window { steps, .. } => steps.is_empty(),
            Counter::Distinct { values, .. } => values.is_empty(),
        }
    }
}

struct Entry {
    counter: Counter,
    last_used: u64,
    /// The subject's text as the map holds it: handed to the events of
    /// every request that counts it, so that the writer's string table
    /// finds a subject by its address rather than by hashing its text.
    subject: Arc<str>,
}

/// The counters, in slots found by rule and subject (nested, so that a
/// lookup borrows the limit's strings instead of copying them). A request's
/// counters are looked up once: judging and recording use their slots.
pub struct CounterBook {
    index: HashMap<Arc<str>, HashMap<Arc<str>, usize>>,
    slots: Vec<Option<Entry>>,
    /// Slots emptied by forgetting, used again first.
    free: Vec<usize>,
    len: usize,
    capacity: usize,
    /// Bumped whenever a counter is forgotten: a load begun before must be
    /// made again.
    epoch: u64,
    uses: u64,
}

impl Default for CounterBook {
    fn default() -> Self {
        CounterBook::with_capacity(CAPACITY)
    }
}

impl CounterBook {
    pub fn with_capacity(capacity: usize) -> CounterBook {
        CounterBook {
            index: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
            capacity: capacity.max(1),
            epoch: 0,
            uses: 0,
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn slot_of(&self, l: &Limit) -> Option<usize> {
        self.index.get(&*l.rule)?.get(&*l.subject).copied()
    }

    fn get(&self, l: &Limit) -> Option<&Entry> {
        self.slots[self.slot_of(l)?].as_ref()
    }

    /// The limits whose counters must be loaded before they can be judged
    /// (the store learns them from [`try_take`](Self::try_take)).
    #[cfg(test)]
    pub fn missing(&self, limits: &[Limit]) -> Vec<usize> {
        limits
            .iter()
            .enumerate()
            .filter(|(_, l)| self.get(l).is_none())
            .map(|(i, _)| i)
            .collect()
    }

    /// Keeps counters loaded since `epoch`, unless something was forgotten
    /// since (then they are stale and `false` says to load again). A
    /// counter the book already holds wins: it has every event since.
    pub fn insert_loaded(&mut self, epoch: u64, loaded: Vec<(Limit, Counter)>) -> bool {
        if epoch != self.epoch {
            return false;
        }
        if self.len + loaded.len() > self.capacity {
            self.forget_least_used();
            return false;
        }
        for (limit, counter) in loaded {
            if self.get(&limit).is_some() {
                continue;
            }
            let entry = Entry {
                counter,
                last_used: self.uses,
                subject: limit.subject.clone(),
            };
            self.len += 1;
            let slot = match self.free.pop() {
                Some(slot) => {
                    self.slots[slot] = Some(entry);
                    slot
                }
                None => {
                    self.slots.push(Some(entry));
                    self.slots.len() - 1
                }
            };
            self.index
                .entry(limit.rule)
                .or_default()
                .insert(limit.subject, slot);
        }
        true
    }

    /// [`try_take`](Self::try_take) of limits whose counters are all held.
    #[cfg(test)]
    pub fn take(&mut self, limits: &[Limit], now_ms: i64) -> (Vec<usize>, bool) {
        self.try_take(&mut limits.to_vec(), now_ms)
            .unwrap_or_else(|_| panic!("the limits' counters were loaded first"))
    }

    /// Judges `limits` at `now_ms`: the indices exceeded and whether the
    /// request's events were recorded. When some counters are not held,
    /// returns the indices of their limits instead and records nothing
    /// (one lookup per limit finds both); the held counters may have been
    /// moved to their limits' starts meanwhile, as judging them would.
    /// A recorded limit's subject is replaced by the book's own `Arc` of
    /// the same text, which the request's events then carry.
    pub fn try_take(
        &mut self,
        limits: &mut [Limit],
        now_ms: i64,
    ) -> Result<(Vec<usize>, bool), Vec<usize>> {
        self.uses += 1;
        let mut totals = Vec::with_capacity(limits.len());
        let mut slots = Vec::with_capacity(limits.len());
        let mut missing = Vec::new();
        for (i, l) in limits.iter().enumerate() {
            match self.slot_of(l) {
                Some(slot) => {
                    let entry = self.entry(slot);
                    entry.counter.adapt(CounterKind::of(l), l.since_ms);
                    totals.push(entry.counter.totals(l));
                    slots.push(slot);
                }
                None => missing.push(i),
            }
        }
        if !missing.is_empty() {
            return Err(missing);
        }
        let (exceeded, record) = super::risk::judge(limits, &totals);
        if record {
            let uses = self.uses;
            for (l, &slot) in limits.iter_mut().zip(&slots).filter(|(l, _)| l.record) {
                let entry = self.entry(slot);
                entry.last_used = uses;
                if !Arc::ptr_eq(&l.subject, &entry.subject) {
                    l.subject = entry.subject.clone();
                }
                entry.counter.add(
                    now_ms,
                    l.amount_minor,
                    l.distinct.as_deref().unwrap_or_default(),
                );
                if let (Counter::Distinct { values, .. }, Some(max)) =
                    (&mut entry.counter, l.max_count)
                {
                    values.bound(usize::try_from(max).unwrap_or(usize::MAX).saturating_add(1));
                }
            }
        }
        Ok((exceeded, record))
    }

    /// The entry in `slot`, which the index points at.
    fn entry(&mut self, slot: usize) -> &mut Entry {
        self.slots[slot]
            .as_mut()
            .expect("the index points at held counters only")
    }

    /// Forgets the events before `at_ms`, as the store's sweep does.
    pub fn forget_before(&mut self, at_ms: i64) {
        self.retain(|e| match &mut e.counter {
            Counter::Total { since_ms, .. } => *since_ms >= at_ms,
            window => {
                window.trim(at_ms);
                !window.is_empty()
            }
        });
    }

    /// Keeps the counters `keep` says to, forgetting the others.
    fn retain(&mut self, mut keep: impl FnMut(&mut Entry) -> bool) {
        self.epoch += 1;
        let (slots, free) = (&mut self.slots, &mut self.free);
        for subjects in self.index.values_mut() {
            subjects.retain(|_, &mut slot| {
                let kept = slots[slot].as_mut().is_some_and(&mut keep);
                if !kept {
                    slots[slot] = None;
                    free.push(slot);
                }
                kept
            });
        }
        self.index.retain(|_, subjects| !subjects.is_empty());
        self.len = self.index.values().map(HashMap::len).sum();
    }

    /// Forgets the half of the counters used longest ago.
    fn forget_least_used(&mut self) {
        let mut uses: Vec<u64> = self.slots.iter().flatten().map(|e| e.last_used).collect();
        if uses.is_empty() {
            return;
        }
        let middle = (uses.len() - 1) / 2;
        let (_, &mut median, _) = uses.select_nth_unstable(middle);
        self.retain(|e| e.last_used > median);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(rule: &str, since_ms: i64, window_ms: Option<i64>, max: u64) -> Limit {
        Limit {
            rule: rule.into(),
            subject: "card:a".into(),
            since_ms,
            window_ms,
            max_count: Some(max),
            max_sum_minor: None,
            amount_minor: 5,
            enforce: true,
            distinct: None,
            record: true,
        }
    }

    fn load(book: &mut CounterBook, limits: &[Limit]) {
        let epoch = book.epoch();
        let loaded = book
            .missing(limits)
            .into_iter()
            .map(|i| (limits[i].clone(), empty_counter(&limits[i])))
            .collect();
        assert!(book.insert_loaded(epoch, loaded));
    }

    #[test]
    fn every_recorded_event_of_a_counter_carries_the_books_subject() {
        let mut book = CounterBook::default();
        // Each request makes its own `Arc` of the card's subject.
        let request = || limit("daily", 0, None, 10);
        let first = request();
        load(&mut book, std::slice::from_ref(&first));
        let mut second = [request()];
        assert!(!Arc::ptr_eq(&first.subject, &second[0].subject));
        assert_eq!(book.try_take(&mut second, 10), Ok((vec![], true)));
        assert!(Arc::ptr_eq(&first.subject, &second[0].subject));
        // Not recorded (declined): the request's own `Arc` is left alone.
        let mut over = [Limit {
            max_count: Some(1),
            ..request()
        }];
        assert_eq!(book.try_take(&mut over, 20), Ok((vec![0], false)));
        assert!(!Arc::ptr_eq(&first.subject, &over[0].subject));
    }

    #[test]
    fn a_sliding_window_counts_only_its_events() {
        let mut book = CounterBook::default();
        let at = |now: i64| limit("burst", now - 60, Some(60), 2);
        load(&mut book, &[at(100)]);
        assert_eq!(book.take(&[at(100)], 100), (vec![], true));
        assert_eq!(book.take(&[at(110)], 110), (vec![], true));
        assert_eq!(book.take(&[at(120)], 120), (vec![0], false));
        // 100 has left the window at 161; 110 is still in it.
        assert_eq!(book.take(&[at(161)], 161), (vec![], true));
        assert_eq!(book.take(&[at(165)], 165), (vec![0], false));
    }

    #[test]
    fn a_total_asked_from_the_next_day_begins_again() {
        let mut book = CounterBook::default();
        let day = |start| limit("daily", start, None, 1);
        load(&mut book, &[day(0)]);
        assert_eq!(book.take(&[day(0)], 10), (vec![], true));
        assert_eq!(book.take(&[day(0)], 20), (vec![0], false));
        assert!(book.missing(&[day(1_000)]).is_empty(), "held, moved on");
        assert_eq!(book.take(&[day(1_000)], 1_010), (vec![], true));
        assert_eq!(book.take(&[day(1_000)], 1_020), (vec![0], false));
        // A straggler of the day before counts to the day moved to.
        assert_eq!(book.take(&[day(0)], 990), (vec![0], false));
    }

    #[test]
    fn a_counter_asked_as_another_kind_starts_afresh() {
        let mut book = CounterBook::default();
        let total = limit("reused", 0, None, 1);
        let window = limit("reused", 0, Some(100), 1);
        load(&mut book, std::slice::from_ref(&total));
        assert_eq!(book.take(std::slice::from_ref(&total), 10), (vec![], true));
        assert_eq!(book.take(std::slice::from_ref(&window), 20), (vec![], true));
        assert_eq!(
            book.take(std::slice::from_ref(&window), 30),
            (vec![0], false)
        );
    }

    #[test]
    fn distinct_values_count_once_and_leave_with_their_last_event() {
        let mut book = CounterBook::default();
        let packet = |now: i64, p: &str| Limit {
            distinct: Some(p.into()),
            ..limit("packets", now - 100, Some(100), 2)
        };
        load(&mut book, &[packet(0, "p1")]);
        assert_eq!(book.take(&[packet(0, "p1")], 0).0, Vec::<usize>::new());
        assert_eq!(book.take(&[packet(50, "p1")], 50).0, Vec::<usize>::new());
        assert_eq!(book.take(&[packet(60, "p2")], 60).0, Vec::<usize>::new());
        assert_eq!(book.take(&[packet(70, "p3")], 70).0, [0]);
        // At 140 p1 (its event at 50) and p2 are still in the window.
        assert_eq!(book.take(&[packet(140, "p3")], 140).0, [0]);
        // At 155 p1 has gone: p3 makes two.
        assert_eq!(book.take(&[packet(155, "p3")], 155).0, Vec::<usize>::new());
    }

    #[test]
    fn an_observed_distinct_count_keeps_no_more_values_than_its_limit_needs() {
        let mut book = CounterBook::default();
        let packet = |now: i64, p: String| Limit {
            distinct: Some(p),
            enforce: false,
            ..limit("packets", now - 1_000, Some(1_000), 3)
        };
        load(&mut book, &[packet(0, "p0".into())]);
        for n in 0..100 {
            let exceeded = book.take(&[packet(n, format!("p{n}"))], n).0;
            // Observed: recorded whether or not exceeded; exceeded from the fourth.
            assert_eq!(exceeded.is_empty(), n < 3, "packet {n}");
        }
        let held = match &book.get(&packet(0, String::new())).unwrap().counter {
            Counter::Distinct { values, .. } => values.len(),
            other => panic!("{other:?}"),
        };
        assert_eq!(held, 4, "the limit's three, and one more");
        // Seen again, an old packet is still exceeded: the newest three are others.
        assert_eq!(book.take(&[packet(100, "p5".into())], 100).0, [0]);
    }

    #[test]
    fn a_load_begun_before_something_was_forgotten_is_refused() {
        let mut book = CounterBook::default();
        let l = limit("daily", 0, None, 3);
        let epoch = book.epoch();
        book.forget_before(0);
        assert!(!book.insert_loaded(epoch, vec![(l.clone(), empty_counter(&l))]));
        assert_eq!(book.missing(std::slice::from_ref(&l)), [0]);
    }

    #[test]
    fn a_full_book_forgets_the_counters_used_longest_ago() {
        let mut book = CounterBook::with_capacity(4);
        let card = |n: u32| Limit {
            subject: format!("card:{n}").into(),
            ..limit("daily", 0, None, 10)
        };
        for n in 0..4 {
            load(&mut book, &[card(n)]);
            book.take(&[card(n)], i64::from(n));
        }
        let epoch = book.epoch();
        let fifth = card(4);
        assert!(!book.insert_loaded(epoch, vec![(fifth.clone(), empty_counter(&fifth))]));
        assert_eq!(book.len(), 2);
        assert_eq!(book.missing(&[card(0), card(1), card(2), card(3)]), [0, 1]);

        // Counters loaded again take the forgotten ones' slots, and each
        // keeps its own count: the kept ones have one event, the new none.
        let epoch = book.epoch();
        let loaded = [fifth, card(0)].map(|l| {
            let counter = empty_counter(&l);
            (l, counter)
        });
        assert!(book.insert_loaded(epoch, loaded.to_vec()));
        assert_eq!((book.len(), book.slots.len()), (4, 4));
        let at_most_one = |n: u32| Limit {
            max_count: Some(1),
            ..card(n)
        };
        let exceeded = |book: &mut CounterBook, n: u32| book.take(&[at_most_one(n)], 10).0;
        assert_eq!(exceeded(&mut book, 3), [0]);
        assert_eq!(exceeded(&mut book, 2), [0]);
        assert_eq!(exceeded(&mut book, 4), Vec::<usize>::new());
        assert_eq!(exceeded(&mut book, 0), Vec::<usize>::new());
        assert_eq!(exceeded(&mut book, 4), [0]);
    }
}

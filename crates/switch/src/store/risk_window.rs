//! The two sliding-window shapes of a risk counter, each bounded in memory
//! however many events a peer sends:
//!
//! - [`Steps`] counts events (and sums their amounts) in at most
//!   [`MAX_STEPS`] steps of time. A step starts one millisecond wide, so a
//!   counter with few events is exact; when more steps are needed two
//!   neighbours are merged (the width doubles). A step is dropped once it
//!   ends before the window's start, so an event can count up to one step
//!   longer than the window: a limit may decline early by that much, never
//!   late.
//! - [`Distinct`] keeps each value's latest event only, and at most
//!   [`Distinct::bound`] values (the newest): exact for a limit of that
//!   many, whatever the values' number.

use std::collections::VecDeque;

use foldhash::HashMap;

/// Most steps a window holds: past it, neighbours are merged.
pub const MAX_STEPS: usize = 64;

/// Events of one step of time, starting at `start_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub start_ms: i64,
    pub count: u64,
    pub sum: u64,
}

/// A sliding window's events counted by steps of `width_ms`, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Steps {
    width_ms: i64,
    steps: VecDeque<Step>,
    count: u64,
    sum: u64,
}

impl Default for Steps {
    fn default() -> Self {
        Steps {
            width_ms: 1,
            steps: VecDeque::new(),
            count: 0,
            sum: 0,
        }
    }
}

impl Steps {
    /// Steps as stored: `width_ms` positive, steps in order, each on the
    /// width's grid. `None` when they are not.
    pub fn from_parts(width_ms: i64, steps: Vec<Step>) -> Option<Steps> {
        if width_ms < 1
            || steps.len() > MAX_STEPS
            || steps.windows(2).any(|w| w[0].start_ms >= w[1].start_ms)
            || steps.iter().any(|s| s.start_ms.rem_euclid(width_ms) != 0)
        {
            return None;
        }
        let count = steps.iter().fold(0u64, |n, s| n.saturating_add(s.count));
        let sum = steps.iter().fold(0u64, |n, s| n.saturating_add(s.sum));
        Some(Steps {
            width_ms,
            steps: steps.into(),
            count,
            sum,
        })
    }

    pub fn width_ms(&self) -> i64 {
        self.width_ms
    }

    pub fn steps(&self) -> impl Iterator<Item = &Step> {
        self.steps.iter()
    }

    /// Events counted, and their amounts' sum.
    pub fn totals(&self) -> (u64, u64) {
        (self.count, self.sum)
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    pub fn add(&mut self, at_ms: i64, amount_minor: u64) {
        let start_ms = at_ms - at_ms.rem_euclid(self.width_ms);
        self.count = self.count.saturating_add(1);
        self.sum = self.sum.saturating_add(amount_minor);
        let new = Step {
            start_ms,
            count: 1,
            sum: amount_minor,
        };
        match self.steps.back_mut() {
            Some(last) if last.start_ms == start_ms => {
                last.count += 1;
                last.sum = last.sum.saturating_add(amount_minor);
            }
            Some(last) if last.start_ms > start_ms => {
                // Judged a moment before a request that reached the book first.
                let at = self.steps.partition_point(|s| s.start_ms < start_ms);
                match self.steps.get_mut(at) {
                    Some(s) if s.start_ms == start_ms => {
                        s.count += 1;
                        s.sum = s.sum.saturating_add(amount_minor);
                    }
                    _ => self.steps.insert(at, new),
                }
            }
            _ => self.steps.push_back(new),
        }
        if self.steps.len() > MAX_STEPS {
            self.widen();
        }
    }

    /// Doubles the width, merging the steps that then share a start.
    fn widen(&mut self) {
        let Some(width_ms) = self.width_ms.checked_mul(2) else {
            return;
        };
        self.width_ms = width_ms;
        let mut merged: VecDeque<Step> = VecDeque::with_capacity(self.steps.len() / 2 + 1);
        for s in self.steps.drain(..) {
            let start_ms = s.start_ms - s.start_ms.rem_euclid(width_ms);
            match merged.back_mut() {
                Some(last) if last.start_ms == start_ms => {
                    last.count += s.count;
                    last.sum = last.sum.saturating_add(s.sum);
                }
                _ => merged.push_back(Step { start_ms, ..s }),
            }
        }
        self.steps = merged;
    }

    /// Drops the steps that end at or before `since_ms`.
    pub fn trim(&mut self, since_ms: i64) {
        while let Some(first) = self.steps.front() {
            if first.start_ms.saturating_add(self.width_ms) > since_ms {
                break;
            }
            self.count = self.count.saturating_sub(first.count);
            self.sum = self.sum.saturating_sub(first.sum);
            self.steps.pop_front();
        }
        if self.steps.is_empty() {
            // Nothing left to be coarse about: exact again. The buffer is
            // kept: a card's window empties and refills on most requests.
            self.width_ms = 1;
            self.count = 0;
            self.sum = 0;
        }
    }
}

/// The distinct values of a sliding window's events, each with its latest
/// event's instant.
#[derive(Debug, Clone, Default)]
pub struct Distinct {
    latest: HashMap<String, i64>,
    /// (instant, value), oldest first; an entry whose value was seen again
    /// later is stale and skipped (dropped when they outnumber the values).
    order: VecDeque<(i64, String)>,
}

impl PartialEq for Distinct {
    fn eq(&self, other: &Self) -> bool {
        self.latest == other.latest
    }
}

impl Distinct {
    pub fn len(&self) -> usize {
        self.latest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }

    pub fn contains(&self, value: &str) -> bool {
        self.latest.contains_key(value)
    }

    /// The values with their latest instants, oldest first.
    pub fn values(&self) -> Vec<(i64, &str)> {
        let mut values: Vec<(i64, &str)> = self
            .latest
            .iter()
            .map(|(v, at)| (*at, v.as_str()))
            .collect();
        values.sort_unstable();
        values
    }

    pub fn add(&mut self, at_ms: i64, value: &str) {
        match self.latest.get_mut(value) {
            Some(latest) if *latest >= at_ms => return,
            Some(latest) => *latest = at_ms,
            None => {
                self.latest.insert(value.to_string(), at_ms);
            }
        }
        self.order.push_back((at_ms, value.to_string()));
        if self.order.len() > 2 * self.latest.len() + 16 {
            let latest = &self.latest;
            self.order.retain(|(at, v)| latest.get(v) == Some(at));
        }
    }

    fn is_live(&self, at_ms: i64, value: &str) -> bool {
        self.latest.get(value) == Some(&at_ms)
    }

    /// Drops the values whose latest event is before `since_ms`.
    pub fn trim(&mut self, since_ms: i64) {
        while self.order.front().is_some_and(|(at, _)| *at < since_ms) {
            let (at, value) = self.order.pop_front().expect("front exists");
            if self.is_live(at, &value) {
                self.latest.remove(&value);
            }
        }
    }

    /// Keeps the `most` values seen latest. A limit of `max` distinct
    /// values other than the request's own judges the same from the
    /// `max + 1` newest as from all of them: with more, it is exceeded
    /// either way.
    pub fn bound(&mut self, most: usize) {
        while self.latest.len() > most {
            let Some((at, value)) = self.order.pop_front() else {
                break;
            };
            if self.is_live(at, &value) {
                self.latest.remove(&value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn few_events_are_counted_exactly() {
        let mut w = Steps::default();
        w.add(100, 5);
        w.add(110, 7);
        assert_eq!(w.totals(), (2, 12));
        w.trim(101);
        assert_eq!(w.totals(), (1, 7), "100 left the window at 101");
        w.trim(111);
        assert!(w.is_empty());
    }

    #[test]
    fn many_events_fit_in_the_steps_and_leave_at_most_a_step_late() {
        let mut w = Steps::default();
        for at in 0..100_000 {
            w.add(at, 1);
        }
        assert!(w.steps().count() <= MAX_STEPS);
        assert_eq!(w.totals(), (100_000, 100_000));
        let width = w.width_ms();
        assert!(width <= 100_000 / (MAX_STEPS as i64 / 2), "width {width}");
        // The events before 50,000: counted until their step ends.
        w.trim(50_000);
        let (count, _) = w.totals();
        assert!((50_000..=50_000 + width as u64).contains(&count), "{count}");
    }

    #[test]
    fn an_event_out_of_order_goes_to_its_own_step() {
        let mut w = Steps::default();
        w.add(10, 1);
        w.add(30, 1);
        w.add(20, 1);
        w.add(20, 1);
        let starts: Vec<(i64, u64)> = w.steps().map(|s| (s.start_ms, s.count)).collect();
        assert_eq!(starts, [(10, 1), (20, 2), (30, 1)]);
        w.trim(21);
        assert_eq!(w.totals(), (1, 1));
    }

    #[test]
    fn stored_steps_are_checked() {
        let step = |start_ms| Step {
            start_ms,
            count: 1,
            sum: 2,
        };
        let w = Steps::from_parts(4, vec![step(0), step(8)]).unwrap();
        assert_eq!(w.totals(), (2, 4));
        assert!(Steps::from_parts(0, vec![]).is_none());
        assert!(Steps::from_parts(4, vec![step(8), step(0)]).is_none());
        assert!(Steps::from_parts(4, vec![step(3)]).is_none());
        assert!(Steps::from_parts(1, (0..65).map(step).collect()).is_none());
    }

    #[test]
    fn a_value_counts_once_and_leaves_with_its_latest_event() {
        let mut d = Distinct::default();
        d.add(0, "p1");
        d.add(50, "p1");
        d.add(60, "p2");
        assert_eq!(d.len(), 2);
        // p1's first event has left; its latest has not.
        d.trim(45);
        assert!(d.contains("p1") && d.contains("p2"));
        d.trim(61);
        assert!(!d.contains("p1") && !d.contains("p2"));
    }

    #[test]
    fn repeated_values_do_not_grow_the_order() {
        let mut d = Distinct::default();
        for at in 0..10_000 {
            d.add(at, if at % 2 == 0 { "a" } else { "b" });
        }
        assert_eq!(d.len(), 2);
        assert!(d.order.len() <= 2 * 2 + 17, "{}", d.order.len());
        assert_eq!(d.values(), [(9_998, "a"), (9_999, "b")]);
    }

    #[test]
    fn bounded_keeps_the_newest_values() {
        let mut d = Distinct::default();
        for (at, v) in [(1, "a"), (2, "b"), (3, "c"), (4, "a")] {
            d.add(at, v);
        }
        d.bound(2);
        assert_eq!(d.values(), [(3, "c"), (4, "a")]);
    }
}

//! How many commands a second reach the writer, over windows of 100 ms: the
//! embedded store spaces its batches by the commit interval only while that
//! rate is at or above a threshold
//! ([`SqliteOptions::commit_interval_above`](super::SqliteOptions::commit_interval_above)).
//!
//! Below it the writer has time to spare and a batch begins as soon as the
//! one before ends, for the least latency; above it every commit's sync and
//! wake-ups are worth sharing among more commands. The rate counted is the
//! commands the writer takes, which under a switch's load (requests coming
//! on their senders' schedule) is the rate they arrive at: spacing the
//! batches does not change it, so the interval never keeps itself on at a
//! rate below the threshold (a batch size would: spaced batches are larger).
//! Callers that each wait for their answer before the next command come a
//! little slower while held, which can only turn the interval off sooner.

use std::time::{Duration, Instant};

/// How long each window of the rate lasts (at least: a window closes at the
/// first batch after it).
pub(super) const WINDOW: Duration = Duration::from_millis(100);

/// The commands taken in the current window, and what the last one said.
pub(super) struct CommandRate {
    /// Commands a second from which the writer counts as busy; zero: always.
    threshold: u64,
    window_began: Instant,
    taken: u64,
    busy: bool,
}

impl CommandRate {
    pub(super) fn new(threshold: u64, now: Instant) -> CommandRate {
        CommandRate {
            threshold,
            window_began: now,
            taken: 0,
            busy: threshold == 0,
        }
    }

    /// A batch of `commands` began at `now`; a window past its length closes,
    /// and its rate decides [`CommandRate::busy`] until the next closes.
    pub(super) fn took(&mut self, commands: usize, now: Instant) {
        self.taken = self.taken.saturating_add(commands as u64);
        let elapsed = now.saturating_duration_since(self.window_began);
        if elapsed < WINDOW {
            return;
        }
        // taken / elapsed >= threshold, in integers: an idle stretch makes
        // a long window of a low rate.
        self.busy = self.threshold == 0
            || u128::from(self.taken).saturating_mul(1_000_000_000)
                >= u128::from(self.threshold).saturating_mul(elapsed.as_nanos());
        self.window_began = now;
        self.taken = 0;
    }

    /// Whether the last closed window's rate reached the threshold.
    pub(super) fn busy(&self) -> bool {
        self.busy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `per_window` commands in each of `windows` windows of 100 ms, taken
    /// in batches of 10 spread evenly over each.
    fn feed(rate: &mut CommandRate, start: Instant, windows: u32, per_window: u32) -> Instant {
        let batches = per_window / 10;
        let mut now = start;
        for _ in 0..windows {
            for _ in 0..batches {
                now += WINDOW / batches;
                rate.took(10, now);
            }
        }
        now
    }

    #[test]
    fn busy_from_the_threshold_on_and_not_below() {
        let start = Instant::now();
        let mut rate = CommandRate::new(30_000, start);
        assert!(!rate.busy(), "not busy before a window has closed");
        // 20,000 a second (2,000 in 100 ms): below.
        let now = feed(&mut rate, start, 3, 2_000);
        assert!(!rate.busy());
        // 40,000 a second: busy from the first window that closes.
        let now = feed(&mut rate, now, 2, 4_000);
        assert!(rate.busy());
        // Exactly the threshold counts as busy.
        let now = feed(&mut rate, now, 2, 3_000);
        assert!(rate.busy());
        // Back below: not busy once a window of the lower rate closes.
        feed(&mut rate, now, 2, 2_900);
        assert!(!rate.busy());
    }

    #[test]
    fn an_idle_stretch_ends_busy() {
        let start = Instant::now();
        let mut rate = CommandRate::new(30_000, start);
        let now = feed(&mut rate, start, 2, 5_000);
        assert!(rate.busy());
        // Ten seconds with nothing, then one batch: a window of 1 a second.
        rate.took(1, now + Duration::from_secs(10));
        assert!(!rate.busy());
        // A window not yet closed changes nothing.
        rate.took(10_000, now + Duration::from_secs(10) + WINDOW / 2);
        assert!(!rate.busy());
    }

    #[test]
    fn a_zero_threshold_is_always_busy() {
        let start = Instant::now();
        let mut rate = CommandRate::new(0, start);
        assert!(rate.busy());
        rate.took(0, start + Duration::from_secs(5));
        assert!(rate.busy());
    }

    #[test]
    fn huge_counts_and_a_clock_that_goes_back_do_not_panic() {
        let start = Instant::now();
        let mut rate = CommandRate::new(u64::MAX, start + Duration::from_secs(1));
        rate.took(usize::MAX, start);
        rate.took(usize::MAX, start + Duration::from_secs(2));
        assert!(rate.busy(), "u64::MAX commands in a second reach u64::MAX");
        rate.took(1, start + Duration::from_secs(3));
        assert!(!rate.busy());
    }
}

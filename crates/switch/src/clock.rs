//! The switch's clock, injectable so tests and the demo can move it across
//! midnight and days. Times are UTC `NaiveDateTime`; field 7 is UTC too.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{Duration, NaiveDateTime, Utc};

pub trait Clock: Send + Sync + 'static {
    /// Now, in UTC.
    fn now(&self) -> NaiveDateTime;

    /// Now as Unix milliseconds.
    fn now_ms(&self) -> i64 {
        self.now().and_utc().timestamp_millis()
    }
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> NaiveDateTime {
        Utc::now().naive_utc()
    }

    /// Straight from the system clock, not through a calendar date and back
    /// (a request reads it several times).
    fn now_ms(&self) -> i64 {
        match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            Ok(since) => i64::try_from(since.as_millis()).unwrap_or(i64::MAX),
            Err(before) => i64::try_from(before.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
        }
    }
}

/// The system clock shifted by an adjustable offset: time still flows, but can
/// be moved forward (to the next day, across midnight) while running.
#[derive(Debug, Default)]
pub struct ShiftedClock {
    offset_ms: AtomicI64,
}

impl ShiftedClock {
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock by `by` (forward when positive).
    pub fn advance(&self, by: Duration) {
        self.offset_ms
            .fetch_add(by.num_milliseconds(), Ordering::SeqCst);
    }

    /// Sets the clock so that it reads `at` now.
    pub fn set(&self, at: NaiveDateTime) {
        let offset = at.and_utc().timestamp_millis() - Utc::now().timestamp_millis();
        self.offset_ms.store(offset, Ordering::SeqCst);
    }
}

impl Clock for ShiftedClock {
    fn now(&self) -> NaiveDateTime {
        Utc::now().naive_utc() + Duration::milliseconds(self.offset_ms.load(Ordering::SeqCst))
    }
}

/// Time as tokio's clock sees it, from a fixed start: under a paused tokio
/// runtime (`start_paused`) it is virtual and fully deterministic, which is
/// what the simulation tests run on.
#[derive(Debug)]
pub struct TokioClock {
    epoch: NaiveDateTime,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// A clock reading `epoch` now.
    pub fn starting_at(epoch: NaiveDateTime) -> Self {
        TokioClock {
            epoch,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> NaiveDateTime {
        let elapsed = tokio::time::Instant::now() - self.start;
        self.epoch + Duration::from_std(elapsed).unwrap_or_else(|_| Duration::zero())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_clock_in_milliseconds_is_its_time() {
        let clock = SystemClock;
        let before = clock.now().and_utc().timestamp_millis();
        let ms = clock.now_ms();
        let after = clock.now().and_utc().timestamp_millis();
        assert!(before <= ms && ms <= after, "{before} {ms} {after}");
    }
}

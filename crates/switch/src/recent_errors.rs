//! The last warnings and errors the process logged, for the operator's page.
//!
//! A `tracing` layer ([`RecentErrorsLayer`], installed by
//! [`crate::logging::init`]) copies every WARN and ERROR event into a ring of
//! at most [`CAPACITY`] entries of at most [`MAX_MESSAGE_CHARS`] characters:
//! bounded whatever the rate of errors. Card data is masked twice over: the
//! code logs masked values already, and any run of 13 to 19 digits in an
//! entry keeps only its first 6 and last 4 before it is stored, so a value
//! logged unmasked by mistake still never reaches the page.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{LazyLock, Mutex};

use serde::Serialize;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// Entries kept; older ones are dropped.
pub const CAPACITY: usize = 50;
/// Characters kept of an entry's message and fields.
pub const MAX_MESSAGE_CHARS: usize = 400;

/// One warning or error.
#[derive(Clone, Debug, Serialize)]
pub struct RecentError {
    /// RFC 3339, UTC.
    pub time: String,
    pub level: &'static str,
    pub target: String,
    /// The message and its fields (`key=value`), card data masked.
    pub message: String,
}

/// The ring of recent warnings and errors.
pub struct RecentErrors {
    entries: Mutex<VecDeque<RecentError>>,
    /// Entries ever recorded, dropped ones included.
    total: std::sync::atomic::AtomicU64,
}

/// The process's ring.
pub fn recent_errors() -> &'static RecentErrors {
    static RING: LazyLock<RecentErrors> = LazyLock::new(|| RecentErrors {
        entries: Mutex::new(VecDeque::with_capacity(CAPACITY)),
        total: std::sync::atomic::AtomicU64::new(0),
    });
    &RING
}

impl RecentErrors {
    pub fn record(&self, level: &'static str, target: &str, message: &str) {
        let entry = RecentError {
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            level,
            target: target.chars().take(80).collect(),
            message: mask_card_numbers(message)
                .chars()
                .take(MAX_MESSAGE_CHARS)
                .collect(),
        };
        self.total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // A poisoned ring only means a panic elsewhere mid-push: keep going.
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() == CAPACITY {
            entries.pop_front();
        }
        entries.push_back(entry);
    }

    /// The entries, newest first.
    pub fn newest_first(&self) -> Vec<RecentError> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.iter().rev().cloned().collect()
    }

    /// Entries ever recorded, including those dropped from the ring.
    pub fn total(&self) -> u64 {
        self.total.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Replaces every run of 13 to 19 ASCII digits (a card number's length)
/// by its masked form.
pub fn mask_card_numbers(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut digits = String::new();
    let flush = |digits: &mut String, out: &mut String| {
        if (13..=19).contains(&digits.len()) {
            out.push_str(&iso8583::mask::mask_pan(digits));
        } else {
            out.push_str(digits);
        }
        digits.clear();
    };
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            flush(&mut digits, &mut out);
            out.push(c);
        }
    }
    flush(&mut digits, &mut out);
    out
}

/// Copies WARN and ERROR events into [`recent_errors()`].
pub struct RecentErrorsLayer;

impl<S: Subscriber> Layer<S> for RecentErrorsLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let metadata = event.metadata();
        let level = match *metadata.level() {
            Level::ERROR => "error",
            Level::WARN => "warn",
            _ => return,
        };
        let mut text = MessageText::default();
        event.record(&mut text);
        recent_errors().record(level, metadata.target(), &text.0);
    }
}

/// The message first, then `key=value` for every other field.
#[derive(Default)]
struct MessageText(String);

impl Visit for MessageText {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if self.0.len() > MAX_MESSAGE_CHARS * 2 {
            return;
        }
        if field.name() == "message" {
            let rest = std::mem::take(&mut self.0);
            let _ = write!(self.0, "{value:?}");
            if !rest.is_empty() {
                self.0.push(' ');
                self.0.push_str(&rest);
            }
        } else {
            if !self.0.is_empty() {
                self.0.push(' ');
            }
            let _ = write!(self.0, "{}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        // Strings as they are, not quoted and escaped by Debug.
        self.record_debug(field, &format_args!("{value}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_numbers_are_masked_and_other_numbers_kept() {
        assert_eq!(
            mask_card_numbers("pan 6222020200112233441 stan 000123 at 20261202"),
            "pan 622202*********3441 stan 000123 at 20261202"
        );
        assert_eq!(mask_card_numbers("4111111111111111"), "411111******1111");
        assert_eq!(mask_card_numbers(""), "");
    }

    #[test]
    fn the_ring_is_bounded_and_newest_first() {
        let ring = RecentErrors {
            entries: Mutex::new(VecDeque::new()),
            total: std::sync::atomic::AtomicU64::new(0),
        };
        for i in 0..(CAPACITY + 7) {
            ring.record("warn", "t", &format!("n{i} {}", "x".repeat(1000)));
        }
        let entries = ring.newest_first();
        assert_eq!(entries.len(), CAPACITY);
        assert!(entries[0]
            .message
            .starts_with(&format!("n{}", CAPACITY + 6)));
        assert!(entries
            .iter()
            .all(|e| e.message.chars().count() <= MAX_MESSAGE_CHARS));
        assert_eq!(ring.total(), (CAPACITY + 7) as u64);
    }
}

//! Risk controls: rules a wallet request must pass before anything of it is
//! forwarded to a bank (amount limits, daily totals, velocity, probing,
//! packet shares, block and allow lists), read from the rules file
//! (`rules.rs`) and judged by `evaluate.rs`, with the counters they need kept
//! in the store (`store::risk`) so that they hold across instances and
//! restarts.
//!
//! The rules in force can be replaced while the switch runs
//! ([`Risk::reload`], on SIGHUP): a bad file is refused and the old rules
//! stay. Requests already being judged finish under the rules they started
//! with; the next request is judged under the new ones.

mod evaluate;
pub mod rules;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

pub use evaluate::{Screened, Verdict};
pub use rules::{Mode, RequestKind, Rules, RulesError};

/// The rules in force, where they came from, and what they did.
#[derive(Default)]
pub struct Risk {
    /// The rules file, read again on reload; `None`: no rules.
    path: Option<PathBuf>,
    rules: RwLock<Arc<Rules>>,
    tally: Tally,
    /// When old counter events were last swept (ms since the epoch).
    last_sweep_ms: AtomicI64,
    /// The settlement day last judged in, so that a request does not work
    /// out its day's start from the calendar again.
    day: Mutex<Option<CachedDay>>,
}

/// A settlement day as `[start_ms, end_ms)` under `settlement`.
#[derive(Clone, Copy)]
struct CachedDay {
    settlement: crate::clearing::Settlement,
    start_ms: i64,
    end_ms: i64,
}

/// What the rules did since start, for logs and metrics: per rule, how
/// many requests it declined (enforce) and would have declined (observe).
#[derive(Default)]
pub struct Tally {
    pub declined: AtomicU64,
    pub observed: AtomicU64,
    per_rule: Mutex<BTreeMap<String, RuleTally>>,
}

/// One rule's hits since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuleTally {
    pub declined: u64,
    pub observed: u64,
}

impl Tally {
    fn count(&self, rule: &str, mode: Mode) {
        let (total, field): (&AtomicU64, fn(&mut RuleTally) -> &mut u64) = match mode {
            Mode::Enforce => (&self.declined, |t| &mut t.declined),
            Mode::Observe => (&self.observed, |t| &mut t.observed),
        };
        total.fetch_add(1, Ordering::Relaxed);
        crate::metrics::metrics()
            .risk_hits
            .get_or_create(&crate::metrics::RiskLabels {
                rule: rule.to_string(),
                mode: mode.as_str(),
            })
            .inc();
        if let Ok(mut per_rule) = self.per_rule.lock() {
            *field(per_rule.entry(rule.to_string()).or_default()) += 1;
        }
    }

    /// Each rule's hits since start, by rule id.
    pub fn per_rule(&self) -> BTreeMap<String, RuleTally> {
        self.per_rule.lock().map(|t| t.clone()).unwrap_or_default()
    }
}

impl Risk {
    /// No rules: every request passes.
    pub fn none() -> Risk {
        Risk::default()
    }

    /// The rules of `path`, refused (with where and why) when the file is bad.
    pub fn load(path: &Path) -> Result<Risk, RulesError> {
        let rules = Rules::load(path)?;
        Ok(Risk {
            path: Some(path.to_path_buf()),
            rules: RwLock::new(Arc::new(rules)),
            ..Risk::default()
        })
    }

    /// Rules given directly (tests, embedding).
    pub fn with_rules(rules: Rules) -> Risk {
        Risk {
            rules: RwLock::new(Arc::new(rules)),
            ..Risk::default()
        }
    }

    /// Reads the rules file again and puts it in force; on any fault the
    /// rules in force stay and the fault is returned. Returns how many rules
    /// are now in force.
    pub fn reload(&self) -> Result<usize, RulesError> {
        let Some(path) = &self.path else {
            return Err(RulesError {
                at: "[risk] rules_file".into(),
                reason: "no rules file is configured".into(),
            });
        };
        let rules = Rules::load(path)?;
        let n = rules.rules.len();
        self.replace(rules);
        Ok(n)
    }

    /// Puts `rules` in force from the next request on.
    pub fn replace(&self, rules: Rules) {
        if let Ok(mut current) = self.rules.write() {
            *current = Arc::new(rules);
        }
    }

    /// The rules in force now.
    pub fn rules(&self) -> Arc<Rules> {
        self.rules
            .read()
            .map(|r| r.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// What the rules did since start.
    pub fn tally(&self) -> &Tally {
        &self.tally
    }

    /// The start (ms since the epoch) of the settlement day `now_ms` falls
    /// in, from the day last worked out while `now_ms` is still in it.
    fn day_start_ms(&self, settlement: &crate::clearing::Settlement, now_ms: i64) -> i64 {
        let cached = self.day.lock().ok().and_then(|day| *day);
        if let Some(day) = cached
            .filter(|d| d.settlement == *settlement && d.start_ms <= now_ms && now_ms < d.end_ms)
        {
            return day.start_ms;
        }
        let date = settlement.date_of_ms(now_ms);
        let (start_ms, end_ms) = settlement.window_ms(date);
        // Kept only when every moment of the window dates to `date` (its
        // first and last do, and dates never go back as time goes on), so
        // the cache answers exactly as the calendar would.
        let whole = start_ms <= now_ms
            && now_ms < end_ms
            && settlement.date_of_ms(start_ms) == date
            && settlement.date_of_ms(end_ms - 1) == date;
        if whole {
            if let Ok(mut day) = self.day.lock() {
                *day = Some(CachedDay {
                    settlement: *settlement,
                    start_ms,
                    end_ms,
                });
            }
        }
        start_ms
    }

    /// Whether a sweep of old counter events is due at `now_ms` (at most
    /// one an hour); claims it when it is.
    fn sweep_due(&self, now_ms: i64) -> bool {
        const HOUR_MS: i64 = 3_600_000;
        let last = self.last_sweep_ms.load(Ordering::Relaxed);
        now_ms - last >= HOUR_MS
            && self
                .last_sweep_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// Who a card is in the counters: a keyed digest (the data keys' HMAC key
/// when card data is sealed, SHA-256 otherwise), so the counters hold no
/// card number.
pub fn card_subject(pan: &str) -> Arc<str> {
    use sha2::Digest;
    let digest: [u8; 32] = match crate::vault::vault() {
        Some(vault) => {
            let mut mac = vault.keyed_hasher();
            hmac::Mac::update(&mut mac, b"risk card\0");
            hmac::Mac::update(&mut mac, pan.as_bytes());
            hmac::Mac::finalize(mac).into_bytes().into()
        }
        None => sha2::Sha256::digest(pan.as_bytes()).into(),
    };
    // Built on the stack and allocated once: made on every request judged.
    const PREFIX: &[u8] = b"card:";
    let mut text = [0u8; PREFIX.len() + 32];
    text[..PREFIX.len()].copy_from_slice(PREFIX);
    hex::encode_to_slice(&digest[..16], &mut text[PREFIX.len()..])
        .expect("16 bytes are 32 hex digits");
    Arc::from(std::str::from_utf8(&text).expect("ASCII"))
}

#[cfg(test)]
mod day_tests {
    use super::Risk;
    use crate::clearing::Settlement;

    /// The cached day start answers as the calendar does, on both sides of
    /// the cutoff and in either direction of time, for two settlements.
    #[test]
    fn cached_day_start_matches_the_calendar() {
        let risk = Risk::none();
        let shanghai = Settlement::default();
        let utc = Settlement::parse("00:00", "UTC").unwrap();
        // 2026-12-03 14:59:59.999 UTC is 22:59:59.999 in Shanghai, a
        // millisecond before its cutoff.
        let before_cutoff = 1_796_309_999_999_i64;
        for settlement in [shanghai, utc, shanghai] {
            for ms in [
                before_cutoff - 3_600_000,
                before_cutoff,
                before_cutoff + 1,
                before_cutoff + 86_400_000,
                before_cutoff,
                before_cutoff - 86_400_000 * 40,
            ] {
                let calendar = settlement.window_ms(settlement.date_of_ms(ms)).0;
                assert_eq!(risk.day_start_ms(&settlement, ms), calendar, "at {ms}");
            }
        }
        let first = risk.day_start_ms(&shanghai, before_cutoff);
        assert!(risk.day_start_ms(&shanghai, before_cutoff + 1) > first);
    }
}

//! Alerts: per bank and per wallet institution, over a sliding window
//! (`[alerts] window_seconds`), the decline rate (answers other than 00 out
//! of the freezes, debits and credits a bank answered, or the freezes and
//! receives a wallet was answered), the reversal rate (reversals queued out
//! of requests) and sudden changes of volume (requests in the window against
//! the average of the windows before it, a rise or a fall past a factor).
//!
//! The hot path only counts: one read-locked map lookup and one small
//! per-party mutex around fixed buckets (a window is six buckets; the ring
//! holds the window and the `history_windows` before it), so memory is
//! bounded by the number of parties, itself capped ([`MAX_PARTIES_PER_SIDE`]:
//! wallet institutions come from F32, which a peer writes). A task
//! ([`run`]) judges every party once a bucket: an alert crossing its
//! threshold logs one structured warning, `alert raised`, and is not logged
//! again until it has cleared (its measure back below 80% of the threshold,
//! or too few requests to judge), which logs `alert cleared` — hysteresis,
//! so a rate hovering at its threshold does not flood the log. Metrics:
//! `switchboard_alert_active`, `switchboard_alerts_total` and the measures
//! themselves, `switchboard_alert_measure`.
//!
//! Rates here are ratios of counts, not amounts: floating point is fine.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::clock::Clock;
use crate::dialect::InstitutionId;
use crate::metrics::{metrics, AlertLabels, Label, MeasureLabels, Side};

/// Distinct parties tracked per side (banks, wallet institutions); more are
/// counted together under the party `other`.
pub const MAX_PARTIES_PER_SIDE: usize = 256;

/// Buckets a window is cut into: the window slides a bucket at a time.
const BUCKETS_PER_WINDOW: i64 = 6;

/// An active alert clears when its measure falls below this share of its
/// threshold (for a fall in volume: rises above the threshold divided by it).
const CLEARS_BELOW: f64 = 0.8;

/// The most windows a volume is compared with (bounds each party's ring).
pub const MAX_HISTORY_WINDOWS: u32 = 10;

/// `[alerts]`: what is watched and when it alarms.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertPolicy {
    pub enabled: bool,
    /// The sliding window every measure is taken over.
    pub window: Duration,
    /// Windows before the current one whose average volume it is compared with.
    pub history_windows: u32,
    /// Declines out of answers at or above which a party alarms.
    pub decline_rate: f64,
    /// Reversals out of requests at or above which a party alarms.
    pub reversal_rate: f64,
    /// A window's requests at least this many times the average, or at most
    /// the average divided by it, alarm.
    pub volume_factor: f64,
    /// Fewer answers (rates), requests (a rise) or average requests (a
    /// fall) than this in a window are not judged: quiet periods never alarm.
    pub min_requests: u32,
}

impl Default for AlertPolicy {
    fn default() -> Self {
        AlertPolicy {
            enabled: true,
            window: Duration::from_secs(60),
            history_windows: 5,
            decline_rate: 0.5,
            reversal_rate: 0.1,
            volume_factor: 4.0,
            min_requests: 20,
        }
    }
}

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    DeclineRate,
    ReversalRate,
    VolumeRise,
    VolumeFall,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::DeclineRate,
        Kind::ReversalRate,
        Kind::VolumeRise,
        Kind::VolumeFall,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::DeclineRate => "decline_rate",
            Kind::ReversalRate => "reversal_rate",
            Kind::VolumeRise => "volume_rise",
            Kind::VolumeFall => "volume_fall",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Wallet => "wallet",
        Side::Bank => "bank",
    }
}

/// One thing that happened to a party.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A request answered, approved or not.
    Answered { approved: bool },
    /// A request sent that got no answer (a bank's timeout or lost link).
    Unanswered,
    /// A reversal queued for one of the party's requests.
    Reversal,
}

/// Counts over some buckets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub requests: u64,
    pub answered: u64,
    pub declined: u64,
    pub reversals: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Which bucket of time (ms / bucket length) these counts are of.
    epoch: i64,
    requests: u32,
    answered: u32,
    declined: u32,
    reversals: u32,
}

/// One party's buckets, a ring indexed by epoch, and its alerts' states.
struct Party {
    ring: Vec<Bucket>,
    active: [bool; 4],
}

impl Party {
    fn new(len: usize) -> Party {
        Party {
            ring: vec![
                Bucket {
                    epoch: i64::MIN,
                    ..Bucket::default()
                };
                len
            ],
            active: [false; 4],
        }
    }

    fn count(&mut self, epoch: i64, event: Event) {
        let len = self.ring.len() as i64;
        let bucket = &mut self.ring[epoch.rem_euclid(len) as usize];
        if bucket.epoch != epoch {
            *bucket = Bucket {
                epoch,
                ..Bucket::default()
            };
        }
        let add = |n: &mut u32| *n = n.saturating_add(1);
        match event {
            Event::Answered { approved } => {
                add(&mut bucket.requests);
                add(&mut bucket.answered);
                if !approved {
                    add(&mut bucket.declined);
                }
            }
            Event::Unanswered => add(&mut bucket.requests),
            Event::Reversal => add(&mut bucket.reversals),
        }
    }

    /// The counts of the buckets `from..=to`.
    fn sum(&self, from: i64, to: i64) -> Counts {
        let mut c = Counts::default();
        for b in self.ring.iter().filter(|b| (from..=to).contains(&b.epoch)) {
            c.requests += u64::from(b.requests);
            c.answered += u64::from(b.answered);
            c.declined += u64::from(b.declined);
            c.reversals += u64::from(b.reversals);
        }
        c
    }
}

/// A measure against its threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    pub value: f64,
    pub threshold: f64,
    pub crossed: bool,
    pub cleared: bool,
}

/// An alert raised or cleared by one judgement.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub kind: Kind,
    pub side: Side,
    pub party: String,
    pub raised: bool,
    pub value: f64,
    pub threshold: f64,
    pub window: Counts,
}

/// The measure of `kind` over `now` (the window) against `baseline` (the
/// average requests of the windows before; `None` until they were all
/// watched); `None` when there is too little to judge.
pub fn read(
    policy: &AlertPolicy,
    kind: Kind,
    now: Counts,
    baseline: Option<f64>,
) -> Option<Reading> {
    let min = u64::from(policy.min_requests);
    let above = |value: f64, threshold: f64| Reading {
        value,
        threshold,
        crossed: value >= threshold,
        cleared: value < threshold * CLEARS_BELOW,
    };
    match kind {
        Kind::DeclineRate => (now.answered >= min && now.answered > 0)
            .then(|| above(ratio(now.declined, now.answered), policy.decline_rate)),
        Kind::ReversalRate => (now.requests >= min && now.requests > 0)
            .then(|| above(ratio(now.reversals, now.requests), policy.reversal_rate)),
        Kind::VolumeRise => {
            let baseline = baseline?;
            // Less than a request a window before counts as one.
            (now.requests >= min.max(1)).then(|| {
                above(
                    now.requests as f64 / baseline.max(1.0),
                    policy.volume_factor,
                )
            })
        }
        Kind::VolumeFall => {
            let baseline = baseline?;
            let threshold = 1.0 / policy.volume_factor;
            let value = now.requests as f64 / baseline.max(1.0);
            (baseline >= min.max(1) as f64).then_some(Reading {
                value,
                threshold,
                crossed: value <= threshold,
                cleared: value > threshold / CLEARS_BELOW,
            })
        }
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// How a party is named in labels and logs: an institution id without the
/// zero fill field 90 gives it, but at least 8 digits (the usual length of
/// F32), so that F32 as sent and the zero-filled id of a stored freeze name
/// the same party.
pub fn party_name(institution: &[u8]) -> Label {
    match InstitutionId::from_field(32, institution) {
        Ok(id) => {
            let digits = id.0;
            let significant = digits.iter().position(|&d| d != b'0').unwrap_or(11);
            Label::new(&digits[significant.min(3)..])
        }
        // Not digits: named as it is (cut, made printable).
        Err(_) => Label::new(institution),
    }
}

type Parties = HashMap<(Side, Label), Arc<Mutex<Party>>>;

/// The parties' windows and alerts of one switch.
pub struct Alerts {
    policy: AlertPolicy,
    clock: Arc<dyn Clock>,
    bucket_ms: i64,
    /// The bucket these alerts started in: volumes are compared only once
    /// every window they are compared with was watched.
    started_epoch: i64,
    parties: RwLock<Parties>,
}

impl Alerts {
    pub fn new(policy: AlertPolicy, clock: Arc<dyn Clock>) -> Alerts {
        let window_ms = i64::try_from(policy.window.as_millis()).unwrap_or(i64::MAX);
        let bucket_ms = (window_ms / BUCKETS_PER_WINDOW).max(1);
        Alerts {
            bucket_ms,
            started_epoch: clock.now_ms().div_euclid(bucket_ms),
            policy,
            clock,
            parties: RwLock::new(HashMap::new()),
        }
    }

    /// Nothing watched.
    pub fn off() -> Alerts {
        Alerts::new(
            AlertPolicy {
                enabled: false,
                ..AlertPolicy::default()
            },
            Arc::new(crate::clock::SystemClock),
        )
    }

    pub fn policy(&self) -> &AlertPolicy {
        &self.policy
    }

    /// Counts `event` for the party `institution` (F32 or a bank's id) on `side`.
    pub fn record(&self, side: Side, institution: &[u8], event: Event) {
        if !self.policy.enabled {
            return;
        }
        let epoch = self.clock.now_ms().div_euclid(self.bucket_ms);
        let party = self.party(side, party_name(institution));
        let mut party = party.lock().unwrap_or_else(|p| p.into_inner());
        party.count(epoch, event);
    }

    /// Watches a party known from the configuration (a bank, a wallet
    /// listener's institution) from the start: its series are on
    /// `/metrics` at 0 before its first request, so that a dashboard reads
    /// 0 rather than nothing.
    pub fn expect(&self, side: Side, institution: &[u8]) {
        if !self.policy.enabled {
            return;
        }
        let name = party_name(institution);
        let _ = self.party(side, name);
        let m = metrics();
        for kind in Kind::ALL {
            let labels = AlertLabels {
                kind: kind.as_str(),
                side,
                party: name,
            };
            m.alert_active.get_or_create(&labels).set(0);
            let _ = m.alerts.get_or_create(&labels);
        }
        self.set_measures(side, name, Counts::default(), None);
    }

    /// The party's window: its own, or `other`'s once its side is full.
    /// A full side is found under the read lock, so a peer sending new
    /// institutions past the cap never takes the write lock again.
    fn party(&self, side: Side, name: Label) -> Arc<Mutex<Party>> {
        let other = (side, Label::new(b"other"));
        let full =
            |m: &Parties| m.keys().filter(|(s, _)| *s == side).count() >= MAX_PARTIES_PER_SIDE;
        if let Ok(m) = self.parties.read() {
            if let Some(p) = m.get(&(side, name)) {
                return p.clone();
            }
            if let Some(p) = m.get(&other).filter(|_| full(&m)) {
                return p.clone();
            }
        }
        let mut parties = self.parties.write().unwrap_or_else(|p| p.into_inner());
        let key = if full(&parties) { other } else { (side, name) };
        let len = (BUCKETS_PER_WINDOW * (1 + i64::from(self.history()))) as usize;
        parties
            .entry(key)
            .or_insert_with(|| Arc::new(Mutex::new(Party::new(len))))
            .clone()
    }

    fn history(&self) -> u32 {
        self.policy.history_windows.clamp(1, MAX_HISTORY_WINDOWS)
    }

    /// Judges every party now: raises and clears alerts (logging and
    /// counting each change once), sets the gauges, returns the changes.
    pub fn evaluate(&self) -> Vec<Change> {
        if !self.policy.enabled {
            return Vec::new();
        }
        let epoch = self.clock.now_ms().div_euclid(self.bucket_ms);
        let history = i64::from(self.history());
        let parties: Vec<_> = match self.parties.read() {
            Ok(m) => m.iter().map(|(k, p)| (*k, p.clone())).collect(),
            Err(_) => return Vec::new(),
        };
        let mut changes = Vec::new();
        for ((side, name), party) in parties {
            let Ok(mut party) = party.lock() else {
                continue;
            };
            let window = party.sum(epoch - BUCKETS_PER_WINDOW + 1, epoch);
            let watched_since = epoch - BUCKETS_PER_WINDOW * (1 + history) + 1;
            let baseline = (self.started_epoch <= watched_since).then(|| {
                party
                    .sum(watched_since, epoch - BUCKETS_PER_WINDOW)
                    .requests as f64
                    / history as f64
            });
            self.set_measures(side, name, window, baseline);
            for kind in Kind::ALL {
                let reading = read(&self.policy, kind, window, baseline);
                let active = &mut party.active[kind.index()];
                let change = match reading {
                    Some(r) if !*active && r.crossed => Some((true, r)),
                    Some(r) if *active && r.cleared => Some((false, r)),
                    None if *active => Some((
                        false,
                        Reading {
                            value: 0.0,
                            threshold: 0.0,
                            crossed: false,
                            cleared: true,
                        },
                    )),
                    _ => None,
                };
                let Some((raised, r)) = change else { continue };
                *active = raised;
                let change = Change {
                    kind,
                    side,
                    party: name.as_str().to_string(),
                    raised,
                    value: r.value,
                    threshold: r.threshold,
                    window,
                };
                self.announce(&change, baseline);
                changes.push(change);
            }
        }
        changes
    }

    /// One log line and the metrics of a change.
    fn announce(&self, c: &Change, baseline: Option<f64>) {
        let labels = AlertLabels {
            kind: c.kind.as_str(),
            side: c.side,
            party: Label::new(c.party.as_bytes()),
        };
        let m = metrics();
        m.alert_active
            .get_or_create(&labels)
            .set(i64::from(c.raised));
        let window_s = self.policy.window.as_secs();
        if c.raised {
            m.alerts.get_or_create(&labels).inc();
            warn!(
                alert = c.kind.as_str(),
                side = side_name(c.side),
                party = %c.party,
                value = c.value,
                threshold = c.threshold,
                window_s,
                requests = c.window.requests,
                answered = c.window.answered,
                declined = c.window.declined,
                reversals = c.window.reversals,
                baseline_requests = baseline.unwrap_or(0.0),
                "alert raised"
            );
        } else {
            info!(
                alert = c.kind.as_str(),
                side = side_name(c.side),
                party = %c.party,
                value = c.value,
                window_s,
                requests = c.window.requests,
                "alert cleared"
            );
        }
    }

    fn set_measures(&self, side: Side, party: Label, window: Counts, baseline: Option<f64>) {
        let m = metrics();
        let set = |measure: &'static str, value: f64| {
            m.alert_measure
                .get_or_create(&MeasureLabels {
                    measure,
                    side,
                    party,
                })
                .set(value);
        };
        set("decline_rate", ratio(window.declined, window.answered));
        set("reversal_rate", ratio(window.reversals, window.requests));
        set("requests", window.requests as f64);
        if let Some(b) = baseline {
            set("volume_ratio", window.requests as f64 / b.max(1.0));
        }
    }

    /// How often [`run`] judges: once a bucket.
    pub fn period(&self) -> Duration {
        Duration::from_millis(self.bucket_ms as u64)
    }
}

/// Judges every party once a bucket until `shutdown`.
pub async fn run(alerts: Arc<Alerts>, shutdown: CancellationToken) {
    if !alerts.policy.enabled {
        return;
    }
    let mut tick = tokio::time::interval(alerts.period());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                alerts.evaluate();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering};

    /// A clock that moves only when told.
    struct FakeClock(AtomicI64);

    impl FakeClock {
        fn advance(&self, ms: i64) {
            self.0.fetch_add(ms, Ordering::SeqCst);
        }
    }

    impl Clock for FakeClock {
        fn now(&self) -> chrono::NaiveDateTime {
            chrono::DateTime::from_timestamp_millis(self.0.load(Ordering::SeqCst))
                .expect("in range")
                .naive_utc()
        }
    }

    /// A 60 s window (10 s buckets), two windows of history, at least 10.
    fn alerts() -> (Alerts, Arc<FakeClock>) {
        let clock = Arc::new(FakeClock(AtomicI64::new(1_700_000_000_000)));
        let policy = AlertPolicy {
            window: Duration::from_secs(60),
            history_windows: 2,
            min_requests: 10,
            ..AlertPolicy::default()
        };
        (Alerts::new(policy, clock.clone()), clock)
    }

    fn answer(a: &Alerts, side: Side, who: &str, approved: usize, declined: usize) {
        for _ in 0..approved {
            a.record(side, who.as_bytes(), Event::Answered { approved: true });
        }
        for _ in 0..declined {
            a.record(side, who.as_bytes(), Event::Answered { approved: false });
        }
    }

    fn kinds(changes: &[Change]) -> Vec<(Kind, bool, String)> {
        changes
            .iter()
            .map(|c| (c.kind, c.raised, c.party.clone()))
            .collect()
    }

    #[test]
    fn a_decline_rate_alarms_once_then_clears_below_the_hysteresis() {
        let (a, clock) = alerts();
        answer(&a, Side::Bank, "48020000", 4, 6);
        let raised = a.evaluate();
        assert_eq!(
            kinds(&raised),
            vec![(Kind::DeclineRate, true, "48020000".into())]
        );
        assert_eq!(raised[0].value, 0.6);
        assert_eq!(
            raised[0].window,
            Counts {
                requests: 10,
                answered: 10,
                declined: 6,
                reversals: 0
            }
        );
        // Still over: nothing more is said, however many declines follow.
        answer(&a, Side::Bank, "48020000", 0, 20);
        assert!(a.evaluate().is_empty());
        // The window slides past the declines; approvals bring the rate to
        // 45% (< 50% but not < 40%): still active.
        clock.advance(60_000);
        answer(&a, Side::Bank, "48020000", 11, 9);
        assert!(a.evaluate().is_empty());
        // 9 of 24 = 37.5%: cleared.
        answer(&a, Side::Bank, "48020000", 4, 0);
        assert_eq!(
            kinds(&a.evaluate()),
            vec![(Kind::DeclineRate, false, "48020000".into())]
        );
        // And raised again when it crosses again.
        answer(&a, Side::Bank, "48020000", 0, 30);
        assert_eq!(
            kinds(&a.evaluate()),
            vec![(Kind::DeclineRate, true, "48020000".into())]
        );
    }

    #[test]
    fn too_few_answers_never_alarm_and_an_active_alert_clears_when_quiet() {
        let (a, clock) = alerts();
        answer(&a, Side::Wallet, "01020000", 0, 9);
        assert!(
            a.evaluate().is_empty(),
            "9 declines of 9: under the minimum"
        );
        answer(&a, Side::Wallet, "01020000", 0, 1);
        assert_eq!(a.evaluate().len(), 1);
        clock.advance(70_000);
        assert_eq!(
            kinds(&a.evaluate()),
            vec![(Kind::DeclineRate, false, "01020000".into())]
        );
    }

    #[test]
    fn parties_are_apart_and_named_without_the_zero_fill() {
        let (a, _) = alerts();
        answer(&a, Side::Wallet, "01020000", 0, 10);
        answer(&a, Side::Wallet, "00001030000", 10, 0);
        // A bank with the same id as a wallet is another party.
        answer(&a, Side::Bank, "01020000", 10, 0);
        let changes = a.evaluate();
        assert_eq!(
            kinds(&changes),
            vec![(Kind::DeclineRate, true, "01020000".into())]
        );
        assert_eq!(changes[0].side, Side::Wallet);
        assert_eq!(party_name(b"00001030000").as_str(), "01030000");
        assert_eq!(party_name(b"123456789").as_str(), "123456789");
        assert_eq!(party_name(b"12345678901").as_str(), "12345678901");
    }

    #[test]
    fn reversals_alarm_against_requests() {
        let (a, _) = alerts();
        answer(&a, Side::Bank, "01050000", 18, 0);
        for _ in 0..2 {
            a.record(Side::Bank, b"01050000", Event::Unanswered);
            a.record(Side::Bank, b"01050000", Event::Reversal);
        }
        let changes = a.evaluate();
        assert_eq!(
            kinds(&changes),
            vec![(Kind::ReversalRate, true, "01050000".into())]
        );
        assert_eq!(changes[0].value, 0.1);
        assert_eq!(changes[0].window.requests, 20);
    }

    #[test]
    fn volume_is_judged_against_the_windows_before_once_they_were_watched() {
        let (a, clock) = alerts();
        let steady = |a: &Alerts| answer(a, Side::Wallet, "01020000", 20, 0);
        // Two windows of 20 requests: no baseline yet during them.
        steady(&a);
        assert!(a.evaluate().is_empty());
        clock.advance(60_000);
        steady(&a);
        assert!(a.evaluate().is_empty());
        // The first window whose two windows before were watched whole:
        // 80 = 4 × their average of 20, a rise.
        clock.advance(110_000);
        answer(&a, Side::Wallet, "01020000", 80, 0);
        assert_eq!(
            kinds(&a.evaluate()),
            vec![(Kind::VolumeRise, true, "01020000".into())]
        );
        // Silence two windows later (baseline (80 + 0) / 2 = 40): the rise
        // clears, the fall alarms.
        clock.advance(120_000);
        let changes = kinds(&a.evaluate());
        assert!(
            changes.contains(&(Kind::VolumeRise, false, "01020000".into())),
            "{changes:?}"
        );
        assert!(
            changes.contains(&(Kind::VolumeFall, true, "01020000".into())),
            "{changes:?}"
        );
    }

    #[test]
    fn a_quiet_party_never_alarms_on_volume() {
        let (a, clock) = alerts();
        for _ in 0..4 {
            answer(&a, Side::Wallet, "01020000", 3, 0);
            clock.advance(60_000);
        }
        // 0 after an average of 4.5, then 9 (twice the average): both
        // under the minimum of 10.
        assert!(a.evaluate().is_empty());
        answer(&a, Side::Wallet, "01020000", 9, 0);
        assert!(a.evaluate().is_empty());
    }

    #[test]
    fn the_parties_of_a_side_are_capped() {
        let (a, _) = alerts();
        for i in 0..(MAX_PARTIES_PER_SIDE + 10) {
            let id = format!("{:08}", 10_000_000 + i);
            a.record(Side::Wallet, id.as_bytes(), Event::Unanswered);
        }
        let parties = a.parties.read().unwrap();
        assert_eq!(parties.len(), MAX_PARTIES_PER_SIDE + 1);
        let other = parties[&(Side::Wallet, Label::new(b"other"))]
            .lock()
            .unwrap();
        assert_eq!(other.sum(i64::MIN + 1, i64::MAX).requests, 10);
    }

    #[test]
    fn an_expected_party_is_on_metrics_at_zero_before_any_request() {
        let (a, _) = alerts();
        a.expect(Side::Bank, b"99990000");
        let text = metrics().encode();
        for series in [
            "switchboard_alert_active{kind=\"decline_rate\",side=\"bank\",party=\"99990000\"} 0",
            "switchboard_alerts_total{kind=\"volume_fall\",side=\"bank\",party=\"99990000\"} 0",
            "switchboard_alert_measure{measure=\"requests\",side=\"bank\",party=\"99990000\"} 0",
        ] {
            assert!(text.contains(series), "{series} missing");
        }
        assert!(a.evaluate().is_empty());
    }

    #[test]
    fn nothing_is_counted_when_off() {
        let a = Alerts::off();
        answer(&a, Side::Bank, "48020000", 0, 100);
        assert!(a.parties.read().unwrap().is_empty());
        assert!(a.evaluate().is_empty());
    }
}

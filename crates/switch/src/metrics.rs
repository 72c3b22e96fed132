//! What the switch counts, for the admin listener's `/metrics`
//! (Prometheus/OpenMetrics text, every name prefixed `switchboard_`).
//!
//! One process-wide set of metrics ([`metrics()`]): the parts that count
//! (listeners, links, flows, stores) reach it without being handed it, and
//! the admin listener encodes it. The hot path only touches atomics: the
//! per-message counters and the flow and bank-leg histograms are found in a
//! cache of handles kept by each thread (`HandleCache`: a fast hash of
//! small inline labels, no lock), and only a label set a thread has not
//! seen yet goes to the family's locked map; labels are small inline values
//! ([`Label`]), never allocated strings; the handles of a bank connection
//! are looked up once, when it is made.
//!
//! Labels taken from what peers send (MTI, response code, institution) are
//! bounded: past [`MAX_MESSAGE_SERIES`] distinct label sets, new ones are
//! counted under `other`, so a peer cannot grow the registry without limit.

mod process;

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::LazyLock;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use iso8583::codec::Message;
use iso8583::fields::num;

/// Distinct label sets of [`Metrics::messages`] before new ones are counted as `other`.
pub const MAX_MESSAGE_SERIES: usize = 4096;

/// A short label value held inline (up to 16 bytes; longer values are cut):
/// copying it or hashing it allocates nothing.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Label {
    len: u8,
    bytes: [u8; 16],
}

impl Label {
    pub const EMPTY: Label = Label {
        len: 0,
        bytes: [0; 16],
    };

    /// The printable ASCII of `value` (anything else, and the quote and
    /// backslash the text format would have to escape, becomes `?`), cut at
    /// 16 bytes.
    pub fn new(value: &[u8]) -> Label {
        let mut label = Label::EMPTY;
        for (slot, &b) in label.bytes.iter_mut().zip(value) {
            let plain = b.is_ascii_graphic() && b != b'"' && b != b'\\';
            *slot = if plain { b } else { b'?' };
            label.len += 1;
        }
        label
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored.
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("?")
    }
}

impl EncodeLabelValue for Label {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// Which way a message went, seen from the switch.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Direction {
    In,
    Out,
}

impl EncodeLabelValue for Direction {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        let text = match self {
            Direction::In => "in",
            Direction::Out => "out",
        };
        std::fmt::Write::write_str(encoder, text)
    }
}

/// Which side of the switch a message was on.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Side {
    Wallet,
    Bank,
}

impl EncodeLabelValue for Side {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        let text = match self {
            Side::Wallet => "wallet",
            Side::Bank => "bank",
        };
        std::fmt::Write::write_str(encoder, text)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, EncodeLabelSet)]
pub struct MessageLabels {
    pub direction: Direction,
    pub side: Side,
    pub mti: Label,
    /// F39; empty for requests.
    pub rc: Label,
    /// The wallet side's acquirer (F32), or the bank's institution id.
    pub institution: Label,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, EncodeLabelSet)]
pub struct FlowLabels {
    pub flow: &'static str,
    pub rc: Label,
}

/// A risk rule's hit: the rule's id (from the operator's rules file, so
/// the label set is bounded by it) and `enforce` or `observe`.
#[derive(Clone, PartialEq, Eq, Hash, Debug, EncodeLabelSet)]
pub struct RiskLabels {
    pub rule: String,
    pub mode: &'static str,
}

/// An alert of a party (`crate::alerts`): its kind, the side of the
/// switch the party is on and its institution id (parties are capped, so
/// the label sets are bounded).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, EncodeLabelSet)]
pub struct AlertLabels {
    pub kind: &'static str,
    pub side: Side,
    pub party: Label,
}

/// A party's measure over the alerts' window.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, EncodeLabelSet)]
pub struct MeasureLabels {
    pub measure: &'static str,
    pub side: Side,
    pub party: Label,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, EncodeLabelSet)]
pub struct FlowOnly {
    pub flow: &'static str,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, EncodeLabelSet)]
pub struct BankLeg {
    pub bank: Label,
    pub leg: &'static str,
}

#[derive(Clone, PartialEq, Eq, Hash, Debug, EncodeLabelSet)]
pub struct LinkLabels {
    /// The bank's institution id.
    pub bank: Label,
    pub connection: u32,
}

/// Why a wallet connection is closed as soon as it is accepted.
pub const REFUSAL_REASONS: [&str; 4] = [
    "per_address_limit",
    "tls_handshake",
    "tls_handshake_timeout",
    "client_certificate",
];

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, EncodeLabelSet)]
pub struct RefusedLabels {
    pub reason: &'static str,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, EncodeLabelSet)]
pub struct SafAttemptLabels {
    pub kind: &'static str,
    /// `done`, `retry` or `dead`.
    pub result: &'static str,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, EncodeLabelSet)]
pub struct StoreLabels {
    /// `sqlite` or `postgres`.
    pub store: &'static str,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, EncodeLabelSet)]
pub struct SafStateLabels {
    /// `pending` or `dead`.
    pub state: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// How many handles one thread's cache holds per kind; past it a lookup
/// goes to the family's map (the families are bounded on their own).
const CACHED_HANDLES: usize = 4096;

/// One thread's handles of a family's metrics, by the [`Metrics`] they
/// belong to (its address: tests make more than one) and their labels.
/// Handles share their value with the family's, so counting through the
/// cache is counting in the family.
struct HandleCache<L, M>(RefCell<HashMap<(usize, L), M, foldhash::fast::RandomState>>);

impl<L: Hash + Eq + Copy, M: Clone> HandleCache<L, M> {
    fn new() -> Self {
        HandleCache(RefCell::new(HashMap::default()))
    }

    /// Applies `count` to the handle of `labels`, made by `make` (which
    /// says whether it may be kept) the first time this thread sees them.
    fn with(
        &self,
        owner: &Metrics,
        labels: L,
        make: impl FnOnce() -> (M, bool),
        count: impl FnOnce(&M),
    ) {
        let key = (owner as *const Metrics as usize, labels);
        let mut handles = self.0.borrow_mut();
        if let Some(handle) = handles.get(&key) {
            return count(handle);
        }
        let (handle, keep) = make();
        count(&handle);
        if keep && handles.len() < CACHED_HANDLES {
            handles.insert(key, handle);
        }
    }
}

thread_local! {
    static MESSAGE_HANDLES: HandleCache<MessageLabels, Counter> = HandleCache::new();
    static FLOW_HANDLES: HandleCache<FlowLabels, (Counter, Histogram)> = HandleCache::new();
    static BANK_LEG_HANDLES: HandleCache<BankLeg, Histogram> = HandleCache::new();
}

/// Seconds, from half a millisecond to 30 s.
fn latency_histogram() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
    ])
}

/// Commands in one commit: 1 to 1024 by powers of two.
fn batch_histogram() -> Histogram {
    // A bucket of its own for commits of no command: journal entries alone,
    // each a whole commit (WAL frames and fsync) for a few hundred bytes.
    Histogram::new(std::iter::once(0.0).chain((0..=10).map(|p| (1u32 << p) as f64)))
}

/// Every metric of the process. Those describing state the switch already
/// holds (bank connections in flight, store-and-forward depth, the lease)
/// are gauges the admin listener sets from that state when it is scraped.
pub struct Metrics {
    registry: Registry,
    pub messages: Family<MessageLabels, Counter>,
    /// Label sets of `messages` made so far (the family does not say).
    message_series: AtomicUsize,
    pub flows: Family<FlowLabels, Counter>,
    pub risk_hits: Family<RiskLabels, Counter>,
    pub alert_active: Family<AlertLabels, Gauge>,
    pub alerts: Family<AlertLabels, Counter>,
    pub alert_measure: Family<MeasureLabels, Gauge<f64, AtomicU64>>,
    pub flow_seconds: HistogramFamily<FlowOnly>,
    pub bank_seconds: HistogramFamily<BankLeg>,
    pub bank_up: Family<LinkLabels, Gauge>,
    pub bank_signed_on: Family<LinkLabels, Gauge>,
    pub bank_in_flight: Family<LinkLabels, Gauge>,
    pub bank_timeouts: Family<LinkLabels, Counter>,
    pub bank_late_answers: Family<LinkLabels, Counter>,
    pub bank_reconnects: Family<LinkLabels, Counter>,
    pub wallet_open: Gauge,
    pub wallet_accepted: Counter,
    pub wallet_refused: Family<RefusedLabels, Counter>,
    pub saf_entries: Family<SafStateLabels, Gauge>,
    pub saf_attempts: Family<SafAttemptLabels, Counter>,
    pub store_commit_seconds: HistogramFamily<StoreLabels>,
    pub store_batch_size: HistogramFamily<StoreLabels>,
    pub store_spaced: Family<StoreLabels, Counter>,
    pub store_up: Gauge,
    pub lease_held: Gauge,
    pub journal_unwritten: Gauge,
    pub ready: Gauge,
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("switchboard");
        let m = Metrics {
            messages: Family::default(),
            message_series: AtomicUsize::new(0),
            flows: Family::default(),
            risk_hits: Family::default(),
            alert_active: Family::default(),
            alerts: Family::default(),
            alert_measure: Family::default(),
            flow_seconds: Family::new_with_constructor(latency_histogram),
            bank_seconds: Family::new_with_constructor(latency_histogram),
            bank_up: Family::default(),
            bank_signed_on: Family::default(),
            bank_in_flight: Family::default(),
            bank_timeouts: Family::default(),
            bank_late_answers: Family::default(),
            bank_reconnects: Family::default(),
            wallet_open: Gauge::default(),
            wallet_accepted: Counter::default(),
            wallet_refused: Family::default(),
            saf_entries: Family::default(),
            saf_attempts: Family::default(),
            store_commit_seconds: Family::new_with_constructor(latency_histogram),
            store_batch_size: Family::new_with_constructor(batch_histogram),
            store_spaced: Family::default(),
            store_up: Gauge::default(),
            lease_held: Gauge::default(),
            journal_unwritten: Gauge::default(),
            ready: Gauge::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "messages",
            "ISO 8583 messages by direction, side (wallet or bank), MTI, response code and peer institution",
            m.messages.clone(),
        );
        r.register(
            "flow_outcomes",
            "Answers to wallet requests by flow (freeze, receive, unfreeze, other) and response code",
            m.flows.clone(),
        );
        r.register(
            "risk_hits",
            "Requests a risk rule matched, by rule id and mode (enforce: declined; observe: would have been)",
            m.risk_hits.clone(),
        );
        r.register(
            "alert_active",
            "1 while an alert of a party (bank or wallet institution) is raised, by kind (decline_rate, reversal_rate, volume_rise, volume_fall)",
            m.alert_active.clone(),
        );
        r.register(
            "alerts",
            "Alerts raised, by kind, side and party",
            m.alerts.clone(),
        );
        r.register(
            "alert_measure",
            "What the alerts measure over their window, by measure (decline_rate, reversal_rate, requests, volume_ratio), side and party",
            m.alert_measure.clone(),
        );
        r.register_with_unit(
            "flow_duration",
            "From a wallet request read to its answer built, by flow",
            prometheus_client::registry::Unit::Seconds,
            m.flow_seconds.clone(),
        );
        r.register_with_unit(
            "bank_request_duration",
            "From a request sent to a bank to its answer, by bank and leg (freeze, debit, credit, reversal, unfreeze_notice, network)",
            prometheus_client::registry::Unit::Seconds,
            m.bank_seconds.clone(),
        );
        r.register(
            "bank_link_up",
            "1 when the bank connection's TCP (and TLS) session is open",
            m.bank_up.clone(),
        );
        r.register(
            "bank_link_signed_on",
            "1 when the bank connection is signed on (0800/001 approved)",
            m.bank_signed_on.clone(),
        );
        r.register(
            "bank_link_in_flight",
            "Requests waiting for the bank's answer on this connection",
            m.bank_in_flight.clone(),
        );
        r.register(
            "bank_link_timeouts",
            "Requests the bank did not answer within its timeout",
            m.bank_timeouts.clone(),
        );
        r.register(
            "bank_link_late_answers",
            "Answers that came after their request had timed out (ignored)",
            m.bank_late_answers.clone(),
        );
        r.register(
            "bank_link_reconnects",
            "Connections to the bank opened again after the first",
            m.bank_reconnects.clone(),
        );
        r.register(
            "wallet_connections_open",
            "Wallet connections open now",
            m.wallet_open.clone(),
        );
        r.register(
            "wallet_connections_accepted",
            "Wallet connections accepted",
            m.wallet_accepted.clone(),
        );
        r.register(
            "wallet_connections_refused",
            "Wallet connections closed at once, by reason",
            m.wallet_refused.clone(),
        );
        r.register(
            "saf_entries",
            "Store-and-forward entries by state (pending, dead), as the store holds them",
            m.saf_entries.clone(),
        );
        r.register(
            "saf_attempts",
            "Store-and-forward delivery attempts by kind and result",
            m.saf_attempts.clone(),
        );
        r.register_with_unit(
            "store_commit_duration",
            "One group commit of the store, by store",
            prometheus_client::registry::Unit::Seconds,
            m.store_commit_seconds.clone(),
        );
        r.register(
            "store_batch_size",
            "Commands in one group commit, by store",
            m.store_batch_size.clone(),
        );
        r.register(
            "store_spaced_batches",
            "Batches the embedded store's commit interval held, the store being busy",
            m.store_spaced.clone(),
        );
        r.register(
            "store_up",
            "1 when the store answered the last scrape's query",
            m.store_up.clone(),
        );
        r.register(
            "lease_held",
            "1 while this instance holds its lease on a shared store (always 1 on the embedded store)",
            m.lease_held.clone(),
        );
        r.register(
            "journal_unwritten",
            "Journal entries accepted and not yet written by the store",
            m.journal_unwritten.clone(),
        );
        r.register("ready", "1 when /ready would answer 200", m.ready.clone());
        r.register_collector(Box::new(process::ProcessCollector::new()));
        // Series that exist before their first event, so that a dashboard's
        // rate() over them reads 0 rather than nothing.
        for reason in REFUSAL_REASONS {
            let _ = m.wallet_refused.get_or_create(&RefusedLabels { reason });
        }
        for state in ["pending", "dead"] {
            let _ = m.saf_entries.get_or_create(&SafStateLabels { state });
        }
        for kind in ["reversal", "unfreeze"] {
            for result in ["done", "retry", "dead"] {
                let _ = m
                    .saf_attempts
                    .get_or_create(&SafAttemptLabels { kind, result });
            }
        }
        Metrics { registry, ..m }
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// One message journaled by the switch or a bank link.
    pub fn message(&self, direction: Direction, side: Side, msg: &Message, institution: Label) {
        let labels = MessageLabels {
            direction,
            side,
            mti: Label::new(msg.mti()),
            rc: msg.get(num::RESPONSE_CODE).map_or(Label::EMPTY, Label::new),
            institution,
        };
        MESSAGE_HANDLES.with(|cache| {
            cache.with(
                self,
                labels,
                || self.message_counter(labels),
                |c| {
                    c.inc();
                },
            )
        });
    }

    /// The counter of a label set this thread has not counted yet, and
    /// whether it is the set's own (not `other`) and may be cached.
    fn message_counter(&self, labels: MessageLabels) -> (Counter, bool) {
        if let Some(counter) = self.messages.get(&labels) {
            return (counter.clone(), true);
        }
        // A new label set. Counted before it is made: two threads making the
        // same one count it twice, which only makes the bound tighter.
        let series = self.message_series.fetch_add(1, Ordering::Relaxed);
        if series < MAX_MESSAGE_SERIES {
            return (self.messages.get_or_create_owned(&labels), true);
        }
        let other = Label::new(b"other");
        let other = MessageLabels {
            mti: other,
            rc: other,
            institution: other,
            ..labels
        };
        (self.messages.get_or_create_owned(&other), false)
    }

    /// A wallet request answered: its flow, code and time from read to answer.
    pub fn flow(&self, flow: &'static str, rc: Label, seconds: f64) {
        let labels = FlowLabels { flow, rc };
        let make = || {
            let count = self.flows.get_or_create_owned(&labels);
            let time = self.flow_seconds.get_or_create_owned(&FlowOnly { flow });
            ((count, time), true)
        };
        FLOW_HANDLES.with(|cache| {
            cache.with(self, labels, make, |(count, time)| {
                count.inc();
                time.observe(seconds);
            })
        });
    }

    /// The handles of one bank connection, looked up once.
    pub fn link(&self, bank: &str, connection: usize) -> LinkMetrics {
        let labels = LinkLabels {
            bank: Label::new(bank.as_bytes()),
            connection: connection as u32,
        };
        LinkMetrics {
            bank: labels.bank,
            up: self.bank_up.get_or_create_owned(&labels),
            signed_on: self.bank_signed_on.get_or_create_owned(&labels),
            in_flight: self.bank_in_flight.get_or_create_owned(&labels),
            timeouts: self.bank_timeouts.get_or_create_owned(&labels),
            late_answers: self.bank_late_answers.get_or_create_owned(&labels),
            reconnects: self.bank_reconnects.get_or_create_owned(&labels),
        }
    }

    /// One group commit of `commands` taking `seconds`.
    pub fn commit(&self, store: &'static str, commands: usize, seconds: f64) {
        let labels = StoreLabels { store };
        self.store_commit_seconds
            .get_or_create(&labels)
            .observe(seconds);
        self.store_batch_size
            .get_or_create(&labels)
            .observe(commands as f64);
    }

    /// The counter of batches held by the commit interval (`[store]
    /// commit_interval_ms`), its series made now: exported at zero from the
    /// store's opening, as a rate over a series not yet made would show no
    /// data rather than none held.
    pub fn spaced_counter(&self, store: &'static str) -> Counter {
        self.store_spaced
            .get_or_create_owned(&StoreLabels { store })
    }
}

/// One bank connection's metrics.
#[derive(Clone, Debug)]
pub struct LinkMetrics {
    pub bank: Label,
    pub up: Gauge,
    pub signed_on: Gauge,
    pub in_flight: Gauge,
    pub timeouts: Counter,
    pub late_answers: Counter,
    pub reconnects: Counter,
}

impl LinkMetrics {
    /// A request answered by the bank after `seconds`.
    pub fn answered(&self, msg: &Message, seconds: f64) {
        let metrics = metrics();
        let labels = BankLeg {
            bank: self.bank,
            leg: leg(msg),
        };
        let make = || (metrics.bank_seconds.get_or_create_owned(&labels), true);
        BANK_LEG_HANDLES.with(|cache| cache.with(metrics, labels, make, |h| h.observe(seconds)));
    }
}

/// What a request to a bank is, by its MTI and processing code.
pub fn leg(msg: &Message) -> &'static str {
    match msg.mti() {
        b"0100" | b"0101" => "freeze",
        b"0200" | b"0201" => match msg.get(num::PROCESSING_CODE).map(|v| v.get(..2)) {
            Some(Some(b"26")) => "credit",
            _ => "debit",
        },
        b"0420" | b"0421" | b"0400" | b"0401" => "reversal",
        b"0120" | b"0121" => "unfreeze_notice",
        b"0800" => "network",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_inline_printable_and_cut() {
        assert_eq!(Label::new(b"0110").as_str(), "0110");
        assert_eq!(Label::new(b"a\"b\n").as_str(), "a?b?");
        assert_eq!(Label::new(&[b'9'; 40]).as_str().len(), 16);
    }

    #[test]
    fn cached_handles_count_in_their_own_metrics() {
        let (a, b) = (Metrics::new(), Metrics::new());
        let mut msg = Message::new(*b"0110");
        msg.set(num::RESPONSE_CODE, "00");
        let bank = Label::new(b"48020000");
        for _ in 0..3 {
            a.message(Direction::Out, Side::Wallet, &msg, bank);
        }
        b.message(Direction::Out, Side::Wallet, &msg, bank);
        for _ in 0..2 {
            a.flow("receive", Label::new(b"00"), 0.001);
        }
        let series = "switchboard_messages_total{direction=\"out\",side=\"wallet\",mti=\"0110\",rc=\"00\",institution=\"48020000\"}";
        assert!(
            a.encode().contains(&format!("{series} 3\n")),
            "{}",
            a.encode()
        );
        assert!(
            b.encode().contains(&format!("{series} 1\n")),
            "{}",
            b.encode()
        );
        assert!(
            a.encode()
                .contains("switchboard_flow_outcomes_total{flow=\"receive\",rc=\"00\"} 2\n"),
            "{}",
            a.encode()
        );
        assert!(!b
            .encode()
            .contains("switchboard_flow_outcomes_total{flow=\"receive\""));
        // Counted again from another thread: its own cache, the same series.
        std::thread::scope(|s| {
            s.spawn(|| a.message(Direction::Out, Side::Wallet, &msg, bank));
        });
        assert!(a.encode().contains(&format!("{series} 4\n")));
    }

    #[test]
    fn commits_of_no_command_have_a_bucket_of_their_own() {
        let m = Metrics::new();
        for commands in [0, 1, 3] {
            m.commit("sqlite", commands, 0.001);
        }
        let text = m.encode();
        for (le, count) in [("0.0", 1), ("1.0", 2), ("2.0", 2), ("4.0", 3)] {
            let line = format!(
                "switchboard_store_batch_size_bucket{{le=\"{le}\",store=\"sqlite\"}} {count}\n"
            );
            assert!(text.contains(&line), "{line} not in {text}");
        }
    }

    #[test]
    fn batches_the_interval_held_are_counted() {
        let m = Metrics::new();
        let spaced = m.spaced_counter("sqlite");
        assert!(m
            .encode()
            .contains("switchboard_store_spaced_batches_total{store=\"sqlite\"} 0\n"));
        spaced.inc();
        spaced.inc();
        let line = "switchboard_store_spaced_batches_total{store=\"sqlite\"} 2\n";
        assert!(m.encode().contains(line), "{line} not in {}", m.encode());
    }

    #[test]
    fn message_series_are_bounded() {
        let m = Metrics::new();
        for i in 0..(MAX_MESSAGE_SERIES + 50) {
            let mut msg = Message::new(*b"0100");
            msg.set(num::RESPONSE_CODE, format!("{:02}", i % 100));
            m.message(
                Direction::In,
                Side::Wallet,
                &msg,
                Label::new(i.to_string().as_bytes()),
            );
        }
        let text = m.encode();
        assert!(text.contains("switchboard_messages_total{direction=\"in\",side=\"wallet\",mti=\"other\",rc=\"other\",institution=\"other\"} 50"), "{}", &text[..text.len().min(2000)]);
        assert!(text.contains("switchboard_process_open_fds"));
    }
}

//! Open-loop load: requests are sent on a fixed schedule whatever the answers
//! do, and each latency is measured from the moment the request was *due*,
//! so a slow server cannot hide its queueing (no coordinated omission).
//! Latencies go into an HDR histogram for the run, and second by second
//! into a [`Second`] each, the timeline [`crate::load_chart`] draws.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use iso8583::codec::Message;
use iso8583::framing::FramingConfig;
use iso8583::response::ResponseCode;

use switchboard::clock::Clock;

use super::resending::{Patience, ResendingWallet};
use super::wallet::code;

/// What each request of the load is.
#[derive(Clone)]
pub enum LoadKind {
    /// Receives through the switch, spread over already approved freezes.
    Receives {
        freezes: Vec<Message>,
        receivers: Vec<String>,
    },
    /// Credits straight to one bank: one hop, the floor of what the switch adds to.
    Credits {
        receivers: Vec<String>,
        payer: String,
    },
}

#[derive(Clone)]
pub struct LoadConfig {
    pub target: SocketAddr,
    pub framing: FramingConfig,
    pub institution: String,
    pub rate_per_s: u64,
    pub duration: Duration,
    pub connections: usize,
    /// Requests allowed in flight at once; beyond it the schedule slips and the
    /// slip shows in the latencies.
    pub max_in_flight: usize,
    pub kind: LoadKind,
    /// Advanced with the requests sent, its message with the answers:
    /// `ProgressBar::hidden()` for none.
    pub progress: ProgressBar,
    /// Where the wallet keeps its own records of every exchange, if it does.
    pub records: Option<Arc<super::wallet::WalletRecords>>,
    /// How long a request waits for an answer before it is resent, and
    /// before it is given up.
    pub patience: Patience,
    /// The link's MACs, when requests must be signed.
    pub mac: Option<Arc<switchboard::mac::LinkMac>>,
}

/// Results of a load run.
#[derive(Debug, Clone, Serialize, Default)]
pub struct LoadReport {
    pub target: String,
    pub kind: String,
    pub rate_target_per_s: u64,
    pub duration_s: f64,
    pub sent: u64,
    pub answered: u64,
    /// Requests given up without an answer (after resending).
    pub unanswered: u64,
    /// Answers by response code; `unanswered` for none.
    pub codes: BTreeMap<String, u64>,
    /// Connections reopened after one was lost.
    pub reconnects: u64,
    /// Attempts beyond each request's first (after a lost connection or a
    /// missed answer).
    pub resends: u64,
    pub throughput_per_s: f64,
    pub latency_us_p50: u64,
    pub latency_us_p90: u64,
    pub latency_us_p99: u64,
    pub latency_us_p999: u64,
    pub latency_us_max: u64,
    pub latency_us_mean: f64,
    /// The run second by second from its start, until the last answer.
    pub per_second: Vec<Second>,
    /// The latencies of the run: how many fell in each bucket.
    pub latency_distribution: Vec<LatencyBucket>,
    /// Σ of approved amounts per freeze index (receives only).
    #[serde(skip)]
    pub approved_per_freeze: Vec<u64>,
}

/// One second of a run, counted from its start.
#[derive(Debug, Clone, Serialize, Default, PartialEq, Eq)]
pub struct Second {
    /// Requests the schedule made due in this second.
    pub offered: u64,
    /// Answers that arrived in this second.
    pub answered: u64,
    /// Requests given up in this second.
    pub unanswered: u64,
    /// Latencies of the requests finished (answered or given up) in this
    /// second; none when none finished.
    pub latency_us: Option<Percentiles>,
}

#[derive(Debug, Clone, Copy, Serialize, Default, PartialEq, Eq)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Option<Self> {
        (!h.is_empty()).then(|| Percentiles {
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            max: h.max(),
        })
    }
}

/// `count` latencies above the previous bucket's `up_to_us` and at most this one's.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct LatencyBucket {
    pub up_to_us: u64,
    pub count: u64,
}

/// Buckets per doubling of the latency in [`LoadReport::latency_distribution`].
const BUCKETS_PER_DOUBLING: f64 = 4.0;

/// The run's latencies in buckets growing by 2^(1/4), from the first one
/// that holds any to the last.
fn distribution(h: &Histogram<u64>) -> Vec<LatencyBucket> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut buckets: Vec<LatencyBucket> = h
        .iter_log(1, 2f64.powf(1.0 / BUCKETS_PER_DOUBLING))
        .map(|v| LatencyBucket {
            up_to_us: v.value_iterated_to(),
            count: v.count_since_last_iteration(),
        })
        .collect();
    let first = buckets.iter().position(|b| b.count > 0).unwrap_or(0);
    buckets.drain(..first);
    buckets
}

/// Finished requests second by second. Their seconds only grow (each is
/// taken under the lock that records it), so one histogram is open at a
/// time: the current second's, summed up into its [`Second`] when the
/// next second's first request finishes. Memory: a [`Second`] per second.
struct Timeline {
    start: Instant,
    seconds: Vec<Second>,
    open: Histogram<u64>,
    open_second: usize,
}

impl Timeline {
    fn new(start: Instant) -> Result<Self, String> {
        Ok(Timeline {
            start,
            seconds: Vec::new(),
            open: latency_histogram()?,
            open_second: 0,
        })
    }

    fn second(&mut self, index: usize) -> &mut Second {
        if self.seconds.len() <= index {
            self.seconds.resize(index + 1, Second::default());
        }
        &mut self.seconds[index]
    }

    fn close_open(&mut self) {
        let percentiles = Percentiles::of(&self.open);
        let open = self.open_second;
        self.second(open).latency_us = percentiles;
        self.open.reset();
    }

    fn finished(&mut self, answered: bool, latency_us: u64) {
        let index = self.start.elapsed().as_secs() as usize;
        if index > self.open_second {
            self.close_open();
            self.open_second = index;
        }
        let second = self.second(index);
        if answered {
            second.answered += 1;
        } else {
            second.unanswered += 1;
        }
        let _ = self.open.record(latency_us.max(1));
    }

    /// The seconds, with `offered[i]` requests due in second i.
    fn into_seconds(mut self, offered: &[u64]) -> Vec<Second> {
        self.close_open();
        for (i, n) in offered.iter().enumerate() {
            self.second(i).offered = *n;
        }
        // An empty second that close_open made for nothing finished at all.
        while self.seconds.last() == Some(&Second::default()) {
            self.seconds.pop();
        }
        self.seconds
    }
}

fn latency_histogram() -> Result<Histogram<u64>, String> {
    Histogram::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())
}

impl LoadReport {
    /// One paragraph for people.
    pub fn summary(&self) -> String {
        format!(
            "{} to {} at {}/s for {:.1}s: sent {}, answered {} ({:.0}/s), unanswered {}\n  reconnects {}, resends {}\n  codes {:?}\n  latency us: p50 {} p90 {} p99 {} p99.9 {} max {} mean {:.0}",
            self.kind,
            self.target,
            self.rate_target_per_s,
            self.duration_s,
            self.sent,
            self.answered,
            self.throughput_per_s,
            self.unanswered,
            self.reconnects,
            self.resends,
            self.codes,
            self.latency_us_p50,
            self.latency_us_p90,
            self.latency_us_p99,
            self.latency_us_p999,
            self.latency_us_max,
            self.latency_us_mean
        )
    }
}

struct Shared {
    histogram: Histogram<u64>,
    timeline: Timeline,
    codes: BTreeMap<String, u64>,
    answered: u64,
    approved_per_freeze: Vec<u64>,
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    // Counters stay usable whatever panicked while holding them.
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs the load and reports. A lost connection is reopened and every
/// request whose answer it lost is sent again ([`ResendingWallet`]), so the
/// report counts each request once, by its first answer, and `unanswered`
/// only what got none within `patience.give_up_after`.
pub async fn run(config: LoadConfig, clock: Arc<dyn Clock>) -> Result<LoadReport, String> {
    let mut clients = Vec::new();
    for _ in 0..config.connections.max(1) {
        clients.push(Arc::new(
            ResendingWallet::connect(
                config.target,
                config.framing.clone(),
                &config.institution,
                config.patience,
                config.records.clone(),
            )
            .await
            .map_err(|e| format!("connect {}: {e}", config.target))?
            .with_mac(config.mac.clone()),
        ));
    }
    let freezes_len = match &config.kind {
        LoadKind::Receives { freezes, .. } => freezes.len(),
        LoadKind::Credits { .. } => 0,
    };
    let start = Instant::now();
    let shared = Arc::new(Mutex::new(Shared {
        histogram: latency_histogram()?,
        timeline: Timeline::new(start)?,
        codes: BTreeMap::new(),
        answered: 0,
        approved_per_freeze: vec![0; freezes_len],
    }));
    let in_flight = Arc::new(Semaphore::new(config.max_in_flight.max(1)));
    let total = config.rate_per_s * config.duration.as_secs_f64() as u64;
    let rate = config.rate_per_s.max(1);
    let mut offered = vec![0u64; total.div_ceil(rate) as usize];
    let mut sent = 0u64;
    let mut next_progress = start + Duration::from_secs(1);
    config.progress.set_length(total);
    let mut tasks = tokio::task::JoinSet::new();
    while sent < total {
        let now = Instant::now();
        let due = ((now - start).as_secs_f64() * config.rate_per_s as f64) as u64;
        let due = due.min(total);
        while sent < due {
            let i = sent as usize;
            offered[(sent / rate) as usize] += 1;
            sent += 1;
            let intended = start + Duration::from_secs_f64(i as f64 / config.rate_per_s as f64);
            let client = clients[i % clients.len()].clone();
            let messages = client.messages();
            let (msg, freeze_index) = match &config.kind {
                LoadKind::Receives { freezes, receivers } => {
                    let f = i % freezes.len();
                    (
                        messages.receive(
                            &freezes[f],
                            &receivers[i % receivers.len()],
                            1,
                            clock.now(),
                        ),
                        Some(f),
                    )
                }
                LoadKind::Credits { receivers, payer } => (
                    messages.credit(&receivers[i % receivers.len()], payer, 1, clock.now()),
                    None,
                ),
            };
            let permit = in_flight
                .clone()
                .acquire_owned()
                .await
                .map_err(|e| e.to_string())?;
            let shared = shared.clone();
            tasks.spawn(async move {
                let result = client.send(&msg).await;
                let latency_us = intended.elapsed().as_micros() as u64;
                drop(permit);
                let mut s = lock(&shared);
                let c = match &result {
                    Ok(answer) => {
                        s.answered += 1;
                        code(answer)
                    }
                    Err(_) => "unanswered".into(),
                };
                if c == ResponseCode::APPROVED {
                    if let Some(f) = freeze_index {
                        s.approved_per_freeze[f] += 1;
                    }
                }
                *s.codes.entry(c).or_default() += 1;
                let _ = s.histogram.record(latency_us.max(1));
                s.timeline.finished(result.is_ok(), latency_us);
            });
            while tasks.try_join_next().is_some() {}
        }
        config.progress.set_position(sent);
        if Instant::now() >= next_progress {
            let s = lock(&shared);
            config.progress.set_message(format!(
                "answered {}, p99 {} us",
                s.answered,
                s.histogram.value_at_quantile(0.99)
            ));
            next_progress += Duration::from_secs(1);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Bounded: each request gives up after `patience.give_up_after`.
    config.progress.set_position(sent);
    config
        .progress
        .set_message("every request sent, waiting for the last answers");
    while tasks.join_next().await.is_some() {}
    let elapsed = start.elapsed().as_secs_f64();
    config.progress.finish_and_clear();
    let mut s = lock(&shared);
    let timeline = std::mem::replace(&mut s.timeline, Timeline::new(start)?);
    let per_second = timeline.into_seconds(&offered);
    let h = &s.histogram;
    Ok(LoadReport {
        target: config.target.to_string(),
        kind: match config.kind {
            LoadKind::Receives { .. } => "receives through the switch".into(),
            LoadKind::Credits { .. } => "credits straight to a bank".into(),
        },
        rate_target_per_s: config.rate_per_s,
        duration_s: elapsed,
        sent,
        answered: s.answered,
        unanswered: s.codes.get("unanswered").copied().unwrap_or(0),
        codes: s.codes.clone(),
        reconnects: clients.iter().map(|c| c.reconnects()).sum(),
        resends: clients.iter().map(|c| c.resends()).sum(),
        throughput_per_s: s.answered as f64 / elapsed,
        latency_us_p50: h.value_at_quantile(0.50),
        latency_us_p90: h.value_at_quantile(0.90),
        latency_us_p99: h.value_at_quantile(0.99),
        latency_us_p999: h.value_at_quantile(0.999),
        latency_us_max: h.max(),
        latency_us_mean: h.mean(),
        per_second,
        latency_distribution: distribution(h),
        approved_per_freeze: s.approved_per_freeze.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_timeline_counts_each_request_in_the_second_it_finished() {
        let start = Instant::now();
        let mut timeline = Timeline::new(start).unwrap();
        tokio::time::advance(Duration::from_millis(100)).await;
        for latency_us in [900, 1_000, 1_100] {
            timeline.finished(true, latency_us);
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        timeline.finished(true, 5_000);
        timeline.finished(false, 60_000);
        // Nothing finishes in second 2.
        tokio::time::advance(Duration::from_secs(2)).await;
        timeline.finished(true, 2_000);
        let seconds = timeline.into_seconds(&[3, 2, 0, 1]);

        let counts: Vec<(u64, u64, u64)> = seconds
            .iter()
            .map(|s| (s.offered, s.answered, s.unanswered))
            .collect();
        assert_eq!(counts, [(3, 3, 0), (2, 1, 1), (0, 0, 0), (1, 1, 0)]);
        let first = seconds[0].latency_us.unwrap();
        assert_eq!((first.p50, first.max), (1_000, 1_100));
        // Three significant digits: each within 0.1 %.
        let second = seconds[1].latency_us.unwrap();
        assert!((5_000..5_005).contains(&second.p50), "{second:?}");
        assert!((60_000..60_060).contains(&second.max), "{second:?}");
        assert_eq!(seconds[2].latency_us, None);
        assert_eq!(seconds[3].latency_us.unwrap().max, 2_000);
    }

    #[tokio::test(start_paused = true)]
    async fn offered_seconds_after_the_last_answer_are_kept_and_empty_ones_after_them_dropped() {
        let mut timeline = Timeline::new(Instant::now()).unwrap();
        timeline.finished(true, 700);
        let seconds = timeline.into_seconds(&[1, 4, 0]);
        assert_eq!(seconds.len(), 2);
        assert_eq!((seconds[1].offered, seconds[1].answered), (4, 0));
        assert_eq!(seconds[1].latency_us, None);
    }

    #[test]
    fn the_distribution_starts_at_the_first_bucket_with_a_latency_and_counts_them_all() {
        let mut h = latency_histogram().unwrap();
        for v in [1_000, 1_010, 2_000, 40_000] {
            h.record(v).unwrap();
        }
        let buckets = distribution(&h);
        assert!(buckets[0].count > 0);
        assert_eq!(buckets.iter().map(|b| b.count).sum::<u64>(), 4);
        assert!(buckets.windows(2).all(|w| w[0].up_to_us < w[1].up_to_us));
        assert!(buckets.last().unwrap().up_to_us >= 40_000);
        assert!(distribution(&latency_histogram().unwrap()).is_empty());
    }
}

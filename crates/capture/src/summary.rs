//! Responses matched to their requests, and what a capture held, counted.
//!
//! A response is matched to the request on the same connection with the same
//! key: the response MTI (a request's is computed, repeats included: 0121 is
//! answered by 0130) and the values of the key fields, by default the
//! dialect's F7, F11, F32 and F33. A request is remembered until answered;
//! at most `max_outstanding` are, so memory stays bounded on any capture
//! (requests past the bound are counted as unanswered without being held).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use hdrhistogram::Histogram;
use iso8583::mti::{is_response, request_class, response_mti};
use iso8583::Message;

use crate::decoder::{Event, EventKind};

/// The dialect's matching key fields: transmission date-time, STAN,
/// acquiring and forwarding institutions.
pub const DEFAULT_KEY_FIELDS: [u16; 4] = [7, 11, 32, 33];

/// Latencies are recorded up to an hour; longer ones count as an hour.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// The default bound on requests waiting for their answer.
pub const DEFAULT_MAX_OUTSTANDING: usize = 1_000_000;

/// Counts for one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionStats {
    /// The ends as the first event on the connection saw them.
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub messages: u64,
    pub errors: u64,
    pub skipped_bytes: u64,
}

/// How many unanswered requests, and responses without request, the
/// summary names one by one (the earliest); the rest are counted.
pub const LISTED_UNMATCHED: usize = 20;

/// A request without answer or a response without request, named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmatched {
    pub ts_ns: i64,
    pub packet: u64,
    pub conn: u64,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub mti: String,
    /// F11, empty when absent.
    pub stan: String,
}

impl Unmatched {
    fn of(event: &Event, message: &Message) -> Self {
        Unmatched {
            ts_ns: event.ts_ns,
            packet: event.packet,
            conn: event.conn,
            src: event.src,
            dst: event.dst,
            mti: message.mti_str().to_string(),
            stan: message.get_str(11).unwrap_or("").to_string(),
        }
    }
}

/// Latency from request to response, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latency {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

/// What a capture held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub messages: u64,
    pub errors: u64,
    pub skipped_bytes: u64,
    pub connections: Vec<(u64, ConnectionStats)>,
    /// (MTI, response code or "" for messages without F39, count).
    pub by_type: Vec<(String, String, u64)>,
    pub unanswered_requests: u64,
    pub responses_without_request: u64,
    /// The earliest [`LISTED_UNMATCHED`] of each, in capture order.
    pub unanswered: Vec<Unmatched>,
    pub without_request: Vec<Unmatched>,
    pub latency: Option<Latency>,
}

/// The key that pairs a response with its request on connection `conn`: the
/// response MTI (`mti`; for a request, its computed response MTI) and the
/// values of `key_fields` (an absent field counts as empty).
pub fn match_key(conn: u64, mti: &[u8; 4], msg: &Message, key_fields: &[u16]) -> Vec<u8> {
    let mut key = Vec::with_capacity(64);
    key.extend_from_slice(&conn.to_be_bytes());
    key.extend_from_slice(mti);
    for &field in key_fields {
        let value = msg.get(field).map_or(&[][..], |v| v);
        key.extend_from_slice(&(value.len() as u32).to_be_bytes());
        key.extend_from_slice(value);
    }
    key
}

#[derive(Debug)]
pub struct Tracker {
    key_fields: Vec<u16>,
    max_outstanding: usize,
    outstanding: HashMap<Vec<u8>, Unmatched>,
    untracked: u64,
    latency_us: Histogram<u64>,
    /// Exact, where the histogram keeps 3 significant figures.
    max_latency_us: u64,
    connections: BTreeMap<u64, ConnectionStats>,
    by_type: BTreeMap<(String, String), u64>,
    messages: u64,
    errors: u64,
    skipped_bytes: u64,
    orphans: u64,
    listed_orphans: Vec<Unmatched>,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker::new(DEFAULT_KEY_FIELDS.to_vec(), DEFAULT_MAX_OUTSTANDING)
    }
}

impl Tracker {
    pub fn new(key_fields: Vec<u16>, max_outstanding: usize) -> Self {
        Tracker {
            key_fields,
            max_outstanding,
            outstanding: HashMap::new(),
            untracked: 0,
            latency_us: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .expect("bounds and 3 significant figures are valid"),
            max_latency_us: 0,
            connections: BTreeMap::new(),
            by_type: BTreeMap::new(),
            messages: 0,
            errors: 0,
            skipped_bytes: 0,
            orphans: 0,
            listed_orphans: Vec::new(),
        }
    }

    fn key(&self, conn: u64, mti: &[u8; 4], msg: &Message) -> Vec<u8> {
        match_key(conn, mti, msg, &self.key_fields)
    }

    /// Counts an event; for a response matched to its request, returns the
    /// latency in microseconds.
    pub fn event(&mut self, event: &Event) -> Option<u64> {
        let stats = self
            .connections
            .entry(event.conn)
            .or_insert_with(|| ConnectionStats {
                src: event.src,
                dst: event.dst,
                messages: 0,
                errors: 0,
                skipped_bytes: 0,
            });
        match &event.kind {
            EventKind::Message { message, .. } => {
                stats.messages += 1;
                self.messages += 1;
                let code = message.get_str(39).unwrap_or("").to_string();
                *self
                    .by_type
                    .entry((message.mti_str().to_string(), code))
                    .or_default() += 1;
                let mti = *message.mti();
                if is_response(&mti) {
                    let key = self.key(event.conn, &mti, message);
                    match self.outstanding.remove(&key) {
                        Some(request) => {
                            let us =
                                u64::try_from((event.ts_ns - request.ts_ns) / 1000).unwrap_or(0);
                            self.latency_us.saturating_record(us);
                            self.max_latency_us = self.max_latency_us.max(us);
                            Some(us)
                        }
                        None => {
                            self.orphans += 1;
                            if self.listed_orphans.len() < LISTED_UNMATCHED {
                                self.listed_orphans.push(Unmatched::of(event, message));
                            }
                            None
                        }
                    }
                } else {
                    let key = self.key(event.conn, &response_mti(&request_class(&mti)), message);
                    if self.outstanding.len() < self.max_outstanding {
                        // A resend keeps its first sending time.
                        self.outstanding
                            .entry(key)
                            .or_insert_with(|| Unmatched::of(event, message));
                    } else if !self.outstanding.contains_key(&key) {
                        self.untracked += 1;
                    }
                    None
                }
            }
            EventKind::Unparsable { .. } => {
                stats.errors += 1;
                self.errors += 1;
                None
            }
            EventKind::Skipped { len, .. } => {
                stats.skipped_bytes += len;
                self.skipped_bytes += len;
                None
            }
            EventKind::KeepAlive { .. } => None,
        }
    }

    fn earliest_unanswered(&self) -> Vec<Unmatched> {
        let mut all: Vec<&Unmatched> = self.outstanding.values().collect();
        all.sort_by_key(|u| (u.packet, u.conn));
        all.into_iter().take(LISTED_UNMATCHED).cloned().collect()
    }

    pub fn summary(&self) -> Summary {
        let latency = (!self.latency_us.is_empty()).then(|| Latency {
            count: self.latency_us.len(),
            p50_us: self.latency_us.value_at_quantile(0.5),
            p99_us: self.latency_us.value_at_quantile(0.99),
            max_us: self.max_latency_us,
        });
        Summary {
            messages: self.messages,
            errors: self.errors,
            skipped_bytes: self.skipped_bytes,
            connections: self
                .connections
                .iter()
                .map(|(id, s)| (*id, s.clone()))
                .collect(),
            by_type: self
                .by_type
                .iter()
                .map(|((mti, code), n)| (mti.clone(), code.clone(), *n))
                .collect(),
            unanswered_requests: self.outstanding.len() as u64 + self.untracked,
            responses_without_request: self.orphans,
            unanswered: self.earliest_unanswered(),
            without_request: self.listed_orphans.clone(),
            latency,
        }
    }
}

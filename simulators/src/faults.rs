//! Faults the bank simulator injects, so that the switch can be tested against
//! a bank that is slow, silent, rude or broken: [`Faults`] says what and how
//! often, [`FaultControl`] shares it between a bank's connections and its admin
//! port (it can change at run time), and [`Dice`] decides, one connection at a
//! time, what happens to each request.
//!
//! Every request meets exactly one fate ([`Fate`]), picked with one draw
//! against the probabilities in a fixed order; the fates that apply the request
//! (silent, drop after apply, garbage, duplicate, late) change the bank's books
//! exactly as an answered request would, so the ledger always shows what the
//! bank did, whatever the switch heard. Network management (0800: sign-on,
//! echo) is spared unless [`Faults::network`] is set.
//!
//! Draws come from a small seeded generator (SplitMix64) per connection,
//! derived from [`Faults::seed`] and the connection's index (0 for the first
//! connection the bank accepted): the same faults, seed and traffic give the
//! same fates, request by request. A change of faults at run time restarts
//! every connection's generator from the new faults' seed.
//!
//! The compact form, for `banksim --faults` and the admin port's `faults`
//! command (see [`Faults::from_str`]):
//!
//! ```text
//! latency=uniform:1:20,drop=0.01,late=0.01:6000,dup=0.02,garbage=0.005,decline=0.01:96,silent=0.01,seed=7
//! ```

use iso8583::codec::Message;
use iso8583::fields::num;
use iso8583::response::ResponseCode;
use iso8583::spec::Spec;

use crate::random::SplitMix64;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

/// The longest delay a fault may ask for (latency, late answers): ten minutes.
pub const MAX_DELAY_MS: u64 = 600_000;

/// The code of a decline when none is given: 96, system malfunction.
pub const DEFAULT_DECLINE_CODE: ResponseCode = ResponseCode::SYSTEM_MALFUNCTION;

/// How long each answer waits before it is sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Latency {
    /// Answers go out as soon as the bank has decided.
    #[default]
    None,
    /// Always the same delay.
    Fixed { ms: u64 },
    /// Any delay from `min_ms` to `max_ms`, all equally likely.
    Uniform { min_ms: u64, max_ms: u64 },
    /// Exponentially distributed: mostly short, now and then long.
    Exponential { mean_ms: u64 },
}

impl Latency {
    /// The delay for a uniform draw `u` in [0, 1).
    fn sample(self, u: f64) -> Duration {
        let us = |ms: u64| ms.saturating_mul(1000);
        match self {
            Latency::None => Duration::ZERO,
            Latency::Fixed { ms } => Duration::from_millis(ms),
            Latency::Uniform { min_ms, max_ms } => {
                let span = us(max_ms.saturating_sub(min_ms)) as f64;
                // `as` saturates: no overflow, whatever `u`.
                Duration::from_micros(us(min_ms).saturating_add((u * span) as u64))
            }
            Latency::Exponential { mean_ms } => {
                Duration::from_micros((-(us(mean_ms) as f64) * (1.0 - u).ln()) as u64)
            }
        }
    }

    fn largest_ms(self) -> u64 {
        match self {
            Latency::None => 0,
            Latency::Fixed { ms } => ms,
            Latency::Uniform { max_ms, .. } => max_ms,
            Latency::Exponential { mean_ms } => mean_ms,
        }
    }
}

impl fmt::Display for Latency {
    /// The compact form: `none`, `fixed:MS`, `uniform:MIN:MAX` or `exp:MEAN`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Latency::None => f.write_str("none"),
            Latency::Fixed { ms } => write!(f, "fixed:{ms}"),
            Latency::Uniform { min_ms, max_ms } => write!(f, "uniform:{min_ms}:{max_ms}"),
            Latency::Exponential { mean_ms } => write!(f, "exp:{mean_ms}"),
        }
    }
}

/// What the bank simulator does wrong, and how often. Probabilities are from 0
/// to 1 and exclusive: each request meets at most one of these faults, so they
/// add up to 1 at most. The default injects nothing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// The delay before every answer (declines, duplicates, garbage and late
    /// answers included).
    pub latency: Latency,
    /// The request is applied and never answered.
    pub silent: f64,
    /// The request is lost on the way in: neither applied nor answered.
    pub lost: f64,
    /// The request is applied and answered `late_ms` after the latency: past
    /// the switch's deadline when that is longer than its timeout.
    pub late: f64,
    pub late_ms: u64,
    /// The connection closes after the request is read, before it is applied.
    pub drop_before_apply: f64,
    /// The connection closes after the request is applied, before it is
    /// answered. Answers still waiting on the connection are lost with it.
    pub drop_after_apply: f64,
    /// The request is applied and its answer sent twice.
    pub duplicate: f64,
    /// The request is applied and answered with a frame whose body does not
    /// parse (its first byte is 0xFF, no MTI).
    pub garbage: f64,
    /// The request is answered `decline_code` without being applied (nor
    /// remembered: a resend may be approved); the bank journals the answer,
    /// so its clearing export shows the decline.
    pub decline: f64,
    pub decline_code: ResponseCode,
    /// Whether network management (0800: sign-on, echo) suffers the faults too.
    pub network: bool,
    /// Seed of the draws: the same seed, faults and traffic give the same fates.
    pub seed: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            latency: Latency::None,
            silent: 0.0,
            lost: 0.0,
            late: 0.0,
            late_ms: 0,
            drop_before_apply: 0.0,
            drop_after_apply: 0.0,
            duplicate: 0.0,
            garbage: 0.0,
            decline: 0.0,
            decline_code: DEFAULT_DECLINE_CODE,
            network: false,
            seed: 0,
        }
    }
}

/// A fault specification that cannot be used: the item concerned and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("faults {item:?}: {reason}")]
pub struct FaultsError {
    pub item: String,
    pub reason: String,
}

/// The keys of the compact form, for error messages.
const KEYS: &str =
    "latency, silent, lost, late, drop (= drop_after), drop_before, drop_after, dup, garbage, decline, network, seed";

impl Faults {
    /// The probability of each fate but [`Fate::Answer`], in the order a draw
    /// meets them.
    fn odds(&self) -> [(Fate, f64); 8] {
        [
            (Fate::DropBeforeApply, self.drop_before_apply),
            (Fate::Lost, self.lost),
            (Fate::Decline, self.decline),
            (Fate::Silent, self.silent),
            (Fate::DropAfterApply, self.drop_after_apply),
            (Fate::Garbage, self.garbage),
            (Fate::Duplicate, self.duplicate),
            (Fate::Late, self.late),
        ]
    }

    /// True when no request is ever delayed or harmed.
    pub fn is_none(&self) -> bool {
        self.latency.largest_ms() == 0 && self.odds().iter().all(|&(_, p)| p == 0.0)
    }

    /// Checks what the parser checks, for faults built otherwise: probabilities
    /// from 0 to 1 adding up to 1 at most, delays up to [`MAX_DELAY_MS`] (the
    /// decline's code is a [`ResponseCode`], well-formed by its type).
    pub fn check(&self) -> Result<(), FaultsError> {
        let err = |item: &str, reason: String| FaultsError {
            item: item.to_string(),
            reason,
        };
        let mut sum = 0.0;
        for (fate, p) in self.odds() {
            if !(0.0..=1.0).contains(&p) {
                return Err(err(
                    fate.name(),
                    format!("probability {p} is not from 0 to 1"),
                ));
            }
            sum += p;
        }
        if sum > 1.0 + 1e-9 {
            return Err(err(
                &self.to_string(),
                format!("the probabilities add up to {sum}, more than 1 (each request meets one fault at most)"),
            ));
        }
        if let Latency::Uniform { min_ms, max_ms } = self.latency {
            if min_ms > max_ms {
                return Err(err(
                    "latency",
                    format!("uniform:{min_ms}:{max_ms}: the minimum is above the maximum"),
                ));
            }
        }
        for (item, ms) in [
            ("latency", self.latency.largest_ms()),
            ("late", self.late_ms),
        ] {
            if ms > MAX_DELAY_MS {
                return Err(err(
                    item,
                    format!("{ms} ms is longer than the longest delay, {MAX_DELAY_MS} ms"),
                ));
            }
        }
        Ok(())
    }

    /// The fate of one request and the delay before its answer, from two
    /// uniform draws in [0, 1).
    fn plan(&self, fate_draw: f64, latency_draw: f64) -> Plan {
        let mut threshold = 0.0;
        let mut fate = Fate::Answer;
        for (candidate, p) in self.odds() {
            threshold += p;
            if fate_draw < threshold {
                fate = candidate;
                break;
            }
        }
        let mut delay = self.latency.sample(latency_draw);
        if fate == Fate::Late {
            delay += Duration::from_millis(self.late_ms);
        }
        Plan { fate, delay }
    }
}

impl FromStr for Faults {
    type Err = FaultsError;

    /// Reads the compact form: `none` (or nothing), or comma-separated
    /// `key=value` items, each key at most once:
    ///
    /// | item | meaning |
    /// |---|---|
    /// | `latency=fixed:MS`, `uniform:MIN:MAX`, `exp:MEAN`, `none` | delay before every answer |
    /// | `silent=P` | applied, never answered |
    /// | `lost=P` | neither applied nor answered |
    /// | `late=P:MS` | applied, answered MS later than the latency |
    /// | `drop=P` or `drop_after=P` | applied, then the connection closes |
    /// | `drop_before=P` | the connection closes, nothing applied |
    /// | `dup=P` | applied, answered twice |
    /// | `garbage=P` | applied, answered with a frame that does not parse |
    /// | `decline=P[:CODE]` | answered CODE (default 96), nothing applied |
    /// | `network=true` | 0800 (sign-on, echo) suffers the faults too |
    /// | `seed=N` | seed of the draws |
    fn from_str(spec: &str) -> Result<Faults, FaultsError> {
        let mut faults = Faults::default();
        let spec = spec.trim();
        if spec.is_empty() || spec == "none" {
            return Ok(faults);
        }
        let mut seen: Vec<&str> = Vec::new();
        for item in spec.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let err = |reason: String| FaultsError {
                item: item.to_string(),
                reason,
            };
            let Some((key, value)) = item.split_once('=') else {
                return Err(err(format!("expected key=value, the keys being {KEYS}")));
            };
            let (key, value) = (key.trim(), value.trim());
            let key = match key {
                "drop" => "drop_after",
                "duplicate" => "dup",
                key => key,
            };
            if seen.contains(&key) {
                return Err(err(format!("{key} is given twice")));
            }
            seen.push(key);
            match key {
                "latency" => faults.latency = parse_latency(value).map_err(err)?,
                "silent" => faults.silent = probability(value).map_err(err)?,
                "lost" => faults.lost = probability(value).map_err(err)?,
                "late" => {
                    let Some((p, ms)) = value.split_once(':') else {
                        return Err(err(
                            "expected late=P:MS, MS being how much later than usual the answer goes"
                                .to_string(),
                        ));
                    };
                    faults.late = probability(p).map_err(err)?;
                    faults.late_ms = millis(ms).map_err(err)?;
                }
                "drop_after" => faults.drop_after_apply = probability(value).map_err(err)?,
                "drop_before" => faults.drop_before_apply = probability(value).map_err(err)?,
                "dup" => faults.duplicate = probability(value).map_err(err)?,
                "garbage" => faults.garbage = probability(value).map_err(err)?,
                "decline" => {
                    let (p, code) = match value.split_once(':') {
                        Some((p, code)) => {
                            let code = code.trim();
                            let code = ResponseCode::from_bytes(code.as_bytes()).map_err(|_| {
                                err(format!(
                                    "response code {code:?} is not two letters or digits"
                                ))
                            })?;
                            (p, code)
                        }
                        None => (value, DEFAULT_DECLINE_CODE),
                    };
                    faults.decline = probability(p).map_err(err)?;
                    faults.decline_code = code;
                }
                "network" => {
                    faults.network = match value {
                        "true" | "on" | "1" => true,
                        "false" | "off" | "0" => false,
                        _ => return Err(err(format!("{value:?} is not true or false"))),
                    }
                }
                "seed" => {
                    faults.seed = value
                        .parse()
                        .map_err(|_| err(format!("{value:?} is not a whole number")))?
                }
                _ => return Err(err(format!("unknown key {key:?}: the keys are {KEYS}"))),
            }
        }
        faults.check()?;
        Ok(faults)
    }
}

fn probability(text: &str) -> Result<f64, String> {
    let text = text.trim();
    match text.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("{text:?} is not a probability from 0 to 1")),
    }
}

fn millis(text: &str) -> Result<u64, String> {
    let text = text.trim();
    match text.parse::<u64>() {
        Ok(ms) if ms <= MAX_DELAY_MS => Ok(ms),
        Ok(ms) => Err(format!(
            "{ms} ms is longer than the longest delay, {MAX_DELAY_MS} ms"
        )),
        Err(_) => Err(format!("{text:?} is not a whole number of milliseconds")),
    }
}

fn parse_latency(value: &str) -> Result<Latency, String> {
    let parts: Vec<&str> = value.split(':').collect();
    let latency = match parts.as_slice() {
        ["none"] => Latency::None,
        ["fixed", ms] => Latency::Fixed { ms: millis(ms)? },
        ["uniform", min, max] => Latency::Uniform {
            min_ms: millis(min)?,
            max_ms: millis(max)?,
        },
        ["exp" | "exponential", mean] => Latency::Exponential {
            mean_ms: millis(mean)?,
        },
        _ => {
            return Err(format!(
                "{value:?} is not none, fixed:MS, uniform:MIN:MAX or exp:MEAN"
            ))
        }
    };
    if let Latency::Uniform { min_ms, max_ms } = latency {
        if min_ms > max_ms {
            return Err(format!(
                "uniform:{min_ms}:{max_ms}: the minimum is above the maximum"
            ));
        }
    }
    Ok(latency)
}

impl fmt::Display for Faults {
    /// The compact form, which [`Faults::from_str`] reads back: only what
    /// differs from the default, `none` if nothing does.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut items = Vec::new();
        if self.latency != Latency::None {
            items.push(format!("latency={}", self.latency));
        }
        let simple = [
            ("silent", self.silent),
            ("lost", self.lost),
            ("drop_before", self.drop_before_apply),
            ("drop_after", self.drop_after_apply),
            ("dup", self.duplicate),
            ("garbage", self.garbage),
        ];
        for (key, p) in simple {
            if p != 0.0 {
                items.push(format!("{key}={p}"));
            }
        }
        if self.late != 0.0 || self.late_ms != 0 {
            items.push(format!("late={}:{}", self.late, self.late_ms));
        }
        if self.decline != 0.0 || self.decline_code != DEFAULT_DECLINE_CODE {
            items.push(format!("decline={}:{}", self.decline, self.decline_code));
        }
        if self.network {
            items.push("network=true".to_string());
        }
        if self.seed != 0 {
            items.push(format!("seed={}", self.seed));
        }
        if items.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&items.join(","))
        }
    }
}

/// What happens to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Applied and answered, after the latency.
    Answer,
    Silent,
    Lost,
    Late,
    DropBeforeApply,
    DropAfterApply,
    Duplicate,
    Garbage,
    Decline,
}

impl Fate {
    const ALL: [Fate; 9] = [
        Fate::Answer,
        Fate::Silent,
        Fate::Lost,
        Fate::Late,
        Fate::DropBeforeApply,
        Fate::DropAfterApply,
        Fate::Duplicate,
        Fate::Garbage,
        Fate::Decline,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fate::Answer => "answered",
            Fate::Silent => "silent",
            Fate::Lost => "lost",
            Fate::Late => "late",
            Fate::DropBeforeApply => "drop_before_apply",
            Fate::DropAfterApply => "drop_after_apply",
            Fate::Duplicate => "duplicate",
            Fate::Garbage => "garbage",
            Fate::Decline => "decline",
        }
    }

    /// Whether the bank applies the request.
    pub fn applies(self) -> bool {
        !matches!(self, Fate::Lost | Fate::DropBeforeApply | Fate::Decline)
    }
}

/// The fate of one request and how long its answer (if any) waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    pub fate: Fate,
    pub delay: Duration,
}

impl Plan {
    /// No fault: answered at once.
    pub const ANSWER: Plan = Plan {
        fate: Fate::Answer,
        delay: Duration::ZERO,
    };
}

/// A bank's faults, shared by its connections and its admin port, and counts
/// of the fates met.
#[derive(Debug, Default)]
pub struct FaultControl {
    /// The faults and their generation, bumped by every [`FaultControl::set`].
    current: RwLock<(u64, Faults)>,
    /// The generation, readable without the lock: connections look at it on
    /// every request and take the lock only when it has moved.
    generation: AtomicU64,
    /// Requests per fate, indexed as [`Fate::ALL`].
    met: [AtomicU64; Fate::ALL.len()],
}

impl FaultControl {
    pub fn new(faults: Faults) -> FaultControl {
        FaultControl {
            current: RwLock::new((0, faults)),
            ..FaultControl::default()
        }
    }

    /// The faults now.
    pub fn faults(&self) -> Faults {
        self.read().1
    }

    /// Replaces the faults: every connection's next request meets the new ones,
    /// drawn from a generator restarted from their seed.
    pub fn set(&self, faults: Faults) {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        let generation = current.0 + 1;
        *current = (generation, faults);
        self.generation.store(generation, Ordering::Release);
    }

    /// How many requests met each fate (`answered` counts those answered
    /// normally, `requests` all that could have met a fault) since the start.
    pub fn injected(&self) -> BTreeMap<&'static str, u64> {
        let mut counts: BTreeMap<&'static str, u64> = Fate::ALL
            .iter()
            .map(|&fate| (fate.name(), self.met[fate as usize].load(Ordering::Relaxed)))
            .collect();
        counts.insert("requests", counts.values().sum());
        counts
    }

    fn read(&self) -> (u64, Faults) {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// One connection's draws: what happens to each of its requests.
pub struct Dice {
    control: Arc<FaultControl>,
    connection: u64,
    generation: u64,
    faults: Faults,
    rng: SplitMix64,
}

impl Dice {
    /// The dice of the connection with index `connection` (0 for the first a
    /// bank accepted).
    pub fn new(control: Arc<FaultControl>, connection: u64) -> Dice {
        let (generation, faults) = control.read();
        let rng = SplitMix64::for_connection(faults.seed, connection);
        Dice {
            control,
            connection,
            generation,
            faults,
            rng,
        }
    }

    /// The faults the last roll used.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// The fate of the next request, with the faults of the moment; network
    /// management (0800) is spared unless [`Faults::network`] is set.
    pub fn roll(&mut self, network_management: bool) -> Plan {
        if self.control.generation.load(Ordering::Acquire) != self.generation {
            *self = Dice::new(self.control.clone(), self.connection);
        }
        if network_management && !self.faults.network {
            return Plan::ANSWER;
        }
        let plan = if self.faults.is_none() {
            Plan::ANSWER
        } else {
            // Always two draws, so that which fate comes next never depends on
            // the latency distribution.
            let fate_draw = self.rng.unit();
            let latency_draw = self.rng.unit();
            self.faults.plan(fate_draw, latency_draw)
        };
        self.control.met[plan.fate as usize].fetch_add(1, Ordering::Relaxed);
        plan
    }

    /// A body that no dialect parses: 0xFF where the MTI should be, then 7 to
    /// 38 random bytes.
    pub fn garbage(&mut self) -> Bytes {
        let len = 8 + (self.rng.next_u64() % 32) as usize;
        let mut body: Vec<u8> = (0..len).map(|_| self.rng.next_u64() as u8).collect();
        body[0] = 0xFF;
        Bytes::from(body)
    }
}

/// A decline of `request` with `code`, built from the dialect: its response
/// MTI, the request's fields the response may carry (not a MAC, which would not
/// match), F39, and F15 when the response must have it. `None` when the dialect
/// has no response for the request.
pub fn decline(
    spec: &Spec,
    request: &Message,
    code: ResponseCode,
    now: NaiveDateTime,
) -> Option<Message> {
    let pc = request.get(num::PROCESSING_CODE);
    let (message, is_response) = spec.message_for(request.mti(), pc)?;
    if is_response {
        return None;
    }
    let mut response = Message::new(message.response_mti?);
    let echoed: Vec<u16> = request
        .fields()
        .map(|(number, _)| number)
        .filter(|&number| message.response.allows(number) && number != 64 && number != 128)
        .collect();
    response.echo(request, &echoed);
    response.set(num::RESPONSE_CODE, Bytes::from(code));
    if message.response.mandatory.contains(&num::SETTLEMENT_DATE) {
        response.set(num::SETTLEMENT_DATE, now.format("%m%d").to_string());
    }
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(spec: &str) -> Faults {
        spec.parse()
            .unwrap_or_else(|e| panic!("{spec:?} must parse: {e}"))
    }

    fn error(spec: &str) -> String {
        match spec.parse::<Faults>() {
            Ok(f) => panic!("{spec:?} must be refused, got {f:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_compact_form_reads_every_fault() {
        let f = parse(
            "latency=uniform:1:20,drop=0.01,late=0.01:6000,dup=0.02,garbage=0.005,decline=0.01:91,silent=0.01,seed=7",
        );
        assert_eq!(
            f,
            Faults {
                latency: Latency::Uniform {
                    min_ms: 1,
                    max_ms: 20
                },
                silent: 0.01,
                late: 0.01,
                late_ms: 6000,
                drop_after_apply: 0.01,
                duplicate: 0.02,
                garbage: 0.005,
                decline: 0.01,
                decline_code: ResponseCode::ISSUER_UNAVAILABLE,
                seed: 7,
                ..Faults::default()
            }
        );
        let g = parse(" lost=0.1 , drop_before=0.2, drop_after=0.3, decline=0.1, network=true, latency=exp:5, ");
        assert_eq!(
            (g.lost, g.drop_before_apply, g.drop_after_apply, g.decline),
            (0.1, 0.2, 0.3, 0.1)
        );
        assert_eq!(g.decline_code, ResponseCode::SYSTEM_MALFUNCTION);
        assert!(g.network);
        assert_eq!(g.latency, Latency::Exponential { mean_ms: 5 });
        assert_eq!(parse("latency=fixed:3").latency, Latency::Fixed { ms: 3 });
        assert_eq!(parse("none"), Faults::default());
        assert_eq!(parse(""), Faults::default());
        assert!(Faults::default().is_none());
        assert!(parse("seed=3,network=true").is_none());
        assert!(!parse("latency=fixed:1").is_none());
    }

    #[test]
    fn the_compact_form_and_json_read_back_what_they_print() {
        for spec in [
            "none",
            "seed=9",
            "latency=fixed:5",
            "latency=exp:7,silent=0.5,lost=0.25,seed=18446744073709551615",
            "latency=uniform:1:20,drop_before=0.1,drop_after=0.1,dup=0.1,garbage=0.1,late=0.1:6000,decline=0.1:91,network=true",
        ] {
            let f = parse(spec);
            assert_eq!(f.to_string(), spec);
            assert_eq!(parse(&f.to_string()), f);
            let json = serde_json::to_string(&f).unwrap();
            assert_eq!(serde_json::from_str::<Faults>(&json).unwrap(), f, "{json}");
        }
        let partial: Faults = serde_json::from_str(r#"{"silent":1.0}"#).unwrap();
        assert_eq!(partial, parse("silent=1"));
        assert!(serde_json::from_str::<Faults>(r#"{"silence":1.0}"#).is_err());
    }

    #[test]
    fn bad_specs_are_refused_with_the_item_and_the_reason() {
        for (spec, expected) in [
            ("silent", "expected key=value"),
            ("silence=0.1", "unknown key \"silence\""),
            ("silent=1.5", "not a probability"),
            ("silent=-0.1", "not a probability"),
            ("silent=NaN", "not a probability"),
            ("silent=half", "not a probability"),
            ("drop=0.1,drop_after=0.2", "drop_after is given twice"),
            ("silent=0.6,lost=0.6", "add up to 1.2"),
            ("late=0.1", "expected late=P:MS"),
            ("late=0.1:soon", "not a whole number of milliseconds"),
            ("late=0.1:600001", "longer than the longest delay"),
            (
                "latency=normal:5",
                "none, fixed:MS, uniform:MIN:MAX or exp:MEAN",
            ),
            ("latency=uniform:20:1", "minimum is above the maximum"),
            ("latency=fixed", "none, fixed:MS"),
            ("decline=0.1:9", "not two letters or digits"),
            ("decline=0.1:9!", "not two letters or digits"),
            ("network=maybe", "not true or false"),
            ("seed=-1", "not a whole number"),
        ] {
            let e = error(spec);
            assert!(e.contains(expected), "{spec:?}: {e}");
            assert!(e.starts_with("faults "), "{spec:?}: {e}");
        }
        assert!(error("silent=0.1,bogus=1").contains("\"bogus=1\""));
    }

    #[test]
    fn each_draw_meets_one_fate_in_a_fixed_order() {
        let f = parse("drop_before=0.1,lost=0.1,decline=0.1,silent=0.1,drop_after=0.1,garbage=0.1,dup=0.1,late=0.1:500");
        let fates: Vec<Fate> = (0..10)
            .map(|i| f.plan(i as f64 / 10.0 + 0.05, 0.0).fate)
            .collect();
        assert_eq!(
            fates,
            [
                Fate::DropBeforeApply,
                Fate::Lost,
                Fate::Decline,
                Fate::Silent,
                Fate::DropAfterApply,
                Fate::Garbage,
                Fate::Duplicate,
                Fate::Late,
                Fate::Answer,
                Fate::Answer,
            ]
        );
        assert_eq!(f.plan(0.75, 0.0).delay, Duration::from_millis(500));
        // Probability 1: every draw, however close to 1.
        let always = parse("silent=1");
        assert_eq!(always.plan(1.0 - f64::EPSILON, 0.5).fate, Fate::Silent);
        assert_eq!(always.plan(0.0, 0.5).fate, Fate::Silent);
    }

    #[test]
    fn latencies_stay_in_their_distribution() {
        let ms = Duration::from_millis;
        assert_eq!(Latency::None.sample(0.7), Duration::ZERO);
        assert_eq!(Latency::Fixed { ms: 12 }.sample(0.7), ms(12));
        let uniform = Latency::Uniform {
            min_ms: 10,
            max_ms: 20,
        };
        assert_eq!(uniform.sample(0.0), ms(10));
        assert_eq!(uniform.sample(0.5), ms(15));
        assert!(uniform.sample(1.0 - f64::EPSILON) < ms(20));
        let exp = Latency::Exponential { mean_ms: 100 };
        assert_eq!(exp.sample(0.0), Duration::ZERO);
        // The median of an exponential is mean × ln 2.
        let median = exp.sample(0.5).as_secs_f64();
        assert!(
            (median - 0.1 * std::f64::consts::LN_2).abs() < 1e-6,
            "{median}"
        );
        let mut rng = SplitMix64::new(1);
        let mean: f64 = (0..20_000)
            .map(|_| exp.sample(rng.unit()).as_secs_f64())
            .sum::<f64>()
            / 20_000.0;
        assert!((mean - 0.1).abs() < 0.005, "mean {mean}");
    }

    fn fates(control: &Arc<FaultControl>, connection: u64, n: usize) -> Vec<Plan> {
        let mut dice = Dice::new(control.clone(), connection);
        (0..n).map(|_| dice.roll(false)).collect()
    }

    #[test]
    fn a_seed_gives_the_same_fates_per_connection() {
        let spec = "latency=exp:10,silent=0.2,dup=0.2,decline=0.2,seed=7";
        let a = Arc::new(FaultControl::new(parse(spec)));
        let b = Arc::new(FaultControl::new(parse(spec)));
        assert_eq!(fates(&a, 0, 200), fates(&b, 0, 200));
        assert_eq!(fates(&a, 3, 200), fates(&b, 3, 200));
        assert_ne!(fates(&a, 0, 200), fates(&a, 1, 200));
        let other = Arc::new(FaultControl::new(parse(&spec.replace("seed=7", "seed=8"))));
        assert_ne!(fates(&a, 0, 200), fates(&other, 0, 200));
        // Roughly the odds asked for, and counted.
        let fresh = Arc::new(FaultControl::new(parse(spec)));
        let silent = fates(&fresh, 5, 10_000)
            .iter()
            .filter(|p| p.fate == Fate::Silent)
            .count();
        assert!((1_800..2_200).contains(&silent), "{silent}");
        let injected = fresh.injected();
        assert_eq!(injected["requests"], 10_000);
        assert_eq!(injected["silent"], silent as u64);
        assert_eq!(injected["lost"], 0);
    }

    #[test]
    fn a_change_at_run_time_restarts_the_draws_from_the_new_seed() {
        let control = Arc::new(FaultControl::default());
        let mut dice = Dice::new(control.clone(), 2);
        assert_eq!(dice.roll(false), Plan::ANSWER);
        let faults = parse("silent=0.5,lost=0.5,seed=11");
        control.set(faults.clone());
        let after: Vec<Plan> = (0..50).map(|_| dice.roll(false)).collect();
        assert_eq!(dice.faults(), &faults);
        assert_eq!(after, fates(&control, 2, 50));
        assert!(after.iter().all(|p| p.fate != Fate::Answer));
        assert_eq!(control.faults(), faults);
        assert_eq!(control.injected()["answered"], 1);
        assert_eq!(control.injected()["requests"], 101);
        // Network management is spared unless the faults say otherwise.
        assert_eq!(dice.roll(true), Plan::ANSWER);
        assert_eq!(control.injected()["requests"], 101);
        control.set(parse("silent=1,network=true"));
        assert_eq!(dice.roll(true).fate, Fate::Silent);
    }

    #[test]
    fn garbage_never_parses() {
        let spec = Spec::switchboard();
        let mut dice = Dice::new(Arc::new(FaultControl::default()), 0);
        for _ in 0..200 {
            let body = dice.garbage();
            assert!((8..40).contains(&body.len()));
            assert!(iso8583::codec::parse(&spec, body).is_err());
        }
    }
}

//! Sending a script to a live host and judging what comes back.
//!
//! Each captured connection is replayed on a connection of its own to the
//! target, opened when its first request is sent (again if the target
//! closes it). Requests leave in capture order, paced as captured, at a
//! fixed rate, or as fast as the window allows; at most `window` wait for
//! their answer at once, each for at most `timeout`. An answer is paired
//! with its request as in the capture (response MTI and key fields, on the
//! same connection) and compared field by field with the captured answer,
//! the captured one's echoes translated to the renewed values first.
//!
//! Bounded: requests waiting (the window), answers queued from the target
//! (a channel), connections open (`MAX_LINKS` idle ones are closed first),
//! and every wait (connect, write, answer) has a timeout.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use capture::replay::{differences, Difference, Exchange, Renewer, ScriptStats};
use capture::summary::match_key;
use iso8583::framing::{frame_bytes, Frame, FrameCodec, FramingConfig};
use iso8583::mti::{is_response, request_class, response_mti};
use iso8583::{Message, Spec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::codec::Decoder;

use super::script::ScriptItem;

/// Connections to the target kept open at most, when some are idle.
const MAX_LINKS: usize = 256;
/// Answers read from the target and not yet judged, at most.
const ANSWER_QUEUE: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// The captured gaps between requests.
    Original,
    /// This many requests per second.
    Rate(f64),
    /// Each request as soon as the window has room.
    Fast,
}

#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub target: SocketAddr,
    /// The framing to the target; the captured connection's when `None`.
    pub framing: Option<FramingConfig>,
    pub pace: Pace,
    pub window: usize,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub key_fields: Vec<u16>,
    pub ignore: Vec<u16>,
}

#[derive(Debug)]
pub enum Verdict {
    /// The answer is the captured one (but for ignored fields), or neither
    /// the capture nor the target answered.
    Same,
    Differs(Vec<Difference>),
    /// The capture has an answer; the target gave none in time.
    Missing(String),
    /// The target answered what the capture did not, or answered nothing
    /// that was sent.
    Extra,
    /// The request could not be sent, or an answer could not be read.
    Error(String),
}

/// The judgement of one request (`number`), or of an answer to none.
#[derive(Debug)]
pub struct Outcome {
    pub number: Option<u64>,
    pub conn: u64,
    /// The captured request's packet and time.
    pub packet: Option<u64>,
    pub ts_ns: Option<i64>,
    /// The request as sent (renewed).
    pub request: Option<Message>,
    pub expected: Option<Message>,
    pub actual: Option<Message>,
    pub latency_us: Option<u64>,
    pub captured_latency_us: Option<u64>,
    pub verdict: Verdict,
}

/// What the replay did, besides the outcomes.
#[derive(Debug, Default)]
pub struct Totals {
    pub script: ScriptStats,
    pub capture_errors: Vec<String>,
    /// Requests the target sent on its own (not compared).
    pub target_requests: u64,
    pub connections_opened: u64,
}

/// A request sent and waiting for its answer.
struct Sent {
    key: Vec<u8>,
    conn: u64,
    packet: u64,
    ts_ns: i64,
    request: Message,
    expected: Option<Message>,
    captured_latency_us: Option<u64>,
    /// When the capture saw the answer: a request sent after it in the
    /// capture waits for this one's answer.
    captured_answer_ns: Option<i64>,
    at: Instant,
}

impl Sent {
    fn outcome(self, actual: Option<Message>, verdict: Verdict) -> Outcome {
        let latency_us = actual
            .as_ref()
            .map(|_| self.at.elapsed().as_micros() as u64);
        Outcome {
            number: None,
            conn: self.conn,
            packet: Some(self.packet),
            ts_ns: Some(self.ts_ns),
            request: Some(self.request),
            expected: self.expected,
            actual,
            latency_us,
            captured_latency_us: self.captured_latency_us,
            verdict,
        }
    }
}

enum Incoming {
    Answer {
        conn: u64,
        generation: u64,
        message: Result<Message, String>,
    },
    Closed {
        conn: u64,
        generation: u64,
        reason: String,
    },
}

/// A connection to the target; its reader stops when it is dropped.
struct Link {
    writer: OwnedWriteHalf,
    generation: u64,
    last_used: Instant,
    reader: JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

pub struct Engine<'a> {
    spec: Arc<Spec>,
    options: EngineOptions,
    renewer: Renewer,
    links: HashMap<u64, Link>,
    generations: u64,
    /// Requests waiting for their answer, by number; their numbers by the
    /// answer's key (a request and its repeat share one).
    sent: HashMap<u64, Sent>,
    /// When the capture saw the answers of the requests in `sent` (a count
    /// per moment): the earliest says whether the next request must wait.
    answer_times: BTreeMap<i64, u32>,
    by_key: HashMap<Vec<u8>, VecDeque<u64>>,
    deadlines: VecDeque<(Instant, u64)>,
    answers_tx: mpsc::Sender<Incoming>,
    answers_rx: mpsc::Receiver<Incoming>,
    /// Outcomes waiting for an earlier request's, so they come out in order.
    reorder: BTreeMap<u64, Outcome>,
    next_to_report: u64,
    report: &'a mut dyn FnMut(Outcome),
    totals: Totals,
}

impl<'a> Engine<'a> {
    pub fn new(
        spec: Arc<Spec>,
        options: EngineOptions,
        renewer: Renewer,
        report: &'a mut dyn FnMut(Outcome),
    ) -> Self {
        let (answers_tx, answers_rx) = mpsc::channel(ANSWER_QUEUE);
        Engine {
            spec,
            options,
            renewer,
            links: HashMap::new(),
            generations: 0,
            sent: HashMap::new(),
            answer_times: BTreeMap::new(),
            by_key: HashMap::new(),
            deadlines: VecDeque::new(),
            answers_tx,
            answers_rx,
            reorder: BTreeMap::new(),
            next_to_report: 1,
            report,
            totals: Totals::default(),
        }
    }

    /// Replays the script to its end, then waits for the last answers.
    pub async fn run(mut self, mut script: mpsc::Receiver<ScriptItem>) -> Totals {
        let start = Instant::now();
        let mut first_ts: Option<i64> = None;
        let mut next: Option<Box<Exchange>> = None;
        let mut input_done = false;
        let mut sent_count: u64 = 0;
        loop {
            if input_done && next.is_none() && self.sent.is_empty() {
                break;
            }
            let send_at = next.as_ref().map(|ex| match self.options.pace {
                Pace::Original => {
                    let first = *first_ts.get_or_insert(ex.ts_ns);
                    start + Duration::from_nanos(ex.ts_ns.saturating_sub(first).max(0) as u64)
                }
                Pace::Rate(rate) => start + Duration::from_secs_f64(sent_count as f64 / rate),
                Pace::Fast => start,
            });
            let window_open = self.sent.len() < self.options.window
                && next.as_ref().is_none_or(|ex| !self.waits_for_an_answer(ex));
            let deadline = self.deadlines.front().map(|d| d.0);
            tokio::select! {
                biased;
                Some(incoming) = self.answers_rx.recv() => self.incoming(incoming),
                _ = sleep_until(deadline.unwrap_or(start)), if deadline.is_some() => self.expire(),
                _ = sleep_until(send_at.unwrap_or(start)), if send_at.is_some() && window_open => {
                    if let Some(exchange) = next.take() {
                        sent_count += 1;
                        self.send(*exchange).await;
                    }
                }
                item = script.recv(), if next.is_none() && !input_done => match item {
                    Some(ScriptItem::Exchange(exchange)) => next = Some(exchange),
                    Some(ScriptItem::CaptureError(error)) => self.totals.capture_errors.push(error),
                    Some(ScriptItem::End(stats)) => {
                        self.totals.script = stats;
                        input_done = true;
                    }
                    None => input_done = true,
                },
            }
        }
        // Every request has its outcome; print what still waits for order.
        for (_, outcome) in std::mem::take(&mut self.reorder) {
            (self.report)(outcome);
        }
        std::mem::take(&mut self.totals)
    }

    /// Whether a request sent in the capture after another's answer must
    /// wait for that answer now: a receive waits for its freeze's answer, as
    /// the wallet did, while requests the capture shows in flight together
    /// go together.
    fn waits_for_an_answer(&self, exchange: &Exchange) -> bool {
        self.answer_times
            .keys()
            .next()
            .is_some_and(|&earliest| earliest <= exchange.ts_ns)
    }

    fn add_sent(&mut self, number: u64, sent: Sent) {
        if let Some(at) = sent.captured_answer_ns {
            *self.answer_times.entry(at).or_default() += 1;
        }
        self.sent.insert(number, sent);
    }

    fn take_sent(&mut self, number: u64) -> Option<Sent> {
        let sent = self.sent.remove(&number)?;
        if let Some(at) = sent.captured_answer_ns {
            if let Some(count) = self.answer_times.get_mut(&at) {
                *count -= 1;
                if *count == 0 {
                    self.answer_times.remove(&at);
                }
            }
        }
        Some(sent)
    }

    fn record(&mut self, number: u64, mut outcome: Outcome) {
        outcome.number = Some(number);
        self.reorder.insert(number, outcome);
        while let Some(outcome) = self.reorder.remove(&self.next_to_report) {
            (self.report)(outcome);
            self.next_to_report += 1;
        }
    }

    async fn send(&mut self, exchange: Exchange) {
        let Exchange {
            number,
            packet,
            ts_ns,
            conn,
            framing,
            header,
            mut request,
            answer,
            ..
        } = exchange;
        self.renewer
            .renew(&mut request, chrono::Utc::now().naive_utc());
        let captured_latency_us = answer
            .as_ref()
            .map(|a| u64::try_from((a.ts_ns - ts_ns) / 1000).unwrap_or(0));
        let captured_answer_ns = answer.as_ref().map(|a| a.ts_ns);
        let expected = answer.map(|a| {
            let mut message = a.message;
            self.renewer.translate(&mut message);
            message
        });
        let key = match_key(
            conn,
            &response_mti(&request_class(request.mti())),
            &request,
            &self.options.key_fields,
        );
        let sent = Sent {
            key,
            conn,
            packet,
            ts_ns,
            request,
            expected,
            captured_latency_us,
            captured_answer_ns,
            at: Instant::now(),
        };
        let framing = self.options.framing.clone().unwrap_or(framing);
        let bytes = match iso8583::build_bytes(&self.spec, &sent.request)
            .map_err(|e| format!("the renewed request cannot be built: {e}"))
            .and_then(|body| {
                frame_bytes(&framing, &header, &body)
                    .map_err(|e| format!("the request cannot be framed as {framing}: {e}"))
            }) {
            Ok(bytes) => bytes,
            Err(reason) => return self.record(number, sent.outcome(None, Verdict::Error(reason))),
        };
        if let Err(reason) = self.write(conn, &framing, &bytes).await {
            self.links.remove(&conn);
            return self.record(number, sent.outcome(None, Verdict::Error(reason)));
        }
        let now = Instant::now();
        self.by_key
            .entry(sent.key.clone())
            .or_default()
            .push_back(number);
        self.deadlines
            .push_back((now + self.options.timeout, number));
        self.add_sent(number, Sent { at: now, ..sent });
    }

    async fn write(
        &mut self,
        conn: u64,
        framing: &FramingConfig,
        bytes: &Bytes,
    ) -> Result<(), String> {
        if !self.links.contains_key(&conn) {
            let link = self.connect(conn, framing).await?;
            self.links.insert(conn, link);
        }
        let link = self.links.get_mut(&conn).expect("just inserted");
        link.last_used = Instant::now();
        match timeout(self.options.timeout, link.writer.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("writing to {}: {e}", self.options.target)),
            Err(_) => Err(format!(
                "writing to {}: not taken within {} ms",
                self.options.target,
                self.options.timeout.as_millis()
            )),
        }
    }

    async fn connect(&mut self, conn: u64, framing: &FramingConfig) -> Result<Link, String> {
        if self.links.len() >= MAX_LINKS {
            self.close_idle_link();
        }
        let target = self.options.target;
        let stream = match timeout(self.options.connect_timeout, TcpStream::connect(target)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(format!("connecting to {target}: {e}")),
            Err(_) => {
                return Err(format!(
                    "connecting to {target}: no connection within {} ms",
                    self.options.connect_timeout.as_millis()
                ))
            }
        };
        let _ = stream.set_nodelay(true);
        self.totals.connections_opened += 1;
        self.generations += 1;
        let generation = self.generations;
        let (reader, writer) = stream.into_split();
        let reader = tokio::spawn(read_answers(
            conn,
            generation,
            reader,
            FrameCodec::new(framing.clone()),
            self.spec.clone(),
            self.answers_tx.clone(),
        ));
        Ok(Link {
            writer,
            generation,
            last_used: Instant::now(),
            reader,
        })
    }

    /// Closes the least recently used connection with no request waiting.
    fn close_idle_link(&mut self) {
        let busy: std::collections::HashSet<u64> = self.sent.values().map(|s| s.conn).collect();
        let idle = self
            .links
            .iter()
            .filter(|(conn, _)| !busy.contains(conn))
            .min_by_key(|(_, link)| link.last_used)
            .map(|(conn, _)| *conn);
        if let Some(conn) = idle {
            self.links.remove(&conn);
        }
    }

    fn incoming(&mut self, incoming: Incoming) {
        match incoming {
            Incoming::Answer {
                conn,
                generation,
                message,
            } => {
                if self.links.get(&conn).map(|l| l.generation) != Some(generation) {
                    return;
                }
                match message {
                    Ok(message) => self.answer(conn, message),
                    Err(reason) => self.unsolicited(
                        conn,
                        None,
                        Verdict::Error(format!("an answer does not parse: {reason}")),
                    ),
                }
            }
            Incoming::Closed {
                conn,
                generation,
                reason,
            } => {
                if self.links.get(&conn).map(|l| l.generation) != Some(generation) {
                    return;
                }
                self.links.remove(&conn);
                let waiting: Vec<u64> = self
                    .sent
                    .iter()
                    .filter(|(_, s)| s.conn == conn)
                    .map(|(n, _)| *n)
                    .collect();
                for number in waiting {
                    self.give_up(number, &reason);
                }
            }
        }
    }

    fn answer(&mut self, conn: u64, message: Message) {
        let mti = *message.mti();
        if !is_response(&mti) {
            self.totals.target_requests += 1;
            return;
        }
        let key = match_key(conn, &mti, &message, &self.options.key_fields);
        let number = self.by_key.get_mut(&key).and_then(VecDeque::pop_front);
        if self.by_key.get(&key).is_some_and(VecDeque::is_empty) {
            self.by_key.remove(&key);
        }
        let Some(sent) = number.and_then(|n| self.take_sent(n).map(|s| (n, s))) else {
            return self.unsolicited(conn, Some(message), Verdict::Extra);
        };
        let (number, sent) = sent;
        let verdict = match &sent.expected {
            Some(expected) => {
                let found = differences(expected, &message, &self.options.ignore);
                if found.is_empty() {
                    Verdict::Same
                } else {
                    Verdict::Differs(found)
                }
            }
            None => Verdict::Extra,
        };
        self.record(number, sent.outcome(Some(message), verdict));
    }

    fn unsolicited(&mut self, conn: u64, actual: Option<Message>, verdict: Verdict) {
        (self.report)(Outcome {
            number: None,
            conn,
            packet: None,
            ts_ns: None,
            request: None,
            expected: None,
            actual,
            latency_us: None,
            captured_latency_us: None,
            verdict,
        });
    }

    /// Requests whose time is up.
    fn expire(&mut self) {
        let now = Instant::now();
        while let Some(&(deadline, number)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            let reason = format!("no answer within {} ms", self.options.timeout.as_millis());
            self.give_up(number, &reason);
        }
    }

    /// A request that will get no answer: missing if the capture had one.
    fn give_up(&mut self, number: u64, reason: &str) {
        let Some(sent) = self.take_sent(number) else {
            return;
        };
        if let Some(numbers) = self.by_key.get_mut(&sent.key) {
            numbers.retain(|&n| n != number);
            if numbers.is_empty() {
                self.by_key.remove(&sent.key);
            }
        }
        let verdict = if sent.expected.is_some() {
            Verdict::Missing(reason.to_string())
        } else {
            Verdict::Same
        };
        self.record(number, sent.outcome(None, verdict));
    }
}

/// Reads a connection's frames until it ends, handing each message on.
async fn read_answers(
    conn: u64,
    generation: u64,
    mut reader: tokio::net::tcp::OwnedReadHalf,
    mut codec: FrameCodec,
    spec: Arc<Spec>,
    tx: mpsc::Sender<Incoming>,
) {
    let mut buf = BytesMut::with_capacity(8192);
    let reason = loop {
        match codec.decode(&mut buf) {
            Ok(Some(Frame::Message { body, .. })) => {
                let message = iso8583::parse(&spec, body).map_err(|e| e.to_string());
                let answer = Incoming::Answer {
                    conn,
                    generation,
                    message,
                };
                if tx.send(answer).await.is_err() {
                    return;
                }
            }
            Ok(Some(Frame::KeepAlive)) => {}
            Ok(None) => match reader.read_buf(&mut buf).await {
                Ok(0) => break "the target closed the connection".to_string(),
                Ok(_) => {}
                Err(e) => break format!("reading from the target: {e}"),
            },
            Err(e) => break format!("the target's framing is broken: {e}"),
        }
    };
    let _ = tx
        .send(Incoming::Closed {
            conn,
            generation,
            reason,
        })
        .await;
}

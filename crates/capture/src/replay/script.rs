//! A capture as a replay script: every request a connection's client sent,
//! in capture order, each with the answer the capture holds for it.
//!
//! The client of a connection is the end that sent the SYN; when the capture
//! starts after the SYN, the end whose first message is a request (or whose
//! first message is the answer to one, the other end). Only the client's
//! requests are replayed: responses the client gave to the server's own
//! requests, and the server's requests, are counted and passed over.
//!
//! Requests wait in capture order for their answer, which the capture holds
//! later. A request is released once answered, once the capture's clock has
//! moved `answer_window_ns` past it (it was not answered), or when more than
//! `max_pending` wait: memory stays bounded on any capture.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use bytes::Bytes;
use iso8583::framing::FramingConfig;
use iso8583::mti::{is_response, request_class, response_mti};
use iso8583::Message;

use crate::decoder::{Event, EventKind};
use crate::summary::{match_key, DEFAULT_KEY_FIELDS};

/// A request to send again, with what the capture says it got.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// Requests are numbered from 1 in capture order.
    pub number: u64,
    pub packet: u64,
    pub ts_ns: i64,
    pub conn: u64,
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub framing: FramingConfig,
    pub header: Bytes,
    pub request: Message,
    pub answer: Option<CapturedAnswer>,
}

/// The answer a capture holds for a request.
#[derive(Debug, Clone)]
pub struct CapturedAnswer {
    pub packet: u64,
    pub ts_ns: i64,
    pub message: Message,
}

#[derive(Debug, Clone)]
pub struct ScriptOptions {
    /// With the response MTI and the connection, what pairs an answer with
    /// its request.
    pub key_fields: Vec<u16>,
    /// How long, in capture time, an answer may take to be taken for one.
    pub answer_window_ns: i64,
    /// Requests held waiting for their answer at most.
    pub max_pending: usize,
}

impl Default for ScriptOptions {
    fn default() -> Self {
        ScriptOptions {
            key_fields: DEFAULT_KEY_FIELDS.to_vec(),
            answer_window_ns: 60_000_000_000,
            max_pending: 65_536,
        }
    }
}

/// What the capture held besides the script.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScriptStats {
    pub requests: u64,
    pub answered_in_capture: u64,
    /// Responses the client sent to the server's own requests.
    pub client_responses: u64,
    /// Requests the server sent (sign-on, echo from a host).
    pub server_requests: u64,
    /// Captured responses to no captured request.
    pub answers_without_request: u64,
    /// Frames that do not parse, and bytes lost or passed over: what the
    /// capture holds that cannot be replayed.
    pub unparsable: u64,
    pub skipped_bytes: u64,
}

/// A client end learnt from a connection's first message, when its SYN was
/// not captured; forgotten past this many connections (then learnt again).
const MAX_GUESSED_CLIENTS: usize = 65_536;

#[derive(Debug)]
pub struct ScriptBuilder {
    options: ScriptOptions,
    /// Requests not yet released, in capture order; the front's number is
    /// `front_number`.
    pending: VecDeque<Exchange>,
    front_number: u64,
    /// The numbers of the pending requests still waiting for an answer, by
    /// their answer's key (a request and its repeats share one).
    waiting: HashMap<Vec<u8>, VecDeque<u64>>,
    guessed_clients: HashMap<u64, SocketAddr>,
    next_number: u64,
    stats: ScriptStats,
}

impl ScriptBuilder {
    pub fn new(options: ScriptOptions) -> Self {
        ScriptBuilder {
            options,
            pending: VecDeque::new(),
            front_number: 1,
            waiting: HashMap::new(),
            guessed_clients: HashMap::new(),
            next_number: 1,
            stats: ScriptStats::default(),
        }
    }

    pub fn stats(&self) -> &ScriptStats {
        &self.stats
    }

    /// One decoded event; the requests it releases are appended to `out`.
    pub fn event(&mut self, event: &Event, out: &mut Vec<Exchange>) {
        match &event.kind {
            EventKind::Message {
                framing,
                header,
                message,
                ..
            } => {
                let mti = *message.mti();
                if self.sent_by_client(event, is_response(&mti)) {
                    if is_response(&mti) {
                        self.stats.client_responses += 1;
                    } else {
                        self.request(event, framing, header, message);
                    }
                } else if is_response(&mti) {
                    self.answer(event, message);
                } else {
                    self.stats.server_requests += 1;
                }
            }
            EventKind::Unparsable { .. } => self.stats.unparsable += 1,
            EventKind::Skipped { len, .. } => self.stats.skipped_bytes += len,
            EventKind::KeepAlive { .. } => {}
        }
        self.release(event.ts_ns, out);
    }

    /// The end of the capture: every request still held is released.
    pub fn finish(&mut self, out: &mut Vec<Exchange>) {
        self.waiting.clear();
        out.extend(self.pending.drain(..));
        self.front_number = self.next_number;
    }

    fn sent_by_client(&mut self, event: &Event, response: bool) -> bool {
        if let Some(from_client) = event.from_client {
            return from_client;
        }
        if self.guessed_clients.len() >= MAX_GUESSED_CLIENTS
            && !self.guessed_clients.contains_key(&event.conn)
        {
            self.guessed_clients.clear();
        }
        let client = *self
            .guessed_clients
            .entry(event.conn)
            .or_insert(if response { event.dst } else { event.src });
        client == event.src
    }

    fn request(&mut self, event: &Event, framing: &FramingConfig, header: &Bytes, msg: &Message) {
        self.stats.requests += 1;
        let number = self.next_number;
        self.next_number += 1;
        let answer_mti = response_mti(&request_class(msg.mti()));
        let key = match_key(event.conn, &answer_mti, msg, &self.options.key_fields);
        self.waiting.entry(key).or_default().push_back(number);
        self.pending.push_back(Exchange {
            number,
            packet: event.packet,
            ts_ns: event.ts_ns,
            conn: event.conn,
            client: event.src,
            server: event.dst,
            framing: framing.clone(),
            header: header.clone(),
            request: msg.clone(),
            answer: None,
        });
    }

    fn answer(&mut self, event: &Event, msg: &Message) {
        let key = match_key(event.conn, msg.mti(), msg, &self.options.key_fields);
        let (number, drained) = match self.waiting.get_mut(&key) {
            Some(numbers) => (numbers.pop_front(), numbers.is_empty()),
            None => (None, false),
        };
        if drained {
            self.waiting.remove(&key);
        }
        let Some(number) = number else {
            self.stats.answers_without_request += 1;
            return;
        };
        self.stats.answered_in_capture += 1;
        let index = (number - self.front_number) as usize;
        self.pending[index].answer = Some(CapturedAnswer {
            packet: event.packet,
            ts_ns: event.ts_ns,
            message: msg.clone(),
        });
    }

    fn release(&mut self, now_ns: i64, out: &mut Vec<Exchange>) {
        while let Some(front) = self.pending.front() {
            let ready = front.answer.is_some()
                || now_ns.saturating_sub(front.ts_ns) > self.options.answer_window_ns
                || self.pending.len() > self.options.max_pending;
            if !ready {
                break;
            }
            let exchange = self.pending.pop_front().expect("front exists");
            self.front_number += 1;
            if exchange.answer.is_none() {
                self.forget(&exchange);
            }
            out.push(exchange);
        }
    }

    /// An unanswered request released: its answer, if it comes later, is
    /// one without request.
    fn forget(&mut self, exchange: &Exchange) {
        let answer_mti = response_mti(&request_class(exchange.request.mti()));
        let key = match_key(
            exchange.conn,
            &answer_mti,
            &exchange.request,
            &self.options.key_fields,
        );
        if let Some(numbers) = self.waiting.get_mut(&key) {
            numbers.retain(|&n| n != exchange.number);
            if numbers.is_empty() {
                self.waiting.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::message;

    const CLIENT: &str = "10.0.0.1:40000";
    const SERVER: &str = "10.0.0.2:5000";

    fn event(ts_ms: i64, from_client: bool, syn_seen: bool, msg: Message) -> Event {
        let (client, server) = (CLIENT.parse().unwrap(), SERVER.parse().unwrap());
        let (src, dst) = if from_client {
            (client, server)
        } else {
            (server, client)
        };
        Event {
            packet: ts_ms as u64,
            ts_ns: ts_ms * 1_000_000,
            conn: 1,
            src,
            dst,
            from_client: syn_seen.then_some(from_client),
            kind: EventKind::Message {
                offset: 0,
                framing: FramingConfig::default(),
                header: Bytes::new(),
                message: msg,
            },
        }
    }

    fn request(mti: &[u8; 4], stan: &str) -> Message {
        message(mti, &[(7, "1202040000"), (11, stan), (32, "48020000")])
    }

    fn answer(mti: &[u8; 4], stan: &str) -> Message {
        message(
            mti,
            &[(7, "1202040000"), (11, stan), (32, "48020000"), (39, "00")],
        )
    }

    fn run(events: &[Event], options: ScriptOptions) -> (Vec<Exchange>, ScriptStats) {
        let mut builder = ScriptBuilder::new(options);
        let mut out = Vec::new();
        for e in events {
            builder.event(e, &mut out);
        }
        builder.finish(&mut out);
        (out, builder.stats().clone())
    }

    #[test]
    fn pipelined_requests_get_their_own_answers_in_request_order() {
        let events = [
            event(1, true, true, request(b"0100", "000001")),
            event(2, true, true, request(b"0200", "000002")),
            event(3, false, true, answer(b"0210", "000002")),
            event(4, false, true, answer(b"0110", "000001")),
        ];
        let (script, stats) = run(&events, ScriptOptions::default());
        let got: Vec<(u64, &str, Option<&str>)> = script
            .iter()
            .map(|e| {
                (
                    e.number,
                    e.request.get_str(11).unwrap(),
                    e.answer.as_ref().map(|a| a.message.mti_str()),
                )
            })
            .collect();
        assert_eq!(
            got,
            [(1, "000001", Some("0110")), (2, "000002", Some("0210"))]
        );
        assert_eq!(script[0].answer.as_ref().unwrap().ts_ns, 4_000_000);
        assert_eq!(stats.answered_in_capture, 2);
    }

    #[test]
    fn the_servers_requests_and_the_clients_answers_to_them_are_not_replayed() {
        // The SYN was not captured: the client is learnt from the first
        // message, here the server's answer to it.
        let events = [
            event(1, false, false, answer(b"0810", "000001")),
            event(2, false, false, request(b"0800", "000009")),
            event(3, true, false, answer(b"0810", "000009")),
            event(4, true, false, request(b"0100", "000002")),
            event(5, false, false, answer(b"0110", "000002")),
        ];
        let (script, stats) = run(&events, ScriptOptions::default());
        assert_eq!(script.len(), 1);
        assert_eq!(script[0].request.mti_str(), "0100");
        assert_eq!(script[0].client, CLIENT.parse().unwrap());
        assert_eq!(stats.server_requests, 1);
        assert_eq!(stats.client_responses, 1);
        assert_eq!(stats.answers_without_request, 1);
    }

    #[test]
    fn an_unanswered_request_is_released_when_the_capture_moves_on() {
        let options = ScriptOptions {
            answer_window_ns: 1_000_000_000,
            ..ScriptOptions::default()
        };
        let mut builder = ScriptBuilder::new(options);
        let mut out = Vec::new();
        builder.event(&event(0, true, true, request(b"0100", "000001")), &mut out);
        builder.event(&event(10, true, true, request(b"0100", "000002")), &mut out);
        builder.event(&event(20, false, true, answer(b"0110", "000002")), &mut out);
        assert!(out.is_empty(), "the first holds back the second");
        builder.event(
            &event(1_500, true, true, request(b"0100", "000003")),
            &mut out,
        );
        let released: Vec<_> = out.iter().map(|e| e.number).collect();
        assert_eq!(released, [1, 2]);
        assert!(out[0].answer.is_none() && out[1].answer.is_some());
        // Its answer, later than the window, is one without request.
        builder.event(
            &event(1_600, false, true, answer(b"0110", "000001")),
            &mut out,
        );
        assert_eq!(builder.stats().answers_without_request, 1);
    }

    #[test]
    fn at_most_max_pending_requests_are_held() {
        let options = ScriptOptions {
            max_pending: 3,
            ..ScriptOptions::default()
        };
        let mut builder = ScriptBuilder::new(options);
        let mut out = Vec::new();
        for i in 0..10 {
            let stan = format!("{i:06}");
            builder.event(&event(i, true, true, request(b"0100", &stan)), &mut out);
            assert!(builder.pending.len() <= 3);
        }
        assert_eq!(out.len(), 7);
        builder.finish(&mut out);
        assert_eq!(out.len(), 10);
        assert!(out.windows(2).all(|w| w[0].number + 1 == w[1].number));
    }
}

//! One connection to a bank host: connect with backoff, sign on, then carry
//! many requests in flight until the connection fails or the switch stops.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use foldhash::HashMap;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::{timeout, Instant};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use iso8583::codec::{parse, Message};
use iso8583::fields::{format_transmission, num};
use iso8583::framing::{CupsHeader, Frame, FrameCodec, HeaderKind};
use iso8583::mti::{is_response, response_mti};
use iso8583::response::ResponseCode;

use super::BankConfig;
use super::{LinkContext, LinkError, MatchKey};
use crate::store::Direction;

/// Largest backoff between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Deadline for opening a TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Frames queued for the writer of one connection.
const WRITE_QUEUE: usize = 4096;

/// The fields a response must carry back unchanged from its request: the
/// card, the amount, the currency and the original named. A response whose
/// key matches but which answers for another card or amount is not this
/// request's answer.
const ECHOED: [u16; 4] = [num::PAN, num::AMOUNT, num::CURRENCY, num::ORIGINAL_DATA];

/// A request waiting for its response.
struct Waiter {
    tx: oneshot::Sender<Answer>,
    /// The request's values of [`ECHOED`].
    echo: [Option<Bytes>; 4],
}

impl Waiter {
    /// The first echoed field the response carries with another value than
    /// the request (a field the response leaves out is not compared).
    fn mismatch(&self, response: &Message) -> Option<u16> {
        ECHOED
            .iter()
            .zip(&self.echo)
            .find(|(n, sent)| match (sent, response.get(**n)) {
                (Some(sent), Some(got)) => sent != got,
                _ => false,
            })
            .map(|(n, _)| *n)
    }
}

/// The requests waiting for their responses. foldhash rather than SipHash:
/// only the switch inserts keys here (its own requests, its own STANs), a
/// bank's responses only look them up, so no peer can choose colliding keys.
type Pending = Mutex<HashMap<MatchKey, Waiter>>;

/// What a waiter is given: the response and its bytes, or why the response
/// that came cannot be taken.
type Answer = Result<(Message, Bytes), LinkError>;

/// How requests reach a signed-on connection.
#[derive(Clone)]
pub(super) struct Sender {
    frames: mpsc::Sender<Bytes>,
    pending: Arc<Pending>,
    in_flight: Arc<Semaphore>,
    /// Keys of requests that timed out, newest last, so that their responses,
    /// should they still come, are recognised as late (68) and ignored.
    expired: Arc<Mutex<std::collections::VecDeque<MatchKey>>>,
}

/// How many timed-out keys a connection remembers.
const EXPIRED_KEYS: usize = 4096;

pub(super) struct Connection {
    name: String,
    index: usize,
    config: BankConfig,
    context: Arc<LinkContext>,
    /// The session's sender once it is signed on: requests are routed here.
    ready: Mutex<Option<Sender>>,
    /// The session's sender while connected, signed on or not: what an
    /// operator's sign-off and sign-on are sent through.
    connected: Mutex<Option<Sender>>,
    /// Set while an operator holds the link signed off (shared by the
    /// link's connections): a new session does not sign on.
    held: Arc<AtomicBool>,
    metrics: crate::metrics::LinkMetrics,
    /// Who the journal says this connection's messages went to or came
    /// from ("bank 48020000"), made once rather than for every message.
    journal_peer: String,
}

/// Counts a request in flight on its connection's gauge while it lives.
struct InFlight<'a>(&'a prometheus_client::metrics::gauge::Gauge);

impl<'a> InFlight<'a> {
    fn new(gauge: &'a prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        InFlight(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Connection {
    pub(super) fn new(
        index: usize,
        config: &BankConfig,
        context: Arc<LinkContext>,
        held: Arc<AtomicBool>,
    ) -> Self {
        Connection {
            name: format!("{}#{index}", config.name),
            index,
            config: config.clone(),
            context,
            ready: Mutex::new(None),
            connected: Mutex::new(None),
            held,
            metrics: crate::metrics::metrics().link(&config.institution_id, index),
            journal_peer: format!("bank {}", config.institution_id),
        }
    }

    pub(super) fn is_ready(&self) -> bool {
        self.ready.lock().expect("ready lock").is_some()
    }

    pub(super) fn sender(&self) -> Option<Sender> {
        self.ready.lock().expect("ready lock").clone()
    }

    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// Makes `sender` the one requests are routed to, unless an operator
    /// holds the link signed off (checked under the lock a sign-off takes,
    /// so a sign-on that races a sign-off never outlives it).
    fn signed_on(&self, sender: Sender) -> bool {
        let mut ready = self.ready.lock().expect("ready lock");
        if self.held.load(Ordering::Acquire) {
            return false;
        }
        *ready = Some(sender);
        self.metrics.signed_on.set(1);
        true
    }

    /// An operator's sign-off: no new request is routed here (those in
    /// flight get their answers), and the bank is told (0800, F70 002) when
    /// the connection is up. False when it was not connected.
    pub(super) async fn sign_off(&self) -> Result<bool, LinkError> {
        *self.ready.lock().expect("ready lock") = None;
        self.metrics.signed_on.set(0);
        let Some(sender) = self.connected.lock().expect("connected lock").clone() else {
            return Ok(false);
        };
        self.network_exchange(sender, "002").await.map(|()| true)
    }

    /// An operator's sign-on (0800, F70 001) of a connected session; False
    /// when it was not connected (it signs on by itself once it is).
    pub(super) async fn sign_on(&self) -> Result<bool, LinkError> {
        let Some(sender) = self.connected.lock().expect("connected lock").clone() else {
            return Ok(false);
        };
        self.network_exchange(sender.clone(), "001").await?;
        if self.signed_on(sender) {
            Ok(true)
        } else {
            Err(LinkError::Invalid("signed off again meanwhile".into()))
        }
    }

    fn journal(&self, direction: Direction, msg: &Message, raw: Bytes, note: Option<String>) {
        let counted = match direction {
            Direction::In => crate::metrics::Direction::In,
            Direction::Out => crate::metrics::Direction::Out,
        };
        crate::metrics::metrics().message(
            counted,
            crate::metrics::Side::Bank,
            msg,
            self.metrics.bank,
        );
        let at = self.context.clock.now_ms();
        self.context
            .store
            .journal_message(direction, &self.journal_peer, msg, raw, at, note);
    }

    /// Sends one request on this connection and waits for its response.
    pub(super) async fn exchange(
        &self,
        sender: Sender,
        key: MatchKey,
        msg: &Message,
        body: Bytes,
    ) -> Result<(Message, Bytes), LinkError> {
        // At most max_in_flight requests wait for this bank's answers; the
        // others wait for a slot, but not past the deadline.
        let _permit = match timeout(self.config.timeout, sender.in_flight.acquire()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(LinkError::Unavailable(self.name.clone())),
            Err(_) => {
                return Err(LinkError::Busy(
                    self.name.clone(),
                    self.config.max_in_flight,
                ))
            }
        };
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = sender.pending.lock().expect("pending lock");
            if pending.contains_key(&key) {
                return Err(LinkError::Invalid(format!(
                    "a request with the same key is already in flight to {}",
                    self.name
                )));
            }
            let echo = ECHOED.map(|n| msg.get_bytes(n));
            pending.insert(key, Waiter { tx, echo });
        }
        let _counted = InFlight::new(&self.metrics.in_flight);
        let sent = Instant::now();
        self.journal(Direction::Out, msg, body.clone(), None);
        if sender.frames.send(body).await.is_err() {
            sender.pending.lock().expect("pending lock").remove(&key);
            return Err(LinkError::Unavailable(self.name.clone()));
        }
        match timeout(self.config.timeout, rx).await {
            Ok(Ok(Ok((response, raw)))) => {
                self.metrics.answered(msg, sent.elapsed().as_secs_f64());
                self.journal(Direction::In, &response, raw.clone(), None);
                Ok((response, raw))
            }
            // Journaled by the reader, with its reason.
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(LinkError::ConnectionLost(self.name.clone())),
            Err(_) => {
                self.metrics.timeouts.inc();
                sender.pending.lock().expect("pending lock").remove(&key);
                let mut expired = sender.expired.lock().expect("expired lock");
                if expired.len() == EXPIRED_KEYS {
                    expired.pop_front();
                }
                expired.push_back(key);
                drop(expired);
                Err(LinkError::Timeout(
                    self.name.clone(),
                    self.config.timeout.as_millis(),
                ))
            }
        }
    }

    /// A network management request (sign-on 001, echo 301) from the switch.
    async fn network_request(&self, code: &str) -> Result<Message, LinkError> {
        let stan = self
            .context
            .stans
            .next()
            .await
            .map_err(|e| LinkError::Invalid(e.to_string()))?;
        let mut msg = Message::new(*b"0800");
        msg.set(
            num::TRANSMISSION,
            format_transmission(self.context.clock.now()),
        )
        .set(num::STAN, stan.to_vec())
        .set(num::FORWARDER, self.context.switch_id.clone())
        .set(num::NETWORK_CODE, code.to_string())
        .set(num::RECEIVER, self.config.institution_id.clone());
        Ok(msg)
    }

    async fn network_exchange(&self, sender: Sender, code: &str) -> Result<(), LinkError> {
        let msg = self.network_request(code).await?;
        let body = self.config.wire_form(&self.context.spec, &msg)?;
        let key = MatchKey::of(&msg, response_mti(msg.mti()))
            .ok_or_else(|| LinkError::Invalid("0800 without key".into()))?;
        let (response, _) = self.exchange(sender, key, &msg, body).await?;
        match ResponseCode::of(&response) {
            Some(ResponseCode::APPROVED) => Ok(()),
            _ => Err(LinkError::Invalid(format!(
                "network management {code} answered {}",
                response
                    .get_str(num::RESPONSE_CODE)
                    .unwrap_or("without F39")
            ))),
        }
    }

    /// Keeps this connection up until `shutdown`.
    pub(super) async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        let mut attempt = self.index;
        let mut connected_before = false;
        while !shutdown.is_cancelled() {
            let host = self.config.hosts[attempt % self.config.hosts.len()];
            attempt += 1;
            match timeout(CONNECT_TIMEOUT, TcpStream::connect(host)).await {
                Ok(Ok(stream)) => {
                    info!(link = %self.name, %host, "connected");
                    if std::mem::replace(&mut connected_before, true) {
                        self.metrics.reconnects.inc();
                    }
                    // A failed TLS handshake keeps backing off, like a failed connect.
                    let (carried, reason) = self.session(stream, host, &shutdown).await;
                    if carried {
                        backoff = Duration::from_millis(100);
                    }
                    self.metrics.up.set(0);
                    self.metrics.signed_on.set(0);
                    info!(link = %self.name, %host, %reason, "disconnected");
                }
                Ok(Err(e)) => debug!(link = %self.name, %host, error = %e, "connect failed"),
                Err(_) => debug!(link = %self.name, %host, "connect timed out"),
            }
            *self.ready.lock().expect("ready lock") = None;
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.cancelled() => break,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn header(&self) -> Bytes {
        match self.config.framing.header {
            HeaderKind::None => Bytes::new(),
            HeaderKind::Fixed(n) => Bytes::from(vec![0u8; n]),
            HeaderKind::Cups => {
                CupsHeader::new(&self.config.institution_id, &self.context.switch_id)
                    .map(|h| Bytes::copy_from_slice(&h.build()))
                    .unwrap_or_default()
            }
        }
    }

    /// A connected socket: its TLS handshake first when the bank has TLS
    /// (within the connect timeout), then the session. False when the
    /// handshake failed; and why the connection ended.
    async fn session(
        self: &Arc<Self>,
        stream: TcpStream,
        host: std::net::SocketAddr,
        shutdown: &CancellationToken,
    ) -> (bool, String) {
        if let Err(e) = crate::socket::configure(&stream) {
            warn!(link = %self.name, error = %e, "cannot set the connection's TCP options");
        }
        // The switch is the client of a bank link.
        let tap = match (
            &self.context.capture,
            stream.local_addr(),
            stream.peer_addr(),
        ) {
            (Some(recorder), Ok(local), Ok(peer)) => {
                Some(recorder.tap(local, peer, &self.config.framing))
            }
            _ => None,
        };
        let Some(tls) = &self.config.tls else {
            return (true, self.carry(stream, tap, shutdown).await);
        };
        let handshake = tls.connector().connect(tls.server_name(host), stream);
        let stream = tokio::select! {
            r = timeout(CONNECT_TIMEOUT, handshake) => match r {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    warn!(link = %self.name, %host, error = %e, "TLS handshake with the bank failed");
                    return (false, format!("TLS handshake failed: {e}"));
                }
                Err(_) => {
                    warn!(link = %self.name, %host, "TLS handshake with the bank timed out");
                    return (false, "TLS handshake timed out".into());
                }
            },
            _ = shutdown.cancelled() => return (false, "shutting down".into()),
        };
        (true, self.carry(stream, tap, shutdown).await)
    }

    /// Signs on, then carries requests until the connection fails or the
    /// switch stops, on any stream (TCP or TLS); returns why it ended.
    async fn carry<S>(
        self: &Arc<Self>,
        stream: S,
        tap: Option<capture::record::Tap>,
        shutdown: &CancellationToken,
    ) -> String
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut read_tap = tap
            .clone()
            .map(|t| (t, FrameCodec::new(self.config.framing.clone())));
        let mut write_tap = tap.map(|t| (t, FrameCodec::new(self.config.framing.clone())));
        self.metrics.up.set(1);
        let framed = Framed::new(stream, FrameCodec::new(self.config.framing.clone()));
        let (mut sink, mut source) = framed.split();
        let (frames_tx, mut frames_rx) = mpsc::channel::<Bytes>(WRITE_QUEUE);
        let sender = Sender {
            frames: frames_tx,
            pending: Arc::new(Mutex::new(HashMap::default())),
            in_flight: Arc::new(Semaphore::new(self.config.max_in_flight)),
            expired: Arc::new(Mutex::new(std::collections::VecDeque::new())),
        };
        let header = self.header();
        let writer_name = self.name.clone();
        let writer = tokio::spawn(async move {
            let mut record = |frame: &Frame| {
                if let Some((tap, codec)) = &mut write_tap {
                    if let Some(wire) = super::wire_bytes(codec, frame) {
                        tap.from_client(&wire);
                    }
                }
            };
            let mut bodies = Vec::new();
            while let Some(first) = frames_rx.recv().await {
                super::gather(first, &mut frames_rx, &mut bodies).await;
                let mut result = Ok(());
                for body in bodies.drain(..) {
                    let frame = Frame::Message {
                        header: header.clone(),
                        body,
                    };
                    record(&frame);
                    result = sink.feed(frame).await;
                    if result.is_err() {
                        break;
                    }
                }
                if let Err(e) = result.and(sink.flush().await) {
                    warn!(link = %writer_name, error = %e, "write failed");
                    break;
                }
            }
        });

        // Sign-on and echoes run beside the reader, which delivers their responses.
        let (failed_tx, mut failed_rx) = mpsc::channel::<String>(4);
        *self.connected.lock().expect("connected lock") = Some(sender.clone());
        if self.held.load(Ordering::Acquire) {
            info!(link = %self.name, "signed off by an operator: not signing on");
        } else {
            let me = self.clone();
            let sender = sender.clone();
            let failed = failed_tx.clone();
            tokio::spawn(async move {
                match me.network_exchange(sender.clone(), "001").await {
                    Ok(()) => {
                        if me.signed_on(sender) {
                            info!(link = %me.name, "signed on");
                        } else {
                            info!(link = %me.name, "signed on, but signed off by an operator meanwhile");
                        }
                    }
                    Err(e) => {
                        let _ = failed.send(format!("sign-on failed: {e}")).await;
                    }
                }
            });
        }

        let mut last_received = Instant::now();
        let mut echo_tick = tokio::time::interval(self.config.echo_interval);
        echo_tick.tick().await;
        let reason = loop {
            tokio::select! {
                frame = source.next() => {
                if let (Some((tap, codec)), Some(Ok(frame))) = (&mut read_tap, &frame) {
                    if let Some(wire) = super::wire_bytes(codec, frame) {
                        tap.from_server(&wire);
                    }
                }
                match frame {
                    Some(Ok(Frame::KeepAlive)) => last_received = Instant::now(),
                    Some(Ok(Frame::Message { body, .. })) => {
                        last_received = Instant::now();
                        // Each frame is journaled: a bank flooding the link
                        // waits for the journal rather than growing it.
                        self.context.store.journal_room().await;
                        self.dispatch(&sender, body);
                    }
                    Some(Err(e)) => {
                        warn!(link = %self.name, error = %e, "bad frame from bank; reconnecting");
                        break format!("bad frame: {e}");
                    }
                    None => break "closed by the bank".to_string(),
                }},
                reason = failed_rx.recv() => {
                    let reason = reason.unwrap_or_else(|| "?".into());
                    warn!(link = %self.name, %reason, "closing connection");
                    break reason;
                }
                _ = echo_tick.tick() => {
                    if last_received.elapsed() >= self.config.echo_interval && self.is_ready() {
                        let me = self.clone();
                        let sender = sender.clone();
                        let failed = failed_tx.clone();
                        tokio::spawn(async move {
                            if let Err(e) = me.network_exchange(sender, "301").await {
                                let _ = failed.send(format!("echo failed: {e}")).await;
                            }
                        });
                    }
                }
                _ = shutdown.cancelled() => break "shutting down".to_string(),
            }
        };
        *self.ready.lock().expect("ready lock") = None;
        *self.connected.lock().expect("connected lock") = None;
        self.metrics.signed_on.set(0);
        // Waiters see their sender dropped: ConnectionLost.
        sender.pending.lock().expect("pending lock").clear();
        writer.abort();
        reason
    }

    /// Routes one frame from the bank: a response to its waiter, a request
    /// (echo from the bank) to an answer.
    fn dispatch(&self, sender: &Sender, body: Bytes) {
        let msg = match parse(&self.context.spec, body.clone()) {
            Ok(msg) => msg,
            Err(e) => {
                warn!(link = %self.name, error = %e, "undecodable message from bank");
                return;
            }
        };
        let refused = match &self.config.mac {
            Some(mac) => mac.check(&self.context.spec, &body, &msg).err(),
            None => None,
        };
        if let Some(error) = refused {
            self.refuse_mac(sender, msg, body, error);
            return;
        }
        if is_response(msg.mti()) {
            // Taken only when it answers for what was sent: a response for
            // another card or amount leaves the request waiting, to time out
            // and be reversed like any unanswered one.
            let mut mismatch = None;
            let waiter = MatchKey::of(&msg, *msg.mti()).and_then(|key| {
                let mut pending = sender.pending.lock().expect("pending lock");
                mismatch = pending.get(&key).and_then(|w| w.mismatch(&msg));
                match mismatch {
                    Some(_) => None,
                    None => pending.remove(&key),
                }
            });
            if let Some(field) = mismatch {
                let note = format!(
                    "mismatched response: F{field} differs from its request's; not taken as its answer"
                );
                warn!(
                    link = %self.name,
                    mti = msg.mti_str(),
                    stan = msg.get_str(num::STAN).unwrap_or("-"),
                    field,
                    "response answers for another request's values"
                );
                self.journal(Direction::In, &msg, body, Some(note));
                return;
            }
            match waiter {
                Some(w) => {
                    if let Err(Ok((msg, raw))) = w.tx.send(Ok((msg, body))) {
                        // The waiter gave up between lookup and send.
                        self.journal(Direction::In, &msg, raw, Some("unmatched response".into()));
                    }
                }
                None => {
                    let late = MatchKey::of(&msg, *msg.mti()).is_some_and(|key| {
                        sender.expired.lock().expect("expired lock").contains(&key)
                    });
                    // A late answer never undoes what the timeout decided (a
                    // reversal is already queued): it is recorded, not acted on.
                    if late {
                        self.metrics.late_answers.inc();
                    }
                    let note = if late {
                        "late response (68): its request had timed out; ignored"
                    } else {
                        "unmatched response"
                    };
                    warn!(
                        link = %self.name,
                        mti = msg.mti_str(),
                        stan = msg.get_str(num::STAN).unwrap_or("-"),
                        note,
                        "response matches no request in flight"
                    );
                    self.journal(Direction::In, &msg, body, Some(note.into()));
                }
            }
            return;
        }
        self.journal(Direction::In, &msg, body, None);
        if msg.mti() == b"0800" {
            let code = if msg.get_str(num::NETWORK_CODE) == Some(crate::mac::KEY_CHANGE) {
                self.change_key(&msg)
            } else {
                ResponseCode::APPROVED
            };
            self.answer_network(sender, &msg, code);
        } else {
            warn!(link = %self.name, mti = msg.mti_str(), "unexpected request from bank ignored");
        }
    }

    /// The answer to a bank's network management request, built as this
    /// link builds (signed when it has MACs), journaled and queued.
    fn answer_network(&self, sender: &Sender, request: &Message, code: ResponseCode) {
        let mut answer = Message::new(response_mti(request.mti()));
        answer.echo(request, &crate::dialect::NETWORK_ECHOED);
        answer.set(num::RESPONSE_CODE, code);
        match self.config.wire_form(&self.context.spec, &answer) {
            Ok(raw) => {
                self.journal(Direction::Out, &answer, raw.clone(), None);
                let _ = sender.frames.try_send(raw);
            }
            Err(e) => warn!(link = %self.name, error = %e, "cannot build the answer to the bank"),
        }
    }

    /// A key change from the bank (0800, F70 161): the new working key is
    /// decrypted under the KEK and checked by its KCV, then put in force;
    /// the answer is signed with it. Refused (63) when it does not check,
    /// and the key in force stays.
    fn change_key(&self, request: &Message) -> ResponseCode {
        let Some(mac) = &self.config.mac else {
            warn!(link = %self.name, "key change from a bank whose link has no MACs: refused");
            return ResponseCode::INVALID_TRANSACTION;
        };
        match mac.receive_key_change(request) {
            Ok(key) => {
                let old = mac.kcv();
                let new = key.kcv_hex();
                mac.install(key);
                info!(
                    link = %self.name,
                    old_kcv = %old,
                    new_kcv = %new,
                    grace_s = mac.grace().as_secs(),
                    "MAC working key changed by the bank"
                );
                ResponseCode::APPROVED
            }
            Err(e) => {
                warn!(link = %self.name, error = %e, kcv = %mac.kcv(), "key change refused; the key in force stays");
                ResponseCode::SECURITY_VIOLATION
            }
        }
    }

    /// A message from the bank whose MAC is missing or wrong: journaled with
    /// the reason; a response is not taken as its request's answer (the
    /// request fails as one the bank may have acted on), a network request
    /// is answered A0, any other request ignored.
    fn refuse_mac(
        &self,
        sender: &Sender,
        msg: Message,
        body: Bytes,
        error: iso8583::mac::MacError,
    ) {
        let note = format!("MAC refused (A0): {error}");
        warn!(
            link = %self.name,
            mti = msg.mti_str(),
            stan = msg.get_str(num::STAN).unwrap_or("-"),
            error = %error,
            "MAC refused"
        );
        self.journal(Direction::In, &msg, body, Some(note));
        if is_response(msg.mti()) {
            let waiter = MatchKey::of(&msg, *msg.mti())
                .and_then(|key| sender.pending.lock().expect("pending lock").remove(&key));
            if let Some(w) = waiter {
                let _ = w.tx.send(Err(LinkError::MacFailure(
                    self.name.clone(),
                    error.to_string(),
                )));
            }
        } else if msg.mti() == b"0800" {
            self.answer_network(sender, &msg, ResponseCode::MAC_FAILURE);
        }
    }
}

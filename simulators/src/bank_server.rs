//! The bank simulator on TCP: the ISO 8583 port ([`serve_bank`]), a line-based
//! admin port ([`serve_admin`]), and [`spawn_bank`] (or
//! [`spawn_bank_with_faults`]) for tests and the demo.
//!
//! Each connection is a `Framed<TcpStream, FrameCodec>` split in two: a reader
//! (frames → [`Bank::handle`] → responses) and one writer task fed through a
//! bounded queue, so many requests can be in flight on
//! a connection and a slow peer slows its own reader down, nobody else. The bank's
//! mutex is held for the `handle` call only: parsing, building and I/O happen
//! outside it.
//!
//! The reader also injects the [`Faults`] of a shared [`FaultControl`]: it rolls
//! the connection's [`Dice`] for every request, applies the request (or not) when
//! it reads it, in order, and hands an answer that must wait to a task of its
//! own, so that a delay never holds up the requests behind it.
//!
//! With a MAC key ([`LinkOptions::mac`]), every request whose message may
//! carry field 128 in the dialect must carry a valid one: a missing or wrong
//! MAC is answered with [`ResponseCode::MAC_FAILURE`] (A0), journaled as a decline, and
//! changes nothing; every answer that may carry field 128 is signed. With a
//! key-encrypting key and [`LinkOptions::key_change_every`], the bank also
//! sends the switch a new working key now and then (0800, F70 161, the key
//! under the KEK in F48) and puts it in force once the switch approves it.
//!
//! With a capture [`Recorder`], every frame a connection reads and sends is
//! also recorded (see [`capture::record`]): the connection only queues a
//! packet for the recorder's writer thread, and a packet that finds the queue
//! full is dropped and counted, never waited for.
//!
//! Card numbers are logged masked.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use capture::record::{Recorder, Tap};
use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::codec::{Encoder, Framed};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use iso8583::codec::{build_bytes, parse, Message};
use iso8583::fields::{format_transmission, num};
use iso8583::framing::{CupsHeader, Frame, FrameCodec, FramingConfig, FramingError, HeaderKind};
use iso8583::mac::{self, MacKey};
use iso8583::mask::Masked;
use iso8583::response::ResponseCode;
use iso8583::spec::Spec;
use iso8583::validate::validate;

use switchboard::mac::{LinkMac, KEY_CHANGE, KEY_CHANGE_FIELD};

use crate::bank::{reject_undecodable, Bank, Ledger};
use crate::faults::{self, Dice, Fate, FaultControl, Faults};

/// Connections served at once; further ones wait to be accepted.
const MAX_CONNECTIONS: usize = 256;
/// Responses queued for one connection's writer before its reader waits.
const WRITE_QUEUE: usize = 1024;
/// Responses written with one system call at most.
const WRITE_BATCH: usize = 64;
/// Answers waiting out a delay on one connection before its reader waits too.
const MAX_DELAYED: usize = WRITE_QUEUE;
/// The longest admin command line (`faults SPEC` lines included).
const MAX_ADMIN_LINE: u64 = 1024;
/// How long a closing connection's writer may take to flush.
const WRITER_GRACE: Duration = Duration::from_secs(1);
/// How long a key change may wait for room in a connection's write queue.
const KEY_CHANGE_SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Locks the bank, recovering from a poisoned lock: `handle` does not panic, and
/// if it ever did, the books are still the best we have.
fn lock(bank: &Mutex<Bank>) -> MutexGuard<'_, Bank> {
    bank.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What a bank's link adds around its books.
#[derive(Clone, Default)]
pub struct LinkOptions {
    /// Record every frame read and sent.
    pub capture: Option<Recorder>,
    /// Require a valid field 128 on requests that may carry one, and sign
    /// every answer that may.
    pub mac: Option<Arc<LinkMac>>,
    /// Send the switch a new working key under the KEK this often (0800, F70
    /// 161); it is put in force when the switch approves it. Needs `mac`
    /// with a KEK.
    pub key_change_every: Option<Duration>,
}

/// The bank's side of working-key changes: a new key sent over one live
/// connection every period, put in force when the switch's 0810 approves
/// it and verifies under it.
struct KeyChanger {
    mac: Arc<LinkMac>,
    spec: Arc<Spec>,
    institution: String,
    /// The STAN of the key change in flight and the key it carries.
    pending: Mutex<Option<(String, MacKey)>>,
    /// The writer queues of the connections, to send the next change on.
    writers: Mutex<Vec<mpsc::Sender<Frame>>>,
    stan: std::sync::atomic::AtomicU32,
}

impl KeyChanger {
    /// Sends a key change on the first connection still open.
    async fn send_one(&self, framing: &FramingConfig) {
        let tx = {
            let mut writers = self.writers.lock().unwrap_or_else(|p| p.into_inner());
            writers.retain(|tx| !tx.is_closed());
            writers.first().cloned()
        };
        let Some(tx) = tx else {
            return;
        };
        let change = match self.mac.new_key_change() {
            Ok(change) => change,
            Err(e) => {
                warn!(error = %e, "bank: cannot make a key change");
                return;
            }
        };
        let n = self.stan.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 999_999 + 1;
        let stan = format!("{n:06}");
        let mut msg = Message::new(*b"0800");
        msg.set(
            num::TRANSMISSION,
            format_transmission(chrono::Utc::now().naive_utc()),
        )
        .set(num::STAN, stan.clone())
        .set(num::ACQUIRER, self.institution.clone())
        .set(num::NETWORK_CODE, KEY_CHANGE)
        .set(KEY_CHANGE_FIELD, change.to_text().to_string());
        let body = match self.mac.build(&self.spec, &msg) {
            Ok(body) => body,
            Err(e) => {
                warn!(error = %e, "bank: cannot build a key change");
                return;
            }
        };
        let header = match framing.header {
            HeaderKind::Fixed(n) => Bytes::from(vec![0u8; n]),
            _ => Bytes::new(),
        };
        info!(stan, new_kcv = %change.key.kcv_hex(), "bank: key change sent");
        // The switch signs with the new key as soon as it has taken it,
        // possibly before its answer gets here: accept it from now on.
        self.mac.expect(change.key.clone());
        *self.pending.lock().unwrap_or_else(|p| p.into_inner()) = Some((stan.clone(), change.key));
        // A connection whose writer is stuck (a peer that stops reading) must
        // not hold the changer, and with it the bank's shutdown, forever.
        let sent = tokio::time::timeout(
            KEY_CHANGE_SEND_TIMEOUT,
            tx.send(Frame::Message { header, body }),
        )
        .await;
        if sent.is_err() {
            warn!(
                stan,
                "bank: key change not sent: the connection's writer stayed full"
            );
        }
    }

    /// The switch's answer to a key change: the new key is put in force when
    /// it approved and signed the answer with it.
    fn answered(&self, body: &[u8], answer: &Message) {
        let Some((stan, key)) = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return;
        };
        if answer.get_str(num::STAN) != Some(stan.as_str()) {
            warn!(
                stan,
                "bank: an answer to another key change; the key in force stays"
            );
            return;
        }
        let code = answer.get_str(num::RESPONSE_CODE).unwrap_or("none");
        let verified =
            mac::verify_received_with(&self.spec, body, answer, &key, self.mac.coverage());
        match (code, verified) {
            ("00", Ok(())) => {
                let old = self.mac.kcv();
                self.mac.install(key);
                info!(old_kcv = %old, new_kcv = %self.mac.kcv(), "bank: MAC working key changed");
            }
            (code, verified) => {
                self.mac.forget_pending();
                warn!(
                    code,
                    mac = ?verified.err(),
                    kcv = %self.mac.kcv(),
                    "bank: key change refused by the switch; the key in force stays"
                )
            }
        }
    }
}

/// Serves the bank's ISO 8583 port until `shutdown` is cancelled, with the
/// faults `faults` holds at each request (see [`crate::faults`]).
pub async fn serve_bank(
    listener: TcpListener,
    framing: FramingConfig,
    bank: Arc<Mutex<Bank>>,
    faults: Arc<FaultControl>,
    shutdown: CancellationToken,
) {
    serve_bank_with(
        listener,
        framing,
        bank,
        faults,
        LinkOptions::default(),
        shutdown,
    )
    .await
}

/// [`serve_bank`] with a capture and MACs as `options` say.
pub async fn serve_bank_with(
    listener: TcpListener,
    framing: FramingConfig,
    bank: Arc<Mutex<Bank>>,
    faults: Arc<FaultControl>,
    options: LinkOptions,
    shutdown: CancellationToken,
) {
    let LinkOptions {
        capture,
        mac,
        key_change_every,
    } = options;
    let local = listener.local_addr().ok();
    let spec = lock(&bank).spec().clone();
    let changer = match (&mac, key_change_every) {
        (Some(mac), Some(every)) if mac.has_kek() => {
            let changer = Arc::new(KeyChanger {
                mac: mac.clone(),
                spec: spec.clone(),
                institution: lock(&bank).institution().as_str().to_string(),
                pending: Mutex::new(None),
                writers: Mutex::new(Vec::new()),
                stan: std::sync::atomic::AtomicU32::new(0),
            });
            let (task_changer, framing, shutdown) =
                (changer.clone(), framing.clone(), shutdown.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tick.tick() => task_changer.send_one(&framing).await,
                    }
                }
            });
            Some(changer)
        }
        _ => None,
    };
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    // Each connection's draws are seeded with its index: the same traffic
    // meets the same faults.
    let mut accepted: u64 = 0;
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = limit.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off, don't spin.
                    warn!(error = %e, "bank: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        info!(%peer, connection = accepted, "bank: connection accepted");
        let connection = Connection {
            framing: framing.clone(),
            spec: spec.clone(),
            bank: bank.clone(),
            peer,
            dice: Dice::new(faults.clone(), accepted),
            mac: mac.clone(),
            changer: changer.clone(),
            tap: capture.as_ref().map(|c| {
                let local = stream.local_addr().ok().or(local).unwrap_or(peer);
                c.tap(peer, local, &framing)
            }),
        };
        accepted += 1;
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            connection.run(stream, shutdown).await;
            drop(permit);
        });
        while connections.try_join_next().is_some() {}
    }
    while connections.join_next().await.is_some() {}
}

struct Connection {
    framing: FramingConfig,
    spec: Arc<Spec>,
    bank: Arc<Mutex<Bank>>,
    peer: SocketAddr,
    dice: Dice,
    /// The link's MAC keys, if it requires MACs.
    mac: Option<Arc<LinkMac>>,
    /// Where key changes are sent from and answered to, if the bank sends them.
    changer: Option<Arc<KeyChanger>>,
    /// Where this connection's frames are recorded, if anywhere.
    tap: Option<Tap>,
}

/// A frame as it is on the wire, to record it.
fn wire_bytes(codec: &mut FrameCodec, frame: &Frame) -> Option<BytesMut> {
    let mut out = BytesMut::new();
    codec.encode(frame.clone(), &mut out).ok().map(|()| out)
}

/// What the reader does after a frame.
enum Action {
    Nothing,
    /// Send `frame` `copies` times, after `delay`.
    Send {
        frame: Frame,
        copies: usize,
        delay: Duration,
    },
    /// Close the connection at once (a fault).
    Drop,
}

impl Connection {
    async fn run(mut self, stream: TcpStream, shutdown: CancellationToken) {
        let _ = stream.set_nodelay(true);
        let (sink, mut frames) = Framed::new(stream, FrameCodec::new(self.framing.clone())).split();
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        if let Some(changer) = &self.changer {
            changer
                .writers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(tx.clone());
        }
        let mut writer = tokio::spawn(write_frames(
            sink,
            rx,
            self.peer,
            self.tap
                .clone()
                .map(|tap| (tap, FrameCodec::new(self.framing.clone()))),
        ));
        let mut recording = self
            .tap
            .take()
            .map(|tap| (tap, FrameCodec::new(self.framing.clone())));
        // Answers waiting out a delay, one task each.
        let mut delayed = JoinSet::new();
        let mut dropped = false;
        loop {
            while delayed.try_join_next().is_some() {}
            let next = tokio::select! {
                _ = shutdown.cancelled() => break,
                next = frames.next() => next,
            };
            let frame = match next {
                None => break,
                Some(Ok(frame)) => {
                    if let Some((tap, codec)) = &mut recording {
                        if let Some(bytes) = wire_bytes(codec, &frame) {
                            tap.from_client(&bytes);
                        }
                    }
                    frame
                }
                Some(Err(FramingError::Io(e))) => {
                    debug!(peer = %self.peer, error = %e, "bank: read failed");
                    break;
                }
                Some(Err(e)) => {
                    // Out of step with the stream: nothing can be read after this.
                    warn!(peer = %self.peer, error = %e, "bank: framing error, closing the connection");
                    break;
                }
            };
            match self.process(frame) {
                Action::Nothing => {}
                Action::Drop => {
                    dropped = true;
                    break;
                }
                Action::Send {
                    frame,
                    copies,
                    delay,
                } if delay.is_zero() => {
                    if !send_copies(&tx, frame, copies).await {
                        break; // the writer is gone: so is the peer
                    }
                }
                Action::Send {
                    frame,
                    copies,
                    delay,
                } => {
                    if delayed.len() >= MAX_DELAYED {
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = delayed.join_next() => {}
                        }
                    }
                    let tx = tx.clone();
                    delayed.spawn(async move {
                        tokio::time::sleep(delay).await;
                        send_copies(&tx, frame, copies).await;
                    });
                }
            }
        }
        drop(tx);
        if dropped {
            // Mid-request: whatever is queued or delayed is lost with the connection.
            delayed.abort_all();
            writer.abort();
            let _ = writer.await;
            info!(peer = %self.peer, "bank: connection dropped (fault)");
            return;
        }
        let drained = async {
            while delayed.join_next().await.is_some() {}
            let _ = (&mut writer).await;
        };
        if tokio::time::timeout(WRITER_GRACE, drained).await.is_err() {
            delayed.abort_all();
            writer.abort();
        }
        info!(peer = %self.peer, "bank: connection closed");
    }

    /// One frame in, at most one frame out (twice for a duplicate), or the
    /// connection dropped.
    fn process(&mut self, frame: Frame) -> Action {
        let Frame::Message { header, body } = frame else {
            return Action::Nothing; // keep-alives are never answered
        };
        let request = match parse(&self.spec, body.clone()) {
            Ok(request) => request,
            Err(e) => {
                let mti = body
                    .get(..4)
                    .filter(|m| m.iter().all(u8::is_ascii_digit))
                    .map(|m| String::from_utf8_lossy(m).into_owned());
                warn!(
                    peer = %self.peer,
                    mti = mti.as_deref().unwrap_or("unreadable"),
                    len = body.len(),
                    error = %e,
                    "bank: undecodable message"
                );
                return match reject_undecodable(&body) {
                    Some(response) => self.answer(header, &response, 1, Duration::ZERO),
                    None => Action::Nothing,
                };
            }
        };
        let mti = *request.mti();
        let is_request = mti[2].is_ascii_digit() && !iso8583::mti::is_response(&mti);
        if &mti == b"0810" && request.get_str(num::NETWORK_CODE) == Some(KEY_CHANGE) {
            if let Some(changer) = &self.changer {
                changer.answered(&body, &request);
            }
            return Action::Nothing;
        }
        if is_request {
            if let Some(refusal) = self.refuse_mac(&header, &body, &request) {
                return refusal;
            }
        }
        let plan = if is_request {
            self.dice.roll(mti[..2] == *b"08")
        } else {
            faults::Plan::ANSWER // the bank does not answer responses
        };
        if plan.fate != Fate::Answer {
            debug!(
                peer = %self.peer,
                mti = request.mti_str(),
                stan = request.get_str(num::STAN).unwrap_or(""),
                fault = plan.fate.name(),
                delay_ms = plan.delay.as_millis() as u64,
                "bank: fault injected"
            );
        }
        let now = chrono::Utc::now().naive_utc();
        match plan.fate {
            Fate::DropBeforeApply => return Action::Drop,
            Fate::Lost => return Action::Nothing,
            _ => {}
        }
        // Only a request the bank would decide is declined: anything else it
        // rejects as usual.
        if plan.fate == Fate::Decline && validate(&self.spec, &request).is_valid() {
            let code = self.dice.faults().decline_code;
            if let Some(response) = faults::decline(&self.spec, &request, code, now) {
                lock(&self.bank).journal_declined(&request, code, now);
                log_exchange(self.peer, &request, Some(&response));
                return self.answer(header, &response, 1, plan.delay);
            }
        }
        // The critical section: nothing but the bank's decision.
        let response = lock(&self.bank).handle(&request, now);
        log_exchange(self.peer, &request, response.as_ref());
        let Some(response) = response else {
            return Action::Nothing;
        };
        match plan.fate {
            Fate::DropAfterApply => Action::Drop,
            Fate::Silent => Action::Nothing,
            Fate::Garbage => Action::Send {
                frame: Frame::Message {
                    header: reply_header(&self.framing, header),
                    body: self.dice.garbage(),
                },
                copies: 1,
                delay: plan.delay,
            },
            Fate::Duplicate => self.answer(header, &response, 2, plan.delay),
            _ => self.answer(header, &response, 1, plan.delay),
        }
    }

    /// On a link with MACs, the answer to a request whose field 128 is
    /// missing or wrong: A0, journaled as a decline; `None` when the MAC is
    /// good or the message carries none in the dialect.
    fn refuse_mac(&self, header: &Bytes, body: &Bytes, request: &Message) -> Option<Action> {
        let error = self
            .mac
            .as_deref()?
            .check(&self.spec, body, request)
            .err()?;
        warn!(
            peer = %self.peer,
            mti = request.mti_str(),
            stan = request.get_str(num::STAN).unwrap_or(""),
            error = %error,
            "bank: MAC refused"
        );
        let now = chrono::Utc::now().naive_utc();
        let code = ResponseCode::MAC_FAILURE;
        let response = faults::decline(&self.spec, request, code, now)?;
        lock(&self.bank).journal_declined(request, code, now);
        log_exchange(self.peer, request, Some(&response));
        Some(self.answer(header.clone(), &response, 1, Duration::ZERO))
    }

    /// The wire form of an answer, its field 128 signed on a link with MACs.
    fn build_answer(&self, response: &Message) -> Result<Bytes, String> {
        match self.mac.as_deref() {
            Some(mac) => mac.build(&self.spec, response).map_err(|e| e.to_string()),
            None => build_bytes(&self.spec, response).map_err(|e| e.to_string()),
        }
    }

    fn answer(&self, header: Bytes, response: &Message, copies: usize, delay: Duration) -> Action {
        match self.build_answer(response) {
            Ok(body) => Action::Send {
                frame: Frame::Message {
                    header: reply_header(&self.framing, header),
                    body,
                },
                copies,
                delay,
            },
            Err(e) => {
                warn!(peer = %self.peer, mti = response.mti_str(), error = %e, "bank: cannot build the response");
                Action::Nothing
            }
        }
    }
}

/// Queues `copies` copies of `frame` for the writer; false if it is gone.
async fn send_copies(tx: &mpsc::Sender<Frame>, frame: Frame, copies: usize) -> bool {
    for _ in 1..copies {
        if tx.send(frame.clone()).await.is_err() {
            return false;
        }
    }
    tx.send(frame).await.is_ok()
}

/// The header of a reply: a CUPS header with source and destination swapped,
/// any other header as it came.
fn reply_header(framing: &FramingConfig, header: Bytes) -> Bytes {
    if framing.header != HeaderKind::Cups {
        return header;
    }
    match CupsHeader::parse(&header) {
        Ok(cups) => Bytes::copy_from_slice(&cups.reply().build()),
        // The decoder has checked it already; echo it rather than drop the reply.
        Err(_) => header,
    }
}

fn log_exchange(peer: SocketAddr, request: &Message, response: Option<&Message>) {
    debug!(
        %peer,
        mti = request.mti_str(),
        pc = request.get_str(num::PROCESSING_CODE).unwrap_or(""),
        stan = request.get_str(num::STAN).unwrap_or(""),
        pan = %Masked(request.get_str(num::PAN).unwrap_or("")),
        amount = request.get_str(num::AMOUNT).unwrap_or(""),
        rc = response.and_then(|r| r.get_str(num::RESPONSE_CODE)).unwrap_or("none"),
        "bank: request"
    );
}

/// Writes queued frames, flushing once per batch of what is queued.
async fn write_frames(
    mut sink: SplitSink<Framed<TcpStream, FrameCodec>, Frame>,
    mut rx: mpsc::Receiver<Frame>,
    peer: SocketAddr,
    mut recording: Option<(Tap, FrameCodec)>,
) {
    while let Some(frame) = rx.recv().await {
        let mut next = Some(frame);
        let mut batched = 0;
        while let Some(frame) = next.take() {
            let wire = recording
                .as_mut()
                .and_then(|(_, codec)| wire_bytes(codec, &frame));
            match sink.feed(frame).await {
                Ok(()) => {
                    if let (Some((tap, _)), Some(wire)) = (&recording, wire) {
                        tap.from_server(&wire);
                    }
                }
                Err(FramingError::Io(e)) => {
                    debug!(%peer, error = %e, "bank: write failed");
                    return;
                }
                // Nothing was written for this frame; the stream is still in step.
                Err(e) => warn!(%peer, error = %e, "bank: cannot frame a response"),
            }
            batched += 1;
            if batched < WRITE_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if let Err(e) = sink.flush().await {
            debug!(%peer, error = %e, "bank: write failed");
            return;
        }
    }
    let _ = sink.close().await;
}

/// Serves the admin port until `shutdown` is cancelled: one command per line,
/// each answered with one JSON line unless said otherwise:
///
/// - `snapshot`: the [`Ledger`];
/// - `journal`: one JSON line per movement, then an empty line;
/// - `faults`: the [`Faults`] injected now;
/// - `faults SPEC`: injects the faults of the compact form `SPEC` from the next
///   request on (`faults none` stops them), and answers them as `faults` does;
/// - `injected`: how many requests met each fault so far;
/// - `export YYYY-MM-DD [HH:MM [ZONE]]`: the bank's clearing file for that
///   settlement date (cutoff 23:00 Asia/Shanghai unless given), then an
///   empty line (specs/clearing.md);
/// - `quit`: closes the connection.
///
/// Anything else, or a bad `SPEC`, gets `{"error": ...}`.
pub async fn serve_admin(
    listener: TcpListener,
    bank: Arc<Mutex<Bank>>,
    faults: Arc<FaultControl>,
    shutdown: CancellationToken,
) {
    let mut connections = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn!(error = %e, "bank admin: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        debug!(%peer, "bank admin: connection accepted");
        let bank = bank.clone();
        let faults = faults.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                result = admin_connection(stream, bank, faults) => {
                    if let Err(e) = result {
                        debug!(%peer, error = %e, "bank admin: connection ended");
                    }
                }
            }
        });
        while connections.try_join_next().is_some() {}
    }
    while connections.join_next().await.is_some() {}
}

async fn admin_connection(
    stream: TcpStream,
    bank: Arc<Mutex<Bank>>,
    faults: Arc<FaultControl>,
) -> std::io::Result<()> {
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_ADMIN_LINE)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Ok(());
        }
        if line.last() != Some(&b'\n') && n as u64 == MAX_ADMIN_LINE {
            writer
                .write_all(b"{\"error\":\"command line too long\"}\n")
                .await?;
            return Ok(());
        }
        let command = String::from_utf8_lossy(&line);
        let command = command.trim();
        let (verb, argument) = command
            .split_once(char::is_whitespace)
            .map_or((command, ""), |(verb, rest)| (verb, rest.trim()));
        let mut out = String::new();
        match (verb, argument) {
            ("", _) => continue,
            ("snapshot", "") => {
                let ledger = lock(&bank).snapshot();
                out.push_str(&to_json(&ledger));
                out.push('\n');
            }
            ("journal", "") => {
                // Copied out under the lock, written out after it.
                let journal = lock(&bank).journal();
                for movement in &journal {
                    out.push_str(&to_json(movement));
                    out.push('\n');
                }
                out.push('\n');
            }
            ("faults", "") => {
                out.push_str(&to_json(&faults.faults()));
                out.push('\n');
            }
            ("faults", spec) => {
                match spec.parse::<Faults>() {
                    Ok(new) => {
                        info!(faults = %new, "bank: faults changed");
                        out.push_str(&to_json(&new));
                        faults.set(new);
                    }
                    Err(e) => {
                        out.push_str(&serde_json::json!({ "error": e.to_string() }).to_string())
                    }
                }
                out.push('\n');
            }
            ("injected", "") => {
                out.push_str(&to_json(&faults.injected()));
                out.push('\n');
            }
            ("export", args) => {
                out.push_str(&crate::bank_clearing::admin_export(&lock(&bank), args))
            }
            ("quit", "") => return Ok(()),
            _ => {
                let error = serde_json::json!({
                    "error": format!("unknown command {command:?}: expected snapshot, journal, faults [SPEC], injected or quit")
                });
                out.push_str(&error.to_string());
                out.push('\n');
            }
        }
        writer.write_all(out.as_bytes()).await?;
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| {
        serde_json::json!({ "error": format!("cannot serialize: {e}") }).to_string()
    })
}

/// A bank served on a loopback port, for tests and the demo. Dropping it stops
/// the server.
pub struct BankHandle {
    /// Where the bank listens.
    pub addr: SocketAddr,
    pub bank: Arc<Mutex<Bank>>,
    /// The faults it injects: change them at any time.
    pub faults: Arc<FaultControl>,
    /// Cancel to stop the server (dropping the handle does too).
    pub shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl BankHandle {
    /// The bank's books now.
    pub fn snapshot(&self) -> Ledger {
        lock(&self.bank).snapshot()
    }

    /// Stops the server and waits for its connections to close.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for BankHandle {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Starts `bank` on 127.0.0.1 on a free port, without faults.
pub async fn spawn_bank(bank: Bank, framing: FramingConfig) -> std::io::Result<BankHandle> {
    spawn_bank_with_faults(bank, framing, Faults::default()).await
}

/// Starts `bank` on 127.0.0.1 on a free port, injecting `faults` (changeable
/// through [`BankHandle::faults`]).
pub async fn spawn_bank_with_faults(
    bank: Bank,
    framing: FramingConfig,
    faults: Faults,
) -> std::io::Result<BankHandle> {
    spawn_bank_recorded(bank, framing, faults, None).await
}

/// [`spawn_bank_with_faults`], recording every frame to `capture` when given
/// (call [`Recorder::finish`] after [`BankHandle::stop`] to flush the file).
pub async fn spawn_bank_recorded(
    bank: Bank,
    framing: FramingConfig,
    faults: Faults,
    capture: Option<Recorder>,
) -> std::io::Result<BankHandle> {
    let options = LinkOptions {
        capture,
        ..LinkOptions::default()
    };
    spawn_bank_with(bank, framing, faults, options).await
}

/// [`spawn_bank_with_faults`] with a capture and MACs as `options` say.
pub async fn spawn_bank_with(
    bank: Bank,
    framing: FramingConfig,
    faults: Faults,
    options: LinkOptions,
) -> std::io::Result<BankHandle> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let bank = Arc::new(Mutex::new(bank));
    let faults = Arc::new(FaultControl::new(faults));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve_bank_with(
        listener,
        framing,
        bank.clone(),
        faults.clone(),
        options,
        shutdown.clone(),
    ));
    Ok(BankHandle {
        addr,
        bank,
        faults,
        shutdown,
        task: Some(task),
    })
}

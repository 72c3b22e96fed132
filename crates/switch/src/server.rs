//! Wallet listeners: accept connections, read frames, hand each request to the
//! switch as its own task (up to `max_in_flight_per_connection` at once), and
//! write the responses back through one writer per connection.
//!
//! Work per connection is bounded: a request takes a permit before its frame
//! is read and gives it back only when its answer has been written to the
//! socket. A wallet that sends without reading its answers therefore stops
//! being read once its permits are spent: its own TCP window fills and the
//! backpressure reaches it, while the switch holds at most that many
//! requests and answers for it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn, Instrument};

use iso8583::codec::{parse, Message};
use iso8583::fields::num;
use iso8583::framing::{CupsHeader, Frame, FrameCodec, FramingConfig, HeaderKind};
use iso8583::mti::{is_response, response_mti};
use iso8583::response::ResponseCode;

use crate::dialect::InstitutionId;
use crate::switch::{Peer, Switch};

/// A wallet listener.
#[derive(Debug, Clone)]
pub struct WalletListener {
    pub listen: SocketAddr,
    pub framing: FramingConfig,
    /// Institution ids (F32) its connections may send as; empty = any.
    pub institutions: Vec<InstitutionId>,
    /// Institutions whose packets its connections may receive from besides
    /// their own (`partners`); a packet is otherwise received from, and
    /// unfrozen, only through the institution that froze it.
    pub partners: Vec<InstitutionId>,
    pub max_connections: usize,
    /// A frame whose first byte has arrived must be whole within this
    /// (`frame_timeout_ms`), or the connection is closed; so must a TLS
    /// handshake.
    pub frame_timeout: Duration,
    /// A connection with no frame for this long, keep-alives included, is
    /// closed (`idle_timeout_ms`; `None`: never).
    pub idle_timeout: Option<Duration>,
    /// Requests of one connection being handled or answered at once
    /// (`max_in_flight_per_connection`); the connection is not read further
    /// until one of them has been written back.
    pub max_in_flight: usize,
    /// Connections one remote address may hold at once
    /// (`max_connections_per_address`; `None`: no limit below
    /// `max_connections`). One more is closed as soon as it is accepted.
    pub max_per_address: Option<usize>,
    /// TLS (`tls`, and `clients` for mutual TLS); `None`: plain TCP.
    pub tls: Option<crate::tls::ServerTls>,
    /// MACs on every message of its connections (`mac`); `None`: none.
    pub mac: Option<Arc<crate::mac::LinkMac>>,
}

impl WalletListener {
    pub const DEFAULT_FRAME_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
    pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;
}

/// An answer on its way to the writer, with the permit of the request it
/// answers: the permit is given back once the answer is in the socket.
struct Answer {
    frame: Frame,
    permit: OwnedSemaphorePermit,
}

/// Accepts wallet connections on `listener` until `shutdown`.
pub async fn serve_wallets(
    listener: TcpListener,
    config: WalletListener,
    switch: Arc<Switch>,
    capture: Option<capture::record::Recorder>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let connections = Arc::new(Semaphore::new(config.max_connections));
    let per_address = Arc::new(PerAddress::default());
    let mut backoff = AcceptBackoff::default();
    loop {
        let permit = tokio::select! {
            p = connections.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.cancelled() => break,
        };
        let (stream, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => {
                    if let Some(failures) = backoff.succeeded() {
                        info!(failures, "accepting connections again");
                    }
                    x
                }
                Err(e) => {
                    let (pause, first) = backoff.failed();
                    if first {
                        warn!(error = %e, "accept failed: backing off (one line until it recovers)");
                    }
                    drop(permit);
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = shutdown.cancelled() => break,
                    }
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let Some(slot) = per_address.take(addr.ip(), config.max_per_address) else {
            refused("per_address_limit");
            // Dropping the stream closes it; logged once per run of refusals.
            if per_address.first_refusal(addr.ip()) {
                warn!(%addr, limit = config.max_per_address, "too many connections from this address: refused");
            }
            continue;
        };
        let switch = switch.clone();
        let config = config.clone();
        let shutdown = shutdown.clone();
        let inner = tracker.clone();
        // The wallet is the client of its connection.
        let tap = match (&capture, stream.local_addr()) {
            (Some(recorder), Ok(local)) => Some(recorder.tap(addr, local, &config.framing)),
            _ => None,
        };
        let metrics = crate::metrics::metrics();
        metrics.wallet_accepted.inc();
        metrics.wallet_open.inc();
        let span = tracing::info_span!("wallet", %addr);
        tracker.spawn(
            async move {
                serve_accepted(stream, addr, config, switch, tap, inner, shutdown).await;
                metrics.wallet_open.dec();
                drop(slot);
                drop(permit);
            }
            .instrument(span),
        );
    }
}

/// A wallet connection closed as soon as it was accepted, or before its
/// first frame, for `reason`.
fn refused(reason: &'static str) {
    crate::metrics::metrics()
        .wallet_refused
        .get_or_create(&crate::metrics::RefusedLabels { reason })
        .inc();
}

/// Connections held per remote address, for `max_connections_per_address`:
/// one address must not take every slot of a listener. An address is kept
/// only while it holds a connection (or has just been refused), so the map
/// is bounded by `max_connections`.
#[derive(Default)]
struct PerAddress {
    held: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, AddressCount>>,
}

#[derive(Default)]
struct AddressCount {
    connections: usize,
    refusing: bool,
}

/// One connection of an address; given back on drop.
struct AddressSlot {
    owner: Arc<PerAddress>,
    ip: std::net::IpAddr,
}

impl PerAddress {
    fn take(self: &Arc<Self>, ip: std::net::IpAddr, limit: Option<usize>) -> Option<AddressSlot> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let count = held.entry(ip).or_default();
        if limit.is_some_and(|limit| count.connections >= limit) {
            return None;
        }
        count.connections += 1;
        count.refusing = false;
        Some(AddressSlot {
            owner: self.clone(),
            ip,
        })
    }

    /// Whether this refusal starts a run of them (the one to log).
    fn first_refusal(&self, ip: std::net::IpAddr) -> bool {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.get_mut(&ip)
            .is_some_and(|c| !std::mem::replace(&mut c.refusing, true))
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut held = self.owner.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = held.get_mut(&self.ip) {
            count.connections -= 1;
            if count.connections == 0 {
                held.remove(&self.ip);
            }
        }
    }
}

/// How the accept loop waits after a failed accept. Failures such as EMFILE
/// (no file descriptor left) repeat at once until something is freed:
/// retrying without a pause would spin a core and flood the log. The pause
/// doubles from 5 ms to 1 s and is reset by the next success; one line is
/// logged when failures start and one when they end.
#[derive(Debug, Default)]
struct AcceptBackoff {
    failures: u64,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(5);
    const MAX: Duration = Duration::from_secs(1);

    /// The pause after one more failure, and whether it is the first of a run.
    fn failed(&mut self) -> (Duration, bool) {
        self.failures += 1;
        let doublings = (self.failures - 1).min(16) as u32;
        let pause = Self::FIRST.saturating_mul(1 << doublings).min(Self::MAX);
        (pause, self.failures == 1)
    }

    /// After a success: how many failures ended, if any did.
    fn succeeded(&mut self) -> Option<u64> {
        let failures = std::mem::take(&mut self.failures);
        (failures > 0).then_some(failures)
    }
}

/// The reply header for a request's header: CUPS headers get source and
/// destination swapped; fixed headers are echoed.
fn reply_header(kind: HeaderKind, header: &Bytes) -> Bytes {
    match kind {
        HeaderKind::Cups => CupsHeader::parse(header)
            .map(|h| Bytes::copy_from_slice(&h.reply().build()))
            .unwrap_or_else(|_| header.clone()),
        _ => header.clone(),
    }
}

/// A format-error answer to a message too broken to parse, when its MTI at
/// least is readable.
fn format_error(switch: &Switch, body: &Bytes) -> Option<Bytes> {
    let mti: [u8; 4] = body.get(..4)?.try_into().ok()?;
    if !mti.iter().all(u8::is_ascii_digit) || is_response(&mti) {
        return None;
    }
    let mut answer = Message::new(response_mti(&mti));
    answer.set(num::RESPONSE_CODE, ResponseCode::FORMAT_ERROR);
    iso8583::codec::build_bytes(switch.spec(), &answer).ok()
}

/// One accepted connection, holding its slots of the listener's limits:
/// its TLS handshake first when the listener has TLS (within
/// `frame_timeout_ms`; a client that does not complete it, a plain TCP
/// client among them, is closed with one log line), then its requests.
async fn serve_accepted(
    stream: TcpStream,
    addr: SocketAddr,
    config: WalletListener,
    switch: Arc<Switch>,
    tap: Option<capture::record::Tap>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    if let Err(e) = crate::socket::configure(&stream) {
        warn!(%addr, error = %e, "cannot set the connection's TCP options");
    }
    let mut peer = Peer {
        name: format!("wallet {addr}"),
        institutions: config.institutions.clone(),
        partners: config.partners.clone(),
        mac: config.mac.clone(),
    };
    let Some(tls) = config.tls.clone() else {
        let (read_half, write_half) = stream.into_split();
        let peer = Arc::new(peer);
        serve_connection(
            read_half, write_half, peer, config, switch, tap, tracker, shutdown,
        )
        .await;
        return;
    };
    let handshake = tokio::time::timeout(config.frame_timeout, tls.acceptor().accept(stream));
    let stream = tokio::select! {
        r = handshake => match r {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                refused("tls_handshake");
                warn!(%addr, error = %e, "TLS handshake failed: connection refused");
                return;
            }
            Err(_) => {
                refused("tls_handshake_timeout");
                warn!(
                    %addr,
                    timeout_ms = config.frame_timeout.as_millis() as u64,
                    "TLS handshake not completed within frame_timeout_ms: connection refused"
                );
                return;
            }
        },
        _ = shutdown.cancelled() => return,
    };
    match tls.identify(stream.get_ref().1.peer_certificates(), &config.institutions) {
        Ok(None) => {}
        Ok(Some(identity)) => {
            peer.name = format!("wallet {addr} {}", identity.name);
            if let Some(institutions) = identity.institutions {
                peer.institutions = institutions;
            }
        }
        Err(reason) => {
            refused("client_certificate");
            warn!(%addr, reason, "client certificate refused: connection closed");
            let mut stream = stream;
            let _ = tokio::time::timeout(
                config.frame_timeout,
                tokio::io::AsyncWriteExt::shutdown(&mut stream),
            )
            .await;
            return;
        }
    }
    let (read_half, write_half) = tokio::io::split(stream);
    let peer = Arc::new(peer);
    serve_connection(
        read_half, write_half, peer, config, switch, tap, tracker, shutdown,
    )
    .await;
}

/// Frames in, answers out, on one connection's two halves (TCP or TLS).
#[allow(clippy::too_many_arguments)]
async fn serve_connection<R, W>(
    read_half: R,
    write_half: W,
    peer: Arc<Peer>,
    config: WalletListener,
    switch: Arc<Switch>,
    tap: Option<capture::record::Tap>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut read_tap = tap
        .clone()
        .map(|t| (t, FrameCodec::new(config.framing.clone())));
    let mut write_tap = tap.map(|t| (t, FrameCodec::new(config.framing.clone())));
    info!(peer = %peer.name, "connected");
    let header_kind = config.framing.header;
    let mut source = FramedRead::new(read_half, FrameCodec::new(config.framing.clone()));
    let mut sink = FramedWrite::new(write_half, FrameCodec::new(config.framing.clone()));
    let mut timer = ReadTimer::new(config.frame_timeout, config.idle_timeout);
    let check = tokio::time::sleep_until(timer.next_check());
    tokio::pin!(check);
    let max_in_flight = config.max_in_flight.max(1);
    let in_flight = Arc::new(Semaphore::new(max_in_flight));
    // Never more answers than permits exist, so this never blocks a sender.
    let (tx, mut rx) = mpsc::channel::<Answer>(max_in_flight);
    let writer_peer = peer.name.clone();
    let writer = tokio::spawn(async move {
        let mut answers = Vec::new();
        let mut written = Vec::new();
        let mut record = |frame: &Frame| {
            if let Some((tap, codec)) = &mut write_tap {
                if let Some(wire) = crate::link::wire_bytes(codec, frame) {
                    tap.from_server(&wire);
                }
            }
        };
        while let Some(first) = rx.recv().await {
            crate::link::gather(first, &mut rx, &mut answers).await;
            let mut result = Ok(());
            for answer in answers.drain(..) {
                record(&answer.frame);
                result = sink.feed(answer.frame).await;
                written.push(answer.permit);
                if result.is_err() {
                    break;
                }
            }
            if let Err(e) = result.and(sink.flush().await) {
                warn!(peer = %writer_peer, error = %e, "write failed");
                break;
            }
            // In the socket: the wallet may send as many requests again.
            written.clear();
        }
    });
    let mut permit: Option<OwnedSemaphorePermit> = None;
    let closed = loop {
        if permit.is_none() {
            permit = match in_flight.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    // Every permit is out: the connection is not read until
                    // an answer has been written.
                    let p = tokio::select! {
                        p = in_flight.clone().acquire_owned() => p,
                        _ = shutdown.cancelled() => break "shutting down",
                    };
                    // The wait was the switch's, not the wallet's: its
                    // frame and idle clocks start again.
                    timer.frame_done();
                    p.ok()
                }
            };
        }
        let frame = tokio::select! {
            f = source.next() => f,
            _ = &mut check => {
                // One timer per connection, reset only when it fires: no
                // timer work per frame.
                check.as_mut().reset(timer.next_check());
                match timer.check(!source.read_buffer().is_empty()) {
                    Some(reason) => break reason,
                    None => continue,
                }
            }
            _ = shutdown.cancelled() => break "shutting down",
        };
        timer.frame_done();
        if let (Some((tap, codec)), Some(Ok(frame))) = (&mut read_tap, &frame) {
            if let Some(wire) = crate::link::wire_bytes(codec, frame) {
                tap.from_client(&wire);
            }
        }
        match frame {
            None => break "closed by the wallet",
            Some(Err(e)) => {
                // The stream cannot be resynchronised after a bad length.
                warn!(peer = %peer.name, error = %e, "bad frame");
                break "bad frame";
            }
            Some(Ok(Frame::KeepAlive)) => {}
            Some(Ok(Frame::Message { header, body })) => {
                let Some(permit) = permit.take() else {
                    break "shutting down";
                };
                if tx.is_closed() {
                    break "writing to the wallet failed";
                }
                let header = reply_header(header_kind, &header);
                match parse(switch.spec(), body.clone()) {
                    Ok(request) => {
                        let switch = switch.clone();
                        let peer = peer.clone();
                        let tx = tx.clone();
                        tracker.spawn(
                            async move {
                                // Boxed: a request's future is kilobytes, and
                                // tokio copies a task's future whole when it
                                // is spawned and again when it ends.
                                let handled = Box::pin(switch.handle(&peer, request, body));
                                if let Some(response) = handled.await {
                                    let frame = Frame::Message {
                                        header,
                                        body: response,
                                    };
                                    let _ = tx.send(Answer { frame, permit }).await;
                                }
                            }
                            .in_current_span(),
                        );
                    }
                    Err(e) => {
                        warn!(peer = %peer.name, error = %e, "undecodable message");
                        if let Some(response) = format_error(&switch, &body) {
                            let frame = Frame::Message {
                                header,
                                body: response,
                            };
                            let _ = tx.send(Answer { frame, permit }).await;
                        }
                    }
                }
            }
        }
    };
    drop(tx);
    // Let responses already decided go out.
    let _ = writer.await;
    info!(peer = %peer.name, reason = closed, "disconnected");
}

/// When a wallet connection's reads have taken too long: a frame started and
/// not whole within the frame timeout (a peer that sends `8000` and nothing
/// more would otherwise hold its connection, and 8 KiB, forever), or no
/// frame at all within the idle timeout. Whether a frame has started is what
/// the codec has buffered, looked at every quarter of the frame timeout (at
/// most every second), so a stalled frame is cut within 1¼ frame timeouts.
struct ReadTimer {
    frame: Duration,
    idle: Option<Duration>,
    last_frame: Instant,
    /// When bytes of an unfinished frame were first seen.
    started: Option<Instant>,
}

impl ReadTimer {
    fn new(frame: Duration, idle: Option<Duration>) -> ReadTimer {
        ReadTimer {
            frame,
            idle,
            last_frame: Instant::now(),
            started: None,
        }
    }

    fn next_check(&self) -> Instant {
        let tick = (self.frame / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        Instant::now() + tick
    }

    /// Why to close now, if it is time; `partial`: bytes of a frame are buffered.
    fn check(&mut self, partial: bool) -> Option<&'static str> {
        let now = Instant::now();
        if partial {
            let started = *self.started.get_or_insert(now);
            if now - started >= self.frame {
                return Some("frame not completed within frame_timeout_ms");
            }
        }
        match self.idle {
            Some(idle) if now - self.last_frame >= idle => Some("idle for idle_timeout_ms"),
            _ => None,
        }
    }

    fn frame_done(&mut self) {
        self.last_frame = Instant::now();
        self.started = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_holds_at_most_its_limit_and_is_forgotten_when_it_holds_none() {
        let per_address = Arc::new(PerAddress::default());
        let a: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        let b: std::net::IpAddr = "10.0.0.2".parse().unwrap();
        let first = per_address.take(a, Some(2)).unwrap();
        let second = per_address.take(a, Some(2)).unwrap();
        assert!(per_address.take(a, Some(2)).is_none());
        assert!(per_address.first_refusal(a), "the first refusal is logged");
        assert!(!per_address.first_refusal(a), "not the next ones");
        let other = per_address.take(b, Some(2)).unwrap();
        drop(first);
        let third = per_address.take(a, Some(2)).expect("a slot was given back");
        drop((second, third, other));
        assert!(per_address.held.lock().unwrap().is_empty());
        let unlimited: Vec<_> = (0..100).map(|_| per_address.take(a, None)).collect();
        assert!(unlimited.iter().all(Option::is_some));
    }

    #[test]
    fn accept_backoff_grows_to_a_second_and_resets() {
        let mut b = AcceptBackoff::default();
        assert_eq!(b.succeeded(), None);
        let pauses: Vec<(u64, bool)> = (0..12)
            .map(|_| b.failed())
            .map(|(p, first)| (p.as_millis() as u64, first))
            .collect();
        assert_eq!(
            pauses,
            [
                (5, true),
                (10, false),
                (20, false),
                (40, false),
                (80, false),
                (160, false),
                (320, false),
                (640, false),
                (1000, false),
                (1000, false),
                (1000, false),
                (1000, false),
            ]
        );
        assert_eq!(b.succeeded(), Some(12));
        assert_eq!(b.failed(), (Duration::from_millis(5), true));
    }
}

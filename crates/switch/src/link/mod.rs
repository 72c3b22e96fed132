//! Links to bank hosts: persistent connections opened at start and re-opened
//! with backoff, a sign-on (0800, F70 001) on every new connection, echo
//! (0800, F70 301) when idle, many requests in flight on each connection, and
//! responses matched to requests by key (response MTI + F7 + F11 + F32 + F33).
//!
//! A response that matches nothing is logged and journaled, never dropped
//! silently. Every request has a deadline.
//!
//! An operator may sign a link off ([`BankLink::sign_off`]): no new request
//! is routed to it (the switch answers as for a bank that is down), the bank
//! is told (0800, F70 002) on each connection that is up, and connections
//! that reconnect meanwhile do not sign on, until [`BankLink::sign_on`].

mod connection;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use iso8583::codec::{build_bytes, Message, Mti};
use iso8583::fields::num;
use iso8583::framing::FramingConfig;
use iso8583::mti::response_mti;
use iso8583::spec::Spec;

use crate::clock::Clock;
use crate::dialect::InstitutionId;
use crate::routing::BinRange;
use crate::stan::StanSource;
use crate::store::Store;

use connection::Connection;

/// A bank host and how to reach it.
#[derive(Debug, Clone)]
pub struct BankConfig {
    pub institution_id: String,
    pub name: String,
    pub bins: Vec<BinRange>,
    pub hosts: Vec<SocketAddr>,
    pub framing: FramingConfig,
    pub connections: usize,
    pub timeout: Duration,
    pub echo_interval: Duration,
    pub max_in_flight: usize,
    /// TLS to the bank's hosts (`tls`); `None`: plain TCP.
    pub tls: Option<crate::tls::ClientTls>,
    /// MACs on every message of the link (`mac`); `None`: none.
    pub mac: Option<Arc<crate::mac::LinkMac>>,
}

impl BankConfig {
    /// A message as sent on this link: signed when the link has MACs.
    pub(crate) fn wire_form(&self, spec: &Spec, msg: &Message) -> Result<Bytes, LinkError> {
        match &self.mac {
            Some(mac) => mac
                .build(spec, msg)
                .map_err(|e| LinkError::Invalid(e.to_string())),
            None => build_bytes(spec, msg).map_err(|e| LinkError::Invalid(e.to_string())),
        }
    }
}

/// Why a request to a bank got no response.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// No connection to the bank is signed on: nothing was sent.
    #[error("no connection to {0} is up")]
    Unavailable(String),
    /// Every request slot of the connection (`max_in_flight`) stayed taken
    /// for the whole deadline: nothing was sent.
    #[error("all {1} request slots of {0} stayed busy for the deadline: not sent")]
    Busy(String, usize),
    /// Sent, but no response within the deadline: the bank may have acted on it.
    #[error("no response from {0} within {1} ms")]
    Timeout(String, u128),
    /// Sent, but the connection closed before the response: the bank may have acted on it.
    #[error("connection to {0} lost before the response")]
    ConnectionLost(String),
    /// Sent, but the answer's MAC was missing or wrong: it is not taken, and
    /// the bank may have acted on the request.
    #[error("the answer from {0} was refused: {1}")]
    MacFailure(String, String),
    /// The message could not be built or lacks its matching fields; nothing was sent.
    #[error("cannot send: {0}")]
    Invalid(String),
    /// This instance's lease on its work in a shared store has run out:
    /// another instance may be recovering it, so nothing was sent.
    #[error("not sent: this instance's lease has run out")]
    LeaseLost,
}

impl LinkError {
    /// Whether the bank may have received the request (so its effect is unknown).
    pub fn maybe_delivered(&self) -> bool {
        matches!(
            self,
            LinkError::Timeout(..) | LinkError::ConnectionLost(..) | LinkError::MacFailure(..)
        )
    }
}

/// How a response finds its request.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct MatchKey {
    pub mti: Mti,
    pub transmission: [u8; 10],
    pub stan: [u8; 6],
    pub acquirer: InstitutionId,
    pub forwarder: InstitutionId,
}

impl MatchKey {
    /// The key of a message, using `mti` in place of its own (the response MTI
    /// for a request). `None` when F7 or F11 is missing or malformed.
    pub fn of(msg: &Message, mti: Mti) -> Option<MatchKey> {
        let fixed = |n: u16, len: usize| msg.get(n).filter(|v| v.len() == len);
        let institution = |n: u16| match msg.get(n) {
            Some(v) => InstitutionId::from_field(n, v).ok(),
            None => Some(InstitutionId::ZERO),
        };
        Some(MatchKey {
            mti,
            transmission: fixed(num::TRANSMISSION, 10)?[..].try_into().ok()?,
            stan: fixed(num::STAN, 6)?[..].try_into().ok()?,
            acquirer: institution(num::ACQUIRER)?,
            forwarder: institution(num::FORWARDER)?,
        })
    }
}

/// What every connection of every link shares.
pub struct LinkContext {
    pub spec: Arc<Spec>,
    pub switch_id: String,
    pub clock: Arc<dyn Clock>,
    pub stans: Arc<StanSource>,
    pub store: Arc<dyn Store>,
    /// Where every frame of every link is recorded (`[capture]`), if anywhere.
    pub capture: Option<capture::record::Recorder>,
}

/// A frame as it is on the wire, to record it (`[capture]`).
pub(crate) fn wire_bytes(
    codec: &mut iso8583::framing::FrameCodec,
    frame: &iso8583::framing::Frame,
) -> Option<bytes::BytesMut> {
    use tokio_util::codec::Encoder;
    let mut out = bytes::BytesMut::new();
    codec.encode(frame.clone(), &mut out).ok().map(|()| out)
}

/// Takes what a connection's writer has to send at once: `first`, whatever
/// else its queue holds, and, after yielding once to the tasks already
/// woken (answers and requests on their way to this queue), what they
/// queued meanwhile. The writer then sends them with one flush: under load
/// one write call and one TCP segment carry several messages, for us and
/// for the peer, where each message would cost its own. `batch` is empty on
/// entry and holds at most the queue's capacity on return.
pub(crate) async fn gather<T>(
    first: T,
    queue: &mut tokio::sync::mpsc::Receiver<T>,
    batch: &mut Vec<T>,
) {
    batch.push(first);
    while let Ok(item) = queue.try_recv() {
        batch.push(item);
    }
    tokio::task::yield_now().await;
    while let Ok(item) = queue.try_recv() {
        batch.push(item);
    }
}

/// What the switch needs from a bank: send a request, get its response or
/// know why not. [`BankLink`] is the real one (TCP); the simulation tests put a
/// bank in memory with seeded faults behind the same trait.
#[async_trait::async_trait]
pub trait BankPort: Send + Sync + 'static {
    /// The bank's institution id.
    fn institution_id(&self) -> &str;

    /// Sends a request and waits for its response, within the bank's deadline.
    async fn request(&self, msg: &Message) -> Result<(Message, Bytes), LinkError>;
}

#[async_trait::async_trait]
impl BankPort for BankLink {
    fn institution_id(&self) -> &str {
        &self.config.institution_id
    }

    async fn request(&self, msg: &Message) -> Result<(Message, Bytes), LinkError> {
        BankLink::request(self, msg).await
    }
}

/// The connections to one bank.
pub struct BankLink {
    pub config: BankConfig,
    connections: Vec<Arc<Connection>>,
    next: AtomicUsize,
    context: Arc<LinkContext>,
    /// Set while an operator holds the link signed off.
    held: Arc<AtomicBool>,
}

/// What an operator's sign-off or sign-on did, connection by connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignReport {
    /// Connections whose bank answered the 0800 with 00.
    pub answered: usize,
    pub connections: usize,
    /// One line per connection: sent and answered, not connected, or why not.
    pub notes: Vec<String>,
}

impl BankLink {
    /// Starts the connections (each keeps reconnecting until `shutdown`).
    pub fn start(
        config: BankConfig,
        context: Arc<LinkContext>,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Arc<BankLink> {
        if let Some(mac) = &config.mac {
            tracing::info!(
                link = %config.name,
                algorithm = %mac.algorithm(),
                kcv = %mac.kcv(),
                covered = %mac.coverage(),
                key_changes = mac.has_kek(),
                "MACs required on this link"
            );
        }
        let held = Arc::new(AtomicBool::new(false));
        let connections: Vec<Arc<Connection>> = (0..config.connections)
            .map(|i| Arc::new(Connection::new(i, &config, context.clone(), held.clone())))
            .collect();
        for c in &connections {
            let c = c.clone();
            let shutdown = shutdown.clone();
            tracker.spawn(async move { c.run(shutdown).await });
        }
        Arc::new(BankLink {
            config,
            connections,
            next: AtomicUsize::new(0),
            context,
            held,
        })
    }

    /// Whether an operator holds the link signed off.
    pub fn signed_off(&self) -> bool {
        self.held.load(Ordering::Acquire)
    }

    /// Signs the link off for an operator: from now on no new request is
    /// routed to it; then each connection that is up sends a sign-off
    /// (0800, F70 002) and waits for its answer, within the bank's timeout.
    pub async fn sign_off(&self) -> SignReport {
        self.held.store(true, Ordering::Release);
        tracing::warn!(link = %self.config.name, "signed off by an operator");
        let results =
            futures::future::join_all(self.connections.iter().map(|c| c.sign_off())).await;
        self.report("sign-off", results)
    }

    /// Signs the link on again for an operator: each connection that is up
    /// sends a sign-on (0800, F70 001) and takes requests once the bank
    /// approves it; one that is not up signs on when it connects.
    pub async fn sign_on(&self) -> SignReport {
        self.held.store(false, Ordering::Release);
        tracing::info!(link = %self.config.name, "signed on by an operator");
        let results = futures::future::join_all(self.connections.iter().map(|c| c.sign_on())).await;
        self.report("sign-on", results)
    }

    fn report(&self, what: &str, results: Vec<Result<bool, LinkError>>) -> SignReport {
        let mut answered = 0;
        let notes = self
            .connections
            .iter()
            .zip(results)
            .map(|(c, r)| match r {
                Ok(true) => {
                    answered += 1;
                    format!("{}: {what} answered 00", c.name())
                }
                Ok(false) => format!("{}: not connected", c.name()),
                Err(e) => format!("{}: {what} failed: {e}", c.name()),
            })
            .collect();
        SignReport {
            answered,
            connections: self.connections.len(),
            notes,
        }
    }

    pub fn institution_id(&self) -> &str {
        &self.config.institution_id
    }

    /// Number of connections signed on now.
    pub fn ready_connections(&self) -> usize {
        self.connections.iter().filter(|c| c.is_ready()).count()
    }

    /// Waits until at least one connection is signed on, or the deadline passes.
    pub async fn wait_ready(&self, deadline: std::time::Duration) -> bool {
        let until = tokio::time::Instant::now() + deadline;
        while tokio::time::Instant::now() < until {
            if self.ready_connections() > 0 {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        false
    }

    /// Sends a request and waits for its response, within the bank's timeout.
    pub async fn request(&self, msg: &Message) -> Result<(Message, Bytes), LinkError> {
        let body = self.config.wire_form(&self.context.spec, msg)?;
        let key = MatchKey::of(msg, response_mti(msg.mti()))
            .ok_or_else(|| LinkError::Invalid("request lacks F7 or F11".into()))?;
        let n = self.connections.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            let connection = &self.connections[(start + i) % n];
            if let Some(sender) = connection.sender() {
                return connection.exchange(sender, key, msg, body).await;
            }
        }
        Err(LinkError::Unavailable(self.config.name.clone()))
    }
}

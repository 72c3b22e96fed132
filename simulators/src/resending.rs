//! A wallet that outlives its connection to the switch: when the connection
//! is lost (the switch restarted) or an answer does not come, it reconnects
//! with back-off and sends the request again, byte for byte (same STAN, same
//! F7), until an answer comes or its patience runs out. An exact resend is
//! what the switch's idempotency is for: it answers with what it answered
//! the first time, or decides the request now if it never got it, so a
//! resend never moves money twice.
//!
//! It keeps one record per request (when it keeps records): the request and
//! the first answer it got, or no answer when it gave up.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use iso8583::codec::Message;
use iso8583::framing::FramingConfig;
use iso8583::spec::Spec;

use super::wallet::{WalletClient, WalletError, WalletRecords};

/// The first pause after a failure; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Long enough not to hammer a switch that is starting, short enough that a
/// restart costs the load about a second.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// How long a request may wait for one answer, and for any answer at all.
#[derive(Clone, Copy, Debug)]
pub struct Patience {
    /// One attempt's wait before the request is sent again.
    pub attempt: Duration,
    /// From the first attempt: after this the request is given up.
    pub give_up_after: Duration,
}

impl Default for Patience {
    fn default() -> Self {
        Patience {
            attempt: Duration::from_secs(30),
            give_up_after: Duration::from_secs(60),
        }
    }
}

/// The connection requests are sent on, and how many times it was replaced,
/// so that of all the requests that saw it break only the first reconnects.
struct Connection {
    client: Option<WalletClient>,
    generation: u64,
}

/// One wallet connection that reconnects and resends; cheap to share
/// (`Arc`) between the tasks sending on it.
pub struct ResendingWallet {
    addr: SocketAddr,
    framing: FramingConfig,
    /// Builds the messages (it has no connection of its own).
    messages: WalletClient,
    patience: Patience,
    records: Option<Arc<WalletRecords>>,
    /// The link's MACs, for every connection this wallet opens.
    mac: Option<Arc<switchboard::mac::LinkMac>>,
    spec: Spec,
    connection: Mutex<Connection>,
    reconnects: AtomicU64,
    resends: AtomicU64,
}

impl ResendingWallet {
    /// Connects to a switch's wallet listener, sending as `institution`.
    /// The first connection must succeed: a switch that is not there at all
    /// is a mistake to report, not a restart to wait out.
    pub async fn connect(
        addr: SocketAddr,
        framing: FramingConfig,
        institution: &str,
        patience: Patience,
        records: Option<Arc<WalletRecords>>,
    ) -> std::io::Result<ResendingWallet> {
        let client = WalletClient::connect(addr, framing.clone(), institution)
            .await?
            .with_timeout(patience.attempt);
        Ok(ResendingWallet {
            addr,
            framing,
            messages: WalletClient::offline(institution),
            patience,
            records,
            mac: None,
            spec: Spec::switchboard(),
            connection: Mutex::new(Connection {
                client: Some(client),
                generation: 0,
            }),
            reconnects: AtomicU64::new(0),
            resends: AtomicU64::new(0),
        })
    }

    /// Signs every request and checks every answer with the link's MACs,
    /// on this connection and on every one opened after it.
    pub fn with_mac(mut self, mac: Option<Arc<switchboard::mac::LinkMac>>) -> Self {
        let connection = self.connection.get_mut();
        if let Some(client) = connection.client.take() {
            connection.client = Some(client.with_mac(mac.clone()));
        }
        self.mac = mac;
        self
    }

    /// Builds the requests this wallet sends (freeze, receive, unfreeze …).
    pub fn messages(&self) -> &WalletClient {
        &self.messages
    }

    /// Connections opened again after one was lost.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    /// Attempts beyond each request's first.
    pub fn resends(&self) -> u64 {
        self.resends.load(Ordering::Relaxed)
    }

    /// Sends `msg` until it is answered: the answer, or
    /// [`WalletError::GaveUp`] after [`Patience::give_up_after`] (or
    /// [`WalletError::Build`] for a request that cannot be sent at all).
    pub async fn send(&self, msg: &Message) -> Result<Message, WalletError> {
        let deadline = Instant::now() + self.patience.give_up_after;
        let mut backoff = FIRST_BACKOFF;
        // The generation of a connection seen to fail, to be replaced.
        let mut broken = None;
        // Whether the switch may have got the request: only then is an
        // unanswered request the wallet's to record (and to chase).
        let mut maybe_sent = false;
        let mut first = true;
        loop {
            if let Some((generation, client)) = self.connection(broken, deadline).await {
                if !first {
                    self.resends.fetch_add(1, Ordering::Relaxed);
                }
                first = false;
                match tokio::time::timeout_at(deadline, client.send(msg)).await {
                    Ok(Ok(answer)) => {
                        self.record(msg, Some(&answer));
                        return Ok(answer);
                    }
                    Ok(Err(WalletError::Build(e))) => return Err(WalletError::Build(e)),
                    // Answered, but not by anyone holding the link's key:
                    // a resend would meet the same answer.
                    Ok(Err(WalletError::Mac(e))) => {
                        self.record(msg, None);
                        return Err(WalletError::Mac(e));
                    }
                    // Still connected as far as the wallet knows: resend on it
                    // (the switch answers a resend of a request it is still
                    // deciding when the decision is made).
                    Ok(Err(WalletError::Timeout(_))) => maybe_sent = true,
                    Ok(Err(WalletError::NotSent)) => broken = Some(generation),
                    Ok(Err(WalletError::Closed | WalletError::GaveUp(_))) => {
                        maybe_sent = true;
                        broken = Some(generation);
                    }
                    Err(_) => {
                        maybe_sent = true;
                        break;
                    }
                }
            }
            if Instant::now() + backoff >= deadline {
                break;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        if maybe_sent {
            self.record(msg, None);
        }
        Err(WalletError::GaveUp(self.patience.give_up_after))
    }

    /// The connection to send on: the current one unless it is the
    /// `broken` generation, else a new one, tried with back-off until
    /// `deadline`. `None` when none could be made by then.
    async fn connection(
        &self,
        broken: Option<u64>,
        deadline: Instant,
    ) -> Option<(u64, WalletClient)> {
        let mut connection = tokio::time::timeout_at(deadline, self.connection.lock())
            .await
            .ok()?;
        if let Some(client) = &connection.client {
            if broken != Some(connection.generation) {
                return Some((connection.generation, client.clone()));
            }
        }
        // Every request on a lost connection comes here; the lock makes the
        // first reconnect and the others find its new connection above.
        connection.client = None;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let attempt =
                WalletClient::connect(self.addr, self.framing.clone(), self.messages.institution());
            if let Ok(Ok(client)) = tokio::time::timeout_at(deadline, attempt).await {
                let client = client
                    .with_timeout(self.patience.attempt)
                    .with_mac(self.mac.clone());
                connection.generation += 1;
                connection.client = Some(client.clone());
                self.reconnects.fetch_add(1, Ordering::Relaxed);
                tracing::info!(switch = %self.addr, "wallet reconnected");
                return Some((connection.generation, client));
            }
            if Instant::now() + backoff >= deadline {
                return None;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn record(&self, request: &Message, answer: Option<&Message>) {
        if let Some(records) = &self.records {
            records.record(&self.spec, request, answer);
        }
    }
}

//! A wallet: builds freeze, receive and unfreeze requests and exchanges them
//! with the switch over one TCP connection, many in flight, responses matched
//! by (MTI, F7, F11, F32).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{Duration as ChronoDuration, NaiveDateTime};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::Framed;

use iso8583::codec::{build_bytes, parse, Message};
use iso8583::fields::{format_amount, num, transmission_digits};
use iso8583::framing::{Frame, FrameCodec, FramingConfig};
use iso8583::mti::response_mti;
use iso8583::spec::Spec;
use switchboard::dialect::OriginalData;
use switchboard::link::MatchKey;
use switchboard::mac::LinkMac;

pub use super::wallet_records::{WalletRecord, WalletRecords};

/// Why an exchange with the switch failed.
#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("connection closed")]
    Closed,
    /// The connection was closed before the request could be written.
    #[error("connection closed: not sent")]
    NotSent,
    #[error("cannot build request: {0}")]
    Build(String),
    /// The answer's MAC was missing or wrong (a link with MACs).
    #[error("answer refused: {0}")]
    Mac(String),
    /// Resent on every connection lost or answer missed until the wallet's
    /// patience ran out (`ResendingWallet`).
    #[error("no answer after resending for {0:?}")]
    GaveUp(Duration),
}

/// Waiters by the key of the answer they wait for; `None` once the
/// connection is closed, so a request made after that fails at once instead
/// of waiting for an answer that cannot come.
type Pending = Mutex<Option<Waiters>>;

type Waiters = HashMap<MatchKey, oneshot::Sender<Result<Message, WalletError>>>;

fn lock(pending: &Pending) -> std::sync::MutexGuard<'_, Option<Waiters>> {
    // A waiter map stays consistent whatever panicked while holding it.
    pending.lock().unwrap_or_else(|p| p.into_inner())
}

/// STANs of this process's wallets, unique across connections.
static NEXT_STAN: AtomicU32 = AtomicU32::new(0);

fn next_stan() -> String {
    let n = NEXT_STAN.fetch_add(1, Ordering::Relaxed);
    if n == 0 {
        // First use: start somewhere that differs between runs and processes.
        let seed = (std::process::id() as u64 * 7919
            + std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos() as u64)
                .unwrap_or(0))
            % 900_000;
        NEXT_STAN.store(seed as u32 + 2, Ordering::Relaxed);
        return format!("{:06}", seed + 1);
    }
    format!("{:06}", n % 999_999 + 1)
}

/// One connection of a wallet to the switch.
#[derive(Clone)]
pub struct WalletClient {
    spec: Arc<Spec>,
    institution: String,
    frames: mpsc::Sender<Bytes>,
    pending: Arc<Pending>,
    timeout: Duration,
    /// Where every exchange is kept, when the wallet keeps records.
    records: Option<Arc<WalletRecords>>,
    /// The link's MACs, when it has them: requests are signed, answers
    /// checked (shared with the reader).
    mac: Arc<std::sync::OnceLock<Arc<LinkMac>>>,
}

impl WalletClient {
    /// Connects to a switch's wallet listener, sending as `institution` (F32).
    pub async fn connect(
        addr: SocketAddr,
        framing: FramingConfig,
        institution: &str,
    ) -> std::io::Result<WalletClient> {
        WalletClient::over(TcpStream::connect(addr).await?, framing, institution)
    }

    /// A client over a connection already made (from a chosen local
    /// address, say), sending as `institution` (F32).
    pub fn over(
        stream: TcpStream,
        framing: FramingConfig,
        institution: &str,
    ) -> std::io::Result<WalletClient> {
        stream.set_nodelay(true)?;
        Ok(WalletClient::over_stream(stream, framing, institution))
    }

    /// A client over any connected stream (a TLS session, say), sending as
    /// `institution` (F32).
    pub fn over_stream<S>(stream: S, framing: FramingConfig, institution: &str) -> WalletClient
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sink, mut source) = Framed::new(stream, FrameCodec::new(framing)).split();
        let (frames, mut rx) = mpsc::channel::<Bytes>(4096);
        let pending: Arc<Pending> = Arc::new(Mutex::new(Some(HashMap::new())));
        tokio::spawn(async move {
            while let Some(body) = rx.recv().await {
                let mut result = sink.feed(Frame::message(body)).await;
                while result.is_ok() {
                    match rx.try_recv() {
                        Ok(body) => result = sink.feed(Frame::message(body)).await,
                        Err(_) => break,
                    }
                }
                if result.and(sink.flush().await).is_err() {
                    break;
                }
            }
        });
        let spec = Arc::new(Spec::switchboard());
        let reader_pending = pending.clone();
        let reader_spec = spec.clone();
        let mac: Arc<std::sync::OnceLock<Arc<LinkMac>>> = Arc::default();
        let reader_mac = mac.clone();
        tokio::spawn(async move {
            while let Some(Ok(frame)) = source.next().await {
                let Frame::Message { body, .. } = frame else {
                    continue;
                };
                let Ok(msg) = parse(&reader_spec, body.clone()) else {
                    continue;
                };
                let key = MatchKey::of(&msg, *msg.mti());
                let answer = match reader_mac.get().map(|m| m.check(&reader_spec, &body, &msg)) {
                    Some(Err(e)) => Err(WalletError::Mac(e.to_string())),
                    _ => Ok(msg),
                };
                let waiter = key.and_then(|k| lock(&reader_pending).as_mut()?.remove(&k));
                if let Some(w) = waiter {
                    let _ = w.send(answer);
                }
            }
            // Dropping the senders tells every waiter the connection closed.
            lock(&reader_pending).take();
        });
        WalletClient {
            spec,
            institution: institution.to_string(),
            frames,
            pending,
            timeout: Duration::from_secs(30),
            records: None,
            mac,
        }
    }

    /// Signs every request with the link's key and refuses answers whose MAC
    /// is missing or wrong ([`WalletError::Mac`]). Set once, before sending.
    pub fn with_mac(self, mac: Option<Arc<LinkMac>>) -> Self {
        if let Some(mac) = mac {
            let _ = self.mac.set(mac);
        }
        self
    }

    /// The link's MACs, when this wallet signs.
    pub fn mac(&self) -> Option<Arc<LinkMac>> {
        self.mac.get().cloned()
    }

    /// A wallet with no connection, sending as `institution`: it builds
    /// messages (for a `Switch` driven in-process); [`Self::send`] fails.
    pub fn offline(institution: &str) -> WalletClient {
        let (frames, _) = mpsc::channel::<Bytes>(1);
        WalletClient {
            spec: Arc::new(Spec::switchboard()),
            institution: institution.to_string(),
            frames,
            pending: Arc::new(Mutex::new(None)),
            timeout: Duration::from_secs(30),
            records: None,
            mac: Arc::default(),
        }
    }

    /// Keeps every exchange of this wallet (and of its clones) in `records`,
    /// when given.
    pub fn with_records(mut self, records: Option<Arc<WalletRecords>>) -> Self {
        self.records = records;
        self
    }

    /// The institution id this wallet sends as.
    pub fn institution(&self) -> &str {
        &self.institution
    }

    /// Sets how long [`Self::send`] waits for an answer.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends a request and waits for its response; the exchange is recorded
    /// when the wallet keeps records.
    pub async fn send(&self, msg: &Message) -> Result<Message, WalletError> {
        let result = self.exchange(msg).await;
        let sent = !matches!(result, Err(WalletError::Build(_) | WalletError::NotSent));
        if let (Some(records), true) = (&self.records, sent) {
            records.record(&self.spec, msg, result.as_ref().ok());
        }
        result
    }

    async fn exchange(&self, msg: &Message) -> Result<Message, WalletError> {
        let body = match self.mac.get() {
            Some(mac) => mac.build(&self.spec, msg).map_err(|e| e.to_string()),
            None => build_bytes(&self.spec, msg).map_err(|e| e.to_string()),
        }
        .map_err(WalletError::Build)?;
        let key = MatchKey::of(msg, response_mti(msg.mti()))
            .ok_or_else(|| WalletError::Build("request lacks F7 or F11".into()))?;
        let (tx, rx) = oneshot::channel();
        match lock(&self.pending).as_mut() {
            Some(waiters) => waiters.insert(key, tx),
            None => return Err(WalletError::NotSent),
        };
        if self.frames.send(body).await.is_err() {
            if let Some(waiters) = lock(&self.pending).as_mut() {
                waiters.remove(&key);
            }
            return Err(WalletError::NotSent);
        }
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(WalletError::Closed),
            Err(_) => {
                if let Some(waiters) = lock(&self.pending).as_mut() {
                    waiters.remove(&key);
                }
                Err(WalletError::Timeout(self.timeout))
            }
        }
    }

    fn base(
        &self,
        mti: &[u8; 4],
        processing_code: &str,
        pan: &str,
        amount_minor: u64,
        now: NaiveDateTime,
        pos: &str,
    ) -> Message {
        let stan = next_stan();
        let mut m = Message::new(*mti);
        m.set(num::PAN, pan.to_string())
            .set(num::PROCESSING_CODE, processing_code.to_string())
            .set(num::AMOUNT, format_amount(amount_minor).unwrap_or_default())
            .set(num::POS_CONDITION, pos.to_string())
            .set(num::ACQUIRER, self.institution.clone())
            .set(num::CURRENCY, "156");
        set_times(&mut m, now, &stan);
        m.set(num::STAN, stan);
        m
    }

    /// A freeze (0100) of `amount_minor` on the sender's card.
    pub fn freeze(&self, payer_pan: &str, amount_minor: u64, now: NaiveDateTime) -> Message {
        self.base(b"0100", "030000", payer_pan, amount_minor, now, "06")
    }

    /// A receive (0200) of `amount_minor` onto `receiver_pan`, naming `freeze`.
    pub fn receive(
        &self,
        freeze: &Message,
        receiver_pan: &str,
        amount_minor: u64,
        now: NaiveDateTime,
    ) -> Message {
        let mut m = self.base(b"0200", "400000", receiver_pan, amount_minor, now, "00");
        if let Ok(od) = OriginalData::naming(freeze) {
            m.set(num::ORIGINAL_DATA, od.to_bytes().to_vec());
        }
        m
    }

    /// An unfreeze notice (0120) of what remains of `freeze`.
    pub fn unfreeze(&self, freeze: &Message, remaining_minor: u64, now: NaiveDateTime) -> Message {
        let pan = freeze.get_str(num::PAN).unwrap_or_default().to_string();
        let mut m = self.base(b"0120", "200000", &pan, remaining_minor, now, "06");
        if let Ok(od) = OriginalData::naming(freeze) {
            m.set(num::ORIGINAL_DATA, od.to_bytes().to_vec());
        }
        m
    }
}

/// Fields 7, 12, 13 and 37 of a request the wallet makes at `now` (UTC),
/// its local time being UTC+8: the clock's digits written straight rather
/// than through format strings, since the load makes thousands a second.
fn set_times(m: &mut Message, now: NaiveDateTime, stan: &str) {
    let at = transmission_digits(now);
    let local = transmission_digits(now + ChronoDuration::hours(8));
    let mut rrn = Vec::with_capacity(6 + stan.len());
    rrn.extend_from_slice(&at[2..8]);
    rrn.extend_from_slice(stan.as_bytes());
    m.set(num::TRANSMISSION, Bytes::copy_from_slice(&at))
        .set(num::LOCAL_TIME, Bytes::copy_from_slice(&local[4..]))
        .set(num::LOCAL_DATE, Bytes::copy_from_slice(&local[..4]))
        .set(num::RRN, rrn);
}

/// Field 39 of a response, or `--` when it has none.
pub fn code(response: &Message) -> String {
    response
        .get_str(num::RESPONSE_CODE)
        .unwrap_or("--")
        .to_string()
}

impl WalletClient {
    /// A credit (0200, F3 260000) as the switch would send it, for measuring a
    /// bank simulator directly (the one-hop floor).
    pub fn credit(
        &self,
        receiver_pan: &str,
        payer_pan: &str,
        amount_minor: u64,
        now: NaiveDateTime,
    ) -> Message {
        let mut m = self.base(b"0200", "260000", receiver_pan, amount_minor, now, "00");
        m.set(num::FORWARDER, self.institution.clone())
            .set(num::ACCOUNT_1, payer_pan.to_string());
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    #[test]
    fn a_requests_times_are_the_clocks_digits_in_utc_and_utc_plus_8() {
        for (y, mo, d, h, mi, sec) in [
            (2026, 3, 5, 10, 0, 0),
            (2026, 12, 31, 16, 59, 59),
            (2026, 2, 28, 23, 30, 7),
            (2028, 2, 29, 15, 59, 1),
        ] {
            let now = NaiveDate::from_ymd_opt(y, mo, d)
                .unwrap()
                .and_hms_opt(h, mi, sec)
                .unwrap();
            let local = now + ChronoDuration::hours(8);
            let mut m = Message::new(*b"0200");
            set_times(&mut m, now, "123456");
            let field = |n| m.get_str(n).unwrap().to_string();
            assert_eq!(
                field(num::TRANSMISSION),
                now.format("%m%d%H%M%S").to_string()
            );
            assert_eq!(field(num::LOCAL_TIME), local.format("%H%M%S").to_string());
            assert_eq!(field(num::LOCAL_DATE), local.format("%m%d").to_string());
            assert_eq!(field(num::RRN), format!("{}123456", now.format("%d%H%M")));
        }
    }
}

//! Resends: the key a request is known by, the digest of its content, and the
//! requests being decided right now (a resend of one of them waits for its
//! answer instead of running the flow twice).

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use iso8583::codec::Message;
use iso8583::fields::num;

use crate::dialect::InstitutionId;
use crate::store::RequestKey;

/// The request MTI with the repeat bit cleared: 0121 → 0120, 0421 → 0420.
fn original_mti(mti: &[u8; 4]) -> [u8; 4] {
    let mut m = *mti;
    if m[3] == b'1' {
        m[3] = b'0';
    }
    m
}

/// (MTI without repeat, F32, F7, F11); `None` when one is missing or malformed.
pub fn request_key(msg: &Message) -> Option<RequestKey> {
    let acquirer = InstitutionId::from_field(num::ACQUIRER, msg.get(num::ACQUIRER)?).ok()?;
    let transmission = msg.get(num::TRANSMISSION)?[..].try_into().ok()?;
    let stan = msg.get(num::STAN)?[..].try_into().ok()?;
    Some(RequestKey {
        mti: original_mti(msg.mti()),
        acquirer,
        transmission,
        stan,
    })
}

/// A digest of everything in the request but the MTI's repeat bit and its MAC, so a 0121
/// repeat of a 0120 is an exact resend: HMAC-SHA-256 under the data keys'
/// HMAC key when the store seals card data (the request carries a card
/// number; `crate::vault`), SHA-256 otherwise.
pub fn request_digest(msg: &Message) -> [u8; 32] {
    fn feed(msg: &Message, update: &mut dyn FnMut(&[u8])) {
        update(&original_mti(msg.mti()));
        // Field 128 authenticates the message, it is not its content: a
        // repeat (0121) carries another MAC than its original.
        for (number, value) in msg.fields().filter(|(n, _)| *n != iso8583::mac::MAC_FIELD) {
            update(&number.to_be_bytes());
            update(&(value.len() as u32).to_be_bytes());
            update(value);
        }
    }
    match crate::vault::vault() {
        Some(vault) => {
            let mut mac = vault.keyed_hasher();
            feed(msg, &mut |bytes| hmac::Mac::update(&mut mac, bytes));
            hmac::Mac::finalize(mac).into_bytes().into()
        }
        None => {
            let mut hasher = Sha256::new();
            feed(msg, &mut |bytes| hasher.update(bytes));
            hasher.finalize().into()
        }
    }
}

type Answer = Option<([u8; 32], Bytes)>;

#[derive(Default)]
pub(super) struct InFlight {
    requests: Mutex<HashMap<RequestKey, watch::Receiver<Answer>>>,
}

pub(super) enum Begin<'a> {
    /// First of its key: decide it, then [`Guard::finish`].
    Leader(Guard<'a>),
    /// A resend of a request being decided.
    Follower(Waiter),
}

pub(super) struct Guard<'a> {
    key: RequestKey,
    sender: watch::Sender<Answer>,
    owner: &'a InFlight,
}

pub(super) struct Waiter(watch::Receiver<Answer>);

impl InFlight {
    pub(super) fn begin(&self, key: RequestKey) -> Begin<'_> {
        let mut requests = self.requests.lock().expect("in-flight lock");
        if let Some(rx) = requests.get(&key) {
            return Begin::Follower(Waiter(rx.clone()));
        }
        let (sender, rx) = watch::channel(None);
        requests.insert(key, rx);
        Begin::Leader(Guard {
            key,
            sender,
            owner: self,
        })
    }
}

impl Guard<'_> {
    /// Publishes the answer to waiting resends.
    pub(super) fn finish(self, digest: [u8; 32], response: &Bytes) {
        let _ = self.sender.send(Some((digest, response.clone())));
    }

    /// Whether a resend waits on this request (besides the map's own receiver).
    #[cfg(test)]
    pub(super) fn has_followers(&self) -> bool {
        self.sender.receiver_count() > 1
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.owner
            .requests
            .lock()
            .expect("in-flight lock")
            .remove(&self.key);
    }
}

impl Waiter {
    /// The leader's answer; `None` if it gave up without one.
    pub(super) async fn wait(mut self) -> Answer {
        loop {
            if let Some(answer) = self.0.borrow().clone() {
                return Some(answer);
            }
            if self.0.changed().await.is_err() {
                return self.0.borrow().clone();
            }
        }
    }
}

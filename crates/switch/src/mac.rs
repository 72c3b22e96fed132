//! MACs on one link (a bank's connections, or a wallet listener's): the
//! working key in force, the one it replaced while messages signed with it
//! may still arrive, the key-encrypting key new working keys come under,
//! and the link's rule for the bytes covered.
//!
//! Every message the dialect lets carry field 128 is signed on the way out
//! and checked on the way in; the others (none in this dialect) pass as they
//! are. A working key changes by a network management message (0800, F70
//! [`KEY_CHANGE`]) carrying the new key under the KEK in field
//! [`KEY_CHANGE_FIELD`], checked by its KCV (`iso8583::mac::KeyChange`). The
//! old key stays good for checking for [`LinkMac::grace`] after a change, so
//! that messages already signed with it, on this connection or another of
//! the same link, are not refused; messages are signed with the new one from
//! the change on. The end that sends a key change accepts the new key from
//! the moment it sends it ([`LinkMac::expect`]), since the other end signs
//! with it as soon as it has taken it, possibly before its answer arrives.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use iso8583::codec::{build_bytes, Message};
use iso8583::mac::{
    self, Coverage, KeyChange, KeyEncryptingKey, MacAlgorithm, MacError, MacKey, TransportError,
};
use iso8583::spec::Spec;

/// F70 of a key change: the sender's new working key follows in
/// [`KEY_CHANGE_FIELD`].
pub const KEY_CHANGE: &str = "161";
/// The field carrying a key change: the new key under the KEK, in hex, then
/// its KCV (`iso8583::mac::KeyChange::to_text`).
pub const KEY_CHANGE_FIELD: u16 = 48;
/// How long a replaced key still verifies, unless configured.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(60);

struct Keys {
    current: Arc<MacKey>,
    /// The key before the last change, and until when it still verifies.
    previous: Option<(Arc<MacKey>, Instant)>,
    /// A key this end sent in a key change and the other end may already
    /// sign with: it verifies from the moment it is sent.
    pending: Option<Arc<MacKey>>,
}

/// The MAC state of one link, shared by its connections.
pub struct LinkMac {
    coverage: Coverage,
    kek: Option<KeyEncryptingKey>,
    grace: Duration,
    keys: RwLock<Keys>,
}

impl std::fmt::Debug for LinkMac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkMac")
            .field("algorithm", &self.algorithm().as_str())
            .field("kcv", &self.kcv())
            .field("covered", &self.coverage.to_string())
            .field("kek", &self.kek)
            .finish()
    }
}

/// Why a key change was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyChangeError {
    #[error("this link has no key-encrypting key (`kek_file`/`kek_env`): key changes are refused")]
    NoKek,
    #[error("the key change carries no field {KEY_CHANGE_FIELD}")]
    Missing,
    #[error(transparent)]
    Transport(#[from] TransportError),
}

impl LinkMac {
    pub fn new(key: MacKey, coverage: Coverage, kek: Option<KeyEncryptingKey>) -> LinkMac {
        LinkMac {
            coverage,
            kek,
            grace: DEFAULT_GRACE,
            keys: RwLock::new(Keys {
                current: Arc::new(key),
                previous: None,
                pending: None,
            }),
        }
    }

    /// How long a replaced key still verifies.
    pub fn with_grace(mut self, grace: Duration) -> LinkMac {
        self.grace = grace;
        self
    }

    pub fn grace(&self) -> Duration {
        self.grace
    }

    pub fn algorithm(&self) -> MacAlgorithm {
        self.current().algorithm()
    }

    pub fn coverage(&self) -> &Coverage {
        &self.coverage
    }

    pub fn has_kek(&self) -> bool {
        self.kek.is_some()
    }

    /// The check value of the working key in force.
    pub fn kcv(&self) -> String {
        self.current().kcv_hex()
    }

    fn current(&self) -> Arc<MacKey> {
        self.keys.read().expect("MAC keys lock").current.clone()
    }

    /// The wire form of `msg`, with field 128 set when the dialect lets the
    /// message carry it.
    pub fn build(&self, spec: &Spec, msg: &Message) -> Result<Bytes, MacError> {
        if mac::may_carry(spec, msg) {
            self.sign_carrying(spec, &mut msg.clone())
        } else {
            Ok(build_bytes(spec, msg)?)
        }
    }

    /// [`build`](Self::build) of a message the caller owns: its field 128
    /// is set in place rather than in a copy (copying a message's fields
    /// costs as much as its MAC's bookkeeping).
    pub fn sign(&self, spec: &Spec, msg: &mut Message) -> Result<Bytes, MacError> {
        if mac::may_carry(spec, msg) {
            self.sign_carrying(spec, msg)
        } else {
            Ok(build_bytes(spec, msg)?)
        }
    }

    /// Signs a message the dialect lets carry field 128 (the callers have
    /// asked `may_carry` once).
    fn sign_carrying(&self, spec: &Spec, msg: &mut Message) -> Result<Bytes, MacError> {
        mac::sign_bytes_with(spec, msg, &self.current(), &self.coverage)
    }

    /// Checks a received message (`wire` its body): its field 128 must be
    /// there and verify under the key in force, or under the one it replaced
    /// within the grace period. Messages that may not carry a MAC pass.
    pub fn check(&self, spec: &Spec, wire: &[u8], msg: &Message) -> Result<(), MacError> {
        if !mac::may_carry(spec, msg) {
            return Ok(());
        }
        let (current, others) = {
            let keys = self.keys.read().expect("MAC keys lock");
            let previous = keys
                .previous
                .as_ref()
                .filter(|(_, until)| Instant::now() < *until)
                .map(|(key, _)| key.clone());
            (keys.current.clone(), [keys.pending.clone(), previous])
        };
        let mut result = mac::verify_received_with(spec, wire, msg, &current, &self.coverage);
        for key in others.iter().flatten() {
            if result != Err(MacError::Wrong) {
                break;
            }
            result = mac::verify_received_with(spec, wire, msg, key, &self.coverage);
        }
        result
    }

    /// Accepts `key` for checking from now on, before it is in force: the
    /// key this end has just sent in a key change, which the other end puts
    /// in force (and may sign with) before its answer arrives here.
    pub fn expect(&self, key: MacKey) {
        self.keys.write().expect("MAC keys lock").pending = Some(Arc::new(key));
    }

    /// Stops accepting the key of a key change the other end refused.
    pub fn forget_pending(&self) {
        self.keys.write().expect("MAC keys lock").pending = None;
    }

    /// Puts `key` in force; the key it replaces still verifies for the grace period.
    pub fn install(&self, key: MacKey) {
        let mut keys = self.keys.write().expect("MAC keys lock");
        let old = std::mem::replace(&mut keys.current, Arc::new(key));
        keys.previous = Some((old, Instant::now() + self.grace));
        keys.pending = None;
    }

    /// The key a received key change (its field [`KEY_CHANGE_FIELD`])
    /// carries, decrypted under the KEK and checked by its KCV; not yet in force.
    pub fn receive_key_change(&self, msg: &Message) -> Result<MacKey, KeyChangeError> {
        let kek = self.kek.as_ref().ok_or(KeyChangeError::NoKek)?;
        let text = msg
            .get_str(KEY_CHANGE_FIELD)
            .ok_or(KeyChangeError::Missing)?;
        Ok(KeyChange::receive(kek, text)?)
    }

    /// A new random working key under the KEK, to send; put it in force
    /// ([`LinkMac::install`]) once the other end has accepted it.
    pub fn new_key_change(&self) -> Result<KeyChange, KeyChangeError> {
        use aes_gcm::aead::rand_core::RngCore;
        let kek = self.kek.as_ref().ok_or(KeyChangeError::NoKek)?;
        let len = match kek.algorithm() {
            MacAlgorithm::X919 => 16,
            MacAlgorithm::AesCmac => self.current().key_len(),
        };
        let mut bytes = zeroize::Zeroizing::new(vec![0u8; len]);
        loop {
            aes_gcm::aead::OsRng.fill_bytes(&mut bytes);
            // A random x9.19 key with equal halves is refused (single DES):
            // draw again rather than fail.
            match KeyChange::new(kek, &bytes) {
                Err(TransportError::BadKey { .. }) => continue,
                other => return Ok(other?),
            }
        }
    }
}

/// Reads a key given by file (mode 0600) or by environment variable;
/// errors name the setting, never the key.
pub fn read_key(
    file: Option<&std::path::Path>,
    env: Option<&str>,
) -> Result<zeroize::Zeroizing<String>, String> {
    match (file, env) {
        (Some(path), None) => {
            crate::secret_file::read(path).map(|t| crate::secret_file::hex_digits(&t))
        }
        (None, Some(var)) => std::env::var(var)
            .map(|t| crate::secret_file::hex_digits(&t))
            .map_err(|_| format!("the environment variable {var} is not set")),
        (Some(_), Some(_)) => {
            Err("give the key by file or by environment variable, not both".into())
        }
        (None, None) => Err("no key: give `key_file` or `key_env`".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(hex: &str) -> MacKey {
        MacKey::from_hex(MacAlgorithm::X919, hex).unwrap()
    }

    const A: &str = "0123456789ABCDEFFEDCBA9876543210";
    const B: &str = "1111111111111111222222222222222F";
    const C: &str = "3333333333333333444444444444444F";

    #[test]
    fn signing_in_place_sends_what_building_a_copy_does() {
        let spec = Spec::switchboard();
        let link = LinkMac::new(key(A), Coverage::Message, None);
        let mut msg = Message::new(*b"0800");
        msg.set(7, "1201083000").set(11, "000001").set(70, "301");
        let built = link.build(&spec, &msg).unwrap();
        assert!(
            !msg.has(mac::MAC_FIELD),
            "build leaves the message as it was"
        );
        let signed = link.sign(&spec, &mut msg).unwrap();
        assert_eq!(signed, built);
        assert_eq!(
            msg.get(mac::MAC_FIELD).map(|v| v.to_vec()),
            iso8583::parse(&spec, built)
                .unwrap()
                .get(mac::MAC_FIELD)
                .map(|v| v.to_vec()),
            "the message now carries the MAC it was sent with"
        );
    }

    /// A freeze signed under `hex`, as received: its body and what it parsed into.
    fn signed_under(spec: &Spec, hex: &str) -> (Bytes, Message) {
        let sender = LinkMac::new(key(hex), Coverage::Message, None);
        let mut msg = Message::new(*b"0800");
        msg.set(7, "1201083000").set(11, "000001").set(70, "301");
        let wire = sender.build(spec, &msg).unwrap();
        let back = iso8583::parse(spec, wire.clone()).unwrap();
        assert!(back.has(mac::MAC_FIELD), "network management is signed");
        (wire, back)
    }

    #[test]
    fn replaced_keys_verify_for_the_grace_period_and_sent_keys_at_once() {
        let spec = Spec::switchboard();
        let (under_a, msg_a) = signed_under(&spec, A);
        let (under_c, msg_c) = signed_under(&spec, C);

        let link = LinkMac::new(key(A), Coverage::Message, None);
        assert_eq!(link.check(&spec, &under_a, &msg_a), Ok(()));
        link.install(key(B));
        assert_eq!(
            link.check(&spec, &under_a, &msg_a),
            Ok(()),
            "within the grace period"
        );

        let strict = LinkMac::new(key(A), Coverage::Message, None).with_grace(Duration::ZERO);
        strict.install(key(B));
        assert_eq!(strict.check(&spec, &under_a, &msg_a), Err(MacError::Wrong));

        assert_eq!(strict.check(&spec, &under_c, &msg_c), Err(MacError::Wrong));
        strict.expect(key(C));
        assert_eq!(
            strict.check(&spec, &under_c, &msg_c),
            Ok(()),
            "a key sent verifies"
        );
        strict.forget_pending();
        assert_eq!(strict.check(&spec, &under_c, &msg_c), Err(MacError::Wrong));
    }

    #[test]
    fn key_changes_made_here_are_taken_there() {
        let kek = || KeyEncryptingKey::from_hex(MacAlgorithm::X919, C).unwrap();
        let bank = LinkMac::new(key(A), Coverage::Message, Some(kek()));
        let switch = LinkMac::new(key(A), Coverage::Message, Some(kek()));
        let change = bank.new_key_change().unwrap();
        let mut request = Message::new(*b"0800");
        request
            .set(7, "1201083000")
            .set(11, "000002")
            .set(70, KEY_CHANGE)
            .set(KEY_CHANGE_FIELD, change.to_text().to_string());
        let taken = switch.receive_key_change(&request).unwrap();
        assert_eq!(taken.kcv_hex(), change.key.kcv_hex());
        assert_ne!(taken.kcv_hex(), bank.kcv());
        // Without a KEK, or without field 48, nothing is taken.
        let plain = LinkMac::new(key(A), Coverage::Message, None);
        assert!(matches!(
            plain.receive_key_change(&request),
            Err(KeyChangeError::NoKek)
        ));
        let mut bare = request.clone();
        bare.remove(KEY_CHANGE_FIELD);
        assert!(matches!(
            switch.receive_key_change(&bare),
            Err(KeyChangeError::Missing)
        ));
        assert!(!format!("{switch:?}").contains(A));
    }
}

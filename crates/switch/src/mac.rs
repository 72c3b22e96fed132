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
//! the change on.

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
            mac::sign_bytes_with(spec, &mut msg.clone(), &self.current(), &self.coverage)
        } else {
            Ok(build_bytes(spec, msg)?)
        }
    }

    /// Checks a received message (`wire` its body): its field 128 must be
    /// there and verify under the key in force, or under the one it replaced
    /// within the grace period. Messages that may not carry a MAC pass.
    pub fn check(&self, spec: &Spec, wire: &[u8], msg: &Message) -> Result<(), MacError> {
        if !mac::may_carry(spec, msg) {
            return Ok(());
        }
        let (current, previous) = {
            let keys = self.keys.read().expect("MAC keys lock");
            let previous = keys
                .previous
                .as_ref()
                .filter(|(_, until)| Instant::now() < *until)
                .map(|(key, _)| key.clone());
            (keys.current.clone(), previous)
        };
        match mac::verify_received_with(spec, wire, msg, &current, &self.coverage) {
            Err(MacError::Wrong) => match previous {
                Some(old) => mac::verify_received_with(spec, wire, msg, &old, &self.coverage),
                None => Err(MacError::Wrong),
            },
            other => other,
        }
    }

    /// Puts `key` in force; the key it replaces still verifies for the grace period.
    pub fn install(&self, key: MacKey) {
        let mut keys = self.keys.write().expect("MAC keys lock");
        let old = std::mem::replace(&mut keys.current, Arc::new(key));
        keys.previous = Some((old, Instant::now() + self.grace));
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

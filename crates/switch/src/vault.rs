//! Card data at rest: card numbers and raw messages sealed with AES-256-GCM
//! before the store writes them, opened when it reads them back, and the
//! digests that find a resend keyed with HMAC-SHA-256, so nothing a store
//! holds (database files, their WAL, backups) gives a card number away
//! without the keys (PCI DSS 3.5.1).
//!
//! The keys come from outside the store and the configuration: a key file
//! written by `switchboard keygen` (mode 0600, refused when others may read
//! it) named by `[security] data_key_file`, or the same text in the
//! environment variable `SWITCHBOARD_DATA_KEYS`. A key file holds several
//! data keys by id and which one is `current`: values are sealed under the
//! current key and carry its id, so an older key stays readable for as long
//! as it is in the file (rotation: add a key, make it current; values sealed
//! under the old one are opened with it).
//!
//! Sealed values are recognisable, so a store written before encryption was
//! turned on keeps working: text is `enc1:<key id>:<hex of nonce, ciphertext
//! and tag>`, bytes start with [`SEALED_MAGIC`]; anything else is taken as
//! written in clear. Each value is bound to its column (`purpose`, the
//! GCM associated data): a sealed card number cannot be moved into another
//! column and opened there.
//!
//! One vault per process, installed at start ([`install`]) and read by the
//! stores through [`vault`]: the keys are the process's, like its identity,
//! and every store backend uses the same ones. Without a vault installed the
//! stores write in clear (development only: `serve` says so loudly, and
//! refuses when `[security] require_encryption = true`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::OnceLock;

use aes_gcm::aead::{Aead, AeadCore, AeadInPlace, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hmac::Hmac;
use serde::Deserialize;
use sha2::Sha256;
use zeroize::Zeroizing;

/// The first bytes of a sealed byte value: not a digit, not a CUPS header
/// length, not an EBCDIC digit, so no raw message starts with them.
pub const SEALED_MAGIC: [u8; 4] = [0xE5, 0x5B, 0x45, 0x01];

const TEXT_PREFIX: &str = "enc1:";
const NONCE_LEN: usize = 12;
/// AES-GCM's tag.
const TAG_LEN: usize = 16;

/// The comment at the top of every key file `switchboard keygen` writes.
const KEY_FILE_HEADER: &str =
    "# switchboard data keys. Keep this file mode 0600, away from the store\n\
     # and its backups; without it, the card data the store holds cannot be read.\n\
     # Rotate: `switchboard keygen --add FILE` adds a key and makes it current;\n\
     # `switchboard rekey` then seals every stored value under it, after which\n\
     # the old keys can be removed from [data].\n";

/// The environment variable that may hold the key file's text.
pub const KEYS_ENV: &str = "SWITCHBOARD_DATA_KEYS";

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("{0}")]
    KeyFile(String),
    #[error("a value sealed under key {0} cannot be opened: that key is not in the key file")]
    UnknownKey(u8),
    #[error("a sealed value does not open: it was changed, or sealed for another column, or under another key")]
    Tampered,
    #[error("a sealed value is malformed: {0}")]
    Malformed(String),
    #[error("a vault is already installed in this process")]
    AlreadyInstalled,
}

/// The key file's text: `current = N`, `hmac = "HEX"`, `[data]` with
/// `N = "HEX"` lines (64 hex digits each).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    current: u8,
    hmac: String,
    data: BTreeMap<String, String>,
}

/// The keys of a process.
pub struct Vault {
    current: u8,
    ciphers: BTreeMap<u8, Aes256Gcm>,
    hmac_key: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the keys: their ids only.
        f.debug_struct("Vault")
            .field("current", &self.current)
            .field("key_ids", &self.ciphers.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn key_bytes(what: &str, hex_text: &str) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    let bytes = Zeroizing::new(
        hex::decode(hex_text.trim())
            .map_err(|_| VaultError::KeyFile(format!("{what} is not hex")))?,
    );
    if bytes.len() != 32 {
        return Err(VaultError::KeyFile(format!(
            "{what} has {} bytes; keys are 32 bytes (64 hex digits)",
            bytes.len()
        )));
    }
    Ok(bytes)
}

impl Vault {
    /// Keys from the text of a key file.
    pub fn parse(text: &str) -> Result<Vault, VaultError> {
        let file: KeyFile = toml::from_str(text)
            .map_err(|e| VaultError::KeyFile(format!("not a key file: {}", e.message())))?;
        let mut ciphers = BTreeMap::new();
        for (id, hex_text) in &file.data {
            let id: u8 =
                id.parse().ok().filter(|&id| id > 0).ok_or_else(|| {
                    VaultError::KeyFile(format!("data key id {id:?}: use 1 to 255"))
                })?;
            let key = key_bytes(&format!("data key {id}"), hex_text)?;
            let cipher = Aes256Gcm::new_from_slice(&key)
                .map_err(|_| VaultError::KeyFile(format!("data key {id}: not an AES-256 key")))?;
            ciphers.insert(id, cipher);
        }
        if !ciphers.contains_key(&file.current) {
            return Err(VaultError::KeyFile(format!(
                "current = {} names no key of [data]",
                file.current
            )));
        }
        Ok(Vault {
            current: file.current,
            ciphers,
            hmac_key: key_bytes("hmac", &file.hmac)?,
        })
    }

    /// Keys from a key file, which only its owner may read.
    pub fn from_file(path: &Path) -> Result<Vault, VaultError> {
        let text = crate::secret_file::read(path).map_err(VaultError::KeyFile)?;
        Vault::parse(&text).map_err(|e| match e {
            VaultError::KeyFile(why) => VaultError::KeyFile(format!("{}: {why}", path.display())),
            other => other,
        })
    }

    /// A new key file's text: one data key (id 1, current) and an HMAC key,
    /// both from the operating system's random source.
    pub fn generate() -> Zeroizing<String> {
        let data = Aes256Gcm::generate_key(OsRng);
        let hmac = Aes256Gcm::generate_key(OsRng);
        Zeroizing::new(format!(
            "{KEY_FILE_HEADER}current = 1\nhmac = \"{}\"\n\n[data]\n1 = \"{}\"\n",
            hex::encode(hmac),
            hex::encode(data)
        ))
    }

    /// The text of a key file holding these keys plus a new data key, which
    /// becomes current (id: one above the highest, up to 255); the HMAC key
    /// is kept (see [`Vault::keyed_hasher`]). `text` is the file's text,
    /// re-read so that nothing but what it holds is written back.
    pub fn with_new_key(text: &str) -> Result<(Zeroizing<String>, u8), VaultError> {
        let file: KeyFile = toml::from_str(text)
            .map_err(|e| VaultError::KeyFile(format!("not a key file: {}", e.message())))?;
        // Checks every key, as a switch reading the file would.
        let vault = Vault::parse(text)?;
        let highest = vault.ciphers.keys().max().copied().unwrap_or(0);
        let id = highest.checked_add(1).ok_or_else(|| {
            VaultError::KeyFile(
                "the key file already has a key with id 255; remove keys no value is sealed under \
                 (after `switchboard rekey`) and renumber"
                    .into(),
            )
        })?;
        let mut data: BTreeMap<u8, Zeroizing<String>> = file
            .data
            .iter()
            .map(|(k, v)| (k.parse().unwrap_or(0), Zeroizing::new(v.trim().to_string())))
            .collect();
        data.insert(
            id,
            Zeroizing::new(hex::encode(Aes256Gcm::generate_key(OsRng))),
        );
        let mut out = Zeroizing::new(String::from(KEY_FILE_HEADER));
        out.push_str(&format!(
            "current = {id}\nhmac = \"{}\"\n\n[data]\n",
            file.hmac.trim()
        ));
        for (k, v) in &data {
            out.push_str(&format!("{k} = \"{}\"\n", v.as_str()));
        }
        Ok((out, id))
    }

    /// The ids of the data keys, and the current one.
    pub fn key_ids(&self) -> (Vec<u8>, u8) {
        (self.ciphers.keys().copied().collect(), self.current)
    }

    /// Appends `plain` sealed under the current key (nonce, ciphertext,
    /// tag) to `out`, and returns the key's id. Encrypted in place in
    /// `out`: one buffer per sealed value, no copy of the ciphertext.
    fn seal_into(&self, purpose: &str, plain: &[u8], out: &mut Vec<u8>) -> u8 {
        let cipher = &self.ciphers[&self.current];
        // The nonce comes from the thread's CSPRNG (ChaCha, seeded and
        // reseeded from the OS): random 96-bit nonces as SP 800-38D 8.2.2
        // allows, without a system call per value sealed.
        let nonce = Aes256Gcm::generate_nonce(&mut rand::thread_rng());
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plain);
        let tag = cipher
            .encrypt_in_place_detached(&nonce, purpose.as_bytes(), &mut out[start..])
            .expect("AES-GCM encrypts any message shorter than 64 GiB");
        out.extend_from_slice(&tag);
        self.current
    }

    fn open(&self, purpose: &str, id: u8, sealed: &[u8]) -> Result<Vec<u8>, VaultError> {
        let cipher = self.ciphers.get(&id).ok_or(VaultError::UnknownKey(id))?;
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(VaultError::Malformed(
                "shorter than a nonce and a tag".into(),
            ));
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: purpose.as_bytes(),
                },
            )
            .map_err(|_| VaultError::Tampered)
    }

    /// A text value (a card number) sealed for the column `purpose`.
    pub fn seal_text(&self, purpose: &str, plain: &str) -> String {
        let mut sealed = Vec::with_capacity(NONCE_LEN + plain.len() + TAG_LEN);
        let id = self.seal_into(purpose, plain.as_bytes(), &mut sealed);
        format!("{TEXT_PREFIX}{id}:{}", hex::encode(sealed))
    }

    /// A stored text value, opened if sealed.
    pub fn open_text(&self, purpose: &str, stored: &str) -> Result<String, VaultError> {
        let Some(rest) = stored.strip_prefix(TEXT_PREFIX) else {
            return Ok(stored.to_string());
        };
        let (id, hex_text) = rest
            .split_once(':')
            .ok_or_else(|| VaultError::Malformed("no key id".into()))?;
        let id: u8 = id
            .parse()
            .map_err(|_| VaultError::Malformed(format!("key id {id:?}")))?;
        let sealed = hex::decode(hex_text).map_err(|_| VaultError::Malformed("not hex".into()))?;
        let plain = self.open(purpose, id, &sealed)?;
        String::from_utf8(plain).map_err(|_| VaultError::Malformed("not text".into()))
    }

    /// A byte value (a raw message) sealed for the column `purpose`.
    pub fn seal_bytes(&self, purpose: &str, plain: &[u8]) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(SEALED_MAGIC.len() + 1 + NONCE_LEN + plain.len() + TAG_LEN);
        out.extend_from_slice(&SEALED_MAGIC);
        out.push(self.current);
        self.seal_into(purpose, plain, &mut out);
        out
    }

    /// A stored byte value, opened if sealed.
    pub fn open_bytes(&self, purpose: &str, stored: &[u8]) -> Result<Vec<u8>, VaultError> {
        match stored.strip_prefix(&SEALED_MAGIC[..]) {
            Some([id, sealed @ ..]) => self.open(purpose, *id, sealed),
            Some([]) => Err(VaultError::Malformed("no key id".into())),
            None => Ok(stored.to_vec()),
        }
    }

    /// A stored text value sealed anew under the current key, or `None` when
    /// it is sealed under the current key already (rotation, `switchboard
    /// rekey`). A value stored in clear is sealed too.
    pub fn reseal_text(&self, purpose: &str, stored: &str) -> Result<Option<String>, VaultError> {
        let current = format!("{TEXT_PREFIX}{}:", self.current);
        if stored.starts_with(&current) {
            return Ok(None);
        }
        let plain = self.open_text(purpose, stored)?;
        Ok(Some(self.seal_text(purpose, &plain)))
    }

    /// A stored byte value sealed anew under the current key, or `None` when
    /// it is sealed under it already or is empty (a journal message purged
    /// by retention).
    pub fn reseal_bytes(
        &self,
        purpose: &str,
        stored: &[u8],
    ) -> Result<Option<Vec<u8>>, VaultError> {
        if stored.is_empty()
            || stored
                .strip_prefix(&SEALED_MAGIC[..])
                .and_then(|r| r.first())
                == Some(&self.current)
        {
            return Ok(None);
        }
        let plain = self.open_bytes(purpose, stored)?;
        Ok(Some(self.seal_bytes(purpose, &plain)))
    }

    /// The key id a stored value is sealed under; `None` in clear.
    pub fn key_id_of_bytes(stored: &[u8]) -> Option<u8> {
        stored
            .strip_prefix(&SEALED_MAGIC[..])
            .and_then(|r| r.first().copied())
    }

    /// An HMAC-SHA-256 under the HMAC key, to digest a message that
    /// carries a card number so that nobody without the key can test
    /// guesses against the digest.
    pub fn keyed_hasher(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(&self.hmac_key)
            .expect("HMAC takes a key of any length")
    }
}

/// Creates the key file `path` (mode 0600, never over an existing file)
/// holding `text`, synced to disk.
pub fn create_key_file(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// Adds a new data key to the key file `path` and makes it current
/// ([`Vault::with_new_key`]); returns its id. The new text is written
/// beside the file and renamed over it, so the file is whole at every
/// moment, whatever happens.
pub fn add_key_to_file(path: &Path) -> Result<u8, VaultError> {
    let failed = |e: std::io::Error| VaultError::KeyFile(format!("{}: {e}", path.display()));
    // The same checks as a switch reading it (private, well-formed).
    Vault::from_file(path)?;
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(failed)?);
    let (new_text, id) = Vault::with_new_key(&text)?;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".new");
    let temporary = std::path::PathBuf::from(temporary);
    create_key_file(&temporary, &new_text)
        .map_err(|e| VaultError::KeyFile(format!("{}: {e}", temporary.display())))?;
    std::fs::rename(&temporary, path).map_err(failed)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // The rename itself durable.
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(id)
}

static VAULT: OnceLock<Vault> = OnceLock::new();

/// Where the keys of a process came from, for its start-up log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    File(std::path::PathBuf),
    Environment,
    /// None configured: card data is stored in clear (development only).
    None,
}

/// Reads and installs the keys `[security]` names: the key file, else the
/// environment variable [`KEYS_ENV`]; with neither, nothing is installed,
/// and that is an error when `require_encryption` is set.
pub fn install_configured(
    security: &crate::config::SecurityConfig,
) -> Result<KeySource, VaultError> {
    let (vault, source) = match (&security.data_key_file, std::env::var(KEYS_ENV)) {
        (Some(path), _) => (Vault::from_file(path)?, KeySource::File(path.clone())),
        (None, Ok(text)) => {
            let text = Zeroizing::new(text);
            let vault = Vault::parse(&text).map_err(|e| match e {
                VaultError::KeyFile(why) => VaultError::KeyFile(format!("{KEYS_ENV}: {why}")),
                other => other,
            })?;
            (vault, KeySource::Environment)
        }
        (None, Err(_)) if security.require_encryption => {
            return Err(VaultError::KeyFile(format!(
                "[security] require_encryption = true, but no data key is configured: \
                 set [security] data_key_file (switchboard keygen --out FILE) or {KEYS_ENV}"
            )))
        }
        (None, Err(_)) => return Ok(KeySource::None),
    };
    match install(vault) {
        Ok(()) | Err(VaultError::AlreadyInstalled) => Ok(source),
        Err(e) => Err(e),
    }
}

/// Installs the process's keys; from now on the stores seal what they write.
pub fn install(vault: Vault) -> Result<(), VaultError> {
    VAULT.set(vault).map_err(|_| VaultError::AlreadyInstalled)
}

/// The process's keys, if installed.
pub fn vault() -> Option<&'static Vault> {
    VAULT.get()
}

/// A card number as a store writes it: sealed when a vault is installed.
pub fn seal_text(purpose: &str, plain: &str) -> String {
    match vault() {
        Some(v) => v.seal_text(purpose, plain),
        None => plain.to_string(),
    }
}

/// A byte value as a store writes it: sealed when a vault is installed.
pub fn seal_bytes(purpose: &str, plain: &[u8]) -> Vec<u8> {
    match vault() {
        Some(v) => v.seal_bytes(purpose, plain),
        None => plain.to_vec(),
    }
}

/// A stored text value as the switch reads it. A sealed value without a
/// vault cannot be read: an error, never the sealed text.
pub fn open_text(purpose: &str, stored: &str) -> Result<String, VaultError> {
    match vault() {
        Some(v) => v.open_text(purpose, stored),
        None if stored.starts_with(TEXT_PREFIX) => Err(VaultError::KeyFile(
            "the store holds sealed card data and no data key is configured ([security] data_key_file)".into(),
        )),
        None => Ok(stored.to_string()),
    }
}

/// A stored byte value as the switch reads it.
pub fn open_bytes(purpose: &str, stored: &[u8]) -> Result<Vec<u8>, VaultError> {
    match vault() {
        Some(v) => v.open_bytes(purpose, stored),
        None if stored.starts_with(&SEALED_MAGIC) => Err(VaultError::KeyFile(
            "the store holds sealed messages and no data key is configured ([security] data_key_file)".into(),
        )),
        None => Ok(stored.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault() -> Vault {
        Vault::parse(&Vault::generate()).unwrap()
    }

    #[test]
    fn sealed_values_open_only_for_their_column_and_key() {
        let v = vault();
        let sealed = v.seal_text("payer_pan", "6222021234567890");
        assert!(sealed.starts_with("enc1:1:"), "{sealed}");
        assert!(!sealed.contains("6222021234567890"));
        assert_eq!(
            v.open_text("payer_pan", &sealed).unwrap(),
            "6222021234567890"
        );
        assert!(matches!(
            v.open_text("receiver_pan", &sealed),
            Err(VaultError::Tampered)
        ));
        // Another process's keys cannot open it.
        assert!(matches!(
            vault().open_text("payer_pan", &sealed),
            Err(VaultError::Tampered)
        ));
        // Two seals of one value differ (fresh nonces).
        assert_ne!(sealed, v.seal_text("payer_pan", "6222021234567890"));
        // A value written before encryption reads as it was.
        assert_eq!(
            v.open_text("payer_pan", "6222021234567890").unwrap(),
            "6222021234567890"
        );

        let raw = b"0100\x72\x3a\x40\x01\x08\xc1\x80\x0016622202123456789003";
        let sealed = v.seal_bytes("journal.raw", raw);
        assert_eq!(&sealed[..4], &SEALED_MAGIC);
        assert!(!sealed.windows(16).any(|w| w == b"6222021234567890"));
        assert_eq!(v.open_bytes("journal.raw", &sealed).unwrap(), raw);
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(matches!(
            v.open_bytes("journal.raw", &flipped),
            Err(VaultError::Tampered)
        ));
        assert_eq!(v.open_bytes("journal.raw", raw).unwrap(), raw);
    }

    #[test]
    fn an_old_key_stays_readable_after_rotation() {
        let old = Vault::parse(
            "current = 1\nhmac = \"00000000000000000000000000000000000000000000000000000000000000aa\"\n[data]\n1 = \"1111111111111111111111111111111111111111111111111111111111111111\"\n",
        )
        .unwrap();
        let sealed = old.seal_text("payer_pan", "6222021234567890");
        let rotated = Vault::parse(
            "current = 2\nhmac = \"00000000000000000000000000000000000000000000000000000000000000aa\"\n[data]\n1 = \"1111111111111111111111111111111111111111111111111111111111111111\"\n2 = \"2222222222222222222222222222222222222222222222222222222222222222\"\n",
        )
        .unwrap();
        assert_eq!(
            rotated.open_text("payer_pan", &sealed).unwrap(),
            "6222021234567890"
        );
        assert!(rotated.seal_text("payer_pan", "x").starts_with("enc1:2:"));
        let dropped = Vault::parse(
            "current = 2\nhmac = \"00000000000000000000000000000000000000000000000000000000000000aa\"\n[data]\n2 = \"2222222222222222222222222222222222222222222222222222222222222222\"\n",
        )
        .unwrap();
        assert!(matches!(
            dropped.open_text("payer_pan", &sealed),
            Err(VaultError::UnknownKey(1))
        ));
    }

    #[test]
    fn a_new_key_becomes_current_and_rekeyed_values_open_without_the_old_one() {
        let first = Vault::generate();
        let old = Vault::parse(&first).unwrap();
        let pan = old.seal_text("payer_pan", "6222021234567890");
        let raw = old.seal_bytes("journal.raw", b"0100raw");
        let (text, id) = Vault::with_new_key(&first).unwrap();
        assert_eq!(id, 2);
        let rotated = Vault::parse(&text).unwrap();
        assert_eq!(rotated.key_ids(), (vec![1, 2], 2));
        let pan2 = rotated.reseal_text("payer_pan", &pan).unwrap().unwrap();
        let raw2 = rotated.reseal_bytes("journal.raw", &raw).unwrap().unwrap();
        assert!(pan2.starts_with("enc1:2:"));
        assert_eq!(Vault::key_id_of_bytes(&raw2), Some(2));
        // Sealed under the current key already, or purged: left alone.
        assert!(rotated.reseal_text("payer_pan", &pan2).unwrap().is_none());
        assert!(rotated
            .reseal_bytes("journal.raw", &raw2)
            .unwrap()
            .is_none());
        assert!(rotated.reseal_bytes("journal.raw", b"").unwrap().is_none());
        // In clear: sealed.
        assert!(rotated
            .reseal_text("payer_pan", "6222021234567890")
            .unwrap()
            .is_some());
        // The same HMAC key: resend digests still match.
        let digest = |v: &Vault| hmac::Mac::finalize(v.keyed_hasher()).into_bytes();
        assert_eq!(digest(&old), digest(&rotated));
        // Without key 1, the resealed values open.
        let only_new: String = text
            .lines()
            .filter(|l| !l.starts_with("1 = "))
            .map(|l| format!("{l}\n"))
            .collect();
        let only_new = Vault::parse(&only_new).unwrap();
        assert_eq!(
            only_new.open_text("payer_pan", &pan2).unwrap(),
            "6222021234567890"
        );
        assert_eq!(
            only_new.open_bytes("journal.raw", &raw2).unwrap(),
            b"0100raw"
        );
        assert!(only_new.open_text("payer_pan", &pan).is_err());
    }

    #[test]
    fn key_files_are_checked() {
        let err = |text: &str| Vault::parse(text).unwrap_err().to_string();
        assert!(err("current = 3\nhmac = \"00\"\n[data]\n").contains("current = 3 names no key"));
        assert!(err("current = 1\nhmac = \"00\"\n[data]\n1 = \"abcd\"\n").contains("32 bytes"));
        assert!(err("nonsense").contains("not a key file"));
        let text = Vault::generate();
        let v = Vault::parse(&text).unwrap();
        assert_eq!(v.key_ids(), (vec![1], 1));
        assert!(!format!("{v:?}").contains(&text[text.find("[data]").unwrap() + 12..][..16]));
    }

    #[cfg(unix)]
    #[test]
    fn a_key_file_others_may_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        std::fs::write(&path, Vault::generate().as_bytes()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Vault::from_file(&path).unwrap_err().to_string();
        assert!(
            err.contains("mode 0644") && err.contains("chmod 600"),
            "{err}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Vault::from_file(&path).is_ok());
    }
}

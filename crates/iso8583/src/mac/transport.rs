//! Working MAC keys sent over the link itself, encrypted under a
//! key-encrypting key (KEK) both ends were given out of band, and checked
//! by their key check value: how a link changes keys without a restart.
//!
//! - An `x9.19` link's KEK is a double- or triple-length DES key (16 or 24
//!   bytes); the new key is encrypted block by block with triple DES (ECB,
//!   the classic key-transport form of ANSI X9.17 and most HSMs' "key under
//!   ZMK" export).
//! - An `aes-cmac` link's KEK is an AES key (16, 24 or 32 bytes); the new key
//!   is wrapped with AES Key Wrap (RFC 3394, NIST SP 800-38F KW), which
//!   also detects a wrong KEK or altered bytes.
//!
//! On the wire a key change carries [`KeyChange::to_text`]: the encrypted
//! key in hex followed by the new key's 6-digit KCV. The receiver decrypts
//! it, rebuilds the key and refuses it unless its KCV is the one sent.

use std::fmt;

use des::cipher::{generic_array::GenericArray, BlockDecrypt, BlockEncrypt, KeyInit};
use des::{TdesEde2, TdesEde3};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::{KeyError, MacAlgorithm, MacKey};
use crate::codec::charset::{hex_value, to_hex};

/// Longest working key, wrapped (AES-256 plus the wrap's 8 bytes).
const MAX_WRAPPED: usize = 40;

/// Why a key change could not be made or was refused. Never holds key bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error("key-encrypting key: {0}")]
    Kek(KeyError),
    #[error("the key change is not hex digits followed by a 6-digit KCV")]
    Malformed,
    #[error("the encrypted key does not decrypt under this KEK (wrong KEK, or altered)")]
    Unwrap,
    #[error("the new key is not a valid {algorithm} key: {reason}")]
    BadKey {
        algorithm: MacAlgorithm,
        reason: KeyError,
    },
    #[error("the new key's check value is {actual}, the key change said {sent}")]
    KcvMismatch { sent: String, actual: String },
}

enum Cipher {
    Tdes2(TdesEde2),
    Tdes3(TdesEde3),
    Aes128(aes_kw::KekAes128),
    Aes192(aes_kw::KekAes192),
    Aes256(aes_kw::KekAes256),
}

/// A key-encrypting key for one link's working MAC keys.
pub struct KeyEncryptingKey {
    algorithm: MacAlgorithm,
    cipher: Cipher,
    kcv: [u8; 3],
}

impl fmt::Debug for KeyEncryptingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyEncryptingKey")
            .field("for", &self.algorithm.as_str())
            .field("kcv", &to_hex(&self.kcv))
            .finish()
    }
}

/// Bytes from hex, wiped on drop; errors name the position, never the digits.
pub(super) fn key_bytes_from_hex(hex: &str) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let hex = hex.as_bytes();
    if let Some(position) = hex.iter().position(|&c| hex_value(c).is_none()) {
        return Err(KeyError::NotHex { position });
    }
    if !hex.len().is_multiple_of(2) {
        return Err(KeyError::OddLength { digits: hex.len() });
    }
    Ok(Zeroizing::new(
        hex.chunks_exact(2)
            .map(|pair| (hex_value(pair[0]).unwrap_or(0) << 4) | hex_value(pair[1]).unwrap_or(0))
            .collect(),
    ))
}

impl KeyEncryptingKey {
    /// The KEK of a link whose MACs use `algorithm`, from hex digits: 32 or
    /// 48 for `x9.19` (triple DES), 32, 48 or 64 for `aes-cmac` (AES).
    pub fn from_hex(algorithm: MacAlgorithm, hex: &str) -> Result<KeyEncryptingKey, KeyError> {
        let bytes = key_bytes_from_hex(hex)?;
        KeyEncryptingKey::from_bytes(algorithm, &bytes)
    }

    pub fn from_bytes(algorithm: MacAlgorithm, key: &[u8]) -> Result<KeyEncryptingKey, KeyError> {
        let wrong_length = |expected| KeyError::WrongLength {
            algorithm,
            expected,
            actual: key.len(),
        };
        let cipher = match (algorithm, key.len()) {
            (MacAlgorithm::X919, 16) => Cipher::Tdes2(TdesEde2::new_from_slice(key).expect("16")),
            (MacAlgorithm::X919, 24) => Cipher::Tdes3(TdesEde3::new_from_slice(key).expect("24")),
            (MacAlgorithm::X919, _) => {
                return Err(wrong_length("a triple-DES KEK of 16 or 24 bytes"))
            }
            (MacAlgorithm::AesCmac, 16) => {
                Cipher::Aes128(aes_kw::KekAes128::new(GenericArray::from_slice(key)))
            }
            (MacAlgorithm::AesCmac, 24) => {
                Cipher::Aes192(aes_kw::KekAes192::new(GenericArray::from_slice(key)))
            }
            (MacAlgorithm::AesCmac, 32) => {
                Cipher::Aes256(aes_kw::KekAes256::new(GenericArray::from_slice(key)))
            }
            (MacAlgorithm::AesCmac, _) => {
                return Err(wrong_length("an AES KEK of 16, 24 or 32 bytes"))
            }
        };
        // The KEK's own check value, computed as for a MAC key of the same
        // family, so operators compare it the same way.
        let kcv = match &cipher {
            Cipher::Tdes2(_) | Cipher::Tdes3(_) => {
                let mut block = GenericArray::clone_from_slice(&[0u8; 8]);
                match &cipher {
                    Cipher::Tdes2(c) => c.encrypt_block(&mut block),
                    Cipher::Tdes3(c) => c.encrypt_block(&mut block),
                    _ => unreachable!("matched above"),
                }
                [block[0], block[1], block[2]]
            }
            _ => MacKey::from_bytes(MacAlgorithm::AesCmac, key)
                .map_err(|e| e.clone())?
                .kcv(),
        };
        Ok(KeyEncryptingKey {
            algorithm,
            cipher,
            kcv,
        })
    }

    /// The MAC algorithm of the keys this KEK carries.
    pub fn algorithm(&self) -> MacAlgorithm {
        self.algorithm
    }

    pub fn kcv_hex(&self) -> String {
        to_hex(&self.kcv)
    }

    /// `key` encrypted under this KEK.
    fn wrap(&self, key: &[u8]) -> Result<Vec<u8>, TransportError> {
        let tdes = |encrypt: &dyn Fn(&mut GenericArray<u8, _>)| {
            let mut out = key.to_vec();
            for block in out.chunks_exact_mut(8) {
                encrypt(GenericArray::from_mut_slice(block));
            }
            out
        };
        let mut out = vec![0u8; key.len() + 8];
        match &self.cipher {
            Cipher::Tdes2(c) => return Ok(tdes(&|b| c.encrypt_block(b))),
            Cipher::Tdes3(c) => return Ok(tdes(&|b| c.encrypt_block(b))),
            Cipher::Aes128(k) => k.wrap(key, &mut out),
            Cipher::Aes192(k) => k.wrap(key, &mut out),
            Cipher::Aes256(k) => k.wrap(key, &mut out),
        }
        .map_err(|_| TransportError::Malformed)?;
        Ok(out)
    }

    /// `wrapped` decrypted under this KEK.
    fn unwrap(&self, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, TransportError> {
        if wrapped.is_empty() || wrapped.len() > MAX_WRAPPED || !wrapped.len().is_multiple_of(8) {
            return Err(TransportError::Malformed);
        }
        let tdes = |decrypt: &dyn Fn(&mut GenericArray<u8, _>)| {
            let mut out = Zeroizing::new(wrapped.to_vec());
            for block in out.chunks_exact_mut(8) {
                decrypt(GenericArray::from_mut_slice(block));
            }
            out
        };
        let aes_len = wrapped.len().checked_sub(8).filter(|&n| n >= 16);
        let mut out = Zeroizing::new(vec![0u8; aes_len.unwrap_or(0)]);
        let result = match &self.cipher {
            Cipher::Tdes2(c) => return Ok(tdes(&|b| c.decrypt_block(b))),
            Cipher::Tdes3(c) => return Ok(tdes(&|b| c.decrypt_block(b))),
            _ if aes_len.is_none() => return Err(TransportError::Malformed),
            Cipher::Aes128(k) => k.unwrap(wrapped, &mut out),
            Cipher::Aes192(k) => k.unwrap(wrapped, &mut out),
            Cipher::Aes256(k) => k.unwrap(wrapped, &mut out),
        };
        result.map_err(|_| TransportError::Unwrap)?;
        Ok(out)
    }
}

/// A new working key on its way to the other end of a link.
pub struct KeyChange {
    /// The key, for the sender to install once the other end accepted it.
    pub key: MacKey,
    /// What the key-change message carries (see [`KeyChange::to_text`]).
    text: String,
}

impl fmt::Debug for KeyChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyChange").field("key", &self.key).finish()
    }
}

impl KeyChange {
    /// A key change carrying `new_key` (fresh random bytes of a valid length
    /// for the KEK's algorithm) under `kek`.
    pub fn new(kek: &KeyEncryptingKey, new_key: &[u8]) -> Result<KeyChange, TransportError> {
        let key = MacKey::from_bytes(kek.algorithm, new_key).map_err(|reason| {
            TransportError::BadKey {
                algorithm: kek.algorithm,
                reason,
            }
        })?;
        let text = format!("{}{}", to_hex(&kek.wrap(new_key)?), key.kcv_hex());
        Ok(KeyChange { key, text })
    }

    /// The encrypted key in hex, then the new key's KCV in 6 hex digits.
    pub fn to_text(&self) -> &str {
        &self.text
    }

    /// The key a received key change carries, checked against its KCV.
    pub fn receive(kek: &KeyEncryptingKey, text: &str) -> Result<MacKey, TransportError> {
        let text = text.trim();
        let split = text
            .len()
            .checked_sub(6)
            .filter(|&n| n > 0 && text.is_char_boundary(n))
            .ok_or(TransportError::Malformed)?;
        let (wrapped_hex, kcv_hex) = text.split_at(split);
        let wrapped = key_bytes_from_hex(wrapped_hex).map_err(|_| TransportError::Malformed)?;
        let sent_kcv = key_bytes_from_hex(kcv_hex).map_err(|_| TransportError::Malformed)?;
        let bytes = kek.unwrap(&wrapped)?;
        let key =
            MacKey::from_bytes(kek.algorithm, &bytes).map_err(|reason| TransportError::BadKey {
                algorithm: kek.algorithm,
                reason,
            })?;
        if !bool::from(key.kcv().ct_eq(&sent_kcv[..])) {
            return Err(TransportError::KcvMismatch {
                sent: kcv_hex.to_ascii_uppercase(),
                actual: key.kcv_hex(),
            });
        }
        Ok(key)
    }
}

//! Message authentication codes for host links: ANSI X9.19 retail MAC and
//! AES-CMAC, key check values, and field 128 of a message.
//!
//! The algorithms:
//!
//! - **`x9.19`** — ANSI X9.19 retail MAC, ISO/IEC 9797-1 MAC algorithm 3 with
//!   padding method 1 and a double-length key `K1 ‖ K2`: the data is padded
//!   with zero bytes to a multiple of 8 (no padding when it already is one,
//!   one zero block when it is empty), chained through single DES under
//!   `K1` (CBC-MAC, zero IV), and the last block is decrypted under `K2` and
//!   encrypted again under `K1`. 8 bytes; [`Tag::leftmost`]`(4)` gives the
//!   common 4-byte truncation.
//! - **`aes-cmac`** — CMAC (NIST SP 800-38B, RFC 4493) over AES-128, -192 or
//!   -256, chosen by the key's length. 16 bytes, of which field 128 carries
//!   the leftmost 8.
//!
//! **Key check values** ([`MacKey::kcv`]): for `x9.19` the first 3 bytes of
//! the zero block encrypted with the key as two-key triple DES (EDE,
//! `K1 K2 K1`), the usual convention of HSMs and key ceremonies; for
//! `aes-cmac` the first 3 bytes of the AES-CMAC of one zero block (16 zero
//! bytes), as ANSI X9.24-1:2017 does for AES keys. A [`MacKey`] never shows
//! its bytes: its `Debug` prints the algorithm and the KCV only, and the key
//! schedules are wiped when it is dropped.
//!
//! **Which bytes are covered** (the dialect's default rule): the message as
//! sent, from the MTI through the last field before 128 — the MTI, the
//! bitmaps with bit 128 set as sent, and every field below 128 — that is the
//! message body without field 128's bytes (and without any field above 128
//! on a tertiary-bitmap dialect). Frame headers and length prefixes are not
//! covered. [`mac_input`] gives these bytes for a message to build,
//! [`covered`] for a message as received; [`sign`]/[`sign_bytes`] set field
//! 128, [`verify`]/[`verify_received`] check it, and answer a missing or
//! wrong MAC with a [`MacError`].
//!
//! ```
//! use iso8583::mac::{self, MacAlgorithm, MacKey};
//! use iso8583::{Message, Spec};
//!
//! let spec = Spec::switchboard();
//! let key = MacKey::from_hex(MacAlgorithm::X919, "0123456789ABCDEFFEDCBA9876543210").unwrap();
//! assert_eq!(format!("{key:?}"), r#"MacKey { algorithm: "x9.19", kcv: "08D7B4" }"#);
//! let mut msg = Message::new(*b"0420");
//! msg.set(3, "000000").set(4, "000000010000").set(11, "000001");
//! let wire = mac::sign_bytes(&spec, &mut msg, &key).unwrap();
//! let back = iso8583::parse(&spec, wire.clone()).unwrap();
//! assert!(mac::verify_received(&spec, &wire, &back, &key).is_ok());
//! assert_eq!(mac::verify(&spec, &back, &key), Ok(()));
//! ```

use std::fmt;
use std::str::FromStr;

use aes::{Aes128, Aes192, Aes256};
use bytes::{Bytes, BytesMut};
use cmac::Cmac;
use des::cipher::{Block, BlockEncrypt, KeyInit};
use des::TdesEde2;
use subtle::ConstantTimeEq;

use crate::codec::charset::to_hex;
use crate::codec::{build, build_field, EncodeError, Message};
use crate::spec::{FieldSpec, LengthKind, Spec};

mod coverage;
mod retail;
mod transport;

pub use coverage::{Coverage, CoverageError};
use retail::RetailKey;
pub use transport::{KeyChange, KeyEncryptingKey, TransportError};

/// The field that carries the MAC.
pub const MAC_FIELD: u16 = 128;
/// Bytes of MAC in field 128 (`b8`).
pub const MAC_FIELD_LEN: usize = 8;
/// The shortest MAC [`MacKey::verify`] accepts.
pub const MIN_TAG_LEN: usize = 4;

/// A MAC algorithm, as named in configuration: `x9.19` or `aes-cmac`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MacAlgorithm {
    /// ANSI X9.19 retail MAC (ISO/IEC 9797-1 algorithm 3, padding method 1),
    /// double-length DES key.
    X919,
    /// AES-CMAC (NIST SP 800-38B), AES-128, -192 or -256 key.
    AesCmac,
}

impl MacAlgorithm {
    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            MacAlgorithm::X919 => "x9.19",
            MacAlgorithm::AesCmac => "aes-cmac",
        }
    }

    /// Bytes of a full MAC: 8 for X9.19, 16 for CMAC.
    pub fn tag_len(self) -> usize {
        match self {
            MacAlgorithm::X919 => 8,
            MacAlgorithm::AesCmac => 16,
        }
    }

    fn key_lengths(self) -> &'static str {
        match self {
            MacAlgorithm::X919 => "16 bytes (32 hex digits)",
            MacAlgorithm::AesCmac => "16, 24 or 32 bytes (32, 48 or 64 hex digits)",
        }
    }
}

impl fmt::Display for MacAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A MAC algorithm name that is neither `x9.19` nor `aes-cmac`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown MAC algorithm {0:?}: expected x9.19 or aes-cmac")]
pub struct UnknownAlgorithm(pub String);

impl FromStr for MacAlgorithm {
    type Err = UnknownAlgorithm;

    /// `x9.19` or `aes-cmac`, in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "x9.19" => Ok(MacAlgorithm::X919),
            "aes-cmac" => Ok(MacAlgorithm::AesCmac),
            _ => Err(UnknownAlgorithm(s.to_string())),
        }
    }
}

/// Why a key was refused. The messages never contain key material.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("MAC key is not hexadecimal: character {position} is not a hex digit")]
    NotHex { position: usize },
    #[error("MAC key has an odd number of hex digits ({digits})")]
    OddLength { digits: usize },
    #[error("a MAC key for {algorithm} is {expected}, this one is {actual} bytes")]
    WrongLength {
        algorithm: MacAlgorithm,
        expected: &'static str,
        actual: usize,
    },
    #[error("an x9.19 key whose two halves are equal is single DES, refused")]
    EqualHalves,
}

/// A MAC: its full length is the algorithm's ([`MacAlgorithm::tag_len`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    bytes: [u8; 16],
    len: u8,
}

impl Tag {
    fn new(bytes: &[u8]) -> Tag {
        let mut tag = Tag {
            bytes: [0; 16],
            len: bytes.len() as u8,
        };
        tag.bytes[..bytes.len()].copy_from_slice(bytes);
        tag
    }

    /// The whole MAC.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// The leftmost `n` bytes (ISO/IEC 9797-1 truncation), at most the whole.
    pub fn leftmost(&self, n: usize) -> &[u8] {
        &self.bytes[..n.min(self.len as usize)]
    }

    /// The leftmost 8 bytes, as field 128 carries them.
    pub fn field_128(&self) -> [u8; MAC_FIELD_LEN] {
        let mut out = [0; MAC_FIELD_LEN];
        out.copy_from_slice(&self.bytes[..MAC_FIELD_LEN]);
        out
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tag({})", to_hex(self.as_bytes()))
    }
}

#[derive(Clone)]
enum Keyed {
    Retail(RetailKey),
    Cmac128(Cmac<Aes128>),
    Cmac192(Cmac<Aes192>),
    Cmac256(Cmac<Aes256>),
}

/// A MAC key with its algorithm. Built from hex or bytes; shown only by its
/// key check value.
#[derive(Clone)]
pub struct MacKey {
    keyed: Keyed,
    kcv: [u8; 3],
}

impl fmt::Debug for MacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MacKey")
            .field("algorithm", &self.algorithm().as_str())
            .field("kcv", &self.kcv_hex())
            .finish()
    }
}

fn cmac_of<M: cmac::Mac + Clone>(keyed: &M, data: &[u8]) -> Tag {
    let mut mac = keyed.clone();
    mac.update(data);
    Tag::new(&mac.finalize().into_bytes())
}

fn new_cmac<M: KeyInit>(key: &[u8]) -> M {
    M::new_from_slice(key).expect("AES key length checked by the caller")
}

impl MacKey {
    /// A key from hexadecimal digits (either case): 32 for `x9.19`; 32, 48
    /// or 64 for `aes-cmac`.
    pub fn from_hex(algorithm: MacAlgorithm, hex: &str) -> Result<MacKey, KeyError> {
        MacKey::from_bytes(algorithm, &transport::key_bytes_from_hex(hex)?)
    }

    /// A key from its bytes: `K1 ‖ K2` (16 bytes) for `x9.19`; an AES key of
    /// 16, 24 or 32 bytes for `aes-cmac`.
    pub fn from_bytes(algorithm: MacAlgorithm, key: &[u8]) -> Result<MacKey, KeyError> {
        let wrong_length = || KeyError::WrongLength {
            algorithm,
            expected: algorithm.key_lengths(),
            actual: key.len(),
        };
        let keyed = match algorithm {
            MacAlgorithm::X919 => {
                if key.len() != 16 {
                    return Err(wrong_length());
                }
                if bool::from(key[..8].ct_eq(&key[8..])) {
                    return Err(KeyError::EqualHalves);
                }
                Keyed::Retail(RetailKey::new(key))
            }
            MacAlgorithm::AesCmac => match key.len() {
                16 => Keyed::Cmac128(new_cmac(key)),
                24 => Keyed::Cmac192(new_cmac(key)),
                32 => Keyed::Cmac256(new_cmac(key)),
                _ => return Err(wrong_length()),
            },
        };
        let mut mac_key = MacKey { keyed, kcv: [0; 3] };
        mac_key.kcv = match algorithm {
            MacAlgorithm::X919 => {
                let tdes = TdesEde2::new_from_slice(key).expect("16-byte 3DES key");
                let mut zero = Block::<TdesEde2>::default();
                tdes.encrypt_block(&mut zero);
                [zero[0], zero[1], zero[2]]
            }
            MacAlgorithm::AesCmac => {
                let tag = mac_key.mac(&[0; 16]);
                [tag.as_bytes()[0], tag.as_bytes()[1], tag.as_bytes()[2]]
            }
        };
        Ok(mac_key)
    }

    pub fn algorithm(&self) -> MacAlgorithm {
        match self.keyed {
            Keyed::Retail(_) => MacAlgorithm::X919,
            _ => MacAlgorithm::AesCmac,
        }
    }

    /// Bytes of the key: 16 for `x9.19`, 16, 24 or 32 for `aes-cmac`.
    pub fn key_len(&self) -> usize {
        match self.keyed {
            Keyed::Retail(_) | Keyed::Cmac128(_) => 16,
            Keyed::Cmac192(_) => 24,
            Keyed::Cmac256(_) => 32,
        }
    }

    /// The key check value: 3 bytes (see the module documentation).
    pub fn kcv(&self) -> [u8; 3] {
        self.kcv
    }

    /// The key check value as 6 upper-case hex digits, as operators compare it.
    pub fn kcv_hex(&self) -> String {
        to_hex(&self.kcv)
    }

    /// The full MAC of `data`.
    pub fn mac(&self, data: &[u8]) -> Tag {
        match &self.keyed {
            Keyed::Retail(key) => Tag::new(&key.mac(data)),
            Keyed::Cmac128(m) => cmac_of(m, data),
            Keyed::Cmac192(m) => cmac_of(m, data),
            Keyed::Cmac256(m) => cmac_of(m, data),
        }
    }

    /// Whether `expected` is the leftmost bytes of the MAC of `data`, compared
    /// in constant time. `expected` must hold at least [`MIN_TAG_LEN`] and at
    /// most the algorithm's full length.
    pub fn verify(&self, data: &[u8], expected: &[u8]) -> bool {
        let tag = self.mac(data);
        expected.len() >= MIN_TAG_LEN
            && expected.len() <= tag.as_bytes().len()
            && bool::from(tag.leftmost(expected.len()).ct_eq(expected))
    }
}

/// Why a message's MAC could not be made or did not verify.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MacError {
    #[error("field 128 (MAC) is missing")]
    Missing,
    #[error("field 128 (MAC) does not verify: a wrong key, or the message was changed")]
    Wrong,
    #[error("the spec has no field 128 of 8 bytes to carry a MAC")]
    NoMacField,
    #[error("the message cannot be built to compute its MAC: {0}")]
    Encode(#[from] EncodeError),
}

fn check_mac_field(spec: &Spec) -> Result<(), MacError> {
    let carries_8_bytes = |field: &FieldSpec| match field.length {
        LengthKind::Fixed(n) => field.value_len_of(n) == MAC_FIELD_LEN,
        LengthKind::Variable { .. } => false,
    };
    if spec.field(MAC_FIELD).is_some_and(carries_8_bytes) {
        Ok(())
    } else {
        Err(MacError::NoMacField)
    }
}

/// Room for a message's wire form built for signing: most fit, so the
/// buffer is not grown field by field.
const WIRE_CAPACITY: usize = 512;

/// The wire form of field `number` holding `value`.
fn field_bytes(spec: &Spec, number: u16, value: &[u8]) -> Result<BytesMut, MacError> {
    let mut out = BytesMut::with_capacity(value.len() * 2 + 4);
    build_field(spec, number, value, &mut out)?;
    Ok(out)
}

/// Bytes at the end of the wire form that the MAC does not cover: field 128
/// and any field after it.
fn uncovered_len(spec: &Spec, msg: &Message) -> Result<usize, MacError> {
    let mut len = 0;
    for (number, value) in msg.fields().filter(|(n, _)| *n >= MAC_FIELD) {
        len += field_bytes(spec, number, value)?.len();
    }
    Ok(len)
}

/// Builds `msg` with field 128 present (zeros when absent or not 8 bytes):
/// the wire form and how many of its leading bytes the MAC covers.
fn build_for_mac(spec: &Spec, msg: &Message) -> Result<(BytesMut, usize), MacError> {
    check_mac_field(spec)?;
    let mut placeholder;
    let msg = if msg.get(MAC_FIELD).is_some_and(|v| v.len() == MAC_FIELD_LEN) {
        msg
    } else {
        placeholder = msg.clone();
        placeholder.set(MAC_FIELD, Bytes::from_static(&[0; MAC_FIELD_LEN]));
        &placeholder
    };
    let mut wire = BytesMut::with_capacity(WIRE_CAPACITY);
    build(spec, msg, &mut wire)?;
    let covered = wire.len() - uncovered_len(spec, msg)?;
    Ok((wire, covered))
}

/// The bytes the MAC of `msg` covers once it is built with field 128: the
/// MTI through the last field before 128, bit 128 set in the bitmap.
pub fn mac_input(spec: &Spec, msg: &Message) -> Result<Bytes, MacError> {
    let (mut wire, covered) = build_for_mac(spec, msg)?;
    wire.truncate(covered);
    // A spec's header before the MTI is not covered.
    Ok(wire.freeze().slice(spec.header_length..))
}

/// The bytes the MAC covers in a message as received: `wire` is its body
/// (no frame header or length prefix), `msg` what it parsed into.
pub fn covered<'a>(spec: &Spec, wire: &'a [u8], msg: &Message) -> Result<&'a [u8], MacError> {
    check_mac_field(spec)?;
    let uncovered = uncovered_len(spec, msg)?;
    wire.len()
        .checked_sub(uncovered)
        .filter(|len| *len >= spec.header_length)
        .map(|len| &wire[spec.header_length..len])
        .ok_or(MacError::Wrong)
}

/// Sets field 128 of `msg` to its MAC under `key` and returns the message's
/// wire form, built once.
pub fn sign_bytes(spec: &Spec, msg: &mut Message, key: &MacKey) -> Result<Bytes, MacError> {
    check_mac_field(spec)?;
    // Field 128 is about to be overwritten: the zeros go into `msg` itself
    // rather than into a copy of it.
    if msg.get(MAC_FIELD).is_none_or(|v| v.len() != MAC_FIELD_LEN) {
        msg.set(MAC_FIELD, Bytes::from_static(&[0; MAC_FIELD_LEN]));
    }
    let (mut wire, covered) = build_for_mac(spec, msg)?;
    let mac = key.mac(&wire[spec.header_length..covered]).field_128();
    msg.set(MAC_FIELD, Bytes::copy_from_slice(&mac));
    // Field 128 is fixed-length: its value takes the place of the zeros.
    let field = field_bytes(spec, MAC_FIELD, &mac)?;
    wire[covered..covered + field.len()].copy_from_slice(&field);
    Ok(wire.freeze())
}

/// Sets field 128 of `msg` to its MAC under `key`.
pub fn sign(spec: &Spec, msg: &mut Message, key: &MacKey) -> Result<(), MacError> {
    sign_bytes(spec, msg, key).map(drop)
}

fn check(key: &MacKey, covered: &[u8], msg: &Message) -> Result<(), MacError> {
    let sent = msg.get(MAC_FIELD).ok_or(MacError::Missing)?;
    if sent.len() == MAC_FIELD_LEN && key.verify(covered, sent) {
        Ok(())
    } else {
        Err(MacError::Wrong)
    }
}

/// Checks field 128 of `msg` against the MAC of the message rebuilt from its
/// fields. For a message received from a peer, [`verify_received`] checks
/// the bytes as they were sent.
pub fn verify(spec: &Spec, msg: &Message, key: &MacKey) -> Result<(), MacError> {
    if !msg.has(MAC_FIELD) {
        return Err(MacError::Missing);
    }
    let (wire, covered) = build_for_mac(spec, msg)?;
    check(key, &wire[..covered], msg)
}

/// Checks field 128 of a received message against the MAC of the bytes as
/// received: `wire` is the body the peer sent, `msg` what it parsed into.
pub fn verify_received(
    spec: &Spec,
    wire: &[u8],
    msg: &Message,
    key: &MacKey,
) -> Result<(), MacError> {
    if !msg.has(MAC_FIELD) {
        return Err(MacError::Missing);
    }
    check(key, covered(spec, wire, msg)?, msg)
}

/// Whether the dialect lets `msg` (a request or a response) carry field
/// 128: a link with MACs signs and checks exactly these messages.
pub fn may_carry(spec: &Spec, msg: &Message) -> bool {
    let pc = msg.get(crate::fields::num::PROCESSING_CODE);
    spec.message_for(msg.mti(), pc)
        .is_some_and(|(message, is_response)| {
            let rule = if is_response {
                &message.response
            } else {
                &message.request
            };
            rule.allows(MAC_FIELD)
        })
}

/// [`sign_bytes`] under a link's coverage rule.
pub fn sign_bytes_with(
    spec: &Spec,
    msg: &mut Message,
    key: &MacKey,
    coverage: &Coverage,
) -> Result<Bytes, MacError> {
    let Some(input) = coverage.listed_bytes(spec, msg)? else {
        return sign_bytes(spec, msg, key);
    };
    check_mac_field(spec)?;
    msg.set(
        MAC_FIELD,
        Bytes::copy_from_slice(&key.mac(&input).field_128()),
    );
    let mut wire = BytesMut::with_capacity(WIRE_CAPACITY);
    build(spec, msg, &mut wire)?;
    Ok(wire.freeze())
}

/// [`verify_received`] under a link's coverage rule.
pub fn verify_received_with(
    spec: &Spec,
    wire: &[u8],
    msg: &Message,
    key: &MacKey,
    coverage: &Coverage,
) -> Result<(), MacError> {
    if !msg.has(MAC_FIELD) {
        return Err(MacError::Missing);
    }
    match coverage.listed_bytes(spec, msg)? {
        None => check(key, covered(spec, wire, msg)?, msg),
        Some(input) => {
            check_mac_field(spec)?;
            check(key, &input, msg)
        }
    }
}

#[cfg(test)]
mod tests;

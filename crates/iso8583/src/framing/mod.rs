//! Framing: how ISO 8583 messages are delimited on a byte stream.
//!
//! An ISO 8583 link is a long-lived TCP connection carrying messages back to
//! back, each preceded by a length prefix and, on some links, a fixed-length
//! header in front of the MTI. The framing is agreed per connection, so it is a
//! value ([`FramingConfig`]) that the CLI and the config name as a string such as
//! `ascii4`, `binary2+cups` or `ascii4+header:12`.
//!
//! A frame on the wire is `prefix | header | body`, where the prefix counts the
//! bytes after itself (header and body). A zero length is a keep-alive.
//!
//! Invariants:
//! - this module knows bytes only: no sockets, no message parsing;
//! - decoding never panics, whatever the input;
//! - the announced length is checked against the maximum frame length *before*
//!   any buffer is grown, so a peer cannot make us allocate by lying about it,
//!   and the buffer is grown to the announced length at most;
//! - encoding never truncates: a body that does not fit is an error.

use std::fmt;
use std::str::FromStr;

use bytes::{BufMut, Bytes, BytesMut};

#[cfg(feature = "tokio")]
mod stream;
#[cfg(feature = "tokio")]
pub use stream::FrameCodec;
#[cfg(all(test, feature = "tokio"))]
mod tests;

/// The default maximum frame length (prefix excluded). ISO 8583 messages of our
/// dialect are a few hundred bytes; 8 KiB leaves room for any sane dialect while
/// bounding what a misbehaving peer can make us buffer.
pub const DEFAULT_MAX_FRAME_LEN: usize = 8192;

/// The largest length a 4-digit decimal prefix (ASCII or BCD) can express.
const MAX_DECIMAL4: usize = 9999;

/// How the length in front of every frame is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LengthPrefix {
    /// 4 ASCII decimal digits, e.g. `0123` (the most common on card networks).
    #[default]
    Ascii4,
    /// 2 bytes, big-endian binary.
    Binary2,
    /// 2 bytes of packed BCD, e.g. `0x01 0x23` for 123 (so at most 9999).
    Bcd2,
    /// 4 bytes, big-endian binary.
    Binary4,
}

impl LengthPrefix {
    /// Every prefix, in the order the CLI documents them.
    pub const ALL: [LengthPrefix; 4] = [
        LengthPrefix::Ascii4,
        LengthPrefix::Binary2,
        LengthPrefix::Bcd2,
        LengthPrefix::Binary4,
    ];

    /// The name used on the CLI and in config.
    pub fn name(self) -> &'static str {
        match self {
            LengthPrefix::Ascii4 => "ascii4",
            LengthPrefix::Binary2 => "binary2",
            LengthPrefix::Bcd2 => "bcd2",
            LengthPrefix::Binary4 => "binary4",
        }
    }

    /// How many bytes the prefix itself takes.
    pub fn width(self) -> usize {
        match self {
            LengthPrefix::Ascii4 | LengthPrefix::Binary4 => 4,
            LengthPrefix::Binary2 | LengthPrefix::Bcd2 => 2,
        }
    }

    /// The largest length the prefix can express, whatever the configured maximum.
    pub fn capacity(self) -> usize {
        match self {
            LengthPrefix::Ascii4 | LengthPrefix::Bcd2 => MAX_DECIMAL4,
            LengthPrefix::Binary2 => u16::MAX as usize,
            LengthPrefix::Binary4 => usize::try_from(u32::MAX).unwrap_or(usize::MAX),
        }
    }

    /// Reads the announced length from exactly `width()` bytes.
    fn read(self, raw: &[u8]) -> Result<usize, FramingError> {
        debug_assert_eq!(raw.len(), self.width());
        match self {
            LengthPrefix::Ascii4 => {
                let raw: [u8; 4] = raw.try_into().expect("width checked by the caller");
                parse_ascii4(&raw).ok_or(FramingError::BadAsciiPrefix { raw })
            }
            LengthPrefix::Binary2 => Ok(u16::from_be_bytes([raw[0], raw[1]]) as usize),
            LengthPrefix::Bcd2 => {
                let raw = [raw[0], raw[1]];
                let mut len = 0usize;
                for nibble in [raw[0] >> 4, raw[0] & 0x0f, raw[1] >> 4, raw[1] & 0x0f] {
                    if nibble > 9 {
                        return Err(FramingError::BadBcdPrefix { raw });
                    }
                    len = len * 10 + nibble as usize;
                }
                Ok(len)
            }
            LengthPrefix::Binary4 => {
                let len = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
                // On a 16-bit target a length that does not fit usize is simply too
                // long; saturating keeps the "over the maximum" error path.
                Ok(usize::try_from(len).unwrap_or(usize::MAX))
            }
        }
    }

    /// Writes `len`, which the caller has checked against `capacity()`.
    fn write(self, len: usize, out: &mut impl BufMut) {
        debug_assert!(len <= self.capacity());
        match self {
            LengthPrefix::Ascii4 => out.put_slice(&ascii4(len)),
            LengthPrefix::Binary2 => out.put_u16(len as u16),
            LengthPrefix::Bcd2 => {
                let d = ascii4(len).map(|c| c - b'0');
                out.put_slice(&[(d[0] << 4) | d[1], (d[2] << 4) | d[3]]);
            }
            LengthPrefix::Binary4 => out.put_u32(len as u32),
        }
    }
}

impl fmt::Display for LengthPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// 4 ASCII digits of a number up to 9999.
fn ascii4(n: usize) -> [u8; 4] {
    debug_assert!(n <= MAX_DECIMAL4);
    [
        b'0' + (n / 1000 % 10) as u8,
        b'0' + (n / 100 % 10) as u8,
        b'0' + (n / 10 % 10) as u8,
        b'0' + (n % 10) as u8,
    ]
}

/// The number written as 4 ASCII digits, or `None` if any byte is not a digit.
fn parse_ascii4(raw: &[u8; 4]) -> Option<usize> {
    raw.iter().try_fold(0usize, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + (c - b'0') as usize)
    })
}

/// `0x30 0x41 0x31 0x32`: raw bytes as they appear in error messages, so an
/// operator can match them against a packet capture.
fn hex_bytes(raw: &[u8]) -> String {
    raw.iter()
        .map(|b| format!("{b:#04x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The header some links put between the length prefix and the MTI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HeaderKind {
    /// The MTI follows the length prefix directly.
    #[default]
    None,
    /// An opaque header of this many bytes, passed through untouched.
    Fixed(usize),
    /// The 46-byte CUPS-style header ([`CupsHeader`]): validated on decode, its
    /// total-length field filled on encode.
    Cups,
}

impl HeaderKind {
    /// How many bytes the header takes in every message frame.
    pub fn byte_len(self) -> usize {
        match self {
            HeaderKind::None => 0,
            HeaderKind::Fixed(n) => n,
            HeaderKind::Cups => CupsHeader::LEN,
        }
    }
}

/// The framing of one connection: length prefix, header, and the largest frame
/// we accept or send.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FramingConfig {
    pub prefix: LengthPrefix,
    pub header: HeaderKind,
    /// The largest frame (header + body, prefix excluded) decoded or encoded.
    /// The prefix's own capacity applies too (9999 for `ascii4` and `bcd2`).
    pub max_frame_len: usize,
}

impl FramingConfig {
    /// A framing with the default maximum frame length.
    pub fn new(prefix: LengthPrefix, header: HeaderKind) -> Self {
        FramingConfig {
            prefix,
            header,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
        }
    }

    /// The same framing with another maximum frame length.
    pub fn with_max_frame_len(mut self, max_frame_len: usize) -> Self {
        self.max_frame_len = max_frame_len;
        self
    }

    /// The largest frame that is both allowed and expressible by the prefix.
    fn effective_max(&self) -> usize {
        self.max_frame_len.min(self.prefix.capacity())
    }
}

impl Default for FramingConfig {
    fn default() -> Self {
        FramingConfig::new(LengthPrefix::default(), HeaderKind::default())
    }
}

/// `ascii4`, `binary2+cups`, `ascii4+header:12`: the form `FromStr` accepts.
/// The maximum frame length is not part of the name.
impl fmt::Display for FramingConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.prefix.name())?;
        match self.header {
            HeaderKind::None => Ok(()),
            HeaderKind::Fixed(n) => write!(f, "+header:{n}"),
            HeaderKind::Cups => f.write_str("+cups"),
        }
    }
}

impl FromStr for FramingConfig {
    type Err = FramingError;

    /// Parses a framing name, case-insensitively: a prefix name optionally
    /// followed by `+cups` or `+header:N` (N ≥ 1 bytes).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = s.trim().to_ascii_lowercase();
        let (prefix_name, header_name) = match name.split_once('+') {
            Some((p, h)) => (p, Some(h)),
            None => (name.as_str(), None),
        };
        let prefix = LengthPrefix::ALL
            .into_iter()
            .find(|p| p.name() == prefix_name)
            .ok_or_else(|| FramingError::UnknownFraming {
                name: s.to_string(),
            })?;
        let header = match header_name {
            None => HeaderKind::None,
            Some("cups") => HeaderKind::Cups,
            Some(h) => match h.strip_prefix("header:") {
                Some(n) => match n.parse::<usize>() {
                    Ok(n) if n > 0 => HeaderKind::Fixed(n),
                    _ => {
                        return Err(FramingError::BadHeaderLength {
                            name: s.to_string(),
                        })
                    }
                },
                None => {
                    return Err(FramingError::UnknownFraming {
                        name: s.to_string(),
                    })
                }
            },
        };
        Ok(FramingConfig::new(prefix, header))
    }
}

/// The 46-byte CUPS-style header that China UnionPay-style links put in front
/// of the MTI. Replies carry the request's header with source and destination
/// swapped, so a switch must be able to read, change and rebuild it.
///
/// Layout: header length (1 byte, binary 46) · header flag and version (1) ·
/// total message length, header included (4 ASCII digits) · destination id (11)
/// · source id (11) · reserved (3) · batch number (1) · transaction info (8) ·
/// user info (1) · reject code (5).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CupsHeader {
    /// Header flag and version (bit 7 set on test messages on CUPS links).
    pub flag: u8,
    /// Header + message length, as written in the header. Private so that it is
    /// always 4 digits: set it with [`CupsHeader::set_body_len`].
    total_len: u16,
    /// Destination institution id, left-aligned and space-padded.
    pub destination: [u8; 11],
    /// Source institution id, left-aligned and space-padded.
    pub source: [u8; 11],
    pub reserved: [u8; 3],
    pub batch: u8,
    pub transaction_info: [u8; 8],
    pub user_info: u8,
    /// `00000` unless the receiver rejects the message at the header level.
    pub reject_code: [u8; 5],
}

// The field widths must add up to the length the header announces in its first byte.
const _: () = assert!(1 + 1 + 4 + 11 + 11 + 3 + 1 + 8 + 1 + 5 == CupsHeader::LEN);

impl CupsHeader {
    /// The header's size in bytes, also written in its first byte.
    pub const LEN: usize = 46;

    /// A header from `source` to `destination` (ids up to 11 bytes, space-padded),
    /// version 2, production, no reject code. The total length is 0 until set.
    pub fn new(destination: &str, source: &str) -> Result<Self, FramingError> {
        Ok(CupsHeader {
            flag: 0x02,
            total_len: 0,
            destination: institution_id(destination)?,
            source: institution_id(source)?,
            reserved: [0; 3],
            batch: 0,
            transaction_info: [b'0'; 8],
            user_info: 0,
            reject_code: *b"00000",
        })
    }

    /// Reads a header from exactly 46 bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, FramingError> {
        let bytes: &[u8; Self::LEN] = bytes
            .try_into()
            .map_err(|_| FramingError::CupsHeaderSize { len: bytes.len() })?;
        if bytes[0] as usize != Self::LEN {
            return Err(FramingError::CupsHeaderLengthByte { found: bytes[0] });
        }
        let raw_total: [u8; 4] = bytes[2..6].try_into().expect("4 bytes");
        let total_len =
            parse_ascii4(&raw_total).ok_or(FramingError::CupsTotalLength { raw: raw_total })?;
        let mut header = CupsHeader {
            flag: bytes[1],
            total_len: total_len as u16,
            destination: [0; 11],
            source: [0; 11],
            reserved: [0; 3],
            batch: bytes[31],
            transaction_info: [0; 8],
            user_info: bytes[40],
            reject_code: [0; 5],
        };
        header.destination.copy_from_slice(&bytes[6..17]);
        header.source.copy_from_slice(&bytes[17..28]);
        header.reserved.copy_from_slice(&bytes[28..31]);
        header.transaction_info.copy_from_slice(&bytes[32..40]);
        header.reject_code.copy_from_slice(&bytes[41..46]);
        Ok(header)
    }

    /// The 46 bytes of the header.
    pub fn build(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[0] = Self::LEN as u8;
        out[1] = self.flag;
        out[2..6].copy_from_slice(&ascii4(usize::from(self.total_len)));
        out[6..17].copy_from_slice(&self.destination);
        out[17..28].copy_from_slice(&self.source);
        out[28..31].copy_from_slice(&self.reserved);
        out[31] = self.batch;
        out[32..40].copy_from_slice(&self.transaction_info);
        out[40] = self.user_info;
        out[41..46].copy_from_slice(&self.reject_code);
        out
    }

    /// The header of a reply: source and destination swapped, everything else
    /// (including the reject code, which the replier sets if it rejects) kept.
    pub fn reply(&self) -> CupsHeader {
        CupsHeader {
            destination: self.source,
            source: self.destination,
            ..self.clone()
        }
    }

    /// Header + message length, as written in the header (0 until set).
    pub fn total_len(&self) -> usize {
        usize::from(self.total_len)
    }

    /// Sets the total length for a message body of `body_len` bytes (the total
    /// counts the header too). The encoder does this itself on every frame.
    pub fn set_body_len(&mut self, body_len: usize) -> Result<(), FramingError> {
        let total = body_len
            .checked_add(Self::LEN)
            .filter(|&t| t <= MAX_DECIMAL4)
            .ok_or(FramingError::CupsTotalTooLong {
                len: body_len.saturating_add(Self::LEN),
            })?;
        self.total_len = total as u16;
        Ok(())
    }
}

/// An institution id for a CUPS header: at most 11 bytes, space-padded.
fn institution_id(id: &str) -> Result<[u8; 11], FramingError> {
    if id.len() > 11 {
        return Err(FramingError::CupsInstitutionId { id: id.to_string() });
    }
    let mut out = [b' '; 11];
    out[..id.len()].copy_from_slice(id.as_bytes());
    Ok(out)
}

/// One unit of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A zero-length frame: peers send them to keep idle connections open.
    KeepAlive,
    /// A message. `header` is empty when the framing has none; otherwise it has
    /// exactly the framing's header length. `body` starts with the MTI.
    Message { header: Bytes, body: Bytes },
}

impl Frame {
    /// A message frame without header.
    pub fn message(body: impl Into<Bytes>) -> Frame {
        Frame::Message {
            header: Bytes::new(),
            body: body.into(),
        }
    }
}

/// Everything that can go wrong between bytes and frames.
#[derive(Debug, thiserror::Error)]
pub enum FramingError {
    #[error("frame length {len} exceeds maximum {max}")]
    FrameTooLong { len: usize, max: usize },

    #[error(
        "frame length {len} does not fit a {prefix} length prefix (at most {})",
        .prefix.capacity()
    )]
    PrefixOverflow { len: usize, prefix: LengthPrefix },

    #[error("ASCII length prefix {} is not 4 decimal digits", hex_bytes(.raw))]
    BadAsciiPrefix { raw: [u8; 4] },

    #[error(
        "BCD length prefix {} is not 4 packed decimal digits (a nibble is above 9)",
        hex_bytes(.raw)
    )]
    BadBcdPrefix { raw: [u8; 2] },

    #[error("frame length {len} is shorter than the {header_len}-byte header this framing puts in front of every message")]
    ShorterThanHeader { len: usize, header_len: usize },

    #[error("incomplete length prefix: {received} of {width} bytes")]
    TruncatedPrefix { received: usize, width: usize },

    #[error("incomplete frame: {received} of {expected} bytes (length prefix included)")]
    TruncatedFrame { received: usize, expected: usize },

    #[error("{count} bytes after the end of the frame")]
    TrailingBytes { count: usize },

    #[error("message header is {got} bytes but this framing's header is {expected} bytes")]
    HeaderMismatch { expected: usize, got: usize },

    #[error(
        "a message frame cannot be empty: a zero length means keep-alive (send Frame::KeepAlive)"
    )]
    EmptyMessage,

    #[error("a CUPS header is 46 bytes, got {len}")]
    CupsHeaderSize { len: usize },

    #[error("CUPS header length byte is {found:#04x} ({found}), expected 0x2e (46)")]
    CupsHeaderLengthByte { found: u8 },

    #[error("CUPS total message length {} is not 4 decimal digits", hex_bytes(.raw))]
    CupsTotalLength { raw: [u8; 4] },

    #[error(
        "CUPS header says the message is {header_total} bytes but the frame is {frame_len} bytes"
    )]
    CupsTotalMismatch {
        header_total: usize,
        frame_len: usize,
    },

    #[error("CUPS total message length {len} does not fit 4 digits (at most 9999)")]
    CupsTotalTooLong { len: usize },

    #[error("CUPS institution id {id:?} is longer than 11 bytes")]
    CupsInstitutionId { id: String },

    #[error(
        "unknown framing {name:?}: expected ascii4 (the default), binary2, bcd2 or binary4, \
         optionally followed by +cups or +header:N (e.g. binary2+cups, ascii4+header:12)"
    )]
    UnknownFraming { name: String },

    #[error(
        "bad header length in framing {name:?}: +header:N takes a length N of at least 1 byte"
    )]
    BadHeaderLength { name: String },

    #[error("I/O error on the framed stream: {0}")]
    Io(#[from] std::io::Error),
}

/// The length announced at the front of `src` (`None` until the whole prefix is
/// there), checked against the maximum and the header length. Shared by the
/// stream decoder and [`split_frame`] so both reject exactly the same input.
pub(crate) fn announced_len(
    config: &FramingConfig,
    src: &[u8],
) -> Result<Option<usize>, FramingError> {
    let width = config.prefix.width();
    let Some(raw) = src.get(..width) else {
        return Ok(None);
    };
    let len = config.prefix.read(raw)?;
    if len > config.max_frame_len {
        return Err(FramingError::FrameTooLong {
            len,
            max: config.max_frame_len,
        });
    }
    let header_len = config.header.byte_len();
    if len != 0 && len < header_len {
        return Err(FramingError::ShorterThanHeader { len, header_len });
    }
    Ok(Some(len))
}

/// Splits a whole frame (prefix removed) into header and body, checking the
/// header where the framing says what it must contain.
pub(crate) fn split_header(
    config: &FramingConfig,
    mut frame: Bytes,
) -> Result<Frame, FramingError> {
    if frame.is_empty() {
        return Ok(Frame::KeepAlive);
    }
    let header = frame.split_to(config.header.byte_len());
    if config.header == HeaderKind::Cups {
        let cups = CupsHeader::parse(&header)?;
        let header_total = cups.total_len();
        let frame_len = header.len() + frame.len();
        if header_total != frame_len {
            return Err(FramingError::CupsTotalMismatch {
                header_total,
                frame_len,
            });
        }
    }
    Ok(Frame::Message {
        header,
        body: frame,
    })
}

/// The error for bytes that end before the frame they start does.
#[cfg(feature = "tokio")]
pub(crate) fn incomplete(config: &FramingConfig, src: &[u8]) -> FramingError {
    let width = config.prefix.width();
    match announced_len(config, src) {
        Ok(Some(len)) => FramingError::TruncatedFrame {
            received: src.len(),
            expected: width.saturating_add(len),
        },
        Ok(None) => FramingError::TruncatedPrefix {
            received: src.len(),
            width,
        },
        Err(e) => e,
    }
}

/// Writes one message frame. Everything is checked before the first byte is
/// written, so a failed encode leaves `dst` untouched.
pub(crate) fn encode_message(
    config: &FramingConfig,
    header: &[u8],
    body: &[u8],
    dst: &mut BytesMut,
) -> Result<(), FramingError> {
    let header_len = config.header.byte_len();
    if header.len() != header_len {
        return Err(FramingError::HeaderMismatch {
            expected: header_len,
            got: header.len(),
        });
    }
    let len = header.len().saturating_add(body.len());
    if len == 0 {
        return Err(FramingError::EmptyMessage);
    }
    if len > config.prefix.capacity() {
        return Err(FramingError::PrefixOverflow {
            len,
            prefix: config.prefix,
        });
    }
    if len > config.max_frame_len {
        return Err(FramingError::FrameTooLong {
            len,
            max: config.max_frame_len,
        });
    }
    debug_assert!(len <= config.effective_max());
    let cups = if config.header == HeaderKind::Cups {
        if header[0] as usize != CupsHeader::LEN {
            return Err(FramingError::CupsHeaderLengthByte { found: header[0] });
        }
        // Binary prefixes can announce more than the header's 4 digits can say.
        if len > MAX_DECIMAL4 {
            return Err(FramingError::CupsTotalTooLong { len });
        }
        Some(ascii4(len))
    } else {
        None
    };

    let start = dst.len();
    dst.reserve(config.prefix.width() + len);
    config.prefix.write(len, dst);
    match cups {
        Some(total) => {
            dst.put_slice(&header[..2]);
            dst.put_slice(&total);
            dst.put_slice(&header[6..]);
        }
        None => dst.put_slice(header),
    }
    dst.put_slice(body);
    debug_assert_eq!(dst.len() - start, config.prefix.width() + len);
    Ok(())
}

/// Decodes exactly one whole frame from `bytes`, for tools that hold a frame in
/// memory (a file, a capture) rather than a stream: incomplete input and bytes
/// after the frame are errors.
pub fn split_frame(config: &FramingConfig, bytes: &[u8]) -> Result<Frame, FramingError> {
    let width = config.prefix.width();
    let Some(len) = announced_len(config, bytes)? else {
        return Err(FramingError::TruncatedPrefix {
            received: bytes.len(),
            width,
        });
    };
    let expected = width.saturating_add(len);
    if bytes.len() < expected {
        return Err(FramingError::TruncatedFrame {
            received: bytes.len(),
            expected,
        });
    }
    if bytes.len() > expected {
        return Err(FramingError::TrailingBytes {
            count: bytes.len() - expected,
        });
    }
    split_header(config, Bytes::copy_from_slice(&bytes[width..]))
}

/// The length of the frame at the front of `bytes`, prefix included, once the
/// whole prefix is there (`None` before), checked as the stream decoder checks
/// it. For tools that look for frames in a buffer rather than decode a stream,
/// such as a capture reader resynchronising in the middle of a connection.
pub fn frame_len(config: &FramingConfig, bytes: &[u8]) -> Result<Option<usize>, FramingError> {
    Ok(announced_len(config, bytes)?.map(|len| config.prefix.width().saturating_add(len)))
}

/// Frames one message: prefix, header (its CUPS total length filled in) and body.
pub fn frame_bytes(
    config: &FramingConfig,
    header: &[u8],
    body: &[u8],
) -> Result<Bytes, FramingError> {
    let mut out = BytesMut::new();
    encode_message(config, header, body, &mut out)?;
    Ok(out.freeze())
}

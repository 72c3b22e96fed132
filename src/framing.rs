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

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

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

/// The tokio-util codec for one connection's framing: bytes ⇄ [`Frame`]s.
#[derive(Debug, Clone, Default)]
pub struct FrameCodec {
    config: FramingConfig,
}

impl FrameCodec {
    pub fn new(config: FramingConfig) -> Self {
        FrameCodec { config }
    }

    pub fn config(&self) -> &FramingConfig {
        &self.config
    }
}

/// The length announced at the front of `src` (`None` until the whole prefix is
/// there), checked against the maximum and the header length. Shared by the
/// stream decoder and [`split_frame`] so both reject exactly the same input.
fn announced_len(config: &FramingConfig, src: &[u8]) -> Result<Option<usize>, FramingError> {
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
fn split_header(config: &FramingConfig, mut frame: Bytes) -> Result<Frame, FramingError> {
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

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FramingError;

    /// Returns the next frame, or `Ok(None)` when more bytes are needed.
    ///
    /// A bad or oversized length prefix is an error that leaves the buffer as it
    /// is: the stream is out of step and the connection must be dropped. A bad
    /// CUPS header consumes its frame before returning the error, since the
    /// stream itself is still in step and a caller may choose to go on.
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FramingError> {
        let Some(len) = announced_len(&self.config, src)? else {
            return Ok(None);
        };
        let width = self.config.prefix.width();
        // Cannot overflow: `len` is at most `max_frame_len`, and `src` holds it.
        let total = width.saturating_add(len);
        if src.len() < total {
            // Grow to the announced frame and no further; the length is bounded above.
            src.reserve(total - src.len());
            return Ok(None);
        }
        src.advance(width);
        let frame = src.split_to(len).freeze();
        split_header(&self.config, frame).map(Some)
    }

    /// At end of stream, leftover bytes are a frame cut short: say how short.
    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FramingError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(incomplete(&self.config, src)),
        }
    }
}

/// The error for bytes that end before the frame they start does.
fn incomplete(config: &FramingConfig, src: &[u8]) -> FramingError {
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
fn encode_message(
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

impl Encoder<Frame> for FrameCodec {
    type Error = FramingError;

    /// Writes prefix, header and body. For CUPS headers the total-length field
    /// is overwritten with the real length, so callers can reuse a request's
    /// header (see [`CupsHeader::reply`]) without recomputing it.
    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FramingError> {
        match frame {
            Frame::KeepAlive => {
                dst.reserve(self.config.prefix.width());
                self.config.prefix.write(0, dst);
                Ok(())
            }
            Frame::Message { header, body } => encode_message(&self.config, &header, &body, dst),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str) -> FramingConfig {
        name.parse().unwrap()
    }

    fn encode(config: &FramingConfig, frame: Frame) -> BytesMut {
        let mut out = BytesMut::new();
        FrameCodec::new(config.clone())
            .encode(frame, &mut out)
            .unwrap();
        out
    }

    fn cups_header() -> CupsHeader {
        CupsHeader::new("48020000", "00010000").unwrap()
    }

    #[test]
    fn each_prefix_round_trips() {
        let body = Bytes::from_static(b"0800\x82\x20\0\0\0\0\0\0\x04\0\0\0\0\0\0\x00301");
        let cases: [(&str, &[u8]); 4] = [
            ("ascii4", b"0023"),
            ("binary2", &[0x00, 0x17]),
            ("bcd2", &[0x00, 0x23]),
            ("binary4", &[0, 0, 0, 0x17]),
        ];
        for (name, prefix) in cases {
            let config = named(name);
            let bytes = encode(&config, Frame::message(body.clone()));
            assert_eq!(&bytes[..prefix.len()], prefix, "{name}");
            assert_eq!(&bytes[prefix.len()..], &body[..], "{name}");
            let mut codec = FrameCodec::new(config.clone());
            let mut buf = bytes.clone();
            assert_eq!(
                codec.decode(&mut buf).unwrap(),
                Some(Frame::message(body.clone())),
                "{name}"
            );
            assert!(buf.is_empty());
            assert_eq!(
                split_frame(&config, &bytes).unwrap(),
                Frame::message(body.clone())
            );
            assert_eq!(frame_bytes(&config, &[], &body).unwrap(), bytes.freeze());
        }
    }

    #[test]
    fn large_lengths_use_every_digit_and_byte() {
        let body = vec![b'x'; 1234];
        let cases: [(&str, &[u8]); 4] = [
            ("ascii4", b"1234"),
            ("binary2", &[0x04, 0xd2]),
            ("bcd2", &[0x12, 0x34]),
            ("binary4", &[0, 0, 0x04, 0xd2]),
        ];
        for (name, prefix) in cases {
            let config = named(name);
            let bytes = frame_bytes(&config, &[], &body).unwrap();
            assert_eq!(&bytes[..prefix.len()], prefix, "{name}");
            assert_eq!(
                split_frame(&config, &bytes).unwrap(),
                Frame::message(body.clone())
            );
        }
    }

    #[test]
    fn partial_input_returns_none_then_the_frame() {
        for prefix in LengthPrefix::ALL {
            let config = FramingConfig::new(prefix, HeaderKind::None);
            let bytes = encode(&config, Frame::message(&b"0800abc"[..]));
            let mut codec = FrameCodec::new(config);
            let mut buf = BytesMut::new();
            for (i, &b) in bytes.iter().enumerate() {
                assert_eq!(codec.decode(&mut buf).unwrap(), None, "{prefix} at {i}");
                buf.put_u8(b);
            }
            assert_eq!(
                codec.decode(&mut buf).unwrap(),
                Some(Frame::message(&b"0800abc"[..]))
            );
            assert_eq!(codec.decode(&mut buf).unwrap(), None);
        }
    }

    #[test]
    fn several_frames_in_one_buffer() {
        let config = named("binary2");
        let mut codec = FrameCodec::new(config);
        let mut buf = BytesMut::new();
        codec.encode(Frame::message(&b"one"[..]), &mut buf).unwrap();
        codec.encode(Frame::KeepAlive, &mut buf).unwrap();
        codec
            .encode(Frame::message(&b"three"[..]), &mut buf)
            .unwrap();
        buf.put_slice(&[0x00]); // half of the next prefix
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Some(Frame::message(&b"one"[..]))
        );
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(Frame::KeepAlive));
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Some(Frame::message(&b"three"[..]))
        );
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert_eq!(&buf[..], &[0x00]);
        assert!(matches!(
            codec.decode_eof(&mut buf),
            Err(FramingError::TruncatedPrefix {
                received: 1,
                width: 2
            })
        ));
    }

    #[test]
    fn keep_alive_is_a_zero_length() {
        let expected: [(&str, &[u8]); 4] = [
            ("ascii4", b"0000"),
            ("binary2", &[0, 0]),
            ("bcd2", &[0, 0]),
            ("binary4", &[0, 0, 0, 0]),
        ];
        for (name, bytes) in expected {
            // With a header too: a keep-alive carries none.
            for config in [named(name), named(&format!("{name}+cups"))] {
                assert_eq!(&encode(&config, Frame::KeepAlive)[..], bytes, "{config}");
                let mut buf = BytesMut::from(bytes);
                let mut codec = FrameCodec::new(config.clone());
                assert_eq!(codec.decode(&mut buf).unwrap(), Some(Frame::KeepAlive));
                assert!(buf.is_empty());
                assert_eq!(split_frame(&config, bytes).unwrap(), Frame::KeepAlive);
            }
        }
        assert!(matches!(
            frame_bytes(&named("ascii4"), &[], &[]),
            Err(FramingError::EmptyMessage)
        ));
    }

    #[test]
    fn oversize_is_rejected_before_allocating() {
        let mut codec = FrameCodec::new(named("binary4"));
        let mut buf = BytesMut::with_capacity(16);
        buf.put_slice(&70000u32.to_be_bytes());
        buf.put_slice(b"0200");
        let capacity = buf.capacity();
        let err = codec.decode(&mut buf).unwrap_err();
        assert_eq!(err.to_string(), "frame length 70000 exceeds maximum 8192");
        assert_eq!(buf.capacity(), capacity);
        assert_eq!(buf.len(), 8, "the buffer is left as it was");

        // u32::MAX must not overflow anything either.
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(FramingError::FrameTooLong { len, max: 8192 }) if len == u32::MAX as usize
        ));

        // A configured maximum below the prefix capacity.
        let config = named("ascii4").with_max_frame_len(100);
        let mut codec = FrameCodec::new(config.clone());
        let mut buf = BytesMut::with_capacity(8);
        buf.put_slice(b"0101");
        let capacity = buf.capacity();
        assert_eq!(
            codec.decode(&mut buf).unwrap_err().to_string(),
            "frame length 101 exceeds maximum 100"
        );
        assert_eq!(buf.capacity(), capacity);
        assert!(matches!(
            split_frame(&config, b"9999"),
            Err(FramingError::FrameTooLong {
                len: 9999,
                max: 100
            })
        ));
    }

    #[test]
    fn reserves_only_up_to_the_announced_length() {
        let mut codec = FrameCodec::new(named("ascii4"));
        let mut buf = BytesMut::new();
        buf.put_slice(b"0010ab");
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert!(buf.capacity() >= 14);
        assert!(buf.capacity() < 1024, "capacity {}", buf.capacity());
    }

    #[test]
    fn encoder_refuses_what_does_not_fit() {
        let body = vec![b'x'; 10_000];
        let config_bcd = named("bcd2").with_max_frame_len(100_000);
        assert_eq!(
            frame_bytes(&config_bcd, &[], &body)
                .unwrap_err()
                .to_string(),
            "frame length 10000 does not fit a bcd2 length prefix (at most 9999)"
        );
        let config_bin = named("binary2").with_max_frame_len(100_000);
        assert!(matches!(
            frame_bytes(&config_bin, &[], &vec![0; 65_536]),
            Err(FramingError::PrefixOverflow { len: 65_536, .. })
        ));
        let mut out = BytesMut::new();
        let err = FrameCodec::new(named("binary4"))
            .encode(Frame::message(vec![0u8; 8193]), &mut out)
            .unwrap_err();
        assert_eq!(err.to_string(), "frame length 8193 exceeds maximum 8192");
        assert!(out.is_empty(), "nothing written on error");
        // The maximum itself is fine.
        assert!(frame_bytes(&named("binary4"), &[], &[0; 8192]).is_ok());
    }

    #[test]
    fn bad_ascii_prefix_names_the_bytes() {
        let mut codec = FrameCodec::new(named("ascii4"));
        let mut buf = BytesMut::from(&b"0A12rest"[..]);
        assert_eq!(
            codec.decode(&mut buf).unwrap_err().to_string(),
            "ASCII length prefix 0x30 0x41 0x31 0x32 is not 4 decimal digits"
        );
        // Signs and spaces are not digits either.
        for raw in [b"+012", b" 012", b"-001"] {
            assert!(matches!(
                split_frame(&named("ascii4"), raw),
                Err(FramingError::BadAsciiPrefix { .. })
            ));
        }
    }

    #[test]
    fn bad_bcd_prefix_names_the_bytes() {
        let mut codec = FrameCodec::new(named("bcd2"));
        let mut buf = BytesMut::from(&[0x12, 0x3a, 0, 0][..]);
        assert_eq!(
            codec.decode(&mut buf).unwrap_err().to_string(),
            "BCD length prefix 0x12 0x3a is not 4 packed decimal digits (a nibble is above 9)"
        );
        let mut buf = BytesMut::from(&[0xa0, 0x00][..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(FramingError::BadBcdPrefix { raw: [0xa0, 0x00] })
        ));
    }

    #[test]
    fn frame_shorter_than_its_header_is_an_error() {
        let mut codec = FrameCodec::new(named("ascii4+header:12"));
        let mut buf = BytesMut::from(&b"0005abcde"[..]);
        assert_eq!(
            codec.decode(&mut buf).unwrap_err().to_string(),
            "frame length 5 is shorter than the 12-byte header this framing puts in front of every message"
        );
    }

    #[test]
    fn fixed_header_is_split_off() {
        let config = named("binary2+header:3");
        let bytes = frame_bytes(&config, b"HDR", b"0800").unwrap();
        assert_eq!(&bytes[..], b"\x00\x07HDR0800");
        assert_eq!(
            split_frame(&config, &bytes).unwrap(),
            Frame::Message {
                header: Bytes::from_static(b"HDR"),
                body: Bytes::from_static(b"0800"),
            }
        );
        assert!(matches!(
            frame_bytes(&config, b"HD", b"0800"),
            Err(FramingError::HeaderMismatch {
                expected: 3,
                got: 2
            })
        ));
        assert!(matches!(
            frame_bytes(&named("binary2"), b"HDR", b"0800"),
            Err(FramingError::HeaderMismatch {
                expected: 0,
                got: 3
            })
        ));
    }

    #[test]
    fn cups_header_parse_build_and_reply() {
        let mut header = cups_header();
        header.set_body_len(100).unwrap();
        assert_eq!(header.total_len(), 146);
        let bytes = header.build();
        assert_eq!(bytes[0], 46);
        assert_eq!(&bytes[2..6], b"0146");
        assert_eq!(&bytes[6..17], b"48020000   ");
        assert_eq!(&bytes[17..28], b"00010000   ");
        assert_eq!(&bytes[41..46], b"00000");
        assert_eq!(CupsHeader::parse(&bytes).unwrap(), header);

        let reply = header.reply();
        assert_eq!(reply.source, header.destination);
        assert_eq!(reply.destination, header.source);
        assert_eq!(reply.reply(), header);

        let mut bad = bytes;
        bad[0] = 45;
        assert_eq!(
            CupsHeader::parse(&bad).unwrap_err().to_string(),
            "CUPS header length byte is 0x2d (45), expected 0x2e (46)"
        );
        let mut bad = bytes;
        bad[3] = b'x';
        assert_eq!(
            CupsHeader::parse(&bad).unwrap_err().to_string(),
            "CUPS total message length 0x30 0x78 0x34 0x36 is not 4 decimal digits"
        );
        assert!(matches!(
            CupsHeader::parse(&bytes[..45]),
            Err(FramingError::CupsHeaderSize { len: 45 })
        ));
        assert!(cups_header().set_body_len(9954).is_err());
        assert!(CupsHeader::new("123456789012", "1").is_err());
    }

    #[test]
    fn cups_total_length_is_filled_when_encoding() {
        let config = named("ascii4+cups");
        // A header whose total length is stale, as when reusing a request's.
        let header = cups_header().reply().build();
        let bytes = frame_bytes(&config, &header, b"0810body").unwrap();
        assert_eq!(&bytes[..4], b"0054");
        assert_eq!(&bytes[4 + 2..4 + 6], b"0054");
        let Frame::Message { header: got, body } = split_frame(&config, &bytes).unwrap() else {
            panic!("not a message");
        };
        assert_eq!(body, &b"0810body"[..]);
        let parsed = CupsHeader::parse(&got).unwrap();
        assert_eq!(parsed.total_len(), 54);
        assert_eq!(parsed.source, cups_header().destination);

        let mut not_cups = header;
        not_cups[0] = 0;
        assert!(matches!(
            frame_bytes(&config, &not_cups, b"0810"),
            Err(FramingError::CupsHeaderLengthByte { found: 0 })
        ));
    }

    #[test]
    fn cups_header_is_checked_when_decoding() {
        let config = named("binary2+cups");
        let good = frame_bytes(&config, &cups_header().build(), b"0800").unwrap();

        let mut wrong_total = BytesMut::from(&good[..]);
        wrong_total[2 + 2..2 + 6].copy_from_slice(b"0051");
        wrong_total.put_slice(&good); // the next frame is still readable
        let mut codec = FrameCodec::new(config.clone());
        assert_eq!(
            codec.decode(&mut wrong_total).unwrap_err().to_string(),
            "CUPS header says the message is 51 bytes but the frame is 50 bytes"
        );
        assert!(matches!(
            codec.decode(&mut wrong_total),
            Ok(Some(Frame::Message { .. }))
        ));

        let mut short = BytesMut::new();
        short.put_u16(45);
        assert!(matches!(
            codec.decode(&mut short),
            Err(FramingError::ShorterThanHeader {
                len: 45,
                header_len: 46
            })
        ));
    }

    #[test]
    fn split_frame_wants_exactly_one_frame() {
        let config = named("ascii4");
        assert!(matches!(
            split_frame(&config, b"00"),
            Err(FramingError::TruncatedPrefix {
                received: 2,
                width: 4
            })
        ));
        assert_eq!(
            split_frame(&config, b"0010abc").unwrap_err().to_string(),
            "incomplete frame: 7 of 14 bytes (length prefix included)"
        );
        assert_eq!(
            split_frame(&config, b"0003abcde").unwrap_err().to_string(),
            "2 bytes after the end of the frame"
        );
    }

    #[test]
    fn decode_eof_reports_a_cut_frame() {
        let mut codec = FrameCodec::new(named("ascii4"));
        let mut buf = BytesMut::from(&b"0010abc"[..]);
        assert!(matches!(
            codec.decode_eof(&mut buf),
            Err(FramingError::TruncatedFrame {
                received: 7,
                expected: 14
            })
        ));
        assert_eq!(codec.decode_eof(&mut BytesMut::new()).unwrap(), None);
    }

    #[test]
    fn framing_names_parse_and_display() {
        let cases = [
            ("ascii4", LengthPrefix::Ascii4, HeaderKind::None),
            ("binary2", LengthPrefix::Binary2, HeaderKind::None),
            ("bcd2", LengthPrefix::Bcd2, HeaderKind::None),
            ("binary4", LengthPrefix::Binary4, HeaderKind::None),
            ("binary2+cups", LengthPrefix::Binary2, HeaderKind::Cups),
            (
                "ascii4+header:12",
                LengthPrefix::Ascii4,
                HeaderKind::Fixed(12),
            ),
            ("bcd2+header:1", LengthPrefix::Bcd2, HeaderKind::Fixed(1)),
        ];
        for (name, prefix, header) in cases {
            let parsed: FramingConfig = name.parse().unwrap();
            assert_eq!(parsed, FramingConfig::new(prefix, header));
            assert_eq!(parsed.max_frame_len, DEFAULT_MAX_FRAME_LEN);
            assert_eq!(parsed.to_string(), name);
            assert_eq!(parsed.to_string().parse::<FramingConfig>().unwrap(), parsed);
        }
        assert_eq!(
            " Binary2+CUPS ".parse::<FramingConfig>().unwrap(),
            named("binary2+cups")
        );
        assert_eq!(FramingConfig::default(), named("ascii4"));

        let err = "ascii2".parse::<FramingConfig>().unwrap_err().to_string();
        assert!(
            err.starts_with("unknown framing \"ascii2\": expected ascii4"),
            "{err}"
        );
        for valid in ["binary2", "bcd2", "binary4", "+cups", "+header:N"] {
            assert!(err.contains(valid), "{err}");
        }
        assert!(matches!(
            "ascii4+tpdu".parse::<FramingConfig>(),
            Err(FramingError::UnknownFraming { .. })
        ));
        for bad in ["ascii4+header:0", "ascii4+header:", "ascii4+header:x"] {
            assert!(
                matches!(
                    bad.parse::<FramingConfig>(),
                    Err(FramingError::BadHeaderLength { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn arbitrary_input_never_panics() {
        // A cheap exhaustive sweep of short inputs; the fuzz targets go further.
        let configs = [
            named("ascii4"),
            named("binary2+cups").with_max_frame_len(60),
            named("bcd2+header:2").with_max_frame_len(3),
            named("binary4").with_max_frame_len(0),
        ];
        for config in configs {
            for a in 0..=255u8 {
                for b in [0u8, 1, 2, 3, 0x30, 0x39, 0x99, 0xff] {
                    let input = [a, b, b, a, b'0', b'8'];
                    for end in 0..=input.len() {
                        let _ = split_frame(&config, &input[..end]);
                        let mut buf = BytesMut::from(&input[..end]);
                        let mut codec = FrameCodec::new(config.clone());
                        while let Ok(Some(_)) = codec.decode(&mut buf) {}
                        let _ = codec.decode_eof(&mut buf);
                    }
                }
            }
        }
    }
}

//! Reading pcap and pcapng files, one packet at a time.
//!
//! The format is told by the first four bytes. pcap: both byte orders, micro-
//! and nanosecond timestamps. pcapng: every section (each with its own byte
//! order and interfaces), enhanced, simple and obsolete packet blocks, and each
//! interface's `if_tsresol` (decimal or binary) and `if_tsoffset`, which
//! timestamps are rescaled by. Other blocks are skipped.
//!
//! Packets are numbered from 1 in file order, as Wireshark numbers them, so an
//! error can name the packet it is about. A packet or block longer than
//! [`MAX_BLOCK_LEN`] is an error before anything is allocated for it.

use std::io::{ErrorKind, Read};

/// The largest packet record or pcapng block read (16 MiB): far above any
/// snapshot length in use, low enough that a corrupt length cannot exhaust memory.
pub const MAX_BLOCK_LEN: usize = 16 << 20;

const PCAP_MICROS: u32 = 0xa1b2_c3d4;
const PCAP_NANOS: u32 = 0xa1b2_3c4d;
const PCAPNG_SHB: u32 = 0x0a0d_0d0a;
const PCAPNG_BYTE_ORDER: u32 = 0x1a2b_3c4d;
const PCAPNG_IDB: u32 = 1;
const PCAPNG_PB: u32 = 2;
const PCAPNG_SPB: u32 = 3;
const PCAPNG_EPB: u32 = 6;
const OPT_END: u16 = 0;
const OPT_IF_TSRESOL: u16 = 9;
const OPT_IF_TSOFFSET: u16 = 14;

/// Why a capture cannot be read further.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("reading the capture: {0}")]
    Io(#[from] std::io::Error),
    #[error("the file is empty: not a pcap or pcapng file")]
    Empty,
    #[error("not a pcap or pcapng file (it starts with {magic:#010x})")]
    NotACapture { magic: u32 },
    #[error("packet {packet}: the capture ends inside it (truncated file)")]
    Truncated { packet: u64 },
    #[error("packet {packet}: {reason}")]
    Corrupt { packet: u64, reason: String },
}

/// One packet as captured.
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    /// 1 for the first packet of the file.
    pub number: u64,
    /// Nanoseconds since the Unix epoch (UTC).
    pub ts_ns: i64,
    /// The pcapng interface (0 in a pcap file).
    pub interface: u32,
    /// The LINKTYPE_ of the interface (1 Ethernet, 113 Linux cooked, ...).
    pub link_type: u32,
    /// The captured bytes (possibly fewer than were on the wire).
    pub data: &'a [u8],
    /// The packet's length on the wire.
    pub orig_len: u32,
}

/// An interface's timestamp resolution (pcapng `if_tsresol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsResolution {
    /// Units of 10^-n seconds (6 is the pcapng default: microseconds).
    Decimal(u8),
    /// Units of 2^-n seconds.
    Binary(u8),
}

impl TsResolution {
    /// The `if_tsresol` option byte.
    pub fn byte(self) -> u8 {
        match self {
            TsResolution::Decimal(n) => n & 0x7f,
            TsResolution::Binary(n) => 0x80 | (n & 0x7f),
        }
    }

    fn from_byte(b: u8) -> Self {
        if b & 0x80 == 0 {
            TsResolution::Decimal(b)
        } else {
            TsResolution::Binary(b & 0x7f)
        }
    }

    /// A timestamp in these units as nanoseconds (saturating).
    pub fn to_ns(self, units: u64) -> i64 {
        let ns: u128 = match self {
            TsResolution::Decimal(n) if n <= 9 => u128::from(units) * 10u128.pow(u32::from(9 - n)),
            TsResolution::Decimal(n) => {
                u128::from(units) / 10u128.checked_pow(u32::from(n - 9)).unwrap_or(u128::MAX)
            }
            TsResolution::Binary(n) => (u128::from(units) * 1_000_000_000) >> u32::from(n.min(127)),
        };
        i64::try_from(ns).unwrap_or(i64::MAX)
    }

    /// Nanoseconds as a timestamp in these units (for writing).
    pub fn from_ns(self, ns: i64) -> u64 {
        let ns = u128::try_from(ns).unwrap_or(0);
        let units = match self {
            TsResolution::Decimal(n) if n <= 9 => ns / 10u128.pow(u32::from(9 - n)),
            TsResolution::Decimal(n) => {
                ns.saturating_mul(10u128.checked_pow(u32::from(n - 9)).unwrap_or(u128::MAX))
            }
            TsResolution::Binary(n) => (ns << u32::from(n.min(64))) / 1_000_000_000,
        };
        u64::try_from(units).unwrap_or(u64::MAX)
    }
}

#[derive(Debug, Clone, Copy)]
struct Interface {
    link_type: u32,
    resolution: TsResolution,
    offset_s: i64,
}

#[derive(Debug)]
enum Format {
    Pcap {
        big_endian: bool,
        nanos: bool,
        link_type: u32,
    },
    Pcapng {
        big_endian: bool,
        interfaces: Vec<Interface>,
    },
}

/// Reads a pcap or pcapng stream packet by packet. Give it a buffered reader.
#[derive(Debug)]
pub struct CaptureReader<R> {
    input: R,
    format: Format,
    buf: Vec<u8>,
    number: u64,
    last_ts_ns: i64,
}

fn u16_at(b: &[u8], at: usize, be: bool) -> u16 {
    let raw = [b[at], b[at + 1]];
    if be {
        u16::from_be_bytes(raw)
    } else {
        u16::from_le_bytes(raw)
    }
}

fn u32_at(b: &[u8], at: usize, be: bool) -> u32 {
    let raw = [b[at], b[at + 1], b[at + 2], b[at + 3]];
    if be {
        u32::from_be_bytes(raw)
    } else {
        u32::from_le_bytes(raw)
    }
}

impl<R: Read> CaptureReader<R> {
    /// Reads the file header (pcap) or the first section header (pcapng).
    pub fn new(mut input: R) -> Result<Self, CaptureError> {
        let mut magic = [0u8; 4];
        if !fill(&mut input, &mut magic, true, 1)? {
            return Err(CaptureError::Empty);
        }
        let le = u32::from_le_bytes(magic);
        let pcap = match le {
            PCAP_MICROS => Some((false, false)),
            PCAP_NANOS => Some((false, true)),
            _ if le.swap_bytes() == PCAP_MICROS => Some((true, false)),
            _ if le.swap_bytes() == PCAP_NANOS => Some((true, true)),
            _ => None,
        };
        if let Some((big_endian, nanos)) = pcap {
            let mut rest = [0u8; 20];
            fill(&mut input, &mut rest, false, 1)?;
            let link_type = u32_at(&rest, 16, big_endian) & 0xffff;
            return Ok(CaptureReader {
                input,
                format: Format::Pcap {
                    big_endian,
                    nanos,
                    link_type,
                },
                buf: Vec::new(),
                number: 0,
                last_ts_ns: 0,
            });
        }
        if le != PCAPNG_SHB {
            return Err(CaptureError::NotACapture {
                magic: u32::from_be_bytes(magic),
            });
        }
        let mut reader = CaptureReader {
            input,
            format: Format::Pcapng {
                big_endian: false,
                interfaces: Vec::new(),
            },
            buf: Vec::new(),
            number: 0,
            last_ts_ns: 0,
        };
        reader.section_header()?;
        Ok(reader)
    }

    /// How many packets have been returned so far.
    pub fn packets_read(&self) -> u64 {
        self.number
    }

    fn corrupt(&self, reason: String) -> CaptureError {
        CaptureError::Corrupt {
            packet: self.number + 1,
            reason,
        }
    }

    /// The rest of a section header block, its type already read.
    fn section_header(&mut self) -> Result<(), CaptureError> {
        let mut head = [0u8; 8];
        fill(&mut self.input, &mut head, false, self.number + 1)?;
        self.section_rest(
            [head[0], head[1], head[2], head[3]],
            [head[4], head[5], head[6], head[7]],
        )
    }

    /// A section header block after its length (`total`, byte order not yet
    /// known) and byte-order magic (`bom`): the section's byte order, and no
    /// interfaces until its own are described.
    fn section_rest(&mut self, total: [u8; 4], bom: [u8; 4]) -> Result<(), CaptureError> {
        let big_endian = match u32::from_le_bytes(bom) {
            PCAPNG_BYTE_ORDER => false,
            o if o.swap_bytes() == PCAPNG_BYTE_ORDER => true,
            o => return Err(self.corrupt(format!("pcapng byte-order magic {o:#010x}"))),
        };
        let total = u32_at(&total, 0, big_endian) as usize;
        if !(28..=MAX_BLOCK_LEN).contains(&total) || !total.is_multiple_of(4) {
            return Err(self.corrupt(format!("section header block length {total}")));
        }
        self.buf.resize(total - 12, 0);
        fill(&mut self.input, &mut self.buf, false, self.number + 1)?;
        self.format = Format::Pcapng {
            big_endian,
            interfaces: Vec::new(),
        };
        Ok(())
    }

    /// The next packet, `None` at the end of the file.
    pub fn next_packet(&mut self) -> Result<Option<Packet<'_>>, CaptureError> {
        match self.format {
            Format::Pcap {
                big_endian,
                nanos,
                link_type,
            } => self.next_pcap(big_endian, nanos, link_type),
            Format::Pcapng { .. } => self.next_pcapng(),
        }
    }

    fn next_pcap(
        &mut self,
        be: bool,
        nanos: bool,
        link_type: u32,
    ) -> Result<Option<Packet<'_>>, CaptureError> {
        let mut head = [0u8; 16];
        if !fill(&mut self.input, &mut head, true, self.number + 1)? {
            return Ok(None);
        }
        let secs = i64::from(u32_at(&head, 0, be));
        let frac = i64::from(u32_at(&head, 4, be));
        let caplen = u32_at(&head, 8, be) as usize;
        let orig_len = u32_at(&head, 12, be);
        if caplen > MAX_BLOCK_LEN {
            return Err(self.corrupt(format!("captured length {caplen} is not believable")));
        }
        self.buf.resize(caplen, 0);
        fill(&mut self.input, &mut self.buf, false, self.number + 1)?;
        self.number += 1;
        let ts_ns = secs * 1_000_000_000 + if nanos { frac } else { frac * 1000 };
        Ok(Some(Packet {
            number: self.number,
            ts_ns,
            interface: 0,
            link_type,
            data: &self.buf,
            orig_len,
        }))
    }

    fn next_pcapng(&mut self) -> Result<Option<Packet<'_>>, CaptureError> {
        // (interface, timestamp in the interface's units, data start, data end, orig_len)
        let (interface, units, start, end, orig_len) = loop {
            let mut head = [0u8; 8];
            if !fill(&mut self.input, &mut head, true, self.number + 1)? {
                return Ok(None);
            }
            let Format::Pcapng { big_endian: be, .. } = self.format else {
                unreachable!("next_pcapng is called on pcapng files only")
            };
            let block_type = u32_at(&head, 0, be);
            if block_type == PCAPNG_SHB {
                // A new section: its own byte order and interfaces.
                let mut bom = [0u8; 4];
                fill(&mut self.input, &mut bom, false, self.number + 1)?;
                self.section_rest([head[4], head[5], head[6], head[7]], bom)?;
                continue;
            }
            let total = u32_at(&head, 4, be) as usize;
            if !(12..=MAX_BLOCK_LEN).contains(&total) || !total.is_multiple_of(4) {
                return Err(self.corrupt(format!(
                    "pcapng block of type {block_type:#x} has length {total}"
                )));
            }
            self.buf.resize(total - 8, 0);
            fill(&mut self.input, &mut self.buf, false, self.number + 1)?;
            let body_len = total - 12;
            if u32_at(&self.buf, body_len, be) as usize != total {
                return Err(self.corrupt(format!(
                    "pcapng block of type {block_type:#x}: its two lengths differ"
                )));
            }
            let body = &self.buf[..body_len];
            match block_type {
                PCAPNG_IDB => {
                    let interface = self.interface_block(be)?;
                    if let Format::Pcapng { interfaces, .. } = &mut self.format {
                        interfaces.push(interface);
                    }
                }
                PCAPNG_EPB | PCAPNG_PB => {
                    if body.len() < 20 {
                        return Err(self.corrupt("packet block too short".into()));
                    }
                    let interface = if block_type == PCAPNG_EPB {
                        u32_at(body, 0, be)
                    } else {
                        u32::from(u16_at(body, 0, be))
                    };
                    let units =
                        (u64::from(u32_at(body, 4, be)) << 32) | u64::from(u32_at(body, 8, be));
                    let caplen = u32_at(body, 12, be) as usize;
                    let orig_len = u32_at(body, 16, be);
                    if caplen > body.len() - 20 {
                        return Err(self.corrupt(format!(
                            "captured length {caplen} exceeds its block ({} bytes of data)",
                            body.len() - 20
                        )));
                    }
                    break (interface, units, 20, 20 + caplen, orig_len);
                }
                PCAPNG_SPB => {
                    if body.len() < 4 {
                        return Err(self.corrupt("simple packet block too short".into()));
                    }
                    let orig_len = u32_at(body, 0, be);
                    let caplen = (orig_len as usize).min(body.len() - 4);
                    // No timestamp: the previous packet's stands in.
                    break (0, u64::MAX, 4, 4 + caplen, orig_len);
                }
                _ => {}
            }
        };
        let Format::Pcapng { interfaces, .. } = &self.format else {
            unreachable!("next_pcapng is called on pcapng files only")
        };
        let Some(info) = interfaces.get(interface as usize).copied() else {
            return Err(self.corrupt(format!(
                "packet on interface {interface}, but the section describes {}",
                interfaces.len()
            )));
        };
        self.number += 1;
        let ts_ns = if units == u64::MAX {
            self.last_ts_ns
        } else {
            info.resolution
                .to_ns(units)
                .saturating_add(info.offset_s.saturating_mul(1_000_000_000))
        };
        self.last_ts_ns = ts_ns;
        Ok(Some(Packet {
            number: self.number,
            ts_ns,
            interface,
            link_type: info.link_type,
            data: &self.buf[start..end],
            orig_len,
        }))
    }

    /// An interface description block, in `self.buf`.
    fn interface_block(&self, be: bool) -> Result<Interface, CaptureError> {
        let body = &self.buf[..self.buf.len() - 4];
        if body.len() < 8 {
            return Err(self.corrupt("interface description block too short".into()));
        }
        let mut interface = Interface {
            link_type: u32::from(u16_at(body, 0, be)),
            resolution: TsResolution::Decimal(6),
            offset_s: 0,
        };
        let mut at = 8;
        while at + 4 <= body.len() {
            let code = u16_at(body, at, be);
            let len = u16_at(body, at + 2, be) as usize;
            let value = at + 4;
            if code == OPT_END || value + len > body.len() {
                break;
            }
            match (code, len) {
                (OPT_IF_TSRESOL, 1) => {
                    interface.resolution = TsResolution::from_byte(body[value]);
                }
                (OPT_IF_TSOFFSET, 8) => {
                    let raw: [u8; 8] = body[value..value + 8].try_into().expect("8 bytes");
                    interface.offset_s = if be {
                        i64::from_be_bytes(raw)
                    } else {
                        i64::from_le_bytes(raw)
                    };
                }
                _ => {}
            }
            at = value + len.div_ceil(4) * 4;
        }
        Ok(interface)
    }
}

/// Fills `buf` entirely. At a record boundary (`boundary`) a clean end of file
/// before the first byte is `Ok(false)`; anywhere else a short read is a
/// truncated capture, reported against `packet`.
fn fill(
    input: &mut impl Read,
    buf: &mut [u8],
    boundary: bool,
    packet: u64,
) -> Result<bool, CaptureError> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) if got == 0 && boundary => return Ok(false),
            Ok(0) => return Err(CaptureError::Truncated { packet }),
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

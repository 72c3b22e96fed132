//! Writing pcap and pcapng files, and the packets that go in them: Ethernet,
//! Linux cooked v1/v2, IPv4/IPv6 and TCP headers around a payload, so that a
//! capture of a link can be synthesised (by tests today, by the switch later).

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};

use crate::file::TsResolution;

/// LINKTYPE_ETHERNET.
pub const LINKTYPE_ETHERNET: u32 = 1;
/// LINKTYPE_NULL: BSD loopback, a 4-byte address family in the writer's byte order.
pub const LINKTYPE_NULL: u32 = 0;
/// LINKTYPE_RAW: the packet starts with the IP header.
pub const LINKTYPE_RAW: u32 = 101;
/// LINKTYPE_LINUX_SLL: Linux cooked capture v1.
pub const LINKTYPE_LINUX_SLL: u32 = 113;
/// LINKTYPE_LINUX_SLL2: Linux cooked capture v2 (`tcpdump -i any` since 4.99).
pub const LINKTYPE_LINUX_SLL2: u32 = 276;

fn put16(out: &mut Vec<u8>, v: u16, be: bool) {
    out.extend_from_slice(&if be { v.to_be_bytes() } else { v.to_le_bytes() });
}

fn put32(out: &mut Vec<u8>, v: u32, be: bool) {
    out.extend_from_slice(&if be { v.to_be_bytes() } else { v.to_le_bytes() });
}

/// A classic pcap file.
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    out: W,
    big_endian: bool,
    nanos: bool,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the file header: one link type for every packet.
    pub fn new(mut out: W, link_type: u32, nanos: bool, big_endian: bool) -> io::Result<Self> {
        let mut head = Vec::with_capacity(24);
        put32(
            &mut head,
            if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 },
            big_endian,
        );
        put16(&mut head, 2, big_endian);
        put16(&mut head, 4, big_endian);
        put32(&mut head, 0, big_endian);
        put32(&mut head, 0, big_endian);
        put32(&mut head, 262_144, big_endian);
        put32(&mut head, link_type, big_endian);
        out.write_all(&head)?;
        Ok(PcapWriter {
            out,
            big_endian,
            nanos,
        })
    }

    /// One packet, captured whole, at `ts_ns` nanoseconds since the epoch.
    pub fn packet(&mut self, ts_ns: i64, data: &[u8]) -> io::Result<()> {
        let be = self.big_endian;
        let ts = u64::try_from(ts_ns).unwrap_or(0);
        let secs = (ts / 1_000_000_000) as u32;
        let frac = (ts % 1_000_000_000) as u32;
        let frac = if self.nanos { frac } else { frac / 1000 };
        let len = u32::try_from(data.len()).map_err(io::Error::other)?;
        let mut head = Vec::with_capacity(16);
        put32(&mut head, secs, be);
        put32(&mut head, frac, be);
        put32(&mut head, len, be);
        put32(&mut head, len, be);
        self.out.write_all(&head)?;
        self.out.write_all(data)
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

/// A pcapng file: one section, any number of interfaces.
#[derive(Debug)]
pub struct PcapngWriter<W: Write> {
    out: W,
    big_endian: bool,
    /// Each interface's resolution and offset (seconds).
    interfaces: Vec<(TsResolution, i64)>,
}

impl<W: Write> PcapngWriter<W> {
    /// Writes the section header block.
    pub fn new(out: W, big_endian: bool) -> io::Result<Self> {
        let mut writer = PcapngWriter {
            out,
            big_endian,
            interfaces: Vec::new(),
        };
        let mut body = Vec::new();
        put32(&mut body, 0x1a2b_3c4d, big_endian);
        put16(&mut body, 1, big_endian);
        put16(&mut body, 0, big_endian);
        body.extend_from_slice(&[0xff; 8]); // section length unknown
        writer.block(0x0a0d_0d0a, &body)?;
        Ok(writer)
    }

    fn block(&mut self, block_type: u32, body: &[u8]) -> io::Result<()> {
        let be = self.big_endian;
        let padded = body.len().div_ceil(4) * 4;
        let total = u32::try_from(padded + 12).map_err(io::Error::other)?;
        let mut out = Vec::with_capacity(padded + 12);
        put32(&mut out, block_type, be);
        put32(&mut out, total, be);
        out.extend_from_slice(body);
        out.resize(padded + 8, 0);
        put32(&mut out, total, be);
        self.out.write_all(&out)
    }

    /// Describes an interface; returns its id for [`PcapngWriter::packet`].
    pub fn interface(&mut self, link_type: u16, resolution: TsResolution) -> io::Result<u32> {
        self.interface_with_offset(link_type, resolution, 0)
    }

    /// An interface whose timestamps count from `offset_s` seconds after the
    /// epoch (`if_tsoffset`); the timestamps given to `packet` stay absolute.
    pub fn interface_with_offset(
        &mut self,
        link_type: u16,
        resolution: TsResolution,
        offset_s: i64,
    ) -> io::Result<u32> {
        let be = self.big_endian;
        let mut body = Vec::new();
        put16(&mut body, link_type, be);
        put16(&mut body, 0, be);
        put32(&mut body, 262_144, be);
        if resolution != TsResolution::Decimal(6) {
            put16(&mut body, 9, be);
            put16(&mut body, 1, be);
            body.extend_from_slice(&[resolution.byte(), 0, 0, 0]);
        }
        if offset_s != 0 {
            put16(&mut body, 14, be);
            put16(&mut body, 8, be);
            body.extend_from_slice(&if be {
                offset_s.to_be_bytes()
            } else {
                offset_s.to_le_bytes()
            });
        }
        put16(&mut body, 0, be);
        put16(&mut body, 0, be);
        self.block(1, &body)?;
        self.interfaces.push((resolution, offset_s));
        Ok(self.interfaces.len() as u32 - 1)
    }

    /// One packet on `interface` (an enhanced packet block).
    pub fn packet(&mut self, interface: u32, ts_ns: i64, data: &[u8]) -> io::Result<()> {
        let be = self.big_endian;
        let (resolution, offset_s) = *self
            .interfaces
            .get(interface as usize)
            .ok_or_else(|| io::Error::other(format!("no interface {interface}")))?;
        let units =
            resolution.from_ns(ts_ns.saturating_sub(offset_s.saturating_mul(1_000_000_000)));
        let len = u32::try_from(data.len()).map_err(io::Error::other)?;
        let mut body = Vec::with_capacity(20 + data.len());
        put32(&mut body, interface, be);
        put32(&mut body, (units >> 32) as u32, be);
        put32(&mut body, units as u32, be);
        put32(&mut body, len, be);
        put32(&mut body, len, be);
        body.extend_from_slice(data);
        self.block(6, &body)
    }

    /// Flushes the underlying writer.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    pub fn get_ref(&self) -> &W {
        &self.out
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

/// TCP header flags.
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

/// An IP packet carrying one TCP segment (no options, checksums left zero:
/// readers of captures do not check them).
pub fn ip_tcp(
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    tcp_flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    ip_tcp_acking(src, dst, seq, 0, tcp_flags, payload)
}

/// [`ip_tcp`] acknowledging the other side's bytes up to `ack` (with the
/// ACK flag, readers such as Wireshark check it against what was sent).
pub fn ip_tcp_acking(
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    ack: u32,
    tcp_flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut tcp = Vec::with_capacity(20 + payload.len());
    tcp.extend_from_slice(&src.port().to_be_bytes());
    tcp.extend_from_slice(&dst.port().to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&ack.to_be_bytes());
    tcp.push(5 << 4);
    tcp.push(tcp_flags);
    tcp.extend_from_slice(&65535u16.to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    tcp.extend_from_slice(payload);
    let mut out = Vec::with_capacity(40 + tcp.len());
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = (20 + tcp.len()) as u16;
            out.extend_from_slice(&[0x45, 0]);
            out.extend_from_slice(&total.to_be_bytes());
            out.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (s, d) => {
            let to6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            out.extend_from_slice(&[0x60, 0, 0, 0]);
            out.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
            out.extend_from_slice(&[6, 64]);
            out.extend_from_slice(&to6(s).octets());
            out.extend_from_slice(&to6(d).octets());
        }
    }
    out.extend_from_slice(&tcp);
    out
}

fn ethertype(ip_packet: &[u8]) -> u16 {
    if ip_packet.first().is_some_and(|b| b >> 4 == 6) {
        0x86dd
    } else {
        0x0800
    }
}

/// An Ethernet frame (zero MAC addresses, as `tcpdump -i lo` writes them),
/// with an 802.1Q tag when `vlan` is given.
pub fn ethernet(ip_packet: &[u8], vlan: Option<u16>) -> Vec<u8> {
    let mut out = vec![0u8; 12];
    if let Some(id) = vlan {
        out.extend_from_slice(&0x8100u16.to_be_bytes());
        out.extend_from_slice(&(id & 0x0fff).to_be_bytes());
    }
    out.extend_from_slice(&ethertype(ip_packet).to_be_bytes());
    out.extend_from_slice(ip_packet);
    out
}

/// A Linux cooked v1 packet (loopback device, ARPHRD 772).
pub fn linux_sll(ip_packet: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + ip_packet.len());
    out.extend_from_slice(&0u16.to_be_bytes()); // to us
    out.extend_from_slice(&772u16.to_be_bytes());
    out.extend_from_slice(&6u16.to_be_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&ethertype(ip_packet).to_be_bytes());
    out.extend_from_slice(ip_packet);
    out
}

/// A Linux cooked v2 packet (loopback device, ARPHRD 772).
pub fn linux_sll2(ip_packet: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(20 + ip_packet.len());
    out.extend_from_slice(&ethertype(ip_packet).to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&1u32.to_be_bytes()); // interface index
    out.extend_from_slice(&772u16.to_be_bytes());
    out.push(0); // to us
    out.push(6);
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(ip_packet);
    out
}

/// A BSD loopback packet: the address family in little-endian order.
pub fn bsd_null(ip_packet: &[u8]) -> Vec<u8> {
    let family: u32 = if ethertype(ip_packet) == 0x86dd {
        30
    } else {
        2
    };
    let mut out = family.to_le_bytes().to_vec();
    out.extend_from_slice(ip_packet);
    out
}

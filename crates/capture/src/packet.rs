//! From a captured packet to its TCP segment: the link layer, IPv4 or IPv6,
//! then the TCP header. Anything that is not TCP over IP is `Ok(None)`; a
//! header that is cut short or contradicts itself is an error naming what.
//! IP fragments are not reassembled (ISO 8583 links do not fragment: the
//! kernel segments TCP below the MTU), so a fragment is `Ok(None)` too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// TCP flag bits as in the header.
pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;

/// One TCP segment of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSegment<'a> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub flags: u8,
    /// The payload bytes that were captured.
    pub payload: &'a [u8],
    /// Payload bytes the IP header announces but the capture does not hold
    /// (a snapshot length shorter than the packet).
    pub missing: usize,
}

impl TcpSegment<'_> {
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// The TCP segment in a packet of this link type, if it carries one.
pub fn tcp_segment(link_type: u32, data: &[u8]) -> Result<Option<TcpSegment<'_>>, String> {
    let (ethertype, ip) = match link_type {
        // Ethernet, with any number of 802.1Q / 802.1ad tags.
        1 => {
            if data.len() < 14 {
                return Err(format!("Ethernet header cut short ({} bytes)", data.len()));
            }
            let mut ethertype = be16(data, 12);
            let mut at = 14;
            while matches!(ethertype, 0x8100 | 0x88a8 | 0x9100) {
                if data.len() < at + 4 {
                    return Err("802.1Q tag cut short".into());
                }
                ethertype = be16(data, at + 2);
                at += 4;
            }
            (Some(ethertype), &data[at..])
        }
        // Linux cooked v1: protocol at offset 14 of a 16-byte header; v2:
        // protocol first, in a 20-byte header.
        113 => cooked(data, 16, 14, "Linux cooked")?,
        276 => cooked(data, 20, 0, "Linux cooked v2")?,
        // BSD loopback: a 4-byte address family, in the capturing host's byte
        // order (NULL) or big-endian (LOOP). 2 is IPv4; 24, 28 and 30 are IPv6.
        0 | 108 => {
            if data.len() < 4 {
                return Err("loopback header cut short".into());
            }
            let le = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
            let family = if le > 0xffff { le.swap_bytes() } else { le };
            match family {
                2 => (Some(0x0800), &data[4..]),
                24 | 28 | 30 => (Some(0x86dd), &data[4..]),
                _ => return Ok(None),
            }
        }
        // Raw IP: the version nibble says which.
        101 | 12 | 14 | 228 | 229 => (None, data),
        _ => return Ok(None),
    };
    let version = match ethertype {
        Some(0x0800) => 4,
        Some(0x86dd) => 6,
        Some(_) => return Ok(None),
        None => ip.first().map_or(0, |b| b >> 4),
    };
    match version {
        4 => ipv4(ip),
        6 => ipv6(ip),
        _ => Ok(None),
    }
}

/// A Linux cooked header of `len` bytes with the EtherType at `protocol_at`.
fn cooked<'a>(
    data: &'a [u8],
    len: usize,
    protocol_at: usize,
    name: &str,
) -> Result<(Option<u16>, &'a [u8]), String> {
    if data.len() < len {
        return Err(format!("{name} header cut short ({} bytes)", data.len()));
    }
    Ok((Some(be16(data, protocol_at)), &data[len..]))
}

fn ipv4(ip: &[u8]) -> Result<Option<TcpSegment<'_>>, String> {
    if ip.len() < 20 {
        return Err(format!("IPv4 header cut short ({} bytes)", ip.len()));
    }
    let header_len = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(be16(ip, 2));
    if header_len < 20 || total < header_len || ip.len() < header_len {
        return Err(format!(
            "IPv4 header length {header_len}, total length {total}, {} bytes captured",
            ip.len()
        ));
    }
    let fragment = be16(ip, 6);
    if ip[9] != 6 || fragment & 0x3fff != 0 {
        return Ok(None);
    }
    let src = IpAddr::V4(Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]));
    let dst = IpAddr::V4(Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]));
    // Bytes after `total` are link padding; bytes missing before it were not captured.
    let (end, missing) = if ip.len() >= total {
        (total, 0)
    } else {
        (ip.len(), total - ip.len())
    };
    tcp(src, dst, &ip[header_len..end], missing)
}

fn ipv6(ip: &[u8]) -> Result<Option<TcpSegment<'_>>, String> {
    if ip.len() < 40 {
        return Err(format!("IPv6 header cut short ({} bytes)", ip.len()));
    }
    let payload_len = usize::from(be16(ip, 4));
    let mut next = ip[6];
    let addr = |at: usize| {
        let raw: [u8; 16] = ip[at..at + 16].try_into().expect("16 bytes");
        IpAddr::V6(Ipv6Addr::from(raw))
    };
    let (src, dst) = (addr(8), addr(24));
    let (end, missing) = if payload_len == 0 {
        (ip.len(), 0) // a jumbogram: the rest of the packet
    } else if ip.len() >= 40 + payload_len {
        (40 + payload_len, 0)
    } else {
        (ip.len(), 40 + payload_len - ip.len())
    };
    let mut at = 40;
    loop {
        match next {
            6 => return tcp(src, dst, &ip[at..end], missing),
            // Hop-by-hop, routing, destination options: skip them.
            0 | 43 | 60 => {
                if end < at + 8 {
                    return Err("IPv6 extension header cut short".into());
                }
                next = ip[at];
                at += (usize::from(ip[at + 1]) + 1) * 8;
                if at > end {
                    return Err("IPv6 extension header longer than the packet".into());
                }
            }
            _ => return Ok(None), // a fragment, or not TCP
        }
    }
}

fn tcp(
    src: IpAddr,
    dst: IpAddr,
    seg: &[u8],
    missing: usize,
) -> Result<Option<TcpSegment<'_>>, String> {
    if seg.len() < 20 {
        return Err(format!("TCP header cut short ({} bytes)", seg.len()));
    }
    let header_len = usize::from(seg[12] >> 4) * 4;
    if header_len < 20 || header_len > seg.len() {
        return Err(format!(
            "TCP header length {header_len} with {} bytes of segment",
            seg.len()
        ));
    }
    Ok(Some(TcpSegment {
        src: SocketAddr::new(src, be16(seg, 0)),
        dst: SocketAddr::new(dst, be16(seg, 2)),
        seq: u32::from_be_bytes([seg[4], seg[5], seg[6], seg[7]]),
        flags: seg[13],
        payload: &seg[header_len..],
        missing,
    }))
}

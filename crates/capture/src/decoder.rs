//! Packets in, messages out: the TCP connections of a capture, each direction
//! reassembled and cut into frames, each frame parsed with the spec.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use bytes::Bytes;
use iso8583::framing::FramingConfig;
use iso8583::{Message, Spec};

use crate::file::Packet;
use crate::frames::{Cut, FrameCutter};
use crate::packet::{tcp_segment, TcpSegment, ACK, FIN, RST, SYN};
use crate::reassembly::{Reassembler, StreamSink, DEFAULT_MAX_PENDING};

/// An address, a port, or both, that a connection's end must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: Option<IpAddr>,
    pub port: Option<u16>,
}

impl Endpoint {
    pub fn matches(&self, addr: SocketAddr) -> bool {
        self.ip.is_none_or(|ip| ip == addr.ip()) && self.port.is_none_or(|p| p == addr.port())
    }
}

impl FromStr for Endpoint {
    type Err = String;

    /// `10.0.0.1:5000`, `[::1]:5000`, `10.0.0.1`, `::1`, `:5000`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!("{s:?} is not HOST:PORT, HOST or :PORT (e.g. 10.0.0.1:5000, [::1]:5000, :5000)")
        };
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(Endpoint {
                ip: Some(addr.ip()),
                port: Some(addr.port()),
            });
        }
        if let Ok(ip) = s
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            return Ok(Endpoint {
                ip: Some(ip),
                port: None,
            });
        }
        match s.strip_prefix(':').or_else(|| s.strip_prefix("*:")) {
            Some(port) => Ok(Endpoint {
                ip: None,
                port: Some(port.parse().map_err(|_| bad())?),
            }),
            None => Err(bad()),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.ip, self.port) {
            (Some(ip), Some(port)) => write!(f, "{}", SocketAddr::new(ip, port)),
            (Some(ip), None) => write!(f, "{ip}"),
            (None, Some(port)) => write!(f, ":{port}"),
            (None, None) => f.write_str("*"),
        }
    }
}

/// What to decode and how.
#[derive(Debug, Clone)]
pub struct DecoderOptions {
    /// The framing of every connection; detected per direction when `None`.
    pub framing: Option<FramingConfig>,
    /// Only connections with one end on one of these ports (all when empty).
    pub ports: Vec<u16>,
    /// Only connections with one end matching one of these (all when empty).
    pub filters: Vec<Endpoint>,
    /// Out-of-order bytes held per direction before a hole is given up.
    pub max_pending_per_direction: usize,
}

impl Default for DecoderOptions {
    fn default() -> Self {
        DecoderOptions {
            framing: None,
            ports: Vec::new(),
            filters: Vec::new(),
            max_pending_per_direction: DEFAULT_MAX_PENDING,
        }
    }
}

/// Something seen on one direction of a connection.
#[derive(Debug, Clone)]
pub struct Event {
    /// The packet that completed it (the last packet of the connection for
    /// what the end of the capture flushes).
    pub packet: u64,
    pub ts_ns: i64,
    /// Connections are numbered from 1 in the order they are first seen.
    pub conn: u64,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// Whether `src` opened the connection (sent its SYN); `None` when the
    /// capture did not see the SYN.
    pub from_client: Option<bool>,
    pub kind: EventKind,
}

#[derive(Debug, Clone)]
pub enum EventKind {
    /// A message; `offset` is where its frame starts in the direction's stream.
    Message {
        offset: u64,
        /// The framing the frame was cut with (given, or detected).
        framing: FramingConfig,
        header: Bytes,
        message: Message,
    },
    KeepAlive {
        offset: u64,
    },
    /// A frame whose message does not parse (`error_offset`: the byte of the
    /// message where parsing failed), or a length prefix that is not one.
    Unparsable {
        offset: u64,
        reason: String,
        error_offset: Option<usize>,
    },
    /// Bytes lost in the capture or passed over while resynchronising.
    Skipped {
        offset: u64,
        len: u64,
    },
}

#[derive(Debug)]
struct Direction {
    reassembler: Reassembler,
    cutter: FrameCutter,
    /// Cut before a gap, not yet made events.
    cuts: Vec<Cut>,
    syn_seq: Option<u32>,
    closed: bool,
}

#[derive(Debug)]
struct Connection {
    id: u64,
    /// `ends.0` sends direction 0.
    ends: (SocketAddr, SocketAddr),
    dirs: [Direction; 2],
    /// The direction whose end sent the SYN, when it was captured.
    client: Option<usize>,
    last_packet: u64,
    last_ts_ns: i64,
}

/// How many closed connections are remembered (see `Closed`).
const MAX_CLOSED: usize = 4096;

/// A connection closed by FIN or RST, remembered so that copies of its
/// segments read after it closed are known as copies, not taken for a new
/// connection: dumpcap writing two interfaces into one pcapng file may write
/// all of one interface's packets before the other's.
#[derive(Debug)]
struct Closed {
    id: u64,
    /// `ends.0` sent direction 0.
    ends: (SocketAddr, SocketAddr),
    /// Per direction, the sequence numbers it used: from its SYN (or first
    /// byte) to its FIN and the ACK after it, both included; `None` when it
    /// sent nothing.
    seqs: [Option<(u32, u32)>; 2],
}

impl Closed {
    fn of(conn: &Connection) -> Closed {
        let seqs = |dir: &Direction| {
            let (first, next) = dir.reassembler.seq_range()?;
            Some((dir.syn_seq.unwrap_or(first), next.wrapping_add(1)))
        };
        Closed {
            id: conn.id,
            ends: conn.ends,
            seqs: [seqs(&conn.dirs[0]), seqs(&conn.dirs[1])],
        }
    }

    /// Whether the segment is one the connection sent (a copy or a late
    /// retransmission), by its sequence number.
    fn sent(&self, seg: &TcpSegment<'_>) -> bool {
        let Some((first, last)) = self.seqs[usize::from(seg.src != self.ends.0)] else {
            return false;
        };
        seg.seq.wrapping_sub(first) <= last.wrapping_sub(first)
    }
}

/// The connections of a capture being decoded.
#[derive(Debug)]
pub struct CaptureDecoder<'s> {
    spec: &'s Spec,
    options: DecoderOptions,
    connections: HashMap<(SocketAddr, SocketAddr), Connection>,
    /// The last [`MAX_CLOSED`] connections closed, oldest first in `closed_order`.
    closed: HashMap<(SocketAddr, SocketAddr), Closed>,
    closed_order: VecDeque<((SocketAddr, SocketAddr), u64)>,
    next_id: u64,
}

impl<'s> CaptureDecoder<'s> {
    pub fn new(spec: &'s Spec, options: DecoderOptions) -> Self {
        CaptureDecoder {
            spec,
            options,
            connections: HashMap::new(),
            closed: HashMap::new(),
            closed_order: VecDeque::new(),
            next_id: 1,
        }
    }

    /// Connections open (seen, not yet closed by FIN or RST).
    pub fn open_connections(&self) -> usize {
        self.connections.len()
    }

    /// Bytes held for all open connections: out-of-order data waiting for a
    /// hole to be filled, and frames waiting for their end.
    pub fn buffered_bytes(&self) -> usize {
        self.connections
            .values()
            .flat_map(|c| c.dirs.iter())
            .map(|d| d.reassembler.pending_bytes() + d.cutter.buffered())
            .sum()
    }

    fn wanted(&self, seg: &TcpSegment<'_>) -> bool {
        let ports = &self.options.ports;
        let filters = &self.options.filters;
        (ports.is_empty() || ports.contains(&seg.src.port()) || ports.contains(&seg.dst.port()))
            && (filters.is_empty()
                || filters
                    .iter()
                    .any(|f| f.matches(seg.src) || f.matches(seg.dst)))
    }

    /// One packet. Packets that are not TCP, or not of a wanted connection,
    /// are passed over; a packet whose headers are broken is an error.
    pub fn packet(&mut self, packet: &Packet<'_>, out: &mut Vec<Event>) -> Result<(), String> {
        let Some(seg) = tcp_segment(packet.link_type, packet.data)? else {
            return Ok(());
        };
        if !self.wanted(&seg) {
            return Ok(());
        }
        let key = if seg.src <= seg.dst {
            (seg.src, seg.dst)
        } else {
            (seg.dst, seg.src)
        };
        if !self.connections.contains_key(&key) {
            if let Some(closed) = self.closed.get(&key) {
                if closed.sent(&seg) {
                    return Ok(());
                }
                // Not of the closed connection: a new one on the same ends.
                self.closed.remove(&key);
            }
        }
        let syn_only = seg.flags & (SYN | ACK) == SYN;
        if syn_only {
            // A new SYN on a known pair of ends is a new connection (port reuse).
            let reused = self.connections.get(&key).is_some_and(|c| {
                let dir = &c.dirs[usize::from(seg.src != c.ends.0)];
                match dir.syn_seq {
                    Some(isn) => isn != seg.seq,
                    None => dir.reassembler.started(),
                }
            });
            if reused {
                if let Some(conn) = self.connections.remove(&key) {
                    self.flush(conn, out);
                }
            }
        }
        // Only a SYN or data opens a connection: the last ACK of a closed
        // one, or a stray RST, leaves no state behind.
        if !self.connections.contains_key(&key)
            && !seg.has(SYN)
            && seg.payload.is_empty()
            && seg.missing == 0
        {
            return Ok(());
        }
        let spec = self.spec;
        let conn = self.connections.entry(key).or_insert_with(|| {
            let id = self.next_id;
            self.next_id += 1;
            let dir = || Direction {
                reassembler: Reassembler::new(self.options.max_pending_per_direction),
                cutter: FrameCutter::new(self.options.framing.clone()),
                cuts: Vec::new(),
                syn_seq: None,
                closed: false,
            };
            Connection {
                id,
                ends: (seg.src, seg.dst),
                dirs: [dir(), dir()],
                client: None,
                last_packet: 0,
                last_ts_ns: 0,
            }
        });
        // `ends` is set by whoever sent first; direction indexes follow it.
        let index = usize::from(seg.src != conn.ends.0);
        conn.last_packet = packet.number;
        conn.last_ts_ns = packet.ts_ns;
        if syn_only && conn.client.is_none() {
            conn.client = Some(index);
        }
        let (src, dst) = (seg.src, seg.dst);
        let client = conn.client;
        let stamp = |conn: u64, src, dst, sender: usize| Stamp {
            packet: packet.number,
            ts_ns: packet.ts_ns,
            conn,
            src,
            dst,
            from_client: client.map(|c| c == sender),
        };
        let id = conn.id;
        let dir = &mut conn.dirs[index];
        if seg.has(SYN) && dir.syn_seq.is_none() {
            dir.syn_seq = Some(seg.seq);
        }
        dir.segment(spec, &seg);
        let eof = seg.has(FIN) || seg.has(RST);
        if eof {
            dir.close(spec);
        }
        dir.events(spec, eof, stamp(id, src, dst, index), out);
        if seg.has(RST) {
            let other = &mut conn.dirs[1 - index];
            other.close(spec);
            other.events(spec, true, stamp(id, dst, src, 1 - index), out);
        }
        if seg.has(RST) || conn.dirs.iter().all(|d| d.closed) {
            if let Some(conn) = self.connections.remove(&key) {
                self.remember_closed(key, &conn);
            }
        }
        Ok(())
    }

    fn remember_closed(&mut self, key: (SocketAddr, SocketAddr), conn: &Connection) {
        self.closed.insert(key, Closed::of(conn));
        self.closed_order.push_back((key, conn.id));
        while self.closed_order.len() > MAX_CLOSED {
            let Some((key, id)) = self.closed_order.pop_front() else {
                break;
            };
            // Unless it was forgotten already, or the ends closed again since.
            if self.closed.get(&key).is_some_and(|c| c.id == id) {
                self.closed.remove(&key);
            }
        }
    }

    /// The end of the capture: what every open connection holds is flushed,
    /// connections in the order they were first seen.
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        let mut open: Vec<Connection> = self.connections.drain().map(|(_, c)| c).collect();
        open.sort_by_key(|c| c.id);
        for conn in open {
            self.flush(conn, out);
        }
    }

    fn flush(&self, mut conn: Connection, out: &mut Vec<Event>) {
        for (index, dir) in conn.dirs.iter_mut().enumerate() {
            let (src, dst) = if index == 0 {
                conn.ends
            } else {
                (conn.ends.1, conn.ends.0)
            };
            dir.close(self.spec);
            let stamp = Stamp {
                packet: conn.last_packet,
                ts_ns: conn.last_ts_ns,
                conn: conn.id,
                src,
                dst,
                from_client: conn.client.map(|c| c == index),
            };
            dir.events(self.spec, true, stamp, out);
        }
    }
}

/// What every event of one direction at one moment shares.
struct Stamp {
    packet: u64,
    ts_ns: i64,
    conn: u64,
    src: SocketAddr,
    dst: SocketAddr,
    from_client: Option<bool>,
}

impl Direction {
    fn feed<'a>(&'a mut self, spec: &'a Spec) -> (&'a mut Reassembler, Feed<'a>) {
        let feed = Feed {
            spec,
            cutter: &mut self.cutter,
            cuts: &mut self.cuts,
        };
        (&mut self.reassembler, feed)
    }

    fn segment(&mut self, spec: &Spec, seg: &TcpSegment<'_>) {
        let (reassembler, mut feed) = self.feed(spec);
        reassembler.segment(seg.seq, seg.has(SYN), seg.payload, seg.missing, &mut feed);
    }

    fn close(&mut self, spec: &Spec) {
        let (reassembler, mut feed) = self.feed(spec);
        reassembler.close(&mut feed);
        self.closed = true;
    }

    /// Everything cut so far, as events; with `eof`, nothing more will come.
    fn events(&mut self, spec: &Spec, eof: bool, stamp: Stamp, out: &mut Vec<Event>) {
        let mut cuts = std::mem::take(&mut self.cuts);
        while let Some(cut) = self.cutter.next(spec, eof) {
            cuts.push(cut);
        }
        for cut in cuts.drain(..) {
            // Bytes skipped back to back (before a gap, the gap) are one run.
            if let (Cut::Skipped { offset, len }, Some(last)) = (&cut, out.last_mut()) {
                if let EventKind::Skipped {
                    offset: last_offset,
                    len: last_len,
                } = &mut last.kind
                {
                    if last.conn == stamp.conn
                        && last.src == stamp.src
                        && *last_offset + *last_len == *offset
                    {
                        *last_len += len;
                        continue;
                    }
                }
            }
            out.push(Event {
                packet: stamp.packet,
                ts_ns: stamp.ts_ns,
                conn: stamp.conn,
                src: stamp.src,
                dst: stamp.dst,
                from_client: stamp.from_client,
                kind: event_kind(spec, self.cutter.framing(), cut),
            });
        }
        // Keep the allocation for the next segment.
        self.cuts = cuts;
    }
}

/// Feeds a direction's cutter. Before a gap drops what the cutter holds,
/// the frames it holds are cut, as at the end of a stream.
struct Feed<'a> {
    spec: &'a Spec,
    cutter: &'a mut FrameCutter,
    cuts: &'a mut Vec<Cut>,
}

impl StreamSink for Feed<'_> {
    fn data(&mut self, bytes: &[u8]) {
        self.cutter.push(bytes);
    }

    fn gap(&mut self, len: u64) {
        while let Some(cut) = self.cutter.next(self.spec, true) {
            self.cuts.push(cut);
        }
        self.cutter.gap(len);
    }
}

/// A cut as an event: a frame's body parsed with the spec.
fn event_kind(spec: &Spec, framing: Option<&FramingConfig>, cut: Cut) -> EventKind {
    match cut {
        Cut::Frame {
            offset,
            header,
            body,
        } => match iso8583::parse(spec, body) {
            Ok(message) => EventKind::Message {
                offset,
                // A frame is only cut once the framing is known.
                framing: framing.cloned().unwrap_or_default(),
                header,
                message,
            },
            Err(e) => EventKind::Unparsable {
                offset,
                reason: e.to_string(),
                error_offset: Some(e.offset),
            },
        },
        Cut::KeepAlive { offset } => EventKind::KeepAlive { offset },
        Cut::Skipped { offset, len } => EventKind::Skipped { offset, len },
        Cut::BadPrefix { offset, reason } => EventKind::Unparsable {
            offset,
            reason,
            error_offset: None,
        },
    }
}

//! Recording a process's own links as a pcapng file while it runs.
//!
//! A [`Recorder`] owns the file through one writer thread fed by a bounded
//! channel: the connection that records a frame only builds a small packet and
//! tries to queue it, and never waits for the disk. When the queue is full the
//! packet is dropped and counted ([`Recorder::dropped`]); its bytes still take
//! their place in the TCP sequence numbers, so a reader sees a gap where it
//! was rather than a silently shorter stream.
//!
//! Each connection is a [`Tap`]: synthesised Ethernet/IPv4 (or IPv6)/TCP
//! headers carry the connection's real addresses and ports, a SYN and SYN-ACK
//! open it, every frame read or sent is one or more segments with consistent
//! per-direction sequence numbers, and a FIN closes it when the tap is dropped.
//! The writer does not wait on the queue packet by packet: it takes
//! everything queued, then sleeps [`WRITER_PAUSE`], so a busy switch queues
//! packets without waking it each time (a wake-up per packet cost a busy
//! switch a tenth of its throughput on two cores). The file is flushed at
//! most [`FLUSH_EVERY`] after a packet is queued, and when the recorder is
//! [finished](Recorder::finish). Files are created readable by their owner
//! only (0600). A recorder [masking card data](Recorder::masking_card_data)
//! writes every frame with its card numbers masked (see [`crate::mask`]);
//! without it a capture holds the card numbers the wire carries.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::TryRecvError;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use iso8583::framing::FramingConfig;

use crate::file::TsResolution;
use crate::mask::CardMask;
use crate::write::flags::{ACK, FIN, PSH, SYN};
use crate::write::{ethernet, ip_tcp_acking, PcapngWriter, LINKTYPE_ETHERNET};

/// Packets queued for the writer thread before further ones are dropped.
pub const DEFAULT_QUEUE: usize = 16 * 1024;
/// The largest TCP payload put in one synthesised segment.
const MAX_SEGMENT: usize = 32 * 1024;

/// One packet on its way to the file.
struct Record {
    ts_ns: i64,
    frame: Vec<u8>,
}

#[derive(Debug, Default)]
struct Counters {
    queued: AtomicU64,
    dropped: AtomicU64,
}

/// What a finished recorder wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordStats {
    /// Packets written to the file.
    pub written: u64,
    /// Packets dropped because the writer could not keep up.
    pub dropped: u64,
}

/// A pcapng file being written by its own thread; cheap to clone (every clone
/// feeds the same file).
#[derive(Debug, Clone)]
pub struct Recorder {
    tx: SyncSender<Record>,
    /// Card numbers masked in every frame recorded, when set.
    mask: Option<Arc<CardMask>>,
    counters: Arc<Counters>,
    writer: Arc<std::sync::Mutex<Option<JoinHandle<io::Result<()>>>>>,
}

impl Recorder {
    /// Creates (or truncates) `path` and starts its writer thread.
    pub fn create(path: &Path) -> io::Result<Recorder> {
        Recorder::with_queue(create_private(path)?, DEFAULT_QUEUE)
    }

    /// A recorder writing to `out`, with room for `queue` packets in flight.
    pub fn with_queue<W: Write + Send + 'static>(out: W, queue: usize) -> io::Result<Recorder> {
        let mut out = Some(out);
        Recorder::start(
            move || {
                out.take()
                    .ok_or_else(|| io::Error::other("a single output cannot be rotated"))
            },
            None,
            queue,
        )
    }

    /// Creates (or truncates) `path` and starts its writer thread; once the
    /// file holds `rotation.max_bytes` or more it is closed and renamed
    /// `path.1` (`path.1` becoming `path.2`, and so on), the oldest beyond
    /// `rotation.max_files` files in all are removed, and a new `path` begun,
    /// each file a whole pcapng file of its own.
    pub fn create_rotating(path: &Path, rotation: Rotation) -> io::Result<Recorder> {
        let path = path.to_path_buf();
        let mut first = true;
        let keep = rotation.max_files.max(1);
        Recorder::start(
            move || {
                if !std::mem::take(&mut first) {
                    rotate(&path, keep)?;
                }
                create_private(&path)
            },
            Some(rotation.max_bytes.max(1)),
            DEFAULT_QUEUE,
        )
    }

    fn start<W, F>(mut open: F, rotate_at: Option<u64>, queue: usize) -> io::Result<Recorder>
    where
        W: Write + Send + 'static,
        F: FnMut() -> io::Result<W> + Send + 'static,
    {
        let pcapng = begin(open()?)?;
        let (tx, rx) = sync_channel(queue.max(1));
        let writer = std::thread::Builder::new()
            .name("capture-writer".into())
            .spawn(move || write_records(pcapng, open, rotate_at, rx))?;
        Ok(Recorder {
            tx,
            mask: None,
            counters: Arc::default(),
            writer: Arc::new(std::sync::Mutex::new(Some(writer))),
        })
    }

    /// The same recorder, masking the card numbers of every frame its taps
    /// record from now on ([`CardMask`]).
    pub fn masking_card_data(mut self, mask: CardMask) -> Recorder {
        self.mask = Some(Arc::new(mask));
        self
    }

    /// A tap on a connection from `client` to `server` whose frames are
    /// delimited by `framing`, opened now with a SYN from the client and the
    /// server's SYN-ACK.
    pub fn tap(&self, client: SocketAddr, server: SocketAddr, framing: &FramingConfig) -> Tap {
        let inner = TapInner {
            recorder: self.clone(),
            mask: self.mask.clone().map(|mask| (mask, framing.clone())),
            client,
            server,
            // Any initial sequence numbers do; distinct ones read better.
            client_seq: AtomicU32::new(1_000),
            server_seq: AtomicU32::new(2_000_000),
        };
        inner.segment(true, SYN, b"");
        inner.segment(false, SYN | ACK, b"");
        Tap {
            inner: Arc::new(inner),
        }
    }

    /// Packets dropped so far because the writer thread could not keep up.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    fn push(&self, frame: Vec<u8>) {
        let record = Record {
            ts_ns: now_ns(),
            frame,
        };
        match self.tx.try_send(record) {
            Ok(()) => {
                self.counters.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Stops accepting packets once every clone (and every tap) is gone, waits
    /// for the writer thread to write what is queued and flush the file, and
    /// says how many packets were written and dropped. Packets recorded through
    /// clones still alive after this call are dropped.
    pub fn finish(self) -> io::Result<RecordStats> {
        let Recorder {
            tx,
            mask: _,
            counters,
            writer,
        } = self;
        drop(tx);
        let handle = writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        let result = match handle {
            // The thread ends when the last sender is dropped; a tap still
            // alive elsewhere keeps it waiting, so give it a moment only.
            Some(handle) => join_within(handle, std::time::Duration::from_secs(5)),
            None => Ok(()),
        };
        let dropped = counters.dropped.load(Ordering::Relaxed);
        let written = counters.queued.load(Ordering::Relaxed);
        result.map(|()| RecordStats { written, dropped })
    }
}

fn join_within(handle: JoinHandle<io::Result<()>>, limit: std::time::Duration) -> io::Result<()> {
    let deadline = std::time::Instant::now() + limit;
    while !handle.is_finished() {
        if std::time::Instant::now() >= deadline {
            return Err(io::Error::other(
                "capture writer still has senders: not every tap was dropped",
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    handle
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("capture writer panicked")))
}

/// When a rotating recorder starts a new file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// A file holding this many bytes or more is rotated.
    pub max_bytes: u64,
    /// Files kept, the one being written included (at least 1).
    pub max_files: u32,
}

/// `path` → `path.1` → `path.2` …, dropping what would go beyond `keep` files.
fn rotate(path: &Path, keep: u32) -> io::Result<()> {
    let numbered = |n: u32| {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        std::path::PathBuf::from(name)
    };
    if keep <= 1 {
        return Ok(()); // the next create truncates the only file
    }
    match std::fs::remove_file(numbered(keep - 1)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    for n in (1..keep - 1).rev() {
        match std::fs::rename(numbered(n), numbered(n + 1)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    std::fs::rename(path, numbered(1))
}

/// Counts the bytes written through it.
struct Counting<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

type Output<W> = PcapngWriter<BufWriter<Counting<W>>>;

/// A new file: its section header and its one interface.
fn begin<W: Write>(out: W) -> io::Result<Output<W>> {
    let counting = Counting {
        inner: out,
        bytes: 0,
    };
    let mut pcapng = PcapngWriter::new(BufWriter::with_capacity(64 * 1024, counting), false)?;
    pcapng.interface(LINKTYPE_ETHERNET as u16, TsResolution::Decimal(9))?;
    Ok(pcapng)
}

/// How long the writer sleeps once the queue is empty.
pub const WRITER_PAUSE: Duration = Duration::from_millis(10);
/// How long written packets may wait in the buffer before it is flushed.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// A capture file, created 0600 (truncated if it exists).
fn create_private(path: &Path) -> io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

fn write_records<W: Write, F: FnMut() -> io::Result<W>>(
    mut pcapng: Output<W>,
    mut open: F,
    rotate_at: Option<u64>,
    rx: Receiver<Record>,
) -> io::Result<()> {
    let mut result = Ok(());
    let mut unflushed_since: Option<Instant> = None;
    loop {
        // Everything queued now, then a pause: senders never wake the writer.
        let ended = loop {
            match rx.try_recv() {
                Ok(record) => {
                    if result.is_ok() {
                        result = pcapng.packet(0, record.ts_ns, &record.frame);
                    }
                    unflushed_since.get_or_insert_with(Instant::now);
                    if let (Ok(()), Some(limit)) = (&result, rotate_at) {
                        let buffered = pcapng.get_ref().buffer().len() as u64;
                        if pcapng.get_ref().get_ref().bytes + buffered >= limit {
                            result = pcapng.flush().and_then(|()| {
                                drop(std::mem::replace(&mut pcapng, begin(open()?)?));
                                Ok(())
                            });
                        }
                    }
                }
                Err(TryRecvError::Empty) => break false,
                Err(TryRecvError::Disconnected) => break true,
            }
        };
        if ended {
            break;
        }
        // What is written is on disk within FLUSH_EVERY, if we die then.
        if unflushed_since.is_some_and(|t| t.elapsed() >= FLUSH_EVERY) {
            if result.is_ok() {
                result = pcapng.flush();
            }
            unflushed_since = None;
        }
        std::thread::sleep(WRITER_PAUSE);
    }
    if result.is_ok() {
        result = pcapng.flush();
    }
    result
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// One connection being recorded. Reads and writes may be recorded from
/// different tasks (each direction from one at a time, as a socket's halves
/// are); clones record on the same connection. When the last clone is
/// dropped, the connection's FIN is recorded.
#[derive(Debug, Clone)]
pub struct Tap {
    inner: Arc<TapInner>,
}

#[derive(Debug)]
struct TapInner {
    recorder: Recorder,
    mask: Option<(Arc<CardMask>, FramingConfig)>,
    client: SocketAddr,
    server: SocketAddr,
    client_seq: AtomicU32,
    server_seq: AtomicU32,
}

impl Tap {
    /// Bytes the client sent to the server: one whole frame (card numbers
    /// are masked frame by frame).
    pub fn from_client(&self, bytes: &[u8]) {
        self.inner.data(true, bytes);
    }

    /// Bytes the server sent to the client.
    pub fn from_server(&self, bytes: &[u8]) {
        self.inner.data(false, bytes);
    }
}

impl TapInner {
    fn data(&self, from_client: bool, bytes: &[u8]) {
        let bytes = match &self.mask {
            Some((mask, framing)) => mask.frame(framing, bytes),
            None => std::borrow::Cow::Borrowed(bytes),
        };
        for chunk in bytes.chunks(MAX_SEGMENT) {
            self.segment(from_client, ACK | PSH, chunk);
        }
    }

    fn segment(&self, from_client: bool, flags: u8, payload: &[u8]) {
        let (src, dst, seq, other) = if from_client {
            (self.client, self.server, &self.client_seq, &self.server_seq)
        } else {
            (self.server, self.client, &self.server_seq, &self.client_seq)
        };
        // SYN and FIN take one sequence number each.
        let len = payload.len() as u32 + u32::from(flags & (SYN | FIN) != 0);
        let at = seq.fetch_add(len, Ordering::Relaxed);
        // Everything the other side has sent so far is acknowledged (the
        // client's SYN is, by the server's SYN-ACK).
        let ack = if flags & ACK != 0 {
            other.load(Ordering::Relaxed)
        } else {
            0
        };
        self.recorder.push(ethernet(
            &ip_tcp_acking(src, dst, at, ack, flags, payload),
            None,
        ));
    }
}

impl Drop for TapInner {
    fn drop(&mut self) {
        // Whoever records a connection is the end that sees it close.
        self.segment(false, FIN | ACK, b"");
    }
}

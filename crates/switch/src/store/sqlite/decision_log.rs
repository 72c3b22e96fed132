//! The decision log: a file of the store's own (`<file>-decisions`) that
//! makes a batch of receive decisions durable with one write and one
//! `fdatasync`, where a SQLite commit writes and syncs five to nine pages
//! of WAL. SQLite stays the queryable copy: the rows a logged batch would
//! have written (its `saga_log` row and its journal packs) are held in
//! memory and inserted into the database together, in a commit of their
//! own or of the next batch that commits in SQLite: every
//! [`APPLY_RECORDS`] records or [`APPLY_BYTES`] bytes, when the writer has
//! been idle for `SqliteOptions::decision_log_idle` (100 ms), with any
//! batch that has a command not log-safe (inserted first, before its
//! commands, when that is known beforehand; after log-safe commands,
//! which read neither table, when a batch turns out to need SQLite), with
//! the store's reads of the journal and of sagas, and at close.
//!
//! Which batches are logged: those whose commands only change the writer's
//! book of sagas in memory (reservations, ends, lookups of answers), that
//! wrote no row, carry no risk events and have no pruning of the sagas' log
//! due. Every other batch runs in SQLite as before, inserting whatever the
//! log holds that the database does not and setting `decision_log.next_seq`
//! in the same fsynced commit: from then on the file's records are
//! superseded and the next is written at its beginning again.
//!
//! A record: `SBD1`, its sequence number (u64), the payload's length (u32),
//! a CRC-32 of the database's `store_id`, those and the payload (u32), then
//! the payload: the batch's `saga_log` row (its id and body) if any, and
//! its journal packs (times, entries, body, raw messages sealed as their
//! column holds them). Card data in it is what the database holds: a
//! receiver's PAN and the raw messages sealed by the vault, the packs'
//! texts masked. The file is emptied after it is read back at open, when
//! the writer has been idle, and at close, so superseded records do not
//! stay in its tail.
//!
//! At open, the records from the beginning whose sequence numbers follow
//! on from `next_seq` are read, checked and inserted (their `saga_log` rows
//! numbered anew by SQLite: the sagas' book is empty then, and the log is
//! folded next); the first that is torn, fails its CRC (another database's
//! included), or carries another number (an older record of an earlier
//! round) ends the log. Only a store opened with its lock
//! (`SqliteStore::open_locked_with`: `serve`, `recover`, `migrate`,
//! `clear`, `rekey`, `demo`) reads or writes the log, and it also holds the file's
//! own `flock`; an opening without the lock (a tool beside a running
//! switch) leaves the file alone and reads the database as of the lock
//! holder's last insertion.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use super::byte_reader::Reader;
use super::journal::PackRow;
use super::*;

/// Records held before they are inserted into the database.
pub(super) const APPLY_RECORDS: usize = 128;
/// Bytes of records (headers and payloads) held before they are inserted
/// into the database.
pub(super) const APPLY_BYTES: usize = 2 << 20;
/// The most a record's payload may be when read back: far above any batch
/// (a batch's journal is bounded by the journal's capacity, its sagas by
/// the batch size), so a damaged length cannot ask for unbounded memory.
const MAX_PAYLOAD: usize = 256 << 20;

const MAGIC: &[u8; 4] = b"SBD1";
const HEADER: usize = 4 + 8 + 4 + 4;

/// The log file beside the store file `db`.
pub fn log_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-decisions");
    PathBuf::from(name)
}

#[cfg(unix)]
fn write_at(file: &File, bytes: &[u8], at: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, bytes, at)
}

#[cfg(unix)]
fn read_at(file: &File, bytes: &mut [u8], at: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, bytes, at)
}

/// Elsewhere there is no log: [`DecisionLog::open`] gives none.
#[cfg(not(unix))]
fn write_at(_: &File, _: &[u8], _: u64) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

#[cfg(not(unix))]
fn read_at(_: &File, _: &mut [u8], _: u64) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// What one logged batch writes into the database when applied.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Logged {
    /// The batch's `saga_log` row: its id and body.
    pub(super) saga_log: Option<(i64, Vec<u8>)>,
    pub(super) packs: Vec<PackRow>,
}

/// How [`Logged::insert`] numbers a `saga_log` row.
#[derive(Clone, Copy)]
pub(super) enum LogIds {
    /// The id the writer gave it (its book refers to it).
    Given,
    /// A new one from SQLite: at open, where nothing refers to it yet.
    New,
}

impl Logged {
    pub(super) fn is_empty(&self) -> bool {
        self.saga_log.is_none() && self.packs.is_empty()
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match &self.saga_log {
            Some((id, body)) => {
                out.push(1);
                out.extend_from_slice(&id.to_le_bytes());
                put_bytes(out, body);
            }
            None => out.push(0),
        }
        out.extend_from_slice(&(self.packs.len() as u32).to_le_bytes());
        for pack in &self.packs {
            out.extend_from_slice(&pack.first_ms.to_le_bytes());
            out.extend_from_slice(&pack.last_ms.to_le_bytes());
            out.extend_from_slice(&pack.entries.to_le_bytes());
            put_bytes(out, &pack.body);
            put_bytes(out, &pack.raws);
        }
    }

    fn decode(payload: &[u8], seq: u64) -> StoreResult<Logged> {
        let mut r = Reader::new(payload, format!("decision log record {seq}"));
        let saga_log = match r.u8()? {
            0 => None,
            1 => {
                let id = r.i64()?;
                let len = r.u32()? as usize;
                Some((id, r.slice(len)?.to_vec()))
            }
            other => return Err(r.error(r.at - 1, format!("saga log flag {other}"))),
        };
        let count = r.count(8 + 8 + 4 + 4 + 4)?;
        let mut packs = Vec::with_capacity(count);
        for _ in 0..count {
            let first_ms = r.i64()?;
            let last_ms = r.i64()?;
            let entries = r.u32()?;
            let len = r.u32()? as usize;
            let body = r.slice(len)?.to_vec();
            let len = r.u32()? as usize;
            let raws = r.slice(len)?.to_vec();
            packs.push(PackRow {
                first_ms,
                last_ms,
                entries,
                body,
                raws,
            });
        }
        r.end()?;
        Ok(Logged { saga_log, packs })
    }

    /// Inserts its rows, inside the caller's transaction.
    pub(super) fn insert(&self, conn: &Connection, ids: LogIds) -> StoreResult<()> {
        if let Some((id, body)) = &self.saga_log {
            let inserted = match ids {
                LogIds::Given => conn
                    .prepare_cached("INSERT INTO saga_log (id, body) VALUES (?1, ?2)")
                    .and_then(|mut s| s.execute(params![id, body])),
                LogIds::New => conn
                    .prepare_cached("INSERT INTO saga_log (body) VALUES (?1)")
                    .and_then(|mut s| s.execute(params![body])),
            };
            inserted.map_err(db)?;
        }
        journal::insert_packs(conn, &self.packs)
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn checksum(store_id: i64, seq: u64, payload: &[u8]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&store_id.to_le_bytes());
    crc.update(&seq.to_le_bytes());
    crc.update(&(payload.len() as u32).to_le_bytes());
    crc.update(payload);
    crc.finalize()
}

/// A record as written: header and payload.
fn record(store_id: i64, seq: u64, logged: &Logged) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + 256);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    logged.encode(&mut out);
    let payload = &out[HEADER..];
    let len = payload.len() as u32;
    let crc = checksum(store_id, seq, payload);
    out[12..16].copy_from_slice(&len.to_le_bytes());
    out[16..20].copy_from_slice(&crc.to_le_bytes());
    out
}

fn io_error(path: &Path, doing: &str, e: std::io::Error) -> StoreError {
    StoreError::Unavailable(format!(
        "cannot {doing} the decision log {}: {e}",
        path.display()
    ))
}

/// The records of `file` from its beginning that follow on from `next_seq`:
/// reading stops at the end of the file, a torn or damaged record, a
/// record of another database, or a record with another sequence number.
/// Only a record whose CRC holds is decoded; one that then does not decode
/// is an error (written by a build that did not write what it meant).
fn read_records(
    file: &File,
    store_id: i64,
    next_seq: u64,
) -> std::io::Result<StoreResult<Vec<Logged>>> {
    let len = file.metadata()?.len();
    let mut at = 0u64;
    let mut seq = next_seq;
    let mut records = Vec::new();
    let mut header = [0u8; HEADER];
    while at + HEADER as u64 <= len {
        read_at(file, &mut header, at)?;
        let found_seq = u64::from_le_bytes(header[4..12].try_into().expect("8 bytes"));
        let payload_len = u32::from_le_bytes(header[12..16].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[16..20].try_into().expect("4 bytes"));
        if &header[..4] != MAGIC
            || found_seq != seq
            || payload_len > MAX_PAYLOAD
            || at + (HEADER + payload_len) as u64 > len
        {
            break;
        }
        let mut payload = vec![0u8; payload_len];
        read_at(file, &mut payload, at + HEADER as u64)?;
        if checksum(store_id, seq, &payload) != crc {
            // The record a crash tore is the last one; a whole one that
            // fails its checksum is damage, and what follows it is lost.
            if at + (HEADER + payload_len) as u64 != len {
                tracing::warn!(
                    record = seq,
                    offset = at,
                    "a decision log record fails its checksum; the log is read up to it"
                );
            }
            break;
        }
        match Logged::decode(&payload, seq) {
            Ok(logged) => records.push(logged),
            Err(e) => return Ok(Err(e)),
        }
        at += (HEADER + payload_len) as u64;
        seq += 1;
    }
    Ok(Ok(records))
}

/// The log as the writer holds it.
pub(super) struct DecisionLog {
    /// Open for reading and writing, `flock`ed for the store's lifetime.
    file: File,
    path: PathBuf,
    /// `decision_log.store_id`: covered by every record's CRC.
    store_id: i64,
    /// Where the next record goes.
    offset: u64,
    /// The next record's sequence number.
    next_seq: u64,
    /// `decision_log.next_seq` as the database holds it.
    stored_seq: u64,
    /// Records written to the file and not yet into the database.
    pending: Vec<Logged>,
    pending_bytes: usize,
    /// A write failed: nothing is appended until an apply has committed.
    needs_apply: bool,
}

impl DecisionLog {
    /// Opens the log of the store `store` (whose lock the caller holds),
    /// inserts what it holds beyond the database into it, and empties the
    /// file. `None` where there is no log (not on Unix).
    pub(super) fn open(store: &Path, conn: &Connection) -> StoreResult<Option<DecisionLog>> {
        if cfg!(not(unix)) {
            return Ok(None);
        }
        let path = log_path(store);
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options
            .open(&path)
            .map_err(|e| io_error(&path, "open", e))?;
        if !lock::try_lock(&file).map_err(|e| io_error(&path, "lock", e))? {
            // The store's lock is held by this process, and only the
            // holder of that lock opens the log: another process holding
            // it is a build from before, or a writer still stopping.
            return Err(StoreError::InUse(format!(
                "the decision log {} is held by another process",
                path.display()
            )));
        }
        // The file's name durable in its directory before a record in it
        // is trusted with a caller's answer.
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            // A bare file name: the working directory.
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error(&path, "sync the directory of", e))?;
        let (stored_seq, store_id): (i64, i64) = conn
            .query_row(
                "SELECT next_seq, store_id FROM decision_log WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(db)?;
        let stored_seq = u64::try_from(stored_seq)
            .map_err(|_| corrupt(format!("decision_log.next_seq {stored_seq}")))?;
        let records = read_records(&file, store_id, stored_seq)
            .map_err(|e| io_error(&path, "read", e))?
            .map_err(|e| match e {
                StoreError::Corrupt(why) => corrupt(format!("{}: {why}", path.display())),
                other => other,
            })?;
        let n = records.len();
        let mut log = DecisionLog {
            file,
            path,
            store_id,
            offset: 0,
            next_seq: stored_seq + n as u64,
            stored_seq,
            pending: records,
            pending_bytes: 0,
            needs_apply: false,
        };
        if n > 0 {
            log.apply_alone(conn, LogIds::New)?;
            tracing::info!(
                records = n,
                "decisions read back from the store's decision log"
            );
        }
        // Emptied only once what it held is synced into the database: not
        // under `synchronous=NORMAL` (the library's option; `serve` syncs).
        let synced: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .map_err(db)?;
        if synced >= 2 {
            log.empty_file()?;
        }
        Ok(Some(log))
    }

    /// Whether a batch may be logged rather than committed in SQLite.
    pub(super) fn accepts(&self) -> bool {
        !self.needs_apply && self.pending.len() < APPLY_RECORDS && self.pending_bytes < APPLY_BYTES
    }

    /// Whether records wait to be inserted into the database.
    pub(super) fn has_pending(&self) -> bool {
        !self.pending.is_empty() || self.stored_seq != self.next_seq
    }

    /// Writes `logged` as the next record and syncs it. On failure the
    /// record's sequence number is spent, what was written of it is cut off
    /// (as far as that can be done), and the log takes nothing until an
    /// apply has committed: `logged` is handed back, for the caller to
    /// write in SQLite.
    pub(super) fn append(&mut self, logged: Logged) -> Result<(), (Logged, String)> {
        let bytes = record(self.store_id, self.next_seq, &logged);
        self.next_seq += 1;
        let written =
            write_at(&self.file, &bytes, self.offset).and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.offset += bytes.len() as u64;
                self.pending_bytes += bytes.len();
                self.pending.push(logged);
                Ok(())
            }
            Err(e) => {
                self.needs_apply = true;
                // A record written whole but not synced would be read back
                // after a crash though its callers were told it failed.
                if let Err(cut) = self
                    .file
                    .set_len(self.offset)
                    .and_then(|()| self.file.sync_data())
                {
                    tracing::error!(
                        "the decision log {} could not be cut back after a failed write: {cut}",
                        self.path.display()
                    );
                }
                Err((logged, format!("cannot write the decision log: {e}")))
            }
        }
    }

    /// Inserts the pending records and sets `decision_log.next_seq`, inside
    /// the caller's transaction; [`DecisionLog::applied`] once it commits.
    pub(super) fn apply(&self, conn: &Connection) -> StoreResult<()> {
        self.apply_as(conn, LogIds::Given)
    }

    fn apply_as(&self, conn: &Connection, ids: LogIds) -> StoreResult<()> {
        for logged in &self.pending {
            logged.insert(conn, ids)?;
        }
        if self.stored_seq != self.next_seq {
            conn.prepare_cached("UPDATE decision_log SET next_seq = ?1 WHERE id = 1")
                .and_then(|mut s| s.execute(params![self.next_seq as i64]))
                .map_err(db)?;
        }
        Ok(())
    }

    /// Inserts the pending records in a transaction of their own (none
    /// open), and counts them applied once it commits.
    pub(super) fn apply_alone(&mut self, conn: &Connection, ids: LogIds) -> StoreResult<()> {
        if !self.has_pending() {
            return Ok(());
        }
        exec(conn, "BEGIN IMMEDIATE")?;
        match self.apply_as(conn, ids).and_then(|()| exec(conn, "COMMIT")) {
            Ok(()) => {
                self.applied();
                Ok(())
            }
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// The transaction of [`DecisionLog::apply`] committed: the file's
    /// records are superseded, and the next goes at its beginning.
    pub(super) fn applied(&mut self) {
        self.pending.clear();
        self.pending_bytes = 0;
        self.offset = 0;
        self.stored_seq = self.next_seq;
        self.needs_apply = false;
    }

    /// Empties the file once every record in it is superseded (nothing
    /// pending): so that its tail does not keep old records.
    pub(super) fn empty_file(&mut self) -> StoreResult<()> {
        if self.has_pending() {
            return Ok(());
        }
        self.file
            .set_len(0)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| io_error(&self.path, "empty", e))
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    use std::os::unix::fs::FileExt;

    const STORE: i64 = 0x5eed;

    fn read_records_ok(file: &File, next_seq: u64) -> Vec<Logged> {
        read_records(file, STORE, next_seq).unwrap().unwrap()
    }

    fn pack(n: u8) -> PackRow {
        PackRow {
            first_ms: 1_000 + n as i64,
            last_ms: 2_000 + n as i64,
            entries: n as u32,
            body: vec![n; 40],
            raws: vec![n ^ 0xff; 9],
        }
    }

    fn logged(n: u8) -> Logged {
        Logged {
            saga_log: n.is_multiple_of(2).then(|| (n as i64, vec![n; 17])),
            packs: (0..n % 3).map(|i| pack(n + i)).collect(),
        }
    }

    fn temp_log(dir: &tempfile::TempDir) -> File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.path().join("log"))
            .unwrap()
    }

    fn write(file: &File, at: u64, seq: u64, l: &Logged) -> u64 {
        let bytes = record(STORE, seq, l);
        file.write_all_at(&bytes, at).unwrap();
        at + bytes.len() as u64
    }

    #[test]
    fn records_read_back_in_order_until_the_sequence_breaks() {
        let dir = tempfile::tempdir().unwrap();
        let file = temp_log(&dir);
        let mut at = 0;
        for (i, n) in [3u8, 4, 5].iter().enumerate() {
            at = write(&file, at, 10 + i as u64, &logged(*n));
        }
        // An older record of an earlier round after them ends the log.
        write(&file, at, 2, &logged(9));
        assert_eq!(
            read_records_ok(&file, 10),
            vec![logged(3), logged(4), logged(5)]
        );
        // Another starting number finds nothing, nor another database.
        assert!(read_records_ok(&file, 11).is_empty());
        assert!(read_records(&file, STORE + 1, 10)
            .unwrap()
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_torn_or_damaged_record_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let file = temp_log(&dir);
        let end_first = write(&file, 0, 1, &logged(4));
        let end_second = write(&file, end_first, 2, &logged(6));
        // Torn: the file ends inside the second record.
        file.set_len(end_second - 3).unwrap();
        assert_eq!(read_records_ok(&file, 1), vec![logged(4)]);
        // Damaged: a byte of its payload flipped (the CRC fails).
        write(&file, end_first, 2, &logged(6));
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, end_first + HEADER as u64 + 2)
            .unwrap();
        file.write_all_at(&[byte[0] ^ 1], end_first + HEADER as u64 + 2)
            .unwrap();
        assert_eq!(read_records_ok(&file, 1), vec![logged(4)]);
        // A length past any payload is not believed, nor allocated.
        let mut huge = record(STORE, 2, &logged(6));
        huge[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        file.write_all_at(&huge, end_first).unwrap();
        assert_eq!(read_records_ok(&file, 1), vec![logged(4)]);
    }

    #[test]
    fn a_record_whose_crc_holds_but_does_not_decode_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = temp_log(&dir);
        let payload = [7u8, 1, 2];
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&5u64.to_le_bytes());
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&checksum(STORE, 5, &payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        file.write_all_at(&bytes, 0).unwrap();
        let e = read_records(&file, STORE, 5)
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(e.contains("decision log record 5"), "{e}");
    }
}

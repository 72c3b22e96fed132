//! The decision log: a file of the store's own (`<file>-decisions`) that
//! makes a batch of receive decisions durable with one write and one
//! `fdatasync`, where a SQLite commit writes and syncs five to nine pages
//! of WAL. SQLite stays the queryable copy: the rows a logged batch would
//! have written (its `saga_log` row and its journal packs) are held in
//! memory and inserted into the database together, in a commit of their
//! own, every [`APPLY_RECORDS`] records or [`APPLY_BYTES`] bytes, when the
//! writer has been idle for `SqliteOptions::decision_log_idle` (100 ms),
//! before any batch that writes other
//! rows, before the store's readers look at the journal, and at close.
//!
//! Which batches are logged: those whose commands only change the writer's
//! book of sagas in memory (reservations, ends, lookups of answers) and
//! carry no risk events, when the sagas' log is not due for pruning. Every
//! other batch runs in SQLite as before, first inserting whatever the log
//! holds that the database does not, then setting `decision_log.next_seq`,
//! in the same fsynced commit: from then on the file's records are
//! superseded and the next is written at its beginning again.
//!
//! A record: `SBD1`, its sequence number (u64), the payload's length (u32),
//! a CRC-32 of those and the payload (u32), then the payload: the batch's
//! `saga_log` row (its id and body) if any, and its journal packs (times,
//! entries, body, raw messages sealed as their column holds them). Card
//! data in it is what the database holds: a receiver's PAN and the raw
//! messages sealed by the vault, the packs' texts masked.
//!
//! At open, the records from the beginning whose sequence numbers follow
//! on from `next_seq` are read, checked and inserted; the first that is
//! torn, fails its CRC, or carries another number (an older record of an
//! earlier round) ends the log. Only one process uses the log: the one
//! holding the file's `flock`, which a second opening of the store (a tool
//! beside a running switch) does not get: it then writes through SQLite
//! alone, and reads the database as of the switch's last apply.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::byte_reader::Reader;
use super::journal::PackRow;
use super::*;

/// Records held before they are inserted into the database.
pub(super) const APPLY_RECORDS: usize = 128;
/// Payload bytes held before they are inserted into the database.
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

/// What one logged batch writes into the database when applied.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Logged {
    /// The batch's `saga_log` row: its id and body.
    pub(super) saga_log: Option<(i64, Vec<u8>)>,
    pub(super) packs: Vec<PackRow>,
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
    pub(super) fn insert(&self, conn: &Connection) -> StoreResult<()> {
        if let Some((id, body)) = &self.saga_log {
            conn.prepare_cached("INSERT INTO saga_log (id, body) VALUES (?1, ?2)")
                .and_then(|mut s| s.execute(params![id, body]))
                .map_err(db)?;
        }
        journal::insert_packs(conn, &self.packs)
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn checksum(seq: u64, payload: &[u8]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&seq.to_le_bytes());
    crc.update(&(payload.len() as u32).to_le_bytes());
    crc.update(payload);
    crc.finalize()
}

/// A record as written: header and payload.
fn record(seq: u64, logged: &Logged) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + 256);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    logged.encode(&mut out);
    let payload = &out[HEADER..];
    let len = payload.len() as u32;
    let crc = checksum(seq, payload);
    out[12..16].copy_from_slice(&len.to_le_bytes());
    out[16..20].copy_from_slice(&crc.to_le_bytes());
    out
}

/// The records of `file` from its beginning that follow on from `next_seq`:
/// reading stops at the end of the file, a torn or damaged record, or a
/// record with another sequence number. Only a record whose CRC holds is
/// decoded; one that then does not decode is an error (written by a build
/// that did not write what it meant).
fn read_records(file: &File, next_seq: u64) -> StoreResult<Vec<Logged>> {
    let len = file
        .metadata()
        .map_err(|e| StoreError::Unavailable(format!("cannot read the decision log: {e}")))?
        .len();
    let mut at = 0u64;
    let mut seq = next_seq;
    let mut records = Vec::new();
    let mut header = [0u8; HEADER];
    while at + HEADER as u64 <= len {
        file.read_exact_at(&mut header, at)
            .map_err(|e| StoreError::Unavailable(format!("cannot read the decision log: {e}")))?;
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
        file.read_exact_at(&mut payload, at + HEADER as u64)
            .map_err(|e| StoreError::Unavailable(format!("cannot read the decision log: {e}")))?;
        if checksum(seq, &payload) != crc {
            break;
        }
        records.push(Logged::decode(&payload, seq)?);
        at += (HEADER + payload_len) as u64;
        seq += 1;
    }
    Ok(records)
}

/// The log as the writer holds it.
pub(super) struct DecisionLog {
    /// Open for reading and writing, `flock`ed for the store's lifetime.
    file: File,
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
    /// Opens the log of the store `db` and inserts what it holds beyond the
    /// database into it. `None` when another process holds the log (it is
    /// then that process's to apply).
    pub(super) fn open(store: &Path, conn: &Connection) -> StoreResult<Option<DecisionLog>> {
        let path = log_path(store);
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&path).map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot open the decision log {}: {e}",
                path.display()
            ))
        })?;
        let held = lock::try_lock(&file).map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot lock the decision log {}: {e}",
                path.display()
            ))
        })?;
        if !held {
            return Ok(None);
        }
        let stored_seq: i64 = conn
            .query_row("SELECT next_seq FROM decision_log WHERE id = 1", [], |r| {
                r.get(0)
            })
            .map_err(db)?;
        let stored_seq = u64::try_from(stored_seq)
            .map_err(|_| corrupt(format!("decision_log.next_seq {stored_seq}")))?;
        let records = read_records(&file, stored_seq)?;
        let mut log = DecisionLog {
            file,
            offset: 0,
            next_seq: stored_seq + records.len() as u64,
            stored_seq,
            pending: records,
            pending_bytes: 0,
            needs_apply: false,
        };
        if !log.pending.is_empty() {
            let n = log.pending.len();
            exec(conn, "BEGIN IMMEDIATE")?;
            match log.apply(conn).and_then(|()| exec(conn, "COMMIT")) {
                Ok(()) => log.applied(),
                Err(e) => {
                    let _ = conn.execute_batch("ROLLBACK");
                    return Err(e);
                }
            }
            tracing::info!(
                records = n,
                "decisions read back from the store's decision log"
            );
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
    /// record's sequence number is spent and the log takes nothing until an
    /// apply has committed: `logged` is handed back, for the caller to
    /// write in SQLite.
    pub(super) fn append(&mut self, logged: Logged) -> Result<(), (Logged, String)> {
        let bytes = record(self.next_seq, &logged);
        self.next_seq += 1;
        let written = self
            .file
            .write_all_at(&bytes, self.offset)
            .and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.offset += bytes.len() as u64;
                self.pending_bytes += bytes.len();
                self.pending.push(logged);
                Ok(())
            }
            Err(e) => {
                self.needs_apply = true;
                Err((logged, format!("cannot write the decision log: {e}")))
            }
        }
    }

    /// Inserts the pending records and sets `decision_log.next_seq`, inside
    /// the caller's transaction; [`DecisionLog::applied`] once it commits.
    pub(super) fn apply(&self, conn: &Connection) -> StoreResult<()> {
        for logged in &self.pending {
            logged.insert(conn)?;
        }
        if self.stored_seq != self.next_seq {
            conn.prepare_cached("UPDATE decision_log SET next_seq = ?1 WHERE id = 1")
                .and_then(|mut s| s.execute(params![self.next_seq as i64]))
                .map_err(db)?;
        }
        Ok(())
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let bytes = record(seq, l);
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
            read_records(&file, 10).unwrap(),
            vec![logged(3), logged(4), logged(5)]
        );
        // Another starting number finds nothing.
        assert!(read_records(&file, 11).unwrap().is_empty());
    }

    #[test]
    fn a_torn_or_damaged_record_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let file = temp_log(&dir);
        let end_first = write(&file, 0, 1, &logged(4));
        let end_second = write(&file, end_first, 2, &logged(6));
        // Torn: the file ends inside the second record.
        file.set_len(end_second - 3).unwrap();
        assert_eq!(read_records(&file, 1).unwrap(), vec![logged(4)]);
        // Damaged: a byte of its payload flipped (the CRC fails).
        write(&file, end_first, 2, &logged(6));
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, end_first + HEADER as u64 + 2)
            .unwrap();
        file.write_all_at(&[byte[0] ^ 1], end_first + HEADER as u64 + 2)
            .unwrap();
        assert_eq!(read_records(&file, 1).unwrap(), vec![logged(4)]);
        // A length past any payload is not believed, nor allocated.
        let mut huge = record(2, &logged(6));
        huge[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        file.write_all_at(&huge, end_first).unwrap();
        assert_eq!(read_records(&file, 1).unwrap(), vec![logged(4)]);
    }

    #[test]
    fn a_record_whose_crc_holds_but_does_not_decode_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = temp_log(&dir);
        let payload = [7u8, 1, 2];
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&5u64.to_le_bytes());
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&checksum(5, &payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        file.write_all_at(&bytes, 0).unwrap();
        let e = read_records(&file, 5).unwrap_err().to_string();
        assert!(e.contains("decision log record 5"), "{e}");
    }
}

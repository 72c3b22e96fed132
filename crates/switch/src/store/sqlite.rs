//! The embedded durable default behind [`Store`]: one SQLite file in WAL mode.
//!
//! # Group commit
//!
//! One dedicated thread (`switchboard-store`) owns the only connection. Every
//! call is a command sent to it over a bounded channel with a oneshot for the
//! reply. The thread blocks for the first command, drains whatever else is
//! queued (up to [`SqliteOptions::max_batch`]), and runs them all inside ONE
//! transaction, each inside its own `SAVEPOINT` so that a failing command rolls
//! back alone. It then commits once and only then sends the replies: a call
//! that changes state returns `Ok` only after its transaction is durable
//! (`synchronous=FULL` by default), and concurrent calls share one fsync.
//! Reads go through the same thread, so they always see a consistent state.
//!
//! Journal entries ([`Store::journal`] is not async) go over an unbounded
//! channel of their own, which every batch drains first, in order; a wake-up
//! message on the command channel makes sure a batch follows soon. Entries whose
//! write fails are kept and retried with the next commit; dropping the store
//! (or [`SqliteStore::close`]) writes whatever is pending and joins the thread.
//!
//! # Invariants
//!
//! - Amounts are `INTEGER` minor units (i64) in `STRICT` tables; a `u64` above
//!   `i64::MAX` is refused, never wrapped. A `CHECK` makes
//!   `received_minor + reserved_minor <= amount_minor` hold in the file itself.
//! - Stored values are parsed, never trusted: anything unreadable is
//!   [`StoreError::Corrupt`], never a panic.
//! - If the thread is gone, every call returns [`StoreError::Unavailable`].
//! - The schema version is `PRAGMA user_version`; [`MIGRATIONS`] lists the
//!   steps, and a file newer than this build is refused.

use std::cell::Cell;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::thread::JoinHandle;

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{params, Connection, Row};
use tokio::sync::{mpsc, oneshot};

use iso8583::fields::num;
use iso8583::spec::Spec;

use super::{
    Close, Decisions, Direction, FollowUp, FreezeRecord, FreezeState, History, InsertFreeze,
    JournalEntry, JournalSink, Leases, NewFreeze, NewReceive, NewSafEntry, ReceiveOutcome,
    RequestKey, Reserve, SafEntry, SafKind, SafOutcome, SafQueue, SafState, SagaRecord, SagaState,
    SentMessage, Settled, Store, StoreError, StoreResult, StoredAnswer,
};
use crate::dialect::{FreezeKey, InstitutionId};

/// Capacity of the command channel: callers wait (asynchronously) when it is full.
pub const COMMAND_CHANNEL_CAPACITY: usize = 4096;

/// Highest STAN; STANs run 1..=MAX_STAN.
const MAX_STAN: u32 = 999_999;

/// How long a write waits for a lock held by another process using the file.
const BUSY_TIMEOUT_MS: u64 = 5_000;

/// Schema steps: `MIGRATIONS[i]` takes `user_version` from `i` to `i + 1`.
/// Append new steps; never edit a published one.
pub const MIGRATIONS: &[&str] = &[
    // 1: freezes, sagas, answers, journal, STAN counter.
    r#"
    CREATE TABLE freezes (
        acquirer       TEXT    NOT NULL,
        transmission   TEXT    NOT NULL,
        stan           TEXT    NOT NULL,
        payer_pan      TEXT    NOT NULL,
        payer_bank     TEXT    NOT NULL,
        amount_minor   INTEGER NOT NULL CHECK (amount_minor >= 0),
        currency       INTEGER NOT NULL CHECK (currency BETWEEN 0 AND 999),
        received_minor INTEGER NOT NULL DEFAULT 0 CHECK (received_minor >= 0),
        reserved_minor INTEGER NOT NULL DEFAULT 0 CHECK (reserved_minor >= 0),
        state          TEXT    NOT NULL
                       CHECK (state IN ('pending', 'open', 'declined', 'closed')),
        created_at_ms  INTEGER NOT NULL,
        request_digest BLOB    NOT NULL,
        PRIMARY KEY (acquirer, transmission, stan),
        CHECK (received_minor + reserved_minor <= amount_minor)
    ) STRICT, WITHOUT ROWID;

    CREATE TABLE sagas (
        mti                   TEXT    NOT NULL,
        acquirer              TEXT    NOT NULL,
        transmission          TEXT    NOT NULL,
        stan                  TEXT    NOT NULL,
        freeze_acquirer       TEXT    NOT NULL,
        freeze_transmission   TEXT    NOT NULL,
        freeze_stan           TEXT    NOT NULL,
        amount_minor          INTEGER NOT NULL CHECK (amount_minor >= 0),
        receiver_pan          TEXT    NOT NULL,
        receiver_bank         TEXT    NOT NULL,
        state                 TEXT    NOT NULL CHECK (state IN ('reserved', 'debiting',
                              'crediting', 'reversing_debit', 'approved', 'failed', 'in_doubt')),
        debit_stan            TEXT,
        debit_transmission    TEXT,
        credit_stan           TEXT,
        credit_transmission   TEXT,
        reversal_stan         TEXT,
        reversal_transmission TEXT,
        response_code         TEXT,
        request_digest        BLOB    NOT NULL,
        created_at_ms         INTEGER NOT NULL,
        PRIMARY KEY (mti, acquirer, transmission, stan)
    ) STRICT, WITHOUT ROWID;

    CREATE INDEX sagas_by_freeze ON sagas (freeze_acquirer, freeze_transmission, freeze_stan);

    CREATE TABLE answers (
        mti            TEXT NOT NULL,
        acquirer       TEXT NOT NULL,
        transmission   TEXT NOT NULL,
        stan           TEXT NOT NULL,
        request_digest BLOB NOT NULL,
        response       BLOB NOT NULL,
        response_code  TEXT,
        PRIMARY KEY (mti, acquirer, transmission, stan)
    ) STRICT, WITHOUT ROWID;

    CREATE TABLE journal (
        id              INTEGER PRIMARY KEY,
        at_ms           INTEGER NOT NULL,
        direction       TEXT    NOT NULL CHECK (direction IN ('in', 'out')),
        peer            TEXT    NOT NULL,
        mti             TEXT    NOT NULL,
        processing_code TEXT,
        stan            TEXT,
        transmission    TEXT,
        acquirer        TEXT,
        response_code   TEXT,
        pan_masked      TEXT,
        amount_minor    INTEGER,
        note            TEXT,
        raw             BLOB    NOT NULL
    ) STRICT;

    CREATE TABLE stan_counter (
        id        INTEGER PRIMARY KEY CHECK (id = 0),
        next_stan INTEGER NOT NULL CHECK (next_stan BETWEEN 1 AND 999999)
    ) STRICT;
    INSERT INTO stan_counter (id, next_stan) VALUES (0, 1);
    "#,
    // 2: the store-and-forward queue.
    r#"
    CREATE TABLE saf (
        id              INTEGER PRIMARY KEY,
        bank            TEXT    NOT NULL,
        order_key       TEXT    NOT NULL,
        kind            TEXT    NOT NULL CHECK (kind IN ('reversal', 'unfreeze')),
        message         BLOB    NOT NULL,
        created_at_ms   INTEGER NOT NULL,
        state           TEXT    NOT NULL CHECK (state IN ('pending', 'done', 'dead')),
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_ms INTEGER NOT NULL,
        last_result     TEXT
    ) STRICT;
    CREATE INDEX saf_pending ON saf (state, order_key, id);
    "#,
    // 3: end-of-day clearing reads the journal, sagas and queue by time.
    r#"
    CREATE INDEX journal_by_time ON journal (at_ms);
    CREATE INDEX sagas_by_time ON sagas (created_at_ms);
    CREATE INDEX saf_by_time ON saf (created_at_ms);
    "#,
    // 4: the expiry sweep finds open freezes by age without reading closed ones.
    r#"
    CREATE INDEX freezes_open_by_time ON freezes (created_at_ms) WHERE state = 'open';
    "#,
];

/// Tuning of a [`SqliteStore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SqliteOptions {
    /// `synchronous=FULL` (fsync at every commit: survives power loss). When
    /// false, `synchronous=NORMAL`: survives a process crash, may lose the last
    /// commits on power loss.
    pub synchronous_full: bool,
    /// Most commands run in one transaction.
    pub max_batch: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            synchronous_full: true,
            max_batch: 512,
        }
    }
}

/// Counters since the store was opened: `commands / commits` is the batching factor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Transactions committed.
    pub commits: u64,
    /// Commands run (reads and writes; journal entries not counted).
    pub commands: u64,
}

/// The SQLite implementation of [`Store`]. See the module documentation.
pub struct SqliteStore {
    /// `None` only once closing has begun.
    commands: Option<mpsc::Sender<Msg>>,
    journal: std_mpsc::Sender<JournalEntry>,
    shared: Arc<Shared>,
    /// To read field 39 of answers, on the caller's task rather than the writer's.
    spec: Arc<Spec>,
    thread: Option<JoinHandle<Result<(), String>>>,
    /// The file, for the read-only connections of long reads (clearing), which
    /// must not hold the writer's transaction open.
    path: std::path::PathBuf,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

struct Shared {
    commits: AtomicU64,
    commands: AtomicU64,
    /// A wake-up for journal entries is queued (or a batch is about to drain them).
    wake_pending: AtomicBool,
}

enum Msg {
    Command(Box<dyn Command>),
    /// Journal entries are waiting.
    Wake,
}

/// What a command leaves to do once the batch's commit is decided: reply.
type Reply = Box<dyn FnOnce(Result<(), String>) + Send>;

trait Command: Send {
    /// Runs inside its own savepoint of the batch's transaction; sets `broken`
    /// when the savepoint could not be rolled back.
    fn run(self: Box<Self>, conn: &Connection, broken: &Cell<bool>) -> Reply;
    /// Replies with an error without running (the transaction could not start).
    fn fail(self: Box<Self>, why: String);
}

struct Call<F, T> {
    f: F,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<F, T> Command for Call<F, T>
where
    F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    T: Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection, broken: &Cell<bool>) -> Reply {
        let Call { f, reply } = *self;
        let result = in_savepoint(conn, broken, f);
        Box::new(move |commit: Result<(), String>| {
            let _ = reply.send(commit.map_err(StoreError::Unavailable).and(result));
        })
    }

    fn fail(self: Box<Self>, why: String) {
        let _ = self.reply.send(Err(StoreError::Unavailable(why)));
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the store's writer thread has stopped".into())
}

/// A caller's value the store cannot hold (an amount above `i64::MAX`, a key
/// that is not digits, a step the saga's state does not allow).
fn invalid(why: impl std::fmt::Display) -> StoreError {
    StoreError::Invalid(why.to_string())
}

fn corrupt(why: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(why.to_string())
}

/// Maps a SQLite error: unreadable values and damaged files are `Corrupt`,
/// everything else (I/O, busy, full disk) `Unavailable`.
fn db(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match &e {
        rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::Utf8Error(..) => StoreError::Corrupt(e.to_string()),
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(f.code, ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) =>
        {
            StoreError::Corrupt(e.to_string())
        }
        _ => StoreError::Unavailable(e.to_string()),
    }
}

fn exec(conn: &Connection, sql: &str) -> StoreResult<()> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute([]))
        .map_err(db)?;
    Ok(())
}

/// Runs `f` in a savepoint of the open transaction: on error, the transaction
/// is left as it was before. When that cannot be done (the rollback failed, or
/// SQLite rolled back the whole transaction itself) `broken` is set, and the
/// batch must not be committed.
fn in_savepoint<T>(
    conn: &Connection,
    broken: &Cell<bool>,
    f: impl FnOnce(&Connection) -> StoreResult<T>,
) -> StoreResult<T> {
    if let Err(e) = exec(conn, "SAVEPOINT command") {
        broken.set(true);
        return Err(e);
    }
    let result = f(conn).and_then(|v| exec(conn, "RELEASE command").map(|()| v));
    if result.is_err()
        && (exec(conn, "ROLLBACK TO command").is_err() || exec(conn, "RELEASE command").is_err())
    {
        broken.set(true);
    }
    result
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path` with default options.
    pub fn open(path: &Path) -> StoreResult<SqliteStore> {
        SqliteStore::open_with(path, SqliteOptions::default())
    }

    /// Opens (creating if needed) the store at `path`: WAL mode, the schema
    /// migrated to this build's version, the writer thread started.
    pub fn open_with(path: &Path, options: SqliteOptions) -> StoreResult<SqliteStore> {
        let conn = Connection::open(path).map_err(db)?;
        configure(&conn, options)?;
        migrate(&conn)?;

        let (command_tx, command_rx) = mpsc::channel(COMMAND_CHANNEL_CAPACITY);
        let (journal_tx, journal_rx) = std_mpsc::channel();
        let shared = Arc::new(Shared {
            commits: AtomicU64::new(0),
            commands: AtomicU64::new(0),
            wake_pending: AtomicBool::new(false),
        });
        let writer = Writer {
            conn,
            journal: journal_rx,
            pending_journal: Vec::new(),
            shared: shared.clone(),
        };
        let max_batch = options.max_batch.max(1);
        let thread = std::thread::Builder::new()
            .name("switchboard-store".into())
            .spawn(move || writer.run(command_rx, max_batch))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer thread: {e}")))?;
        Ok(SqliteStore {
            commands: Some(command_tx),
            journal: journal_tx,
            shared,
            spec: Arc::new(Spec::switchboard()),
            thread: Some(thread),
            path: path.to_path_buf(),
        })
    }

    /// Commits and commands so far.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            commits: self.shared.commits.load(Ordering::Relaxed),
            commands: self.shared.commands.load(Ordering::Relaxed),
        }
    }

    /// Runs what is queued, writes pending journal entries and stops the writer
    /// thread; reports whether the last journal entries could be written.
    /// (Dropping the store does the same, blocking, and only logs a failure.)
    pub async fn close(mut self) -> StoreResult<()> {
        self.commands.take();
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        match tokio::task::spawn_blocking(move || thread.join()).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(StoreError::Unavailable(e)),
            Ok(Err(_)) => Err(StoreError::Unavailable(
                "the store's writer thread panicked".into(),
            )),
            Err(e) => Err(StoreError::Unavailable(format!(
                "cannot wait for the writer thread: {e}"
            ))),
        }
    }

    async fn call<T, F>(&self, f: F) -> StoreResult<T>
    where
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let commands = self.commands.as_ref().ok_or_else(stopped)?;
        let (reply, rx) = oneshot::channel();
        commands
            .send(Msg::Command(Box::new(Call { f, reply })))
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Runs `f` on a read-only connection of its own, in one read transaction
    /// (a consistent snapshot), on a blocking thread: long reads neither wait
    /// for nor hold up the writer. What was queued before (journal entries
    /// included) is committed first.
    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
        T: Send + 'static,
    {
        self.call(|_| Ok(())).await?;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            use rusqlite::OpenFlags;
            let conn = Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(db)?;
            conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))
                .map_err(db)?;
            exec(&conn, "BEGIN")?;
            let result = f(&conn);
            let _ = conn.execute_batch("COMMIT");
            result
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("read task failed: {e}")))?
    }

    /// Field 39 of a response, if it parses in the switchboard dialect.
    fn response_code(&self, answer: &StoredAnswer) -> Option<String> {
        iso8583::codec::parse(&self.spec, answer.response.clone())
            .ok()
            .and_then(|m| m.get_str(num::RESPONSE_CODE).map(str::to_owned))
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.commands.take();
        if let Some(thread) = self.thread.take() {
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!("closing the store: {e}"),
                Err(_) => tracing::error!("the store's writer thread panicked"),
            }
        }
    }
}

fn configure(conn: &Connection, options: SqliteOptions) -> StoreResult<()> {
    conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))
        .map_err(db)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(db)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Unavailable(format!(
            "cannot use WAL mode (journal_mode is {mode})"
        )));
    }
    let sync = if options.synchronous_full {
        "FULL"
    } else {
        "NORMAL"
    };
    // A page touched by many commits between checkpoints is copied back to the
    // database file once per checkpoint: a larger WAL (64 MiB) and page cache
    // cut the write amplification of many small group commits.
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {sync}; PRAGMA wal_autocheckpoint = 16384; \
         PRAGMA cache_size = -65536; PRAGMA journal_size_limit = 134217728;"
    ))
    .map_err(db)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

fn migrate(conn: &Connection) -> StoreResult<()> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(db)?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(StoreError::Unavailable(format!(
            "the store's schema version {version} is newer than this build's ({known})"
        )));
    }
    if version < 0 {
        return Err(corrupt(format!("schema version {version}")));
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {step}; PRAGMA user_version = {}; COMMIT;",
            i + 1
        ))
        .map_err(|e| {
            let _ = conn.execute_batch("ROLLBACK");
            StoreError::Unavailable(format!("schema migration {}: {e}", i + 1))
        })?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The writer thread

struct Writer {
    conn: Connection,
    journal: std_mpsc::Receiver<JournalEntry>,
    /// Entries taken from the channel and not yet committed.
    pending_journal: Vec<JournalEntry>,
    shared: Arc<Shared>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Msg>, max_batch: usize) -> Result<(), String> {
        let mut batch: Vec<Box<dyn Command>> = Vec::with_capacity(max_batch);
        while let Some(first) = rx.blocking_recv() {
            if let Msg::Command(c) = first {
                batch.push(c);
            }
            while batch.len() < max_batch {
                match rx.try_recv() {
                    Ok(Msg::Command(c)) => batch.push(c),
                    Ok(Msg::Wake) => {}
                    Err(_) => break,
                }
            }
            self.batch(&mut batch);
        }
        // Every sender is gone: write what the journal still holds.
        self.batch(&mut batch);
        match self.pending_journal.len() {
            0 => Ok(()),
            n => Err(format!("{n} journal entries could not be written")),
        }
    }

    /// Runs `commands` (emptying it) and pending journal entries in one transaction.
    fn batch(&mut self, commands: &mut Vec<Box<dyn Command>>) {
        self.shared.wake_pending.store(false, Ordering::SeqCst);
        while let Ok(entry) = self.journal.try_recv() {
            self.pending_journal.push(entry);
        }
        if commands.is_empty() && self.pending_journal.is_empty() {
            return;
        }
        if !self.conn.is_autocommit() {
            // A transaction left open by a failed commit.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        if let Err(e) = exec(&self.conn, "BEGIN IMMEDIATE") {
            let why = format!("cannot begin a transaction: {e}");
            tracing::warn!("{why}");
            for command in commands.drain(..) {
                command.fail(why.clone());
            }
            return;
        }

        // Whether the transaction is still whole: a failed rollback of a
        // savepoint, or SQLite abandoning the transaction (on I/O errors, a full
        // disk), means part of a failed command might be committed: the batch
        // is abandoned instead.
        let broken = Cell::new(false);
        let journaled = match self.pending_journal.len() {
            0 => 0,
            n => match in_savepoint(&self.conn, &broken, |c| {
                write_journal(c, &self.pending_journal)
            }) {
                Ok(()) => n,
                Err(e) => {
                    tracing::warn!("journal entries kept for the next commit: {e}");
                    0
                }
            },
        };
        self.shared
            .commands
            .fetch_add(commands.len() as u64, Ordering::Relaxed);
        let mut replies: Vec<Reply> = Vec::with_capacity(commands.len());
        for command in commands.drain(..) {
            if broken.get() || self.conn.is_autocommit() {
                broken.set(true);
                command.fail("the batch's transaction was abandoned".into());
            } else {
                replies.push(command.run(&self.conn, &broken));
            }
        }

        let outcome = if broken.get() || self.conn.is_autocommit() {
            Err("the batch's transaction was abandoned after an error".to_string())
        } else {
            exec(&self.conn, "COMMIT").map_err(|e| format!("commit failed: {e}"))
        };
        match &outcome {
            Ok(()) => {
                self.shared.commits.fetch_add(1, Ordering::Relaxed);
                self.pending_journal.drain(..journaled);
            }
            Err(e) => {
                tracing::warn!("{e}");
                if !self.conn.is_autocommit() {
                    let _ = self.conn.execute_batch("ROLLBACK");
                }
            }
        }
        for reply in replies {
            reply(outcome.clone());
        }
    }
}

fn write_journal(conn: &Connection, entries: &[JournalEntry]) -> StoreResult<()> {
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO journal (at_ms, direction, peer, mti, processing_code, stan, \
             transmission, acquirer, response_code, pan_masked, amount_minor, note, raw) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )
        .map_err(db)?;
    for e in entries {
        let direction = match e.direction {
            Direction::In => "in",
            Direction::Out => "out",
        };
        // F4 has 12 digits, so this only drops an amount no message can carry.
        let amount = e.amount_minor.and_then(|a| i64::try_from(a).ok());
        insert
            .execute(params![
                e.at_ms,
                direction,
                e.peer,
                String::from_utf8_lossy(&e.mti),
                e.processing_code,
                e.stan,
                e.transmission,
                e.acquirer,
                e.response_code,
                e.pan_masked,
                amount,
                e.note,
                &e.raw[..],
            ])
            .map_err(db)?;
    }
    Ok(())
}

/// A journal row as [`Store::journal_between`] returns it.
fn journal_row(row: &Row) -> StoreResult<JournalEntry> {
    let direction = match text_col(row, 1)?.as_str() {
        "in" => Direction::In,
        "out" => Direction::Out,
        other => return Err(corrupt(format!("journal direction {other:?}"))),
    };
    let amount: Option<i64> = row.get(10).map_err(db)?;
    let raw = row
        .get_ref(12)
        .map_err(db)?
        .as_blob()
        .map_err(|e| corrupt(format!("journal raw: {e}")))?;
    Ok(JournalEntry {
        at_ms: row.get(0).map_err(db)?,
        direction,
        peer: text_col(row, 2)?,
        mti: {
            // As written: four characters, not necessarily digits.
            let text = text_col(row, 3)?;
            <[u8; 4]>::try_from(text.as_bytes()).unwrap_or(*b"????")
        },
        processing_code: row.get(4).map_err(db)?,
        stan: row.get(5).map_err(db)?,
        transmission: row.get(6).map_err(db)?,
        acquirer: row.get(7).map_err(db)?,
        response_code: row.get(8).map_err(db)?,
        pan_masked: row.get(9).map_err(db)?,
        amount_minor: amount.and_then(|a| u64::try_from(a).ok()),
        note: row.get(11).map_err(db)?,
        raw: Bytes::copy_from_slice(raw),
    })
}

// ---------------------------------------------------------------------------
// Keys and values as stored

/// Key parts as the text columns hold them: ASCII digits, checked both ways.
fn digits_text(what: &str, bytes: &[u8]) -> StoreResult<String> {
    if bytes.iter().all(u8::is_ascii_digit) {
        // ASCII digits are UTF-8.
        Ok(bytes.iter().map(|&b| b as char).collect())
    } else {
        Err(invalid(format!(
            "{what} {:?} is not digits",
            String::from_utf8_lossy(bytes)
        )))
    }
}

/// A request key's columns: mti, acquirer, transmission, stan.
#[derive(Clone)]
struct ReqCols([String; 4]);

impl ReqCols {
    fn new(k: &RequestKey) -> StoreResult<Self> {
        Ok(ReqCols([
            digits_text("MTI", &k.mti)?,
            digits_text("acquirer", &k.acquirer.0)?,
            digits_text("transmission date-time", &k.transmission)?,
            digits_text("STAN", &k.stan)?,
        ]))
    }
}

/// A freeze key's columns: acquirer, transmission, stan.
#[derive(Clone)]
struct FreezeCols([String; 3]);

impl FreezeCols {
    fn new(k: &FreezeKey) -> StoreResult<Self> {
        Ok(FreezeCols([
            digits_text("acquirer", &k.acquirer.0)?,
            digits_text("transmission date-time", &k.transmission)?,
            digits_text("STAN", &k.stan)?,
        ]))
    }
}

fn amount_in(what: &str, amount: u64) -> StoreResult<i64> {
    i64::try_from(amount).map_err(|_| invalid(format!("{what} {amount} exceeds i64::MAX")))
}

fn digits_col<const N: usize>(row: &Row, idx: usize) -> StoreResult<[u8; N]> {
    let text = row
        .get_ref(idx)
        .map_err(db)?
        .as_str()
        .map_err(|e| corrupt(format!("column {idx}: {e}")))?;
    let bytes = text.as_bytes();
    if bytes.len() != N || !bytes.iter().all(u8::is_ascii_digit) {
        return Err(corrupt(format!("column {idx}: {text:?} is not {N} digits")));
    }
    let mut out = [0u8; N];
    out.copy_from_slice(bytes);
    Ok(out)
}

fn opt_digits_col<const N: usize>(row: &Row, idx: usize) -> StoreResult<Option<[u8; N]>> {
    match row.get_ref(idx).map_err(db)? {
        rusqlite::types::ValueRef::Null => Ok(None),
        _ => digits_col(row, idx).map(Some),
    }
}

fn amount_col(row: &Row, idx: usize) -> StoreResult<u64> {
    let v: i64 = row.get(idx).map_err(db)?;
    u64::try_from(v).map_err(|_| corrupt(format!("column {idx}: negative amount {v}")))
}

fn digest_col(row: &Row, idx: usize) -> StoreResult<[u8; 32]> {
    let blob = row
        .get_ref(idx)
        .map_err(db)?
        .as_blob()
        .map_err(|e| corrupt(format!("column {idx}: {e}")))?;
    <[u8; 32]>::try_from(blob)
        .map_err(|_| corrupt(format!("column {idx}: digest of {} bytes", blob.len())))
}

fn text_col(row: &Row, idx: usize) -> StoreResult<String> {
    row.get(idx).map_err(db)
}

fn sent_col(
    row: &Row,
    stan_idx: usize,
    transmission_idx: usize,
) -> StoreResult<Option<SentMessage>> {
    match (
        opt_digits_col::<6>(row, stan_idx)?,
        opt_digits_col::<10>(row, transmission_idx)?,
    ) {
        (None, None) => Ok(None),
        (Some(stan), Some(transmission)) => Ok(Some(SentMessage { stan, transmission })),
        _ => Err(corrupt(format!(
            "columns {stan_idx} and {transmission_idx}: half of a sent message"
        ))),
    }
}

/// Runs a cached query and decodes its first row, if any.
fn query_opt<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    decode: impl FnOnce(&Row) -> StoreResult<T>,
) -> StoreResult<Option<T>> {
    let mut stmt = conn.prepare_cached(sql).map_err(db)?;
    let mut rows = stmt.query(params).map_err(db)?;
    match rows.next().map_err(db)? {
        Some(row) => decode(row).map(Some),
        None => Ok(None),
    }
}

fn query_all<T>(
    conn: &Connection,
    sql: &str,
    decode: impl Fn(&Row) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    query_all_with(conn, sql, [], decode)
}

fn query_all_with<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    decode: impl Fn(&Row) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql).map_err(db)?;
    let mut rows = stmt.query(params).map_err(db)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(db)? {
        out.push(decode(row)?);
    }
    Ok(out)
}

fn execute(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> StoreResult<usize> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute(params))
        .map_err(db)
}

/// The columns [`freeze_row`] reads, as a literal for `concat!`.
macro_rules! freeze_columns {
    () => {
        "acquirer, transmission, stan, payer_pan, payer_bank, amount_minor, currency, \
         received_minor, reserved_minor, state, created_at_ms"
    };
}

fn freeze_row(row: &Row) -> StoreResult<FreezeRecord> {
    let state = text_col(row, 9)?;
    let currency: i64 = row.get(6).map_err(db)?;
    Ok(FreezeRecord {
        key: FreezeKey {
            acquirer: InstitutionId(digits_col(row, 0)?),
            transmission: digits_col(row, 1)?,
            stan: digits_col(row, 2)?,
        },
        payer_pan: text_col(row, 3)?,
        payer_bank: text_col(row, 4)?,
        amount_minor: amount_col(row, 5)?,
        currency: u16::try_from(currency).map_err(|_| corrupt(format!("currency {currency}")))?,
        received_minor: amount_col(row, 7)?,
        reserved_minor: amount_col(row, 8)?,
        state: FreezeState::parse(&state)
            .ok_or_else(|| corrupt(format!("freeze state {state:?}")))?,
        created_at_ms: row.get(10).map_err(db)?,
    })
}

/// The columns [`saga_row`] reads, as a literal for `concat!`.
macro_rules! saga_columns {
    () => {
        "mti, acquirer, transmission, stan, freeze_acquirer, freeze_transmission, freeze_stan, \
         amount_minor, receiver_pan, receiver_bank, state, debit_stan, debit_transmission, \
         credit_stan, credit_transmission, reversal_stan, reversal_transmission, response_code, \
         created_at_ms"
    };
}

fn saga_row(row: &Row) -> StoreResult<SagaRecord> {
    let state = text_col(row, 10)?;
    Ok(SagaRecord {
        request: RequestKey {
            mti: digits_col(row, 0)?,
            acquirer: InstitutionId(digits_col(row, 1)?),
            transmission: digits_col(row, 2)?,
            stan: digits_col(row, 3)?,
        },
        freeze: FreezeKey {
            acquirer: InstitutionId(digits_col(row, 4)?),
            transmission: digits_col(row, 5)?,
            stan: digits_col(row, 6)?,
        },
        amount_minor: amount_col(row, 7)?,
        receiver_pan: text_col(row, 8)?,
        receiver_bank: text_col(row, 9)?,
        state: SagaState::parse(&state).ok_or_else(|| corrupt(format!("saga state {state:?}")))?,
        debit: sent_col(row, 11, 12)?,
        credit: sent_col(row, 13, 14)?,
        reversal: sent_col(row, 15, 16)?,
        response_code: row.get(17).map_err(db)?,
        created_at_ms: row.get(18).map_err(db)?,
    })
}

// ---------------------------------------------------------------------------
// Commands, as run on the writer thread

fn load_freeze(conn: &Connection, key: &FreezeCols) -> StoreResult<Option<FreezeRecord>> {
    query_opt(
        conn,
        concat!(
            "SELECT ",
            freeze_columns!(),
            " FROM freezes WHERE acquirer = ?1 AND transmission = ?2 AND stan = ?3"
        ),
        params![key.0[0], key.0[1], key.0[2]],
        freeze_row,
    )
}

fn load_answer(conn: &Connection, key: &ReqCols) -> StoreResult<Option<StoredAnswer>> {
    query_opt(
        conn,
        "SELECT request_digest, response FROM answers \
         WHERE mti = ?1 AND acquirer = ?2 AND transmission = ?3 AND stan = ?4",
        params![key.0[0], key.0[1], key.0[2], key.0[3]],
        |row| {
            let response = row
                .get_ref(1)
                .map_err(db)?
                .as_blob()
                .map_err(|e| corrupt(format!("answer response: {e}")))?;
            Ok(StoredAnswer {
                request_digest: digest_col(row, 0)?,
                response: Bytes::copy_from_slice(response),
            })
        },
    )
}

/// Records an answer unless one is recorded for the request already.
fn insert_answer(
    conn: &Connection,
    key: &ReqCols,
    answer: &StoredAnswer,
    response_code: Option<&str>,
) -> StoreResult<()> {
    execute(
        conn,
        "INSERT OR IGNORE INTO answers \
         (mti, acquirer, transmission, stan, request_digest, response, response_code) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            key.0[0],
            key.0[1],
            key.0[2],
            key.0[3],
            &answer.request_digest[..],
            &answer.response[..],
            response_code,
        ],
    )?;
    Ok(())
}

fn set_freeze_state(conn: &Connection, key: &FreezeCols, state: FreezeState) -> StoreResult<()> {
    execute(
        conn,
        "UPDATE freezes SET state = ?4 WHERE acquirer = ?1 AND transmission = ?2 AND stan = ?3",
        params![key.0[0], key.0[1], key.0[2], state.as_str()],
    )?;
    Ok(())
}

fn insert_freeze(
    conn: &Connection,
    key: &FreezeCols,
    request: &ReqCols,
    freeze: &NewFreeze,
    amount: i64,
) -> StoreResult<InsertFreeze> {
    // A request already answered (even one rejected before any freeze was
    // recorded) is a resend or a clash, whatever the freezes table says.
    if let Some(answer) = load_answer(conn, request)? {
        return Ok(InsertFreeze::Exists {
            request_digest: answer.request_digest,
            answer: Some(answer),
        });
    }
    let existing = query_opt(
        conn,
        "SELECT request_digest FROM freezes WHERE acquirer = ?1 AND transmission = ?2 AND stan = ?3",
        params![key.0[0], key.0[1], key.0[2]],
        |row| digest_col(row, 0),
    )?;
    if let Some(request_digest) = existing {
        return Ok(InsertFreeze::Exists {
            request_digest,
            answer: load_answer(conn, request)?,
        });
    }
    execute(
        conn,
        "INSERT INTO freezes (acquirer, transmission, stan, payer_pan, payer_bank, amount_minor, \
         currency, received_minor, reserved_minor, state, created_at_ms, request_digest) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, 0, 'pending', ?8, ?9)",
        params![
            key.0[0],
            key.0[1],
            key.0[2],
            freeze.payer_pan,
            freeze.payer_bank,
            amount,
            freeze.currency,
            freeze.created_at_ms,
            &freeze.request_digest[..],
        ],
    )?;
    Ok(InsertFreeze::Inserted)
}

/// Records the payer bank's answer on a pending freeze; a freeze no longer
/// pending is left as it is, reported with the answer recorded then.
fn finish_freeze(
    conn: &Connection,
    key: &FreezeCols,
    approved: bool,
    request: &ReqCols,
    answer: &StoredAnswer,
    response_code: Option<&str>,
) -> StoreResult<Settled> {
    let freeze = load_freeze(conn, key)?
        .ok_or_else(|| invalid(format!("finish_freeze: no freeze {}", key.0.join("/"))))?;
    if freeze.state != FreezeState::Pending {
        return Ok(Settled::Before {
            answer: load_answer(conn, request)?,
        });
    }
    let target = if approved {
        FreezeState::Open
    } else {
        FreezeState::Declined
    };
    set_freeze_state(conn, key, target)?;
    insert_answer(conn, request, answer, response_code)?;
    Ok(Settled::Now)
}

fn reserve(
    conn: &Connection,
    request: &ReqCols,
    freeze_key: &FreezeCols,
    receive: &NewReceive,
    amount: i64,
) -> StoreResult<Reserve> {
    // A request already answered (even one rejected with 25 or 61, which left
    // no saga) is a resend or a clash.
    if let Some(answer) = load_answer(conn, request)? {
        return Ok(Reserve::Duplicate {
            request_digest: answer.request_digest,
            answer: Some(answer),
        });
    }
    let existing = query_opt(
        conn,
        "SELECT request_digest FROM sagas \
         WHERE mti = ?1 AND acquirer = ?2 AND transmission = ?3 AND stan = ?4",
        params![request.0[0], request.0[1], request.0[2], request.0[3]],
        |row| digest_col(row, 0),
    )?;
    if let Some(request_digest) = existing {
        return Ok(Reserve::Duplicate {
            request_digest,
            answer: load_answer(conn, request)?,
        });
    }
    let Some(mut freeze) = load_freeze(conn, freeze_key)? else {
        return Ok(Reserve::NotFound);
    };
    if freeze.state != FreezeState::Open {
        return Ok(Reserve::NotOpen(freeze.state));
    }
    let available_minor = freeze.available_minor();
    if receive.amount_minor > available_minor {
        return Ok(Reserve::Exceeds { available_minor });
    }
    // ≤ amount_minor ≤ i64::MAX: cannot overflow.
    freeze.reserved_minor += receive.amount_minor;
    execute(
        conn,
        "UPDATE freezes SET reserved_minor = ?4 \
         WHERE acquirer = ?1 AND transmission = ?2 AND stan = ?3",
        params![
            freeze_key.0[0],
            freeze_key.0[1],
            freeze_key.0[2],
            amount_in("reserved amount", freeze.reserved_minor)?,
        ],
    )?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let state = SagaState::Debiting.as_str();
    execute(
        conn,
        "INSERT INTO sagas (mti, acquirer, transmission, stan, freeze_acquirer, \
         freeze_transmission, freeze_stan, amount_minor, receiver_pan, receiver_bank, state, \
         request_digest, created_at_ms, debit_stan, debit_transmission, credit_stan, \
         credit_transmission) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?13, ?11, ?12, ?14, ?15, ?16, ?17)",
        params![
            request.0[0],
            request.0[1],
            request.0[2],
            request.0[3],
            freeze_key.0[0],
            freeze_key.0[1],
            freeze_key.0[2],
            amount,
            receive.receiver_pan,
            receive.receiver_bank,
            &receive.request_digest[..],
            receive.created_at_ms,
            state,
            text(&receive.debit.stan),
            text(&receive.debit.transmission),
            text(&receive.credit.stan),
            text(&receive.credit.transmission),
        ],
    )?;
    Ok(Reserve::Reserved(freeze))
}

fn saga_state(conn: &Connection, request: &ReqCols) -> StoreResult<Option<SagaState>> {
    query_opt(
        conn,
        "SELECT state FROM sagas WHERE mti = ?1 AND acquirer = ?2 AND transmission = ?3 AND stan = ?4",
        params![request.0[0], request.0[1], request.0[2], request.0[3]],
        |row| {
            let s = text_col(row, 0)?;
            SagaState::parse(&s).ok_or_else(|| corrupt(format!("saga state {s:?}")))
        },
    )
}

/// Ends a saga not ended yet: settles its reservation and records the answer.
fn end_saga(
    conn: &Connection,
    request: &ReqCols,
    outcome: ReceiveOutcome,
    answer: &StoredAnswer,
    response_code: Option<&str>,
) -> StoreResult<()> {
    let name = request.0.join("/");
    let saga = query_opt(
        conn,
        "SELECT state, amount_minor, freeze_acquirer, freeze_transmission, freeze_stan FROM sagas \
         WHERE mti = ?1 AND acquirer = ?2 AND transmission = ?3 AND stan = ?4",
        params![request.0[0], request.0[1], request.0[2], request.0[3]],
        |row| {
            let s = text_col(row, 0)?;
            let state = SagaState::parse(&s).ok_or_else(|| corrupt(format!("saga state {s:?}")))?;
            let amount: i64 = row.get(1).map_err(db)?;
            let freeze = FreezeCols([text_col(row, 2)?, text_col(row, 3)?, text_col(row, 4)?]);
            Ok((state, amount, freeze))
        },
    )?;
    let (state, amount, freeze) =
        saga.ok_or_else(|| invalid(format!("settle_receive: no saga {name}")))?;
    if state.is_final() {
        // Settled already: a second finish changes nothing.
        return Ok(());
    }
    let settle = match outcome {
        ReceiveOutcome::Approved => {
            "UPDATE freezes SET reserved_minor = reserved_minor - ?4, \
             received_minor = received_minor + ?4 \
             WHERE acquirer = ?1 AND transmission = ?2 AND stan = ?3 AND reserved_minor >= ?4"
        }
        ReceiveOutcome::Failed => {
            "UPDATE freezes SET reserved_minor = reserved_minor - ?4 \
             WHERE acquirer = ?1 AND transmission = ?2 AND stan = ?3 AND reserved_minor >= ?4"
        }
    };
    let changed = execute(
        conn,
        settle,
        params![freeze.0[0], freeze.0[1], freeze.0[2], amount],
    )?;
    if changed != 1 {
        return Err(corrupt(format!(
            "saga {name}: its freeze {} is missing or holds less than {amount} reserved",
            freeze.0.join("/")
        )));
    }
    let new_state = match outcome {
        ReceiveOutcome::Approved => SagaState::Approved,
        ReceiveOutcome::Failed => SagaState::Failed,
    };
    execute(
        conn,
        "UPDATE sagas SET state = ?5, response_code = ?6 \
         WHERE mti = ?1 AND acquirer = ?2 AND transmission = ?3 AND stan = ?4",
        params![
            request.0[0],
            request.0[1],
            request.0[2],
            request.0[3],
            new_state.as_str(),
            response_code,
        ],
    )?;
    insert_answer(conn, request, answer, response_code)
}

fn close_freeze(
    conn: &Connection,
    key: &FreezeCols,
    amount_minor: u64,
    request: &ReqCols,
    answer: &StoredAnswer,
    response_code: Option<&str>,
) -> StoreResult<Close> {
    let Some(mut freeze) = load_freeze(conn, key)? else {
        return Ok(Close::NotFound);
    };
    if freeze.state != FreezeState::Open {
        return Ok(Close::NotOpen(freeze.state));
    }
    let remaining_minor = freeze.available_minor();
    if amount_minor != remaining_minor {
        return Ok(Close::AmountMismatch { remaining_minor });
    }
    set_freeze_state(conn, key, FreezeState::Closed)?;
    insert_answer(conn, request, answer, response_code)?;
    freeze.state = FreezeState::Closed;
    Ok(Close::Closed(freeze))
}

/// Takes `count` STANs from the counter. A block never crosses 999999: when
/// it would, it starts at 1 instead (the STANs between are skipped this round).
fn allocate_stans(conn: &Connection, count: u32) -> StoreResult<u32> {
    let next = query_opt(
        conn,
        "SELECT next_stan FROM stan_counter WHERE id = 0",
        [],
        |row| row.get::<_, i64>(0).map_err(db),
    )?
    .ok_or_else(|| corrupt("the STAN counter row is missing"))?;
    let next = u32::try_from(next)
        .ok()
        .filter(|n| (1..=MAX_STAN).contains(n))
        .ok_or_else(|| corrupt(format!("STAN counter at {next}")))?;
    let first = if next + (count - 1) > MAX_STAN {
        1
    } else {
        next
    };
    let after = first + count;
    let after = if after > MAX_STAN { 1 } else { after };
    execute(
        conn,
        "UPDATE stan_counter SET next_stan = ?1 WHERE id = 0",
        params![after],
    )?;
    Ok(first)
}

// ---------------------------------------------------------------------------
// Store-and-forward

fn saf_enqueue(conn: &Connection, entry: &NewSafEntry) -> StoreResult<()> {
    execute(
        conn,
        "INSERT INTO saf (bank, order_key, kind, message, created_at_ms, state, next_attempt_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?5)",
        params![
            entry.bank,
            entry.order_key,
            entry.kind.as_str(),
            &entry.message[..],
            entry.created_at_ms,
        ],
    )?;
    Ok(())
}

fn saf_row(row: &Row) -> StoreResult<SafEntry> {
    let kind = text_col(row, 3)?;
    let state = text_col(row, 6)?;
    let message = row
        .get_ref(4)
        .map_err(db)?
        .as_blob()
        .map_err(|e| corrupt(format!("saf message: {e}")))?;
    let attempts: i64 = row.get(7).map_err(db)?;
    Ok(SafEntry {
        id: row.get(0).map_err(db)?,
        entry: NewSafEntry {
            bank: text_col(row, 1)?,
            order_key: text_col(row, 2)?,
            kind: SafKind::parse(&kind).ok_or_else(|| corrupt(format!("saf kind {kind:?}")))?,
            message: Bytes::copy_from_slice(message),
            created_at_ms: row.get(5).map_err(db)?,
        },
        state: SafState::parse(&state).ok_or_else(|| corrupt(format!("saf state {state:?}")))?,
        attempts: u32::try_from(attempts).map_err(|_| corrupt("saf attempts"))?,
        next_attempt_ms: row.get(8).map_err(db)?,
        last_result: row.get(9).map_err(db)?,
    })
}

const SAF_COLUMNS: &str = "id, bank, order_key, kind, message, created_at_ms, state, attempts, \
                           next_attempt_ms, last_result";

fn saf_due(conn: &Connection, now_ms: i64, limit: usize) -> StoreResult<Vec<SafEntry>> {
    let sql = format!(
        "SELECT {SAF_COLUMNS} FROM saf s WHERE state = 'pending' AND next_attempt_ms <= ?1 \
         AND id = (SELECT MIN(id) FROM saf t WHERE t.order_key = s.order_key AND t.state = 'pending') \
         ORDER BY id LIMIT ?2"
    );
    query_all_with(conn, &sql, params![now_ms, limit as i64], saf_row)
}

fn saf_settle(conn: &Connection, id: i64, outcome: &SafOutcome) -> StoreResult<()> {
    let (state, next, result) = match outcome {
        SafOutcome::Done { result } => ("done", None, result),
        SafOutcome::Retry {
            next_attempt_ms,
            result,
        } => ("pending", Some(*next_attempt_ms), result),
        SafOutcome::Dead { result } => ("dead", None, result),
    };
    let changed = execute(
        conn,
        "UPDATE saf SET state = ?2, attempts = attempts + 1, \
         next_attempt_ms = COALESCE(?3, next_attempt_ms), last_result = ?4 \
         WHERE id = ?1 AND state = 'pending'",
        params![id, state, next, result],
    )?;
    if changed != 1 {
        return Err(invalid(format!("saf entry {id} is not pending")));
    }
    Ok(())
}

/// A failed receive whose freeze is closed leaves its amount held at the payer
/// bank: queue the further unfreeze.
fn queue_follow_up(
    conn: &Connection,
    request: &ReqCols,
    outcome: ReceiveOutcome,
    follow_up: &FollowUp,
) -> StoreResult<()> {
    for entry in &follow_up.saf {
        saf_enqueue(conn, entry)?;
    }
    if let (ReceiveOutcome::Failed, Some(unfreeze)) = (outcome, &follow_up.unfreeze_if_closed) {
        let closed = query_opt(
            conn,
            "SELECT f.state FROM sagas s JOIN freezes f ON f.acquirer = s.freeze_acquirer \
             AND f.transmission = s.freeze_transmission AND f.stan = s.freeze_stan \
             WHERE s.mti = ?1 AND s.acquirer = ?2 AND s.transmission = ?3 AND s.stan = ?4",
            params![request.0[0], request.0[1], request.0[2], request.0[3]],
            |row| Ok(text_col(row, 0)? == "closed"),
        )?;
        if closed == Some(true) {
            saf_enqueue(conn, unfreeze)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The trait

impl Store for SqliteStore {
    fn leases(self: Arc<Self>) -> Option<Arc<dyn Leases>> {
        None
    }
}

#[async_trait]
impl Decisions for SqliteStore {
    async fn answer(&self, request: &RequestKey) -> StoreResult<Option<StoredAnswer>> {
        let request = ReqCols::new(request)?;
        self.call(move |c| load_answer(c, &request)).await
    }

    async fn record_answer(&self, request: &RequestKey, answer: StoredAnswer) -> StoreResult<()> {
        let request = ReqCols::new(request)?;
        let code = self.response_code(&answer);
        self.call(move |c| insert_answer(c, &request, &answer, code.as_deref()))
            .await
    }

    async fn insert_freeze(&self, freeze: NewFreeze) -> StoreResult<InsertFreeze> {
        let key = FreezeCols::new(&freeze.key)?;
        let request = ReqCols::new(&freeze.request)?;
        let amount = amount_in("frozen amount", freeze.amount_minor)?;
        self.call(move |c| insert_freeze(c, &key, &request, &freeze, amount))
            .await
    }

    async fn finish_freeze_queueing(
        &self,
        key: &FreezeKey,
        approved: bool,
        request: &RequestKey,
        answer: StoredAnswer,
        saf: Option<NewSafEntry>,
    ) -> StoreResult<Settled> {
        let key = FreezeCols::new(key)?;
        let request = ReqCols::new(request)?;
        let code = self.response_code(&answer);
        self.call(move |c| {
            let settled = finish_freeze(c, &key, approved, &request, &answer, code.as_deref())?;
            if let (Settled::Now, Some(entry)) = (&settled, &saf) {
                saf_enqueue(c, entry)?;
            }
            Ok(settled)
        })
        .await
    }

    async fn freeze(&self, key: &FreezeKey) -> StoreResult<Option<FreezeRecord>> {
        let key = FreezeCols::new(key)?;
        self.call(move |c| load_freeze(c, &key)).await
    }

    async fn reserve(&self, receive: NewReceive) -> StoreResult<Reserve> {
        let request = ReqCols::new(&receive.request)?;
        let freeze = FreezeCols::new(&receive.freeze)?;
        let amount = amount_in("receive amount", receive.amount_minor)?;
        self.call(move |c| reserve(c, &request, &freeze, &receive, amount))
            .await
    }

    async fn settle_receive(
        &self,
        request: &RequestKey,
        outcome: ReceiveOutcome,
        answer: StoredAnswer,
        follow_up: FollowUp,
    ) -> StoreResult<Settled> {
        let request = ReqCols::new(request)?;
        let code = self.response_code(&answer);
        self.call(move |c| {
            if matches!(saga_state(c, &request)?, Some(state) if state.is_final()) {
                // Settled before: its follow-ups were queued then.
                return Ok(Settled::Before {
                    answer: load_answer(c, &request)?,
                });
            }
            end_saga(c, &request, outcome, &answer, code.as_deref())?;
            queue_follow_up(c, &request, outcome, &follow_up)?;
            Ok(Settled::Now)
        })
        .await
    }

    async fn close_freeze_queueing(
        &self,
        key: &FreezeKey,
        amount_minor: u64,
        request: &RequestKey,
        answer: StoredAnswer,
        notice: NewSafEntry,
    ) -> StoreResult<Close> {
        let key = FreezeCols::new(key)?;
        let request = ReqCols::new(request)?;
        let code = self.response_code(&answer);
        self.call(move |c| {
            let result = close_freeze(c, &key, amount_minor, &request, &answer, code.as_deref())?;
            if matches!(result, Close::Closed(_)) {
                saf_enqueue(c, &notice)?;
            }
            Ok(result)
        })
        .await
    }

    async fn saga(&self, request: &RequestKey) -> StoreResult<Option<SagaRecord>> {
        let request = ReqCols::new(request)?;
        self.call(move |c| {
            query_opt(
                c,
                concat!(
                    "SELECT ",
                    saga_columns!(),
                    " FROM sagas WHERE mti = ?1 AND acquirer = ?2 AND transmission = ?3 \
                     AND stan = ?4"
                ),
                params![request.0[0], request.0[1], request.0[2], request.0[3]],
                saga_row,
            )
        })
        .await
    }

    async fn allocate_stans(&self, count: u32) -> StoreResult<u32> {
        if !(1..=MAX_STAN).contains(&count) {
            return Err(invalid(format!(
                "allocate_stans: count {count} is not in 1..={MAX_STAN}"
            )));
        }
        self.call(move |c| allocate_stans(c, count)).await
    }
}

#[async_trait]
impl SafQueue for SqliteStore {
    /// One instance per file, one worker: nothing to hold entries against.
    async fn saf_due(
        &self,
        now_ms: i64,
        limit: usize,
        _hold_ms: i64,
    ) -> StoreResult<Vec<SafEntry>> {
        self.call(move |c| saf_due(c, now_ms, limit)).await
    }

    async fn saf_settle(&self, id: i64, outcome: SafOutcome) -> StoreResult<()> {
        self.call(move |c| saf_settle(c, id, &outcome)).await
    }

    async fn saf_entries(&self) -> StoreResult<Vec<SafEntry>> {
        self.call(move |c| {
            query_all(
                c,
                &format!("SELECT {SAF_COLUMNS} FROM saf ORDER BY id"),
                saf_row,
            )
        })
        .await
    }
}

impl JournalSink for SqliteStore {
    fn journal(&self, entry: JournalEntry) {
        if self.journal.send(entry).is_err() {
            tracing::error!("journal entry lost: the store's writer thread has stopped");
            return;
        }
        if !self.shared.wake_pending.swap(true, Ordering::SeqCst) {
            if let Some(commands) = &self.commands {
                // When the channel is full a batch follows anyway and drains the journal.
                let _ = commands.try_send(Msg::Wake);
            }
        }
    }
}

#[async_trait]
impl History for SqliteStore {
    async fn freezes(&self) -> StoreResult<Vec<FreezeRecord>> {
        self.call(|c| {
            query_all(
                c,
                concat!(
                    "SELECT ",
                    freeze_columns!(),
                    " FROM freezes ORDER BY created_at_ms, acquirer, transmission, stan"
                ),
                freeze_row,
            )
        })
        .await
    }

    async fn sagas(&self) -> StoreResult<Vec<SagaRecord>> {
        self.call(|c| {
            query_all(
                c,
                concat!(
                    "SELECT ",
                    saga_columns!(),
                    " FROM sagas ORDER BY created_at_ms, mti, acquirer, transmission, stan"
                ),
                saga_row,
            )
        })
        .await
    }

    async fn open_freezes_created(
        &self,
        from_ms: i64,
        before_ms: i64,
        limit: usize,
    ) -> StoreResult<Vec<FreezeRecord>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |c| {
            query_all_with(
                c,
                concat!(
                    "SELECT ",
                    freeze_columns!(),
                    " FROM freezes WHERE state = 'open' AND created_at_ms >= ?1 \
                     AND created_at_ms < ?2 ORDER BY created_at_ms LIMIT ?3"
                ),
                params![from_ms, before_ms, limit],
                freeze_row,
            )
        })
        .await
    }

    async fn journal_between(&self, from_ms: i64, to_ms: i64) -> StoreResult<Vec<JournalEntry>> {
        self.read(move |c| {
            query_all_with(
                c,
                "SELECT at_ms, direction, peer, mti, processing_code, stan, transmission, \
                 acquirer, response_code, pan_masked, amount_minor, note, raw FROM journal \
                 WHERE at_ms >= ?1 AND at_ms < ?2 ORDER BY at_ms, id",
                params![from_ms, to_ms],
                journal_row,
            )
        })
        .await
    }

    async fn sagas_between(&self, from_ms: i64, to_ms: i64) -> StoreResult<Vec<SagaRecord>> {
        self.read(move |c| {
            query_all_with(
                c,
                concat!(
                    "SELECT ",
                    saga_columns!(),
                    " FROM sagas WHERE created_at_ms >= ?1 AND created_at_ms < ?2 \
                     ORDER BY created_at_ms, mti, acquirer, transmission, stan"
                ),
                params![from_ms, to_ms],
                saga_row,
            )
        })
        .await
    }

    async fn saf_entries_since(&self, from_ms: i64) -> StoreResult<Vec<SafEntry>> {
        self.read(move |c| {
            query_all_with(
                c,
                &format!("SELECT {SAF_COLUMNS} FROM saf WHERE created_at_ms >= ?1 ORDER BY id"),
                params![from_ms],
                saf_row,
            )
        })
        .await
    }
}

//! The embedded durable default behind [`Store`]: one SQLite file in WAL mode.
//!
//! # Group commit
//!
//! One dedicated thread (`switchboard-store`) owns the only connection. Every
//! call is a command sent to it over a bounded channel with a oneshot for the
//! reply. The thread blocks for the first command, drains whatever else is
//! queued (up to [`SqliteOptions::max_batch`]), and runs them all inside ONE
//! transaction, where a failing command rolls back alone (the batch runs
//! without savepoints first and, when a command fails, is rolled back and
//! runs again with a `SAVEPOINT` per command: `writer.rs`). It then commits
//! once and only then sends the replies: a call
//! that changes state returns `Ok` only after its transaction is durable
//! (`synchronous=FULL` by default), and concurrent calls share one fsync.
//! Reads go through the same thread, so they always see a consistent state.
//! While commands come at [`SqliteOptions::commit_interval_above`] a second
//! or more, a batch begins no sooner than [`SqliteOptions::commit_interval`]
//! after the one before began: fewer, larger commits under load, for up to
//! that much more latency a command. With
//! [`SqliteOptions::commit_delay`] a batch of a few commands, while receive
//! sagas are in flight (each soon sends its end), waits that long for more
//! to share its commit.
//!
//! Journal entries ([`JournalSink::journal`] is not async) go over a channel of their
//! own, already encoded as a pack holds them (on the caller's task, straight
//! from the message for [`JournalSink::journal_message`]: one buffer per
//! entry, not a string per column), which every batch drains first, in
//! order; a wake-up message on the command channel makes sure a batch
//! follows: with the next command when one comes within
//! [`SqliteOptions::journal_wait`], else with the entries alone. Entries whose write fails
//! are kept and retried with the next commit, never dropped; while
//! [`SqliteOptions::journal_capacity`] of them are unwritten, new work waits
//! in [`JournalSink::journal_room`]. Dropping the store (or
//! [`SqliteStore::close`]) writes whatever is pending and joins the thread.
//!
//! # Invariants
//!
//! - Amounts are `INTEGER` minor units (i64) in `STRICT` tables; a `u64` above
//!   `i64::MAX` is refused, never wrapped. A `CHECK` makes
//!   `received_minor + reserved_minor <= amount_minor` hold in the file itself,
//!   checked whenever a freeze's totals are written onto its row (when the
//!   sagas' log is pruned or folded: `freeze_totals.rs`); in memory the same
//!   rule is `FreezeRecord::reserve`'s, and a settled reservation only
//!   moves an amount from reserved to received or releases it.
//! - Stored values are parsed, never trusted: anything unreadable is
//!   [`StoreError::Corrupt`], never a panic.
//! - If the thread is gone, every call returns [`StoreError::Unavailable`].
//! - The schema version is `PRAGMA user_version`; [`MIGRATIONS`] lists the

use std::cell::Cell;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::thread::JoinHandle;

use async_trait::async_trait;
use rusqlite::{params, Connection, Row};
use tokio::sync::{mpsc, oneshot};

use iso8583::spec::Spec;

use super::columns::*;
use super::{
    Close, Decisions, FollowUp, FreezeRecord, FreezeState, History, InsertFreeze, JournalEntry,
    JournalSink, Leases, NewFreeze, NewReceive, NewSafEntry, ReceiveOutcome, Recorded, RequestKey,
    Reserve, SafEntry, SafOutcome, SafQueue, SagaRecord, SagaState, Settled, Store, StoreError,
    StoreResult, StoredAnswer, Unfinished,
};
use crate::dialect::FreezeKey;
use crate::store::journal::{with_message_columns, JournalBacklog};
use crate::store::journal_slice::{JournalColumns, JournalSlice, JournalSliceBuilder, RawMessages};
use crate::store::Direction;

mod audit;
mod byte_reader;
mod checkpointer;
mod command_rate;
mod commands;
mod decision_log;
mod freeze_totals;
mod journal;
mod journal_pack;
pub mod lock;
mod maintenance;
mod risk;
mod risk_codec;
mod risk_log;
mod rows;
mod saga_book;
mod saga_packs;
mod schema;
mod traits;
mod writer;

use self::checkpointer::Checkpointer;
pub use self::decision_log::log_path;
use self::decision_log::{DecisionLog, LogIds, Logged};
pub use self::journal::write_journal;
use self::journal_pack::PackedEntry;
use self::risk_codec::RiskEvent;
pub use self::risk_log::CheckpointOptions;
use self::risk_log::RiskLog;
use self::saga_book::SagaBook;
pub use self::saga_packs::{write_ended_sagas, EndedSaga};
pub use self::schema::MIGRATIONS;
use self::{commands::*, rows::*, schema::*, writer::*};

/// Capacity of the command channel: callers wait (asynchronously) when it is full.
pub const COMMAND_CHANNEL_CAPACITY: usize = 4096;

/// How long a write waits for a lock held by another process using the file.
const BUSY_TIMEOUT_MS: u64 = 5_000;

/// Tuning of a [`SqliteStore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SqliteOptions {
    /// `synchronous=FULL` (fsync at every commit: survives power loss). When
    /// false, `synchronous=NORMAL`: survives a process crash, may lose the last
    /// commits on power loss.
    pub synchronous_full: bool,
    /// Most commands run in one transaction.
    pub max_batch: usize,
    /// Unwritten journal entries at which new work waits for the journal.
    pub journal_capacity: usize,
    /// When the risk counters' snapshot rows are rewritten from their log.
    pub risk_checkpoint: CheckpointOptions,
    /// Most risk counters held in memory ([`super::risk_book::CAPACITY`]).
    pub risk_book_capacity: usize,
    /// Least time from one commit's start to the next's while the store is
    /// busy ([`SqliteOptions::commit_interval_above`]; `[store]
    /// commit_interval_ms` or `commit_interval_us`): a batch that would
    /// begin sooner waits for the rest of it, gathering what arrives
    /// meanwhile. Zero begins each batch at once; default
    /// [`DEFAULT_COMMIT_INTERVAL`]. Each commit's cost (its sync, the
    /// writer's wake-ups) is shared by more commands, for up to this much
    /// more latency a command.
    pub commit_interval: std::time::Duration,
    /// Commands a second from which the commit interval applies (`[store]
    /// commit_interval_above`; a receive makes two): measured over windows
    /// of 100 ms (`command_rate.rs`). Below it batches begin at once, for
    /// the least latency while the writer has time to spare. Zero: the
    /// interval always applies. Default [`DEFAULT_COMMIT_INTERVAL_ABOVE`].
    pub commit_interval_above: u64,
    /// How long journal entries that woke the writer with no command queued
    /// wait for a command to share its commit before they are committed
    /// alone. Under load a command follows within microseconds, and a
    /// commit of entries alone would cost a whole commit (at 10,000
    /// receives/s a quarter of the commits or more were of entries
    /// alone); a command never waits for it. The timer rounds up to the
    /// next millisecond. Zero commits them at once.
    pub journal_wait: std::time::Duration,
    /// How long a batch of fewer than 4 commands, one at least answered
    /// after the commit, waits for more before it runs, when the writer's
    /// book holds at least 2 receive sagas not ended (`[store]
    /// commit_delay_us`; PostgreSQL's `commit_delay` and `commit_siblings`
    /// are the same idea). Sagas in flight each send their end soon, so
    /// under load a small batch is soon joined, and a commit's fsync and
    /// bookkeeping are paid whatever it holds: at 10,000 receives/s 11–20 %
    /// fewer commits. With fewer sagas nothing waits, nor does a batch the
    /// commit interval has held already. Zero turns it off; default
    /// [`DEFAULT_COMMIT_DELAY`]. The writer sleeps this long: the
    /// configuration allows at most 10 ms (`MAX_COMMIT_DELAY_US`).
    pub commit_delay: std::time::Duration,
    /// Whether batches of receive decisions are made durable in the
    /// decision log (`<file>-decisions`: one write and one `fdatasync` a
    /// batch) rather than by a SQLite commit, their rows inserted into the
    /// database later, together (`[store] decision_log`; default on). Only
    /// a store opened with its lock ([`SqliteStore::open_locked_with`]) and
    /// `synchronous_full` has the log; every opening with the lock reads
    /// back a log left by an earlier run, whatever this says. Off, every
    /// batch commits in SQLite.
    pub decision_log: bool,
    /// How long the writer, idle, keeps the decision log's records before
    /// inserting them into the database ([`DEFAULT_DECISION_LOG_IDLE`]).
    pub decision_log_idle: std::time::Duration,
}

/// [`SqliteOptions::decision_log_idle`]'s default: a reader of the file
/// beside a quiet switch sees its decisions within about this long.
pub const DEFAULT_DECISION_LOG_IDLE: std::time::Duration = std::time::Duration::from_millis(100);

/// [`SqliteOptions::commit_interval`]'s default. Each batch's sync and
/// wake-ups cost the same whatever it holds, so at 10,000 receives/s on a
/// 2-core machine 1.5 ms rather than 1 ms took some 7 % off the switch's
/// CPU a receive, for about 1 ms more p50 and p99 (7.3 ms), well inside a
/// 10 ms budget ("The commit interval at 1.5 ms" in benches/RESULTS.md).
pub const DEFAULT_COMMIT_INTERVAL: std::time::Duration = std::time::Duration::from_micros(1500);

/// [`SqliteOptions::commit_interval_above`]'s default: 5,000 receives a
/// second. Below it the writer has time to spare and a batch begins at once;
/// from there on each commit's sync and wake-ups are worth sharing. On a
/// 2-core machine the interval took some 12 % off the switch's CPU a receive
/// at 10,000/s for about 0.5 ms more p99 ("The commit interval from 5,000
/// receives a second" in benches/RESULTS.md), and 2–8 % at 20,000/s ("The
/// commit interval while busy").
pub const DEFAULT_COMMIT_INTERVAL_ABOVE: u64 = 10_000;

/// [`SqliteOptions::commit_delay`]'s default: a few commands' arrivals at
/// 10,000 receives/s, a fraction of a commit's own fsync.
pub const DEFAULT_COMMIT_DELAY: std::time::Duration = std::time::Duration::from_micros(200);

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            synchronous_full: true,
            max_batch: 512,
            journal_capacity: 16_384,
            risk_checkpoint: CheckpointOptions::default(),
            risk_book_capacity: super::risk_book::CAPACITY,
            commit_interval: DEFAULT_COMMIT_INTERVAL,
            commit_interval_above: DEFAULT_COMMIT_INTERVAL_ABOVE,
            journal_wait: std::time::Duration::from_millis(5),
            commit_delay: DEFAULT_COMMIT_DELAY,
            decision_log: true,
            decision_log_idle: DEFAULT_DECISION_LOG_IDLE,
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
    /// Batches rolled back after a command failed in a run without
    /// savepoints, and run again with a savepoint per command.
    pub reruns: u64,
    /// Batches that waited [`SqliteOptions::commit_delay`] for company.
    pub delayed: u64,
    /// Batches held by [`SqliteOptions::commit_interval`] (the store busy:
    /// [`SqliteOptions::commit_interval_above`]).
    pub spaced: u64,
    /// Of the commits, those whose decisions were made durable by a record
    /// of the decision log ([`SqliteOptions::decision_log`]) rather than by
    /// SQLite.
    pub logged: u64,
}

/// The SQLite implementation of [`Store`]. See the module documentation.
pub struct SqliteStore {
    /// `None` only once closing has begun.
    commands: Option<mpsc::Sender<Msg>>,
    journal: std_mpsc::Sender<PackedEntry>,
    shared: Arc<Shared>,
    /// To read field 39 of answers, on the caller's task rather than the writer's.
    spec: Arc<Spec>,
    thread: Option<JoinHandle<Result<(), String>>>,
    /// The file, for the read-only connections of long reads (clearing), which
    /// must not hold the writer's transaction open.
    path: std::path::PathBuf,
    /// Held by a process that must have the file to itself ([`lock`]);
    /// dropped after the writer thread has stopped.
    lock: Option<lock::StoreLock>,
    /// The risk counters, judged in memory ([`super::risk_book`]).
    risk_book: tokio::sync::Mutex<super::risk_book::CounterBook>,
    /// Their events, a request's at a time, logged at the start of the
    /// writer's next batch (as journal entries are written): before any
    /// command sent after them, in one row a batch. Bounded by the requests
    /// in flight.
    risk_events: std_mpsc::Sender<Vec<RiskEvent>>,
    /// The log and snapshots of the counters ([`risk_log`]): used on the
    /// writer thread only (by the writer and by the commands it runs), so
    /// never waited for.
    risk_log: Arc<std::sync::Mutex<RiskLog>>,
    /// The receive sagas not written yet ([`saga_book`]):
    /// used on the writer thread only, so never waited for.
    sagas: Arc<std::sync::Mutex<SagaBook>>,
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
    reruns: AtomicU64,
    delayed: AtomicU64,
    spaced: AtomicU64,
    logged: AtomicU64,
    /// A wake-up for journal entries is queued (or a batch is about to drain them).
    wake_pending: AtomicBool,
    /// Journal entries sent to the writer and not yet committed.
    journal_backlog: JournalBacklog,
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the store's writer thread has stopped".into())
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

/// Creates the database file readable by its owner alone (0600) when it does
/// not exist yet: SQLite gives its `-wal` and `-shm` files the database
/// file's permissions, so they are private too. An existing file keeps the
/// permissions it has.
fn create_private(path: &Path) -> StoreResult<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        // An in-memory or special path SQLite understands and we do not.
        Err(_) if path.as_os_str() == ":memory:" => Ok(()),
        Err(e) => Err(StoreError::Unavailable(format!(
            "cannot create {}: {e}",
            path.display()
        ))),
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path` with default options.
    pub fn open(path: &Path) -> StoreResult<SqliteStore> {
        SqliteStore::open_with(path, SqliteOptions::default())
    }

    /// Opens (creating if needed) the store at `path`: WAL mode, the schema
    /// migrated to this build's version, the writer thread started. Without
    /// the store's lock: the decision log ([`SqliteOptions::decision_log`])
    /// is neither read back nor written, as it belongs to the process that
    /// holds the lock (a running `serve`); the database is read as of that
    /// process's last insertion of the log's records.
    pub fn open_with(path: &Path, options: SqliteOptions) -> StoreResult<SqliteStore> {
        SqliteStore::open_as(path, options, None)
    }

    fn open_as(
        path: &Path,
        options: SqliteOptions,
        lock: Option<lock::StoreLock>,
    ) -> StoreResult<SqliteStore> {
        create_private(path)?;
        let conn = Connection::open(path).map_err(db)?;
        configure(&conn, options)?;
        migrate(&conn)?;
        // With the lock: what a run that stopped without closing left in the
        // decision log goes into the database before anything reads it, and
        // the log is used when asked for. Its records are durable only once
        // the commit that inserts them is synced, so not with `NORMAL`. (A
        // database in memory has nothing durable to log.)
        let log = match &lock {
            Some(_) if path.as_os_str() != ":memory:" => DecisionLog::open(path, &conn)?
                .filter(|_| options.decision_log && options.synchronous_full),
            _ => None,
        };
        let risk_log = Arc::new(std::sync::Mutex::new(RiskLog::open(
            &conn,
            options.risk_checkpoint,
        )?));
        // What a run that stopped without closing left in the sagas' log.
        let mut book = SagaBook::default();
        saga_book::fold_log(&conn, &mut book)?;
        let sagas = Arc::new(std::sync::Mutex::new(book));

        let (command_tx, command_rx) = mpsc::channel(COMMAND_CHANNEL_CAPACITY);
        let (journal_tx, journal_rx) = std_mpsc::channel();
        let (risk_tx, risk_rx) = std_mpsc::channel();
        let shared = Arc::new(Shared {
            commits: AtomicU64::new(0),
            commands: AtomicU64::new(0),
            reruns: AtomicU64::new(0),
            delayed: AtomicU64::new(0),
            spaced: AtomicU64::new(0),
            logged: AtomicU64::new(0),
            wake_pending: AtomicBool::new(false),
            journal_backlog: JournalBacklog::new(options.journal_capacity),
        });
        let writer = Writer {
            conn,
            journal: journal_rx,
            pending_journal: Vec::new(),
            risk_events: risk_rx,
            pending_risk_events: Vec::new(),
            risk_log: risk_log.clone(),
            sagas: sagas.clone(),
            shared: shared.clone(),
            checkpointer: Checkpointer::start(path)
                .map_err(|e| {
                    tracing::warn!("the store checkpoints only in the writer's commits: {e}")
                })
                .ok(),
            log,
            spaced_metric: crate::metrics::metrics().spaced_counter("sqlite"),
        };
        let max_batch = options.max_batch.max(1);
        let thread = std::thread::Builder::new()
            .name("switchboard-store".into())
            .spawn(move || {
                writer.run(
                    command_rx,
                    max_batch,
                    writer::Pacing {
                        commit_interval: options.commit_interval,
                        commit_interval_above: options.commit_interval_above,
                        journal_wait: options.journal_wait,
                        commit_delay: options.commit_delay,
                        log_idle: options.decision_log_idle,
                    },
                )
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer thread: {e}")))?;
        Ok(SqliteStore {
            commands: Some(command_tx),
            journal: journal_tx,
            shared,
            spec: Arc::new(Spec::switchboard()),
            thread: Some(thread),
            path: path.to_path_buf(),
            risk_book: tokio::sync::Mutex::new(super::risk_book::CounterBook::with_capacity(
                options.risk_book_capacity,
            )),
            risk_events: risk_tx,
            risk_log,
            sagas,
            lock,
        })
    }

    /// Opens the store at `path` for `purpose` ("serve", "recover", ...)
    /// holding its lock, so no other such process works on it meanwhile; an
    /// error ([`StoreError::InUse`]) names the process that holds it.
    pub fn open_locked(path: &Path, purpose: &str) -> StoreResult<SqliteStore> {
        SqliteStore::open_locked_with(path, purpose, SqliteOptions::default())
    }

    /// [`SqliteStore::open_locked`] with `options`.
    pub fn open_locked_with(
        path: &Path,
        purpose: &str,
        options: SqliteOptions,
    ) -> StoreResult<SqliteStore> {
        let lock = lock::StoreLock::acquire(path, purpose)?;
        SqliteStore::open_as(path, options, Some(lock))
    }

    /// Commits and commands so far.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            commits: self.shared.commits.load(Ordering::Relaxed),
            commands: self.shared.commands.load(Ordering::Relaxed),
            reruns: self.shared.reruns.load(Ordering::Relaxed),
            delayed: self.shared.delayed.load(Ordering::Relaxed),
            spaced: self.shared.spaced.load(Ordering::Relaxed),
            logged: self.shared.logged.load(Ordering::Relaxed),
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
        // The lock goes with the join, not with `self`: were this future
        // dropped while it waits, `self` would drop its lock at once while
        // the writer still works on the file.
        let lock = self.lock.take();
        let joined = tokio::task::spawn_blocking(move || {
            let joined = thread.join();
            drop(lock);
            joined
        });
        match joined.await {
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

    /// Runs `f` in the writer's next batch and waits for the batch's commit.
    /// `f` may run twice (see `writer.rs`): the first run's writes are then
    /// rolled back, so it must read and write only through `c`.
    async fn call<T, F>(&self, f: F) -> StoreResult<T>
    where
        F: Fn(&Connection) -> StoreResult<T> + Send + 'static,
        T: Send + 'static,
    {
        self.call_as(f, true).await
    }

    /// [`SqliteStore::call`] for an `f` that also changes state outside the
    /// database (which a rollback would not undo): it runs exactly once.
    async fn call_once<T, F>(&self, f: F) -> StoreResult<T>
    where
        F: Fn(&Connection) -> StoreResult<T> + Send + 'static,
        T: Send + 'static,
    {
        self.call_as(f, false).await
    }

    /// [`SqliteStore::call`] for an `f` that changes only the sagas' book
    /// and reads neither `saga_log` nor the journal ([`Command::log_safe`]):
    /// its batch may be made durable by the decision log.
    async fn call_log_safe<T, F>(&self, f: F) -> StoreResult<T>
    where
        F: Fn(&Connection) -> StoreResult<T> + Send + 'static,
        T: Send + 'static,
    {
        self.send_call(f, true, true).await
    }

    async fn call_as<T, F>(&self, f: F, repeatable: bool) -> StoreResult<T>
    where
        F: Fn(&Connection) -> StoreResult<T> + Send + 'static,
        T: Send + 'static,
    {
        self.send_call(f, repeatable, false).await
    }

    async fn send_call<T, F>(&self, f: F, repeatable: bool, log_safe: bool) -> StoreResult<T>
    where
        F: Fn(&Connection) -> StoreResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        self.send(Box::new(Call {
            f,
            reply,
            repeatable,
            bare: None,
            log_safe,
        }))
        .await?;
        rx.await.map_err(|_| stopped())?
    }

    /// Runs the read `f` in the writer's next batch: nothing found is
    /// answered as soon as it has run, something found once the batch has
    /// committed (see [`Lookup`]).
    async fn lookup<T, F>(&self, f: F) -> StoreResult<Option<T>>
    where
        F: Fn(&Connection) -> StoreResult<Option<T>> + Send + 'static,
        T: Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        self.send(Box::new(Lookup {
            f,
            reply: Some(reply),
            found: None,
        }))
        .await?;
        rx.await.map_err(|_| stopped())?
    }

    /// Hands a command to the writer thread (waiting for room in its queue).
    async fn send(&self, command: Box<dyn Command>) -> StoreResult<()> {
        let commands = self.commands.as_ref().ok_or_else(stopped)?;
        commands
            .send(Msg::Command(command))
            .await
            .map_err(|_| stopped())
    }

    /// Queues `f` to run in the writer's next batch, behind everything queued
    /// before; the receiver has its result as soon as it has run, without
    /// waiting for the batch's commit.
    async fn queue_early<T, F>(&self, f: F) -> StoreResult<oneshot::Receiver<StoreResult<T>>>
    where
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        self.send(Box::new(Early { f, reply })).await?;
        Ok(rx)
    }

    /// Writes the rows of the sagas held in memory ([`saga_book`]), for a
    /// read of `sagas` on a connection of its own.
    async fn write_sagas_in_flight(&self) -> StoreResult<()> {
        let sagas = self.sagas.clone();
        self.call(move |c| saga_book::materialize_all(c, &mut saga_book::lock(&sagas)))
            .await
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

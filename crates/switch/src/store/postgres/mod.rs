//! [`Store`] on PostgreSQL: several switch instances sharing one database.
//!
//! # Where correctness comes from
//!
//! Only from the database, never from a lock in this process: every decision
//! is ONE SQL statement whose `WHERE` clause is the guard, and unique keys
//! make the second of two racing inserts fail.
//!
//! - `reserve` is one conditional update, `UPDATE freezes SET reserved_minor
//!   = reserved_minor + amount WHERE <key> AND state = 'open' AND amount <=
//!   amount_minor - received_minor - reserved_minor`, with the saga `INSERT`
//!   chained to its `RETURNING` in the same statement (a data-modifying CTE);
//!   a batch's reservations of different freezes share the statement. The saga's
//!   primary key is the request key: two instances reserving for the same
//!   request cannot both insert, and the loser's whole transaction rolls back.
//! - closing a freeze, finishing a freeze and the end of a saga are
//!   conditional updates of the same kind; answers are `INSERT ... ON CONFLICT
//!   DO NOTHING` (the first answer stays).
//! - `allocate_stans` is `UPDATE stan_counter ... RETURNING`: the row lock
//!   serializes allocators, so two instances never get overlapping blocks.
//! - `CHECK` constraints (`reserved_minor >= 0`, `received_minor <=
//!   amount_minor - reserved_minor`) hold the money invariants in the
//!   database itself. A saga is inserted only from the freeze row its
//!   statement just updated, and ending it fails the whole statement if that
//!   freeze is gone; there is no foreign key (a lookup per insert here, and a
//!   cross-partition one once freezes and sagas are sharded).
//!
//! Isolation is READ COMMITTED, on purpose: a single `UPDATE` re-evaluates its
//! `WHERE` clause against the newest committed version of a row it had to wait
//! for, so a guard in one statement is race-free without SERIALIZABLE and its
//! retries. When a statement's own snapshot and the row it then found disagree
//! (it classified a freeze as open with room, yet its update matched nothing),
//! the statement wrote nothing and the command simply runs again. Databases
//! that run everything SERIALIZABLE (CockroachDB) answer conflicts with SQLSTATE
//! 40001, which is retried like a deadlock (40P01). The SQL uses no advisory
//! locks, no LISTEN/NOTIFY, no PL/pgSQL. One thing is PostgreSQL's own: the
//! planner settings the set statements run under (`SQL_PLAN_BY_KEYS`), which
//! another PostgreSQL-wire database may not know; only PostgreSQL is tested.
//!
//! # Group commit and pipelining
//!
//! Writes go to one of a few *lanes* (tasks, each holding one connection),
//! chosen by the freeze the command touches. A lane takes every command queued
//! (up to [`PostgresOptions::max_batch`]), sorts them by freeze key (so two
//! instances lock rows in the same order and do not deadlock; the freezes
//! that the set statements below update are locked in key order by one
//! statement before them), and sends
//! `BEGIN`, the batch's statements and `COMMIT` in one pipelined write: one
//! round trip and one commit (one WAL flush) for the whole batch. The
//! reservations of a batch, and the ends of its sagas, run as *set statements*
//! over arrays of their columns, a few per batch rather than one per command
//! (`sets.rs`: a statement's fixed cost in the server was most of a
//! receive's); the other commands run a statement each. Because every
//! command's share of a statement writes nothing when it fails a guard,
//! results are read after the commit. If a statement errors, the transaction is
//! rolled back and its commands run again apart from the others (a set
//! statement's in halves, until the failing one is alone), so only the
//! failing one gets the error. Reads go straight to pooled
//! connections, one round trip each.
//!
//! A receive costs three calls: `answer` (a read), `reserve` and
//! `settle_receive` (two batched writes); its six journal rows go in multi-row
//! inserts from the journal task. See [`PgStats`] for counters.
//!
//! # Journal
//!
//! [`JournalSink::journal`] never blocks: entries go into a buffer that one task
//! writes in order, by binary `COPY` or multi-row `INSERT ... SELECT FROM
//! unnest(...)`. Entries that cannot be written stay buffered and are
//! retried; none is ever dropped. When [`PostgresOptions::journal_capacity`]
//! entries are unwritten, [`JournalSink::journal_room`] makes new work wait
//! until the task has written some.
//!
//! # Losing the database
//!
//! A call that cannot reach the database returns [`StoreError::Unavailable`]
//! (the switch answers 96). A lane whose connection broke takes a new one from
//! the pool (deadpool) for its next batch. Every command is inside a
//! transaction, so nothing is ever half-written; when the connection breaks
//! after `COMMIT` was sent, the callers get `Unavailable` though the batch may
//! have committed (the switch then treats the receive as in progress, and
//! recovery settles it).

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Hook, Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use futures::future::{maybe_done, MaybeDone};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Row;
use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_util::sync::CancellationToken;

use iso8583::spec::Spec;

use super::columns::*;
use super::{
    Close, Decisions, ExpiredLease, FollowUp, FreezeRecord, FreezeState, History, InsertFreeze,
    JournalEntry, JournalSink, Lease, Leases, NewFreeze, NewReceive, NewSafEntry, ReceiveOutcome,
    Recorded, RequestKey, Reserve, SafEntry, SafOutcome, SafQueue, SagaRecord, SagaState, Settled,
    Store, StoreError, StoreResult, StoredAnswer, Unfinished,
};
use crate::dialect::FreezeKey;
use crate::store::journal::JournalBacklog;

/// Tuning of a [`PostgresStore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PostgresOptions {
    /// Write lanes: connections that each run one batch at a time.
    pub lanes: usize,
    /// Most commands in one transaction.
    pub max_batch: usize,
    /// Connections in the pool (lanes, the journal task and reads share it).
    pub pool_size: usize,
    /// Unwritten journal entries at which new work waits for the journal
    /// (the buffer exceeds it only by what work already admitted journals).
    pub journal_capacity: usize,
    /// Journal entries per insert.
    pub journal_batch: usize,
    /// How long a batch, a read or a connection attempt may take.
    pub timeout: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            lanes: 4,
            max_batch: 256,
            pool_size: 16,
            journal_capacity: 16_384,
            journal_batch: 2048,
            timeout: Duration::from_secs(5),
        }
    }
}

/// Counters since the store was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PgStats {
    /// Write commands run.
    pub commands: u64,
    /// Statements the lanes sent for them (a set statement runs the
    /// reservations, or the saga ends, of many commands).
    pub statements: u64,
    /// Transactions committed by the lanes (each holds a batch of commands).
    pub batches: u64,
    /// Round trips: one per batch attempt, per read, per journal insert, per
    /// STAN allocation.
    pub round_trips: u64,
    /// Commits that wrote: batches, journal inserts, STAN allocations.
    pub commits: u64,
    /// Batches run again after a serialization failure or deadlock.
    pub conflicts: u64,
    /// Commands run again because their statement saw a row change under it.
    pub reruns: u64,
    /// Batches split into single commands after a statement failed.
    pub splits: u64,
    pub journal_written: u64,
}

#[derive(Default)]
struct Counters {
    commands: AtomicU64,
    statements: AtomicU64,
    batches: AtomicU64,
    round_trips: AtomicU64,
    commits: AtomicU64,
    conflicts: AtomicU64,
    reruns: AtomicU64,
    splits: AtomicU64,
    journal_written: AtomicU64,
}

fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// The PostgreSQL implementation of [`Store`]. See the module documentation.
pub struct PostgresStore {
    inner: Arc<Inner>,
    lanes: Vec<mpsc::Sender<Box<dyn Command>>>,
    /// Answer lookups, gathered into one query per round trip.
    lookups: mpsc::Sender<Lookup>,
    /// Which freeze a saga of this process draws on, so that its later steps go
    /// to the same lane and sort with the freeze. A hint only: a missing entry
    /// costs a lane choice, never correctness.
    hints: Mutex<HashMap<RequestKey, FreezeKey>>,
    spec: Arc<Spec>,
    /// Cancelled on drop: the journal task writes what it holds and stops.
    stop: CancellationToken,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

struct Inner {
    pool: Pool,
    options: PostgresOptions,
    counters: Counters,
    journal: Mutex<VecDeque<JournalEntry>>,
    journal_wake: Notify,
    /// The entries in `journal` or being written, against the capacity.
    journal_backlog: JournalBacklog,
    /// Entries accepted by [`JournalSink::journal`] (written or dropped later).
    journal_accepted: AtomicU64,
    /// Entries written or dropped so far; `flush` and the lanes wait on it.
    journal_done: watch::Sender<u64>,
    /// Whether the journal's last write failed (the database is away): the
    /// lanes do not wait for it then.
    journal_failing: std::sync::atomic::AtomicBool,
    /// Whether the journal is written with binary COPY (else INSERT).
    journal_copy: std::sync::atomic::AtomicBool,
}

#[macro_use]
mod rows;
mod answers;
mod audit;
mod conninfo;
mod decode;
mod journal;
mod lanes;
mod maintenance;
mod open;
mod risk;
mod schema;
mod sets;
mod sql;
mod tls;
mod traits;

use self::conninfo::SslMode;
pub use self::schema::{migrate, MIGRATIONS};
use self::{
    answers::*, decode::*, journal::*, lanes::*, open::*, rows::*, schema::*, sets::*, sql::*,
};

// ---------------------------------------------------------------------------
// Errors

fn unavailable(why: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(why.to_string())
}

fn stopped() -> StoreError {
    unavailable("the PostgreSQL store has stopped")
}

/// Maps a database error: a stored state that breaks a constraint is
/// `Corrupt`, everything else (connection, server, timeouts) `Unavailable`.
fn db(e: tokio_postgres::Error) -> StoreError {
    match e.code() {
        Some(c) if *c == SqlState::CHECK_VIOLATION || *c == SqlState::FOREIGN_KEY_VIOLATION => {
            corrupt(describe(&e))
        }
        // A statement's own guard (see SQL_SETTLE) failing on purpose.
        Some(c)
            if *c == SqlState::INVALID_TEXT_REPRESENTATION
                && e.as_db_error()
                    .is_some_and(|d| d.message().contains("switchboard:")) =>
        {
            corrupt(describe(&e))
        }
        _ => unavailable(describe(&e)),
    }
}

/// The server's message when there is one (tokio-postgres' `Display` says only "db error").
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{}: {} ({})", d.severity(), d.message(), d.code().code()),
        // tokio-postgres's own text names only the kind ("error performing
        // TLS handshake"); the why is in its causes.
        None => {
            let mut text = e.to_string();
            let mut cause = std::error::Error::source(e);
            while let Some(c) = cause {
                text.push_str(": ");
                text.push_str(&tls::cause_text(c));
                cause = c.source();
            }
            text
        }
    }
}

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => {
            unavailable(format!("cannot connect to PostgreSQL: {}", describe(&e)))
        }
        e => unavailable(format!("cannot connect to PostgreSQL: {e}")),
    }
}

/// Whether a failed batch can simply run again: a serialization failure or a
/// deadlock rolled it back, and nothing of it took effect.
fn is_conflict(e: &tokio_postgres::Error) -> bool {
    matches!(e.code(), Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE
        || *c == SqlState::T_R_DEADLOCK_DETECTED)
}

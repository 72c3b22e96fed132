//! [`Store`] on PostgreSQL: several switch instances sharing one database.
//!
//! # Where correctness comes from
//!
//! Only from the database, never from a lock in this process: every decision
//! is ONE SQL statement whose `WHERE` clause is the guard, and unique keys
//! make the second of two racing inserts fail.
//!
//! - `reserve` is one conditional update, `UPDATE freezes SET reserved_minor
//!   = reserved_minor + $n WHERE <key> AND state = 'open' AND $n <=
//!   amount_minor - received_minor - reserved_minor`, with the saga `INSERT`
//!   chained to its `RETURNING` in the same statement (a data-modifying CTE). The saga's
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
//! locks, no LISTEN/NOTIFY, no PL/pgSQL: it stays within what PostgreSQL-wire
//! distributed databases accept.
//!
//! # Group commit and pipelining
//!
//! Writes go to one of a few *lanes* (tasks, each holding one connection),
//! chosen by the freeze the command touches. A lane takes every command queued
//! (up to [`PostgresOptions::max_batch`]), sorts them by freeze key (so two
//! instances lock rows in the same order and do not deadlock), and sends
//! `BEGIN`, one statement per command and `COMMIT` in one pipelined write: one
//! round trip and one commit (one WAL flush) for the whole batch. Because every
//! command is a single statement that writes nothing when it fails a guard,
//! results are read after the commit. If a statement errors, the transaction is
//! rolled back and its commands run again one by one, so only the failing one
//! gets the error. Reads go straight to pooled connections, one round trip each.
//!
//! A receive costs three calls: `answer` (a read), `reserve` and
//! `settle_receive` (two batched writes); its six journal rows go in multi-row
//! inserts from the journal task. See [`PgStats`] for counters.
//!
//! # Journal
//!
//! [`Store::journal`] never blocks: entries go into a bounded buffer that one
//! task writes in order, in multi-row `INSERT ... SELECT FROM unnest(...)`
//! statements. Entries that cannot be written stay buffered and are retried;
//! only when the buffer is full are new entries dropped, each drop logged as
//! an error and counted in [`PgStats::journal_dropped`].
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
use bytes::Bytes;
use deadpool_postgres::{Hook, Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use futures::future::{maybe_done, MaybeDone};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{NoTls, Row};
use tokio_util::sync::CancellationToken;

use iso8583::fields::num;
use iso8583::spec::Spec;

use super::{
    Close, Decisions, Direction, ExpiredLease, FollowUp, FreezeRecord, FreezeState, History,
    InsertFreeze, JournalEntry, JournalSink, Lease, Leases, NewFreeze, NewReceive, NewSafEntry,
    ReceiveOutcome, RequestKey, Reserve, SafEntry, SafKind, SafOutcome, SafQueue, SafState,
    SagaRecord, SagaState, SentMessage, Settled, Store, StoreError, StoreResult, StoredAnswer,
    Unfinished,
};
use crate::dialect::{FreezeKey, InstitutionId};

/// Highest STAN; STANs run 1..=MAX_STAN.
const MAX_STAN: u32 = 999_999;

/// Schema steps, applied in order at start (and by `switchboard migrate`);
/// `schema_migrations` records which versions a database has. Append new
/// steps; never edit a published one.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "freezes, sagas, answers, journal, STAN counter",
        r#"
    -- Updated rows get their new version on the same page when there is room
    -- (fillfactor): a HOT update, no index written.
    CREATE TABLE freezes (
        acquirer       text    NOT NULL,
        transmission   text    NOT NULL,
        stan           text    NOT NULL,
        payer_pan      text    NOT NULL,
        payer_bank     text    NOT NULL,
        amount_minor   bigint  NOT NULL CHECK (amount_minor >= 0),
        currency       integer NOT NULL CHECK (currency BETWEEN 0 AND 999),
        received_minor bigint  NOT NULL DEFAULT 0 CHECK (received_minor >= 0),
        reserved_minor bigint  NOT NULL DEFAULT 0 CHECK (reserved_minor >= 0),
        state          text    NOT NULL
                       CHECK (state IN ('pending', 'open', 'declined', 'closed')),
        created_at_ms  bigint  NOT NULL,
        request_digest bytea   NOT NULL,
        PRIMARY KEY (acquirer, transmission, stan),
        CONSTRAINT freezes_not_overdrawn
            CHECK (received_minor <= amount_minor - reserved_minor)
    ) WITH (fillfactor = 50);

    CREATE TABLE sagas (
        mti                   text   NOT NULL,
        acquirer              text   NOT NULL,
        transmission          text   NOT NULL,
        stan                  text   NOT NULL,
        freeze_acquirer       text   NOT NULL,
        freeze_transmission   text   NOT NULL,
        freeze_stan           text   NOT NULL,
        amount_minor          bigint NOT NULL CHECK (amount_minor >= 0),
        receiver_pan          text   NOT NULL,
        receiver_bank         text   NOT NULL,
        state                 text   NOT NULL CHECK (state IN ('reserved', 'debiting',
                              'crediting', 'reversing_debit', 'approved', 'failed', 'in_doubt')),
        debit_stan            text,
        debit_transmission    text,
        credit_stan           text,
        credit_transmission   text,
        reversal_stan         text,
        reversal_transmission text,
        response_code         text,
        request_digest        bytea  NOT NULL,
        created_at_ms         bigint NOT NULL,
        -- The answer given to the wallet (kept here rather than in answers:
        -- one row written when a receive ends, not two).
        answer_digest         bytea,
        response              bytea,
        PRIMARY KEY (mti, acquirer, transmission, stan),
        CHECK ((answer_digest IS NULL) = (response IS NULL))
    ) WITH (fillfactor = 70);


    CREATE TABLE answers (
        mti            text  NOT NULL,
        acquirer       text  NOT NULL,
        transmission   text  NOT NULL,
        stan           text  NOT NULL,
        request_digest bytea NOT NULL,
        response       bytea NOT NULL,
        response_code  text,
        PRIMARY KEY (mti, acquirer, transmission, stan)
    );

    CREATE TABLE journal (
        id              bigserial PRIMARY KEY,
        at_ms           bigint NOT NULL,
        direction       text   NOT NULL CHECK (direction IN ('in', 'out')),
        peer            text   NOT NULL,
        mti             text   NOT NULL,
        processing_code text,
        stan            text,
        transmission    text,
        acquirer        text,
        response_code   text,
        pan_masked      text,
        amount_minor    bigint,
        note            text,
        raw             bytea  NOT NULL
    );

    CREATE TABLE stan_counter (
        id         integer PRIMARY KEY CHECK (id = 0),
        next_stan  integer NOT NULL CHECK (next_stan BETWEEN 1 AND 999999),
        last_first integer NOT NULL DEFAULT 1
    );
    INSERT INTO stan_counter (id, next_stan) VALUES (0, 1);
    "#,
    ),
    (
        2,
        "store-and-forward queue",
        r#"
    CREATE TABLE saf (
        id              bigserial PRIMARY KEY,
        bank            text    NOT NULL,
        order_key       text    NOT NULL,
        kind            text    NOT NULL CHECK (kind IN ('reversal', 'unfreeze')),
        message         bytea   NOT NULL,
        created_at_ms   bigint  NOT NULL,
        state           text    NOT NULL CHECK (state IN ('pending', 'done', 'dead')),
        attempts        integer NOT NULL DEFAULT 0,
        next_attempt_ms bigint  NOT NULL,
        last_result     text
    );
    CREATE INDEX saf_pending ON saf (state, order_key, id);
    "#,
    ),
    (
        3,
        "end-of-day clearing reads the journal, sagas and queue by time",
        r#"
    CREATE INDEX journal_by_time ON journal (at_ms);
    CREATE INDEX sagas_by_time ON sagas (created_at_ms);
    CREATE INDEX saf_by_time ON saf (created_at_ms);
    "#,
    ),
    (
        4,
        "owners and leases: instances recover the work of dead peers",
        r#"
    -- The instance that started each freeze and saga. Set once: updates stay HOT.
    ALTER TABLE freezes ADD COLUMN owner text;
    ALTER TABLE sagas ADD COLUMN owner text;
    -- Recovery reads a dead instance's work from its lease's watermark on.
    CREATE INDEX freezes_by_time ON freezes (created_at_ms);

    -- One row per live (or not yet recovered) instance, by the database's clock.
    CREATE TABLE leases (
        instance            text        PRIMARY KEY,
        expires_at          timestamptz NOT NULL,
        unfinished_since_ms bigint      NOT NULL
    );
    "#,
    ),
    (
        5,
        "the expiry sweep finds open freezes by age without reading closed ones",
        r#"
    -- Receives change neither column: their updates of a freeze stay HOT.
    CREATE INDEX freezes_open_by_time ON freezes (created_at_ms) WHERE state = 'open';
    "#,
    ),
];

/// Tuning of a [`PostgresStore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PostgresOptions {
    /// Write lanes: connections that each run one batch at a time.
    pub lanes: usize,
    /// Most commands in one transaction.
    pub max_batch: usize,
    /// Connections in the pool (lanes, the journal task and reads share it).
    pub pool_size: usize,
    /// Journal entries buffered at most before new ones are dropped (loudly).
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
            journal_capacity: 1_000_000,
            journal_batch: 2048,
            timeout: Duration::from_secs(5),
        }
    }
}

/// Counters since the store was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PgStats {
    /// Write commands run (each one statement).
    pub commands: u64,
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
    pub journal_dropped: u64,
}

#[derive(Default)]
struct Counters {
    commands: AtomicU64,
    batches: AtomicU64,
    round_trips: AtomicU64,
    commits: AtomicU64,
    conflicts: AtomicU64,
    reruns: AtomicU64,
    splits: AtomicU64,
    journal_written: AtomicU64,
    journal_dropped: AtomicU64,
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
    /// Entries accepted by [`JournalSink::journal`] (written or dropped later).
    journal_accepted: AtomicU64,
    /// Entries written or dropped so far; `flush` waits on it.
    journal_done: watch::Sender<u64>,
    /// Whether the journal is written with binary COPY (else INSERT).
    journal_copy: std::sync::atomic::AtomicBool,
}

// ---------------------------------------------------------------------------
// Errors

fn unavailable(why: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(why.to_string())
}

fn corrupt(why: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(why.to_string())
}

/// A caller's value the store cannot hold, or a step the stored state does not allow.
fn invalid(why: impl std::fmt::Display) -> StoreError {
    StoreError::Invalid(why.to_string())
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
        None => e.to_string(),
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

// ---------------------------------------------------------------------------
// Opening, migrations

/// Connection settings from a URL (`postgres://user:pass@host:port/db`) or a
/// key=value string, with this store's defaults where the URL says nothing.
fn pg_config(url: &str, options: &PostgresOptions) -> StoreResult<tokio_postgres::Config> {
    let mut config = tokio_postgres::Config::from_str(url)
        .map_err(|e| unavailable(format!("bad PostgreSQL URL: {e}")))?;
    if config.get_application_name().is_none() {
        config.application_name("switchboard");
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(options.timeout);
    }
    Ok(config)
}

fn pool(config: tokio_postgres::Config, options: &PostgresOptions) -> StoreResult<Pool> {
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .post_create(Hook::async_fn(|client, _| {
            Box::pin(async move {
                // Every statement here looks rows up by key: one generic plan,
                // made once per connection, instead of planning each execution.
                // A database without this setting plans as it likes.
                let _ = client
                    .batch_execute("SET plan_cache_mode = force_generic_plan")
                    .await;
                Ok(())
            })
        }))
        .max_size(options.pool_size.max(options.lanes + 2))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(options.timeout))
        .create_timeout(Some(options.timeout))
        .recycle_timeout(Some(options.timeout))
        .build()
        .map_err(|e| unavailable(format!("cannot build the connection pool: {e}")))
}

/// Brings the database at `url` to this build's schema; returns the versions
/// applied now (empty when it was up to date). Safe to run from several
/// instances at once: each step is one transaction that first inserts its
/// version into `schema_migrations`, so a concurrent runner waits for it and
/// then skips it. A database newer than this build is refused.
pub async fn migrate(url: &str) -> StoreResult<Vec<i32>> {
    let options = PostgresOptions::default();
    let config = pg_config(url, &options)?;
    let (mut client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| unavailable(format!("cannot connect to PostgreSQL: {}", describe(&e))))?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let result = migrate_client(&mut client).await;
    drop(client);
    let _ = driver.await;
    result
}

async fn migrate_client(client: &mut tokio_postgres::Client) -> StoreResult<Vec<i32>> {
    // Two instances creating the table at once: one of them may fail on the
    // catalog's unique indexes; the table exists when it tries again.
    let create = "CREATE TABLE IF NOT EXISTS schema_migrations (\
                  version integer PRIMARY KEY, description text NOT NULL, \
                  applied_at timestamptz NOT NULL DEFAULT now())";
    let mut tries = 0;
    while let Err(e) = client.batch_execute(create).await {
        tries += 1;
        if tries >= 5 || e.code().is_none() {
            return Err(unavailable(format!(
                "cannot create schema_migrations: {}",
                describe(&e)
            )));
        }
        tokio::time::sleep(Duration::from_millis(20 * tries)).await;
    }
    let mut applied = Vec::new();
    loop {
        let rows = client
            .query(
                "SELECT version FROM schema_migrations ORDER BY version",
                &[],
            )
            .await
            .map_err(db)?;
        let have: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
        let known = MIGRATIONS.last().map_or(0, |m| m.0);
        if let Some(newest) = have.iter().max().filter(|v| **v > known) {
            return Err(unavailable(format!(
                "the database's schema version {newest} is newer than this build's ({known})"
            )));
        }
        let Some((version, description, sql)) =
            MIGRATIONS.iter().find(|(v, _, _)| !have.contains(v))
        else {
            return Ok(applied);
        };
        let tx = client.transaction().await.map_err(db)?;
        match tx
            .execute(
                "INSERT INTO schema_migrations (version, description) VALUES ($1, $2)",
                &[version, description],
            )
            .await
        {
            Ok(_) => {}
            // Applied meanwhile by another instance.
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => continue,
            Err(e) => return Err(db(e)),
        }
        tx.batch_execute(sql)
            .await
            .map_err(|e| unavailable(format!("schema migration {version}: {}", describe(&e))))?;
        tx.commit().await.map_err(db)?;
        tracing::info!(version, description, "schema migration applied");
        applied.push(*version);
    }
}

impl PostgresStore {
    /// Connects with default options; see [`PostgresStore::connect_with`].
    pub async fn connect(url: &str) -> StoreResult<PostgresStore> {
        PostgresStore::connect_with(url, PostgresOptions::default()).await
    }

    /// Connects to the database at `url`, migrates its schema to this build's,
    /// and starts the write lanes and the journal task. Must run inside a tokio
    /// runtime, which the store's tasks live on.
    pub async fn connect_with(url: &str, options: PostgresOptions) -> StoreResult<PostgresStore> {
        let options = PostgresOptions {
            lanes: options.lanes.max(1),
            max_batch: options.max_batch.max(1),
            journal_batch: options.journal_batch.max(1),
            journal_capacity: options.journal_capacity.max(1),
            ..options
        };
        let pool = pool(pg_config(url, &options)?, &options)?;
        {
            let mut client = pool.get().await.map_err(pool_error)?;
            let client: &mut tokio_postgres::Client = &mut client;
            migrate_client(client).await?;
        }
        let inner = Arc::new(Inner {
            pool,
            options,
            counters: Counters::default(),
            journal: Mutex::new(VecDeque::new()),
            journal_wake: Notify::new(),
            journal_accepted: AtomicU64::new(0),
            journal_done: watch::channel(0).0,
            journal_copy: std::sync::atomic::AtomicBool::new(true),
        });
        let stop = CancellationToken::new();
        let mut lanes = Vec::with_capacity(options.lanes);
        for n in 0..options.lanes {
            let (tx, rx) = mpsc::channel(options.max_batch * 16);
            lanes.push(tx);
            tokio::spawn(lane(inner.clone(), rx, n));
        }
        tokio::spawn(journal_writer(inner.clone(), stop.clone()));
        let (lookups, lookup_rx) = mpsc::channel(options.max_batch * 16);
        tokio::spawn(answer_reader(inner.clone(), lookup_rx));
        Ok(PostgresStore {
            inner,
            lanes,
            lookups,
            hints: Mutex::new(HashMap::new()),
            spec: Arc::new(Spec::switchboard()),
            stop,
        })
    }

    pub fn stats(&self) -> PgStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        PgStats {
            commands: get(&c.commands),
            batches: get(&c.batches),
            round_trips: get(&c.round_trips),
            commits: get(&c.commits),
            conflicts: get(&c.conflicts),
            reruns: get(&c.reruns),
            splits: get(&c.splits),
            journal_written: get(&c.journal_written),
            journal_dropped: get(&c.journal_dropped),
        }
    }

    /// Waits until every journal entry given so far is written (or dropped),
    /// at most the store's timeout.
    pub async fn flush(&self) -> StoreResult<()> {
        let target = self.inner.journal_accepted.load(Ordering::SeqCst);
        self.inner.journal_wake.notify_one();
        let mut done = self.inner.journal_done.subscribe();
        let waited = tokio::time::timeout(
            self.inner.options.timeout,
            done.wait_for(|written| *written >= target),
        )
        .await
        .map(|r| r.map(|_| ()));
        match waited {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(stopped()),
            Err(_) => Err(unavailable(format!(
                "journal not written within {:?}: {} entries waiting",
                self.inner.options.timeout,
                self.inner.journal.lock().map(|j| j.len()).unwrap_or(0)
            ))),
        }
    }

    /// Writes the journal and stops the store's tasks.
    pub async fn close(self) -> StoreResult<()> {
        let flushed = self.flush().await;
        drop(self);
        flushed
    }

    /// Field 39 of a response, if it parses in the switchboard dialect.
    fn response_code(&self, answer: &StoredAnswer) -> Option<String> {
        iso8583::codec::parse(&self.spec, answer.response.clone())
            .ok()
            .and_then(|m| m.get_str(num::RESPONSE_CODE).map(str::to_owned))
    }

    fn hint(&self, request: &RequestKey) -> Option<FreezeKey> {
        self.hints.lock().ok()?.get(request).copied()
    }

    fn set_hint(&self, request: RequestKey, freeze: FreezeKey) {
        if let Ok(mut hints) = self.hints.lock() {
            // Hints of sagas another instance or recovery finished would pile up.
            if hints.len() >= 1 << 20 {
                hints.clear();
            }
            hints.insert(request, freeze);
        }
    }

    fn drop_hint(&self, request: &RequestKey) {
        if let Ok(mut hints) = self.hints.lock() {
            hints.remove(request);
        }
    }

    /// Runs one statement as a command of a lane's next batch.
    async fn write<T, D>(
        &self,
        order: String,
        sql: &'static str,
        params: Params,
        decode: D,
    ) -> StoreResult<T>
    where
        T: Send + 'static,
        D: Fn(&[Row]) -> Decision<T> + Send + Sync + 'static,
    {
        let mut hasher = DefaultHasher::new();
        order.hash(&mut hasher);
        let lane = &self.lanes[(hasher.finish() % self.lanes.len() as u64) as usize];
        let (reply, answer) = oneshot::channel();
        let command = Box::new(Call {
            order,
            sql,
            params,
            decode,
            reply,
            reruns: 0,
        });
        lane.send(command).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Runs one read on a pooled connection; once more on a fresh connection
    /// if the first one turned out to be closed.
    async fn read(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> StoreResult<Vec<Row>> {
        let timeout = self.inner.options.timeout;
        for attempt in 0..2 {
            let client = self.inner.pool.get().await.map_err(pool_error)?;
            bump(&self.inner.counters.round_trips, 1);
            let result = tokio::time::timeout(timeout, async {
                let statement = client.prepare_cached(sql).await?;
                client.query(&statement, params).await
            })
            .await;
            match result {
                Ok(Ok(rows)) => return Ok(rows),
                Ok(Err(e)) if e.is_closed() && attempt == 0 => {
                    let _ = Object::take(client);
                }
                Ok(Err(e)) => return Err(db(e)),
                Err(_) => {
                    let _ = Object::take(client);
                    return Err(unavailable(format!("read timed out after {timeout:?}")));
                }
            }
        }
        Err(unavailable("no usable connection"))
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

// ---------------------------------------------------------------------------
// Commands and lanes

type Params = Vec<Box<dyn ToSql + Sync + Send>>;

/// What a command's rows say once its batch committed.
enum Decision<T> {
    Done(StoreResult<T>),
    /// The statement wrote nothing because the row changed between its
    /// snapshot and its update: run it again.
    Rerun,
}

trait Command: Send + Sync {
    fn order(&self) -> &str;
    fn sql(&self) -> &'static str;
    fn params(&self) -> &Params;
    /// The batch committed: reply, or hand the command back to run again.
    fn committed(self: Box<Self>, rows: &[Row]) -> Option<Box<dyn Command>>;
    /// Hands the command back to run again, or fails it with `why` when it
    /// ran again too often.
    fn rerun(self: Box<Self>, why: StoreError) -> Option<Box<dyn Command>>;
    fn fail(self: Box<Self>, error: StoreError);
}

struct Call<T, D> {
    order: String,
    sql: &'static str,
    params: Params,
    decode: D,
    reply: oneshot::Sender<StoreResult<T>>,
    reruns: u32,
}

/// Times a command runs again after seeing a row change under it.
const MAX_RERUNS: u32 = 8;

impl<T, D> Command for Call<T, D>
where
    T: Send + 'static,
    D: Fn(&[Row]) -> Decision<T> + Send + Sync + 'static,
{
    fn order(&self) -> &str {
        &self.order
    }
    fn sql(&self) -> &'static str {
        self.sql
    }
    fn params(&self) -> &Params {
        &self.params
    }
    fn committed(self: Box<Self>, rows: &[Row]) -> Option<Box<dyn Command>> {
        match (self.decode)(rows) {
            Decision::Done(result) => {
                let _ = self.reply.send(result);
                None
            }
            Decision::Rerun => self.rerun(unavailable(
                "the row kept changing under the command (contention)",
            )),
        }
    }
    fn rerun(mut self: Box<Self>, why: StoreError) -> Option<Box<dyn Command>> {
        if self.reruns < MAX_RERUNS {
            self.reruns += 1;
            Some(self)
        } else {
            let _ = self.reply.send(Err(why));
            None
        }
    }
    fn fail(self: Box<Self>, error: StoreError) {
        let _ = self.reply.send(Err(error));
    }
}

/// How a batch's transaction ended when it did not commit.
enum BatchError {
    /// Serialization failure or deadlock: rolled back, run it again.
    Conflict(String),
    /// A statement failed (command `Some(i)`, or `BEGIN`/`COMMIT`): rolled back.
    Statement(Option<usize>, tokio_postgres::Error),
    /// The connection broke or timed out. `sent` when the server may have
    /// received the batch: its outcome is then unknown.
    Broken { why: String, sent: bool },
}

/// Batches attempted again after conflicts before giving up.
const MAX_CONFLICT_RETRIES: u32 = 10;

async fn lane(inner: Arc<Inner>, mut rx: mpsc::Receiver<Box<dyn Command>>, n: usize) {
    let mut connection: Option<Object> = None;
    let mut again: Vec<Box<dyn Command>> = Vec::new();
    loop {
        let mut batch = std::mem::take(&mut again);
        if batch.is_empty() {
            match rx.recv().await {
                Some(command) => batch.push(command),
                None => break,
            }
        }
        while batch.len() < inner.options.max_batch {
            match rx.try_recv() {
                Ok(command) => batch.push(command),
                Err(_) => break,
            }
        }
        // One lock order for every instance: rows of freezes are taken in key order.
        batch.sort_by(|a, b| a.order().cmp(b.order()));
        again = run_batch(&inner, &mut connection, batch).await;
        if !again.is_empty() {
            bump(&inner.counters.reruns, again.len() as u64);
        }
    }
    tracing::debug!(lane = n, "PostgreSQL write lane stopped");
}

/// Runs a batch in one transaction; returns the commands to run again. When a
/// statement fails, the transaction is rolled back and each command runs
/// again alone, so that only the failing one gets the error.
async fn run_batch(
    inner: &Inner,
    connection: &mut Option<Object>,
    batch: Vec<Box<dyn Command>>,
) -> Vec<Box<dyn Command>> {
    let mut again = Vec::new();
    let mut groups: VecDeque<Vec<Box<dyn Command>>> = VecDeque::from([batch]);
    'groups: while let Some(group) = groups.pop_front() {
        let mut conflicts = 0;
        let mut fresh_tries = 0;
        loop {
            match attempt(inner, connection, &group).await {
                Ok(results) => {
                    bump(&inner.counters.batches, 1);
                    bump(&inner.counters.commits, 1);
                    bump(&inner.counters.commands, group.len() as u64);
                    again.extend(
                        group
                            .into_iter()
                            .zip(results)
                            .filter_map(|(command, rows)| command.committed(&rows)),
                    );
                    continue 'groups;
                }
                Err(BatchError::Conflict(why)) => {
                    bump(&inner.counters.conflicts, 1);
                    conflicts += 1;
                    if conflicts > MAX_CONFLICT_RETRIES {
                        let why = format!("gave up after {conflicts} conflicts: {why}");
                        for command in group {
                            command.fail(unavailable(&why));
                        }
                        continue 'groups;
                    }
                    let jitter_ms = 1 + (conflicts as u64 * 7 + group.len() as u64) % 20;
                    tokio::time::sleep(Duration::from_millis(jitter_ms * conflicts as u64)).await;
                }
                Err(BatchError::Broken { why, sent }) => {
                    if let Some(object) = connection.take() {
                        let _ = Object::take(object);
                    }
                    if !sent && fresh_tries == 0 {
                        // Nothing reached the server: one more try on a new connection.
                        fresh_tries += 1;
                        continue;
                    }
                    let why = if sent {
                        format!("{why}; the batch may or may not have committed")
                    } else {
                        why
                    };
                    tracing::warn!(commands = group.len(), "PostgreSQL batch failed: {why}");
                    for command in group {
                        command.fail(unavailable(&why));
                    }
                    continue 'groups;
                }
                Err(BatchError::Statement(index, error)) => {
                    if group.len() == 1 {
                        if let Some(command) = group.into_iter().next() {
                            if error.code() == Some(&SqlState::UNIQUE_VIOLATION) {
                                // Another transaction inserted the same key
                                // first: run again, the statement now sees it.
                                again.extend(command.rerun(db(error)));
                            } else {
                                command.fail(db(error));
                            }
                        }
                        continue 'groups;
                    }
                    tracing::debug!(
                        ?index,
                        error = %describe(&error),
                        "statement failed; its command runs alone, the others again together"
                    );
                    bump(&inner.counters.splits, 1);
                    match index {
                        // Statements run in order: the first error is the
                        // failing command's, the later ones only "aborted".
                        Some(i) => {
                            let mut rest = group;
                            let failing = rest.remove(i);
                            groups.push_front(rest);
                            groups.push_front(vec![failing]);
                        }
                        None => {
                            for command in group.into_iter().rev() {
                                groups.push_front(vec![command]);
                            }
                        }
                    }
                    continue 'groups;
                }
            }
        }
    }
    again
}

/// One pipelined round trip: `BEGIN`, the commands' statements, `COMMIT`.
async fn attempt(
    inner: &Inner,
    connection: &mut Option<Object>,
    batch: &[Box<dyn Command>],
) -> Result<Vec<Vec<Row>>, BatchError> {
    if connection.as_ref().is_some_and(|c| c.is_closed()) {
        if let Some(object) = connection.take() {
            let _ = Object::take(object);
        }
    }
    if connection.is_none() {
        let object = inner.pool.get().await.map_err(|e| BatchError::Broken {
            why: pool_error(e).to_string(),
            sent: false,
        })?;
        *connection = Some(object);
    }
    let client = connection.as_ref().expect("a connection");
    let timeout = inner.options.timeout;
    let prepared = tokio::time::timeout(timeout, async {
        let begin = client
            .prepare_cached("BEGIN ISOLATION LEVEL READ COMMITTED")
            .await?;
        let commit = client.prepare_cached("COMMIT").await?;
        let mut statements = Vec::with_capacity(batch.len());
        for command in batch {
            statements.push(client.prepare_cached(command.sql()).await?);
        }
        Ok::<_, tokio_postgres::Error>((begin, commit, statements))
    })
    .await;
    let (begin, commit, statements) = match prepared {
        Ok(Ok(p)) => p,
        Ok(Err(e)) if e.code().is_some() => return Err(BatchError::Statement(None, e)),
        Ok(Err(e)) => {
            return Err(BatchError::Broken {
                why: describe(&e),
                sent: false,
            })
        }
        Err(_) => {
            return Err(BatchError::Broken {
                why: format!("preparing statements timed out after {timeout:?}"),
                sent: false,
            })
        }
    };
    let params: Vec<Vec<&(dyn ToSql + Sync)>> = batch
        .iter()
        .map(|c| {
            c.params()
                .iter()
                .map(|p| &**p as &(dyn ToSql + Sync))
                .collect()
        })
        .collect();
    type Query<'a> =
        Pin<Box<dyn Future<Output = Result<Vec<Row>, tokio_postgres::Error>> + Send + 'a>>;
    let mut queries: Vec<Query<'_>> = Vec::with_capacity(batch.len() + 2);
    queries.push(Box::pin(client.query(&begin, &[])));
    for (statement, params) in statements.iter().zip(&params) {
        queries.push(Box::pin(client.query(statement, params)));
    }
    queries.push(Box::pin(client.query(&commit, &[])));
    bump(&inner.counters.round_trips, 1);
    let results = match tokio::time::timeout(timeout, pipeline(queries)).await {
        Ok(results) => results,
        Err(_) => {
            return Err(BatchError::Broken {
                why: format!("batch timed out after {timeout:?}"),
                sent: true,
            })
        }
    };

    let mut results = results.into_iter();
    let begun = results.next().expect("BEGIN's result");
    let mut rows = Vec::with_capacity(batch.len());
    let mut first_error: Option<(Option<usize>, tokio_postgres::Error)> = None;
    if let Err(e) = begun {
        first_error = Some((None, e));
    }
    for (i, result) in results.by_ref().take(batch.len()).enumerate() {
        match result {
            Ok(r) => rows.push(r),
            Err(e) => {
                rows.push(Vec::new());
                if first_error.is_none() {
                    first_error = Some((Some(i), e));
                }
            }
        }
    }
    let committed = results.next().expect("COMMIT's result");
    let at_commit = first_error.is_none();
    if at_commit {
        if let Err(e) = committed {
            first_error = Some((None, e));
        }
    }
    let Some((index, e)) = first_error else {
        return Ok(rows);
    };
    if is_conflict(&e) {
        return Err(BatchError::Conflict(describe(&e)));
    }
    // A statement's own error (not the session's end) rolled the transaction
    // back. An error at COMMIT rolled it back only if it is a constraint's;
    // anything else there (the backend terminated, the connection lost) may
    // have come after the commit record was written: outcome unknown.
    let session_ended = e.is_closed()
        || e.as_db_error().is_none_or(|d| {
            matches!(d.severity(), "FATAL" | "PANIC")
                || d.code().code().starts_with("57")
                || d.code().code().starts_with("08")
        });
    let rolled_back =
        !session_ended && (!at_commit || e.code().is_some_and(|c| c.code().starts_with("23")));
    if rolled_back {
        Err(BatchError::Statement(index, e))
    } else {
        Err(BatchError::Broken {
            why: describe(&e),
            sent: true,
        })
    }
}

/// Polls every query once in order (tokio-postgres sends a query on its first
/// poll, so this puts them on the wire in this order without waiting), then
/// waits for each result in turn.
async fn pipeline<F: Future + Unpin>(queries: Vec<F>) -> Vec<F::Output> {
    let mut slots: Vec<MaybeDone<F>> = queries.into_iter().map(maybe_done).collect();
    futures::future::poll_fn(|cx| {
        for slot in slots.iter_mut() {
            let _ = Pin::new(slot).poll(cx);
        }
        std::task::Poll::Ready(())
    })
    .await;
    for slot in slots.iter_mut() {
        slot.await;
    }
    slots
        .into_iter()
        .map(|mut slot| {
            Pin::new(&mut slot)
                .take_output()
                .expect("every query finished")
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Answer lookups

/// Every request starts with one: looking up the answers of all concurrent
/// requests in one statement costs the server far less than one each.
struct Lookup {
    key: ReqCols,
    reply: oneshot::Sender<StoreResult<Option<StoredAnswer>>>,
}

/// One primary-key probe per key (the lateral subquery keeps a generic plan
/// from choosing to scan the whole table).
const SQL_ANSWERS: &str = "SELECT t.n, a.request_digest, a.response \
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) \
        WITH ORDINALITY AS t(mti, acquirer, transmission, stan, n) \
    CROSS JOIN LATERAL ( \
        SELECT request_digest, response FROM answers \
        WHERE answers.mti = t.mti AND answers.acquirer = t.acquirer \
          AND answers.transmission = t.transmission AND answers.stan = t.stan \
        UNION ALL \
        SELECT answer_digest, response FROM sagas \
        WHERE sagas.mti = t.mti AND sagas.acquirer = t.acquirer \
          AND sagas.transmission = t.transmission AND sagas.stan = t.stan \
          AND sagas.response IS NOT NULL \
        LIMIT 1 \
    ) a";

async fn answer_reader(inner: Arc<Inner>, mut rx: mpsc::Receiver<Lookup>) {
    let mut connection: Option<Object> = None;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < inner.options.max_batch * 4 {
            match rx.try_recv() {
                Ok(lookup) => batch.push(lookup),
                Err(_) => break,
            }
        }
        let mut result = Err(stopped());
        for attempt in 0..2 {
            result = lookup_answers(&inner, &mut connection, &batch).await;
            match &result {
                // A read may simply run again on a fresh connection.
                Err(_) if attempt == 0 => {
                    if let Some(object) = connection.take() {
                        let _ = Object::take(object);
                    }
                }
                _ => break,
            }
        }
        match result {
            Ok(mut answers) => {
                for (lookup, answer) in batch.into_iter().zip(answers.drain(..)) {
                    let _ = lookup.reply.send(answer);
                }
            }
            Err(e) => {
                for lookup in batch {
                    let _ = lookup.reply.send(Err(unavailable(&e)));
                }
            }
        }
    }
}

/// One answer (or none) per lookup, in order.
async fn lookup_answers(
    inner: &Inner,
    connection: &mut Option<Object>,
    batch: &[Lookup],
) -> StoreResult<Vec<StoreResult<Option<StoredAnswer>>>> {
    if connection.as_ref().is_some_and(|c| c.is_closed()) {
        connection.take();
    }
    if connection.is_none() {
        *connection = Some(inner.pool.get().await.map_err(pool_error)?);
    }
    let client = connection.as_ref().expect("a connection");
    let column = |i: usize| -> Vec<&str> { batch.iter().map(|l| l.key.0[i].as_str()).collect() };
    let (mti, acquirer, transmission, stan) = (column(0), column(1), column(2), column(3));
    bump(&inner.counters.round_trips, 1);
    let timeout = inner.options.timeout;
    let rows = tokio::time::timeout(timeout, async {
        let statement = client.prepare_cached(SQL_ANSWERS).await?;
        client
            .query(&statement, &[&mti, &acquirer, &transmission, &stan])
            .await
    })
    .await
    .map_err(|_| unavailable(format!("answer lookup timed out after {timeout:?}")))?
    .map_err(db)?;
    let mut answers: Vec<StoreResult<Option<StoredAnswer>>> =
        batch.iter().map(|_| Ok(None)).collect();
    for row in &rows {
        let n = i64_col(row, 0)?;
        let slot = usize::try_from(n - 1)
            .ok()
            .and_then(|i| answers.get_mut(i))
            .ok_or_else(|| corrupt(format!("answer lookup returned position {n}")))?;
        *slot = stored_answer(row, 1, 2).map(Some);
    }
    Ok(answers)
}

// ---------------------------------------------------------------------------
// The journal task

const JOURNAL_INSERT: &str = "INSERT INTO journal (at_ms, direction, peer, mti, processing_code, \
    stan, transmission, acquirer, response_code, pan_masked, amount_minor, note, raw) \
    SELECT at_ms, direction, peer, mti, processing_code, stan, transmission, acquirer, \
           response_code, pan_masked, amount_minor, note, raw \
    FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
                $7::text[], $8::text[], $9::text[], $10::text[], $11::bigint[], $12::text[], \
                $13::bytea[]) WITH ORDINALITY AS t(at_ms, direction, peer, mti, processing_code, \
                stan, transmission, acquirer, response_code, pan_masked, amount_minor, note, raw, n) \
    ORDER BY n";

impl Inner {
    fn journal_done_add(&self, n: u64) {
        self.journal_done.send_modify(|done| *done += n);
    }
}

async fn journal_writer(inner: Arc<Inner>, stop: CancellationToken) {
    let mut failures: u32 = 0;
    loop {
        let batch: Vec<JournalEntry> = {
            let mut queue = inner.journal.lock().unwrap_or_else(|p| p.into_inner());
            let n = queue.len().min(inner.options.journal_batch);
            queue.drain(..n).collect()
        };
        if batch.is_empty() {
            if stop.is_cancelled() {
                return;
            }
            tokio::select! {
                _ = inner.journal_wake.notified() => {}
                _ = stop.cancelled() => {}
            }
            continue;
        }
        match write_journal(&inner, &batch).await {
            Ok(()) => {
                failures = 0;
                bump(&inner.counters.journal_written, batch.len() as u64);
                inner.journal_done_add(batch.len() as u64);
            }
            Err(e) => {
                failures += 1;
                let n = batch.len();
                {
                    let mut queue = inner.journal.lock().unwrap_or_else(|p| p.into_inner());
                    for entry in batch.into_iter().rev() {
                        queue.push_front(entry);
                    }
                }
                if stop.is_cancelled() && failures >= 5 {
                    let lost = inner.journal.lock().map(|q| q.len()).unwrap_or(n);
                    tracing::error!(
                        lost,
                        error = %e,
                        "closing the store: journal entries could not be written"
                    );
                    return;
                }
                tracing::warn!(entries = n, error = %e, "journal not written; retrying");
                let backoff = Duration::from_millis(50u64 << failures.min(6));
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

const JOURNAL_COPY: &str = "COPY journal (at_ms, direction, peer, mti, processing_code, stan, \
    transmission, acquirer, response_code, pan_masked, amount_minor, note, raw) FROM STDIN BINARY";

const JOURNAL_TYPES: [Type; 13] = [
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::TEXT,
    Type::BYTEA,
];

/// Writes entries in order, in one statement: `COPY ... BINARY` (the
/// cheapest for the server), or a multi-row `INSERT` where the database does
/// not take binary COPY.
async fn write_journal(inner: &Inner, entries: &[JournalEntry]) -> StoreResult<()> {
    let client = inner.pool.get().await.map_err(pool_error)?;
    bump(&inner.counters.round_trips, 1);
    let timeout = inner.options.timeout;
    let copy = inner.journal_copy.load(Ordering::Relaxed);
    let result = tokio::time::timeout(timeout, async {
        if copy {
            copy_journal(&client, entries).await
        } else {
            insert_journal(&client, entries).await
        }
    })
    .await;
    match result {
        Ok(Ok(())) => {
            bump(&inner.counters.commits, 1);
            Ok(())
        }
        Ok(Err(e)) if copy && e.code() == Some(&SqlState::FEATURE_NOT_SUPPORTED) => {
            tracing::info!("no binary COPY here: the journal is written with INSERT");
            inner.journal_copy.store(false, Ordering::Relaxed);
            Err(db(e))
        }
        Ok(Err(e)) => Err(db(e)),
        Err(_) => {
            let _ = Object::take(client);
            Err(unavailable(format!(
                "journal write timed out after {timeout:?}"
            )))
        }
    }
}

fn direction_text(d: Direction) -> &'static str {
    match d {
        Direction::In => "in",
        Direction::Out => "out",
    }
}

async fn copy_journal(
    client: &Object,
    entries: &[JournalEntry],
) -> Result<(), tokio_postgres::Error> {
    let statement = client.prepare_cached(JOURNAL_COPY).await?;
    let sink = client.copy_in(&statement).await?;
    let writer = BinaryCopyInWriter::new(sink, &JOURNAL_TYPES);
    futures::pin_mut!(writer);
    for e in entries {
        let mti = String::from_utf8_lossy(&e.mti);
        // F4 has 12 digits, so this only drops an amount no message can carry.
        let amount = e.amount_minor.and_then(|a| i64::try_from(a).ok());
        writer
            .as_mut()
            .write(&[
                &e.at_ms,
                &direction_text(e.direction),
                &e.peer,
                &mti.as_ref(),
                &e.processing_code,
                &e.stan,
                &e.transmission,
                &e.acquirer,
                &e.response_code,
                &e.pan_masked,
                &amount,
                &e.note,
                &&e.raw[..],
            ])
            .await?;
    }
    writer.finish().await?;
    Ok(())
}

async fn insert_journal(
    client: &Object,
    entries: &[JournalEntry],
) -> Result<(), tokio_postgres::Error> {
    let text = |f: fn(&JournalEntry) -> Option<&String>| -> Vec<Option<&str>> {
        entries.iter().map(|e| f(e).map(String::as_str)).collect()
    };
    let at_ms: Vec<i64> = entries.iter().map(|e| e.at_ms).collect();
    let direction: Vec<&str> = entries
        .iter()
        .map(|e| direction_text(e.direction))
        .collect();
    let peer: Vec<&str> = entries.iter().map(|e| e.peer.as_str()).collect();
    let mti: Vec<String> = entries
        .iter()
        .map(|e| String::from_utf8_lossy(&e.mti).into_owned())
        .collect();
    let processing_code = text(|e| e.processing_code.as_ref());
    let stan = text(|e| e.stan.as_ref());
    let transmission = text(|e| e.transmission.as_ref());
    let acquirer = text(|e| e.acquirer.as_ref());
    let response_code = text(|e| e.response_code.as_ref());
    let pan_masked = text(|e| e.pan_masked.as_ref());
    let amount: Vec<Option<i64>> = entries
        .iter()
        .map(|e| e.amount_minor.and_then(|a| i64::try_from(a).ok()))
        .collect();
    let note = text(|e| e.note.as_ref());
    let raw: Vec<&[u8]> = entries.iter().map(|e| &e.raw[..]).collect();
    let statement = client.prepare_cached(JOURNAL_INSERT).await?;
    client
        .execute(
            &statement,
            &[
                &at_ms,
                &direction,
                &peer,
                &mti,
                &processing_code,
                &stan,
                &transmission,
                &acquirer,
                &response_code,
                &pan_masked,
                &amount,
                &note,
                &raw,
            ],
        )
        .await?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Keys and values as stored

/// Key parts as the text columns hold them: ASCII digits, checked both ways.
fn digits_text(what: &str, bytes: &[u8]) -> StoreResult<String> {
    if bytes.iter().all(u8::is_ascii_digit) {
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

    fn push(&self, params: &mut Params) {
        for c in &self.0 {
            params.push(Box::new(c.clone()));
        }
    }

    fn order(&self) -> String {
        format!("r{}", self.0.join("/"))
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

    fn push(&self, params: &mut Params) {
        for c in &self.0 {
            params.push(Box::new(c.clone()));
        }
    }

    /// The sort key of commands on this freeze (and the lane they go to).
    fn order(&self) -> String {
        format!("f{}", self.0.join("/"))
    }
}

fn amount_in(what: &str, amount: u64) -> StoreResult<i64> {
    i64::try_from(amount).map_err(|_| invalid(format!("{what} {amount} exceeds i64::MAX")))
}

fn text_col(row: &Row, idx: usize) -> StoreResult<String> {
    row.try_get::<_, String>(idx)
        .map_err(|e| corrupt(format!("column {idx}: {e}")))
}

fn opt_text_col(row: &Row, idx: usize) -> StoreResult<Option<String>> {
    row.try_get::<_, Option<String>>(idx)
        .map_err(|e| corrupt(format!("column {idx}: {e}")))
}

fn i64_col(row: &Row, idx: usize) -> StoreResult<i64> {
    row.try_get::<_, i64>(idx)
        .map_err(|e| corrupt(format!("column {idx}: {e}")))
}

fn digits_col<const N: usize>(row: &Row, idx: usize) -> StoreResult<[u8; N]> {
    digits_of(&text_col(row, idx)?, idx)
}

fn digits_of<const N: usize>(text: &str, idx: usize) -> StoreResult<[u8; N]> {
    let bytes = text.as_bytes();
    if bytes.len() != N || !bytes.iter().all(u8::is_ascii_digit) {
        return Err(corrupt(format!("column {idx}: {text:?} is not {N} digits")));
    }
    let mut out = [0u8; N];
    out.copy_from_slice(bytes);
    Ok(out)
}

fn opt_digits_col<const N: usize>(row: &Row, idx: usize) -> StoreResult<Option<[u8; N]>> {
    opt_text_col(row, idx)?
        .map(|t| digits_of(&t, idx))
        .transpose()
}

fn amount_col(row: &Row, idx: usize) -> StoreResult<u64> {
    let v = i64_col(row, idx)?;
    u64::try_from(v).map_err(|_| corrupt(format!("column {idx}: negative amount {v}")))
}

fn digest_col(row: &Row, idx: usize) -> StoreResult<[u8; 32]> {
    let blob: Vec<u8> = row
        .try_get(idx)
        .map_err(|e| corrupt(format!("column {idx}: {e}")))?;
    <[u8; 32]>::try_from(blob.as_slice())
        .map_err(|_| corrupt(format!("column {idx}: digest of {} bytes", blob.len())))
}

fn bytes_col(row: &Row, idx: usize) -> StoreResult<Bytes> {
    let blob: Vec<u8> = row
        .try_get(idx)
        .map_err(|e| corrupt(format!("column {idx}: {e}")))?;
    Ok(Bytes::from(blob))
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

/// The columns [`freeze_row`] reads, as a literal for `concat!`.
macro_rules! freeze_columns {
    () => {
        "acquirer, transmission, stan, payer_pan, payer_bank, amount_minor, currency, \
         received_minor, reserved_minor, state, created_at_ms"
    };
}

/// Reads a freeze from columns `at..at + 11` in [`freeze_columns!`] order.
fn freeze_row(row: &Row, at: usize) -> StoreResult<FreezeRecord> {
    let state = text_col(row, at + 9)?;
    let currency: i32 = row
        .try_get(at + 6)
        .map_err(|e| corrupt(format!("currency: {e}")))?;
    Ok(FreezeRecord {
        key: FreezeKey {
            acquirer: InstitutionId(digits_col(row, at)?),
            transmission: digits_col(row, at + 1)?,
            stan: digits_col(row, at + 2)?,
        },
        payer_pan: text_col(row, at + 3)?,
        payer_bank: text_col(row, at + 4)?,
        amount_minor: amount_col(row, at + 5)?,
        currency: u16::try_from(currency).map_err(|_| corrupt(format!("currency {currency}")))?,
        received_minor: amount_col(row, at + 7)?,
        reserved_minor: amount_col(row, at + 8)?,
        state: FreezeState::parse(&state)
            .ok_or_else(|| corrupt(format!("freeze state {state:?}")))?,
        created_at_ms: i64_col(row, at + 10)?,
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
        response_code: opt_text_col(row, 17)?,
        created_at_ms: i64_col(row, 18)?,
    })
}

/// The columns [`saf_row`] reads, as a literal for `concat!`.
macro_rules! saf_columns {
    () => {
        "id, bank, order_key, kind, message, created_at_ms, state, attempts, next_attempt_ms, \
         last_result"
    };
}

/// A journal row as [`Store::journal_between`] returns it.
fn journal_row(row: &Row) -> StoreResult<JournalEntry> {
    let direction = match text_col(row, 1)?.as_str() {
        "in" => Direction::In,
        "out" => Direction::Out,
        other => return Err(corrupt(format!("journal direction {other:?}"))),
    };
    let amount: Option<i64> = row
        .try_get(10)
        .map_err(|e| corrupt(format!("journal amount: {e}")))?;
    Ok(JournalEntry {
        at_ms: i64_col(row, 0)?,
        direction,
        peer: text_col(row, 2)?,
        // As written: four characters, not necessarily digits.
        mti: <[u8; 4]>::try_from(text_col(row, 3)?.as_bytes()).unwrap_or(*b"????"),
        processing_code: opt_text_col(row, 4)?,
        stan: opt_text_col(row, 5)?,
        transmission: opt_text_col(row, 6)?,
        acquirer: opt_text_col(row, 7)?,
        response_code: opt_text_col(row, 8)?,
        pan_masked: opt_text_col(row, 9)?,
        amount_minor: amount.and_then(|a| u64::try_from(a).ok()),
        note: opt_text_col(row, 11)?,
        raw: bytes_col(row, 12)?,
    })
}

fn saf_row(row: &Row) -> StoreResult<SafEntry> {
    let kind = text_col(row, 3)?;
    let state = text_col(row, 6)?;
    let attempts: i32 = row
        .try_get(7)
        .map_err(|e| corrupt(format!("saf attempts: {e}")))?;
    Ok(SafEntry {
        id: i64_col(row, 0)?,
        entry: NewSafEntry {
            bank: text_col(row, 1)?,
            order_key: text_col(row, 2)?,
            kind: SafKind::parse(&kind).ok_or_else(|| corrupt(format!("saf kind {kind:?}")))?,
            message: bytes_col(row, 4)?,
            created_at_ms: i64_col(row, 5)?,
        },
        state: SafState::parse(&state).ok_or_else(|| corrupt(format!("saf state {state:?}")))?,
        attempts: u32::try_from(attempts).map_err(|_| corrupt("saf attempts"))?,
        next_attempt_ms: i64_col(row, 8)?,
        last_result: opt_text_col(row, 9)?,
    })
}

/// Store-and-forward entries as five parallel arrays, for `unnest`.
fn push_saf(params: &mut Params, entries: &[&NewSafEntry]) {
    params.push(Box::new(
        entries.iter().map(|e| e.bank.clone()).collect::<Vec<_>>(),
    ));
    params.push(Box::new(
        entries
            .iter()
            .map(|e| e.order_key.clone())
            .collect::<Vec<_>>(),
    ));
    params.push(Box::new(
        entries
            .iter()
            .map(|e| e.kind.as_str().to_string())
            .collect::<Vec<_>>(),
    ));
    params.push(Box::new(
        entries
            .iter()
            .map(|e| e.message.to_vec())
            .collect::<Vec<_>>(),
    ));
    params.push(Box::new(
        entries.iter().map(|e| e.created_at_ms).collect::<Vec<_>>(),
    ));
}

/// Inserts the store-and-forward entries given as parameters `$a..$a+4` (five
/// arrays, see [`push_saf`]), in their order, when `$cond` holds.
macro_rules! saf_insert {
    ($a:literal, $b:literal, $c:literal, $d:literal, $e:literal, $cond:literal) => {
        concat!(
            "INSERT INTO saf (bank, order_key, kind, message, created_at_ms, state, next_attempt_ms) \
             SELECT t.bank, t.order_key, t.kind, t.message, t.created_at_ms, 'pending', t.created_at_ms \
             FROM unnest(", $a, "::text[], ", $b, "::text[], ", $c, "::text[], ", $d, "::bytea[], ",
            $e, "::bigint[]) WITH ORDINALITY AS t(bank, order_key, kind, message, created_at_ms, n) \
             WHERE ", $cond, " ORDER BY t.n"
        )
    };
}

// ---------------------------------------------------------------------------
// Statements. Parameters are cast where they first appear; every statement
// writes nothing when it does not succeed.

const SQL_RECORD_ANSWER: &str = "INSERT INTO answers \
    (mti, acquirer, transmission, stan, request_digest, response, response_code) \
    VALUES ($1::text, $2::text, $3::text, $4::text, $5::bytea, $6::bytea, $7::text) \
    ON CONFLICT DO NOTHING";

/// `$1-$4` request, `$5-$7` freeze key, `$8` payer PAN, `$9` payer bank,
/// `$10` amount, `$11` currency, `$12` created, `$13` digest, `$14` owner.
const SQL_INSERT_FREEZE: &str = "WITH prior AS ( \
        SELECT request_digest, response FROM answers \
        WHERE mti = $1::text AND acquirer = $2::text AND transmission = $3::text AND stan = $4::text \
    ), ins AS ( \
        INSERT INTO freezes (acquirer, transmission, stan, payer_pan, payer_bank, amount_minor, \
            currency, received_minor, reserved_minor, state, created_at_ms, request_digest, owner) \
        SELECT $5::text, $6::text, $7::text, $8::text, $9::text, $10::bigint, $11::integer, 0, 0, \
            'pending', $12::bigint, $13::bytea, $14::text \
        WHERE NOT EXISTS (SELECT 1 FROM prior) \
        ON CONFLICT DO NOTHING \
        RETURNING 1 \
    ) \
    SELECT 'inserted'::text AS what, NULL::bytea AS digest, NULL::bytea AS response FROM ins \
    UNION ALL SELECT 'answered', request_digest, response FROM prior \
    UNION ALL SELECT 'exists', request_digest, NULL FROM freezes \
        WHERE acquirer = $5 AND transmission = $6 AND stan = $7 AND NOT EXISTS (SELECT 1 FROM ins)";

/// `$1-$3` freeze key, `$4-$7` request, `$8` target state, `$9` digest,
/// `$10` response, `$11` code, `$12-$16` store-and-forward entries. Only a
/// pending freeze is finished; otherwise the answer recorded before is returned.
const SQL_FINISH_FREEZE: &str = concat!(
    "WITH upd AS ( \
        UPDATE freezes SET state = $8::text \
        WHERE acquirer = $1::text AND transmission = $2::text AND stan = $3::text \
          AND state = 'pending' \
        RETURNING 1 \
    ), ans AS ( \
        INSERT INTO answers (mti, acquirer, transmission, stan, request_digest, response, \
            response_code) \
        SELECT $4::text, $5::text, $6::text, $7::text, $9::bytea, $10::bytea, $11::text \
        WHERE EXISTS (SELECT 1 FROM upd) \
        ON CONFLICT DO NOTHING \
    ), q AS (",
    saf_insert!(
        "$12",
        "$13",
        "$14",
        "$15",
        "$16",
        "EXISTS (SELECT 1 FROM upd)"
    ),
    ") SELECT (SELECT count(*) FROM upd) AS updated, \
        (SELECT state FROM freezes WHERE acquirer = $1 AND transmission = $2 AND stan = $3) \
            AS state, \
        (SELECT request_digest FROM answers WHERE mti = $4 AND acquirer = $5 \
            AND transmission = $6 AND stan = $7 AND NOT EXISTS (SELECT 1 FROM upd)) AS digest, \
        (SELECT response FROM answers WHERE mti = $4 AND acquirer = $5 \
            AND transmission = $6 AND stan = $7 AND NOT EXISTS (SELECT 1 FROM upd)) AS response"
);

/// `$1-$4` request, `$5-$7` freeze key, `$8` amount, `$9` receiver PAN,
/// `$10` receiver bank, `$11` saga state, `$12` digest, `$13` created,
/// `$14-$17` debit and credit identities, `$18` owner.
const SQL_RESERVE: &str = concat!(
    "WITH prior_answer AS ( \
        SELECT request_digest, response FROM answers \
        WHERE mti = $1::text AND acquirer = $2::text AND transmission = $3::text AND stan = $4::text \
    ), prior_saga AS ( \
        SELECT coalesce(answer_digest, request_digest) AS request_digest, response FROM sagas \
        WHERE mti = $1 AND acquirer = $2 AND transmission = $3 AND stan = $4 \
    ), upd AS ( \
        UPDATE freezes SET reserved_minor = reserved_minor + $8::bigint \
        WHERE acquirer = $5::text AND transmission = $6::text AND stan = $7::text \
          AND state = 'open' AND $8 <= amount_minor - received_minor - reserved_minor \
          AND NOT EXISTS (SELECT 1 FROM prior_answer) AND NOT EXISTS (SELECT 1 FROM prior_saga) \
        RETURNING ",
    freeze_columns!(),
    " ), ins AS ( \
        INSERT INTO sagas (mti, acquirer, transmission, stan, freeze_acquirer, \
            freeze_transmission, freeze_stan, amount_minor, receiver_pan, receiver_bank, state, \
            request_digest, created_at_ms, debit_stan, debit_transmission, credit_stan, \
            credit_transmission, owner) \
        SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9::text, $10::text, $11::text, $12::bytea, \
            $13::bigint, $14::text, $15::text, $16::text, $17::text, $18::text \
        FROM upd \
    ) \
    SELECT 'reserved'::text AS what, ",
    freeze_columns!(),
    ", NULL::bytea AS digest, NULL::bytea AS response FROM upd \
    UNION ALL SELECT 'answered', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
        request_digest, response FROM prior_answer \
    UNION ALL SELECT 'saga', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
        request_digest, response FROM prior_saga \
    UNION ALL SELECT 'freeze', ",
    freeze_columns!(),
    ", NULL, NULL FROM freezes \
        WHERE acquirer = $5 AND transmission = $6 AND stan = $7 AND NOT EXISTS (SELECT 1 FROM upd)"
);

/// `$1-$4` request, `$5` new saga state, `$6` response code, `$7` outcome
/// (`approved`, `failed`), `$8` digest, `$9` response,
/// `$10-$14` follow-up entries, `$15-$19` the unfreeze queued if the freeze is
/// closed when a failed receive ends. The answer recorded before is read only
/// when this statement did not end the saga.
const SQL_SETTLE: &str = "WITH u AS ( \
        UPDATE sagas SET state = $5::text, response_code = $6::text, \
            answer_digest = coalesce(answer_digest, $8::bytea), \
            response = coalesce(response, $9::bytea) \
        WHERE mti = $1::text AND acquirer = $2::text AND transmission = $3::text \
          AND stan = $4::text AND state NOT IN ('approved', 'failed') \
        RETURNING amount_minor, freeze_acquirer, freeze_transmission, freeze_stan \
    ), f AS ( \
        UPDATE freezes SET \
            reserved_minor = freezes.reserved_minor - u.amount_minor, \
            received_minor = freezes.received_minor \
                + CASE WHEN $7::text = 'approved' THEN u.amount_minor ELSE 0 END \
        FROM u \
        WHERE freezes.acquirer = u.freeze_acquirer AND freezes.transmission = u.freeze_transmission \
          AND freezes.stan = u.freeze_stan AND $7 IN ('approved', 'failed') \
        RETURNING freezes.state \
    ), q AS ( \
        INSERT INTO saf (bank, order_key, kind, message, created_at_ms, state, next_attempt_ms) \
        SELECT x.bank, x.order_key, x.kind, x.message, x.created_at_ms, 'pending', x.created_at_ms \
        FROM ( \
            SELECT t.*, 0 AS part FROM unnest($10::text[], $11::text[], $12::text[], \
                $13::bytea[], $14::bigint[]) \
                WITH ORDINALITY AS t(bank, order_key, kind, message, created_at_ms, n) \
            WHERE EXISTS (SELECT 1 FROM u) \
            UNION ALL \
            SELECT t.*, 1 FROM unnest($15::text[], $16::text[], $17::text[], \
                $18::bytea[], $19::bigint[]) \
                WITH ORDINALITY AS t(bank, order_key, kind, message, created_at_ms, n) \
            WHERE $7 = 'failed' AND EXISTS (SELECT 1 FROM f WHERE f.state = 'closed') \
        ) x ORDER BY x.part, x.n \
    ) \
    SELECT (SELECT count(*) FROM u) AS settled, \
        (SELECT state FROM sagas WHERE mti = $1 AND acquirer = $2 AND transmission = $3 \
            AND stan = $4) AS state, \
        (SELECT answer_digest FROM sagas WHERE mti = $1 AND acquirer = $2 AND transmission = $3 \
            AND stan = $4 AND NOT EXISTS (SELECT 1 FROM u)) AS digest, \
        (SELECT response FROM sagas WHERE mti = $1 AND acquirer = $2 AND transmission = $3 \
            AND stan = $4 AND NOT EXISTS (SELECT 1 FROM u)) AS response, \
        (SELECT CASE WHEN $7 IN ('approved', 'failed') AND NOT EXISTS (SELECT 1 FROM f) \
            THEN ('switchboard: freeze ' || u.freeze_acquirer || '/' || u.freeze_transmission \
                  || '/' || u.freeze_stan || ' of a saga is missing')::integer END FROM u) AS guard";

/// `$1-$3` freeze key, `$4` amount, `$5-$8` request, `$9` digest,
/// `$10` response, `$11` code, `$12-$16` the notice to queue.
const SQL_CLOSE_FREEZE: &str = concat!(
    "WITH upd AS ( \
        UPDATE freezes SET state = 'closed' \
        WHERE acquirer = $1::text AND transmission = $2::text AND stan = $3::text \
          AND state = 'open' AND amount_minor - received_minor - reserved_minor = $4::bigint \
        RETURNING ",
    freeze_columns!(),
    " ), ans AS ( \
        INSERT INTO answers (mti, acquirer, transmission, stan, request_digest, response, \
            response_code) \
        SELECT $5::text, $6::text, $7::text, $8::text, $9::bytea, $10::bytea, $11::text FROM upd \
        ON CONFLICT DO NOTHING \
    ), q AS (",
    saf_insert!(
        "$12",
        "$13",
        "$14",
        "$15",
        "$16",
        "EXISTS (SELECT 1 FROM upd)"
    ),
    ") SELECT 'closed'::text AS what, ",
    freeze_columns!(),
    " FROM upd UNION ALL SELECT 'current', ",
    freeze_columns!(),
    " FROM freezes WHERE acquirer = $1 AND transmission = $2 AND stan = $3 \
        AND NOT EXISTS (SELECT 1 FROM upd)"
);

/// `$1` id, `$2` state, `$3` next attempt (or NULL), `$4` result.
const SQL_SAF_SETTLE: &str = "UPDATE saf SET state = $2::text, attempts = attempts + 1, \
    next_attempt_ms = COALESCE($3::bigint, next_attempt_ms), last_result = $4::text \
    WHERE id = $1::bigint AND state = 'pending' RETURNING 1";

/// A block never crosses 999999: when it would, it starts at 1 instead (the
/// STANs between are skipped this round). `last_first` returns the block's start.
const SQL_ALLOCATE_STANS: &str = "UPDATE stan_counter SET \
    last_first = CASE WHEN next_stan + $1::integer - 1 > 999999 THEN 1 ELSE next_stan END, \
    next_stan = CASE \
        WHEN (CASE WHEN next_stan + $1 - 1 > 999999 THEN 1 ELSE next_stan END) + $1 > 999999 THEN 1 \
        ELSE (CASE WHEN next_stan + $1 - 1 > 999999 THEN 1 ELSE next_stan END) + $1 END \
    WHERE id = 0 RETURNING last_first";

const SQL_FREEZE: &str = concat!(
    "SELECT ",
    freeze_columns!(),
    " FROM freezes WHERE acquirer = $1::text AND transmission = $2::text AND stan = $3::text"
);

const SQL_FREEZES: &str = concat!(
    "SELECT ",
    freeze_columns!(),
    " FROM freezes ORDER BY created_at_ms, acquirer, transmission, stan"
);

const SQL_SAGA: &str = concat!(
    "SELECT ",
    saga_columns!(),
    " FROM sagas WHERE mti = $1::text AND acquirer = $2::text AND transmission = $3::text \
      AND stan = $4::text"
);

const SQL_SAGAS: &str = concat!(
    "SELECT ",
    saga_columns!(),
    " FROM sagas ORDER BY created_at_ms, mti, acquirer, transmission, stan"
);

/// `$1` now, `$2` limit, `$3` hold. Claims what it returns: its next attempt
/// moves `$3` ahead, so no other instance takes it meanwhile. Rows another
/// instance is claiming at the same moment are skipped, not waited for.
const SQL_SAF_DUE: &str = concat!(
    "UPDATE saf SET next_attempt_ms = $1::bigint + $3::bigint \
     WHERE id IN ( \
        SELECT id FROM saf s WHERE state = 'pending' AND next_attempt_ms <= $1 \
          AND id = (SELECT min(id) FROM saf t \
                    WHERE t.order_key = s.order_key AND t.state = 'pending') \
        ORDER BY id LIMIT $2::bigint FOR UPDATE SKIP LOCKED \
     ) AND state = 'pending' AND next_attempt_ms <= $1 \
     RETURNING ",
    saf_columns!()
);

/// `$1` instance, `$2` duration in ms, `$3` unfinished since.
const SQL_RENEW_LEASE: &str = "INSERT INTO leases (instance, expires_at, unfinished_since_ms) \
    VALUES ($1::text, clock_timestamp() + $2::bigint * interval '1 millisecond', $3::bigint) \
    ON CONFLICT (instance) DO UPDATE SET expires_at = EXCLUDED.expires_at, \
        unfinished_since_ms = EXCLUDED.unfinished_since_ms";

/// `$1` grace in ms.
const SQL_EXPIRED_LEASES: &str = "SELECT instance, unfinished_since_ms FROM leases \
    WHERE expires_at < clock_timestamp() - $1::bigint * interval '1 millisecond' \
    ORDER BY expires_at, instance";

const SQL_DROP_LEASE: &str =
    "DELETE FROM leases WHERE instance = $1::text AND expires_at < clock_timestamp()";

/// `$1` from, `$2` before, `$3` limit.
const SQL_OPEN_FREEZES_CREATED: &str = concat!(
    "SELECT ",
    freeze_columns!(),
    " FROM freezes WHERE state = 'open' AND created_at_ms >= $1::bigint \
      AND created_at_ms < $2::bigint ORDER BY created_at_ms LIMIT $3::bigint"
);

const SQL_UNFINISHED_FREEZES: &str = concat!(
    "SELECT ",
    freeze_columns!(),
    " FROM freezes WHERE created_at_ms >= $2::bigint AND owner = $1::text AND state = 'pending' \
      ORDER BY created_at_ms, acquirer, transmission, stan"
);

const SQL_UNFINISHED_SAGAS: &str = concat!(
    "SELECT ",
    saga_columns!(),
    " FROM sagas WHERE created_at_ms >= $2::bigint AND owner = $1::text \
      AND state NOT IN ('approved', 'failed') \
      ORDER BY created_at_ms, mti, acquirer, transmission, stan"
);

const SQL_JOURNAL_BETWEEN: &str = "SELECT at_ms, direction, peer, mti, processing_code, stan, \
    transmission, acquirer, response_code, pan_masked, amount_minor, note, raw FROM journal \
    WHERE at_ms >= $1::bigint AND at_ms < $2::bigint ORDER BY at_ms, id";

const SQL_SAGAS_BETWEEN: &str = concat!(
    "SELECT ",
    saga_columns!(),
    " FROM sagas WHERE created_at_ms >= $1::bigint AND created_at_ms < $2::bigint \
      ORDER BY created_at_ms, mti, acquirer, transmission, stan"
);

const SQL_SAF_SINCE: &str = concat!(
    "SELECT ",
    saf_columns!(),
    " FROM saf WHERE created_at_ms >= $1::bigint ORDER BY id"
);

const SQL_SAF_ENTRIES: &str = concat!("SELECT ", saf_columns!(), " FROM saf ORDER BY id");

// ---------------------------------------------------------------------------
// Decoding what the statements return

fn stored_answer(row: &Row, digest: usize, response: usize) -> StoreResult<StoredAnswer> {
    Ok(StoredAnswer {
        request_digest: digest_col(row, digest)?,
        response: bytes_col(row, response)?,
    })
}

/// The rows of [`SQL_RESERVE`], first match wins.
fn decide_reserve(rows: &[Row], amount_minor: u64) -> Decision<Reserve> {
    let decided = (|| {
        let what = |name: &str| {
            rows.iter()
                .find(|r| r.try_get::<_, &str>(0).ok() == Some(name))
        };
        if let Some(row) = what("reserved") {
            return Ok(Some(Reserve::Reserved(freeze_row(row, 1)?)));
        }
        if let Some(row) = what("answered") {
            let answer = stored_answer(row, 12, 13)?;
            return Ok(Some(Reserve::Duplicate {
                request_digest: answer.request_digest,
                answer: Some(answer),
            }));
        }
        if let Some(row) = what("saga") {
            let answered = row
                .try_get::<_, Option<&[u8]>>(13)
                .map_err(|e| corrupt(format!("saga response: {e}")))?
                .is_some();
            return Ok(Some(if answered {
                let answer = stored_answer(row, 12, 13)?;
                Reserve::Duplicate {
                    request_digest: answer.request_digest,
                    answer: Some(answer),
                }
            } else {
                Reserve::Duplicate {
                    request_digest: digest_col(row, 12)?,
                    answer: None,
                }
            }));
        }
        let Some(row) = what("freeze") else {
            return Ok(Some(Reserve::NotFound));
        };
        let freeze = freeze_row(row, 1)?;
        if freeze.state != FreezeState::Open {
            return Ok(Some(Reserve::NotOpen(freeze.state)));
        }
        let available_minor = freeze.available_minor();
        if amount_minor > available_minor {
            return Ok(Some(Reserve::Exceeds { available_minor }));
        }
        Ok(None)
    })();
    match decided {
        Ok(Some(r)) => Decision::Done(Ok(r)),
        Ok(None) => Decision::Rerun,
        Err(e) => Decision::Done(Err(e)),
    }
}

fn decide_close(rows: &[Row], amount_minor: u64) -> Decision<Close> {
    let Some(row) = rows.first() else {
        return Decision::Done(Ok(Close::NotFound));
    };
    let decided = (|| {
        let what = text_col(row, 0)?;
        let freeze = freeze_row(row, 1)?;
        if what == "closed" {
            return Ok(Some(Close::Closed(freeze)));
        }
        if freeze.state != FreezeState::Open {
            return Ok(Some(Close::NotOpen(freeze.state)));
        }
        let remaining_minor = freeze.available_minor();
        if remaining_minor != amount_minor {
            return Ok(Some(Close::AmountMismatch { remaining_minor }));
        }
        Ok(None)
    })();
    match decided {
        Ok(Some(c)) => Decision::Done(Ok(c)),
        Ok(None) => Decision::Rerun,
        Err(e) => Decision::Done(Err(e)),
    }
}

/// The answer recorded before, from columns 2 (digest) and 3 (response) of
/// the statements that end a freeze or a saga.
fn answer_before(rows: &[Row]) -> StoreResult<Option<StoredAnswer>> {
    let row = rows
        .first()
        .ok_or_else(|| corrupt("a statement returned no row"))?;
    let response: Option<&[u8]> = row
        .try_get(3)
        .map_err(|e| corrupt(format!("recorded response: {e}")))?;
    match response {
        None => Ok(None),
        Some(_) => stored_answer(row, 2, 3).map(Some),
    }
}

/// `(updated count, current state)` of the statements that end `SELECT count, state`.
fn count_and_state(rows: &[Row]) -> StoreResult<(i64, Option<String>)> {
    let row = rows
        .first()
        .ok_or_else(|| corrupt("a statement returned no row"))?;
    Ok((i64_col(row, 0)?, opt_text_col(row, 1)?))
}

// ---------------------------------------------------------------------------
// The trait

impl Store for PostgresStore {
    fn leases(self: Arc<Self>) -> Option<Arc<dyn Leases>> {
        Some(self)
    }
}

#[async_trait]
impl Decisions for PostgresStore {
    async fn answer(&self, request: &RequestKey) -> StoreResult<Option<StoredAnswer>> {
        let key = ReqCols::new(request)?;
        let (reply, answer) = oneshot::channel();
        self.lookups
            .send(Lookup { key, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    async fn record_answer(&self, request: &RequestKey, answer: StoredAnswer) -> StoreResult<()> {
        let r = ReqCols::new(request)?;
        let mut params: Params = Vec::with_capacity(7);
        r.push(&mut params);
        params.push(Box::new(answer.request_digest.to_vec()));
        params.push(Box::new(answer.response.to_vec()));
        params.push(Box::new(self.response_code(&answer)));
        self.write(r.order(), SQL_RECORD_ANSWER, params, |_| {
            Decision::Done(Ok(()))
        })
        .await
    }

    async fn insert_freeze(&self, freeze: NewFreeze) -> StoreResult<InsertFreeze> {
        let key = FreezeCols::new(&freeze.key)?;
        let r = ReqCols::new(&freeze.request)?;
        let amount = amount_in("frozen amount", freeze.amount_minor)?;
        let mut params: Params = Vec::with_capacity(14);
        r.push(&mut params);
        key.push(&mut params);
        params.push(Box::new(freeze.payer_pan.clone()));
        params.push(Box::new(freeze.payer_bank.clone()));
        params.push(Box::new(amount));
        params.push(Box::new(i32::from(freeze.currency)));
        params.push(Box::new(freeze.created_at_ms));
        params.push(Box::new(freeze.request_digest.to_vec()));
        params.push(Box::new(freeze.owner.clone()));
        self.write(key.order(), SQL_INSERT_FREEZE, params, |rows| {
            let decided = (|| {
                let what = |name: &str| {
                    rows.iter()
                        .find(|r| r.try_get::<_, &str>(0).ok() == Some(name))
                };
                if what("inserted").is_some() {
                    return Ok(Some(InsertFreeze::Inserted));
                }
                if let Some(row) = what("answered") {
                    let answer = stored_answer(row, 1, 2)?;
                    return Ok(Some(InsertFreeze::Exists {
                        request_digest: answer.request_digest,
                        answer: Some(answer),
                    }));
                }
                if let Some(row) = what("exists") {
                    return Ok(Some(InsertFreeze::Exists {
                        request_digest: digest_col(row, 1)?,
                        answer: None,
                    }));
                }
                Ok(None)
            })();
            match decided {
                Ok(Some(r)) => Decision::Done(Ok(r)),
                Ok(None) => Decision::Rerun,
                Err(e) => Decision::Done(Err(e)),
            }
        })
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
        let k = FreezeCols::new(key)?;
        let r = ReqCols::new(request)?;
        let target = if approved {
            FreezeState::Open
        } else {
            FreezeState::Declined
        };
        let mut params: Params = Vec::with_capacity(16);
        k.push(&mut params);
        r.push(&mut params);
        params.push(Box::new(target.as_str()));
        params.push(Box::new(answer.request_digest.to_vec()));
        params.push(Box::new(answer.response.to_vec()));
        params.push(Box::new(self.response_code(&answer)));
        push_saf(&mut params, &saf.iter().collect::<Vec<_>>());
        let name = key.to_string();
        self.write(k.order(), SQL_FINISH_FREEZE, params, move |rows| {
            let (updated, state) = match count_and_state(rows) {
                Ok(v) => v,
                Err(e) => return Decision::Done(Err(e)),
            };
            if updated == 1 {
                return Decision::Done(Ok(Settled::Now));
            }
            match state.as_deref().map(|s| (s, FreezeState::parse(s))) {
                None => Decision::Done(Err(invalid(format!("finish_freeze: no freeze {name}")))),
                Some((_, Some(FreezeState::Pending))) => Decision::Rerun,
                Some((_, Some(_))) => {
                    Decision::Done(answer_before(rows).map(|answer| Settled::Before { answer }))
                }
                Some((s, None)) => Decision::Done(Err(corrupt(format!("freeze state {s:?}")))),
            }
        })
        .await
    }

    async fn freeze(&self, key: &FreezeKey) -> StoreResult<Option<FreezeRecord>> {
        let k = FreezeCols::new(key)?;
        let rows = self.read(SQL_FREEZE, &[&k.0[0], &k.0[1], &k.0[2]]).await?;
        rows.first().map(|row| freeze_row(row, 0)).transpose()
    }

    async fn reserve(&self, receive: NewReceive) -> StoreResult<Reserve> {
        let r = ReqCols::new(&receive.request)?;
        let k = FreezeCols::new(&receive.freeze)?;
        let amount = amount_in("receive amount", receive.amount_minor)?;
        let state = SagaState::Debiting;
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let mut params: Params = Vec::with_capacity(18);
        r.push(&mut params);
        k.push(&mut params);
        params.push(Box::new(amount));
        params.push(Box::new(receive.receiver_pan.clone()));
        params.push(Box::new(receive.receiver_bank.clone()));
        params.push(Box::new(state.as_str()));
        params.push(Box::new(receive.request_digest.to_vec()));
        params.push(Box::new(receive.created_at_ms));
        params.push(Box::new(text(&receive.debit.stan)));
        params.push(Box::new(text(&receive.debit.transmission)));
        params.push(Box::new(text(&receive.credit.stan)));
        params.push(Box::new(text(&receive.credit.transmission)));
        params.push(Box::new(receive.owner.clone()));
        let amount_minor = receive.amount_minor;
        let reserved = self
            .write(k.order(), SQL_RESERVE, params, move |rows| {
                decide_reserve(rows, amount_minor)
            })
            .await?;
        if matches!(reserved, Reserve::Reserved(_)) {
            self.set_hint(receive.request, receive.freeze);
        }
        Ok(reserved)
    }

    async fn settle_receive(
        &self,
        request: &RequestKey,
        outcome: ReceiveOutcome,
        answer: StoredAnswer,
        follow_up: FollowUp,
    ) -> StoreResult<Settled> {
        let r = ReqCols::new(request)?;
        let (new_state, outcome_text) = match outcome {
            ReceiveOutcome::Approved => (SagaState::Approved, "approved"),
            ReceiveOutcome::Failed => (SagaState::Failed, "failed"),
        };
        let mut params: Params = Vec::with_capacity(19);
        r.push(&mut params);
        params.push(Box::new(new_state.as_str()));
        params.push(Box::new(self.response_code(&answer)));
        params.push(Box::new(outcome_text));
        params.push(Box::new(answer.request_digest.to_vec()));
        params.push(Box::new(answer.response.to_vec()));
        push_saf(&mut params, &follow_up.saf.iter().collect::<Vec<_>>());
        push_saf(
            &mut params,
            &follow_up.unfreeze_if_closed.iter().collect::<Vec<_>>(),
        );
        let order = self
            .hint(request)
            .and_then(|f| FreezeCols::new(&f).ok())
            .map_or_else(|| r.order(), |f| f.order());
        let name = r.0.join("/");
        let result = self
            .write(order, SQL_SETTLE, params, move |rows| {
                let (settled, current) = match count_and_state(rows) {
                    Ok(v) => v,
                    Err(e) => return Decision::Done(Err(e)),
                };
                if settled == 1 {
                    return Decision::Done(Ok(Settled::Now));
                }
                match current.as_deref().map(|s| (s, SagaState::parse(s))) {
                    None => Decision::Done(Err(invalid(format!("settle_receive: no saga {name}")))),
                    // Settled already: a second finish changes nothing.
                    Some((_, Some(c))) if c.is_final() => {
                        Decision::Done(answer_before(rows).map(|answer| Settled::Before { answer }))
                    }
                    Some((_, Some(_))) => Decision::Rerun,
                    Some((s, None)) => Decision::Done(Err(corrupt(format!("saga state {s:?}")))),
                }
            })
            .await;
        if result.is_ok() {
            self.drop_hint(request);
        }
        result
    }

    async fn close_freeze_queueing(
        &self,
        key: &FreezeKey,
        amount_minor: u64,
        request: &RequestKey,
        answer: StoredAnswer,
        notice: NewSafEntry,
    ) -> StoreResult<Close> {
        self.close_with(key, amount_minor, request, answer, Some(notice))
            .await
    }

    async fn saga(&self, request: &RequestKey) -> StoreResult<Option<SagaRecord>> {
        let r = ReqCols::new(request)?;
        let rows = self
            .read(SQL_SAGA, &[&r.0[0], &r.0[1], &r.0[2], &r.0[3]])
            .await?;
        rows.first().map(saga_row).transpose()
    }

    async fn allocate_stans(&self, count: u32) -> StoreResult<u32> {
        if !(1..=MAX_STAN).contains(&count) {
            return Err(invalid(format!(
                "allocate_stans: count {count} is not in 1..={MAX_STAN}"
            )));
        }
        let count = count as i32;
        let rows = self.read(SQL_ALLOCATE_STANS, &[&count]).await?;
        bump(&self.inner.counters.commits, 1);
        let row = rows
            .first()
            .ok_or_else(|| corrupt("the STAN counter row is missing"))?;
        let first: i32 = row
            .try_get(0)
            .map_err(|e| corrupt(format!("STAN counter: {e}")))?;
        u32::try_from(first)
            .ok()
            .filter(|n| (1..=MAX_STAN).contains(n))
            .ok_or_else(|| corrupt(format!("STAN counter at {first}")))
    }
}

#[async_trait]
impl SafQueue for PostgresStore {
    async fn saf_due(&self, now_ms: i64, limit: usize, hold_ms: i64) -> StoreResult<Vec<SafEntry>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.read(SQL_SAF_DUE, &[&now_ms, &limit, &hold_ms]).await?;
        let mut due = rows.iter().map(saf_row).collect::<StoreResult<Vec<_>>>()?;
        due.sort_by_key(|e| e.id);
        Ok(due)
    }

    async fn saf_settle(&self, id: i64, outcome: SafOutcome) -> StoreResult<()> {
        let (state, next, result) = match outcome {
            SafOutcome::Done { result } => ("done", None, result),
            SafOutcome::Retry {
                next_attempt_ms,
                result,
            } => ("pending", Some(next_attempt_ms), result),
            SafOutcome::Dead { result } => ("dead", None, result),
        };
        let params: Params = vec![
            Box::new(id),
            Box::new(state),
            Box::new(next),
            Box::new(result),
        ];
        self.write(format!("s{id:020}"), SQL_SAF_SETTLE, params, move |rows| {
            if rows.is_empty() {
                Decision::Done(Err(invalid(format!("saf entry {id} is not pending"))))
            } else {
                Decision::Done(Ok(()))
            }
        })
        .await
    }

    async fn saf_entries(&self) -> StoreResult<Vec<SafEntry>> {
        let rows = self.read(SQL_SAF_ENTRIES, &[]).await?;
        rows.iter().map(saf_row).collect()
    }
}

impl JournalSink for PostgresStore {
    fn journal(&self, entry: JournalEntry) {
        let inner = &self.inner;
        let mut queue = inner.journal.lock().unwrap_or_else(|p| p.into_inner());
        if queue.len() >= inner.options.journal_capacity {
            drop(queue);
            bump(&inner.counters.journal_dropped, 1);
            tracing::error!(
                capacity = inner.options.journal_capacity,
                mti = %String::from_utf8_lossy(&entry.mti),
                stan = ?entry.stan,
                peer = %entry.peer,
                "journal buffer full (database too slow or down): entry dropped"
            );
            return;
        }
        let was_empty = queue.is_empty();
        queue.push_back(entry);
        drop(queue);
        inner.journal_accepted.fetch_add(1, Ordering::SeqCst);
        if was_empty {
            inner.journal_wake.notify_one();
        }
    }
}

#[async_trait]
impl History for PostgresStore {
    async fn freezes(&self) -> StoreResult<Vec<FreezeRecord>> {
        let rows = self.read(SQL_FREEZES, &[]).await?;
        rows.iter().map(|row| freeze_row(row, 0)).collect()
    }

    async fn sagas(&self) -> StoreResult<Vec<SagaRecord>> {
        let rows = self.read(SQL_SAGAS, &[]).await?;
        rows.iter().map(saga_row).collect()
    }

    async fn open_freezes_created(
        &self,
        from_ms: i64,
        before_ms: i64,
        limit: usize,
    ) -> StoreResult<Vec<FreezeRecord>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .read(SQL_OPEN_FREEZES_CREATED, &[&from_ms, &before_ms, &limit])
            .await?;
        rows.iter().map(|row| freeze_row(row, 0)).collect()
    }

    async fn journal_between(&self, from_ms: i64, to_ms: i64) -> StoreResult<Vec<JournalEntry>> {
        // What was given before this call is written first.
        self.flush().await?;
        let rows = self.read(SQL_JOURNAL_BETWEEN, &[&from_ms, &to_ms]).await?;
        rows.iter().map(journal_row).collect()
    }

    async fn sagas_between(&self, from_ms: i64, to_ms: i64) -> StoreResult<Vec<SagaRecord>> {
        let rows = self.read(SQL_SAGAS_BETWEEN, &[&from_ms, &to_ms]).await?;
        rows.iter().map(saga_row).collect()
    }

    async fn saf_entries_since(&self, from_ms: i64) -> StoreResult<Vec<SafEntry>> {
        let rows = self.read(SQL_SAF_SINCE, &[&from_ms]).await?;
        rows.iter().map(saf_row).collect()
    }
}

#[async_trait]
impl Leases for PostgresStore {
    async fn renew_lease(&self, lease: &Lease, _now_ms: i64) -> StoreResult<()> {
        self.read(
            SQL_RENEW_LEASE,
            &[
                &lease.instance,
                &lease.duration_ms,
                &lease.unfinished_since_ms,
            ],
        )
        .await
        .map(|_| ())
    }

    async fn expired_leases(&self, _now_ms: i64, grace_ms: i64) -> StoreResult<Vec<ExpiredLease>> {
        let rows = self.read(SQL_EXPIRED_LEASES, &[&grace_ms]).await?;
        rows.iter()
            .map(|row| {
                Ok(ExpiredLease {
                    instance: text_col(row, 0)?,
                    unfinished_since_ms: i64_col(row, 1)?,
                })
            })
            .collect()
    }

    async fn drop_lease(&self, instance: &str, _now_ms: i64) -> StoreResult<()> {
        self.read(SQL_DROP_LEASE, &[&instance]).await.map(|_| ())
    }

    async fn unfinished_of(&self, owner: &str, since_ms: i64) -> StoreResult<Unfinished> {
        let freezes = self
            .read(SQL_UNFINISHED_FREEZES, &[&owner, &since_ms])
            .await?
            .iter()
            .map(|row| freeze_row(row, 0))
            .collect::<StoreResult<_>>()?;
        let sagas = self
            .read(SQL_UNFINISHED_SAGAS, &[&owner, &since_ms])
            .await?
            .iter()
            .map(saga_row)
            .collect::<StoreResult<_>>()?;
        Ok(Unfinished { freezes, sagas })
    }
}

impl PostgresStore {
    async fn close_with(
        &self,
        key: &FreezeKey,
        amount_minor: u64,
        request: &RequestKey,
        answer: StoredAnswer,
        notice: Option<NewSafEntry>,
    ) -> StoreResult<Close> {
        let k = FreezeCols::new(key)?;
        let r = ReqCols::new(request)?;
        let amount = amount_in("unfreeze amount", amount_minor)?;
        let mut params: Params = Vec::with_capacity(16);
        k.push(&mut params);
        params.push(Box::new(amount));
        r.push(&mut params);
        params.push(Box::new(answer.request_digest.to_vec()));
        params.push(Box::new(answer.response.to_vec()));
        params.push(Box::new(self.response_code(&answer)));
        push_saf(&mut params, &notice.iter().collect::<Vec<_>>());
        self.write(k.order(), SQL_CLOSE_FREEZE, params, move |rows| {
            decide_close(rows, amount_minor)
        })
        .await
    }
}

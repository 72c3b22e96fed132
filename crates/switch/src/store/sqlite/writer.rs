//! The writer thread: the only connection that writes, the commands it is
//! sent, group commit (one transaction a batch, replies after the commit, but
//! for reads that find nothing: [`Lookup`]) and the savepoint that lets one
//! failing command roll back alone.
//!
//! A batch is first run without savepoints when every command in it can run
//! again (a [`Call`]: its function only borrows what it captured). A
//! savepoint costs two statements and a copy of every page the command is
//! first to touch, and commands almost never fail. When one does, the whole
//! transaction is rolled back and the batch runs again the careful way, a
//! savepoint per command, so its outcome is the same as if it had run that
//! way at once: the failing command alone rolled back.

use std::time::{Duration, Instant};

use super::command_rate::CommandRate;
use super::*;

pub(super) enum Msg {
    Command(Box<dyn Command>),
    /// Journal entries are waiting.
    Wake,
}

/// What a command leaves to do once the batch's commit is decided: reply.
pub(super) type Reply = Box<dyn FnOnce(Result<(), String>) + Send>;

pub(super) trait Command: Send {
    /// Runs inside its own savepoint of the batch's transaction; sets
    /// `health.failed` when it failed, `health.broken` when its savepoint
    /// could not be rolled back.
    fn run(self: Box<Self>, conn: &Connection, health: &Health) -> Reply;
    /// Replies with an error without running (the transaction could not start).
    fn fail(self: Box<Self>, why: String);
    /// Whether [`Command::run_bare`] may be used: the command can run again
    /// after a run whose transaction was rolled back.
    fn repeatable(&self) -> bool {
        false
    }
    /// Runs the command without a savepoint and keeps its result for
    /// [`Command::concluded`]; `false` when it failed (what it wrote is then
    /// left in the transaction, which must be rolled back). Only called when
    /// [`Command::repeatable`].
    fn run_bare(&mut self, _conn: &Connection) -> bool {
        false
    }
    /// After a successful [`Command::run_bare`]: what to do once the batch's
    /// commit is decided.
    fn concluded(self: Box<Self>) -> Reply;
    /// Whether waiting for company can help it: its caller is answered
    /// after the batch's commit. A batch of none such (reads answered as
    /// soon as they have run, lookups that nearly always find nothing)
    /// does not wait.
    fn awaits_commit(&self) -> bool {
        true
    }
    /// Whether the command's outcome may be made durable by the decision
    /// log (`decision_log.rs`) rather than a SQLite commit: it changes
    /// nothing but the sagas' book, and reads neither `saga_log` nor the
    /// journal (so the rows the log holds may be inserted after it runs). A
    /// command that does write a row after all makes its batch commit in
    /// SQLite.
    fn log_safe(&self) -> bool {
        false
    }
}

pub(super) struct Call<F, T> {
    pub(super) f: F,
    pub(super) reply: oneshot::Sender<StoreResult<T>>,
    /// Whether `f` may run twice: it reads and writes only the database.
    pub(super) repeatable: bool,
    /// The result of a run without a savepoint, kept until the commit.
    pub(super) bare: Option<T>,
    /// [`Command::log_safe`].
    pub(super) log_safe: bool,
}

/// The reply a command's caller gets once the batch's commit is decided:
/// `result`, or the commit's failure.
fn replying<T: Send + 'static>(
    reply: oneshot::Sender<StoreResult<T>>,
    result: StoreResult<T>,
) -> Reply {
    Box::new(move |commit: Result<(), String>| {
        let _ = reply.send(commit.map_err(StoreError::Unavailable).and(result));
    })
}

impl<F, T> Command for Call<F, T>
where
    F: Fn(&Connection) -> StoreResult<T> + Send + 'static,
    T: Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection, health: &Health) -> Reply {
        let Call { f, reply, .. } = *self;
        let result = in_savepoint(conn, health, f);
        replying(reply, result)
    }

    fn fail(self: Box<Self>, why: String) {
        let _ = self.reply.send(Err(StoreError::Unavailable(why)));
    }

    fn repeatable(&self) -> bool {
        self.repeatable
    }

    fn log_safe(&self) -> bool {
        self.log_safe
    }

    fn run_bare(&mut self, conn: &Connection) -> bool {
        match (self.f)(conn) {
            Ok(value) => {
                self.bare = Some(value);
                true
            }
            Err(_) => false,
        }
    }

    fn concluded(self: Box<Self>) -> Reply {
        let Call { reply, bare, .. } = *self;
        let result = bare.ok_or_else(|| {
            StoreError::Unavailable("a command concluded without having run".into())
        });
        replying(reply, result)
    }
}

/// A command whose caller does not wait for the batch's commit: a read that
/// must see every write sent before it, answered as soon as it has run.
pub(super) struct Early<F, T> {
    pub(super) f: F,
    pub(super) reply: oneshot::Sender<StoreResult<T>>,
}

impl<F, T> Command for Early<F, T>
where
    F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    T: Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection, health: &Health) -> Reply {
        let Early { f, reply } = *self;
        let _ = reply.send(in_savepoint(conn, health, f));
        Box::new(|_| {})
    }

    fn fail(self: Box<Self>, why: String) {
        let _ = self.reply.send(Err(StoreError::Unavailable(why)));
    }

    fn concluded(self: Box<Self>) -> Reply {
        // Never run bare (not repeatable): it has replied already or never will.
        Box::new(|_| {})
    }

    fn awaits_commit(&self) -> bool {
        false
    }
}

/// A read that looks for something which, once found, is durable: a request's
/// stored answer. Finding nothing is answered as soon as the read has run:
/// whatever the batch's commit does, it cannot make something be found
/// (every batch before has committed or failed, and the writes this batch
/// holds so far are of other requests). What is found may have been written
/// by this very batch, so it waits for the commit like a [`Call`]. A request
/// seen for the first time, nearly every one, so does not wait a group
/// commit before its decision begins.
pub(super) struct Lookup<F, T> {
    pub(super) f: F,
    /// Taken once the caller has its answer.
    pub(super) reply: Option<oneshot::Sender<StoreResult<Option<T>>>>,
    /// What a run found, kept until the commit.
    pub(super) found: Option<T>,
}

impl<F, T> Lookup<F, T>
where
    F: Fn(&Connection) -> StoreResult<Option<T>> + Send + 'static,
    T: Send + 'static,
{
    /// Replies at once when nothing was found; otherwise keeps what was.
    fn settle_miss(&mut self, found: Option<T>) {
        match found {
            None => {
                if let Some(reply) = self.reply.take() {
                    let _ = reply.send(Ok(None));
                }
            }
            Some(value) => self.found = Some(value),
        }
    }

    /// What to do once the commit is decided: hand over what was found.
    fn after_commit(self) -> Reply {
        match self.reply {
            Some(reply) => replying(reply, Ok(self.found)),
            None => Box::new(|_| {}),
        }
    }
}

impl<F, T> Command for Lookup<F, T>
where
    F: Fn(&Connection) -> StoreResult<Option<T>> + Send + 'static,
    T: Send + 'static,
{
    fn run(mut self: Box<Self>, conn: &Connection, health: &Health) -> Reply {
        if self.reply.is_none() {
            // A first, bare run found nothing and said so.
            return Box::new(|_| {});
        }
        match in_savepoint(conn, health, &self.f) {
            Ok(found) => {
                self.settle_miss(found);
                self.after_commit()
            }
            Err(e) => {
                if let Some(reply) = self.reply.take() {
                    let _ = reply.send(Err(e));
                }
                Box::new(|_| {})
            }
        }
    }

    fn fail(mut self: Box<Self>, why: String) {
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(Err(StoreError::Unavailable(why)));
        }
    }

    fn repeatable(&self) -> bool {
        true
    }

    fn run_bare(&mut self, conn: &Connection) -> bool {
        if self.reply.is_none() {
            return true;
        }
        match (self.f)(conn) {
            Ok(found) => {
                self.settle_miss(found);
                true
            }
            Err(_) => false,
        }
    }

    fn concluded(self: Box<Self>) -> Reply {
        self.after_commit()
    }

    fn awaits_commit(&self) -> bool {
        // Nearly every lookup finds nothing and is answered as soon as it
        // has run; one that finds an answer waits for the commit either way.
        false
    }

    fn log_safe(&self) -> bool {
        // A stored answer is read from the sagas' book and from `sagas`.
        true
    }
}

/// A batch of fewer commands than this may wait for more
/// ([`SqliteOptions::commit_delay`](super::SqliteOptions::commit_delay)).
pub(super) const DELAY_BELOW: usize = 4;

/// Receive sagas in the writer's book and not ended from which a small
/// batch waits: a saga in flight sends its end within about a bank's round
/// trip. (The book also holds sagas waiting out a bank's timeout, for at
/// most `MATERIALIZE_AFTER + PRUNE_EVERY` log rows; its count is a hint,
/// and a wrong one costs at most the delay.)
pub(super) const DELAY_SIBLINGS: usize = 2;

/// When batches begin ([`super::SqliteOptions`]).
pub(super) struct Pacing {
    pub(super) commit_interval: Duration,
    /// Commands a second from which the interval applies (zero: always).
    pub(super) commit_interval_above: u64,
    pub(super) journal_wait: Duration,
    pub(super) commit_delay: Duration,
    /// How long the writer, idle, keeps the decision log's records.
    pub(super) log_idle: Duration,
}

/// What the writer waits for next.
enum Next {
    Message(Msg),
    /// The decision log's records are due for the database.
    Idle,
    /// Every sender is gone.
    Closed,
}

/// Moves what is queued into `batch`, up to `max_batch` commands.
fn take_queued(rx: &mut mpsc::Receiver<Msg>, batch: &mut Vec<Box<dyn Command>>, max_batch: usize) {
    while batch.len() < max_batch {
        match rx.try_recv() {
            Ok(Msg::Command(c)) => batch.push(c),
            Ok(Msg::Wake) => {}
            Err(_) => break,
        }
    }
}

/// After a wake-up for journal entries with no command queued: the first
/// command that arrives within `wait`, to carry the entries in its commit
/// (under load one follows within microseconds, and a commit of entries
/// alone costs as much as any other: its WAL frames and `fsync`). `None`
/// when none came in time (the entries are then committed alone, about
/// `wait` later than at once: the timer rounds up to the millisecond),
/// when every sender is gone, or without a `timer`.
fn first_command_within(
    timer: Option<&tokio::runtime::Runtime>,
    rx: &mut mpsc::Receiver<Msg>,
    wait: Duration,
) -> Option<Box<dyn Command>> {
    let timer = timer.filter(|_| !wait.is_zero())?;
    timer.block_on(async {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(Msg::Command(c))) => return Some(c),
                Ok(Some(Msg::Wake)) => continue,
                Ok(None) | Err(_) => return None,
            }
        }
    })
}

pub(super) fn exec(conn: &Connection, sql: &str) -> StoreResult<()> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute([]))
        .map_err(db)?;
    Ok(())
}

/// What the savepoints of a batch run the careful way report.
#[derive(Default)]
pub(super) struct Health {
    /// A savepoint could not be rolled back, or SQLite abandoned the
    /// transaction: the batch must not be committed.
    pub(super) broken: Cell<bool>,
    /// Something failed and was rolled back alone: what the writer holds in
    /// memory beside the file may no longer match it.
    pub(super) failed: Cell<bool>,
}

/// Runs `f` in a savepoint of the open transaction: on error, the transaction
/// is left as it was before. When that cannot be done (the rollback failed, or
/// SQLite rolled back the whole transaction itself), or when `f` succeeded
/// but its savepoint could not be released, `health.broken` is set, and the
/// batch must not be committed.
pub(super) fn in_savepoint<T>(
    conn: &Connection,
    health: &Health,
    f: impl FnOnce(&Connection) -> StoreResult<T>,
) -> StoreResult<T> {
    if let Err(e) = exec(conn, "SAVEPOINT command") {
        health.broken.set(true);
        return Err(e);
    }
    match f(conn) {
        Ok(value) => {
            if let Err(e) = exec(conn, "RELEASE command") {
                // What the command changed beside the database (the sagas'
                // book) cannot be taken back with the savepoint: the batch
                // is abandoned instead.
                health.failed.set(true);
                health.broken.set(true);
                return Err(e);
            }
            Ok(value)
        }
        Err(e) => {
            health.failed.set(true);
            if exec(conn, "ROLLBACK TO command").is_err() || exec(conn, "RELEASE command").is_err()
            {
                health.broken.set(true);
            }
            Err(e)
        }
    }
}

// ---------------------------------------------------------------------------
// The writer thread

pub(super) struct Writer {
    pub(super) conn: Connection,
    pub(super) journal: std_mpsc::Receiver<PackedEntry>,
    /// Entries taken from the channel and not yet committed.
    pub(super) pending_journal: Vec<PackedEntry>,
    /// A request's risk counter events, sent together.
    pub(super) risk_events: std_mpsc::Receiver<Vec<RiskEvent>>,
    /// Risk counter events taken from the channel and not yet committed.
    pub(super) pending_risk_events: Vec<RiskEvent>,
    pub(super) risk_log: Arc<std::sync::Mutex<RiskLog>>,
    pub(super) sagas: Arc<std::sync::Mutex<SagaBook>>,
    pub(super) shared: Arc<Shared>,
    /// Copies the WAL into the database file beside the writer (`None`
    /// when it could not start: the writer's own checkpoints go on);
    /// stopped before the writer's last batch, whose connection then
    /// closes last.
    pub(super) checkpointer: Option<Checkpointer>,
    /// The decision log (`decision_log.rs`); `None` when it is off or
    /// another process holds it: every batch then commits in SQLite.
    pub(super) log: Option<DecisionLog>,
    /// The admin listener's count of the batches the commit interval held
    /// (`Shared::spaced` is the same count for [`StoreStats`]).
    pub(super) spaced_metric: prometheus_client::metrics::counter::Counter,
}

/// What a batch run without savepoints came to.
struct BareRun {
    outcome: Result<(), String>,
    journaled: usize,
    risk_written: usize,
}

impl Writer {
    /// Takes batches of commands until every sender is gone; while commands
    /// come at `commit_interval_above` a second or more, a batch begins
    /// no sooner than `commit_interval` after the one before began, a small
    /// one waits `commit_delay` for company while sagas are in flight, and
    /// journal entries woken for with no command queued wait up to
    /// `journal_wait` for one to share its commit.
    pub(super) fn run(
        mut self,
        mut rx: mpsc::Receiver<Msg>,
        max_batch: usize,
        pacing: Pacing,
    ) -> Result<(), String> {
        let Pacing {
            commit_interval,
            commit_interval_above,
            journal_wait,
            commit_delay,
            log_idle,
        } = pacing;
        let mut batch: Vec<Box<dyn Command>> = Vec::with_capacity(max_batch);
        let mut last_began: Option<Instant> = None;
        let mut rate = CommandRate::new(commit_interval_above, Instant::now());
        // Only to wait for a command with a timeout (the channel's blocking
        // receive has none); without it, entries alone are committed at once.
        let timer = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| tracing::warn!("journal entries alone are committed at once: {e}"))
            .ok();
        loop {
            // While busy, the rest of the interval is slept out before the
            // next command is looked for: what is sent meanwhile is queued
            // without waking the writer (a wake-up costs the sender a system
            // call and the writer a context switch of its own), and the batch
            // begins when it would have anyway. It was held if a command
            // waited for the sleep's end (below: not a journal's wake-up alone).
            let mut held = match last_began
                .filter(|_| rate.busy() && rx.len() < max_batch && !rx.is_closed())
                .map(|began| (began + commit_interval).saturating_duration_since(Instant::now()))
                .filter(|wait| !wait.is_zero())
            {
                Some(wait) => {
                    std::thread::sleep(wait);
                    !rx.is_empty()
                }
                None => false,
            };
            let first = match self.next_message(timer.as_ref(), &mut rx, log_idle) {
                Next::Message(m) => m,
                Next::Idle => {
                    // What the decision log holds goes into the database,
                    // and the file is emptied.
                    self.batch(&mut batch, true);
                    self.empty_log_file();
                    continue;
                }
                Next::Closed => break,
            };
            match first {
                Msg::Command(c) => batch.push(c),
                Msg::Wake => {
                    // Commands queued behind the journal's wake-up waited for
                    // the sleep's end too; with none, nothing was held, and
                    // the journal's wait follows (it ends the moment a
                    // command comes, which has then waited for nothing).
                    take_queued(&mut rx, &mut batch, max_batch);
                    if batch.is_empty() {
                        held = false;
                        if let Some(c) = first_command_within(timer.as_ref(), &mut rx, journal_wait)
                        {
                            batch.push(c);
                        }
                    }
                }
            }
            take_queued(&mut rx, &mut batch, max_batch);
            // A batch the commit interval held does not wait for company too.
            if held {
                self.shared.spaced.fetch_add(1, Ordering::Relaxed);
                self.spaced_metric.inc();
            }
            if !held && self.awaits_company(&batch, max_batch, commit_delay) {
                // Bounded by the delay: what arrives meanwhile shares its
                // commit.
                std::thread::sleep(commit_delay);
                self.shared.delayed.fetch_add(1, Ordering::Relaxed);
                take_queued(&mut rx, &mut batch, max_batch);
            }
            let began = Instant::now();
            rate.took(batch.len(), began);
            last_began = Some(began);
            self.batch(&mut batch, false);
        }
        // Every sender is gone: write what the journal and the decision log
        // still hold, and the rows of the sagas held in memory (the file
        // then needs neither log).
        if let Some(checkpointer) = &mut self.checkpointer {
            checkpointer.stop();
        }
        self.batch(&mut batch, true);
        self.empty_log_file();
        if let Err(e) = saga_book::fold_log(&self.conn, &mut saga_book::lock(&self.sagas)) {
            tracing::warn!(
                "the sagas in flight stay in the store's log until it is next opened: {e}"
            );
        }
        match self.pending_journal.len() {
            0 => Ok(()),
            n => Err(format!("{n} journal entries could not be written")),
        }
    }

    /// The next message; [`Next::Idle`] when the decision log holds records
    /// and none came within `idle` (never without a `timer`: the records
    /// then wait for the next batch).
    fn next_message(
        &self,
        timer: Option<&tokio::runtime::Runtime>,
        rx: &mut mpsc::Receiver<Msg>,
        idle: Duration,
    ) -> Next {
        if !self.log.as_ref().is_some_and(DecisionLog::has_pending) {
            return rx.blocking_recv().map_or(Next::Closed, Next::Message);
        }
        // Under load the next message is queued already: no timer for it.
        match rx.try_recv() {
            Ok(m) => return Next::Message(m),
            Err(mpsc::error::TryRecvError::Disconnected) => return Next::Closed,
            Err(mpsc::error::TryRecvError::Empty) => {}
        }
        let Some(timer) = timer else {
            // No timer to wait with: the records wait for the next batch.
            return rx.blocking_recv().map_or(Next::Closed, Next::Message);
        };
        timer.block_on(async {
            match tokio::time::timeout(idle, rx.recv()).await {
                Ok(Some(m)) => Next::Message(m),
                Ok(None) => Next::Closed,
                Err(_) => Next::Idle,
            }
        })
    }

    /// Whether `batch` (a few commands, one of them at least answered after
    /// the commit) should wait `delay` for more: only while enough receive
    /// sagas are in flight that their ends are on their way.
    fn awaits_company(
        &self,
        batch: &[Box<dyn Command>],
        max_batch: usize,
        delay: Duration,
    ) -> bool {
        !delay.is_zero()
            && batch.len() < DELAY_BELOW.min(max_batch)
            && batch.iter().any(|c| c.awaits_commit())
            && saga_book::lock(&self.sagas).in_flight() >= DELAY_SIBLINGS
    }

    /// Runs `commands` (emptying it) and pending journal entries in one
    /// transaction, made durable by the decision log when it may be, else
    /// by SQLite's commit; with `apply_log`, always the latter, with what
    /// the decision log holds.
    fn batch(&mut self, commands: &mut Vec<Box<dyn Command>>, apply_log: bool) {
        self.shared.wake_pending.store(false, Ordering::SeqCst);
        while let Ok(entry) = self.journal.try_recv() {
            self.pending_journal.push(entry);
        }
        while let Ok(mut events) = self.risk_events.try_recv() {
            self.pending_risk_events.append(&mut events);
        }
        let log_pending = apply_log && self.log.as_ref().is_some_and(DecisionLog::has_pending);
        if commands.is_empty()
            && self.pending_journal.is_empty()
            && self.pending_risk_events.is_empty()
            && !log_pending
        {
            return;
        }
        if !self.conn.is_autocommit() {
            // A transaction left open by a failed commit.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        self.read_risk_log_again_if_stale();
        self.fold_sagas_if_stale();
        let started = std::time::Instant::now();
        if commands.iter().all(|c| c.repeatable()) {
            if let Some(run) = self.batch_bare(commands, apply_log) {
                self.shared
                    .commands
                    .fetch_add(commands.len() as u64, Ordering::Relaxed);
                let replies = commands.drain(..).map(|c| c.concluded()).collect();
                self.conclude(
                    run.outcome,
                    replies,
                    run.journaled,
                    run.risk_written,
                    started,
                );
                return;
            }
            // Rolled back: the careful way below, as if this had not run.
            self.shared.reruns.fetch_add(1, Ordering::Relaxed);
            self.read_risk_log_again_if_stale();
            self.fold_sagas_if_stale();
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
        let health = Health::default();
        // What the decision log holds goes in first: the commands may read
        // or delete what it holds (the sagas' log), and the commit makes its
        // records superseded.
        if let Some(log) = &self.log {
            if let Err(e) = in_savepoint(&self.conn, &health, |c| log.apply(c)) {
                tracing::warn!("the decision log's records could not be applied: {e}");
                health.broken.set(true);
            }
        }
        let journaled = match self.pending_journal.len() {
            0 => 0,
            n => match in_savepoint(&self.conn, &health, |c| {
                journal::write_packed(c, &self.pending_journal)
            }) {
                Ok(()) => n,
                Err(e) => {
                    tracing::warn!("journal entries kept for the next commit: {e}");
                    0
                }
            },
        };
        // Risk events go before every command: a counter loaded by a command
        // of this batch sees them (they were sent before it).
        let risk_written = match self.pending_risk_events.len() {
            0 => 0,
            n => match in_savepoint(&self.conn, &health, |c| {
                risk_log::lock(&self.risk_log).append(c, &self.pending_risk_events)
            }) {
                Ok(()) => n,
                Err(e) => {
                    tracing::warn!("risk counter events kept for the next commit: {e}");
                    0
                }
            },
        };
        self.shared
            .commands
            .fetch_add(commands.len() as u64, Ordering::Relaxed);
        let mut replies: Vec<Reply> = Vec::with_capacity(commands.len());
        for command in commands.drain(..) {
            if health.broken.get() || self.conn.is_autocommit() {
                health.broken.set(true);
                command.fail("the batch's transaction was abandoned".into());
            } else {
                replies.push(command.run(&self.conn, &health));
            }
        }

        if !health.broken.get()
            && !self.conn.is_autocommit()
            && risk_log::lock(&self.risk_log).wants_checkpoint()
        {
            if let Err(e) = in_savepoint(&self.conn, &health, |c| {
                risk_log::lock(&self.risk_log).checkpoint(c)
            }) {
                tracing::warn!("risk counters' checkpoint left for a later batch: {e}");
            }
        }
        // The batch's reservations are durable with it, or it is not committed.
        if !health.broken.get() && !self.conn.is_autocommit() {
            if let Err(e) = saga_book::log_batch(&self.conn, &mut saga_book::lock(&self.sagas)) {
                tracing::warn!("the sagas reserved could not be logged: {e}");
                health.broken.set(true);
            }
        }
        let outcome = if health.broken.get() || self.conn.is_autocommit() {
            Err("the batch's transaction was abandoned after an error".to_string())
        } else {
            self.commit()
        };
        if health.failed.get() {
            // A command failed: the sagas' book may hold what it did.
            saga_book::lock(&self.sagas).set_stale();
        }
        self.conclude(outcome, replies, journaled, risk_written, started);
    }

    /// Commits the open transaction, which holds what the decision log held.
    fn commit(&mut self) -> Result<(), String> {
        exec(&self.conn, "COMMIT").map_err(|e| format!("commit failed: {e}"))?;
        if let Some(log) = &mut self.log {
            log.applied();
        }
        Ok(())
    }

    /// Runs a batch of repeatable commands, its journal entries and risk
    /// events in one transaction without savepoints, and makes it durable:
    /// in the decision log when every command is [`Command::log_safe`] and
    /// wrote nothing, there are no risk events and the sagas' log is not
    /// due for pruning; else by committing it, with what the decision log
    /// holds. `None` when anything failed before: the transaction is then
    /// rolled back, nothing is written, and every command can run again.
    fn batch_bare(
        &mut self,
        commands: &mut [Box<dyn Command>],
        apply_log: bool,
    ) -> Option<BareRun> {
        exec(&self.conn, "BEGIN IMMEDIATE").ok()?;
        let journaled = self.pending_journal.len();
        let risk_written = self.pending_risk_events.len();
        let may_log = !apply_log
            && risk_written == 0
            && self.log.as_ref().is_some_and(DecisionLog::accepts)
            && commands.iter().all(|c| c.log_safe());
        let changes = self.conn.total_changes();
        // Whether the risk log's checkpoint ran (its memory moved with it).
        let mut checkpointed = false;
        let ran = (may_log || self.write_pending(journaled))
            && (risk_written == 0
                || risk_log::lock(&self.risk_log)
                    .append(&self.conn, &self.pending_risk_events)
                    .is_ok())
            && commands.iter_mut().all(|c| c.run_bare(&self.conn))
            && {
                let mut log = risk_log::lock(&self.risk_log);
                checkpointed = log.wants_checkpoint();
                !checkpointed || log.checkpoint(&self.conn).is_ok()
            };
        let logged = ran
            && may_log
            && !checkpointed
            && self.conn.total_changes() == changes
            && !saga_book::prune_due(&saga_book::lock(&self.sagas));
        let ran = ran
            && if logged {
                true
            } else {
                // In SQLite after all: what the log holds and the journal
                // entries were left out above (the commands, log-safe, read
                // neither), so they go in now.
                (!may_log || self.write_pending(journaled))
                    && saga_book::log_batch(&self.conn, &mut saga_book::lock(&self.sagas)).is_ok()
            };
        if !ran || self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
            saga_book::lock(&self.sagas).set_stale();
            if risk_written > 0 || checkpointed {
                // Its memory may hold what the file no longer does.
                risk_log::lock(&self.risk_log).set_stale();
            }
            return None;
        }
        let outcome = if logged {
            self.log_batch_durably(journaled)
        } else {
            self.commit()
        };
        Some(BareRun {
            outcome,
            journaled,
            risk_written,
        })
    }

    /// Inserts what the decision log holds and the first `journaled`
    /// pending journal entries, in the open transaction.
    fn write_pending(&self, journaled: usize) -> bool {
        self.log
            .as_ref()
            .is_none_or(|log| log.apply(&self.conn).is_ok())
            && (journaled == 0
                || journal::write_packed(&self.conn, &self.pending_journal[..journaled]).is_ok())
    }

    /// Makes a batch whose commands changed only the sagas' book durable in
    /// the decision log: its `saga_log` row and its journal packs, one
    /// record. The open transaction wrote nothing and ends. When the log
    /// cannot be written, the batch is written in SQLite instead, in that
    /// transaction, with everything the log held.
    fn log_batch_durably(&mut self, journaled: usize) -> Result<(), String> {
        let logged = Logged {
            saga_log: saga_book::take_log_row(&mut saga_book::lock(&self.sagas)),
            packs: journal::pack_rows(&self.pending_journal[..journaled]),
        };
        let appended = match &mut self.log {
            Some(log) if !logged.is_empty() => log.append(logged).map(|()| true),
            // Nothing to make durable (lookups, reads).
            _ => Ok(false),
        };
        match appended {
            Ok(wrote) => {
                if wrote {
                    self.shared.logged.fetch_add(1, Ordering::Relaxed);
                }
                // The transaction only read.
                if exec(&self.conn, "COMMIT").is_err() {
                    let _ = self.conn.execute_batch("ROLLBACK");
                }
                Ok(())
            }
            Err((logged, why)) => {
                tracing::warn!("{why}: the batch is committed in the store's file instead");
                self.log
                    .as_ref()
                    .map_or(Ok(()), |log| log.apply(&self.conn))
                    .and_then(|()| logged.insert(&self.conn, LogIds::Given))
                    .map_err(|e| format!("writing the batch in the store's file failed: {e}"))?;
                self.commit()
            }
        }
    }

    /// After a batch's commit (or its failure): the counters, what the
    /// journal and risk events still hold, and every command's reply.
    fn conclude(
        &mut self,
        outcome: Result<(), String>,
        replies: Vec<Reply>,
        journaled: usize,
        risk_written: usize,
        started: std::time::Instant,
    ) {
        match &outcome {
            Ok(()) => {
                crate::metrics::metrics().commit(
                    "sqlite",
                    replies.len(),
                    started.elapsed().as_secs_f64(),
                );
                self.shared.commits.fetch_add(1, Ordering::Relaxed);
                saga_book::lock(&self.sagas).committed();
                self.pending_journal.drain(..journaled);
                self.pending_risk_events.drain(..risk_written);
                self.shared.journal_backlog.written(journaled);
            }
            Err(e) => {
                tracing::warn!("{e}");
                if !self.conn.is_autocommit() {
                    let _ = self.conn.execute_batch("ROLLBACK");
                }
                // What the risk log and the sagas' book hold in memory may
                // now be ahead of the file.
                risk_log::lock(&self.risk_log).set_stale();
                saga_book::lock(&self.sagas).set_stale();
            }
        }
        for reply in replies {
            reply(outcome.clone());
        }
    }

    /// After a failure: the sagas' log folded into `sagas`, which rebuilds
    /// the book (until that succeeds, commands that need it fail).
    fn fold_sagas_if_stale(&mut self) {
        if !saga_book::lock(&self.sagas).is_stale() {
            return;
        }
        // The sagas' log rows the decision log holds go in first.
        if let Err(e) = self.apply_log_alone() {
            tracing::warn!(
                "the sagas in flight cannot be read back until the decision log is applied: {e}"
            );
            return;
        }
        let mut book = saga_book::lock(&self.sagas);
        if let Err(e) = saga_book::fold_log(&self.conn, &mut book) {
            tracing::warn!("the sagas in flight cannot be read back from the store: {e}");
        }
    }

    /// Empties the decision log's file when every record in it is in the
    /// database (a failure is logged: the next opening empties it).
    fn empty_log_file(&mut self) {
        if let Some(log) = &mut self.log {
            if let Err(e) = log.empty_file() {
                tracing::warn!("{e}");
            }
        }
    }

    /// Inserts what the decision log holds, in a transaction of its own.
    fn apply_log_alone(&mut self) -> StoreResult<()> {
        match &mut self.log {
            Some(log) => log.apply_alone(&self.conn, LogIds::Given),
            None => Ok(()),
        }
    }

    /// After a failed commit: the risk log's state read again from the file
    /// (until that succeeds, risk events wait and counters cannot be loaded).
    fn read_risk_log_again_if_stale(&mut self) {
        let mut log = risk_log::lock(&self.risk_log);
        if !log.is_stale() {
            return;
        }
        match RiskLog::open(&self.conn, log.options()) {
            Ok(fresh) => *log = fresh,
            Err(e) => tracing::warn!("the risk counters' log cannot be read back: {e}"),
        }
    }
}

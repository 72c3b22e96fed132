//! The write lanes and group commit: each lane holds one connection, sorts
//! the commands queued by freeze key and sends them as one pipelined
//! transaction (`sets.rs` says which statements); a failing statement's
//! commands run again apart from the rest, halved until the failing one is
//! alone.

use super::*;

// ---------------------------------------------------------------------------
// Commands and lanes

pub(super) type Params = Vec<Box<dyn ToSql + Sync + Send>>;

/// What a command's rows say once its batch committed.
pub(super) enum Decision<T> {
    Done(StoreResult<T>),
    /// The statement wrote nothing because the row changed between its
    /// snapshot and its update: run it again.
    Rerun,
}

pub(super) trait Command: Send + Sync {
    fn order(&self) -> &str;
    /// Journal entries accepted when the command was made: the messages
    /// behind its decision, which must be written before it commits.
    fn journal_mark(&self) -> u64;
    fn statement(&self) -> &Statement;
    /// The batch committed: reply, or hand the command back to run again.
    fn committed(self: Box<Self>, rows: &[Row]) -> Option<Box<dyn Command>>;
    /// Hands the command back to run again, or fails it with `why` when it
    /// ran again too often.
    fn rerun(self: Box<Self>, why: StoreError) -> Option<Box<dyn Command>>;
    fn fail(self: Box<Self>, error: StoreError);
}

pub(super) struct Call<T, D> {
    pub(super) order: String,
    pub(super) statement: Statement,
    pub(super) decode: D,
    pub(super) reply: oneshot::Sender<StoreResult<T>>,
    pub(super) reruns: u32,
    pub(super) journal_mark: u64,
}

/// Times a command runs again after seeing a row change under it.
pub(super) const MAX_RERUNS: u32 = 8;

impl<T, D> Command for Call<T, D>
where
    T: Send + 'static,
    D: Fn(&[Row]) -> Decision<T> + Send + Sync + 'static,
{
    fn order(&self) -> &str {
        &self.order
    }
    fn journal_mark(&self) -> u64 {
        self.journal_mark
    }
    fn statement(&self) -> &Statement {
        &self.statement
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
pub(super) enum BatchError {
    /// Serialization failure or deadlock: rolled back, run it again.
    Conflict(String),
    /// A statement failed (the commands at these places of the batch, or
    /// `None` for `BEGIN`/`COMMIT`): rolled back.
    Statement(Option<Vec<usize>>, tokio_postgres::Error),
    /// The connection broke or timed out. `sent` when the server may have
    /// received the batch: its outcome is then unknown.
    Broken { why: String, sent: bool },
}

/// Batches attempted again after conflicts before giving up.
pub(super) const MAX_CONFLICT_RETRIES: u32 = 10;

pub(super) async fn lane(inner: Arc<Inner>, mut rx: mpsc::Receiver<Box<dyn Command>>, n: usize) {
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
        // The messages behind these decisions are in the journal first:
        // those accepted before its commands were made, not what came since
        // (usually written already while the commands waited for the lane).
        let mark = batch.iter().map(|c| c.journal_mark()).max().unwrap_or(0);
        inner.journal_caught_up(mark).await;
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
pub(super) async fn run_batch(
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
            let started = std::time::Instant::now();
            match attempt(inner, connection, &group).await {
                Ok(results) => {
                    crate::metrics::metrics().commit(
                        "postgres",
                        group.len(),
                        started.elapsed().as_secs_f64(),
                    );
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
                        "statement failed; its commands run again apart (halved until one is alone), the others together"
                    );
                    bump(&inner.counters.splits, 1);
                    // Statements run in order: the first error is the failing
                    // statement's, the later ones only "aborted". The rest run
                    // together; a set statement's commands in two halves, each
                    // run again (and halved again while it fails), until the
                    // failing command is alone; without a statement to blame,
                    // every command alone.
                    let (failing, rest): (Vec<_>, Vec<_>) =
                        group.into_iter().enumerate().partition(|(i, _)| {
                            index.as_ref().is_none_or(|failing| failing.contains(i))
                        });
                    let mut failing: Vec<_> = failing.into_iter().map(|(_, c)| c).collect();
                    if !rest.is_empty() {
                        groups.push_front(rest.into_iter().map(|(_, c)| c).collect());
                    }
                    if index.is_some() && failing.len() > 1 {
                        let second = failing.split_off(failing.len() / 2);
                        groups.push_front(second);
                        groups.push_front(failing);
                    } else {
                        for command in failing.into_iter().rev() {
                            groups.push_front(vec![command]);
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
pub(super) async fn attempt(
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
    let units = plan(batch);
    let prepared = tokio::time::timeout(timeout, async {
        let begin = client
            .prepare_cached("BEGIN ISOLATION LEVEL READ COMMITTED")
            .await?;
        let commit = client.prepare_cached("COMMIT").await?;
        let mut statements = Vec::with_capacity(units.len());
        for unit in &units {
            statements.push(client.prepare_cached(unit.sql).await?);
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
    let params: Vec<Vec<&(dyn ToSql + Sync)>> = units.iter().map(|u| u.params.refs()).collect();
    type Query<'a> =
        Pin<Box<dyn Future<Output = Result<Vec<Row>, tokio_postgres::Error>> + Send + 'a>>;
    let mut queries: Vec<Query<'_>> = Vec::with_capacity(units.len() + 2);
    queries.push(Box::pin(client.query(&begin, &[])));
    for (statement, params) in statements.iter().zip(&params) {
        queries.push(Box::pin(client.query(statement, params)));
    }
    queries.push(Box::pin(client.query(&commit, &[])));
    bump(&inner.counters.round_trips, 1);
    bump(&inner.counters.statements, units.len() as u64);
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
    let mut rows = Vec::with_capacity(units.len());
    let mut first_error: Option<(Option<Vec<usize>>, tokio_postgres::Error)> = None;
    if let Err(e) = begun {
        first_error = Some((None, e));
    }
    for (unit, result) in units.iter().zip(results.by_ref()) {
        match result {
            Ok(r) => rows.push(r),
            Err(e) => {
                rows.push(Vec::new());
                if first_error.is_none() {
                    // A statement of no command's (`SQL_PLAN_BY_KEYS`): all alone.
                    let failing = Some(unit.commands.clone()).filter(|c| !c.is_empty());
                    first_error = Some((failing, e));
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
        // Committed: a row naming no command of its statement would be a
        // defect here, and the commands' outcomes are then unknown.
        return distribute(&units, rows, batch.len()).ok_or_else(|| BatchError::Broken {
            why: "a set statement returned a row for no command of it".into(),
            sent: true,
        });
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
pub(super) async fn pipeline<F: Future + Unpin>(queries: Vec<F>) -> Vec<F::Output> {
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

//! The store traits on SQLite: each call turns its keys into columns on the
//! caller's task, then runs its command on the writer thread (`call`) or, for
//! long reads, on a read-only connection of its own (`read`).

use bytes::Bytes;

use super::saga_packs;
use super::*;

// ---------------------------------------------------------------------------
// The trait

impl Store for SqliteStore {
    fn leases(self: Arc<Self>) -> Option<Arc<dyn Leases>> {
        None
    }

    fn maintenance(self: Arc<Self>) -> Option<Arc<dyn crate::store::Maintenance>> {
        Some(self)
    }
}

#[async_trait]
impl Decisions for SqliteStore {
    async fn answer(&self, request: &RequestKey) -> StoreResult<Option<StoredAnswer>> {
        let request = ReqCols::new(request)?;
        let sagas = self.sagas.clone();
        self.lookup(move |c| {
            let book = saga_book::lock(&sagas);
            book.usable()?;
            answer_of(c, &book, &request)
        })
        .await
    }

    async fn record_answer(
        &self,
        request: &RequestKey,
        answer: StoredAnswer,
    ) -> StoreResult<Recorded> {
        let request = ReqCols::new(request)?;
        let code = answer.response_code(&self.spec);
        let sagas = self.sagas.clone();
        self.call(move |c| {
            let book = saga_book::lock(&sagas);
            book.usable()?;
            record_rejection(c, &book, &request, &answer, code.as_deref())
        })
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
        let code = answer.response_code(&self.spec);
        let sagas = self.sagas.clone();
        self.call(move |c| {
            // A pending freeze has no totals to take from the book: a stale
            // book (emptied) does not hold this up.
            let book = saga_book::lock(&sagas);
            let settled = finish_freeze(
                c,
                &book.freezes,
                &key,
                approved,
                &request,
                &answer,
                code.as_deref(),
            )?;
            if let (Settled::Now, Some(entry)) = (&settled, &saf) {
                saf_enqueue(c, entry)?;
            }
            Ok(settled)
        })
        .await
    }

    async fn freeze(&self, key: &FreezeKey) -> StoreResult<Option<FreezeRecord>> {
        let key = FreezeCols::new(key)?;
        let sagas = self.sagas.clone();
        self.call_log_safe(move |c| {
            let book = saga_book::lock(&sagas);
            book.usable()?;
            load_freeze(c, &book.freezes, &key)
        })
        .await
    }

    async fn reserve(&self, receive: NewReceive) -> StoreResult<Reserve> {
        let request = ReqCols::new(&receive.request)?;
        let freeze = FreezeCols::new(&receive.freeze)?;
        let amount = amount_in("receive amount", receive.amount_minor)?;
        let sagas = self.sagas.clone();
        self.call_log_safe(move |c| {
            let mut book = saga_book::lock(&sagas);
            reserve(c, &mut book, &request, &freeze, &receive, amount)
        })
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
        let code = answer.response_code(&self.spec);
        let sagas = self.sagas.clone();
        self.call_log_safe(move |c| {
            let mut book = saga_book::lock(&sagas);
            book.usable()?;
            let ending = end_saga(c, &book, &request, outcome, &answer, code.as_deref())?;
            match ending {
                // Settled before: its follow-ups were queued then.
                Ending::Before => {
                    return Ok(Settled::Before {
                        answer: answer_of(c, &book, &request)?,
                    })
                }
                Ending::Packed { answer } => {
                    return Ok(Settled::Before {
                        answer: Some(answer),
                    })
                }
                _ => {}
            }
            queue_follow_up(c, &book, &request, outcome, &follow_up)?;
            // Last, once every statement has succeeded (see `saga_book.rs`).
            match ending {
                Ending::Held { end, totals } => book.end(&request.0, end, totals),
                Ending::Written { freeze, totals } => book.freezes.set(&freeze, totals),
                Ending::Before | Ending::Packed { .. } => {}
            }
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
        let code = answer.response_code(&self.spec);
        let sagas = self.sagas.clone();
        self.call(move |c| {
            let book = saga_book::lock(&sagas);
            book.usable()?;
            let result = close_freeze(
                c,
                &book.freezes,
                &key,
                amount_minor,
                &request,
                &answer,
                code.as_deref(),
            )?;
            if matches!(result, Close::Closed(_)) {
                saf_enqueue(c, &notice)?;
            }
            Ok(result)
        })
        .await
    }

    async fn saga(&self, request: &RequestKey) -> StoreResult<Option<SagaRecord>> {
        let request = ReqCols::new(request)?;
        let sagas = self.sagas.clone();
        self.call(move |c| {
            let mut book = saga_book::lock(&sagas);
            book.usable()?;
            // In the book: its row written as it is, to be read like any
            // other, and out of the book once the read has succeeded.
            let held = match book.get(&request.0) {
                Some((saga, end)) => {
                    saga_book::write_row(c, saga, end)?;
                    true
                }
                None => false,
            };
            query_opt(
                c,
                concat!(
                    "SELECT ",
                    saga_columns!(),
                    " FROM sagas WHERE mti = ?1 AND acquirer = ?2 AND transmission = ?3 \
                     AND stan = ?4"
                ),
                params![request.0[0], request.0[1], request.0[2], request.0[3]],
                |row| saga_row(row),
            )
            .and_then(|row| match row {
                Some(saga) => Ok(Some(saga)),
                None => saga_packs::find(c, &request.0)?
                    .map(|packed| packed.record())
                    .transpose(),
            })
            .inspect(|_| {
                if held {
                    book.remove(&request.0);
                }
            })
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
        // A read of `saf` alone, log-safe: polled every 50 ms, it would
        // otherwise make a SQLite commit (with what the decision log holds)
        // of each poll.
        self.call_log_safe(move |c| saf_due(c, now_ms, limit)).await
    }

    async fn saf_settle(&self, id: i64, outcome: SafOutcome) -> StoreResult<()> {
        self.call(move |c| saf_settle(c, id, &outcome)).await
    }

    async fn saf_entries(&self) -> StoreResult<Vec<SafEntry>> {
        self.call(move |c| {
            query_all(
                c,
                concat!("SELECT ", saf_columns!(), " FROM saf ORDER BY id"),
                |row| saf_row(row),
            )
        })
        .await
    }

    async fn saf_retry(&self, id: i64, now_ms: i64) -> StoreResult<crate::store::SafRetry> {
        self.call(move |c| super::audit::saf_retry(c, id, now_ms))
            .await
    }

    async fn saf_counts(&self) -> StoreResult<crate::store::saf::SafCounts> {
        self.read(move |c| {
            let rows = query_all(c, crate::store::saf::SafCounts::SQL, |row| {
                Ok((row.text(0)?, row.bigint(1)?))
            })?;
            Ok(crate::store::saf::saf_counts_of(rows))
        })
        .await
    }
}

impl SqliteStore {
    /// Hands an entry to the writer thread, which writes it with its next
    /// commit, and wakes the writer unless a wake-up is queued already.
    fn enqueue_journal(&self, entry: PackedEntry) {
        // Counted before it is sent, so the writer never counts it written first.
        self.shared.journal_backlog.accepted();
        if self.journal.send(entry).is_err() {
            self.shared.journal_backlog.written(1);
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
impl JournalSink for SqliteStore {
    fn journal(&self, entry: JournalEntry) {
        self.enqueue_journal(PackedEntry::of(&entry));
    }

    fn journal_message(
        &self,
        direction: Direction,
        peer: &str,
        msg: &iso8583::codec::Message,
        raw: Bytes,
        at_ms: i64,
        note: Option<String>,
    ) {
        let entry = with_message_columns(direction, peer, msg, at_ms, note.as_deref(), |c| {
            PackedEntry::new(c.as_bytes(), raw)
        });
        self.enqueue_journal(entry);
    }

    async fn journal_room(&self) {
        self.shared.journal_backlog.room().await
    }
}

/// Recovery's reads (`History::unfinished`). Their conditions are the
/// partial indexes' own (schema step 14), so SQLite reads those indexes and
/// no finished row.
const PENDING_FREEZES: &str = concat!(
    "SELECT ",
    freeze_columns!(),
    " FROM freezes WHERE state = 'pending' \
     ORDER BY created_at_ms, acquirer, transmission, stan"
);
const SAGAS_NOT_ENDED: &str = concat!(
    "SELECT ",
    saga_columns!(),
    " FROM sagas WHERE state <> 'approved' AND state <> 'failed' \
     ORDER BY created_at_ms, mti, acquirer, transmission, stan"
);

#[async_trait]
impl History for SqliteStore {
    async fn freezes(&self) -> StoreResult<Vec<FreezeRecord>> {
        let sagas = self.sagas.clone();
        self.call(move |c| {
            let book = saga_book::lock(&sagas);
            book.usable()?;
            let mut freezes = query_all(
                c,
                concat!(
                    "SELECT ",
                    freeze_columns!(),
                    " FROM freezes ORDER BY created_at_ms, acquirer, transmission, stan"
                ),
                |row| freeze_row(row, 0),
            )?;
            // With the totals the book holds (read, not written out: the
            // book changes only as a command's last step).
            for freeze in &mut freezes {
                book.freezes
                    .overlay(&FreezeCols::new(&freeze.key)?.0, freeze);
            }
            Ok(freezes)
        })
        .await
    }

    async fn sagas(&self) -> StoreResult<Vec<SagaRecord>> {
        self.write_sagas_in_flight().await?;
        self.call(|c| {
            let mut sagas = query_all(
                c,
                concat!("SELECT ", saga_columns!(), " FROM sagas"),
                |row| saga_row(row),
            )?;
            sagas.extend(saga_packs::records_between(c, i64::MIN, i64::MAX)?);
            saga_packs::sort(&mut sagas);
            Ok(sagas)
        })
        .await
    }

    async fn unfinished(&self) -> StoreResult<Unfinished> {
        self.write_sagas_in_flight().await?;
        self.call(|c| {
            let freezes = query_all(c, PENDING_FREEZES, |row| freeze_row(row, 0))?;
            let sagas = query_all(c, SAGAS_NOT_ENDED, |row| saga_row(row))?;
            Ok(Unfinished { freezes, sagas })
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
        // The freezes' totals the book holds, onto their rows for the read.
        self.write_sagas_in_flight().await?;
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
                |row| freeze_row(row, 0),
            )
        })
        .await
    }

    async fn journal_between(&self, from_ms: i64, to_ms: i64) -> StoreResult<Vec<JournalEntry>> {
        self.read(move |c| {
            let slice = journal::read_slice(
                c,
                from_ms,
                to_ms,
                RawMessages::All,
                JournalSliceBuilder::default(),
            )?;
            Ok(slice.iter().map(|view| view.to_entry()).collect())
        })
        .await
    }

    async fn journal_slice(
        &self,
        from_ms: i64,
        to_ms: i64,
        raw: RawMessages,
    ) -> StoreResult<JournalSlice> {
        self.journal_slice_reusing(from_ms, to_ms, raw, JournalSlice::default())
            .await
    }

    async fn journal_len(&self, from_ms: i64, to_ms: i64) -> StoreResult<Option<u64>> {
        self.read(move |c| journal::count(c, from_ms, to_ms).map(Some))
            .await
    }

    async fn journal_slice_reusing(
        &self,
        from_ms: i64,
        to_ms: i64,
        raw: RawMessages,
        reuse: JournalSlice,
    ) -> StoreResult<JournalSlice> {
        self.read(move |c| journal::read_slice(c, from_ms, to_ms, raw, reuse.recycle()))
            .await
    }

    async fn sagas_between(&self, from_ms: i64, to_ms: i64) -> StoreResult<Vec<SagaRecord>> {
        self.write_sagas_in_flight().await?;
        self.read(move |c| {
            let mut sagas = query_all_with(
                c,
                concat!(
                    "SELECT ",
                    saga_columns!(),
                    " FROM sagas WHERE created_at_ms >= ?1 AND created_at_ms < ?2"
                ),
                params![from_ms, to_ms],
                |row| saga_row(row),
            )?;
            sagas.extend(saga_packs::records_between(c, from_ms, to_ms)?);
            saga_packs::sort(&mut sagas);
            Ok(sagas)
        })
        .await
    }

    async fn saf_entries_since(&self, from_ms: i64) -> StoreResult<Vec<SafEntry>> {
        self.read(move |c| {
            query_all_with(
                c,
                concat!(
                    "SELECT ",
                    saf_columns!(),
                    " FROM saf WHERE created_at_ms >= ?1 ORDER BY id"
                ),
                params![from_ms],
                |row| saf_row(row),
            )
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Recovery's reads go through the partial indexes: a start reads what
    /// is unfinished, however many finished freezes and sagas the file holds.
    #[test]
    fn recovery_reads_only_the_unfinished_by_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.db");
        drop(SqliteStore::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        for (sql, index) in [
            (PENDING_FREEZES, "freezes_pending"),
            (SAGAS_NOT_ENDED, "sagas_unfinished"),
        ] {
            let mut plan = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let steps: Vec<String> = plan
                .query_map([], |row| row.get::<_, String>(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(
                steps
                    .iter()
                    .any(|s| s.contains(&format!("USING INDEX {index}"))),
                "{sql}: {steps:?}"
            );
            // Never the table itself, row by row.
            assert!(
                steps
                    .iter()
                    .filter(|s| s.starts_with("SCAN") || s.starts_with("SEARCH"))
                    .all(|s| s.contains("USING INDEX")),
                "{steps:?}"
            );
        }
    }
}

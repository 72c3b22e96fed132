//! The store traits on PostgreSQL: each call builds its parameters and hands
//! its statement to a lane (writes) or a pooled connection (reads).

use super::*;
use crate::store::columns::sealed;
use crate::vault;

// ---------------------------------------------------------------------------
// The trait

impl Store for PostgresStore {
    fn leases(self: Arc<Self>) -> Option<Arc<dyn Leases>> {
        Some(self)
    }

    fn maintenance(self: Arc<Self>) -> Option<Arc<dyn crate::store::Maintenance>> {
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

    async fn record_answer(
        &self,
        request: &RequestKey,
        answer: StoredAnswer,
    ) -> StoreResult<Recorded> {
        let r = ReqCols::new(request)?;
        let mut params: Params = Vec::with_capacity(7);
        r.push(&mut params);
        params.push(Box::new(answer.request_digest.to_vec()));
        params.push(Box::new(vault::seal_bytes(
            sealed::RESPONSE,
            &answer.response,
        )));
        params.push(Box::new(answer.response_code(&self.spec)));
        self.write(r.order(), SQL_RECORD_ANSWER, params, |rows| {
            // A row: the freeze's or saga's digest that holds the key.
            Decision::Done(match rows.first() {
                Some(row) => row
                    .digest(0)
                    .map(|request_digest| Recorded::Held { request_digest }),
                None => Ok(Recorded::Kept),
            })
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
        params.push(Box::new(vault::seal_text(
            sealed::PAYER_PAN,
            &freeze.payer_pan,
        )));
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
                        request_digest: row.digest(1)?,
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
        params.push(Box::new(vault::seal_bytes(
            sealed::RESPONSE,
            &answer.response,
        )));
        params.push(Box::new(answer.response_code(&self.spec)));
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
        let order = k.order();
        let row = ReserveRow {
            request: r,
            freeze: k,
            amount_minor: amount,
            receiver_pan: vault::seal_text(sealed::RECEIVER_PAN, &receive.receiver_pan),
            receiver_bank: receive.receiver_bank.clone(),
            state: SagaState::Debiting.as_str(),
            request_digest: receive.request_digest.to_vec(),
            created_at_ms: receive.created_at_ms,
            debit_stan: KeyText::lossy(&receive.debit.stan),
            debit_transmission: KeyText::lossy(&receive.debit.transmission),
            credit_stan: KeyText::lossy(&receive.credit.stan),
            credit_transmission: KeyText::lossy(&receive.credit.transmission),
            owner: receive.owner.clone(),
        };
        let amount_minor = receive.amount_minor;
        let reserved = self
            .command(
                order,
                Statement::Set(SetRow::Reserve(Box::new(row))),
                move |rows| decide_reserve(rows, amount_minor),
            )
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
        let order = self
            .hint(request)
            .and_then(|f| FreezeCols::new(&f).ok())
            .map_or_else(|| r.order(), |f| f.order());
        let name = joined(&r.0);
        let row = SettleRow {
            request: r,
            state: new_state.as_str(),
            response_code: answer.response_code(&self.spec),
            outcome: outcome_text,
            answer_digest: answer.request_digest.to_vec(),
            response: vault::seal_bytes(sealed::RESPONSE, &answer.response),
            follow_up: follow_up.saf.iter().map(SafRow::new).collect(),
            unfreeze_if_closed: follow_up
                .unfreeze_if_closed
                .iter()
                .map(SafRow::new)
                .collect(),
        };
        let result = self
            .command(
                order,
                Statement::Set(SetRow::Settle(Box::new(row))),
                move |rows| {
                    let (settled, current) = match count_and_state(rows) {
                        Ok(v) => v,
                        Err(e) => return Decision::Done(Err(e)),
                    };
                    if settled == 1 {
                        return Decision::Done(Ok(Settled::Now));
                    }
                    match current.as_deref().map(|s| (s, SagaState::parse(s))) {
                        None => {
                            Decision::Done(Err(invalid(format!("settle_receive: no saga {name}"))))
                        }
                        // Settled already: a second finish changes nothing.
                        Some((_, Some(c))) if c.is_final() => Decision::Done(
                            answer_before(rows).map(|answer| Settled::Before { answer }),
                        ),
                        Some((_, Some(_))) => Decision::Rerun,
                        Some((s, None)) => {
                            Decision::Done(Err(corrupt(format!("saga state {s:?}"))))
                        }
                    }
                },
            )
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

    async fn saf_retry(&self, id: i64, now_ms: i64) -> StoreResult<crate::store::SafRetry> {
        self.retry_dead(id, now_ms).await
    }

    async fn saf_counts(&self) -> StoreResult<crate::store::saf::SafCounts> {
        let rows = self.read(crate::store::saf::SafCounts::SQL, &[]).await?;
        let rows = rows
            .iter()
            .map(|row| Ok((row.text(0)?, row.bigint(1)?)))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(crate::store::saf::saf_counts_of(rows))
    }
}

#[async_trait]
impl JournalSink for PostgresStore {
    fn journal(&self, entry: JournalEntry) {
        let inner = &self.inner;
        inner.journal_backlog.accepted();
        let mut queue = inner.journal.lock().unwrap_or_else(|p| p.into_inner());
        let was_empty = queue.is_empty();
        queue.push_back(entry);
        // Counted under the lock, in queue order: `journal_done` reaching the
        // count means this entry and every one before it are written.
        inner.journal_accepted.fetch_add(1, Ordering::SeqCst);
        drop(queue);
        if was_empty {
            inner.journal_wake.notify_one();
        }
    }

    async fn journal_room(&self) {
        self.inner.journal_backlog.room().await
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

    async fn unfinished(&self) -> StoreResult<Unfinished> {
        let freezes = self
            .read(SQL_PENDING_FREEZES, &[])
            .await?
            .iter()
            .map(|row| freeze_row(row, 0))
            .collect::<StoreResult<_>>()?;
        let sagas = self
            .read(SQL_SAGAS_NOT_ENDED, &[])
            .await?
            .iter()
            .map(saga_row)
            .collect::<StoreResult<_>>()?;
        Ok(Unfinished { freezes, sagas })
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
                    instance: row.text(0)?,
                    unfinished_since_ms: row.bigint(1)?,
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
    pub(super) async fn close_with(
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
        params.push(Box::new(vault::seal_bytes(
            sealed::RESPONSE,
            &answer.response,
        )));
        params.push(Box::new(answer.response_code(&self.spec)));
        push_saf(&mut params, &notice.iter().collect::<Vec<_>>());
        self.write(k.order(), SQL_CLOSE_FREEZE, params, move |rows| {
            decide_close(rows, amount_minor)
        })
        .await
    }
}

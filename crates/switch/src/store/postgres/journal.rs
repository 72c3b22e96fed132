//! The journal task: entries buffered without waiting and written in order,
//! by binary COPY or multi-row INSERT, retried while the database is away
//! (never dropped: new work waits instead, see `JournalBacklog`).

use super::*;
use crate::store::columns::sealed;
use crate::vault;

// ---------------------------------------------------------------------------
// The journal task

pub(super) const JOURNAL_INSERT: &str = "INSERT INTO journal (at_ms, direction, peer, mti, processing_code, \
    stan, transmission, acquirer, response_code, pan_masked, amount_minor, note, raw) \
    SELECT at_ms, direction, peer, mti, processing_code, stan, transmission, acquirer, \
           response_code, pan_masked, amount_minor, note, raw \
    FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
                $7::text[], $8::text[], $9::text[], $10::text[], $11::bigint[], $12::text[], \
                $13::bytea[]) WITH ORDINALITY AS t(at_ms, direction, peer, mti, processing_code, \
                stan, transmission, acquirer, response_code, pan_masked, amount_minor, note, raw, n) \
    ORDER BY n";

impl Inner {
    pub(super) fn journal_done_add(&self, n: u64) {
        self.journal_done.send_modify(|done| *done += n);
    }

    /// Waits until the first `target` journal entries are written, so that a
    /// lane never commits a decision before the messages that led to it (the
    /// wallet's request, the bank's answer): after a crash the journal
    /// explains every decision recorded, as on the embedded store, which
    /// writes both in one transaction (clearing relies on it). Not while the
    /// journal cannot be written (the database is away: the batch then fails
    /// as fast as it would have), and never longer than the store's timeout.
    pub(super) async fn journal_caught_up(&self, target: u64) {
        let mut done = self.journal_done.subscribe();
        let caught_up =
            |written: &u64| *written >= target || self.journal_failing.load(Ordering::SeqCst);
        if caught_up(&done.borrow()) {
            return;
        }
        self.journal_wake.notify_one();
        let _ = tokio::time::timeout(self.options.timeout, done.wait_for(caught_up)).await;
    }
}

pub(super) async fn journal_writer(inner: Arc<Inner>, stop: CancellationToken) {
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
                inner.journal_failing.store(false, Ordering::SeqCst);
                bump(&inner.counters.journal_written, batch.len() as u64);
                inner.journal_done_add(batch.len() as u64);
                inner.journal_backlog.written(batch.len());
            }
            Err(e) => {
                failures += 1;
                // Lanes waiting for the journal stop waiting.
                inner.journal_failing.store(true, Ordering::SeqCst);
                inner.journal_done.send_modify(|_| {});
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

pub(super) const JOURNAL_COPY: &str =
    "COPY journal (at_ms, direction, peer, mti, processing_code, stan, \
    transmission, acquirer, response_code, pan_masked, amount_minor, note, raw) FROM STDIN BINARY";

pub(super) const JOURNAL_TYPES: [Type; 13] = [
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
pub(super) async fn write_journal(inner: &Inner, entries: &[JournalEntry]) -> StoreResult<()> {
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

pub(super) async fn copy_journal(
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
                &vault::seal_bytes(sealed::JOURNAL_RAW, &e.raw),
            ])
            .await?;
    }
    writer.finish().await?;
    Ok(())
}

pub(super) async fn insert_journal(
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
    let raw: Vec<Vec<u8>> = entries
        .iter()
        .map(|e| vault::seal_bytes(sealed::JOURNAL_RAW, &e.raw))
        .collect();
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

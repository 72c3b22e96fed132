//! Answer lookups: concurrent `answer` reads batched into one statement.

use super::*;

// ---------------------------------------------------------------------------
// Answer lookups

/// Every request starts with one: looking up the answers of all concurrent
/// requests in one statement costs the server far less than one each.
pub(super) struct Lookup {
    pub(super) key: ReqCols,
    pub(super) reply: oneshot::Sender<StoreResult<Option<StoredAnswer>>>,
}

/// One primary-key probe per key (the lateral subquery keeps a generic plan
/// from choosing to scan the whole table).
pub(super) const SQL_ANSWERS: &str = "SELECT t.n, a.request_digest, a.response \
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

pub(super) async fn answer_reader(inner: Arc<Inner>, mut rx: mpsc::Receiver<Lookup>) {
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
pub(super) async fn lookup_answers(
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
        let n = row.bigint(0)?;
        let slot = usize::try_from(n - 1)
            .ok()
            .and_then(|i| answers.get_mut(i))
            .ok_or_else(|| corrupt(format!("answer lookup returned position {n}")))?;
        *slot = stored_answer(row, 1, 2).map(Some);
    }
    Ok(answers)
}

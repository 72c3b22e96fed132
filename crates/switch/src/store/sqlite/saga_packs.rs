//! Ended receive sagas kept in packs: when the sagas' log is pruned
//! (`saga_book.rs`), the sagas of the book that have ended are written as
//! ONE row of `saga_packs` (their columns, encoded as a `saga_log` row's
//! records are, and compressed) and one narrow row each in `saga_keys`
//! (the saga's request key and its pack), instead of a row each in
//! `sagas` and its time index.
//!
//! Why: an ended saga's row cost the writer about 4–5 µs, most of it its
//! bytes (some 430 of them, written to the WAL, synced, and copied again at
//! each checkpoint), and a quarter of what the switch wrote a receive. In a
//! pack its columns repeat one another (keys, banks, the freeze's key), so
//! they compress; only the key index is written a saga.
//!
//! Once written, a saga is in one place: `sagas` or a pack (until then it
//! is in the book, and may have a row too if another process folded the
//! log: `saga_book.rs`).
//! - Only a pruning writes packs, and only of sagas it holds in its book:
//!   in flight, they had no row. The exception is another process that
//!   folded the log while the switch ran (`saga_book.rs`): that wrote rows
//!   for the sagas the log held then. A pruning therefore first checks that
//!   the oldest log row its ended sagas were logged in is still there (a
//!   fold deletes every row); if it is not, it writes rows, as before.
//! - Reads of one saga (a resend's lookup, its end, `saga`) look in `sagas`
//!   first, then in the key index; reads of many (`sagas`, `sagas_between`)
//!   read both and sort them as one. Recovery reads only `sagas`: a pack
//!   holds no saga in flight.
//! - A pack's body holds what a row would: the receiver's PAN and the
//!   answer sealed (`crate::vault`) when a data key is configured, so a pack
//!   is as unreadable without the key as a row; `switchboard rekey` seals
//!   them anew inside each pack ([`reseal_body`]).
//! - A body is read back as untrusted input: its length checked before
//!   anything is allocated (`journal_pack::decompress`), its records through
//!   `byte_reader::Reader`.

use super::saga_book::{self, FlyingSaga, SagaEnd};
use super::*;
use crate::store::columns::{sealed, Columns};
use crate::store::SagaRecord;
use crate::vault;

/// An ended saga as its pack holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct PackedSaga {
    pub(super) saga: FlyingSaga,
    pub(super) end: SagaEnd,
}

impl PackedSaga {
    /// The saga as [`saga_row`] reads a row of `sagas`.
    pub(super) fn record(&self) -> StoreResult<SagaRecord> {
        saga_row(&PackedColumns(self))
    }
}

/// The longest stretch of creation times one pack holds: a pruning's sagas
/// created in different hours (by the clock's hours since the epoch) go
/// into a pack each, so a read of a time range finds its packs by the
/// index on their first creation time, looking back no more than this
/// ([`records_between`]).
pub(super) const PACK_SPAN_MS: i64 = 3_600_000;

/// Writes `sagas` (ended, in key order) as packs, one an hour of creation
/// times they hold ([`PACK_SPAN_MS`]; under load, one), and their keys.
pub(super) fn write(conn: &Connection, sagas: &[(&FlyingSaga, &SagaEnd)]) -> StoreResult<()> {
    let mut by_hour: std::collections::BTreeMap<i64, Vec<(&FlyingSaga, &SagaEnd)>> =
        std::collections::BTreeMap::new();
    for &(saga, end) in sagas {
        by_hour
            .entry(saga.created_at_ms.div_euclid(PACK_SPAN_MS))
            .or_default()
            .push((saga, end));
    }
    for pack in by_hour.values() {
        write_pack(conn, pack)?;
    }
    Ok(())
}

/// Writes `sagas` (at least one) as one pack, and their keys.
fn write_pack(conn: &Connection, sagas: &[(&FlyingSaga, &SagaEnd)]) -> StoreResult<()> {
    let mut first_ms = i64::MAX;
    let mut last_ms = i64::MIN;
    for (saga, _) in sagas {
        first_ms = first_ms.min(saga.created_at_ms);
        last_ms = last_ms.max(saga.created_at_ms);
    }
    let body = stored_body(sagas.iter().copied());
    execute(
        conn,
        "INSERT INTO saga_packs (first_created_ms, last_created_ms, sagas, body) \
         VALUES (?1, ?2, ?3, ?4)",
        params![first_ms, last_ms, sagas.len() as i64, body],
    )?;
    let pack = conn.last_insert_rowid();
    let mut key = conn
        .prepare_cached(
            "INSERT INTO saga_keys (mti, acquirer, transmission, stan, pack) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(db)?;
    for (saga, _) in sagas {
        let [mti, acquirer, transmission, stan] = &saga.request;
        key.execute(params![mti, acquirer, transmission, stan, pack])
            .map_err(db)?;
    }
    Ok(())
}

/// An ended saga as a tool writes it into a pack ([`write_ended_sagas`]):
/// its record (approved or failed, its debit and credit sent, no reversal)
/// and the answer given.
#[derive(Clone, Debug)]
pub struct EndedSaga {
    pub record: SagaRecord,
    pub answer: crate::store::StoredAnswer,
}

/// Ended sagas written as the switch's pruning writes them (in key order,
/// one pack an hour of creation times, card data sealed when the process
/// has a data key), [`saga_book::FLUSH_ENDED`] a pack, about what a
/// pruning holds under load. Public for tools that build a store file
/// without a running store (the clearing benchmark), on a connection in a
/// transaction. Every saga is checked before anything is written: one not
/// ended, with a reversal, without its debit or credit, or whose key the
/// store holds already (a saga is in one place only) is an `Invalid`
/// error, and nothing is written.
pub fn write_ended_sagas(conn: &Connection, sagas: &[EndedSaga]) -> StoreResult<()> {
    let sent = |what: &str, sent: &Option<crate::store::SentMessage>| match sent {
        Some(s) => Ok([
            KeyText::digits("STAN", &s.stan)?,
            KeyText::digits("transmission date-time", &s.transmission)?,
        ]),
        None => Err(invalid(format!("an ended saga without its {what}"))),
    };
    let mut packed = Vec::with_capacity(sagas.len());
    for EndedSaga { record, answer } in sagas {
        if !record.state.is_final() || record.reversal.is_some() {
            return Err(invalid(format!(
                "a saga {:?}{} is not one a pack holds",
                record.state,
                if record.reversal.is_some() {
                    " with a reversal"
                } else {
                    ""
                }
            )));
        }
        let request = ReqCols::new(&record.request)?.0;
        if holds(conn, &request)? || super::commands::row_digest(conn, &request)?.is_some() {
            return Err(invalid(format!(
                "saga {} is in the store already",
                joined(&request)
            )));
        }
        let saga = FlyingSaga {
            request,
            freeze: FreezeCols::new(&record.freeze)?.0,
            amount_minor: i64::try_from(record.amount_minor)
                .map_err(|_| invalid(format!("amount {}", record.amount_minor)))?,
            receiver_pan: vault::seal_text(sealed::RECEIVER_PAN, &record.receiver_pan),
            receiver_bank: record.receiver_bank.clone(),
            request_digest: record.request_digest,
            created_at_ms: record.created_at_ms,
            debit: sent("debit", &record.debit)?,
            credit: sent("credit", &record.credit)?,
        };
        let end = SagaEnd {
            state: record.state,
            response_code: record.response_code.clone(),
            answer_digest: answer.request_digest,
            response: vault::seal_bytes(sealed::RESPONSE, &answer.response),
        };
        packed.push((saga, end));
    }
    for chunk in packed.chunks_mut(saga_book::FLUSH_ENDED) {
        chunk.sort_unstable_by(|a, b| a.0.request.cmp(&b.0.request));
        let refs: Vec<(&FlyingSaga, &SagaEnd)> = chunk.iter().map(|(s, e)| (s, e)).collect();
        write(conn, &refs)?;
    }
    Ok(())
}

/// A pack's body as stored: its sagas and their ends encoded as the log's
/// records are, compressed.
fn stored_body<'a>(
    sagas: impl ExactSizeIterator<Item = (&'a FlyingSaga, &'a SagaEnd)> + Clone,
) -> Vec<u8> {
    let plain = saga_book::encode(
        sagas.clone().map(|(saga, _)| saga),
        sagas.map(|(saga, end)| (&saga.request, end)),
        std::iter::empty(),
    );
    super::journal_pack::compress(&plain)
}

/// The pack that holds a saga's key, if one does.
fn pack_of(conn: &Connection, key: &[KeyText; 4]) -> StoreResult<Option<i64>> {
    query_opt(
        conn,
        "SELECT pack FROM saga_keys \
         WHERE mti = ?1 AND acquirer = ?2 AND transmission = ?3 AND stan = ?4",
        params![key[0], key[1], key[2], key[3]],
        |row| row.bigint(0),
    )
}

/// Whether a pack holds a saga's key.
pub(super) fn holds(conn: &Connection, key: &[KeyText; 4]) -> StoreResult<bool> {
    Ok(pack_of(conn, key)?.is_some())
}

/// An ended saga from its pack, if a pack holds its key.
pub(super) fn find(conn: &Connection, key: &[KeyText; 4]) -> StoreResult<Option<PackedSaga>> {
    let Some(pack) = pack_of(conn, key)? else {
        return Ok(None);
    };
    let body: Option<Vec<u8>> = query_opt(
        conn,
        "SELECT body FROM saga_packs WHERE id = ?1",
        params![pack],
        |row| row.blob(0),
    )?;
    let body =
        body.ok_or_else(|| corrupt(format!("saga pack {pack}: named by a key, not there")))?;
    let found = open(pack, &body)?
        .into_iter()
        .find(|s| &s.saga.request == key);
    match found {
        Some(saga) => Ok(Some(saga)),
        None => Err(corrupt(format!(
            "saga pack {pack}: no saga {}, which its key names",
            joined(key)
        ))),
    }
}

/// The ended sagas of every pack whose sagas were created in
/// `[from_ms, to_ms)` in part or whole, those created then as records.
pub(super) fn records_between(
    conn: &Connection,
    from_ms: i64,
    to_ms: i64,
) -> StoreResult<Vec<SagaRecord>> {
    // A pack spans less than PACK_SPAN_MS: one that holds a saga created
    // from `from_ms` on began no earlier than that much before.
    let bodies: Vec<(i64, Vec<u8>)> = query_all_with(
        conn,
        "SELECT id, body FROM saga_packs \
         WHERE first_created_ms >= ?1 AND first_created_ms < ?2 AND last_created_ms >= ?3 \
         ORDER BY id",
        params![from_ms.saturating_sub(PACK_SPAN_MS), to_ms, from_ms],
        |row| Ok((row.bigint(0)?, row.blob(1)?)),
    )?;
    let mut records = Vec::new();
    for (id, body) in &bodies {
        for saga in open(*id, body)? {
            if (from_ms..to_ms).contains(&saga.saga.created_at_ms) {
                records.push(saga.record()?);
            }
        }
    }
    Ok(records)
}

/// Sagas in the order the readers of `sagas` give them: by creation time,
/// then key.
pub(super) fn sort(records: &mut [SagaRecord]) {
    records.sort_unstable_by_key(|r| {
        (
            r.created_at_ms,
            r.request.mti,
            r.request.acquirer.0,
            r.request.transmission,
            r.request.stan,
        )
    });
}

/// A stored body opened and read: its sagas, each with its end.
pub(super) fn open(id: i64, body: &[u8]) -> StoreResult<Vec<PackedSaga>> {
    let name = || format!("saga pack {id}");
    let plain = super::journal_pack::decompress(body, |why| corrupt(format!("{}: {why}", name())))?;
    let records = saga_book::decode_named(&plain, name())?;
    if !records.freezes.is_empty() || records.reserved.len() != records.ended.len() {
        return Err(corrupt(format!(
            "{}: {} sagas, {} ends and {} freezes' totals",
            name(),
            records.reserved.len(),
            records.ended.len(),
            records.freezes.len()
        )));
    }
    records
        .reserved
        .into_iter()
        .zip(records.ended)
        .map(|(saga, (key, end))| {
            if key == saga.request {
                Ok(PackedSaga { saga, end })
            } else {
                Err(corrupt(format!(
                    "{}: the end of {} after the saga {}",
                    name(),
                    joined(&key),
                    joined(&saga.request)
                )))
            }
        })
        .collect()
}

/// A pack's body with the card data in it sealed anew under the current
/// key (`None`: every value is sealed under it already). `switchboard
/// rekey` walks `saga_packs.body` with this in place of a column's value.
pub(super) fn reseal_body(id: i64, stored: &[u8]) -> StoreResult<Option<Vec<u8>>> {
    let vault = vault::vault().ok_or_else(|| {
        invalid("no data key is configured: nothing to seal under ([security] data_key_file)")
    })?;
    let mut sagas = open(id, stored)?;
    let mut changed = false;
    for packed in &mut sagas {
        let pan = vault
            .reseal_text(sealed::RECEIVER_PAN, &packed.saga.receiver_pan)
            .map_err(|e| unsealed(sealed::RECEIVER_PAN, e))?;
        if let Some(pan) = pan {
            packed.saga.receiver_pan = pan;
            changed = true;
        }
        let response = vault
            .reseal_bytes(sealed::RESPONSE, &packed.end.response)
            .map_err(|e| unsealed(sealed::RESPONSE, e))?;
        if let Some(response) = response {
            packed.end.response = response;
            changed = true;
        }
    }
    if !changed {
        return Ok(None);
    }
    Ok(Some(stored_body(sagas.iter().map(|p| (&p.saga, &p.end)))))
}

/// A packed saga's columns in [`saga_columns!`] order, for [`saga_row`]:
/// the same reader as a row's, so a saga reads the same from either.
struct PackedColumns<'a>(&'a PackedSaga);

impl PackedColumns<'_> {
    fn column(&self, idx: usize) -> StoreResult<Option<&str>> {
        let (saga, end) = (&self.0.saga, &self.0.end);
        Ok(match idx {
            0..=3 => Some(saga.request[idx].as_str()),
            4..=6 => Some(saga.freeze[idx - 4].as_str()),
            8 => Some(saga.receiver_pan.as_str()),
            9 => Some(saga.receiver_bank.as_str()),
            10 => Some(end.state.as_str()),
            11 | 12 => Some(saga.debit[idx - 11].as_str()),
            13 | 14 => Some(saga.credit[idx - 13].as_str()),
            // A saga of the book is written with no reversal's columns.
            15 | 16 => None,
            17 => end.response_code.as_deref(),
            _ => return Err(corrupt(format!("saga pack: column {idx} is not text"))),
        })
    }
}

impl Columns for PackedColumns<'_> {
    fn text(&self, idx: usize) -> StoreResult<String> {
        self.column(idx)?
            .map(String::from)
            .ok_or_else(|| corrupt(format!("saga pack: column {idx} is null")))
    }

    fn opt_text(&self, idx: usize) -> StoreResult<Option<String>> {
        Ok(self.column(idx)?.map(String::from))
    }

    fn bigint(&self, idx: usize) -> StoreResult<i64> {
        match idx {
            7 => Ok(self.0.saga.amount_minor),
            18 => Ok(self.0.saga.created_at_ms),
            _ => Err(corrupt(format!(
                "saga pack: column {idx} is not an integer"
            ))),
        }
    }

    fn opt_bigint(&self, idx: usize) -> StoreResult<Option<i64>> {
        self.bigint(idx).map(Some)
    }

    fn int(&self, idx: usize) -> StoreResult<i64> {
        self.bigint(idx)
    }

    fn blob(&self, idx: usize) -> StoreResult<Vec<u8>> {
        match idx {
            19 => Ok(self.0.saga.request_digest.to_vec()),
            _ => Err(corrupt(format!("saga pack: column {idx} is not a blob"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::saga_book::tests::end;

    /// A saga of the fixture, under an acquirer of 11 digits (as the
    /// switch's are: a record checks it).
    fn saga(stan: &str) -> FlyingSaga {
        let mut saga = super::super::saga_book::tests::saga(stan);
        saga.request[1] = "48020000000".into();
        saga.freeze[0] = "48020000000".into();
        saga
    }

    fn store() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&conn).unwrap();
        conn
    }

    fn row_of(conn: &Connection, stan: &str) -> SagaRecord {
        query_opt(
            conn,
            concat!("SELECT ", saga_columns!(), " FROM sagas WHERE stan = ?1"),
            params![stan],
            |row| saga_row(row),
        )
        .unwrap()
        .unwrap()
    }

    /// A packed saga is found by its key and reads back as its row would
    /// have: the same record through the same reader.
    #[test]
    fn a_packed_saga_reads_back_as_its_row_would() {
        let conn = store();
        let (a, b) = (saga("000002"), saga("000003"));
        let mut failed = end(None);
        failed.state = SagaState::Failed;
        let approved = end(Some("00"));
        write(&conn, &[(&a, &approved), (&b, &failed)]).unwrap();
        // The same sagas as rows, to compare (under other MTIs: one key each).
        let mut rows = saga_book::RowWriter::new(&conn).unwrap();
        for (s, e) in [(&a, &approved), (&b, &failed)] {
            let mut as_row = s.clone();
            as_row.request[0] = "0220".into();
            rows.write(&as_row, Some(e)).unwrap();
        }
        drop(rows);
        for (s, e) in [(&a, &approved), (&b, &failed)] {
            let packed = find(&conn, &s.request).unwrap().unwrap();
            assert_eq!((&packed.saga, &packed.end), (s, e));
            let mut row = row_of(&conn, s.request[3].as_str());
            row.request.mti = *b"0200";
            assert_eq!(packed.record().unwrap(), row);
            assert!(holds(&conn, &s.request).unwrap());
        }
        let mut absent = a.request.clone();
        absent[3] = "000009".into();
        assert_eq!(find(&conn, &absent).unwrap(), None);
        assert!(!holds(&conn, &absent).unwrap());
        // By creation time: both sagas share theirs.
        let at = a.created_at_ms;
        assert_eq!(records_between(&conn, at, at + 1).unwrap().len(), 2);
        assert!(records_between(&conn, at + 1, at + 2).unwrap().is_empty());
        assert!(records_between(&conn, at - 1, at).unwrap().is_empty());
    }

    /// A pruning's sagas created in different hours go into a pack each,
    /// and a read of a time range finds every pack that holds one of its
    /// sagas, however far into its hour the range begins.
    #[test]
    fn a_pack_holds_one_hour_and_a_range_finds_its_packs() {
        let conn = store();
        let hour = PACK_SPAN_MS;
        let base = 1_764_576_000_000 - 1_764_576_000_000 % hour;
        let at = [base + 1, base + hour - 1, base + hour, base + 3 * hour + 5];
        let sagas: Vec<FlyingSaga> = at
            .iter()
            .enumerate()
            .map(|(i, &ms)| {
                let mut s = saga(&format!("{:06}", i + 2));
                s.created_at_ms = ms;
                s
            })
            .collect();
        let done = end(Some("00"));
        let written: Vec<(&FlyingSaga, &SagaEnd)> = sagas.iter().map(|s| (s, &done)).collect();
        write(&conn, &written).unwrap();
        let spans: Vec<(i64, i64, i64)> = query_all(
            &conn,
            "SELECT first_created_ms, last_created_ms, sagas FROM saga_packs ORDER BY id",
            |r| Ok((r.bigint(0)?, r.bigint(1)?, r.bigint(2)?)),
        )
        .unwrap();
        assert_eq!(
            spans,
            vec![(at[0], at[1], 2), (at[2], at[2], 1), (at[3], at[3], 1)]
        );
        let found = |from: i64, to: i64| -> Vec<i64> {
            let mut records = records_between(&conn, from, to).unwrap();
            sort(&mut records);
            records.iter().map(|r| r.created_at_ms).collect()
        };
        assert_eq!(found(at[1], at[1] + 1), vec![at[1]]);
        assert_eq!(found(at[0], at[3] + 1), at.to_vec());
        assert_eq!(found(base + 2, base + 3 * hour), vec![at[1], at[2]]);
        assert!(found(at[2] + 1, at[3]).is_empty());
    }

    /// A tool's ended sagas read back as the records they were written
    /// from; a saga not ended is refused and leaves nothing written.
    #[test]
    fn ended_sagas_written_by_a_tool_read_back_as_given() {
        let conn = store();
        let a = saga("000002");
        let packed = PackedSaga {
            saga: a.clone(),
            end: end(Some("00")),
        };
        let record = packed.record().unwrap();
        let answer = crate::store::StoredAnswer {
            request_digest: [9; 32],
            response: bytes::Bytes::from_static(b"0210 response"),
        };
        let mut records = Vec::new();
        for stan in 2..300u32 {
            let mut r = record.clone();
            r.request.stan = format!("{stan:06}").into_bytes().try_into().unwrap();
            records.push(EndedSaga {
                record: r,
                answer: answer.clone(),
            });
        }
        write_ended_sagas(&conn, &records).unwrap();
        let mut read = records_between(&conn, i64::MIN, i64::MAX).unwrap();
        sort(&mut read);
        let given: Vec<SagaRecord> = records.iter().map(|e| e.record.clone()).collect();
        assert_eq!(read, given);
        let packs: i64 = query_opt(&conn, "SELECT count(*) FROM saga_packs", [], |r| {
            r.bigint(0)
        })
        .unwrap()
        .unwrap();
        assert_eq!(packs, 2, "256 a pack");
        assert_eq!(find(&conn, &a.request).unwrap(), Some(packed));

        let mut flying = records[0].clone();
        flying.record.state = SagaState::Debiting;
        flying.record.request.stan = *b"000900";
        let mut fresh = records[0].clone();
        fresh.record.request.stan = *b"000901";
        // Refused whole: a saga not ended, or one the store holds already
        // (a key packed above), after one it would have taken.
        for refused in [&records[5], &flying] {
            let result = write_ended_sagas(&conn, &[fresh.clone(), refused.clone()]);
            assert!(matches!(result, Err(StoreError::Invalid(_))), "{result:?}");
        }
        assert_eq!(
            records_between(&conn, i64::MIN, i64::MAX).unwrap().len(),
            298
        );
    }

    /// Every cut and every one-bit change of a stored pack, and of the
    /// records inside it, opens to an error or to sagas: never a panic.
    #[test]
    fn no_cut_or_flipped_bit_of_a_pack_panics() {
        let (a, b) = (saga("000002"), saga("000003"));
        let done = end(Some("00"));
        let plain = saga_book::encode(
            [&a, &b].into_iter(),
            [(&a.request, &done), (&b.request, &done)].into_iter(),
            std::iter::empty(),
        );
        let stored = super::super::journal_pack::compress(&plain);
        assert_eq!(open(1, &stored).unwrap().len(), 2);
        let mut opened = 0;
        for bytes in [&stored, &plain] {
            let read = |b: &[u8]| {
                if bytes == &stored {
                    open(1, b).map(|s| s.len())
                } else {
                    saga_book::decode_named(b, "records".into()).map(|r| r.reserved.len())
                }
            };
            for cut in 0..bytes.len() {
                let _ = read(&bytes[..cut]);
            }
            for at in 0..bytes.len() {
                for bit in 0..8 {
                    let mut changed = bytes.clone();
                    changed[at] ^= 1 << bit;
                    opened += usize::from(read(&changed).is_ok());
                }
            }
        }
        // Some changes land in values (a digit, a digest) and still read.
        assert!(opened > 0);
    }

    /// A damaged pack is an error naming it, never a panic or an
    /// allocation of what a damaged length says.
    #[test]
    fn a_damaged_pack_is_an_error_naming_it() {
        let conn = store();
        let a = saga("000002");
        write(&conn, &[(&a, &end(Some("00")))]).unwrap();
        let body: Vec<u8> = query_opt(&conn, "SELECT body FROM saga_packs", [], |r| r.blob(0))
            .unwrap()
            .unwrap();
        let mut huge = body.clone();
        huge[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        // Opens, but to records that are not there (LZ4 keeps no checksum:
        // the records are read as untrusted, as the block is).
        let five_promised = super::super::journal_pack::compress(&[2, 5, 0, 0, 0]);
        for damaged in [
            body[..body.len() / 2].to_vec(),
            huge,
            five_promised,
            b"not a pack".to_vec(),
            Vec::new(),
        ] {
            execute(&conn, "UPDATE saga_packs SET body = ?1", params![damaged]).unwrap();
            match find(&conn, &a.request) {
                Err(StoreError::Corrupt(why)) => assert!(why.contains("saga pack 1"), "{why}"),
                other => panic!("{other:?}"),
            }
        }
        // Records that open but do not make a pack: a saga without its end,
        // an end of another saga, the saga its key names missing.
        let b = saga("000003");
        let done = end(Some("00"));
        let not_packs = [
            saga_book::encode(
                [&a, &b].into_iter(),
                [(&a.request, &done)].into_iter(),
                std::iter::empty(),
            ),
            saga_book::encode(
                [&a].into_iter(),
                [(&b.request, &done)].into_iter(),
                std::iter::empty(),
            ),
            saga_book::encode(
                [&b].into_iter(),
                [(&b.request, &done)].into_iter(),
                std::iter::empty(),
            ),
        ];
        for (plain, why) in not_packs
            .iter()
            .zip(["2 sagas, 1 ends", "the end of", "no saga"])
        {
            let body = super::super::journal_pack::compress(plain);
            execute(&conn, "UPDATE saga_packs SET body = ?1", params![body]).unwrap();
            match find(&conn, &a.request) {
                Err(StoreError::Corrupt(e)) => assert!(e.contains(why), "{e}"),
                other => panic!("{other:?}"),
            }
        }
        execute(&conn, "DELETE FROM saga_packs", []).unwrap();
        match find(&conn, &a.request) {
            Err(StoreError::Corrupt(why)) => assert!(why.contains("not there"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}

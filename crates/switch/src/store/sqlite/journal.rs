//! The embedded store's journal: written as packs (`journal_packs`, one row
//! for the entries of a commit, see `journal_pack.rs`), read back in time
//! order for clearing, the operator's `switchboard journal` and retention.
//!
//! Entries written before packs (schema step 9) stay in the `journal`
//! table, a row each: every reader reads them too, before the packs.
//!
//! A pack spans at most [`PACK_SPAN_MS`] of entry times, so the packs that
//! hold a stretch of time are found in the time index by a bounded range
//! (entries are stamped when their message crossed the wire, and one that
//! waited in the backlog can be older than those written with it).

use rusqlite::types::ValueRef;

use super::journal_pack::{self, Entries, Pack, PackedEntry, Raws};
use super::*;
use crate::store::columns::sealed;
use crate::vault;

/// The most entries in one pack.
const PACK_ENTRIES: usize = 1024;
/// The widest span of entry times in one pack.
pub(super) const PACK_SPAN_MS: i64 = 60_000;

/// The packs that may hold entries with `?1 <= at_ms < ?2`, by the time
/// index; `?3` is [`span_end`] of `?2`.
const OVERLAPPING: &str = "last_ms >= ?1 AND last_ms < ?3 AND first_ms < ?2";

/// Past the last entry time of a pack that begins before `to_ms`.
fn span_end(to_ms: i64) -> i64 {
    to_ms.saturating_add(PACK_SPAN_MS)
}

// ---------------------------------------------------------------------------
// Writing

/// Writes `entries` as packs (see `write_packed`). Public for tools that
/// build a store file without a running store (the clearing benchmark), on
/// a connection in a transaction.
pub fn write_journal(conn: &Connection, entries: &[JournalEntry]) -> StoreResult<()> {
    let packed: Vec<PackedEntry> = entries.iter().map(PackedEntry::of).collect();
    write_packed(conn, &packed)
}

/// Writes `entries` as packs: in time order (those of the same millisecond
/// in the order given), cut where a pack would hold 1,024 entries or span
/// more than 60 s, or a value would pass what a reader opens. The store's
/// writer calls it inside its commit.
pub(super) fn write_packed(conn: &Connection, entries: &[PackedEntry]) -> StoreResult<()> {
    insert_packs(conn, &pack_rows(entries))
}

/// A pack as its `journal_packs` row holds it: its values compressed, its
/// raw messages sealed.
#[derive(Debug, PartialEq)]
pub(super) struct PackRow {
    pub(super) first_ms: i64,
    pub(super) last_ms: i64,
    pub(super) entries: u32,
    pub(super) body: Vec<u8>,
    pub(super) raws: Vec<u8>,
}

/// `entries` cut into packs as [`write_packed`] writes them.
pub(super) fn pack_rows(entries: &[PackedEntry]) -> Vec<PackRow> {
    let mut ordered: Vec<&PackedEntry> = entries.iter().collect();
    if !ordered.is_sorted_by_key(|e| e.at_ms) {
        ordered.sort_by_key(|e| e.at_ms);
    }
    let mut rows = Vec::new();
    let mut rest = &ordered[..];
    while let Some(first) = rest.first() {
        let end = rest
            .iter()
            .take(PACK_ENTRIES)
            .position(|e| e.at_ms.saturating_sub(first.at_ms) > PACK_SPAN_MS)
            .unwrap_or(rest.len().min(PACK_ENTRIES));
        let mut pack = Pack::with_capacity(end);
        for e in &rest[..end] {
            // Cut where a value would grow past what a reader opens.
            if !pack.fits(e) {
                break;
            }
            pack.push(e);
        }
        // The entries the pack took: all up to `end`, or fewer when cut.
        let end = pack.entries as usize;
        let (body, raws) = pack.stored();
        rows.push(PackRow {
            first_ms: pack.first_ms,
            last_ms: pack.last_ms,
            entries: pack.entries,
            body,
            raws: vault::seal_bytes(sealed::JOURNAL_PACK_RAWS, &raws),
        });
        rest = &rest[end..];
    }
    rows
}

/// Inserts packs made by [`pack_rows`].
pub(super) fn insert_packs(conn: &Connection, rows: &[PackRow]) -> StoreResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO journal_packs (first_ms, last_ms, entries, body, raws) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(db)?;
    for row in rows {
        insert
            .execute(params![
                row.first_ms,
                row.last_ms,
                row.entries,
                row.body,
                row.raws,
            ])
            .map_err(db)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Reading

/// The entries with `from_ms <= at_ms < to_ms` into `slice`, in time order
/// (then in the order written), raw messages kept as `raw` says.
pub(super) fn read_slice(
    conn: &Connection,
    from_ms: i64,
    to_ms: i64,
    raw: RawMessages,
    mut slice: JournalSliceBuilder,
) -> StoreResult<JournalSlice> {
    let mut rows = conn
        .prepare_cached(concat!(
            "SELECT ",
            journal_columns!(),
            " FROM journal WHERE at_ms >= ?1 AND at_ms < ?2 ORDER BY at_ms, id"
        ))
        .map_err(db)?;
    let mut legacy = rows.query(params![from_ms, to_ms]).map_err(db)?;
    while let Some(row) = legacy.next().map_err(db)? {
        journal_row_into(row, raw, &mut slice)?;
    }
    each_pack(
        conn,
        &format!("{OVERLAPPING} ORDER BY id"),
        params![from_ms, to_ms, span_end(to_ms)],
        true,
        |_, mut entries| {
            while let Some(entry) = entries.next_entry()? {
                let columns = entry.columns;
                if (from_ms..to_ms).contains(&columns.at_ms) {
                    let kept = raw.keeps(&columns.mti).then_some(entry.raw);
                    slice.push_bytes(columns, kept)?;
                }
            }
            Ok(true)
        },
    )?;
    slice.sort_by_time();
    slice.finish()
}

/// How many entries have `from_ms <= at_ms < to_ms`: counted in the time
/// index for the packs wholly inside, read for those across an end.
pub(super) fn count(conn: &Connection, from_ms: i64, to_ms: i64) -> StoreResult<u64> {
    let legacy: i64 = conn
        .prepare_cached("SELECT count(*) FROM journal WHERE at_ms >= ?1 AND at_ms < ?2")
        .and_then(|mut s| s.query_row(params![from_ms, to_ms], |r| r.get(0)))
        .map_err(db)?;
    let inside: i64 = conn
        .prepare_cached(
            "SELECT coalesce(sum(entries), 0) FROM journal_packs \
             WHERE last_ms >= ?1 AND last_ms < ?2 AND first_ms >= ?1",
        )
        .and_then(|mut s| s.query_row(params![from_ms, to_ms], |r| r.get(0)))
        .map_err(db)?;
    let mut across = 0u64;
    each_pack(
        conn,
        &format!("{OVERLAPPING} AND NOT (first_ms >= ?1 AND last_ms < ?2)"),
        params![from_ms, to_ms, span_end(to_ms)],
        false,
        |_, mut entries| {
            while let Some(entry) = entries.next_entry()? {
                across += u64::from((from_ms..to_ms).contains(&entry.columns.at_ms));
            }
            Ok(true)
        },
    )?;
    Ok(u64::try_from(legacy + inside).unwrap_or(0) + across)
}

// ---------------------------------------------------------------------------
// Retention

/// Empties the raw messages of entries with `from_ms <= at_ms < to_ms`,
/// keeping their columns: at most `limit` rows of the `journal` table, and
/// packs until `limit` entries are emptied (so at most `limit` plus a
/// pack's); returns how many entries it emptied, at least `limit` unless
/// none are left. A pack wholly inside has its `raws` emptied; one across
/// an end is written again without the messages inside.
pub(super) fn purge(
    conn: &Connection,
    from_ms: i64,
    to_ms: i64,
    limit: usize,
) -> StoreResult<usize> {
    let limit_sql = i64::try_from(limit).unwrap_or(i64::MAX);
    let legacy = execute(
        conn,
        "UPDATE journal SET raw = X'' WHERE id IN (SELECT id FROM journal \
         WHERE at_ms >= ?1 AND at_ms < ?2 AND length(raw) > 0 ORDER BY at_ms LIMIT ?3)",
        params![from_ms, to_ms, limit_sql],
    )?;
    // Those wholly inside: `raws` emptied, the entries whose message was
    // not empty yet counted from the body.
    let mut inside: Vec<(i64, usize)> = Vec::new();
    let mut emptied_inside = 0;
    each_pack(
        conn,
        "last_ms >= ?1 AND last_ms < ?2 AND first_ms >= ?1 AND length(raws) > 0 \
         ORDER BY id LIMIT ?3",
        params![from_ms, to_ms, limit_sql],
        false,
        |id, mut entries| {
            let mut with_message = 0;
            while let Some(entry) = entries.next_entry()? {
                with_message += usize::from(entry.raw_len > 0);
            }
            inside.push((id, with_message));
            // About `limit` entries a call, not `limit` packs of them.
            emptied_inside += with_message;
            Ok(emptied_inside < limit)
        },
    )?;
    let mut emptied = legacy;
    for (id, with_message) in inside {
        execute(
            conn,
            "UPDATE journal_packs SET raws = X'' WHERE id = ?1",
            params![id],
        )?;
        emptied += with_message;
    }
    let mut across: Vec<(i64, Pack)> = Vec::new();
    each_pack(
        conn,
        &format!("{OVERLAPPING} AND NOT (first_ms >= ?1 AND last_ms < ?2) AND length(raws) > 0"),
        params![from_ms, to_ms, span_end(to_ms)],
        true,
        |id, mut entries| {
            let mut kept = Pack::with_capacity(0);
            let mut emptied_here = 0;
            while let Some(entry) = entries.next_entry()? {
                let inside = (from_ms..to_ms).contains(&entry.columns.at_ms);
                emptied_here += usize::from(inside && entry.raw_len > 0);
                kept.push_columns(entry.columns, if inside { &[] } else { entry.raw });
            }
            if emptied_here > 0 {
                emptied += emptied_here;
                across.push((id, kept));
            }
            Ok(true)
        },
    )?;
    for (id, pack) in across {
        let (body, raws) = pack.stored();
        execute(
            conn,
            "UPDATE journal_packs SET body = ?1, raws = ?2 WHERE id = ?3",
            params![
                body,
                vault::seal_bytes(sealed::JOURNAL_PACK_RAWS, &raws),
                id
            ],
        )?;
    }
    Ok(emptied)
}

// ---------------------------------------------------------------------------
// Values

/// Calls `each` with the id and entries of every pack the statement's rest
/// after `WHERE` selects, until it returns `false`; `with_raws`: their raw
/// messages read (and opened), else not even loaded.
fn each_pack(
    conn: &Connection,
    where_sql: &str,
    params: impl rusqlite::Params,
    with_raws: bool,
    mut each: impl FnMut(i64, Entries<'_>) -> StoreResult<bool>,
) -> StoreResult<()> {
    let raws = if with_raws { "raws" } else { "X''" };
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT id, body, {raws} FROM journal_packs WHERE {where_sql}"
        ))
        .map_err(db)?;
    let mut rows = stmt.query(params).map_err(db)?;
    while let Some(row) = rows.next().map_err(db)? {
        let id: i64 = row.get(0).map_err(db)?;
        let stored_body = blob(row, 1, id)?;
        let compressed = journal_pack::is_compressed(stored_body);
        let body = journal_pack::open(id, "body", stored_body, compressed)?;
        let opened = if with_raws {
            let raws = open_raws(blob(row, 2, id)?)?;
            Some(if compressed && !raws.is_empty() {
                // From the unsealed bytes, owned or the row's: a copy only
                // when the pack is not compressed, which it is here.
                let opened = journal_pack::open(id, "raws", &raws, true)?;
                std::borrow::Cow::Owned(opened.into_owned())
            } else {
                raws
            })
        } else {
            None
        };
        let raws = match &opened {
            Some(raws) => Raws::Read(raws),
            None => Raws::Unread,
        };
        if !each(id, Entries::new(id, &body, raws)?)? {
            break;
        }
    }
    Ok(())
}

fn blob<'a>(row: &'a Row<'_>, idx: usize, id: i64) -> StoreResult<&'a [u8]> {
    row.get_ref(idx)
        .map_err(db)?
        .as_blob()
        .map_err(|e| corrupt(format!("journal pack {id}, column {idx}: {e}")))
}

/// A pack's raw messages as stored, opened when sealed.
fn open_raws(stored: &[u8]) -> StoreResult<std::borrow::Cow<'_, [u8]>> {
    if stored.starts_with(&vault::SEALED_MAGIC) {
        vault::open_bytes(sealed::JOURNAL_PACK_RAWS, stored)
            .map(std::borrow::Cow::Owned)
            .map_err(|e| unsealed(sealed::JOURNAL_PACK_RAWS, e))
    } else {
        Ok(std::borrow::Cow::Borrowed(stored))
    }
}

/// Appends a row of the `journal` table, in [`journal_columns!`] order, to
/// `slice`, borrowing its columns rather than copying each into a `String`;
/// its raw message is read (and opened, when sealed) only when `raw` keeps it.
fn journal_row_into(
    row: &Row<'_>,
    raw: RawMessages,
    slice: &mut JournalSliceBuilder,
) -> StoreResult<()> {
    // The text columns' bytes, checked to be UTF-8 once for the whole slice
    // by the builder rather than here, column by column.
    let opt_text = |idx: usize| -> StoreResult<Option<&[u8]>> {
        match row.get_ref(idx).map_err(db)? {
            ValueRef::Text(bytes) => Ok(Some(bytes)),
            ValueRef::Null => Ok(None),
            other => Err(corrupt(format!(
                "journal column {idx}: {:?} where text was expected",
                other.data_type()
            ))),
        }
    };
    let text = |idx: usize| -> StoreResult<&[u8]> {
        opt_text(idx)?.ok_or_else(|| corrupt(format!("journal column {idx} is null")))
    };
    let direction = match text(1)? {
        b"in" => Direction::In,
        b"out" => Direction::Out,
        other => {
            return Err(corrupt(format!(
                "journal direction {:?}",
                String::from_utf8_lossy(other)
            )))
        }
    };
    // As written: four characters, not necessarily digits.
    let mti = <[u8; 4]>::try_from(text(3)?).unwrap_or(*b"????");
    let amount: Option<i64> = row.get(10).map_err(db)?;
    let columns = JournalColumns {
        at_ms: row.get(0).map_err(db)?,
        direction,
        peer: text(2)?,
        mti,
        processing_code: opt_text(4)?,
        stan: opt_text(5)?,
        transmission: opt_text(6)?,
        acquirer: opt_text(7)?,
        response_code: opt_text(8)?,
        pan_masked: opt_text(9)?,
        amount_minor: amount.and_then(|a| u64::try_from(a).ok()),
        note: opt_text(11)?,
    };
    if !raw.keeps(&mti) {
        return slice.push_bytes(columns, None);
    }
    let stored = row
        .get_ref(12)
        .map_err(db)?
        .as_blob()
        .map_err(|e| corrupt(format!("journal column 12: {e}")))?;
    if stored.starts_with(&vault::SEALED_MAGIC) {
        let plain = vault::open_bytes(sealed::JOURNAL_RAW, stored)
            .map_err(|e| unsealed(sealed::JOURNAL_RAW, e))?;
        slice.push_bytes(columns, Some(&plain))
    } else {
        slice.push_bytes(columns, Some(stored))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn entry(i: i64) -> JournalEntry {
        JournalEntry {
            at_ms: 1_000 + i,
            direction: Direction::In,
            peer: "wallet 127.0.0.1:5000".into(),
            mti: *b"0200",
            processing_code: Some("400000".into()),
            stan: Some(format!("{i:06}")),
            transmission: Some("0501130000".into()),
            acquirer: Some("48020000".into()),
            response_code: None,
            pan_masked: Some("622202******0001".into()),
            amount_minor: Some(100),
            note: None,
            raw: Bytes::from(format!("raw {i}")),
        }
    }

    fn all(conn: &Connection) -> Vec<JournalEntry> {
        let slice = read_slice(
            conn,
            i64::MIN,
            i64::MAX,
            RawMessages::All,
            JournalSliceBuilder::default(),
        )
        .unwrap();
        slice.iter().map(|view| view.to_entry()).collect()
    }

    /// A file written before packs were compressed holds packs of version 1:
    /// they read beside compressed ones, and retention writes one it cuts
    /// across compressed.
    #[test]
    fn packs_of_version_1_read_and_purge_beside_compressed_ones() {
        let conn = Connection::open_in_memory().unwrap();
        schema::migrate(&conn).unwrap();
        let old: Vec<JournalEntry> = (0..10).map(entry).collect();
        let mut pack = Pack::with_capacity(old.len());
        for e in &old {
            pack.push(&PackedEntry::of(e));
        }
        conn.execute(
            "INSERT INTO journal_packs (first_ms, last_ms, entries, body, raws) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                pack.first_ms,
                pack.last_ms,
                pack.entries,
                pack.body,
                pack.raws
            ],
        )
        .unwrap();
        let new: Vec<JournalEntry> = (10..20).map(entry).collect();
        write_journal(&conn, &new).unwrap();
        let bodies: Vec<Vec<u8>> = conn
            .prepare("SELECT body FROM journal_packs ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(bodies.len(), 2);
        assert!(!journal_pack::is_compressed(&bodies[0]));
        assert!(journal_pack::is_compressed(&bodies[1]));
        let read = all(&conn);
        assert_eq!(format!("{read:?}"), format!("{:?}", [old, new].concat()));

        // [5, 15): half of each pack; the old one is written again, compressed.
        assert_eq!(purge(&conn, 1_005, 1_015, 100).unwrap(), 10);
        let read = all(&conn);
        assert_eq!(read.len(), 20);
        for (i, e) in read.iter().enumerate() {
            let emptied = (5..15).contains(&i);
            assert_eq!(e.raw.is_empty(), emptied, "{e:?}");
            if !emptied {
                assert_eq!(e.raw, format!("raw {i}"));
            }
        }
        let compressed: i64 = conn
            .query_row(
                "SELECT count(*) FROM journal_packs WHERE substr(body, 1, 1) = X'02'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(compressed, 2);
    }
}

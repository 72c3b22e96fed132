//! The SQLite schema: the steps that build it (`PRAGMA user_version` counts
//! those applied), the connection settings (WAL, synchronous, cache), and the
//! migration run at open.

use super::*;

/// Schema steps: `MIGRATIONS[i]` takes `user_version` from `i` to `i + 1`.
/// Append new steps; never edit a published one.
pub const MIGRATIONS: &[&str] = &[
    // 1: freezes, sagas, answers, journal, STAN counter.
    r#"
    CREATE TABLE freezes (
        acquirer       TEXT    NOT NULL,
        transmission   TEXT    NOT NULL,
        stan           TEXT    NOT NULL,
        payer_pan      TEXT    NOT NULL,
        payer_bank     TEXT    NOT NULL,
        amount_minor   INTEGER NOT NULL CHECK (amount_minor >= 0),
        currency       INTEGER NOT NULL CHECK (currency BETWEEN 0 AND 999),
        received_minor INTEGER NOT NULL DEFAULT 0 CHECK (received_minor >= 0),
        reserved_minor INTEGER NOT NULL DEFAULT 0 CHECK (reserved_minor >= 0),
        state          TEXT    NOT NULL
                       CHECK (state IN ('pending', 'open', 'declined', 'closed')),
        created_at_ms  INTEGER NOT NULL,
        request_digest BLOB    NOT NULL,
        PRIMARY KEY (acquirer, transmission, stan),
        CHECK (received_minor + reserved_minor <= amount_minor)
    ) STRICT, WITHOUT ROWID;

    CREATE TABLE sagas (
        mti                   TEXT    NOT NULL,
        acquirer              TEXT    NOT NULL,
        transmission          TEXT    NOT NULL,
        stan                  TEXT    NOT NULL,
        freeze_acquirer       TEXT    NOT NULL,
        freeze_transmission   TEXT    NOT NULL,
        freeze_stan           TEXT    NOT NULL,
        amount_minor          INTEGER NOT NULL CHECK (amount_minor >= 0),
        receiver_pan          TEXT    NOT NULL,
        receiver_bank         TEXT    NOT NULL,
        state                 TEXT    NOT NULL CHECK (state IN ('reserved', 'debiting',
                              'crediting', 'reversing_debit', 'approved', 'failed', 'in_doubt')),
        debit_stan            TEXT,
        debit_transmission    TEXT,
        credit_stan           TEXT,
        credit_transmission   TEXT,
        reversal_stan         TEXT,
        reversal_transmission TEXT,
        response_code         TEXT,
        request_digest        BLOB    NOT NULL,
        created_at_ms         INTEGER NOT NULL,
        PRIMARY KEY (mti, acquirer, transmission, stan)
    ) STRICT, WITHOUT ROWID;

    CREATE INDEX sagas_by_freeze ON sagas (freeze_acquirer, freeze_transmission, freeze_stan);

    CREATE TABLE answers (
        mti            TEXT NOT NULL,
        acquirer       TEXT NOT NULL,
        transmission   TEXT NOT NULL,
        stan           TEXT NOT NULL,
        request_digest BLOB NOT NULL,
        response       BLOB NOT NULL,
        response_code  TEXT,
        PRIMARY KEY (mti, acquirer, transmission, stan)
    ) STRICT, WITHOUT ROWID;

    CREATE TABLE journal (
        id              INTEGER PRIMARY KEY,
        at_ms           INTEGER NOT NULL,
        direction       TEXT    NOT NULL CHECK (direction IN ('in', 'out')),
        peer            TEXT    NOT NULL,
        mti             TEXT    NOT NULL,
        processing_code TEXT,
        stan            TEXT,
        transmission    TEXT,
        acquirer        TEXT,
        response_code   TEXT,
        pan_masked      TEXT,
        amount_minor    INTEGER,
        note            TEXT,
        raw             BLOB    NOT NULL
    ) STRICT;

    CREATE TABLE stan_counter (
        id        INTEGER PRIMARY KEY CHECK (id = 0),
        next_stan INTEGER NOT NULL CHECK (next_stan BETWEEN 1 AND 999999)
    ) STRICT;
    INSERT INTO stan_counter (id, next_stan) VALUES (0, 1);
    "#,
    // 2: the store-and-forward queue.
    r#"
    CREATE TABLE saf (
        id              INTEGER PRIMARY KEY,
        bank            TEXT    NOT NULL,
        order_key       TEXT    NOT NULL,
        kind            TEXT    NOT NULL CHECK (kind IN ('reversal', 'unfreeze')),
        message         BLOB    NOT NULL,
        created_at_ms   INTEGER NOT NULL,
        state           TEXT    NOT NULL CHECK (state IN ('pending', 'done', 'dead')),
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_ms INTEGER NOT NULL,
        last_result     TEXT
    ) STRICT;
    CREATE INDEX saf_pending ON saf (state, order_key, id);
    "#,
    // 3: end-of-day clearing reads the journal, sagas and queue by time.
    r#"
    CREATE INDEX journal_by_time ON journal (at_ms);
    CREATE INDEX sagas_by_time ON sagas (created_at_ms);
    CREATE INDEX saf_by_time ON saf (created_at_ms);
    "#,
    // 4: the expiry sweep finds open freezes by age without reading closed ones.
    r#"
    CREATE INDEX freezes_open_by_time ON freezes (created_at_ms) WHERE state = 'open';
    "#,
    // 5: the settlement days cleared, which journal retention may purge.
    r#"
    CREATE TABLE cleared_days (
        date          TEXT    PRIMARY KEY,
        cleared_at_ms  INTEGER NOT NULL,
        purge_began_ms INTEGER,
        purged_at_ms   INTEGER
    ) STRICT, WITHOUT ROWID;
    "#,
    // 6: what the risk rules count, and their hits by settlement day.
    r#"
    CREATE TABLE risk_events (
        rule         TEXT    NOT NULL,
        subject      TEXT    NOT NULL,
        at_ms        INTEGER NOT NULL,
        amount_minor INTEGER NOT NULL,
        detail       TEXT    NOT NULL DEFAULT ''
    ) STRICT;
    CREATE INDEX risk_events_by_subject ON risk_events (rule, subject, at_ms);
    CREATE INDEX risk_events_by_time ON risk_events (at_ms);
    CREATE TABLE risk_hits (
        day         TEXT    NOT NULL,
        at_ms       INTEGER NOT NULL,
        rule        TEXT    NOT NULL,
        mode        TEXT    NOT NULL,
        code        TEXT    NOT NULL,
        card        TEXT    NOT NULL,
        institution TEXT    NOT NULL
    ) STRICT;
    CREATE INDEX risk_hits_by_day ON risk_hits (day);
    "#,
    // 7: the operator actions asked of the admin listener.
    r#"
    CREATE TABLE audit_log (
        id     INTEGER PRIMARY KEY,
        at_ms  INTEGER NOT NULL,
        who    TEXT    NOT NULL,
        action TEXT    NOT NULL,
        target TEXT    NOT NULL,
        result TEXT    NOT NULL,
        reason TEXT    NOT NULL
    ) STRICT;
    "#,
    // 8: the risk counters as an append-only log of events (one row a writer
    // batch) and a snapshot row per counter (`risk_log.rs`). `risk_events`
    // is no longer written: what it holds is still read for a counter
    // without a snapshot row, until the sweeps have emptied it.
    r#"
    CREATE TABLE risk_log (
        seq    INTEGER PRIMARY KEY AUTOINCREMENT,
        events BLOB    NOT NULL
    ) STRICT;
    CREATE TABLE risk_counters (
        rule        TEXT    NOT NULL,
        subject     TEXT    NOT NULL,
        state       BLOB    NOT NULL,
        last_ms     INTEGER NOT NULL,
        through_seq INTEGER NOT NULL,
        PRIMARY KEY (rule, subject)
    ) STRICT, WITHOUT ROWID;
    "#,
    // 9: the journal as packs, one row for the entries of a commit
    // (`journal.rs`); the `journal` table keeps the rows written before and
    // is still read. The time index covers what counting reads.
    r#"
    CREATE TABLE journal_packs (
        id       INTEGER PRIMARY KEY,
        first_ms INTEGER NOT NULL,
        last_ms  INTEGER NOT NULL CHECK (last_ms >= first_ms),
        entries  INTEGER NOT NULL CHECK (entries > 0),
        body     BLOB    NOT NULL,
        raws     BLOB    NOT NULL
    ) STRICT;
    CREATE INDEX journal_packs_by_time ON journal_packs (last_ms, first_ms, entries);
    "#,
    // 10: a receive's answer kept on its saga, written by the statement that
    // ends it, rather than as a row of `answers` (one insert fewer a
    // receive); an answer of a receive ended before stays in `answers`.
    r#"
    ALTER TABLE sagas ADD COLUMN answer_digest BLOB;
    ALTER TABLE sagas ADD COLUMN response BLOB;
    "#,
    // 11: no index of sagas by freeze. No statement reads sagas by their
    // freeze (a saga names its freeze; a freeze's totals are on its row), and
    // the index cost every commit a page for each freeze its new sagas named
    // (the end of that freeze's range), most of the pages a commit wrote.
    r#"
    DROP INDEX IF EXISTS sagas_by_freeze;
    "#,
    // 12: the states of freezes and sagas checked by comparisons, not `IN`.
    // SQLite evaluates `state IN (three or more values)` in a CHECK by
    // building a temporary B-tree of the values for every row written, so
    // every saga's insert and end, and every freeze's state change, paid
    // for one. A CHECK cannot be altered: both tables are made again with
    // the same columns, rows and indexes, the states spelt out as `OR`s.
    r#"
    CREATE TABLE freezes_12 (
        acquirer       TEXT    NOT NULL,
        transmission   TEXT    NOT NULL,
        stan           TEXT    NOT NULL,
        payer_pan      TEXT    NOT NULL,
        payer_bank     TEXT    NOT NULL,
        amount_minor   INTEGER NOT NULL CHECK (amount_minor >= 0),
        currency       INTEGER NOT NULL CHECK (currency BETWEEN 0 AND 999),
        received_minor INTEGER NOT NULL DEFAULT 0 CHECK (received_minor >= 0),
        reserved_minor INTEGER NOT NULL DEFAULT 0 CHECK (reserved_minor >= 0),
        state          TEXT    NOT NULL
                       CHECK (state = 'pending' OR state = 'open' OR state = 'declined'
                              OR state = 'closed'),
        created_at_ms  INTEGER NOT NULL,
        request_digest BLOB    NOT NULL,
        PRIMARY KEY (acquirer, transmission, stan),
        CHECK (received_minor + reserved_minor <= amount_minor)
    ) STRICT, WITHOUT ROWID;
    INSERT INTO freezes_12 (acquirer, transmission, stan, payer_pan, payer_bank, amount_minor,
        currency, received_minor, reserved_minor, state, created_at_ms, request_digest)
    SELECT acquirer, transmission, stan, payer_pan, payer_bank, amount_minor,
        currency, received_minor, reserved_minor, state, created_at_ms, request_digest
    FROM freezes;
    DROP TABLE freezes;
    ALTER TABLE freezes_12 RENAME TO freezes;
    CREATE INDEX freezes_open_by_time ON freezes (created_at_ms) WHERE state = 'open';

    CREATE TABLE sagas_12 (
        mti                   TEXT    NOT NULL,
        acquirer              TEXT    NOT NULL,
        transmission          TEXT    NOT NULL,
        stan                  TEXT    NOT NULL,
        freeze_acquirer       TEXT    NOT NULL,
        freeze_transmission   TEXT    NOT NULL,
        freeze_stan           TEXT    NOT NULL,
        amount_minor          INTEGER NOT NULL CHECK (amount_minor >= 0),
        receiver_pan          TEXT    NOT NULL,
        receiver_bank         TEXT    NOT NULL,
        state                 TEXT    NOT NULL
                              CHECK (state = 'reserved' OR state = 'debiting'
                                     OR state = 'crediting' OR state = 'reversing_debit'
                                     OR state = 'approved' OR state = 'failed'
                                     OR state = 'in_doubt'),
        debit_stan            TEXT,
        debit_transmission    TEXT,
        credit_stan           TEXT,
        credit_transmission   TEXT,
        reversal_stan         TEXT,
        reversal_transmission TEXT,
        response_code         TEXT,
        request_digest        BLOB    NOT NULL,
        created_at_ms         INTEGER NOT NULL,
        answer_digest         BLOB,
        response              BLOB,
        PRIMARY KEY (mti, acquirer, transmission, stan)
    ) STRICT, WITHOUT ROWID;
    INSERT INTO sagas_12 (mti, acquirer, transmission, stan, freeze_acquirer,
        freeze_transmission, freeze_stan, amount_minor, receiver_pan, receiver_bank, state,
        debit_stan, debit_transmission, credit_stan, credit_transmission, reversal_stan,
        reversal_transmission, response_code, request_digest, created_at_ms, answer_digest,
        response)
    SELECT mti, acquirer, transmission, stan, freeze_acquirer,
        freeze_transmission, freeze_stan, amount_minor, receiver_pan, receiver_bank, state,
        debit_stan, debit_transmission, credit_stan, credit_transmission, reversal_stan,
        reversal_transmission, response_code, request_digest, created_at_ms, answer_digest,
        response
    FROM sagas;
    DROP TABLE sagas;
    ALTER TABLE sagas_12 RENAME TO sagas;
    CREATE INDEX sagas_by_time ON sagas (created_at_ms);
    "#,
    // 13: the log of sagas in flight (`saga_book.rs`): a batch's
    // reservations appended as one row, a saga's row in `sagas` written
    // once, at its end.
    r#"
    CREATE TABLE saga_log (
        id   INTEGER PRIMARY KEY,
        body BLOB    NOT NULL
    ) STRICT;
    "#,
    // 14: what recovery reads at every start, by index: the freezes still
    // pending and the sagas not ended. Both indexes hold only unfinished
    // rows (a saga's row is mostly written ended, so it adds no entry), and
    // a start after a long day no longer reads every freeze and saga.
    r#"
    CREATE INDEX freezes_pending ON freezes (created_at_ms) WHERE state = 'pending';
    CREATE INDEX sagas_unfinished ON sagas (created_at_ms)
        WHERE state <> 'approved' AND state <> 'failed';
    "#,
    // 15: the journal's packs are written compressed (pack version 2,
    // `journal_pack.rs`). No table changes: the step makes a build from
    // before, which cannot read such packs, refuse the file as newer than
    // itself rather than fail at every read of the journal.
    "/* journal packs of version 2: compressed */",
    // 16: a `saga_log` row also holds the totals of the freezes its batch
    // changed (`freeze_totals.rs`), which folding the log writes onto their
    // rows. No table changes: a build from before would neither read such
    // rows nor know that a freeze's row may be behind its log.
    "/* saga_log rows carry freezes' totals */",
    // 17: the decision log (`decision_log.rs`): the sequence number of the
    // first record in `<file>-decisions` not yet inserted into these
    // tables, and a number drawn for this database that every record's
    // checksum covers (a log left beside another database is not read
    // into this one). A build from before would not read that file back.
    // A later step that changes `saga_log` or `journal_packs` must read
    // the log's records back before it (they are inserted after `migrate`).
    r#"
    CREATE TABLE decision_log (
        id       INTEGER PRIMARY KEY CHECK (id = 1),
        next_seq INTEGER NOT NULL CHECK (next_seq >= 1),
        store_id INTEGER NOT NULL
    ) STRICT;
    INSERT INTO decision_log (id, next_seq, store_id) VALUES (1, 1, random());
    "#,
    // 18: ended sagas in packs (`saga_packs.rs`): a pruning writes the
    // sagas of its book that have ended as one compressed row, and a key
    // each in `saga_keys` for a resend's lookup, instead of a row each in
    // `sagas`. A pack holds the sagas of one hour of creation times, so
    // its first is enough to find a day's (clearing).
    r#"
    CREATE TABLE saga_packs (
        id               INTEGER PRIMARY KEY,
        first_created_ms INTEGER NOT NULL,
        last_created_ms  INTEGER NOT NULL,
        sagas            INTEGER NOT NULL CHECK (sagas >= 1),
        body             BLOB    NOT NULL
    ) STRICT;
    CREATE INDEX saga_packs_by_time ON saga_packs (first_created_ms);
    CREATE TABLE saga_keys (
        mti          TEXT    NOT NULL,
        acquirer     TEXT    NOT NULL,
        transmission TEXT    NOT NULL,
        stan         TEXT    NOT NULL,
        pack         INTEGER NOT NULL,
        PRIMARY KEY (mti, acquirer, transmission, stan)
    ) STRICT, WITHOUT ROWID;
    "#,
];

pub(super) fn configure(conn: &Connection, options: SqliteOptions) -> StoreResult<()> {
    conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))
        .map_err(db)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(db)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Unavailable(format!(
            "cannot use WAL mode (journal_mode is {mode})"
        )));
    }
    let sync = if options.synchronous_full {
        "FULL"
    } else {
        "NORMAL"
    };
    // The WAL starts again from its beginning after the writer's own
    // checkpoint, at 64 MiB; a thread of the store's copies it into the
    // database file every 100 ms meanwhile (`checkpointer.rs`), so that
    // checkpoint finds little left to copy. The page cache is 16 MiB:
    // it fills with whatever the journal writes, so it is most of what the
    // process grows by under load (README, "Limits").
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {sync}; PRAGMA wal_autocheckpoint = 16384; \
         PRAGMA cache_size = -16384; PRAGMA journal_size_limit = 134217728;"
    ))
    .map_err(db)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

pub(super) fn migrate(conn: &Connection) -> StoreResult<()> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(db)?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(StoreError::Unavailable(format!(
            "the store's schema version {version} is newer than this build's ({known})"
        )));
    }
    if version < 0 {
        return Err(corrupt(format!("schema version {version}")));
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {step}; PRAGMA user_version = {}; COMMIT;",
            i + 1
        ))
        .map_err(|e| {
            let _ = conn.execute_batch("ROLLBACK");
            StoreError::Unavailable(format!("schema migration {}: {e}", i + 1))
        })?;
    }
    Ok(())
}

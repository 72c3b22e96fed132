//! The schema: its steps, in order (`schema_migrations` records which a
//! database has), and the migration that applies the missing ones at start
//! or from `switchboard migrate`, safely from several instances at once.

use super::*;

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
    (
        6,
        "the settlement days cleared, which journal retention may purge",
        r#"
    CREATE TABLE cleared_days (
        date          text   PRIMARY KEY,
        cleared_at_ms  bigint NOT NULL,
        purge_began_ms bigint,
        purged_at_ms   bigint
    );
    "#,
    ),
    (
        7,
        "what the risk rules count, and their hits by settlement day",
        r#"
    CREATE TABLE risk_events (
        rule         text   NOT NULL,
        subject      text   NOT NULL,
        at_ms        bigint NOT NULL,
        amount_minor bigint NOT NULL,
        detail       text   NOT NULL DEFAULT ''
    );
    CREATE INDEX risk_events_by_subject ON risk_events (rule, subject, at_ms);
    CREATE INDEX risk_events_by_time ON risk_events (at_ms);
    CREATE TABLE risk_hits (
        day         text   NOT NULL,
        at_ms       bigint NOT NULL,
        rule        text   NOT NULL,
        mode        text   NOT NULL,
        code        text   NOT NULL,
        card        text   NOT NULL,
        institution text   NOT NULL
    );
    CREATE INDEX risk_hits_by_day ON risk_hits (day);
    "#,
    ),
    (
        8,
        "the operator actions asked of the admin listener",
        r#"
    CREATE TABLE audit_log (
        id     bigserial PRIMARY KEY,
        at_ms  bigint NOT NULL,
        who    text   NOT NULL,
        action text   NOT NULL,
        target text   NOT NULL,
        result text   NOT NULL,
        reason text   NOT NULL
    );
    "#,
    ),
    (
        9,
        "room on each page of sagas for its end",
        r#"
    -- A saga's end writes a new version of its row that is larger by the
    -- answer. With 70 % of a page filled by inserts, about a third of the
    -- ends found room on the row's own page (a HOT update: no entry in the
    -- primary key or the time index); at 45 % nearly all do. New pages only.
    ALTER TABLE sagas SET (fillfactor = 45);
    "#,
    ),
];

/// Brings the database at `url` to this build's schema; returns the versions
/// applied now (empty when it was up to date). Safe to run from several
/// instances at once: each step is one transaction that first inserts its
/// version into `schema_migrations`, so a concurrent runner waits for it and
/// then skips it. A database newer than this build is refused.
pub async fn migrate(url: &str) -> StoreResult<Vec<i32>> {
    let options = PostgresOptions::default();
    let (config, tls) = pg_config(url, &options)?;
    let (mut client, connection) = config
        .connect(tls)
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

pub(super) async fn migrate_client(client: &mut tokio_postgres::Client) -> StoreResult<Vec<i32>> {
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

//! The SQL text: one statement per decision, its `WHERE` clause the guard.

// ---------------------------------------------------------------------------
// Statements. Parameters are cast where they first appear; every statement
// writes nothing when it does not succeed.

pub(super) const SQL_RECORD_ANSWER: &str = "INSERT INTO answers \
    (mti, acquirer, transmission, stan, request_digest, response, response_code) \
    VALUES ($1::text, $2::text, $3::text, $4::text, $5::bytea, $6::bytea, $7::text) \
    ON CONFLICT DO NOTHING";

/// `$1-$4` request, `$5-$7` freeze key, `$8` payer PAN, `$9` payer bank,
/// `$10` amount, `$11` currency, `$12` created, `$13` digest, `$14` owner.
pub(super) const SQL_INSERT_FREEZE: &str = "WITH prior AS ( \
        SELECT request_digest, response FROM answers \
        WHERE mti = $1::text AND acquirer = $2::text AND transmission = $3::text AND stan = $4::text \
    ), ins AS ( \
        INSERT INTO freezes (acquirer, transmission, stan, payer_pan, payer_bank, amount_minor, \
            currency, received_minor, reserved_minor, state, created_at_ms, request_digest, owner) \
        SELECT $5::text, $6::text, $7::text, $8::text, $9::text, $10::bigint, $11::integer, 0, 0, \
            'pending', $12::bigint, $13::bytea, $14::text \
        WHERE NOT EXISTS (SELECT 1 FROM prior) \
        ON CONFLICT DO NOTHING \
        RETURNING 1 \
    ) \
    SELECT 'inserted'::text AS what, NULL::bytea AS digest, NULL::bytea AS response FROM ins \
    UNION ALL SELECT 'answered', request_digest, response FROM prior \
    UNION ALL SELECT 'exists', request_digest, NULL FROM freezes \
        WHERE acquirer = $5 AND transmission = $6 AND stan = $7 AND NOT EXISTS (SELECT 1 FROM ins)";

/// `$1-$3` freeze key, `$4-$7` request, `$8` target state, `$9` digest,
/// `$10` response, `$11` code, `$12-$16` store-and-forward entries. Only a
/// pending freeze is finished; otherwise the answer recorded before is returned.
pub(super) const SQL_FINISH_FREEZE: &str = concat!(
    "WITH upd AS ( \
        UPDATE freezes SET state = $8::text \
        WHERE acquirer = $1::text AND transmission = $2::text AND stan = $3::text \
          AND state = 'pending' \
        RETURNING 1 \
    ), ans AS ( \
        INSERT INTO answers (mti, acquirer, transmission, stan, request_digest, response, \
            response_code) \
        SELECT $4::text, $5::text, $6::text, $7::text, $9::bytea, $10::bytea, $11::text \
        WHERE EXISTS (SELECT 1 FROM upd) \
        ON CONFLICT DO NOTHING \
    ), q AS (",
    saf_insert!(
        "$12",
        "$13",
        "$14",
        "$15",
        "$16",
        "EXISTS (SELECT 1 FROM upd)"
    ),
    ") SELECT (SELECT count(*) FROM upd) AS updated, \
        (SELECT state FROM freezes WHERE acquirer = $1 AND transmission = $2 AND stan = $3) \
            AS state, \
        (SELECT request_digest FROM answers WHERE mti = $4 AND acquirer = $5 \
            AND transmission = $6 AND stan = $7 AND NOT EXISTS (SELECT 1 FROM upd)) AS digest, \
        (SELECT response FROM answers WHERE mti = $4 AND acquirer = $5 \
            AND transmission = $6 AND stan = $7 AND NOT EXISTS (SELECT 1 FROM upd)) AS response"
);

/// `$1-$4` request, `$5-$7` freeze key, `$8` amount, `$9` receiver PAN,
/// `$10` receiver bank, `$11` saga state, `$12` digest, `$13` created,
/// `$14-$17` debit and credit identities, `$18` owner. Each row: what, the
/// freeze's columns (NULLs in the rows that have none: as many as
/// `FREEZE_COLUMNS`), then the digest and response of an earlier answer.
pub(super) const SQL_RESERVE: &str = concat!(
    "WITH prior_answer AS ( \
        SELECT request_digest, response FROM answers \
        WHERE mti = $1::text AND acquirer = $2::text AND transmission = $3::text AND stan = $4::text \
    ), prior_saga AS ( \
        SELECT coalesce(answer_digest, request_digest) AS request_digest, response FROM sagas \
        WHERE mti = $1 AND acquirer = $2 AND transmission = $3 AND stan = $4 \
    ), upd AS ( \
        UPDATE freezes SET reserved_minor = reserved_minor + $8::bigint \
        WHERE acquirer = $5::text AND transmission = $6::text AND stan = $7::text \
          AND state = 'open' AND $8 <= amount_minor - received_minor - reserved_minor \
          AND NOT EXISTS (SELECT 1 FROM prior_answer) AND NOT EXISTS (SELECT 1 FROM prior_saga) \
        RETURNING ",
    freeze_columns!(),
    " ), ins AS ( \
        INSERT INTO sagas (mti, acquirer, transmission, stan, freeze_acquirer, \
            freeze_transmission, freeze_stan, amount_minor, receiver_pan, receiver_bank, state, \
            request_digest, created_at_ms, debit_stan, debit_transmission, credit_stan, \
            credit_transmission, owner) \
        SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9::text, $10::text, $11::text, $12::bytea, \
            $13::bigint, $14::text, $15::text, $16::text, $17::text, $18::text \
        FROM upd \
    ) \
    SELECT 'reserved'::text AS what, ",
    freeze_columns!(),
    ", NULL::bytea AS digest, NULL::bytea AS response FROM upd \
    UNION ALL SELECT 'answered', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
        NULL, request_digest, response FROM prior_answer \
    UNION ALL SELECT 'saga', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
        NULL, request_digest, response FROM prior_saga \
    UNION ALL SELECT 'freeze', ",
    freeze_columns!(),
    ", NULL, NULL FROM freezes \
        WHERE acquirer = $5 AND transmission = $6 AND stan = $7 AND NOT EXISTS (SELECT 1 FROM upd)"
);

/// `$1-$4` request, `$5` new saga state, `$6` response code, `$7` outcome
/// (`approved`, `failed`), `$8` digest, `$9` response,
/// `$10-$14` follow-up entries, `$15-$19` the unfreeze queued if the freeze is
/// closed when a failed receive ends. The answer recorded before is read only
/// when this statement did not end the saga.
pub(super) const SQL_SETTLE: &str = "WITH u AS ( \
        UPDATE sagas SET state = $5::text, response_code = $6::text, \
            answer_digest = coalesce(answer_digest, $8::bytea), \
            response = coalesce(response, $9::bytea) \
        WHERE mti = $1::text AND acquirer = $2::text AND transmission = $3::text \
          AND stan = $4::text AND state NOT IN ('approved', 'failed') \
        RETURNING amount_minor, freeze_acquirer, freeze_transmission, freeze_stan \
    ), f AS ( \
        UPDATE freezes SET \
            reserved_minor = freezes.reserved_minor - u.amount_minor, \
            received_minor = freezes.received_minor \
                + CASE WHEN $7::text = 'approved' THEN u.amount_minor ELSE 0 END \
        FROM u \
        WHERE freezes.acquirer = u.freeze_acquirer AND freezes.transmission = u.freeze_transmission \
          AND freezes.stan = u.freeze_stan AND $7 IN ('approved', 'failed') \
        RETURNING freezes.state \
    ), q AS ( \
        INSERT INTO saf (bank, order_key, kind, message, created_at_ms, state, next_attempt_ms) \
        SELECT x.bank, x.order_key, x.kind, x.message, x.created_at_ms, 'pending', x.created_at_ms \
        FROM ( \
            SELECT t.*, 0 AS part FROM unnest($10::text[], $11::text[], $12::text[], \
                $13::bytea[], $14::bigint[]) \
                WITH ORDINALITY AS t(bank, order_key, kind, message, created_at_ms, n) \
            WHERE EXISTS (SELECT 1 FROM u) \
            UNION ALL \
            SELECT t.*, 1 FROM unnest($15::text[], $16::text[], $17::text[], \
                $18::bytea[], $19::bigint[]) \
                WITH ORDINALITY AS t(bank, order_key, kind, message, created_at_ms, n) \
            WHERE $7 = 'failed' AND EXISTS (SELECT 1 FROM f WHERE f.state = 'closed') \
        ) x ORDER BY x.part, x.n \
    ) \
    SELECT (SELECT count(*) FROM u) AS settled, \
        (SELECT state FROM sagas WHERE mti = $1 AND acquirer = $2 AND transmission = $3 \
            AND stan = $4) AS state, \
        (SELECT answer_digest FROM sagas WHERE mti = $1 AND acquirer = $2 AND transmission = $3 \
            AND stan = $4 AND NOT EXISTS (SELECT 1 FROM u)) AS digest, \
        (SELECT response FROM sagas WHERE mti = $1 AND acquirer = $2 AND transmission = $3 \
            AND stan = $4 AND NOT EXISTS (SELECT 1 FROM u)) AS response, \
        (SELECT CASE WHEN $7 IN ('approved', 'failed') AND NOT EXISTS (SELECT 1 FROM f) \
            THEN ('switchboard: freeze ' || u.freeze_acquirer || '/' || u.freeze_transmission \
                  || '/' || u.freeze_stan || ' of a saga is missing')::integer END FROM u) AS guard";

/// `$1-$3` freeze key, `$4` amount, `$5-$8` request, `$9` digest,
/// `$10` response, `$11` code, `$12-$16` the notice to queue.
pub(super) const SQL_CLOSE_FREEZE: &str = concat!(
    "WITH upd AS ( \
        UPDATE freezes SET state = 'closed' \
        WHERE acquirer = $1::text AND transmission = $2::text AND stan = $3::text \
          AND state = 'open' AND amount_minor - received_minor - reserved_minor = $4::bigint \
        RETURNING ",
    freeze_columns!(),
    " ), ans AS ( \
        INSERT INTO answers (mti, acquirer, transmission, stan, request_digest, response, \
            response_code) \
        SELECT $5::text, $6::text, $7::text, $8::text, $9::bytea, $10::bytea, $11::text FROM upd \
        ON CONFLICT DO NOTHING \
    ), q AS (",
    saf_insert!(
        "$12",
        "$13",
        "$14",
        "$15",
        "$16",
        "EXISTS (SELECT 1 FROM upd)"
    ),
    ") SELECT 'closed'::text AS what, ",
    freeze_columns!(),
    " FROM upd UNION ALL SELECT 'current', ",
    freeze_columns!(),
    " FROM freezes WHERE acquirer = $1 AND transmission = $2 AND stan = $3 \
        AND NOT EXISTS (SELECT 1 FROM upd)"
);

/// `$1` id, `$2` state, `$3` next attempt (or NULL), `$4` result.
pub(super) const SQL_SAF_SETTLE: &str =
    "UPDATE saf SET state = $2::text, attempts = attempts + 1, \
    next_attempt_ms = COALESCE($3::bigint, next_attempt_ms), last_result = $4::text \
    WHERE id = $1::bigint AND state = 'pending' RETURNING 1";

/// A block never crosses 999999: when it would, it starts at 1 instead (the
/// STANs between are skipped this round). `last_first` returns the block's start.
pub(super) const SQL_ALLOCATE_STANS: &str = "UPDATE stan_counter SET \
    last_first = CASE WHEN next_stan + $1::integer - 1 > 999999 THEN 1 ELSE next_stan END, \
    next_stan = CASE \
        WHEN (CASE WHEN next_stan + $1 - 1 > 999999 THEN 1 ELSE next_stan END) + $1 > 999999 THEN 1 \
        ELSE (CASE WHEN next_stan + $1 - 1 > 999999 THEN 1 ELSE next_stan END) + $1 END \
    WHERE id = 0 RETURNING last_first";

pub(super) const SQL_FREEZE: &str = concat!(
    "SELECT ",
    freeze_columns!(),
    " FROM freezes WHERE acquirer = $1::text AND transmission = $2::text AND stan = $3::text"
);

pub(super) const SQL_FREEZES: &str = concat!(
    "SELECT ",
    freeze_columns!(),
    " FROM freezes ORDER BY created_at_ms, acquirer, transmission, stan"
);

pub(super) const SQL_SAGA: &str = concat!(
    "SELECT ",
    saga_columns!(),
    " FROM sagas WHERE mti = $1::text AND acquirer = $2::text AND transmission = $3::text \
      AND stan = $4::text"
);

pub(super) const SQL_SAGAS: &str = concat!(
    "SELECT ",
    saga_columns!(),
    " FROM sagas ORDER BY created_at_ms, mti, acquirer, transmission, stan"
);

/// `$1` now, `$2` limit, `$3` hold. Claims what it returns: its next attempt
/// moves `$3` ahead, so no other instance takes it meanwhile. Rows another
/// instance is claiming at the same moment are skipped, not waited for.
pub(super) const SQL_SAF_DUE: &str = concat!(
    "UPDATE saf SET next_attempt_ms = $1::bigint + $3::bigint \
     WHERE id IN ( \
        SELECT id FROM saf s WHERE state = 'pending' AND next_attempt_ms <= $1 \
          AND id = (SELECT min(id) FROM saf t \
                    WHERE t.order_key = s.order_key AND t.state = 'pending') \
        ORDER BY id LIMIT $2::bigint FOR UPDATE SKIP LOCKED \
     ) AND state = 'pending' AND next_attempt_ms <= $1 \
     RETURNING ",
    saf_columns!()
);

/// `$1` instance, `$2` duration in ms, `$3` unfinished since.
pub(super) const SQL_RENEW_LEASE: &str =
    "INSERT INTO leases (instance, expires_at, unfinished_since_ms) \
    VALUES ($1::text, clock_timestamp() + $2::bigint * interval '1 millisecond', $3::bigint) \
    ON CONFLICT (instance) DO UPDATE SET expires_at = EXCLUDED.expires_at, \
        unfinished_since_ms = EXCLUDED.unfinished_since_ms";

/// `$1` grace in ms.
pub(super) const SQL_EXPIRED_LEASES: &str = "SELECT instance, unfinished_since_ms FROM leases \
    WHERE expires_at < clock_timestamp() - $1::bigint * interval '1 millisecond' \
    ORDER BY expires_at, instance";

pub(super) const SQL_DROP_LEASE: &str =
    "DELETE FROM leases WHERE instance = $1::text AND expires_at < clock_timestamp()";

/// `$1` from, `$2` before, `$3` limit.
pub(super) const SQL_OPEN_FREEZES_CREATED: &str = concat!(
    "SELECT ",
    freeze_columns!(),
    " FROM freezes WHERE state = 'open' AND created_at_ms >= $1::bigint \
      AND created_at_ms < $2::bigint ORDER BY created_at_ms LIMIT $3::bigint"
);

pub(super) const SQL_UNFINISHED_FREEZES: &str = concat!(
    "SELECT ",
    freeze_columns!(),
    " FROM freezes WHERE created_at_ms >= $2::bigint AND owner = $1::text AND state = 'pending' \
      ORDER BY created_at_ms, acquirer, transmission, stan"
);

pub(super) const SQL_UNFINISHED_SAGAS: &str = concat!(
    "SELECT ",
    saga_columns!(),
    " FROM sagas WHERE created_at_ms >= $2::bigint AND owner = $1::text \
      AND state NOT IN ('approved', 'failed') \
      ORDER BY created_at_ms, mti, acquirer, transmission, stan"
);

pub(super) const SQL_JOURNAL_BETWEEN: &str = concat!(
    "SELECT ",
    journal_columns!(),
    " FROM journal WHERE at_ms >= $1::bigint AND at_ms < $2::bigint ORDER BY at_ms, id"
);

pub(super) const SQL_SAGAS_BETWEEN: &str = concat!(
    "SELECT ",
    saga_columns!(),
    " FROM sagas WHERE created_at_ms >= $1::bigint AND created_at_ms < $2::bigint \
      ORDER BY created_at_ms, mti, acquirer, transmission, stan"
);

pub(super) const SQL_SAF_SINCE: &str = concat!(
    "SELECT ",
    saf_columns!(),
    " FROM saf WHERE created_at_ms >= $1::bigint ORDER BY id"
);

pub(super) const SQL_SAF_ENTRIES: &str =
    concat!("SELECT ", saf_columns!(), " FROM saf ORDER BY id");

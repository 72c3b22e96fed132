//! The SQL text: one statement per decision, its `WHERE` clause the guard.

// ---------------------------------------------------------------------------
// Statements. Parameters are cast where they first appear; every statement
// writes nothing when it does not succeed.

/// `$1-$4` request, `$5` digest, `$6` response, `$7` code. Nothing is
/// recorded when a saga or (an 0100's) a freeze holds the key: then the
/// holder's digest is returned. An answer recorded before is kept.
pub(super) const SQL_RECORD_ANSWER: &str = "WITH held AS ( \
        SELECT request_digest FROM sagas \
        WHERE mti = $1::text AND acquirer = $2::text AND transmission = $3::text AND stan = $4::text \
        UNION ALL SELECT request_digest FROM freezes \
        WHERE $1::text = '0100' AND acquirer = $2::text AND transmission = $3::text AND stan = $4::text \
    ), ins AS ( \
        INSERT INTO answers (mti, acquirer, transmission, stan, request_digest, response, response_code) \
        SELECT $1::text, $2::text, $3::text, $4::text, $5::bytea, $6::bytea, $7::text \
        WHERE NOT EXISTS (SELECT 1 FROM held) \
        ON CONFLICT DO NOTHING \
        RETURNING 1 \
    ) \
    SELECT request_digest FROM held LIMIT 1";

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

/// Run before the set statements in their transaction (`SET LOCAL`): they
/// join arrays to the tables, and a join's plan is cached for the life of
/// the connection. A plan made while a table was small (a new database, a
/// new day) may hash or scan the whole table, and would keep doing so as the
/// table grows to millions of rows; with these off the planner takes the
/// primary key, one probe per row, whatever the tables' statistics say; and
/// it plans each set statement once per connection (a generic plan), not
/// for each batch's array sizes.
pub(super) const SQL_PLAN_BY_KEYS: &str = "SELECT set_config('enable_seqscan', 'off', true), \
    set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true), \
    set_config('plan_cache_mode', 'force_generic_plan', true)";

/// Locks, in key order, every freeze the batch's set statements will update:
/// `$1-$3` the reservations' freeze keys, `$4-$7` the request keys of the
/// sagas to end (their freezes found through the sagas). The reservations
/// and the saga ends then update rows this transaction already holds, so
/// two instances whose batches touch the same freezes wait for each other
/// instead of deadlocking.
pub(super) const SQL_LOCK_FREEZES: &str = "SELECT 1 FROM freezes \
    WHERE (acquirer, transmission, stan) IN ( \
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) \
        UNION \
        SELECT s.freeze_acquirer, s.freeze_transmission, s.freeze_stan \
        FROM unnest($4::text[], $5::text[], $6::text[], $7::text[]) \
            AS r(mti, acquirer, transmission, stan) \
        JOIN sagas s ON s.mti = r.mti AND s.acquirer = r.acquirer \
            AND s.transmission = r.transmission AND s.stan = r.stan \
    ) \
    ORDER BY acquirer, transmission, stan FOR UPDATE OF freezes";

/// Reservations, as arrays of their columns (see `sets.rs`): `$1` each
/// command's place in the batch, `$2-$5` request, `$6-$8` freeze key, `$9`
/// amount, `$10` receiver PAN, `$11` receiver bank, `$12` saga state, `$13`
/// digest, `$14` created, `$15-$18` debit and credit identities, `$19` owner.
///
/// Reservations of one freeze are taken in order while their running total
/// fits what the freeze had left (`snap`, `accepted`: a prefix), and the
/// freeze is updated once by their total, its guard checked again on the row
/// as it is when locked. A reservation after the prefix is not taken: it
/// sees the freeze as it was (exceeds, or has room and runs again).
///
/// Each row: what, the freeze's columns (NULLs in the rows that have none:
/// as many as `FREEZE_COLUMNS`; a reservation's `reserved_minor` as it was
/// right after it), the digest and response of an earlier answer, then the
/// command's place.
pub(super) const SQL_RESERVE_SET: &str = concat!(
    "WITH x AS ( \
        SELECT * FROM unnest($1::integer[], $2::text[], $3::text[], $4::text[], $5::text[], \
            $6::text[], $7::text[], $8::text[], $9::bigint[], $10::text[], $11::text[], \
            $12::text[], $13::bytea[], $14::bigint[], $15::text[], $16::text[], $17::text[], \
            $18::text[], $19::text[]) \
        AS x(x_n, x_mti, x_acquirer, x_transmission, x_stan, x_f_acquirer, x_f_transmission, \
            x_f_stan, x_amount, x_receiver_pan, x_receiver_bank, x_state, x_digest, x_created, \
            x_debit_stan, x_debit_transmission, x_credit_stan, x_credit_transmission, x_owner) \
    ), prior_answer AS ( \
        SELECT x_n, a.request_digest, a.response FROM x JOIN answers a \
            ON a.mti = x_mti AND a.acquirer = x_acquirer AND a.transmission = x_transmission \
            AND a.stan = x_stan \
    ), prior_saga AS ( \
        SELECT x_n, coalesce(s.answer_digest, s.request_digest) AS request_digest, s.response \
        FROM x JOIN sagas s \
            ON s.mti = x_mti AND s.acquirer = x_acquirer AND s.transmission = x_transmission \
            AND s.stan = x_stan \
    ), snap AS ( \
        SELECT x.*, f.state AS x_freeze_state, \
            f.amount_minor - f.received_minor - f.reserved_minor AS x_available, \
            (sum(x_amount) OVER (PARTITION BY x_f_acquirer, x_f_transmission, x_f_stan \
                ORDER BY x_n))::bigint AS x_running \
        FROM x JOIN freezes f \
            ON f.acquirer = x_f_acquirer AND f.transmission = x_f_transmission \
            AND f.stan = x_f_stan \
        WHERE NOT EXISTS (SELECT 1 FROM prior_answer p WHERE p.x_n = x.x_n) \
          AND NOT EXISTS (SELECT 1 FROM prior_saga p WHERE p.x_n = x.x_n) \
    ), accepted AS ( \
        SELECT * FROM snap WHERE x_freeze_state = 'open' AND x_running <= x_available \
    ), totals AS ( \
        SELECT x_f_acquirer, x_f_transmission, x_f_stan, sum(x_amount)::bigint AS x_total \
        FROM accepted GROUP BY x_f_acquirer, x_f_transmission, x_f_stan \
        ORDER BY x_f_acquirer, x_f_transmission, x_f_stan \
    ), upd AS ( \
        UPDATE freezes SET reserved_minor = reserved_minor + x_total \
        FROM totals \
        WHERE acquirer = x_f_acquirer AND transmission = x_f_transmission AND stan = x_f_stan \
          AND state = 'open' AND x_total <= amount_minor - received_minor - reserved_minor \
        RETURNING x_f_acquirer, x_f_transmission, x_f_stan, x_total, ",
    freeze_columns!(),
    " ), taken AS ( \
        SELECT * FROM accepted JOIN upd USING (x_f_acquirer, x_f_transmission, x_f_stan) \
    ), ins AS ( \
        INSERT INTO sagas (mti, acquirer, transmission, stan, freeze_acquirer, \
            freeze_transmission, freeze_stan, amount_minor, receiver_pan, receiver_bank, state, \
            request_digest, created_at_ms, debit_stan, debit_transmission, credit_stan, \
            credit_transmission, owner) \
        SELECT x_mti, x_acquirer, x_transmission, x_stan, x_f_acquirer, x_f_transmission, \
            x_f_stan, x_amount, x_receiver_pan, x_receiver_bank, x_state, x_digest, x_created, \
            x_debit_stan, x_debit_transmission, x_credit_stan, x_credit_transmission, x_owner \
        FROM taken \
    ) \
    SELECT 'reserved'::text AS what, acquirer, transmission, stan, payer_pan, payer_bank, \
        amount_minor, currency, received_minor, reserved_minor - x_total + x_running, state, \
        created_at_ms, request_digest, NULL::bytea AS digest, NULL::bytea AS response, x_n \
    FROM taken \
    UNION ALL SELECT 'answered', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
        NULL, request_digest, response, x_n FROM prior_answer \
    UNION ALL SELECT 'saga', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
        NULL, request_digest, response, x_n FROM prior_saga \
    UNION ALL SELECT 'freeze', ",
    freeze_columns!(),
    ", NULL, NULL, x_n FROM x JOIN freezes \
        ON acquirer = x_f_acquirer AND transmission = x_f_transmission AND stan = x_f_stan \
        WHERE NOT EXISTS (SELECT 1 FROM taken WHERE taken.x_n = x.x_n)"
);

/// Ends of sagas, as arrays of their columns (see `sets.rs`): `$1` each
/// command's place in the batch, `$2-$5` request, `$6` new saga state, `$7`
/// response code, `$8` outcome (`approved`, `failed`), `$9` digest, `$10`
/// response; the store-and-forward entries flattened, `$11` their command's
/// place, `$12` part (0 queued when the saga ends now, 1 only when a failed
/// receive ends and its freeze is closed), `$13-$17` the entries. The amounts
/// of the sagas ended are summed per freeze before the freezes are updated
/// (an `UPDATE ... FROM` updates a row once, whatever joins it). Each row:
/// whether this statement ended the saga, its state, the answer recorded
/// before (only when it did not), the missing-freeze guard, the place. Each
/// row joins the ended sagas once (`u` holds a command's saga at most once):
/// with hash joins off, a join between the statement's own results is a
/// nested loop, so each such lookup costs the batch's size.
pub(super) const SQL_SETTLE_SET: &str = "WITH x AS ( \
        SELECT * FROM unnest($1::integer[], $2::text[], $3::text[], $4::text[], $5::text[], \
            $6::text[], $7::text[], $8::text[], $9::bytea[], $10::bytea[]) \
        AS x(x_n, x_mti, x_acquirer, x_transmission, x_stan, x_state, x_code, x_outcome, \
            x_digest, x_response) \
    ), u AS ( \
        UPDATE sagas SET state = x_state, response_code = x_code, \
            answer_digest = coalesce(answer_digest, x_digest), \
            response = coalesce(response, x_response) \
        FROM x \
        WHERE mti = x_mti AND acquirer = x_acquirer AND transmission = x_transmission \
          AND stan = x_stan AND state NOT IN ('approved', 'failed') \
        RETURNING x_n, x_outcome, amount_minor, freeze_acquirer, freeze_transmission, freeze_stan \
    ), d AS ( \
        SELECT freeze_acquirer, freeze_transmission, freeze_stan, \
            sum(amount_minor)::bigint AS released, \
            sum(CASE WHEN x_outcome = 'approved' THEN amount_minor ELSE 0 END)::bigint \
                AS received \
        FROM u WHERE x_outcome IN ('approved', 'failed') \
        GROUP BY freeze_acquirer, freeze_transmission, freeze_stan \
        ORDER BY freeze_acquirer, freeze_transmission, freeze_stan \
    ), f AS ( \
        UPDATE freezes SET reserved_minor = reserved_minor - released, \
            received_minor = received_minor + received \
        FROM d \
        WHERE acquirer = freeze_acquirer AND transmission = freeze_transmission \
          AND stan = freeze_stan \
        RETURNING acquirer, transmission, stan, state \
    ), q AS ( \
        INSERT INTO saf (bank, order_key, kind, message, created_at_ms, state, next_attempt_ms) \
        SELECT e.bank, e.order_key, e.kind, e.message, e.created_at_ms, 'pending', e.created_at_ms \
        FROM unnest($11::integer[], $12::integer[], $13::text[], $14::text[], $15::text[], \
            $16::bytea[], $17::bigint[]) \
            WITH ORDINALITY AS e(e_n, part, bank, order_key, kind, message, created_at_ms, i) \
        JOIN u ON u.x_n = e.e_n \
        WHERE e.part = 0 OR (u.x_outcome = 'failed' AND EXISTS (SELECT 1 FROM f \
            WHERE f.acquirer = u.freeze_acquirer AND f.transmission = u.freeze_transmission \
              AND f.stan = u.freeze_stan AND f.state = 'closed')) \
        ORDER BY e.i \
    ) \
    SELECT CASE WHEN u.x_n IS NULL THEN 0 ELSE 1 END::bigint AS settled, s.state, \
        CASE WHEN u.x_n IS NULL THEN s.answer_digest END AS digest, \
        CASE WHEN u.x_n IS NULL THEN s.response END AS response, \
        CASE WHEN u.x_outcome IN ('approved', 'failed') AND NOT EXISTS (SELECT 1 FROM f \
                WHERE f.acquirer = u.freeze_acquirer AND f.transmission = u.freeze_transmission \
                  AND f.stan = u.freeze_stan) \
            THEN ('switchboard: freeze ' || u.freeze_acquirer || '/' || u.freeze_transmission \
                  || '/' || u.freeze_stan || ' of a saga is missing')::integer END AS guard, \
        x.x_n \
    FROM x LEFT JOIN u ON u.x_n = x.x_n \
    LEFT JOIN sagas s ON s.mti = x_mti AND s.acquirer = x_acquirer \
        AND s.transmission = x_transmission AND s.stan = x_stan";

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

/// Recovery's read of a store no live instance works on
/// (`History::unfinished`): only `switchboard recover` asks it of
/// PostgreSQL, whose instances recover by lease (`unfinished_of`). No index
/// serves it: one naming `state` would make every saga end's update of its
/// row a non-HOT one.
pub(super) const SQL_PENDING_FREEZES: &str = concat!(
    "SELECT ",
    freeze_columns!(),
    " FROM freezes WHERE state = 'pending' \
      ORDER BY created_at_ms, acquirer, transmission, stan"
);

pub(super) const SQL_SAGAS_NOT_ENDED: &str = concat!(
    "SELECT ",
    saga_columns!(),
    " FROM sagas WHERE state NOT IN ('approved', 'failed') \
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

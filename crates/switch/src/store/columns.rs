//! Keys and values as the SQL stores hold them, written once for SQLite and
//! PostgreSQL alike: the text columns of request and freeze keys, amounts in
//! and out of `i64`, and the readers that turn a stored row back into a
//! freeze, a saga, a queue entry or a journal entry.
//!
//! Nothing here knows a database: each store lends its own row type through
//! [`Columns`] (a handful of typed getters, with its own error mapping), and
//! everything built on them (digits, amounts, digests, states, whole records)
//! is checked the same way in both. Anything unreadable is
//! [`StoreError::Corrupt`]; a caller's value the store cannot hold is
//! [`StoreError::Invalid`].

use bytes::Bytes;

use super::{
    Direction, FreezeRecord, FreezeState, JournalEntry, NewSafEntry, RequestKey, SafEntry, SafKind,
    SafState, SagaRecord, SagaState, SealedColumn, SentMessage, StoreError, StoreResult,
};
use crate::dialect::{FreezeKey, InstitutionId};
use crate::vault;

/// Highest STAN; STANs run 1..=MAX_STAN.
pub(super) const MAX_STAN: u32 = 999_999;

/// What the store holds cannot be read back as what it should be.
pub(super) fn corrupt(why: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(why.to_string())
}

/// The columns sealed by `crate::vault`, by name: the associated data that
/// binds each sealed value to its column.
pub(crate) mod sealed {
    pub const PAYER_PAN: &str = "freezes.payer_pan";
    pub const RECEIVER_PAN: &str = "sagas.receiver_pan";
    /// A stored answer, in `answers` or on its saga.
    pub const RESPONSE: &str = "response";
    pub const JOURNAL_RAW: &str = "journal.raw";
    /// A journal pack's raw messages, sealed together (the embedded store).
    pub const JOURNAL_PACK_RAWS: &str = "journal_packs.raws";
    pub const SAF_MESSAGE: &str = "saf.message";
}

/// Every column the SQL stores seal, with the key its rows are walked by
/// (`switchboard rekey`). Both keep a receive's answer on its saga too:
/// [`SAGA_RESPONSE`].
pub(crate) const SEALED_COLUMNS: &[SealedColumn] = &[
    SealedColumn {
        table: "freezes",
        key: &["acquirer", "transmission", "stan"],
        column: "payer_pan",
        purpose: sealed::PAYER_PAN,
        text: true,
    },
    SealedColumn {
        table: "sagas",
        key: &["mti", "acquirer", "transmission", "stan"],
        column: "receiver_pan",
        purpose: sealed::RECEIVER_PAN,
        text: true,
    },
    SealedColumn {
        table: "answers",
        key: &["mti", "acquirer", "transmission", "stan"],
        column: "response",
        purpose: sealed::RESPONSE,
        text: false,
    },
    SealedColumn {
        table: "saf",
        key: &["id"],
        column: "message",
        purpose: sealed::SAF_MESSAGE,
        text: false,
    },
    SealedColumn {
        table: "journal",
        key: &["id"],
        column: "raw",
        purpose: sealed::JOURNAL_RAW,
        text: false,
    },
];

/// The answer the SQL stores keep on a receive's saga (nullable).
pub(crate) const SAGA_RESPONSE: SealedColumn = SealedColumn {
    table: "sagas",
    key: &["mti", "acquirer", "transmission", "stan"],
    column: "response",
    purpose: sealed::RESPONSE,
    text: false,
};

/// The statements that walk a [`SealedColumn`] in key order and reseal its
/// values, written once for both SQL dialects: `key_param(i)` is the `i`th
/// (1-based) parameter holding a key column as text, `param(i)` any other.
pub(super) struct ResealSql {
    /// The first `limit` rows: keys as text, then the value; parameter 1 is the limit.
    pub first: String,
    /// The rows after a key: parameters 1..=n the key, n + 1 the limit.
    pub after: String,
    /// Parameter 1 the new value, 2..=n + 1 the key, n + 2 the value read.
    pub update: String,
}

pub(super) fn reseal_sql(
    column: &SealedColumn,
    key_param: impl Fn(usize) -> String,
    param: impl Fn(usize) -> String,
) -> ResealSql {
    let n = column.key.len();
    let keys = column.key.join(", ");
    // Named apart from the key columns: PostgreSQL would otherwise sort by
    // the text (`ORDER BY id` finds an output column named `id` first).
    let key_text = column
        .key
        .iter()
        .enumerate()
        .map(|(i, k)| {
            if column.integer_key() {
                format!("CAST({k} AS text) AS key_{i}")
            } else {
                format!("{k} AS key_{i}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    let key_params = |from: usize| {
        (from..from + n)
            .map(|i| {
                if column.integer_key() {
                    format!("CAST({} AS bigint)", key_param(i))
                } else {
                    key_param(i)
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (table, col) = (column.table, column.column);
    let select = format!("SELECT {key_text}, {col} FROM {table} WHERE {col} IS NOT NULL");
    ResealSql {
        first: format!("{select} ORDER BY {keys} LIMIT {}", param(1)),
        after: format!(
            "{select} AND ({keys}) > ({}) ORDER BY {keys} LIMIT {}",
            key_params(1),
            param(n + 1)
        ),
        update: format!(
            "UPDATE {table} SET {col} = {} WHERE ({keys}) = ({}) AND {col} = {}",
            param(1),
            key_params(2),
            param(n + 2)
        ),
    }
}

/// A stored value sealed anew under the current key (`None`: leave it). The
/// stores read text columns as bytes of UTF-8 here, to handle both kinds alike.
pub(super) fn reseal_value(column: &SealedColumn, stored: &[u8]) -> StoreResult<Option<Vec<u8>>> {
    let vault = vault::vault().ok_or_else(|| {
        invalid("no data key is configured: nothing to seal under ([security] data_key_file)")
    })?;
    let resealed = if column.text {
        let text = std::str::from_utf8(stored)
            .map_err(|_| corrupt(format!("{}: not text", column.name())))?;
        vault
            .reseal_text(column.purpose, text)
            .map(|v| v.map(String::into_bytes))
    } else {
        vault.reseal_bytes(column.purpose, stored)
    };
    resealed.map_err(|e| unsealed(&column.name(), e))
}

/// A sealed value that does not open: the wrong keys, or a changed value.
pub(super) fn unsealed(purpose: &str, e: crate::vault::VaultError) -> StoreError {
    StoreError::Corrupt(format!("{purpose}: {e}"))
}

/// A caller's value the store cannot hold (an amount above `i64::MAX`, a key
/// that is not digits), or a step the stored state does not allow.
pub(super) fn invalid(why: impl std::fmt::Display) -> StoreError {
    StoreError::Invalid(why.to_string())
}

// ---------------------------------------------------------------------------
// Values going in

/// A key part (an MTI, an institution id, a transmission date-time, a
/// STAN) as the text columns hold it, kept inline: a receive's keys are
/// built, cloned into the embedded store's book of sagas, hashed and
/// compared a dozen times, and a `String` each was a fifth of the
/// receive's allocations. Ordered, hashed and compared as its bytes, as a
/// `String` is.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct KeyText(smallvec::SmallVec<[u8; 16]>);

impl KeyText {
    /// ASCII digits, checked (a caller's key part).
    pub(super) fn digits(what: &str, bytes: &[u8]) -> StoreResult<KeyText> {
        if bytes.iter().all(u8::is_ascii_digit) {
            // ASCII digits are UTF-8: the text is the bytes.
            Ok(KeyText(smallvec::SmallVec::from_slice(bytes)))
        } else {
            Err(invalid(format!(
                "{what} {:?} is not digits",
                String::from_utf8_lossy(bytes)
            )))
        }
    }

    /// Text as it was stored (a row's column, a log record's part).
    pub(super) fn new(text: &str) -> KeyText {
        KeyText(smallvec::SmallVec::from_slice(text.as_bytes()))
    }

    /// Bytes as text, anything not UTF-8 replaced (a sent message's STAN
    /// and transmission date-time, which the switch wrote as digits).
    pub(super) fn lossy(bytes: &[u8]) -> KeyText {
        match std::str::from_utf8(bytes) {
            Ok(text) => KeyText::new(text),
            Err(_) => KeyText::new(&String::from_utf8_lossy(bytes)),
        }
    }

    /// Its bytes, unchecked: binding a key part, writing it into the log
    /// or a pack, comparing it (what `as_str`, through `Deref`, checks for
    /// UTF-8 each time).
    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub(super) fn as_str(&self) -> &str {
        // Made only from text (`new`, `lossy`) or ASCII digits: always UTF-8.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl From<&str> for KeyText {
    fn from(text: &str) -> KeyText {
        KeyText::new(text)
    }
}

impl PartialEq<str> for KeyText {
    fn eq(&self, other: &str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<&str> for KeyText {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

/// Key parts joined by `/`, as messages name a key.
pub(super) fn joined(parts: &[KeyText]) -> String {
    let mut out = String::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(part);
    }
    out
}

impl std::ops::Deref for KeyText {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for KeyText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for KeyText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

/// A request key's columns: mti, acquirer, transmission, stan.
#[derive(Clone)]
pub(super) struct ReqCols(pub(super) [KeyText; 4]);

impl ReqCols {
    pub(super) fn new(k: &RequestKey) -> StoreResult<Self> {
        Ok(ReqCols([
            KeyText::digits("MTI", &k.mti)?,
            KeyText::digits("acquirer", &k.acquirer.0)?,
            KeyText::digits("transmission date-time", &k.transmission)?,
            KeyText::digits("STAN", &k.stan)?,
        ]))
    }

    /// The sort key of commands on this request (when no freeze is known).
    pub(super) fn order(&self) -> String {
        let [mti, acquirer, transmission, stan] = &self.0;
        format!("r{mti}/{acquirer}/{transmission}/{stan}")
    }
}

/// A freeze key's columns: acquirer, transmission, stan.
#[derive(Clone)]
pub(super) struct FreezeCols(pub(super) [KeyText; 3]);

impl FreezeCols {
    pub(super) fn new(k: &FreezeKey) -> StoreResult<Self> {
        Ok(FreezeCols([
            KeyText::digits("acquirer", &k.acquirer.0)?,
            KeyText::digits("transmission date-time", &k.transmission)?,
            KeyText::digits("STAN", &k.stan)?,
        ]))
    }

    /// The sort key of commands on this freeze (and the lane they go to).
    pub(super) fn order(&self) -> String {
        let [acquirer, transmission, stan] = &self.0;
        format!("f{acquirer}/{transmission}/{stan}")
    }
}

/// An amount as the `INTEGER`/`bigint` columns hold it: above `i64::MAX` is
/// refused, never wrapped.
pub(super) fn amount_in(what: &str, amount: u64) -> StoreResult<i64> {
    i64::try_from(amount).map_err(|_| invalid(format!("{what} {amount} exceeds i64::MAX")))
}

// ---------------------------------------------------------------------------
// Values coming out

/// `N` ASCII digits, as a key part was written.
pub(super) fn digits_of<const N: usize>(text: &str, idx: usize) -> StoreResult<[u8; N]> {
    let bytes = text.as_bytes();
    if bytes.len() != N || !bytes.iter().all(u8::is_ascii_digit) {
        return Err(corrupt(format!("column {idx}: {text:?} is not {N} digits")));
    }
    let mut out = [0u8; N];
    out.copy_from_slice(bytes);
    Ok(out)
}

/// One row of a query, as each store reads it: typed getters by column index,
/// failing with the store's own error. The rest is built on them, once.
pub(super) trait Columns {
    fn text(&self, idx: usize) -> StoreResult<String>;
    fn opt_text(&self, idx: usize) -> StoreResult<Option<String>>;
    /// A 64-bit integer column.
    fn bigint(&self, idx: usize) -> StoreResult<i64>;
    fn opt_bigint(&self, idx: usize) -> StoreResult<Option<i64>>;
    /// A small integer column (`integer`: 32 bits in PostgreSQL).
    fn int(&self, idx: usize) -> StoreResult<i64>;
    fn blob(&self, idx: usize) -> StoreResult<Vec<u8>>;

    /// A text column lent to `read`. A store whose rows can lend their own
    /// bytes does so (SQLite): the keys of a day's records are read without
    /// a `String` each.
    fn with_str<T>(&self, idx: usize, read: impl FnOnce(&str) -> StoreResult<T>) -> StoreResult<T> {
        read(&self.text(idx)?)
    }

    /// A nullable text column lent to `read` (see [`Columns::with_str`]).
    fn with_opt_str<T>(
        &self,
        idx: usize,
        read: impl FnOnce(Option<&str>) -> StoreResult<T>,
    ) -> StoreResult<T> {
        read(self.opt_text(idx)?.as_deref())
    }

    /// A blob column lent to `read` (see [`Columns::with_str`]).
    fn with_blob<T>(
        &self,
        idx: usize,
        read: impl FnOnce(&[u8]) -> StoreResult<T>,
    ) -> StoreResult<T> {
        read(&self.blob(idx)?)
    }

    fn digits<const N: usize>(&self, idx: usize) -> StoreResult<[u8; N]> {
        self.with_str(idx, |t| digits_of(t, idx))
    }

    fn opt_digits<const N: usize>(&self, idx: usize) -> StoreResult<Option<[u8; N]>> {
        self.with_opt_str(idx, |t| t.map(|t| digits_of(t, idx)).transpose())
    }

    fn amount(&self, idx: usize) -> StoreResult<u64> {
        let v = self.bigint(idx)?;
        u64::try_from(v).map_err(|_| corrupt(format!("column {idx}: negative amount {v}")))
    }

    fn digest(&self, idx: usize) -> StoreResult<[u8; 32]> {
        self.with_blob(idx, |blob| {
            <[u8; 32]>::try_from(blob)
                .map_err(|_| corrupt(format!("column {idx}: digest of {} bytes", blob.len())))
        })
    }

    /// A card number column, opened if it was sealed (`crate::vault`).
    fn sealed_text(&self, idx: usize, purpose: &str) -> StoreResult<String> {
        self.with_str(idx, |t| {
            vault::open_text(purpose, t).map_err(|e| unsealed(purpose, e))
        })
    }

    /// A message column, opened if it was sealed.
    fn sealed_bytes(&self, idx: usize, purpose: &str) -> StoreResult<Bytes> {
        vault::open_bytes(purpose, &self.blob(idx)?)
            .map(Bytes::from)
            .map_err(|e| unsealed(purpose, e))
    }

    /// A message sent to a bank: its STAN and transmission columns, both or neither.
    fn sent(&self, stan_idx: usize, transmission_idx: usize) -> StoreResult<Option<SentMessage>> {
        match (
            self.opt_digits::<6>(stan_idx)?,
            self.opt_digits::<10>(transmission_idx)?,
        ) {
            (None, None) => Ok(None),
            (Some(stan), Some(transmission)) => Ok(Some(SentMessage { stan, transmission })),
            _ => Err(corrupt(format!(
                "columns {stan_idx} and {transmission_idx}: half of a sent message"
            ))),
        }
    }

    fn freeze_key(&self, at: usize) -> StoreResult<FreezeKey> {
        Ok(FreezeKey {
            acquirer: InstitutionId(self.digits(at)?),
            transmission: self.digits(at + 1)?,
            stan: self.digits(at + 2)?,
        })
    }

    fn request_key(&self, at: usize) -> StoreResult<RequestKey> {
        Ok(RequestKey {
            mti: self.digits(at)?,
            acquirer: InstitutionId(self.digits(at + 1)?),
            transmission: self.digits(at + 2)?,
            stan: self.digits(at + 3)?,
        })
    }

    fn saga_state(&self, idx: usize) -> StoreResult<SagaState> {
        self.with_str(idx, |state| {
            SagaState::parse(state).ok_or_else(|| corrupt(format!("saga state {state:?}")))
        })
    }
}

// ---------------------------------------------------------------------------
// Whole records

/// The columns [`freeze_row`] reads, as a literal for `concat!`: as many as
/// [`FREEZE_COLUMNS`] says.
macro_rules! freeze_columns {
    () => {
        "acquirer, transmission, stan, payer_pan, payer_bank, amount_minor, currency, \
         received_minor, reserved_minor, state, created_at_ms, request_digest"
    };
}

/// How many columns [`freeze_columns!`] lists: a statement that returns
/// other columns after a freeze's finds them from `at + FREEZE_COLUMNS` on.
pub(super) const FREEZE_COLUMNS: usize = 12;

/// Reads a freeze from columns `at..at + FREEZE_COLUMNS` in
/// [`freeze_columns!`] order.
pub(super) fn freeze_row(row: &impl Columns, at: usize) -> StoreResult<FreezeRecord> {
    let state = row.text(at + 9)?;
    let currency = row.int(at + 6)?;
    Ok(FreezeRecord {
        key: row.freeze_key(at)?,
        payer_pan: row.sealed_text(at + 3, sealed::PAYER_PAN)?,
        payer_bank: row.text(at + 4)?,
        amount_minor: row.amount(at + 5)?,
        currency: u16::try_from(currency).map_err(|_| corrupt(format!("currency {currency}")))?,
        received_minor: row.amount(at + 7)?,
        reserved_minor: row.amount(at + 8)?,
        state: FreezeState::parse(&state)
            .ok_or_else(|| corrupt(format!("freeze state {state:?}")))?,
        created_at_ms: row.bigint(at + 10)?,
        request_digest: row.digest(at + 11)?,
    })
}

/// The columns [`saga_row`] reads, as a literal for `concat!`.
macro_rules! saga_columns {
    () => {
        "mti, acquirer, transmission, stan, freeze_acquirer, freeze_transmission, freeze_stan, \
         amount_minor, receiver_pan, receiver_bank, state, debit_stan, debit_transmission, \
         credit_stan, credit_transmission, reversal_stan, reversal_transmission, response_code, \
         created_at_ms, request_digest"
    };
}

/// Reads a saga in [`saga_columns!`] order.
pub(super) fn saga_row(row: &impl Columns) -> StoreResult<SagaRecord> {
    Ok(SagaRecord {
        request: row.request_key(0)?,
        freeze: row.freeze_key(4)?,
        amount_minor: row.amount(7)?,
        receiver_pan: row.sealed_text(8, sealed::RECEIVER_PAN)?,
        receiver_bank: row.text(9)?,
        state: row.saga_state(10)?,
        debit: row.sent(11, 12)?,
        credit: row.sent(13, 14)?,
        reversal: row.sent(15, 16)?,
        response_code: row.opt_text(17)?,
        created_at_ms: row.bigint(18)?,
        request_digest: row.digest(19)?,
    })
}

/// The columns [`saf_row`] reads, as a literal for `concat!`.
macro_rules! saf_columns {
    () => {
        "id, bank, order_key, kind, message, created_at_ms, state, attempts, next_attempt_ms, \
         last_result"
    };
}

/// Reads a store-and-forward entry in [`saf_columns!`] order.
pub(super) fn saf_row(row: &impl Columns) -> StoreResult<SafEntry> {
    let kind = row.text(3)?;
    let state = row.text(6)?;
    let attempts = row.int(7)?;
    Ok(SafEntry {
        id: row.bigint(0)?,
        entry: NewSafEntry {
            bank: row.text(1)?,
            order_key: row.text(2)?,
            kind: SafKind::parse(&kind).ok_or_else(|| corrupt(format!("saf kind {kind:?}")))?,
            message: row.sealed_bytes(4, sealed::SAF_MESSAGE)?,
            created_at_ms: row.bigint(5)?,
        },
        state: SafState::parse(&state).ok_or_else(|| corrupt(format!("saf state {state:?}")))?,
        attempts: u32::try_from(attempts).map_err(|_| corrupt("saf attempts"))?,
        next_attempt_ms: row.bigint(8)?,
        last_result: row.opt_text(9)?,
    })
}

/// The columns [`journal_row`] reads, as a literal for `concat!`.
macro_rules! journal_columns {
    () => {
        "at_ms, direction, peer, mti, processing_code, stan, transmission, acquirer, \
         response_code, pan_masked, amount_minor, note, raw"
    };
}

/// A journal direction as the `direction` column holds it.
pub(super) fn direction_text(direction: Direction) -> &'static str {
    match direction {
        Direction::In => "in",
        Direction::Out => "out",
    }
}

/// A journal row, in [`journal_columns!`] order, as [`super::History::journal_between`]
/// returns it.
pub(super) fn journal_row(row: &impl Columns) -> StoreResult<JournalEntry> {
    let direction = match row.text(1)?.as_str() {
        "in" => Direction::In,
        "out" => Direction::Out,
        other => return Err(corrupt(format!("journal direction {other:?}"))),
    };
    let amount = row.opt_bigint(10)?;
    Ok(JournalEntry {
        at_ms: row.bigint(0)?,
        direction,
        peer: row.text(2)?,
        // As written: four characters, not necessarily digits.
        mti: <[u8; 4]>::try_from(row.text(3)?.as_bytes()).unwrap_or(*b"????"),
        processing_code: row.opt_text(4)?,
        stan: row.opt_text(5)?,
        transmission: row.opt_text(6)?,
        acquirer: row.opt_text(7)?,
        response_code: row.opt_text(8)?,
        pan_masked: row.opt_text(9)?,
        amount_minor: amount.and_then(|a| u64::try_from(a).ok()),
        note: row.opt_text(11)?,
        raw: row.sealed_bytes(12, sealed::JOURNAL_RAW)?,
    })
}

/// A settlement date as the `cleared_days` table holds it.
pub(super) fn date_text(date: chrono::NaiveDate) -> String {
    date.format("%Y-%m-%d").to_string()
}

/// The statement that reads every cleared day, oldest first, for [`cleared_day_row`].
pub(super) const SQL_CLEARED_DAYS: &str =
    "SELECT date, cleared_at_ms, purge_began_ms, purged_at_ms FROM cleared_days ORDER BY date";

/// The statement that records a purge's start (`done = false`) or end.
pub(super) fn mark_purge_sql(done: bool) -> &'static str {
    if done {
        "UPDATE cleared_days SET purged_at_ms = $2 WHERE date = $1 AND purged_at_ms IS NULL"
    } else {
        "UPDATE cleared_days SET purge_began_ms = $2 WHERE date = $1 AND purge_began_ms IS NULL"
    }
}

/// A `cleared_days` row, as [`SQL_CLEARED_DAYS`] reads it.
pub(super) fn cleared_day_row(row: &impl Columns) -> StoreResult<super::ClearedDay> {
    let date = row.text(0)?;
    Ok(super::ClearedDay {
        date: chrono::NaiveDate::parse_from_str(&date, "%Y-%m-%d")
            .map_err(|_| corrupt(format!("cleared day {date:?}")))?,
        cleared_at_ms: row.bigint(1)?,
        purge_began_ms: row.opt_bigint(2)?,
        purged_at_ms: row.opt_bigint(3)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_parts_are_their_digits_as_text_and_nothing_else_is() {
        assert_eq!(
            KeyText::digits("STAN", b"000123").unwrap().as_str(),
            "000123"
        );
        assert_eq!(KeyText::digits("STAN", b"").unwrap().as_str(), "");
        for bad in [&b"00012a"[..], b"12 4", "１２".as_bytes(), &[0xff, b'1']] {
            let e = KeyText::digits("STAN", bad).unwrap_err();
            assert!(e.to_string().contains("STAN"), "{e}");
        }
    }

    #[test]
    fn key_parts_order_hash_and_read_as_the_text_they_hold() {
        // Longer than the inline room as well: the same text, the same key.
        let long = "1".repeat(40);
        for text in ["", "0200", "12345678901", long.as_str()] {
            let key = KeyText::new(text);
            assert_eq!(key.as_str(), text);
            assert_eq!(format!("{key}"), text);
            assert_eq!(format!("{key:?}"), format!("{text:?}"));
            assert_eq!(key, KeyText::lossy(text.as_bytes()));
        }
        // Ordered as the strings are (the book writes rows in key order).
        let mut keys: Vec<KeyText> = ["2", "10", "1", "", "19", long.as_str()]
            .into_iter()
            .map(KeyText::new)
            .collect();
        keys.sort();
        let mut texts = vec!["2", "10", "1", "", "19", long.as_str()];
        texts.sort();
        assert_eq!(keys.iter().map(KeyText::as_str).collect::<Vec<_>>(), texts);
        assert_eq!(KeyText::lossy(&[b'1', 0xff]).as_str(), "1\u{fffd}");
        let request = ReqCols([
            KeyText::new("0200"),
            KeyText::new("123456"),
            KeyText::new("1201101500"),
            KeyText::new("000042"),
        ]);
        assert_eq!(request.order(), "r0200/123456/1201101500/000042");
        assert_eq!(joined(&request.0), "0200/123456/1201101500/000042");
        assert_eq!(joined(&[]), "");
    }
}

//! Keys and values as stored: the key columns of requests and freezes,
//! amounts, and the readers that turn rows back into records (anything
//! unreadable is `Corrupt`). Also the column lists the statements share.

use super::*;

// ---------------------------------------------------------------------------
// Keys and values as stored

/// Key parts as the text columns hold them: ASCII digits, checked both ways.
pub(super) fn digits_text(what: &str, bytes: &[u8]) -> StoreResult<String> {
    if bytes.iter().all(u8::is_ascii_digit) {
        Ok(bytes.iter().map(|&b| b as char).collect())
    } else {
        Err(invalid(format!(
            "{what} {:?} is not digits",
            String::from_utf8_lossy(bytes)
        )))
    }
}

/// A request key's columns: mti, acquirer, transmission, stan.
#[derive(Clone)]
pub(super) struct ReqCols(pub(super) [String; 4]);

impl ReqCols {
    pub(super) fn new(k: &RequestKey) -> StoreResult<Self> {
        Ok(ReqCols([
            digits_text("MTI", &k.mti)?,
            digits_text("acquirer", &k.acquirer.0)?,
            digits_text("transmission date-time", &k.transmission)?,
            digits_text("STAN", &k.stan)?,
        ]))
    }

    pub(super) fn push(&self, params: &mut Params) {
        for c in &self.0 {
            params.push(Box::new(c.clone()));
        }
    }

    pub(super) fn order(&self) -> String {
        format!("r{}", self.0.join("/"))
    }
}

/// A freeze key's columns: acquirer, transmission, stan.
#[derive(Clone)]
pub(super) struct FreezeCols(pub(super) [String; 3]);

impl FreezeCols {
    pub(super) fn new(k: &FreezeKey) -> StoreResult<Self> {
        Ok(FreezeCols([
            digits_text("acquirer", &k.acquirer.0)?,
            digits_text("transmission date-time", &k.transmission)?,
            digits_text("STAN", &k.stan)?,
        ]))
    }

    pub(super) fn push(&self, params: &mut Params) {
        for c in &self.0 {
            params.push(Box::new(c.clone()));
        }
    }

    /// The sort key of commands on this freeze (and the lane they go to).
    pub(super) fn order(&self) -> String {
        format!("f{}", self.0.join("/"))
    }
}

pub(super) fn amount_in(what: &str, amount: u64) -> StoreResult<i64> {
    i64::try_from(amount).map_err(|_| invalid(format!("{what} {amount} exceeds i64::MAX")))
}

pub(super) fn text_col(row: &Row, idx: usize) -> StoreResult<String> {
    row.try_get::<_, String>(idx)
        .map_err(|e| corrupt(format!("column {idx}: {e}")))
}

pub(super) fn opt_text_col(row: &Row, idx: usize) -> StoreResult<Option<String>> {
    row.try_get::<_, Option<String>>(idx)
        .map_err(|e| corrupt(format!("column {idx}: {e}")))
}

pub(super) fn i64_col(row: &Row, idx: usize) -> StoreResult<i64> {
    row.try_get::<_, i64>(idx)
        .map_err(|e| corrupt(format!("column {idx}: {e}")))
}

pub(super) fn digits_col<const N: usize>(row: &Row, idx: usize) -> StoreResult<[u8; N]> {
    digits_of(&text_col(row, idx)?, idx)
}

pub(super) fn digits_of<const N: usize>(text: &str, idx: usize) -> StoreResult<[u8; N]> {
    let bytes = text.as_bytes();
    if bytes.len() != N || !bytes.iter().all(u8::is_ascii_digit) {
        return Err(corrupt(format!("column {idx}: {text:?} is not {N} digits")));
    }
    let mut out = [0u8; N];
    out.copy_from_slice(bytes);
    Ok(out)
}

pub(super) fn opt_digits_col<const N: usize>(
    row: &Row,
    idx: usize,
) -> StoreResult<Option<[u8; N]>> {
    opt_text_col(row, idx)?
        .map(|t| digits_of(&t, idx))
        .transpose()
}

pub(super) fn amount_col(row: &Row, idx: usize) -> StoreResult<u64> {
    let v = i64_col(row, idx)?;
    u64::try_from(v).map_err(|_| corrupt(format!("column {idx}: negative amount {v}")))
}

pub(super) fn digest_col(row: &Row, idx: usize) -> StoreResult<[u8; 32]> {
    let blob: Vec<u8> = row
        .try_get(idx)
        .map_err(|e| corrupt(format!("column {idx}: {e}")))?;
    <[u8; 32]>::try_from(blob.as_slice())
        .map_err(|_| corrupt(format!("column {idx}: digest of {} bytes", blob.len())))
}

pub(super) fn bytes_col(row: &Row, idx: usize) -> StoreResult<Bytes> {
    let blob: Vec<u8> = row
        .try_get(idx)
        .map_err(|e| corrupt(format!("column {idx}: {e}")))?;
    Ok(Bytes::from(blob))
}

pub(super) fn sent_col(
    row: &Row,
    stan_idx: usize,
    transmission_idx: usize,
) -> StoreResult<Option<SentMessage>> {
    match (
        opt_digits_col::<6>(row, stan_idx)?,
        opt_digits_col::<10>(row, transmission_idx)?,
    ) {
        (None, None) => Ok(None),
        (Some(stan), Some(transmission)) => Ok(Some(SentMessage { stan, transmission })),
        _ => Err(corrupt(format!(
            "columns {stan_idx} and {transmission_idx}: half of a sent message"
        ))),
    }
}

/// The columns [`freeze_row`] reads, as a literal for `concat!`.
macro_rules! freeze_columns {
    () => {
        "acquirer, transmission, stan, payer_pan, payer_bank, amount_minor, currency, \
         received_minor, reserved_minor, state, created_at_ms"
    };
}

/// Reads a freeze from columns `at..at + 11` in [`freeze_columns!`] order.
pub(super) fn freeze_row(row: &Row, at: usize) -> StoreResult<FreezeRecord> {
    let state = text_col(row, at + 9)?;
    let currency: i32 = row
        .try_get(at + 6)
        .map_err(|e| corrupt(format!("currency: {e}")))?;
    Ok(FreezeRecord {
        key: FreezeKey {
            acquirer: InstitutionId(digits_col(row, at)?),
            transmission: digits_col(row, at + 1)?,
            stan: digits_col(row, at + 2)?,
        },
        payer_pan: text_col(row, at + 3)?,
        payer_bank: text_col(row, at + 4)?,
        amount_minor: amount_col(row, at + 5)?,
        currency: u16::try_from(currency).map_err(|_| corrupt(format!("currency {currency}")))?,
        received_minor: amount_col(row, at + 7)?,
        reserved_minor: amount_col(row, at + 8)?,
        state: FreezeState::parse(&state)
            .ok_or_else(|| corrupt(format!("freeze state {state:?}")))?,
        created_at_ms: i64_col(row, at + 10)?,
    })
}

/// The columns [`saga_row`] reads, as a literal for `concat!`.
macro_rules! saga_columns {
    () => {
        "mti, acquirer, transmission, stan, freeze_acquirer, freeze_transmission, freeze_stan, \
         amount_minor, receiver_pan, receiver_bank, state, debit_stan, debit_transmission, \
         credit_stan, credit_transmission, reversal_stan, reversal_transmission, response_code, \
         created_at_ms"
    };
}

pub(super) fn saga_row(row: &Row) -> StoreResult<SagaRecord> {
    let state = text_col(row, 10)?;
    Ok(SagaRecord {
        request: RequestKey {
            mti: digits_col(row, 0)?,
            acquirer: InstitutionId(digits_col(row, 1)?),
            transmission: digits_col(row, 2)?,
            stan: digits_col(row, 3)?,
        },
        freeze: FreezeKey {
            acquirer: InstitutionId(digits_col(row, 4)?),
            transmission: digits_col(row, 5)?,
            stan: digits_col(row, 6)?,
        },
        amount_minor: amount_col(row, 7)?,
        receiver_pan: text_col(row, 8)?,
        receiver_bank: text_col(row, 9)?,
        state: SagaState::parse(&state).ok_or_else(|| corrupt(format!("saga state {state:?}")))?,
        debit: sent_col(row, 11, 12)?,
        credit: sent_col(row, 13, 14)?,
        reversal: sent_col(row, 15, 16)?,
        response_code: opt_text_col(row, 17)?,
        created_at_ms: i64_col(row, 18)?,
    })
}

/// The columns [`saf_row`] reads, as a literal for `concat!`.
macro_rules! saf_columns {
    () => {
        "id, bank, order_key, kind, message, created_at_ms, state, attempts, next_attempt_ms, \
         last_result"
    };
}

/// A journal row as [`Store::journal_between`] returns it.
pub(super) fn journal_row(row: &Row) -> StoreResult<JournalEntry> {
    let direction = match text_col(row, 1)?.as_str() {
        "in" => Direction::In,
        "out" => Direction::Out,
        other => return Err(corrupt(format!("journal direction {other:?}"))),
    };
    let amount: Option<i64> = row
        .try_get(10)
        .map_err(|e| corrupt(format!("journal amount: {e}")))?;
    Ok(JournalEntry {
        at_ms: i64_col(row, 0)?,
        direction,
        peer: text_col(row, 2)?,
        // As written: four characters, not necessarily digits.
        mti: <[u8; 4]>::try_from(text_col(row, 3)?.as_bytes()).unwrap_or(*b"????"),
        processing_code: opt_text_col(row, 4)?,
        stan: opt_text_col(row, 5)?,
        transmission: opt_text_col(row, 6)?,
        acquirer: opt_text_col(row, 7)?,
        response_code: opt_text_col(row, 8)?,
        pan_masked: opt_text_col(row, 9)?,
        amount_minor: amount.and_then(|a| u64::try_from(a).ok()),
        note: opt_text_col(row, 11)?,
        raw: bytes_col(row, 12)?,
    })
}

pub(super) fn saf_row(row: &Row) -> StoreResult<SafEntry> {
    let kind = text_col(row, 3)?;
    let state = text_col(row, 6)?;
    let attempts: i32 = row
        .try_get(7)
        .map_err(|e| corrupt(format!("saf attempts: {e}")))?;
    Ok(SafEntry {
        id: i64_col(row, 0)?,
        entry: NewSafEntry {
            bank: text_col(row, 1)?,
            order_key: text_col(row, 2)?,
            kind: SafKind::parse(&kind).ok_or_else(|| corrupt(format!("saf kind {kind:?}")))?,
            message: bytes_col(row, 4)?,
            created_at_ms: i64_col(row, 5)?,
        },
        state: SafState::parse(&state).ok_or_else(|| corrupt(format!("saf state {state:?}")))?,
        attempts: u32::try_from(attempts).map_err(|_| corrupt("saf attempts"))?,
        next_attempt_ms: i64_col(row, 8)?,
        last_result: opt_text_col(row, 9)?,
    })
}

/// Store-and-forward entries as five parallel arrays, for `unnest`.
pub(super) fn push_saf(params: &mut Params, entries: &[&NewSafEntry]) {
    params.push(Box::new(
        entries.iter().map(|e| e.bank.clone()).collect::<Vec<_>>(),
    ));
    params.push(Box::new(
        entries
            .iter()
            .map(|e| e.order_key.clone())
            .collect::<Vec<_>>(),
    ));
    params.push(Box::new(
        entries
            .iter()
            .map(|e| e.kind.as_str().to_string())
            .collect::<Vec<_>>(),
    ));
    params.push(Box::new(
        entries
            .iter()
            .map(|e| e.message.to_vec())
            .collect::<Vec<_>>(),
    ));
    params.push(Box::new(
        entries.iter().map(|e| e.created_at_ms).collect::<Vec<_>>(),
    ));
}

/// Inserts the store-and-forward entries given as parameters `$a..$a+4` (five
/// arrays, see [`push_saf`]), in their order, when `$cond` holds.
macro_rules! saf_insert {
    ($a:literal, $b:literal, $c:literal, $d:literal, $e:literal, $cond:literal) => {
        concat!(
            "INSERT INTO saf (bank, order_key, kind, message, created_at_ms, state, next_attempt_ms) \
             SELECT t.bank, t.order_key, t.kind, t.message, t.created_at_ms, 'pending', t.created_at_ms \
             FROM unnest(", $a, "::text[], ", $b, "::text[], ", $c, "::text[], ", $d, "::bytea[], ",
            $e, "::bigint[]) WITH ORDINALITY AS t(bank, order_key, kind, message, created_at_ms, n) \
             WHERE ", $cond, " ORDER BY t.n"
        )
    };
}

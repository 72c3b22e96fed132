//! Clearing one settlement day from the switch's store: one file per bank and
//! per wallet, and a summary with every bank's net position.
//!
//! What goes in, all read through the [`Store`] trait:
//!
//! - the **journal**, read back in slices of the day (plus a margin either
//!   side): the switch's debits and credits as it sent them to the banks (F7,
//!   F11, F32, card masked, F4, F49, F90) and the banks' answers to them (late,
//!   unmatched answers are not answers); the wallets' requests and the
//!   switch's answers to them;
//! - the **receive sagas** of the day: which debit and credit belong to which
//!   receive (for the bilateral positions and the receives' dates), which
//!   are still in flight, and the identities a crash may have kept out of
//!   the journal (an approved saga's debit and credit were both answered 00);
//! - the **store-and-forward queue**: every reversal with how it ended, which
//!   nets out its original (answered 00: `reversed`; answered 25: the
//!   original never reached the bank, `not_applied`), and names it with its
//!   card, amount and currency even when the original was never sent.
//!
//! A bank line belongs to the day its F7 (the switch's, as the bank received
//! it) falls on; a wallet's request to the day the switch received it, except
//! a receive, which belongs to its debit's day (the day it happens, whatever
//! day its freeze was made). Nothing final changes by clearing again, so
//! clearing a day twice writes the same bytes.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use rust_decimal::Decimal;

use iso8583::codec::parse;
use iso8583::fields::{self, num};
use iso8583::response::ResponseCode;
use iso8583::spec::Spec;

use super::file::{Header, Kind, Line, ParticipantFile, Role, Status, Trailer, FORMAT, VERSION};
use super::{decimal, institution11, Settlement};
use crate::dialect::{InstitutionId, OriginalData};
use crate::store::{
    Direction, JournalEntry, RequestKey, SafKind, SafState, SagaRecord, SagaState, Store,
    StoreError,
};

/// How far outside its day a day's message may have been journaled (its
/// answer after the day's end, a clock a little off): one hour.
pub const MARGIN_MS: i64 = 3_600_000;

/// The journal is read in slices of this many milliseconds (ten minutes).
const SLICE_MS: i64 = 600_000;

/// How far a clearing has got, for a progress display.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClearProgress {
    /// The journal is read in time order: `read_ms` of the `window_ms` it
    /// spans (the day and its margins) read, `entries` entries so far.
    Journal {
        read_ms: u64,
        window_ms: u64,
        entries: u64,
    },
    /// The journal is read; the sagas, the store-and-forward queue and the
    /// files are next.
    JournalRead,
}

/// What to clear.
#[derive(Clone, Debug)]
pub struct ClearRequest {
    pub date: NaiveDate,
    pub settlement: Settlement,
    /// The switch's institution id.
    pub switch_id: String,
    /// Banks that get a file even on a day without traffic (institution ids).
    pub banks: Vec<String>,
    /// Wallets that get a file even on a day without traffic.
    pub wallets: Vec<String>,
    /// Clear what is final and list the rest, instead of refusing.
    pub allow_pending: bool,
}

/// Something of the day that is not final yet.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pending {
    /// `bank` or `wallet`.
    pub role: Role,
    /// The participant, 11 digits.
    pub participant: String,
    pub kind: Kind,
    pub key: String,
    pub reason: String,
}

/// A bank's position in one currency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    pub bank: String,
    pub currency: u16,
    pub debits: (u64, Decimal),
    pub credits: (u64, Decimal),
    /// credits − debits: positive, the bank receives; negative, it pays.
    pub net: Decimal,
}

/// What one bank owes another, netted over the day.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Obligation {
    pub payer: String,
    pub receiver: String,
    pub currency: u16,
    pub amount: Decimal,
}

/// The day as cleared.
#[derive(Clone, Debug)]
pub struct Cleared {
    pub date: NaiveDate,
    pub settlement: Settlement,
    /// The switch's institution id, 11 digits.
    pub switch: String,
    /// By institution id (11 digits).
    pub banks: BTreeMap<String, ParticipantFile>,
    pub wallets: BTreeMap<String, ParticipantFile>,
    pub positions: Vec<Position>,
    pub obligations: Vec<Obligation>,
    /// What was left out because it is not final (only with `allow_pending`).
    pub pending: Vec<Pending>,
}

/// Why a day was not cleared.
#[derive(Debug, thiserror::Error)]
pub enum ClearError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{} transaction(s) of {date} are not final yet (sagas in flight or store-and-forward entries pending); clear again once they are, or pass --allow-pending to clear what is final and list the rest:\n{}", pending.len(), describe(pending))]
    NotFinal {
        date: NaiveDate,
        pending: Vec<Pending>,
    },
    #[error("bad request: {0}")]
    Invalid(String),
}

fn describe(pending: &[Pending]) -> String {
    pending
        .iter()
        .map(|p| {
            format!(
                "  {} {} {} {}: {}",
                p.role, p.participant, p.kind, p.key, p.reason
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// F32/F7/F11 of a message, F32 as 11 digits.
type MsgKey = [u8; 27];

fn msg_key(acquirer: &[u8], transmission: &[u8], stan: &[u8]) -> Option<MsgKey> {
    let acquirer = InstitutionId::from_field(num::ACQUIRER, acquirer).ok()?;
    if transmission.len() != 10 || stan.len() != 6 {
        return None;
    }
    let mut key = [0u8; 27];
    key[..11].copy_from_slice(&acquirer.0);
    key[11..21].copy_from_slice(transmission);
    key[21..].copy_from_slice(stan);
    Some(key)
}

fn key_text(key: &MsgKey) -> String {
    let s = |r: std::ops::Range<usize>| String::from_utf8_lossy(&key[r]).into_owned();
    format!("{}/{}/{}", s(0..11), s(11..21), s(21..27))
}

fn entry_key(e: &JournalEntry) -> Option<MsgKey> {
    msg_key(
        e.acquirer.as_deref()?.as_bytes(),
        e.transmission.as_deref()?.as_bytes(),
        e.stan.as_deref()?.as_bytes(),
    )
}

/// A debit or credit the switch sent on the day.
struct BankMessage {
    bank: String,
    kind: Kind,
    pan: String,
    currency: u16,
    amount_minor: u64,
    freeze: String,
}

/// A wallet's request.
struct WalletRequest {
    at_ms: i64,
    wallet: String,
    pan: String,
    currency: u16,
    amount_minor: u64,
    freeze: String,
    /// The switch's decision (F39), once seen.
    answer: Option<String>,
}

/// How the reversal of a debit or credit stands.
#[derive(Clone, PartialEq, Eq, Debug)]
enum Reversal {
    Pending,
    Dead(String),
    Done(String),
}

/// Everything read from the journal.
#[derive(Default)]
struct Journal {
    bank_messages: HashMap<MsgKey, BankMessage>,
    bank_answers: HashMap<MsgKey, String>,
    wallet_requests: HashMap<(Kind, MsgKey), WalletRequest>,
}

fn wallet_kind(mti: &[u8; 4], processing_code: Option<&str>) -> Option<Kind> {
    match (&mti[..3], processing_code) {
        (b"010", _) | (b"011", _) => Some(Kind::Freeze),
        (b"020", Some("400000")) | (b"021", Some("400000")) => Some(Kind::Receive),
        (b"012", _) | (b"013", _) => Some(Kind::Unfreeze),
        _ => None,
    }
}

impl Journal {
    fn take(&mut self, spec: &Spec, e: JournalEntry, date: NaiveDate, settlement: &Settlement) {
        let response = iso8583::mti::is_response(&e.mti);
        if let Some(bank) = e.peer.strip_prefix("bank ") {
            if &e.mti[..3] != b"020" && &e.mti[..3] != b"021" {
                return;
            }
            let Some(key) = entry_key(&e) else { return };
            if response {
                if e.direction == Direction::In && e.note.is_none() {
                    if let Some(code) = e.response_code {
                        self.bank_answers.entry(key).or_insert(code);
                    }
                }
                return;
            }
            let kind = match e.processing_code.as_deref() {
                Some("000000") => Kind::Debit,
                Some("260000") => Kind::Credit,
                _ => return,
            };
            if e.direction != Direction::Out
                || self.bank_messages.contains_key(&key)
                || settlement.date_of_transmission(&key[11..21], date) != Some(date)
            {
                return;
            }
            let Ok(msg) = parse(spec, e.raw.clone()) else {
                return;
            };
            let freeze = OriginalData::of(&msg)
                .ok()
                .filter(|od| &od.mti == b"0100")
                .map(|od| od.freeze_key().to_string())
                .unwrap_or_default();
            self.bank_messages.insert(
                key,
                BankMessage {
                    bank: institution11(bank).unwrap_or_else(|| bank.to_string()),
                    kind,
                    pan: e.pan_masked.unwrap_or_default(),
                    currency: fields::currency(&msg).unwrap_or(0),
                    amount_minor: e.amount_minor.unwrap_or(0),
                    freeze,
                },
            );
        } else if e.peer.starts_with("wallet ") {
            let Some(kind) = wallet_kind(&e.mti, e.processing_code.as_deref()) else {
                return;
            };
            let Some(key) = entry_key(&e) else { return };
            match (e.direction, response) {
                (Direction::In, false) => {
                    if self.wallet_requests.contains_key(&(kind, key)) {
                        return;
                    }
                    let Ok(msg) = parse(spec, e.raw.clone()) else {
                        return;
                    };
                    let freeze = match kind {
                        Kind::Freeze => key_text(&key),
                        _ => OriginalData::of(&msg)
                            .ok()
                            .map(|od| od.freeze_key().to_string())
                            .unwrap_or_default(),
                    };
                    self.wallet_requests.insert(
                        (kind, key),
                        WalletRequest {
                            at_ms: e.at_ms,
                            wallet: key_text(&key)[..11].to_string(),
                            pan: e.pan_masked.unwrap_or_default(),
                            currency: fields::currency(&msg).unwrap_or(0),
                            amount_minor: e.amount_minor.unwrap_or(0),
                            freeze,
                            answer: None,
                        },
                    );
                }
                (Direction::Out, true) => {
                    // Answers to resends and to clashing keys repeat or refuse
                    // the request; the first other answer is the decision.
                    let repeat = e
                        .note
                        .as_deref()
                        .is_some_and(|n| n.starts_with("resend") || n.starts_with("same key"));
                    if repeat {
                        return;
                    }
                    if let (Some(request), Some(code)) =
                        (self.wallet_requests.get_mut(&(kind, key)), e.response_code)
                    {
                        request.answer.get_or_insert(code);
                    }
                }
                _ => {}
            }
        }
    }
}

/// The debit or credit a reversal (0420) to `bank` names: its kind from F3,
/// its card, amount and currency (a reversal repeats the original's F2, F4
/// and F49). The freeze is filled in from the saga.
fn original_of_reversal(reversal: &iso8583::codec::Message, bank: &str) -> Option<BankMessage> {
    let kind = match reversal.get_str(num::PROCESSING_CODE) {
        Some("000000") => Kind::Debit,
        Some("260000") => Kind::Credit,
        _ => return None,
    };
    Some(BankMessage {
        bank: institution11(bank).unwrap_or_else(|| bank.to_string()),
        kind,
        pan: reversal
            .get_str(num::PAN)
            .map(iso8583::mask::mask_pan)
            .unwrap_or_default(),
        currency: fields::currency(reversal).ok()?,
        amount_minor: fields::amount_minor(reversal).ok()?,
        freeze: String::new(),
    })
}

/// The debit's or credit's key of a saga's message.
fn sent_key(switch: &str, sent: &crate::store::SentMessage) -> Option<MsgKey> {
    msg_key(switch.as_bytes(), &sent.transmission, &sent.stan)
}

/// Clears `request.date`. Refuses (with the list) when something of the day
/// is not final, unless `allow_pending`.
pub async fn clear(
    store: &dyn Store,
    spec: &Spec,
    request: &ClearRequest,
) -> Result<Cleared, ClearError> {
    clear_reporting(store, spec, request, &|_| {}).await
}

/// [`clear`], telling `progress` how far it has got as it goes.
pub async fn clear_reporting(
    store: &dyn Store,
    spec: &Spec,
    request: &ClearRequest,
    progress: &(dyn Fn(ClearProgress) + Sync),
) -> Result<Cleared, ClearError> {
    let date = request.date;
    let settlement = request.settlement;
    let switch = institution11(&request.switch_id)
        .ok_or_else(|| ClearError::Invalid(format!("switch id {:?}", request.switch_id)))?;
    let exponent = |currency: u16| spec.currency_exponents.get(&currency).copied().unwrap_or(2);
    let (from, to) = settlement.window_ms(date);
    let (read_from, read_to) = (from - MARGIN_MS, to + MARGIN_MS);

    // Read slice n + 1 while slice n is taken in on a blocking thread.
    let shared_spec = std::sync::Arc::new(spec.clone());
    let mut journal = Journal::default();
    let mut at = (read_from + SLICE_MS).min(read_to);
    let mut slice = store.journal_between(read_from, at).await?;
    let mut entries = 0u64;
    loop {
        entries += slice.len() as u64;
        let taking = {
            let spec = shared_spec.clone();
            let mut journal = std::mem::take(&mut journal);
            tokio::task::spawn_blocking(move || {
                for entry in slice {
                    journal.take(&spec, entry, date, &settlement);
                }
                journal
            })
        };
        let until = (at + SLICE_MS).min(read_to);
        let next = async {
            if at < read_to {
                store.journal_between(at, until).await.map(Some)
            } else {
                Ok(None)
            }
        };
        let (taken, next) = futures::join!(taking, next);
        journal = taken.map_err(|e| ClearError::Invalid(format!("clearing task failed: {e}")))?;
        progress(ClearProgress::Journal {
            read_ms: (at - read_from) as u64,
            window_ms: (read_to - read_from) as u64,
            entries,
        });
        match next? {
            Some(entries) => slice = entries,
            None => break,
        }
        at = until;
    }

    progress(ClearProgress::JournalRead);

    // Receive sagas: their messages, and those still in flight.
    let sagas: HashMap<RequestKey, SagaRecord> = store
        .sagas_between(read_from, read_to)
        .await?
        .into_iter()
        .map(|s| (s.request, s))
        .collect();
    let saga_date = |s: &SagaRecord| {
        s.debit
            .and_then(|d| settlement.date_of_transmission(&d.transmission, date))
            .unwrap_or_else(|| settlement.date_of_ms(s.created_at_ms))
    };
    let mut pending: BTreeSet<Pending> = BTreeSet::new();
    let mut in_flight: HashSet<MsgKey> = HashSet::new();
    for saga in sagas.values() {
        if saga.state.is_final() || saga_date(saga) != date {
            continue;
        }
        for sent in [saga.debit, saga.credit].into_iter().flatten() {
            if let Some(key) = sent_key(&switch, &sent) {
                in_flight.insert(key);
            }
        }
        pending.insert(Pending {
            role: Role::Wallet,
            participant: saga.request.acquirer.to_string(),
            kind: Kind::Receive,
            key: format!(
                "{}/{}/{}",
                saga.request.acquirer,
                String::from_utf8_lossy(&saga.request.transmission),
                String::from_utf8_lossy(&saga.request.stan)
            ),
            reason: format!("receive in flight (saga {})", saga.state.as_str()),
        });
    }

    // Reversals, from the store-and-forward queue; other entries of the day
    // still queued.
    let mut reversals: HashMap<MsgKey, Reversal> = HashMap::new();
    // What a reversal says of its original: the line of a debit or credit
    // the journal does not show (see `unjournaled` below).
    let mut reversed_originals: HashMap<MsgKey, BankMessage> = HashMap::new();
    for entry in store.saf_entries_since(read_from).await? {
        let msg = parse(spec, entry.entry.message.clone()).ok();
        let original = msg.as_ref().and_then(|m| OriginalData::of(m).ok());
        let reversed = match (entry.entry.kind, original) {
            (SafKind::Reversal, Some(od)) if &od.mti == b"0200" => {
                msg_key(&od.acquirer.0, &od.transmission, &od.stan)
            }
            _ => None,
        };
        if let (Some(key), Some(msg)) = (reversed, &msg) {
            if let Some(original) = original_of_reversal(msg, &entry.entry.bank) {
                reversed_originals.entry(key).or_insert(original);
            }
        }
        let state = match entry.state {
            SafState::Pending => Reversal::Pending,
            SafState::Dead => Reversal::Dead(entry.last_result.clone().unwrap_or_default()),
            SafState::Done => Reversal::Done(entry.last_result.clone().unwrap_or_default()),
        };
        match reversed {
            Some(key) => {
                let slot = reversals.entry(key).or_insert_with(|| state.clone());
                let rank = |r: &Reversal| match r {
                    Reversal::Pending => 3,
                    Reversal::Done(c) if *c == ResponseCode::APPROVED => 2,
                    Reversal::Dead(_) => 1,
                    Reversal::Done(_) => 0,
                };
                if rank(&state) > rank(slot) {
                    *slot = state;
                }
            }
            None => {
                let created = entry.entry.created_at_ms;
                if entry.state == SafState::Pending && (from..to).contains(&created) {
                    pending.insert(Pending {
                        role: Role::Bank,
                        participant: institution11(&entry.entry.bank)
                            .unwrap_or_else(|| entry.entry.bank.clone()),
                        kind: if entry.entry.kind == SafKind::Unfreeze {
                            Kind::Unfreeze
                        } else {
                            Kind::Freeze
                        },
                        key: entry.entry.order_key.clone(),
                        reason: format!(
                            "{} notice pending in the store-and-forward queue (entry {})",
                            entry.entry.kind.as_str(),
                            entry.id
                        ),
                    });
                }
            }
        }
    }

    // Every debit and credit the switch allocated and followed by a message
    // has a line, whether or not the journal shows it: the journal is
    // written with the store's next commit, so a crash can lose the entry of
    // a message that went out (or the switch died after recording the
    // identity and before sending). The saga and the queue are durable with
    // the decisions: an approved saga's debit and credit were both answered
    // 00; a reversed one is named by its reversal, whose F2, F4 and F49 are
    // the original's. A failed saga's leg with neither a journal entry nor a
    // reversal was never sent: the bank has nothing of it either.
    let mut approved_legs: HashSet<MsgKey> = HashSet::new();
    let mut failed_legs: HashSet<MsgKey> = HashSet::new();
    let mut freeze_of_leg: HashMap<MsgKey, String> = HashMap::new();
    for saga in sagas.values() {
        for sent in [saga.debit, saga.credit].into_iter().flatten() {
            if let Some(key) = sent_key(&switch, &sent) {
                freeze_of_leg.insert(key, saga.freeze.to_string());
                match saga.state {
                    SagaState::Approved => approved_legs.insert(key),
                    SagaState::Failed => failed_legs.insert(key),
                    SagaState::Debiting => false,
                };
            }
        }
    }
    let on_date = |key: &MsgKey| settlement.date_of_transmission(&key[11..21], date) == Some(date);
    for (key, mut m) in reversed_originals {
        if on_date(&key) && !journal.bank_messages.contains_key(&key) {
            m.freeze = freeze_of_leg.get(&key).cloned().unwrap_or_default();
            journal.bank_messages.insert(key, m);
        }
    }
    for saga in sagas.values() {
        if saga.state != SagaState::Approved {
            continue;
        }
        let legs = [(Kind::Debit, saga.debit), (Kind::Credit, saga.credit)];
        let mut freeze_record = None;
        for (kind, sent) in legs {
            let Some(key) = sent.and_then(|s| sent_key(&switch, &s)) else {
                continue;
            };
            if !on_date(&key) || journal.bank_messages.contains_key(&key) {
                continue;
            }
            if freeze_record.is_none() {
                freeze_record = store.freeze(&saga.freeze).await?;
            }
            let Some(f) = &freeze_record else {
                continue; // a saga without its freeze: corrupt, nothing to say
            };
            let (bank, pan) = match kind {
                Kind::Debit => (&f.payer_bank, &f.payer_pan),
                _ => (&saga.receiver_bank, &saga.receiver_pan),
            };
            journal.bank_messages.insert(
                key,
                BankMessage {
                    bank: institution11(bank).unwrap_or_else(|| bank.clone()),
                    kind,
                    pan: iso8583::mask::mask_pan(pan),
                    currency: f.currency,
                    amount_minor: saga.amount_minor,
                    freeze: saga.freeze.to_string(),
                },
            );
        }
    }

    // Bank lines.
    let header = |role: Role, participant: &str| Header {
        role,
        participant: participant.to_string(),
        date,
        cutoff: settlement.cutoff_text(),
        time_zone: settlement.time_zone.to_string(),
        switch: switch.clone(),
    };
    let mut banks: BTreeMap<String, ParticipantFile> = BTreeMap::new();
    for bank in &request.banks {
        let id = institution11(bank).unwrap_or_else(|| bank.clone());
        banks.insert(id.clone(), ParticipantFile::new(header(Role::Bank, &id)));
    }
    // Message key → (bank, status, settled) of the lines written.
    let mut outcomes: HashMap<MsgKey, (String, u16, Status, Decimal)> = HashMap::new();
    for (key, m) in &journal.bank_messages {
        let key_str = key_text(key);
        let not_final = |reason: &str| Pending {
            role: Role::Bank,
            participant: m.bank.clone(),
            kind: m.kind,
            key: key_str.clone(),
            reason: reason.to_string(),
        };
        if in_flight.contains(key) {
            pending.insert(not_final("its receive is in flight"));
            continue;
        }
        // An approved saga's legs were answered 00 even when the journal lost the answer.
        let answer = journal
            .bank_answers
            .get(key)
            .cloned()
            .or_else(|| approved_legs.contains(key).then(|| "00".to_string()));
        let answer = answer.as_ref();
        let (status, reversal) = match reversals.get(key) {
            Some(Reversal::Pending) => {
                pending.insert(not_final(
                    "its reversal is pending in the store-and-forward queue",
                ));
                continue;
            }
            Some(Reversal::Dead(why)) => {
                pending.insert(not_final(&format!(
                    "its reversal is dead ({}): needs a person (switchboard saf list)",
                    why.replace(',', ";")
                )));
                continue;
            }
            Some(Reversal::Done(code)) if *code == ResponseCode::APPROVED => {
                (Status::Reversed, code.clone())
            }
            Some(Reversal::Done(code)) if *code == ResponseCode::UNABLE_TO_LOCATE_RECORD => {
                (Status::NotApplied, code.clone())
            }
            other => {
                let reversal = match other {
                    Some(Reversal::Done(code)) => code.clone(),
                    _ => String::new(),
                };
                match answer {
                    Some(code) if *code == ResponseCode::APPROVED => (Status::Approved, reversal),
                    Some(_) => (Status::Declined, reversal),
                    // A failed saga's message with no answer and no reversal
                    // never left the switch (its connection failed before
                    // writing it): the saga's end, committed after any answer
                    // it got was journaled, would otherwise have queued one.
                    None if failed_legs.contains(key) && reversal.is_empty() => continue,
                    None => {
                        pending.insert(not_final("no answer from the bank and no reversal"));
                        continue;
                    }
                }
            }
        };
        let amount = decimal(m.amount_minor, exponent(m.currency));
        let settled = Line::settled_for(status, amount);
        outcomes.insert(*key, (m.bank.clone(), m.currency, status, settled));
        banks
            .entry(m.bank.clone())
            .or_insert_with(|| ParticipantFile::new(header(Role::Bank, &m.bank)))
            .lines
            .push(Line {
                kind: m.kind,
                key: key_str,
                freeze: m.freeze.clone(),
                pan: m.pan.clone(),
                currency: m.currency,
                amount,
                response_code: answer.cloned().unwrap_or_default(),
                reversal,
                status,
                settled,
            });
    }

    // Wallet lines.
    let mut wallets: BTreeMap<String, ParticipantFile> = BTreeMap::new();
    for wallet in &request.wallets {
        let id = institution11(wallet).unwrap_or_else(|| wallet.clone());
        wallets.insert(id.clone(), ParticipantFile::new(header(Role::Wallet, &id)));
    }
    for ((kind, key), r) in &journal.wallet_requests {
        let request_key = RequestKey {
            mti: match kind {
                Kind::Freeze => *b"0100",
                Kind::Receive => *b"0200",
                _ => *b"0120",
            },
            acquirer: InstitutionId(key[..11].try_into().expect("11 digits")),
            transmission: key[11..21].try_into().expect("10 digits"),
            stan: key[21..].try_into().expect("6 digits"),
        };
        let saga = sagas.get(&request_key);
        let day = match saga {
            Some(s) => saga_date(s),
            None => settlement.date_of_ms(r.at_ms),
        };
        if day != date {
            continue;
        }
        let key_str = key_text(key);
        if saga.is_some_and(|s| !s.state.is_final()) {
            continue; // listed with the sagas
        }
        let mut answer = r.answer.clone();
        if answer.is_none() {
            answer = saga.and_then(|s| s.response_code.clone());
        }
        if answer.is_none() {
            answer = store
                .answer(&request_key)
                .await?
                .and_then(|a| parse(spec, a.response).ok())
                .and_then(|m| m.get_str(num::RESPONSE_CODE).map(str::to_string));
        }
        let status = match &answer {
            // Refused as not this wallet's to send: not the wallet's transaction.
            Some(code) if *code == ResponseCode::SECURITY_VIOLATION => continue,
            Some(code) if *code == ResponseCode::APPROVED => Status::Approved,
            Some(_) => Status::Declined,
            None => {
                let still_pending = *kind == Kind::Freeze
                    && store
                        .freeze(&crate::dialect::FreezeKey {
                            acquirer: request_key.acquirer,
                            transmission: request_key.transmission,
                            stan: request_key.stan,
                        })
                        .await?
                        .is_some_and(|f| f.state == crate::store::FreezeState::Pending);
                if still_pending {
                    pending.insert(Pending {
                        role: Role::Wallet,
                        participant: r.wallet.clone(),
                        kind: *kind,
                        key: key_str,
                        reason: "freeze in flight".into(),
                    });
                    continue;
                }
                Status::Unanswered
            }
        };
        let amount = decimal(r.amount_minor, exponent(r.currency));
        wallets
            .entry(r.wallet.clone())
            .or_insert_with(|| ParticipantFile::new(header(Role::Wallet, &r.wallet)))
            .lines
            .push(Line {
                kind: *kind,
                key: key_str,
                freeze: r.freeze.clone(),
                pan: r.pan.clone(),
                currency: r.currency,
                amount,
                response_code: answer.unwrap_or_default(),
                reversal: String::new(),
                status,
                settled: Line::settled_for(status, amount),
            });
    }

    drop(journal);
    let pending: Vec<Pending> = pending.into_iter().collect();
    if !pending.is_empty() && !request.allow_pending {
        return Err(ClearError::NotFinal { date, pending });
    }
    for file in banks.values_mut().chain(wallets.values_mut()) {
        file.sort();
    }

    // Positions, from the bank files' trailers.
    let positions: Vec<Position> = banks
        .iter()
        .flat_map(|(bank, file)| {
            file.trailers()
                .into_iter()
                .filter(|t| t.lines > 0)
                .map(move |t: Trailer| Position {
                    bank: bank.clone(),
                    currency: t.currency,
                    debits: t.pairs[0],
                    credits: t.pairs[1],
                    net: t.net.unwrap_or_default(),
                })
        })
        .collect();

    // Who pays whom: every receive whose debit and credit both stand.
    let mut gross: BTreeMap<(String, String, u16), Decimal> = BTreeMap::new();
    for saga in sagas.values() {
        let (Some(debit), Some(credit)) = (saga.debit, saga.credit) else {
            continue;
        };
        let (Some(d), Some(c)) = (sent_key(&switch, &debit), sent_key(&switch, &credit)) else {
            continue;
        };
        if let (
            Some((payer, cur, Status::Approved, amount)),
            Some((receiver, _, Status::Approved, _)),
        ) = (outcomes.get(&d), outcomes.get(&c))
        {
            if payer != receiver {
                *gross
                    .entry((payer.clone(), receiver.clone(), *cur))
                    .or_insert_with(|| Decimal::new(0, amount.scale())) += *amount;
            }
        }
    }
    let mut obligations = Vec::new();
    for ((payer, receiver, currency), amount) in &gross {
        let back = gross
            .get(&(receiver.clone(), payer.clone(), *currency))
            .copied()
            .unwrap_or_default();
        let net = *amount - back;
        if net > Decimal::ZERO {
            obligations.push(Obligation {
                payer: payer.clone(),
                receiver: receiver.clone(),
                currency: *currency,
                amount: net,
            });
        }
    }

    Ok(Cleared {
        date,
        settlement,
        switch,
        banks,
        wallets,
        positions,
        obligations,
        pending,
    })
}

impl Cleared {
    /// Σ net positions per currency: zero for every currency when the day balances.
    pub fn net_by_currency(&self) -> BTreeMap<u16, Decimal> {
        let mut sums: BTreeMap<u16, Decimal> = BTreeMap::new();
        for p in &self.positions {
            *sums
                .entry(p.currency)
                .or_insert_with(|| Decimal::new(0, p.net.scale())) += p.net;
        }
        sums
    }

    /// Whether every currency's net positions sum to zero.
    pub fn balanced(&self) -> bool {
        self.net_by_currency().values().all(|n| n.is_zero())
    }

    /// The summary file's text.
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "H,{FORMAT},{VERSION},summary,{},{},{},{},{}",
            self.switch,
            self.date.format("%Y-%m-%d"),
            self.settlement.cutoff_text(),
            self.settlement.time_zone,
            self.switch
        );
        for p in &self.positions {
            let side = if p.net.is_sign_positive() && !p.net.is_zero() {
                "receives"
            } else if p.net.is_zero() {
                "even"
            } else {
                "pays"
            };
            let _ = writeln!(
                out,
                "N,{},{:03},{},{},{},{},{},{side}",
                p.bank, p.currency, p.debits.0, p.debits.1, p.credits.0, p.credits.1, p.net
            );
        }
        for o in &self.obligations {
            let _ = writeln!(
                out,
                "B,{},{},{:03},{}",
                o.payer, o.receiver, o.currency, o.amount
            );
        }
        for (wallet, file) in &self.wallets {
            for t in file.trailers().into_iter().filter(|t| t.lines > 0) {
                let _ = writeln!(
                    out,
                    "W,{wallet},{:03},{},{},{},{},{},{},{}",
                    t.currency,
                    t.lines,
                    t.pairs[0].0,
                    t.pairs[0].1,
                    t.pairs[1].0,
                    t.pairs[1].1,
                    t.pairs[2].0,
                    t.pairs[2].1
                );
            }
        }
        for p in &self.pending {
            let _ = writeln!(
                out,
                "P,{},{},{},{},{}",
                p.role,
                p.participant,
                p.kind,
                p.key,
                p.reason.replace(',', ";")
            );
        }
        let sums = self.net_by_currency();
        if sums.is_empty() {
            let _ = writeln!(out, "T,000,0,0,0,0,{}", self.pending.len());
        }
        for (currency, net) in sums {
            let of = |f: fn(&Position) -> (u64, Decimal)| {
                self.positions
                    .iter()
                    .filter(|p| p.currency == currency)
                    .map(f)
                    .fold(Decimal::new(0, net.scale()), |a, (_, t)| a + t)
            };
            let banks = self
                .positions
                .iter()
                .filter(|p| p.currency == currency)
                .count();
            let _ = writeln!(
                out,
                "T,{currency:03},{banks},{},{},{net},{}",
                of(|p| p.debits),
                of(|p| p.credits),
                self.pending.len()
            );
        }
        out
    }

    /// Every file as (name, text): `bank-<id>.csv`, `wallet-<id>.csv`, `summary.csv`.
    pub fn files(&self) -> Vec<(String, String)> {
        let mut files = Vec::new();
        for (id, file) in &self.banks {
            files.push((format!("bank-{id}.csv"), file.render()));
        }
        for (id, file) in &self.wallets {
            files.push((format!("wallet-{id}.csv"), file.render()));
        }
        files.push(("summary.csv".to_string(), self.summary()));
        files
    }

    /// Writes every file into `dir` (created if needed); returns their paths.
    pub fn write(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let mut paths = Vec::new();
        for (name, text) in self.files() {
            let path = dir.join(name);
            // Write then rename: a reader never sees half a file.
            let tmp = dir.join(format!(
                ".{}.tmp",
                path.file_name().unwrap_or_default().to_string_lossy()
            ));
            std::fs::write(&tmp, text)?;
            std::fs::rename(&tmp, &path)?;
            paths.push(path);
        }
        Ok(paths)
    }
}

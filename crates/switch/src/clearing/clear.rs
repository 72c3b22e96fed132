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

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
// SipHash's resistance to chosen keys is not needed for a day's own
// message keys: foldhash hashes them several times faster.
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use rust_decimal::Decimal;

use iso8583::codec::{parse, parse_fields};
use iso8583::fields::{self, num};
use iso8583::response::ResponseCode;
use iso8583::spec::Spec;

use super::day::{
    ClearedDay, Decided, Exponents, KeyText, MsgKey, Outcome, Request, Sent, Short, Word, Words,
};
use super::file::{Kind, ParticipantFile, Role, Status};
use super::{institution11, Settlement};
use crate::dialect::{FreezeKey, InstitutionId, OriginalData};
use crate::store::{
    Direction, FreezeRecord, JournalSlice, JournalView, RawMessages, RequestKey, SafKind, SafState,
    SagaRecord, SagaState, Store, StoreError,
};

/// How far outside its day a day's message may have been journaled (its
/// answer after the day's end, a clock a little off): one hour.
pub const MARGIN_MS: i64 = 3_600_000;

/// The journal is read in slices of this many milliseconds (ten minutes).
const SLICE_MS: i64 = 600_000;

/// The sagas are read in slices of this many milliseconds (an hour).
const SAGA_SLICE_MS: i64 = 3_600_000;

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
    KeyText::of(key).text().into_owned()
}

fn entry_key(e: &JournalView<'_>) -> Option<MsgKey> {
    msg_key(
        e.acquirer?.as_bytes(),
        e.transmission?.as_bytes(),
        e.stan?.as_bytes(),
    )
}

fn freeze_key(key: &FreezeKey) -> MsgKey {
    let mut k = [0u8; 27];
    k[..11].copy_from_slice(&key.acquirer.0);
    k[11..21].copy_from_slice(&key.transmission);
    k[21..].copy_from_slice(&key.stan);
    k
}

/// Its saga decided a leg (debit or credit): approved (both legs answered 00).
const LEG_APPROVED: u8 = 1;
/// Its saga failed.
const LEG_FAILED: u8 = 2;
/// Known only from its reversal: the freeze comes from its saga.
const LEG_FREEZE_FROM_SAGA: u8 = 4;

/// A debit or credit of the day, by the switch's F32/F7/F11: the message
/// the switch sent (once seen: a bank's answer may come first), the bank's
/// first answer, what its saga says, and its line once decided.
struct Leg {
    key: MsgKey,
    sent: Option<Sent>,
    answer: Option<Word>,
    flags: u8,
    outcome: Option<Outcome>,
}

/// What a wallet request's receive saga says of it.
#[derive(Clone, Copy)]
struct SagaNote {
    on_date: bool,
    is_final: bool,
    response: Option<Word>,
}

/// A wallet's request.
struct WalletRequest {
    request: Request,
    at_ms: i64,
    /// The switch's decision (F39), once seen.
    answer: Option<Word>,
    saga: Option<SagaNote>,
    outcome: Option<Outcome>,
}

/// How the reversal of a debit or credit stands.
#[derive(Clone, PartialEq, Eq, Debug)]
enum Reversal {
    Pending,
    Dead(String),
    Done(String),
}

/// Everything read from the journal, kept small: a record per debit or
/// credit of the day and per wallet request, indexed by key.
struct Journal {
    date: NaiveDate,
    settlement: Settlement,
    words: Words,
    legs: Vec<Leg>,
    leg_index: HashMap<MsgKey, u32>,
    requests: Vec<WalletRequest>,
    request_index: HashMap<(Kind, MsgKey), u32>,
    /// The settlement date of an F7, by F7: the time zone arithmetic is
    /// done once per second of the day rather than once per message.
    f7_dates: HashMap<[u8; 10], Option<NaiveDate>>,
    /// The banks' words by the name their journal peer gives them.
    bank_words: HashMap<Box<str>, Word>,
}

fn wallet_kind(mti: &[u8; 4], processing_code: Option<&str>) -> Option<Kind> {
    match (&mti[..3], processing_code) {
        (b"010", _) | (b"011", _) => Some(Kind::Freeze),
        (b"020", Some("400000")) | (b"021", Some("400000")) => Some(Kind::Receive),
        (b"012", _) | (b"013", _) => Some(Kind::Unfreeze),
        _ => None,
    }
}

/// The kind of a wallet request whose request key has MTI `mti`.
fn kind_of_request_mti(mti: &[u8; 4]) -> Option<Kind> {
    match mti {
        b"0100" => Some(Kind::Freeze),
        b"0200" => Some(Kind::Receive),
        b"0120" => Some(Kind::Unfreeze),
        _ => None,
    }
}

/// What clearing reads of a request's raw message: F49 and F90.
struct RequestFields {
    /// 0 when missing or not three digits.
    currency: u16,
    original: Option<OriginalData>,
}

impl RequestFields {
    /// The fields of `raw`, read without making a `Message` of all its
    /// fields (a day has millions of requests); `None` when `raw` does not
    /// parse (such a message makes no line).
    fn of(spec: &Spec, raw: &[u8]) -> Option<RequestFields> {
        let read = parse_fields(spec, raw, [num::CURRENCY, num::ORIGINAL_DATA]).ok()?;
        Some(RequestFields {
            currency: read
                .get(num::CURRENCY)
                .and_then(|v| fields::currency_of(v).ok())
                .unwrap_or(0),
            original: read
                .get(num::ORIGINAL_DATA)
                .and_then(|v| OriginalData::parse(v).ok()),
        })
    }
}

/// The F7 cache is emptied past this many entries (a day has 86,400 seconds).
const F7_DATE_CACHE: usize = 1 << 18;

impl Journal {
    /// Records sized for a journal of `entries` entries (when known): grown
    /// by doubling instead, a day's records would be copied as they grow and
    /// held twice meanwhile. A receive is six entries and two legs, a
    /// freeze or unfreeze a wallet request for two to four entries: a third
    /// and a fifth of the entries are room for both with a margin (a
    /// `Vec`'s room not filled is not memory used; an index's is).
    fn new(date: NaiveDate, settlement: Settlement, entries: Option<u64>) -> Journal {
        let entries = usize::try_from(entries.unwrap_or(0)).unwrap_or(0);
        Journal {
            date,
            settlement,
            words: Words::default(),
            legs: Vec::with_capacity(entries / 3),
            leg_index: HashMap::with_capacity(entries / 3),
            requests: Vec::with_capacity(entries / 5),
            request_index: HashMap::with_capacity(entries / 5),
            f7_dates: HashMap::new(),
            bank_words: HashMap::new(),
        }
    }

    /// The word of a bank as a journal's peer names it (its id, as 11
    /// digits when it is an institution id).
    fn bank_word(&mut self, peer_bank: &str) -> Word {
        if let Some(w) = self.bank_words.get(peer_bank) {
            return *w;
        }
        let w = match institution11(peer_bank) {
            Some(id) => self.words.word(&id),
            None => self.words.word(peer_bank),
        };
        self.bank_words.insert(peer_bank.into(), w);
        w
    }

    /// Whether the message of `key` belongs to the day by its F7.
    fn on_date(&mut self, key: &MsgKey) -> bool {
        let f7: &[u8; 10] = key[11..21].try_into().expect("10 bytes");
        self.date_of_transmission(f7) == Some(self.date)
    }

    /// The settlement date of the F7 `f7` (near the day's).
    fn date_of_transmission(&mut self, f7: &[u8; 10]) -> Option<NaiveDate> {
        if let Some(date) = self.f7_dates.get(f7) {
            return *date;
        }
        if self.f7_dates.len() >= F7_DATE_CACHE {
            self.f7_dates.clear();
        }
        let date = self.settlement.date_of_transmission(f7, self.date);
        self.f7_dates.insert(*f7, date);
        date
    }

    fn leg(&self, key: &MsgKey) -> Option<&Leg> {
        self.leg_index.get(key).map(|i| &self.legs[*i as usize])
    }

    /// The leg of `key`, made when new.
    fn leg_mut(&mut self, key: MsgKey) -> &mut Leg {
        let at = self.leg_position(key);
        &mut self.legs[at]
    }

    /// The position of the leg of `key` in `legs`, made when new.
    fn leg_position(&mut self, key: MsgKey) -> usize {
        let next = self.legs.len() as u32;
        let i = *self.leg_index.entry(key).or_insert(next);
        if i == next {
            self.legs.push(Leg {
                key,
                sent: None,
                answer: None,
                flags: 0,
                outcome: None,
            });
        }
        i as usize
    }

    fn has_sent(&self, key: &MsgKey) -> bool {
        self.leg(key).is_some_and(|l| l.sent.is_some())
    }

    fn take(&mut self, spec: &Spec, e: JournalView<'_>) {
        let response = iso8583::mti::is_response(&e.mti);
        if let Some(bank) = e.peer.strip_prefix("bank ") {
            if &e.mti[..3] != b"020" && &e.mti[..3] != b"021" {
                return;
            }
            let Some(key) = entry_key(&e) else { return };
            if response {
                // Only the day's messages get lines: other answers are not kept.
                if e.direction == Direction::In && e.note.is_none() {
                    if let Some(code) = e.response_code {
                        if self.on_date(&key) {
                            let code = self.words.word(code);
                            self.leg_mut(key).answer.get_or_insert(code);
                        }
                    }
                }
                return;
            }
            let kind = match e.processing_code {
                Some("000000") => Kind::Debit,
                Some("260000") => Kind::Credit,
                _ => return,
            };
            if e.direction != Direction::Out || !self.on_date(&key) {
                return;
            }
            let Some(request) = RequestFields::of(spec, e.raw_bytes()) else {
                return;
            };
            // Looked up once, after what can return without making a leg:
            // the first message sent under a key is the leg's.
            let at = self.leg_position(key);
            if self.legs[at].sent.is_some() {
                return;
            }
            let freeze = request
                .original
                .filter(|od| &od.mti == b"0100")
                .map(|od| freeze_key(&od.freeze_key()));
            let bank = self.bank_word(bank);
            self.legs[at].sent = Some(Sent {
                bank,
                kind,
                pan: Short::new(e.pan_masked.unwrap_or_default()),
                currency: request.currency,
                amount_minor: e.amount_minor.unwrap_or(0),
                freeze,
            });
        } else if e.peer.starts_with("wallet ") {
            let Some(kind) = wallet_kind(&e.mti, e.processing_code) else {
                return;
            };
            let Some(key) = entry_key(&e) else { return };
            match (e.direction, response) {
                (Direction::In, false) => {
                    if self.request_index.contains_key(&(kind, key)) {
                        return;
                    }
                    let Some(fields) = RequestFields::of(spec, e.raw_bytes()) else {
                        return;
                    };
                    let freeze = match kind {
                        Kind::Freeze => Some(key),
                        _ => fields.original.map(|od| freeze_key(&od.freeze_key())),
                    };
                    self.request_index
                        .insert((kind, key), self.requests.len() as u32);
                    self.requests.push(WalletRequest {
                        request: Request {
                            key,
                            kind,
                            pan: Short::new(e.pan_masked.unwrap_or_default()),
                            currency: fields.currency,
                            amount_minor: e.amount_minor.unwrap_or(0),
                            freeze,
                        },
                        at_ms: e.at_ms,
                        answer: None,
                        saga: None,
                        outcome: None,
                    });
                }
                (Direction::Out, true) => {
                    // Answers to resends and to clashing keys repeat or refuse
                    // the request; the first other answer is the decision.
                    let repeat = e
                        .note
                        .is_some_and(|n| n.starts_with("resend") || n.starts_with("same key"));
                    if repeat {
                        return;
                    }
                    if let (Some(i), Some(code)) =
                        (self.request_index.get(&(kind, key)), e.response_code)
                    {
                        let request = &mut self.requests[*i as usize];
                        if request.answer.is_none() {
                            request.answer = Some(self.words.word(code));
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// The receive sagas of the day folded into the journal's records (see
/// `clear_day_reporting`).
struct Sagas {
    journal: Journal,
    /// The switch's institution id: its debits' and credits' F32 (none when
    /// not one: then no saga's message has a key).
    switch: Option<InstitutionId>,
    pending: BTreeSet<Pending>,
    /// The legs of receives still in flight.
    in_flight: HashSet<MsgKey>,
    /// Each receive's debit and credit legs, for who pays whom.
    receives: Vec<(u32, u32)>,
    /// Approved sagas with a leg of the day the journal does not show: its
    /// line is made from the saga and its freeze, read from the store.
    need_freeze: Vec<SagaRecord>,
}

impl Sagas {
    fn legs(&self, saga: &SagaRecord) -> [(Kind, Option<MsgKey>); 2] {
        [(Kind::Debit, saga.debit), (Kind::Credit, saga.credit)].map(|(kind, sent)| {
            let key = self.switch.as_ref().and_then(|switch| {
                let s = sent?;
                Some(freeze_key(&FreezeKey {
                    acquirer: *switch,
                    transmission: s.transmission,
                    stan: s.stan,
                }))
            });
            (kind, key)
        })
    }

    /// The positions of the legs `legs` in the journal's records.
    fn found(&self, legs: &[(Kind, Option<MsgKey>); 2]) -> [Option<u32>; 2] {
        legs.map(|(_, key)| key.and_then(|key| self.journal.leg_index.get(&key).copied()))
    }

    /// Folds `saga` in, or keeps it for later when it needs its freeze.
    fn take(&mut self, saga: SagaRecord) {
        let legs = self.legs(&saga);
        // Each leg looked up once, for whether the journal shows it, its
        // flags and who pays whom.
        let found = self.found(&legs);
        let unjournaled = saga.state == SagaState::Approved
            && legs.iter().zip(found).any(|((_, key), at)| {
                let sent = at.is_some_and(|i| self.journal.legs[i as usize].sent.is_some());
                key.is_some_and(|key| !sent && self.journal.on_date(&key))
            });
        if unjournaled {
            self.need_freeze.push(saga);
        } else {
            self.fold_found(saga, legs, found);
        }
    }

    /// Folds `saga` in; `freeze` is its freeze when it has a leg the
    /// journal does not show.
    fn fold(&mut self, saga: SagaRecord, freeze: Option<&FreezeRecord>) {
        let legs = self.legs(&saga);
        let journal = &mut self.journal;
        // Only a saga with a leg the journal does not show is handed its
        // freeze (a saga without its freeze: corrupt, nothing to say).
        if let (SagaState::Approved, Some(f)) = (saga.state, freeze) {
            for (kind, key) in legs {
                let Some(key) = key else { continue };
                if !journal.on_date(&key) || journal.has_sent(&key) {
                    continue;
                }
                let (bank, pan) = match kind {
                    Kind::Debit => (&f.payer_bank, &f.payer_pan),
                    _ => (&saga.receiver_bank, &saga.receiver_pan),
                };
                let bank = journal
                    .words
                    .word(&institution11(bank).unwrap_or_else(|| bank.to_string()));
                journal.leg_mut(key).sent = Some(Sent {
                    bank,
                    kind,
                    pan: Short::new(&iso8583::mask::mask_pan(pan)),
                    currency: f.currency,
                    amount_minor: saga.amount_minor,
                    freeze: Some(freeze_key(&saga.freeze)),
                });
            }
        }
        let found = self.found(&legs);
        self.fold_found(saga, legs, found);
    }

    /// Folds `saga` in, its legs `legs` found at `found` in the journal's records.
    fn fold_found(
        &mut self,
        saga: SagaRecord,
        legs: [(Kind, Option<MsgKey>); 2],
        found: [Option<u32>; 2],
    ) {
        let journal = &mut self.journal;
        // A receive belongs to its debit's day (whatever day its freeze was made).
        let saga_date = saga
            .debit
            .and_then(|d| journal.date_of_transmission(&d.transmission))
            .unwrap_or_else(|| journal.settlement.date_of_ms(saga.created_at_ms));
        let on_date = saga_date == journal.date;
        if !saga.state.is_final() && on_date {
            self.in_flight
                .extend(legs.iter().filter_map(|(_, key)| *key));
            self.pending.insert(Pending {
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
        for i in found.into_iter().flatten() {
            let leg = &mut journal.legs[i as usize];
            leg.flags |= match saga.state {
                SagaState::Approved => LEG_APPROVED,
                SagaState::Failed => LEG_FAILED,
                SagaState::Debiting => 0,
            };
            if leg.flags & LEG_FREEZE_FROM_SAGA != 0 {
                if let Some(sent) = &mut leg.sent {
                    sent.freeze = Some(freeze_key(&saga.freeze));
                }
            }
        }
        if let [Some(d), Some(c)] = found {
            self.receives.push((d, c));
        }
        if let Some(kind) = kind_of_request_mti(&saga.request.mti) {
            let key = freeze_key(&FreezeKey {
                acquirer: saga.request.acquirer,
                transmission: saga.request.transmission,
                stan: saga.request.stan,
            });
            if let Some(i) = journal.request_index.get(&(kind, key)) {
                let response = saga.response_code.as_deref().map(|c| journal.words.word(c));
                journal.requests[*i as usize].saga = Some(SagaNote {
                    on_date,
                    is_final: saga.state.is_final(),
                    response,
                });
            }
        }
    }
}

/// The debit or credit a reversal (0420) to `bank` names: its kind from F3,
/// its card, amount and currency (a reversal repeats the original's F2, F4
/// and F49). The freeze is filled in from the saga.
fn original_of_reversal(
    reversal: &iso8583::codec::Message,
    bank: &str,
    words: &mut Words,
) -> Option<Sent> {
    let kind = match reversal.get_str(num::PROCESSING_CODE) {
        Some("000000") => Kind::Debit,
        Some("260000") => Kind::Credit,
        _ => return None,
    };
    Some(Sent {
        bank: words.word(&institution11(bank).unwrap_or_else(|| bank.to_string())),
        kind,
        pan: Short::new(
            &reversal
                .get_str(num::PAN)
                .map(iso8583::mask::mask_pan)
                .unwrap_or_default(),
        ),
        currency: fields::currency(reversal).ok()?,
        amount_minor: fields::amount_minor(reversal).ok()?,
        freeze: None,
    })
}

/// How many stretches of the store are read at once: two, each on a
/// connection of its own, while a third is folded in.
const READ_AHEAD: usize = 2;

/// `[from_ms, to_ms)` in stretches of `step_ms`.
fn stretches(from_ms: i64, to_ms: i64, step_ms: i64) -> impl Iterator<Item = (i64, i64)> {
    std::iter::successors(Some(from_ms), move |at| Some(at + step_ms))
        .take_while(move |at| *at < to_ms)
        .map(move |at| (at, (at + step_ms).min(to_ms)))
}

/// Reads each stretch of `stretches` with `read`, [`READ_AHEAD`] at a time,
/// and folds what was read into the state `start` gives with `fold` on a
/// blocking thread, in order, while the next stretches are read; `done` is
/// handed what `fold` gives back and the stretch it came from.
///
/// The reading runs as a future of its own beside the folding (not polled
/// only when the folding asks for the next stretch), so that a read waiting
/// to be started is started as soon as it can be.
async fn read_and_fold<S, T, U, R>(
    stretches: impl Iterator<Item = (i64, i64)>,
    mut read: impl FnMut((i64, i64)) -> R,
    start: impl std::future::Future<Output = Result<S, ClearError>>,
    fold: impl Fn(S, T) -> (S, U) + Clone + Send + 'static,
    mut done: impl FnMut(U, (i64, i64)),
) -> Result<S, ClearError>
where
    S: Send + 'static,
    T: Send + 'static,
    U: Send + 'static,
    R: std::future::Future<Output = Result<T, StoreError>>,
{
    use futures::{SinkExt, StreamExt};
    // No room beyond the one stretch its sender may hand over: what is read
    // ahead is what `buffered` holds.
    let (mut to_fold, mut read_stretches) = futures::channel::mpsc::channel(0);
    let reading = async move {
        let mut reads = futures::stream::iter(stretches)
            .map(|stretch| {
                let reading = read(stretch);
                async move { reading.await.map(|t| (stretch, t)) }
            })
            .buffered(READ_AHEAD);
        while let Some(next) = reads.next().await {
            let failed = next.is_err();
            // The folding has stopped (on an error) when its end is gone.
            if to_fold.send(next).await.is_err() || failed {
                break;
            }
        }
    };
    let folding = async move {
        let folded = async {
            let mut state = start.await?;
            while let Some(next) = read_stretches.next().await {
                let (stretch, read) = next?;
                let fold = fold.clone();
                let (folded, given_back) = tokio::task::spawn_blocking(move || fold(state, read))
                    .await
                    .map_err(|e| ClearError::Invalid(format!("clearing task failed: {e}")))?;
                state = folded;
                done(given_back, stretch);
            }
            Ok(state)
        }
        .await;
        // Hung up before the reading is waited for: on an error, a stretch
        // waiting to be handed over is not waited for forever.
        drop(read_stretches);
        folded
    };
    let ((), folded) = futures::join!(reading, folding);
    folded
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
    Ok(clear_day_reporting(store, spec, request, progress)
        .await?
        .into_cleared())
}

/// Clears `request.date`, keeping its lines as small records: what the
/// `clear` command does, [`ClearedDay::write`] writing the files from them.
pub async fn clear_day(
    store: &dyn Store,
    spec: &Spec,
    request: &ClearRequest,
) -> Result<ClearedDay, ClearError> {
    clear_day_reporting(store, spec, request, &|_| {}).await
}

/// [`clear_day`], telling `progress` how far it has got as it goes.
pub async fn clear_day_reporting(
    store: &dyn Store,
    spec: &Spec,
    request: &ClearRequest,
    progress: &(dyn Fn(ClearProgress) + Sync),
) -> Result<ClearedDay, ClearError> {
    let date = request.date;
    let settlement = request.settlement;
    let switch = institution11(&request.switch_id)
        .ok_or_else(|| ClearError::Invalid(format!("switch id {:?}", request.switch_id)))?;
    let (from, to) = settlement.window_ms(date);
    let (read_from, read_to) = (from - MARGIN_MS, to + MARGIN_MS);

    // The journal's slices are read two at a time, each on a connection of
    // its own, while the one before is taken in on a blocking thread: the
    // reading costs more than the taking in, and there are two cores.
    let shared_spec = std::sync::Arc::new(spec.clone());
    // Counted while the first slices are read.
    let journal = async {
        let entries = store.journal_len(read_from, read_to).await?;
        Ok(Journal::new(date, settlement, entries))
    };
    // The slices' buffers are read into again once taken in.
    let spares: std::sync::Mutex<Vec<JournalSlice>> = std::sync::Mutex::new(Vec::new());
    let mut entries = 0u64;
    let mut journal = read_and_fold(
        stretches(read_from, read_to, SLICE_MS),
        |(from_ms, to_ms)| {
            let reuse = spares
                .lock()
                .ok()
                .and_then(|mut spares| spares.pop())
                .unwrap_or_default();
            store.journal_slice_reusing(from_ms, to_ms, RawMessages::RequestsOnly, reuse)
        },
        journal,
        move |mut journal: Journal, slice: JournalSlice| {
            for entry in slice.iter() {
                journal.take(&shared_spec, entry);
            }
            (journal, slice)
        },
        |slice, (_, to_ms)| {
            entries += slice.len() as u64;
            progress(ClearProgress::Journal {
                read_ms: (to_ms - read_from) as u64,
                window_ms: (read_to - read_from) as u64,
                entries,
            });
            if let Ok(mut spares) = spares.lock() {
                spares.push(slice);
            }
        },
    )
    .await?;

    progress(ClearProgress::JournalRead);
    let mut pending: BTreeSet<Pending> = BTreeSet::new();

    // Reversals, from the store-and-forward queue; other entries of the day
    // still queued.
    let mut reversals: HashMap<MsgKey, Reversal> = HashMap::new();
    // What a reversal says of its original: the line of a debit or credit
    // the journal does not show (see `unjournaled` below).
    let mut reversed_originals: HashMap<MsgKey, Sent> = HashMap::new();
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
            if let std::collections::hash_map::Entry::Vacant(slot) = reversed_originals.entry(key) {
                if let Some(original) =
                    original_of_reversal(msg, &entry.entry.bank, &mut journal.words)
                {
                    slot.insert(original);
                }
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
    // the original's (its freeze comes from its saga, below). A failed
    // saga's leg with neither a journal entry nor a reversal was never
    // sent: the bank has nothing of it either.
    for (key, m) in reversed_originals {
        if journal.on_date(&key) && !journal.has_sent(&key) {
            let leg = journal.leg_mut(key);
            leg.sent = Some(m);
            leg.flags |= LEG_FREEZE_FROM_SAGA;
        }
    }

    // Receive sagas, read a slice at a time and folded in on a blocking
    // thread while the next slice is read: which debit and credit belong to
    // which receive (for the bilateral positions and the receives' dates),
    // which are still in flight, and the legs a crash kept out of the
    // journal (those sagas need their freeze from the store: they are
    // folded in last, here).
    let sagas = Sagas {
        journal,
        switch: InstitutionId::from_field(num::ACQUIRER, switch.as_bytes()).ok(),
        pending,
        in_flight: HashSet::new(),
        receives: Vec::new(),
        need_freeze: Vec::new(),
    };
    let mut sagas = read_and_fold(
        stretches(read_from, read_to, SAGA_SLICE_MS),
        |(from_ms, to_ms)| store.sagas_between(from_ms, to_ms),
        async { Ok(sagas) },
        |mut sagas: Sagas, slice: Vec<SagaRecord>| {
            for saga in slice {
                sagas.take(saga);
            }
            (sagas, ())
        },
        |(), _| {},
    )
    .await?;
    for saga in std::mem::take(&mut sagas.need_freeze) {
        let freeze = store.freeze(&saga.freeze).await?;
        sagas.fold(saga, freeze.as_ref());
    }
    let Sagas {
        journal,
        mut pending,
        in_flight,
        receives,
        ..
    } = sagas;

    // Bank lines.
    let Journal {
        mut words,
        mut legs,
        leg_index,
        mut requests,
        request_index,
        ..
    } = journal;
    drop((leg_index, request_index));
    let approved = words.word(ResponseCode::APPROVED.as_str());
    for leg in &mut legs {
        let Some(m) = &leg.sent else { continue };
        let not_final = |reason: &str| Pending {
            role: Role::Bank,
            participant: words.name(m.bank).to_string(),
            kind: m.kind,
            key: key_text(&leg.key),
            reason: reason.to_string(),
        };
        if in_flight.contains(&leg.key) {
            pending.insert(not_final("its receive is in flight"));
            continue;
        }
        // An approved saga's legs were answered 00 even when the journal lost the answer.
        let answer = leg
            .answer
            .or_else(|| (leg.flags & LEG_APPROVED != 0).then_some(approved));
        let answer_code = answer.map(|w| words.name(w));
        let (status, reversal) = match reversals.get(&leg.key) {
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
                (Status::Reversed, Some(code.as_str()))
            }
            Some(Reversal::Done(code)) if *code == ResponseCode::UNABLE_TO_LOCATE_RECORD => {
                (Status::NotApplied, Some(code.as_str()))
            }
            other => {
                let reversal = match other {
                    Some(Reversal::Done(code)) => Some(code.as_str()),
                    _ => None,
                };
                match answer_code {
                    Some(code) if code == ResponseCode::APPROVED => (Status::Approved, reversal),
                    Some(_) => (Status::Declined, reversal),
                    // A failed saga's message with no answer and no reversal
                    // never left the switch (its connection failed before
                    // writing it): the saga's end, committed after any answer
                    // it got was journaled, would otherwise have queued one.
                    None if leg.flags & LEG_FAILED != 0 && reversal.is_none_or(str::is_empty) => {
                        continue
                    }
                    None => {
                        pending.insert(not_final("no answer from the bank and no reversal"));
                        continue;
                    }
                }
            }
        };
        let reversal = reversal.filter(|r| !r.is_empty()).map(str::to_string);
        leg.outcome = Some(Outcome {
            status,
            response: answer,
            reversal: reversal.map(|r| words.word(&r)),
        });
    }

    // Wallet lines.
    for r in &mut requests {
        let day_matches = match &r.saga {
            Some(saga) => saga.on_date,
            None => settlement.date_of_ms(r.at_ms) == date,
        };
        if !day_matches {
            continue;
        }
        if r.saga.is_some_and(|s| !s.is_final) {
            continue; // listed with the sagas
        }
        let key = &r.request.key;
        let kind = r.request.kind;
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
        let mut answer = r.answer.or(r.saga.and_then(|s| s.response));
        if answer.is_none() {
            answer = store
                .answer(&request_key)
                .await?
                .and_then(|a| parse(spec, a.response).ok())
                .and_then(|m| m.get_str(num::RESPONSE_CODE).map(|c| words.word(c)));
        }
        let status = match answer.map(|w| words.name(w)) {
            // Refused as not this wallet's to send: not the wallet's transaction.
            Some(code) if code == ResponseCode::SECURITY_VIOLATION => continue,
            Some(code) if code == ResponseCode::APPROVED => Status::Approved,
            Some(_) => Status::Declined,
            None => {
                let still_pending = kind == Kind::Freeze
                    && store
                        .freeze(&FreezeKey {
                            acquirer: request_key.acquirer,
                            transmission: request_key.transmission,
                            stan: request_key.stan,
                        })
                        .await?
                        .is_some_and(|f| f.state == crate::store::FreezeState::Pending);
                if still_pending {
                    pending.insert(Pending {
                        role: Role::Wallet,
                        participant: String::from_utf8_lossy(&key[..11]).into_owned(),
                        kind,
                        key: key_text(key),
                        reason: "freeze in flight".into(),
                    });
                    continue;
                }
                Status::Unanswered
            }
        };
        r.outcome = Some(Outcome {
            status,
            response: answer,
            reversal: None,
        });
    }

    let pending: Vec<Pending> = pending.into_iter().collect();
    if !pending.is_empty() && !request.allow_pending {
        return Err(ClearError::NotFinal { date, pending });
    }

    // Who pays whom: every receive whose debit and credit both stand.
    let exponents = Exponents(spec.currency_exponents.clone());
    // Added up by the banks' words (a million receives), then named.
    let mut by_word: HashMap<(Word, Word, u16), Decimal> = HashMap::new();
    for (d, c) in receives {
        let (debit, credit) = (&legs[d as usize], &legs[c as usize]);
        let approved = |l: &Leg| l.outcome.is_some_and(|o| o.status == Status::Approved);
        if let (Some(payer), Some(receiver), true, true) =
            (&debit.sent, &credit.sent, approved(debit), approved(credit))
        {
            if payer.bank != receiver.bank {
                let amount = exponents.amount(payer.currency, payer.amount_minor);
                *by_word
                    .entry((payer.bank, receiver.bank, payer.currency))
                    .or_insert_with(|| Decimal::new(0, amount.scale())) += amount;
            }
        }
    }
    let gross: BTreeMap<(String, String, u16), Decimal> = by_word
        .into_iter()
        .map(|((payer, receiver, currency), amount)| {
            (
                (
                    words.name(payer).to_string(),
                    words.name(receiver).to_string(),
                    currency,
                ),
                amount,
            )
        })
        .collect();
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

    // The records with a line, the wallets' first: the lines are collected
    // beside the records they come from, so the smaller set is copied while
    // both sets of records are alive, the larger once the smaller's records
    // are gone.
    let wallet_lines = requests
        .into_iter()
        .filter_map(|r| Some((r.request, r.outcome?)))
        .collect();
    let bank_lines = legs
        .into_iter()
        .filter_map(|l| Some((l.sent?, l.key, l.outcome?)))
        .collect();
    Ok(ClearedDay::new(Decided {
        date,
        settlement,
        switch,
        words,
        exponents,
        bank_lines,
        wallet_lines,
        banks: request
            .banks
            .iter()
            .map(|b| institution11(b).unwrap_or_else(|| b.clone()))
            .collect(),
        wallets: request
            .wallets
            .iter()
            .map(|w| institution11(w).unwrap_or_else(|| w.clone()))
            .collect(),
        obligations,
        pending,
    }))
}

impl Cleared {
    /// Σ net positions per currency: zero for every currency when the day balances.
    pub fn net_by_currency(&self) -> BTreeMap<u16, Decimal> {
        super::day::net_by_currency(&self.positions)
    }

    /// Whether every currency's net positions sum to zero.
    pub fn balanced(&self) -> bool {
        self.net_by_currency().values().all(|n| n.is_zero())
    }

    /// The summary file's text.
    pub fn summary(&self) -> String {
        super::day::summary(
            &self.switch,
            self.date,
            &self.settlement,
            &self.positions,
            &self.obligations,
            self.wallets
                .iter()
                .map(|(id, f)| (id.as_str(), f.trailers())),
            &self.pending,
        )
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

#[cfg(test)]
mod tests {
    use super::*;
    use iso8583::codec::{build_bytes, Message};

    fn debit(f49: Option<&str>, f90: Option<&str>) -> Vec<u8> {
        let mut m = Message::new(*b"0200");
        m.set(2, "6222020200112233446")
            .set(3, "000000")
            .set(4, "000000001000")
            .set(7, "1123112233")
            .set(11, "000124")
            .set(32, "00010000");
        if let Some(v) = f49 {
            m.set(49, v.to_string());
        }
        if let Some(v) = f90 {
            m.set(90, v.to_string());
        }
        build_bytes(&Spec::switchboard(), &m).unwrap().to_vec()
    }

    #[test]
    fn a_requests_currency_and_original_are_read_from_its_raw_message() {
        let spec = Spec::switchboard();
        let raw = debit(
            Some("156"),
            Some("010000012311231122330000102000000000000000"),
        );
        let read = RequestFields::of(&spec, &raw).unwrap();
        assert_eq!(read.currency, 156);
        let od = read.original.unwrap();
        assert_eq!(&od.mti, b"0100");
        assert_eq!(&od.stan, b"000123");
        assert_eq!(&od.transmission, b"1123112233");
        // Missing: currency 0, no original, as from a parsed message.
        let read = RequestFields::of(&spec, &debit(None, None)).unwrap();
        assert_eq!((read.currency, read.original), (0, None));
    }

    #[test]
    fn a_raw_message_that_does_not_parse_gives_nothing() {
        let spec = Spec::switchboard();
        let raw = debit(Some("156"), None);
        for len in 0..raw.len() {
            assert!(RequestFields::of(&spec, &raw[..len]).is_none(), "{len}");
        }
        assert!(RequestFields::of(&spec, b"").is_none());
        assert!(RequestFields::of(&spec, b"not a message at all").is_none());
    }
}

//! A bank host, as pure logic: accounts, holds, a journal, and the answers it
//! gave. No I/O, no clock: [`Bank::handle`] takes a request and the time and
//! returns the response. `bank_server` puts it on a socket.
//!
//! Invariants, checked after every change that moves money:
//! - a hold's remaining amount is never above its amount;
//! - an account's held amount is the sum of its holds' remaining amounts;
//! - money changes only by approved debits and credits and their reversals: the
//!   sum of all balances moves by exactly what those applied.
//!
//! Card numbers appear in full only in the ledger ([`Ledger`], [`Hold`]); the
//! journal and everything meant for logs carry them masked.

mod chunked;

use iso8583::codec::{Message, Mti};
use iso8583::fields::{amount_minor, luhn_valid, num, FieldError};
use iso8583::mask::mask_pan;
use iso8583::mti::{is_response, request_class, response_mti};
use iso8583::response::ResponseCode;
use iso8583::spec::Spec;
use iso8583::validate::{validate, Violation};
use switchboard::dialect::{FreezeKey, InstitutionId, OriginalData, NETWORK_ECHOED};

use crate::random::SplitMix64;
use chunked::ChunkedLog;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use chrono::{Datelike, NaiveDateTime};
use serde::{Deserialize, Serialize};

/// Fields every response echoes from its request when the request has them.
const ECHOED: [u16; 11] = [
    num::PAN,
    num::PROCESSING_CODE,
    num::AMOUNT,
    num::TRANSMISSION,
    num::STAN,
    num::ACQUIRER,
    num::FORWARDER,
    num::RRN,
    num::CURRENCY,
    num::ORIGINAL_DATA,
    num::RECEIVER,
];

/// The operations a bank host serves.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Operation {
    Freeze,
    Debit,
    Credit,
    Unfreeze,
    Reversal,
    NetworkManagement,
}

impl Operation {
    /// The operation of a request by MTI (repeats count as their original) and F3;
    /// `None` for anything a bank does not serve, including valid dialect messages
    /// meant for the switch (a receive).
    fn of(msg: &Message) -> Option<Operation> {
        let pc = msg.get(num::PROCESSING_CODE);
        Some(match (&request_class(msg.mti()), pc) {
            (b"0100", Some(b"030000")) => Operation::Freeze,
            (b"0200", Some(b"000000")) => Operation::Debit,
            (b"0200", Some(b"260000")) => Operation::Credit,
            (b"0120", Some(b"200000")) => Operation::Unfreeze,
            (b"0420", _) => Operation::Reversal,
            (b"0800", _) => Operation::NetworkManagement,
            _ => return None,
        })
    }
}

/// A request's identity for idempotency and for field 90: the MTI class, F32, F7
/// and F11. A freeze's key is also its hold's [`FreezeKey`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
struct RequestKey {
    class: Mti,
    freeze: FreezeKey,
}

impl RequestKey {
    fn of(msg: &Message) -> Result<Self, FieldError> {
        Ok(RequestKey {
            class: request_class(msg.mti()),
            freeze: FreezeKey::of_request(msg)?,
        })
    }

    fn named_by(od: &OriginalData) -> Self {
        RequestKey {
            class: request_class(&od.mti),
            freeze: od.freeze_key(),
        }
    }
}

impl fmt::Display for RequestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(std::str::from_utf8(&self.class).unwrap_or("????"))?;
        f.write_str("/")?;
        fmt::Display::fmt(&self.freeze, f)
    }
}

impl RequestKey {
    /// As the journal writes it, in one allocation (a bank journals every
    /// request it decides).
    fn text(&self) -> String {
        use fmt::Write;
        let mut text = String::with_capacity(48);
        let _ = write!(text, "{self}");
        text
    }
}

/// `YYYY-MM-DDThh:mm:ss`, as the journal writes times: digits written
/// straight, not through a format string parsed at every request.
fn journal_time(now: NaiveDateTime) -> String {
    use chrono::Timelike;
    let mut text = String::with_capacity(19);
    let mut digits = |n: u32, width: usize, after: Option<char>| {
        let mut buf = [b'0'; 4];
        let mut rest = n;
        for digit in buf[..width].iter_mut().rev() {
            *digit = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        text.extend(buf[..width].iter().map(|&b| char::from(b)));
        if let Some(c) = after {
            text.push(c);
        }
    };
    digits(now.year().clamp(0, 9999) as u32, 4, Some('-'));
    digits(now.month(), 2, Some('-'));
    digits(now.day(), 2, Some('T'));
    digits(now.hour(), 2, Some(':'));
    digits(now.minute(), 2, Some(':'));
    digits(now.second(), 2, None);
    text
}

/// Where a hold stands.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HoldState {
    /// Something remains to debit or release.
    Open,
    /// Debits took all of it; a reversed debit reopens it.
    Used,
    /// An unfreeze or a reversed freeze released what was left; nothing returns
    /// to it, a reversed debit goes back to the available balance.
    Released,
}

/// A hold placed by an approved freeze, keyed by the freeze's [`FreezeKey`].
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Hold {
    /// The card held (in full: this is ledger data).
    pub pan: String,
    /// The amount the freeze held.
    pub amount_minor: u64,
    /// What debits can still take and unfreezes can still release.
    pub remaining_minor: u64,
    pub state: HoldState,
}

/// The kind of a journal entry.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MovementKind {
    Freeze,
    Debit,
    Credit,
    Unfreeze,
    Reversal,
}

/// One request the bank decided, approved or not (exact resends, which change
/// nothing, are not journaled again).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Movement {
    /// 1, 2, 3, ... in the order the bank decided.
    pub seq: u64,
    pub kind: MovementKind,
    /// The request's key: MTI class / F32 (11 digits) / F7 / F11.
    pub request: String,
    /// The hold concerned, as F32 / F7 / F11 of its freeze.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub hold: Option<String>,
    /// For a reversal: the key of the request it reverses.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub original: Option<String>,
    /// The card, masked.
    pub pan: String,
    /// F4 of the request.
    pub amount_minor: u64,
    /// What was actually held, moved or released (0 when declined or nothing
    /// was left to do).
    pub applied_minor: u64,
    pub response_code: String,
    /// When the bank decided, `YYYY-MM-DDThh:mm:ss`.
    pub time: String,
    /// F3 of the request (a reversal's tells what it reverses).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub processing_code: Option<String>,
    /// F49 of the request.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub currency: Option<u16>,
}

/// A [`Movement`] as the bank keeps it: keys, codes and the time as the
/// fixed-size values they are, written as text only when the journal is
/// read. A bank keeps one for every request it decides, for the whole run
/// (its clearing export needs them), so this is much of what its memory
/// grows by: as values, without a movement's six strings, it grows a
/// quarter less a request (README, the banks' memory).
#[derive(Clone, Debug)]
struct Entry {
    kind: MovementKind,
    request: RequestKey,
    hold: Option<FreezeKey>,
    original: Option<RequestKey>,
    /// Already masked: the full number is never kept here.
    pan: Box<str>,
    amount_minor: u64,
    applied_minor: u64,
    response_code: ResponseCode,
    time: NaiveDateTime,
    /// F3's text, which the dialect makes six characters (`None` also for
    /// any other length, which parsing refuses before the bank sees it).
    processing_code: Option<[u8; 6]>,
    currency: Option<u16>,
}

impl Entry {
    /// The movement as the journal shows it, `seq` being its place (1, 2, ...).
    fn movement(&self, seq: u64) -> Movement {
        Movement {
            seq,
            kind: self.kind,
            request: self.request.text(),
            hold: self.hold.map(|k| k.to_string()),
            original: self.original.map(|k| k.to_string()),
            pan: self.pan.to_string(),
            amount_minor: self.amount_minor,
            applied_minor: self.applied_minor,
            response_code: self.response_code.to_string(),
            time: journal_time(self.time),
            processing_code: self
                .processing_code
                .and_then(|pc| std::str::from_utf8(&pc).ok().map(str::to_string)),
            currency: self.currency,
        }
    }
}

/// F3 of `request` as the journal keeps it: its text when it has one (a
/// request refused for its MAC was not validated), in six bytes.
fn processing_code_of(request: &Message) -> Option<[u8; 6]> {
    request
        .get_str(num::PROCESSING_CODE)
        .and_then(|text| <[u8; 6]>::try_from(text.as_bytes()).ok())
}

/// One account in a [`Ledger`].
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct AccountView {
    pub pan: String,
    pub balance_minor: i64,
    /// Sum of the remaining amounts of the account's holds.
    pub held_minor: i64,
    /// Balance minus held: what a new freeze can take.
    pub available_minor: i64,
}

/// One hold in a [`Ledger`].
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct HoldView {
    /// The freeze key, F32 (11 digits) / F7 / F11.
    pub key: String,
    #[serde(flatten)]
    pub hold: Hold,
}

/// The bank's books at one moment, for tests and the admin port (JSON).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Ledger {
    pub institution: String,
    /// Sorted by card number.
    pub accounts: Vec<AccountView>,
    /// Sorted by freeze key.
    pub holds: Vec<HoldView>,
    pub total_balance_minor: i64,
    pub total_held_minor: i64,
}

impl Ledger {
    pub fn account(&self, pan: &str) -> Option<&AccountView> {
        self.accounts.iter().find(|a| a.pan == pan)
    }

    pub fn balance(&self, pan: &str) -> Option<i64> {
        self.account(pan).map(|a| a.balance_minor)
    }

    /// The hold of a freeze.
    pub fn hold(&self, key: &FreezeKey) -> Option<&Hold> {
        let key = key.to_string();
        self.holds.iter().find(|h| h.key == key).map(|h| &h.hold)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
struct Account {
    balance_minor: i64,
    held_minor: i64,
}

/// What an answered request did, so that a reversal can undo it.
#[derive(Clone, PartialEq, Eq, Debug)]
enum Effect {
    /// Declined, or nothing that a reversal could undo.
    Nothing,
    Freeze {
        hold: FreezeKey,
    },
    Debit {
        hold: FreezeKey,
        pan: String,
        amount_minor: u64,
    },
    Credit {
        pan: String,
        amount_minor: u64,
    },
    /// Unfreezes and reversals are not reversible.
    Final,
}

/// A request the bank answered, kept for resends and reversals. A bank
/// keeps one for every request it decides, so its memory grows by what this
/// holds: a digest of the request rather than the request, and what the
/// response added to the fields it echoed rather than the response (both
/// messages kept made about 2.5 KB a request with its journal line, and a
/// bank under load spent a third of its time faulting in and zeroing fresh
/// pages for them).
#[derive(Clone, Debug)]
struct Answered {
    /// The request's [`digest`] (its MTI class, everything but its MAC):
    /// an exact resend has the same.
    request_digest: [u8; 32],
    /// F4 of the request, which a reversal must repeat.
    amount_minor: u64,
    response: Reply,
    effect: Effect,
    reversed: bool,
}

/// What a response adds to the fields it echoes from its request. An exact
/// resend echoes the same fields, so its response is the first one again.
#[derive(Clone, Copy, Debug)]
struct Reply {
    mti: Mti,
    code: ResponseCode,
    /// F15 (`MMDD`), in responses to financial requests (0210).
    settlement_date: Option<[u8; 4]>,
    /// F38, in approved 0110 and 0210.
    auth_code: Option<[u8; 6]>,
}

impl Reply {
    /// The response to `request`: the fields it echoes, kept where `keep`
    /// says, and this reply's own.
    fn to(&self, request: &Message, keep: impl Fn(u16, &bytes::Bytes) -> bool) -> Message {
        let mut response = Message::new(self.mti);
        let echoed: &[u16] = if request_class(request.mti()) == *b"0800" {
            &NETWORK_ECHOED
        } else {
            &ECHOED
        };
        for &field in echoed {
            if let Some(value) = request.get_bytes(field) {
                if keep(field, &value) {
                    response.set(field, value);
                }
            }
        }
        response.set(num::RESPONSE_CODE, self.code);
        if let Some(date) = self.settlement_date {
            response.set(num::SETTLEMENT_DATE, bytes::Bytes::copy_from_slice(&date));
        }
        if let Some(auth) = self.auth_code {
            response.set(num::AUTH_CODE, bytes::Bytes::copy_from_slice(&auth));
        }
        response
    }
}

/// SHA-256 of a request's header, MTI class and fields but its MAC: what
/// an exact resend shares with its original. A repeat (0121 for 0120, say)
/// carries another MAC, which covers its MTI, and the server has checked
/// it before the bank sees the request.
fn digest(request: &Message) -> [u8; 32] {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    hasher.update((request.header().len() as u32).to_be_bytes());
    hasher.update(request.header());
    hasher.update(request_class(request.mti()));
    for (number, value) in request
        .fields()
        .filter(|(number, _)| *number != iso8583::mac::MAC_FIELD)
    {
        hasher.update(number.to_be_bytes());
        hasher.update((value.len() as u32).to_be_bytes());
        hasher.update(value);
    }
    hasher.finalize().into()
}

/// How a request was decided: the response code, what it did, and the amount
/// applied (for the journal).
struct Decision {
    code: ResponseCode,
    effect: Effect,
    applied_minor: u64,
    hold: Option<FreezeKey>,
    original: Option<RequestKey>,
}

impl Decision {
    fn declined(code: ResponseCode) -> Self {
        Decision {
            code,
            effect: Effect::Nothing,
            applied_minor: 0,
            hold: None,
            original: None,
        }
    }
}

/// A bank host simulator: accounts, holds, journal and idempotency memory.
#[derive(Clone)]
pub struct Bank {
    institution: InstitutionId,
    spec: Arc<Spec>,
    accounts: BTreeMap<String, Account>,
    holds: BTreeMap<FreezeKey, Hold>,
    // In chunks, not a `Vec`: its doublings stopped the bank (`chunked.rs`).
    journal: ChunkedLog<Entry>,
    // A B-tree, not a hash map: under sustained load a hash map's resize
    // would stop the bank for a long moment while it rehashes millions of
    // answers, which shows up as latency spikes in every benchmark.
    answered: BTreeMap<RequestKey, Answered>,
    next_auth_code: u32,
}

impl fmt::Debug for Bank {
    /// Counts only: a stray `{:?}` must not print card numbers.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bank")
            .field("institution", &self.institution)
            .field("accounts", &self.accounts.len())
            .field("holds", &self.holds.len())
            .field("journal", &self.journal.len())
            .finish()
    }
}

fn signed(amount_minor: u64) -> i64 {
    // F4 is n12, so every amount fits comfortably.
    i64::try_from(amount_minor).expect("F4 has at most 12 digits")
}

fn pan_of(msg: &Message) -> &str {
    msg.get_str(num::PAN).unwrap_or("")
}

impl Bank {
    /// A bank without accounts. Panics if `institution_id` is not 1–11 digits.
    pub fn new(institution_id: &str) -> Bank {
        let institution = InstitutionId::from_field(num::RECEIVER, institution_id.as_bytes())
            .expect("a bank's institution id is 1 to 11 digits");
        Bank {
            institution,
            spec: Arc::new(Spec::switchboard()),
            accounts: BTreeMap::new(),
            holds: BTreeMap::new(),
            journal: ChunkedLog::default(),
            answered: BTreeMap::new(),
            next_auth_code: 1,
        }
    }

    /// A bank with `count` accounts of `balance_minor` each, on deterministic
    /// Luhn-valid card numbers of 16 or 19 digits starting with `bin_prefix`: the
    /// same arguments always give the same cards. Panics if `bin_prefix` is not
    /// 1–12 digits.
    pub fn generate(
        institution_id: &str,
        bin_prefix: &str,
        count: usize,
        balance_minor: i64,
        seed: u64,
    ) -> Bank {
        assert!(
            (1..=12).contains(&bin_prefix.len()) && bin_prefix.bytes().all(|b| b.is_ascii_digit()),
            "a BIN is 1 to 12 digits"
        );
        let mut bank = Bank::new(institution_id);
        let mut rng = SplitMix64::new(seed);
        while bank.accounts.len() < count {
            let len = if rng.next_u64() & 3 == 0 { 19 } else { 16 };
            let mut pan: Vec<u8> = bin_prefix.bytes().collect();
            while pan.len() < len - 1 {
                pan.push(b'0' + (rng.next_u64() % 10) as u8);
            }
            pan.push(luhn_check_digit(&pan));
            debug_assert!(luhn_valid(&pan));
            let pan = String::from_utf8(pan).expect("digits");
            bank.accounts.entry(pan).or_insert(Account {
                balance_minor,
                held_minor: 0,
            });
        }
        bank
    }

    /// Adds (or replaces) an account.
    pub fn add_account(&mut self, pan: &str, balance_minor: i64) {
        let held_minor = self.accounts.get(pan).map_or(0, |a| a.held_minor);
        self.accounts.insert(
            pan.to_string(),
            Account {
                balance_minor,
                held_minor,
            },
        );
    }

    /// Every account as (card number, balance), sorted by card number.
    pub fn accounts(&self) -> Vec<(String, i64)> {
        self.accounts
            .iter()
            .map(|(pan, a)| (pan.clone(), a.balance_minor))
            .collect()
    }

    pub fn balance(&self, pan: &str) -> Option<i64> {
        self.accounts.get(pan).map(|a| a.balance_minor)
    }

    /// Sum of the remaining amounts of the account's holds.
    pub fn held(&self, pan: &str) -> Option<i64> {
        self.accounts.get(pan).map(|a| a.held_minor)
    }

    pub fn hold(&self, key: &FreezeKey) -> Option<&Hold> {
        self.holds.get(key)
    }

    /// The sum of all balances.
    pub fn total_balance_minor(&self) -> i64 {
        self.accounts.values().map(|a| a.balance_minor).sum()
    }

    pub fn institution(&self) -> InstitutionId {
        self.institution
    }

    /// The dialect the bank reads and answers in.
    pub fn spec(&self) -> &Arc<Spec> {
        &self.spec
    }

    /// Every request decided, in order (made into text at each call).
    pub fn journal(&self) -> Vec<Movement> {
        self.movements().collect()
    }

    /// The journal one movement at a time, each made into text as it is
    /// reached: what reads the whole journal (the clearing export, the
    /// `journal` admin command) holds no second copy of it.
    pub fn movements(&self) -> impl Iterator<Item = Movement> + '_ {
        self.journal
            .iter()
            .zip(1..)
            .map(|(entry, seq)| entry.movement(seq))
    }

    /// The books, with full card numbers.
    pub fn snapshot(&self) -> Ledger {
        let accounts: Vec<AccountView> = self
            .accounts
            .iter()
            .map(|(pan, a)| AccountView {
                pan: pan.clone(),
                balance_minor: a.balance_minor,
                held_minor: a.held_minor,
                available_minor: a.balance_minor - a.held_minor,
            })
            .collect();
        Ledger {
            institution: self.institution.to_string(),
            total_balance_minor: accounts.iter().map(|a| a.balance_minor).sum(),
            total_held_minor: accounts.iter().map(|a| a.held_minor).sum(),
            accounts,
            holds: self
                .holds
                .iter()
                .map(|(key, hold)| HoldView {
                    key: key.to_string(),
                    hold: hold.clone(),
                })
                .collect(),
        }
    }

    /// Recomputes what is kept incrementally and panics if it disagrees: every
    /// account's held amount is the sum of its holds' remaining amounts, and no
    /// hold has more remaining than it held.
    pub fn check_invariants(&self) {
        let mut held: BTreeMap<&str, i64> = BTreeMap::new();
        for (key, hold) in &self.holds {
            assert!(
                hold.remaining_minor <= hold.amount_minor,
                "hold {key}: remaining above amount"
            );
            assert_eq!(
                hold.remaining_minor == 0,
                hold.state != HoldState::Open,
                "hold {key}: state {:?} with {} remaining",
                hold.state,
                hold.remaining_minor
            );
            *held.entry(hold.pan.as_str()).or_default() += signed(hold.remaining_minor);
        }
        for (pan, account) in &self.accounts {
            assert_eq!(
                account.held_minor,
                held.get(pan.as_str()).copied().unwrap_or(0),
                "account {}: held amount disagrees with its holds",
                mask_pan(pan)
            );
        }
    }

    /// Journals a financial request that a fault answered `code` before the
    /// bank decided it: nothing applied and nothing remembered (a resend is
    /// decided afresh), but the bank's records show what it answered, as a
    /// host logs every answer it gives, so its clearing export lists a debit
    /// or credit declined this way as the switch does.
    pub fn journal_declined(&mut self, request: &Message, code: ResponseCode, now: NaiveDateTime) {
        let kind = match Operation::of(request) {
            Some(Operation::Freeze) => MovementKind::Freeze,
            Some(Operation::Debit) => MovementKind::Debit,
            Some(Operation::Credit) => MovementKind::Credit,
            Some(Operation::Unfreeze) => MovementKind::Unfreeze,
            Some(Operation::Reversal) => MovementKind::Reversal,
            Some(Operation::NetworkManagement) | None => return,
        };
        let (Ok(key), Ok(amount)) = (RequestKey::of(request), amount_minor(request)) else {
            return;
        };
        self.journal.push(Entry {
            kind,
            request: key,
            hold: None,
            original: None,
            pan: mask_pan(pan_of(request)).into(),
            amount_minor: amount,
            applied_minor: 0,
            response_code: code,
            time: now,
            processing_code: processing_code_of(request),
            currency: iso8583::fields::currency(request).ok(),
        });
    }

    /// Answers one request; `None` for messages that get no answer (responses).
    pub fn handle(&mut self, request: &Message, now: NaiveDateTime) -> Option<Message> {
        let mti = *request.mti();
        if is_response(&mti) || !mti.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let Some(operation) = Operation::of(request) else {
            return Some(self.respond(request, ResponseCode::INVALID_TRANSACTION, now));
        };
        let validation = validate(&self.spec, request);
        if !validation.is_valid() {
            let code = if validation
                .violations
                .iter()
                .any(|v| matches!(v, Violation::UnknownMessage { .. }))
            {
                ResponseCode::INVALID_TRANSACTION
            } else {
                validation
                    .response_code()
                    .unwrap_or(ResponseCode::FORMAT_ERROR)
            };
            return Some(self.respond_format_error(request, code, now));
        }
        if operation == Operation::NetworkManagement {
            let code = match request.get(num::NETWORK_CODE) {
                Some(b"001" | b"002" | b"301") => ResponseCode::APPROVED,
                _ => ResponseCode::INVALID_TRANSACTION,
            };
            return Some(self.respond(request, code, now));
        }
        // Validation guarantees F7, F11 and F32 in every financial request.
        let Ok(key) = RequestKey::of(request) else {
            return Some(self.respond_format_error(request, ResponseCode::FORMAT_ERROR, now));
        };
        let request_digest = digest(request);
        if let Some(previous) = self.answered.get(&key) {
            return Some(if previous.request_digest == request_digest {
                previous.response.to(request, |_, _| true)
            } else {
                self.respond(request, ResponseCode::DUPLICATE_TRANSMISSION, now)
            });
        }
        let Ok(amount) = amount_minor(request) else {
            return Some(self.respond_format_error(request, ResponseCode::FORMAT_ERROR, now));
        };
        let decision = match operation {
            Operation::Freeze => self.freeze(request, key, amount),
            Operation::Debit => self.debit(request, amount),
            Operation::Credit => self.credit(request, amount),
            Operation::Unfreeze => self.unfreeze(request, amount),
            Operation::Reversal => self.reverse(request, amount),
            Operation::NetworkManagement => unreachable!("answered above"),
        };
        self.check_after_change();
        let reply = self.reply(request, decision.code, now);
        let response = reply.to(request, |_, _| true);
        let kind = match operation {
            Operation::Freeze => MovementKind::Freeze,
            Operation::Debit => MovementKind::Debit,
            Operation::Credit => MovementKind::Credit,
            Operation::Unfreeze => MovementKind::Unfreeze,
            _ => MovementKind::Reversal,
        };
        self.journal.push(Entry {
            kind,
            request: key,
            hold: decision.hold,
            original: decision.original,
            pan: mask_pan(pan_of(request)).into(),
            amount_minor: amount,
            applied_minor: decision.applied_minor,
            response_code: decision.code,
            time: now,
            processing_code: processing_code_of(request),
            currency: iso8583::fields::currency(request).ok(),
        });
        self.answered.insert(
            key,
            Answered {
                request_digest,
                amount_minor: amount,
                response: reply,
                effect: decision.effect,
                reversed: false,
            },
        );
        Some(response)
    }

    fn freeze(&mut self, request: &Message, key: RequestKey, amount: u64) -> Decision {
        if amount == 0 {
            return Decision::declined(ResponseCode::INVALID_AMOUNT);
        }
        let pan = pan_of(request);
        let Some(account) = self.accounts.get_mut(pan) else {
            return Decision::declined(ResponseCode::INVALID_CARD_NUMBER);
        };
        if account.balance_minor - account.held_minor < signed(amount) {
            return Decision::declined(ResponseCode::INSUFFICIENT_FUNDS);
        }
        // A hold exists only for an answered freeze, and a second freeze with the
        // same key was answered from memory before getting here.
        assert!(
            !self.holds.contains_key(&key.freeze),
            "hold {} without its answered freeze",
            key.freeze
        );
        account.held_minor += signed(amount);
        self.holds.insert(
            key.freeze,
            Hold {
                pan: pan.to_string(),
                amount_minor: amount,
                remaining_minor: amount,
                state: HoldState::Open,
            },
        );
        Decision {
            code: ResponseCode::APPROVED,
            effect: Effect::Freeze { hold: key.freeze },
            applied_minor: amount,
            hold: Some(key.freeze),
            original: None,
        }
    }

    /// The hold a debit or unfreeze names by F90; `Err` with 25 if none.
    fn named_hold(request: &Message) -> Result<FreezeKey, ResponseCode> {
        let od = OriginalData::of(request).map_err(|_| ResponseCode::FORMAT_ERROR)?;
        if od.mti != *b"0100" {
            return Err(ResponseCode::UNABLE_TO_LOCATE_RECORD);
        }
        Ok(od.freeze_key())
    }

    fn debit(&mut self, request: &Message, amount: u64) -> Decision {
        if amount == 0 {
            return Decision::declined(ResponseCode::INVALID_AMOUNT);
        }
        let key = match Self::named_hold(request) {
            Ok(key) => key,
            Err(code) => return Decision::declined(code),
        };
        let Some(hold) = self.holds.get_mut(&key) else {
            return Decision::declined(ResponseCode::UNABLE_TO_LOCATE_RECORD);
        };
        let pan = pan_of(request);
        if hold.pan != pan {
            return Decision {
                hold: Some(key),
                ..Decision::declined(ResponseCode::INVALID_CARD_NUMBER)
            };
        }
        if hold.remaining_minor < amount {
            return Decision {
                hold: Some(key),
                ..Decision::declined(ResponseCode::EXCEEDS_AMOUNT_LIMIT)
            };
        }
        let account = self.accounts.get_mut(pan).expect("a hold's account exists");
        hold.remaining_minor -= amount;
        if hold.remaining_minor == 0 {
            hold.state = HoldState::Used;
        }
        account.held_minor -= signed(amount);
        account.balance_minor -= signed(amount);
        Decision {
            code: ResponseCode::APPROVED,
            effect: Effect::Debit {
                hold: key,
                pan: pan.to_string(),
                amount_minor: amount,
            },
            applied_minor: amount,
            hold: Some(key),
            original: None,
        }
    }

    fn credit(&mut self, request: &Message, amount: u64) -> Decision {
        if amount == 0 {
            return Decision::declined(ResponseCode::INVALID_AMOUNT);
        }
        let pan = pan_of(request);
        let Some(account) = self.accounts.get_mut(pan) else {
            return Decision::declined(ResponseCode::INVALID_CARD_NUMBER);
        };
        let Some(balance) = account.balance_minor.checked_add(signed(amount)) else {
            return Decision::declined(ResponseCode::INVALID_AMOUNT);
        };
        account.balance_minor = balance;
        Decision {
            code: ResponseCode::APPROVED,
            effect: Effect::Credit {
                pan: pan.to_string(),
                amount_minor: amount,
            },
            applied_minor: amount,
            hold: None,
            original: None,
        }
    }

    fn unfreeze(&mut self, request: &Message, amount: u64) -> Decision {
        let key = match Self::named_hold(request) {
            Ok(key) => key,
            Err(code) => return Decision::declined(code),
        };
        let Some(hold) = self.holds.get_mut(&key) else {
            return Decision::declined(ResponseCode::UNABLE_TO_LOCATE_RECORD);
        };
        if hold.pan != pan_of(request) {
            return Decision {
                hold: Some(key),
                ..Decision::declined(ResponseCode::INVALID_CARD_NUMBER)
            };
        }
        let released = amount.min(hold.remaining_minor);
        hold.remaining_minor -= released;
        if hold.remaining_minor == 0 {
            hold.state = HoldState::Released;
        }
        let account = self
            .accounts
            .get_mut(&hold.pan)
            .expect("a hold's account exists");
        account.held_minor -= signed(released);
        Decision {
            code: ResponseCode::APPROVED,
            effect: Effect::Final,
            applied_minor: released,
            hold: Some(key),
            original: None,
        }
    }

    fn reverse(&mut self, request: &Message, amount: u64) -> Decision {
        let od = match OriginalData::of(request) {
            Ok(od) => od,
            Err(_) => return Decision::declined(ResponseCode::FORMAT_ERROR),
        };
        let original_key = RequestKey::named_by(&od);
        let with_original = |d: Decision| Decision {
            original: Some(original_key),
            ..d
        };
        let Some(original) = self.answered.get_mut(&original_key) else {
            return with_original(Decision::declined(ResponseCode::UNABLE_TO_LOCATE_RECORD));
        };
        let hold = match &original.effect {
            Effect::Freeze { hold } | Effect::Debit { hold, .. } => Some(*hold),
            _ => None,
        };
        let nothing = |code| Decision {
            hold,
            ..with_original(Decision::declined(code))
        };
        match original.effect {
            Effect::Final => return nothing(ResponseCode::INVALID_TRANSACTION),
            // Declined originals moved nothing: there is nothing to undo.
            Effect::Nothing => return nothing(ResponseCode::APPROVED),
            _ => {}
        }
        if original.amount_minor != amount {
            return nothing(ResponseCode::INVALID_AMOUNT);
        }
        if original.reversed {
            return nothing(ResponseCode::APPROVED);
        }
        original.reversed = true;
        let effect = original.effect.clone();
        let applied_minor = match effect {
            Effect::Debit {
                hold,
                pan,
                amount_minor,
            } => {
                let account = self
                    .accounts
                    .get_mut(&pan)
                    .expect("a debit's account exists");
                account.balance_minor += signed(amount_minor);
                if let Some(h) = self.holds.get_mut(&hold) {
                    if h.state != HoldState::Released {
                        h.remaining_minor += amount_minor;
                        h.state = HoldState::Open;
                        account.held_minor += signed(amount_minor);
                    }
                }
                amount_minor
            }
            Effect::Credit { pan, amount_minor } => {
                let account = self
                    .accounts
                    .get_mut(&pan)
                    .expect("a credit's account exists");
                // May go below zero if the money was spent meanwhile: a reversal
                // must stand.
                account.balance_minor -= signed(amount_minor);
                amount_minor
            }
            Effect::Freeze { hold } => {
                let h = self.holds.get_mut(&hold).expect("a freeze's hold exists");
                let released = h.remaining_minor;
                h.remaining_minor = 0;
                h.state = HoldState::Released;
                let account = self
                    .accounts
                    .get_mut(&h.pan)
                    .expect("a hold's account exists");
                account.held_minor -= signed(released);
                released
            }
            Effect::Nothing | Effect::Final => unreachable!("answered above"),
        };
        Decision {
            code: ResponseCode::APPROVED,
            effect: Effect::Final,
            applied_minor,
            hold,
            original: Some(original_key),
        }
    }

    /// Cheap checks after every change; the full recount is
    /// [`Bank::check_invariants`], which tests call.
    fn check_after_change(&self) {
        debug_assert!(self.accounts.values().all(|a| a.held_minor >= 0));
        if cfg!(debug_assertions) && self.holds.len() <= 1024 {
            self.check_invariants();
        }
    }

    fn next_auth_code(&mut self) -> [u8; 6] {
        let n = self.next_auth_code;
        self.next_auth_code = if n >= 999_999 { 1 } else { n + 1 };
        let mut code = [b'0'; 6];
        let mut rest = n;
        for digit in code.iter_mut().rev() {
            *digit = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        code
    }

    /// A response echoing the request's fields, with F39 (and F15, F38 where due).
    fn respond(&mut self, request: &Message, code: ResponseCode, now: NaiveDateTime) -> Message {
        self.respond_filtered(request, code, now, |_, _| true)
    }

    /// A response to a message that breaks the dialect: only echoed fields that
    /// are themselves well-formed, so the response can always be built.
    fn respond_format_error(
        &mut self,
        request: &Message,
        code: ResponseCode,
        now: NaiveDateTime,
    ) -> Message {
        let spec = self.spec.clone();
        self.respond_filtered(request, code, now, |number, value| {
            let mut single = Message::new(*b"0000");
            single.set(number, value.clone());
            !validate(&spec, &single).violations.iter().any(|v| {
                v.field() == Some(number)
                    && matches!(
                        v,
                        Violation::BadContent { .. } | Violation::BadLength { .. }
                    )
            })
        })
    }

    fn respond_filtered(
        &mut self,
        request: &Message,
        code: ResponseCode,
        now: NaiveDateTime,
        keep: impl Fn(u16, &bytes::Bytes) -> bool,
    ) -> Message {
        self.reply(request, code, now).to(request, keep)
    }

    /// What the response to `request` adds to the fields it echoes: its
    /// MTI, F39, and F15 and F38 where due (taking the next approval code).
    fn reply(&mut self, request: &Message, code: ResponseCode, now: NaiveDateTime) -> Reply {
        let mti = response_mti(request.mti());
        let settlement_date = (&mti == b"0210").then(|| {
            let two = |n: u32| [b'0' + (n / 10) as u8, b'0' + (n % 10) as u8];
            let ([m1, m2], [d1, d2]) = (two(now.month()), two(now.day()));
            [m1, m2, d1, d2]
        });
        let auth_code = (code.is_approved() && matches!(&mti, b"0110" | b"0210"))
            .then(|| self.next_auth_code());
        Reply {
            mti,
            code,
            settlement_date,
            auth_code,
        }
    }
}

/// The response to a frame whose body could not be parsed: F39 = 30 when its
/// MTI can be read and is a request's, otherwise nothing.
pub fn reject_undecodable(body: &[u8]) -> Option<Message> {
    let mti: Mti = body.get(..4)?.try_into().ok()?;
    if !mti.iter().all(u8::is_ascii_digit) || is_response(&mti) {
        return None;
    }
    let mut response = Message::new(response_mti(&mti));
    response.set(num::RESPONSE_CODE, ResponseCode::FORMAT_ERROR);
    Some(response)
}

/// The Luhn check digit for `payload` (the card number without its last digit).
pub fn luhn_check_digit(payload: &[u8]) -> u8 {
    let sum: u32 = payload
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    b'0' + ((10 - sum % 10) % 10) as u8
}

#[cfg(test)]
mod tests;

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

use iso8583::codec::{Message, Mti};
use iso8583::fields::{amount_minor, luhn_valid, num, FieldError};
use iso8583::mask::mask_pan;
use iso8583::mti::{is_response, request_class, response_mti};
use iso8583::response::ResponseCode;
use iso8583::spec::Spec;
use iso8583::validate::{validate, Violation};
use switchboard::dialect::{FreezeKey, InstitutionId, OriginalData};

use crate::random::SplitMix64;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use chrono::NaiveDateTime;
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

/// Fields a network management response (0810) echoes.
const ECHOED_NETWORK: [u16; 6] = [
    num::TRANSMISSION,
    num::STAN,
    num::ACQUIRER,
    num::FORWARDER,
    num::NETWORK_CODE,
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
        let pc = msg.get(num::PROCESSING_CODE).map(|v| &v[..]);
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
        write!(
            f,
            "{}/{}",
            std::str::from_utf8(&self.class).unwrap_or("????"),
            self.freeze
        )
    }
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

/// A request the bank answered, kept for resends and reversals.
#[derive(Clone, Debug)]
struct Answered {
    /// The request with its MTI set to its class, for comparing resends.
    request: Message,
    response: Message,
    effect: Effect,
    reversed: bool,
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
    journal: Vec<Movement>,
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
            journal: Vec::new(),
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

    /// Every request decided, in order.
    pub fn journal(&self) -> &[Movement] {
        &self.journal
    }

    /// The bank's clearing file for settlement day `date` (specs/clearing.md),
    /// from its journal: the switch's debits and credits it decided, dated by
    /// their F7 under `settlement`, reversals netted out.
    pub fn export_clearing(
        &self,
        date: chrono::NaiveDate,
        settlement: &switchboard::clearing::Settlement,
    ) -> String {
        crate::bank_clearing::export(
            &self.journal,
            self.institution.as_str(),
            date,
            settlement,
            &self.spec,
        )
        .render()
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
            let code = match request.get(num::NETWORK_CODE).map(|v| &v[..]) {
                Some(b"001" | b"002" | b"301") => ResponseCode::APPROVED,
                _ => ResponseCode::INVALID_TRANSACTION,
            };
            return Some(self.respond(request, code, now));
        }
        // Validation guarantees F7, F11 and F32 in every financial request.
        let Ok(key) = RequestKey::of(request) else {
            return Some(self.respond_format_error(request, ResponseCode::FORMAT_ERROR, now));
        };
        let mut normalized = request.clone();
        normalized.set_mti(key.class);
        if let Some(previous) = self.answered.get(&key) {
            return Some(if previous.request == normalized {
                previous.response.clone()
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
        let response = self.respond(request, decision.code, now);
        let kind = match operation {
            Operation::Freeze => MovementKind::Freeze,
            Operation::Debit => MovementKind::Debit,
            Operation::Credit => MovementKind::Credit,
            Operation::Unfreeze => MovementKind::Unfreeze,
            _ => MovementKind::Reversal,
        };
        self.journal.push(Movement {
            seq: self.journal.len() as u64 + 1,
            kind,
            request: key.to_string(),
            hold: decision.hold.map(|k| k.to_string()),
            original: decision.original.map(|k| k.to_string()),
            pan: mask_pan(pan_of(request)),
            amount_minor: amount,
            applied_minor: decision.applied_minor,
            response_code: decision.code.to_string(),
            time: now.format("%Y-%m-%dT%H:%M:%S").to_string(),
            processing_code: request.get_str(num::PROCESSING_CODE).map(str::to_string),
            currency: iso8583::fields::currency(request).ok(),
        });
        self.answered.insert(
            key,
            Answered {
                request: normalized,
                response: response.clone(),
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
        if amount_minor(&original.request).ok() != Some(amount) {
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

    fn next_auth_code(&mut self) -> String {
        let n = self.next_auth_code;
        self.next_auth_code = if n >= 999_999 { 1 } else { n + 1 };
        format!("{n:06}")
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
        let mti = response_mti(request.mti());
        let mut response = Message::new(mti);
        let echoed: &[u16] = if request_class(request.mti()) == *b"0800" {
            &ECHOED_NETWORK
        } else {
            &ECHOED
        };
        for &field in echoed {
            if let Some(value) = request.get(field) {
                if keep(field, value) {
                    response.set(field, value.clone());
                }
            }
        }
        response.set(num::RESPONSE_CODE, code);
        if &mti == b"0210" {
            response.set(num::SETTLEMENT_DATE, now.format("%m%d").to_string());
        }
        if code.is_approved() && matches!(&mti, b"0110" | b"0210") {
            let auth = self.next_auth_code();
            response.set(num::AUTH_CODE, auth);
        }
        response
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
mod tests {
    use chrono::NaiveDate;

    use super::*;

    const WALLET: &str = "48020000";
    const SWITCH: &str = "00010000";
    const BANK: &str = "01020000";

    fn now() -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2026, 3, 5)
            .unwrap()
            .and_hms_opt(10, 0, 0)
            .unwrap()
    }

    fn card(payload: &str) -> String {
        let mut pan = payload.to_string();
        pan.push(luhn_check_digit(payload.as_bytes()) as char);
        pan
    }

    fn sender() -> String {
        card("622202000000001")
    }

    fn recipient() -> String {
        card("622848000000000002")
    }

    fn bank() -> Bank {
        let mut bank = Bank::new(BANK);
        bank.add_account(&sender(), 100_000);
        bank.add_account(&recipient(), 5_000);
        bank
    }

    fn amount(a: u64) -> String {
        format!("{a:012}")
    }

    fn common(mti: &[u8; 4], pc: &str, pan: &str, a: u64, stan: &str) -> Message {
        let mut m = Message::new(*mti);
        m.set(2, pan.to_string())
            .set(3, pc.to_string())
            .set(4, amount(a))
            .set(7, "0305093000")
            .set(11, stan.to_string())
            .set(12, "173000")
            .set(13, "0305")
            .set(37, format!("RRN{stan}000"))
            .set(49, "156")
            .set(100, BANK);
        m
    }

    /// The wallet's freeze as the switch forwards it.
    fn freeze(pan: &str, a: u64, stan: &str) -> Message {
        let mut m = common(b"0100", "030000", pan, a, stan);
        m.set(25, "06").set(32, WALLET).set(33, SWITCH);
        m
    }

    fn debit(pan: &str, a: u64, stan: &str, of: &Message) -> Message {
        let mut m = common(b"0200", "000000", pan, a, stan);
        m.set(7, "0305094500")
            .set(25, "06")
            .set(32, SWITCH)
            .set(33, SWITCH)
            .set(90, OriginalData::naming(of).unwrap().to_bytes().to_vec())
            .set(103, recipient());
        m
    }

    fn credit(pan: &str, a: u64, stan: &str) -> Message {
        let mut m = common(b"0200", "260000", pan, a, stan);
        m.set(7, "0305094600")
            .set(25, "00")
            .set(32, SWITCH)
            .set(33, SWITCH)
            .set(102, sender());
        m
    }

    fn unfreeze(pan: &str, a: u64, stan: &str, of: &Message) -> Message {
        let mut m = common(b"0120", "200000", pan, a, stan);
        m.set(7, "0305100000")
            .set(25, "06")
            .set(32, SWITCH)
            .set(33, SWITCH)
            .set(90, OriginalData::naming(of).unwrap().to_bytes().to_vec());
        m
    }

    fn reversal(of: &Message, stan: &str) -> Message {
        let mut m = Message::new(*b"0420");
        for f in [2, 3, 4, 25, 37, 49] {
            m.set(f, of.get(f).unwrap().clone());
        }
        m.set(7, "0305095900")
            .set(11, stan.to_string())
            .set(32, SWITCH)
            .set(33, SWITCH)
            .set(90, OriginalData::naming(of).unwrap().to_bytes().to_vec());
        m
    }

    fn sign_on(stan: &str) -> Message {
        let mut m = Message::new(*b"0800");
        m.set(7, "0305090000")
            .set(11, stan.to_string())
            .set(32, SWITCH)
            .set(70, "001");
        m
    }

    /// Sends a request, checks the response is well-formed for the dialect and
    /// the books still add up, and returns the response.
    fn send(bank: &mut Bank, request: &Message) -> Message {
        let response = bank.handle(request, now()).expect("an answer");
        let validation = validate(bank.spec(), &response);
        assert!(
            validation.is_valid(),
            "response {} is not valid: {:?}",
            response.mti_str(),
            validation.violations
        );
        bank.check_invariants();
        response
    }

    fn rc(response: &Message) -> ResponseCode {
        ResponseCode::of(response).unwrap()
    }

    fn key(m: &Message) -> FreezeKey {
        FreezeKey::of_request(m).unwrap()
    }

    #[test]
    fn freeze_places_a_hold_and_answers_0110_with_an_auth_code() {
        let mut bank = bank();
        let f = freeze(&sender(), 30_000, "000001");
        let r = send(&mut bank, &f);
        assert_eq!(r.mti(), b"0110");
        assert_eq!(rc(&r), ResponseCode::APPROVED);
        assert_eq!(r.get_str(38).map(str::len), Some(6));
        for field in [2, 3, 4, 7, 11, 32, 33, 37, 49, 100] {
            assert_eq!(r.get(field), f.get(field), "field {field} echoed");
        }
        assert!(!r.has(15), "only financial responses carry F15");
        let hold = bank.hold(&key(&f)).unwrap();
        assert_eq!(
            (hold.amount_minor, hold.remaining_minor, hold.state),
            (30_000, 30_000, HoldState::Open)
        );
        assert_eq!(bank.balance(&sender()), Some(100_000));
        assert_eq!(bank.held(&sender()), Some(30_000));
    }

    #[test]
    fn freeze_declines_unknown_card_insufficient_funds_and_zero() {
        let mut bank = bank();
        let r = send(&mut bank, &freeze(&card("411111111111111"), 1, "000001"));
        assert_eq!(rc(&r), ResponseCode::INVALID_CARD_NUMBER);
        assert!(!r.has(38), "no auth code on a decline");
        // Holds count against what a new freeze can take.
        assert_eq!(
            rc(&send(&mut bank, &freeze(&sender(), 60_000, "000002"))),
            ResponseCode::APPROVED
        );
        assert_eq!(
            rc(&send(&mut bank, &freeze(&sender(), 40_001, "000003"))),
            ResponseCode::INSUFFICIENT_FUNDS
        );
        assert_eq!(
            rc(&send(&mut bank, &freeze(&sender(), 40_000, "000004"))),
            ResponseCode::APPROVED
        );
        assert_eq!(
            rc(&send(&mut bank, &freeze(&sender(), 0, "000005"))),
            ResponseCode::INVALID_AMOUNT
        );
        assert_eq!(bank.held(&sender()), Some(100_000));
        assert_eq!(bank.balance(&sender()), Some(100_000));
    }

    #[test]
    fn debit_takes_from_the_hold_and_the_balance() {
        let mut bank = bank();
        let f = freeze(&sender(), 30_000, "000001");
        send(&mut bank, &f);
        let d = debit(&sender(), 10_000, "100001", &f);
        let r = send(&mut bank, &d);
        assert_eq!(r.mti(), b"0210");
        assert_eq!(rc(&r), ResponseCode::APPROVED);
        assert_eq!(r.get_str(15), Some("0305"));
        assert_eq!(r.get_str(38).map(str::len), Some(6));
        assert_eq!(r.get(90), d.get(90));
        assert!(!r.has(103), "F103 is not echoed");
        assert_eq!(bank.balance(&sender()), Some(90_000));
        assert_eq!(bank.hold(&key(&f)).unwrap().remaining_minor, 20_000);
        assert_eq!(bank.held(&sender()), Some(20_000));
        // The rest, exactly.
        let r = send(&mut bank, &debit(&sender(), 20_000, "100002", &f));
        assert_eq!(rc(&r), ResponseCode::APPROVED);
        let hold = bank.hold(&key(&f)).unwrap();
        assert_eq!((hold.remaining_minor, hold.state), (0, HoldState::Used));
        assert_eq!(bank.balance(&sender()), Some(70_000));
    }

    #[test]
    fn debit_declines_no_hold_wrong_card_and_beyond_the_hold() {
        let mut bank = bank();
        let f = freeze(&sender(), 30_000, "000001");
        let never_sent = freeze(&sender(), 30_000, "000999");
        send(&mut bank, &f);
        let r = send(&mut bank, &debit(&sender(), 1, "100001", &never_sent));
        assert_eq!(rc(&r), ResponseCode::UNABLE_TO_LOCATE_RECORD);
        assert_eq!(r.get_str(15), Some("0305"), "0210 always carries F15");
        assert!(!r.has(38));
        assert_eq!(
            rc(&send(&mut bank, &debit(&recipient(), 1, "100002", &f))),
            ResponseCode::INVALID_CARD_NUMBER
        );
        assert_eq!(
            rc(&send(&mut bank, &debit(&sender(), 30_001, "100003", &f))),
            ResponseCode::EXCEEDS_AMOUNT_LIMIT
        );
        assert_eq!(
            rc(&send(&mut bank, &debit(&sender(), 0, "100004", &f))),
            ResponseCode::INVALID_AMOUNT
        );
        assert_eq!(bank.balance(&sender()), Some(100_000));
        assert_eq!(bank.hold(&key(&f)).unwrap().remaining_minor, 30_000);
    }

    #[test]
    fn credit_adds_to_a_known_card_only() {
        let mut bank = bank();
        let r = send(&mut bank, &credit(&recipient(), 2_500, "200001"));
        assert_eq!((r.mti(), rc(&r)), (b"0210", ResponseCode::APPROVED));
        assert_eq!(r.get_str(15), Some("0305"));
        assert!(r.has(38));
        assert_eq!(bank.balance(&recipient()), Some(7_500));
        let r = send(
            &mut bank,
            &credit(&card("411111111111111"), 2_500, "200002"),
        );
        assert_eq!(rc(&r), ResponseCode::INVALID_CARD_NUMBER);
        assert_eq!(bank.total_balance_minor(), 107_500);
    }

    #[test]
    fn unfreeze_releases_at_most_what_remains_and_may_come_in_parts() {
        let mut bank = bank();
        let f = freeze(&sender(), 30_000, "000001");
        send(&mut bank, &f);
        send(&mut bank, &debit(&sender(), 5_000, "100001", &f));
        // A partial release: the hold stays usable.
        let r = send(&mut bank, &unfreeze(&sender(), 10_000, "300001", &f));
        assert_eq!((r.mti(), rc(&r)), (b"0130", ResponseCode::APPROVED));
        assert!(!r.has(38) && !r.has(15));
        let hold = bank.hold(&key(&f)).unwrap();
        assert_eq!(
            (hold.remaining_minor, hold.state),
            (15_000, HoldState::Open)
        );
        assert_eq!(
            rc(&send(&mut bank, &debit(&sender(), 5_000, "100002", &f))),
            ResponseCode::APPROVED
        );
        // More than remains: releases the rest.
        let r = send(&mut bank, &unfreeze(&sender(), 99_999, "300002", &f));
        assert_eq!(rc(&r), ResponseCode::APPROVED);
        let hold = bank.hold(&key(&f)).unwrap();
        assert_eq!((hold.remaining_minor, hold.state), (0, HoldState::Released));
        assert_eq!(bank.held(&sender()), Some(0));
        assert_eq!(bank.balance(&sender()), Some(90_000));
        assert_eq!(
            rc(&send(&mut bank, &debit(&sender(), 1, "100003", &f))),
            ResponseCode::EXCEEDS_AMOUNT_LIMIT
        );
        let never_sent = freeze(&sender(), 1, "000999");
        assert_eq!(
            rc(&send(
                &mut bank,
                &unfreeze(&sender(), 1, "300003", &never_sent)
            )),
            ResponseCode::UNABLE_TO_LOCATE_RECORD
        );
        assert_eq!(
            rc(&send(&mut bank, &unfreeze(&recipient(), 1, "300004", &f))),
            ResponseCode::INVALID_CARD_NUMBER
        );
        let journal = bank.journal();
        let released: Vec<u64> = journal
            .iter()
            .filter(|m| m.kind == MovementKind::Unfreeze)
            .map(|m| m.applied_minor)
            .collect();
        assert_eq!(released, vec![10_000, 10_000, 0, 0]);
    }

    #[test]
    fn exact_resend_gets_the_same_answer_without_moving_money() {
        let mut bank = bank();
        let f = freeze(&sender(), 30_000, "000001");
        let first = send(&mut bank, &f);
        let again = send(&mut bank, &f);
        assert_eq!(first, again, "same auth code too");
        assert_eq!(bank.held(&sender()), Some(30_000));

        let d = debit(&sender(), 10_000, "100001", &f);
        let first = send(&mut bank, &d);
        assert_eq!(send(&mut bank, &d), first);
        assert_eq!(bank.balance(&sender()), Some(90_000));

        // A declined request is answered the same way again too.
        let over = debit(&sender(), 99_000, "100002", &f);
        assert_eq!(
            rc(&send(&mut bank, &over)),
            ResponseCode::EXCEEDS_AMOUNT_LIMIT
        );
        assert_eq!(
            rc(&send(&mut bank, &over)),
            ResponseCode::EXCEEDS_AMOUNT_LIMIT
        );

        // 0121 repeats 0120: same answer, released once.
        let u = unfreeze(&sender(), 5_000, "300001", &f);
        let first = send(&mut bank, &u);
        let mut repeat = u.clone();
        repeat.set_mti(*b"0121");
        assert_eq!(send(&mut bank, &repeat), first);
        assert_eq!(bank.hold(&key(&f)).unwrap().remaining_minor, 15_000);
        assert_eq!(bank.journal().len(), 4, "resends are not journaled");
    }

    #[test]
    fn same_key_with_other_content_is_a_duplicate_94() {
        let mut bank = bank();
        let f = freeze(&sender(), 30_000, "000001");
        send(&mut bank, &f);
        let mut other = f.clone();
        other.set(4, amount(30_001));
        let r = send(&mut bank, &other);
        assert_eq!(
            (r.mti(), rc(&r)),
            (b"0110", ResponseCode::DUPLICATE_TRANSMISSION)
        );
        assert_eq!(r.get(4), other.get(4), "a 94 echoes its own request");
        assert_eq!(bank.held(&sender()), Some(30_000));

        // A credit that reuses a debit's key (F32, F7, F11 of MTI 0200).
        let d = debit(&sender(), 1_000, "100001", &f);
        send(&mut bank, &d);
        let mut c = credit(&recipient(), 1_000, "100001");
        c.set(7, d.get(7).unwrap().clone());
        assert_eq!(
            rc(&send(&mut bank, &c)),
            ResponseCode::DUPLICATE_TRANSMISSION
        );
        assert_eq!(bank.balance(&recipient()), Some(5_000));
        // The original is still answered as it was.
        assert_eq!(rc(&send(&mut bank, &f)), ResponseCode::APPROVED);
    }

    #[test]
    fn reversal_of_a_debit_restores_balance_and_hold_once() {
        let mut bank = bank();
        let f = freeze(&sender(), 30_000, "000001");
        send(&mut bank, &f);
        let d = debit(&sender(), 30_000, "100001", &f);
        send(&mut bank, &d);
        assert_eq!(bank.hold(&key(&f)).unwrap().state, HoldState::Used);
        let rev = reversal(&d, "400001");
        let r = send(&mut bank, &rev);
        assert_eq!((r.mti(), rc(&r)), (b"0430", ResponseCode::APPROVED));
        assert!(!r.has(38));
        assert_eq!(bank.balance(&sender()), Some(100_000));
        let hold = bank.hold(&key(&f)).unwrap();
        assert_eq!(
            (hold.remaining_minor, hold.state),
            (30_000, HoldState::Open)
        );

        // The 0421 repeat and a new reversal of the same debit move nothing.
        let mut repeat = rev.clone();
        repeat.set_mti(*b"0421");
        assert_eq!(send(&mut bank, &repeat), r);
        let again = reversal(&d, "400002");
        assert_eq!(rc(&send(&mut bank, &again)), ResponseCode::APPROVED);
        assert_eq!(bank.balance(&sender()), Some(100_000));
        assert_eq!(bank.hold(&key(&f)).unwrap().remaining_minor, 30_000);

        // The hold is usable again.
        assert_eq!(
            rc(&send(&mut bank, &debit(&sender(), 30_000, "100002", &f))),
            ResponseCode::APPROVED
        );
        assert_eq!(bank.balance(&sender()), Some(70_000));
    }

    #[test]
    fn reversal_of_a_debit_after_the_hold_was_released_restores_the_balance_only() {
        let mut bank = bank();
        let f = freeze(&sender(), 30_000, "000001");
        send(&mut bank, &f);
        let d = debit(&sender(), 10_000, "100001", &f);
        send(&mut bank, &d);
        send(&mut bank, &unfreeze(&sender(), 20_000, "300001", &f));
        assert_eq!(
            rc(&send(&mut bank, &reversal(&d, "400001"))),
            ResponseCode::APPROVED
        );
        let hold = bank.hold(&key(&f)).unwrap();
        assert_eq!((hold.remaining_minor, hold.state), (0, HoldState::Released));
        assert_eq!(bank.balance(&sender()), Some(100_000));
        assert_eq!(bank.held(&sender()), Some(0));
    }

    #[test]
    fn reversal_of_a_credit_takes_it_back_once() {
        let mut bank = bank();
        let c = credit(&recipient(), 2_000, "200001");
        send(&mut bank, &c);
        assert_eq!(bank.balance(&recipient()), Some(7_000));
        let r = send(&mut bank, &reversal(&c, "400001"));
        assert_eq!(rc(&r), ResponseCode::APPROVED);
        assert_eq!(bank.balance(&recipient()), Some(5_000));
        assert_eq!(
            rc(&send(&mut bank, &reversal(&c, "400002"))),
            ResponseCode::APPROVED
        );
        assert_eq!(bank.balance(&recipient()), Some(5_000));
    }

    #[test]
    fn reversal_of_a_freeze_releases_the_hold_once() {
        let mut bank = bank();
        let f = freeze(&sender(), 30_000, "000001");
        send(&mut bank, &f);
        send(&mut bank, &debit(&sender(), 10_000, "100001", &f));
        let mut rev = reversal(&f, "400001");
        rev.set(25, "06");
        assert_eq!(rc(&send(&mut bank, &rev)), ResponseCode::APPROVED);
        let hold = bank.hold(&key(&f)).unwrap();
        assert_eq!((hold.remaining_minor, hold.state), (0, HoldState::Released));
        assert_eq!(bank.held(&sender()), Some(0));
        assert_eq!(bank.balance(&sender()), Some(90_000), "the debit stands");
        assert_eq!(
            rc(&send(&mut bank, &reversal(&f, "400002"))),
            ResponseCode::APPROVED
        );
        assert_eq!(bank.held(&sender()), Some(0));
    }

    #[test]
    fn reversal_edge_cases() {
        let mut bank = bank();
        // Nothing known by that name.
        let never_sent = credit(&recipient(), 1, "299999");
        let r = send(&mut bank, &reversal(&never_sent, "400001"));
        assert_eq!(
            (r.mti(), rc(&r)),
            (b"0430", ResponseCode::UNABLE_TO_LOCATE_RECORD)
        );
        // A declined original moved nothing: 00, nothing to undo.
        let declined = credit(&card("411111111111111"), 1_000, "200001");
        assert_eq!(
            rc(&send(&mut bank, &declined)),
            ResponseCode::INVALID_CARD_NUMBER
        );
        assert_eq!(
            rc(&send(&mut bank, &reversal(&declined, "400002"))),
            ResponseCode::APPROVED
        );
        // Another amount than the original's.
        let c = credit(&recipient(), 1_000, "200002");
        send(&mut bank, &c);
        let mut wrong = reversal(&c, "400003");
        wrong.set(4, amount(999));
        assert_eq!(rc(&send(&mut bank, &wrong)), ResponseCode::INVALID_AMOUNT);
        assert_eq!(bank.balance(&recipient()), Some(6_000));
        // An unfreeze cannot be reversed.
        let f = freeze(&sender(), 1_000, "000001");
        send(&mut bank, &f);
        let u = unfreeze(&sender(), 1_000, "300001", &f);
        send(&mut bank, &u);
        let mut rev = reversal(&u, "400004");
        rev.set(3, "200000");
        assert_eq!(
            rc(&send(&mut bank, &rev)),
            ResponseCode::INVALID_TRANSACTION
        );
        assert_eq!(bank.total_balance_minor(), 106_000);
    }

    #[test]
    fn network_management_is_answered_with_its_own_fields() {
        let mut bank = bank();
        let r = send(&mut bank, &sign_on("000007"));
        assert_eq!((r.mti(), rc(&r)), (b"0810", ResponseCode::APPROVED));
        let fields: Vec<u16> = r.fields().map(|(n, _)| n).collect();
        assert_eq!(fields, vec![7, 11, 32, 39, 70]);
        let mut odd = sign_on("000008");
        odd.set(70, "999");
        assert_eq!(
            rc(&bank.handle(&odd, now()).unwrap()),
            ResponseCode::INVALID_TRANSACTION
        );
    }

    #[test]
    fn unknown_malformed_and_response_messages() {
        let mut bank = bank();
        // A receive is for the switch, not for a bank.
        let mut receive = credit(&recipient(), 1, "500001");
        receive.set(3, "400000");
        let r = bank.handle(&receive, now()).unwrap();
        assert_eq!(
            (r.mti(), rc(&r)),
            (b"0210", ResponseCode::INVALID_TRANSACTION)
        );
        let mut odd = credit(&recipient(), 1, "500002");
        odd.set(3, "999999");
        assert_eq!(
            rc(&bank.handle(&odd, now()).unwrap()),
            ResponseCode::INVALID_TRANSACTION
        );
        let mut odd_mti = sign_on("500003");
        odd_mti.set_mti(*b"0600");
        let r = bank.handle(&odd_mti, now()).unwrap();
        assert_eq!(
            (r.mti(), rc(&r)),
            (b"0610", ResponseCode::INVALID_TRANSACTION)
        );
        // A mandatory field missing.
        let mut missing = credit(&recipient(), 1, "500004");
        missing.remove(102);
        assert_eq!(
            rc(&bank.handle(&missing, now()).unwrap()),
            ResponseCode::FORMAT_ERROR
        );
        // A letter in a numeric field: not echoed, so the answer can be built.
        let mut bad = credit(&recipient(), 1, "500005");
        bad.set(4, "00000000000x");
        let r = bank.handle(&bad, now()).unwrap();
        assert_eq!(rc(&r), ResponseCode::FORMAT_ERROR);
        assert!(!r.has(4));
        assert!(iso8583::codec::build_bytes(bank.spec(), &r).is_ok());
        // Luhn alone is 14.
        let mut luhn = credit(&recipient(), 1, "500006");
        let mut pan = recipient().into_bytes();
        let last = pan.len() - 1;
        pan[last] = if pan[last] == b'9' {
            b'0'
        } else {
            pan[last] + 1
        };
        luhn.set(2, pan);
        assert_eq!(
            rc(&bank.handle(&luhn, now()).unwrap()),
            ResponseCode::INVALID_CARD_NUMBER
        );
        // Responses get no answer.
        let resp = send(&mut bank, &sign_on("500007"));
        assert!(bank.handle(&resp, now()).is_none());
        assert_eq!(bank.total_balance_minor(), 105_000);
        assert!(bank.journal().is_empty(), "rejected messages move nothing");
    }

    #[test]
    fn undecodable_frames_get_30_when_the_mti_is_readable() {
        let r = reject_undecodable(b"0200\xff\xff").unwrap();
        assert_eq!((r.mti(), rc(&r)), (b"0210", ResponseCode::FORMAT_ERROR));
        assert_eq!(reject_undecodable(b"0421").unwrap().mti(), b"0430");
        assert!(reject_undecodable(b"0210....").is_none());
        assert!(reject_undecodable(b"02").is_none());
        assert!(reject_undecodable(b"ab00").is_none());
    }

    #[test]
    fn generated_accounts_are_deterministic_luhn_valid_cards_on_the_bin() {
        let a = Bank::generate(BANK, "622202", 200, 100_000, 1);
        let b = Bank::generate(BANK, "622202", 200, 100_000, 1);
        let c = Bank::generate(BANK, "622202", 200, 100_000, 2);
        assert_eq!(a.accounts(), b.accounts());
        assert_ne!(a.accounts(), c.accounts());
        let accounts = a.accounts();
        assert_eq!(accounts.len(), 200);
        let mut lengths = std::collections::BTreeSet::new();
        for (pan, balance) in &accounts {
            assert!(pan.starts_with("622202"));
            assert!(luhn_valid(pan.as_bytes()), "{pan}");
            lengths.insert(pan.len());
            assert_eq!(*balance, 100_000);
        }
        assert_eq!(lengths, [16, 19].into_iter().collect());
        assert_eq!(a.total_balance_minor(), 20_000_000);
    }

    #[test]
    fn journal_masks_cards_and_snapshot_is_json() {
        let mut bank = bank();
        let f = freeze(&sender(), 30_000, "000001");
        send(&mut bank, &f);
        send(&mut bank, &debit(&sender(), 10_000, "100001", &f));
        send(&mut bank, &credit(&recipient(), 10_000, "200001"));
        let journal = bank.journal();
        let kinds: Vec<MovementKind> = journal.iter().map(|m| m.kind).collect();
        assert_eq!(
            kinds,
            vec![
                MovementKind::Freeze,
                MovementKind::Debit,
                MovementKind::Credit
            ]
        );
        assert_eq!(journal[1].hold.as_deref(), Some(&*key(&f).to_string()));
        assert_eq!(journal[1].request, "0200/00000010000/0305094500/100001");
        let text = serde_json::to_string(journal).unwrap();
        assert!(!text.contains(&sender()) && !text.contains(&recipient()));
        assert!(text.contains(&mask_pan(&sender())));

        let ledger = bank.snapshot();
        assert_eq!(ledger.institution, "00001020000");
        assert_eq!(ledger.total_balance_minor, 105_000);
        assert_eq!(ledger.total_held_minor, 20_000);
        let account = ledger.account(&sender()).unwrap();
        assert_eq!(
            (
                account.balance_minor,
                account.held_minor,
                account.available_minor
            ),
            (90_000, 20_000, 70_000)
        );
        let json = serde_json::to_string(&ledger).unwrap();
        let back: Ledger = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ledger);
        assert_eq!(back.hold(&key(&f)).unwrap().remaining_minor, 20_000);
        assert!(!format!("{bank:?}").contains(&sender()));
    }
}

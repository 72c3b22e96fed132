//! The switch's durable state behind one trait: freezes, receive sagas, the
//! answers given (for idempotent resends), STAN allocation, and a journal of
//! every message in and out.
//!
//! Every method that changes money state is one atomic transaction in the
//! store, and returns only once it is durable: the switch never answers a
//! wallet before the state behind the answer is committed. Implementations
//! batch concurrent calls into shared commits (group commit).
//!
//! Only `store::sqlite` knows about SQLite.

pub mod memory;
pub mod postgres;
pub mod sqlite;

use async_trait::async_trait;
use bytes::Bytes;

use crate::dialect::{FreezeKey, InstitutionId};

/// Identifies one request of a wallet for idempotency: the request MTI with the
/// repeat bit cleared (0121 → 0120), F32, F7 and F11.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct RequestKey {
    pub mti: [u8; 4],
    pub acquirer: InstitutionId,
    pub transmission: [u8; 10],
    pub stan: [u8; 6],
}

impl std::fmt::Display for RequestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}",
            std::str::from_utf8(&self.mti).unwrap_or("?"),
            self.acquirer,
            std::str::from_utf8(&self.transmission).unwrap_or("?"),
            std::str::from_utf8(&self.stan).unwrap_or("?")
        )
    }
}

/// The answer given to a request, kept so that an exact resend gets it again and a
/// resend with other content gets 94.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct StoredAnswer {
    /// Digest of the request's content (every field but the MTI's repeat bit).
    pub request_digest: [u8; 32],
    /// The response message exactly as sent (codec bytes, without framing).
    pub response: Bytes,
}

/// Life of a freeze at the switch.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FreezeState {
    /// Forwarded to the payer bank, no answer yet.
    Pending,
    /// Approved by the payer bank: receives may draw on it.
    Open,
    /// Declined by the payer bank (or it never answered): nothing to draw on.
    Declined,
    /// Unfrozen: no new receives.
    Closed,
}

impl FreezeState {
    pub fn as_str(self) -> &'static str {
        match self {
            FreezeState::Pending => "pending",
            FreezeState::Open => "open",
            FreezeState::Declined => "declined",
            FreezeState::Closed => "closed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => FreezeState::Pending,
            "open" => FreezeState::Open,
            "declined" => FreezeState::Declined,
            "closed" => FreezeState::Closed,
            _ => return None,
        })
    }
}

/// A freeze as the switch records it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct FreezeRecord {
    pub key: FreezeKey,
    /// The sender's card (full PAN: the debit needs it; never logged).
    pub payer_pan: String,
    /// The payer bank's institution id.
    pub payer_bank: String,
    pub amount_minor: u64,
    pub currency: u16,
    /// Σ of approved receives.
    pub received_minor: u64,
    /// Σ of receives in flight (reserved, not yet approved or released).
    pub reserved_minor: u64,
    pub state: FreezeState,
    /// Unix milliseconds of the switch's clock when the freeze arrived.
    pub created_at_ms: i64,
}

impl FreezeRecord {
    /// What may still be received: frozen − received − reserved.
    pub fn available_minor(&self) -> u64 {
        self.amount_minor
            .saturating_sub(self.received_minor)
            .saturating_sub(self.reserved_minor)
    }
}

/// A new freeze, recorded when the wallet's 0100 is forwarded.
#[derive(Clone, Debug)]
pub struct NewFreeze {
    pub key: FreezeKey,
    /// The switch instance that forwards it (see [`Lease`]).
    pub owner: String,
    pub request: RequestKey,
    pub request_digest: [u8; 32],
    pub payer_pan: String,
    pub payer_bank: String,
    pub amount_minor: u64,
    pub currency: u16,
    pub created_at_ms: i64,
}

/// Result of [`Store::insert_freeze`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InsertFreeze {
    Inserted,
    /// A freeze with this key exists already (a resend, or a clash: compare digests).
    Exists {
        request_digest: [u8; 32],
        answer: Option<StoredAnswer>,
    },
}

/// Steps of a receive saga, in order. Each is recorded before the message it
/// announces is sent, so recovery knows what may be in flight.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SagaState {
    /// Amount reserved on the freeze; nothing sent yet.
    Reserved,
    /// Debit sent to the payer bank.
    Debiting,
    /// Debit approved; credit sent to the receiver bank.
    Crediting,
    /// Credit declined; reversal of the debit sent to the payer bank.
    ReversingDebit,
    /// Done: debit and credit approved, amount counted as received.
    Approved,
    /// Done: nothing moved (or everything reversed), reservation released.
    Failed,
    /// A bank did not answer in time: the reservation is kept until recovery
    /// resolves what happened.
    InDoubt,
}

impl SagaState {
    pub fn as_str(self) -> &'static str {
        match self {
            SagaState::Reserved => "reserved",
            SagaState::Debiting => "debiting",
            SagaState::Crediting => "crediting",
            SagaState::ReversingDebit => "reversing_debit",
            SagaState::Approved => "approved",
            SagaState::Failed => "failed",
            SagaState::InDoubt => "in_doubt",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "reserved" => SagaState::Reserved,
            "debiting" => SagaState::Debiting,
            "crediting" => SagaState::Crediting,
            "reversing_debit" => SagaState::ReversingDebit,
            "approved" => SagaState::Approved,
            "failed" => SagaState::Failed,
            "in_doubt" => SagaState::InDoubt,
            _ => return None,
        })
    }

    /// Whether the saga is finished and its reservation settled.
    pub fn is_final(self) -> bool {
        matches!(self, SagaState::Approved | SagaState::Failed)
    }
}

/// The switch's own message of a saga step (debit, credit or reversal): what it
/// needs to name it later in field 90.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SentMessage {
    pub stan: [u8; 6],
    pub transmission: [u8; 10],
}

/// A receive saga as recorded.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SagaRecord {
    pub request: RequestKey,
    pub freeze: FreezeKey,
    pub amount_minor: u64,
    pub receiver_pan: String,
    pub receiver_bank: String,
    pub state: SagaState,
    pub debit: Option<SentMessage>,
    pub credit: Option<SentMessage>,
    pub reversal: Option<SentMessage>,
    /// Response code given to the wallet, once answered.
    pub response_code: Option<String>,
    pub created_at_ms: i64,
}

/// A receive to reserve for.
#[derive(Clone, Debug)]
pub struct NewReceive {
    /// The debit's and the credit's identities, allocated before the
    /// reservation: the saga is then recorded directly in state `Debiting`, so
    /// recovery can reverse either message whatever a crash interrupted,
    /// without a further commit before each send.
    pub debit: Option<SentMessage>,
    pub credit: Option<SentMessage>,
    /// The switch instance that runs the saga (see [`Lease`]).
    pub owner: String,
    pub request: RequestKey,
    pub request_digest: [u8; 32],
    pub freeze: FreezeKey,
    pub amount_minor: u64,
    pub receiver_pan: String,
    pub receiver_bank: String,
    pub created_at_ms: i64,
}

/// Result of [`Store::reserve`], decided atomically against the freeze.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reserve {
    /// Reserved: the freeze as it is after the reservation.
    Reserved(FreezeRecord),
    /// No freeze with that key (25).
    NotFound,
    /// The freeze is pending, declined or closed (12).
    NotOpen(FreezeState),
    /// Σ received + reserved + this would pass the frozen amount (61).
    Exceeds { available_minor: u64 },
    /// A saga with this request key exists (a resend, or a clash: compare digests).
    Duplicate {
        request_digest: [u8; 32],
        answer: Option<StoredAnswer>,
    },
}

/// How a saga ends.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ReceiveOutcome {
    /// Reserved amount becomes received.
    Approved,
    /// Reserved amount is released.
    Failed,
    /// The reservation stays; recovery decides later.
    InDoubt,
}

/// Result of [`Store::close_freeze`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Close {
    /// Closed now; the record as it is after closing.
    Closed(FreezeRecord),
    NotFound,
    /// Pending, declined or already closed (12).
    NotOpen(FreezeState),
    /// F4 is not what remains (13).
    AmountMismatch {
        remaining_minor: u64,
    },
}

/// How a call that ends a freeze or a saga went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settled {
    /// Ended by this call, as asked.
    Now,
    /// Ended before, by someone else (recovery of an instance whose lease
    /// expired, or a second finish): nothing changed, nothing was queued.
    /// The caller answers with what was recorded then, never with its own
    /// outcome: the money may have been reversed.
    Before { answer: Option<StoredAnswer> },
}

/// A switch instance's claim on the work it owns in a store shared by several
/// instances. While the lease runs no other instance touches that work; once
/// it has expired (the instance died, or lost the store for longer than the
/// lease), any instance may recover it by the crash-recovery rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub instance: String,
    pub duration_ms: i64,
    /// Everything the instance has not finished was created at or after this
    /// (its own clock): recovery reads the dead instance's work from here
    /// rather than scanning every freeze and saga it ever handled.
    pub unfinished_since_ms: i64,
}

/// A lease that ran out: its instance's unfinished work is up for recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpiredLease {
    pub instance: String,
    pub unfinished_since_ms: i64,
}

/// The unfinished work of one instance: freezes still pending, sagas not
/// ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unfinished {
    pub freezes: Vec<FreezeRecord>,
    pub sagas: Vec<SagaRecord>,
}

/// What a store-and-forward entry carries.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SafKind {
    /// A reversal (0420, repeated as 0421).
    Reversal,
    /// An unfreeze notice to the payer bank (0120, repeated as 0121).
    Unfreeze,
}

impl SafKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SafKind::Reversal => "reversal",
            SafKind::Unfreeze => "unfreeze",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "reversal" => Some(SafKind::Reversal),
            "unfreeze" => Some(SafKind::Unfreeze),
            _ => None,
        }
    }
}

/// A message that must reach a bank, queued durably until it is acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewSafEntry {
    /// Institution id of the bank to deliver to.
    pub bank: String,
    /// Entries with the same ordering key are delivered one at a time, oldest
    /// first: a reversal or unfreeze never overtakes what it follows. The
    /// switch uses the freeze key.
    pub order_key: String,
    pub kind: SafKind,
    /// The request as first sent (codec bytes, MTI 0420 or 0120); repeats
    /// change only the MTI.
    pub message: Bytes,
    pub created_at_ms: i64,
}

/// Where a store-and-forward entry stands.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SafState {
    Pending,
    /// Acknowledged with a code that ends retries.
    Done,
    /// Given up on (too many attempts, too old, no such bank): needs a person.
    Dead,
}

impl SafState {
    pub fn as_str(self) -> &'static str {
        match self {
            SafState::Pending => "pending",
            SafState::Done => "done",
            SafState::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(SafState::Pending),
            "done" => Some(SafState::Done),
            "dead" => Some(SafState::Dead),
            _ => None,
        }
    }
}

/// A queued entry as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SafEntry {
    pub id: i64,
    pub entry: NewSafEntry,
    pub state: SafState,
    pub attempts: u32,
    pub next_attempt_ms: i64,
    /// The last response code or error, for people.
    pub last_result: Option<String>,
}

/// How one delivery attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SafOutcome {
    Done {
        result: String,
    },
    Retry {
        next_attempt_ms: i64,
        result: String,
    },
    Dead {
        result: String,
    },
}

/// What a saga's end queues with it, in the same transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FollowUp {
    /// Always queued (reversals).
    pub saf: Vec<NewSafEntry>,
    /// Queued only if the freeze is closed when a failed receive ends: its
    /// amount is still held at the payer bank and must be released too.
    pub unfreeze_if_closed: Option<NewSafEntry>,
}

impl FollowUp {
    pub fn is_empty(&self) -> bool {
        self.saf.is_empty() && self.unfreeze_if_closed.is_none()
    }
}

/// Direction of a journaled message.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Direction {
    In,
    Out,
}

/// One message in or out, as journaled. `raw` keeps the bytes; the summary
/// columns are masked.
#[derive(Clone, Debug)]
pub struct JournalEntry {
    pub at_ms: i64,
    pub direction: Direction,
    /// Who sent or received it: "wallet 127.0.0.1:5000", "bank 48020000".
    pub peer: String,
    pub mti: [u8; 4],
    /// F3, F11, F7, F32, F39 as text where present (none of them card data).
    pub processing_code: Option<String>,
    pub stan: Option<String>,
    pub transmission: Option<String>,
    pub acquirer: Option<String>,
    pub response_code: Option<String>,
    /// F2 masked to first 6 / last 4.
    pub pan_masked: Option<String>,
    pub amount_minor: Option<u64>,
    /// Why it is notable, e.g. "unmatched response".
    pub note: Option<String>,
    pub raw: Bytes,
}

/// Store failures: the switch answers 96 and keeps state consistent.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store data corrupt: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// What the switch needs from durable storage.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The answer recorded for a request, if any.
    async fn answer(&self, request: &RequestKey) -> StoreResult<Option<StoredAnswer>>;

    /// Records the answer to a request that changed nothing (a rejection such as
    /// 25, 30, 61), so an exact resend gets the same answer. Keeps the first answer
    /// if one exists.
    async fn record_answer(&self, request: &RequestKey, answer: StoredAnswer) -> StoreResult<()>;

    /// Appends to the journal without waiting: entries are written with the next
    /// commit, in the order given.
    fn journal(&self, entry: JournalEntry);

    /// Records a freeze in state `Pending` unless its key exists or the request
    /// was answered already.
    async fn insert_freeze(&self, freeze: NewFreeze) -> StoreResult<InsertFreeze>;

    /// Records the payer bank's answer: `Open` when approved, else `Declined`; and
    /// the answer given to the wallet. Finishing again the same way changes
    /// nothing; a freeze that ended otherwise is an error.
    async fn finish_freeze(
        &self,
        key: &FreezeKey,
        approved: bool,
        request: &RequestKey,
        answer: StoredAnswer,
    ) -> StoreResult<()> {
        let target = if approved {
            FreezeState::Open
        } else {
            FreezeState::Declined
        };
        match self
            .finish_freeze_queueing(key, approved, request, answer, None)
            .await?
        {
            Settled::Now => Ok(()),
            Settled::Before { .. } => match self.freeze(key).await? {
                Some(f) if f.state == target => Ok(()), // recorded already
                Some(f) => Err(StoreError::Unavailable(format!(
                    "invalid request to the store: finish_freeze: freeze {key} is {}, cannot become {}",
                    f.state.as_str(),
                    target.as_str()
                ))),
                None => Err(StoreError::Unavailable(format!(
                    "invalid request to the store: finish_freeze: no freeze {key}"
                ))),
            },
        }
    }

    async fn freeze(&self, key: &FreezeKey) -> StoreResult<Option<FreezeRecord>>;

    /// Atomically: the request was never answered and its saga key is new, the
    /// freeze exists and is open, and received + reserved + amount ≤ frozen;
    /// then reserves the amount and records the saga in state `Reserved` (or
    /// `Debiting`, with the debit's and credit's identities, when given).
    async fn reserve(&self, receive: NewReceive) -> StoreResult<Reserve>;

    /// Records the next step of a saga and the message it is about to send.
    async fn saga_step(
        &self,
        request: &RequestKey,
        state: SagaState,
        sent: Option<SentMessage>,
    ) -> StoreResult<()>;

    /// Ends a saga: settles its reservation on the freeze (approved → received,
    /// failed → released, in doubt → kept) and records the answer to the wallet.
    async fn finish_receive(
        &self,
        request: &RequestKey,
        outcome: ReceiveOutcome,
        answer: StoredAnswer,
    ) -> StoreResult<()>;

    /// Like [`Store::finish_receive`], and in the same transaction queues the
    /// follow-up messages (reversals; an unfreeze of the amount when a failed
    /// receive finds its freeze closed). A saga ended before is left as it is
    /// and reported with its recorded answer ([`Settled::Before`]).
    async fn settle_receive(
        &self,
        request: &RequestKey,
        outcome: ReceiveOutcome,
        answer: StoredAnswer,
        follow_up: FollowUp,
    ) -> StoreResult<Settled> {
        if follow_up.is_empty() {
            self.finish_receive(request, outcome, answer).await?;
            Ok(Settled::Now)
        } else {
            Err(StoreError::Unavailable(
                "this store cannot queue follow-up messages".into(),
            ))
        }
    }

    /// Like [`Store::finish_freeze`], and in the same transaction queues `saf`
    /// (the reversal of a freeze the bank never answered). A freeze no longer
    /// pending is left as it is and reported with the answer recorded for the
    /// request ([`Settled::Before`]).
    async fn finish_freeze_queueing(
        &self,
        key: &FreezeKey,
        approved: bool,
        request: &RequestKey,
        answer: StoredAnswer,
        saf: Option<NewSafEntry>,
    ) -> StoreResult<Settled>;

    /// Like [`Store::close_freeze`], and when it closes, queues `notice` (the
    /// unfreeze forwarded to the payer bank) in the same transaction.
    async fn close_freeze_queueing(
        &self,
        key: &FreezeKey,
        amount_minor: u64,
        request: &RequestKey,
        answer: StoredAnswer,
        notice: NewSafEntry,
    ) -> StoreResult<Close> {
        let _ = (key, amount_minor, request, answer, notice);
        Err(StoreError::Unavailable(
            "this store cannot queue follow-up messages".into(),
        ))
    }

    /// Pending entries due at `now_ms`, at most one per ordering key (its
    /// oldest), oldest first. A store shared by several instances hands each
    /// entry to one caller: it is not due again for `hold_ms` unless its
    /// attempt is settled sooner (so two instances never deliver it at once,
    /// and a caller that dies mid-attempt delays it by `hold_ms` at most).
    async fn saf_due(&self, now_ms: i64, limit: usize, hold_ms: i64) -> StoreResult<Vec<SafEntry>> {
        let _ = (now_ms, limit, hold_ms);
        Ok(Vec::new())
    }

    /// Records how a delivery attempt ended.
    async fn saf_settle(&self, id: i64, outcome: SafOutcome) -> StoreResult<()> {
        let _ = (id, outcome);
        Err(StoreError::Unavailable(
            "this store has no SAF queue".into(),
        ))
    }

    /// Every entry, in queue order (for `switchboard saf list`).
    async fn saf_entries(&self) -> StoreResult<Vec<SafEntry>> {
        Ok(Vec::new())
    }

    async fn saga(&self, request: &RequestKey) -> StoreResult<Option<SagaRecord>>;

    /// Atomically: the freeze is open and `amount_minor` equals what remains
    /// (frozen − received − reserved); then closes it and records the answer.
    async fn close_freeze(
        &self,
        key: &FreezeKey,
        amount_minor: u64,
        request: &RequestKey,
        answer: StoredAnswer,
    ) -> StoreResult<Close>;

    /// Allocates `count` consecutive STANs (1..=999999, wrapping) that no other
    /// user of this store gets; returns the first.
    async fn allocate_stans(&self, count: u32) -> StoreResult<u32>;

    /// Every freeze (for inspection, tests, the demo).
    async fn freezes(&self) -> StoreResult<Vec<FreezeRecord>>;

    /// Open freezes with `from_ms <= created_at_ms < before_ms`, oldest first,
    /// at most `limit` (the expiry sweep pages through them). Read by index:
    /// closed freezes, however many, are not visited.
    async fn open_freezes_created(
        &self,
        from_ms: i64,
        before_ms: i64,
        limit: usize,
    ) -> StoreResult<Vec<FreezeRecord>> {
        let mut open: Vec<FreezeRecord> = self
            .freezes()
            .await?
            .into_iter()
            .filter(|f| {
                f.state == FreezeState::Open && (from_ms..before_ms).contains(&f.created_at_ms)
            })
            .collect();
        open.sort_by_key(|f| f.created_at_ms);
        open.truncate(limit);
        Ok(open)
    }

    /// Every saga (for inspection, tests, the demo).
    async fn sagas(&self) -> StoreResult<Vec<SagaRecord>>;

    /// Records that `lease.instance` is alive until `duration_ms` from now, and
    /// from when its unfinished work dates. Stores used by one instance only
    /// (the embedded store) keep no leases. A shared store measures leases by
    /// its own clock, so instances whose clocks differ still agree; the others
    /// by `now_ms`.
    async fn renew_lease(&self, lease: &Lease, now_ms: i64) -> StoreResult<()> {
        let _ = (lease, now_ms);
        Ok(())
    }

    /// Leases that ran out more than `grace_ms` ago and have not been
    /// dropped. The grace lets whatever the dead instance sent just before
    /// its lease ended reach the bank before any reversal of it does.
    async fn expired_leases(&self, now_ms: i64, grace_ms: i64) -> StoreResult<Vec<ExpiredLease>> {
        let _ = (now_ms, grace_ms);
        Ok(Vec::new())
    }

    /// Drops an instance's lease once its work is recovered, if it is still
    /// expired (an instance that came back renewed it and keeps it).
    async fn drop_lease(&self, instance: &str, now_ms: i64) -> StoreResult<()> {
        let _ = (instance, now_ms);
        Ok(())
    }

    /// Freezes still pending and sagas not ended that `owner` started at or
    /// after `since_ms`.
    async fn unfinished_of(&self, owner: &str, since_ms: i64) -> StoreResult<Unfinished> {
        let _ = (owner, since_ms);
        Err(StoreError::Unavailable(
            "this store keeps no owners: it is not shared".into(),
        ))
    }

    /// Number of journal entries written (committed).
    async fn journal_len(&self) -> StoreResult<u64>;

    /// Journal entries with `from_ms <= at_ms < to_ms`, in the order they were
    /// written (end-of-day clearing reads the day back in slices).
    async fn journal_between(&self, from_ms: i64, to_ms: i64) -> StoreResult<Vec<JournalEntry>> {
        let _ = (from_ms, to_ms);
        Err(StoreError::Unavailable(
            "this store cannot read its journal back".into(),
        ))
    }

    /// Sagas with `from_ms <= created_at_ms < to_ms` (for clearing).
    async fn sagas_between(&self, from_ms: i64, to_ms: i64) -> StoreResult<Vec<SagaRecord>> {
        Ok(self
            .sagas()
            .await?
            .into_iter()
            .filter(|s| (from_ms..to_ms).contains(&s.created_at_ms))
            .collect())
    }

    /// Store-and-forward entries created at or after `from_ms`, in queue
    /// order (for clearing: the reversals that net out a day's messages).
    async fn saf_entries_since(&self, from_ms: i64) -> StoreResult<Vec<SafEntry>> {
        Ok(self
            .saf_entries()
            .await?
            .into_iter()
            .filter(|e| e.entry.created_at_ms >= from_ms)
            .collect())
    }
}

impl JournalEntry {
    /// The journal row of a message: summary columns from its fields (PAN
    /// masked), the raw bytes as they crossed the wire.
    pub fn of(
        direction: Direction,
        peer: &str,
        msg: &iso8583::codec::Message,
        raw: Bytes,
        at_ms: i64,
        note: Option<String>,
    ) -> JournalEntry {
        use iso8583::fields::num;
        let text = |n| msg.get_str(n).map(str::to_string);
        JournalEntry {
            at_ms,
            direction,
            peer: peer.to_string(),
            mti: *msg.mti(),
            processing_code: text(num::PROCESSING_CODE),
            stan: text(num::STAN),
            transmission: text(num::TRANSMISSION),
            acquirer: text(num::ACQUIRER),
            response_code: text(num::RESPONSE_CODE),
            pan_masked: msg.get_str(num::PAN).map(iso8583::mask::mask_pan),
            amount_minor: iso8583::fields::amount_minor(msg).ok(),
            note,
            raw,
        }
    }
}

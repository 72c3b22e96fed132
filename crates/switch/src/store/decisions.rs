//! The decisions on money: freezes and receive sagas, each taken in one
//! atomic, durable step (see the crate's store documentation), with the
//! answer given to the wallet so that a resend gets it again, and the STANs
//! of the switch's own messages.
//!
//! This is the part of the store every request goes through; the other parts
//! (the store-and-forward queue, the journal, leases, the reads of clearing)
//! are traits of their own beside it.

use async_trait::async_trait;

use super::{NewSafEntry, RequestKey, StoreError, StoreResult, StoredAnswer};
use crate::dialect::FreezeKey;

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
    /// Digest of the wallet's 0100: recovery records its answer without it,
    /// and the switch compares it with a resend's, so that an exact resend
    /// of a freeze recovery declined is told recovery's answer, not 94.
    pub request_digest: [u8; 32],
}

impl FreezeRecord {
    /// What may still be received: frozen − received − reserved.
    pub fn available_minor(&self) -> u64 {
        self.amount_minor
            .saturating_sub(self.received_minor)
            .saturating_sub(self.reserved_minor)
    }

    /// Reserves `amount_minor` for a receive: the stores' one rule for
    /// whether a freeze can take it (open, and at least that much left),
    /// `None` when reserved, else the refusal (then nothing changes).
    pub fn reserve(&mut self, amount_minor: u64) -> Option<Reserve> {
        if self.state != FreezeState::Open {
            return Some(Reserve::NotOpen(self.state));
        }
        let available_minor = self.available_minor();
        if amount_minor > available_minor {
            return Some(Reserve::Exceeds { available_minor });
        }
        // ≤ amount_minor − received_minor: cannot overflow.
        self.reserved_minor += amount_minor;
        None
    }
}

/// A new freeze, recorded when the wallet's 0100 is forwarded.
#[derive(Clone, Debug)]
pub struct NewFreeze {
    pub key: FreezeKey,
    /// The switch instance that forwards it (see [`super::Lease`]).
    pub owner: String,
    pub request: RequestKey,
    pub request_digest: [u8; 32],
    pub payer_pan: String,
    pub payer_bank: String,
    pub amount_minor: u64,
    pub currency: u16,
    pub created_at_ms: i64,
}

/// Result of [`Decisions::insert_freeze`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InsertFreeze {
    Inserted,
    /// A freeze with this key exists already (a resend, or a clash: compare digests).
    Exists {
        request_digest: [u8; 32],
        answer: Option<StoredAnswer>,
    },
}

/// Steps of a receive saga. A saga is recorded in state `Debiting`, with the
/// identities of its debit and its credit, before either is sent, so recovery
/// can reverse whatever a crash interrupted; it then ends `Approved` or
/// `Failed`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SagaState {
    /// Debit (then credit) sent or about to be: the amount is reserved on
    /// the freeze.
    Debiting,
    /// Done: debit and credit approved, amount counted as received.
    Approved,
    /// Done: nothing moved (or everything reversed), reservation released.
    Failed,
}

impl SagaState {
    pub fn as_str(self) -> &'static str {
        match self {
            SagaState::Debiting => "debiting",
            SagaState::Approved => "approved",
            SagaState::Failed => "failed",
        }
    }

    /// A stored state. Other values (states earlier builds defined but never
    /// wrote) are `None`: the caller reports the row as corrupt.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "debiting" => SagaState::Debiting,
            "approved" => SagaState::Approved,
            "failed" => SagaState::Failed,
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
    /// Digest of the wallet's request: recovery records its answer without
    /// it, and the switch compares it with a resend's, so that an exact
    /// resend of a receive recovery ended is told recovery's answer, not 94.
    pub request_digest: [u8; 32],
}

/// A receive to reserve for.
#[derive(Clone, Debug)]
pub struct NewReceive {
    /// The debit's and the credit's identities, allocated before the
    /// reservation: the saga is recorded directly in state `Debiting`, so
    /// recovery can reverse either message whatever a crash interrupted,
    /// without a further commit before each send.
    pub debit: SentMessage,
    pub credit: SentMessage,
    /// The switch instance that runs the saga (see [`super::Lease`]).
    pub owner: String,
    pub request: RequestKey,
    pub request_digest: [u8; 32],
    pub freeze: FreezeKey,
    pub amount_minor: u64,
    pub receiver_pan: String,
    pub receiver_bank: String,
    pub created_at_ms: i64,
}

/// Result of [`Decisions::reserve`], decided atomically against the freeze.
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

/// Result of [`Decisions::record_answer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// The key's answer is this one, or a rejection recorded before it.
    Kept,
    /// A freeze or saga holds the key: nothing recorded; its request's digest
    /// (a resend of it, or a clash: compare digests).
    Held { request_digest: [u8; 32] },
}

/// How a saga ends.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ReceiveOutcome {
    /// Reserved amount becomes received.
    Approved,
    /// Reserved amount is released.
    Failed,
}

/// Result of [`Decisions::close_freeze_queueing`].
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

/// What the switch decides with the store: every method that changes money
/// state is one atomic transaction and returns once it is durable.
#[async_trait]
pub trait Decisions: Send + Sync + 'static {
    /// The answer recorded for a request, if any.
    async fn answer(&self, request: &RequestKey) -> StoreResult<Option<StoredAnswer>>;

    /// Records the answer to a request that changed nothing (a rejection such as
    /// 25, 30, 61), so an exact resend gets the same answer. Keeps the first answer
    /// if one exists. Records nothing when a freeze (an 0100's key) or a saga
    /// holds the key, in flight or ended: that request's own answer is the
    /// key's, and a rejection of a resend of it (on another instance, while
    /// it is decided) must not take its place.
    async fn record_answer(
        &self,
        request: &RequestKey,
        answer: StoredAnswer,
    ) -> StoreResult<Recorded>;

    /// Records a freeze in state `Pending` unless its key exists or the request
    /// was answered already.
    async fn insert_freeze(&self, freeze: NewFreeze) -> StoreResult<InsertFreeze>;

    /// Records the payer bank's answer: `Open` when approved, else `Declined`; and
    /// the answer given to the wallet. Finishing again the same way changes
    /// nothing; a freeze that ended otherwise, or none, is
    /// [`StoreError::Invalid`].
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
                Some(f) => Err(StoreError::Invalid(format!(
                    "finish_freeze: freeze {key} is {}, cannot become {}",
                    f.state.as_str(),
                    target.as_str()
                ))),
                None => Err(StoreError::Invalid(format!(
                    "finish_freeze: no freeze {key}"
                ))),
            },
        }
    }

    /// Like [`Decisions::finish_freeze`], and in the same transaction queues
    /// `saf` (the reversal of a freeze the bank never answered). A freeze no
    /// longer pending is left as it is and reported with the answer recorded
    /// for the request ([`Settled::Before`]).
    async fn finish_freeze_queueing(
        &self,
        key: &FreezeKey,
        approved: bool,
        request: &RequestKey,
        answer: StoredAnswer,
        saf: Option<NewSafEntry>,
    ) -> StoreResult<Settled>;

    async fn freeze(&self, key: &FreezeKey) -> StoreResult<Option<FreezeRecord>>;

    /// Atomically: the request was never answered and its saga key is new, the
    /// freeze exists and is open, and received + reserved + amount ≤ frozen;
    /// then reserves the amount and records the saga in state `Debiting` with
    /// the debit's and credit's identities.
    async fn reserve(&self, receive: NewReceive) -> StoreResult<Reserve>;

    /// Ends a saga: settles its reservation on the freeze (approved →
    /// received, failed → released), records the answer to the wallet, and in
    /// the same transaction queues the follow-up messages (reversals; an
    /// unfreeze of the amount when a failed receive finds its freeze closed).
    /// A saga ended before is left as it is and reported with its recorded
    /// answer ([`Settled::Before`]).
    async fn settle_receive(
        &self,
        request: &RequestKey,
        outcome: ReceiveOutcome,
        answer: StoredAnswer,
        follow_up: FollowUp,
    ) -> StoreResult<Settled>;

    /// Atomically: the freeze is open and `amount_minor` equals what remains
    /// (frozen − received − reserved); then closes it, records the answer, and
    /// queues `notice` (the unfreeze forwarded to the payer bank) in the same
    /// transaction.
    async fn close_freeze_queueing(
        &self,
        key: &FreezeKey,
        amount_minor: u64,
        request: &RequestKey,
        answer: StoredAnswer,
        notice: NewSafEntry,
    ) -> StoreResult<Close>;

    async fn saga(&self, request: &RequestKey) -> StoreResult<Option<SagaRecord>>;

    /// Allocates `count` consecutive STANs (1..=999999, wrapping) that no other
    /// user of this store gets; returns the first.
    async fn allocate_stans(&self, count: u32) -> StoreResult<u32>;
}

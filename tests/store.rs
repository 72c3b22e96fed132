//! The stores against the `Store` contract: every outcome of every method,
//! the money invariants under concurrency, group commit, durability across
//! close and reopen. The same test bodies run on the embedded store
//! (`sqlite::`), on PostgreSQL (`postgres::`, a throwaway cluster: see
//! `common/pg.rs`) and on the in-memory store the simulation takes as its
//! model (`memory::`, all but what only a database has: see the list at the
//! end). Then what only one of them has: the SQLite writer's
//! options, journal on drop and a kill -9 of a writing process; PostgreSQL
//! with two stores (two switch instances) on one database, lost connections
//! and a restarted server.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use iso8583::codec::{build_bytes, Message};
use iso8583::Spec;
use switchboard::clock::Clock;
use switchboard::dialect::{FreezeKey, InstitutionId};
use switchboard::store::memory::MemoryStore;
use switchboard::store::postgres::{PostgresOptions, PostgresStore};
use switchboard::store::sqlite::{SqliteOptions, SqliteStore};
use switchboard::store::{
    Close, Decisions, Direction, ExpiredLease, FollowUp, FreezeRecord, FreezeState, History,
    InsertFreeze, JournalEntry, JournalSink, Lease, NewFreeze, NewReceive, NewSafEntry,
    RawMessages, ReceiveOutcome, Recorded, RequestKey, Reserve, SafEntry, SafKind, SafOutcome,
    SafQueue, SafState, SagaState, SentMessage, Settled, Store, StoreError, StoredAnswer,
};

// ---------------------------------------------------------------------------
// Fixtures

fn acquirer() -> InstitutionId {
    InstitutionId::from_field(32, b"48020000").unwrap()
}

fn stan(n: u32) -> [u8; 6] {
    format!("{n:06}").into_bytes().try_into().unwrap()
}

fn freeze_key(n: u32) -> FreezeKey {
    FreezeKey {
        acquirer: acquirer(),
        transmission: *b"0501120000",
        stan: stan(n),
    }
}

fn request_key(mti: &[u8; 4], n: u32) -> RequestKey {
    RequestKey {
        mti: *mti,
        acquirer: acquirer(),
        transmission: *b"0501130000",
        stan: stan(n),
    }
}

fn freeze_request(n: u32) -> RequestKey {
    let k = freeze_key(n);
    RequestKey {
        mti: *b"0100",
        acquirer: k.acquirer,
        transmission: k.transmission,
        stan: k.stan,
    }
}

fn digest(tag: u8) -> [u8; 32] {
    [tag; 32]
}

/// A response carrying field 39 = `code`, built with the switchboard dialect.
fn answer(mti: &[u8; 4], code: &str, digest_tag: u8) -> StoredAnswer {
    static SPEC: std::sync::OnceLock<Spec> = std::sync::OnceLock::new();
    let spec = SPEC.get_or_init(Spec::switchboard);
    let mut msg = Message::new(*mti);
    msg.set(11, Bytes::from_static(b"000001"));
    msg.set(39, Bytes::copy_from_slice(code.as_bytes()));
    StoredAnswer {
        request_digest: digest(digest_tag),
        response: build_bytes(spec, &msg).unwrap(),
    }
}

fn new_freeze(n: u32, amount_minor: u64) -> NewFreeze {
    NewFreeze {
        key: freeze_key(n),
        owner: "instance-a".into(),
        request: freeze_request(n),
        request_digest: digest(1),
        payer_pan: "6212345678901234".into(),
        payer_bank: "48020000".into(),
        amount_minor,
        currency: 156,
        created_at_ms: 1_700_000_000_000 + n as i64,
    }
}

fn receive(freeze: u32, request: u32, amount_minor: u64) -> NewReceive {
    NewReceive {
        owner: "instance-a".into(),
        request: request_key(b"0200", request),
        request_digest: digest(2),
        freeze: freeze_key(freeze),
        amount_minor,
        receiver_pan: "6222020000000001".into(),
        receiver_bank: "48030000".into(),
        created_at_ms: 1_700_000_100_000 + request as i64,
        debit: debit_of(request),
        credit: credit_of(request),
    }
}

/// The identities the switch gives a receive's debit and credit.
fn debit_of(request: u32) -> SentMessage {
    SentMessage {
        stan: stan(request % 1_000_000),
        transmission: *b"0501130001",
    }
}

fn credit_of(request: u32) -> SentMessage {
    SentMessage {
        stan: stan(request % 1_000_000),
        transmission: *b"0501130002",
    }
}

/// The unfreeze notice queued when a freeze is closed.
fn unfreeze_notice() -> NewSafEntry {
    NewSafEntry {
        bank: "48020000".into(),
        order_key: "unfreeze".into(),
        kind: SafKind::Unfreeze,
        message: Bytes::from_static(b"0120 unfreeze"),
        created_at_ms: 1_700_000_200_000,
    }
}

/// Journal entries written (committed), read back as clearing reads them.
async fn journal_len(store: &dyn Store) -> u64 {
    store
        .journal_between(i64::MIN, i64::MAX)
        .await
        .unwrap()
        .len() as u64
}

fn journal_entry(i: u32) -> JournalEntry {
    JournalEntry {
        at_ms: 1_700_000_000_000 + i as i64,
        direction: match i % 2 {
            0 => Direction::In,
            _ => Direction::Out,
        },
        peer: "wallet 127.0.0.1:5000".into(),
        mti: *b"0200",
        processing_code: Some("400000".into()),
        stan: Some(format!("{i:06}")),
        transmission: Some("0501130000".into()),
        acquirer: Some("48020000".into()),
        response_code: None,
        pan_masked: Some("622202******0001".into()),
        amount_minor: Some(100),
        note: None,
        raw: Bytes::from(format!("raw {i}")),
    }
}

// ---------------------------------------------------------------------------
// The two stores

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
    Memory,
}

/// Where a fixture's data lives, to open it again.
enum Target {
    Sqlite(std::path::PathBuf),
    Postgres(String),
    /// Nothing outside the process: a memory store cannot be opened again.
    Memory,
}

enum Concrete {
    Sqlite(Arc<SqliteStore>),
    Postgres(Arc<PostgresStore>),
    Memory(Arc<MemoryStore>),
}

/// A store on fresh data (a file in a temporary directory, or a new database).
struct Fixture {
    concrete: Concrete,
    target: Target,
    _dir: tempfile::TempDir,
}

impl Backend {
    async fn open(self) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let target = match self {
            Backend::Sqlite => Target::Sqlite(dir.path().join("switchboard.db")),
            Backend::Postgres => Target::Postgres(common::pg::database().await),
            Backend::Memory => Target::Memory,
        };
        Fixture {
            concrete: target.open().await,
            target,
            _dir: dir,
        }
    }
}

impl Target {
    async fn open(&self) -> Concrete {
        self.try_open().await.unwrap()
    }

    async fn try_open(&self) -> Result<Concrete, StoreError> {
        Ok(match self {
            Target::Sqlite(path) => Concrete::Sqlite(Arc::new(SqliteStore::open(path)?)),
            Target::Postgres(url) => {
                Concrete::Postgres(Arc::new(PostgresStore::connect(url).await?))
            }
            Target::Memory => Concrete::Memory(Arc::new(MemoryStore::new())),
        })
    }
}

impl Fixture {
    fn store(&self) -> Arc<dyn Store> {
        match &self.concrete {
            Concrete::Sqlite(s) => s.clone(),
            Concrete::Postgres(s) => s.clone(),
            Concrete::Memory(s) => s.clone(),
        }
    }

    /// (commands run, transactions committed) by the store's writer.
    fn stats(&self) -> (u64, u64) {
        match &self.concrete {
            Concrete::Sqlite(s) => (s.stats().commands, s.stats().commits),
            Concrete::Postgres(s) => (s.stats().commands, s.stats().batches),
            Concrete::Memory(_) => panic!("the memory store has no writer"),
        }
    }

    /// Closes the store (writing its journal) and opens the same data again.
    /// Every clone of [`Fixture::store`] must be dropped first.
    async fn reopen(self) -> Fixture {
        let Fixture {
            concrete,
            target,
            _dir,
        } = self;
        let only = "the test still holds the store";
        match concrete {
            Concrete::Sqlite(s) => Arc::into_inner(s).expect(only).close().await.unwrap(),
            Concrete::Postgres(s) => Arc::into_inner(s).expect(only).close().await.unwrap(),
            Concrete::Memory(_) => panic!("a memory store cannot be closed and opened again"),
        }
        Fixture {
            concrete: target.open().await,
            target,
            _dir,
        }
    }

    /// Runs SQL of the backend's dialect directly on the data.
    async fn sql(&self, sqlite: &str, postgres: &str) {
        match &self.target {
            Target::Sqlite(path) => rusqlite::Connection::open(path)
                .unwrap()
                .execute_batch(sqlite)
                .unwrap(),
            Target::Postgres(url) => common::pg::execute(url, postgres).await,
            Target::Memory => panic!("the memory store has no SQL"),
        }
    }

    /// The STANs of the journal's entries, in the order written (PostgreSQL)
    /// or in time order (the entries of these tests are one a millisecond).
    async fn journal_stans(&self) -> Vec<String> {
        match &self.target {
            Target::Postgres(url) => common::pg::connect(url)
                .await
                .query("SELECT stan FROM journal ORDER BY id", &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect(),
            // The embedded store's journal is packs: read through the store,
            // whose reads see only what is committed.
            Target::Sqlite(_) | Target::Memory => self
                .store()
                .journal_between(i64::MIN, i64::MAX)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.stan.unwrap_or_default())
                .collect(),
        }
    }
}

/// Inserts freeze `n` and has the payer bank approve it.
async fn open_freeze(store: &dyn Store, n: u32, amount_minor: u64) {
    assert_eq!(
        store
            .insert_freeze(new_freeze(n, amount_minor))
            .await
            .unwrap(),
        InsertFreeze::Inserted
    );
    store
        .finish_freeze(
            &freeze_key(n),
            true,
            &freeze_request(n),
            answer(b"0110", "00", 1),
        )
        .await
        .unwrap();
}

async fn freeze(store: &dyn Store, n: u32) -> FreezeRecord {
    store.freeze(&freeze_key(n)).await.unwrap().unwrap()
}

/// Ends a receive with an ordinary approval answer and nothing to queue.
async fn end_receive(store: &dyn Store, key: &RequestKey, outcome: ReceiveOutcome) -> Settled {
    store
        .settle_receive(key, outcome, answer(b"0210", "00", 2), FollowUp::default())
        .await
        .unwrap()
}

/// Invariant 1 and the bookkeeping behind it, for every freeze: received is
/// the Σ of approved sagas, reserved the Σ of unfinished ones (in doubt
/// included), and together they never pass the frozen amount.
async fn check_invariants(store: &dyn Store) {
    let mut approved: BTreeMap<FreezeKey, u64> = BTreeMap::new();
    let mut open: BTreeMap<FreezeKey, u64> = BTreeMap::new();
    for saga in store.sagas().await.unwrap() {
        match saga.state {
            SagaState::Approved => *approved.entry(saga.freeze).or_default() += saga.amount_minor,
            SagaState::Failed => {}
            _ => *open.entry(saga.freeze).or_default() += saga.amount_minor,
        }
    }
    for f in store.freezes().await.unwrap() {
        assert!(
            f.received_minor + f.reserved_minor <= f.amount_minor,
            "freeze {} overdrawn: {f:?}",
            f.key
        );
        let want_received = approved.get(&f.key).copied().unwrap_or(0);
        let want_reserved = open.get(&f.key).copied().unwrap_or(0);
        assert_eq!(f.received_minor, want_received, "received of {}", f.key);
        assert_eq!(f.reserved_minor, want_reserved, "reserved of {}", f.key);
    }
}

// ---------------------------------------------------------------------------
// Freezes and answers

async fn insert_freeze_then_exists_with_digest_and_answer(backend: Backend) {
    let fixture = backend.open().await;
    let store = fixture.store();
    assert_eq!(store.freeze(&freeze_key(1)).await.unwrap(), None);
    assert_eq!(
        store.insert_freeze(new_freeze(1, 5000)).await.unwrap(),
        InsertFreeze::Inserted
    );
    let f = freeze(&*store, 1).await;
    assert_eq!(
        f,
        FreezeRecord {
            key: freeze_key(1),
            payer_pan: "6212345678901234".into(),
            payer_bank: "48020000".into(),
            amount_minor: 5000,
            currency: 156,
            received_minor: 0,
            reserved_minor: 0,
            state: FreezeState::Pending,
            created_at_ms: 1_700_000_000_001,
            request_digest: digest(1),
        }
    );

    // A resend before the bank answered: exists, no answer yet.
    let mut again = new_freeze(1, 5000);
    again.request_digest = digest(9);
    assert_eq!(
        store.insert_freeze(again.clone()).await.unwrap(),
        InsertFreeze::Exists {
            request_digest: digest(1),
            answer: None
        }
    );

    let approval = answer(b"0110", "00", 1);
    store
        .finish_freeze(&freeze_key(1), true, &freeze_request(1), approval.clone())
        .await
        .unwrap();
    assert_eq!(freeze(&*store, 1).await.state, FreezeState::Open);
    assert_eq!(
        store.answer(&freeze_request(1)).await.unwrap(),
        Some(approval.clone())
    );
    assert_eq!(
        store.insert_freeze(again).await.unwrap(),
        InsertFreeze::Exists {
            request_digest: digest(1),
            answer: Some(approval.clone())
        }
    );
    // Finishing again the same way changes nothing; the other way is refused.
    store
        .finish_freeze(
            &freeze_key(1),
            true,
            &freeze_request(1),
            answer(b"0110", "05", 1),
        )
        .await
        .unwrap();
    assert_eq!(
        store.answer(&freeze_request(1)).await.unwrap(),
        Some(approval)
    );
    assert!(store
        .finish_freeze(
            &freeze_key(1),
            false,
            &freeze_request(1),
            answer(b"0110", "05", 1)
        )
        .await
        .is_err());
    assert_eq!(freeze(&*store, 1).await.state, FreezeState::Open);

    // Declined.
    store.insert_freeze(new_freeze(2, 100)).await.unwrap();
    store
        .finish_freeze(
            &freeze_key(2),
            false,
            &freeze_request(2),
            answer(b"0110", "51", 1),
        )
        .await
        .unwrap();
    assert_eq!(freeze(&*store, 2).await.state, FreezeState::Declined);

    // Unknown freeze.
    assert!(store
        .finish_freeze(
            &freeze_key(3),
            true,
            &freeze_request(3),
            answer(b"0110", "00", 1)
        )
        .await
        .is_err());
    assert_eq!(store.freezes().await.unwrap().len(), 2);
}

async fn record_answer_keeps_the_first(backend: Backend) {
    let fixture = backend.open().await;
    let store = fixture.store();
    let key = request_key(b"0200", 7);
    assert_eq!(store.answer(&key).await.unwrap(), None);
    let first = answer(b"0210", "25", 3);
    store.record_answer(&key, first.clone()).await.unwrap();
    store
        .record_answer(&key, answer(b"0210", "00", 4))
        .await
        .unwrap();
    assert_eq!(store.answer(&key).await.unwrap(), Some(first));
    // A response that is not a message is kept as given.
    let odd = StoredAnswer {
        request_digest: digest(5),
        response: Bytes::from_static(b"not iso 8583"),
    };
    let key2 = request_key(b"0200", 8);
    store.record_answer(&key2, odd.clone()).await.unwrap();
    assert_eq!(store.answer(&key2).await.unwrap(), Some(odd));
}

/// A rejection of a request whose key a freeze or saga holds (a resend of it
/// rejected on another instance while it is decided) records nothing: that
/// request's own answer stays the key's.
async fn record_answer_leaves_a_held_key_to_its_freeze_or_saga(backend: Backend) {
    let fixture = backend.open().await;
    let store = fixture.store();
    let rejection = answer(b"0210", "14", 2);

    // A freeze pending at its bank holds its 0100's key.
    store.insert_freeze(new_freeze(1, 5_000)).await.unwrap();
    assert_eq!(
        store
            .record_answer(&freeze_request(1), answer(b"0110", "14", 1))
            .await
            .unwrap(),
        Recorded::Held {
            request_digest: digest(1)
        }
    );
    assert_eq!(store.answer(&freeze_request(1)).await.unwrap(), None);

    // A saga in flight holds its receive's key; once it ends, its answer
    // is the key's, not the rejection.
    open_freeze(&*store, 2, 10_000).await;
    let key = request_key(b"0200", 20);
    assert!(matches!(
        store.reserve(receive(2, 20, 1_000)).await.unwrap(),
        Reserve::Reserved(_)
    ));
    assert_eq!(
        store.record_answer(&key, rejection.clone()).await.unwrap(),
        Recorded::Held {
            request_digest: digest(2)
        }
    );
    assert_eq!(store.answer(&key).await.unwrap(), None);
    end_receive(&*store, &key, ReceiveOutcome::Approved).await;
    let ended = answer(b"0210", "00", 2);
    assert_eq!(store.answer(&key).await.unwrap(), Some(ended.clone()));
    assert_eq!(
        store.record_answer(&key, rejection.clone()).await.unwrap(),
        Recorded::Held {
            request_digest: digest(2)
        },
        "ended: still its saga's"
    );
    assert_eq!(store.answer(&key).await.unwrap(), Some(ended));
    let frozen = freeze(&*store, 2).await;
    assert_eq!((frozen.reserved_minor, frozen.received_minor), (0, 1_000));

    // A key nothing holds gets the rejection.
    let free = request_key(b"0200", 21);
    assert_eq!(
        store.record_answer(&free, rejection.clone()).await.unwrap(),
        Recorded::Kept
    );
    assert_eq!(store.answer(&free).await.unwrap(), Some(rejection));
    check_invariants(&*store).await;
}

async fn amounts_above_i64_max_are_refused_not_wrapped(backend: Backend) {
    let fixture = backend.open().await;
    let store = fixture.store();
    let err = store
        .insert_freeze(new_freeze(1, u64::MAX))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    assert_eq!(store.freeze(&freeze_key(1)).await.unwrap(), None);
    open_freeze(&*store, 2, 100).await;
    assert!(store.reserve(receive(2, 1, 1 << 63)).await.is_err());
    // The largest amount that fits is fine.
    store
        .insert_freeze(new_freeze(3, i64::MAX as u64))
        .await
        .unwrap();
    assert_eq!(freeze(&*store, 3).await.amount_minor, i64::MAX as u64);
}

// ---------------------------------------------------------------------------
// Reserve

async fn reserve_outcomes(backend: Backend) {
    let fixture = backend.open().await;
    let store = fixture.store();

    assert_eq!(
        store.reserve(receive(1, 1, 100)).await.unwrap(),
        Reserve::NotFound
    );

    store.insert_freeze(new_freeze(1, 1000)).await.unwrap();
    assert_eq!(
        store.reserve(receive(1, 1, 100)).await.unwrap(),
        Reserve::NotOpen(FreezeState::Pending)
    );

    store.insert_freeze(new_freeze(2, 1000)).await.unwrap();
    store
        .finish_freeze(
            &freeze_key(2),
            false,
            &freeze_request(2),
            answer(b"0110", "51", 1),
        )
        .await
        .unwrap();
    assert_eq!(
        store.reserve(receive(2, 1, 100)).await.unwrap(),
        Reserve::NotOpen(FreezeState::Declined)
    );

    open_freeze(&*store, 3, 1000).await;
    let Reserve::Reserved(f) = store.reserve(receive(3, 1, 600)).await.unwrap() else {
        panic!("expected Reserved");
    };
    assert_eq!((f.reserved_minor, f.received_minor), (600, 0));
    assert_eq!(f.available_minor(), 400);
    assert_eq!(freeze(&*store, 3).await, f);

    assert_eq!(
        store.reserve(receive(3, 2, 401)).await.unwrap(),
        Reserve::Exceeds {
            available_minor: 400
        }
    );
    // Exactly what is left is fine.
    assert!(matches!(
        store.reserve(receive(3, 3, 400)).await.unwrap(),
        Reserve::Reserved(f) if f.available_minor() == 0
    ));

    // The same request key again: a duplicate, with the stored digest.
    let mut resend = receive(3, 1, 600);
    resend.request_digest = digest(8);
    assert_eq!(
        store.reserve(resend.clone()).await.unwrap(),
        Reserve::Duplicate {
            request_digest: digest(2),
            answer: None
        }
    );
    let approved = answer(b"0210", "00", 2);
    store
        .settle_receive(
            &resend.request,
            ReceiveOutcome::Approved,
            approved.clone(),
            FollowUp::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        store.reserve(resend).await.unwrap(),
        Reserve::Duplicate {
            request_digest: digest(2),
            answer: Some(approved)
        }
    );

    let saga = store.saga(&request_key(b"0200", 3)).await.unwrap().unwrap();
    assert_eq!(saga.state, SagaState::Debiting);
    assert_eq!(saga.amount_minor, 400);
    assert_eq!(saga.freeze, freeze_key(3));
    assert_eq!(saga.receiver_pan, "6222020000000001");
    assert_eq!(saga.receiver_bank, "48030000");
    assert_eq!(
        (saga.debit, saga.credit, saga.reversal),
        (Some(debit_of(3)), Some(credit_of(3)), None)
    );
    assert_eq!(saga.response_code, None);
    assert_eq!(store.saga(&request_key(b"0200", 99)).await.unwrap(), None);
    check_invariants(&*store).await;

    // Closed: nothing more is received.
    open_freeze(&*store, 4, 50).await;
    assert!(matches!(
        store
            .close_freeze_queueing(
                &freeze_key(4),
                50,
                &request_key(b"0120", 4),
                answer(b"0130", "00", 4),
                unfreeze_notice()
            )
            .await
            .unwrap(),
        Close::Closed(_)
    ));
    assert_eq!(
        store.reserve(receive(4, 10, 1)).await.unwrap(),
        Reserve::NotOpen(FreezeState::Closed)
    );
    assert!(store
        .saga(&request_key(b"0200", 10))
        .await
        .unwrap()
        .is_none());
}

async fn concurrent_reserves_never_pass_the_frozen_amount(backend: Backend) {
    let fixture = backend.open().await;
    let store = fixture.store();
    open_freeze(&*store, 1, 1000).await;

    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.reserve(receive(1, i, 10)).await.unwrap() })
        })
        .collect();
    let (mut reserved, mut exceeded) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Reserve::Reserved(f) => {
                assert!(f.reserved_minor <= 1000);
                reserved += 1;
            }
            Reserve::Exceeds { available_minor } => {
                assert_eq!(available_minor, 0);
                exceeded += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((reserved, exceeded), (100, 100));
    let f = freeze(&*store, 1).await;
    assert_eq!((f.reserved_minor, f.received_minor), (1000, 0));
    assert_eq!(store.sagas().await.unwrap().len(), 100);
    check_invariants(&*store).await;
}

/// Reservations of different sizes on one freeze at once come out as one at
/// a time would: each taken one reports the freeze right after it (so no two
/// report the same reserved total), each refused one did not fit what was
/// left, and what was taken adds up to what the freeze holds reserved.
async fn concurrent_reserves_of_different_sizes_fit_in_turn(backend: Backend) {
    let fixture = backend.open().await;
    let store = fixture.store();
    open_freeze(&*store, 1, 1000).await;
    let tasks: Vec<_> = (0..60u32)
        .map(|i| {
            let store = store.clone();
            let amount = 10 + u64::from(i * 37 % 90);
            tokio::spawn(
                async move { (amount, store.reserve(receive(1, i, amount)).await.unwrap()) },
            )
        })
        .collect();
    let mut taken = 0;
    let mut steps = HashSet::new();
    let mut refused = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            (amount, Reserve::Reserved(f)) => {
                taken += amount;
                assert!(
                    f.reserved_minor >= amount && f.reserved_minor <= 1000,
                    "{f:?}"
                );
                assert!(steps.insert(f.reserved_minor), "two reservations saw {f:?}");
            }
            (amount, Reserve::Exceeds { available_minor }) => {
                assert!(
                    amount > available_minor,
                    "{amount} refused with {available_minor} left"
                );
                refused.push(amount);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let f = freeze(&*store, 1).await;
    assert_eq!(f.reserved_minor, taken);
    assert_eq!(steps.iter().max().copied(), Some(taken));
    // What is left only shrank: no refused amount fits it.
    assert!(!refused.is_empty());
    assert!(
        refused.iter().all(|a| *a > 1000 - taken),
        "{refused:?}, {taken} taken"
    );
    check_invariants(&*store).await;
}

// ---------------------------------------------------------------------------
// Saga steps and finishing

async fn finish_receive_settles_once(backend: Backend) {
    let fixture = backend.open().await;
    let store = fixture.store();
    open_freeze(&*store, 1, 1000).await;
    for (i, amount) in [(1, 100), (2, 200), (3, 300)] {
        assert!(matches!(
            store.reserve(receive(1, i, amount)).await.unwrap(),
            Reserve::Reserved(_)
        ));
    }
    let f = freeze(&*store, 1).await;
    assert_eq!((f.received_minor, f.reserved_minor), (0, 600));

    // Approved: reserved becomes received.
    let ok = answer(b"0210", "00", 2);
    store
        .settle_receive(
            &request_key(b"0200", 1),
            ReceiveOutcome::Approved,
            ok.clone(),
            FollowUp::default(),
        )
        .await
        .unwrap();
    let f = freeze(&*store, 1).await;
    assert_eq!((f.received_minor, f.reserved_minor), (100, 500));
    let saga = store.saga(&request_key(b"0200", 1)).await.unwrap().unwrap();
    assert_eq!(saga.state, SagaState::Approved);
    assert_eq!(saga.response_code.as_deref(), Some("00"));
    assert_eq!(
        store.answer(&request_key(b"0200", 1)).await.unwrap(),
        Some(ok.clone())
    );

    // Failed: released.
    store
        .settle_receive(
            &request_key(b"0200", 2),
            ReceiveOutcome::Failed,
            answer(b"0210", "51", 2),
            FollowUp::default(),
        )
        .await
        .unwrap();
    let f = freeze(&*store, 1).await;
    assert_eq!((f.received_minor, f.reserved_minor), (100, 300));
    assert_eq!(
        store
            .saga(&request_key(b"0200", 2))
            .await
            .unwrap()
            .unwrap()
            .response_code
            .as_deref(),
        Some("51")
    );

    // Approved with its own answer: the one a second finish reports.
    let first = answer(b"0210", "00", 3);
    store
        .settle_receive(
            &request_key(b"0200", 3),
            ReceiveOutcome::Approved,
            first.clone(),
            FollowUp::default(),
        )
        .await
        .unwrap();
    let f = freeze(&*store, 1).await;
    assert_eq!((f.received_minor, f.reserved_minor), (400, 0));
    check_invariants(&*store).await;

    // A second finish, whatever its outcome, counts nothing twice.
    for outcome in [ReceiveOutcome::Approved, ReceiveOutcome::Failed] {
        for i in 1..=3 {
            let settled = store
                .settle_receive(
                    &request_key(b"0200", i),
                    outcome,
                    answer(b"0210", "51", 9),
                    FollowUp::default(),
                )
                .await
                .unwrap();
            assert!(matches!(settled, Settled::Before { .. }), "{settled:?}");
        }
    }
    // The first answer given stays the answer.
    assert_eq!(
        store.answer(&request_key(b"0200", 3)).await.unwrap(),
        Some(first)
    );
    let f = freeze(&*store, 1).await;
    assert_eq!((f.received_minor, f.reserved_minor), (400, 0));
    assert_eq!(
        store
            .saga(&request_key(b"0200", 2))
            .await
            .unwrap()
            .unwrap()
            .state,
        SagaState::Failed
    );
    check_invariants(&*store).await;

    // No such saga.
    assert!(store
        .settle_receive(
            &request_key(b"0200", 9),
            ReceiveOutcome::Approved,
            ok,
            FollowUp::default()
        )
        .await
        .is_err());
}

async fn concurrent_reserve_and_finish_keep_the_invariants(backend: Backend) {
    let fixture = backend.open().await;
    let store = fixture.store();
    for n in 0..4 {
        open_freeze(&*store, n, 5000).await;
    }
    let tasks: Vec<_> = (0..400u32)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let amount = 10 + (i * 37 % 90) as u64;
                let r = receive(i % 4, i, amount);
                let key = r.request;
                if let Reserve::Reserved(_) = store.reserve(r).await.unwrap() {
                    let outcome = match i % 5 {
                        0..=2 => ReceiveOutcome::Approved,
                        _ => ReceiveOutcome::Failed,
                    };
                    end_receive(&*store, &key, outcome).await;
                    // A duplicated finish never counts twice.
                    end_receive(&*store, &key, outcome).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    check_invariants(&*store).await;
    let received: u64 = store
        .freezes()
        .await
        .unwrap()
        .iter()
        .map(|f| f.received_minor)
        .sum();
    assert!(received > 0);
}

// ---------------------------------------------------------------------------
// Close

async fn close_outcomes(backend: Backend) {
    let fixture = backend.open().await;
    let store = fixture.store();
    let unfreeze = request_key(b"0120", 1);
    let ack = answer(b"0130", "00", 4);

    assert_eq!(
        store
            .close_freeze_queueing(
                &freeze_key(1),
                100,
                &unfreeze,
                ack.clone(),
                unfreeze_notice()
            )
            .await
            .unwrap(),
        Close::NotFound
    );
    store.insert_freeze(new_freeze(1, 1000)).await.unwrap();
    assert_eq!(
        store
            .close_freeze_queueing(
                &freeze_key(1),
                1000,
                &unfreeze,
                ack.clone(),
                unfreeze_notice()
            )
            .await
            .unwrap(),
        Close::NotOpen(FreezeState::Pending)
    );
    store
        .finish_freeze(
            &freeze_key(1),
            true,
            &freeze_request(1),
            answer(b"0110", "00", 1),
        )
        .await
        .unwrap();

    // 200 received, 300 in flight: 500 remain.
    store.reserve(receive(1, 1, 200)).await.unwrap();
    store
        .settle_receive(
            &request_key(b"0200", 1),
            ReceiveOutcome::Approved,
            answer(b"0210", "00", 2),
            FollowUp::default(),
        )
        .await
        .unwrap();
    store.reserve(receive(1, 2, 300)).await.unwrap();
    for wrong in [1000, 800, 501, 0] {
        assert_eq!(
            store
                .close_freeze_queueing(
                    &freeze_key(1),
                    wrong,
                    &unfreeze,
                    ack.clone(),
                    unfreeze_notice()
                )
                .await
                .unwrap(),
            Close::AmountMismatch {
                remaining_minor: 500
            }
        );
    }
    assert_eq!(store.answer(&unfreeze).await.unwrap(), None);
    let Close::Closed(f) = store
        .close_freeze_queueing(
            &freeze_key(1),
            500,
            &unfreeze,
            ack.clone(),
            unfreeze_notice(),
        )
        .await
        .unwrap()
    else {
        panic!("expected Closed");
    };
    assert_eq!(f.state, FreezeState::Closed);
    assert_eq!((f.received_minor, f.reserved_minor), (200, 300));
    assert_eq!(freeze(&*store, 1).await, f);
    assert_eq!(store.answer(&unfreeze).await.unwrap(), Some(ack.clone()));
    assert_eq!(
        store
            .close_freeze_queueing(
                &freeze_key(1),
                500,
                &unfreeze,
                ack.clone(),
                unfreeze_notice()
            )
            .await
            .unwrap(),
        Close::NotOpen(FreezeState::Closed)
    );

    // What was in flight still settles after the close.
    store
        .settle_receive(
            &request_key(b"0200", 2),
            ReceiveOutcome::Failed,
            answer(b"0210", "51", 2),
            FollowUp::default(),
        )
        .await
        .unwrap();
    let f = freeze(&*store, 1).await;
    assert_eq!(
        (f.state, f.received_minor, f.reserved_minor),
        (FreezeState::Closed, 200, 0)
    );

    // Declined.
    store.insert_freeze(new_freeze(2, 10)).await.unwrap();
    store
        .finish_freeze(
            &freeze_key(2),
            false,
            &freeze_request(2),
            answer(b"0110", "51", 1),
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .close_freeze_queueing(
                &freeze_key(2),
                10,
                &request_key(b"0120", 2),
                ack,
                unfreeze_notice()
            )
            .await
            .unwrap(),
        Close::NotOpen(FreezeState::Declined)
    );
    check_invariants(&*store).await;
}

// ---------------------------------------------------------------------------
// STANs

async fn stans_are_consecutive_blocks_that_wrap(backend: Backend) {
    let fixture = backend.open().await;
    let store = fixture.store();
    assert_eq!(store.allocate_stans(1).await.unwrap(), 1);
    assert_eq!(store.allocate_stans(3).await.unwrap(), 2);
    assert_eq!(store.allocate_stans(999_985).await.unwrap(), 5);
    // 999990..=999994 taken, next is 999995 (999995..=999999 left).
    assert_eq!(store.allocate_stans(5).await.unwrap(), 999_990);
    // Six would cross 999999: the block starts at 1 instead.
    assert_eq!(store.allocate_stans(6).await.unwrap(), 1);
    // 7..=999999 exactly fits; then 1 again.
    assert_eq!(store.allocate_stans(999_993).await.unwrap(), 7);
    assert_eq!(store.allocate_stans(1).await.unwrap(), 1);
    assert!(store.allocate_stans(0).await.is_err());
    assert!(store.allocate_stans(1_000_000).await.is_err());
    assert_eq!(store.allocate_stans(999_999).await.unwrap(), 1);
    assert_eq!(store.allocate_stans(1).await.unwrap(), 1);
    // The counter survives a reopen (of a store that can be opened again).
    if backend == Backend::Memory {
        return;
    }
    drop(store);
    let fixture = fixture.reopen().await;
    assert_eq!(fixture.store().allocate_stans(1).await.unwrap(), 2);
}

async fn concurrent_stan_blocks_never_overlap(backend: Backend) {
    let fixture = backend.open().await;
    let store = fixture.store();
    // Start near the end so that the blocks wrap on the way.
    let first = store.allocate_stans(999_700).await.unwrap();
    assert_eq!(first, 1);
    let tasks: Vec<_> = (0..100u32)
        .map(|i| {
            let store = store.clone();
            let count = 1 + i % 7;
            tokio::spawn(async move { (store.allocate_stans(count).await.unwrap(), count) })
        })
        .collect();
    let mut seen = HashSet::new();
    let mut wrapped = false;
    for t in tasks {
        let (first, count) = t.await.unwrap();
        assert!(
            first >= 1 && first + count - 1 <= 999_999,
            "{first}+{count}"
        );
        wrapped |= first < 999_700;
        for stan in first..first + count {
            assert!(seen.insert(stan), "STAN {stan} handed out twice");
        }
    }
    assert!(wrapped, "the blocks should have wrapped to 1");
}

// ---------------------------------------------------------------------------
// Group commit

async fn concurrent_calls_share_commits(backend: Backend) {
    let fixture = backend.open().await;
    let store = fixture.store();
    open_freeze(&*store, 1, 1_000_000).await;
    let before = fixture.stats();
    let tasks: Vec<_> = (0..500u32)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.reserve(receive(1, i, 1)).await.unwrap() })
        })
        .collect();
    for t in tasks {
        assert!(matches!(t.await.unwrap(), Reserve::Reserved(_)));
    }
    let after = fixture.stats();
    let commands = after.0 - before.0;
    let commits = after.1 - before.1;
    assert_eq!(commands, 500);
    assert!(
        commits < commands,
        "no batching: {commits} commits for {commands} commands"
    );
    eprintln!("{backend:?} group commit: {commands} commands in {commits} commits");
}

// ---------------------------------------------------------------------------
// Durability

async fn state_survives_close_and_reopen(backend: Backend) {
    let fixture = backend.open().await;
    let (freezes, sagas) = {
        let store = fixture.store();
        open_freeze(&*store, 1, 1000).await;
        store.insert_freeze(new_freeze(2, 70)).await.unwrap();
        store.reserve(receive(1, 1, 100)).await.unwrap();
        store.reserve(receive(1, 2, 50)).await.unwrap();
        store
            .settle_receive(
                &request_key(b"0200", 1),
                ReceiveOutcome::Approved,
                answer(b"0210", "00", 2),
                FollowUp::default(),
            )
            .await
            .unwrap();
        store
            .record_answer(&request_key(b"0200", 3), answer(b"0210", "25", 3))
            .await
            .unwrap();
        (store.freezes().await.unwrap(), store.sagas().await.unwrap())
    };
    let fixture = fixture.reopen().await;
    let store = fixture.store();
    assert_eq!(store.freezes().await.unwrap(), freezes);
    assert_eq!(store.sagas().await.unwrap(), sagas);
    assert_eq!(
        store.answer(&request_key(b"0200", 3)).await.unwrap(),
        Some(answer(b"0210", "25", 3))
    );
    let f = freeze(&*store, 1).await;
    assert_eq!((f.received_minor, f.reserved_minor), (100, 50));
    check_invariants(&*store).await;
}

/// The STANs of the journal's entries, read back by a store opened on `path`.
async fn journal_stans(path: &Path) -> Vec<String> {
    let store = SqliteStore::open(path).unwrap();
    let stans = store
        .journal_between(i64::MIN, i64::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.stan.unwrap())
        .collect();
    store.close().await.unwrap();
    stans
}

#[tokio::test]
async fn journal_entries_are_all_written_in_order_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchboard.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        for i in 0..2000 {
            store.journal(journal_entry(i));
        }
        // Dropped right away: the entries still queued are written by the drop.
    }
    let want: Vec<String> = (0..2000).map(|i| format!("{i:06}")).collect();
    assert_eq!(journal_stans(&path).await, want);

    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(journal_len(&store).await, 2000);
    // Interleaved with commands, then close().
    let store = Arc::new(store);
    open_freeze(&*store, 1, 100).await;
    for i in 2000..2100 {
        store.journal(journal_entry(i));
        let _ = store.reserve(receive(1, i, 1)).await.unwrap();
    }
    assert_eq!(journal_len(&*store).await, 2100);
    Arc::into_inner(store).unwrap().close().await.unwrap();
    let stans = journal_stans(&path).await;
    assert_eq!(stans.len(), 2100);
    assert!(stans.windows(2).all(|w| w[0] < w[1]));
}

/// A `close()` given up while it waits for the writer (a caller's timeout,
/// a task aborted) leaves the file locked until the writer has stopped: a
/// second opener is refused until then, and then finds everything written.
/// Without the decision log, whose file has a lock of its own.
#[tokio::test]
async fn a_close_given_up_keeps_the_lock_until_the_writer_stops() {
    const ENTRIES: u32 = 100;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchboard.db");
    let options = SqliteOptions {
        decision_log: false,
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open_locked_with(&path, "test", options).unwrap();
    // Another connection holds the database's write lock: the writer's last
    // batch waits for it (up to its busy timeout, 5 s).
    let blocker = rusqlite::Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    for i in 0..ENTRIES {
        store.journal(journal_entry(i));
    }
    // Polled (the writer told to stop, its join begun), then dropped when
    // the zero timeout is seen: once, or twice if the timer fires late.
    let given_up = tokio::time::timeout(Duration::ZERO, store.close()).await;
    assert!(
        given_up.is_err(),
        "the writer stopped before its first poll"
    );
    match SqliteStore::open_locked(&path, "test") {
        Err(StoreError::InUse(_)) => {}
        Err(e) => panic!("opened while the writer works: {e}"),
        Ok(_) => panic!("opened while the writer works"),
    }
    blocker.execute_batch("COMMIT").unwrap();
    drop(blocker);
    let deadline = Instant::now() + Duration::from_secs(60);
    let reopened = loop {
        match SqliteStore::open_locked(&path, "test") {
            Ok(store) => break store,
            Err(StoreError::InUse(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(1)).await
            }
            Err(e) => panic!("reopening: {e}"),
        }
    };
    assert_eq!(journal_len(&reopened).await, u64::from(ENTRIES));
    reopened.close().await.unwrap();
}

/// Ends receives `requests` at once (so in shared batches), each approved
/// and queueing a store-and-forward entry with order key `r<request>`:
/// those in `injected` must fail with the injected failure, every other
/// must end now.
async fn approve_all_but_injected(
    store: Arc<dyn Store>,
    requests: std::ops::Range<u32>,
    injected: &[u32],
) {
    let tasks: Vec<_> = requests
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let key = request_key(b"0200", i);
                let answer = answer(b"0210", "00", 2);
                let follow_up = FollowUp {
                    saf: vec![saf_entry(&format!("r{i}"), "follow-up")],
                    unfreeze_if_closed: None,
                };
                let ended = store
                    .settle_receive(&key, ReceiveOutcome::Approved, answer, follow_up)
                    .await;
                (i, ended)
            })
        })
        .collect();
    for t in tasks {
        match t.await.unwrap() {
            (i, result) if injected.contains(&i) => assert!(
                matches!(result, Err(StoreError::Unavailable(ref e)) if e.contains("injected")),
                "{i}: {result:?}"
            ),
            (i, result) => assert!(matches!(result, Ok(Settled::Now)), "{i}: {result:?}"),
        }
    }
}

/// The embedded store's writer runs a batch without savepoints. When a
/// command in it fails, the batch is rolled back and runs again with a
/// savepoint per command: the failing command alone fails, with what it
/// wrote before failing undone. A batch without failures runs once.
#[tokio::test]
async fn the_embedded_writer_runs_a_batch_again_only_when_a_command_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchboard.db");
    let reserve_all = |store: Arc<SqliteStore>, requests: std::ops::Range<u32>| async move {
        let tasks: Vec<_> = requests
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move { (i, store.reserve(receive(1, i, 10)).await) })
            })
            .collect();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        results
    };

    let store = Arc::new(SqliteStore::open(&path).unwrap());
    open_freeze(&*store, 1, 1000).await;
    for (i, result) in reserve_all(store.clone(), 0..40).await {
        assert!(
            matches!(result, Ok(Reserve::Reserved(_))),
            "{i}: {result:?}"
        );
    }
    let stats = store.stats();
    assert!(stats.commits < stats.commands, "{stats:?}: no batch");
    assert_eq!(stats.reruns, 0, "{stats:?}");
    Arc::into_inner(store).unwrap().close().await.unwrap();

    // A receive's end fails after its freeze was updated: the follow-up it
    // queues is refused.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER fail_one BEFORE INSERT ON saf WHEN NEW.order_key = 'r113'
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
        )
        .unwrap();
    let store = Arc::new(SqliteStore::open(&path).unwrap());
    for (i, result) in reserve_all(store.clone(), 100..140).await {
        assert!(
            matches!(result, Ok(Reserve::Reserved(_))),
            "{i}: {result:?}"
        );
    }
    let before = store.stats();
    approve_all_but_injected(store.clone(), 100..140, &[113]).await;
    let stats = store.stats();
    assert!(stats.reruns > before.reruns, "{before:?} {stats:?}");
    let f = freeze(&*store, 1).await;
    assert_eq!((f.reserved_minor, f.received_minor), (410, 390));
    let sagas = store.sagas().await.unwrap();
    assert_eq!(sagas.len(), 80);
    let in_flight: Vec<_> = sagas
        .iter()
        .filter(|s| !s.state.is_final())
        .map(|s| s.request.stan)
        .collect();
    assert_eq!(in_flight.len(), 41, "{in_flight:?}");
    assert!(in_flight.contains(&stan(113)));
    assert_eq!(store.saf_entries().await.unwrap().len(), 39);
    check_invariants(&*store).await;
}

/// On the embedded store, looking up a request's answer and finding none is
/// answered as soon as the lookup has run, not after the batch's commit: a
/// new request does not wait a group commit before its decision begins.
/// What is found still waits for the commit. A commit interval of half a
/// second makes a lookup and a slow command (a trigger counting to millions) sent
/// just after a commit share the next batch, the lookup first; the miss
/// must arrive while the slow command, and so the commit, is still running.
#[tokio::test]
async fn the_embedded_store_answers_a_lookup_that_finds_nothing_before_its_batch_commits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchboard.db");
    let store = SqliteStore::open(&path).unwrap();
    open_freeze(&store, 1, 1000).await;
    store
        .record_answer(&request_key(b"0200", 7), answer(b"0210", "25", 7))
        .await
        .unwrap();
    store.close().await.unwrap();
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER slow BEFORE INSERT ON saga_log
             WHEN instr(NEW.body, CAST('000902' AS BLOB)) > 0
             BEGIN SELECT count(*) FROM (WITH RECURSIVE c(x) AS
               (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000000) SELECT x FROM c);
             END;",
        )
        .unwrap();
    let options = SqliteOptions {
        commit_interval: Duration::from_millis(500),
        commit_interval_above: 0,
        ..SqliteOptions::default()
    };
    let store = Arc::new(SqliteStore::open_with(&path, options).unwrap());
    // A commit, so that the next batch begins half a second after it.
    assert!(matches!(
        store.reserve(receive(1, 901, 10)).await,
        Ok(Reserve::Reserved(_))
    ));
    let missing = {
        let store = store.clone();
        tokio::spawn(async move { store.answer(&request_key(b"0200", 8)).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let slow = {
        let store = store.clone();
        tokio::spawn(async move { store.reserve(receive(1, 902, 10)).await })
    };

    assert_eq!(missing.await.unwrap().unwrap(), None);
    assert!(
        !slow.is_finished(),
        "the miss was answered only after its batch committed"
    );
    assert!(matches!(slow.await.unwrap(), Ok(Reserve::Reserved(_))));
    // What is found is found, and a miss stays a miss.
    assert_eq!(
        store.answer(&request_key(b"0200", 7)).await.unwrap(),
        Some(answer(b"0210", "25", 7))
    );
    assert_eq!(store.answer(&request_key(b"0200", 8)).await.unwrap(), None);
    check_invariants(&*store).await;
}

/// The journal entries committed to an embedded store's file, read on a
/// connection of its own (not through the store, whose reads commit first).
fn entries_in_file(path: &Path) -> i64 {
    let reader = rusqlite::Connection::open(path).unwrap();
    reader.busy_timeout(Duration::from_secs(5)).unwrap();
    reader
        .query_row(
            "SELECT coalesce(sum(entries), 0) FROM journal_packs",
            [],
            |r| r.get(0),
        )
        .unwrap()
}

/// Journal entries with no command after them wait for one to share its
/// commit (under load one follows at once, and a commit of entries alone
/// costs a whole commit); a command does not wait for them.
#[tokio::test]
async fn the_embedded_store_commits_journal_entries_with_the_next_command() {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions {
        journal_wait: Duration::from_secs(30),
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open_with(&dir.path().join("switchboard.db"), options).unwrap();
    open_freeze(&store, 1, 1000).await;
    let before = store.stats();
    store.journal(journal_entry(1));
    store.journal(journal_entry(2));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        store.stats().commits,
        before.commits,
        "entries committed alone"
    );
    let sent = Instant::now();
    assert!(matches!(
        store.reserve(receive(1, 901, 10)).await,
        Ok(Reserve::Reserved(_))
    ));
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "the command waited"
    );
    assert_eq!(store.stats().commits, before.commits + 1);
    // In the file with the reservation's commit, before any other.
    assert_eq!(entries_in_file(&dir.path().join("switchboard.db")), 2);
    assert_eq!(journal_len(&store).await, 2);
    check_invariants(&store).await;
}

/// Entries that no command follows are still committed, alone, once the
/// wait is over (and within moments with the default wait).
#[tokio::test]
async fn the_embedded_store_commits_journal_entries_alone_when_no_command_follows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchboard.db");
    let store = SqliteStore::open(&path).unwrap();
    let before = store.stats();
    store.journal(journal_entry(1));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let entries = entries_in_file(&path);
        // The commit is counted just after it is in the file.
        if entries == 1 && store.stats().commits > before.commits {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a journal entry no command followed was not written"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(store.stats().commits, before.commits + 1);
}

/// The WAL is copied into the database file by a thread of its own, long
/// before the writer's own checkpoint at 16,384 pages would: a few
/// megabytes of journal reach the database file within moments, and read
/// back whole after the store is opened again.
#[tokio::test]
async fn the_embedded_store_checkpoints_its_wal_beside_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchboard.db");
    let store = SqliteStore::open(&path).unwrap();
    let before = std::fs::metadata(&path).unwrap().len();
    // Raw messages LZ4 cannot shrink, 4 KiB each: 4 MiB of journal.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for i in 0..1024 {
        let raw: Vec<u8> = (0..4096)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        store.journal(JournalEntry {
            raw: Bytes::from(raw),
            ..journal_entry(i)
        });
    }
    assert_eq!(journal_len(&store).await, 1024);
    let deadline = Instant::now() + Duration::from_secs(10);
    let copied = loop {
        let grown = std::fs::metadata(&path).unwrap().len() - before;
        if grown >= 4 << 20 || Instant::now() > deadline {
            break grown;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        copied >= 4 << 20,
        "the database file grew by {copied} bytes"
    );
    store.close().await.unwrap();
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(journal_len(&store).await, 1024);
    store.close().await.unwrap();
}

/// `commit_interval`: while the store is busy (`commit_interval_above`
/// commands a second or more; zero: always), a batch begins no sooner than
/// the interval after the one before began, so writes that arrive within it
/// share one commit. Ten receives sent 10 ms apart, under an interval of 500
/// ms, are reserved in one commit and settled in one more; each call still
/// answers only once its commit is durable: all ten are there after the
/// store is opened again. At 100 commands a second, below a threshold of
/// 1,000, the same receives are not held: each batch begins at once.
#[tokio::test]
async fn the_embedded_store_commits_the_writes_of_one_commit_interval_together() {
    for (above, together) in [(0, true), (1_000, false)] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("switchboard.db");
        let options = SqliteOptions {
            commit_interval: Duration::from_millis(500),
            commit_interval_above: above,
            ..SqliteOptions::default()
        };
        let store = Arc::new(SqliteStore::open_with(&path, options).unwrap());
        open_freeze(&*store, 1, 1000).await;
        let requests: Vec<u32> = (701..711).collect();
        // How many commits ten calls 10 ms apart took.
        let commits_of = |calls: Vec<tokio::task::JoinHandle<()>>, before: u64| {
            let store = store.clone();
            async move {
                for call in calls {
                    call.await.unwrap();
                }
                store.stats().commits - before
            }
        };
        let commits_as_expected = |commits: u64| {
            if together {
                assert_eq!(commits, 1, "ten calls within one interval share one commit");
            } else {
                // Ten apart, or nearly: a slow sync may let a few meet.
                assert!(commits >= 2, "{commits} commits: held by the interval");
            }
        };
        let spaced_before = store.stats().spaced;

        let before = store.stats().commits;
        let mut reserves = Vec::new();
        for &request in &requests {
            let store = store.clone();
            reserves.push(tokio::spawn(async move {
                let reserved = store.reserve(receive(1, request, 10)).await;
                assert!(matches!(reserved, Ok(Reserve::Reserved(_))));
            }));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        commits_as_expected(commits_of(reserves, before).await);
        assert_eq!(freeze(&*store, 1).await.reserved_minor, 100);

        let before = store.stats().commits;
        let mut settles = Vec::new();
        for &request in &requests {
            let store = store.clone();
            settles.push(tokio::spawn(async move {
                let settled = end_receive(
                    &*store,
                    &request_key(b"0200", request),
                    ReceiveOutcome::Approved,
                )
                .await;
                assert_eq!(settled, Settled::Now);
            }));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        commits_as_expected(commits_of(settles, before).await);
        // The batches the interval held: the reserves', the freeze's read
        // and the settles' (each begun within the interval after the batch
        // before), or none.
        let spaced = store.stats().spaced - spaced_before;
        assert_eq!(spaced, if together { 3 } else { 0 }, "batches held");
        // A command that comes after the interval has run out was not held,
        // though the writer slept the interval out before it came.
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(freeze(&*store, 1).await.reserved_minor, 0);
        assert_eq!(
            store.stats().spaced - spaced_before,
            spaced,
            "a command after the interval counted as held"
        );
        check_invariants(&*store).await;

        Arc::into_inner(store).unwrap().close().await.unwrap();
        let store = SqliteStore::open(&path).unwrap();
        let record = freeze(&store, 1).await;
        assert_eq!((record.received_minor, record.reserved_minor), (100, 0));
        assert_eq!(store.sagas().await.unwrap().len(), requests.len());
        check_invariants(&store).await;
    }
}

/// `commit_delay`: while at least two receive sagas are in flight (their
/// ends on their way), a batch of fewer than four commands waits the delay
/// for company (`StoreStats::delayed` counts the batches that waited). Two
/// reserves 300 ms apart under a delay of 1 s share one commit; with no
/// delay they take one each. With fewer sagas in flight nothing waits, nor
/// does a lookup that finds nothing (answered as soon as it has run, so it
/// gains nothing from company).
#[tokio::test]
async fn the_embedded_store_lets_a_small_batch_wait_for_company_while_sagas_are_in_flight() {
    for delay in [Duration::from_secs(1), Duration::ZERO] {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteOptions {
            commit_delay: delay,
            ..SqliteOptions::default()
        };
        let store =
            Arc::new(SqliteStore::open_with(&dir.path().join("switchboard.db"), options).unwrap());
        open_freeze(&*store, 1, 1000).await;

        // None, then one, in flight: neither reserve waits.
        for request in [801, 802] {
            assert!(matches!(
                store.reserve(receive(1, request, 10)).await,
                Ok(Reserve::Reserved(_))
            ));
        }
        assert_eq!(store.stats().delayed, 0, "fewer than two sagas in flight");

        // Two in flight: the next small batch waits, and the reserve that
        // comes 300 ms later shares its commit.
        let before = store.stats();
        let first = tokio::spawn({
            let store = store.clone();
            async move { store.reserve(receive(1, 803, 10)).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let second = store.reserve(receive(1, 804, 10)).await;
        assert!(matches!(first.await.unwrap(), Ok(Reserve::Reserved(_))));
        assert!(matches!(second, Ok(Reserve::Reserved(_))));
        let after = store.stats();
        if delay.is_zero() {
            assert_eq!(after.delayed, 0);
            assert_eq!(
                after.commits - before.commits,
                2,
                "without the delay each reserve commits alone"
            );
        } else {
            assert_eq!(after.delayed, 1);
            assert_eq!(
                after.commits - before.commits,
                1,
                "the second reserve joined the waiting batch"
            );
        }

        // Four in flight: a lookup alone does not wait (its batch was
        // judged before it ran, so the count is final when it answers).
        assert_eq!(
            store.answer(&request_key(b"0200", 899)).await.unwrap(),
            None
        );
        assert_eq!(
            store.stats().delayed,
            after.delayed,
            "a lookup does not wait"
        );
        // The lookup was answered before its batch committed: a call behind
        // it returns after that commit is counted.
        freeze(&*store, 1).await;

        // Ended together: at most one wait and one commit, not one a saga.
        let before = store.stats();
        let ends: Vec<_> = (801..805)
            .map(|request| {
                let store = store.clone();
                tokio::spawn(async move {
                    end_receive(
                        &*store,
                        &request_key(b"0200", request),
                        ReceiveOutcome::Approved,
                    )
                    .await
                })
            })
            .collect();
        for end in ends {
            assert_eq!(end.await.unwrap(), Settled::Now);
        }
        if !delay.is_zero() {
            let after = store.stats();
            // One wait, or none when all four were queued before the writer
            // looked (a batch of four does not wait).
            assert!(after.delayed - before.delayed <= 1, "one wait for the four");
            assert_eq!(
                after.commits - before.commits,
                1,
                "the four ends share a commit"
            );
        }
        let record = freeze(&*store, 1).await;
        assert_eq!((record.received_minor, record.reserved_minor), (40, 0));
        check_invariants(&*store).await;
        Arc::into_inner(store).unwrap().close().await.unwrap();
    }
}

/// `commit_delay` with `commit_interval`: a batch the interval has held
/// already does not wait for company as well. Three reserves in a row under
/// an interval of 300 ms and a delay of 1 s: the second and third batches
/// are held by the interval (the third with two sagas in flight) and none
/// waits the delay.
#[tokio::test]
async fn the_embedded_store_does_not_delay_a_batch_the_commit_interval_held() {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions {
        commit_interval: Duration::from_millis(300),
        commit_delay: Duration::from_secs(1),
        commit_interval_above: 0,
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open_with(&dir.path().join("switchboard.db"), options).unwrap();
    open_freeze(&store, 1, 1000).await;
    for request in [811, 812, 813] {
        assert!(matches!(
            store.reserve(receive(1, request, 10)).await,
            Ok(Reserve::Reserved(_))
        ));
    }
    assert_eq!(
        store.stats().delayed,
        0,
        "the interval's wait is the only one"
    );
    assert_eq!(freeze(&store, 1).await.reserved_minor, 30);
    check_invariants(&store).await;
    store.close().await.unwrap();
}

/// The names of a table's entries of one kind (`index`, `table`) in an
/// embedded store's schema, sorted.
fn schema_names(conn: &rusqlite::Connection, kind: &str, table: &str) -> Vec<String> {
    let mut statement = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = ?1 AND tbl_name = ?2 ORDER BY name")
        .unwrap();
    let names = statement
        .query_map([kind, table], |r| r.get::<_, String>(0))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    names
}

/// An embedded store file as the schema steps before `step` (counted from 0)
/// left it, open on a plain connection.
fn embedded_store_before_step(path: &Path, step: usize) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("PRAGMA journal_mode = WAL").unwrap();
    let steps = switchboard::store::sqlite::MIGRATIONS;
    for (i, sql) in steps[..step].iter().enumerate() {
        conn.execute_batch(&format!("{sql}; PRAGMA user_version = {};", i + 1))
            .unwrap();
    }
    conn
}

/// Schema step 11 drops the index of sagas by freeze, which no statement
/// reads: a store built by step 10 loses it, keeps its sagas, and its
/// receives still settle; a new store never has it.
#[tokio::test]
async fn the_embedded_store_keeps_no_index_of_sagas_by_freeze() {
    let dir = tempfile::tempdir().unwrap();
    let saga_indexes =
        |path: &Path| schema_names(&rusqlite::Connection::open(path).unwrap(), "index", "sagas");
    let steps = switchboard::store::sqlite::MIGRATIONS;
    let index_step = steps
        .iter()
        .position(|step| step.contains("DROP INDEX IF EXISTS sagas_by_freeze"))
        .expect("a step drops the index");

    // A store as the step before left it, with a receive reserved.
    let old = dir.path().join("old.db");
    drop(embedded_store_before_step(&old, index_step));
    assert_eq!(saga_indexes(&old), ["sagas_by_freeze", "sagas_by_time"]);
    let store = SqliteStore::open(&old).unwrap();
    open_freeze(&store, 1, 100).await;
    let key = request_key(b"0200", 7);
    assert!(matches!(
        store.reserve(receive(1, 7, 30)).await.unwrap(),
        Reserve::Reserved(_)
    ));
    store.close().await.unwrap();
    assert_eq!(saga_indexes(&old), ["sagas_by_time", "sagas_unfinished"]);
    let store = SqliteStore::open(&old).unwrap();
    end_receive(&store, &key, ReceiveOutcome::Approved).await;
    let f = freeze(&store, 1).await;
    assert_eq!((f.reserved_minor, f.received_minor), (0, 30));
    assert_eq!(store.sagas().await.unwrap().len(), 1);
    check_invariants(&store).await;
    store.close().await.unwrap();

    let new = dir.path().join("new.db");
    SqliteStore::open(&new).unwrap().close().await.unwrap();
    assert_eq!(saga_indexes(&new), ["sagas_by_time", "sagas_unfinished"]);
}

/// Schema step 12 makes the freezes and sagas tables again with their states
/// checked by comparisons: SQLite checks `state IN (…)` by building a
/// temporary B-tree for every row written. A store built by step 11 keeps
/// every row, column and index through it, its receives still settle, and
/// a state outside the list is still refused; a new store has the same.
#[tokio::test]
async fn the_embedded_store_checks_states_without_a_temporary_table() {
    let dir = tempfile::tempdir().unwrap();
    let steps = switchboard::store::sqlite::MIGRATIONS;
    let rebuild_step = steps
        .iter()
        .position(|step| step.contains("CREATE TABLE sagas_12"))
        .expect("a step makes the sagas table again");
    let rows = |conn: &rusqlite::Connection, table: &str| -> Vec<String> {
        let mut statement = conn
            .prepare(&format!("SELECT * FROM {table} ORDER BY 1, 2, 3, 4"))
            .unwrap();
        let width = statement.column_count();
        let all = statement
            .query_map([], |r| {
                (0..width)
                    .map(|i| {
                        r.get::<_, rusqlite::types::Value>(i)
                            .map(|v| format!("{v:?}"))
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(|v| v.join("|"))
            })
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        all
    };
    let uses_a_temporary_table = |conn: &rusqlite::Connection, sql: &str| -> bool {
        let mut statement = conn.prepare(&format!("EXPLAIN {sql}")).unwrap();
        let opcodes = statement
            .query_map([], |r| r.get::<_, String>(1))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        opcodes.iter().any(|op| op == "OpenEphemeral")
    };
    let insert_saga = "INSERT INTO sagas (mti, acquirer, transmission, stan, freeze_acquirer, \
        freeze_transmission, freeze_stan, amount_minor, receiver_pan, receiver_bank, state, \
        request_digest, created_at_ms) VALUES ('0200', 'a', 'b', 'c', 'a', 'b', 'c', 1, 'p', \
        'r', 'debiting', x'00', 1)";
    let end_saga = "UPDATE sagas SET state = 'approved' WHERE mti = '0200' AND acquirer = 'a' \
        AND transmission = 'b' AND stan = 'c'";
    let close_freeze = "UPDATE freezes SET state = 'closed' WHERE acquirer = 'a' \
        AND transmission = 'b' AND stan = 'c'";

    // Rows as this version writes them: an approved receive, one reserved,
    // and the freeze they share.
    let current = dir.path().join("current.db");
    let store = SqliteStore::open(&current).unwrap();
    open_freeze(&store, 1, 100).await;
    for request in [7, 8] {
        assert!(matches!(
            store.reserve(receive(1, request, 30)).await.unwrap(),
            Reserve::Reserved(_)
        ));
    }
    end_receive(&store, &request_key(b"0200", 7), ReceiveOutcome::Approved).await;
    store.close().await.unwrap();

    // The same rows in a store as step 11 left it.
    let old = dir.path().join("old.db");
    {
        let conn = embedded_store_before_step(&old, rebuild_step);
        assert!(uses_a_temporary_table(&conn, insert_saga));
        conn.execute("ATTACH ?1 AS current", [current.to_str().unwrap()])
            .unwrap();
        conn.execute_batch(
            "INSERT INTO freezes SELECT * FROM current.freezes; \
             INSERT INTO sagas SELECT * FROM current.sagas; \
             DETACH current;",
        )
        .unwrap();
    }
    let before = {
        let conn = rusqlite::Connection::open(&old).unwrap();
        (rows(&conn, "freezes"), rows(&conn, "sagas"))
    };
    assert_eq!((before.0.len(), before.1.len()), (1, 2));

    let store = SqliteStore::open(&old).unwrap();
    store.close().await.unwrap();
    for path in [&old, &current] {
        let conn = rusqlite::Connection::open(path).unwrap();
        assert_eq!((rows(&conn, "freezes"), rows(&conn, "sagas")), before);
        let integrity: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(integrity, "ok");
        // Step 14's partial indexes (what recovery reads) come after.
        assert_eq!(
            schema_names(&conn, "index", "sagas"),
            ["sagas_by_time", "sagas_unfinished"]
        );
        assert_eq!(
            schema_names(&conn, "index", "freezes"),
            ["freezes_open_by_time", "freezes_pending"]
        );
        assert_eq!(schema_names(&conn, "table", "sagas"), ["sagas"]);
        assert_eq!(schema_names(&conn, "table", "freezes"), ["freezes"]);
        for sql in [insert_saga, end_saga, close_freeze] {
            assert!(!uses_a_temporary_table(&conn, sql), "{sql}");
        }
        let refused = conn
            .execute(
                "UPDATE sagas SET state = 'bogus' WHERE stan = ?1",
                [String::from_utf8(stan(7).to_vec()).unwrap()],
            )
            .unwrap_err();
        assert!(
            refused.to_string().contains("CHECK constraint failed"),
            "{refused}"
        );
        let refused = conn
            .execute("UPDATE freezes SET state = 'bogus'", [])
            .unwrap_err();
        assert!(
            refused.to_string().contains("CHECK constraint failed"),
            "{refused}"
        );
    }

    let store = SqliteStore::open(&old).unwrap();
    end_receive(&store, &request_key(b"0200", 8), ReceiveOutcome::Failed).await;
    let f = freeze(&store, 1).await;
    assert_eq!((f.reserved_minor, f.received_minor), (0, 30));
    assert_eq!(store.sagas().await.unwrap().len(), 2);
    check_invariants(&store).await;
}

/// What a connection of its own sees in the embedded store's file: the
/// sagas' rows (STAN, state) and how many records (reservations and ends)
/// the sagas' log holds.
fn embedded_sagas_on_file(path: &Path) -> (Vec<(String, String)>, usize) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut statement = conn
        .prepare("SELECT stan, state FROM sagas ORDER BY stan")
        .unwrap();
    let rows = statement
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    (rows, embedded_log(path).0)
}

/// The STANs of the sagas the embedded store's file holds in packs (ended
/// sagas written at a pruning of the log), from their key index.
fn embedded_packed_stans(path: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut statement = conn
        .prepare("SELECT stan FROM saga_keys ORDER BY stan")
        .unwrap();
    let stans = statement
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    stans
}

/// The sagas' log, read as the embedded store writes its rows (oldest row
/// first): how many reservations and ends it holds, and the freezes'
/// totals it holds (STAN, received, reserved) in the order logged.
fn embedded_log(path: &Path) -> (usize, Vec<(String, u64, u64)>) {
    struct Body<'a>(&'a [u8]);
    impl Body<'_> {
        fn take(&mut self, n: usize) -> &[u8] {
            let (head, rest) = self.0.split_at(n);
            self.0 = rest;
            head
        }
        fn u16(&mut self) -> usize {
            u16::from_le_bytes(self.take(2).try_into().unwrap()).into()
        }
        fn u32(&mut self) -> usize {
            u32::from_le_bytes(self.take(4).try_into().unwrap()) as usize
        }
        fn u64(&mut self) -> u64 {
            u64::from_le_bytes(self.take(8).try_into().unwrap())
        }
        fn str(&mut self) -> String {
            let n = self.u16();
            String::from_utf8(self.take(n).to_vec()).unwrap()
        }
        fn strs(&mut self, n: usize) {
            (0..n).for_each(|_| drop(self.str()));
        }
    }
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut statement = conn
        .prepare("SELECT body FROM saga_log ORDER BY id")
        .unwrap();
    let bodies: Vec<Vec<u8>> = statement
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let (mut sagas, mut freezes) = (0, Vec::new());
    for body in &bodies {
        let mut b = Body(body);
        let format = b.take(1)[0];
        for _ in 0..b.u32() {
            // Format 1 holds untagged reservations.
            match if format == 1 { 1 } else { b.take(1)[0] } {
                1 => {
                    b.strs(7);
                    b.u64();
                    b.strs(2);
                    b.take(32 + 8);
                    b.strs(4);
                    sagas += 1;
                }
                2 => {
                    b.strs(5);
                    if b.take(1)[0] != 0 {
                        b.str();
                    }
                    b.take(32);
                    let n = b.u32();
                    b.take(n);
                    sagas += 1;
                }
                3 => {
                    b.strs(2);
                    let stan = b.str();
                    freezes.push((stan, b.u64(), b.u64()));
                }
                other => panic!("a log record of kind {other}"),
            }
        }
        assert!(b.0.is_empty(), "a log row longer than its records");
    }
    (sagas, freezes)
}

/// Makes the embedded store's file count the updates of `table`'s rows
/// (a trigger records each updated row's STAN).
fn count_updates(path: &Path, table: &str) {
    rusqlite::Connection::open(path)
        .unwrap()
        .execute_batch(&format!(
            "CREATE TABLE {table}_updates (stan TEXT NOT NULL);
             CREATE TRIGGER count_{table}_updates AFTER UPDATE ON {table}
             BEGIN INSERT INTO {table}_updates VALUES (NEW.stan); END;"
        ))
        .unwrap();
}

/// The STANs of the rows of `table` updated since [`count_updates`].
fn updates_counted(path: &Path, table: &str) -> Vec<String> {
    rusqlite::Connection::open(path)
        .unwrap()
        .prepare(&format!("SELECT stan FROM {table}_updates"))
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// The embedded store writes a receive saga's row once, after the saga has
/// ended: until then its reservation and its end are in the sagas' log,
/// committed with their batches. No saga's row is updated on the way, and
/// the store's reads (answers to resends, sagas) see the sagas all the same.
#[tokio::test]
async fn the_embedded_store_writes_a_sagas_row_once_after_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchboard.db");
    SqliteStore::open(&path).unwrap().close().await.unwrap();
    count_updates(&path, "sagas");
    let store = Arc::new(SqliteStore::open(&path).unwrap());
    open_freeze(&*store, 1, 1000).await;
    let reserved = reserve_concurrently(&store, 1, 1..=4, 10).await;
    assert_eq!(reserved, 4);
    // Durable, and only in the log.
    assert_eq!(embedded_sagas_on_file(&path), (vec![], 4));
    assert_eq!(freeze(&*store, 1).await.reserved_minor, 40);
    // A resend of a receive in flight is a duplicate with no answer yet.
    match store.reserve(receive(1, 2, 10)).await.unwrap() {
        Reserve::Duplicate {
            request_digest,
            answer,
        } => assert_eq!((request_digest, answer), (digest(2), None)),
        other => panic!("{other:?}"),
    }

    end_receive(&*store, &request_key(b"0200", 1), ReceiveOutcome::Approved).await;
    end_receive(&*store, &request_key(b"0200", 2), ReceiveOutcome::Failed).await;
    // Ended, durably, and still only in the log.
    assert_eq!(embedded_sagas_on_file(&path), (vec![], 6));
    assert_eq!(
        store.answer(&request_key(b"0200", 1)).await.unwrap(),
        Some(answer(b"0210", "00", 2))
    );
    // A resend of an ended receive: a duplicate with its answer; its end
    // again changes nothing.
    match store.reserve(receive(1, 2, 10)).await.unwrap() {
        Reserve::Duplicate {
            answer: recorded, ..
        } => assert_eq!(recorded, Some(answer(b"0210", "00", 2))),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        end_receive(&*store, &request_key(b"0200", 1), ReceiveOutcome::Failed).await,
        Settled::Before { answer: Some(_) }
    ));
    // A saga read alone while in flight: its row is written as it is, and
    // its end then updates it.
    let third = store.saga(&request_key(b"0200", 3)).await.unwrap().unwrap();
    assert_eq!((third.state, third.amount_minor), (SagaState::Debiting, 10));
    assert_eq!(third.receiver_pan, "6222020000000001");
    end_receive(&*store, &request_key(b"0200", 3), ReceiveOutcome::Approved).await;

    let f = freeze(&*store, 1).await;
    assert_eq!((f.reserved_minor, f.received_minor), (10, 20));
    // Every saga, the one still in flight included, through the store's
    // reads: the ended ones' rows written in their final state.
    let sagas = store.sagas().await.unwrap();
    assert_eq!(sagas.len(), 4);
    assert_eq!(
        sagas.iter().map(|s| s.state).collect::<Vec<_>>(),
        [
            SagaState::Approved,
            SagaState::Failed,
            SagaState::Approved,
            SagaState::Debiting
        ]
    );
    assert_eq!(updates_counted(&path, "sagas"), vec!["000003".to_string()]);
    check_invariants(&*store).await;

    // Closed: every saga has its row and the log is empty.
    Arc::into_inner(store).unwrap().close().await.unwrap();
    let (rows, logged) = embedded_sagas_on_file(&path);
    assert_eq!((rows.len(), logged), (4, 0));
    assert_eq!(rows[3], ("000004".to_string(), "debiting".to_string()));
}

/// What a crash (kill -9, power loss) leaves of the running embedded store
/// at `from`, copied to `to` to be opened in its place: its decision log,
/// then the database as committed. In that order, because the writer may
/// insert the log's records into the database between the two copies and
/// then begin the log again: the database copied after the log then holds
/// what the log copy holds or more, never less.
fn crash_image(from: &Path, to: &Path) {
    let log = switchboard::store::sqlite::log_path(from);
    if log.exists() {
        std::fs::copy(&log, switchboard::store::sqlite::log_path(to)).unwrap();
    }
    rusqlite::Connection::open(from)
        .unwrap()
        .execute("VACUUM INTO ?1", [to.to_str().unwrap()])
        .unwrap();
}

/// Reserves `requests` on `freeze` at once (so in shared batches); how many
/// were reserved.
async fn reserve_concurrently(
    store: &Arc<SqliteStore>,
    freeze: u32,
    requests: std::ops::RangeInclusive<u32>,
    amount_minor: u64,
) -> usize {
    let tasks: Vec<_> = requests
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.reserve(receive(freeze, i, amount_minor)).await })
        })
        .collect();
    let mut reserved = 0;
    for t in tasks {
        if let Reserve::Reserved(_) = t.await.unwrap().unwrap() {
            reserved += 1;
        }
    }
    reserved
}

/// With the decision log (the default), a batch of reservations or ends and
/// the journal entries it carries are durable in `<file>-decisions` before
/// their callers hear back, and not yet in the database. A crash image
/// (the log, then the database as committed) holds them in the log alone;
/// opening it inserts them into the database, the sagas and totals as the
/// sagas' log would give them, with the journal. A last record torn by the
/// crash is not read; the records before it are. (Only a store opened with
/// its lock, as `serve` opens it, has the log.)
#[tokio::test]
async fn the_embedded_store_reads_back_what_a_crash_left_in_its_decision_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchboard.db");
    let crashed = dir.path().join("crashed.db");
    let torn = dir.path().join("torn.db");
    let stranger = dir.path().join("stranger.db");
    let options = SqliteOptions {
        // Not inserted into the database while the test runs, however slow.
        decision_log_idle: Duration::from_secs(3600),
        ..SqliteOptions::default()
    };
    let store = Arc::new(SqliteStore::open_locked_with(&path, "test", options).unwrap());
    open_freeze(&*store, 1, 1000).await;
    store.journal(journal_entry(1));
    store.journal(journal_entry(2));
    assert_eq!(reserve_concurrently(&store, 1, 1..=6, 10).await, 6);
    end_receive(&*store, &request_key(b"0200", 1), ReceiveOutcome::Approved).await;
    // The reservations' batches and the end's, at least, were logged.
    assert!(store.stats().logged >= 2, "{:?}", store.stats());
    crash_image(&path, &crashed);
    crash_image(&path, &torn);
    // Another database, new, beside a copy of this one's log.
    SqliteStore::open_locked(&stranger, "test")
        .unwrap()
        .close()
        .await
        .unwrap();
    std::fs::copy(
        switchboard::store::sqlite::log_path(&crashed),
        switchboard::store::sqlite::log_path(&stranger),
    )
    .unwrap();
    // The database holds none of it: the six reservations, the end and the
    // two entries are in the log alone.
    assert_eq!(embedded_sagas_on_file(&crashed), (vec![], 0));
    assert_eq!(entries_in_file(&crashed), 0);
    // The torn image: its log cut inside the last record, the end's.
    let torn_log = switchboard::store::sqlite::log_path(&torn);
    let len = std::fs::metadata(&torn_log).unwrap().len();
    assert!(len > 0);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&torn_log)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    drop(store);

    // A log is read only into its own database (the records' checksums
    // cover a number drawn for it); the stranger's opening empties it.
    let store = SqliteStore::open_locked(&stranger, "test").unwrap();
    assert!(store.sagas().await.unwrap().is_empty());
    assert_eq!(journal_len(&store).await, 0);
    store.close().await.unwrap();
    let stranger_log = switchboard::store::sqlite::log_path(&stranger);
    assert_eq!(std::fs::metadata(&stranger_log).unwrap().len(), 0);

    let store = SqliteStore::open_locked(&crashed, "test").unwrap();
    assert_eq!(entries_in_file(&crashed), 2);
    assert_eq!(journal_len(&store).await, 2);
    let f = freeze(&store, 1).await;
    assert_eq!((f.reserved_minor, f.received_minor), (50, 10));
    let in_flight = store.sagas().await.unwrap();
    assert_eq!(in_flight.len(), 6);
    assert_eq!(in_flight.iter().filter(|s| !s.state.is_final()).count(), 5);
    check_invariants(&store).await;
    store.close().await.unwrap();
    assert_eq!(embedded_freeze_row(&crashed, 1), (10, 50));
    // Read back, and emptied: no superseded record stays in the file.
    let crashed_log = switchboard::store::sqlite::log_path(&crashed);
    assert_eq!(std::fs::metadata(&crashed_log).unwrap().len(), 0);

    let store = SqliteStore::open_locked(&torn, "test").unwrap();
    let f = freeze(&store, 1).await;
    assert_eq!((f.reserved_minor, f.received_minor), (60, 0));
    let in_flight = store.sagas().await.unwrap();
    assert_eq!(in_flight.len(), 6);
    assert!(in_flight.iter().all(|s| s.state == SagaState::Debiting));
    check_invariants(&store).await;
}

/// Store-and-forward polls its queue every 50 ms. The poll only reads
/// `saf`, so its batch is made durable as a reservation's is: what the
/// decision log holds stays there, where a poll committed in SQLite would
/// insert it (a commit and its sync twenty times a second, whatever the
/// load). A command that needs SQLite's commit still inserts it.
#[tokio::test]
async fn a_store_and_forward_poll_leaves_the_decision_log_to_the_next_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchboard.db");
    let polled = dir.path().join("polled.db");
    let committed = dir.path().join("committed.db");
    let options = SqliteOptions {
        decision_log_idle: Duration::from_secs(3600),
        ..SqliteOptions::default()
    };
    let store = Arc::new(SqliteStore::open_locked_with(&path, "test", options).unwrap());
    open_freeze(&*store, 1, 1000).await;
    assert_eq!(reserve_concurrently(&store, 1, 1..=3, 10).await, 3);
    let logged = store.stats().logged;
    assert!(logged >= 1, "{:?}", store.stats());

    assert!(store
        .saf_due(now_ms(), 64, 60_000)
        .await
        .unwrap()
        .is_empty());
    crash_image(&path, &polled);
    // The three reservations are in the log alone: no saga row, no log row.
    assert_eq!(embedded_sagas_on_file(&polled), (vec![], 0));
    // The poll logged nothing either: it changed nothing.
    assert_eq!(store.stats().logged, logged);

    // A read through SQLite's commit (every `saf` entry) inserts them.
    assert!(store.saf_entries().await.unwrap().is_empty());
    crash_image(&path, &committed);
    assert!(embedded_sagas_on_file(&committed).1 >= 1);
    check_invariants(&*store).await;
    let f = freeze(&*store, 1).await;
    assert_eq!((f.reserved_minor, f.received_minor), (30, 0));
}

/// A process that stops without closing the embedded store (a crash, kill
/// -9) leaves its sagas in flight in the log: the file as committed is
/// copied while the store runs, and opening the copy reads them back into
/// `sagas`, where recovery finds them, with the freeze's reservations.
#[tokio::test]
async fn the_embedded_store_reads_back_the_sagas_in_flight_a_crash_left_in_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchboard.db");
    let crashed = dir.path().join("crashed.db");
    let store = Arc::new(SqliteStore::open(&path).unwrap());
    open_freeze(&*store, 1, 1000).await;
    assert_eq!(reserve_concurrently(&store, 1, 1..=6, 10).await, 6);
    end_receive(&*store, &request_key(b"0200", 1), ReceiveOutcome::Approved).await;
    // The file as a crash would leave it: what is committed.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute("VACUUM INTO ?1", [crashed.to_str().unwrap()])
        .unwrap();
    // Six reservations and an end, in the log alone.
    assert_eq!(embedded_sagas_on_file(&crashed), (vec![], 7));
    drop(store);

    let store = SqliteStore::open(&crashed).unwrap();
    let (rows, logged) = embedded_sagas_on_file(&crashed);
    assert_eq!(logged, 0);
    assert_eq!(rows.len(), 6);
    assert_eq!(rows[0], ("000001".to_string(), "approved".to_string()));
    assert!(
        rows[1..].iter().all(|(_, state)| state == "debiting"),
        "{rows:?}"
    );
    let in_flight = store.sagas().await.unwrap();
    assert_eq!(in_flight.iter().filter(|s| !s.state.is_final()).count(), 5);
    let f = freeze(&store, 1).await;
    assert_eq!((f.reserved_minor, f.received_minor), (50, 10));
    check_invariants(&store).await;
    // Ended as recovery would end them: each once.
    for i in 2..=6 {
        end_receive(&store, &request_key(b"0200", i), ReceiveOutcome::Failed).await;
        assert!(matches!(
            end_receive(&store, &request_key(b"0200", i), ReceiveOutcome::Approved).await,
            Settled::Before { .. }
        ));
    }
    let f = freeze(&store, 1).await;
    assert_eq!((f.reserved_minor, f.received_minor), (0, 10));
    check_invariants(&store).await;
}

/// A freeze's received and reserved totals as its row in the embedded
/// store's file holds them, read on a connection of its own.
fn embedded_freeze_row(path: &Path, n: u32) -> (u64, u64) {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row(
            "SELECT received_minor, reserved_minor FROM freezes WHERE stan = ?1",
            [format!("{n:06}")],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
}

/// The embedded store does not write a freeze's row at each reservation
/// and end: the freeze's totals are logged with each batch, as absolute
/// values, and written onto the row when the log is pruned. A crash
/// between leaves the row behind and its log ahead; reading the log back
/// takes each freeze's newest totals, even while the log still holds older
/// ones (a saga in flight keeps the rows it was logged in).
#[tokio::test]
async fn the_embedded_store_logs_a_freezes_totals_and_writes_its_row_when_pruning() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchboard.db");
    let crashed = dir.path().join("crashed.db");
    SqliteStore::open(&path).unwrap().close().await.unwrap();
    count_updates(&path, "freezes");
    let freeze_updates = || updates_counted(&path, "freezes").len();
    let store = Arc::new(SqliteStore::open(&path).unwrap());
    open_freeze(&*store, 1, 1_000_000).await;
    let opened = freeze_updates();
    // Receive 1 stays in flight, and keeps the log rows from its own on.
    assert_eq!(reserve_concurrently(&store, 1, 1..=1, 10).await, 1);
    reserve_and_approve_one_by_one(&*store, 2..=11).await;
    // Twenty-one changes of the freeze's totals: logged, its row untouched.
    assert_eq!(freeze_updates(), opened);
    assert_eq!(embedded_freeze_row(&path, 1), (0, 0));
    let (_, logged) = embedded_log(&path);
    assert_eq!(logged.len(), 21, "{logged:?}");
    assert_eq!(logged.last(), Some(&("000001".to_string(), 10, 10)));
    let f = freeze(&*store, 1).await;
    assert_eq!((f.received_minor, f.reserved_minor), (10, 10));

    // Every 256 commits the log is pruned and the row gets the totals: 599
    // changes of the totals, a commit each, and two rewrites of the row
    // where each change used to be one.
    reserve_and_approve_one_by_one(&*store, 12..=300).await;
    assert_eq!(freeze_updates(), opened + 2);
    let row = embedded_freeze_row(&path, 1);
    // As of the second pruning (commit 512 or so): receive 1 in flight, and
    // maybe one reserved in that batch.
    assert!(row.0 >= 250 && (row.1 == 10 || row.1 == 11), "{row:?}");
    let (_, logged) = embedded_log(&path);
    assert_eq!(
        logged.first(),
        Some(&("000001".to_string(), 0, 10)),
        "receive 1's log row is kept, with the totals of its batch"
    );
    assert_eq!(logged.last(), Some(&("000001".to_string(), 299, 10)));

    // The file as a crash would leave it: reading its log back takes the
    // newest totals, not the oldest row's.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute("VACUUM INTO ?1", [crashed.to_str().unwrap()])
        .unwrap();
    drop(store);
    let store = SqliteStore::open(&crashed).unwrap();
    assert_eq!(embedded_freeze_row(&crashed, 1), (299, 10));
    assert_eq!(embedded_log(&crashed), (0, vec![]));
    end_receive(&store, &request_key(b"0200", 1), ReceiveOutcome::Approved).await;
    let f = freeze(&store, 1).await;
    assert_eq!((f.received_minor, f.reserved_minor), (309, 0));
    check_invariants(&store).await;
    store.close().await.unwrap();
    assert_eq!(embedded_freeze_row(&crashed, 1), (309, 0));
}

/// The embedded store's freeze totals under a random walk of receives
/// against a model: reservations (some refused for want of money, some
/// resent), ends approved or failed, reservations in shared batches with
/// the sagas written out behind them, reads of one freeze and of all,
/// closes and crashes (a copy of the file as committed, opened in the
/// store's place). Steps 0–799 and 1,400–1,999 run without a crash until
/// their last, so the sagas' log is pruned several times with sagas in
/// flight across the prunings; between them crashes are frequent, often
/// right after a shared batch.
/// After every step the store's totals are the model's; after every crash
/// or close, the rows' are too.
#[tokio::test]
async fn the_embedded_stores_freeze_totals_follow_a_model_through_crashes_and_prunings() {
    const FREEZES: u32 = 3;
    const FROZEN: u64 = 1_000;
    for seed in [0x9e37_79b9_7f4a_7c15_u64, 0x2545_f491_4f6c_dd1d] {
        let dir = tempfile::tempdir().unwrap();
        let mut generation = 0;
        let mut path = dir.path().join("store-0.db");
        // Opened with the lock, as `serve` opens it: with the decision log.
        let mut store = Arc::new(SqliteStore::open_locked(&path, "test").unwrap());
        for n in 1..=FREEZES {
            open_freeze(&*store, n, FROZEN).await;
        }
        // The model: each freeze's (received, reserved), the receives in
        // flight and ended, by request number.
        let mut totals = vec![(0u64, 0u64); FREEZES as usize + 1];
        let mut in_flight: BTreeMap<u32, (u32, u64)> = BTreeMap::new();
        let mut ended: Vec<u32> = Vec::new();
        let mut next_request = 1u32;
        let mut commits = 0;
        let mut state = seed;
        let mut random = |below: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % below
        };
        for step in 0..2_000 {
            // Long stretches without a crash (so the log is pruned, with
            // sagas in flight across the prunings, before the crash that
            // ends each), and between them a stretch of frequent crashes.
            let crashing = (800..1_400).contains(&step);
            let mut crash_now = step == 799 || step == 1_999;
            let roll = random(100);
            if roll < 40 || in_flight.is_empty() {
                // A reservation: taken when the model has the money.
                let freeze = 1 + random(u64::from(FREEZES)) as u32;
                let amount = 1 + random(40);
                let request = next_request;
                next_request += 1;
                let (received, reserved) = totals[freeze as usize];
                let available = FROZEN - received - reserved;
                match store
                    .reserve(receive(freeze, request, amount))
                    .await
                    .unwrap()
                {
                    Reserve::Reserved(f) => {
                        assert!(amount <= available, "{step}: over-reserved");
                        totals[freeze as usize].1 += amount;
                        assert_eq!(
                            (f.received_minor, f.reserved_minor),
                            totals[freeze as usize],
                            "{step}: what the reservation returned"
                        );
                        in_flight.insert(request, (freeze, amount));
                    }
                    Reserve::Exceeds { available_minor } => {
                        assert!(amount > available, "{step}: refused with {available}");
                        assert_eq!(available_minor, available, "{step}");
                    }
                    other => panic!("{step}: {other:?}"),
                }
            } else if roll < 75 {
                // An end, approved or failed.
                let pick = random(in_flight.len() as u64) as usize;
                let request = *in_flight.keys().nth(pick).unwrap();
                let (freeze, amount) = in_flight.remove(&request).unwrap();
                let approved = random(4) != 0;
                let outcome = if approved {
                    ReceiveOutcome::Approved
                } else {
                    ReceiveOutcome::Failed
                };
                let key = request_key(b"0200", request);
                assert_eq!(end_receive(&*store, &key, outcome).await, Settled::Now);
                let t = &mut totals[freeze as usize];
                t.1 -= amount;
                if approved {
                    t.0 += amount;
                }
                ended.push(request);
            } else if roll < 80 {
                // Resends: a reservation again, in flight or ended; nothing moves.
                let request = if ended.is_empty() || random(2) == 0 {
                    *in_flight.keys().next().unwrap()
                } else {
                    ended[random(ended.len() as u64) as usize]
                };
                assert!(
                    matches!(
                        store.reserve(receive(1, request, 1)).await.unwrap(),
                        Reserve::Duplicate { .. }
                    ),
                    "{step}"
                );
            } else if roll < 86 {
                // Reservations sharing batches, each on freeze 3, small, and
                // the sagas written out behind them (likely in the last of
                // their batches).
                let tasks: Vec<_> = (0..8)
                    .map(|k| {
                        let store = store.clone();
                        let request = next_request + k;
                        tokio::spawn(async move {
                            (
                                request,
                                store.reserve(receive(3, request, 1)).await.unwrap(),
                            )
                        })
                    })
                    .collect();
                next_request += 8;
                let written_out = {
                    let store = store.clone();
                    tokio::spawn(async move { store.sagas().await.map(|s| s.len()) })
                };
                for task in tasks {
                    let (request, reserved) = task.await.unwrap();
                    match reserved {
                        Reserve::Reserved(_) => {
                            totals[3].1 += 1;
                            in_flight.insert(request, (3, 1));
                        }
                        Reserve::Exceeds { .. } => {}
                        other => panic!("{step}: {other:?}"),
                    }
                }
                assert!(totals[3].0 + totals[3].1 <= FROZEN, "{step}");
                written_out.await.unwrap().unwrap();
                crash_now = crashing && random(2) == 0;
            } else if roll < 91 || (roll >= 96 && !crashing) {
                let freeze = 1 + random(u64::from(FREEZES)) as u32;
                let f = store.freeze(&freeze_key(freeze)).await.unwrap().unwrap();
                assert_eq!(
                    (f.received_minor, f.reserved_minor),
                    totals[freeze as usize],
                    "{step}: freeze {freeze}"
                );
            } else if roll < 94 {
                for f in store.freezes().await.unwrap() {
                    let n: usize = std::str::from_utf8(&f.key.stan).unwrap().parse().unwrap();
                    assert_eq!((f.received_minor, f.reserved_minor), totals[n], "{step}");
                }
            } else if roll < 96 {
                // The sagas written out, as a read of them does.
                store.sagas().await.unwrap();
            } else {
                crash_now = true;
            }
            if crash_now {
                // A crash (the file as committed, copied) or a close, then
                // the store opened again: the rows hold the model's totals.
                generation += 1;
                commits += store.stats().commits;
                let next = dir.path().join(format!("store-{generation}.db"));
                let crash = random(2) == 0;
                if !crash {
                    Arc::into_inner(store).unwrap().close().await.unwrap();
                    assert_eq!(embedded_log(&path), (0, vec![]), "{step}: closed");
                }
                crash_image(&path, &next);
                path = next;
                store = Arc::new(SqliteStore::open_locked(&path, "test").unwrap());
                for n in 1..=FREEZES {
                    assert_eq!(
                        embedded_freeze_row(&path, n),
                        totals[n as usize],
                        "{step}: freeze {n}'s row after opening"
                    );
                }
            }
        }
        commits += store.stats().commits;
        assert!(commits > 3 * 256, "pruned several times: {commits} commits");
        for (request, _) in std::mem::take(&mut in_flight) {
            end_receive(
                &*store,
                &request_key(b"0200", request),
                ReceiveOutcome::Approved,
            )
            .await;
        }
        check_invariants(&*store).await;
    }
}

/// Reserves 1 on freeze 1 for each of `requests` and approves it, one
/// request at a time (a commit each).
async fn reserve_and_approve_one_by_one(
    store: &dyn Store,
    requests: std::ops::RangeInclusive<u32>,
) {
    for i in requests {
        assert!(matches!(
            store.reserve(receive(1, i, 1)).await.unwrap(),
            Reserve::Reserved(_)
        ));
        end_receive(store, &request_key(b"0200", i), ReceiveOutcome::Approved).await;
    }
}

/// The sagas' log stays small: every 256 commits the ended sagas are
/// written in a pack and the log is pruned, a saga in flight for more than
/// 1,024 log rows getting its row as it is. One receive is left in flight
/// while 1,400 others are reserved and ended a commit each; it then ends
/// like any other.
#[tokio::test]
async fn the_embedded_store_prunes_the_log_of_sagas_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchboard.db");
    let store = SqliteStore::open(&path).unwrap();
    open_freeze(&store, 1, 1_000_000).await;
    assert!(matches!(
        store.reserve(receive(1, 1, 10)).await.unwrap(),
        Reserve::Reserved(_)
    ));
    reserve_and_approve_one_by_one(&store, 2..=1_401).await;
    let (rows, logged) = embedded_sagas_on_file(&path);
    // What the commits since the last pruning logged, a record each.
    assert!(logged <= 257, "{logged} records in the log");
    assert_eq!(
        rows,
        vec![("000001".to_string(), "debiting".to_string())],
        "the saga in flight longest has its row, and only it"
    );
    // The ended sagas packed, but for those of the last 256 commits.
    let packed = embedded_packed_stans(&path);
    assert!(packed.len() > 1_400 - 256, "{}", packed.len());
    assert!(!packed.contains(&"000001".to_string()));
    end_receive(&store, &request_key(b"0200", 1), ReceiveOutcome::Approved).await;
    let sagas = store.sagas().await.unwrap();
    assert_eq!(sagas.len(), 1_401);
    assert!(sagas.iter().all(|s| s.state == SagaState::Approved));
    let f = freeze(&store, 1).await;
    assert_eq!((f.reserved_minor, f.received_minor), (0, 1_410));
    check_invariants(&store).await;
}

/// Ended sagas written in packs are found by every reader as their rows
/// were: a resend gets its own answer, a second end changes nothing, a
/// rejection's answer does not replace the saga's, `saga`, `sagas_between`
/// and `sagas` give them as ended; and a crash whose log still holds the
/// reservations of packed sagas (a saga in flight keeps the log's rows
/// from its own on) writes none of them a second time when the file is
/// opened again.
#[tokio::test]
async fn the_embedded_store_reads_ended_sagas_back_from_their_packs() {
    const LAST: u32 = 400;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchboard.db");
    let store = SqliteStore::open(&path).unwrap();
    open_freeze(&store, 1, 1_000_000).await;
    // In flight throughout (two log rows a receive, far from the 1,024
    // after which it would get a row).
    assert!(matches!(
        store.reserve(receive(1, 1, 3)).await.unwrap(),
        Reserve::Reserved(_)
    ));
    // Each saga its own request digest and answer, so that one read from
    // the wrong saga of its pack shows.
    let tag = |i: u32| (i % 200 + 20) as u8;
    let answer_for = |i: u32| {
        let mut msg = Message::new(*b"0210");
        msg.set(11, Bytes::copy_from_slice(&stan(i)));
        msg.set(
            39,
            Bytes::from_static(if i.is_multiple_of(7) { b"05" } else { b"00" }),
        );
        StoredAnswer {
            request_digest: digest(tag(i)),
            response: build_bytes(&Spec::switchboard(), &msg).unwrap(),
        }
    };
    for i in 2..=LAST {
        let mut request = receive(1, i, 3);
        request.request_digest = digest(tag(i));
        assert!(matches!(
            store.reserve(request).await.unwrap(),
            Reserve::Reserved(_)
        ));
        // Every seventh fails: its amount goes back to the freeze.
        let outcome = if i % 7 == 0 {
            ReceiveOutcome::Failed
        } else {
            ReceiveOutcome::Approved
        };
        let key = request_key(b"0200", i);
        let settled = store
            .settle_receive(&key, outcome, answer_for(i), FollowUp::default())
            .await
            .unwrap();
        assert_eq!(settled, Settled::Now);
    }
    let packed = embedded_packed_stans(&path);
    assert!(packed.len() >= 256, "{}", packed.len());
    assert!(packed.contains(&stan_text(7)) && packed.contains(&stan_text(8)));
    assert!(!packed.contains(&stan_text(1)));
    let (rows, logged) = embedded_sagas_on_file(&path);
    assert!(rows.is_empty(), "{rows:?}");
    assert!(
        logged > 2 * 256,
        "the log kept from saga 1's row on: {logged}"
    );
    let approved_total = 3 * (2..=LAST).filter(|i| i % 7 != 0).count() as u64;
    let before = freeze(&store, 1).await;
    assert_eq!(
        (before.reserved_minor, before.received_minor),
        (3, approved_total)
    );
    let every_saga_once = |sagas: &[switchboard::store::SagaRecord]| {
        assert_eq!(sagas.len(), LAST as usize, "every saga once");
        let stans: Vec<[u8; 6]> = sagas.iter().map(|s| s.request.stan).collect();
        let expected: Vec<[u8; 6]> = (1..=LAST).map(stan).collect();
        assert_eq!(stans, expected);
    };

    // A crash now (before any read writes the book's sagas out): the file
    // is opened again, its log folded.
    let crashed = dir.path().join("crashed.db");
    crash_image(&path, &crashed);
    let after_crash = SqliteStore::open(&crashed).unwrap();
    let sagas = after_crash.sagas().await.unwrap();
    every_saga_once(&sagas);
    assert_eq!(sagas[0].state, SagaState::Debiting);
    assert_eq!(freeze(&after_crash, 1).await, before);
    check_invariants(&after_crash).await;
    after_crash.close().await.unwrap();

    // Resends: each its own answer, with the digest of the request it answered.
    for i in [7, 8, 100, 255] {
        let mut request = receive(1, i, 3);
        request.request_digest = digest(tag(i));
        match store.reserve(request).await.unwrap() {
            Reserve::Duplicate {
                request_digest,
                answer,
            } => {
                assert_eq!(request_digest, digest(tag(i)), "{i}");
                assert_eq!(answer, Some(answer_for(i)), "{i}");
            }
            other => panic!("{i}: {other:?}"),
        }
    }
    // A second end: nothing changes, the answer of the first is given.
    assert_eq!(
        end_receive(&store, &request_key(b"0200", 7), ReceiveOutcome::Approved).await,
        Settled::Before {
            answer: Some(answer_for(7))
        }
    );
    // A rejection under a packed saga's key is not recorded over it.
    assert_eq!(
        store
            .record_answer(&request_key(b"0200", 9), answer(b"0210", "30", 5))
            .await
            .unwrap(),
        Recorded::Held {
            request_digest: digest(tag(9))
        }
    );
    let seventh = store.saga(&request_key(b"0200", 7)).await.unwrap().unwrap();
    assert_eq!(
        (
            seventh.state,
            seventh.amount_minor,
            seventh.receiver_pan.as_str()
        ),
        (SagaState::Failed, 3, "6222020000000001")
    );
    assert_eq!(seventh.debit, Some(debit_of(7)));
    assert_eq!(seventh.credit, Some(credit_of(7)));
    assert_eq!(seventh.response_code.as_deref(), Some("05"));
    assert_eq!(seventh.request_digest, digest(tag(7)));
    // The day's read: by creation time, packed or not, in order.
    let created = |i: i64| 1_700_000_100_000 + i;
    let between = store
        .sagas_between(created(100), created(300))
        .await
        .unwrap();
    let stans: Vec<[u8; 6]> = between.iter().map(|s| s.request.stan).collect();
    let expected: Vec<[u8; 6]> = (100..300).map(stan).collect();
    assert_eq!(stans, expected);
    assert_eq!(freeze(&store, 1).await, before);
    end_receive(&store, &request_key(b"0200", 1), ReceiveOutcome::Approved).await;
    store.close().await.unwrap();

    // Reopened: every saga once, ended.
    let store = SqliteStore::open(&path).unwrap();
    let after = freeze(&store, 1).await;
    assert_eq!(
        (after.reserved_minor, after.received_minor),
        (0, approved_total + 3)
    );
    let sagas = store.sagas().await.unwrap();
    every_saga_once(&sagas);
    assert!(sagas.iter().all(|s| s.state.is_final()));
    check_invariants(&store).await;
}

fn stan_text(n: u32) -> String {
    String::from_utf8(stan(n).to_vec()).unwrap()
}

/// A command such as `switchboard journal` opens the embedded store beside
/// a running switch, without its lock, and folds the sagas' log into
/// `sagas` as any opening does. The switch's sagas in flight then have their
/// rows already: their ends update them, and the log is pruned as before.
#[tokio::test]
async fn the_embedded_store_ends_sagas_whose_rows_another_opening_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchboard.db");
    let store = Arc::new(SqliteStore::open(&path).unwrap());
    open_freeze(&*store, 1, 100_000).await;
    assert_eq!(reserve_concurrently(&store, 1, 1..=3, 10).await, 3);
    SqliteStore::open(&path).unwrap().close().await.unwrap();
    let (rows, logged) = embedded_sagas_on_file(&path);
    assert_eq!((rows.len(), logged), (3, 0));

    end_receive(&*store, &request_key(b"0200", 1), ReceiveOutcome::Approved).await;
    end_receive(&*store, &request_key(b"0200", 2), ReceiveOutcome::Failed).await;
    // A resend of an ended one: its row says in flight, its end (in
    // memory) has the answer.
    match store.reserve(receive(1, 1, 10)).await.unwrap() {
        Reserve::Duplicate {
            answer: recorded, ..
        } => assert_eq!(recorded, Some(answer(b"0210", "00", 2))),
        other => panic!("{other:?}"),
    }
    // The log's pruning writes the rows of sagas in flight long: saga 3's
    // row is there already.
    reserve_and_approve_one_by_one(&*store, 4..=1_400).await;
    end_receive(&*store, &request_key(b"0200", 3), ReceiveOutcome::Approved).await;
    // Every row written (the ended sagas' last ones by this read).
    assert_eq!(store.sagas().await.unwrap().len(), 1_400);
    assert_eq!(store.stats().reruns, 0, "no statement failed on the way");
    let (rows, logged) = embedded_sagas_on_file(&path);
    assert!(logged <= 257, "{logged}");
    assert!(
        rows.iter().all(|(_, state)| state != "debiting"),
        "{rows:?}"
    );
    // Each saga in one place: a row (those the other opening wrote, and
    // the ended ones of the first pruning after it, which could not know
    // which rows it wrote) or a pack (the rest).
    let packed = embedded_packed_stans(&path);
    let mut every: Vec<String> = rows.iter().map(|(stan, _)| stan.clone()).collect();
    for stan in ["000001", "000002", "000003"] {
        assert!(every.contains(&stan.to_string()), "{stan} has its row");
    }
    assert!(packed.len() > 1_000, "{}", packed.len());
    every.extend(packed);
    every.sort();
    let expected: Vec<String> = (1..=1_400).map(|i| format!("{i:06}")).collect();
    assert_eq!(every, expected);
    let f = freeze(&*store, 1).await;
    assert_eq!((f.reserved_minor, f.received_minor), (0, 20 + 1_397));
    check_invariants(&*store).await;
}

/// A reservation that fails rolls back alone, while the reservations that
/// shared its batch are logged and held, their freeze's totals with them:
/// freeze 2's sealed PAN cannot be opened, so every reservation on it fails,
/// and so does every read of all freezes, which share batches with them.
#[tokio::test]
async fn the_embedded_store_holds_the_reservations_a_failing_one_shared_a_batch_with() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchboard.db");
    let store = SqliteStore::open(&path).unwrap();
    open_freeze(&store, 1, 1000).await;
    open_freeze(&store, 2, 1000).await;
    store.close().await.unwrap();
    let raw = rusqlite::Connection::open(&path).unwrap();
    let pan: String = raw
        .query_row(
            "SELECT payer_pan FROM freezes WHERE stan = '000002'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    raw.execute(
        "UPDATE freezes SET payer_pan = 'enc1:9:00' WHERE stan = '000002'",
        [],
    )
    .unwrap();
    let store = Arc::new(SqliteStore::open(&path).unwrap());
    let tasks: Vec<_> = (1..=30u32)
        .map(|i| {
            let store = store.clone();
            let freeze = if i % 3 == 0 { 2 } else { 1 };
            tokio::spawn(async move { (i, store.reserve(receive(freeze, i, 10)).await) })
        })
        .collect();
    let reads: Vec<_> = (0..10)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.freezes().await })
        })
        .collect();
    for read in reads {
        let read = read.await.unwrap();
        assert!(
            matches!(&read, Err(e) if e.to_string().contains("data key")),
            "{read:?}"
        );
    }
    for t in tasks {
        match t.await.unwrap() {
            (i, result) if i % 3 == 0 => assert!(
                matches!(&result, Err(e) if e.to_string().contains("data key")),
                "{i}: {result:?}"
            ),
            (i, result) => assert!(
                matches!(result, Ok(Reserve::Reserved(_))),
                "{i}: {result:?}"
            ),
        }
    }
    assert!(store.stats().reruns >= 1, "{:?}", store.stats());
    for i in (1..=30).filter(|i| i % 3 != 0) {
        end_receive(&*store, &request_key(b"0200", i), ReceiveOutcome::Approved).await;
    }
    let f1 = freeze(&*store, 1).await;
    assert_eq!((f1.reserved_minor, f1.received_minor), (0, 200));
    let sagas = store.sagas().await.unwrap();
    assert_eq!(sagas.len(), 20);
    assert!(sagas.iter().all(|s| s.state == SagaState::Approved));
    Arc::into_inner(store).unwrap().close().await.unwrap();
    raw.execute(
        "UPDATE freezes SET payer_pan = ?1 WHERE stan = '000002'",
        [pan],
    )
    .unwrap();
    let store = SqliteStore::open(&path).unwrap();
    let (f1, f2) = (freeze(&store, 1).await, freeze(&store, 2).await);
    assert_eq!((f1.reserved_minor, f1.received_minor), (0, 200));
    assert_eq!((f2.reserved_minor, f2.received_minor), (0, 0));
    check_invariants(&store).await;
}

/// When the sagas' log cannot be folded back after a failure (here a
/// trigger refuses one saga's row), the store holds nothing of what the
/// failed batch did and logs nothing until the log is read back: commands
/// that need the sagas fail meanwhile, others go on. A reservation that
/// shared the failed batch is then neither logged nor written.
#[tokio::test]
async fn the_embedded_store_logs_nothing_while_its_sagas_cannot_be_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchboard.db");
    let store = SqliteStore::open(&path).unwrap();
    open_freeze(&store, 1, 1000).await;
    store.close().await.unwrap();
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute_batch(
        "CREATE TRIGGER fail_follow_up BEFORE INSERT ON saf WHEN NEW.order_key = 'r1'
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END;
         CREATE TRIGGER fail_fold BEFORE INSERT ON sagas WHEN NEW.stan = '000777'
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
    )
    .unwrap();
    // Commands sent together share a batch.
    let options = SqliteOptions {
        commit_interval: Duration::from_millis(300),
        commit_interval_above: 0,
        ..SqliteOptions::default()
    };
    let store = Arc::new(SqliteStore::open_with(&path, options).unwrap());
    for i in [777, 1] {
        assert!(matches!(
            store.reserve(receive(1, i, 10)).await.unwrap(),
            Reserve::Reserved(_)
        ));
    }
    // A reservation and a failing end in one batch: the batch is rolled
    // back, and the log cannot be folded (saga 777's row is refused).
    let reserve = {
        let store = store.clone();
        tokio::spawn(async move { store.reserve(receive(1, 5, 10)).await })
    };
    // The reservation first in the batch: it succeeds before the end fails.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let follow_up = FollowUp {
        saf: vec![saf_entry("r1", "follow-up")],
        unfreeze_if_closed: None,
    };
    let ended = store
        .settle_receive(
            &request_key(b"0200", 1),
            ReceiveOutcome::Approved,
            answer(b"0210", "00", 2),
            follow_up,
        )
        .await;
    assert!(ended.is_err(), "{ended:?}");
    let reserved = reserve.await.unwrap();
    assert!(
        matches!(reserved, Err(StoreError::Unavailable(_))),
        "{reserved:?}"
    );
    // What needs no saga goes on, and commits nothing of the failed batch.
    store.insert_freeze(new_freeze(3, 5)).await.unwrap();
    assert!(matches!(
        store.reserve(receive(1, 6, 10)).await,
        Err(StoreError::Unavailable(_))
    ));
    assert_eq!(embedded_sagas_on_file(&path), (vec![], 2));

    raw.execute_batch("DROP TRIGGER fail_fold").unwrap();
    assert!(matches!(
        store.reserve(receive(1, 5, 10)).await.unwrap(),
        Reserve::Reserved(_)
    ));
    let sagas = store.sagas().await.unwrap();
    let stans: Vec<[u8; 6]> = sagas.iter().map(|s| s.request.stan).collect();
    assert_eq!(stans.len(), 3, "{stans:?}");
    for n in [1, 5, 777] {
        assert!(stans.contains(&stan(n)), "{n}: {stans:?}");
    }
    assert!(sagas.iter().all(|s| s.state == SagaState::Debiting));
    assert_eq!(freeze(&*store, 1).await.reserved_minor, 30);
    check_invariants(&*store).await;
}

/// A log row of sagas in flight that cannot be read back stops the store
/// from opening, naming the row and the byte: the sagas it holds might
/// otherwise be lost to recovery.
#[tokio::test]
async fn a_damaged_log_of_sagas_in_flight_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchboard.db");
    let copy = dir.path().join("copy.db");
    let store = Arc::new(SqliteStore::open(&path).unwrap());
    open_freeze(&*store, 1, 1000).await;
    assert_eq!(reserve_concurrently(&store, 1, 1..=2, 10).await, 2);
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute("VACUUM INTO ?1", [copy.to_str().unwrap()])
        .unwrap();
    drop(store);
    let conn = rusqlite::Connection::open(&copy).unwrap();
    conn.execute("UPDATE saga_log SET body = substr(body, 1, 20)", [])
        .unwrap();
    drop(conn);
    let err = SqliteStore::open(&copy).unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt(m) if m.contains("saga log row 1, byte ")),
        "{err}"
    );
}

/// The embedded store writes its journal as packs (a row per commit); rows
/// written one each by an older version stay in the `journal` table. Both
/// are read together in time order, counted, and purged, a pack across the
/// purged stretch's end keeping the messages outside it.
#[tokio::test]
async fn the_embedded_journal_reads_and_purges_old_rows_and_packs_together() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchboard.db");
    SqliteStore::open(&path).unwrap().close().await.unwrap();
    let legacy = [5u32, 15];
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        for i in legacy {
            let e = journal_entry(i);
            conn.execute(
                "INSERT INTO journal (at_ms, direction, peer, mti, processing_code, stan, \
                 transmission, acquirer, response_code, pan_masked, amount_minor, note, raw) \
                 VALUES (?1, 'out', ?2, '0200', ?3, ?4, ?5, ?6, NULL, ?7, 100, NULL, ?8)",
                rusqlite::params![
                    e.at_ms,
                    e.peer,
                    e.processing_code,
                    e.stan,
                    e.transmission,
                    e.acquirer,
                    e.pan_masked,
                    e.raw.to_vec()
                ],
            )
            .unwrap();
        }
    }
    let store = SqliteStore::open(&path).unwrap();
    for i in (0..30).filter(|i| !legacy.contains(i)) {
        store.journal(journal_entry(i));
    }
    // One far from the rest, in the same commit: in a pack of its own.
    store.journal(journal_entry(600_000));
    let base = 1_700_000_000_000;
    let stans = |entries: &[JournalEntry]| -> Vec<String> {
        entries.iter().map(|e| e.stan.clone().unwrap()).collect()
    };
    let all = store.journal_between(base, base + 30).await.unwrap();
    let want: Vec<String> = (0..30).map(|i| format!("{i:06}")).collect();
    assert_eq!(stans(&all), want);
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.raw, format!("raw {i}"));
    }
    let far = store
        .journal_between(base + 599_990, base + 600_010)
        .await
        .unwrap();
    assert_eq!(stans(&far), ["600000"]);
    assert_eq!(
        store.journal_len(base + 10, base + 20).await.unwrap(),
        Some(10)
    );
    assert_eq!(
        store.journal_len(base, base + 700_000).await.unwrap(),
        Some(31)
    );

    // Purging [10, 20): the old row 15 and the nine packed entries, whose
    // pack runs on past 20; nothing is left to purge after.
    let maintenance: &dyn switchboard::store::Maintenance = &store;
    assert_eq!(
        maintenance
            .purge_journal(base + 10, base + 20, 100)
            .await
            .unwrap(),
        10
    );
    assert_eq!(
        maintenance
            .purge_journal(base + 10, base + 20, 100)
            .await
            .unwrap(),
        0
    );
    let all = store.journal_between(base, base + 30).await.unwrap();
    assert_eq!(stans(&all), want);
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.raw.is_empty(), (10..20).contains(&i), "{e:?}");
        assert_eq!(e.pan_masked.as_deref(), Some("622202******0001"));
        if !e.raw.is_empty() {
            assert_eq!(e.raw, format!("raw {i}"));
        }
    }
    // Then everything, one entry asked a call: the old row 5, then whole
    // packs until an entry is emptied; only entries whose messages were
    // still there count, and a call empties fewer than asked only when none
    // are left.
    let mut calls = Vec::new();
    loop {
        let n = maintenance
            .purge_journal(base, base + 700_000, 1)
            .await
            .unwrap();
        calls.push(n);
        if n < 1 {
            break;
        }
    }
    assert_eq!(calls.iter().sum::<usize>(), 21, "{calls:?}");
    assert!(calls[0] >= 2 && calls.len() <= 4, "{calls:?}");
    let all = store.journal_between(base, base + 700_000).await.unwrap();
    assert_eq!(all.len(), 31);
    assert!(all.iter().all(|e| e.raw.is_empty()), "{all:?}");
    // Rekeying walks the packs' messages too.
    assert!(maintenance
        .sealed_columns()
        .iter()
        .any(|c| c.name() == "journal_packs.raws"));
    store.close().await.unwrap();
}

async fn journal_entries_are_all_written_in_order(backend: Backend) {
    let fixture = backend.open().await;
    {
        let store = fixture.store();
        for i in 0..2000 {
            store.journal(journal_entry(i));
        }
        // Interleaved with commands.
        open_freeze(&*store, 1, 100).await;
        for i in 2000..2100 {
            store.journal(journal_entry(i));
            let _ = store.reserve(receive(1, i, 1)).await.unwrap();
        }
        assert_eq!(journal_len(&*store).await, 2100);
        for i in 2100..2200 {
            store.journal(journal_entry(i));
        }
    }
    // Closing writes what is still queued.
    let fixture = fixture.reopen().await;
    let want: Vec<String> = (0..2200).map(|i| format!("{i:06}")).collect();
    assert_eq!(fixture.journal_stans().await, want);
    assert_eq!(journal_len(&*fixture.store()).await, 2200);
}

/// A message journaled as it crossed the wire (`journal_message`, which
/// the embedded store encodes straight from the message) reads back with
/// every column as the fields say, the PAN masked, and as the entry
/// `JournalEntry::of` makes of it journaled through `journal`.
async fn a_message_journaled_reads_back_as_its_entry(backend: Backend) {
    let fixture = backend.open().await;
    let store = fixture.store();
    let base = 1_700_000_100_000;
    let mut full = Message::new(*b"0200");
    for (n, v) in [
        (2, "6222020200112233441"),
        (3, "400000"),
        (4, "000000012345"),
        (7, "1201093000"),
        (11, "000042"),
        (32, "48020000"),
        (39, "00"),
    ] {
        full.set(n, Bytes::copy_from_slice(v.as_bytes()));
    }
    let bare = Message::new(*b"0800");
    let mut odd = Message::new(*b"0210");
    // Not UTF-8, and an amount that is not digits: no column for either.
    odd.set(11, Bytes::from_static(b"\xff\xfe0001"));
    odd.set(4, Bytes::from_static(b"12AB"));
    let cases = [
        (Direction::In, "wallet 127.0.0.1:5000", &full, None),
        (
            Direction::Out,
            "bank 48020000",
            &bare,
            Some("unmatched response"),
        ),
        (Direction::In, "bank 01050000", &odd, None),
    ];
    for (i, (direction, peer, msg, note)) in cases.iter().enumerate() {
        let raw = Bytes::from(format!("raw {i}"));
        let at = base + 2 * i as i64;
        let note = note.map(String::from);
        store.journal(JournalEntry::of(
            *direction,
            peer,
            msg,
            raw.clone(),
            at,
            note.clone(),
        ));
        store.journal_message(*direction, peer, msg, raw, at + 1, note);
    }
    let entries = store.journal_between(base, base + 10).await.unwrap();
    assert_eq!(entries.len(), 2 * cases.len());
    for pair in entries.chunks(2) {
        let (owned, encoded) = (&pair[0], &pair[1]);
        assert_eq!(encoded.at_ms, owned.at_ms + 1);
        assert_eq!(
            format!(
                "{:?}",
                JournalEntry {
                    at_ms: 0,
                    ..encoded.clone()
                }
            ),
            format!(
                "{:?}",
                JournalEntry {
                    at_ms: 0,
                    ..owned.clone()
                }
            )
        );
    }
    let e = &entries[1];
    assert_eq!(
        (
            e.direction,
            e.peer.as_str(),
            e.mti,
            e.processing_code.as_deref(),
            e.stan.as_deref(),
            e.transmission.as_deref(),
            e.acquirer.as_deref(),
            e.response_code.as_deref(),
            e.pan_masked.as_deref(),
            e.amount_minor,
            e.note.as_deref(),
            e.raw.clone(),
        ),
        (
            Direction::In,
            "wallet 127.0.0.1:5000",
            *b"0200",
            Some("400000"),
            Some("000042"),
            Some("1201093000"),
            Some("48020000"),
            Some("00"),
            Some("622202*********3441"),
            Some(12_345),
            None,
            Bytes::from("raw 0"),
        )
    );
    let e = &entries[3];
    assert_eq!(
        (
            e.peer.as_str(),
            e.mti,
            e.stan.as_deref(),
            e.pan_masked.as_deref(),
            e.amount_minor,
            e.note.as_deref()
        ),
        (
            "bank 48020000",
            *b"0800",
            None,
            None,
            None,
            Some("unmatched response")
        )
    );
    let e = &entries[5];
    assert_eq!((e.stan.as_deref(), e.amount_minor), (None, None));
}

async fn reads_by_time_for_clearing(backend: Backend) {
    let fixture = backend.open().await;
    let store = fixture.store();
    for i in 0..100 {
        store.journal(journal_entry(i));
    }
    // journal_entry(i) is at 1_700_000_000_000 + i.
    let base = 1_700_000_000_000;
    let slice = store.journal_between(base + 10, base + 20).await.unwrap();
    let stans: Vec<String> = slice.iter().map(|e| e.stan.clone().unwrap()).collect();
    let want: Vec<String> = (10..20).map(|i| format!("{i:06}")).collect();
    assert_eq!(stans, want);
    let e = &slice[0];
    assert_eq!(
        (e.direction, e.mti, e.amount_minor, e.raw.clone()),
        (Direction::In, *b"0200", Some(100), Bytes::from("raw 10"))
    );
    assert!(store
        .journal_between(base + 100, base + 200)
        .await
        .unwrap()
        .is_empty());

    // Packed for clearing: the same entries; an answer's raw message is left
    // out when only the requests' are asked for.
    store.journal(JournalEntry {
        mti: *b"0210",
        at_ms: base + 50,
        note: Some("late".into()),
        acquirer: None,
        ..journal_entry(1000)
    });
    for raw in [RawMessages::All, RawMessages::RequestsOnly] {
        let entries = store.journal_between(base + 40, base + 60).await.unwrap();
        let slice = store
            .journal_slice(base + 40, base + 60, raw)
            .await
            .unwrap();
        assert_eq!(slice.len(), entries.len());
        for (view, e) in slice.iter().zip(&entries) {
            assert_eq!(
                (view.at_ms, view.direction, view.peer, view.mti),
                (e.at_ms, e.direction, e.peer.as_str(), e.mti)
            );
            assert_eq!(
                [
                    view.processing_code,
                    view.stan,
                    view.transmission,
                    view.acquirer,
                    view.response_code,
                    view.pan_masked,
                    view.note
                ],
                [
                    e.processing_code.as_deref(),
                    e.stan.as_deref(),
                    e.transmission.as_deref(),
                    e.acquirer.as_deref(),
                    e.response_code.as_deref(),
                    e.pan_masked.as_deref(),
                    e.note.as_deref()
                ]
            );
            assert_eq!(view.amount_minor, e.amount_minor);
            let answer_left_out = raw == RawMessages::RequestsOnly && e.mti == *b"0210";
            let want = if answer_left_out {
                Bytes::new()
            } else {
                e.raw.clone()
            };
            assert_eq!(view.raw(), want);
        }
        assert!(entries.iter().any(|e| e.mti == *b"0210"));
        // Read again into the first slice's buffers: the same entries.
        let again = store
            .journal_slice_reusing(base + 40, base + 60, raw, slice)
            .await
            .unwrap();
        assert_eq!(again.len(), entries.len());
        for (view, e) in again.iter().zip(&entries) {
            assert_eq!(
                (view.at_ms, view.peer, view.note),
                (e.at_ms, e.peer.as_str(), e.note.as_deref())
            );
        }
        // A store that counts counts the same entries.
        let counted = store.journal_len(base + 40, base + 60).await.unwrap();
        assert!(
            counted.is_none_or(|n| n == entries.len() as u64),
            "{counted:?}"
        );
    }

    open_freeze(&*store, 1, 1000).await;
    for i in 0..5 {
        store.reserve(receive(1, i, 10)).await.unwrap();
    }
    // receive(_, i, _) is created at 1_700_000_100_000 + i.
    let sagas = store
        .sagas_between(1_700_000_100_001, 1_700_000_100_003)
        .await
        .unwrap();
    let requests: Vec<RequestKey> = sagas.iter().map(|s| s.request).collect();
    assert_eq!(
        requests,
        vec![request_key(b"0200", 1), request_key(b"0200", 2)]
    );
    assert!(store.saf_entries_since(0).await.unwrap().is_empty());
}

async fn journal_is_written_with_the_next_commit(backend: Backend) {
    let fixture = backend.open().await;
    let store = fixture.store();
    assert_eq!(journal_len(&*store).await, 0);
    store.journal(journal_entry(1));
    store.journal(journal_entry(2));
    assert_eq!(journal_len(&*store).await, 2);
    // Without any command following, the wake-up still writes it soon.
    store.journal(journal_entry(3));
    let start = Instant::now();
    loop {
        if fixture.journal_stans().await.len() == 3 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "journal not written"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------
// Files this build must not trust or cannot read

async fn corrupt_stored_values_are_errors_not_panics(backend: Backend) {
    let fixture = backend.open().await;
    {
        let store = fixture.store();
        open_freeze(&*store, 1, 1000).await;
        store.reserve(receive(1, 1, 10)).await.unwrap();
    }
    // Closed: the saga in flight has its row (`saga_book.rs`).
    let fixture = fixture.reopen().await;
    fixture
        .sql(
            "UPDATE freezes SET transmission = '12';
             UPDATE sagas SET request_digest = x'0102';
             UPDATE answers SET request_digest = x'01';",
            "UPDATE freezes SET transmission = '12';
             UPDATE sagas SET request_digest = '\\x0102';
             UPDATE answers SET request_digest = '\\x01';",
        )
        .await;
    let fixture = fixture.reopen().await;
    let store = fixture.store();
    assert!(matches!(store.freezes().await, Err(StoreError::Corrupt(_))));
    assert!(matches!(
        store.reserve(receive(1, 1, 10)).await,
        Err(StoreError::Corrupt(_))
    ));
    assert!(matches!(
        store.answer(&freeze_request(1)).await,
        Err(StoreError::Corrupt(_))
    ));
    // The store is still usable for everything else.
    store.insert_freeze(new_freeze(2, 5)).await.unwrap();
    assert_eq!(freeze(&*store, 2).await.amount_minor, 5);
}

/// A command that fails after writing rolls back alone: the rest of its
/// batch commits. A trigger injects the failure into the store-and-forward
/// entry a receive's end queues, after the freeze's update.
async fn a_failing_command_rolls_back_alone_within_its_batch(backend: Backend) {
    let fixture = backend.open().await;
    {
        let store = fixture.store();
        open_freeze(&*store, 1, 1000).await;
        for i in 0..50u32 {
            let reserved = store.reserve(receive(1, i, 10)).await.unwrap();
            assert!(
                matches!(reserved, Reserve::Reserved(_)),
                "{i}: {reserved:?}"
            );
        }
    }
    fixture
        .sql(
            "CREATE TRIGGER fail_some BEFORE INSERT ON saf WHEN NEW.order_key IN ('r13', 'r31')
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
            "CREATE FUNCTION fail_some() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF NEW.order_key IN ('r13', 'r31') THEN
                     RAISE EXCEPTION 'injected failure';
                 END IF;
                 RETURN NEW;
             END $$;
             CREATE TRIGGER fail_some BEFORE INSERT ON saf
             FOR EACH ROW EXECUTE FUNCTION fail_some();",
        )
        .await;
    let fixture = fixture.reopen().await;
    let store = fixture.store();
    let before = fixture.stats();
    approve_all_but_injected(store.clone(), 0..50, &[13, 31]).await;
    let after = fixture.stats();
    assert!(
        after.1 - before.1 < after.0 - before.0,
        "{before:?} {after:?}"
    );
    let f = freeze(&*store, 1).await;
    assert_eq!((f.reserved_minor, f.received_minor), (20, 480));
    let sagas = store.sagas().await.unwrap();
    assert_eq!(sagas.len(), 50);
    assert_eq!(sagas.iter().filter(|s| s.state.is_final()).count(), 48);
    assert_eq!(store.saf_entries().await.unwrap().len(), 48);
    check_invariants(&*store).await;
}

async fn a_newer_schema_is_refused(backend: Backend) {
    let fixture = backend.open().await;
    fixture
        .sql(
            "PRAGMA user_version = 99;",
            "INSERT INTO schema_migrations (version, description) VALUES (99, 'from the future')",
        )
        .await;
    let Err(err) = fixture.target.try_open().await else {
        panic!("a schema newer than this build was opened");
    };
    assert!(err.to_string().contains("newer"), "{err}");
}

#[tokio::test]
async fn options_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_with(
        &dir.path().join("switchboard.db"),
        SqliteOptions {
            synchronous_full: false,
            max_batch: 1,
            ..SqliteOptions::default()
        },
    )
    .unwrap();
    open_freeze(&store, 1, 10).await;
    let store = Arc::new(store);
    let before = store.stats();
    let tasks: Vec<_> = (0..20u32)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.freeze(&freeze_key(i)).await.unwrap() })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let after = store.stats();
    // One command per transaction.
    assert_eq!(
        after.commits - before.commits,
        after.commands - before.commands
    );
}

// ---------------------------------------------------------------------------
// Every test above, once per store (the memory store skips what needs a
// database, each named with why)

/// The risk ledger: a limit at its count and sum passes and records, one
/// past it does not; an enforced limit exceeded records none of the
/// request's events while an observed one records them; events before a
/// limit's start no longer count; distinct values count once; concurrent
/// takes never pass a limit; hits are counted by day.
async fn risk_ledger_judges_and_records_in_one_step(backend: Backend) {
    use switchboard::store::{Hit, Limit};
    let fixture = backend.open().await;
    let store = fixture.store();
    let limit = |rule: &str, subject: &str, since_ms, count, sum, amount, enforce| Limit {
        rule: rule.into(),
        subject: subject.into(),
        since_ms,
        window_ms: None,
        max_count: count,
        max_sum_minor: sum,
        amount_minor: amount,
        enforce,
        distinct: None,
        record: true,
    };
    let count2 = |since| limit("count", "card:a", since, Some(2), None, 1, true);
    assert_eq!(
        store.take(vec![count2(0)], 10).await.unwrap(),
        Vec::<usize>::new()
    );
    assert_eq!(
        store.take(vec![count2(0)], 20).await.unwrap(),
        Vec::<usize>::new()
    );
    assert_eq!(
        store.take(vec![count2(0)], 30).await.unwrap(),
        [0],
        "one past"
    );
    // From 15 on only the event at 20 counts.
    assert_eq!(
        store.take(vec![count2(15)], 40).await.unwrap(),
        Vec::<usize>::new()
    );
    // A sum at its maximum passes; an enforced limit exceeded keeps the
    // other limit of the request from recording.
    let sum = |amount| limit("sum", "card:b", 0, None, Some(100), amount, true);
    let other = limit("other", "card:b", 0, Some(1), None, 1, true);
    assert_eq!(
        store.take(vec![sum(100)], 1).await.unwrap(),
        Vec::<usize>::new()
    );
    assert_eq!(
        store.take(vec![sum(1), other.clone()], 2).await.unwrap(),
        [0]
    );
    assert_eq!(
        store.take(vec![other.clone()], 3).await.unwrap(),
        Vec::<usize>::new(),
        "not recorded before"
    );
    // Observed: exceeded, and recorded all the same.
    let observed = Limit {
        enforce: false,
        ..other.clone()
    };
    assert_eq!(store.take(vec![observed.clone()], 4).await.unwrap(), [0]);
    // Distinct values: the same packet counts once.
    let packets = |p: &str| Limit {
        distinct: Some(p.into()),
        ..limit("packets", "card:c", 0, Some(2), None, 1, true)
    };
    for (p, exceeded) in [
        ("p1", false),
        ("p1", false),
        ("p2", false),
        ("p3", true),
        ("p2", false),
    ] {
        let got = store.take(vec![packets(p)], 5).await.unwrap();
        assert_eq!(!got.is_empty(), exceeded, "{p}");
    }
    // Concurrent takes of one subject never pass its limit.
    let takes: Vec<_> = (0..20)
        .map(|i| {
            let store = store.clone();
            let l = limit("race", "card:d", 0, Some(7), None, 1, true);
            tokio::spawn(async move { store.take(vec![l], 100 + i).await.unwrap().is_empty() })
        })
        .collect();
    let mut passed = 0;
    for t in takes {
        passed += usize::from(t.await.unwrap());
    }
    assert_eq!(passed, 7);
    // Swept: nothing before 1,000 is left.
    store.forget_before(1_000).await.unwrap();
    assert_eq!(
        store.take(vec![count2(0)], 2_000).await.unwrap(),
        Vec::<usize>::new()
    );
    // Hits, counted by day, rule, card and institution.
    let hit = |day: &str, rule: &str| Hit {
        at_ms: 1,
        day: day.into(),
        rule: rule.into(),
        mode: "enforce".into(),
        code: "61".into(),
        card: "622202******0018".into(),
        institution: "01020000".into(),
    };
    store
        .record_hits(vec![
            hit("2026-12-02", "a"),
            hit("2026-12-02", "a"),
            hit("2026-12-02", "b"),
            hit("2026-12-03", "a"),
        ])
        .await
        .unwrap();
    let day = store.hits_of_day("2026-12-02").await.unwrap();
    let lines: Vec<(&str, u64)> = day.iter().map(|l| (l.rule.as_str(), l.hits)).collect();
    assert_eq!(lines, [("a", 2), ("b", 1)]);
    assert_eq!(day[0].card, "622202******0018");
}

/// Risk counters are durable: after close and reopen (on SQLite, an empty
/// counter book loaded again from the stored events) a daily total, a
/// sliding window and a distinct count go on from where they were.
async fn risk_counters_survive_close_and_reopen(backend: Backend) {
    use switchboard::store::Limit;
    let fixture = backend.open().await;
    let limit = |rule: &str, since_ms, window_ms, distinct: Option<&str>| Limit {
        rule: rule.into(),
        subject: "card:a".into(),
        since_ms,
        window_ms,
        max_count: Some(2),
        max_sum_minor: Some(1_000),
        amount_minor: 400,
        enforce: true,
        distinct: distinct.map(Into::into),
        record: true,
    };
    let daily = || limit("daily", 0, None, None);
    let burst = |now: i64| limit("burst", now - 100, Some(100), None);
    let packets = |now: i64, p: &str| limit("packets", now - 100, Some(100), Some(p));
    {
        let store = fixture.store();
        for (now, p) in [(10, "p1"), (20, "p2")] {
            let got = store
                .take(vec![daily(), burst(now), packets(now, p)], now)
                .await
                .unwrap();
            assert!(got.is_empty(), "at {now}: {got:?}");
        }
    }
    let fixture = fixture.reopen().await;
    let store = fixture.store();
    // Daily: 2 events of 400 stored; a third is one past the count and the sum.
    assert_eq!(store.take(vec![daily()], 30).await.unwrap(), [0]);
    // The window: both events still in it at 105, the first gone at 111.
    assert_eq!(store.take(vec![burst(105)], 105).await.unwrap(), [0]);
    assert!(store.take(vec![burst(111)], 111).await.unwrap().is_empty());
    // Distinct packets: p1 and p2 stored; p1 again passes, p3 does not.
    assert!(store
        .take(vec![packets(50, "p1")], 50)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.take(vec![packets(60, "p3")], 60).await.unwrap(), [0]);
}

macro_rules! on_every_store {
    (every: [$($every:ident),* $(,)?], databases: [$($db:ident),* $(,)?] $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $every() {
                    super::$every(super::Backend::Sqlite).await
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $db() {
                    super::$db(super::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $every() {
                    super::$every(super::Backend::Postgres).await
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $db() {
                    super::$db(super::Backend::Postgres).await
                }
            )*
        }
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $every() {
                    super::$every(super::Backend::Memory).await
                }
            )*
        }
    };
}

on_every_store!(
    every: [
        insert_freeze_then_exists_with_digest_and_answer,
        record_answer_keeps_the_first,
        record_answer_leaves_a_held_key_to_its_freeze_or_saga,
        amounts_above_i64_max_are_refused_not_wrapped,
        reserve_outcomes,
        concurrent_reserves_never_pass_the_frozen_amount,
        concurrent_reserves_of_different_sizes_fit_in_turn,
        finish_receive_settles_once,
        concurrent_reserve_and_finish_keep_the_invariants,
        close_outcomes,
        stans_are_consecutive_blocks_that_wrap,
        concurrent_stan_blocks_never_overlap,
        reads_by_time_for_clearing,
        a_message_journaled_reads_back_as_its_entry,
        journal_is_written_with_the_next_commit,
        reserve_with_identities_records_debiting_and_answers_block_resends,
        a_second_end_reports_the_first,
        a_failed_receive_of_a_closed_freeze_queues_its_unfreeze,
        a_freeze_keeps_its_request_digest,
        open_freezes_are_read_by_age,
        unfinished_is_every_pending_freeze_and_saga_not_ended,
        saf_counts_leave_out_done_entries,
        risk_ledger_judges_and_records_in_one_step,
        a_dead_entry_is_retried_and_nothing_else_is,
        audit_rows_are_kept_newest_first,
    ],
    // Only the two databases: what a process-local map legitimately lacks.
    databases: [
        // group commit: the memory store has no writer to batch
        concurrent_calls_share_commits,
        // durability: a memory store cannot be closed and opened again
        state_survives_close_and_reopen,
        risk_counters_survive_close_and_reopen,
        // written on close, checked after reopening
        journal_entries_are_all_written_in_order,
        // corrupt files: it has no file, and takes values only through the trait
        corrupt_stored_values_are_errors_not_panics,
        // a failure injected with SQL in a group commit batch
        a_failing_command_rolls_back_alone_within_its_batch,
        // schema versions of a file or database
        a_newer_schema_is_refused,
    ],
);

// ---------------------------------------------------------------------------
// PostgreSQL: several instances on one database, lost connections, restarts

/// Two stores on one database, as two switch instances have: the database
/// alone keeps every decision right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_two_stores_on_one_database() {
    let url = common::pg::database().await;
    let a: Arc<dyn Store> = Arc::new(PostgresStore::connect(&url).await.unwrap());
    let b: Arc<dyn Store> = Arc::new(PostgresStore::connect(&url).await.unwrap());
    let both = [a.clone(), b.clone()];

    // One freeze key inserted by both at once: one of them records it.
    let inserts: Vec<_> = both
        .iter()
        .map(|s| {
            let s = s.clone();
            tokio::spawn(async move { s.insert_freeze(new_freeze(1, 1000)).await.unwrap() })
        })
        .collect();
    let mut inserted = 0;
    for t in inserts {
        match t.await.unwrap() {
            InsertFreeze::Inserted => inserted += 1,
            InsertFreeze::Exists { request_digest, .. } => assert_eq!(request_digest, digest(1)),
        }
    }
    assert_eq!(inserted, 1);
    b.finish_freeze(
        &freeze_key(1),
        true,
        &freeze_request(1),
        answer(b"0110", "00", 1),
    )
    .await
    .unwrap();

    // 200 receivers of 10 on a freeze of 1000, spread over both: exactly 100.
    let tasks: Vec<_> = (0..200u32)
        .map(|i| {
            let s = both[i as usize % 2].clone();
            tokio::spawn(async move { s.reserve(receive(1, i, 10)).await.unwrap() })
        })
        .collect();
    let mut reserved = 0;
    for t in tasks {
        match t.await.unwrap() {
            Reserve::Reserved(f) => {
                assert!(f.reserved_minor <= 1000);
                reserved += 1;
            }
            Reserve::Exceeds { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(reserved, 100);
    assert_eq!(freeze(&*a, 1).await.reserved_minor, 1000);

    // Each is finished twice, once through each store: counted once.
    let finishes: Vec<_> = (0..200u32)
        .flat_map(|i| both.clone().map(move |s| (i, s)))
        .map(|(i, s)| {
            tokio::spawn(async move {
                let outcome = if i % 3 == 0 {
                    ReceiveOutcome::Failed
                } else {
                    ReceiveOutcome::Approved
                };
                let _ = s
                    .settle_receive(
                        &request_key(b"0200", i),
                        outcome,
                        answer(b"0210", "00", 2),
                        FollowUp::default(),
                    )
                    .await;
            })
        })
        .collect();
    for t in finishes {
        t.await.unwrap();
    }
    check_invariants(&*a).await;

    // The same request at both instances at once: one reserves, the other
    // sees a duplicate (the saga's primary key decides).
    open_freeze(&*a, 2, 1_000_000).await;
    let racing: Vec<_> = (1000..1040u32)
        .flat_map(|i| both.clone().map(move |s| (i, s)))
        .map(|(i, s)| tokio::spawn(async move { (i, s.reserve(receive(2, i, 7)).await.unwrap()) }))
        .collect();
    let mut outcomes: BTreeMap<u32, Vec<Reserve>> = BTreeMap::new();
    for t in racing {
        let (i, r) = t.await.unwrap();
        outcomes.entry(i).or_default().push(r);
    }
    for (i, rs) in outcomes {
        let reserved = rs
            .iter()
            .filter(|r| matches!(r, Reserve::Reserved(_)))
            .count();
        let duplicates = rs
            .iter()
            .filter(|r| matches!(r, Reserve::Duplicate { request_digest, .. } if *request_digest == digest(2)))
            .count();
        assert_eq!((reserved, duplicates), (1, 1), "request {i}: {rs:?}");
    }
    assert_eq!(freeze(&*b, 2).await.reserved_minor, 40 * 7);
    check_invariants(&*b).await;

    // STAN blocks from both never overlap.
    let blocks: Vec<_> = (0..100u32)
        .map(|i| {
            let s = both[i as usize % 2].clone();
            tokio::spawn(async move { (s.allocate_stans(1000).await.unwrap(), 1000) })
        })
        .collect();
    let mut seen = HashSet::new();
    for t in blocks {
        let (first, count) = t.await.unwrap();
        for stan in first..first + count {
            assert!(seen.insert(stan), "STAN {stan} handed out twice");
        }
    }
}

/// Receives on many freezes at once: the lanes run the reservations of a
/// batch, and the ends of its sagas, as a few set statements rather than one
/// statement each, and every decision comes out as one at a time would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_receives_of_a_batch_share_set_statements() {
    let url = common::pg::database().await;
    let store = Arc::new(PostgresStore::connect(&url).await.unwrap());
    for n in 0..60 {
        open_freeze(&*store, n, 100).await;
    }
    let before = store.stats();
    // Twelve receives of 10 on each freeze of 100: ten fit.
    let tasks: Vec<_> = (0..720u32)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let r = receive(i % 60, i, 10);
                let key = r.request;
                match store.reserve(r).await.unwrap() {
                    Reserve::Reserved(_) => {
                        let outcome = if i % 4 == 0 {
                            ReceiveOutcome::Failed
                        } else {
                            ReceiveOutcome::Approved
                        };
                        assert_eq!(end_receive(&*store, &key, outcome).await, Settled::Now);
                        Some(outcome)
                    }
                    Reserve::Exceeds { .. } => None,
                    other => panic!("unexpected {other:?}"),
                }
            })
        })
        .collect();
    let mut approved = 0;
    let mut failed = 0;
    for t in tasks {
        match t.await.unwrap() {
            Some(ReceiveOutcome::Approved) => approved += 1,
            Some(ReceiveOutcome::Failed) => failed += 1,
            None => {}
        }
    }
    let after = store.stats();
    let commands = after.commands - before.commands;
    let statements = after.statements - before.statements;
    assert!(commands >= 720, "{commands} commands");
    assert!(
        statements * 2 < commands,
        "{statements} statements for {commands} commands"
    );
    // Failed receives give their amount back, so more than ten a freeze may
    // fit; every approved amount is received exactly once.
    assert!(
        approved + failed >= 600,
        "{approved} approved, {failed} failed"
    );
    let freezes = store.freezes().await.unwrap();
    let received: u64 = freezes.iter().map(|f| f.received_minor).sum();
    let reserved: u64 = freezes.iter().map(|f| f.reserved_minor).sum();
    assert_eq!((received, reserved), (approved * 10, 0));
    check_invariants(&*store).await;
    eprintln!("{statements} statements for {commands} commands");
}

/// Two instances reserving and ending receives on the same freezes at once,
/// their batches' set statements crossing: every decision comes out right,
/// every reservation is given back or received, and no batch was rolled
/// back by a conflict (a deadlock between the two would be one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_two_stores_on_the_same_freezes_never_deadlock() {
    let url = common::pg::database().await;
    let a = Arc::new(PostgresStore::connect(&url).await.unwrap());
    let b = Arc::new(PostgresStore::connect(&url).await.unwrap());
    for n in 0..8 {
        open_freeze(&*a, n, 1_000_000).await;
    }
    let tasks: Vec<_> = (0..1600u32)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                let r = receive(i % 8, i, 1 + u64::from(i % 5));
                let key = r.request;
                assert!(matches!(
                    store.reserve(r).await.unwrap(),
                    Reserve::Reserved(_)
                ));
                let outcome = if i % 3 == 0 {
                    ReceiveOutcome::Failed
                } else {
                    ReceiveOutcome::Approved
                };
                assert_eq!(end_receive(&*store, &key, outcome).await, Settled::Now);
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let (sa, sb) = (a.stats(), b.stats());
    assert_eq!((sa.conflicts, sb.conflicts), (0, 0), "{sa:?} {sb:?}");
    assert!(
        sa.batches < sa.commands && sb.batches < sb.commands,
        "{sa:?} {sb:?}"
    );
    let reserved: u64 = a
        .freezes()
        .await
        .unwrap()
        .iter()
        .map(|f| f.reserved_minor)
        .sum();
    assert_eq!(reserved, 0);
    check_invariants(&*a).await;
}

/// A saga whose freeze is gone cannot end: the statement fails as a whole
/// (Corrupt) and leaves the saga as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_a_saga_without_its_freeze_is_corrupt_and_changes_nothing() {
    let url = common::pg::database().await;
    let store = PostgresStore::connect(&url).await.unwrap();
    open_freeze(&store, 1, 1000).await;
    store.reserve(receive(1, 1, 100)).await.unwrap();
    common::pg::execute(&url, "DELETE FROM freezes").await;
    let key = request_key(b"0200", 1);
    let result = store
        .settle_receive(
            &key,
            ReceiveOutcome::Approved,
            answer(b"0210", "00", 2),
            FollowUp::default(),
        )
        .await;
    assert!(
        matches!(result, Err(StoreError::Corrupt(ref e)) if e.contains("missing")),
        "{result:?}"
    );
    let saga = store.saga(&key).await.unwrap().unwrap();
    assert_eq!(saga.state, SagaState::Debiting);
    assert_eq!(store.answer(&key).await.unwrap(), None);
}

/// `switchboard migrate --store URL` applies the steps once, then has nothing to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_migrate_command() {
    let url = common::pg::database().await;
    let migrate = move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["migrate", "--store", &url])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let first = tokio::task::spawn_blocking(migrate.clone()).await.unwrap();
    let steps = switchboard::store::postgres::MIGRATIONS;
    for (version, description, _) in steps {
        assert!(
            first.contains(&format!("applied {version}: {description}")),
            "{first}"
        );
    }
    let again = tokio::task::spawn_blocking(migrate).await.unwrap();
    assert_eq!(
        again.trim(),
        format!("schema up to date (version {})", steps.len())
    );
}

/// Several stores migrating one new database at once all succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_concurrent_migrations() {
    let url = common::pg::database().await;
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { PostgresStore::connect(&url).await })
        })
        .collect();
    for t in opens {
        t.await.unwrap().unwrap();
    }
    let versions: Vec<i32> = common::pg::connect(&url)
        .await
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let want: Vec<i32> = switchboard::store::postgres::MIGRATIONS
        .iter()
        .map(|m| m.0)
        .collect();
    assert_eq!(versions, want);
    // Up to date: nothing more to apply.
    assert!(switchboard::store::postgres::migrate(&url)
        .await
        .unwrap()
        .is_empty());
}

/// The database drops every connection of the store while receives run:
/// calls in flight fail with `Unavailable`, the store reconnects, and nothing
/// is half-written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_lost_connections_give_unavailable_then_reconnect() {
    let url = common::pg::database().await;
    let store: Arc<dyn Store> = Arc::new(PostgresStore::connect(&url).await.unwrap());
    for n in 0..4 {
        open_freeze(&*store, n, 1_000_000).await;
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..16u32)
        .map(|w| {
            let store = store.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u32, 0u32);
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let id = w * 10_000 + i % 10_000;
                    i += 1;
                    let r = receive(id % 4, id, 1);
                    let key = r.request;
                    match store.reserve(r).await {
                        Ok(Reserve::Reserved(_)) => {}
                        Ok(other) => {
                            panic!("unexpected {other:?} for {key} after {ok} ok, {failed} failed")
                        }
                        Err(StoreError::Unavailable(_)) => {
                            failed += 1;
                            continue;
                        }
                        Err(e) => panic!("{e}"),
                    }
                    match store
                        .settle_receive(
                            &key,
                            ReceiveOutcome::Approved,
                            answer(b"0210", "00", 2),
                            FollowUp::default(),
                        )
                        .await
                    {
                        Ok(_) => ok += 1,
                        Err(StoreError::Unavailable(_)) => failed += 1,
                        Err(e) => panic!("{e}"),
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let killer = common::pg::connect(&url).await;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        killer
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (mut ok, mut failed) = (0, 0);
    for w in workers {
        let (o, f) = w.await.unwrap();
        ok += o;
        failed += f;
    }
    eprintln!("lost connections: {ok} receives settled, {failed} calls failed");
    assert!(ok > 0);
    // Reconnected: every call works again.
    assert!(matches!(
        store.reserve(receive(0, 999_999, 1)).await.unwrap(),
        Reserve::Reserved(_)
    ));
    // Nothing half-written: every freeze's counters are its sagas' sums.
    check_invariants(&*store).await;
}

/// The server stops: calls fail with `Unavailable` rather than hang; it
/// starts again: the store carries on with the same state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_server_restart() {
    if std::env::var_os(common::pg::ENV_URL).is_some() && common::pg::find_bin().is_none() {
        eprintln!("needs local server binaries to restart a server; skipped");
        return;
    }
    let cluster = common::pg::Cluster::start().unwrap();
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", cluster.port);
    let store = PostgresStore::connect_with(
        &url,
        PostgresOptions {
            timeout: Duration::from_secs(3),
            ..PostgresOptions::default()
        },
    )
    .await
    .unwrap();
    open_freeze(&store, 1, 1000).await;
    assert!(matches!(
        store.reserve(receive(1, 1, 100)).await.unwrap(),
        Reserve::Reserved(_)
    ));

    cluster.stop().unwrap();
    let started = Instant::now();
    assert!(matches!(
        store.reserve(receive(1, 2, 100)).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.freeze(&freeze_key(1)).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    cluster.restart().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let reserved = loop {
        match store.reserve(receive(1, 3, 100)).await {
            Ok(r) => break r,
            Err(e) if Instant::now() < deadline => {
                eprintln!("after restart: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no reconnect: {e}"),
        }
    };
    assert!(matches!(reserved, Reserve::Reserved(_)));
    let f = freeze(&store, 1).await;
    assert_eq!(f.reserved_minor, 200);
    check_invariants(&store).await;
    let _ = cluster.stop();
}

// ---------------------------------------------------------------------------
// kill -9

const CHILD_ENV: &str = "SWITCHBOARD_STORE_KILL_TEST_DB";

/// In the child (the test binary run again with [`CHILD_ENV`] set): inserts
/// freezes from several tasks and prints each key once its insert returned Ok,
/// until killed (or a safety limit). In the parent: kills the child with
/// SIGKILL mid-stream and checks that every acknowledged freeze is in the file.
#[test]
fn kill_9_loses_nothing_acknowledged() {
    if let Ok(db) = std::env::var(CHILD_ENV) {
        child_writer(Path::new(&db));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("switchboard.db");
    let mut acked = Vec::new();
    common::process::kill_9_child("kill_9_loses_nothing_acknowledged", (CHILD_ENV, &db), |n| {
        acked.push(n.parse::<u32>().unwrap());
        acked.len() >= 300
    });

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = SqliteStore::open(&db).unwrap();
        let stored: HashSet<FreezeKey> = store
            .freezes()
            .await
            .unwrap()
            .into_iter()
            .map(|f| f.key)
            .collect();
        for n in &acked {
            assert!(
                stored.contains(&freeze_key(*n)),
                "freeze {n} was acknowledged but is lost"
            );
        }
        eprintln!(
            "kill -9: {} acknowledged, {} stored",
            acked.len(),
            stored.len()
        );
    });
}

fn child_writer(db: &Path) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = Arc::new(SqliteStore::open(db).unwrap());
        let deadline = Instant::now() + Duration::from_secs(60);
        let tasks: Vec<_> = (0..8u32)
            .map(|t| {
                let store = store.clone();
                tokio::spawn(async move {
                    for i in 0..5000u32 {
                        if Instant::now() > deadline {
                            return;
                        }
                        let n = i * 8 + t;
                        let r = store.insert_freeze(new_freeze(n, 100)).await.unwrap();
                        assert_eq!(r, InsertFreeze::Inserted);
                        println!("ACK {n}");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
}

// ---------------------------------------------------------------------------
// Throughput (not a pass/fail test)

/// Reserve + finish pairs per second and commits per second at several
/// concurrencies. Run with
/// `cargo test --release --test store -- --ignored --nocapture bench_`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run explicitly with --ignored --nocapture"]
async fn bench_reserve_finish_pairs() {
    const FREEZES: u32 = 64;
    for (synchronous_full, tasks, pairs_per_task) in [
        (true, 1, 300),
        (true, 16, 200),
        (true, 128, 100),
        (true, 1024, 20),
        (false, 1024, 20),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            SqliteStore::open_with(
                &dir.path().join("bench.db"),
                SqliteOptions {
                    synchronous_full,
                    ..SqliteOptions::default()
                },
            )
            .unwrap(),
        );
        for n in 0..FREEZES {
            open_freeze(&*store, n, 1_000_000_000).await;
        }
        let before = store.stats();
        let start = Instant::now();
        let handles: Vec<_> = (0..tasks)
            .map(|t: u32| {
                let store = store.clone();
                tokio::spawn(async move {
                    for i in 0..pairs_per_task {
                        let id = t * pairs_per_task + i;
                        let r = receive(id % FREEZES, id, 1);
                        let key = r.request;
                        assert!(matches!(
                            store.reserve(r).await.unwrap(),
                            Reserve::Reserved(_)
                        ));
                        store
                            .settle_receive(
                                &key,
                                ReceiveOutcome::Approved,
                                answer(b"0210", "00", 2),
                                FollowUp::default(),
                            )
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.await.unwrap();
        }
        let secs = start.elapsed().as_secs_f64();
        let after = store.stats();
        let pairs = (tasks * pairs_per_task) as f64;
        let commits = (after.commits - before.commits) as f64;
        let commands = (after.commands - before.commands) as f64;
        eprintln!(
            "synchronous={} tasks={tasks:>5}: {:>8.0} pairs/s, {:>6.0} commits/s, \
             {:>6.1} commands/commit ({} pairs in {secs:.2} s)",
            if synchronous_full { "FULL  " } else { "NORMAL" },
            pairs / secs,
            commits / secs,
            commands / commits,
            pairs,
        );
        check_invariants(&*store).await;
    }
}

async fn reserve_with_identities_records_debiting_and_answers_block_resends(backend: Backend) {
    let fixture = backend.open().await;
    let store = fixture.store();
    open_freeze(&*store, 41, 1_000).await;
    let sent = |stan: &[u8; 6]| SentMessage {
        stan: *stan,
        transmission: *b"1123112233",
    };
    let mut r = receive(41, 4101, 100);
    r.debit = sent(b"000001");
    r.credit = sent(b"000002");
    assert!(matches!(
        store.reserve(r).await.unwrap(),
        Reserve::Reserved(_)
    ));
    let saga = store
        .saga(&request_key(b"0200", 4101))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(saga.state, SagaState::Debiting);
    assert_eq!(saga.debit, Some(sent(b"000001")));
    assert_eq!(saga.credit, Some(sent(b"000002")));
    assert_eq!(
        saga.request_digest,
        digest(2),
        "the request's digest is kept"
    );

    // A receive rejected earlier (no saga, only an answer) is a resend next time.
    let rejected = request_key(b"0200", 4102);
    store
        .record_answer(&rejected, answer(b"0210", "25", 7))
        .await
        .unwrap();
    match store.reserve(receive(41, 4102, 100)).await.unwrap() {
        Reserve::Duplicate {
            answer: Some(a), ..
        } => assert_eq!(a, answer(b"0210", "25", 7)),
        other => panic!("expected Duplicate, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Ending twice, leases and the store-and-forward hold

fn saf_entry(order_key: &str, tag: &str) -> NewSafEntry {
    NewSafEntry {
        bank: "48020000".into(),
        order_key: order_key.into(),
        kind: SafKind::Reversal,
        message: Bytes::from(format!("reversal {tag}")),
        created_at_ms: 1_700_000_000_000,
    }
}

/// What `/metrics` and `/ready` read of the store-and-forward queue:
/// entries waiting and entries given up on, those delivered left out.
/// Freezes `numbers`, each answered 91 with a store-and-forward entry
/// queued.
async fn queue_freeze_notices(store: &dyn Store, numbers: std::ops::Range<u32>) {
    for n in numbers {
        store.insert_freeze(new_freeze(n, 500)).await.unwrap();
        store
            .finish_freeze_queueing(
                &freeze_key(n),
                false,
                &freeze_request(n),
                answer(b"0110", "91", 1),
                Some(saf_entry(&n.to_string(), "freeze")),
            )
            .await
            .unwrap();
    }
}

async fn saf_counts_leave_out_done_entries(backend: Backend) {
    let fixture = backend.open().await;
    let store = fixture.store();
    let none = switchboard::store::saf::SafCounts::default();
    assert_eq!(store.saf_counts().await.unwrap(), none);
    queue_freeze_notices(&*store, 81..84).await;
    let due = store.saf_due(now_ms(), 10, 60_000).await.unwrap();
    assert_eq!(due.len(), 3);
    let done = SafOutcome::Done {
        result: "00".into(),
    };
    let dead = SafOutcome::Dead {
        result: "too many attempts".into(),
    };
    store.saf_settle(due[0].id, done).await.unwrap();
    store.saf_settle(due[1].id, dead).await.unwrap();
    let counts = store.saf_counts().await.unwrap();
    assert_eq!((counts.pending, counts.dead), (1, 1));
}

/// An operator's retry puts a dead entry back to pending, due now, its
/// attempts counted again from one; anything else is left alone and said so.
async fn a_dead_entry_is_retried_and_nothing_else_is(backend: Backend) {
    use switchboard::store::SafRetry;
    let fixture = backend.open().await;
    let store = fixture.store();
    queue_freeze_notices(&*store, 91..94).await;
    let due = store.saf_due(now_ms(), 10, 60_000).await.unwrap();
    let (done, dead, pending) = (due[0].id, due[1].id, due[2].id);
    store
        .saf_settle(
            done,
            SafOutcome::Done {
                result: "00".into(),
            },
        )
        .await
        .unwrap();
    for result in ["91", "91 (after 2 attempts)"] {
        let outcome = if result.contains("after") {
            SafOutcome::Dead {
                result: result.into(),
            }
        } else {
            SafOutcome::Retry {
                next_attempt_ms: 0,
                result: result.into(),
            }
        };
        store.saf_settle(dead, outcome).await.unwrap();
    }
    assert_eq!(
        store.saf_retry(done, now_ms()).await.unwrap(),
        SafRetry::NotDead(SafState::Done)
    );
    assert_eq!(
        store.saf_retry(pending, now_ms()).await.unwrap(),
        SafRetry::NotDead(SafState::Pending)
    );
    assert_eq!(
        store.saf_retry(9_999_999, now_ms()).await.unwrap(),
        SafRetry::NotFound
    );
    let at = now_ms();
    assert_eq!(store.saf_retry(dead, at).await.unwrap(), SafRetry::Retried);
    assert_eq!(
        store.saf_retry(dead, at).await.unwrap(),
        SafRetry::NotDead(SafState::Pending),
        "a second retry finds it pending"
    );
    let entries = store.saf_entries().await.unwrap();
    let retried = entries.iter().find(|e| e.id == dead).unwrap();
    assert_eq!(retried.state, SafState::Pending);
    assert_eq!(
        retried.attempts, 1,
        "a repeat still, with a full round ahead"
    );
    assert_eq!(retried.next_attempt_ms, at);
    assert_eq!(
        retried.last_result.as_deref(),
        Some("91 (after 2 attempts)")
    );
    let due = store.saf_due(at, 10, 60_000).await.unwrap();
    assert!(due.iter().any(|e| e.id == dead), "due again: {due:?}");
    let counts = store.saf_counts().await.unwrap();
    assert_eq!((counts.pending, counts.dead), (2, 0));
}

/// Operator actions are kept and read back newest first, as written, a
/// read bounded by its limit.
async fn audit_rows_are_kept_newest_first(backend: Backend) {
    use switchboard::store::AuditEntry;
    let fixture = backend.open().await;
    let store = fixture.store();
    assert!(store.audit_latest(10).await.unwrap().is_empty());
    let rows = [
        (
            "operator 127.0.0.1:1 (ann)",
            "bank.sign-off",
            "48020000",
            "ok",
            "2 answered",
        ),
        (
            "unauthenticated 127.0.0.1:2",
            "drain",
            "",
            "unauthorized",
            "no bearer token",
        ),
        (
            "operator 127.0.0.1:1",
            "saf.retry",
            "7",
            "refused",
            "entry 7 is done, not dead",
        ),
    ];
    for (i, (who, action, target, result, reason)) in rows.iter().enumerate() {
        let entry = AuditEntry::new(1_000 + i as i64, who, action, target, result, reason);
        store.audit(entry).await.unwrap();
    }
    let latest = store.audit_latest(2).await.unwrap();
    assert_eq!(latest.len(), 2);
    assert_eq!(latest[0].entry.action, "saf.retry");
    assert_eq!(latest[1].entry.action, "drain");
    assert!(latest[0].id > latest[1].id);
    let all = store.audit_latest(100).await.unwrap();
    assert_eq!(all.len(), 3);
    let first = &all[2].entry;
    assert_eq!(
        (first.at_ms, first.who.as_str(), first.target.as_str()),
        (1_000, "operator 127.0.0.1:1 (ann)", "48020000")
    );
    assert_eq!(
        (first.result.as_str(), first.reason.as_str()),
        ("ok", "2 answered")
    );
}

fn pending_entries(entries: &[SafEntry]) -> usize {
    entries
        .iter()
        .filter(|e| e.state == SafState::Pending)
        .count()
}

/// A receive that fails after its freeze was closed gives back what it had
/// reserved, and the unfreeze of that amount is queued behind its own
/// follow-up entries; an approved one, or a failed one on an open freeze,
/// queues no unfreeze.
async fn a_failed_receive_of_a_closed_freeze_queues_its_unfreeze(backend: Backend) {
    let fixture = backend.open().await;
    let store = fixture.store();
    open_freeze(&*store, 61, 1_000).await;
    for (request, amount) in [(6101, 300), (6102, 200), (6103, 100)] {
        assert!(matches!(
            store.reserve(receive(61, request, amount)).await.unwrap(),
            Reserve::Reserved(_)
        ));
    }
    let follow_up = |tag: &str| FollowUp {
        saf: vec![saf_entry("61", tag)],
        unfreeze_if_closed: Some(unfreeze_notice()),
    };
    // Failed while the freeze is open: its reversal only.
    let settle = |request: u32, outcome: ReceiveOutcome, tag: &'static str| {
        let store = store.clone();
        async move {
            store
                .settle_receive(
                    &request_key(b"0200", request),
                    outcome,
                    answer(b"0210", "91", 9),
                    follow_up(tag),
                )
                .await
                .unwrap()
        }
    };
    assert_eq!(
        settle(6103, ReceiveOutcome::Failed, "a").await,
        Settled::Now
    );
    let remaining = 1_000 - 300 - 200;
    assert!(matches!(
        store
            .close_freeze_queueing(
                &freeze_key(61),
                remaining,
                &request_key(b"0120", 61),
                answer(b"0130", "00", 3),
                unfreeze_notice(),
            )
            .await
            .unwrap(),
        Close::Closed(_)
    ));
    // Approved after the close: received, nothing given back.
    assert_eq!(
        settle(6101, ReceiveOutcome::Approved, "b").await,
        Settled::Now
    );
    // Failed after the close: its reversal, then the unfreeze.
    assert_eq!(
        settle(6102, ReceiveOutcome::Failed, "c").await,
        Settled::Now
    );

    let f = freeze(&*store, 61).await;
    assert_eq!(
        (f.state, f.received_minor, f.reserved_minor),
        (FreezeState::Closed, 300, 0)
    );
    let queued: Vec<(String, String)> = store
        .saf_entries()
        .await
        .unwrap()
        .into_iter()
        .map(|e| {
            (
                e.entry.order_key,
                String::from_utf8_lossy(&e.entry.message).into_owned(),
            )
        })
        .collect();
    let expect = |key: &str, message: &str| (key.to_string(), message.to_string());
    assert_eq!(
        queued,
        [
            expect("61", "reversal a"),
            expect("unfreeze", "0120 unfreeze"),
            expect("61", "reversal b"),
            expect("61", "reversal c"),
            expect("unfreeze", "0120 unfreeze"),
        ]
    );
    check_invariants(&*store).await;
}

/// Recovery of an expired lease and the instance that owned the work may
/// both try to end it: the first wins, the second changes nothing, queues
/// nothing, and learns the answer recorded by the first.
async fn a_second_end_reports_the_first(backend: Backend) {
    let fixture = backend.open().await;
    let store = fixture.store();
    open_freeze(&*store, 51, 1_000).await;
    assert!(matches!(
        store.reserve(receive(51, 5101, 300)).await.unwrap(),
        Reserve::Reserved(_)
    ));
    let key = request_key(b"0200", 5101);
    let recovered = answer(b"0210", "91", 9);
    let follow = FollowUp {
        saf: vec![saf_entry("51", "debit")],
        unfreeze_if_closed: None,
    };
    assert_eq!(
        store
            .settle_receive(
                &key,
                ReceiveOutcome::Failed,
                recovered.clone(),
                follow.clone()
            )
            .await
            .unwrap(),
        Settled::Now
    );
    // The owner comes back with an approval: refused, with the first answer.
    assert_eq!(
        store
            .settle_receive(
                &key,
                ReceiveOutcome::Approved,
                answer(b"0210", "00", 2),
                follow
            )
            .await
            .unwrap(),
        Settled::Before {
            answer: Some(recovered)
        }
    );
    let f = freeze(&*store, 51).await;
    assert_eq!((f.received_minor, f.reserved_minor), (0, 0));
    assert_eq!(pending_entries(&store.saf_entries().await.unwrap()), 1);

    // A freeze declined by recovery: the owner's approval changes nothing.
    store.insert_freeze(new_freeze(52, 500)).await.unwrap();
    let declined = answer(b"0110", "91", 9);
    assert_eq!(
        store
            .finish_freeze_queueing(
                &freeze_key(52),
                false,
                &freeze_request(52),
                declined.clone(),
                Some(saf_entry("52", "freeze")),
            )
            .await
            .unwrap(),
        Settled::Now
    );
    assert_eq!(
        store
            .finish_freeze_queueing(
                &freeze_key(52),
                true,
                &freeze_request(52),
                answer(b"0110", "00", 1),
                Some(saf_entry("52", "again")),
            )
            .await
            .unwrap(),
        Settled::Before {
            answer: Some(declined)
        }
    );
    assert_eq!(freeze(&*store, 52).await.state, FreezeState::Declined);
    assert_eq!(pending_entries(&store.saf_entries().await.unwrap()), 2);
    check_invariants(&*store).await;
}

/// A freeze keeps its request's digest in every record the store returns,
/// and after recovery declined it with an answer recorded under no request's
/// digest: the switch tells an exact resend of that freeze recovery's answer
/// by it, not 94.
async fn a_freeze_keeps_its_request_digest(backend: Backend) {
    let fixture = backend.open().await;
    let store = fixture.store();
    let mut unanswered = new_freeze(61, 1_000);
    unanswered.request_digest = digest(61);
    assert_eq!(
        store.insert_freeze(unanswered).await.unwrap(),
        InsertFreeze::Inserted
    );
    assert_eq!(freeze(&*store, 61).await.request_digest, digest(61));
    if let Some(leases) = store.clone().leases() {
        let work = leases.unfinished_of("instance-a", 0).await.unwrap();
        let found: Vec<_> = work
            .freezes
            .iter()
            .map(|f| (f.key, f.request_digest))
            .collect();
        assert_eq!(found, vec![(freeze_key(61), digest(61))]);
    }

    // Recovery declines it: its 91 is recorded under the all-zero digest.
    let recovered = answer(b"0110", "91", 0);
    assert_eq!(
        store
            .finish_freeze_queueing(
                &freeze_key(61),
                false,
                &freeze_request(61),
                recovered.clone(),
                Some(saf_entry("61", "freeze")),
            )
            .await
            .unwrap(),
        Settled::Now
    );
    assert_eq!(
        store.answer(&freeze_request(61)).await.unwrap(),
        Some(recovered)
    );
    let declined = freeze(&*store, 61).await;
    assert_eq!(declined.state, FreezeState::Declined);
    assert_eq!(
        declined.request_digest,
        digest(61),
        "the request's digest outlives recovery's answer"
    );

    // An open freeze: reserving and closing return it with its digest too.
    let mut open = new_freeze(62, 1_000);
    open.request_digest = digest(62);
    store.insert_freeze(open).await.unwrap();
    store
        .finish_freeze(
            &freeze_key(62),
            true,
            &freeze_request(62),
            answer(b"0110", "00", 62),
        )
        .await
        .unwrap();
    match store.reserve(receive(62, 6201, 400)).await.unwrap() {
        Reserve::Reserved(f) => assert_eq!(f.request_digest, digest(62)),
        other => panic!("expected Reserved, got {other:?}"),
    }
    let open_ones = store
        .open_freezes_created(i64::MIN, i64::MAX, 10)
        .await
        .unwrap();
    assert_eq!(
        open_ones
            .iter()
            .map(|f| (f.key, f.request_digest))
            .collect::<Vec<_>>(),
        vec![(freeze_key(62), digest(62))]
    );
    match store
        .close_freeze_queueing(
            &freeze_key(62),
            600,
            &request_key(b"0120", 6202),
            answer(b"0130", "00", 3),
            saf_entry("62", "unfreeze"),
        )
        .await
        .unwrap()
    {
        Close::Closed(f) => assert_eq!(f.request_digest, digest(62)),
        other => panic!("expected Closed, got {other:?}"),
    }
    let all: Vec<_> = store
        .freezes()
        .await
        .unwrap()
        .into_iter()
        .map(|f| (f.key, f.request_digest))
        .collect();
    assert_eq!(
        all,
        vec![(freeze_key(61), digest(61)), (freeze_key(62), digest(62))]
    );
    check_invariants(&*store).await;
}

/// The expiry sweep's read: open freezes only, by creation time, oldest
/// first, within the range and the limit.
async fn open_freezes_are_read_by_age(backend: Backend) {
    let fixture = backend.open().await;
    let store = fixture.store();
    // 81..=85 created at t+81..t+85: 81, 83, 84, 85 open; 82 closed; 86 pending.
    for n in 81..=85 {
        open_freeze(&*store, n, 1_000).await;
    }
    store.insert_freeze(new_freeze(86, 1_000)).await.unwrap();
    store
        .close_freeze_queueing(
            &freeze_key(82),
            1_000,
            &request_key(b"0120", 82),
            answer(b"0130", "00", 3),
            unfreeze_notice(),
        )
        .await
        .unwrap();
    let t = 1_700_000_000_000;
    let keys = |fs: Vec<FreezeRecord>| fs.into_iter().map(|f| f.key).collect::<Vec<_>>();
    assert_eq!(
        keys(
            store
                .open_freezes_created(i64::MIN, t + 100, 10)
                .await
                .unwrap()
        ),
        [81, 83, 84, 85].map(freeze_key)
    );
    assert_eq!(
        keys(
            store
                .open_freezes_created(t + 83, t + 85, 10)
                .await
                .unwrap()
        ),
        [83, 84].map(freeze_key),
        "from inclusive, before exclusive"
    );
    assert_eq!(
        keys(
            store
                .open_freezes_created(i64::MIN, t + 100, 2)
                .await
                .unwrap()
        ),
        [81, 83].map(freeze_key)
    );
}

/// What recovery settles in a store nobody works on: every freeze still
/// pending and every saga not ended, whoever started them, oldest first;
/// nothing finished.
async fn unfinished_is_every_pending_freeze_and_saga_not_ended(backend: Backend) {
    let fixture = backend.open().await;
    let store = fixture.store();
    // 71 open; 72 and 73 pending (73 another instance's); 74 declined.
    open_freeze(&*store, 71, 1_000).await;
    store.insert_freeze(new_freeze(72, 1_000)).await.unwrap();
    let mut other = new_freeze(73, 1_000);
    other.owner = "instance-b".into();
    store.insert_freeze(other).await.unwrap();
    store.insert_freeze(new_freeze(74, 1_000)).await.unwrap();
    store
        .finish_freeze(
            &freeze_key(74),
            false,
            &freeze_request(74),
            answer(b"0110", "05", 1),
        )
        .await
        .unwrap();
    // On 71: 7101 approved, 7102 failed, 7103 and 7104 in flight (7104
    // created first, and another instance's).
    for (request, created_at_ms, owner) in [
        (7101, 10, "instance-a"),
        (7102, 20, "instance-a"),
        (7103, 40, "instance-a"),
        (7104, 30, "instance-b"),
    ] {
        let mut r = receive(71, request, 100);
        r.created_at_ms = 1_700_000_100_000 + created_at_ms;
        r.owner = owner.into();
        assert!(matches!(
            store.reserve(r).await.unwrap(),
            Reserve::Reserved(_)
        ));
    }
    for (request, outcome) in [
        (7101, ReceiveOutcome::Approved),
        (7102, ReceiveOutcome::Failed),
    ] {
        store
            .settle_receive(
                &request_key(b"0200", request),
                outcome,
                answer(b"0210", "00", 2),
                FollowUp::default(),
            )
            .await
            .unwrap();
    }

    let work = store.unfinished().await.unwrap();
    let freezes: Vec<_> = work.freezes.iter().map(|f| f.key).collect();
    let sagas: Vec<_> = work.sagas.iter().map(|s| s.request).collect();
    assert_eq!(freezes, [72, 73].map(freeze_key));
    assert!(work.freezes.iter().all(|f| f.state == FreezeState::Pending));
    assert_eq!(sagas, [7104, 7103].map(|n| request_key(b"0200", n)));
    assert!(work.sagas.iter().all(|s| !s.state.is_final()));
    assert!(work.sagas.iter().all(|s| s.amount_minor == 100));
    let frozen = store.freeze(&freeze_key(71)).await.unwrap().unwrap();
    assert_eq!((frozen.reserved_minor, frozen.received_minor), (200, 100));
    check_invariants(&*store).await;

    // Once they end, no saga is left unfinished.
    for request in [7103, 7104] {
        store
            .settle_receive(
                &request_key(b"0200", request),
                ReceiveOutcome::Approved,
                answer(b"0210", "00", 2),
                FollowUp::default(),
            )
            .await
            .unwrap();
    }
    let work = store.unfinished().await.unwrap();
    assert!(work.sagas.is_empty(), "{:?}", work.sagas);
    assert_eq!(work.freezes.len(), 2);
    let frozen = store.freeze(&freeze_key(71)).await.unwrap().unwrap();
    assert_eq!((frozen.reserved_minor, frozen.received_minor), (0, 300));
    check_invariants(&*store).await;
}

fn now_ms() -> i64 {
    switchboard::clock::SystemClock.now_ms()
}

/// Leases on a shared store: one runs out unless renewed, is reported only
/// after the grace, names exactly its instance's unfinished work from its
/// watermark on, and is dropped only while still expired.
async fn leases_expire_and_name_the_owners_unfinished_work(store: Arc<dyn Store>) {
    let leases = store.clone().leases().expect("a shared store keeps leases");
    let start = now_ms();
    let lease = |instance: &str, duration_ms: i64| Lease {
        instance: instance.into(),
        duration_ms,
        unfinished_since_ms: start - 1_000,
    };
    leases
        .renew_lease(&lease("a", 300), now_ms())
        .await
        .unwrap();
    leases
        .renew_lease(&lease("b", 60_000), now_ms())
        .await
        .unwrap();
    assert!(leases.expired_leases(now_ms(), 0).await.unwrap().is_empty());

    let owned = |n: u32, owner: &str, created_at_ms: i64| {
        let mut f = new_freeze(n, 1_000);
        f.owner = owner.into();
        f.created_at_ms = created_at_ms;
        f
    };
    // a: one pending freeze after its watermark, one before it (not a's to
    // name: a watermark says nothing older is unfinished), one open freeze
    // with an unfinished and a finished saga; b: a pending freeze.
    store.insert_freeze(owned(61, "a", start)).await.unwrap();
    store
        .insert_freeze(owned(62, "a", start - 100_000))
        .await
        .unwrap();
    store.insert_freeze(owned(63, "b", start)).await.unwrap();
    store.insert_freeze(owned(64, "a", start)).await.unwrap();
    store
        .finish_freeze(
            &freeze_key(64),
            true,
            &freeze_request(64),
            answer(b"0110", "00", 1),
        )
        .await
        .unwrap();
    for (request, owner) in [(6401, "a"), (6402, "a"), (6403, "b")] {
        let mut r = receive(64, request, 100);
        r.owner = owner.into();
        r.created_at_ms = start;
        store.reserve(r).await.unwrap();
    }
    store
        .settle_receive(
            &request_key(b"0200", 6402),
            ReceiveOutcome::Approved,
            answer(b"0210", "00", 2),
            FollowUp::default(),
        )
        .await
        .unwrap();

    tokio::time::sleep(Duration::from_millis(400)).await;
    let expired = leases.expired_leases(now_ms(), 0).await.unwrap();
    assert_eq!(
        expired,
        vec![ExpiredLease {
            instance: "a".into(),
            unfinished_since_ms: start - 1_000
        }]
    );
    assert!(
        leases
            .expired_leases(now_ms(), 60_000)
            .await
            .unwrap()
            .is_empty(),
        "reported before its grace"
    );
    let work = leases.unfinished_of("a", start - 1_000).await.unwrap();
    let freezes: Vec<_> = work.freezes.iter().map(|f| f.key).collect();
    let sagas: Vec<_> = work.sagas.iter().map(|s| s.request).collect();
    assert_eq!(freezes, vec![freeze_key(61)]);
    assert_eq!(sagas, vec![request_key(b"0200", 6401)]);

    // Renewed before anyone dropped it: it stays.
    leases
        .renew_lease(&lease("a", 300), now_ms())
        .await
        .unwrap();
    leases.drop_lease("a", now_ms()).await.unwrap();
    assert!(leases.expired_leases(now_ms(), 0).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(400)).await;
    leases.drop_lease("a", now_ms()).await.unwrap();
    leases.drop_lease("b", now_ms()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(leases.expired_leases(now_ms(), 0).await.unwrap().is_empty());
}

/// A due entry is handed to one caller: not due again until its attempt is
/// settled or the hold ends.
async fn saf_entries_are_held_for_one_caller(store: Arc<dyn Store>) {
    store.insert_freeze(new_freeze(71, 500)).await.unwrap();
    store
        .finish_freeze_queueing(
            &freeze_key(71),
            false,
            &freeze_request(71),
            answer(b"0110", "91", 1),
            Some(saf_entry("71", "freeze")),
        )
        .await
        .unwrap();
    let now = now_ms();
    let first = store.saf_due(now, 10, 60_000).await.unwrap();
    assert_eq!(first.len(), 1);
    assert!(store.saf_due(now, 10, 60_000).await.unwrap().is_empty());
    assert!(store
        .saf_due(now + 59_000, 10, 60_000)
        .await
        .unwrap()
        .is_empty());
    store
        .saf_settle(
            first[0].id,
            SafOutcome::Retry {
                next_attempt_ms: now,
                result: "91".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(store.saf_due(now, 10, 1_000).await.unwrap().len(), 1);
    // The hold ended without a settle (its caller died): due again.
    assert_eq!(
        store.saf_due(now + 1_000, 10, 1_000).await.unwrap().len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_leases_expire_and_name_the_owners_unfinished_work() {
    let fixture = Backend::Postgres.open().await;
    leases_expire_and_name_the_owners_unfinished_work(fixture.store()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_leases_expire_and_name_the_owners_unfinished_work() {
    leases_expire_and_name_the_owners_unfinished_work(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_saf_entries_are_held_for_one_caller() {
    let fixture = Backend::Postgres.open().await;
    saf_entries_are_held_for_one_caller(fixture.store()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_saf_entries_are_held_for_one_caller() {
    saf_entries_are_held_for_one_caller(Arc::new(MemoryStore::new())).await;
}

/// While the journal cannot be written (its table locked by another
/// session), entries beyond `journal_capacity` are not dropped: new work
/// waits in `journal_room` until the table is free again, and then every
/// entry is written, none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_journal_waits_when_full_and_drops_nothing() {
    let url = common::pg::database().await;
    let store = PostgresStore::connect_with(
        &url,
        PostgresOptions {
            journal_capacity: 4,
            timeout: Duration::from_secs(2),
            ..PostgresOptions::default()
        },
    )
    .await
    .unwrap();
    let mut blocker = common::pg::connect(&url).await;
    let lock = blocker.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE journal IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let entry = |n: i64| JournalEntry {
        at_ms: n,
        direction: Direction::In,
        peer: "wallet 127.0.0.1:1".into(),
        mti: *b"0800",
        processing_code: None,
        stan: Some(format!("{n:06}")),
        transmission: None,
        acquirer: None,
        response_code: None,
        pan_masked: None,
        amount_minor: None,
        note: None,
        raw: Bytes::from_static(b"0800"),
    };
    for n in 0..3 {
        store.journal(entry(n));
    }
    tokio::time::timeout(Duration::from_secs(1), store.journal_room())
        .await
        .expect("room while fewer than the capacity are unwritten");
    for n in 3..6 {
        store.journal(entry(n));
    }
    assert!(
        tokio::time::timeout(Duration::from_secs(3), store.journal_room())
            .await
            .is_err(),
        "six unwritten entries against a capacity of four: new work waits"
    );
    lock.commit().await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), store.journal_room())
        .await
        .expect("room again once the journal is written");
    store.flush().await.unwrap();
    let journal = store.journal_between(0, 100).await.unwrap();
    let stans: Vec<_> = journal.iter().filter_map(|e| e.stan.clone()).collect();
    assert_eq!(
        stans,
        (0..6).map(|n| format!("{n:06}")).collect::<Vec<_>>(),
        "every entry written, in order"
    );
    assert_eq!(store.stats().journal_written, 6);
}

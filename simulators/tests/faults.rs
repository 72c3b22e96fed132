//! The bank simulator's faults over real TCP, one kind at a time with
//! probability 1: what the switch sees (no answer, a closed connection, two
//! answers, garbage, a decline, a slow answer) and what the bank's books say
//! happened (applied or not). Then: a seed repeats a run, and the admin port of
//! the `banksim` binary changes the faults while it serves.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use iso8583::codec::{parse, Message};
use iso8583::framing::{Frame, FramingConfig};
use iso8583::validate::validate;
use iso8583::{ResponseCode, Spec};
use simulators::bank::{Ledger, MovementKind};
use simulators::bank_server::{spawn_bank_with_faults, BankHandle};
use simulators::faults::Faults;
use simulators::{Bank, HoldState};
use switchboard::dialect::FreezeKey;
use tokio::io::BufReader;

mod common;

use common::*;

/// How long "never answered" is watched for.
const QUIET: Duration = Duration::from_millis(500);

fn faults(spec: &str) -> Faults {
    spec.parse().unwrap()
}

/// A bank with the sender (100 000) and the recipient (0), injecting `spec`.
async fn bank_with(spec: &str) -> BankHandle {
    let mut bank = Bank::new(BANK);
    bank.add_account(&sender(), 100_000);
    bank.add_account(&recipient(), 0);
    spawn_bank_with_faults(bank, FramingConfig::default(), faults(spec))
        .await
        .unwrap()
}

async fn send(client: &mut Client, spec: &Spec, msg: &Message) {
    feed(client, spec, msg).await;
    client.flush().await.unwrap();
}

/// The next frame, whatever it holds.
async fn next_frame(client: &mut Client) -> Frame {
    tokio::time::timeout(Duration::from_secs(10), client.next())
        .await
        .expect("a frame within 10 s")
        .expect("the connection is open")
        .expect("a good frame")
}

async fn assert_silent(client: &mut Client, spec: &Spec) {
    if let Ok(next) = tokio::time::timeout(QUIET, client.next()).await {
        let what = match next {
            Some(Ok(Frame::Message { body, .. })) => format!("{:?}", parse(spec, body)),
            other => format!("{other:?}"),
        };
        panic!("expected no answer within {QUIET:?}, got {what}");
    }
}

async fn assert_closed(client: &mut Client) {
    match tokio::time::timeout(Duration::from_secs(5), client.next()).await {
        Ok(None | Some(Err(_))) => {}
        Ok(Some(Ok(frame))) => panic!("expected the connection closed, got {frame:?}"),
        Err(_) => panic!("the connection is still open after 5 s"),
    }
}

/// A freeze of 30 000 on the sender, approved with no faults on (whatever the
/// bank injects otherwise), on a connection of its own.
async fn approved_freeze(handle: &BankHandle, spec: &Spec) -> Message {
    let injecting = handle.faults.faults();
    handle.faults.set(Faults::default());
    let mut client = connect(handle.addr, &FramingConfig::default()).await;
    let f = freeze(&sender(), 30_000, "000001");
    send(&mut client, spec, &f).await;
    assert_eq!(
        rc(&receive(&mut client, spec).await),
        ResponseCode::APPROVED
    );
    handle.faults.set(injecting);
    f
}

fn check_books(handle: &BankHandle, before: &Ledger) -> Ledger {
    let bank = handle.bank.lock().unwrap();
    bank.check_invariants();
    let after = bank.snapshot();
    assert_money_moved_only_by_the_journal(before, &after, &bank.journal());
    after
}

fn opening_books() -> Ledger {
    let mut bank = Bank::new(BANK);
    bank.add_account(&sender(), 100_000);
    bank.add_account(&recipient(), 0);
    bank.snapshot()
}

#[tokio::test]
async fn silent_requests_are_applied_and_never_answered() {
    let spec = Spec::switchboard();
    let handle = bank_with("silent=1").await;
    let mut client = connect(handle.addr, &FramingConfig::default()).await;
    send(&mut client, &spec, &sign_on("000100")).await;
    assert_eq!(
        rc(&receive(&mut client, &spec).await),
        ResponseCode::APPROVED,
        "network management is spared by default"
    );

    let f = freeze(&sender(), 30_000, "000001");
    send(&mut client, &spec, &f).await;
    assert_silent(&mut client, &spec).await;
    let key = FreezeKey::of_request(&f).unwrap();
    let ledger = check_books(&handle, &opening_books());
    assert_eq!(
        ledger.hold(&key).map(|h| h.remaining_minor),
        Some(30_000),
        "unanswered, but held"
    );

    // Faults off: the resend gets the answer the bank kept, and holds nothing more.
    handle.faults.set(Faults::default());
    send(&mut client, &spec, &f).await;
    let answer = receive(&mut client, &spec).await;
    assert_eq!(
        (answer.mti(), rc(&answer)),
        (b"0110", ResponseCode::APPROVED)
    );
    assert_eq!(
        check_books(&handle, &opening_books()).total_held_minor,
        30_000
    );
    assert_eq!(handle.bank.lock().unwrap().journal().len(), 1);

    // With network=true even sign-on goes unanswered.
    handle.faults.set(faults("silent=1,network=true"));
    send(&mut client, &spec, &sign_on("000101")).await;
    assert_silent(&mut client, &spec).await;
    let injected = handle.faults.injected();
    assert_eq!((injected["silent"], injected["answered"]), (2, 1));
}

#[tokio::test]
async fn lost_requests_are_neither_applied_nor_answered() {
    let spec = Spec::switchboard();
    let handle = bank_with("lost=1").await;
    let mut client = connect(handle.addr, &FramingConfig::default()).await;
    let f = freeze(&sender(), 30_000, "000001");
    send(&mut client, &spec, &f).await;
    assert_silent(&mut client, &spec).await;
    assert_eq!(handle.snapshot(), opening_books());
    assert!(handle.bank.lock().unwrap().journal().is_empty());

    handle.faults.set(Faults::default());
    send(&mut client, &spec, &f).await;
    assert_eq!(
        rc(&receive(&mut client, &spec).await),
        ResponseCode::APPROVED
    );
    assert_eq!(handle.snapshot().total_held_minor, 30_000);
}

#[tokio::test]
async fn a_drop_after_apply_closes_the_connection_with_the_debit_made() {
    let spec = Spec::switchboard();
    let handle = bank_with("drop_after=1").await;
    let f = approved_freeze(&handle, &spec).await;
    let mut client = connect(handle.addr, &FramingConfig::default()).await;
    let d = debit(&sender(), 10_000, "000002", &f);
    send(&mut client, &spec, &d).await;
    assert_closed(&mut client).await;

    let key = FreezeKey::of_request(&f).unwrap();
    let ledger = check_books(&handle, &opening_books());
    assert_eq!(ledger.balance(&sender()), Some(90_000), "the debit stands");
    assert_eq!(ledger.hold(&key).unwrap().remaining_minor, 20_000);
    let last = handle
        .bank
        .lock()
        .unwrap()
        .journal()
        .last()
        .cloned()
        .unwrap();
    assert_eq!(
        (last.kind, last.applied_minor, last.response_code.as_str()),
        (MovementKind::Debit, 10_000, "00")
    );

    // What the switch does next: reverse it, on a new connection.
    handle.faults.set(Faults::default());
    let mut client = connect(handle.addr, &FramingConfig::default()).await;
    send(&mut client, &spec, &reversal(&d, "000003")).await;
    assert_eq!(
        rc(&receive(&mut client, &spec).await),
        ResponseCode::APPROVED
    );
    let ledger = check_books(&handle, &opening_books());
    assert_eq!(ledger.balance(&sender()), Some(100_000));
    let hold = ledger.hold(&key).unwrap();
    assert_eq!(
        (hold.remaining_minor, hold.state),
        (30_000, HoldState::Open)
    );
    assert_eq!(handle.faults.injected()["drop_after_apply"], 1);
}

#[tokio::test]
async fn a_drop_before_apply_closes_the_connection_with_nothing_done() {
    let spec = Spec::switchboard();
    let handle = bank_with("drop_before=1").await;
    let f = approved_freeze(&handle, &spec).await;
    let after_freeze = handle.snapshot();
    let mut client = connect(handle.addr, &FramingConfig::default()).await;
    let d = debit(&sender(), 10_000, "000002", &f);
    send(&mut client, &spec, &d).await;
    assert_closed(&mut client).await;
    assert_eq!(check_books(&handle, &opening_books()), after_freeze);
    assert_eq!(handle.bank.lock().unwrap().journal().len(), 1);

    // The switch's reversal finds nothing to undo.
    handle.faults.set(Faults::default());
    let mut client = connect(handle.addr, &FramingConfig::default()).await;
    send(&mut client, &spec, &reversal(&d, "000003")).await;
    assert_eq!(
        rc(&receive(&mut client, &spec).await),
        ResponseCode::UNABLE_TO_LOCATE_RECORD
    );
    assert_eq!(check_books(&handle, &opening_books()), after_freeze);
}

#[tokio::test]
async fn a_duplicate_answer_comes_twice_for_one_movement() {
    let spec = Spec::switchboard();
    let handle = bank_with("dup=1").await;
    let mut client = connect(handle.addr, &FramingConfig::default()).await;
    let f = freeze(&sender(), 30_000, "000001");
    send(&mut client, &spec, &f).await;
    let first = next_frame(&mut client).await;
    let second = next_frame(&mut client).await;
    assert_eq!(first, second);
    let Frame::Message { body, .. } = first else {
        panic!("a message");
    };
    assert_eq!(rc(&parse(&spec, body).unwrap()), ResponseCode::APPROVED);
    assert_silent(&mut client, &spec).await;
    let ledger = check_books(&handle, &opening_books());
    assert_eq!(ledger.total_held_minor, 30_000, "held once");
    assert_eq!(handle.bank.lock().unwrap().journal().len(), 1);
}

#[tokio::test]
async fn garbage_comes_instead_of_the_answer_and_the_connection_goes_on() {
    let spec = Spec::switchboard();
    let handle = bank_with("garbage=1").await;
    let mut client = connect(handle.addr, &FramingConfig::default()).await;
    let f = freeze(&sender(), 30_000, "000001");
    send(&mut client, &spec, &f).await;
    let Frame::Message { body, .. } = next_frame(&mut client).await else {
        panic!("a message frame");
    };
    assert!(parse(&spec, body.clone()).is_err(), "{body:?} parses");
    assert_eq!(
        check_books(&handle, &opening_books()).total_held_minor,
        30_000,
        "applied"
    );
    send(&mut client, &spec, &sign_on("000100")).await;
    assert_eq!(
        rc(&receive(&mut client, &spec).await),
        ResponseCode::APPROVED
    );
}

#[tokio::test]
async fn declines_answer_the_code_and_move_nothing() {
    let spec = Spec::switchboard();
    let handle = bank_with("decline=1").await;
    let mut client = connect(handle.addr, &FramingConfig::default()).await;
    let f = freeze(&sender(), 30_000, "000001");
    send(&mut client, &spec, &f).await;
    let answer = receive(&mut client, &spec).await;
    assert_eq!(
        (answer.mti(), rc(&answer)),
        (b"0110", ResponseCode::SYSTEM_MALFUNCTION)
    );
    let validation = validate(&spec, &answer);
    assert!(validation.is_valid(), "{:?}", validation.violations);
    assert_eq!(answer.get(11), f.get(11));
    assert!(!answer.has(38), "no authorization code for a decline");
    assert_eq!(handle.snapshot(), opening_books());
    // Journaled as answered, nothing applied: the bank's export shows it.
    let journal = handle.bank.lock().unwrap().journal();
    assert_eq!(journal.len(), 1);
    assert_eq!(
        (journal[0].response_code.as_str(), journal[0].applied_minor),
        ("96", 0)
    );

    // A debit declined 91: a well-formed 0210 (F15 and F90 too), nothing moved.
    let f = approved_freeze(&handle, &spec).await;
    let after_freeze = handle.snapshot();
    handle.faults.set(faults("decline=1:91"));
    let d = debit(&sender(), 10_000, "000002", &f);
    send(&mut client, &spec, &d).await;
    let answer = receive(&mut client, &spec).await;
    assert_eq!(
        (answer.mti(), rc(&answer)),
        (b"0210", ResponseCode::ISSUER_UNAVAILABLE)
    );
    let validation = validate(&spec, &answer);
    assert!(validation.is_valid(), "{:?}", validation.violations);
    assert_eq!(answer.get(90), d.get(90));
    assert_eq!(check_books(&handle, &opening_books()), after_freeze);

    // Not remembered: the resend, faults off, is approved.
    handle.faults.set(Faults::default());
    send(&mut client, &spec, &d).await;
    assert_eq!(
        rc(&receive(&mut client, &spec).await),
        ResponseCode::APPROVED
    );
    assert_eq!(
        check_books(&handle, &opening_books()).balance(&sender()),
        Some(90_000)
    );
}

/// Sends `requests` at once and returns each answer's (STAN, time after sending).
async fn timed_answers(
    client: &mut Client,
    spec: &Spec,
    requests: &[Message],
) -> Vec<(String, Duration)> {
    let start = Instant::now();
    for r in requests {
        feed(client, spec, r).await;
    }
    client.flush().await.unwrap();
    let mut answers = Vec::new();
    for _ in requests {
        let answer = receive(client, spec).await;
        assert_eq!(rc(&answer), ResponseCode::APPROVED);
        answers.push((answer.get_str(11).unwrap().to_string(), start.elapsed()));
    }
    answers
}

#[tokio::test]
async fn latency_delays_every_answer_without_holding_up_the_others() {
    let spec = Spec::switchboard();
    let handle = bank_with("latency=fixed:200").await;
    let mut client = connect(handle.addr, &FramingConfig::default()).await;
    // 20 requests in flight: one after the other they would take 4 s.
    let freezes: Vec<Message> = (1..=20)
        .map(|i| freeze(&sender(), 100, &format!("{i:06}")))
        .collect();
    let answers = timed_answers(&mut client, &spec, &freezes).await;
    for (stan, elapsed) in &answers {
        assert!(
            *elapsed >= Duration::from_millis(200),
            "{stan} after {elapsed:?}"
        );
    }
    let last = answers.iter().map(|(_, e)| *e).max().unwrap();
    assert!(
        last < Duration::from_secs(2),
        "delays were served one after the other: {last:?}"
    );
    assert_eq!(handle.snapshot().total_held_minor, 2_000);

    // Uniform latency stays above its minimum; a late answer comes the extra
    // delay after it.
    handle.faults.set(faults("latency=uniform:100:150"));
    let answers = timed_answers(&mut client, &spec, &[freeze(&sender(), 100, "000101")]).await;
    assert!(answers[0].1 >= Duration::from_millis(100), "{answers:?}");
    handle.faults.set(faults("latency=fixed:100,late=1:300"));
    let answers = timed_answers(&mut client, &spec, &[freeze(&sender(), 100, "000102")]).await;
    assert!(answers[0].1 >= Duration::from_millis(400), "{answers:?}");
    assert_eq!(handle.faults.injected()["late"], 1);
}

/// What a run of `n` pipelined freezes on a fresh bank injecting `spec` gives.
#[derive(Debug, PartialEq)]
struct Run {
    /// (STAN, code) of every answer that parses, sorted.
    answers: Vec<(String, String)>,
    /// Frames that do not parse.
    garbage: usize,
    ledger: Ledger,
    injected: BTreeMap<&'static str, u64>,
}

async fn one_run(spec: &str, n: u32) -> Run {
    let dialect = Spec::switchboard();
    let handle = bank_with(spec).await;
    let mut client = connect(handle.addr, &FramingConfig::default()).await;
    for i in 1..=n {
        feed(
            &mut client,
            &dialect,
            &freeze(&sender(), 100, &format!("{i:06}")),
        )
        .await;
    }
    client.flush().await.unwrap();
    let (mut answers, mut garbage) = (Vec::new(), 0);
    while let Ok(Some(Ok(frame))) = tokio::time::timeout(QUIET, client.next()).await {
        let Frame::Message { body, .. } = frame else {
            panic!("the bank never sends keep-alives");
        };
        match parse(&dialect, body) {
            Ok(m) => answers.push((m.get_str(11).unwrap().to_string(), rc(&m).to_string())),
            Err(_) => garbage += 1,
        }
    }
    answers.sort();
    Run {
        answers,
        garbage,
        ledger: check_books(&handle, &opening_books()),
        injected: handle.faults.injected(),
    }
}

#[tokio::test]
async fn a_seed_repeats_the_same_faults() {
    let spec =
        "latency=uniform:0:20,silent=0.15,lost=0.15,dup=0.15,garbage=0.1,decline=0.15:96,seed=7";
    let run = one_run(spec, 60).await;
    assert_eq!(run, one_run(spec, 60).await, "the same seed, the same run");

    // What the client saw is what the bank says it injected, every kind at
    // least once, and the books hold 100 for each freeze applied: answered,
    // duplicated, silent or garbled, not lost or declined.
    let injected = |fate: &str| run.injected[fate] as usize;
    assert_eq!(injected("requests"), 60);
    for fate in [
        "answered",
        "silent",
        "lost",
        "duplicate",
        "garbage",
        "decline",
    ] {
        assert!(injected(fate) > 0, "{fate}: {:?}", run.injected);
    }
    let mut codes: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, code) in &run.answers {
        *codes.entry(code.as_str()).or_default() += 1;
    }
    assert_eq!(
        codes,
        BTreeMap::from([
            (
                ResponseCode::APPROVED.as_str(),
                injected("answered") + 2 * injected("duplicate")
            ),
            (
                ResponseCode::SYSTEM_MALFUNCTION.as_str(),
                injected("decline")
            ),
        ])
    );
    assert_eq!(run.garbage, injected("garbage"));
    let applied =
        injected("answered") + injected("duplicate") + injected("silent") + injected("garbage");
    assert_eq!(run.ledger.total_held_minor, 100 * applied as i64);

    let other = one_run(&spec.replace("seed=7", "seed=8"), 60).await;
    assert_ne!(
        (&run.answers, &run.injected),
        (&other.answers, &other.injected),
        "another seed, another run"
    );
}

#[tokio::test]
async fn banksim_faults_change_at_run_time_through_the_admin_port() {
    let (port, admin_port) = (free_port(), free_port());
    let listen = format!("127.0.0.1:{port}");
    let admin_addr = format!("127.0.0.1:{admin_port}");
    let accounts = accounts_file();
    let accounts_path = accounts.path().to_str().unwrap();
    let _child = start(
        env!("CARGO_BIN_EXE_banksim"),
        &[
            "--listen",
            &listen,
            "--admin",
            &admin_addr,
            "--institution",
            BANK,
            "--accounts-file",
            accounts_path,
            "--faults",
            "decline=1:91,seed=3",
        ],
    );
    let spec = Spec::switchboard();
    let mut client = connect_when_listening(&listen).await;
    let mut admin = BufReader::new(wait_for(&admin_addr).await);
    let current = |lines: Vec<String>| -> Faults {
        serde_json::from_str(&lines[0]).unwrap_or_else(|e| panic!("{lines:?}: {e}"))
    };

    send(&mut client, &spec, &freeze(&sender(), 1_000, "000001")).await;
    assert_eq!(rc(&receive(&mut client, &spec).await), "91");
    assert_eq!(
        current(admin_command(&mut admin, "faults").await),
        faults("decline=1:91,seed=3")
    );

    let set = admin_command(&mut admin, "faults silent=1,seed=5").await;
    assert_eq!(current(set), faults("silent=1,seed=5"));
    let f = freeze(&sender(), 2_000, "000002");
    send(&mut client, &spec, &f).await;
    assert_silent(&mut client, &spec).await;
    let snapshot = admin_command(&mut admin, "snapshot").await;
    let ledger: Ledger = serde_json::from_str(&snapshot[0]).unwrap();
    assert_eq!(
        ledger.total_held_minor, 2_000,
        "the silent freeze was applied"
    );

    assert_eq!(
        current(admin_command(&mut admin, "faults none").await),
        Faults::default()
    );
    send(&mut client, &spec, &freeze(&sender(), 3_000, "000003")).await;
    assert_eq!(rc(&receive(&mut client, &spec).await), "00");

    let refused = admin_command(&mut admin, "faults silent=2").await;
    assert!(
        refused[0].contains("error") && refused[0].contains("silent=2"),
        "{refused:?}"
    );
    assert_eq!(
        current(admin_command(&mut admin, "faults").await),
        Faults::default(),
        "a refused spec changes nothing"
    );
    let injected: BTreeMap<String, u64> =
        serde_json::from_str(&admin_command(&mut admin, "injected").await[0]).unwrap();
    assert_eq!(
        (
            injected["decline"],
            injected["silent"],
            injected["answered"],
            injected["requests"]
        ),
        (1, 1, 1, 3)
    );

    // A bad --faults is refused before serving, naming the flag.
    let out = Command::new(env!("CARGO_BIN_EXE_banksim"))
        .args(["--listen", "127.0.0.1:0", "--institution", BANK])
        .args(["--faults", "drop=0.5,silent=0.6"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--faults") && stderr.contains("more than 1"),
        "{stderr}"
    );
}

/// The sender (100 000) and the recipient (0) as a `banksim --accounts-file`.
fn accounts_file() -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        file.path(),
        format!("{},100000\n{},0\n", sender(), recipient()),
    )
    .unwrap();
    file
}

//! `switchboard conform`, the real binary over real TCP: the bank-host suite
//! against the real bank simulator (its books read through its admin port),
//! the wallet suite against a switch with its two banks (and the money
//! checked after), and both against deliberately faulty peers — a proxy
//! that bends the host's answers — where exactly the affected cases must
//! fail, with the expected words.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use iso8583::framing::{Frame, FrameCodec, FramingConfig};
use iso8583::{Message, Spec};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

mod common;

use common::process::{
    assert_no_progress, free_port, on_a_terminal, quoted, send_admin, simulator_path, KillOnDrop,
};
use common::{books_a, start, WALLET_ID};

/// A bank simulator process with an admin port and the cards of bank A
/// (balances 100.00 to 600.00), and the `pan,balance_minor` file of them.
struct BankProcess {
    _child: KillOnDrop,
    port: u16,
    admin: u16,
    accounts: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn bank_process() -> BankProcess {
    let dir = tempfile::tempdir().unwrap();
    let accounts = dir.path().join("accounts.csv");
    let mut csv = String::from("pan,balance_minor\n");
    for (i, (pan, _)) in books_a().accounts().into_iter().take(6).enumerate() {
        csv.push_str(&format!("{pan},{}\n", (i as i64 + 1) * 10_000));
    }
    std::fs::write(&accounts, csv).unwrap();
    let (port, admin) = (free_port(), free_port());
    let child = Command::new(simulator_path("banksim"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin", &format!("127.0.0.1:{admin}")])
        .args(["--institution", "48020000", "--accounts-file"])
        .arg(&accounts)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("banksim runs");
    let child = KillOnDrop::new(child);
    send_admin(admin, "faults");
    BankProcess {
        _child: child,
        port,
        admin,
        accounts,
        _dir: dir,
    }
}

struct Conformed {
    code: Option<i32>,
    /// Case id → its JSON line.
    cases: BTreeMap<String, Value>,
    summary: Value,
    stderr: String,
}

impl Conformed {
    fn status(&self, case: &str) -> &str {
        self.cases[case]["status"].as_str().unwrap()
    }

    /// The cases that did not pass.
    fn not_passed(&self) -> Vec<&str> {
        self.cases
            .iter()
            .filter(|(_, c)| c["status"] != "pass")
            .map(|(id, _)| id.as_str())
            .collect()
    }

    fn failures(&self, case: &str) -> String {
        self.cases[case]["failures"].to_string()
    }
}

async fn conform<S: AsRef<std::ffi::OsStr>>(
    suite: &str,
    target: SocketAddr,
    args: &[S],
) -> Conformed {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["conform", suite, "--json", "--target"])
        .arg(target.to_string())
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), out)
        .await
        .expect("conform ends")
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let mut lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\n{stderr}")))
        .collect();
    let summary = lines
        .pop()
        .unwrap_or_else(|| panic!("no output; stderr: {stderr}"));
    let cases = lines
        .into_iter()
        .map(|c| (c["case"].as_str().unwrap().to_string(), c))
        .collect();
    Conformed {
        code: out.status.code(),
        cases,
        summary: summary["summary"].clone(),
        stderr,
    }
}

/// A proxy in front of `upstream` whose answers pass through `bend`
/// (`None`: the answer is swallowed).
async fn bending_proxy(
    upstream: SocketAddr,
    bend: impl Fn(Message) -> Option<Message> + Send + Sync + 'static,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    proxy(upstream, Some, bend).await
}

/// A proxy that never forwards requests of MTI `mti` (so they are never
/// answered), everything else untouched.
async fn swallowing_proxy(
    upstream: SocketAddr,
    mti: [u8; 4],
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    proxy(
        upstream,
        move |request| (*request.mti() != mti).then_some(request),
        Some,
    )
    .await
}

/// A proxy in front of `upstream`: requests pass through `rewrite`,
/// answers through `bend` (`None`: dropped).
async fn proxy(
    upstream: SocketAddr,
    rewrite: impl Fn(Message) -> Option<Message> + Send + Sync + 'static,
    bend: impl Fn(Message) -> Option<Message> + Send + Sync + 'static,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let bend = Arc::new(bend);
    let rewrite = Arc::new(rewrite);
    let spec = Arc::new(Spec::load("switchboard").unwrap());
    let task = tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let (bend, rewrite, spec) = (bend.clone(), rewrite.clone(), spec.clone());
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let codec = || FrameCodec::new(FramingConfig::default());
                let (mut client_tx, mut client_rx) = Framed::new(client, codec()).split();
                let (mut server_tx, mut server_rx) = Framed::new(server, codec()).split();
                let requests = async {
                    while let Some(Ok(frame)) = client_rx.next().await {
                        let Frame::Message { body, .. } = frame else {
                            continue;
                        };
                        let Ok(request) = iso8583::parse(&spec, body) else {
                            continue;
                        };
                        let Some(request) = rewrite(request) else {
                            continue;
                        };
                        let body = iso8583::build_bytes(&spec, &request).unwrap();
                        if server_tx.send(Frame::message(body)).await.is_err() {
                            break;
                        }
                    }
                };
                let answers = async {
                    while let Some(Ok(frame)) = server_rx.next().await {
                        let Frame::Message { body, .. } = frame else {
                            continue;
                        };
                        let Ok(answer) = iso8583::parse(&spec, body) else {
                            continue;
                        };
                        if let Some(bent) = bend(answer) {
                            let body = iso8583::build_bytes(&spec, &bent).unwrap();
                            if client_tx.send(Frame::message(body)).await.is_err() {
                                break;
                            }
                        }
                    }
                };
                tokio::select! { _ = requests => {}, _ = answers => {} }
            });
        }
    });
    (addr, task)
}

fn bank_args(bank: &BankProcess) -> Vec<String> {
    vec![
        "--accounts".into(),
        bank.accounts.to_string_lossy().into_owned(),
        "--state".into(),
        format!("127.0.0.1:{}", bank.admin),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bank_host_suite_passes_against_the_bank_simulator_with_its_books_checked() {
    let bank = bank_process();
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("bank-host.xml");
    let mut args = bank_args(&bank);
    args.extend(["--junit".into(), junit.to_string_lossy().into_owned()]);
    let out = conform("bank-host", common::process::addr(bank.port), &args).await;
    assert_eq!(out.code, Some(0), "{:?}\n{}", out.cases, out.stderr);
    assert_eq!(out.not_passed(), Vec::<&str>::new());
    assert_eq!(out.summary["passed"], out.cases.len());
    assert!(out.cases.len() >= 13, "{:?}", out.cases.keys());
    // With the state hook, no ledger check was skipped.
    assert!(
        out.cases
            .values()
            .all(|c| c["notes"].as_array().unwrap().is_empty()),
        "{:?}",
        out.cases
    );
    let report = std::fs::read_to_string(&junit).unwrap();
    assert!(report.contains("<testsuite name=\"bank-host\""), "{report}");
    assert!(report.contains("failures=\"0\""), "{report}");
    assert_eq!(report.matches("<testcase ").count(), out.cases.len());
}

#[test]
fn text_lines_with_a_progress_bar_on_a_terminal_only() {
    let bank = bank_process();
    let target = common::process::addr(bank.port).to_string();
    let args = bank_args(&bank);
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_switchboard"));
    let piped = Command::new(bin)
        .args(["conform", "bank-host", "--target", &target])
        .args(&args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&piped.stdout);
    assert!(piped.status.success(), "{stdout}");
    assert!(stdout.contains("result: pass"), "{stdout}");
    assert_no_progress("conform", &piped.stderr);

    // A bank of its own: the suite moves the books it checks.
    let bank = bank_process();
    let target = common::process::addr(bank.port).to_string();
    let quoted_args: Vec<String> = bank_args(&bank).iter().map(|a| format!("'{a}'")).collect();
    let dir = tempfile::tempdir().unwrap();
    let (status, screen) = on_a_terminal(
        &format!(
            "{} conform bank-host --target {target} {}",
            quoted(bin),
            quoted_args.join(" ")
        ),
        dir.path(),
    );
    let text = String::from_utf8_lossy(&screen);
    assert!(status.success(), "{text}");
    assert!(text.contains("result: pass"), "{text}");
    assert!(screen.contains(&0x1b), "no bar: {text:?}");
    assert!(text.contains(" cases "), "the bar counts cases: {text:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_state_hook_the_ledger_checks_are_skipped_with_a_note() {
    let bank = bank_process();
    let accounts = bank.accounts.to_string_lossy().into_owned();
    let out = conform(
        "bank-host",
        common::process::addr(bank.port),
        &["--accounts", &accounts, "--case", "credit"],
    )
    .await;
    assert_eq!(out.code, Some(0), "{:?}", out.cases);
    assert_eq!(out.status("credit"), "pass");
    assert!(
        out.cases["credit"]["notes"][0]
            .as_str()
            .unwrap()
            .contains("ledger checks skipped"),
        "{:?}",
        out.cases
    );
    // Only the case asked for, and the setup case.
    assert_eq!(out.cases.keys().collect::<Vec<_>>(), ["credit", "sign-on"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bank_host_that_does_not_echo_f11_in_freeze_answers_fails_exactly_the_cases_that_check_it(
) {
    let bank = bank_process();
    let (proxy, task) = bending_proxy(common::process::addr(bank.port), |mut answer| {
        if answer.mti() == b"0110" {
            answer.remove(11);
        }
        Some(answer)
    })
    .await;
    let args = bank_args(&bank);
    let out = conform("bank-host", proxy, &args).await;
    task.abort();
    assert_eq!(out.code, Some(1), "{:?}", out.cases);
    assert_eq!(
        out.not_passed(),
        [
            "freeze-insufficient-funds",
            "freeze-places-hold",
            "freeze-unknown-card"
        ]
    );
    for case in out.not_passed() {
        assert_eq!(out.status(case), "fail");
        assert!(
            out.failures(case)
                .contains("field 11: expected the request's")
                && out.failures(case).contains("got absent"),
            "{case}: {}",
            out.failures(case)
        );
    }
    assert_eq!(out.summary["failed"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bank_host_that_never_answers_a_repeated_reversal_times_out_there_and_only_there() {
    let bank = bank_process();
    // The repeat 0421 never reaches the bank, so it is never answered.
    let (proxy, task) = swallowing_proxy(common::process::addr(bank.port), *b"0421").await;
    let args = bank_args(&bank);
    let out = conform(
        "bank-host",
        proxy,
        &[args, vec!["--case".into(), "reversal".into()]].concat(),
    )
    .await;
    task.abort();
    assert_eq!(out.code, Some(1), "{:?}", out.cases);
    assert_eq!(out.not_passed(), ["reversal-of-debit"]);
    assert_eq!(out.status("reversal-of-debit"), "timeout");
    assert!(
        out.failures("reversal-of-debit")
            .contains("step 4 (its repeat): no answer within"),
        "{}",
        out.failures("reversal-of-debit")
    );
    assert_eq!(out.status("reversal-unknown"), "pass");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bank_host_that_reverses_a_repeated_reversal_again_fails_the_ledger_check() {
    let bank = bank_process();
    // The repeat 0421 is applied as money given back a second time (a
    // credit of the amount to the card), and answered as a reversal.
    let originals = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
    let remembered = originals.clone();
    let (proxy, task) = proxy(
        common::process::addr(bank.port),
        move |mut request| {
            if request.mti() == b"0421" {
                let (stan, f90) = (request.get_bytes(11)?, request.get_bytes(90)?);
                remembered.lock().unwrap().insert(stan, f90);
                let card = request.get_bytes(2)?;
                request.set_mti(*b"0200");
                request.set(3, &b"260000"[..]);
                request.set(12, &b"000000"[..]);
                request.set(13, &b"0101"[..]);
                request.set(25, &b"00"[..]);
                request.set(102, card);
                request.remove(90);
            }
            Some(request)
        },
        move |mut answer| {
            let original = answer
                .get(11)
                .and_then(|stan| originals.lock().unwrap().remove(stan));
            if let (b"0210", Some(f90)) = (answer.mti(), original) {
                answer.set_mti(*b"0430");
                answer.set(3, &b"000000"[..]);
                answer.set(90, f90);
                answer.remove(15);
                answer.remove(38);
            }
            Some(answer)
        },
    )
    .await;
    let args = bank_args(&bank);
    let out = conform(
        "bank-host",
        proxy,
        &[args, vec!["--case".into(), "reversal".into()]].concat(),
    )
    .await;
    task.abort();
    assert_eq!(out.code, Some(1), "{:?}", out.cases);
    assert_eq!(out.not_passed(), ["reversal-of-debit"]);
    assert_eq!(out.status("reversal-of-debit"), "fail");
    // The answer looks right; only the books tell.
    let failures = out.failures("reversal-of-debit");
    assert!(
        failures.contains("step 4 (its repeat): card 622202")
            && failures.contains("balance changed by 800, expected 0"),
        "{failures}"
    );
}

fn wallet_args(h: &common::Harness) -> Vec<String> {
    vec![
        "--var".into(),
        format!("wallet={WALLET_ID}"),
        "--var".into(),
        format!("payer={}", h.world.cards_a[0]),
        "--var".into(),
        format!("receiver={}", h.world.cards_b[0]),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wallet_suite_passes_against_the_switch_and_the_money_adds_up() {
    let h = start().await;
    let (a_before, b_before) = (h.bank_a.snapshot(), h.bank_b.snapshot());
    let args = wallet_args(&h);
    let out = conform("wallet", h.world.switch_addr, &args).await;
    assert_eq!(out.code, Some(0), "{:?}\n{}", out.cases, out.stderr);
    assert_eq!(out.not_passed(), Vec::<&str>::new());
    for case in [
        "one-to-many-concurrent",
        "exact-resend",
        "over-receive-61",
        "foreign-institution-63",
        "format-error-30",
    ] {
        assert_eq!(out.status(case), "pass", "{case}");
    }
    // Received and paid: 10.00 whole, three shares of 5.00, one 6.00. All
    // packets end unfrozen, so once the unfreeze notices reach bank A
    // nothing is held, and money moved from A to B, none made or lost.
    let paid = 1_000 + 3 * 500 + 600;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while h.bank_a.snapshot().total_held_minor != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            h.bank_a.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (a, b) = (h.bank_a.snapshot(), h.bank_b.snapshot());
    assert_eq!(a.total_balance_minor, a_before.total_balance_minor - paid);
    assert_eq!(b.total_balance_minor, b_before.total_balance_minor + paid);
    assert_eq!(b.total_held_minor, 0);
    h.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_that_approves_a_changed_resend_fails_the_94_step_alone() {
    let h = start().await;
    let (proxy, task) = bending_proxy(h.world.switch_addr, |mut answer| {
        if answer.get_str(39) == Some("94") {
            answer.set(39, &b"00"[..]);
        }
        Some(answer)
    })
    .await;
    let args = wallet_args(&h);
    let out = conform("wallet", proxy, &args).await;
    task.abort();
    assert_eq!(out.code, Some(1), "{:?}", out.cases);
    assert_eq!(out.not_passed(), ["exact-resend"]);
    assert!(
        out.failures("exact-resend").contains(
            r#"step 3 (the same key, another amount): field 39: expected \"94\", got \"00\""#
        ),
        "{}",
        out.failures("exact-resend")
    );
    h.running.shutdown().await;
}

#[test]
fn a_suite_needing_variables_says_which_and_what_for() {
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["conform", "wallet", "--target", "127.0.0.1:9"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("wallet needs these variables"), "{stderr}");
    assert!(stderr.contains("payer: A sender's card"), "{stderr}");

    let listed = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["conform", "bank-host", "--list"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.lines().any(|l| l.starts_with("reversal-of-debit")),
        "{listed}"
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "name = \"bad\"\n[[cases]]\nid = \"x\"\n[[cases.steps]]\nresend = 2\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["conform", bad.to_str().unwrap(), "--list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("case x, step 1: `resend = 2` names no earlier step"),
        "{stderr}"
    );
}

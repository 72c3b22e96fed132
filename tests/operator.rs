//! Operator mistakes, made with the real binaries: maintenance commands run
//! against a store a running switch holds, and tests whose set-up fails half
//! way.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::process::{free_port, serve, write_config, KillOnDrop, SwitchFile};
use iso8583::framing::FramingConfig;
use simulators::bank::Bank;
use simulators::bank_server::spawn_bank;

fn switchboard(args: &[&str], config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .arg(config)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `recover`, `migrate` and `clear` on the embedded store a running `serve`
/// holds are refused, naming the process that holds it, and change nothing
/// (the switch keeps serving); once `serve` is gone (`kill -9`: the kernel
/// releases its lock), `recover` runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_commands_refuse_a_store_that_serve_holds() {
    let dir = tempfile::tempdir().unwrap();
    let bank = |id, bin, seed| {
        spawn_bank(
            Bank::generate(id, bin, 2, 1_000, seed),
            FramingConfig::default(),
        )
    };
    let bank_a = bank(common::BANK_A, "622202", 1).await.unwrap();
    let bank_b = bank(common::BANK_B, "621700", 2).await.unwrap();
    let db = dir.path().join("switchboard.db");
    let wallet_port = free_port();
    let config = write_config(
        dir.path(),
        SwitchFile {
            name: "switch.toml",
            store: &format!("path = {db:?}"),
            wallet_port,
            bank_a: bank_a.addr,
            bank_b: bank_b.addr,
            timeout_ms: 2_000,
            max_backoff_ms: 1_000,
        },
    );
    let mut switch = serve(&config);
    let holder = format!("serve (pid {})", switch.id());

    let db_arg = db.to_str().unwrap();
    for (args, config) in [
        (&["recover", "--config"][..], config.as_path()),
        (
            &["clear", "--date", "2026-12-01", "--config"][..],
            config.as_path(),
        ),
        (&["migrate", "--store"][..], Path::new(db_arg)),
    ] {
        let run = switchboard(args, config);
        let said = text(&run);
        assert!(!run.status.success(), "{args:?} ran: {said}");
        assert!(
            said.contains("store in use") && said.contains(&holder),
            "{args:?} must say who holds the store: {said}"
        );
    }
    // Still serving: an echo is answered.
    let wallet = simulators::wallet::WalletClient::connect(
        format!("127.0.0.1:{wallet_port}").parse().unwrap(),
        FramingConfig::default(),
        common::WALLET_ID,
    )
    .await
    .unwrap();
    let mut echo = iso8583::codec::Message::new(*b"0800");
    echo.set(7, "1201120000")
        .set(11, "000001")
        .set(32, common::WALLET_ID)
        .set(70, "301");
    let answer = wallet.send(&echo).await.unwrap();
    assert_eq!(
        simulators::wallet::code(&answer),
        iso8583::ResponseCode::APPROVED
    );

    switch.kill().unwrap();
    switch.wait().unwrap();
    let run = switchboard(&["recover", "--config"], &config);
    assert!(run.status.success(), "{}", text(&run));
    assert!(text(&run).contains("recovered:"), "{}", text(&run));
}

/// `serve` with an open-file limit that its configuration does not fit in
/// refuses to start, saying which numbers do not fit (it used to start and
/// then fail to accept under load).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_a_configuration_the_open_file_limit_cannot_hold() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        SwitchFile {
            name: "switch.toml",
            store: &format!("path = {:?}", dir.path().join("switchboard.db")),
            wallet_port: free_port(),
            bank_a: "127.0.0.1:9".parse().unwrap(),
            bank_b: "127.0.0.1:9".parse().unwrap(),
            timeout_ms: 2_000,
            max_backoff_ms: 1_000,
        },
    );
    // A shell lowers the limit (soft and hard), then becomes the switch.
    let child = Command::new("sh")
        .args(["-c", "ulimit -n 200 && exec \"$0\" serve --config \"$1\""])
        .arg(env!("CARGO_BIN_EXE_switchboard"))
        .arg(&config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let run = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await
    .expect("serve refuses at once")
    .unwrap()
    .unwrap();
    let said = text(&run);
    assert!(!run.status.success(), "serve started: {said}");
    for part in [
        "333 file descriptors",
        "open-file limit is 200",
        "wallet listeners 257",
        "bank connections 4",
    ] {
        assert!(said.contains(part), "{part:?} missing from: {said}");
    }
    assert!(
        !dir.path().join("switchboard.db").exists(),
        "refused before the store is created"
    );
}

/// A test whose set-up fails after it started processes (here: a program
/// that is not installed, as when haproxy was missing) leaves none of them
/// running: the guards kill and reap them while the panic unwinds.
#[test]
fn a_failing_start_leaves_no_process_behind() {
    let banksim = Path::new(env!("CARGO_BIN_EXE_switchboard")).with_file_name("banksim");
    let mut pids = Vec::new();
    let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut children = Vec::new();
        for (institution, bin) in [(common::BANK_A, "622202"), (common::BANK_B, "621700")] {
            let child = Command::new(&banksim)
                .args(["--listen", &format!("127.0.0.1:{}", free_port())])
                .args(["--institution", institution, "--bin", bin])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap();
            pids.push(child.id());
            children.push(KillOnDrop::new(child));
        }
        for pid in &pids {
            assert!(alive(*pid), "banksim {pid} started");
        }
        let next = Command::new("switchboard-test-no-such-program").spawn();
        let _never = KillOnDrop::new(next.expect("the next step of the set-up cannot start"));
    }));
    assert!(failed.is_err(), "the set-up was to fail");
    assert_eq!(pids.len(), 2);
    for pid in pids {
        assert!(!alive(pid), "banksim {pid} outlived the failed set-up");
    }
}

/// Whether a process (not a reaped one) has this pid.
fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

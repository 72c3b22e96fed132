//! Card data at rest: a real `serve` process on the embedded store carries
//! every flow of the wallet suite (`switchboard conform wallet`), then the
//! day is cleared; every file it wrote (the database and its `-wal`/`-shm`,
//! its decision log, the lock, its log, the clearing files) is searched for every card number
//! of both banks, as ASCII digits, as hex text and as packed BCD.
//!
//! Without a data key the search finds them (the control: the search can
//! fail); with `[security] data_key_file` from `switchboard keygen` it finds
//! none, the files are private (0600), and clearing, which reads the sealed
//! journal back, works as before. Both runs record their links (`[capture]`):
//! in full for the control, masked (the default) with the key, and the masked
//! capture decodes whole. A switch told to require encryption refuses to
//! start without a key.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use iso8583::framing::FramingConfig;
use simulators::bank_server::spawn_bank;

mod common;

use common::card_scan::search;
use common::process::{free_port, offline_config, write_config, KillOnDrop, SwitchFile};
use common::{books_a, books_b, WALLET_ID};

/// A switch process writing its log to `dir/serve.log`.
fn serve_logged(config: &Path, dir: &Path) -> KillOnDrop {
    let log = std::fs::File::create(dir.join("serve.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "debug")
        .env_remove(switchboard::vault::KEYS_ENV)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut child = KillOnDrop::new(child);
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.contains("listening"), "switch did not start: {line:?}");
    child
}

/// Runs a day through a switch in `dir` (sealing with the key file when
/// given): every flow of the wallet suite, then clearing into `dir`.
async fn a_day(dir: &Path, key_file: Option<&str>) -> Vec<String> {
    let (a, b) = (books_a(), books_b());
    let cards: Vec<String> = a
        .accounts()
        .into_iter()
        .chain(b.accounts())
        .map(|(pan, _)| pan)
        .collect();
    let (payer, receiver) = (a.accounts()[0].0.clone(), b.accounts()[0].0.clone());
    let bank_a = spawn_bank(a, FramingConfig::default()).await.unwrap();
    let bank_b = spawn_bank(b, FramingConfig::default()).await.unwrap();
    let port = free_port();
    let config = write_config(
        dir,
        SwitchFile {
            name: "switch.toml",
            store: "path = \"switch.db\"",
            wallet_port: port,
            bank_a: bank_a.addr,
            bank_b: bank_b.addr,
            timeout_ms: 2000,
            max_backoff_ms: 200,
        },
    );
    // Every link recorded: masked as by default, or in full for the control.
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("[capture]\npath = \"links.pcapng\"\n");
    match key_file {
        Some(file) => text.push_str(&format!(
            "[security]\ndata_key_file = \"{file}\"\nrequire_encryption = true\n"
        )),
        None => text.push_str("mask_card_data = false\n"),
    }
    std::fs::write(&config, text).unwrap();
    let switch = serve_logged(&config, dir);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args([
            "conform",
            "wallet",
            "--target",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["--var", &format!("wallet={WALLET_ID}")])
        .args(["--var", &format!("payer={payer}")])
        .args(["--var", &format!("receiver={receiver}")])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), out)
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Let the unfreeze notices reach bank A, then stop as an operator does.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while bank_a.snapshot().total_held_minor != 0 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = switch.id() as i32;
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = switch.into_inner().wait().unwrap();
    assert!(status.success(), "{status}");

    // Today's settlement date: 23:00 in Shanghai (UTC+8) starts the next.
    let date = (chrono::Utc::now() + chrono::Duration::hours(9)).date_naive();
    let cleared = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["clear", "--config"])
        .arg(&config)
        .args(["--date", &date.to_string(), "--out"])
        .arg(dir.join("clearing"))
        .env_remove(switchboard::vault::KEYS_ENV)
        .output()
        .unwrap();
    assert!(
        cleared.status.success(),
        "{}{}",
        String::from_utf8_lossy(&cleared.stdout),
        String::from_utf8_lossy(&cleared.stderr)
    );
    let files = std::fs::read_dir(dir.join("clearing")).unwrap().count();
    assert!(files >= 3, "clearing wrote {files} files");
    cards
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_file_the_switch_writes_holds_a_card_number_once_keys_are_configured() {
    // The control: without a key the card numbers are there to be found.
    let clear_dir = tempfile::tempdir().unwrap();
    let cards = a_day(clear_dir.path(), None).await;
    let found = search(clear_dir.path(), &cards);
    assert!(
        found
            .iter()
            .any(|(f, _)| f.ends_with("switch.db") || f.ends_with("switch.db-wal")),
        "the search finds nothing even in clear: {found:?}"
    );
    assert!(
        found.iter().any(|(f, _)| f.ends_with("links.pcapng")),
        "an unmasked capture holds card numbers: {found:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let keygen = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["keygen", "--out"])
        .arg(dir.path().join("keys.toml"))
        .output()
        .unwrap();
    assert!(keygen.status.success());
    let cards = a_day(dir.path(), Some("keys.toml")).await;
    // The key file itself holds no card number; everything else is searched.
    let found = search(dir.path(), &cards);
    assert_eq!(found, Vec::<(PathBuf, String)>::new());

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for name in [
            "keys.toml",
            "switch.db",
            "switch.db.lock",
            "switch.db-decisions",
        ] {
            let mode = std::fs::metadata(dir.path().join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}: {mode:o}");
        }
    }
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert!(log.contains("card data sealed at rest"), "{log}");

    // The masked capture (searched above with the rest) decodes whole.
    let decoded = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["capture", "decode", "--json", "--unmask"])
        .arg(dir.path().join("links.pcapng"))
        .output()
        .unwrap();
    assert!(
        decoded.status.success(),
        "{}",
        String::from_utf8_lossy(&decoded.stderr)
    );
    let decoded = String::from_utf8(decoded.stdout).unwrap();
    let (messages, summary) = decoded.trim_end().rsplit_once('\n').unwrap();
    let summary: serde_json::Value = serde_json::from_str(summary).unwrap();
    assert_eq!(summary["summary"]["errors"], 0, "{summary}");
    assert!(messages.lines().count() >= 40, "{decoded}");
    assert!(messages.contains("\"2\":\"622202"), "{messages}");

    // An operator reads the sealed journal decoded, card numbers masked...
    let journal = |more: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["journal", "--json", "--config"])
            .arg(dir.path().join("switch.toml"))
            .args(more)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let masked = journal(&[]);
    let freezes = masked
        .lines()
        .filter(|l| l.contains("\"mti\":\"0100\""))
        .count();
    assert!(freezes >= 10, "{masked}");
    assert!(masked.contains("622202******"), "{masked}");
    assert!(!cards.iter().any(|c| masked.contains(c.as_str())));
    // ...and in full only when asked, with the key.
    let unmasked = journal(&["--unmask"]);
    assert!(cards.iter().any(|c| unmasked.contains(c.as_str())));
}

#[test]
fn a_switch_that_requires_encryption_refuses_to_start_without_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = offline_config(dir.path());
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("[security]\nrequire_encryption = true\n");
    std::fs::write(&config, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove(switchboard::vault::KEYS_ENV)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("require_encryption = true, but no data key is configured"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("switch.db").exists(),
        "nothing is stored before the keys are checked"
    );
}

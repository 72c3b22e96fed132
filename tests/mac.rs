//! MACs on every link of a real `switchboard serve`, with `banksim` and
//! `walletsim` processes over TCP:
//!
//! - with MACs on the wallet listener (X9.19), on bank A (X9.19, a KEK, and a
//!   new working key sent by the bank every second) and on bank B (AES-CMAC
//!   over a field list), every scenario passes its money checks, and both
//!   ends of bank A's link put the same new keys in force;
//! - a wallet request without a MAC, or with a wrong one, is answered A0,
//!   journaled with the reason, and moves nothing;
//! - a bank whose key differs is never signed on: nothing reaches it;
//! - a key change under a KEK the switch does not hold is refused (63), and
//!   the key in force stays.

mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iso8583::framing::FramingConfig;
use iso8583::mac::{Coverage, MacAlgorithm, MacKey};
use simulators::scenarios::BankView;
use simulators::wallet::{code, WalletClient, WalletError};
use switchboard::clock::{Clock, SystemClock};
use switchboard::mac::LinkMac;

use common::process::*;
use common::{BANK_A, BANK_B, SWITCH_ID, WALLET_ID};

const WALLET_KEY: &str = "11223344556677888877665544332211";
const BANK_A_KEY: &str = "0123456789ABCDEFFEDCBA9876543210";
const BANK_A_KEK: &str = "89ABCDEF01234567FEDCBA9876543210";
const OTHER_KEK: &str = "0F1E2D3C4B5A69788796A5B4C3D2E1F0";
const BANK_B_KEY: &str = "2B7E151628AED2A6ABF7158809CF4F3C";
const BANK_B_COVERS: &str = "0,2,3,4,7,11,32,33,39";

/// Writes `hex` to a key file of mode 0600.
fn key_file(dir: &Path, name: &str, hex: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("# {name}\n{hex}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.display().to_string()
}

/// A switch config with MACs on the wallet listener and both banks.
fn write_mac_config(dir: &Path, wallet_port: u16, bank_a: u16, bank_b: u16) -> std::path::PathBuf {
    let path = dir.join("switchboard.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[switch]
institution_id = "{SWITCH_ID}"
[store]
path = "{store}"
[[wallets]]
listen = "127.0.0.1:{wallet_port}"
institutions = ["{WALLET_ID}"]
mac = {{ algorithm = "x9.19", key_file = "{wallet_key}" }}
[[banks]]
institution_id = "{BANK_A}"
bins = ["622202"]
hosts = ["127.0.0.1:{bank_a}"]
connections = 2
mac = {{ algorithm = "x9.19", key_file = "{a_key}", kek_file = "{a_kek}" }}
[[banks]]
institution_id = "{BANK_B}"
bins = ["621700"]
hosts = ["127.0.0.1:{bank_b}"]
connections = 2
mac = {{ algorithm = "aes-cmac", key_env = "TEST_BANK_B_MAC_KEY", covered = [{BANK_B_COVERS}] }}
"#,
            store = dir.join("switch.db").display(),
            wallet_key = key_file(dir, "wallet.mac", WALLET_KEY),
            a_key = key_file(dir, "bank-a.mac", BANK_A_KEY),
            a_kek = key_file(dir, "bank-a.kek", BANK_A_KEK),
        ),
    )
    .unwrap();
    path
}

fn os(args: &[&str]) -> Vec<std::ffi::OsString> {
    args.iter().map(|a| a.into()).collect()
}

fn refs(args: &[std::ffi::OsString]) -> Vec<&OsStr> {
    args.iter().map(|a| a.as_os_str()).collect()
}

/// The new KCVs a log reports, in order, from lines containing `event`.
fn new_kcvs(log: &str, event: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(event))
        .filter_map(|l| {
            let at = l.find("new_kcv=")? + "new_kcv=".len();
            l.get(at..at + 6).map(str::to_string)
        })
        .collect()
}

/// Waits up to `limit` for `ready` to hold of the log at `path`.
fn wait_for_log(path: &Path, limit: Duration, ready: impl Fn(&str) -> bool) -> String {
    let until = Instant::now() + limit;
    loop {
        let log = read_log(path);
        if ready(&log) || Instant::now() > until {
            return log;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wallet_mac() -> Arc<LinkMac> {
    let key = MacKey::from_hex(MacAlgorithm::X919, WALLET_KEY).unwrap();
    Arc::new(LinkMac::new(key, Coverage::Message, None))
}

async fn payer_card(admin: u16) -> (String, usize) {
    let ledger = BankView::Admin(addr(admin)).snapshot().await.unwrap();
    (ledger.accounts[0].pan.clone(), ledger.holds.len())
}

/// Bank A with the X9.19 key the switch has, sending a new working key
/// under `kek` every second; its log in `log`.
fn bank_a_changing_keys(kek: &str, log: &Path) -> Banksim {
    let args = os(&[
        "--mac-key",
        BANK_A_KEY,
        "--mac-kek",
        kek,
        "--key-change-every",
        "1",
    ]);
    banksim_logging(
        BANK_A,
        "622202",
        1,
        "none",
        &refs(&args),
        std::fs::File::create(log).unwrap(),
    )
}

/// Bank B with AES-CMAC over the field list the switch has.
fn bank_b_aes_cmac(log: impl Into<Stdio>) -> Banksim {
    let args = os(&[
        "--mac-key",
        BANK_B_KEY,
        "--mac",
        "aes-cmac",
        "--mac-covers",
        BANK_B_COVERS,
    ]);
    banksim_logging(BANK_B, "621700", 2, "none", &refs(&args), log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn macs_on_every_link_carry_the_scenarios_and_refuse_forgeries() {
    let dir = tempfile::tempdir().unwrap();
    let (a_log, b_log, switch_log) = (
        dir.path().join("bank-a.log"),
        dir.path().join("bank-b.log"),
        dir.path().join("switch.log"),
    );
    let bank_a = bank_a_changing_keys(BANK_A_KEK, &a_log);
    let bank_b = bank_b_aes_cmac(std::fs::File::create(&b_log).unwrap());
    let wallet_port = free_port();
    let config = write_mac_config(dir.path(), wallet_port, bank_a.port, bank_b.port);
    std::env::set_var("TEST_BANK_B_MAC_KEY", BANK_B_KEY);
    let _switch = serve_logging(&config, std::fs::File::create(&switch_log).unwrap());

    // Every scenario, its money checked, through MACs on all three links
    // while bank A changes its working key every second.
    let scenarios = Command::new(simulator_path("walletsim"))
        .arg("scenarios")
        .args(["--switch", &addr(wallet_port).to_string()])
        .args(["--payer-admin", &addr(bank_a.admin).to_string()])
        .args(["--receiver-admin", &addr(bank_b.admin).to_string()])
        .args(["--institution", WALLET_ID, "--mac-key", WALLET_KEY])
        .stderr(Stdio::null())
        .output()
        .expect("walletsim runs");
    let report = String::from_utf8_lossy(&scenarios.stdout);
    assert!(scenarios.status.success(), "scenarios failed:\n{report}");
    assert!(!report.contains("FAILED"), "{report}");

    // Both ends of bank A's link put the same keys in force, in order.
    let switch_says = wait_for_log(&switch_log, Duration::from_secs(15), |log| {
        new_kcvs(log, "MAC working key changed by the bank").len() >= 2
    });
    let changed = new_kcvs(&switch_says, "MAC working key changed by the bank");
    assert!(
        changed.len() >= 2,
        "fewer than 2 key changes:\n{switch_says}"
    );
    let bank_says = wait_for_log(&a_log, Duration::from_secs(5), |log| {
        new_kcvs(log, "bank: MAC working key changed").len() >= changed.len()
    });
    let installed = new_kcvs(&bank_says, "bank: MAC working key changed");
    assert!(
        installed.starts_with(&changed) || changed.starts_with(&installed),
        "the switch put {changed:?} in force, the bank {installed:?}"
    );
    assert!(!switch_says.contains(BANK_A_KEY) && !switch_says.contains(WALLET_KEY));

    // A request without a MAC, and one with a wrong MAC: A0, nothing held.
    let clock = SystemClock;
    let (card, holds_before) = payer_card(bank_a.admin).await;
    let plain = WalletClient::connect(addr(wallet_port), FramingConfig::default(), WALLET_ID)
        .await
        .unwrap()
        .with_timeout(Duration::from_secs(10));
    let answer = plain
        .send(&plain.freeze(&card, 1_000, clock.now()))
        .await
        .unwrap();
    assert_eq!(code(&answer), "A0");
    let mut forged = plain.freeze(&card, 1_000, clock.now());
    forged.set(128, vec![0x5Au8; 8]);
    let answer = plain.send(&forged).await.unwrap();
    assert_eq!(code(&answer), "A0");
    assert_eq!(payer_card(bank_a.admin).await.1, holds_before);
    let refusals = wait_for_log(&switch_log, Duration::from_secs(5), |log| {
        log.matches("MAC refused").count() >= 2
    });
    assert!(
        refusals.contains("field 128 (MAC) is missing"),
        "{refusals}"
    );
    assert!(refusals.contains("does not verify"), "{refusals}");

    // Signed: approved, and the answer verifies (the client checks it),
    // after bank A's keys have changed.
    let signed = WalletClient::connect(addr(wallet_port), FramingConfig::default(), WALLET_ID)
        .await
        .unwrap()
        .with_timeout(Duration::from_secs(10))
        .with_mac(Some(wallet_mac()));
    let answer = signed
        .send(&signed.freeze(&card, 1_000, clock.now()))
        .await
        .unwrap();
    assert_eq!(code(&answer), "00");
    assert_eq!(payer_card(bank_a.admin).await.1, holds_before + 1);

    // An answer signed with another key is refused by the wallet.
    let other = MacKey::from_hex(MacAlgorithm::X919, BANK_A_KEY).unwrap();
    let suspicious = WalletClient::connect(addr(wallet_port), FramingConfig::default(), WALLET_ID)
        .await
        .unwrap()
        .with_timeout(Duration::from_secs(10))
        .with_mac(Some(Arc::new(LinkMac::new(other, Coverage::Message, None))));
    let refused = suspicious
        .send(&suspicious.freeze(&card, 1_000, clock.now()))
        .await;
    assert!(matches!(refused, Err(WalletError::Mac(_))), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bank_with_another_key_is_never_signed_on() {
    let dir = tempfile::tempdir().unwrap();
    let switch_log = dir.path().join("switch.log");
    // Bank A holds another working key than the switch's.
    let bank_a = banksim_with(
        BANK_A,
        "622202",
        1,
        "none",
        &refs(&os(&["--mac-key", "FEDCBA98765432100123456789ABCDEF"])),
    );
    let bank_b = bank_b_aes_cmac(Stdio::null());
    let wallet_port = free_port();
    let config = write_mac_config(dir.path(), wallet_port, bank_a.port, bank_b.port);
    std::env::set_var("TEST_BANK_B_MAC_KEY", BANK_B_KEY);
    let _switch = serve_logging(&config, std::fs::File::create(&switch_log).unwrap());
    // Bank A answers the sign-on A0, signed with its key, which the switch
    // refuses in turn: the link never comes up.
    let log = wait_for_log(&switch_log, Duration::from_secs(15), |log| {
        log.matches("sign-on failed").count() >= 2
    });
    assert!(
        log.contains("sign-on failed: the answer from bank 48020000"),
        "{log}"
    );
    assert!(log.contains("does not verify"), "{log}");
    assert!(!log.contains("signed on link=bank 48020000"), "{log}");

    let (card, holds_before) = payer_card(bank_a.admin).await;
    let wallet = WalletClient::connect(addr(wallet_port), FramingConfig::default(), WALLET_ID)
        .await
        .unwrap()
        .with_timeout(Duration::from_secs(10))
        .with_mac(Some(wallet_mac()));
    let answer = wallet
        .send(&wallet.freeze(&card, 1_000, SystemClock.now()))
        .await
        .unwrap();
    assert_eq!(code(&answer), "91", "no link to bank A is up");
    assert_eq!(payer_card(bank_a.admin).await.1, holds_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_change_under_another_kek_is_refused_and_the_key_stays() {
    let dir = tempfile::tempdir().unwrap();
    let (a_log, switch_log) = (dir.path().join("bank-a.log"), dir.path().join("switch.log"));
    let bank_a = bank_a_changing_keys(OTHER_KEK, &a_log);
    let bank_b = bank_b_aes_cmac(Stdio::null());
    let wallet_port = free_port();
    let config = write_mac_config(dir.path(), wallet_port, bank_a.port, bank_b.port);
    std::env::set_var("TEST_BANK_B_MAC_KEY", BANK_B_KEY);
    let _switch = serve_logging(&config, std::fs::File::create(&switch_log).unwrap());
    let bank_says = wait_for_log(&a_log, Duration::from_secs(15), |log| {
        log.matches("key change refused by the switch").count() >= 2
    });
    assert!(
        bank_says
            .matches("key change refused by the switch")
            .count()
            >= 2,
        "{bank_says}"
    );
    assert!(
        bank_says.contains("code=\"63\"") || bank_says.contains("code=63"),
        "{bank_says}"
    );
    let switch_says = read_log(&switch_log);
    assert!(switch_says.contains("key change refused"), "{switch_says}");
    assert!(
        !switch_says.contains("MAC working key changed"),
        "{switch_says}"
    );

    // The key in force is still the configured one: money moves.
    let (card, holds_before) = payer_card(bank_a.admin).await;
    let wallet = WalletClient::connect(addr(wallet_port), FramingConfig::default(), WALLET_ID)
        .await
        .unwrap()
        .with_timeout(Duration::from_secs(10))
        .with_mac(Some(wallet_mac()));
    let answer = wallet
        .send(&wallet.freeze(&card, 1_000, SystemClock.now()))
        .await
        .unwrap();
    assert_eq!(code(&answer), "00");
    assert_eq!(payer_card(bank_a.admin).await.1, holds_before + 1);
}

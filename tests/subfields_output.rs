//! Composite fields in the human output of `switchboard capture decode
//! --fields` and `switchboard journal --fields`, with the real binary: every
//! field under the message's line, and under field 55 its EMV tags by name,
//! the card number tag masked unless asked.

use std::net::SocketAddr;
use std::process::{Command, Output};

use bytes::Bytes;
use capture::packet::{ACK, SYN};
use capture::write::{ethernet, ip_tcp, PcapWriter, LINKTYPE_ETHERNET};
use iso8583::framing::{frame_bytes, FramingConfig};
use iso8583::{Message, Spec};
use switchboard::config::StoreConfig;
use switchboard::store::{Direction, JournalEntry};

mod common;

use common::process::offline_config;

const SPEC: &str = "iso8583-1987-bcd";
/// EMV data with the card number (5A) among the tags: 9F26, 82, 5A.
const F55: &str = "9F26082E078F5CEA112DAA82021C005A086222020200112233";
const CARD: &str = "6222020200112233";

/// A chip purchase in the BCD terminal dialect, unframed.
fn purchase() -> (Message, Bytes) {
    let spec = Spec::load(SPEC).unwrap();
    let mut msg = Message::new(*b"0200");
    msg.set(3, "000000")
        .set(4, "000000010000")
        .set(11, "000017")
        .set(55, hex::decode(F55).unwrap());
    let body = iso8583::build_bytes(&spec, &msg).unwrap();
    (msg, body)
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .env_remove(switchboard::vault::KEYS_ENV)
        .output()
        .expect("switchboard runs")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The lines `--fields` prints under the purchase, masked.
fn assert_subfields_listed(text: &str) {
    let line = |start: &str| {
        text.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line starting {start:?} in\n{text}"))
    };
    assert!(line("      55  ICC system related data").len() > 40);
    assert!(line("          9F26   Application Cryptogram").ends_with(" 2E078F5CEA112DAA"));
    assert!(line("          82     Application Interchange Profile").ends_with(" 1C00"));
    assert!(
        line("          5A     Application Primary Account Number (PAN)")
            .ends_with(" 622202******2233")
    );
    assert!(!text.contains(CARD), "{text}");
}

#[test]
fn capture_decode_fields_lists_the_emv_tags() {
    let dir = tempfile::tempdir().unwrap();
    let c: SocketAddr = "192.0.2.1:40000".parse().unwrap();
    let s: SocketAddr = "192.0.2.2:5000".parse().unwrap();
    let framing: FramingConfig = "binary2".parse().unwrap();
    let frame = frame_bytes(&framing, &[], &purchase().1).unwrap();
    let mut w = PcapWriter::new(Vec::new(), LINKTYPE_ETHERNET, false, false).unwrap();
    let base_ns = 1_764_666_000_000_000_000;
    for (at, p) in [
        (0, ip_tcp(c, s, 10, SYN, b"")),
        (1, ip_tcp(s, c, 50, SYN | ACK, b"")),
        (2, ip_tcp(c, s, 11, ACK, &frame)),
    ] {
        w.packet(base_ns + at * 1000, &ethernet(&p, None)).unwrap();
    }
    let path = dir.path().join("terminal.pcap");
    std::fs::write(&path, w.into_inner()).unwrap();
    let path = path.to_str().unwrap();
    let common = ["capture", "decode", "--spec", SPEC, "--framing", "binary2"];

    // Without --fields: one line per message, as before.
    let summary = stdout(&run(&[&common[..], &[path]].concat()));
    assert!(summary.contains("0200 3=000000 11=000017"), "{summary}");
    assert!(!summary.contains("Application Cryptogram"), "{summary}");

    let text = stdout(&run(&[&common[..], &["--fields", path]].concat()));
    let message_line = text.lines().position(|l| l.contains("  0200 3=")).unwrap();
    assert!(
        text.lines()
            .nth(message_line + 1)
            .unwrap()
            .starts_with("    MTI  0200"),
        "{text}"
    );
    assert_subfields_listed(&text);
    let unmasked = stdout(&run(
        &[&common[..], &["--fields", "--unmask", path]].concat()
    ));
    assert!(unmasked.contains(&format!(" {CARD}\n")), "{unmasked}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_fields_lists_the_emv_tags() {
    let dir = tempfile::tempdir().unwrap();
    let config = offline_config(dir.path());
    // The links speak the BCD terminal dialect.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replacen("[switch]\n", &format!("[switch]\nspec = \"{SPEC}\"\n"), 1),
    )
    .unwrap();

    let (msg, raw) = purchase();
    let at_ms = chrono::Utc::now().timestamp_millis() - 60_000;
    let store =
        switchboard::service::open_store(&StoreConfig::Embedded(dir.path().join("switch.db")))
            .await
            .unwrap();
    store.journal(JournalEntry::of(
        Direction::In,
        "terminal",
        &msg,
        raw,
        at_ms,
        None,
    ));
    // Written before the store is let go.
    store.journal_between(0, 1).await.unwrap();
    drop(store);

    let config = config.to_str().unwrap();
    let text = stdout(&run(&["journal", "--fields", "--config", config]));
    assert!(
        text.contains(" in  terminal  0200 3=000000 11=000017"),
        "{text}"
    );
    assert_subfields_listed(&text);
    assert!(text.contains("1 messages"), "{text}");
}

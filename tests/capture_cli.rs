//! The real `switchboard capture decode` on captures written by the capture
//! crate's writer: the JSON shape, masking, latency, frame errors, filters,
//! and a truncated file (its packet named, exit status 1, what came before
//! still decoded).

use std::net::SocketAddr;
use std::process::{Command, Output};

use capture::packet::{ACK, FIN, SYN};
use capture::write::{ethernet, ip_tcp, PcapWriter, LINKTYPE_ETHERNET};
use iso8583::framing::{frame_bytes, FramingConfig};
use iso8583::{Message, Spec};

mod common;

use common::process::{assert_no_progress, on_a_terminal, quoted};

const PAN: &str = "6222020200112233446";
const BASE_NS: i64 = 1_764_666_000_123_456_000; // 2025-12-02T09:00:00.123456Z

fn framed(mti: &str, stan: &str) -> Vec<u8> {
    let spec = Spec::load("switchboard").unwrap();
    let mut msg = Message::new(mti.as_bytes().try_into().unwrap());
    msg.set(2, PAN);
    msg.set(3, "030000");
    msg.set(4, "000000010000");
    msg.set(7, "1202090000");
    msg.set(11, stan.to_string());
    msg.set(32, "01020000");
    if mti.ends_with("10") {
        msg.set(39, "00");
    }
    let body = iso8583::build_bytes(&spec, &msg).unwrap();
    frame_bytes(&FramingConfig::default(), &[], &body)
        .unwrap()
        .to_vec()
}

/// A freeze and its answer 2.5 ms later, then a frame that does not parse.
fn capture_file(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let c: SocketAddr = "192.0.2.1:40000".parse().unwrap();
    let s: SocketAddr = "192.0.2.2:5000".parse().unwrap();
    let req = framed("0100", "000007");
    let resp = framed("0110", "000007");
    let bad = b"00080110\xff\xff\xff\xff".to_vec();
    let packets = [
        (0, ip_tcp(c, s, 10, SYN, b"")),
        (1, ip_tcp(s, c, 50, SYN | ACK, b"")),
        (100, ip_tcp(c, s, 11, ACK, &req)),
        (2600, ip_tcp(s, c, 51, ACK, &resp)),
        (2700, ip_tcp(s, c, 51 + resp.len() as u32, ACK, &bad)),
        (3000, ip_tcp(c, s, 11 + req.len() as u32, FIN | ACK, b"")),
    ];
    let mut w = PcapWriter::new(Vec::new(), LINKTYPE_ETHERNET, false, false).unwrap();
    for (at_us, p) in &packets {
        w.packet(BASE_NS + at_us * 1000, &ethernet(p, None))
            .unwrap();
    }
    let path = dir.path().join("link.pcap");
    std::fs::write(&path, w.into_inner()).unwrap();
    path
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .output()
        .expect("switchboard runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[test]
fn json_has_one_object_per_message_then_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    let path = capture_file(&dir);
    let out = run(&["capture", "decode", "--json", path.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    // The frame that does not parse makes the status 1; the rest is printed.
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    let req = &lines[0];
    assert_eq!(req["ts"], "2025-12-02T09:00:00.123556Z");
    assert_eq!(req["src"], "192.0.2.1:40000");
    assert_eq!(req["dst"], "192.0.2.2:5000");
    assert_eq!(req["mti"], "0100");
    assert_eq!(req["fields"]["2"], "622202*********3446");
    assert_eq!(req["fields"]["11"], "000007");
    assert!(req.get("latency_us").is_none());
    let resp = &lines[1];
    assert_eq!(resp["mti"], "0110");
    assert_eq!(resp["fields"]["39"], "00");
    assert_eq!(resp["latency_us"], 2500);
    let error = &lines[2];
    assert_eq!(error["src"], "192.0.2.2:5000");
    assert!(
        error["error"]["reason"]
            .as_str()
            .unwrap()
            .contains("bitmap"),
        "{error}"
    );
    assert!(error["error"]["offset"].is_u64(), "{error}");
    let summary = &lines[3]["summary"];
    assert_eq!(summary["messages"], 2);
    assert_eq!(summary["errors"], 1);
    assert_eq!(summary["unanswered_requests"], 0);
    assert_eq!(summary["latency_us"]["max"], 2500);
    assert!(!stdout.contains(PAN));
}

#[test]
fn unmask_and_human_lines_and_filters() {
    let dir = tempfile::tempdir().unwrap();
    let path = capture_file(&dir);
    let path = path.to_str().unwrap();
    let out = run(&["capture", "decode", "--unmask", path]);
    let stdout = text(&out.stdout);
    assert!(stdout.contains(&format!(
        "2025-12-02T09:00:00.123556Z #1 192.0.2.1:40000 > 192.0.2.2:5000  0100 3=030000 11=000007 2={PAN} 4=000000010000\n"
    )), "{stdout}");
    assert!(stdout.contains("0110 3=030000 11=000007"), "{stdout}");
    assert!(stdout.contains("39=00  latency 2.500 ms"), "{stdout}");
    assert!(stdout.contains("latency (1 matched)"), "{stdout}");
    let none = run(&["capture", "decode", "--port", "6000", path]);
    assert!(none.status.success());
    assert!(
        text(&none.stdout).contains("messages 0,"),
        "{}",
        text(&none.stdout)
    );
    let one_end = run(&["capture", "decode", "--filter", "192.0.2.2:5000", path]);
    assert!(text(&one_end.stdout).contains("messages 2,"));
}

#[test]
fn a_truncated_capture_names_its_packet_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = capture_file(&dir);
    let mut bytes = std::fs::read(&path).unwrap();
    // Cut inside packet 5 (the bad frame's packet): the messages before it stay.
    let keep = bytes.len() - 54 - 16 - 20;
    bytes.truncate(keep);
    std::fs::write(&path, &bytes).unwrap();
    let out = run(&["capture", "decode", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("packet 5: the capture ends inside it"),
        "{stderr}"
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(" 0100 ") && stdout.contains(" 0110 "),
        "{stdout}"
    );
    assert!(stdout.contains("messages 2,"), "{stdout}");
}

#[test]
fn the_progress_bar_is_drawn_on_a_terminal_only_while_the_lines_go_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = capture_file(&dir);
    let piped = run(&["capture", "decode", path.to_str().unwrap()]);
    assert_no_progress("capture decode", &piped.stderr);

    // At a terminal, the lines into a file: the bar on the terminal, the
    // file the same lines as through a pipe.
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_switchboard"));
    let lines = dir.path().join("lines.txt");
    let (status, screen) = on_a_terminal(
        &format!(
            "{} capture decode {} > {}",
            quoted(bin),
            quoted(&path),
            quoted(&lines)
        ),
        dir.path(),
    );
    // The capture's bad frame makes it exit 1, as through a pipe.
    assert_eq!(status.code(), piped.status.code());
    let screen_text = String::from_utf8_lossy(&screen);
    assert!(screen.contains(&0x1b), "no bar: {screen_text:?}");
    assert!(screen_text.contains("of the capture"), "{screen_text:?}");
    assert_eq!(std::fs::read(&lines).unwrap(), piped.stdout);

    // At a terminal, the lines on it too: they are the progress, no bar.
    let (_, screen) = on_a_terminal(
        &format!("{} capture decode {}", quoted(bin), quoted(&path)),
        dir.path(),
    );
    assert!(
        !screen.contains(&0x1b),
        "{:?}",
        String::from_utf8_lossy(&screen)
    );
    assert!(String::from_utf8_lossy(&screen).contains("messages 2,"));
}

#[test]
fn a_file_that_is_not_a_capture_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not.pcap");
    for (content, says) in [
        (&b"hello, world"[..], "not a pcap or pcapng file"),
        (b"", "the file is empty"),
    ] {
        std::fs::write(&path, content).unwrap();
        let out = run(&["capture", "decode", path.to_str().unwrap()]);
        assert!(!out.status.success());
        assert!(text(&out.stderr).contains(says), "{}", text(&out.stderr));
    }
}

#[test]
fn the_summary_names_an_unanswered_request() {
    let dir = tempfile::tempdir().unwrap();
    let path = capture_file(&dir);
    let whole = run(&["capture", "decode", "--json", path.to_str().unwrap()]);
    let last = text(&whole.stdout).lines().last().unwrap().to_string();
    let summary: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert_eq!(summary["summary"]["unanswered"], serde_json::json!([]));
    // Only the first three packets: the request, without its answer.
    let bytes = std::fs::read(&path).unwrap();
    let mut at = 24;
    for _ in 0..3 {
        let len = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        at += 16 + len;
    }
    std::fs::write(&path, &bytes[..at]).unwrap();
    let out = run(&["capture", "decode", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("unanswered requests: 1, responses without request: 0\nunanswered:\n  2025-12-02T09:00:00.123556Z #1 192.0.2.1:40000 > 192.0.2.2:5000  0100 11=000007 (packet 3)\n"),
        "{stdout}"
    );
}

//! Our captures opened in Wireshark's own reader and ISO 8583 dissector, by
//! tshark: a `banksim --capture` on a binary2 link (the only framing the
//! dissector reads) decodes in tshark to the messages that were exchanged,
//! requests and responses with their STANs and response codes, the same
//! ones `switchboard capture decode --json` reads; and every file the
//! switch's `[capture]` writes, rotated ones included, opens in tshark
//! without a complaint. tshark must be installed: without it the tests fail
//! (`.ci/run` installs it).

mod common;

use std::path::Path;
use std::process::Command;

use futures::SinkExt;
use iso8583::framing::FramingConfig;
use iso8583::Spec;
use simulators::bank::Bank;
use switchboard::config::CaptureConfig;

use common::process::{banksim_with, BANKSIM_BALANCE};

#[path = "../simulators/tests/common/mod.rs"]
mod sim;

/// The options Wireshark's ISO 8583 dissector needs for our binary2 links:
/// a big-endian length prefix and binary bitmaps (its defaults are
/// little-endian and bitmaps in hex digits).
const DISSECTOR_PREFS: [&str; 4] = [
    "-o",
    "iso8583.len_endian:Big endian",
    "-o",
    "iso8583.binencode:Bin data not encoded",
];

/// tshark's output for `args`, which must succeed; its stderr must not say
/// the file is damaged (tshark warns about running as root: that is allowed).
fn tshark(args: &[&str]) -> String {
    let out = Command::new("tshark")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "tshark does not run ({e}): these tests open our captures in it. \
                 Install it with `apt-get install -y tshark` (.ci/run does)"
            )
        });
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tshark {args:?}: {stderr}{stdout}");
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("Running as user"))
        .collect();
    assert!(complaints.is_empty(), "tshark {args:?}: {stderr}");
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tshark_decodes_a_banksim_binary2_capture_as_we_do() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bank.pcapng");
    let bank = banksim_with(
        sim::BANK,
        "622202",
        5,
        "none",
        &[
            "--framing".as_ref(),
            "binary2".as_ref(),
            "--capture".as_ref(),
            path.as_ref(),
        ],
    );
    let pan = Bank::generate(sim::BANK, "622202", 6, BANKSIM_BALANCE, 5).accounts()[0]
        .0
        .clone();
    let spec = Spec::load("switchboard").unwrap();
    let framing: FramingConfig = "binary2".parse().unwrap();
    let mut client = sim::connect(common::process::addr(bank.port), &framing).await;
    let client_port = client.get_ref().local_addr().unwrap().port();
    // One at a time, so the file's order is known.
    let mut exchanged = Vec::new();
    for request in [sim::sign_on("000001"), sim::freeze(&pan, 2_500, "000002")] {
        sim::feed(&mut client, &spec, &request).await;
        client.flush().await.unwrap();
        let answer = sim::receive(&mut client, &spec).await;
        assert_eq!(answer.get_str(39), Some("00"), "{answer:?}");
        for (from, m) in [(client_port, &request), (bank.port, &answer)] {
            exchanged.push(format!(
                "{from} {} {} {}",
                m.mti_str(),
                m.get_str(11).unwrap(),
                m.get_str(39).unwrap_or("-")
            ));
        }
    }
    let bank_port = bank.port;
    drop(client);
    bank.interrupt();
    let path_str = path.to_str().unwrap();

    // tshark, told that the bank's port carries ISO 8583.
    let decode_as = format!("tcp.port=={bank_port},iso8583");
    let mut args = vec!["-r", path_str, "-d", &decode_as];
    args.extend(DISSECTOR_PREFS);
    args.extend([
        "-Y",
        "iso8583",
        "-T",
        "fields",
        "-E",
        "separator=/s",
        "-e",
        "tcp.srcport",
        "-e",
        "iso8583.mti",
        "-e",
        "iso8583.bit11",
        "-e",
        "iso8583.bit39",
        "-e",
        "_ws.expert.message",
    ]);
    let seen: Vec<String> = tshark(&args)
        .lines()
        .map(|l| {
            // No expert info (malformed, undecoded): five fields, the last empty.
            let (line, expert) = l.rsplit_once(' ').unwrap();
            assert_eq!(expert, "", "{l}");
            let mut fields: Vec<&str> = line.split(' ').collect();
            if fields[3].is_empty() {
                fields[3] = "-";
            }
            fields.join(" ")
        })
        .collect();
    assert_eq!(seen, exchanged);

    // Our own decoder reads the same messages.
    let lines = common::process::capture_decode_json(&path);
    let (summary, events) = lines.split_last().unwrap();
    let ours: Vec<String> = events
        .iter()
        .map(|e| {
            let port = e["src"].as_str().unwrap().rsplit_once(':').unwrap().1;
            let f = &e["fields"];
            format!(
                "{port} {} {} {}",
                e["mti"].as_str().unwrap(),
                f["11"].as_str().unwrap(),
                f["39"].as_str().unwrap_or("-")
            )
        })
        .collect();
    assert_eq!(ours, exchanged);
    assert_eq!(summary["summary"]["errors"], 0, "{summary}");
    // Masked by default, and read as well as ever: the freeze's card number
    // is nowhere in the file.
    let found = common::card_scan::search(dir.path(), std::slice::from_ref(&pan));
    assert!(found.is_empty(), "{found:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_file_of_a_rotated_serve_capture_opens_in_tshark() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switch.pcapng");
    let h = common::start_recording(
        common::Backend::Embedded,
        Some(CaptureConfig {
            path: path.clone(),
            // The smallest allowed: the scenario fills several files.
            max_bytes: 4096,
            max_files: 100,
            mask_card_data: true,
        }),
    )
    .await;
    common::assert_passed(&simulators::scenarios::one_to_one(&h.world).await);
    h.running.shutdown().await;

    let mut files = vec![path.clone()];
    files.extend(
        (1..)
            .map(|n| dir.path().join(format!("switch.pcapng.{n}")))
            .take_while(|p| p.exists()),
    );
    assert!(files.len() > 1, "not rotated: {files:?}");
    for file in &files {
        let packets = packet_count(file);
        assert!(packets > 0, "{}", file.display());
    }
}

/// The packets of a capture, as tshark reads it.
fn packet_count(file: &Path) -> usize {
    tshark(&[
        "-r",
        file.to_str().unwrap(),
        "-T",
        "fields",
        "-e",
        "frame.number",
    ])
    .lines()
    .count()
}

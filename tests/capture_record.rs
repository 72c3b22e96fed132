//! A bank simulator recording its link (`banksim --capture`, here the
//! in-process server with a capture recorder), read back by the real
//! `switchboard capture decode --json`: every message the client sent and the
//! bank answered is in the file, in order, with the connection's real
//! addresses and ports, each answer matched to its request with a latency.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use capture::record::Recorder;
use futures::SinkExt;
use iso8583::framing::FramingConfig;
use iso8583::Spec;
use simulators::faults::Faults;
use simulators::{spawn_bank_recorded, Bank};

#[path = "../simulators/tests/common/mod.rs"]
mod sim;

use sim::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_bank_link_decodes_with_every_message_and_its_latency() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bank.pcapng");
    let spec = Spec::load("switchboard").unwrap();
    let mut bank = Bank::new(BANK);
    bank.add_account(&sender(), 100_000);
    bank.add_account(&recipient(), 0);
    let recorder = Recorder::create(&path).unwrap();
    let handle = spawn_bank_recorded(
        bank,
        FramingConfig::default(),
        Faults::default(),
        Some(recorder.clone()),
    )
    .await
    .unwrap();

    let mut client = connect(handle.addr, &FramingConfig::default()).await;
    let client_addr: SocketAddr = client.get_ref().local_addr().unwrap();
    let requests = [
        sign_on("000001"),
        freeze(&sender(), 30_000, "000002"),
        credit(&recipient(), 500, "000003"),
    ];
    // Pipelined: all three in flight at once.
    for request in &requests {
        feed(&mut client, &spec, request).await;
    }
    client.flush().await.unwrap();
    let mut answers = BTreeMap::new();
    for _ in &requests {
        let answer = receive(&mut client, &spec).await;
        answers.insert(
            answer.get_str(11).unwrap().to_string(),
            answer.mti_str().to_string(),
        );
    }
    let bank_addr = handle.addr.to_string();
    drop(client);
    handle.stop().await;
    let stats = recorder.finish().unwrap();
    assert_eq!(stats.dropped, 0);
    // SYN, SYN-ACK, three requests, three answers, FIN.
    assert_eq!(stats.written, 9, "{stats:?}");

    let lines = common::process::capture_decode_json(&path);
    let (summary, events) = lines.split_last().unwrap();
    let client_addr = client_addr.to_string();
    let requests_seen: Vec<_> = events
        .iter()
        .filter(|e| e["src"] == client_addr.as_str())
        .collect();
    let answers_seen: Vec<_> = events
        .iter()
        .filter(|e| e["src"] == bank_addr.as_str())
        .collect();
    assert_eq!(events.len(), 6, "{lines:?}");
    assert_eq!(requests_seen.len(), 3, "{lines:?}");
    assert_eq!(answers_seen.len(), 3, "{lines:?}");
    for (sent, seen) in requests.iter().zip(&requests_seen) {
        assert_eq!(seen["dst"], bank_addr.as_str());
        assert_eq!(seen["mti"], sent.mti_str());
        assert_eq!(seen["fields"]["11"], sent.get_str(11).unwrap());
        assert!(seen.get("latency_us").is_none(), "{seen}");
    }
    for seen in &answers_seen {
        assert_eq!(seen["dst"], client_addr.as_str());
        let stan = seen["fields"]["11"].as_str().unwrap();
        assert_eq!(seen["mti"], answers[stan].as_str(), "{seen}");
        assert!(seen["latency_us"].is_u64(), "unmatched: {seen}");
        assert_eq!(seen["fields"]["39"], "00", "{seen}");
    }
    let summary = &summary["summary"];
    assert_eq!(summary["messages"], 6, "{summary}");
    assert_eq!(summary["errors"], 0, "{summary}");
    assert_eq!(summary["unanswered_requests"], 0, "{summary}");
}

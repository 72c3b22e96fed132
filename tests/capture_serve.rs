//! The switch recording its links (`[capture]`): a red packet sent and
//! received through the switch and both bank simulators, then the capture read
//! back by the real `switchboard capture decode --json`: the wallet's
//! connection and both bank links are there with their real addresses, every
//! request answered and matched with a latency, nothing unparsable.

use std::collections::BTreeSet;

use switchboard::config::CaptureConfig;

mod common;

use common::{assert_passed, start_recording, Backend};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_with_capture_records_its_wallet_and_bank_links() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switch.pcapng");
    let h = start_recording(Backend::Embedded, Some(CaptureConfig::at(&path))).await;
    assert_passed(&simulators::scenarios::one_to_one(&h.world).await);
    let switch_addr = h.world.switch_addr.to_string();
    let bank_a = h.bank_a.addr.to_string();
    let bank_b = h.bank_b.addr.to_string();
    h.running.shutdown().await;

    let lines = common::process::capture_decode_json(&path);
    let (summary, events) = lines.split_last().unwrap();
    let summary = &summary["summary"];
    assert_eq!(summary["errors"], 0, "{summary}");
    assert_eq!(summary["unanswered_requests"], 0, "{summary}");
    assert!(events.iter().all(|e| e.get("mti").is_some()), "{lines:?}");

    // (server end, MTI, direction) of every message.
    let mut seen = BTreeSet::new();
    for e in events {
        let (src, dst) = (e["src"].as_str().unwrap(), e["dst"].as_str().unwrap());
        let mti = e["mti"].as_str().unwrap();
        let response = mti.as_bytes()[2] % 2 == 1;
        let server = [&switch_addr, &bank_a, &bank_b]
            .into_iter()
            .find(|s| s.as_str() == src || s.as_str() == dst)
            .unwrap_or_else(|| panic!("a connection of nobody's: {e}"));
        // Requests go to the server end, responses come from it.
        assert_eq!(dst == server.as_str(), !response, "{e}");
        if response {
            assert!(e["latency_us"].is_u64(), "unmatched: {e}");
        }
        seen.insert((server.clone(), mti.to_string()));
    }
    for bank in [&bank_a, &bank_b] {
        // Each link signs on.
        assert!(seen.contains(&(bank.clone(), "0800".into())), "{seen:?}");
        assert!(seen.contains(&(bank.clone(), "0810".into())), "{seen:?}");
    }
    // The wallet's freeze and receive, and their answers.
    for mti in ["0100", "0110", "0200", "0210"] {
        assert!(
            seen.contains(&(switch_addr.clone(), mti.into())),
            "{seen:?}"
        );
    }
}

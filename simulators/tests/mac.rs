//! MACs on the bank's link: with a key, a request must carry a valid field
//! 128 or it is answered A0 and changes nothing; answers are signed, network
//! management's included. Then the same
//! through the `banksim` binary's `--mac-key` and `--mac`.

use std::process::Command;
use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use iso8583::codec::{build_bytes, parse, Message};
use iso8583::framing::{Frame, FramingConfig};
use iso8583::mac::{self, Coverage, MacAlgorithm, MacError, MacKey};
use iso8583::{ResponseCode, Spec};
use simulators::bank::MovementKind;
use simulators::bank_server::{spawn_bank_with, BankHandle, LinkOptions};
use simulators::Bank;
use switchboard::mac::LinkMac;

mod common;

use common::*;

const KEY: &str = "0123456789ABCDEFFEDCBA9876543210";
const OTHER_KEY: &str = "FEDCBA98765432100123456789ABCDEF";

fn key(algorithm: MacAlgorithm, hex: &str) -> MacKey {
    MacKey::from_hex(algorithm, hex).unwrap()
}

async fn bank_with_mac(key: MacKey) -> BankHandle {
    let mut bank = Bank::new(BANK);
    bank.add_account(&sender(), 100_000);
    let options = LinkOptions {
        mac: Some(Arc::new(LinkMac::new(key, Coverage::Message, None))),
        ..LinkOptions::default()
    };
    spawn_bank_with(bank, FramingConfig::default(), Default::default(), options)
        .await
        .unwrap()
}

/// Sends `wire` and returns the answer's body as received, with what it
/// parsed into.
async fn exchange(client: &mut Client, spec: &Spec, wire: bytes::Bytes) -> (bytes::Bytes, Message) {
    client.send(Frame::message(wire)).await.unwrap();
    let frame = tokio::time::timeout(std::time::Duration::from_secs(10), client.next())
        .await
        .expect("an answer within 10 s")
        .expect("the connection is open")
        .expect("a good frame");
    let Frame::Message { body, .. } = frame else {
        panic!("the bank never sends keep-alives")
    };
    let answer = parse(spec, body.clone()).unwrap();
    (body, answer)
}

fn signed(spec: &Spec, mut msg: Message, key: &MacKey) -> bytes::Bytes {
    mac::sign_bytes(spec, &mut msg, key).unwrap()
}

#[tokio::test]
async fn a_mac_link_takes_signed_requests_and_refuses_the_rest_with_a0() {
    let spec = Spec::switchboard();
    for key in [
        key(MacAlgorithm::X919, KEY),
        key(MacAlgorithm::AesCmac, "2B7E151628AED2A6ABF7158809CF4F3C"),
    ] {
        let handle = bank_with_mac(key.clone()).await;
        let mut client = connect(handle.addr, &FramingConfig::default()).await;

        // Signed: approved, and the answer is signed with the link's key.
        let held = freeze(&sender(), 30_000, "000001");
        let (body, answer) = exchange(&mut client, &spec, signed(&spec, held, &key)).await;
        assert_eq!(rc(&answer), ResponseCode::APPROVED);
        assert_eq!(mac::verify_received(&spec, &body, &answer, &key), Ok(()));

        // No MAC, a MAC under another key, a field changed after signing:
        // A0, signed, and nothing held.
        let unsigned = build_bytes(&spec, &freeze(&sender(), 1_000, "000002")).unwrap();
        let other = key_like(&key);
        let wrong_key = signed(&spec, freeze(&sender(), 1_000, "000003"), &other);
        let mut tampered = freeze(&sender(), 1_000, "000004");
        mac::sign(&spec, &mut tampered, &key).unwrap();
        tampered.set(4, "000000090000");
        let tampered = build_bytes(&spec, &tampered).unwrap();
        for (stan, wire) in [
            ("000002", unsigned),
            ("000003", wrong_key),
            ("000004", tampered),
        ] {
            let (body, answer) = exchange(&mut client, &spec, wire).await;
            assert_eq!(answer.mti(), b"0110", "{stan}");
            assert_eq!(answer.get_str(11), Some(stan));
            assert_eq!(rc(&answer), ResponseCode::MAC_FAILURE, "{stan}");
            assert_eq!(mac::verify_received(&spec, &body, &answer, &key), Ok(()));
        }
        let ledger = handle.snapshot();
        assert_eq!(
            ledger.total_held_minor, 30_000,
            "only the signed freeze holds"
        );
        // Each refusal is journaled as a decline that moved nothing.
        let refused: Vec<_> = handle
            .bank
            .lock()
            .unwrap()
            .journal()
            .iter()
            .filter(|m| m.response_code == ResponseCode::MAC_FAILURE.as_str())
            .cloned()
            .collect();
        assert_eq!(refused.len(), 3);
        assert!(refused
            .iter()
            .all(|m| m.kind == MovementKind::Freeze && m.applied_minor == 0));

        // Network management is signed too: unsigned, a sign-on is refused.
        let (_, answer) = exchange(
            &mut client,
            &spec,
            build_bytes(&spec, &sign_on("000005")).unwrap(),
        )
        .await;
        assert_eq!(rc(&answer), ResponseCode::MAC_FAILURE);
        let (body, answer) =
            exchange(&mut client, &spec, signed(&spec, sign_on("000006"), &key)).await;
        assert_eq!(rc(&answer), ResponseCode::APPROVED);
        assert_eq!(mac::verify_received(&spec, &body, &answer, &key), Ok(()));
        handle.stop().await;
    }
}

/// A key of the same algorithm as `key`, and a different one.
fn key_like(key: &MacKey) -> MacKey {
    match key.algorithm() {
        MacAlgorithm::X919 => self::key(MacAlgorithm::X919, OTHER_KEY),
        MacAlgorithm::AesCmac => self::key(MacAlgorithm::AesCmac, &"11".repeat(16)),
    }
}

#[tokio::test]
async fn banksim_mac_key_requires_and_signs_macs() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _child = start(
        env!("CARGO_BIN_EXE_banksim"),
        &[
            "--listen",
            &listen,
            "--institution",
            BANK,
            "--accounts-file",
            "/dev/null",
            "--mac-key",
            KEY,
            "--mac",
            "x9.19",
        ],
    );
    let spec = Spec::switchboard();
    let link_key = key(MacAlgorithm::X919, KEY);
    let mut client = connect_when_listening(&listen).await;
    // No accounts: a signed freeze is answered 14, signed.
    let (body, answer) = exchange(
        &mut client,
        &spec,
        signed(&spec, freeze(&sender(), 1_000, "000001"), &link_key),
    )
    .await;
    assert_eq!(rc(&answer), ResponseCode::INVALID_CARD_NUMBER);
    assert_eq!(
        mac::verify_received(&spec, &body, &answer, &link_key),
        Ok(())
    );
    let unsigned = build_bytes(&spec, &freeze(&sender(), 1_000, "000002")).unwrap();
    let (_, answer) = exchange(&mut client, &spec, unsigned).await;
    assert_eq!(rc(&answer), ResponseCode::MAC_FAILURE);
    assert_eq!(
        mac::verify(&spec, &answer, &key(MacAlgorithm::X919, OTHER_KEY)),
        Err(MacError::Wrong)
    );
}

#[test]
fn banksim_refuses_bad_mac_arguments() {
    for (bad, says) in [
        (vec!["--mac-key", "0123"], "--mac-key"),
        (
            vec!["--mac-key", KEY, "--mac", "x9.9"],
            "unknown MAC algorithm",
        ),
        (
            vec!["--mac-key", &"00".repeat(20), "--mac", "aes-cmac"],
            "20 bytes",
        ),
        (vec!["--mac", "aes-cmac"], "--mac-key"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_banksim"))
            .args(["--listen", "127.0.0.1:0", "--institution", BANK])
            .args(&bad)
            .env_remove("BANKSIM_MAC_KEY")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{bad:?} must be refused");
        assert!(stderr.contains(says), "{bad:?}: {stderr}");
        assert!(
            !stderr.contains("0123456789"),
            "{bad:?} shows the key: {stderr}"
        );
    }
}

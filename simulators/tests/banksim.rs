//! The bank simulator over real TCP: pipelined requests on one connection,
//! concurrent connections on one hold, CUPS headers, bad frames, and the
//! `banksim` binary with its admin port, and `banksim --capture` flushing its
//! capture on Ctrl-C.

use std::io::{BufRead, BufReader as StdBufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use iso8583::codec::{build_bytes, parse, Message};
use iso8583::fields::luhn_valid;
use iso8583::framing::{CupsHeader, Frame, FrameCodec, FramingConfig};
use iso8583::{ResponseCode, Spec};
use simulators::bank::{Ledger, Movement};
use simulators::{spawn_bank, Bank, HoldState};
use switchboard::dialect::FreezeKey;
use tokio::io::BufReader;
use tokio_util::codec::Framed;

mod common;

use common::*;

#[tokio::test]
async fn pipelined_requests_move_money_exactly_once() {
    let spec = Spec::switchboard();
    let framing = FramingConfig::default();
    let mut bank = Bank::new(BANK);
    bank.add_account(&sender(), 100_000);
    bank.add_account(&recipient(), 5_000);
    let handle = spawn_bank(bank, framing.clone()).await.unwrap();
    let before = handle.snapshot();
    let mut client = connect(handle.addr, &framing).await;

    // Everything in flight before any answer is read.
    let f = freeze(&sender(), 30_000, "000001");
    let d = debit(&sender(), 10_000, "100001", &f);
    let c = credit(&recipient(), 10_000, "100002");
    let mut changed_resend = f.clone();
    changed_resend.set(4, format!("{:012}", 31_000));
    let batch = [
        sign_on("900001"),
        f.clone(),
        d.clone(),
        c.clone(),
        f.clone(),
        d.clone(),
        changed_resend,
    ];
    for m in &batch {
        feed(&mut client, &spec, m).await;
        client.feed(Frame::KeepAlive).await.unwrap();
    }
    client.flush().await.unwrap();
    let mut responses = Vec::new();
    for _ in &batch {
        responses.push(receive(&mut client, &spec).await);
    }
    let sign_on_answer = by_stan(&responses, b"0810", "900001");
    assert_eq!(rc(sign_on_answer), ResponseCode::APPROVED);
    assert_eq!(sign_on_answer.get_str(70), Some("001"));
    let freezes: Vec<&Message> = responses.iter().filter(|r| r.mti() == b"0110").collect();
    assert_eq!(freezes.len(), 3);
    assert_eq!(rc(freezes[0]), ResponseCode::APPROVED);
    assert_eq!(freezes[0].get_str(38).map(str::len), Some(6));
    assert_eq!(
        freezes[1], freezes[0],
        "an exact resend gets the same answer"
    );
    assert_eq!(rc(freezes[2]), ResponseCode::DUPLICATE_TRANSMISSION);
    let debits: Vec<&Message> = responses
        .iter()
        .filter(|r| r.get_str(3) == Some("000000"))
        .collect();
    assert_eq!(debits.len(), 2);
    assert_eq!(rc(debits[0]), ResponseCode::APPROVED);
    assert_eq!(debits[0].get(90), d.get(90));
    assert_eq!(debits[1], debits[0]);
    let credit_answer = by_stan(&responses, b"0210", "100002");
    assert_eq!(rc(credit_answer), ResponseCode::APPROVED);
    assert!(credit_answer.has(15) && credit_answer.has(38));

    let ledger = handle.snapshot();
    let key = FreezeKey::of_request(&f).unwrap();
    assert_eq!(ledger.balance(&sender()), Some(90_000));
    assert_eq!(ledger.balance(&recipient()), Some(15_000));
    assert_eq!(ledger.hold(&key).unwrap().remaining_minor, 20_000);
    assert_eq!(ledger.total_held_minor, 20_000);
    assert_money_moved_only_by_the_journal(
        &before,
        &ledger,
        &handle.bank.lock().unwrap().journal(),
    );

    // The debit is reversed (and the reversal repeated): money and hold come back once.
    let rev = reversal(&d, "100003");
    let mut repeat = rev.clone();
    repeat.set_mti(*b"0421");
    let second = reversal(&d, "100004");
    for m in [&rev, &repeat, &second] {
        feed(&mut client, &spec, m).await;
    }
    client.flush().await.unwrap();
    let mut reversals = Vec::new();
    for _ in 0..3 {
        reversals.push(receive(&mut client, &spec).await);
    }
    for r in &reversals {
        assert_eq!((r.mti(), rc(r)), (b"0430", ResponseCode::APPROVED));
        assert_eq!(r.get(90), rev.get(90));
    }
    assert_eq!(
        reversals[0], reversals[1],
        "the 0421 is answered as the 0420 was"
    );
    let ledger = handle.snapshot();
    assert_eq!(ledger.balance(&sender()), Some(100_000));
    assert_eq!(ledger.balance(&recipient()), Some(15_000));
    let hold = ledger.hold(&key).unwrap();
    assert_eq!(
        (hold.remaining_minor, hold.state),
        (30_000, HoldState::Open)
    );
    let journal = handle.bank.lock().unwrap().journal();
    assert_money_moved_only_by_the_journal(&before, &ledger, &journal);
    handle.bank.lock().unwrap().check_invariants();
    handle.stop().await;
}

#[tokio::test]
async fn concurrent_connections_never_take_more_than_the_hold() {
    let spec = Spec::switchboard();
    let framing: FramingConfig = "binary2".parse().unwrap();
    let mut bank = Bank::new(BANK);
    bank.add_account(&sender(), 100_000);
    let handle = spawn_bank(bank, framing.clone()).await.unwrap();
    let f = freeze(&sender(), 6_000, "000001");
    let mut first = connect(handle.addr, &framing).await;
    feed(&mut first, &spec, &f).await;
    first.flush().await.unwrap();
    assert_eq!(
        rc(&receive(&mut first, &spec).await),
        ResponseCode::APPROVED
    );

    // Two connections, 50 debits of 100 each, all in flight: 60 fit the hold.
    let mut tasks = Vec::new();
    for connection in 0..2u32 {
        let (addr, framing, spec, f) = (handle.addr, framing.clone(), spec.clone(), f.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = connect(addr, &framing).await;
            for i in 0..50u32 {
                let stan = format!("{:06}", 200_000 + connection * 1000 + i);
                feed(&mut client, &spec, &debit(&sender(), 100, &stan, &f)).await;
            }
            client.flush().await.unwrap();
            let mut codes = Vec::new();
            for _ in 0..50 {
                codes.push(rc(&receive(&mut client, &spec).await));
            }
            codes
        }));
    }
    let mut approved = 0;
    for task in tasks {
        for code in task.await.unwrap() {
            match code {
                ResponseCode::APPROVED => approved += 1,
                ResponseCode::EXCEEDS_AMOUNT_LIMIT => {}
                other => panic!("unexpected response code {other}"),
            }
        }
    }
    assert_eq!(approved, 60);
    let ledger = handle.snapshot();
    assert_eq!(ledger.balance(&sender()), Some(94_000));
    let hold = ledger.hold(&FreezeKey::of_request(&f).unwrap()).unwrap();
    assert_eq!((hold.remaining_minor, hold.state), (0, HoldState::Used));
    assert_eq!(ledger.total_held_minor, 0);
    handle.stop().await;
}

#[tokio::test]
async fn cups_header_comes_back_swapped() {
    let spec = Spec::switchboard();
    let framing: FramingConfig = "ascii4+cups".parse().unwrap();
    let handle = spawn_bank(Bank::new(BANK), framing.clone()).await.unwrap();
    let mut client = connect(handle.addr, &framing).await;
    let header = CupsHeader::new(BANK, SWITCH).unwrap();
    client
        .send(Frame::Message {
            header: Bytes::copy_from_slice(&header.build()),
            body: build_bytes(&spec, &sign_on("000042")).unwrap(),
        })
        .await
        .unwrap();
    let frame = tokio::time::timeout(Duration::from_secs(10), client.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Frame::Message {
        header: reply,
        body,
    } = frame
    else {
        panic!("a message");
    };
    let reply = CupsHeader::parse(&reply).unwrap();
    assert_eq!(reply.source, header.destination);
    assert_eq!(reply.destination, header.source);
    assert_eq!(reply.total_len(), CupsHeader::LEN + body.len());
    assert_eq!(rc(&parse(&spec, body).unwrap()), ResponseCode::APPROVED);
}

#[tokio::test]
async fn bad_frames_are_answered_30_or_dropped_and_the_connection_goes_on() {
    let spec = Spec::switchboard();
    let framing = FramingConfig::default();
    let handle = spawn_bank(Bank::new(BANK), framing.clone()).await.unwrap();
    let mut client = connect(handle.addr, &framing).await;
    // A readable MTI and a truncated bitmap: 30.
    client
        .feed(Frame::message(Bytes::from_static(b"0200\x72")))
        .await
        .unwrap();
    // Nothing readable: no answer.
    client
        .feed(Frame::message(Bytes::from_static(b"??")))
        .await
        .unwrap();
    // A response: no answer either.
    let mut response = sign_on("000001");
    response.set_mti(*b"0810");
    response.set(39, ResponseCode::APPROVED);
    feed(&mut client, &spec, &response).await;
    feed(&mut client, &spec, &sign_on("000002")).await;
    client.flush().await.unwrap();
    let first = receive(&mut client, &spec).await;
    assert_eq!(
        (first.mti(), rc(&first)),
        (b"0210", ResponseCode::FORMAT_ERROR)
    );
    let second = receive(&mut client, &spec).await;
    assert_eq!(
        (second.mti(), second.get_str(11)),
        (b"0810", Some("000002"))
    );
}

#[tokio::test]
async fn banksim_binary_serves_generated_accounts_and_its_admin_port() {
    let (port, admin_port) = (free_port(), free_port());
    let listen = format!("127.0.0.1:{port}");
    let admin_addr = format!("127.0.0.1:{admin_port}");
    let child = Command::new(env!("CARGO_BIN_EXE_banksim"))
        .args(["--listen", &listen, "--admin", &admin_addr])
        .args(["--institution", BANK, "--framing", "ascii4"])
        .args(["--bin", "622202", "--accounts", "3", "--balance", "50000"])
        .args(["--seed", "9", "--print-accounts"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Running(child);
    let stdout = child.0.stdout.take().unwrap();
    let accounts: Vec<(String, i64)> = StdBufReader::new(stdout)
        .lines()
        .take(3)
        .map(|line| {
            let line = line.unwrap();
            let (pan, balance) = line.split_once(',').unwrap();
            (pan.to_string(), balance.parse().unwrap())
        })
        .collect();
    assert_eq!(accounts.len(), 3);
    assert_eq!(
        accounts,
        Bank::generate(BANK, "622202", 3, 50_000, 9).accounts(),
        "the same seed gives the same cards"
    );
    for (pan, balance) in &accounts {
        assert!(pan.starts_with("622202") && luhn_valid(pan.as_bytes()));
        assert_eq!(*balance, 50_000);
    }

    let spec = Spec::switchboard();
    let framing = FramingConfig::default();
    let stream = wait_for(&listen).await;
    let mut client = Framed::new(stream, FrameCodec::new(framing));
    let f = freeze(&accounts[0].0, 12_345, "000777");
    feed(&mut client, &spec, &f).await;
    client.flush().await.unwrap();
    assert_eq!(
        rc(&receive(&mut client, &spec).await),
        ResponseCode::APPROVED
    );

    let mut admin = BufReader::new(wait_for(&admin_addr).await);
    let snapshot = admin_command(&mut admin, "snapshot").await;
    let ledger: Ledger = serde_json::from_str(&snapshot[0]).unwrap();
    assert_eq!(ledger.institution, "00001020000");
    assert_eq!(ledger.accounts.len(), 3);
    assert_eq!(ledger.total_balance_minor, 150_000);
    assert_eq!(ledger.total_held_minor, 12_345);
    let hold = ledger.hold(&FreezeKey::of_request(&f).unwrap()).unwrap();
    assert_eq!((&hold.pan, hold.remaining_minor), (&accounts[0].0, 12_345));
    let journal = admin_command(&mut admin, "journal").await;
    assert_eq!(journal.len(), 1);
    let movement: Movement = serde_json::from_str(&journal[0]).unwrap();
    assert_eq!(movement.response_code, ResponseCode::APPROVED);
    assert!(
        !journal[0].contains(&accounts[0].0),
        "the journal masks cards"
    );
    let unknown = admin_command(&mut admin, "snapshot please").await;
    assert!(unknown[0].contains("error"), "{unknown:?}");
}

#[tokio::test]
async fn banksim_capture_holds_the_exchange_and_is_flushed_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bank.pcapng");
    let listen = format!("127.0.0.1:{}", free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_banksim"))
        .args(["--listen", &listen, "--institution", BANK])
        .args(["--bin", "622202", "--accounts", "1", "--seed", "9"])
        .arg("--capture")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Running(child);
    let pan = Bank::generate(BANK, "622202", 1, 100_000, 9).accounts()[0]
        .0
        .clone();
    let spec = Spec::switchboard();
    let stream = wait_for(&listen).await;
    let client_addr = stream.local_addr().unwrap();
    let mut client = Framed::new(stream, FrameCodec::new(FramingConfig::default()));
    feed(&mut client, &spec, &freeze(&pan, 100, "000042")).await;
    client.flush().await.unwrap();
    assert_eq!(
        rc(&receive(&mut client, &spec).await),
        ResponseCode::APPROVED
    );
    drop(client);

    let pid = child.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(child.0.wait().unwrap().success(), "{stderr}");
    assert!(stderr.contains("banksim: capture written"), "{stderr}");

    let file = std::fs::read(&path).unwrap();
    let mut reader = capture::CaptureReader::new(&file[..]).unwrap();
    let mut decoder = capture::CaptureDecoder::new(&spec, Default::default());
    let mut events = Vec::new();
    while let Some(packet) = reader.next_packet().unwrap() {
        decoder.packet(&packet, &mut events).unwrap();
    }
    decoder.finish(&mut events);
    let seen: Vec<_> = events
        .iter()
        .map(|e| match &e.kind {
            capture::EventKind::Message { message, .. } => (
                e.src.to_string(),
                e.dst.to_string(),
                message.mti_str().to_string(),
                message.get_str(11).unwrap_or("").to_string(),
            ),
            other => panic!("not a message: {other:?}"),
        })
        .collect();
    let client_addr = client_addr.to_string();
    assert_eq!(
        seen,
        [
            (
                client_addr.clone(),
                listen.clone(),
                "0100".into(),
                "000042".into()
            ),
            (listen.clone(), client_addr, "0110".into(), "000042".into()),
        ]
    );
}

#[test]
fn banksim_reads_an_accounts_file_and_rejects_bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("accounts.csv");
    std::fs::write(
        &path,
        format!(
            "pan,balance_minor\n# the sender\n{},100000\n\n{},0\n",
            sender(),
            recipient()
        ),
    )
    .unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_banksim"))
        .args([
            "--listen",
            &listen,
            "--institution",
            BANK,
            "--print-accounts",
        ])
        .arg("--accounts-file")
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Running(child);
    let stdout = child.0.stdout.take().unwrap();
    let mut printed: Vec<String> = StdBufReader::new(stdout)
        .lines()
        .take(2)
        .map(Result::unwrap)
        .collect();
    printed.sort();
    let mut expected = vec![format!("{},100000", sender()), format!("{},0", recipient())];
    expected.sort();
    assert_eq!(printed, expected);
    drop(child);

    for bad in [
        vec!["--bin", "62x202"],
        vec!["--institution", "bank"],
        vec!["--framing", "ascii3"],
        vec!["--accounts-file", "/nonexistent/accounts.csv"],
    ] {
        let mut args = vec!["--listen", "127.0.0.1:0", "--institution", BANK];
        if bad[0] == "--institution" {
            args.truncate(2);
        }
        args.extend(bad.iter().copied());
        let out = Command::new(env!("CARGO_BIN_EXE_banksim"))
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bad:?} must be refused");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(bad[0]), "{bad:?}: {stderr}");
    }
}

//! The switch under hostile or exhausting peers, as a real `serve` process.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::process::{free_port, write_config, KillOnDrop, SwitchFile};
use iso8583::codec::Message;
use iso8583::framing::FramingConfig;
use iso8583::ResponseCode;
use simulators::bank::Bank;
use simulators::bank_server::spawn_bank;
use simulators::wallet::{code, WalletClient};

/// With its file descriptors used up by connections it cannot accept, the
/// switch backs off (one log line, not one per attempt: it used to log
/// millions a second and spin a core), and serves again once they close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_file_descriptors_back_off_and_recover() {
    let dir = tempfile::tempdir().unwrap();
    let bank_a = spawn_bank(
        Bank::generate(common::BANK_A, "622202", 2, 1_000, 1),
        FramingConfig::default(),
    )
    .await
    .unwrap();
    let bank_b = spawn_bank(
        Bank::generate(common::BANK_B, "621700", 2, 1_000, 2),
        FramingConfig::default(),
    )
    .await
    .unwrap();
    let wallet_port = free_port();
    let config = write_config(
        dir.path(),
        SwitchFile {
            name: "switch.toml",
            store: &format!("path = {:?}", dir.path().join("switchboard.db")),
            wallet_port,
            bank_a: bank_a.addr,
            bank_b: bank_b.addr,
            timeout_ms: 2_000,
            max_backoff_ms: 1_000,
        },
    );
    let log = std::fs::File::create(dir.path().join("switch.log")).unwrap();
    // A shell lowers the file limit, then becomes the switch.
    let child = Command::new("sh")
        .args(["-c", "ulimit -n 64 && exec \"$0\" serve --config \"$1\""])
        .arg(env!("CARGO_BIN_EXE_switchboard"))
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let mut switch = KillOnDrop::new(child);
    let mut line = String::new();
    BufReader::new(switch.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("listening"), "switch did not start: {line:?}");

    // More connections than descriptors: the rest wait in the backlog while
    // every accept fails with EMFILE.
    let addr = format!("127.0.0.1:{wallet_port}");
    let mut flood = Vec::new();
    for _ in 0..120 {
        flood.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let text = std::fs::read_to_string(dir.path().join("switch.log")).unwrap();
    let failures = text.matches("accept failed").count();
    assert!(
        (1..=2).contains(&failures),
        "one line per back-off run, got {failures}"
    );

    // The flood goes away; a new wallet is served.
    drop(flood);
    let wallet = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(w) = WalletClient::connect(
                addr.parse().unwrap(),
                FramingConfig::default(),
                common::WALLET_ID,
            )
            .await
            {
                return w;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("a wallet connects again");
    let mut echo = Message::new(*b"0800");
    echo.set(7, "1201120000")
        .set(11, "000001")
        .set(32, common::WALLET_ID)
        .set(70, "301");
    let answer = tokio::time::timeout(Duration::from_secs(5), wallet.send(&echo))
        .await
        .expect("answered within the back-off's longest pause")
        .unwrap();
    assert_eq!(code(&answer), ResponseCode::APPROVED);
    let text = std::fs::read_to_string(dir.path().join("switch.log")).unwrap();
    assert!(text.contains("accepting connections again"), "{text}");
}

/// A started frame that never ends (`8000` and nothing more) is cut after
/// `frame_timeout_ms`; a silent connection after `idle_timeout_ms`, while one
/// that sends keep-alives stays and is answered; other wallets are served
/// throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_frames_and_idle_connections_are_closed() {
    use std::sync::Arc;

    use switchboard::clock::SystemClock;
    use switchboard::service;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().unwrap();
    let bank_a = spawn_bank(
        Bank::generate(common::BANK_A, "622202", 2, 1_000, 1),
        FramingConfig::default(),
    )
    .await
    .unwrap();
    let bank_b = spawn_bank(
        Bank::generate(common::BANK_B, "621700", 2, 1_000, 2),
        FramingConfig::default(),
    )
    .await
    .unwrap();
    let mut config = common::config(
        dir.path(),
        vec![
            common::bank_config(
                common::BANK_A,
                "622202",
                bank_a.addr,
                Duration::from_secs(5),
            ),
            common::bank_config(
                common::BANK_B,
                "621700",
                bank_b.addr,
                Duration::from_secs(5),
            ),
        ],
    );
    config.wallets[0].frame_timeout = Duration::from_millis(400);
    config.wallets[0].idle_timeout = Some(Duration::from_millis(1_500));
    let store = service::open_store(&config.store).await.unwrap();
    let running = service::start(config, store, Arc::new(SystemClock))
        .await
        .unwrap();
    let addr = running.wallet_addrs[0];

    // Reads until the switch closes the connection; how long that took.
    async fn closed_after(mut stream: tokio::net::TcpStream) -> Duration {
        let start = tokio::time::Instant::now();
        let mut buf = [0u8; 64];
        loop {
            match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
                Ok(Ok(_)) => {}
                Err(_) => panic!("the switch kept the connection open"),
            }
        }
    }

    let mut stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
    stalled.write_all(b"8000").await.unwrap();
    let stalled = tokio::spawn(closed_after(stalled));
    let silent = tokio::spawn(closed_after(
        tokio::net::TcpStream::connect(addr).await.unwrap(),
    ));
    let mut alive = tokio::net::TcpStream::connect(addr).await.unwrap();
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        alive.write_all(b"0000").await.unwrap(); // a keep-alive
    }
    let stalled = stalled.await.unwrap();
    assert!(
        stalled < Duration::from_millis(1_400),
        "stalled frame cut after {stalled:?}"
    );
    let silent = silent.await.unwrap();
    assert!(
        silent >= Duration::from_millis(1_400) && silent < Duration::from_secs(4),
        "silent connection cut after {silent:?}"
    );

    // 2.4 s on, past the idle timeout: keep-alives kept it open, and an echo
    // on it is answered; so is one on a new connection.
    let mut echo = Message::new(*b"0800");
    echo.set(7, "1201120000")
        .set(11, "000002")
        .set(32, common::WALLET_ID)
        .set(70, "301");
    let spec = iso8583::Spec::switchboard();
    let body = iso8583::codec::build_bytes(&spec, &echo).unwrap();
    let frame = iso8583::framing::frame_bytes(&FramingConfig::default(), &[], &body).unwrap();
    alive.write_all(&frame).await.unwrap();
    let mut answer = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), alive.read(&mut answer))
        .await
        .expect("answered")
        .unwrap();
    assert!(
        n > 4,
        "the kept connection is open and answered ({n} bytes)"
    );
    let answer =
        iso8583::codec::parse(&spec, bytes::Bytes::copy_from_slice(&answer[4..n])).unwrap();
    assert_eq!(code(&answer), ResponseCode::APPROVED);
    let wallet = WalletClient::connect(addr, FramingConfig::default(), common::WALLET_ID)
        .await
        .unwrap();
    echo.set(11, "000003");
    assert_eq!(
        code(&wallet.send(&echo).await.unwrap()),
        ResponseCode::APPROVED
    );
    running.shutdown().await;
}

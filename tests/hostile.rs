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
use simulators::bank_server::{spawn_bank, BankHandle};
use simulators::wallet::{code, WalletClient};

/// Two banks with two cards each, as the switch's configuration expects them.
async fn two_banks() -> (BankHandle, BankHandle) {
    let bank = |id, bin, seed| {
        spawn_bank(
            Bank::generate(id, bin, 2, 1_000, seed),
            FramingConfig::default(),
        )
    };
    (
        bank(common::BANK_A, "622202", 1).await.unwrap(),
        bank(common::BANK_B, "621700", 2).await.unwrap(),
    )
}

/// An in-process switch's configuration on an embedded store in `dir`.
fn switch_config(
    dir: &std::path::Path,
    a: &BankHandle,
    b: &BankHandle,
) -> switchboard::config::Config {
    common::config(
        dir,
        vec![
            common::bank_config(common::BANK_A, "622202", a.addr, Duration::from_secs(5)),
            common::bank_config(common::BANK_B, "621700", b.addr, Duration::from_secs(5)),
        ],
    )
}

/// A `serve` process on an embedded store in `dir`, logging at `level` to a
/// file, once it listens: the process, its wallet port and its log's path.
fn serve_logging(
    dir: &std::path::Path,
    a: &BankHandle,
    b: &BankHandle,
    level: &str,
) -> (KillOnDrop, u16, std::path::PathBuf) {
    let wallet_port = free_port();
    let config = write_config(
        dir,
        SwitchFile {
            name: "switch.toml",
            store: &format!("path = {:?}", dir.join("switchboard.db")),
            wallet_port,
            bank_a: a.addr,
            bank_b: b.addr,
            timeout_ms: 2_000,
            max_backoff_ms: 1_000,
        },
    );
    let log_path = dir.join("switch.log");
    let child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", level)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(&log_path).unwrap()))
        .spawn()
        .unwrap();
    let mut switch = KillOnDrop::new(child);
    let mut line = String::new();
    BufReader::new(switch.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("listening"), "switch did not start: {line:?}");
    (switch, wallet_port, log_path)
}

/// With its file descriptors used up by connections it cannot accept, the
/// switch backs off (one log line, not one per attempt: it used to log
/// millions a second and spin a core), and serves again once they close.
/// (`serve` refuses to start with a limit its configuration does not fit in,
/// so the limit is lowered under the running switch, as an operator's
/// `prlimit` or another tenant of the machine would.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_file_descriptors_back_off_and_recover() {
    let dir = tempfile::tempdir().unwrap();
    let (bank_a, bank_b) = two_banks().await;
    let (switch, wallet_port, log_path) = serve_logging(dir.path(), &bank_a, &bank_b, "info");
    let lowered = libc::rlimit {
        rlim_cur: 64,
        rlim_max: 64,
    };
    // SAFETY: prlimit reads a valid rlimit; the pid is our child's.
    let rc = unsafe {
        libc::prlimit(
            switch.id() as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &lowered,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());

    // More connections than descriptors: the rest wait in the backlog while
    // every accept fails with EMFILE.
    let addr = format!("127.0.0.1:{wallet_port}");
    let mut flood = Vec::new();
    for _ in 0..120 {
        flood.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let text = std::fs::read_to_string(&log_path).unwrap();
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
    let text = std::fs::read_to_string(&log_path).unwrap();
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
    let (bank_a, bank_b) = two_banks().await;
    let mut config = switch_config(dir.path(), &bank_a, &bank_b);
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

/// A wallet that pipelines echoes and never reads its answers is read only
/// while its requests in flight are below `max_in_flight_per_connection`:
/// its writes stall (TCP backpressure) instead of the switch reading
/// everything into memory; another connection is served meanwhile; and once
/// it reads again, every request it managed to send is answered, none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wallet_that_does_not_read_is_held_back_and_loses_nothing() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    use switchboard::clock::SystemClock;
    use switchboard::service;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Frames per write: the writer stops only between writes.
    const BURST: usize = 256;
    /// More than the kernel's buffers on both sides can hold (about 600 MB).
    const MAX_BURSTS: u64 = 40_000;

    let dir = tempfile::tempdir().unwrap();
    let (bank_a, bank_b) = two_banks().await;
    let mut config = switch_config(dir.path(), &bank_a, &bank_b);
    config.wallets[0].max_in_flight = 16;
    let store = service::open_store(&config.store).await.unwrap();
    let running = service::start(config, store, Arc::new(SystemClock))
        .await
        .unwrap();
    let addr = running.wallet_addrs[0];

    let mut echo = Message::new(*b"0800");
    echo.set(7, "1201120000")
        .set(11, "000001")
        .set(32, common::WALLET_ID)
        .set(70, "301");
    let spec = iso8583::Spec::switchboard();
    let body = iso8583::codec::build_bytes(&spec, &echo).unwrap();
    let frame = iso8583::framing::frame_bytes(&FramingConfig::default(), &[], &body).unwrap();

    // The flood, written without reading a byte, until it is told to stop.
    let flooder = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut answers, mut requests) = flooder.into_split();
    let written = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let (written, stop) = (written.clone(), stop.clone());
        async move {
            let burst: Vec<u8> = frame
                .iter()
                .copied()
                .cycle()
                .take(frame.len() * BURST)
                .collect();
            for _ in 0..MAX_BURSTS {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                requests.write_all(&burst).await.unwrap();
                written.fetch_add(BURST as u64, Ordering::Relaxed);
            }
            (requests, written.load(Ordering::Relaxed))
        }
    });
    // Written frames stop growing: the switch has stopped reading.
    let mut last = u64::MAX;
    let stalled_at = loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            !writer.is_finished(),
            "the switch read {} echoes while none of their answers was read",
            written.load(Ordering::Relaxed)
        );
        let now = written.load(Ordering::Relaxed);
        if now == last {
            break now;
        }
        last = now;
    };
    println!("the flood stalled after {stalled_at} echoes");
    stop.store(true, Ordering::Relaxed);

    // Another wallet is served meanwhile, and quickly.
    let wallet = WalletClient::connect(addr, FramingConfig::default(), common::WALLET_ID)
        .await
        .unwrap();
    echo.set(11, "000002");
    let answer = tokio::time::timeout(Duration::from_secs(1), wallet.send(&echo))
        .await
        .expect("an echo on a second connection answered within 1 s during the flood")
        .unwrap();
    assert_eq!(code(&answer), ResponseCode::APPROVED);

    // The flooder reads again: every echo it wrote is answered, once.
    let reader = tokio::spawn(async move {
        let (mut frames, mut buf) = (0u64, Vec::new());
        let mut chunk = vec![0u8; 1 << 16];
        loop {
            match tokio::time::timeout(Duration::from_secs(5), answers.read(&mut chunk)).await {
                Ok(Ok(0)) | Err(_) => return (frames, buf.len()),
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) => panic!("reading answers: {e}"),
            }
            // ascii4 framing: four digits of length, then the message.
            let mut at = 0;
            while let Some(len) = buf
                .get(at..at + 4)
                .map(|l| std::str::from_utf8(l).unwrap().parse::<usize>().unwrap())
            {
                if buf.len() < at + 4 + len {
                    break;
                }
                let answer = iso8583::codec::parse(
                    &spec,
                    bytes::Bytes::copy_from_slice(&buf[at + 4..at + 4 + len]),
                )
                .unwrap();
                assert_eq!(answer.mti(), b"0810");
                assert_eq!(code(&answer), ResponseCode::APPROVED);
                frames += 1;
                at += 4 + len;
            }
            buf.drain(..at);
        }
    });
    let (requests, sent) = tokio::time::timeout(Duration::from_secs(120), writer)
        .await
        .expect("the flood is read again once its answers are")
        .unwrap();
    assert!(sent >= stalled_at && sent <= stalled_at + BURST as u64);
    drop(requests);
    let (answered, left_over) = reader.await.unwrap();
    assert_eq!((answered, left_over), (sent, 0), "every echo answered once");
    running.shutdown().await;
}

/// Bytes from a peer reach the log only escaped: a message carrying terminal
/// escapes, a bell and a line break (to forge a log line) is logged as
/// printable text, and the switch goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_from_a_peer_are_escaped_in_the_log() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().unwrap();
    let (bank_a, bank_b) = two_banks().await;
    let (_switch, wallet_port, log_path) = serve_logging(dir.path(), &bank_a, &bank_b, "debug");

    let evil = "\u{1b}[2J\u{1b}[31m\u{7}\r\nERROR forged line";
    let mut bodies: Vec<Vec<u8>> = vec![
        // Unparseable from the bitmap on.
        format!("0800{evil}").into_bytes(),
        // A message whose bitmap is fine and whose F32 is not digits.
        {
            let mut m = Message::new(*b"0800");
            m.set(7, "1201120000").set(11, "000001").set(70, "301");
            let spec = iso8583::Spec::switchboard();
            let mut b = iso8583::codec::build_bytes(&spec, &m).unwrap().to_vec();
            b.extend_from_slice(evil.as_bytes());
            b
        },
    ];
    bodies.push(format!("08\u{1b}]0;title\u{7}{evil}").into_bytes());
    for body in bodies {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", wallet_port))
            .await
            .unwrap();
        stream
            .write_all(format!("{:04}", body.len()).as_bytes())
            .await
            .unwrap();
        stream.write_all(&body).await.unwrap();
        let mut buf = [0u8; 512];
        let _ = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = std::fs::read(&log_path).unwrap();
    let text = String::from_utf8_lossy(&log);
    assert!(
        text.contains("bad frame") || text.contains("undecodable"),
        "the messages were logged: {text}"
    );
    assert!(
        !log.iter().any(|&b| b == 0x1b || b == 0x07 || b == b'\r'),
        "raw control bytes reached the log: {text}"
    );
    assert!(
        !text.lines().any(|l| l.starts_with("ERROR forged")),
        "a peer forged a log line: {text}"
    );
}

/// With `max_connections_per_address`, one address cannot take a listener's
/// connections: past its limit a new connection is closed at once, other
/// addresses are served, and a slot given back can be taken again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holds_at_most_its_connections() {
    use std::sync::Arc;

    use switchboard::clock::SystemClock;
    use switchboard::service;
    use tokio::io::AsyncReadExt;

    let dir = tempfile::tempdir().unwrap();
    let (bank_a, bank_b) = two_banks().await;
    let mut config = switch_config(dir.path(), &bank_a, &bank_b);
    config.wallets[0].max_per_address = Some(2);
    let store = service::open_store(&config.store).await.unwrap();
    let running = service::start(config, store, Arc::new(SystemClock))
        .await
        .unwrap();
    let addr = running.wallet_addrs[0];
    let connect_from = |local: &'static str| async move {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
        socket.connect(addr).await.unwrap()
    };
    let echo_on = |stream: tokio::net::TcpStream| async move {
        let wallet =
            WalletClient::over(stream, FramingConfig::default(), common::WALLET_ID).unwrap();
        let mut echo = Message::new(*b"0800");
        echo.set(7, "1201120000")
            .set(11, "000001")
            .set(32, common::WALLET_ID)
            .set(70, "301");
        code(&wallet.send(&echo).await.unwrap())
    };
    let first = connect_from("127.0.0.1").await;
    let second = connect_from("127.0.0.1").await;
    let mut third = connect_from("127.0.0.1").await;
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
        .await
        .expect("the third connection from one address is closed at once");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    assert_eq!(
        echo_on(connect_from("127.0.0.2").await).await,
        ResponseCode::APPROVED,
        "another address is served"
    );
    assert_eq!(echo_on(second).await, ResponseCode::APPROVED);
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        echo_on(connect_from("127.0.0.1").await).await,
        ResponseCode::APPROVED,
        "a slot given back is taken again"
    );
    running.shutdown().await;
}

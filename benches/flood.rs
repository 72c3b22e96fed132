//! The switch's memory under a flood: one wallet connection pipelines
//! 200,000 echoes (0800) and reads none of the answers for a while, as a
//! hostile or broken wallet would, while a second connection keeps sending
//! one echo at a time. Reports the `serve` process's resident memory before
//! the flood and at its peak (VmHWM), and the slowest echo on the second
//! connection meanwhile; the flood's answers are then read and counted.
//!
//! `cargo bench --bench flood` (a release `serve` on the embedded store, two
//! in-process banks). Criteria: growth under 64 MiB, every echo of the
//! second connection answered within 1 s; the run fails if either is missed.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iso8583::codec::{build_bytes, Message};
use iso8583::framing::{frame_bytes, FramingConfig};
use simulators::bank::Bank;
use simulators::bank_server::spawn_bank;
use simulators::wallet::{code, WalletClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const FLOOD: u64 = 200_000;
const WALLET: &str = "01020000";
/// How long the flooder writes without reading before it starts reading.
const NOT_READING: Duration = Duration::from_secs(8);

/// Kills and reaps the switch however the bench ends.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Resident and peak resident memory of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn echo(stan: u32) -> Message {
    let mut m = Message::new(*b"0800");
    m.set(7, "1201120000")
        .set(11, format!("{:06}", stan % 1_000_000))
        .set(32, WALLET)
        .set(70, "301");
    m
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let bank_a = spawn_bank(
        Bank::generate("48020000", "622202", 2, 1_000, 1),
        FramingConfig::default(),
    )
    .await
    .unwrap();
    let bank_b = spawn_bank(
        Bank::generate("48030000", "621700", 2, 1_000, 2),
        FramingConfig::default(),
    )
    .await
    .unwrap();
    let port = free_port();
    let config = dir.path().join("switch.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[switch]
institution_id = "00010000"
[store]
path = {db:?}
[[wallets]]
listen = "127.0.0.1:{port}"
institutions = ["{WALLET}"]
[[banks]]
institution_id = "48020000"
bins = ["622202"]
hosts = ["{a}"]
[[banks]]
institution_id = "48030000"
bins = ["621700"]
hosts = ["{b}"]
"#,
            db = dir.path().join("switchboard.db"),
            a = bank_a.addr,
            b = bank_b.addr,
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start switchboard serve");
    let stdout = child.stdout.take().unwrap();
    let serve = Serve(child);
    let pid = serve.0.id();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    assert!(line.contains("listening"), "serve did not start: {line:?}");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    // Warm up on a well-behaved connection, so pools and caches are counted
    // in the baseline rather than in the flood's growth.
    let wallet = WalletClient::connect(addr, FramingConfig::default(), WALLET)
        .await
        .unwrap();
    for n in 0..2_000 {
        wallet.send(&echo(n)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (baseline, _) = memory_kib(pid);

    let spec = iso8583::Spec::switchboard();
    let frame = frame_bytes(
        &FramingConfig::default(),
        &[],
        &build_bytes(&spec, &echo(1)).unwrap(),
    )
    .unwrap();
    let flood: Vec<u8> = frame
        .iter()
        .copied()
        .cycle()
        .take(frame.len() * FLOOD as usize)
        .collect();
    let (mut answers, mut requests) = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap()
        .into_split();
    let written = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let written = written.clone();
        async move {
            requests.write_all(&flood).await.unwrap();
            written.store(true, Ordering::Relaxed);
            requests
        }
    });

    // While the flood is not read: memory sampled, echoes timed.
    let started = Instant::now();
    let (mut peak_rss, mut slowest, mut echoes) = (baseline, Duration::ZERO, 0u32);
    while started.elapsed() < NOT_READING {
        let sent = Instant::now();
        let answer = tokio::time::timeout(Duration::from_secs(5), wallet.send(&echo(echoes)))
            .await
            .expect("an echo on the second connection answered")
            .unwrap();
        assert_eq!(code(&answer), iso8583::ResponseCode::APPROVED);
        slowest = slowest.max(sent.elapsed());
        echoes += 1;
        peak_rss = peak_rss.max(memory_kib(pid).0);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_written_unread = written.load(Ordering::Relaxed);
    let (_, unread_hwm) = memory_kib(pid);

    // Now the flooder reads: every echo is answered.
    let reader = tokio::spawn({
        async move {
            let mut buf = vec![0u8; 1 << 16];
            let mut pending = Vec::new();
            let mut frames = 0u64;
            while frames < FLOOD {
                let n = match tokio::time::timeout(Duration::from_secs(30), answers.read(&mut buf))
                    .await
                {
                    Ok(Ok(n)) if n > 0 => n,
                    _ => break,
                };
                pending.extend_from_slice(&buf[..n]);
                let mut at = 0;
                while pending.len() >= at + 4 {
                    let len: usize = std::str::from_utf8(&pending[at..at + 4])
                        .unwrap()
                        .parse()
                        .unwrap();
                    if pending.len() < at + 4 + len {
                        break;
                    }
                    at += 4 + len;
                    frames += 1;
                }
                pending.drain(..at);
            }
            frames
        }
    });
    let _requests = writer.await.unwrap();
    let answered = reader.await.unwrap();
    let (_, hwm) = memory_kib(pid);
    let peak = hwm.max(peak_rss);
    let growth_mib = peak.saturating_sub(baseline) as f64 / 1024.0;

    println!("flood: {FLOOD} pipelined echoes on one connection, unread for {NOT_READING:?}");
    println!(
        "  whole flood taken in while unread: {}",
        if all_written_unread {
            "yes (not held back)"
        } else {
            "no (held back by TCP)"
        }
    );
    println!("  serve RSS before: {:.1} MiB", baseline as f64 / 1024.0);
    println!(
        "  serve peak RSS while the flood was unread: {:.1} MiB",
        unread_hwm as f64 / 1024.0
    );
    println!("  serve peak RSS (VmHWM): {:.1} MiB", peak as f64 / 1024.0);
    println!("  growth: {growth_mib:.1} MiB (criterion: under 64 MiB)");
    println!(
        "  second connection: {echoes} echoes, slowest {} ms (criterion: under 1000 ms)",
        slowest.as_millis()
    );
    println!("  flood answers read afterwards: {answered} of {FLOOD}");
    let ok = growth_mib < 64.0 && slowest < Duration::from_secs(1) && answered == FLOOD;
    drop(serve);
    if !ok {
        eprintln!("flood: a criterion was missed");
        std::process::exit(1);
    }
}

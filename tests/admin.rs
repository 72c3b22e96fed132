//! The admin listener and the logs of a real `switchboard serve` process
//! with two `banksim` processes over TCP: `/ready` follows the banks,
//! `/metrics` counts a red packet exactly, every metric the Grafana
//! dashboard in `ops/` queries is exported, `/api/status` reflects the same
//! traffic and the operator's page draws it in headless Chromium, and logs
//! are JSON lines with span fields (or text without ANSI escapes), with no
//! card number.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::Utc;
use common::http::{get, get_with_head, request, samples};
use common::process::{
    addr, banksim_at, free_port, listening, send_admin, simulator_path, write_config, KillOnDrop,
    SwitchFile, BANKSIM_BALANCE,
};
use iso8583::framing::FramingConfig;
use simulators::bank::Bank;
use simulators::wallet::{code, WalletClient};

const BIN_A: &str = "622202";
const BIN_B: &str = "621700";

/// A `banksim` without faults listening on `port`, its stderr to `log`.
fn banksim_on(institution: &str, bin: &str, seed: u64, port: u16, log: Stdio) -> KillOnDrop {
    banksim_at(port, institution, bin, seed, "none", &[], log).child
}

/// The cards `banksim --seed SEED --bin BIN --accounts 6` holds.
fn cards(institution: &str, bin: &str, seed: u64) -> Vec<String> {
    Bank::generate(institution, bin, 6, BANKSIM_BALANCE, seed)
        .accounts()
        .into_iter()
        .map(|(pan, _)| pan)
        .collect()
}

/// Polls `/ready` until `done` holds for its status and JSON body (each poll
/// 100 ms apart, at most 30 s: a switch that never gets there fails).
fn ready_until(port: u16, done: impl Fn(u16, &serde_json::Value) -> bool) -> serde_json::Value {
    let mut last = (0, String::new());
    for _ in 0..300 {
        let (status, body) = get(port, "/ready");
        let json: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("/ready body is not JSON ({e}): {body}"));
        if done(status, &json) {
            return json;
        }
        last = (status, body);
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("/ready never got there; last: {last:?}");
}

fn sample(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("{series} is not exported; have:\n{samples:#?}"))
}

/// Every metric name a metrics text declares or has samples of, with the
/// suffixes its samples take (`_total`, `_bucket`, `_count`, `_sum`).
fn exported_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (name, kind) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            names.insert(name.to_string());
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_count", "_sum"],
                _ => &[],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#') {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

/// The metric names the dashboard's PromQL expressions use.
fn dashboard_metrics() -> BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("ops/grafana/switchboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(
        exprs.len() >= 10,
        "the dashboard has its queries: {exprs:?}"
    );
    let mut names = BTreeSet::new();
    for expr in exprs {
        let bytes = expr.as_bytes();
        let mut i = 0;
        while let Some(at) = expr[i..].find("switchboard_") {
            let start = i + at;
            let mut end = start;
            while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
                end += 1;
            }
            names.insert(expr[start..end].to_string());
            i = end;
        }
    }
    names
}

fn collect_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "query", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// A switch config with bank A at `a`, bank B at `b` and the admin listener.
fn config_with_admin(
    dir: &Path,
    wallet_port: u16,
    admin_port: u16,
    a: u16,
    b: u16,
    more: &str,
) -> std::path::PathBuf {
    let path = write_config(
        dir,
        SwitchFile {
            name: "switch.toml",
            store: &format!("path = \"{}\"", dir.join("switch.db").display()),
            wallet_port,
            bank_a: addr(a),
            bank_b: addr(b),
            timeout_ms: 5_000,
            max_backoff_ms: 1_000,
        },
    );
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!(
        "[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n{more}"
    ));
    std::fs::write(&path, text).unwrap();
    path
}

/// `switchboard serve` with `args` after the config, stderr to `log`;
/// waits until it listens. Its worker threads are its configuration's, not
/// a `TOKIO_WORKER_THREADS` the tests were run with.
fn serve_with(config: &Path, args: &[&str], log: Stdio) -> KillOnDrop {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    command
        .args(["serve", "--config"])
        .arg(config)
        .args(args)
        .env_remove("TOKIO_WORKER_THREADS")
        .stdout(Stdio::piped())
        .stderr(log);
    listening(command, String::new)
}

/// SIGTERM, then its exit, which must be clean, and its output.
fn terminate(child: KillOnDrop) -> std::process::Output {
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let output = child.into_inner().wait_with_output().unwrap();
    assert!(output.status.success(), "{}", output.status);
    output
}

/// A wallet connection to the switch, with a 10 s answer timeout.
async fn wallet(wallet_port: u16) -> WalletClient {
    WalletClient::connect(
        addr(wallet_port),
        FramingConfig::default(),
        common::WALLET_ID,
    )
    .await
    .unwrap()
    .with_timeout(Duration::from_secs(10))
}

/// A freeze, a receive of part of it and the unfreeze of the rest.
async fn red_packet(wallet_port: u16, payer: &str, receiver: &str) {
    let wallet = wallet(wallet_port).await;
    let now = Utc::now().naive_utc();
    let freeze = wallet.freeze(payer, 5_000, now);
    assert_eq!(code(&wallet.send(&freeze).await.unwrap()), "00", "freeze");
    let receive = wallet.receive(&freeze, receiver, 2_000, now);
    assert_eq!(code(&wallet.send(&receive).await.unwrap()), "00", "receive");
    let unfreeze = wallet.unfreeze(&freeze, 3_000, now);
    assert_eq!(
        code(&wallet.send(&unfreeze).await.unwrap()),
        "00",
        "unfreeze"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ready_follows_the_banks_and_metrics_count_a_red_packet() {
    let dir = tempfile::tempdir().unwrap();
    let (port_a, port_b) = (free_port(), free_port());
    let (wallet_port, admin_port) = (free_port(), free_port());
    let _bank_a = banksim_on(common::BANK_A, BIN_A, 31, port_a, Stdio::null());
    let config = config_with_admin(dir.path(), wallet_port, admin_port, port_a, port_b, "");
    // Bank B is not there yet.
    let switch = serve_with(&config, &[], Stdio::null());

    let (status, body) = get(admin_port, "/health");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["status"],
        "alive"
    );
    let not_ready = ready_until(admin_port, |status, json| {
        status == 503 && json["checks"]["banks"][0]["ok"] == true
    });
    assert_eq!(not_ready["ready"], false);
    let banks = &not_ready["checks"]["banks"];
    assert_eq!(banks[1]["institution_id"], common::BANK_B);
    assert_eq!(banks[1]["ok"], false);
    assert_eq!(banks[1]["signed_on"], 0);
    let problems = not_ready["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{not_ready}");
    assert!(
        problems[0].as_str().unwrap().contains(common::BANK_B)
            && problems[0]
                .as_str()
                .unwrap()
                .contains("no signed-on connection"),
        "{not_ready}"
    );
    assert_eq!(not_ready["checks"]["store"]["ok"], true);
    assert_eq!(not_ready["checks"]["listening"]["ok"], true);

    let _bank_b = banksim_on(common::BANK_B, BIN_B, 32, port_b, Stdio::null());
    let ready = ready_until(admin_port, |status, _| status == 200);
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["problems"].as_array().unwrap().len(), 0);

    let payer = &cards(common::BANK_A, BIN_A, 31)[0];
    let receiver = &cards(common::BANK_B, BIN_B, 32)[0];
    red_packet(wallet_port, payer, receiver).await;

    let (status, text) = get(admin_port, "/metrics");
    assert_eq!(status, 200);
    let s = samples(&text);
    let w = common::WALLET_ID;
    for (mti, rc, direction) in [
        ("0100", "", "in"),
        ("0110", "00", "out"),
        ("0200", "", "in"),
        ("0210", "00", "out"),
        ("0120", "", "in"),
        ("0130", "00", "out"),
    ] {
        let series = format!(
            "switchboard_messages_total{{direction=\"{direction}\",side=\"wallet\",mti=\"{mti}\",rc=\"{rc}\",institution=\"{w}\"}}"
        );
        assert_eq!(sample(&s, &series), 1.0, "{series}");
    }
    for flow in ["freeze", "receive", "unfreeze"] {
        assert_eq!(
            sample(
                &s,
                &format!("switchboard_flow_outcomes_total{{flow=\"{flow}\",rc=\"00\"}}")
            ),
            1.0
        );
        assert_eq!(
            sample(
                &s,
                &format!("switchboard_flow_duration_seconds_count{{flow=\"{flow}\"}}")
            ),
            1.0
        );
        let inf =
            format!("switchboard_flow_duration_seconds_bucket{{le=\"+Inf\",flow=\"{flow}\"}}");
        assert_eq!(sample(&s, &inf), 1.0, "{inf}");
    }
    // The payer bank froze and was debited; the receiver's bank credited.
    for (bank, leg) in [
        (common::BANK_A, "freeze"),
        (common::BANK_A, "debit"),
        (common::BANK_B, "credit"),
    ] {
        let series = format!(
            "switchboard_bank_request_duration_seconds_count{{bank=\"{bank}\",leg=\"{leg}\"}}"
        );
        assert_eq!(sample(&s, &series), 1.0, "{series}");
        let sent = format!(
            "switchboard_messages_total{{direction=\"out\",side=\"bank\",mti=\"{}\",rc=\"\",institution=\"{bank}\"}}",
            if leg == "freeze" { "0100" } else { "0200" }
        );
        assert!(sample(&s, &sent) >= 1.0, "{sent}");
    }
    for bank in [common::BANK_A, common::BANK_B] {
        for connection in 0..2 {
            let labels = format!("{{bank=\"{bank}\",connection=\"{connection}\"}}");
            assert_eq!(
                sample(&s, &format!("switchboard_bank_link_up{labels}")),
                1.0
            );
            assert_eq!(
                sample(&s, &format!("switchboard_bank_link_signed_on{labels}")),
                1.0
            );
            assert_eq!(
                sample(&s, &format!("switchboard_bank_link_timeouts_total{labels}")),
                0.0
            );
        }
    }
    assert_eq!(
        sample(&s, "switchboard_wallet_connections_accepted_total"),
        1.0
    );
    assert_eq!(sample(&s, "switchboard_ready"), 1.0);
    assert_eq!(sample(&s, "switchboard_store_up"), 1.0);
    assert_eq!(sample(&s, "switchboard_saf_entries{state=\"dead\"}"), 0.0);
    assert!(
        sample(
            &s,
            "switchboard_store_commit_duration_seconds_count{store=\"sqlite\"}"
        ) >= 3.0
    );
    // A handful of requests: the store is not busy, no batch was held.
    assert_eq!(
        sample(
            &s,
            "switchboard_store_spaced_batches_total{store=\"sqlite\"}"
        ),
        0.0
    );
    assert!(sample(&s, "switchboard_process_resident_memory_bytes") > 0.0);
    assert!(sample(&s, "switchboard_process_open_fds") > 0.0);
    assert!(sample(&s, "switchboard_process_start_time_seconds") > 1.0e9);
    assert!(text.ends_with("# EOF\n"));

    // Every metric the dashboard queries is exported.
    let exported = exported_names(&text);
    let queried = dashboard_metrics();
    let missing: Vec<_> = queried.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics not exported: {missing:?}"
    );

    // Anything else is refused without touching the switch.
    assert_eq!(get(admin_port, "/nothing").0, 404);
    terminate(switch);
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_carry_span_fields_and_no_card_number() {
    let dir = tempfile::tempdir().unwrap();
    let (port_a, port_b) = (free_port(), free_port());
    let (wallet_port, admin_port) = (free_port(), free_port());
    let _bank_a = banksim_on(common::BANK_A, BIN_A, 41, port_a, Stdio::null());
    let _bank_b = banksim_on(common::BANK_B, BIN_B, 42, port_b, Stdio::null());
    // `[log] format = "text"` in the file; `--log-format json` wins.
    let config = config_with_admin(
        dir.path(),
        wallet_port,
        admin_port,
        port_a,
        port_b,
        "[log]\nformat = \"text\"\n",
    );
    let log = dir.path().join("switch.log");
    let switch = serve_with(
        &config,
        &["--log-format", "json"],
        std::fs::File::create(&log).unwrap().into(),
    );
    ready_until(admin_port, |status, _| status == 200);
    let payer = &cards(common::BANK_A, BIN_A, 41)[0];
    let receiver = &cards(common::BANK_B, BIN_B, 42)[0];
    red_packet(wallet_port, payer, receiver).await;
    terminate(switch);

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains('\u{1b}'), "no ANSI escapes in JSON logs");
    for card in [payer, receiver] {
        assert!(
            !text.contains(card.as_str()),
            "a full card number is logged"
        );
    }
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines
        .iter()
        .all(|l| l["timestamp"].is_string() && l["level"].is_string()));
    // The wallet connection's close: one line, with its reason, inside the
    // connection's span.
    let closed: Vec<_> = lines
        .iter()
        .filter(|l| l["message"] == "disconnected" && l["span"]["name"] == "wallet")
        .collect();
    assert_eq!(closed.len(), 1, "{text}");
    let closed = closed[0];
    assert!(closed["reason"].is_string(), "{closed}");
    assert!(
        closed["span"]["addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{closed}"
    );
    assert_eq!(closed["spans"][0]["name"], "wallet");
    // Each bank connection's close says why.
    let bank_closes = lines
        .iter()
        .filter(|l| l["message"] == "disconnected" && l["link"].is_string())
        .inspect(|l| assert_eq!(l["reason"], "shutting down", "{l}"))
        .count();
    assert_eq!(bank_closes, 4, "two connections to each of two banks");
}

#[test]
fn serve_runs_the_worker_threads_its_configuration_gives() {
    let dir = tempfile::tempdir().unwrap();
    let (port_a, port_b) = (free_port(), free_port());
    let _bank_a = banksim_on(common::BANK_A, BIN_A, 53, port_a, Stdio::null());
    let _bank_b = banksim_on(common::BANK_B, BIN_B, 54, port_b, Stdio::null());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Left out: with the embedded store, one fewer than the cores, at least
    // one. Set: that many, whatever the cores.
    for (setting, expected) in [(None, cores.saturating_sub(1).max(1)), (Some(3), 3)] {
        let (wallet_port, admin_port) = (free_port(), free_port());
        let config = config_with_admin(dir.path(), wallet_port, admin_port, port_a, port_b, "");
        if let Some(n) = setting {
            let text = std::fs::read_to_string(&config).unwrap();
            let text = text.replacen(
                "[switch]\n",
                &format!("[switch]\nworker_threads = {n}\n"),
                1,
            );
            assert!(text.contains("worker_threads"), "{text}");
            std::fs::write(&config, text).unwrap();
        }
        let switch = serve_with(&config, &[], Stdio::piped());
        ready_until(admin_port, |status, _| status == 200);
        // The count the runtime reports of itself (its threads cannot be
        // told apart by name: its blocking threads share the workers').
        let log = String::from_utf8(terminate(switch).stderr).unwrap();
        let line = log
            .lines()
            .find(|line| line.contains("runtime worker threads"))
            .unwrap_or_else(|| panic!("no runtime line in {log}"));
        assert!(
            line.contains(&format!("workers={expected} ")),
            "{setting:?} on {cores} cores: {line}"
        );
    }
}

#[test]
fn text_logs_into_a_pipe_have_no_ansi_escapes() {
    let dir = tempfile::tempdir().unwrap();
    let (port_a, port_b) = (free_port(), free_port());
    let (wallet_port, admin_port) = (free_port(), free_port());
    let bank_a = banksim_on(common::BANK_A, BIN_A, 51, port_a, Stdio::piped());
    let bank_b = banksim_on(common::BANK_B, BIN_B, 52, port_b, Stdio::piped());
    let config = config_with_admin(dir.path(), wallet_port, admin_port, port_a, port_b, "");
    let switch = serve_with(&config, &[], Stdio::piped());
    ready_until(admin_port, |status, _| status == 200);
    let switch_log = String::from_utf8(terminate(switch).stderr).unwrap();
    assert!(switch_log.contains("signed on"), "{switch_log}");
    assert!(
        !switch_log.contains('\u{1b}'),
        "ANSI escapes in a piped log: {switch_log:?}"
    );
    for bank in [bank_a, bank_b] {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(bank.id() as i32, libc::SIGINT) };
        let out = bank.into_inner().wait_with_output().unwrap();
        let log = String::from_utf8(out.stderr).unwrap();
        assert!(!log.is_empty(), "banksim logs at info");
        assert!(
            !log.contains('\u{1b}'),
            "ANSI escapes in banksim's piped log: {log:?}"
        );
    }
    // walletsim logs its warnings the same way: one against a closed port.
    let out = Command::new(simulator_path("walletsim"))
        .args([
            "scenarios",
            "--switch",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .args(["--payer-admin", &format!("127.0.0.1:{}", free_port())])
        .args(["--receiver-admin", &format!("127.0.0.1:{}", free_port())])
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let log = String::from_utf8(out.stderr).unwrap();
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escapes in walletsim's piped log: {log:?}"
    );
}

/// A freeze the payer's bank declines: more than the account holds.
async fn declined_freeze(wallet_port: u16, payer: &str) -> String {
    let wallet = wallet(wallet_port).await;
    let freeze = wallet.freeze(payer, BANKSIM_BALANCE as u64 * 10, Utc::now().naive_utc());
    code(&wallet.send(&freeze).await.unwrap()).to_string()
}

/// A frame whose ASCII length prefix is not digits: the switch logs a
/// warning and closes the connection.
fn bad_frame(wallet_port: u16) {
    let mut stream = std::net::TcpStream::connect(addr(wallet_port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(b"ZZZZ0100").unwrap();
    // The switch closes it: the read ends, with nothing or an error.
    let _ = stream.read(&mut [0u8; 64]);
}

/// A switch with both banks signed on that has answered a red packet (three
/// approvals), one declined freeze and logged one warning (a bad frame).
struct Traffic {
    _dir: tempfile::TempDir,
    _banks: [KillOnDrop; 2],
    switch: KillOnDrop,
    admin_port: u16,
    declined_code: String,
}

async fn switch_with_traffic(seed: u64) -> Traffic {
    let dir = tempfile::tempdir().unwrap();
    let (port_a, port_b) = (free_port(), free_port());
    let (wallet_port, admin_port) = (free_port(), free_port());
    let bank_a = banksim_on(common::BANK_A, BIN_A, seed, port_a, Stdio::null());
    let bank_b = banksim_on(common::BANK_B, BIN_B, seed + 1, port_b, Stdio::null());
    let config = config_with_admin(dir.path(), wallet_port, admin_port, port_a, port_b, "");
    let switch = serve_with(&config, &[], Stdio::null());
    ready_until(admin_port, |status, _| status == 200);
    let payer = &cards(common::BANK_A, BIN_A, seed)[0];
    let receiver = &cards(common::BANK_B, BIN_B, seed + 1)[0];
    red_packet(wallet_port, payer, receiver).await;
    let declined_code = declined_freeze(wallet_port, payer).await;
    assert_ne!(declined_code, "00", "a freeze over the balance is declined");
    bad_frame(wallet_port);
    Traffic {
        _dir: dir,
        _banks: [bank_a, bank_b],
        switch,
        admin_port,
        declined_code,
    }
}

/// Polls `/api/status` until `done` holds (100 ms apart, at most 30 s).
fn status_until(port: u16, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let mut last = String::new();
    for _ in 0..300 {
        let (status, body) = get(port, "/api/status");
        assert_eq!(status, 200, "{body}");
        let json: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("/api/status is not JSON ({e}): {body}"));
        if done(&json) {
            return json;
        }
        last = body;
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("/api/status never got there; last: {last}");
}

/// Whether the newest warning is the bad frame's (logged as the switch
/// closes that connection, which may be after the client saw it closed).
fn logged_the_bad_frame(status: &serde_json::Value) -> bool {
    status["errors"][0]["message"]
        .as_str()
        .is_some_and(|m| m.contains("bad frame"))
}

#[tokio::test(flavor = "multi_thread")]
async fn status_reflects_real_traffic_and_the_page_is_served_with_its_policy() {
    let t = switch_with_traffic(61).await;
    let status = status_until(t.admin_port, logged_the_bad_frame);
    assert_eq!(status["ready"], true, "{status}");
    let traffic = &status["traffic"];
    assert_eq!(traffic["answered"], 4, "{status}");
    assert_eq!(traffic["approved"], 3, "{status}");
    assert_eq!(traffic["codes"]["00"], 3, "{status}");
    assert_eq!(traffic["codes"][t.declined_code.as_str()], 1, "{status}");
    let flows = &traffic["flows"];
    assert_eq!(flows["freeze"]["answered"], 2);
    assert_eq!(flows["freeze"]["approved"], 1);
    for flow in ["receive", "unfreeze"] {
        assert_eq!(flows[flow]["answered"], 1, "{flow}");
        assert_eq!(flows[flow]["approved"], 1, "{flow}");
    }
    for flow in ["freeze", "receive", "unfreeze"] {
        let (p50, p99) = (
            flows[flow]["p50_ms"].as_f64().unwrap(),
            flows[flow]["p99_ms"].as_f64().unwrap(),
        );
        assert!(p50 > 0.0 && p50 <= p99, "{flow}: {p50} {p99}");
    }
    assert_eq!(flows["other"]["p50_ms"], serde_json::Value::Null);
    // Notices the banks are told in the background may still be pending.
    assert!(status["saf"]["pending"].is_u64(), "{status}");
    assert_eq!(status["saf"]["dead"], 0, "{status}");
    let banks = status["banks"].as_array().unwrap();
    assert_eq!(banks.len(), 2);
    for bank in banks {
        assert_eq!(bank["signed_on"], 2, "{bank}");
        assert_eq!(bank["connections"], 2, "{bank}");
    }
    assert_eq!(status["errors"][0]["level"], "warn", "{status}");
    assert!(status["errors_total"].as_u64() >= Some(1), "{status}");

    // The page and its assets: embedded, typed, under a strict policy.
    for (path, content_type, marker) in [
        ("/", "text/html", "<script src=\"/page.js\""),
        ("/page.js", "text/javascript", "/api/status"),
        ("/page.css", "text/css", ".chart"),
    ] {
        let (code, head, body) = get_with_head(t.admin_port, path);
        assert_eq!(code, 200, "{path}");
        let head = head.to_ascii_lowercase();
        assert!(
            head.contains(&format!("content-type: {content_type}")),
            "{path}: {head}"
        );
        assert!(
            head.contains("content-security-policy: default-src 'none'; script-src 'self';"),
            "{path}: {head}"
        );
        assert!(head.contains("x-content-type-options: nosniff"), "{head}");
        assert!(body.contains(marker), "{path}");
    }

    // With no operator token configured, actions are refused, and audited.
    let (code, _, body) = request(t.admin_port, "POST", "/api/drain", &[]);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("operator_token_env"), "{body}");
    let status = status_until(t.admin_port, |s| s["audit"][0]["result"] == "refused");
    assert_eq!(status["audit"][0]["action"], "drain", "{status}");
    assert_eq!(status["ready"], true, "nothing drained: {status}");
    terminate(t.switch);
}

/// A headless Chromium in its own process group, killed with every process
/// it started when dropped.
struct Chromium(Option<std::process::Child>);

impl Chromium {
    /// Runs `chromium --headless` with `args` until it exits (at most
    /// 120 s, then it is killed and the test fails): its stdout and stderr.
    fn run(args: &[String], dir: &Path) -> (String, String) {
        use std::os::unix::process::CommandExt;
        let (out, err) = (dir.join("chromium.out"), dir.join("chromium.err"));
        let child = Command::new("chromium")
            .args([
                "--headless",
                "--disable-gpu",
                "--no-sandbox",
                "--no-first-run",
                "--disable-extensions",
                "--enable-logging=stderr",
                "--v=0",
            ])
            .arg(format!("--user-data-dir={}", dir.join("profile").display()))
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .process_group(0)
            .spawn()
            .expect("chromium runs (.ci/run installs it)");
        let mut chromium = Chromium(Some(child));
        let mut exited = None;
        for _ in 0..1200 {
            if let Some(status) = chromium.0.as_mut().unwrap().try_wait().unwrap() {
                exited = Some(status);
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        drop(chromium);
        let (stdout, stderr) = (
            std::fs::read_to_string(&out).unwrap_or_default(),
            std::fs::read_to_string(&err).unwrap_or_default(),
        );
        let status = exited.unwrap_or_else(|| panic!("chromium did not finish: {stderr}"));
        assert!(status.success(), "chromium: {status}: {stderr}");
        (stdout, stderr)
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            // SAFETY: signalling the process group of our own child.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
        }
    }
}

/// The value of `attr` on the element with `id` in a serialized DOM.
fn attribute_of(dom: &str, id: &str, attr: &str) -> String {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the page: {dom}"));
    let start = dom[..at].rfind('<').unwrap();
    let end = at + dom[at..].find('>').unwrap();
    let tag = &dom[start..end];
    let from = tag
        .find(&format!(" {attr}=\""))
        .unwrap_or_else(|| panic!("#{id} has no {attr}: {tag}"))
        + attr.len()
        + 3;
    tag[from..from + tag[from..].find('"').unwrap()].to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_page_draws_real_traffic_in_headless_chromium() {
    let t = switch_with_traffic(71).await;
    status_until(t.admin_port, logged_the_bad_frame);
    // An action refused (no operator token is configured), for the page's table.
    assert_eq!(
        request(t.admin_port, "POST", "/api/risk/reload", &[]).0,
        403
    );
    let url = format!("http://127.0.0.1:{}/", t.admin_port);
    let browser_dir = tempfile::tempdir().unwrap();
    // Virtual time runs the page's polling several times over, waiting for
    // each fetch; the DOM is dumped once the budget is spent.
    let (dom, log) = Chromium::run(
        &[
            "--virtual-time-budget=6000".into(),
            "--dump-dom".into(),
            url.clone(),
        ],
        browser_dir.path(),
    );
    // The console says nothing: no script error, no policy violation.
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:#?}");
    assert_eq!(attribute_of(&dom, "top", "data-state"), "ok", "{dom}");
    let polls: u32 = attribute_of(&dom, "top", "data-polls").parse().unwrap();
    assert!(polls >= 2, "{polls} polls: {dom}");
    let points = |id: &str| -> u32 { attribute_of(&dom, id, "data-points").parse().unwrap() };
    // 00 and the decline's code; p50 and p99 of three flows; two
    // connections to each of two banks; a volume line from the second poll.
    assert_eq!(points("codes"), 2, "{dom}");
    assert_eq!(points("latency"), 6, "{dom}");
    assert_eq!(points("banks"), 4, "{dom}");
    assert!(points("volume") >= 1, "{dom}");
    assert!(points("saf") >= 2, "{dom}");
    assert!(
        dom.contains("bad frame"),
        "the last warning is shown: {dom}"
    );
    assert!(dom.contains(">ready<"), "{dom}");
    assert_eq!(attribute_of(&dom, "audit", "data-rows"), "1", "{dom}");
    assert!(
        dom.contains(">risk.reload<"),
        "the refused action is listed: {dom}"
    );

    // A picture of it, kept as a test artifact.
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("operator-page.png");
    let _ = std::fs::remove_file(&screenshot);
    Chromium::run(
        &[
            "--virtual-time-budget=6000".into(),
            "--window-size=1280,1000".into(),
            "--hide-scrollbars".into(),
            format!("--screenshot={}", screenshot.display()),
            url,
        ],
        browser_dir.path(),
    );
    let png = std::fs::read(&screenshot).expect("chromium saved the screenshot");
    assert!(
        png.starts_with(b"\x89PNG"),
        "a PNG at {}",
        screenshot.display()
    );
    terminate(t.switch);
}

// ---------------------------------------------------------------------------
// Operator actions

const OPERATOR_TOKEN: &str = "operator-token-for-the-admin-test";
const READ_TOKEN: &str = "read-token-for-the-admin-test-0";

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

/// A POST with the operator token, as `ann`: status and JSON body.
fn act(port: u16, path: &str) -> (u16, serde_json::Value) {
    let auth = bearer(OPERATOR_TOKEN);
    let (status, _, body) = request(port, "POST", path, &[&auth, "X-Operator: ann"]);
    let json = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("{path} answered no JSON ({e}): {body}"));
    (status, json)
}

/// A GET with the read token: status and JSON body.
fn read(port: u16, path: &str) -> (u16, serde_json::Value) {
    let (status, _, body) = request(port, "GET", path, &[&bearer(READ_TOKEN)]);
    let json = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("{path} answered no JSON ({e}): {body}"));
    (status, json)
}

/// Polls `/api/status` with the read token until `done` holds (100 ms
/// apart, at most 30 s).
fn status_with_token_until(
    port: u16,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    for _ in 0..300 {
        let (status, json) = read(port, "/api/status");
        assert_eq!(status, 200, "{json}");
        if done(&json) {
            return json;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("/api/status never got there");
}

/// One value of the switch's SQLite file, read beside the running switch.
fn db_value(db: &Path, sql: &str) -> Option<String> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.query_row(sql, [], |r| {
        r.get::<_, rusqlite::types::Value>(0).map(|v| match v {
            rusqlite::types::Value::Integer(n) => n.to_string(),
            rusqlite::types::Value::Text(t) => t,
            other => format!("{other:?}"),
        })
    })
    .ok()
}

/// Polls the switch's SQLite file until `sql` gives `want` (100 ms apart, at most 30 s).
fn db_until(db: &Path, sql: &str, want: &str) {
    let mut last = None;
    for _ in 0..300 {
        last = db_value(db, sql);
        if last.as_deref() == Some(want) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{sql} never gave {want}; last {last:?}");
}

fn snapshot(banksim_admin: u16) -> String {
    send_admin(banksim_admin, "snapshot")
}

const FREEZE_AT_MOST_5000: &str = "[[rules]]\nid = \"freeze-max\"\nkind = \"amount\"\nrequest = \"freeze\"\ncurrency = \"156\"\nmax_minor = 5000\nmode = \"MODE\"\n";

#[tokio::test(flavor = "multi_thread")]
async fn operator_actions_need_the_operator_token_and_are_audited() {
    let dir = tempfile::tempdir().unwrap();
    let (port_a, port_b) = (free_port(), free_port());
    let (wallet_port, admin_port) = (free_port(), free_port());
    let bank_a = banksim_at(
        port_a,
        common::BANK_A,
        BIN_A,
        81,
        "none",
        &[],
        Stdio::null(),
    );
    let bank_b = banksim_at(
        port_b,
        common::BANK_B,
        BIN_B,
        82,
        "none",
        &[],
        Stdio::null(),
    );
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, FREEZE_AT_MOST_5000.replace("MODE", "observe")).unwrap();
    // One attempt per store-and-forward entry: one that fails is dead at once.
    let config = config_with_admin(
        dir.path(),
        wallet_port,
        admin_port,
        port_a,
        port_b,
        "operator_token_env = \"SB_TEST_OPERATOR_TOKEN\"\nread_token_env = \"SB_TEST_READ_TOKEN\"\n[risk]\nrules_file = \"rules.toml\"\n",
    );
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[saf]\n", "[saf]\nmax_attempts = 1\n");
    std::fs::write(&config, text).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    command
        .args(["serve", "--config"])
        .arg(&config)
        .env("SB_TEST_OPERATOR_TOKEN", OPERATOR_TOKEN)
        .env("SB_TEST_READ_TOKEN", READ_TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let switch = listening(command, String::new);
    let db = dir.path().join("switch.db");
    ready_until(admin_port, |status, _| status == 200);

    // Tokens: probes are open, data needs a token, actions the operator's.
    assert_eq!(get(admin_port, "/health").0, 200);
    let (status, head, _) = request(admin_port, "POST", "/api/drain", &[]);
    assert_eq!(status, 401);
    assert!(head.contains("www-authenticate: Bearer"), "{head}");
    let wrong = bearer("not-the-operator-token-at-all");
    assert_eq!(request(admin_port, "POST", "/api/drain", &[&wrong]).0, 401);
    let reader = bearer(READ_TOKEN);
    assert_eq!(request(admin_port, "POST", "/api/drain", &[&reader]).0, 403);
    assert_eq!(request(admin_port, "GET", "/api/status", &[]).0, 401);
    assert_eq!(request(admin_port, "GET", "/metrics", &[&wrong]).0, 401);
    assert_eq!(request(admin_port, "GET", "/metrics", &[&reader]).0, 200);
    assert_eq!(read(admin_port, "/ready").0, 200, "still serving");

    // Sign bank A (the payer's) off: not ready, and a receive that needs
    // it is answered 91 with nothing moved at either bank.
    let payer = &cards(common::BANK_A, BIN_A, 81)[0];
    let receiver = &cards(common::BANK_B, BIN_B, 82)[0];
    let w = wallet(wallet_port).await;
    let now = Utc::now().naive_utc();
    let packet = w.freeze(payer, 5_000, now);
    assert_eq!(code(&w.send(&packet).await.unwrap()), "00", "freeze");
    let (status, off) = act(
        admin_port,
        &format!("/api/banks/{}/sign-off", common::BANK_A),
    );
    assert_eq!(status, 200, "{off}");
    assert_eq!(off["signed_off"], true);
    assert!(
        off["answered"].as_u64().unwrap() >= 1,
        "a sign-off 0800 was answered: {off}"
    );
    let (status, ready) = read(admin_port, "/ready");
    assert_eq!(status, 503);
    assert!(
        ready["problems"][0]
            .as_str()
            .unwrap()
            .contains("signed off by an operator"),
        "{ready}"
    );
    assert_eq!(ready["checks"]["banks"][0]["signed_on"], 0, "{ready}");
    let books = (snapshot(bank_a.admin), snapshot(bank_b.admin));
    let receive = w.receive(&packet, receiver, 2_000, now);
    assert_eq!(
        code(&w.send(&receive).await.unwrap()),
        "91",
        "receive with the payer bank signed off"
    );
    assert_eq!(
        (snapshot(bank_a.admin), snapshot(bank_b.admin)),
        books,
        "nothing moved"
    );
    assert_eq!(
        db_value(&db, "SELECT received_minor + reserved_minor FROM freezes").as_deref(),
        Some("0")
    );
    // The unfreeze is answered; its notice to bank A cannot go, and with
    // one attempt allowed it is dead.
    let unfreeze = w.unfreeze(&packet, 5_000, now);
    assert_eq!(code(&w.send(&unfreeze).await.unwrap()), "00", "unfreeze");
    status_with_token_until(admin_port, |s| s["saf"]["dead"] == 1);
    assert_eq!(
        (snapshot(bank_a.admin), snapshot(bank_b.admin)),
        books,
        "the hold stays"
    );

    // Sign it on again: ready, and red packets go through.
    let (status, on) = act(
        admin_port,
        &format!("/api/banks/{}/sign-on", common::BANK_A),
    );
    assert_eq!(status, 200, "{on}");
    assert_eq!(on["signed_off"], false);
    ready_until(admin_port, |status, _| status == 200);
    red_packet(wallet_port, payer, receiver).await;
    assert_eq!(act(admin_port, "/api/banks/nobody/sign-on").0, 404);

    // Retry the dead notice: delivered, the hold released.
    let dead = db_value(&db, "SELECT id FROM saf WHERE state = 'dead'").expect("a dead entry");
    db_until(&db, "SELECT count(*) FROM saf WHERE state = 'pending'", "0");
    let before_retry = snapshot(bank_a.admin);
    assert_eq!(act(admin_port, "/api/saf/not-a-number/retry").0, 404);
    assert_eq!(act(admin_port, "/api/saf/99999/retry").0, 404);
    let (status, retried) = act(admin_port, &format!("/api/saf/{dead}/retry"));
    assert_eq!(status, 200, "{retried}");
    db_until(
        &db,
        &format!("SELECT state || ' ' || last_result FROM saf WHERE id = {dead}"),
        "done 00",
    );
    assert_ne!(
        snapshot(bank_a.admin),
        before_retry,
        "bank A released the hold"
    );
    let (status, again) = act(admin_port, &format!("/api/saf/{dead}/retry"));
    assert_eq!(status, 409, "{again}");
    assert!(again["error"].as_str().unwrap().contains("done"), "{again}");

    // Reload the risk rules: enforced from the next request; a bad file is
    // refused with its reason and the rules in force stay.
    let over = w.freeze(payer, 5_001, Utc::now().naive_utc());
    assert_eq!(code(&w.send(&over).await.unwrap()), "00", "observed only");
    std::fs::write(&rules, FREEZE_AT_MOST_5000.replace("MODE", "enforce")).unwrap();
    let (status, reloaded) = act(admin_port, "/api/risk/reload");
    assert_eq!(
        (status, &reloaded["rules"]),
        (200, &serde_json::json!(1)),
        "{reloaded}"
    );
    let over = w.freeze(payer, 5_001, Utc::now().naive_utc());
    assert_eq!(code(&w.send(&over).await.unwrap()), "61", "enforced");
    std::fs::write(&rules, "[[rules]]\nid = \"x\"\nkind = \"amount\"\n").unwrap();
    let (status, refused) = act(admin_port, "/api/risk/reload");
    assert_eq!(status, 422, "{refused}");
    assert!(
        refused["reason"].as_str().unwrap().contains("mode"),
        "{refused}"
    );
    let over = w.freeze(payer, 5_001, Utc::now().naive_utc());
    assert_eq!(
        code(&w.send(&over).await.unwrap()),
        "61",
        "the old rules stay"
    );

    // Drain: not ready, new wallet connections refused.
    let (status, drained) = act(admin_port, "/api/drain");
    assert_eq!(
        (status, &drained["already"]),
        (200, &serde_json::json!(false)),
        "{drained}"
    );
    let (status, ready) = read(admin_port, "/ready");
    assert_eq!(status, 503);
    assert_eq!(ready["checks"]["listening"]["ok"], false, "{ready}");
    let mut refused = false;
    for _ in 0..100 {
        if std::net::TcpStream::connect(addr(wallet_port)).is_err() {
            refused = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(refused, "a drained switch refuses new wallet connections");
    assert_eq!(act(admin_port, "/api/drain").1["already"], true);

    // Every attempt is in the audit log, newest first, without a token.
    let (status, audit) = read(admin_port, "/api/audit?limit=200");
    assert_eq!(status, 200);
    let text = audit.to_string();
    assert!(
        !text.contains(OPERATOR_TOKEN) && !text.contains(READ_TOKEN),
        "{text}"
    );
    let rows: Vec<(String, String, String)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap().to_string();
            (s("action"), s("target"), s("result"))
        })
        .collect();
    let has = |action: &str, target: &str, result: &str| {
        rows.iter()
            .filter(|r| (r.0.as_str(), r.1.as_str(), r.2.as_str()) == (action, target, result))
            .count()
    };
    assert_eq!(has("drain", "", "unauthorized"), 2, "{rows:?}");
    assert_eq!(has("drain", "", "forbidden"), 1, "{rows:?}");
    assert_eq!(has("read", "/metrics", "unauthorized"), 1, "{rows:?}");
    assert_eq!(has("bank.sign-off", common::BANK_A, "ok"), 1, "{rows:?}");
    assert_eq!(has("bank.sign-on", common::BANK_A, "ok"), 1, "{rows:?}");
    assert_eq!(has("saf.retry", &dead, "ok"), 1, "{rows:?}");
    assert_eq!(has("saf.retry", &dead, "refused"), 1, "{rows:?}");
    assert_eq!(has("risk.reload", "", "ok"), 1, "{rows:?}");
    assert_eq!(has("risk.reload", "", "refused"), 1, "{rows:?}");
    assert_eq!(has("drain", "", "ok"), 2, "{rows:?}");
    assert_eq!(rows[0].0, "drain", "newest first: {rows:?}");
    let newest = &audit["entries"][0];
    assert!(
        newest["who"]
            .as_str()
            .unwrap()
            .starts_with("operator 127.0.0.1:"),
        "{newest}"
    );
    assert!(
        newest["who"].as_str().unwrap().ends_with("(ann)"),
        "{newest}"
    );
    assert_eq!(
        db_value(&db, "SELECT count(*) FROM audit_log").unwrap(),
        rows.len().to_string(),
        "the rows are the store's"
    );
    // `switchboard audit` reads the same rows beside the running switch.
    let cli = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["audit", "--json", "--limit", "3", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(cli.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0], audit["entries"][0]);
    // The page's document carries the latest ones.
    let (_, status) = read(admin_port, "/api/status");
    assert_eq!(status["audit"][0]["action"], "drain", "{status}");
    terminate(switch);
}

//! `walletsim load --report FILE.svg` against real processes (two
//! `banksim`s and `switchboard serve` on the embedded store): the picture
//! is a well-formed SVG whose lines have a point for every second of the
//! run, drawn from the same measurements as the JSON report, with its axes
//! labelled. And walletsim's progress bar, like the switch's commands',
//! never reaches a stderr that is not a terminal, and is drawn on one that is.

mod common;

use common::process::{
    addr, assert_no_progress, banks_and_switch, free_port, on_a_terminal, quoted, serve,
    simulator_path, BanksAndSwitch,
};

use std::process::{Command, Output};

use simulators::load_chart::series_colour;

const RATE: u64 = 100;
const SECONDS: u64 = 3;

/// `walletsim load` for [`SECONDS`] at [`RATE`] with `more` arguments.
fn walletsim_load(setup: &BanksAndSwitch, more: &[&str]) -> Command {
    let mut command = Command::new(simulator_path("walletsim"));
    command
        .arg("load")
        .args(["--switch", &addr(setup.wallet_port).to_string()])
        .args(["--payer-admin", &addr(setup.bank_a.admin).to_string()])
        .args(["--receiver-admin", &addr(setup.bank_b.admin).to_string()])
        .args(["--institution", common::WALLET_ID])
        .args([
            "--rate",
            &RATE.to_string(),
            "--duration",
            &SECONDS.to_string(),
        ])
        .args([
            "--connections",
            "2",
            "--freezes",
            "4",
            "--freeze-amount",
            "100000",
        ])
        .args(["--give-up-after", "20"])
        .args(more);
    command
}

/// The points of the one polyline in `label`'s colour.
fn points(doc: &roxmltree::Document, label: &str) -> usize {
    let colour = series_colour(label).unwrap();
    let lines: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("polyline") && n.attribute("stroke") == Some(colour.as_str()))
        .collect();
    assert_eq!(lines.len(), 1, "one {label} line");
    lines[0]
        .attribute("points")
        .unwrap()
        .split_whitespace()
        .count()
}

#[test]
fn the_report_draws_every_second_of_a_real_run() {
    let setup = banks_and_switch(31, 32);
    let _switch = serve(&setup.config);
    let svg_path = setup.dir.path().join("load.svg");
    // stdout and stderr are pipes: no terminal.
    let out: Output = walletsim_load(&setup, &["--json", "--report"])
        .arg(&svg_path)
        .output()
        .expect("walletsim runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "walletsim: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_progress("walletsim load", &out.stderr);
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["sent"], RATE * SECONDS, "{report}");
    assert_eq!(report["answered"], RATE * SECONDS, "{report}");

    // The seconds of the run, as measured: every request offered once in
    // the schedule's seconds, every answer in the second it came.
    let seconds = report["per_second"].as_array().unwrap();
    assert!(
        seconds.len() as u64 >= SECONDS,
        "{} seconds: {report}",
        seconds.len()
    );
    let sum = |key: &str| {
        seconds
            .iter()
            .map(|s| s[key].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(sum("offered"), RATE * SECONDS);
    assert_eq!(sum("answered"), RATE * SECONDS);
    for s in &seconds[..SECONDS as usize] {
        assert_eq!(s["offered"], RATE, "{report}");
    }
    let with_latency = seconds
        .iter()
        .filter(|s| !s["latency_us"].is_null())
        .count();
    let distribution: u64 = report["latency_distribution"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .sum();
    assert_eq!(distribution, RATE * SECONDS);

    let svg = std::fs::read_to_string(&svg_path).unwrap();
    let doc = roxmltree::Document::parse(&svg).expect("a well-formed SVG");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    assert_eq!(points(&doc, "offered"), seconds.len());
    assert_eq!(points(&doc, "answered"), seconds.len());
    for label in ["p50", "p90", "p99", "max"] {
        assert_eq!(points(&doc, label), with_latency, "{label}");
    }
    let texts: Vec<String> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text().map(|t| t.trim().to_string()))
        .collect();
    for label in [
        "seconds from the start",
        "requests per second",
        "latency, ms",
        "requests",
    ] {
        assert!(texts.iter().any(|t| t == label), "{label}: {texts:?}");
    }
    let p99_ms = report["latency_us_p99"].as_u64().unwrap() as f64 / 1000.0;
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("Latency of every request") && t.contains(" p99 ")),
        "the distribution's caption gives p99 ({p99_ms} ms): {texts:?}"
    );
}

#[test]
fn a_report_that_is_not_svg_is_refused_before_the_load() {
    // Nothing listens at these ports: the refusal comes first.
    let closed = addr(free_port()).to_string();
    let out = Command::new(simulator_path("walletsim"))
        .args(["load", "--switch", &closed, "--payer-admin", &closed])
        .args(["--receiver-admin", &closed, "--report", "x.png"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("SVG only"), "{stderr}");
}

#[test]
fn walletsim_draws_its_progress_on_a_terminal_only() {
    let setup = banks_and_switch(31, 32);
    let _switch = serve(&setup.config);
    let piped = walletsim_load(&setup, &[]).output().unwrap();
    assert!(piped.status.success());
    assert_no_progress("walletsim load", &piped.stderr);

    let args: Vec<String> = walletsim_load(&setup, &[])
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let line = format!(
        "{} {}",
        quoted(&simulator_path("walletsim")),
        args.join(" ")
    );
    let (status, screen) = on_a_terminal(&line, setup.dir.path());
    let text = String::from_utf8_lossy(&screen);
    assert!(status.success(), "{status}: {text}");
    assert!(text.contains("every packet closed"), "{text}");
    assert!(
        screen.contains(&0x1b),
        "no bar drawn on a terminal: {text:?}"
    );
    assert!(
        text.contains(" sent "),
        "the bar counts what is sent: {text:?}"
    );
}

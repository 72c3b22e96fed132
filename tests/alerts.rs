//! Alerts over real TCP: a `switchboard serve` process between two
//! `banksim` processes, bank A told to decline everything. The switch logs
//! one `alert raised` warning per party whose decline rate crossed the
//! threshold (bank A, and the wallet it answered), however many declines
//! follow, and `/metrics` shows the alert active and counted once.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use common::http::{get, samples};
use common::process::{
    addr, banks_and_switch, free_port, read_log, send_admin, serve_logged, stop, BANKSIM_BALANCE,
};
use iso8583::framing::FramingConfig;
use simulators::bank::Bank;
use simulators::wallet::{code, WalletClient};

/// Declines in a row each batch: at least `min_requests`.
const BATCH: usize = 6;

/// Polls `/metrics` until `done` holds (100 ms apart, at most 60 s).
fn metrics_until(
    port: u16,
    what: &str,
    done: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    for _ in 0..600 {
        let s = samples(&get(port, "/metrics").1);
        if done(&s) {
            return s;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("/metrics never showed {what}");
}

/// The log's JSON lines saying `alert raised`.
fn raised(log: &std::path::Path) -> Vec<serde_json::Value> {
    read_log(log)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "alert raised")
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bank_that_declines_everything_raises_one_alert_per_party() {
    let setup = banks_and_switch(11, 12);
    let admin_port = free_port();
    let mut config = std::fs::read_to_string(&setup.config).unwrap();
    config.push_str(&format!(
        "[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n[log]\nformat = \"json\"\n\
         [alerts]\nwindow_seconds = 60\ndecline_rate = 0.5\nmin_requests = {BATCH}\n"
    ));
    std::fs::write(&setup.config, config).unwrap();
    let log = setup.dir.path().join("switch.log");
    let switch = serve_logged(&setup.config, &log, "info");
    assert!(send_admin(setup.bank_a.admin, "faults decline=1:05").contains("decline"));

    let cards: Vec<String> = Bank::generate(common::BANK_A, "622202", 6, BANKSIM_BALANCE, 11)
        .accounts()
        .into_iter()
        .map(|(pan, _)| pan)
        .collect();
    let wallet = WalletClient::connect(
        addr(setup.wallet_port),
        FramingConfig::default(),
        common::WALLET_ID,
    )
    .await
    .unwrap();
    let decline_batch = || async {
        for card in &cards {
            let freeze = wallet.freeze(card, 1_000, Utc::now().naive_utc());
            let answer = wallet.send(&freeze).await.unwrap();
            assert_eq!(code(&answer), "05", "bank A declines every freeze");
        }
    };
    decline_batch().await;

    let bank = "{kind=\"decline_rate\",side=\"bank\",party=\"48020000\"}";
    let wallet_party = "{kind=\"decline_rate\",side=\"wallet\",party=\"01020000\"}";
    let active = |s: &BTreeMap<String, f64>, labels: &str| {
        s.get(&format!("switchboard_alert_active{labels}")) == Some(&1.0)
    };
    let s = metrics_until(admin_port, "both decline alerts active", |s| {
        active(s, bank) && active(s, wallet_party)
    });
    assert_eq!(s[&format!("switchboard_alerts_total{bank}")], 1.0);
    assert_eq!(s[&format!("switchboard_alerts_total{wallet_party}")], 1.0);
    assert_eq!(
        s["switchboard_alert_measure{measure=\"decline_rate\",side=\"bank\",party=\"48020000\"}"],
        1.0
    );

    // More declines, judged again (the window's requests show they were
    // counted): still one alert each, one warning each.
    decline_batch().await;
    let requests =
        "switchboard_alert_measure{measure=\"requests\",side=\"bank\",party=\"48020000\"}";
    let s = metrics_until(admin_port, "the second batch judged", |s| {
        s.get(requests).copied().unwrap_or(0.0) >= (2 * BATCH) as f64
    });
    assert_eq!(s[&format!("switchboard_alerts_total{bank}")], 1.0);
    assert!(active(&s, bank));
    let warnings = raised(&log);
    let of = |side: &str, party: &str| {
        warnings
            .iter()
            .filter(|w| w["alert"] == "decline_rate" && w["side"] == side && w["party"] == party)
            .collect::<Vec<_>>()
    };
    let bank_warnings = of("bank", common::BANK_A);
    assert_eq!(bank_warnings.len(), 1, "{warnings:#?}");
    let w = bank_warnings[0];
    assert_eq!(w["level"], "WARN", "{w}");
    assert_eq!(w["threshold"], 0.5, "{w}");
    assert_eq!(w["value"], 1.0, "{w}");
    assert_eq!(w["window_s"], 60, "{w}");
    assert!(w["declined"].as_u64() >= Some(BATCH as u64), "{w}");
    assert_eq!(w["declined"], w["answered"], "{w}");
    assert_eq!(of("wallet", common::WALLET_ID).len(), 1, "{warnings:#?}");
    assert!(
        of("bank", common::BANK_B).is_empty(),
        "bank B was never asked: {warnings:#?}"
    );
    stop(switch);
}

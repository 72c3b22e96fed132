//! Risk rules over real TCP: wallets → switch → bank simulators, each rule
//! enforced and observed, at its limit and one past it, with the banks'
//! books checked: a declined request moves no money, holds nothing and
//! never reaches a bank. Counted rules run on both stores; two instances
//! on one PostgreSQL database race a card at its limit.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::NaiveDateTime;
use iso8583::codec::Message;
use iso8583::framing::FramingConfig;
use simulators::wallet::{code, WalletClient};
use switchboard::clock::Clock;
use switchboard::config::StoreConfig;
use switchboard::risk::Mode;

use common::{start_configured, Backend, Harness};

/// A switch whose `[risk] rules_file` holds `rules`; the file stays in the
/// returned directory for reloads.
async fn start(backend: Backend, rules: &str) -> (Harness, tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("risk.toml");
    std::fs::write(&path, rules).unwrap();
    let h = start_configured(backend, |c| c.risk_rules = Some(path.clone())).await;
    (h, dir, path)
}

/// A switch with one enforced rule of `body` (its keys but `mode`).
async fn enforcing(backend: Backend, body: &str) -> (Harness, tempfile::TempDir, PathBuf) {
    start(backend, &rule(body, "enforce")).await
}

async fn wallet(h: &Harness) -> WalletClient {
    WalletClient::connect(
        h.world.switch_addr,
        FramingConfig::default(),
        common::WALLET_ID,
    )
    .await
    .unwrap()
}

fn now(h: &Harness) -> NaiveDateTime {
    h.clock.now()
}

/// Today's settlement date, as the hits are filed under.
fn settlement_day(h: &Harness) -> String {
    h.running
        .switch
        .settlement()
        .date_of(now(h))
        .format("%Y-%m-%d")
        .to_string()
}

/// Both banks' books: (balances, holds) of A and B.
fn books(h: &Harness) -> [(i64, i64, usize); 2] {
    let (a, b) = (h.bank_a.snapshot(), h.bank_b.snapshot());
    [
        (a.total_balance_minor, a.total_held_minor, a.holds.len()),
        (b.total_balance_minor, b.total_held_minor, b.holds.len()),
    ]
}

async fn send(w: &WalletClient, m: &Message) -> String {
    code(&w.send(m).await.unwrap())
}

/// A freeze of `amount` on bank A's card `card`, approved.
async fn frozen(h: &Harness, w: &WalletClient, card: usize, amount: u64) -> Message {
    let f = w.freeze(&h.world.cards_a[card], amount, now(h));
    assert_eq!(send(w, &f).await, "00", "freeze of {amount}");
    f
}

fn rule(kind_and_fields: &str, mode: &str) -> String {
    format!("[[rules]]\nmode = \"{mode}\"\n{kind_and_fields}\n")
}

const FREEZE_AT_MOST_5000: &str =
    "id = \"freeze-max\"\nkind = \"amount\"\nrequest = \"freeze\"\ncurrency = \"156\"\nmax_minor = 5000";

async fn amount_limit(backend: Backend) {
    let (h, _dir, _) = start(backend, &rule(FREEZE_AT_MOST_5000, "enforce")).await;
    let w = wallet(&h).await;
    frozen(&h, &w, 0, 5_000).await;
    let before = books(&h);
    let over = w.freeze(&h.world.cards_a[0], 5_001, now(&h));
    assert_eq!(send(&w, &over).await, "61", "one past the limit");
    // The exact resend gets the stored decline; nothing reached the bank.
    assert_eq!(send(&w, &over).await, "61", "resend");
    assert_eq!(books(&h), before, "a declined freeze holds nothing");
    // Another currency is not this rule's.
    let mut yen = w.freeze(&h.world.cards_a[0], 9_000, now(&h));
    yen.set(iso8583::fields::num::CURRENCY, "392");
    assert_ne!(send(&w, &yen).await, "61");
    assert_eq!(
        h.running.switch.risk().tally().per_rule()["freeze-max"].declined,
        1
    );
}

async fn amount_limit_observed(backend: Backend) {
    let (h, _dir, _) = start(backend, &rule(FREEZE_AT_MOST_5000, "observe")).await;
    let w = wallet(&h).await;
    let before = books(&h);
    frozen(&h, &w, 0, 5_001).await;
    let after = books(&h);
    assert_eq!(
        after[0].1,
        before[0].1 + 5_001,
        "the observed freeze is held"
    );
    let tally = h.running.switch.risk().tally().per_rule()["freeze-max"];
    assert_eq!((tally.declined, tally.observed), (0, 1));
    // Exported for Prometheus (the registry is the process's, shared by the
    // tests running beside this one: at least this hit).
    let text = switchboard::metrics::metrics().encode();
    let observed = text
        .lines()
        .find_map(|l| {
            l.strip_prefix(r#"switchboard_risk_hits_total{rule="freeze-max",mode="observe"} "#)
        })
        .unwrap_or_else(|| panic!("no observed freeze-max hits in\n{text}"));
    assert!(observed.parse::<u64>().unwrap() >= 1, "{observed}");
    let day = settlement_day(&h);
    let report = h.store.hits_of_day(&day).await.unwrap();
    assert_eq!(report.len(), 1, "{report:?}");
    let card = &h.world.cards_a[0];
    assert_eq!(report[0].rule, "freeze-max");
    assert_eq!(report[0].mode, "observe");
    assert_eq!(
        report[0].card,
        format!("{}******{}", &card[..6], &card[card.len() - 4..])
    );
    assert_eq!(report[0].institution, common::WALLET_ID);
    assert_eq!(report[0].hits, 1);
}

async fn block_and_allow_lists(backend: Backend) {
    let (h, _dir, _) = start(backend, "").await;
    let cards_b = &h.world.cards_b;
    let rules = format!(
        "[allow]\ncards = [\"{}\"]\n{}",
        cards_b[1],
        rule(
            "id = \"mules\"\nkind = \"block\"\nrequest = \"receive\"\nbins = [\"621700\"]\nreason = \"mule accounts\"",
            "enforce"
        )
    );
    h.running
        .switch
        .risk()
        .replace(switchboard::risk::Rules::parse(&rules).unwrap());
    let w = wallet(&h).await;
    let f = frozen(&h, &w, 0, 3_000).await;
    let before = books(&h);
    let r = w.receive(&f, &cards_b[0], 1_000, now(&h));
    assert_eq!(send(&w, &r).await, "62", "blocked receiver card");
    assert_eq!(books(&h), before, "nothing debited, credited or released");
    // The allow-listed test card in the same BIN is exempt.
    let r = w.receive(&f, &cards_b[1], 1_000, now(&h));
    assert_eq!(send(&w, &r).await, "00");
    // The declined receive reserved nothing: the rest is all still there.
    let r = w.receive(&f, &h.world.cards_a[1], 2_000, now(&h));
    assert_eq!(send(&w, &r).await, "00", "the remaining 2000 is whole");
    let after = books(&h);
    assert_eq!(
        after[0].0 + after[1].0,
        before[0].0 + before[1].0,
        "money conserved"
    );
    assert_eq!(after[0].1, before[0].1 - 3_000, "the hold is used up");
}

async fn daily_count_restarts_at_the_cutoff(backend: Backend) {
    let (h, _dir, _) = enforcing(backend, "id = \"receiver-daily\"\nkind = \"daily\"\nrequest = \"receive\"\nper = \"card\"\nmax_count = 2").await;
    let settlement = *h.running.switch.settlement();
    let day = settlement.date_of(now(&h));
    let (_, next_day_ms) = settlement.window_ms(day);
    let at = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .naive_utc()
    };
    // Five minutes before the cutoff: the day's last moments.
    h.clock.set(at(next_day_ms - 300_000));
    let w = wallet(&h).await;
    let f = frozen(&h, &w, 0, 10_000).await;
    let receiver = &h.world.cards_b[0];
    for _ in 0..2 {
        let r = w.receive(&f, receiver, 1_000, now(&h));
        assert_eq!(send(&w, &r).await, "00", "within the day's count");
    }
    let before = books(&h);
    let r = w.receive(&f, receiver, 1_000, now(&h));
    assert_eq!(send(&w, &r).await, "65", "one past the day's count");
    assert_eq!(books(&h), before, "the declined receive moved nothing");
    // Another card is counted apart.
    let r = w.receive(&f, &h.world.cards_b[1], 1_000, now(&h));
    assert_eq!(send(&w, &r).await, "00");
    // Past the cutoff the count starts again.
    h.clock.set(at(next_day_ms + 1_000));
    let r = w.receive(&f, receiver, 1_000, now(&h));
    assert_eq!(send(&w, &r).await, "00", "a new settlement day");
    let after = h.bank_b.snapshot();
    assert_eq!(
        after.account(receiver).unwrap().balance_minor,
        1_000_000 + 3 * 1_000,
        "the receiver got exactly the three approved receives"
    );
}

/// A receive's exact resend is answered its 00 again and is not counted a
/// second time: a card allowed one receive a day still takes the resend,
/// and only another receive is declined.
async fn a_resend_is_answered_again_and_not_counted(backend: Backend) {
    let (h, _dir, _) = enforcing(backend, "id = \"receiver-daily\"\nkind = \"daily\"\nrequest = \"receive\"\nper = \"card\"\nmax_count = 1").await;
    let w = wallet(&h).await;
    let f = frozen(&h, &w, 0, 10_000).await;
    let receiver = &h.world.cards_b[0];
    let r = w.receive(&f, receiver, 1_000, now(&h));
    assert_eq!(send(&w, &r).await, "00");
    let before = books(&h);
    for _ in 0..2 {
        assert_eq!(send(&w, &r).await, "00", "the exact resend");
    }
    assert_eq!(books(&h), before, "a resend moves nothing");
    let again = w.receive(&f, receiver, 1_000, now(&h));
    assert_eq!(send(&w, &again).await, "65", "one past the day's count");
    assert_eq!(books(&h), before, "the declined receive moved nothing");
    assert_eq!(
        h.bank_b.snapshot().account(receiver).unwrap().balance_minor,
        1_000_000 + 1_000,
        "the receiver got the one receive once"
    );
    assert_eq!(
        h.running.switch.risk().tally().per_rule()["receiver-daily"].declined,
        1
    );
}

async fn daily_sum_per_wallet(backend: Backend) {
    let (h, _dir, _) = enforcing(backend, "id = \"wallet-daily\"\nkind = \"daily\"\nrequest = \"freeze\"\nper = \"wallet\"\nmax_sum_minor = 5000").await;
    let w = wallet(&h).await;
    frozen(&h, &w, 0, 3_000).await;
    frozen(&h, &w, 1, 2_000).await;
    let before = books(&h);
    let f = w.freeze(&h.world.cards_a[2], 1, now(&h));
    assert_eq!(
        send(&w, &f).await,
        "61",
        "one minor unit past the wallet's day"
    );
    assert_eq!(books(&h), before);
}

async fn velocity(backend: Backend, mode: Mode) {
    let (h, _dir, _) = start(
        backend,
        &rule(
            "id = \"freeze-burst\"\nkind = \"velocity\"\nrequest = \"freeze\"\nmax_count = 2\nwindow_seconds = 60",
            mode.as_str(),
        ),
    )
    .await;
    let w = wallet(&h).await;
    frozen(&h, &w, 0, 100).await;
    frozen(&h, &w, 0, 100).await;
    let before = books(&h);
    let third = w.freeze(&h.world.cards_a[0], 100, now(&h));
    match mode {
        Mode::Enforce => {
            assert_eq!(send(&w, &third).await, "65");
            assert_eq!(books(&h), before);
        }
        Mode::Observe => assert_eq!(send(&w, &third).await, "00"),
    }
    // A window later the card may freeze again.
    h.clock.advance(chrono::Duration::seconds(61));
    frozen(&h, &w, 0, 100).await;
    let tally = h.running.switch.risk().tally().per_rule()["freeze-burst"];
    assert_eq!(tally.declined + tally.observed, 1);
}

async fn velocity_enforced(backend: Backend) {
    velocity(backend, Mode::Enforce).await
}

async fn velocity_observed(backend: Backend) {
    velocity(backend, Mode::Observe).await
}

async fn packets_per_card(backend: Backend) {
    let (h, _dir, _) = enforcing(backend, "id = \"collector\"\nkind = \"velocity\"\nrequest = \"receive\"\ncount = \"packets\"\nmax_count = 2\nwindow_seconds = 600").await;
    let w = wallet(&h).await;
    let receiver = &h.world.cards_b[0];
    let packets = [
        frozen(&h, &w, 0, 500).await,
        frozen(&h, &w, 1, 500).await,
        frozen(&h, &w, 2, 500).await,
    ];
    // Two receives from the first packet count as one packet.
    for p in [&packets[0], &packets[0], &packets[1]] {
        let r = w.receive(p, receiver, 100, now(&h));
        assert_eq!(send(&w, &r).await, "00", "within two packets");
    }
    let before = books(&h);
    let r = w.receive(&packets[2], receiver, 100, now(&h));
    assert_eq!(send(&w, &r).await, "65", "a third packet in the window");
    assert_eq!(books(&h), before);
    // Another receive from a packet already counted still passes.
    let r = w.receive(&packets[1], receiver, 100, now(&h));
    assert_eq!(send(&w, &r).await, "00");
}

async fn probing(backend: Backend) {
    let (h, _dir, _) = enforcing(
        backend,
        "id = \"probing\"\nkind = \"probing\"\nmax_count = 1",
    )
    .await;
    let w = wallet(&h).await;
    // Frozen and given back untouched, once: at the limit.
    let f = frozen(&h, &w, 0, 700).await;
    assert_eq!(send(&w, &w.unfreeze(&f, 700, now(&h))).await, "00");
    // A packet received from and then closed is no probe.
    let f = frozen(&h, &w, 1, 700).await;
    let r = w.receive(&f, &h.world.cards_b[0], 100, now(&h));
    assert_eq!(send(&w, &r).await, "00");
    assert_eq!(send(&w, &w.unfreeze(&f, 600, now(&h))).await, "00");
    frozen(&h, &w, 1, 700).await;
    // The prober's next freeze is refused: no new hold at the bank (the
    // unfreeze notices above reach it in the background, so held amounts
    // may still change).
    let holds = |h: &Harness| h.bank_a.snapshot().holds.len();
    let before = holds(&h);
    let next = w.freeze(&h.world.cards_a[0], 700, now(&h));
    assert_eq!(send(&w, &next).await, "65");
    assert_eq!(holds(&h), before);
}

async fn shares(backend: Backend) {
    let (h, _dir, _) = enforcing(
        backend,
        "id = \"shares\"\nkind = \"shares\"\nmax_shares = 2\nmin_share_minor = 100",
    )
    .await;
    let w = wallet(&h).await;
    let f = frozen(&h, &w, 0, 1_000).await;
    let before = books(&h);
    let small = w.receive(&f, &h.world.cards_b[0], 99, now(&h));
    assert_eq!(send(&w, &small).await, "57", "below the minimum share");
    assert_eq!(books(&h), before);
    for card in 0..2 {
        let r = w.receive(&f, &h.world.cards_b[card], 100, now(&h));
        assert_eq!(send(&w, &r).await, "00", "share {card}");
    }
    let mid = books(&h);
    let third = w.receive(&f, &h.world.cards_b[2], 100, now(&h));
    assert_eq!(
        send(&w, &third).await,
        "57",
        "a third share of a 2-share packet"
    );
    assert_eq!(books(&h), mid);
    // The packet's remainder is untouched by the declines: 800 to unfreeze.
    assert_eq!(send(&w, &w.unfreeze(&f, 800, now(&h))).await, "00");
}

async fn reload_changes_the_next_decision(backend: Backend) {
    let (h, _dir, path) = start(backend, "").await;
    let w = wallet(&h).await;
    frozen(&h, &w, 0, 6_000).await;
    std::fs::write(&path, rule(FREEZE_AT_MOST_5000, "enforce")).unwrap();
    assert_eq!(h.running.switch.risk().reload(), Ok(1));
    let f = w.freeze(&h.world.cards_a[0], 6_000, now(&h));
    assert_eq!(
        send(&w, &f).await,
        "61",
        "the next request meets the new rule"
    );
    // A bad file is refused with the reason, and the rule stays in force.
    std::fs::write(&path, "[[rules]]\nid = \"x\"\nkind = \"amount\"\n").unwrap();
    let refused = h.running.switch.risk().reload().unwrap_err();
    assert_eq!(refused.at, "line 1", "{refused}");
    assert!(refused.reason.contains("mode"), "{refused}");
    let f = w.freeze(&h.world.cards_a[0], 6_001, now(&h));
    assert_eq!(send(&w, &f).await, "61", "the old rules stay");
}

/// Every kind in observe mode at once, each matched one past its limit:
/// nothing is declined, money moves as without rules, and each rule counts
/// what it would have declined.
async fn every_kind_observed(backend: Backend) {
    let observe = |body: &str| rule(body, "observe");
    let rules = [
        observe("id = \"block\"\nkind = \"block\"\nrequest = \"receive\"\nbins = [\"621700\"]\nreason = \"test\""),
        observe("id = \"daily\"\nkind = \"daily\"\nrequest = \"receive\"\nmax_count = 1"),
        observe("id = \"shares\"\nkind = \"shares\"\nmax_shares = 1"),
        observe("id = \"probing\"\nkind = \"probing\"\nmax_count = 1"),
    ]
    .concat();
    let (h, _dir, _) = start(backend, &rules).await;
    let w = wallet(&h).await;
    let f = frozen(&h, &w, 0, 1_000).await;
    let receiver = &h.world.cards_b[0];
    let before = h.bank_b.snapshot().account(receiver).unwrap().balance_minor;
    for _ in 0..2 {
        let r = w.receive(&f, receiver, 100, now(&h));
        assert_eq!(send(&w, &r).await, "00", "observed, not declined");
    }
    let after = h.bank_b.snapshot().account(receiver).unwrap().balance_minor;
    assert_eq!(after, before + 200, "both receives paid");
    let probe = frozen(&h, &w, 1, 100).await;
    assert_eq!(send(&w, &w.unfreeze(&probe, 100, now(&h))).await, "00");
    frozen(&h, &w, 1, 100).await;
    let tally = h.running.switch.risk().tally();
    let per_rule = tally.per_rule();
    // Block: both receives; daily and shares: the second; probing: the
    // freeze after the untouched packet.
    let observed: Vec<(&str, u64)> = ["block", "daily", "shares", "probing"]
        .into_iter()
        .map(|id| (id, per_rule.get(id).map_or(0, |t| t.observed)))
        .collect();
    assert_eq!(
        observed,
        [("block", 2), ("daily", 1), ("shares", 1), ("probing", 1)]
    );
    assert_eq!(tally.declined.load(std::sync::atomic::Ordering::Relaxed), 0);
}

macro_rules! on_both_stores {
    ($($name:ident => $body:expr;)*) => {
        mod embedded {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { let backend = Backend::Embedded; $body(backend).await; })*
        }
        mod postgres {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { let backend = Backend::Postgres; $body(backend).await; })*
        }
    };
}

on_both_stores! {
    amount_limit_declines_one_past_it_with_61 => amount_limit;
    amount_limit_observed_passes_and_is_reported => amount_limit_observed;
    block_list_declines_62_and_the_allow_list_exempts => block_and_allow_lists;
    daily_count_per_card_restarts_at_the_cutoff => daily_count_restarts_at_the_cutoff;
    daily_sum_per_wallet_declines_61 => daily_sum_per_wallet;
    a_receive_resent_is_answered_again_and_not_counted => a_resend_is_answered_again_and_not_counted;
    velocity_enforced_declines_65 => velocity_enforced;
    velocity_observed_passes => velocity_observed;
    probing_refuses_the_next_freeze_with_65 => probing;
    a_card_receiving_from_too_many_packets_gets_65 => packets_per_card;
    shares_below_the_minimum_and_past_the_count_get_57 => shares;
    a_reload_changes_decisions_from_the_next_request_on => reload_changes_the_next_decision;
    every_kind_observed_declines_nothing_and_counts_its_hits => every_kind_observed;
}

/// Two switch instances on one PostgreSQL database, each with its own
/// banks (the same cards), freezing one card at once: exactly the day's
/// limit is approved between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_racing_a_card_at_its_limit_get_exactly_the_limit() {
    const LIMIT: usize = 5;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("risk.toml");
    std::fs::write(
        &path,
        rule(
            &format!(
                "id = \"card-daily\"\nkind = \"daily\"\nrequest = \"freeze\"\nmax_count = {LIMIT}"
            ),
            "enforce",
        ),
    )
    .unwrap();
    let first = start_configured(Backend::Postgres, |c| c.risk_rules = Some(path.clone())).await;
    let url = first.postgres_url.clone().unwrap();
    let second = start_configured(Backend::Embedded, |c| {
        c.store = StoreConfig::Postgres(url.clone());
        c.risk_rules = Some(path.clone());
    })
    .await;
    let card = first.world.cards_a[0].clone();
    let mut sends = Vec::new();
    for (i, h) in [&first, &second]
        .into_iter()
        .cycle()
        .take(4 * LIMIT)
        .enumerate()
    {
        let w = Arc::new(wallet(h).await);
        let f = w.freeze(&card, 100 + i as u64, now(h));
        sends.push(tokio::spawn(
            async move { code(&w.send(&f).await.unwrap()) },
        ));
    }
    let mut approved = 0;
    let mut declined = 0;
    for s in sends {
        match s.await.unwrap().as_str() {
            "00" => approved += 1,
            "65" => declined += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((approved, declined), (LIMIT, 3 * LIMIT));
    let holds = first.bank_a.snapshot().holds.len() + second.bank_a.snapshot().holds.len();
    assert_eq!(holds, LIMIT, "only the approved freezes hold money");
}

/// `switchboard risk report` prints the day's hits with the card masked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_lists_the_days_hits_masked() {
    let (h, dir, _) = start(Backend::Embedded, &rule(FREEZE_AT_MOST_5000, "enforce")).await;
    let w = wallet(&h).await;
    for _ in 0..2 {
        let f = w.freeze(&h.world.cards_a[0], 9_000, now(&h));
        assert_eq!(send(&w, &f).await, "61");
    }
    let config = write_report_config(dir.path(), &h.dir.path().join("switchboard.db"));
    let day = settlement_day(&h);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["risk", "report", "--config"])
        .arg(&config)
        .args(["--date", &day])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let card = &h.world.cards_a[0];
    assert!(
        text.contains("2 risk rule hit(s) (2 enforced, 0 observed)"),
        "{text}"
    );
    assert!(text.contains("freeze-max"), "{text}");
    assert!(
        text.contains(&format!("{}******{}", &card[..6], &card[card.len() - 4..])),
        "{text}"
    );
    assert!(
        !text.contains(card.as_str()),
        "a full card number printed: {text}"
    );
}

fn write_report_config(dir: &Path, db: &Path) -> PathBuf {
    let path = dir.join("switchboard.toml");
    std::fs::write(
        &path,
        format!(
            "[switch]\ninstitution_id = \"{}\"\n[store]\npath = \"{}\"\n\
             [[wallets]]\nlisten = \"127.0.0.1:0\"\n\
             [[banks]]\ninstitution_id = \"{}\"\nbins = [\"622202\"]\nhosts = [\"127.0.0.1:1\"]\n",
            common::SWITCH_ID,
            db.display(),
            common::BANK_A
        ),
    )
    .unwrap();
    path
}

/// `switchboard serve` reloads its rules file on SIGHUP: the next request
/// meets the new rules; a bad file is refused with the reason in the log
/// and the rules in force stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reloads_its_rules_on_sighup_and_keeps_them_when_the_file_is_bad() {
    use common::process::{
        addr, free_port, read_log, serve_logged, stop, write_config, SwitchFile,
    };
    use simulators::bank_server::spawn_bank;

    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (common::books_a(), common::books_b());
    let card = a.accounts()[0].0.clone();
    let bank_a = spawn_bank(a, FramingConfig::default()).await.unwrap();
    let bank_b = spawn_bank(b, FramingConfig::default()).await.unwrap();
    let port = free_port();
    let config = write_config(
        dir.path(),
        SwitchFile {
            name: "switchboard.toml",
            store: "path = \"switch.db\"",
            wallet_port: port,
            bank_a: bank_a.addr,
            bank_b: bank_b.addr,
            timeout_ms: 5_000,
            max_backoff_ms: 1_000,
        },
    );
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("[risk]\nrules_file = \"risk.toml\"\n");
    std::fs::write(&config, text).unwrap();
    let rules = dir.path().join("risk.toml");
    std::fs::write(&rules, "").unwrap();
    let log = dir.path().join("serve.log");
    let switch = serve_logged(&config, &log, "info");
    let w = WalletClient::connect(addr(port), FramingConfig::default(), common::WALLET_ID)
        .await
        .unwrap();
    let clock = switchboard::clock::SystemClock;
    let freeze = |amount| w.freeze(&card, amount, clock.now());
    assert_eq!(send(&w, &freeze(6_000)).await, "00", "no rules yet");

    // Sends SIGHUP and waits for the log line that says what became of it.
    let hangup = |expect: &'static str| {
        let before = read_log(&log).matches(expect).count();
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(switch.id() as i32, libc::SIGHUP) };
        for _ in 0..500 {
            if read_log(&log).matches(expect).count() > before {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("no {expect:?} in the log:\n{}", read_log(&log));
    };
    std::fs::write(&rules, rule(FREEZE_AT_MOST_5000, "enforce")).unwrap();
    hangup("risk rules reloaded");
    assert_eq!(
        send(&w, &freeze(6_000)).await,
        "61",
        "the new rule declines"
    );

    std::fs::write(&rules, "[[rules]]\nid = \"x\"\nkind = \"amount\"\nmode = \"enforce\"\nrequest = \"freeze\"\nmax_minor = 1\n").unwrap();
    hangup("risk rules file refused");
    let logged = read_log(&log);
    assert!(logged.contains("rules[0].currency"), "{logged}");
    assert!(
        logged.contains("an amount rule needs a currency"),
        "{logged}"
    );
    assert_eq!(send(&w, &freeze(6_000)).await, "61", "the old rules stay");
    assert_eq!(send(&w, &freeze(5_000)).await, "00");
    stop(switch);
}

/// The demo's mule scenario under its rule: nine payers, one receiver
/// card, at most six packets; the last three receives declined 65, every
/// packet's money where the invariants say, and the hits name the rule and
/// the masked card.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mule_collects_from_no_more_packets_than_the_rule_allows() {
    let (h, _dir, _) = enforcing(
        Backend::Embedded,
        "id = \"mule\"\nkind = \"velocity\"\nrequest = \"receive\"\ncount = \"packets\"\nmax_count = 6\nwindow_seconds = 600",
    )
    .await;
    let mule = h.world.cards_b[11].clone();
    let report = simulators::scenarios::mule(&h.world, &mule, &h.world.cards_a[3..], 6).await;
    common::assert_passed(&report);
    assert!(
        report
            .lines
            .iter()
            .any(|l| l.contains(r#"{"00": 6, "65": 3}"#)),
        "{report:?}"
    );
    let day = settlement_day(&h);
    let hits = h.store.hits_of_day(&day).await.unwrap();
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(
        (hits[0].rule.as_str(), hits[0].code.as_str()),
        ("mule", "65")
    );
    assert_eq!(hits[0].hits, 3);
    assert_eq!(
        hits[0].card,
        format!("{}******{}", &mule[..6], &mule[mule.len() - 4..])
    );
}

//! The red-packet scenarios, run by a wallet against any switch, each checking
//! the money invariants (README, *Money invariants*) against the banks' own ledgers (and the
//! switch's store when it is at hand), not only response codes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Duration as ChronoDuration;
use futures::future::join_all;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use iso8583::codec::Message;
use iso8583::fields::num;
use iso8583::framing::FramingConfig;
use iso8583::mask::mask_pan;
use iso8583::response::ResponseCode;
use switchboard::clock::{Clock, ShiftedClock};
use switchboard::dialect::FreezeKey;
use switchboard::store::{FreezeState, Store};

use super::bank::{Bank, Ledger};
use super::wallet::{code, WalletClient};

/// Where a bank's books can be read.
#[derive(Clone)]
pub enum BankView {
    /// A bank in this process.
    Local(Arc<Mutex<Bank>>),
    /// A `banksim` with an admin port.
    Admin(SocketAddr),
}

impl BankView {
    pub async fn snapshot(&self) -> Result<Ledger, String> {
        match self {
            BankView::Local(bank) => Ok(bank.lock().map_err(|_| "bank lock poisoned")?.snapshot()),
            BankView::Admin(addr) => {
                let stream = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|e| format!("admin {addr}: {e}"))?;
                let (read, mut write) = stream.into_split();
                write
                    .write_all(b"snapshot\n")
                    .await
                    .map_err(|e| e.to_string())?;
                let mut line = String::new();
                BufReader::new(read)
                    .read_line(&mut line)
                    .await
                    .map_err(|e| e.to_string())?;
                serde_json::from_str(&line).map_err(|e| format!("admin {addr}: {e}"))
            }
        }
    }
}

/// What the scenarios run against.
pub struct World {
    pub switch_addr: SocketAddr,
    pub framing: FramingConfig,
    /// F32 the wallet sends as.
    pub institution: String,
    /// Payer bank (holds the senders' cards) and another bank.
    pub bank_a: BankView,
    pub bank_b: BankView,
    /// Cards at bank A and at bank B, with enough balance for the scenarios.
    pub cards_a: Vec<String>,
    pub cards_b: Vec<String>,
    /// The clock wallets stamp F7 with; movable when the switch shares it.
    pub clock: Arc<dyn Clock>,
    /// Set when the switch runs on `clock` in this process: enables the
    /// later-day scenario.
    pub movable_clock: Option<Arc<ShiftedClock>>,
    /// The switch's store, when it is at hand, for checking its side too.
    pub store: Option<Arc<dyn Store>>,
    /// Where the wallet keeps its own records of every exchange, if it does.
    pub records: Option<Arc<crate::wallet::WalletRecords>>,
    /// The link's MACs, when the switch's wallet listener requires them.
    pub mac: Option<Arc<switchboard::mac::LinkMac>>,
}

/// The outcome of one scenario.
#[derive(Debug, Default)]
pub struct Report {
    pub name: String,
    /// What happened, for people.
    pub lines: Vec<String>,
    /// Invariants that did not hold; empty when the scenario passed.
    pub failures: Vec<String>,
    pub skipped: bool,
}

impl Report {
    fn new(name: &str) -> Report {
        Report {
            name: name.to_string(),
            ..Report::default()
        }
    }
    fn say(&mut self, line: impl Into<String>) {
        self.lines.push(line.into());
    }
    fn check(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.failures.push(what.into());
        }
    }
    fn expect_code(
        &mut self,
        what: &str,
        response: &Result<Message, String>,
        want: ResponseCode,
    ) -> bool {
        match response {
            Ok(r) => {
                let got = code(r);
                self.say(format!("{what}: {got}"));
                self.check(got == want, format!("{what}: expected {want}, got {got}"));
                got == want
            }
            Err(e) => {
                self.say(format!("{what}: no answer ({e})"));
                self.failures.push(format!("{what}: no answer: {e}"));
                false
            }
        }
    }
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Balances of both banks, to compare before and after.
struct Books {
    a: Ledger,
    b: Ledger,
}

impl Books {
    fn balance(&self, pan: &str) -> i64 {
        self.a
            .balance(pan)
            .or_else(|| self.b.balance(pan))
            .unwrap_or(0)
    }
    fn total(&self) -> i64 {
        self.a.total_balance_minor + self.b.total_balance_minor
    }
}

fn yuan(minor: i64) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", minor.abs() / 100, minor.abs() % 100)
}

impl World {
    async fn connect(&self) -> Result<WalletClient, String> {
        WalletClient::connect(self.switch_addr, self.framing.clone(), &self.institution)
            .await
            .map(|c| {
                c.with_timeout(Duration::from_secs(20))
                    .with_records(self.records.clone())
                    .with_mac(self.mac.clone())
            })
            .map_err(|e| format!("connect {}: {e}", self.switch_addr))
    }

    async fn books(&self) -> Result<Books, String> {
        Ok(Books {
            a: self.bank_a.snapshot().await?,
            b: self.bank_b.snapshot().await?,
        })
    }

    async fn send(&self, wallet: &WalletClient, msg: &Message) -> Result<Message, String> {
        wallet.send(msg).await.map_err(|e| e.to_string())
    }

    /// Checks invariants 1–4 for one packet: Σ approved ≤ frozen; the payer
    /// paid exactly Σ approved and each receiver got exactly their share (one
    /// debit, one credit each); money is conserved; the hold left at the payer
    /// bank is frozen − Σ approved, or zero once unfrozen; the switch agrees.
    #[allow(clippy::too_many_arguments)]
    async fn check_packet(
        &self,
        report: &mut Report,
        before: &Books,
        freeze: &Message,
        frozen: u64,
        approved: &[(String, u64)],
        unfrozen: bool,
    ) {
        let payer = freeze.get_str(num::PAN).unwrap_or_default().to_string();
        let key = match FreezeKey::of_request(freeze) {
            Ok(k) => k,
            Err(e) => return report.failures.push(e.to_string()),
        };
        let total: u64 = approved.iter().map(|(_, a)| a).sum();
        report.check(
            total <= frozen,
            format!("received {total} > frozen {frozen}"),
        );
        // The unfreeze notice reaches the bank after the wallet's answer: wait for it.
        let mut after = None;
        for _ in 0..100 {
            match self.books().await {
                Ok(books) => {
                    let settled = books
                        .a
                        .hold(&key)
                        .map(|h| !unfrozen || h.remaining_minor == 0)
                        .unwrap_or(true);
                    after = Some(books);
                    if settled {
                        break;
                    }
                }
                Err(e) => return report.failures.push(e),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let Some(after) = after else { return };
        let mut received: BTreeMap<&str, i64> = BTreeMap::new();
        for (pan, amount) in approved {
            *received.entry(pan).or_default() += *amount as i64;
        }
        let payer_delta = after.balance(&payer) - before.balance(&payer);
        let payer_receives = received.get(payer.as_str()).copied().unwrap_or(0);
        report.check(
            payer_delta == payer_receives - total as i64,
            format!(
                "payer {} moved {} but {} was received",
                mask_pan(&payer),
                yuan(payer_delta),
                yuan(total as i64)
            ),
        );
        for (pan, amount) in &received {
            if *pan == payer {
                continue;
            }
            let delta = after.balance(pan) - before.balance(pan);
            report.check(
                delta == *amount,
                format!(
                    "receiver {} got {} instead of {}",
                    mask_pan(pan),
                    yuan(delta),
                    yuan(*amount)
                ),
            );
        }
        report.check(
            after.total() == before.total(),
            format!(
                "money not conserved: {} before, {} after",
                yuan(before.total()),
                yuan(after.total())
            ),
        );
        let remaining = after.a.hold(&key).map(|h| h.remaining_minor).unwrap_or(0);
        let expected = if unfrozen { 0 } else { frozen - total };
        report.check(
            remaining == expected,
            format!(
                "hold at payer bank is {} but should be {}",
                yuan(remaining as i64),
                yuan(expected as i64)
            ),
        );
        report.say(format!(
            "payer {} {} -> {}; received {} of {}; hold left {}",
            mask_pan(&payer),
            yuan(before.balance(&payer)),
            yuan(after.balance(&payer)),
            yuan(total as i64),
            yuan(frozen as i64),
            yuan(remaining as i64)
        ));
        if let Some(store) = &self.store {
            match store.freeze(&key).await {
                Ok(Some(f)) => {
                    report.check(
                        f.received_minor == total && f.reserved_minor == 0,
                        format!(
                            "switch records received {} reserved {} for Σ approved {}",
                            f.received_minor, f.reserved_minor, total
                        ),
                    );
                    report.check(
                        !unfrozen || f.state == FreezeState::Closed,
                        format!("switch freeze state {:?} after unfreeze", f.state),
                    );
                }
                Ok(None) => report
                    .failures
                    .push("switch has no record of the freeze".into()),
                Err(e) => report.failures.push(e.to_string()),
            }
        }
    }
}

/// Every scenario, in order.
pub async fn run_all(world: &World) -> Vec<Report> {
    vec![
        one_to_one(world).await,
        one_to_many(world, 10, 30).await,
        over_receive(world).await,
        receive_after_unfreeze(world).await,
        unknown_original(world).await,
        exact_resend(world).await,
        later_day(world).await,
        same_bank(world).await,
        expiry(world).await,
    ]
}

macro_rules! try_or_fail {
    ($report:ident, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => {
                $report.failures.push(e.to_string());
                return $report;
            }
        }
    };
}

/// One sender, one receiver at another bank, the whole amount.
pub async fn one_to_one(w: &World) -> Report {
    let mut r = Report::new("one-to-one packet");
    let wallet = try_or_fail!(r, w.connect().await);
    let before = try_or_fail!(r, w.books().await);
    let freeze = wallet.freeze(&w.cards_a[0], 8_800, w.clock.now());
    let sent = w.send(&wallet, &freeze).await;
    if !r.expect_code("freeze 88.00", &sent, ResponseCode::APPROVED) {
        return r;
    }
    let receive = wallet.receive(&freeze, &w.cards_b[0], 8_800, w.clock.now());
    let got = w.send(&wallet, &receive).await;
    let ok = r.expect_code("receive 88.00 at bank B", &got, ResponseCode::APPROVED);
    let unfreeze = wallet.unfreeze(&freeze, 0, w.clock.now());
    r.expect_code(
        "unfreeze remainder 0.00",
        &w.send(&wallet, &unfreeze).await,
        ResponseCode::APPROVED,
    );
    let approved = if ok {
        vec![(w.cards_b[0].clone(), 8_800)]
    } else {
        vec![]
    };
    w.check_packet(&mut r, &before, &freeze, 8_800, &approved, true)
        .await;
    r
}

/// One packet of `shares` equal shares grabbed concurrently by `grabbers`
/// receivers: exactly `shares` succeed, the rest get 61.
pub async fn one_to_many(w: &World, shares: u64, grabbers: usize) -> Report {
    let mut r = Report::new(&format!(
        "one-to-many: {shares} shares, {grabbers} concurrent receivers"
    ));
    let wallet = try_or_fail!(r, w.connect().await);
    let before = try_or_fail!(r, w.books().await);
    let share = 500;
    let frozen = share * shares;
    let freeze = wallet.freeze(&w.cards_a[1], frozen, w.clock.now());
    if !r.expect_code(
        &format!("freeze {}", yuan(frozen as i64)),
        &w.send(&wallet, &freeze).await,
        ResponseCode::APPROVED,
    ) {
        return r;
    }
    let mut connections = Vec::new();
    for _ in 0..grabbers.clamp(1, 8) {
        connections.push(try_or_fail!(r, w.connect().await));
    }
    let receivers: Vec<String> = (0..grabbers)
        .map(|i| {
            let cards = if i % 2 == 0 {
                &w.cards_b
            } else {
                &w.cards_a[2..]
            };
            cards[i / 2 % cards.len()].clone()
        })
        .collect();
    let attempts = receivers.iter().enumerate().map(|(i, pan)| {
        let client = &connections[i % connections.len()];
        let msg = client.receive(&freeze, pan, share, w.clock.now());
        async move { (pan.clone(), client.send(&msg).await) }
    });
    let results = join_all(attempts).await;
    let mut approved = Vec::new();
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    for (pan, result) in results {
        let c = match &result {
            Ok(m) => code(m),
            Err(e) => format!("no answer ({e})"),
        };
        if c == ResponseCode::APPROVED {
            approved.push((pan, share));
        }
        *codes.entry(c).or_default() += 1;
    }
    r.say(format!("answers: {codes:?}"));
    r.check(
        approved.len() as u64 == shares,
        format!("{} approved, expected exactly {shares}", approved.len()),
    );
    r.check(
        codes
            .keys()
            .all(|c| *c == ResponseCode::APPROVED || *c == ResponseCode::EXCEEDS_AMOUNT_LIMIT),
        format!("answers other than 00 and 61: {codes:?}"),
    );
    let unfreeze = wallet.unfreeze(
        &freeze,
        frozen - share * approved.len() as u64,
        w.clock.now(),
    );
    r.expect_code(
        "unfreeze remainder",
        &w.send(&wallet, &unfreeze).await,
        ResponseCode::APPROVED,
    );
    w.check_packet(&mut r, &before, &freeze, frozen, &approved, true)
        .await;
    r
}

/// A receive that would pass the frozen amount gets 61 and moves nothing.
pub async fn over_receive(w: &World) -> Report {
    let mut r = Report::new("over-receive");
    let wallet = try_or_fail!(r, w.connect().await);
    let before = try_or_fail!(r, w.books().await);
    let freeze = wallet.freeze(&w.cards_a[0], 5_000, w.clock.now());
    if !r.expect_code(
        "freeze 50.00",
        &w.send(&wallet, &freeze).await,
        ResponseCode::APPROVED,
    ) {
        return r;
    }
    let first = wallet.receive(&freeze, &w.cards_b[1], 3_000, w.clock.now());
    let ok = r.expect_code(
        "receive 30.00",
        &w.send(&wallet, &first).await,
        ResponseCode::APPROVED,
    );
    let second = wallet.receive(&freeze, &w.cards_b[2], 3_000, w.clock.now());
    r.expect_code(
        "receive another 30.00 (over the frozen 50.00)",
        &w.send(&wallet, &second).await,
        ResponseCode::EXCEEDS_AMOUNT_LIMIT,
    );
    let approved = if ok {
        vec![(w.cards_b[1].clone(), 3_000)]
    } else {
        vec![]
    };
    let unfreeze = wallet.unfreeze(&freeze, 2_000, w.clock.now());
    r.expect_code(
        "unfreeze remainder 20.00",
        &w.send(&wallet, &unfreeze).await,
        ResponseCode::APPROVED,
    );
    w.check_packet(&mut r, &before, &freeze, 5_000, &approved, true)
        .await;
    r
}

/// After the unfreeze, receives get 12.
pub async fn receive_after_unfreeze(w: &World) -> Report {
    let mut r = Report::new("receive after unfreeze");
    let wallet = try_or_fail!(r, w.connect().await);
    let before = try_or_fail!(r, w.books().await);
    let freeze = wallet.freeze(&w.cards_a[1], 5_000, w.clock.now());
    if !r.expect_code(
        "freeze 50.00",
        &w.send(&wallet, &freeze).await,
        ResponseCode::APPROVED,
    ) {
        return r;
    }
    let unfreeze = wallet.unfreeze(&freeze, 5_000, w.clock.now());
    r.expect_code(
        "unfreeze 50.00",
        &w.send(&wallet, &unfreeze).await,
        ResponseCode::APPROVED,
    );
    let receive = wallet.receive(&freeze, &w.cards_b[0], 1_000, w.clock.now());
    r.expect_code(
        "receive 10.00 after unfreeze",
        &w.send(&wallet, &receive).await,
        ResponseCode::INVALID_TRANSACTION,
    );
    w.check_packet(&mut r, &before, &freeze, 5_000, &[], true)
        .await;
    r
}

/// A receive naming a freeze that never happened gets 25.
pub async fn unknown_original(w: &World) -> Report {
    let mut r = Report::new("unknown original");
    let wallet = try_or_fail!(r, w.connect().await);
    let before = try_or_fail!(r, w.books().await);
    // A freeze built but never sent.
    let never_sent = wallet.freeze(&w.cards_a[0], 1_000, w.clock.now());
    let receive = wallet.receive(&never_sent, &w.cards_b[0], 1_000, w.clock.now());
    r.expect_code(
        "receive naming an unknown freeze",
        &w.send(&wallet, &receive).await,
        ResponseCode::UNABLE_TO_LOCATE_RECORD,
    );
    let after = try_or_fail!(r, w.books().await);
    r.check(
        after.a.total_balance_minor == before.a.total_balance_minor
            && after.b.total_balance_minor == before.b.total_balance_minor,
        "money moved for an unknown original",
    );
    r
}

/// An exact resend gets the same answer and moves money once; the same key
/// with other content gets 94.
pub async fn exact_resend(w: &World) -> Report {
    let mut r = Report::new("exact resend");
    let wallet = try_or_fail!(r, w.connect().await);
    let before = try_or_fail!(r, w.books().await);
    let freeze = wallet.freeze(&w.cards_a[0], 6_000, w.clock.now());
    if !r.expect_code(
        "freeze 60.00",
        &w.send(&wallet, &freeze).await,
        ResponseCode::APPROVED,
    ) {
        return r;
    }
    let resent_freeze = w.send(&wallet, &freeze).await;
    r.expect_code(
        "the same freeze again",
        &resent_freeze,
        ResponseCode::APPROVED,
    );
    let receive = wallet.receive(&freeze, &w.cards_b[1], 2_000, w.clock.now());
    let first = w.send(&wallet, &receive).await;
    let ok = r.expect_code("receive 20.00", &first, ResponseCode::APPROVED);
    let again = w.send(&wallet, &receive).await;
    r.expect_code("the same receive again", &again, ResponseCode::APPROVED);
    if let (Ok(a), Ok(b)) = (&first, &again) {
        r.check(a == b, "the resend's answer differs from the first answer");
    }
    let mut altered = receive.clone();
    altered.set(num::AMOUNT, "000000003000");
    r.expect_code(
        "same key, amount 30.00",
        &w.send(&wallet, &altered).await,
        ResponseCode::DUPLICATE_TRANSMISSION,
    );
    let approved = if ok {
        vec![(w.cards_b[1].clone(), 2_000)]
    } else {
        vec![]
    };
    let unfreeze = wallet.unfreeze(&freeze, 4_000, w.clock.now());
    r.expect_code(
        "unfreeze remainder 40.00",
        &w.send(&wallet, &unfreeze).await,
        ResponseCode::APPROVED,
    );
    let mut repeat = unfreeze.clone();
    repeat.set_mti(*b"0121");
    r.expect_code(
        "unfreeze repeated as 0121",
        &w.send(&wallet, &repeat).await,
        ResponseCode::APPROVED,
    );
    w.check_packet(&mut r, &before, &freeze, 6_000, &approved, true)
        .await;
    r
}

/// A packet frozen before midnight and received the next day.
pub async fn later_day(w: &World) -> Report {
    let mut r = Report::new("receive on a later day");
    let Some(clock) = &w.movable_clock else {
        r.skipped = true;
        r.say("skipped: needs a switch whose clock this process can move");
        return r;
    };
    let wallet = try_or_fail!(r, w.connect().await);
    let before = try_or_fail!(r, w.books().await);
    // 23:59:50 in Shanghai (UTC+8), then ten seconds and a day later.
    let now = clock.now();
    let evening = now.date().and_hms_opt(15, 59, 50).unwrap_or(now);
    clock.set(evening);
    let freeze = wallet.freeze(&w.cards_a[1], 7_000, w.clock.now());
    r.say(format!("clock set to {evening} UTC (23:59:50 in Shanghai)"));
    if !r.expect_code(
        "freeze 70.00",
        &w.send(&wallet, &freeze).await,
        ResponseCode::APPROVED,
    ) {
        return r;
    }
    clock.advance(ChronoDuration::days(1) + ChronoDuration::seconds(20));
    r.say(format!(
        "clock moved to {} UTC",
        clock.now().format("%Y-%m-%d %H:%M:%S")
    ));
    let receive = wallet.receive(&freeze, &w.cards_b[2], 7_000, w.clock.now());
    let got = w.send(&wallet, &receive).await;
    let ok = r.expect_code("receive 70.00 the next day", &got, ResponseCode::APPROVED);
    if let Ok(resp) = &got {
        let f15 = resp
            .get_str(num::SETTLEMENT_DATE)
            .unwrap_or("-")
            .to_string();
        r.say(format!("settlement date F15 {f15}"));
    }
    let unfreeze = wallet.unfreeze(&freeze, 0, w.clock.now());
    r.expect_code(
        "unfreeze remainder 0.00",
        &w.send(&wallet, &unfreeze).await,
        ResponseCode::APPROVED,
    );
    let approved = if ok {
        vec![(w.cards_b[2].clone(), 7_000)]
    } else {
        vec![]
    };
    w.check_packet(&mut r, &before, &freeze, 7_000, &approved, true)
        .await;
    r
}

/// Payer and receiver at the same bank.
pub async fn same_bank(w: &World) -> Report {
    let mut r = Report::new("payer and receiver at the same bank");
    let wallet = try_or_fail!(r, w.connect().await);
    let before = try_or_fail!(r, w.books().await);
    let freeze = wallet.freeze(&w.cards_a[0], 3_000, w.clock.now());
    if !r.expect_code(
        "freeze 30.00",
        &w.send(&wallet, &freeze).await,
        ResponseCode::APPROVED,
    ) {
        return r;
    }
    let receiver = w.cards_a[2].clone();
    let receive = wallet.receive(&freeze, &receiver, 3_000, w.clock.now());
    let ok = r.expect_code(
        "receive 30.00 at bank A",
        &w.send(&wallet, &receive).await,
        ResponseCode::APPROVED,
    );
    let unfreeze = wallet.unfreeze(&freeze, 0, w.clock.now());
    r.expect_code(
        "unfreeze remainder 0.00",
        &w.send(&wallet, &unfreeze).await,
        ResponseCode::APPROVED,
    );
    let approved = if ok { vec![(receiver, 3_000)] } else { vec![] };
    w.check_packet(&mut r, &before, &freeze, 3_000, &approved, true)
        .await;
    r
}

/// Expiry: part received, the rest unfrozen; a wrong remainder is refused (13).
pub async fn expiry(w: &World) -> Report {
    let mut r = Report::new("expiry with unfreeze of the remainder");
    let wallet = try_or_fail!(r, w.connect().await);
    let before = try_or_fail!(r, w.books().await);
    let freeze = wallet.freeze(&w.cards_a[1], 10_000, w.clock.now());
    if !r.expect_code(
        "freeze 100.00",
        &w.send(&wallet, &freeze).await,
        ResponseCode::APPROVED,
    ) {
        return r;
    }
    let receive = wallet.receive(&freeze, &w.cards_b[0], 3_000, w.clock.now());
    let ok = r.expect_code(
        "receive 30.00",
        &w.send(&wallet, &receive).await,
        ResponseCode::APPROVED,
    );
    let wrong = wallet.unfreeze(&freeze, 10_000, w.clock.now());
    r.expect_code(
        "unfreeze 100.00 (not what remains)",
        &w.send(&wallet, &wrong).await,
        ResponseCode::INVALID_AMOUNT,
    );
    let unfreeze = wallet.unfreeze(&freeze, 7_000, w.clock.now());
    r.expect_code(
        "unfreeze remainder 70.00",
        &w.send(&wallet, &unfreeze).await,
        ResponseCode::APPROVED,
    );
    let approved = if ok {
        vec![(w.cards_b[0].clone(), 3_000)]
    } else {
        vec![]
    };
    w.check_packet(&mut r, &before, &freeze, 10_000, &approved, true)
        .await;
    r
}

/// A mule: one packet from each of `payers`, every one received whole by
/// the same card `mule`, under a risk rule in force that lets a card
/// collect from at most `limit` distinct packets (the switch's rules file
/// is the caller's, so this is not among [`run_all`]). The first `limit`
/// receives are approved; the rest are declined 65 before anything reaches
/// a bank: no saga, no money moved. Every packet is then unfrozen and its
/// remainder released, as a wallet does.
pub async fn mule(w: &World, mule: &str, payers: &[String], limit: usize) -> Report {
    let mut r = Report::new(&format!(
        "mule: {} packets received by one card, a rule allows {limit}",
        payers.len()
    ));
    let wallet = try_or_fail!(r, w.connect().await);
    let start = try_or_fail!(r, w.books().await);
    let share = 1_200;
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    for (i, payer) in payers.iter().enumerate() {
        let before = try_or_fail!(r, w.books().await);
        let freeze = wallet.freeze(payer, share, w.clock.now());
        let frozen = w.send(&wallet, &freeze).await;
        if !frozen
            .as_ref()
            .is_ok_and(|m| code(m) == ResponseCode::APPROVED)
        {
            r.expect_code("freeze 12.00", &frozen, ResponseCode::APPROVED);
            return r;
        }
        let receive = wallet.receive(&freeze, mule, share, w.clock.now());
        let got = match w.send(&wallet, &receive).await {
            Ok(m) => code(&m),
            Err(e) => format!("no answer ({e})"),
        };
        *codes.entry(got.clone()).or_default() += 1;
        let want = if i < limit { "00" } else { "65" };
        r.check(
            got == want,
            format!(
                "receive {} of packet {}: expected {want}, got {got}",
                i + 1,
                i + 1
            ),
        );
        if got != ResponseCode::APPROVED {
            // Declined by the rule before the reservation: no saga was begun.
            if let (Some(store), Some(key)) = (&w.store, switchboard::switch::request_key(&receive))
            {
                match store.saga(&key).await {
                    Ok(None) => {}
                    Ok(Some(s)) => r.failures.push(format!(
                        "declined receive {} has a saga ({})",
                        i + 1,
                        s.state.as_str()
                    )),
                    Err(e) => r.failures.push(e.to_string()),
                }
            }
        }
        let approved = if got == ResponseCode::APPROVED {
            vec![(mule.to_string(), share)]
        } else {
            Vec::new()
        };
        let remainder = share - approved.iter().map(|(_, a)| a).sum::<u64>();
        let unfreeze = wallet.unfreeze(&freeze, remainder, w.clock.now());
        let unfrozen = match w.send(&wallet, &unfreeze).await {
            Ok(m) => code(&m),
            Err(e) => format!("no answer ({e})"),
        };
        r.check(
            unfrozen == ResponseCode::APPROVED,
            format!("unfreeze of packet {}: {unfrozen}", i + 1),
        );
        r.say(format!(
            "packet {}: freeze 12.00: 00, receive by the mule: {got}, unfreeze remainder {}: {unfrozen}",
            i + 1,
            yuan(remainder as i64)
        ));
        w.check_packet(&mut r, &before, &freeze, share, &approved, true)
            .await;
    }
    r.say(format!("receives: {codes:?}"));
    let end = try_or_fail!(r, w.books().await);
    let collected = end.balance(mule) - start.balance(mule);
    let allowed = (limit.min(payers.len()) as u64 * share) as i64;
    r.check(
        collected == allowed,
        format!(
            "the mule {} collected {} instead of {}",
            mask_pan(mule),
            yuan(collected),
            yuan(allowed)
        ),
    );
    r.say(format!(
        "mule {} collected {} from {} packets; the rest stayed with their payers",
        mask_pan(mule),
        yuan(collected),
        limit.min(payers.len())
    ));
    r
}

//! Clearing a busy day from the embedded store.
//!
//! ```sh
//! cargo bench --bench clearing              # 1,000,000 receives
//! cargo bench --bench clearing -- 100000    # another number of receives
//! ```
//!
//! The day is generated straight into a SQLite file (not through the
//! network), as the switch would have left it: for every receive the six
//! journal entries of its messages (in packs, as the store writes them) (the wallet's request and its answer, the
//! debit and the credit and the banks' answers, raw bytes included) and its
//! saga (ended, in packs of 256, about what the store's pruning writes); one freeze per ten receives with its four journal entries, its
//! unfreeze (two entries) and the unfreeze notice's delivered store-and-forward
//! entry. One receive in a hundred has its credit declined and its debit
//! reversed. The file is kept under `target/clearing-bench/` and reused.
//! Then the day is cleared once, timed, and its files written.

// As in the switchboard binary, whose `clear` command this measures.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use chrono::NaiveDate;
use iso8583::codec::{build_bytes, Message};
use iso8583::fields::{format_amount, format_transmission, num};
use iso8583::{ResponseCode, Spec};
use rusqlite::{params, Connection};
use simulators::bank::luhn_check_digit;
use switchboard::clearing::clear::{clear_day, ClearRequest};
use switchboard::clearing::Settlement;
use switchboard::dialect::{FreezeKey, InstitutionId, OriginalData};
use switchboard::store::sqlite::{write_ended_sagas, write_journal, EndedSaga, SqliteStore};
use switchboard::store::{
    Direction, JournalEntry, RequestKey, SagaRecord, SagaState, SentMessage, StoredAnswer,
};

const SWITCH: &str = "00010000";
const WALLET: &str = "01020000";
const BANK_A: &str = "48020000";
const BANK_B: &str = "01050000";
const SHARES: usize = 10;

fn card(bin: &str, n: usize) -> String {
    let body = format!("{bin}{:09}", n % 1_000_000_000);
    format!("{body}{}", luhn_check_digit(body.as_bytes()) as char)
}

struct Row<'a> {
    at_ms: i64,
    out: bool,
    peer: &'a str,
    msg: &'a Message,
}

/// Journals messages as the switch does, written in packs of a commit's size.
struct Writer<'c> {
    spec: Spec,
    conn: &'c Connection,
    pending: Vec<JournalEntry>,
    rows: u64,
}

impl Writer<'_> {
    fn row(&mut self, r: Row<'_>) {
        let raw = build_bytes(&self.spec, r.msg).expect("message builds");
        let direction = if r.out { Direction::Out } else { Direction::In };
        self.pending.push(JournalEntry::of(
            direction, r.peer, r.msg, raw, r.at_ms, None,
        ));
        self.rows += 1;
        if self.pending.len() == 600 {
            self.flush();
        }
    }

    fn flush(&mut self) {
        write_journal(self.conn, &self.pending).expect("journal written");
        self.pending.clear();
    }
}

fn request(
    mti: &[u8; 4],
    pc: &str,
    pan: &str,
    amount: u64,
    f7: &str,
    stan: &str,
    acquirer: &str,
) -> Message {
    let mut m = Message::new(*mti);
    m.set(num::PAN, pan.to_string())
        .set(num::PROCESSING_CODE, pc.to_string())
        .set(num::AMOUNT, format_amount(amount).unwrap())
        .set(num::TRANSMISSION, f7.to_string())
        .set(num::STAN, stan.to_string())
        .set(num::ACQUIRER, acquirer.to_string())
        .set(num::RRN, format!("{}{stan}", &f7[2..8]))
        .set(num::CURRENCY, "156");
    m
}

fn answer(request: &Message, code: ResponseCode) -> Message {
    let mut mti = *request.mti();
    mti[2] += 1;
    let mut m = Message::new(mti);
    for n in [2u16, 3, 4, 7, 11, 32, 33, 37, 49, 90] {
        if let Some(v) = request.get_bytes(n) {
            m.set(n, v);
        }
    }
    m.set(num::RESPONSE_CODE, code);
    m
}

fn f90(mti: &[u8; 4], stan: &str, f7: &str, acquirer: &str, forwarder: &str) -> Bytes {
    let id = |s: &str| InstitutionId::from_field(32, s.as_bytes()).unwrap();
    Bytes::copy_from_slice(
        &OriginalData {
            mti: *mti,
            stan: stan.as_bytes().try_into().unwrap(),
            transmission: f7.as_bytes().try_into().unwrap(),
            acquirer: id(acquirer),
            forwarder: if forwarder.is_empty() {
                InstitutionId::ZERO
            } else {
                id(forwarder)
            },
        }
        .to_bytes(),
    )
}

/// Writes the day into a new store file.
fn generate(path: &PathBuf, date: NaiveDate, receives: usize) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        SqliteStore::open(path).unwrap().close().await.unwrap();
    });
    let conn = Connection::open(path).unwrap();
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF;")
        .unwrap();
    let settlement = Settlement::default();
    let (from, to) = settlement.window_ms(date);
    let step = (to - from) / (receives as i64 + 1);
    // A transaction per 100,000 receives (below): the WAL is checkpointed
    // between them, so a day of ten million needs room for the file alone,
    // not for the file and a WAL as large.
    conn.execute_batch("BEGIN").unwrap();
    let tx = &conn;
    {
        let mut w = Writer {
            spec: Spec::switchboard(),
            conn: tx,
            pending: Vec::new(),
            rows: 0,
        };
        let mut freeze_row = tx
            .prepare(
                "INSERT INTO freezes (acquirer, transmission, stan, payer_pan, payer_bank, \
                 amount_minor, currency, received_minor, reserved_minor, state, created_at_ms, \
                 request_digest) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 156, ?7, 0, 'closed', ?8, ?9)",
            )
            .unwrap();
        // Ended sagas, written 256 at a time as the store's pruning does.
        let mut ended: Vec<EndedSaga> = Vec::with_capacity(256);
        let wallet_id = InstitutionId::from_field(32, WALLET.as_bytes()).unwrap();
        let digits = |text: &str| -> Vec<u8> { text.as_bytes().to_vec() };
        let mut saf_row = tx
            .prepare(
                "INSERT INTO saf (bank, order_key, kind, message, created_at_ms, state, \
                 attempts, next_attempt_ms, last_result) VALUES (?1, ?2, ?3, ?4, ?5, 'done', 1, \
                 ?5, '00')",
            )
            .unwrap();
        let wallet11 = InstitutionId::from_field(32, WALLET.as_bytes())
            .unwrap()
            .to_string();
        let (mut wallet_stan, mut switch_stan) = (0u32, 0u32);
        fn next(counter: &mut u32) -> String {
            *counter = *counter % 999_999 + 1;
            format!("{:06}", *counter)
        }
        let wallet_peer = "wallet 127.0.0.1:40000";
        let (peer_a, peer_b) = (format!("bank {BANK_A}"), format!("bank {BANK_B}"));
        let mut freeze = None;
        for i in 0..receives {
            let at = from + step * (i as i64 + 1);
            let f7 = format_transmission(
                chrono::DateTime::from_timestamp_millis(at)
                    .unwrap()
                    .naive_utc(),
            );
            let share = 1_000 + (i % 7) as u64 * 100;
            if i % SHARES == 0 {
                // A freeze of ten shares: wallet in, forwarded, answered, answered.
                let stan = next(&mut wallet_stan);
                let payer = card("622202", i / SHARES);
                let amount = share * SHARES as u64 * 2;
                let req = request(b"0100", "030000", &payer, amount, &f7, &stan, WALLET);
                w.row(Row {
                    at_ms: at,
                    out: false,
                    peer: wallet_peer,
                    msg: &req,
                });
                let mut fwd = req.clone();
                fwd.set(num::FORWARDER, SWITCH);
                w.row(Row {
                    at_ms: at,
                    out: true,
                    peer: &peer_a,
                    msg: &fwd,
                });
                w.row(Row {
                    at_ms: at,
                    out: false,
                    peer: &peer_a,
                    msg: &answer(&fwd, ResponseCode::APPROVED),
                });
                w.row(Row {
                    at_ms: at,
                    out: true,
                    peer: wallet_peer,
                    msg: &answer(&req, ResponseCode::APPROVED),
                });
                freeze_row
                    .execute(params![
                        wallet11,
                        f7,
                        stan,
                        payer,
                        BANK_A,
                        amount as i64,
                        0i64,
                        at,
                        &[0u8; 32][..]
                    ])
                    .unwrap();
                freeze = Some((f7.clone(), stan, payer, amount));
            }
            let (ff7, fstan, payer, _) = freeze.clone().unwrap();
            let receiver = card("621700", i);
            let stan = next(&mut wallet_stan);
            let mut recv = request(b"0200", "400000", &receiver, share, &f7, &stan, WALLET);
            recv.set(num::ORIGINAL_DATA, f90(b"0100", &fstan, &ff7, WALLET, ""));
            w.row(Row {
                at_ms: at,
                out: false,
                peer: wallet_peer,
                msg: &recv,
            });
            let (dstan, cstan) = (next(&mut switch_stan), next(&mut switch_stan));
            let mut debit = request(b"0200", "000000", &payer, share, &f7, &dstan, SWITCH);
            debit
                .set(num::FORWARDER, SWITCH)
                .set(
                    num::ORIGINAL_DATA,
                    f90(b"0100", &fstan, &ff7, WALLET, SWITCH),
                )
                .set(num::ACCOUNT_2, receiver.clone());
            w.row(Row {
                at_ms: at,
                out: true,
                peer: &peer_a,
                msg: &debit,
            });
            w.row(Row {
                at_ms: at + 1,
                out: false,
                peer: &peer_a,
                msg: &answer(&debit, ResponseCode::APPROVED),
            });
            let declined = i % 100 == 99;
            let mut credit = request(b"0200", "260000", &receiver, share, &f7, &cstan, SWITCH);
            credit
                .set(num::FORWARDER, SWITCH)
                .set(
                    num::ORIGINAL_DATA,
                    f90(b"0100", &fstan, &ff7, WALLET, SWITCH),
                )
                .set(num::ACCOUNT_1, payer.clone());
            w.row(Row {
                at_ms: at + 1,
                out: true,
                peer: &peer_b,
                msg: &credit,
            });
            let code = if declined {
                ResponseCode::INVALID_CARD_NUMBER
            } else {
                ResponseCode::APPROVED
            };
            w.row(Row {
                at_ms: at + 2,
                out: false,
                peer: &peer_b,
                msg: &answer(&credit, code),
            });
            let answered = answer(&recv, code);
            w.row(Row {
                at_ms: at + 2,
                out: true,
                peer: wallet_peer,
                msg: &answered,
            });
            if declined {
                let rstan = next(&mut switch_stan);
                let mut reversal = request(b"0420", "000000", &payer, share, &f7, &rstan, SWITCH);
                reversal.set(num::FORWARDER, SWITCH).set(
                    num::ORIGINAL_DATA,
                    f90(b"0200", &dstan, &f7, SWITCH, SWITCH),
                );
                let bytes = build_bytes(&w.spec, &reversal).unwrap();
                saf_row
                    .execute(params![
                        BANK_A,
                        format!("{wallet11}/{ff7}/{fstan}"),
                        "reversal",
                        &bytes[..],
                        at + 2
                    ])
                    .unwrap();
                w.row(Row {
                    at_ms: at + 3,
                    out: true,
                    peer: &peer_a,
                    msg: &reversal,
                });
                w.row(Row {
                    at_ms: at + 4,
                    out: false,
                    peer: &peer_a,
                    msg: &answer(&reversal, ResponseCode::APPROVED),
                });
            }
            let f7_digits: [u8; 10] = digits(&f7).try_into().unwrap();
            let sent = |stan: &str| SentMessage {
                stan: digits(stan).try_into().unwrap(),
                transmission: f7_digits,
            };
            ended.push(EndedSaga {
                record: SagaRecord {
                    request: RequestKey {
                        mti: *b"0200",
                        acquirer: wallet_id,
                        transmission: f7_digits,
                        stan: digits(&stan).try_into().unwrap(),
                    },
                    freeze: FreezeKey {
                        acquirer: wallet_id,
                        transmission: digits(&ff7).try_into().unwrap(),
                        stan: digits(&fstan).try_into().unwrap(),
                    },
                    amount_minor: share,
                    receiver_pan: receiver.clone(),
                    receiver_bank: BANK_B.to_string(),
                    state: if declined {
                        SagaState::Failed
                    } else {
                        SagaState::Approved
                    },
                    debit: Some(sent(&dstan)),
                    credit: Some(sent(&cstan)),
                    reversal: None,
                    response_code: Some(code.as_str().to_string()),
                    created_at_ms: at,
                    request_digest: [0; 32],
                },
                answer: StoredAnswer {
                    request_digest: [0; 32],
                    response: build_bytes(&w.spec, &answered).unwrap(),
                },
            });
            if ended.len() == 256 {
                write_ended_sagas(tx, &ended).unwrap();
                ended.clear();
            }
            if i % SHARES == SHARES - 1 {
                // The packet expires: the wallet's unfreeze and the notice to the bank.
                let ustan = next(&mut wallet_stan);
                let (_, _, _, amount) = freeze.clone().unwrap();
                let mut unfreeze =
                    request(b"0120", "200000", &payer, amount / 2, &f7, &ustan, WALLET);
                unfreeze.set(num::ORIGINAL_DATA, f90(b"0100", &fstan, &ff7, WALLET, ""));
                w.row(Row {
                    at_ms: at + 5,
                    out: false,
                    peer: wallet_peer,
                    msg: &unfreeze,
                });
                w.row(Row {
                    at_ms: at + 5,
                    out: true,
                    peer: wallet_peer,
                    msg: &answer(&unfreeze, ResponseCode::APPROVED),
                });
                let nstan = next(&mut switch_stan);
                let mut notice =
                    request(b"0120", "200000", &payer, amount / 2, &f7, &nstan, SWITCH);
                notice.set(num::FORWARDER, SWITCH).set(
                    num::ORIGINAL_DATA,
                    f90(b"0100", &fstan, &ff7, WALLET, SWITCH),
                );
                let bytes = build_bytes(&w.spec, &notice).unwrap();
                saf_row
                    .execute(params![
                        BANK_A,
                        format!("{wallet11}/{ff7}/{fstan}"),
                        "unfreeze",
                        &bytes[..],
                        at + 5
                    ])
                    .unwrap();
                w.row(Row {
                    at_ms: at + 6,
                    out: true,
                    peer: &peer_a,
                    msg: &notice,
                });
                w.row(Row {
                    at_ms: at + 7,
                    out: false,
                    peer: &peer_a,
                    msg: &answer(&notice, ResponseCode::APPROVED),
                });
            }
            if i % 100_000 == 99_999 {
                tx.execute_batch("COMMIT; BEGIN").unwrap();
                eprintln!("  generated {} receives, {} journal entries", i + 1, w.rows);
            }
        }
        write_ended_sagas(tx, &ended).unwrap();
        w.flush();
        eprintln!("  {} journal entries", w.rows);
    }
    tx.execute_batch("COMMIT").unwrap();
}

fn main() {
    let receives: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let date = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/clearing-bench");
    std::fs::create_dir_all(&dir).unwrap();
    // Named by the journal's and the sagas' form: a file of an older form
    // is not reused.
    let path = dir.join(format!("day-{receives}-saga-packs.db"));
    if !path.exists() {
        eprintln!("generating {receives} receives into {}", path.display());
        let started = Instant::now();
        let tmp = dir.join(format!("day-{receives}.db.tmp"));
        let _ = std::fs::remove_file(&tmp);
        generate(&tmp, date, receives);
        std::fs::rename(&tmp, &path).unwrap();
        let _ = std::fs::remove_file(dir.join(format!("day-{receives}.db.tmp-wal")));
        let _ = std::fs::remove_file(dir.join(format!("day-{receives}.db.tmp-shm")));
        eprintln!("  generated in {:.1} s", started.elapsed().as_secs_f64());
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = Arc::new(SqliteStore::open(&path).unwrap());
        let request = ClearRequest {
            date,
            settlement: Settlement::default(),
            switch_id: SWITCH.into(),
            banks: vec![BANK_A.into(), BANK_B.into()],
            wallets: vec![WALLET.into()],
            allow_pending: false,
        };
        let started = Instant::now();
        let cleared = clear_day(store.as_ref(), &Spec::switchboard(), &request)
            .await
            .expect("the day clears");
        let cleared_in = started.elapsed();
        let out = dir.join(format!("out-{receives}"));
        let files = cleared.write(&out).unwrap();
        let total = started.elapsed();
        let lines = cleared.bank_line_count() + cleared.wallet_line_count();
        assert!(cleared.balanced(), "net positions do not sum to zero");
        println!(
            "clearing {receives} receives ({} bank lines, {lines} lines in all): \
             cleared in {:.2} s, {} files written in {:.2} s total",
            cleared.bank_line_count(),
            cleared_in.as_secs_f64(),
            files.len(),
            total.as_secs_f64()
        );
        for p in &cleared.positions {
            println!("  bank {} net {}", p.bank, p.net);
        }
    });
}

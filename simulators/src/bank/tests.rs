//! The bank's books: freezes, debits, credits, unfreezes and reversals
//! against accounts and holds, idempotency, and what it refuses.

use chrono::NaiveDate;

use super::*;

const WALLET: &str = "48020000";
const SWITCH: &str = "00010000";
const BANK: &str = "01020000";

fn now() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2026, 3, 5)
        .unwrap()
        .and_hms_opt(10, 0, 0)
        .unwrap()
}

fn card(payload: &str) -> String {
    let mut pan = payload.to_string();
    pan.push(luhn_check_digit(payload.as_bytes()) as char);
    pan
}

fn sender() -> String {
    card("622202000000001")
}

fn recipient() -> String {
    card("622848000000000002")
}

fn bank() -> Bank {
    let mut bank = Bank::new(BANK);
    bank.add_account(&sender(), 100_000);
    bank.add_account(&recipient(), 5_000);
    bank
}

fn amount(a: u64) -> String {
    format!("{a:012}")
}

fn common(mti: &[u8; 4], pc: &str, pan: &str, a: u64, stan: &str) -> Message {
    let mut m = Message::new(*mti);
    m.set(2, pan.to_string())
        .set(3, pc.to_string())
        .set(4, amount(a))
        .set(7, "0305093000")
        .set(11, stan.to_string())
        .set(12, "173000")
        .set(13, "0305")
        .set(37, format!("RRN{stan}000"))
        .set(49, "156")
        .set(100, BANK);
    m
}

/// The wallet's freeze as the switch forwards it.
fn freeze(pan: &str, a: u64, stan: &str) -> Message {
    let mut m = common(b"0100", "030000", pan, a, stan);
    m.set(25, "06").set(32, WALLET).set(33, SWITCH);
    m
}

fn debit(pan: &str, a: u64, stan: &str, of: &Message) -> Message {
    let mut m = common(b"0200", "000000", pan, a, stan);
    m.set(7, "0305094500")
        .set(25, "06")
        .set(32, SWITCH)
        .set(33, SWITCH)
        .set(90, OriginalData::naming(of).unwrap().to_bytes().to_vec())
        .set(103, recipient());
    m
}

fn credit(pan: &str, a: u64, stan: &str) -> Message {
    let mut m = common(b"0200", "260000", pan, a, stan);
    m.set(7, "0305094600")
        .set(25, "00")
        .set(32, SWITCH)
        .set(33, SWITCH)
        .set(102, sender());
    m
}

fn unfreeze(pan: &str, a: u64, stan: &str, of: &Message) -> Message {
    let mut m = common(b"0120", "200000", pan, a, stan);
    m.set(7, "0305100000")
        .set(25, "06")
        .set(32, SWITCH)
        .set(33, SWITCH)
        .set(90, OriginalData::naming(of).unwrap().to_bytes().to_vec());
    m
}

fn reversal(of: &Message, stan: &str) -> Message {
    let mut m = Message::new(*b"0420");
    for f in [2, 3, 4, 25, 37, 49] {
        m.set(f, of.get_bytes(f).unwrap());
    }
    m.set(7, "0305095900")
        .set(11, stan.to_string())
        .set(32, SWITCH)
        .set(33, SWITCH)
        .set(90, OriginalData::naming(of).unwrap().to_bytes().to_vec());
    m
}

fn sign_on(stan: &str) -> Message {
    let mut m = Message::new(*b"0800");
    m.set(7, "0305090000")
        .set(11, stan.to_string())
        .set(32, SWITCH)
        .set(70, "001");
    m
}

/// Sends a request, checks the response is well-formed for the dialect and
/// the books still add up, and returns the response.
fn send(bank: &mut Bank, request: &Message) -> Message {
    let response = bank.handle(request, now()).expect("an answer");
    let validation = validate(bank.spec(), &response);
    assert!(
        validation.is_valid(),
        "response {} is not valid: {:?}",
        response.mti_str(),
        validation.violations
    );
    bank.check_invariants();
    response
}

fn rc(response: &Message) -> ResponseCode {
    ResponseCode::of(response).unwrap()
}

fn key(m: &Message) -> FreezeKey {
    FreezeKey::of_request(m).unwrap()
}

#[test]
fn freeze_places_a_hold_and_answers_0110_with_an_auth_code() {
    let mut bank = bank();
    let f = freeze(&sender(), 30_000, "000001");
    let r = send(&mut bank, &f);
    assert_eq!(r.mti(), b"0110");
    assert_eq!(rc(&r), ResponseCode::APPROVED);
    assert_eq!(r.get_str(38).map(str::len), Some(6));
    for field in [2, 3, 4, 7, 11, 32, 33, 37, 49, 100] {
        assert_eq!(r.get(field), f.get(field), "field {field} echoed");
    }
    assert!(!r.has(15), "only financial responses carry F15");
    let hold = bank.hold(&key(&f)).unwrap();
    assert_eq!(
        (hold.amount_minor, hold.remaining_minor, hold.state),
        (30_000, 30_000, HoldState::Open)
    );
    assert_eq!(bank.balance(&sender()), Some(100_000));
    assert_eq!(bank.held(&sender()), Some(30_000));
}

#[test]
fn freeze_declines_unknown_card_insufficient_funds_and_zero() {
    let mut bank = bank();
    let r = send(&mut bank, &freeze(&card("411111111111111"), 1, "000001"));
    assert_eq!(rc(&r), ResponseCode::INVALID_CARD_NUMBER);
    assert!(!r.has(38), "no auth code on a decline");
    // Holds count against what a new freeze can take.
    assert_eq!(
        rc(&send(&mut bank, &freeze(&sender(), 60_000, "000002"))),
        ResponseCode::APPROVED
    );
    assert_eq!(
        rc(&send(&mut bank, &freeze(&sender(), 40_001, "000003"))),
        ResponseCode::INSUFFICIENT_FUNDS
    );
    assert_eq!(
        rc(&send(&mut bank, &freeze(&sender(), 40_000, "000004"))),
        ResponseCode::APPROVED
    );
    assert_eq!(
        rc(&send(&mut bank, &freeze(&sender(), 0, "000005"))),
        ResponseCode::INVALID_AMOUNT
    );
    assert_eq!(bank.held(&sender()), Some(100_000));
    assert_eq!(bank.balance(&sender()), Some(100_000));
}

#[test]
fn debit_takes_from_the_hold_and_the_balance() {
    let mut bank = bank();
    let f = freeze(&sender(), 30_000, "000001");
    send(&mut bank, &f);
    let d = debit(&sender(), 10_000, "100001", &f);
    let r = send(&mut bank, &d);
    assert_eq!(r.mti(), b"0210");
    assert_eq!(rc(&r), ResponseCode::APPROVED);
    assert_eq!(r.get_str(15), Some("0305"));
    assert_eq!(r.get_str(38).map(str::len), Some(6));
    assert_eq!(r.get(90), d.get(90));
    assert!(!r.has(103), "F103 is not echoed");
    assert_eq!(bank.balance(&sender()), Some(90_000));
    assert_eq!(bank.hold(&key(&f)).unwrap().remaining_minor, 20_000);
    assert_eq!(bank.held(&sender()), Some(20_000));
    // The rest, exactly.
    let r = send(&mut bank, &debit(&sender(), 20_000, "100002", &f));
    assert_eq!(rc(&r), ResponseCode::APPROVED);
    let hold = bank.hold(&key(&f)).unwrap();
    assert_eq!((hold.remaining_minor, hold.state), (0, HoldState::Used));
    assert_eq!(bank.balance(&sender()), Some(70_000));
}

#[test]
fn debit_declines_no_hold_wrong_card_and_beyond_the_hold() {
    let mut bank = bank();
    let f = freeze(&sender(), 30_000, "000001");
    let never_sent = freeze(&sender(), 30_000, "000999");
    send(&mut bank, &f);
    let r = send(&mut bank, &debit(&sender(), 1, "100001", &never_sent));
    assert_eq!(rc(&r), ResponseCode::UNABLE_TO_LOCATE_RECORD);
    assert_eq!(r.get_str(15), Some("0305"), "0210 always carries F15");
    assert!(!r.has(38));
    assert_eq!(
        rc(&send(&mut bank, &debit(&recipient(), 1, "100002", &f))),
        ResponseCode::INVALID_CARD_NUMBER
    );
    assert_eq!(
        rc(&send(&mut bank, &debit(&sender(), 30_001, "100003", &f))),
        ResponseCode::EXCEEDS_AMOUNT_LIMIT
    );
    assert_eq!(
        rc(&send(&mut bank, &debit(&sender(), 0, "100004", &f))),
        ResponseCode::INVALID_AMOUNT
    );
    assert_eq!(bank.balance(&sender()), Some(100_000));
    assert_eq!(bank.hold(&key(&f)).unwrap().remaining_minor, 30_000);
}

#[test]
fn credit_adds_to_a_known_card_only() {
    let mut bank = bank();
    let r = send(&mut bank, &credit(&recipient(), 2_500, "200001"));
    assert_eq!((r.mti(), rc(&r)), (b"0210", ResponseCode::APPROVED));
    assert_eq!(r.get_str(15), Some("0305"));
    assert!(r.has(38));
    assert_eq!(bank.balance(&recipient()), Some(7_500));
    let r = send(
        &mut bank,
        &credit(&card("411111111111111"), 2_500, "200002"),
    );
    assert_eq!(rc(&r), ResponseCode::INVALID_CARD_NUMBER);
    assert_eq!(bank.total_balance_minor(), 107_500);
}

#[test]
fn unfreeze_releases_at_most_what_remains_and_may_come_in_parts() {
    let mut bank = bank();
    let f = freeze(&sender(), 30_000, "000001");
    send(&mut bank, &f);
    send(&mut bank, &debit(&sender(), 5_000, "100001", &f));
    // A partial release: the hold stays usable.
    let r = send(&mut bank, &unfreeze(&sender(), 10_000, "300001", &f));
    assert_eq!((r.mti(), rc(&r)), (b"0130", ResponseCode::APPROVED));
    assert!(!r.has(38) && !r.has(15));
    let hold = bank.hold(&key(&f)).unwrap();
    assert_eq!(
        (hold.remaining_minor, hold.state),
        (15_000, HoldState::Open)
    );
    assert_eq!(
        rc(&send(&mut bank, &debit(&sender(), 5_000, "100002", &f))),
        ResponseCode::APPROVED
    );
    // More than remains: releases the rest.
    let r = send(&mut bank, &unfreeze(&sender(), 99_999, "300002", &f));
    assert_eq!(rc(&r), ResponseCode::APPROVED);
    let hold = bank.hold(&key(&f)).unwrap();
    assert_eq!((hold.remaining_minor, hold.state), (0, HoldState::Released));
    assert_eq!(bank.held(&sender()), Some(0));
    assert_eq!(bank.balance(&sender()), Some(90_000));
    assert_eq!(
        rc(&send(&mut bank, &debit(&sender(), 1, "100003", &f))),
        ResponseCode::EXCEEDS_AMOUNT_LIMIT
    );
    let never_sent = freeze(&sender(), 1, "000999");
    assert_eq!(
        rc(&send(
            &mut bank,
            &unfreeze(&sender(), 1, "300003", &never_sent)
        )),
        ResponseCode::UNABLE_TO_LOCATE_RECORD
    );
    assert_eq!(
        rc(&send(&mut bank, &unfreeze(&recipient(), 1, "300004", &f))),
        ResponseCode::INVALID_CARD_NUMBER
    );
    let journal = bank.journal();
    let released: Vec<u64> = journal
        .iter()
        .filter(|m| m.kind == MovementKind::Unfreeze)
        .map(|m| m.applied_minor)
        .collect();
    assert_eq!(released, vec![10_000, 10_000, 0, 0]);
}

#[test]
fn exact_resend_gets_the_same_answer_without_moving_money() {
    let mut bank = bank();
    let f = freeze(&sender(), 30_000, "000001");
    let first = send(&mut bank, &f);
    let again = send(&mut bank, &f);
    assert_eq!(first, again, "same auth code too");
    assert_eq!(bank.held(&sender()), Some(30_000));

    let d = debit(&sender(), 10_000, "100001", &f);
    let first = send(&mut bank, &d);
    assert_eq!(send(&mut bank, &d), first);
    assert_eq!(bank.balance(&sender()), Some(90_000));

    // A declined request is answered the same way again too.
    let over = debit(&sender(), 99_000, "100002", &f);
    assert_eq!(
        rc(&send(&mut bank, &over)),
        ResponseCode::EXCEEDS_AMOUNT_LIMIT
    );
    assert_eq!(
        rc(&send(&mut bank, &over)),
        ResponseCode::EXCEEDS_AMOUNT_LIMIT
    );

    // 0121 repeats 0120: same answer, released once.
    let u = unfreeze(&sender(), 5_000, "300001", &f);
    let first = send(&mut bank, &u);
    let mut repeat = u.clone();
    repeat.set_mti(*b"0121");
    assert_eq!(send(&mut bank, &repeat), first);
    assert_eq!(bank.hold(&key(&f)).unwrap().remaining_minor, 15_000);
    assert_eq!(bank.journal().len(), 4, "resends are not journaled");
}

#[test]
fn a_resend_on_a_later_day_gets_the_answer_of_the_day_it_was_decided() {
    let mut bank = bank();
    let f = freeze(&sender(), 30_000, "000001");
    send(&mut bank, &f);
    let d = debit(&sender(), 10_000, "100001", &f);
    let first = send(&mut bank, &d);
    assert_eq!(first.get_str(15), Some("0305"));
    let code = first.get_str(38).expect("an approval code").to_string();
    // Another approval takes the next code.
    let c = credit(&recipient(), 1_000, "200001");
    assert_ne!(send(&mut bank, &c).get_str(38), Some(code.as_str()));

    let next_day = now() + chrono::Duration::days(1);
    let again = bank.handle(&d, next_day).expect("an answer");
    assert_eq!(again, first, "F15 and F38 as the first time");
    assert_eq!(bank.balance(&sender()), Some(90_000), "debited once");
}

#[test]
fn a_repeat_with_another_mac_is_an_exact_resend() {
    let mut bank = bank();
    let f = freeze(&sender(), 30_000, "000001");
    send(&mut bank, &f);
    let mut u = unfreeze(&sender(), 5_000, "300001", &f);
    u.set(128, &b"\x01\x02\x03\x04\x05\x06\x07\x08"[..]);
    let first = send(&mut bank, &u);
    assert_eq!(rc(&first), ResponseCode::APPROVED);
    // The repeat's MAC covers its MTI, so it differs from the original's.
    let mut repeat = u.clone();
    repeat.set_mti(*b"0121");
    repeat.set(128, &b"\x11\x12\x13\x14\x15\x16\x17\x18"[..]);
    assert_eq!(send(&mut bank, &repeat), first);
    assert_eq!(bank.hold(&key(&f)).unwrap().remaining_minor, 25_000);
    // Another amount under the same key is still a duplicate.
    let mut other = repeat.clone();
    other.set(4, amount(6_000));
    assert_eq!(
        rc(&send(&mut bank, &other)),
        ResponseCode::DUPLICATE_TRANSMISSION
    );
}

#[test]
fn same_key_with_other_content_is_a_duplicate_94() {
    let mut bank = bank();
    let f = freeze(&sender(), 30_000, "000001");
    send(&mut bank, &f);
    let mut other = f.clone();
    other.set(4, amount(30_001));
    let r = send(&mut bank, &other);
    assert_eq!(
        (r.mti(), rc(&r)),
        (b"0110", ResponseCode::DUPLICATE_TRANSMISSION)
    );
    assert_eq!(r.get(4), other.get(4), "a 94 echoes its own request");
    assert_eq!(bank.held(&sender()), Some(30_000));

    // A credit that reuses a debit's key (F32, F7, F11 of MTI 0200).
    let d = debit(&sender(), 1_000, "100001", &f);
    send(&mut bank, &d);
    let mut c = credit(&recipient(), 1_000, "100001");
    c.set(7, d.get_bytes(7).unwrap());
    assert_eq!(
        rc(&send(&mut bank, &c)),
        ResponseCode::DUPLICATE_TRANSMISSION
    );
    assert_eq!(bank.balance(&recipient()), Some(5_000));
    // The original is still answered as it was.
    assert_eq!(rc(&send(&mut bank, &f)), ResponseCode::APPROVED);
}

#[test]
fn reversal_of_a_debit_restores_balance_and_hold_once() {
    let mut bank = bank();
    let f = freeze(&sender(), 30_000, "000001");
    send(&mut bank, &f);
    let d = debit(&sender(), 30_000, "100001", &f);
    send(&mut bank, &d);
    assert_eq!(bank.hold(&key(&f)).unwrap().state, HoldState::Used);
    let rev = reversal(&d, "400001");
    let r = send(&mut bank, &rev);
    assert_eq!((r.mti(), rc(&r)), (b"0430", ResponseCode::APPROVED));
    assert!(!r.has(38));
    assert_eq!(bank.balance(&sender()), Some(100_000));
    let hold = bank.hold(&key(&f)).unwrap();
    assert_eq!(
        (hold.remaining_minor, hold.state),
        (30_000, HoldState::Open)
    );

    // The 0421 repeat and a new reversal of the same debit move nothing.
    let mut repeat = rev.clone();
    repeat.set_mti(*b"0421");
    assert_eq!(send(&mut bank, &repeat), r);
    let again = reversal(&d, "400002");
    assert_eq!(rc(&send(&mut bank, &again)), ResponseCode::APPROVED);
    assert_eq!(bank.balance(&sender()), Some(100_000));
    assert_eq!(bank.hold(&key(&f)).unwrap().remaining_minor, 30_000);

    // The hold is usable again.
    assert_eq!(
        rc(&send(&mut bank, &debit(&sender(), 30_000, "100002", &f))),
        ResponseCode::APPROVED
    );
    assert_eq!(bank.balance(&sender()), Some(70_000));
}

#[test]
fn reversal_of_a_debit_after_the_hold_was_released_restores_the_balance_only() {
    let mut bank = bank();
    let f = freeze(&sender(), 30_000, "000001");
    send(&mut bank, &f);
    let d = debit(&sender(), 10_000, "100001", &f);
    send(&mut bank, &d);
    send(&mut bank, &unfreeze(&sender(), 20_000, "300001", &f));
    assert_eq!(
        rc(&send(&mut bank, &reversal(&d, "400001"))),
        ResponseCode::APPROVED
    );
    let hold = bank.hold(&key(&f)).unwrap();
    assert_eq!((hold.remaining_minor, hold.state), (0, HoldState::Released));
    assert_eq!(bank.balance(&sender()), Some(100_000));
    assert_eq!(bank.held(&sender()), Some(0));
}

#[test]
fn reversal_of_a_credit_takes_it_back_once() {
    let mut bank = bank();
    let c = credit(&recipient(), 2_000, "200001");
    send(&mut bank, &c);
    assert_eq!(bank.balance(&recipient()), Some(7_000));
    let r = send(&mut bank, &reversal(&c, "400001"));
    assert_eq!(rc(&r), ResponseCode::APPROVED);
    assert_eq!(bank.balance(&recipient()), Some(5_000));
    assert_eq!(
        rc(&send(&mut bank, &reversal(&c, "400002"))),
        ResponseCode::APPROVED
    );
    assert_eq!(bank.balance(&recipient()), Some(5_000));
}

#[test]
fn reversal_of_a_freeze_releases_the_hold_once() {
    let mut bank = bank();
    let f = freeze(&sender(), 30_000, "000001");
    send(&mut bank, &f);
    send(&mut bank, &debit(&sender(), 10_000, "100001", &f));
    let mut rev = reversal(&f, "400001");
    rev.set(25, "06");
    assert_eq!(rc(&send(&mut bank, &rev)), ResponseCode::APPROVED);
    let hold = bank.hold(&key(&f)).unwrap();
    assert_eq!((hold.remaining_minor, hold.state), (0, HoldState::Released));
    assert_eq!(bank.held(&sender()), Some(0));
    assert_eq!(bank.balance(&sender()), Some(90_000), "the debit stands");
    assert_eq!(
        rc(&send(&mut bank, &reversal(&f, "400002"))),
        ResponseCode::APPROVED
    );
    assert_eq!(bank.held(&sender()), Some(0));
}

#[test]
fn reversal_edge_cases() {
    let mut bank = bank();
    // Nothing known by that name.
    let never_sent = credit(&recipient(), 1, "299999");
    let r = send(&mut bank, &reversal(&never_sent, "400001"));
    assert_eq!(
        (r.mti(), rc(&r)),
        (b"0430", ResponseCode::UNABLE_TO_LOCATE_RECORD)
    );
    // A declined original moved nothing: 00, nothing to undo.
    let declined = credit(&card("411111111111111"), 1_000, "200001");
    assert_eq!(
        rc(&send(&mut bank, &declined)),
        ResponseCode::INVALID_CARD_NUMBER
    );
    assert_eq!(
        rc(&send(&mut bank, &reversal(&declined, "400002"))),
        ResponseCode::APPROVED
    );
    // Another amount than the original's.
    let c = credit(&recipient(), 1_000, "200002");
    send(&mut bank, &c);
    let mut wrong = reversal(&c, "400003");
    wrong.set(4, amount(999));
    assert_eq!(rc(&send(&mut bank, &wrong)), ResponseCode::INVALID_AMOUNT);
    assert_eq!(bank.balance(&recipient()), Some(6_000));
    // An unfreeze cannot be reversed.
    let f = freeze(&sender(), 1_000, "000001");
    send(&mut bank, &f);
    let u = unfreeze(&sender(), 1_000, "300001", &f);
    send(&mut bank, &u);
    let mut rev = reversal(&u, "400004");
    rev.set(3, "200000");
    assert_eq!(
        rc(&send(&mut bank, &rev)),
        ResponseCode::INVALID_TRANSACTION
    );
    assert_eq!(bank.total_balance_minor(), 106_000);
}

#[test]
fn network_management_is_answered_with_its_own_fields() {
    let mut bank = bank();
    let r = send(&mut bank, &sign_on("000007"));
    assert_eq!((r.mti(), rc(&r)), (b"0810", ResponseCode::APPROVED));
    let fields: Vec<u16> = r.fields().map(|(n, _)| n).collect();
    assert_eq!(fields, vec![7, 11, 32, 39, 70]);
    let mut odd = sign_on("000008");
    odd.set(70, "999");
    assert_eq!(
        rc(&bank.handle(&odd, now()).unwrap()),
        ResponseCode::INVALID_TRANSACTION
    );
}

#[test]
fn unknown_malformed_and_response_messages() {
    let mut bank = bank();
    // A receive is for the switch, not for a bank.
    let mut receive = credit(&recipient(), 1, "500001");
    receive.set(3, "400000");
    let r = bank.handle(&receive, now()).unwrap();
    assert_eq!(
        (r.mti(), rc(&r)),
        (b"0210", ResponseCode::INVALID_TRANSACTION)
    );
    let mut odd = credit(&recipient(), 1, "500002");
    odd.set(3, "999999");
    assert_eq!(
        rc(&bank.handle(&odd, now()).unwrap()),
        ResponseCode::INVALID_TRANSACTION
    );
    let mut odd_mti = sign_on("500003");
    odd_mti.set_mti(*b"0600");
    let r = bank.handle(&odd_mti, now()).unwrap();
    assert_eq!(
        (r.mti(), rc(&r)),
        (b"0610", ResponseCode::INVALID_TRANSACTION)
    );
    // A mandatory field missing.
    let mut missing = credit(&recipient(), 1, "500004");
    missing.remove(102);
    assert_eq!(
        rc(&bank.handle(&missing, now()).unwrap()),
        ResponseCode::FORMAT_ERROR
    );
    // A letter in a numeric field: not echoed, so the answer can be built.
    let mut bad = credit(&recipient(), 1, "500005");
    bad.set(4, "00000000000x");
    let r = bank.handle(&bad, now()).unwrap();
    assert_eq!(rc(&r), ResponseCode::FORMAT_ERROR);
    assert!(!r.has(4));
    assert!(iso8583::codec::build_bytes(bank.spec(), &r).is_ok());
    // Luhn alone is 14.
    let mut luhn = credit(&recipient(), 1, "500006");
    let mut pan = recipient().into_bytes();
    let last = pan.len() - 1;
    pan[last] = if pan[last] == b'9' {
        b'0'
    } else {
        pan[last] + 1
    };
    luhn.set(2, pan);
    assert_eq!(
        rc(&bank.handle(&luhn, now()).unwrap()),
        ResponseCode::INVALID_CARD_NUMBER
    );
    // Responses get no answer.
    let resp = send(&mut bank, &sign_on("500007"));
    assert!(bank.handle(&resp, now()).is_none());
    assert_eq!(bank.total_balance_minor(), 105_000);
    assert!(bank.journal().is_empty(), "rejected messages move nothing");
}

#[test]
fn undecodable_frames_get_30_when_the_mti_is_readable() {
    let r = reject_undecodable(b"0200\xff\xff").unwrap();
    assert_eq!((r.mti(), rc(&r)), (b"0210", ResponseCode::FORMAT_ERROR));
    assert_eq!(reject_undecodable(b"0421").unwrap().mti(), b"0430");
    assert!(reject_undecodable(b"0210....").is_none());
    assert!(reject_undecodable(b"02").is_none());
    assert!(reject_undecodable(b"ab00").is_none());
}

#[test]
fn generated_accounts_are_deterministic_luhn_valid_cards_on_the_bin() {
    let a = Bank::generate(BANK, "622202", 200, 100_000, 1);
    let b = Bank::generate(BANK, "622202", 200, 100_000, 1);
    let c = Bank::generate(BANK, "622202", 200, 100_000, 2);
    assert_eq!(a.accounts(), b.accounts());
    assert_ne!(a.accounts(), c.accounts());
    let accounts = a.accounts();
    assert_eq!(accounts.len(), 200);
    let mut lengths = std::collections::BTreeSet::new();
    for (pan, balance) in &accounts {
        assert!(pan.starts_with("622202"));
        assert!(luhn_valid(pan.as_bytes()), "{pan}");
        lengths.insert(pan.len());
        assert_eq!(*balance, 100_000);
    }
    assert_eq!(lengths, [16, 19].into_iter().collect());
    assert_eq!(a.total_balance_minor(), 20_000_000);
}

#[test]
fn journal_masks_cards_and_snapshot_is_json() {
    let mut bank = bank();
    let f = freeze(&sender(), 30_000, "000001");
    send(&mut bank, &f);
    send(&mut bank, &debit(&sender(), 10_000, "100001", &f));
    send(&mut bank, &credit(&recipient(), 10_000, "200001"));
    let journal = bank.journal();
    let kinds: Vec<MovementKind> = journal.iter().map(|m| m.kind).collect();
    assert_eq!(
        kinds,
        vec![
            MovementKind::Freeze,
            MovementKind::Debit,
            MovementKind::Credit
        ]
    );
    assert_eq!(journal[1].hold.as_deref(), Some(&*key(&f).to_string()));
    assert_eq!(journal[1].request, "0200/00000010000/0305094500/100001");
    let text = serde_json::to_string(&journal).unwrap();
    assert!(!text.contains(&sender()) && !text.contains(&recipient()));
    assert!(text.contains(&mask_pan(&sender())));

    let ledger = bank.snapshot();
    assert_eq!(ledger.institution, "00001020000");
    assert_eq!(ledger.total_balance_minor, 105_000);
    assert_eq!(ledger.total_held_minor, 20_000);
    let account = ledger.account(&sender()).unwrap();
    assert_eq!(
        (
            account.balance_minor,
            account.held_minor,
            account.available_minor
        ),
        (90_000, 20_000, 70_000)
    );
    let json = serde_json::to_string(&ledger).unwrap();
    let back: Ledger = serde_json::from_str(&json).unwrap();
    assert_eq!(back, ledger);
    assert_eq!(back.hold(&key(&f)).unwrap().remaining_minor, 20_000);
    assert!(!format!("{bank:?}").contains(&sender()));
}

#[test]
fn journal_times_and_keys_read_as_chrono_and_display_write_them() {
    for (y, mo, d, h, mi, s) in [
        (2026, 3, 5, 10, 0, 0),
        (2026, 12, 31, 23, 59, 59),
        (999, 1, 2, 3, 4, 5),
    ] {
        let t = NaiveDate::from_ymd_opt(y, mo, d)
            .unwrap()
            .and_hms_opt(h, mi, s)
            .unwrap();
        assert_eq!(journal_time(t), t.format("%Y-%m-%dT%H:%M:%S").to_string());
    }
    let f = freeze(&sender(), 1_000, "000001");
    let key = RequestKey::of(&f).unwrap();
    assert_eq!(key.text(), key.to_string());
    assert_eq!(key.text(), "0100/00048020000/0305093000/000001");
}

#[test]
fn the_journal_is_written_out_the_same_as_the_movements_it_keeps() {
    let mut bank = bank();
    let f = freeze(&sender(), 30_000, "000001");
    let d = debit(&sender(), 10_000, "100001", &f);
    send(&mut bank, &f);
    send(&mut bank, &d);
    send(&mut bank, &reversal(&d, "100002"));
    // Declined by the books: more than the hold has left.
    send(&mut bank, &debit(&sender(), 40_000, "100003", &f));
    // Decided a minute later.
    let u = unfreeze(&sender(), 30_000, "300001", &f);
    let later = now() + chrono::Duration::seconds(61);
    bank.handle(&u, later).expect("an answer");
    // A fault's decline: journaled with its code, nothing applied.
    let mut c = credit(&recipient(), 700, "200001");
    c.remove(49);
    bank.journal_declined(&c, ResponseCode::SYSTEM_MALFUNCTION, now());
    // The money: the debit reversed, the hold released, the credit never
    // applied, so every balance is where it began and nothing is held.
    bank.check_invariants();
    let ledger = bank.snapshot();
    assert_eq!(
        (ledger.total_balance_minor, ledger.total_held_minor),
        (105_000, 0)
    );
    let lines: Vec<String> = bank
        .journal()
        .iter()
        .map(|m| serde_json::to_string(m).unwrap())
        .collect();
    let sender_masked = mask_pan(&sender());
    let recipient_masked = mask_pan(&recipient());
    let expected = [
        format!(
            r#"{{"seq":1,"kind":"freeze","request":"0100/00048020000/0305093000/000001","hold":"00048020000/0305093000/000001","pan":"{sender_masked}","amount_minor":30000,"applied_minor":30000,"response_code":"00","time":"2026-03-05T10:00:00","processing_code":"030000","currency":156}}"#
        ),
        format!(
            r#"{{"seq":2,"kind":"debit","request":"0200/00000010000/0305094500/100001","hold":"00048020000/0305093000/000001","pan":"{sender_masked}","amount_minor":10000,"applied_minor":10000,"response_code":"00","time":"2026-03-05T10:00:00","processing_code":"000000","currency":156}}"#
        ),
        format!(
            r#"{{"seq":3,"kind":"reversal","request":"0420/00000010000/0305095900/100002","hold":"00048020000/0305093000/000001","original":"0200/00000010000/0305094500/100001","pan":"{sender_masked}","amount_minor":10000,"applied_minor":10000,"response_code":"00","time":"2026-03-05T10:00:00","processing_code":"000000","currency":156}}"#
        ),
        format!(
            r#"{{"seq":4,"kind":"debit","request":"0200/00000010000/0305094500/100003","hold":"00048020000/0305093000/000001","pan":"{sender_masked}","amount_minor":40000,"applied_minor":0,"response_code":"61","time":"2026-03-05T10:00:00","processing_code":"000000","currency":156}}"#
        ),
        format!(
            r#"{{"seq":5,"kind":"unfreeze","request":"0120/00000010000/0305100000/300001","hold":"00048020000/0305093000/000001","pan":"{sender_masked}","amount_minor":30000,"applied_minor":30000,"response_code":"00","time":"2026-03-05T10:01:01","processing_code":"200000","currency":156}}"#
        ),
        format!(
            r#"{{"seq":6,"kind":"credit","request":"0200/00000010000/0305094600/200001","pan":"{recipient_masked}","amount_minor":700,"applied_minor":0,"response_code":"96","time":"2026-03-05T10:00:00","processing_code":"260000"}}"#
        ),
    ];
    assert_eq!(lines, expected);
}

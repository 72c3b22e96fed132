//! What the simulator tests share: the dialect's messages as the switch sends
//! them to a bank, a framed client, the money check against the journal, and
//! the `banksim` binary with its admin port.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::Child;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use iso8583::codec::{build_bytes, parse, Message};
use iso8583::framing::{Frame, FrameCodec, FramingConfig};
use iso8583::response::ResponseCode;
use iso8583::Spec;
use simulators::bank::{luhn_check_digit, Ledger, Movement};
use switchboard::dialect::OriginalData;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

pub const WALLET: &str = "48020000";
pub const SWITCH: &str = "00010000";
pub const BANK: &str = "01020000";

pub fn card(payload: &str) -> String {
    let mut pan = payload.to_string();
    pan.push(luhn_check_digit(payload.as_bytes()) as char);
    pan
}

pub fn sender() -> String {
    card("622202000000001")
}

pub fn recipient() -> String {
    card("622848000000000002")
}

fn money_message(mti: &[u8; 4], pc: &str, pan: &str, amount: u64, f7: &str, stan: &str) -> Message {
    let mut m = Message::new(*mti);
    m.set(2, pan.to_string())
        .set(3, pc.to_string())
        .set(4, format!("{amount:012}"))
        .set(7, f7.to_string())
        .set(11, stan.to_string())
        .set(12, "173000")
        .set(13, "0305")
        .set(37, format!("RRN{stan}000"))
        .set(49, "156")
        .set(100, BANK);
    m
}

pub fn freeze(pan: &str, amount: u64, stan: &str) -> Message {
    let mut m = money_message(b"0100", "030000", pan, amount, "0305093000", stan);
    m.set(25, "06").set(32, WALLET).set(33, SWITCH);
    m
}

pub fn debit(pan: &str, amount: u64, stan: &str, of: &Message) -> Message {
    let mut m = money_message(b"0200", "000000", pan, amount, "0305094500", stan);
    m.set(25, "06")
        .set(32, SWITCH)
        .set(33, SWITCH)
        .set(90, OriginalData::naming(of).unwrap().to_bytes().to_vec())
        .set(103, recipient());
    m
}

pub fn credit(pan: &str, amount: u64, stan: &str) -> Message {
    let mut m = money_message(b"0200", "260000", pan, amount, "0305094600", stan);
    m.set(25, "00")
        .set(32, SWITCH)
        .set(33, SWITCH)
        .set(102, sender());
    m
}

pub fn reversal(of: &Message, stan: &str) -> Message {
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

pub fn sign_on(stan: &str) -> Message {
    let mut m = Message::new(*b"0800");
    m.set(7, "0305090000")
        .set(11, stan.to_string())
        .set(32, SWITCH)
        .set(70, "001");
    m
}

pub type Client = Framed<TcpStream, FrameCodec>;

pub async fn connect(addr: SocketAddr, framing: &FramingConfig) -> Client {
    let stream = TcpStream::connect(addr).await.unwrap();
    Framed::new(stream, FrameCodec::new(framing.clone()))
}

/// Queues a message without flushing, so that several are in flight at once.
pub async fn feed(client: &mut Client, spec: &Spec, msg: &Message) {
    client
        .feed(Frame::message(build_bytes(spec, msg).unwrap()))
        .await
        .unwrap();
}

pub async fn receive(client: &mut Client, spec: &Spec) -> Message {
    let frame = tokio::time::timeout(Duration::from_secs(10), client.next())
        .await
        .expect("an answer within 10 s")
        .expect("the connection is open")
        .expect("a good frame");
    match frame {
        Frame::Message { body, .. } => parse(spec, body).unwrap(),
        Frame::KeepAlive => panic!("the bank never sends keep-alives"),
    }
}

pub fn rc(m: &Message) -> ResponseCode {
    ResponseCode::of(m).unwrap()
}

/// Answers by (response MTI, STAN): they are unique in each test below.
pub fn by_stan<'a>(responses: &'a [Message], mti: &[u8; 4], stan: &str) -> &'a Message {
    responses
        .iter()
        .find(|r| r.mti() == mti && r.get_str(11) == Some(stan))
        .unwrap_or_else(|| panic!("no {} for STAN {stan}", std::str::from_utf8(mti).unwrap()))
}

/// The total across accounts changes by exactly the credits and debits the bank
/// applied, net of the reversals of them; holds never change the total.
pub fn assert_money_moved_only_by_the_journal(
    before: &Ledger,
    after: &Ledger,
    journal: &[Movement],
) {
    use simulators::MovementKind;
    let mut applied: std::collections::HashMap<&str, (MovementKind, i64)> = Default::default();
    let mut expected = before.total_balance_minor;
    for m in journal {
        let amount = m.applied_minor as i64;
        match m.kind {
            MovementKind::Credit => expected += amount,
            MovementKind::Debit => expected -= amount,
            MovementKind::Reversal => {
                let original = m
                    .original
                    .as_deref()
                    .expect("a reversal names its original");
                match applied.get(original) {
                    Some((MovementKind::Credit, _)) => expected -= amount,
                    Some((MovementKind::Debit, _)) => expected += amount,
                    _ => {}
                }
            }
            MovementKind::Freeze | MovementKind::Unfreeze => {}
        }
        applied.insert(&m.request, (m.kind, amount));
    }
    assert_eq!(after.total_balance_minor, expected);
    assert_eq!(
        after.total_balance_minor,
        after.accounts.iter().map(|a| a.balance_minor).sum::<i64>()
    );
}

// ---- the banksim binary ----

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the child when the test ends, however it ends.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `program` (the `banksim` binary) with `args`, its output discarded;
/// killed when the returned guard drops.
pub fn start<S: AsRef<std::ffi::OsStr>>(program: &str, args: &[S]) -> Running {
    let child = std::process::Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    Running(child)
}

/// A framed client of `addr`, once something listens there (10 s at most).
pub async fn connect_when_listening(addr: &str) -> Client {
    Framed::new(
        wait_for(addr).await,
        FrameCodec::new(FramingConfig::default()),
    )
}

pub async fn wait_for(addr: &str) -> TcpStream {
    for _ in 0..200 {
        if let Ok(stream) = TcpStream::connect(addr).await {
            return stream;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("banksim did not listen on {addr} within 10 s");
}

pub async fn admin_command(admin: &mut BufReader<TcpStream>, command: &str) -> Vec<String> {
    admin
        .get_mut()
        .write_all(format!("{command}\n").as_bytes())
        .await
        .unwrap();
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(10), admin.read_line(&mut line))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "admin port closed");
        let line = line.trim_end().to_string();
        if command != "journal" {
            return vec![line];
        }
        if line.is_empty() {
            return lines;
        }
        lines.push(line);
    }
}

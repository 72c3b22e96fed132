//! The clearing file format (specs/clearing.md): a header record, one detail
//! record per transaction, and a trailer per currency with counts and totals.
//! Plain CSV without quoting (no value contains a comma), `\n` line ends.
//!
//! Rendering is deterministic: details sorted by key then kind, trailers by
//! currency, amounts with the currency's exponent. Parsing checks every
//! record and that the trailers agree with the details.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::NaiveDate;
use rust_decimal::Decimal;

/// The format's name and version, the header's first two values.
pub const FORMAT: &str = "switchboard-clearing";
pub const VERSION: &str = "1";

/// Who a file is for.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Hash)]
pub enum Role {
    Bank,
    Wallet,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Bank => "bank",
            Role::Wallet => "wallet",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "bank" => Some(Role::Bank),
            "wallet" => Some(Role::Wallet),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a detail record is.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Hash)]
pub enum Kind {
    /// The switch's debit of the sender's card at the payer bank (0200, F3 000000).
    Debit,
    /// The switch's credit of the recipient's card at the receiver bank (0200, F3 260000).
    Credit,
    /// A wallet's freeze (0100).
    Freeze,
    /// A wallet's receive (0200, F3 400000).
    Receive,
    /// A wallet's unfreeze notice (0120).
    Unfreeze,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Debit => "debit",
            Kind::Credit => "credit",
            Kind::Freeze => "freeze",
            Kind::Receive => "receive",
            Kind::Unfreeze => "unfreeze",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "debit" => Kind::Debit,
            "credit" => Kind::Credit,
            "freeze" => Kind::Freeze,
            "receive" => Kind::Receive,
            "unfreeze" => Kind::Unfreeze,
            _ => return None,
        })
    }

    /// Which role's files carry this kind.
    pub fn role(self) -> Role {
        match self {
            Kind::Debit | Kind::Credit => Role::Bank,
            _ => Role::Wallet,
        }
    }

    /// Which trailer pair (0, 1, 2) counts this kind when settled.
    fn slot(self) -> usize {
        match self {
            Kind::Debit | Kind::Freeze => 0,
            Kind::Credit | Kind::Receive => 1,
            Kind::Unfreeze => 2,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a transaction ended.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Hash)]
pub enum Status {
    /// Approved and standing: the money (or hold) moved.
    Approved,
    /// Refused: nothing moved.
    Declined,
    /// Approved (or its answer lost), then undone by a reversal answered 00.
    Reversed,
    /// Never reached the bank: its reversal was answered 25 (original not found).
    NotApplied,
    /// The requester never got an answer and nothing was decided (a crash).
    Unanswered,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Approved => "approved",
            Status::Declined => "declined",
            Status::Reversed => "reversed",
            Status::NotApplied => "not_applied",
            Status::Unanswered => "unanswered",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "approved" => Status::Approved,
            "declined" => Status::Declined,
            "reversed" => Status::Reversed,
            "not_applied" => Status::NotApplied,
            "unanswered" => Status::Unanswered,
            _ => return None,
        })
    }

    /// Undone by a reversal (counted in the bank trailer's third pair).
    fn cancelled(self) -> bool {
        matches!(self, Status::Reversed | Status::NotApplied)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The header record.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Header {
    pub role: Role,
    /// The participant's institution id, 11 digits.
    pub participant: String,
    pub date: NaiveDate,
    /// `HH:MM`.
    pub cutoff: String,
    pub time_zone: String,
    /// The switch's institution id, 11 digits.
    pub switch: String,
}

/// One transaction.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Line {
    pub kind: Kind,
    /// Bank lines: the switch's F32/F7/F11 of the debit or credit. Wallet
    /// lines: the wallet's F32/F7/F11 of its request. F32 as 11 digits.
    pub key: String,
    /// The freeze the transaction draws on (F32/F7/F11 of the wallet's 0100);
    /// empty when the participant does not know it.
    pub freeze: String,
    /// The card, masked (first 6, last 4).
    pub pan: String,
    /// ISO 4217 numeric.
    pub currency: u16,
    /// F4, in major units with the currency's exponent.
    pub amount: Decimal,
    /// The answer to the transaction (F39); empty when none was received.
    pub response_code: String,
    /// The answer to its reversal; empty when it was not reversed.
    pub reversal: String,
    pub status: Status,
    /// What moved: `amount` when approved, zero otherwise.
    pub settled: Decimal,
}

impl Line {
    /// The line's settled amount for a status, with the amount's exponent.
    pub fn settled_for(status: Status, amount: Decimal) -> Decimal {
        if status == Status::Approved {
            amount
        } else {
            Decimal::new(0, amount.scale())
        }
    }

    /// The line as a detail record.
    pub fn detail(&self) -> Detail<'_> {
        Detail {
            kind: self.kind,
            key: &self.key,
            freeze: &self.freeze,
            pan: &self.pan,
            currency: self.currency,
            amount: self.amount,
            response_code: &self.response_code,
            reversal: &self.reversal,
            status: self.status,
            settled: self.settled,
        }
    }
}

/// A detail record's values, borrowed: what a [`Line`] holds, and what
/// clearing writes straight from its own records. Its `Display` is the
/// record's text, line end included, the one way details are written.
#[derive(Clone, Copy, Debug)]
pub struct Detail<'a> {
    pub kind: Kind,
    pub key: &'a str,
    pub freeze: &'a str,
    pub pan: &'a str,
    pub currency: u16,
    pub amount: Decimal,
    pub response_code: &'a str,
    pub reversal: &'a str,
    pub status: Status,
    pub settled: Decimal,
}

impl fmt::Display for Detail<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "D,{},{},{},{},{:03},{},{},{},{},{}",
            self.kind,
            self.key,
            self.freeze,
            self.pan,
            self.currency,
            self.amount,
            self.response_code,
            self.reversal,
            self.status,
            self.settled
        )
    }
}

impl Detail<'_> {
    /// Appends the detail record's text to `out`: the same bytes as its
    /// `Display`, without going through `core::fmt` (a day's files are
    /// millions of details).
    pub fn write_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"D,");
        out.extend_from_slice(self.kind.as_str().as_bytes());
        for text in [self.key, self.freeze, self.pan] {
            out.push(b',');
            out.extend_from_slice(text.as_bytes());
        }
        out.push(b',');
        push_padded3(out, self.currency);
        out.push(b',');
        push_decimal(out, &self.amount);
        for text in [self.response_code, self.reversal, self.status.as_str()] {
            out.push(b',');
            out.extend_from_slice(text.as_bytes());
        }
        out.push(b',');
        push_decimal(out, &self.settled);
        out.push(b'\n');
    }
}

/// `n` as `{:03}` writes it: at least three digits.
fn push_padded3(out: &mut Vec<u8>, n: u16) {
    let mut digits = [0u8; 5];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    while digits.len() - at < 3 {
        at -= 1;
        digits[at] = b'0';
    }
    out.extend_from_slice(&digits[at..]);
}

/// `d` as its `Display` writes it: a minus sign when negative, the integer
/// digits (at least one), then a point and exactly `scale` digits when the
/// scale is not zero.
fn push_decimal(out: &mut Vec<u8>, d: &Decimal) {
    let scale = d.scale() as usize;
    let mantissa = d.mantissa();
    // As `Display`: by the sign, a negative zero included.
    if d.is_sign_negative() {
        out.push(b'-');
    }
    // 96 bits of mantissa: at most 29 digits; the scale is at most 28.
    let mut digits = [b'0'; 40];
    let mut at = digits.len();
    let mut n = mantissa.unsigned_abs();
    while n != 0 {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    // At least one integer digit before the point.
    let start = at.min(digits.len() - scale - 1);
    let point = digits.len() - scale;
    out.extend_from_slice(&digits[start..point]);
    if scale > 0 {
        out.push(b'.');
        out.extend_from_slice(&digits[point..]);
    }
}

/// Counts and totals of one currency, as the trailer carries them.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Trailer {
    pub currency: u16,
    /// Detail records in this currency.
    pub lines: u64,
    /// Bank files: debits settled, credits settled, lines reversed or not
    /// applied. Wallet files: freezes, receives and unfreezes approved.
    pub pairs: [(u64, Decimal); 3],
    /// Bank files: credits − debits settled (positive: the bank is owed).
    /// Wallet files: none.
    pub net: Option<Decimal>,
}

impl fmt::Display for Trailer {
    /// The trailer record's text, line end included.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "T,{:03},{}", self.currency, self.lines)?;
        for (count, total) in &self.pairs {
            write!(f, ",{count},{total}")?;
        }
        match &self.net {
            Some(net) => writeln!(f, ",{net}"),
            None => f.write_str(",\n"),
        }
    }
}

impl Trailer {
    fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = write!(out, "{self}");
    }
}

impl fmt::Display for Header {
    /// The header record's text, line end included.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "H,{FORMAT},{VERSION},{},{},{},{},{},{}",
            self.role,
            self.participant,
            self.date.format("%Y-%m-%d"),
            self.cutoff,
            self.time_zone,
            self.switch
        )
    }
}

/// The trailers of a file, added up one detail at a time: how
/// [`ParticipantFile::trailers`] counts, and how clearing counts the details
/// it writes without keeping them.
#[derive(Clone, Debug)]
pub struct TrailerTally {
    role: Role,
    by_currency: BTreeMap<u16, Trailer>,
}

impl TrailerTally {
    pub fn new(role: Role) -> Self {
        TrailerTally {
            role,
            by_currency: BTreeMap::new(),
        }
    }

    /// Counts one detail.
    pub fn add(&mut self, d: &Detail<'_>) {
        let scale = d.amount.scale();
        let role = self.role;
        let t = self
            .by_currency
            .entry(d.currency)
            .or_insert_with(|| Trailer {
                currency: d.currency,
                lines: 0,
                pairs: [(0, zero(scale)), (0, zero(scale)), (0, zero(scale))],
                net: (role == Role::Bank).then(|| zero(scale)),
            });
        t.lines += 1;
        let slot = match role {
            Role::Bank if d.status.cancelled() => Some(2),
            Role::Bank | Role::Wallet if d.status == Status::Approved => Some(d.kind.slot()),
            _ => None,
        };
        if let Some(slot) = slot {
            let amount = if slot == 2 && role == Role::Bank {
                d.amount
            } else {
                d.settled
            };
            t.pairs[slot].0 += 1;
            t.pairs[slot].1 += amount;
        }
    }

    /// The trailers, one per currency (sorted); one of currency 000, all
    /// zero, when no detail was counted.
    pub fn trailers(mut self) -> Vec<Trailer> {
        for t in self.by_currency.values_mut() {
            if let Some(net) = &mut t.net {
                *net = t.pairs[1].1 - t.pairs[0].1;
            }
        }
        if self.by_currency.is_empty() {
            self.by_currency.insert(
                0,
                Trailer {
                    currency: 0,
                    lines: 0,
                    pairs: [(0, zero(0)), (0, zero(0)), (0, zero(0))],
                    net: (self.role == Role::Bank).then(|| zero(0)),
                },
            );
        }
        self.by_currency.into_values().collect()
    }
}

/// A participant's clearing file.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ParticipantFile {
    pub header: Header,
    /// In file order (sorted by key, then kind, once [`ParticipantFile::sort`]ed).
    pub lines: Vec<Line>,
}

/// A file that does not follow the format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct FormatError {
    pub line: usize,
    pub reason: String,
}

fn bad(line: usize, reason: impl Into<String>) -> FormatError {
    FormatError {
        line,
        reason: reason.into(),
    }
}

/// Zero with `scale` decimals.
fn zero(scale: u32) -> Decimal {
    Decimal::new(0, scale)
}

impl ParticipantFile {
    pub fn new(header: Header) -> Self {
        ParticipantFile {
            header,
            lines: Vec::new(),
        }
    }

    /// Sorts the details by key, then kind: the order every file is written in.
    pub fn sort(&mut self) {
        self.lines
            .sort_by(|a, b| (&a.key, a.kind).cmp(&(&b.key, b.kind)));
    }

    /// The trailers the details add up to, one per currency (sorted); a file
    /// without details has one, of currency 000, all zero.
    pub fn trailers(&self) -> Vec<Trailer> {
        let mut tally = TrailerTally::new(self.header.role);
        for line in &self.lines {
            tally.add(&line.detail());
        }
        tally.trailers()
    }

    /// The file's text: header, details as they are ordered, trailers.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::with_capacity(64 + self.lines.len() * 120);
        let _ = write!(out, "{}", self.header);
        for line in &self.lines {
            let _ = write!(out, "{}", line.detail());
        }
        for t in self.trailers() {
            let _ = write!(out, "{t}");
        }
        out
    }

    /// Reads a file, checking every record and the trailers against the details.
    pub fn parse(text: &str) -> Result<ParticipantFile, FormatError> {
        let mut header: Option<Header> = None;
        let mut lines = Vec::new();
        let mut trailers = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let raw = raw.strip_suffix('\r').unwrap_or(raw);
            if raw.is_empty() {
                continue;
            }
            if raw.contains('"') {
                return Err(bad(n, "quoted values are not part of the format"));
            }
            let v: Vec<&str> = raw.split(',').collect();
            match v[0] {
                "H" => {
                    if header.is_some() {
                        return Err(bad(n, "a second header record"));
                    }
                    header = Some(parse_header(n, &v)?);
                }
                "D" => {
                    let h = header
                        .as_ref()
                        .ok_or_else(|| bad(n, "a detail record before the header"))?;
                    if !trailers.is_empty() {
                        return Err(bad(n, "a detail record after the trailer"));
                    }
                    let line = parse_line(n, &v)?;
                    if line.kind.role() != h.role {
                        return Err(bad(
                            n,
                            format!("a {} record in a {} file", line.kind, h.role),
                        ));
                    }
                    lines.push((n, line));
                }
                "T" => {
                    let h = header
                        .as_ref()
                        .ok_or_else(|| bad(n, "a trailer record before the header"))?;
                    trailers.push((n, parse_trailer(n, &v, h.role)?));
                }
                other => {
                    return Err(bad(
                        n,
                        format!("unknown record type {other:?} (expected H, D or T)"),
                    ))
                }
            }
        }
        let header = header.ok_or_else(|| bad(1, "no header record"))?;
        if trailers.is_empty() {
            return Err(bad(text.lines().count().max(1), "no trailer record"));
        }
        let mut seen = std::collections::HashMap::new();
        for (n, line) in &lines {
            if let Some(first) = seen.insert(line.key.as_str(), *n) {
                return Err(bad(
                    *n,
                    format!("key {} appears twice (first on line {first})", line.key),
                ));
            }
        }
        let file = ParticipantFile {
            header,
            lines: lines.into_iter().map(|(_, l)| l).collect(),
        };
        let expected = file.trailers();
        let got: Vec<&Trailer> = trailers.iter().map(|(_, t)| t).collect();
        if got.len() != expected.len() {
            return Err(bad(
                trailers[0].0,
                format!(
                    "{} trailer records for {} currencies in the details",
                    got.len(),
                    expected.len()
                ),
            ));
        }
        for ((n, t), e) in trailers.iter().zip(&expected) {
            if !trailer_agrees(t, e) {
                let mut want = String::new();
                e.render(&mut want);
                return Err(bad(
                    *n,
                    format!(
                        "the trailer does not add up to the details: they give {}",
                        want.trim_end()
                    ),
                ));
            }
        }
        Ok(file)
    }
}

/// Equal counts, and totals equal as numbers (an exponent written differently
/// is not a difference).
fn trailer_agrees(a: &Trailer, b: &Trailer) -> bool {
    a.currency == b.currency
        && a.lines == b.lines
        && a.pairs
            .iter()
            .zip(&b.pairs)
            .all(|(x, y)| x.0 == y.0 && x.1 == y.1)
        && a.net == b.net
}

fn parse_header(n: usize, v: &[&str]) -> Result<Header, FormatError> {
    if v.len() != 9 {
        return Err(bad(
            n,
            format!("a header has 9 values, this one {}", v.len()),
        ));
    }
    if v[1] != FORMAT {
        return Err(bad(n, format!("not a {FORMAT} file ({:?})", v[1])));
    }
    if v[2] != VERSION {
        return Err(bad(
            n,
            format!("format version {:?}, expected {VERSION}", v[2]),
        ));
    }
    let role = Role::parse(v[3])
        .ok_or_else(|| bad(n, format!("role {:?} is not bank or wallet", v[3])))?;
    let date = NaiveDate::parse_from_str(v[5], "%Y-%m-%d")
        .map_err(|_| bad(n, format!("date {:?} is not YYYY-MM-DD", v[5])))?;
    Ok(Header {
        role,
        participant: institution(n, "participant", v[4])?,
        date,
        cutoff: v[6].to_string(),
        time_zone: v[7].to_string(),
        switch: institution(n, "switch", v[8])?,
    })
}

fn institution(n: usize, what: &str, s: &str) -> Result<String, FormatError> {
    if s.len() == 11 && s.bytes().all(|b| b.is_ascii_digit()) {
        Ok(s.to_string())
    } else {
        Err(bad(
            n,
            format!("{what} {s:?} is not an institution id of 11 digits"),
        ))
    }
}

fn decimal(n: usize, what: &str, s: &str) -> Result<Decimal, FormatError> {
    if s.is_empty() || s.contains(['e', 'E', '_']) {
        return Err(bad(n, format!("{what} {s:?} is not a decimal amount")));
    }
    Decimal::from_str(s).map_err(|_| bad(n, format!("{what} {s:?} is not a decimal amount")))
}

fn count(n: usize, what: &str, s: &str) -> Result<u64, FormatError> {
    s.parse()
        .map_err(|_| bad(n, format!("{what} {s:?} is not a count")))
}

fn currency(n: usize, s: &str) -> Result<u16, FormatError> {
    if s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()) {
        Ok(s.parse().unwrap_or(0))
    } else {
        Err(bad(n, format!("currency {s:?} is not 3 digits")))
    }
}

/// The largest amount a detail record may carry, in major units: far above
/// what F4's 12 digits of minor units can say, and small enough that no file
/// can make its sums overflow.
const MAX_DETAIL_AMOUNT: i64 = 999_999_999_999;

/// A detail record's amount, bounded by [`MAX_DETAIL_AMOUNT`].
fn detail_amount(n: usize, what: &str, s: &str) -> Result<Decimal, FormatError> {
    let amount = decimal(n, what, s)?;
    if amount.abs() > Decimal::from(MAX_DETAIL_AMOUNT) {
        return Err(bad(
            n,
            format!("{what} {s} is out of range (at most {MAX_DETAIL_AMOUNT})"),
        ));
    }
    Ok(amount)
}

fn parse_line(n: usize, v: &[&str]) -> Result<Line, FormatError> {
    if v.len() != 11 {
        return Err(bad(
            n,
            format!("a detail record has 11 values, this one {}", v.len()),
        ));
    }
    let kind = Kind::parse(v[1]).ok_or_else(|| bad(n, format!("kind {:?} is unknown", v[1])))?;
    if v[2].is_empty() {
        return Err(bad(n, "a detail record needs its key"));
    }
    let status =
        Status::parse(v[9]).ok_or_else(|| bad(n, format!("status {:?} is unknown", v[9])))?;
    Ok(Line {
        kind,
        key: v[2].to_string(),
        freeze: v[3].to_string(),
        pan: v[4].to_string(),
        currency: currency(n, v[5])?,
        amount: detail_amount(n, "amount", v[6])?,
        response_code: v[7].to_string(),
        reversal: v[8].to_string(),
        status,
        settled: detail_amount(n, "settled amount", v[10])?,
    })
}

fn parse_trailer(n: usize, v: &[&str], role: Role) -> Result<Trailer, FormatError> {
    if v.len() != 10 {
        return Err(bad(
            n,
            format!("a trailer record has 10 values, this one {}", v.len()),
        ));
    }
    let pair = |i: usize| -> Result<(u64, Decimal), FormatError> {
        Ok((count(n, "count", v[i])?, decimal(n, "total", v[i + 1])?))
    };
    let net = match (role, v[9]) {
        (Role::Wallet, "") => None,
        (Role::Wallet, other) => {
            return Err(bad(
                n,
                format!("a wallet trailer has no net position ({other:?})"),
            ))
        }
        (Role::Bank, s) => Some(decimal(n, "net position", s)?),
    };
    Ok(Trailer {
        currency: currency(n, v[1])?,
        lines: count(n, "line count", v[2])?,
        pairs: [pair(3)?, pair(5)?, pair(7)?],
        net,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use iso8583::response::ResponseCode;

    fn header(role: Role) -> Header {
        Header {
            role,
            participant: "00048020000".into(),
            date: NaiveDate::from_ymd_opt(2026, 11, 23).unwrap(),
            cutoff: "23:00".into(),
            time_zone: "Asia/Shanghai".into(),
            switch: "00000010000".into(),
        }
    }

    fn line(kind: Kind, key: &str, amount: i64, status: Status) -> Line {
        let amount = Decimal::new(amount, 2);
        Line {
            kind,
            key: key.into(),
            freeze: "00001020000/1123010203/000001".into(),
            pan: "622202******1234".into(),
            currency: 156,
            amount,
            response_code: ResponseCode::APPROVED.into(),
            reversal: if status == Status::Reversed {
                ResponseCode::APPROVED.into()
            } else {
                String::new()
            },
            status,
            settled: Line::settled_for(status, amount),
        }
    }

    #[test]
    fn a_detail_writes_the_bytes_of_its_display() {
        let amounts = [
            Decimal::new(0, 0),
            Decimal::new(0, 2),
            Decimal::new(5, 2),
            Decimal::new(123_456, 2),
            Decimal::new(-7, 3),
            Decimal::new(100, 0),
            Decimal::new(1, 28),
            Decimal::MAX,
            Decimal::MIN,
            -Decimal::new(0, 2),
        ];
        for (i, amount) in amounts.into_iter().enumerate() {
            for currency in [0, 7, 156, 999, 1000, u16::MAX] {
                let kinds = [
                    Kind::Debit,
                    Kind::Credit,
                    Kind::Freeze,
                    Kind::Receive,
                    Kind::Unfreeze,
                ];
                let mut l = line(kinds[i % kinds.len()], "k/1/2", 0, Status::Reversed);
                l.amount = amount;
                l.currency = currency;
                l.settled = Line::settled_for(Status::Declined, amount);
                let detail = l.detail();
                let mut bytes = Vec::new();
                detail.write_into(&mut bytes);
                assert_eq!(String::from_utf8(bytes).unwrap(), detail.to_string());
            }
        }
    }

    #[test]
    fn renders_and_parses_back() {
        let mut f = ParticipantFile::new(header(Role::Bank));
        f.lines.push(line(
            Kind::Credit,
            "00000010000/1123010300/000004",
            700,
            Status::Approved,
        ));
        f.lines.push(line(
            Kind::Debit,
            "00000010000/1123010300/000003",
            1500,
            Status::Approved,
        ));
        f.lines.push(line(
            Kind::Debit,
            "00000010000/1123010400/000005",
            250,
            Status::Reversed,
        ));
        f.sort();
        let text = f.render();
        assert_eq!(
            text,
            "H,switchboard-clearing,1,bank,00048020000,2026-11-23,23:00,Asia/Shanghai,00000010000\n\
             D,debit,00000010000/1123010300/000003,00001020000/1123010203/000001,622202******1234,156,15.00,00,,approved,15.00\n\
             D,credit,00000010000/1123010300/000004,00001020000/1123010203/000001,622202******1234,156,7.00,00,,approved,7.00\n\
             D,debit,00000010000/1123010400/000005,00001020000/1123010203/000001,622202******1234,156,2.50,00,00,reversed,0.00\n\
             T,156,3,1,15.00,1,7.00,1,2.50,-8.00\n"
        );
        assert_eq!(ParticipantFile::parse(&text).unwrap(), f);
    }

    #[test]
    fn huge_amounts_are_refused_not_summed() {
        // Two details of 7.9e27 each would overflow the trailer's sum.
        let huge = "7922816251426433759354395033";
        let text = format!(
            "H,switchboard-clearing,1,bank,00048020000,2026-11-23,23:00,Asia/Shanghai,00000010000\n\
             D,debit,k1,f,622202******1234,156,{huge},00,,approved,{huge}\n\
             D,debit,k2,f,622202******1234,156,{huge},00,,approved,{huge}\n\
             T,156,2,2,0.00,0,0.00,0,0.00,0.00\n"
        );
        let e = ParticipantFile::parse(&text).unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(e.reason.contains("out of range"), "{e}");
    }

    #[test]
    fn empty_file_has_a_zero_trailer() {
        let f = ParticipantFile::new(header(Role::Wallet));
        let text = f.render();
        assert!(text.ends_with("T,000,0,0,0,0,0,0,0,\n"), "{text}");
        assert_eq!(ParticipantFile::parse(&text).unwrap(), f);
    }

    #[test]
    fn a_trailer_that_does_not_add_up_is_refused() {
        let mut f = ParticipantFile::new(header(Role::Bank));
        f.lines.push(line(
            Kind::Debit,
            "00000010000/1123010300/000003",
            1500,
            Status::Approved,
        ));
        let text = f.render().replace("D,debit,00000010000/1123010300/000003,00001020000/1123010203/000001,622202******1234,156,15.00,00,,approved,15.00", "D,debit,00000010000/1123010300/000003,00001020000/1123010203/000001,622202******1234,156,15.00,00,,approved,16.00");
        let e = ParticipantFile::parse(&text).unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.reason.contains("does not add up"), "{e}");
        let e = ParticipantFile::parse("H,x\n").unwrap_err();
        assert!(e.reason.contains("9 values"), "{e}");
    }
}

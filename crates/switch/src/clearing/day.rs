//! A cleared day as clearing keeps it: one small record per detail line,
//! without a string per value, so that a day of millions of transactions
//! fits in a bounded amount of memory. [`ClearedDay::write`] writes the files
//! straight from the records; [`ClearedDay::into_cleared`] turns them into
//! [`Cleared`] (a [`ParticipantFile`] of [`Line`]s per participant) for
//! those who want the lines themselves. Both write a detail through
//! [`Detail`] and count it with [`TrailerTally`], so their files are the
//! same bytes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use foldhash::HashMap;
use rust_decimal::Decimal;

use super::clear::{Cleared, Obligation, Pending, Position};
use super::file::{
    Detail, Header, Kind, Line, ParticipantFile, Role, Status, Trailer, TrailerTally, FORMAT,
    VERSION,
};
use super::{decimal, Settlement};

/// F32/F7/F11 of a message, F32 as 11 digits.
pub(super) type MsgKey = [u8; 27];

/// A key as the files write it, `F32/F7/F11`, without allocating.
pub(super) struct KeyText([u8; 29]);

impl KeyText {
    pub(super) fn of(key: &MsgKey) -> KeyText {
        let mut text = [b'/'; 29];
        text[..11].copy_from_slice(&key[..11]);
        text[12..22].copy_from_slice(&key[11..21]);
        text[23..].copy_from_slice(&key[21..]);
        KeyText(text)
    }

    /// The three parts are each whole UTF-8 text (or digits), so this
    /// borrows; checked as a whole first, which is cheaper than the
    /// replacing check.
    pub(super) fn text(&self) -> std::borrow::Cow<'_, str> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => std::borrow::Cow::Borrowed(text),
            Err(_) => String::from_utf8_lossy(&self.0),
        }
    }
}

/// Text that is usually short (a masked card): kept inline up to 22 bytes,
/// on the heap beyond.
#[derive(Clone, Debug)]
pub(super) enum Short {
    Inline { len: u8, bytes: [u8; 22] },
    Heap(Box<str>),
}

impl Short {
    pub(super) fn new(text: &str) -> Short {
        if text.len() <= 22 {
            let mut bytes = [0u8; 22];
            bytes[..text.len()].copy_from_slice(text.as_bytes());
            Short::Inline {
                len: text.len() as u8,
                bytes,
            }
        } else {
            Short::Heap(text.into())
        }
    }

    pub(super) fn as_str(&self) -> &str {
        match self {
            // Copied from a whole `&str`: always UTF-8.
            Short::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..*len as usize]).unwrap_or_default()
            }
            Short::Heap(text) => text,
        }
    }
}

/// A value that repeats across a day (a bank's id, a response code), kept
/// once in [`Words`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub(super) struct Word(u32);

/// The distinct bank ids and response codes of a day.
#[derive(Default)]
pub(super) struct Words {
    names: Vec<Box<str>>,
    index: HashMap<Box<str>, Word>,
}

impl Words {
    pub(super) fn word(&mut self, name: &str) -> Word {
        if let Some(w) = self.index.get(name) {
            return *w;
        }
        let w = Word(self.names.len() as u32);
        self.names.push(name.into());
        self.index.insert(name.into(), w);
        w
    }

    pub(super) fn name(&self, w: Word) -> &str {
        &self.names[w.0 as usize]
    }

    fn name_of(&self, w: Option<Word>) -> &str {
        w.map(|w| self.name(w)).unwrap_or_default()
    }
}

/// How a detail line ended, once clearing has decided it has one.
#[derive(Clone, Copy, Debug)]
pub(super) struct Outcome {
    pub status: Status,
    /// The answer (F39) the line carries.
    pub response: Option<Word>,
    /// The answer to its reversal.
    pub reversal: Option<Word>,
}

/// A debit or credit the switch sent: what its line says of it.
#[derive(Clone, Debug)]
pub(super) struct Sent {
    pub bank: Word,
    pub kind: Kind,
    pub pan: Short,
    pub currency: u16,
    pub amount_minor: u64,
    pub freeze: Option<MsgKey>,
}

/// A wallet's request: what its line says of it.
#[derive(Clone, Debug)]
pub(super) struct Request {
    pub key: MsgKey,
    pub kind: Kind,
    pub pan: Short,
    pub currency: u16,
    pub amount_minor: u64,
    pub freeze: Option<MsgKey>,
}

/// Currencies' exponents (minor units per major unit), 2 when not listed.
#[derive(Clone, Debug, Default)]
pub(super) struct Exponents(pub BTreeMap<u16, u32>);

impl Exponents {
    pub(super) fn amount(&self, currency: u16, minor: u64) -> Decimal {
        decimal(minor, self.0.get(&currency).copied().unwrap_or(2))
    }
}

/// One file's lines: a range of the day's sorted records, and its trailers.
struct FileLines {
    lines: Range<usize>,
    trailers: Vec<Trailer>,
}

/// A cleared day, its lines kept as records (see the module's comment).
pub struct ClearedDay {
    pub date: NaiveDate,
    pub settlement: Settlement,
    /// The switch's institution id, 11 digits.
    pub switch: String,
    pub positions: Vec<Position>,
    pub obligations: Vec<Obligation>,
    /// What was left out because it is not final (only with `allow_pending`).
    pub pending: Vec<Pending>,
    words: Words,
    exponents: Exponents,
    bank_lines: Vec<(Sent, MsgKey, Outcome)>,
    wallet_lines: Vec<(Request, Outcome)>,
    banks: BTreeMap<String, FileLines>,
    wallets: BTreeMap<String, FileLines>,
}

/// Hands `detail` the bank line of a record.
fn bank_detail<T>(
    (sent, key, outcome): &(Sent, MsgKey, Outcome),
    words: &Words,
    exponents: &Exponents,
    detail: impl FnOnce(&Detail<'_>) -> T,
) -> T {
    let key = KeyText::of(key);
    let freeze = sent.freeze.as_ref().map(KeyText::of);
    let amount = exponents.amount(sent.currency, sent.amount_minor);
    detail(&Detail {
        kind: sent.kind,
        key: &key.text(),
        freeze: &freeze.as_ref().map(KeyText::text).unwrap_or_default(),
        pan: sent.pan.as_str(),
        currency: sent.currency,
        amount,
        response_code: words.name_of(outcome.response),
        reversal: words.name_of(outcome.reversal),
        status: outcome.status,
        settled: Line::settled_for(outcome.status, amount),
    })
}

/// Hands `detail` the wallet line of a record.
fn wallet_detail<T>(
    (request, outcome): &(Request, Outcome),
    words: &Words,
    exponents: &Exponents,
    detail: impl FnOnce(&Detail<'_>) -> T,
) -> T {
    let key = KeyText::of(&request.key);
    let freeze = request.freeze.as_ref().map(KeyText::of);
    let amount = exponents.amount(request.currency, request.amount_minor);
    detail(&Detail {
        kind: request.kind,
        key: &key.text(),
        freeze: &freeze.as_ref().map(KeyText::text).unwrap_or_default(),
        pan: request.pan.as_str(),
        currency: request.currency,
        amount,
        response_code: words.name_of(outcome.response),
        reversal: "",
        status: outcome.status,
        settled: Line::settled_for(outcome.status, amount),
    })
}

fn line_of(d: &Detail<'_>) -> Line {
    Line {
        kind: d.kind,
        key: d.key.to_string(),
        freeze: d.freeze.to_string(),
        pan: d.pan.to_string(),
        currency: d.currency,
        amount: d.amount,
        response_code: d.response_code.to_string(),
        reversal: d.reversal.to_string(),
        status: d.status,
        settled: d.settled,
    }
}

/// The records that clearing decided, handed over to be sorted into files.
pub(super) struct Decided {
    pub date: NaiveDate,
    pub settlement: Settlement,
    pub switch: String,
    pub words: Words,
    pub exponents: Exponents,
    pub bank_lines: Vec<(Sent, MsgKey, Outcome)>,
    pub wallet_lines: Vec<(Request, Outcome)>,
    /// Participants that get a file even without lines (11 digits).
    pub banks: Vec<String>,
    pub wallets: Vec<String>,
    pub obligations: Vec<Obligation>,
    pub pending: Vec<Pending>,
}

impl ClearedDay {
    /// Sorts the lines into their files (by key, then kind) and adds up
    /// the trailers and the banks' positions.
    pub(super) fn new(d: Decided) -> ClearedDay {
        let Decided {
            date,
            settlement,
            switch,
            words,
            exponents,
            mut bank_lines,
            mut wallet_lines,
            banks: named_banks,
            wallets: named_wallets,
            obligations,
            pending,
        } = d;
        // The bank files on one core, the wallets' on the other.
        let (mut banks, mut wallets) = std::thread::scope(|scope| {
            let wallets = scope.spawn(|| wallet_files(&mut wallet_lines, &words, &exponents));
            let banks = bank_files(&mut bank_lines, &words, &exponents);
            let wallets = wallets
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (banks, wallets)
        });
        let empty = |role| FileLines {
            lines: 0..0,
            trailers: TrailerTally::new(role).trailers(),
        };
        for bank in named_banks {
            banks.entry(bank).or_insert_with(|| empty(Role::Bank));
        }
        for wallet in named_wallets {
            wallets.entry(wallet).or_insert_with(|| empty(Role::Wallet));
        }

        // Positions, from the bank files' trailers.
        let positions = banks
            .iter()
            .flat_map(|(bank, file)| {
                file.trailers
                    .iter()
                    .filter(|t| t.lines > 0)
                    .map(move |t| Position {
                        bank: bank.clone(),
                        currency: t.currency,
                        debits: t.pairs[0],
                        credits: t.pairs[1],
                        net: t.net.unwrap_or_default(),
                    })
            })
            .collect();
        ClearedDay {
            date,
            settlement,
            switch,
            positions,
            obligations,
            pending,
            words,
            exponents,
            bank_lines,
            wallet_lines,
            banks,
            wallets,
        }
    }

    fn header(&self, role: Role, participant: &str) -> Header {
        Header {
            role,
            participant: participant.to_string(),
            date: self.date,
            cutoff: self.settlement.cutoff_text(),
            time_zone: self.settlement.time_zone.to_string(),
            switch: self.switch.clone(),
        }
    }

    /// The banks that get a file (11 digits), in order.
    pub fn banks(&self) -> impl Iterator<Item = &str> {
        self.banks.keys().map(String::as_str)
    }

    /// The wallets that get a file, in order.
    pub fn wallets(&self) -> impl Iterator<Item = &str> {
        self.wallets.keys().map(String::as_str)
    }

    /// Detail lines in every bank file.
    pub fn bank_line_count(&self) -> usize {
        self.bank_lines.len()
    }

    /// Detail lines in every wallet file.
    pub fn wallet_line_count(&self) -> usize {
        self.wallet_lines.len()
    }

    /// Σ net positions per currency: zero for every currency when the day balances.
    pub fn net_by_currency(&self) -> BTreeMap<u16, Decimal> {
        net_by_currency(&self.positions)
    }

    /// Whether every currency's net positions sum to zero.
    pub fn balanced(&self) -> bool {
        self.net_by_currency().values().all(|n| n.is_zero())
    }

    /// The summary file's text.
    pub fn summary(&self) -> String {
        summary(
            &self.switch,
            self.date,
            &self.settlement,
            &self.positions,
            &self.obligations,
            self.wallets
                .iter()
                .map(|(id, f)| (id.as_str(), f.trailers.clone())),
            &self.pending,
        )
    }

    /// Writes every file into `dir` (created if needed) as it goes, a line at
    /// a time; returns their paths: `bank-<id>.csv`, `wallet-<id>.csv`,
    /// `summary.csv`.
    pub fn write(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)?;
        // The bank files on one core, the wallets' and the summary on the other.
        let (banks, wallets) = std::thread::scope(|scope| {
            let banks = scope.spawn(|| self.write_bank_files(dir));
            let wallets = self.write_wallet_files(dir);
            let banks = banks
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (banks, wallets)
        });
        let mut paths = banks?;
        paths.extend(wallets?);
        Ok(paths)
    }

    fn write_bank_files(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        let mut paths = Vec::new();
        for (id, file) in &self.banks {
            let path = write_file(dir, &format!("bank-{id}.csv"), |out| {
                write!(out, "{}", self.header(Role::Bank, id))?;
                let mut text = Vec::with_capacity(256);
                for line in &self.bank_lines[file.lines.clone()] {
                    text.clear();
                    bank_detail(line, &self.words, &self.exponents, |d| {
                        d.write_into(&mut text)
                    });
                    out.write_all(&text)?;
                }
                file.trailers.iter().try_for_each(|t| write!(out, "{t}"))
            })?;
            paths.push(path);
        }
        Ok(paths)
    }

    /// The wallets' files, then the summary.
    fn write_wallet_files(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        let mut paths = Vec::new();
        for (id, file) in &self.wallets {
            let path = write_file(dir, &format!("wallet-{id}.csv"), |out| {
                write!(out, "{}", self.header(Role::Wallet, id))?;
                let mut text = Vec::with_capacity(256);
                for line in &self.wallet_lines[file.lines.clone()] {
                    text.clear();
                    wallet_detail(line, &self.words, &self.exponents, |d| {
                        d.write_into(&mut text)
                    });
                    out.write_all(&text)?;
                }
                file.trailers.iter().try_for_each(|t| write!(out, "{t}"))
            })?;
            paths.push(path);
        }
        let summary = self.summary();
        paths.push(write_file(dir, "summary.csv", |out| {
            out.write_all(summary.as_bytes())
        })?);
        Ok(paths)
    }

    /// The day with its lines as [`Line`]s.
    pub fn into_cleared(self) -> Cleared {
        let file = |role, id: &str, lines: Vec<Line>| ParticipantFile {
            header: self.header(role, id),
            lines,
        };
        let banks = self
            .banks
            .iter()
            .map(|(id, f)| {
                let lines = self.bank_lines[f.lines.clone()]
                    .iter()
                    .map(|l| bank_detail(l, &self.words, &self.exponents, line_of))
                    .collect();
                (id.clone(), file(Role::Bank, id, lines))
            })
            .collect();
        let wallets = self
            .wallets
            .iter()
            .map(|(id, f)| {
                let lines = self.wallet_lines[f.lines.clone()]
                    .iter()
                    .map(|l| wallet_detail(l, &self.words, &self.exponents, line_of))
                    .collect();
                (id.clone(), file(Role::Wallet, id, lines))
            })
            .collect();
        Cleared {
            date: self.date,
            settlement: self.settlement,
            switch: self.switch,
            banks,
            wallets,
            positions: self.positions,
            obligations: self.obligations,
            pending: self.pending,
        }
    }
}

/// Sorts the bank lines into their files (banks in the order of their ids,
/// each file's lines by key then kind) and adds up each file's trailers.
fn bank_files(
    bank_lines: &mut [(Sent, MsgKey, Outcome)],
    words: &Words,
    exponents: &Exponents,
) -> BTreeMap<String, FileLines> {
    // A bank's place is looked up by its word's number, as an index: the
    // sort compares millions of times.
    let mut used = vec![false; words.names.len()];
    for (sent, _, _) in bank_lines.iter() {
        used[sent.bank.0 as usize] = true;
    }
    let mut bank_names: Vec<(&str, Word)> = (0..words.names.len())
        .filter(|i| used[*i])
        .map(|i| (words.name(Word(i as u32)), Word(i as u32)))
        .collect();
    bank_names.sort_unstable();
    let mut rank = vec![0u32; words.names.len()];
    for (i, (_, w)) in bank_names.iter().enumerate() {
        rank[w.0 as usize] = i as u32;
    }
    bank_lines.sort_unstable_by(|(a, ak, _), (b, bk, _)| {
        (rank[a.bank.0 as usize], ak, a.kind).cmp(&(rank[b.bank.0 as usize], bk, b.kind))
    });
    let mut banks: BTreeMap<String, FileLines> = BTreeMap::new();
    let mut start = 0;
    while start < bank_lines.len() {
        let bank = bank_lines[start].0.bank;
        let end = start
            + bank_lines[start..]
                .iter()
                .take_while(|(s, _, _)| s.bank == bank)
                .count();
        let mut tally = TrailerTally::new(Role::Bank);
        for line in &bank_lines[start..end] {
            bank_detail(line, words, exponents, |d| tally.add(d));
        }
        banks.insert(
            words.name(bank).to_string(),
            FileLines {
                lines: start..end,
                trailers: tally.trailers(),
            },
        );
        start = end;
    }
    banks
}

/// Sorts the wallet lines into their files (a wallet's id is its requests'
/// F32, the key's start; lines by key then kind) and adds up each file's
/// trailers.
fn wallet_files(
    wallet_lines: &mut [(Request, Outcome)],
    words: &Words,
    exponents: &Exponents,
) -> BTreeMap<String, FileLines> {
    wallet_lines.sort_unstable_by_key(|(r, _)| (r.key, r.kind));
    let mut wallets: BTreeMap<String, FileLines> = BTreeMap::new();
    let mut start = 0;
    while start < wallet_lines.len() {
        let wallet: [u8; 11] = wallet_lines[start].0.key[..11]
            .try_into()
            .expect("11 bytes");
        let end = start
            + wallet_lines[start..]
                .iter()
                .take_while(|(r, _)| r.key[..11] == wallet)
                .count();
        let mut tally = TrailerTally::new(Role::Wallet);
        for line in &wallet_lines[start..end] {
            wallet_detail(line, words, exponents, |d| tally.add(d));
        }
        wallets.insert(
            String::from_utf8_lossy(&wallet).into_owned(),
            FileLines {
                lines: start..end,
                trailers: tally.trailers(),
            },
        );
        start = end;
    }
    wallets
}

/// Writes `dir/name` through a buffer, to a temporary name first and renamed
/// once complete: a reader never sees half a file.
fn write_file(
    dir: &Path,
    name: &str,
    content: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> std::io::Result<PathBuf> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::fs::File::create(&tmp)?);
    content(&mut out)?;
    out.into_inner().map_err(|e| e.into_error())?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Σ net positions per currency.
pub(super) fn net_by_currency(positions: &[Position]) -> BTreeMap<u16, Decimal> {
    let mut sums: BTreeMap<u16, Decimal> = BTreeMap::new();
    for p in positions {
        *sums
            .entry(p.currency)
            .or_insert_with(|| Decimal::new(0, p.net.scale())) += p.net;
    }
    sums
}

/// The summary file's text: header, net positions, obligations, wallets'
/// totals (from their files' trailers), what is pending, totals.
pub(super) fn summary<'a>(
    switch: &str,
    date: NaiveDate,
    settlement: &Settlement,
    positions: &[Position],
    obligations: &[Obligation],
    wallet_trailers: impl Iterator<Item = (&'a str, Vec<Trailer>)>,
    pending: &[Pending],
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "H,{FORMAT},{VERSION},summary,{},{},{},{},{}",
        switch,
        date.format("%Y-%m-%d"),
        settlement.cutoff_text(),
        settlement.time_zone,
        switch
    );
    for p in positions {
        let side = if p.net.is_sign_positive() && !p.net.is_zero() {
            "receives"
        } else if p.net.is_zero() {
            "even"
        } else {
            "pays"
        };
        let _ = writeln!(
            out,
            "N,{},{:03},{},{},{},{},{},{side}",
            p.bank, p.currency, p.debits.0, p.debits.1, p.credits.0, p.credits.1, p.net
        );
    }
    for o in obligations {
        let _ = writeln!(
            out,
            "B,{},{},{:03},{}",
            o.payer, o.receiver, o.currency, o.amount
        );
    }
    for (wallet, trailers) in wallet_trailers {
        for t in trailers.into_iter().filter(|t| t.lines > 0) {
            let _ = writeln!(
                out,
                "W,{wallet},{:03},{},{},{},{},{},{},{}",
                t.currency,
                t.lines,
                t.pairs[0].0,
                t.pairs[0].1,
                t.pairs[1].0,
                t.pairs[1].1,
                t.pairs[2].0,
                t.pairs[2].1
            );
        }
    }
    for p in pending {
        let _ = writeln!(
            out,
            "P,{},{},{},{},{}",
            p.role,
            p.participant,
            p.kind,
            p.key,
            p.reason.replace(',', ";")
        );
    }
    let sums = net_by_currency(positions);
    if sums.is_empty() {
        let _ = writeln!(out, "T,000,0,0,0,0,{}", pending.len());
    }
    for (currency, net) in sums {
        let of = |f: fn(&Position) -> (u64, Decimal)| {
            positions
                .iter()
                .filter(|p| p.currency == currency)
                .map(f)
                .fold(Decimal::new(0, net.scale()), |a, (_, t)| a + t)
        };
        let banks = positions.iter().filter(|p| p.currency == currency).count();
        let _ = writeln!(
            out,
            "T,{currency:03},{banks},{},{},{net},{}",
            of(|p| p.debits),
            of(|p| p.credits),
            pending.len()
        );
    }
    out
}

//! Reconciliation: a participant's own records (ours) against the switch's
//! file for that participant and day (theirs), line by line by key.
//!
//! Every key falls in exactly one class: matched; missing at the participant
//! (only the switch has it); missing at the switch (only the participant has
//! it); a status mismatch (kind or status differ); an amount mismatch (same
//! status, but the currency, the amount or the settled amount differ). The
//! response-code, reversal, freeze and card columns are for people and are
//! not compared: a switch that lost a bank's answer has none to show.

use std::collections::BTreeMap;

use serde::Serialize;

use super::file::{Line, ParticipantFile};

/// What differs about one key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DifferenceKind {
    /// The switch has it, the participant does not.
    MissingAtParticipant,
    /// The participant has it, the switch does not.
    MissingAtSwitch,
    /// Both have it, with another kind or status.
    StatusMismatch,
    /// Both have it with the same status, with another currency, amount or settled amount.
    AmountMismatch,
}

impl DifferenceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DifferenceKind::MissingAtParticipant => "missing at participant",
            DifferenceKind::MissingAtSwitch => "missing at switch",
            DifferenceKind::StatusMismatch => "status mismatch",
            DifferenceKind::AmountMismatch => "amount mismatch",
        }
    }
}

/// One line as reported.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct LineView {
    pub kind: String,
    pub currency: String,
    pub amount: String,
    pub status: String,
    pub settled: String,
    pub response_code: String,
    pub reversal: String,
}

impl From<&Line> for LineView {
    fn from(l: &Line) -> Self {
        LineView {
            kind: l.kind.to_string(),
            currency: format!("{:03}", l.currency),
            amount: l.amount.to_string(),
            status: l.status.to_string(),
            settled: l.settled.to_string(),
            response_code: l.response_code.clone(),
            reversal: l.reversal.clone(),
        }
    }
}

/// A key on which the two files disagree.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct Difference {
    pub difference: DifferenceKind,
    pub key: String,
    /// The participant's line.
    pub ours: Option<LineView>,
    /// The switch's line.
    pub theirs: Option<LineView>,
}

/// The outcome of comparing two files.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct Reconciliation {
    pub role: String,
    pub participant: String,
    pub date: String,
    pub matched: usize,
    pub missing_at_participant: usize,
    pub missing_at_switch: usize,
    pub status_mismatches: usize,
    pub amount_mismatches: usize,
    /// Sorted by key.
    pub differences: Vec<Difference>,
}

impl Reconciliation {
    pub fn is_clean(&self) -> bool {
        self.differences.is_empty()
    }

    /// For people: the counts, then one line per difference.
    pub fn report(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "reconciliation of {} {} for settlement date {}",
            self.role, self.participant, self.date
        );
        let _ = writeln!(out, "  matched                 {:>8}", self.matched);
        let _ = writeln!(
            out,
            "  missing at participant  {:>8}",
            self.missing_at_participant
        );
        let _ = writeln!(
            out,
            "  missing at switch       {:>8}",
            self.missing_at_switch
        );
        let _ = writeln!(
            out,
            "  status mismatches       {:>8}",
            self.status_mismatches
        );
        let _ = writeln!(
            out,
            "  amount mismatches       {:>8}",
            self.amount_mismatches
        );
        if self.differences.is_empty() {
            out.push_str("no differences\n");
            return out;
        }
        let _ = writeln!(out, "{} difference(s):", self.differences.len());
        let show = |l: &Option<LineView>| match l {
            Some(l) => format!(
                "{} {} {} {} (settled {})",
                l.kind, l.amount, l.currency, l.status, l.settled
            ),
            None => "-".to_string(),
        };
        for d in &self.differences {
            let _ = writeln!(
                out,
                "  {:<22} {}  ours: {}  switch: {}",
                d.difference.as_str(),
                d.key,
                show(&d.ours),
                show(&d.theirs)
            );
        }
        out
    }
}

/// Why two files cannot be compared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Incomparable(pub String);

/// Compares the participant's file (`ours`) with the switch's (`theirs`).
pub fn reconcile(
    ours: &ParticipantFile,
    theirs: &ParticipantFile,
) -> Result<Reconciliation, Incomparable> {
    let (a, b) = (&ours.header, &theirs.header);
    if a.role != b.role || a.participant != b.participant {
        return Err(Incomparable(format!(
            "the files are for different participants: {} {} and {} {}",
            a.role, a.participant, b.role, b.participant
        )));
    }
    if a.date != b.date {
        return Err(Incomparable(format!(
            "the files are for different settlement dates: {} and {}",
            a.date, b.date
        )));
    }
    let mine: BTreeMap<&str, &Line> = ours.lines.iter().map(|l| (l.key.as_str(), l)).collect();
    let switch: BTreeMap<&str, &Line> = theirs.lines.iter().map(|l| (l.key.as_str(), l)).collect();
    let mut keys: Vec<&str> = mine.keys().chain(switch.keys()).copied().collect();
    keys.sort_unstable();
    keys.dedup();
    let mut matched = 0;
    let mut differences = Vec::new();
    for key in keys {
        let (o, t) = (mine.get(key).copied(), switch.get(key).copied());
        let difference = match (o, t) {
            (None, Some(_)) => DifferenceKind::MissingAtParticipant,
            (Some(_), None) => DifferenceKind::MissingAtSwitch,
            (Some(o), Some(t)) if o.kind != t.kind || o.status != t.status => {
                DifferenceKind::StatusMismatch
            }
            (Some(o), Some(t))
                if o.currency != t.currency || o.amount != t.amount || o.settled != t.settled =>
            {
                DifferenceKind::AmountMismatch
            }
            _ => {
                matched += 1;
                continue;
            }
        };
        differences.push(Difference {
            difference,
            key: key.to_string(),
            ours: o.map(LineView::from),
            theirs: t.map(LineView::from),
        });
    }
    let count = |k: DifferenceKind| differences.iter().filter(|d| d.difference == k).count();
    Ok(Reconciliation {
        role: a.role.to_string(),
        participant: a.participant.clone(),
        date: a.date.format("%Y-%m-%d").to_string(),
        matched,
        missing_at_participant: count(DifferenceKind::MissingAtParticipant),
        missing_at_switch: count(DifferenceKind::MissingAtSwitch),
        status_mismatches: count(DifferenceKind::StatusMismatch),
        amount_mismatches: count(DifferenceKind::AmountMismatch),
        differences,
    })
}

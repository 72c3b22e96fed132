//! The risk ledger: the events cumulative and velocity rules count, and the
//! rule hits `switchboard risk report` lists.
//!
//! A limit is judged and its event recorded in one transaction
//! ([`RiskLedger::take`]): on PostgreSQL each (rule, subject) is locked for
//! the transaction first, so two instances judging the same card wait for
//! each other and cannot both let it past its limit; on SQLite the single
//! writer does the same. Events older than a limit's window are deleted as
//! the limit is judged, so the ledger holds at most a day of events per
//! active card.

use std::sync::Arc;

use async_trait::async_trait;

use super::StoreResult;

/// One limit to judge for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// Shared with the rule and with the request's other limits: a limit
    /// is made for every counted rule of every request, without copying
    /// names.
    pub rule: Arc<str>,
    /// Who is counted: `card:<keyed digest>`, `wallet:<F32>`, `packet:<key>`.
    pub subject: Arc<str>,
    /// Events before this instant (ms since the epoch) no longer count: the
    /// settlement day's start, or now minus a sliding window.
    pub since_ms: i64,
    /// The sliding window's length (`since_ms` moves with every request);
    /// `None`: `since_ms` is a fixed start, the settlement day's.
    pub window_ms: Option<i64>,
    pub max_count: Option<u64>,
    pub max_sum_minor: Option<u64>,
    /// What this request adds to the sum.
    pub amount_minor: u64,
    /// An enforced limit that is exceeded stops every event of the request
    /// from being recorded (the request is declined).
    pub enforce: bool,
    /// Counts distinct values instead of events: this request's value (a
    /// packet), counted once however many events carry it.
    pub distinct: Option<String>,
    /// Whether passing records an event (false: a limit only read here and
    /// counted elsewhere, as probing is counted at unfreeze).
    pub record: bool,
}

impl Limit {
    /// Whether `count` events summing `sum` leave room for this request.
    pub fn admits(&self, count: u64, sum: u64) -> bool {
        if !self.record {
            // Read-only (probing): exceeded once the count reached the maximum.
            return self.max_count.is_none_or(|max| count < max);
        }
        self.max_count
            .is_none_or(|max| count.saturating_add(1) <= max)
            && self
                .max_sum_minor
                .is_none_or(|max| sum.saturating_add(self.amount_minor) <= max)
    }
}

/// A rule that matched a request, as the report lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub at_ms: i64,
    /// The settlement day (YYYY-MM-DD) it counts to.
    pub day: String,
    pub rule: String,
    /// `enforce` (declined) or `observe` (would have been).
    pub mode: String,
    pub code: String,
    /// First six and last four digits only.
    pub card: String,
    /// The wallet institution (F32).
    pub institution: String,
}

/// A line of the report: one rule, card and institution on one day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HitCount {
    pub rule: String,
    pub mode: String,
    pub code: String,
    pub card: String,
    pub institution: String,
    pub hits: u64,
}

#[async_trait]
pub trait RiskLedger: Send + Sync {
    /// Judges `limits` at `now_ms` in one transaction and returns the indices
    /// of those exceeded. Unless an enforced one is exceeded, the events of
    /// every recording limit are added.
    async fn take(&self, limits: Vec<Limit>, now_ms: i64) -> StoreResult<Vec<usize>>;

    /// Deletes every counter event before `at_ms`: those of subjects not
    /// seen again (a packet paid out, a card gone quiet).
    async fn forget_before(&self, at_ms: i64) -> StoreResult<()>;

    /// Deletes the events of `rule` before `at_ms`: those its limit no
    /// longer counts (before its window, before the settlement day).
    async fn forget_rule_before(&self, rule: &str, at_ms: i64) -> StoreResult<()>;

    /// Records rule hits.
    async fn record_hits(&self, hits: Vec<Hit>) -> StoreResult<()>;

    /// The hits of a settlement day, counted by rule, card and institution,
    /// most first.
    async fn hits_of_day(&self, day: &str) -> StoreResult<Vec<HitCount>>;
}

/// Decides from each limit's current (count, sum) which are exceeded and
/// whether the request's events are recorded: the part of `take` every
/// store shares.
pub fn judge(limits: &[Limit], totals: &[(u64, u64)]) -> (Vec<usize>, bool) {
    let exceeded: Vec<usize> = limits
        .iter()
        .zip(totals)
        .enumerate()
        .filter(|(_, (l, &(count, sum)))| !l.admits(count, sum))
        .map(|(i, _)| i)
        .collect();
    let declined = exceeded.iter().any(|&i| limits[i].enforce);
    (exceeded, !declined)
}

/// The SQL both stores run, `$N` parameters (SQLite takes `?N`).
pub(crate) const SQL_FORGET: &str =
    "DELETE FROM risk_events WHERE rule = $1 AND subject = $2 AND at_ms < $3";
pub(crate) const SQL_TOTALS: &str =
    "SELECT count(*), CAST(coalesce(sum(amount_minor), 0) AS BIGINT) FROM risk_events \
     WHERE rule = $1 AND subject = $2 AND at_ms >= $3";
/// For a distinct limit: the values other than this request's ($4), so the
/// request itself adds one.
pub(crate) const SQL_DISTINCT: &str =
    "SELECT count(DISTINCT detail), CAST(0 AS BIGINT) FROM risk_events \
     WHERE rule = $1 AND subject = $2 AND at_ms >= $3 AND detail <> $4";
pub(crate) const SQL_ADD: &str =
    "INSERT INTO risk_events (rule, subject, at_ms, amount_minor, detail) VALUES ($1, $2, $3, $4, $5)";
pub(crate) const SQL_SWEEP: &str = "DELETE FROM risk_events WHERE at_ms < $1";
pub(crate) const SQL_FORGET_RULE: &str = "DELETE FROM risk_events WHERE rule = $1 AND at_ms < $2";
pub(crate) const SQL_HIT: &str =
    "INSERT INTO risk_hits (day, at_ms, rule, mode, code, card, institution) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";
pub(crate) const SQL_HITS_OF_DAY: &str =
    "SELECT rule, mode, code, card, institution, count(*) FROM risk_hits \
     WHERE day = $1 GROUP BY rule, mode, code, card, institution \
     ORDER BY count(*) DESC, rule, card, institution";

/// A line of [`SQL_HITS_OF_DAY`], as both stores read it.
pub(super) fn hit_count_row(r: &impl super::columns::Columns) -> StoreResult<HitCount> {
    Ok(HitCount {
        rule: r.text(0)?,
        mode: r.text(1)?,
        code: r.text(2)?,
        card: r.text(3)?,
        institution: r.text(4)?,
        hits: r.bigint(5)?.max(0) as u64,
    })
}

/// The amounts of `limits` as the SQL stores hold them.
pub(super) fn amounts_of(limits: &[Limit]) -> StoreResult<Vec<i64>> {
    limits
        .iter()
        .map(|l| super::columns::amount_in("risk amount", l.amount_minor))
        .collect()
}

/// Refuses, as [`amounts_of`] does, amounts the SQL stores cannot hold,
/// without collecting them (the embedded store judges in memory).
pub(super) fn check_amounts(limits: &[Limit]) -> StoreResult<()> {
    limits
        .iter()
        .try_for_each(|l| super::columns::amount_in("risk amount", l.amount_minor).map(drop))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(max_count: Option<u64>, max_sum: Option<u64>, amount: u64, record: bool) -> Limit {
        Limit {
            rule: "r".into(),
            subject: "s".into(),
            since_ms: 0,
            window_ms: None,
            max_count,
            max_sum_minor: max_sum,
            amount_minor: amount,
            enforce: true,
            distinct: None,
            record,
        }
    }

    #[test]
    fn at_the_limit_passes_and_one_past_it_does_not() {
        assert!(limit(Some(3), None, 1, true).admits(2, 0));
        assert!(!limit(Some(3), None, 1, true).admits(3, 0));
        assert!(limit(None, Some(100), 40, true).admits(1, 60));
        assert!(!limit(None, Some(100), 41, true).admits(1, 60));
        // Read-only (probing): exceeded once the count reached the maximum.
        assert!(limit(Some(2), None, 0, false).admits(1, 0));
        assert!(!limit(Some(2), None, 0, false).admits(2, 0));
    }

    #[test]
    fn an_observed_limit_exceeded_still_records() {
        let mut observed = limit(Some(1), None, 1, true);
        observed.enforce = false;
        let (exceeded, record) = judge(&[observed], &[(1, 0)]);
        assert_eq!(exceeded, [0]);
        assert!(record);
        let (exceeded, record) = judge(&[limit(Some(1), None, 1, true)], &[(1, 0)]);
        assert_eq!(exceeded, [0]);
        assert!(!record);
    }
}

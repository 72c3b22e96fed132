//! Journal retention (`[store] journal_retention_days`): the raw messages of
//! old settlement days are emptied, at start and then hourly, in bounded
//! batches, once their clearing is done. The rows stay, with their summary
//! columns (time, peer, MTI, F3, F11, F7, F32, F39, the card masked, the
//! amount): what happened stays answerable, the card data goes.
//!
//! A day `D` is purged when it is more than `N` settlement days before today
//! and `switchboard clear` has recorded `D`, `D - 1` and `D + 1` as cleared
//! (clearing a day reads an hour into each neighbour: `clearing::clear::MARGIN_MS`).
//! Nothing else reads the journal: recovery reads freezes and sagas, the
//! store-and-forward queue keeps its own messages, resends are answered from
//! the stored answers, and reconciliation reads clearing files.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{Days, NaiveDate};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::clearing::Settlement;
use crate::clock::Clock;
use crate::store::{ClearedDay, Maintenance, StoreError};

/// Journal rows emptied per statement: one short write at a time, so the
/// switch's own commands run between them.
pub const BATCH: usize = 1000;

/// How often the purge runs.
pub const EVERY: Duration = Duration::from_secs(3600);

/// The days whose journal messages may be purged now: cleared, neighbours
/// cleared, older than `retention_days` before `today`, not purged yet.
pub fn purgeable(cleared: &[ClearedDay], today: NaiveDate, retention_days: u32) -> Vec<NaiveDate> {
    let dates: BTreeSet<NaiveDate> = cleared.iter().map(|d| d.date).collect();
    let Some(newest_old) = today.checked_sub_days(Days::new(u64::from(retention_days) + 1)) else {
        return Vec::new();
    };
    cleared
        .iter()
        .filter(|d| d.purged_at_ms.is_none() && d.date <= newest_old)
        .filter(|d| {
            let neighbours = [d.date.pred_opt(), d.date.succ_opt()];
            neighbours
                .iter()
                .all(|n| n.is_some_and(|n| dates.contains(&n)))
        })
        .map(|d| d.date)
        .collect()
}

/// One pass: purges every purgeable day, logging each; returns the rows emptied.
pub async fn purge(
    maintenance: &dyn Maintenance,
    settlement: &Settlement,
    clock: &dyn Clock,
    retention_days: u32,
) -> Result<usize, StoreError> {
    let today = settlement.date_of_ms(clock.now_ms());
    let cleared = maintenance.cleared_days().await?;
    let mut total = 0;
    for date in purgeable(&cleared, today, retention_days) {
        // Recorded first: from now on the day cannot be cleared again, its
        // messages being on their way out.
        maintenance.mark_purge(date, clock.now_ms(), false).await?;
        let (from, to) = settlement.window_ms(date);
        let mut rows = 0;
        loop {
            let n = maintenance.purge_journal(from, to, BATCH).await?;
            rows += n;
            if n < BATCH {
                break;
            }
            // Room for the switch's own writes between batches.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        maintenance.mark_purge(date, clock.now_ms(), true).await?;
        info!(day = %date, rows, retention_days, "journal messages purged (retention)");
        total += rows;
    }
    Ok(total)
}

/// Purges at start and every [`EVERY`] until `shutdown`.
pub async fn run(
    maintenance: Arc<dyn Maintenance>,
    settlement: Settlement,
    clock: Arc<dyn Clock>,
    retention_days: u32,
    shutdown: CancellationToken,
) {
    info!(
        retention_days,
        "journal retention: messages of cleared settlement days older than this are purged hourly"
    );
    loop {
        if let Err(e) = purge(
            maintenance.as_ref(),
            &settlement,
            clock.as_ref(),
            retention_days,
        )
        .await
        {
            warn!(error = %e, "journal retention: purge failed; trying again in an hour");
        }
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = shutdown.cancelled() => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    fn cleared(dates: &[&str], purged: &[&str]) -> Vec<ClearedDay> {
        dates
            .iter()
            .map(|d| ClearedDay {
                date: day(d),
                cleared_at_ms: 1,
                purge_began_ms: purged.contains(d).then_some(1),
                purged_at_ms: purged.contains(d).then_some(1),
            })
            .collect()
    }

    #[test]
    fn only_old_days_cleared_with_their_neighbours_and_not_purged_yet_are_purgeable() {
        let today = day("2026-12-10");
        let days = cleared(
            &[
                "2026-11-01",
                "2026-11-02",
                "2026-11-03",
                "2026-11-04",
                "2026-11-06",
                "2026-12-06",
                "2026-12-07",
                "2026-12-08",
                "2026-12-09",
            ],
            &["2026-11-02"],
        );
        // 11-01: 10-31 not cleared. 11-02: purged already. 11-04: 11-05 not
        // cleared. 12-07 is three days back: kept with retention 3, purged with 2.
        assert_eq!(purgeable(&days, today, 3), vec![day("2026-11-03")]);
        assert_eq!(
            purgeable(&days, today, 2),
            vec![day("2026-11-03"), day("2026-12-07")]
        );
    }
}

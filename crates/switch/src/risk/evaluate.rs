//! Judging one request: the allow list, then the rules that need nothing but
//! the request (block lists, amount limits, a share's minimum), then, in one
//! store transaction, the counted ones (daily totals, velocity, probing, a
//! packet's share count). The first enforced rule that matches declines the
//! request; every matching rule, enforced or observed, is logged as a
//! structured warning, counted in the [`Tally`](super::Tally) and recorded
//! as a hit for `switchboard risk report`.

use std::sync::Arc;

use iso8583::mask::{mask_pan, Masked};
use iso8583::ResponseCode;
use tracing::warn;

use super::rules::{Check, Mode, Per, RequestKind, Rule, Rules};
use super::{card_subject, Risk};
use crate::clearing::Settlement;
use crate::dialect::{FreezeKey, InstitutionId};
use crate::store::{Hit, Limit, Store, StoreResult};

/// What the rules are shown of a request.
#[derive(Debug, Clone)]
pub struct Screened<'a> {
    pub kind: RequestKind,
    /// The payer's card for a freeze, the receiver's for a receive.
    pub pan: &'a str,
    /// The wallet that sent it (F32), to match rules by.
    pub institution: InstitutionId,
    /// F32 as the wallet sent it, for logs and the report.
    pub wallet: &'a str,
    pub amount_minor: u64,
    pub currency: u16,
    /// The packet a receive takes from.
    pub packet: Option<FreezeKey>,
}

/// The rules' decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Declined by the enforced rule `rule` with `code`.
    Decline {
        rule: String,
        code: ResponseCode,
    },
}

/// Counter events are kept this long at most: a day for daily and velocity
/// rules, a packet's life (a week by default, `max_freeze_age`) and a day
/// for its share count.
const KEEP_EVENTS_MS: i64 = 8 * 24 * 3_600_000;

impl Risk {
    /// Judges a request at `now_ms` by `rules`, the snapshot the caller
    /// took with [`Risk::rules`] (one snapshot for everything it decides
    /// about the request, however the rules are reloaded meanwhile). A
    /// store fault is returned (the caller answers 96 and nothing moves).
    pub async fn screen(
        &self,
        rules: &Rules,
        store: &dyn Store,
        settlement: &Settlement,
        now_ms: i64,
        request: &Screened<'_>,
    ) -> StoreResult<Verdict> {
        if rules.rules.is_empty() || rules.allows(request.pan) {
            return Ok(Verdict::Pass);
        }
        let day_start_ms = self.day_start_ms(settlement, now_ms);
        let mut hits: Vec<&Rule> = Vec::new();
        // Sized once for every rule: a request is judged on the hot path.
        let mut limits: Vec<Limit> = Vec::with_capacity(rules.rules.len());
        let mut counted: Vec<&Rule> = Vec::with_capacity(rules.rules.len());
        // The card's keyed digest (and the wallet's, the packet's subject),
        // made once however many rules count it.
        let mut subjects = Subjects::default();
        for rule in rules
            .rules
            .iter()
            .filter(|r| r.covers(&request.institution, request.pan))
        {
            if matches_alone(rule, request) {
                hits.push(rule);
                if rule.mode == Mode::Enforce {
                    // Declined before anything is counted.
                    return self.decide(store, settlement, now_ms, request, &hits).await;
                }
            }
            if let Some(limit) = limit_of(rule, request, &mut subjects, now_ms, day_start_ms) {
                limits.push(limit);
                counted.push(rule);
            }
        }
        if !limits.is_empty() {
            if self.sweep_due(now_ms) {
                sweep(store, &rules.rules, now_ms, day_start_ms).await;
            }
            for i in store.take(limits, now_ms).await? {
                hits.push(counted[i]);
            }
        }
        self.decide(store, settlement, now_ms, request, &hits).await
    }

    /// Logs, counts and records the hits; the first enforced one declines.
    async fn decide(
        &self,
        store: &dyn Store,
        settlement: &Settlement,
        now_ms: i64,
        request: &Screened<'_>,
        hits: &[&Rule],
    ) -> StoreResult<Verdict> {
        if hits.is_empty() {
            return Ok(Verdict::Pass);
        }
        let day = settlement.date_of_ms(now_ms).to_string();
        let card = mask_pan(request.pan);
        let institution = request.wallet.to_string();
        for rule in hits {
            warn!(
                rule = %rule.id,
                mode = rule.mode.as_str(),
                code = %rule.code,
                request = request.kind.as_str(),
                card = %Masked(request.pan),
                institution = %institution,
                amount_minor = request.amount_minor,
                "risk rule hit"
            );
            self.tally.count(&rule.id, rule.mode);
        }
        let recorded = hits
            .iter()
            .map(|rule| Hit {
                at_ms: now_ms,
                day: day.clone(),
                rule: rule.id.to_string(),
                mode: rule.mode.as_str().into(),
                code: rule.code.to_string(),
                card: card.clone(),
                institution: institution.clone(),
            })
            .collect();
        if let Err(e) = store.record_hits(recorded).await {
            // The decision stands: the hits are in the log.
            warn!(error = %e, "risk hits not recorded");
        }
        Ok(match hits.iter().find(|r| r.mode == Mode::Enforce) {
            Some(rule) => Verdict::Decline {
                rule: rule.id.to_string(),
                code: rule.code,
            },
            None => Verdict::Pass,
        })
    }

    /// Counts a freeze of `pan` closed by unfreeze without any receive, for
    /// the probing rules that cover it.
    pub async fn note_probe(
        &self,
        store: &dyn Store,
        settlement: &Settlement,
        now_ms: i64,
        pan: &str,
        institution: &InstitutionId,
    ) -> StoreResult<()> {
        let rules = self.rules();
        let day_start_ms = settlement.window_ms(settlement.date_of_ms(now_ms)).0;
        let events: Vec<Limit> = rules
            .rules
            .iter()
            .filter(|r| matches!(r.check, Check::Probing { .. }) && r.covers(institution, pan))
            .map(|r| Limit {
                rule: r.id.clone(),
                subject: card_subject(pan),
                since_ms: day_start_ms,
                window_ms: None,
                max_count: None,
                max_sum_minor: None,
                amount_minor: 0,
                enforce: false,
                distinct: None,
                record: true,
            })
            .collect();
        if events.is_empty() || rules.allows(pan) {
            return Ok(());
        }
        store.take(events, now_ms).await.map(|_| ())
    }
}

/// Deletes the counter events no limit counts any more: each rule's before
/// its start (the settlement day's, its window's), and every rule's (those
/// of rules since removed) after [`KEEP_EVENTS_MS`].
async fn sweep(store: &dyn Store, rules: &[Rule], now_ms: i64, day_start_ms: i64) {
    for rule in rules {
        let start_ms = match &rule.check {
            Check::Daily { .. } | Check::Probing { .. } => day_start_ms,
            Check::Velocity { window_ms, .. } => now_ms - window_ms,
            _ => continue,
        };
        if let Err(e) = store.forget_rule_before(&rule.id, start_ms).await {
            warn!(error = %e, rule = %rule.id, "old risk counter events not swept");
        }
    }
    if let Err(e) = store.forget_before(now_ms - KEEP_EVENTS_MS).await {
        warn!(error = %e, "old risk counter events not swept");
    }
}

/// Whether a rule that needs nothing but the request matches it.
fn matches_alone(rule: &Rule, request: &Screened<'_>) -> bool {
    match &rule.check {
        Check::Block {
            request: kind,
            cards,
            bins,
            institutions,
            ..
        } => {
            kind.is_none_or(|k| k == request.kind)
                && (cards.contains(request.pan)
                    || bins.iter().any(|b| b.contains(request.pan.as_bytes()))
                    || institutions.contains(&request.institution))
        }
        Check::Amount {
            request: kind,
            currency,
            max_minor,
        } => {
            *kind == request.kind
                && *currency == request.currency
                && request.amount_minor > *max_minor
        }
        Check::Shares {
            min_share_minor: Some(min),
            ..
        } => request.kind == RequestKind::Receive && request.amount_minor < *min,
        _ => false,
    }
}

/// The subjects a request's limits count, each made once however many
/// rules count it and shared by their limits.
#[derive(Default)]
struct Subjects {
    card: Option<Arc<str>>,
    wallet: Option<Arc<str>>,
    packet: Option<Arc<str>>,
}

impl Subjects {
    fn of(&mut self, per: Per, request: &Screened<'_>) -> Arc<str> {
        match per {
            Per::Card => self
                .card
                .get_or_insert_with(|| card_subject(request.pan))
                .clone(),
            Per::Wallet => self
                .wallet
                .get_or_insert_with(|| format!("wallet:{}", request.institution).into())
                .clone(),
        }
    }

    fn packet(&mut self, packet: &FreezeKey) -> Arc<str> {
        self.packet
            .get_or_insert_with(|| {
                let mut text = String::with_capacity(PACKET_PREFIX.len() + FreezeKey::TEXT_LEN);
                text.push_str(PACKET_PREFIX);
                packet.push_text(&mut text);
                text.into()
            })
            .clone()
    }

    /// The packet itself, as a distinct count's value: the packet's
    /// subject without its prefix, so the key is formatted once.
    fn packet_value(&mut self, packet: &FreezeKey) -> String {
        self.packet(packet)[PACKET_PREFIX.len()..].to_string()
    }
}

/// How a packet's subject starts.
const PACKET_PREFIX: &str = "packet:";

/// The counted limit a rule puts on a request, if any. `subjects` holds
/// the request's subjects once made.
fn limit_of(
    rule: &Rule,
    request: &Screened<'_>,
    subjects: &mut Subjects,
    now_ms: i64,
    day_start_ms: i64,
) -> Option<Limit> {
    let mut subject = |per: Per| subjects.of(per, request);
    let limit =
        |subject: Arc<str>, since_ms: i64, max_count: Option<u64>, max_sum: Option<u64>| Limit {
            rule: rule.id.clone(),
            subject,
            since_ms,
            window_ms: None,
            max_count,
            max_sum_minor: max_sum,
            amount_minor: request.amount_minor,
            enforce: rule.mode == Mode::Enforce,
            distinct: None,
            record: true,
        };
    match &rule.check {
        Check::Daily {
            request: kind,
            per,
            max_count,
            max_sum_minor,
        } if *kind == request.kind => Some(limit(
            subject(*per),
            day_start_ms,
            *max_count,
            *max_sum_minor,
        )),
        Check::Velocity {
            request: kind,
            per,
            max_count,
            window_ms,
            packets,
        } if *kind == request.kind => {
            let counted = subject(*per);
            Some(Limit {
                // Counting packets: a packet counted once, whatever its receives.
                distinct: request
                    .packet
                    .filter(|_| *packets)
                    .map(|p| subjects.packet_value(&p)),
                window_ms: Some(*window_ms),
                ..limit(counted, now_ms - window_ms, Some(*max_count), None)
            })
        }
        Check::Probing { max_count } if request.kind == RequestKind::Freeze => Some(Limit {
            record: false,
            ..limit(subject(Per::Card), day_start_ms, Some(*max_count), None)
        }),
        Check::Shares {
            max_shares: Some(max),
            ..
        } if request.kind == RequestKind::Receive => request.packet.map(|packet| Limit {
            window_ms: Some(KEEP_EVENTS_MS),
            ..limit(
                subjects.packet(&packet),
                now_ms - KEEP_EVENTS_MS,
                Some(*max),
                None,
            )
        }),
        _ => None,
    }
}

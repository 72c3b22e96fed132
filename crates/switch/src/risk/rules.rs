//! The rules file (`[risk] rules_file`): TOML, read whole and validated
//! before it replaces the rules in force, so a bad file is refused with the
//! place and the reason and the old rules stay.
//!
//! ```toml
//! [allow]                      # never judged by any rule: test cards
//! cards = ["6222020000000018"]
//! bins = ["999999"]
//!
//! [[rules]]
//! id = "freeze-over-5000-cny"  # names the rule in logs and reports
//! kind = "amount"              # amount | daily | velocity | probing | shares | block
//! mode = "enforce"             # enforce | observe
//! request = "freeze"           # freeze | receive
//! currency = "156"
//! max_minor = 500000
//! code = "61"                  # optional: the kind's default otherwise
//! institutions = ["01020000"]  # optional scope: the wallets (F32) it judges
//! bins = ["622202"]            # optional scope: the cards it judges
//! ```

use std::collections::BTreeSet;
use std::path::Path;

use iso8583::ResponseCode;
use serde::Deserialize;

use crate::dialect::InstitutionId;
use crate::routing::BinRange;

/// A rules file that cannot be used: where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {reason}")]
pub struct RulesError {
    /// `rules[2].max_minor`, `line 14`, `(file)`.
    pub at: String,
    pub reason: String,
}

fn bad(at: impl Into<String>, reason: impl Into<String>) -> RulesError {
    RulesError {
        at: at.into(),
        reason: reason.into(),
    }
}

/// Whether a rule declines or only says it would have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Enforce,
    Observe,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Observe => "observe",
        }
    }
}

/// The wallet requests a rule judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestKind {
    Freeze,
    Receive,
}

impl RequestKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Freeze => "freeze",
            RequestKind::Receive => "receive",
        }
    }
}

/// Whose requests a cumulative or velocity rule counts together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Per {
    /// The request's card: the payer's for a freeze, the receiver's for a receive.
    Card,
    /// The wallet institution that sent it (F32).
    Wallet,
}

/// What a rule checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// One request's amount (F4) in one currency, at most `max_minor`.
    Amount {
        request: RequestKind,
        currency: u16,
        max_minor: u64,
    },
    /// Per settlement day (restarting at the cutoff): at most `max_count`
    /// requests and at most `max_sum_minor` in total.
    Daily {
        request: RequestKind,
        per: Per,
        max_count: Option<u64>,
        max_sum_minor: Option<u64>,
    },
    /// At most `max_count` requests in any `window_ms` (with
    /// `packets`: receives from at most `max_count` distinct packets).
    Velocity {
        request: RequestKind,
        per: Per,
        max_count: u64,
        window_ms: i64,
        packets: bool,
    },
    /// A card whose freezes were closed by unfreeze without any receive
    /// `max_count` times this settlement day gets no further freeze.
    Probing { max_count: u64 },
    /// A packet pays at most `max_shares` receives, each at least
    /// `min_share_minor`.
    Shares {
        max_shares: Option<u64>,
        min_share_minor: Option<u64>,
    },
    /// Cards, BINs or wallet institutions refused outright.
    Block {
        request: Option<RequestKind>,
        cards: BTreeSet<String>,
        bins: Vec<BinRange>,
        institutions: Vec<InstitutionId>,
        reason: String,
    },
}

/// One rule, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub id: std::sync::Arc<str>,
    pub mode: Mode,
    pub code: ResponseCode,
    pub check: Check,
    /// Only requests from these wallet institutions; empty: all.
    pub institutions: Vec<InstitutionId>,
    /// Only cards in these BIN ranges; empty: all.
    pub bins: Vec<BinRange>,
}

impl Rule {
    /// Whether the rule's scope covers a request from `institution` on `pan`.
    pub fn covers(&self, institution: &InstitutionId, pan: &str) -> bool {
        (self.institutions.is_empty() || self.institutions.contains(institution))
            && (self.bins.is_empty() || self.bins.iter().any(|b| b.contains(pan.as_bytes())))
    }
}

/// The rules in force.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    pub rules: Vec<Rule>,
    allow_cards: BTreeSet<String>,
    allow_bins: Vec<BinRange>,
}

impl Rules {
    /// Reads and validates a rules file.
    pub fn load(path: &Path) -> Result<Rules, RulesError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| bad("(file)", format!("cannot read {}: {e}", path.display())))?;
        Rules::parse(&text)
    }

    /// Whether a card is exempt from every rule (the allow list).
    pub fn allows(&self, pan: &str) -> bool {
        self.allow_cards.contains(pan) || self.allow_bins.iter().any(|b| b.contains(pan.as_bytes()))
    }

    /// Validates rules text.
    pub fn parse(text: &str) -> Result<Rules, RulesError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|s| format!("line {}", text[..s.start].matches('\n').count() + 1))
                .unwrap_or_else(|| "(file)".into());
            bad(at, e.message().to_string())
        })?;
        let allow = raw.allow.unwrap_or_default();
        let allow_cards = cards("allow.cards", &allow.cards)?;
        let allow_bins = bins("allow.bins", &allow.bins)?;
        let mut rules: Vec<Rule> = Vec::with_capacity(raw.rules.len());
        for (i, r) in raw.rules.into_iter().enumerate() {
            let rule = rule(&format!("rules[{i}]"), r)?;
            if rules.iter().any(|o| o.id == rule.id) {
                return Err(bad(
                    format!("rules[{i}].id"),
                    format!("{:?} names two rules", rule.id),
                ));
            }
            rules.push(rule);
        }
        Ok(Rules {
            rules,
            allow_cards,
            allow_bins,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    allow: Option<RawAllow>,
    #[serde(default)]
    rules: Vec<RawRule>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAllow {
    #[serde(default)]
    cards: Vec<String>,
    #[serde(default)]
    bins: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
enum Kind {
    Amount,
    Daily,
    Velocity,
    Probing,
    Shares,
    Block,
}

/// What a velocity rule counts.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Counted {
    Requests,
    Packets,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: String,
    kind: Kind,
    mode: Mode,
    code: Option<String>,
    request: Option<RequestKind>,
    per: Option<Per>,
    currency: Option<String>,
    max_minor: Option<u64>,
    max_count: Option<u64>,
    max_sum_minor: Option<u64>,
    window_seconds: Option<u64>,
    count: Option<Counted>,
    max_shares: Option<u64>,
    min_share_minor: Option<u64>,
    #[serde(default)]
    cards: Vec<String>,
    #[serde(default)]
    bins: Vec<String>,
    #[serde(default)]
    institutions: Vec<String>,
    reason: Option<String>,
}

/// The longest sliding window: a day, the longest any counter is kept.
const MAX_WINDOW_SECONDS: u64 = 24 * 3600;

fn rule(at: &str, r: RawRule) -> Result<Rule, RulesError> {
    let k = |f: &str| format!("{at}.{f}");
    if r.id.is_empty()
        || r.id.len() > 64
        || !r
            .id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
    {
        return Err(bad(
            k("id"),
            format!("{:?}: 1 to 64 letters, digits, '-', '_' or '.'", r.id),
        ));
    }
    let request = |what: &str| {
        r.request.ok_or_else(|| {
            bad(
                k("request"),
                format!("a {what} rule needs `request = \"freeze\"` or \"receive\""),
            )
        })
    };
    let positive = |field: &str, v: Option<u64>| match v {
        Some(0) => Err(bad(k(field), "must be at least 1")),
        v => Ok(v),
    };
    let required = |field: &str, v: Option<u64>| {
        positive(field, v)?.ok_or_else(|| bad(k(field), "required for this kind of rule"))
    };
    let exceeds_amount = ResponseCode::EXCEEDS_AMOUNT_LIMIT;
    let (check, default_code) = match r.kind {
        Kind::Amount => {
            let currency = r
                .currency
                .as_deref()
                .ok_or_else(|| bad(k("currency"), "an amount rule needs a currency (\"156\")"))?;
            let currency = currency
                .parse::<u16>()
                .ok()
                .filter(|_| currency.len() == 3 && currency.bytes().all(|c| c.is_ascii_digit()))
                .ok_or_else(|| {
                    bad(
                        k("currency"),
                        format!("{currency:?} is not a 3-digit ISO 4217 code"),
                    )
                })?;
            (
                Check::Amount {
                    request: request("amount")?,
                    currency,
                    max_minor: required("max_minor", r.max_minor)?,
                },
                exceeds_amount,
            )
        }
        Kind::Daily => {
            let max_count = positive("max_count", r.max_count)?;
            let max_sum_minor = positive("max_sum_minor", r.max_sum_minor)?;
            if max_count.is_none() && max_sum_minor.is_none() {
                return Err(bad(
                    at,
                    "a daily rule needs max_count, max_sum_minor or both",
                ));
            }
            (
                Check::Daily {
                    request: request("daily")?,
                    per: r.per.unwrap_or(Per::Card),
                    max_count,
                    max_sum_minor,
                },
                if max_sum_minor.is_some() {
                    exceeds_amount
                } else {
                    EXCEEDS_FREQUENCY_LIMIT
                },
            )
        }
        Kind::Velocity => {
            let window = required("window_seconds", r.window_seconds)?;
            if window > MAX_WINDOW_SECONDS {
                return Err(bad(
                    k("window_seconds"),
                    format!("at most {MAX_WINDOW_SECONDS} (a day): use a daily rule"),
                ));
            }
            let request = request("velocity")?;
            let packets = r.count == Some(Counted::Packets);
            if packets && request != RequestKind::Receive {
                return Err(bad(
                    k("count"),
                    "count = \"packets\" counts the packets a card receives from: request = \"receive\"",
                ));
            }
            (
                Check::Velocity {
                    request,
                    per: r.per.unwrap_or(Per::Card),
                    max_count: required("max_count", r.max_count)?,
                    window_ms: window as i64 * 1000,
                    packets,
                },
                EXCEEDS_FREQUENCY_LIMIT,
            )
        }
        Kind::Probing => (
            Check::Probing {
                max_count: required("max_count", r.max_count)?,
            },
            EXCEEDS_FREQUENCY_LIMIT,
        ),
        Kind::Shares => {
            let max_shares = positive("max_shares", r.max_shares)?;
            let min_share_minor = positive("min_share_minor", r.min_share_minor)?;
            if max_shares.is_none() && min_share_minor.is_none() {
                return Err(bad(
                    at,
                    "a shares rule needs max_shares, min_share_minor or both",
                ));
            }
            (
                Check::Shares {
                    max_shares,
                    min_share_minor,
                },
                TRANSACTION_NOT_PERMITTED,
            )
        }
        Kind::Block => {
            let cards = cards(&k("cards"), &r.cards)?;
            let bins = bins(&k("bins"), &r.bins)?;
            let institutions = institutions(&k("institutions"), &r.institutions)?;
            if cards.is_empty() && bins.is_empty() && institutions.is_empty() {
                return Err(bad(
                    at,
                    "a block rule needs cards, bins or institutions to block",
                ));
            }
            let reason = r
                .reason
                .clone()
                .filter(|s| !s.trim().is_empty())
                .ok_or_else(|| bad(k("reason"), "a block rule says why"))?;
            let code = if cards.is_empty() && bins.is_empty() {
                TRANSACTION_NOT_PERMITTED
            } else {
                RESTRICTED_CARD
            };
            (
                Check::Block {
                    request: r.request,
                    cards,
                    bins,
                    institutions,
                    reason,
                },
                code,
            )
        }
    };
    let code = match &r.code {
        None => default_code,
        Some(c) => c
            .parse::<ResponseCode>()
            .ok()
            .filter(|c| !c.is_approved())
            .ok_or_else(|| {
                bad(
                    k("code"),
                    format!(
                        "{c:?} is not a declining response code (two letters or digits, not 00)"
                    ),
                )
            })?,
    };
    // A block rule's lists are what it blocks, not its scope.
    let (institutions, scope_bins) = match check {
        Check::Block { .. } => (Vec::new(), Vec::new()),
        _ => {
            if !r.cards.is_empty() {
                return Err(bad(k("cards"), "only block rules and [allow] list cards"));
            }
            (
                institutions(&k("institutions"), &r.institutions)?,
                bins(&k("bins"), &r.bins)?,
            )
        }
    };
    Ok(Rule {
        id: r.id.into(),
        mode: r.mode,
        code,
        check,
        institutions,
        bins: scope_bins,
    })
}

/// 65: more requests than a frequency limit allows.
pub const EXCEEDS_FREQUENCY_LIMIT: ResponseCode = match ResponseCode::from_bytes(b"65") {
    Ok(c) => c,
    Err(_) => unreachable!(),
};
/// 62: a card the network refuses.
pub const RESTRICTED_CARD: ResponseCode = match ResponseCode::from_bytes(b"62") {
    Ok(c) => c,
    Err(_) => unreachable!(),
};
/// 57: a request the network does not permit (a blocked wallet, a packet's
/// shares).
pub const TRANSACTION_NOT_PERMITTED: ResponseCode = match ResponseCode::from_bytes(b"57") {
    Ok(c) => c,
    Err(_) => unreachable!(),
};

fn cards(at: &str, list: &[String]) -> Result<BTreeSet<String>, RulesError> {
    list.iter()
        .map(|c| {
            if (12..=19).contains(&c.len()) && c.bytes().all(|d| d.is_ascii_digit()) {
                Ok(c.clone())
            } else {
                // The value may be a card number: say only how it is wrong.
                Err(bad(
                    at,
                    format!(
                        "an entry of {} characters is not a card number of 12 to 19 digits",
                        c.len()
                    ),
                ))
            }
        })
        .collect()
}

fn bins(at: &str, list: &[String]) -> Result<Vec<BinRange>, RulesError> {
    list.iter()
        .map(|s| {
            BinRange::parse(s).ok_or_else(|| {
                bad(
                    at,
                    format!("{s:?} is not a BIN (622202) or range (621700-621799)"),
                )
            })
        })
        .collect()
}

fn institutions(at: &str, list: &[String]) -> Result<Vec<InstitutionId>, RulesError> {
    list.iter()
        .map(|v| {
            InstitutionId::from_field(32, v.as_bytes()).map_err(|_| {
                bad(
                    at,
                    format!("{v:?} is not an institution id of 1 to 11 digits"),
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_parses_with_its_default_code() {
        let rules = Rules::parse(
            r#"
            [allow]
            cards = ["6222020000000018"]
            [[rules]]
            id = "a"
            kind = "amount"
            mode = "enforce"
            request = "freeze"
            currency = "156"
            max_minor = 500000
            institutions = ["01020000"]
            [[rules]]
            id = "d"
            kind = "daily"
            mode = "observe"
            request = "receive"
            max_count = 3
            [[rules]]
            id = "v"
            kind = "velocity"
            mode = "enforce"
            request = "receive"
            per = "wallet"
            max_count = 3
            window_seconds = 60
            [[rules]]
            id = "p"
            kind = "probing"
            mode = "enforce"
            max_count = 2
            [[rules]]
            id = "s"
            kind = "shares"
            mode = "enforce"
            max_shares = 10
            [[rules]]
            id = "b"
            kind = "block"
            mode = "enforce"
            bins = ["621700-621799"]
            reason = "stolen batch"
            "#,
        )
        .unwrap();
        let codes: Vec<String> = rules.rules.iter().map(|r| r.code.to_string()).collect();
        assert_eq!(codes, ["61", "65", "65", "65", "57", "62"]);
        assert!(rules.allows("6222020000000018"));
        assert!(!rules.allows("6222020000000026"));
    }

    #[test]
    fn the_example_file_is_valid() {
        let rules = Rules::parse(include_str!("../../../../examples/risk.toml")).unwrap();
        assert_eq!(rules.rules.len(), 11);
        assert!(rules.allows("6222020000000018"));
    }

    #[test]
    fn a_bad_file_says_where_and_why() {
        let cases = [
            ("[[rules]]\nid = \"x\"\nkind = \"amount\"\nmode = \"enforce\"\nrequest = \"freeze\"\nmax_minor = 1\n", "rules[0].currency"),
            ("[[rules]]\nid = \"x\"\nkind = \"velocity\"\nmode = \"enforce\"\nrequest = \"freeze\"\nmax_count = 0\nwindow_seconds = 5\n", "rules[0].max_count"),
            ("[[rules]]\nid = \"x\"\nkind = \"block\"\nmode = \"enforce\"\ncards = [\"1234\"]\nreason = \"r\"\n", "rules[0].cards"),
            ("[[rules]]\nid = \"x\"\nkind = \"block\"\nmode = \"enforce\"\nbins = [\"622202\"]\n", "rules[0].reason"),
            ("[[rules]]\nid = \"x\"\nkind = \"shares\"\nmode = \"sometimes\"\nmax_shares = 2\n", "line 4"),
            ("[[rules]]\nid = \"x\"\nkind = \"shares\"\nmode = \"enforce\"\nmax_shares = 2\ncode = \"00\"\n", "rules[0].code"),
            ("[[rules]]\nid = \"x\"\nkind = \"probing\"\nmode = \"enforce\"\nmax_count = 1\n[[rules]]\nid = \"x\"\nkind = \"probing\"\nmode = \"enforce\"\nmax_count = 2\n", "rules[1].id"),
        ];
        for (text, at) in cases {
            let e = Rules::parse(text).unwrap_err();
            assert_eq!(e.at, at, "{text}: {e}");
        }
    }
}

//! A suite file: variables the participant supplies, and cases of ordered
//! steps, each a message to send and what must come back. The format is
//! documented in `specs/conformance/README.md`; the shipped suites are
//! embedded in the binary.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// The suites shipped with the project, by name.
pub const BUILT_IN: [(&str, &str); 2] = [
    ("bank-host", include_str!("../suites/bank-host.toml")),
    ("wallet", include_str!("../suites/wallet.toml")),
];

#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    #[error(
        "no suite {0:?}: give a built-in suite (bank-host, wallet) or the path of a suite file"
    )]
    NotFound(String),
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{suite}: {message}")]
    Invalid { suite: String, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suite {
    pub name: String,
    #[serde(default)]
    pub about: String,
    /// The framing used unless the command line gives one.
    #[serde(default)]
    pub framing: Option<String>,
    /// The spec unless the command line gives one.
    #[serde(default)]
    pub spec: Option<String>,
    /// The default time a step waits for its answer.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub vars: BTreeMap<String, VarSpec>,
    #[serde(default, rename = "cases")]
    pub cases: Vec<Case>,
}

fn default_timeout_ms() -> u64 {
    5000
}

/// A variable the participant supplies (`--var`, `--vars`, `--accounts`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VarSpec {
    /// What it is for, shown by `--list-vars`.
    pub about: String,
    /// Used when not given.
    #[serde(default)]
    pub default: Option<String>,
    /// Taken from `--accounts` when given there: the card of this rank by
    /// balance (1 = the highest).
    #[serde(default)]
    pub account: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CaseKind {
    /// Run before the others; when one fails, the tests are not run.
    Setup,
    #[default]
    Test,
    /// Run after the others, whatever happened.
    Teardown,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub id: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub kind: CaseKind,
    #[serde(default)]
    pub tags: Vec<String>,
    /// The dialect's rule the case checks, as `specs/README.md` names it.
    #[serde(default)]
    pub rule: Option<String>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// A label for reports (defaults to the MTI sent).
    #[serde(default)]
    pub name: Option<String>,
    /// The MTI of a new message.
    #[serde(default)]
    pub send: Option<String>,
    /// Sends step N's request again (1-based), as sent, unless `mti`,
    /// `fields` or `omit` change it.
    #[serde(default)]
    pub resend: Option<usize>,
    /// With `resend`: the MTI to send it as (a repeat: 0121, 0421).
    #[serde(default)]
    pub mti: Option<String>,
    /// Field number → template.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// Fields taken out of the message.
    #[serde(default)]
    pub omit: Vec<u16>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// The step passes when no answer comes within this time.
    #[serde(default)]
    pub no_answer_ms: Option<u64>,
    /// The connection is closed after this step; the next opens another.
    #[serde(default)]
    pub disconnect: bool,
    /// Sends this many copies at once, each on its own connection, each
    /// with its own generated values.
    #[serde(default)]
    pub concurrent: Option<usize>,
    #[serde(default)]
    pub expect: Expect,
    /// Checks of the participant's books through its state hook.
    #[serde(default)]
    pub ledger: Vec<LedgerCheck>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    #[serde(default)]
    pub mti: Option<String>,
    /// F39 must be one of these.
    #[serde(default)]
    pub codes: Vec<String>,
    /// Fields that must equal the request's.
    #[serde(default)]
    pub echo: Vec<u16>,
    /// Field → template the field must equal.
    #[serde(default)]
    pub equal: BTreeMap<String, String>,
    #[serde(default)]
    pub present: Vec<u16>,
    #[serde(default)]
    pub absent: Vec<u16>,
    /// Field → regular expression the whole value must match.
    #[serde(default)]
    pub matches: BTreeMap<String, String>,
    #[serde(default)]
    pub amount: Vec<AmountCheck>,
    /// With `concurrent`: how many answers carry each F39.
    #[serde(default)]
    pub tally: BTreeMap<String, usize>,
    /// The answer equals step N's answer, but for `ignore`.
    #[serde(default)]
    pub same_as: Option<usize>,
    #[serde(default)]
    pub ignore: Vec<u16>,
}

/// A field of the answer, read as a whole number, against a template.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmountCheck {
    pub field: u16,
    /// `==`, `!=`, `<`, `<=`, `>`, `>=`.
    pub op: String,
    pub value: String,
}

/// A card's balance and held amount, changed since the case began by
/// these (minor units, templates, signed).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerCheck {
    pub card: String,
    #[serde(default)]
    pub balance: Option<String>,
    #[serde(default)]
    pub held: Option<String>,
}

impl Suite {
    /// A built-in suite by name, or a suite file.
    pub fn load(name_or_path: &str) -> Result<Suite, SuiteError> {
        if let Some((_, text)) = BUILT_IN.iter().find(|(name, _)| *name == name_or_path) {
            return Suite::parse(name_or_path, text);
        }
        let path = Path::new(name_or_path);
        if !path.exists() {
            return Err(SuiteError::NotFound(name_or_path.to_string()));
        }
        let text = std::fs::read_to_string(path).map_err(|source| SuiteError::Read {
            path: name_or_path.to_string(),
            source,
        })?;
        Suite::parse(name_or_path, &text)
    }

    pub fn parse(origin: &str, text: &str) -> Result<Suite, SuiteError> {
        let invalid = |message: String| SuiteError::Invalid {
            suite: origin.to_string(),
            message,
        };
        let suite: Suite = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        suite.check().map_err(invalid)?;
        Ok(suite)
    }

    /// What TOML cannot say: each step sends exactly one thing, references
    /// point at earlier steps, field numbers are numbers, patterns compile.
    fn check(&self) -> Result<(), String> {
        let mut ids = std::collections::HashSet::new();
        for case in &self.cases {
            if !ids.insert(case.id.as_str()) {
                return Err(format!("case {:?} is defined twice", case.id));
            }
            if case.steps.is_empty() {
                return Err(format!("case {}: no steps", case.id));
            }
            for (i, step) in case.steps.iter().enumerate() {
                let at = |m: String| format!("case {}, step {}: {m}", case.id, i + 1);
                match (&step.send, step.resend) {
                    (Some(_), Some(_)) => return Err(at("both `send` and `resend`".into())),
                    (None, None) => return Err(at("one of `send` or `resend` is needed".into())),
                    (None, Some(n)) if n == 0 || n > i => {
                        return Err(at(format!("`resend = {n}` names no earlier step")))
                    }
                    _ => {}
                }
                if let Some(n) = step.expect.same_as {
                    if n == 0 || n > i {
                        return Err(at(format!("`same_as = {n}` names no earlier step")));
                    }
                }
                for key in step
                    .fields
                    .keys()
                    .chain(step.expect.equal.keys())
                    .chain(step.expect.matches.keys())
                {
                    key.parse::<u16>()
                        .ok()
                        .filter(|n| (2..=128).contains(n))
                        .ok_or_else(|| at(format!("{key:?} is not a field number (2 to 128)")))?;
                }
                for (field, pattern) in &step.expect.matches {
                    regex::Regex::new(pattern)
                        .map_err(|e| at(format!("field {field}: bad pattern: {e}")))?;
                }
                for check in &step.expect.amount {
                    if !["==", "!=", "<", "<=", ">", ">="].contains(&check.op.as_str()) {
                        return Err(at(format!(
                            "amount check op {:?}: use ==, !=, <, <=, >, >=",
                            check.op
                        )));
                    }
                }
                if !step.expect.tally.is_empty() && step.concurrent.is_none() {
                    return Err(at("`tally` needs `concurrent`".into()));
                }
            }
        }
        Ok(())
    }

    /// The cases to run, in order: setup, tests, teardown; tests filtered by
    /// `pattern` (a case matches when its id or a tag contains it).
    pub fn selected(&self, patterns: &[String]) -> Vec<&Case> {
        let wanted = |case: &Case| {
            case.kind != CaseKind::Test
                || patterns.is_empty()
                || patterns
                    .iter()
                    .any(|p| case.id.contains(p.as_str()) || case.tags.iter().any(|t| t == p))
        };
        let of = |kind| {
            self.cases
                .iter()
                .filter(move |c| c.kind == kind && wanted(c))
        };
        of(CaseKind::Setup)
            .chain(of(CaseKind::Test))
            .chain(of(CaseKind::Teardown))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_suites_load() {
        for (name, _) in BUILT_IN {
            let suite = Suite::load(name).unwrap();
            assert!(!suite.cases.is_empty(), "{name}");
        }
    }

    #[test]
    fn setup_runs_first_and_teardown_last_whatever_the_filter() {
        let suite = Suite::parse(
            "t",
            r#"
name = "t"
[[cases]]
id = "last"
kind = "teardown"
steps = [{ send = "0800" }]
[[cases]]
id = "b"
tags = ["x"]
steps = [{ send = "0800" }]
[[cases]]
id = "first"
kind = "setup"
steps = [{ send = "0800" }]
[[cases]]
id = "a"
steps = [{ send = "0800" }]
"#,
        )
        .unwrap();
        let ids = |patterns: &[&str]| {
            let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
            suite
                .selected(&patterns)
                .iter()
                .map(|c| c.id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&[]), ["first", "b", "a", "last"]);
        assert_eq!(ids(&["x"]), ["first", "b", "last"]);
    }

    #[test]
    fn mistakes_are_named_by_case_and_step() {
        let err = |text: &str| Suite::parse("s", text).unwrap_err().to_string();
        assert!(err(
            "name = \"s\"\n[[cases]]\nid = \"c\"\nsteps = [{ send = \"0100\", resend = 1 }]\n"
        )
        .contains("case c, step 1: both `send` and `resend`"));
        assert!(err("name = \"s\"\n[[cases]]\nid = \"c\"\nsteps = [{ send = \"0100\", fields = { 200 = \"x\" } }]\n")
            .contains("\"200\" is not a field number"));
        assert!(err("name = \"s\"\n[[cases]]\nid = \"c\"\nsteps = [{ send = \"0100\", expect = { matches = { 38 = \"(\" } } }]\n")
            .contains("field 38: bad pattern"));
        assert!(err("name = \"s\"\nbogus = 1\n").contains("bogus"));
    }
}

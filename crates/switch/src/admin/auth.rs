//! Who may call what on the admin listener: bearer tokens read from the
//! environment at start (their names in `[admin] operator_token_env` and
//! `read_token_env`), compared in constant time, and a bound on how many
//! failed checks are logged and audited.
//!
//! - The operator token is required by every action; with none configured
//!   actions are refused (403), never open.
//! - The read token, when configured, is required by the read-only data
//!   endpoints (`/metrics`, `/api/status`, `/api/audit`); the operator token
//!   is taken there too. Without one they stay open. `/health`, `/ready`
//!   and the page's static files are always open, for probes and so the
//!   page can ask for a token.
//!
//! Tokens never appear in a log line, an audit row or an error.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The shortest token taken, in bytes: shorter ones are refused at start.
pub const MIN_TOKEN_BYTES: usize = 16;
/// The longest token taken, in bytes (a header is at most 8 KiB anyway).
pub const MAX_TOKEN_BYTES: usize = 512;
/// Failed token checks logged and audited per [`FAILURE_WINDOW`]; beyond
/// them a failed check is answered 429 and only counted.
pub const MAX_FAILURES_RECORDED: u32 = 20;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// A token, kept as its SHA-256 digest: digests of equal length are what is
/// compared, so the comparison's time says nothing of the token's length.
#[derive(Clone)]
pub struct Token([u8; 32]);

impl Token {
    pub fn new(secret: &str) -> Token {
        Token(Sha256::digest(secret.as_bytes()).into())
    }

    /// Whether `offered` is this token, in constant time.
    pub fn matches(&self, offered: &str) -> bool {
        let offered: [u8; 32] = Sha256::digest(offered.as_bytes()).into();
        self.0.ct_eq(&offered).into()
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// The tokens in force.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    pub operator: Option<Token>,
    pub read: Option<Token>,
}

impl Tokens {
    /// The tokens whose environment variables `[admin]` names. A variable
    /// named but unset, empty, too short or too long stops the start: a
    /// read token that silently went missing would open what it guards.
    pub fn from_env(operator_env: Option<&str>, read_env: Option<&str>) -> Result<Tokens, String> {
        let read = |key: &str, name: Option<&str>| -> Result<Option<Token>, String> {
            let Some(name) = name else { return Ok(None) };
            let value = std::env::var(name)
                .map_err(|_| format!("[admin] {key} names {name}, which is not set"))?;
            let len = value.trim().len();
            if !(MIN_TOKEN_BYTES..=MAX_TOKEN_BYTES).contains(&len) {
                return Err(format!(
                    "[admin] {key}: {name} must hold {MIN_TOKEN_BYTES} to {MAX_TOKEN_BYTES} bytes"
                ));
            }
            Ok(Some(Token::new(value.trim())))
        };
        Ok(Tokens {
            operator: read("operator_token_env", operator_env)?,
            read: read("read_token_env", read_env)?,
        })
    }
}

/// Who a request's `Authorization` header proves it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Operator,
    Reader,
    /// No token, or one that is neither.
    Nobody,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Reader => "reader",
            Role::Nobody => "unauthenticated",
        }
    }
}

/// The role of a request with this `Authorization` header value. Both
/// tokens are always compared, so which matched takes no less time.
pub fn role(tokens: &Tokens, authorization: Option<&[u8]>) -> Role {
    let offered = authorization
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= MAX_TOKEN_BYTES);
    let Some(offered) = offered else {
        return Role::Nobody;
    };
    let operator = tokens.operator.as_ref().is_some_and(|t| t.matches(offered));
    let reader = tokens.read.as_ref().is_some_and(|t| t.matches(offered));
    if operator {
        Role::Operator
    } else if reader {
        Role::Reader
    } else {
        Role::Nobody
    }
}

/// Counts failed checks per window, so that someone guessing cannot fill
/// the log or the audit log.
#[derive(Debug)]
pub struct Failures {
    window: Mutex<(Instant, u32)>,
}

impl Default for Failures {
    fn default() -> Self {
        Failures {
            window: Mutex::new((Instant::now(), 0)),
        }
    }
}

impl Failures {
    /// Counts one failure; true while it is to be recorded (logged and
    /// audited), false once this window has had its share.
    pub fn record(&self) -> bool {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if w.0.elapsed() >= FAILURE_WINDOW {
            if w.1 > MAX_FAILURES_RECORDED {
                tracing::warn!(
                    failed = w.1,
                    window_s = FAILURE_WINDOW.as_secs(),
                    "admin listener: failed token checks in the last window"
                );
            }
            *w = (Instant::now(), 0);
        }
        w.1 = w.1.saturating_add(1);
        w.1 <= MAX_FAILURES_RECORDED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens {
            operator: Some(Token::new("operator-secret-0123456789")),
            read: Some(Token::new("reader-secret-0123456789")),
        }
    }

    #[test]
    fn roles_come_from_bearer_tokens() {
        let t = tokens();
        let r = |h: &str| role(&t, Some(h.as_bytes()));
        assert_eq!(r("Bearer operator-secret-0123456789"), Role::Operator);
        assert_eq!(r("Bearer reader-secret-0123456789"), Role::Reader);
        assert_eq!(r("Bearer reader-secret-012345678"), Role::Nobody);
        assert_eq!(r("operator-secret-0123456789"), Role::Nobody);
        assert_eq!(r("Bearer "), Role::Nobody);
        assert_eq!(role(&t, None), Role::Nobody);
        assert_eq!(role(&t, Some(&[0xff, 0xfe])), Role::Nobody);
        assert_eq!(role(&Tokens::default(), Some(b"Bearer x")), Role::Nobody);
    }

    #[test]
    fn a_token_never_prints() {
        assert_eq!(format!("{:?}", tokens().operator), "Some(Token(..))");
    }

    #[test]
    fn failures_are_recorded_up_to_the_window_share() {
        let f = Failures::default();
        let recorded = (0..MAX_FAILURES_RECORDED + 5)
            .filter(|_| f.record())
            .count();
        assert_eq!(recorded, MAX_FAILURES_RECORDED as usize);
    }

    #[test]
    fn a_named_variable_must_be_set_and_long_enough() {
        let unset = Tokens::from_env(Some("SWITCHBOARD_TEST_SURELY_UNSET_TOKEN"), None);
        assert!(unset.unwrap_err().contains("is not set"));
        let none = Tokens::from_env(None, None).unwrap();
        assert!(none.operator.is_none() && none.read.is_none());
    }
}

//! The operator's actions on a running switch, and their audit log.
//!
//! | action | path | answers |
//! | --- | --- | --- |
//! | `saf.retry` | `POST /api/saf/{id}/retry` | 200 pending again; 404 no such entry; 409 not dead |
//! | `bank.sign-off` | `POST /api/banks/{bank}/sign-off` | 200 with each connection's 0800 (F70 002); 404 no such bank |
//! | `bank.sign-on` | `POST /api/banks/{bank}/sign-on` | 200 signed on; 202 no connection up (it signs on when one is); 502 the bank refused |
//! | `drain` | `POST /api/drain` | 200 (again: `already` is true) |
//! | `risk.reload` | `POST /api/risk/reload` | 200 with the rule count; 422 bad file (the rules in force stay); 409 no rules file |
//!
//! A bank is named by its `name` or its institution id. Every attempt is
//! written to the store's audit log ([`crate::store::AuditLog`]) with who
//! asked ([`who`]), what, on what, how it ended and why: the ones refused
//! for their token too, at most [`auth::MAX_FAILURES_RECORDED`] a minute.
//! No action takes a request body.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::HeaderMap;
use hyper::{Response, StatusCode};
use serde_json::json;
use tracing::{info, warn};

use super::{auth, error, json_response, unauthorized, Admin, Endpoint, CHECK_TIMEOUT};
use crate::store::{AuditEntry, AuditRecord, SafRetry};

/// The longest operator name taken from `X-Operator`, in characters.
pub const MAX_OPERATOR_NAME: usize = 64;
/// Rows `GET /api/audit` returns unless `limit` says otherwise, and the most it returns.
pub const DEFAULT_AUDIT_ROWS: usize = 50;
pub const MAX_AUDIT_ROWS: usize = 200;

/// The audit log's name of an action.
pub fn name(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::SafRetry => "saf.retry",
        Endpoint::SignOff => "bank.sign-off",
        Endpoint::SignOn => "bank.sign-on",
        Endpoint::Drain => "drain",
        Endpoint::RiskReload => "risk.reload",
        _ => "read",
    }
}

/// Who asked, as the audit log says it: the role the token proved, the
/// peer's address, and the name given in `X-Operator` (printable ASCII
/// kept, at most [`MAX_OPERATOR_NAME`] characters), which nothing checks.
pub fn who(role: auth::Role, peer: SocketAddr, operator: Option<&[u8]>) -> String {
    let name: String = operator
        .unwrap_or_default()
        .iter()
        .filter(|b| b.is_ascii_graphic() || **b == b' ')
        .take(MAX_OPERATOR_NAME)
        .map(|b| *b as char)
        .collect();
    let name = name.trim();
    if name.is_empty() {
        format!("{} {peer}", role.as_str())
    } else {
        format!("{} {peer} ({name})", role.as_str())
    }
}

/// How an action ended: the HTTP answer, and the audit row's result and reason.
struct Outcome {
    status: StatusCode,
    body: serde_json::Value,
    result: &'static str,
    reason: String,
}

impl Outcome {
    fn ok(body: serde_json::Value, reason: impl Into<String>) -> Outcome {
        Outcome {
            status: StatusCode::OK,
            body,
            result: "ok",
            reason: reason.into(),
        }
    }

    fn refused(status: StatusCode, reason: impl Into<String>) -> Outcome {
        let reason = reason.into();
        Outcome {
            status,
            body: json!({"error": reason}),
            result: if status.is_server_error() {
                "failed"
            } else {
                "refused"
            },
            reason,
        }
    }
}

impl Admin {
    /// Runs an action the operator token allows, and audits it.
    pub(super) async fn act(
        &self,
        endpoint: Endpoint,
        who: &str,
        target: &str,
    ) -> Response<Full<Bytes>> {
        let action = name(endpoint);
        let outcome = match endpoint {
            Endpoint::SafRetry => self.retry(target).await,
            Endpoint::SignOff => self.sign(target, false).await,
            Endpoint::SignOn => self.sign(target, true).await,
            Endpoint::Drain => self.begin_drain(),
            Endpoint::RiskReload => self.reload_risk(),
            _ => Outcome::refused(StatusCode::NOT_FOUND, "no such action"),
        };
        info!(%who, action, target, result = outcome.result, reason = %outcome.reason, "operator action");
        self.record(who, action, target, outcome.result, &outcome.reason)
            .await;
        json_response(outcome.status, &outcome.body)
    }

    /// Writes an audit row; a store that cannot is logged, the answer stands.
    pub(super) async fn record(
        &self,
        who: &str,
        action: &str,
        target: &str,
        result: &str,
        reason: &str,
    ) {
        let entry = AuditEntry::new(self.switch.now_ms(), who, action, target, result, reason);
        match tokio::time::timeout(CHECK_TIMEOUT, self.switch.store().audit(entry)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(%who, action, target, error = %e, "audit row not written"),
            Err(_) => {
                warn!(%who, action, target, "audit row not written: the store did not answer")
            }
        }
    }

    /// A request without an accepted token: 401 (429 once this minute's
    /// failures have been recorded), logged and audited while under the bound.
    pub(super) async fn unauthenticated(
        &self,
        who: &str,
        action: &str,
        target: &str,
        headers: &HeaderMap,
    ) -> Response<Full<Bytes>> {
        let why = if headers.contains_key(hyper::header::AUTHORIZATION) {
            "token not accepted"
        } else {
            "no bearer token"
        };
        if !self.failures.record() {
            return error(
                StatusCode::TOO_MANY_REQUESTS,
                "too many failed token checks; try again later",
            );
        }
        warn!(%who, action, target, reason = why, "admin listener: token check failed");
        self.record(who, action, target, "unauthorized", why).await;
        unauthorized(why)
    }

    /// An action with no operator token configured: refused, never open.
    pub(super) async fn refused_unconfigured(
        &self,
        who: &str,
        action: &str,
        target: &str,
    ) -> Response<Full<Bytes>> {
        let why = "operator actions are off: [admin] operator_token_env is not configured";
        if self.failures.record() {
            self.record(who, action, target, "refused", why).await;
        }
        error(StatusCode::FORBIDDEN, why)
    }

    async fn retry(&self, target: &str) -> Outcome {
        let Ok(id) = target.parse::<i64>() else {
            return Outcome::refused(
                StatusCode::NOT_FOUND,
                format!("no store-and-forward entry {target:?}: ids are numbers"),
            );
        };
        let store = self.switch.store();
        match tokio::time::timeout(CHECK_TIMEOUT, store.saf_retry(id, self.switch.now_ms())).await {
            Ok(Ok(SafRetry::Retried)) => Outcome::ok(
                json!({"id": id, "state": "pending"}),
                "pending again: the delivery loop sends it",
            ),
            Ok(Ok(SafRetry::NotFound)) => Outcome::refused(
                StatusCode::NOT_FOUND,
                format!("no store-and-forward entry {id}"),
            ),
            Ok(Ok(SafRetry::NotDead(state))) => Outcome::refused(
                StatusCode::CONFLICT,
                format!(
                    "store-and-forward entry {id} is {}, not dead",
                    state.as_str()
                ),
            ),
            Ok(Err(e)) => Outcome::refused(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            Err(_) => Outcome::refused(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the store did not answer within {} ms",
                    CHECK_TIMEOUT.as_millis()
                ),
            ),
        }
    }

    async fn sign(&self, target: &str, on: bool) -> Outcome {
        let Some(link) = self
            .links
            .iter()
            .find(|l| l.config.name == target || l.config.institution_id == target)
        else {
            return Outcome::refused(StatusCode::NOT_FOUND, format!("no bank {target:?}"));
        };
        let report = if on {
            link.sign_on().await
        } else {
            link.sign_off().await
        };
        let reason = report.notes.join("; ");
        let body = json!({
            "bank": link.config.name,
            "institution_id": link.config.institution_id,
            "signed_off": link.signed_off(),
            "answered": report.answered,
            "connections": report.connections,
            "notes": report.notes,
        });
        let failed = report.notes.iter().any(|n| n.contains("failed"));
        let (status, result) = if !on || report.answered > 0 {
            (StatusCode::OK, "ok")
        } else if failed {
            (StatusCode::BAD_GATEWAY, "failed")
        } else {
            (StatusCode::ACCEPTED, "ok")
        };
        Outcome {
            status,
            body,
            result,
            reason,
        }
    }

    fn begin_drain(&self) -> Outcome {
        let first = self.drain.begin();
        if first {
            warn!("draining: wallet listeners stopped by an operator");
        }
        Outcome::ok(
            json!({"draining": true, "already": !first}),
            if first {
                "wallet listeners stopped; requests in flight finish"
            } else {
                "already draining"
            },
        )
    }

    fn reload_risk(&self) -> Outcome {
        let risk = self.switch.risk();
        if risk.path().is_none() {
            return Outcome::refused(StatusCode::CONFLICT, "no [risk] rules_file is configured");
        }
        match risk.reload() {
            Ok(rules) => {
                info!(rules, "risk rules reloaded");
                Outcome::ok(json!({"rules": rules}), format!("{rules} rules in force"))
            }
            Err(e) => {
                tracing::error!(
                    file = ?risk.path(),
                    at = %e.at,
                    reason = %e.reason,
                    "risk rules file refused; the rules in force stay"
                );
                let reason = format!("{}: {}; the rules in force stay", e.at, e.reason);
                Outcome {
                    status: StatusCode::UNPROCESSABLE_ENTITY,
                    body: json!({"error": reason, "at": e.at, "reason": e.reason}),
                    result: "refused",
                    reason,
                }
            }
        }
    }

    /// `GET /api/audit?limit=N`: the latest rows, newest first.
    pub(super) async fn audit_page(&self, query: Option<&str>) -> Response<Full<Bytes>> {
        let limit = match audit_limit(query) {
            Ok(limit) => limit,
            Err(why) => return error(StatusCode::BAD_REQUEST, &why),
        };
        let read = self.switch.store().audit_latest(limit);
        match tokio::time::timeout(CHECK_TIMEOUT, read).await {
            Ok(Ok(rows)) => json_response(
                StatusCode::OK,
                &json!({"entries": rows.iter().map(row_json).collect::<Vec<_>>()}),
            ),
            Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
            Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "the store did not answer"),
        }
    }

    /// The latest rows for `/api/status`; null when the store cannot say.
    pub(super) async fn recent_actions(&self, limit: usize) -> serde_json::Value {
        let read = self.switch.store().audit_latest(limit);
        match tokio::time::timeout(CHECK_TIMEOUT, read).await {
            Ok(Ok(rows)) => rows.iter().map(row_json).collect(),
            _ => serde_json::Value::Null,
        }
    }
}

/// `limit=N` of `/api/audit`'s query, 1 to [`MAX_AUDIT_ROWS`].
fn audit_limit(query: Option<&str>) -> Result<usize, String> {
    let mut limit = DEFAULT_AUDIT_ROWS;
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        match pair.split_once('=') {
            Some(("limit", n)) => {
                limit = n
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_AUDIT_ROWS).contains(n))
                    .ok_or_else(|| format!("limit must be 1 to {MAX_AUDIT_ROWS}"))?;
            }
            _ => return Err("the only parameter is limit".into()),
        }
    }
    Ok(limit)
}

/// One audit row as the API gives it.
pub fn row_json(r: &AuditRecord) -> serde_json::Value {
    let e = &r.entry;
    let at = chrono::DateTime::from_timestamp_millis(e.at_ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    json!({
        "id": r.id,
        "at_ms": e.at_ms,
        "at": at,
        "who": e.who,
        "action": e.action,
        "target": e.target,
        "result": e.result,
        "reason": e.reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_names_the_role_the_peer_and_a_bounded_name() {
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        assert_eq!(
            who(auth::Role::Operator, peer, None),
            "operator 127.0.0.1:5000"
        );
        let long = format!("ann\n{}", "x".repeat(100));
        let w = who(auth::Role::Nobody, peer, Some(long.as_bytes()));
        assert!(
            w.starts_with("unauthenticated 127.0.0.1:5000 (annxxx"),
            "{w}"
        );
        assert!(w.len() < 120, "{w}");
    }

    #[test]
    fn audit_limits_are_bounded() {
        assert_eq!(audit_limit(None), Ok(DEFAULT_AUDIT_ROWS));
        assert_eq!(audit_limit(Some("limit=3")), Ok(3));
        assert!(audit_limit(Some("limit=0")).is_err());
        assert!(audit_limit(Some("limit=201")).is_err());
        assert!(audit_limit(Some("other=1")).is_err());
    }

    #[test]
    fn paths_match_their_patterns() {
        use super::super::path_matches;
        assert_eq!(path_matches("/api/drain", "/api/drain"), Some(None));
        assert_eq!(
            path_matches("/api/saf/{}/retry", "/api/saf/12/retry"),
            Some(Some("12".into()))
        );
        assert_eq!(
            path_matches("/api/banks/{}/sign-on", "/api/banks/bank%20A/sign-on"),
            Some(Some("bank A".into()))
        );
        assert_eq!(path_matches("/api/saf/{}/retry", "/api/saf//retry"), None);
        assert_eq!(
            path_matches("/api/saf/{}/retry", "/api/saf/1/2/retry"),
            None
        );
        assert_eq!(path_matches("/api/saf/{}/retry", "/api/saf/1"), None);
    }
}

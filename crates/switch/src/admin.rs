//! The admin listener (`[admin] listen`): HTTP/1.1 for operators and their
//! tools, apart from the wallet listeners.
//!
//! - `GET /metrics` — every metric of [`crate::metrics`], as OpenMetrics
//!   text (which Prometheus scrapes as it does its own text format); the
//!   gauges describing state (store-and-forward depth, the lease, readiness)
//!   are read from that state first.
//! - `GET /health` — 200 while the process answers at all (liveness).
//! - `GET /ready` — 200 when the switch can take traffic, else 503; the JSON
//!   body says which check failed: wallet listeners accepting (not draining),
//!   at least one signed-on connection per bank, the store answering, the
//!   lease held on a shared store.
//! - `GET /` (with `/page.js` and `/page.css`) — the operator's page
//!   ([`page`]), which polls `GET /api/status` ([`status`]): traffic,
//!   approval, response codes, latency per flow, store-and-forward, bank
//!   links, the last warnings and errors and the last operator actions, as
//!   one JSON document.
//! - `GET /api/audit?limit=N` — the latest operator actions ([`actions`]).
//! - `POST /api/saf/{id}/retry`, `POST /api/banks/{bank}/sign-off` and
//!   `/sign-on`, `POST /api/drain`, `POST /api/risk/reload` — the operator's
//!   actions ([`actions`]), each written to the store's audit log.
//!
//! Endpoints are looked up in [`ROUTES`], each with the [`Access`] it needs,
//! checked against the bearer tokens of [`auth`] before its handler runs: a
//! page or an action is one more row and one more [`Endpoint`] arm.
//!
//! Everything is bounded: [`MAX_CONNECTIONS`] connections at once (more are
//! closed as soon as accepted), request heads of at most
//! [`MAX_REQUEST_BYTES`] read within [`HEADER_READ_TIMEOUT`], no request
//! body accepted (actions take their target in the path), a connection kept
//! at most [`MAX_CONNECTION_AGE`], the store asked with a [`CHECK_TIMEOUT`],
//! and failed token checks logged and audited at most
//! [`auth::MAX_FAILURES_RECORDED`] a minute.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_SECURITY_POLICY,
    CONTENT_TYPE, WWW_AUTHENTICATE, X_CONTENT_TYPE_OPTIONS,
};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

pub mod actions;
pub mod auth;
pub mod page;
pub mod status;

use crate::link::BankLink;
use crate::metrics::metrics;
use crate::switch::Switch;

/// Admin connections open at once; more are closed as soon as accepted.
pub const MAX_CONNECTIONS: usize = 16;
/// A request's head (request line and headers) must be read within this.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest request head read (hyper's smallest buffer limit).
pub const MAX_REQUEST_BYTES: usize = 8192;
/// A connection is closed after this long, kept alive or not.
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(60);
/// The store must answer a readiness or metrics query within this.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// `[admin]`: where the admin listener listens, and the environment
/// variables its tokens are read from at start ([`auth`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// `operator_token_env`: without it, operator actions are refused.
    pub operator_token_env: Option<String>,
    /// `read_token_env`: without it, the read-only endpoints are open.
    pub read_token_env: Option<String>,
}

/// Who may call an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone who reaches the listener: probes and the page's static files.
    Open,
    /// The read token or the operator token, when a read token is
    /// configured; anyone otherwise.
    Read,
    /// The operator token; refused when none is configured.
    Operator,
}

/// What the listener answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Metrics,
    Health,
    Ready,
    Page,
    Script,
    Style,
    Status,
    Audit,
    SafRetry,
    SignOff,
    SignOn,
    Drain,
    RiskReload,
}

/// Method, path, access, endpoint. A `{}` segment matches any one segment
/// of the request's path, handed to the endpoint as its target.
#[rustfmt::skip]
pub const ROUTES: &[(&str, &str, Access, Endpoint)] = &[
    ("GET", "/metrics", Access::Read, Endpoint::Metrics),
    ("GET", "/health", Access::Open, Endpoint::Health),
    ("GET", "/ready", Access::Open, Endpoint::Ready),
    ("GET", "/", Access::Open, Endpoint::Page),
    ("GET", "/page.js", Access::Open, Endpoint::Script),
    ("GET", "/page.css", Access::Open, Endpoint::Style),
    ("GET", "/api/status", Access::Read, Endpoint::Status),
    ("GET", "/api/audit", Access::Read, Endpoint::Audit),
    ("POST", "/api/saf/{}/retry", Access::Operator, Endpoint::SafRetry),
    ("POST", "/api/banks/{}/sign-off", Access::Operator, Endpoint::SignOff),
    ("POST", "/api/banks/{}/sign-on", Access::Operator, Endpoint::SignOn),
    ("POST", "/api/drain", Access::Operator, Endpoint::Drain),
    ("POST", "/api/risk/reload", Access::Operator, Endpoint::RiskReload),
];

/// What the admin listener looks at and acts on.
pub struct Admin {
    pub switch: Arc<Switch>,
    pub links: Vec<Arc<BankLink>>,
    /// The switch's drain: once begun, no new wallet connection is
    /// accepted, so a load balancer should send elsewhere.
    pub drain: crate::service::Drain,
    pub tokens: auth::Tokens,
    pub failures: auth::Failures,
}

/// The outcome of the readiness checks.
pub struct Readiness {
    pub ready: bool,
    pub body: serde_json::Value,
}

impl Admin {
    /// Runs every readiness check, and sets the gauges that describe the
    /// same state (store-and-forward depth, store up, lease, ready).
    pub async fn readiness(&self) -> Readiness {
        let m = metrics();
        let mut problems: Vec<String> = Vec::new();
        let accepting = self.drain.accepting();
        if !accepting {
            problems.push("wallet listeners are not accepting (draining)".into());
        }
        let banks: Vec<serde_json::Value> = self
            .links
            .iter()
            .map(|link| {
                let signed_on = link.ready_connections();
                let signed_off = link.signed_off();
                let ok = signed_on > 0 && !signed_off;
                if signed_off {
                    problems.push(format!(
                        "bank {} ({}): signed off by an operator",
                        link.config.name, link.config.institution_id
                    ));
                } else if !ok {
                    problems.push(format!(
                        "bank {} ({}): no signed-on connection",
                        link.config.name, link.config.institution_id
                    ));
                }
                json!({
                    "bank": link.config.name,
                    "institution_id": link.config.institution_id,
                    "connections": link.config.connections,
                    "signed_on": signed_on,
                    "signed_off": signed_off,
                    "ok": ok,
                })
            })
            .collect();
        let store =
            match tokio::time::timeout(CHECK_TIMEOUT, self.switch.store().saf_counts()).await {
                Ok(Ok(counts)) => {
                    m.saf_entries
                        .get_or_create(&crate::metrics::SafStateLabels { state: "pending" })
                        .set(counts.pending as i64);
                    m.saf_entries
                        .get_or_create(&crate::metrics::SafStateLabels { state: "dead" })
                        .set(counts.dead as i64);
                    m.store_up.set(1);
                    json!({"ok": true, "saf_pending": counts.pending, "saf_dead": counts.dead})
                }
                Ok(Err(e)) => {
                    m.store_up.set(0);
                    problems.push(format!("store: {e}"));
                    json!({"ok": false, "error": e.to_string()})
                }
                Err(_) => {
                    m.store_up.set(0);
                    let why = format!("store: no answer within {} ms", CHECK_TIMEOUT.as_millis());
                    problems.push(why.clone());
                    json!({"ok": false, "error": why})
                }
            };
        let lease = match self.switch.lease_held() {
            None => {
                m.lease_held.set(1);
                json!({"ok": true, "shared_store": false})
            }
            Some(held) => {
                m.lease_held.set(held as i64);
                if !held {
                    problems.push("lease: this instance does not hold its lease".into());
                }
                json!({"ok": held, "shared_store": true, "instance": self.switch.instance()})
            }
        };
        let ready = problems.is_empty();
        m.ready.set(ready as i64);
        Readiness {
            ready,
            body: json!({
                "ready": ready,
                "problems": problems,
                "checks": {
                    "listening": {"ok": accepting},
                    "banks": banks,
                    "store": store,
                    "lease": lease,
                },
            }),
        }
    }

    async fn answer(&self, endpoint: Endpoint, query: Option<&str>) -> Response<Full<Bytes>> {
        match endpoint {
            Endpoint::Health => json_response(
                StatusCode::OK,
                &json!({"status": "alive", "instance": self.switch.instance()}),
            ),
            Endpoint::Ready => {
                let r = self.readiness().await;
                let status = if r.ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                json_response(status, &r.body)
            }
            Endpoint::Metrics => {
                self.readiness().await;
                let mut response = Response::new(Full::new(Bytes::from(metrics().encode())));
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                response
            }
            Endpoint::Page => asset(&page::INDEX),
            Endpoint::Script => asset(&page::SCRIPT),
            Endpoint::Style => asset(&page::STYLE),
            Endpoint::Status => no_store(json_response(StatusCode::OK, &self.status().await)),
            Endpoint::Audit => no_store(self.audit_page(query).await),
            // Actions are answered by `act`, after their token check.
            Endpoint::SafRetry
            | Endpoint::SignOff
            | Endpoint::SignOn
            | Endpoint::Drain
            | Endpoint::RiskReload => error(StatusCode::METHOD_NOT_ALLOWED, "an action"),
        }
    }

    /// The document the operator's page draws: readiness, the traffic
    /// figures of the metrics, and the last warnings and errors.
    pub async fn status(&self) -> serde_json::Value {
        let readiness = self.readiness().await;
        let checks = &readiness.body["checks"];
        let store = &checks["store"];
        let saf = if store["ok"] == true {
            json!({"pending": store["saf_pending"], "dead": store["saf_dead"]})
        } else {
            serde_json::Value::Null
        };
        let ring = crate::recent_errors::recent_errors();
        json!({
            "time_ms": chrono::Utc::now().timestamp_millis(),
            "instance": self.switch.instance(),
            "ready": readiness.ready,
            "problems": readiness.body["problems"],
            "traffic": status::summarize(&metrics().encode()).to_json(),
            "saf": saf,
            "banks": checks["banks"],
            "errors": ring.newest_first(),
            "errors_total": ring.total(),
            "audit": self.recent_actions(STATUS_AUDIT_ROWS).await,
        })
    }

    async fn handle(&self, request: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        // No endpoint takes a body: one announced is refused unread.
        let has_body = request
            .headers()
            .get(CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
            || request
                .headers()
                .contains_key(hyper::header::TRANSFER_ENCODING);
        if has_body {
            return error(StatusCode::PAYLOAD_TOO_LARGE, "requests carry no body here");
        }
        let path = request.uri().path();
        let (access, endpoint, target) = match route(request.method(), path) {
            Ok(found) => found,
            Err((status, why)) => return error(status, why),
        };
        let headers = request.headers();
        let role = auth::role(
            &self.tokens,
            headers.get(AUTHORIZATION).map(|v| v.as_bytes()),
        );
        let who = actions::who(role, peer, headers.get("x-operator").map(|v| v.as_bytes()));
        let query = request.uri().query();
        match access {
            Access::Open => self.answer(endpoint, query).await,
            Access::Read if self.tokens.read.is_none() || role != auth::Role::Nobody => {
                self.answer(endpoint, query).await
            }
            Access::Read => self.unauthenticated(&who, "read", path, headers).await,
            Access::Operator => {
                let action = actions::name(endpoint);
                let target = target.unwrap_or_default();
                if self.tokens.operator.is_none() {
                    self.refused_unconfigured(&who, action, &target).await
                } else if role == auth::Role::Nobody {
                    self.unauthenticated(&who, action, &target, headers).await
                } else if role != auth::Role::Operator {
                    let why = "the read token cannot act";
                    self.record(&who, action, &target, "forbidden", why).await;
                    error(StatusCode::FORBIDDEN, why)
                } else {
                    self.act(endpoint, &who, &target).await
                }
            }
        }
    }
}

/// The rows of the audit log `/api/status` carries for the page.
pub const STATUS_AUDIT_ROWS: usize = 10;

/// A route found: its access, its endpoint, and what its `{}` segment matched.
type Routed = (Access, Endpoint, Option<String>);

/// The route of a request, or the status and reason of there being none.
fn route(method: &Method, path: &str) -> Result<Routed, (StatusCode, &'static str)> {
    let mut known_path = false;
    for &(m, p, access, endpoint) in ROUTES {
        let Some(target) = path_matches(p, path) else {
            continue;
        };
        known_path = true;
        if m == method.as_str() || (method == Method::HEAD && m == "GET") {
            return Ok((access, endpoint, target));
        }
    }
    Err(if known_path {
        (StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
    } else {
        (StatusCode::NOT_FOUND, "no such endpoint")
    })
}

/// Whether `path` matches `pattern`: `Some` with what its `{}` segment
/// matched, percent-decoded (`None` inside when it has none), `None` when
/// it does not match.
fn path_matches(pattern: &str, path: &str) -> Option<Option<String>> {
    if !pattern.contains("{}") {
        return (pattern == path).then_some(None);
    }
    let mut target = None;
    let mut want = pattern.split('/');
    let mut got = path.split('/');
    loop {
        match (want.next(), got.next()) {
            (None, None) => return Some(target),
            (Some("{}"), Some(segment)) if !segment.is_empty() => {
                let decoded = percent_encoding::percent_decode_str(segment).decode_utf8();
                target = Some(decoded.ok()?.into_owned());
            }
            (Some(w), Some(g)) if w == g => {}
            _ => return None,
        }
    }
}

fn no_store(mut response: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A 401, with the scheme the listener takes.
fn unauthorized(why: &str) -> Response<Full<Bytes>> {
    let mut response = error(StatusCode::UNAUTHORIZED, why);
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut text = body.to_string();
    text.push('\n');
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// An embedded file, with its type, the page's Content-Security-Policy and
/// no content sniffing.
fn asset(asset: &page::Asset) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(asset.body.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(page::CONTENT_SECURITY_POLICY),
    );
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn error(status: StatusCode, why: &str) -> Response<Full<Bytes>> {
    json_response(status, &json!({"error": why}))
}

/// Serves the admin listener until `shutdown`.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let (stream, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "admin listener: accept failed");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                        _ = shutdown.cancelled() => break,
                    }
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!(%addr, limit = MAX_CONNECTIONS, "admin listener: too many connections; closed");
            continue;
        };
        let admin = admin.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let admin = admin.clone();
                async move { Ok::<_, std::convert::Infallible>(admin.handle(request, addr).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(MAX_REQUEST_BYTES)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::pin!(connection);
            let ended = tokio::select! {
                r = &mut connection => r.err().map(|e| e.to_string()),
                _ = tokio::time::sleep(MAX_CONNECTION_AGE) => Some("open too long".into()),
                _ = shutdown.cancelled() => None,
            };
            if let Some(why) = ended {
                debug!(%addr, reason = %why, "admin connection closed");
            }
            drop(slot);
        });
    }
    connections.close();
    let _ = tokio::time::timeout(Duration::from_secs(1), connections.wait()).await;
}

//! `switchboard serve` configuration: a TOML file (annotated example in
//! `examples/switchboard.toml`) read into plain structs, then validated into a
//! [`Config`]. Errors name the key and say why.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use iso8583::framing::FramingConfig;
use iso8583::ResponseCode;

use crate::dialect::InstitutionId;

// The sections of the file are the parts' own types: the configuration
// assembles them and the parts never read it back.
pub use crate::link::BankConfig;
pub use crate::routing::BinRange;
pub use crate::server::WalletListener;

/// A configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config key `{key}`: {reason}")]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

fn err(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        reason: reason.into(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    switch: RawSwitch,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    wallets: Vec<RawWallet>,
    #[serde(default)]
    banks: Vec<RawBank>,
    #[serde(default)]
    saf: Option<RawSaf>,
    #[serde(default)]
    clearing: Option<RawClearing>,
    #[serde(default)]
    capture: Option<RawCapture>,
    #[serde(default)]
    security: RawSecurity,
    #[serde(default)]
    admin: Option<RawAdmin>,
    #[serde(default)]
    log: Option<RawLog>,
    #[serde(default)]
    risk: RawRisk,
    #[serde(default)]
    alerts: RawAlerts,
}

/// `[admin]`: the admin listener (metrics, health, readiness).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: String,
    operator_token_env: Option<String>,
    read_token_env: Option<String>,
}

/// `[log]`: how `serve` logs unless `--log-format` says otherwise.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<String>,
}

/// `[risk]`: the rules every freeze and receive must pass (`crate::risk`).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRisk {
    rules_file: Option<String>,
}

/// `[alerts]`: decline, reversal and volume alerts per party (`crate::alerts`).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAlerts {
    enabled: Option<bool>,
    window_seconds: Option<u64>,
    history_windows: Option<u32>,
    decline_rate: Option<f64>,
    reversal_rate: Option<f64>,
    volume_factor: Option<f64>,
    min_requests: Option<u32>,
}

impl RawAlerts {
    fn policy(self) -> Result<crate::alerts::AlertPolicy, ConfigError> {
        let default = crate::alerts::AlertPolicy::default();
        let window_s = self.window_seconds.unwrap_or(default.window.as_secs());
        if !(1..=86_400).contains(&window_s) {
            return Err(err("alerts.window_seconds", "must be 1 to 86400"));
        }
        let history = self.history_windows.unwrap_or(default.history_windows);
        if !(1..=crate::alerts::MAX_HISTORY_WINDOWS).contains(&history) {
            return Err(err(
                "alerts.history_windows",
                format!("must be 1 to {}", crate::alerts::MAX_HISTORY_WINDOWS),
            ));
        }
        let rate = |key: &str, value: Option<f64>, default: f64| match value {
            None => Ok(default),
            Some(v) if v > 0.0 && v <= 1.0 => Ok(v),
            Some(_) => Err(err(key, "must be a share above 0 and at most 1")),
        };
        let volume_factor = self.volume_factor.unwrap_or(default.volume_factor);
        // Also refuses NaN.
        if !(volume_factor > 1.0 && volume_factor.is_finite()) {
            return Err(err("alerts.volume_factor", "must be above 1"));
        }
        let min_requests = self.min_requests.unwrap_or(default.min_requests);
        if min_requests == 0 {
            return Err(err("alerts.min_requests", "must be at least 1"));
        }
        Ok(crate::alerts::AlertPolicy {
            enabled: self.enabled.unwrap_or(default.enabled),
            window: Duration::from_secs(window_s),
            history_windows: history,
            decline_rate: rate(
                "alerts.decline_rate",
                self.decline_rate,
                default.decline_rate,
            )?,
            reversal_rate: rate(
                "alerts.reversal_rate",
                self.reversal_rate,
                default.reversal_rate,
            )?,
            volume_factor,
            min_requests,
        })
    }
}

/// `[security]`: where the keys that seal card data at rest come from.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSecurity {
    data_key_file: Option<String>,
    #[serde(default)]
    require_encryption: bool,
}

/// Card data at rest (`[security]`; `crate::vault`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityConfig {
    /// The key file `switchboard keygen` wrote; without it, the keys are
    /// read from the environment variable `SWITCHBOARD_DATA_KEYS`.
    pub data_key_file: Option<PathBuf>,
    /// Refuse to start without keys, rather than store card data in clear.
    pub require_encryption: bool,
}

/// `[capture]`: every frame of every wallet connection and bank link,
/// recorded as pcapng.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCapture {
    path: String,
    max_bytes: Option<u64>,
    max_files: Option<u32>,
    mask_card_data: Option<bool>,
}

/// Where the switch records its links (`[capture]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureConfig {
    /// The file being written; rotated ones are `path.1`, `path.2`, ….
    pub path: PathBuf,
    /// A file this big or bigger is rotated.
    pub max_bytes: u64,
    /// Files kept, the one being written included.
    pub max_files: u32,
    /// Card numbers masked in the frames recorded (first 6 and last 4
    /// digits kept, the rest written 0); on unless turned off for debugging.
    pub mask_card_data: bool,
}

impl CaptureConfig {
    pub const DEFAULT_MAX_BYTES: u64 = 100 * 1024 * 1024;
    pub const DEFAULT_MAX_FILES: u32 = 10;

    /// Recording to `path` with the default rotation.
    pub fn at(path: impl Into<PathBuf>) -> Self {
        CaptureConfig {
            path: path.into(),
            max_bytes: Self::DEFAULT_MAX_BYTES,
            max_files: Self::DEFAULT_MAX_FILES,
            mask_card_data: true,
        }
    }
}

/// `[clearing]`: when a settlement day ends.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClearing {
    /// Local time from which transactions settle on the next day, `HH:MM`.
    cutoff: Option<String>,
    /// IANA time zone of the cutoff, e.g. `Asia/Shanghai`.
    time_zone: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSaf {
    final_codes: Option<Vec<String>>,
    initial_backoff_ms: Option<u64>,
    max_backoff_ms: Option<u64>,
    max_attempts: Option<u32>,
    hold_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSwitch {
    institution_id: String,
    /// Freezes older than this are unfrozen by the switch itself.
    #[serde(default = "default_max_freeze_age_s")]
    max_freeze_age_s: u64,
    #[serde(default = "default_spec")]
    spec: String,
    worker_threads: Option<usize>,
}

fn default_max_freeze_age_s() -> u64 {
    7 * 24 * 3600
}

fn default_spec() -> String {
    "switchboard".into()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStore {
    path: Option<String>,
    url: Option<String>,
    lease_ms: Option<u64>,
    journal_retention_days: Option<u32>,
    commit_interval_ms: Option<u64>,
    commit_interval_us: Option<u64>,
    commit_interval_above: Option<u64>,
    commit_delay_us: Option<u64>,
    decision_log: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWallet {
    listen: String,
    #[serde(default = "default_framing")]
    framing: String,
    #[serde(default)]
    institutions: Vec<String>,
    #[serde(default)]
    partners: Vec<String>,
    max_frame_len: Option<usize>,
    max_connections: Option<usize>,
    frame_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    max_in_flight_per_connection: Option<usize>,
    max_connections_per_address: Option<usize>,
    tls: Option<RawServerTls>,
    clients: Option<Vec<RawClient>>,
    mac: Option<RawMac>,
}

/// A link's `mac = { algorithm, key_file | key_env, kek_file | kek_env,
/// covered, grace_s }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMac {
    algorithm: String,
    key_file: Option<String>,
    key_env: Option<String>,
    kek_file: Option<String>,
    kek_env: Option<String>,
    covered: Option<RawCoverage>,
    grace_s: Option<u64>,
}

/// `covered = "message"` or a list of field numbers (0 for the MTI).
#[derive(Deserialize)]
#[serde(untagged)]
enum RawCoverage {
    Rule(String),
    Fields(Vec<u16>),
}

/// A wallet listener's `tls = { cert, key, client_ca }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServerTls {
    cert: String,
    key: String,
    client_ca: Option<String>,
}

/// One of a wallet listener's `clients`: a client certificate's subject
/// common name or DNS name, and the institutions it may send as.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    subject: Option<String>,
    san: Option<String>,
    institutions: Vec<String>,
}

/// A bank's `tls = { ca, server_name, cert, key }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClientTls {
    ca: String,
    server_name: Option<String>,
    cert: Option<String>,
    key: Option<String>,
}

fn default_framing() -> String {
    "ascii4".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBank {
    institution_id: String,
    #[serde(default)]
    name: Option<String>,
    bins: Vec<String>,
    hosts: Vec<String>,
    #[serde(default = "default_framing")]
    framing: String,
    #[serde(default = "one")]
    connections: usize,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
    #[serde(default = "default_echo_ms")]
    echo_interval_ms: u64,
    #[serde(default = "default_in_flight")]
    max_in_flight: usize,
    tls: Option<RawClientTls>,
    mac: Option<RawMac>,
}

fn one() -> usize {
    1
}
fn default_timeout_ms() -> u64 {
    5000
}
fn default_echo_ms() -> u64 {
    30_000
}
fn default_in_flight() -> usize {
    4096
}

/// Where the switch keeps its state (`[store]`: `path` or `url`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// The embedded store: one SQLite file.
    Embedded(PathBuf),
    /// A PostgreSQL database, possibly shared by several switch instances.
    Postgres(String),
}

impl StoreConfig {
    /// `postgres://...` or `postgresql://...` is a database; anything else a file path.
    pub fn parse(s: &str) -> StoreConfig {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            StoreConfig::Postgres(s.to_string())
        } else {
            StoreConfig::Embedded(PathBuf::from(s))
        }
    }
}

impl std::fmt::Display for StoreConfig {
    /// The path, or the URL without its password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreConfig::Embedded(path) => write!(f, "{}", path.display()),
            StoreConfig::Postgres(url) => match (url.find("://"), url.rfind('@')) {
                (Some(scheme), Some(at)) if at > scheme => {
                    let userinfo = &url[scheme + 3..at];
                    let user = userinfo.split(':').next().unwrap_or("");
                    write!(f, "{}{user}:***{}", &url[..scheme + 3], &url[at..])
                }
                _ => write!(f, "{url}"),
            },
        }
    }
}

/// The most `[store] commit_interval_ms` may be: every store command may wait
/// up to it before its batch begins.
pub const MAX_COMMIT_INTERVAL_MS: u64 = 50;
/// The same bound for `[store] commit_interval_us`, which gives the interval
/// to the microsecond (between two whole milliseconds).
pub const MAX_COMMIT_INTERVAL_US: u64 = MAX_COMMIT_INTERVAL_MS * 1000;

/// A `[store]` setting only the embedded store has: refused for PostgreSQL
/// and above `max`.
fn embedded_only(
    key: &str,
    value: Option<u64>,
    max: u64,
    store: &StoreConfig,
) -> Result<Option<u64>, ConfigError> {
    match (value, store) {
        (Some(_), StoreConfig::Postgres(_)) => {
            Err(err(key, "only the embedded store (`path`) has it"))
        }
        (Some(v), _) if v > max => Err(err(key, format!("must be at most {max}"))),
        (value, _) => Ok(value),
    }
}

/// The most `[switch] worker_threads` may be.
pub const MAX_WORKER_THREADS: usize = 256;

/// The most `[store] commit_delay_us` may be: a command of a small batch may
/// wait up to it before its batch begins.
pub const MAX_COMMIT_DELAY_US: u64 = 10_000;

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub institution_id: String,
    pub spec: String,
    pub store: StoreConfig,
    pub wallets: Vec<WalletListener>,
    pub banks: Vec<BankConfig>,
    pub saf: crate::switch::saf::SafPolicy,
    /// How long an instance's claim on its work in a shared store lasts
    /// without renewal (`[store] lease_ms`): after it, other instances recover
    /// that work.
    pub lease: Duration,
    /// Settlement days whose journal messages are kept before today
    /// (`[store] journal_retention_days`); `None` keeps them forever.
    pub journal_retention_days: Option<u32>,
    /// The embedded store's least time between the starts of two commits
    /// while it is busy (`[store] commit_interval_ms`, at most
    /// [`MAX_COMMIT_INTERVAL_MS`], or `commit_interval_us`; default
    /// [`crate::store::sqlite::DEFAULT_COMMIT_INTERVAL`]); zero commits each
    /// batch as soon as it has run.
    pub commit_interval: Duration,
    /// Store commands a second from which the commit interval applies
    /// (`[store] commit_interval_above`; default
    /// [`crate::store::sqlite::DEFAULT_COMMIT_INTERVAL_ABOVE`]; zero:
    /// always).
    pub commit_interval_above: u64,
    /// How long the embedded store's small batches wait for company while
    /// receives are in flight (`[store] commit_delay_us`, at most
    /// [`MAX_COMMIT_DELAY_US`]; default
    /// [`crate::store::sqlite::DEFAULT_COMMIT_DELAY`], 0 turns it off).
    pub commit_delay: Duration,
    /// Whether the embedded store makes batches of receive decisions
    /// durable in its decision log (`[store] decision_log`, default true;
    /// `SqliteOptions::decision_log`).
    pub decision_log: bool,
    /// Freezes older than this are unfrozen by the switch itself.
    pub max_freeze_age: Duration,
    /// The async runtime's worker threads as configured (`[switch]
    /// worker_threads`); [`Config::worker_threads`] says what `serve` runs.
    pub configured_worker_threads: Option<usize>,
    /// Settlement dates: cutoff time and time zone (`[clearing]`).
    pub clearing: crate::clearing::Settlement,
    /// Where every frame is recorded, if anywhere (`[capture]`).
    pub capture: Option<CaptureConfig>,
    /// Where the keys sealing card data come from (`[security]`).
    pub security: SecurityConfig,
    /// The admin listener (`[admin] listen`); off when absent.
    pub admin: Option<crate::admin::AdminConfig>,
    /// How `serve` logs (`[log] format`), unless `--log-format` is given.
    pub log_format: crate::logging::LogFormat,
    /// The risk rules file (`[risk] rules_file`), read at start and on
    /// SIGHUP; `None`: no rules.
    pub risk_rules: Option<PathBuf>,
    /// Decline, reversal and volume alerts per party (`[alerts]`).
    pub alerts: crate::alerts::AlertPolicy,
}

impl Config {
    /// How instances hold their work: a lease on a shared store, recovery of
    /// a dead peer's work a grace after its lease ran out (a second more than
    /// the longest bank timeout).
    pub fn lease_policy(&self) -> crate::switch::lease::LeasePolicy {
        let longest = self
            .banks
            .iter()
            .map(|b| b.timeout)
            .max()
            .unwrap_or_default();
        crate::switch::lease::LeasePolicy {
            shared: matches!(self.store, StoreConfig::Postgres(_)),
            duration: self.lease,
            grace: longest + Duration::from_secs(1),
        }
    }

    /// The async runtime's worker threads for a host of `cores` cores:
    /// `[switch] worker_threads` when set; else `None` when
    /// `TOKIO_WORKER_THREADS` is in the environment (`tokio_env_set`: the
    /// runtime reads it itself); else, on the embedded store, one fewer than
    /// the cores (at least one), since the store's writer is a thread of its
    /// own that is busy under load and the workers would otherwise take
    /// turns with it on the cores, waking each other more than working (on
    /// 2 cores one worker costs 12–14 % less CPU a receive at 10,000/s: README,
    /// "Threads and commits"); else `None`, one a core, the runtime's default,
    /// as PostgreSQL does the store's work in its own processes.
    pub fn worker_threads(&self, cores: usize, tokio_env_set: bool) -> Option<usize> {
        match (self.configured_worker_threads, &self.store) {
            (Some(n), _) => Some(n),
            (None, _) if tokio_env_set => None,
            (None, StoreConfig::Embedded(_)) => Some(cores.saturating_sub(1).max(1)),
            (None, StoreConfig::Postgres(_)) => None,
        }
    }
}

/// The file descriptors a configuration may hold open at once, by what
/// holds them: what `serve` checks against its open-file limit at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptors {
    /// Σ `max_connections` of the wallet listeners, plus their listening sockets.
    pub wallets: u64,
    /// Σ `connections` of the banks.
    pub banks: u64,
    /// The store: the embedded file with its WAL and lock files, a reader
    /// (clearing) and its files; or the PostgreSQL pool.
    pub store: u64,
    /// Standard streams, the runtime's epoll and wake-up descriptors, logs,
    /// and room for short-lived ones (a clearing file, DNS).
    pub reserve: u64,
}

impl Descriptors {
    pub const RESERVE: u64 = 64;

    pub fn total(&self) -> u64 {
        self.wallets + self.banks + self.store + self.reserve
    }
}

impl Config {
    /// What this configuration needs of the open-file limit.
    pub fn descriptors(&self) -> Descriptors {
        Descriptors {
            wallets: self
                .wallets
                .iter()
                .map(|w| w.max_connections as u64 + 1)
                .sum(),
            banks: self.banks.iter().map(|b| b.connections as u64).sum(),
            store: match self.store {
                StoreConfig::Embedded(_) => 8,
                StoreConfig::Postgres(_) => {
                    crate::store::postgres::PostgresOptions::default().pool_size as u64
                }
            },
            reserve: Descriptors::RESERVE,
        }
    }
}

fn institution(key: &str, value: &str) -> Result<InstitutionId, ConfigError> {
    InstitutionId::from_field(32, value.as_bytes()).map_err(|_| {
        err(
            key,
            format!("{value:?} is not an institution id of 1 to 11 digits"),
        )
    })
}

fn framing(key: &str, value: &str, max: Option<usize>) -> Result<FramingConfig, ConfigError> {
    let f: FramingConfig = value.parse().map_err(|e| err(key, format!("{e}")))?;
    Ok(match max {
        Some(m) => f.with_max_frame_len(m),
        None => f,
    })
}

fn address(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    use std::net::ToSocketAddrs;
    value
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| err(key, format!("{value:?} is not a host:port address")))
}

/// The name of an environment variable (the value is read at start, never
/// from this file): letters, digits and `_`, not starting with a digit.
fn env_name(key: &str, value: Option<String>) -> Result<Option<String>, ConfigError> {
    let Some(name) = value else { return Ok(None) };
    let valid = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(err(
            key,
            format!("{name:?} is not an environment variable's name"),
        ));
    }
    Ok(Some(name))
}

/// A wallet listener's `tls` and `clients` (`prefix` is `wallets[i].`):
/// the files read now, so that one that cannot be used is a configuration
/// error naming its key.
fn server_tls(
    prefix: &str,
    raw: Option<&RawServerTls>,
    clients: Option<&[RawClient]>,
    institutions: &[InstitutionId],
    base: &Path,
) -> Result<Option<crate::tls::ServerTls>, ConfigError> {
    use crate::tls::{ClientName, ClientRule, ServerFiles, ServerTls};
    let Some(raw) = raw else {
        if clients.is_some() {
            return Err(err(
                format!("{prefix}clients"),
                "needs mutual TLS: `tls = { cert, key, client_ca }`",
            ));
        }
        return Ok(None);
    };
    if raw.client_ca.is_none() && clients.is_some() {
        return Err(err(
            format!("{prefix}clients"),
            "needs `tls.client_ca`: without client certificates there is nobody to map",
        ));
    }
    let rules = clients
        .map(|clients| {
            clients
                .iter()
                .enumerate()
                .map(|(j, c)| {
                    let k = |f: &str| format!("{prefix}clients[{j}].{f}");
                    let name = match (&c.subject, &c.san) {
                        (Some(subject), None) => ClientName::subject(subject).ok_or_else(|| {
                            err(
                                k("subject"),
                                format!("{subject:?} is not a common name: `CN=wallet-a`"),
                            )
                        })?,
                        (None, Some(san)) if !san.is_empty() => ClientName::DnsName(san.clone()),
                        (None, Some(_)) => return Err(err(k("san"), "must not be empty")),
                        _ => {
                            return Err(err(
                                format!("{prefix}clients[{j}]"),
                                "give either `subject` or `san`",
                            ))
                        }
                    };
                    let mapped = c
                        .institutions
                        .iter()
                        .map(|v| institution(&k("institutions"), v))
                        .collect::<Result<Vec<_>, _>>()?;
                    if mapped.is_empty() {
                        return Err(err(k("institutions"), "at least one institution id"));
                    }
                    if !institutions.is_empty() && !mapped.iter().any(|m| institutions.contains(m))
                    {
                        return Err(err(
                            k("institutions"),
                            format!(
                                "none is among the listener's `institutions`: {name} could send as nobody"
                            ),
                        ));
                    }
                    Ok(ClientRule {
                        name,
                        institutions: mapped,
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let files = ServerFiles {
        cert: base.join(&raw.cert),
        key: base.join(&raw.key),
        client_ca: raw.client_ca.as_ref().map(|p| base.join(p)),
    };
    ServerTls::new(files, rules)
        .map(Some)
        .map_err(|e| err(format!("{prefix}tls.{}", e.key), e.reason))
}

/// A link's `mac` (`key` is e.g. `banks[i].mac`), its keys read now.
fn link_mac(
    key: &str,
    raw: Option<&RawMac>,
    base: &Path,
) -> Result<Option<std::sync::Arc<crate::mac::LinkMac>>, ConfigError> {
    use iso8583::mac::{Coverage, KeyEncryptingKey, MacAlgorithm, MacKey};
    let Some(raw) = raw else {
        return Ok(None);
    };
    let algorithm: MacAlgorithm =
        raw.algorithm
            .parse()
            .map_err(|e: iso8583::mac::UnknownAlgorithm| {
                err(format!("{key}.algorithm"), e.to_string())
            })?;
    let path = |p: &Option<String>| p.as_ref().map(|p| base.join(p));
    let hex = crate::mac::read_key(path(&raw.key_file).as_deref(), raw.key_env.as_deref())
        .map_err(|e| err(format!("{key}.key_file"), e))?;
    let working = MacKey::from_hex(algorithm, &hex)
        .map_err(|e| err(format!("{key}.key_file"), e.to_string()))?;
    let kek = match (&raw.kek_file, &raw.kek_env) {
        (None, None) => None,
        _ => {
            let hex = crate::mac::read_key(path(&raw.kek_file).as_deref(), raw.kek_env.as_deref())
                .map_err(|e| err(format!("{key}.kek_file"), e))?;
            Some(
                KeyEncryptingKey::from_hex(algorithm, &hex)
                    .map_err(|e| err(format!("{key}.kek_file"), e.to_string()))?,
            )
        }
    };
    let coverage = match &raw.covered {
        None => Coverage::Message,
        Some(RawCoverage::Rule(rule)) => {
            rule.parse().map_err(|e: iso8583::mac::CoverageError| {
                err(format!("{key}.covered"), e.to_string())
            })?
        }
        Some(RawCoverage::Fields(list)) => {
            Coverage::fields(list).map_err(|e| err(format!("{key}.covered"), e.to_string()))?
        }
    };
    let mut link = crate::mac::LinkMac::new(working, coverage, kek);
    if let Some(s) = raw.grace_s {
        link = link.with_grace(Duration::from_secs(s));
    }
    Ok(Some(std::sync::Arc::new(link)))
}

/// A bank's `tls` (`key` is `banks[i].tls`), its files read now.
fn client_tls(
    key: &str,
    raw: Option<&RawClientTls>,
    base: &Path,
) -> Result<Option<crate::tls::ClientTls>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let files = crate::tls::ClientFiles {
        ca: base.join(&raw.ca),
        cert: raw.cert.as_ref().map(|p| base.join(p)),
        key: raw.key.as_ref().map(|p| base.join(p)),
    };
    crate::tls::ClientTls::new(files, raw.server_name.as_deref())
        .map(Some)
        .map_err(|e| err(format!("{key}.{}", e.key), e.reason))
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| err("(file)", format!("cannot read {}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::from_toml(&text, base)
    }

    /// Validates config text; relative paths (store, capture, TLS files)
    /// are taken from `base`.
    pub fn from_toml(text: &str, base: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|s| {
                    let line = text[..s.start].matches('\n').count() + 1;
                    format!("line {line}")
                })
                .unwrap_or_else(|| "(file)".into());
            err(at, e.message().to_string())
        })?;
        institution("switch.institution_id", &raw.switch.institution_id)?;
        iso8583::spec::Spec::load(&raw.switch.spec)
            .map_err(|e| err("switch.spec", e.to_string()))?;
        let store = match (raw.store.path.clone(), raw.store.url.clone()) {
            (Some(_), Some(_)) => {
                return Err(err(
                    "store",
                    "give either `path` (embedded store) or `url` (PostgreSQL), not both",
                ))
            }
            (None, Some(url)) => {
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    return Err(err(
                        "store.url",
                        format!("{url:?} is not a postgres:// or postgresql:// URL"),
                    ));
                }
                StoreConfig::Postgres(url)
            }
            (path, None) => {
                StoreConfig::Embedded(base.join(path.unwrap_or_else(|| "switchboard.db".into())))
            }
        };
        let mut wallets = Vec::new();
        for (i, w) in raw.wallets.iter().enumerate() {
            let k = |f: &str| format!("wallets[{i}].{f}");
            let institutions: Vec<InstitutionId> = w
                .institutions
                .iter()
                .map(|v| institution(&k("institutions"), v))
                .collect::<Result<_, _>>()?;
            let tls = server_tls(
                &k(""),
                w.tls.as_ref(),
                w.clients.as_deref(),
                &institutions,
                base,
            )?;
            wallets.push(WalletListener {
                listen: address(&k("listen"), &w.listen)?,
                framing: framing(&k("framing"), &w.framing, w.max_frame_len)?,
                institutions,
                partners: w
                    .partners
                    .iter()
                    .map(|v| institution(&k("partners"), v))
                    .collect::<Result<_, _>>()?,
                max_connections: w.max_connections.unwrap_or(1024),
                frame_timeout: match w.frame_timeout_ms {
                    Some(0) => {
                        return Err(err(
                            k("frame_timeout_ms"),
                            "a frame must have a time limit: at least 1",
                        ))
                    }
                    Some(ms) => Duration::from_millis(ms),
                    None => WalletListener::DEFAULT_FRAME_TIMEOUT,
                },
                idle_timeout: match w.idle_timeout_ms {
                    Some(0) => None,
                    Some(ms) => Some(Duration::from_millis(ms)),
                    None => Some(WalletListener::DEFAULT_IDLE_TIMEOUT),
                },
                max_in_flight: match w.max_in_flight_per_connection {
                    Some(0) => {
                        return Err(err(
                            k("max_in_flight_per_connection"),
                            "a connection must be allowed one request: at least 1",
                        ))
                    }
                    Some(n) => n,
                    None => WalletListener::DEFAULT_MAX_IN_FLIGHT,
                },
                max_per_address: w.max_connections_per_address.filter(|&n| n > 0),
                tls,
                mac: link_mac(&k("mac"), w.mac.as_ref(), base)?,
            });
        }
        if wallets.is_empty() {
            return Err(err(
                "wallets",
                "at least one [[wallets]] listener is needed",
            ));
        }
        let mut banks: Vec<BankConfig> = Vec::new();
        for (i, b) in raw.banks.iter().enumerate() {
            let k = |f: &str| format!("banks[{i}].{f}");
            institution(&k("institution_id"), &b.institution_id)?;
            if banks.iter().any(|o| o.institution_id == b.institution_id) {
                return Err(err(
                    k("institution_id"),
                    "two banks with the same institution id",
                ));
            }
            let bins = b
                .bins
                .iter()
                .map(|s| {
                    BinRange::parse(s).ok_or_else(|| {
                        err(
                            k("bins"),
                            format!("{s:?} is not a BIN (622202) or range (621700-621799)"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if bins.is_empty() {
                return Err(err(k("bins"), "a bank needs at least one BIN"));
            }
            let hosts = b
                .hosts
                .iter()
                .map(|h| address(&k("hosts"), h))
                .collect::<Result<Vec<_>, _>>()?;
            if hosts.is_empty() {
                return Err(err(k("hosts"), "a bank needs at least one host address"));
            }
            if b.connections == 0 || b.connections > 64 {
                return Err(err(k("connections"), "must be 1..=64"));
            }
            if b.timeout_ms == 0 {
                return Err(err(k("timeout_ms"), "must be more than 0"));
            }
            banks.push(BankConfig {
                institution_id: b.institution_id.clone(),
                name: b
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("bank {}", b.institution_id)),
                bins,
                hosts,
                framing: framing(&k("framing"), &b.framing, None)?,
                connections: b.connections,
                timeout: Duration::from_millis(b.timeout_ms),
                echo_interval: Duration::from_millis(b.echo_interval_ms.max(100)),
                max_in_flight: b.max_in_flight.max(1),
                tls: client_tls(&k("tls"), b.tls.as_ref(), base)?,
                mac: link_mac(&k("mac"), b.mac.as_ref(), base)?,
            });
        }
        if banks.is_empty() {
            return Err(err("banks", "at least one [[banks]] entry is needed"));
        }
        let mut saf = crate::switch::saf::SafPolicy::default();
        if let Some(raw_saf) = &raw.saf {
            if let Some(codes) = raw_saf.final_codes.clone() {
                saf.final_codes = codes
                    .iter()
                    .map(|c| {
                        c.parse::<ResponseCode>().map_err(|_| {
                            err(
                                "saf.final_codes",
                                format!("{c:?} is not a response code (two letters or digits)"),
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?;
            }
            if let Some(ms) = raw_saf.initial_backoff_ms {
                saf.initial_backoff = Duration::from_millis(ms.max(1));
            }
            if let Some(ms) = raw_saf.max_backoff_ms {
                saf.max_backoff = Duration::from_millis(ms.max(1));
            }
            if let Some(n) = raw_saf.max_attempts {
                if n == 0 {
                    return Err(err("saf.max_attempts", "must be at least 1"));
                }
                saf.max_attempts = n;
            }
        }
        let longest_timeout = banks.iter().map(|b| b.timeout).max().unwrap_or_default();
        // Unless set: 30 s, or twice the longest bank timeout if that is more.
        saf.hold = match raw.saf.as_ref().and_then(|s| s.hold_ms) {
            Some(ms) => Duration::from_millis(ms),
            None => saf.hold.max(longest_timeout * 2),
        };
        if saf.hold <= longest_timeout {
            return Err(err(
                "saf.hold_ms",
                format!(
                    "must be longer than the longest bank timeout ({} ms): \
                     an attempt must end before another instance may take the entry",
                    longest_timeout.as_millis()
                ),
            ));
        }
        let lease = Duration::from_millis(raw.store.lease_ms.unwrap_or(10_000));
        if lease < Duration::from_millis(300) {
            return Err(err("store.lease_ms", "must be at least 300"));
        }
        let commit_interval = match (raw.store.commit_interval_ms, raw.store.commit_interval_us) {
            (Some(_), Some(_)) => {
                return Err(err(
                    "store.commit_interval_us",
                    "give commit_interval_ms or commit_interval_us, not both",
                ))
            }
            (ms, None) => embedded_only(
                "store.commit_interval_ms",
                ms,
                MAX_COMMIT_INTERVAL_MS,
                &store,
            )?
            .map(Duration::from_millis),
            (None, us) => embedded_only(
                "store.commit_interval_us",
                us,
                MAX_COMMIT_INTERVAL_US,
                &store,
            )?
            .map(Duration::from_micros),
        }
        .unwrap_or(crate::store::sqlite::DEFAULT_COMMIT_INTERVAL);
        let commit_interval_above = embedded_only(
            "store.commit_interval_above",
            raw.store.commit_interval_above,
            u64::MAX,
            &store,
        )?
        .unwrap_or(crate::store::sqlite::DEFAULT_COMMIT_INTERVAL_ABOVE);
        let commit_delay = embedded_only(
            "store.commit_delay_us",
            raw.store.commit_delay_us,
            MAX_COMMIT_DELAY_US,
            &store,
        )?
        .map_or(
            crate::store::sqlite::DEFAULT_COMMIT_DELAY,
            Duration::from_micros,
        );
        if raw.store.decision_log.is_some() && matches!(store, StoreConfig::Postgres(_)) {
            return Err(err(
                "store.decision_log",
                "only the embedded store (`path`) has it",
            ));
        }
        if raw.store.journal_retention_days == Some(0) {
            return Err(err(
                "store.journal_retention_days",
                "must be at least 1 (leave it out to keep the journal forever)",
            ));
        }
        if let Some(n) = raw.switch.worker_threads {
            if !(1..=MAX_WORKER_THREADS).contains(&n) {
                return Err(err(
                    "switch.worker_threads",
                    format!("must be from 1 to {MAX_WORKER_THREADS}"),
                ));
            }
        }
        let mut clearing = crate::clearing::Settlement::default();
        if let Some(c) = raw.clearing {
            let cutoff = c.cutoff.unwrap_or_else(|| clearing.cutoff_text());
            let zone = c
                .time_zone
                .unwrap_or_else(|| clearing.time_zone.to_string());
            crate::clearing::Settlement::parse(&cutoff, "UTC")
                .map_err(|e| err("clearing.cutoff", e.0))?;
            clearing = crate::clearing::Settlement::parse(&cutoff, &zone)
                .map_err(|e| err("clearing.time_zone", e.0))?;
        }
        let capture = match raw.capture {
            None => None,
            Some(c) => {
                if c.path.is_empty() {
                    return Err(err("capture.path", "must not be empty"));
                }
                let max_bytes = c.max_bytes.unwrap_or(CaptureConfig::DEFAULT_MAX_BYTES);
                if max_bytes < 4096 {
                    return Err(err("capture.max_bytes", "must be at least 4096"));
                }
                let max_files = c.max_files.unwrap_or(CaptureConfig::DEFAULT_MAX_FILES);
                if max_files == 0 {
                    return Err(err("capture.max_files", "must be at least 1"));
                }
                Some(CaptureConfig {
                    path: base.join(c.path),
                    max_bytes,
                    max_files,
                    mask_card_data: c.mask_card_data.unwrap_or(true),
                })
            }
        };
        let admin = match raw.admin {
            None => None,
            Some(a) => Some(crate::admin::AdminConfig {
                listen: address("admin.listen", &a.listen)?,
                operator_token_env: env_name("admin.operator_token_env", a.operator_token_env)?,
                read_token_env: env_name("admin.read_token_env", a.read_token_env)?,
            }),
        };
        let log_format = match raw.log.and_then(|l| l.format) {
            None => crate::logging::LogFormat::default(),
            Some(f) => f.parse().map_err(|e: String| err("log.format", e))?,
        };
        Ok(Config {
            admin,
            log_format,
            institution_id: raw.switch.institution_id,
            spec: raw.switch.spec,
            store,
            wallets,
            banks,
            saf,
            lease,
            journal_retention_days: raw.store.journal_retention_days,
            commit_interval,
            commit_interval_above,
            commit_delay,
            decision_log: raw.store.decision_log.unwrap_or(true),
            max_freeze_age: Duration::from_secs(raw.switch.max_freeze_age_s.max(60)),
            configured_worker_threads: raw.switch.worker_threads,
            clearing,
            capture,
            security: SecurityConfig {
                data_key_file: raw.security.data_key_file.map(|f| base.join(f)),
                require_encryption: raw.security.require_encryption,
            },
            risk_rules: raw.risk.rules_file.map(|f| base.join(f)),
            alerts: raw.alerts.policy()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[switch]
institution_id = "00010000"
[store]
path = "sb.db"
[[wallets]]
listen = "127.0.0.1:0"
institutions = ["01020000"]
[[banks]]
institution_id = "48020000"
bins = ["622202", "621700-621799"]
hosts = ["127.0.0.1:7000"]
"#;

    #[test]
    fn good_config_loads() {
        let c = Config::from_toml(GOOD, Path::new("/tmp")).unwrap();
        assert_eq!(c.store, StoreConfig::Embedded("/tmp/sb.db".into()));
        assert_eq!(c.banks[0].bins.len(), 2);
        assert!(c.banks[0].bins[1].contains(b"6217501234567890"));
        assert!(!c.banks[0].bins[1].contains(b"6218001234567890"));
        assert_eq!(c.banks[0].timeout, Duration::from_millis(5000));
    }

    #[test]
    fn capture_is_off_unless_configured_and_checked() {
        let c = Config::from_toml(GOOD, Path::new("/tmp")).unwrap();
        assert_eq!(c.capture, None);
        let on = format!("{GOOD}\n[capture]\npath = \"link.pcapng\"\n");
        assert_eq!(
            Config::from_toml(&on, Path::new("/tmp")).unwrap().capture,
            Some(CaptureConfig {
                path: "/tmp/link.pcapng".into(),
                max_bytes: CaptureConfig::DEFAULT_MAX_BYTES,
                max_files: CaptureConfig::DEFAULT_MAX_FILES,
                mask_card_data: true,
            })
        );
        let unmasked = format!("{on}mask_card_data = false\n");
        let unmasked = Config::from_toml(&unmasked, Path::new("/tmp")).unwrap();
        assert!(!unmasked.capture.unwrap().mask_card_data);
        for (line, key) in [
            ("max_files = 0", "capture.max_files"),
            ("max_bytes = 100", "capture.max_bytes"),
        ] {
            let bad = format!("{on}{line}\n");
            assert_eq!(
                Config::from_toml(&bad, Path::new("/tmp")).unwrap_err().key,
                key
            );
        }
    }

    #[test]
    fn alerts_are_on_by_default_and_checked() {
        let c = Config::from_toml(GOOD, Path::new("/tmp")).unwrap();
        assert_eq!(c.alerts, crate::alerts::AlertPolicy::default());
        let set = format!(
            "{GOOD}\n[alerts]\nenabled = false\nwindow_seconds = 30\ndecline_rate = 0.25\nmin_requests = 5\n"
        );
        let c = Config::from_toml(&set, Path::new("/tmp")).unwrap();
        assert!(!c.alerts.enabled);
        assert_eq!(c.alerts.window, Duration::from_secs(30));
        assert_eq!(c.alerts.decline_rate, 0.25);
        assert_eq!(c.alerts.min_requests, 5);
        for (line, key) in [
            ("window_seconds = 0", "alerts.window_seconds"),
            ("history_windows = 11", "alerts.history_windows"),
            ("decline_rate = 1.5", "alerts.decline_rate"),
            ("reversal_rate = 0.0", "alerts.reversal_rate"),
            ("volume_factor = 1.0", "alerts.volume_factor"),
            ("min_requests = 0", "alerts.min_requests"),
        ] {
            let bad = format!("{GOOD}\n[alerts]\n{line}\n");
            assert_eq!(
                Config::from_toml(&bad, Path::new("/tmp")).unwrap_err().key,
                key
            );
        }
    }

    #[test]
    fn store_is_a_path_or_a_url() {
        let pg = GOOD.replace(
            "path = \"sb.db\"",
            "url = \"postgres://sb:secret@db:5432/sb\"",
        );
        let c = Config::from_toml(&pg, Path::new("/tmp")).unwrap();
        assert_eq!(
            c.store,
            StoreConfig::Postgres("postgres://sb:secret@db:5432/sb".into())
        );
        assert_eq!(c.store.to_string(), "postgres://sb:***@db:5432/sb");
        let both = GOOD.replace(
            "path = \"sb.db\"",
            "path = \"sb.db\"\nurl = \"postgres://db/sb\"",
        );
        assert_eq!(
            Config::from_toml(&both, Path::new(".")).unwrap_err().key,
            "store"
        );
        let bad = GOOD.replace("path = \"sb.db\"", "url = \"mysql://db/sb\"");
        assert_eq!(
            Config::from_toml(&bad, Path::new(".")).unwrap_err().key,
            "store.url"
        );
        let none = GOOD.replace("path = \"sb.db\"", "");
        assert_eq!(
            Config::from_toml(&none, Path::new("/x")).unwrap().store,
            StoreConfig::Embedded("/x/switchboard.db".into())
        );
    }

    #[test]
    fn errors_name_the_key() {
        let bad = GOOD.replace("621700-621799", "6217-621799");
        let e = Config::from_toml(&bad, Path::new(".")).unwrap_err();
        assert_eq!(e.key, "banks[0].bins");
        let bad = GOOD.replace("\"01020000\"", "\"x\"");
        let e = Config::from_toml(&bad, Path::new(".")).unwrap_err();
        assert_eq!(e.key, "wallets[0].institutions");
        let bad = format!("{GOOD}[clearing]\ncutoff = \"24:30\"\n");
        let e = Config::from_toml(&bad, Path::new(".")).unwrap_err();
        assert_eq!(e.key, "clearing.cutoff");
        let bad = format!("{GOOD}[clearing]\ntime_zone = \"Asia/Shang\"\n");
        let e = Config::from_toml(&bad, Path::new(".")).unwrap_err();
        assert_eq!(e.key, "clearing.time_zone");
        let good = format!("{GOOD}[clearing]\ncutoff = \"22:30\"\ntime_zone = \"UTC\"\n");
        let c = Config::from_toml(&good, Path::new(".")).unwrap();
        assert_eq!(c.clearing.to_string(), "cutoff 22:30 UTC");
        let bad = GOOD.replace("listen = ", "listne = ");
        let e = Config::from_toml(&bad, Path::new(".")).unwrap_err();
        assert!(e.to_string().contains("listne"), "{e}");
    }

    #[test]
    fn admin_and_log_are_off_and_text_unless_configured() {
        let c = Config::from_toml(GOOD, Path::new(".")).unwrap();
        assert_eq!(
            (c.admin, c.log_format),
            (None, crate::logging::LogFormat::Text)
        );
        let on = format!("{GOOD}[admin]\nlisten = \"127.0.0.1:9100\"\n[log]\nformat = \"json\"\n");
        let c = Config::from_toml(&on, Path::new(".")).unwrap();
        assert_eq!(c.admin.unwrap().listen, "127.0.0.1:9100".parse().unwrap());
        assert_eq!(c.log_format, crate::logging::LogFormat::Json);
        let bad = format!("{GOOD}[log]\nformat = \"xml\"\n");
        let e = Config::from_toml(&bad, Path::new(".")).unwrap_err();
        assert_eq!(e.key, "log.format");
        assert!(e.reason.contains("text or json"), "{e}");
        let tokens = format!(
            "{GOOD}[admin]\nlisten = \"127.0.0.1:0\"\noperator_token_env = \"OPS_TOKEN\"\n"
        );
        let admin = Config::from_toml(&tokens, Path::new("."))
            .unwrap()
            .admin
            .unwrap();
        assert_eq!(admin.operator_token_env.as_deref(), Some("OPS_TOKEN"));
        assert_eq!(admin.read_token_env, None);
        let bad_name =
            format!("{GOOD}[admin]\nlisten = \"127.0.0.1:0\"\nread_token_env = \"a token\"\n");
        assert_eq!(
            Config::from_toml(&bad_name, Path::new("."))
                .unwrap_err()
                .key,
            "admin.read_token_env"
        );
        let bad = format!("{GOOD}[admin]\nlisten = \"nowhere\"\n");
        assert_eq!(
            Config::from_toml(&bad, Path::new(".")).unwrap_err().key,
            "admin.listen"
        );
    }

    #[test]
    fn the_annotated_example_loads() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/switchboard.toml"
        ));
        let c = Config::load(path).unwrap();
        assert_eq!(c.banks.len(), 2);
        assert_eq!(c.saf.final_codes, ["00", "25", "12"]);
        assert_eq!(c.lease, Duration::from_secs(10));
    }

    #[test]
    fn worker_threads_leave_the_embedded_writer_a_core() {
        let embedded = Config::from_toml(GOOD, Path::new(".")).unwrap();
        assert_eq!(embedded.configured_worker_threads, None);
        // One fewer than the cores, at least one; the environment's
        // TOKIO_WORKER_THREADS left to the runtime.
        assert_eq!(embedded.worker_threads(1, false), Some(1));
        assert_eq!(embedded.worker_threads(2, false), Some(1));
        assert_eq!(embedded.worker_threads(8, false), Some(7));
        assert_eq!(embedded.worker_threads(8, true), None);
        // PostgreSQL: the runtime's own default, a worker a core.
        let pg = Config::from_toml(
            &GOOD.replace("path = \"sb.db\"", "url = \"postgres://db/sb\""),
            Path::new("."),
        )
        .unwrap();
        assert_eq!(pg.worker_threads(8, false), None);
        // Configured: taken as it is, over the environment, and bounded.
        let with = |n: usize| {
            GOOD.replacen(
                "institution_id",
                &format!("worker_threads = {n}\ninstitution_id"),
                1,
            )
        };
        let three = Config::from_toml(&with(3), Path::new(".")).unwrap();
        assert_eq!(three.worker_threads(2, true), Some(3));
        for refused in [0, MAX_WORKER_THREADS + 1] {
            let e = Config::from_toml(&with(refused), Path::new(".")).unwrap_err();
            assert_eq!(e.key, "switch.worker_threads");
        }
    }

    #[test]
    fn lease_and_hold() {
        let c = Config::from_toml(GOOD, Path::new(".")).unwrap();
        assert_eq!(c.lease, Duration::from_secs(10));
        assert_eq!(c.saf.hold, Duration::from_secs(30));
        let policy = c.lease_policy();
        assert!(!policy.shared);
        assert_eq!(
            policy.grace,
            Duration::from_secs(6),
            "bank timeout 5 s + 1 s"
        );
        let pg = GOOD.replace(
            "path = \"sb.db\"",
            "url = \"postgres://db/sb\"\nlease_ms = 2000",
        );
        let c = Config::from_toml(&pg, Path::new(".")).unwrap();
        assert_eq!(c.lease, Duration::from_secs(2));
        assert!(c.lease_policy().shared);
        let short = GOOD.replace("path = \"sb.db\"", "path = \"sb.db\"\nlease_ms = 100");
        let e = Config::from_toml(&short, Path::new(".")).unwrap_err();
        assert_eq!(e.key, "store.lease_ms");
        assert_eq!(c.journal_retention_days, None, "kept forever unless given");
        let kept = GOOD.replace(
            "path = \"sb.db\"",
            "path = \"sb.db\"\njournal_retention_days = 90",
        );
        let c = Config::from_toml(&kept, Path::new(".")).unwrap();
        assert_eq!(c.journal_retention_days, Some(90));
        let none = GOOD.replace(
            "path = \"sb.db\"",
            "path = \"sb.db\"\njournal_retention_days = 0",
        );
        let e = Config::from_toml(&none, Path::new(".")).unwrap_err();
        assert_eq!(e.key, "store.journal_retention_days");
        // The embedded store's commit interval: the default unless given,
        // bounded, and refused for PostgreSQL, which has no such setting;
        // likewise the rate from which it applies.
        assert_eq!(
            c.commit_interval,
            crate::store::sqlite::DEFAULT_COMMIT_INTERVAL
        );
        assert_eq!(
            c.commit_interval_above,
            crate::store::sqlite::DEFAULT_COMMIT_INTERVAL_ABOVE
        );
        let with_interval = |store: &str, ms: u64| {
            GOOD.replace(
                "path = \"sb.db\"",
                &format!("{store}\ncommit_interval_ms = {ms}"),
            )
        };
        let c = Config::from_toml(&with_interval("path = \"sb.db\"", 2), Path::new(".")).unwrap();
        assert_eq!(c.commit_interval, Duration::from_millis(2));
        for refused in [
            with_interval("path = \"sb.db\"", MAX_COMMIT_INTERVAL_MS + 1),
            with_interval("url = \"postgres://db/sb\"", 2),
        ] {
            let e = Config::from_toml(&refused, Path::new(".")).unwrap_err();
            assert_eq!(e.key, "store.commit_interval_ms");
        }
        // To the microsecond, with the same bound; not beside the
        // milliseconds' key.
        let with_interval_us = |store: &str, us: u64| {
            GOOD.replace(
                "path = \"sb.db\"",
                &format!("{store}\ncommit_interval_us = {us}"),
            )
        };
        let c =
            Config::from_toml(&with_interval_us("path = \"sb.db\"", 1500), Path::new(".")).unwrap();
        assert_eq!(c.commit_interval, Duration::from_micros(1500));
        for refused in [
            with_interval_us("path = \"sb.db\"", MAX_COMMIT_INTERVAL_US + 1),
            with_interval_us("url = \"postgres://db/sb\"", 1500),
            with_interval_us("path = \"sb.db\"\ncommit_interval_ms = 1", 1500),
        ] {
            let e = Config::from_toml(&refused, Path::new(".")).unwrap_err();
            assert_eq!(e.key, "store.commit_interval_us");
        }
        let above = GOOD.replace(
            "path = \"sb.db\"",
            "path = \"sb.db\"\ncommit_interval_above = 0",
        );
        let c = Config::from_toml(&above, Path::new(".")).unwrap();
        assert_eq!(c.commit_interval_above, 0);
        let pg = GOOD.replace(
            "path = \"sb.db\"",
            "url = \"postgres://db/sb\"\ncommit_interval_above = 0",
        );
        let e = Config::from_toml(&pg, Path::new(".")).unwrap_err();
        assert_eq!(e.key, "store.commit_interval_above");
        // The small batches' delay: the default unless given, off with 0,
        // bounded, and refused for PostgreSQL.
        assert_eq!(c.commit_delay, crate::store::sqlite::DEFAULT_COMMIT_DELAY);
        let with_delay = |store: &str, us: u64| {
            GOOD.replace(
                "path = \"sb.db\"",
                &format!("{store}\ncommit_delay_us = {us}"),
            )
        };
        for (us, delay) in [(0, Duration::ZERO), (350, Duration::from_micros(350))] {
            let c = Config::from_toml(&with_delay("path = \"sb.db\"", us), Path::new(".")).unwrap();
            assert_eq!(c.commit_delay, delay);
        }
        for refused in [
            with_delay("path = \"sb.db\"", MAX_COMMIT_DELAY_US + 1),
            with_delay("url = \"postgres://db/sb\"", 200),
        ] {
            let e = Config::from_toml(&refused, Path::new(".")).unwrap_err();
            assert_eq!(e.key, "store.commit_delay_us");
        }
        // The decision log: on unless turned off, and refused for PostgreSQL.
        assert!(c.decision_log);
        let with_log = |store: &str, on: bool| {
            GOOD.replace("path = \"sb.db\"", &format!("{store}\ndecision_log = {on}"))
        };
        for on in [false, true] {
            let c = Config::from_toml(&with_log("path = \"sb.db\"", on), Path::new(".")).unwrap();
            assert_eq!(c.decision_log, on);
        }
        let e = Config::from_toml(
            &with_log("url = \"postgres://db/sb\"", true),
            Path::new("."),
        )
        .unwrap_err();
        assert_eq!(e.key, "store.decision_log");
        // A long bank timeout stretches the default hold; a hold set too short is refused.
        let slow = format!("{GOOD}timeout_ms = 40000\n");
        let c = Config::from_toml(&slow, Path::new(".")).unwrap();
        assert_eq!(c.saf.hold, Duration::from_secs(80));
        let e = Config::from_toml(&format!("{slow}[saf]\nhold_ms = 20000\n"), Path::new("."))
            .unwrap_err();
        assert_eq!(e.key, "saf.hold_ms");
    }
}

//! The TLS settings of a connection string, taken out before tokio-postgres
//! reads the rest.
//!
//! Both forms libpq accepts are read: a URL
//! (`postgres://user:pass@host:5432/db?sslmode=verify-full&sslrootcert=/ca.pem`,
//! values percent-encoded) and key=value pairs
//! (`host=db.example sslmode=verify-full sslrootcert='/etc/ca.pem'`, values
//! bare or single-quoted, `\` escaping the next character). tokio-postgres
//! knows `sslmode` only up to `require` and none of the file settings, so
//! `sslmode`, `sslrootcert`, `sslcert` and `sslkey` are removed here and
//! everything else is handed on as it was written.
//!
//! Errors never quote the connection string: it may hold a password.

use std::path::PathBuf;

use percent_encoding::percent_decode_str;

/// How much TLS a connection insists on, with libpq's meanings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// TLS when the server offers it, else plain; libpq's default, and
    /// this store's when the string names no `sslmode`.
    Prefer,
    /// TLS or no connection. The certificate is checked only when
    /// `sslrootcert` is given (then as for `VerifyCa`).
    Require,
    /// TLS, and the server's certificate chains to a CA of `sslrootcert`.
    VerifyCa,
    /// As `VerifyCa`, and the certificate names the host connected to.
    VerifyFull,
}

impl SslMode {
    const NAMES: [(&'static str, SslMode); 5] = [
        ("disable", SslMode::Disable),
        ("prefer", SslMode::Prefer),
        ("require", SslMode::Require),
        ("verify-ca", SslMode::VerifyCa),
        ("verify-full", SslMode::VerifyFull),
    ];

    pub fn name(self) -> &'static str {
        SslMode::NAMES
            .iter()
            .find(|(_, m)| *m == self)
            .map_or("?", |(n, _)| n)
    }

    fn parse(value: &str) -> Result<SslMode, String> {
        SslMode::NAMES
            .iter()
            .find(|(n, _)| *n == value)
            .map(|(_, m)| *m)
            .ok_or_else(|| {
                format!(
                    "sslmode={value} is not supported: use disable, prefer, require, verify-ca \
                     or verify-full"
                )
            })
    }
}

/// The TLS settings of a connection string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SslSettings {
    pub mode: SslMode,
    /// `sslrootcert`: PEM file of the CAs the server's certificate must chain to.
    pub root_cert: Option<PathBuf>,
    /// `sslcert` and `sslkey`: the client's certificate chain and key, for
    /// servers that ask for one (`hostssl ... cert` in pg_hba.conf).
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

impl SslSettings {
    /// Whether the server's certificate must chain to `root_cert`.
    pub fn checks_chain(&self) -> bool {
        match self.mode {
            SslMode::VerifyCa | SslMode::VerifyFull => true,
            // libpq's rule: a root certificate given makes these verify-ca.
            SslMode::Prefer | SslMode::Require => self.root_cert.is_some(),
            SslMode::Disable => false,
        }
    }
}

const TAKEN: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// Splits `conninfo` into the string tokio-postgres is to parse (without the
/// TLS settings) and the TLS settings.
pub fn split(conninfo: &str) -> Result<(String, SslSettings), String> {
    let is_url = ["postgres://", "postgresql://"]
        .iter()
        .any(|p| conninfo.starts_with(p));
    let (rest, taken) = if is_url {
        split_url(conninfo)?
    } else {
        split_pairs(conninfo)?
    };
    Ok((rest, settings(taken)?))
}

/// The settings from the `(key, value)` pairs taken out; a key given twice
/// counts with its last value, as in libpq.
fn settings(taken: Vec<(String, String)>) -> Result<SslSettings, String> {
    let last = |key: &str| {
        taken
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let mode = match last("sslmode") {
        Some(value) => SslMode::parse(&value)?,
        None => SslMode::Prefer,
    };
    let root_cert = last("sslrootcert");
    if root_cert.as_deref() == Some("system") {
        return Err(
            "sslrootcert=system is not supported: name a PEM file of the CA certificates".into(),
        );
    }
    if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) && root_cert.is_none() {
        return Err(format!(
            "sslmode={} needs sslrootcert=<PEM file of the CA certificates the server's \
             certificate must chain to>",
            mode.name()
        ));
    }
    let client_cert = match (last("sslcert"), last("sslkey")) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some((PathBuf::from(cert), PathBuf::from(key))),
        (Some(_), None) => return Err("sslcert is given without sslkey".into()),
        (None, Some(_)) => return Err("sslkey is given without sslcert".into()),
    };
    Ok(SslSettings {
        mode,
        root_cert: root_cert.map(PathBuf::from),
        client_cert,
    })
}

/// A URL: the query's TLS parameters taken out, the rest of the URL kept
/// byte for byte.
fn split_url(url: &str) -> Result<(String, Vec<(String, String)>), String> {
    // Like tokio-postgres: user information runs to the first `@`, and the
    // query starts at the first `?` after it.
    let after_credentials = url.find('@').map_or(0, |at| at + 1);
    let Some(query_at) = url[after_credentials..]
        .find('?')
        .map(|q| q + after_credentials)
    else {
        return Ok((url.to_string(), Vec::new()));
    };
    let mut kept = Vec::new();
    let mut taken = Vec::new();
    for parameter in url[query_at + 1..].split('&').filter(|p| !p.is_empty()) {
        let (key, value) = parameter.split_once('=').unwrap_or((parameter, ""));
        let key = decode(key, "parameter name")?;
        if TAKEN.contains(&key.as_str()) {
            taken.push((key.clone(), decode(value, &key)?));
        } else {
            kept.push(parameter);
        }
    }
    let mut rest = url[..query_at].to_string();
    if !kept.is_empty() {
        rest.push('?');
        rest.push_str(&kept.join("&"));
    }
    Ok((rest, taken))
}

fn decode(text: &str, what: &str) -> Result<String, String> {
    percent_decode_str(text)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| format!("bad PostgreSQL URL: {what} is not UTF-8 once percent-decoded"))
}

/// key=value pairs: the TLS ones taken out, the others written again
/// (each value quoted).
fn split_pairs(conninfo: &str) -> Result<(String, Vec<(String, String)>), String> {
    let mut kept = Vec::new();
    let mut taken = Vec::new();
    for (key, value) in pairs(conninfo)? {
        if TAKEN.contains(&key) {
            taken.push((key.to_string(), value));
        } else {
            kept.push(format!("{key}='{}'", quote(&value)));
        }
    }
    Ok((kept.join(" "), taken))
}

fn quote(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\'', "\\'")
}

/// The pairs of a key=value string, read as tokio-postgres reads them.
fn pairs(s: &str) -> Result<Vec<(&str, String)>, String> {
    let bad = |why: &str| format!("bad PostgreSQL connection string: {why}");
    let mut out = Vec::new();
    let mut rest = s.trim_start();
    while !rest.is_empty() {
        let key_end = rest
            .find(|c: char| c.is_whitespace() || c == '=')
            .unwrap_or(rest.len());
        let key = &rest[..key_end];
        if key.is_empty() {
            return Err(bad("`=` without a key before it"));
        }
        rest = rest[key_end..].trim_start();
        rest = rest
            .strip_prefix('=')
            .ok_or_else(|| bad(&format!("`{key}` without `=` after it")))?
            .trim_start();
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let quoted = rest.starts_with('\'');
        if quoted {
            chars.next();
        }
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => value.extend(chars.next().map(|(_, c)| c)),
                '\'' if quoted => {
                    end = Some(i + 1);
                    break;
                }
                c if c.is_whitespace() && !quoted => {
                    end = Some(i);
                    break;
                }
                c => value.push(c),
            }
        }
        let end = match end {
            Some(end) => end,
            None if quoted => return Err(bad(&format!("the value of `{key}` has no closing `'`"))),
            None => rest.len(),
        };
        if value.is_empty() && !quoted {
            return Err(bad(&format!("`{key}` has no value")));
        }
        out.push((key, value));
        rest = rest[end..].trim_start();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(conninfo: &str) -> SslMode {
        split(conninfo).unwrap().1.mode
    }

    #[test]
    fn a_url_loses_its_tls_parameters_and_keeps_the_rest_as_written() {
        let (rest, ssl) = split(
            "postgres://u:p%3Fw@db.example:5433/sw?application_name=a&sslmode=verify-full\
             &sslrootcert=%2Fetc%2Fca%20files%2Fca.pem&connect_timeout=3",
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgres://u:p%3Fw@db.example:5433/sw?application_name=a&connect_timeout=3"
        );
        assert_eq!(ssl.mode, SslMode::VerifyFull);
        assert_eq!(ssl.root_cert, Some(PathBuf::from("/etc/ca files/ca.pem")));
        assert!(ssl.checks_chain());
        let (rest, _) = split("postgresql://h/db?sslmode=require").unwrap();
        assert_eq!(rest, "postgresql://h/db");
    }

    #[test]
    fn a_question_mark_in_the_password_is_not_the_query() {
        let (rest, ssl) = split("postgres://u:a?b@h/db?sslmode=disable").unwrap();
        assert_eq!(rest, "postgres://u:a?b@h/db");
        assert_eq!(ssl.mode, SslMode::Disable);
    }

    #[test]
    fn key_value_pairs_lose_their_tls_settings_and_keep_the_rest_quoted() {
        let (rest, ssl) = split(
            "host=db.example  port = 5433 password='it\\'s' sslmode=verify-ca \
             sslrootcert='/etc/my ca.pem' sslcert=/c.pem sslkey=/k\\ ey.pem user=o\\'k",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            rest,
            "host='db.example' port='5433' password='it\\'s' user='o\\'k'"
        );
        assert_eq!(ssl.mode, SslMode::VerifyCa);
        assert_eq!(ssl.root_cert, Some(PathBuf::from("/etc/my ca.pem")));
        assert_eq!(
            ssl.client_cert,
            Some((PathBuf::from("/c.pem"), PathBuf::from("/k ey.pem")))
        );
        // What is handed on parses to what was meant.
        let config: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(config.get_user(), Some("o'k"));
        assert_eq!(config.get_password(), Some(&b"it's"[..]));
        assert_eq!(config.get_ports(), &[5433]);
    }

    #[test]
    fn without_sslmode_it_is_prefer_as_in_libpq() {
        assert_eq!(mode("postgres://h/db"), SslMode::Prefer);
        assert_eq!(mode("host=h dbname=db"), SslMode::Prefer);
        let (_, ssl) = split("host=h sslrootcert=/ca.pem").unwrap();
        assert!(
            ssl.checks_chain(),
            "prefer with a root certificate checks it"
        );
        let (_, ssl) = split("host=h sslmode=require").unwrap();
        assert!(!ssl.checks_chain(), "require alone only encrypts");
    }

    #[test]
    fn unusable_settings_are_refused_with_the_reason_and_without_the_password() {
        let error = |s: &str| split(s).unwrap_err();
        let e = error("postgres://u:secret@h/db?sslmode=verify-full");
        assert!(e.contains("sslmode=verify-full needs sslrootcert"), "{e}");
        assert!(!e.contains("secret"), "{e}");
        assert!(error("host=h sslmode=allow").contains("sslmode=allow is not supported"));
        assert!(error("host=h sslmode=require sslrootcert=system").contains("system"));
        assert!(error("host=h sslcert=/c.pem").contains("without sslkey"));
        assert!(error("host=h sslkey=/k.pem").contains("without sslcert"));
        let e = error("password='secret host=h");
        assert!(e.contains("no closing") && !e.contains("secret'"), "{e}");
    }
}

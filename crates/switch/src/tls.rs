//! TLS on wallet listeners (the switch as server, client certificates
//! optionally required) and bank links (the switch as client), with rustls
//! on the `ring` provider.
//!
//! Certificates and keys are PEM files. Each configuration is built once
//! when the configuration is read (so a bad file is a configuration error
//! naming its key) and kept in a [`Reloading`] cache: every new connection
//! looks at the files' modification times and sizes (one `stat` each) and
//! rebuilds the configuration when one changed. A change that does not load
//! (a certificate replaced before its key, a truncated file) is logged and
//! the previous configuration stays in use until the files change again.
//! Connections already open keep the session they negotiated.
//!
//! A client certificate's subject common name and DNS names (subject
//! alternative names) are what [`ClientRule`]s map to institution ids: with
//! mutual TLS, what a wallet connection may send as rests on who connected.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tracing::{info, warn};

use crate::dialect::InstitutionId;

/// A TLS file or setting that cannot be used: `key` is the configuration
/// key under the listener's or bank's `tls` (`cert`, `key`, `client_ca`,
/// `ca`, `server_name`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct TlsError {
    pub key: &'static str,
    pub reason: String,
}

fn error(key: &'static str, reason: impl Into<String>) -> TlsError {
    TlsError {
        key,
        reason: reason.into(),
    }
}

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| error(key, format!("cannot read {}: {e}", path.display())))
}

/// Every certificate of a PEM file, at least one.
pub(crate) fn certificates(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(key, format!("{}: bad PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(error(
            key,
            format!("{}: no CERTIFICATE in the PEM file", path.display()),
        ));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub(crate) fn private_key(
    key: &'static str,
    path: &Path,
) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(key, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        error(
            key,
            format!(
                "{}: no usable PRIVATE KEY in the PEM file: {e}",
                path.display()
            ),
        )
    })
}

/// Trust anchors from a PEM file of CA certificates.
pub(crate) fn roots(key: &'static str, path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in certificates(key, path)? {
        store.add(cert).map_err(|e| {
            error(
                key,
                format!("{}: not a CA certificate: {e}", path.display()),
            )
        })?;
    }
    Ok(Arc::new(store))
}

/// What a key that does not fit its certificate, or an unusable key, is called.
pub(crate) fn key_error(e: rustls::Error, cert: &Path, key: &Path) -> TlsError {
    match e {
        rustls::Error::InconsistentKeys(_) => error(
            "key",
            format!(
                "{} is not the private key of the certificate in {}",
                key.display(),
                cert.display()
            ),
        ),
        e => error("key", format!("{}: {e}", key.display())),
    }
}

/// A configuration made from files, rebuilt when they change.
pub trait TlsFiles: Send + Sync + 'static {
    type Config: Send + Sync + 'static;
    fn paths(&self) -> Vec<&Path>;
    fn build(&self) -> Result<Arc<Self::Config>, TlsError>;
}

/// A file's modification time and size, `None` when it cannot be read.
type Stamp = Option<(SystemTime, u64)>;

fn stamps(paths: &[&Path]) -> Vec<Stamp> {
    paths
        .iter()
        .map(|p| {
            let meta = std::fs::metadata(p).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        })
        .collect()
}

/// The configuration built from `files`, rebuilt on the next
/// [`current`](Reloading::current) after one of them changed.
pub struct Reloading<F: TlsFiles> {
    files: F,
    loaded: Mutex<(Vec<Stamp>, Arc<F::Config>)>,
}

impl<F: TlsFiles> Reloading<F> {
    pub fn new(files: F) -> Result<Self, TlsError> {
        let before = stamps(&files.paths());
        let config = files.build()?;
        Ok(Reloading {
            files,
            loaded: Mutex::new((before, config)),
        })
    }

    /// The configuration for a new connection: rebuilt first if a file
    /// changed since the last look; if the change does not load, the
    /// previous one (logged once per change).
    pub fn current(&self) -> Arc<F::Config> {
        let now = stamps(&self.files.paths());
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if loaded.0 != now {
            loaded.0 = now;
            let files: Vec<String> = self
                .files
                .paths()
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            match self.files.build() {
                Ok(config) => {
                    info!(files = ?files, "TLS certificates changed: reloaded");
                    loaded.1 = config;
                }
                Err(e) => warn!(
                    files = ?files,
                    key = e.key,
                    error = %e,
                    "TLS files changed but do not load: the previous certificates stay in use"
                ),
            }
        }
        loaded.1.clone()
    }
}

/// A wallet listener's `tls`: its certificate chain and key, and the CA
/// whose client certificates it requires (mutual TLS) if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles for ServerFiles {
    type Config = ServerConfig;

    fn paths(&self) -> Vec<&Path> {
        let mut paths = vec![self.cert.as_path(), self.key.as_path()];
        paths.extend(self.client_ca.as_deref());
        paths
    }

    fn build(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let provider = provider();
        let chain = certificates("cert", &self.cert)?;
        let key = private_key("key", &self.key)?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| error("cert", e.to_string()))?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(roots("client_ca", ca)?, provider)
                        .build()
                        .map_err(|e| error("client_ca", format!("{}: {e}", ca.display())))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder
            .with_single_cert(chain, key)
            .map_err(|e| key_error(e, &self.cert, &self.key))?;
        Ok(Arc::new(config))
    }
}

/// A bank's `tls`: the CA its host's certificate must chain to, and the
/// switch's own certificate and key when the bank asks for one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFiles {
    pub ca: PathBuf,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl TlsFiles for ClientFiles {
    type Config = ClientConfig;

    fn paths(&self) -> Vec<&Path> {
        let mut paths = vec![self.ca.as_path()];
        paths.extend(self.cert.as_deref());
        paths.extend(self.key.as_deref());
        paths
    }

    fn build(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| error("ca", e.to_string()))?
            .with_root_certificates(roots("ca", &self.ca)?);
        let config = match (&self.cert, &self.key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(certificates("cert", cert)?, private_key("key", key)?)
                .map_err(|e| key_error(e, cert, key))?,
            (Some(_), None) => return Err(error("key", "`cert` is given without its `key`")),
            (None, Some(_)) => return Err(error("cert", "`key` is given without its `cert`")),
        };
        Ok(Arc::new(config))
    }
}

/// Which client certificates a [`ClientRule`] is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientName {
    /// The subject's common name (`subject = "CN=wallet-a"`).
    CommonName(String),
    /// A DNS name among the subject alternative names (`san = "wallet-a.example"`).
    DnsName(String),
}

/// A client certificate's name and the institution ids its connections may
/// send as (a wallet listener's `clients`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRule {
    pub name: ClientName,
    pub institutions: Vec<InstitutionId>,
}

impl ClientName {
    /// `subject = "CN=..."`: only the common name is matched.
    pub fn subject(value: &str) -> Option<ClientName> {
        let cn = value.trim().strip_prefix("CN=")?;
        (!cn.is_empty() && !cn.contains(',')).then(|| ClientName::CommonName(cn.to_string()))
    }
}

impl std::fmt::Display for ClientName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientName::CommonName(cn) => write!(f, "CN={cn}"),
            ClientName::DnsName(dns) => write!(f, "DNS:{dns}"),
        }
    }
}

/// A wallet listener's TLS: its server configuration and, with mutual TLS,
/// how client certificates map to institutions.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<Reloading<ServerFiles>>,
    /// `None`: any certificate the client CA signed gets the listener's
    /// institutions. `Some`: only certificates a rule names are accepted.
    clients: Option<Vec<ClientRule>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.config.files)
            .field("clients", &self.clients)
            .finish()
    }
}

/// Who a client certificate says connected, and what it may send as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Its names, for logs (`CN=wallet-a`).
    pub name: String,
    /// `None`: the listener's institutions apply.
    pub institutions: Option<Vec<InstitutionId>>,
}

impl ServerTls {
    pub fn new(files: ServerFiles, clients: Option<Vec<ClientRule>>) -> Result<Self, TlsError> {
        Ok(ServerTls {
            config: Arc::new(Reloading::new(files)?),
            clients,
        })
    }

    pub fn files(&self) -> &ServerFiles {
        &self.config.files
    }

    /// The acceptor for the next connection (certificates reloaded if changed).
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.current())
    }

    /// What a connection whose handshake presented `certificates` may send
    /// as, given the listener's `institutions` (empty: any). `Ok(None)`
    /// without mutual TLS; an error (why) when the certificate maps to no
    /// institution the listener allows: the connection is refused.
    pub fn identify(
        &self,
        certificates: Option<&[CertificateDer<'_>]>,
        listener: &[InstitutionId],
    ) -> Result<Option<Identity>, String> {
        let Some(leaf) = certificates.and_then(|c| c.first()) else {
            return match self.config.files.client_ca {
                None => Ok(None),
                // The verifier requires one; never reached.
                Some(_) => Err("no client certificate".into()),
            };
        };
        let names = CertificateNames::of(leaf)?;
        let name = names.to_string();
        let Some(rules) = &self.clients else {
            return Ok(Some(Identity {
                name,
                institutions: None,
            }));
        };
        let mut mapped: Vec<InstitutionId> = Vec::new();
        for rule in rules.iter().filter(|r| names.matches(&r.name)) {
            for id in &rule.institutions {
                if !mapped.contains(id) {
                    mapped.push(*id);
                }
            }
        }
        if mapped.is_empty() {
            return Err(format!("certificate {name} matches no `clients` entry"));
        }
        if !listener.is_empty() {
            mapped.retain(|id| listener.contains(id));
        }
        if mapped.is_empty() {
            return Err(format!(
                "certificate {name} maps to no institution this listener allows"
            ));
        }
        Ok(Some(Identity {
            name,
            institutions: Some(mapped),
        }))
    }
}

/// A bank link's TLS: its client configuration and the name its host's
/// certificate must carry.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<Reloading<ClientFiles>>,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("files", &self.config.files)
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl ClientTls {
    /// `server_name`: the DNS name or IP address the bank's certificate must
    /// be for; without it, the address of the host connected to.
    pub fn new(files: ClientFiles, server_name: Option<&str>) -> Result<Self, TlsError> {
        let server_name = server_name
            .map(|name| {
                ServerName::try_from(name.to_string()).map_err(|_| {
                    error(
                        "server_name",
                        format!("{name:?} is not a DNS name or an IP address"),
                    )
                })
            })
            .transpose()?;
        Ok(ClientTls {
            config: Arc::new(Reloading::new(files)?),
            server_name,
        })
    }

    /// The connector for the next connection (certificates reloaded if changed).
    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.config.current())
    }

    /// The name `host`'s certificate is checked against.
    pub fn server_name(&self, host: SocketAddr) -> ServerName<'static> {
        self.server_name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(host.ip().into()))
    }
}

/// The names of a certificate that rules match: the subject's common name
/// and the DNS subject alternative names.
#[derive(Debug, Default, PartialEq, Eq)]
struct CertificateNames {
    common_name: Option<String>,
    dns: Vec<String>,
}

impl CertificateNames {
    fn of(cert: &CertificateDer<'_>) -> Result<CertificateNames, String> {
        let parsed = webpki::EndEntityCert::try_from(cert)
            .map_err(|e| format!("unreadable client certificate: {e}"))?;
        Ok(CertificateNames {
            common_name: common_name(parsed.subject()),
            dns: parsed.valid_dns_names().map(str::to_string).collect(),
        })
    }

    fn matches(&self, name: &ClientName) -> bool {
        match name {
            ClientName::CommonName(cn) => self.common_name.as_deref() == Some(cn),
            ClientName::DnsName(dns) => self.dns.iter().any(|d| d.eq_ignore_ascii_case(dns)),
        }
    }
}

impl std::fmt::Display for CertificateNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.common_name {
            Some(cn) => write!(f, "CN={cn}")?,
            None => write!(f, "(no CN)")?,
        }
        for dns in &self.dns {
            write!(f, " DNS:{dns}")?;
        }
        Ok(())
    }
}

/// One DER element: its tag, its contents, and what follows it.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |l, &b| (l << 8) | b as usize);
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The common name (OID 2.5.4.3) of a DER subject, given as the contents of
/// its `Name` sequence: the last one if there are several.
fn common_name(mut name: &[u8]) -> Option<String> {
    const CN: &[u8] = &[0x55, 0x04, 0x03];
    let mut found = None;
    while !name.is_empty() {
        let (_, mut set, rest) = der_element(name)?;
        name = rest;
        while !set.is_empty() {
            let (_, attribute, rest) = der_element(set)?;
            set = rest;
            let (oid_tag, oid, value) = der_element(attribute)?;
            if oid_tag != 0x06 || oid != CN {
                continue;
            }
            let (tag, text, _) = der_element(value)?;
            // UTF8String, PrintableString, T61String, IA5String.
            if matches!(tag, 0x0c | 0x13 | 0x14 | 0x16) {
                found = std::str::from_utf8(text).ok().map(str::to_string);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_name_is_read_from_a_der_subject() {
        // SEQUENCE { SET { SEQUENCE { 2.5.4.10, "Bank" } }, SET { SEQUENCE { 2.5.4.3, "wallet-a" } } }
        let subject = [
            0x31, 0x0d, 0x30, 0x0b, 0x06, 0x03, 0x55, 0x04, 0x0a, 0x0c, 0x04, b'B', b'a', b'n',
            b'k', 0x31, 0x11, 0x30, 0x0f, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x08, b'w', b'a',
            b'l', b'l', b'e', b't', b'-', b'a',
        ];
        assert_eq!(common_name(&subject).as_deref(), Some("wallet-a"));
        assert_eq!(common_name(&subject[..15]), None, "no CN");
        assert_eq!(common_name(&subject[..20]), None, "truncated");
        assert_eq!(common_name(&[]), None);
    }

    #[test]
    fn a_subject_rule_is_a_common_name() {
        assert_eq!(
            ClientName::subject("CN=wallet-a"),
            Some(ClientName::CommonName("wallet-a".into()))
        );
        assert_eq!(ClientName::subject("O=x"), None);
        assert_eq!(ClientName::subject("CN="), None);
        assert_eq!(ClientName::subject("CN=a,O=b"), None);
    }

    #[test]
    fn names_match_rules() {
        let names = CertificateNames {
            common_name: Some("wallet-a".into()),
            dns: vec!["Wallet-A.example".into()],
        };
        assert!(names.matches(&ClientName::CommonName("wallet-a".into())));
        assert!(!names.matches(&ClientName::CommonName("wallet-b".into())));
        assert!(names.matches(&ClientName::DnsName("wallet-a.example".into())));
        assert!(!names.matches(&ClientName::DnsName("wallet-b.example".into())));
        assert_eq!(names.to_string(), "CN=wallet-a DNS:Wallet-A.example");
    }
}

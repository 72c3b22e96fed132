//! TLS to PostgreSQL: a rustls client configuration (the `ring` provider,
//! like the switch's other TLS) made from a connection string's
//! [`SslSettings`], behind tokio-postgres-rustls's connector (which also
//! gives SCRAM its channel binding).
//!
//! What the server's certificate must be follows libpq: nothing with
//! `prefer` or `require` alone (the session is encrypted, but the peer is
//! not authenticated); its chain to a CA of `sslrootcert` with `verify-ca`,
//! or `prefer`/`require` when `sslrootcert` is given; chain and host name
//! with `verify-full`. The host name is the connection's `host` (an address
//! in `hostaddr` is only where to connect). Files are read once, when the
//! store opens.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::conninfo::{SslMode, SslSettings};
use crate::tls::{certificates, key_error, private_key, provider, roots};

/// The connector for connections with `ssl`'s settings (never used with
/// `sslmode=disable`, but tokio-postgres wants one all the same).
pub fn connector(ssl: &SslSettings) -> Result<MakeRustlsConnect, String> {
    let provider = provider();
    let trust = match (&ssl.root_cert, ssl.checks_chain()) {
        (Some(file), true) => Some(Trust {
            roots: roots("sslrootcert", file).map_err(|e| format!("sslrootcert: {e}"))?,
            file: file.clone(),
        }),
        _ => None,
    };
    let verifier = Arc::new(ServerCheck {
        mode: ssl.mode,
        trust,
        provider: provider.clone(),
    });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match &ssl.client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                certificates("sslcert", cert).map_err(|e| format!("sslcert: {e}"))?,
                private_key("sslkey", key).map_err(|e| format!("sslkey: {e}"))?,
            )
            .map_err(|e| format!("sslkey: {}", key_error(e, cert, key)))?,
    };
    Ok(MakeRustlsConnect::new(config))
}

/// The CAs a server's certificate must chain to, and the file they came from.
struct Trust {
    roots: Arc<RootCertStore>,
    file: PathBuf,
}

/// Checks the server's certificate as much as the mode asks, and says why
/// one is refused in the terms of the connection string.
struct ServerCheck {
    mode: SslMode,
    /// `None`: any certificate (encryption only).
    trust: Option<Trust>,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for ServerCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerCheck")
            .field("mode", &self.mode)
            .field("sslrootcert", &self.trust.as_ref().map(|t| &t.file))
            .finish()
    }
}

/// Why a server's certificate was refused.
#[derive(Debug)]
struct Refused(String);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// The text of one cause of a failed connection: a certificate refused here
/// says why in the words of [`ServerCheck`] (rustls would show the reason
/// in its `Debug` form); any other cause as it displays.
pub fn cause_text(cause: &(dyn std::error::Error + 'static)) -> String {
    let tls = cause
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    if let Some(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(why)))) = tls {
        if let Some(refused) = why.downcast_ref::<Refused>() {
            return refused.0.clone();
        }
    }
    cause.to_string()
}

impl ServerCheck {
    fn refuse(&self, why: String) -> rustls::Error {
        let why = format!("sslmode={}: {why}", self.mode.name());
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(Refused(
            why,
        )))))
    }
}

impl ServerCertVerifier for ServerCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(trust) = &self.trust else {
            return Ok(ServerCertVerified::assertion());
        };
        let cert = ParsedCertificate::try_from(end_entity)
            .map_err(|e| self.refuse(format!("the server's certificate does not parse: {e}")))?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &trust.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )
        .map_err(|e| {
            let file = trust.file.display();
            self.refuse(match e {
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
                    format!("the server's certificate is not signed by a CA of sslrootcert {file}")
                }
                e => format!("the server's certificate is not trusted (sslrootcert {file}): {e}"),
            })
        })?;
        if self.mode == SslMode::VerifyFull {
            verify_server_name(&cert, server_name).map_err(|e| {
                let name = server_name.to_str();
                self.refuse(match e {
                    rustls::Error::InvalidCertificate(
                        CertificateError::NotValidForNameContext { presented, .. },
                    ) => format!(
                        "the server's certificate is not valid for host {name}: it names {}",
                        presented.join(", ")
                    ),
                    e => format!("the server's certificate is not valid for host {name}: {e}"),
                })
            })?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::super::conninfo::split;
    use super::*;

    #[test]
    fn a_file_that_does_not_load_is_named_with_its_setting() {
        let error = |conninfo: &str| connector(&split(conninfo).unwrap().1).err().unwrap();
        let e = error("host=h sslmode=verify-full sslrootcert=/nonexistent/ca.pem");
        assert!(
            e.starts_with("sslrootcert: cannot read /nonexistent/ca.pem"),
            "{e}"
        );
        let e = error("host=h sslmode=require sslcert=/nonexistent/c.pem sslkey=/k.pem");
        assert!(
            e.starts_with("sslcert: cannot read /nonexistent/c.pem"),
            "{e}"
        );
        // require alone needs no file at all.
        assert!(connector(&split("host=h sslmode=require").unwrap().1).is_ok());
    }
}

//! TLS on wallet listeners and bank links, over real TCP: certificates made
//! with rcgen for each test, a switch with two simulated banks in process.
//!
//! - a plain TCP client on a TLS listener gets no answer and is closed, and
//!   one that says nothing is closed after `frame_timeout_ms`;
//! - a wallet presenting a certificate of the client CA freezes; one from
//!   another CA, or none, is refused;
//! - a certificate mapped to institution A gets 63 when it sends F32 = B,
//!   00 as A; a certificate no `clients` entry names is refused;
//! - the switch signs on to a bank behind TLS (mutual) and freezes through
//!   it; a bank whose certificate it does not trust is never signed on, and
//!   the link backs off between attempts;
//! - replaced certificate files are used by the next connection;
//! - configuration errors name the key.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use common::ca::{Ca, Issued};
use iso8583::framing::FramingConfig;
use simulators::wallet::{code, WalletClient, WalletError};
use switchboard::clock::Clock;
use switchboard::config::Config;
use switchboard::dialect::InstitutionId;
use switchboard::tls::{ClientFiles, ClientName, ClientRule, ClientTls, ServerFiles, ServerTls};

/// Another wallet institution, which the test listeners also serve.
const OTHER_WALLET: &str = "01030000";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration trusting `ca`, presenting `identity` if given.
fn client_config(ca: &Path, identity: Option<&Issued>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    Arc::new(match identity {
        None => builder.with_no_client_auth(),
        Some(id) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(&id.cert)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_file(&id.key).unwrap(),
            )
            .unwrap(),
    })
}

/// A wallet over TLS to the switch (its certificate is for `localhost`),
/// sending as `institution`.
async fn tls_wallet(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    institution: &str,
) -> std::io::Result<WalletClient> {
    let tcp = TcpStream::connect(addr).await?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    Ok(
        WalletClient::over_stream(tls, FramingConfig::default(), institution)
            .with_timeout(Duration::from_secs(5)),
    )
}

fn institution(id: &str) -> InstitutionId {
    InstitutionId::from_field(32, id.as_bytes()).unwrap()
}

/// The listener's TLS: the switch's certificate from `server_ca`, client
/// certificates of `client_ca` required if given, mapped by `clients`.
fn listener_tls(
    server_ca: &Ca,
    client_ca: Option<&Ca>,
    clients: Option<Vec<ClientRule>>,
) -> ServerTls {
    let server = server_ca.issue("switch", &["localhost", "127.0.0.1"], true);
    ServerTls::new(
        ServerFiles {
            cert: server.cert,
            key: server.key,
            client_ca: client_ca.map(Ca::pem),
        },
        clients,
    )
    .unwrap()
}

/// Whether the switch answers a freeze on this wallet (any answer).
async fn answered(wallet: &WalletClient, h: &common::Harness) -> Result<String, WalletError> {
    let freeze = wallet.freeze(&h.world.cards_a[0], 1_000, h.clock.now());
    wallet.send(&freeze).await.map(|m| code(&m))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_client_on_a_tls_listener_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let tls = listener_tls(&ca, None, None);
    let h = common::start_configured(common::Backend::Embedded, |c| {
        c.wallets[0].tls = Some(tls);
        c.wallets[0].frame_timeout = Duration::from_millis(800);
    })
    .await;
    let addr = h.running.wallet_addrs[0];

    // A plain freeze: the handshake fails, nothing is answered, the
    // connection is closed.
    let wallet = WalletClient::connect(addr, FramingConfig::default(), common::WALLET_ID)
        .await
        .unwrap()
        .with_timeout(Duration::from_secs(5));
    let result = answered(&wallet, &h).await;
    assert!(
        matches!(result, Err(WalletError::Closed | WalletError::NotSent)),
        "closed without an answer: {result:?}"
    );

    // Raw: whatever comes back (a TLS alert at most) is no ISO 8583 answer,
    // and the connection ends.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain.write_all(b"0004ABCD").await.unwrap();
    let mut back = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut back)).await;
    assert!(read.is_ok(), "the switch closed the connection");
    assert!(
        !back.windows(4).any(|w| w == b"0810" || w == b"0110"),
        "no answer in {back:?}"
    );

    // Silent: closed once the handshake's time (frame_timeout_ms) is up.
    let started = std::time::Instant::now();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "closed: {read:?}");
    assert!(started.elapsed() >= Duration::from_millis(700));

    // The listener itself is fine: a TLS wallet freezes.
    let wallet = tls_wallet(addr, client_config(&ca.pem(), None), common::WALLET_ID)
        .await
        .unwrap();
    assert_eq!(answered(&wallet, &h).await.unwrap(), "00");
}

/// A switch whose listener requires certificates of `clients_ca`: wallet-a
/// may send as WALLET_ID, wallet-b as OTHER_WALLET, both through a listener
/// that serves both institutions.
async fn mutual_switch(dir: &Path) -> (common::Harness, Ca, Ca) {
    let server_ca = Ca::new(dir, "server-ca");
    let clients_ca = Ca::new(dir, "clients-ca");
    let rules = vec![
        ClientRule {
            name: ClientName::CommonName("wallet-a".into()),
            institutions: vec![institution(common::WALLET_ID)],
        },
        ClientRule {
            name: ClientName::DnsName("wallet-b.example".into()),
            institutions: vec![institution(OTHER_WALLET)],
        },
    ];
    let tls = listener_tls(&server_ca, Some(&clients_ca), Some(rules));
    let h = common::start_configured(common::Backend::Embedded, |c| {
        c.wallets[0].tls = Some(tls);
        c.wallets[0].institutions = vec![institution(common::WALLET_ID), institution(OTHER_WALLET)];
    })
    .await;
    (h, server_ca, clients_ca)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_of_the_client_ca_freezes_and_others_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (h, server_ca, clients_ca) = mutual_switch(dir.path()).await;
    let addr = h.running.wallet_addrs[0];

    let wallet_a = clients_ca.issue("wallet-a", &[], false);
    let wallet = tls_wallet(
        addr,
        client_config(&server_ca.pem(), Some(&wallet_a)),
        common::WALLET_ID,
    )
    .await
    .unwrap();
    assert_eq!(answered(&wallet, &h).await.unwrap(), "00");

    // The same name from another CA: the handshake fails on the switch's
    // side, the connection is closed without an answer.
    let rogue_ca = Ca::new(dir.path(), "rogue-ca");
    let forged = rogue_ca.issue("wallet-a", &[], false);
    let forged = client_config(&server_ca.pem(), Some(&forged));
    let refused = match tls_wallet(addr, forged, common::WALLET_ID).await {
        Err(_) => true,
        Ok(wallet) => answered(&wallet, &h).await.is_err(),
    };
    assert!(refused, "a certificate of another CA is refused");

    // No certificate at all.
    let anonymous = client_config(&server_ca.pem(), None);
    let refused = match tls_wallet(addr, anonymous, common::WALLET_ID).await {
        Err(_) => true,
        Ok(wallet) => answered(&wallet, &h).await.is_err(),
    };
    assert!(refused, "a client without a certificate is refused");

    // A good certificate that no `clients` entry names.
    let stranger = clients_ca.issue("wallet-c", &["wallet-c.example"], false);
    let stranger = client_config(&server_ca.pem(), Some(&stranger));
    let refused = match tls_wallet(addr, stranger, common::WALLET_ID).await {
        Err(_) => true,
        Ok(wallet) => answered(&wallet, &h).await.is_err(),
    };
    assert!(refused, "a certificate mapped to nothing is refused");

    // The first wallet's connection is still served.
    assert_eq!(answered(&wallet, &h).await.unwrap(), "00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_institution_a_cannot_send_as_b() {
    let dir = tempfile::tempdir().unwrap();
    let (h, server_ca, clients_ca) = mutual_switch(dir.path()).await;
    let addr = h.running.wallet_addrs[0];
    // wallet-a is matched by its subject CN, wallet-b by its DNS name.
    let wallet_a = clients_ca.issue("wallet-a", &[], false);
    let wallet_b = clients_ca.issue("b", &["wallet-b.example"], false);

    for (identity, own, other) in [
        (&wallet_a, common::WALLET_ID, OTHER_WALLET),
        (&wallet_b, OTHER_WALLET, common::WALLET_ID),
    ] {
        let config = client_config(&server_ca.pem(), Some(identity));
        let as_other = tls_wallet(addr, config.clone(), other).await.unwrap();
        assert_eq!(
            answered(&as_other, &h).await.unwrap(),
            "63",
            "{own}'s certificate sending F32 = {other}"
        );
        let as_own = tls_wallet(addr, config, own).await.unwrap();
        assert_eq!(
            answered(&as_own, &h).await.unwrap(),
            "00",
            "{own}'s certificate sending as itself"
        );
    }
}

/// A TLS-terminating proxy in front of a bank.
struct Proxy {
    addr: SocketAddr,
    /// TCP connections accepted.
    accepted: Arc<AtomicUsize>,
    /// TLS handshakes completed.
    handshakes: Arc<AtomicUsize>,
}

/// A [`Proxy`] in front of the address `target` will hold, requiring client
/// certificates of `client_ca`.
async fn tls_proxy(
    server: &Issued,
    client_ca: &Path,
    target: Arc<std::sync::OnceLock<SocketAddr>>,
) -> Proxy {
    let config = ServerTls::new(
        ServerFiles {
            cert: server.cert.clone(),
            key: server.key.clone(),
            client_ca: Some(client_ca.to_path_buf()),
        },
        None,
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = Proxy {
        addr: listener.local_addr().unwrap(),
        accepted: Arc::new(AtomicUsize::new(0)),
        handshakes: Arc::new(AtomicUsize::new(0)),
    };
    let (accepted, handshakes) = (proxy.accepted.clone(), proxy.handshakes.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            accepted.fetch_add(1, Ordering::SeqCst);
            let acceptor = config.acceptor();
            let handshakes = handshakes.clone();
            let target = target.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                handshakes.fetch_add(1, Ordering::SeqCst);
                let Some(target) = target.get() else {
                    return;
                };
                let Ok(mut bank) = TcpStream::connect(target).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut bank).await;
            });
        }
    });
    proxy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_switch_reaches_a_bank_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let bank_ca = Ca::new(dir.path(), "bank-ca");
    let switch_ca = Ca::new(dir.path(), "switch-ca");
    let bank_cert = bank_ca.issue("bank-a", &["bank-a.example"], true);
    let switch_cert = switch_ca.issue("switch", &[], false);
    let link = ClientTls::new(
        ClientFiles {
            ca: bank_ca.pem(),
            cert: Some(switch_cert.cert.clone()),
            key: Some(switch_cert.key.clone()),
        },
        Some("bank-a.example"),
    )
    .unwrap();
    let target = Arc::new(std::sync::OnceLock::new());
    let proxy = tls_proxy(&bank_cert, &switch_ca.pem(), target.clone()).await;
    let handshakes = proxy.handshakes.clone();
    // Bank A is reached only through the proxy, over mutual TLS; the
    // harness waits until both banks are signed on.
    let h = common::start_configured(common::Backend::Embedded, |c| {
        target.set(c.banks[0].hosts[0]).unwrap();
        c.banks[0].hosts = vec![proxy.addr];
        c.banks[0].tls = Some(link);
    })
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while h.running.links[0].ready_connections() < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(h.running.links[0].ready_connections(), 2);
    assert_eq!(
        handshakes.load(Ordering::SeqCst),
        2,
        "both connections of the link are TLS"
    );
    let wallet = WalletClient::connect(
        h.running.wallet_addrs[0],
        FramingConfig::default(),
        common::WALLET_ID,
    )
    .await
    .unwrap();
    assert_eq!(answered(&wallet, &h).await.unwrap(), "00");
    assert_eq!(
        h.bank_a.snapshot().holds.len(),
        1,
        "bank A holds the freeze it approved over TLS"
    );

    // A bank configuration trusting another CA, or naming another host,
    // does not complete the handshake.
    for (ca, name) in [(&switch_ca, "bank-a.example"), (&bank_ca, "bank-b.example")] {
        let wrong = ClientTls::new(
            ClientFiles {
                ca: ca.pem(),
                cert: Some(switch_cert.cert.clone()),
                key: Some(switch_cert.key.clone()),
            },
            Some(name),
        )
        .unwrap();
        let tcp = TcpStream::connect(proxy.addr).await.unwrap();
        let result = wrong
            .connector()
            .connect(wrong.server_name(proxy.addr), tcp)
            .await;
        assert!(result.is_err(), "{name} under {}: refused", ca.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bank_whose_certificate_is_not_trusted_is_never_signed_on_and_retried_with_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let bank_ca = Ca::new(dir.path(), "bank-ca");
    let other_ca = Ca::new(dir.path(), "other-ca");
    let switch_ca = Ca::new(dir.path(), "switch-ca");
    let bank_cert = bank_ca.issue("bank-a", &["bank-a.example"], true);
    let switch_cert = switch_ca.issue("switch", &[], false);
    let bank = simulators::bank_server::spawn_bank(common::books_a(), FramingConfig::default())
        .await
        .unwrap();
    let proxy = tls_proxy(
        &bank_cert,
        &switch_ca.pem(),
        Arc::new(std::sync::OnceLock::from(bank.addr)),
    )
    .await;
    let mut link =
        common::bank_config(common::BANK_A, "622202", proxy.addr, Duration::from_secs(5));
    link.tls = Some(
        ClientTls::new(
            ClientFiles {
                ca: other_ca.pem(),
                cert: Some(switch_cert.cert.clone()),
                key: Some(switch_cert.key.clone()),
            },
            Some("bank-a.example"),
        )
        .unwrap(),
    );
    let config = common::config(dir.path(), vec![link]);
    let store = switchboard::service::open_store(&config.store)
        .await
        .unwrap();
    let clock = Arc::new(switchboard::clock::ShiftedClock::new());
    let running = switchboard::service::start(config, store, clock)
        .await
        .unwrap();
    assert!(
        !running.wait_banks_ready(Duration::from_secs(2)).await,
        "never signed on"
    );
    let (accepted, handshakes) = (
        proxy.accepted.load(Ordering::SeqCst),
        proxy.handshakes.load(Ordering::SeqCst),
    );
    assert_eq!(handshakes, 0);
    // Two connections, each backing off from 100 ms doubling: about five
    // attempts each in two seconds, not one every 100 ms.
    assert!((2..=14).contains(&accepted), "{accepted} attempts in 2 s");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_certificate_files_serve_the_next_connection() {
    let dir = tempfile::tempdir().unwrap();
    let old_ca = Ca::new(dir.path(), "old-ca");
    let new_ca = Ca::new(dir.path(), "new-ca");
    let old = old_ca.issue("switch", &["localhost"], true);
    let tls = ServerTls::new(
        ServerFiles {
            cert: old.cert.clone(),
            key: old.key.clone(),
            client_ca: None,
        },
        None,
    )
    .unwrap();
    let h = common::start_configured(common::Backend::Embedded, |c| {
        c.wallets[0].tls = Some(tls);
    })
    .await;
    let addr = h.running.wallet_addrs[0];
    let before = tls_wallet(addr, client_config(&old_ca.pem(), None), common::WALLET_ID)
        .await
        .unwrap();
    assert_eq!(answered(&before, &h).await.unwrap(), "00");

    // The files are replaced in place, as a renewal would.
    let new = new_ca.issue("switch", &["localhost"], true);
    std::fs::copy(&new.cert, &old.cert).unwrap();
    std::fs::copy(&new.key, &old.key).unwrap();

    let after = tls_wallet(addr, client_config(&new_ca.pem(), None), common::WALLET_ID)
        .await
        .expect("the new certificate is served");
    assert_eq!(answered(&after, &h).await.unwrap(), "00");
    assert!(
        tls_wallet(addr, client_config(&old_ca.pem(), None), common::WALLET_ID)
            .await
            .is_err(),
        "the old certificate is not served any more"
    );
    // The connection opened before keeps its session.
    assert_eq!(answered(&before, &h).await.unwrap(), "00");
}

#[test]
fn configuration_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let ca = Ca::new(base, "ca");
    let server = ca.issue("switch", &["localhost"], true);
    let other = ca.issue("other", &["localhost"], true);
    std::fs::write(base.join("garbage.pem"), "not PEM at all\n").unwrap();
    let config = |wallet: &str, bank: &str| {
        format!(
            r#"
[switch]
institution_id = "00010000"
[[wallets]]
listen = "127.0.0.1:0"
institutions = ["01020000"]
{wallet}
[[banks]]
institution_id = "48020000"
bins = ["622202"]
hosts = ["127.0.0.1:7000"]
{bank}
"#
        )
    };
    let name = |p: &Path| p.file_name().unwrap().to_str().unwrap().to_string();
    let (cert, key, other_key, ca_pem) = (
        name(&server.cert),
        name(&server.key),
        name(&other.key),
        name(&ca.pem()),
    );
    let good = config(
        &format!(
            r#"tls = {{ cert = "{cert}", key = "{key}", client_ca = "{ca_pem}" }}
clients = [{{ subject = "CN=wallet-a", institutions = ["01020000"] }}, {{ san = "wallet-b.example", institutions = ["01020000"] }}]"#
        ),
        &format!(
            r#"tls = {{ ca = "{ca_pem}", server_name = "bank-a.example", cert = "{cert}", key = "{key}" }}"#
        ),
    );
    let loaded =
        Config::from_toml(&good, base).expect("relative paths from the config's directory");
    assert!(loaded.wallets[0].tls.is_some() && loaded.banks[0].tls.is_some());

    // `$cert`, `$key`, `$other_key` and `$ca` stand for the files above.
    let cases = [
        (r#"tls = { cert = "missing.pem", key = "$key" }"#, "", "wallets[0].tls.cert", "cannot read"),
        (r#"tls = { cert = "$cert", key = "garbage.pem" }"#, "", "wallets[0].tls.key", "no usable PRIVATE KEY"),
        (r#"tls = { cert = "$cert", key = "$other_key" }"#, "", "wallets[0].tls.key", "is not the private key of the certificate"),
        (r#"tls = { cert = "$cert", key = "$key", client_ca = "garbage.pem" }"#, "", "wallets[0].tls.client_ca", "no CERTIFICATE"),
        (
            "tls = { cert = \"$cert\", key = \"$key\" }\nclients = [{ subject = \"CN=wallet-a\", institutions = [\"01020000\"] }]",
            "",
            "wallets[0].clients",
            "client_ca",
        ),
        (
            "tls = { cert = \"$cert\", key = \"$key\", client_ca = \"$ca\" }\nclients = [{ subject = \"O=wallet-a\", institutions = [\"01020000\"] }]",
            "",
            "wallets[0].clients[0].subject",
            "CN=",
        ),
        (
            "tls = { cert = \"$cert\", key = \"$key\", client_ca = \"$ca\" }\nclients = [{ san = \"wallet-a.example\", institutions = [\"01030000\"] }]",
            "",
            "wallets[0].clients[0].institutions",
            "listener's",
        ),
        ("", r#"tls = { ca = "missing.pem" }"#, "banks[0].tls.ca", "cannot read"),
        ("", r#"tls = { ca = "$ca", cert = "$cert" }"#, "banks[0].tls.key", "without its `key`"),
        ("", r#"tls = { ca = "$ca", server_name = "not a name!" }"#, "banks[0].tls.server_name", "not a DNS name"),
    ];
    let fill = |text: &str| {
        text.replace("$cert", &cert)
            .replace("$other_key", &other_key)
            .replace("$key", &key)
            .replace("$ca", &ca_pem)
    };
    for (wallet, bank, key, why) in cases {
        let text = config(&fill(wallet), &fill(bank));
        let e = Config::from_toml(&text, base).expect_err(key);
        assert_eq!(e.key, key, "{e}");
        assert!(e.reason.contains(why), "{key}: {e}");
    }
}

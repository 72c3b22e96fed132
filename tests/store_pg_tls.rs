//! The PostgreSQL store over TLS, against a private cluster with `ssl = on`
//! and a certificate made with rcgen for the test (for 127.0.0.1 and
//! `db.test`), whose pg_hba.conf accepts TCP connections only with TLS:
//!
//! - a switch whose store URL says `sslmode=verify-full` and the right CA
//!   freezes and receives through it, and the server says each of the
//!   store's sessions is encrypted (`pg_stat_ssl`); `switchboard migrate`
//!   connects the same way;
//! - `verify-full` is refused, saying why, with another CA, and with a host
//!   name the certificate does not carry (`verify-ca` takes that one);
//! - `require` works without a CA; `prefer` and no `sslmode` at all use TLS;
//! - `disable` is refused by the server;
//! - where pg_hba.conf says `cert`, `sslcert` and `sslkey` get in, and a
//!   connection without them does not.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::ca::{Ca, Issued};
use common::pg::{self, ClusterTls, Server};
use common::{assert_passed, start_configured, Backend};
use switchboard::config::StoreConfig;
use switchboard::store::postgres;

/// The database where only a client certificate of the clients' CA gets in.
const CERT_ONLY_DB: &str = "cert_only";

/// The test process's TLS cluster, the CA that signed its certificate, a
/// CA that did not, and a client certificate for user `postgres`.
struct TlsCluster {
    server: Server,
    ca: PathBuf,
    other_ca: PathBuf,
    client: Issued,
    _dir: tempfile::TempDir,
}

fn cluster() -> &'static TlsCluster {
    static CLUSTER: OnceLock<TlsCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new(dir.path(), "db-ca");
        let other = Ca::new(dir.path(), "other-ca");
        let clients = Ca::new(dir.path(), "clients-ca");
        let issued = ca.issue("db", &["127.0.0.1", "db.test"], true);
        let server = Server::private_tls(&ClusterTls {
            cert: issued.cert,
            key: issued.key,
            hostssl_only: true,
            client_ca: Some(clients.pem()),
            hba_first: vec![format!("hostssl {CERT_ONLY_DB} all 127.0.0.1/32 cert")],
        })
        .unwrap_or_else(|e| panic!("PostgreSQL with TLS for the tests: {e}"));
        TlsCluster {
            server,
            ca: ca.pem(),
            other_ca: other.pem(),
            client: clients.issue("postgres", &[], false),
            _dir: dir,
        }
    })
}

/// A new database; its URL (`postgres://postgres@127.0.0.1:PORT/DB`, no
/// query) and its name.
async fn database() -> (String, String) {
    let url = cluster().server.create_database().await;
    let name = url.rsplit('/').next().unwrap().to_string();
    (url, name)
}

fn query_path(path: &Path) -> String {
    path.display().to_string().replace('/', "%2F")
}

/// `migrate` through `url`: the error's text when it fails.
async fn migrate(url: &str) -> Result<(), String> {
    postgres::migrate(url)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// How many sessions of `application_name` on database `db` there are, and
/// how many of them the server says are encrypted.
async fn sessions(db: &str, application: &str) -> (i64, i64) {
    let admin = pg::connect(&cluster().server.socket_url("postgres").unwrap()).await;
    let row = admin
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE s.ssl) \
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.datname = $1 AND a.application_name = $2",
            &[&db, &application],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_on_a_verify_full_store_freezes_and_receives_over_tls() {
    let (url, db) = database().await;
    let url = format!(
        "{url}?sslmode=verify-full&sslrootcert={}",
        query_path(&cluster().ca)
    );
    let h = start_configured(Backend::Embedded, |config| {
        config.store = StoreConfig::Postgres(url.clone());
    })
    .await;
    assert_passed(&simulators::scenarios::one_to_one(&h.world).await);

    // The server's view of the store's own connections, while it runs.
    let (total, encrypted) = sessions(&db, "switchboard").await;
    assert!(total > 0, "the store holds no connection to {db}");
    assert_eq!(encrypted, total, "every session of the store is encrypted");
    h.running.shutdown().await;

    let local = pg::connect(&cluster().server.socket_url(&db).unwrap()).await;
    let freezes: i64 = local
        .query_one("SELECT count(*) FROM freezes", &[])
        .await
        .unwrap()
        .get(0);
    assert!(freezes > 0, "the scenario's freeze is in the database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_migrate_command_connects_with_verify_full() {
    let (url, _) = database().await;
    let url = format!(
        "{url}?sslmode=verify-full&sslrootcert={}",
        query_path(&cluster().ca)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["migrate", "--store", &url])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("applied 1:"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_with_another_ca_is_refused_saying_so() {
    let (url, _) = database().await;
    let e = migrate(&format!(
        "{url}?sslmode=verify-full&sslrootcert={}",
        query_path(&cluster().other_ca)
    ))
    .await
    .unwrap_err();
    assert!(
        e.contains(
            "error performing TLS handshake: sslmode=verify-full: the server's certificate is \
             not signed by a CA of sslrootcert "
        ) && e.ends_with("other-ca.pem"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_with_a_host_name_the_certificate_does_not_carry_is_refused() {
    let (_, db) = database().await;
    let port = cluster().server.cluster.as_ref().unwrap().port;
    let ca = cluster().ca.display().to_string();
    // The key=value form: `host` is the name checked, `hostaddr` where to connect.
    let conninfo = |mode: &str, host: &str| {
        format!(
            "host={host} hostaddr=127.0.0.1 port={port} user=postgres dbname={db} \
             sslmode={mode} sslrootcert='{ca}'"
        )
    };
    let e = migrate(&conninfo("verify-full", "wrong.test"))
        .await
        .unwrap_err();
    assert!(
        e.contains(
            "error performing TLS handshake: sslmode=verify-full: the server's certificate is \
             not valid for host wrong.test: it names "
        ) && e.contains("127.0.0.1")
            && e.contains("db.test"),
        "{e}"
    );
    // The name it does carry, and verify-ca, which checks only the chain.
    migrate(&conninfo("verify-full", "db.test")).await.unwrap();
    migrate(&conninfo("verify-ca", "wrong.test")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_encrypts_without_a_ca_and_prefer_is_the_default() {
    for query in ["?sslmode=require", "?sslmode=prefer", ""] {
        let (url, db) = database().await;
        let url = format!("{url}{query}");
        let store = postgres::PostgresStore::connect(&url).await.unwrap();
        let (total, encrypted) = sessions(&db, "switchboard").await;
        assert!(total > 0, "{query}");
        assert_eq!(encrypted, total, "{query}");
        store.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_connection_to_a_tls_only_server_is_refused() {
    let (url, _) = database().await;
    let e = migrate(&format!("{url}?sslmode=disable"))
        .await
        .unwrap_err();
    assert!(
        e.contains("no pg_hba.conf entry") && e.contains("no encryption"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_logs_in_where_the_server_asks_for_one() {
    let server = &cluster().server;
    pg::execute(
        &server.socket_url("postgres").unwrap(),
        &format!("CREATE DATABASE {CERT_ONLY_DB}"),
    )
    .await;
    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        server.url(CERT_ONLY_DB),
        query_path(&cluster().ca)
    );
    let e = migrate(&url).await.unwrap_err();
    assert!(e.contains("requires a valid client certificate"), "{e}");
    let client = &cluster().client;
    migrate(&format!(
        "{url}&sslcert={}&sslkey={}",
        query_path(&client.cert),
        query_path(&client.key)
    ))
    .await
    .unwrap();
}

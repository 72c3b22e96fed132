//! A throwaway PostgreSQL for the tests, one database per test.
//!
//! If `SWITCHBOARD_TEST_PG` names a database URL
//! (`postgres://user:pass@host:port/db`, the user allowed to create
//! databases), each test gets a new database on that server. Otherwise the
//! first test that asks starts a private cluster: `initdb` into a temporary
//! directory and `pg_ctl start` on a free port of 127.0.0.1 (fsync on), its
//! socket in that directory. The server binaries are looked for in
//! `/usr/lib/postgresql/*/bin` (the newest), then on `PATH`; when there are
//! none the test fails and says how to install them (`.ci/run` does). As
//! root, the directory is handed to the `postgres` user and the binaries run
//! through `runuser -u postgres --`, since the server refuses to run as root.
//! A watchdog process stops the cluster and removes its directory once the
//! test process has exited, however it exits.
//!
//! [`Server::private_tls`] starts a cluster of its own with TLS on (the
//! certificate and key a test made), optionally refusing TCP connections
//! without TLS; the tests' own plain connections reach it by its socket.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// The environment variable naming a server to use instead of a private cluster.
pub const ENV_URL: &str = "SWITCHBOARD_TEST_PG";

/// A running server the tests may create databases on.
pub struct Server {
    /// Connection string of the maintenance database (`postgres`).
    admin_url: String,
    /// Builds the connection string of database `name`.
    url_of: Box<dyn Fn(&str) -> String + Send + Sync>,
    /// Set for a private cluster.
    pub cluster: Option<Cluster>,
}

/// A private cluster started by [`Cluster::start`].
pub struct Cluster {
    pub dir: PathBuf,
    pub data: PathBuf,
    pub port: u16,
    pub bin: PathBuf,
    /// Whether the binaries run as `postgres` through `runuser`.
    pub as_postgres: bool,
    /// Server settings beyond the common ones (`-c name=value ...`).
    settings: String,
}

/// TLS for a private cluster.
pub struct ClusterTls {
    /// The server's certificate chain and key, PEM.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Whether TCP connections without TLS are refused (pg_hba.conf has
    /// only `hostssl` lines; the socket stays open to `local`).
    pub hostssl_only: bool,
    /// The CA of the client certificates the server accepts (`ssl_ca_file`).
    pub client_ca: Option<PathBuf>,
    /// pg_hba.conf lines put before the others (`hostssl_only` only), such
    /// as `hostssl DB all 127.0.0.1/32 cert`.
    pub hba_first: Vec<String>,
}

static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// The server of this test process, started on first use; fails the test
/// with the reason when there can be none.
pub fn server() -> &'static Server {
    match SERVER.get_or_init(Server::start) {
        Ok(server) => server,
        Err(why) => panic!("PostgreSQL for the tests: {why}"),
    }
}

/// A new, empty database; returns its connection string.
pub async fn database() -> String {
    server().create_database().await
}

impl Server {
    fn start() -> Result<Server, String> {
        if let Ok(url) = std::env::var(ENV_URL) {
            return Server::external(&url);
        }
        let cluster = Cluster::start()?;
        let port = cluster.port;
        Ok(Server {
            admin_url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            url_of: Box::new(move |db| format!("postgres://postgres@127.0.0.1:{port}/{db}")),
            cluster: Some(cluster),
        })
    }

    /// A private cluster of the caller's own, with TLS on as `tls` says:
    /// databases are made through its socket, and their URLs are
    /// `postgres://postgres@127.0.0.1:PORT/DB` for the caller to add its
    /// `sslmode` to.
    pub fn private_tls(tls: &ClusterTls) -> Result<Server, String> {
        let cluster = Cluster::start_with(Some(tls))?;
        let (port, socket_dir) = (cluster.port, cluster.dir.display().to_string());
        Ok(Server {
            admin_url: format!("host={socket_dir} port={port} user=postgres dbname=postgres"),
            url_of: Box::new(move |db| format!("postgres://postgres@127.0.0.1:{port}/{db}")),
            cluster: Some(cluster),
        })
    }

    /// The plain connection string of database `name` through the socket
    /// of a private cluster.
    pub fn socket_url(&self, name: &str) -> Option<String> {
        let cluster = self.cluster.as_ref()?;
        Some(format!(
            "host={} port={} user=postgres dbname={name}",
            cluster.dir.display(),
            cluster.port
        ))
    }

    fn external(url: &str) -> Result<Server, String> {
        let (scheme, rest) = url
            .split_once("://")
            .filter(|(s, _)| *s == "postgres" || *s == "postgresql")
            .ok_or_else(|| format!("{ENV_URL} must be a postgres:// URL, not {url:?}"))?;
        let (before_query, query) = match rest.split_once('?') {
            Some((b, q)) => (b.to_string(), format!("?{q}")),
            None => (rest.to_string(), String::new()),
        };
        let authority = before_query
            .split_once('/')
            .map_or(before_query.as_str(), |(a, _)| a)
            .to_string();
        let (scheme, authority_db, query_db) =
            (scheme.to_string(), authority.clone(), query.clone());
        Ok(Server {
            admin_url: url.to_string(),
            url_of: Box::new(move |db| format!("{scheme}://{authority_db}/{db}{query_db}")),
            cluster: None,
        })
    }

    /// The connection string of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        (self.url_of)(name)
    }

    pub async fn create_database(&self) -> String {
        let name = format!(
            "sb_{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::SeqCst)
        );
        let client = connect(&self.admin_url).await;
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {}", describe(&e)));
        self.url(&name)
    }
}

/// A plain client for the test's own SQL; its connection runs on a task.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {}", describe(&e)));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// Runs SQL (several statements allowed) on the database at `url`.
pub async fn execute(url: &str, sql: &str) {
    connect(url)
        .await
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)));
}

pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{}: {}", d.severity(), d.message()),
        None => e.to_string(),
    }
}

/// Where the server binaries are: `/usr/lib/postgresql/<newest>/bin`, or the
/// directory of `pg_ctl` on `PATH`.
pub fn find_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_ctl").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .find(|dir| dir.join("pg_ctl").exists() && dir.join("initdb").exists())
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Cluster {
    /// `initdb` and `pg_ctl start` in a new temporary directory.
    pub fn start() -> Result<Cluster, String> {
        Cluster::start_with(None)
    }

    /// Like [`Cluster::start`], with TLS on as `tls` says.
    pub fn start_with(tls: Option<&ClusterTls>) -> Result<Cluster, String> {
        let bin = find_bin().ok_or_else(|| {
            format!(
                "no PostgreSQL server binaries (initdb, pg_ctl) in /usr/lib/postgresql/*/bin or \
                 on PATH. Install them (`apt-get install -y postgresql`, as .ci/run does) or set \
                 {ENV_URL} to a postgres:// URL of a server the tests may create databases on"
            )
        })?;
        let as_postgres = is_root();
        if as_postgres
            && !Command::new("id")
                .arg("postgres")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        {
            return Err(
                "running as root, and there is no `postgres` user to run the server as \
                        (the Debian package postgresql creates it)"
                    .into(),
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("switchboard-pg-")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?
            .keep();
        let data = dir.join("data");
        let settings = match tls {
            Some(tls) => tls_settings(&dir, tls)?,
            None => String::new(),
        };
        let mut cluster = Cluster {
            dir,
            data,
            port: 0,
            bin,
            as_postgres,
            settings,
        };
        if as_postgres {
            run(Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(&cluster.dir))?;
        }
        let mut initdb = cluster.command("initdb");
        run(initdb.arg("-D").arg(&cluster.data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]))?;
        cluster.watchdog();
        let mut last = String::new();
        for _ in 0..5 {
            cluster.port = free_port();
            match cluster.pg_ctl_start() {
                Ok(()) => return Ok(cluster),
                Err(e) => last = e,
            }
        }
        Err(format!("pg_ctl start failed: {last}"))
    }

    /// A server binary, run as `postgres` when this process is root.
    pub fn command(&self, name: &str) -> Command {
        let program = self.bin.join(name);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    /// A small WAL (`max_wal_size=64MB`): each test's `CREATE DATABASE`
    /// copies the template through the WAL, about 8 MB a database, and a
    /// test binary makes dozens; with the default 1 GB the WAL alone took
    /// hundreds of megabytes of a CI machine's disk.
    fn pg_ctl_start(&self) -> Result<(), String> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=200 \
             -c shared_buffers=128MB -c max_wal_size=64MB -c min_wal_size=32MB {}",
            self.port,
            self.dir.display(),
            self.settings
        );
        run(self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .args(["-w", "-t", "60", "-o", &options, "start"]))
    }

    /// Stops the server (fast shutdown: sessions are disconnected).
    pub fn stop(&self) -> Result<(), String> {
        run(self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-w", "-m", "fast", "stop"]))
    }

    /// Starts it again on the same port.
    pub fn restart(&self) -> Result<(), String> {
        self.pg_ctl_start()
    }

    /// A process that outlives this one just long enough to stop the cluster
    /// and remove its directory.
    fn watchdog(&self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let stop = if self.as_postgres {
            format!(
                "runuser -u postgres -- {} -D {} -m immediate stop",
                pg_ctl.display(),
                self.data.display()
            )
        } else {
            format!(
                "{} -D {} -m immediate stop",
                pg_ctl.display(),
                self.data.display()
            )
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop} >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            dir = self.dir.display()
        );
        let mut command = if Path::new("/usr/bin/setsid").exists() {
            let mut c = Command::new("/usr/bin/setsid");
            c.args(["sh", "-c", &script]);
            c
        } else {
            let mut c = Command::new("sh");
            c.args(["-c", &script]);
            c
        };
        let _ = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }
}

/// Puts the certificate and key (mode 0600, as the server demands; the
/// directory is handed to the server's user after) and pg_hba.conf into
/// `dir`; returns the settings that use them.
fn tls_settings(dir: &Path, tls: &ClusterTls) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    std::fs::copy(&tls.cert, &cert).map_err(|e| format!("{}: {e}", tls.cert.display()))?;
    std::fs::copy(&tls.key, &key).map_err(|e| format!("{}: {e}", tls.key.display()))?;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("{}: {e}", key.display()))?;
    let mut settings = format!(
        "-c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
        cert.display(),
        key.display()
    );
    if let Some(client_ca) = &tls.client_ca {
        let copy = dir.join("client-ca.pem");
        std::fs::copy(client_ca, &copy).map_err(|e| format!("{}: {e}", client_ca.display()))?;
        settings.push_str(&format!(" -c ssl_ca_file={}", copy.display()));
    }
    if tls.hostssl_only {
        let hba = dir.join("pg_hba.conf");
        let mut lines = tls.hba_first.clone();
        lines.push("local all all trust".into());
        lines.push("hostssl all all 127.0.0.1/32 trust".into());
        std::fs::write(&hba, lines.join("\n") + "\n")
            .map_err(|e| format!("{}: {e}", hba.display()))?;
        settings.push_str(&format!(" -c hba_file={}", hba.display()));
    }
    Ok(settings)
}

fn run(command: &mut Command) -> Result<(), String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{command:?}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?} exited with {}: {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

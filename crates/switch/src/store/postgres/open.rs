//! Opening the store: the connection settings and pool, and the store's own
//! calls (connect, flush, close, stats) with the plumbing its
//! trait methods share (`write`, `read`, the freeze hints).

use super::*;

// ---------------------------------------------------------------------------
// Opening

/// Connection settings from a URL (`postgres://user:pass@host:port/db`) or a
/// key=value string, with this store's defaults where the URL says nothing,
/// and the TLS connector its `sslmode`, `sslrootcert`, `sslcert` and
/// `sslkey` ask for (see [`conninfo`](super::conninfo)).
pub(super) fn pg_config(
    url: &str,
    options: &PostgresOptions,
) -> StoreResult<(tokio_postgres::Config, MakeRustlsConnect)> {
    let (rest, ssl) = conninfo::split(url).map_err(unavailable)?;
    let mut config = tokio_postgres::Config::from_str(&rest)
        .map_err(|e| unavailable(format!("bad PostgreSQL URL: {}", describe(&e))))?;
    if config.get_application_name().is_none() {
        config.application_name("switchboard");
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(options.timeout);
    }
    config.ssl_mode(tokio_ssl_mode(&config, ssl.mode));
    let tls = tls::connector(&ssl).map_err(unavailable)?;
    Ok((config, tls))
}

/// What tokio-postgres is told: it knows no `verify-*` (the connector checks
/// the certificate), and, as libpq, no TLS is tried over Unix sockets, which
/// PostgreSQL serves only in plain.
fn tokio_ssl_mode(
    config: &tokio_postgres::Config,
    mode: SslMode,
) -> tokio_postgres::config::SslMode {
    use tokio_postgres::config::{Host, SslMode as Tokio};
    let only_sockets = !config.get_hosts().is_empty()
        && config
            .get_hosts()
            .iter()
            .all(|h| !matches!(h, Host::Tcp(_)));
    match mode {
        _ if only_sockets => Tokio::Disable,
        SslMode::Disable => Tokio::Disable,
        SslMode::Prefer => Tokio::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Tokio::Require,
    }
}

pub(super) fn pool(
    (config, tls): (tokio_postgres::Config, MakeRustlsConnect),
    options: &PostgresOptions,
) -> StoreResult<Pool> {
    let manager = Manager::from_config(
        config,
        tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .post_create(Hook::async_fn(|client, _| {
            Box::pin(async move {
                // Every statement here looks rows up by key: one generic plan,
                // made once per connection, instead of planning each execution.
                // A database without this setting plans as it likes.
                let _ = client
                    .batch_execute("SET plan_cache_mode = force_generic_plan")
                    .await;
                Ok(())
            })
        }))
        .max_size(options.pool_size.max(options.lanes + 2))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(options.timeout))
        .create_timeout(Some(options.timeout))
        .recycle_timeout(Some(options.timeout))
        .build()
        .map_err(|e| unavailable(format!("cannot build the connection pool: {e}")))
}

impl PostgresStore {
    /// Connects with default options; see [`PostgresStore::connect_with`].
    pub async fn connect(url: &str) -> StoreResult<PostgresStore> {
        PostgresStore::connect_with(url, PostgresOptions::default()).await
    }

    /// Connects to the database at `url`, migrates its schema to this build's,
    /// and starts the write lanes and the journal task. Must run inside a tokio
    /// runtime, which the store's tasks live on.
    pub async fn connect_with(url: &str, options: PostgresOptions) -> StoreResult<PostgresStore> {
        let options = PostgresOptions {
            lanes: options.lanes.max(1),
            max_batch: options.max_batch.max(1),
            journal_batch: options.journal_batch.max(1),
            journal_capacity: options.journal_capacity.max(1),
            ..options
        };
        let pool = pool(pg_config(url, &options)?, &options)?;
        {
            let mut client = pool.get().await.map_err(pool_error)?;
            let client: &mut tokio_postgres::Client = &mut client;
            migrate_client(client).await?;
        }
        let inner = Arc::new(Inner {
            pool,
            options,
            counters: Counters::default(),
            journal: Mutex::new(VecDeque::new()),
            journal_wake: Notify::new(),
            journal_backlog: JournalBacklog::new(options.journal_capacity),
            journal_accepted: AtomicU64::new(0),
            journal_done: watch::channel(0).0,
            journal_failing: std::sync::atomic::AtomicBool::new(false),
            journal_copy: std::sync::atomic::AtomicBool::new(true),
        });
        let stop = CancellationToken::new();
        let mut lanes = Vec::with_capacity(options.lanes);
        for n in 0..options.lanes {
            let (tx, rx) = mpsc::channel(options.max_batch * 16);
            lanes.push(tx);
            tokio::spawn(lane(inner.clone(), rx, n));
        }
        tokio::spawn(journal_writer(inner.clone(), stop.clone()));
        let (lookups, lookup_rx) = mpsc::channel(options.max_batch * 16);
        tokio::spawn(answer_reader(inner.clone(), lookup_rx));
        Ok(PostgresStore {
            inner,
            lanes,
            lookups,
            hints: Mutex::new(HashMap::new()),
            spec: Arc::new(Spec::switchboard()),
            stop,
        })
    }

    pub fn stats(&self) -> PgStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        PgStats {
            commands: get(&c.commands),
            statements: get(&c.statements),
            batches: get(&c.batches),
            round_trips: get(&c.round_trips),
            commits: get(&c.commits),
            conflicts: get(&c.conflicts),
            reruns: get(&c.reruns),
            splits: get(&c.splits),
            journal_written: get(&c.journal_written),
        }
    }

    /// Waits until every journal entry given so far is written,
    /// at most the store's timeout.
    pub async fn flush(&self) -> StoreResult<()> {
        let target = self.inner.journal_accepted.load(Ordering::SeqCst);
        self.inner.journal_wake.notify_one();
        let mut done = self.inner.journal_done.subscribe();
        let waited = tokio::time::timeout(
            self.inner.options.timeout,
            done.wait_for(|written| *written >= target),
        )
        .await
        .map(|r| r.map(|_| ()));
        match waited {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(stopped()),
            Err(_) => Err(unavailable(format!(
                "journal not written within {:?}: {} entries waiting",
                self.inner.options.timeout,
                self.inner.journal.lock().map(|j| j.len()).unwrap_or(0)
            ))),
        }
    }

    /// Writes the journal and stops the store's tasks.
    pub async fn close(self) -> StoreResult<()> {
        let flushed = self.flush().await;
        drop(self);
        flushed
    }

    pub(super) fn hint(&self, request: &RequestKey) -> Option<FreezeKey> {
        self.hints.lock().ok()?.get(request).copied()
    }

    pub(super) fn set_hint(&self, request: RequestKey, freeze: FreezeKey) {
        if let Ok(mut hints) = self.hints.lock() {
            // Hints of sagas another instance or recovery finished would pile up.
            if hints.len() >= 1 << 20 {
                hints.clear();
            }
            hints.insert(request, freeze);
        }
    }

    pub(super) fn drop_hint(&self, request: &RequestKey) {
        if let Ok(mut hints) = self.hints.lock() {
            hints.remove(request);
        }
    }

    /// Runs one statement as a command of a lane's next batch.
    pub(super) async fn write<T, D>(
        &self,
        order: String,
        sql: &'static str,
        params: Params,
        decode: D,
    ) -> StoreResult<T>
    where
        T: Send + 'static,
        D: Fn(&[Row]) -> Decision<T> + Send + Sync + 'static,
    {
        self.command(order, Statement::Own { sql, params }, decode)
            .await
    }

    /// Runs a command of a lane's next batch: its own statement, or its row
    /// of one of the batch's set statements.
    pub(super) async fn command<T, D>(
        &self,
        order: String,
        statement: Statement,
        decode: D,
    ) -> StoreResult<T>
    where
        T: Send + 'static,
        D: Fn(&[Row]) -> Decision<T> + Send + Sync + 'static,
    {
        let mut hasher = DefaultHasher::new();
        order.hash(&mut hasher);
        let lane = &self.lanes[(hasher.finish() % self.lanes.len() as u64) as usize];
        let (reply, answer) = oneshot::channel();
        let command = Box::new(Call {
            order,
            statement,
            decode,
            reply,
            reruns: 0,
            journal_mark: self.inner.journal_accepted.load(Ordering::SeqCst),
        });
        lane.send(command).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Runs one read on a pooled connection; once more on a fresh connection
    /// if the first one turned out to be closed.
    pub(super) async fn read(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> StoreResult<Vec<Row>> {
        let timeout = self.inner.options.timeout;
        for attempt in 0..2 {
            let client = self.inner.pool.get().await.map_err(pool_error)?;
            bump(&self.inner.counters.round_trips, 1);
            let result = tokio::time::timeout(timeout, async {
                let statement = client.prepare_cached(sql).await?;
                client.query(&statement, params).await
            })
            .await;
            match result {
                Ok(Ok(rows)) => return Ok(rows),
                Ok(Err(e)) if e.is_closed() && attempt == 0 => {
                    let _ = Object::take(client);
                }
                Ok(Err(e)) => return Err(db(e)),
                Err(_) => {
                    let _ = Object::take(client);
                    return Err(unavailable(format!("read timed out after {timeout:?}")));
                }
            }
        }
        Err(unavailable("no usable connection"))
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_setting_the_driver_refuses_is_named_and_the_password_is_not() {
        let options = PostgresOptions::default();
        let e = pg_config("postgres://u:secret@h/db?sslcrl=/crl.pem", &options)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("unknown option `sslcrl`"), "{e}");
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn verify_modes_reach_the_driver_as_require_and_sockets_get_no_tls() {
        use tokio_postgres::config::SslMode as Tokio;
        let options = PostgresOptions::default();
        let mode = |url: &str| pg_config(url, &options).unwrap().0.get_ssl_mode();
        assert_eq!(mode("postgres://h/db"), Tokio::Prefer);
        assert_eq!(mode("postgres://h/db?sslmode=disable"), Tokio::Disable);
        let tcp: tokio_postgres::Config = "host=h".parse().unwrap();
        assert_eq!(tokio_ssl_mode(&tcp, SslMode::VerifyCa), Tokio::Require);
        assert_eq!(tokio_ssl_mode(&tcp, SslMode::VerifyFull), Tokio::Require);
        assert_eq!(mode("host=/run/postgresql sslmode=require"), Tokio::Disable);
    }
}

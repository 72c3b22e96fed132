//! What a store holds, read by the test itself with plain SQL: the embedded
//! file through rusqlite, PostgreSQL through its own client. The SQL the
//! tests send is the part both dialects share.

use std::path::PathBuf;

/// A store a switch process is configured with.
pub enum Db {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Db {
    /// The `[store]` line of a switch configuration.
    pub fn store_line(&self) -> String {
        match self {
            Db::Sqlite(path) => format!("path = {:?}", path.display().to_string()),
            Db::Postgres(url) => format!("url = {url:?}"),
        }
    }

    /// `switch.toml` in `dir`: a switch on this store, listening for wallets
    /// on `wallet_port`, with banks A and B at `banks`.
    pub fn switch_config(
        &self,
        dir: &std::path::Path,
        wallet_port: u16,
        banks: (std::net::SocketAddr, std::net::SocketAddr),
    ) -> PathBuf {
        super::process::write_config(
            dir,
            super::process::SwitchFile {
                name: "switch.toml",
                store: &self.store_line(),
                wallet_port,
                bank_a: banks.0,
                bank_b: banks.1,
                timeout_ms: 2000,
                max_backoff_ms: 200,
            },
        )
    }

    /// The first column of every row `sql` returns, as bytes (text as UTF-8).
    pub async fn values(&self, sql: &str) -> Vec<Vec<u8>> {
        match self {
            Db::Sqlite(path) => {
                let conn = rusqlite::Connection::open_with_flags(
                    path,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
                )
                .unwrap();
                let mut stmt = conn.prepare(sql).unwrap();
                let mut rows = stmt.query([]).unwrap();
                let mut out = Vec::new();
                while let Some(row) = rows.next().unwrap() {
                    out.push(match row.get_ref(0).unwrap() {
                        rusqlite::types::ValueRef::Text(b) | rusqlite::types::ValueRef::Blob(b) => {
                            b.to_vec()
                        }
                        rusqlite::types::ValueRef::Integer(i) => i.to_string().into_bytes(),
                        other => panic!("{sql}: {other:?}"),
                    });
                }
                out
            }
            Db::Postgres(url) => {
                let client = super::pg::connect(url).await;
                client
                    .query(sql, &[])
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {}", super::pg::describe(&e)))
                    .iter()
                    .map(|row| match row.try_get::<_, Vec<u8>>(0) {
                        Ok(bytes) => bytes,
                        Err(_) => match row.try_get::<_, String>(0) {
                            Ok(text) => text.into_bytes(),
                            Err(_) => row.get::<_, i64>(0).to_string().into_bytes(),
                        },
                    })
                    .collect()
            }
        }
    }

    /// The number `sql` (a `SELECT count(*) ...`) returns.
    pub async fn count(&self, sql: &str) -> i64 {
        let values = self.values(sql).await;
        String::from_utf8(values[0].clone())
            .unwrap()
            .parse()
            .unwrap()
    }
}

//! The WAL's pages copied into the database file from a thread of their
//! own, so that the writer thread rarely waits for it.
//!
//! Why: SQLite checkpoints in the commit that takes the WAL past
//! `wal_autocheckpoint` pages, on the connection that committed, which is
//! the writer's. That commit then copies every page the WAL holds into the
//! database file and syncs it: tens of milliseconds (the sync alone took
//! 63 ms under load on the test machine) during which no batch commits and
//! every request waits for the one before it.
//!
//! Here a connection of its own runs a passive checkpoint every
//! [`EVERY`]: it copies the pages committed since the last one and syncs
//! the database file without holding up the writer (a passive checkpoint
//! waits for no lock; it copies what no reader still needs). The writer's
//! own checkpoint still comes at `wal_autocheckpoint` pages, and only it
//! lets the WAL start again from its beginning (a checkpoint must find no
//! commit after the last frame it copied), but it then finds all but the
//! last moments' pages copied and synced already.
//!
//! Crash safety is SQLite's: a checkpoint copies only committed pages, and
//! syncs the database file before it records them as copied (the
//! connection's `synchronous` is `FULL`), so a crash during one loses
//! nothing and the next one copies the same pages again.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use super::{db, StoreError, StoreResult};

/// Between two checkpoints: at 10,000 receives a second, a few megabytes
/// of WAL.
pub(super) const EVERY: Duration = Duration::from_millis(250);

/// The checkpointing thread; stopped (and joined) by [`Checkpointer::stop`]
/// or when dropped.
pub(super) struct Checkpointer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts checkpointing the store file at `path` (already in WAL mode).
    pub(super) fn start(path: &Path) -> StoreResult<Checkpointer> {
        let conn = Connection::open(path).map_err(db)?;
        // A checkpoint syncs the database file before it records the pages
        // as copied only when `synchronous` is not OFF; FULL, as the writer.
        conn.execute_batch("PRAGMA synchronous = FULL")
            .map_err(db)?;
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("switchboard-checkpoint".into())
            .spawn(move || run(&conn, &stopped))
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot start the checkpointing thread: {e}"))
            })?;
        Ok(Checkpointer {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread after the checkpoint it is running, if any.
    pub(super) fn stop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        let (flag, wake) = &*self.stop;
        *flag
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        wake.notify_all();
        if thread.join().is_err() {
            tracing::error!("the store's checkpointing thread panicked");
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What one checkpoint did: the WAL's frames, and how many of them are
/// copied into the database file.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Checkpointed {
    pub(super) wal_frames: i64,
    pub(super) copied: i64,
}

/// One passive checkpoint on `conn`.
pub(super) fn checkpoint(conn: &Connection) -> StoreResult<Checkpointed> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        Ok(Checkpointed {
            wal_frames: row.get(1)?,
            copied: row.get(2)?,
        })
    })
    .map_err(db)
}

fn run(conn: &Connection, stop: &(Mutex<bool>, Condvar)) {
    let (flag, wake) = stop;
    // The last failure, logged once until the checkpoints work again (a
    // full disk would otherwise log four times a second).
    let mut failing: Option<String> = None;
    loop {
        {
            let stopped = flag
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let (stopped, _) = wake
                .wait_timeout_while(stopped, EVERY, |stopped| !*stopped)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if *stopped {
                return;
            }
        }
        match checkpoint(conn) {
            Ok(_) => {
                if failing.take().is_some() {
                    tracing::info!("the store's checkpoints work again");
                }
            }
            Err(e) => {
                let e = e.to_string();
                if failing.as_deref() != Some(&e) {
                    tracing::warn!(
                        "the store's checkpoint failed (the writer's own checkpoints go on): {e}"
                    );
                    failing = Some(e);
                }
            }
        }
    }
}

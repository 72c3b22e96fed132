//! The WAL's pages copied into the database file, and the file synced,
//! from a thread of their own, so that the writer thread rarely waits for
//! either.
//!
//! Why: SQLite checkpoints in the commit that takes the WAL past
//! `wal_autocheckpoint` pages, on the connection that committed, which is
//! the writer's. That commit then copies every page the WAL holds into the
//! database file and syncs it: tens of milliseconds (the sync alone took
//! 63 ms under load on the test machine) during which no batch commits and
//! every request waits for the one before it.
//!
//! Here a connection of its own runs a passive checkpoint every [`EVERY`]:
//! it copies the pages committed since the last one without holding up the
//! writer (a passive checkpoint waits for no lock; it copies what no reader
//! still needs). Under load a commit nearly always lands while it copies,
//! and SQLite syncs the database file only after a checkpoint that copied
//! the WAL to its last frame; so this thread then syncs the file itself,
//! through SQLite's own handle of it. The writer's own checkpoint still
//! comes at `wal_autocheckpoint` pages, but finds all but the last
//! moments' pages copied and flushed, and its sync short. The WAL starts again from its
//! beginning at the first commit after a checkpoint that copied all of it:
//! under load, the writer's own; when the load pauses, this thread's.
//!
//! The cost: a page that many commits change (the file's first page, the
//! freezes', the last leaf of a growing table) is copied at every pass
//! rather than once per `wal_autocheckpoint` pages, a few per cent more
//! bytes written at moderate rates.
//!
//! Crash safety is SQLite's: a checkpoint copies only committed pages; the
//! WAL is started again only after a checkpoint that synced the database
//! file (the connection's `synchronous` is `FULL`); and after a crash the
//! WAL's index is rebuilt and its pages copied again.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use super::{db, StoreError, StoreResult};

/// Between two checkpoints: a tenth of a second of commits. Short, as a
/// shorter pass has less to copy and sync at once, and that sync shares
/// the disk with the writer's: 100 ms rather than 250 took 10-25 % off
/// the p99 at 10,000 and 20,000 receives/s for 3.5 % more bytes written
/// (benches/RESULTS.md); 1 s made it worse, 50 ms gained little more.
pub(super) const EVERY: Duration = Duration::from_millis(100);

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
        // A checkpoint that copies the whole WAL syncs the database file
        // before the WAL may start again only when `synchronous` is not OFF.
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

/// Syncs the database file through the connection's own handle, SQLite's
/// VFS. Not through a file of our own: closing any descriptor of a file
/// drops every POSIX lock the process holds on it, SQLite's connections'
/// included, which would let another process take the file for its own
/// (delete the WAL, say) while this one still writes it.
pub(super) fn sync_database_file(conn: &Connection) -> StoreResult<()> {
    use rusqlite::ffi;
    let failed = |why: String| StoreError::Unavailable(format!("syncing the database file: {why}"));
    let mut file: *mut ffi::sqlite3_file = std::ptr::null_mut();
    // SAFETY: `conn` is open and used by this thread alone for the call;
    // FILE_POINTER writes the main database's `sqlite3_file`, which the
    // connection owns and keeps open until it closes.
    let rc = unsafe {
        ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_FILE_POINTER,
            (&raw mut file).cast(),
        )
    };
    if rc != ffi::SQLITE_OK || file.is_null() {
        return Err(failed(format!("no file handle (SQLite code {rc})")));
    }
    // SAFETY: `file` is the connection's open main database file; its
    // methods are set while it is open.
    let sync = unsafe { (*file).pMethods.as_ref().and_then(|methods| methods.xSync) };
    let Some(sync) = sync else {
        return Err(failed("the file has no sync method".into()));
    };
    // SAFETY: as above; xSync only flushes the file (fdatasync or fsync).
    let rc = unsafe { sync(file, ffi::SQLITE_SYNC_NORMAL) };
    if rc != ffi::SQLITE_OK {
        return Err(failed(format!("SQLite code {rc}")));
    }
    Ok(())
}

fn run(conn: &Connection, stop: &(Mutex<bool>, Condvar)) {
    let (flag, wake) = stop;
    // The last failure, logged once until the checkpoints work again (a
    // full disk would otherwise log ten times a second).
    let mut failing: Option<String> = None;
    let mut last = Checkpointed {
        wal_frames: 0,
        copied: 0,
    };
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
        let passed = checkpoint(conn).and_then(|now| {
            // Pages copied since the last pass (or the WAL started again):
            // flushed here rather than in the writer's own checkpoint.
            if now.copied > 0 && now != last {
                sync_database_file(conn)?;
            }
            last = now;
            Ok(())
        });
        match passed {
            Ok(()) => {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The sync goes through SQLite's own handle of the file, on a
    /// connection in WAL mode with pages to copy, and the checkpoint reports
    /// them copied.
    #[test]
    fn a_checkpoint_copies_and_the_file_syncs_through_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let writer = Connection::open(&path).unwrap();
        writer
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0; \
                 CREATE TABLE t (x BLOB); INSERT INTO t VALUES (zeroblob(100000));",
            )
            .unwrap();
        let conn = Connection::open(&path).unwrap();
        let done = checkpoint(&conn).unwrap();
        assert!(done.wal_frames > 0, "{done:?}");
        assert_eq!(done.copied, done.wal_frames);
        sync_database_file(&conn).unwrap();
        // The writer's own handle is untouched: it goes on writing.
        writer
            .execute_batch("INSERT INTO t VALUES (zeroblob(10))")
            .unwrap();
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |row| row.get(0))
            .unwrap();
        assert_eq!(rows, 2);
    }
}

//! Who works on an embedded store file. `serve`, `recover`, `migrate`,
//! `clear`, `rekey` and `demo` each take an exclusive lock on `<file>.lock`
//! before opening the store (and with it its decision log), and hold it
//! until they exit: a second of them on the same file is refused at once,
//! saying who holds it, instead of (say) a `recover` run by
//! mistake failing a running switch's live sagas. The lock is `flock(2)`, so
//! the kernel releases it when the process ends, `kill -9` included: there
//! is never a stale lock to clean up. Other readers (`saf list`,
//! `reconcile`, tests) open the file without it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::store::{StoreError, StoreResult};

/// An exclusive hold on an embedded store, released on drop (or exit).
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

/// The lock file beside the store file `db`.
pub fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

impl StoreLock {
    /// Takes the lock of the store `db` for `purpose` (e.g. "serve"), or
    /// says who holds it.
    pub fn acquire(db: &Path, purpose: &str) -> StoreResult<StoreLock> {
        let path = lock_path(db);
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        // It names the process holding the store: its owner's business only.
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&path).map_err(|e| {
            StoreError::Unavailable(format!("cannot open the lock {}: {e}", path.display()))
        })?;
        if !try_lock(&file)
            .map_err(|e| StoreError::Unavailable(format!("cannot lock {}: {e}", path.display())))?
        {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let holder = if holder.is_empty() {
                "another process"
            } else {
                holder
            };
            return Err(StoreError::InUse(format!(
                "{} is held by {holder}: stop it first (its lock is {})",
                db.display(),
                path.display()
            )));
        }
        // Who holds it, for the message of whoever is refused.
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(file, "{purpose} (pid {})", std::process::id());
        let _ = file.flush();
        Ok(StoreLock { _file: file })
    }
}

/// Takes `flock(LOCK_EX)` on `file` without waiting: `false` when another
/// open file holds it (the decision log's, too).
#[cfg(unix)]
pub(super) fn try_lock(file: &File) -> std::io::Result<bool> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock on a descriptor this File owns for the call's duration.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Elsewhere the file is opened but not locked.
#[cfg(not(unix))]
pub(super) fn try_lock(_file: &File) -> std::io::Result<bool> {
    Ok(true)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_and_told_who_holds_it_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("switchboard.db");
        let first = StoreLock::acquire(&db, "serve").unwrap();
        let refused = StoreLock::acquire(&db, "recover").unwrap_err();
        let text = refused.to_string();
        assert!(matches!(refused, StoreError::InUse(_)), "{text}");
        assert!(
            text.contains(&format!("serve (pid {})", std::process::id())),
            "{text}"
        );
        drop(first);
        let second = StoreLock::acquire(&db, "recover").unwrap();
        drop(second);
    }
}

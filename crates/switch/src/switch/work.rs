//! Whose work is this: the freezes and receive sagas this instance has
//! started and not ended. Each is recorded with its creation time, under one
//! lock, so the oldest unfinished one is the watermark this instance's lease
//! carries (see `lease.rs`). A task dropped without [`Ticket::done`] is
//! abandoned; the lease round settles it.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::clock::Clock;
use crate::dialect::FreezeKey;
use crate::store::RequestKey;

/// A unit of work that leaves a record in the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    Freeze(FreezeKey),
    Saga(RequestKey),
}

#[derive(Default)]
struct Open {
    next: u64,
    /// (created at, sequence) → task, and whether its task has gone without
    /// ending it.
    tasks: BTreeMap<(i64, u64), (Task, bool)>,
}

/// The work this instance has started and not ended.
#[derive(Default)]
pub struct Work {
    open: Mutex<Open>,
}

/// A started task. Call [`Ticket::done`] once its record is ended (or was
/// never written); dropped otherwise, the task is left to the lease round
/// (`lease::run`) to settle.
pub struct Ticket<'a> {
    work: &'a Work,
    key: (i64, u64),
    done: bool,
}

impl Ticket<'_> {
    /// The creation time to record: read under the same lock as the
    /// watermark, so no task can be older than a watermark written after it.
    pub fn created_at_ms(&self) -> i64 {
        self.key.0
    }

    pub fn done(mut self) {
        self.done = true;
        self.work.lock().tasks.remove(&self.key);
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.done {
            if let Some(entry) = self.work.lock().tasks.get_mut(&self.key) {
                entry.1 = true;
            }
        }
    }
}

impl Work {
    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn begin(&self, clock: &dyn Clock, task: Task) -> Ticket<'_> {
        let mut open = self.lock();
        let key = (clock.now_ms(), open.next);
        open.next += 1;
        open.tasks.insert(key, (task, false));
        Ticket {
            work: self,
            key,
            done: false,
        }
    }

    /// The creation time of the oldest unfinished task, or now.
    pub fn unfinished_since(&self, clock: &dyn Clock) -> i64 {
        let open = self.lock();
        open.tasks
            .keys()
            .next()
            .map_or_else(|| clock.now_ms(), |k| k.0)
    }

    pub(super) fn abandoned(&self) -> Vec<((i64, u64), Task)> {
        self.lock()
            .tasks
            .iter()
            .filter(|(_, (_, abandoned))| *abandoned)
            .map(|(k, (task, _))| (*k, *task))
            .collect()
    }

    pub(super) fn forget(&self, key: (i64, u64)) {
        self.lock().tasks.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;

    fn saga(n: u8) -> Task {
        Task::Saga(RequestKey {
            mti: *b"0200",
            acquirer: crate::dialect::InstitutionId::from_field(32, b"01020000").unwrap(),
            transmission: *b"1123140000",
            stan: [b'0', b'0', b'0', b'0', b'0', b'0' + n],
        })
    }

    #[test]
    fn watermark_is_the_oldest_unfinished_task() {
        let work = Work::default();
        let clock = SystemClock;
        let first = work.begin(&clock, saga(1));
        let second = work.begin(&clock, saga(2));
        assert_eq!(work.unfinished_since(&clock), first.created_at_ms());
        let first_at = first.created_at_ms();
        first.done();
        assert_eq!(work.unfinished_since(&clock), second.created_at_ms());
        assert!(second.created_at_ms() >= first_at);
        drop(second);
        // Dropped without done: abandoned, still holding the watermark.
        assert_eq!(work.abandoned().len(), 1);
        assert_eq!(work.abandoned()[0].1, saga(2));
        let key = work.abandoned()[0].0;
        work.forget(key);
        assert!(work.abandoned().is_empty());
        assert!(work.unfinished_since(&clock) >= first_at);
    }
}

//! An append-only list kept in fixed-size chunks, for the bank's journal.
//!
//! Why not a `Vec`: a `Vec` that grows past its capacity moves every element
//! into an allocation twice the size. A bank's journal holds an entry for
//! every request it decided, so under load it reached hundreds of thousands
//! of entries, and each doubling (at 65,536, 131,072, 262,144 ... entries)
//! stopped the bank for as long as the copy and the fresh pages took: 40, 77
//! and 124 ms at those sizes in a 20,000/s run, the largest latencies of
//! every run straight to it. Here a push never moves what is already stored:
//! a full chunk stays where it is and a new one is started.

/// Entries in one chunk: large enough that the list of chunks stays short
/// (2^20 entries are 256 chunks), small enough that starting a chunk
/// costs nothing a request would notice.
const CHUNK: usize = 4096;

/// An append-only list whose pushes never move stored elements.
#[derive(Clone, Debug)]
pub(super) struct ChunkedLog<T> {
    /// Every chunk but the last is full (holds [`CHUNK`] elements).
    chunks: Vec<Vec<T>>,
}

impl<T> Default for ChunkedLog<T> {
    fn default() -> Self {
        ChunkedLog { chunks: Vec::new() }
    }
}

impl<T> ChunkedLog<T> {
    /// Appends `value` at the end.
    pub(super) fn push(&mut self, value: T) {
        match self.chunks.last_mut() {
            Some(last) if last.len() < CHUNK => last.push(value),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push(value);
                self.chunks.push(chunk);
            }
        }
    }

    /// How many elements there are.
    pub(super) fn len(&self) -> usize {
        match self.chunks.last() {
            Some(last) => (self.chunks.len() - 1) * CHUNK + last.len(),
            None => 0,
        }
    }

    /// The elements in the order they were pushed.
    pub(super) fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.chunks.iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_come_back_in_order_across_chunks() {
        let mut log = ChunkedLog::default();
        assert_eq!(log.len(), 0);
        assert_eq!(log.iter().count(), 0);
        let n = 2 * CHUNK + 3;
        for i in 0..n {
            log.push(i);
            assert_eq!(log.len(), i + 1);
        }
        assert!(log.iter().copied().eq(0..n));
        assert_eq!(log.chunks.len(), 3);
    }

    #[test]
    fn a_push_never_moves_what_is_stored() {
        let mut log = ChunkedLog::default();
        log.push(0u64);
        let first: *const u64 = log.iter().next().unwrap();
        for i in 1..(3 * CHUNK as u64) {
            log.push(i);
        }
        let still: *const u64 = log.iter().next().unwrap();
        assert_eq!(first, still, "the first element stayed where it was");
    }
}

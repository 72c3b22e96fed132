//! Reading the embedded store's own binary values (the risk log's rows and
//! counters, the journal's packs) as untrusted input: anything short, too
//! long or out of range is [`StoreError::Corrupt`] naming the value and the
//! byte offset, never a panic, and no length read from the bytes allocates
//! more than the bytes that are there. Integers are little-endian.

use crate::store::{StoreError, StoreResult};

/// Reads a stored value, naming it and the offset in every error.
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
    pub(super) at: usize,
    what: String,
}

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8], what: String) -> Reader<'a> {
        Reader { bytes, at: 0, what }
    }

    pub(super) fn error(&self, at: usize, why: String) -> StoreError {
        StoreError::Corrupt(format!("{}, byte {at}: {why}", self.what))
    }

    pub(super) fn take<const N: usize>(&mut self) -> StoreResult<[u8; N]> {
        let end = self
            .at
            .checked_add(N)
            .filter(|&end| end <= self.bytes.len());
        let Some(end) = end else {
            return Err(self.error(
                self.at,
                format!("{N} bytes wanted, {} left", self.bytes.len() - self.at),
            ));
        };
        let mut out = [0u8; N];
        out.copy_from_slice(&self.bytes[self.at..end]);
        self.at = end;
        Ok(out)
    }

    /// The next byte, not taken.
    pub(super) fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    /// The next `len` bytes, borrowed.
    pub(super) fn slice(&mut self, len: usize) -> StoreResult<&'a [u8]> {
        let at = self.at;
        let bytes = at
            .checked_add(len)
            .and_then(|end| self.bytes.get(at..end))
            .ok_or_else(|| self.error(at, format!("{len} bytes run past the end")))?;
        self.at += len;
        Ok(bytes)
    }

    pub(super) fn u8(&mut self) -> StoreResult<u8> {
        Ok(self.take::<1>()?[0])
    }

    pub(super) fn u32(&mut self) -> StoreResult<u32> {
        Ok(u32::from_le_bytes(self.take()?))
    }

    pub(super) fn u64(&mut self) -> StoreResult<u64> {
        Ok(u64::from_le_bytes(self.take()?))
    }

    pub(super) fn i64(&mut self) -> StoreResult<i64> {
        Ok(i64::from_le_bytes(self.take()?))
    }

    /// A count of items at least `min_size` bytes each: refused when the
    /// bytes left cannot hold them (nothing is allocated for a lie).
    pub(super) fn count(&mut self, min_size: usize) -> StoreResult<usize> {
        let at = self.at;
        let n = self.u32()? as usize;
        let left = self.bytes.len() - self.at;
        if n.saturating_mul(min_size) > left {
            return Err(self.error(at, format!("{n} items in {left} bytes")));
        }
        Ok(n)
    }

    pub(super) fn str(&mut self) -> StoreResult<String> {
        self.text().map(str::to_string)
    }

    /// A key part, as [`Reader::str`] reads text.
    pub(super) fn key(&mut self) -> StoreResult<crate::store::columns::KeyText> {
        self.text().map(crate::store::columns::KeyText::new)
    }

    fn text(&mut self) -> StoreResult<&'a str> {
        let at = self.at;
        let len = u16::from_le_bytes(self.take()?) as usize;
        let end = self.at + len;
        let Some(bytes) = self.bytes.get(self.at..end) else {
            return Err(self.error(at, format!("a string of {len} bytes runs past the end")));
        };
        let s = std::str::from_utf8(bytes)
            .map_err(|e| self.error(at, format!("a string that is not UTF-8: {e}")))?;
        self.at = end;
        Ok(s)
    }

    pub(super) fn end(&self) -> StoreResult<()> {
        match self.bytes.len() - self.at {
            0 => Ok(()),
            left => Err(self.error(self.at, format!("{left} bytes after the end"))),
        }
    }
}

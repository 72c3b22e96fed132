//! STANs (field 11) for the messages the switch originates. Blocks are taken
//! from the store, so several switch instances sharing one database never hand
//! out the same STAN (a collision would make a bank treat a new debit
//! as a resend of another).

use std::sync::Arc;

use tokio::sync::Mutex;

use crate::store::{Store, StoreResult};

/// STANs handed out per trip to the store. A trip is a commit of its own
/// (on the embedded store, a SQLite commit and its sync rather than a
/// record of the decision log), taken while every receive that needs a
/// STAN waits on the lock: at two STANs a receive, a block of 1,000 made
/// twenty such commits a second at 10,000 receives/s. A restart skips what
/// is left of a block; the STANs wrap at 999,999 whatever its size.
const BLOCK: u32 = 10_000;

pub struct StanSource {
    store: Arc<dyn Store>,
    /// Next STAN to give and the end (exclusive) of the current block.
    block: Mutex<(u32, u32)>,
}

impl StanSource {
    pub fn new(store: Arc<dyn Store>) -> Self {
        StanSource {
            store,
            block: Mutex::new((0, 0)),
        }
    }

    /// The next STAN as six digits.
    pub async fn next(&self) -> StoreResult<[u8; 6]> {
        let mut block = self.block.lock().await;
        if block.0 >= block.1 {
            let first = self.store.allocate_stans(BLOCK).await?;
            *block = (first, first + BLOCK);
        }
        // Blocks wrap in the store; a STAN above 999999 is folded back into range.
        let stan = (block.0 - 1) % 999_999 + 1;
        block.0 += 1;
        Ok(six_digits(stan))
    }
}

/// A STAN as its six digits, zero-padded, written in place (two a receive:
/// no formatter and no `String` for them).
fn six_digits(stan: u32) -> [u8; 6] {
    let mut out = [b'0'; 6];
    let mut rest = stan;
    for digit in out.iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::six_digits;

    #[test]
    fn stans_are_six_digits_zero_padded() {
        for stan in [1, 42, 99_999, 100_000, 123_456, 999_999] {
            assert_eq!(six_digits(stan), *format!("{stan:06}").as_bytes());
        }
    }
}

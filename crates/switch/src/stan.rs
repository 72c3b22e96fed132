//! STANs (field 11) for the messages the switch originates. Blocks are taken
//! from the store, so several switch instances sharing one database never hand
//! out the same STAN (a collision would make a bank treat a new debit
//! as a resend of another).

use std::sync::Arc;

use tokio::sync::Mutex;

use crate::store::{Store, StoreResult};

/// STANs handed out per trip to the store.
const BLOCK: u32 = 1000;

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
        let text = format!("{stan:06}");
        let mut out = [0u8; 6];
        out.copy_from_slice(text.as_bytes());
        Ok(out)
    }
}

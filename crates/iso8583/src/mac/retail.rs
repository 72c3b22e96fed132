//! The ANSI X9.19 retail MAC (ISO/IEC 9797-1 MAC algorithm 3, padding
//! method 1) over single DES.
//!
//! Single DES is the whole cost of an X9.19 MAC: a 160-byte message is 20
//! chained DES blocks. With the default feature `fast-des` the blocks go
//! through AWS-LC's DES (`aws-lc-sys`, the table-driven implementation of
//! the OpenSSL lineage), about 2.4 times RustCrypto's `des`, which computes
//! each round's permutations bit by bit. Without the feature (a pure-Rust
//! build) RustCrypto's `des` does it. Both give the same bytes: the tests
//! check the known-answer vectors, and with the feature on, compare the two
//! on generated keys and messages.

/// A double-length retail MAC key `K1 ‖ K2`, its DES key schedules ready and
/// wiped on drop.
#[derive(Clone)]
pub(super) struct RetailKey {
    k1: backend::SingleDes,
    k2: backend::SingleDes,
}

impl RetailKey {
    /// `key` is 16 bytes, `K1 ‖ K2`; the caller checks the length.
    pub(super) fn new(key: &[u8]) -> RetailKey {
        RetailKey {
            k1: backend::SingleDes::new(key[..8].try_into().expect("8-byte DES key")),
            k2: backend::SingleDes::new(key[8..16].try_into().expect("8-byte DES key")),
        }
    }

    /// The 8-byte MAC of `data`: CBC-MAC under `K1` with a zero IV over the
    /// zero-padded data, then decrypt under `K2` and encrypt under `K1`.
    pub(super) fn mac(&self, data: &[u8]) -> [u8; 8] {
        let mut state = [0u8; 8];
        if data.is_empty() {
            // Padding method 1 makes an empty message one zero block.
            self.k1.encrypt(&mut state);
        }
        for chunk in data.chunks(8) {
            // A short last chunk is zero-padded: the zeros leave the state as is.
            for (s, d) in state.iter_mut().zip(chunk) {
                *s ^= d;
            }
            self.k1.encrypt(&mut state);
        }
        self.k2.decrypt(&mut state);
        self.k1.encrypt(&mut state);
        state
    }
}

#[cfg(feature = "fast-des")]
mod backend {
    #![allow(unsafe_code)]
    //! AWS-LC's single DES. The key schedule is a plain C struct of
    //! integers held by value, so the calls below read only memory Rust
    //! owns, and the schedule is wiped when dropped.

    use aws_lc_sys::{
        DES_cblock_st, DES_ecb_encrypt, DES_key_schedule, DES_set_key_unchecked, DES_DECRYPT,
        DES_ENCRYPT,
    };
    use zeroize::Zeroize;

    #[derive(Clone)]
    pub(super) struct SingleDes {
        schedule: DES_key_schedule,
    }

    impl SingleDes {
        pub(super) fn new(key: [u8; 8]) -> SingleDes {
            let mut key = DES_cblock_st { bytes: key };
            let mut schedule = DES_key_schedule::default();
            // SAFETY: both pointers are to live, properly typed values; the
            // function writes only `schedule`. "Unchecked" skips the parity
            // and weak-key checks: MAC keys come with whatever parity their
            // owner gave them, as with RustCrypto's `Des`.
            unsafe { DES_set_key_unchecked(&key, &mut schedule) };
            key.bytes.zeroize();
            SingleDes { schedule }
        }

        fn crypt(&self, block: &mut [u8; 8], direction: i32) {
            let input = DES_cblock_st { bytes: *block };
            let mut output = DES_cblock_st { bytes: [0; 8] };
            // SAFETY: all three pointers are to live values of the right
            // types; the function reads `input` and the schedule and writes
            // `output`, 8 bytes each.
            unsafe { DES_ecb_encrypt(&input, &mut output, &self.schedule, direction) };
            *block = output.bytes;
        }

        pub(super) fn encrypt(&self, block: &mut [u8; 8]) {
            self.crypt(block, DES_ENCRYPT);
        }

        pub(super) fn decrypt(&self, block: &mut [u8; 8]) {
            self.crypt(block, DES_DECRYPT);
        }
    }

    impl Drop for SingleDes {
        fn drop(&mut self) {
            for pair in self.schedule.subkeys.iter_mut() {
                pair.zeroize();
            }
        }
    }
}

#[cfg(not(feature = "fast-des"))]
mod backend {
    //! RustCrypto's single DES (its key schedule is wiped on drop by the
    //! crate's `zeroize` feature).

    use des::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
    use des::Des;

    #[derive(Clone)]
    pub(super) struct SingleDes(Des);

    impl SingleDes {
        pub(super) fn new(key: [u8; 8]) -> SingleDes {
            SingleDes(Des::new(&key.into()))
        }

        pub(super) fn encrypt(&self, block: &mut [u8; 8]) {
            self.0.encrypt_block(block.into());
        }

        pub(super) fn decrypt(&self, block: &mut [u8; 8]) {
            self.0.decrypt_block(block.into());
        }
    }
}

#[cfg(all(test, feature = "fast-des"))]
mod tests {
    use des::cipher::{Block, BlockDecrypt, BlockEncrypt, KeyInit};
    use des::Des;
    use proptest::prelude::*;

    use super::RetailKey;

    /// The retail MAC written over RustCrypto's `des`, to compare with.
    fn reference_mac(key: &[u8; 16], data: &[u8]) -> [u8; 8] {
        let k1 = Des::new_from_slice(&key[..8]).unwrap();
        let k2 = Des::new_from_slice(&key[8..]).unwrap();
        let mut state = Block::<Des>::default();
        let mut padded = data.to_vec();
        padded.resize(data.len().div_ceil(8).max(1) * 8, 0);
        for chunk in padded.chunks(8) {
            for (s, d) in state.iter_mut().zip(chunk) {
                *s ^= d;
            }
            k1.encrypt_block(&mut state);
        }
        k2.decrypt_block(&mut state);
        k1.encrypt_block(&mut state);
        state.into()
    }

    proptest! {
        #[test]
        fn aws_lc_des_gives_rustcrypto_des_bytes(
            key in any::<[u8; 16]>(),
            data in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            prop_assert_eq!(RetailKey::new(&key).mac(&data), reference_mac(&key, &data));
        }
    }
}

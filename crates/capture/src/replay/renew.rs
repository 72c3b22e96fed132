//! Fields renewed on replay, so a live host takes a replayed request for a
//! new one, and renewed consistently, so the messages of one flow still name
//! each other.
//!
//! Each renewed field maps an old value to one new value for the whole
//! replay: a repeat (0421 after 0420) carries the same new F7, F11 and F37 as
//! its original, as it did in the capture. Field 90 (original data elements:
//! MTI, STAN, F7, F32, F33 of the original) is rewritten with the new STAN
//! and F7 of the original it names, when that original was replayed. The
//! same maps turn a captured answer's echoes into the values the host should
//! echo now, so echoed fields compare equal.
//!
//! - F7 (MMDDhhmmss), F12 (hhmmss), F13 (MMDD): the moment of sending, UTC.
//! - F11: a fresh STAN per original (F7, F11, F32), never 000000.
//! - F37: a fresh retrieval reference number per old one: a prefix drawn
//!   from the seed and a counter.
//!
//! The maps hold at most `MAX_ENTRIES` values each (the oldest forgotten):
//! a message naming an original replayed more than that many requests
//! earlier keeps its captured F90.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use bytes::Bytes;
use chrono::NaiveDateTime;
use iso8583::Message;

/// The fields renewed by default: transmission date-time, STAN, RRN.
pub const DEFAULT_RENEW: [u16; 3] = [7, 11, 37];

/// The fields a replay knows how to renew.
pub const RENEWABLE: [u16; 5] = [7, 11, 12, 13, 37];

/// Values remembered per renewed field.
pub const MAX_ENTRIES: usize = 262_144;

const ORIGINAL_DATA: u16 = 90;

/// A map that forgets its oldest entries past a bound.
#[derive(Debug)]
struct Bounded<K, V> {
    map: HashMap<K, V>,
    order: VecDeque<K>,
    max: usize,
}

impl<K: Eq + Hash + Clone, V> Bounded<K, V> {
    fn new(max: usize) -> Self {
        Bounded {
            map: HashMap::new(),
            order: VecDeque::new(),
            max,
        }
    }

    fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key)
    }

    fn insert(&mut self, key: K, value: V) {
        if self.map.len() >= self.max {
            if let Some(oldest) = self.order.pop_front() {
                self.map.remove(&oldest);
            }
        }
        self.order.push_back(key.clone());
        self.map.insert(key, value);
    }
}

/// An original's identity in the dialect: its F7, F11 and F32 (the acquirer
/// without leading zeros, as field 90 carries it zero-filled).
type Identity = (Bytes, Bytes, Bytes);

#[derive(Debug)]
pub struct Renewer {
    fields: Vec<u16>,
    /// Old value → new, for F7, F12, F13 and F37.
    values: HashMap<u16, Bounded<Bytes, Bytes>>,
    stans: Bounded<Identity, Bytes>,
    next_stan: u32,
    rrn_prefix: String,
    next_rrn: u32,
}

impl Renewer {
    /// Renews `fields` (each one of [`RENEWABLE`]); `seed` picks the first
    /// STAN and the RRNs' prefix, so replays with different seeds do not
    /// renew to the same values.
    pub fn new(fields: &[u16], seed: u64) -> Result<Self, String> {
        if let Some(field) = fields.iter().find(|f| !RENEWABLE.contains(f)) {
            return Err(format!(
                "field {field} cannot be renewed: the fields a replay renews are {RENEWABLE:?}"
            ));
        }
        let mut fields = fields.to_vec();
        fields.sort_unstable();
        fields.dedup();
        Ok(Renewer {
            values: fields
                .iter()
                .map(|&f| (f, Bounded::new(MAX_ENTRIES)))
                .collect(),
            fields,
            stans: Bounded::new(MAX_ENTRIES),
            next_stan: (seed % 999_999) as u32 + 1,
            rrn_prefix: format!("{:06}", seed % 1_000_000),
            next_rrn: 0,
        })
    }

    pub fn fields(&self) -> &[u16] {
        &self.fields
    }

    /// Renews a request about to be sent at `now` (UTC); field 90 names the
    /// renewed original when there is one.
    pub fn renew(&mut self, msg: &mut Message, now: NaiveDateTime) {
        let identity = identity(msg);
        for i in 0..self.fields.len() {
            let field = self.fields[i];
            let Some(old) = msg.get_bytes(field) else {
                continue;
            };
            let new = if field == 11 {
                match self.stans.get(&identity) {
                    Some(new) => new.clone(),
                    None => {
                        let new = self.fresh_stan(old.len());
                        self.stans.insert(identity.clone(), new.clone());
                        new
                    }
                }
            } else {
                let known = self.values.get(&field).and_then(|m| m.get(&old)).cloned();
                match known {
                    Some(new) => new,
                    None => {
                        let new = self.fresh(field, old.len(), now);
                        let old = Bytes::copy_from_slice(&old);
                        if let Some(map) = self.values.get_mut(&field) {
                            map.insert(old, new.clone());
                        }
                        new
                    }
                }
            };
            msg.set(field, new);
        }
        self.rewrite_original_data(msg);
    }

    /// A captured answer as the host should give it now: the renewed values
    /// in place of the old ones it echoes. Nothing new is made up: a value
    /// never renewed stays as captured.
    pub fn translate(&self, msg: &mut Message) {
        let identity = identity(msg);
        for &field in &self.fields {
            let Some(old) = msg.get_bytes(field) else {
                continue;
            };
            let new = if field == 11 {
                self.stans.get(&identity)
            } else {
                self.values.get(&field).and_then(|m| m.get(&old))
            };
            if let Some(new) = new.cloned() {
                msg.set(field, new);
            }
        }
        self.rewrite_original_data(msg);
    }

    /// Field 90's STAN (positions 5–10) and F7 (11–20), when its original
    /// (STAN, F7, F32 at 21–31) was renewed.
    fn rewrite_original_data(&self, msg: &mut Message) {
        let Some(value) = msg.get_bytes(ORIGINAL_DATA) else {
            return;
        };
        if value.len() != 42 || !value.iter().all(u8::is_ascii_digit) {
            return;
        }
        let stan = value.slice(4..10);
        let f7 = value.slice(10..20);
        let acquirer = without_leading_zeros(&value[20..31]);
        let mut new = value.to_vec();
        let mut changed = false;
        if self.fields.contains(&11) {
            if let Some(s) = self.stans.get(&(f7.clone(), stan, acquirer)) {
                if s.len() == 6 {
                    new[4..10].copy_from_slice(s);
                    changed = true;
                }
            }
        }
        if let Some(t) = self.values.get(&7).and_then(|m| m.get(&f7)) {
            if t.len() == 10 {
                new[10..20].copy_from_slice(t);
                changed = true;
            }
        }
        if changed {
            msg.set(ORIGINAL_DATA, new);
        }
    }

    fn fresh_stan(&mut self, len: usize) -> Bytes {
        let stan = self.next_stan;
        self.next_stan = if stan >= 999_999 { 1 } else { stan + 1 };
        fit(format!("{stan:06}"), len)
    }

    fn fresh(&mut self, field: u16, len: usize, now: NaiveDateTime) -> Bytes {
        let text = match field {
            7 => now.format("%m%d%H%M%S").to_string(),
            12 => now.format("%H%M%S").to_string(),
            13 => now.format("%m%d").to_string(),
            _ => {
                self.next_rrn = (self.next_rrn + 1) % 1_000_000;
                format!("{}{:06}", self.rrn_prefix, self.next_rrn)
            }
        };
        fit(text, len)
    }
}

fn identity(msg: &Message) -> Identity {
    let get = |f| msg.get(f).map_or(&[][..], |v| v);
    (
        Bytes::copy_from_slice(get(7)),
        Bytes::copy_from_slice(get(11)),
        without_leading_zeros(get(32)),
    )
}

fn without_leading_zeros(digits: &[u8]) -> Bytes {
    let start = digits
        .iter()
        .position(|&d| d != b'0')
        .unwrap_or(digits.len());
    Bytes::copy_from_slice(&digits[start..])
}

/// A generated value at the length the captured one had: the last `len`
/// characters, or zero-filled on the left.
fn fit(text: String, len: usize) -> Bytes {
    let bytes = text.into_bytes();
    if bytes.len() >= len {
        Bytes::copy_from_slice(&bytes[bytes.len() - len..])
    } else {
        let mut padded = vec![b'0'; len - bytes.len()];
        padded.extend_from_slice(&bytes);
        Bytes::from(padded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::message;
    use chrono::NaiveDate;

    fn at(h: u32, m: u32, s: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2026, 12, 2)
            .unwrap()
            .and_hms_opt(h, m, s)
            .unwrap()
    }

    #[test]
    fn renews_and_rewrites_field_90_of_a_later_message() {
        let mut renewer = Renewer::new(&DEFAULT_RENEW, 1_000_123).unwrap();
        let mut freeze = message(
            b"0100",
            &[
                (7, "1123112233"),
                (11, "000123"),
                (32, "48020000"),
                (37, "RRN000000001"),
            ],
        );
        renewer.renew(&mut freeze, at(4, 5, 6));
        assert_eq!(freeze.get_str(7), Some("1202040506"));
        assert_eq!(freeze.get_str(11), Some("000125"));
        assert_eq!(freeze.get_str(37), Some("000123000001"));

        let mut receive = message(
            b"0200",
            &[
                (7, "1123112300"),
                (11, "000124"),
                (32, "48020000"),
                (37, "RRN000000002"),
                (90, "010000012311231122330004802000000000000000"),
            ],
        );
        renewer.renew(&mut receive, at(4, 5, 7));
        assert_eq!(
            receive.get_str(90),
            Some("010000012512020405060004802000000000000000")
        );
        assert_eq!(receive.get_str(11), Some("000126"));

        // A repeat of the freeze gets the same new values.
        let mut repeat = message(
            b"0101",
            &[
                (7, "1123112233"),
                (11, "000123"),
                (32, "48020000"),
                (37, "RRN000000001"),
            ],
        );
        renewer.renew(&mut repeat, at(4, 5, 9));
        assert_eq!(repeat.get_str(7), freeze.get_str(7));
        assert_eq!(repeat.get_str(11), freeze.get_str(11));
        assert_eq!(repeat.get_str(37), freeze.get_str(37));

        // The captured answer's echoes become the renewed values.
        let mut answer = message(
            b"0210",
            &[
                (7, "1123112300"),
                (11, "000124"),
                (32, "48020000"),
                (39, "00"),
                (90, "010000012311231122330004802000000000000000"),
            ],
        );
        renewer.translate(&mut answer);
        assert_eq!(answer.get_str(11), receive.get_str(11));
        assert_eq!(answer.get_str(7), receive.get_str(7));
        assert_eq!(answer.get_str(90), receive.get_str(90));
        assert_eq!(answer.get_str(39), Some("00"));
    }

    #[test]
    fn field_90_naming_an_original_not_replayed_is_kept() {
        let mut renewer = Renewer::new(&DEFAULT_RENEW, 7).unwrap();
        let f90 = "010000099911231122330004802000000000000000";
        let mut unfreeze = message(b"0400", &[(7, "1123112300"), (11, "000001"), (90, f90)]);
        renewer.renew(&mut unfreeze, at(1, 2, 3));
        assert_eq!(unfreeze.get_str(90), Some(f90));
    }

    #[test]
    fn same_stan_on_different_days_gets_different_new_stans() {
        let mut renewer = Renewer::new(&[11], 0).unwrap();
        let mut a = message(b"0100", &[(7, "1123112233"), (11, "000001")]);
        let mut b = message(b"0100", &[(7, "1124112233"), (11, "000001")]);
        renewer.renew(&mut a, at(1, 1, 1));
        renewer.renew(&mut b, at(1, 1, 1));
        assert_ne!(a.get_str(11), b.get_str(11));
        assert_eq!(a.get_str(7), Some("1123112233"), "F7 not renewed");
    }

    #[test]
    fn refuses_fields_it_cannot_renew() {
        let err = Renewer::new(&[7, 2], 0).unwrap_err();
        assert!(err.contains("field 2 cannot be renewed"), "{err}");
    }

    #[test]
    fn the_maps_stay_bounded() {
        let mut map = Bounded::new(3);
        for i in 0..10u8 {
            map.insert(i, i);
        }
        assert_eq!(map.map.len(), 3);
        assert!(map.get(&9).is_some() && map.get(&6).is_none());
    }
}

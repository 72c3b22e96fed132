//! Parses arbitrary bytes with specs that use the wire forms beyond the built-in
//! dialects: a header before the MTI, EBCDIC-hex and mixed bitmap encodings, an
//! always-present secondary bitmap, strict BCD pad nibbles (0 and F, either side),
//! 1- to 6-digit, hex and left-justified BCD length prefixes, lengths counting bytes
//! or characters or nibbles, signed BCD amounts, the track-2 separator kept as `D`, and
//! EBCDIC 1047, Latin-1, GBK and GB 18030 text (see common/round_trip.rs for what
//! is checked).

#![no_main]

use std::sync::OnceLock;

use iso8583::Spec;
use libfuzzer_sys::fuzz_target;

#[path = "common/round_trip.rs"]
mod round_trip;

const SPECS: &[&str] = &[
    r#"
[spec]
name = "terminal"
header_length = 5
header = "6000010000"
mti_encoding = "bcd"
encoding = "bcd"
length_encoding = "bcd"
secondary_bitmap = "always"
[fields]
2  = { name = "PAN", format = "n..19", pad = "right", pad_nibble = "0" }
3  = { name = "Processing code", format = "n6" }
4  = { name = "Amount", format = "n11", pad_nibble = "F" }
28 = { name = "Fee", format = "x+n8", encoding = "bcd" }
32 = { name = "Acquirer", format = "n..11", length_counts = "bytes", pad = "right" }
35 = { name = "Track 2", format = "z..37", pad = "right", separator = "D" }
43 = { name = "Merchant", format = "ans40", encoding = "gbk" }
48 = { name = "Private", format = "ans...999", length_pad = "right", encoding = "gb18030", length_counts = "characters" }
52 = { name = "PIN", format = "b..16", encoding = "hex", length_encoding = "ascii", length_counts = "characters" }
55 = { name = "ICC", format = "b...255", length_counts = "nibbles" }
70 = { name = "Network code", format = "n3" }
"#,
    r#"
[spec]
name = "mainframe"
mti_encoding = "ebcdic"
encoding = "ebcdic"
length_encoding = "ebcdic"
bitmap_encoding = "ebcdic-hex"
secondary_bitmap_encoding = "binary"
[fields]
2  = { name = "PAN", format = "n..19" }
29 = { name = "Fee", format = "x+n8" }
44 = { name = "Text 1047", format = "ans......999999", encoding = "ebcdic-1047" }
45 = { name = "Latin-1", format = "ans.9", encoding = "latin-1", length_encoding = "hex" }
46 = { name = "Hex length", format = "ans....4095", length_encoding = "hex" }
47 = { name = "Binary length", format = "b......65535", length_encoding = "binary" }
102 = { name = "Account", format = "ans..28" }
"#,
];

fn specs() -> &'static [Spec] {
    static COMPILED: OnceLock<Vec<Spec>> = OnceLock::new();
    COMPILED.get_or_init(|| {
        SPECS
            .iter()
            .map(|text| Spec::from_toml(text).unwrap_or_else(|e| panic!("fuzz spec: {e}")))
            .collect()
    })
}

fuzz_target!(|data: &[u8]| round_trip::run(specs(), data));

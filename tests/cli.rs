//! The real `switchboard` binary: decode/encode round trips, masking, framings,
//! and bad lines that are reported while the rest of the input is processed.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn run(args: &[&str], stdin: &str) -> Output {
    run_bytes(args, stdin.as_bytes())
}

fn run_bytes(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("switchboard runs");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

const RECEIVE: &str = r#"{"mti":"0200","fields":{"2":"6222020200112233446","3":"400000","4":"000000001000","7":"1123112233","11":"000124","12":"192233","13":"1123","25":"00","32":"01020000","37":"000000000124","49":"156","90":"010000012311231122330000102000000000000000"}}"#;

const FREEZE_WITH_MAC: &str = r#"{"mti":"0100","fields":{"2":"6222020200112233446","3":"030000","4":"000000010000","7":"1123112233","11":"000123","12":"192233","13":"1123","25":"06","32":"01020000","37":"000000000123","49":"156","128":"0123456789ABCDEF"}}"#;

#[test]
fn encode_then_decode_json_round_trips_unmasked() {
    let input = format!("{RECEIVE}\n{FREEZE_WITH_MAC}\n");
    let encoded = run(&["encode"], &input);
    assert!(encoded.status.success(), "{}", stderr(&encoded));
    let hex = stdout(&encoded);
    assert_eq!(hex.lines().count(), 2);
    // The 0200 carries F90: a secondary bitmap (bit 1 set in the first bitmap byte).
    assert!(hex.starts_with("30323030F2"), "{hex}");
    let decoded = run(&["decode", "--json", "--unmask"], &hex);
    assert!(decoded.status.success(), "{}", stderr(&decoded));
    assert_eq!(stdout(&decoded), input);
}

#[test]
fn json_output_masks_the_pan_by_default() {
    let hex = stdout(&run(&["encode"], RECEIVE));
    let out = stdout(&run(&["decode", "--json"], &hex));
    assert!(out.contains(r#""2":"622202*********3446""#), "{out}");
    assert!(!out.contains("6222020200112233446"), "{out}");
}

#[test]
fn human_output_has_one_line_per_field_and_masks() {
    let hex = stdout(&run(&["encode"], RECEIVE));
    let out = run(&["decode", hex.trim()], "");
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.starts_with("MTI  0200  (receive request)\n"), "{text}");
    assert!(text.contains("   2  Primary account number"), "{text}");
    assert!(text.contains("622202*********3446"), "{text}");
    assert!(!text.contains("6222020200112233446"), "{text}");
    assert!(text.contains("  90  Original data elements"), "{text}");
    assert_eq!(text.lines().count(), 1 + 12, "{text}");
}

#[test]
fn binary_fields_are_upper_case_hex() {
    let hex = stdout(&run(&["encode"], FREEZE_WITH_MAC));
    // 8 raw MAC bytes end the message.
    assert!(hex.trim_end().ends_with("0123456789ABCDEF"), "{hex}");
    let out = stdout(&run(&["decode", "--json"], &hex));
    assert!(out.contains(r#""128":"0123456789ABCDEF""#), "{out}");
}

#[test]
fn framings_are_added_and_stripped() {
    for framing in [
        "ascii4",
        "binary2",
        "bcd2",
        "binary4",
        "binary2+cups",
        "ascii4+header:4",
    ] {
        let framed = run(&["encode", "--framing", framing], RECEIVE);
        assert!(framed.status.success(), "{framing}: {}", stderr(&framed));
        let out = run(
            &["decode", "--json", "--unmask", "--framing", framing],
            &stdout(&framed),
        );
        assert!(out.status.success(), "{framing}: {}", stderr(&out));
        assert_eq!(stdout(&out).trim_end(), RECEIVE, "{framing}");
    }
    let ascii4 = stdout(&run(&["encode", "--framing", "ascii4"], RECEIVE));
    let body = stdout(&run(&["encode"], RECEIVE));
    let body_len = body.trim().len() / 2;
    // Four ASCII digits of the body's length, in hex.
    let prefix: String = format!("{body_len:04}")
        .bytes()
        .map(|b| format!("{b:02X}"))
        .collect();
    assert_eq!(ascii4.trim(), format!("{prefix}{}", body.trim()));
}

#[test]
fn raw_output_writes_bytes() {
    let out = run(&["encode", "--raw"], RECEIVE);
    assert!(out.status.success());
    assert_eq!(&out.stdout[..4], b"0200");
}

#[test]
fn bad_lines_are_reported_and_the_rest_processed() {
    let good = stdout(&run(&["encode"], RECEIVE));
    // Line 2: field 2's LL prefix says 20 (> 19).
    let bad_length = good.trim().replacen("3139", "3230", 1);
    let input = format!("{}\nnot-hex\n{bad_length}\n{}\n", good.trim(), good.trim());
    let out = run(&["decode", "--json"], &input);
    assert!(!out.status.success());
    assert_eq!(stdout(&out).lines().count(), 2, "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("line 2: not hex"), "{err}");
    assert!(
        err.contains("line 3: field 2: LL length 20 exceeds maximum 19 at offset 20"),
        "{err}"
    );
}

#[test]
fn fail_fast_stops_at_the_first_bad_line() {
    let good = stdout(&run(&["encode"], RECEIVE));
    let input = format!("{}\nnot-hex\n{}\n", good.trim(), good.trim());
    let out = run(&["decode", "--json", "--fail-fast"], &input);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out).lines().count(), 1, "{}", stdout(&out));
    assert!(stderr(&out).contains("line 2: not hex"), "{}", stderr(&out));
}

/// A file of frames as a host log writes them (`encode --raw --framing`):
/// every frame decoded, a bad one reported by its number and offset and
/// passed over, a frame cut short at the end of the file reported.
#[test]
fn raw_frames_are_decoded_from_a_file_of_frames() {
    let framed = |json: &str| run(&["encode", "--raw", "--framing", "binary2"], json).stdout;
    let good = framed(RECEIVE);
    let freeze = framed(FREEZE_WITH_MAC);
    // Field 2's LL prefix says 20 (> 19): in step, but not a message.
    let mut bad = good.clone();
    let at = bad.windows(2).position(|w| w == b"19").unwrap();
    bad[at..at + 2].copy_from_slice(b"20");
    let mut file = [&good[..], &freeze[..], &bad[..], &good[..]].concat();
    let bad_at = good.len() + freeze.len();
    file.extend_from_slice(&good[..10]);
    let out = run_bytes(
        &[
            "decode",
            "--json",
            "--unmask",
            "--raw",
            "--framing",
            "binary2",
        ],
        &file,
    );
    assert_eq!(out.status.code(), Some(1));
    let expected = format!("{RECEIVE}\n{FREEZE_WITH_MAC}\n{RECEIVE}\n");
    assert_eq!(stdout(&out), expected);
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "frame 3 at byte {bad_at}: field 2: LL length 20 exceeds maximum 19 at offset 20"
        )),
        "{err}"
    );
    let end_at = bad_at + bad.len() + good.len();
    assert!(
        err.contains(&format!("frame 5 at byte {end_at}: incomplete frame")),
        "{err}"
    );

    // A length prefix that cannot be read: nothing after it can be found.
    let broken = [&good[..], b"0", &good[..]].concat();
    let out = run_bytes(
        &["decode", "--json", "--raw", "--framing", "ascii4"],
        &broken,
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "");
    assert!(
        stderr(&out).contains("frame 1 at byte 0: ASCII length prefix"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("cannot be found"), "{}", stderr(&out));

    // Without --framing, --raw has no frames to cut.
    let out = run_bytes(&["decode", "--raw"], &good);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn encode_reports_bad_lines_and_continues() {
    let wrong_length = RECEIVE.replace(r#""4":"000000001000""#, r#""4":"1000""#);
    let masked = RECEIVE.replace("6222020200112233446", "622202*********3446");
    let input = format!("{RECEIVE}\n{{\"mti\":\"02\"}}\n{wrong_length}\n{masked}\n{RECEIVE}\n");
    let out = run(&["encode"], &input);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out).lines().count(), 2);
    let err = stderr(&out);
    assert!(err.contains("line 2: mti \"02\" is not 4 digits"), "{err}");
    assert!(
        err.contains("line 3: field 4: length 4 does not fit format n12"),
        "{err}"
    );
    assert!(
        err.contains("line 4: field 2: byte 0x2a at position 6 is not allowed in class n"),
        "{err}"
    );
}

#[test]
fn unknown_spec_and_framing_are_clear_errors() {
    let out = run(&["decode", "--spec", "nope", "3030"], "");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("neither a built-in spec"),
        "{}",
        stderr(&out)
    );
    let out = run(&["decode", "--framing", "ascii5", "3030"], "");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("ascii4"), "{}", stderr(&out));
}

#[test]
fn bcd_spec_by_name() {
    let json = r#"{"mti":"0200","fields":{"2":"6222020200112233446","3":"000000","4":"000000001000","11":"000001"}}"#;
    let out = run(&["encode", "--spec", "iso8583-1987-bcd"], json);
    assert!(out.status.success(), "{}", stderr(&out));
    let hex = stdout(&out);
    // BCD MTI: two bytes 02 00.
    assert!(hex.starts_with("0200"), "{hex}");
    let back = run(
        &["decode", "--json", "--unmask", "--spec", "iso8583-1987-bcd"],
        &hex,
    );
    assert_eq!(stdout(&back).trim_end(), json, "{}", stderr(&back));
}

/// `switchboard decode | head -1`: the reader goes away after one line; the
/// command ends quietly (killed by SIGPIPE, as Unix tools are), without a
/// panic message.
#[test]
fn a_closed_output_pipe_ends_decode_quietly() {
    use std::io::{BufRead, BufReader};
    let hex = stdout(&run(&["encode"], RECEIVE));
    let input = hex.repeat(20_000);
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["decode"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("switchboard runs");
    let mut stdin = child.stdin.take().unwrap();
    // The child may stop reading once its output is gone: a failed write is expected.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("MTI  0200"), "{first}");
    // The reader is dropped here: the pipe is closed.
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.trim().is_empty(), "nothing on stderr: {err}");
}

/// Field 55 as EMV subfields: `encode` takes the object, `decode --json` gives
/// it back, the human output names the tags and masks the card number inside,
/// and a broken tag is an error naming field, tag and offset.
#[test]
fn emv_field_55_as_subfields() {
    let json = r#"{"mti":"0200","fields":{"3":"000000","11":"000001","55":{"9F26":"2E078F5CEA112DAA","82":"1C00","9F36":"0021","70":{"5A":"4761739001010119"}}}}"#;
    let out = run(&["encode", "--spec", "iso8583-1987-bcd"], json);
    assert!(out.status.success(), "{}", stderr(&out));
    let hex = stdout(&out);
    assert!(
        hex.trim_end().ends_with(
            "0032 9F26082E078F5CEA112DAA82021C009F36020021700A5A084761739001010119"
                .replace(' ', "")
                .as_str()
        ),
        "{hex}"
    );
    let back = run(
        &["decode", "--json", "--unmask", "--spec", "iso8583-1987-bcd"],
        &hex,
    );
    assert_eq!(stdout(&back).trim_end(), json, "{}", stderr(&back));

    let human = stdout(&run(&["decode", "--spec", "iso8583-1987-bcd"], &hex));
    assert!(human.contains("9F26   Application Cryptogram"), "{human}");
    assert!(
        human.contains("9F36   Application Transaction Counter (ATC)"),
        "{human}"
    );
    assert!(human.contains("476173******0119"), "{human}");
    assert!(!human.contains("4761739001010119"), "{human}");

    let broken = run(
        &["decode", "--json", "--spec", "iso8583-1987-bcd"],
        "0200000000000000020000059F2608AABB",
    );
    assert!(!broken.status.success());
    assert!(
        stderr(&broken).contains(
            "field 55, subfield 9F26: needs 8 bytes but only 2 remain at offset 3 of the field's value"
        ),
        "{}",
        stderr(&broken)
    );
}

#[test]
fn a_spec_header_goes_through_json_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let base = include_str!("../crates/iso8583/specs/switchboard.toml");
    let with_header = base.replacen("[spec]\n", "[spec]\nheader_length = 4\n", 1);
    let path = dir.path().join("with-header.toml");
    std::fs::write(&path, with_header).unwrap();
    let spec = path.to_str().unwrap();
    let json = r#"{"mti":"0800","header":"A1B2C3D4","fields":{"7":"1201083000","11":"000001","70":"301"}}"#;
    let out = run(&["encode", "--spec", spec], json);
    assert!(out.status.success(), "{}", stderr(&out));
    let hex = stdout(&out);
    assert!(hex.trim().starts_with("A1B2C3D430383030"), "{hex}");
    let back = run(&["decode", "--json", "--spec", spec], &hex);
    assert_eq!(stdout(&back).trim_end(), json, "{}", stderr(&back));
    // A header of the wrong length is refused, saying so.
    let short = json.replace("A1B2C3D4", "A1B2");
    let refused = run(&["encode", "--spec", spec], &short);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("header"), "{}", stderr(&refused));
}

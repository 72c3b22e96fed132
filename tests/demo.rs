//! `switchboard demo` as a user runs it: every scenario passes with the
//! money invariants, the mule's receives past its rule are declined 65, the
//! day's hits name the rule and the masked card, and no card number is
//! printed in full.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::process::KillOnDrop;

#[test]
fn the_demo_passes_and_declines_the_mule_past_its_rule() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("demo.out");
    let mut demo = KillOnDrop::new(
        Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .arg("demo")
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // At most two minutes: a demo that hangs fails (and is killed on drop).
    let mut status = None;
    for _ in 0..1200 {
        status = demo.try_wait().unwrap();
        if status.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = std::fs::read_to_string(&out_path).unwrap();
    let status = status.unwrap_or_else(|| panic!("the demo did not end:\n{out}"));
    assert!(status.success(), "{status}\n{out}");
    assert!(
        out.contains("all 10 scenarios passed; money invariants hold"),
        "{out}"
    );
    assert!(
        out.contains("[ok] mule: 9 packets received by one card, a rule allows 6"),
        "{out}"
    );
    assert!(out.contains(r#"receives: {"00": 6, "65": 3}"#), "{out}");
    let hit: Vec<&str> = out
        .lines()
        .find(|l| l.trim_start().starts_with("mule-receiver-packets"))
        .unwrap_or_else(|| panic!("no hits of the mule rule:\n{out}"))
        .split_whitespace()
        .collect();
    assert_eq!(hit.len(), 6, "{hit:?}");
    assert_eq!(
        (hit[1], hit[2], hit[4], hit[5]),
        ("enforce", "65", "01020000", "3")
    );
    let card = hit[3];
    assert!(
        card.starts_with("621700") && card.contains("******"),
        "{card}"
    );
    assert!(
        out.contains(&format!("mule {card} collected 72.00 from 6 packets")),
        "{out}"
    );
    // Card numbers are 16 to 19 digits: no run of 13 or more is printed.
    let longest = out
        .split(|c: char| !c.is_ascii_digit())
        .map(str::len)
        .max()
        .unwrap_or(0);
    assert!(longest < 13, "a run of {longest} digits in:\n{out}");
}

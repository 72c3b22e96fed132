//! Golden vectors: messages assembled by hand (hex with a comment per field, see
//! tests/vectors/README.md), decoded and compared field by field with the
//! expected values, validated against their dialect, and re-encoded to the
//! identical bytes.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use iso8583::codec::charset::to_hex;
use iso8583::codec::{build_bytes, parse};
use iso8583::spec::ContentClass;
use iso8583::validate::validate;
use iso8583::Spec;

struct Vector {
    path: PathBuf,
    spec: String,
    json: serde_json::Value,
    bytes: Vec<u8>,
}

fn read_vector(path: &Path) -> Vector {
    let text = std::fs::read_to_string(path).unwrap();
    let (mut spec, mut json, mut hex) = (None, None, String::new());
    for line in text.lines() {
        let line = line.trim();
        if let Some(meta) = line.strip_prefix('#') {
            let meta = meta.trim();
            if let Some(v) = meta.strip_prefix("spec:") {
                spec = Some(v.trim().to_string());
            } else if let Some(v) = meta.strip_prefix("json:") {
                json = Some(serde_json::from_str(v.trim()).unwrap());
            }
            continue;
        }
        let data = line.split('#').next().unwrap();
        hex.extend(data.chars().filter(|c| !c.is_whitespace()));
    }
    Vector {
        path: path.to_path_buf(),
        spec: spec.unwrap_or_else(|| panic!("{}: no spec line", path.display())),
        json: json.unwrap_or_else(|| panic!("{}: no json line", path.display())),
        bytes: hex::decode(&hex).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    }
}

fn vectors(dir: &str) -> Vec<Vector> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(dir);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "hex"))
        .collect();
    paths.sort();
    paths.iter().map(|p| read_vector(p)).collect()
}

fn check(v: &Vector) {
    let name = v.path.file_name().unwrap().to_string_lossy();
    let spec = Spec::load(&v.spec).unwrap();
    let msg = parse(&spec, Bytes::from(v.bytes.clone())).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(msg.mti_str(), v.json["mti"].as_str().unwrap(), "{name}");
    let expected = v.json["fields"].as_object().unwrap();
    let got: Vec<String> = msg.fields().map(|(n, _)| n.to_string()).collect();
    let want: Vec<String> = expected.keys().cloned().collect();
    assert_eq!(got, want, "{name}: fields present");
    for (number, value) in msg.fields() {
        let text = if spec.field(number).unwrap().class == ContentClass::B {
            to_hex(value)
        } else {
            String::from_utf8(value.to_vec()).unwrap()
        };
        assert_eq!(
            text,
            expected[&number.to_string()].as_str().unwrap(),
            "{name}: field {number}"
        );
    }
    let rebuilt = build_bytes(&spec, &msg).unwrap();
    assert_eq!(
        to_hex(&rebuilt),
        to_hex(&v.bytes),
        "{name}: re-encoded bytes"
    );
    let validation = validate(&spec, &msg);
    assert!(validation.is_valid(), "{name}: {:?}", validation.violations);
}

#[test]
fn switchboard_dialect_vectors() {
    let all = vectors("switchboard");
    // Every message of the dialect, request and response.
    let spec = Spec::switchboard();
    for m in &spec.messages {
        for mti in [Some(m.mti), m.response_mti].into_iter().flatten() {
            let mti = std::str::from_utf8(&mti).unwrap();
            let covered = all.iter().any(|v| {
                v.json["mti"] == mti
                    && (m.processing_code.is_none()
                        || v.json["fields"]["3"].as_str() == m.processing_code.as_deref())
            });
            assert!(covered, "no vector for {} {mti}", m.name);
        }
    }
    for v in &all {
        check(v);
    }
}

#[test]
fn bcd_spec_vectors() {
    let all = vectors("bcd");
    assert!(all.len() >= 3);
    for v in &all {
        check(v);
    }
}

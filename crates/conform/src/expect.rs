//! What must come back: an answer against a step's expectations, each
//! failure said in words, with values masked where the spec says a field is
//! sensitive.

use iso8583::diff::{differences, Part};
use iso8583::mask::mask_pan;
use iso8583::{Message, Spec};
use regex::Regex;

use crate::suite::{Expect, LedgerCheck};
use crate::template::Scope;

/// A field's value as reports show it.
pub fn show(spec: &Spec, field: u16, value: &str) -> String {
    if spec.field(field).is_some_and(|f| f.sensitive) {
        mask_pan(value)
    } else {
        value.to_string()
    }
}

fn shown(spec: &Spec, field: u16, value: Option<&str>) -> String {
    match value {
        Some(v) => format!("{:?}", show(spec, field, v)),
        None => "absent".to_string(),
    }
}

/// The failures of one answer to `request`; empty when it conforms.
/// `earlier` is the answer of `expect.same_as`, when there is one.
pub fn check(
    spec: &Spec,
    expect: &Expect,
    request: &Message,
    answer: &Message,
    earlier: Option<&Message>,
    scope: &mut Scope<'_>,
) -> Vec<String> {
    let mut failures = Vec::new();
    if let Some(mti) = &expect.mti {
        if answer.mti_str() != mti {
            failures.push(format!("MTI: expected {mti}, got {}", answer.mti_str()));
        }
    }
    if !expect.codes.is_empty() {
        let code = answer.get_str(39);
        if !code.is_some_and(|c| expect.codes.iter().any(|e| e == c)) {
            failures.push(format!(
                "field 39: expected {}, got {}",
                one_of(&expect.codes),
                shown(spec, 39, code)
            ));
        }
    }
    for &field in &expect.echo {
        let (sent, got) = (request.get_str(field), answer.get_str(field));
        if sent != got {
            failures.push(format!(
                "field {field}: expected the request's {}, got {}",
                shown(spec, field, sent),
                shown(spec, field, got)
            ));
        }
    }
    for (field, template) in &expect.equal {
        let field: u16 = field.parse().unwrap_or(0);
        match scope.render(field, template) {
            Ok(want) => {
                let got = answer.get_str(field);
                if got != Some(want.as_str()) {
                    failures.push(format!(
                        "field {field}: expected {}, got {}",
                        shown(spec, field, Some(&want)),
                        shown(spec, field, got)
                    ));
                }
            }
            Err(e) => failures.push(format!("field {field}: {e}")),
        }
    }
    for &field in &expect.present {
        if !answer.has(field) {
            failures.push(format!("field {field}: expected present, got absent"));
        }
    }
    for &field in &expect.absent {
        if let Some(got) = answer.get_str(field) {
            failures.push(format!(
                "field {field}: expected absent, got {}",
                shown(spec, field, Some(got))
            ));
        }
    }
    for (field, pattern) in &expect.matches {
        let field: u16 = field.parse().unwrap_or(0);
        // Checked when the suite was loaded; anchored to the whole value.
        let Ok(re) = Regex::new(&format!("^(?:{pattern})$")) else {
            continue;
        };
        let got = answer.get_str(field);
        if !got.is_some_and(|v| re.is_match(v)) {
            failures.push(format!(
                "field {field}: expected to match /{pattern}/, got {}",
                shown(spec, field, got)
            ));
        }
    }
    for amount in &expect.amount {
        let field = amount.field;
        let got = answer.get_str(field);
        let want = scope.render(field, &amount.value);
        match (got.and_then(|v| v.parse::<u64>().ok()), want) {
            (Some(g), Ok(w)) => match w.parse::<u64>() {
                Ok(w) if compare(g, &amount.op, w) => {}
                Ok(w) => failures.push(format!(
                    "field {field}: expected {} {} {w}, got {g}",
                    field_name(field),
                    amount.op
                )),
                Err(_) => failures.push(format!("field {field}: {w:?} is not an amount")),
            },
            (None, _) => failures.push(format!(
                "field {field}: expected an amount, got {}",
                shown(spec, field, got)
            )),
            (_, Err(e)) => failures.push(format!("field {field}: {e}")),
        }
    }
    if let Some(earlier) = earlier {
        failures.extend(same_as(spec, earlier, answer, &expect.ignore));
    }
    failures
}

fn field_name(field: u16) -> String {
    format!("F{field}")
}

fn compare(got: u64, op: &str, want: u64) -> bool {
    match op {
        "==" => got == want,
        "!=" => got != want,
        "<" => got < want,
        "<=" => got <= want,
        ">" => got > want,
        ">=" => got >= want,
        _ => false,
    }
}

fn one_of(codes: &[String]) -> String {
    match codes {
        [one] => format!("{one:?}"),
        many => format!("one of {}", many.join(", ")),
    }
}

/// An answer against an earlier one: the same MTI and fields but `ignore`.
fn same_as(spec: &Spec, earlier: &Message, answer: &Message, ignore: &[u16]) -> Vec<String> {
    fn text(value: &Option<bytes::Bytes>) -> Option<std::borrow::Cow<'_, str>> {
        value.as_deref().map(String::from_utf8_lossy)
    }
    differences(earlier, answer, ignore)
        .iter()
        .map(|d| match d.part {
            Part::Mti => format!(
                "MTI: expected the earlier answer's {}, got {}",
                earlier.mti_str(),
                answer.mti_str()
            ),
            Part::Field(field) => format!(
                "field {field}: expected the earlier answer's {}, got {}",
                shown(spec, field, text(&d.expected).as_deref()),
                shown(spec, field, text(&d.actual).as_deref())
            ),
        })
        .collect()
}

/// A ledger check against the card's change since the case began.
pub fn ledger(
    check: &LedgerCheck,
    card: &str,
    change: (i64, i64),
    scope: &mut Scope<'_>,
) -> Vec<String> {
    let mut failures = Vec::new();
    for (what, template, got) in [
        ("balance", &check.balance, change.0),
        ("held", &check.held, change.1),
    ] {
        let Some(template) = template else {
            continue;
        };
        match scope.render(0, template).map(|v| v.parse::<i64>()) {
            Ok(Ok(want)) if want == got => {}
            Ok(Ok(want)) => failures.push(format!(
                "card {}: {what} changed by {got}, expected {want}",
                mask_pan(card)
            )),
            Ok(Err(_)) => failures.push(format!("{what} = {template:?} is not a signed amount")),
            Err(e) => failures.push(format!("{what}: {e}")),
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::template::Generator;

    #[test]
    fn failures_are_worded_and_card_numbers_masked() {
        let spec = Spec::load("switchboard").unwrap();
        let mut request = Message::new(*b"0100");
        request.set(2, &b"6222021234567890"[..]);
        request.set(4, &b"000000001000"[..]);
        request.set(11, &b"000001"[..]);
        let mut answer = Message::new(*b"0110");
        answer.set(2, &b"6222029999999990"[..]);
        answer.set(4, &b"000000002000"[..]);
        answer.set(39, &b"51"[..]);
        let expect = Expect {
            mti: Some("0110".into()),
            codes: vec!["00".into()],
            echo: vec![2, 11],
            present: vec![38],
            amount: vec![crate::suite::AmountCheck {
                field: 4,
                op: "<=".into(),
                value: "000000001500".into(),
            }],
            ..Expect::default()
        };
        let vars = BTreeMap::new();
        let mut generator = Generator::new(1);
        let mut scope = Scope {
            vars: &vars,
            steps: &[],
            generator: &mut generator,
            now: chrono::Utc::now().naive_utc(),
        };
        let failures = check(&spec, &expect, &request, &answer, None, &mut scope);
        assert_eq!(
            failures,
            [
                r#"field 39: expected "00", got "51""#,
                r#"field 2: expected the request's "622202******7890", got "622202******9990""#,
                r#"field 11: expected the request's "000001", got absent"#,
                "field 38: expected present, got absent",
                "field 4: expected F4 <= 1500, got 2000",
            ]
        );
    }
}

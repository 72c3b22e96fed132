//! Field values of a step: literals with `{…}` expressions in them.
//!
//! | expression | value |
//! |---|---|
//! | `{var.NAME}` | a participant's variable |
//! | `{now}` | the moment of sending in the field's format: F7 `MMDDhhmmss`, F12 `hhmmss`, F13 and F15 `MMDD` (UTC) |
//! | `{stan}` | a fresh STAN, never repeated in a run |
//! | `{rrn}` | a fresh retrieval reference number (12 digits) |
//! | `{luhn:BIN}` | a Luhn-valid 16-digit card on BIN (digits, or `var.NAME`: its first 6 digits) |
//! | `{stepN.request.F}`, `{stepN.answer.F}` | field F of step N's request or answer (1-based, earlier steps of the case) |
//! | `{original:N}` | field 90 naming step N's request: its MTI, F11, F7, F32 and F33 (11 digits each, zero-filled) |
//! | `{id11:var.NAME}` | an institution id as field 90 carries it: right-justified, zero-filled to 11 digits |

use std::collections::BTreeMap;

use chrono::NaiveDateTime;
use iso8583::Message;

/// What a step sent and got, for later steps to refer to.
#[derive(Debug, Clone)]
pub struct StepRecord {
    pub request: Message,
    pub answer: Option<Message>,
}

/// Fresh values for a whole run: STANs and RRNs never repeat within it, and
/// start from a point drawn from the seed so two runs differ.
#[derive(Debug)]
pub struct Generator {
    next_stan: u32,
    rrn_prefix: u32,
    next_rrn: u32,
    state: u64,
}

impl Generator {
    pub fn new(seed: u64) -> Self {
        let mut generator = Generator {
            next_stan: 0,
            rrn_prefix: 0,
            next_rrn: 0,
            state: seed | 1,
        };
        generator.next_stan = (generator.random() % 900_000) as u32 + 1;
        generator.rrn_prefix = (generator.random() % 1_000_000) as u32;
        generator
    }

    /// xorshift64*: enough for test data, no cryptography.
    fn random(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn stan(&mut self) -> String {
        let stan = self.next_stan;
        self.next_stan = if stan >= 999_999 { 1 } else { stan + 1 };
        format!("{stan:06}")
    }

    pub fn rrn(&mut self) -> String {
        self.next_rrn = (self.next_rrn + 1) % 1_000_000;
        format!("{:06}{:06}", self.rrn_prefix, self.next_rrn)
    }

    /// A 16-digit card on `bin`, its last digit the Luhn check digit.
    pub fn card(&mut self, bin: &str) -> String {
        let mut digits: Vec<u8> = bin.bytes().map(|b| b - b'0').collect();
        while digits.len() < 15 {
            digits.push((self.random() % 10) as u8);
        }
        let sum: u32 = digits
            .iter()
            .rev()
            .enumerate()
            .map(|(i, &d)| {
                let d = u32::from(d);
                if i % 2 == 0 {
                    let doubled = d * 2;
                    if doubled > 9 {
                        doubled - 9
                    } else {
                        doubled
                    }
                } else {
                    d
                }
            })
            .sum();
        digits.push(((10 - sum % 10) % 10) as u8);
        digits.iter().map(|d| char::from(b'0' + d)).collect()
    }
}

/// Where a template is evaluated.
pub struct Scope<'a> {
    pub vars: &'a BTreeMap<String, String>,
    pub steps: &'a [StepRecord],
    pub generator: &'a mut Generator,
    pub now: NaiveDateTime,
}

impl Scope<'_> {
    /// `template` for field `field`.
    pub fn render(&mut self, field: u16, template: &str) -> Result<String, String> {
        let mut out = String::new();
        let mut rest = template;
        while let Some(start) = rest.find('{') {
            out.push_str(&rest[..start]);
            let after = &rest[start + 1..];
            let end = after
                .find('}')
                .ok_or_else(|| format!("{template:?}: a `{{` without its `}}`"))?;
            out.push_str(&self.expression(field, after[..end].trim())?);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn var(&self, name: &str) -> Result<String, String> {
        self.vars
            .get(name)
            .cloned()
            .ok_or_else(|| format!("the variable {name} is not set (--var {name}=VALUE)"))
    }

    fn step(&self, n: &str) -> Result<&StepRecord, String> {
        n.parse::<usize>()
            .ok()
            .filter(|&n| n >= 1)
            .and_then(|n| self.steps.get(n - 1))
            .ok_or_else(|| format!("step {n} has not run before this one"))
    }

    fn expression(&mut self, field: u16, expr: &str) -> Result<String, String> {
        if let Some(name) = expr.strip_prefix("var.") {
            return self.var(name);
        }
        if let Some(arg) = expr.strip_prefix("luhn:") {
            let bin = match arg.strip_prefix("var.") {
                Some(name) => self.var(name)?.chars().take(6).collect(),
                None => arg.to_string(),
            };
            if bin.is_empty() || bin.len() > 11 || !bin.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("{{{expr}}}: {bin:?} is not a BIN"));
            }
            return Ok(self.generator.card(&bin));
        }
        if let Some(arg) = expr.strip_prefix("id11:") {
            let id = match arg.strip_prefix("var.") {
                Some(name) => self.var(name)?,
                None => arg.to_string(),
            };
            if id.len() > 11 || !id.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!(
                    "{{{expr}}}: {id:?} is not an institution id (1 to 11 digits)"
                ));
            }
            return Ok(format!("{id:0>11}"));
        }
        if let Some(n) = expr.strip_prefix("original:") {
            let request = &self.step(n)?.request;
            return original_data(request);
        }
        if let Some(reference) = expr.strip_prefix("step") {
            let mut parts = reference.splitn(3, '.');
            let (n, side, number) = (parts.next(), parts.next(), parts.next());
            let (Some(n), Some(side), Some(number)) = (n, side, number) else {
                return Err(format!(
                    "{{{expr}}}: write stepN.request.F or stepN.answer.F"
                ));
            };
            let number: u16 = number
                .parse()
                .map_err(|_| format!("{{{expr}}}: {number:?} is not a field number"))?;
            let record = self.step(n)?;
            let message = match side {
                "request" => Some(&record.request),
                "answer" => record.answer.as_ref(),
                _ => return Err(format!("{{{expr}}}: request or answer, not {side:?}")),
            }
            .ok_or_else(|| format!("step {n} has no answer"))?;
            return message
                .get_str(number)
                .map(str::to_string)
                .ok_or_else(|| format!("step {n}'s {side} has no field {number}"));
        }
        match expr {
            "now" => {
                let format = match field {
                    7 => "%m%d%H%M%S",
                    12 => "%H%M%S",
                    13 | 15 => "%m%d",
                    _ => return Err(format!("{{now}} has no format for field {field} (7, 12, 13, 15)")),
                };
                Ok(self.now.format(format).to_string())
            }
            "stan" => Ok(self.generator.stan()),
            "rrn" => Ok(self.generator.rrn()),
            _ => Err(format!("{{{expr}}} is not an expression (var.NAME, now, stan, rrn, luhn:BIN, stepN.request.F, stepN.answer.F, original:N, id11:ID)")),
        }
    }
}

/// Field 90 naming `original`: MTI, F11, F7, F32 and F33, the last two
/// right-justified and zero-filled to 11 digits.
pub fn original_data(original: &Message) -> Result<String, String> {
    let get = |f: u16| original.get_str(f).unwrap_or("");
    let padded = |v: &str| format!("{v:0>11}");
    let (stan, f7) = (get(11), get(7));
    if stan.len() != 6 || f7.len() != 10 {
        return Err("field 90 needs the original's F11 (6 digits) and F7 (10 digits)".into());
    }
    Ok(format!(
        "{}{stan}{f7}{}{}",
        original.mti_str(),
        padded(get(32)),
        padded(get(33))
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    #[test]
    fn expressions_render_in_place() {
        let vars = BTreeMap::from([("wallet".to_string(), "48020000".to_string())]);
        let mut freeze = Message::new(*b"0100");
        freeze.set(7, &b"1202040506"[..]);
        freeze.set(11, &b"000123"[..]);
        freeze.set(32, &b"48020000"[..]);
        let steps = [StepRecord {
            request: freeze,
            answer: None,
        }];
        let mut generator = Generator::new(42);
        let mut scope = Scope {
            vars: &vars,
            steps: &steps,
            generator: &mut generator,
            now: NaiveDate::from_ymd_opt(2026, 12, 2)
                .unwrap()
                .and_hms_opt(4, 5, 6)
                .unwrap(),
        };
        assert_eq!(scope.render(32, "{var.wallet}").unwrap(), "48020000");
        assert_eq!(scope.render(7, "{now}").unwrap(), "1202040506");
        assert_eq!(scope.render(13, "{now}").unwrap(), "1202");
        assert_eq!(
            scope.render(90, "{original:1}").unwrap(),
            "010000012312020405060004802000000000000000"
        );
        assert_eq!(scope.render(11, "{step1.request.11}").unwrap(), "000123");
        assert_eq!(
            scope.render(90, "{id11:var.wallet}").unwrap(),
            "00048020000"
        );
        let a = scope.render(11, "{stan}").unwrap();
        let b = scope.render(11, "{stan}").unwrap();
        assert_ne!(a, b);
        let card = scope.render(2, "{luhn:622202}").unwrap();
        assert_eq!(card.len(), 16);
        assert!(card.starts_with("622202"));
        assert!(iso8583::fields::luhn_valid(card.as_bytes()), "{card}");
        assert!(scope
            .render(2, "{step1.answer.2}")
            .unwrap_err()
            .contains("no answer"));
        assert!(scope
            .render(2, "{var.nope}")
            .unwrap_err()
            .contains("--var nope="));
        assert!(scope.render(2, "{now").unwrap_err().contains("without"));
    }
}

//! What a replay prints: a line (or a JSON object) per request as its
//! outcome is known, a summary at the end, and a JUnit report for CI.
//! Values are shown as `capture decode` shows them: masked unless asked.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use capture::replay::{Difference, Part};
use hdrhistogram::Histogram;
use iso8583::{Message, Spec};
use serde_json::{json, Map, Value};

use super::engine::{Outcome, Totals, Verdict};
use crate::cli::capture::timestamp;
use crate::cli::render;

/// Counts by verdict and the latencies seen, for the summary.
pub struct Tally {
    /// Requests replayed (outcomes of answers to none not counted).
    pub requests: u64,
    /// Outcomes: one per request, one per answer to none.
    pub outcomes: u64,
    pub same: u64,
    pub differs: u64,
    pub missing: u64,
    pub extra: u64,
    pub errors: u64,
    latency_us: Histogram<u64>,
    captured_latency_us: Histogram<u64>,
}

impl Default for Tally {
    fn default() -> Self {
        let histogram =
            || Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds");
        Tally {
            requests: 0,
            outcomes: 0,
            same: 0,
            differs: 0,
            missing: 0,
            extra: 0,
            errors: 0,
            latency_us: histogram(),
            captured_latency_us: histogram(),
        }
    }
}

impl Tally {
    pub fn add(&mut self, outcome: &Outcome) {
        self.outcomes += 1;
        self.requests += u64::from(outcome.number.is_some());
        match outcome.verdict {
            Verdict::Same => self.same += 1,
            Verdict::Differs(_) => self.differs += 1,
            Verdict::Missing(_) => self.missing += 1,
            Verdict::Extra => self.extra += 1,
            Verdict::Error(_) => self.errors += 1,
        }
        if let Some(us) = outcome.latency_us {
            self.latency_us.saturating_record(us);
        }
        if let (Some(us), Some(_)) = (outcome.captured_latency_us, &outcome.actual) {
            self.captured_latency_us.saturating_record(us);
        }
    }

    pub fn failed(&self) -> bool {
        self.differs + self.missing + self.extra + self.errors > 0
    }
}

pub fn verdict_name(verdict: &Verdict) -> &'static str {
    match verdict {
        Verdict::Same => "same",
        Verdict::Differs(_) => "differs",
        Verdict::Missing(_) => "missing",
        Verdict::Extra => "extra",
        Verdict::Error(_) => "error",
    }
}

fn part_name(part: Part) -> String {
    match part {
        Part::Mti => "mti".to_string(),
        Part::Field(n) => n.to_string(),
    }
}

fn value_text(spec: &Spec, part: Part, value: Option<&[u8]>, unmask: bool) -> Option<String> {
    value.map(|v| match part {
        Part::Mti => String::from_utf8_lossy(v).into_owned(),
        Part::Field(n) => render::field_text(spec, n, v, unmask),
    })
}

fn brief(spec: &Spec, msg: &Message, unmask: bool) -> String {
    let mut text = msg.mti_str().to_string();
    for number in [11, 2, 39] {
        if let Some(value) = msg.get(number) {
            text.push_str(&format!(
                " {number}={}",
                render::field_text(spec, number, value, unmask)
            ));
        }
    }
    text
}

fn ms(us: u64) -> String {
    format!("{}.{:03} ms", us / 1000, us % 1000)
}

/// One outcome for people: a line, and one more per difference.
pub fn text(spec: &Spec, outcome: &Outcome, unmask: bool) -> String {
    let what = match (&outcome.request, &outcome.actual) {
        (Some(request), _) => brief(spec, request, unmask),
        (None, Some(actual)) => format!("answer {}", brief(spec, actual, unmask)),
        (None, None) => "answer".to_string(),
    };
    let mut line = match outcome.number {
        Some(n) => format!("#{n} conn {} {what}:", outcome.conn),
        None => format!("conn {} {what}:", outcome.conn),
    };
    let timing = |line: &mut String| {
        if let Some(us) = outcome.latency_us {
            line.push_str(&format!(" in {}", ms(us)));
            if let Some(captured) = outcome.captured_latency_us {
                line.push_str(&format!(" (captured {})", ms(captured)));
            }
        }
    };
    match &outcome.verdict {
        Verdict::Same => {
            line.push_str(" same");
            if outcome.actual.is_none() {
                line.push_str(" (no answer, as captured)");
            }
            timing(&mut line);
        }
        Verdict::Differs(found) => {
            line.push_str(" differs");
            timing(&mut line);
            for d in found {
                line.push_str(&format!("\n    {}", difference_text(spec, d, unmask)));
            }
        }
        Verdict::Missing(reason) => {
            line.push_str(&format!(" missing answer ({reason})"));
            if let Some(expected) = &outcome.expected {
                line.push_str(&format!("; captured {}", brief(spec, expected, unmask)));
            }
        }
        Verdict::Extra => {
            match outcome.number {
                Some(_) => line.push_str(" extra answer (the capture has none)"),
                None => line.push_str(" extra answer (to no request sent)"),
            }
            if let (Some(_), Some(actual)) = (&outcome.request, &outcome.actual) {
                line.push_str(&format!(": {}", brief(spec, actual, unmask)));
            }
            timing(&mut line);
        }
        Verdict::Error(reason) => line.push_str(&format!(" error: {reason}")),
    }
    line
}

fn difference_text(spec: &Spec, d: &Difference, unmask: bool) -> String {
    let show = |v: Option<&[u8]>| match value_text(spec, d.part, v, unmask) {
        Some(text) => format!("{text:?}"),
        None => "absent".to_string(),
    };
    let name = match d.part {
        Part::Mti => "MTI".to_string(),
        Part::Field(n) => format!("field {n}"),
    };
    format!(
        "{name}: captured {}, now {}",
        show(d.expected.as_deref()),
        show(d.actual.as_deref())
    )
}

/// One outcome for machines.
pub fn json(spec: &Spec, outcome: &Outcome, unmask: bool) -> Value {
    let mut object = Map::new();
    if let Some(n) = outcome.number {
        object.insert("number".into(), n.into());
    }
    object.insert("conn".into(), outcome.conn.into());
    if let Some(packet) = outcome.packet {
        object.insert("packet".into(), packet.into());
    }
    if let Some(ts) = outcome.ts_ns {
        object.insert("ts".into(), timestamp(ts).into());
    }
    object.insert("result".into(), verdict_name(&outcome.verdict).into());
    let message = |msg: &Message| json!({ "mti": msg.mti_str(), "fields": render::json_fields(spec, msg, unmask) });
    if let Some(request) = &outcome.request {
        object.insert("request".into(), message(request));
    }
    if let Some(expected) = &outcome.expected {
        object.insert("captured_answer".into(), message(expected));
    }
    if let Some(actual) = &outcome.actual {
        object.insert("answer".into(), message(actual));
    }
    if let Some(us) = outcome.latency_us {
        object.insert("latency_us".into(), us.into());
    }
    if let Some(us) = outcome.captured_latency_us {
        object.insert("captured_latency_us".into(), us.into());
    }
    match &outcome.verdict {
        Verdict::Differs(found) => {
            let list: Vec<Value> = found
                .iter()
                .map(|d| {
                    json!({
                        "field": part_name(d.part),
                        "captured": value_text(spec, d.part, d.expected.as_deref(), unmask),
                        "now": value_text(spec, d.part, d.actual.as_deref(), unmask),
                    })
                })
                .collect();
            object.insert("differences".into(), list.into());
        }
        Verdict::Missing(reason) | Verdict::Error(reason) => {
            object.insert("reason".into(), reason.as_str().into());
        }
        Verdict::Same | Verdict::Extra => {}
    }
    Value::Object(object)
}

fn quantiles(h: &Histogram<u64>) -> Option<(u64, u64, u64)> {
    (!h.is_empty()).then(|| (h.value_at_quantile(0.5), h.value_at_quantile(0.99), h.max()))
}

pub fn summary_json(tally: &Tally, totals: &Totals, seconds: f64) -> Value {
    let latency =
        |h| quantiles(h).map(|(p50, p99, max)| json!({ "p50": p50, "p99": p99, "max": max }));
    let s = &totals.script;
    json!({ "summary": {
        "requests": tally.requests,
        "same": tally.same,
        "differs": tally.differs,
        "missing": tally.missing,
        "extra": tally.extra,
        "errors": tally.errors,
        "seconds": (seconds * 1000.0).round() / 1000.0,
        "latency_us": latency(&tally.latency_us),
        "captured_latency_us": latency(&tally.captured_latency_us),
        "not_replayed": {
            "client_responses": s.client_responses,
            "server_requests": s.server_requests,
            "unparsable_frames": s.unparsable,
            "skipped_bytes": s.skipped_bytes,
            "captured_answers_without_request": s.answers_without_request,
        },
        "target_requests": totals.target_requests,
        "connections": totals.connections_opened,
        "capture_errors": totals.capture_errors,
        "result": if failed(tally, totals) { "differences" } else { "same" },
    }})
}

/// Whether the replay found a difference or could not replay all of the
/// capture.
pub fn failed(tally: &Tally, totals: &Totals) -> bool {
    tally.failed() || !totals.capture_errors.is_empty() || totals.script.unparsable > 0
}

pub fn summary_text(tally: &Tally, totals: &Totals, target: &str, seconds: f64) -> String {
    let s = &totals.script;
    let mut text = format!(
        "\nreplayed {} requests to {target} on {} connections in {seconds:.1} s\n  same {}, differs {}, missing {}, extra {}, errors {}\n",
        tally.requests,
        totals.connections_opened,
        tally.same,
        tally.differs,
        tally.missing,
        tally.extra,
        tally.errors,
    );
    text.push_str(&format!(
        "  not replayed: {} responses the client gave, {} requests the server sent, {} frames that do not parse, {} bytes skipped; {} captured answers to no request\n",
        s.client_responses, s.server_requests, s.unparsable, s.skipped_bytes, s.answers_without_request
    ));
    if totals.target_requests > 0 {
        text.push_str(&format!(
            "  requests the target sent (not compared): {}\n",
            totals.target_requests
        ));
    }
    for (name, h) in [
        ("now", &tally.latency_us),
        ("captured", &tally.captured_latency_us),
    ] {
        if let Some((p50, p99, max)) = quantiles(h) {
            text.push_str(&format!(
                "  latency {name}: p50 {}, p99 {}, max {}\n",
                ms(p50),
                ms(p99),
                ms(max)
            ));
        }
    }
    for error in &totals.capture_errors {
        text.push_str(&format!("  capture error: {error}\n"));
    }
    text.push_str(if failed(tally, totals) {
        "result: DIFFERENCES\n"
    } else {
        "result: same\n"
    });
    text
}

/// A JUnit XML report written as the replay goes: test cases to a file
/// beside the report, then the report with its counts around them, so
/// memory does not grow with the capture.
pub struct Junit {
    path: PathBuf,
    cases: BufWriter<tempfile::NamedTempFile>,
    name: String,
}

impl Junit {
    pub fn create(path: &Path, name: String) -> anyhow::Result<Self> {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let cases = tempfile::NamedTempFile::new_in(dir)
            .map_err(|e| anyhow::anyhow!("creating the JUnit report in {}: {e}", dir.display()))?;
        Ok(Junit {
            path: path.to_path_buf(),
            cases: BufWriter::new(cases),
            name,
        })
    }

    pub fn add(&mut self, spec: &Spec, outcome: &Outcome, unmask: bool) -> std::io::Result<()> {
        let name = match (outcome.number, &outcome.request) {
            (Some(n), Some(request)) => format!(
                "#{n} {} 11={}",
                request.mti_str(),
                request.get_str(11).unwrap_or("")
            ),
            _ => "answer to no request".to_string(),
        };
        let seconds = outcome.latency_us.unwrap_or(0) as f64 / 1e6;
        write!(
            self.cases,
            "    <testcase classname=\"conn {}\" name=\"{}\" time=\"{seconds:.6}\"",
            outcome.conn,
            escape(&name)
        )?;
        match &outcome.verdict {
            Verdict::Same => writeln!(self.cases, "/>"),
            Verdict::Error(reason) => writeln!(
                self.cases,
                ">\n      <error message=\"{}\"/>\n    </testcase>",
                escape(reason)
            ),
            verdict => writeln!(
                self.cases,
                ">\n      <failure message=\"{}\" type=\"{}\">{}</failure>\n    </testcase>",
                escape(verdict_name(verdict)),
                verdict_name(verdict),
                escape(&text(spec, outcome, unmask))
            ),
        }
    }

    pub fn finish(self, tally: &Tally, seconds: f64) -> anyhow::Result<()> {
        let cases = self
            .cases
            .into_inner()
            .map_err(|e| anyhow::anyhow!("writing the JUnit report: {}", e.error()))?;
        let mut out = BufWriter::new(File::create(&self.path).map_err(|e| {
            anyhow::anyhow!("creating the JUnit report {}: {e}", self.path.display())
        })?);
        let failures = tally.differs + tally.missing + tally.extra;
        writeln!(out, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>")?;
        writeln!(
            out,
            "<testsuites tests=\"{}\" failures=\"{failures}\" errors=\"{}\" time=\"{seconds:.3}\">",
            tally.outcomes, tally.errors
        )?;
        writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"{}\" time=\"{seconds:.3}\">",
            escape(&self.name),
            tally.outcomes,
            tally.errors
        )?;
        std::io::copy(&mut File::open(cases.path())?, &mut out)?;
        writeln!(out, "  </testsuite>\n</testsuites>")?;
        out.flush()?;
        Ok(())
    }
}

/// Text for an XML attribute or element.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            c if (c as u32) < 0x20 && c != '\t' => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

//! `switchboard conform SUITE --target HOST:PORT`: a conformance suite run
//! against a host, a line per case, a summary, JSON and JUnit reports.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Args;
use conform::{CaseResult, RunOptions, Runner, Status, Suite};
use iso8583::framing::FramingConfig;
use iso8583::Spec;
use serde_json::json;

#[derive(Args, Debug)]
pub struct ConformArgs {
    /// A built-in suite (bank-host, wallet) or the path of a suite file.
    suite: String,
    /// The host under test.
    #[arg(long, required_unless_present_any = ["list", "list_vars"])]
    target: Option<String>,
    /// The framing to the host; the suite's (ascii4 for the shipped ones) when not given.
    #[arg(long)]
    framing: Option<FramingConfig>,
    /// A built-in spec name or the path of a spec file; the suite's when not given.
    #[arg(long)]
    spec: Option<String>,
    /// A variable of the suite (repeatable): NAME=VALUE.
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
    /// Variables from a TOML file of NAME = "VALUE" lines.
    #[arg(long = "vars", value_name = "FILE")]
    vars_file: Option<PathBuf>,
    /// Test cards from a `pan,balance_minor` file (what `banksim
    /// --print-accounts` writes), by rank of balance.
    #[arg(long)]
    accounts: Option<PathBuf>,
    /// The host's state hook (a bank simulator's admin port): ledger checks
    /// read its books; without it they are skipped with a note.
    #[arg(long)]
    state: Option<String>,
    /// Only the test cases whose id contains PATTERN or that have it as a
    /// tag (repeatable); setup and teardown cases always run.
    #[arg(long = "case", value_name = "PATTERN")]
    cases: Vec<String>,
    /// List the cases and stop.
    #[arg(long)]
    list: bool,
    /// List the variables the suite needs and stop.
    #[arg(long)]
    list_vars: bool,
    /// One JSON object per case, then one with the summary.
    #[arg(long)]
    json: bool,
    /// Also write a JUnit XML report here.
    #[arg(long)]
    junit: Option<PathBuf>,
}

pub fn run(args: ConformArgs) -> anyhow::Result<ExitCode> {
    let suite = Suite::load(&args.suite)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.list {
        for case in &suite.cases {
            let kind = format!("{:?}", case.kind).to_lowercase();
            writeln!(
                out,
                "{:<28} {:<8} [{}] {}",
                case.id,
                kind,
                case.tags.join(","),
                case.title
            )?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    if args.list_vars {
        for (name, var) in &suite.vars {
            let source = match (&var.default, var.account) {
                (_, Some(rank)) => format!("required, or --accounts #{rank}"),
                (Some(default), None) => format!("default {default}"),
                (None, None) => "required".to_string(),
            };
            writeln!(out, "{name:<14} {source:<26} {}", var.about)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let vars = variables(&suite, &args)?;
    let spec_name = args
        .spec
        .clone()
        .or_else(|| suite.spec.clone())
        .unwrap_or_else(|| "switchboard".into());
    let spec = Arc::new(Spec::load(&spec_name)?);
    let framing = match (&args.framing, &suite.framing) {
        (Some(framing), _) => framing.clone(),
        (None, Some(name)) => name
            .parse()
            .map_err(|e| anyhow::anyhow!("the suite's framing {name:?}: {e}"))?,
        (None, None) => FramingConfig::default(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let resolve = |what: &str, text: &str| {
        runtime
            .block_on(tokio::net::lookup_host(text))
            .ok()
            .and_then(|mut addrs| addrs.next())
            .with_context(|| format!("--{what} {text}: not a HOST:PORT"))
    };
    let target_text = args.target.clone().unwrap_or_default();
    let target = resolve("target", &target_text)?;
    let state = args
        .state
        .as_deref()
        .map(|s| resolve("state", s))
        .transpose()?;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id()).rotate_left(32);
    let options = RunOptions {
        target,
        framing,
        vars,
        state,
        seed,
    };
    let cases = suite.selected(&args.cases);
    if cases.iter().all(|c| c.kind != conform::CaseKind::Test) {
        bail!(
            "no case of {} matches {:?} (--list shows them)",
            suite.name,
            args.cases
        );
    }
    let mut runner = Runner::new(&suite, spec, options);
    let json = args.json;
    let mut write_error = None;
    let progress = super::progress::bar(
        cases.len() as u64,
        "{bar:30} {pos}/{len} cases  {msg}  {elapsed}",
        !json,
    );
    let (mut passed, mut not_passed) = (0, 0);
    let mut print = |result: &CaseResult| {
        let text = if json {
            case_json(result).to_string()
        } else {
            case_text(result)
        };
        let written = progress.suspend(|| writeln!(out, "{text}").and_then(|()| out.flush()));
        if let Err(e) = written {
            write_error.get_or_insert(e);
        }
        match result.status {
            Status::Pass => passed += 1,
            Status::Skipped => {}
            _ => not_passed += 1,
        }
        progress.inc(1);
        progress.set_message(format!("{passed} passed, {not_passed} not"));
    };
    let results = runtime.block_on(runner.run(&cases, &mut print));
    progress.finish_and_clear();
    if let Some(e) = write_error {
        return Err(e).context("writing the report");
    }
    let count = |status| results.iter().filter(|r| r.status == status).count();
    let failed = results.iter().any(|r| r.status != Status::Pass);
    let mut out = std::io::stdout().lock();
    if json {
        let summary = json!({ "summary": {
            "suite": suite.name,
            "target": target_text,
            "cases": results.len(),
            "passed": count(Status::Pass),
            "failed": count(Status::Fail),
            "timed_out": count(Status::Timeout),
            "errors": count(Status::Error),
            "skipped": count(Status::Skipped),
            "result": if failed { "fail" } else { "pass" },
        }});
        writeln!(out, "{summary}")?;
    } else {
        writeln!(
            out,
            "\n{} against {target_text}: {} cases, {} passed, {} failed, {} timed out, {} errors, {} skipped\nresult: {}",
            suite.name,
            results.len(),
            count(Status::Pass),
            count(Status::Fail),
            count(Status::Timeout),
            count(Status::Error),
            count(Status::Skipped),
            if failed { "FAIL" } else { "pass" }
        )?;
    }
    if let Some(path) = &args.junit {
        let xml = conform::junit::report(&suite.name, &results)
            .map_err(|e| anyhow::anyhow!("the JUnit report: {e}"))?;
        std::fs::write(path, xml).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The suite's variables: defaults, then --accounts, --vars, --var (the
/// later wins); every one the suite declares must end up set.
fn variables(suite: &Suite, args: &ConformArgs) -> anyhow::Result<BTreeMap<String, String>> {
    let mut vars: BTreeMap<String, String> = suite
        .vars
        .iter()
        .filter_map(|(name, var)| var.default.clone().map(|d| (name.clone(), d)))
        .collect();
    if let Some(path) = &args.accounts {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut accounts = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with("pan") {
                continue;
            }
            let (pan, balance) = line
                .split_once(',')
                .and_then(|(p, b)| Some((p.trim().to_string(), b.trim().parse::<i64>().ok()?)))
                .with_context(|| {
                    format!(
                        "{}:{}: not a `pan,balance_minor` line",
                        path.display(),
                        i + 1
                    )
                })?;
            accounts.push((pan, balance));
        }
        // Highest balance first; equal balances in the file's order.
        accounts.sort_by_key(|account| std::cmp::Reverse(account.1));
        for (name, var) in &suite.vars {
            if let Some((pan, _)) = var
                .account
                .and_then(|rank| accounts.get(rank.saturating_sub(1)))
            {
                vars.insert(name.clone(), pan.clone());
            }
        }
    }
    if let Some(path) = &args.vars_file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let table: BTreeMap<String, toml::Value> = toml::from_str(&text)
            .with_context(|| format!("{}: not a TOML table of NAME = \"VALUE\"", path.display()))?;
        for (name, value) in table {
            let value = match value {
                toml::Value::String(s) => s,
                other => other.to_string(),
            };
            vars.insert(name, value);
        }
    }
    for pair in &args.vars {
        let (name, value) = pair
            .split_once('=')
            .with_context(|| format!("--var {pair:?}: write NAME=VALUE"))?;
        vars.insert(name.trim().to_string(), value.to_string());
    }
    let missing: Vec<String> = suite
        .vars
        .iter()
        .filter(|(name, _)| !vars.contains_key(*name))
        .map(|(name, var)| format!("  {name}: {}", var.about))
        .collect();
    if !missing.is_empty() {
        bail!(
            "{} needs these variables (--var NAME=VALUE, --vars FILE{}):\n{}",
            suite.name,
            if suite.vars.values().any(|v| v.account.is_some()) {
                ", --accounts FILE"
            } else {
                ""
            },
            missing.join("\n")
        );
    }
    Ok(vars)
}

fn case_text(result: &CaseResult) -> String {
    let mut text = format!(
        "{:<7} {:<28} {} ({} ms)",
        result.status.name().to_uppercase(),
        result.id,
        result.title,
        result.duration.as_millis()
    );
    for failure in &result.failures {
        text.push_str(&format!("\n        {failure}"));
    }
    for note in &result.notes {
        text.push_str(&format!("\n        note: {note}"));
    }
    text
}

fn case_json(result: &CaseResult) -> serde_json::Value {
    json!({
        "case": result.id,
        "title": result.title,
        "kind": format!("{:?}", result.kind).to_lowercase(),
        "status": result.status.name(),
        "failures": result.failures,
        "notes": result.notes,
        "steps_run": result.steps_run,
        "duration_ms": result.duration.as_millis() as u64,
    })
}

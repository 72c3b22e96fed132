//! Running cases against a host: each case on a connection of its own,
//! steps in order, each answer waited for at most the step's timeout and
//! checked; the participant's books read through its state hook where a
//! step checks them.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use iso8583::framing::{frame_bytes, Frame, FrameCodec, FramingConfig};
use iso8583::mti::is_response;
use iso8583::{Message, Spec};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_util::codec::Decoder;

use crate::expect;
use crate::suite::{Case, CaseKind, Step, Suite};
use crate::template::{Generator, Scope, StepRecord};

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub target: SocketAddr,
    pub framing: FramingConfig,
    pub vars: BTreeMap<String, String>,
    /// Where the participant's books can be read (a bank simulator's admin
    /// port); ledger checks are skipped without it.
    pub state: Option<SocketAddr>,
    pub seed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pass,
    Fail,
    /// A step's answer did not come in time.
    Timeout,
    /// The case could not be run as written: no connection, a variable
    /// missing, a message that cannot be built.
    Error,
    /// Not run: a setup case failed.
    Skipped,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Timeout => "timeout",
            Status::Error => "error",
            Status::Skipped => "skipped",
        }
    }
}

#[derive(Debug, Clone)]
pub struct CaseResult {
    pub id: String,
    pub title: String,
    pub kind: CaseKind,
    pub status: Status,
    /// `step N (label): what went wrong`, masked.
    pub failures: Vec<String>,
    /// What was not checked, and why.
    pub notes: Vec<String>,
    pub steps_run: usize,
    pub duration: Duration,
}

/// A connection to the host, reading frames as they come.
struct Connection {
    stream: TcpStream,
    codec: FrameCodec,
    buf: BytesMut,
    framing: FramingConfig,
}

enum Received {
    Answer(Message),
    Nothing,
    Closed,
}

impl Connection {
    async fn open(
        target: SocketAddr,
        framing: &FramingConfig,
        wait: Duration,
    ) -> Result<Self, String> {
        let stream = match timeout(wait, TcpStream::connect(target)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(format!("connecting to {target}: {e}")),
            Err(_) => {
                return Err(format!(
                    "connecting to {target}: no connection within {} ms",
                    wait.as_millis()
                ))
            }
        };
        let _ = stream.set_nodelay(true);
        Ok(Connection {
            stream,
            codec: FrameCodec::new(framing.clone()),
            buf: BytesMut::with_capacity(4096),
            framing: framing.clone(),
        })
    }

    async fn send(&mut self, spec: &Spec, msg: &Message, wait: Duration) -> Result<(), String> {
        let body = iso8583::build_bytes(spec, msg)
            .map_err(|e| format!("the request cannot be built: {e}"))?;
        let frame = frame_bytes(&self.framing, &[], &body)
            .map_err(|e| format!("the request cannot be framed: {e}"))?;
        match timeout(wait, self.stream.write_all(&frame)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("writing to the host: {e}")),
            Err(_) => Err("writing to the host: not taken in time".into()),
        }
    }

    /// The next response within `wait`; requests the host sends on its own
    /// (an echo test) are passed over.
    async fn response(&mut self, spec: &Spec, wait: Duration) -> Result<Received, String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(Frame::Message { body, .. })) => {
                    let msg = iso8583::parse(spec, body)
                        .map_err(|e| format!("the answer does not parse: {e}"))?;
                    if is_response(msg.mti()) {
                        return Ok(Received::Answer(msg));
                    }
                    continue;
                }
                Ok(Some(Frame::KeepAlive)) => continue,
                Ok(None) => {}
                Err(e) => return Err(format!("the host's framing is broken: {e}")),
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return Ok(Received::Nothing),
                Ok(Ok(0)) => return Ok(Received::Closed),
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return Ok(Received::Closed),
            }
        }
    }
}

/// A card's balance and held amount, from the state hook.
type Books = HashMap<String, (i64, i64)>;

/// Reads the books through a bank simulator's admin port (`snapshot`).
async fn books(state: SocketAddr) -> Result<Books, String> {
    let read = async {
        let mut stream = TcpStream::connect(state).await.map_err(|e| e.to_string())?;
        stream
            .write_all(b"snapshot\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut line = String::new();
        BufReader::new(stream)
            .read_line(&mut line)
            .await
            .map_err(|e| e.to_string())?;
        let value: serde_json::Value = serde_json::from_str(&line).map_err(|e| e.to_string())?;
        let accounts = value["accounts"]
            .as_array()
            .ok_or("no accounts in the snapshot")?;
        Ok::<Books, String>(
            accounts
                .iter()
                .filter_map(|a| {
                    Some((
                        a["pan"].as_str()?.to_string(),
                        (a["balance_minor"].as_i64()?, a["held_minor"].as_i64()?),
                    ))
                })
                .collect(),
        )
    };
    timeout(Duration::from_secs(5), read)
        .await
        .map_err(|_| format!("the state hook {state} did not answer in 5 s"))?
        .map_err(|e| format!("the state hook {state}: {e}"))
}

pub struct Runner<'a> {
    suite: &'a Suite,
    spec: Arc<Spec>,
    options: RunOptions,
    generator: Generator,
}

/// How a case ended, with the step it ended at.
enum Stop {
    Fail(Vec<String>),
    Timeout(String),
    Error(String),
}

impl<'a> Runner<'a> {
    pub fn new(suite: &'a Suite, spec: Arc<Spec>, options: RunOptions) -> Self {
        let generator = Generator::new(options.seed);
        Runner {
            suite,
            spec,
            options,
            generator,
        }
    }

    /// Runs `cases` (setup first, teardown last, as [`Suite::selected`]
    /// orders them), reporting each as it ends.
    pub async fn run(
        &mut self,
        cases: &[&Case],
        report: &mut dyn FnMut(&CaseResult),
    ) -> Vec<CaseResult> {
        let mut results = Vec::new();
        let mut failed_setup: Option<String> = None;
        for case in cases {
            let result = match (&failed_setup, case.kind) {
                (Some(setup), CaseKind::Test) => CaseResult {
                    id: case.id.clone(),
                    title: case.title.clone(),
                    kind: case.kind,
                    status: Status::Skipped,
                    failures: Vec::new(),
                    notes: vec![format!("not run: the setup case {setup} did not pass")],
                    steps_run: 0,
                    duration: Duration::ZERO,
                },
                _ => self.case(case).await,
            };
            if case.kind == CaseKind::Setup && result.status != Status::Pass {
                failed_setup.get_or_insert(case.id.clone());
            }
            report(&result);
            results.push(result);
        }
        results
    }

    fn step_timeout(&self, step: &Step) -> Duration {
        Duration::from_millis(step.timeout_ms.unwrap_or(self.suite.timeout_ms))
    }

    async fn case(&mut self, case: &Case) -> CaseResult {
        let started = Instant::now();
        let mut notes = Vec::new();
        let mut records: Vec<StepRecord> = Vec::new();
        let mut connection: Option<Connection> = None;
        let needs_books = case.steps.iter().any(|s| !s.ledger.is_empty());
        let opening_books = match (needs_books, self.options.state) {
            (true, Some(state)) => match books(state).await {
                Ok(books) => Some(books),
                Err(e) => {
                    notes.push(format!("ledger checks skipped: {e}"));
                    None
                }
            },
            (true, None) => {
                notes.push("ledger checks skipped: the host has no state hook (--state)".into());
                None
            }
            (false, _) => None,
        };
        let mut stop = None;
        for (i, step) in case.steps.iter().enumerate() {
            let label = format!(
                "step {} ({})",
                i + 1,
                step.name
                    .clone()
                    .unwrap_or_else(|| step_mti(step, &records))
            );
            let outcome = self
                .step(step, &mut records, &mut connection, opening_books.as_ref())
                .await;
            if step.disconnect {
                connection = None;
            }
            match outcome {
                Ok(()) => {}
                Err(Stop::Fail(failures)) => {
                    stop = Some(Stop::Fail(
                        failures
                            .into_iter()
                            .map(|f| format!("{label}: {f}"))
                            .collect(),
                    ));
                }
                Err(Stop::Timeout(why)) => stop = Some(Stop::Timeout(format!("{label}: {why}"))),
                Err(Stop::Error(why)) => stop = Some(Stop::Error(format!("{label}: {why}"))),
            }
            if stop.is_some() {
                break;
            }
        }
        let (status, failures) = match stop {
            None => (Status::Pass, Vec::new()),
            Some(Stop::Fail(failures)) => (Status::Fail, failures),
            Some(Stop::Timeout(why)) => (Status::Timeout, vec![why]),
            Some(Stop::Error(why)) => (Status::Error, vec![why]),
        };
        CaseResult {
            id: case.id.clone(),
            title: case.title.clone(),
            kind: case.kind,
            status,
            failures,
            notes,
            steps_run: records.len(),
            duration: started.elapsed(),
        }
    }

    fn build(&mut self, step: &Step, records: &[StepRecord]) -> Result<Message, String> {
        let mut msg = match (step.resend, &step.send) {
            (Some(n), _) => {
                let mut msg = records[n - 1].request.clone();
                if let Some(mti) = &step.mti {
                    msg.set_mti(mti_of(mti)?);
                }
                msg
            }
            (None, Some(mti)) => Message::new(mti_of(mti)?),
            (None, None) => unreachable!("checked when the suite was loaded"),
        };
        let mut scope = Scope {
            vars: &self.options.vars,
            steps: records,
            generator: &mut self.generator,
            now: chrono::Utc::now().naive_utc(),
        };
        for (field, template) in &step.fields {
            let field: u16 = field
                .parse()
                .map_err(|_| format!("{field:?} is not a field number"))?;
            let value = scope
                .render(field, template)
                .map_err(|e| format!("field {field}: {e}"))?;
            msg.set(field, value.into_bytes());
        }
        for field in &step.omit {
            msg.remove(*field);
        }
        Ok(msg)
    }

    async fn step(
        &mut self,
        step: &Step,
        records: &mut Vec<StepRecord>,
        connection: &mut Option<Connection>,
        opening_books: Option<&Books>,
    ) -> Result<(), Stop> {
        let wait = self.step_timeout(step);
        if let Some(copies) = step.concurrent {
            return self.concurrent(step, copies, records, wait).await;
        }
        let request = self.build(step, records).map_err(Stop::Error)?;
        if connection.is_none() {
            *connection = Some(
                Connection::open(self.options.target, &self.options.framing, wait)
                    .await
                    .map_err(Stop::Error)?,
            );
        }
        let conn = connection.as_mut().expect("opened above");
        conn.send(&self.spec, &request, wait)
            .await
            .map_err(Stop::Error)?;
        if let Some(quiet_ms) = step.no_answer_ms {
            let got = conn
                .response(&self.spec, Duration::from_millis(quiet_ms))
                .await
                .map_err(Stop::Error)?;
            records.push(StepRecord {
                request,
                answer: None,
            });
            return match got {
                Received::Answer(answer) => Err(Stop::Fail(vec![format!(
                    "expected no answer within {quiet_ms} ms, got {} 39={}",
                    answer.mti_str(),
                    answer.get_str(39).unwrap_or("absent")
                )])),
                Received::Nothing => Ok(()),
                Received::Closed => {
                    *connection = None;
                    Ok(())
                }
            };
        }
        let answer = match conn.response(&self.spec, wait).await.map_err(Stop::Error)? {
            Received::Answer(answer) => answer,
            Received::Nothing => {
                records.push(StepRecord {
                    request,
                    answer: None,
                });
                return Err(Stop::Timeout(format!(
                    "no answer within {} ms",
                    wait.as_millis()
                )));
            }
            Received::Closed => {
                *connection = None;
                records.push(StepRecord {
                    request,
                    answer: None,
                });
                return Err(Stop::Error(
                    "the host closed the connection without answering".into(),
                ));
            }
        };
        let earlier = step
            .expect
            .same_as
            .and_then(|n| records[n - 1].answer.clone());
        let mut scope = Scope {
            vars: &self.options.vars,
            steps: records,
            generator: &mut self.generator,
            now: chrono::Utc::now().naive_utc(),
        };
        let mut failures = expect::check(
            &self.spec,
            &step.expect,
            &request,
            &answer,
            earlier.as_ref(),
            &mut scope,
        );
        if step.expect.same_as.is_some() && earlier.is_none() {
            failures.push("the earlier step has no answer to compare with".into());
        }
        records.push(StepRecord {
            request,
            answer: Some(answer),
        });
        failures.extend(self.ledger(step, records, opening_books).await);
        if failures.is_empty() {
            Ok(())
        } else {
            Err(Stop::Fail(failures))
        }
    }

    async fn ledger(
        &mut self,
        step: &Step,
        records: &[StepRecord],
        opening: Option<&Books>,
    ) -> Vec<String> {
        let (Some(opening), Some(state)) = (opening, self.options.state) else {
            return Vec::new();
        };
        if step.ledger.is_empty() {
            return Vec::new();
        }
        let now = match books(state).await {
            Ok(now) => now,
            Err(e) => return vec![e],
        };
        let mut failures = Vec::new();
        for check in &step.ledger {
            let mut scope = Scope {
                vars: &self.options.vars,
                steps: records,
                generator: &mut self.generator,
                now: chrono::Utc::now().naive_utc(),
            };
            let card = match scope.render(2, &check.card) {
                Ok(card) => card,
                Err(e) => {
                    failures.push(format!("ledger card: {e}"));
                    continue;
                }
            };
            let (Some(was), Some(is)) = (opening.get(&card), now.get(&card)) else {
                failures.push(format!(
                    "card {}: not in the host's books",
                    iso8583::mask::mask_pan(&card)
                ));
                continue;
            };
            let change = (is.0 - was.0, is.1 - was.1);
            failures.extend(expect::ledger(check, &card, change, &mut scope));
        }
        failures
    }

    /// `copies` requests at once, each on its own connection.
    async fn concurrent(
        &mut self,
        step: &Step,
        copies: usize,
        records: &mut Vec<StepRecord>,
        wait: Duration,
    ) -> Result<(), Stop> {
        let mut requests = Vec::with_capacity(copies);
        for _ in 0..copies {
            requests.push(self.build(step, records).map_err(Stop::Error)?);
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (i, request) in requests.iter().cloned().enumerate() {
            let (spec, target, framing) = (
                self.spec.clone(),
                self.options.target,
                self.options.framing.clone(),
            );
            tasks.spawn(async move {
                let mut conn = Connection::open(target, &framing, wait).await?;
                conn.send(&spec, &request, wait).await?;
                let got = conn.response(&spec, wait).await?;
                Ok::<_, String>((i, got))
            });
        }
        let mut answers: Vec<Option<Message>> = vec![None; copies];
        let mut failures = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok((i, Received::Answer(answer)))) => answers[i] = Some(answer),
                Ok(Ok((i, _))) => failures.push(format!(
                    "copy {}: no answer within {} ms",
                    i + 1,
                    wait.as_millis()
                )),
                Ok(Err(e)) => return Err(Stop::Error(e)),
                Err(e) => return Err(Stop::Error(format!("a copy's task failed: {e}"))),
            }
        }
        let mut tally: BTreeMap<String, usize> = BTreeMap::new();
        for (i, (request, answer)) in requests.iter().zip(&answers).enumerate() {
            let Some(answer) = answer else { continue };
            *tally
                .entry(answer.get_str(39).unwrap_or("absent").to_string())
                .or_default() += 1;
            let mut scope = Scope {
                vars: &self.options.vars,
                steps: records,
                generator: &mut self.generator,
                now: chrono::Utc::now().naive_utc(),
            };
            for failure in
                expect::check(&self.spec, &step.expect, request, answer, None, &mut scope)
            {
                failures.push(format!("copy {}: {failure}", i + 1));
            }
        }
        if !step.expect.tally.is_empty() && tally != step.expect.tally {
            failures.push(format!(
                "answers by field 39: expected {}, got {}",
                counts(&step.expect.tally),
                counts(&tally)
            ));
        }
        records.push(StepRecord {
            request: requests.swap_remove(0),
            answer: answers.swap_remove(0),
        });
        if failures.is_empty() {
            Ok(())
        } else {
            Err(Stop::Fail(failures))
        }
    }
}

fn counts(tally: &BTreeMap<String, usize>) -> String {
    let parts: Vec<String> = tally
        .iter()
        .map(|(code, n)| format!("{code} × {n}"))
        .collect();
    parts.join(", ")
}

fn mti_of(text: &str) -> Result<iso8583::Mti, String> {
    let bytes = text.as_bytes();
    if bytes.len() != 4 || !bytes.iter().all(u8::is_ascii_digit) {
        return Err(format!("{text:?} is not an MTI"));
    }
    Ok([bytes[0], bytes[1], bytes[2], bytes[3]])
}

fn step_mti(step: &Step, records: &[StepRecord]) -> String {
    match (&step.send, step.resend, &step.mti) {
        (Some(mti), _, _) => mti.clone(),
        (_, Some(_), Some(mti)) => format!("resend as {mti}"),
        (_, Some(n), None) => records.get(n - 1).map_or_else(
            || format!("resend of step {n}"),
            |r| format!("resend of step {n}'s {}", r.request.mti_str()),
        ),
        _ => String::new(),
    }
}

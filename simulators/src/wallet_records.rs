//! A wallet's own records: every request it sent and the answer it got (or
//! that it got none), kept in memory and, when asked, appended to a file, so
//! the wallet can reconcile with the switch's clearing file at the end of the
//! day (`clearing::wallet`, `walletsim export`).
//!
//! File format: one exchange per line, `<request> <answer>`, each the message
//! bytes in hex (without framing), `-` for no answer.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;

use iso8583::codec::{build_bytes, parse, Message};
use iso8583::spec::Spec;

/// One exchange as the wallet saw it.
#[derive(Clone, Debug)]
pub struct WalletRecord {
    pub request: Message,
    /// `None`: no answer came (timeout, connection lost).
    pub answer: Option<Message>,
}

/// Records of one or more wallet connections: kept in memory ([`Self::new`])
/// or appended to a file ([`Self::appending_to`], for long runs).
#[derive(Default)]
pub struct WalletRecords {
    records: Mutex<Vec<WalletRecord>>,
    file: Mutex<Option<BufWriter<File>>>,
}

/// A records file that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    #[error("cannot read {path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("line {line}: {reason}")]
    Format { line: usize, reason: String },
}

impl WalletRecords {
    /// Records kept in memory only.
    pub fn new() -> Self {
        WalletRecords::default()
    }

    /// Records appended to `path` (created or extended), one line each,
    /// flushed as they are written, and not kept in memory: read them back
    /// with [`Self::load`].
    pub fn appending_to(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(WalletRecords {
            records: Mutex::default(),
            file: Mutex::new(Some(BufWriter::new(file))),
        })
    }

    /// Keeps one exchange.
    pub fn record(&self, spec: &Spec, request: &Message, answer: Option<&Message>) {
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(file) = file.as_mut() {
            let hex_of = |m: &Message| {
                build_bytes(spec, m)
                    .map(hex::encode)
                    .unwrap_or_else(|_| "-".into())
            };
            let answer_hex = answer.map_or_else(|| "-".to_string(), hex_of);
            let written =
                writeln!(file, "{} {answer_hex}", hex_of(request)).and_then(|_| file.flush());
            if let Err(e) = written {
                tracing::error!(error = %e, "wallet record not written");
            }
            return;
        }
        drop(file);
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(WalletRecord {
                request: request.clone(),
                answer: answer.cloned(),
            });
    }

    /// Every exchange kept in memory, in the order recorded.
    pub fn all(&self) -> Vec<WalletRecord> {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reads a records file.
    pub fn load(path: &Path, spec: &Spec) -> Result<Vec<WalletRecord>, RecordsError> {
        let io = |error| RecordsError::Io {
            path: path.display().to_string(),
            error,
        };
        let file = File::open(path).map_err(io)?;
        let mut records = Vec::new();
        for (i, line) in BufReader::new(file).lines().enumerate() {
            let line = line.map_err(io)?;
            if line.trim().is_empty() {
                continue;
            }
            let bad = |reason: String| RecordsError::Format {
                line: i + 1,
                reason,
            };
            let message = |what: &str, text: &str| {
                let bytes = hex::decode(text).map_err(|e| bad(format!("{what}: not hex: {e}")))?;
                parse(spec, bytes.into()).map_err(|e| bad(format!("{what}: {e}")))
            };
            let (request, answer) = line
                .split_once(' ')
                .ok_or_else(|| bad("expected `<request hex> <answer hex or ->`".into()))?;
            records.push(WalletRecord {
                request: message("request", request.trim())?,
                answer: match answer.trim() {
                    "-" => None,
                    text => Some(message("answer", text)?),
                },
            });
        }
        Ok(records)
    }
}

//! How the binaries log: text for people, JSON lines for collectors, always
//! on stderr, with the level from `RUST_LOG` or the binary's default.
//!
//! Text is coloured only when stderr is a terminal: a file, a pipe or a
//! journal gets no ANSI escapes. Values from peers are escaped by the
//! formatter either way (control characters, line breaks), so a peer cannot
//! forge a log line. JSON lines carry the event's fields flattened, with the
//! current span (`span`) and every span it is in (`spans`), e.g. the wallet
//! connection a request came on.

use std::io::IsTerminal;
use std::str::FromStr;

/// `--log-format` and `[log] format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("{other:?} is not a log format: text or json")),
        }
    }
}

impl std::fmt::Display for LogFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// Installs the process's logger (once; later calls change nothing).
/// `default_level` applies when `RUST_LOG` is not set. Warnings and errors
/// are also kept in [`crate::recent_errors`] for the operator's page.
pub fn init(format: LogFormat, default_level: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let ring = crate::recent_errors::RecentErrorsLayer;
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .finish()
            .with(ring)
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .finish()
            .with(ring)
            .try_init(),
    };
}

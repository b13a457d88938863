//! What embedflow says on stderr: the log (tracing's events) and its own
//! lines beside it (notes, warnings, progress, the final error). As plain
//! text, or with `--log-format json` one JSON object per line, every line:
//! the events in tracing-subscriber's JSON shape (`timestamp`, `level`,
//! `fields.message` and the event's fields, `target`, `span`/`spans`) and
//! the lines in the same shape, so a log pipeline parses stderr line by line.

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};

/// Whether lines are JSON (set once, by [`init`]).
static JSON: AtomicBool = AtomicBool::new(false);

/// How stderr's lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Lines for people.
    #[default]
    Text,
    /// One JSON object per line, for log pipelines (Kubernetes, Loki, CloudWatch).
    Json,
}

/// What kind of line: its level, and the word a text line starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// "embedflow: …": something the user should know, not a fault.
    Note,
    /// "warning: …"
    Warning,
    /// "error: …": why the command failed.
    Error,
    /// "progress: …": the plain progress line.
    Progress,
    /// A line as it is (a step of a long computation).
    Plain,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::Note => "embedflow: ",
            Kind::Warning => "warning: ",
            Kind::Error => "error: ",
            Kind::Progress => "progress: ",
            Kind::Plain => "",
        }
    }

    fn level(self) -> &'static str {
        match self {
            Kind::Warning => "WARN",
            Kind::Error => "ERROR",
            Kind::Note | Kind::Progress | Kind::Plain => "INFO",
        }
    }

    fn target(self) -> &'static str {
        match self {
            Kind::Progress => "embedflow::progress",
            _ => "embedflow",
        }
    }
}

/// Sets up the log: `level` is the filter (RUST_LOG wins when set).
pub fn init(level: &str, format: LogFormat) {
    // The Delta library logs its own errors (with backtraces) before
    // returning them; embedflow says each once, in its words, so at the
    // default level they are not shown twice. --log or RUST_LOG shows them.
    let level = match level {
        "warn" => "warn,deltalake_core=off,delta_kernel=off,buoyant_kernel=off".to_string(),
        other => other.to_string(),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => {
            JSON.store(true, Ordering::Relaxed);
            builder.json().with_current_span(true).init()
        }
    }
}

/// Whether lines are JSON: a progress bar would not be.
pub fn is_json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// Writes one line to stderr, as text or as JSON (see the module).
pub fn emit(kind: Kind, message: fmt::Arguments<'_>) {
    let line = if is_json() {
        json_line(kind, &message.to_string())
    } else {
        format!("{}{message}", kind.prefix())
    };
    // One write of the whole line, so that threads' lines never interleave.
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// A line as tracing-subscriber's JSON formatter writes an event.
fn json_line(kind: Kind, message: &str) -> String {
    let mut timestamp = String::new();
    let _ = SystemTime.format_time(&mut Writer::new(&mut timestamp));
    serde_json::json!({
        "timestamp": timestamp,
        "level": kind.level(),
        "fields": {"message": message},
        "target": kind.target(),
    })
    .to_string()
}

/// `note!("…")`: "embedflow: …" on stderr (INFO in JSON).
#[macro_export]
macro_rules! note {
    ($($arg:tt)*) => { $crate::notice::emit($crate::notice::Kind::Note, format_args!($($arg)*)) };
}

/// `warning!("…")`: "warning: …" on stderr (WARN in JSON).
#[macro_export]
macro_rules! warning {
    ($($arg:tt)*) => { $crate::notice::emit($crate::notice::Kind::Warning, format_args!($($arg)*)) };
}

/// `error_line!("…")`: "error: …" on stderr (ERROR in JSON).
#[macro_export]
macro_rules! error_line {
    ($($arg:tt)*) => { $crate::notice::emit($crate::notice::Kind::Error, format_args!($($arg)*)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_line_has_the_shape_of_a_tracing_event() {
        let line = json_line(Kind::Warning, "a \"quoted\"\nsecond line");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["target"], "embedflow");
        assert_eq!(v["fields"]["message"], "a \"quoted\"\nsecond line");
        let ts = v["timestamp"].as_str().unwrap();
        assert!(ts.starts_with("20") && ts.ends_with('Z'), "{ts}");
        assert!(!line.contains('\n'), "one line: {line}");
    }
}

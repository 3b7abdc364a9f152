//! Logs and metrics. Logs are structured (`text` key=value or `json`) and
//! carry ids, sources and outcomes, never personal data or secrets;
//! metrics are rendered in Prometheus text at `/metrics`.
//!
//! A logged value may come from outside (a platform chooses its customer
//! ids): no value can forge a line or a terminal escape. The text format
//! escapes control characters in every field, JSON escapes them anyway, and
//! a panic is logged as one event of the format, not as raw lines.

use std::borrow::Cow;
use std::fmt;
use std::io::IsTerminal;
use std::panic::PanicHookInfo;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing::field::Field;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::{Writer, debug_fn};

use crate::config::LogFormat;

/// Ingest latency buckets, in seconds: most acknowledgements take a
/// group commit, a few milliseconds.
const LATENCY_BUCKETS: [f64; 12] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];
const BATCH_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 512.0];
/// Delivery lag buckets, in seconds, from a change's commit to its
/// subscriber's answer: milliseconds when the dispatcher keeps up, hours
/// behind a subscriber that was down.
const LAG_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 60.0, 600.0, 3600.0, 36000.0,
];

/// The process-wide metrics recorder, installed on first use.
pub fn metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full("clientele_store_batch_size".into()), &BATCH_BUCKETS)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full("clientele_delivery_lag_seconds".into()), &LAG_BUCKETS)
                })
                .expect("bucket lists are not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed: /metrics will miss Clientele's own");
            }
            handle
        })
        .clone()
}

/// The crates of the outbound brokers' clients, whose trace logs hold
/// message frames.
const BROKER_CLIENTS: [&str; 4] = ["lapin", "amq_protocol", "async_nats", "redis"];

/// Logs to stderr, filtered by `RUST_LOG` (default `info`); panics are
/// logged too, as errors. The phone parser's own log is always off, whatever
/// `RUST_LOG` says: its trace lines name the numbers it reads.
pub fn init_logging(format: LogFormat) {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // The broker clients log messages whole: lapin warns of every message
    // RabbitMQ returns (its envelope with it), and they log frames at trace
    // level. Those are off, and the rest never below debug, so that no
    // customer's data reaches the log however verbose it is.
    filter = filter.add_directive("lapin::returned_messages=off".parse().expect("a valid directive"));
    // The phone parser's trace lines name the numbers it reads.
    filter = filter.add_directive("rlibphonenumber=off".parse().expect("a valid directive"));
    if filter.max_level_hint() == Some(tracing::level_filters::LevelFilter::TRACE) {
        for quiet in BROKER_CLIENTS {
            filter = filter.add_directive(format!("{quiet}=debug").parse().expect("a valid directive"));
        }
    }
    // Colours only for a person at a terminal, never into files or journald.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let installed = match format {
        LogFormat::Text => builder.fmt_fields(escaped_fields()).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if installed.is_ok() {
        std::panic::set_hook(Box::new(log_panic));
    }
}

/// The text format's fields: `name=value`, the message bare, as the
/// default format writes them, with control characters escaped.
fn escaped_fields() -> impl for<'w> FormatFields<'w> + 'static {
    debug_fn(|writer: &mut Writer<'_>, field: &Field, value: &dyn fmt::Debug| {
        let text = format!("{value:?}");
        let text = escape_controls(&text);
        match field.name() {
            "message" => write!(writer, "{text}"),
            name => write!(writer, "{name}={text}"),
        }
    })
    .delimited(" ")
}

/// `text` with each control character (CR, LF, ESC, …) written as its
/// Rust escape (`\r`, `\n`, `\u{1b}`).
fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    Cow::Owned(escaped)
}

/// The panic hook: the panic as one error event of the log's format,
/// rather than the default hook's raw lines on stderr.
fn log_panic(info: &PanicHookInfo<'_>) {
    let payload = info.payload();
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)");
    let backtrace = std::backtrace::Backtrace::capture();
    let backtrace = (backtrace.status() == std::backtrace::BacktraceStatus::Captured).then(|| backtrace.to_string());
    tracing::error!(
        panic = message,
        thread = std::thread::current().name(),
        location = info.location().map(ToString::to_string),
        backtrace,
        "a thread panicked"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_other_text_kept() {
        assert_eq!(escape_controls("shop:42 é"), "shop:42 é");
        assert_eq!(escape_controls("7\r\nINFO x\u{1b}[2J"), "7\\r\\nINFO x\\u{1b}[2J");
    }

    /// Set in the child process the test below runs.
    const CHILD: &str = "CLIENTELE_TEST_PANIC_CHILD";

    /// A panic's text, lines and all, once went to stderr raw, breaking a
    /// JSON log. Run in a child process (this test binary again), as the
    /// hook and the subscriber are the process's.
    #[test]
    fn a_panic_is_one_json_line_in_a_json_log() {
        if std::env::var_os(CHILD).is_some() {
            init_logging(LogFormat::Json);
            let _ = std::thread::Builder::new()
                .name("doomed".into())
                .spawn(|| panic!("first line\nsecond line"))
                .expect("a thread")
                .join();
            return;
        }
        let output = std::process::Command::new(std::env::current_exe().expect("this test binary"))
            .args([
                "--exact",
                "telemetry::tests::a_panic_is_one_json_line_in_a_json_log",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .env("RUST_BACKTRACE", "0")
            .output()
            .expect("the test binary runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<serde_json::Value> = stderr
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not a JSON line: {line:?} in\n{stderr}")))
            .collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert_eq!(lines[0]["panic"], "first line\nsecond line", "{stderr}");
        assert_eq!(lines[0]["thread"], "doomed", "{stderr}");
        assert_eq!(lines[0]["level"], "ERROR", "{stderr}");
    }
}

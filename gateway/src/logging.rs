//! Logging set-up for the binary: where logs go (stderr, never stdout,
//! which belongs to command output and to MCP over stdio), their format,
//! colours only when stderr is a terminal, and the cap that keeps message
//! payloads out of them. `--log-format json` (or `TOLLGATE_LOG_FORMAT`)
//! writes one flat JSON object per line.
//!
//! `RUST_LOG` chooses the levels. Whatever it says, the rmcp targets that
//! print whole MCP messages are capped below the level where they do so,
//! because those messages carry tool arguments and results: a
//! `tollgate.start_task` result holds a task token, which works as a bearer
//! credential. Found by reading rmcp 3.11 and by running at `trace`:
//!
//! - `rmcp::service`: every request (`debug`), every response (`debug`),
//!   every event (`trace`) and every notification (`info`);
//! - `rmcp::transport::streamable_http_server::tower`: every message
//!   (`trace`);
//! - `rmcp::transport::async_rw` (stdio): an unparsable line, verbatim
//!   (`debug`);
//! - `rmcp::transport::auth`: OAuth token answers (`debug`; client side,
//!   unused by the gateway, capped anyway).
//!
//! Setting `TOLLGATE_LOG_PAYLOADS=1` lifts the cap (debugging on a machine
//! whose logs nobody else reads): the payloads then appear in full.
//!
//! hyper 1.x logs nothing unless built with `hyper_unstable_tracing`;
//! reqwest, hyper-util and rustls log connection events, not headers; the
//! gateway serves HTTP/1 only (no h2). The `trace_logs` integration test
//! runs the real binary at `RUST_LOG=trace` and checks that no key, task
//! token or backend secret appears.
//!
//! With `serve --otlp-endpoint`, a second layer exports the call spans
//! (`telemetry`); those spans are left out of the log lines.

use std::io::IsTerminal;

use tracing::level_filters::LevelFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{self, EnvFilter, FilterExt, Targets};
use tracing_subscriber::layer::Filter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use crate::telemetry::{self, Traces};

/// Set to `1` to let rmcp log message payloads (arguments, results, task
/// tokens). Off by default.
pub const PAYLOADS_ENV: &str = "TOLLGATE_LOG_PAYLOADS";

/// The rmcp targets that print message payloads, and the most verbose
/// level at which they print none.
const PAYLOAD_TARGETS: &[(&str, LevelFilter)] = &[
    ("rmcp::service", LevelFilter::WARN),
    (
        "rmcp::transport::streamable_http_server::tower",
        LevelFilter::DEBUG,
    ),
    ("rmcp::transport::async_rw", LevelFilter::INFO),
    ("rmcp::transport::auth", LevelFilter::INFO),
];

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Whether payload logging was explicitly asked for.
pub fn payloads_allowed() -> bool {
    std::env::var(PAYLOADS_ENV).is_ok_and(|v| v.trim() == "1")
}

/// The cap applied on top of `RUST_LOG`: everything passes except the
/// payload targets above their safe level (unless `allow_payloads`).
pub fn payload_cap(allow_payloads: bool) -> Targets {
    let mut cap = Targets::new().with_default(LevelFilter::TRACE);
    if !allow_payloads {
        for (target, level) in PAYLOAD_TARGETS {
            cap = cap.with_target(*target, *level);
        }
    }
    cap
}

/// Installs the global subscriber: `RUST_LOG` (or `default` when unset or
/// invalid), capped by [`payload_cap`], to stderr in `format`. A second
/// call does nothing.
pub fn init(default: &str, format: LogFormat) {
    init_with_traces(default, format, None);
}

/// [`init`], and with `traces` (when on) beside the log lines: the call
/// spans go to the trace exporter, never into the log lines.
pub fn init_with_traces(default: &str, format: LogFormat, traces: Option<&Traces>) {
    let env = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let allow = payloads_allowed();
    let filter = log_filter(env, allow);
    // Colours only for a person at a terminal: escape codes in a file or
    // a log collector are noise (and break line-oriented tools).
    let ansi = std::io::stderr().is_terminal();
    let layer = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        // One flat object per line: the event's fields beside `timestamp`,
        // `level` and `target`, as log collectors index them.
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_ansi(false)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    let mut layers = vec![layer];
    if let Some(traces) = traces {
        layers.push(traces.layer());
    }
    if tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .is_ok()
        && allow
    {
        tracing::warn!(
            "{PAYLOADS_ENV}=1: MCP message payloads (arguments, results, task tokens) may be logged"
        );
    }
}

/// What the log lines show: `env`'s levels, capped by [`payload_cap`],
/// without the spans exported as traces.
fn log_filter<S>(env: EnvFilter, allow_payloads: bool) -> impl Filter<S> + Send + Sync + 'static
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    env.and(payload_cap(allow_payloads))
        // With a hint, so the combined hint stays the level asked for (a
        // filter without one would lift the global level cap).
        .and(filter::filter_fn(|m| !is_trace_span(m)).with_max_level_hint(LevelFilter::TRACE))
}

/// A span of [`telemetry::TARGET`]: exported as a trace, kept out of the
/// log lines (whose format stays the same with traces on or off).
fn is_trace_span(m: &tracing::Metadata<'_>) -> bool {
    m.is_span() && m.target() == telemetry::TARGET
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;
    use tracing_subscriber::registry::Registry;

    fn enabled(cap: &Targets, target: &str, level: Level) -> bool {
        cap.would_enable(target, &level)
    }

    #[test]
    fn the_log_filter_keeps_the_level_asked_for() {
        for (level, hint) in [("warn", LevelFilter::WARN), ("info", LevelFilter::INFO)] {
            let f = log_filter::<Registry>(EnvFilter::new(level), false);
            assert_eq!(Filter::<Registry>::max_level_hint(&f), Some(hint));
        }
    }

    #[test]
    fn payload_targets_are_capped_unless_opted_in() {
        let cap = payload_cap(false);
        assert!(!enabled(&cap, "rmcp::service", Level::DEBUG));
        assert!(!enabled(&cap, "rmcp::service", Level::INFO));
        assert!(enabled(&cap, "rmcp::service", Level::WARN));
        assert!(!enabled(
            &cap,
            "rmcp::transport::streamable_http_server::tower",
            Level::TRACE
        ));
        assert!(!enabled(&cap, "rmcp::transport::async_rw", Level::DEBUG));
        // Other targets keep whatever RUST_LOG says.
        assert!(enabled(&cap, "tollgate::pipeline", Level::TRACE));
        assert!(enabled(
            &cap,
            "rmcp::transport::streamable_http_server::session::local",
            Level::TRACE
        ));

        let open = payload_cap(true);
        assert!(enabled(&open, "rmcp::service", Level::TRACE));
    }
}

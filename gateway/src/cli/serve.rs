//! `tollgate serve`: binds the listener (or takes stdio) and hands over to
//! [`crate::app`], which assembles and runs the gateway. Every flag also
//! reads an environment variable (shown in `--help`), for containers and
//! service managers.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::app::{self, Config};
use crate::logging::LogFormat;
use crate::secrets::SecretString;
use crate::server::{self, HttpOptions};
use crate::telemetry::Traces;

#[derive(Debug, Args)]
pub(super) struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "TOLLGATE_LISTEN", default_value = "127.0.0.1:8930")]
    listen: SocketAddr,
    /// Where the built-in demo backend listens instead of its manifest's
    /// `listen` (`127.0.0.1:0`: a free port); the shipped connectors follow
    /// it. Lets two gateways run on one machine.
    #[arg(long, env = "TOLLGATE_DEMO_LISTEN", value_name = "ADDR")]
    demo_listen: Option<SocketAddr>,
    /// Do not start the demo backend even if the manifests declare one.
    #[arg(long, env = "TOLLGATE_NO_DEMO", value_parser = clap::builder::BoolishValueParser::new())]
    no_demo: bool,
    /// On SIGTERM or Ctrl-C: stop accepting, let calls in progress finish
    /// for up to this many seconds, then record the rest as `interrupted`.
    #[arg(long, env = "TOLLGATE_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    shutdown_grace_secs: u64,
    /// Serve one agent over stdin/stdout; its key comes from TOLLGATE_AGENT_KEY.
    #[arg(long, env = "TOLLGATE_STDIO", value_parser = clap::builder::BoolishValueParser::new())]
    stdio: bool,
    /// Extra `Host` header value to accept (repeatable; comma-separated in
    /// the variable); loopback names are always accepted. Needed when
    /// listening on a non-loopback address.
    #[arg(
        long = "allowed-host",
        env = "TOLLGATE_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    allowed_hosts: Vec<String>,
    /// Browser origin to accept besides loopback ones (repeatable;
    /// comma-separated in the variable), e.g. `https://console.example.com`.
    #[arg(
        long = "allowed-origin",
        env = "TOLLGATE_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    allowed_origins: Vec<String>,
    /// Largest request body in bytes.
    #[arg(long, env = "TOLLGATE_MAX_BODY_BYTES", default_value_t = server::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// Public base URL of the gateway (e.g. `https://tollgate.example.com`),
    /// advertised in the OAuth protected resource metadata. Default: taken
    /// from each request's Host header.
    #[arg(long, env = "TOLLGATE_PUBLIC_URL")]
    public_url: Option<String>,
    /// How often to look for manifest changes, in milliseconds (0: never).
    #[arg(long, env = "TOLLGATE_RELOAD_INTERVAL_MS", default_value_t = 1000)]
    reload_interval_ms: u64,
    /// Most client connections at once; more are closed at once.
    #[arg(long, env = "TOLLGATE_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Seconds a client may take to send a request's headers.
    #[arg(long, env = "TOLLGATE_HEADER_READ_TIMEOUT_SECS")]
    header_read_timeout_secs: Option<u64>,
    /// Seconds an idle keep-alive connection stays open.
    #[arg(long, env = "TOLLGATE_IDLE_TIMEOUT_SECS")]
    idle_timeout_secs: Option<u64>,
    /// Most MCP sessions one credential may hold open.
    #[arg(long, env = "TOLLGATE_MAX_SESSIONS_PER_CREDENTIAL")]
    max_sessions_per_credential: Option<usize>,
    /// Seconds after which an unused MCP session is closed.
    #[arg(long, env = "TOLLGATE_SESSION_IDLE_TIMEOUT_SECS")]
    session_idle_timeout_secs: Option<u64>,
    /// Log a call as slow (WARN) when its backend takes longer than this,
    /// in milliseconds.
    #[arg(long, env = "TOLLGATE_SLOW_CALL_MS", default_value_t = 2000)]
    slow_call_ms: u64,
    /// Serve Prometheus metrics at /metrics on this address, without
    /// authentication (keep it on a network only monitoring reaches).
    #[arg(long, env = "TOLLGATE_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Serve /metrics on the main listener to scrapers presenting the
    /// bearer token in this file. Without this or --metrics-listen,
    /// /metrics is not served.
    #[arg(long, env = "TOLLGATE_METRICS_TOKEN_FILE")]
    metrics_token_file: Option<std::path::PathBuf>,
    /// Refuse a call whose audit pre-record is not durably written within
    /// this many milliseconds (a stuck store is never waited on forever).
    #[arg(long, env = "TOLLGATE_AUDIT_TIMEOUT_MS", default_value_t = 2000)]
    audit_timeout_ms: u64,
    /// Write a signed audit checkpoint after this many records...
    #[arg(
        long,
        env = "TOLLGATE_AUDIT_CHECKPOINT_RECORDS",
        default_value_t = 1000
    )]
    audit_checkpoint_records: i64,
    /// ...or this many seconds, whichever comes first.
    #[arg(long, env = "TOLLGATE_AUDIT_CHECKPOINT_SECS", default_value_t = 60)]
    audit_checkpoint_secs: u64,
    /// Also append every checkpoint to this file (put it where the gateway
    /// cannot rewrite it: append-only, another host): `audit verify
    /// --checkpoints FILE` then detects a trail cut short.
    #[arg(long, env = "TOLLGATE_AUDIT_CHECKPOINT_FILE")]
    audit_checkpoint_file: Option<std::path::PathBuf>,
    /// Keep audit records this long (e.g. 90d, 720h), then archive and
    /// prune them; default: keep everything.
    #[arg(long, env = "TOLLGATE_AUDIT_RETAIN", value_parser = parse_age)]
    audit_retain: Option<Duration>,
    /// Where pruned audit records are archived (default DATA/audit-archive).
    #[arg(long, env = "TOLLGATE_AUDIT_ARCHIVE_DIR")]
    audit_archive_dir: Option<std::path::PathBuf>,
    /// This gateway's audit chain. Replicas sharing one store each need
    /// their own name.
    #[arg(long, env = "TOLLGATE_AUDIT_CHAIN", default_value = crate::audit::DEFAULT_CHAIN)]
    audit_chain: String,
    /// Export traces (OpenTelemetry, OTLP over HTTP with protobuf) to the
    /// collector at this base URL, e.g. `http://127.0.0.1:4318` (spans go
    /// to its /v1/traces). Off when unset.
    #[arg(long, env = "TOLLGATE_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
}

/// An age: `90d`, `720h`, `30m`, `45s`.
fn parse_age(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if let Some(days) = t.strip_suffix('d') {
        return days
            .parse::<u64>()
            .map(|d| Duration::from_secs(d * 86_400))
            .map_err(|_| format!("`{t}` is not an age (e.g. 90d, 720h)"));
    }
    crate::tasks::parse_ttl(t).map_err(|_| format!("`{t}` is not an age (e.g. 90d, 720h)"))
}

/// Sets up logging (and traces, when asked for), serves, then sends the
/// last spans before returning.
pub(super) async fn run(
    data: &Path,
    manifests: &Path,
    mut args: ServeArgs,
    log_format: LogFormat,
) -> anyhow::Result<ExitCode> {
    let traces = match args.otlp_endpoint.take().filter(|e| !e.trim().is_empty()) {
        Some(endpoint) => Some(Traces::start(&endpoint)?),
        None => None,
    };
    crate::logging::init_with_traces("info,rmcp=warn", log_format, traces.as_ref());
    if let Some(t) = &traces {
        tracing::info!(endpoint = %t.endpoint(), "exporting traces (OTLP over HTTP)");
    }
    let served = serve(data, manifests, args, log_format).await;
    if let Some(t) = traces {
        t.shutdown().await;
    }
    served
}

async fn serve(
    data: &Path,
    manifests: &Path,
    args: ServeArgs,
    log_format: LogFormat,
) -> anyhow::Result<ExitCode> {
    let mut http = HttpOptions {
        max_body_bytes: args.max_body_bytes,
        public_url: args.public_url,
        ..HttpOptions::default()
    };
    http.allowed_hosts.extend(args.allowed_hosts);
    http.allowed_origins = args.allowed_origins;
    let secs = Duration::from_secs;
    http.shutdown_grace = secs(args.shutdown_grace_secs);
    if let Some(n) = args.max_connections {
        http.max_connections = n;
    }
    if let Some(s) = args.header_read_timeout_secs {
        http.header_read_timeout = secs(s);
    }
    if let Some(s) = args.idle_timeout_secs {
        http.idle_timeout = secs(s);
    }
    if let Some(n) = args.max_sessions_per_credential {
        http.max_sessions_per_credential = n;
    }
    if let Some(s) = args.session_idle_timeout_secs {
        http.session_idle_timeout = secs(s);
    }
    http.metrics_token = metrics_token(args.metrics_token_file.as_deref())?;
    let audit = app::AuditOptions {
        timeout: Duration::from_millis(args.audit_timeout_ms.max(1)),
        checkpoints: crate::audit::seal::Policy {
            every_records: args.audit_checkpoint_records.max(1),
            every: secs(args.audit_checkpoint_secs.max(1)),
            export: args.audit_checkpoint_file,
        },
        retain: args.audit_retain,
        archive_dir: args.audit_archive_dir,
        chain: args.audit_chain,
        ..app::AuditOptions::default()
    };
    let mut config = Config::new(data, manifests)
        .with_audit(audit)
        .with_slow_call(Duration::from_millis(args.slow_call_ms))
        .with_demo_listen(args.demo_listen)
        .with_http(http)
        .with_reload_interval(
            (args.reload_interval_ms > 0).then(|| Duration::from_millis(args.reload_interval_ms)),
        );

    config.demo_backend = !args.no_demo;
    if args.stdio {
        let key = std::env::var("TOLLGATE_AGENT_KEY")
            .context("--stdio needs the agent's key in TOLLGATE_AGENT_KEY (issue one with `tollgate agents issue-key AGENT`)")?;
        app::run_stdio(config, &key).await?;
        return Ok(ExitCode::SUCCESS);
    }

    // Bad manifests stop us before any port is bound.
    let mut app = app::App::build(config).await?;
    if let Some(at) = args.metrics_listen {
        let l = tokio::net::TcpListener::bind(at)
            .await
            .with_context(|| format!("cannot listen for metrics on {at}"))?;
        app = app.with_metrics_listener(l);
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (pass --listen ADDR to use another address)",
                args.listen
            )
        })?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "listening on a non-loopback address; make sure TLS terminates in front of Tollgate");
    }
    // For a person at a console; in JSON the start-up summary line says
    // the same, and every line stays JSON.
    if log_format == LogFormat::Text {
        eprintln!("Tollgate is serving MCP at http://{addr}/mcp  (Ctrl-C to stop)");
    }
    let grace = args.shutdown_grace_secs;
    app.serve_http(listener, async move {
        let signal = stop_signal().await;
        tracing::info!(
            signal,
            grace_secs = grace,
            "stopping: no new connections; calls in progress have {grace}s to finish, the rest are recorded as interrupted"
        );
    })
    .await?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Resolves on the first SIGTERM (service managers, container runtimes)
/// or SIGINT (Ctrl-C), with its name.
async fn stop_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch for SIGTERM; only Ctrl-C stops gracefully");
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}

/// The scrape token: from `TOLLGATE_METRICS_TOKEN`, else the file. An
/// empty or unreadable one stops the start (fail closed: never an open
/// /metrics on the main listener by accident).
fn metrics_token(file: Option<&Path>) -> anyhow::Result<Option<SecretString>> {
    let raw = match (std::env::var("TOLLGATE_METRICS_TOKEN").ok(), file) {
        (Some(t), _) => t,
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("cannot read the metrics token file {}", f.display()))?,
        (None, None) => return Ok(None),
    };
    let token = raw.trim();
    if token.len() < 16 {
        anyhow::bail!("the metrics token must be at least 16 characters");
    }
    Ok(Some(SecretString::new(token)))
}

//! Overhead benchmark: the same tool call (a) through Tollgate and (b) straight
//! to the backend, in the same process and the same run.
//!
//! ```text
//! cargo bench -p tollgate-tests --bench overhead
//! ```
//!
//! One backend (a minimal axum handler on 127.0.0.1:0) and the real gateway
//! (`TestGateway::start`, real SQLite store: every call writes a decision and
//! an outcome record) run inside this process. The call is `tools/call
//! inventory.get_item {"item_id":"42"}` as agent `tester`, which the gateway
//! maps to `GET /api/items/42`; the direct side sends that same GET with a
//! keep-alive reqwest client. Modes:
//!
//! - `direct`: reqwest (keep-alive, TCP_NODELAY) -> backend.
//! - `tollgate-handshake`: `TestGateway::client` (rmcp, initialize handshake,
//!   session). rmcp's default HTTP client keeps no idle connection, so every
//!   request opens a new TCP connection: this is what an rmcp client does out
//!   of the box.
//! - `tollgate-stateless`: `TestGateway::stateless_client` (2026-07-28, no
//!   session), same default HTTP client.
//! - `tollgate-handshake-keepalive`, `tollgate-stateless-keepalive`: the same
//!   two protocols over a keep-alive reqwest client, which isolates the cost
//!   of the connection set-up from the gateway's own cost.
//! - `tollgate-raw-stateless`: no rmcp client at all: one hand-written
//!   2026-07-28 `tools/call` POST over keep-alive reqwest, response parsed as
//!   JSON. Separates the rmcp client's cost from the gateway's.
//!
//! Each round runs every mode sequentially (warm-up, then `BENCH_CALLS`
//! timed calls, one at a time) and concurrently (`BENCH_CONCURRENCY` workers,
//! each with its own client, `BENCH_CONC_CALLS` calls in total), then times
//! the gateway's stages in-process (no HTTP, no rmcp) to show where the cost
//! goes. The mode order rotates from round to round. Reported figures are the
//! median over `BENCH_ROUNDS` rounds; ratios (through-Tollgate / direct) are
//! taken within each round, then their median is reported.
//!
//! `BENCH_GOVERNED=1` runs the gateway with every stage on: a Cedar policy
//! set (ten policies, one of which permits the call) and rate limits on the
//! agent, the agent and tool, and the connector (set high enough never to
//! refuse), to measure what policy and limits add end to end.
//!
//! Environment: `BENCH_CALLS` (2000), `BENCH_CONCURRENCY` (8),
//! `BENCH_CONC_CALLS` (4000), `BENCH_ROUNDS` (3), `BENCH_WARMUP` (200),
//! `BENCH_MAX_SECS` (60, cap per phase), `BENCH_MODES` (comma-separated
//! subset of mode names), `BENCH_JSON=1` (one JSON object on stdout instead
//! of the table).
//!
//! Run without `--bench` (as `cargo test --all-targets` does), it only does a
//! short smoke run.

#![allow(clippy::unwrap_used)]

use std::env;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use rmcp::model::CallToolRequestParams;
use rmcp::service::{ClientLifecycleMode, ClientServiceExt, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tollgate::pipeline::{self, Authenticated, ToolRequest, Transport, admit, authenticate};
use tollgate::store::{DecisionFilter, OutcomeUpdate};
use tollgate_tests::{TestGateway, args, test_manifests};

const TOOL: &str = "inventory.get_item";
/// No single call may take longer than this; a stuck call fails the run.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- config

#[derive(Debug, Clone)]
struct Config {
    calls: usize,
    concurrency: usize,
    conc_calls: usize,
    rounds: usize,
    warmup: usize,
    max_phase: Duration,
    modes: Vec<Mode>,
    json: bool,
    smoke: bool,
}

fn env_usize(name: &str, default: usize) -> usize {
    match env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a positive integer, got {v:?}")),
        Err(_) => default,
    }
}

impl Config {
    fn from_env() -> Self {
        // `cargo bench` passes `--bench`; `cargo test --benches` does not.
        let smoke = !env::args().any(|a| a == "--bench");
        let d = |full: usize, quick: usize| if smoke { quick } else { full };
        let modes = match env::var("BENCH_MODES") {
            Ok(list) => list
                .split(',')
                .map(|m| {
                    Mode::ALL
                        .into_iter()
                        .find(|x| x.name() == m.trim() || x.short() == m.trim())
                        .unwrap_or_else(|| panic!("unknown mode {m:?} in BENCH_MODES"))
                })
                .collect(),
            Err(_) => Mode::ALL.to_vec(),
        };
        let c = Self {
            calls: env_usize("BENCH_CALLS", d(2000, 20)).max(1),
            concurrency: env_usize("BENCH_CONCURRENCY", d(8, 2)).max(1),
            conc_calls: env_usize("BENCH_CONC_CALLS", d(4000, 40)).max(1),
            rounds: env_usize("BENCH_ROUNDS", d(3, 1)).max(1),
            warmup: env_usize("BENCH_WARMUP", d(200, 5)),
            max_phase: Duration::from_secs(env_usize("BENCH_MAX_SECS", 60).max(1) as u64),
            modes,
            json: env::var("BENCH_JSON").is_ok_and(|v| v == "1"),
            smoke,
        };
        assert!(!c.modes.is_empty(), "BENCH_MODES selects no mode");
        c
    }
}

// ----------------------------------------------------------------- modes

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Direct,
    Handshake,
    Stateless,
    HandshakeKeepAlive,
    StatelessKeepAlive,
    RawStateless,
}

impl Mode {
    const ALL: [Mode; 6] = [
        Mode::Direct,
        Mode::Handshake,
        Mode::Stateless,
        Mode::HandshakeKeepAlive,
        Mode::StatelessKeepAlive,
        Mode::RawStateless,
    ];

    fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Handshake => "tollgate-handshake",
            Mode::Stateless => "tollgate-stateless",
            Mode::HandshakeKeepAlive => "tollgate-handshake-keepalive",
            Mode::StatelessKeepAlive => "tollgate-stateless-keepalive",
            Mode::RawStateless => "tollgate-raw-stateless",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Handshake => "handshake",
            Mode::Stateless => "stateless",
            Mode::HandshakeKeepAlive => "handshake-keepalive",
            Mode::StatelessKeepAlive => "stateless-keepalive",
            Mode::RawStateless => "raw-stateless",
        }
    }
}

/// What every caller needs: the gateway, a key, the direct URL.
#[derive(Debug)]
struct Setup {
    gw: TestGateway,
    key: String,
    direct_url: String,
}

/// One client, of whichever kind a mode uses.
#[derive(Debug)]
enum Caller {
    Direct {
        http: reqwest::Client,
        url: String,
    },
    Mcp(RunningService<RoleClient, ()>),
    Raw {
        http: reqwest::Client,
        url: String,
        key: String,
        next_id: std::sync::atomic::AtomicU64,
    },
}

/// A self-contained 2026-07-28 `tools/call`, as a stateless client sends it.
fn raw_call_body(id: u64) -> String {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": "tools/call",
        "params": {
            "name": TOOL,
            "arguments": { "item_id": "42" },
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": { "name": "overhead-bench", "version": "0" },
            },
        },
    })
    .to_string()
}

fn item_args() -> Map<String, Value> {
    args(json!({ "item_id": "42" }))
}

fn keepalive_http() -> reqwest::Client {
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
        .unwrap()
}

async fn keepalive_mcp(setup: &Setup, stateless: bool) -> RunningService<RoleClient, ()> {
    let config = StreamableHttpClientTransportConfig::with_uri(setup.gw.url.clone())
        .auth_header(setup.key.clone());
    let transport = StreamableHttpClientTransport::with_client(keepalive_http(), config);
    if stateless {
        let mode = ClientLifecycleMode::Discover {
            preferred_versions: vec![rmcp::model::ProtocolVersion::V_2026_07_28],
        };
        ().serve_with_lifecycle(transport, mode).await.unwrap()
    } else {
        ().serve(transport).await.unwrap()
    }
}

impl Caller {
    async fn new(mode: Mode, setup: &Setup) -> Self {
        match mode {
            Mode::Direct => Caller::Direct {
                http: keepalive_http(),
                url: setup.direct_url.clone(),
            },
            Mode::Handshake => Caller::Mcp(setup.gw.client(&setup.key).await),
            Mode::Stateless => Caller::Mcp(setup.gw.stateless_client(&setup.key).await),
            Mode::HandshakeKeepAlive => Caller::Mcp(keepalive_mcp(setup, false).await),
            Mode::StatelessKeepAlive => Caller::Mcp(keepalive_mcp(setup, true).await),
            Mode::RawStateless => Caller::Raw {
                http: keepalive_http(),
                url: setup.gw.url.clone(),
                key: setup.key.clone(),
                next_id: 1.into(),
            },
        }
    }

    /// [`Caller::new`], bounded in time (the MCP clients do a handshake or
    /// discovery first).
    async fn connect(mode: Mode, setup: &Setup) -> Result<Self, String> {
        tokio::time::timeout(CALL_TIMEOUT, Self::new(mode, setup))
            .await
            .map_err(|_| format!("{} client not ready within {CALL_TIMEOUT:?}", mode.name()))
    }

    /// One call; the response is read in full and checked.
    async fn call(&self) -> Result<(), String> {
        let work = async {
            match self {
                Caller::Direct { http, url } => {
                    let r = http.get(url).send().await.map_err(|e| e.to_string())?;
                    if !r.status().is_success() {
                        return Err(format!("backend answered {}", r.status()));
                    }
                    let v: Value = r.json().await.map_err(|e| e.to_string())?;
                    if v["path"] != "/api/items/42" {
                        return Err(format!("unexpected backend answer {v}"));
                    }
                    Ok(())
                }
                Caller::Raw {
                    http,
                    url,
                    key,
                    next_id,
                } => {
                    let id = next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let r = http
                        .post(url)
                        .bearer_auth(key)
                        .header("content-type", "application/json")
                        .header("accept", "application/json, text/event-stream")
                        .header("mcp-protocol-version", "2026-07-28")
                        .header("mcp-method", "tools/call")
                        .header("mcp-name", TOOL)
                        .body(raw_call_body(id))
                        .send()
                        .await
                        .map_err(|e| e.to_string())?;
                    let status = r.status();
                    let text = r.text().await.map_err(|e| e.to_string())?;
                    // JSON, or one SSE `data:` line if the server streams.
                    let payload = text
                        .lines()
                        .find_map(|l| l.strip_prefix("data:"))
                        .unwrap_or(&text);
                    let v: Value = serde_json::from_str(payload.trim())
                        .map_err(|e| format!("{status}: {e}: {text}"))?;
                    if v["id"] != id || v["result"]["isError"] != false {
                        return Err(format!("{status}: unexpected answer {v}"));
                    }
                    Ok(())
                }
                Caller::Mcp(client) => {
                    let r = client
                        .call_tool(CallToolRequestParams::new(TOOL).with_arguments(item_args()))
                        .await
                        .map_err(|e| e.to_string())?;
                    if r.is_error != Some(false) {
                        return Err(format!("tool error: {:?}", r.content));
                    }
                    Ok(())
                }
            }
        };
        tokio::time::timeout(CALL_TIMEOUT, work)
            .await
            .map_err(|_| format!("call took longer than {CALL_TIMEOUT:?}"))?
    }

    async fn close(self) {
        if let Caller::Mcp(client) = self {
            let _ = client.cancel().await;
        }
    }
}

// ----------------------------------------------------------------- stats

#[derive(Debug, Clone, Copy, Default)]
struct Stats {
    calls: usize,
    p50_us: f64,
    p99_us: f64,
    mean_us: f64,
    per_sec: f64,
    truncated: bool,
}

/// Nearest-rank percentile of sorted nanoseconds, in microseconds.
fn percentile_us(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

fn stats(mut ns: Vec<u64>, wall: Duration, truncated: bool) -> Stats {
    ns.sort_unstable();
    let n = ns.len();
    Stats {
        calls: n,
        p50_us: percentile_us(&ns, 50.0),
        p99_us: percentile_us(&ns, 99.0),
        mean_us: ns.iter().sum::<u64>() as f64 / n.max(1) as f64 / 1000.0,
        per_sec: n as f64 / wall.as_secs_f64(),
        truncated,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------- phases

async fn sequential(mode: Mode, setup: &Setup, cfg: &Config) -> Result<Stats, String> {
    let caller = Caller::connect(mode, setup).await?;
    for _ in 0..cfg.warmup {
        caller.call().await?;
    }
    let mut lat = Vec::with_capacity(cfg.calls);
    let start = Instant::now();
    let deadline = start + cfg.max_phase;
    let mut truncated = false;
    for _ in 0..cfg.calls {
        if Instant::now() >= deadline {
            truncated = true;
            break;
        }
        let t = Instant::now();
        caller.call().await?;
        lat.push(nanos(t.elapsed()));
    }
    let wall = start.elapsed();
    caller.close().await;
    Ok(stats(lat, wall, truncated))
}

async fn concurrent(mode: Mode, setup: &Setup, cfg: &Config) -> Result<Stats, String> {
    let workers = cfg.concurrency;
    let per_worker = cfg.conc_calls.div_ceil(workers);
    let warm = (cfg.warmup / workers).max(1);
    let mut callers = Vec::with_capacity(workers);
    for _ in 0..workers {
        let c = Caller::connect(mode, setup).await?;
        for _ in 0..warm {
            c.call().await?;
        }
        callers.push(c);
    }
    let start = Instant::now();
    let deadline = start + cfg.max_phase;
    let mut tasks = tokio::task::JoinSet::new();
    for caller in callers {
        tasks.spawn(async move {
            let mut lat = Vec::with_capacity(per_worker);
            let mut truncated = false;
            for _ in 0..per_worker {
                if Instant::now() >= deadline {
                    truncated = true;
                    break;
                }
                let t = Instant::now();
                if let Err(e) = caller.call().await {
                    return (caller, lat, truncated, Err(e));
                }
                lat.push(nanos(t.elapsed()));
            }
            (caller, lat, truncated, Ok(()))
        });
    }
    let mut all = Vec::with_capacity(per_worker * workers);
    let mut any_truncated = false;
    let mut failure = None;
    let mut finished = Vec::with_capacity(workers);
    while let Some(joined) = tasks.join_next().await {
        let (caller, lat, truncated, result) = joined.map_err(|e| e.to_string())?;
        all.extend(lat);
        any_truncated |= truncated;
        if let Err(e) = result {
            failure.get_or_insert(e);
        }
        finished.push(caller);
    }
    let wall = start.elapsed();
    for c in finished {
        c.close().await;
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(stats(all, wall, any_truncated)),
    }
}

/// Times `f` sequentially, `cfg.calls` times after a warm-up.
async fn time_stage<F, Fut>(cfg: &Config, mut f: F) -> Stats
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut i = 0u64;
    for _ in 0..cfg.warmup {
        f(i).await;
        i += 1;
    }
    let mut lat = Vec::with_capacity(cfg.calls);
    let start = Instant::now();
    let deadline = start + cfg.max_phase;
    let mut truncated = false;
    for _ in 0..cfg.calls {
        if Instant::now() >= deadline {
            truncated = true;
            break;
        }
        let t = Instant::now();
        f(i).await;
        lat.push(nanos(t.elapsed()));
        i += 1;
    }
    stats(lat, start.elapsed(), truncated)
}

/// The gateway's stages, timed one by one in-process (no HTTP, no rmcp).
/// Kept to a few public entry points so that internal changes to the
/// pipeline rarely break this file.
const STAGES: [(&str, &str); 7] = [
    ("auth", "authenticate (SHA-256 + SQLite key lookup)"),
    (
        "admit",
        "admit (SQLite agent-status lookup; runs twice per call)",
    ),
    ("schema", "JSON Schema validation of the arguments"),
    ("digest", "argument digest (HMAC-SHA256)"),
    (
        "decide",
        "grants + schema + policy + rate limits (explain + limiter)",
    ),
    ("records", "decision INSERT + outcome UPDATE (SQLite)"),
    (
        "pipeline",
        "pipeline::call_tool in-process (all but auth, + backend)",
    ),
];

async fn stages(setup: &Setup, cfg: &Config, round: usize) -> Vec<Stats> {
    let gw = setup.gw.gw.clone();
    let key = setup.key.clone();
    let who: Authenticated = authenticate::authenticate_key(&gw, &key, Transport::Http)
        .await
        .unwrap();
    let catalog = gw.catalog();
    let tool = catalog.tools.get(TOOL).unwrap().clone();
    let arguments = item_args();
    let instance = Value::Object(arguments.clone());
    let mut out = Vec::new();

    out.push(
        time_stage(cfg, |_| {
            let (gw, key) = (gw.clone(), key.clone());
            async move {
                authenticate::authenticate_key(&gw, &key, Transport::Http)
                    .await
                    .unwrap();
            }
        })
        .await,
    );
    out.push(
        time_stage(cfg, |_| {
            let (gw, who) = (gw.clone(), who.clone());
            async move {
                assert!(admit::admit(&gw, &who).await.is_ok());
            }
        })
        .await,
    );
    out.push(
        time_stage(cfg, |_| {
            assert!(tool.validator.is_valid(&instance));
            async {}
        })
        .await,
    );
    out.push(
        time_stage(cfg, |_| {
            std::hint::black_box(pipeline::record::args_digest(&[7u8; 32], &arguments));
            async {}
        })
        .await,
    );
    // The in-memory decision: grants, schema, scope and policy as
    // `policy explain` runs them, and the rate limits the agent, the tool
    // and the connector declare (with BENCH_GOVERNED=1; none otherwise).
    let agent = catalog.agents["tester"].clone();
    let limiter = gw.rate_limiter();
    out.push(
        time_stage(cfg, |_| {
            let e = pipeline::policy::explain(
                &catalog,
                &agent,
                TOOL,
                arguments.clone(),
                None,
                gw.now(),
            );
            assert_eq!(e.verdict, "allow", "{e:?}");
            if let Some(spec) = agent.rate {
                let key = tollgate::limits::RateKey::Agent(agent.id.clone());
                limiter.take(&key, spec).unwrap();
            }
            if let Some(spec) = agent.tool_rates.get(TOOL) {
                let key = tollgate::limits::RateKey::AgentTool(agent.id.clone(), TOOL.into());
                limiter.take(&key, *spec).unwrap();
            }
            if let Some(spec) = catalog.connectors[&tool.connector_id].rate {
                let key = tollgate::limits::RateKey::Connector(tool.connector_id.clone());
                limiter.take(&key, spec).unwrap();
            }
            async {}
        })
        .await,
    );
    // A real allow record (the sequential phases wrote thousands) is the
    // template, so this needs no knowledge of the record's fields.
    let mut template = gw
        .store()
        .decisions(&DecisionFilter {
            limit: Some(1),
            ..DecisionFilter::default()
        })
        .await
        .unwrap()
        .pop()
        .expect("the measured calls left decision records");
    template.outcome = None;
    template.outcome_code = None;
    template.backend_status = None;
    template.latency_us = None;
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    out.push(
        time_stage(cfg, |i| {
            let gw = gw.clone();
            let mut r = template.clone();
            // Increasing ids, like the UUIDv7 the pipeline uses.
            r.id = format!("bench-{started:032}-{round:04}-{i:012}");
            async move {
                // As the pipeline does: the pre-record waited for (group
                // commit, synced), the outcome queued behind it.
                gw.audit()
                    .append_durable(tollgate::audit::Entry::call(&r))
                    .await
                    .unwrap();
                let o = OutcomeUpdate {
                    outcome: tollgate::store::CallOutcome::Ok,
                    outcome_code: None,
                    backend_status: Some(200),
                    latency_us: 100,
                };
                let call = tollgate::store::OpenCall {
                    id: r.id.clone(),
                    agent_id: r.agent_id.clone(),
                    task_id: r.task_id.clone(),
                    tool: r.tool.clone(),
                };
                gw.audit()
                    .append(tollgate::audit::Entry::outcome(&call, &r.at, &o));
            }
        })
        .await,
    );
    let cancel = CancellationToken::new();
    out.push(
        time_stage(cfg, |_| {
            let (gw, who, cancel) = (gw.clone(), who.clone(), cancel.clone());
            let request = ToolRequest {
                name: TOOL.into(),
                arguments: Some(arguments.clone()),
                ..ToolRequest::default()
            };
            async move {
                match pipeline::call_tool(&gw, &who, request, &cancel).await {
                    pipeline::CallReply::Output(out) => assert!(!out.is_error, "{}", out.text),
                    pipeline::CallReply::Approved { .. } => {
                        panic!("the bench tool needs no approval")
                    }
                    pipeline::CallReply::Refused(view) => panic!("refused: {view:?}"),
                }
            }
        })
        .await,
    );
    out
}

// ---------------------------------------------------------------- backend

/// A minimal backend: echoes method, path and query as JSON (the shape of
/// `tollgate_tests::Backend`'s echo), records nothing. TCP_NODELAY on
/// accepted sockets, as the gateway does.
async fn start_backend() -> String {
    async fn echo(request: Request) -> Response {
        let (parts, body) = request.into_parts();
        let _ = axum::body::to_bytes(body, 1 << 20).await;
        axum::Json(json!({
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query(),
            "body": Value::Null,
        }))
        .into_response()
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, Router::new().fallback(echo)).await });
    format!("http://{addr}")
}

// ------------------------------------------------------------------ report

#[derive(Debug, Default)]
struct Results {
    /// Per mode, per round.
    sequential: Vec<(Mode, Vec<Stats>)>,
    concurrent: Vec<(Mode, Vec<Stats>)>,
    stages: Vec<Vec<Stats>>,
}

fn series(rows: &[(Mode, Vec<Stats>)], mode: Mode) -> Option<&Vec<Stats>> {
    rows.iter().find(|(m, _)| *m == mode).map(|(_, s)| s)
}

/// Median over rounds of one metric.
fn med(rounds: &[Stats], f: impl Fn(&Stats) -> f64) -> f64 {
    median(rounds.iter().map(f).collect())
}

/// Median over rounds of the within-round ratio mode / direct.
fn ratio(rounds: &[Stats], direct: Option<&Vec<Stats>>, f: impl Fn(&Stats) -> f64) -> f64 {
    let Some(direct) = direct else {
        return f64::NAN;
    };
    median(
        rounds
            .iter()
            .zip(direct)
            .map(|(s, d)| f(s) / f(d))
            .collect(),
    )
}

/// Median over rounds of the within-round difference mode - direct.
fn added(rounds: &[Stats], direct: Option<&Vec<Stats>>, f: impl Fn(&Stats) -> f64) -> f64 {
    let Some(direct) = direct else {
        return f64::NAN;
    };
    median(
        rounds
            .iter()
            .zip(direct)
            .map(|(s, d)| f(s) - f(d))
            .collect(),
    )
}

fn phase_json(rows: &[(Mode, Vec<Stats>)]) -> Value {
    let direct = series(rows, Mode::Direct);
    let mut out = Map::new();
    for (mode, rounds) in rows {
        out.insert(
            mode.name().into(),
            json!({
                "calls_per_round": rounds.iter().map(|s| s.calls).collect::<Vec<_>>(),
                "p50_us": med(rounds, |s| s.p50_us),
                "p99_us": med(rounds, |s| s.p99_us),
                "mean_us": med(rounds, |s| s.mean_us),
                "calls_per_sec": med(rounds, |s| s.per_sec),
                "ratio_p50": ratio(rounds, direct, |s| s.p50_us),
                "ratio_p99": ratio(rounds, direct, |s| s.p99_us),
                "ratio_throughput": ratio(rounds, direct, |s| s.per_sec),
                "added_p50_us": added(rounds, direct, |s| s.p50_us),
                "added_p99_us": added(rounds, direct, |s| s.p99_us),
                "truncated": rounds.iter().any(|s| s.truncated),
                "rounds": rounds.iter().map(|s| json!({
                    "calls": s.calls, "p50_us": s.p50_us, "p99_us": s.p99_us,
                    "mean_us": s.mean_us, "calls_per_sec": s.per_sec,
                })).collect::<Vec<_>>(),
            }),
        );
    }
    Value::Object(out)
}

fn stage_medians(res: &Results) -> Vec<(Stats, f64)> {
    (0..STAGES.len())
        .map(|i| {
            let rounds: Vec<Stats> = res.stages.iter().map(|r| r[i]).collect();
            let p50 = med(&rounds, |s| s.p50_us);
            let p99 = med(&rounds, |s| s.p99_us);
            (
                Stats {
                    p50_us: p50,
                    p99_us: p99,
                    ..Stats::default()
                },
                med(&rounds, |s| s.mean_us),
            )
        })
        .collect()
}

fn print_json(cfg: &Config, res: &Results) {
    let stages: Map<String, Value> = STAGES
        .iter()
        .zip(stage_medians(res))
        .map(|((k, what), (s, mean))| {
            (
                (*k).to_string(),
                json!({ "what": what, "p50_us": s.p50_us, "p99_us": s.p99_us, "mean_us": mean }),
            )
        })
        .collect();
    let out = json!({
        "benchmark": "overhead",
        "tool": TOOL,
        "config": {
            "rounds": cfg.rounds,
            "sequential_calls": cfg.calls,
            "concurrency": cfg.concurrency,
            "concurrent_calls": cfg.conc_calls,
            "warmup": cfg.warmup,
            "max_phase_secs": cfg.max_phase.as_secs(),
            "smoke": cfg.smoke,
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        },
        "aggregation": "median over rounds; ratios are mode/direct within a round, median over rounds",
        "sequential": phase_json(&res.sequential),
        "concurrent": phase_json(&res.concurrent),
        "stages_in_process": stages,
    });
    println!("{out}");
}

fn print_phase(title: &str, rows: &[(Mode, Vec<Stats>)]) {
    let direct = series(rows, Mode::Direct);
    println!();
    println!(
        "{title:<30} {:>9} {:>9} {:>10} {:>9} {:>7} {:>7} {:>7}",
        "p50 µs", "p99 µs", "calls/s", "+p50 µs", "p50 x", "p99 x", "thr x"
    );
    for (mode, rounds) in rows {
        let p50 = med(rounds, |s| s.p50_us);
        let added = added(rounds, direct, |s| s.p50_us);
        println!(
            "{:<30} {:>9.1} {:>9.1} {:>10.0} {:>9.1} {:>7.2} {:>7.2} {:>7.2}{}",
            mode.name(),
            p50,
            med(rounds, |s| s.p99_us),
            med(rounds, |s| s.per_sec),
            added,
            ratio(rounds, direct, |s| s.p50_us),
            ratio(rounds, direct, |s| s.p99_us),
            ratio(rounds, direct, |s| s.per_sec),
            if rounds.iter().any(|s| s.truncated) {
                "  (truncated by BENCH_MAX_SECS)"
            } else {
                ""
            },
        );
    }
}

fn print_table(cfg: &Config, res: &Results) {
    println!();
    println!(
        "Tollgate overhead: tools/call {TOOL} vs GET /api/items/42, median of {} round(s){}",
        cfg.rounds,
        if cfg.smoke { " [SMOKE RUN]" } else { "" }
    );
    println!(
        "sequential: {} calls after {} warm-up; concurrent: {} workers, {} calls in total; {} core(s)",
        cfg.calls,
        cfg.warmup,
        cfg.concurrency,
        cfg.conc_calls,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!("ratios: mode / direct within each round, median over rounds (thr x < 1 = slower)");
    print_phase("SEQUENTIAL", &res.sequential);
    print_phase(
        &format!("CONCURRENT ({} workers)", cfg.concurrency),
        &res.concurrent,
    );
    println!();
    println!(
        "{:<64} {:>9} {:>9}",
        "GATEWAY STAGES, in-process, sequential", "p50 µs", "p99 µs"
    );
    for ((_, what), (s, _)) in STAGES.iter().zip(stage_medians(res)) {
        println!("{what:<64} {:>9.2} {:>9.2}", s.p50_us, s.p99_us);
    }
}

// -------------------------------------------------------------------- main

async fn run(cfg: &Config) -> Result<Results, String> {
    let backend = start_backend().await;
    let gw = if env::var("BENCH_GOVERNED").is_ok_and(|v| v == "1") {
        governed_gateway(&backend).await
    } else {
        TestGateway::start(&test_manifests(&backend)).await
    };
    let key = gw.issue_key("tester").await;
    let setup = Arc::new(Setup {
        gw,
        key,
        direct_url: format!("{backend}/api/items/42"),
    });
    let mut res = Results {
        sequential: cfg.modes.iter().map(|m| (*m, Vec::new())).collect(),
        concurrent: cfg.modes.iter().map(|m| (*m, Vec::new())).collect(),
        stages: Vec::new(),
    };
    for round in 0..cfg.rounds {
        // Rotate the order so no mode always runs first (or last).
        let k = cfg.modes.len();
        for j in 0..k {
            let i = (round + j) % k;
            let mode = cfg.modes[i];
            eprintln!(
                "round {}/{}: {} sequential",
                round + 1,
                cfg.rounds,
                mode.name()
            );
            let s = sequential(mode, &setup, cfg).await?;
            res.sequential[i].1.push(s);
        }
        for j in 0..k {
            let i = (round + j) % k;
            let mode = cfg.modes[i];
            eprintln!(
                "round {}/{}: {} concurrent",
                round + 1,
                cfg.rounds,
                mode.name()
            );
            let s = concurrent(mode, &setup, cfg).await?;
            res.concurrent[i].1.push(s);
        }
        eprintln!("round {}/{}: gateway stages", round + 1, cfg.rounds);
        res.stages.push(stages(&setup, cfg, round).await);
    }
    Ok(res)
}

/// The test manifests with rate limits on the agent, the agent and tool,
/// and the connector, and a policy set that permits the benchmarked call.
async fn governed_gateway(backend: &str) -> TestGateway {
    let manifests = test_manifests(backend)
        .replacen(
            "  timeout_ms: 2000\n",
            "  timeout_ms: 2000\nlimits: { rate: { rate: 1000000/second } }\n",
            1,
        )
        .replacen(
            "tools: [inventory.get_item, inventory.create_item, inventory.boom, inventory.slow]\n",
            "tools: [inventory.get_item, inventory.create_item, inventory.boom, inventory.slow]\nlimits:\n  rate: { rate: 1000000/second }\n  tools:\n    inventory.get_item: { rate: 1000000/second }\n",
            1,
        );
    assert!(
        manifests.contains("limits:\n  rate"),
        "the agent's limits were spliced in"
    );
    let mut policies = String::from(
        "@id(\"reads\")\npermit (principal, action == Action::\"inventory.get_item\", resource)\nwhen { resource.read_only && context.args.item_id != \"\" };\n",
    );
    for i in 0..9 {
        policies.push_str(&format!(
            "@id(\"p{i}\")\nforbid (principal == Agent::\"other\", action == Action::\"inventory.create_item\", resource)\nwhen {{ context.args.qty > {i}00 }};\n"
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("test.yaml"), manifests).unwrap();
    std::fs::write(dir.path().join("test.cedar"), policies).unwrap();
    let gw = TestGateway::start_dir(dir, tollgate::server::HttpOptions::default()).await;
    let catalog = gw.gw.catalog();
    assert_eq!(catalog.policies.as_ref().map(|p| p.len()), Some(10));
    assert!(catalog.agents["tester"].rate.is_some());
    gw
}

fn main() {
    let cfg = Config::from_env();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let res = match rt.block_on(run(&cfg)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            std::process::exit(1);
        }
    };
    if cfg.json {
        print_json(&cfg, &res);
    } else {
        print_table(&cfg, &res);
    }
    rt.shutdown_timeout(Duration::from_secs(2));
}

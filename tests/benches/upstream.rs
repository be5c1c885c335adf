//! An upstream MCP server through Tollgate versus the same upstream
//! directly: `cargo bench -p tollgate-tests --bench upstream`.
//!
//! The upstream is the test upstream (`test-upstream`, rmcp) over
//! Streamable HTTP; its `echo` tool answers at once, so what is measured is
//! the path. Direct: an rmcp client calls it. Through Tollgate: an rmcp
//! client calls the gateway (assembled as `tollgate serve` assembles it,
//! on a SQLite store), which governs, records and calls the upstream over
//! its one pooled session (an `mcp` connector with `url:`). Each round
//! times `BENCH_CALLS` sequential calls (p50, p99) and `BENCH_CONC_CALLS`
//! calls from `BENCH_CONCURRENCY` clients (throughput); medians over
//! `BENCH_ROUNDS` rounds are printed with the ratios. See BENCHMARKS.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::json;
use tollgate_tests::TestGateway;

/// `cargo bench` passes `--bench`; run any other way (`cargo test
/// --all-targets`) this is a short smoke run that measures nothing useful.
fn env(name: &str, default: usize) -> usize {
    let real = std::env::args().any(|a| a == "--bench");
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if real { default } else { default.clamp(1, 20) })
}

async fn client(url: &str, key: Option<&str>) -> RunningService<RoleClient, ()> {
    let mut cfg = StreamableHttpClientTransportConfig::with_uri(url.to_string());
    if let Some(k) = key {
        cfg = cfg.auth_header(k.to_string());
    }
    ().serve(StreamableHttpClientTransport::from_config(cfg))
        .await
        .expect("an MCP session")
}

fn echo(name: &str) -> CallToolRequestParams {
    CallToolRequestParams::new(name.to_string()).with_arguments(
        json!({ "text": "hello" })
            .as_object()
            .cloned()
            .unwrap_or_default(),
    )
}

async fn one(c: &RunningService<RoleClient, ()>, tool: &str) {
    let r = c.call_tool(echo(tool)).await.expect("a result");
    assert_eq!(r.is_error, Some(false), "{r:?}");
}

struct Round {
    p50_us: f64,
    p99_us: f64,
    per_sec: f64,
}

async fn round(url: &str, key: Option<&str>, tool: &str) -> Round {
    let calls = env("BENCH_CALLS", 2000);
    let conc = env("BENCH_CONCURRENCY", 16);
    let conc_calls = env("BENCH_CONC_CALLS", 8000);
    let c = client(url, key).await;
    for _ in 0..env("BENCH_WARMUP", 200) {
        one(&c, tool).await;
    }
    let mut ns = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        one(&c, tool).await;
        ns.push(t.elapsed().as_nanos() as u64);
    }
    ns.sort_unstable();
    let pct = |p: f64| ns[((ns.len() as f64 - 1.0) * p) as usize] as f64 / 1000.0;
    let (p50_us, p99_us) = (pct(0.5), pct(0.99));
    let mut clients = Vec::new();
    for _ in 0..conc {
        let c = Arc::new(client(url, key).await);
        one(&c, tool).await;
        clients.push(c);
    }
    let per = conc_calls / conc;
    let t = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|c| {
            let tool = tool.to_string();
            tokio::spawn(async move {
                for _ in 0..per {
                    one(&c, &tool).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a worker");
    }
    let per_sec = (per * conc) as f64 / t.elapsed().as_secs_f64();
    Round {
        p50_us,
        p99_us,
        per_sec,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let rounds = env("BENCH_ROUNDS", 3);
    let upstream = tollgate_tests::Listening::start(
        std::process::Command::new(env!("CARGO_BIN_EXE_test-upstream"))
            .args(["--listen", "127.0.0.1:0"]),
    );
    let url = upstream.url.clone();
    let manifests = format!(
        r#"kind: Connector
id: up
description: The echo upstream.
owners:
  system: {{ name: sys, contact: sys@example.com }}
  security: {{ name: sec, contact: sec@example.com }}
mcp:
  url: {url}
expose:
  - {{ name: echo, risk: low }}
---
kind: Agent
id: bench
description: Benchmark agent
owners:
  business: {{ name: biz, contact: biz@example.com }}
  system: {{ name: sys, contact: sys@example.com }}
  security: {{ name: sec, contact: sec@example.com }}
deployment: {{ approved_by: ciso, approved_at: 2026-01-01 }}
review_by: 2099-01-01
tools: [up.echo]
"#
    );
    let gw = TestGateway::start(&manifests).await;
    let key = gw.issue_key("bench").await;
    let (mut direct, mut through) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        let d = round(&url, None, "echo").await;
        let t = round(&gw.url, Some(&key), "up.echo").await;
        eprintln!(
            "round {}: direct p50 {:.0} us, {:.0} calls/s; through Tollgate p50 {:.0} us, {:.0} calls/s",
            r + 1,
            d.p50_us,
            d.per_sec,
            t.p50_us,
            t.per_sec
        );
        direct.push(d);
        through.push(t);
    }
    let m = |v: &[Round], f: fn(&Round) -> f64| median(v.iter().map(f).collect());
    let (dp50, tp50) = (m(&direct, |r| r.p50_us), m(&through, |r| r.p50_us));
    let (dp99, tp99) = (m(&direct, |r| r.p99_us), m(&through, |r| r.p99_us));
    let (dthr, tthr) = (m(&direct, |r| r.per_sec), m(&through, |r| r.per_sec));
    println!(
        "| path | p50 (µs) | p99 (µs) | calls/s, {} clients |",
        env("BENCH_CONCURRENCY", 16)
    );
    println!("|---|---|---|---|");
    println!("| agent → upstream directly | {dp50:.0} | {dp99:.0} | {dthr:.0} |");
    println!("| agent → Tollgate → upstream | {tp50:.0} | {tp99:.0} | {tthr:.0} |");
    println!(
        "| ratio | {:.2}× | {:.2}× | {:.2}× |",
        tp50 / dp50,
        tp99 / dp99,
        tthr / dthr
    );
    drop(upstream);
    drop(gw);
    tokio::time::sleep(Duration::from_millis(50)).await;
}

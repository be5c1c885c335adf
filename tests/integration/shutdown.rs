//! Graceful stop of the real binary on SIGTERM (what systemd and container
//! runtimes send): no new connections, calls in progress finish within the
//! grace period, and a call the grace period cuts off is recorded
//! `interrupted` before the process exits, not at the next start.

use std::path::Path;
use std::time::{Duration, Instant};

use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};
use tollgate_tests::{Backend, ServedBinary, args, run_cli, test_manifests};

const BIN: &str = env!("CARGO_BIN_EXE_tollgate-under-test");

/// The test manifests, with `inventory.slow` allowed to wait for the
/// backend's 5 s answer.
fn manifests(backend: &Backend) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let text = test_manifests(&backend.url).replace("timeout_ms: 300", "timeout_ms: 20000");
    std::fs::write(dir.path().join("m.yaml"), text).unwrap();
    dir
}

fn key(data: &Path, manifests: &Path) -> String {
    let out = run_cli(BIN, data, manifests, &["agents", "issue-key", "tester"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn sigterm(served: &ServedBinary) {
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &served.child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// Waits (at most 60 s) for the process to exit; its status code.
fn wait_exit(served: &mut ServedBinary) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = served.child.try_wait().unwrap() {
            return status.code();
        }
        assert!(
            Instant::now() < deadline,
            "still running:\n{}",
            served.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the backend has received the slow request.
async fn backend_reached(backend: &Backend) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !backend.hits().iter().any(|h| h.path == "/api/slow") {
        assert!(
            Instant::now() < deadline,
            "the slow call never reached the backend"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn slow_records(data: &Path, manifests: &Path) -> Vec<Value> {
    let out = run_cli(BIN, data, manifests, &["audit", "list", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    all.into_iter()
        .filter(|r| r["tool"] == "inventory.slow")
        .collect()
}

type Call = tokio::task::JoinHandle<(
    Result<rmcp::model::CallToolResult, rmcp::ServiceError>,
    rmcp::service::RunningService<rmcp::RoleClient, ()>,
)>;

/// The real binary with `grace` seconds of shutdown grace, and a call to
/// `inventory.slow` (5 s at the backend) in progress at the backend.
struct SlowCall {
    backend: Backend,
    dir: tempfile::TempDir,
    data: tempfile::TempDir,
    served: ServedBinary,
    call: Call,
}

async fn slow_call_in_progress(grace: &str) -> SlowCall {
    let backend = Backend::start().await;
    let dir = manifests(&backend);
    let data = tempfile::tempdir().unwrap();
    let key = key(data.path(), dir.path());
    let served = ServedBinary::start(
        BIN,
        data.path(),
        dir.path(),
        &[
            ("TOLLGATE_SHUTDOWN_GRACE_SECS", grace),
            ("RUST_LOG", "info"),
        ],
    );
    let client = served.client(&key).await;
    let call = tokio::spawn(async move {
        let r = client
            .call_tool(CallToolRequestParams::new("inventory.slow").with_arguments(args(json!({}))))
            .await;
        (r, client)
    });
    backend_reached(&backend).await;
    SlowCall {
        backend,
        dir,
        data,
        served,
        call,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_a_call_in_progress_finish_and_refuses_new_connections() {
    let SlowCall {
        backend,
        dir,
        data,
        mut served,
        call,
    } = slow_call_in_progress("30").await;
    sigterm(&served);

    // The listener closes at once: a new client cannot connect.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let refused = reqwest::Client::new()
            .get(format!("http://{}/mcp", served.addr))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_err();
        if refused {
            break;
        }
        assert!(Instant::now() < deadline, "new connections still accepted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The call in progress gets the backend's answer.
    let (result, _client) = call.await.unwrap();
    let result = result.expect("the call in progress was cut off");
    assert_ne!(result.is_error, Some(true), "{result:?}");
    assert!(format!("{result:?}").contains("late"), "{result:?}");
    assert_eq!(wait_exit(&mut served), Some(0), "{}", served.stderr());
    let log = served.stderr();
    assert!(log.contains("SIGTERM"), "{log}");
    assert!(
        !log.contains("did not finish within the shutdown grace"),
        "{log}"
    );

    let records = slow_records(data.path(), dir.path());
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["outcome"], "ok", "{records:?}");
    assert_eq!(
        backend
            .hits()
            .iter()
            .filter(|h| h.path == "/api/slow")
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_the_grace_period_cuts_off_is_recorded_interrupted_before_exit() {
    let SlowCall {
        dir,
        data,
        mut served,
        call,
        ..
    } = slow_call_in_progress("1").await;
    sigterm(&served);
    // The backend answers after 5 s; the 1 s grace period ends the wait
    // first (the record below says `interrupted`, not `ok`).
    assert_eq!(wait_exit(&mut served), Some(0), "{}", served.stderr());
    // The client never hears success (rmcp's client may keep trying to
    // resume the stream: give it a bound).
    if let Ok(joined) = tokio::time::timeout(Duration::from_secs(10), call).await {
        let (result, _client) = joined.unwrap();
        assert!(
            result.is_err(),
            "the cut-off call must not report success: {result:?}"
        );
    }
    let log = served.stderr();
    assert!(
        log.contains("1 call(s) did not finish within the shutdown grace period"),
        "{log}"
    );

    // Recorded by the stopping process itself: no start has run since.
    let records = slow_records(data.path(), dir.path());
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["outcome"], "interrupted", "{records:?}");
    assert_eq!(
        records[0]["outcome_code"], "gateway_shutdown",
        "{records:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_only_listening_on_its_stream_does_not_hold_the_stop() {
    let backend = Backend::start().await;
    let dir = manifests(&backend);
    let data = tempfile::tempdir().unwrap();
    let key = key(data.path(), dir.path());
    // A grace period far longer than `wait_exit` waits: only closing the
    // listening stream at once lets the process exit in time.
    let mut served = ServedBinary::start(
        BIN,
        data.path(),
        dir.path(),
        &[
            ("TOLLGATE_SHUTDOWN_GRACE_SECS", "600"),
            ("RUST_LOG", "info"),
        ],
    );
    let http = reqwest::Client::new();
    let post = |body: Value, session: Option<&str>| {
        let mut r = http
            .post(&served.url)
            .bearer_auth(&key)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-06-18")
            .json(&body);
        if let Some(s) = session {
            r = r.header("mcp-session-id", s);
        }
        r.send()
    };
    let init = post(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "listener", "version": "1"}}}),
        None,
    )
    .await
    .unwrap();
    let session = init.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    drop(init.bytes().await.unwrap());
    post(
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        Some(&session),
    )
    .await
    .unwrap();
    // The GET stream a client listens on for server messages; held open.
    let stream = http
        .get(&served.url)
        .bearer_auth(&key)
        .header("accept", "text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );

    sigterm(&served);
    assert_eq!(wait_exit(&mut served), Some(0), "{}", served.stderr());
    assert!(
        !served
            .stderr()
            .contains("still busy at the end of the shutdown grace"),
        "{}",
        served.stderr()
    );
    drop(stream);
}

/// A stopping gateway kills its upstream MCP servers' child processes,
/// even one that would not exit on its own when its stdin closes
/// (`UPSTREAM_LINGER`): none is left running after the gateway exits.
#[tokio::test(flavor = "multi_thread")]
async fn a_graceful_stop_leaves_no_upstream_child_running() {
    let events = tempfile::tempdir().unwrap();
    let events_file = events.path().join("events.jsonl");
    let manifests = tempfile::tempdir().unwrap();
    std::fs::write(
        manifests.path().join("test.yaml"),
        format!(
            r#"kind: Connector
id: up
description: A stdio upstream that lingers
owners:
  system: {{ name: sys, contact: sys@example.com }}
  security: {{ name: sec, contact: sec@example.com }}
mcp:
  stdio:
    command: {}
    args: [--stdio]
    env: {{ UPSTREAM_EVENTS: {}, UPSTREAM_LINGER: "1" }}
expose:
  - {{ name: echo, risk: low }}
---
kind: Agent
id: tester
description: Test agent
owners:
  business: {{ name: biz, contact: biz@example.com }}
  system: {{ name: sys, contact: sys@example.com }}
  security: {{ name: sec, contact: sec@example.com }}
deployment: {{ approved_by: ciso, approved_at: 2026-01-01 }}
review_by: 2099-01-01
tools: [up.echo]
"#,
            env!("CARGO_BIN_EXE_test-upstream"),
            events_file.display()
        ),
    )
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut served = ServedBinary::start(BIN, data.path(), manifests.path(), &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let pid = loop {
        let started = std::fs::read_to_string(&events_file).unwrap_or_default();
        if let Some(pid) = started
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|e| e["event"] == "started")
            .and_then(|e| e["pid"].as_u64())
        {
            break pid;
        }
        assert!(Instant::now() < deadline, "the upstream never started");
        std::thread::sleep(Duration::from_millis(50));
    };
    let alive = |pid: u64| {
        std::process::Command::new("kill")
            .args(["-0", &pid.to_string()])
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    assert!(alive(pid));
    sigterm(&served);
    assert_eq!(wait_exit(&mut served), Some(0), "{}", served.stderr());
    // Reaped by the gateway before it exited (a zombie would still answer
    // `kill -0`; an orphan would linger for two minutes).
    assert!(!alive(pid), "the upstream child outlived the gateway");
}

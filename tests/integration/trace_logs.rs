//! Secrets never reach the logs, even at `RUST_LOG=trace`: the real binary
//! over stdio and over HTTP, a task started in band (its result carries a
//! task token), calls through a connector whose credential is a static
//! secret canary, with an agent key and then the task token as bearer.
//! A control run with `TOLLGATE_LOG_PAYLOADS=1` shows the same run does
//! print the task token when payload logging is asked for, so the check
//! is not vacuous.

use std::path::Path;
use std::time::Duration;

use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::{RoleClient, ServiceExt};
use serde_json::json;
use tollgate_tests::{Backend, ServedBinary, args, run_cli};

const BIN: &str = env!("CARGO_BIN_EXE_tollgate-under-test");
const CANARY: &str = "CANARY-5b1d-trace-static-secret";

/// A connector whose backend credential is the canary, and an agent that
/// may use it and start its own tasks.
fn setup(backend: &Backend) -> (tempfile::TempDir, tempfile::TempDir, String) {
    let manifests = tempfile::tempdir().unwrap();
    std::fs::write(
        manifests.path().join("test.yaml"),
        format!(
            r#"kind: Connector
id: zeta
description: zeta API
owners:
  system: {{ name: zeta-team, contact: zeta@example.com }}
  security: {{ name: secops, contact: secops@example.com }}
http:
  base_url: {}/api
auth:
  static: {{ header: x-api-key, value: {{ file: zeta.secret }} }}
tools:
  - name: read
    description: Read
    risk: low
    input_schema: {{ type: object, properties: {{ id: {{ type: string }} }} }}
    http:
      request: {{ method: GET, path: "/things" }}
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
tools: [zeta.read]
"#,
            backend.url
        ),
    )
    .unwrap();
    std::fs::write(manifests.path().join("zeta.secret"), CANARY).unwrap();
    let data = tempfile::tempdir().unwrap();
    let out = run_cli(
        BIN,
        data.path(),
        manifests.path(),
        &["agents", "issue-key", "tester"],
    );
    assert_eq!(out.status.code(), Some(0));
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    (data, manifests, key)
}

fn call(name: &str, a: serde_json::Value) -> CallToolRequestParams {
    CallToolRequestParams::new(name.to_string()).with_arguments(args(a))
}

fn ok(r: &CallToolResult) {
    assert_eq!(r.is_error, Some(false), "{:?}", r.content);
}

/// Starts a task in band and calls the connector within it; returns the
/// task token from the result.
async fn start_task_and_call(client: &RunningService<RoleClient, ()>) -> String {
    let token = start_task(client, "zeta.read").await;
    ok(&client
        .call_tool(call("zeta.read", json!({ "id": "1" })))
        .await
        .unwrap());
    token
}

/// Starts a task for `tool` in band; returns its task token.
async fn start_task(client: &RunningService<RoleClient, ()>, tool: &str) -> String {
    let started = client
        .call_tool(call(
            "tollgate.start_task",
            json!({ "purpose": "trace test", "tools": [tool], "ttl_seconds": 300 }),
        ))
        .await
        .unwrap();
    ok(&started);
    started.structured_content.as_ref().unwrap()["task_token"]
        .as_str()
        .unwrap()
        .to_string()
}

fn assert_clean(logs: &str, secrets: &[(&str, &str)]) {
    // The run really logged at trace level.
    assert!(logs.contains("TRACE"), "no trace output at all:\n{logs}");
    for (what, secret) in secrets {
        assert!(!logs.contains(secret), "the {what} leaked into the logs");
    }
}

async fn stdio_run(
    data: &Path,
    manifests: &Path,
    key: &str,
    allow_payloads: bool,
) -> (String, String) {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("--data")
        .arg(data)
        .arg("--manifests")
        .arg(manifests)
        .args(["serve", "--stdio"])
        .env("TOLLGATE_AGENT_KEY", key)
        .env("RUST_LOG", "trace");
    if allow_payloads {
        cmd.env("TOLLGATE_LOG_PAYLOADS", "1");
    } else {
        cmd.env_remove("TOLLGATE_LOG_PAYLOADS");
    }
    let (transport, stderr) = rmcp::transport::TokioChildProcess::builder(cmd)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let logs = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut s = String::new();
        if let Some(mut e) = stderr {
            let _ = e.read_to_string(&mut s).await;
        }
        s
    });
    let client = ().serve(transport).await.unwrap();
    let token = start_task_and_call(&client).await;
    client.cancel().await.unwrap();
    let logs = tokio::time::timeout(Duration::from_secs(30), logs)
        .await
        .unwrap()
        .unwrap();
    (logs, token)
}

#[tokio::test]
async fn stdio_at_trace_level_logs_no_key_token_or_backend_secret() {
    let backend = Backend::start().await;
    let (data, manifests, key) = setup(&backend);
    let (logs, token) = stdio_run(data.path(), manifests.path(), &key, false).await;
    assert_clean(
        &logs,
        &[
            ("agent key", &key),
            ("task token", &token),
            ("static secret", CANARY),
        ],
    );
    assert!(
        backend.hits().iter().all(|h| h
            .headers
            .iter()
            .any(|(k, v)| k == "x-api-key" && v == CANARY)),
        "the backend got its secret"
    );

    // Control: with the explicit opt-in, the same run does log payloads,
    // task token included.
    let (logs, token) = stdio_run(data.path(), manifests.path(), &key, true).await;
    assert!(
        logs.contains(&token),
        "TOLLGATE_LOG_PAYLOADS=1 should let rmcp log the start_task result"
    );
}

#[tokio::test]
async fn http_at_trace_level_logs_no_key_token_or_backend_secret() {
    let backend = Backend::start().await;
    let (data, manifests, key) = setup(&backend);
    let mut served =
        ServedBinary::start(BIN, data.path(), manifests.path(), &[("RUST_LOG", "trace")]);
    let client = served.client(&key).await;
    let token = start_task_and_call(&client).await;
    // The task token as the bearer of another connection.
    let in_task = served.client(&token).await;
    ok(&in_task
        .call_tool(call("zeta.read", json!({ "id": "2" })))
        .await
        .unwrap());
    in_task.cancel().await.unwrap();
    client.cancel().await.unwrap();
    assert_eq!(backend.hits().len(), 2);
    let logs = served.kill();
    // The operator's per-call lines are part of what is checked.
    assert!(
        logs.lines()
            .filter(|l| l.contains("tollgate::call"))
            .count()
            >= 3,
        "no per-call log lines:\n{logs}"
    );
    assert_clean(
        &logs,
        &[
            ("agent key", &key),
            ("task token", &token),
            ("static secret", CANARY),
        ],
    );
}

/// The same over an upstream MCP server reached over HTTP (an `mcp`
/// connector): its static credential, the agent key and the task token
/// stay out of the trace-level logs, while the upstream receives the
/// credential (and only it).
#[tokio::test(flavor = "multi_thread")]
async fn an_http_upstream_mcp_server_at_trace_level_leaks_nothing() {
    let events = tempfile::tempdir().unwrap();
    let events_file = events.path().join("events.jsonl");
    let upstream = tollgate_tests::Listening::start(
        std::process::Command::new(env!("CARGO_BIN_EXE_test-upstream"))
            .args(["--listen", "127.0.0.1:0"])
            .env("UPSTREAM_EVENTS", &events_file),
    );
    let url = upstream.url.clone();
    let manifests = tempfile::tempdir().unwrap();
    std::fs::write(
        manifests.path().join("test.yaml"),
        format!(
            r#"kind: Connector
id: up
description: An upstream MCP server
owners:
  system: {{ name: sys, contact: sys@example.com }}
  security: {{ name: secops, contact: secops@example.com }}
mcp:
  url: {url}
auth:
  static: {{ header: authorization, value: {{ file: up.secret }} }}
expose:
  - {{ name: whoami, risk: low }}
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
tools: [up.whoami]
"#
        ),
    )
    .unwrap();
    let secret = format!("Bearer {CANARY}");
    std::fs::write(manifests.path().join("up.secret"), &secret).unwrap();
    let data = tempfile::tempdir().unwrap();
    let out = run_cli(
        BIN,
        data.path(),
        manifests.path(),
        &["agents", "issue-key", "tester"],
    );
    assert_eq!(out.status.code(), Some(0));
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let mut served =
        ServedBinary::start(BIN, data.path(), manifests.path(), &[("RUST_LOG", "trace")]);
    let client = served.client(&key).await;
    let token = start_task(&client, "up.whoami").await;
    for _ in 0..2 {
        let r = client
            .call_tool(call("up.whoami", json!({})))
            .await
            .unwrap();
        ok(&r);
        // The upstream's echo of its headers is redacted on the way back.
        let text = r.content[0].as_text().unwrap().text.clone();
        assert!(
            !text.contains(CANARY),
            "the agent saw the credential: {text}"
        );
    }
    let in_task = served.client(&token).await;
    ok(&in_task
        .call_tool(call("up.whoami", json!({})))
        .await
        .unwrap());
    in_task.cancel().await.unwrap();
    client.cancel().await.unwrap();
    let logs = served.kill();
    drop(upstream);
    let received = std::fs::read_to_string(&events_file).unwrap();
    assert!(received.contains(CANARY), "the upstream got its credential");
    assert!(
        !received.contains(&key) && !received.contains(&token),
        "the upstream never sees the agent's credentials"
    );
    assert_clean(
        &logs,
        &[
            ("agent key", &key),
            ("task token", &token),
            ("upstream credential", CANARY),
        ],
    );
}

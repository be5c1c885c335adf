//! The operator's live view: `/metrics` (behind its token on the main
//! listener, or absent), the per-call log line and its warnings from the
//! real binary in text and JSON, and agent status in `agents list`.

use prometheus_parse::{Scrape, Value};
use rmcp::model::CallToolRequestParams;
use serde_json::json;
use tollgate::secrets::SecretString;
use tollgate::server::HttpOptions;
use tollgate_tests::{Backend, ServedBinary, TestGateway, args, run_cli, test_manifests};

const BIN: &str = env!("CARGO_BIN_EXE_tollgate-under-test");
const SCRAPE_TOKEN: &str = "scrape-token-6f1e2d3c4b5a";

fn call(name: &str, a: serde_json::Value) -> CallToolRequestParams {
    CallToolRequestParams::new(name.to_string()).with_arguments(args(a))
}

/// The value of the sample `metric` whose labels include `labels`, summed
/// over the samples that match (0 when none does).
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

async fn scrape(url: &str, token: Option<&str>) -> reqwest::Response {
    let mut r = reqwest::Client::new().get(url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.send().await.unwrap()
}

#[tokio::test]
async fn metrics_need_the_token_and_count_allowed_and_denied_calls() {
    let backend = Backend::start().await;
    let gw = TestGateway::start_with(
        &test_manifests(&backend.url),
        HttpOptions {
            metrics_token: Some(SecretString::new(SCRAPE_TOKEN)),
            ..HttpOptions::default()
        },
    )
    .await;
    let key = gw.issue_key("tester").await;
    let client = gw.client(&key).await;
    let ok = client
        .call_tool(call("inventory.get_item", json!({ "item_id": "7" })))
        .await
        .unwrap();
    assert_eq!(ok.is_error, Some(false));
    // Not granted to `tester`: refused by authorize (to the agent, as an
    // unknown tool; the operator sees the real reason).
    let denied = client.call_tool(call("inventory.purge", json!({}))).await;
    assert!(denied.is_err(), "{denied:?}");
    let server_error = client
        .call_tool(call("inventory.boom", json!({})))
        .await
        .unwrap();
    assert_eq!(server_error.is_error, Some(true));
    // An operator task, so the active-tasks gauge has something to count.
    let task = gw
        .start_task("tester", &["inventory.get_item"], &[], 300)
        .await;
    client.cancel().await.unwrap();

    let url = format!("{}/metrics", gw.base());
    assert_eq!(scrape(&url, None).await.status(), 401);
    assert_eq!(
        scrape(&url, Some("wrong-token-0123456789")).await.status(),
        401
    );
    assert_eq!(scrape(&url, Some(&key)).await.status(), 401);
    let r = scrape(&url, Some(SCRAPE_TOKEN)).await;
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();

    for (what, secret) in [
        ("agent key", key.as_str()),
        ("task token", task.token.as_str()),
        ("scrape token", SCRAPE_TOKEN),
    ] {
        assert!(!body.contains(secret), "the {what} appears in the scrape");
    }

    let parsed = Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap();
    let calls = "tollgate_calls_total";
    assert_eq!(
        value(&parsed, calls, &[("decision", "allow"), ("outcome", "ok")]),
        1.0,
        "{body}"
    );
    assert_eq!(
        value(
            &parsed,
            calls,
            &[
                ("decision", "deny"),
                ("outcome", "refused"),
                ("reason", "tool_not_granted")
            ]
        ),
        1.0,
        "{body}"
    );
    assert_eq!(
        value(
            &parsed,
            calls,
            &[
                ("decision", "allow"),
                ("outcome", "tool_error"),
                ("reason", "backend_error_status")
            ]
        ),
        1.0,
        "{body}"
    );
    assert_eq!(
        value(&parsed, "tollgate_call_duration_seconds_count", &[]),
        3.0
    );
    // Every call passed admit and authorize; only the two allowed ones got
    // as far as dispatch.
    let stage = "tollgate_stage_duration_seconds_count";
    assert_eq!(value(&parsed, stage, &[("stage", "admit")]), 3.0);
    assert_eq!(value(&parsed, stage, &[("stage", "authorize")]), 3.0);
    assert_eq!(value(&parsed, stage, &[("stage", "record")]), 2.0);
    assert_eq!(value(&parsed, stage, &[("stage", "dispatch")]), 2.0);
    assert_eq!(
        value(
            &parsed,
            "tollgate_backend_duration_seconds_count",
            &[("connector", "inventory")]
        ),
        2.0
    );
    assert_eq!(value(&parsed, "tollgate_active_tasks", &[]), 1.0, "{body}");
    assert_eq!(value(&parsed, "tollgate_pending_approvals", &[]), 0.0);
    assert_eq!(value(&parsed, "tollgate_store_scrape_ok", &[]), 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_token_there_is_no_metrics_route() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&test_manifests(&backend.url)).await;
    assert_eq!(
        scrape(&format!("{}/metrics", gw.base()), Some(SCRAPE_TOKEN))
            .await
            .status(),
        404
    );
}

/// A recording backend, the test manifests pointing at it, a data
/// directory and a key for `tester` issued by the real binary.
async fn binary_setup() -> (Backend, tempfile::TempDir, tempfile::TempDir, String) {
    let backend = Backend::start().await;
    let manifests = tempfile::tempdir().unwrap();
    std::fs::write(
        manifests.path().join("test.yaml"),
        test_manifests(&backend.url),
    )
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let out = run_cli(
        BIN,
        data.path(),
        manifests.path(),
        &["agents", "issue-key", "tester"],
    );
    assert_eq!(out.status.code(), Some(0));
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    (backend, manifests, data, key)
}

/// The binary with `envs`, one allowed call, one refused, one answered
/// with a 500; returns its stderr and the agent key.
async fn served_run(envs: &[(&str, &str)]) -> (String, String) {
    let (_backend, manifests, data, key) = binary_setup().await;
    let mut served = ServedBinary::start(BIN, data.path(), manifests.path(), envs);
    let client = served.client(&key).await;
    for (tool, a) in [
        ("inventory.get_item", json!({ "item_id": "7" })),
        ("inventory.purge", json!({})),
        ("inventory.boom", json!({})),
    ] {
        // The refused one is a JSON-RPC error to the agent.
        let _ = client.call_tool(call(tool, a)).await;
    }
    client.cancel().await.unwrap();
    (served.kill(), key)
}

#[tokio::test]
async fn text_logs_have_no_colour_codes_off_a_terminal_and_one_line_per_call() {
    let (logs, key) = served_run(&[("RUST_LOG", "info")]).await;
    assert!(
        !logs.contains('\u{1b}'),
        "ANSI escapes in piped stderr:\n{logs}"
    );
    assert!(!logs.contains(&key));
    let lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("tollgate::call") && l.contains(" INFO "))
        .collect();
    assert_eq!(lines.len(), 3, "{logs}");
    assert!(
        lines[0].contains("agent=tester")
            && lines[0].contains("tool=inventory.get_item")
            && lines[0].contains("decision=allow")
            && lines[0].contains("outcome=ok")
            && lines[0].contains("backend_status=200"),
        "{}",
        lines[0]
    );
    assert!(lines[1].contains("reason=tool_not_granted"), "{}", lines[1]);
    assert!(
        logs.lines()
            .any(|l| l.contains(" WARN ") && l.contains("server error") && l.contains("500")),
        "no warning for the 500:\n{logs}"
    );
    assert!(
        logs.lines()
            .any(|l| l.contains("gateway started") && l.contains("connectors=1")),
        "no start-up summary:\n{logs}"
    );
}

#[tokio::test]
async fn json_logs_are_json_on_every_line_with_the_call_fields() {
    let (logs, key) = served_run(&[
        ("RUST_LOG", "info"),
        ("TOLLGATE_LOG_FORMAT", "json"),
        // Every backend call is over a zero threshold: each is flagged.
        ("TOLLGATE_SLOW_CALL_MS", "0"),
    ])
    .await;
    assert!(!logs.contains(&key));
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let calls: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["target"] == "tollgate::call" && l["level"] == "INFO")
        .collect();
    assert_eq!(calls.len(), 3, "{logs}");
    let first = calls[0];
    for field in [
        "agent",
        "tool",
        "task",
        "decision",
        "reason",
        "outcome",
        "backend_status",
        "backend_ms",
        "latency_ms",
    ] {
        assert!(first.get(field).is_some(), "no `{field}` in {first}");
    }
    assert_eq!(first["agent"], "tester");
    assert_eq!(first["tool"], "inventory.get_item");
    assert_eq!(first["decision"], "allow");
    assert_eq!(first["outcome"], "ok");
    assert_eq!(first["backend_status"], 200);
    assert_eq!(calls[1]["decision"], "deny");
    assert_eq!(calls[1]["reason"], "tool_not_granted");
    let slow = lines
        .iter()
        .filter(|l| l["level"] == "WARN" && l["message"] == "slow backend call")
        .count();
    assert_eq!(slow, 2, "{logs}");
    let started = lines
        .iter()
        .find(|l| l["connectors"] == 1 && l.get("agents").is_some())
        .unwrap_or_else(|| panic!("no start-up summary:\n{logs}"));
    assert_eq!(started["agents"], 2);
    assert_eq!(started["tools"], 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_list_shows_each_agents_status() {
    let backend = Backend::start().await;
    // `other` was due for review long ago.
    let manifests = test_manifests(&backend.url);
    let at = manifests.rfind("review_by: 2099-01-01").unwrap();
    let mut manifests = manifests;
    manifests.replace_range(
        at..at + "review_by: 2099-01-01".len(),
        "review_by: 2020-01-01",
    );
    let gw = TestGateway::start(&manifests).await;
    let out = gw.cli(BIN, &["agents", "suspend", "tester", "--reason", "test"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    let out = gw.cli(BIN, &["agents", "list", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let by_id = |id: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(by_id("tester")["status"], "suspended");
    assert_eq!(by_id("tester")["review_overdue"], false);
    assert_eq!(by_id("other")["status"], "active");
    assert_eq!(by_id("other")["review_overdue"], true);

    let out = gw.cli(BIN, &["agents", "list"]);
    let table = String::from_utf8(out.stdout).unwrap();
    let row = |id: &str| {
        table
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("no row for {id}:\n{table}"))
            .to_string()
    };
    assert!(table.lines().next().unwrap().contains("STATUS"), "{table}");
    assert!(row("tester").contains("suspended"), "{table}");
    assert!(row("other").contains("review overdue"), "{table}");
}

#[tokio::test]
async fn metrics_listen_serves_metrics_on_their_own_address_only() {
    let (_backend, manifests, data, key) = binary_setup().await;
    let served = ServedBinary::start(
        BIN,
        data.path(),
        manifests.path(),
        &[
            ("RUST_LOG", "info"),
            ("TOLLGATE_METRICS_LISTEN", "127.0.0.1:0"),
        ],
    );
    // The start-up summary names the metrics address (it may follow the
    // banner ServedBinary waits for: wait for it, bounded).
    let mut logs = served.stderr();
    for _ in 0..1500 {
        if logs.contains("metrics=http") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        logs = served.stderr();
    }
    let metrics_url = logs
        .split("metrics=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no metrics address in the summary:\n{logs}"))
        .to_string();
    let client = served.client(&key).await;
    client
        .call_tool(call("inventory.get_item", json!({ "item_id": "7" })))
        .await
        .unwrap();
    client.cancel().await.unwrap();

    let r = scrape(&metrics_url, None).await;
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(!body.contains(&key));
    let parsed = Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap();
    assert_eq!(
        value(&parsed, "tollgate_calls_total", &[("decision", "allow")]),
        1.0,
        "{body}"
    );
    // Not on the main listener: no token was configured there.
    let main = format!("http://{}/metrics", served.addr);
    assert_eq!(scrape(&main, None).await.status(), 404);
}

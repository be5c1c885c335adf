//! Tasks: out of band (CLI, task tokens) and in band (gateway tools, bound
//! to the session or named in `_meta`), scope and constraints, required
//! tasks, expiry by the clock (no sleeps), and the agent's suspension.

use std::time::Duration;

use rmcp::model::{CallToolRequestParams, CallToolResult};
use serde_json::{Value, json};
use tollgate_tests::{Backend, TestGateway, args, raw_post, test_manifests};

const BIN: &str = env!("CARGO_BIN_EXE_tollgate-under-test");

fn call(name: &str, a: Value) -> CallToolRequestParams {
    CallToolRequestParams::new(name.to_string()).with_arguments(args(a))
}

fn text(r: &CallToolResult) -> String {
    r.content[0].as_text().unwrap().text.clone()
}

fn names(tools: Vec<rmcp::model::Tool>) -> Vec<String> {
    tools.into_iter().map(|t| t.name.to_string()).collect()
}

fn init_body() -> String {
    json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_token_calls_exactly_its_tools_until_the_task_ends() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&test_manifests(&backend.url)).await;
    let out = gw.cli(
        BIN,
        &[
            "tasks",
            "start",
            "--agent",
            "tester",
            "--purpose",
            "Count bolts",
            "--tools",
            "inventory.get_item",
            "--ttl",
            "10m",
            "--by",
            "alice",
            "--json",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let started: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (task_id, token) = (
        started["task_id"].as_str().unwrap().to_string(),
        started["task_token"].as_str().unwrap().to_string(),
    );

    let client = gw.client(&token).await;
    assert_eq!(
        names(client.list_all_tools().await.unwrap()),
        ["inventory.get_item", "tollgate.end_task"]
    );
    let r = client
        .call_tool(call("inventory.get_item", json!({ "item_id": "1" })))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(false));
    // Granted to the agent, but not part of the task: refused, naming it.
    let r = client
        .call_tool(call(
            "inventory.create_item",
            json!({ "name": "x", "qty": 1 }),
        ))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true));
    assert!(
        text(&r).contains(&task_id) && text(&r).contains("Count bolts"),
        "{}",
        text(&r)
    );
    assert_eq!(backend.hits().len(), 1);

    let out = gw.cli(
        BIN,
        &[
            "tasks", "end", &task_id, "--reason", "done", "--by", "alice",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The running client and a replay of the token are both refused.
    assert!(
        client
            .call_tool(call("inventory.get_item", json!({ "item_id": "1" })))
            .await
            .is_err()
    );
    let r = raw_post(&gw.url, Some(&token), init_body()).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["reason"], "task_ended");
    assert_eq!(backend.hits().len(), 1);

    let out = gw.cli(BIN, &["tasks", "show", &task_id, "--json"]);
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["task"]["status"], "revoked");
    assert_eq!(shown["task"]["started_by"], "alice");
    assert_eq!(shown["task"]["ended_by"], "alice");
    let d = gw.decisions().await;
    assert_eq!(d[0].task_id.as_deref(), Some(task_id.as_str()));
    assert_eq!(d[0].credential_id, format!("task:{task_id}"));
    assert_eq!(
        (d[1].reason_code.as_str(), d[1].task_id.as_deref()),
        ("outside_task", Some(task_id.as_str()))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn starting_a_task_beyond_the_grants_or_the_ttl_cap_is_refused() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&test_manifests(&backend.url)).await;
    let start = |tools: &str, ttl: &str, extra: &[&str]| {
        let mut a = vec![
            "tasks",
            "start",
            "--agent",
            "tester",
            "--purpose",
            "p",
            "--tools",
            tools,
            "--ttl",
            ttl,
        ];
        a.extend_from_slice(extra);
        gw.cli(BIN, &a)
    };
    let out = start("inventory.purge", "5m", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("a task can only narrow the grants"));
    let out = start("inventory.get_item", "2h", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("between 1 s and 3600 s"));
    let out = start("inventory.get_item", "5m", &["--constraint", "price <= 3"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("no tool of the task has an argument `price`")
    );
    let out = start("inventory.*", "5m", &["--json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    // A glob expands within the grants only: `purge` is not granted.
    assert_eq!(
        v["tools"],
        json!([
            "inventory.boom",
            "inventory.create_item",
            "inventory.get_item",
            "inventory.slow"
        ])
    );
}

#[tokio::test]
async fn an_in_band_task_binds_to_the_session_until_the_agent_ends_it() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&test_manifests(&backend.url)).await;
    let key = gw.issue_key("tester").await;
    let client = gw.client(&key).await;
    let r = client
        .call_tool(call(
            "tollgate.start_task",
            json!({ "purpose": "p", "tools": ["inventory.purge"], "ttl_seconds": 60 }),
        ))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true));
    assert!(text(&r).contains("task_invalid"), "{}", text(&r));

    let r = client
        .call_tool(call(
            "tollgate.start_task",
            json!({ "purpose": "Restock", "tools": ["inventory.create_item"], "ttl_seconds": 60, "constraints": ["qty <= 5"] }),
        ))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(false), "{}", text(&r));
    let task_id = r.structured_content.unwrap()["task_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        names(client.list_all_tools().await.unwrap()),
        ["inventory.create_item", "tollgate.end_task"]
    );
    let r = client
        .call_tool(call("inventory.get_item", json!({ "item_id": "1" })))
        .await
        .unwrap();
    assert!(text(&r).contains("outside_task"), "{}", text(&r));
    let r = client
        .call_tool(call(
            "inventory.create_item",
            json!({ "name": "bolt", "qty": 3 }),
        ))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(false));
    let r = client
        .call_tool(call(
            "inventory.create_item",
            json!({ "name": "bolt", "qty": 9 }),
        ))
        .await
        .unwrap();
    assert!(
        text(&r).contains("qty <= 5") && text(&r).contains("task_constraint"),
        "{}",
        text(&r)
    );
    assert_eq!(backend.hits().len(), 1);

    let r = client
        .call_tool(call("tollgate.end_task", json!({})))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(false), "{}", text(&r));
    assert_eq!(
        gw.gw
            .store()
            .task(&task_id)
            .await
            .unwrap()
            .unwrap()
            .status
            .as_str(),
        "completed"
    );
    assert!(
        names(client.list_all_tools().await.unwrap()).contains(&"tollgate.start_task".to_string())
    );
    let d = gw.decisions().await;
    assert!(
        d.iter()
            .any(|r| r.tool == "tollgate.start_task" && r.outcome.as_deref() == Some("ok"))
    );
}

#[tokio::test]
async fn stateless_clients_name_their_task_in_meta() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&test_manifests(&backend.url)).await;
    let key = gw.issue_key("tester").await;
    let client = gw.stateless_client(&key).await;
    let r = client
        .call_tool(call(
            "tollgate.start_task",
            json!({ "purpose": "Look up", "tools": ["inventory.get_item"], "ttl_seconds": 60 }),
        ))
        .await
        .unwrap();
    let task_id = r.structured_content.unwrap()["task_id"]
        .as_str()
        .unwrap()
        .to_string();
    let with_task = |name: &str, a: Value, task: &str| {
        let mut p = call(name, a);
        let mut meta = serde_json::Map::new();
        meta.insert("tollgate/task".into(), json!(task));
        p.meta = Some(rmcp::model::RequestMetaObject::from(meta));
        p
    };
    let r = client
        .call_tool(with_task(
            "inventory.get_item",
            json!({ "item_id": "5" }),
            &task_id,
        ))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(false), "{}", text(&r));
    let r = client
        .call_tool(with_task(
            "inventory.create_item",
            json!({ "name": "x", "qty": 1 }),
            &task_id,
        ))
        .await
        .unwrap();
    assert!(text(&r).contains("outside_task"));
    // Another agent cannot use this task.
    let other = gw.stateless_client(&gw.issue_key("other").await).await;
    let r = other
        .call_tool(with_task(
            "inventory.get_item",
            json!({ "item_id": "5" }),
            &task_id,
        ))
        .await
        .unwrap();
    assert!(text(&r).contains("task_unknown"), "{}", text(&r));
    let d = gw.decisions().await;
    assert!(d.iter().any(|r| r.tool == "inventory.get_item"
        && r.task_id.as_deref() == Some(task_id.as_str())
        && r.decision == "allow"));
}

#[tokio::test]
async fn high_risk_tools_and_agents_that_require_tasks_are_refused_without_one() {
    let backend = Backend::start().await;
    let manifests = test_manifests(&backend.url)
        .replacen(
            "    description: Create an item\n    risk: medium",
            "    description: Create an item\n    risk: high",
            1,
        )
        .replacen(
            "tools: [inventory.get_item]\n",
            "tasks: { required: true }\ntools: [inventory.get_item]\n",
            1,
        );
    let gw = TestGateway::start(&manifests).await;
    let tester = gw.client(&gw.issue_key("tester").await).await;
    let r = tester
        .call_tool(call(
            "inventory.create_item",
            json!({ "name": "x", "qty": 1 }),
        ))
        .await
        .unwrap();
    assert!(
        text(&r).contains("task_required") && text(&r).contains("risk is high"),
        "{}",
        text(&r)
    );
    let other = gw.client(&gw.issue_key("other").await).await;
    let r = other
        .call_tool(call("inventory.get_item", json!({ "item_id": "1" })))
        .await
        .unwrap();
    assert!(text(&r).contains("must work within a task"), "{}", text(&r));
    assert!(backend.hits().is_empty());
    let started = gw
        .start_task("tester", &["inventory.create_item"], &[], 60)
        .await;
    let in_task = gw.client(&started.token).await;
    let r = in_task
        .call_tool(call(
            "inventory.create_item",
            json!({ "name": "x", "qty": 1 }),
        ))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(false));
}

#[tokio::test]
async fn a_task_expires_by_the_clock_and_its_credentials_with_it() {
    let backend = Backend::start().await;
    let manifests = test_manifests(&backend.url).replacen(
        "  timeout_ms: 2000\n",
        "  timeout_ms: 2000\nauth:\n  gateway_jwt: { ttl_seconds: 600 }\n",
        1,
    );
    let gw = TestGateway::start(&manifests).await;
    let started = gw
        .start_task("tester", &["inventory.get_item"], &[], 60)
        .await;
    let client = gw.client(&started.token).await;
    let r = client
        .call_tool(call("inventory.get_item", json!({ "item_id": "1" })))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(false));
    let creds = gw
        .gw
        .store()
        .task_credentials(&started.task.id)
        .await
        .unwrap();
    assert_eq!(creds.len(), 1);
    // The credential's own TTL (600 s) is cut to the task's end (60 s).
    assert!(creds[0].expires_at.as_deref().unwrap() <= started.task.expires_at.as_str());

    gw.clock.advance(Duration::from_secs(61));
    assert!(
        client
            .call_tool(call("inventory.get_item", json!({ "item_id": "1" })))
            .await
            .is_err()
    );
    tollgate::tasks::sweep(&gw.gw).await;
    let task = gw.gw.store().task(&started.task.id).await.unwrap().unwrap();
    assert_eq!(task.status.as_str(), "expired");
    let creds = gw
        .gw
        .store()
        .task_credentials(&started.task.id)
        .await
        .unwrap();
    assert!(creds[0].revoked_at.is_some());
    assert_eq!(backend.hits().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn suspending_the_agent_ends_its_tasks() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&test_manifests(&backend.url)).await;
    let started = gw
        .start_task("tester", &["inventory.get_item"], &[], 600)
        .await;
    let out = gw.cli(BIN, &["agents", "suspend", "tester", "--reason", "audit"]);
    assert_eq!(out.status.code(), Some(0));
    let task = gw.gw.store().task(&started.task.id).await.unwrap().unwrap();
    assert_eq!(task.status.as_str(), "revoked");
    assert!(task.end_reason.unwrap().contains("suspended"));
    assert_eq!(
        raw_post(&gw.url, Some(&started.token), init_body())
            .await
            .status(),
        401
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_starts_lists_shows_and_ends_tasks() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&test_manifests(&backend.url)).await;
    let out = gw.cli(BIN, &["admin", "issue-key", "orchestrator"]);
    assert_eq!(out.status.code(), Some(0));
    let admin = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(admin.starts_with("tga_"));
    let base = format!("http://{}/admin/tasks", gw.addr);
    let http = reqwest::Client::new();

    // No key, an agent key, a wrong key: 401.
    let agent_key = gw.issue_key("tester").await;
    for bearer in [None, Some(agent_key.as_str()), Some("tga_wrong")] {
        let mut r = http.get(&base);
        if let Some(b) = bearer {
            r = r.bearer_auth(b);
        }
        assert_eq!(r.send().await.unwrap().status(), 401, "{bearer:?}");
    }
    // Bad requests say what is wrong.
    let r = http
        .post(&base)
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body("{\"agent\":\"tester\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .post(&base)
        .bearer_auth(&admin)
        .json(&json!({ "agent": "tester", "purpose": "p", "tools": ["inventory.purge"], "ttl_seconds": 60 }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["reason"], "task_invalid");

    let r = http
        .post(&base)
        .bearer_auth(&admin)
        .json(&json!({ "agent": "tester", "purpose": "Nightly count", "tools": ["inventory.get_item"], "ttl_seconds": 300 }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let started: Value = r.json().await.unwrap();
    let id = started["task_id"].as_str().unwrap().to_string();
    assert_eq!(started["started_by"], "admin:orchestrator");
    let client = gw.client(started["task_token"].as_str().unwrap()).await;
    assert_eq!(
        client
            .call_tool(call("inventory.get_item", json!({ "item_id": "1" })))
            .await
            .unwrap()
            .is_error,
        Some(false)
    );

    let listed: Value = http
        .get(format!("{base}?agent=tester&active=true"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["tasks"][0]["id"], id.as_str());
    let r = http
        .post(format!("{base}/{id}/end"))
        .bearer_auth(&admin)
        .json(&json!({ "reason": "count done" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .post(format!("{base}/{id}/end"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let shown: Value = http
        .get(format!("{base}/{id}"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["task"]["status"], "revoked");
    assert_eq!(shown["task"]["end_reason"], "count done");
    assert!(
        client
            .call_tool(call("inventory.get_item", json!({ "item_id": "1" })))
            .await
            .is_err()
    );
    assert_eq!(
        http.get(format!("{base}/task_nope"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

/// The test manifests with a `number` argument `price` on `create_item`.
fn with_price(backend: &str) -> String {
    test_manifests(backend).replacen(
        "        trace: { type: string }\n",
        "        trace: { type: string }\n        price: { type: number }\n",
        1,
    )
}

#[tokio::test]
async fn constraints_compare_numbers_by_value_and_a_missing_argument_fails_them() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&with_price(&backend.url)).await;
    let strict = gw
        .start_task(
            "tester",
            &["inventory.create_item", "inventory.get_item"],
            &["price <= 10", "qty in [1, 2]"],
            600,
        )
        .await;
    let client = gw.client(&strict.token).await;
    // `2.0` is in `[1, 2]`, and `10.0` is within `<= 10`.
    let r = client
        .call_tool(call(
            "inventory.create_item",
            json!({ "name": "bolt", "qty": 2.0, "price": 10.0 }),
        ))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(false), "{}", text(&r));
    // Leaving the constrained argument out does not get around it.
    let r = client
        .call_tool(call(
            "inventory.create_item",
            json!({ "name": "bolt", "qty": 1 }),
        ))
        .await
        .unwrap();
    assert!(
        text(&r).contains("task_constraint") && text(&r).contains("price <= 10"),
        "{}",
        text(&r)
    );
    // A tool without that argument is not concerned by it.
    let r = client
        .call_tool(call("inventory.get_item", json!({ "item_id": "1" })))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(false), "{}", text(&r));
    assert_eq!(backend.hits().len(), 2);

    // Written optional, the argument may be absent; present, it must hold.
    let optional = gw
        .start_task("tester", &["inventory.create_item"], &["price? <= 10"], 600)
        .await;
    let client = gw.client(&optional.token).await;
    let r = client
        .call_tool(call(
            "inventory.create_item",
            json!({ "name": "nut", "qty": 1 }),
        ))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(false), "{}", text(&r));
    let r = client
        .call_tool(call(
            "inventory.create_item",
            json!({ "name": "nut", "qty": 1, "price": 10.5 }),
        ))
        .await
        .unwrap();
    assert!(text(&r).contains("task_constraint"), "{}", text(&r));
    assert_eq!(backend.hits().len(), 3);
    let d = gw.decisions().await;
    assert_eq!(
        d.iter()
            .filter(|r| r.reason_code == "task_constraint")
            .count(),
        2
    );
}

#[tokio::test]
async fn an_integral_float_reaches_the_backend_as_the_integer_the_schema_declares() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&test_manifests(&backend.url)).await;
    let client = gw.client(&gw.issue_key("tester").await).await;
    let r = client
        .call_tool(call(
            "inventory.create_item",
            json!({ "name": "bolt", "qty": 4521.0 }),
        ))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(false), "{}", text(&r));
    let hits = backend.hits();
    let body = hits[0].body.as_ref().unwrap();
    assert_eq!(body["qty"].as_u64(), Some(4521), "{body}");
    assert!(!body.to_string().contains("4521.0"), "{body}");
}

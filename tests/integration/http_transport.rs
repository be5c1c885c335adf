//! Streamable HTTP: authentication, listing, the pipeline's refusals and
//! outcomes, and what reaches the backend and the store.

use rmcp::model::CallToolRequestParams;
use serde_json::json;
use tollgate_tests::{Backend, TestGateway, args, raw_post, test_manifests};

async fn setup() -> (Backend, TestGateway, String) {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&test_manifests(&backend.url)).await;
    let key = gw.issue_key("tester").await;
    (backend, gw, key)
}

fn call(name: &str, a: serde_json::Value) -> CallToolRequestParams {
    CallToolRequestParams::new(name.to_string()).with_arguments(args(a))
}

#[tokio::test]
async fn lists_only_granted_tools_in_a_fixed_order() {
    let (_b, gw, key) = setup().await;
    let client = gw.client(&key).await;
    let names: Vec<String> = client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    assert_eq!(
        names,
        [
            "inventory.boom",
            "inventory.create_item",
            "inventory.get_item",
            "inventory.slow",
            "tollgate.start_task"
        ]
    );

    let other = gw.issue_key("other").await;
    let client = gw.client(&other).await;
    let tools = client.list_all_tools().await.unwrap();
    assert_eq!(tools.len(), 2);
    assert_eq!(tools[0].name, "inventory.get_item");
    let hints = tools[0].annotations.clone().unwrap();
    assert_eq!(hints.read_only_hint, Some(true));
}

#[tokio::test]
async fn granted_call_reaches_backend_with_the_mapped_request() {
    let (backend, gw, key) = setup().await;
    let client = gw.client(&key).await;
    let r = client
        .call_tool(call(
            "inventory.get_item",
            json!({ "item_id": "a b/../c", "verbose": true }),
        ))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(false));
    let hits = backend.hits();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].method, "GET");
    // The argument stays one path segment: `/` and `.` are encoded.
    assert_eq!(hits[0].path, "/api/items/a%20b%2F%2E%2E%2Fc");
    assert_eq!(hits[0].query.as_deref(), Some("v=true"));
    let structured = r.structured_content.unwrap();
    assert_eq!(structured["path"], "/api/items/a%20b%2F%2E%2E%2Fc");

    let r = client
        .call_tool(call(
            "inventory.create_item",
            json!({ "name": "bolt", "qty": 3, "trace": "t-1" }),
        ))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(false));
    let hit = backend.hits().pop().unwrap();
    assert_eq!(hit.method, "POST");
    assert_eq!(hit.path, "/api/items");
    // Header-mapped arguments go to the header and not into the body.
    assert_eq!(hit.body, Some(json!({ "name": "bolt", "qty": 3 })));
    assert!(
        hit.headers
            .iter()
            .any(|(k, v)| k == "x-trace" && v == "t-1")
    );
    // The agent's own key never reaches the backend.
    assert!(hit.headers.iter().all(|(_, v)| !v.contains(&key)));
}

#[tokio::test]
async fn schema_invalid_arguments_get_a_clear_tool_error_and_never_reach_the_backend() {
    let (backend, gw, key) = setup().await;
    let client = gw.client(&key).await;
    let r = client
        .call_tool(call(
            "inventory.create_item",
            json!({ "name": 7, "qty": -1 }),
        ))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true));
    let text = r.content[0].as_text().unwrap().text.clone();
    assert!(
        text.contains("Invalid arguments for inventory.create_item"),
        "{text}"
    );
    assert!(text.contains("/qty"), "{text}");
    assert!(text.contains("/name"), "{text}");
    assert_eq!(r.meta.unwrap().0["tollgate/reason"], "invalid_arguments");
    assert!(backend.hits().is_empty());
    let d = gw.decisions().await;
    assert_eq!(d.last().unwrap().reason_code, "invalid_arguments");
    assert_eq!(d.last().unwrap().decision, "deny");
}

#[tokio::test]
async fn ungranted_and_unknown_tools_are_refused_alike() {
    let (backend, gw, key) = setup().await;
    let client = gw.client(&key).await;
    let hidden = client
        .call_tool(call("inventory.purge", json!({})))
        .await
        .unwrap_err()
        .to_string();
    let unknown = client
        .call_tool(call("inventory.nope", json!({})))
        .await
        .unwrap_err()
        .to_string();
    assert!(hidden.contains("Unknown tool: inventory.purge"), "{hidden}");
    assert_eq!(
        hidden.replace("inventory.purge", "X"),
        unknown.replace("inventory.nope", "X")
    );
    assert!(backend.hits().is_empty());
    let reasons: Vec<String> = gw
        .decisions()
        .await
        .into_iter()
        .map(|d| d.reason_code)
        .collect();
    assert_eq!(reasons, ["tool_not_granted", "unknown_tool"]);
}

#[tokio::test]
async fn missing_or_wrong_key_gets_401_with_bearer_challenge() {
    let (backend, gw, _key) = setup().await;
    let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}).to_string();
    for key in [None, Some("tgk_not-a-real-key"), Some("garbage")] {
        let r = raw_post(&gw.url, key, init.clone()).await;
        assert_eq!(r.status(), 401, "key {key:?}");
        let challenge = r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(challenge.starts_with("Bearer "), "{challenge}");
    }
    assert!(backend.hits().is_empty());
    assert!(gw.decisions().await.is_empty());
}

#[tokio::test]
async fn a_valid_key_in_the_query_string_is_refused() {
    let (backend, gw, key) = setup().await;
    let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}).to_string();
    // The same request with the key in the header only is served: what
    // follows is refused for the query string alone.
    assert_eq!(
        raw_post(&gw.url, Some(&key), init.clone()).await.status(),
        200
    );
    let leaked = gw.issue_key("tester").await;
    for (query, header) in [
        (format!("access_token={leaked}"), Some(key.as_str())),
        (format!("x={key}"), Some(key.as_str())),
        (format!("access_token={leaked}"), None),
        (format!("api_key={key}"), None),
    ] {
        let r = raw_post(&format!("{}?{query}", gw.url), header, init.clone()).await;
        assert_eq!(r.status(), 401, "{query} {header:?}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["reason"], "credential_in_url", "{query} {header:?}");
    }
    assert!(backend.hits().is_empty());
}

#[tokio::test]
async fn backend_500_and_timeout_become_tool_errors() {
    let (_backend, gw, key) = setup().await;
    let client = gw.client(&key).await;
    let r = client
        .call_tool(call("inventory.boom", json!({})))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true));
    let text = r.content[0].as_text().unwrap().text.clone();
    assert!(
        text.contains("HTTP 500") && text.contains("database exploded"),
        "{text}"
    );

    let r = client
        .call_tool(call("inventory.slow", json!({})))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true));
    let text = r.content[0].as_text().unwrap().text.clone();
    assert!(text.contains("backend_timeout"), "{text}");
    assert_eq!(r.meta.unwrap().0["tollgate/reason"], "backend_timeout");

    let d = gw.decisions().await;
    assert_eq!(d[0].outcome.as_deref(), Some("tool_error"));
    assert_eq!(d[0].backend_status, Some(500));
    assert_eq!(d[1].outcome.as_deref(), Some("failed"));
    assert_eq!(d[1].outcome_code.as_deref(), Some("backend_timeout"));
}

#[tokio::test]
async fn oversized_body_is_rejected_before_the_backend() {
    let (backend, gw, key) = setup().await;
    let huge = "y".repeat(128 * 1024);
    let body = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"inventory.create_item","arguments":{"name": huge, "qty": 1}}});
    let r = raw_post(&gw.url, Some(&key), body.to_string()).await;
    assert_eq!(r.status(), 413);
    assert!(backend.hits().is_empty());
}

#[tokio::test]
async fn malformed_json_rpc_gets_an_error_and_the_gateway_keeps_serving() {
    let (_backend, gw, key) = setup().await;
    let r = raw_post(&gw.url, Some(&key), "{not json").await;
    assert!(r.status().is_client_error(), "status {}", r.status());
    let client = gw.client(&key).await;
    assert_eq!(client.list_all_tools().await.unwrap().len(), 5);
}

#[tokio::test]
async fn foreign_origin_is_forbidden() {
    let (_backend, gw, key) = setup().await;
    let r = reqwest::Client::new()
        .post(&gw.url)
        .bearer_auth(&key)
        .header("origin", "https://evil.example")
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn a_session_is_bound_to_the_key_that_opened_it() {
    let (_backend, gw, key) = setup().await;
    let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}).to_string();
    let r = raw_post(&gw.url, Some(&key), init).await;
    assert_eq!(r.status(), 200);
    let session = r.headers()["mcp-session-id"].to_str().unwrap().to_string();
    let other = gw.issue_key("other").await;
    let list = json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}).to_string();
    let r = reqwest::Client::new()
        .post(&gw.url)
        .bearer_auth(&other)
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-11-25")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(list)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn stateless_2026_07_28_clients_are_served_and_governed() {
    let (backend, gw, key) = setup().await;
    let client = gw.stateless_client(&key).await;
    let tools = client.list_all_tools().await.unwrap();
    assert_eq!(tools.len(), 5);
    let r = client
        .call_tool(call("inventory.get_item", json!({ "item_id": "42" })))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(false));
    assert_eq!(backend.hits()[0].path, "/api/items/42");
    assert!(
        client
            .call_tool(call("inventory.purge", json!({})))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn every_decision_is_recorded_with_a_digest_and_sensitive_fields_redacted() {
    let (_backend, gw, key) = setup().await;
    let client = gw.client(&key).await;
    client
        .call_tool(call(
            "inventory.create_item",
            json!({ "name": "bolt", "qty": 1, "trace": "canary-s3cr3t" }),
        ))
        .await
        .unwrap();
    client
        .call_tool(call("inventory.purge", json!({})))
        .await
        .unwrap_err();
    client
        .call_tool(call("inventory.get_item", json!({ "item_id": "" })))
        .await
        .unwrap();
    let d = gw.decisions().await;
    assert_eq!(d.len(), 3);
    assert_eq!(
        (d[0].decision.as_str(), d[0].outcome.as_deref()),
        ("allow", Some("ok"))
    );
    assert_eq!(d[0].agent_id, "tester");
    assert_eq!(d[0].tool, "inventory.create_item");
    assert_eq!(d[0].transport, "http");
    assert!(d[0].latency_us.unwrap() > 0);
    assert!(
        d[0].args_digest
            .as_deref()
            .unwrap()
            .starts_with("hmac-sha256:")
    );
    assert_eq!(
        d[0].owners.as_ref().unwrap()["agent"]["business"]["name"],
        "biz"
    );
    assert_eq!(
        d[0].owners.as_ref().unwrap()["connector"]["system"]["name"],
        "inventory-team"
    );
    assert_eq!(
        (d[1].decision.as_str(), d[1].reason_code.as_str()),
        ("deny", "tool_not_granted")
    );
    assert_eq!(
        (d[2].decision.as_str(), d[2].reason_code.as_str()),
        ("deny", "invalid_arguments")
    );
    // The record keeps a copy with the sensitive field replaced; nothing
    // in the SQLite file holds its value in clear.
    let copy = d[0].arguments.as_ref().unwrap();
    assert_eq!(copy["name"], "bolt");
    assert_eq!(copy["trace"], "<redacted>");
    let bytes = std::fs::read(gw.data.path().join("tollgate.db")).unwrap();
    let wal = std::fs::read(gw.data.path().join("tollgate.db-wal")).unwrap_or_default();
    for b in [bytes, wal] {
        assert!(!b.windows(13).any(|w| w == b"canary-s3cr3t"));
    }
}

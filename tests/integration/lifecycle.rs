//! Agent lifecycle: suspend, resume and retire take effect on the next call
//! of a running gateway (changed by the real CLI, in another process, on the
//! same store); an overdue review suspends; every change is recorded.

use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};
use tollgate_tests::{Backend, TestGateway, args, test_manifests};

const BIN: &str = env!("CARGO_BIN_EXE_tollgate-under-test");

fn get_item() -> CallToolRequestParams {
    CallToolRequestParams::new("inventory.get_item").with_arguments(args(json!({ "item_id": "1" })))
}

#[tokio::test(flavor = "multi_thread")]
async fn suspend_resume_and_retire_apply_to_the_next_call() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&test_manifests(&backend.url)).await;
    let key = gw.issue_key("tester").await;
    let client = gw.client(&key).await;
    assert_eq!(
        client.call_tool(get_item()).await.unwrap().is_error,
        Some(false)
    );

    let out = gw.cli(
        BIN,
        &[
            "agents",
            "suspend",
            "tester",
            "--reason",
            "incident INC-42",
            "--by",
            "alice",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let refused = client.call_tool(get_item()).await.unwrap_err().to_string();
    assert!(
        refused.contains("suspended") && refused.contains("sys@example.com"),
        "{refused}"
    );
    assert!(client.list_all_tools().await.is_err());
    assert_eq!(backend.hits().len(), 1);

    let out = gw.cli(
        BIN,
        &[
            "agents",
            "resume",
            "tester",
            "--reason",
            "INC-42 closed",
            "--by",
            "alice",
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        client.call_tool(get_item()).await.unwrap().is_error,
        Some(false)
    );

    let out = gw.cli(
        BIN,
        &[
            "agents",
            "retire",
            "tester",
            "--reason",
            "replaced by tester-v2",
            "--by",
            "bob",
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    // The key stops working at the edge: the running client is cut off.
    assert!(client.call_tool(get_item()).await.is_err());
    let fresh = reqwest::Client::new()
        .post(&gw.url)
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(fresh.status(), 401);
    assert_eq!(backend.hits().len(), 2);

    // Retirement is permanent.
    let out = gw.cli(BIN, &["agents", "resume", "tester", "--reason", "oops"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("retirement is permanent"));
    // --reason is required.
    assert_eq!(
        gw.cli(BIN, &["agents", "suspend", "other"]).status.code(),
        Some(2)
    );

    let out = gw.cli(BIN, &["agents", "show", "tester", "--json"]);
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["status"], "retired");
    let history: Vec<(String, String, String)> = shown["status_history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["to"].as_str().unwrap().into(),
                e["changed_by"].as_str().unwrap().into(),
                e["reason"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        history,
        [
            ("suspended".into(), "alice".into(), "incident INC-42".into()),
            ("active".into(), "alice".into(), "INC-42 closed".into()),
            (
                "retired".into(),
                "bob".into(),
                "replaced by tester-v2".into()
            ),
        ]
    );
    assert!(shown["keys"][0]["revoked_at"].is_string());

    let reasons: Vec<String> = gw
        .decisions()
        .await
        .into_iter()
        .map(|d| d.reason_code)
        .collect();
    assert_eq!(reasons, ["allowed", "agent_suspended", "allowed"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_overdue_review_suspends_the_agent() {
    let backend = Backend::start().await;
    let manifests =
        test_manifests(&backend.url).replacen("review_by: 2099-01-01", "review_by: 2020-01-01", 1);
    let gw = TestGateway::start(&manifests).await;
    let key = gw.issue_key("tester").await;
    let client = gw.client(&key).await;
    let e = client.call_tool(get_item()).await.unwrap_err().to_string();
    assert!(e.contains("due for review on 2020-01-01"), "{e}");
    assert!(backend.hits().is_empty());
    let d = gw.decisions().await;
    assert_eq!(d[0].reason_code, "agent_review_overdue");
    assert_eq!(d[0].decision, "deny");
    let out = gw.cli(BIN, &["agents", "show", "tester"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("review overdue"));
}

#[tokio::test(flavor = "multi_thread")]
async fn revoking_one_key_cuts_it_off_and_leaves_the_others() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&test_manifests(&backend.url)).await;
    let leaked = gw.issue_key("tester").await;
    let spare = gw.issue_key("tester").await;
    let shown: Value =
        serde_json::from_slice(&gw.cli(BIN, &["agents", "show", "tester", "--json"]).stdout)
            .unwrap();
    let ids: Vec<String> = shown["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2);
    // A key's public id is derived from its hash.
    let hash = tollgate::pipeline::authenticate::key_hash(&leaked);
    let leaked_id = format!("key_{}", tollgate_hex(&hash[..6]));
    assert!(ids.contains(&leaked_id), "{ids:?}");
    let out = gw.cli(BIN, &["agents", "revoke-key", &leaked_id]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}).to_string();
    assert_eq!(
        tollgate_tests::raw_post(&gw.url, Some(&leaked), init.clone())
            .await
            .status(),
        401
    );
    assert_eq!(
        tollgate_tests::raw_post(&gw.url, Some(&spare), init)
            .await
            .status(),
        200
    );
    let again = gw.cli(BIN, &["agents", "revoke-key", &leaked_id]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("no live key"));
}

fn tollgate_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

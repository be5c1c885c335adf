//! What agents choose is bounded before it is echoed or recorded, and a
//! failure never invites a retry that could repeat an effect.

use rmcp::model::CallToolRequestParams;
use serde_json::json;
use tollgate_tests::{Backend, TestGateway, args, test_manifests};

fn text(r: &rmcp::model::CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn a_huge_wrong_value_is_not_echoed_back_in_full() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&test_manifests(&backend.url)).await;
    let client = gw.client(&gw.issue_key("tester").await).await;
    // `qty` must be an integer; a 50 KB string is refused, and the schema
    // problem quoting it is cut.
    let huge = "9".repeat(50 * 1024);
    let r = client
        .call_tool(
            CallToolRequestParams::new("inventory.create_item")
                .with_arguments(args(json!({ "name": "bolt", "qty": huge }))),
        )
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true));
    let shown = serde_json::to_string(&r).unwrap();
    assert!(shown.contains("invalid_arguments"), "{shown}");
    assert!(
        shown.len() < 4 * 1024,
        "the refusal echoes {} bytes for a 50 KB value",
        shown.len()
    );
    assert!(backend.hits().is_empty());
}

#[tokio::test]
async fn a_huge_tool_name_is_capped_in_the_reply_and_the_record() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&test_manifests(&backend.url)).await;
    let client = gw.client(&gw.issue_key("tester").await).await;
    let name = format!("inventory.{}", "x".repeat(20 * 1024));
    let e = client
        .call_tool(CallToolRequestParams::new(name.clone()))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("Unknown tool"), "{e}");
    assert!(e.len() < 1024, "the refusal echoes {} bytes", e.len());
    let d = gw.decisions().await;
    let last = d.last().unwrap();
    assert_eq!(last.reason_code, "unknown_tool");
    assert!(last.tool.len() < 256, "recorded {} bytes", last.tool.len());
}

#[tokio::test]
async fn a_timeout_on_a_tool_not_declared_idempotent_does_not_invite_a_retry() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&test_manifests(&backend.url)).await;
    let client = gw.client(&gw.issue_key("tester").await).await;
    // `inventory.slow` declares no annotations: calling it twice may act
    // twice.
    let r = client
        .call_tool(CallToolRequestParams::new("inventory.slow").with_arguments(args(json!({}))))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true));
    let t = text(&r);
    assert!(t.contains("backend_timeout"), "{t}");
    assert!(!t.contains("may be retried"), "{t}");
    assert!(t.contains("may have acted"), "{t}");
    assert!(!t.contains("127.0.0.1"), "{t}");
}

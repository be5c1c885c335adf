//! The demo scenario on the shipped manifests, as far as this release
//! takes it (see shared demo-scenario steps 1, 2, 4 and 6): the built-in
//! demo backend on port 0, the real gateway, a real rmcp client.

use rmcp::model::CallToolRequestParams;
use serde_json::json;
use tollgate::server::HttpOptions;
use tollgate_tests::{TestGateway, args, workspace_root};

/// Copies the shipped manifests, pointing the connectors at a demo backend
/// started on port 0.
async fn shipped_gateway() -> TestGateway {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(tollgate::demo::serve(listener));
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(workspace_root().join("manifests")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|x| x.to_str()) == Some("yaml") {
            let text = std::fs::read_to_string(&path)
                .unwrap()
                .replace("127.0.0.1:8931", &addr.to_string());
            std::fs::write(dir.path().join(path.file_name().unwrap()), text).unwrap();
        }
    }
    TestGateway::start_dir(dir, HttpOptions::default()).await
}

fn call(name: &str, a: serde_json::Value) -> CallToolRequestParams {
    CallToolRequestParams::new(name.to_string()).with_arguments(args(a))
}

#[tokio::test]
async fn support_bot_walkthrough() {
    let gw = shipped_gateway().await;
    let key = gw.issue_key("support-bot").await;
    let client = gw.client(&key).await;

    // 1. It sees helpdesk and two billing tools, not delete_customer.
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
            "billing.get_invoice",
            "billing.refund",
            "helpdesk.add_comment",
            "helpdesk.close_ticket",
            "helpdesk.get_ticket",
            "helpdesk.search_tickets"
        ]
    );

    // 2. Search and read the duplicate-charge ticket, then its invoice.
    let r = client
        .call_tool(call(
            "helpdesk.search_tickets",
            json!({ "query": "charged twice" }),
        ))
        .await
        .unwrap();
    let found = r.structured_content.unwrap();
    assert_eq!(found["tickets"][0]["id"], 4521);
    let r = client
        .call_tool(call("helpdesk.get_ticket", json!({ "ticket_id": 4521 })))
        .await
        .unwrap();
    assert!(
        r.structured_content.unwrap()["subject"]
            .as_str()
            .unwrap()
            .contains("INV-1042")
    );
    let r = client
        .call_tool(call(
            "billing.get_invoice",
            json!({ "invoice_id": "INV-1042" }),
        ))
        .await
        .unwrap();
    assert_eq!(r.structured_content.unwrap()["amount"], 40.0);

    // 4. Refund 40 EUR (no approvals in this release).
    let r = client
        .call_tool(call("billing.refund", json!({ "invoice_id": "INV-1042", "amount": 40, "currency": "EUR", "reason": "duplicate charge" })))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(false), "{r:?}");
    assert_eq!(r.structured_content.unwrap()["status"], "issued");
    // The backend's own refusal comes back as a tool error with its message.
    let r = client
        .call_tool(call(
            "billing.refund",
            json!({ "invoice_id": "INV-1042", "amount": 40, "currency": "EUR", "reason": "again" }),
        ))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true));
    assert!(
        r.content[0]
            .as_text()
            .unwrap()
            .text
            .contains("exceed the invoice amount")
    );

    // 6. delete_customer is refused like an unknown tool, and recorded.
    let e = client
        .call_tool(call(
            "billing.delete_customer",
            json!({ "customer_id": "cus_ana" }),
        ))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("Unknown tool"));
    let d = gw.decisions().await;
    let last = d.last().unwrap();
    assert_eq!(
        (last.tool.as_str(), last.reason_code.as_str()),
        ("billing.delete_customer", "tool_not_granted")
    );
    assert_eq!(
        last.owners.as_ref().unwrap()["agent"]["business"]["name"],
        "head-of-support"
    );
    assert_eq!(d.len(), 6);
}

//! The demo scenario on the shipped manifests, as far as this release
//! takes it (see shared demo-scenario steps 1 to 6): the built-in
//! demo backend on port 0, the real gateway, a real rmcp client.

use rmcp::model::CallToolRequestParams;
use serde_json::json;
use tollgate::server::HttpOptions;
use tollgate_tests::{TestGateway, args, workspace_root};

/// Copies the shipped manifests, pointing the connectors at a demo backend
/// started on port 0.
async fn shipped_gateway() -> (TestGateway, String) {
    let (gateway_listener, base) = TestGateway::reserve().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // The demo backend verifies credentials against the gateway's JWKS, as
    // `tollgate serve` runs it.
    tokio::spawn(tollgate::demo::serve(
        listener,
        Some(format!("{base}/.well-known/jwks.json")),
    ));
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(workspace_root().join("manifests")).unwrap() {
        let path = entry.unwrap().path();
        // The test serves the demo backend itself, above.
        if path.file_name().is_some_and(|n| n == "demo-backend.yaml") {
            continue;
        }
        if matches!(
            path.extension().and_then(|x| x.to_str()),
            Some("yaml" | "cedar")
        ) {
            let text = std::fs::read_to_string(&path)
                .unwrap()
                .replace("127.0.0.1:8931", &addr.to_string());
            std::fs::write(dir.path().join(path.file_name().unwrap()), text).unwrap();
        }
    }
    let gw = TestGateway::start_on(gateway_listener, dir, HttpOptions::default()).await;
    (gw, format!("http://{addr}"))
}

fn call(name: &str, a: serde_json::Value) -> CallToolRequestParams {
    CallToolRequestParams::new(name.to_string()).with_arguments(args(a))
}

fn text(r: &rmcp::model::CallToolResult) -> String {
    r.content[0].as_text().unwrap().text.clone()
}

const BIN: &str = env!("CARGO_BIN_EXE_tollgate-under-test");

#[tokio::test(flavor = "multi_thread")]
async fn support_bot_walkthrough() {
    let (gw, demo) = shipped_gateway().await;
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
            "helpdesk.search_tickets",
            "tollgate.start_task"
        ]
    );

    // 2. Search and read the duplicate-charge ticket.
    let r = client
        .call_tool(call(
            "helpdesk.search_tickets",
            json!({ "query": "charged twice" }),
        ))
        .await
        .unwrap();
    assert_eq!(r.structured_content.unwrap()["tickets"][0]["id"], 4521);
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

    // A refund is high risk: not without a task.
    let refund = |amount: f64| {
        call(
            "billing.refund",
            json!({ "invoice_id": "INV-1042", "amount": amount, "currency": "EUR", "reason": "duplicate charge" }),
        )
    };
    let r = client.call_tool(refund(40.0)).await.unwrap();
    assert_eq!(r.is_error, Some(true));
    assert!(text(&r).contains("task_required"), "{}", text(&r));

    // 3. An operator starts a task; the agent uses its token.
    let started = tollgate::tasks::start(
        &gw.gw,
        tollgate::tasks::StartTask {
            agent_id: "support-bot".into(),
            purpose: "Resolve ticket 4521: duplicate charge".into(),
            tools: vec![
                "helpdesk.get_ticket".into(),
                "billing.get_invoice".into(),
                "billing.refund".into(),
                "helpdesk.add_comment".into(),
            ],
            constraints: vec!["amount <= 500".into()],
            ttl: std::time::Duration::from_secs(900),
            started_by: "alice".into(),
            origin: "cli",
        },
    )
    .await
    .unwrap();
    let task = gw.client(&started.token).await;
    let names: Vec<String> = task
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
            "helpdesk.get_ticket",
            "tollgate.end_task"
        ]
    );
    let r = task
        .call_tool(call(
            "billing.get_invoice",
            json!({ "invoice_id": "INV-1042" }),
        ))
        .await
        .unwrap();
    assert_eq!(r.structured_content.unwrap()["amount"], 40.0);

    // 4. Refund 40 EUR: within the task and its constraint.
    let r = task.call_tool(refund(40.0)).await.unwrap();
    assert_eq!(r.is_error, Some(false), "{r:?}");
    assert_eq!(r.structured_content.unwrap()["status"], "issued");
    // 5. Refund 400 EUR (INV-1060): policy wants the business owner,
    // head-of-support; the call waits until they approve it in the queue,
    // then runs once.
    gw.gw.approvals().set_timing(tollgate::approvals::Timing {
        poll: std::time::Duration::from_millis(50),
        progress: std::time::Duration::from_secs(1),
    });
    let approver = gw.issue_approver_key("head-of-support").await;
    let second = gw.client(&started.token).await;
    let waiting = tokio::spawn(async move {
        second
            .call_tool(call(
                "billing.refund",
                json!({ "invoice_id": "INV-1060", "amount": 400, "currency": "EUR", "reason": "cancelled within 14 days" }),
            ))
            .await
    });
    for _ in 0..100 {
        if waiting.is_finished() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    if waiting.is_finished() {
        panic!("the call did not wait: {:?}", waiting.await);
    }
    let request = gw.pending_approval().await;
    assert_eq!(request.approvers, "head-of-support");
    assert_eq!(
        request.purpose.as_deref(),
        Some("Resolve ticket 4521: duplicate charge")
    );
    let http = reqwest::Client::new();
    let approved = http
        .post(format!(
            "{}/api/approvals/{}/approve",
            gw.base(),
            request.id
        ))
        .bearer_auth(&approver)
        .json(&json!({ "reason": "cancelled within 14 days, verified" }))
        .send()
        .await
        .unwrap();
    assert_eq!(approved.status(), 200);
    let r = waiting.await.unwrap().unwrap();
    assert_eq!(r.is_error, Some(false), "{r:?}");
    assert_eq!(r.structured_content.as_ref().unwrap()["status"], "issued");
    assert_eq!(r.structured_content.as_ref().unwrap()["amount"], 400.0);
    // Over the task's constraint: policy steps it up to the same approval;
    // head-of-support denies it, and the agent hears why.
    let third = gw.client(&started.token).await;
    // (550: over the constraint of 500, within what is left of the task's
    // refund budget of 1,000.)
    let waiting = tokio::spawn(async move { third.call_tool(refund(550.0)).await });
    let request = gw.pending_approval().await;
    let denied = http
        .post(format!("{}/api/approvals/{}/deny", gw.base(), request.id))
        .bearer_auth(&approver)
        .json(&json!({ "reason": "above the ticket's amount" }))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 200);
    let r = waiting.await.unwrap().unwrap();
    assert!(
        text(&r).contains("approval_denied") && text(&r).contains("above the ticket's amount"),
        "{}",
        text(&r)
    );
    // The backend's own refusal comes back as a tool error with its message.
    let r = task.call_tool(refund(40.0)).await.unwrap();
    assert_eq!(r.is_error, Some(true));
    assert!(text(&r).contains("exceed the invoice amount"));

    // 6. Outside the task: a granted tool the task does not list, and a tool
    // never granted (refused like an unknown tool).
    let r = task
        .call_tool(call("helpdesk.search_tickets", json!({ "query": "x" })))
        .await
        .unwrap();
    assert!(
        text(&r).contains(&started.task.id) && text(&r).contains("outside_task"),
        "{}",
        text(&r)
    );
    let e = task
        .call_tool(call(
            "billing.delete_customer",
            json!({ "customer_id": "cus_ana" }),
        ))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("Unknown tool"));

    // 7. End the task: the connector's credentials are revoked and the token
    // stops working.
    let r = task
        .call_tool(call("tollgate.end_task", json!({})))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(false), "{r:?}");
    assert!(
        task.call_tool(call(
            "billing.get_invoice",
            json!({ "invoice_id": "INV-1042" })
        ))
        .await
        .is_err()
    );
    let creds = gw
        .gw
        .store()
        .task_credentials(&started.task.id)
        .await
        .unwrap();
    assert!(
        !creds.is_empty()
            && creds
                .iter()
                .all(|c| c.revoked_at.is_some() && c.kind == "gateway_jwt")
    );

    let d = gw.decisions().await;
    let codes: Vec<&str> = d.iter().map(|r| r.reason_code.as_str()).collect();
    assert!(
        codes.contains(&"task_required")
            && codes.contains(&"approval_denied")
            && codes.contains(&"tool_not_granted")
    );
    let in_task = d
        .iter()
        .filter(|r| r.task_id.as_deref() == Some(started.task.id.as_str()))
        .count();
    assert!(in_task >= 6, "{in_task} records name the task");
    // The demo backend refuses what the gateway did not mint for it.
    let http = reqwest::Client::new();
    let forged = http
        .get(format!("{demo}/billing/invoices/INV-1042"))
        .bearer_auth("eyJhbGciOiJub25lIn0.e30.")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    let helpdesk_token = tollgate::broker::issue(
        &gw.gw,
        &gw.gw.catalog().agents["support-bot"],
        None,
        &gw.gw.catalog().tools["helpdesk.get_ticket"],
    )
    .await
    .unwrap()
    .unwrap();
    let wrong_backend = http
        .get(format!("{demo}/billing/invoices/INV-1042"))
        .header("authorization", helpdesk_token.value().to_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(
        wrong_backend.status(),
        401,
        "a helpdesk credential must not open billing"
    );
    let right_backend = http
        .get(format!("{demo}/helpdesk/tickets/4521"))
        .header("authorization", helpdesk_token.value().to_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(right_backend.status(), 200);

    let last_denied = d
        .iter()
        .rev()
        .find(|r| r.reason_code == "tool_not_granted")
        .unwrap();
    assert_eq!(
        last_denied.owners.as_ref().unwrap()["agent"]["business"]["name"],
        "head-of-support"
    );

    // After the demo the trail verifies, and the incident report answers
    // from it: owners, the denial and its reason, the task's credential.
    gw.gw.audit().fold().await.unwrap();
    let out = gw.cli(BIN, &["audit", "verify"]);
    assert!(out.status.success(), "{out:?}");
    let out = gw.cli(BIN, &["audit", "report", "--agent", "support-bot"]);
    assert!(out.status.success(), "{out:?}");
    let report = String::from_utf8(out.stdout).unwrap();
    for fact in ["head-of-support", "tool_not_granted", "billing.get_invoice"] {
        assert!(report.contains(fact), "report lacks {fact}:\n{report}");
    }
}

//! Human approvals end to end: a real rmcp client, the real HTTP API an
//! approver uses, a real backend that records what it received. Every wait
//! is opened on purpose (a call held in its approval wait while the test
//! approves, denies, cancels, ends the task, restarts the gateway, lets
//! the deadline pass, or races a second identical call) and the check is
//! what the backend actually got.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientRequest, ProgressNotificationParam,
};
use rmcp::service::{NotificationContext, PeerRequestOptions, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{Value, json};
use tollgate::approvals::Timing;
use tollgate::server::HttpOptions;
use tollgate_tests::{Backend, TestGateway, args};

fn refund(amount: f64) -> CallToolRequestParams {
    CallToolRequestParams::new("pay.refund".to_string()).with_arguments(args(json!({
        "amount": amount, "currency": "EUR", "card": "4111111111111111"
    })))
}

fn text(r: &CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn reason(r: &CallToolResult) -> String {
    r.meta
        .as_ref()
        .and_then(|m| m.0.get("tollgate/reason"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

const POLICY: &str = r#"
@id("small")
@approval("none")
permit (principal, action == Action::"pay.refund", resource)
when { context.args.amount.lessThanOrEqual(decimal("100.0")) };

@id("large")
@approval("owner:business")
@approval_timeout("10m")
@reason("refunds above 100 need the business owner")
permit (principal, action == Action::"pay.refund", resource)
when { decimal("100.0").lessThan(context.args.amount) && context.args.amount.lessThan(decimal("1000.0")) };

@id("huge")
@approval("owner:business")
@approvals("2")
@approval_timeout("10m")
permit (principal, action == Action::"pay.refund", resource)
when { decimal("1000.0").lessThanOrEqual(context.args.amount) && context.args.amount.lessThan(decimal("100000.0")) };

@id("void")
@approval("owner:business")
@approval_reason("hidden")
permit (principal == Agent::"clerk", action == Action::"pay.void", resource);
"#;

fn manifests(url: &str, extra: &str) -> String {
    format!(
        r#"kind: Connector
id: pay
description: Payments
owners:
  system: {{ name: pay-team, contact: pay@example.com }}
  security: {{ name: secops, contact: secops@example.com }}
http: {{ base_url: "{url}/api" }}
tools:
  - name: refund
    description: Refund money
    risk: high
    sensitive: [card]
    input_schema:
      type: object
      properties:
        amount: {{ type: number, exclusiveMinimum: 0 }}
        currency: {{ type: string }}
        card: {{ type: string }}
      required: [amount, currency]
    http: {{ request: {{ method: POST, path: /refunds }} }}
  - name: void
    description: Void a payment
    risk: high
    input_schema:
      type: object
      properties: {{ id: {{ type: string }} }}
      required: [id]
    http: {{ request: {{ method: POST, path: /voids }} }}
---
kind: Agent
id: clerk
description: Pays people back
owners:
  business: {{ name: shop-lead, contact: lead@example.com }}
  system: {{ name: sys-team, contact: sys@example.com }}
  security: {{ name: secops, contact: sec@example.com }}
deployment: {{ approved_by: ciso, approved_at: 2026-01-01 }}
review_by: 2099-01-01
tools: [pay.refund, pay.void]
---
kind: Agent
id: batch
description: Pays people back without waiting
owners:
  business: {{ name: shop-lead, contact: lead@example.com }}
  system: {{ name: sys-team, contact: sys@example.com }}
  security: {{ name: secops, contact: sec@example.com }}
deployment: {{ approved_by: ciso, approved_at: 2026-01-01 }}
review_by: 2099-01-01
tools: [pay.refund]
approvals: {{ mode: non_blocking, max_pending: 2 }}
---
kind: Approver
id: lead
name: Lea Lead
contact: lead@example.com
roles: [shop-lead]
---
kind: Approver
id: deputy
name: Dev Deputy
contact: deputy@example.com
roles: [shop-lead]
---
kind: Approver
id: sysop
name: Sam Sysop
contact: sysop@example.com
roles: [shop-lead, sys-team]
---
kind: Approver
id: finance
name: Fin Ance
contact: fin@example.com
roles: [finance]
{extra}"#
    )
}

async fn start_with(extra: &str, files: &[(&str, &str)]) -> (TestGateway, Backend) {
    let backend = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("test.yaml"), manifests(&backend.url, extra)).unwrap();
    std::fs::write(dir.path().join("policy.cedar"), POLICY).unwrap();
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    let gw = TestGateway::start_dir(dir, HttpOptions::default()).await;
    fast(&gw);
    (gw, backend)
}

async fn start() -> (TestGateway, Backend) {
    start_with("", &[]).await
}

fn fast(gw: &TestGateway) {
    gw.gw.approvals().set_timing(Timing {
        poll: Duration::from_millis(50),
        progress: Duration::from_millis(200),
    });
}

/// Records progress notifications.
#[derive(Clone, Default)]
struct Watcher(Arc<Mutex<Vec<String>>>);

impl ClientHandler for Watcher {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.0
            .lock()
            .unwrap()
            .push(params.message.unwrap_or_default());
    }
}

async fn watched_client(
    gw: &TestGateway,
    key: &str,
) -> (RunningService<RoleClient, Watcher>, Watcher) {
    let w = Watcher::default();
    let config =
        StreamableHttpClientTransportConfig::with_uri(gw.url.clone()).auth_header(key.to_string());
    let client = w
        .clone()
        .serve(StreamableHttpClientTransport::from_config(config))
        .await
        .unwrap();
    (client, w)
}

/// Waits (bounded) until `f` holds.
async fn until<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    for _ in 0..200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

/// The one pending request (waits until there is one).
async fn pending(gw: &TestGateway) -> tollgate::store::ApprovalRequest {
    gw.pending_approval().await
}

async fn api(gw: &TestGateway, key: &str, id: &str, verb: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/api/approvals/{id}/{verb}", gw.base()))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn refunds(backend: &Backend) -> Vec<Value> {
    backend
        .hits()
        .into_iter()
        .filter(|h| h.path == "/api/refunds")
        .filter_map(|h| h.body)
        .collect()
}

async fn in_task(gw: &TestGateway, agent: &str) -> String {
    gw.start_task(agent, &["pay.refund"], &[], 3600).await.token
}

#[tokio::test]
async fn a_blocking_call_waits_with_progress_and_runs_once_when_approved() {
    let (gw, backend) = start().await;
    let token = in_task(&gw, "clerk").await;
    let (client, watcher) = watched_client(&gw, &token).await;
    let lead = gw.issue_approver_key("lead").await;

    let call = tokio::spawn(async move {
        let r = client.call_tool(refund(400.0)).await;
        (r, client)
    });
    let request = pending(&gw).await;
    assert_eq!(request.tool, "pay.refund");
    assert_eq!(request.approvers, "shop-lead");
    assert_eq!(request.arguments["amount"], 400.0);
    // The sensitive field is never stored in clear.
    assert_eq!(request.arguments["card"], "<redacted>");
    assert!(request.purpose.is_some() && request.task_id.is_some());
    until("a progress notification", || {
        let w = watcher.clone();
        async move { !w.0.lock().unwrap().is_empty() }
    })
    .await;
    let first = watcher.0.lock().unwrap()[0].clone();
    assert!(
        first.contains("waiting for approval by shop-lead") && first.contains("of 10 minutes"),
        "{first}"
    );
    assert!(refunds(&backend).is_empty(), "nothing runs before approval");

    // The finance approver is not routed this request.
    let fin = gw.issue_approver_key("finance").await;
    let (status, body) = api(&gw, &fin, &request.id, "approve", json!({ "reason": "ok" })).await;
    assert_eq!(status, 404, "{body}");

    let (status, body) = api(
        &gw,
        &lead,
        &request.id,
        "approve",
        json!({ "reason": "customer verified" }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "approved");

    let (r, _client) = call.await.unwrap();
    let r = r.unwrap();
    assert_eq!(r.is_error, Some(false), "{}", text(&r));
    assert!(text(&r).contains("Approved by lead"), "{}", text(&r));
    let sent = refunds(&backend);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["amount"], 400.0);
    assert_eq!(
        sent[0]["card"], "4111111111111111",
        "the backend gets the real value"
    );

    // Used once: the record says who approved it; the request is used.
    let r = gw.gw.store().approval(&request.id).await.unwrap().unwrap();
    assert_eq!(r.status.as_str(), "used");
    let events: Vec<String> = gw
        .gw
        .store()
        .approval_events(&request.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(events, ["requested", "vote", "approved", "used"]);
    let d = gw.decisions().await;
    let allowed = d.iter().find(|r| r.decision == "allow").unwrap();
    assert_eq!(
        allowed.policy.as_ref().unwrap()["approval_request"]["request"],
        request.id.as_str()
    );
    assert_eq!(
        allowed.policy.as_ref().unwrap()["approval_request"]["approved_by"],
        json!(["lead"])
    );
    assert_eq!(allowed.outcome.as_deref(), Some("ok"));

    // The trail: the request, the vote (who, why), the approval and its
    // use, in order; the card number (a sensitive field) nowhere.
    gw.gw.audit().fold().await.unwrap();
    let rows = gw
        .gw
        .store()
        .audit_records(&Default::default())
        .await
        .unwrap();
    let kinds: Vec<&str> = rows
        .iter()
        .filter(|r| r.kind.starts_with("approval."))
        .map(|r| r.kind.as_str())
        .collect();
    assert_eq!(
        kinds,
        [
            "approval.requested",
            "approval.vote",
            "approval.approved",
            "approval.used"
        ]
    );
    let vote = rows.iter().find(|r| r.kind == "approval.vote").unwrap();
    assert!(vote.body.contains("\"lead\""), "{}", vote.body);
    assert!(vote.body.contains("customer verified"), "{}", vote.body);
    let trail = serde_json::to_string(&rows).unwrap();
    assert!(!trail.contains("4111111111111111"));
}

#[tokio::test]
async fn a_denial_reaches_the_agent_with_who_and_why_and_nothing_runs() {
    let (gw, backend) = start().await;
    let token = in_task(&gw, "clerk").await;
    let client = gw.client(&token).await;
    let lead = gw.issue_approver_key("lead").await;
    let call = tokio::spawn(async move { client.call_tool(refund(300.0)).await });
    let request = pending(&gw).await;
    let (status, _) = api(
        &gw,
        &lead,
        &request.id,
        "deny",
        json!({ "reason": "duplicate of #12" }),
    )
    .await;
    assert_eq!(status, 200);
    let r = call.await.unwrap().unwrap();
    assert_eq!(r.is_error, Some(true));
    assert_eq!(reason(&r), "approval_denied");
    assert!(
        text(&r).contains("lead") && text(&r).contains("duplicate of #12"),
        "{}",
        text(&r)
    );
    assert!(refunds(&backend).is_empty());
    // A late approval changes nothing.
    let deputy = gw.issue_approver_key("deputy").await;
    let (status, body) = api(
        &gw,
        &deputy,
        &request.id,
        "approve",
        json!({ "reason": "x" }),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["reason"], "approval_not_pending");
    assert!(refunds(&backend).is_empty());
    let codes: Vec<String> = gw
        .decisions()
        .await
        .into_iter()
        .map(|d| d.reason_code)
        .collect();
    assert!(codes.contains(&"approval_denied".to_string()), "{codes:?}");
}

#[tokio::test]
async fn approve_with_changes_runs_the_changed_call_rechecked_and_says_so() {
    let (gw, backend) = start().await;
    let token = in_task(&gw, "clerk").await;
    let client = gw.client(&token).await;
    let lead = gw.issue_approver_key("lead").await;
    let call = tokio::spawn(async move { client.call_tool(refund(400.0)).await });
    let request = pending(&gw).await;

    // Not a number: the tool's schema refuses it; nothing is recorded.
    let (status, body) = api(
        &gw,
        &lead,
        &request.id,
        "approve",
        json!({ "reason": "x", "args": { "amount": "lots" } }),
    )
    .await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (422, Some("approval_change_invalid")),
        "{body}"
    );
    // Not an argument of the tool.
    let (status, _) = api(
        &gw,
        &lead,
        &request.id,
        "approve",
        json!({ "reason": "x", "args": { "bonus": 1 } }),
    )
    .await;
    assert_eq!(status, 422);
    // A change that policy routes to two people is not this approver's.
    let (status, body) = api(
        &gw,
        &lead,
        &request.id,
        "approve",
        json!({ "reason": "x", "args": { "amount": 5000 } }),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("2 people"),
        "{body}"
    );

    // A smaller refund: approved, bound to the changed arguments. The
    // redacted card shown on the page is not a change.
    let (status, body) = api(
        &gw,
        &lead,
        &request.id,
        "approve",
        json!({ "reason": "partial refund only", "args": { "amount": 200, "currency": "EUR", "card": "<redacted>" } }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["patch"], json!({ "amount": 200 }));
    assert_eq!(body["changed_arguments"]["amount"], 200);
    assert_eq!(body["changed_arguments"]["card"], "<redacted>");

    let r = call.await.unwrap().unwrap();
    assert_eq!(r.is_error, Some(false), "{}", text(&r));
    assert!(
        text(&r).contains("CHANGED") && text(&r).contains("amount: 400"),
        "{}",
        text(&r)
    );
    let meta = r
        .meta
        .as_ref()
        .unwrap()
        .0
        .get("tollgate/approval")
        .unwrap()
        .clone();
    assert_eq!(
        meta["changed"]["amount"],
        json!({ "from": 400.0, "to": 200 })
    );
    let sent = refunds(&backend);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["amount"], 200, "the backend got the changed amount");
    assert_eq!(
        sent[0]["card"], "4111111111111111",
        "unchanged fields keep their real value"
    );

    // The record keeps both: the request's original digest and the
    // executed call's own.
    let d = gw.decisions().await;
    let allowed = d.iter().find(|r| r.decision == "allow").unwrap();
    let ar = &allowed.policy.as_ref().unwrap()["approval_request"];
    assert_eq!(ar["original_digest"], request.args_digest.as_str());
    assert_ne!(
        allowed.args_digest.as_deref(),
        Some(request.args_digest.as_str())
    );
    assert_eq!(ar["changed"]["amount"]["to"], 200);
}

#[tokio::test]
async fn two_identical_calls_racing_for_one_approval_run_exactly_once() {
    let (gw, backend) = start().await;
    let token = in_task(&gw, "clerk").await;
    let a = gw.client(&token).await;
    let b = gw.client(&token).await;
    let lead = gw.issue_approver_key("lead").await;
    // Both wait on the same request (identical pending requests are one).
    let first = tokio::spawn(async move { a.call_tool(refund(250.0)).await });
    let request = pending(&gw).await;
    let second = tokio::spawn(async move { b.call_tool(refund(250.0)).await });
    until("both calls waiting", || {
        let n = gw.gw.approvals().waiting();
        async move { n == 2 }
    })
    .await;
    let all = gw.gw.store().approvals(&Default::default()).await.unwrap();
    assert_eq!(all.len(), 1, "deduplicated");
    let (status, _) = api(
        &gw,
        &lead,
        &request.id,
        "approve",
        json!({ "reason": "ok" }),
    )
    .await;
    assert_eq!(status, 200);
    let r1 = first.await.unwrap().unwrap();
    let r2 = second.await.unwrap().unwrap();
    let ok = [&r1, &r2]
        .iter()
        .filter(|r| r.is_error == Some(false))
        .count();
    assert_eq!(ok, 1, "{} / {}", text(&r1), text(&r2));
    let loser = if r1.is_error == Some(true) { &r1 } else { &r2 };
    assert_eq!(reason(loser), "approval_used", "{}", text(loser));
    assert_eq!(
        refunds(&backend).len(),
        1,
        "the backend saw exactly one refund"
    );
}

#[tokio::test]
async fn non_blocking_returns_pending_then_the_same_call_runs_once_and_a_changed_one_needs_a_new_approval()
 {
    let (gw, backend) = start().await;
    let token = in_task(&gw, "batch").await;
    let client = gw.client(&token).await;
    let lead = gw.issue_approver_key("lead").await;

    let r = client.call_tool(refund(400.0)).await.unwrap();
    assert_eq!(reason(&r), "approval_pending", "{}", text(&r));
    let meta = r
        .meta
        .as_ref()
        .unwrap()
        .0
        .get("tollgate/approval")
        .unwrap()
        .clone();
    let id = meta["id"].as_str().unwrap().to_string();
    assert!(
        meta["review_url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/ui/requests/{id}"))
    );
    assert!(
        text(&r).contains(&id) && text(&r).contains("same arguments"),
        "{}",
        text(&r)
    );
    // Asking again before a decision: the same request, not a new one.
    let r = client.call_tool(refund(400.0)).await.unwrap();
    assert_eq!(
        r.meta.as_ref().unwrap().0["tollgate/approval"]["id"],
        id.as_str()
    );

    let (status, _) = api(&gw, &lead, &id, "approve", json!({ "reason": "ok" })).await;
    assert_eq!(status, 200);
    // One argument changed: a new approval is needed.
    let r = client.call_tool(refund(401.0)).await.unwrap();
    assert_eq!(reason(&r), "approval_pending");
    assert_ne!(
        r.meta.as_ref().unwrap().0["tollgate/approval"]["id"],
        id.as_str()
    );
    assert!(refunds(&backend).is_empty());

    // Two identical calls race for the approval: one runs.
    let c2 = gw.client(&token).await;
    let (r1, r2) = tokio::join!(client.call_tool(refund(400.0)), c2.call_tool(refund(400.0)));
    let (r1, r2) = (r1.unwrap(), r2.unwrap());
    let ok = [&r1, &r2]
        .iter()
        .filter(|r| r.is_error == Some(false))
        .count();
    assert_eq!(ok, 1, "{} / {}", text(&r1), text(&r2));
    assert_eq!(refunds(&backend).len(), 1);
    // And once used, the same call waits for a new approval again.
    let r = client.call_tool(refund(400.0)).await.unwrap();
    assert!(
        matches!(
            reason(&r).as_str(),
            "approval_pending" | "approval_queue_full"
        ),
        "{}",
        text(&r)
    );
    assert_eq!(refunds(&backend).len(), 1);
}

#[tokio::test]
async fn an_agent_cannot_flood_its_approvers() {
    let (gw, backend) = start().await;
    let token = in_task(&gw, "batch").await;
    let client = gw.client(&token).await;
    for amount in [200.0, 201.0] {
        let r = client.call_tool(refund(amount)).await.unwrap();
        assert_eq!(reason(&r), "approval_pending");
    }
    let r = client.call_tool(refund(202.0)).await.unwrap();
    assert_eq!(reason(&r), "approval_queue_full", "{}", text(&r));
    assert_eq!(
        gw.gw
            .store()
            .approvals(&Default::default())
            .await
            .unwrap()
            .len(),
        2
    );
    assert!(refunds(&backend).is_empty());
}

#[tokio::test]
async fn four_eyes_keep_the_system_owner_out_and_a_quorum_counts_people() {
    let (gw, backend) = start().await;
    let token = in_task(&gw, "clerk").await;
    let client = gw.client(&token).await;
    let call = tokio::spawn(async move { client.call_tool(refund(2000.0)).await });
    let request = pending(&gw).await;
    assert_eq!((request.required, request.four_eyes), (2, true));
    let sysop = gw.issue_approver_key("sysop").await;
    let lead = gw.issue_approver_key("lead").await;
    let deputy = gw.issue_approver_key("deputy").await;

    let (status, body) = api(
        &gw,
        &sysop,
        &request.id,
        "approve",
        json!({ "reason": "mine" }),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("separation of duties"),
        "{body}"
    );
    let (status, body) = api(
        &gw,
        &lead,
        &request.id,
        "approve",
        json!({ "reason": "one" }),
    )
    .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("pending")),
        "{body}"
    );
    // The same person twice is still one person.
    let (status, body) = api(
        &gw,
        &lead,
        &request.id,
        "approve",
        json!({ "reason": "two" }),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(refunds(&backend).is_empty());
    let (status, body) = api(
        &gw,
        &deputy,
        &request.id,
        "approve",
        json!({ "reason": "two" }),
    )
    .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("approved")),
        "{body}"
    );
    let r = call.await.unwrap().unwrap();
    assert_eq!(r.is_error, Some(false), "{}", text(&r));
    assert!(text(&r).contains("lead, deputy"), "{}", text(&r));
    assert_eq!(refunds(&backend).len(), 1);
}

#[tokio::test]
async fn no_decision_by_the_deadline_means_denied() {
    let (gw, backend) = start().await;
    let token = in_task(&gw, "clerk").await;
    let client = gw.client(&token).await;
    let call = tokio::spawn(async move { client.call_tool(refund(300.0)).await });
    let request = pending(&gw).await;
    gw.clock.advance(Duration::from_secs(11 * 60));
    let r = call.await.unwrap().unwrap();
    assert_eq!(reason(&r), "approval_expired", "{}", text(&r));
    let lead = gw.issue_approver_key("lead").await;
    let (status, _) = api(
        &gw,
        &lead,
        &request.id,
        "approve",
        json!({ "reason": "late" }),
    )
    .await;
    assert_eq!(status, 409);
    assert!(refunds(&backend).is_empty());
    assert_eq!(
        gw.gw
            .store()
            .approval(&request.id)
            .await
            .unwrap()
            .unwrap()
            .status
            .as_str(),
        "expired"
    );
}

#[tokio::test]
async fn a_cancelled_wait_withdraws_the_request_and_a_later_approval_runs_nothing() {
    let (gw, backend) = start().await;
    let token = in_task(&gw, "clerk").await;
    let client = gw.client(&token).await;
    let handle = client
        .peer()
        .send_cancellable_request(
            ClientRequest::CallToolRequest(rmcp::model::CallToolRequest::new(refund(300.0))),
            PeerRequestOptions::no_options(),
        )
        .await
        .unwrap();
    let request = pending(&gw).await;
    handle.cancel(Some("user gave up".into())).await.unwrap();
    until("the request withdrawn", || {
        let gw = gw.gw.clone();
        let id = request.id.clone();
        async move {
            gw.store()
                .approval(&id)
                .await
                .unwrap()
                .unwrap()
                .status
                .as_str()
                == "withdrawn"
        }
    })
    .await;
    let lead = gw.issue_approver_key("lead").await;
    let (status, body) = api(
        &gw,
        &lead,
        &request.id,
        "approve",
        json!({ "reason": "too late" }),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    // The same call made again is a new request: the withdrawn one can
    // never be used.
    let again = gw.client(&token).await;
    let next = tokio::spawn(async move { again.call_tool(refund(300.0)).await });
    let second = pending(&gw).await;
    assert_ne!(second.id, request.id);
    let (status, _) = api(&gw, &lead, &second.id, "deny", json!({ "reason": "no" })).await;
    assert_eq!(status, 200);
    let r = next.await.unwrap().unwrap();
    assert_eq!(reason(&r), "approval_denied");
    assert!(refunds(&backend).is_empty());
}

#[tokio::test]
async fn ending_the_task_or_retiring_the_agent_while_waiting_runs_nothing() {
    let (gw, backend) = start().await;
    let started = gw.start_task("clerk", &["pay.refund"], &[], 3600).await;
    let client = gw.client(&started.token).await;
    let lead = gw.issue_approver_key("lead").await;
    let call = tokio::spawn(async move { client.call_tool(refund(300.0)).await });
    let request = pending(&gw).await;
    tollgate::tasks::end(
        &gw.gw,
        &started.task.id,
        tollgate::store::TaskStatus::Completed,
        "operator",
        "done",
    )
    .await
    .unwrap();
    let r = call.await.unwrap();
    // The task token stops working, or the wait ends withdrawn: either
    // way nothing ran.
    if let Ok(r) = r {
        assert_eq!(r.is_error, Some(true));
        assert_eq!(reason(&r), "approval_withdrawn", "{}", text(&r));
    }
    let (status, _) = api(&gw, &lead, &request.id, "approve", json!({ "reason": "x" })).await;
    assert_eq!(status, 409);
    assert!(refunds(&backend).is_empty());

    // Retire the agent while a call waits.
    let key = gw.issue_key("clerk").await;
    let token = in_task(&gw, "clerk").await;
    let client = gw.client(&token).await;
    let call = tokio::spawn(async move { client.call_tool(refund(350.0)).await });
    let request = pending(&gw).await;
    gw.gw
        .store()
        .set_agent_status(
            "clerk",
            tollgate::store::AgentStatus::Retired,
            "decommissioned",
            "operator",
            &tollgate_tests::now(),
        )
        .await
        .unwrap();
    let _ = key;
    let r = call.await.unwrap();
    if let Ok(r) = r {
        assert_eq!(r.is_error, Some(true), "{}", text(&r));
    }
    let (status, _) = api(&gw, &lead, &request.id, "approve", json!({ "reason": "x" })).await;
    assert_eq!(status, 409, "the request was withdrawn with the agent");
    assert!(refunds(&backend).is_empty());
}

#[tokio::test]
async fn a_pending_request_survives_a_restart_and_still_works() {
    let (mut gw, backend) = start().await;
    let token = in_task(&gw, "batch").await;
    let key_task = token.clone();
    let client = gw.client(&token).await;
    let r = client.call_tool(refund(400.0)).await.unwrap();
    assert_eq!(reason(&r), "approval_pending");
    let id = r.meta.as_ref().unwrap().0["tollgate/approval"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    drop(client);
    let lead = gw.issue_approver_key("lead").await;
    gw.restart().await;
    fast(&gw);
    let reqwest = reqwest::Client::new();
    let list: Value = reqwest
        .get(format!("{}/api/approvals", gw.base()))
        .bearer_auth(&lead)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["requests"][0]["id"], id.as_str(), "{list}");
    let (status, _) = api(
        &gw,
        &lead,
        &id,
        "approve",
        json!({ "reason": "after restart" }),
    )
    .await;
    assert_eq!(status, 200);
    let client = gw.client(&key_task).await;
    let r = client.call_tool(refund(400.0)).await.unwrap();
    assert_eq!(r.is_error, Some(false), "{}", text(&r));
    assert_eq!(refunds(&backend).len(), 1);
}

#[tokio::test]
async fn the_api_refuses_bad_credentials_and_bad_decisions_clearly() {
    let (gw, _backend) = start().await;
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{}/api/approvals", gw.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("www-authenticate").is_some());
    // An agent key is not an approver credential.
    let agent = gw.issue_key("clerk").await;
    let r = http
        .get(format!("{}/api/approvals", gw.base()))
        .bearer_auth(&agent)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let lead = gw.issue_approver_key("lead").await;
    let (status, body) = api(
        &gw,
        &lead,
        "no-such-id",
        "approve",
        json!({ "reason": "x" }),
    )
    .await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (404, Some("approval_not_found"))
    );
    let token = in_task(&gw, "batch").await;
    let client = gw.client(&token).await;
    client.call_tool(refund(400.0)).await.unwrap();
    let request = pending(&gw).await;
    let (status, body) = api(
        &gw,
        &lead,
        &request.id,
        "approve",
        json!({ "reason": "  " }),
    )
    .await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );
    let (status, _) = api(
        &gw,
        &lead,
        &request.id,
        "approve",
        json!({ "reason": "x", "surprise": 1 }),
    )
    .await;
    assert_eq!(status, 400);
    // A revoked approver credential stops working at once.
    let keys = gw.gw.store().approver_keys().await.unwrap();
    gw.gw
        .store()
        .revoke_approver_key(&keys[0].key_id, &tollgate_tests::now())
        .await
        .unwrap();
    let (status, _) = api(&gw, &lead, &request.id, "approve", json!({ "reason": "x" })).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn webhooks_are_signed_and_a_dead_one_changes_nothing() {
    use axum::Router;
    use axum::extract::State;
    use axum::http::HeaderMap;
    type Got = Arc<Mutex<Vec<(HeaderMap, Vec<u8>)>>>;
    async fn receive(
        State(got): State<Got>,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> &'static str {
        got.lock().unwrap().push((headers, body.to_vec()));
        "ok"
    }
    let got: Got = Arc::default();
    let app = Router::new().fallback(receive).with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let extra = format!(
        r#"---
kind: Webhook
id: team
roles: [shop-lead]
url: "{hook}"
secret: {{ file: hook.secret }}
---
kind: Webhook
id: chat
url: "{hook}"
format: slack
---
kind: Webhook
id: dead
url: "http://127.0.0.1:9/nobody-listens"
secret: {{ file: hook.secret }}
"#
    );
    let (gw, backend) = start_with(&extra, &[("hook.secret", "s3cret-hook-key\n")]).await;
    let token = in_task(&gw, "batch").await;
    let client = gw.client(&token).await;
    let r = client.call_tool(refund(400.0)).await.unwrap();
    assert_eq!(reason(&r), "approval_pending");
    until("the requested events", || {
        let n = got.lock().unwrap().len();
        async move { n >= 2 }
    })
    .await;
    let lead = gw.issue_approver_key("lead").await;
    let request = pending(&gw).await;
    let (status, _) = api(
        &gw,
        &lead,
        &request.id,
        "approve",
        json!({ "reason": "ok" }),
    )
    .await;
    assert_eq!(status, 200, "a dead webhook does not block a decision");
    let r = client.call_tool(refund(400.0)).await.unwrap();
    assert_eq!(r.is_error, Some(false), "{}", text(&r));
    assert_eq!(refunds(&backend).len(), 1);
    until("the decided events", || {
        let n = got.lock().unwrap().len();
        async move { n >= 4 }
    })
    .await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let events = got.lock().unwrap().clone();
    let mut signed = 0;
    let mut slack = 0;
    for (headers, body) in &events {
        let v: Value = serde_json::from_slice(body).unwrap();
        if let Some(text) = v.get("text") {
            slack += 1;
            assert!(text.as_str().unwrap().contains("pay.refund"));
            continue;
        }
        let ts = headers["x-tollgate-timestamp"].to_str().unwrap();
        let sig = headers["x-tollgate-signature"].to_str().unwrap();
        assert!(tollgate::approvals::notify::verify(
            b"s3cret-hook-key",
            ts,
            sig,
            body,
            now,
            300
        ));
        // A forged body or another key fails.
        assert!(!tollgate::approvals::notify::verify(
            b"s3cret-hook-key",
            ts,
            sig,
            b"{}",
            now,
            300
        ));
        assert!(!tollgate::approvals::notify::verify(
            b"other", ts, sig, body, now, 300
        ));
        // A replay long after fails.
        assert!(!tollgate::approvals::notify::verify(
            b"s3cret-hook-key",
            ts,
            sig,
            body,
            now + 3600,
            300
        ));
        assert_eq!(v["request"]["arguments"]["card"], "<redacted>");
        assert!(v["link"].as_str().unwrap().contains("/ui/requests/"));
        signed += 1;
    }
    assert!(signed >= 2 && slack >= 2, "{signed} signed, {slack} slack");
}

/// The edge's idle limits (connection and session) are far shorter than
/// the wait here: a call waiting for approval is a request in progress,
/// so neither cuts it, and it completes once approved.
#[tokio::test]
async fn idle_limits_do_not_cut_a_legitimate_wait() {
    let backend = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("test.yaml"), manifests(&backend.url, "")).unwrap();
    std::fs::write(dir.path().join("policy.cedar"), POLICY).unwrap();
    let options = HttpOptions {
        idle_timeout: Duration::from_millis(200),
        session_idle_timeout: Duration::from_millis(200),
        ..HttpOptions::default()
    };
    let gw = TestGateway::start_dir(dir, options).await;
    fast(&gw);
    let token = in_task(&gw, "clerk").await;
    let client = gw.client(&token).await;
    let call = tokio::spawn(async move { client.call_tool(refund(300.0)).await });
    let request = pending(&gw).await;
    // Opens the window: several idle periods pass while the call waits.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!call.is_finished(), "the wait was cut");
    let lead = gw.issue_approver_key("lead").await;
    let (status, _) = api(
        &gw,
        &lead,
        &request.id,
        "approve",
        json!({ "reason": "ok" }),
    )
    .await;
    assert_eq!(status, 200);
    let r = call.await.unwrap().unwrap();
    assert_eq!(r.is_error, Some(false), "{}", text(&r));
    assert_eq!(refunds(&backend).len(), 1);
}

/// The CLI an approver uses, against the running gateway: issue a
/// credential, list, show, approve; clear errors without a credential or
/// for an unknown approver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reviews_and_decides_through_the_api() {
    let (gw, backend) = start().await;
    let bin = env!("CARGO_BIN_EXE_tollgate-under-test");
    let out = gw.cli(bin, &["approvers", "issue-key", "nobody"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no approver `nobody`"));
    let out = gw.cli(bin, &["approvers", "issue-key", "lead"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(key.starts_with("tgp_"));

    let token = in_task(&gw, "batch").await;
    let client = gw.client(&token).await;
    let r = client.call_tool(refund(400.0)).await.unwrap();
    assert_eq!(reason(&r), "approval_pending");
    let id = r.meta.as_ref().unwrap().0["tollgate/approval"]["id"]
        .as_str()
        .unwrap()
        .to_string();

    let run = |args: &[&str], with_key: bool| {
        let mut cmd = std::process::Command::new(bin);
        cmd.args(args)
            .env("TOLLGATE_URL", gw.base())
            .env_remove("TOLLGATE_APPROVER_KEY");
        if with_key {
            cmd.env("TOLLGATE_APPROVER_KEY", &key);
        }
        cmd.output().unwrap()
    };
    let out = run(&["approvals", "list"], false);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("TOLLGATE_APPROVER_KEY"));
    let out = run(&["approvals", "list", "--json"], true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["arguments"]["card"], "<redacted>");
    let out = run(&["approvals", "show", &id], true);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("pay.refund") && shown.contains("You may decide it"),
        "{shown}"
    );
    let out = run(
        &[
            "approvals",
            "approve",
            &id,
            "--reason",
            "ok",
            "--args",
            "[1]",
        ],
        true,
    );
    assert_eq!(out.status.code(), Some(1));
    let out = run(&["approvals", "approve", &id, "--reason", "verified"], true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Approved request"));
    let out = run(
        &["approvals", "deny", &id, "--reason", "changed my mind"],
        true,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("approval_not_pending"));
    let r = client.call_tool(refund(400.0)).await.unwrap();
    assert_eq!(r.is_error, Some(false), "{}", text(&r));
    assert_eq!(refunds(&backend).len(), 1);
}

/// "Approve for this task" is an explicit choice: identical calls run for
/// the rest of the task, and it ends with the task.
#[tokio::test]
async fn approve_for_the_task_covers_identical_calls_until_the_task_ends() {
    let (gw, backend) = start().await;
    let started = gw.start_task("batch", &["pay.refund"], &[], 3600).await;
    let client = gw.client(&started.token).await;
    let lead = gw.issue_approver_key("lead").await;
    let r = client.call_tool(refund(150.0)).await.unwrap();
    let id = r.meta.as_ref().unwrap().0["tollgate/approval"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body) = api(
        &gw,
        &lead,
        &id,
        "approve",
        json!({ "reason": "standing order", "for_task": true }),
    )
    .await;
    assert_eq!(
        (status, body["scope"].as_str()),
        (200, Some("task")),
        "{body}"
    );
    for _ in 0..3 {
        let r = client.call_tool(refund(150.0)).await.unwrap();
        assert_eq!(r.is_error, Some(false), "{}", text(&r));
    }
    // Only the identical call: another amount needs its own approval.
    let r = client.call_tool(refund(151.0)).await.unwrap();
    assert_eq!(reason(&r), "approval_pending");
    assert_eq!(refunds(&backend).len(), 3);
    assert_eq!(gw.gw.store().approval(&id).await.unwrap().unwrap().uses, 3);

    tollgate::tasks::end(
        &gw.gw,
        &started.task.id,
        tollgate::store::TaskStatus::Completed,
        "operator",
        "done",
    )
    .await
    .unwrap();
    tollgate::tasks::sweep(&gw.gw).await;
    let r = gw.gw.store().approval(&id).await.unwrap().unwrap();
    assert_eq!(r.status.as_str(), "withdrawn", "it ended with the task");
    // A new task starts from nothing.
    let token = in_task(&gw, "batch").await;
    let client = gw.client(&token).await;
    let r = client.call_tool(refund(150.0)).await.unwrap();
    assert_eq!(reason(&r), "approval_pending", "{}", text(&r));
    assert_eq!(refunds(&backend).len(), 3);
}

/// New requests are rate-limited per agent (asking again for one already
/// pending is free); a request over the rate is withdrawn before any
/// approver or webhook hears of it.
#[tokio::test]
async fn new_approval_requests_are_rate_limited_per_agent() {
    let extra = r#"---
kind: Agent
id: eager
description: Asks a lot
owners:
  business: { name: shop-lead, contact: lead@example.com }
  system: { name: sys-team, contact: sys@example.com }
  security: { name: secops, contact: sec@example.com }
deployment: { approved_by: ciso, approved_at: 2026-01-01 }
review_by: 2099-01-01
tools: [pay.refund]
approvals: { mode: non_blocking, max_pending: 10, rate: { rate: 2/hour } }
"#;
    let (gw, backend) = start_with(extra, &[]).await;
    let token = in_task(&gw, "eager").await;
    let client = gw.client(&token).await;
    for amount in [200.0, 201.0, 200.0, 201.0] {
        let r = client.call_tool(refund(amount)).await.unwrap();
        assert_eq!(reason(&r), "approval_pending", "{}", text(&r));
    }
    let e = client.call_tool(refund(202.0)).await.unwrap_err();
    let e = format!("{e:?}");
    assert!(
        e.contains("rate_limited") && e.contains("approval requests"),
        "{e}"
    );
    let lead = gw.issue_approver_key("lead").await;
    let list: Value = reqwest::Client::new()
        .get(format!("{}/api/approvals", gw.base()))
        .bearer_auth(&lead)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["requests"].as_array().unwrap().len(), 2, "{list}");
    assert!(refunds(&backend).is_empty());
}

/// A policy can keep a denial's who and why from the agent.
#[tokio::test]
async fn a_policy_can_hide_who_denied_and_why() {
    let (gw, backend) = start().await;
    let started = gw.start_task("clerk", &["pay.void"], &[], 3600).await;
    let client = gw.client(&started.token).await;
    let call = tokio::spawn(async move {
        client
            .call_tool(
                CallToolRequestParams::new("pay.void".to_string())
                    .with_arguments(args(json!({ "id": "p1" }))),
            )
            .await
    });
    let request = pending(&gw).await;
    let lead = gw.issue_approver_key("lead").await;
    let (status, _) = api(
        &gw,
        &lead,
        &request.id,
        "deny",
        json!({ "reason": "internal fraud review" }),
    )
    .await;
    assert_eq!(status, 200);
    let r = call.await.unwrap().unwrap();
    assert_eq!(reason(&r), "approval_denied");
    let t = text(&r);
    assert!(
        !t.contains("fraud") && !t.contains("lead") && t.contains("an approver"),
        "{t}"
    );
    // The record and the request keep the truth.
    let stored = gw.gw.store().approval(&request.id).await.unwrap().unwrap();
    assert_eq!(stored.reason.as_deref(), Some("internal fraud review"));
    assert!(backend.hits().is_empty());
}

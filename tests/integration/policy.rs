//! Policy and limits on live calls: Cedar decisions (allow, deny, approval
//! required) match `policy explain`; a broken policy file is rejected on
//! reload and the old set stays; each limit refuses at its count with retry
//! information (the clock is moved, nothing sleeps); an argument budget
//! holds under concurrent calls; exhausting a budget ends the task and its
//! credentials. Every check looks at what the backend actually received.

use std::time::Duration;

use rmcp::ServiceError;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use serde_json::{Value, json};
use tollgate::server::HttpOptions;
use tollgate_tests::{Backend, TestGateway, args, workspace_root};

fn call(name: &str, a: Value) -> CallToolRequestParams {
    CallToolRequestParams::new(name.to_string()).with_arguments(args(a))
}

fn text(r: &CallToolResult) -> String {
    r.content[0].as_text().unwrap().text.clone()
}

fn reason(r: &CallToolResult) -> String {
    r.meta
        .as_ref()
        .and_then(|m| m.0.get("tollgate/reason"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// A payments connector (with a per-task JWT) and a clerk agent; `limits`
/// is spliced into the agent, `connector_limits` into the connector.
fn shop(url: &str, limits: &str, connector_limits: &str) -> String {
    format!(
        r#"kind: Connector
id: pay
description: Payments
owners:
  system: {{ name: pay-team, contact: pay@example.com }}
  security: {{ name: secops, contact: secops@example.com }}
http: {{ base_url: "{url}/api" }}
auth:
  gateway_jwt: {{ ttl_seconds: 300 }}
{connector_limits}
tools:
  - name: lookup
    description: Read a payment
    risk: low
    annotations: {{ read_only: true }}
    input_schema:
      type: object
      properties: {{ id: {{ type: string }} }}
      required: [id]
    http: {{ request: {{ method: GET, path: "/payments/{{id}}" }} }}
  - name: refund
    description: Refund money
    risk: high
    input_schema:
      type: object
      properties:
        amount: {{ type: number, exclusiveMinimum: 0 }}
        currency: {{ type: string }}
      required: [amount, currency]
    http: {{ request: {{ method: POST, path: /refunds }} }}
  - name: slow
    description: Never answers in time
    risk: low
    input_schema: {{ type: object }}
    http: {{ request: {{ method: GET, path: /slow }}, timeout_ms: 2000 }}
---
kind: Agent
id: clerk
description: Pays people back
owners:
  business: {{ name: shop-lead, contact: lead@example.com }}
  system: {{ name: sys, contact: sys@example.com }}
  security: {{ name: sec, contact: sec@example.com }}
deployment: {{ approved_by: ciso, approved_at: 2026-01-01 }}
review_by: 2099-01-01
tools: [pay.*]
{limits}
---
kind: Agent
id: auditor
description: Reads payments
owners:
  business: {{ name: audit-lead, contact: audit@example.com }}
  system: {{ name: sys, contact: sys@example.com }}
  security: {{ name: sec, contact: sec@example.com }}
deployment: {{ approved_by: ciso, approved_at: 2026-01-01 }}
review_by: 2099-01-01
tools: [pay.lookup]
"#
    )
}

const POLICIES: &str = r#"
@id("reads")
permit (principal, action == Action::"pay.lookup", resource) when { resource.read_only };

@id("small-refunds")
@approval("none")
permit (principal == Agent::"clerk", action == Action::"pay.refund", resource)
when { context.args.amount.lessThanOrEqual(decimal("100.0")) };

@id("large-refunds")
@approval("owner:business")
@approvals("2")
permit (principal == Agent::"clerk", action == Action::"pay.refund", resource)
when { decimal("100.0").lessThan(context.args.amount) };

@id("no-gbp")
@reason("no refunds in GBP")
forbid (principal, action == Action::"pay.refund", resource)
when { context.args.currency == "GBP" };
"#;

async fn gateway(manifests: &str, policies: Option<&str>) -> TestGateway {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("shop.yaml"), manifests).unwrap();
    if let Some(p) = policies {
        std::fs::write(dir.path().join("shop.cedar"), p).unwrap();
    }
    TestGateway::start_dir(dir, HttpOptions::default()).await
}

fn refunds(backend: &Backend) -> Vec<Value> {
    backend
        .hits()
        .into_iter()
        .filter(|h| h.path == "/api/refunds")
        .map(|h| h.body.unwrap_or(Value::Null))
        .collect()
}

#[tokio::test]
async fn live_decisions_follow_policy_and_match_explain() {
    let backend = Backend::start().await;
    let gw = gateway(&shop(&backend.url, "", ""), Some(POLICIES)).await;
    let key = gw.issue_key("clerk").await;
    let task = gw
        .start_task(
            "clerk",
            &["pay.lookup", "pay.refund"],
            &["amount <= 500"],
            600,
        )
        .await;
    let client = gw.client(&task.token).await;
    let cases = [
        ("pay.lookup", json!({ "id": "p1" }), "allow", "policy_allow"),
        (
            "pay.refund",
            json!({ "amount": 40, "currency": "EUR" }),
            "allow",
            "policy_allow",
        ),
        (
            "pay.refund",
            json!({ "amount": 400, "currency": "EUR" }),
            "approval_required",
            "approval_required",
        ),
        (
            "pay.refund",
            json!({ "amount": 40, "currency": "GBP" }),
            "deny",
            "policy_forbid",
        ),
        (
            "pay.refund",
            json!({ "amount": 600, "currency": "EUR" }),
            "deny",
            "task_constraint",
        ),
    ];
    let catalog = gw.gw.catalog();
    let clerk = &catalog.agents["clerk"];
    for (tool, a, verdict, code) in &cases {
        let r = client.call_tool(call(tool, a.clone())).await.unwrap();
        let explained = tollgate::pipeline::policy::explain(
            &catalog,
            clerk,
            tool,
            args(a.clone()),
            Some(&task.task),
            gw.gw.now(),
        );
        assert_eq!(
            (explained.verdict, explained.code),
            (*verdict, *code),
            "{tool} {a}"
        );
        let last = gw.decisions().await.pop().unwrap();
        let recorded = last.policy.as_ref().expect("policy in the record");
        assert_eq!(recorded["code"], *code, "{tool} {a}: {recorded}");
        if *verdict == "allow" {
            assert_eq!(r.is_error, Some(false), "{tool} {a}: {}", text(&r));
            assert_eq!(last.decision, "allow");
        } else {
            assert_eq!(r.is_error, Some(true));
            assert_eq!(reason(&r), *code, "{}", text(&r));
            assert_eq!(last.reason_code, *code);
        }
    }
    // The approval refusal names who would approve, how many, and the
    // policy that asked; the record keeps the same routing.
    let r = client
        .call_tool(call(
            "pay.refund",
            json!({ "amount": 250, "currency": "EUR" }),
        ))
        .await
        .unwrap();
    let approval = &r.meta.as_ref().unwrap().0["tollgate/approval"];
    assert_eq!(approval["approvers"], "shop-lead");
    assert_eq!(approval["route"], "owner:business");
    assert_eq!(approval["count"], 2);
    assert_eq!(approval["source"], "large-refunds");
    assert!(text(&r).contains("shop-lead"), "{}", text(&r));
    let last = gw.decisions().await.pop().unwrap();
    assert_eq!(last.policy.unwrap()["approval"]["approvers"], "shop-lead");
    // Only the one allowed refund reached the backend.
    assert_eq!(
        refunds(&backend),
        vec![json!({ "amount": 40, "currency": "EUR" })]
    );

    // The auditor has no permit for anything but reads; outside a task
    // (not required for low risk) reads are allowed, and tools/list shows
    // only what some permit could allow.
    let auditor = gw.client(&gw.issue_key("auditor").await).await;
    let r = auditor
        .call_tool(call("pay.lookup", json!({ "id": "p2" })))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(false));
    let plain = gw.client(&key).await;
    let listed: Vec<String> = plain
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    // `pay.slow` is granted but no permit covers it: not listed, and
    // refused by default deny.
    assert!(!listed.contains(&"pay.slow".to_string()), "{listed:?}");
    let r = plain.call_tool(call("pay.slow", json!({}))).await.unwrap();
    assert_eq!(reason(&r), "policy_default_deny", "{}", text(&r));
    assert!(!backend.hits().iter().any(|h| h.path == "/api/slow"));
}

#[tokio::test]
async fn a_broken_policy_is_rejected_on_reload_and_the_old_set_stays() {
    let backend = Backend::start().await;
    let gw = gateway(&shop(&backend.url, "", ""), Some(POLICIES)).await;
    let client = gw.client(&gw.issue_key("clerk").await).await;
    let lookup = || call("pay.lookup", json!({ "id": "p1" }));
    assert_eq!(
        client.call_tool(lookup()).await.unwrap().is_error,
        Some(false)
    );

    let path = gw.manifests.path().join("shop.cedar");
    let broken = format!(
        "{POLICIES}\nforbid (principal, action, resource)\nwhen {{ context.args.nope == 1 }};\n"
    );
    std::fs::write(&path, &broken).unwrap();
    let mut last = tollgate::reload::fingerprint_of(&gw.gw.catalog().sources);
    match tollgate::reload::check_once(&gw.gw, gw.manifests.path(), &mut last).await {
        tollgate::reload::Reload::Rejected(errors) => {
            let line = broken.lines().count();
            assert!(
                errors
                    .iter()
                    .any(|e| e.contains(&format!("shop.cedar:{line}"))),
                "{errors:?}"
            );
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    // Still the old set.
    assert_eq!(
        client.call_tool(lookup()).await.unwrap().is_error,
        Some(false)
    );

    // A valid change applies at once.
    std::fs::write(
        &path,
        format!("{POLICIES}\n@id(\"freeze\")\nforbid (principal, action == Action::\"pay.lookup\", resource);\n"),
    )
    .unwrap();
    assert_eq!(
        tollgate::reload::check_once(&gw.gw, gw.manifests.path(), &mut last).await,
        tollgate::reload::Reload::Applied
    );
    let r = client.call_tool(lookup()).await.unwrap();
    assert_eq!(reason(&r), "policy_forbid");
    let hits = backend
        .hits()
        .iter()
        .filter(|h| h.path == "/api/payments/p1")
        .count();
    assert_eq!(hits, 2, "the backend saw the two allowed lookups only");
}

fn rate_error(e: ServiceError) -> (String, u64) {
    let ServiceError::McpError(e) = e else {
        panic!("not a JSON-RPC error: {e:?}")
    };
    assert_eq!(e.code.0, tollgate::pipeline::denial::codes::RATE_LIMITED);
    let data = e.data.unwrap();
    assert_eq!(data["reason"], "rate_limited");
    (
        data["limit"].as_str().unwrap().to_string(),
        data["retry_after"].as_u64().unwrap(),
    )
}

#[tokio::test]
async fn each_rate_limit_refuses_at_its_count_and_says_when_to_retry() {
    let backend = Backend::start().await;
    let limits =
        "limits:\n  rate: { rate: 3/minute }\n  tools:\n    pay.lookup: { rate: 2/minute }";
    let gw = gateway(&shop(&backend.url, limits, ""), None).await;
    let client = gw.client(&gw.issue_key("clerk").await).await;
    let lookup = |id: &str| call("pay.lookup", json!({ "id": id }));
    // Per agent and tool: 2 per minute.
    for id in ["a", "b"] {
        assert_eq!(
            client.call_tool(lookup(id)).await.unwrap().is_error,
            Some(false)
        );
    }
    let (limit, retry) = rate_error(client.call_tool(lookup("c")).await.unwrap_err());
    assert!(
        limit.contains("pay.lookup") && limit.contains("2/minute"),
        "{limit}"
    );
    assert_eq!(retry, 30);
    // Per agent: 3 per minute over all tools (the refused call above
    // counted against it: the safe side).
    let (limit, retry) = rate_error(
        client
            .call_tool(call("pay.slow", json!({})))
            .await
            .unwrap_err(),
    );
    assert!(
        limit.contains("agent `clerk`") && limit.contains("3/minute"),
        "{limit}"
    );
    assert!((1..=20).contains(&retry), "{retry}");
    // Time passes (the gateway's clock; nothing sleeps).
    gw.clock.advance(Duration::from_secs(30));
    assert_eq!(
        client.call_tool(lookup("d")).await.unwrap().is_error,
        Some(false)
    );
    let seen: Vec<String> = backend.hits().into_iter().map(|h| h.path).collect();
    assert_eq!(
        seen,
        ["/api/payments/a", "/api/payments/b", "/api/payments/d"]
    );
    let codes: Vec<String> = gw
        .decisions()
        .await
        .into_iter()
        .map(|d| d.reason_code)
        .collect();
    assert_eq!(codes.iter().filter(|c| *c == "rate_limited").count(), 2);
}

#[tokio::test]
async fn a_connector_rate_protects_the_backend_from_all_agents_together() {
    let backend = Backend::start().await;
    let gw = gateway(
        &shop(&backend.url, "", "limits:\n  rate: { rate: 3/hour }"),
        None,
    )
    .await;
    let clerk = gw.client(&gw.issue_key("clerk").await).await;
    let auditor = gw.client(&gw.issue_key("auditor").await).await;
    let lookup = || call("pay.lookup", json!({ "id": "p" }));
    assert!(clerk.call_tool(lookup()).await.is_ok());
    assert!(auditor.call_tool(lookup()).await.is_ok());
    assert!(clerk.call_tool(lookup()).await.is_ok());
    let (limit, retry) = rate_error(auditor.call_tool(lookup()).await.unwrap_err());
    assert!(limit.contains("connector `pay`"), "{limit}");
    assert_eq!(retry, 1200);
    assert_eq!(backend.hits().len(), 3);
}

#[tokio::test]
async fn an_argument_budget_holds_under_concurrent_calls() {
    let backend = Backend::start().await;
    let limits = "limits:\n  per_task:\n    budgets:\n      - { tools: [pay.refund], argument: amount, max: 1000 }";
    let gw = gateway(&shop(&backend.url, limits, ""), None).await;
    let task = gw.start_task("clerk", &["pay.refund"], &[], 600).await;
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(gw.client(&task.token).await);
    }
    // Eight refunds of 300 at once: only three fit under 1,000.
    let calls = clients.iter().map(|c| {
        c.call_tool(call(
            "pay.refund",
            json!({ "amount": 300, "currency": "EUR" }),
        ))
    });
    let results = futures::future::join_all(calls).await;
    let ok = results
        .iter()
        .filter(|r| r.as_ref().unwrap().is_error == Some(false))
        .count();
    assert_eq!(ok, 3);
    for r in results
        .iter()
        .map(|r| r.as_ref().unwrap())
        .filter(|r| r.is_error == Some(true))
    {
        assert_eq!(reason(r), "task_budget_exhausted", "{}", text(r));
        assert!(text(r).contains("100 of 1000 left"), "{}", text(r));
    }
    let sent: f64 = refunds(&backend)
        .iter()
        .map(|b| b["amount"].as_f64().unwrap())
        .sum();
    assert_eq!(sent, 900.0);
    // Records never hold an argument value, refusals included.
    for d in gw.decisions().await {
        let reason = d.reason.replace(&task.task.id, "");
        assert!(!reason.contains("300"), "{reason}");
        let policy = d.policy.map(|p| p.to_string()).unwrap_or_default();
        assert!(
            !policy.replace(&task.task.id, "").contains("300"),
            "{policy}"
        );
    }
    // 100 still fits, and spends the budget to the last unit: the task ends
    // after that call, and its credentials with it.
    let r = clients[0]
        .call_tool(call(
            "pay.refund",
            json!({ "amount": 100, "currency": "EUR" }),
        ))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(false), "{}", text(&r));
    let t = gw.gw.store().task(&task.task.id).await.unwrap().unwrap();
    assert_eq!(t.status.as_str(), "completed");
    assert!(t.end_reason.unwrap().contains("sum(amount)"));
    let creds = gw.gw.store().task_credentials(&task.task.id).await.unwrap();
    assert!(!creds.is_empty() && creds.iter().all(|c| c.revoked_at.is_some()));
    assert!(
        clients[1]
            .call_tool(call(
                "pay.refund",
                json!({ "amount": 1, "currency": "EUR" })
            ))
            .await
            .is_err(),
        "the task token no longer works"
    );
    let sent: f64 = refunds(&backend)
        .iter()
        .map(|b| b["amount"].as_f64().unwrap())
        .sum();
    assert_eq!(sent, 1000.0);
}

#[tokio::test]
async fn a_call_budget_ends_the_task_when_spent() {
    let backend = Backend::start().await;
    let limits = "limits:\n  per_task:\n    max_calls: 2";
    let gw = gateway(&shop(&backend.url, limits, ""), None).await;
    let task = gw.start_task("clerk", &["pay.lookup"], &[], 600).await;
    let client = gw.client(&task.token).await;
    let lookup = || call("pay.lookup", json!({ "id": "p" }));
    assert_eq!(
        client.call_tool(lookup()).await.unwrap().is_error,
        Some(false)
    );
    assert_eq!(
        client.call_tool(lookup()).await.unwrap().is_error,
        Some(false)
    );
    let t = gw.gw.store().task(&task.task.id).await.unwrap().unwrap();
    assert_eq!(t.status.as_str(), "completed", "{t:?}");
    assert!(client.call_tool(lookup()).await.is_err());
    let hits = backend.hits();
    assert_eq!(hits.len(), 2);
    // Both calls carried the task's credential, now revoked.
    let creds = gw.gw.store().task_credentials(&task.task.id).await.unwrap();
    assert!(!creds.is_empty() && creds.iter().all(|c| c.revoked_at.is_some()));
}

#[tokio::test]
async fn calls_in_flight_per_task_are_capped_while_a_call_is_held() {
    let backend = Backend::start().await;
    let limits = "limits:\n  per_task:\n    max_in_flight: 1";
    let gw = gateway(&shop(&backend.url, limits, ""), None).await;
    let task = gw
        .start_task("clerk", &["pay.slow", "pay.lookup"], &[], 600)
        .await;
    let a = gw.client(&task.token).await;
    let b = gw.client(&task.token).await;
    // Hold one call at the backend (it never answers; the tool times out
    // after 2 s), then try a second while the first is in flight.
    let held = tokio::spawn(async move { a.call_tool(call("pay.slow", json!({}))).await });
    for _ in 0..200 {
        if backend.hits().iter().any(|h| h.path == "/api/slow") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(backend.hits().iter().any(|h| h.path == "/api/slow"));
    let r = b
        .call_tool(call("pay.lookup", json!({ "id": "p" })))
        .await
        .unwrap();
    assert_eq!(reason(&r), "task_in_flight_limit", "{}", text(&r));
    assert!(!backend.hits().iter().any(|h| h.path == "/api/payments/p"));
    // Once the held call is over, the slot is free again.
    let _ = held.await.unwrap();
    let r = b
        .call_tool(call("pay.lookup", json!({ "id": "p" })))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(false), "{}", text(&r));
    assert_eq!(gw.gw.in_flight_tasks(), 0);
}

#[test]
fn the_demo_policy_table_passes_and_a_wrong_expectation_fails() {
    let root = workspace_root();
    let table = root.join("manifests/policy-tests/demo.yaml");
    let report = tollgate::cli::policy::run_table(&table, &root.join("manifests")).unwrap();
    let failed: Vec<_> = report.cases.iter().filter(|c| !c.passed).collect();
    assert!(failed.is_empty(), "{failed:#?}");
    assert!(report.passed >= 10);

    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong.yaml");
    std::fs::write(
        &wrong,
        format!(
            "manifests: {}\ncases:\n  - name: a large refund does not run unapproved\n    agent: support-bot\n    tool: billing.refund\n    args: {{ invoice_id: INV-1, amount: 400, currency: EUR, reason: dup }}\n    task: {{}}\n    expect: {{ decision: allow }}\n",
            root.join("manifests").display()
        ),
    )
    .unwrap();
    let report = tollgate::cli::policy::run_table(&wrong, &root.join("manifests")).unwrap();
    assert_eq!((report.passed, report.failed), (0, 1));
    assert_eq!(report.cases[0].got.verdict, "approval_required");
}

#[test]
fn the_committed_cedar_schema_is_current() {
    let root = workspace_root();
    let catalog = tollgate::manifest::load_dir(&root.join("manifests")).unwrap();
    let generated = tollgate::cli::policy::schema_of(&catalog).unwrap();
    let committed = std::fs::read_to_string(root.join("manifests/policies.cedarschema")).unwrap();
    assert_eq!(
        committed.trim_end(),
        generated.trim_end(),
        "manifests/policies.cedarschema is stale: run `tollgate policy schema > manifests/policies.cedarschema`"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_keeps_the_state_of_unchanged_limits_and_limits_gateway_tools() {
    let backend = Backend::start().await;
    let limits = "limits:\n  tools:\n    pay.lookup: { rate: 2/hour }\n    tollgate.start_task: { rate: 1/hour }";
    let gw = gateway(&shop(&backend.url, limits, ""), None).await;
    let client = gw.client(&gw.issue_key("clerk").await).await;
    let lookup = || call("pay.lookup", json!({ "id": "p" }));
    assert!(client.call_tool(lookup()).await.is_ok());
    assert!(client.call_tool(lookup()).await.is_ok());
    assert!(client.call_tool(lookup()).await.is_err());

    // An unrelated change: the limit is unchanged, so no fresh burst.
    let path = gw.manifests.path().join("shop.yaml");
    let mut last = tollgate::reload::fingerprint_of(&gw.gw.catalog().sources);
    std::fs::write(
        &path,
        shop(&backend.url, limits, "").replace("description: Payments", "description: Payments v2"),
    )
    .unwrap();
    assert_eq!(
        tollgate::reload::check_once(&gw.gw, gw.manifests.path(), &mut last).await,
        tollgate::reload::Reload::Applied
    );
    let (limit, _) = rate_error(client.call_tool(lookup()).await.unwrap_err());
    assert!(limit.contains("2/hour"), "{limit}");
    // A changed limit starts afresh.
    std::fs::write(
        &path,
        shop(&backend.url, &limits.replace("2/hour", "3/hour"), ""),
    )
    .unwrap();
    assert_eq!(
        tollgate::reload::check_once(&gw.gw, gw.manifests.path(), &mut last).await,
        tollgate::reload::Reload::Applied
    );
    assert!(client.call_tool(lookup()).await.is_ok());
    assert_eq!(backend.hits().len(), 3);

    // The gateway's own tools are limited too.
    let start = |purpose: &str| {
        call(
            "tollgate.start_task",
            json!({ "purpose": purpose, "tools": ["pay.lookup"], "ttl_seconds": 60 }),
        )
    };
    let r = client.call_tool(start("first")).await.unwrap();
    assert_eq!(r.is_error, Some(false), "{}", text(&r));
    let (limit, retry) = rate_error(client.call_tool(start("second")).await.unwrap_err());
    assert!(limit.contains("tollgate.start_task"), "{limit}");
    assert_eq!(retry, 3600);
}

const BIN: &str = env!("CARGO_BIN_EXE_tollgate-under-test");

#[test]
fn the_policy_commands_report_for_operators_and_scripts() {
    let root = workspace_root();
    let manifests = root.join("manifests");
    let data = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| tollgate_tests::run_cli(BIN, data.path(), &manifests, args);

    let out = run(&["check"]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("policies: 6 from 1 file(s)"), "{stdout}");

    let out = run(&[
        "policy",
        "test",
        manifests.join("policy-tests/demo.yaml").to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let refund = r#"{"invoice_id":"INV-1042","amount":400,"currency":"EUR","reason":"duplicate"}"#;
    let out = run(&[
        "policy",
        "explain",
        "--agent",
        "support-bot",
        "--tool",
        "billing.refund",
        "--in-task",
        "--args",
        refund,
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"], "approval_required");
    assert_eq!(v["decision"]["approval"]["approvers"], "head-of-support");
    assert_eq!(v["decision"]["policies"][0]["id"], "support-large-refunds");

    // Bad input: a clear error and exit 1.
    let out = run(&[
        "policy",
        "explain",
        "--agent",
        "support-bot",
        "--tool",
        "billing.refund",
        "--args",
        "{amount",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--args is not valid JSON"));
    let out = run(&[
        "policy",
        "explain",
        "--agent",
        "nobody",
        "--tool",
        "billing.refund",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("declared: finance-bot, support-bot"));

    // A failing table exits 1 and says which case.
    let table = data.path().join("t.yaml");
    std::fs::write(
        &table,
        format!(
            "manifests: {}\ncases:\n  - name: reads are denied\n    agent: support-bot\n    tool: helpdesk.get_ticket\n    args: {{ ticket_id: 1 }}\n    expect: {{ decision: deny }}\n",
            manifests.display()
        ),
    )
    .unwrap();
    let out = run(&["policy", "test", table.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("FAIL  reads are denied") && stdout.contains("0 passed, 1 failed"),
        "{stdout}"
    );
}

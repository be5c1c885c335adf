//! Nothing outlives the grant that produced it (issue #7 §2): a task started
//! in band records the credential that started it, ends when that key is
//! revoked (with its token and every credential issued for it, upstream
//! too), never outlives the workload JWT that started it, and cannot
//! widen an operator's task or reach above the agent's self-start risk.
//! And the gateway's own tools take exactly the arguments they advertise
//! (§6).

use std::time::Duration;

use base64::Engine;
use rmcp::RoleClient;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use serde_json::{Value, json};
use tollgate::store::TaskFilter;
use tollgate::tasks::{StartTask, StartingCredential};
use tollgate_tests::jwt::{JwksServer, SigningKey, claims};
use tollgate_tests::oauth::OAuthServer;
use tollgate_tests::{Backend, TestGateway, args, raw_post, test_manifests};

const BIN: &str = env!("CARGO_BIN_EXE_tollgate-under-test");

fn call(name: &str, a: Value) -> CallToolRequestParams {
    CallToolRequestParams::new(name.to_string()).with_arguments(args(a))
}

fn text(r: &CallToolResult) -> String {
    r.content[0].as_text().unwrap().text.clone()
}

fn init_body() -> String {
    json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}).to_string()
}

/// The claims of a JWT, read without verifying (the gateway verified it).
fn payload(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// Issues a key for `agent`; returns (key, key id).
async fn key_with_id(gw: &TestGateway, agent: &str) -> (String, String) {
    let before: Vec<String> = gw
        .gw
        .store()
        .list_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.key_id)
        .collect();
    let key = gw.issue_key(agent).await;
    let id = gw
        .gw
        .store()
        .list_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.key_id)
        .find(|id| !before.contains(id))
        .unwrap();
    (key, id)
}

/// Starts a task in band; returns (task id, task token) or the refusal.
async fn start_in_band(
    client: &RunningService<RoleClient, ()>,
    body: Value,
) -> Result<(String, String), String> {
    let r = client
        .call_tool(call("tollgate.start_task", body))
        .await
        .unwrap();
    if r.is_error == Some(true) {
        return Err(text(&r));
    }
    let s = r.structured_content.unwrap();
    Ok((
        s["task_id"].as_str().unwrap().to_string(),
        s["task_token"].as_str().unwrap().to_string(),
    ))
}

async fn tasks_of(gw: &TestGateway, agent: &str) -> Vec<tollgate::store::TaskRecord> {
    gw.gw
        .store()
        .tasks(&TaskFilter {
            agent_id: Some(agent.into()),
            ..TaskFilter::default()
        })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn revoking_the_key_that_started_a_task_ends_the_task_and_its_token() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&test_manifests(&backend.url)).await;
    let (key, key_id) = key_with_id(&gw, "tester").await;
    let (other_key, _) = key_with_id(&gw, "tester").await;
    let client = gw.client(&key).await;
    let (task_id, token) = start_in_band(
        &client,
        json!({ "purpose": "Look up", "tools": ["inventory.get_item"], "ttl_seconds": 3600 }),
    )
    .await
    .unwrap();
    // A task the agent's second key started is not touched by revoking the first.
    let (kept_id, kept_token) = start_in_band(
        &gw.client(&other_key).await,
        json!({ "purpose": "Other", "tools": ["inventory.get_item"], "ttl_seconds": 3600 }),
    )
    .await
    .unwrap();

    // The task records the key; its token names it.
    let task = gw.gw.store().task(&task_id).await.unwrap().unwrap();
    assert_eq!(task.started_with.as_deref(), Some(key_id.as_str()));
    assert_eq!(task.origin, "in_band");
    assert_eq!(payload(&token)["cid"], key_id.as_str());

    let in_task = gw.client(&token).await;
    let r = in_task
        .call_tool(call("inventory.get_item", json!({ "item_id": "1" })))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(false), "{}", text(&r));
    assert_eq!(backend.hits().len(), 1);

    // The leaked key is revoked from the CLI (another process).
    let out = gw.cli(BIN, &["agents", "revoke-key", &key_id]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let task = gw.gw.store().task(&task_id).await.unwrap().unwrap();
    assert_eq!(task.status.as_str(), "revoked");
    assert_eq!(task.end_reason.as_deref(), Some("starting key revoked"));
    // The task token the key minted no longer works, on a fresh request or
    // on the open connection.
    let r = raw_post(&gw.url, Some(&token), init_body()).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["reason"], "task_ended");
    assert!(
        in_task
            .call_tool(call("inventory.get_item", json!({ "item_id": "1" })))
            .await
            .is_err()
    );
    assert_eq!(backend.hits().len(), 1);
    let kept = gw.gw.store().task(&kept_id).await.unwrap().unwrap();
    assert_eq!(kept.status.as_str(), "active");
    assert_eq!(
        raw_post(&gw.url, Some(&kept_token), init_body())
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn a_start_racing_the_key_revocation_leaves_no_task_behind() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&test_manifests(&backend.url)).await;
    let (_key, key_id) = key_with_id(&gw, "tester").await;
    // The start authenticated with the key just before it was revoked; the
    // revocation commits first, then the start reaches the store.
    assert!(
        gw.gw
            .store()
            .revoke_key(&key_id, &tollgate_tests::now())
            .await
            .unwrap()
    );
    let refused = tollgate::tasks::start_in_band(
        &gw.gw,
        StartTask {
            agent_id: "tester".into(),
            purpose: "late".into(),
            tools: vec!["inventory.get_item".into()],
            constraints: vec![],
            ttl: Duration::from_secs(600),
            started_by: "agent:tester".into(),
            origin: tollgate::tasks::ORIGIN_IN_BAND,
        },
        StartingCredential {
            id: key_id.clone(),
            expires_at: None,
        },
    )
    .await;
    let err = refused.unwrap_err();
    assert_eq!(err.code(), "task_invalid");
    assert!(err.to_string().contains("revoked"), "{err}");
    assert!(tasks_of(&gw, "tester").await.is_empty());
}

/// One OAuth-protected connector `delta` and agent `tester` granted it.
fn oauth_manifests(backend: &str, oauth: &OAuthServer) -> String {
    format!(
        r#"kind: Connector
id: delta
description: delta API
owners:
  system: {{ name: delta-team, contact: delta@example.com }}
  security: {{ name: secops, contact: secops@example.com }}
http:
  base_url: {backend}
auth:
  oauth2_client_credentials:
    token_url: {}
    revocation_url: {}
    client_id: tollgate
    client_secret: {{ file: delta.secret }}
tools:
  - name: read
    description: Read
    risk: low
    scopes: ["delta:read"]
    input_schema: {{ type: object }}
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
tools: [delta.read]
"#,
        oauth.token_url(),
        oauth.revocation_url()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_tokens_of_a_task_ended_by_its_key_are_revoked() {
    let oauth = OAuthServer::start(&[("tollgate", "client-s3cret")], None).await;
    let backend = Backend::start().await;
    let (listener, _) = TestGateway::reserve().await;
    let gw = TestGateway::start_reserved(
        listener,
        &oauth_manifests(&backend.url, &oauth),
        &[("delta.secret", "client-s3cret\n")],
    )
    .await;
    let start = json!({ "purpose": "Read", "tools": ["delta.read"], "ttl_seconds": 600 });

    // From the CLI (another process): the store revokes the task's
    // credentials in the revocation's transaction; the serving gateway's
    // sweeper completes the upstream (RFC 7009) revocation.
    let (key, key_id) = key_with_id(&gw, "tester").await;
    let client = gw.client(&key).await;
    let (task_id, _) = start_in_band(&client, start.clone()).await.unwrap();
    let r = client
        .call_tool(call("delta.read", json!({})))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(false), "{}", text(&r));
    let issued = oauth.requests()[0].issued_token.clone().unwrap();
    let out = gw.cli(BIN, &["agents", "revoke-key", &key_id]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let creds = gw.gw.store().task_credentials(&task_id).await.unwrap();
    assert!(creds[0].revoked_at.is_some(), "{creds:?}");
    assert!(creds[0].upstream_pending);
    tollgate::tasks::sweep(&gw.gw).await;
    assert!(oauth.revoked().contains(&issued));
    assert!(!oauth.is_active(&issued));
    let creds = gw.gw.store().task_credentials(&task_id).await.unwrap();
    assert!(!creds[0].upstream_pending);

    // In process (`tasks::revoke_key`): upstream revocation at once.
    let (key, key_id) = key_with_id(&gw, "tester").await;
    let client = gw.client(&key).await;
    let (task_id, _) = start_in_band(&client, start).await.unwrap();
    let r = client
        .call_tool(call("delta.read", json!({})))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(false), "{}", text(&r));
    let issued = oauth
        .requests()
        .last()
        .unwrap()
        .issued_token
        .clone()
        .unwrap();
    assert_ne!(oauth.requests().len(), 1);
    let ended = tollgate::tasks::revoke_key(&gw.gw, &key_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        ended.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        [task_id.as_str()]
    );
    assert!(oauth.revoked().contains(&issued));
    // Revoking again: no live key.
    assert!(
        tollgate::tasks::revoke_key(&gw.gw, &key_id)
            .await
            .unwrap()
            .is_none()
    );
}

const ISS: &str = "https://issuer.test";
const AUD: &str = "https://tollgate.test";
const SUB: &str = "spiffe://corp/agents/invoice-bot";

/// The test manifests plus issuer `corp` and agent `invoice-bot`, known
/// only by its workload identity `SUB`.
fn workload_manifests(backend: &str, jwks_url: &str) -> String {
    format!(
        r#"{}---
kind: Issuer
id: corp
description: Test OIDC provider
issuer: {ISS}
audience: {AUD}
algorithms: [ES256]
jwks: {{ url: "{jwks_url}" }}
---
kind: Agent
id: invoice-bot
description: Workload-identity agent
owners:
  business: {{ name: finance-lead, contact: fin@example.com }}
  system: {{ name: payments-team, contact: pay@example.com }}
  security: {{ name: secops, contact: sec@example.com }}
deployment: {{ approved_by: ciso, approved_at: 2026-01-01 }}
review_by: 2099-01-01
credentials:
  gateway_keys: false
  workload:
    - {{ issuer: corp, subject: "{SUB}" }}
tools: [inventory.get_item]
"#,
        test_manifests(backend)
    )
}

#[tokio::test]
async fn a_task_started_with_a_workload_jwt_never_outlives_it() {
    let backend = Backend::start().await;
    let key = SigningKey::generate("k1");
    let jwks = JwksServer::start(&[&key]).await;
    let manifests = workload_manifests(&backend.url, &jwks.url);
    let gw = TestGateway::start(&manifests).await;
    // The JWT lives five minutes; the task asks for an hour.
    let jwt_claims = claims(ISS, AUD, SUB);
    let exp = jwt_claims["exp"].as_i64().unwrap();
    let client = gw.client(&key.sign(&jwt_claims)).await;
    let (task_id, token) = start_in_band(
        &client,
        json!({ "purpose": "Invoices", "tools": ["inventory.get_item"], "ttl_seconds": 3600 }),
    )
    .await
    .unwrap();
    let task = gw.gw.store().task(&task_id).await.unwrap().unwrap();
    assert_eq!(
        task.started_with.as_deref(),
        Some(&*format!("jwt:corp/{SUB}"))
    );
    let ends = time::OffsetDateTime::parse(
        &task.expires_at,
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(ends.unix_timestamp() <= exp, "{} > {exp}", task.expires_at);
    assert!(task.started_with_expires_at.is_some());
    assert!(payload(&token)["exp"].as_i64().unwrap() <= exp);
    assert_eq!(
        raw_post(&gw.url, Some(&token), init_body()).await.status(),
        200
    );
    // Past the JWT's expiry, the task token is dead too.
    gw.clock.advance(Duration::from_secs(301));
    assert_eq!(
        raw_post(&gw.url, Some(&token), init_body()).await.status(),
        401
    );
}

#[tokio::test]
async fn an_operator_task_binds_what_the_agent_may_start_in_band() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&test_manifests(&backend.url)).await;
    let operator = gw
        .start_task("tester", &["inventory.create_item"], &["qty <= 5"], 600)
        .await;
    let key = gw.issue_key("tester").await;
    let client = gw.client(&key).await;
    let body = |tools: Value, constraints: Value| json!({ "purpose": "mine", "tools": tools, "ttl_seconds": 3600, "constraints": constraints });
    // Wider tools, the same tool without the constraint, a looser bound,
    // an optional form of the bound: all refused, naming the operator task.
    for (tools, constraints) in [
        (json!(["inventory.*"]), json!(["qty <= 5"])),
        (json!(["inventory.get_item"]), json!([])),
        (json!(["inventory.create_item"]), json!([])),
        (json!(["inventory.create_item"]), json!(["qty <= 50"])),
        (json!(["inventory.create_item"]), json!(["qty? <= 5"])),
    ] {
        let refused = start_in_band(&client, body(tools.clone(), constraints))
            .await
            .unwrap_err();
        assert!(
            refused.contains(&operator.task.id) && refused.contains("task_invalid"),
            "{tools}: {refused}"
        );
    }
    // The same or stricter fits, and ends no later than the operator's task.
    let (task_id, _) = start_in_band(
        &client,
        body(json!(["inventory.create_item"]), json!(["qty <= 3"])),
    )
    .await
    .unwrap();
    let task = gw.gw.store().task(&task_id).await.unwrap().unwrap();
    assert!(task.expires_at <= operator.task.expires_at);
    let r = client
        .call_tool(call(
            "inventory.create_item",
            json!({ "name": "bolt", "qty": 4 }),
        ))
        .await
        .unwrap();
    assert!(text(&r).contains("qty <= 3"), "{}", text(&r));

    // Once the operator's task has ended, the agent starts what its grants allow.
    tollgate::tasks::end(
        &gw.gw,
        &operator.task.id,
        tollgate::store::TaskStatus::Completed,
        "alice",
        "done",
    )
    .await
    .unwrap();
    let fresh = gw.client(&key).await;
    start_in_band(&fresh, body(json!(["inventory.*"]), json!([])))
        .await
        .unwrap();
    assert!(backend.hits().is_empty());
}

#[tokio::test]
async fn agents_start_their_own_tasks_only_up_to_their_self_start_risk() {
    let backend = Backend::start().await;
    let grants =
        "tools: [inventory.get_item, inventory.create_item, inventory.boom, inventory.slow]\n";
    let with_purge = |policy: &str| {
        test_manifests(&backend.url).replacen(
            grants,
            &format!(
                "{policy}tools: [inventory.get_item, inventory.create_item, inventory.purge]\n"
            ),
            1,
        )
    };
    let purge = json!({ "purpose": "Clean up", "tools": ["inventory.purge"], "ttl_seconds": 60 });

    // Default: up to `high`; a critical tool needs an operator.
    let gw = TestGateway::start(&with_purge("")).await;
    let client = gw.client(&gw.issue_key("tester").await).await;
    let refused = start_in_band(&client, purge.clone()).await.unwrap_err();
    assert!(
        refused.contains("critical") && refused.contains("self_start_max_risk"),
        "{refused}"
    );
    assert!(tasks_of(&gw, "tester").await.is_empty());
    gw.start_task("tester", &["inventory.purge"], &[], 60).await;

    // Raised to `critical` by the manifest.
    let gw = TestGateway::start(&with_purge("tasks: { self_start_max_risk: critical }\n")).await;
    let client = gw.client(&gw.issue_key("tester").await).await;
    start_in_band(&client, purge).await.unwrap();

    // Lowered to `low`: a `medium` tool is refused, a `low` one is fine.
    let gw = TestGateway::start(&with_purge("tasks: { self_start_max_risk: low }\n")).await;
    let client = gw.client(&gw.issue_key("tester").await).await;
    let refused = start_in_band(
        &client,
        json!({ "purpose": "p", "tools": ["inventory.create_item"], "ttl_seconds": 60 }),
    )
    .await
    .unwrap_err();
    assert!(refused.contains("medium risk"), "{refused}");
    start_in_band(
        &client,
        json!({ "purpose": "p", "tools": ["inventory.get_item"], "ttl_seconds": 60 }),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn the_gateway_tools_refuse_arguments_outside_their_advertised_schema() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&test_manifests(&backend.url)).await;
    let client = gw.client(&gw.issue_key("tester").await).await;
    let cases = [
        (
            "unknown property",
            json!({ "purpose": "p", "tools": ["inventory.get_item"], "ttl_seconds": 60, "admin": true }),
            "admin",
        ),
        (
            "wrong type",
            json!({ "purpose": "p", "tools": ["inventory.get_item"], "ttl_seconds": "60" }),
            "/ttl_seconds",
        ),
        (
            "missing required",
            json!({ "tools": ["inventory.get_item"], "ttl_seconds": 60 }),
            "purpose",
        ),
    ];
    for (what, body, names) in cases {
        let r = client
            .call_tool(call("tollgate.start_task", body))
            .await
            .unwrap();
        assert_eq!(r.is_error, Some(true), "{what}");
        let t = text(&r);
        assert!(
            t.contains("Invalid arguments for tollgate.start_task (invalid_arguments)")
                && t.contains(names),
            "{what}: {t}"
        );
        let meta = r.meta.as_ref().unwrap();
        assert_eq!(meta.0["tollgate/reason"], "invalid_arguments", "{what}");
    }
    // Nothing was started, and each refusal is recorded as such.
    assert!(tasks_of(&gw, "tester").await.is_empty());
    let refused: Vec<_> = gw
        .decisions()
        .await
        .into_iter()
        .filter(|d| d.tool == "tollgate.start_task" && d.reason_code == "invalid_arguments")
        .collect();
    assert_eq!(refused.len(), 3);
    assert!(refused.iter().all(|d| d.decision == "deny"));

    // An integral TTL written as a float is normalised and accepted.
    let (task_id, _) = start_in_band(
        &client,
        json!({ "purpose": "p", "tools": ["inventory.get_item"], "ttl_seconds": 60.0 }),
    )
    .await
    .unwrap();
    let r = client
        .call_tool(call(
            "tollgate.end_task",
            json!({ "task_id": task_id, "force": true }),
        ))
        .await
        .unwrap();
    assert!(
        text(&r).contains("invalid_arguments") && text(&r).contains("force"),
        "{}",
        text(&r)
    );
    let task = gw.gw.store().task(&task_id).await.unwrap().unwrap();
    assert_eq!(task.status.as_str(), "active");
}

#[tokio::test]
async fn a_task_token_stops_working_when_its_starting_identity_is_no_longer_declared() {
    let backend = Backend::start().await;
    let key = SigningKey::generate("k1");
    let jwks = JwksServer::start(&[&key]).await;
    let text = workload_manifests(&backend.url, &jwks.url);
    let gw = TestGateway::start(&text).await;
    let client = gw.client(&key.sign(&claims(ISS, AUD, SUB))).await;
    let (task_id, token) = start_in_band(
        &client,
        json!({ "purpose": "Invoices", "tools": ["inventory.get_item"], "ttl_seconds": 120 }),
    )
    .await
    .unwrap();
    assert_eq!(
        raw_post(&gw.url, Some(&token), init_body()).await.status(),
        200
    );
    // The operator moves the agent to another workload identity.
    let dir = gw.manifests.path().to_path_buf();
    let mut last = tollgate::reload::fingerprint(&dir).unwrap();
    let moved = text.replace(
        &format!("subject: \"{SUB}\""),
        "subject: \"spiffe://corp/agents/invoice-bot-v2\"",
    );
    assert_ne!(moved, text);
    std::fs::write(dir.join("test.yaml"), moved).unwrap();
    tollgate::reload::check_once(&gw.gw, &dir, &mut last).await;
    // The task itself is still active; the token it was given is refused
    // because the identity that obtained it is gone.
    let task = gw.gw.store().task(&task_id).await.unwrap().unwrap();
    assert_eq!(task.status.as_str(), "active");
    let r = raw_post(&gw.url, Some(&token), init_body()).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap()["reason"],
        "credential_invalid"
    );
}

//! The credential broker against real backends that check what they get:
//! gateway JWTs verified against the gateway's JWKS and bound to one
//! connector, introspection that turns inactive when the task ends, OAuth
//! client credentials and token exchange against a real token endpoint,
//! a static canary secret that must never leak, and the property that no
//! credential outlives its task.

use std::time::Duration;

use proptest::prelude::*;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use serde_json::{Value, json};
use tollgate_tests::oauth::{IntrospectingBackend, OAuthServer, VerifyingBackend};
use tollgate_tests::{Backend, TestGateway, args};

fn call(name: &str, a: Value) -> CallToolRequestParams {
    CallToolRequestParams::new(name.to_string()).with_arguments(args(a))
}

fn text(r: &CallToolResult) -> String {
    r.content[0].as_text().unwrap().text.clone()
}

/// One connector named `id` in front of `url` with `auth` (YAML, indented
/// by two) and one tool `read` needing `scopes`.
fn connector(id: &str, url: &str, auth: &str, scopes: &str) -> String {
    format!(
        r#"kind: Connector
id: {id}
description: {id} API
owners:
  system: {{ name: {id}-team, contact: {id}@example.com }}
  security: {{ name: secops, contact: secops@example.com }}
http:
  base_url: {url}
auth:
{auth}
tools:
  - name: read
    description: Read
    risk: low
    scopes: [{scopes}]
    input_schema: {{ type: object, properties: {{ id: {{ type: string }} }} }}
    http:
      request: {{ method: GET, path: "/things" }}
  - name: write
    description: Write
    risk: medium
    scopes: [{id}:write]
    input_schema: {{ type: object }}
    http:
      request: {{ method: POST, path: "/things" }}
---
"#
    )
}

fn agent(tools: &str) -> String {
    format!(
        r#"kind: Agent
id: tester
description: Test agent
owners:
  business: {{ name: biz, contact: biz@example.com }}
  system: {{ name: sys, contact: sys@example.com }}
  security: {{ name: sec, contact: sec@example.com }}
deployment: {{ approved_by: ciso, approved_at: 2026-01-01 }}
review_by: 2099-01-01
tools: [{tools}]
"#
    )
}

#[tokio::test]
async fn gateway_jwts_verify_against_the_jwks_and_bind_to_one_connector() {
    let (listener, base) = TestGateway::reserve().await;
    let jwks = format!("{base}/.well-known/jwks.json");
    let alpha = VerifyingBackend::start(&jwks, "urn:tollgate:connector:alpha").await;
    let beta = VerifyingBackend::start(&jwks, "https://beta.example").await;
    let manifests = format!(
        "{}{}{}",
        connector("alpha", &alpha.url, "  gateway_jwt: {}", "alpha:read"),
        connector(
            "beta",
            &beta.url,
            "  gateway_jwt: { audience: \"https://beta.example\", ttl_seconds: 120 }",
            "beta:read"
        ),
        agent("alpha.*, beta.*"),
    );
    let gw = TestGateway::start_reserved(listener, &manifests, &[]).await;
    let key = gw.issue_key("tester").await;
    let started = gw
        .start_task("tester", &["alpha.read", "beta.read"], &[], 900)
        .await;
    let client = gw.client(&started.token).await;
    for tool in ["alpha.read", "beta.read"] {
        let r = client.call_tool(call(tool, json!({}))).await.unwrap();
        assert_eq!(r.is_error, Some(false), "{tool}: {}", text(&r));
    }
    let a = alpha.accepted();
    assert_eq!(a.len(), 1);
    assert_eq!(a[0]["aud"], "urn:tollgate:connector:alpha");
    assert_eq!(a[0]["sub"], "tester");
    assert_eq!(a[0]["tid"], started.task.id.as_str());
    // Scope: the task's tools on this connector only.
    assert_eq!(a[0]["scope"], "alpha.read");
    let task_end = tollgate_tests_time(&started.task.expires_at);
    assert!(a[0]["exp"].as_i64().unwrap() <= task_end);
    assert_eq!(beta.accepted()[0]["aud"], "https://beta.example");

    // alpha's token presented to beta is refused: it names another audience.
    let alpha_token = alpha.seen_authorization_headers()[0].clone();
    let r = reqwest::Client::new()
        .get(format!("{}/things", beta.url))
        .header("authorization", &alpha_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        beta.rejected().iter().any(|why| why.contains("audience")),
        "{:?}",
        beta.rejected()
    );
    // Neither backend ever saw the agent's key or task token.
    for h in alpha
        .seen_authorization_headers()
        .iter()
        .chain(beta.seen_authorization_headers().iter())
    {
        assert!(!h.contains(&key) && !h.contains(&started.token));
    }
    // The store has a digest and the expiry, not the token.
    let creds = gw
        .gw
        .store()
        .task_credentials(&started.task.id)
        .await
        .unwrap();
    assert_eq!(creds.len(), 2);
    let db = std::fs::read(gw.data.path().join("tollgate.db")).unwrap();
    let wal = std::fs::read(gw.data.path().join("tollgate.db-wal")).unwrap_or_default();
    let raw = alpha_token.trim_start_matches("Bearer ");
    let sig = raw.rsplit('.').next().unwrap();
    for bytes in [db, wal] {
        assert!(!bytes.windows(sig.len()).any(|w| w == sig.as_bytes()));
    }
}

fn tollgate_tests_time(stamp: &str) -> i64 {
    time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339)
        .unwrap()
        .unix_timestamp()
}

#[tokio::test]
async fn a_backend_that_introspects_sees_the_credential_die_with_the_task() {
    let (listener, base) = TestGateway::reserve().await;
    let backend = IntrospectingBackend::start(&format!("{base}/oauth/introspect")).await;
    let manifests = format!(
        "{}{}",
        connector("gamma", &backend.url, "  gateway_jwt: {}", "g"),
        agent("gamma.read")
    );
    let gw = TestGateway::start_reserved(listener, &manifests, &[]).await;
    let started = gw.start_task("tester", &["gamma.read"], &[], 600).await;
    let client = gw.client(&started.token).await;
    let r = client
        .call_tool(call("gamma.read", json!({})))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(false), "{}", text(&r));
    let (token, active) = backend.checks()[0].clone();
    assert!(active);
    // A second task gives the backend a credential that stays live.
    let other = gw.start_task("tester", &["gamma.read"], &[], 600).await;
    let r = gw
        .client(&other.token)
        .await
        .call_tool(call("gamma.read", json!({})))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(false), "{}", text(&r));
    let (live, _) = backend.checks()[1].clone();
    assert_ne!(live, token);
    tollgate::tasks::end(
        &gw.gw,
        &started.task.id,
        tollgate::store::TaskStatus::Completed,
        "alice",
        "done",
    )
    .await
    .unwrap();
    let (status, answer) = backend.introspect_as(&token, Some(&live)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["active"], false, "{answer}");
    let (status, answer) = backend.introspect_as(&live, Some(&live)).await;
    assert_eq!((status, &answer["active"]), (200, &json!(true)), "{answer}");
    // Tokens the gateway did not mint are inactive too.
    let (status, answer) = backend.introspect_as("not-a-token", Some(&live)).await;
    assert_eq!(
        (status, &answer["active"]),
        (200, &json!(false)),
        "{answer}"
    );
    // The ended task's credential no longer authenticates its holder.
    let (status, answer) = backend.introspect_as(&live, Some(&token)).await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["reason"], "credential_invalid");
}

#[tokio::test]
async fn introspection_needs_a_live_caller_credential_of_the_same_audience() {
    let (listener, base) = TestGateway::reserve().await;
    let introspect = format!("{base}/oauth/introspect");
    let gamma = IntrospectingBackend::start(&introspect).await;
    let delta = IntrospectingBackend::start(&introspect).await;
    let manifests = format!(
        "{}{}{}",
        connector("gamma", &gamma.url, "  gateway_jwt: {}", "g"),
        connector("delta", &delta.url, "  gateway_jwt: {}", "d"),
        agent("gamma.read, delta.read")
    );
    let gw = TestGateway::start_reserved(listener, &manifests, &[]).await;
    let started = gw
        .start_task("tester", &["gamma.read", "delta.read"], &[], 600)
        .await;
    let client = gw.client(&started.token).await;
    for tool in ["gamma.read", "delta.read"] {
        let r = client.call_tool(call(tool, json!({}))).await.unwrap();
        assert_eq!(r.is_error, Some(false), "{tool}: {}", text(&r));
    }
    let (gamma_token, _) = gamma.checks()[0].clone();
    let (delta_token, _) = delta.checks()[0].clone();

    // Unauthenticated: 401 with a challenge, and no answer about the token.
    let r = reqwest::Client::new()
        .post(&introspect)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={gamma_token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer ")
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["reason"], "credential_missing");
    assert!(body.get("active").is_none());
    // Neither an agent's key nor a task token is a backend's credential.
    let key = gw.issue_key("tester").await;
    for caller in [key.as_str(), started.token.as_str(), "garbage"] {
        let (status, answer) = gamma.introspect_as(&gamma_token, Some(caller)).await;
        assert_eq!(status, 401, "{answer}");
        assert!(answer.get("active").is_none(), "{answer}");
    }
    // Another connector's credential learns nothing about this one's.
    let (status, answer) = delta.introspect_as(&gamma_token, Some(&delta_token)).await;
    assert_eq!(status, 200);
    assert_eq!(answer, json!({ "active": false }));
    // Its own audience: the full answer.
    let (status, answer) = gamma.introspect_as(&gamma_token, Some(&gamma_token)).await;
    assert_eq!(status, 200);
    assert_eq!(answer["active"], true);
    assert_eq!(answer["aud"], "urn:tollgate:connector:gamma");
    assert_eq!(answer["tid"], started.task.id);
}

#[tokio::test]
async fn client_credentials_fetch_task_scopes_and_are_revoked_when_the_task_ends() {
    let oauth = OAuthServer::start(&[("tollgate", "client-s3cret-canary")], None).await;
    let backend = Backend::start().await;
    let auth = format!(
        "  oauth2_client_credentials:\n    token_url: {}\n    revocation_url: {}\n    client_id: tollgate\n    client_secret: {{ file: delta.secret }}",
        oauth.token_url(),
        oauth.revocation_url()
    );
    let manifests = format!(
        "{}{}",
        connector("delta", &backend.url, &auth, "\"inventory:read\""),
        agent("delta.*")
    );
    let (listener, _) = TestGateway::reserve().await;
    let gw = TestGateway::start_reserved(
        listener,
        &manifests,
        &[("delta.secret", "client-s3cret-canary\n")],
    )
    .await;
    let started = gw.start_task("tester", &["delta.read"], &[], 600).await;
    let client = gw.client(&started.token).await;
    for _ in 0..2 {
        let r = client
            .call_tool(call("delta.read", json!({})))
            .await
            .unwrap();
        assert_eq!(r.is_error, Some(false), "{}", text(&r));
    }
    // One token for the task, with only the task's scopes.
    let requests = oauth.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].grant_type.as_deref(),
        Some("client_credentials")
    );
    assert_eq!(requests[0].scope.as_deref(), Some("inventory:read"));
    assert_eq!(
        requests[0].client_auth.as_deref(),
        Some("client_secret_basic")
    );
    let issued = requests[0].issued_token.clone().unwrap();
    let hits = Backend::hits(&backend);
    assert!(hits.iter().all(|h| {
        h.headers
            .iter()
            .any(|(k, v)| k == "authorization" && *v == format!("Bearer {issued}"))
    }));
    assert!(oauth.is_active(&issued));

    tollgate::tasks::end(
        &gw.gw,
        &started.task.id,
        tollgate::store::TaskStatus::Completed,
        "alice",
        "done",
    )
    .await
    .unwrap();
    assert!(
        oauth.revoked().contains(&issued),
        "the token is revoked upstream when the task ends"
    );
    assert!(!oauth.is_active(&issued));
    let creds = gw
        .gw
        .store()
        .task_credentials(&started.task.id)
        .await
        .unwrap();
    assert_eq!(creds[0].kind, "oauth2_client_credentials");
    assert!(creds[0].revoked_at.is_some() && !creds[0].upstream_pending);
}

#[tokio::test]
async fn token_exchange_gets_an_audience_bound_token_with_the_agent_as_actor() {
    let (listener, base) = TestGateway::reserve().await;
    let oauth = OAuthServer::start(
        &[("tollgate", "x-secret")],
        Some(format!("{base}/.well-known/jwks.json")),
    )
    .await;
    let backend = Backend::start().await;
    let auth = format!(
        "  token_exchange:\n    token_url: {}\n    audience: https://epsilon.example\n    client_id: tollgate\n    client_secret: {{ file: eps.secret }}",
        oauth.token_url()
    );
    let manifests = format!(
        "{}{}",
        connector("epsilon", &backend.url, &auth, "\"epsilon:read\""),
        agent("epsilon.*")
    );
    let gw = TestGateway::start_reserved(listener, &manifests, &[("eps.secret", "x-secret")]).await;
    let started = gw.start_task("tester", &["epsilon.read"], &[], 600).await;
    let client = gw.client(&started.token).await;
    let r = client
        .call_tool(call("epsilon.read", json!({})))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(false), "{}", text(&r));
    let req = &oauth.requests()[0];
    assert_eq!(req.status, 200, "{req:?}");
    assert_eq!(
        req.grant_type.as_deref(),
        Some(tollgate_tests::oauth::TOKEN_EXCHANGE)
    );
    assert_eq!(req.audience, ["https://epsilon.example"]);
    assert_eq!(req.scope.as_deref(), Some("epsilon:read"));
    // Verified against the gateway's JWKS by the token endpoint.
    assert_eq!(req.actor_claims.as_ref().unwrap()["sub"], "tester");
    assert_eq!(
        req.subject_claims.as_ref().unwrap()["tid"],
        started.task.id.as_str()
    );
    let issued = req.issued_token.clone().unwrap();
    let claims = tollgate_tests::oauth::verify_jwt(
        &reqwest::Client::new(),
        &oauth.jwks_url(),
        &issued,
        Some("https://epsilon.example"),
    )
    .await
    .unwrap();
    assert_eq!(claims["act"]["sub"], "tester");
    assert_eq!(claims["scope"], "epsilon:read");
    assert!(
        backend.hits()[0]
            .headers
            .iter()
            .any(|(k, v)| k == "authorization" && *v == format!("Bearer {issued}"))
    );
}

#[tokio::test]
async fn a_token_endpoint_that_is_down_refuses_the_call_before_the_backend() {
    let oauth = OAuthServer::start(&[("tollgate", "s")], None).await;
    oauth.set_down(true);
    let backend = Backend::start().await;
    let auth = format!(
        "  oauth2_client_credentials:\n    token_url: {}\n    client_id: tollgate\n    client_secret: {{ file: s.secret }}",
        oauth.token_url()
    );
    let manifests = format!(
        "{}{}",
        connector("delta", &backend.url, &auth, "\"r\""),
        agent("delta.*")
    );
    let (listener, _) = TestGateway::reserve().await;
    let gw = TestGateway::start_reserved(listener, &manifests, &[("s.secret", "s")]).await;
    let client = gw.client(&gw.issue_key("tester").await).await;
    let e = client
        .call_tool(call("delta.read", json!({})))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("credential for connector `delta` could not be issued"),
        "{e}"
    );
    assert!(backend.hits().is_empty());
    let d = gw.decisions().await;
    assert_eq!(d[0].outcome_code.as_deref(), Some("credential_unavailable"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_static_canary_secret_never_reaches_the_agent_the_logs_or_the_store() {
    const CANARY: &str = "CANARY-7f3e9a1c-static-secret";
    let backend = Backend::start().await;
    let auth = "  static: { header: x-api-key, value: { file: zeta.secret } }";
    let manifests = format!(
        "{}{}",
        connector("zeta", &backend.url, auth, "z"),
        agent("zeta.*")
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("test.yaml"), &manifests).unwrap();
    std::fs::write(dir.path().join("zeta.secret"), CANARY).unwrap();
    let data = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_tollgate-under-test");

    // `check` flags the long-lived secret but accepts the manifests.
    let out = std::process::Command::new(bin)
        .args(["check", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("static secret"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let key = {
        let out = std::process::Command::new(bin)
            .args([
                "--data",
                data.path().to_str().unwrap(),
                "--manifests",
                dir.path().to_str().unwrap(),
                "agents",
                "issue-key",
                "tester",
            ])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args([
        "--data",
        data.path().to_str().unwrap(),
        "--manifests",
        dir.path().to_str().unwrap(),
        "serve",
        "--stdio",
    ])
    .env("TOLLGATE_AGENT_KEY", &key)
    .env("RUST_LOG", "trace");
    let (transport, stderr) = rmcp::transport::TokioChildProcess::builder(cmd)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let logs = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut s = String::new();
        if let Some(mut e) = stderr {
            let _ = e.read_to_string(&mut s).await;
        }
        s
    });
    let client = rmcp::ServiceExt::serve((), transport).await.unwrap();
    let r = client
        .call_tool(call("zeta.read", json!({})))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(false), "{}", text(&r));
    let e = client
        .call_tool(call("zeta.nope", json!({})))
        .await
        .unwrap_err();
    client.cancel().await.unwrap();
    let logs = tokio::time::timeout(Duration::from_secs(10), logs)
        .await
        .unwrap()
        .unwrap();

    assert!(
        backend.hits()[0]
            .headers
            .iter()
            .any(|(k, v)| k == "x-api-key" && v == CANARY),
        "the backend got the secret"
    );
    let seen_by_agent = format!("{r:?}{e:?}");
    assert!(!seen_by_agent.contains(CANARY));
    assert!(
        !logs.is_empty() && !logs.contains(CANARY),
        "the canary leaked into the logs"
    );
    for file in ["tollgate.db", "tollgate.db-wal", "gateway-secrets.json"] {
        let bytes = std::fs::read(data.path().join(file)).unwrap_or_default();
        assert!(
            !bytes.windows(CANARY.len()).any(|w| w == CANARY.as_bytes()),
            "the canary is in {file}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_rotation_keeps_issued_tokens_valid_and_signs_new_ones_with_the_new_key() {
    let (listener, base) = TestGateway::reserve().await;
    let jwks = format!("{base}/.well-known/jwks.json");
    let alpha = VerifyingBackend::start(&jwks, "urn:tollgate:connector:alpha").await;
    let manifests = format!(
        "{}{}",
        connector("alpha", &alpha.url, "  gateway_jwt: {}", "a"),
        agent("alpha.*")
    );
    let gw = TestGateway::start_reserved(listener, &manifests, &[]).await;
    let before = gw.start_task("tester", &["alpha.read"], &[], 600).await;
    let old_kid = gw.gw.secrets().key_ids().last().unwrap().0.clone();

    // `tollgate keys rotate`, then the running gateway picks the file up.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate-under-test"))
        .args(["--data", gw.data.path().to_str().unwrap(), "keys", "rotate"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    gw.gw.replace_secrets(gw.gw.secrets().reload().unwrap());
    let published: Value = reqwest::get(&jwks).await.unwrap().json().await.unwrap();
    let kids: Vec<&str> = published["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids.len(), 2);
    assert!(kids.contains(&old_kid.as_str()));

    // The task token signed before the rotation still works, and the backend
    // verifies a JWT signed with the new key.
    let client = gw.client(&before.token).await;
    let r = client
        .call_tool(call("alpha.read", json!({})))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(false), "{}", text(&r));
    let header = alpha.seen_authorization_headers()[0]
        .trim_start_matches("Bearer ")
        .to_string();
    let kid = jsonwebtoken::decode_header(&header).unwrap().kid.unwrap();
    assert_ne!(kid, old_kid);
    assert!(kids.contains(&kid.as_str()));
}

// ---------------------------------------------------------------------------
// Races, replacement, reconfiguration, flushes
// ---------------------------------------------------------------------------

/// Waits (bounded) until `cond` holds: for things that happen on another
/// task, never for time to pass.
async fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A client-credentials connector `delta` in front of `backend` with its
/// token endpoint on `oauth`, the secret in `delta.secret`.
fn oauth_connector(oauth: &OAuthServer, backend: &str) -> String {
    let auth = format!(
        "  oauth2_client_credentials:\n    token_url: {}\n    revocation_url: {}\n    client_id: tollgate\n    client_secret: {{ file: delta.secret }}",
        oauth.token_url(),
        oauth.revocation_url()
    );
    connector("delta", backend, &auth, "\"inventory:read\"")
}

async fn oauth_gateway(oauth: &OAuthServer, backend: &Backend) -> TestGateway {
    let manifests = format!(
        "{}{}",
        oauth_connector(oauth, &backend.url),
        agent("delta.*")
    );
    let (listener, _) = TestGateway::reserve().await;
    TestGateway::start_reserved(listener, &manifests, &[("delta.secret", "s3cret")]).await
}

fn authorizations(backend: &Backend) -> Vec<String> {
    backend
        .hits()
        .iter()
        .flat_map(|h| h.headers.clone())
        .filter(|(k, _)| k == "authorization")
        .map(|(_, v)| v)
        .collect()
}

#[tokio::test]
async fn a_credential_minted_while_its_task_ends_is_revoked_and_never_used() {
    let oauth = OAuthServer::start(&[("tollgate", "s3cret")], None).await;
    let backend = Backend::start().await;
    let gw = oauth_gateway(&oauth, &backend).await;
    let started = gw.start_task("tester", &["delta.read"], &[], 600).await;
    let client = gw.client(&started.token).await;

    // The token fetch is held open: every check before it has passed.
    oauth.hold_tokens();
    let call = tokio::spawn(async move { client.call_tool(call("delta.read", json!({}))).await });
    until("the token request to arrive", || oauth.held() == 1).await;
    tollgate::tasks::end(
        &gw.gw,
        &started.task.id,
        tollgate::store::TaskStatus::Completed,
        "alice",
        "done",
    )
    .await
    .unwrap();
    oauth.release_tokens();
    let refused = call.await.unwrap().unwrap_err().to_string();
    assert!(refused.contains("could not be issued"), "{refused}");

    assert!(backend.hits().is_empty(), "the backend received the call");
    let issued = oauth.requests()[0].issued_token.clone().unwrap();
    until("the token to be revoked upstream", || {
        oauth.revoked().contains(&issued)
    })
    .await;
    assert!(!oauth.is_active(&issued));
    let creds = gw
        .gw
        .store()
        .task_credentials(&started.task.id)
        .await
        .unwrap();
    assert_eq!(creds.len(), 1);
    assert!(creds[0].revoked_at.is_some(), "{creds:?}");
}

#[tokio::test]
async fn two_misses_racing_keep_one_token_and_revoke_the_other_upstream() {
    let oauth = OAuthServer::start(&[("tollgate", "s3cret")], None).await;
    let backend = Backend::start().await;
    let gw = oauth_gateway(&oauth, &backend).await;
    let started = gw.start_task("tester", &["delta.read"], &[], 600).await;
    let (a, b) = (
        gw.client(&started.token).await,
        gw.client(&started.token).await,
    );

    // Both calls find the cache empty and fetch; the answers are held until
    // both fetches are in flight.
    oauth.hold_tokens();
    let first = tokio::spawn(async move { a.call_tool(call("delta.read", json!({}))).await });
    let second = tokio::spawn(async move { b.call_tool(call("delta.read", json!({}))).await });
    until("both token requests", || oauth.held() == 2).await;
    oauth.release_tokens();
    for r in [first.await.unwrap(), second.await.unwrap()] {
        let r = r.unwrap();
        assert_eq!(r.is_error, Some(false), "{}", text(&r));
    }

    let issued: Vec<String> = oauth
        .requests()
        .iter()
        .filter_map(|r| r.issued_token.clone())
        .collect();
    assert_eq!(issued.len(), 2);
    let kept: Vec<&String> = issued.iter().filter(|t| oauth.is_active(t)).collect();
    assert_eq!(kept.len(), 1, "exactly one token stays live");
    let lost = issued.iter().find(|t| *t != kept[0]).unwrap();
    assert!(
        oauth.revoked().contains(lost),
        "the other is revoked upstream"
    );
    // Both calls went out with the token that stayed, and it is the one
    // reused from now on.
    let client = gw.client(&started.token).await;
    client
        .call_tool(call("delta.read", json!({})))
        .await
        .unwrap();
    assert_eq!(oauth.requests().len(), 2, "no third fetch");
    let sent = authorizations(&backend);
    assert_eq!(sent.len(), 3);
    assert!(sent.iter().all(|h| *h == format!("Bearer {}", kept[0])));
}

#[tokio::test]
async fn a_token_replaced_before_it_expires_is_revoked_upstream() {
    let oauth = OAuthServer::start(&[("tollgate", "s3cret")], None).await;
    oauth.set_expires_in(100);
    let backend = Backend::start().await;
    let gw = oauth_gateway(&oauth, &backend).await;
    let started = gw.start_task("tester", &["delta.read"], &[], 900).await;
    let client = gw.client(&started.token).await;
    client
        .call_tool(call("delta.read", json!({})))
        .await
        .unwrap();
    // Past 80 % of its life the cached token is replaced by a fresh one.
    gw.clock.advance(Duration::from_secs(90));
    client
        .call_tool(call("delta.read", json!({})))
        .await
        .unwrap();
    let issued: Vec<String> = oauth
        .requests()
        .iter()
        .filter_map(|r| r.issued_token.clone())
        .collect();
    assert_eq!(issued.len(), 2);
    assert_eq!(oauth.revoked(), vec![issued[0].clone()]);
    assert!(oauth.is_active(&issued[1]));
    assert_eq!(
        authorizations(&backend),
        vec![
            format!("Bearer {}", issued[0]),
            format!("Bearer {}", issued[1])
        ]
    );
}

#[tokio::test]
async fn a_token_whose_record_cannot_be_stored_is_revoked_and_not_used() {
    let oauth = OAuthServer::start(&[("tollgate", "s3cret")], None).await;
    let backend = Backend::start().await;
    let gw = oauth_gateway(&oauth, &backend).await;
    // The real SQLite file refuses new credential records from now on.
    let db = gw.data.path().join("tollgate.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query(
        "CREATE TRIGGER refuse_credentials BEFORE INSERT ON credentials \
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let client = gw.client(&gw.issue_key("tester").await).await;
    let e = client
        .call_tool(call("delta.read", json!({})))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("could not be issued"), "{e}");
    assert!(backend.hits().is_empty());
    let issued = oauth.requests()[0].issued_token.clone().unwrap();
    assert!(oauth.revoked().contains(&issued));
    assert!(!oauth.is_active(&issued));
}

#[tokio::test]
async fn after_a_reload_that_repoints_a_connector_or_changes_its_secret_the_old_token_is_never_sent()
 {
    let first = OAuthServer::start(&[("tollgate", "s3cret"), ("tollgate2", "n3w")], None).await;
    let second = OAuthServer::start(&[("tollgate", "s3cret")], None).await;
    let backend = Backend::start().await;
    let gw = oauth_gateway(&first, &backend).await;
    let dir = gw.manifests.path().to_path_buf();
    let mut last = tollgate::reload::fingerprint_of(&gw.gw.catalog().sources);
    let started = gw.start_task("tester", &["delta.read"], &[], 600).await;
    let client = gw.client(&started.token).await;
    let read = || async {
        let r = client
            .call_tool(call("delta.read", json!({})))
            .await
            .unwrap();
        assert_eq!(r.is_error, Some(false), "{}", text(&r));
    };
    read().await;
    let token_1 = first.requests()[0].issued_token.clone().unwrap();

    // Re-point the connector at another token endpoint.
    let manifests = format!(
        "{}{}",
        oauth_connector(&second, &backend.url),
        agent("delta.*")
    );
    std::fs::write(dir.join("test.yaml"), &manifests).unwrap();
    assert_eq!(
        tollgate::reload::check_once(&gw.gw, &dir, &mut last).await,
        tollgate::reload::Reload::Applied
    );
    read().await;
    let token_2 = second.requests()[0].issued_token.clone().unwrap();
    assert!(
        first.revoked().contains(&token_1),
        "the old token is revoked"
    );

    // Change the client (id and secret) back on the first endpoint.
    let manifests = format!(
        "{}{}",
        oauth_connector(&first, &backend.url)
            .replace("client_id: tollgate", "client_id: tollgate2")
            .replace("delta.secret", "delta2.secret"),
        agent("delta.*")
    );
    std::fs::write(dir.join("delta2.secret"), "n3w").unwrap();
    std::fs::write(dir.join("test.yaml"), &manifests).unwrap();
    assert_eq!(
        tollgate::reload::check_once(&gw.gw, &dir, &mut last).await,
        tollgate::reload::Reload::Applied
    );
    read().await;
    let token_3 = first.requests()[1].issued_token.clone().unwrap();
    assert_eq!(first.requests()[1].client_id.as_deref(), Some("tollgate2"));
    assert!(second.revoked().contains(&token_2));

    assert_eq!(
        authorizations(&backend),
        vec![
            format!("Bearer {token_1}"),
            format!("Bearer {token_2}"),
            format!("Bearer {token_3}")
        ],
        "each token was sent only under the configuration it was issued for"
    );
}

#[tokio::test]
async fn suspending_an_agent_kills_its_credentials_outside_tasks_and_flush_revokes_them() {
    let oauth = OAuthServer::start(&[("tollgate", "s3cret")], None).await;
    let (listener, base) = TestGateway::reserve().await;
    let alpha = VerifyingBackend::start(
        &format!("{base}/.well-known/jwks.json"),
        "urn:tollgate:connector:alpha",
    )
    .await;
    let backend = Backend::start().await;
    let manifests = format!(
        "{}{}{}",
        connector("alpha", &alpha.url, "  gateway_jwt: {}", "a"),
        oauth_connector(&oauth, &backend.url),
        agent("alpha.*, delta.*")
    );
    let gw = TestGateway::start_reserved(listener, &manifests, &[("delta.secret", "s3cret")]).await;
    let client = gw.client(&gw.issue_key("tester").await).await;
    for tool in ["alpha.read", "delta.read"] {
        let r = client.call_tool(call(tool, json!({}))).await.unwrap();
        assert_eq!(r.is_error, Some(false), "{tool}: {}", text(&r));
    }
    let jwt = alpha.seen_authorization_headers()[0]
        .trim_start_matches("Bearer ")
        .to_string();
    let upstream = oauth.requests()[0].issued_token.clone().unwrap();
    assert_eq!(
        tollgate::broker::introspect(&gw.gw, &jwt).await["active"],
        true
    );

    // Suspended: introspection reads the agent's status now.
    gw.gw
        .store()
        .set_agent_status(
            "tester",
            tollgate::store::AgentStatus::Suspended,
            "investigation",
            "secops",
            &tollgate_tests::now(),
        )
        .await
        .unwrap();
    assert_eq!(
        tollgate::broker::introspect(&gw.gw, &jwt).await["active"],
        false
    );

    // The lifecycle watcher flushes the agent: cache emptied, records and
    // upstream tokens revoked.
    let flushed = tollgate::broker::flush_agent(&gw.gw, "tester", "agent suspended").await;
    assert_eq!(flushed, 2);
    assert!(oauth.revoked().contains(&upstream));
    let claims = jsonwebtoken::dangerous::insecure_decode_claims::<Value>(&jwt).unwrap();
    let record = gw
        .gw
        .store()
        .credential(claims["jti"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(record.revoked_at.is_some());
    // Resumed, the old credential stays dead and a new one is issued.
    gw.gw
        .store()
        .set_agent_status(
            "tester",
            tollgate::store::AgentStatus::Active,
            "cleared",
            "secops",
            &tollgate_tests::now(),
        )
        .await
        .unwrap();
    assert_eq!(
        tollgate::broker::introspect(&gw.gw, &jwt).await["active"],
        false
    );
    let r = client
        .call_tool(call("alpha.read", json!({})))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(false), "{}", text(&r));
    let again = alpha.seen_authorization_headers();
    assert_eq!(again.len(), 2);
    assert_ne!(again[1], again[0], "a fresh credential after the flush");
    assert_eq!(
        tollgate::broker::flush_agent(&gw.gw, "nobody", "no such agent").await,
        0
    );
}

// ---------------------------------------------------------------------------
// The lifetime property, through the pipeline
// ---------------------------------------------------------------------------

fn unix(stamp: &str) -> i64 {
    tollgate_tests_time(stamp)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Whatever the task's TTL, the connector's token TTL, the lifetime the
    /// token endpoint grants and how far into the task the call comes, a
    /// real call through the gateway hands each backend a credential that
    /// dies no later than the task and no later than 15 minutes after
    /// issue: a gateway JWT by its `exp`; an upstream token (client
    /// credentials, token exchange) by the expiry the gateway records and,
    /// once that moment passes, by revocation at its issuer. (Static
    /// secrets have no lifetime to bound; they are flagged at load.)
    #[test]
    fn no_credential_outlives_its_task_or_fifteen_minutes(
        task_ttl in 60u64..=3600,
        jwt_ttl in 1u64..=900,
        upstream_ttl in 1u64..7200,
        into_task in 0.0f64..0.95,
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let oauth = OAuthServer::start(&[("tollgate", "s3cret")], None).await;
            oauth.set_expires_in(upstream_ttl);
            let backend = Backend::start().await;
            let cc = format!(
                "  oauth2_client_credentials:\n    token_url: {}\n    revocation_url: {}\n    client_id: tollgate\n    client_secret: {{ file: s.secret }}",
                oauth.token_url(), oauth.revocation_url()
            );
            let tx = format!(
                "  token_exchange:\n    token_url: {}\n    revocation_url: {}\n    audience: https://gamma.example\n    client_id: tollgate\n    client_secret: {{ file: s.secret }}",
                oauth.token_url(), oauth.revocation_url()
            );
            let manifests = format!(
                "{}{}{}{}",
                connector("alpha", &format!("{}/alpha", backend.url), &format!("  gateway_jwt: {{ ttl_seconds: {jwt_ttl} }}"), "a"),
                connector("beta", &format!("{}/beta", backend.url), &cc, "b"),
                connector("gamma", &format!("{}/gamma", backend.url), &tx, "g"),
                agent("alpha.*, beta.*, gamma.*"),
            );
            let (listener, _) = TestGateway::reserve().await;
            let gw = TestGateway::start_reserved(listener, &manifests, &[("s.secret", "s3cret")]).await;
            let started = gw.start_task("tester", &["alpha.read", "beta.read", "gamma.read"], &[], task_ttl).await;
            let task_end = time::OffsetDateTime::parse(&started.task.expires_at, &time::format_description::well_known::Rfc3339).unwrap();
            gw.clock.advance(Duration::from_secs_f64(task_ttl as f64 * into_task));
            let issued_at = gw.gw.now();
            let client = gw.client(&started.token).await;
            for tool in ["alpha.read", "beta.read", "gamma.read"] {
                let r = client.call_tool(call(tool, json!({}))).await.unwrap();
                prop_assert_eq!(r.is_error, Some(false), "{}: {}", tool, text(&r));
            }
            let received = |prefix: &str| -> String {
                backend.hits().iter().find(|h| h.path.starts_with(prefix)).unwrap()
                    .headers.iter().find(|(k, _)| k == "authorization").unwrap()
                    .1.trim_start_matches("Bearer ").to_string()
            };
            let bound_at = task_end.min(issued_at + time::Duration::seconds(900));
            let bound = bound_at.unix_timestamp();

            // The gateway JWT the backend received.
            let jwt = jsonwebtoken::dangerous::insecure_decode_claims::<Value>(&received("/alpha")).unwrap();
            prop_assert!(jwt["exp"].as_i64().unwrap() <= bound, "jwt exp {} > {}", jwt["exp"], bound);

            // The upstream tokens: recorded expiry within the bound...
            let records = gw.gw.store().task_credentials(&started.task.id).await.unwrap();
            prop_assert_eq!(records.len(), 3);
            for r in &records {
                let exp = unix(r.expires_at.as_deref().unwrap());
                prop_assert!(exp <= bound, "{} expires {} > {}", r.kind, exp, bound);
            }
            // ...and dead at their issuer once that moment has come, even
            // when the issuer granted them a longer life.
            let upstream = [received("/beta"), received("/gamma")];
            gw.clock.advance((bound_at - gw.gw.now()).try_into().unwrap());
            tollgate::tasks::sweep(&gw.gw).await;
            for token in &upstream {
                prop_assert!(oauth.revoked().contains(token), "an upstream token outlived its bound");
                prop_assert!(!oauth.is_active(token));
            }
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn a_credential_minted_while_its_agent_is_suspended_and_flushed_is_revoked_and_never_used() {
    let oauth = OAuthServer::start(&[("tollgate", "s3cret")], None).await;
    let backend = Backend::start().await;
    let gw = oauth_gateway(&oauth, &backend).await;
    // Outside any task: only the agent's status stands behind it.
    let client = gw.client(&gw.issue_key("tester").await).await;
    oauth.hold_tokens();
    let call = tokio::spawn(async move { client.call_tool(call("delta.read", json!({}))).await });
    until("the token request to arrive", || oauth.held() == 1).await;
    // Suspended from elsewhere; the lifecycle watcher flushes the agent
    // while the fetch is still out.
    gw.gw
        .store()
        .set_agent_status(
            "tester",
            tollgate::store::AgentStatus::Suspended,
            "investigation",
            "secops",
            &tollgate_tests::now(),
        )
        .await
        .unwrap();
    assert_eq!(
        tollgate::broker::flush_agent(&gw.gw, "tester", "agent suspended").await,
        0,
        "nothing cached yet"
    );
    oauth.release_tokens();
    let refused = call.await.unwrap().unwrap_err().to_string();
    assert!(refused.contains("could not be issued"), "{refused}");
    assert!(backend.hits().is_empty(), "the backend received the call");
    let issued = oauth.requests()[0].issued_token.clone().unwrap();
    assert!(oauth.revoked().contains(&issued));
    assert!(!oauth.is_active(&issued));
}

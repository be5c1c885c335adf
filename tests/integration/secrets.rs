//! Secrets never leave: not through `Debug` (the whole `Gateway`, with
//! canaries loaded and every cache full), not through a backend that echoes
//! the credential it was sent, not through an error naming where the
//! backend lives.

use rmcp::model::{CallToolRequestParams, CallToolResult};
use serde_json::{Value, json};
use tollgate_tests::oauth::{EchoingBackend, OAuthServer};
use tollgate_tests::{Backend, TestGateway, args};

const STATIC_CANARY: &str = "CANARY-static-5c1d0e27";
const CLIENT_CANARY: &str = "CANARY-client-secret-93ab41f0";

fn call(name: &str) -> CallToolRequestParams {
    CallToolRequestParams::new(name.to_string()).with_arguments(args(json!({})))
}

fn text(r: &CallToolResult) -> String {
    r.content[0].as_text().unwrap().text.clone()
}

/// A connector `id` in front of `url` with `auth` (indented by two) and the
/// tools `read` (`GET /things`) and `fail` (`GET /fail`).
fn connector(id: &str, url: &str, auth: &str) -> String {
    format!(
        r#"kind: Connector
id: {id}
description: {id} API
owners:
  system: {{ name: {id}-team, contact: {id}@example.com }}
  security: {{ name: secops, contact: secops@example.com }}
http:
  base_url: {url}
  timeout_ms: 2000
{auth}
tools:
  - name: read
    description: Read
    risk: low
    scopes: [{id}:read]
    input_schema: {{ type: object }}
    http:
      request: {{ method: GET, path: /things }}
  - name: fail
    description: Fails
    risk: low
    input_schema: {{ type: object }}
    http:
      request: {{ method: GET, path: /fail }}
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

fn leaks<'a>(haystack: &str, secrets: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    secrets
        .into_iter()
        .filter(|s| !s.is_empty() && haystack.contains(*s))
        .map(|s| s.chars().take(12).collect::<String>() + "…")
        .collect()
}

#[tokio::test]
async fn formatting_the_whole_gateway_shows_no_secret() {
    let oauth = OAuthServer::start(&[("tollgate", CLIENT_CANARY)], None).await;
    let backend = Backend::start().await;
    let cc = format!(
        "auth:\n  oauth2_client_credentials:\n    token_url: {}\n    revocation_url: {}\n    client_id: tollgate\n    client_secret: {{ file: client.secret }}",
        oauth.token_url(),
        oauth.revocation_url()
    );
    let manifests = format!(
        "{}{}{}{}",
        connector(
            "zeta",
            &backend.url,
            "auth:\n  static: { header: x-api-key, value: { file: static.secret } }"
        ),
        connector("delta", &backend.url, &cc),
        connector("alpha", &backend.url, "auth:\n  gateway_jwt: {}"),
        agent("zeta.*, delta.*, alpha.*"),
    );
    let (listener, _) = TestGateway::reserve().await;
    let gw = TestGateway::start_reserved(
        listener,
        &manifests,
        &[
            ("static.secret", STATIC_CANARY),
            ("client.secret", CLIENT_CANARY),
        ],
    )
    .await;
    let key = gw.issue_key("tester").await;
    let started = gw
        .start_task(
            "tester",
            &["zeta.read", "delta.read", "alpha.read"],
            &[],
            600,
        )
        .await;
    // Fill the caches: outside a task with the key, inside with the token.
    for credential in [&key, &started.token] {
        let client = gw.client(credential).await;
        for tool in ["zeta.read", "delta.read", "alpha.read"] {
            let r = client.call_tool(call(tool)).await.unwrap();
            assert_eq!(r.is_error, Some(false), "{tool}: {}", text(&r));
        }
    }
    let minted: Vec<String> = backend
        .hits()
        .iter()
        .flat_map(|h| h.headers.clone())
        .filter(|(k, _)| k == "authorization" || k == "x-api-key")
        .map(|(_, v)| v.trim_start_matches("Bearer ").to_string())
        .collect();
    assert_eq!(minted.len(), 6);
    let upstream: Vec<String> = oauth
        .requests()
        .iter()
        .filter_map(|r| r.issued_token.clone())
        .collect();
    assert_eq!(upstream.len(), 2);

    // The gateway's own keys, as bytes and as stored.
    let file: Value = serde_json::from_slice(
        &std::fs::read(gw.data.path().join("gateway-secrets.json")).unwrap(),
    )
    .unwrap();
    let digest_key = file["digest_key"].as_str().unwrap().to_string();
    let pkcs8 = file["signing_keys"][0]["pkcs8"]
        .as_str()
        .unwrap()
        .to_string();
    use base64::Engine;
    let digest_bytes = format!(
        "{:?}",
        base64::engine::general_purpose::STANDARD
            .decode(&digest_key)
            .unwrap()
    );
    let digest_bytes = digest_bytes.trim_start_matches('[').trim_end_matches(']');

    let shown = format!("{:?}", gw.gw);
    assert!(shown.contains("Broker"), "the broker is part of it");
    let mut secrets: Vec<&str> = vec![STATIC_CANARY, CLIENT_CANARY, &digest_key, &pkcs8];
    secrets.push(digest_bytes);
    secrets.extend(minted.iter().map(String::as_str));
    secrets.extend(upstream.iter().map(String::as_str));
    // The agent's key and the task token are held outside the gateway's
    // state, but must not show there either.
    secrets.push(&key);
    secrets.push(&started.token);
    assert_eq!(leaks(&shown, secrets), Vec::<String>::new());

    // The task as handed back by `start_task` is formatted by the same
    // rule.
    let started_shown = format!("{started:?}");
    assert!(
        !started_shown.contains(&started.token),
        "StartedTask's Debug shows the task token"
    );
}

#[tokio::test]
async fn a_backend_that_echoes_the_credential_gets_it_redacted_before_the_agent_sees_it() {
    let backend = EchoingBackend::start().await;
    let manifests = format!(
        "{}{}",
        connector(
            "zeta",
            &backend.url,
            "auth:\n  static: { header: authorization, prefix: \"Bearer \", value: { file: static.secret } }"
        ),
        agent("zeta.*"),
    );
    let (listener, _) = TestGateway::reserve().await;
    let gw = TestGateway::start_reserved(listener, &manifests, &[("static.secret", STATIC_CANARY)])
        .await;
    let client = gw.client(&gw.issue_key("tester").await).await;

    let ok = client.call_tool(call("zeta.read")).await.unwrap();
    let failed = client.call_tool(call("zeta.fail")).await.unwrap();
    // The backend did receive it, and echoed it both times.
    assert_eq!(
        backend.seen(),
        vec![format!("Bearer {STATIC_CANARY}"); 2],
        "the backend got the credential"
    );
    assert_eq!(ok.is_error, Some(false));
    let structured = ok.structured_content.clone().unwrap();
    assert_eq!(structured["authorization"], "[REDACTED]");
    assert_eq!(structured["token"], "[REDACTED]");
    assert_eq!(failed.is_error, Some(true));
    assert!(
        text(&failed).contains("rejected credential [REDACTED]"),
        "{}",
        text(&failed)
    );
    let seen_by_agent = format!("{ok:?}{failed:?}");
    assert!(!seen_by_agent.contains(STATIC_CANARY), "{seen_by_agent}");
}

#[tokio::test]
async fn an_unreachable_backend_is_reported_without_its_address() {
    // Nothing listens on this port once the listener is dropped.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let manifests = format!(
        "{}{}",
        connector("zeta", &format!("http://{dead}"), ""),
        agent("zeta.*"),
    );
    let gw = TestGateway::start(&manifests).await;
    let client = gw.client(&gw.issue_key("tester").await).await;
    let r = client.call_tool(call("zeta.read")).await.unwrap();
    assert_eq!(r.is_error, Some(true));
    let seen_by_agent = format!("{r:?}");
    assert!(text(&r).contains("backend_unreachable"), "{}", text(&r));
    for part in [
        dead.to_string(),
        dead.port().to_string(),
        dead.ip().to_string(),
    ] {
        assert!(
            !seen_by_agent.contains(&part),
            "the agent sees `{part}`: {seen_by_agent}"
        );
    }
}

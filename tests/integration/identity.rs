//! Workload identities (JWTs from a declared issuer, keys from a JWKS
//! served over HTTP), the MCP authorization spec's protected resource
//! metadata, and the rule that an agent's token never reaches a backend.

use base64::Engine;
use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};
use tollgate_tests::jwt::{JwksServer, SigningKey, claims, now};
use tollgate_tests::{Backend, TestGateway, args, raw_post, test_manifests};

const ISS: &str = "https://issuer.test";
const AUD: &str = "https://tollgate.test";
const SUB: &str = "spiffe://corp/agents/invoice-bot";

fn manifests(backend: &str, jwks_url: &str) -> String {
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

struct Setup {
    backend: Backend,
    gw: TestGateway,
    jwks: JwksServer,
    key: SigningKey,
}

async fn setup() -> Setup {
    let backend = Backend::start().await;
    let key = SigningKey::generate("k1");
    let jwks = JwksServer::start(&[&key]).await;
    let gw = TestGateway::start(&manifests(&backend.url, &jwks.url)).await;
    Setup {
        backend,
        gw,
        jwks,
        key,
    }
}

fn init_body() -> String {
    json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}).to_string()
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test]
async fn a_verified_workload_token_lists_and_calls_and_never_reaches_the_backend() {
    let s = setup().await;
    let token = s.key.sign(&claims(ISS, AUD, SUB));
    let client = s.gw.client(&token).await;
    let tools = client.list_all_tools().await.unwrap();
    assert_eq!(
        tools.iter().map(|t| t.name.to_string()).collect::<Vec<_>>(),
        ["inventory.get_item", "tollgate.start_task"]
    );
    let r = client
        .call_tool(
            CallToolRequestParams::new("inventory.get_item")
                .with_arguments(args(json!({ "item_id": "9" }))),
        )
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(false));
    // Token passthrough is forbidden: nothing the backend saw carries it.
    let hits = s.backend.hits();
    assert_eq!(hits.len(), 1);
    for (name, value) in &hits[0].headers {
        assert!(
            !value.contains(&token),
            "backend saw the agent's token in {name}"
        );
        assert!(
            !value.contains(token.split('.').nth(2).unwrap()),
            "backend saw the token's signature in {name}"
        );
    }
    let d = s.gw.decisions().await;
    assert_eq!(d[0].agent_id, "invoice-bot");
    assert_eq!(d[0].credential_id, format!("jwt:corp/{SUB}"));
    assert_eq!(
        d[0].owners.as_ref().unwrap()["agent"]["business"]["name"],
        "finance-lead"
    );
    assert_eq!(
        d[0].owners.as_ref().unwrap()["agent"]["approved_by"],
        "ciso"
    );
}

#[tokio::test]
async fn every_bad_token_is_refused_with_its_reason() {
    let s = setup().await;
    let other = SigningKey::generate("k1");
    let good = claims(ISS, AUD, SUB);
    let with = |patch: Value| {
        let mut c = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    let hs256 = jsonwebtoken::encode(
        &jsonwebtoken::Header {
            kid: Some("k1".into()),
            ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
        },
        &good,
        &jsonwebtoken::EncodingKey::from_secret(b"guessable").unwrap(),
    )
    .unwrap();
    let none = format!(
        "{}.{}.",
        b64(&json!({ "alg": "none", "typ": "JWT" })),
        b64(&good)
    );
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "bad signature",
            other.sign(&good),
            "token_signature_invalid",
        ),
        (
            "unknown issuer",
            s.key.sign(&with(json!({ "iss": "https://evil.test" }))),
            "token_issuer_unknown",
        ),
        (
            "wrong audience",
            s.key
                .sign(&with(json!({ "aud": "https://other-gateway.test" }))),
            "token_audience_invalid",
        ),
        (
            "missing audience",
            s.key.sign(&with(json!({ "aud": null }))),
            "token_audience_invalid",
        ),
        (
            "expired",
            s.key.sign(&with(json!({ "exp": now() - 3600 }))),
            "token_expired",
        ),
        (
            "not yet valid",
            s.key.sign(&with(json!({ "nbf": now() + 3600 }))),
            "token_not_yet_valid",
        ),
        (
            "no expiry",
            s.key.sign(&with(json!({ "exp": null }))),
            "token_claim_missing",
        ),
        ("alg none", none, "token_malformed"),
        (
            "algorithm not allowed",
            hs256,
            "token_algorithm_not_allowed",
        ),
        (
            "unknown key id",
            s.key.sign_as("k-unknown", &good),
            "token_key_unknown",
        ),
        (
            "identity no agent declares",
            s.key
                .sign(&with(json!({ "sub": "spiffe://corp/agents/nobody" }))),
            "identity_unknown",
        ),
        ("not a JWT", "a.b.c".to_string(), "token_malformed"),
    ];
    for (what, token, code) in cases {
        let r = raw_post(&s.gw.url, Some(&token), init_body()).await;
        assert_eq!(r.status(), 401, "{what}");
        let challenge = r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            challenge.contains("error=\"invalid_token\""),
            "{what}: {challenge}"
        );
        assert!(
            challenge.contains("resource_metadata=\""),
            "{what}: {challenge}"
        );
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["reason"], code, "{what}");
    }
    // A valid token in the query string is refused too, alone or beside a
    // valid one in the header.
    let token = s.key.sign(&good);
    assert_eq!(
        raw_post(&s.gw.url, Some(&token), init_body())
            .await
            .status(),
        200
    );
    for header in [None, Some(token.as_str())] {
        let r = raw_post(
            &format!("{}?access_token={token}", s.gw.url),
            header,
            init_body(),
        )
        .await;
        assert_eq!(r.status(), 401);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["reason"], "credential_in_url");
    }
    assert!(s.backend.hits().is_empty());
}

#[tokio::test]
async fn a_token_signed_with_a_rotated_out_key_is_refused() {
    let s = setup().await;
    let old = s.key.sign(&claims(ISS, AUD, SUB));
    assert_eq!(
        raw_post(&s.gw.url, Some(&old), init_body()).await.status(),
        200
    );

    // The issuer rotates: k2 in, k1 out.
    let new_key = SigningKey::generate("k2");
    s.jwks.publish(&[&new_key]);
    // A token with the new key id makes the gateway refetch the key set.
    let fresh = new_key.sign(&claims(ISS, AUD, SUB));
    assert_eq!(
        raw_post(&s.gw.url, Some(&fresh), init_body())
            .await
            .status(),
        200
    );
    // The retired key is gone from the set now in force.
    let r = raw_post(&s.gw.url, Some(&old), init_body()).await;
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["reason"], "token_key_unknown");
}

#[tokio::test]
async fn an_unreachable_jwks_fails_closed() {
    let backend = Backend::start().await;
    let key = SigningKey::generate("k1");
    // Nothing listens on this port once the listener is dropped.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gw = TestGateway::start(&manifests(
        &backend.url,
        &format!("http://{dead}/jwks.json"),
    ))
    .await;
    let r = raw_post(
        &gw.url,
        Some(&key.sign(&claims(ISS, AUD, SUB))),
        init_body(),
    )
    .await;
    assert_eq!(r.status(), 503);
    assert!(backend.hits().is_empty());
}

#[tokio::test]
async fn protected_resource_metadata_is_served_and_advertised() {
    let s = setup().await;
    let base = format!("http://{}", s.gw.addr);
    for path in [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
    ] {
        let r = reqwest::get(format!("{base}{path}")).await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["resource"], format!("{base}/mcp"));
        assert_eq!(body["authorization_servers"], json!([ISS]));
        assert_eq!(body["bearer_methods_supported"], json!(["header"]));
    }
    let r = raw_post(&s.gw.url, None, init_body()).await;
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(
        challenge,
        format!(
            "Bearer realm=\"tollgate\", resource_metadata=\"{base}/.well-known/oauth-protected-resource/mcp\""
        )
    );
}

#[tokio::test]
async fn a_gateway_key_is_refused_for_an_agent_that_only_accepts_workload_identity() {
    let s = setup().await;
    let key = s.gw.issue_key("invoice-bot").await;
    assert_eq!(
        raw_post(&s.gw.url, Some(&key), init_body()).await.status(),
        401
    );
}

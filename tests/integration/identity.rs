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

// ---------------------------------------------------------------------------
// The JWKS cache against an issuer that fails or hangs
// ---------------------------------------------------------------------------

mod jwks_cache {
    use std::time::{Duration, Instant};

    use tollgate::identity::{Issuer, TokenError};
    use tollgate::manifest::types::IssuerManifest;
    use tollgate_tests::jwt::{JwksMode, JwksServer, SigningKey, claims};

    use super::{AUD, ISS, SUB};

    fn issuer(url: &str, refresh: u64, max_stale: u64, wait: Duration) -> Issuer {
        let m: IssuerManifest = serde_yaml_ng::from_str(&format!(
            "kind: Issuer\nid: corp\ndescription: test\nissuer: {ISS}\naudience: {AUD}\nalgorithms: [ES256]\njwks: {{ url: \"{url}\", refresh_seconds: {refresh}, max_stale_seconds: {max_stale} }}\n"
        ))
        .unwrap();
        Issuer::from_manifest(&m, std::path::Path::new("."))
            .unwrap()
            .with_fetch_wait(wait)
    }

    /// Waits (bounded) until the server has received `n` requests.
    async fn hits(jwks: &JwksServer, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while jwks.hits() < n {
            assert!(
                Instant::now() < deadline,
                "the JWKS server saw {} requests",
                jwks.hits()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn the_last_good_keys_outlive_a_failing_issuer_up_to_their_maximum_age() {
        let key = SigningKey::generate("k1");
        let jwks = JwksServer::start(&[&key]).await;
        let issuer = issuer(&jwks.url, 60, 600, Duration::from_secs(2));
        let token = key.sign(&claims(ISS, AUD, SUB));
        let t0 = Instant::now();
        issuer.verify_at(&token, t0).await.unwrap();
        assert_eq!(jwks.hits(), 1);

        // The issuer breaks; refreshes fail, the good keys keep answering.
        jwks.set_mode(JwksMode::Fail);
        let s = |secs| t0 + Duration::from_secs(secs);
        issuer.verify_at(&token, s(120)).await.unwrap();
        hits(&jwks, 2).await;
        issuer.verify_at(&token, s(599)).await.unwrap();
        // Past the maximum age they are no longer trusted: fail closed.
        assert_eq!(
            issuer.verify_at(&token, s(601)).await,
            Err(TokenError::KeysUnavailable)
        );
        // Back-off: failures in a row do not turn into a request per call.
        let before = jwks.hits();
        for _ in 0..20 {
            let _ = issuer.verify_at(&token, s(601)).await;
        }
        assert!(
            jwks.hits() <= before + 1,
            "{} requests",
            jwks.hits() - before
        );
        // The issuer recovers: keys are fetched again once the back-off is over.
        jwks.set_mode(JwksMode::Serve);
        issuer.verify_at(&token, s(700)).await.unwrap();
    }

    #[tokio::test]
    async fn a_forced_refresh_that_fails_keeps_the_good_keys() {
        let key = SigningKey::generate("k1");
        let jwks = JwksServer::start(&[&key]).await;
        let issuer = issuer(&jwks.url, 300, 3600, Duration::from_secs(2));
        let good = key.sign(&claims(ISS, AUD, SUB));
        let t0 = Instant::now();
        issuer.verify_at(&good, t0).await.unwrap();

        jwks.set_mode(JwksMode::Fail);
        // An unknown key id forces a refetch, which fails.
        let stranger = key.sign_as("k-unknown", &claims(ISS, AUD, SUB));
        assert_eq!(
            issuer
                .verify_at(&stranger, t0 + Duration::from_secs(1))
                .await,
            Err(TokenError::UnknownKey)
        );
        assert_eq!(jwks.hits(), 2, "the forced refresh was tried");
        // The good keys are still in force.
        issuer
            .verify_at(&good, t0 + Duration::from_secs(2))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn callers_share_one_fetch_and_never_wait_long_behind_a_hanging_issuer() {
        let key = SigningKey::generate("k1");
        let jwks = JwksServer::start(&[&key]).await;
        jwks.set_mode(JwksMode::Hang);
        let issuer = std::sync::Arc::new(issuer(&jwks.url, 60, 600, Duration::from_millis(200)));
        let token = key.sign(&claims(ISS, AUD, SUB));
        let t0 = Instant::now();

        // Twenty callers with no keys at all: one fetch, each gives up after
        // the fetch wait, none waits for the hanging server.
        let started = Instant::now();
        let calls: Vec<_> = (0..20)
            .map(|_| {
                let (issuer, token) = (issuer.clone(), token.clone());
                tokio::spawn(async move { issuer.verify_at(&token, t0).await })
            })
            .collect();
        for c in calls {
            assert_eq!(c.await.unwrap(), Err(TokenError::KeysUnavailable));
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "callers waited {:?}",
            started.elapsed()
        );
        assert_eq!(jwks.hits(), 1, "one shared fetch");

        // The held fetch completes in the background once the issuer answers.
        jwks.set_mode(JwksMode::Serve);
        let deadline = Instant::now() + Duration::from_secs(10);
        while issuer.verify_at(&token, t0).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "the background fetch never landed"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(jwks.hits(), 1, "its result was used, not refetched");

        // Keys due for a refresh while the issuer hangs: callers are answered
        // from the keys in hand at once; the refresh runs behind them.
        jwks.set_mode(JwksMode::Hang);
        let started = Instant::now();
        for _ in 0..10 {
            issuer
                .verify_at(&token, t0 + Duration::from_secs(61))
                .await
                .unwrap();
        }
        assert!(started.elapsed() < Duration::from_millis(200));
        hits(&jwks, 2).await;
        assert_eq!(jwks.hits(), 2);
        jwks.set_mode(JwksMode::Serve);
    }
}

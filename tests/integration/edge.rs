//! The HTTP edge under hostile and long-running clients: connection cap and
//! timers (slowloris, idle sockets, a call slower than every timer),
//! sessions per credential and their idle expiry, `Host` reflection, the
//! admin API's edge rules, and the shape of requests and errors.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use http::HeaderMap;
use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tollgate::server::{HttpEdge, HttpOptions};
use tollgate_tests::{Backend, TestGateway, args, test_manifests};

/// The handshake revisions the README lists.
const HANDSHAKE_REVISIONS: [&str; 4] = ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

fn init_body(version: &str) -> String {
    json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":version,"capabilities":{},"clientInfo":{"name":"edge-test","version":"1"}}}).to_string()
}

async fn gateway(options: HttpOptions) -> (Backend, TestGateway, String) {
    let backend = Backend::start().await;
    let gw = TestGateway::start_with(&test_manifests(&backend.url), options).await;
    let key = gw.issue_key("tester").await;
    (backend, gw, key)
}

/// A second edge over the same gateway, on its own port, with `options`;
/// the returned clone watches its sessions.
async fn second_edge(gw: &TestGateway, options: HttpOptions) -> (HttpEdge, String) {
    let edge = HttpEdge::new(gw.gw.clone(), &options);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let served = edge.clone();
    tokio::spawn(async move {
        tollgate::server::serve_edge(listener, served, std::future::pending()).await
    });
    (edge, url)
}

/// An HTTP answer, its body parsed as JSON (from an SSE `data:` line when
/// the answer is an event stream).
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Reply {
    fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

async fn reply(r: reqwest::Response) -> Reply {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let sse = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let text = r.text().await.unwrap();
    let body = if sse {
        text.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
            .find(|v| v.get("jsonrpc").is_some())
            .unwrap_or(Value::Null)
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Reply {
        status,
        headers,
        body,
    }
}

/// POST `body` to `url` as an MCP client would, with `key` and `extra` headers.
async fn post(url: &str, key: Option<&str>, extra: &[(&str, &str)], body: &str) -> Reply {
    let mut r = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body.to_string());
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    for (name, value) in extra {
        r = r.header(*name, *value);
    }
    reply(r.send().await.unwrap()).await
}

/// Opens a session on `url` at `version`: initialize, then initialized.
async fn open_session(url: &str, key: &str, version: &str) -> String {
    let r = post(url, Some(key), &[], &init_body(version)).await;
    assert_eq!(r.status, 200, "{version}: {:?}", r.body);
    let id = r.headers["mcp-session-id"].to_str().unwrap().to_string();
    let note = json!({"jsonrpc":"2.0","method":"notifications/initialized"}).to_string();
    let r = post(
        url,
        Some(key),
        &[("mcp-session-id", &id), ("mcp-protocol-version", version)],
        &note,
    )
    .await;
    assert!(r.status == 202 || r.status == 200, "{version}: {r:?}");
    id
}

/// Polls `check` every 20 ms until it holds or `within` has passed.
async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads until the peer closes `sock` (or resets it); false if it is still
/// open after `within`.
async fn closed_by_peer(sock: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// A slowloris client: sends a request line and then one header line every
/// 100 ms, never finishing, until the server closes the socket. True if it
/// was closed within `within`.
async fn slowloris(addr: std::net::SocketAddr, within: Duration) -> bool {
    let mut sock = TcpStream::connect(addr).await.unwrap();
    if sock
        .write_all(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .is_err()
    {
        return true;
    }
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    let mut n = 0u32;
    loop {
        tokio::select! {
            read = sock.read(&mut buf) => match read {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            },
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                n += 1;
                if sock.write_all(format!("X-Trickle-{n}: y\r\n").as_bytes()).await.is_err() {
                    return true;
                }
            }
            () = tokio::time::sleep_until(deadline) => return false,
        }
    }
}

fn call(name: &str, a: Value) -> CallToolRequestParams {
    CallToolRequestParams::new(name.to_string()).with_arguments(args(a))
}

// ---------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------

#[tokio::test]
async fn slowloris_connections_are_closed_after_the_header_timeout() {
    let (_backend, gw, key) = gateway(HttpOptions {
        header_read_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_secs(120),
        ..HttpOptions::default()
    })
    .await;
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..30 {
        clients.spawn(slowloris(gw.addr, Duration::from_secs(20)));
    }
    // Each one keeps sending header lines; the deadline runs from the first
    // byte, so trickling does not extend it.
    while let Some(closed) = clients.join_next().await {
        assert!(closed.unwrap(), "a slowloris connection stayed open");
    }
    // The gateway is unharmed.
    let client = gw.client(&key).await;
    assert_eq!(client.list_all_tools().await.unwrap().len(), 5);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let (_backend, gw, _key) = gateway(HttpOptions {
        header_read_timeout: Duration::from_secs(120),
        idle_timeout: Duration::from_millis(300),
        ..HttpOptions::default()
    })
    .await;
    let mut sock = TcpStream::connect(gw.addr).await.unwrap();
    sock.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&answer).ends_with("ok\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), sock.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed before answering");
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    // Kept alive, then closed once idle: well before the header timeout.
    assert!(closed_by_peer(&mut sock, Duration::from_secs(20)).await);
}

#[tokio::test]
async fn idle_sockets_cannot_hold_the_connection_cap_for_long() {
    let (backend, gw, key) = gateway(HttpOptions {
        max_connections: 6,
        header_read_timeout: Duration::from_secs(3),
        idle_timeout: Duration::from_secs(3),
        ..HttpOptions::default()
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..6 {
        idle.push(TcpStream::connect(gw.addr).await.unwrap());
    }
    // The cap is full: one more connection is closed at once, unserved.
    let mut extra = TcpStream::connect(gw.addr).await.unwrap();
    let _ = extra
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), extra.read_to_end(&mut answer)).await;
    assert!(
        !String::from_utf8_lossy(&answer).contains("200 OK"),
        "a connection over the cap was served"
    );
    // The idle sockets time out and free the cap...
    for sock in &mut idle {
        assert!(closed_by_peer(sock, Duration::from_secs(20)).await);
    }
    // ...and a legitimate client is served, its call recorded in the store.
    let client = gw.client(&key).await;
    let r = client
        .call_tool(call("inventory.get_item", json!({ "item_id": "7" })))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(false));
    assert_eq!(backend.hits().len(), 1);
    let d = gw.decisions().await;
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].outcome.as_deref(), Some("ok"));
}

/// A backend whose `/api/hold` answers only when the test releases it.
#[derive(Clone, Default)]
struct HeldBackend {
    arrived: Arc<Mutex<usize>>,
    release: Arc<tokio::sync::Notify>,
}

async fn hold(State(b): State<HeldBackend>) -> axum::Json<Value> {
    *b.arrived.lock().unwrap() += 1;
    b.release.notified().await;
    axum::Json(json!({ "done": true }))
}

fn held_manifests(url: &str) -> String {
    format!(
        r#"kind: Connector
id: slowpoke
description: A backend that takes its time
owners:
  system: {{ name: slow-team, contact: slow@example.com }}
  security: {{ name: secops, contact: secops@example.com }}
http:
  base_url: {url}/api
  timeout_ms: 60000
tools:
  - name: wait
    description: Answers when it is ready
    risk: low
    input_schema: {{ type: object }}
    http:
      request: {{ method: GET, path: /hold }}
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
tools: [slowpoke.wait]
"#
    )
}

#[tokio::test]
async fn a_call_slower_than_every_edge_timer_still_completes() {
    let held = HeldBackend::default();
    let app = Router::new()
        .route("/api/hold", axum::routing::get(hold))
        .with_state(held.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let short = Duration::from_millis(200);
    let gw = TestGateway::start_with(
        &held_manifests(&url),
        HttpOptions {
            header_read_timeout: short,
            idle_timeout: short,
            session_idle_timeout: short,
            ..HttpOptions::default()
        },
    )
    .await;
    let key = gw.issue_key("tester").await;
    let client = gw.client(&key).await;
    let running =
        tokio::spawn(async move { client.call_tool(call("slowpoke.wait", json!({}))).await });
    assert!(
        eventually(Duration::from_secs(10), || async {
            *held.arrived.lock().unwrap() == 1
        })
        .await
    );
    // Open the window: a connection opened after the call started is closed
    // by the gateway's timers before the backend answers, so the call has
    // been waiting longer than the header, idle and session timeouts.
    let mut probe = TcpStream::connect(gw.addr).await.unwrap();
    assert!(closed_by_peer(&mut probe, Duration::from_secs(10)).await);
    assert!(
        !running.is_finished(),
        "the call ended before the backend answered"
    );
    held.release.notify_one();
    let r = tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("the call never completed")
        .unwrap()
        .expect("the call was cut");
    assert_eq!(r.is_error, Some(false), "{r:?}");
    assert_eq!(r.structured_content.unwrap()["done"], true);
    assert_eq!(
        gw.decisions().await.last().unwrap().outcome.as_deref(),
        Some("ok")
    );
}

// ---------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------

#[tokio::test]
async fn sessions_per_credential_are_capped() {
    let (_backend, gw, key) = gateway(HttpOptions {
        max_sessions_per_credential: 3,
        ..HttpOptions::default()
    })
    .await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(open_session(&gw.url, &key, "2025-11-25").await);
    }
    let r = post(&gw.url, Some(&key), &[], &init_body("2025-11-25")).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.body["reason"], "session_limit");
    assert!(
        r.body["error"].as_str().unwrap().contains("DELETE"),
        "{:?}",
        r.body
    );
    assert!(r.headers.get("mcp-session-id").is_none());
    // Another credential has its own allowance.
    let other = gw.issue_key("other").await;
    open_session(&gw.url, &other, "2025-11-25").await;
    // Closing a session frees its slot.
    let closed = reqwest::Client::new()
        .delete(&gw.url)
        .bearer_auth(&key)
        .header("mcp-session-id", &ids[0])
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap();
    assert!(closed.status().is_success(), "{}", closed.status());
    open_session(&gw.url, &key, "2025-11-25").await;

    // Concurrent initializes cannot overshoot the cap.
    let fresh = gw.issue_key("tester").await;
    let mut racing = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (url, k) = (gw.url.clone(), fresh.clone());
        racing.spawn(async move { post(&url, Some(&k), &[], &init_body("2025-11-25")).await });
    }
    let mut statuses = Vec::new();
    while let Some(r) = racing.join_next().await {
        statuses.push(r.unwrap().status);
    }
    statuses.sort();
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429, 429, 429]);
}

#[tokio::test]
async fn idle_sessions_expire_with_their_rmcp_session_and_task_binding() {
    let (_backend, gw, key) = gateway(HttpOptions::default()).await;
    let (edge, url) = second_edge(
        &gw,
        HttpOptions {
            session_idle_timeout: Duration::from_millis(300),
            ..HttpOptions::default()
        },
    )
    .await;
    let id = open_session(&url, &key, "2025-11-25").await;
    let headers = [
        ("mcp-session-id", id.as_str()),
        ("mcp-protocol-version", "2025-11-25"),
    ];
    let start = json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"tollgate.start_task","arguments":{"purpose":"edge test","tools":["inventory.get_item"],"ttl_seconds":600}}}).to_string();
    let r = post(&url, Some(&key), &headers, &start).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["result"]["isError"], false, "{:?}", r.body);
    assert!(tollgate::server::session_bound_task(&gw.gw, &id).is_some());
    assert_eq!(edge.open_sessions().await, 1);
    assert_eq!(edge.bound_sessions(), 1);

    let expired = eventually(Duration::from_secs(10), || async {
        edge.open_sessions().await == 0
            && edge.bound_sessions() == 0
            && tollgate::server::session_bound_task(&gw.gw, &id).is_none()
    })
    .await;
    assert!(expired, "the idle session was not closed");
    let list = json!({"jsonrpc":"2.0","id":3,"method":"tools/list"}).to_string();
    let r = post(&url, Some(&key), &headers, &list).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["reason"], "session_unknown");
}

// ---------------------------------------------------------------------------
// Host reflection
// ---------------------------------------------------------------------------

async fn get_with_host(url: &str, host: &str) -> Reply {
    reply(
        reqwest::Client::new()
            .get(url)
            .header("host", host)
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn challenge_with_host(url: &str, host: &str) -> String {
    let r = reqwest::Client::new()
        .post(url)
        .header("host", host)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(init_body("2025-11-25"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn no_unchecked_host_is_reflected() {
    let (_backend, gw, _key) = gateway(HttpOptions::default()).await;
    let own = format!("http://{}", gw.addr);
    let metadata = format!("{own}/.well-known/oauth-protected-resource/mcp");
    for hostile in ["evil.example", "evil.example:80", "127.0.0.1.evil.example"] {
        let challenge = challenge_with_host(&gw.url, hostile).await;
        assert!(!challenge.contains("evil"), "{challenge}");
        assert!(
            challenge.contains(&format!("resource_metadata=\"{metadata}\"")),
            "{challenge}"
        );
        let doc = get_with_host(&metadata, hostile).await;
        assert_eq!(doc.body["resource"], format!("{own}/mcp"), "{:?}", doc.body);
    }
    // An allow-listed Host is used as sent.
    let port = gw.addr.port();
    let challenge = challenge_with_host(&gw.url, &format!("localhost:{port}")).await;
    assert!(
        challenge.contains(&format!(
            "\"http://localhost:{port}/.well-known/oauth-protected-resource/mcp\""
        )),
        "{challenge}"
    );

    // A configured public URL wins over any Host, and is escaped.
    let (_b, gw, _k) = gateway(HttpOptions {
        public_url: Some("https://gw.example/a\"b".into()),
        ..HttpOptions::default()
    })
    .await;
    let challenge = challenge_with_host(&gw.url, &format!("localhost:{port}")).await;
    assert!(
        challenge.contains(
            "resource_metadata=\"https://gw.example/a\\\"b/.well-known/oauth-protected-resource/mcp\""
        ),
        "{challenge}"
    );
    let doc = get_with_host(
        &format!("http://{}/.well-known/oauth-protected-resource", gw.addr),
        "evil.example",
    )
    .await;
    assert_eq!(doc.body["resource"], "https://gw.example/a\"b/mcp");
}

// ---------------------------------------------------------------------------
// Admin API edge
// ---------------------------------------------------------------------------

#[tokio::test]
async fn the_admin_api_applies_the_edge_rules() {
    let (_backend, gw, agent_key) = gateway(HttpOptions::default()).await;
    let admin = tollgate::admin::new_admin_key();
    gw.gw
        .store()
        .insert_admin_key(&admin.key_id, "ops", &admin.hash, &tollgate_tests::now())
        .await
        .unwrap();
    let base = format!("http://{}/admin/tasks", gw.addr);
    let http = reqwest::Client::new();
    let body =
        json!({"agent":"tester","purpose":"edge","tools":["inventory.get_item"],"ttl_seconds":60})
            .to_string();

    // Foreign Origin.
    let r = reply(
        http.post(&base)
            .bearer_auth(&admin.key)
            .header("origin", "https://evil.example")
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (r.status, &r.body["reason"]),
        (403, &json!("origin_forbidden"))
    );

    // A body that is not JSON.
    let r = reply(
        http.post(&base)
            .bearer_auth(&admin.key)
            .header("content-type", "text/plain")
            .body(body.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 415);
    assert_eq!(r.body["reason"], "unsupported_media_type");

    // A credential in the query string, beside a valid one in the header,
    // or alone.
    for query in [
        format!("access_token={}", admin.key),
        format!("agent=tester&x={}", admin.key),
        format!("token={agent_key}"),
    ] {
        let r = reply(
            http.get(format!("{base}?{query}"))
                .bearer_auth(&admin.key)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, 401, "{query}");
        assert_eq!(r.body["reason"], "credential_in_url", "{query}");
    }
    let r = reply(
        http.get(format!("{base}?token={}", admin.key))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (r.status, &r.body["reason"]),
        (401, &json!("credential_in_url"))
    );

    // The rules refuse only what they should: the same calls done right.
    let r = reply(
        http.post(&base)
            .bearer_auth(&admin.key)
            .header("origin", "http://localhost:3000")
            .header("content-type", "application/json; charset=utf-8")
            .body(body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = reply(
        http.get(format!("{base}?agent=tester&active=true"))
            .bearer_auth(&admin.key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["tasks"].as_array().unwrap().len(), 1);
}

// ---------------------------------------------------------------------------
// Request shape
// ---------------------------------------------------------------------------

#[tokio::test]
async fn two_authorization_headers_are_refused_everywhere() {
    let (backend, gw, key) = gateway(HttpOptions::default()).await;
    let other = gw.issue_key("other").await;
    for path in ["/mcp", "/admin/tasks", "/oauth/introspect"] {
        let r = reply(
            reqwest::Client::new()
                .post(format!("http://{}{path}", gw.addr))
                .header("authorization", format!("Bearer {key}"))
                .header("authorization", format!("Bearer {other}"))
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .body(init_body("2025-11-25"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, 400, "{path}");
        assert_eq!(r.body["reason"], "authorization_duplicated", "{path}");
    }
    assert!(backend.hits().is_empty());
}

#[tokio::test]
async fn unknown_paths_and_methods_get_json_errors() {
    let (_backend, gw, key) = gateway(HttpOptions::default()).await;
    let http = reqwest::Client::new();
    for path in ["/nope", "/admin/nope", "/.well-known/nope"] {
        let r = reply(
            http.get(format!("http://{}{path}", gw.addr))
                .bearer_auth(&key)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, 404, "{path}");
        assert!(r.content_type().starts_with("application/json"), "{path}");
        assert_eq!(r.body["reason"], "not_found", "{path}");
    }
    let r = reply(
        http.get(format!("http://{}/oauth/introspect", gw.addr))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 405);
    assert!(r.content_type().starts_with("application/json"));
    assert_eq!(r.body["reason"], "method_not_allowed");
}

#[tokio::test]
async fn cors_preflights_are_answered_for_allowed_origins_only() {
    let (_backend, gw, key) = gateway(HttpOptions {
        allowed_origins: vec!["https://app.example".into()],
        ..HttpOptions::default()
    })
    .await;
    let http = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        http.request(http::Method::OPTIONS, &gw.url)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type, mcp-session-id, mcp-protocol-version, mcp-param-item_id",
            )
            .send()
    };
    for origin in ["https://app.example", "http://localhost:5173"] {
        let r = preflight(origin).await.unwrap();
        assert_eq!(r.status(), 204, "{origin}");
        let h = r.headers();
        assert_eq!(h["access-control-allow-origin"], origin);
        assert!(
            h["access-control-allow-methods"]
                .to_str()
                .unwrap()
                .contains("POST")
        );
        let allowed = h["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .to_ascii_lowercase();
        for name in [
            "authorization",
            "content-type",
            "mcp-session-id",
            "mcp-protocol-version",
            "last-event-id",
            "mcp-param-item_id",
        ] {
            assert!(allowed.contains(name), "{name} not in {allowed}");
        }
    }
    let r = preflight("https://evil.example").await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.headers().get("access-control-allow-origin").is_none());

    // The real request from an allowed origin can read the session id.
    let r = post(
        &gw.url,
        Some(&key),
        &[("origin", "https://app.example")],
        &init_body("2025-11-25"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://app.example"
    );
    assert!(
        r.headers["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("Mcp-Session-Id")
    );
}

#[tokio::test]
async fn malformed_json_rpc_gets_json_rpc_errors_as_json() {
    let (backend, gw, key) = gateway(HttpOptions::default()).await;
    let cases: [(&str, String, i64, &str); 6] = [
        ("malformed JSON", "{not json".into(), -32700, "Parse error"),
        (
            "a batch",
            json!([{"jsonrpc":"2.0","id":1,"method":"ping"}]).to_string(),
            -32600,
            "batch",
        ),
        (
            "id null",
            json!({"jsonrpc":"2.0","id":null,"method":"tools/list"}).to_string(),
            -32600,
            "null",
        ),
        (
            "duplicated name",
            r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"inventory.get_item","name":"inventory.purge","arguments":{"item_id":"1"}}}"#.into(),
            -32602,
            "/params/name",
        ),
        (
            "arguments not an object",
            json!({"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"inventory.get_item","arguments":"item_id=1"}}).to_string(),
            -32602,
            "`arguments` must be a JSON object",
        ),
        (
            "arguments an array",
            json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"inventory.get_item","arguments":["1"]}}).to_string(),
            -32602,
            "an array",
        ),
    ];
    for (what, body, code, says) in cases {
        let r = post(&gw.url, Some(&key), &[], &body).await;
        assert_eq!(r.status, 400, "{what}");
        assert!(r.content_type().starts_with("application/json"), "{what}");
        assert_eq!(r.body["jsonrpc"], "2.0", "{what}");
        assert_eq!(r.body["error"]["code"], code, "{what}: {:?}", r.body);
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{what}: {message}");
    }
    // The ids of well-formed requests are kept for correlation.
    let r = post(&gw.url, Some(&key), &[], &json!({"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"inventory.get_item","arguments":1}}).to_string()).await;
    assert_eq!(r.body["id"], 6);

    // What rmcp refuses in plain text leaves as JSON too.
    let r = reply(
        reqwest::Client::new()
            .post(&gw.url)
            .bearer_auth(&key)
            .header("content-type", "text/plain")
            .header("accept", "application/json, text/event-stream")
            .body(init_body("2025-11-25"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 415);
    assert_eq!(r.body["error"]["code"], -32600, "{:?}", r.body);
    let r = reply(
        reqwest::Client::new()
            .post(&gw.url)
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(init_body("2025-11-25"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 406);
    assert!(
        r.body["error"]["message"].as_str().is_some(),
        "{:?}",
        r.body
    );

    // Nothing reached the pipeline, the backend or the record.
    assert!(backend.hits().is_empty());
    assert!(gw.decisions().await.is_empty());
}

#[tokio::test]
async fn ping_works_in_every_listed_revision() {
    let (_backend, gw, key) = gateway(HttpOptions::default()).await;
    // 2026-07-28: stateless, the revision in the request's `_meta`.
    let ping = json!({"jsonrpc":"2.0","id":9,"method":"ping","params":{"_meta":{
        "io.modelcontextprotocol/protocolVersion":"2026-07-28",
        "io.modelcontextprotocol/clientCapabilities":{},
        "io.modelcontextprotocol/clientInfo":{"name":"edge-test","version":"1"}
    }}})
    .to_string();
    let r = post(
        &gw.url,
        Some(&key),
        &[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "ping"),
        ],
        &ping,
    )
    .await;
    assert_eq!(r.status, 200, "2026-07-28: {r:?}");
    assert_eq!(r.body["id"], 9, "2026-07-28: {:?}", r.body);
    assert!(r.body["result"].is_object(), "2026-07-28: {:?}", r.body);

    // The handshake revisions: in a session.
    for version in HANDSHAKE_REVISIONS {
        let id = open_session(&gw.url, &key, version).await;
        let ping = json!({"jsonrpc":"2.0","id":10,"method":"ping"}).to_string();
        let r = post(
            &gw.url,
            Some(&key),
            &[("mcp-session-id", &id), ("mcp-protocol-version", version)],
            &ping,
        )
        .await;
        assert_eq!(r.status, 200, "{version}: {r:?}");
        assert_eq!(r.body["id"], 10, "{version}: {:?}", r.body);
        assert!(r.body["result"].is_object(), "{version}: {:?}", r.body);
    }
}

#[tokio::test]
async fn a_body_held_back_gets_408_after_the_body_timeout() {
    let (backend, gw, key) = gateway(HttpOptions {
        body_read_timeout: Duration::from_millis(300),
        ..HttpOptions::default()
    })
    .await;
    let mut sock = TcpStream::connect(gw.addr).await.unwrap();
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: 200\r\n\r\n{{\"jsonrpc\":"
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let got = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    if String::from_utf8_lossy(&answer).contains("\"error\"") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    assert!(got.is_ok(), "no answer to a held body");
    let text = String::from_utf8_lossy(&answer).to_string();
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("application/json"), "{text}");
    assert!(text.contains("-32600"), "{text}");
    assert!(backend.hits().is_empty());
    assert!(gw.decisions().await.is_empty());
}

/// A stateless (2026-07-28) rmcp client of `url`: no session, no stream
/// held open between calls.
async fn stateless_client(
    url: &str,
    key: &str,
) -> rmcp::service::RunningService<rmcp::RoleClient, ()> {
    use rmcp::service::{ClientLifecycleMode, ClientServiceExt};
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    let config =
        StreamableHttpClientTransportConfig::with_uri(url.to_string()).auth_header(key.to_string());
    let mode = ClientLifecycleMode::Discover {
        preferred_versions: vec![rmcp::model::ProtocolVersion::V_2026_07_28],
    };
    ().serve_with_lifecycle(StreamableHttpClientTransport::from_config(config), mode)
        .await
        .unwrap()
}

#[tokio::test]
async fn shutdown_lets_a_call_finish_but_not_hold_the_process() {
    let held = HeldBackend::default();
    let app = Router::new()
        .route("/api/hold", axum::routing::get(hold))
        .with_state(held.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let gw = TestGateway::start_with(&held_manifests(&backend_url), HttpOptions::default()).await;
    let key = gw.issue_key("tester").await;

    for (grace, release) in [
        (Duration::from_secs(60), true),
        (Duration::from_millis(300), false),
    ] {
        let arrived_before = *held.arrived.lock().unwrap();
        let edge = HttpEdge::new(
            gw.gw.clone(),
            &HttpOptions {
                shutdown_grace: grace,
                ..HttpOptions::default()
            },
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(tollgate::server::serve_edge(listener, edge, async {
            let _ = stopped.await;
        }));
        let client = stateless_client(&format!("http://{addr}/mcp"), &key).await;
        let running =
            tokio::spawn(async move { client.call_tool(call("slowpoke.wait", json!({}))).await });
        assert!(
            eventually(Duration::from_secs(10), || async {
                *held.arrived.lock().unwrap() == arrived_before + 1
            })
            .await
        );
        stop.send(()).unwrap();
        // Shutdown has begun once the gateway accepts no new connection.
        assert!(
            eventually(Duration::from_secs(10), || async {
                TcpStream::connect(addr).await.is_err()
            })
            .await
        );
        if release {
            held.release.notify_one();
            let r = tokio::time::timeout(Duration::from_secs(20), running)
                .await
                .expect("the call never completed")
                .unwrap()
                .expect("the call in progress was cut by the shutdown");
            assert_eq!(r.is_error, Some(false), "{r:?}");
        }
        let served = tokio::time::timeout(Duration::from_secs(20), server).await;
        assert!(
            served.is_ok(),
            "shutdown waited past its grace period (grace {grace:?})"
        );
    }
}

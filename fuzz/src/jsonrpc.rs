//! Target `jsonrpc`: raw HTTP requests to the gateway's axum router, in
//! process, up to the pipeline: the edge (`server.rs`), rmcp's Streamable
//! HTTP parsing and the MCP front.
//!
//! Input: up to four requests separated by NUL bytes. Each request's first
//! byte picks headers (bits 0-1 `Content-Type`, bits 2-3 `Accept`, bits 4-5
//! `MCP-Protocol-Version`: none, 2026-07-28 with the `Mcp-Method`/`Mcp-Name`
//! headers a client derives from the body, 2026-07-28 bare, 2025-06-18;
//! bit 6 replays the `Mcp-Session-Id` of the
//! previous response, bit 7 adds a foreign `Origin`); the rest is the body,
//! POSTed to `/mcp` with a valid agent key, so a handshake
//! (`initialize`, `notifications/initialized`, `tools/call`) fits in one
//! input.
//!
//! `TOLLGATE_FUZZ_DEBUG=1` prints each response, to see what an input does.
//!
//! Properties, per request:
//! - the router answers within 10 s and its body can be read to the end;
//! - no 5xx except 503 (the documented answer to a store failure);
//! - a JSON response body is JSON;
//! - the backend gets at most one call, and only for a body that is a
//!   `tools/call` of a granted tool whose arguments the tool's schema
//!   accepts (the oracle below restates the schema).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use http::{Request, StatusCode, header};
use serde_json::Value;
use tower::ServiceExt;

struct State {
    rt: tokio::runtime::Runtime,
    router: Router,
    key: String,
    hits: Arc<AtomicUsize>,
}

static STATE: OnceLock<State> = OnceLock::new();

fn state() -> &'static State {
    STATE.get_or_init(|| {
        let rt = crate::runtime();
        let data = crate::scratch_dir("jsonrpc");
        let hits = Arc::new(AtomicUsize::new(0));
        let (router, key) = rt.block_on(async {
            let counted = hits.clone();
            let backend = Router::new().fallback(move || {
                let counted = counted.clone();
                async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                    axum::Json(serde_json::json!({ "ok": true }))
                }
            });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("cannot bind the fuzz backend");
            let url = format!("http://{}", listener.local_addr().expect("local address"));
            tokio::spawn(async move { axum::serve(listener, backend).await });
            let (gw, key) = crate::gateway(&data, &url).await;
            let options = tollgate::server::HttpOptions {
                max_body_bytes: 64 * 1024,
                ..Default::default()
            };
            (tollgate::server::router(gw, &options), key)
        });
        State {
            rt,
            router,
            key,
            hits,
        }
    })
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let s = state();
    s.rt.block_on(async {
        let mut session: Option<String> = None;
        for raw in crate::fields(data, 4) {
            session = one(s, raw, session).await;
        }
    });
}

async fn one(s: &State, raw: &[u8], session: Option<String>) -> Option<String> {
    let (flags, body) = match raw.split_first() {
        Some((f, b)) => (*f, b),
        None => (0, &[][..]),
    };
    let mut req = Request::post("/mcp")
        .header(header::HOST, "localhost")
        .header(header::AUTHORIZATION, format!("Bearer {}", s.key));
    if let Some(ct) = [
        Some("application/json"),
        Some("application/json; charset=utf-8"),
        Some("text/plain"),
        None,
    ][usize::from(flags & 3)]
    {
        req = req.header(header::CONTENT_TYPE, ct);
    }
    if let Some(accept) = [
        Some("application/json, text/event-stream"),
        Some("application/json"),
        Some("text/event-stream"),
        None,
    ][usize::from((flags >> 2) & 3)]
    {
        req = req.header(header::ACCEPT, accept);
    }
    let version = (flags >> 4) & 3;
    if let Some(v) = [
        None,
        Some("2026-07-28"),
        Some("2026-07-28"),
        Some("2025-06-18"),
    ][usize::from(version)]
    {
        req = req.header("mcp-protocol-version", v);
    }
    if version == 1 {
        // What a well-behaved 2026-07-28 client adds: the method and name
        // repeated in headers (SEP-2243). Without them (version 2) rmcp
        // refuses the request before the gateway sees it.
        for (name, value) in routing_headers(body) {
            req = req.header(name, value);
        }
    }
    if flags & 0x40 != 0
        && let Some(id) = &session
    {
        req = req.header("mcp-session-id", id.as_str());
    }
    if flags & 0x80 != 0 {
        req = req.header(header::ORIGIN, "https://evil.example");
    }
    let req = req
        .body(Body::from(body.to_vec()))
        .expect("the harness builds valid requests");

    let before = s.hits.load(Ordering::SeqCst);
    let response = tokio::time::timeout(Duration::from_secs(10), s.router.clone().oneshot(req))
        .await
        .expect("the gateway did not answer within 10 s")
        .unwrap_or_else(|e| match e {});
    let status = response.status();
    let (parts, body_stream) = response.into_parts();
    let bytes = tokio::time::timeout(
        Duration::from_secs(10),
        axum::body::to_bytes(body_stream, 16 << 20),
    )
    .await
    .expect("the response body did not end within 10 s")
    .expect("the response body could not be read");
    let after = s.hits.load(Ordering::SeqCst);
    if std::env::var_os("TOLLGATE_FUZZ_DEBUG").is_some() {
        eprintln!(
            "request flags {flags:#04x} -> {status}, backend calls {}, body {}",
            after - before,
            String::from_utf8_lossy(&bytes)
        );
    }

    assert!(
        !status.is_server_error() || status == StatusCode::SERVICE_UNAVAILABLE,
        "status {status} for body {:?}: {:?}",
        String::from_utf8_lossy(body),
        String::from_utf8_lossy(&bytes),
    );
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type.starts_with("application/json") && !bytes.is_empty() {
        assert!(
            serde_json::from_slice::<Value>(&bytes).is_ok(),
            "{content_type} response is not JSON: {:?}",
            String::from_utf8_lossy(&bytes)
        );
    }
    if content_type.starts_with("text/event-stream") {
        assert!(
            std::str::from_utf8(&bytes).is_ok(),
            "event stream is not UTF-8"
        );
    }
    let calls = after - before;
    assert!(calls <= 1, "one request reached the backend {calls} times");
    if calls == 1 {
        assert!(
            status.is_success(),
            "the backend was called but the agent got {status}"
        );
        assert!(
            is_valid_call(body),
            "the backend was called for a request that is not a valid tools/call: {:?}",
            String::from_utf8_lossy(body)
        );
    }
    parts
        .headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or(session)
}

/// `Mcp-Method` and `Mcp-Name` for `body`, when they are plain header values.
fn routing_headers(body: &[u8]) -> Vec<(&'static str, String)> {
    let Ok(Value::Object(msg)) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    let plain = |v: &str| {
        !v.is_empty()
            && v.bytes().all(|b| b.is_ascii_graphic())
            && http::HeaderValue::from_str(v).is_ok()
    };
    let mut out = Vec::new();
    if let Some(method) = msg
        .get("method")
        .and_then(Value::as_str)
        .filter(|m| plain(m))
    {
        out.push(("mcp-method", method.to_string()));
        let key = match method {
            "tools/call" | "prompts/get" => Some("name"),
            "resources/read" => Some("uri"),
            _ => None,
        };
        if let Some(name) = key
            .and_then(|k| msg.get("params")?.get(k)?.as_str())
            .filter(|n| plain(n))
        {
            out.push(("mcp-name", name.to_string()));
        }
    }
    out
}

/// Whether `body` is a JSON-RPC `tools/call` of a granted tool with
/// arguments its schema accepts: the only request that may reach a backend.
fn is_valid_call(body: &[u8]) -> bool {
    let Ok(Value::Object(msg)) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    if msg.get("jsonrpc").and_then(Value::as_str) != Some("2.0")
        || msg.get("method").and_then(Value::as_str) != Some("tools/call")
        || msg
            .get("id")
            .is_none_or(|id| !(id.is_string() || id.is_number()))
    {
        return false;
    }
    let Some(params) = msg.get("params").and_then(Value::as_object) else {
        return false;
    };
    let empty = serde_json::Map::new();
    let args = match params.get("arguments") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(a)) => a,
        Some(_) => return false,
    };
    match params.get("name").and_then(Value::as_str) {
        Some("inventory.get_item") => {
            args.get("item_id")
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty())
                && args.get("verbose").is_none_or(Value::is_boolean)
                && args.keys().all(|k| k == "item_id" || k == "verbose")
        }
        Some("inventory.create_item") => {
            args.get("name").is_some_and(Value::is_string)
                && args.get("qty").is_some_and(|q| {
                    q.as_u64().is_some() || q.as_f64().is_some_and(|f| f >= 0.0 && f.fract() == 0.0)
                })
        }
        _ => false,
    }
}

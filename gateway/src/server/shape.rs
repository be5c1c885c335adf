//! Request shape: the rules every route shares, and the JSON-RPC checks made
//! on `/mcp` bodies before rmcp parses them.
//!
//! - Exactly one `Authorization` header (400 `authorization_duplicated`):
//!   two could be read differently by two components.
//! - CORS: a preflight from an allowed origin is answered with the MCP
//!   headers allowed and `Mcp-Session-Id` exposed; from any other origin it
//!   is refused (403). Responses to allowed origins carry
//!   `Access-Control-Allow-Origin`.
//! - Every error leaves as JSON: unknown paths get a JSON 404, and plain or
//!   empty error bodies (rmcp's 406/415, axum's 405) are rewritten, as a
//!   JSON-RPC error on `/mcp` and `{"error", "reason"}` elsewhere. The
//!   review page (`/ui`) is the exception: it answers in HTML, and gets no
//!   CORS headers (its forms check their own origin).
//! - The admin API gets the `/mcp` Origin rule, the URL-credential rule and
//!   JSON-only bodies (415).
//! - `/mcp` bodies: read within the size cap and time limit, then malformed
//!   JSON is -32700, a batch or an `id: null` request is -32600, duplicated
//!   keys in `params` and non-object `tools/call` arguments are -32602.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value, json};

use super::{Edge, refuse};

/// Request headers a browser MCP client may send.
const CORS_ALLOW_HEADERS: &str = "Authorization, Content-Type, Accept, Mcp-Session-Id, Mcp-Protocol-Version, Last-Event-ID, Mcp-Method, Mcp-Name";

/// Longest agent-chosen string quoted back in an error.
const MAX_ECHO: usize = 64;

/// The outermost layer, on every route.
pub(super) async fn shape(State(edge): State<Arc<Edge>>, request: Request, next: Next) -> Response {
    if request
        .headers()
        .get_all(header::AUTHORIZATION)
        .iter()
        .nth(1)
        .is_some()
    {
        return refuse(
            StatusCode::BAD_REQUEST,
            "authorization_duplicated",
            "send exactly one Authorization header",
        );
    }
    let path = request.uri().path();
    if path == "/ui" || path.starts_with("/ui/") {
        // The review page answers people in HTML, its errors too, and is
        // for its own origin only: no JSON rewriting, no CORS (a preflight
        // gets the page's 405).
        return next.run(request).await;
    }
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .map(str::to_string);
    if request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        && let Some(origin) = &origin
    {
        return preflight(&edge, origin, request.headers());
    }
    let path = request.uri().path();
    let is_mcp = path == "/mcp" || path.starts_with("/mcp/");
    let response = jsonify(next.run(request).await, is_mcp).await;
    match origin.filter(|o| origin_allowed(o, &edge.allowed_origins)) {
        Some(o) => allow_origin(response, &o),
        None => response,
    }
}

/// Unknown paths.
pub(super) async fn not_found() -> Response {
    refuse(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; MCP is served at /mcp",
    )
}

fn allow_origin(mut response: Response, origin: &str) -> Response {
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("Mcp-Session-Id"),
        );
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}

/// Answers a CORS preflight: allowed origins learn what they may send,
/// others are refused.
fn preflight(edge: &Edge, origin: &str, headers: &HeaderMap) -> Response {
    if !origin_allowed(origin, &edge.allowed_origins) {
        return refuse(
            StatusCode::FORBIDDEN,
            "origin_forbidden",
            "requests from this Origin are not allowed",
        );
    }
    // 2026-07-28 clients mirror tool parameters into `Mcp-Param-*` headers;
    // their names depend on the tool, so the requested ones are allowed.
    let mut allowed = CORS_ALLOW_HEADERS.to_string();
    if let Some(requested) = headers
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .and_then(|v| v.to_str().ok())
    {
        for name in requested.split(',').map(str::trim) {
            let lower = name.to_ascii_lowercase();
            if lower.starts_with("mcp-param-")
                && lower.len() <= 128
                && lower
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                allowed.push_str(", ");
                allowed.push_str(&lower);
            }
        }
    }
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, DELETE"),
    );
    if let Ok(v) = HeaderValue::from_str(&allowed) {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    h.insert(
        header::VARY,
        HeaderValue::from_static(
            "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        ),
    );
    allow_origin(r, origin)
}

/// Rewrites a non-JSON error response as JSON, keeping status and headers.
async fn jsonify(response: Response, is_mcp: bool) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(response.headers()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let text = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let body = if is_mcp {
        let code = if status.is_server_error() {
            -32603
        } else {
            -32600
        };
        json!({ "jsonrpc": "2.0", "id": null, "error": { "code": code, "message": text } })
    } else {
        let reason = status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase()
            .replace(' ', "_");
        json!({ "error": text, "reason": reason })
    };
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body.to_string()))
}

/// The admin API's edge: the `/mcp` Origin rule, no credential in the URL,
/// JSON bodies only.
pub(super) async fn admin_edge(
    State(edge): State<Arc<Edge>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(r) = origin_refusal(request.headers(), &edge.allowed_origins) {
        return r;
    }
    if credential_in_query(request.uri()) {
        let mut r = refuse(
            StatusCode::UNAUTHORIZED,
            "credential_in_url",
            "credentials must be sent in the Authorization header, never in the URL",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"tollgate-admin\", error=\"invalid_request\""),
        );
        return r;
    }
    if has_body(request.headers()) && !is_json(request.headers()) {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with `Content-Type: application/json`",
        );
    }
    next.run(request).await
}

fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
}

/// `Content-Type: application/json` (parameters such as `charset` allowed).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            let essence = v.split(';').next().unwrap_or("").trim();
            essence.eq_ignore_ascii_case("application/json")
        })
}

/// 403 for a browser page from a foreign origin (DNS rebinding, CSRF);
/// loopback origins and configured ones pass. `None` when allowed.
pub(super) fn origin_refusal(headers: &HeaderMap, allowed: &[String]) -> Option<Response> {
    let origin = headers.get(header::ORIGIN)?;
    let ok = origin
        .to_str()
        .map(|o| origin_allowed(o, allowed))
        .unwrap_or(false);
    (!ok).then(|| {
        refuse(
            StatusCode::FORBIDDEN,
            "origin_forbidden",
            "requests from this Origin are not allowed",
        )
    })
}

fn origin_allowed(origin: &str, allowed: &[String]) -> bool {
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)) {
        return true;
    }
    match reqwest::Url::parse(origin) {
        Ok(u) => matches!(u.host_str(), Some("localhost" | "127.0.0.1" | "[::1]")),
        Err(_) => false,
    }
}

/// Whether the URL's query carries a credential: a parameter named like
/// one, or a value that is a gateway key or looks like a JWT.
pub(super) fn credential_in_query(uri: &http::Uri) -> bool {
    let Some(q) = uri.query() else {
        return false;
    };
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q).unwrap_or_else(|_| {
        q.split('&')
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_string(), v.to_string())
            })
            .collect()
    });
    pairs.iter().any(|(k, v)| {
        let k = k.to_ascii_lowercase();
        let v = v.trim();
        matches!(
            k.as_str(),
            "access_token" | "token" | "key" | "api_key" | "apikey" | "auth" | "authorization"
        ) || v.starts_with(crate::pipeline::authenticate::KEY_PREFIX)
            || v.starts_with(crate::admin::ADMIN_KEY_PREFIX)
            || (v.starts_with("eyJ") && v.bytes().filter(|b| *b == b'.').count() == 2)
    })
}

/// The `Host` value when the allow-list names it (and it is a plain
/// `host[:port]`), normalised to lower case; `None` otherwise, and always
/// when the allow-list is empty (every host accepted, so none checked).
pub(super) fn allowed_host(host: &str, allowed: &[String]) -> Option<String> {
    if allowed.is_empty() {
        return None;
    }
    let authority = http::uri::Authority::try_from(host).ok()?;
    if authority.as_str().contains('@') {
        return None;
    }
    let name = normalize_host(authority.host());
    let port = authority.port_u16();
    let ok = allowed.iter().any(|a| {
        let a = a.trim();
        match http::uri::Authority::try_from(a) {
            Ok(aa) => {
                normalize_host(aa.host()) == name && aa.port_u16().is_none_or(|p| Some(p) == port)
            }
            Err(_) => normalize_host(a) == name,
        }
    });
    ok.then(|| authority.as_str().to_ascii_lowercase())
}

fn normalize_host(h: &str) -> String {
    h.trim_matches(|c| c == '[' || c == ']')
        .to_ascii_lowercase()
}

/// Reads and checks a `/mcp` POST body when it is JSON; other content
/// types go on to rmcp, which refuses them (and [`shape`] makes that JSON).
/// Returns the request with its body restored, and what it asks for.
pub(super) async fn read_rpc(
    edge: &Edge,
    request: Request,
) -> Result<(Request, Option<RpcRequest>), Box<Response>> {
    if !is_json(request.headers()) {
        return Ok((request, None));
    }
    let too_large = || {
        Box::new(rpc_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            Value::Null,
            -32600,
            &format!(
                "the request body is larger than {} bytes, the limit",
                edge.max_body_bytes
            ),
        ))
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > edge.max_body_bytes as u64) {
        return Err(too_large());
    }
    let (parts, body) = request.into_parts();
    let max = edge.max_body_bytes;
    let read = async {
        let mut stream = body.into_data_stream();
        let mut buf = BytesMut::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| ReadError::Aborted)?;
            if buf.len() + chunk.len() > max {
                return Err(ReadError::TooLarge);
            }
            buf.extend_from_slice(&chunk);
        }
        Ok::<Bytes, ReadError>(buf.freeze())
    };
    let bytes = match tokio::time::timeout(edge.body_read_timeout, read).await {
        Ok(Ok(b)) => b,
        Ok(Err(ReadError::TooLarge)) => return Err(too_large()),
        Ok(Err(ReadError::Aborted)) => {
            return Err(Box::new(rpc_error(
                StatusCode::BAD_REQUEST,
                Value::Null,
                -32600,
                "the request body could not be read",
            )));
        }
        Err(_) => {
            return Err(Box::new(rpc_error(
                StatusCode::REQUEST_TIMEOUT,
                Value::Null,
                -32600,
                &format!(
                    "the request body did not arrive within {} s",
                    edge.body_read_timeout.as_secs_f64()
                ),
            )));
        }
    };
    match inspect_rpc(&bytes) {
        Ok(rpc) => Ok((Request::from_parts(parts, Body::from(bytes)), rpc)),
        Err(p) => Err(Box::new(rpc_error(
            StatusCode::BAD_REQUEST,
            p.id,
            p.code,
            &p.message,
        ))),
    }
}

/// Whether a request follows the stateless revision (2026-07-28 or later),
/// by its `_meta` or else its `MCP-Protocol-Version` header.
pub(super) fn is_stateless(rpc: &RpcRequest, headers: &HeaderMap) -> bool {
    let revision = rpc.revision.as_deref().or_else(|| {
        headers
            .get("mcp-protocol-version")
            .and_then(|v| v.to_str().ok())
    });
    revision.is_some_and(|r| r >= "2026-07-28")
}

/// The answer to a `ping` (none for a notification).
pub(super) fn pong(id: &Value) -> Response {
    if id.is_null() {
        return StatusCode::ACCEPTED.into_response();
    }
    let body = json!({ "jsonrpc": "2.0", "id": id, "result": {} });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

enum ReadError {
    TooLarge,
    Aborted,
}

fn rpc_error(status: StatusCode, id: Value, code: i64, message: &str) -> Response {
    let body = json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message } });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Why a JSON-RPC body is refused at the edge.
#[derive(Debug, PartialEq)]
pub(super) struct RpcProblem {
    pub code: i64,
    pub message: String,
    pub id: Value,
}

impl RpcProblem {
    fn new(code: i64, id: &Value, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            id: id.clone(),
        }
    }
}

/// A JSON-RPC request or notification that passed [`inspect_rpc`].
#[derive(Debug, PartialEq)]
pub(super) struct RpcRequest {
    pub method: String,
    /// The request id; `null` for a notification.
    pub id: Value,
    /// The revision named in the request's `_meta` (2026-07-28 and later).
    pub revision: Option<String>,
}

/// Checks one JSON-RPC message for what rmcp would answer in plain text,
/// or read in a way another parser might not. Returns the request or
/// notification (`None` for a response to a server request).
pub(super) fn inspect_rpc(body: &[u8]) -> Result<Option<RpcRequest>, RpcProblem> {
    let null = Value::Null;
    let duplicates = RefCell::new(Vec::new());
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = Strict {
        duplicates: &duplicates,
        path: String::new(),
    }
    .deserialize(&mut de)
    .and_then(|v| de.end().map(|()| v))
    .map_err(|e| RpcProblem::new(-32700, &null, format!("Parse error: {e}")))?;
    let duplicates = duplicates.into_inner();
    let msg = match value {
        Value::Object(m) => m,
        Value::Array(_) => {
            return Err(RpcProblem::new(
                -32600,
                &null,
                "Invalid Request: JSON-RPC batches are not supported; send one message per request",
            ));
        }
        _ => {
            return Err(RpcProblem::new(
                -32600,
                &null,
                "Invalid Request: a JSON-RPC message is a JSON object",
            ));
        }
    };
    let id = match msg.get("id") {
        Some(v @ (Value::String(_) | Value::Number(_))) => v.clone(),
        _ => Value::Null,
    };
    if let Some(d) = duplicates.iter().find(|d| !d.starts_with("/params/")) {
        return Err(RpcProblem::new(
            -32600,
            &id,
            format!("Invalid Request: duplicated member `{d}`"),
        ));
    }
    if msg.get("jsonrpc") != Some(&Value::String("2.0".into())) {
        return Err(RpcProblem::new(
            -32600,
            &id,
            "Invalid Request: `jsonrpc` must be \"2.0\"",
        ));
    }
    let Some(method) = msg.get("method") else {
        // A response or error to a server request: rmcp's business.
        return Ok(None);
    };
    let Some(method) = method.as_str() else {
        return Err(RpcProblem::new(
            -32600,
            &id,
            "Invalid Request: `method` must be a string",
        ));
    };
    match msg.get("id") {
        None | Some(Value::String(_) | Value::Number(_)) => {}
        Some(Value::Null) => {
            return Err(RpcProblem::new(
                -32600,
                &id,
                "Invalid Request: `id` must be a string or a number; `null` is not a request id (omit `id` for a notification)",
            ));
        }
        Some(_) => {
            return Err(RpcProblem::new(
                -32600,
                &id,
                "Invalid Request: `id` must be a string or a number",
            ));
        }
    }
    if let Some(d) = duplicates.first() {
        return Err(RpcProblem::new(
            -32602,
            &id,
            format!("Invalid params: duplicated key `{d}`; each key may appear once"),
        ));
    }
    if method == "tools/call" {
        check_tool_call(msg.get("params"), &id)?;
    }
    let revision = msg
        .get("params")
        .and_then(|p| p.get("_meta"))
        .and_then(|m| m.get("io.modelcontextprotocol/protocolVersion"))
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok(Some(RpcRequest {
        method: method.to_string(),
        id,
        revision,
    }))
}

fn check_tool_call(params: Option<&Value>, id: &Value) -> Result<(), RpcProblem> {
    let Some(Value::Object(params)) = params else {
        return Err(RpcProblem::new(
            -32602,
            id,
            "Invalid params: tools/call needs `params` with the tool's `name`",
        ));
    };
    if !matches!(params.get("name"), Some(Value::String(_))) {
        return Err(RpcProblem::new(
            -32602,
            id,
            "Invalid params: `name` must be the tool's name, a string",
        ));
    }
    match params.get("arguments") {
        None | Some(Value::Null | Value::Object(_)) => Ok(()),
        Some(other) => Err(RpcProblem::new(
            -32602,
            id,
            format!(
                "Invalid params: `arguments` must be a JSON object of named arguments, not {}",
                kind(other)
            ),
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Builds a JSON value like `serde_json::Value` does, noting every object
/// key that appears twice (as a JSON pointer, capped in length) instead of
/// silently keeping the last one.
struct Strict<'a> {
    duplicates: &'a RefCell<Vec<String>>,
    path: String,
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        let mut i = 0usize;
        while let Some(v) = seq.next_element_seed(Strict {
            duplicates: self.duplicates,
            path: format!("{}/{i}", self.path),
        })? {
            out.push(v);
            i += 1;
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = format!("{}/{}", self.path, pointer_token(&key));
            let v = map.next_value_seed(Strict {
                duplicates: self.duplicates,
                path: path.clone(),
            })?;
            if out.contains_key(&key) {
                self.duplicates.borrow_mut().push(path);
            }
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// A key as a JSON pointer token (RFC 6901), cut to a readable length.
fn pointer_token(key: &str) -> String {
    let escaped = key.replace('~', "~0").replace('/', "~1");
    if escaped.chars().count() > MAX_ECHO {
        let cut: String = escaped.chars().take(MAX_ECHO).collect();
        format!("{cut}…")
    } else {
        escaped
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rpc_bodies_are_classified() {
        let code = |b: &str| {
            inspect_rpc(b.as_bytes())
                .map(|r| r.map(|r| r.method))
                .map_err(|p| p.code)
        };
        assert_eq!(code("{not json"), Err(-32700));
        assert_eq!(
            code("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"} x"),
            Err(-32700)
        );
        assert_eq!(
            code("[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}]"),
            Err(-32600)
        );
        assert_eq!(
            code("{\"jsonrpc\":\"2.0\",\"id\":null,\"method\":\"ping\"}"),
            Err(-32600)
        );
        assert_eq!(
            code("{\"jsonrpc\":\"2.0\",\"id\":1,\"id\":2,\"method\":\"ping\"}"),
            Err(-32600)
        );
        assert_eq!(
            code(
                "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"a\",\"name\":\"b\"}}"
            ),
            Err(-32602)
        );
        assert_eq!(
            code(
                "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"a\",\"arguments\":[1]}}"
            ),
            Err(-32602)
        );
        assert_eq!(
            code(
                "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"a\",\"arguments\":{\"x\":1}}}"
            ),
            Ok(Some("tools/call".into()))
        );
        assert_eq!(
            code("{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}"),
            Ok(Some("notifications/initialized".into()))
        );
    }

    #[test]
    fn duplicate_pointers_are_escaped_and_capped() {
        let long = "k".repeat(500);
        let body = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"tools/call\",\"params\":{{\"name\":\"a\",\"arguments\":{{\"{long}\":1,\"{long}\":2}}}}}}"
        );
        let p = inspect_rpc(body.as_bytes()).unwrap_err();
        assert_eq!(p.code, -32602);
        assert_eq!(p.id, json!(7));
        assert!(p.message.len() < 200, "{}", p.message);
        let p = inspect_rpc(
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\",\"params\":{\"a/b\":1,\"a/b\":2}}",
        )
        .unwrap_err();
        assert!(p.message.contains("/params/a~1b"), "{}", p.message);
    }

    #[test]
    fn hosts_are_reflected_only_when_allow_listed() {
        let allowed = vec!["localhost".to_string(), "gw.example:8443".to_string()];
        assert_eq!(
            allowed_host("LOCALHOST:8930", &allowed).as_deref(),
            Some("localhost:8930")
        );
        assert_eq!(
            allowed_host("gw.example:8443", &allowed).as_deref(),
            Some("gw.example:8443")
        );
        assert_eq!(allowed_host("gw.example:9999", &allowed), None);
        assert_eq!(allowed_host("evil.example", &allowed), None);
        assert_eq!(allowed_host("localhost\"x", &allowed), None);
        assert_eq!(allowed_host("user@localhost", &allowed), None);
        assert_eq!(allowed_host("localhost", &[]), None);
        assert_eq!(
            crate::http_reply::quoted_string_escape("a\"b\\c"),
            "a\\\"b\\\\c"
        );
    }

    #[test]
    fn credentials_in_queries_are_recognised() {
        let q = |s: &str| credential_in_query(&s.parse::<http::Uri>().unwrap());
        assert!(q("/mcp?access_token=x"));
        assert!(q("/admin/tasks?agent=a&Token=x"));
        assert!(q("/admin/tasks?x=tga_secret"));
        assert!(q("/mcp?x=%74gk_secret"));
        assert!(q("/mcp?t=eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"));
        assert!(!q("/admin/tasks?agent=support-bot&active=true"));
        assert!(!q("/mcp"));
    }
}

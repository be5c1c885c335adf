//! The HTTP edge. Everything an HTTP request meets before rmcp, in order:
//!
//! 1. `Origin` check: a browser page from a foreign origin gets 403 (DNS
//!    rebinding defence); loopback origins and configured ones pass.
//! 2. Credentials in the URL are refused (they end up in logs).
//! 3. Authentication: `Authorization: Bearer <key>`, every request, or 401
//!    with `WWW-Authenticate: Bearer`. The identity rides in the request's
//!    extensions, where the MCP handler reads it.
//! 4. Session binding: an `Mcp-Session-Id` is usable only by the credential
//!    that opened the session.
//! 5. rmcp's Streamable HTTP service: `Host` allow-list, body-size cap (413),
//!    protocol handling for 2026-07-28 (stateless) and handshake revisions.
//!
//! Accepted sockets get TCP_NODELAY: without it, keep-alive clients wait
//! ~40 ms per response on delayed ACKs.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio::net::TcpListener;

use crate::Gateway;
use crate::mcp::McpFront;
use crate::pipeline::Transport;
use crate::pipeline::authenticate::{self, AuthError};

/// Default cap on a request body: far above any sane tool call, far below
/// what could hurt the process.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// Sessions idle longer than this are forgotten by the binding table.
const SESSION_BINDING_TTL: Duration = Duration::from_secs(24 * 3600);

/// HTTP edge settings.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// `Host` values accepted (rmcp's allow-list). Loopback names by default.
    pub allowed_hosts: Vec<String>,
    /// Browser origins accepted besides loopback ones, as `scheme://host[:port]`.
    pub allowed_origins: Vec<String>,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// The gateway's public base URL (`https://gw.example.com`), used in the
    /// protected resource metadata and `WWW-Authenticate`. When unset, it
    /// is derived from each request's (allow-listed) `Host`.
    pub public_url: Option<String>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            allowed_hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            allowed_origins: Vec::new(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            public_url: None,
        }
    }
}

#[derive(Debug)]
struct Edge {
    gw: Arc<Gateway>,
    allowed_origins: Vec<String>,
    public_url: Option<String>,
    sessions: Mutex<HashMap<String, Binding>>,
}

#[derive(Debug)]
struct Binding {
    principal: String,
    last_seen: Instant,
}

/// The gateway's HTTP routes: `/mcp` (authenticated MCP) and `/healthz`.
pub fn router(gw: Arc<Gateway>, options: &HttpOptions) -> Router {
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(true)
        .with_json_response(true)
        .with_allowed_hosts(options.allowed_hosts.clone())
        .with_max_request_body_bytes(options.max_body_bytes);
    let handler = McpFront::for_http(gw.clone());
    let mcp = StreamableHttpService::new(
        move || Ok(handler.clone()),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let edge = Arc::new(Edge {
        gw,
        allowed_origins: options.allowed_origins.clone(),
        public_url: options.public_url.clone(),
        sessions: Mutex::new(HashMap::new()),
    });
    Router::new()
        .nest_service("/mcp", mcp)
        .layer(middleware::from_fn_with_state(edge.clone(), guard))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/oauth/introspect", axum::routing::post(introspect))
        .route(RESOURCE_METADATA_PATH, get(resource_metadata))
        .route(
            &format!("{RESOURCE_METADATA_PATH}/mcp"),
            get(resource_metadata),
        )
        .with_state(edge.clone())
        .merge(crate::admin::router(edge.gw.clone()))
}

/// RFC 9728 protected resource metadata, at the root and in the
/// path-inserted form for `/mcp`.
const RESOURCE_METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

impl Edge {
    /// The public base URL: configured, or from the request's `Host`.
    fn base_url(&self, headers: &http::HeaderMap) -> String {
        if let Some(url) = &self.public_url {
            return url.trim_end_matches('/').to_string();
        }
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        format!("http://{host}")
    }
}

/// The gateway's public signing keys: backends verify minted JWTs with
/// them. Cacheable for a minute, so a rotation spreads quickly.
async fn jwks(State(edge): State<Arc<Edge>>) -> Response {
    let body =
        serde_json::to_string(&edge.gw.secrets().jwks()).unwrap_or_else(|_| "{\"keys\":[]}".into());
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "max-age=60"),
        ],
        body,
    )
        .into_response()
}

/// RFC 7662 token introspection for tokens this gateway minted for
/// backends: active only while the credential is unrevoked, unexpired and
/// its task active. Anything else, including tokens it did not mint, is
/// `{"active": false}`.
async fn introspect(State(edge): State<Arc<Edge>>, body: axum::body::Bytes) -> Response {
    let token = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body)
        .ok()
        .and_then(|pairs| {
            pairs
                .into_iter()
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v)
        });
    let Some(token) = token else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "send the token as form field `token`",
        );
    };
    let answer = crate::broker::introspect(&edge.gw, &token).await;
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        answer.to_string(),
    )
        .into_response()
}

async fn resource_metadata(State(edge): State<Arc<Edge>>, headers: http::HeaderMap) -> Response {
    let base = edge.base_url(&headers);
    let mut servers: Vec<String> = edge
        .gw
        .catalog()
        .issuers
        .values()
        .map(|i| i.authorization_server.clone())
        .collect();
    servers.sort();
    servers.dedup();
    let body = serde_json::json!({
        "resource": format!("{base}/mcp"),
        "authorization_servers": servers,
        "bearer_methods_supported": ["header"],
        "resource_name": "Tollgate MCP gateway",
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    gw: Arc<Gateway>,
    options: &HttpOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(gw, options);
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

fn refuse(status: StatusCode, reason: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error": message, "reason": reason });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn unauthorized(error: &AuthError, metadata_url: &str) -> Response {
    let r = refuse(StatusCode::UNAUTHORIZED, error.code(), &error.to_string());
    let kind = (!matches!(error, AuthError::Missing)).then_some("invalid_token");
    with_challenge(r, metadata_url, kind)
}

/// Adds the RFC 6750 / RFC 9728 challenge: where the protected resource
/// metadata is, and what was wrong with the token, if one was sent.
fn with_challenge(mut r: Response, metadata_url: &str, error: Option<&str>) -> Response {
    let mut challenge = format!("Bearer realm=\"tollgate\", resource_metadata=\"{metadata_url}\"");
    if let Some(e) = error {
        challenge.push_str(&format!(", error=\"{e}\""));
    }
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
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

async fn guard(State(edge): State<Arc<Edge>>, mut request: Request, next: Next) -> Response {
    if let Some(origin) = request.headers().get(header::ORIGIN) {
        let ok = origin
            .to_str()
            .map(|o| origin_allowed(o, &edge.allowed_origins))
            .unwrap_or(false);
        if !ok {
            return refuse(
                StatusCode::FORBIDDEN,
                "origin_forbidden",
                "requests from this Origin are not allowed",
            );
        }
    }
    let metadata_url = format!(
        "{}{RESOURCE_METADATA_PATH}/mcp",
        edge.base_url(request.headers())
    );
    if let Some(q) = request.uri().query() {
        let lower = q.to_ascii_lowercase();
        if ["access_token=", "token=", "key=", "api_key="]
            .iter()
            .any(|k| lower.split('&').any(|p| p.starts_with(k)))
        {
            let r = refuse(
                StatusCode::UNAUTHORIZED,
                "credential_in_url",
                "credentials must be sent in the Authorization header, never in the URL",
            );
            return with_challenge(r, &metadata_url, Some("invalid_request"));
        }
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::to_string);
    let Some(presented) = presented else {
        return unauthorized(&AuthError::Missing, &metadata_url);
    };
    let who = match authenticate::authenticate_bearer(&edge.gw, &presented, Transport::Http).await {
        Ok(who) => who,
        Err(AuthError::Unavailable(e)) => {
            tracing::error!(error = ?e, "cannot check credentials; refusing");
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "identity_unavailable",
                "credentials cannot be checked right now",
            );
        }
        Err(e) => {
            tracing::info!(reason = e.code(), "HTTP request refused");
            return unauthorized(&e, &metadata_url);
        }
    };
    let principal = who.principal().to_string();
    let session = request
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(id) = &session {
        let mut sessions = edge.sessions.lock().unwrap_or_else(|p| p.into_inner());
        match sessions.get_mut(id) {
            Some(b) if b.principal == principal => b.last_seen = Instant::now(),
            Some(_) => {
                return refuse(
                    StatusCode::FORBIDDEN,
                    "session_foreign",
                    "this session was opened by another credential",
                );
            }
            None => {
                return refuse(
                    StatusCode::NOT_FOUND,
                    "session_unknown",
                    "unknown or expired session; initialize a new one",
                );
            }
        }
    }
    let method = request.method().clone();
    request.extensions_mut().insert(who);
    let mut response = next.run(request).await;
    // rmcp acknowledges a session DELETE with 202; clients (the Python SDK
    // among them) expect 200 or 204 and warn otherwise. The session is gone
    // either way, so say so plainly.
    if method == Method::DELETE && response.status() == StatusCode::ACCEPTED {
        *response.status_mut() = StatusCode::NO_CONTENT;
    }

    let mut sessions = edge.sessions.lock().unwrap_or_else(|p| p.into_inner());
    match (&session, &method) {
        (None, &Method::POST) => {
            if let Some(new_id) = response
                .headers()
                .get("mcp-session-id")
                .and_then(|v| v.to_str().ok())
            {
                if sessions.len() >= 1024 {
                    sessions.retain(|_, b| b.last_seen.elapsed() < SESSION_BINDING_TTL);
                }
                sessions.insert(
                    new_id.to_string(),
                    Binding {
                        principal,
                        last_seen: Instant::now(),
                    },
                );
            }
        }
        (Some(id), &Method::DELETE) if response.status().is_success() => {
            sessions.remove(id);
        }
        _ => {}
    }
    response
}

//! The HTTP edge: everything between a TCP socket and rmcp (or the admin
//! API), in order.
//!
//! 1. Connections ([`conn`]): a cap on open connections (over it, a new
//!    socket is closed at once), a deadline for a request's headers, an idle
//!    timeout between requests, TCP_NODELAY, graceful shutdown. A request in
//!    progress is never cut by these timers: a tool call may wait minutes on
//!    a slow backend or an approval.
//! 2. Request shape ([`shape`], every route): two `Authorization` headers
//!    are refused (400), CORS preflights are answered for allowed origins
//!    and refused for others, unknown paths get a JSON 404, and every error
//!    leaves as JSON (rmcp's plain-text refusals are rewritten).
//! 3. `/mcp` ([`guard`]): `Origin` check (403 for a foreign browser origin),
//!    credentials in the URL refused, authentication of *every* request
//!    (401 with `WWW-Authenticate: Bearer`), session binding (an
//!    `Mcp-Session-Id` is usable only by the credential that opened it;
//!    [`sessions`] caps sessions per credential and expires idle ones), then
//!    the JSON-RPC body is read (size cap, time limit) and checked
//!    ([`shape::inspect_rpc`]) before rmcp parses it: malformed JSON,
//!    batches, `id: null`, ambiguous `tools/call` params get JSON-RPC errors.
//! 4. rmcp's Streamable HTTP service: `Host` allow-list, protocol handling
//!    for 2026-07-28 (stateless) and handshake revisions.
//!
//! Beside `/mcp`: the admin API (same Origin and URL-credential rules, JSON
//! bodies only), `/.well-known/jwks.json`, `/oauth/introspect` (callers
//! authenticate with their own gateway-issued credential), the RFC 9728
//! metadata, `/healthz`. Nothing reflects an unchecked `Host`: URLs come
//! from the configured public URL, else an allow-listed `Host`, else the
//! listening address.

mod approvals_api;
mod conn;
mod sessions;
mod shape;
pub mod ui;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rmcp::transport::streamable_http_server::session::local::{LocalSessionManager, SessionConfig};
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio::net::TcpListener;

use crate::Gateway;
use crate::http_reply::{self, Challenge};
use crate::mcp::McpFront;
use crate::pipeline::Transport;
use crate::pipeline::authenticate::{self, AuthError};

use sessions::Sessions;

/// Default cap on a request body: far above any sane tool call, far below
/// what could hurt the process.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// HTTP edge settings. The limits have defaults that are safe on an
/// ordinary host; tests set them small to open the windows on purpose.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// `Host` values accepted (rmcp's allow-list). Loopback names by default.
    pub allowed_hosts: Vec<String>,
    /// Browser origins accepted besides loopback ones, as `scheme://host[:port]`.
    pub allowed_origins: Vec<String>,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// The gateway's public base URL (`https://gw.example.com`), used in the
    /// protected resource metadata and `WWW-Authenticate`. When unset, an
    /// allow-listed `Host` is used, else the listening address.
    pub public_url: Option<String>,
    /// Open connections at most; a new socket over the cap is closed at
    /// once. 512 by default: every connection is a file descriptor, and the
    /// gateway needs descriptors of its own (the SQLite database, its WAL,
    /// backend connections, JWKS fetches) under the soft limit that many
    /// systems still set to 1024. Raise both together.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers, from its
    /// first byte (or from connecting, for a new connection). 10 s: a real
    /// client sends its headers in one go; slowloris clients trickle them.
    pub header_read_timeout: Duration,
    /// How long a keep-alive connection may sit with no request in progress.
    /// 60 s: long enough for a client to reuse it between calls, short
    /// enough that idle sockets cannot hold the connection cap. A request in
    /// progress (a slow tool call, an SSE stream) is never idle.
    pub idle_timeout: Duration,
    /// How long a client may take to send a request body once its headers
    /// arrived. 30 s: a 1 MiB body needs well under that on any real link.
    pub body_read_timeout: Duration,
    /// Open MCP sessions per credential (key, JWT identity or task token).
    /// A further `initialize` is refused (429, reason `session_limit`) until
    /// one is closed (HTTP DELETE) or expires. 64: far above what one agent
    /// process needs, small enough that one key cannot fill the memory.
    pub max_sessions_per_credential: usize,
    /// A session with no request in progress for this long is closed (rmcp
    /// session, binding and in-band task binding). 30 min by default.
    pub session_idle_timeout: Duration,
    /// At shutdown, how long requests in progress may run before their
    /// connections are closed anyway. 30 s: enough for a call to finish,
    /// bounded so an open SSE stream cannot hold the process forever.
    pub shutdown_grace: Duration,
    /// The bearer token a scraper must present for `/metrics` on this
    /// listener. `None`: no `/metrics` here (404); serve the metrics on a
    /// listener of their own instead ([`serve_metrics`]).
    pub metrics_token: Option<crate::secrets::SecretString>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            allowed_hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            allowed_origins: Vec::new(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            public_url: None,
            max_connections: 512,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(30),
            max_sessions_per_credential: 64,
            session_idle_timeout: Duration::from_secs(30 * 60),
            shutdown_grace: Duration::from_secs(30),
            metrics_token: None,
        }
    }
}

/// State shared by the edge's handlers.
#[derive(Debug)]
struct Edge {
    gw: Arc<Gateway>,
    allowed_hosts: Vec<String>,
    allowed_origins: Vec<String>,
    public_url: Option<String>,
    max_body_bytes: usize,
    body_read_timeout: Duration,
    /// `http://<listening address>`, set by [`serve_edge`]: the base URL
    /// when neither a public URL nor an allow-listed `Host` is known.
    listen_url: OnceLock<String>,
    sessions: Arc<Sessions>,
}

/// The HTTP edge over one gateway: its router and its session table. Serve
/// it with [`serve_edge`]; [`serve`] does both in one call. Clones share
/// the session table (keep one to watch the sessions of one being served).
#[derive(Debug, Clone)]
pub struct HttpEdge {
    edge: Arc<Edge>,
    router: Router,
    options: HttpOptions,
}

impl HttpEdge {
    /// Builds the edge's routes over `gw`.
    pub fn new(gw: Arc<Gateway>, options: &HttpOptions) -> Self {
        // rmcp's own idle timer would close a session while a tool call in
        // it waits on a slow backend (it counts only messages, not calls in
        // progress), so it is off: the edge expires idle sessions itself,
        // knowing which requests are still running.
        let mut session_config = SessionConfig::default();
        session_config.keep_alive = None;
        let mut manager = LocalSessionManager::default();
        manager.session_config = session_config;
        let manager = Arc::new(manager);
        let sessions = Arc::new(Sessions::new(
            gw.clone(),
            manager.clone(),
            options.max_sessions_per_credential,
            options.session_idle_timeout,
        ));
        let config = StreamableHttpServerConfig::default()
            .with_legacy_session_mode(true)
            .with_json_response(true)
            .with_allowed_hosts(options.allowed_hosts.clone())
            .with_max_request_body_bytes(options.max_body_bytes);
        let handler = McpFront::for_http(gw.clone());
        // One handler per session (or per stateless request): a session's
        // log level is its own.
        let mcp = StreamableHttpService::new(move || Ok(handler.fresh()), manager, config);
        let edge = Arc::new(Edge {
            gw,
            allowed_hosts: options.allowed_hosts.clone(),
            allowed_origins: options.allowed_origins.clone(),
            public_url: options.public_url.clone(),
            max_body_bytes: options.max_body_bytes,
            body_read_timeout: options.body_read_timeout,
            listen_url: OnceLock::new(),
            sessions,
        });
        let admin = crate::admin::router(edge.gw.clone())
            .merge(approvals_api::router(edge.gw.clone()))
            .layer(middleware::from_fn_with_state(
                edge.clone(),
                shape::admin_edge,
            ));
        let ui = ui::router(edge.gw.clone(), ui::Options::from_http(options));
        let router = Router::new()
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
            .merge(metrics_route(
                edge.gw.clone(),
                options.metrics_token.as_ref(),
            ))
            .merge(admin)
            .merge(ui)
            .fallback(shape::not_found)
            .layer(middleware::from_fn_with_state(edge.clone(), shape::shape));
        Self {
            edge,
            router,
            options: options.clone(),
        }
    }

    /// The routes, for callers that serve them their own way (tests).
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// MCP sessions open in rmcp right now.
    pub async fn open_sessions(&self) -> usize {
        self.edge.sessions.rmcp_sessions().await
    }

    /// Sessions the edge has bound to a credential right now.
    pub fn bound_sessions(&self) -> usize {
        self.edge.sessions.bound()
    }
}

/// `/metrics` behind the scrape token, or no route at all without one
/// (the path is then an ordinary 404).
fn metrics_route(gw: Arc<Gateway>, token: Option<&crate::secrets::SecretString>) -> Router {
    let Some(token) = token else {
        return Router::new();
    };
    let expected = token_digest(token.expose());
    Router::new().route(
        "/metrics",
        get(move |headers: http::HeaderMap| async move {
            let presented = bearer(&headers).map(|t| token_digest(&t));
            if presented != Some(expected) {
                tracing::info!(
                    reason = "credential_invalid",
                    "metrics scrape refused: missing or wrong token"
                );
                let r = refuse(
                    StatusCode::UNAUTHORIZED,
                    "credential_invalid",
                    "scraping /metrics needs `Authorization: Bearer <the metrics token>`",
                );
                return http_reply::with_challenge(
                    r,
                    Challenge {
                        realm: "tollgate-metrics",
                        resource_metadata: None,
                        error: Some("invalid_token"),
                    },
                );
            }
            metrics_response(&gw).await
        }),
    )
}

/// Tokens are compared by their SHA-256 digests: equal lengths, so the
/// comparison's timing says nothing about how much of a guess was right.
fn token_digest(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

async fn metrics_response(gw: &Gateway) -> Response {
    if let Some(upstreams) = gw.upstreams() {
        let all = upstreams.all();
        let health: Vec<(String, tollgate_connectors::mcp::Health)> = all
            .iter()
            .map(|(id, up)| (id.clone(), up.health()))
            .collect();
        gw.metrics().set_upstreams(
            health.iter().map(|(id, h)| (id.as_str(), h)),
            gw.catalog().withdrawn.len(),
        );
    }
    let body = gw.metrics().render(gw.store()).await;
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// Serves `/metrics` alone, without authentication, on a listener of its
/// own (`--metrics-listen`: an address only the monitoring network
/// reaches), with the main edge's connection limits, until `shutdown`.
pub async fn serve_metrics(
    listener: TcpListener,
    gw: Arc<Gateway>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = Router::new()
        .route(
            "/metrics",
            get(move || async move { metrics_response(&gw).await }),
        )
        .fallback(shape::not_found);
    let options = HttpOptions::default();
    let limits = conn::Limits {
        max_connections: 16,
        header_read_timeout: options.header_read_timeout,
        idle_timeout: options.idle_timeout,
        shutdown_grace: Duration::from_secs(1),
    };
    conn::serve(listener, router, limits, shutdown).await
}

/// The gateway's HTTP routes: `/mcp` (authenticated MCP), the admin API,
/// the well-known documents, introspection and `/healthz`.
pub fn router(gw: Arc<Gateway>, options: &HttpOptions) -> Router {
    HttpEdge::new(gw, options).router()
}

/// The task bound in band to HTTP session `session_id`, if any (for tests
/// and diagnostics: the binding lives in the gateway's state).
pub fn session_bound_task(gw: &Gateway, session_id: &str) -> Option<String> {
    gw.bound_tasks
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&format!("http:{session_id}"))
        .cloned()
}

/// RFC 9728 protected resource metadata, at the root and in the
/// path-inserted form for `/mcp`.
const RESOURCE_METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

impl Edge {
    /// The public base URL, never taken from an unchecked `Host`: the
    /// configured one, else the request's `Host` when the allow-list names
    /// it, else the listening address.
    fn base_url(&self, headers: &http::HeaderMap) -> String {
        if let Some(url) = &self.public_url {
            return url.trim_end_matches('/').to_string();
        }
        if let Some(host) = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| shape::allowed_host(h, &self.allowed_hosts))
        {
            return format!("http://{host}");
        }
        self.listen_url
            .get()
            .cloned()
            .unwrap_or_else(|| "http://localhost".to_string())
    }

    fn metadata_url(&self, headers: &http::HeaderMap) -> String {
        format!("{}{RESOURCE_METADATA_PATH}/mcp", self.base_url(headers))
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
/// backends. The caller authenticates (§2.1) with a gateway-issued backend
/// credential of its own that is active now, and learns only about tokens
/// minted for the same audience (connector): anything else, including
/// tokens the gateway did not mint, is `{"active": false}`.
async fn introspect(
    State(edge): State<Arc<Edge>>,
    headers: http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let challenge = |r: Response, error: Option<&str>| {
        http_reply::with_challenge(
            r,
            Challenge {
                realm: "tollgate-introspection",
                resource_metadata: None,
                error,
            },
        )
    };
    let Some(caller) = bearer(&headers) else {
        let r = refuse(
            StatusCode::UNAUTHORIZED,
            "credential_missing",
            "introspection needs `Authorization: Bearer <a gateway-issued credential of the caller>`",
        );
        return challenge(r, None);
    };
    let me = crate::broker::introspect(&edge.gw, &caller).await;
    if me.get("active") != Some(&serde_json::Value::Bool(true)) {
        tracing::info!(
            reason = "credential_invalid",
            "introspection refused: the caller's credential is not active"
        );
        let r = refuse(
            StatusCode::UNAUTHORIZED,
            "credential_invalid",
            "the caller's credential is not an active gateway-issued credential",
        );
        return challenge(r, Some("invalid_token"));
    }
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
    let mut answer = crate::broker::introspect(&edge.gw, &token).await;
    if answer.get("active") == Some(&serde_json::Value::Bool(true))
        && answer.get("aud") != me.get("aud")
    {
        // Another connector's token: its holder is none of this caller's
        // business, so it learns nothing, not even that the token is live.
        answer = serde_json::json!({ "active": false });
    }
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

/// Serves the gateway's routes on `listener` until `shutdown` resolves,
/// then lets requests in progress finish (for up to
/// [`HttpOptions::shutdown_grace`]).
pub async fn serve(
    listener: TcpListener,
    gw: Arc<Gateway>,
    options: &HttpOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_edge(listener, HttpEdge::new(gw, options), shutdown).await
}

/// Serves an [`HttpEdge`] on `listener` until `shutdown` resolves, then
/// lets requests in progress finish (for up to
/// [`HttpOptions::shutdown_grace`]).
pub async fn serve_edge(
    listener: TcpListener,
    edge: HttpEdge,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        let _ = edge.edge.listen_url.set(listen_url(addr));
    }
    // Links in approval notices and pending replies point at the review
    // page under the configured public URL, else the listening address.
    let review_base = edge
        .edge
        .public_url
        .clone()
        .or_else(|| edge.edge.listen_url.get().cloned());
    if let Some(base) = review_base {
        edge.edge.gw.approvals().set_base_url(&base);
    }
    let limits = conn::Limits {
        max_connections: edge.options.max_connections.max(1),
        header_read_timeout: edge.options.header_read_timeout,
        idle_timeout: edge.options.idle_timeout,
        shutdown_grace: edge.options.shutdown_grace,
    };
    conn::serve(listener, edge.router, limits, shutdown).await
}

fn listen_url(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => format!("http://{}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("http://[{}]:{}", a.ip(), a.port()),
    }
}

/// A JSON refusal: `{"error": message, "reason": reason}`.
fn refuse(status: StatusCode, reason: &str, message: &str) -> Response {
    http_reply::json_error(status, reason, message)
}

fn unauthorized(error: &AuthError, metadata_url: &str) -> Response {
    let kind = (!matches!(error, AuthError::Missing)).then_some("invalid_token");
    http_reply::unauthorized(
        mcp_challenge(metadata_url, kind),
        error.code(),
        &error.to_string(),
    )
}

/// The `/mcp` challenge: RFC 6750 with the RFC 9728 metadata URL, and what
/// was wrong with the token, if one was sent.
fn mcp_challenge<'a>(metadata_url: &'a str, error: Option<&'a str>) -> Challenge<'a> {
    Challenge {
        realm: "tollgate",
        resource_metadata: Some(metadata_url),
        error,
    }
}

fn with_challenge(r: Response, metadata_url: &str, error: Option<&str>) -> Response {
    http_reply::with_challenge(r, mcp_challenge(metadata_url, error))
}

/// The bearer credential of a request, if it has exactly one.
fn bearer(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::keys::bearer)
        .map(str::to_string)
}

/// The `/mcp` gate: Origin, URL credentials, authentication, session
/// binding, then the JSON-RPC body's shape; only then rmcp.
async fn guard(State(edge): State<Arc<Edge>>, request: Request, next: Next) -> Response {
    if let Some(r) = shape::origin_refusal(request.headers(), &edge.allowed_origins) {
        return r;
    }
    let metadata_url = edge.metadata_url(request.headers());
    if shape::credential_in_query(request.uri()) {
        let r = refuse(
            StatusCode::UNAUTHORIZED,
            "credential_in_url",
            "credentials must be sent in the Authorization header, never in the URL",
        );
        return with_challenge(r, &metadata_url, Some("invalid_request"));
    }
    let remote = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.to_string());
    let Some(presented) = bearer(request.headers()) else {
        authenticate::record_failure(&edge.gw, "", &AuthError::Missing, remote);
        return unauthorized(&AuthError::Missing, &metadata_url);
    };
    let who = match authenticate::authenticate_bearer(&edge.gw, &presented, Transport::Http).await {
        Ok(who) => who,
        Err(AuthError::Unavailable(e)) => {
            authenticate::record_failure(
                &edge.gw,
                &presented,
                &AuthError::Unavailable(None),
                remote,
            );
            tracing::error!(error = ?e, "cannot check credentials; refusing");
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "identity_unavailable",
                "credentials cannot be checked right now",
            );
        }
        Err(e) => {
            tracing::info!(reason = e.code(), "HTTP request refused");
            authenticate::record_failure(&edge.gw, &presented, &e, remote);
            return unauthorized(&e, &metadata_url);
        }
    };
    drop(presented);
    edge.sessions.start_reaper();
    let principal = who.principal().to_string();
    let session = request
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let session_use = match &session {
        Some(id) => match edge.sessions.enter(id, &principal) {
            Ok(u) => Some(u),
            Err(r) => return *r,
        },
        None => None,
    };
    let method = request.method().clone();
    let (mut request, rpc) = if method == Method::POST {
        match shape::read_rpc(&edge, request).await {
            Ok(checked) => checked,
            Err(r) => return *r,
        }
    } else {
        (request, None)
    };
    let rpc_method = rpc.as_ref().map(|r| r.method.as_str());
    if session.is_none()
        && let Some(rpc) = &rpc
        && rpc.method == "ping"
        && shape::is_stateless(rpc, request.headers())
    {
        // rmcp 3.11 answers `ping` with "method not found" in the stateless
        // revision; the README promises it in every revision served, and it
        // touches nothing, so the edge answers it (after authentication).
        return shape::pong(&rpc.id);
    }
    let reservation = if session.is_none() && rpc_method == Some("initialize") {
        match edge.sessions.reserve(&principal) {
            Ok(r) => Some(r),
            Err(r) => return *r,
        }
    } else {
        None
    };
    request.extensions_mut().insert(who);
    let mut response = next.run(request).await;
    // rmcp acknowledges a session DELETE with 202; clients (the Python SDK
    // among them) expect 200 or 204 and warn otherwise. The session is gone
    // either way, so say so plainly.
    if method == Method::DELETE && response.status() == StatusCode::ACCEPTED {
        *response.status_mut() = StatusCode::NO_CONTENT;
    }
    if let Some(reservation) = reservation
        && let Some(new_id) = response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
    {
        edge.sessions.open(reservation, new_id);
    }
    if let Some(id) = &session
        && method == Method::DELETE
        && response.status().is_success()
    {
        edge.sessions.forget(id);
    }
    // The session is in use until its response has been sent in full (an
    // SSE stream may run for minutes): only then does its idle clock start.
    match session_use {
        Some(u) => conn::hold_until_sent(response, u),
        None => response,
    }
}

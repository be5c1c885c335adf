//! OAuth test servers on port 0, for the credential broker: a backend that
//! verifies gateway-minted JWTs against a JWKS, a backend that asks an
//! RFC 7662 introspection endpoint about every bearer token, and a small
//! authorization server (RFC 6749 client credentials, RFC 8693 token
//! exchange, RFC 7009 revocation, RFC 7662 introspection) that records every
//! request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;

use crate::jwt::{SigningKey, now};

/// `grant_type` of RFC 8693 token exchange.
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 8693 token type of a JWT (the only accepted `subject_token_type`).
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
/// RFC 8693 token type of an access token (the `issued_token_type`).
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// A loopback HTTP client that ignores proxy settings from the environment.
fn http_client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn bind() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, format!("http://{addr}"))
}

/// The token of an `Authorization: Bearer <token>` header (scheme matched
/// case-insensitively), if that is what the request carries.
fn bearer(headers: &HeaderMap) -> Result<String, String> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values
        .next()
        .ok_or_else(|| "missing authorization header".to_string())?;
    if values.next().is_some() {
        return Err("multiple authorization headers".to_string());
    }
    let value = value
        .to_str()
        .map_err(|_| "authorization header is not ASCII".to_string())?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() => {
            Ok(token.trim().to_string())
        }
        _ => Err("authorization header is not a bearer token".to_string()),
    }
}

/// Every `Authorization` header value of a request, lossily as text.
fn authorization_values(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(AUTHORIZATION)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect()
}

/// Verifies an ES256 JWT against the JWKS at `jwks_url` (fetched now, so a
/// rotation is always seen): known `kid`, signature, `exp` (no leeway) and,
/// when `audience` is given, a required `aud` naming it. Returns the claims
/// or why the token was refused.
pub async fn verify_jwt(
    http: &reqwest::Client,
    jwks_url: &str,
    token: &str,
    audience: Option<&str>,
) -> Result<Value, String> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| format!("malformed token: {e}"))?;
    if header.alg != Algorithm::ES256 {
        return Err(format!("unexpected algorithm {:?}", header.alg));
    }
    let kid = header.kid.ok_or_else(|| "token has no kid".to_string())?;
    let set: JwkSet = http
        .get(jwks_url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| format!("jwks fetch failed: {e}"))?
        .json()
        .await
        .map_err(|e| format!("jwks unreadable: {e}"))?;
    let jwk = set.find(&kid).ok_or_else(|| format!("unknown kid {kid}"))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("unusable jwk {kid}: {e}"))?;
    let mut validation = Validation::new(Algorithm::ES256);
    validation.leeway = 0;
    match audience {
        Some(aud) => {
            validation.set_audience(&[aud]);
            validation.set_required_spec_claims(&["exp", "aud"]);
        }
        None => validation.validate_aud = false,
    }
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .map(|data| data.claims)
        .map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => "token expired".to_string(),
            ErrorKind::InvalidAudience => "wrong audience".to_string(),
            ErrorKind::InvalidSignature => "bad signature".to_string(),
            ErrorKind::MissingRequiredClaim(c) => format!("missing claim {c}"),
            _ => format!("invalid token: {e}"),
        })
}

/// Parses an `application/x-www-form-urlencoded` body.
fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

/// Encodes pairs as an `application/x-www-form-urlencoded` body.
fn encode_form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// Decodes one form-urlencoded component (`+` is a space).
fn form_decode(component: &str) -> String {
    form_urlencoded::parse(format!("v={component}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// 32 random bytes, base64url.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).unwrap();
    URL_SAFE_NO_PAD.encode(bytes)
}

// ---------------------------------------------------------------------------
// VerifyingBackend
// ---------------------------------------------------------------------------

/// A backend on port 0 that accepts only ES256 JWTs verified against a JWKS
/// for one audience. Any path, any method.
///
/// Each request fetches the JWKS anew (so key rotation is always seen),
/// checks the `kid`, the signature, `exp` (no leeway) and a required `aud`
/// naming the audience. Accepted: 200 JSON
/// `{"path", "method", "query", "sub", "tid", "scope", "body"}`. Refused:
/// 401 JSON `{"error": "<why>"}`.
#[derive(Debug, Clone)]
pub struct VerifyingBackend {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    state: Arc<VerifyState>,
}

#[derive(Debug)]
struct VerifyState {
    jwks_url: String,
    audience: String,
    http: reqwest::Client,
    accepted: Mutex<Vec<Value>>,
    rejected: Mutex<Vec<String>>,
    authorization: Mutex<Vec<String>>,
}

impl VerifyingBackend {
    /// Starts the backend, trusting the keys at `jwks_url` for `audience`.
    pub async fn start(jwks_url: &str, audience: &str) -> Self {
        let state = Arc::new(VerifyState {
            jwks_url: jwks_url.to_string(),
            audience: audience.to_string(),
            http: http_client(),
            accepted: Mutex::default(),
            rejected: Mutex::default(),
            authorization: Mutex::default(),
        });
        let app = Router::new()
            .fallback(verify_request)
            .with_state(state.clone());
        let (listener, url) = bind().await;
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, state }
    }

    /// Claims of every accepted token, oldest first.
    pub fn accepted(&self) -> Vec<Value> {
        self.state.accepted.lock().unwrap().clone()
    }

    /// Why each refused request was refused, oldest first.
    pub fn rejected(&self) -> Vec<String> {
        self.state.rejected.lock().unwrap().clone()
    }

    /// Every `Authorization` header value received, accepted or not (for
    /// leak checks).
    pub fn seen_authorization_headers(&self) -> Vec<String> {
        self.state.authorization.lock().unwrap().clone()
    }
}

async fn verify_request(State(s): State<Arc<VerifyState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    s.authorization
        .lock()
        .unwrap()
        .extend(authorization_values(&parts.headers));
    let verified = match bearer(&parts.headers) {
        Ok(token) => verify_jwt(&s.http, &s.jwks_url, &token, Some(&s.audience)).await,
        Err(why) => Err(why),
    };
    match verified {
        Ok(claims) => {
            s.accepted.lock().unwrap().push(claims.clone());
            Json(json!({
                "path": parts.uri.path(),
                "method": parts.method.as_str(),
                "query": parts.uri.query(),
                "sub": claims.get("sub"),
                "tid": claims.get("tid"),
                "scope": claims.get("scope"),
                "body": serde_json::from_slice::<Value>(&bytes).ok(),
            }))
            .into_response()
        }
        Err(why) => {
            s.rejected.lock().unwrap().push(why.clone());
            (StatusCode::UNAUTHORIZED, Json(json!({ "error": why }))).into_response()
        }
    }
}

// ---------------------------------------------------------------------------
// IntrospectingBackend
// ---------------------------------------------------------------------------

/// A backend on port 0 that POSTs each request's bearer token to an
/// RFC 7662 introspection endpoint (form `token=`, authenticated with that
/// same token as the backend's credential) and answers 200 JSON
/// `{"path", "method", "introspection"}` when it is `active`, 401 JSON
/// `{"error"}` otherwise. Any path, any method.
#[derive(Debug, Clone)]
pub struct IntrospectingBackend {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    state: Arc<IntrospectState>,
}

#[derive(Debug)]
struct IntrospectState {
    introspection_url: String,
    http: reqwest::Client,
    checks: Mutex<Vec<(String, bool)>>,
    authorization: Mutex<Vec<String>>,
}

impl IntrospectState {
    /// The introspection answer for `token`, asked with `caller` as the
    /// backend's own bearer credential (RFC 7662 §2.1); `{"active": false,
    /// "error"}` when the endpoint fails or answers something else than JSON.
    async fn introspect(&self, token: &str, caller: Option<&str>) -> Value {
        let (status, answer) = self.introspect_raw(token, caller).await;
        if !(200..300).contains(&status) {
            return json!({ "active": false, "error": format!("status {status}"), "answer": answer });
        }
        answer
    }

    /// The endpoint's status and JSON answer (`{"error"}` when it sent none).
    async fn introspect_raw(&self, token: &str, caller: Option<&str>) -> (u16, Value) {
        let mut request = self
            .http
            .post(&self.introspection_url)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(encode_form(&[("token", token)]));
        if let Some(c) = caller {
            request = request.bearer_auth(c);
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return (0, json!({ "error": format!("unreachable: {e}") })),
        };
        let status = response.status().as_u16();
        match response.json::<Value>().await {
            Ok(v) => (status, v),
            Err(e) => (status, json!({ "error": format!("not JSON: {e}") })),
        }
    }
}

impl IntrospectingBackend {
    /// Starts the backend, asking `introspection_url` about every token.
    pub async fn start(introspection_url: &str) -> Self {
        let state = Arc::new(IntrospectState {
            introspection_url: introspection_url.to_string(),
            http: http_client(),
            checks: Mutex::default(),
            authorization: Mutex::default(),
        });
        let app = Router::new()
            .fallback(introspect_request)
            .with_state(state.clone());
        let (listener, url) = bind().await;
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, state }
    }

    /// Every token checked and whether it was active, oldest first.
    pub fn checks(&self) -> Vec<(String, bool)> {
        self.state.checks.lock().unwrap().clone()
    }

    /// Every `Authorization` header value received (for leak checks).
    pub fn seen_authorization_headers(&self) -> Vec<String> {
        self.state.authorization.lock().unwrap().clone()
    }

    /// Asks the introspection endpoint about `token` now (not recorded in
    /// [`Self::checks`]), authenticated with `token` itself, as the backend
    /// does for the requests it receives. On a transport error, a non-2xx
    /// status or a non-JSON answer: `{"active": false, "error": "<why>"}`.
    pub async fn introspect(&self, token: &str) -> Value {
        self.state.introspect(token, Some(token)).await
    }

    /// Asks about `token` with `caller` as the backend's credential (none:
    /// unauthenticated): the endpoint's HTTP status and JSON answer.
    pub async fn introspect_as(&self, token: &str, caller: Option<&str>) -> (u16, Value) {
        self.state.introspect_raw(token, caller).await
    }
}

async fn introspect_request(State(s): State<Arc<IntrospectState>>, request: Request) -> Response {
    let (parts, _body) = request.into_parts();
    s.authorization
        .lock()
        .unwrap()
        .extend(authorization_values(&parts.headers));
    let token = match bearer(&parts.headers) {
        Ok(t) => t,
        Err(why) => {
            return (StatusCode::UNAUTHORIZED, Json(json!({ "error": why }))).into_response();
        }
    };
    // The backend authenticates to the introspection endpoint with the
    // credential it was given (RFC 7662 §2.1).
    let answer = s.introspect(&token, Some(&token)).await;
    let active = answer.get("active") == Some(&Value::Bool(true));
    s.checks.lock().unwrap().push((token, active));
    if active {
        Json(json!({
            "path": parts.uri.path(),
            "method": parts.method.as_str(),
            "introspection": answer,
        }))
        .into_response()
    } else {
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "error": "token not active", "introspection": answer })),
        )
            .into_response()
    }
}

// ---------------------------------------------------------------------------
// EchoingBackend
// ---------------------------------------------------------------------------

/// A careless backend on port 0 that echoes the credentials it receives:
/// `GET /things` answers 200 JSON `{"authorization", "token", "api_key"}`
/// (`token`: the `Authorization` value without its scheme); any other path
/// answers 400 with the text `rejected credential <authorization>`.
#[derive(Debug, Clone)]
pub struct EchoingBackend {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl EchoingBackend {
    /// Starts the backend.
    pub async fn start() -> Self {
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let app = Router::new()
            .fallback(echo_request)
            .with_state(seen.clone());
        let (listener, url) = bind().await;
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, seen }
    }

    /// Every `Authorization` value received, oldest first.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

async fn echo_request(State(seen): State<Arc<Mutex<Vec<String>>>>, request: Request) -> Response {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let authorization = header("authorization");
    let api_key = header("x-api-key");
    seen.lock().unwrap().push(authorization.clone());
    if request.uri().path().ends_with("/things") {
        let token = authorization
            .split_once(' ')
            .map(|(_, t)| t.to_string())
            .unwrap_or_default();
        Json(json!({ "authorization": authorization, "token": token, "api_key": api_key }))
            .into_response()
    } else {
        (
            StatusCode::BAD_REQUEST,
            format!("rejected credential {authorization}"),
        )
            .into_response()
    }
}

// ---------------------------------------------------------------------------
// OAuthServer
// ---------------------------------------------------------------------------

/// One request to the token endpoint, as received and as answered.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    /// `grant_type`.
    pub grant_type: Option<String>,
    /// The authenticated client, or the client id claimed when
    /// authentication failed.
    pub client_id: Option<String>,
    /// `client_secret_basic` or `client_secret_post` when the client
    /// authenticated.
    pub client_auth: Option<String>,
    /// `scope`.
    pub scope: Option<String>,
    /// Every `audience` parameter (RFC 8693 allows several).
    pub audience: Vec<String>,
    /// Every `resource` parameter (RFC 8707 / RFC 8693 allow several).
    pub resource: Vec<String>,
    /// `subject_token_type`.
    pub subject_token_type: Option<String>,
    /// Claims of the subject token: verified when the server was given a
    /// subject JWKS, merely decoded otherwise. `None` when absent or refused.
    pub subject_claims: Option<Value>,
    /// `actor_token_type`.
    pub actor_token_type: Option<String>,
    /// Claims of the actor token, as for the subject.
    pub actor_claims: Option<Value>,
    /// Every form parameter as received (secrets and tokens included).
    pub params: Vec<(String, String)>,
    /// The HTTP status answered.
    pub status: u16,
    /// OAuth `error` code answered, if any.
    pub error: Option<String>,
    /// `error_description` answered, if any.
    pub error_description: Option<String>,
    /// The access token issued, if any.
    pub issued_token: Option<String>,
}

/// One accepted RFC 7009 revocation request.
#[derive(Debug, Clone)]
pub struct RevocationRequest {
    /// The authenticated client.
    pub client_id: String,
    /// The token to revoke.
    pub token: String,
    /// `token_type_hint`, if given.
    pub token_type_hint: Option<String>,
}

/// What the server knows of a token it issued.
#[derive(Debug, Clone)]
struct Issued {
    client_id: String,
    sub: String,
    scope: Option<String>,
    aud: Option<Value>,
    act: Option<Value>,
    iat: i64,
    exp: i64,
    revoked: bool,
}

/// A small authorization server on port 0.
///
/// * `POST /token` (form): client authentication by HTTP Basic
///   (`client_secret_basic`) or form `client_id` + `client_secret`
///   (`client_secret_post`), not both; wrong or missing credentials: 401
///   `{"error": "invalid_client"}`. Grants:
///   * `client_credentials`: an opaque random token, `sub` = client id,
///     `scope` = the requested scope (omitted from the answer if none was
///     requested), `expires_in` 300 (see [`OAuthServer::set_expires_in`]).
///   * RFC 8693 token exchange: `subject_token_type` must be
///     [`JWT_TOKEN_TYPE`]; an actor token needs `actor_token_type`
///     ([`JWT_TOKEN_TYPE`] or [`ACCESS_TOKEN_TYPE`]). With a subject JWKS,
///     both tokens must verify against it (ES256, `exp`; `aud` not checked,
///     only recorded); without, they are merely decoded. A refused token: 400
///     `{"error": "invalid_grant"}`. Issues an ES256 JWT signed by this
///     server's own key (see [`OAuthServer::jwks_url`]) with `iss` = the
///     server URL, `sub` = subject's `sub`, `aud` = the `audience`
///     parameter(s) or else the `resource` parameter(s) (a string when
///     single), `scope` = requested scope or else the subject's `scope`,
///     `act` = `{"sub": actor's sub}`, `client_id`, `iat`, `exp`, `jti`.
///   * other grants: 400 `unsupported_grant_type`.
/// * `POST /revoke` (RFC 7009, form `token`, client authentication): 200,
///   also for unknown tokens; a token issued to another client: 400
///   `unauthorized_client`.
/// * `POST /introspect` (RFC 7662, form `token`): `{"active": false}` or
///   `{"active": true, "sub", "scope", "client_id", "aud", "act", "iss",
///   "iat", "exp", "token_type"}`. No client authentication required.
/// * `GET /jwks.json`: this server's public key.
/// * `GET /.well-known/oauth-authorization-server`: RFC 8414 metadata.
#[derive(Debug, Clone)]
pub struct OAuthServer {
    /// `http://127.0.0.1:PORT` (also the `iss` of exchanged tokens).
    pub url: String,
    state: Arc<OAuthState>,
}

#[derive(Debug)]
struct OAuthState {
    url: String,
    clients: HashMap<String, String>,
    subject_jwks_url: Option<String>,
    key: SigningKey,
    http: reqwest::Client,
    expires_in: AtomicU64,
    down: AtomicBool,
    /// While `false`, token requests are held open (see
    /// [`OAuthServer::hold_tokens`]).
    open: tokio::sync::watch::Sender<bool>,
    held: AtomicU64,
    tokens: Mutex<HashMap<String, Issued>>,
    requests: Mutex<Vec<TokenRequest>>,
    revocations: Mutex<Vec<RevocationRequest>>,
}

impl OAuthServer {
    /// Starts the server with `(client_id, client_secret)` pairs; subject and
    /// actor tokens of token exchange are verified against
    /// `subject_jwks_url` when given.
    pub async fn start(clients: &[(&str, &str)], subject_jwks_url: Option<String>) -> Self {
        let (listener, url) = bind().await;
        let state = Arc::new(OAuthState {
            url: url.clone(),
            clients: clients
                .iter()
                .map(|(id, secret)| (id.to_string(), secret.to_string()))
                .collect(),
            subject_jwks_url,
            key: SigningKey::generate("oauth-server-1"),
            http: http_client(),
            expires_in: AtomicU64::new(300),
            down: AtomicBool::new(false),
            open: tokio::sync::watch::Sender::new(true),
            held: AtomicU64::new(0),
            tokens: Mutex::default(),
            requests: Mutex::default(),
            revocations: Mutex::default(),
        });
        let app = Router::new()
            .route("/token", post(token_endpoint))
            .route("/revoke", post(revoke_endpoint))
            .route("/introspect", post(introspect_endpoint))
            .route("/jwks.json", get(jwks_endpoint))
            .route(
                "/.well-known/oauth-authorization-server",
                get(metadata_endpoint),
            )
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, state }
    }

    /// `{url}/token`.
    pub fn token_url(&self) -> String {
        format!("{}/token", self.url)
    }

    /// `{url}/revoke`.
    pub fn revocation_url(&self) -> String {
        format!("{}/revoke", self.url)
    }

    /// `{url}/introspect`.
    pub fn introspection_url(&self) -> String {
        format!("{}/introspect", self.url)
    }

    /// `{url}/jwks.json`: the key that signs exchanged tokens.
    pub fn jwks_url(&self) -> String {
        format!("{}/jwks.json", self.url)
    }

    /// Every token endpoint request (failed ones too), oldest first.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Tokens of every accepted revocation request, oldest first (unknown
    /// tokens included, as RFC 7009 answers 200 for them).
    pub fn revoked(&self) -> Vec<String> {
        self.revocations().into_iter().map(|r| r.token).collect()
    }

    /// Every accepted revocation request, oldest first.
    pub fn revocations(&self) -> Vec<RevocationRequest> {
        self.state.revocations.lock().unwrap().clone()
    }

    /// Whether `token` was issued here, is unexpired and not revoked.
    pub fn is_active(&self, token: &str) -> bool {
        self.state.active(token).is_some()
    }

    /// Lifetime of tokens issued from now on, in seconds (default 300).
    pub fn set_expires_in(&self, seconds: u64) {
        self.state.expires_in.store(seconds, Ordering::SeqCst);
    }

    /// From now on, token requests are held open (nothing issued) until
    /// [`OAuthServer::release_tokens`].
    pub fn hold_tokens(&self) {
        self.state.open.send_replace(false);
    }

    /// Lets every held token request (and later ones) through.
    pub fn release_tokens(&self) {
        self.state.open.send_replace(true);
    }

    /// Token requests held open right now.
    pub fn held(&self) -> u64 {
        self.state.held.load(Ordering::SeqCst)
    }

    /// The expiry (`exp`, seconds since the epoch) of a token issued here.
    pub fn expiry_of(&self, token: &str) -> Option<i64> {
        self.state.tokens.lock().unwrap().get(token).map(|t| t.exp)
    }

    /// While `down`, the token endpoint answers 503
    /// `{"error": "temporarily_unavailable"}` (requests still recorded).
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }
}

/// An OAuth error answer.
#[derive(Debug)]
struct OAuthError {
    status: StatusCode,
    code: &'static str,
    description: String,
}

fn oauth_error(
    status: StatusCode,
    code: &'static str,
    description: impl Into<String>,
) -> OAuthError {
    OAuthError {
        status,
        code,
        description: description.into(),
    }
}

fn invalid_request(description: impl Into<String>) -> OAuthError {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_request", description)
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "error": self.code, "error_description": self.description }));
        let mut response = (self.status, [(CACHE_CONTROL, "no-store")], body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Basic realm=\"tollgate-test\""),
            );
        }
        response
    }
}

/// The one value of a parameter that must not repeat (RFC 6749 3.2).
fn single(params: &[(String, String)], name: &str) -> Result<Option<String>, OAuthError> {
    let mut values = params.iter().filter(|(k, _)| k == name).map(|(_, v)| v);
    let first = values.next().cloned();
    if values.next().is_some() {
        return Err(invalid_request(format!("{name} repeated")));
    }
    Ok(first)
}

fn all(params: &[(String, String)], name: &str) -> Vec<String> {
    params
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .collect()
}

impl OAuthState {
    /// Authenticates the client; `Ok((client_id, method))`, or the client id
    /// claimed (if any) and the error.
    fn authenticate(
        &self,
        headers: &HeaderMap,
        params: &[(String, String)],
    ) -> Result<(String, &'static str), (Option<String>, OAuthError)> {
        let bad = |claimed: Option<String>, why: &str| {
            (
                claimed,
                oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", why),
            )
        };
        let form_id = single(params, "client_id").map_err(|e| (None, e))?;
        let form_secret = single(params, "client_secret").map_err(|e| (form_id.clone(), e))?;
        let basic = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
            .map(|(_, creds)| creds.trim().to_string());
        let (id, secret, method) = match (basic, form_secret) {
            (Some(_), Some(_)) => {
                return Err((
                    form_id,
                    invalid_request("more than one client authentication method"),
                ));
            }
            (Some(creds), None) => {
                let decoded = STANDARD
                    .decode(creds)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok());
                let Some((id, secret)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
                    return Err(bad(form_id, "malformed basic credentials"));
                };
                let id = form_decode(id);
                if form_id.as_ref().is_some_and(|f| f != &id) {
                    return Err((
                        Some(id),
                        invalid_request("client_id differs from basic credentials"),
                    ));
                }
                (id, form_decode(secret), "client_secret_basic")
            }
            (None, Some(secret)) => match form_id {
                Some(id) => (id, secret, "client_secret_post"),
                None => return Err(bad(None, "client_secret without client_id")),
            },
            (None, None) => return Err(bad(form_id, "no client authentication")),
        };
        match self.clients.get(&id) {
            Some(expected) if *expected == secret => Ok((id, method)),
            _ => Err(bad(Some(id), "unknown client or wrong secret")),
        }
    }

    /// Verifies (with a subject JWKS) or decodes (without) a JWT.
    async fn check_jwt(&self, token: &str) -> Result<Value, String> {
        match &self.subject_jwks_url {
            Some(url) => verify_jwt(&self.http, url, token, None).await,
            None => jsonwebtoken::dangerous::insecure_decode_claims::<Value>(token)
                .map_err(|e| format!("not a JWT: {e}")),
        }
    }

    fn active(&self, token: &str) -> Option<Issued> {
        self.tokens
            .lock()
            .unwrap()
            .get(token)
            .filter(|t| !t.revoked && t.exp > now())
            .cloned()
    }

    fn store(&self, token: &str, issued: Issued) {
        self.tokens
            .lock()
            .unwrap()
            .insert(token.to_string(), issued);
    }

    async fn token(
        &self,
        headers: &HeaderMap,
        params: &[(String, String)],
        rec: &mut TokenRequest,
    ) -> Result<Value, OAuthError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "token endpoint is down",
            ));
        }
        if !is_form(headers) {
            return Err(invalid_request(
                "content-type must be application/x-www-form-urlencoded",
            ));
        }
        let client_id = match self.authenticate(headers, params) {
            Ok((id, method)) => {
                rec.client_id = Some(id.clone());
                rec.client_auth = Some(method.to_string());
                id
            }
            Err((claimed, e)) => {
                rec.client_id = claimed;
                return Err(e);
            }
        };
        let grant_type = single(params, "grant_type")?;
        let scope = single(params, "scope")?;
        let expires_in = self.expires_in.load(Ordering::SeqCst);
        let iat = now();
        let exp = iat + i64::try_from(expires_in).unwrap();
        let aud = match (rec.audience.as_slice(), rec.resource.as_slice()) {
            ([], []) => None,
            ([one], _) | ([], [one]) => Some(json!(one)),
            ([], many) | (many, _) => Some(json!(many)),
        };
        match grant_type.as_deref() {
            Some("client_credentials") => {
                let token = random_token();
                self.store(
                    &token,
                    Issued {
                        client_id: client_id.clone(),
                        sub: client_id,
                        scope: scope.clone(),
                        aud,
                        act: None,
                        iat,
                        exp,
                        revoked: false,
                    },
                );
                rec.issued_token = Some(token.clone());
                let mut answer = json!({
                    "access_token": token, "token_type": "Bearer", "expires_in": expires_in,
                });
                if let Some(scope) = scope {
                    answer["scope"] = json!(scope);
                }
                Ok(answer)
            }
            Some(TOKEN_EXCHANGE) => {
                let subject_token = single(params, "subject_token")?
                    .ok_or_else(|| invalid_request("missing subject_token"))?;
                let subject_type = single(params, "subject_token_type")?
                    .ok_or_else(|| invalid_request("missing subject_token_type"))?;
                if subject_type != JWT_TOKEN_TYPE {
                    return Err(invalid_request(format!(
                        "unsupported subject_token_type {subject_type}"
                    )));
                }
                let invalid_grant =
                    |why: String| oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", why);
                let subject = self
                    .check_jwt(&subject_token)
                    .await
                    .map_err(|why| invalid_grant(format!("subject_token: {why}")))?;
                rec.subject_claims = Some(subject.clone());
                let actor_token = single(params, "actor_token")?;
                let actor_type = single(params, "actor_token_type")?;
                let actor = match (actor_token, actor_type) {
                    (None, None) => None,
                    (Some(_), None) => return Err(invalid_request("actor_token_type missing")),
                    (None, Some(_)) => return Err(invalid_request("actor_token missing")),
                    (Some(token), Some(kind)) => {
                        if kind != JWT_TOKEN_TYPE && kind != ACCESS_TOKEN_TYPE {
                            return Err(invalid_request(format!(
                                "unsupported actor_token_type {kind}"
                            )));
                        }
                        let claims = self
                            .check_jwt(&token)
                            .await
                            .map_err(|why| invalid_grant(format!("actor_token: {why}")))?;
                        rec.actor_claims = Some(claims.clone());
                        Some(claims)
                    }
                };
                let sub = subject
                    .get("sub")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid_grant("subject_token has no sub".to_string()))?
                    .to_string();
                let act = match &actor {
                    Some(actor) => Some(json!({
                        "sub": actor
                            .get("sub")
                            .and_then(Value::as_str)
                            .ok_or_else(|| invalid_grant("actor_token has no sub".to_string()))?,
                    })),
                    None => None,
                };
                let scope = scope.or_else(|| {
                    subject
                        .get("scope")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                });
                let mut claims = Map::new();
                claims.insert("iss".into(), json!(self.url));
                claims.insert("sub".into(), json!(sub));
                if let Some(aud) = &aud {
                    claims.insert("aud".into(), aud.clone());
                }
                if let Some(scope) = &scope {
                    claims.insert("scope".into(), json!(scope));
                }
                if let Some(act) = &act {
                    claims.insert("act".into(), act.clone());
                }
                claims.insert("client_id".into(), json!(client_id));
                claims.insert("iat".into(), json!(iat));
                claims.insert("exp".into(), json!(exp));
                claims.insert("jti".into(), json!(random_token()));
                let token = self.key.sign(&Value::Object(claims));
                self.store(
                    &token,
                    Issued {
                        client_id,
                        sub,
                        scope: scope.clone(),
                        aud,
                        act,
                        iat,
                        exp,
                        revoked: false,
                    },
                );
                rec.issued_token = Some(token.clone());
                let mut answer = json!({
                    "access_token": token,
                    "issued_token_type": ACCESS_TOKEN_TYPE,
                    "token_type": "Bearer",
                    "expires_in": expires_in,
                });
                if let Some(scope) = scope {
                    answer["scope"] = json!(scope);
                }
                Ok(answer)
            }
            Some(other) => Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                format!("unsupported grant_type {other}"),
            )),
            None => Err(invalid_request("missing grant_type")),
        }
    }

    fn revoke(&self, headers: &HeaderMap, params: &[(String, String)]) -> Result<(), OAuthError> {
        if !is_form(headers) {
            return Err(invalid_request(
                "content-type must be application/x-www-form-urlencoded",
            ));
        }
        let (client_id, _) = self.authenticate(headers, params).map_err(|(_, e)| e)?;
        let token = single(params, "token")?.ok_or_else(|| invalid_request("missing token"))?;
        let token_type_hint = single(params, "token_type_hint")?;
        if let Some(issued) = self.tokens.lock().unwrap().get_mut(&token) {
            if issued.client_id != client_id {
                return Err(oauth_error(
                    StatusCode::BAD_REQUEST,
                    "unauthorized_client",
                    "token was issued to another client",
                ));
            }
            issued.revoked = true;
        }
        self.revocations.lock().unwrap().push(RevocationRequest {
            client_id,
            token,
            token_type_hint,
        });
        Ok(())
    }
}

async fn token_endpoint(
    State(s): State<Arc<OAuthState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut open = s.open.subscribe();
    if !*open.borrow() {
        s.held.fetch_add(1, Ordering::SeqCst);
        let _ = open.wait_for(|o| *o).await;
        s.held.fetch_sub(1, Ordering::SeqCst);
    }
    let params = parse_form(&body);
    let mut rec = TokenRequest {
        grant_type: params
            .iter()
            .find(|(k, _)| k == "grant_type")
            .map(|(_, v)| v.clone()),
        scope: params
            .iter()
            .find(|(k, _)| k == "scope")
            .map(|(_, v)| v.clone()),
        audience: all(&params, "audience"),
        resource: all(&params, "resource"),
        subject_token_type: params
            .iter()
            .find(|(k, _)| k == "subject_token_type")
            .map(|(_, v)| v.clone()),
        actor_token_type: params
            .iter()
            .find(|(k, _)| k == "actor_token_type")
            .map(|(_, v)| v.clone()),
        params: params.clone(),
        ..TokenRequest::default()
    };
    let response = match s.token(&headers, &params, &mut rec).await {
        Ok(answer) => {
            rec.status = StatusCode::OK.as_u16();
            ([(CACHE_CONTROL, "no-store")], Json(answer)).into_response()
        }
        Err(e) => {
            rec.status = e.status.as_u16();
            rec.error = Some(e.code.to_string());
            rec.error_description = Some(e.description.clone());
            e.into_response()
        }
    };
    s.requests.lock().unwrap().push(rec);
    response
}

async fn revoke_endpoint(
    State(s): State<Arc<OAuthState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match s.revoke(&headers, &parse_form(&body)) {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn introspect_endpoint(State(s): State<Arc<OAuthState>>, body: Bytes) -> Response {
    let params = parse_form(&body);
    let token = params
        .iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    let answer = match s.active(token) {
        Some(t) => json!({
            "active": true,
            "sub": t.sub,
            "scope": t.scope,
            "client_id": t.client_id,
            "aud": t.aud,
            "act": t.act,
            "iss": s.url,
            "iat": t.iat,
            "exp": t.exp,
            "token_type": "Bearer",
        }),
        None => json!({ "active": false }),
    };
    Json(answer).into_response()
}

async fn jwks_endpoint(State(s): State<Arc<OAuthState>>) -> Json<JwkSet> {
    Json(JwkSet {
        keys: vec![s.key.jwk.clone()],
    })
}

async fn metadata_endpoint(State(s): State<Arc<OAuthState>>) -> Json<Value> {
    let u = &s.url;
    Json(json!({
        "issuer": u,
        "token_endpoint": format!("{u}/token"),
        "revocation_endpoint": format!("{u}/revoke"),
        "introspection_endpoint": format!("{u}/introspect"),
        "jwks_uri": format!("{u}/jwks.json"),
        "grant_types_supported": ["client_credentials", TOKEN_EXCHANGE],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::{JwksServer, claims};

    fn client() -> reqwest::Client {
        http_client()
    }

    async fn post_form(
        url: &str,
        basic: Option<(&str, &str)>,
        pairs: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut r = client()
            .post(url)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(encode_form(pairs));
        if let Some((id, secret)) = basic {
            r = r.basic_auth(id, Some(secret));
        }
        let response = r.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn client_credentials_introspection_and_revocation() {
        let server = OAuthServer::start(&[("gw", "s3cret")], None).await;

        let (status, body) = post_form(
            &server.token_url(),
            Some(("gw", "s3cret")),
            &[
                ("grant_type", "client_credentials"),
                ("scope", "read write"),
            ],
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 300);
        assert_eq!(body["scope"], "read write");
        let token = body["access_token"].as_str().unwrap().to_string();
        assert!(server.is_active(&token));

        // client_secret_post works too; wrong secrets do not.
        let (status, _) = post_form(
            &server.token_url(),
            None,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "gw"),
                ("client_secret", "s3cret"),
            ],
        )
        .await;
        assert_eq!(status, 200);
        let (status, body) = post_form(
            &server.token_url(),
            Some(("gw", "nope")),
            &[("grant_type", "client_credentials")],
        )
        .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client"))
        );

        let requests = server.requests();
        assert_eq!(requests.len(), 3);
        assert_eq!(
            requests[0].client_auth.as_deref(),
            Some("client_secret_basic")
        );
        assert_eq!(
            requests[1].client_auth.as_deref(),
            Some("client_secret_post")
        );
        assert_eq!(requests[0].issued_token.as_deref(), Some(token.as_str()));
        assert_eq!(requests[2].error.as_deref(), Some("invalid_client"));

        // A backend that introspects against the server.
        let backend = IntrospectingBackend::start(&server.introspection_url()).await;
        let ok = client()
            .get(format!("{}/x", backend.url))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
        assert_eq!(backend.introspect(&token).await["sub"], "gw");

        let (status, _) = post_form(
            &server.revocation_url(),
            Some(("gw", "s3cret")),
            &[("token", &token)],
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(server.revoked(), vec![token.clone()]);
        assert!(!server.is_active(&token));
        assert_eq!(backend.introspect(&token).await["active"], false);
        let refused = client()
            .get(format!("{}/x", backend.url))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 401);
        assert_eq!(
            backend.checks(),
            vec![(token.clone(), true), (token, false)]
        );
    }

    #[tokio::test]
    async fn token_exchange_with_verified_subject_and_actor() {
        let gateway_key = SigningKey::generate("gw-1");
        let jwks = JwksServer::start(&[&gateway_key]).await;
        let server = OAuthServer::start(&[("gw", "s3cret")], Some(jwks.url.clone())).await;

        let mut subject = claims("tollgate", "inventory", "agent-7");
        subject["tid"] = json!("task-1");
        subject["scope"] = json!("get_item");
        let subject = gateway_key.sign(&subject);
        let actor = gateway_key.sign(&claims("tollgate", "tollgate", "tollgate-gateway"));

        let (status, body) = post_form(
            &server.token_url(),
            Some(("gw", "s3cret")),
            &[
                ("grant_type", TOKEN_EXCHANGE),
                ("subject_token", &subject),
                ("subject_token_type", JWT_TOKEN_TYPE),
                ("actor_token", &actor),
                ("actor_token_type", JWT_TOKEN_TYPE),
                ("audience", "https://downstream.example"),
                ("scope", "items:read"),
            ],
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["issued_token_type"], ACCESS_TOKEN_TYPE);
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["scope"], "items:read");
        let exchanged = body["access_token"].as_str().unwrap().to_string();

        let rec = server.requests().pop().unwrap();
        assert_eq!(rec.subject_claims.as_ref().unwrap()["tid"], "task-1");
        assert_eq!(
            rec.actor_claims.as_ref().unwrap()["sub"],
            "tollgate-gateway"
        );
        assert_eq!(rec.audience, vec!["https://downstream.example".to_string()]);

        // A downstream backend verifies the exchanged token.
        let downstream =
            VerifyingBackend::start(&server.jwks_url(), "https://downstream.example").await;
        let ok = client()
            .post(format!("{}/items/1?v=1", downstream.url))
            .bearer_auth(&exchanged)
            .json(&json!({ "a": 1 }))
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
        let echoed: Value = ok.json().await.unwrap();
        assert_eq!(echoed["path"], "/items/1");
        assert_eq!(echoed["method"], "POST");
        assert_eq!(echoed["sub"], "agent-7");
        assert_eq!(echoed["scope"], "items:read");
        assert_eq!(echoed["body"]["a"], 1);
        let accepted = downstream.accepted();
        assert_eq!(accepted[0]["act"]["sub"], "tollgate-gateway");
        assert_eq!(accepted[0]["iss"], server.url);

        // A subject token from an untrusted key is refused.
        let stranger = SigningKey::generate("gw-1");
        let forged = stranger.sign(&claims("tollgate", "inventory", "agent-7"));
        let (status, body) = post_form(
            &server.token_url(),
            Some(("gw", "s3cret")),
            &[
                ("grant_type", TOKEN_EXCHANGE),
                ("subject_token", &forged),
                ("subject_token_type", JWT_TOKEN_TYPE),
                ("audience", "https://downstream.example"),
            ],
        )
        .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant"))
        );
        assert!(server.requests().pop().unwrap().subject_claims.is_none());
    }

    #[tokio::test]
    async fn edge_cases() {
        let server = OAuthServer::start(&[("a b", "p:&=+"), ("other", "x")], None).await;
        // Basic credentials are form-encoded before base64 (RFC 6749 2.3.1).
        let basic = STANDARD.encode(format!(
            "{}:{}",
            encode_form(&[("", "a b")]).trim_start_matches('='),
            encode_form(&[("", "p:&=+")]).trim_start_matches('=')
        ));
        let response = client()
            .post(server.token_url())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(AUTHORIZATION, format!("Basic {basic}"))
            .body(encode_form(&[("grant_type", "client_credentials")]))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let token: Value = response.json().await.unwrap();
        let token = token["access_token"].as_str().unwrap().to_string();
        assert_eq!(server.requests()[0].client_id.as_deref(), Some("a b"));

        // Another client may not revoke it.
        let (status, body) = post_form(
            &server.revocation_url(),
            Some(("other", "x")),
            &[("token", &token)],
        )
        .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("unauthorized_client"))
        );
        assert!(server.is_active(&token));

        // Without a subject JWKS the subject is decoded, not verified;
        // `resource` becomes the audience when no `audience` is given.
        let key = SigningKey::generate("any");
        let subject = key.sign(&claims("x", "y", "agent-9"));
        let (status, body) = post_form(
            &server.token_url(),
            Some(("other", "x")),
            &[
                ("grant_type", TOKEN_EXCHANGE),
                ("subject_token", &subject),
                ("subject_token_type", JWT_TOKEN_TYPE),
                ("resource", "https://r.example/api"),
            ],
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let issued = body["access_token"].as_str().unwrap();
        let claims = jsonwebtoken::dangerous::insecure_decode_claims::<Value>(issued).unwrap();
        assert_eq!(claims["aud"], "https://r.example/api");
        assert_eq!(claims["sub"], "agent-9");
        assert!(claims.get("act").is_none());

        let (status, body) = post_form(
            &server.token_url(),
            Some(("other", "x")),
            &[
                ("grant_type", TOKEN_EXCHANGE),
                ("subject_token", &subject),
                ("subject_token_type", ACCESS_TOKEN_TYPE),
            ],
        )
        .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_request"))
        );

        server.set_down(true);
        let (status, _) = post_form(
            &server.token_url(),
            Some(("other", "x")),
            &[("grant_type", "client_credentials")],
        )
        .await;
        assert_eq!(status, 503);
        server.set_down(false);
        server.set_expires_in(0);
        let (_, body) = post_form(
            &server.token_url(),
            Some(("other", "x")),
            &[("grant_type", "client_credentials")],
        )
        .await;
        assert!(!server.is_active(body["access_token"].as_str().unwrap()));
        assert_eq!(server.requests().len(), 5);
    }

    #[tokio::test]
    async fn verifying_backend_refusals() {
        let key = SigningKey::generate("k1");
        let jwks = JwksServer::start(&[&key]).await;
        let backend = VerifyingBackend::start(&jwks.url, "inventory").await;
        let call = |auth: Option<String>| {
            let url = format!("{}/anything", backend.url);
            async move {
                let mut r = client().get(url);
                if let Some(a) = auth {
                    r = r.header(AUTHORIZATION, a);
                }
                let response = r.send().await.unwrap();
                let status = response.status().as_u16();
                (status, response.json::<Value>().await.unwrap())
            }
        };

        let good = key.sign(&claims("tollgate", "inventory", "agent"));
        assert_eq!(call(Some(format!("Bearer {good}"))).await.0, 200);

        let (status, body) = call(None).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("missing authorization header"))
        );
        let wrong_aud = key.sign(&claims("tollgate", "billing", "agent"));
        assert_eq!(call(Some(format!("Bearer {wrong_aud}"))).await.0, 401);
        let mut old = claims("tollgate", "inventory", "agent");
        old["exp"] = json!(now() - 10);
        let expired = key.sign(&old);
        assert_eq!(call(Some(format!("Bearer {expired}"))).await.0, 401);
        let unknown = key.sign_as("k2", &claims("tollgate", "inventory", "agent"));
        assert_eq!(call(Some(format!("Bearer {unknown}"))).await.0, 401);

        assert_eq!(backend.accepted().len(), 1);
        assert_eq!(
            backend.rejected(),
            vec![
                "missing authorization header".to_string(),
                "wrong audience".to_string(),
                "token expired".to_string(),
                "unknown kid k2".to_string(),
            ]
        );
        assert_eq!(backend.seen_authorization_headers().len(), 4);
        assert_eq!(
            backend.seen_authorization_headers()[0],
            format!("Bearer {good}")
        );
    }
}

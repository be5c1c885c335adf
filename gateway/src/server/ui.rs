//! The approvers' review page under `/ui`: server-rendered HTML over the
//! transport-free approvals service ([`crate::approvals`]), which keeps
//! every rule about who may decide what. This module owns only what a
//! browser adds to that:
//!
//! - **Sign-in.** An approver signs in with their `tgp_…` credential,
//!   posted from a form (never in a URL). The session is a cookie the
//!   gateway signs with a key derived from its digest key; it carries the
//!   credential's id (not the credential) and its own expiry (8 h). Every
//!   request checks the signature, the expiry by the gateway clock, that
//!   the credential is still live and that its approver is still declared,
//!   so revoking a key or removing an approver ends their sessions at once.
//!   Signing out clears the cookie; a copied cookie stays usable until it
//!   expires or its key is revoked (the gateway keeps no session table).
//! - **Forgery.** Every POST must come from this origin (`Origin`,
//!   `Sec-Fetch-Site`) and carry a token derived by HMAC from the session
//!   (the sign-in form: from a short-lived cookie of its own). The cookies
//!   are `HttpOnly`, `SameSite=Strict`, `Path=/ui`, and `Secure` behind an
//!   `https://` public URL.
//! - **Injection.** Arguments and everything else an agent supplied are
//!   escaped on output ([`escape`]); every response carries a strict
//!   content security policy (no script at all, styles only from
//!   `/ui/style.css`), `X-Frame-Options: DENY`, `nosniff`, no referrer and
//!   `no-store`.
//!
//! Routes: `GET /ui` (queue and history, filtered by `status`, `agent`,
//! `tool`), `GET|POST /ui/login`, `POST /ui/logout`, `GET /ui/requests/{id}`,
//! `POST /ui/requests/{id}/approve`, `POST /ui/requests/{id}/deny`,
//! `GET /ui/style.css`.

use std::fmt;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use base64::Engine;
use hmac::{KeyInit, Mac};
use rand::RngCore;
use serde_json::Value;

use super::HttpOptions;
use crate::Gateway;
use crate::approvals::{self, ApprovalError, ApproverIdentity, ListFilter, RequestView, Vote};
use crate::store::{ApprovalRequest, ApprovalStatus};

/// Page settings taken from the HTTP edge's.
#[derive(Debug, Clone)]
pub struct Options {
    /// Mark the session cookie `Secure` (the gateway is reached over TLS).
    pub secure_cookies: bool,
    /// The gateway's public base URL, when configured: its origin is the
    /// page's own even when a proxy rewrites `Host`.
    pub public_url: Option<String>,
}

impl Options {
    /// From the edge's options: `Secure` cookies when the public URL is
    /// `https://`.
    pub fn from_http(o: &HttpOptions) -> Self {
        Self {
            secure_cookies: o
                .public_url
                .as_deref()
                .is_some_and(|u| u.starts_with("https://")),
            public_url: o.public_url.clone(),
        }
    }
}

/// The session cookie.
const SESSION_COOKIE: &str = "tollgate_ui";
/// The sign-in form's own cookie (its forgery token is bound to it).
const LOGIN_COOKIE: &str = "tollgate_ui_login";
/// How long a session lasts: a working day, then sign in again.
const SESSION_SECONDS: i64 = 8 * 3600;
/// How long a sign-in form may sit before it is posted.
const LOGIN_SECONDS: i64 = 30 * 60;
/// Arguments longer than this are cut in the queue (the request page shows
/// them whole).
const QUEUE_ARGS_CHARS: usize = 4000;
/// Most requests one queue page lists.
const QUEUE_LIMIT: u32 = 200;

/// No script, no inline style, no framing, forms only to this origin.
const CSP: &str = "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const STYLE: &str = include_str!("ui.css");

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

#[derive(Debug)]
struct Ui {
    gw: Arc<Gateway>,
    options: Options,
}

/// The page's routes.
pub fn router(gw: Arc<Gateway>, options: Options) -> Router {
    let ui = Arc::new(Ui { gw, options });
    Router::new()
        .route("/ui", get(queue))
        .route("/ui/", get(|| async { see_other("/ui") }))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/requests/{id}", get(request_page))
        .route("/ui/requests/{id}/approve", post(approve))
        .route("/ui/requests/{id}/deny", post(deny))
        .route("/ui/style.css", get(style))
        .route("/ui/{*rest}", any(unknown_page))
        .layer(middleware::from_fn(security_headers))
        .with_state(ui)
}

// ---- escaping --------------------------------------------------------------

/// `s` as HTML text or a quoted attribute value: `&`, `<`, `>`, `"` and `'`
/// become character references, so nothing an agent wrote can open a tag,
/// end an attribute or a `<textarea>`.
pub fn escape(s: &str) -> String {
    Esc(s).to_string()
}

/// Escapes on display, for use inside `format!`.
struct Esc<'a>(&'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..i])?;
            f.write_str(match rest.as_bytes()[i] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[i + 1..];
        }
        f.write_str(rest)
    }
}

fn e(s: &str) -> Esc<'_> {
    Esc(s)
}

// ---- responses -------------------------------------------------------------

/// Headers on every `/ui` response, errors and redirects included.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut r = next.run(request).await;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

/// 303: after a POST the browser GETs the next page, so reloading it does
/// not post again.
fn see_other(location: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn with_cookie(mut r: Response, cookie: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// A whole page. `who` adds the signed-in bar (and its sign-out form).
fn document(title: &str, who: Option<&Session>, main: &str) -> String {
    let bar = match who {
        Some(s) => format!(
            r#"<p class="who">Signed in as <strong>{name}</strong> ({id})</p>
<form class="logout" method="post" action="/ui/logout"><input type="hidden" name="csrf" value="{csrf}"><button type="submit">Sign out</button></form>"#,
            name = e(&s.who.approver.name),
            id = e(&s.who.approver.id),
            csrf = e(&s.csrf),
        ),
        None => String::new(),
    };
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Tollgate approvals</title>
<link rel="stylesheet" href="/ui/style.css">
</head>
<body>
<header class="top">
<p class="brand"><a href="/ui">Tollgate approvals</a></p>
{bar}
</header>
<main>
{main}
</main>
</body>
</html>
"#,
        title = e(title),
    )
}

/// A page that says what went wrong, in words.
fn problem(status: StatusCode, title: &str, message: &str, who: Option<&Session>) -> Response {
    let main = format!(
        r#"<h1>{}</h1>
<p class="error" role="alert">{}</p>
<p><a href="/ui">Back to the queue</a></p>"#,
        e(title),
        e(message)
    );
    html(status, document(title, who, &main))
}

fn not_found_page(who: Option<&Session>, id: &str) -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "Request not found",
        &format!(
            "There is no approval request {} for you to review: the link may be wrong, or the request is routed to someone else.",
            crate::pipeline::denial::capped(id)
        ),
        who,
    )
}

fn unavailable(message: &str) -> Response {
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "Approvals unavailable",
        message,
        None,
    )
}

async fn style() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        STYLE,
    )
        .into_response()
}

async fn unknown_page(State(ui): State<Arc<Ui>>, headers: HeaderMap) -> Response {
    let session = session(&ui, &headers).await.ok();
    problem(
        StatusCode::NOT_FOUND,
        "Page not found",
        "There is no such page here.",
        session.as_ref(),
    )
}

// ---- sessions and forgery tokens -------------------------------------------

/// A signed-in approver, and the forgery token of their session.
struct Session {
    who: ApproverIdentity,
    /// The signed part of the session cookie that was checked.
    payload: String,
    /// The forgery token bound to it (for the page's forms).
    csrf: String,
}

/// Why a request has no session.
enum NoSession {
    /// No session cookie (or none this gateway signed).
    Missing,
    /// It expired, or its key was revoked, or its approver removed.
    Ended,
    /// The store could not be read.
    Unavailable(String),
}

/// The key of sessions and forgery tokens, derived from the digest key:
/// no new secret to keep, replicas sharing the secrets file accept each
/// other's sessions, and the derivation's label keeps it apart from every
/// other use of the digest key.
fn ui_key(gw: &Gateway) -> Vec<u8> {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(gw.secrets().digest_key())
        .expect("HMAC takes any key length");
    mac.update(b"tollgate-ui-session-v1");
    mac.finalize().into_bytes().to_vec()
}

fn mac_for(key: &[u8], purpose: &str, payload: &str) -> HmacSha256 {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    // The purpose keeps a session MAC from passing as a form token and
    // the other way round.
    mac.update(purpose.as_bytes());
    mac.update(b"|");
    mac.update(payload.as_bytes());
    mac
}

fn sign(key: &[u8], purpose: &str, payload: &str) -> String {
    hex::encode(mac_for(key, purpose, payload).finalize().into_bytes())
}

/// Constant-time check of a hex MAC.
fn verify(key: &[u8], purpose: &str, payload: &str, sig: &str) -> bool {
    hex::decode(sig).is_ok_and(|bytes| mac_for(key, purpose, payload).verify_slice(&bytes).is_ok())
}

fn nonce() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Values of the cookies named `name` (a browser may send two with one
/// name when another path set one).
fn cookies<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k.trim() == name).then(|| v.trim())
        })
}

fn cookie_header(ui: &Ui, name: &str, value: &str, max_age: i64) -> String {
    let secure = if ui.options.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    format!("{name}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
}

/// The session of a request: a cookie this gateway signed, not expired,
/// whose key is live and whose approver is declared, checked every time.
async fn session(ui: &Ui, headers: &HeaderMap) -> Result<Session, NoSession> {
    let key = ui_key(&ui.gw);
    let now = ui.gw.now().unix_timestamp();
    let mut ended = false;
    for value in cookies(headers, SESSION_COOKIE) {
        let Some((payload, sig)) = value.rsplit_once('.') else {
            continue;
        };
        if !verify(&key, "session", payload, sig) {
            continue;
        }
        let mut parts = payload.split('.');
        let (Some(key_id), Some(expires), Some(_nonce), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if !expires.parse::<i64>().is_ok_and(|t| t > now) {
            ended = true;
            continue;
        }
        match ui.gw.store().approver_key_live(key_id).await {
            Ok(Some(record)) => match approvals::identity(&ui.gw, &record) {
                Ok(who) => {
                    return Ok(Session {
                        who,
                        payload: payload.to_string(),
                        csrf: sign(&key, "csrf", payload),
                    });
                }
                Err(_) => ended = true,
            },
            Ok(None) => ended = true,
            Err(err) => {
                tracing::error!(error = %err, "review page: cannot check a session");
                return Err(NoSession::Unavailable(
                    ApprovalError::from(err).public_message(),
                ));
            }
        }
    }
    Err(if ended {
        NoSession::Ended
    } else {
        NoSession::Missing
    })
}

/// A new session cookie for `who`: `key_id.expires.nonce.mac`.
fn new_session(ui: &Ui, who: &ApproverIdentity) -> String {
    let expires = ui.gw.now().unix_timestamp() + SESSION_SECONDS;
    let payload = format!("{}.{expires}.{}", who.key_id, nonce());
    let sig = sign(&ui_key(&ui.gw), "session", &payload);
    cookie_header(
        ui,
        SESSION_COOKIE,
        &format!("{payload}.{sig}"),
        SESSION_SECONDS,
    )
}

/// Where a GET without a session goes.
fn to_login(path: &str, ended: bool) -> Response {
    let mut query = Vec::new();
    if ended {
        query.push(("flash", "ended"));
    }
    if path != "/ui" && safe_next(path).is_some() {
        query.push(("next", path));
    }
    let query = serde_urlencoded::to_string(&query).unwrap_or_default();
    if query.is_empty() {
        see_other("/ui/login")
    } else {
        see_other(&format!("/ui/login?{query}"))
    }
}

/// The signed-in approver, or the response that replaces the page.
async fn signed_in(ui: &Ui, headers: &HeaderMap, path: &str) -> Result<Session, Response> {
    match session(ui, headers).await {
        Ok(s) => Ok(s),
        Err(NoSession::Missing) => Err(to_login(path, false)),
        Err(NoSession::Ended) => Err(to_login(path, true)),
        Err(NoSession::Unavailable(m)) => Err(unavailable(&m)),
    }
}

/// Where to go after signing in: only the queue or a request page, so the
/// parameter cannot send anyone elsewhere.
fn safe_next(next: &str) -> Option<&str> {
    if next == "/ui" {
        return Some(next);
    }
    let id = next.strip_prefix("/ui/requests/")?;
    (!id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .then_some(next)
}

/// Whether a POST may have come from another site. Browsers send
/// `Sec-Fetch-Site` and `Origin` with form posts; when present they must
/// name this origin. `SameSite` alone is not enough: every port of
/// `localhost` is the same site.
fn foreign_post(ui: &Ui, headers: &HeaderMap) -> bool {
    let site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    if site
        .as_deref()
        .is_some_and(|s| !matches!(s, "same-origin" | "none"))
    {
        return true;
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return false;
    };
    let Ok(origin) = origin.to_str() else {
        return true;
    };
    if origin == "null" {
        // Our own `Referrer-Policy: no-referrer` makes browsers send
        // `Origin: null` with the page's own form posts; they still say
        // where the post came from in `Sec-Fetch-Site`, which no page can
        // set. Without that header, `null` could be anyone.
        return site.as_deref() != Some("same-origin");
    }
    let Ok(url) = reqwest::Url::parse(origin) else {
        return true;
    };
    let own = |base: &str| {
        reqwest::Url::parse(base)
            .is_ok_and(|b| b.origin().ascii_serialization() == url.origin().ascii_serialization())
    };
    if ui.options.public_url.as_deref().is_some_and(own) {
        return false;
    }
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return true;
    };
    let authority = match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => return true,
    };
    !(matches!(url.scheme(), "http" | "https") && authority.eq_ignore_ascii_case(host.trim()))
}

/// A form body's fields (later duplicates ignored).
struct FormFields(Vec<(String, String)>);

impl FormFields {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Checks what every POST shares: same origin, a form body.
fn post_form(ui: &Ui, headers: &HeaderMap, body: &[u8]) -> Result<FormFields, Box<Response>> {
    if foreign_post(ui, headers) {
        tracing::warn!("review page: a form post from another origin was refused");
        return Err(Box::new(problem(
            StatusCode::FORBIDDEN,
            "Refused",
            "This form was sent from another site. Open the review page itself and try again.",
            None,
        )));
    }
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err(Box::new(problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Refused",
            "Send the page's own forms.",
            None,
        )));
    }
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .map(FormFields)
        .map_err(|_| {
            Box::new(problem(
                StatusCode::BAD_REQUEST,
                "Refused",
                "The form could not be read.",
                None,
            ))
        })
}

/// The signed-in approver of a POST whose forgery token is right.
async fn post_session(
    ui: &Ui,
    headers: &HeaderMap,
    form: &FormFields,
    back: &str,
) -> Result<Session, Response> {
    let s = signed_in(ui, headers, back).await?;
    // Bound to the very session that was checked, compared in constant
    // time.
    let sent = form.get("csrf").unwrap_or("");
    if !verify(&ui_key(&ui.gw), "csrf", &s.payload, sent) {
        tracing::warn!(approver = %s.who.approver.id, "review page: a form without its token was refused");
        return Err(problem(
            StatusCode::FORBIDDEN,
            "Refused",
            "This form is out of date or did not come from this page; nothing was changed. Reload the page and try again.",
            Some(&s),
        ));
    }
    Ok(s)
}

// ---- sign-in ---------------------------------------------------------------

fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    raw.and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default()
}

fn query_get<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.trim().is_empty())
}

/// The sign-in form with a fresh cookie and token bound to it.
fn login_form(ui: &Ui, status: StatusCode, next: &str, message: Option<(&str, &str)>) -> Response {
    let expires = ui.gw.now().unix_timestamp() + LOGIN_SECONDS;
    let value = format!("{expires}.{}", nonce());
    let token = sign(&ui_key(&ui.gw), "login", &value);
    let note = match message {
        Some((class, text)) => format!(
            r#"<p class="{class}" role="{role}">{text}</p>"#,
            class = e(class),
            role = if class == "error" { "alert" } else { "status" },
            text = e(text)
        ),
        None => String::new(),
    };
    let main = format!(
        r#"<h1>Sign in</h1>
{note}
<p>Sign in with your approver credential (it starts with <code>tgp_</code>; an operator issues it with <code>tollgate approvers issue-key</code>).</p>
<form method="post" action="/ui/login" class="login">
<input type="hidden" name="csrf" value="{token}">
<input type="hidden" name="next" value="{next}">
<label for="key">Approver credential</label>
<input id="key" name="key" type="password" autocomplete="current-password" required spellcheck="false">
<button type="submit">Sign in</button>
</form>"#,
        token = e(&token),
        next = e(next),
    );
    with_cookie(
        html(status, document("Sign in", None, &main)),
        &cookie_header(ui, LOGIN_COOKIE, &value, LOGIN_SECONDS),
    )
}

async fn login_page(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = query_pairs(raw.as_deref());
    let next = query_get(&q, "next").and_then(safe_next).unwrap_or("/ui");
    match session(&ui, &headers).await {
        Ok(_) => return see_other(next),
        Err(NoSession::Unavailable(m)) => return unavailable(&m),
        Err(_) => {}
    }
    let flash = match query_get(&q, "flash") {
        Some("ended") => Some(("notice", "Your session ended. Sign in again.")),
        Some("signed-out") => Some(("notice", "You are signed out.")),
        _ => None,
    };
    login_form(&ui, StatusCode::OK, next, flash)
}

async fn login(State(ui): State<Arc<Ui>>, headers: HeaderMap, body: Bytes) -> Response {
    let form = match post_form(&ui, &headers, &body) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let next = form.get("next").and_then(safe_next).unwrap_or("/ui");
    // The token must match the cookie the form came with: another site
    // cannot read either, so it cannot sign someone in as itself.
    let now = ui.gw.now().unix_timestamp();
    let sent = form.get("csrf").unwrap_or("");
    let form_ok = cookies(&headers, LOGIN_COOKIE).any(|v| {
        let fresh = v
            .split_once('.')
            .and_then(|(t, _)| t.parse::<i64>().ok())
            .is_some_and(|t| t > now);
        fresh && verify(&ui_key(&ui.gw), "login", v, sent)
    });
    if !form_ok {
        return login_form(
            &ui,
            StatusCode::FORBIDDEN,
            next,
            Some((
                "error",
                "The sign-in form expired or did not come from this page. Try again.",
            )),
        );
    }
    let key = form.get("key").unwrap_or("").trim();
    match approvals::authenticate(&ui.gw, key).await {
        Ok(who) => {
            tracing::info!(approver = %who.approver.id, key_id = %who.key_id, "review page: signed in");
            let r = with_cookie(see_other(next), &new_session(&ui, &who));
            with_cookie(r, &cookie_header(&ui, LOGIN_COOKIE, "", 0))
        }
        Err(ApprovalError::Store(err)) => {
            tracing::error!(error = %err, "review page: cannot check a credential");
            unavailable("The approval queue could not be reached; try again later.")
        }
        Err(err) => {
            tracing::info!(reason = err.code(), "review page: sign-in refused");
            login_form(
                &ui,
                StatusCode::UNAUTHORIZED,
                next,
                Some(("error", &err.public_message())),
            )
        }
    }
}

async fn logout(State(ui): State<Arc<Ui>>, headers: HeaderMap, body: Bytes) -> Response {
    let form = match post_form(&ui, &headers, &body) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    match post_session(&ui, &headers, &form, "/ui").await {
        Ok(s) => {
            tracing::info!(approver = %s.who.approver.id, "review page: signed out");
        }
        // Without a live session there is nothing to end but the cookie.
        Err(r) if r.status() == StatusCode::SEE_OTHER => {}
        Err(r) => return r,
    }
    with_cookie(
        see_other("/ui/login?flash=signed-out"),
        &cookie_header(&ui, SESSION_COOKIE, "", 0),
    )
}

// ---- the queue ---------------------------------------------------------------

/// How far `at` is from now, in words ("in 12 min", "3 h ago").
fn relative(at: &str, now: time::OffsetDateTime) -> String {
    let Some(t) = crate::util::parse_stamp(at) else {
        return String::new();
    };
    let secs = (t - now).whole_seconds();
    if secs == 0 {
        return "now".into();
    }
    let n = secs.unsigned_abs();
    let amount = match n {
        0..60 => format!("{n} s"),
        60..7200 => format!("{} min", n / 60),
        7200..172_800 => format!("{} h", n / 3600),
        _ => format!("{} days", n / 86_400),
    };
    if secs >= 0 {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

fn text_of(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// "business: biz (biz@example.com); system: ..." from an owners object.
fn owners_text(v: Option<&Value>) -> String {
    let Some(Value::Object(m)) = v else {
        return "not recorded".into();
    };
    m.iter()
        .map(|(role, o)| {
            let name = text_of(o.get("name"));
            let contact = text_of(o.get("contact"));
            if contact.is_empty() {
                format!("{role}: {name}")
            } else {
                format!("{role}: {name} ({contact})")
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why policy sent the call here, from the recorded decision.
fn policy_html(policy: &Value) -> String {
    let mut out = String::from("<dl class=\"facts\">");
    let summary = text_of(policy.get("summary"));
    if !summary.is_empty() {
        out.push_str(&format!("<dt>Reason</dt><dd>{}</dd>", e(&summary)));
    }
    let code = text_of(policy.get("code"));
    let verdict = text_of(policy.get("verdict"));
    out.push_str(&format!(
        "<dt>Decision</dt><dd>{} ({})</dd>",
        e(&verdict),
        e(&code)
    ));
    let policies: Vec<String> = policy
        .get("policies")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|p| text_of(Some(p))).collect())
        .unwrap_or_default();
    out.push_str(&format!(
        "<dt>Policies</dt><dd>{}</dd>",
        if policies.is_empty() {
            "none named (the tool's risk asks for approval)".to_string()
        } else {
            policies
                .iter()
                .map(|p| format!("<code>{}</code>", e(p)))
                .collect::<Vec<_>>()
                .join(", ")
        }
    ));
    if let Some(a) = policy.get("approval").filter(|a| a.is_object()) {
        out.push_str(&format!(
            "<dt>Approval asked by</dt><dd><code>{}</code>, waits up to {} s</dd>",
            e(&text_of(a.get("source"))),
            e(&text_of(a.get("timeout_seconds")))
        ));
    }
    if let Some(v) = policy
        .get("violated_constraints")
        .and_then(Value::as_array)
        .filter(|v| !v.is_empty())
    {
        out.push_str(&format!(
            "<dt>Task constraints broken</dt><dd>{}</dd>",
            v.iter()
                .map(|c| format!("<code>{}</code>", e(&text_of(Some(c)))))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    out.push_str("</dl>");
    out
}

/// The facts every view of a request shows.
fn facts_html(r: &ApprovalRequest, approvals: u32, now: time::OffsetDateTime) -> String {
    let mut out = String::from("<dl class=\"facts\">");
    let mut row = |term: &str, value: String| {
        out.push_str(&format!("<dt>{}</dt><dd>{value}</dd>", e(term)));
    };
    row(
        "Status",
        format!("<strong>{}</strong>", e(r.status.as_str())),
    );
    row("Agent", format!("<code>{}</code>", e(&r.agent_id)));
    row(
        "Agent owners",
        e(&owners_text(r.owners.get("agent"))).to_string(),
    );
    row(
        "Task",
        match &r.task_id {
            Some(t) => format!("<code>{}</code>", e(t)),
            None => "none (a call outside any task)".into(),
        },
    );
    if let Some(p) = &r.purpose {
        row("Purpose", e(p).to_string());
    }
    row("Tool", format!("<code>{}</code>", e(&r.tool)));
    row("Risk", e(&r.risk).to_string());
    row(
        "Connector owners",
        e(&owners_text(r.owners.get("connector"))).to_string(),
    );
    row(
        "Approvers",
        format!(
            "{} (route <code>{}</code>){}",
            e(&r.approvers),
            e(&r.route),
            if r.four_eyes {
                "; four eyes: the agent's system owner may not approve"
            } else {
                ""
            }
        ),
    );
    row(
        "Approvals",
        format!("{approvals} of {} required", r.required),
    );
    row(
        "Requested",
        format!(
            "{} ({})",
            e(&r.created_at),
            e(&relative(&r.created_at, now))
        ),
    );
    if r.status == ApprovalStatus::Pending {
        row(
            "Deadline",
            format!(
                "{} ({}); undecided by then means denied",
                e(&r.deadline),
                e(&relative(&r.deadline, now))
            ),
        );
    } else {
        if let Some(d) = &r.decided_at {
            row("Decided", e(d).to_string());
        }
        if let Some(reason) = &r.reason {
            row("Why", e(reason).to_string());
        }
        if let Some(scope) = &r.scope {
            row(
                "Scope",
                if scope == "task" {
                    "for the rest of the task".into()
                } else {
                    "once".into()
                },
            );
        }
        if let Some(u) = &r.use_by {
            row("Use by", e(u).to_string());
        }
        if r.uses > 0 {
            row("Used by calls", r.uses.to_string());
        }
    }
    out.push_str("</dl>");
    out
}

fn args_html(v: &Value, cap: Option<usize>) -> String {
    let text = pretty(v);
    match cap {
        Some(n) if text.chars().count() > n => {
            let head: String = text.chars().take(n).collect();
            format!(
                "<pre class=\"args\">{}</pre><p class=\"note\">Cut here: open the request to see all of it.</p>",
                e(&head)
            )
        }
        _ => format!("<pre class=\"args\">{}</pre>", e(&text)),
    }
}

async fn queue(State(ui): State<Arc<Ui>>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    let s = match signed_in(&ui, &headers, "/ui").await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let q = query_pairs(raw.as_deref());
    let status = query_get(&q, "status").unwrap_or("pending").trim();
    let agent = query_get(&q, "agent").map(str::trim);
    let tool = query_get(&q, "tool").map(str::trim);
    let filter = ListFilter {
        status: Some(status.to_string()),
        agent: agent.map(str::to_string),
        tool: tool.map(str::to_string),
        limit: Some(QUEUE_LIMIT),
    };
    let selected = |v: &str| if v == status { " selected" } else { "" };
    let filters = format!(
        r#"<form method="get" action="/ui" class="filters">
<h2 id="filters-h">Filter</h2>
<div><label for="status">Status</label>
<select id="status" name="status">
<option value="pending"{p}>Pending</option>
<option value="decided"{d}>Decided</option>
<option value="all"{a}>All</option>
</select></div>
<div><label for="agent">Agent</label>
<input id="agent" name="agent" type="text" value="{agent}"></div>
<div><label for="tool">Tool</label>
<input id="tool" name="tool" type="text" value="{tool}" placeholder="connector.tool"></div>
<div><button type="submit">Show</button></div>
</form>"#,
        p = selected("pending"),
        d = selected("decided"),
        a = selected("all"),
        agent = e(agent.unwrap_or("")),
        tool = e(tool.unwrap_or("")),
    );
    let heading = match status {
        "decided" => "Decided requests",
        "all" => "All requests",
        _ => "Waiting for you",
    };
    let requests = match approvals::list(&ui.gw, &s.who, &filter).await {
        Ok(r) => r,
        Err(err @ ApprovalError::Invalid(_)) => {
            let main = format!(
                "<h1>Approval requests</h1>\n<p class=\"error\" role=\"alert\">{}</p>\n{filters}",
                e(&err.public_message())
            );
            return html(
                StatusCode::BAD_REQUEST,
                document("Approval requests", Some(&s), &main),
            );
        }
        Err(err) => return decide_error_page(&s, "", &err),
    };
    let now = ui.gw.now();
    let mut items = String::new();
    for r in &requests {
        let approvals = match ui.gw.store().approval_votes(&r.id).await {
            Ok(votes) => u32::try_from(votes.iter().filter(|v| v.verdict == "approve").count())
                .unwrap_or(u32::MAX),
            Err(err) => return decide_error_page(&s, "", &ApprovalError::from(err)),
        };
        items.push_str(&format!(
            r#"<li><article aria-labelledby="r-{id}">
<h3 id="r-{id}"><a href="/ui/requests/{id}">{tool} for {agent}</a> <span class="risk risk-{risk_class}">{risk} risk</span></h3>
{facts}
<h4>Arguments</h4>
{args}
<h4>Policy</h4>
{policy}
<p><a href="/ui/requests/{id}">Review request {short}</a></p>
</article></li>
"#,
            id = e(&r.id),
            tool = e(&r.tool),
            agent = e(&r.agent_id),
            risk = e(&r.risk),
            risk_class = risk_class(&r.risk),
            facts = facts_html(r, approvals, now),
            args = args_html(&r.arguments, Some(QUEUE_ARGS_CHARS)),
            policy = policy_html(&r.policy),
            short = e(crate::pipeline::approve::short(&r.id)),
        ));
    }
    let list = if requests.is_empty() {
        match status {
            "pending" => "<p>Nothing is waiting for you.</p>".to_string(),
            _ => "<p>No requests match.</p>".to_string(),
        }
    } else {
        format!("<ol class=\"queue\">\n{items}</ol>")
    };
    let main = format!(
        r#"<h1>Approval requests</h1>
{filters}
<h2>{heading} ({n}{more})</h2>
<p class="note">Newest first. Sensitive arguments are shown as <code>&lt;redacted&gt;</code>.</p>
{list}"#,
        heading = e(heading),
        n = requests.len(),
        more = if requests.len() >= QUEUE_LIMIT as usize {
            ", the newest only"
        } else {
            ""
        },
    );
    html(StatusCode::OK, document(heading, Some(&s), &main))
}

/// A CSS class from the (declared) risk name.
fn risk_class(risk: &str) -> &'static str {
    match risk {
        "low" => "low",
        "medium" => "medium",
        "high" => "high",
        "critical" => "critical",
        _ => "other",
    }
}

// ---- one request -------------------------------------------------------------

/// What the approver typed, kept when a decision is refused.
#[derive(Debug, Default)]
struct Typed<'a> {
    approve_reason: &'a str,
    deny_reason: &'a str,
    args: Option<&'a str>,
    for_task: bool,
}

fn request_html(
    s: &Session,
    view: &RequestView,
    now: time::OffsetDateTime,
    flash: Option<String>,
    error: Option<&str>,
    typed: &Typed<'_>,
) -> String {
    let r = &view.request;
    let mut main = format!(
        "<h1>Review: <code>{}</code> for <code>{}</code></h1>\n<p class=\"note\">Request <code>{}</code></p>\n",
        e(&r.tool),
        e(&r.agent_id),
        e(&r.id)
    );
    if let Some(f) = flash {
        main.push_str(&format!(
            "<p class=\"notice\" role=\"status\">{}</p>\n",
            e(&f)
        ));
    }
    if let Some(err) = error {
        main.push_str(&format!(
            "<p class=\"error\" role=\"alert\">Not recorded: {}</p>\n",
            e(err)
        ));
    }
    main.push_str("<section aria-labelledby=\"call-h\"><h2 id=\"call-h\">The call</h2>\n");
    main.push_str(&facts_html(r, view.approvals, now));
    main.push_str("</section>\n");
    main.push_str(
        "<section aria-labelledby=\"args-h\"><h2 id=\"args-h\">Arguments</h2>\n<p class=\"note\">Exactly as the agent sent them; sensitive fields are shown as <code>&lt;redacted&gt;</code>.</p>\n",
    );
    main.push_str(&args_html(&r.arguments, None));
    if let (Some(changed), Some(changes)) = (&r.changed_arguments, &view.changes) {
        main.push_str("<h3>Changed by an approver</h3>\n");
        main.push_str(&args_html(changed, None));
        main.push_str("<p>Changes (from → to):</p>\n");
        main.push_str(&args_html(changes, None));
    }
    main.push_str("</section>\n");
    main.push_str(
        "<section aria-labelledby=\"policy-h\"><h2 id=\"policy-h\">Why it needs approval</h2>\n",
    );
    main.push_str(&policy_html(&r.policy));
    main.push_str("</section>\n");
    main.push_str(&decide_html(s, view, typed));
    main.push_str(&votes_html(view));
    main.push_str(&events_html(view));
    main
}

fn decide_html(s: &Session, view: &RequestView, typed: &Typed<'_>) -> String {
    let r = &view.request;
    if !view.can_decide {
        return format!(
            "<section aria-labelledby=\"decide-h\"><h2 id=\"decide-h\">Decide</h2>\n<p>You cannot decide this request: {}.</p>\n</section>\n",
            e(view.cannot_decide.as_deref().unwrap_or("not now"))
        );
    }
    // A later approver approves the same call as the earlier ones, so the
    // form starts from the changed arguments when there are some.
    let shown = r.changed_arguments.as_ref().unwrap_or(&r.arguments);
    let args_text = typed.args.map_or_else(|| pretty(shown), str::to_string);
    let for_task = match &r.task_id {
        Some(task) => format!(
            r#"<div class="check"><input type="checkbox" id="for-task" name="for_task" value="yes"{checked}>
<label for="for-task">Approve for the rest of task <code>{task}</code> (the same call with the same arguments), not just once</label></div>
"#,
            checked = if typed.for_task { " checked" } else { "" },
            task = e(task),
        ),
        None => String::new(),
    };
    let remaining = r.required.saturating_sub(view.approvals);
    format!(
        r#"<section aria-labelledby="decide-h"><h2 id="decide-h">Decide</h2>
<p>{progress}</p>
<form method="post" action="/ui/requests/{id}/approve" class="decide">
<h3>Approve</h3>
<input type="hidden" name="csrf" value="{csrf}">
<label for="approve-reason">Reason (required, recorded)</label>
<textarea id="approve-reason" name="reason" rows="2" maxlength="1000" required>{approve_reason}</textarea>
<label for="approve-args">Arguments (JSON). Leave them as they are to approve the call as sent; change a field to approve a changed call. Fields left <code>&lt;redacted&gt;</code> keep the agent's value.</label>
<textarea id="approve-args" name="args" rows="{rows}" spellcheck="false" class="code">{args}</textarea>
{for_task}<button type="submit" class="approve">Approve</button>
</form>
<form method="post" action="/ui/requests/{id}/deny" class="decide">
<h3>Deny</h3>
<input type="hidden" name="csrf" value="{csrf}">
<label for="deny-reason">Reason (required; the agent is told)</label>
<textarea id="deny-reason" name="reason" rows="2" maxlength="1000" required>{deny_reason}</textarea>
<button type="submit" class="deny">Deny</button>
</form>
</section>
"#,
        progress = if remaining > 1 {
            format!("Your approval is one of {remaining} still needed.")
        } else {
            "Your approval completes it: the call goes ahead.".into()
        },
        id = e(&r.id),
        csrf = e(&s.csrf),
        approve_reason = e(typed.approve_reason),
        deny_reason = e(typed.deny_reason),
        rows = args_text.lines().count().clamp(3, 24),
        args = e(&args_text),
    )
}

fn votes_html(view: &RequestView) -> String {
    if view.votes.is_empty() {
        return "<section aria-labelledby=\"votes-h\"><h2 id=\"votes-h\">Votes</h2>\n<p>No votes yet.</p>\n</section>\n".into();
    }
    let mut rows = String::new();
    for v in &view.votes {
        rows.push_str(&format!(
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            e(&v.at),
            e(&v.approver_id),
            e(&v.verdict),
            if v.for_task { "task" } else { "once" },
            e(&v.reason),
            v.patch
                .as_ref()
                .map_or_else(String::new, |p| format!("<code>{}</code>", e(&p.to_string()))),
        ));
    }
    format!(
        r#"<section aria-labelledby="votes-h"><h2 id="votes-h">Votes</h2>
<table>
<thead><tr><th scope="col">When</th><th scope="col">Approver</th><th scope="col">Vote</th><th scope="col">Scope</th><th scope="col">Reason</th><th scope="col">Changed</th></tr></thead>
<tbody>
{rows}</tbody>
</table>
</section>
"#
    )
}

fn events_html(view: &RequestView) -> String {
    let mut items = String::new();
    for ev in &view.events {
        items.push_str(&format!(
            "<li>{} <strong>{}</strong> by <code>{}</code>{}</li>\n",
            e(&ev.at),
            e(&ev.event),
            e(&ev.actor),
            ev.detail
                .as_ref()
                .filter(|d| !d.is_null())
                .map_or_else(String::new, |d| format!(
                    ": <code>{}</code>",
                    e(&d.to_string())
                )),
        ));
    }
    format!(
        "<section aria-labelledby=\"events-h\"><h2 id=\"events-h\">History</h2>\n<ol class=\"events\">\n{items}</ol>\n</section>\n"
    )
}

/// A refusal by the approvals service, as a page.
fn decide_error_page(s: &Session, id: &str, err: &ApprovalError) -> Response {
    if let ApprovalError::Store(inner) = err {
        tracing::error!(error = %inner, "review page: store failure");
    }
    match err {
        ApprovalError::NotFound(_) => not_found_page(Some(s), id),
        _ => problem(
            super::approvals_api::status_of(err),
            "Could not complete that",
            &err.public_message(),
            Some(s),
        ),
    }
}

async fn request_page(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let s = match signed_in(&ui, &headers, &format!("/ui/requests/{id}")).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let view = match approvals::show(&ui.gw, &s.who, &id).await {
        Ok(v) => v,
        Err(err) => return decide_error_page(&s, &id, &err),
    };
    let q = query_pairs(raw.as_deref());
    let flash = match query_get(&q, "flash") {
        Some("approved") => Some(match view.request.status {
            ApprovalStatus::Pending => format!(
                "Your approval is recorded: {} of {} so far.",
                view.approvals, view.request.required
            ),
            ApprovalStatus::Approved => {
                "Your approval is recorded. The request is approved: the waiting call goes ahead."
                    .to_string()
            }
            ApprovalStatus::Used => {
                "Your approval is recorded. The request is approved, and its call has gone ahead."
                    .to_string()
            }
            other => format!(
                "Your approval is recorded. The request is now {}.",
                other.as_str()
            ),
        }),
        Some("denied") => Some("You denied the request. The agent is told your reason.".into()),
        _ => None,
    };
    let main = request_html(&s, &view, ui.gw.now(), flash, None, &Typed::default());
    html(
        StatusCode::OK,
        document(&format!("Review {}", view.request.tool), Some(&s), &main),
    )
}

async fn approve(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    decide_post(&ui, &headers, &id, &body, true).await
}

async fn deny(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    decide_post(&ui, &headers, &id, &body, false).await
}

async fn decide_post(
    ui: &Ui,
    headers: &HeaderMap,
    id: &str,
    body: &[u8],
    approve: bool,
) -> Response {
    let form = match post_form(ui, headers, body) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let back = format!("/ui/requests/{id}");
    let s = match post_session(ui, headers, &form, &back).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let reason = form.get("reason").unwrap_or("");
    let typed = Typed {
        approve_reason: if approve { reason } else { "" },
        deny_reason: if approve { "" } else { reason },
        args: form.get("args").filter(|_| approve),
        for_task: approve && form.get("for_task").is_some(),
    };
    // The arguments box is sent whole; `decide` ignores the fields left as
    // they were (and those left `<redacted>`), so only real changes count.
    let args = match typed.args.map(str::trim).filter(|a| !a.is_empty()) {
        None => Ok(None),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(m)) => Ok(Some(m)),
            Ok(_) => {
                Err("the arguments must be a JSON object ({\"name\": value, ...})".to_string())
            }
            Err(err) => Err(format!("the arguments are not valid JSON ({err})")),
        },
    };
    let result = match args {
        Ok(args) => {
            let vote = Vote {
                approve,
                reason: reason.to_string(),
                for_task: typed.for_task,
                args: args.filter(|_| approve),
            };
            approvals::decide(&ui.gw, &s.who, id, vote).await
        }
        Err(m) => Err(ApprovalError::InvalidChange(m)),
    };
    match result {
        Ok(_) => see_other(&format!(
            "{back}?flash={}",
            if approve { "approved" } else { "denied" }
        )),
        Err(err @ (ApprovalError::NotFound(_) | ApprovalError::Store(_))) => {
            decide_error_page(&s, id, &err)
        }
        Err(err) => {
            // Shown on the request page as it stands now, with what they
            // typed kept.
            let status = super::approvals_api::status_of(&err);
            match approvals::show(&ui.gw, &s.who, id).await {
                Ok(view) => {
                    let main = request_html(
                        &s,
                        &view,
                        ui.gw.now(),
                        None,
                        Some(&err.public_message()),
                        &typed,
                    );
                    html(
                        status,
                        document(&format!("Review {}", view.request.tool), Some(&s), &main),
                    )
                }
                Err(other) => decide_error_page(&s, id, &other),
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn escape_neutralises_markup() {
        assert_eq!(
            escape(r#"<script>alert("x")</script> & 'q'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;q&#39;"
        );
        assert_eq!(escape("</textarea><b>"), "&lt;/textarea&gt;&lt;b&gt;");
        assert_eq!(escape("plain é ✓"), "plain é ✓");
        assert_eq!(escape(""), "");
        assert_eq!(escape("&amp;"), "&amp;amp;");
    }

    #[test]
    fn next_targets_stay_on_the_page() {
        assert_eq!(safe_next("/ui"), Some("/ui"));
        assert!(safe_next("/ui/requests/0190-abc").is_some());
        assert!(safe_next("//evil.example").is_none());
        assert!(safe_next("https://evil.example/ui").is_none());
        assert!(safe_next("/ui/requests/../../admin").is_none());
        assert!(safe_next("/ui/requests/").is_none());
    }

    #[test]
    fn macs_are_bound_to_their_purpose() {
        let key = b"k";
        let s = sign(key, "session", "p");
        assert!(verify(key, "session", "p", &s));
        assert!(!verify(key, "csrf", "p", &s));
        assert!(!verify(key, "session", "q", &s));
        assert!(!verify(key, "session", "p", "zz"));
    }

    #[test]
    fn times_read_as_words() {
        let now = crate::util::parse_stamp("2026-01-01T12:00:00Z").unwrap();
        assert_eq!(relative("2026-01-01T12:15:00Z", now), "in 15 min");
        assert_eq!(relative("2026-01-01T09:00:00Z", now), "3 h ago");
        assert_eq!(relative("nonsense", now), "");
    }
}

//! The one shape of an HTTP refusal, shared by the MCP edge, the
//! introspection endpoint and the admin API: a JSON body
//! `{"error": "...", "reason": "<code>"}`, and for a 401 the RFC 6750
//! challenge (`WWW-Authenticate: Bearer realm=…`, with the RFC 9728
//! `resource_metadata` where there is one, and `error` when a credential
//! was sent but refused). Knows HTTP, nothing of the gateway.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// A JSON error body with a stable reason code.
pub fn json_error(status: StatusCode, reason: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error": message, "reason": reason });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The challenge a 401 carries.
#[derive(Debug, Clone, Copy)]
pub struct Challenge<'a> {
    /// `realm`.
    pub realm: &'a str,
    /// RFC 9728 `resource_metadata` URL, if the resource publishes one.
    pub resource_metadata: Option<&'a str>,
    /// RFC 6750 `error` (`invalid_token`, `invalid_request`), when a
    /// credential was presented and refused.
    pub error: Option<&'a str>,
}

/// A 401 with its challenge and a JSON body.
pub fn unauthorized(challenge: Challenge<'_>, reason: &str, message: &str) -> Response {
    with_challenge(
        json_error(StatusCode::UNAUTHORIZED, reason, message),
        challenge,
    )
}

/// Adds the challenge to a response (a 401 of another making).
pub fn with_challenge(mut r: Response, c: Challenge<'_>) -> Response {
    let mut value = format!("Bearer realm=\"{}\"", quoted_string_escape(c.realm));
    if let Some(url) = c.resource_metadata {
        value.push_str(&format!(
            ", resource_metadata=\"{}\"",
            quoted_string_escape(url)
        ));
    }
    if let Some(e) = c.error {
        value.push_str(&format!(", error=\"{}\"", quoted_string_escape(e)));
    }
    if let Ok(v) = HeaderValue::from_str(&value) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

/// Escapes `"` and `\` for an HTTP quoted-string.
pub fn quoted_string_escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
